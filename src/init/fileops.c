/* fileops.c: file operations on behalf of the owner, executed inside the
 * cell so that every path resolves in the cell's own root and credentials.
 * Metadata requests (stat, mkdir, move, delete, links) run in init itself;
 * reads, writes and listings run in a transfer child (xfer_child), and the
 * owner only ever holds pipes: many kernel files (/proc/PID/autogroup,
 * oom_score_adj, /proc/sys, kallsyms) check the credentials of whoever
 * calls read(2) or write(2), so the bytes must move in the cell too. */
#include "init/init.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* RESOLVE_IN_ROOT keeps ".." and absolute symlinks inside "/" even if a
 * future init ran with a different root; RESOLVE_NO_MAGICLINKS refuses
 * /proc/PID/fd and /proc/PID/root style jumps, which could otherwise reach
 * descriptors init holds. */
/* A request may name a base directory (CTL_F_BASE).  Its paths then
 * resolve strictly beneath it, and a ".." or symlink that would leave it
 * fails with EXDEV: this is what keeps a tar upload inside its target
 * directory. */
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

/* Modes init creates with: in a cell with the nosuid filter (a read-write
 * host mount), S_ISUID and S_ISGID are dropped, as the filter refuses them
 * to every process the cell runs; init and the transfer child create files
 * before (or without) that filter. */
static mode_t create_mode(uint32_t mode)
{
    mode_t m = (mode_t)(mode & 07777);
    return init_nosuid() ? m & ~(mode_t)(S_ISUID | S_ISGID) : m;
}

/* The base directory of a request with CTL_F_BASE (its last string),
 * resolved in the cell's root; the paths before it then resolve beneath. */
static int set_base(const ctl_msg *m)
{
    base_fd = AT_FDCWD;
    if (!(m->u[CTL_U_BASE] & CTL_F_BASE))
        return 0;
    int fd = resolve(m->str[m->nstr - 1], O_PATH | O_DIRECTORY, 0, 0);
    if (fd < 0)
        return -1;
    base_fd = fd;
    return 0;
}

static void clear_base(void)
{
    if (base_fd != AT_FDCWD)
        close(base_fd);
    base_fd = AT_FDCWD;
}

/* Open the file of a READ, WRITE or LIST request: only regular files (a
 * directory for LIST), opened O_NONBLOCK so that a FIFO planted by the cell
 * cannot stall the open, then made blocking for the copy. */
static int xfer_open(const ctl_msg *m, int *out, struct stat *st)
{
    const int write_flags = O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_NOFOLLOW;
    int flags = m->type == CTL_READ ? O_RDONLY : m->type == CTL_LIST ? O_RDONLY | O_DIRECTORY : (int)m->u[0];
    if (m->type == CTL_WRITE && ((flags & ~write_flags) || (flags & O_ACCMODE) != O_WRONLY)) {
        errno = EINVAL;
        return -1;
    }
    /* openat2 refuses a mode without O_CREAT. */
    mode_t mode = (flags & O_CREAT) ? create_mode(m->u[1]) : 0;
    uint64_t no_links = m->type == CTL_READ && (m->u[CTL_U_BASE] & CTL_F_NOFOLLOW) ? RESOLVE_NO_SYMLINKS : 0;
    int fd = resolve(m->str[0], (uint64_t)(flags | O_NONBLOCK), mode, no_links);
    if (fd < 0)
        return -1;
    int ok = fstat(fd, st) == 0;
    if (ok && m->type == CTL_READ && S_ISDIR(st->st_mode)) {
        close(fd);
        errno = EISDIR;
        return -1;
    }
    if (!ok || !(S_ISREG(st->st_mode) || (m->type == CTL_LIST && S_ISDIR(st->st_mode)))) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        close(fd);
        return -1;
    }
    *out = fd;
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
    case CTL_READ: return "read";
    case CTL_WRITE: return "write";
    case CTL_LIST: return "list";
    case CTL_STAT: return "stat";
    case CTL_MKDIR: return "create directory";
    case CTL_MOVE: return "move";
    case CTL_DELETE: return "delete";
    case CTL_SYMLINK: return "create symlink";
    default: return "link";
    }
}

static int do_mkdir(ctl_msg *m)
{
    if (m->u[1])
        return mkdir_parents(m->str[0], create_mode(m->u[0]));
    char name[256];
    int parent = open_parent(m->str[0], name, sizeof name);
    int rc = parent < 0 ? -1 : mkdirat(parent, name, create_mode(m->u[0]));
    int saved = errno;
    if (parent >= 0)
        close(parent);
    errno = saved;
    return rc;
}

/* Sizes and times as two u32 halves; ids as seen in the cell (unmapped
 * ones are the overflow id, 65534). */
static void stat_words(const struct stat *st, uint32_t u[CTL_NU])
{
    uint64_t size = (uint64_t)st->st_size, mtime = (uint64_t)st->st_mtim.tv_sec;
    u[0] = st->st_mode;
    u[1] = (uint32_t)size;
    u[2] = (uint32_t)(size >> 32);
    u[3] = (uint32_t)mtime;
    u[4] = (uint32_t)(mtime >> 32);
    u[5] = st->st_uid;
    u[6] = st->st_gid;
}

static int do_stat(ctl_msg *m, uint32_t u[CTL_NU])
{
    int fd = resolve(m->str[0], O_PATH, 0, 0);
    if (fd < 0)
        return -1;
    struct stat st;
    int rc = fstat(fd, &st);
    int saved = errno;
    close(fd);
    errno = saved;
    if (rc == 0)
        stat_words(&st, u);
    return rc;
}

/* The number of strings a request must carry, its base included. */
static uint32_t want_strings(const ctl_msg *m)
{
    uint32_t n = (m->type == CTL_MOVE || m->type == CTL_SYMLINK || m->type == CTL_LINK) ? 2 : 1;
    return n + ((m->u[CTL_U_BASE] & CTL_F_BASE) ? 1 : 0);
}

static int well_formed(int ctl, ctl_msg *m, int nfds)
{
    uint32_t want = want_strings(m);
    for (uint32_t i = 0; m->nstr == want && i < want; i++)
        if (!*m->str[i]) {
            init_reply_err(ctl, m->seq, EINVAL, "malformed %s request: empty path", op_name(m->type));
            return 0;
        }
    if (m->nstr != want || m->nfds != nfds) {
        init_reply_err(ctl, m->seq, EINVAL, "malformed %s request", op_name(m->type));
        return 0;
    }
    return 1;
}

void init_fileop(int ctl, ctl_msg *m)
{
    if (!well_formed(ctl, m, 0))
        return;
    uint32_t u[CTL_NU] = { 0 };
    int rc = set_base(m);
    if (rc == 0) {
        switch (m->type) {
        case CTL_STAT: rc = do_stat(m, u); break;
        case CTL_MKDIR: rc = do_mkdir(m); break;
        case CTL_DELETE: rc = do_delete(m); break;
        default: rc = do_two_paths(m);
        }
    }
    int code = errno;
    clear_base();
    if (rc < 0) {
        uint32_t two = m->type == CTL_MOVE || m->type == CTL_SYMLINK || m->type == CTL_LINK;
        init_reply_err(ctl, m->seq, code, "cannot %s %s: %s", op_name(m->type), m->str[two], strerror(code));
        return;
    }
    ctl_send(ctl, CTL_REPLY, m->seq, 0, u, NULL, 0, NULL, 0);
}

/* ---- the transfer child ------------------------------------------------------ */

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Copy until EOF: splice(2) between the file and the pipe, read/write where
 * a file cannot splice (or is O_APPEND). */
static int copy_fd(int in, int out, uint64_t *done)
{
    static char buf[128 * 1024];
    int use_splice = 1;
    for (;;) {
        ssize_t n;
        if (use_splice) {
            n = splice(in, NULL, out, NULL, 1 << 20, SPLICE_F_MOVE | SPLICE_F_MORE);
            if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
                use_splice = 0;
                continue;
            }
        } else {
            n = read(in, buf, sizeof buf);
            if (n > 0 && write_all(out, buf, (size_t)n) < 0)
                return -1;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return (int)n;
        *done += (uint64_t)n;
    }
}

/* One ctl_dirent per entry of directory `dir`, to `out`. */
static int list_dir(int dir, int out, uint64_t *count)
{
    DIR *d = fdopendir(dir);
    if (!d)
        return -1;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        struct stat st;
        /* A single name relative to the opened directory: nothing to follow. */
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* removed meanwhile */
        struct ctl_dirent r = { .mode = st.st_mode, .uid = st.st_uid, .gid = st.st_gid,
                                .size = (uint64_t)st.st_size, .mtime = st.st_mtim.tv_sec };
        snprintf(r.name, sizeof r.name, "%s", e->d_name);
        rc = write_all(out, &r, sizeof r);
        *count += rc == 0;
    }
    closedir(d);
    return rc;
}

/* fds[i] becomes descriptor i; every other descriptor (the control socket
 * above all) is closed. */
static int keep_only(const int *fds, int n)
{
    int high[3];
    for (int i = 0; i < n; i++)
        if ((high[i] = fcntl(fds[i], F_DUPFD, 64)) < 0)
            return -1;
    for (int i = 0; i < n; i++)
        if (dup2(high[i], i) < 0)
            return -1;
    return (int)syscall(SYS_close_range, (unsigned)n, ~0U, 0);
}

/* The child of init_transfer: it opens the path (so /proc/self is itself),
 * replies on the control socket, keeps nothing but the file and the two
 * pipes, takes the filter every cell process gets, copies and reports.  It
 * inherits everything else that confines the cell's processes from init:
 * namespaces, uid 0 of the cell, capabilities, no_new_privs, the cell's
 * seccomp filter and cgroup, and init's non-dumpable flag, so processes of
 * the cell cannot ptrace it while it still holds the control socket. */
__attribute__((noreturn))
static void xfer_child(int ctl, ctl_msg *m)
{
    prctl(PR_SET_NAME, "cell-fs", 0, 0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_IGN); /* a reader that went away is EPIPE, reported */
    int file = -1;
    struct stat st;
    if (set_base(m) < 0 || xfer_open(m, &file, &st) < 0) {
        int code = errno;
        init_reply_err(ctl, m->seq, code, "cannot %s %s: %s", op_name(m->type), m->str[0], strerror(code));
        _exit(0);
    }
    uint32_t u[CTL_NU] = { 0 };
    stat_words(&st, u);
    if (ctl_send(ctl, CTL_REPLY, m->seq, 0, u, NULL, 0, NULL, 0) < 0)
        _exit(1);
    const int keep[3] = { file, m->fds[0], m->fds[1] };
    if (keep_only(keep, 3) < 0)
        _exit(1);
    uint64_t done = 0;
    int rc = init_apply_child_filter();
    if (rc == 0)
        rc = m->type == CTL_READ ? copy_fd(0, 1, &done) : m->type == CTL_WRITE ? copy_fd(1, 0, &done)
                                                                               : list_dir(0, 1, &done);
    /* The file is closed before the status goes out: a file just written
     * that the owner executes next (an agent's launcher) must not still be
     * open for writing in this process (ETXTBSY), and close() may report a
     * late write error. */
    if (close(0) < 0 && rc == 0 && m->type == CTL_WRITE)
        rc = -1;
    struct ctl_xfer_status s = { .err = rc < 0 ? errno : 0, .magic = CTL_XFER_MAGIC, .bytes = done };
    if (rc < 0 && !s.err)
        s.err = EIO;
    close(1); /* EOF on the data pipe first: the owner reads the status after it */
    _exit(write_all(2, &s, sizeof s) < 0);
}

void init_transfer(int ctl, ctl_msg *m)
{
    if (!well_formed(ctl, m, 2))
        return;
    /* fork, not vfork: the child runs as long as the copy does.  It is not
     * tracked, so init_reap() reaps it without telling the owner. */
    pid_t pid = fork();
    if (pid == 0)
        xfer_child(ctl, m);
    if (pid < 0)
        init_reply_err(ctl, m->seq, errno, "cannot start a transfer process: %s", strerror(errno));
}
