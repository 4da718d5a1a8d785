/* image_import.c: `cell image import`: an OCI image layout tar or a
 * docker-archive tar becomes a stored image (image_meta.h).
 *
 * The archive and every layer in it are hostile input.  Both are parsed by
 * cell-untar (untar.c: libarchive in a confined process of its own); this
 * side only checks frames and writes.  First the outer archive's files go
 * to temp files in the staging directory while they are hashed; then the
 * index/manifest/config JSON is read from them (size-capped, with jansson),
 * every blob the manifest names is checked against its digest, and each
 * layer is fed to cell-untar again and applied in order into the staging
 * rootfs: every name is resolved beneath that rootfs (openat2
 * RESOLVE_IN_ROOT, so a symlink planted by a layer leads back inside it),
 * whiteouts delete, opaque markers empty a directory of what lower layers
 * put there.  Only when all of that worked are the blobs linked into the
 * blob store and the staging directory renamed to images/NAME; a failure
 * removes the staging directory and leaves nothing. */
#include "runtime/image_meta.h"
#include "runtime/runtime.h"
#include "runtime/untar.h"
#include "util/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define IMPORT_MAX_JSON    (4u << 20)     /* index, manifest, config: at most this each */
#define IMPORT_MAX_FILES   4096           /* files in the outer archive */
#define IMPORT_MAX_ENTRIES 1000000u       /* entries in all layers together */
#define IMPORT_MAX_LAYERS  256
#define IMPORT_ID_LIMIT    65536          /* a cell maps in-cell ids 0..65535 */

/* A file of the outer archive, kept in a temp file. */
struct in_file {
    char    *name;       /* normalized name in the archive */
    char    *link;       /* a symlink's target (docker-archive shares layers so), or NULL */
    char     hex[65];    /* sha256 of its content */
    uint64_t size;
    int      stored;     /* already linked into the blob store */
};

/* A blob the image is made of. */
struct blob_ref {
    struct in_file *file;
    char digest[IMAGE_META_DIGEST_LEN + 1];
};

struct import {
    cell_ctx        *ctx;
    const char      *name;
    const char      *tenant;       /* image.json's "tenant", or NULL */
    cell_progress_fn progress;
    void            *user;
    uint64_t         max_size;     /* bytes of the outer archive, and of the rootfs */
    char             stage[PATH_MAX];
    char             in_dir[PATH_MAX];
    struct in_file  *files;
    size_t           n_files;
    /* the image */
    struct blob_ref  manifest, config;
    struct blob_ref  layers[IMPORT_MAX_LAYERS];
    size_t           n_layers;
    char            *manifest_text;  /* docker-archive: the OCI manifest written for it */
    struct image_meta_config cfg;
    /* applying layers */
    int              root_fd;
    uint64_t         size;           /* bytes of regular files written */
    uint64_t         entries;
    char           **seen;           /* paths made by the current layer (a hash set) */
    size_t           seen_cap, seen_n;
};

static void say(struct import *im, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct import *im, const char *fmt, ...)
{
    if (!im->progress)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    im->progress(im->user, line);
}

/* Names from the archive go into messages: control characters replaced. */
static const char *printable(const char *in, char *out, size_t size)
{
    size_t n = 0;
    for (; in[n] && n + 1 < size; n++)
        out[n] = ((unsigned char)in[n] < 0x20 || in[n] == 0x7f) ? '?' : in[n];
    out[n] = '\0';
    return out;
}

/* ---- names --------------------------------------------------------------------
 * A tar name made relative and canonical: "./" and empty components dropped;
 * absolute names and ".." refused (a layer has no business naming either).
 * 1 and the name in out, 0 for the root itself, -1 with *err. */
static int norm_name(const char *raw, const char *what, char *out, size_t size, cell_error *err)
{
    char shown[128];
    if (raw[0] == '/')
        return util_fail(err, EINVAL, "%s: entry '%s' is an absolute path", what, printable(raw, shown, sizeof shown));
    size_t n = 0;
    for (const char *p = raw; *p;) {
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return util_fail(err, EINVAL, "%s: entry '%s' leaves the image (contains '..')", what,
                             printable(raw, shown, sizeof shown));
        if (len && !(len == 1 && p[0] == '.')) {
            if (n + len + 2 > size)
                return util_fail(err, ENAMETOOLONG, "%s: entry name too long", what);
            if (n)
                out[n++] = '/';
            memcpy(out + n, p, len);
            n += len;
        }
        p = *end ? end + 1 : end;
    }
    out[n] = '\0';
    return n ? 1 : 0;
}

/* ---- the outer archive -------------------------------------------------------- */

static struct in_file *find_file(struct import *im, const char *name)
{
    /* Follow a symlink or two of a docker-archive, lexically, relative to
     * its own directory. */
    char cur[PATH_MAX];
    snprintf(cur, sizeof cur, "%s", name);
    for (int hops = 0; hops < 4; hops++) {
        struct in_file *f = NULL;
        for (size_t i = 0; i < im->n_files && !f; i++)
            if (strcmp(im->files[i].name, cur) == 0)
                f = &im->files[i];
        if (!f || !f->link)
            return f;
        char joined[PATH_MAX], dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", cur);
        char *slash = strrchr(dir, '/');
        if (slash)
            slash[1] = '\0';
        else
            dir[0] = '\0';
        if (snprintf(joined, sizeof joined, "%s%s", dir, f->link) >= (int)sizeof joined)
            return NULL;
        /* resolve "x/../y" lexically; norm_name refuses "..", so do it here */
        char out[PATH_MAX];
        size_t n = 0;
        for (char *save = NULL, *p = strtok_r(joined, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
            if (strcmp(p, ".") == 0)
                continue;
            if (strcmp(p, "..") == 0) {
                if (n == 0)
                    return NULL;
                while (n > 0 && out[n - 1] != '/')
                    n--;
                if (n > 0)
                    n--;
                continue;
            }
            size_t len = strlen(p);
            if (n + len + 2 > sizeof out)
                return NULL;
            if (n)
                out[n++] = '/';
            memcpy(out + n, p, len);
            n += len;
        }
        out[n] = '\0';
        snprintf(cur, sizeof cur, "%s", out);
    }
    return NULL;
}

static int file_path(struct import *im, const struct in_file *f, char *out, size_t size, cell_error *err)
{
    return util_path(out, size, err, "%s/%zu", im->in_dir, (size_t)(f - im->files));
}

static void hash_zeros(struct image_sha256 *h, uint64_t n)
{
    static const char zeros[64 * 1024];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        runtime_image_sha256_update(h, zeros, k);
        n -= k;
    }
}

/* One regular file of the archive into its temp file, hashed on the way. */
static int take_file(struct import *im, runtime_untar *t, struct in_file *f, uint64_t *total, cell_error *err)
{
    char path[PATH_MAX];
    if (file_path(im, f, path, sizeof path, err) < 0)
        return -1;
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return util_fail_errno(err, "cannot create %s", path);
    struct image_sha256 h;
    runtime_image_sha256_init(&h);
    const void *buf;
    size_t len;
    uint64_t off, at = 0;
    int r;
    while ((r = runtime_untar_data(t, &buf, &len, &off, err)) == 1) {
        if (off < at)
            return util_fail(err, EBADMSG, "the archive's file '%s' has overlapping data blocks", f->name);
        if (off > im->max_size || off + len > im->max_size || *total + (off - at) + len > im->max_size)
            return util_fail(err, EFBIG, "the archive is larger than the image size limit (%llu bytes; "
                             "raise it with --max-image-size)", (unsigned long long)im->max_size);
        hash_zeros(&h, off - at);
        runtime_image_sha256_update(&h, buf, len);
        if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len)
            return util_fail_errno(err, "cannot write %s", path);
        *total += (off - at) + len;
        at = off + len;
    }
    if (r < 0)
        return -1;
    f->size = at;
    if (ftruncate(fd, (off_t)at) < 0)
        return util_fail_errno(err, "cannot size %s", path);
    runtime_image_sha256_final(&h, f->hex);
    return 0;
}

static int read_archive(struct import *im, int fd, cell_error *err)
{
    runtime_untar t;
    if (runtime_untar_start(fd, &t, err) < 0)
        return -1;
    runtime_untar_entry e;
    uint64_t total = 0;
    int r;
    char name[PATH_MAX];
    while ((r = runtime_untar_next(&t, &e, err)) == 1) {
        int named = norm_name(e.name, "the archive", name, sizeof name, err);
        if (named < 0) {
            r = -1;
            break;
        }
        if (!named || (e.kind != UNTAR_FILE && e.kind != UNTAR_SYMLINK))
            continue; /* directories; anything else is never looked at */
        if (im->n_files == IMPORT_MAX_FILES) {
            r = util_fail(err, EFBIG, "the archive holds more than %d files", IMPORT_MAX_FILES);
            break;
        }
        if (find_file(im, name)) {
            r = util_fail(err, EINVAL, "the archive holds '%s' twice", name);
            break;
        }
        struct in_file *f = &im->files[im->n_files];
        memset(f, 0, sizeof *f);
        if (!(f->name = strdup(name)) || (e.kind == UNTAR_SYMLINK && !(f->link = strdup(e.link)))) {
            free(f->name);
            r = util_fail(err, ENOMEM, "out of memory");
            break;
        }
        im->n_files++;
        if (e.kind == UNTAR_FILE && take_file(im, &t, f, &total, err) < 0) {
            r = -1;
            break;
        }
    }
    runtime_untar_end(&t);
    return r < 0 ? -1 : 0;
}

/* ---- JSON and blobs ------------------------------------------------------------ */

static json_t *load_json(struct import *im, struct in_file *f, const char *what, cell_error *err)
{
    if (!f)
        return util_fail(err, ENOENT, "%s is missing from the archive", what), NULL;
    if (f->size > IMPORT_MAX_JSON)
        return util_fail(err, EFBIG, "%s is %llu bytes, more than the %u a JSON document may have", what,
                         (unsigned long long)f->size, IMPORT_MAX_JSON), NULL;
    char path[PATH_MAX];
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    if (file_path(im, f, path, sizeof path, err) < 0 || util_read_file(path, IMPORT_MAX_JSON, &text, &len, err) < 0)
        return NULL;
    json_error_t jerr;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        util_fail(err, EBADMSG, "%s is not valid JSON: %s (line %d)", what, jerr.text, jerr.line);
    return j;
}

/* The archive's blob `digest` (blobs/sha256/<hex>), checked against it. */
static int oci_blob(struct import *im, const char *digest, const char *what, struct blob_ref *out, cell_error *err)
{
    char shown[80], name[128];
    if (!runtime_image_meta_valid_digest(digest))
        return util_fail(err, EINVAL, "%s: '%s' is not a sha256 digest", what,
                         printable(digest ? digest : "(none)", shown, sizeof shown));
    snprintf(name, sizeof name, "blobs/sha256/%s", digest + 7);
    struct in_file *f = find_file(im, name);
    if (!f)
        return util_fail(err, ENOENT, "%s names blob %s, which the archive does not hold", what, digest);
    if (strcmp(f->hex, digest + 7) != 0)
        return util_fail(err, EBADMSG, "blob %s does not match its digest (its content is sha256:%s)", digest, f->hex);
    out->file = f;
    snprintf(out->digest, sizeof out->digest, "%s", digest);
    return 0;
}

static int is_index_type(const char *mt)
{
    return mt && (strcmp(mt, "application/vnd.oci.image.index.v1+json") == 0 ||
                  strcmp(mt, "application/vnd.docker.distribution.manifest.list.v2+json") == 0);
}

/* Pick the linux/amd64 manifest of an index (nested indexes followed once). */
static int pick_manifest(struct import *im, json_t *index, int depth, char *platforms, size_t psize, cell_error *err)
{
    json_t *ms = json_object_get(index, "manifests");
    if (!json_is_array(ms) || json_array_size(ms) == 0)
        return util_fail(err, EBADMSG, "the image index has no manifests array");
    size_t i;
    json_t *d;
    json_array_foreach(ms, i, d) {
        const char *mt = json_string_value(json_object_get(d, "mediaType"));
        const char *digest = json_string_value(json_object_get(d, "digest"));
        if (is_index_type(mt)) {
            if (depth > 0)
                continue;
            struct blob_ref sub;
            if (oci_blob(im, digest, "the image index", &sub, err) < 0)
                return -1;
            json_t *j = load_json(im, sub.file, "a nested image index", err);
            if (!j)
                return -1;
            int r = pick_manifest(im, j, depth + 1, platforms, psize, err);
            json_decref(j);
            if (r != 0)
                return r;
            continue;
        }
        json_t *p = json_object_get(d, "platform");
        const char *os = json_string_value(json_object_get(p, "os"));
        const char *arch = json_string_value(json_object_get(p, "architecture"));
        if (!p || (os && arch && strcmp(os, "linux") == 0 && strcmp(arch, "amd64") == 0)) {
            if (oci_blob(im, digest, "the image index", &im->manifest, err) < 0)
                return -1;
            return 1;
        }
        char shown[64];
        size_t n = strlen(platforms);
        snprintf(platforms + n, psize - n, "%s%s/%s", n ? ", " : "", printable(os ? os : "?", shown, 24),
                 arch ? printable(arch, shown + 32, 24) : "?");
    }
    return 0;
}

static int layer_type_ok(const char *mt)
{
    static const char *const ok[] = {
        "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
    };
    for (size_t i = 0; mt && i < sizeof ok / sizeof *ok; i++)
        if (strcmp(mt, ok[i]) == 0)
            return 1;
    return !mt;
}

static int read_config(struct import *im, cell_error *err)
{
    json_t *cfg = load_json(im, im->config.file, "the image config", err);
    if (!cfg)
        return -1;
    const char *os = json_string_value(json_object_get(cfg, "os"));
    const char *arch = json_string_value(json_object_get(cfg, "architecture"));
    char a[32], b[32];
    int rc = 0;
    if ((os && strcmp(os, "linux") != 0) || (arch && strcmp(arch, "amd64") != 0))
        rc = util_fail(err, EINVAL, "the image is for %s/%s; only linux/amd64 images can be imported",
                       printable(os ? os : "?", a, sizeof a), printable(arch ? arch : "?", b, sizeof b));
    else
        rc = runtime_image_meta_config_from_json(json_object_get(cfg, "config"), &im->cfg, err);
    json_decref(cfg);
    return rc;
}

static int oci_layout(struct import *im, cell_error *err)
{
    struct in_file *idx = find_file(im, "index.json");
    json_t *index = load_json(im, idx, "index.json", err);
    if (!index)
        return -1;
    char platforms[512] = "";
    int r = json_is_object(index) ? pick_manifest(im, index, 0, platforms, sizeof platforms, err)
                                  : util_fail(err, EBADMSG, "index.json is not an object");
    json_decref(index);
    if (r == 0)
        return util_fail(err, EINVAL, "the image has no linux/amd64 manifest (platforms: %s)",
                         platforms[0] ? platforms : "none");
    if (r < 0)
        return -1;
    json_t *m = load_json(im, im->manifest.file, "the manifest", err);
    if (!m)
        return -1;
    json_t *layers = json_object_get(m, "layers");
    int rc = -1;
    if (!json_is_array(layers) || json_array_size(layers) > IMPORT_MAX_LAYERS)
        util_fail(err, EBADMSG, "the manifest's layers are not an array of at most %d", IMPORT_MAX_LAYERS);
    else if (oci_blob(im, json_string_value(json_object_get(json_object_get(m, "config"), "digest")),
                      "the manifest's config", &im->config, err) == 0) {
        rc = 0;
        size_t i;
        json_t *l;
        json_array_foreach(layers, i, l) {
            const char *mt = json_string_value(json_object_get(l, "mediaType"));
            char shown[96];
            if (!layer_type_ok(mt)) {
                rc = util_fail(err, EINVAL, "layer %zu has media type '%s', which cannot be imported", i,
                               printable(mt, shown, sizeof shown));
                break;
            }
            if (oci_blob(im, json_string_value(json_object_get(l, "digest")), "the manifest", &im->layers[i], err) < 0) {
                rc = -1;
                break;
            }
            im->n_layers++;
        }
    }
    json_decref(m);
    return rc < 0 ? -1 : read_config(im, err);
}

/* A docker-archive file by its manifest.json name; a name that spells a
 * digest (blobs/sha256/<hex>, <hex>.json) must match its content. */
static int docker_file(struct import *im, const char *name, const char *what, struct blob_ref *out, cell_error *err)
{
    char norm[PATH_MAX], shown[128];
    if (!name || norm_name(name, what, norm, sizeof norm, err) <= 0)
        return util_fail(err, EBADMSG, "manifest.json: %s is not a file name", what);
    struct in_file *f = find_file(im, norm);
    if (!f)
        return util_fail(err, ENOENT, "manifest.json names %s '%s', which the archive does not hold", what,
                         printable(norm, shown, sizeof shown));
    const char *base = strrchr(norm, '/') ? strrchr(norm, '/') + 1 : norm;
    size_t bl = strlen(base);
    int spelled = (bl == 64 || (bl == 69 && strcmp(base + 64, ".json") == 0)) && strspn(base, "0123456789abcdef") == 64;
    if (spelled && strncmp(base, f->hex, 64) != 0)
        return util_fail(err, EBADMSG, "blob sha256:%.64s (%s) does not match its digest (its content is sha256:%s)",
                         base, what, f->hex);
    out->file = f;
    snprintf(out->digest, sizeof out->digest, "sha256:%s", f->hex);
    return 0;
}

/* docker save's manifest.json: [{"Config": "...", "Layers": [...]}]. */
static int docker_archive(struct import *im, cell_error *err)
{
    json_t *mj = load_json(im, find_file(im, "manifest.json"), "manifest.json", err);
    if (!mj)
        return -1;
    int rc = -1;
    json_t *one = json_array_get(mj, 0), *layers = json_object_get(one, "Layers");
    if (!json_is_array(mj) || json_array_size(mj) != 1)
        util_fail(err, EINVAL, "manifest.json must describe exactly one image (it has %zu)",
                  json_is_array(mj) ? json_array_size(mj) : 0);
    else if (!json_is_array(layers) || json_array_size(layers) > IMPORT_MAX_LAYERS)
        util_fail(err, EBADMSG, "manifest.json: Layers is not an array of at most %d names", IMPORT_MAX_LAYERS);
    else if (docker_file(im, json_string_value(json_object_get(one, "Config")), "the config", &im->config, err) == 0) {
        rc = 0;
        for (size_t i = 0; rc == 0 && i < json_array_size(layers); i++) {
            rc = docker_file(im, json_string_value(json_array_get(layers, i)), "a layer", &im->layers[i], err);
            im->n_layers += rc == 0;
        }
    }
    json_decref(mj);
    if (rc < 0 || read_config(im, err) < 0)
        return -1;
    /* The config's diff_ids are the digests of the (uncompressed) layers,
     * which is what docker save stores: check them where they can be. */
    json_t *cfg = load_json(im, im->config.file, "the image config", err);
    if (!cfg)
        return -1;
    json_t *ids = json_object_get(json_object_get(cfg, "rootfs"), "diff_ids");
    if (json_is_array(ids) && json_array_size(ids) != im->n_layers)
        rc = util_fail(err, EBADMSG, "the config names %zu layers, manifest.json %zu", json_array_size(ids), im->n_layers);
    for (size_t i = 0; rc == 0 && json_is_array(ids) && i < im->n_layers; i++) {
        const char *want = json_string_value(json_array_get(ids, i));
        if (want && strcmp(want, im->layers[i].digest) != 0)
            rc = util_fail(err, EBADMSG, "layer %zu does not match its digest: the config says %.80s, "
                           "its content is %s", i, want, im->layers[i].digest);
    }
    json_decref(cfg);
    return rc;
}

/* The OCI manifest a docker-archive lacks, written for it: its digest is the
 * image's, and export/commit find the same structure as for OCI imports. */
static int docker_manifest(struct import *im, cell_error *err)
{
    json_t *layers = json_array();
    for (size_t i = 0; layers && i < im->n_layers; i++)
        json_array_append_new(layers, json_pack("{s:s, s:s, s:I}", "mediaType", "application/vnd.oci.image.layer.v1.tar",
                                                "digest", im->layers[i].digest, "size",
                                                (json_int_t)im->layers[i].file->size));
    json_t *m = layers ? json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2, "mediaType",
                                   "application/vnd.oci.image.manifest.v1+json", "config", "mediaType",
                                   "application/vnd.oci.image.config.v1+json", "digest", im->config.digest, "size",
                                   (json_int_t)im->config.file->size, "layers", layers)
                       : NULL;
    char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    if (!text)
        return util_fail(err, ENOMEM, "out of memory");
    im->manifest_text = text;
    struct in_file *f = &im->files[im->n_files];
    memset(f, 0, sizeof *f);
    if (!(f->name = strdup(".manifest")))
        return util_fail(err, ENOMEM, "out of memory");
    im->n_files++;
    char path[PATH_MAX];
    if (file_path(im, f, path, sizeof path, err) < 0 || util_write_file(path, text, strlen(text), 0600, 0, err) < 0)
        return -1;
    struct image_sha256 h;
    runtime_image_sha256_init(&h);
    runtime_image_sha256_update(&h, text, strlen(text));
    runtime_image_sha256_final(&h, f->hex);
    f->size = strlen(text);
    im->manifest.file = f;
    snprintf(im->manifest.digest, sizeof im->manifest.digest, "sha256:%s", f->hex);
    return 0;
}

/* ---- applying layers ------------------------------------------------------------ */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void seen_clear(struct import *im)
{
    for (size_t i = 0; i < im->seen_cap; i++)
        free(im->seen[i]);
    free(im->seen);
    im->seen = NULL;
    im->seen_cap = im->seen_n = 0;
}

static int seen_has(const struct import *im, const char *path)
{
    if (!im->seen_cap)
        return 0;
    for (size_t i = hash_str(path) & (im->seen_cap - 1);; i = (i + 1) & (im->seen_cap - 1)) {
        if (!im->seen[i])
            return 0;
        if (strcmp(im->seen[i], path) == 0)
            return 1;
    }
}

static int seen_put(struct import *im, const char *path, cell_error *err);
static int seen_grow(struct import *im, cell_error *err)
{
    size_t old_cap = im->seen_cap, cap = old_cap ? old_cap * 2 : 1024;
    char **old = im->seen, **fresh = calloc(cap, sizeof *fresh);
    if (!fresh)
        return util_fail(err, ENOMEM, "out of memory");
    im->seen = fresh;
    im->seen_cap = cap;
    im->seen_n = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i]) {
            size_t j = hash_str(old[i]) & (cap - 1);
            while (fresh[j])
                j = (j + 1) & (cap - 1);
            fresh[j] = old[i];
            im->seen_n++;
        }
    free(old);
    return 0;
}

static int seen_put(struct import *im, const char *path, cell_error *err)
{
    if ((im->seen_n + 1) * 2 > im->seen_cap && seen_grow(im, err) < 0)
        return -1;
    size_t i = hash_str(path) & (im->seen_cap - 1);
    for (; im->seen[i]; i = (i + 1) & (im->seen_cap - 1))
        if (strcmp(im->seen[i], path) == 0)
            return 0;
    if (!(im->seen[i] = strdup(path)))
        return util_fail(err, ENOMEM, "out of memory");
    im->seen_n++;
    return 0;
}

/* `path` beneath the rootfs, never leaving it: absolute symlinks and ".."
 * planted by a layer resolve against the rootfs, as they would in a cell. */
static int open_in_root(struct import *im, const char *path, int flags, cell_error *err)
{
    struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC),
                            .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV };
    int fd = (int)syscall(SYS_openat2, im->root_fd, path, &how, sizeof how);
    if (fd < 0 && err)
        util_fail_errno(err, "cannot open %s in the new image", path);
    return fd;
}

/* The parent directory of `rel` (missing ones created 0755) as an O_PATH
 * fd; *base points at the last component. */
static int open_parent(struct import *im, char *rel, const char **base, cell_error *err)
{
    char *slash = strrchr(rel, '/');
    *base = slash ? slash + 1 : rel;
    int fd = fcntl(im->root_fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        return util_fail_errno(err, "cannot duplicate the rootfs descriptor");
    if (!slash)
        return fd;
    *slash = '\0';
    int found = open_in_root(im, rel, O_PATH | O_DIRECTORY, NULL);
    /* Else make the missing parents one by one (tar writers may leave
     * them out), each looked up beneath the rootfs again. */
    for (char *p = rel; found < 0;) {
        char *end = strchr(p, '/');
        if (end)
            *end = '\0';
        int sub = open_in_root(im, rel, O_PATH | O_DIRECTORY, NULL);
        if (sub < 0 && errno == ENOENT && (mkdirat(fd, p, 0755) == 0 || errno == EEXIST))
            sub = open_in_root(im, rel, O_PATH | O_DIRECTORY, NULL);
        int code = errno;
        if (end)
            *end = '/';
        close(fd);
        if (sub < 0) {
            *slash = '/';
            errno = code;
            return util_fail_errno(err, "cannot make the directory of %s in the new image", rel);
        }
        fd = sub;
        if (!end)
            break;
        p = end + 1;
    }
    *slash = '/';
    if (found >= 0) {
        close(fd);
        fd = found;
    }
    return fd;
}

/* Remove `name` in dir_fd, a whole tree if it is a directory (never
 * following a symlink). */
static int remove_at(int dir_fd, const char *name, cell_error *err)
{
    struct stat st;
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : util_fail_errno(err, "cannot stat %s", name);
    if (!S_ISDIR(st.st_mode))
        return unlinkat(dir_fd, name, 0) < 0 ? util_fail_errno(err, "cannot remove %s", name) : 0;
    int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", name);
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return util_fail_errno(err, "cannot read %s", name);
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (errno = 0, e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            rc = remove_at(dirfd(d), e->d_name, err);
    closedir(d);
    if (rc < 0)
        return -1;
    return unlinkat(dir_fd, name, AT_REMOVEDIR) < 0 ? util_fail_errno(err, "cannot remove %s", name) : 0;
}

/* An opaque directory: what lower layers put in `dir` goes; what this layer
 * already put there stays. */
static int make_opaque(struct import *im, const char *dir, int dir_fd, cell_error *err)
{
    int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", dir);
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return util_fail_errno(err, "cannot read %s", dir);
    }
    struct dirent *e;
    int rc = 0;
    char path[PATH_MAX];
    while (rc == 0 && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (snprintf(path, sizeof path, "%s%s%s", dir, *dir ? "/" : "", e->d_name) >= (int)sizeof path)
            continue;
        if (!seen_has(im, path))
            rc = remove_at(dirfd(d), e->d_name, err);
    }
    closedir(d);
    return rc;
}

static int write_data(struct import *im, runtime_untar *t, int fd, const char *rel, cell_error *err)
{
    const void *buf;
    size_t len;
    uint64_t off, end = 0;
    int r;
    while ((r = runtime_untar_data(t, &buf, &len, &off, err)) == 1) {
        if (off < end)
            return util_fail(err, EBADMSG, "layer entry '%s' has overlapping data blocks", rel);
        /* Holes count too: an image's size is what its files say they hold.
         * (off is the parser's word: checked before any sum can wrap.) */
        if (off > im->max_size || off + len - end > im->max_size - im->size)
            return util_fail(err, EFBIG, "the image is larger than its size limit (%llu bytes; raise it with "
                             "--max-image-size)", (unsigned long long)im->max_size);
        if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len)
            return util_fail_errno(err, "cannot write %s in the new image", rel);
        im->size += off + len - end;
        end = off + len;
    }
    if (r < 0)
        return -1;
    return ftruncate(fd, (off_t)end) < 0 ? util_fail_errno(err, "cannot size %s", rel) : 0;
}

/* A whiteout's data (none, normally): read past it. */
static int drain_data(runtime_untar *t, cell_error *err)
{
    const void *buf;
    size_t len;
    uint64_t off;
    int r;
    while ((r = runtime_untar_data(t, &buf, &len, &off, err)) == 1)
        ;
    return r;
}

static int owner_ok(const runtime_untar_entry *e, const char *rel, cell_error *err)
{
    char shown[128];
    if (e->uid >= IMPORT_ID_LIMIT || e->gid >= IMPORT_ID_LIMIT)
        return util_fail(err, EINVAL, "layer entry '%s' is owned by %u:%u; a cell maps ids 0-65535 only",
                         printable(rel, shown, sizeof shown), e->uid, e->gid);
    return 0;
}

static int apply_entry(struct import *im, runtime_untar *t, const runtime_untar_entry *e, const char *what,
                       cell_error *err)
{
    char rel[PATH_MAX], shown[128];
    int named = norm_name(e->name, what, rel, sizeof rel, err);
    if (named <= 0)
        return named; /* the root itself: its ownership and mode stay */
    if (++im->entries > IMPORT_MAX_ENTRIES)
        return util_fail(err, EFBIG, "the image has more than %u entries", IMPORT_MAX_ENTRIES);
    if (owner_ok(e, rel, err) < 0)
        return -1;
    const char *base;
    _cleanup_close_ int pfd = open_parent(im, rel, &base, err);
    if (pfd < 0)
        return -1;
    if (strncmp(base, ".wh.", 4) == 0) {
        if (e->kind == UNTAR_FILE && drain_data(t, err) < 0)
            return -1;
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%.*s", (int)(base > rel ? base - rel - 1 : 0), rel);
        if (strcmp(base, ".wh..wh..opq") == 0)
            return make_opaque(im, dir, pfd, err);
        const char *gone = base + 4;
        if (!*gone || strcmp(gone, ".") == 0 || strcmp(gone, "..") == 0)
            return util_fail(err, EINVAL, "%s: whiteout '%s' names nothing", what, printable(rel, shown, sizeof shown));
        return remove_at(pfd, gone, err);
    }
    if (seen_put(im, rel, err) < 0)
        return -1;
    struct stat st;
    int exists = fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (e->kind == UNTAR_DIR) {
        if (exists && !S_ISDIR(st.st_mode) && remove_at(pfd, base, err) < 0)
            return -1;
        if ((!exists || !S_ISDIR(st.st_mode)) && mkdirat(pfd, base, 0700) < 0)
            return util_fail_errno(err, "cannot create directory %s", rel);
        _cleanup_close_ int dfd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0 || fchown(dfd, e->uid, e->gid) < 0 || fchmod(dfd, e->perm) < 0)
            return util_fail_errno(err, "cannot set up directory %s", rel);
        return 0;
    }
    if (e->kind == UNTAR_OTHER)
        return util_fail(err, EINVAL, "%s: entry '%s' is a device, FIFO or socket; images hold only files, "
                         "directories and links", what, printable(rel, shown, sizeof shown));
    if (exists && remove_at(pfd, base, err) < 0)
        return -1;
    if (e->kind == UNTAR_FILE) {
        _cleanup_close_ int fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
            return util_fail_errno(err, "cannot create %s", rel);
        if (write_data(im, t, fd, rel, err) < 0)
            return -1;
        /* chown before chmod: chown clears set-id bits (kept, as lanes keep
         * them: the state directory is root's alone, and in a cell they
         * act only within its user namespace). */
        if (fchown(fd, e->uid, e->gid) < 0 || fchmod(fd, e->perm) < 0)
            return util_fail_errno(err, "cannot set the owner or mode of %s", rel);
        return 0;
    }
    if (e->kind == UNTAR_SYMLINK) {
        if (symlinkat(e->link, pfd, base) < 0 || fchownat(pfd, base, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0)
            return util_fail_errno(err, "cannot create symlink %s", rel);
        return 0;
    }
    /* A hard link: its target must already be in the image, found beneath
     * the rootfs like any name, and not be a directory. */
    char target[PATH_MAX];
    int valid = norm_name(e->link, what, target, sizeof target, err);
    if (valid <= 0)
        return valid < 0 ? -1 : util_fail(err, EINVAL, "%s: hard link '%s' has no target", what,
                                          printable(rel, shown, sizeof shown));
    _cleanup_close_ int tfd = open_in_root(im, target, O_PATH | O_NOFOLLOW, NULL);
    struct stat tst;
    if (tfd < 0 || fstat(tfd, &tst) < 0 || !(S_ISREG(tst.st_mode) || S_ISLNK(tst.st_mode)))
        return util_fail(err, EINVAL, "%s: hard link '%s' points at '%s', which is not a file of the image", what,
                         printable(rel, shown, sizeof shown), printable(target, shown + 64, 64));
    if (linkat(tfd, "", pfd, base, AT_EMPTY_PATH) < 0)
        return util_fail_errno(err, "cannot create hard link %s", rel);
    return 0;
}

static int apply_layer(struct import *im, size_t i, cell_error *err)
{
    char path[PATH_MAX], what[96];
    snprintf(what, sizeof what, "layer %zu (%.19s)", i + 1, im->layers[i].digest);
    say(im, "applying layer %zu/%zu %s (%llu bytes)", i + 1, im->n_layers, im->layers[i].digest,
        (unsigned long long)im->layers[i].file->size);
    if (file_path(im, im->layers[i].file, path, sizeof path, err) < 0)
        return -1;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", path);
    runtime_untar t;
    if (runtime_untar_start(fd, &t, err) < 0)
        return -1;
    runtime_untar_entry e;
    int r;
    while ((r = runtime_untar_next(&t, &e, err)) == 1)
        if (apply_entry(im, &t, &e, what, err) < 0) {
            r = -1;
            break;
        }
    runtime_untar_end(&t);
    seen_clear(im);
    if (r < 0 && err && !strstr(err->message, "layer")) {
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err->message);
        util_fail(err, err->code, "%s: %s", what, msg);
    }
    return r < 0 ? -1 : 0;
}

/* ---- the whole ------------------------------------------------------------------- */

static int store_blob(struct import *im, struct blob_ref *b, cell_error *err)
{
    if (b->file->stored)
        return 0;
    char path[PATH_MAX];
    if (file_path(im, b->file, path, sizeof path, err) < 0 || runtime_image_meta_blob_store(im->ctx, path, b->digest, err) < 0)
        return -1;
    b->file->stored = 1;
    return 0;
}

static int finish(struct import *im, cell_error *err)
{
    struct image_meta m = { 0 };
    char *layers[IMPORT_MAX_LAYERS], *blobs[2] = { im->manifest.digest, im->config.digest };
    snprintf(m.name, sizeof m.name, "%s", im->name);
    snprintf(m.tenant, sizeof m.tenant, "%s", im->tenant ? im->tenant : "");
    snprintf(m.digest, sizeof m.digest, "%s", im->manifest.digest);
    snprintf(m.source, sizeof m.source, "import");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    m.created = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    m.size = im->size;
    for (size_t i = 0; i < im->n_layers; i++)
        layers[i] = im->layers[i].digest;
    m.layers = layers;
    m.n_layers = im->n_layers;
    /* The manifest and config blobs too, so that blob collection keeps them. */
    m.blobs = blobs;
    m.n_blobs = 2;
    m.config = im->cfg;
    if (runtime_image_meta_write_dir(im->stage, &m, err) < 0)
        return -1;
    if (store_blob(im, &im->manifest, err) < 0 || store_blob(im, &im->config, err) < 0)
        return -1;
    for (size_t i = 0; i < im->n_layers; i++)
        if (store_blob(im, &im->layers[i], err) < 0)
            return -1;
    if (util_rm_rf(im->in_dir, err) < 0)
        return -1;
    char dest[PATH_MAX];
    if (util_path(dest, sizeof dest, err, "%s/images/%s", im->ctx->state_dir, im->name) < 0)
        return -1;
    if (renameat2(AT_FDCWD, im->stage, AT_FDCWD, dest, RENAME_NOREPLACE) < 0)
        return errno == EEXIST ? util_fail(err, EEXIST, "image '%s' already exists: remove it first (cell image rm %s)",
                                           im->name, im->name)
                               : util_fail_errno(err, "cannot install image '%s'", im->name);
    say(im, "imported image %s (%s, %llu bytes)", im->name, im->manifest.digest, (unsigned long long)im->size);
    return 0;
}

static int run_import(struct import *im, int fd, cell_error *err)
{
    char root[PATH_MAX];
    if (util_path(root, sizeof root, err, "%s/rootfs", im->stage) < 0 || util_mkdir_p(im->in_dir, 0700, err) < 0 ||
        util_mkdir_p(root, 0755, err) < 0)
        return -1;
    if (chmod(root, 0755) < 0)
        return util_fail_errno(err, "cannot chmod %s", root);
    if (!(im->files = calloc(IMPORT_MAX_FILES + 1, sizeof *im->files)))
        return util_fail(err, ENOMEM, "out of memory");
    say(im, "reading the archive");
    if (read_archive(im, fd, err) < 0)
        return -1;
    if (find_file(im, "index.json")) {
        if (oci_layout(im, err) < 0)
            return -1;
    } else if (find_file(im, "manifest.json")) {
        if (docker_archive(im, err) < 0 || docker_manifest(im, err) < 0)
            return -1;
    } else {
        return util_fail(err, EINVAL, "the archive is neither an OCI image layout (index.json) nor a "
                         "docker-archive (manifest.json)");
    }
    if ((im->root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
        return util_fail_errno(err, "cannot open %s", root);
    for (size_t i = 0; i < im->n_layers; i++)
        if (apply_layer(im, i, err) < 0)
            return -1;
    return finish(im, err);
}

int runtime_image_import_owned(cell_ctx *ctx, const char *name, int fd, uint64_t max_size, const char *tenant,
                               cell_progress_fn progress, void *user, cell_error *err)
{
    if (runtime_image_meta_check_name(name, err) < 0)
        return -1;
    char dest[PATH_MAX], suffix[17];
    if (util_path(dest, sizeof dest, err, "%s/images/%s", ctx->state_dir, name) < 0)
        return -1;
    if (access(dest, F_OK) == 0)
        return util_fail(err, EEXIST, "image '%s' already exists: remove it first (cell image rm %s)", name, name);
    if (util_random_hex(suffix, 8) < 0)
        return util_fail_errno(err, "getrandom");
    struct import im = { .ctx = ctx, .name = name, .tenant = tenant, .progress = progress, .user = user, .root_fd = -1,
                         .max_size = max_size ? max_size : CELL_IMAGE_DEFAULT_MAX_SIZE };
    /* The staging directory sits beside the blob store, on its filesystem,
     * so that storing a blob is a link. */
    char blobs[PATH_MAX];
    if (runtime_image_meta_blob_dir(ctx, blobs, sizeof blobs, err) < 0 ||
        util_path(im.stage, sizeof im.stage, err, "%s/images/.%s" IMAGE_META_STAGING "%s", ctx->state_dir, name,
                  suffix) < 0 ||
        util_path(im.in_dir, sizeof im.in_dir, err, "%s/in", im.stage) < 0)
        return -1;
    runtime_image_meta_sweep(ctx);
    /* Held from before the first blob is stored until image.json names
     * them from images/NAME: no collection runs meanwhile. */
    int blobs_lock = runtime_image_meta_blobs_hold(ctx, err);
    if (blobs_lock < 0)
        return -1;
    int lock = runtime_image_meta_stage(im.stage, err);
    if (lock < 0) {
        runtime_image_meta_blobs_release(ctx, blobs_lock);
        return -1;
    }
    int rc = run_import(&im, fd, err);
    if (rc < 0)
        util_rm_rf(im.stage, NULL);
    close(lock);
    runtime_image_meta_blobs_release(ctx, blobs_lock);
    if (rc < 0)
        runtime_image_meta_gc(ctx); /* blobs a failed import stored and nothing names */
    if (im.root_fd >= 0)
        close(im.root_fd);
    for (size_t i = 0; im.files && i < im.n_files; i++) {
        free(im.files[i].name);
        free(im.files[i].link);
    }
    free(im.files);
    free(im.manifest_text);
    seen_clear(&im);
    runtime_image_meta_config_free(&im.cfg);
    return rc;
}

int cell_image_import_sized(cell_ctx *ctx, const char *name, int fd, uint64_t max_size, cell_progress_fn progress,
                            void *user, cell_error *err)
{
    return runtime_image_import_owned(ctx, name, fd, max_size, NULL, progress, user, err);
}

int cell_image_import(cell_ctx *ctx, const char *name, int fd, cell_progress_fn progress, void *user, cell_error *err)
{
    return cell_image_import_sized(ctx, name, fd, 0, progress, user, err);
}
