/* fileops.c: file operations on behalf of the owner, executed inside the
 * cell so that every path resolves in the cell's own root and credentials. */
#include "init/init.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* RESOLVE_IN_ROOT keeps ".." and absolute symlinks inside "/" even if a
 * future init ran with a different root; RESOLVE_NO_MAGICLINKS refuses
 * /proc/PID/fd and /proc/PID/root style jumps, which could otherwise reach
 * descriptors init holds. */
/* A request may carry one descriptor: a directory inside the cell (opened
 * by an earlier CTL_OPEN).  Paths then resolve strictly beneath it, and a
 * ".." or symlink that would leave it fails with EXDEV: this is what keeps
 * a tar upload inside its target directory. */
static int base_fd = AT_FDCWD;

static int resolve(const char *path, uint64_t flags, uint64_t mode, uint64_t extra_resolve)
{
    uint64_t scope = base_fd == AT_FDCWD ? RESOLVE_IN_ROOT : RESOLVE_BENEATH;
    /* openat2 refuses O_NOCTTY next to O_PATH (it validates strictly). */
    uint64_t extra = (flags & O_PATH) ? O_CLOEXEC : O_CLOEXEC | O_NOCTTY;
    struct open_how how = { .flags = flags | extra, .mode = mode,
                            .resolve = scope | RESOLVE_NO_MAGICLINKS | extra_resolve };
    if (base_fd != AT_FDCWD && (path[0] == '/' || path[0] == '\0'))
        path = path[0] ? path + 1 : ".";
    if (!*path)
        path = ".";
    int fd;
    do
        fd = (int)syscall(SYS_openat2, base_fd, path, &how, sizeof how);
    while (fd < 0 && (errno == EAGAIN || errno == EINTR));
    return fd;
}

/* Split `path` into an opened parent directory and its last component.
 * Rejects empty names, "." and ".." as the last component. */
static int open_parent(const char *path, char *name, size_t name_size)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) {
        errno = len ? ENAMETOOLONG : EINVAL;
        return -1;
    }
    memcpy(buf, path, len + 1);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = '\0';
    char *slash = strrchr(buf, '/');
    const char *last = slash ? slash + 1 : buf;
    if (!*last || strcmp(last, ".") == 0 || strcmp(last, "..") == 0 || strlen(last) >= name_size) {
        errno = EINVAL;
        return -1;
    }
    snprintf(name, name_size, "%s", last);
    if (!slash)
        return resolve(base_fd == AT_FDCWD ? "/" : ".", O_PATH | O_DIRECTORY, 0, 0);
    if (slash == buf)
        slash[1] = '\0';
    else
        *slash = '\0';
    return resolve(buf, O_PATH | O_DIRECTORY, 0, 0);
}

static int do_open(ctl_msg *m, int *out_fd)
{
    const int allowed = O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_DIRECTORY | O_NOFOLLOW | O_PATH;
    int flags = (int)m->u[0];
    if (flags & ~allowed) {
        errno = EINVAL;
        return -1;
    }
    /* O_NONBLOCK so a FIFO planted by the cell cannot stall init; only
     * regular files and directories are handed out. */
    int fd = resolve(m->str[0], (uint64_t)(flags & O_PATH ? flags : flags | O_NONBLOCK), m->u[1] & 07777, 0);
    if (fd < 0)
        return -1;
    if (flags & O_PATH) {
        *out_fd = fd; /* a handle for fstat only: cannot read, write or block */
        return 0;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *out_fd = fd;
    return 0;
}

/* mkdir -p: each prefix is resolved afresh with resolve(), so symlinks along
 * the way are followed exactly as far as the request's scope allows. */
static int mkdir_parents(const char *path, mode_t mode)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        if (buf[i - 1] == '/')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        char name[256];
        int parent = open_parent(buf, name, sizeof name);
        int rc = parent < 0 ? -1 : mkdirat(parent, name, mode);
        int code = errno;
        if (parent >= 0)
            close(parent);
        buf[i] = saved;
        if (rc < 0 && code != EEXIST) {
            errno = code;
            return -1;
        }
    }
    /* The last component must now be a directory (not a file of that name). */
    int fd = resolve(path, O_PATH | O_DIRECTORY, 0, 0);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

static int remove_tree(int parent, const char *name)
{
    if (unlinkat(parent, name, 0) == 0)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -1;
    int dfd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (remove_tree(dirfd(d), e->d_name) < 0) {
            rc = -1;
            break;
        }
    }
    int saved = errno;
    closedir(d);
    errno = saved;
    if (rc == 0 && unlinkat(parent, name, AT_REMOVEDIR) < 0)
        rc = -1;
    return rc;
}

static int do_delete(ctl_msg *m)
{
    char name[256];
    int parent = open_parent(m->str[0], name, sizeof name);
    if (parent < 0)
        return -1;
    int rc;
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        rc = -1;
    else if (!S_ISDIR(st.st_mode))
        rc = unlinkat(parent, name, 0);
    else if (m->u[0])
        rc = remove_tree(parent, name);
    else
        rc = unlinkat(parent, name, AT_REMOVEDIR);
    int saved = errno;
    close(parent);
    errno = saved;
    return rc;
}

static int do_two_paths(ctl_msg *m)
{
    char from_name[256], to_name[256];
    int from = -1, to = -1, rc = -1;
    if (m->type != CTL_SYMLINK && (from = open_parent(m->str[0], from_name, sizeof from_name)) < 0)
        goto out;
    if ((to = open_parent(m->str[1], to_name, sizeof to_name)) < 0)
        goto out;
    if (m->type == CTL_MOVE)
        rc = renameat2(from, from_name, to, to_name, m->u[0] ? 0 : RENAME_NOREPLACE);
    else if (m->type == CTL_LINK)
        rc = linkat(from, from_name, to, to_name, 0);
    else
        rc = symlinkat(m->str[0], to, to_name);
out:;
    int saved = errno;
    if (from >= 0)
        close(from);
    if (to >= 0)
        close(to);
    errno = saved;
    return rc;
}

static const char *op_name(uint32_t type)
{
    switch (type) {
    case CTL_OPEN: return "open";
    case CTL_MKDIR: return "create directory";
    case CTL_MOVE: return "move";
    case CTL_DELETE: return "delete";
    case CTL_SYMLINK: return "create symlink";
    default: return "link";
    }
}

void init_fileop(int ctl, ctl_msg *m)
{
    uint32_t want = (m->type == CTL_MOVE || m->type == CTL_SYMLINK || m->type == CTL_LINK) ? 2 : 1;
    if (m->nstr != want || !*m->str[0] || (want == 2 && !*m->str[1])) {
        init_reply_err(ctl, m->seq, EINVAL, "malformed %s request: empty path", op_name(m->type));
        return;
    }
    if (m->nfds > 1) {
        init_reply_err(ctl, m->seq, EINVAL, "malformed %s request: too many descriptors", op_name(m->type));
        return;
    }
    base_fd = m->nfds == 1 ? m->fds[0] : AT_FDCWD;
    if (base_fd != AT_FDCWD) {
        struct stat st;
        if (fstat(base_fd, &st) < 0 || !S_ISDIR(st.st_mode)) {
            base_fd = AT_FDCWD;
            init_reply_err(ctl, m->seq, ENOTDIR, "base of a %s request is not a directory", op_name(m->type));
            return;
        }
    }
    int fd = -1, rc;
    switch (m->type) {
    case CTL_OPEN:
        rc = do_open(m, &fd);
        break;
    case CTL_MKDIR:
        if (m->u[1]) {
            rc = mkdir_parents(m->str[0], m->u[0] & 07777);
        } else {
            char name[256];
            int parent = open_parent(m->str[0], name, sizeof name);
            rc = parent < 0 ? -1 : mkdirat(parent, name, m->u[0] & 07777);
            int saved = errno;
            if (parent >= 0)
                close(parent);
            errno = saved;
        }
        break;
    case CTL_DELETE:
        rc = do_delete(m);
        break;
    default:
        rc = do_two_paths(m);
    }
    base_fd = AT_FDCWD;
    if (rc < 0) {
        int code = errno;
        init_reply_err(ctl, m->seq, code, "cannot %s %s: %s", op_name(m->type),
                       m->str[want == 2 ? 1 : 0], strerror(code));
        return;
    }
    init_reply_ok(ctl, m->seq, 0, fd);
    if (fd >= 0)
        close(fd);
}
