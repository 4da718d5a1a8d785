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
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
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
    if (cell_lane_list(ctx, &lanes, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(lanes[i].image, name) == 0)
            found = append_user(users, "lane", lanes[i].name);
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

int cell_image_remove(cell_ctx *ctx, const char *name, cell_error *err)
{
    for (const char *const *b = runtime_image_names; *b; b++)
        if (name && strcmp(*b, name) == 0)
            return util_fail(err, EINVAL, "image '%s' is builtin and cannot be removed", name);
    if (image_meta_check_name(name, err) < 0)
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
    return util_rm_rf(aside, err);
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
        if (image_meta_read(ctx, *b, &m, NULL) == 0) {
            info_from_meta(&info, &m);
            image_meta_free(&m);
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
        if (builtin || image_meta_check_name(e->d_name, NULL) < 0 || image_meta_read(ctx, e->d_name, &m, NULL) < 0)
            continue;
        cell_image_info info = { .ready = 1 };
        snprintf(info.name, sizeof info.name, "%.63s", e->d_name);
        info_from_meta(&info, &m);
        image_meta_free(&m);
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
