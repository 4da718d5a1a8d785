/* client.c: how the CLI talks to `cell serve`: HTTP/1.1 (http1.c) over the
 * unix socket or TCP, bearer tokens, problem+json errors as messages, SSE logs. */
#include "cli/client.h"
#include "cli/http1.h"
#include "util/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- where the daemon is ----------------------------------------------------- */
/* $CELL_TOKEN, else STATE/admin.token; NULL when neither is readable (the
 * daemon may run with --no-token; a 401 then says what to do). */
static char *find_token(const char *state, char **from)
{
    const char *env = getenv("CELL_TOKEN");
    if (env && *env) {
        *from = strdup("$CELL_TOKEN");
        return strdup(env);
    }
    char path[4096];
    char *text = NULL;
    size_t len = 0;
    if (snprintf(path, sizeof path, "%s/admin.token", state) >= (int)sizeof path ||
        util_read_file(path, 4096, &text, &len, NULL) < 0)
        return NULL;
    *from = strdup(path);
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        text[--len] = '\0';
    return text;
}

/* A token goes into a header line as it is: one with a line break or
 * another control byte would add headers of its own to every request. */
static int set_token(client *c, const char *state)
{
    c->token = find_token(state, &c->token_from);
    if (!c->token)
        return 0;
    if (!c->token_from)
        return -1;
    for (const unsigned char *p = (const unsigned char *)c->token; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return cli_fail(CLI_EXIT_USAGE, "the token from %s holds a control character", c->token_from), -2;
    return 0;
}

/* http://HOST[:PORT][/PREFIX]: HOST may be an [IPv6] literal. */
static int set_http(client *c, const char *url)
{
    const char *auth = url + 7, *end = auth + strcspn(auth, "/?#");
    const char *host = auth, *host_end, *port = NULL;
    if (*host == '[') {
        host_end = memchr(host, ']', (size_t)(end - host));
        if (!host_end || (host_end + 1 < end && host_end[1] != ':'))
            return cli_fail(CLI_EXIT_USAGE, "--url/$CELL_URL '%s': a bad [address]", url), -2;
        port = host_end + 1 < end ? host_end + 2 : NULL;
        host++;
    } else {
        host_end = memchr(host, ':', (size_t)(end - host));
        port = host_end ? host_end + 1 : NULL;
        host_end = host_end ? host_end : end;
    }
    if (host_end == host || (port && port == end) || *end == '?' || *end == '#')
        return cli_fail(CLI_EXIT_USAGE, "--url/$CELL_URL '%s' must be http://HOST[:PORT][/PATH]", url), -2;
    size_t plen = strlen(end);
    while (plen && end[plen - 1] == '/')
        plen--;
    c->host = strndup(host, (size_t)(host_end - host));
    c->port = port ? strndup(port, (size_t)(end - port)) : strdup("80");
    c->authority = strndup(auth, (size_t)(end - auth));
    c->prefix = strndup(end, plen);
    c->where = strdup(url);
    return c->host && c->port && c->authority && c->prefix && c->where ? 0 : -1;
}

/* --url / $CELL_URL: http://HOST:PORT or unix:PATH; else STATE/cell.sock. */
static int set_target(client *c, const char *url, const char *state)
{
    if (url && strncmp(url, "http://", 7) == 0)
        return set_http(c, url);
    if (url)
        c->sock = strdup(url + 5);
    else if (asprintf(&c->sock, "%s/cell.sock", state) < 0)
        c->sock = NULL;
    c->authority = strdup("localhost");
    c->prefix = strdup("");
    if (c->sock && asprintf(&c->where, "unix:%s", c->sock) < 0)
        c->where = NULL;
    return c->sock && c->authority && c->prefix && c->where ? 0 : -1;
}

int cli_client_open(client *c, const struct cli_global *g)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    const char *url = g->url;
    if (!url || !*url)
        url = getenv("CELL_URL");
    if (url && !*url)
        url = NULL;
    if (url && strncmp(url, "https://", 8) == 0)
        return cli_fail(CLI_EXIT_USAGE, "--url/$CELL_URL '%s': the cell CLI does not speak TLS (it links libc "
                        "only); on the daemon's host use its unix socket (unix:PATH, the default), or an SSH "
                        "tunnel to a loopback http:// listener; for https:// use curl or an SDK (docs/api.md)",
                        url);
    if (url && strncmp(url, "http://", 7) != 0 && strncmp(url, "unix:", 5) != 0)
        return cli_fail(CLI_EXIT_USAGE, "--url/$CELL_URL '%s' must start with http:// or unix:", url);
    const char *state = g->state_dir ? g->state_dir : cell_default_state_dir();
    int rc = set_target(c, url, state);
    if (rc == 0)
        rc = set_token(c, state);
    if (rc < 0) {
        cli_client_close(c);
        return rc == -2 ? CLI_EXIT_USAGE : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    }
    return 0;
}

void cli_client_close(client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    if (c->token)
        explicit_bzero(c->token, strlen(c->token));
    free(c->token);
    free(c->sock);
    free(c->host);
    free(c->port);
    free(c->authority);
    free(c->prefix);
    free(c->where);
    free(c->token_from);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

/* ---- paths ---------------------------------------------------------------------------- */
/* RFC 3986's unreserved characters stay; every other byte is %XX. */
static void add_escaped(http1_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
            *p == '.' || *p == '_' || *p == '~') {
            cli_http1_buf_add(b, p, 1);
        } else {
            char e[3] = { '%', hex[*p >> 4], hex[*p & 15] };
            cli_http1_buf_add(b, e, 3);
        }
    }
}

char *cli_client_pathf(const char *fmt, ...)
{
    http1_buf b = { 0 };
    va_list ap;
    va_start(ap, fmt);
    for (const char *p = fmt; *p; p++) {
        if (p[0] == '%' && p[1] == 's') {
            add_escaped(&b, va_arg(ap, const char *));
            p++;
        } else {
            cli_http1_buf_add(&b, p, 1);
        }
    }
    va_end(ap);
    if (b.oom || !b.data) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

/* ---- errors ------------------------------------------------------------------------- */
/* "cell: [what: ]<detail>" from an application/problem+json answer. */
static int http_error(client *c, long status, const char *body, size_t len, const char *what)
{
    json_t *p = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    const char *detail = json_string_value(json_object_get(p, "detail"));
    if (!detail)
        detail = json_string_value(json_object_get(p, "title"));
    char fallback[256];
    if (!detail) {
        snprintf(fallback, sizeof fallback, "the daemon answered HTTP %ld%s%.*s", status, len ? ": " : "",
                 (int)(len > 200 ? 200 : len), body ? body : "");
        detail = fallback;
    }
    char hint[4200] = "";
    if (status == 401 && c->token_from)
        snprintf(hint, sizeof hint, " (the token from %s was refused)", c->token_from);
    else if (status == 401)
        snprintf(hint, sizeof hint, " (no token: set $CELL_TOKEN, or run as a user who can read STATE/admin.token)");
    int code = status >= 400 && status < 500 ? CLI_EXIT_REFUSED : CLI_EXIT_INTERNAL;
    if (what)
        cli_fail(code, "%s: %s%s", what, detail, hint);
    else
        cli_fail(code, "%s%s", detail, hint);
    json_decref(p);
    return code;
}

static int request_failed(client *c, int err, const http1_resp *rs)
{
    char why[256];
    return cli_fail(CLI_EXIT_INTERNAL, "request to the cell daemon at %s failed: %s", c->where,
                    cli_http1_strerror(err, rs, why, sizeof why));
}

/* ---- requests ---------------------------------------------------------------------- */
/* One exchange on a new connection, or on the kept one when `reuse`: a kept
 * connection the daemon closed meanwhile (nothing of an answer came) is
 * replaced once, as curl did.  Prints why and returns an exit code on a
 * failure; 0 with rs->status otherwise; -1 when on_data stopped it. */
static int exchange(client *c, const http1_req *rq, http1_resp *rs, int reuse)
{
    for (int attempt = 0;; attempt++) {
        /* Only plain requests touch c->fd: streams run on other threads too (shell). */
        int reused = reuse && c->fd >= 0;
        int fd = reused ? c->fd : -1;
        if (reuse)
            c->fd = -1;
        char why[256];
        if (fd < 0 && (fd = cli_http1_connect(c->sock, c->host, c->port, why, sizeof why)) < 0)
            return cli_fail(CLI_EXIT_INTERNAL, "cannot reach the cell daemon at %s (%s); start it with `cell serve`",
                            c->where, why);
        int err = cli_http1_exchange(fd, rq, rs);
        if (err == HTTP1_OK && reuse && rs->keep_alive)
            c->fd = fd;
        else
            close(fd);
        int gone = err == HTTP1_CLOSED || (err == HTTP1_IO && (rs->err_no == ECONNRESET || rs->err_no == EPIPE));
        if (reused && gone && !rs->started && attempt == 0)
            continue;
        if (err == HTTP1_ABORTED)
            return -1;
        if (err == HTTP1_STOPPED)
            return 0;
        return err ? request_failed(c, err, rs) : 0;
    }
}

static char *target_of(client *c, const char *path)
{
    char *t = NULL;
    return asprintf(&t, "%s%s", c->prefix, path) < 0 ? NULL : t;
}

/* ---- JSON requests ------------------------------------------------------------------- */
int cli_client_json_status(client *c, const char *method, const char *path, json_t *body, long *status, json_t **out)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL, *target = target_of(c, path);
    size_t text_len = text ? strlen(text) : 0;
    *out = NULL;
    if ((body && !text) || !target) {
        free(text);
        free(target);
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    }
    http1_req rq = { .method = method, .host = c->authority, .target = target, .token = c->token,
                     .content_type = body ? "application/json" : NULL, .body = text, .body_len = text_len,
                     .body_fd = -1 };
    http1_resp rs = { 0 };
    int rc = exchange(c, &rq, &rs, 1);
    /* A body may be a secret's value (cell secret set). */
    if (text)
        explicit_bzero(text, text_len);
    free(text);
    free(target);
    *status = rs.status;
    if (rc == 0 && rs.body.len) {
        json_error_t je;
        *out = json_loadb(rs.body.data, rs.body.len, 0, &je);
        if (!*out && rs.status < 300)
            rc = cli_fail(CLI_EXIT_INTERNAL, "the daemon's answer to %s %s is not JSON: %s", method, path, je.text);
        else if (!*out)
            *out = json_pack("{s:s%}", "detail", rs.body.data, rs.body.len); /* the raw text for the message */
    }
    free(rs.body.data);
    return rc;
}

int cli_client_reply_error(client *c, long status, json_t *reply, const char *what)
{
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    int rc = http_error(c, status, text, text ? strlen(text) : 0, what);
    free(text);
    return rc;
}

int cli_client_json(client *c, const char *method, const char *path, json_t *body, const char *what, json_t **out)
{
    long status = 0;
    json_t *reply = NULL;
    int rc = cli_client_json_status(c, method, path, body, &status, &reply);
    if (rc)
        return rc;
    if (status < 200 || status >= 300) {
        rc = cli_client_reply_error(c, status, reply, what);
        json_decref(reply);
        return rc;
    }
    if (out)
        *out = reply;
    else
        json_decref(reply);
    return 0;
}

/* ---- streamed requests ------------------------------------------------------------------ */
/* A streamed request on a connection of its own; the answer judged as
 * cli_client_json does (the body of a 2xx is parsed into *out when asked). */
static int stream(client *c, http1_req *rq, http1_resp *rs, const char *path, const char *what, json_t **out)
{
    char *target = target_of(c, path);
    if (!target)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    rq->host = c->authority;
    rq->target = target;
    rq->token = c->token;
    int rc = exchange(c, rq, rs, 0);
    free(target);
    if (rc == 0 && rs->status && (rs->status < 200 || rs->status >= 300))
        rc = http_error(c, rs->status, rs->body.data, rs->body.len, what);
    else if (rc == 0 && out)
        *out = rs->body.len ? json_loadb(rs->body.data, rs->body.len, 0, NULL) : NULL;
    free(rs->body.data);
    return rc;
}

int cli_client_upload(client *c, const char *method, const char *path, int fd, long long size, const char *what,
                  json_t **out)
{
    http1_req rq = { .method = method, .body_fd = fd, .body_size = size,
                     .content_type = strcmp(method, "POST") == 0 ? "application/x-tar" : "application/octet-stream" };
    http1_resp rs = { 0 };
    return stream(c, &rq, &rs, path, what, out);
}

int cli_client_get_stream_hdr(client *c, const char *path, const char *header, client_data_fn on_data, void *user,
                          atomic_int *stop, const char *what)
{
    http1_req rq = { .method = "GET", .body_fd = -1, .header = header };
    http1_resp rs = { .on_data = on_data, .user = user, .stop = stop };
    return stream(c, &rq, &rs, path, what, NULL);
}

int cli_client_get_stream(client *c, const char *path, client_data_fn on_data, void *user, atomic_int *stop,
                      const char *what)
{
    return cli_client_get_stream_hdr(c, path, NULL, on_data, user, stop, what);
}

/* ---- base64 ------------------------------------------------------------------------- */
static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *cli_client_b64_encode(const void *data, size_t len)
{
    const unsigned char *s = data;
    char *out = malloc(4 * ((len + 2) / 3) + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] << 8 : 0) | (i + 2 < len ? s[i + 2] : 0);
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = i + 1 < len ? b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? b64[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

int cli_client_b64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len)
{
    if (len % 4)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            const char *pos = in[i + k] ? strchr(b64, in[i + k]) : NULL;
            if (in[i + k] == '=' && i + 4 == len && k >= 2)
                pad++;
            else if (!pos || pad)
                return -1;
            v = v << 6 | (pos && !pad ? (uint32_t)(pos - b64) : 0);
        }
        out[o++] = (unsigned char)(v >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(v >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)v;
    }
    *out_len = o;
    return 0;
}

int cli_client_write_entry(int fd, json_t *entry)
{
    json_t *data = json_object_get(entry, "data");
    const char *enc = json_string_value(json_object_get(entry, "encoding"));
    const char *text = json_string_value(data);
    size_t len = json_string_length(data), n = len;
    if (!text)
        return -1;
    if (enc && strcmp(enc, "base64") != 0)
        return util_write_all(fd, text, len) < 0 ? -1 : 0;
    unsigned char *bytes = malloc(len / 4 * 3 + 1);
    int rc = bytes && cli_client_b64_decode(text, len, bytes, &n) == 0 && util_write_all(fd, bytes, n) >= 0 ? 0 : -1;
    free(bytes);
    return rc;
}

/* ---- server-sent events ------------------------------------------------------------------ */
typedef struct sse {
    client_entry_fn fn;
    void           *user;
    http1_buf       line;           /* the line being received */
} sse;

/* One complete line: only `data:` lines carry anything (each `log` event
 * has exactly one); `event:`, ids and `: keepalive` comments are skipped. */
static void sse_line(sse *s, const char *line, size_t len)
{
    if (len < 5 || strncmp(line, "data:", 5) != 0)
        return;
    line += 5, len -= 5;
    if (len && *line == ' ')
        line++, len--;
    json_t *entry = json_loadb(line, len, 0, NULL);
    if (entry)
        s->fn(s->user, entry);
    json_decref(entry);
}

static int sse_data(void *user, const char *p, size_t n)
{
    sse *s = user;
    while (n && !s->line.oom) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        cli_http1_buf_add(&s->line, p, take);
        if (nl) {
            size_t len = s->line.len;
            if (len && s->line.data[len - 1] == '\r')
                len--;
            sse_line(s, s->line.data ? s->line.data : "", len);
            s->line.len = 0;
        }
        p += take + (nl != NULL), n -= take + (nl != NULL);
    }
    return s->line.oom ? -1 : 0;
}

int cli_client_follow(client *c, const char *path, client_entry_fn on_entry, void *user, atomic_int *stop)
{
    sse s = { .fn = on_entry, .user = user };
    int rc = cli_client_get_stream(c, path, sse_data, &s, stop, NULL);
    free(s.line.data);
    return rc < 0 ? cli_fail(CLI_EXIT_INTERNAL, "a log event from the daemon is too large") : rc;
}

void cli_client_utc_ms(long long ms, char *out, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || !gmtime_r(&t, &tm) || !strftime(out, size, "%Y-%m-%d %H:%M:%S", &tm))
        snprintf(out, size, "-");
}
