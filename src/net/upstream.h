/* upstream.h: one engine's (one cell's) idle keep-alive connections to the
 * upstreams of "http" rules, and TLS sessions to resume new ones with. */
#ifndef CELL_NET_UPSTREAM_H
#define CELL_NET_UPSTREAM_H

#include <stddef.h>
#include <sys/socket.h>
#include <openssl/ssl.h>

#define NET_POOL_IDLE_MS   30000  /* an idle connection older than this is closed */
#define NET_POOL_PER_KEY   8      /* idle connections per key */
#define NET_POOL_MAX       64     /* idle connections per pool (per engine) */
#define NET_POOL_SESSIONS  64     /* TLS sessions kept per pool, one per key */

/* What a connection is for: it is reused only for the same pinned host
 * name, original destination (address and port) and TLS or not. */
typedef struct net_pool_key {
    const char            *host;
    const struct sockaddr *dst;
    socklen_t              dst_len;
    int                    tls;
} net_pool_key;

typedef struct net_http_pool net_http_pool;

net_http_pool *net_http_pool_new(void);              /* NULL without memory */
/* Close every idle connection (TLS close_notify, then close) and free the
 * sessions.  NULL-safe.  Nobody may use the pool any more. */
void net_http_pool_free(net_http_pool *p);
/* Close every idle connection and forget every session (a new policy):
 * connections taken before are not accepted back (see the generation). */
void net_http_pool_flush(net_http_pool *p);
/* The flush count: pass the value read before taking or dialing a
 * connection to net_http_pool_put, which refuses it after a flush. */
unsigned net_http_pool_gen(net_http_pool *p);

/* An idle connection for `k` (most recently used first): 1 with *fd and
 * *ssl (NULL for plain) now the caller's, or 0.  Connections that are
 * readable while idle (closed by the upstream, or sent bytes nobody asked
 * for) and expired ones are closed on the way. */
int  net_http_pool_get(net_http_pool *p, const net_pool_key *k, int *fd, SSL **ssl);
/* Give an idle connection back; the pool owns it from here in every case.
 * It is closed instead when the pool changed generation since `gen`, the
 * key holds NET_POOL_PER_KEY connections already, or it is readable (bytes
 * after the response, or the upstream closed).  Beyond NET_POOL_MAX the
 * least recently used connection of the pool is closed. */
void net_http_pool_put(net_http_pool *p, const net_pool_key *k, unsigned gen, int fd, SSL *ssl);

/* A session to resume a new TLS connection for `k` with, taken out of the
 * pool (the caller frees it), or NULL. */
SSL_SESSION *net_http_pool_session(net_http_pool *p, const net_pool_key *k);
/* Keep a resumable session for `k` (the pool takes a reference of its own),
 * replacing the key's previous one; refused after a flush since `gen`. */
void net_http_pool_save_session(net_http_pool *p, const net_pool_key *k, unsigned gen, SSL_SESSION *s);

/* Idle connections and sessions held (for tests). */
void net_http_pool_stats(net_http_pool *p, size_t *idle, size_t *sessions);

#endif
