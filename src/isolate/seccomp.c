/* seccomp.c: the cell's syscall filter, built once in the owner with libseccomp
 * and exported to classic BPF, so the boot child installs it with one prctl(). */
#include "isolate/isolate.h"
#include "util/util.h"

#include <errno.h>
#include <linux/netlink.h>
#include <sched.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080   /* linux/sched.h, not in every libc */
#endif

/*
 * Policy.
 *
 * The default action is ALLOW: a cell is a general-purpose Linux userland
 * (compilers, package managers, language runtimes, browsers), and an allow
 * list would break it in ways that are hard to predict.  The isolation comes
 * first from the namespaces, the user namespace (uid 0 in a cell is an
 * unprivileged host uid and holds capabilities only over the cell's own
 * objects), the dropped capabilities and no_new_privs.  This filter removes
 * what remains reachable from that position and is either (a) kernel attack
 * surface with a history of privilege escalations that agent work does not
 * need, (b) a way to change the cell's own isolation (mounts, namespaces), or
 * (c) host-global state that should never be touched even if a capability
 * check were ever wrong.  Denied calls fail with EPERM, which programs handle
 * as "not permitted here", rather than killing the process.  One exception
 * to default-allow: socket families are an allow list (add_socket_rules),
 * since a family is a whole kernel subsystem and new ones keep appearing.
 *
 * Only the native x86_64 ABI is accepted.  i386 (int 0x80) and x32
 * (nr | 0x40000000) syscalls use different numbers, so a deny list written
 * for x86_64 would not apply to them: the bad-architecture action kills the
 * whole process.  libseccomp adds the x32 check for an x86_64-only filter.
 *
 * Syscalls newer than the running libseccomp are simply allowed by the
 * default action; names it does not know are skipped (see deny_table), except
 * where a number is given below for the mount-API calls we know of.
 */

/* x86_64 numbers for denied syscalls that libseccomp 2.5 does not know yet.
 * Used only when seccomp_syscall_resolve_name() fails on that name. */
#if defined(__x86_64__) && !defined(__ILP32__)
#define NR_OPEN_TREE_ATTR 467
#else
#define NR_OPEN_TREE_ATTR 0
#endif

struct denied {
    const char *name;
    int         fallback_nr;   /* native number if libseccomp lacks the name, 0 = skip */
};

/* Denied outright with EPERM.  Grouped by why. */
static const struct denied deny_table[] = {
    /* The cell's filesystem view is fixed by the boot child: mounting,
     * unmounting (which could uncover what a mount hides) and re-rooting are
     * the cell's own isolation, whether through the classic or the new mount
     * API.  chroot stays allowed: it only narrows the view, and the cell's
     * root is a pivot_root'ed mount namespace root, so a chroot escape ends at
     * the cell's own root. */
    { "mount", 0 },
    { "umount2", 0 },
    { "pivot_root", 0 },
    { "fsopen", 0 },
    { "fsconfig", 0 },
    { "fsmount", 0 },
    { "fspick", 0 },
    { "move_mount", 0 },
    { "open_tree", 0 },
    { "open_tree_attr", NR_OPEN_TREE_ATTR },
    { "mount_setattr", 0 },

    /* New namespaces (above all a new user namespace, which hands back every
     * capability inside it) are the usual first step of container escapes and
     * open kernel code (netfilter, mount) to an unprivileged caller.  setns
     * could only join namespaces whose fds leaked in, which must not happen
     * either.  clone with namespace flags is handled in add_clone_rules(). */
    { "setns", 0 },
    { "unshare", 0 },

    /* The kernel keyring is not namespaced: keys could cross cells (and it is
     * where host services keep secrets). */
    { "keyctl", 0 },
    { "add_key", 0 },
    { "request_key", 0 },

    /* Large kernel attack surface with a long CVE history, of no use to agent
     * work: eBPF, perf events, userfaultfd (the classic race-widening tool in
     * exploits) and io_uring (which also bypasses this filter: its operations
     * are not syscalls). */
    { "bpf", 0 },
    { "perf_event_open", 0 },
    { "userfaultfd", 0 },
    { "io_uring_setup", 0 },
    { "io_uring_enter", 0 },
    { "io_uring_register", 0 },

    /* Loading code into the kernel or replacing it. */
    { "kexec_load", 0 },
    { "kexec_file_load", 0 },
    { "init_module", 0 },
    { "finit_module", 0 },
    { "delete_module", 0 },
    { "create_module", 0 },        /* obsolete, kept denied in case */
    { "get_kernel_syms", 0 },
    { "query_module", 0 },

    /* Host-global state: accounting, swap, power, the kernel log (it leaks
     * kernel addresses and other cells' activity), the system clocks (time
     * namespaces do not cover CLOCK_REALTIME), quotas, sysctl, NFS server,
     * the controlling terminal of the host. */
    { "acct", 0 },
    { "swapon", 0 },
    { "swapoff", 0 },
    { "reboot", 0 },
    { "syslog", 0 },
    { "settimeofday", 0 },
    { "clock_settime", 0 },
    { "clock_adjtime", 0 },
    { "adjtimex", 0 },
    { "quotactl", 0 },
    { "quotactl_fd", 0 },
    { "_sysctl", 0 },
    { "nfsservctl", 0 },
    { "vhangup", 0 },

    /* open_by_handle_at opens any inode of a filesystem by its handle,
     * bypassing the mount (and so the cell's root): the "shocker" escape.
     * name_to_handle_at is its information-leaking half. */
    { "open_by_handle_at", 0 },
    { "name_to_handle_at", 0 },

    /* Obsolete or raw-hardware interfaces. */
    { "lookup_dcookie", 0 },
    { "uselib", 0 },
    { "iopl", 0 },
    { "ioperm", 0 },
};

/*
 * Deliberately allowed, though often found in deny lists:
 *  - ptrace, process_vm_readv/writev, kcmp, pidfd_getfd, process_madvise:
 *    debuggers and language tooling need them; they are gated by ptrace
 *    access checks (same credentials, or CAP_SYS_PTRACE which a cell never
 *    has), and the pid namespace means a cell can only name its own
 *    processes.  pidfd_getfd is no more than what ptrace already allows
 *    (injecting a dup() into the target).
 *  - chroot: see above.
 *  - sethostname/setdomainname: the cell has its own UTS namespace.
 */

/* Namespace flags refused on clone().  Each gets its own rule with a masked
 * equality on arg0, so one flag among others still matches.  CLONE_NEWTIME
 * shares its bit with the exit-signal byte of clone() and is only accepted by
 * clone3/unshare; a clone() with that bit would fail with EINVAL anyway, and
 * denying it costs nothing. */
static const uint64_t clone_ns_flags[] = {
    CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
    CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWCGROUP, CLONE_NEWTIME,
};

/* personality() values allowed (the set Docker allows): PER_LINUX (0),
 * PER_LINUX32 (0x0008), UNAME26 (0x20000), PER_LINUX32|UNAME26 and the query
 * 0xffffffff.  Everything else is refused, above all ADDR_NO_RANDOMIZE and
 * READ_IMPLIES_EXEC, which weaken exploit mitigations for later exec()s. */
#define PERSONA_OK_BITS ((1u << 3) | (1u << 17))

static void ctx_releasep(scmp_filter_ctx *ctx)
{
    if (*ctx)
        seccomp_release(*ctx);
}

static int add_rule(scmp_filter_ctx ctx, uint32_t action, const char *name, int nr,
                    unsigned int n_args, const struct scmp_arg_cmp *args, cell_error *err)
{
    int rc = seccomp_rule_add_array(ctx, action, nr, n_args, args);
    if (rc < 0)
        return util_fail(err, -rc, "seccomp: cannot add the rule for %s: %s", name, strerror(-rc));
    return 0;
}

/* The native number for `name`, or -1 when neither libseccomp nor the
 * fallback knows it: then the syscall does not exist for us to deny, or is
 * newer than both and stays allowed by the default action. */
static int resolve(const char *name, int fallback_nr)
{
    int n = seccomp_syscall_resolve_name(name);
    if (n == __NR_SCMP_ERROR)
        n = fallback_nr > 0 ? fallback_nr : -1;
    return n;
}

static int add_deny_table(scmp_filter_ctx ctx, cell_error *err)
{
    for (size_t i = 0; i < sizeof deny_table / sizeof deny_table[0]; i++) {
        int nr = resolve(deny_table[i].name, deny_table[i].fallback_nr);
        if (nr < 0)
            continue;
        if (add_rule(ctx, SCMP_ACT_ERRNO(EPERM), deny_table[i].name, nr, 0, NULL, err) < 0)
            return -1;
    }
    return 0;
}

static int add_clone_rules(scmp_filter_ctx ctx, cell_error *err)
{
    /* clone() passes its flags in a register the filter can read; clone3()
     * passes them in a struct in memory, which seccomp cannot inspect.  So
     * clone3 answers ENOSYS, exactly what an older kernel says, and glibc
     * (pthread_create, posix_spawn, fork) falls back to clone(), whose flags
     * are checked below. */
    if (add_rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", SCMP_SYS(clone3), 0, NULL, err) < 0)
        return -1;
    for (size_t i = 0; i < sizeof clone_ns_flags / sizeof clone_ns_flags[0]; i++) {
        struct scmp_arg_cmp cmp = SCMP_A0_64(SCMP_CMP_MASKED_EQ, clone_ns_flags[i], clone_ns_flags[i]);
        if (add_rule(ctx, SCMP_ACT_ERRNO(EPERM), "clone", SCMP_SYS(clone), 1, &cmp, err) < 0)
            return -1;
    }
    return 0;
}

/*
 * personality(): libseccomp accepts one comparison per argument in a rule, so
 * "none of five values" is written as a union of masked-equality rules, each
 * "bit b is 1 and bit c is 0" over the low 32 bits (the kernel takes an
 * unsigned int and ignores the upper half, and so do the masks).  Let O be
 * the 30 bits outside PERSONA_OK_BITS, in a cycle o_0..o_29.
 *   rules R_i:  o_i = 1 and o_(i+1 mod 30) = 0       (30 rules)
 *   rules S:    bit 0 = 1 and bit 3 = 0;  bit 0 = 1 and bit 17 = 0
 * A value with no bit of O set (0, 8, 0x20000, 0x20008) matches nothing,
 * since every rule needs a bit of O set; 0xffffffff matches nothing, since
 * every rule needs a bit clear.  Any other value has a bit of O set and
 * either a bit of O clear (then somewhere along the cycle a set bit is
 * followed by a clear one: some R_i), or all of O set and bit 3 or 17 clear
 * (bit 0 is in O and set: S).  So the rules match exactly the denied values.
 */
static int add_personality_rules(scmp_filter_ctx ctx, cell_error *err)
{
    int      outside[32];
    unsigned n = 0;
    for (unsigned b = 0; b < 32; b++)
        if (!(PERSONA_OK_BITS & (1u << b)))
            outside[n++] = (int)b;

    for (unsigned i = 0; i < n; i++) {
        uint64_t set = 1ull << outside[i];
        uint64_t clear = 1ull << outside[(i + 1) % n];
        struct scmp_arg_cmp cmp = SCMP_A0_64(SCMP_CMP_MASKED_EQ, set | clear, set);
        if (add_rule(ctx, SCMP_ACT_ERRNO(EPERM), "personality", SCMP_SYS(personality), 1, &cmp, err) < 0)
            return -1;
    }
    static const uint64_t ok_bits[] = { 1ull << 3, 1ull << 17 };
    for (size_t i = 0; i < 2; i++) {
        struct scmp_arg_cmp cmp = SCMP_A0_64(SCMP_CMP_MASKED_EQ, 1ull | ok_bits[i], 1ull);
        if (add_rule(ctx, SCMP_ACT_ERRNO(EPERM), "personality", SCMP_SYS(personality), 1, &cmp, err) < 0)
            return -1;
    }
    return 0;
}

static int add_ioctl_rules(scmp_filter_ctx ctx, cell_error *err)
{
    /* TIOCSTI pushes bytes into a terminal's input queue and TIOCLINUX
     * (subcode 2/3: selection paste) does the same on a VT: a process holding
     * an fd to a terminal it shares with a more privileged reader (an
     * interactive shell a user attached to the cell) could type commands
     * into it (CVE-2017-5226 and friends).  The kernel reads the request
     * as an unsigned int, so only the low 32 bits are compared: otherwise
     * 0x1_00005412 would slip past and still be TIOCSTI. */
    static const struct { uint64_t req; const char *name; } reqs[] = {
        { TIOCSTI, "ioctl(TIOCSTI)" },
        { TIOCLINUX, "ioctl(TIOCLINUX)" },
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        struct scmp_arg_cmp cmp = SCMP_A1_64(SCMP_CMP_MASKED_EQ, 0xffffffffull, reqs[i].req);
        if (add_rule(ctx, SCMP_ACT_ERRNO(EPERM), reqs[i].name, SCMP_SYS(ioctl), 1, &cmp, err) < 0)
            return -1;
    }
    return 0;
}

/*
 * Socket families: an allow list inside the default-allow filter.  A cell
 * gets AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK with NETLINK_ROUTE (reading
 * its own addresses and routes; changes need CAP_NET_ADMIN over the netns,
 * which the cell lacks).  Every other family is refused, including numbers
 * the kernel adds later, because several of them reach objects no namespace
 * contains: AF_VSOCK ignores network namespaces (on a VM it is the host's
 * port space and a path to the hypervisor around the egress policy),
 * AF_PACKET/AF_XDP see raw frames, AF_ALG, AF_TIPC, AF_RDS, AF_CAN,
 * AF_BLUETOOTH and AF_KEY are large, rarely used kernel code.  Other netlink
 * protocols are refused too: uevent carries the host's device events into a
 * netns owned by the initial user namespace, audit and sock_diag and the rest
 * are host or kernel interfaces agent work does not need.
 *
 * The refusal is EAFNOSUPPORT for a family and EPROTONOSUPPORT for a
 * netlink protocol: what a kernel built without them answers, so programs
 * take the "not available here" path (Python's socket tests, glibc's
 * getaddrinfo, udev clients), where EPERM would read as a policy error some
 * of them treat as fatal.
 *
 * The kernel reads family and protocol as int; the rules compare all 64
 * bits, so a value with high bits set is refused even if its low half names
 * an allowed family (failing closed).  socketpair() takes the same list.
 */
static const uint64_t sock_families_allowed[] = { AF_UNIX, AF_INET, AF_INET6, AF_NETLINK };
#define SOCK_FAMILY_MAX_ALLOWED AF_NETLINK   /* the highest of them */

static int family_allowed(uint64_t family)
{
    for (size_t i = 0; i < sizeof sock_families_allowed / sizeof *sock_families_allowed; i++)
        if (sock_families_allowed[i] == family)
            return 1;
    return 0;
}

static int add_socket_rules(scmp_filter_ctx ctx, cell_error *err)
{
    static const char *const calls[] = { "socket", "socketpair" };
    for (size_t c = 0; c < 2; c++) {
        int nr = resolve(calls[c], 0);
        if (nr < 0)
            continue;
        /* One rule per refused number up to the highest allowed one, and one
         * for everything above it: libseccomp takes one comparison per
         * argument, so "not one of" is a union of rules.  (datum_b is
         * unused by these operators; given so every field is set.) */
        for (uint64_t f = 0; f < SOCK_FAMILY_MAX_ALLOWED; f++) {
            if (family_allowed(f))
                continue;
            struct scmp_arg_cmp cmp = SCMP_A0_64(SCMP_CMP_EQ, f, 0);
            if (add_rule(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), calls[c], nr, 1, &cmp, err) < 0)
                return -1;
        }
        struct scmp_arg_cmp above = SCMP_A0_64(SCMP_CMP_GT, SOCK_FAMILY_MAX_ALLOWED, 0);
        if (add_rule(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), calls[c], nr, 1, &above, err) < 0)
            return -1;
        struct scmp_arg_cmp netlink[2] = { SCMP_A0_64(SCMP_CMP_EQ, AF_NETLINK, 0),
                                           SCMP_A2_64(SCMP_CMP_NE, NETLINK_ROUTE, 0) };
        if (add_rule(ctx, SCMP_ACT_ERRNO(EPROTONOSUPPORT), calls[c], nr, 2, netlink, err) < 0)
            return -1;
    }
    return 0;
}

/* Write the classic BPF program into a memfd and read it back into `out`. */
static int export_bpf(scmp_filter_ctx ctx, struct sock_fprog *out, cell_error *err)
{
    _cleanup_close_ int fd = memfd_create("cell-seccomp", MFD_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "seccomp: memfd_create");
    int rc = seccomp_export_bpf(ctx, fd);
    if (rc < 0)
        return util_fail(err, -rc, "seccomp: cannot export the filter: %s", strerror(-rc));

    struct stat st;
    if (fstat(fd, &st) < 0)
        return util_fail_errno(err, "seccomp: fstat of the exported filter");
    size_t size = (size_t)st.st_size;
    if (size == 0 || size % sizeof(struct sock_filter) != 0 ||
        size / sizeof(struct sock_filter) > BPF_MAXINSNS)
        return util_fail(err, EINVAL, "seccomp: exported filter has a bad size (%zu bytes)", size);

    _cleanup_free_ struct sock_filter *insns = malloc(size);
    if (!insns)
        return util_fail(err, ENOMEM, "seccomp: cannot allocate %zu bytes for the filter", size);
    if (lseek(fd, 0, SEEK_SET) < 0)
        return util_fail_errno(err, "seccomp: lseek in the exported filter");
    ssize_t n = util_read_all(fd, insns, size);
    if (n < 0)
        return util_fail_errno(err, "seccomp: reading back the exported filter");
    if ((size_t)n != size)
        return util_fail(err, EIO, "seccomp: short read of the exported filter (%zd of %zu bytes)", n, size);

    out->len = (unsigned short)(size / sizeof(struct sock_filter));
    out->filter = insns;
    insns = NULL;
    return 0;
}

/* A fresh filter context with the attributes both filters share. */
static scmp_filter_ctx new_filter(cell_error *err)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        util_fail(err, ENOMEM, "seccomp: seccomp_init failed");
        return NULL;
    }
    int rc;
    /* Kill the whole process (not just the thread, which could leave the
     * rest of a program in an inconsistent state) on a foreign ABI. */
    if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)) < 0 ||
        /* The boot child sets no_new_privs itself, right before the prctl();
         * the filter is never loaded through libseccomp. */
        (rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)) < 0 ||
        /* Every syscall in the cell runs this program and nearly all of them
         * are allowed, so a binary search on the syscall number beats the
         * default linear chain of comparisons. */
        (rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2)) < 0) {
        util_fail(err, -rc, "seccomp: cannot set filter attributes: %s", strerror(-rc));
        seccomp_release(ctx);
        return NULL;
    }
    return ctx;
}

int isolate_seccomp_build(struct sock_fprog *out, cell_error *err)
{
    out->len = 0;
    out->filter = NULL;
    __attribute__((cleanup(ctx_releasep))) scmp_filter_ctx ctx = new_filter(err);
    if (!ctx)
        return -1;
    if (add_deny_table(ctx, err) < 0 || add_clone_rules(ctx, err) < 0 ||
        add_personality_rules(ctx, err) < 0 || add_ioctl_rules(ctx, err) < 0 ||
        add_socket_rules(ctx, err) < 0)
        return -1;
    return export_bpf(ctx, out, err);
}

/* Syscalls that take a file mode, and the index of that argument.  A mode
 * with S_ISUID or S_ISGID is refused: through a read-write host mount such a
 * file would be a setuid-root (or setgid) program on the host.  fchmodat2
 * (Linux 6.6) is newer than libseccomp 2.5, hence its number. */
static const struct mode_arg {
    const char *name;
    int         fallback_nr;
    unsigned    arg;
} mode_args[] = {
    { "chmod", 0, 1 }, { "fchmod", 0, 1 }, { "fchmodat", 0, 2 }, { "fchmodat2", 452, 2 },
    { "creat", 0, 1 }, { "open", 0, 2 }, { "openat", 0, 3 }, { "mkdir", 0, 1 },
    { "mkdirat", 0, 2 }, { "mknod", 0, 1 }, { "mknodat", 0, 2 },
};

int isolate_seccomp_build_nosuid(struct sock_fprog *out, cell_error *err)
{
    out->len = 0;
    out->filter = NULL;
    __attribute__((cleanup(ctx_releasep))) scmp_filter_ctx ctx = new_filter(err);
    if (!ctx)
        return -1;
    static const scmp_datum_t bits[] = { S_ISUID, S_ISGID };
    for (size_t i = 0; i < sizeof mode_args / sizeof *mode_args; i++) {
        int nr = resolve(mode_args[i].name, mode_args[i].fallback_nr);
        if (nr < 0)
            continue;
        for (size_t b = 0; b < 2; b++) {
            struct scmp_arg_cmp cmp = SCMP_CMP(mode_args[i].arg, SCMP_CMP_MASKED_EQ, bits[b], bits[b]);
            if (add_rule(ctx, SCMP_ACT_ERRNO(EPERM), mode_args[i].name, nr, 1, &cmp, err) < 0)
                return -1;
        }
    }
    /* openat2 takes its mode inside a struct a filter cannot read; ENOSYS
     * makes callers fall back to openat, which is checked. */
    int nr = resolve("openat2", 437);
    if (nr >= 0 && add_rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "openat2", nr, 0, NULL, err) < 0)
        return -1;
    return export_bpf(ctx, out, err);
}

void isolate_seccomp_free(struct sock_fprog *prog)
{
    if (!prog)
        return;
    free(prog->filter);
    prog->filter = NULL;
    prog->len = 0;
}
