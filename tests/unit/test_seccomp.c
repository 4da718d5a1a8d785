/* test_seccomp.c: the cell's seccomp filter and capability drop, tested by doing
 * the forbidden things in forked children that installed them; exit codes carry results. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/netlink.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/seccomp.h>
#include <unistd.h>

#include "isolate/isolate.h"
#include "util/util.h"

extern char **environ;

static struct sock_fprog filter;

/* In a child: report a failed check on stderr and give a non-zero exit code. */
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "child %s:%d: check failed: %s (errno %d: %s)\n",        \
                    __FILE__, __LINE__, #cond, errno, strerror(errno));              \
            return 1;                                                                \
        }                                                                            \
    } while (0)

/* The call must fail with exactly `want` as errno. */
#define CHECK_ERRNO(call, want)                                                      \
    do {                                                                             \
        errno = 0;                                                                   \
        long r_ = (long)(call);                                                      \
        if (r_ != -1 || errno != (want)) {                                           \
            fprintf(stderr, "child %s:%d: %s returned %ld errno %d (%s), want %s\n", \
                    __FILE__, __LINE__, #call, r_, errno, strerror(errno), #want);   \
            return 1;                                                                \
        }                                                                            \
    } while (0)

enum { NO_FILTER = 0, FILTERED = 1 };

/* Fork, optionally install the filter exactly as the boot child does
 * (no_new_privs, then the classic BPF program), run fn and return the raw
 * wait status. */
static int run_child(int (*fn)(void), int filtered)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (filtered) {
            if (prctl(PR_SET_NO_NEW_PRIVS, 1UL, 0UL, 0UL, 0UL) < 0)
                _exit(100);
            if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filter) < 0)
                _exit(101);
        }
        _exit(fn());
    }
    int status;
    pid_t w;
    do
        w = waitpid(pid, &status, 0);
    while (w < 0 && errno == EINTR);
    assert_int_equal(w, pid);
    return status;
}

static void assert_exit_ok(int status)
{
    if (WIFSIGNALED(status))
        fail_msg("child killed by signal %d", WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void expect_ok(int (*fn)(void), int filtered)
{
    assert_exit_ok(run_child(fn, filtered));
}

/* Wait for a grandchild; 0 if it exited 0. */
static int wait_ok(pid_t pid)
{
    int status;
    pid_t w;
    do
        w = waitpid(pid, &status, 0);
    while (w < 0 && errno == EINTR);
    return w == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* ---- the program itself ---------------------------------------------------- */

static void test_build_and_free(void **state)
{
    (void)state;
    struct sock_fprog p;
    cell_error err = { 0 };
    assert_int_equal(isolate_seccomp_build(&p, &err), 0);
    assert_non_null(p.filter);
    assert_true(p.len > 0 && p.len <= BPF_MAXINSNS);
    /* The first instruction loads the architecture: nothing is decided
     * before the ABI is checked. */
    assert_int_equal(p.filter[0].code, BPF_LD | BPF_W | BPF_ABS);
    assert_int_equal(p.filter[0].k, offsetof(struct seccomp_data, arch));
    isolate_seccomp_free(&p);
    assert_null(p.filter);
    assert_int_equal(p.len, 0);
    isolate_seccomp_free(&p);   /* idempotent */
    isolate_seccomp_free(NULL);
}

/* What cells install is the program make compiled (src/seccompgen): it must
 * be, byte for byte, what libseccomp builds from seccomp.c's rules here and
 * now, or the tests below (which build at run time) would not cover it. */
static void assert_same_program(const struct sock_fprog *prebuilt, const struct sock_fprog *built)
{
    assert_true(prebuilt->len > 0);
    assert_int_equal(prebuilt->len, built->len);
    assert_memory_equal(prebuilt->filter, built->filter, built->len * sizeof *built->filter);
}

static void test_prebuilt_matches_runtime_build(void **state)
{
    (void)state;
    struct sock_fprog cell_prog, nosuid, built;
    cell_error err = { 0 };
    isolate_seccomp_prebuilt(&cell_prog, &nosuid);
    assert_int_equal(isolate_seccomp_build(&built, &err), 0);
    assert_same_program(&cell_prog, &built);
    isolate_seccomp_free(&built);
    assert_int_equal(isolate_seccomp_build_nosuid(&built, &err), 0);
    assert_same_program(&nosuid, &built);
    isolate_seccomp_free(&built);
    /* Two different programs, each starting with the architecture check. */
    assert_true(cell_prog.len != nosuid.len ||
                memcmp(cell_prog.filter, nosuid.filter, nosuid.len * sizeof *nosuid.filter) != 0);
    assert_int_equal(cell_prog.filter[0].k, offsetof(struct seccomp_data, arch));
    assert_int_equal(nosuid.filter[0].k, offsetof(struct seccomp_data, arch));
}

/* ---- namespaces ------------------------------------------------------------- */

static int do_unshare(void)
{
    CHECK_ERRNO(unshare(CLONE_NEWUSER), EPERM);
    CHECK_ERRNO(unshare(CLONE_NEWNS), EPERM);
    CHECK_ERRNO(unshare(CLONE_NEWNET), EPERM);
    CHECK_ERRNO(unshare(CLONE_NEWTIME), EPERM);
    return 0;
}

static void test_unshare_denied(void **state)
{
    (void)state;
    expect_ok(do_unshare, FILTERED);
}

static int do_clone_ns(void)
{
    static const unsigned long flags[] = {
        CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWUTS,
        CLONE_NEWIPC, CLONE_NEWCGROUP, CLONE_NEWTIME,
        CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID,
        CLONE_FILES | CLONE_NEWNET,   /* one namespace flag among others */
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        errno = 0;
        long r = syscall(SYS_clone, flags[i] | SIGCHLD, 0UL, 0UL, 0UL, 0UL);
        if (r == 0)
            _exit(99);                 /* the clone happened: we are its child */
        if (r > 0) {
            wait_ok((pid_t)r);
            fprintf(stderr, "child: clone(%#lx) was allowed\n", flags[i]);
            return 1;
        }
        CHECK(errno == EPERM);
    }
    return 0;
}

static void test_clone_ns_denied(void **state)
{
    (void)state;
    expect_ok(do_clone_ns, FILTERED);
}

/* The first fields of struct clone_args (CLONE_ARGS_SIZE_VER0). */
struct clone_args_v0 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

static int do_clone3(void)
{
    struct clone_args_v0 args = { .exit_signal = SIGCHLD };
    errno = 0;
    long r = syscall(SYS_clone3, &args, sizeof args);
    if (r == 0)
        _exit(99);
    if (r > 0) {
        wait_ok((pid_t)r);
        return 1;
    }
    CHECK(errno == ENOSYS);
    args.flags = CLONE_NEWUSER;
    CHECK_ERRNO(syscall(SYS_clone3, &args, sizeof args), ENOSYS);
    return 0;
}

static void test_clone3_enosys(void **state)
{
    (void)state;
    expect_ok(do_clone3, FILTERED);
}

static int do_setns(void)
{
    int fd = open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    CHECK_ERRNO(setns(fd, CLONE_NEWUTS), EPERM);
    close(fd);
    return 0;
}

static void test_setns_denied(void **state)
{
    (void)state;
    expect_ok(do_setns, FILTERED);
}

/* ---- mounts ----------------------------------------------------------------
 * Targets that do not exist: unfiltered these calls fail with ENOENT (see
 * test_control_unfiltered), so EPERM proves the filter, and a broken filter
 * cannot change the host's mounts. */
#define NOWHERE "/nonexistent-cell-seccomp-test"

static int do_mounts(void)
{
    CHECK_ERRNO(mount("none", NOWHERE, "tmpfs", 0, NULL), EPERM);
    CHECK_ERRNO(umount2(NOWHERE, MNT_DETACH), EPERM);
    CHECK_ERRNO(syscall(SYS_pivot_root, NOWHERE, NOWHERE), EPERM);
    CHECK_ERRNO(syscall(SYS_fsopen, "tmpfs", 0), EPERM);
    CHECK_ERRNO(syscall(SYS_open_tree, AT_FDCWD, NOWHERE, 0), EPERM);
    CHECK_ERRNO(syscall(SYS_move_mount, AT_FDCWD, NOWHERE, AT_FDCWD, NOWHERE, 0), EPERM);
    CHECK_ERRNO(syscall(SYS_mount_setattr, AT_FDCWD, NOWHERE, 0, NULL, 0), EPERM);
    CHECK_ERRNO(syscall(467 /* open_tree_attr, unknown to libseccomp 2.5 */, AT_FDCWD, NOWHERE, 0, NULL, 0), EPERM);
    CHECK_ERRNO(syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, 0), EPERM);
    CHECK_ERRNO(syscall(SYS_name_to_handle_at, AT_FDCWD, NOWHERE, NULL, NULL, 0), EPERM);
    return 0;
}

static void test_mounts_denied(void **state)
{
    (void)state;
    expect_ok(do_mounts, FILTERED);
}

/* ---- kernel attack surface ------------------------------------------------- */

static int do_kernel(void)
{
    CHECK_ERRNO(syscall(SYS_bpf, 0, NULL, 0), EPERM);
    CHECK_ERRNO(syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0), EPERM);
    CHECK_ERRNO(syscall(SYS_add_key, "user", "cell-test", "x", 1, -2 /* process keyring */), EPERM);
    CHECK_ERRNO(syscall(SYS_request_key, "user", "cell-test", NULL, 0), EPERM);
    CHECK_ERRNO(syscall(SYS_init_module, NULL, 0, ""), EPERM);
    CHECK_ERRNO(syscall(SYS_finit_module, -1, "", 0), EPERM);
    CHECK_ERRNO(syscall(SYS_delete_module, "cell_no_such_module", O_NONBLOCK), EPERM);
    CHECK_ERRNO(syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0UL), EPERM);

    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    attr.exclude_kernel = 1;
    CHECK_ERRNO(syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0UL), EPERM);

    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    CHECK_ERRNO(syscall(SYS_io_uring_setup, 1, &params), EPERM);
    CHECK_ERRNO(syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0), EPERM);
    CHECK_ERRNO(syscall(SYS_userfaultfd, 0), EPERM);
    return 0;
}

static void test_kernel_surface_denied(void **state)
{
    (void)state;
    expect_ok(do_kernel, FILTERED);
}

static int do_host_state(void)
{
    CHECK_ERRNO(klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0), EPERM);
    struct timespec ts = { 0, 0 };
    CHECK_ERRNO(clock_settime(CLOCK_REALTIME, &ts), EPERM);
    CHECK_ERRNO(syscall(SYS_adjtimex, NULL), EPERM);
    CHECK_ERRNO(syscall(SYS_reboot, 0, 0, 0, NULL), EPERM);
    CHECK_ERRNO(syscall(SYS_swapoff, NOWHERE), EPERM);
    CHECK_ERRNO(syscall(SYS_acct, NULL), EPERM);
    CHECK_ERRNO(syscall(SYS_iopl, 0), EPERM);
    CHECK_ERRNO(syscall(SYS_ioperm, 0UL, 0UL, 0), EPERM);
    return 0;
}

static void test_host_state_denied(void **state)
{
    (void)state;
    expect_ok(do_host_state, FILTERED);
}

/* ---- terminal injection ------------------------------------------------------ */

static int open_pty(int *master, int *slave)
{
    *master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*master < 0 || grantpt(*master) < 0 || unlockpt(*master) < 0)
        return -1;
    const char *name = ptsname(*master);
    if (!name)
        return -1;
    *slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    return *slave < 0 ? -1 : 0;
}

static int do_tiocsti(void)
{
    int master, slave;
    CHECK(open_pty(&master, &slave) == 0);
    char c = 'x';
    CHECK_ERRNO(ioctl(slave, TIOCSTI, &c), EPERM);
    CHECK_ERRNO(ioctl(master, TIOCSTI, &c), EPERM);
    /* The kernel ignores the upper half of the request number. */
    CHECK_ERRNO(syscall(SYS_ioctl, slave, (1UL << 32) | TIOCSTI, &c), EPERM);
    char sub = 2;   /* TIOCL_SETSEL-style subcode */
    CHECK_ERRNO(ioctl(slave, TIOCLINUX, &sub), EPERM);
    /* Other terminal ioctls still work. */
    struct winsize ws;
    CHECK(ioctl(slave, TIOCGWINSZ, &ws) == 0);
    CHECK(isatty(slave));
    close(slave);
    close(master);
    return 0;
}

static void test_tiocsti_denied(void **state)
{
    (void)state;
    expect_ok(do_tiocsti, FILTERED);
}

/* ---- personality ---------------------------------------------------------------- */

static int persona_allowed(uint32_t p)
{
    return p == 0 || p == 0x0008 || p == 0x20000 || p == 0x20008 || p == 0xffffffffu;
}

/* Try one value; restore PER_LINUX after a successful change. */
static int persona_try(uint64_t value)
{
    int want_ok = persona_allowed((uint32_t)value);
    errno = 0;
    long r = syscall(SYS_personality, (unsigned long)value);
    if (want_ok && r == -1) {
        fprintf(stderr, "child: personality(%#llx) denied: %s\n", (unsigned long long)value, strerror(errno));
        return 1;
    }
    if (!want_ok && (r != -1 || errno != EPERM)) {
        fprintf(stderr, "child: personality(%#llx) returned %ld errno %d, want EPERM\n",
                (unsigned long long)value, r, errno);
        if (r != -1)
            syscall(SYS_personality, 0UL);
        return 1;
    }
    if (r != -1 && (uint32_t)value != 0xffffffffu && syscall(SYS_personality, 0UL) == -1) {
        fprintf(stderr, "child: cannot restore PER_LINUX: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

static int do_personality(void)
{
    CHECK_ERRNO(personality(ADDR_NO_RANDOMIZE), EPERM);
    CHECK_ERRNO(personality(READ_IMPLIES_EXEC), EPERM);
    CHECK(personality(0xffffffff) != -1);

    static const uint64_t fixed[] = {
        0, 0x0008, 0x20000, 0x20008, 0xffffffff,
        1, 0x0009, 0x20009, 0x40000, 0x0040008, 0x80000000, 0x7fffffff, 0xfffffffe,
        0xfffffff7, 0xfffdffff, 0xfffdfff7, 0xfffffff6, 0x00020001,
        /* upper halves are ignored by the kernel, and by the filter */
        0x100000000ull, 0x100000008ull, 0x100040000ull, 0xffffffffffffffffull,
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (persona_try(fixed[i]))
            return 1;
    for (unsigned b = 0; b < 32; b++) {
        if (persona_try(1ull << b) || persona_try(0xffffffffull & ~(1ull << b)) ||
            persona_try((1ull << b) | 0x20008) || persona_try(0xffffffffull & ~((1ull << b) | 0x20008)))
            return 1;
    }
    /* A deterministic pseudo-random sweep of the rest. */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (persona_try(x) || persona_try(x & 0x2000f) || persona_try(x | 0xfffdfff0))
            return 1;
    }
    return 0;
}

static void test_personality(void **state)
{
    (void)state;
    expect_ok(do_personality, FILTERED);
}

/* ---- foreign ABIs ------------------------------------------------------------------ */

static int do_x32(void)
{
    syscall(0x40000000L | SYS_getpid);
    return 0;   /* not reached: the process is killed */
}

static int do_i386(void)
{
    long ret = 20;   /* getpid in the i386 table */
    __asm__ volatile("int $0x80" : "+a"(ret) : : "memory");
    return 0;
}

static void test_foreign_abi_killed(void **state)
{
    (void)state;
    int status = run_child(do_x32, FILTERED);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSYS);

    status = run_child(do_i386, FILTERED);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSYS);
}

/* ---- socket families ------------------------------------------------------------ */

/* socket() by number, so the high half of the family can be set too. */
static long raw_socket(uint64_t family, int type, uint64_t protocol)
{
    return syscall(SYS_socket, family, (unsigned long)(unsigned)type, protocol);
}

static int close_ok(long fd)
{
    return fd >= 0 && close((int)fd) == 0;
}

static int do_socket_families(void)
{
    /* The allowed four (and netlink only for NETLINK_ROUTE). */
    CHECK(close_ok(raw_socket(AF_UNIX, SOCK_STREAM, 0)));
    CHECK(close_ok(raw_socket(AF_INET, SOCK_DGRAM, 0)));
    CHECK(close_ok(raw_socket(AF_INET6, SOCK_STREAM, 0)));
    CHECK(close_ok(raw_socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)));
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    close(sv[0]);
    close(sv[1]);
    /* Every other family number the kernel has or may add, each with the
     * types a family commonly takes. */
    static const int types[] = { SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET };
    for (uint64_t f = 0; f < 128; f++) {
        if (f == AF_UNIX || f == AF_INET || f == AF_INET6 || f == AF_NETLINK)
            continue;
        for (size_t t = 0; t < sizeof types / sizeof *types; t++)
            CHECK_ERRNO(raw_socket(f, types[t], 0), EAFNOSUPPORT);
        CHECK_ERRNO(syscall(SYS_socketpair, f, SOCK_STREAM, 0, sv), EAFNOSUPPORT);
    }
    CHECK_ERRNO(raw_socket(AF_VSOCK, SOCK_STREAM, 0), EAFNOSUPPORT);
    CHECK_ERRNO(raw_socket(AF_PACKET, SOCK_DGRAM, 0), EAFNOSUPPORT);
    CHECK_ERRNO(raw_socket(0xffffffffull, SOCK_STREAM, 0), EAFNOSUPPORT);
    CHECK_ERRNO(raw_socket(~0ull, SOCK_STREAM, 0), EAFNOSUPPORT);
    /* The kernel reads the family as int: AF_INET with high bits set would
     * be AF_INET there, but the filter fails closed on it. */
    CHECK_ERRNO(raw_socket((1ull << 32) | AF_INET, SOCK_STREAM, 0), EAFNOSUPPORT);
    CHECK_ERRNO(raw_socket((1ull << 32) | AF_VSOCK, SOCK_STREAM, 0), EAFNOSUPPORT);
    /* Netlink protocols other than route: uevent, audit, sock_diag, ... */
    for (uint64_t proto = 1; proto < 64; proto++)
        CHECK_ERRNO(raw_socket(AF_NETLINK, SOCK_RAW, proto), EPROTONOSUPPORT);
    CHECK_ERRNO(raw_socket(AF_NETLINK, SOCK_DGRAM, NETLINK_KOBJECT_UEVENT), EPROTONOSUPPORT);
    CHECK_ERRNO(raw_socket(AF_NETLINK, SOCK_RAW, 1ull << 32), EPROTONOSUPPORT);
    return 0;
}

static void test_socket_families(void **state)
{
    (void)state;
    expect_ok(do_socket_families, FILTERED);
}

/* ---- what must keep working ---------------------------------------------------------- */

static void *thread_main(void *arg)
{
    return arg;
}

static int do_ordinary(void)
{
    /* fork (glibc: clone3, then clone after ENOSYS) and wait */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(0);
    CHECK(wait_ok(pid) == 0);

    /* clone with plain fork flags */
    long r = syscall(SYS_clone, (unsigned long)SIGCHLD, 0UL, 0UL, 0UL, 0UL);
    CHECK(r >= 0);
    if (r == 0)
        _exit(0);
    CHECK(wait_ok((pid_t)r) == 0);

    /* threads: CLONE_VM|CLONE_THREAD|... through the clone fallback */
    static int token;
    pthread_t t;
    void *ret = NULL;
    CHECK(pthread_create(&t, NULL, thread_main, &token) == 0);
    CHECK(pthread_join(t, &ret) == 0);
    CHECK(ret == &token);

    /* files */
    char path[] = "/tmp/cell-seccomp-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "hello", 5) == 5);
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    char buf[8] = { 0 };
    CHECK(read(fd, buf, sizeof buf) == 5);
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK(unlink(path) == 0);
    close(fd);

    /* execve, directly and through posix_spawn */
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char *argv[] = { "/bin/true", NULL };
        execve(argv[0], argv, environ);
        _exit(127);
    }
    CHECK(wait_ok(pid) == 0);
    char *argv[] = { "/bin/true", NULL };
    CHECK(posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) == 0);
    CHECK(wait_ok(pid) == 0);

    /* sockets */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    close(s);
    s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    close(s);

    /* pidfd_getfd on ourselves: allowed, gated by ptrace rules */
    int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    CHECK(pidfd >= 0);
    int dup_fd = (int)syscall(SYS_pidfd_getfd, pidfd, 0, 0);
    CHECK(dup_fd >= 0);
    close(dup_fd);
    close(pidfd);

    /* chroot stays allowed (needs CAP_SYS_CHROOT, so only as root) */
    if (geteuid() == 0)
        CHECK(chroot("/") == 0);
    return 0;
}

static void test_ordinary_allowed(void **state)
{
    (void)state;
    expect_ok(do_ordinary, FILTERED);
}

/* Without the filter the same probes do not fail with EPERM: the tests above
 * measure the filter, not some other restriction. */
static int do_control(void)
{
    /* mount() looks the target up before it checks privilege. */
    CHECK_ERRNO(mount("none", NOWHERE, "tmpfs", 0, NULL), ENOENT);
    if (geteuid() == 0)
        CHECK_ERRNO(syscall(SYS_fsopen, "cell-no-such-fs", 0), ENODEV);
    CHECK(personality(0xffffffff) != -1);
    CHECK(personality(ADDR_NO_RANDOMIZE) != -1);
    int master, slave;
    CHECK(open_pty(&master, &slave) == 0);
    char c = 'x';
    int r = ioctl(slave, TIOCSTI, &c);
    CHECK(r == 0 || errno == EIO || (errno == EPERM && geteuid() != 0));
    close(slave);
    close(master);
    /* The kernel takes these, so the filter is what refuses them. */
    CHECK(close_ok(raw_socket((1ull << 32) | AF_INET, SOCK_STREAM, 0)));
    CHECK(close_ok(raw_socket(AF_NETLINK, SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)));
    return 0;
}

static void test_control_unfiltered(void **state)
{
    (void)state;
    expect_ok(do_control, NO_FILTER);
}

/* ---- capabilities ------------------------------------------------------------------- */

static uint64_t kept_mask(void)
{
    uint64_t mask = 0;
    for (const int *c = isolate_caps_kept; *c >= 0; c++)
        mask |= 1ull << *c;
    return mask;
}

static void test_caps_kept_list(void **state)
{
    (void)state;
    static const int never[] = {
        21 /* SYS_ADMIN */, 12 /* NET_ADMIN */, 19 /* SYS_PTRACE */, 16 /* SYS_MODULE */,
        27 /* MKNOD */, 13 /* NET_RAW */, 17 /* SYS_RAWIO */, 2 /* DAC_READ_SEARCH */,
        24 /* SYS_RESOURCE */, 25 /* SYS_TIME */, 39 /* BPF */, 38 /* PERFMON */,
        22 /* SYS_BOOT */, 30 /* AUDIT_CONTROL */, 33 /* MAC_ADMIN */, 32 /* MAC_OVERRIDE */,
        34 /* SYSLOG */, 40 /* CHECKPOINT_RESTORE */, 23 /* SYS_NICE */, 26 /* SYS_TTY_CONFIG */,
    };
    uint64_t mask = kept_mask();
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        assert_false(mask & (1ull << never[i]));
    /* CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
     * NET_BIND_SERVICE SYS_CHROOT SETFCAP AUDIT_WRITE */
    uint64_t want = (1ull << 0) | (1ull << 1) | (1ull << 3) | (1ull << 4) | (1ull << 5) |
                    (1ull << 6) | (1ull << 7) | (1ull << 8) | (1ull << 10) | (1ull << 18) |
                    (1ull << 31) | (1ull << 29);
    assert_true(mask == want);
}

/* One "CapXxx:\t<hex>" line of /proc/self/status. */
static int read_cap_line(const char *status, const char *key, uint64_t *out)
{
    const char *p = strstr(status, key);
    if (!p)
        return -1;
    p += strlen(key);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 16);
    if (errno || end == p)
        return -1;
    *out = v;
    return 0;
}

/* Drop, then check every set of /proc/self/status against the kept mask. */
static int do_caps_drop_check_sets(void)
{
    CHECK(isolate_caps_drop(1) == 0);

    char *status = NULL;
    size_t len;
    cell_error err = { 0 };
    CHECK(util_read_file("/proc/self/status", 65536, &status, &len, &err) == 0);
    uint64_t inh = 1, prm = 1, eff = 1, bnd = 1, amb = 1;
    int ok = read_cap_line(status, "\nCapInh:", &inh) == 0 && read_cap_line(status, "\nCapPrm:", &prm) == 0 &&
             read_cap_line(status, "\nCapEff:", &eff) == 0 && read_cap_line(status, "\nCapBnd:", &bnd) == 0 &&
             read_cap_line(status, "\nCapAmb:", &amb) == 0;
    free(status);
    CHECK(ok);
    uint64_t want = kept_mask();
    if (inh != want || prm != want || eff != want || bnd != want || amb != 0) {
        fprintf(stderr, "child: caps inh %#llx prm %#llx eff %#llx bnd %#llx amb %#llx, want %#llx\n",
                (unsigned long long)inh, (unsigned long long)prm, (unsigned long long)eff,
                (unsigned long long)bnd, (unsigned long long)amb, (unsigned long long)want);
        return 1;
    }
    return 0;
}

static int do_caps_drop(void)
{
    if (do_caps_drop_check_sets() != 0)
        return 1;

    /* CAP_SYS_ADMIN is gone (no seccomp here: this is the capability check). */
    CHECK_ERRNO(unshare(CLONE_NEWNS), EPERM);
    CHECK_ERRNO(sethostname("cell-test", 9), EPERM);
    /* A kept one still works: CAP_CHOWN. */
    char path[] = "/tmp/cell-caps-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    int chowned = fchown(fd, 12345, 12345);
    int saved = errno;
    unlink(path);
    close(fd);
    errno = saved;
    CHECK(chowned == 0);
    /* Raising a dropped capability again is refused. */
    CHECK_ERRNO(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, 21UL /* SYS_ADMIN */, 0UL, 0UL), EPERM);
    return 0;
}

static void test_caps_drop(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    expect_ok(do_caps_drop, NO_FILTER);
}

/* As in the boot child: the drop happens inside a fresh user namespace,
 * where the process starts with every capability of that namespace. */
static int do_caps_drop_userns(void)
{
    if (unshare(CLONE_NEWUSER) < 0)
        return 77;   /* user namespaces unavailable here */
    return do_caps_drop_check_sets();
}

static void test_caps_drop_in_userns(void **state)
{
    (void)state;
    int status = run_child(do_caps_drop_userns, NO_FILTER);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
        skip();
    assert_exit_ok(status);
}

/* ---- main ---------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    cell_error err = { 0 };
    if (isolate_seccomp_build(&filter, &err) < 0) {
        print_error("isolate_seccomp_build: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    isolate_seccomp_free(&filter);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_and_free),
        cmocka_unit_test(test_prebuilt_matches_runtime_build),
        cmocka_unit_test(test_unshare_denied),
        cmocka_unit_test(test_clone_ns_denied),
        cmocka_unit_test(test_clone3_enosys),
        cmocka_unit_test(test_setns_denied),
        cmocka_unit_test(test_mounts_denied),
        cmocka_unit_test(test_kernel_surface_denied),
        cmocka_unit_test(test_host_state_denied),
        cmocka_unit_test(test_tiocsti_denied),
        cmocka_unit_test(test_personality),
        cmocka_unit_test(test_foreign_abi_killed),
        cmocka_unit_test(test_socket_families),
        cmocka_unit_test(test_ordinary_allowed),
        cmocka_unit_test(test_control_unfiltered),
        cmocka_unit_test(test_caps_kept_list),
        cmocka_unit_test(test_caps_drop),
        cmocka_unit_test(test_caps_drop_in_userns),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
