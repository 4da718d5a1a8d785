/* upstream.c: the keep-alive pool of one engine: idle upstream connections
 * of "http" flows and TLS sessions, keyed by pinned host, address, port, TLS. */
#include "net/upstream.h"

#include <ctype.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A key as stored: the host lower-cased without a trailing dot, the
 * destination with only family, address and port set, so memcmp compares. */
typedef struct key {
    char                    host[256];
    struct sockaddr_storage dst;
    int                     tls;
} key;

typedef struct idle {
    int     used;
    key     k;
    int     fd;
    SSL    *ssl;
    int64_t since;          /* when it was put back */
} idle;

typedef struct sess {
    SSL_SESSION *s;         /* NULL = free slot */
    key          k;
    int64_t      since;
} sess;

struct net_http_pool {
    pthread_mutex_t lock;
    unsigned        gen;
    idle            c[NET_POOL_MAX];
    sess            s[NET_POOL_SESSIONS];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 0, or -1 when the key cannot be stored (then nothing is pooled for it). */
static int make_key(key *out, const net_pool_key *k)
{
    memset(out, 0, sizeof *out);
    size_t n = k->host ? strlen(k->host) : 0;
    if (n && k->host[n - 1] == '.')
        n--;
    if (n == 0 || n >= sizeof out->host || !k->dst)
        return -1;
    for (size_t i = 0; i < n; i++)
        out->host[i] = (char)tolower((unsigned char)k->host[i]);
    out->tls = k->tls ? 1 : 0;
    if (k->dst->sa_family == AF_INET && k->dst_len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const void *)k->dst;
        struct sockaddr_in *o = (void *)&out->dst;
        o->sin_family = AF_INET;
        o->sin_port = in->sin_port;
        o->sin_addr = in->sin_addr;
        return 0;
    }
    if (k->dst->sa_family == AF_INET6 && k->dst_len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const void *)k->dst;
        struct sockaddr_in6 *o = (void *)&out->dst;
        o->sin6_family = AF_INET6;
        o->sin6_port = in6->sin6_port;
        o->sin6_addr = in6->sin6_addr;
        o->sin6_scope_id = in6->sin6_scope_id;
        return 0;
    }
    return -1;
}

static int key_eq(const key *a, const key *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

/* Closed without close_notify: the connection is idle between messages, so
 * nothing is cut, and the caller may not have SIGPIPE blocked (stop, a new
 * policy).  Marking the shutdown done also keeps OpenSSL from declaring
 * the connection's session unresumable. */
static void close_conn(int fd, SSL *ssl)
{
    if (ssl) {
        SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(ssl);
    }
    if (fd >= 0)
        close(fd);
}

/* An idle connection must have nothing to read: readable means the
 * upstream closed it, reset it, or sent bytes nobody asked for. */
static int quiet(int fd, SSL *ssl)
{
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    int r = poll(&pf, 1, 0);
    return r == 0 && !(ssl && SSL_has_pending(ssl));
}

/* Move expired connections (under the lock) into `out`, for closing outside it. */
static size_t sweep(net_http_pool *p, int64_t now, idle *out)
{
    size_t n = 0;
    for (size_t i = 0; i < NET_POOL_MAX; i++)
        if (p->c[i].used && now - p->c[i].since >= NET_POOL_IDLE_MS) {
            out[n++] = p->c[i];
            p->c[i].used = 0;
        }
    return n;
}

static void close_all(idle *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close_conn(v[i].fd, v[i].ssl);
}

net_http_pool *net_http_pool_new(void)
{
    net_http_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

/* Empty the pool; the lock is held, connections are closed by the caller. */
static size_t take_all(net_http_pool *p, idle *out)
{
    size_t n = 0;
    for (size_t i = 0; i < NET_POOL_MAX; i++)
        if (p->c[i].used) {
            out[n++] = p->c[i];
            p->c[i].used = 0;
        }
    for (size_t i = 0; i < NET_POOL_SESSIONS; i++) {
        SSL_SESSION_free(p->s[i].s);
        p->s[i].s = NULL;
    }
    return n;
}

void net_http_pool_flush(net_http_pool *p)
{
    if (!p)
        return;
    idle v[NET_POOL_MAX];
    pthread_mutex_lock(&p->lock);
    p->gen++;
    size_t n = take_all(p, v);
    pthread_mutex_unlock(&p->lock);
    close_all(v, n);
}

void net_http_pool_free(net_http_pool *p)
{
    if (!p)
        return;
    idle v[NET_POOL_MAX];
    pthread_mutex_lock(&p->lock);
    size_t n = take_all(p, v);
    pthread_mutex_unlock(&p->lock);
    close_all(v, n);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

unsigned net_http_pool_gen(net_http_pool *p)
{
    pthread_mutex_lock(&p->lock);
    unsigned g = p->gen;
    pthread_mutex_unlock(&p->lock);
    return g;
}

int net_http_pool_get(net_http_pool *p, const net_pool_key *k, int *fd, SSL **ssl)
{
    key want;
    *fd = -1;
    *ssl = NULL;
    if (!p || make_key(&want, k) < 0)
        return 0;
    for (;;) {
        idle v[NET_POOL_MAX], got = { 0 };
        pthread_mutex_lock(&p->lock);
        size_t n = sweep(p, now_ms(), v);
        idle *best = NULL;
        for (size_t i = 0; i < NET_POOL_MAX; i++)
            if (p->c[i].used && key_eq(&p->c[i].k, &want) && (!best || p->c[i].since > best->since))
                best = &p->c[i];
        if (best) {
            got = *best;
            best->used = 0;
        }
        pthread_mutex_unlock(&p->lock);
        close_all(v, n);
        if (!got.used)
            return 0;
        if (quiet(got.fd, got.ssl)) {
            *fd = got.fd;
            *ssl = got.ssl;
            return 1;
        }
        close_conn(got.fd, got.ssl);    /* stale: try the next one */
    }
}

void net_http_pool_put(net_http_pool *p, const net_pool_key *k, unsigned gen, int fd, SSL *ssl)
{
    key have;
    if (!p || make_key(&have, k) < 0 || !quiet(fd, ssl)) {
        close_conn(fd, ssl);
        return;
    }
    idle v[NET_POOL_MAX + 1];
    int64_t now = now_ms();
    pthread_mutex_lock(&p->lock);
    size_t n = sweep(p, now, v);
    size_t same = 0;
    idle *slot = NULL, *oldest = NULL;
    for (size_t i = 0; i < NET_POOL_MAX; i++) {
        idle *c = &p->c[i];
        if (!c->used) {
            slot = slot ? slot : c;
            continue;
        }
        same += key_eq(&c->k, &have);
        if (!oldest || c->since < oldest->since)
            oldest = c;
    }
    if (gen != p->gen || same >= NET_POOL_PER_KEY) {
        v[n++] = (idle){ .used = 1, .fd = fd, .ssl = ssl };
    } else {
        if (!slot) {            /* full: the least recently used goes */
            v[n++] = *oldest;
            slot = oldest;
        }
        *slot = (idle){ .used = 1, .k = have, .fd = fd, .ssl = ssl, .since = now };
    }
    pthread_mutex_unlock(&p->lock);
    close_all(v, n);
}

SSL_SESSION *net_http_pool_session(net_http_pool *p, const net_pool_key *k)
{
    key want;
    if (!p || make_key(&want, k) < 0)
        return NULL;
    SSL_SESSION *s = NULL;
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < NET_POOL_SESSIONS; i++)
        if (p->s[i].s && key_eq(&p->s[i].k, &want)) {
            /* Taken out: a TLS 1.3 ticket is meant for one connection
             * (RFC 8446, C.4); the new connection saves its own. */
            s = p->s[i].s;
            p->s[i].s = NULL;
            break;
        }
    pthread_mutex_unlock(&p->lock);
    if (s && (!SSL_SESSION_is_resumable(s) || time(NULL) >= SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s))) {
        SSL_SESSION_free(s);
        s = NULL;
    }
    return s;
}

void net_http_pool_save_session(net_http_pool *p, const net_pool_key *k, unsigned gen, SSL_SESSION *s)
{
    key have;
    if (!p || !s || !SSL_SESSION_is_resumable(s) || make_key(&have, k) < 0)
        return;
    SSL_SESSION *old = NULL;
    pthread_mutex_lock(&p->lock);
    if (gen == p->gen && SSL_SESSION_up_ref(s) == 1) {
        sess *slot = NULL;
        for (size_t i = 0; i < NET_POOL_SESSIONS && !slot; i++)
            if (p->s[i].s && key_eq(&p->s[i].k, &have))
                slot = &p->s[i];
        for (size_t i = 0; i < NET_POOL_SESSIONS && !slot; i++)
            if (!p->s[i].s)
                slot = &p->s[i];
        if (!slot) {            /* full: the oldest goes */
            slot = &p->s[0];
            for (size_t i = 1; i < NET_POOL_SESSIONS; i++)
                if (p->s[i].since < slot->since)
                    slot = &p->s[i];
        }
        old = slot->s;
        *slot = (sess){ .s = s, .k = have, .since = now_ms() };
    }
    pthread_mutex_unlock(&p->lock);
    SSL_SESSION_free(old);
}

void net_http_pool_stats(net_http_pool *p, size_t *idle_n, size_t *sessions)
{
    size_t a = 0, b = 0;
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < NET_POOL_MAX; i++)
        a += p->c[i].used != 0;
    for (size_t i = 0; i < NET_POOL_SESSIONS; i++)
        b += p->s[i].s != NULL;
    pthread_mutex_unlock(&p->lock);
    if (idle_n)
        *idle_n = a;
    if (sessions)
        *sessions = b;
}
