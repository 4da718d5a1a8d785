/* oci_hooks.c: config.json's hooks, run as the runtime spec places them
 * (docs/oci.md "Hooks").  The caller (containerd, CRI-O, Podman) is
 * trusted with its hooks: they run as it does, as real root, in the
 * runtime's namespaces, but for createContainer (the init runs it in the
 * container's namespaces before pivot_root, still real root) and
 * startContainer (the init runs it after cell's confinement, just before
 * the exec).  Each hook gets the state JSON on stdin (a memfd: a hook that
 * does not read it never blocks us), its output captured for the error,
 * and its timeout, after which it is killed. */
#include "oci/oci.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#define HOOK_OUTPUT_MAX 2048 /* bytes of a failed hook's output kept for its error */

extern char **environ;

json_t *oci_hook_state(const char *id, const char *status, pid_t pid, const char *bundle, json_t *annotations)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "ociVersion", "1.0.2", "id", id, "status", status, "bundle",
                          bundle);
    if (o && pid > 0)
        json_object_set_new(o, "pid", json_integer(pid));
    if (o && annotations && json_object_size(annotations))
        json_object_set(o, "annotations", annotations);
    return o;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The child: stdin the state, stdout and stderr the pipe, then exec.
 * Async-signal-safe only (the init is single-threaded, but keep it so). */
__attribute__((noreturn))
static void hook_child(const struct oci_hook *hk, int state_fd, int out_fd, const char *dir)
{
    /* The init writes files as the container's root (setfsuid): a hook
     * runs with its real credentials, as runc's do. */
    setfsgid(getegid());
    setfsuid(geteuid());
    if (dup2(state_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
        _exit(126);
    /* Nothing of the runtime's (the init's sync socket, the fifo, the
     * user namespace) reaches the hook. */
    (void)syscall(SYS_close_range, 3, ~0U, 0);
    if (dir && chdir(dir) < 0) {
        static const char msg[] = "cannot enter the hook's working directory\n";
        (void)!write(2, msg, sizeof msg - 1);
        _exit(126);
    }
    const char *argv0[] = { hk->path, NULL };
    execve(hk->path, (char *const *)(hk->args && hk->args[0] ? hk->args : argv0),
           hk->env ? (char *const *)hk->env : environ);
    static const char msg[] = "cannot execute the hook\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
}

/* Wait for the hook, reading (and bounding) its output meanwhile, so a
 * hook that writes much never blocks on a full pipe. */
static int hook_wait(pid_t pid, int pidfd, int out_fd, int timeout, char *buf, size_t *used, int *status)
{
    int64_t deadline = timeout > 0 ? now_ms() + (int64_t)timeout * 1000 : -1;
    for (;;) {
        struct pollfd p[2] = { { .fd = pidfd, .events = POLLIN }, { .fd = out_fd, .events = POLLIN } };
        int wait_ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            wait_ms = left < 0 ? 0 : left > 60000 ? 60000 : (int)left;
        }
        int r = poll(p, out_fd >= 0 ? 2 : 1, wait_ms);
        if (r < 0 && errno != EINTR)
            return -1;
        if (r > 0 && (p[1].revents & (POLLIN | POLLHUP))) {
            char chunk[4096];
            ssize_t n = read(out_fd, chunk, sizeof chunk);
            if (n > 0 && *used < HOOK_OUTPUT_MAX) {
                size_t take = (size_t)n < HOOK_OUTPUT_MAX - *used ? (size_t)n : HOOK_OUTPUT_MAX - *used;
                memcpy(buf + *used, chunk, take);
                *used += take;
            }
            if (n == 0)
                out_fd = -1; /* every writer closed it: only the exit is left */
        }
        if (r > 0 && (p[0].revents & POLLIN))
            break;
        if (r == 0 && deadline >= 0 && now_ms() >= deadline) {
            kill(pid, SIGKILL);
            while (waitpid(pid, status, 0) < 0 && errno == EINTR)
                ;
            return 1;
        }
    }
    while (waitpid(pid, status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return 0;
}

static int run_one(const struct oci_hook *hk, const char *where, int state_fd, const char *dir, cell_error *err)
{
    int out[2];
    if (pipe2(out, O_CLOEXEC) < 0)
        return util_fail_errno(err, "%s: cannot make a pipe for the hook's output", where);
    if (lseek(state_fd, 0, SEEK_SET) < 0) {
        close(out[0]);
        close(out[1]);
        return util_fail_errno(err, "%s: cannot rewind the state", where);
    }
    pid_t pid = fork();
    if (pid == 0)
        hook_child(hk, state_fd, out[1], dir);
    close(out[1]);
    _cleanup_close_ int rd = out[0];
    if (pid < 0)
        return util_fail_errno(err, "%s: cannot fork the hook %s", where, hk->path);
    _cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        util_fail_errno(err, "%s: cannot watch the hook %s", where, hk->path);
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        return -1;
    }
    char buf[HOOK_OUTPUT_MAX + 1];
    size_t used = 0;
    int status = 0;
    int r = hook_wait(pid, pidfd, rd, hk->timeout, buf, &used, &status);
    /* What the hook wrote after our last read, without waiting for
     * writers it left behind. */
    if (r == 0 && fcntl(rd, F_SETFL, O_NONBLOCK) == 0) {
        ssize_t n;
        while (used < HOOK_OUTPUT_MAX && (n = read(rd, buf + used, HOOK_OUTPUT_MAX - used)) > 0)
            used += (size_t)n;
    }
    while (used > 0 && (buf[used - 1] == '\n' || buf[used - 1] == '\r'))
        used--;
    buf[used] = 0;
    if (r < 0)
        return util_fail_errno(err, "%s: waiting for the hook %s", where, hk->path);
    if (r > 0)
        return util_fail(err, ETIMEDOUT, "%s: the hook %s timed out after %d s (killed)%s%s", where, hk->path,
                         hk->timeout, used ? ": " : "", buf);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFSIGNALED(status))
        return util_fail(err, EIO, "%s: the hook %s was killed by signal %d%s%s", where, hk->path,
                         WTERMSIG(status), used ? ": " : "", buf);
    return util_fail(err, EIO, "%s: the hook %s failed with exit code %d%s%s", where, hk->path, WEXITSTATUS(status),
                     used ? ": " : "", buf);
}

int oci_hooks_run(const struct oci_hooks *h, int kind, json_t *state, const char *dir, cell_error *err)
{
    if (!h || kind < 0 || kind >= OCI_HOOK_KINDS || h->n[kind] == 0)
        return 0;
    _cleanup_free_ char *text = json_dumps(state, JSON_COMPACT);
    if (!text)
        return util_fail(err, ENOMEM, "hooks.%s: cannot write the state", oci_hook_kind_name(kind));
    _cleanup_close_ int fd = memfd_create("cell-oci-state", MFD_CLOEXEC);
    if (fd < 0 || util_write_all(fd, text, strlen(text)) < 0)
        return util_fail_errno(err, "hooks.%s: cannot hold the state for the hooks", oci_hook_kind_name(kind));
    for (size_t i = 0; i < h->n[kind]; i++) {
        char where[64];
        snprintf(where, sizeof where, "hooks.%s[%zu]", oci_hook_kind_name(kind), i);
        oci_log("debug", "running %s: %s", where, h->list[kind][i].path);
        if (run_one(&h->list[kind][i], where, fd, dir, err) < 0)
            return -1;
    }
    return 0;
}

#define HOOKS_FILE "hooks.json"

int oci_hooks_save(const char *root, const char *id, json_t *hooks, cell_error *err)
{
    char path[PATH_MAX];
    if (!hooks || oci_state_path(path, sizeof path, root, id, HOOKS_FILE, err) < 0)
        return hooks ? -1 : 0;
    _cleanup_free_ char *text = json_dumps(hooks, JSON_COMPACT);
    if (!text)
        return util_fail(err, ENOMEM, "cannot write %s", path);
    return util_write_file(path, text, strlen(text), 0600, 0, err);
}

int oci_hooks_load(const char *root, const char *id, json_t **doc, struct oci_hooks *h, cell_error *err)
{
    char path[PATH_MAX];
    *doc = NULL;
    memset(h, 0, sizeof *h);
    if (oci_state_path(path, sizeof path, root, id, HOOKS_FILE, err) < 0)
        return -1;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? 0 : util_fail_errno(err, "cannot open %s", path);
    _cleanup_free_ char *text = NULL;
    size_t len;
    if (util_read_fd(fd, path, OCI_SPEC_MAX_BYTES, &text, &len, err) < 0)
        return -1;
    json_error_t jerr;
    *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!*doc)
        return util_fail(err, EINVAL, "%s: line %d: %s", path, jerr.line, jerr.text);
    if (oci_hooks_parse(*doc, h, err) < 0) {
        json_decref(*doc);
        *doc = NULL;
        return -1;
    }
    return 0;
}
