/* image_export.c: `cell image export NAME`: the image as an OCI image
 * layout tar (oci-layout, index.json, blobs/sha256/: one layer, the rootfs
 * as a deterministic tar; the config from image.json; the manifest). */
#include "runtime/image_meta.h"
#include "runtime/plugin.h"
#include "runtime/runtime.h"
#include "util/util.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int hash_fd(int fd, char digest[72], uint64_t *size, cell_error *err)
{
    static __thread char buf[1 << 16];
    struct image_sha256 s;
    char hex[65];
    runtime_image_sha256_init(&s);
    *size = 0;
    if (lseek(fd, 0, SEEK_SET) < 0)
        return util_fail_errno(err, "cannot rewind the layer");
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return util_fail_errno(err, "cannot read the layer");
        if (r == 0)
            break;
        runtime_image_sha256_update(&s, buf, (size_t)r);
        *size += (uint64_t)r;
    }
    runtime_image_sha256_final(&s, hex);
    snprintf(digest, 72, "sha256:%s", hex);
    return 0;
}

static char *dump_digest(json_t *o, char digest[72], cell_error *err)
{
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    if (!text) {
        util_fail(err, ENOMEM, "out of memory");
        return NULL;
    }
    struct image_sha256 s;
    char hex[65];
    runtime_image_sha256_init(&s);
    runtime_image_sha256_update(&s, text, strlen(text));
    runtime_image_sha256_final(&s, hex);
    snprintf(digest, 72, "sha256:%s", hex);
    return text;
}

static int write_layout(const runtime_archive_ops *a, int out, int layer, const char *layer_digest,
                        uint64_t layer_size, const struct image_meta *m, cell_error *err)
{
    char config_digest[72], manifest_digest[72], names[3][100];
    _cleanup_free_ char *config = dump_digest(
        json_pack("{s:s, s:s, s:o, s:{s:s, s:[s]}}", "architecture", "amd64", "os", "linux", "config",
                  runtime_image_meta_config_to_json(&m->config), "rootfs", "type", "layers", "diff_ids", layer_digest),
        config_digest, err);
    if (!config)
        return -1;
    _cleanup_free_ char *manifest = dump_digest(
        json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:[{s:s, s:s, s:I}]}", "schemaVersion", 2, "mediaType",
                  "application/vnd.oci.image.manifest.v1+json", "config", "mediaType",
                  "application/vnd.oci.image.config.v1+json", "digest", config_digest, "size",
                  (json_int_t)strlen(config), "layers", "mediaType", "application/vnd.oci.image.layer.v1.tar",
                  "digest", layer_digest, "size", (json_int_t)layer_size),
        manifest_digest, err);
    if (!manifest)
        return -1;
    char dummy[72];
    _cleanup_free_ char *index = dump_digest(
        json_pack("{s:i, s:s, s:[{s:s, s:s, s:I, s:{s:s}}]}", "schemaVersion", 2, "mediaType",
                  "application/vnd.oci.image.index.v1+json", "manifests", "mediaType",
                  "application/vnd.oci.image.manifest.v1+json", "digest", manifest_digest, "size",
                  (json_int_t)strlen(manifest), "annotations", "org.opencontainers.image.ref.name", m->name),
        dummy, err);
    if (!index)
        return -1;
    static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
    snprintf(names[0], sizeof names[0], "blobs/sha256/%s", config_digest + 7);
    snprintf(names[1], sizeof names[1], "blobs/sha256/%s", manifest_digest + 7);
    snprintf(names[2], sizeof names[2], "blobs/sha256/%s", layer_digest + 7);
    const struct runtime_tar_file files[] = {
        { "oci-layout", layout, -1, strlen(layout) },
        { "index.json", index, -1, strlen(index) },
        { "blobs/", NULL, -1, (uint64_t)-1 },
        { "blobs/sha256/", NULL, -1, (uint64_t)-1 },
        { names[0], config, -1, strlen(config) },
        { names[1], manifest, -1, strlen(manifest) },
        { names[2], NULL, layer, layer_size },
    };
    return a->image_files_tar(out, files, sizeof files / sizeof files[0], err);
}

int cell_image_export(cell_ctx *ctx, const char *name, int fd, cell_error *err)
{
    const runtime_archive_ops *a = runtime_archive(err);
    if (!a)
        return -1;
    if (!a->image_tree_tar || !a->image_files_tar)
        return util_fail(err, ENOSYS, "this build's archive plugin cannot export images");
    char root[PATH_MAX], state[PATH_MAX];
    if (runtime_image_rootfs(ctx, name, root, sizeof root, err) < 0)
        return -1;
    if (strcmp(name, "host") == 0)
        return util_fail(err, EINVAL, "image 'host' is this host's /usr with a generated /etc; it cannot be "
                         "exported");
    struct image_meta m;
    cell_error me = { 0 };
    if (runtime_image_meta_read(ctx, name, &m, &me) < 0) {
        if (me.code != ENOENT)
            return err ? (*err = me, -1) : -1;
        memset(&m, 0, sizeof m); /* a builtin image: no config */
        snprintf(m.name, sizeof m.name, "%s", name);
    }
    /* The layer goes to an unnamed file on the state directory's disk
     * first: its digest and size come before it in the layout. */
    int rc = util_path(state, sizeof state, err, "%s/images", ctx->state_dir) < 0 ? -1 : 0;
    _cleanup_close_ int layer = rc < 0 ? -1 : open(state, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    _cleanup_close_ int rfd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rc == 0 && (layer < 0 || rfd < 0))
        rc = util_fail_errno(err, "cannot open %s", layer < 0 ? state : root);
    char digest[72];
    uint64_t size = 0;
    if (rc == 0)
        rc = a->image_tree_tar(rfd, layer, err);
    if (rc == 0)
        rc = hash_fd(layer, digest, &size, err);
    if (rc == 0)
        rc = write_layout(a, fd, layer, digest, size, &m, err);
    runtime_image_meta_free(&m);
    return rc;
}
