/* vfs_dir.c: a read-only vfs provider (cell_vfs_ops) serving a host
 * directory without copying it: the daemon's lane mounts, and the bench.
 *
 * The directory may be written by someone else (a lane's owner) while it
 * is served: every file is opened below the directory's fd with openat2
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, so a
 * symlink or ".." swapped in can never lead outside it; anything that is not
 * a regular file or directory (symlinks, devices, overlayfs whiteouts,
 * sockets) is absent from the view.  Inode numbers are this provider's: each
 * path looked up gets one (a hash table from path to number; at most
 * VFSDIR_MAX_NODES, then ENOSPC). */
#include "runtime/vfs_dir.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define VFSDIR_MAX_NODES (1u << 20)

struct vfsdir {
    int              root_fd;
    pthread_mutex_t  lock;
    char           **path;          /* path[ino]: relative to the root ("" for it); [0] unused */
    size_t           n, cap;
    uint32_t        *slot;          /* open addressing: path -> ino, 0 = empty */
    size_t           nslot;         /* a power of two, at least twice n */
};

static size_t vfsdir_hash(const char *p)
{
    uint64_t h = 1469598103934665603ull;    /* FNV-1a */
    for (; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return (size_t)h;
}

/* The slot where path is, or the empty one where it would go. */
static size_t vfsdir_slot(const struct vfsdir *d, const char *path)
{
    size_t i = vfsdir_hash(path) & (d->nslot - 1);
    while (d->slot[i] && strcmp(d->path[d->slot[i]], path) != 0)
        i = (i + 1) & (d->nslot - 1);
    return i;
}

/* Room for one more path in the hash (rehashed at half full). */
static int vfsdir_grow_slots(struct vfsdir *d)
{
    if ((d->n + 1) * 2 <= d->nslot)
        return 0;
    size_t old_n = d->nslot;
    uint32_t *old = d->slot;
    d->nslot = old_n ? old_n * 2 : 64;
    if (!(d->slot = calloc(d->nslot, sizeof *d->slot))) {
        d->slot = old;
        d->nslot = old_n;
        return -1;
    }
    for (size_t i = 1; i < d->n; i++)
        d->slot[vfsdir_slot(d, d->path[i])] = (uint32_t)i;
    free(old);
    return 0;
}

static int vfsdir_open(const struct vfsdir *d, const char *rel, int flags)
{
    struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW),
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
    int fd = (int)syscall(SYS_openat2, d->root_fd, *rel ? rel : ".", &how, sizeof how);
    return fd < 0 ? -errno : fd;
}

/* 0 with *a filled, or a negative errno; other types are ENOENT. */
static int vfsdir_stat_fd(int fd, uint64_t ino, cell_vfs_attr *a)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return -ENOENT;
    *a = (cell_vfs_attr){ .ino = ino, .mode = st.st_mode & (S_IFMT | 0777), .size = (uint64_t)st.st_size,
                          .mtime = st.st_mtim.tv_sec };
    return 0;
}

/* The path of ino (a copy), or NULL. */
static char *vfsdir_path(struct vfsdir *d, uint64_t ino)
{
    pthread_mutex_lock(&d->lock);
    char *p = ino > 0 && ino < d->n && d->path[ino] ? strdup(d->path[ino]) : NULL;
    pthread_mutex_unlock(&d->lock);
    return p;
}

/* The inode number of path (added when new), or 0 when the table is full. */
static uint64_t vfsdir_ino(struct vfsdir *d, const char *path)
{
    uint64_t ino = 0;
    pthread_mutex_lock(&d->lock);
    ino = d->slot[vfsdir_slot(d, path)];
    if (!ino && d->n < VFSDIR_MAX_NODES && vfsdir_grow_slots(d) == 0) {
        if (d->n == d->cap) {
            size_t cap = d->cap * 2;
            char **p = realloc(d->path, cap * sizeof *p);
            if (p) {
                d->path = p;
                d->cap = cap;
            }
        }
        if (d->n < d->cap && (d->path[d->n] = strdup(path))) {
            ino = d->n++;
            d->slot[vfsdir_slot(d, path)] = (uint32_t)ino;
        }
    }
    pthread_mutex_unlock(&d->lock);
    return ino;
}

static int vd_lookup(void *user, uint64_t parent, const char *name, cell_vfs_attr *out)
{
    struct vfsdir *d = user;
    char *dir = vfsdir_path(d, parent);
    if (!dir)
        return -ENOENT;
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s%s%s", dir, *dir ? "/" : "", name);
    free(dir);
    if (n < 0 || (size_t)n >= sizeof path)
        return -ENAMETOOLONG;
    int fd = vfsdir_open(d, path, O_PATH);
    if (fd < 0)
        return fd == -ELOOP || fd == -EXDEV ? -ENOENT : fd;
    int r = vfsdir_stat_fd(fd, 0, out);
    close(fd);
    if (r < 0)
        return r;
    if (!(out->ino = vfsdir_ino(d, path)))
        return -ENOSPC;
    return 0;
}

static int vd_getattr(void *user, uint64_t ino, cell_vfs_attr *out)
{
    struct vfsdir *d = user;
    char *path = vfsdir_path(d, ino);
    if (!path)
        return -ENOENT;
    int fd = vfsdir_open(d, path, O_PATH);
    free(path);
    if (fd < 0)
        return fd == -ELOOP || fd == -EXDEV ? -ENOENT : fd;
    int r = vfsdir_stat_fd(fd, ino, out);
    close(fd);
    return r;
}

static int vd_readdir(void *user, uint64_t ino, cell_vfs_fill_fn fill, void *sink)
{
    struct vfsdir *d = user;
    char *path = vfsdir_path(d, ino);
    if (!path)
        return -ENOENT;
    int fd = vfsdir_open(d, path, O_RDONLY | O_DIRECTORY);
    free(path);
    if (fd < 0)
        return fd == -ELOOP || fd == -EXDEV ? -ENOENT : fd;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int e = errno;
        close(fd);
        return -e;
    }
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        unsigned char t = e->d_type;
        if (t == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                continue;
            t = S_ISREG(st.st_mode) ? DT_REG : S_ISDIR(st.st_mode) ? DT_DIR : DT_UNKNOWN;
        }
        if (t != DT_REG && t != DT_DIR)
            continue;   /* links, devices, whiteouts: not in the view */
        /* The host's inode number: informational (the cell's stat looks
         * each name up and gets this provider's). */
        if (fill(sink, e->d_name, e->d_ino ? e->d_ino : 1, t == DT_DIR ? S_IFDIR : S_IFREG) < 0)
            break;
    }
    closedir(dir);
    return 0;
}

static int vd_open(void *user, uint64_t ino, int flags, uint64_t *fh)
{
    struct vfsdir *d = user;
    if ((flags & O_ACCMODE) != O_RDONLY)
        return -EROFS;
    char *path = vfsdir_path(d, ino);
    if (!path)
        return -ENOENT;
    int fd = vfsdir_open(d, path, O_RDONLY | O_NOCTTY | O_NONBLOCK);
    free(path);
    if (fd < 0)
        return fd == -ELOOP || fd == -EXDEV ? -ENOENT : fd;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -EISDIR;
    }
    *fh = (uint64_t)fd;
    return 0;
}

static ssize_t vd_read(void *user, uint64_t ino, uint64_t fh, char *buf, size_t size, uint64_t off)
{
    (void)user;
    (void)ino;
    ssize_t n = pread((int)fh, buf, size, (off_t)off);
    return n < 0 ? -errno : n;
}

static int vd_release(void *user, uint64_t ino, uint64_t fh)
{
    (void)user;
    (void)ino;
    close((int)fh);
    return 0;
}

const cell_vfs_ops runtime_vfs_dir_ops = {
    .lookup = vd_lookup, .getattr = vd_getattr, .readdir = vd_readdir, .open = vd_open, .read = vd_read,
    .release = vd_release,
};

static struct vfsdir *vfsdir_alloc(cell_error *err)
{
    struct vfsdir *d = calloc(1, sizeof *d);
    if (!d || !(d->path = calloc(16, sizeof *d->path)) || !(d->path[1] = strdup(""))) {
        if (d)
            free(d->path);
        free(d);
        util_fail(err, ENOMEM, "out of memory");
        return NULL;
    }
    d->cap = 16;
    d->n = 2;       /* 1: CELL_VFS_ROOT */
    d->root_fd = -1;
    pthread_mutex_init(&d->lock, NULL);
    if (vfsdir_grow_slots(d) < 0) {
        runtime_vfs_dir_free(d);
        util_fail(err, ENOMEM, "out of memory");
        return NULL;
    }
    d->slot[vfsdir_slot(d, "")] = 1;
    return d;
}

int runtime_vfs_dir_new_fd(int dirfd, void **out, cell_error *err)
{
    struct vfsdir *d = vfsdir_alloc(err);
    if (!d)
        return -1;
    if ((d->root_fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3)) < 0) {
        util_fail_errno(err, "cannot duplicate the directory to serve");
        runtime_vfs_dir_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

int runtime_vfs_dir_new(const char *dir, void **out, cell_error *err)
{
    struct vfsdir *d = vfsdir_alloc(err);
    if (!d)
        return -1;
    struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                            .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
    d->root_fd = (int)syscall(SYS_openat2, AT_FDCWD, dir, &how, sizeof how);
    if (d->root_fd < 0) {
        util_fail_errno(err, "cannot open %s to serve it (a directory, no symbolic link in its path)", dir);
        runtime_vfs_dir_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

void runtime_vfs_dir_free(void *user)
{
    struct vfsdir *d = user;
    if (!d)
        return;
    if (d->root_fd >= 0)
        close(d->root_fd);
    for (size_t i = 0; i < d->n; i++)
        free(d->path[i]);
    free(d->path);
    free(d->slot);
    pthread_mutex_destroy(&d->lock);
    free(d);
}
