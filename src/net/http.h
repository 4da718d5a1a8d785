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
#include "net/policy.h"
#include "net/upstream.h"

#define NET_HTTP_FIRST_BYTE_MS 10000  /* wait for the client's first byte */
#define NET_HTTP_HEAD_MS       30000  /* TLS handshakes and request/response heads */
#define NET_HTTP_IDLE_MS       15000  /* a kept-alive connection waits this long for its next request */
#define NET_HTTP_MAX_HEADERS   128
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

/* ---- pure pieces (unit-tested) ------------------------------------------- */

/* Host names equal without case and a trailing dot (SNI vs the pinned host). */
int  net_http_name_equal(const char *a, const char *b);
/* A Host header value: the pinned host, optionally ":PORT" (digits). */
int  net_http_host_matches(const char *value, const char *pinned);
/* NULL if the rule allows `method` on `path` (the URL's path, no query),
 * else why not, as a short sentence.  With path prefixes, paths that are
 * not canonical (dot segments, encoded dots or slashes) are refused, so a
 * prefix cannot be escaped upstream. */
const char *net_http_check(const net_http_rule *r, const char *method, const char *path);

/* The request head forwarded upstream: "METHOD TARGET HTTP/1.1", the
 * client's headers minus hop-by-hop and framing ones, minus the rule's
 * remove_headers and every header it sets; then the rule's set_headers
 * with ${secret:NAME} expanded, then `framing` (e.g. "Content-Length: 5\r\n",
 * may be ""), then "Connection: close" unless `keep_alive` (HTTP/1.1
 * keeps the connection by default, so nothing is added).  A secret that is
 * missing (or holds CR/LF/NUL) fails with its name in `missing`.  *out
 * holds secrets: OPENSSL_cleanse() it before free(). */
int  net_http_build_head(const net_http_rule *r, const char *method, const char *target, const net_header *hdrs,
                         size_t n, const char *framing, int keep_alive, cell_net_secret_fn secret, void *user,
                         char **out, size_t *len, char *missing, size_t missing_size);

#endif
