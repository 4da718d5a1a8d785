/* client.c: how the CLI talks to `cell serve`: libcurl over the unix socket
 * (or a URL), bearer tokens, problem+json errors as messages, SSE logs. */
#include "cli/client.h"
#include "util/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Larger answers are a broken or hostile daemon, not a reply worth holding. */
#define MAX_REPLY_BYTES (256u << 20)

/* ---- buffers ----------------------------------------------------------------- */
typedef struct buf {
    char  *data;
    size_t len, cap;
    int    oom;
} buf;

static void buf_add(buf *b, const char *p, size_t n)
{
    if (b->oom || b->len + n > MAX_REPLY_BYTES) {
        b->oom = 1;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *nd = realloc(b->data, cap);
        if (!nd) {
            b->oom = 1;
            return;
        }
        b->data = nd;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static size_t buf_write(char *p, size_t size, size_t n, void *user)
{
    buf_add(user, p, size * n);
    return size * n;
}

/* ---- where the daemon is ----------------------------------------------------- */
static char *trimmed_dup(const char *s, size_t len)
{
    while (len && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' ' || s[len - 1] == '/'))
        len--;
    return strndup(s, len);
}

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

static int set_auth(client *c, const char *state)
{
    char *token = find_token(state, &c->token_from);
    if (!token)
        return 0;
    if (!c->token_from) {
        free(token);
        return -1;
    }
    char *line = NULL;
    int ok = asprintf(&line, "Authorization: Bearer %s", token) >= 0;
    free(token);
    if (!ok)
        return -1;
    c->auth = curl_slist_append(NULL, line);
    free(line);
    return c->auth ? 0 : -1;
}

/* --url / $CELL_URL: http(s)://HOST:PORT or unix:PATH; else STATE/cell.sock. */
static int set_target(client *c, const char *url, const char *state)
{
    if (url && strncmp(url, "unix:", 5) == 0) {
        c->sock = strdup(url + 5);
        c->base = strdup("http://localhost");
        c->where = strdup(url);
    } else if (url) {
        c->base = trimmed_dup(url, strlen(url));
        c->where = strdup(url);
    } else {
        if (asprintf(&c->sock, "%s/cell.sock", state) < 0)
            c->sock = NULL;
        c->base = strdup("http://localhost");
        if (c->sock && asprintf(&c->where, "unix:%s", c->sock) < 0)
            c->where = NULL;
    }
    return c->base && c->where && (c->sock || (url && strncmp(url, "unix:", 5) != 0)) ? 0 : -1;
}

int client_open(client *c, const struct cli_global *g)
{
    memset(c, 0, sizeof *c);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return cli_fail(CLI_EXIT_INTERNAL, "cannot initialize libcurl");
    const char *url = g->url;
    if (!url || !*url)
        url = getenv("CELL_URL");
    if (url && !*url)
        url = NULL;
    if (url && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0 && strncmp(url, "unix:", 5) != 0) {
        client_close(c);
        return cli_fail(CLI_EXIT_USAGE, "--url/$CELL_URL '%s' must start with http://, https:// or unix:", url);
    }
    const char *state = g->state_dir ? g->state_dir : cell_default_state_dir();
    if (set_target(c, url, state) < 0 || set_auth(c, state) < 0 || !(c->h = curl_easy_init())) {
        client_close(c);
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    }
    return 0;
}

void client_close(client *c)
{
    if (c->h)
        curl_easy_cleanup(c->h);
    curl_slist_free_all(c->auth);
    free(c->base);
    free(c->sock);
    free(c->where);
    free(c->token_from);
    memset(c, 0, sizeof *c);
    curl_global_cleanup();
}

/* ---- requests ---------------------------------------------------------------------- */
char *client_pathf(const char *fmt, ...)
{
    buf b = { 0 };
    va_list ap;
    va_start(ap, fmt);
    for (const char *p = fmt; *p; p++) {
        if (p[0] == '%' && p[1] == 's') {
            char *esc = curl_easy_escape(NULL, va_arg(ap, const char *), 0);
            if (!esc)
                b.oom = 1;
            else
                buf_add(&b, esc, strlen(esc));
            curl_free(esc);
            p++;
        } else {
            buf_add(&b, p, 1);
        }
    }
    va_end(ap);
    if (b.oom || !b.data) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

/* The headers of one request: the token and an optional Content-Type. */
static struct curl_slist *headers_for(client *c, const char *content_type)
{
    struct curl_slist *h = NULL;
    if (c->auth && !(h = curl_slist_append(h, c->auth->data)))
        return NULL;
    if (content_type) {
        char line[128];
        snprintf(line, sizeof line, "Content-Type: %s", content_type);
        struct curl_slist *n = curl_slist_append(h, line);
        if (!n) {
            curl_slist_free_all(h);
            return NULL;
        }
        h = n;
    }
    /* Streamed bodies wait for "100 Continue": a daemon that refuses the
     * request at its headers answers and closes without reading the body,
     * which would otherwise end our upload with a broken pipe instead of
     * its answer.  JSON bodies are small; without a type, curl's default
     * for POST would be a form. */
    const char *last = !content_type ? "Content-Type:"
                     : strcmp(content_type, "application/json") == 0 ? "Expect:" : "Expect: 100-continue";
    struct curl_slist *n = curl_slist_append(h, last);
    if (!n)
        curl_slist_free_all(h);
    return n;
}

static int aim(client *c, CURL *h, const char *method, const char *path)
{
    char *url = NULL;
    if (asprintf(&url, "%s%s", c->base, path) < 0)
        return -1;
    curl_easy_setopt(h, CURLOPT_URL, url);
    free(url);
    if (c->sock)
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->sock);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "GET") == 0)
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    return 0;
}

CURL *client_handle(client *c, const char *method, const char *path)
{
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    const char *type = strcmp(method, "POST") == 0 ? "application/x-tar"
                     : strcmp(method, "PUT") == 0 ? "application/octet-stream" : NULL;
    struct curl_slist *hdrs = headers_for(c, type);
    if ((c->auth && !hdrs) || aim(c, h, method, path) < 0) {
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(h);
        return NULL;
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_PRIVATE, hdrs);
    return h;
}

void client_handle_free(CURL *h)
{
    if (!h)
        return;
    struct curl_slist *hdrs = NULL;
    curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&hdrs);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
}

/* ---- errors ------------------------------------------------------------------------- */
static int unreachable(client *c, CURL *h, CURLcode rc, const char *errbuf)
{
    /* curl words socket failures as "port 80" of localhost; errno is clearer. */
    long os_errno = 0;
    curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
    const char *why = os_errno ? strerror((int)os_errno) : errbuf && *errbuf ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY)
        return cli_fail(CLI_EXIT_INTERNAL, "cannot reach the cell daemon at %s (%s); start it with `cell serve`",
                        c->where, why);
    return cli_fail(CLI_EXIT_INTERNAL, "request to the cell daemon at %s failed: %s", c->where, why);
}

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

int client_check(client *c, CURL *h, CURLcode rc, const char *body, size_t len, const char *what)
{
    if (rc != CURLE_OK)
        return unreachable(c, h, rc, NULL);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300)
        return 0;
    return http_error(c, status, body, len, what);
}

/* ---- JSON requests ------------------------------------------------------------------- */
int client_json_status(client *c, const char *method, const char *path, json_t *body, long *status, json_t **out)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct curl_slist *hdrs = headers_for(c, body ? "application/json" : NULL);
    if ((body && !text) || !hdrs) {
        free(text);
        curl_slist_free_all(hdrs);
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    }
    buf b = { 0 };
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_reset(c->h);
    int rc = aim(c, c->h, method, path);
    curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c->h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, buf_write);
    curl_easy_setopt(c->h, CURLOPT_WRITEDATA, &b);
    if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, text ? text : "");
        curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE, (long)(text ? strlen(text) : 0));
    }
    CURLcode cr = rc < 0 ? CURLE_OUT_OF_MEMORY : curl_easy_perform(c->h);
    curl_easy_setopt(c->h, CURLOPT_ERRORBUFFER, NULL);
    free(text);
    curl_slist_free_all(hdrs);
    if (cr != CURLE_OK) {
        free(b.data);
        return unreachable(c, c->h, cr, errbuf);
    }
    if (b.oom) {
        free(b.data);
        return cli_fail(CLI_EXIT_INTERNAL, "the daemon's answer to %s %s is too large", method, path);
    }
    curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, status);
    *out = NULL;
    if (b.len) {
        json_error_t je;
        *out = json_loadb(b.data, b.len, 0, &je);
        if (!*out && *status < 300) {
            free(b.data);
            return cli_fail(CLI_EXIT_INTERNAL, "the daemon's answer to %s %s is not JSON: %s", method, path, je.text);
        }
        if (!*out) {
            /* Keep the raw text for the error message. */
            *out = json_pack("{s:s%}", "detail", b.data, b.len);
        }
    }
    free(b.data);
    return 0;
}

int client_reply_error(client *c, long status, json_t *reply, const char *what)
{
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    int rc = http_error(c, status, text, text ? strlen(text) : 0, what);
    free(text);
    return rc;
}

int client_json(client *c, const char *method, const char *path, json_t *body, const char *what, json_t **out)
{
    long status = 0;
    json_t *reply = NULL;
    int rc = client_json_status(c, method, path, body, &status, &reply);
    if (rc)
        return rc;
    if (status < 200 || status >= 300) {
        rc = client_reply_error(c, status, reply, what);
        json_decref(reply);
        return rc;
    }
    if (out)
        *out = reply;
    else
        json_decref(reply);
    return 0;
}

int client_perform(client *c, CURL *h, const char *what, json_t **out)
{
    buf b = { 0 };
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, buf_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    CURLcode cr = curl_easy_perform(h);
    int rc = client_check(c, h, cr, b.data, b.len, what);
    if (rc == 0 && out)
        *out = b.len ? json_loadb(b.data, b.len, 0, NULL) : NULL;
    free(b.data);
    return rc;
}

/* ---- base64 ------------------------------------------------------------------------- */
static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *client_b64_encode(const void *data, size_t len)
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

int client_b64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len)
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

int client_write_entry(int fd, json_t *entry)
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
    int rc = bytes && client_b64_decode(text, len, bytes, &n) == 0 && util_write_all(fd, bytes, n) >= 0 ? 0 : -1;
    free(bytes);
    return rc;
}

/* ---- server-sent events ------------------------------------------------------------------ */
typedef struct sse {
    CURL           *h;
    client_entry_fn fn;
    void           *user;
    atomic_int     *stop;
    buf             line;           /* the line being received */
    buf             err;            /* the body of a non-200 answer */
    long            status;
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

static size_t sse_write(char *p, size_t size, size_t n, void *user)
{
    sse *s = user;
    size_t total = size * n;
    if (!s->status)
        curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &s->status);
    if (s->status != 200) {
        buf_add(&s->err, p, total);
        return total;
    }
    for (size_t i = 0; i < total; i++) {
        if (p[i] == '\n') {
            sse_line(s, s->line.data ? s->line.data : "", s->line.len);
            s->line.len = 0;
        } else if (p[i] != '\r') {
            buf_add(&s->line, p + i, 1);
        }
    }
    return s->line.oom ? 0 : total;
}

static int sse_progress(void *user, curl_off_t a, curl_off_t b, curl_off_t c2, curl_off_t d)
{
    (void)a, (void)b, (void)c2, (void)d;
    sse *s = user;
    return s->stop && atomic_load(s->stop) ? 1 : 0;
}

int client_follow(client *c, const char *path, client_entry_fn on_entry, void *user, atomic_int *stop)
{
    sse s = { .fn = on_entry, .user = user, .stop = stop };
    if (!(s.h = client_handle(c, "GET", path)))
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    curl_easy_setopt(s.h, CURLOPT_WRITEFUNCTION, sse_write);
    curl_easy_setopt(s.h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(s.h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(s.h, CURLOPT_XFERINFOFUNCTION, sse_progress);
    curl_easy_setopt(s.h, CURLOPT_XFERINFODATA, &s);
    CURLcode rc = curl_easy_perform(s.h);
    int ret = 0;
    if (!(rc == CURLE_ABORTED_BY_CALLBACK && stop && atomic_load(stop)))
        ret = client_check(c, s.h, rc, s.err.data, s.err.len, NULL);
    if (ret == 0 && s.line.oom)
        ret = cli_fail(CLI_EXIT_INTERNAL, "a log event from the daemon is too large");
    client_handle_free(s.h);
    free(s.line.data);
    free(s.err.data);
    return ret;
}
