/* engine.c: a policed cell's egress engine: accepts the flows its rules
 * redirect, decides each by the policy, relays allowed ones with splice(),
 * and relays allowed UDP associations datagram by datagram. */
#include "net/net.h"
#include "net/ca.h"
#include "net/dns.h"
#include "net/fast.h"
#include "net/http.h"
#include "net/netns.h"
#include "net/policy.h"
#include "net/screen.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <linux/capability.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 10000
#define DNS_TCP_TIMEOUT_MS 10000
#define SPLICE_CHUNK       (1 << 20)
/* Flows and DNS queries in progress per cell; beyond it new ones are
 * refused, so a cell cannot exhaust the owner's threads. */
#define MAX_WORKERS        1024
/* UDP associations, (cell source, original destination) pairs: at most
 * UDP_MAX_ASSOC per cell (beyond, datagrams of new pairs are dropped),
 * ended after UDP_IDLE_MS without a datagram either way.  A denied pair
 * gets one audit record, and its datagrams are dropped undecided, for
 * UDP_DENY_MS (or until the policy changes), so a chatty client can flood
 * neither the audit log nor a decide webhook. */
#define UDP_MAX_ASSOC      256
#define UDP_IDLE_MS        30000
#define UDP_DENY_MS        10000
#define UDP_DENY_SLOTS     64
#define UDP_BATCH          64
#define SELF_REFRESH_MS    1000   /* screen.c's host-self cache lifetime */

typedef struct udp_assoc {
    int                state;       /* UDP_FREE, UDP_ASKING (decide in progress), UDP_LIVE */
    struct sockaddr_in src, dst;
    int                hfd;         /* host side, connected to dst */
    int                cfd;         /* in the cell's netns, bound (transparent) to dst: replies come from there */
    int                rule;
    char               host[256];
    uint64_t           out, in;
    int64_t            start, last;
} udp_assoc;

enum { UDP_FREE, UDP_ASKING, UDP_LIVE };

typedef struct udp_deny {
    struct sockaddr_in src, dst;
    int64_t            at;          /* 0 = unused */
    unsigned           gen;         /* the policy it was decided by */
} udp_deny;

/* A "decide" rule's question, asked on a worker so the UDP loop never
 * waits for a webhook; the answer comes back through udp_done. */
typedef struct udp_ask {
    struct udp_ask        *next;
    net_engine            *e;
    size_t                 slot;
    net_policy            *policy;  /* holds `decide` */
    const net_decide_rule *decide;
    int                    rule, allow;
    size_t                 len;
    uint8_t                data[];
} udp_ask;

struct net_engine {
    char            cell_id[40];
    net_hooks       hooks;
    net_listeners   l;
    net_fast       *fast;           /* NULL: every TCP flow is relayed */
    net_pins       *pins;
    int             stop_fd;
    pthread_t       thread;
    int             thread_on;
    pthread_mutex_t lock;           /* policy, workers, live flow fds */
    pthread_cond_t  idle;
    net_policy     *policy;
    int             workers;        /* detached threads still running */
    atomic_int      stopping;
    int             live[2 * MAX_WORKERS]; /* sockets of relayed flows, to cut at stop */
    net_ca         *ca;             /* intercepts TLS of "http" rules; its key never enters the cell */
    SSL_CTX        *upstream_tls;   /* verifies upstreams of intercepted flows */
    net_http_env    http;
    pthread_t       udp_thread;
    int             udp_on;
    int             udp_wake;       /* eventfd: answers in udp_done */
    udp_ask        *udp_done;       /* under lock */
    unsigned        policy_gen;     /* under lock; bumped by each new policy */
    int             ns_sock;        /* to the thread in the cell's netns that makes UDP reply sockets */
    int             ns_peer;        /* that thread's end */
    pthread_t       ns_thread;
    int             ns_on;
    udp_assoc       udp[UDP_MAX_ASSOC];   /* the UDP thread's own */
    udp_deny        udp_denied[UDP_DENY_SLOTS];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void addr_text(const struct sockaddr *sa, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        port = ntohs(in->sin_port);
        snprintf(out, size, "%s:%u", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        port = ntohs(in6->sin6_port);
        snprintf(out, size, "[%s]:%u", ip, port);
    } else {
        snprintf(out, size, "?");
    }
}

/* Hand one event to the owner; the record is ours to free. */
static void emit(net_engine *e, json_t *rec)
{
    if (!rec)
        return;
    json_object_set_new(rec, "kind", json_string("net"));
    json_object_set_new(rec, "cell", json_string(e->cell_id));
    if (e->hooks.event) {
        char *text = json_dumps(rec, JSON_COMPACT);
        if (text)
            e->hooks.event(e->hooks.user, text);
        free(text);
    }
    json_decref(rec);
}

static net_policy *current_policy(net_engine *e)
{
    pthread_mutex_lock(&e->lock);
    net_policy *p = net_policy_ref(e->policy);
    pthread_mutex_unlock(&e->lock);
    return p;
}

/* ---- workers: detached threads that hold the engine until they end ------- */
static int worker_begin(net_engine *e)
{
    pthread_mutex_lock(&e->lock);
    int ok = !atomic_load(&e->stopping) && e->workers < MAX_WORKERS;
    if (ok)
        e->workers++;
    pthread_mutex_unlock(&e->lock);
    return ok;
}

static void worker_end(net_engine *e)
{
    pthread_mutex_lock(&e->lock);
    if (--e->workers == 0)
        pthread_cond_broadcast(&e->idle);
    pthread_mutex_unlock(&e->lock);
}

static int spawn_worker(net_engine *e, void *(*fn)(void *), void *arg)
{
    if (!worker_begin(e))
        return -1;
    if (util_thread_detached(fn, arg) != 0) {
        worker_end(e);
        return -1;
    }
    return 0;
}

/* Remember a relayed socket so stop can shut it down. */
static void track(net_engine *e, int fd, int on)
{
    pthread_mutex_lock(&e->lock);
    for (size_t i = 0; i < sizeof e->live / sizeof e->live[0]; i++) {
        if (on && e->live[i] < 0) {
            e->live[i] = fd;
            break;
        }
        if (!on && e->live[i] == fd) {
            e->live[i] = -1;
            break;
        }
    }
    pthread_mutex_unlock(&e->lock);
}

/* ---- relaying ---------------------------------------------------------------- */
typedef struct pump {
    int      from, to;
    uint64_t bytes;
} pump;

/* One direction, socket -> pipe -> socket, until EOF or an error; then the
 * peer learns of the end by a half-close.  One thread per direction keeps
 * each blocking and never lets one full buffer stall the other way. */
static void *pump_main(void *arg)
{
    pump *pu = arg;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        shutdown(pu->to, SHUT_WR);
        return NULL;
    }
    fcntl(p[1], F_SETPIPE_SZ, SPLICE_CHUNK);
    for (;;) {
        ssize_t n = splice(pu->from, NULL, p[1], NULL, SPLICE_CHUNK, SPLICE_F_MOVE);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break;
        }
        ssize_t left = n;
        while (left > 0) {
            ssize_t w = splice(p[0], NULL, pu->to, NULL, (size_t)left, SPLICE_F_MOVE);
            if (w <= 0) {
                if (w < 0 && errno == EINTR)
                    continue;
                goto out;
            }
            left -= w;
            pu->bytes += (uint64_t)w;
        }
    }
out:
    shutdown(pu->to, SHUT_WR);
    shutdown(pu->from, SHUT_RD);
    close(p[0]);
    close(p[1]);
    return NULL;
}

static int connect_upstream(const struct sockaddr *dst, socklen_t len)
{
    int fd = socket(dst->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, dst, len) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct pollfd pf = { .fd = fd, .events = POLLOUT };
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (poll(&pf, 1, CONNECT_TIMEOUT_MS) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
        close(fd);
        errno = soerr ? soerr : ETIMEDOUT;
        return -1;
    }
    fcntl(fd, F_SETFL, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Refuse with a reset, so the client fails at once instead of timing out. */
static void reset_close(int fd)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

typedef struct flow_job {
    net_engine *e;
    int         fd;
} flow_job;

/* Ask the owner about a "decide" rule. */
static int ask_owner(net_engine *e, const net_decide_rule *d, int rule, const char *transport, const char *src,
                     const char *dst, const char *host)
{
    if (!e->hooks.decide)
        return 0;
    cell_net_flow f = { .cell = e->cell_id, .transport = transport, .src = src, .dst = dst, .host = host, .rule = rule,
                        .cache_s = d->cache_s };
    return e->hooks.decide(e->hooks.user, &f, d->url, d->timeout_ms) == 1;
}

/* The policy's verdict on a TCP flow to dst, with the name the cell's DNS
 * pinned to it ("" and *pinned 0 if none).  Returns the policy it was
 * decided by, referenced: a verdict's rule lives in it. */
static net_policy *decide_tcp(net_engine *e, const struct sockaddr *dst, char *host, size_t host_size, int *pinned,
                              net_verdict *v)
{
    *pinned = net_pins_lookup(e->pins, dst, host, host_size);
    if (!*pinned)
        host[0] = '\0';
    net_policy *p = current_policy(e);
    net_flow f = { .transport = NET_TCP, .dst = dst, .host = *pinned ? host : NULL, .to_self = net_self_contains(dst) };
    *v = (net_verdict){ .allow = 0, .rule = -1 };
    net_policy_decide(p, &f, v);
    return p;
}

static void *flow_main(void *arg)
{
    flow_job *job = arg;
    net_engine *e = job->e;
    int cfd = job->fd, ufd = -1;
    free(job);
    int64_t start = now_ms();
    struct sockaddr_storage dst = { 0 }, src = { 0 };
    socklen_t dlen = sizeof(struct sockaddr_in), slen = sizeof src;
    char dst_s[64] = "?", src_s[64] = "?", host[256] = "";
    const char *reason = NULL;
    net_verdict v = { .allow = 0, .rule = -1 };
    net_policy *held = NULL;
    getpeername(cfd, (struct sockaddr *)&src, &slen);
    addr_text((struct sockaddr *)&src, src_s, sizeof src_s);
    /* Only a redirected flow has an original destination; a process that
     * dials the relay port itself gets nothing. */
    if (getsockopt(cfd, SOL_IP, SO_ORIGINAL_DST, &dst, &dlen) < 0) {
        reason = "not a redirected flow";
    } else {
        addr_text((struct sockaddr *)&dst, dst_s, sizeof dst_s);
        int pinned;
        net_policy *p = decide_tcp(e, (struct sockaddr *)&dst, host, sizeof host, &pinned, &v);
        if (v.decide)
            v.allow = ask_owner(e, v.decide, v.rule, "tcp", src_s, dst_s, pinned ? host : NULL), reason = "decide";
        if (v.allow && v.http && !pinned) {
            v.allow = 0;    /* http rules match pinned names only; never unenforced */
            reason = "http rule without a pinned host name";
        }
        /* The rule lives in the policy: an http flow keeps it until it ends. */
        if (v.allow && v.http)
            held = p;
        else
            net_policy_unref(p);
        if (!v.allow && !reason)
            reason = v.rule < 0 ? "no rule matched" : "denied by rule";
    }
    uint64_t out_bytes = 0, in_bytes = 0;
    if (v.allow && !v.http) {
        ufd = connect_upstream((struct sockaddr *)&dst, dlen);
        if (ufd < 0) {
            reason = strerror(errno);
            v.allow = 0;
        }
    }
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s}", "event", "connect", "transport", "tcp", "src", src_s,
                            "dst", dst_s, "rule", v.rule, "verdict", v.allow ? "allow" : "deny");
    if (rec && host[0])
        json_object_set_new(rec, "host", json_string(host));
    if (rec && reason)
        json_object_set_new(rec, "reason", json_string(reason));
    if (!v.allow) {
        reset_close(cfd);
        json_object_set_new(rec, "durationMs", json_integer(now_ms() - start));
        emit(e, rec);
        worker_end(e);
        return NULL;
    }
    if (v.http) {
        /* Requests are checked and rewritten, so bytes pass through user space. */
        net_http_flow hf = { .cfd = cfd, .dst = (struct sockaddr *)&dst, .dst_len = dlen, .dst_text = dst_s,
                             .host = host, .rule = v.http, .rule_index = v.rule };
        track(e, cfd, 1);
        net_http_serve(&e->http, &hf, &out_bytes, &in_bytes);
        track(e, cfd, 0);
        net_policy_unref(held);
        close(cfd);
        json_object_set_new(rec, "http", json_true());
        goto done;
    }
    track(e, cfd, 1);
    track(e, ufd, 1);
    pump up = { .from = cfd, .to = ufd }, down = { .from = ufd, .to = cfd };
    pthread_t t;
    if (pthread_create(&t, NULL, pump_main, &down) == 0) {
        pump_main(&up);
        pthread_join(t, NULL);
    }
    out_bytes = up.bytes;
    in_bytes = down.bytes;
    track(e, cfd, 0);
    track(e, ufd, 0);
    close(cfd);
    close(ufd);
done:
    json_object_set_new(rec, "bytesOut", json_integer((json_int_t)out_bytes));
    json_object_set_new(rec, "bytesIn", json_integer((json_int_t)in_bytes));
    json_object_set_new(rec, "durationMs", json_integer(now_ms() - start));
    emit(e, rec);
    worker_end(e);
    return NULL;
}

/* ---- hooks for HTTP flows --------------------------------------------------------- */
static void http_audit(void *arg, json_t *rec)
{
    emit(arg, rec);
}

static void http_track(void *arg, int fd, int on)
{
    track(arg, fd, on);
}

static int http_dial(const struct sockaddr *dst, socklen_t len)
{
    return connect_upstream(dst, len);
}

/* A lane keeps its CA across boots, so software in it that pinned or
 * cached the CA keeps working; one that is unreadable, mismatched or close
 * to expiry is replaced (and the cell's bundle is rewritten at each boot). */
static int load_or_create_ca(net_engine *e, const char *cn, cell_error *err)
{
    if (e->hooks.ca_dir && net_ca_load(&e->ca, e->hooks.ca_dir, NULL) == 0)
        return 0;
    if (net_ca_create(&e->ca, cn, err) < 0)
        return -1;
    if (e->hooks.ca_dir && (util_mkdir_p(e->hooks.ca_dir, 0700, err) < 0 || net_ca_save(e->ca, e->hooks.ca_dir, err) < 0))
        return -1;
    return 0;
}

/* The interception CA (named after the cell, so a cell's trust store says
 * whose it is) and the upstream verifier. */
static int start_http(net_engine *e, cell_error *err)
{
    char cn[64];
    snprintf(cn, sizeof cn, "cell %.16s egress CA", e->cell_id);
    if (load_or_create_ca(e, cn, err) < 0 || net_http_upstream_ctx(&e->upstream_tls, e->hooks.upstream_ca_file, err) < 0)
        return -1;
    e->http = (net_http_env){ .ca = e->ca, .upstream_tls = e->upstream_tls, .secret = e->hooks.secret,
                              .secret_user = e->hooks.user, .audit = http_audit, .track = http_track,
                              .dial = http_dial, .arg = e, .pool = net_http_pool_new() };
    return e->http.pool ? 0 : util_fail(err, ENOMEM, "out of memory");
}

int net_engine_ca_pem(net_engine *e, char **pem, size_t *len, cell_error *err)
{
    return net_ca_cert_pem(e->ca, pem, len, err);
}

/* ---- DNS ------------------------------------------------------------------------ */
static void dns_event(net_engine *e, const net_policy *p, const net_dns_result *r, const char *transport)
{
    const net_dns_config *d = net_policy_dns(p);
    json_t *rec = json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:i}", "event", "dns", "transport", transport,
                            "qname", r->qname, "qtype", r->qtype, "rcode", r->rcode,
                            "verdict", r->blocked ? "deny" : "allow", "rule", d ? d->rule : -1);
    if (rec)
        json_object_set_new(rec, "pinned", json_integer(r->n_pinned));
    if (rec && r->refused[0])
        json_object_set_new(rec, "reason", json_string(r->refused));
    emit(e, rec);
}

typedef struct dns_job {
    net_engine *e;
    struct sockaddr_storage from;
    socklen_t from_len;
    size_t len;
    uint8_t query[];
} dns_job;

static void *dns_udp_main(void *arg)
{
    dns_job *job = arg;
    net_engine *e = job->e;
    net_policy *p = current_policy(e);
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    net_dns_result res;
    memset(&res, 0, sizeof res);
    if (net_dns_answer(p, e->pins, job->query, job->len, &reply, &reply_len, &res, NULL) == 0) {
        sendto(e->l.dns_udp, reply, reply_len, 0, (struct sockaddr *)&job->from, job->from_len);
        dns_event(e, p, &res, "udp");
    }
    free(reply);
    net_policy_unref(p);
    free(job);
    worker_end(e);
    return NULL;
}

static int read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (poll(&pf, 1, DNS_TCP_TIMEOUT_MS) != 1)
            return -1;
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

/* DNS over TCP: length-prefixed queries until the client closes. */
static void *dns_tcp_main(void *arg)
{
    flow_job *job = arg;
    net_engine *e = job->e;
    int fd = job->fd;
    free(job);
    track(e, fd, 1);
    for (;;) {
        uint8_t hdr[2], query[65535];
        if (read_full(fd, hdr, 2) < 0)
            break;
        size_t len = (size_t)hdr[0] << 8 | hdr[1];
        if (len == 0 || read_full(fd, query, len) < 0)
            break;
        net_policy *p = current_policy(e);
        uint8_t *reply = NULL;
        size_t reply_len = 0;
        net_dns_result res;
        memset(&res, 0, sizeof res);
        int rc = net_dns_answer(p, e->pins, query, len, &reply, &reply_len, &res, NULL);
        if (rc == 0) {
            dns_event(e, p, &res, "tcp");
            uint8_t lenbuf[2] = { (uint8_t)(reply_len >> 8), (uint8_t)reply_len };
            rc = util_write_all(fd, lenbuf, 2) < 0 || util_write_all(fd, reply, reply_len) < 0 ? -1 : 0;
        }
        free(reply);
        net_policy_unref(p);
        if (rc < 0)
            break;
    }
    track(e, fd, 0);
    close(fd);
    worker_end(e);
    return NULL;
}

/* ---- UDP ---------------------------------------------------------------------------- */
/* One thread serves all of a cell's UDP: datagrams TPROXY delivers to the
 * transparent socket, and the replies of every live association.  Datagrams
 * are copied through user space: each one must be matched to its
 * association anyway, and splice() does not keep datagram boundaries. */

static int same_pair(const struct sockaddr_in *a, const struct sockaddr_in *b, const struct sockaddr_in *c,
                     const struct sockaddr_in *d)
{
    return a->sin_addr.s_addr == c->sin_addr.s_addr && a->sin_port == c->sin_port &&
           b->sin_addr.s_addr == d->sin_addr.s_addr && b->sin_port == d->sin_port;
}

static unsigned policy_generation(net_engine *e)
{
    pthread_mutex_lock(&e->lock);
    unsigned gen = e->policy_gen;
    pthread_mutex_unlock(&e->lock);
    return gen;
}

/* 1 if the pair was denied within UDP_DENY_MS under the current policy. */
static int udp_recently_denied(net_engine *e, const struct sockaddr_in *src, const struct sockaddr_in *dst, int64_t now)
{
    unsigned gen = policy_generation(e);
    for (size_t i = 0; i < UDP_DENY_SLOTS; i++) {
        udp_deny *d = &e->udp_denied[i];
        if (d->at && d->gen == gen && now - d->at < UDP_DENY_MS && same_pair(&d->src, &d->dst, src, dst))
            return 1;
    }
    return 0;
}

/* Audit a denied pair and remember it (in the oldest slot). */
static void udp_deny_record(net_engine *e, const struct sockaddr_in *src, const struct sockaddr_in *dst,
                            const char *host, int rule, const char *reason)
{
    udp_deny *slot = &e->udp_denied[0];
    for (size_t i = 1; i < UDP_DENY_SLOTS && slot->at; i++)
        if (e->udp_denied[i].at < slot->at)
            slot = &e->udp_denied[i];
    *slot = (udp_deny){ .src = *src, .dst = *dst, .at = now_ms(), .gen = policy_generation(e) };
    char src_s[64], dst_s[64];
    addr_text((const struct sockaddr *)src, src_s, sizeof src_s);
    addr_text((const struct sockaddr *)dst, dst_s, sizeof dst_s);
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:i}", "event", "connect", "transport", "udp",
                            "src", src_s, "dst", dst_s, "rule", rule, "verdict", "deny", "reason", reason,
                            "durationMs", 0);
    if (rec && host && host[0])
        json_object_set_new(rec, "host", json_string(host));
    emit(e, rec);
}

/* A thread that entered the cell's netns at start and stays there: a
 * socket belongs to the netns of the thread that makes it, and once the
 * egress helper has dropped its privileges no thread can enter a namespace
 * any more.  It answers each request (one byte on ns_sock) with a UDP
 * socket made there, or -errno; it has no capabilities after the drop, so
 * the caller makes the socket transparent. */
static void *ns_maker_main(void *arg)
{
    net_engine *e = arg;
    int sock = e->ns_peer, ok = setns(e->l.netns, CLONE_NEWNET) == 0 ? 0 : -errno;
    if (write(sock, &ok, sizeof ok) != sizeof ok || ok < 0)
        return NULL;
    char c;
    while (read(sock, &c, 1) == 1) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            fd = -errno;
        if (write(sock, &fd, sizeof fd) != sizeof fd) {
            if (fd >= 0)
                close(fd);
            break;
        }
    }
    return NULL;
}

static int start_ns_maker(net_engine *e, cell_error *err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return util_fail_errno(err, "socketpair");
    e->ns_sock = sv[0];
    e->ns_peer = sv[1];
    int pe = pthread_create(&e->ns_thread, NULL, ns_maker_main, e), ok = -EIO;
    if (pe != 0) {
        errno = pe;
        return util_fail_errno(err, "thread in the cell's network namespace");
    }
    e->ns_on = 1;
    if (read(e->ns_sock, &ok, sizeof ok) != sizeof ok || ok < 0) {
        errno = ok < 0 ? -ok : EIO;
        return util_fail_errno(err, "entering the cell's network namespace");
    }
    return 0;
}

/* The socket in the cell's namespace that replies of an association are
 * sent from, so the cell sees them come from the address it sent to.
 * Transparent, to bind an address that is not the namespace's own;
 * reusable, because every association with the same destination binds it.
 * Never connected, so TPROXY's lookup of established sockets passes it over
 * and the cell's datagrams keep coming to the listener. */
static int udp_reply_socket(net_engine *e, const struct sockaddr_in *dst)
{
    int fd = -1, one = 1;
    if (write(e->ns_sock, "s", 1) != 1 || read(e->ns_sock, &fd, sizeof fd) != sizeof fd) {
        errno = EIO;
        return -1;
    }
    if (fd < 0) {
        errno = -fd;
        return -1;
    }
    if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (const struct sockaddr *)dst, sizeof *dst) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* Make an allowed association live and forward its first datagram;
 * on failure the slot is freed and the pair audited as denied. */
static void udp_open(net_engine *e, udp_assoc *a, const uint8_t *data, size_t len)
{
    const char *reason = NULL;
    a->hfd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (a->hfd < 0 || connect(a->hfd, (struct sockaddr *)&a->dst, sizeof a->dst) < 0)
        reason = strerror(errno);
    else if ((a->cfd = udp_reply_socket(e, &a->dst)) < 0)
        reason = strerror(errno);
    if (reason) {
        if (a->hfd >= 0)
            close(a->hfd);
        udp_deny_record(e, &a->src, &a->dst, a->host, a->rule, reason);
        a->state = UDP_FREE;
        return;
    }
    a->state = UDP_LIVE;
    a->start = a->last = now_ms();
    if (send(a->hfd, data, len, MSG_DONTWAIT) >= 0)
        a->out += len;
}

/* End an association: one audit record with its totals. */
static void udp_close(net_engine *e, udp_assoc *a)
{
    char src_s[64], dst_s[64];
    addr_text((struct sockaddr *)&a->src, src_s, sizeof src_s);
    addr_text((struct sockaddr *)&a->dst, dst_s, sizeof dst_s);
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:I, s:I, s:I}", "event", "connect", "transport", "udp",
                            "src", src_s, "dst", dst_s, "rule", a->rule, "verdict", "allow",
                            "bytesOut", (json_int_t)a->out, "bytesIn", (json_int_t)a->in,
                            "durationMs", (json_int_t)(now_ms() - a->start));
    if (rec && a->host[0])
        json_object_set_new(rec, "host", json_string(a->host));
    emit(e, rec);
    close(a->hfd);
    close(a->cfd);
    a->state = UDP_FREE;
}

static void *udp_ask_main(void *arg)
{
    udp_ask *q = arg;
    net_engine *e = q->e;
    udp_assoc *a = &e->udp[q->slot];     /* ASKING: the UDP loop leaves it alone */
    char src_s[64], dst_s[64];
    addr_text((struct sockaddr *)&a->src, src_s, sizeof src_s);
    addr_text((struct sockaddr *)&a->dst, dst_s, sizeof dst_s);
    q->allow = ask_owner(e, q->decide, q->rule, "udp", src_s, dst_s, a->host[0] ? a->host : NULL);
    net_policy_unref(q->policy);
    q->policy = NULL;
    pthread_mutex_lock(&e->lock);
    q->next = e->udp_done;
    e->udp_done = q;
    pthread_mutex_unlock(&e->lock);
    uint64_t one = 1;
    if (write(e->udp_wake, &one, sizeof one) < 0) { /* an eventfd write does not fail here */ }
    worker_end(e);
    return NULL;
}

/* The owner's answers to decide rules. */
static void udp_answers(net_engine *e)
{
    uint64_t n;
    if (read(e->udp_wake, &n, sizeof n) < 0) { /* nothing pending: fine */ }
    pthread_mutex_lock(&e->lock);
    udp_ask *q = e->udp_done;
    e->udp_done = NULL;
    pthread_mutex_unlock(&e->lock);
    while (q) {
        udp_ask *next = q->next;
        udp_assoc *a = &e->udp[q->slot];
        if (q->allow) {
            udp_open(e, a, q->data, q->len);
        } else {
            udp_deny_record(e, &a->src, &a->dst, a->host, a->rule, "decide");
            a->state = UDP_FREE;
        }
        free(q);
        q = next;
    }
}

/* A datagram of a pair with no association: decide it. */
static void udp_new_pair(net_engine *e, const struct sockaddr_in *src, const struct sockaddr_in *dst,
                         const uint8_t *data, size_t len)
{
    int64_t now = now_ms();
    if (udp_recently_denied(e, src, dst, now))
        return;
    char host[256] = "";
    int pinned = net_pins_lookup(e->pins, (const struct sockaddr *)dst, host, sizeof host);
    udp_assoc *a = NULL;
    for (size_t i = 0; i < UDP_MAX_ASSOC && !a; i++)
        if (e->udp[i].state == UDP_FREE)
            a = &e->udp[i];
    net_policy *p = current_policy(e);
    net_flow f = { .transport = NET_UDP, .dst = (const struct sockaddr *)dst, .host = pinned ? host : NULL,
                   .to_self = net_self_contains((const struct sockaddr *)dst) };
    net_verdict v = { .allow = 0, .rule = -1 };
    net_policy_decide(p, &f, &v);
    /* A decide rule comes back undecided (allow 0): the owner says. */
    const char *why = !v.allow && !v.decide ? (v.rule < 0 ? "no rule matched" : "denied by rule")
                      : !a                  ? "too many UDP associations"
                                            : NULL;
    if (why) {
        net_policy_unref(p);
        udp_deny_record(e, src, dst, host, v.rule, why);
        return;
    }
    *a = (udp_assoc){ .state = UDP_ASKING, .src = *src, .dst = *dst, .hfd = -1, .cfd = -1, .rule = v.rule };
    snprintf(a->host, sizeof a->host, "%s", host);
    if (!v.decide) {
        net_policy_unref(p);
        udp_open(e, a, data, len);
        return;
    }
    udp_ask *q = malloc(sizeof *q + len);
    if (!q) {
        net_policy_unref(p);
        a->state = UDP_FREE;
        return;
    }
    *q = (udp_ask){ .e = e, .slot = (size_t)(a - e->udp), .policy = p, .decide = v.decide, .rule = v.rule, .len = len };
    memcpy(q->data, data, len);
    if (spawn_worker(e, udp_ask_main, q) < 0) {
        net_policy_unref(p);
        free(q);
        a->state = UDP_FREE;   /* dropped, as when the owner is busy; the client retries */
    }
}

/* Datagrams from the cell, a batch at a time so replies are not starved. */
static void udp_from_cell(net_engine *e, uint8_t *buf, size_t size)
{
    for (int i = 0; i < UDP_BATCH; i++) {
        struct sockaddr_in src;
        union {
            struct cmsghdr align;
            char           space[CMSG_SPACE(sizeof(struct sockaddr_in))];
        } ctl;
        struct iovec iov = { .iov_base = buf, .iov_len = size };
        struct msghdr msg = { .msg_name = &src, .msg_namelen = sizeof src, .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = ctl.space, .msg_controllen = sizeof ctl.space };
        ssize_t n = recvmsg(e->l.udp, &msg, MSG_DONTWAIT);
        if (n < 0)
            return;
        const struct sockaddr_in *dst = NULL;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR &&
                c->cmsg_len >= CMSG_LEN(sizeof(struct sockaddr_in)))
                dst = (const struct sockaddr_in *)(const void *)CMSG_DATA(c);
        /* Without an original destination the datagram was sent to the
         * port itself, not redirected: nothing to relay it to. */
        if (!dst || src.sin_family != AF_INET || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
            continue;
        /* The cell's addresses are loopback and, with the fast path, its
         * veth address (a pod's: its CNI address).  A socket bound elsewhere (IP_FREEBIND) would have
         * replies addressed off the cell, which the rules would bring back
         * to us as new datagrams: a loop. */
        if ((ntohl(src.sin_addr.s_addr) >> 24) != 127 && (!e->l.cell_ip || src.sin_addr.s_addr != e->l.cell_ip) &&
            (!e->l.pod_ip || src.sin_addr.s_addr != e->l.pod_ip))
            continue;
        struct sockaddr_in d;
        memcpy(&d, dst, sizeof d);
        if (d.sin_addr.s_addr == htonl(INADDR_LOOPBACK) && d.sin_port == htons(NET_UDP_PORT))
            continue;
        udp_assoc *a = NULL;
        for (size_t k = 0; k < UDP_MAX_ASSOC && !a; k++)
            if (e->udp[k].state != UDP_FREE && same_pair(&e->udp[k].src, &e->udp[k].dst, &src, &d))
                a = &e->udp[k];
        if (!a) {
            udp_new_pair(e, &src, &d, buf, (size_t)n);
        } else if (a->state == UDP_LIVE) {
            /* An association keeps the verdict it got, like a TCP flow. */
            a->last = now_ms();
            if (send(a->hfd, buf, (size_t)n, MSG_DONTWAIT) >= 0)
                a->out += (uint64_t)n;
        }
        /* else: still asking the owner; dropped, as a busy path would. */
    }
}

/* Replies of one association, back to the cell's socket. */
static void udp_from_host(udp_assoc *a, uint8_t *buf, size_t size)
{
    for (int i = 0; i < UDP_BATCH; i++) {
        ssize_t n = recv(a->hfd, buf, size, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            continue;       /* an ICMP error from the peer: UDP carries on */
        }
        a->last = now_ms();
        if (sendto(a->cfd, buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&a->src, sizeof a->src) >= 0)
            a->in += (uint64_t)n;
    }
}

static void *udp_main(void *arg)
{
    net_engine *e = arg;
    enum { FIXED = 3 };
    static const size_t size = 65536;
    uint8_t *buf = malloc(size);
    struct pollfd *p = calloc(FIXED + UDP_MAX_ASSOC, sizeof *p);
    size_t *slot = calloc(UDP_MAX_ASSOC, sizeof *slot);
    if (!buf || !p || !slot)
        goto out;
    for (;;) {
        int64_t now = now_ms(), wait = -1;
        nfds_t n = FIXED;
        p[0] = (struct pollfd){ .fd = e->stop_fd, .events = POLLIN };
        p[1] = (struct pollfd){ .fd = e->udp_wake, .events = POLLIN };
        p[2] = (struct pollfd){ .fd = e->l.udp, .events = POLLIN };
        for (size_t i = 0; i < UDP_MAX_ASSOC; i++) {
            udp_assoc *a = &e->udp[i];
            if (a->state != UDP_LIVE)
                continue;
            int64_t left = a->last + UDP_IDLE_MS - now;
            if (left <= 0) {
                udp_close(e, a);
                continue;
            }
            if (wait < 0 || left < wait)
                wait = left;
            slot[n - FIXED] = i;
            p[n++] = (struct pollfd){ .fd = a->hfd, .events = POLLIN };
        }
        if (poll(p, n, (int)wait) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[0].revents)
            break;
        for (nfds_t i = FIXED; i < n; i++)
            if (p[i].revents)
                udp_from_host(&e->udp[slot[i - FIXED]], buf, size);
        if (p[1].revents)
            udp_answers(e);
        if (p[2].revents)
            udp_from_cell(e, buf, size);
    }
out:
    for (size_t i = 0; i < UDP_MAX_ASSOC; i++)
        if (e->udp[i].state == UDP_LIVE)
            udp_close(e, &e->udp[i]);
    free(buf);
    free(p);
    free(slot);
    return NULL;
}

/* ---- the fast path's question ------------------------------------------------------- */

/* Only what needs nothing after the decision goes to the kernel: an allow
 * with no webhook to ask (the relay asks on a worker; the queue must not
 * wait) and no HTTP to enforce. */
static int fast_decide(void *arg, const struct sockaddr_in *dst, char *host, size_t host_size, int *rule)
{
    net_engine *e = arg;
    if (atomic_load(&e->stopping))
        return 0;
    int pinned;
    net_verdict v;
    net_policy_unref(decide_tcp(e, (const struct sockaddr *)dst, host, host_size, &pinned, &v));
    *rule = v.rule;
    return v.allow && !v.decide && !v.http;
}

static void fast_audit(void *arg, json_t *rec)
{
    emit(arg, rec);
}

static int fast_confine(void *arg)
{
    net_engine *e = arg;
    return e->hooks.confine_thread ? e->hooks.confine_thread(e->hooks.user) : 0;
}

/* ---- the accept loop --------------------------------------------------------------- */
/* A flow the engine has no worker for (MAX_WORKERS busy, or no thread: the
 * helper is charged to the cell's pids and memory) is reset, and audited
 * like any denial: a flood must not make its own attempts vanish. */
static void refuse_busy(net_engine *e, int fd)
{
    struct sockaddr_storage dst = { 0 }, src = { 0 };
    socklen_t dlen = sizeof(struct sockaddr_in), slen = sizeof src;
    char dst_s[64] = "?", src_s[64] = "?";
    if (getpeername(fd, (struct sockaddr *)&src, &slen) == 0)
        addr_text((struct sockaddr *)&src, src_s, sizeof src_s);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &dlen) == 0)
        addr_text((struct sockaddr *)&dst, dst_s, sizeof dst_s);
    reset_close(fd);
    emit(e, json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:s}", "event", "connect", "transport", "tcp", "src", src_s,
                      "dst", dst_s, "rule", -1, "verdict", "deny", "reason",
                      "the egress engine is busy (no worker for the flow)"));
}

static void accept_into(net_engine *e, int lfd, void *(*fn)(void *))
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    flow_job *job = malloc(sizeof *job);
    if (!job || (job->e = e, job->fd = fd, spawn_worker(e, fn, job)) < 0) {
        free(job);
        refuse_busy(e, fd);
    }
}

static void receive_dns(net_engine *e)
{
    uint8_t buf[65536];
    struct sockaddr_storage from;
    socklen_t from_len = sizeof from;
    ssize_t n = recvfrom(e->l.dns_udp, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &from_len);
    if (n <= 0)
        return;
    dns_job *job = malloc(sizeof *job + (size_t)n);
    if (!job)
        return;
    job->e = e;
    job->from = from;
    job->from_len = from_len;
    job->len = (size_t)n;
    memcpy(job->query, buf, (size_t)n);
    if (spawn_worker(e, dns_udp_main, job) < 0)
        free(job);
}

static void *engine_main(void *arg)
{
    net_engine *e = arg;
    for (;;) {
        struct pollfd p[4] = {
            { .fd = e->stop_fd, .events = POLLIN }, { .fd = e->l.relay, .events = POLLIN },
            { .fd = e->l.dns_udp, .events = POLLIN }, { .fd = e->l.dns_tcp, .events = POLLIN },
        };
        /* With the fast path, keep the host-self cache fresh from here: the
         * fast path's thread may not open the rtnetlink socket a refresh
         * needs, and fails closed (host-self, so the relay decides) when it
         * finds the cache stale. */
        int n = poll(p, 4, e->fast ? SELF_REFRESH_MS / 2 : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (e->fast) {
            struct sockaddr_in any = { .sin_family = AF_INET };
            net_self_contains((const struct sockaddr *)&any);
        }
        if (p[0].revents)
            break;
        if (p[1].revents)
            accept_into(e, e->l.relay, flow_main);
        if (p[2].revents)
            receive_dns(e);
        if (p[3].revents)
            accept_into(e, e->l.dns_tcp, dns_tcp_main);
    }
    return NULL;
}

/* ---- life ------------------------------------------------------------------------ */
static int confine(net_engine *e, uint64_t caps, cell_error *err)
{
    return e->hooks.confine ? e->hooks.confine(e->hooks.user, caps, err) : 0;
}

int net_engine_start(net_engine **out, int netns_fd, const char *cell_id, const char *policy_json,
                     const net_hooks *hooks, cell_error *err)
{
    *out = NULL;
    net_engine *e = calloc(1, sizeof *e);
    if (!e)
        return util_fail(err, ENOMEM, "out of memory");
    snprintf(e->cell_id, sizeof e->cell_id, "%s", cell_id);
    if (hooks)
        e->hooks = *hooks;
    e->stop_fd = e->udp_wake = e->ns_sock = e->ns_peer = -1;
    e->l = (net_listeners){ .relay = -1, .dns_udp = -1, .dns_tcp = -1, .udp = -1, .netns = -1 };
    for (size_t i = 0; i < sizeof e->live / sizeof e->live[0]; i++)
        e->live[i] = -1;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->idle, NULL);
    if (net_policy_parse(policy_json, strlen(policy_json), &e->policy, err) < 0 || start_http(e, err) < 0)
        goto fail;
    if (!(e->pins = net_pins_new())) {
        util_fail(err, ENOMEM, "out of memory");
        goto fail;
    }
    if ((e->stop_fd = eventfd(0, EFD_CLOEXEC)) < 0 || (e->udp_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        util_fail_errno(err, "eventfd");
        goto fail;
    }
    /* CELL_EGRESS_FAST=0 keeps every flow on the relay (to compare, or
     * where the host must not get veths). */
    const char *fast = getenv("CELL_EGRESS_FAST");
    int mode = e->hooks.pod ? NET_SETUP_POD : fast && strcmp(fast, "0") == 0 ? NET_SETUP_RELAY : NET_SETUP_FAST;
    if (net_netns_setup(netns_fd, mode, &e->l, err) < 0)
        goto fail;
    if (e->l.cell_ip) {
        net_fast_hooks fh = { .decide = fast_decide, .audit = fast_audit, .confine = fast_confine, .arg = e };
        if (net_fast_start(&e->fast, &e->l, e->stop_fd, &fh, err) < 0)
            goto fail;
    }
    /* Everything privileged is done: the egress helper drops its privileges
     * here, before the threads that serve the cell exist.  Each inherits the
     * capabilities left when it starts: the fast path's thread
     * CAP_NET_ADMIN (its queue verdicts and conntrack queries), the UDP
     * thread CAP_NET_RAW (transparent reply sockets), the accepting thread
     * and every worker (HTTP, TLS, DNS parsing) none. */
    uint64_t raw = 1ull << CAP_NET_RAW, admin = e->fast ? 1ull << CAP_NET_ADMIN : 0;
    if (start_ns_maker(e, err) < 0 || confine(e, admin | raw, err) < 0 || (e->fast && net_fast_run(e->fast, err) < 0) ||
        confine(e, raw, err) < 0)
        goto fail;
    int pe = pthread_create(&e->udp_thread, NULL, udp_main, e);
    if (pe != 0) {
        errno = pe;
        util_fail_errno(err, "engine UDP thread");
        goto fail;
    }
    e->udp_on = 1;
    if (confine(e, 0, err) < 0)
        goto fail;
    if (e->fast) {
        /* Fill the host-self cache before the fast path's thread, which may
         * not refresh it itself, decides a flow; the accepting thread keeps
         * it fresh from here. */
        struct sockaddr_in any = { .sin_family = AF_INET };
        net_self_contains((const struct sockaddr *)&any);
        if (net_fast_open_route(e->fast, err) < 0)
            goto fail;
    }
    if ((pe = pthread_create(&e->thread, NULL, engine_main, e)) != 0) {
        errno = pe;
        util_fail_errno(err, "engine thread");
        goto fail;
    }
    e->thread_on = 1;
    *out = e;
    return 0;
fail:
    net_engine_stop(e);
    return -1;
}

int net_engine_set_policy(net_engine *e, const char *policy_json, cell_error *err)
{
    net_policy *p;
    if (net_policy_parse(policy_json, strlen(policy_json), &p, err) < 0)
        return -1;
    pthread_mutex_lock(&e->lock);
    net_policy *old = e->policy;
    e->policy = p;
    e->policy_gen++;        /* denied UDP pairs are decided afresh */
    pthread_mutex_unlock(&e->lock);
    net_http_pool_flush(e->http.pool);  /* no upstream connection outlives the policy it was made under */
    net_policy_unref(old);
    json_t *rec = json_pack("{s:s}", "event", "policy");
    emit(e, rec);
    return 0;
}

void net_engine_stop(net_engine *e)
{
    if (!e)
        return;
    atomic_store(&e->stopping, 1);
    if (e->stop_fd >= 0) {     /* read by nobody: every thread polls it and ends */
        uint64_t one = 1;
        if (write(e->stop_fd, &one, sizeof one) < 0) { /* an eventfd write does not fail here */ }
    }
    if (e->thread_on)
        pthread_join(e->thread, NULL);
    if (e->udp_on)
        pthread_join(e->udp_thread, NULL);     /* ends its associations */
    net_fast_stop(e->fast);                    /* audits flows the kernel still carries */
    /* Cut every relayed flow; their threads notice and end. */
    pthread_mutex_lock(&e->lock);
    for (size_t i = 0; i < sizeof e->live / sizeof e->live[0]; i++)
        if (e->live[i] >= 0)
            shutdown(e->live[i], SHUT_RDWR);
    while (e->workers > 0)
        pthread_cond_wait(&e->idle, &e->lock);
    pthread_mutex_unlock(&e->lock);
    /* Answers that came after the UDP thread ended: nobody waits for them. */
    while (e->udp_done) {
        udp_ask *q = e->udp_done;
        e->udp_done = q->next;
        free(q);
    }
    if (e->ns_sock >= 0)
        close(e->ns_sock);                     /* the netns thread reads EOF and ends */
    if (e->ns_on)
        pthread_join(e->ns_thread, NULL);
    if (e->ns_peer >= 0)
        close(e->ns_peer);
    net_listeners_close(&e->l);
    if (e->stop_fd >= 0)
        close(e->stop_fd);
    if (e->udp_wake >= 0)
        close(e->udp_wake);
    net_pins_free(e->pins);
    net_policy_unref(e->policy);
    net_http_pool_free(e->http.pool);   /* idle upstream connections: no flow uses them any more */
    SSL_CTX_free(e->upstream_tls);
    net_ca_free(e->ca);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->idle);
    free(e);
}
