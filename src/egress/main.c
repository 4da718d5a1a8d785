/* cell-egress: one policed cell's egress engine (src/net/engine.c) in a
 * process of its own, started by the cell's owner (src/net/sep.c) with the
 * protocol of src/net/sep.h on fd NET_SEP_FD.  It parses what the cell sends
 * (DNS, HTTP, TLS), so once its privileged set-up is done (the cell's netns
 * entered, rules in, listeners and the fast path's queue open, the CA and
 * trust store loaded) it confines itself before serving anything:
 *   - an empty read-only root (a tmpfs in a mount namespace of its own),
 *   - uid/gid NET_SEP_UID/GID, no supplementary groups,
 *   - capabilities per thread (engine.c starts its threads between calls
 *     of hook_confine): the fast path's thread CAP_NET_ADMIN (NFQUEUE
 *     verdicts and conntrack queries are nfnetlink messages, which the
 *     kernel checks for it at each send), the UDP thread CAP_NET_RAW
 *     (IP_TRANSPARENT on its reply sockets), every other thread none; the
 *     bounding set is those two,
 *   - not dumpable, no_new_privs, and a seccomp allow-list (libseccomp):
 *     no exec, no open, no raw sockets, no netlink but rtnetlink, signals
 *     only to itself, threads only (no fork).
 * The owner's secrets, audit log and webhooks are reached by requests; an
 * owner that goes away ends it (the cell's network goes with it). */
#include "net/net.h"
#include "net/sep.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/netlink.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SECRET_TIMEOUT_MS 10000
#define MAX_WAITERS       256

typedef struct waiter {
    uint32_t seq;
    int      used, done;
    int32_t  err;
    uint32_t allow;
    char    *value;           /* an answer's s0 (a secret): wiped when freed */
} waiter;

typedef struct helper {
    int             ctl;
    int             netns_fd;   /* the START message's, closed at confinement */
    int             confined;
    uid_t           uid;
    gid_t           gid;
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    uint32_t        seq;
    waiter          w[MAX_WAITERS];
} helper;

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* ---- requests to the owner ------------------------------------------------ */
/* Send a request and wait (bounded) for its ANSWER; 0 with *out filled, or
 * -1 if the owner did not answer in time (the caller denies). */
static int ask(helper *h, uint32_t type, const uint32_t *u, const char *const *s, uint32_t n, int timeout_ms,
               waiter *out)
{
    pthread_mutex_lock(&h->lock);
    waiter *w = NULL;
    for (size_t i = 0; i < MAX_WAITERS && !w; i++)
        if (!h->w[i].used)
            w = &h->w[i];
    if (!w) {
        pthread_mutex_unlock(&h->lock);
        return -1;
    }
    *w = (waiter){ .seq = ++h->seq, .used = 1 };
    uint32_t seq = w->seq;
    pthread_mutex_unlock(&h->lock);
    int rc = ctl_send(h->ctl, type, seq, 0, u, s, n, NULL, 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&h->lock);
    int te = 0;
    while (rc == 0 && !w->done && te == 0)
        te = pthread_cond_timedwait(&h->cond, &h->lock, &until);
    if (rc == 0 && w->done) {
        *out = *w;
    } else {
        rc = -1;
        wipe_free(w->value);
    }
    *w = (waiter){ 0 };
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static void on_answer(helper *h, ctl_msg *m)
{
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < MAX_WAITERS; i++) {
        waiter *w = &h->w[i];
        if (!w->used || w->done || w->seq != m->seq)
            continue;
        w->done = 1;
        w->err = m->err;
        w->allow = m->u[0];
        w->value = m->nstr == 1 ? strdup(m->str[0]) : NULL;
        pthread_cond_broadcast(&h->cond);
        break;
    }
    pthread_mutex_unlock(&h->lock);
    if (m->nstr == 1)
        OPENSSL_cleanse(m->buf, strlen(m->str[0]));
}

/* ---- the engine's hooks ------------------------------------------------------- */
static int hook_decide(void *user, const cell_net_flow *f, const char *url, int timeout_ms)
{
    (void)url;   /* the owner takes it from its own copy of the policy */
    uint32_t u[CTL_NU] = { (uint32_t)f->rule, strcmp(f->transport, "udp") == 0 ? NET_UDP : NET_TCP, f->host != NULL };
    const char *s[3] = { f->src, f->dst, f->host ? f->host : "" };
    waiter w;
    /* The owner answers within the rule's timeout; a little more for the trip. */
    if (ask(user, NET_SEP_DECIDE, u, s, 3, timeout_ms + 2000, &w) < 0)
        return 0;
    wipe_free(w.value);
    return w.err == 0 && w.allow == 1;
}

static void hook_event(void *user, const char *json)
{
    helper *h = user;
    const char *s[1] = { json };
    if (ctl_send(h->ctl, NET_SEP_EVENT, 0, 0, NULL, s, 1, NULL, 0) < 0) {
        /* lost only if the owner is gone, and then so is this process */
    }
}

static int hook_secret(void *user, const char *name, char **value, size_t *len)
{
    const char *s[1] = { name };
    waiter w;
    if (ask(user, NET_SEP_SECRET, NULL, s, 1, SECRET_TIMEOUT_MS, &w) < 0)
        return -1;
    if (w.err != 0 || !w.value) {
        wipe_free(w.value);
        return -1;
    }
    *value = w.value;
    *len = strlen(w.value);
    return 0;
}

/* ---- confinement ------------------------------------------------------------------ */
static int add_rule(scmp_filter_ctx f, uint32_t action, const char *name, unsigned n, const struct scmp_arg_cmp *a)
{
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR)
        return 0;     /* not on this architecture */
    return seccomp_rule_add_array(f, action, nr, n, a);
}

/* One argument comparison (libseccomp's SCMP_A* leave datum_b implicit,
 * which clang's -Wmissing-field-initializers refuses). */
static struct scmp_arg_cmp arg(unsigned i, enum scmp_compare op, scmp_datum_t a, scmp_datum_t b)
{
    return (struct scmp_arg_cmp){ .arg = i, .op = op, .datum_a = a, .datum_b = b };
}

/* What the engine's threads do after set-up, and nothing else. */
static int load_filter(cell_error *err)
{
    static const char *const allow[] = {
        "read", "write", "readv", "writev", "pread64", "close", "lseek", "fstat", "newfstatat", "fcntl", "dup",
        "poll", "ppoll", "accept", "accept4", "connect", "bind", "listen", "getsockname", "getpeername",
        "setsockopt", "getsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
        "splice", "pipe2", "futex", "mmap", "munmap", "mprotect", "madvise", "mremap", "brk", "set_robust_list",
        "rseq", "rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "sigaltstack", "exit", "exit_group",
        "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "getrandom", "gettid",
        "getpid", "sched_yield", "sched_getaffinity", "eventfd2", "restart_syscall", "getuid", "geteuid",
        "getgid", "getegid", "prlimit64", "uname", "sysinfo", "capget",
        "capset",   /* narrowing only: permitted capabilities cannot grow */
        "seccomp",  /* more filters only: one more on the fast path's thread */
    };
    scmp_filter_ctx f = seccomp_init(SCMP_ACT_KILL_PROCESS);
    if (!f)
        return util_fail(err, ENOMEM, "seccomp_init");
    int rc = seccomp_attr_set(f, SCMP_FLTATR_CTL_TSYNC, 1);
    for (size_t i = 0; rc == 0 && i < sizeof allow / sizeof allow[0]; i++)
        rc = add_rule(f, SCMP_ACT_ALLOW, allow[i], 0, NULL);
    /* Sockets: TCP and UDP over IPv4/IPv6 (upstreams, DNS, UDP reply
     * sockets; no raw ones), and rtnetlink for reading the host's addresses
     * and routes (screen.c's host-self, fast.c): only the fast path's thread
     * has CAP_NET_ADMIN, which writing them would take.  The netfilter
     * sockets were opened in set-up, in the cell's netns. */
    static const int families[] = { AF_INET, AF_INET6 }, types[] = { SOCK_STREAM, SOCK_DGRAM };
    for (size_t i = 0; rc == 0 && i < 4; i++) {
        struct scmp_arg_cmp a[2] = { arg(0, SCMP_CMP_EQ, (scmp_datum_t)families[i / 2], 0),
                                     arg(1, SCMP_CMP_MASKED_EQ, 0xf, (scmp_datum_t)types[i % 2]) };
        rc = add_rule(f, SCMP_ACT_ALLOW, "socket", 2, a);
    }
    struct scmp_arg_cmp route[2] = { arg(0, SCMP_CMP_EQ, AF_NETLINK, 0), arg(2, SCMP_CMP_EQ, NETLINK_ROUTE, 0) };
    struct scmp_arg_cmp thread = arg(0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD);
    struct scmp_arg_cmp self = arg(0, SCMP_CMP_EQ, (scmp_datum_t)getpid(), 0);
    if (rc == 0)
        rc = add_rule(f, SCMP_ACT_ALLOW, "socket", 2, route);
    if (rc == 0)   /* threads, never processes */
        rc = add_rule(f, SCMP_ACT_ALLOW, "clone", 1, &thread);
    if (rc == 0)   /* clone3's flags are out of a filter's reach: glibc falls back to clone */
        rc = add_rule(f, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL);
    if (rc == 0)   /* raise(), abort(): to itself only */
        rc = add_rule(f, SCMP_ACT_ALLOW, "tgkill", 1, &self);
    /* Nothing to open in an empty root; fail politely (lazy loaders). */
    if (rc == 0)
        rc = add_rule(f, SCMP_ACT_ERRNO(EACCES), "openat", 0, NULL);
    if (rc == 0)
        rc = add_rule(f, SCMP_ACT_ERRNO(EACCES), "open", 0, NULL);
    /* Sanitizer reports look up /proc/self/exe: let them print instead. */
    if (rc == 0)
        rc = add_rule(f, SCMP_ACT_ERRNO(ENOENT), "readlink", 0, NULL);
    if (rc == 0)
        rc = add_rule(f, SCMP_ACT_ERRNO(ENOENT), "readlinkat", 0, NULL);
    if (rc == 0)
        rc = seccomp_load(f);
    seccomp_release(f);
    if (rc < 0) {
        errno = -rc;
        return util_fail_errno(err, "loading the egress helper's seccomp filter");
    }
    return 0;
}

/* The calling thread's capabilities, effective and permitted, become `caps`
 * (a subset of what it has: permitted ones can only be dropped). */
static int keep_caps(uint64_t caps, cell_error *err)
{
    struct __user_cap_header_struct hd = { .version = _LINUX_CAPABILITY_VERSION_3 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    for (int i = 0; i < 2; i++)
        d[i].effective = d[i].permitted = (uint32_t)(caps >> (32 * i));
    if (syscall(SYS_capset, &hd, d) < 0)
        return util_fail_errno(err, "keeping capabilities %#llx", (unsigned long long)caps);
    return 0;
}

/* uid/gid, groups, bounding set: threads made before (the netns thread)
 * lose every capability at the uid change, having no keep-caps. */
static int drop_privileges(const helper *h, uint64_t caps, cell_error *err)
{
    for (int c = 0; prctl(PR_CAPBSET_READ, c, 0, 0, 0) >= 0; c++)
        if (!(c < 64 && (caps >> c & 1)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0)
            return util_fail_errno(err, "dropping capability %d from the bounding set", c);
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 || setgroups(0, NULL) < 0 || setresgid(h->gid, h->gid, h->gid) < 0 ||
        setresuid(h->uid, h->uid, h->uid) < 0 || prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
        return util_fail_errno(err, "changing to uid %u gid %u", (unsigned)h->uid, (unsigned)h->gid);
    if (keep_caps(caps, err) < 0)
        return -1;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 ||
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return util_fail_errno(err, "prctl");
    return 0;
}

/* The first call confines the process; later ones narrow the calling
 * thread's capabilities before the engine starts another thread. */
static int hook_confine(void *user, uint64_t caps, cell_error *err)
{
    helper *h = user;
    if (h->confined)
        return keep_caps(caps, err);
    close(h->netns_fd);         /* the cell's init's pidfd: nothing to do with it any more */
    h->netns_fd = -1;
    /* An empty read-only root: this process's mount namespace is its own
     * (main), so the tmpfs over /tmp is seen by nobody else. */
    if (mount("cell-egress", "/tmp", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555") < 0 ||
        chdir("/tmp") < 0 || chroot(".") < 0 || chdir("/") < 0)
        return util_fail_errno(err, "changing root to an empty directory");
    if (drop_privileges(h, caps, err) < 0 || load_filter(err) < 0)
        return -1;
    h->confined = 1;
    return 0;
}

/* The fast path's thread keeps CAP_NET_ADMIN; a second filter on it alone
 * (no TSYNC) refuses new sockets, so every socket it could write to in the
 * host's netns was opened by a thread without that capability, and the
 * kernel refuses route and link changes through those. */
static int hook_confine_thread(void *user)
{
    (void)user;
    scmp_filter_ctx f = seccomp_init(SCMP_ACT_ALLOW);
    if (!f)
        return -1;
    /* no_new_privs is set already (and prctl is not allowed any more). */
    int rc = seccomp_attr_set(f, SCMP_FLTATR_CTL_NNP, 0);
    if (rc == 0)
        rc = add_rule(f, SCMP_ACT_ERRNO(EPERM), "socket", 0, NULL);
    if (rc == 0)
        rc = add_rule(f, SCMP_ACT_ERRNO(EPERM), "socketpair", 0, NULL);
    if (rc == 0)
        rc = seccomp_load(f);
    seccomp_release(f);
    return rc < 0 ? -1 : 0;
}

/* ---- test hook --------------------------------------------------------------------- */
/* CELL_EGRESS_TEST_ASK_SECRET=NAME in the owner's environment (the owner
 * passes it on): once serving, the helper asks the owner for secret NAME as
 * a compromised helper would, whatever its policy says, and records only
 * whether it got a value ({"event": "test-secret", "name", "got"}).  Lets
 * test_egress_helper.py check the owner's refusal end to end. */
static void *test_ask_main(void *arg)
{
    helper *h = arg;
    const char *name = getenv("CELL_EGRESS_TEST_ASK_SECRET");
    char *value = NULL, rec[256];
    size_t len = 0;
    int got = hook_secret(h, name, &value, &len) == 0;
    if (value) {
        OPENSSL_cleanse(value, len);
        free(value);
    }
    snprintf(rec, sizeof rec, "{\"event\":\"test-secret\",\"name\":\"%.64s\",\"got\":%s}", name,
             got ? "true" : "false");
    hook_event(h, rec);
    return NULL;
}

static void test_hook(helper *h)
{
    const char *name = getenv("CELL_EGRESS_TEST_ASK_SECRET");
    pthread_t t;
    if (name && util_valid_name(name) && pthread_create(&t, NULL, test_ask_main, h) == 0)
        pthread_detach(t);
}

/* ---- main ------------------------------------------------------------------------ */
static int ready(helper *h, net_engine *e, int rc, const cell_error *err)
{
    char *pem = NULL;
    size_t len;
    cell_error perr = { 0 };
    if (rc == 0 && net_engine_ca_pem(e, &pem, &len, &perr) < 0)
        rc = -1, err = &perr;
    const char *s[1] = { rc == 0 ? pem : err->message };
    int sent = ctl_send(h->ctl, NET_SEP_READY, 0, rc == 0 ? 0 : (err->code ? err->code : EIO), NULL, s, 1, NULL, 0);
    free(pem);
    return rc == 0 && sent == 0 ? 0 : -1;
}

static int serve(helper *h, net_engine *e)
{
    for (;;) {
        ctl_msg m;
        if (ctl_recv(h->ctl, &m) < 0) {
            if (errno == EBADMSG)
                continue;
            return 0;   /* the owner is gone: so is the cell's network */
        }
        cell_error err = { 0 };
        int rc = 0;
        switch (m.type) {
        case NET_SEP_ANSWER:
            on_answer(h, &m);
            break;
        case NET_SEP_POLICY:
            rc = m.nstr == 1 ? net_engine_set_policy(e, m.str[0], &err) : util_fail(&err, EINVAL, "bad request");
            break;
        case NET_SEP_STOP:
            net_engine_stop(e);   /* the last records go out first */
            break;
        default:
            break;
        }
        if (m.type == NET_SEP_POLICY || m.type == NET_SEP_STOP) {
            const char *s[1] = { rc == 0 ? "" : err.message };
            if (ctl_send(h->ctl, NET_SEP_REPLY, m.seq, rc == 0 ? 0 : err.code, NULL, s, 1, NULL, 0) < 0) { /* owner gone */ }
        }
        uint32_t type = m.type;
        ctl_msg_free(&m);
        if (type == NET_SEP_STOP)
            return 0;
    }
}

int main(void)
{
    static helper h = { .ctl = NET_SEP_FD, .netns_fd = -1 };
    pthread_mutex_init(&h.lock, NULL);
    pthread_cond_init(&h.cond, NULL);
    signal(SIGPIPE, SIG_IGN);
    ctl_msg m;
    if (ctl_recv(h.ctl, &m) < 0)
        _exit(2);
    cell_error err = { 0 };
    net_engine *e = NULL;
    int rc = -1;
    if (m.type != NET_SEP_START || m.nstr != 4 || m.nfds != 1)
        util_fail(&err, EPROTO, "egress helper: unexpected start message");
    /* Its own mount namespace, while it is one thread: for the empty root. */
    else if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        util_fail_errno(&err, "egress helper: mount namespace");
    else {
        h.netns_fd = ctl_take_fd(&m, 0);
        h.uid = m.u[0];
        h.gid = m.u[1];
        net_hooks hooks = { .decide = hook_decide, .event = hook_event, .secret = hook_secret, .user = &h,
                            .upstream_ca_file = m.str[2][0] ? m.str[2] : NULL, .ca_dir = m.str[3][0] ? m.str[3] : NULL,
                            .confine = hook_confine, .confine_thread = hook_confine_thread, .pod = m.u[2] == 1 };
        rc = net_engine_start(&e, h.netns_fd, m.str[0], m.str[1], &hooks, &err);
    }
    ctl_msg_free(&m);
    if (ready(&h, e, rc, &err) < 0)
        _exit(1);
    test_hook(&h);
    serve(&h, e);
    /* No exit handlers, no leak check: the sockets go with the process. */
    _exit(0);
}
