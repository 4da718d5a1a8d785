/* image_digest.c: an image's digest and config, as lanes (binding) and
 * commits (the new image's digest, the base's config) read them. */
#include "runtime/digest.h"
#include "runtime/plugin.h"
#include "runtime/runtime.h"
#include "util/util.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

int runtime_tree_digest_via(int dirfd, const char *prefix, char out[72], cell_error *err)
{
    const runtime_archive_ops *a = runtime_archive(err);
    if (!a)
        return -1;
    if (!a->tree_digest)
        return util_fail(err, ENOSYS, "the archive plugin has no tree digest");
    return a->tree_digest(dirfd, prefix, out, err);
}

static json_t *read_meta(cell_ctx *ctx, const char *name)
{
    char path[PATH_MAX];
    if (util_path(path, sizeof path, NULL, "%s/images/%s/image.json", ctx->state_dir, name) < 0)
        return NULL;
    return json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
}

static int valid_digest(const char *d)
{
    if (!d || strncmp(d, "sha256:", 7) != 0 || strlen(d) != 71)
        return 0;
    return strspn(d + 7, "0123456789abcdef") == 64;
}

/* A builtin image's tree digest, kept beside its rootfs: written aside and
 * renamed, so a reader sees a whole one or none. */
static int builtin_digest(cell_ctx *ctx, const char *name, char out[72], cell_error *err)
{
    char dir[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX], root[PATH_MAX], suffix[17];
    if (util_path(dir, sizeof dir, err, "%s/images/%s", ctx->state_dir, name) < 0 ||
        util_path(path, sizeof path, err, "%s/digest", dir) < 0)
        return -1;
    char *text = NULL;
    if (util_read_file(path, 80, &text, NULL, NULL) == 0) {
        text[strcspn(text, "\n")] = '\0';
        int ok = valid_digest(text);
        if (ok)
            snprintf(out, 72, "%s", text);
        free(text);
        if (ok)
            return 0;
    }
    if (runtime_image_rootfs(ctx, name, root, sizeof root, err) < 0)
        return -1;
    _cleanup_close_ int fd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", root);
    if (runtime_tree_digest_via(fd, "cell-builtin-image 1", out, err) < 0)
        return -1;
    if (util_random_hex(suffix, 8) < 0)
        return util_fail_errno(err, "getrandom");
    if (util_path(tmp, sizeof tmp, err, "%s/.digest-%s", dir, suffix) < 0)
        return -1;
    if (util_write_file(tmp, out, strlen(out), 0644, 1, err) < 0 || rename(tmp, path) < 0) {
        unlink(tmp);
        return util_fail_errno(err, "cannot write %s", path);
    }
    return 0;
}

int runtime_image_digest(cell_ctx *ctx, const char *name, char out[72], cell_error *err)
{
    json_t *meta = read_meta(ctx, name);
    if (meta) {
        const char *d = json_string_value(json_object_get(meta, "digest"));
        int ok = valid_digest(d);
        if (ok)
            snprintf(out, 72, "%s", d);
        json_decref(meta);
        return ok ? 0 : util_fail(err, EINVAL, "image '%s': image.json has no valid \"digest\"", name);
    }
    for (const char *const *b = runtime_image_names; *b; b++)
        if (strcmp(*b, name) == 0)
            return builtin_digest(ctx, name, out, err);
    return util_fail(err, ENOENT, "image '%s' has no image.json", name);
}

char *runtime_image_config(cell_ctx *ctx, const char *name)
{
    json_t *meta = read_meta(ctx, name);
    json_t *config = json_object_get(meta, "config");
    char *text = json_is_object(config) ? json_dumps(config, JSON_COMPACT) : NULL;
    json_decref(meta);
    return text;
}
