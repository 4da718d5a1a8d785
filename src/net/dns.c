/* dns.c: the cell's resolver: answers a cell's queries as its policy allows,
 * forwards them to the upstreams (UDP, then TCP) and pins the A records it hands out. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <ldns/ldns.h>

#include "net/dns.h"
#include "net/screen.h"
#include "util/util.h"

/* ---- the pin table ------------------------------------------------------------- */

/* A cell chooses what it resolves, so the table is bounded: a full table
 * evicts the entry that would expire soonest. */
#define PINS_MAX        4096
#define PINS_BUCKETS    1024            /* a power of two */
#define PIN_TTL_MIN_S   5
#define PIN_TTL_MAX_S   3600
#define PINS_SWEEP_MS   60000           /* full sweep of expired entries at most this often */

typedef struct pin {
    struct pin *next;
    int64_t     expires_ms;             /* CLOCK_MONOTONIC */
    uint8_t     len;                    /* 4 (IPv4) or 16 (IPv6) */
    uint8_t     addr[16];
    char        name[256];
} pin;

struct net_pins {
    pthread_mutex_t lock;
    pin            *buckets[PINS_BUCKETS];
    size_t          count;
    uint32_t        seed;               /* random, so a cell cannot aim its answers at one bucket */
    int64_t         next_sweep_ms;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The key of an address: IPv4-mapped IPv6 is IPv4, as the engine sees flows. */
static int pin_key(const struct sockaddr *sa, uint8_t addr[16], uint8_t *len)
{
    if (sa->sa_family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        *len = 4;
        return 0;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a)) {
        memcpy(addr, a->s6_addr + 12, 4);
        *len = 4;
    } else {
        memcpy(addr, a->s6_addr, 16);
        *len = 16;
    }
    return 0;
}

static size_t pin_hash(const net_pins *pins, const uint8_t *addr, uint8_t len)
{
    uint32_t h = 2166136261u ^ pins->seed;          /* FNV-1a */
    for (uint8_t i = 0; i < len; i++)
        h = (h ^ addr[i]) * 16777619u;
    return h & (PINS_BUCKETS - 1);
}

/* The link that points at the entry for addr, or at the chain's NULL end. */
static pin **pin_slot(net_pins *pins, const uint8_t *addr, uint8_t len)
{
    pin **slot = &pins->buckets[pin_hash(pins, addr, len)];
    while (*slot && ((*slot)->len != len || memcmp((*slot)->addr, addr, len) != 0))
        slot = &(*slot)->next;
    return slot;
}

static void pin_unlink(net_pins *pins, pin **slot)
{
    pin *p = *slot;
    *slot = p->next;
    free(p);
    pins->count--;
}

static void pins_sweep(net_pins *pins, int64_t now)
{
    for (size_t b = 0; b < PINS_BUCKETS; b++) {
        pin **slot = &pins->buckets[b];
        while (*slot) {
            if ((*slot)->expires_ms <= now)
                pin_unlink(pins, slot);
            else
                slot = &(*slot)->next;
        }
    }
    pins->next_sweep_ms = now + PINS_SWEEP_MS;
}

static void pins_evict_soonest(net_pins *pins)
{
    pin **victim = NULL;
    for (size_t b = 0; b < PINS_BUCKETS; b++)
        for (pin **slot = &pins->buckets[b]; *slot; slot = &(*slot)->next)
            if (!victim || (*slot)->expires_ms < (*victim)->expires_ms)
                victim = slot;
    if (victim)
        pin_unlink(pins, victim);
}

/* Lower case, no trailing dot: the form host rules compare against. */
static void name_copy_lower(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n > 0 && src[n - 1] == '.')
        n--;
    if (n >= size)
        n = size - 1;
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i] >= 'A' && src[i] <= 'Z' ? (char)(src[i] - 'A' + 'a') : src[i];
    dst[n] = '\0';
}

net_pins *net_pins_new(void)
{
    net_pins *pins = calloc(1, sizeof *pins);
    if (!pins)
        return NULL;
    if (pthread_mutex_init(&pins->lock, NULL) != 0) {
        free(pins);
        return NULL;
    }
    /* Without entropy the table still works; only collisions get easier. */
    if (getrandom(&pins->seed, sizeof pins->seed, GRND_NONBLOCK) != (ssize_t)sizeof pins->seed)
        pins->seed = (uint32_t)now_ms();
    pins->next_sweep_ms = now_ms() + PINS_SWEEP_MS;
    return pins;
}

void net_pins_free(net_pins *pins)
{
    if (!pins)
        return;
    for (size_t b = 0; b < PINS_BUCKETS; b++)
        while (pins->buckets[b])
            pin_unlink(pins, &pins->buckets[b]);
    pthread_mutex_destroy(&pins->lock);
    free(pins);
}

/* Called locked: the entry for addr, made room for and created if new. */
static pin *pin_get(net_pins *pins, const uint8_t *addr, uint8_t len, int64_t now)
{
    pin **slot = pin_slot(pins, addr, len);
    if (*slot)
        return *slot;
    if (pins->count >= PINS_MAX) {
        pins_sweep(pins, now);
        if (pins->count >= PINS_MAX)
            pins_evict_soonest(pins);
        slot = pin_slot(pins, addr, len);      /* the chain may have changed */
    }
    pin *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->len = len;
    memcpy(p->addr, addr, len);
    *slot = p;
    pins->count++;
    return p;
}

void net_pins_add(net_pins *pins, const struct sockaddr *addr, const char *name, uint32_t ttl_s)
{
    uint8_t key[16], len;
    if (!pins || !addr || !name || pin_key(addr, key, &len) < 0)
        return;
    uint32_t ttl = ttl_s < PIN_TTL_MIN_S ? PIN_TTL_MIN_S : ttl_s > PIN_TTL_MAX_S ? PIN_TTL_MAX_S : ttl_s;
    int64_t now = now_ms();
    pthread_mutex_lock(&pins->lock);
    if (now >= pins->next_sweep_ms)
        pins_sweep(pins, now);
    /* An address answers for the name last resolved to it: the name the
     * cell is about to connect to. */
    pin *p = pin_get(pins, key, len, now);
    if (p) {
        p->expires_ms = now + (int64_t)ttl * 1000;
        name_copy_lower(p->name, sizeof p->name, name);
    }
    pthread_mutex_unlock(&pins->lock);
}

int net_pins_lookup(net_pins *pins, const struct sockaddr *addr, char *name, size_t size)
{
    uint8_t key[16], len;
    if (name && size)
        name[0] = '\0';
    if (!pins || !addr || pin_key(addr, key, &len) < 0)
        return 0;
    int found = 0;
    int64_t now = now_ms();
    pthread_mutex_lock(&pins->lock);
    pin **slot = pin_slot(pins, key, len);
    if (*slot && (*slot)->expires_ms <= now) {
        pin_unlink(pins, slot);
    } else if (*slot) {
        found = 1;
        if (name && size)
            snprintf(name, size, "%s", (*slot)->name);
    }
    pthread_mutex_unlock(&pins->lock);
    return found;
}

/* ---- replies we make ourselves ----------------------------------------------------- */

#define DNS_TIMEOUT_MS_DEFAULT 2000
#define DNS_MAX_MSG            65535
#define DNS_EDNS_MAX           1232     /* no IP fragmentation on the way to the upstream */
#define DNS_CNAME_HOPS         16

static atomic_int dns_timeout_ms = DNS_TIMEOUT_MS_DEFAULT;

void net_dns_set_timeout_ms(int ms)
{
    atomic_store(&dns_timeout_ms, ms > 0 ? ms : DNS_TIMEOUT_MS_DEFAULT);
}

static int wire_out(ldns_pkt *pkt, uint8_t **out, size_t *out_len, cell_error *err)
{
    ldns_status s = ldns_pkt2wire(out, pkt, out_len);
    if (s != LDNS_STATUS_OK)
        return util_fail(err, ENOMEM, "dns: cannot build a reply: %s", ldns_get_errorstr_by_id(s));
    return 0;
}

/* A reply with no answers: the query's id, opcode, RD, CD and (if it has
 * exactly one) question, so the client matches it to its query. */
static int make_reply(const ldns_pkt *q, ldns_pkt_rcode rcode, uint8_t **out, size_t *out_len,
                      net_dns_result *res, cell_error *err)
{
    ldns_pkt *r = ldns_pkt_new();
    if (!r)
        return util_fail(err, ENOMEM, "dns: cannot build a reply: out of memory");
    ldns_pkt_set_id(r, ldns_pkt_id(q));
    ldns_pkt_set_qr(r, true);
    ldns_pkt_set_opcode(r, ldns_pkt_get_opcode(q));
    ldns_pkt_set_rd(r, ldns_pkt_rd(q));
    ldns_pkt_set_cd(r, ldns_pkt_cd(q));
    ldns_pkt_set_ra(r, true);
    ldns_pkt_set_rcode(r, (uint8_t)rcode);
    int rc = 0;
    if (ldns_pkt_qdcount(q) == 1) {
        ldns_rr *qrr = ldns_rr_clone(ldns_rr_list_rr(ldns_pkt_question(q), 0));
        if (!qrr || !ldns_pkt_push_rr(r, LDNS_SECTION_QUESTION, qrr)) {
            ldns_rr_free(qrr);
            rc = util_fail(err, ENOMEM, "dns: cannot build a reply: out of memory");
        }
    }
    if (rc == 0)
        rc = wire_out(r, out, out_len, err);
    ldns_pkt_free(r);
    if (rc == 0)
        res->rcode = (int)rcode;
    return rc;
}

/* A name as policy and pins see it: presentation form (escapes keep a
 * label's own dots apart from the separators), lower case, no trailing dot. */
static int name_text(const ldns_rdf *dname, char out[256])
{
    char *s = dname ? ldns_rdf2str(dname) : NULL;
    if (!s)
        return -1;
    size_t n = strlen(s);
    if (n > 0 && s[n - 1] == '.')
        n--;
    int rc = n < 256 ? 0 : -1;          /* escapes can make a legal name too long to log */
    if (rc == 0)
        name_copy_lower(out, 256, s);
    free(s);
    return rc;
}

/* ---- talking to an upstream ------------------------------------------------------ */

static socklen_t sa_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pf = { .fd = fd, .events = events };
        int n = poll(&pf, 1, (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* All of buf over a stream socket, or -1 at the deadline, EOF or an error. */
static int stream_io(int fd, void *buf, size_t len, int writing, int64_t deadline)
{
    size_t done = 0;
    while (done < len) {
        if (wait_fd(fd, writing ? POLLOUT : POLLIN, deadline) < 0)
            return -1;
        ssize_t n = writing ? send(fd, (char *)buf + done, len - done, MSG_NOSIGNAL)
                            : recv(fd, (char *)buf + done, len - done, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

static int same_question(const ldns_rr *a, const ldns_rr *b)
{
    return ldns_rr_get_type(a) == ldns_rr_get_type(b) && ldns_rr_get_class(a) == ldns_rr_get_class(b)
        && ldns_dname_compare(ldns_rr_owner(a), ldns_rr_owner(b)) == 0;
}

/* Is buf the answer to our query (id, QR, the one question)?  Anything
 * else is ignored, so an off-path guess must hit both id and port. */
static ldns_pkt *match_reply(const uint8_t *buf, size_t len, uint16_t id, const ldns_rr *question)
{
    ldns_pkt *r = NULL;
    if (len < LDNS_HEADER_SIZE || (uint16_t)(buf[0] << 8 | buf[1]) != id
        || ldns_wire2pkt(&r, buf, len) != LDNS_STATUS_OK)
        return NULL;
    if (!ldns_pkt_qr(r) || ldns_pkt_qdcount(r) != 1
        || !same_question(ldns_rr_list_rr(ldns_pkt_question(r), 0), question)) {
        ldns_pkt_free(r);
        return NULL;
    }
    return r;
}

typedef struct exchange {
    const struct sockaddr_storage *upstream;
    const uint8_t *msg;                 /* our query, with `id` */
    size_t         msg_len;
    uint16_t       id;
    const ldns_rr *question;
    uint8_t       *buf;                 /* DNS_MAX_MSG bytes for the reply */
    size_t         reply_len;
} exchange;

static ldns_pkt *exchange_udp(exchange *x, int64_t deadline)
{
    _cleanup_close_ int fd = socket(x->upstream->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    /* connect(): the kernel drops datagrams from anyone but the upstream. */
    if (fd < 0 || connect(fd, (const struct sockaddr *)x->upstream, sa_len(x->upstream)) < 0
        || send(fd, x->msg, x->msg_len, 0) != (ssize_t)x->msg_len)
        return NULL;
    for (;;) {
        if (wait_fd(fd, POLLIN, deadline) < 0)
            return NULL;
        ssize_t n = recv(fd, x->buf, DNS_MAX_MSG, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return NULL;                /* e.g. ECONNREFUSED: nobody listens there */
        ldns_pkt *r = match_reply(x->buf, (size_t)n, x->id, x->question);
        if (r) {
            x->reply_len = (size_t)n;
            return r;
        }
    }
}

static int connect_by(int fd, const struct sockaddr_storage *ss, int64_t deadline)
{
    if (connect(fd, (const struct sockaddr *)ss, sa_len(ss)) == 0)
        return 0;
    if (errno != EINPROGRESS || wait_fd(fd, POLLOUT, deadline) < 0)
        return -1;
    int soerr = 0;
    socklen_t l = sizeof soerr;
    return getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l) == 0 && soerr == 0 ? 0 : -1;
}

static ldns_pkt *exchange_tcp(exchange *x, int64_t deadline)
{
    _cleanup_close_ int fd = socket(x->upstream->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    uint8_t hdr[2] = { (uint8_t)(x->msg_len >> 8), (uint8_t)x->msg_len };
    if (fd < 0 || connect_by(fd, x->upstream, deadline) < 0 || stream_io(fd, hdr, 2, 1, deadline) < 0
        || stream_io(fd, (void *)x->msg, x->msg_len, 1, deadline) < 0 || stream_io(fd, hdr, 2, 0, deadline) < 0)
        return NULL;
    size_t len = (size_t)hdr[0] << 8 | hdr[1];
    if (stream_io(fd, x->buf, len, 0, deadline) < 0)
        return NULL;
    ldns_pkt *r = match_reply(x->buf, len, x->id, x->question);
    if (r)
        x->reply_len = len;
    return r;
}

/* Our query for the cell's question: its RD, CD and EDNS size/DO, none of
 * its other records, and a fresh random id per send. */
static ldns_pkt *forward_query(const ldns_pkt *q, const ldns_rr *question)
{
    ldns_rdf *name = ldns_rdf_clone(ldns_rr_owner(question));
    if (!name)
        return NULL;
    uint16_t flags = (ldns_pkt_rd(q) ? LDNS_RD : 0) | (ldns_pkt_cd(q) ? LDNS_CD : 0);
    ldns_pkt *f = ldns_pkt_query_new(name, ldns_rr_get_type(question), LDNS_RR_CLASS_IN, flags);
    if (!f) {
        ldns_rdf_deep_free(name);
        return NULL;
    }
    if (ldns_pkt_edns(q)) {
        uint16_t size = ldns_pkt_edns_udp_size(q);
        ldns_pkt_set_edns_udp_size(f, size < 512 ? 512 : size > DNS_EDNS_MAX ? DNS_EDNS_MAX : size);
        ldns_pkt_set_edns_do(f, ldns_pkt_edns_do(q));
    }
    return f;
}

static int random_id(uint16_t *id)
{
    ssize_t n;
    do
        n = getrandom(id, sizeof *id, 0);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof *id ? 0 : -1;
}

/* One exchange with a fresh id over UDP or TCP; the reply (if it matched)
 * is in x->buf[0..x->reply_len). */
static ldns_pkt *ask_once(exchange *x, ldns_pkt *fwd, int tcp)
{
    uint8_t *msg = NULL;
    if (random_id(&x->id) < 0)
        return NULL;
    ldns_pkt_set_id(fwd, x->id);
    if (ldns_pkt2wire(&msg, fwd, &x->msg_len) != LDNS_STATUS_OK) {
        free(msg);
        return NULL;
    }
    x->msg = msg;
    int64_t deadline = now_ms() + atomic_load(&dns_timeout_ms);
    ldns_pkt *r = tcp ? exchange_tcp(x, deadline) : exchange_udp(x, deadline);
    free(msg);
    x->msg = NULL;
    return r;
}

/* The upstream's answer over UDP, or over TCP when UDP's was truncated. */
static ldns_pkt *ask_upstream(exchange *x, ldns_pkt *fwd)
{
    ldns_pkt *r = ask_once(x, fwd, 0);
    if (r && ldns_pkt_tc(r)) {
        ldns_pkt_free(r);
        r = ask_once(x, fwd, 1);
    }
    return r;
}

/* ---- pinning ------------------------------------------------------------------- */

static int pin_a(net_pins *pins, const ldns_rr *rr, const char *name, uint32_t ttl)
{
    const ldns_rdf *rdf = ldns_rr_rd_count(rr) == 1 ? ldns_rr_rdf(rr, 0) : NULL;
    if (!rdf || ldns_rdf_get_type(rdf) != LDNS_RDF_TYPE_A || ldns_rdf_size(rdf) != 4)
        return 0;
    struct sockaddr_in sin = { .sin_family = AF_INET };
    memcpy(&sin.sin_addr, ldns_rdf_data(rdf), 4);
    net_pins_add(pins, (struct sockaddr *)&sin, name, ttl);
    return 1;
}

/* Pin the A records of `owner` in the answer section to `name`; return the
 * CNAME target of `owner` (if any) and lower *ttl to that CNAME's TTL. */
static const ldns_rdf *pin_owner(net_pins *pins, const ldns_rr_list *an, const ldns_rdf *owner,
                                 const char *name, uint32_t *ttl, int *pinned)
{
    const ldns_rdf *target = NULL;
    uint32_t cname_ttl = *ttl;
    for (size_t i = 0; i < ldns_rr_list_rr_count(an); i++) {
        const ldns_rr *rr = ldns_rr_list_rr(an, i);
        if (ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN || ldns_dname_compare(ldns_rr_owner(rr), owner) != 0)
            continue;
        uint32_t t = ldns_rr_ttl(rr) < *ttl ? ldns_rr_ttl(rr) : *ttl;
        if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_A)
            *pinned += pin_a(pins, rr, name, t);
        else if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_CNAME && !target && ldns_rr_rd_count(rr) == 1) {
            target = ldns_rr_rdf(rr, 0);
            cname_ttl = t;
        }
    }
    *ttl = cname_ttl;
    return target;
}

/* Every A record reachable from the qname through the answer's CNAMEs is
 * pinned to the qname (what host rules name), for the chain's least TTL. */
static int pin_answer(net_pins *pins, const ldns_pkt *answer, const ldns_rdf *qname, const char *name)
{
    if (!pins || !name[0] || ldns_pkt_get_rcode(answer) != LDNS_RCODE_NOERROR)
        return 0;
    int pinned = 0;
    uint32_t ttl = UINT32_MAX;
    const ldns_rdf *owner = qname;
    for (int hop = 0; owner && hop <= DNS_CNAME_HOPS; hop++)
        owner = pin_owner(pins, ldns_pkt_answer(answer), owner, name, &ttl, &pinned);
    return pinned;
}

/* ---- DNS rebinding ------------------------------------------------------------- */

/* An address record that would point the cell's names at the host, its
 * loopback or link-local services, or another cell: the answer is withheld
 * unless the policy's "rebind" names that address.  Every A and AAAA record
 * counts (answer and additional sections), not only the pinned chain,
 * because the cell receives the upstream's bytes. */
static int rebinding(const net_policy *p, const ldns_pkt *answer, net_dns_result *res)
{
    const ldns_rr_list *sections[] = { ldns_pkt_answer(answer), ldns_pkt_additional(answer) };
    for (size_t s = 0; s < 2; s++)
        for (size_t i = 0; i < ldns_rr_list_rr_count(sections[s]); i++) {
            const ldns_rr *rr = ldns_rr_list_rr(sections[s], i);
            const ldns_rdf *rdf = ldns_rr_rd_count(rr) == 1 ? ldns_rr_rdf(rr, 0) : NULL;
            struct sockaddr_storage ss = { 0 };
            if (!rdf)
                continue;
            if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_A && ldns_rdf_size(rdf) == 4) {
                ss.ss_family = AF_INET;
                memcpy(&((struct sockaddr_in *)&ss)->sin_addr, ldns_rdf_data(rdf), 4);
            } else if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_AAAA && ldns_rdf_size(rdf) == 16) {
                ss.ss_family = AF_INET6;
                memcpy(&((struct sockaddr_in6 *)&ss)->sin6_addr, ldns_rdf_data(rdf), 16);
            } else {
                continue;
            }
            const struct sockaddr *sa = (const struct sockaddr *)&ss;
            const char *why = net_screen_reason(sa, NULL);
            if (!why || net_policy_rebind_ok(p, sa, net_self_contains(sa)))
                continue;
            char text[INET6_ADDRSTRLEN] = "?";
            inet_ntop(ss.ss_family, ss.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                                                            : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr,
                      text, sizeof text);
            snprintf(res->refused, sizeof res->refused, "answer points at %s, %s (DNS rebinding)", text, why);
            return 1;
        }
    return 0;
}

/* ---- answering ----------------------------------------------------------------- */

static int usable(ldns_pkt_rcode rcode)
{
    /* These say "this server cannot help", not "this is the answer". */
    return rcode != LDNS_RCODE_SERVFAIL && rcode != LDNS_RCODE_REFUSED;
}

static int forward(const net_policy *p, net_pins *pins, const ldns_pkt *q, const ldns_rr *question,
                   uint8_t **out, size_t *out_len, net_dns_result *res, cell_error *err)
{
    const net_dns_config *d = net_policy_dns(p);
    res->forwarded = 1;
    ldns_pkt *fwd = forward_query(q, question);
    _cleanup_free_ uint8_t *buf = malloc(DNS_MAX_MSG);
    if (!fwd || !buf) {
        ldns_pkt_free(fwd);
        return util_fail(err, ENOMEM, "dns: cannot forward %s: out of memory", res->qname);
    }
    ldns_pkt *answer = NULL;
    exchange x = { .question = question, .buf = buf };
    for (size_t i = 0; i < d->n_upstreams && !answer; i++) {
        x.upstream = &d->upstreams[i];
        answer = ask_upstream(&x, fwd);
        if (answer && !usable(ldns_pkt_get_rcode(answer))) {
            ldns_pkt_free(answer);
            answer = NULL;
        }
    }
    ldns_pkt_free(fwd);
    if (!answer)
        return make_reply(q, LDNS_RCODE_SERVFAIL, out, out_len, res, err);
    if (rebinding(p, answer, res)) {
        ldns_pkt_free(answer);
        res->blocked = 1;
        return make_reply(q, LDNS_RCODE_REFUSED, out, out_len, res, err);
    }
    res->rcode = (int)ldns_pkt_get_rcode(answer);
    res->n_pinned = pin_answer(pins, answer, ldns_rr_owner(question), res->qname);
    ldns_pkt_free(answer);
    /* The upstream's bytes as they came, under the cell's id. */
    if (!(*out = malloc(x.reply_len)))
        return util_fail(err, ENOMEM, "dns: cannot answer %s: out of memory", res->qname);
    memcpy(*out, buf, x.reply_len);
    (*out)[0] = (uint8_t)(ldns_pkt_id(q) >> 8);
    (*out)[1] = (uint8_t)ldns_pkt_id(q);
    *out_len = x.reply_len;
    return 0;
}

static int answer_query(const net_policy *p, net_pins *pins, const ldns_pkt *q, uint8_t **out,
                        size_t *out_len, net_dns_result *res, cell_error *err)
{
    const ldns_rr *question = ldns_pkt_qdcount(q) ? ldns_rr_list_rr(ldns_pkt_question(q), 0) : NULL;
    if (question)
        res->qtype = (int)ldns_rr_get_type(question);
    if (ldns_pkt_get_opcode(q) != LDNS_PACKET_QUERY)
        return make_reply(q, LDNS_RCODE_NOTIMPL, out, out_len, res, err);
    if (!question || ldns_pkt_qdcount(q) != 1 || ldns_rr_get_class(question) != LDNS_RR_CLASS_IN
        || name_text(ldns_rr_owner(question), res->qname) < 0)
        return make_reply(q, LDNS_RCODE_FORMERR, out, out_len, res, err);
    const net_dns_config *d = p ? net_policy_dns(p) : NULL;
    if (!d || d->n_upstreams == 0) {
        res->blocked = 1;
        return make_reply(q, LDNS_RCODE_REFUSED, out, out_len, res, err);
    }
    if (d->strict && !net_policy_name_resolvable(p, res->qname)) {
        res->blocked = 1;
        return make_reply(q, LDNS_RCODE_NXDOMAIN, out, out_len, res, err);
    }
    if (res->qtype == LDNS_RR_TYPE_AAAA)
        return make_reply(q, LDNS_RCODE_NOERROR, out, out_len, res, err);
    return forward(p, pins, q, question, out, out_len, res, err);
}

int net_dns_answer(const net_policy *p, net_pins *pins, const uint8_t *query, size_t len,
                   uint8_t **reply, size_t *reply_len, net_dns_result *res, cell_error *err)
{
    net_dns_result scratch;
    if (!res)
        res = &scratch;
    memset(res, 0, sizeof *res);
    *reply = NULL;
    *reply_len = 0;
    ldns_pkt *q = NULL;
    if (!query || len < LDNS_HEADER_SIZE || len > DNS_MAX_MSG || ldns_wire2pkt(&q, query, len) != LDNS_STATUS_OK)
        return util_fail(err, EINVAL, "dns: a query of %zu bytes does not parse", len);
    /* A response is never answered: no reflection between resolvers. */
    if (ldns_pkt_qr(q)) {
        ldns_pkt_free(q);
        return util_fail(err, EINVAL, "dns: a response where a query was expected");
    }
    int rc = answer_query(p, pins, q, reply, reply_len, res, err);
    ldns_pkt_free(q);
    return rc;
}
