/* fast.c: the kernel fast path: each new TCP flow's SYN is held in NFQUEUE
 * until the owner decides it, and flows sent past the relay are audited from conntrack. */
#include "net/fast.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_tcp.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * Why a fast path at all: the relay moves every byte through a second TCP
 * connection and a third busy thread, which on a small machine costs about
 * half the throughput of a direct connection (docs/performance.md).  Most
 * flows need no user-space work after the decision: a tcp or host rule only
 * says who may be reached.  Those flows leave through a veth instead, with
 * the kernel forwarding them as it would any container's.  The decision
 * itself does not move: the cell's rules hold each new flow's SYN in a
 * queue and only the owner's verdict lets it go, marked, by the veth; an
 * unmarked SYN is redirected to the relay, which decides again, refuses or
 * serves it (http rules, webhooks, loopback destinations, anything this
 * file declines).  A dead owner means held SYNs are dropped: fail closed.
 *
 * The audit record of a kernel flow is written when it ends: conntrack
 * reports the flow's state changes and its end, and byte counters (IP
 * bytes, headers included: there is no payload count in the kernel's
 * flow state) are read when the flow reaches TIME_WAIT or CLOSE.
 *
 * A flow's conntrack mark is NET_FAST_MARK | generation | slot, so events
 * are matched to the flow they belong to without a tuple table, and a
 * reused tuple can never be mistaken for its predecessor.
 */

#define SLOT_BITS  10
#define SLOT_MASK  ((1u << SLOT_BITS) - 1)
#define GEN_LIMIT  ((NET_FAST_MARK - 1) >> SLOT_BITS)
#define SWEEP_MS   15000      /* how often flows without news are looked up */
#define STALE_MS   60000      /* ... once they have had no news this long */
#define IO_BUF     65536

_Static_assert(NET_FAST_MAX_FLOWS == 1 << SLOT_BITS, "a slot is the mark's low bits");

typedef struct fast_flow {
    uint32_t mark;            /* 0: free */
    uint32_t dst;             /* network order */
    uint16_t sport, dport;    /* network order */
    int      rule;
    char    *host;            /* the pinned name, or NULL */
    int64_t  start, checked;  /* ms, monotonic */
} fast_flow;

struct net_fast {
    net_fast_hooks     h;
    struct mnl_socket *queue, *events, *query;  /* the listeners', in the cell's netns */
    struct mnl_socket *route;                   /* ours, in the host's netns; see net_fast_open_route() */
    int                fwd_fd;                  /* the host's net.ipv4.ip_forward, or -1 */
    uint32_t           cell_ip;
    int                stop_fd;
    pthread_t          thread;
    int                thread_on;
    pthread_mutex_t    go_lock;
    pthread_cond_t     go_cond;
    int                go;                      /* the thread may serve (route opened, or stopping) */
    unsigned           gen, cursor, seq;
    int64_t            last_sweep;
    fast_flow          flows[NET_FAST_MAX_FLOWS];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- may a flow take the veth? ----------------------------------------------- */

/* Beyond the host, the host must route the flow for the cell; with
 * forwarding off only the host's own addresses are reachable that way, and
 * everything else stays with the relay (which connects from the host). */
static int host_forwards(net_fast *f)
{
    char c = '0';
    return f->fwd_fd >= 0 && pread(f->fwd_fd, &c, 1, 0) == 1 && c == '1';
}

static int host_is_local(net_fast *f, uint32_t dst)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_GETROUTE;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    nlh->nlmsg_seq = ++f->seq;
    struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof *rtm);
    rtm->rtm_family = AF_INET;
    rtm->rtm_dst_len = 32;
    mnl_attr_put_u32(nlh, RTA_DST, dst);
    if (!f->route || mnl_socket_sendto(f->route, nlh, nlh->nlmsg_len) < 0)
        return 0;
    ssize_t n = mnl_socket_recvfrom(f->route, buf, sizeof buf);
    if (n < (ssize_t)(sizeof(struct nlmsghdr) + sizeof(struct rtmsg)))
        return 0;
    const struct nlmsghdr *r = (const void *)buf;
    if (r->nlmsg_type != RTM_NEWROUTE || r->nlmsg_seq != f->seq)
        return 0;
    const struct rtmsg *rr = mnl_nlmsg_get_payload(r);
    return rr->rtm_type == RTN_LOCAL;
}

static fast_flow *claim(net_fast *f)
{
    for (unsigned i = 0; i < NET_FAST_MAX_FLOWS; i++) {
        unsigned slot = (f->cursor + i) & SLOT_MASK;
        if (f->flows[slot].mark == 0) {
            f->cursor = slot + 1;
            f->gen = (f->gen + 1) % GEN_LIMIT;
            f->flows[slot].mark = NET_FAST_MARK | f->gen << SLOT_BITS | slot;
            return &f->flows[slot];
        }
    }
    return NULL;
}

/* The mark for a held packet: a fast flow's, or 0 for the relay. */
static uint32_t decide_packet(net_fast *f, const uint8_t *p, size_t len)
{
    if (len < 20 || p[0] >> 4 != 4)
        return 0;
    size_t ihl = (size_t)(p[0] & 15) * 4;
    if (ihl < 20 || p[9] != IPPROTO_TCP || len < ihl + 14)
        return 0;
    const uint8_t *tcp = p + ihl;
    if ((tcp[13] & 0x12) != 0x02)   /* a first SYN (SYN, no ACK); anything else: the relay */
        return 0;
    struct sockaddr_in dst = { .sin_family = AF_INET };
    memcpy(&dst.sin_addr, p + 16, 4);
    memcpy(&dst.sin_port, tcp + 2, 2);
    char host[256] = "";
    int rule = -1;
    if (f->h.decide(f->h.arg, &dst, host, sizeof host, &rule) != 1)
        return 0;
    if (!host_forwards(f) && !host_is_local(f, dst.sin_addr.s_addr))
        return 0;
    fast_flow *fl = claim(f);
    if (!fl)
        return 0;
    fl->dst = dst.sin_addr.s_addr;
    fl->dport = dst.sin_port;
    memcpy(&fl->sport, tcp, 2);
    fl->rule = rule;
    fl->host = host[0] ? strdup(host) : NULL;
    fl->start = fl->checked = now_ms();
    return fl->mark;
}

/* ---- the queue ------------------------------------------------------------------ */
typedef struct verdicts {
    char   buf[IO_BUF];
    size_t len;
} verdicts;

static void verdicts_flush(net_fast *f, verdicts *v)
{
    /* A lost verdict leaves its SYN held until the queue drops it; the
     * client retries and is decided again. */
    if (v->len && mnl_socket_sendto(f->queue, v->buf, v->len) < 0) { /* nothing better to do */ }
    v->len = 0;
}

static void verdict_put(net_fast *f, verdicts *v, uint32_t id, uint32_t mark)
{
    if (v->len + 128 > sizeof v->buf)
        verdicts_flush(f, v);
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(v->buf + v->len);
    nlh->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    struct nfgenmsg *g = mnl_nlmsg_put_extra_header(nlh, sizeof *g);
    g->nfgen_family = AF_UNSPEC;
    g->version = NFNETLINK_V0;
    g->res_id = htons(NET_FAST_QUEUE);
    struct nfqnl_msg_verdict_hdr vh = { .verdict = htonl(NF_ACCEPT), .id = htonl(id) };
    mnl_attr_put(nlh, NFQA_VERDICT_HDR, sizeof vh, &vh);
    if (mark)
        mnl_attr_put_u32(nlh, NFQA_MARK, htonl(mark));
    v->len += nlh->nlmsg_len;
}

typedef struct queue_ctx {
    net_fast *f;
    verdicts *v;
} queue_ctx;

static int keep_attr(const struct nlattr *a, void *data, unsigned max)
{
    const struct nlattr **tb = data;
    unsigned type = mnl_attr_get_type(a);
    if (type <= max)
        tb[type] = a;
    return MNL_CB_OK;
}

static int queue_attr(const struct nlattr *a, void *data) { return keep_attr(a, data, NFQA_MAX); }
static int ct_attr(const struct nlattr *a, void *data) { return keep_attr(a, data, CTA_MAX); }

static int on_packet(const struct nlmsghdr *nlh, void *data)
{
    queue_ctx *q = data;
    const struct nlattr *tb[NFQA_MAX + 1] = { 0 };
    if (NFNL_MSG_TYPE(nlh->nlmsg_type) != NFQNL_MSG_PACKET ||
        mnl_attr_parse(nlh, sizeof(struct nfgenmsg), queue_attr, tb) < 0 || !tb[NFQA_PACKET_HDR] ||
        mnl_attr_get_payload_len(tb[NFQA_PACKET_HDR]) < sizeof(struct nfqnl_msg_packet_hdr))
        return MNL_CB_OK;
    const struct nfqnl_msg_packet_hdr *ph = mnl_attr_get_payload(tb[NFQA_PACKET_HDR]);
    uint32_t mark = 0;
    if (tb[NFQA_PAYLOAD])
        mark = decide_packet(q->f, mnl_attr_get_payload(tb[NFQA_PAYLOAD]), mnl_attr_get_payload_len(tb[NFQA_PAYLOAD]));
    verdict_put(q->f, q->v, ntohl(ph->packet_id), mark);
    return MNL_CB_OK;
}

static void read_queue(net_fast *f, char *buf, verdicts *v)
{
    queue_ctx q = { f, v };
    for (;;) {
        ssize_t n = recv(mnl_socket_get_fd(f->queue), buf, IO_BUF, MSG_DONTWAIT);
        if (n <= 0)
            break;      /* EAGAIN; ENOBUFS: the kernel dropped those SYNs, their clients retry */
        mnl_cb_run(buf, (size_t)n, 0, 0, on_packet, &q);
    }
    verdicts_flush(f, v);
}

/* ---- conntrack -------------------------------------------------------------------- */
typedef struct ct_info {
    uint32_t mark;
    int      state;           /* TCP_CONNTRACK_*, or -1 */
    int      counted;
    uint64_t out, in;         /* IP bytes, cell -> upstream and back */
} ct_info;

static uint64_t counter_bytes(const struct nlattr *nest)
{
    const struct nlattr *tb[CTA_COUNTERS_MAX + 1] = { 0 };
    if (mnl_attr_parse_nested(nest, ct_attr, tb) < 0 || !tb[CTA_COUNTERS_BYTES])
        return 0;
    return be64toh(mnl_attr_get_u64(tb[CTA_COUNTERS_BYTES]));
}

static int tcp_state(const struct nlattr *protoinfo)
{
    const struct nlattr *pi[CTA_PROTOINFO_MAX + 1] = { 0 }, *tcp[CTA_PROTOINFO_TCP_MAX + 1] = { 0 };
    if (mnl_attr_parse_nested(protoinfo, ct_attr, pi) < 0 || !pi[CTA_PROTOINFO_TCP] ||
        mnl_attr_parse_nested(pi[CTA_PROTOINFO_TCP], ct_attr, tcp) < 0 || !tcp[CTA_PROTOINFO_TCP_STATE])
        return -1;
    return mnl_attr_get_u8(tcp[CTA_PROTOINFO_TCP_STATE]);
}

static int parse_ct(const struct nlmsghdr *nlh, void *data)
{
    ct_info *c = data;
    const struct nlattr *tb[CTA_MAX + 1] = { 0 };
    *c = (ct_info){ .state = -1 };
    if (mnl_attr_parse(nlh, sizeof(struct nfgenmsg), ct_attr, tb) < 0)
        return MNL_CB_OK;
    if (tb[CTA_MARK])
        c->mark = ntohl(mnl_attr_get_u32(tb[CTA_MARK]));
    if (tb[CTA_PROTOINFO])
        c->state = tcp_state(tb[CTA_PROTOINFO]);
    if (tb[CTA_COUNTERS_ORIG] && tb[CTA_COUNTERS_REPLY]) {
        c->counted = 1;
        c->out = counter_bytes(tb[CTA_COUNTERS_ORIG]);
        c->in = counter_bytes(tb[CTA_COUNTERS_REPLY]);
    }
    return MNL_CB_OK;
}

/* The flow's conntrack entry now (by its original tuple); -1 if gone. */
static int lookup(net_fast *f, const fast_flow *fl, ct_info *out)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = ++f->seq;
    struct nfgenmsg *g = mnl_nlmsg_put_extra_header(nlh, sizeof *g);
    g->nfgen_family = AF_INET;
    g->version = NFNETLINK_V0;
    struct nlattr *tuple = mnl_attr_nest_start(nlh, CTA_TUPLE_ORIG);
    struct nlattr *ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
    mnl_attr_put_u32(nlh, CTA_IP_V4_SRC, f->cell_ip);
    mnl_attr_put_u32(nlh, CTA_IP_V4_DST, fl->dst);
    mnl_attr_nest_end(nlh, ip);
    struct nlattr *proto = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
    mnl_attr_put_u8(nlh, CTA_PROTO_NUM, IPPROTO_TCP);
    mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, fl->sport);
    mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, fl->dport);
    mnl_attr_nest_end(nlh, proto);
    mnl_attr_nest_end(nlh, tuple);
    *out = (ct_info){ .state = -1 };
    if (mnl_socket_sendto(f->query, nlh, nlh->nlmsg_len) < 0)
        return -1;
    unsigned seq = nlh->nlmsg_seq, portid = mnl_socket_get_portid(f->query);
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(f->query, buf, sizeof buf);
        if (n <= 0)
            return -1;
        int rc = mnl_cb_run(buf, (size_t)n, seq, portid, parse_ct, out);
        if (rc < 0)
            return -1;      /* ENOENT: gone */
        if (rc == MNL_CB_STOP)
            return out->mark == fl->mark ? 0 : -1;
    }
}

static void finish(net_fast *f, fast_flow *fl, const ct_info *c, const char *reason)
{
    char src[32], dst[32], ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &f->cell_ip, ip, sizeof ip);
    snprintf(src, sizeof src, "%s:%u", ip, ntohs(fl->sport));
    inet_ntop(AF_INET, &fl->dst, ip, sizeof ip);
    snprintf(dst, sizeof dst, "%s:%u", ip, ntohs(fl->dport));
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:I}", "event", "connect", "transport", "tcp",
                            "src", src, "dst", dst, "rule", fl->rule, "verdict", "allow", "path", "kernel",
                            "durationMs", (json_int_t)(now_ms() - fl->start));
    if (rec && fl->host)
        json_object_set_new(rec, "host", json_string(fl->host));
    if (rec && c && c->counted) {
        json_object_set_new(rec, "bytesOut", json_integer((json_int_t)c->out));
        json_object_set_new(rec, "bytesIn", json_integer((json_int_t)c->in));
    }
    if (rec && reason)
        json_object_set_new(rec, "reason", json_string(reason));
    if (rec)
        f->h.audit(f->h.arg, rec);
    free(fl->host);
    memset(fl, 0, sizeof *fl);
}

/* A flow that ended (TIME_WAIT: both FINs acked; CLOSE: reset) has all its
 * bytes counted; its entry lingers, so the counters are read from it. */
static void ended(net_fast *f, fast_flow *fl)
{
    ct_info now;
    if (lookup(f, fl, &now) == 0)
        finish(f, fl, &now, NULL);
    else
        finish(f, fl, NULL, "ended; byte counts unavailable");
}

static int on_event(const struct nlmsghdr *nlh, void *data)
{
    net_fast *f = data;
    ct_info c;
    parse_ct(nlh, &c);
    if (!(c.mark & NET_FAST_MARK))
        return MNL_CB_OK;
    fast_flow *fl = &f->flows[c.mark & SLOT_MASK];
    if (fl->mark != c.mark)
        return MNL_CB_OK;
    fl->checked = now_ms();
    if (NFNL_MSG_TYPE(nlh->nlmsg_type) == IPCTNL_MSG_CT_DELETE)
        finish(f, fl, &c, NULL);
    else if (c.state == TCP_CONNTRACK_TIME_WAIT || c.state == TCP_CONNTRACK_CLOSE)
        ended(f, fl);
    return MNL_CB_OK;
}

static void read_events(net_fast *f, char *buf)
{
    for (;;) {
        ssize_t n = recv(mnl_socket_get_fd(f->events), buf, IO_BUF, MSG_DONTWAIT);
        if (n < 0 && errno == ENOBUFS)
            continue;   /* events were lost: the sweep finds those flows */
        if (n <= 0)
            break;
        mnl_cb_run(buf, (size_t)n, 0, 0, on_event, f);
    }
}

/* Flows with no news for a while are looked up: gone ones (their end was
 * among lost events) get their record now. */
static void sweep(net_fast *f)
{
    int64_t now = now_ms();
    f->last_sweep = now;
    for (unsigned i = 0; i < NET_FAST_MAX_FLOWS; i++) {
        fast_flow *fl = &f->flows[i];
        if (!fl->mark || now - fl->checked < STALE_MS)
            continue;
        ct_info c;
        if (lookup(f, fl, &c) < 0)
            finish(f, fl, NULL, "ended; byte counts unavailable (conntrack events lost)");
        else if (c.state == TCP_CONNTRACK_TIME_WAIT || c.state == TCP_CONNTRACK_CLOSE)
            finish(f, fl, &c, NULL);
        else
            fl->checked = now;
    }
}

static void release(net_fast *f)
{
    pthread_mutex_lock(&f->go_lock);
    f->go = 1;
    pthread_cond_broadcast(&f->go_cond);
    pthread_mutex_unlock(&f->go_lock);
}

static void *fast_main(void *arg)
{
    net_fast *f = arg;
    pthread_mutex_lock(&f->go_lock);
    while (!f->go)
        pthread_cond_wait(&f->go_cond, &f->go_lock);
    pthread_mutex_unlock(&f->go_lock);
    /* This thread alone may keep CAP_NET_ADMIN (verdicts, conntrack): the
     * egress helper forbids it new sockets, so none it could write to in
     * the host's netns was opened with that capability. */
    if (f->h.confine && f->h.confine(f->h.arg) < 0)
        return NULL;    /* held SYNs are dropped: fail closed */
    char *buf = malloc(IO_BUF);
    verdicts *v = malloc(sizeof *v);
    if (!buf || !v) {
        free(buf);
        free(v);
        return NULL;    /* held SYNs are dropped: the cell's TCP fails closed */
    }
    v->len = 0;
    f->last_sweep = now_ms();
    for (;;) {
        struct pollfd p[3] = {
            { .fd = f->stop_fd, .events = POLLIN },
            { .fd = mnl_socket_get_fd(f->queue), .events = POLLIN },
            { .fd = mnl_socket_get_fd(f->events), .events = POLLIN },
        };
        int n = poll(p, 3, SWEEP_MS);
        if (n < 0 && errno != EINTR)
            break;
        if (p[0].revents)
            break;
        if (p[1].revents)
            read_queue(f, buf, v);
        if (p[2].revents)
            read_events(f, buf);
        if (now_ms() - f->last_sweep >= SWEEP_MS)
            sweep(f);
    }
    free(buf);
    free(v);
    return NULL;
}

int net_fast_start(net_fast **out, const net_listeners *l, int stop_fd, const net_fast_hooks *hooks, cell_error *err)
{
    *out = NULL;
    net_fast *f = calloc(1, sizeof *f);
    if (!f)
        return util_fail(err, ENOMEM, "out of memory");
    f->h = *hooks;
    f->queue = l->queue;
    f->events = l->ct_events;
    f->query = l->ct_query;
    f->cell_ip = l->cell_ip;
    f->stop_fd = stop_fd;
    f->fwd_fd = open("/proc/sys/net/ipv4/ip_forward", O_RDONLY | O_CLOEXEC);
    pthread_mutex_init(&f->go_lock, NULL);
    pthread_cond_init(&f->go_cond, NULL);
    *out = f;
    return 0;
}

/* rtnetlink in the host's netns: the kernel lets a socket change routes or
 * links only if whoever opened it had CAP_NET_ADMIN, so it is opened by a
 * thread that has none (in the egress helper, after the drop). */
int net_fast_open_route(net_fast *f, cell_error *err)
{
    int rc = 0;
    f->route = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (!f->route || mnl_socket_bind(f->route, 0, MNL_SOCKET_AUTOPID) < 0)
        rc = util_fail_errno(err, "route netlink socket for the fast path");
    release(f);
    return rc;
}

int net_fast_run(net_fast *f, cell_error *err)
{
    int pe = pthread_create(&f->thread, NULL, fast_main, f);
    if (pe != 0) {
        errno = pe;
        return util_fail_errno(err, "fast path thread");
    }
    f->thread_on = 1;
    return 0;
}

void net_fast_stop(net_fast *f)
{
    if (!f)
        return;
    if (f->thread_on) {
        release(f);                      /* if it still waits: stop_fd ends it */
        pthread_join(f->thread, NULL);   /* the caller made stop_fd readable */
    }
    for (unsigned i = 0; i < NET_FAST_MAX_FLOWS; i++) {
        fast_flow *fl = &f->flows[i];
        if (!fl->mark)
            continue;
        ct_info c;
        if (f->query && lookup(f, fl, &c) == 0)
            finish(f, fl, &c, c.state == TCP_CONNTRACK_TIME_WAIT || c.state == TCP_CONNTRACK_CLOSE ? NULL
                                                                                                 : "cut: the cell stopped");
        else
            finish(f, fl, NULL, "cut: the cell stopped");
    }
    if (f->route)
        mnl_socket_close(f->route);
    if (f->fwd_fd >= 0)
        close(f->fwd_fd);
    pthread_mutex_destroy(&f->go_lock);
    pthread_cond_destroy(&f->go_cond);
    free(f);
}
