/* fuzz_http.c: libFuzzer target for what the egress engine reads from a
 * cell or an upstream (src/net/httpmsg.c, src/net/httppath.c): requests
 * and responses through the strict parser, in one piece and split in two
 * (the result must not depend on the split), then every check that works
 * on the parsed fields: path normal form, rule match, the forwarded head
 * (remove_headers, set_headers, Host), and redaction of a response body.
 * Input: byte 0 picks request/response (bit 0) and HEAD (bit 1), byte 1
 * the split point; the rest is the message. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "net/httpmsg.h"
#include "net/httppath.h"

typedef struct result {
    int      ok;
    size_t   n_headers;
    uint64_t hash;          /* over the fields and the body */
} result;

static void mix(uint64_t *h, const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        *h = (*h ^ b[i]) * 0x100000001b3ull;
}

static int is_tchar(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* What the checks rely on, whatever the bytes were. */
static void check_fields(const net_http_msg *m)
{
    int n_cl, n_te, n_host;
    for (size_t i = 0; i < m->n; i++) {
        assert(m->h[i].name[0]);
        for (const char *c = m->h[i].name; *c; c++)
            assert(is_tchar((unsigned char)*c));
        size_t vl = strlen(m->h[i].value);
        for (size_t j = 0; j < vl; j++) {
            unsigned char c = (unsigned char)m->h[i].value[j];
            assert(c >= 0x20 || c == '\t');
            assert(c != 0x7f);
        }
        assert(vl == 0 || (m->h[i].value[vl - 1] != ' ' && m->h[i].value[vl - 1] != '\t'));
    }
    const char *te = net_http_msg_header(m, "transfer-encoding", &n_te);
    net_http_msg_header(m, "content-length", &n_cl);
    net_http_msg_header(m, "host", &n_host);
    assert(n_cl <= 1 && n_te <= 1 && !(n_cl && n_te));
    assert(!n_te || strcasecmp(te, "chunked") == 0);
    assert(m->p.type != HTTP_REQUEST || n_host <= 1);
}

static void parse(int type, int head, const uint8_t *data, size_t size, size_t split, net_http_msg *m, result *r)
{
    net_http_msg_init(m, type);
    m->skip_body = head;
    memset(r, 0, sizeof *r);
    size_t off = 0;
    size_t cuts[2] = { split, size };
    for (int i = 0; i < 2 && !m->done; i++) {
        while (off < cuts[i] && !m->done) {
            ssize_t u = net_http_msg_feed(m, (const char *)data + off, cuts[i] - off);
            if (u <= 0)
                return;     /* refused (or stuck, which would be a bug found below) */
            off += (size_t)u;
        }
    }
    if (!m->done && net_http_msg_feed(m, (const char *)data, 0) < 0)
        return;
    if (!m->done)
        return;
    r->ok = 1;
    r->n_headers = m->n;
    for (size_t i = 0; i < m->n; i++) {
        mix(&r->hash, m->h[i].name, strlen(m->h[i].name) + 1);
        mix(&r->hash, m->h[i].value, strlen(m->h[i].value) + 1);
    }
    mix(&r->hash, m->body.d, m->body.len);
    mix(&r->hash, m->url.d, m->url.len);
}

static void check_path(const char *path, size_t len)
{
    char *out = malloc(len + 1), *again = malloc(len + 1);
    assert(out && again);
    if (!net_http_path_normalize(path, len, out)) {
        size_t ol = strlen(out);
        assert(ol <= len && out[0] == '/');
        assert(!strstr(out, "/./") && !strstr(out, "/../") && !strchr(out, '\\'));
        assert(!(ol >= 2 && strcmp(out + ol - 2, "/.") == 0) && !(ol >= 3 && strcmp(out + ol - 3, "/..") == 0));
        assert(!strcasestr(out, "%2f") && !strcasestr(out, "%25") && !strcasestr(out, "%2e"));
        assert(!net_http_path_normalize(out, ol, again) && strcmp(out, again) == 0);     /* a fixed point */
        static char *prefixes[] = { "/v1/", NULL };
        net_http_rule rule = { .paths = prefixes };
        if (!net_http_check(&rule, "GET", out))
            assert(strncmp(out, "/v1/", 4) == 0);
    }
    free(out);
    free(again);
}

static int fake_secret(void *user, const char *name, char **value, size_t *len)
{
    (void)user;
    (void)name;
    *value = strdup("S3CRET");
    *len = 6;
    return *value ? 0 : -1;
}

/* The forwarded head: the rule's headers once each, removed ones gone, and
 * nothing that is not a CRLF-terminated line. */
static void check_head(const net_http_msg *m)
{
    static net_header set[] = { { "Authorization", "Bearer ${secret:T}" } };
    static char *remove[] = { "Cookie", NULL };
    net_http_rule rule = { .set = set, .n_set = 1, .remove = remove, .redact = 1 };
    net_redact red = { 0 };
    char *head = NULL, missing[64];
    size_t len = 0;
    const char *method = http_method_str((enum http_method)m->p.method);
    if (net_http_build_head(&rule, method, "/", m->h, m->n, "", 1, fake_secret, NULL, &red, &head, &len, missing,
                            sizeof missing) < 0) {
        net_redact_free(&red);
        return;
    }
    assert(red.n == 1);
    int auth = 0, hosts = 0, in_host;
    net_http_msg_header(m, "host", &in_host);
    for (char *line = strstr(head, "\r\n") + 2; *line && strncmp(line, "\r\n", 2) != 0;) {
        char *end = strstr(line, "\r\n");
        assert(end);
        assert(!memchr(line, '\n', (size_t)(end - line)) && !memchr(line, '\r', (size_t)(end - line)));
        assert(strncasecmp(line, "cookie:", 7) != 0 && strncasecmp(line, "transfer-encoding:", 18) != 0);
        auth += strncasecmp(line, "authorization:", 14) == 0;
        hosts += strncasecmp(line, "host:", 5) == 0;
        line = end + 2;
    }
    assert(auth == 1 && hosts == in_host);
    free(head);
    net_redact_free(&red);
}

/* The body redacted in pieces: same length, the secret gone. */
static void check_redact(const net_http_msg *m, size_t step)
{
    net_redact red = { 0 };
    net_buf out = { 0 };
    assert(net_redact_add(&red, "S3CRET", 6) == 0);
    step = step ? step : 1;
    net_redact_feed(&red, m->body.d, 0, &out);     /* an empty read (body.d may be NULL) */
    for (size_t i = 0; i < m->body.len; i += step)
        net_redact_feed(&red, m->body.d + i, m->body.len - i < step ? m->body.len - i : step, &out);
    net_redact_flush(&red, &out);
    assert(!out.oom && out.len == m->body.len);
    assert(!out.len || !memmem(out.d, out.len, "S3CRET", 6));
    net_buf_wipe(&out);
    net_redact_free(&red);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int type = data[0] & 1 ? HTTP_RESPONSE : HTTP_REQUEST, head = (data[0] & 2) != 0;
    const uint8_t *msg = data + 2;
    size_t len = size - 2, split = len ? data[1] % (len + 1) : 0;
    net_http_msg whole, parts;
    result a, b;
    parse(type, head, msg, len, len, &whole, &a);
    parse(type, head, msg, len, split, &parts, &b);
    /* Where the bytes are cut must not change what they mean. */
    assert(a.ok == b.ok);
    assert(!a.ok || (a.n_headers == b.n_headers && a.hash == b.hash));
    if (a.ok) {
        check_fields(&whole);
        if (type == HTTP_REQUEST) {
            struct http_parser_url u;
            http_parser_url_init(&u);
            if (whole.url.d && http_parser_parse_url(whole.url.d, whole.url.len, 0, &u) == 0 &&
                (u.field_set & (1 << UF_PATH)))
                check_path(whole.url.d + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
            check_head(&whole);
        } else {
            check_redact(&whole, data[1]);
        }
    }
    /* Any target, not only those in well-formed requests. */
    if (len && msg[0] == '/')
        check_path((const char *)msg, len);
    net_http_msg_free(&whole);
    net_http_msg_free(&parts);
    return 0;
}
