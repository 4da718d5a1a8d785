/* http.c: HTTP enforcement of "http" rules: terminates the cell's TLS with a
 * leaf from the cell's CA, checks and rewrites each request, relays it. */
#include "net/http.h"
#include "util/util.h"

#include <errno.h>
#include <http_parser.h>
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

/* ---- growable buffers: they may hold secrets, so every copy is wiped ----- */
typedef struct buf {
    char  *d;
    size_t len, cap;
    int    oom;
} buf;

static void buf_add(buf *b, const void *p, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *d = malloc(cap);
        if (!d) {
            b->oom = 1;
            return;
        }
        /* Not realloc(): the old block would be freed without being wiped. */
        if (b->d) {
            memcpy(d, b->d, b->len);
            OPENSSL_cleanse(b->d, b->cap);
            free(b->d);
        }
        b->d = d;
        b->cap = cap;
    }
    memcpy(b->d + b->len, p, n);
    b->len += n;
    b->d[b->len] = '\0';
}

static void buf_str(buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_wipe(buf *b)
{
    if (b->d)
        OPENSSL_cleanse(b->d, b->cap);
    free(b->d);
    *b = (buf){ 0 };
}

/* ---- pure pieces ------------------------------------------------------------ */
static size_t name_len(const char *s)
{
    size_t n = strlen(s);
    return n && s[n - 1] == '.' ? n - 1 : n;
}

int net_http_name_equal(const char *a, const char *b)
{
    if (!a || !b)
        return 0;
    size_t na = name_len(a), nb = name_len(b);
    return na > 0 && na == nb && strncasecmp(a, b, na) == 0;
}

int net_http_host_matches(const char *value, const char *pinned)
{
    if (!value || !pinned)
        return 0;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t n = strlen(value);
    while (n && (value[n - 1] == ' ' || value[n - 1] == '\t'))
        n--;
    const char *colon = memchr(value, ':', n);
    size_t hn = colon ? (size_t)(colon - value) : n;
    if (colon) {
        size_t pl = n - hn - 1;
        if (pl == 0 || pl > 5)
            return 0;
        for (size_t i = 0; i < pl; i++)
            if (colon[1 + i] < '0' || colon[1 + i] > '9')
                return 0;
    }
    char name[256];
    if (hn == 0 || hn >= sizeof name)
        return 0;
    memcpy(name, value, hn);
    name[hn] = '\0';
    return net_http_name_equal(name, pinned);
}

/* Dot segments and encoded dots, slashes or backslashes could make the
 * upstream resolve a path outside the prefix that allowed it. */
static int canonical_path(const char *path)
{
    static const char *const bad[] = { "%2e", "%2f", "%5c", "\\", NULL };
    for (const char *const *b = bad; *b; b++)
        if (strcasestr(path, *b))
            return 0;
    for (const char *p = path; *p;) {
        p++; /* past '/' */
        size_t n = strcspn(p, "/");
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        p += n;
    }
    return 1;
}

static int in_list(char **list, const char *s)
{
    for (; list && *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

const char *net_http_check(const net_http_rule *r, const char *method, const char *path)
{
    if (strcmp(method, "CONNECT") == 0)
        return "CONNECT is not allowed (a tunnel would escape enforcement)";
    if (r->methods && !in_list(r->methods, method))
        return "method not allowed by the rule";
    if (!r->paths)
        return NULL;
    if (path[0] != '/')
        return "path not allowed by the rule";
    if (!canonical_path(path))
        return "path is not canonical (dot segments or encoded dots, slashes)";
    for (char **p = r->paths; *p; p++)
        if (strncmp(path, *p, strlen(*p)) == 0)
            return NULL;
    return "path not allowed by the rule";
}

/* Hop-by-hop and framing headers: this hop re-frames the message itself. */
static const char *const hop_headers[] = { "connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                           "content-length", "te", "trailer", "upgrade", "expect", NULL };

static int dropped_header(const net_http_rule *r, const char *name)
{
    for (const char *const *h = hop_headers; *h; h++)
        if (strcasecmp(*h, name) == 0)
            return 1;
    for (char **h = r->remove; h && *h; h++)
        if (strcasecmp(*h, name) == 0)
            return 1;
    for (size_t i = 0; i < r->n_set; i++)
        if (strcasecmp(r->set[i].name, name) == 0)
            return 1;
    return 0;
}

/* Append `value` with each ${secret:NAME} replaced by the secret. */
static int expand_value(buf *b, const char *value, cell_net_secret_fn secret, void *user, char *missing,
                        size_t msize)
{
    static const char open[] = "${secret:";
    for (const char *p = value;;) {
        const char *ref = strstr(p, open), *end = ref ? strchr(ref + sizeof open - 1, '}') : NULL;
        if (!end) {
            buf_str(b, p);
            return 0;
        }
        buf_add(b, p, (size_t)(ref - p));
        const char *name = ref + sizeof open - 1;
        snprintf(missing, msize, "%.*s", (int)(end - name), name);
        char *v = NULL;
        size_t vl = 0;
        if (!secret || secret(user, missing, &v, &vl) < 0 || !v) {
            errno = ENOENT;
            return -1;
        }
        /* A CR or LF would let the value add headers of its own. */
        int bad = memchr(v, '\r', vl) || memchr(v, '\n', vl) || memchr(v, '\0', vl);
        if (!bad)
            buf_add(b, v, vl);
        OPENSSL_cleanse(v, vl);
        free(v);
        if (bad) {
            errno = EINVAL;
            return -1;
        }
        missing[0] = '\0';
        p = end + 1;
    }
}

int net_http_build_head(const net_http_rule *r, const char *method, const char *target, const net_header *hdrs,
                        size_t n, const char *framing, int keep_alive, cell_net_secret_fn secret, void *user,
                        char **out, size_t *len, char *missing, size_t missing_size)
{
    buf b = { 0 };
    *out = NULL;
    missing[0] = '\0';
    buf_str(&b, method);
    buf_str(&b, " ");
    buf_str(&b, target);
    buf_str(&b, " HTTP/1.1\r\n");
    for (size_t i = 0; i < n; i++) {
        if (dropped_header(r, hdrs[i].name))
            continue;
        buf_str(&b, hdrs[i].name);
        buf_str(&b, ": ");
        buf_str(&b, hdrs[i].value ? hdrs[i].value : "");
        buf_str(&b, "\r\n");
    }
    for (size_t i = 0; i < r->n_set; i++) {
        buf_str(&b, r->set[i].name);
        buf_str(&b, ": ");
        if (expand_value(&b, r->set[i].value, secret, user, missing, missing_size) < 0) {
            int e = errno;
            buf_wipe(&b);
            errno = e;
            return -1;
        }
        buf_str(&b, "\r\n");
    }
    buf_str(&b, framing);
    buf_str(&b, keep_alive ? "\r\n" : "Connection: close\r\n\r\n");
    if (b.oom) {
        buf_wipe(&b);
        errno = ENOMEM;
        return -1;
    }
    *out = b.d;
    *len = b.len;
    return 0;
}

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

/* ---- parsing with http_parser -------------------------------------------- */
typedef struct msg {
    http_parser p;
    buf         url;                 /* request target, or a response's reason phrase */
    net_header  h[NET_HTTP_MAX_HEADERS];
    buf         hname, hvalue;       /* the header being read */
    size_t      n;
    int         in_value, head_done, done, too_many, chunked, has_clen;
    int         skip_body;           /* a response to HEAD */
    uint64_t    clen;
    buf         body;                /* request body, re-framed, not yet sent upstream */
} msg;

static int end_header(msg *m)
{
    if (!m->hname.len)
        return 0;
    if (m->n == NET_HTTP_MAX_HEADERS || m->hname.oom || m->hvalue.oom) {
        m->too_many = 1;
        return -1;
    }
    m->h[m->n].name = strdup(m->hname.d);
    m->h[m->n].value = strdup(m->hvalue.d ? m->hvalue.d : "");
    m->n++;
    buf_wipe(&m->hname);
    buf_wipe(&m->hvalue);
    return m->h[m->n - 1].name && m->h[m->n - 1].value ? 0 : -1;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    buf_add(&((msg *)p->data)->url, at, len);
    return 0;
}

static int on_field(http_parser *p, const char *at, size_t len)
{
    msg *m = p->data;
    if (m->in_value && end_header(m) < 0)
        return -1;
    m->in_value = 0;
    buf_add(&m->hname, at, len);
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
    msg *m = p->data;
    m->in_value = 1;
    buf_add(&m->hvalue, at, len);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    msg *m = p->data;
    if (end_header(m) < 0)
        return -1;
    m->head_done = 1;
    m->chunked = (p->flags & F_CHUNKED) != 0;
    m->has_clen = (p->flags & F_CONTENTLENGTH) != 0;
    m->clen = p->content_length;
    /* A response's head is rewritten, then its body relayed as it came. */
    if (p->type == HTTP_RESPONSE)
        http_parser_pause(p, 1);
    return m->skip_body;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    msg *m = p->data;
    if (p->type == HTTP_RESPONSE)
        return 0;   /* parsed only to find its end */
    if (m->chunked) {
        char size[24];
        snprintf(size, sizeof size, "%zx\r\n", len);
        buf_str(&m->body, size);
    }
    buf_add(&m->body, at, len);
    if (m->chunked)
        buf_str(&m->body, "\r\n");
    return 0;
}

static int on_message_complete(http_parser *p)
{
    msg *m = p->data;
    if (m->chunked && p->type == HTTP_REQUEST)
        buf_str(&m->body, "0\r\n\r\n");
    m->done = 1;
    /* One message per connection: whatever follows is not read. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url, .on_status = on_url, .on_header_field = on_field, .on_header_value = on_value,
    .on_headers_complete = on_headers_complete, .on_body = on_body, .on_message_complete = on_message_complete,
};

static void msg_init(msg *m, enum http_parser_type type)
{
    memset(m, 0, sizeof *m);
    http_parser_init(&m->p, type);
    m->p.data = m;
}

static void msg_free(msg *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->h[i].name);
        free(m->h[i].value);
    }
    buf_wipe(&m->url);
    buf_wipe(&m->hname);
    buf_wipe(&m->hvalue);
    buf_wipe(&m->body);
}

/* Feed bytes; returns how many were consumed, or -1 if they are not HTTP. */
static ssize_t msg_feed(msg *m, const char *data, size_t len)
{
    size_t used = http_parser_execute(&m->p, &parser_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&m->p);
    if ((e != HPE_OK && e != HPE_PAUSED) || m->too_many || m->url.oom || m->body.oom)
        return -1;
    return (ssize_t)used;
}

static const char *msg_header(const msg *m, const char *name, int *count)
{
    const char *v = NULL;
    *count = 0;
    for (size_t i = 0; i < m->n; i++)
        if (strcasecmp(m->h[i].name, name) == 0)
            v = m->h[i].value, (*count)++;
    return v;
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
    buf                  path;
    char                 reason[160];
    buf                  pending;           /* the cell's bytes past the request being served */
    int                  client_keep;       /* the request asked to keep the connection */
    int                  keep;              /* its response ended by its framing: serve another */
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
    s->env->audit(s->env->arg, rec);
}

/* Answer the cell ourselves (403 refusals, 502 failures), then audit. */
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
                      status, status == 403 ? "Forbidden" : "Bad Gateway", bl);
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
static ssize_t client_feed(session *s, msg *m, const char *data, size_t n)
{
    ssize_t used = msg_feed(m, data, n);
    if (used >= 0 && m->done && (size_t)used < n)
        buf_add(&s->pending, data + used, n - (size_t)used);
    return s->pending.oom ? -1 : used;
}

/* Read until the request's head is complete, starting with what the cell
 * sent past the previous request.  A later request may take up to
 * NET_HTTP_IDLE_MS to start.  0, or -1 (handled; silent if nothing came). */
static int read_request_head(session *s, msg *m, int later)
{
    char data[IO_CHUNK];
    size_t total = 0;
    if (s->pending.len) {
        buf early = s->pending;
        s->pending = (buf){ 0 };
        total = early.len;
        ssize_t used = client_feed(s, m, early.d, early.len);
        buf_wipe(&early);
        if (used < 0) {
            drop(s, "not HTTP");
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
            drop(s, "not HTTP");
            return -1;
        }
    }
    set_recv_timeout(s->cl.fd, 0);
    return 0;
}

/* The target's path (for the rule) and origin-form target (for upstream).
 * An absolute-form target must name the pinned host. */
static const char *split_target(session *s, const msg *m, buf *target)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    const char *url = m->url.d ? m->url.d : "";
    if (http_parser_parse_url(url, m->url.len, 0, &u) != 0)
        return "the request target is not a URL path";
    if (u.field_set & (1 << UF_HOST)) {
        char host[256];
        snprintf(host, sizeof host, "%.*s", (int)u.field_data[UF_HOST].len, url + u.field_data[UF_HOST].off);
        if (!net_http_name_equal(host, s->f->host))
            return "the request target names another host";
    }
    if (u.field_set & (1 << UF_PATH))
        buf_add(&s->path, url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    else
        buf_str(&s->path, "/");
    buf_str(target, s->path.d ? s->path.d : "/");
    if (u.field_set & (1 << UF_QUERY)) {
        buf_str(target, "?");
        buf_add(target, url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
    }
    return s->path.oom || target->oom ? "out of memory" : NULL;
}

/* Method, path and Host against the rule; NULL if allowed. */
static const char *check_request(session *s, const msg *m, buf *target)
{
    const char *why = split_target(s, m, target);
    if (why)
        return why;
    int count;
    const char *host = msg_header(m, "host", &count);
    if (count == 0)
        return "the Host header is missing";
    if (count > 1 || !net_http_host_matches(host, s->f->host))
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

/* The rest of the request body, re-framed as parsed. */
static int stream_body(session *s, msg *m)
{
    char data[IO_CHUNK];
    for (;;) {
        if (m->body.len) {
            int rc = send_up(s, m->body.d, m->body.len);
            m->body.len = 0;
            if (rc < 0)
                return -1;
        }
        if (m->done)
            return 0;
        ssize_t n = conn_read(&s->cl, data, sizeof data);
        if (n <= 0 || client_feed(s, m, data, (size_t)n) < 0)
            return -1;
    }
}

/* The response head, as sent to the cell, with our own Connection header
 * for the cell's connection in place of the upstream's: keep-alive when the
 * cell asked for it and the response's framing will say where it ends. */
static int write_response_head(session *s, const msg *r, int keep)
{
    buf b = { 0 };
    char line[64];
    snprintf(line, sizeof line, "HTTP/%u.%u %u ", r->p.http_major, r->p.http_minor, r->p.status_code);
    buf_str(&b, line);
    buf_str(&b, r->url.d ? r->url.d : "");
    buf_str(&b, "\r\n");
    for (size_t i = 0; i < r->n; i++) {
        if (strcasecmp(r->h[i].name, "connection") == 0 || strcasecmp(r->h[i].name, "keep-alive") == 0 ||
            strcasecmp(r->h[i].name, "proxy-connection") == 0)
            continue;
        buf_str(&b, r->h[i].name);
        buf_str(&b, ": ");
        buf_str(&b, r->h[i].value);
        buf_str(&b, "\r\n");
    }
    buf_str(&b, keep ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
    int rc = b.oom || conn_write(&s->cl, b.d, b.len) < 0 ? -1 : 0;
    if (rc == 0)
        *s->in += b.len;
    buf_wipe(&b);
    return rc;
}

static int send_down(session *s, const char *data, size_t len)
{
    if (len && conn_write(&s->cl, data, len) < 0)
        return -1;
    *s->in += len;
    return 0;
}

/* Feed body bytes to the response's parser: how many belong to the
 * response (bytes after its end belong to no request: *extra is set, and
 * they are never relayed), or -1 if they are not HTTP.  At the end, the
 * upstream connection is released before the cell gets the last bytes, so
 * the cell's next request finds it idle in the pool. */
static ssize_t response_bytes(session *s, msg *r, const char *data, size_t n, int *extra)
{
    ssize_t u = n ? msg_feed(r, data, n) : 0;  /* http_parser reads a length of 0 as EOF */
    if (u < 0)
        return -1;
    if (r->done) {
        *extra = (size_t)u < n;
        /* Reusable: ended by its framing, nothing after it, and the
         * upstream did not ask to close. */
        release_upstream(s, !*extra && http_should_keep_alive(&r->p));
    }
    return u;
}

/* Parse the response head (for its status), then relay the body as it
 * comes until its framing ends it or the upstream closes.  -1 if no
 * response head came (s->reason says why; *nothing if not one byte came). */
static int relay_response(session *s, int *status, int head_request, int *nothing)
{
    msg r;
    msg_init(&r, HTTP_RESPONSE);
    r.skip_body = head_request;
    *nothing = 0;
    char data[IO_CHUNK];
    ssize_t n = 0, used = 0;
    size_t got = 0;
    while (!r.head_done) {
        n = conn_read(&s->up, data, sizeof data);
        if (n <= 0 || (used = msg_feed(&r, data, (size_t)n)) < 0) {
            *nothing = n <= 0 && got == 0;
            snprintf(s->reason, sizeof s->reason, "%s", n <= 0 ? "upstream closed without a response"
                                                                : "upstream response is not HTTP");
            msg_free(&r);
            return -1;
        }
        got += (size_t)n;
    }
    /* Paused at the head's last LF: not counted yet, and where parsing
     * resumes.  Interim (1xx) responses are followed by more: to EOF. */
    ssize_t body_at = used < n && data[used] == '\n' ? used + 1 : used, first = n - body_at;
    *status = (int)r.p.status_code;
    int framed = *status >= 200, extra = 0, broken = 0;
    int keep = framed && s->client_keep &&
               (head_request || r.chunked || r.has_clen || *status == 204 || *status == 304);
    set_recv_timeout(s->up.fd, 0);
    http_parser_pause(&r.p, 0);
    if (framed) {
        /* The LF alone first: it may end the response (no body). */
        if ((body_at > used && msg_feed(&r, data + used, 1) < 0) ||
            (first = response_bytes(s, &r, data + body_at, (size_t)first, &extra)) < 0)
            broken = 1, first = 0;
    }
    if (write_response_head(s, &r, keep) < 0 || send_down(s, data + body_at, (size_t)first) < 0 || broken)
        goto out;   /* the cell went away, or the body is not HTTP: the response was still answered */
    while (!(framed && r.done) && (n = conn_read(&s->up, data, sizeof data)) > 0) {
        ssize_t take = framed ? response_bytes(s, &r, data, (size_t)n, &extra) : n;
        if (take < 0 || send_down(s, data, (size_t)take) < 0) {
            keep = 0;
            break;
        }
    }
    s->keep = keep && r.done;   /* the cell has the whole response, and knows it */
out:
    msg_free(&r);
    return 0;
}

static const char *framing(const msg *m, char *out, size_t size)
{
    if (m->chunked)
        snprintf(out, size, "Transfer-Encoding: chunked\r\n");
    else if (m->has_clen)
        snprintf(out, size, "Content-Length: %llu\r\n", (unsigned long long)m->clen);
    else
        out[0] = '\0';
    return out;
}

/* A request that may be sent twice: safe to repeat (RFC 9110, 9.2.2) and
 * with no body (so nothing of the cell's was consumed). */
static int repeatable(const session *s, const msg *m)
{
    static const char *const ok[] = { "GET", "HEAD", "OPTIONS", NULL };
    if (m->chunked || (m->has_clen && m->clen > 0))
        return 0;
    for (const char *const *o = ok; *o; o++)
        if (strcmp(s->method, *o) == 0)
            return 1;
    return 0;
}

/* Forward one checked request; its head names secrets, so it is wiped.
 * A pooled connection the upstream closed while it was idle only shows
 * when used (the write fails, or EOF/RST comes before any response byte):
 * a repeatable request is then sent once more, on a new connection. */
static void forward(session *s, msg *m, const char *target)
{
    char *head = NULL, missing[64], frame[64];
    size_t hlen = 0;
    if (net_http_build_head(s->f->rule, s->method, target, m->h, m->n, framing(m, frame, sizeof frame),
                            s->env->pool != NULL, s->env->secret, s->env->secret_user, &head, &hlen, missing,
                            sizeof missing) < 0) {
        if (errno == ENOENT)
            refuse(s, 502, "secret %s not found", missing);
        else if (errno == EINVAL)
            refuse(s, 502, "secret %s is not a valid header value", missing);
        else
            refuse(s, 502, "out of memory");
        return;
    }
    int count, status = 0, nothing = 0;
    const char *expect = msg_header(m, "expect", &count);
    int retry = repeatable(s, m);
    for (int attempt = 0;; attempt++) {
        if (open_upstream(s, attempt == 0) < 0)
            break;      /* refused and audited */
        int again = retry && s->reused && attempt == 0;
        if (send_up(s, head, hlen) < 0) {
            close_upstream(s);
            if (again)
                continue;
            refuse(s, 502, "upstream: sending the request failed");
            break;
        }
        /* Expect was not forwarded: this hop asks for the body itself. */
        if (expect && strcasecmp(expect, "100-continue") == 0 && !m->done && attempt == 0)
            send_down(s, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        if (stream_body(s, m) < 0) {
            drop(s, "the request body could not be relayed");
            break;
        }
        if (relay_response(s, &status, strcmp(s->method, "HEAD") == 0, &nothing) < 0) {
            close_upstream(s);
            if (again && nothing) {
                s->reason[0] = '\0';
                continue;
            }
            char why[sizeof s->reason];
            snprintf(why, sizeof why, "%s", s->reason);
            refuse(s, 502, "%s", why);
            break;
        }
        audit(s, status, 1);
        if (s->up.fd >= 0)
            release_upstream(s, 0);     /* ended otherwise than by its framing: not reusable */
        break;
    }
    OPENSSL_cleanse(head, hlen);
    free(head);
}

/* One request of the cell's connection: each is checked and audited on
 * its own; s->keep says whether another may follow. */
static void serve_request(session *s, int later)
{
    msg m;
    msg_init(&m, HTTP_REQUEST);
    buf target = { 0 };
    s->keep = 0;
    s->reason[0] = '\0';
    buf_wipe(&s->path);
    if (read_request_head(s, &m, later) == 0) {
        s->client_keep = http_should_keep_alive(&m.p) != 0;
        snprintf(s->method, sizeof s->method, "%s", http_method_str((enum http_method)m.p.method));
        const char *why = check_request(s, &m, &target);
        if (why)
            refuse(s, 403, "%s", why);
        else
            forward(s, &m, target.d);
    }
    buf_wipe(&target);
    msg_free(&m);
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
    if (tls >= 0 && (!tls || accept_tls(&s) == 0))
        for (int later = 0; later == 0 || s.keep; later = 1)
            serve_request(&s, later);
    conn_close_tls(&s.cl);
    close_upstream(&s);
    buf_wipe(&s.path);
    buf_wipe(&s.pending);
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
