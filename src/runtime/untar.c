/* untar.c: a tar upload is untrusted input, so libarchive parses it in a
 * program of its own, cell-untar (src/untar/main.c), embedded in libcell and
 * exec'd from a sealed memfd for each upload: it keeps nothing but the tar
 * stream and a pipe back, and confines itself (nobody, no_new_privs,
 * seccomp) before reading.  It sends each entry as frames; the owner checks
 * every frame (the parser may be subverted) and does the writing through
 * transfer processes in the cell (files.c). */
#include "runtime/untar.h"
#include "util/util.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern const char cell_untar_blob_start[];
extern const char cell_untar_blob_end[];

static pthread_once_t exe_once = PTHREAD_ONCE_INIT;
static int exe_fd = -1, exe_errno;

static void make_exe_fd(void)
{
    size_t len = (size_t)(cell_untar_blob_end - cell_untar_blob_start);
    cell_error err = { 0 };
    if ((exe_fd = util_sealed_memfd("cell-untar", cell_untar_blob_start, len, &err)) < 0)
        exe_errno = err.code;
}

/* Between fork and exec: async-signal-safe calls only (the owner may be
 * the multi-threaded daemon).  The parser gets the tar on 0, the frame
 * pipe on 1, and nothing else. */
__attribute__((noreturn))
static void parser_child(int tar_fd, int out, int exe, char *const envp[])
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int in = fcntl(tar_fd, F_DUPFD, 10), o = fcntl(out, F_DUPFD, 10), x = fcntl(exe, F_DUPFD, 10);
    if (in < 0 || o < 0 || x < 0 || dup2(in, 0) < 0 || dup2(o, 1) < 0 || dup2(x, 2) < 0 ||
        fcntl(2, F_SETFD, FD_CLOEXEC) < 0 || syscall(SYS_close_range, 3, ~0U, 0) < 0)
        _exit(127);
    char *const argv[] = { "cell-untar", NULL };
    syscall(SYS_execveat, 2, "", argv, envp, AT_EMPTY_PATH);
    _exit(127);
}

/* The parser's environment: the sanitizers' settings in sanitizer builds. */
static void parser_env(char *env[], size_t max, char store[][512])
{
    static const char *const keep[] = { "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS" };
    size_t n = 0;
    for (size_t i = 0; i < sizeof keep / sizeof keep[0] && n + 1 < max; i++) {
        const char *v = getenv(keep[i]);
        if (v && snprintf(store[n], 512, "%s=%s", keep[i], v) < 512)
            env[n] = store[n], n++;
    }
    env[n] = NULL;
}

int runtime_untar_start(int tar_fd, runtime_untar *u, cell_error *err)
{
    memset(u, 0, sizeof *u);
    u->fd = -1;
    u->pid = -1;
    pthread_once(&exe_once, make_exe_fd);
    if (exe_fd < 0) {
        errno = exe_errno;
        return util_fail_errno(err, "cannot prepare the tar parser");
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return util_fail_errno(err, "cannot create a pipe");
    char *env[4], store[3][512];
    parser_env(env, 4, store);
    pid_t pid = fork();
    if (pid == 0)
        parser_child(tar_fd, p[1], exe_fd, env);
    int code = errno;
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
static int next_frame(runtime_untar *u, struct untar_frame *f, cell_error *err)
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
    struct untar_frame f;
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
    e->uid = (uint32_t)(f.off >> 32);
    e->gid = (uint32_t)f.off;
    return 1;
}

int runtime_untar_data(runtime_untar *u, const void **buf, size_t *len, uint64_t *off, cell_error *err)
{
    struct untar_frame f;
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
