/* oci_exec.c: `exec`, a new process in a running container.  It joins the
 * init's namespaces (pid by setns before the fork, the others in the
 * child as real root, the user namespace last, from oci_init.c's
 * confinement) and takes the same confinement as the init: a container's
 * processes are never less confined than its init.  With --detach the
 * process is left to the caller's subreaper (the shim waits for exec'd
 * processes too); without, exec waits and exits with its code. */
#include "oci/oci.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

/* The namespaces an exec'd process joins, in the order it joins them (the
 * mount namespace after the others: it changes what /proc names). */
static const struct { const char *name; int type; } joined[] = {
    { "ipc", CLONE_NEWIPC }, { "uts", CLONE_NEWUTS }, { "net", CLONE_NEWNET }, { "mnt", CLONE_NEWNS },
};
#define N_JOINED (sizeof joined / sizeof *joined)

struct exec_ns {
    int fd[N_JOINED];
    int pid, user, cgroup;
};

static void ns_close(struct exec_ns *n)
{
    for (size_t i = 0; i < N_JOINED; i++)
        if (n->fd[i] >= 0)
            close(n->fd[i]);
    for (int *fd = &n->pid; fd <= &n->cgroup; fd++)
        if (*fd >= 0)
            close(*fd);
}

static int open_ns(pid_t pid, const char *name, cell_error *err)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        util_fail_errno(err, "cannot open %s", path);
    return fd;
}

static int same_file(int fd, const char *path)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* The init enters its user and cgroup namespaces once started, a moment
 * after `start` returns: until then its are ours, and joining them would
 * be no confinement at all.  Wait for it, bounded. */
static int open_late_ns(const struct oci_state *st, struct exec_ns *n, cell_error *err)
{
    for (int i = 0; i < 400; i++) {
        if ((n->user = open_ns(st->pid, "user", err)) < 0 || (n->cgroup = open_ns(st->pid, "cgroup", err)) < 0)
            return -1;
        if (!same_file(n->user, "/proc/self/ns/user") && !same_file(n->cgroup, "/proc/self/ns/cgroup"))
            return 0;
        close(n->user);
        close(n->cgroup);
        n->user = n->cgroup = -1;
        struct timespec ts = { 0, 5 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    return util_fail(err, EAGAIN, "container %s: its init has not entered its user namespace (not started?)",
                     st->id);
}

/* The init's namespaces, opened while a pidfd proves the pid is still it. */
static int open_namespaces(const struct oci_state *st, const char *root, struct exec_ns *n, cell_error *err)
{
    for (size_t i = 0; i < N_JOINED; i++)
        n->fd[i] = -1;
    n->pid = n->user = n->cgroup = -1;
    _cleanup_close_ int pidfd = oci_state_pidfd(st);
    enum oci_status s = pidfd < 0 ? OCI_STOPPED : oci_state_status(root, st);
    if (s == OCI_STOPPED)
        return util_fail(err, ESRCH, "container %s is not running (cannot exec in a stopped container)", st->id);
    /* The process would join a frozen cgroup and freeze before its exec. */
    if (s == OCI_PAUSED)
        return util_fail(err, EBUSY, "container %s is paused (resume it to exec)", st->id);
    if (s == OCI_CREATED)
        return util_fail(err, EINVAL, "container %s is created, not started: exec needs a started container",
                         st->id);
    for (size_t i = 0; i < N_JOINED; i++)
        if ((n->fd[i] = open_ns(st->pid, joined[i].name, err)) < 0)
            return -1;
    if ((n->pid = open_ns(st->pid, "pid", err)) < 0 || open_late_ns(st, n, err) < 0)
        return -1;
    /* Still alive (so not reaped, so its pid not reused): they were its. */
    struct pollfd p = { .fd = pidfd, .events = POLLIN };
    if (poll(&p, 1, 0) != 0)
        return util_fail(err, ESRCH, "container %s stopped while exec joined it", st->id);
    return 0;
}

/* The process to run: --process, or the bundle's with the command line's
 * changes (args, --env, --cwd, --user, --tty). */
static int exec_process(const struct oci_exec_opts *o, const struct oci_state *st, struct oci_spec *s,
                        cell_error *err)
{
    if (o->process)
        return oci_process_load(o->process, s, err);
    if (oci_spec_load(st->bundle, s, err) < 0)
        return -1;
    size_t n = 0;
    while (o->args[n])
        n++;
    if (n == 0)
        return util_fail(err, EINVAL, "exec needs a command (or --process FILE)");
    free(s->args);
    s->args = calloc(n + 1, sizeof *s->args);
    const char **env = calloc(s->n_env + o->n_env + 1, sizeof *env);
    if (!s->args || !env) {
        free(env);
        return util_fail(err, ENOMEM, "no memory for the exec'd process");
    }
    memcpy(s->args, o->args, n * sizeof *s->args);
    s->n_args = n;
    for (size_t i = 0; i < s->n_env; i++)
        env[i] = s->env[i];
    for (size_t i = 0; i < o->n_env; i++)
        env[s->n_env + i] = o->env[i];
    free(s->env);
    s->env = env;
    s->n_env += o->n_env;
    if (o->cwd)
        s->cwd = o->cwd;
    s->terminal = o->tty;
    if (o->user) {
        unsigned long uid, gid;
        char *end;
        uid = strtoul(o->user, &end, 10);
        gid = *end == ':' ? strtoul(end + 1, &end, 10) : 0;
        if (*end || !*o->user || uid > UINT32_MAX || gid > UINT32_MAX)
            return util_fail(err, EINVAL, "--user '%s' must be UID[:GID] (numbers)", o->user);
        s->uid = (uint32_t)uid;
        s->gid = (uint32_t)gid;
    }
    return 0;
}

__attribute__((noreturn))
static void exec_child(struct oci_init_args *a, const struct exec_ns *n)
{
    /* Until its execve this is cell-oci, real root, inside the container's
     * pid namespace: not dumpable, so no container process may open its
     * /proc/PID/exe, mem, environ or fds or ptrace it (runc's
     * CVE-2016-9962, CVE-2019-5736), whatever the credential changes on the
     * way would leave.  execve makes the container's program dumpable. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
        (void)!write(a->sync_fd, "cannot make the exec'd process non-dumpable", 43);
        _exit(127);
    }
    for (size_t i = 0; i < N_JOINED; i++)
        if (setns(n->fd[i], joined[i].type) < 0) {
            char msg[128];
            int len = snprintf(msg, sizeof msg, "cannot join the container's %s namespace: %s", joined[i].name,
                               strerror(errno));
            (void)!write(a->sync_fd, msg, (size_t)len);
            _exit(127);
        }
    oci_exec_main(a);
}

/* Fork the process into the container; its error message, or EOF at its exec. */
static pid_t spawn(struct oci_init_args *a, const struct exec_ns *n, cell_error *err)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
        return util_fail_errno(err, "socketpair for exec");
    /* Our own children's pid namespace again after the fork: nothing else
     * we start (a sanitizer's helper at exit) is born in the container's. */
    _cleanup_close_ int own = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
    if (own < 0 || setns(n->pid, CLONE_NEWPID) < 0) {
        close(sp[0]);
        close(sp[1]);
        return util_fail_errno(err, "cannot join the container's pid namespace");
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(sp[0]);
        a->sync_fd = sp[1];
        exec_child(a, n);
    }
    if (setns(own, CLONE_NEWPID) < 0)
        oci_log("warning", "cannot return to cell-oci's pid namespace: %s", strerror(errno));
    close(sp[1]);
    if (pid < 0) {
        close(sp[0]);
        return util_fail_errno(err, "cannot fork the exec'd process");
    }
    char msg[1024];
    ssize_t r;
    while ((r = read(sp[0], msg, sizeof msg - 1)) < 0 && errno == EINTR)
        ;
    close(sp[0]);
    if (r == 0)
        return pid;
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    if (r < 0)
        return util_fail_errno(err, "exec: reading the process's report");
    msg[r] = 0;
    return util_fail(err, EINVAL, "%s", msg);
}

static int write_pid(const char *path, pid_t pid, cell_error *err)
{
    char tmp[PATH_MAX], text[32];
    if (util_path(tmp, sizeof tmp, err, "%s.cell-oci-tmp", path) < 0)
        return -1;
    int len = snprintf(text, sizeof text, "%d", (int)pid);
    if (util_write_file(tmp, text, (size_t)len, 0644, 0, err) < 0)
        return -1;
    if (rename(tmp, path) < 0) {
        unlink(tmp);
        return util_fail_errno(err, "--pid-file: cannot rename %s to %s", tmp, path);
    }
    return 0;
}

int oci_exec(const struct oci_exec_opts *o, int *code, cell_error *err)
{
    struct oci_state st;
    if (oci_state_read(o->root, o->id, &st, err) < 0)
        return -1;
    struct oci_spec spec = { 0 }, bundle = { 0 };
    struct exec_ns n;
    int console = -1, rc = -1;
    int cgroups[OCI_CG_MAX];
    size_t n_cgroups = 0;
    pid_t pid = -1;
    /* The bundle's linux.seccomp applies to every process of the container. */
    if (open_namespaces(&st, o->root, &n, err) < 0 || exec_process(o, &st, &spec, err) < 0 ||
        oci_spec_load(st.bundle, &bundle, err) < 0)
        goto out;
    if (spec.terminal != !!o->console_socket) {
        util_fail(err, EINVAL, spec.terminal ? "exec: a terminal needs --console-socket" :
                  "exec: --console-socket was given without a terminal (--tty)");
        goto out;
    }
    if (o->console_socket && (console = oci_console_connect(o->console_socket, err)) < 0)
        goto out;
    if (oci_cgroup_procs(st.cgroup, cgroups, &n_cgroups, err) < 0)
        goto out;
    struct oci_init_args a = { .spec = &spec, .sync_fd = -1, .fifo_fd = -1, .userns_fd = n.user,
                               .uid_base = st.uid_base, .uid_count = st.uid_count, .console_fd = console,
                               .cgroupns_fd = n.cgroup, .rw_binds = st.nosuid, .seccomp = bundle.seccomp };
    memcpy(a.cgroup_fds, cgroups, sizeof cgroups);
    a.n_cgroup_fds = n_cgroups;
    /* The init may die once its namespaces are open, and with its last
     * holder gone its range could go to a new container while the process
     * is still on its way into the old namespace (real root, no id of the
     * range yet: oci_slot_take's scan does not see it).  Hold the range
     * through the init, which must still hold it, until the process runs
     * with the range's ids (its exec) or has failed. */
    pid_t self = getpid();
    uint64_t self_start = oci_pid_start_time(self);
    if (st.slot >= 0 && oci_slot_join(st.slot, st.pid, st.start_time, self, self_start, err) < 0)
        goto out;
    pid = spawn(&a, &n, err);
    if (st.slot >= 0)
        oci_slot_release(st.slot, self, self_start);
    if (pid < 0)
        goto out;
    if (o->pid_file && write_pid(o->pid_file, pid, err) < 0) {
        kill(pid, SIGKILL);
        goto out;
    }
    rc = 0;
    *code = o->detach ? 0 : oci_wait_exit(pid);
out:
    if (console >= 0)
        close(console);
    for (size_t i = 0; i < n_cgroups; i++)
        close(cgroups[i]);
    ns_close(&n);
    oci_spec_free(&spec);
    oci_spec_free(&bundle);
    oci_state_free(&st);
    return rc;
}
