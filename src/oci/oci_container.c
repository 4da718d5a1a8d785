/* oci_container.c: create, start, kill, delete and state, as runc does them
 * for containerd's shim.  `create` clones the init as its own child and
 * exits once the init is parked, so the init is left to the nearest
 * subreaper above us (the shim), which then sees its exit.  State lives in
 * ROOT/ID/ (0700): state.json and, until `start`, exec.fifo. */
#include "oci/oci.h"
#include "oci/oci_egress.h"
#include "isolate/isolate.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

/* How long delete waits for a killed init to exit (it is SIGKILLed). */
#define OCI_KILL_WAIT_MS 10000

static int lock_container(const char *root, const char *id, cell_error *err)
{
    char dir[PATH_MAX];
    if (oci_state_path(dir, sizeof dir, root, id, NULL, err) < 0)
        return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? util_fail(err, ENOENT, "container %s does not exist", id)
                               : util_fail_errno(err, "cannot open %s", dir);
    /* One command at a time changes a container (two starts, start and delete). */
    if (flock(fd, LOCK_EX) < 0) {
        util_fail_errno(err, "cannot lock %s", dir);
        close(fd);
        return -1;
    }
    return fd;
}

static void remove_state(const char *root, const char *id)
{
    char dir[PATH_MAX];
    if (oci_state_path(dir, sizeof dir, root, id, NULL, NULL) == 0)
        (void)util_rm_rf(dir, NULL);
}

static int write_pid_file(const char *path, pid_t pid, cell_error *err)
{
    char tmp[PATH_MAX], text[32];
    if (util_path(tmp, sizeof tmp, err, "%s.cell-oci-tmp", path) < 0)
        return -1;
    int n = snprintf(text, sizeof text, "%d", (int)pid);
    if (util_write_file(tmp, text, (size_t)n, 0644, 0, err) < 0)
        return -1;
    if (rename(tmp, path) < 0) {
        util_fail_errno(err, "--pid-file: cannot rename %s to %s", tmp, path);
        unlink(tmp);
        return -1;
    }
    return 0;
}

int oci_console_connect(const char *path, cell_error *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path)
        return util_fail(err, ENAMETOOLONG, "--console-socket: path %s is too long", path);
    memcpy(sa.sun_path, path, strlen(path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        util_fail_errno(err, "--console-socket: cannot connect to %s", path);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* What cell does not do yet is refused here, by field, rather than
 * ignored into something weaker than asked. */
static int check_supported(const struct oci_spec *s, const struct oci_create_opts *o, cell_error *err)
{
    /* A user namespace by path is checked by oci_userns_join. */
    const struct oci_ns *ns = oci_spec_ns(s, CLONE_NEWNS);
    if (ns && ns->path)
        return util_fail(err, ENOTSUP, "config.json: linux.namespaces mount with a path is not supported; "
                         "a container always gets a mount namespace of its own");
    if (s->has_idmap && (s->uid_map.host_id != s->gid_map.host_id || s->uid_map.size != s->gid_map.size))
        return util_fail(err, ENOTSUP, "config.json: linux.uidMappings and gidMappings must map the same range");
    if (s->terminal && !o->console_socket)
        return util_fail(err, EINVAL, "config.json: process.terminal is true but no --console-socket was given");
    if (!s->terminal && o->console_socket)
        return util_fail(err, EINVAL, "--console-socket was given but process.terminal is false");
    if (s->seccomp && oci_seccomp_check(s->seccomp, err) < 0)
        return -1;
    return 0;
}

static int clone_flags(const struct oci_spec *s, cell_error *err)
{
    int flags = CLONE_NEWNS;
    static const int types[] = { CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWPID };
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        const struct oci_ns *ns = oci_spec_ns(s, types[i]);
        if (!ns || !ns->path) {
            flags |= types[i]; /* asked for or not: a container never shares the host's */
            continue;
        }
        if (types[i] == CLONE_NEWPID) {
            /* setns() of a pid namespace applies to children: do it here. */
            _cleanup_close_ int fd = oci_ns_open(ns->path, CLONE_NEWPID, err);
            if (fd < 0)
                return -1;
            if (setns(fd, CLONE_NEWPID) < 0)
                return util_fail_errno(err, "cannot join the pid namespace %s", ns->path);
        }
    }
    return flags;
}

static void now_rfc3339(char *buf, size_t size)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%09ldZ", (long)ts.tv_nsec);
}

/* The init's "hooks" request: prestart and createRuntime, here in the
 * runtime's namespaces (cwd the bundle, as runc), while the init waits
 * with its mounts made and before its pivot_root. */
static int runtime_hooks(const struct oci_init_args *ia, const char *id, const char *bundle, pid_t pid,
                         cell_error *err)
{
    json_t *st = oci_hook_state(id, "creating", pid, bundle, ia->spec->annotations);
    int rc = st ? 0 : util_fail(err, ENOMEM, "no memory for the hooks' state");
    if (rc == 0)
        rc = oci_hooks_run(&ia->spec->hooks, OCI_HOOK_PRESTART, st, bundle, err);
    if (rc == 0)
        rc = oci_hooks_run(&ia->spec->hooks, OCI_HOOK_CREATE_RUNTIME, st, bundle, err);
    json_decref(st);
    return rc;
}

/* Clone the init and wait for its "ok" (or its error message), running
 * the runtime's hooks when it asks.  own_pidns: our pid namespace, which we
 * return to right after the clone (a pid namespace joined by path is the
 * init's only: no hook is born in it). */
static pid_t spawn_init(struct oci_init_args *ia, int flags, int own_pidns, const struct oci_create_opts *o,
                        cell_error *err)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
        return util_fail_errno(err, "socketpair for the container's init");
    fflush(NULL);
    pid_t pid = (pid_t)syscall(SYS_clone, (unsigned long)flags | SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid == 0) {
        close(sp[0]);
        ia->sync_fd = sp[1];
        oci_init_main(ia);
    }
    if (setns(own_pidns, CLONE_NEWPID) < 0)
        oci_log("warning", "cannot return to cell-oci's pid namespace: %s", strerror(errno));
    close(sp[1]);
    if (pid < 0) {
        close(sp[0]);
        return util_fail_errno(err, "cannot clone the container's init");
    }
    char msg[1024];
    ssize_t n;
    int hooks_failed = 0;
    for (;;) {
        while ((n = read(sp[0], msg, sizeof msg - 1)) < 0 && errno == EINTR)
            ;
        if (n != 5 || memcmp(msg, "hooks", 5) != 0)
            break;
        if (runtime_hooks(ia, o->id, o->bundle, pid, err) < 0) {
            hooks_failed = 1;
            break;
        }
        if (write(sp[0], "go", 2) != 2) {
            n = -1;
            break;
        }
    }
    close(sp[0]);
    if (!hooks_failed && n == 2 && memcmp(msg, "ok", 2) == 0)
        return pid;
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    if (hooks_failed)
        return -1;
    if (n <= 0)
        return util_fail(err, EIO, "the container's init died before it was ready");
    msg[n] = 0;
    return util_fail(err, EINVAL, "%s", msg);
}

struct create_ctx {
    struct oci_spec spec;
    int             join_slot;     /* the range of the user namespace joined by path, or -1 */
    pid_t           join_via;      /* the init of the container whose namespace that is ... */
    uint64_t        join_via_start; /* ... and its start time: a holder of join_slot */
    int             slot, userns_fd, fifo_fd, console_fd, state_made, cgroup_made;
    int             cgroup_fds[OCI_CG_MAX];
    size_t          n_cgroup_fds;
    char            cgroup[PATH_MAX];
    char            scratch[PATH_MAX];
    uid_t           uid_base;
    uint32_t        uid_count;
    int             nosuid;
    json_t         *hook_state;    /* the init's hooks read it (status and pid are the init's) */
};

/* linux.cgroupsPath as a cgroupfs path: systemd's slice:prefix:name is
 * mapped to where systemd would put the scope (cell-oci does not ask
 * systemd: docs/oci.md), so containerd's SystemdCgroup = true works. */
static int cgroup_path(const struct oci_create_opts *o, const struct oci_spec *s, char *buf, size_t size,
                       const char **out, cell_error *err)
{
    *out = s->cgroups_path;
    if (o->systemd_cgroup && s->cgroups_path && !s->cgroups_systemd)
        return util_fail(err, EINVAL, "linux.cgroupsPath '%.64s' must be slice:prefix:name with --systemd-cgroup",
                         s->cgroups_path);
    if (!s->cgroups_systemd && !(o->systemd_cgroup && !s->cgroups_path))
        return 0;
    *out = buf;
    return oci_systemd_cgroup_path(s->cgroups_path ? s->cgroups_path : ":cell-oci:", o->id, buf, size, err);
}

static int prepare(const struct oci_create_opts *o, struct create_ctx *c, struct oci_init_args *ia, cell_error *err)
{
    if (oci_spec_load(o->bundle, &c->spec, err) < 0 || check_supported(&c->spec, o, err) < 0)
        return -1;
    char dir[PATH_MAX], fifo[PATH_MAX];
    if (oci_state_path(dir, sizeof dir, o->root, o->id, NULL, err) < 0 ||
        oci_state_path(fifo, sizeof fifo, o->root, o->id, OCI_FIFO_FILE, err) < 0 || util_mkdir_p(o->root, 0700, err) < 0)
        return -1;
    if (mkdir(dir, 0700) < 0)
        return errno == EEXIST ? util_fail(err, EEXIST, "container %s already exists", o->id)
                               : util_fail_errno(err, "cannot create %s", dir);
    c->state_made = 1;
    if (mkfifo(fifo, 0600) < 0)
        return util_fail_errno(err, "cannot create %s", fifo);
    /* Read-write: opening never blocks, and the init's read waits for the
     * byte `start` writes (EOF never comes while the init holds it). */
    c->fifo_fd = open(fifo, O_RDWR | O_CLOEXEC);
    if (c->fifo_fd < 0)
        return util_fail_errno(err, "cannot open %s", fifo);
    if (o->console_socket && (c->console_fd = oci_console_connect(o->console_socket, err)) < 0)
        return -1;
    uid_t base;
    uint32_t count;
    const struct oci_ns *uns = oci_spec_ns(&c->spec, CLONE_NEWUSER);
    if (uns && uns->path) {
        /* A pod member in its sandbox's user namespace, on its range. */
        struct oci_userns_owner ow;
        if (oci_userns_join(o->root, o->id, &c->spec, uns->path, &ow, err) < 0)
            return -1;
        c->userns_fd = ow.fd;
        c->join_slot = ow.slot;
        c->join_via = ow.pid;
        c->join_via_start = ow.start_time;
        base = ow.uid_base;
        count = ow.uid_count;
    } else {
        if (c->spec.has_idmap) {
            base = c->spec.uid_map.host_id;
            count = c->spec.uid_map.size;
        } else {
            if (oci_slot_take(&c->slot, err) < 0)
                return -1;
            base = OCI_UID_FIRST + (uid_t)c->slot * ISOLATE_UID_COUNT;
            count = ISOLATE_UID_COUNT;
        }
        if (isolate_userns_create(base, count, &c->userns_fd, err) < 0)
            return -1;
    }
    char cgbuf[PATH_MAX];
    const char *cgpath;
    if (cgroup_path(o, &c->spec, cgbuf, sizeof cgbuf, &cgpath, err) < 0 ||
        oci_cgroup_dir(cgpath, o->id, c->cgroup, sizeof c->cgroup, err) < 0)
        return -1;
    if (oci_cgroup_create(c->cgroup, c->spec.resources, c->cgroup_fds, &c->n_cgroup_fds, err) < 0) {
        /* Ours to remove unless it held someone's processes (EBUSY). */
        c->cgroup_made = err && err->code != EBUSY;
        return -1;
    }
    c->cgroup_made = 1;
    *ia = (struct oci_init_args){ .spec = &c->spec, .sync_fd = -1, .fifo_fd = c->fifo_fd,
                                  .userns_fd = c->userns_fd, .uid_base = base, .uid_count = count,
                                  .console_fd = c->console_fd, .cgroupns_fd = -1, .seccomp = c->spec.seccomp };
    if (util_path(c->scratch, sizeof c->scratch, err, "%s/ovl", dir) < 0)
        return -1;
    if (c->spec.hooks.n[OCI_HOOK_CREATE_CONTAINER] || c->spec.hooks.n[OCI_HOOK_START_CONTAINER]) {
        c->hook_state = oci_hook_state(o->id, "creating", 0, o->bundle, c->spec.annotations);
        if (!c->hook_state)
            return util_fail(err, ENOMEM, "no memory for the hooks' state");
        ia->hook_state = c->hook_state;
    }
    ia->scratch = c->scratch;
    memcpy(ia->cgroup_fds, c->cgroup_fds, sizeof ia->cgroup_fds);
    ia->n_cgroup_fds = c->n_cgroup_fds;
    /* A writable root is a host directory the container's root writes as
     * on-disk root through the id-mapped mount, as a read-write bind is:
     * either gets cell's treatment of read-write host mounts. */
    ia->rw_binds = !c->spec.root_readonly;
    for (size_t i = 0; i < c->spec.n_mounts; i++)
        if (c->spec.mounts[i].kind == OCI_MOUNT_BIND && !(c->spec.mounts[i].attrs & MOUNT_ATTR_RDONLY))
            ia->rw_binds = 1;
    c->uid_base = base;
    c->uid_count = count;
    c->nosuid = ia->rw_binds;
    return 0;
}

static int record(const struct oci_create_opts *o, struct create_ctx *c, pid_t pid, cell_error *err)
{
    struct oci_state st = { .pid = pid, .start_time = oci_pid_start_time(pid), .owner = getuid(),
                            .slot = c->join_slot >= 0 ? c->join_slot : c->slot,
                            .uid_base = c->uid_base, .uid_count = c->uid_count, .nosuid = c->nosuid,
                            .annotations = c->spec.annotations };
    if (st.start_time == 0)
        return util_fail(err, ESRCH, "the container's init %d is gone", (int)pid);
    if (c->slot >= 0 && oci_slot_own(c->slot, pid, st.start_time, err) < 0)
        return -1;
    /* A joiner holds the range too: it is never free while the joiner runs. */
    if (c->join_slot >= 0 && oci_slot_join(c->join_slot, c->join_via, c->join_via_start, pid, st.start_time, err) < 0)
        return -1;
    now_rfc3339(st.created, sizeof st.created);
    memcpy(st.cgroup, c->cgroup, sizeof st.cgroup);
    if (util_path(st.id, sizeof st.id, err, "%s", o->id) < 0 ||
        util_path(st.bundle, sizeof st.bundle, err, "%s", o->bundle) < 0 ||
        util_path(st.rootfs, sizeof st.rootfs, err, "%s", c->spec.root) < 0 || oci_state_write(o->root, &st, err) < 0)
        return -1;
    /* poststart (start) and poststop (delete) run the hooks create saw. */
    if ((c->spec.hooks.n[OCI_HOOK_POSTSTART] || c->spec.hooks.n[OCI_HOOK_POSTSTOP]) &&
        oci_hooks_save(o->root, o->id, c->spec.hooks_doc, err) < 0)
        return -1;
    if (oci_userns_record(o->root, o->id, c->userns_fd, err) < 0)
        return -1;
    if (o->pid_file && write_pid_file(o->pid_file, pid, err) < 0)
        return -1;
    return 0;
}

int oci_create(const struct oci_create_opts *o, pid_t *child, cell_error *err)
{
    struct create_ctx c = { .join_slot = -1, .slot = -1, .userns_fd = -1, .fifo_fd = -1, .console_fd = -1 };
    struct oci_init_args ia;
    pid_t pid = -1;
    int rc = -1;
    if (oci_id_check(o->id, err) < 0)
        return -1;
    if (prepare(o, &c, &ia, err) == 0) {
        /* A pid namespace joined by path is for the init only: we return to
         * ours after the clone (nothing else we start, such as a sanitizer's
         * helper at exit, may be born in the container's). */
        _cleanup_close_ int own_pidns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
        int flags = own_pidns < 0 ? util_fail_errno(err, "cannot open /proc/self/ns/pid") : clone_flags(&c.spec, err);
        if (flags >= 0)
            pid = spawn_init(&ia, flags, own_pidns, o, err);
        else if (own_pidns >= 0 && setns(own_pidns, CLONE_NEWPID) < 0)
            oci_log("warning", "cannot return to cell-oci's pid namespace: %s", strerror(errno));
        if (pid > 0)
            rc = record(o, &c, pid, err);
        /* A pod's egress (oci_egress.c): while the init is parked, before
         * create returns and so before any container of the pod exists. */
        if (rc == 0 && oci_egress_register(o->root, o->id, &c.spec, pid, err) < 0)
            rc = -1;
    }
    if (rc < 0 && pid > 0) {
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    if (rc < 0 && c.slot >= 0)
        oci_slot_release(c.slot, getpid(), oci_pid_start_time(getpid()));
    if (rc < 0 && c.state_made)
        remove_state(o->root, o->id);
    if (rc < 0 && c.cgroup_made)
        oci_cgroup_remove(c.cgroup);
    for (int *fd = &c.userns_fd; fd <= &c.console_fd; fd++)
        if (*fd >= 0)
            close(*fd);
    for (size_t i = 0; i < c.n_cgroup_fds; i++)
        close(c.cgroup_fds[i]);
    json_decref(c.hook_state);
    oci_spec_free(&c.spec);
    if (rc == 0)
        *child = pid;
    return rc;
}

/* Wait (bounded) until the released init has exec'd the container's
 * process: until then /proc/PID/exe is our own binary.  poststart hooks
 * expect the process, and startContainer hooks run before it. */
static void wait_exec(const struct oci_state *st)
{
    struct stat self;
    if (stat("/proc/self/exe", &self) < 0)
        return;
    char exe[64];
    snprintf(exe, sizeof exe, "/proc/%d/exe", (int)st->pid);
    for (int i = 0; i < 2000; i++) {
        struct stat cur;
        if (stat(exe, &cur) < 0 || cur.st_dev != self.st_dev || cur.st_ino != self.st_ino ||
            oci_pid_start_time(st->pid) != st->start_time)
            return;
        struct timespec ts = { 0, 5 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    oci_log("warning", "container %s: its process has not started after 10 s; running poststart", st->id);
}

/* poststart: after the process is released (the runtime spec's order;
 * runc 1.1 runs them at create).  A failure kills the container and fails
 * `start`, as runc does. */
static int poststart(const char *root, const char *id, cell_error *err)
{
    json_t *doc;
    struct oci_hooks h;
    struct oci_state st;
    if (oci_hooks_load(root, id, &doc, &h, err) < 0)
        return -1;
    int rc = 0;
    if (h.n[OCI_HOOK_POSTSTART] && (rc = oci_state_read(root, id, &st, err)) == 0) {
        wait_exec(&st);
        json_t *state = oci_hook_state(id, "running", st.pid, st.bundle, st.annotations);
        rc = state ? oci_hooks_run(&h, OCI_HOOK_POSTSTART, state, st.bundle, err)
                   : util_fail(err, ENOMEM, "no memory for the hooks' state");
        if (rc < 0) {
            _cleanup_close_ int pidfd = oci_state_pidfd(&st);
            if (pidfd >= 0)
                (void)syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        }
        json_decref(state);
        oci_state_free(&st);
    }
    oci_hooks_free(&h);
    json_decref(doc);
    return rc;
}

int oci_start(const char *root, const char *id, cell_error *err)
{
    _cleanup_close_ int lock = lock_container(root, id, err);
    if (lock < 0)
        return -1;
    struct oci_state st;
    if (oci_state_read(root, id, &st, err) < 0)
        return -1;
    enum oci_status s = oci_state_status(root, &st);
    oci_state_free(&st);
    if (s != OCI_CREATED)
        return util_fail(err, EINVAL, "container %s is %s, not created: only a created container can be started",
                         id, oci_status_name(s));
    char fifo[PATH_MAX];
    if (oci_state_path(fifo, sizeof fifo, root, id, OCI_FIFO_FILE, err) < 0)
        return -1;
    _cleanup_close_ int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return util_fail_errno(err, "container %s: its init no longer waits on %s", id, fifo);
    if (write(fd, "s", 1) != 1)
        return util_fail_errno(err, "cannot start container %s", id);
    if (unlink(fifo) < 0)
        return util_fail_errno(err, "cannot remove %s", fifo);
    return poststart(root, id, err);
}

/* Call fn on every process of the container: its cgroup's, which the init
 * and every exec'd process joined first thing (the pid namespace is not the
 * container's when it joined a pod's by path: that would reach the pod). */
static void each_in_container(const struct oci_state *st, void (*fn)(pid_t pid, void *user), void *user)
{
    char path[PATH_MAX];
    if (util_path(path, sizeof path, NULL, "%s/cgroup.procs", st->cgroup) < 0)
        return;
    FILE *f = fopen(path, "re");
    long pid;
    while (f && fscanf(f, "%ld", &pid) == 1)
        if (pid > 1)
            fn((pid_t)pid, user);
    if (f)
        fclose(f);
}

static void kill_one(pid_t pid, void *sig)
{
    kill(pid, *(int *)sig);
}

static void kill_container(const struct oci_state *st, int sig)
{
    each_in_container(st, kill_one, &sig);
}

static void add_pid(pid_t pid, void *list)
{
    json_array_append_new(list, json_integer(pid));
}

int oci_ps(const char *root, const char *id, cell_error *err)
{
    struct oci_state st;
    if (oci_state_read(root, id, &st, err) < 0)
        return -1;
    json_t *pids = json_array();
    if (oci_state_status(root, &st) != OCI_STOPPED)
        each_in_container(&st, add_pid, pids);
    oci_state_free(&st);
    int rc = pids && json_dumpf(pids, stdout, JSON_COMPACT) == 0 ? 0 : util_fail(err, EIO, "cannot print the pids");
    json_decref(pids);
    if (rc == 0)
        putchar('\n');
    return rc;
}

int oci_list(const char *root, cell_error *err)
{
    json_t *all = json_array();
    DIR *d = opendir(root);
    if (!d && errno != ENOENT) {
        json_decref(all);
        return util_fail_errno(err, "cannot list %s", root);
    }
    struct dirent *e;
    while (d && (e = readdir(d))) {
        struct oci_state st;
        if (e->d_name[0] == '.' || oci_state_read(root, e->d_name, &st, NULL) < 0)
            continue;
        json_t *o = oci_state_json(root, &st);
        json_object_del(o, "annotations");
        json_array_append_new(all, o);
        oci_state_free(&st);
    }
    if (d)
        closedir(d);
    /* runc prints null for an empty list. */
    int rc = json_dumpf(json_array_size(all) ? all : json_null(), stdout, JSON_COMPACT | JSON_ENCODE_ANY) == 0 ? 0 : -1;
    json_decref(all);
    if (rc < 0)
        return util_fail(err, EIO, "cannot print the list");
    putchar('\n');
    return 0;
}

int oci_kill(const char *root, const char *id, int sig, int all, cell_error *err)
{
    struct oci_state st;
    if (oci_state_read(root, id, &st, err) < 0)
        return -1;
    _cleanup_close_ int pidfd = oci_state_pidfd(&st);
    int rc = 0;
    if (all && (pidfd < 0 || oci_state_status(root, &st) == OCI_STOPPED)) {
        /* The init is gone but processes may be left in its cgroup (an
         * exec'd one, a pod member's): containerd's shim kills them this
         * way after the init's exit, as runc allows. */
        kill_container(&st, sig);
        if (sig == SIGKILL && oci_cgroup_frozen(st.cgroup))
            rc = oci_cgroup_freeze(st.cgroup, 0, err);
    } else if (pidfd < 0 || oci_state_status(root, &st) == OCI_STOPPED) {
        /* containerd's shim matches "container not running" (process already finished). */
        rc = util_fail(err, ESRCH, "cannot signal container %s: container not running", id);
    } else {
        if (all)
            kill_container(&st, sig);
        if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 && !(all && errno == ESRCH))
            rc = util_fail_errno(err, "cannot send signal %d to container %s", sig, id);
        /* A frozen task dies of SIGKILL only once thawed (cgroup v1), and
         * containerd's delete --force of a paused task waits for it. */
        if (rc == 0 && sig == SIGKILL && oci_cgroup_frozen(st.cgroup))
            rc = oci_cgroup_freeze(st.cgroup, 0, err);
    }
    oci_state_free(&st);
    return rc;
}

int oci_update(const char *root, const char *id, const char *file, cell_error *err)
{
    _cleanup_close_ int lock = lock_container(root, id, err);
    if (lock < 0)
        return -1;
    struct oci_state st;
    if (oci_state_read(root, id, &st, err) < 0)
        return -1;
    json_error_t jerr;
    json_t *res = strcmp(file, "-") == 0 ? json_loadf(stdin, JSON_REJECT_DUPLICATES, &jerr)
                                         : json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    int rc = res ? oci_cgroup_update(st.cgroup, res, err)
                 : util_fail(err, EINVAL, "update --resources %s: line %d: %s", file, jerr.line, jerr.text);
    json_decref(res);
    oci_state_free(&st);
    return rc;
}

int oci_pause(const char *root, const char *id, int on, cell_error *err)
{
    _cleanup_close_ int lock = lock_container(root, id, err);
    if (lock < 0)
        return -1;
    struct oci_state st;
    if (oci_state_read(root, id, &st, err) < 0)
        return -1;
    enum oci_status s = oci_state_status(root, &st);
    int rc = 0;
    if (s != (on ? OCI_RUNNING : OCI_PAUSED))
        rc = util_fail(err, EINVAL, "container %s is %s, not %s", id, oci_status_name(s), on ? "running" : "paused");
    else
        rc = oci_cgroup_freeze(st.cgroup, on, err);
    oci_state_free(&st);
    return rc;
}

static int wait_gone(int pidfd)
{
    struct pollfd p = { .fd = pidfd, .events = POLLIN };
    int r;
    while ((r = poll(&p, 1, OCI_KILL_WAIT_MS)) < 0 && errno == EINTR)
        ;
    return r == 1 ? 0 : -1;
}

int oci_delete(const char *root, const char *id, int force, cell_error *err)
{
    _cleanup_close_ int lock = lock_container(root, id, err);
    if (lock < 0)
        return -1;
    struct oci_state st;
    if (oci_state_read(root, id, &st, err) < 0) {
        /* A create that died half way leaves a directory without state. */
        if (err && err->code == ENOENT && force)
            remove_state(root, id);
        return force && err && err->code == ENOENT ? 0 : -1;
    }
    int rc = 0;
    enum oci_status s = oci_state_status(root, &st);
    if ((s == OCI_RUNNING || s == OCI_PAUSED) && !force) {
        rc = util_fail(err, EBUSY, "cannot delete container %s that is not stopped: %s (stop it first, "
                       "or delete --force)", id, oci_status_name(s));
    } else if (s != OCI_STOPPED) {
        _cleanup_close_ int pidfd = oci_state_pidfd(&st);
        if (pidfd >= 0) {
            kill_container(&st, SIGKILL);
            /* A frozen task dies of SIGKILL only once thawed (cgroup v1). */
            if (s == OCI_PAUSED)
                (void)oci_cgroup_freeze(st.cgroup, 0, NULL);
            /* ESRCH: the namespace's kill above already reached it. */
            if ((syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH) ||
                wait_gone(pidfd) < 0)
                rc = util_fail_errno(err, "container %s: its init did not die on SIGKILL", id);
        }
    }
    if (rc == 0) {
        /* poststop runs once the container is gone; read its hooks first. */
        json_t *hooks_doc = NULL;
        struct oci_hooks hooks = { 0 };
        cell_error herr = { 0 };
        if (oci_hooks_load(root, id, &hooks_doc, &hooks, &herr) < 0)
            oci_log("warning", "container %s: poststop hooks not run: %s", id, herr.message);
        /* What the init left in its cgroup (exec'd processes) goes with it. */
        kill_container(&st, SIGKILL);
        if (oci_cgroup_frozen(st.cgroup))
            (void)oci_cgroup_freeze(st.cgroup, 0, NULL);
        oci_egress_unregister(root, id);
        oci_slot_release(st.slot, st.pid, st.start_time);
        oci_cgroup_remove(st.cgroup);
        remove_state(root, id);
        /* Errors are logged, never fatal: the container is already deleted. */
        json_t *state = hooks.n[OCI_HOOK_POSTSTOP] ? oci_hook_state(id, "stopped", 0, st.bundle, st.annotations)
                                                   : NULL;
        if (state && oci_hooks_run(&hooks, OCI_HOOK_POSTSTOP, state, st.bundle, &herr) < 0)
            oci_log("warning", "container %s: %s", id, herr.message);
        json_decref(state);
        oci_hooks_free(&hooks);
        json_decref(hooks_doc);
    }
    oci_state_free(&st);
    return rc;
}

int oci_state_print(const char *root, const char *id, cell_error *err)
{
    struct oci_state st;
    if (oci_state_read(root, id, &st, err) < 0)
        return -1;
    json_t *o = oci_state_json(root, &st);
    oci_state_free(&st);
    int rc = o && json_dumpf(o, stdout, JSON_INDENT(2)) == 0 ? 0 : util_fail(err, EIO, "cannot print the state");
    json_decref(o);
    if (rc == 0)
        putchar('\n');
    return rc;
}

int oci_wait_exit(pid_t child)
{
    int status;
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR)
            return 255;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 255;
}
