/* sep.c: the owner's side of a policed cell's egress engine.  The engine
 * parses what the cell sends (DNS, HTTP, TLS), so it does not run in the
 * owner (the CLI, or the root daemon with every tenant's tokens and
 * secrets): each policed cell gets a helper process, cell-egress, embedded
 * here like cell-init and exec'd from a sealed memfd.  The helper does the
 * privileged set-up, drops to an unprivileged uid with one capability under
 * a seccomp allow-list (src/egress/main.c), and asks the owner, over a
 * socketpair, for what only the owner has: decide webhooks, the audit log,
 * and each secret an http rule of the cell's current policy names.
 * Everything the helper sends is checked as if the cell had written it;
 * a helper that breaks the protocol is killed.  When the helper is gone the
 * cell's network is cut (fail closed) and the owner records why. */
#include "net/net.h"
#include "net/netns.h"
#include "net/policy.h"
#include "net/screen.h"
#include "net/sep.h"
#include "runtime/plugin.h"
#include "util/util.h"

#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern const char cell_egress_blob_start[];
extern const char cell_egress_blob_end[];

#define START_TIMEOUT_MS   30000   /* netns rules, CA, listeners */
#define REQUEST_TIMEOUT_MS 15000   /* POLICY, STOP */

struct net_engine {
    char            cell_id[40];
    net_hooks       hooks;
    int             sock;            /* to the helper */
    int             netns_fd;        /* the caller's, duplicated: to cut the cell off */
    pid_t           pid;             /* the helper; 0 once reaped (by the reader only) */
    pthread_t       reader;
    int             reader_on;
    pthread_mutex_t lock;            /* everything below */
    pthread_cond_t  cond;
    pthread_mutex_t call;            /* one POLICY or STOP in flight */
    net_policy     *policy;          /* the owner's copy: DECIDE and SECRET are checked against it */
    char           *ca_pem;
    size_t          ca_len;
    uint32_t        seq, want_seq;
    int             got, reply_err;
    char            reply_msg[256];
    int             dead, stopping;
    int             asks;            /* decide threads running */
};

static void sep_stop(net_engine *e);

static int bad_msg(void)
{
    errno = EBADMSG;
    return -1;
}

static int sep_policy_check(const char *policy_json, cell_error *err)
{
    net_policy *p;
    if (!policy_json)
        return util_fail(err, EINVAL, "policy: a JSON document is required");
    if (net_policy_parse(policy_json, strlen(policy_json), &p, err) < 0)
        return -1;
    net_policy_unref(p);
    return 0;
}

/* ---- the helper's executable ------------------------------------------------ */
static pthread_once_t exe_once = PTHREAD_ONCE_INIT;
static int exe_fd = -1, exe_errno;

static void make_exe_fd(void)
{
    size_t len = (size_t)(cell_egress_blob_end - cell_egress_blob_start);
    cell_error err = { 0 };
    if ((exe_fd = util_sealed_memfd("cell-egress", cell_egress_blob_start, len, &err)) < 0)
        exe_errno = err.code;
}

/* Between fork and exec: async-signal-safe calls only (the owner may be
 * the multi-threaded daemon).  The helper gets /dev/null as stdin and
 * stdout, the owner's stderr, the socket as NET_SEP_FD and nothing else. */
static void __attribute__((noreturn)) helper_child(int sock, int exe, char *const envp[])
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();       /* the terminal's signals (^C to `cell run`) are not for it */
    int s = fcntl(sock, F_DUPFD, 10), x = fcntl(exe, F_DUPFD, 10), null = open("/dev/null", O_RDWR);
    if (s < 0 || x < 0 || null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(s, NET_SEP_FD) < 0 ||
        dup2(x, NET_SEP_FD + 1) < 0 || fcntl(NET_SEP_FD + 1, F_SETFD, FD_CLOEXEC) < 0 ||
        syscall(SYS_close_range, NET_SEP_FD + 2, ~0u, 0) < 0)
        _exit(127);
    char *const argv[] = { "cell-egress", NULL };
    syscall(SYS_execveat, NET_SEP_FD + 1, "", argv, envp, AT_EMPTY_PATH);
    _exit(127);
}

/* The environment the helper gets: the engine's settings and, in
 * sanitizer builds, the sanitizers'. */
static void helper_env(char *env[], size_t max, char store[][512])
{
    static const char *const keep[] = { "CELL_EGRESS_FAST", "CELL_EGRESS_SUBNET", "ASAN_OPTIONS", "UBSAN_OPTIONS",
                                        "LSAN_OPTIONS", "CELL_EGRESS_TEST_ASK_SECRET" };
    size_t n = 0;
    for (size_t i = 0; i < sizeof keep / sizeof keep[0] && n + 1 < max; i++) {
        const char *v = getenv(keep[i]);
        if (v && snprintf(store[n], 512, "%s=%s", keep[i], v) < 512)
            env[n] = store[n], n++;
    }
    env[n] = NULL;
}

static int spawn_helper(net_engine *e, cell_error *err)
{
    pthread_once(&exe_once, make_exe_fd);
    if (exe_fd < 0) {
        errno = exe_errno;
        return util_fail_errno(err, "cannot prepare the egress helper");
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return util_fail_errno(err, "socketpair for the egress helper");
    char *env[8], store[8][512];
    helper_env(env, 8, store);
    pid_t pid = fork();
    if (pid == 0)
        helper_child(sv[1], exe_fd, env);
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        return util_fail_errno(err, "cannot start the egress helper");
    }
    e->pid = pid;
    e->sock = sv[0];
    return 0;
}

/* ---- requests from the helper ------------------------------------------------- */
typedef struct ask {
    net_engine            *e;
    uint32_t               seq;
    net_policy            *policy;    /* holds rule */
    const net_decide_rule *rule;
    cell_net_flow          f;
    char                   transport[4], src[NET_SEP_MAX_ADDR + 1], dst[NET_SEP_MAX_ADDR + 1],
                           host[NET_SEP_MAX_HOST + 1];
} ask;

static void answer(net_engine *e, uint32_t seq, int32_t code, uint32_t allow, const char *value)
{
    uint32_t u[CTL_NU] = { allow };
    const char *s[1] = { value };
    if (ctl_send(e->sock, NET_SEP_ANSWER, seq, code, u, s, value ? 1 : 0, NULL, 0) < 0) {
        /* the helper is gone: the reader notices and cuts the cell off */
    }
}

static void *ask_main(void *arg)
{
    ask *a = arg;
    net_engine *e = a->e;
    int allow = e->hooks.decide(e->hooks.user, &a->f, a->rule->url, a->rule->timeout_ms) == 1;
    answer(e, a->seq, 0, (uint32_t)allow, NULL);
    net_policy_unref(a->policy);
    free(a);
    pthread_mutex_lock(&e->lock);
    if (--e->asks == 0)
        pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

static net_policy *owner_policy(net_engine *e)
{
    pthread_mutex_lock(&e->lock);
    net_policy *p = net_policy_ref(e->policy);
    pthread_mutex_unlock(&e->lock);
    return p;
}

/* A decide webhook is asked on a thread of its own (it may take the rule's
 * timeout); at most NET_SEP_MAX_ASKS at once, beyond that the flow is denied. */
static int on_decide(net_engine *e, const ctl_msg *m)
{
    net_policy *p = owner_policy(e);
    cell_net_flow f;
    const net_decide_rule *rule;
    if (net_sep_decide(m, p, e->cell_id, &f, &rule) < 0) {
        net_policy_unref(p);
        if (errno != ENOENT)
            return -1;
        answer(e, m->seq, 0, 0, NULL);   /* the policy changed under the question */
        return 0;
    }
    ask *a = e->hooks.decide ? calloc(1, sizeof *a) : NULL;
    pthread_mutex_lock(&e->lock);
    int room = a && e->asks < NET_SEP_MAX_ASKS && !e->stopping;
    if (room)
        e->asks++;
    pthread_mutex_unlock(&e->lock);
    if (!room) {
        free(a);
        net_policy_unref(p);
        answer(e, m->seq, 0, 0, NULL);
        return 0;
    }
    *a = (ask){ .e = e, .seq = m->seq, .policy = p, .rule = rule, .f = f };
    snprintf(a->transport, sizeof a->transport, "%s", f.transport);
    snprintf(a->src, sizeof a->src, "%s", f.src);
    snprintf(a->dst, sizeof a->dst, "%s", f.dst);
    snprintf(a->host, sizeof a->host, "%s", f.host ? f.host : "");
    a->f.transport = a->transport;
    a->f.src = a->src;
    a->f.dst = a->dst;
    a->f.host = f.host ? a->host : NULL;
    if (util_thread_detached(ask_main, a) != 0) {
        net_policy_unref(p);
        free(a);
        pthread_mutex_lock(&e->lock);
        e->asks--;
        pthread_mutex_unlock(&e->lock);
        answer(e, m->seq, 0, 0, NULL);
    }
    return 0;
}

static void audit(net_engine *e, json_t *rec)
{
    if (!rec)
        return;
    json_object_set_new(rec, "kind", json_string("net"));
    json_object_set_new(rec, "cell", json_string(e->cell_id));
    char *text = e->hooks.event ? json_dumps(rec, JSON_COMPACT) : NULL;
    if (text)
        e->hooks.event(e->hooks.user, text);
    free(text);
    json_decref(rec);
}

/* Only a secret the current policy names, and only its value: never a list. */
static int on_secret(net_engine *e, const ctl_msg *m)
{
    net_policy *p = owner_policy(e);
    const char *name = net_sep_secret_name(m, p);
    net_policy_unref(p);
    if (!name) {
        if (errno != EACCES)
            return -1;
        audit(e, json_pack("{s:s, s:s, s:s, s:s}", "event", "secret", "name", m->str[0], "verdict", "deny", "reason",
                           "no http rule of the cell's policy names it"));
        answer(e, m->seq, ENOENT, 0, NULL);
        return 0;
    }
    char *v = NULL;
    size_t len = 0;
    int ok = e->hooks.secret && e->hooks.secret(e->hooks.user, name, &v, &len) == 0 && v &&
             len < CTL_MAX_MSG / 2 && !memchr(v, '\0', len);
    answer(e, m->seq, ok ? 0 : ENOENT, 0, ok ? v : NULL);
    if (v) {
        OPENSSL_cleanse(v, len);
        free(v);
    }
    return 0;
}

static int on_reply(net_engine *e, const ctl_msg *m)
{
    if (m->nstr != 1 || m->nfds != 0)
        return bad_msg();
    pthread_mutex_lock(&e->lock);
    if (m->seq == e->want_seq && !e->got) {
        e->got = 1;
        e->reply_err = m->err > 0 && m->err < 4096 ? m->err : m->err ? EIO : 0;
        snprintf(e->reply_msg, sizeof e->reply_msg, "%s", m->str[0]);
        pthread_cond_broadcast(&e->cond);
    }
    pthread_mutex_unlock(&e->lock);
    return 0;   /* a late reply to a request that timed out: dropped */
}

/* -1: the helper broke the protocol. */
static int on_message(net_engine *e, const ctl_msg *m)
{
    switch (m->type) {
    case NET_SEP_EVENT: {
        char *text = net_sep_event(m, e->cell_id);
        if (!text)
            return -1;
        if (e->hooks.event)
            e->hooks.event(e->hooks.user, text);
        free(text);
        return 0;
    }
    case NET_SEP_DECIDE:
        return on_decide(e, m);
    case NET_SEP_SECRET:
        return on_secret(e, m);
    case NET_SEP_REPLY:
        return on_reply(e, m);
    default:
        return bad_msg();
    }
}

/* The helper is gone, or broke the protocol: make sure it is dead, reap
 * it, and unless the owner was stopping it, cut the cell off and say so. */
static void helper_gone(net_engine *e, const char *why)
{
    kill(e->pid, SIGKILL);      /* not reaped yet, so the pid is still its */
    int status = 0;
    while (waitpid(e->pid, &status, 0) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&e->lock);
    e->pid = 0;
    e->dead = 1;
    int stopping = e->stopping;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
    if (stopping)
        return;
    cell_error err = { 0 };
    int cut = net_netns_cut(e->netns_fd, &err);
    json_t *rec = json_pack("{s:s, s:s, s:s}", "event", "engine", "verdict", "deny", "reason", why);
    if (rec && WIFSIGNALED(status))
        json_object_set_new(rec, "signal", json_integer(WTERMSIG(status)));
    if (rec && cut < 0)
        json_object_set_new(rec, "cutError", json_string(err.message));
    audit(e, rec);
}

static void *reader_main(void *arg)
{
    net_engine *e = arg;
    const char *why = "the egress helper ended; the cell's network is cut";
    for (;;) {
        ctl_msg m;
        if (ctl_recv(e->sock, &m) < 0) {
            if (errno != ECONNRESET)
                why = "the egress helper broke the protocol and was killed; the cell's network is cut";
            break;
        }
        int rc = on_message(e, &m);
        ctl_msg_free(&m);
        if (rc < 0) {
            why = "the egress helper broke the protocol and was killed; the cell's network is cut";
            break;
        }
    }
    helper_gone(e, why);
    return NULL;
}

/* ---- requests to the helper ------------------------------------------------------ */
static int wait_reply(net_engine *e, uint32_t seq, int timeout_ms, cell_error *err)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    pthread_mutex_lock(&e->lock);
    int rc = 0;
    while (!e->got && !e->dead && rc == 0)
        rc = pthread_cond_timedwait(&e->cond, &e->lock, &until);
    int got = e->got && e->want_seq == seq, code = e->reply_err;
    char msg[256];
    snprintf(msg, sizeof msg, "%s", e->reply_msg);
    pthread_mutex_unlock(&e->lock);
    if (!got)
        return util_fail(err, EPIPE, "the egress helper of cell %s did not answer; its network is cut", e->cell_id);
    return code ? util_fail(err, code, "egress helper: %s", msg) : 0;
}

static int request(net_engine *e, uint32_t type, const char *arg, int timeout_ms, cell_error *err)
{
    pthread_mutex_lock(&e->call);
    pthread_mutex_lock(&e->lock);
    int dead = e->dead;
    uint32_t seq = ++e->seq;
    e->want_seq = seq;
    e->got = 0;
    pthread_mutex_unlock(&e->lock);
    const char *s[1] = { arg };
    int rc;
    if (dead)
        rc = util_fail(err, EPIPE, "the egress helper of cell %s is gone; its network is cut", e->cell_id);
    else if (ctl_send(e->sock, type, seq, 0, NULL, s, arg ? 1 : 0, NULL, 0) < 0)
        rc = errno == E2BIG ? util_fail(err, E2BIG, "policy: larger than the egress helper takes (%d KiB)",
                                        CTL_MAX_MSG / 1024)
                            : util_fail_errno(err, "sending to the egress helper of cell %s", e->cell_id);
    else
        rc = wait_reply(e, seq, timeout_ms, err);
    pthread_mutex_unlock(&e->call);
    return rc;
}

/* ---- the API (net.h) ---------------------------------------------------------------- */
/* Until READY, events are passed on and anything else is a broken protocol. */
static int wait_ready(net_engine *e, cell_error *err)
{
    for (;;) {
        struct pollfd pf = { .fd = e->sock, .events = POLLIN };
        int n = poll(&pf, 1, START_TIMEOUT_MS);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return util_fail(err, ETIMEDOUT, "the egress helper of cell %s did not start", e->cell_id);
        ctl_msg m;
        if (ctl_recv(e->sock, &m) < 0)
            return util_fail_errno(err, "the egress helper of cell %s failed to start", e->cell_id);
        int rc = 1;
        if (m.type == NET_SEP_READY && m.nstr == 1 && m.nfds == 0 && m.err != 0) {
            int code = m.err > 0 && m.err < 4096 ? m.err : EIO;
            rc = util_fail(err, code, "%.200s", m.str[0]);
        } else if (m.type == NET_SEP_READY && m.nstr == 1 && m.nfds == 0 && net_sep_valid_pem(m.str[0])) {
            rc = (e->ca_pem = strdup(m.str[0])) ? 0 : util_fail(err, ENOMEM, "out of memory");
            e->ca_len = e->ca_pem ? strlen(e->ca_pem) : 0;
        } else if (m.type == NET_SEP_READY || m.type != NET_SEP_EVENT || on_message(e, &m) < 0) {
            rc = util_fail(err, EPROTO, "the egress helper of cell %s broke the protocol", e->cell_id);
        }
        ctl_msg_free(&m);
        if (rc <= 0)
            return rc;
    }
}

static int sep_start(net_engine **out, int netns_fd, const char *cell_id, const char *policy_json,
                const net_hooks *hooks, cell_error *err)
{
    *out = NULL;
    net_engine *e = calloc(1, sizeof *e);
    if (!e)
        return util_fail(err, ENOMEM, "out of memory");
    snprintf(e->cell_id, sizeof e->cell_id, "%s", cell_id);
    if (hooks)
        e->hooks = *hooks;
    e->sock = e->netns_fd = -1;
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->call, NULL);
    pthread_cond_init(&e->cond, NULL);
    if (net_policy_parse(policy_json, strlen(policy_json), &e->policy, err) < 0)
        goto fail;
    if ((e->netns_fd = fcntl(netns_fd, F_DUPFD_CLOEXEC, 3)) < 0) {
        util_fail_errno(err, "dup");
        goto fail;
    }
    if (spawn_helper(e, err) < 0)
        goto fail;
    const char *s[4] = { cell_id, policy_json, e->hooks.upstream_ca_file ? e->hooks.upstream_ca_file : "",
                         e->hooks.ca_dir ? e->hooks.ca_dir : "" };
    uint32_t u[CTL_NU] = { NET_SEP_UID, NET_SEP_GID, e->hooks.pod ? 1u : 0u };
    if (ctl_send(e->sock, NET_SEP_START, 0, 0, u, s, 4, &netns_fd, 1) < 0) {
        if (errno == E2BIG)
            util_fail(err, E2BIG, "policy: larger than the egress helper takes (%d KiB)", CTL_MAX_MSG / 1024);
        else
            util_fail_errno(err, "starting the egress helper");
        goto fail;
    }
    if (wait_ready(e, err) < 0)
        goto fail;
    int pe = pthread_create(&e->reader, NULL, reader_main, e);
    if (pe != 0) {
        errno = pe;
        util_fail_errno(err, "egress helper reader thread");
        goto fail;
    }
    e->reader_on = 1;
    *out = e;
    return 0;
fail:
    sep_stop(e);
    return -1;
}

static int sep_set_policy(net_engine *e, const char *policy_json, cell_error *err)
{
    net_policy *p, *old;
    if (net_policy_parse(policy_json, strlen(policy_json), &p, err) < 0)
        return -1;
    /* The owner's copy first: the secrets the new policy names are the
     * ones its flows may ask for. */
    pthread_mutex_lock(&e->lock);
    old = e->policy;
    e->policy = p;
    pthread_mutex_unlock(&e->lock);
    net_policy_unref(old);
    return request(e, NET_SEP_POLICY, policy_json, REQUEST_TIMEOUT_MS, err);
}

static int sep_ca_pem(net_engine *e, char **pem, size_t *len, cell_error *err)
{
    if (!(*pem = strdup(e->ca_pem)))
        return util_fail(err, ENOMEM, "out of memory");
    if (len)
        *len = e->ca_len;
    return 0;
}

static pid_t sep_pid(net_engine *e)
{
    pthread_mutex_lock(&e->lock);
    pid_t pid = e->dead ? 0 : e->pid;
    pthread_mutex_unlock(&e->lock);
    return pid;
}

static void sep_stop(net_engine *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->lock);
    e->stopping = 1;
    pthread_mutex_unlock(&e->lock);
    if (e->reader_on) {
        /* The helper sends its last records (flows cut now), replies and
         * exits; the reader reads to the end and reaps it.  One that does
         * not answer is cut off by closing our side: the reader then kills it. */
        request(e, NET_SEP_STOP, NULL, REQUEST_TIMEOUT_MS, NULL);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += REQUEST_TIMEOUT_MS / 1000;
        pthread_mutex_lock(&e->lock);
        int rc = 0;
        while (!e->dead && rc == 0)
            rc = pthread_cond_timedwait(&e->cond, &e->lock, &until);
        pthread_mutex_unlock(&e->lock);
        shutdown(e->sock, SHUT_RDWR);
        pthread_join(e->reader, NULL);
    } else if (e->pid > 0) {
        kill(e->pid, SIGKILL);
        while (waitpid(e->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    pthread_mutex_lock(&e->lock);
    while (e->asks > 0)
        pthread_cond_wait(&e->cond, &e->lock);
    pthread_mutex_unlock(&e->lock);
    if (e->sock >= 0)
        close(e->sock);
    if (e->netns_fd >= 0)
        close(e->netns_fd);
    net_policy_unref(e->policy);
    free(e->ca_pem);
    pthread_mutex_destroy(&e->lock);
    pthread_mutex_destroy(&e->call);
    pthread_cond_destroy(&e->cond);
    free(e);
}

/* libcell's table (src/runtime/plugin.h): linked into the daemon, or the
 * entry of libcell-net.so in the lean CLI. */
const runtime_net_ops runtime_net_builtin = {
    .size = sizeof(runtime_net_ops),
    .engine_start = sep_start,
    .engine_set_policy = sep_set_policy,
    .engine_ca_pem = sep_ca_pem,
    .engine_pid = sep_pid,
    .engine_stop = sep_stop,
    .policy_check = sep_policy_check,
    .policy_check_v2 = net_policy_check_v2,
    .screen = net_screen_reason,
};
