/* image_digest.c: an image's digest, as lanes (binding) and commits (the
 * new image's digest) read it: image.json's for stored images, a tree
 * digest for builtin ones. */
#include "runtime/digest.h"
#include "runtime/image_meta.h"
#include "runtime/runtime.h"
#include "util/util.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>

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
        int ok = runtime_image_meta_valid_digest(text);
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
    if (runtime_tree_digest(fd, "cell-builtin-image 1", out, err) < 0)
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
    for (const char *const *b = runtime_image_names; *b; b++)
        if (strcmp(*b, name) == 0)
            return builtin_digest(ctx, name, out, err);
    struct image_meta m;
    if (runtime_image_meta_read(ctx, name, &m, err) < 0)
        return -1;
    snprintf(out, 72, "%s", m.digest);
    runtime_image_meta_free(&m);
    return 0;
}
