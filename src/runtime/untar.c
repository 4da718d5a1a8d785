/* untar.c: a tar upload is untrusted input, so libarchive parses it in a
 * child of the owner that keeps nothing but the tar stream and a pipe back:
 * no other descriptors, uid/gid nobody, no_new_privs, and a seccomp allow
 * list of reading, writing and memory.  It sends each entry as frames; the
 * owner checks every frame (the child may be subverted) and does the
 * writing through transfer processes in the cell (files.c). */
#include "runtime/untar.h"
#include "util/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define UNTAR_NOBODY 65534
#define UNTAR_BLOCK  (1u << 20)    /* data frames carry at most this much */

struct frame {
    uint32_t kind, mode, len, len2; /* len: name or data or message; len2: link */
    uint64_t off;
};

/* ---- the child ---------------------------------------------------------------- */

static int send_frame(uint32_t kind, uint32_t mode, uint64_t off, const void *a, size_t alen, const void *b,
                      size_t blen)
{
    struct frame f = { kind, mode, (uint32_t)alen, (uint32_t)blen, off };
    return util_write_all(1, &f, sizeof f) < 0 || util_write_all(1, a, alen) < 0 ||
           util_write_all(1, b, blen) < 0 ? -1 : 0;
}

static int send_error(int code, const char *what, struct archive *a)
{
    const char *m = archive_error_string(a);
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s: %s", what, m ? m : "unknown error");
    return send_frame(UNTAR_ERROR, (uint32_t)code, 0, msg, n < 0 ? 0 : strnlen(msg, sizeof msg), "", 0);
}

static int send_data(struct archive *a, const char *name)
{
    const void *buf;
    size_t len;
    la_int64_t off;
    int r;
    while ((r = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK) {
        for (size_t done = 0; done < len;) {
            size_t k = len - done < UNTAR_BLOCK ? len - done : UNTAR_BLOCK;
            if (send_frame(UNTAR_DATA, 0, (uint64_t)off + done, (const char *)buf + done, k, "", 0) < 0)
                return -1;
            done += k;
        }
    }
    if (r != ARCHIVE_EOF) {
        char what[300];
        snprintf(what, sizeof what, "cannot read tar data for %.255s", name);
        send_error(EIO, what, a);
        return -1;
    }
    return send_frame(UNTAR_DATA_END, 0, 0, "", 0, "", 0);
}

static uint32_t kind_of(struct archive_entry *e)
{
    /* Hard links may carry no file type at all (pax): first. */
    if (archive_entry_hardlink(e))
        return UNTAR_HARDLINK;
    switch (archive_entry_filetype(e)) {
    case AE_IFDIR: return UNTAR_DIR;
    case AE_IFREG: return UNTAR_FILE;
    case AE_IFLNK: return UNTAR_SYMLINK;
    default: return UNTAR_OTHER;
    }
}

static void parse(int tar_fd)
{
    struct archive *a = archive_read_new();
    if (!a)
        return;
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_none(a);
    if (archive_read_open_fd(a, tar_fd, 64 * 1024) != ARCHIVE_OK) {
        send_error(EBADMSG, "not a tar stream", a);
        return;
    }
    struct archive_entry *e;
    int r;
    while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        uint32_t kind = kind_of(e);
        const char *name = archive_entry_pathname(e), *link = NULL;
        if (kind == UNTAR_HARDLINK)
            link = archive_entry_hardlink(e);
        else if (kind == UNTAR_SYMLINK)
            link = archive_entry_symlink(e);
        name = name ? name : "";
        link = link ? link : "";
        if (send_frame(kind, (uint32_t)(archive_entry_perm(e) & 07777), 0, name, strlen(name), link,
                       strlen(link)) < 0)
            return;
        if (kind == UNTAR_FILE && send_data(a, name) < 0)
            return;
    }
    if (r == ARCHIVE_EOF)
        send_frame(UNTAR_DONE, 0, 0, "", 0, "", 0);
    else
        send_error(EBADMSG, "malformed tar stream", a);
}

/* Reading, writing and memory; anything else fails with EPERM (not a kill,
 * so that a library's optional call degrades instead of losing the upload). */
static scmp_filter_ctx build_filter(void)
{
    scmp_filter_ctx f = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    static const char *const allowed[] = {
        "read", "write", "close", "lseek", "fstat", "newfstatat", "brk", "munmap", "mremap", "madvise",
        "futex", "exit", "exit_group", "rt_sigreturn", "rt_sigprocmask", "getpid", "gettid", "clock_gettime",
        "sched_yield", "sigaltstack",
    };
    for (size_t i = 0; f && i < sizeof allowed / sizeof *allowed; i++) {
        int nr = seccomp_syscall_resolve_name(allowed[i]);
        if (nr != __NR_SCMP_ERROR && seccomp_rule_add(f, SCMP_ACT_ALLOW, nr, 0) < 0) {
            seccomp_release(f);
            return NULL;
        }
    }
    /* Memory, but never executable memory. */
    if (f && (seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) < 0 ||
              seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
                               SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) < 0)) {
        seccomp_release(f);
        return NULL;
    }
    return f;
}

__attribute__((noreturn))
static void child_main(int tar_fd, int out, scmp_filter_ctx filter)
{
    int in = fcntl(tar_fd, F_DUPFD, 64), o = fcntl(out, F_DUPFD, 64);
    if (in < 0 || o < 0 || dup2(in, 0) < 0 || dup2(o, 1) < 0 || syscall(SYS_close_range, 2, ~0U, 0) < 0)
        _exit(1);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || setgroups(0, NULL) < 0 ||
        setresgid(UNTAR_NOBODY, UNTAR_NOBODY, UNTAR_NOBODY) < 0 ||
        setresuid(UNTAR_NOBODY, UNTAR_NOBODY, UNTAR_NOBODY) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || seccomp_load(filter) < 0)
        _exit(1);
    parse(0);
    _exit(0);
}

/* ---- the owner ---------------------------------------------------------------- */

int runtime_untar_start(int tar_fd, runtime_untar *u, cell_error *err)
{
    memset(u, 0, sizeof *u);
    u->fd = -1;
    u->pid = -1;
    scmp_filter_ctx filter = build_filter();
    if (!filter)
        return util_fail(err, ENOMEM, "cannot build the tar parser's seccomp filter");
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        seccomp_release(filter);
        return util_fail_errno(err, "cannot create a pipe");
    }
    /* fork() of a threaded owner: the child only runs libarchive, libc
     * memory allocation (fork-safe in glibc) and libseccomp, then _exit. */
    pid_t pid = fork();
    if (pid == 0)
        child_main(tar_fd, p[1], filter);
    int code = errno;
    seccomp_release(filter);
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        errno = code;
        return util_fail_errno(err, "cannot start the tar parser");
    }
    u->fd = p[0];
    u->pid = pid;
    return 0;
}

/* The next frame, with its payload (NUL-terminated parts) in u->buf.  The
 * child may be subverted: kinds and lengths are checked. */
static int next_frame(runtime_untar *u, struct frame *f, cell_error *err)
{
    if (util_read_all(u->fd, f, sizeof *f) != (ssize_t)sizeof *f)
        return util_fail(err, EBADMSG, "the tar parser ended without a result");
    int named = f->kind != UNTAR_DATA && f->kind != UNTAR_ERROR;
    size_t max = named ? PATH_MAX : UNTAR_BLOCK;
    if (f->kind < UNTAR_DIR || f->kind > UNTAR_ERROR || f->len > max || f->len2 > PATH_MAX ||
        (!named && f->len2))
        return util_fail(err, EPROTO, "malformed frame from the tar parser");
    size_t need = (size_t)f->len + f->len2 + 2;
    if (need > u->cap) {
        char *b = realloc(u->buf, need);
        if (!b)
            return util_fail(err, ENOMEM, "out of memory");
        u->buf = b;
        u->cap = need;
    }
    if (util_read_all(u->fd, u->buf, f->len) != (ssize_t)f->len ||
        util_read_all(u->fd, u->buf + f->len + 1, f->len2) != (ssize_t)f->len2)
        return util_fail(err, EBADMSG, "the tar parser ended in the middle of a frame");
    u->buf[f->len] = '\0';
    u->buf[f->len + 1 + f->len2] = '\0';
    if (named && (strlen(u->buf) != f->len || strlen(u->buf + f->len + 1) != f->len2))
        return util_fail(err, EPROTO, "malformed frame from the tar parser (NUL in a name)");
    if (f->kind == UNTAR_ERROR) {
        int code = f->mode > 0 && f->mode < 4096 ? (int)f->mode : EBADMSG;
        return util_fail(err, code, "%s", u->buf);
    }
    return 0;
}

int runtime_untar_next(runtime_untar *u, runtime_untar_entry *e, cell_error *err)
{
    struct frame f;
    if (next_frame(u, &f, err) < 0)
        return -1;
    if (f.kind == UNTAR_DONE)
        return 0;
    if (f.kind == UNTAR_DATA || f.kind == UNTAR_DATA_END)
        return util_fail(err, EPROTO, "the tar parser sent data outside a file");
    e->kind = f.kind;
    e->perm = f.mode & 07777;
    e->name = u->buf;
    e->link = u->buf + f.len + 1;
    return 1;
}

int runtime_untar_data(runtime_untar *u, const void **buf, size_t *len, uint64_t *off, cell_error *err)
{
    struct frame f;
    if (next_frame(u, &f, err) < 0)
        return -1;
    if (f.kind == UNTAR_DATA_END)
        return 0;
    if (f.kind != UNTAR_DATA)
        return util_fail(err, EPROTO, "the tar parser ended a file without its data");
    *buf = u->buf;
    *len = f.len;
    *off = f.off;
    return 1;
}

void runtime_untar_end(runtime_untar *u)
{
    if (u->fd >= 0)
        close(u->fd); /* a child still writing gets EPIPE */
    if (u->pid > 0) {
        kill(u->pid, SIGKILL);
        while (waitpid(u->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    free(u->buf);
    memset(u, 0, sizeof *u);
    u->fd = -1;
    u->pid = -1;
}
