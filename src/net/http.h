/* http.h: HTTP enforcement for flows an "http" rule allows: TLS interception
 * with the cell's CA, per-request checks, header middleware, audit. */
#ifndef CELL_NET_HTTP_H
#define CELL_NET_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <openssl/ssl.h>

#include "cell.h"
#include "net/ca.h"
#include "net/httpmsg.h"
#include "net/httppath.h"
#include "net/policy.h"
#include "net/upstream.h"

#define NET_HTTP_FIRST_BYTE_MS 10000  /* wait for the client's first byte */
#define NET_HTTP_HEAD_MS       30000  /* TLS handshakes and request/response heads */
#define NET_HTTP_IDLE_MS       15000  /* a kept-alive connection waits this long for its next request */
/* TLS 1.3 suites on both legs, AES-128-GCM first: as strong as needed
 * (128-bit security, like P-256 and X25519) and cheaper than AES-256. */
#define NET_HTTP_TLS13_SUITES  "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"

/* What the engine lends to an HTTP flow.  Callbacks get `arg`. */
typedef struct net_http_env {
    net_ca            *ca;                  /* issues the leaf for the pinned host */
    SSL_CTX           *upstream_tls;        /* net_http_upstream_ctx() */
    cell_net_secret_fn secret;              /* NULL: every ${secret:..} is missing */
    void              *secret_user;
    void (*audit)(void *arg, json_t *rec);  /* takes the record */
    void (*track)(void *arg, int fd, int on);
    int  (*dial)(const struct sockaddr *dst, socklen_t len);  /* connected fd or -1 with errno */
    void              *arg;
    net_http_pool     *pool;                /* the engine's keep-alive pool; NULL: a connection per request */
} net_http_env;

typedef struct net_http_flow {
    int                    cfd;             /* the cell's connection (the caller closes it) */
    const struct sockaddr *dst;             /* the original destination */
    socklen_t              dst_len;
    const char            *dst_text;        /* "IP:PORT", for the audit */
    const char            *host;            /* the pinned host name */
    const net_http_rule   *rule;
    int                    rule_index;
} net_http_flow;

/* Serve one connection of the cell: TLS (detected by its first byte) is
 * terminated with a leaf for the pinned host and re-originated with
 * verification; each request is checked, rewritten, forwarded and
 * audited, and its response relayed.  The cell's connection is kept for
 * another request when the request asked for it and the response's
 * framing marks its end (its head then says "Connection: keep-alive", else
 * "Connection: close"); a refused request ends the connection.  With env->pool,
 * the upstream connection is taken from the pool when one is idle for the
 * same host, destination and TLS, and given back when its response ended
 * cleanly (docs/egress.md, "Upstream connections"); without, each request
 * gets its own and "Connection: close".  Every failure closes the flow
 * (fail closed).  Bytes relayed each way are added to *out / *in. */
void net_http_serve(const net_http_env *env, const net_http_flow *f, uint64_t *out, uint64_t *in);

/* The client context for upstreams: the host's trust store plus the PEM
 * roots in ca_file (may be NULL), peer verification, TLS 1.2 minimum,
 * NET_HTTP_TLS13_SUITES offered in that order. */
int  net_http_upstream_ctx(SSL_CTX **out, const char *ca_file, cell_error *err);

#endif
