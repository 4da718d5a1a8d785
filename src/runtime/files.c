/* files.c: libcell's file operations.  cell-init resolves every path inside
 * the cell; reads, writes and listings run in a transfer process that init
 * forks in the cell, and the owner only holds the pipes it copies through
 * (CTL_READ in proto.h): never a descriptor of a file of the cell, whose
 * read(2) or write(2) the kernel would check against the owner's host
 * credentials instead of the cell's. */
#include "runtime/cell_internal.h"
#include "runtime/untar.h"
#include "util/util.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* A listing larger than this is refused rather than held in the owner's
 * memory (about 280 bytes an entry: 72 MiB at most). */
#define LIST_MAX_ENTRIES (1u << 18)

/* One file request; `base` (or NULL) is the directory its paths resolve
 * beneath (CTL_F_BASE), sent as the last string. */
static int file_request(cell *c, uint32_t type, uint32_t *u, const char *a, const char *b, const char *base,
                        const int *fds, int nfds, ctl_msg *reply, cell_error *err)
{
    const char *strs[3];
    uint32_t n = 0;
    strs[n++] = a;
    if (b)
        strs[n++] = b;
    if (base) {
        strs[n++] = base;
        u[CTL_U_BASE] |= CTL_F_BASE;
    }
    return runtime_request(c, type, u, strs, n, fds, nfds, reply, err);
}

static int simple_request(cell *c, uint32_t type, uint32_t u0, uint32_t u1, const char *a, const char *b,
                          const char *base, cell_error *err)
{
    uint32_t u[CTL_NU] = { u0, u1 };
    ctl_msg reply;
    if (file_request(c, type, u, a, b, base, NULL, 0, &reply, err) < 0)
        return -1;
    ctl_msg_free(&reply);
    return 0;
}

/* Start a transfer process: the owner keeps the write end of the data pipe
 * if it writes the file, the read end otherwise, and the status pipe's
 * read end. */
static int xfer_start(cell *c, uint32_t type, uint32_t flags, mode_t mode, const char *path, const char *base,
                      int owner_writes, uint32_t opts, cell_xfer *x, cell_error *err)
{
    x->fd = x->status_fd = -1;
    if (!base && runtime_check_cell_path(path, "path", err) < 0)
        return -1;
    int data[2], status[2];
    if (pipe2(data, O_CLOEXEC) < 0)
        return util_fail_errno(err, "cannot create a pipe");
    if (pipe2(status, O_CLOEXEC) < 0) {
        close(data[0]);
        close(data[1]);
        return util_fail_errno(err, "cannot create a pipe");
    }
    /* 1 MiB instead of 64 KiB: fewer wakeups per byte; best effort. */
    (void)fcntl(data[0], F_SETPIPE_SZ, 1 << 20);
    _cleanup_close_ int their_data = owner_writes ? data[0] : data[1];
    _cleanup_close_ int their_status = status[1];
    _cleanup_close_ int mine = owner_writes ? data[1] : data[0];
    _cleanup_close_ int my_status = status[0];
    const int theirs[2] = { their_data, their_status };
    uint32_t u[CTL_NU] = { flags, mode };
    u[CTL_U_BASE] = opts;               /* CTL_F_NOFOLLOW; file_request adds CTL_F_BASE */
    ctl_msg reply;
    if (file_request(c, type, u, path, NULL, base, theirs, 2, &reply, err) < 0)
        return -1;
    x->mode = reply.u[0];
    x->size = reply.u[1] | (uint64_t)reply.u[2] << 32;
    ctl_msg_free(&reply);
    /* Non-blocking, so a transfer process that stops (SIGSTOP from inside
     * the cell) costs the caller at most the stall time (xfer_wait). */
    if (fcntl(mine, F_SETFL, O_NONBLOCK) < 0 || fcntl(my_status, F_SETFL, O_NONBLOCK) < 0)
        return util_fail_errno(err, "cannot set up the transfer's pipes");
    x->fd = util_steal_fd(&mine);
    x->status_fd = util_steal_fd(&my_status);
    x->stall_ms = 0;
    return 0;
}

/* Wait until fd is ready for `events`; ETIMEDOUT after the stall time. */
static int xfer_wait(const cell_xfer *x, int fd, short events)
{
    struct pollfd p = { .fd = fd, .events = events };
    int r;
    do
        r = poll(&p, 1, x->stall_ms > 0 ? x->stall_ms : CELL_XFER_STALL_MS);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        errno = ETIMEDOUT;
    return r > 0 ? 0 : -1;
}

/* Fill buf unless EOF comes first: the bytes read, or -1 with errno. */
static ssize_t xfer_read_full(const cell_xfer *x, int fd, void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, (char *)buf + done, len - done);
        if (n > 0)
            done += (size_t)n;
        else if (n == 0)
            break;
        else if (errno != EINTR && (errno != EAGAIN || xfer_wait(x, fd, POLLIN) < 0))
            return -1;
    }
    return (ssize_t)done;
}

/* A stalled transfer is left to itself: its pipes are closed (it gets EOF
 * or EPIPE if it ever runs again) and ending it later does not wait. */
static int xfer_abandon(cell_xfer *x, cell_error *err)
{
    if (x->fd >= 0)
        close(x->fd);
    if (x->status_fd >= 0)
        close(x->status_fd);
    x->fd = x->status_fd = -1;
    return util_fail(err, ETIMEDOUT, "the transfer process in the cell made no progress for %d ms",
                     x->stall_ms > 0 ? x->stall_ms : CELL_XFER_STALL_MS);
}

ssize_t cell_xfer_read(cell_xfer *x, void *buf, size_t len, cell_error *err)
{
    if (x->fd < 0)
        return util_fail(err, EBADF, "the transfer has ended");
    for (;;) {
        ssize_t n = read(x->fd, buf, len);
        if (n >= 0)
            return n;
        if (errno != EINTR && (errno != EAGAIN || xfer_wait(x, x->fd, POLLIN) < 0))
            return errno == ETIMEDOUT ? xfer_abandon(x, err)
                                      : util_fail_errno(err, "cannot read from the transfer process");
    }
}

int cell_file_read(cell *c, const char *path, cell_xfer *x, cell_error *err)
{
    return xfer_start(c, CTL_READ, 0, 0, path, NULL, 0, 0, x, err);
}

int cell_file_read_nofollow(cell *c, const char *path, cell_xfer *x, cell_error *err)
{
    return xfer_start(c, CTL_READ, 0, 0, path, NULL, 0, CTL_F_NOFOLLOW, x, err);
}

int cell_file_write(cell *c, const char *path, int flags, mode_t mode, cell_xfer *x, cell_error *err)
{
    return xfer_start(c, CTL_WRITE, (uint32_t)flags, mode, path, NULL, 1, 0, x, err);
}

int cell_xfer_end(cell_xfer *x, cell_error *err)
{
    if (x->fd >= 0)
        close(x->fd); /* EOF for a writer; EPIPE for a reader the caller left */
    x->fd = -1;
    if (x->status_fd < 0)
        return 0;     /* ended before */
    struct ctl_xfer_status s;
    ssize_t n = xfer_read_full(x, x->status_fd, &s, sizeof s);
    int code = errno;
    close(x->status_fd);
    x->status_fd = -1;
    if (n < 0 && code == ETIMEDOUT)
        return xfer_abandon(x, err);
    /* The status comes from inside the cell: checked like init's replies. */
    if (n != (ssize_t)sizeof s || s.magic != CTL_XFER_MAGIC)
        return util_fail(err, EPROTO, "the transfer process in the cell ended without a result");
    if (s.err != 0) {
        int theirs = s.err > 0 && s.err < 4096 ? s.err : EIO;
        return util_fail(err, theirs, "%s", strerror(theirs));
    }
    return 0;
}

/* All of data to the (non-blocking) pipe, waiting at most the stall time
 * for each bit of room. */
static int xfer_write_all(const cell_xfer *x, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = write(x->fd, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && errno != EINTR && (errno != EAGAIN || xfer_wait(x, x->fd, POLLOUT) < 0)) {
            return -1;
        }
    }
    return 0;
}

/* write(2) to a pipe whose reader may be gone, without SIGPIPE killing a
 * caller that does not ignore it: blocked in this thread, and the one the
 * write raised is consumed. */
static int pipe_write_all(const cell_xfer *x, const void *data, size_t len)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    int rc = xfer_write_all(x, data, len);
    int code = errno;
    if (rc < 0 && code == EPIPE && !sigismember(&old, SIGPIPE)) {
        struct timespec zero = { 0, 0 };
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = code;
    return rc;
}

int cell_xfer_write(cell_xfer *x, const void *data, size_t len, cell_error *err)
{
    if (x->fd < 0)
        return util_fail(err, EBADF, "the transfer has ended");
    if (pipe_write_all(x, data, len) == 0)
        return 0;
    int code = errno;
    if (code == ETIMEDOUT)
        return xfer_abandon(x, err);
    /* The transfer process stopped reading: its status says why. */
    if (code == EPIPE && cell_xfer_end(x, err) < 0)
        return -1;
    return util_fail(err, code, "cannot write to the transfer process: %s", strerror(code));
}

static void stat_from_words(const uint32_t *u, cell_stat *out)
{
    out->mode = u[0];
    out->size = u[1] | (uint64_t)u[2] << 32;
    out->mtime = (int64_t)(u[3] | (uint64_t)u[4] << 32);
    out->uid = u[5];
    out->gid = u[6];
}

int cell_file_stat(cell *c, const char *path, cell_stat *out, cell_error *err)
{
    if (runtime_check_cell_path(path, "path", err) < 0)
        return -1;
    uint32_t u[CTL_NU] = { 0 };
    ctl_msg reply;
    if (file_request(c, CTL_STAT, u, path, NULL, NULL, NULL, 0, &reply, err) < 0)
        return -1;
    stat_from_words(reply.u, out);
    ctl_msg_free(&reply);
    return 0;
}

static int compare_dirents(const void *a, const void *b)
{
    return strcmp(((const cell_dirent *)a)->name, ((const cell_dirent *)b)->name);
}

/* A record of the listing stream, from inside the cell: a name it could
 * not have (empty, "/", ".", "..", unterminated) is a protocol error. */
static int dirent_ok(const struct ctl_dirent *r)
{
    const char *end = memchr(r->name, '\0', sizeof r->name);
    return end && end != r->name && !memchr(r->name, '/', (size_t)(end - r->name)) &&
           strcmp(r->name, ".") != 0 && strcmp(r->name, "..") != 0;
}

static int read_listing(cell_xfer *x, const char *path, cell_dirent **out, size_t *count, cell_error *err)
{
    cell_dirent *list = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        struct ctl_dirent r;
        ssize_t got = xfer_read_full(x, x->fd, &r, sizeof r);
        if (got == 0)
            break;
        int bad = got != (ssize_t)sizeof r || !dirent_ok(&r);
        if (bad || n == LIST_MAX_ENTRIES) {
            free(list);
            if (got < 0)
                return util_fail_errno(err, "cannot list %s", path);
            return bad ? util_fail(err, EPROTO, "malformed listing of %s from the cell", path)
                       : util_fail(err, EFBIG, "%s has more than %u entries", path, LIST_MAX_ENTRIES);
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            cell_dirent *grown = realloc(list, cap * sizeof *list);
            if (!grown) {
                free(list);
                return util_fail(err, ENOMEM, "out of memory listing %s", path);
            }
            list = grown;
        }
        snprintf(list[n].name, sizeof list[n].name, "%s", r.name);
        uint32_t u[CTL_NU] = { r.mode, (uint32_t)r.size, (uint32_t)(r.size >> 32), (uint32_t)r.mtime,
                               (uint32_t)((uint64_t)r.mtime >> 32), r.uid, r.gid };
        stat_from_words(u, &list[n].st);
        n++;
    }
    *out = list;
    *count = n;
    return 0;
}

int cell_file_list(cell *c, const char *path, cell_dirent **out, size_t *count, cell_error *err)
{
    cell_xfer x;
    if (xfer_start(c, CTL_LIST, 0, 0, path, NULL, 0, 0, &x, err) < 0)
        return -1;
    cell_dirent *list = NULL;
    size_t n = 0;
    int rc = read_listing(&x, path, &list, &n, err);
    cell_error end_err = { 0 };
    if (cell_xfer_end(&x, &end_err) < 0 && rc == 0) {
        rc = util_fail(err, end_err.code, "cannot list %s: %s", path, end_err.message);
        free(list);
    }
    if (rc < 0)
        return -1;
    if (n)
        qsort(list, n, sizeof *list, compare_dirents);
    *out = list;
    *count = n;
    return 0;
}

int cell_file_mkdir(cell *c, const char *path, mode_t mode, int parents, cell_error *err)
{
    if (runtime_check_cell_path(path, "path", err) < 0)
        return -1;
    return simple_request(c, CTL_MKDIR, mode ? mode : 0755, parents ? 1 : 0, path, NULL, NULL, err);
}

int cell_file_move(cell *c, const char *from, const char *to, int overwrite, cell_error *err)
{
    if (runtime_check_cell_path(from, "source path", err) < 0 || runtime_check_cell_path(to, "destination path", err) < 0)
        return -1;
    return simple_request(c, CTL_MOVE, overwrite ? 1 : 0, 0, from, to, NULL, err);
}

int cell_file_delete(cell *c, const char *path, int recursive, cell_error *err)
{
    if (runtime_check_cell_path(path, "path", err) < 0)
        return -1;
    if (strcmp(path, "/") == 0)
        return util_fail(err, EINVAL, "refusing to delete the cell's root directory");
    return simple_request(c, CTL_DELETE, recursive ? 1 : 0, 0, path, NULL, NULL, err);
}

/* mkdir -p the directory part of `path` (relative to base, or absolute in
 * the cell with base -1); nothing to do for a name in the top directory. */
static int ensure_parent(cell *c, const char *path, const char *base, cell_error *err)
{
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    if (!slash || slash == parent)
        return 0;
    *slash = '\0';
    return simple_request(c, CTL_MKDIR, 0755, 1, parent, NULL, base, err);
}

int runtime_write_whole(cell *c, const char *path, const void *data, size_t len, mode_t mode, cell_error *err)
{
    if (runtime_check_cell_path(path, "path", err) < 0 || ensure_parent(c, path, NULL, err) < 0)
        return -1;
    cell_xfer x;
    if (cell_file_write(c, path, O_WRONLY | O_CREAT | O_TRUNC, mode, &x, err) < 0)
        return -1;
    cell_error end_err = { 0 };
    if (cell_xfer_write(&x, data, len, err) < 0 || cell_xfer_end(&x, &end_err) < 0) {
        if (end_err.code)
            util_fail(err, end_err.code, "cannot write %s in the cell: %s", path, end_err.message);
        cell_xfer_end(&x, NULL);
        return -1;
    }
    return 0;
}

/* ---- tar upload ------------------------------------------------------------ */

/* Lexical check of one entry name: relative after stripping leading "/" and
 * "./", no ".." component.  Symlinks planted by earlier entries are stopped
 * by init (RESOLVE_BENEATH on the target directory).  The archive is parsed
 * here, in the owner; every byte is written by a transfer process. */
static int entry_path(const char *raw, char *out, size_t size, cell_error *err)
{
    while (*raw == '/')
        raw++;
    while (raw[0] == '.' && raw[1] == '/')
        raw += 2;
    if (!*raw || strcmp(raw, ".") == 0)
        return 0; /* the directory itself */
    for (const char *p = raw; (p = strstr(p, "..")); p += 2)
        if ((p == raw || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
            return util_fail(err, EINVAL, "tar entry '%s' leaves the target directory (contains '..')", raw);
    if (util_path(out, size, err, "%s", raw) < 0)
        return -1;
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = '\0';
    return 1;
}


/* Zeros for the holes of a sparse entry: the pipe cannot seek. */
static int write_zeros(cell_xfer *x, uint64_t n, cell_error *err)
{
    static const char zeros[64 * 1024];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (cell_xfer_write(x, zeros, k, err) < 0)
            return -1;
        n -= k;
    }
    return 0;
}

/* One regular file's bytes, from the parser to a transfer process. */
static int upload_file(cell *c, runtime_untar *t, const char *rel, mode_t mode, const char *base, cell_error *err)
{
    cell_xfer x;
    if (xfer_start(c, CTL_WRITE, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode, rel, base, 1, 0, &x, err) < 0)
        return -1;
    const void *buf;
    size_t len;
    uint64_t off, at = 0;
    int r = 0, rc = 0;
    while (rc == 0 && (r = runtime_untar_data(t, &buf, &len, &off, err)) == 1) {
        if (off < at)
            rc = util_fail(err, EINVAL, "tar entry '%s' has overlapping data blocks", rel);
        else if (write_zeros(&x, off - at, err) < 0 || cell_xfer_write(&x, buf, len, err) < 0)
            rc = -1;
        at = off + len;
    }
    if (r < 0)
        rc = -1;
    cell_error end_err = { 0 };
    if (cell_xfer_end(&x, &end_err) < 0 && rc == 0)
        rc = util_fail(err, end_err.code, "cannot write %s in the cell: %s", rel, end_err.message);
    return rc;
}

static int upload_entry(cell *c, runtime_untar *t, const runtime_untar_entry *e, const char *base, char *rel,
                        size_t rel_size, cell_error *err)
{
    int r = entry_path(e->name, rel, rel_size, err);
    if (r <= 0)
        return r;
    mode_t mode = e->perm & 07777;
    /* Both names of a hard link resolve beneath the target directory in init. */
    if (e->kind == UNTAR_HARDLINK) {
        char target[PATH_MAX];
        if (entry_path(e->link, target, sizeof target, err) <= 0)
            return util_fail(err, EINVAL, "tar hard link '%s' has an invalid target '%s'", rel, e->link);
        if (ensure_parent(c, rel, base, err) < 0)
            return -1;
        return simple_request(c, CTL_LINK, 0, 0, target, rel, base, err) < 0 ? -1 : 1;
    }
    switch (e->kind) {
    case UNTAR_DIR:
        return simple_request(c, CTL_MKDIR, mode ? mode : 0755, 1, rel, NULL, base, err) < 0 ? -1 : 1;
    case UNTAR_FILE:
        if (ensure_parent(c, rel, base, err) < 0)
            return -1;
        return upload_file(c, t, rel, mode, base, err) < 0 ? -1 : 1;
    case UNTAR_SYMLINK:
        if (ensure_parent(c, rel, base, err) < 0)
            return -1;
        return simple_request(c, CTL_SYMLINK, 0, 0, e->link, rel, base, err) < 0 ? -1 : 1;
    default:
        return util_fail(err, EINVAL, "tar entry '%s' is a device, FIFO or socket; only files, directories "
                         "and links can be uploaded", rel);
    }
}

int cell_file_upload_tar(cell *c, const char *dir, int tar_fd, cell_error *err)
{
    return cell_file_upload_tar_cb(c, dir, tar_fd, NULL, NULL, err);
}

int cell_file_upload_tar_cb(cell *c, const char *dir, int tar_fd, cell_upload_fn cb, void *user, cell_error *err)
{
    if (cell_file_mkdir(c, dir, 0755, 1, err) < 0)
        return -1;
    /* The archive is parsed in a confined child (untar.c); entries resolve
     * beneath `dir`, looked up afresh by init per entry. */
    runtime_untar t;
    if (runtime_untar_start(tar_fd, &t, err) < 0)
        return -1;
    runtime_untar_entry e;
    char rel[PATH_MAX];
    int r;
    while ((r = runtime_untar_next(&t, &e, err)) == 1) {
        int done = upload_entry(c, &t, &e, dir, rel, sizeof rel, err);
        if (done < 0) {
            r = -1;
            break;
        }
        if (done && cb)
            cb(user, rel);
    }
    runtime_untar_end(&t);
    return r < 0 ? -1 : 0;
}
