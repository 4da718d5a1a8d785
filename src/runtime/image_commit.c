/* image_commit.c: a lane flattened into a new image (`cell lane commit`).
 *
 * The new rootfs is the base image's tree with every non-directory
 * hard-linked, not copied, then the lane's upper dir applied on top the way
 * overlayfs would show it: whiteouts (char 0:0) remove, an opaque directory
 * (trusted.overlay.opaque=y) hides everything of the base below it, any
 * other entry replaces the base's.  Sharing inodes with the base is safe
 * because images are read-only once written: cells see them only as the
 * read-only lower layer (overlayfs copies up, never writes a lower file),
 * nothing of cell rewrites an image in place (a rebuild or an import
 * renames a whole new tree into place), and the apply below never writes
 * into a linked file: it unlinks the name and creates a new file. */
#include "runtime/digest.h"
#include "runtime/image_meta.h"
#include "runtime/runtime.h"
#include "util/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>

struct commit {
    const char *lane;
    uint64_t    size;   /* bytes of regular files in the new rootfs */
    cell_error *err;
};

static int set_meta(int fd, const struct stat *st, const char *path, cell_error *err)
{
    struct timespec times[2] = { st->st_atim, st->st_mtim };
    if (fchown(fd, st->st_uid, st->st_gid) < 0 || fchmod(fd, st->st_mode & 07777) < 0 || futimens(fd, times) < 0)
        return util_fail_errno(err, "cannot set the owner, mode and times of %s", path);
    return 0;
}

/* rm -rf of `name` below dirfd, never following a symlink. */
static int remove_at(int dirfd, const char *name, cell_error *err)
{
    if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return util_fail_errno(err, "cannot remove %s", name);
    _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s to remove it", name);
    int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        return util_fail_errno(err, "cannot list %s to remove it", name);
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            rc = remove_at(fd, e->d_name, err);
    closedir(d);
    if (rc == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
        return util_fail_errno(err, "cannot remove directory %s", name);
    return rc;
}

/* ---- the base: directories made, everything else hard-linked ------------ */
static int link_tree(struct commit *c, int from, int to, const char *path)
{
    int dfd = fcntl(from, F_DUPFD_CLOEXEC, 0);
    DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        return util_fail_errno(c->err, "cannot list the base image's %s", path);
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        struct stat st;
        char sub[PATH_MAX];
        if (util_path(sub, sizeof sub, c->err, "%s/%s", path, e->d_name) < 0)
            rc = -1;
        else if (fstatat(from, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            rc = util_fail_errno(c->err, "cannot stat the base image's %s", sub);
        else if (!S_ISDIR(st.st_mode)) {
            if (linkat(from, e->d_name, to, e->d_name, 0) < 0)
                rc = util_fail_errno(c->err, "cannot link the base image's %s", sub);
            else if (S_ISREG(st.st_mode))
                c->size += (uint64_t)st.st_size;
        } else if (mkdirat(to, e->d_name, 0700) < 0) {
            rc = util_fail_errno(c->err, "cannot create %s", sub);
        } else {
            _cleanup_close_ int sf = openat(from, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            _cleanup_close_ int tf = openat(to, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sf < 0 || tf < 0)
                rc = util_fail_errno(c->err, "cannot open %s", sub);
            else if ((rc = link_tree(c, sf, tf, sub)) == 0)
                rc = set_meta(tf, &st, sub, c->err);
        }
    }
    closedir(d);
    return rc;
}

/* ---- the lane's upper dir on top ------------------------------------------ */
static int copy_file(struct commit *c, int from, int to, const char *name, const struct stat *st, const char *path)
{
    _cleanup_close_ int in = openat(from, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (in < 0)
        return util_fail_errno(c->err, "cannot open the lane's %s", path);
    _cleanup_close_ int out = openat(to, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0)
        return util_fail_errno(c->err, "cannot create %s", path);
    /* copy_file_range shares extents where it can; between filesystems (a
     * size-limited lane's ext4) some kernels refuse it: then read and write. */
    int plain = 0;
    for (off_t left = st->st_size; left > 0;) {
        static __thread char buf[1 << 16];
        ssize_t n = plain ? read(in, buf, sizeof buf) : copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && !plain && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL)) {
            plain = 1;
            continue;
        }
        if (n < 0 || (plain && n > 0 && util_write_all(out, buf, (size_t)n) < 0))
            return util_fail_errno(c->err, "cannot copy the lane's %s", path);
        if (n == 0)
            break; /* the file shrank: the lane is not attached, so only a corrupt one does */
        left -= n;
    }
    c->size += (uint64_t)st->st_size;
    return set_meta(out, st, path, c->err);
}

static int apply_dir(struct commit *c, int from, int to, const char *path);

static int apply_subdir(struct commit *c, int from, int to, const char *name, const struct stat *st, const char *path)
{
    struct stat cur;
    int exists = fstatat(to, name, &cur, AT_SYMLINK_NOFOLLOW) == 0;
    _cleanup_close_ int sf = openat(from, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sf < 0)
        return util_fail_errno(c->err, "cannot open the lane's %s", path);
    char opaque[2] = "";
    ssize_t o = fgetxattr(sf, "trusted.overlay.opaque", opaque, sizeof opaque);
    /* A directory over a non-directory, or an opaque one, hides all of
     * the base's entry; otherwise the two merge. */
    if (exists && (!S_ISDIR(cur.st_mode) || (o == 1 && opaque[0] == 'y'))) {
        if (remove_at(to, name, c->err) < 0)
            return -1;
        exists = 0;
    }
    if (!exists && mkdirat(to, name, 0700) < 0)
        return util_fail_errno(c->err, "cannot create %s", path);
    _cleanup_close_ int tf = openat(to, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (tf < 0)
        return util_fail_errno(c->err, "cannot open %s", path);
    if (apply_dir(c, sf, tf, path) < 0)
        return -1;
    return set_meta(tf, st, path, c->err);
}

/* Overlay features that would make the upper dir mean something else than
 * its plain tree (a renamed directory's redirect, a metadata-only copy-up)
 * are not mounted by cell; a lane that has them is refused, not guessed at. */
static int check_features(struct commit *c, int from, const char *name, const char *path)
{
    char v[8];
    static const char *const refused[] = { "trusted.overlay.redirect", "trusted.overlay.metacopy", NULL };
    _cleanup_close_ int fd = openat(from, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(c->err, "cannot open the lane's %s", path);
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    for (const char *const *x = refused; *x; x++)
        if (lgetxattr(proc, *x, v, sizeof v) >= 0 || errno == ERANGE)
            return util_fail(c->err, ENOTSUP, "lane '%s': %s has the overlay attribute %s, which cell does not "
                             "use; cannot flatten it", c->lane, path, *x);
    return 0;
}

static int apply_entry(struct commit *c, int from, int to, const char *name, const char *path)
{
    struct stat st;
    if (fstatat(from, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return util_fail_errno(c->err, "cannot stat the lane's %s", path);
    if (check_features(c, from, name, path) < 0)
        return -1;
    if (S_ISDIR(st.st_mode))
        return apply_subdir(c, from, to, name, &st, path);
    if (remove_at(to, name, c->err) < 0)
        return -1;
    if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0))
        return 0; /* a whiteout: the base's entry is gone, and so is the name */
    if (S_ISREG(st.st_mode))
        return copy_file(c, from, to, name, &st, path);
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlinkat(from, name, target, sizeof target - 1);
        if (n < 0)
            return util_fail_errno(c->err, "cannot read the lane's link %s", path);
        target[n] = '\0';
        struct timespec times[2] = { st.st_atim, st.st_mtim };
        if (symlinkat(target, to, name) < 0 || fchownat(to, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0 ||
            utimensat(to, name, times, AT_SYMLINK_NOFOLLOW) < 0)
            return util_fail_errno(c->err, "cannot create link %s", path);
        return 0;
    }
    /* FIFOs and sockets carry no data; a cell cannot make devices (only
     * overlayfs's whiteouts, handled above).  Neither goes into an image. */
    return 0;
}

static int apply_dir(struct commit *c, int from, int to, const char *path)
{
    int dfd = fcntl(from, F_DUPFD_CLOEXEC, 0);
    DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        return util_fail_errno(c->err, "cannot list the lane's %s", path[0] ? path : "/");
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        char sub[PATH_MAX];
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        rc = util_path(sub, sizeof sub, c->err, "%s/%s", path, e->d_name) < 0 ? -1 : 0;
        if (rc == 0)
            rc = apply_entry(c, from, to, e->d_name, sub);
    }
    closedir(d);
    return rc;
}

/* ---- image.json (image_meta.h): the base's config kept as it is --------- */
static int write_meta(cell_ctx *ctx, const char *dir, const char *base, const char *name, const char *tenant,
                      const char *digest, uint64_t size, cell_error *err)
{
    struct image_meta bm = { 0 }, m = { 0 };
    cell_error me = { 0 };
    if (runtime_image_meta_read(ctx, base, &bm, &me) < 0) {
        if (me.code != ENOENT)
            return err ? (*err = me, -1) : -1;
        memset(&bm, 0, sizeof bm); /* a builtin base has no image.json, and no config */
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(m.name, sizeof m.name, "%s", name);
    snprintf(m.digest, sizeof m.digest, "%s", digest);
    snprintf(m.source, sizeof m.source, "commit");
    snprintf(m.tenant, sizeof m.tenant, "%s", tenant ? tenant : "");
    m.created = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    m.size = size;
    m.config = bm.config; /* borrowed: freed with bm */
    int rc = runtime_image_meta_write_dir(dir, &m, err);
    runtime_image_meta_free(&bm);
    return rc;
}

static int build(cell_ctx *ctx, struct commit *c, const char *lane_dir, const char *base, const char *name,
                 const char *tenant, const char *tmp)
{
    cell_error *err = c->err;
    char base_root[PATH_MAX], root[PATH_MAX], base_digest[72], digest[72], ready[PATH_MAX];
    if (runtime_image_rootfs(ctx, base, base_root, sizeof base_root, err) < 0 ||
        runtime_image_digest(ctx, base, base_digest, err) < 0)
        return -1;
    if (util_path(root, sizeof root, err, "%s/rootfs", tmp) < 0 || util_mkdir_p(root, 0700, err) < 0)
        return -1;
    _cleanup_close_ int from = open(base_root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    _cleanup_close_ int to = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat rst;
    if (from < 0 || to < 0 || fstat(from, &rst) < 0)
        return util_fail_errno(err, "cannot open %s", from < 0 ? base_root : root);
    if (link_tree(c, from, to, "") < 0 || set_meta(to, &rst, "/", err) < 0)
        return -1;
    int mnt = -1, upper = -1;
    if (runtime_lane_open_upper(lane_dir, 1, &mnt, &upper, err) < 0)
        return -1;
    /* The new image's digest: its base's and the lane's layer, hashed as a
     * tree (digest.c), so the same lane on the same base gives the same one. */
    int rc = runtime_tree_digest(upper, base_digest, digest, err);
    if (rc == 0)
        rc = apply_dir(c, upper, to, "");
    close(upper);
    if (mnt >= 0)
        close(mnt);
    if (rc < 0)
        return -1;
    if (write_meta(ctx, tmp, base, name, tenant, digest, c->size, err) < 0 ||
        util_path(ready, sizeof ready, err, "%s/ready", tmp) < 0 || util_write_file(ready, "commit", 6, 0644, 1, err) < 0)
        return -1;
    if (syncfs(to) < 0)
        return util_fail_errno(err, "cannot flush the new image");
    return 0;
}

int runtime_image_commit_owned(cell_ctx *ctx, const char *lane, const char *name, const char *tenant,
                               cell_error *err)
{
    if (runtime_image_meta_check_name(name, err) < 0)
        return -1;
    char dir[PATH_MAX], image[64], lane_dir[PATH_MAX], tmp[PATH_MAX], suffix[17];
    if (util_path(dir, sizeof dir, err, "%s/images/%s", ctx->state_dir, name) < 0)
        return -1;
    if (access(dir, F_OK) == 0)
        return util_fail(err, EEXIST, "image '%s' already exists; images are read-only once written", name);
    /* The cells' lock, taken exclusively: no cell can attach while the
     * lane is read, and an attached lane is refused. */
    _cleanup_close_ int lock = -1;
    char who[80];
    snprintf(who, sizeof who, "commit %s", name);
    if (runtime_lane_acquire(ctx, lane, who, image, sizeof image, lane_dir, sizeof lane_dir, &lock, err) < 0)
        return -1;
    if (strcmp(image, "host") == 0)
        return util_fail(err, EINVAL, "lane '%s' is on image 'host', whose /usr is the host's own, bound in at "
                         "boot: a snapshot of it would have no /usr; commit a lane on a self-contained image "
                         "(debian-bookworm or an imported one)", lane);
    if (util_random_hex(suffix, 8) < 0)
        return util_fail_errno(err, "getrandom");
    if (util_path(tmp, sizeof tmp, err, "%s/images/.%s.tmp-%s", ctx->state_dir, name, suffix) < 0)
        return -1;
    if (mkdir(tmp, 0700) < 0)
        return util_fail_errno(err, "cannot create %s", tmp);
    struct commit c = { .lane = lane, .err = err };
    if (build(ctx, &c, lane_dir, image, name, tenant, tmp) < 0) {
        util_rm_rf(tmp, NULL);
        return -1;
    }
    /* rename() over an existing non-empty directory fails: the name is
     * taken only once, by a complete image. */
    if (rename(tmp, dir) < 0) {
        int saved = errno;
        util_rm_rf(tmp, NULL);
        errno = saved;
        return saved == EEXIST || saved == ENOTEMPTY
                   ? util_fail(err, EEXIST, "image '%s' already exists; images are read-only once written", name)
                   : util_fail_errno(err, "cannot install image %s", dir);
    }
    return 0;
}

int cell_image_commit(cell_ctx *ctx, const char *lane, const char *name, cell_error *err)
{
    return runtime_image_commit_owned(ctx, lane, name, NULL, err);
}
