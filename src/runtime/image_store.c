/* image_store.c: listing and removing stored images (image_meta.h).
 *
 * Who uses an image: lanes record it in lanes/NAME/image; a cell booting a
 * stored image writes its name to run/cells/ID/image before it resolves the
 * image's rootfs, and holds the flock of run/cells/ID while it lives.
 * Removal first renames the image away (no new cell or lane can find it),
 * then looks for users, and renames it back if there are any: a cell that
 * wrote its mark before the check is seen, one that wrote it after finds
 * no image. */
#include "runtime/image_meta.h"
#include "runtime/runtime.h"
#include "util/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define USERS_MAX 512   /* bytes of user names in a refusal */

static int append_user(char *users, const char *kind, const char *name)
{
    size_t n = strlen(users);
    if (n + 80 < USERS_MAX)
        snprintf(users + n, USERS_MAX - n, "%s%s %.63s", n ? ", " : "", kind, name);
    return 1;
}

/* Lanes bound to `name`. */
static int lane_users(cell_ctx *ctx, const char *name, char *users, cell_error *err)
{
    cell_lane_info *lanes = NULL;
    size_t n = 0;
    int found = 0;
    /* The daemon's lanes too, named as their tenants know them. */
    if (runtime_lane_list_all(ctx, &lanes, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char owner[160];
        if (strcmp(lanes[i].image, name) != 0)
            continue;
        if (runtime_lane_owner(ctx, lanes[i].name, owner, sizeof owner))
            found = append_user(users, "daemon lane", owner);
        else
            found = append_user(users, "lane", lanes[i].name);
    }
    free(lanes);
    return found;
}

/* A live cell (its run dir's flock is held) marked as using `name`. */
static int cell_uses(const char *run_dir, const char *name)
{
    char path[PATH_MAX], *text = NULL;
    if (snprintf(path, sizeof path, "%s/image", run_dir) >= (int)sizeof path ||
        util_read_file(path, 256, &text, NULL, NULL) < 0)
        return 0;
    int same = strcmp(text, name) == 0;
    free(text);
    if (!same)
        return 0;
    _cleanup_close_ int fd = open(run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    if (flock(fd, LOCK_SH | LOCK_NB) == 0)
        return 0; /* a crashed owner's leftover */
    return errno == EWOULDBLOCK;
}

static int cell_users(cell_ctx *ctx, const char *name, char *users, cell_error *err)
{
    char dir[PATH_MAX];
    if (util_path(dir, sizeof dir, err, "%s/run/cells", ctx->state_dir) < 0)
        return -1;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : util_fail_errno(err, "cannot list %s", dir);
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d))) {
        char run[PATH_MAX];
        if (e->d_name[0] == '.' || snprintf(run, sizeof run, "%s/%s", dir, e->d_name) >= (int)sizeof run)
            continue;
        if (cell_uses(run, name))
            found = append_user(users, "cell", e->d_name);
    }
    closedir(d);
    return found;
}

int runtime_image_mark_user(const char *run_dir, const char *image, cell_error *err)
{
    char path[PATH_MAX];
    if (util_path(path, sizeof path, err, "%s/image", run_dir) < 0)
        return -1;
    return util_write_file(path, image, strlen(image), 0600, 0, err);
}

int runtime_image_meta_stage(const char *path, cell_error *err)
{
    char fresh[PATH_MAX];
    if (util_path(fresh, sizeof fresh, err, "%s.new", path) < 0)
        return -1;
    if (mkdir(fresh, 0700) < 0)
        return util_fail_errno(err, "cannot create %s", fresh);
    int fd = open(fresh, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || flock(fd, LOCK_EX) < 0 || rename(fresh, path) < 0) {
        int code = errno;
        if (fd >= 0)
            close(fd);
        rmdir(fresh);
        errno = code;
        return util_fail_errno(err, "cannot set up %s", path);
    }
    return fd;
}

static int sweepable(const char *n)
{
    size_t len = strlen(n);
    /* NAME.new: being made by runtime_image_meta_stage, not locked yet. */
    if (len >= 4 && strcmp(n + len - 4, ".new") == 0)
        return 0;
    return n[0] == '.' && (strstr(n, IMAGE_META_STAGING) || strstr(n, ".rm-"));
}

void runtime_image_meta_sweep(cell_ctx *ctx)
{
    char dir[PATH_MAX];
    if (util_path(dir, sizeof dir, NULL, "%s/images", ctx->state_dir) < 0)
        return;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[PATH_MAX];
        if (!sweepable(e->d_name) || snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path)
            continue;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        /* Held: an import or removal in progress.  Free: its owner died. */
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0)
            util_rm_rf(path, NULL);
    }
    if (d)
        closedir(d);
}

int cell_image_remove(cell_ctx *ctx, const char *name, cell_error *err)
{
    for (const char *const *b = runtime_image_names; *b; b++)
        if (name && strcmp(*b, name) == 0)
            return util_fail(err, EINVAL, "image '%s' is builtin and cannot be removed", name);
    if (runtime_image_meta_check_name(name, err) < 0)
        return -1;
    char dir[PATH_MAX], aside[PATH_MAX], meta[PATH_MAX], suffix[17];
    if (util_random_hex(suffix, 8) < 0)
        return util_fail_errno(err, "getrandom");
    if (util_path(dir, sizeof dir, err, "%s/images/%s", ctx->state_dir, name) < 0 ||
        util_path(aside, sizeof aside, err, "%s/images/.%s.rm-%s", ctx->state_dir, name, suffix) < 0 ||
        util_path(meta, sizeof meta, err, "%s/image.json", dir) < 0)
        return -1;
    if (access(meta, F_OK) < 0)
        return util_fail(err, ENOENT, "unknown image '%s' (cell image ls lists them)", name);
    runtime_image_meta_sweep(ctx);
    /* Locked before it gets its .rm- name: a sweep must not take an image
     * this removal may still put back. */
    _cleanup_close_ int lock = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (lock < 0 || flock(lock, LOCK_EX) < 0)
        return errno == ENOENT ? util_fail(err, ENOENT, "unknown image '%s'", name)
                               : util_fail_errno(err, "cannot lock image '%s'", name);
    if (rename(dir, aside) < 0)
        return errno == ENOENT ? util_fail(err, ENOENT, "unknown image '%s'", name)
                               : util_fail_errno(err, "cannot remove image '%s'", name);
    char users[USERS_MAX] = "";
    int lanes = lane_users(ctx, name, users, err);
    int cells = lanes < 0 ? -1 : cell_users(ctx, name, users, err);
    if (lanes != 0 || cells != 0) {
        if (rename(aside, dir) < 0)
            return util_fail_errno(err, "image '%s' is in use, and putting it back failed", name);
        if (lanes < 0 || cells < 0)
            return -1;
        return util_fail(err, EBUSY, "image '%s' is in use by %s: remove those first", name, users);
    }
    /* The daemon's share list goes with the image, under the image's lock
     * (a share is written holding it too), so that a later image of the
     * name does not inherit it.  Removed after the name is free: at worst
     * a list just written for a new image of the name goes, which hides
     * that image (fails closed), never shows one. */
    char shares[PATH_MAX];
    if (util_path(shares, sizeof shares, err, "%s/images/" IMAGE_META_SHARES "/%s", ctx->state_dir, name) < 0)
        return -1;
    if (unlink(shares) < 0 && errno != ENOENT) {
        util_fail_errno(err, "cannot remove %s", shares);
        if (rename(aside, dir) < 0)
            util_fail_errno(err, "cannot remove %s, nor put image '%s' back", shares, name);
        return -1;
    }
    if (util_rm_rf(aside, err) < 0)
        return -1;
    runtime_image_meta_gc(ctx);
    return 0;
}

/* ---- blob collection (image_meta.h) ------------------------------------------------ */

static int lock_path(cell_ctx *ctx, const char *file, char *out, size_t size, cell_error *err)
{
    return util_path(out, size, err, "%s/images/%s", ctx->state_dir, file);
}

static int blobs_lock_open(cell_ctx *ctx, cell_error *err)
{
    char path[PATH_MAX];
    if (lock_path(ctx, ".blobs.lock", path, sizeof path, err) < 0)
        return -1;
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", path);
    return fd;
}

int runtime_image_meta_blobs_hold(cell_ctx *ctx, cell_error *err)
{
    char dir[PATH_MAX];
    if (runtime_image_meta_blob_dir(ctx, dir, sizeof dir, err) < 0)
        return -1;
    int fd = blobs_lock_open(ctx, err);
    if (fd >= 0 && flock(fd, LOCK_SH) < 0) {
        util_fail_errno(err, "cannot lock the blob store");
        close(fd);
        return -1;
    }
    return fd;
}

void runtime_image_meta_blobs_release(cell_ctx *ctx, int fd)
{
    char pending[PATH_MAX];
    close(fd);
    if (lock_path(ctx, ".gc-pending", pending, sizeof pending, NULL) >= 0 && access(pending, F_OK) == 0)
        runtime_image_meta_gc(ctx);
}

struct refs {
    char (*hex)[65];
    size_t n, cap;
};

static int refs_add(struct refs *r, char *const *digests, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!runtime_image_meta_valid_digest(digests[i]))
            continue;
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 64;
            void *grown = realloc(r->hex, cap * sizeof *r->hex);
            if (!grown)
                return -1;
            r->hex = grown;
            r->cap = cap;
        }
        memcpy(r->hex[r->n++], digests[i] + 7, 65);
    }
    return 0;
}

static int hex_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The blobs every image.json under images/ names: stored images, and those
 * a removal has set aside (it may put one back).  -1 when one cannot be
 * read: then nothing is collected. */
static int collect_refs(cell_ctx *ctx, struct refs *r)
{
    char dir[PATH_MAX];
    if (util_path(dir, sizeof dir, NULL, "%s/images", ctx->state_dir) < 0)
        return -1;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        char path[PATH_MAX];
        struct image_meta m;
        cell_error me = { 0 };
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || strcmp(e->d_name, "blobs") == 0 ||
            strcmp(e->d_name, IMAGE_META_SHARES) == 0 || e->d_type != DT_DIR ||
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path)
            continue;
        if (runtime_image_meta_read_dir(path, &m, &me) < 0) {
            rc = me.code == ENOENT ? 0 : -1; /* builtins have none */
            continue;
        }
        char *digest = m.digest;
        rc = refs_add(r, &digest, 1) < 0 || refs_add(r, m.layers, m.n_layers) < 0 ||
             refs_add(r, m.blobs, m.n_blobs) < 0 ? -1 : 0;
        runtime_image_meta_free(&m);
    }
    closedir(d);
    return rc;
}

/* With the lock held exclusively: no import is between storing a blob and
 * naming it, so a blob no image names is garbage. */
static int collect(cell_ctx *ctx)
{
    char dir[PATH_MAX];
    struct refs r = { 0 };
    runtime_image_meta_sweep(ctx);
    if (runtime_image_meta_blob_dir(ctx, dir, sizeof dir, NULL) < 0 || collect_refs(ctx, &r) < 0) {
        free(r.hex);
        return -1;
    }
    if (r.n)
        qsort(r.hex, r.n, sizeof *r.hex, hex_cmp);
    DIR *d = opendir(dir);
    int gone = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.' || (r.n && bsearch(e->d_name, r.hex, r.n, sizeof *r.hex, hex_cmp)))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            gone++;
    }
    if (d)
        closedir(d);
    free(r.hex);
    return d ? gone : -1;
}

int runtime_image_meta_gc(cell_ctx *ctx)
{
    char pending[PATH_MAX];
    if (lock_path(ctx, ".gc-pending", pending, sizeof pending, NULL) < 0)
        return -1;
    _cleanup_close_ int fd = blobs_lock_open(ctx, NULL);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        /* An import holds it: leave the work to the last one out.  Tried
         * again after the mark: a holder that let go before the mark was
         * written did not see it, and then this attempt succeeds. */
        if (util_write_file(pending, "", 0, 0600, 0, NULL) < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0)
            return -1;
    }
    if (unlink(pending) < 0 && errno != ENOENT)
        return -1;
    return collect(ctx);
}

static int add_info(cell_image_info **arr, size_t *n, size_t *cap, const cell_image_info *info, cell_error *err)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        cell_image_info *a = realloc(*arr, c * sizeof *a);
        if (!a)
            return util_fail(err, ENOMEM, "out of memory");
        *arr = a;
        *cap = c;
    }
    (*arr)[(*n)++] = *info;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const cell_image_info *)a)->name, ((const cell_image_info *)b)->name);
}

static void info_from_meta(cell_image_info *info, const struct image_meta *m)
{
    snprintf(info->digest, sizeof info->digest, "%s", m->digest);
    snprintf(info->source, sizeof info->source, "%s", m->source);
    info->size = m->size;
    info->created = m->created;
}

int cell_image_list(cell_ctx *ctx, cell_image_info **out, size_t *count, cell_error *err)
{
    cell_image_info *arr = NULL;
    size_t n = 0, cap = 0, builtins = 0;
    struct image_meta m;
    *out = NULL;
    *count = 0;
    for (const char *const *b = runtime_image_names; *b; b++, builtins++) {
        cell_image_info info = { .ready = cell_image_status(ctx, *b, NULL) == 1 };
        snprintf(info.name, sizeof info.name, "%s", *b);
        snprintf(info.source, sizeof info.source, "builtin");
        if (runtime_image_meta_read(ctx, *b, &m, NULL) == 0) {
            info_from_meta(&info, &m);
            runtime_image_meta_free(&m);
        }
        if (add_info(&arr, &n, &cap, &info, err) < 0)
            goto fail;
    }
    char dir[PATH_MAX];
    if (util_path(dir, sizeof dir, err, "%s/images", ctx->state_dir) < 0)
        goto fail;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int builtin = 0;
        for (const char *const *b = runtime_image_names; *b; b++)
            builtin |= strcmp(*b, e->d_name) == 0;
        if (builtin || runtime_image_meta_check_name(e->d_name, NULL) < 0 || runtime_image_meta_read(ctx, e->d_name, &m, NULL) < 0)
            continue;
        cell_image_info info = { .ready = 1 };
        snprintf(info.name, sizeof info.name, "%.63s", e->d_name);
        info_from_meta(&info, &m);
        runtime_image_meta_free(&m);
        if (add_info(&arr, &n, &cap, &info, err) < 0) {
            closedir(d);
            goto fail;
        }
    }
    if (d)
        closedir(d);
    else if (errno != ENOENT) {
        util_fail_errno(err, "cannot list %s", dir);
        goto fail;
    }
    qsort(arr + builtins, n - builtins, sizeof *arr, by_name);
    *out = arr;
    *count = n;
    return 0;
fail:
    free(arr);
    return -1;
}

/* ---- a cell's defaults from its image's config ---------------------------------- */

void cell_image_config_free(cell_image_config *c)
{
    for (size_t i = 0; c->env && i < c->n_env; i++)
        free(c->env[i]);
    for (size_t i = 0; c->argv && i < c->n_argv; i++)
        free(c->argv[i]);
    free(c->env);
    free(c->argv);
    free(c->cwd);
    memset(c, 0, sizeof *c);
}

/* A uid or gid as digits (0..65535), else -1. */
static long numeric_id(const char *s)
{
    if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 5)
        return -1;
    long v = strtol(s, NULL, 10);
    return v < 65536 ? v : -1;
}

/* Look `name` up in the image's etc/passwd or etc/group (field 3: its id;
 * *gid gets passwd's field 4).  The file is the image's, possibly a symlink
 * planted by a layer: it is opened beneath the rootfs. */
static long lookup_id(const char *rootfs, const char *file, const char *name, long *gid, cell_error *err)
{
    _cleanup_close_ int root = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
    /* O_NONBLOCK: a FIFO there must not hold the caller until a writer
     * comes; anything but a regular file is refused below. */
    struct open_how how = { .flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY,
                            .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV };
    _cleanup_close_ int fd = root < 0 ? -1 : (int)syscall(SYS_openat2, root, file, &how, sizeof how);
    if (fd < 0)
        return util_fail(err, ENOENT, "the image's User '%s' cannot be resolved: no /%s", name, file);
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return util_fail(err, EINVAL, "the image's User '%s' cannot be resolved: its /%s is not a file", name, file);
    /* Read at its size: a 1 MiB buffer here made the cell's plan a cleared
     * heap block (util_read_fd). */
    _cleanup_free_ char *buf = NULL;
    if (util_read_fd(fd, file, (1u << 20) - 1, &buf, NULL, err) < 0)
        return -1;
    long found = -1;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line && found < 0; line = strtok_r(NULL, "\n", &save)) {
        char *f[5] = { 0 };
        char *p = line;
        for (int i = 0; i < 5 && p; i++) {
            f[i] = p;
            p = strchr(p, ':');
            if (p)
                *p++ = '\0';
        }
        if (f[0] && f[2] && strcmp(f[0], name) == 0 && (found = numeric_id(f[2])) >= 0 && gid)
            *gid = f[3] ? numeric_id(f[3]) : -1;
    }
    if (found < 0)
        return util_fail(err, ENOENT, "the image's User '%s' is not in its /%s (or has an id past 65535)", name, file);
    return found;
}

/* User: "uid", "uid:gid", "name", "name:group" (names from the image). */
static int resolve_user(const char *rootfs, const char *user, cell_image_config *c, cell_error *err)
{
    char u[256];
    if (snprintf(u, sizeof u, "%s", user) >= (int)sizeof u)
        return util_fail(err, EINVAL, "the image's User is too long");
    char *g = strchr(u, ':');
    if (g)
        *g++ = '\0';
    long gid = -1, uid = numeric_id(u);
    if (uid < 0 && (uid = lookup_id(rootfs, "etc/passwd", u, &gid, err)) < 0)
        return -1;
    if (g && (gid = numeric_id(g)) < 0 && (gid = lookup_id(rootfs, "etc/group", g, NULL, err)) < 0)
        return -1;
    c->has_user = 1;
    c->uid = (uid_t)uid;
    c->gid = (gid_t)(gid >= 0 ? gid : uid);
    return 0;
}

static char **copy_strv(char *const *a, size_t na, char *const *b, size_t nb)
{
    char **v = calloc(na + nb + 1, sizeof *v);
    for (size_t i = 0; v && i < na + nb; i++)
        if (!(v[i] = strdup(i < na ? a[i] : b[i - na]))) {
            for (size_t j = 0; j < i; j++)
                free(v[j]);
            free(v);
            return NULL;
        }
    return v;
}

int cell_image_config_get(cell_ctx *ctx, const char *image, cell_image_config *out, cell_error *err)
{
    memset(out, 0, sizeof *out);
    struct image_meta m;
    if (!image || runtime_image_meta_check_name(image, NULL) < 0)
        return 0; /* builtin images have no config */
    cell_error rerr = { 0 };
    if (runtime_image_meta_read(ctx, image, &m, &rerr) < 0) {
        if (rerr.code == ENOENT)
            return 0; /* no such image: booting it says so */
        if (err)
            *err = rerr;
        return -1;
    }
    char rootfs[PATH_MAX];
    int rc = util_path(rootfs, sizeof rootfs, err, "%s/images/%s/rootfs", ctx->state_dir, image) < 0 ? -1 : 0;
    const struct image_meta_config *ic = &m.config;
    if (rc == 0 && ((ic->n_env && !(out->env = copy_strv(ic->env, ic->n_env, NULL, 0))) ||
                    (ic->n_entrypoint + ic->n_cmd &&
                     !(out->argv = copy_strv(ic->entrypoint, ic->n_entrypoint, ic->cmd, ic->n_cmd))) ||
                    (ic->working_dir && !(out->cwd = strdup(ic->working_dir)))))
        rc = util_fail(err, ENOMEM, "out of memory");
    if (rc == 0) {
        out->n_env = out->env ? ic->n_env : 0;
        out->n_argv = out->argv ? ic->n_entrypoint + ic->n_cmd : 0;
        if (ic->user)
            rc = resolve_user(rootfs, ic->user, out, err);
    }
    runtime_image_meta_free(&m);
    if (rc < 0)
        cell_image_config_free(out);
    return rc;
}
