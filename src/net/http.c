/* http.c: HTTP enforcement of "http" rules: terminates the cell's TLS with a
 * leaf from the cell's CA, checks and rewrites each request, relays it. */
#include "net/http.h"
#include "net/meter.h"
#include "util/util.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <unistd.h>

#define IO_CHUNK 16384

/* ---- one side of a flow: a socket, maybe with TLS on it -------------------- */
typedef struct conn {
    int  fd;
    SSL *ssl;
} conn;

static ssize_t conn_read(conn *c, void *data, size_t n)
{
    if (c->ssl) {
        int r = SSL_read(c->ssl, data, (int)(n > INT32_MAX ? INT32_MAX : n));
        if (r > 0)
            return r;
        return SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
    }
    for (;;) {
        ssize_t r = recv(c->fd, data, n, 0);
        if (r >= 0 || errno != EINTR)
            return r;
    }
}

static int conn_write(conn *c, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w;
        if (c->ssl) {
            int r = SSL_write(c->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
            w = r > 0 ? r : -1;
        } else {
            w = send(c->fd, p, n, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
        }
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void conn_close_tls(conn *c)
{
    if (!c->ssl)
        return;
    SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
    c->ssl = NULL;
}

/* Heads must arrive in time; bodies may stream as slowly as they like
 * (the engine cuts them at stop). */
static void set_recv_timeout(int fd, int ms)
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* ---- a flow ------------------------------------------------------------------- */
typedef struct session {
    const net_http_env  *env;
    const net_http_flow *f;
    conn                 cl, up;
    net_pool_key         key;               /* what `up` is for, in the pool */
    unsigned             gen;               /* the pool's generation when `up` was taken or dialed */
    int                  reused;            /* `up` came from the pool */
    uint64_t            *out, *in;
    char                 method[24];
    net_buf              path;              /* normal form once checked */
    char                 reason[160];
    net_buf              pending;           /* the cell's bytes past the request being served */
    int                  client_keep;       /* the request asked to keep the connection */
    int                  keep;              /* its response ended by its framing: serve another */
    int                  continued;         /* "100 Continue" was sent for this request */
    int                  metered;           /* the response gave a usage (a "meter" rule) */
    net_usage            usage;
} session;

static void audit(session *s, int status, int allow)
{
    json_t *rec = json_pack("{s:s, s:s, s:s, s:i, s:i, s:s}", "event", "http", "host", s->f->host, "dst",
                            s->f->dst_text, "status", status, "rule", s->f->rule_index, "verdict",
                            allow ? "allow" : "deny");
    if (!rec)
        return;
    if (s->method[0])
        json_object_set_new(rec, "method", json_string(s->method));
    if (s->path.d)
        json_object_set_new(rec, "path", json_string(s->path.d));
    if (s->reason[0])
        json_object_set_new(rec, "reason", json_string(s->reason));
    if (s->metered)
        json_object_set_new(rec, "usage", json_pack("{s:I, s:I, s:I}", "inputTokens", (json_int_t)s->usage.input,
                                                    "outputTokens", (json_int_t)s->usage.output, "totalTokens",
                                                    (json_int_t)s->usage.total));
    s->env->audit(s->env->arg, rec);
}

/* Answer the cell ourselves (400 malformed, 403 refused, 502 failed), then audit. */
static void refuse(session *s, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refuse(session *s, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->reason, sizeof s->reason, fmt, ap);
    va_end(ap);
    char body[256], head[256];
    int bl = snprintf(body, sizeof body, "cell egress: %s\n", s->reason);
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n",
                      status, status == 400 ? "Bad Request" : status == 403 ? "Forbidden" : "Bad Gateway", bl);
    if (conn_write(&s->cl, head, (size_t)hl) == 0 && conn_write(&s->cl, body, (size_t)bl) == 0)
        *s->in += (uint64_t)(hl + bl);
    audit(s, status, 0);
}

/* Closed without an answer: TLS problems, bytes that are not HTTP. */
static void drop(session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void drop(session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->reason, sizeof s->reason, fmt, ap);
    va_end(ap);
    audit(s, 0, 0);
}

/* 1 TLS, 0 plain text, -1 nothing arrived in time. */
static int detect_tls(int fd)
{
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    unsigned char b;
    if (poll(&pf, 1, NET_HTTP_FIRST_BYTE_MS) != 1 || recv(fd, &b, 1, MSG_PEEK) != 1)
        return -1;
    return b == 0x16;
}

static int accept_tls(session *s)
{
    SSL_CTX *ctx = NULL;
    cell_error err = { 0 };
    if (net_ca_leaf(s->env->ca, s->f->host, &ctx, &err) < 0) {
        drop(s, "TLS: no certificate for %s: %s", s->f->host, err.message);
        return -1;
    }
    s->cl.ssl = SSL_new(ctx);
    SSL_CTX_free(ctx);
    /* The engine is the server on this leg, so its order of suites wins:
     * AES-128-GCM first, as upstream (NET_HTTP_TLS13_SUITES). */
    if (s->cl.ssl) {
        SSL_set_options(s->cl.ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
        if (SSL_set_ciphersuites(s->cl.ssl, NET_HTTP_TLS13_SUITES) != 1) {
            drop(s, "TLS: cannot set the cipher suites");
            return -1;
        }
    }
    if (!s->cl.ssl || SSL_set_fd(s->cl.ssl, s->cl.fd) != 1 || SSL_accept(s->cl.ssl) != 1) {
        drop(s, "TLS handshake with the cell failed");
        return -1;
    }
    /* The name the client asked for must be the one the flow was allowed for. */
    const char *sni = SSL_get_servername(s->cl.ssl, TLSEXT_NAMETYPE_host_name);
    if (!net_http_name_equal(sni, s->f->host)) {
        drop(s, "TLS server name %.64s does not match the pinned host", sni ? sni : "(none)");
        return -1;
    }
    return 0;
}

/* Feed the cell's bytes to the request being read; bytes past its end
 * belong to the next request on the connection and wait in s->pending. */
static ssize_t client_feed(session *s, net_http_msg *m, const char *data, size_t n)
{
    ssize_t used = net_http_msg_feed(m, data, n);
    if (used >= 0 && m->done && (size_t)used < n)
        net_buf_add(&s->pending, data + used, n - (size_t)used);
    return s->pending.oom ? -1 : used;
}

/* Bytes that do not parse.  After a request line they earn a 400 and the
 * connection ends (RFC 9112, 5.1 and 11.2: a request another parser could
 * read otherwise is refused, never repaired); bytes that are not HTTP at
 * all are dropped without an answer. */
static void malformed(session *s, const net_http_msg *m)
{
    if (!net_http_msg_started(m)) {
        drop(s, "not HTTP");
        return;
    }
    snprintf(s->method, sizeof s->method, "%s", http_method_str((enum http_method)m->p.method));
    refuse(s, 400, "malformed request: %s", m->error ? m->error : "not HTTP");
}

/* Read until the request's head is complete, starting with what the cell
 * sent past the previous request.  A later request may take up to
 * NET_HTTP_IDLE_MS to start.  0, or -1 (handled; silent if nothing came). */
static int read_request_head(session *s, net_http_msg *m, int later)
{
    char data[IO_CHUNK];
    size_t total = 0;
    if (s->pending.len) {
        net_buf early = s->pending;
        s->pending = (net_buf){ 0 };
        total = early.len;
        ssize_t used = client_feed(s, m, early.d, early.len);
        net_buf_wipe(&early);
        if (used < 0) {
            malformed(s, m);
            return -1;
        }
    }
    set_recv_timeout(s->cl.fd, later ? NET_HTTP_IDLE_MS : NET_HTTP_HEAD_MS);
    while (!m->head_done) {
        ssize_t n = conn_read(&s->cl, data, sizeof data);
        if (n <= 0) {
            if (total)
                drop(s, "the request ended before its head was complete");
            return -1;
        }
        total += (size_t)n;
        if (client_feed(s, m, data, (size_t)n) < 0) {
            malformed(s, m);
            return -1;
        }
    }
    set_recv_timeout(s->cl.fd, 0);
    return 0;
}

/* The target's path in normal form (what the rule is matched on, and what
 * goes upstream, so both read the same path) and the origin-form target.
 * An absolute-form target must name the pinned host.  On refusal *status
 * is 400 (cannot be read unambiguously) or 403. */
static const char *split_target(session *s, const net_http_msg *m, net_buf *target, int *status)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    *status = 400;
    const char *url = m->url.d ? m->url.d : "";
    if (http_parser_parse_url(url, m->url.len, 0, &u) != 0)
        return "the request target is not a URL path";
    if (u.field_set & (1 << UF_HOST)) {
        char host[256];
        snprintf(host, sizeof host, "%.*s", (int)u.field_data[UF_HOST].len, url + u.field_data[UF_HOST].off);
        if (!net_http_name_equal(host, s->f->host)) {
            *status = 403;
            return "the request target names another host";
        }
    }
    int has_path = (u.field_set & (1 << UF_PATH)) != 0;
    const char *raw = has_path ? url + u.field_data[UF_PATH].off : "/";
    size_t rl = has_path ? u.field_data[UF_PATH].len : 1;
    net_buf_add(&s->path, raw, rl);     /* audited as sent if it is refused */
    char *norm = malloc(rl + 1);
    if (!norm)
        return "out of memory";
    const char *why = net_http_path_normalize(raw, rl, norm);
    if (!why) {
        net_buf_wipe(&s->path);
        net_buf_str(&s->path, norm);
        net_buf_str(target, norm);
    }
    free(norm);
    if (why)
        return why;
    if (u.field_set & (1 << UF_QUERY)) {
        net_buf_str(target, "?");
        net_buf_add(target, url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
    }
    return s->path.oom || target->oom ? "out of memory" : NULL;
}

/* Method, path and Host against the rule; NULL if allowed, else why, with
 * the status to answer. */
static const char *check_request(session *s, const net_http_msg *m, net_buf *target, int *status)
{
    *status = 403;
    if (m->p.method == HTTP_CONNECT)    /* its target is host:port, not a path */
        return net_http_check(s->f->rule, s->method, "/");
    const char *why = split_target(s, m, target, status);
    if (why)
        return why;
    *status = 403;
    int count;
    const char *host = net_http_msg_header(m, "host", &count);
    if (count == 0)
        return "the Host header is missing";
    if (!net_http_host_matches(host, s->f->host))
        return "the Host header does not match the pinned host";
    return net_http_check(s->f->rule, s->method, s->path.d);
}

static int connect_tls(session *s)
{
    const char *host = s->f->host;
    s->up.ssl = SSL_new(s->env->upstream_tls);
    if (!s->up.ssl || SSL_set_fd(s->up.ssl, s->up.fd) != 1 || SSL_set_tlsext_host_name(s->up.ssl, host) != 1)
        return -1;
    X509_VERIFY_PARAM *vp = SSL_get0_param(s->up.ssl);
    X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (X509_VERIFY_PARAM_set1_host(vp, host, 0) != 1)
        return -1;
    SSL_set_verify(s->up.ssl, SSL_VERIFY_PEER, NULL);
    /* A session from an earlier connection of this engine to the same host
     * name, address and port skips the key exchange and the certificate
     * checks; it was verified for this name when it was made. */
    SSL_SESSION *resume = net_http_pool_session(s->env->pool, &s->key);
    if (resume) {
        SSL_set_session(s->up.ssl, resume);
        SSL_SESSION_free(resume);
    }
    if (SSL_connect(s->up.ssl) == 1)
        return 0;
    long vr = SSL_get_verify_result(s->up.ssl);
    snprintf(s->reason, sizeof s->reason, "upstream TLS: %s",
             vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "handshake failed");
    return -1;
}

/* An idle pooled connection for the flow's key if `may_reuse` and there is
 * one, else a new connection to the original destination, with TLS when
 * the cell used it.  0, or -1 (refused with 502 and audited). */
static int open_upstream(session *s, int may_reuse)
{
    s->reused = 0;
    if (s->env->pool) {
        s->gen = net_http_pool_gen(s->env->pool);
        if (may_reuse && net_http_pool_get(s->env->pool, &s->key, &s->up.fd, &s->up.ssl) == 1) {
            s->reused = 1;
            s->env->track(s->env->arg, s->up.fd, 1);
            set_recv_timeout(s->up.fd, NET_HTTP_HEAD_MS);
            return 0;
        }
    }
    s->up.fd = s->env->dial(s->f->dst, s->f->dst_len);
    if (s->up.fd < 0) {
        refuse(s, 502, "upstream: %s", strerror(errno));
        return -1;
    }
    s->env->track(s->env->arg, s->up.fd, 1);
    set_recv_timeout(s->up.fd, NET_HTTP_HEAD_MS);
    if (s->key.tls && connect_tls(s) < 0) {
        char why[sizeof s->reason];
        snprintf(why, sizeof why, "%s", s->reason[0] ? s->reason : "upstream TLS: setup failed");
        refuse(s, 502, "%s", why);
        return -1;
    }
    return 0;
}

/* The upstream connection ends here (not pooled). */
static void close_upstream(session *s)
{
    conn_close_tls(&s->up);
    if (s->up.fd >= 0) {
        s->env->track(s->env->arg, s->up.fd, 0);
        close(s->up.fd);
    }
    s->up = (conn){ -1, NULL };
}

/* The response ended cleanly: keep the TLS session for new connections,
 * and the connection itself, if reusable, for the next request. */
static void release_upstream(session *s, int reusable)
{
    if (s->up.ssl && !s->reused) {
        SSL_SESSION *ss = SSL_get1_session(s->up.ssl);
        net_http_pool_save_session(s->env->pool, &s->key, s->gen, ss);
        SSL_SESSION_free(ss);
    }
    if (!reusable || !s->env->pool) {
        close_upstream(s);
        return;
    }
    s->env->track(s->env->arg, s->up.fd, 0);
    net_http_pool_put(s->env->pool, &s->key, s->gen, s->up.fd, s->up.ssl);
    s->up = (conn){ -1, NULL };
}

static int send_up(session *s, const void *data, size_t len)
{
    if (conn_write(&s->up, data, len) < 0)
        return -1;
    *s->out += len;
    return 0;
}

/* The request body as parsed, never the cell's raw bytes: with `rechunk`
 * in chunks of our own (extensions and trailers are gone), else as is
 * (its Content-Length was sent). */
static int stream_body(session *s, net_http_msg *m, int rechunk)
{
    char data[IO_CHUNK];
    for (;;) {
        if (m->body.len) {
            char size[24];
            int sl = snprintf(size, sizeof size, "%zx\r\n", m->body.len);
            int rc = (rechunk && send_up(s, size, (size_t)sl) < 0) || send_up(s, m->body.d, m->body.len) < 0 ||
                     (rechunk && send_up(s, "\r\n", 2) < 0);
            m->body.len = 0;
            if (rc)
                return -1;
        }
        if (m->done)
            return rechunk ? send_up(s, "0\r\n\r\n", 5) : 0;
        ssize_t n = conn_read(&s->cl, data, sizeof data);
        if (n <= 0 || client_feed(s, m, data, (size_t)n) < 0)
            return -1;
    }
}

/* A chunked request body is read ahead up to NET_HTTP_REFRAME_MAX; if it
 * ends there it goes upstream with a Content-Length, which every server
 * reads alike (one that ignored chunked framing could take the body for
 * a second request).  A longer one is re-chunked. */
static int read_ahead(session *s, net_http_msg *m)
{
    char data[IO_CHUNK];
    while (!m->done && m->body.len < NET_HTTP_REFRAME_MAX) {
        ssize_t n = conn_read(&s->cl, data, sizeof data);
        if (n <= 0 || client_feed(s, m, data, (size_t)n) < 0)
            return -1;
    }
    return 0;
}

/* Hop-by-hop fields of a response: this hop frames and ends the cell's
 * connection itself; trailers are not relayed. */
static int response_hop(const char *name)
{
    static const char *const hop[] = { "connection", "keep-alive", "proxy-connection", "trailer", "upgrade", NULL };
    for (const char *const *h = hop; *h; h++)
        if (strcasecmp(*h, name) == 0)
            return 1;
    return 0;
}

/* The response head, as sent to the cell, with our own Connection header
 * for the cell's connection in place of the upstream's: keep-alive when the
 * cell asked for it and the response's framing will say where it ends.
 * Injected values are redacted (same length) from the reason and values. */
static int write_response_head(session *s, net_http_msg *r, int keep, const net_redact *red)
{
    net_buf b = { 0 };
    char line[64];
    snprintf(line, sizeof line, "HTTP/1.1 %u ", r->p.status_code);
    net_buf_str(&b, line);
    if (r->url.d)
        net_redact_inplace(red, r->url.d, r->url.len);
    net_buf_str(&b, r->url.d ? r->url.d : "");
    net_buf_str(&b, "\r\n");
    for (size_t i = 0; i < r->n; i++) {
        if (response_hop(r->h[i].name))
            continue;
        net_redact_inplace(red, r->h[i].value, strlen(r->h[i].value));
        net_buf_str(&b, r->h[i].name);
        net_buf_str(&b, ": ");
        net_buf_str(&b, r->h[i].value);
        net_buf_str(&b, "\r\n");
    }
    net_buf_str(&b, keep ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
    int rc = b.oom || conn_write(&s->cl, b.d, b.len) < 0 ? -1 : 0;
    if (rc == 0)
        *s->in += b.len;
    net_buf_wipe(&b);
    return rc;
}

static int send_down(session *s, const char *data, size_t len)
{
    if (len && conn_write(&s->cl, data, len) < 0)
        return -1;
    *s->in += len;
    return 0;
}

/* The body bytes parsed so far go to the cell, redacted, framed as the
 * response said: chunked in chunks of our own (`bodied`: the response has
 * a body, so the last chunk is sent at its end), else as they came. */
static int body_down(session *s, net_http_msg *r, net_redact *red, int bodied)
{
    net_buf out = { 0 };
    const char *d = r->body.d;
    size_t len = r->body.len;
    if (red->n) {
        net_redact_feed(red, d, len, &out);
        if (r->done)
            net_redact_flush(red, &out);
        d = out.d, len = out.len;
    }
    char size[24];
    int sl = snprintf(size, sizeof size, "%zx\r\n", len);
    int rc = out.oom;
    if (!rc && len)
        rc = (r->chunked && send_down(s, size, (size_t)sl) < 0) || send_down(s, d, len) < 0 ||
             (r->chunked && send_down(s, "\r\n", 2) < 0);
    if (!rc && r->done && r->chunked && bodied)
        rc = send_down(s, "0\r\n\r\n", 5) < 0;
    if (r->body.d)
        OPENSSL_cleanse(r->body.d, r->body.len);
    r->body.len = 0;
    net_buf_wipe(&out);
    return rc ? -1 : 0;
}

/* What makes a response unfit to relay once its head parsed; NULL if fit. */
static const char *response_unfit(const net_http_msg *r, const net_redact *red)
{
    if (r->p.status_code == 101)
        return "upstream switched protocols (101), which no request asked for";
    int count;
    const char *ce = net_http_msg_header(r, "content-encoding", &count);
    if (red->n && count && (count > 1 || strcasecmp(ce, "identity") != 0))
        return "upstream response is content-encoded: redact_response cannot check it for the secret";
    return NULL;
}

/* A "meter" rule's response is read for its token usage as it streams,
 * unless it came encoded in spite of our Accept-Encoding: identity (then
 * it is relayed unmetered, as the upstream chose so, not the cell). */
static void meter_start(session *s, const net_http_msg *r, net_meter *m)
{
    int count, ccount;
    const char *ce = net_http_msg_header(r, "content-encoding", &count);
    const char *ct = net_http_msg_header(r, "content-type", &ccount);
    if (!s->f->rule->meter || (count && (count > 1 || strcasecmp(ce, "identity") != 0)))
        return;
    net_meter_init(m, (enum net_meter_kind)s->f->rule->meter, ccount == 1 ? ct : NULL);
}

#define METER_DRAIN_MAX     (64u << 20)     /* bytes read for the usage after the cell left */
#define METER_DRAIN_IDLE_MS 120000          /* the longest wait for one of them */

/* The cell left in the middle of a metered response (its connection
 * failed): the model bills what it generates all the same, so the rest is
 * read for its usage, bounded in bytes and per read; none of it goes
 * anywhere.  Otherwise an agent could read the answer and close before
 * the usage came, and be metered nothing. */
static void meter_drain(session *s, net_http_msg *r, net_meter *m, const char *rest, size_t len)
{
    if (m->kind == NET_METER_NONE || r->done)
        return;
    char data[IO_CHUNK];
    size_t total = 0;
    set_recv_timeout(s->up.fd, METER_DRAIN_IDLE_MS);
    for (;;) {
        for (size_t off = 0; off < len && !r->done;) {
            ssize_t u = net_http_msg_feed(r, rest + off, len - off);
            if (u <= 0)
                return;     /* malformed, or nothing more is taken */
            off += (size_t)u;
            net_meter_feed(m, r->body.d, r->body.len);
            if (r->body.d)
                OPENSSL_cleanse(r->body.d, r->body.len);
            r->body.len = 0;
        }
        total += len;
        if (r->done || total > METER_DRAIN_MAX)
            return;
        ssize_t n = conn_read(&s->up, data, sizeof data);
        if (n <= 0)
            return;         /* the end (a close-delimited body), an error or the idle limit */
        rest = data;
        len = (size_t)n;
    }
}

/* Parse the response (its head, interim 1xx responses skipped, then its
 * body) and relay it re-framed, until its framing ends it or the upstream
 * closes.  -1 if no response head came or it is unfit (s->reason says why;
 * *nothing if not one byte came). */
static int relay_response(session *s, int *status, int head_request, int *nothing, net_redact *red)
{
    net_http_msg r;
    net_http_msg_init(&r, HTTP_RESPONSE);
    r.skip_body = head_request;
    *nothing = 0;
    char data[IO_CHUNK];
    size_t got = 0;
    int wrote = 0, keep = 0, bodied = 0, rc = -1, interim = 0;
    const char *why = NULL;
    net_meter meter = { 0 };
    for (;;) {
        ssize_t n = conn_read(&s->up, data, sizeof data);
        if (n < 0 || (n == 0 && !wrote)) {
            *nothing = got == 0;
            break;
        }
        got += (size_t)n;
        size_t off = 0;
        do {    /* n == 0: the upstream closed, which may end the body */
            ssize_t u = net_http_msg_feed(&r, data + off, (size_t)n - off);
            if (u < 0 || (u == 0 && n > 0 && !r.done)) {
                why = r.error ? r.error : "not HTTP";
                break;
            }
            off += (size_t)u;
            if (r.head_done && !wrote && r.p.status_code < 200 && r.p.status_code != 101) {
                if (++interim > 16) {   /* an upstream could keep the flow busy with them */
                    why = "more than 16 interim (1xx) responses";
                    break;
                }
                net_http_msg_next(&r);  /* interim: the final response follows */
                continue;
            }
            if (r.head_done && !wrote) {
                if ((why = response_unfit(&r, red)) != NULL)
                    break;
                *status = (int)r.p.status_code;
                bodied = !head_request && *status != 204 && *status != 304;
                keep = s->client_keep && (!bodied || r.chunked || r.has_clen);
                set_recv_timeout(s->up.fd, 0);
                meter_start(s, &r, &meter);
                if (write_response_head(s, &r, keep, red) < 0) {
                    rc = 0;
                    goto out;   /* the cell went away */
                }
                wrote = 1;
            }
            /* Reusable: ended by its framing, nothing after it, and the
             * upstream did not ask to close; released before the cell
             * has the last bytes, so its next request finds it idle. */
            if (r.done)
                release_upstream(s, off == (size_t)n && n > 0 && http_should_keep_alive(&r.p));
            if (wrote)
                net_meter_feed(&meter, r.body.d, r.body.len);    /* before body_down wipes it */
            if (wrote && body_down(s, &r, red, bodied) < 0) {
                meter_drain(s, &r, &meter, data + off, (size_t)n - off);
                rc = 0;
                goto out;
            }
            if (r.done) {
                s->keep = keep;     /* the cell has the whole response, and knows it */
                rc = 0;
                goto out;
            }
        } while (off < (size_t)n);
        if (why || n == 0)
            break;
    }
    if (!wrote) {
        if (why)
            snprintf(s->reason, sizeof s->reason, "upstream response: %s", why);
        else
            snprintf(s->reason, sizeof s->reason, "upstream closed without a response");
        goto out;
    }
    rc = 0;     /* cut short: the cell's connection ends, so it sees the body end early */
out:
    s->metered = net_meter_finish(&meter, &s->usage);
    net_meter_free(&meter);
    net_http_msg_free(&r);
    return rc;
}

/* The framing of the forwarded request: a chunked body read to its end
 * (read_ahead) gets a Content-Length. */
static const char *framing(const net_http_msg *m, char *out, size_t size)
{
    if (m->chunked && !m->done)
        snprintf(out, size, "Transfer-Encoding: chunked\r\n");
    else if (m->chunked)
        snprintf(out, size, "Content-Length: %zu\r\n", m->body.len);
    else if (m->has_clen)
        snprintf(out, size, "Content-Length: %llu\r\n", (unsigned long long)m->clen);
    else
        out[0] = '\0';
    return out;
}

/* A request that may be sent twice: safe to repeat (RFC 9110, 9.2.2) and
 * with no body (so nothing of the cell's was consumed). */
static int repeatable(const session *s, const net_http_msg *m)
{
    static const char *const ok[] = { "GET", "HEAD", "OPTIONS", NULL };
    if (m->chunked || (m->has_clen && m->clen > 0))
        return 0;
    for (const char *const *o = ok; *o; o++)
        if (strcmp(s->method, *o) == 0)
            return 1;
    return 0;
}

/* Expect is not forwarded: this hop asks for the body itself, once. */
static void answer_continue(session *s, const net_http_msg *m)
{
    int count;
    const char *expect = net_http_msg_header(m, "expect", &count);
    if (expect && strcasecmp(expect, "100-continue") == 0 && !m->done && !s->continued) {
        s->continued = 1;
        send_down(s, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
}

/* Send the head, the body and relay the response, on a pooled or new
 * upstream connection.  A pooled connection the upstream closed while it
 * was idle only shows when used (the write fails, or EOF/RST comes before
 * any response byte): a repeatable request is then sent once more, on a
 * new connection.  Refusals and the audit are done here. */
static void exchange(session *s, net_http_msg *m, const char *head, size_t hlen, int rechunk, net_redact *red)
{
    int status = 0, nothing = 0, retry = repeatable(s, m);
    for (int attempt = 0;; attempt++) {
        if (open_upstream(s, attempt == 0) < 0)
            return;     /* refused and audited */
        int again = retry && s->reused && attempt == 0;
        if (send_up(s, head, hlen) < 0) {
            close_upstream(s);
            if (again)
                continue;
            refuse(s, 502, "upstream: sending the request failed");
            return;
        }
        answer_continue(s, m);
        if (stream_body(s, m, rechunk) < 0) {
            drop(s, "the request body could not be relayed");
            return;
        }
        if (relay_response(s, &status, strcmp(s->method, "HEAD") == 0, &nothing, red) < 0) {
            close_upstream(s);
            if (again && nothing) {
                s->reason[0] = '\0';
                continue;
            }
            char why[sizeof s->reason];
            snprintf(why, sizeof why, "%s", s->reason);
            refuse(s, 502, "%s", why);
            return;
        }
        audit(s, status, 1);
        if (s->up.fd >= 0)
            release_upstream(s, 0);     /* ended otherwise than by its framing: not reusable */
        return;
    }
}

/* Forward one checked request; its head names secrets, so it is wiped. */
static void forward(session *s, net_http_msg *m, const char *target)
{
    char *head = NULL, missing[64], frame[64];
    size_t hlen = 0;
    if (m->chunked) {
        answer_continue(s, m);
        if (read_ahead(s, m) < 0) {
            drop(s, "the request body could not be read");
            return;
        }
    }
    net_redact red = { 0 };
    if (net_http_build_head(s->f->rule, s->method, target, m->h, m->n, framing(m, frame, sizeof frame),
                            s->env->pool != NULL, s->env->secret, s->env->secret_user,
                            s->f->rule->redact ? &red : NULL, &head, &hlen, missing, sizeof missing) < 0) {
        if (errno == ENOENT)
            refuse(s, 502, "secret %s not found", missing);
        else if (errno == EINVAL)
            refuse(s, 502, "secret %s is not a valid header value", missing);
        else
            refuse(s, 502, "out of memory");
    } else {
        exchange(s, m, head, hlen, m->chunked && !m->done, &red);
    }
    if (head)
        OPENSSL_cleanse(head, hlen);
    free(head);
    net_redact_free(&red);
}

/* One request of the cell's connection: each is checked and audited on
 * its own; s->keep says whether another may follow. */
static void serve_request(session *s, int later)
{
    net_http_msg m;
    net_http_msg_init(&m, HTTP_REQUEST);
    net_buf target = { 0 };
    s->keep = 0;
    s->continued = 0;
    s->metered = 0;
    s->reason[0] = '\0';
    s->method[0] = '\0';
    net_buf_wipe(&s->path);
    if (read_request_head(s, &m, later) == 0) {
        s->client_keep = http_should_keep_alive(&m.p) != 0;
        snprintf(s->method, sizeof s->method, "%s", http_method_str((enum http_method)m.p.method));
        int status = 403;
        const char *why = check_request(s, &m, &target, &status);
        if (why)
            refuse(s, status, "%s", why);
        else
            forward(s, &m, target.d);
    }
    net_buf_wipe(&target);
    net_http_msg_free(&m);
}

void net_http_serve(const net_http_env *env, const net_http_flow *f, uint64_t *out, uint64_t *in)
{
    /* Writes to a peer that left must fail with EPIPE, not kill the owner;
     * a SIGPIPE left pending on this thread dies with it. */
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
    session s = { .env = env, .f = f, .cl = { f->cfd, NULL }, .up = { -1, NULL }, .out = out, .in = in };
    int tls = detect_tls(f->cfd);
    s.key = (net_pool_key){ .host = f->host, .dst = f->dst, .dst_len = f->dst_len, .tls = tls > 0 };
    /* The cell picks TLS or not, and the upstream leg follows it: a rule
     * that must not send what it adds in clear refuses plain HTTP. */
    if (tls == 0 && f->rule->tls)
        refuse(&s, 403, "plain HTTP refused: this rule is for TLS only (\"tls\": true)");
    else if (tls >= 0 && (!tls || accept_tls(&s) == 0))
        for (int later = 0; later == 0 || s.keep; later = 1)
            serve_request(&s, later);
    conn_close_tls(&s.cl);
    close_upstream(&s);
    net_buf_wipe(&s.path);
    net_buf_wipe(&s.pending);
    ERR_clear_error();
}

int net_http_upstream_ctx(SSL_CTX **out, const char *ca_file, cell_error *err)
{
    *out = NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return util_fail(err, ENOMEM, "upstream TLS: cannot create a context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_ciphersuites(ctx, NET_HTTP_TLS13_SUITES) != 1) {
        SSL_CTX_free(ctx);
        return util_fail(err, EINVAL, "upstream TLS: cannot set the TLS 1.3 cipher suites");
    }
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    /* The response ends at upstream EOF; many servers skip close_notify. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        SSL_CTX_free(ctx);
        return util_fail(err, EIO, "upstream TLS: cannot load the host's trust store");
    }
    if (ca_file && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        SSL_CTX_free(ctx);
        ERR_clear_error();
        return util_fail(err, EINVAL, "upstream CA file %s: not readable PEM certificates", ca_file);
    }
    *out = ctx;
    return 0;
}
