/* digest.c: the deterministic digest of a directory tree (SHA-256 of
 * image_sha256.c), for builtin images' and committed images' digests. */
#include "runtime/digest.h"
#include "runtime/image_meta.h"
#include "runtime/runtime.h"
#include "util/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

/* Each entry is hashed as one record: its path, type, mode, owner, device,
 * size, mtime, link target or content, and the overlay opaque mark of a
 * directory.  Names are sorted (strcmp), so the digest does not depend on
 * the order the filesystem lists them in. */
static int hash_record(struct image_sha256 *op, const char *path, const struct stat *st, const char *extra, size_t extra_len,
                       cell_error *err)
{
    char head[PATH_MAX + 200];
    int n = snprintf(head, sizeof head, "%s%c%o %u %u %u:%u %lld %lld.%09ld %zu%c", path, 0, (unsigned)st->st_mode,
                     (unsigned)st->st_uid, (unsigned)st->st_gid, major(st->st_rdev), minor(st->st_rdev),
                     (long long)(S_ISREG(st->st_mode) ? st->st_size : 0), (long long)st->st_mtim.tv_sec,
                     st->st_mtim.tv_nsec, extra_len, 0);
    if (n < 0 || (size_t)n >= sizeof head)
        return util_fail(err, ENAMETOOLONG, "path too long hashing %s", path);
    runtime_image_sha256_update(op, head, (size_t)n);
    if (extra_len)
        runtime_image_sha256_update(op, extra, extra_len);
    return 0;
}

static int hash_chunk(void *op, const void *data, size_t len, cell_error *err)
{
    (void)err;
    runtime_image_sha256_update(op, data, len);
    return 0;
}

static int hash_content(struct image_sha256 *op, int dirfd, const char *name, const char *path, cell_error *err)
{
    _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", path);
    return util_read_each(fd, path, hash_chunk, op, err);
}

static int hash_dir(struct image_sha256 *op, int dirfd, const char *path, cell_error *err)
{
    _cleanup_names_ util_names names = { 0 };
    if (util_dir_names(dirfd, path[0] ? path : "/", &names, err) < 0)
        return -1;
    int rc = 0;
    for (int i = 0; i < names.n && rc == 0; i++) {
        const char *name = names.v[i]->d_name;
        char sub[PATH_MAX];
        struct stat st;
        if (util_path(sub, sizeof sub, err, "%s/%s", path, name) < 0 ||
            fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = util_fail_errno(err, "cannot stat %s", sub);
            continue;
        }
        if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t len = readlinkat(dirfd, name, target, sizeof target);
            rc = len < 0 ? util_fail_errno(err, "cannot read link %s", sub)
                         : hash_record(op, sub, &st, target, (size_t)len, err);
        } else if (S_ISDIR(st.st_mode)) {
            _cleanup_close_ int sfd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            char opaque[2] = "";
            ssize_t o = sfd < 0 ? -1 : fgetxattr(sfd, "trusted.overlay.opaque", opaque, sizeof opaque);
            rc = sfd < 0 ? util_fail_errno(err, "cannot open %s", sub)
                         : hash_record(op, sub, &st, opaque, o > 0 ? (size_t)o : 0, err);
            if (rc == 0)
                rc = hash_dir(op, sfd, sub, err);
        } else {
            rc = hash_record(op, sub, &st, NULL, 0, err);
            if (rc == 0 && S_ISREG(st.st_mode))
                rc = hash_content(op, dirfd, name, sub, err);
        }
    }
    return rc;
}

int runtime_tree_digest(int dirfd, const char *prefix, char out[72], cell_error *err)
{
    struct image_sha256 op;
    char hex[65];
    runtime_image_sha256_init(&op);
    if (prefix)
        runtime_image_sha256_update(&op, prefix, strlen(prefix) + 1);
    if (hash_dir(&op, dirfd, "", err) < 0)
        return -1;
    runtime_image_sha256_final(&op, hex);
    snprintf(out, 72, "sha256:%s", hex);
    return 0;
}
