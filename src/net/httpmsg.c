/* httpmsg.c: strict HTTP/1.x message parsing, rule checks, the forwarded
 * request head and redaction (httpmsg.h). */
#include "net/httpmsg.h"
#include "net/httppath.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- buffers ---------------------------------------------------------------- */
void net_buf_add(net_buf *b, const void *p, size_t n)
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

void net_buf_str(net_buf *b, const char *s)
{
    net_buf_add(b, s, strlen(s));
}

void net_buf_wipe(net_buf *b)
{
    if (b->d)
        OPENSSL_cleanse(b->d, b->cap);
    free(b->d);
    *b = (net_buf){ 0 };
}

/* ---- the raw head scan ---------------------------------------------------------- */
static int fail(net_http_msg *m, const char *why)
{
    if (!m->error)
        m->error = why;
    return -1;
}

/* The head's bytes, up to its empty line, before http_parser sees them.
 * On failure, *at is where the bad byte is. */
static int scan_head(net_http_msg *m, const char *data, size_t len, size_t *at)
{
    for (size_t i = 0; i < len && !m->scan_done; i++) {
        unsigned char c = (unsigned char)data[i];
        *at = i;
        if (++m->scan_total > NET_HTTP_MAX_HEAD)
            return fail(m, "the head is larger than 64 KiB");
        if (m->scan_cr) {
            m->scan_cr = 0;
            if (c != '\n')
                return fail(m, "a CR not followed by LF");
            if (m->scan_col == 0 && m->scan_line > 0)
                m->scan_done = 1;
            else if (m->scan_col > 0)
                m->scan_line++;
            /* else an empty line before the start line: ignored (RFC 9112, 2.2) */
            m->scan_col = 0;
        } else if (c == '\r') {
            m->scan_cr = 1;
        } else if (c == '\n') {
            return fail(m, "a line ends with a bare LF, not CRLF");
        } else if (m->scan_col == 0 && m->scan_line > 0 && (c == ' ' || c == '\t')) {
            return fail(m, "a header line starts with whitespace (obsolete line folding)");
        } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return fail(m, "a control character or NUL in the head");
        } else {
            m->scan_col++;
        }
    }
    return 0;
}

/* ---- fields -------------------------------------------------------------------- */

static int end_header(net_http_msg *m)
{
    if (!m->hname.len)
        return 0;
    if (m->hname.oom || m->hvalue.oom)
        return fail(m, "out of memory");
    if (m->n == NET_HTTP_MAX_HEADERS)
        return fail(m, "more than 128 header fields");
    /* http_parser takes a space into a name: "Host : x" would be a field
     * named "Host " that no check looks for (RFC 9112, 5.1: refuse it). */
    if (!net_http_is_token(m->hname.d))
        return fail(m, "a header name that is not a token (whitespace before the colon?)");
    char *v = m->hvalue.d ? m->hvalue.d : "";
    size_t vl = m->hvalue.len;
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    m->h[m->n].name = strdup(m->hname.d);
    m->h[m->n].value = strndup(v, vl);
    m->n++;
    net_buf_wipe(&m->hname);
    net_buf_wipe(&m->hvalue);
    return m->h[m->n - 1].name && m->h[m->n - 1].value ? 0 : fail(m, "out of memory");
}

const char *net_http_msg_header(const net_http_msg *m, const char *name, int *count)
{
    const char *v = NULL;
    *count = 0;
    for (size_t i = 0; i < m->n; i++)
        if (strcasecmp(m->h[i].name, name) == 0)
            v = m->h[i].value, (*count)++;
    return v;
}

static int all_digits(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* The framing fields every reader must agree on (RFC 9112, 6). */
static const char *check_fields(const net_http_msg *m)
{
    int n_cl, n_te, n_host;
    const char *cl = net_http_msg_header(m, "content-length", &n_cl);
    const char *te = net_http_msg_header(m, "transfer-encoding", &n_te);
    if (m->p.http_major != 1)
        return "not HTTP/1.x";
    if (n_cl > 1)
        return "more than one Content-Length";
    if (n_cl && !all_digits(cl))
        return "a Content-Length that is not a number";
    if (n_te && n_cl)
        return "both Transfer-Encoding and Content-Length";
    if (n_te > 1 || (n_te && strcasecmp(te, "chunked") != 0))
        return "a Transfer-Encoding other than \"chunked\"";
    if (m->p.type == HTTP_REQUEST) {
        if (n_te && m->p.http_minor == 0)
            return "Transfer-Encoding in an HTTP/1.0 request";
        net_http_msg_header(m, "host", &n_host);
        if (n_host > 1)
            return "more than one Host header";
    }
    return NULL;
}

/* ---- http_parser callbacks ------------------------------------------------------ */
static int on_url(http_parser *p, const char *at, size_t len)
{
    net_buf_add(&((net_http_msg *)p->data)->url, at, len);
    return 0;
}

static int on_field(http_parser *p, const char *at, size_t len)
{
    net_http_msg *m = p->data;
    if (m->head_done)
        return 0;   /* a trailer: dropped */
    if (m->in_value && end_header(m) < 0)
        return -1;
    m->in_value = 0;
    net_buf_add(&m->hname, at, len);
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
    net_http_msg *m = p->data;
    if (m->head_done)
        return 0;
    m->in_value = 1;
    net_buf_add(&m->hvalue, at, len);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    net_http_msg *m = p->data;
    if (end_header(m) < 0)
        return -1;
    const char *why = check_fields(m);
    if (why)
        return fail(m, why);
    m->head_done = 1;
    m->chunked = (p->flags & F_CHUNKED) != 0;
    m->has_clen = (p->flags & F_CONTENTLENGTH) != 0;
    m->clen = p->content_length;
    return m->skip_body;   /* 1: no body follows (a response to HEAD) */
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    net_buf_add(&((net_http_msg *)p->data)->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    ((net_http_msg *)p->data)->done = 1;
    /* One message at a time: whatever follows is the caller's. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url, .on_status = on_url, .on_header_field = on_field, .on_header_value = on_value,
    .on_headers_complete = on_headers_complete, .on_body = on_body, .on_message_complete = on_message_complete,
};

void net_http_msg_init(net_http_msg *m, enum http_parser_type type)
{
    memset(m, 0, sizeof *m);
    http_parser_init(&m->p, type);
    /* Both default to off; said here because they must stay off. */
    m->p.lenient_http_headers = 0;
    m->p.allow_chunked_length = 0;
    m->p.data = m;
}

static void free_fields(net_http_msg *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->h[i].name);
        free(m->h[i].value);
    }
    m->n = 0;
    net_buf_wipe(&m->url);
    net_buf_wipe(&m->hname);
    net_buf_wipe(&m->hvalue);
    net_buf_wipe(&m->body);
}

void net_http_msg_free(net_http_msg *m)
{
    free_fields(m);
}

void net_http_msg_next(net_http_msg *m)
{
    int skip = m->skip_body;
    http_parser p = m->p;
    free_fields(m);
    memset(m, 0, sizeof *m);
    m->p = p;
    m->p.data = m;
    m->skip_body = skip;
    http_parser_pause(&m->p, 0);
}

int net_http_msg_started(const net_http_msg *m)
{
    return m->url.len > 0;
}

ssize_t net_http_msg_feed(net_http_msg *m, const char *data, size_t len)
{
    size_t bad = 0;
    if (m->error)
        return -1;
    if (scan_head(m, data, len, &bad) < 0) {
        /* The bytes before the bad one still tell whether this was an
         * HTTP request line (net_http_msg_started()). */
        if (!m->url.len)
            http_parser_execute(&m->p, &parser_settings, data, bad);
        return -1;
    }
    size_t used = http_parser_execute(&m->p, &parser_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&m->p);
    if (e != HPE_OK && e != HPE_PAUSED)
        return fail(m, http_errno_description(e));
    if (m->url.oom || m->body.oom)
        return fail(m, "out of memory");
    return (ssize_t)used;
}

/* ---- rule checks -------------------------------------------------------------- */
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
    for (char **p = r->paths; *p; p++)
        if (strncmp(path, *p, strlen(*p)) == 0)
            return NULL;
    return "path not allowed by the rule";
}

/* ---- redaction ------------------------------------------------------------------ */
int net_redact_add(net_redact *r, const char *v, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->vals[i].len == len && memcmp(r->vals[i].d, v, len) == 0)
            return 0;
    net_buf *vals = calloc(r->n + 1, sizeof *vals);
    if (!vals)
        return -1;
    if (r->n)
        memcpy(vals, r->vals, r->n * sizeof *vals);
    free(r->vals);
    r->vals = vals;
    net_buf_add(&r->vals[r->n], v, len);
    if (r->vals[r->n].oom) {
        net_buf_wipe(&r->vals[r->n]);
        return -1;
    }
    r->n++;
    if (len > r->maxlen)
        r->maxlen = len;
    return 0;
}

void net_redact_inplace(const net_redact *r, char *s, size_t len)
{
    if (!s || !len)
        return;     /* memmem() must not see NULL */
    for (size_t i = 0; i < r->n; i++) {
        const net_buf *v = &r->vals[i];
        for (char *p = s; (p = memmem(p, len - (size_t)(p - s), v->d, v->len)) != NULL; p += v->len)
            memset(p, '*', v->len);
    }
}

void net_redact_feed(net_redact *r, const char *data, size_t len, net_buf *out)
{
    if (r->n == 0) {
        net_buf_add(out, data, len);
        return;
    }
    net_buf_add(&r->hold, data, len);
    if (r->hold.oom) {
        out->oom = 1;
        return;
    }
    net_redact_inplace(r, r->hold.d, r->hold.len);
    /* A value that starts in the last maxlen - 1 bytes may end in the next piece. */
    size_t keep = r->maxlen - 1;
    if (r->hold.len <= keep)
        return;
    size_t give = r->hold.len - keep;
    net_buf_add(out, r->hold.d, give);
    memmove(r->hold.d, r->hold.d + give, keep);
    OPENSSL_cleanse(r->hold.d + keep, give);
    r->hold.len = keep;
}

void net_redact_flush(net_redact *r, net_buf *out)
{
    net_buf_add(out, r->hold.d, r->hold.len);
    net_buf_wipe(&r->hold);
}

void net_redact_free(net_redact *r)
{
    for (size_t i = 0; i < r->n; i++)
        net_buf_wipe(&r->vals[i]);
    free(r->vals);
    net_buf_wipe(&r->hold);
    *r = (net_redact){ 0 };
}

/* ---- the forwarded head --------------------------------------------------------- */

/* Hop-by-hop and framing headers: this hop re-frames the message itself. */
static const char *const hop_headers[] = { "connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                           "content-length", "te", "trailer", "upgrade", "expect", NULL };

static int dropped_header(const net_http_rule *r, const char *name)
{
    for (const char *const *h = hop_headers; *h; h++)
        if (strcasecmp(*h, name) == 0)
            return 1;
    if ((r->redact || r->meter) && strcasecmp(name, "accept-encoding") == 0)
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
static int expand_value(net_buf *b, const char *value, cell_net_secret_fn secret, void *user, net_redact *redact,
                        char *missing, size_t msize)
{
    static const char open[] = "${secret:";
    for (const char *p = value;;) {
        const char *ref = strstr(p, open), *end = ref ? strchr(ref + sizeof open - 1, '}') : NULL;
        if (!end) {
            net_buf_str(b, p);
            return 0;
        }
        net_buf_add(b, p, (size_t)(ref - p));
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
        int oom = !bad && redact && net_redact_add(redact, v, vl) < 0;
        if (!bad)
            net_buf_add(b, v, vl);
        OPENSSL_cleanse(v, vl);
        free(v);
        if (bad || oom) {
            errno = bad ? EINVAL : ENOMEM;
            return -1;
        }
        missing[0] = '\0';
        p = end + 1;
    }
}

int net_http_build_head(const net_http_rule *r, const char *method, const char *target, const net_header *hdrs,
                        size_t n, const char *framing, int keep_alive, cell_net_secret_fn secret, void *user,
                        net_redact *redact, char **out, size_t *len, char *missing, size_t missing_size)
{
    net_buf b = { 0 };
    *out = NULL;
    missing[0] = '\0';
    net_buf_str(&b, method);
    net_buf_str(&b, " ");
    net_buf_str(&b, target);
    net_buf_str(&b, " HTTP/1.1\r\n");
    for (size_t i = 0; i < n; i++) {
        if (dropped_header(r, hdrs[i].name))
            continue;
        net_buf_str(&b, hdrs[i].name);
        net_buf_str(&b, ": ");
        net_buf_str(&b, hdrs[i].value ? hdrs[i].value : "");
        net_buf_str(&b, "\r\n");
    }
    for (size_t i = 0; i < r->n_set; i++) {
        net_buf_str(&b, r->set[i].name);
        net_buf_str(&b, ": ");
        if (expand_value(&b, r->set[i].value, secret, user, redact, missing, missing_size) < 0) {
            int e = errno;
            net_buf_wipe(&b);
            errno = e;
            return -1;
        }
        net_buf_str(&b, "\r\n");
    }
    /* Both read the response's body, so it must come unencoded. */
    if (r->redact || r->meter)
        net_buf_str(&b, "Accept-Encoding: identity\r\n");
    net_buf_str(&b, framing);
    net_buf_str(&b, keep_alive ? "\r\n" : "Connection: close\r\n\r\n");
    if (b.oom) {
        net_buf_wipe(&b);
        errno = ENOMEM;
        return -1;
    }
    *out = b.d;
    *len = b.len;
    return 0;
}
