/* http.c: the daemon's life (start, listen, signals, shutdown) and each
 * request's path through libmicrohttpd: route, authenticate, limit, body, audit. */
#include "server/server_internal.h"
#include "server/agents.h"
#include "server/handlers.h"
#include "server/runs.h"
#include "server/metrics.h"
#include "server/slog.h"
#include "server/sdnotify.h"
#include "server/upgrade.h"
#include "server/ws.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/un.h>

/* ---- rate limiting ----------------------------------------------------------
 * A token bucket per token id: `rate` requests per second with a burst of
 * twice that.  Kept in memory: a restart refilling every bucket is harmless. */
struct rate_bucket {
    char     token_id[16];
    double   tokens;
    int64_t  last_ms;
    struct rate_bucket *next;
};

static int rate_allow(srv *s, const store_token *t)
{
    if (t->rate == 0)
        return 1;
    int64_t now = srv_now_ms();
    pthread_mutex_lock(&s->lock);
    struct rate_bucket *b = s->buckets;
    while (b && strcmp(b->token_id, t->id) != 0)
        b = b->next;
    if (!b && (b = calloc(1, sizeof *b))) {
        snprintf(b->token_id, sizeof b->token_id, "%s", t->id);
        b->tokens = 2.0 * t->rate;
        b->last_ms = now;
        b->next = s->buckets;
        s->buckets = b;
    }
    int ok = 1;
    if (b) {
        b->tokens += (double)(now - b->last_ms) * t->rate / 1000.0;
        if (b->tokens > 2.0 * t->rate)
            b->tokens = 2.0 * t->rate;
        b->last_ms = now;
        if (b->tokens >= 1.0)
            b->tokens -= 1.0;
        else
            ok = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* ---- authentication --------------------------------------------------------- */
/* Whether a comma-separated header value mentions `what` (case-insensitive). */
static int header_has(sreq *r, const char *name, const char *what)
{
    const char *v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
    return v && strcasestr(v, what) != NULL;
}

/* ?access_token= exists because browsers cannot set headers on a WebSocket
 * or an EventSource.  Tokens in URLs end up in proxy logs and shell
 * history, so it is taken only where it is needed: a route that streams,
 * asked for a WebSocket upgrade or an event stream. */
static int query_token_allowed(sreq *r)
{
    return (r->m.route->flags & ROUTE_EVENTS) &&
           (header_has(r, MHD_HTTP_HEADER_UPGRADE, "websocket") || header_has(r, MHD_HTTP_HEADER_ACCEPT, "text/event-stream"));
}

/* The token a browser offers as a WebSocket subprotocol, "cell.bearer.TOKEN"
 * (ws.h), copied into buf; NULL if none.  Taken where ?access_token= is
 * (a streaming route's WebSocket upgrade) and nowhere else: unlike the URL,
 * the header is in no log, history or Referer. */
static const char *ws_protocol_bearer(sreq *r, char *buf, size_t size)
{
    if (!(r->m.route->flags & ROUTE_EVENTS) || !header_has(r, MHD_HTTP_HEADER_UPGRADE, "websocket"))
        return NULL;
    const char *v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Sec-WebSocket-Protocol");
    const size_t plen = strlen(WS_PROTO_BEARER);
    while (v && *v) {
        v += strspn(v, " \t,");
        size_t len = strcspn(v, ", \t");
        if (len > plen && strncmp(v, WS_PROTO_BEARER, plen) == 0 && len - plen < size) {
            memcpy(buf, v + plen, len - plen);
            buf[len - plen] = '\0';
            return buf;
        }
        v += len;
    }
    return NULL;
}

static int authenticate(sreq *r)
{
    srv *s = r->s;
    if (s->opt.no_token) {
        snprintf(r->tok.id, sizeof r->tok.id, "-");
        snprintf(r->tok.tenant, sizeof r->tok.tenant, "default");
        r->tok.admin = 1;
        r->authed = 1;
        return 0;
    }
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *bearer = NULL;
    char offered[256];
    if (h && strncasecmp(h, "Bearer ", 7) == 0)
        bearer = h + 7;
    else if (!h)
        bearer = ws_protocol_bearer(r, offered, sizeof offered);
    if (!h && !bearer && (bearer = srv_req_query(r, "access_token")) && !query_token_allowed(r)) {
        srv_reply_problem_details(r, 401, "token_invalid",
                              json_pack("{s:s}", "message", "access_token in the URL is not accepted here"),
                              "?access_token= is accepted only for WebSocket upgrades and event streams "
                              "(Accept: text/event-stream); send Authorization: Bearer TOKEN");
        return -1;
    }
    if (!bearer || !*bearer) {
        srv_reply_problem_details(r, 401, "token_invalid", json_pack("{s:s}", "message", "missing or invalid bearer token"),
                              "missing or invalid bearer token: send Authorization: Bearer TOKEN");
        return -1;
    }
    /* The node token (cell serve --pods) is a token of the node endpoint
     * alone: elsewhere it is unknown to the store, so refused below. */
    if ((r->m.route->flags & ROUTE_NODE) && srv_pods_node_token(r, bearer)) {
        snprintf(r->tok.id, sizeof r->tok.id, "node");
        snprintf(r->tok.tenant, sizeof r->tok.tenant, "pods");
        r->tok.admin = 0;
        r->authed = 1;
        return 0;
    }
    cell_error e = { 0 };
    if (store_token_check(s->st, bearer, &r->tok, &e) < 0) {
        if (e.code == EACCES)
            srv_reply_problem_details(r, 401, "token_invalid", json_pack("{s:s}", "message", "missing or invalid bearer token"),
                                  "missing or invalid bearer token (unknown, revoked or malformed)");
        else
            srv_reply_error(r, &e);
        return -1;
    }
    r->authed = 1;
    srv_conns_authenticated(r);
    if (!rate_allow(s, &r->tok)) {
        srv_reply_problem(r, 429, "rate_limited",
                      "token %s is limited to %u requests per second; slow down and retry",
                      r->tok.id, r->tok.rate);
        return -1;
    }
    return 0;
}

/* ---- the path's control bytes -------------------------------------------------
 * libmicrohttpd decodes the request line's query names and values and then
 * its path with this callback, on the connection's own thread (one thread
 * per connection), just before that thread calls the access handler: the
 * last call's finding is the path's.  The decoded path is a C string, so
 * its length is known only here (a "%00" would cut it short unseen). */
static _Thread_local struct {
    struct MHD_Connection *conn;
    long   ctl;                     /* srv_router_path_ctl() of the last decoded text */
    char   shown[256];              /* that text, ASCII: control, non-ASCII bytes and '%' as %XX */
} path_seen;

static size_t on_unescape(void *cls, struct MHD_Connection *conn, char *text)
{
    (void)cls;
    size_t len = MHD_http_unescape(text);
    path_seen.conn = conn;
    path_seen.ctl = srv_router_path_ctl(text, len);
    if (path_seen.ctl >= 0) {
        size_t used = 0;
        for (size_t i = 0; i < len && used + 4 < sizeof path_seen.shown; i++) {
            unsigned char c = (unsigned char)text[i];
            used += (size_t)snprintf(path_seen.shown + used, sizeof path_seen.shown - used,
                                     c < 0x20 || c >= 0x7f || c == '%' ? "%%%02X" : "%c", c);
        }
    }
    return len;
}

/* The decoded path holds a control byte: 400, naming it (escaped). */
static int path_has_ctl(sreq *r)
{
    if (path_seen.conn != r->conn || path_seen.ctl < 0)
        return 0;
    path_seen.conn = NULL;
    srv_reply_problem(r, 400, "invalid_request", "the request path %s holds a control character (byte %ld): "
                  "%%00-%%1F and %%7F are refused in paths; percent-encode only printable characters",
                  path_seen.shown, path_seen.ctl);
    return 1;
}

/* ---- one request --------------------------------------------------------------
 * libmicrohttpd calls the access handler once with the headers, once per
 * body chunk, and once more at the end.  Routing, auth and the cell lookup
 * happen on the first call, so a bad token never gets to send a big body. */
static void begin(sreq *r)
{
    srv *s = r->s;
    char path[sizeof r->m.buf];
    size_t len = strcspn(r->url, "?");
    if (len >= sizeof path) {
        srv_reply_problem(r, 414, "invalid_request", "the request path is longer than %zu bytes", sizeof path - 1);
        return;
    }
    memcpy(path, r->url, len);
    path[len] = '\0';
    if (path_has_ctl(r))
        return;
    /* With a client CA the handshake already required the certificate. */
    if (!srv_tls_request_allowed(r)) {
        srv_reply_problem(r, 401, "token_invalid", "this listener requires a TLS client certificate signed by "
                      "--tls-client-ca; none valid was presented");
        return;
    }

    const route *table = srv_control_routes;
    size_t n = srv_n_control_routes;
    if (strncmp(path, "/cells/", 7) == 0)
        table = srv_agent_routes, n = srv_n_agent_routes;
    r->matched = srv_router_match(table, n, r->method, path, &r->m);
    if (r->matched == ROUTER_NO_PATH || r->matched == ROUTER_TOO_LONG) {
        /* The reference calls this an invalid request, not a missing resource. */
        srv_reply_problem(r, 404, "invalid_request", "endpoint not found: %s %s", r->method, path);
        return;
    }
    if (r->matched == ROUTER_BAD_METHOD && strcmp(r->method, "OPTIONS") == 0) {
        srv_cors_options(r, table, n, path);
        return;
    }
    if (r->matched == ROUTER_BAD_METHOD) {
        srv_router_allowed(table, n, path, r->allow, sizeof r->allow);
        srv_reply_problem(r, 405, "method_not_allowed", "%s is not allowed on %s", r->method, path);
        return;
    }
    /* Before the token: a page on another origin gets no WebSocket (cors.c says why). */
    const char *origin;
    if (srv_cors_ws_origin_refused(r, &origin)) {
        srv_reply_problem(r, 403, "forbidden", "a WebSocket from a page on %s is refused: a browser page may "
                          "open one only from this daemon's own origin (the Host it asks for) or from an origin "
                          "of cell serve --cors-origin", origin);
        return;
    }
    unsigned flags = r->m.route->flags;
    if ((flags & ROUTE_PUBLIC) || ((flags & ROUTE_METRICS) && s->opt.metrics_public))
        return;
    if (authenticate(r) < 0)
        return;
    if ((flags & ROUTE_ADMIN) && !r->tok.admin && !((flags & ROUTE_NODE) && strcmp(r->tok.id, "node") == 0)) {
        srv_reply_problem(r, 403, "forbidden", "%s %s needs an admin token", r->method, path);
        return;
    }
    /* "path=/etc/passwd%00.txt" would reach a handler as "/etc/passwd". */
    const char *nul = srv_req_query_nul(r);
    if (nul) {
        srv_reply_problem(r, 400, "invalid_request", "query parameter '%s' contains a NUL character", nul);
        return;
    }
    if (flags & ROUTE_CELL) {
        const char *id = srv_router_param(&r->m, "cell");
        srv_req_audit(r, "cell", json_string(id));
        r->cell = srv_registry_get(s, r->tok.tenant, id);
        if (!r->cell) {
            srv_reply_problem(r, 404, "not_found", "cell %s", id);
            return;
        }
        atomic_store(&r->cell->active_ms, srv_now_ms());
        if (!srv_registry_running(r->cell)) {
            enum scell_state st = srv_registry_state(r->cell);
            if (st == SCELL_RUNNING)
                st = SCELL_STOPPED;     /* its init died; the reaper halts it */
            srv_reply_problem(r, 409, "cell_stopped", "cell %s is %s; POST /v1/cells/%s/start first", id,
                          srv_registry_state_name(st), id);
        }
    }
}

/* Bytes of a refused body read before the connection is dropped instead. */
#define DISCARD_LIMIT (16u << 20)

/* Streamed bodies (files, tars, lane imports) share one limit, checked here
 * for every route: declared up front, counted as the chunks arrive.  The
 * per-cell plane words it as sandbox-agent does (invalid_request). */
static void reply_stream_too_big(sreq *r)
{
    srv_reply_problem(r, 413, (r->m.route->flags & ROUTE_CELL) ? "invalid_request" : "payload_too_large",
                  "body exceeds the limit of %llu bytes (cell serve --max-file-size)",
                  (unsigned long long)r->s->opt.max_file_bytes);
}

/* A JSON body is buffered up to max_json_bytes; streamed bodies go to the route. */
static void take_body(sreq *r, const char *data, size_t len)
{
    if (r->responded)
        return;                       /* an error is queued: drain and drop */
    const route *rt = r->m.route;
    if (rt->flags & ROUTE_STREAM_BODY) {
        r->streamed += len;
        if (r->streamed > r->s->opt.max_file_bytes)
            reply_stream_too_big(r);
        else
            rt->body(r, data, len);
        return;
    }
    size_t limit = r->s->opt.max_json_bytes;
    if (r->body_len + len > limit) {
        srv_reply_problem(r, 413, "payload_too_large", "JSON bodies are limited to %zu bytes", limit);
        return;
    }
    if (r->body_len + len > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + len)
            cap *= 2;
        char *nb = realloc(r->body, cap);
        if (!nb) {
            srv_reply_problem(r, 500, "internal", "out of memory");
            return;
        }
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    (void)version;
    sreq *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->s = cls;
        r->conn = conn;
        r->url = url;
        r->method = method;
        r->start_ms = srv_now_ms();
        *con_cls = r;
        srv_conns_request_begins(r);
        /* A request with a body gets its answer after the body: clients that
         * do not wait for "100 Continue" would otherwise see a reset instead
         * of the error.  take_body() discards what an error made useless. */
        const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        const char *len = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        r->in_body = te != NULL || (len && strtoull(len, NULL, 10) > 0);
        begin(r);
        if (!r->responded && !r->m.route)
            return MHD_NO;              /* no answer could be made: drop the connection */
        if (!r->responded && (r->m.route->flags & ROUTE_STREAM_BODY)) {
            if (len && strtoull(len, NULL, 10) > r->s->opt.max_file_bytes)
                reply_stream_too_big(r);
        } else if (!r->responded) {
            /* Refuse a declared oversized or non-JSON body before reading it. */
            const char *cl = len;
            const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
            if (cl && strtoull(cl, NULL, 10) > r->s->opt.max_json_bytes)
                srv_reply_problem(r, 413, "payload_too_large", "JSON bodies are limited to %u bytes",
                              r->s->opt.max_json_bytes);
            else if (ct && cl && strtoull(cl, NULL, 10) > 0 && strncasecmp(ct, "application/json", 16) != 0)
                srv_reply_problem(r, 415, "invalid_request", "expected a request with Content-Type: application/json, "
                              "not %s", ct);
        }
        r->in_body = 1;
        return MHD_YES;
    }
    if (*upload_size) {
        if (r->responded) {
            /* Drain a little of a refused body, then give up on it.  The
             * refused may be unauthenticated: a body trickled in below the
             * idle timeout gets no more time than a request head. */
            r->discarded += *upload_size;
            *upload_size = 0;
            return r->discarded > DISCARD_LIMIT ||
                   srv_now_ms() - r->start_ms > (int64_t)r->s->opt.header_timeout_s * 1000 ? MHD_NO : MHD_YES;
        }
        take_body(r, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    r->in_body = 0;
    if (r->deferred) {
        struct MHD_Response *resp = r->deferred;
        r->deferred = NULL;
        enum MHD_Result ok = MHD_queue_response(conn, r->status, resp);
        MHD_destroy_response(resp);
        return ok;
    }
    if (r->responded)
        return MHD_YES;
    /* libmicrohttpd would count the handler's time (a cell boot, a run to
     * its end) as the client's idleness and drop the answer; setting the
     * timeout again after restarts the idle clock.  Streams keep none: they
     * end on their own, on revocation or at shutdown. */
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    int ret = r->m.route->fn(r);
    if (!r->long_lived)
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, r->s->opt.idle_timeout_s);
    if (!r->responded && ret == MHD_YES)
        return srv_reply_problem(r, 500, "internal", "the handler gave no answer");
    return ret;
}

/* Requests without a valid token (bad tokens, unknown paths) are audited,
 * but anyone who can connect sends them as fast as the loopback carries:
 * at most AUDIT_ANON_PER_S are recorded each second, and the next record
 * written says how many were left out ("unauthenticatedSuppressed"), so
 * an unauthenticated flood cannot rotate the tenants' records away. */
#define AUDIT_ANON_PER_S 5

static pthread_mutex_t anon_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t anon_second;
static unsigned anon_in_second;
static uint64_t anon_suppressed;

/* 0: leave this record out.  1: write it, with *suppressed left out before it. */
static int anon_audit_allowed(uint64_t *suppressed)
{
    int64_t second = srv_now_ms() / 1000;
    pthread_mutex_lock(&anon_lock);
    if (second != anon_second) {
        anon_second = second;
        anon_in_second = 0;
    }
    int ok = anon_in_second < AUDIT_ANON_PER_S;
    if (ok) {
        anon_in_second++;
        *suppressed = anon_suppressed;
        anon_suppressed = 0;
    } else {
        anon_suppressed++;
        srv_metrics_audit_suppressed();
    }
    pthread_mutex_unlock(&anon_lock);
    return ok;
}

static void write_audit(sreq *r)
{
    if (r->m.route && (r->m.route->flags & ROUTE_NO_AUDIT) && r->status < 400)
        return;
    uint64_t suppressed = 0;
    if (!r->authed && !anon_audit_allowed(&suppressed))
        return;
    json_t *rec = r->audit ? r->audit : json_object();
    r->audit = NULL;
    if (!rec)
        return;
    if (suppressed)
        json_object_set_new(rec, "unauthenticatedSuppressed", json_integer((json_int_t)suppressed));
    json_object_set_new(rec, "kind", json_string("request"));
    json_object_set_new(rec, "tenant", json_string(r->authed ? r->tok.tenant : "-"));
    json_object_set_new(rec, "token", json_string(r->authed ? r->tok.id : "-"));
    json_object_set_new(rec, "method", json_string(r->method));
    char path[512];
    snprintf(path, sizeof path, "%.*s", (int)strcspn(r->url, "?"), r->url);
    json_object_set_new(rec, "path", json_string(path));
    json_object_set_new(rec, "status", json_integer(r->status));
    json_object_set_new(rec, "durationMs", json_integer(srv_now_ms() - r->start_ms));
    store_audit_append(r->s->st, rec);
    json_decref(rec);
}

/* A 5xx is the daemon's failure, not the client's: the operator hears of
 * it in the log (the route template: the path may hold a tenant's names). */
static void log_failed_request(sreq *r)
{
    char status[16];
    const char *pattern = r->m.route ? r->m.route->pattern : "unmatched";
    snprintf(status, sizeof status, "%u", r->status);
    srv_slog(SLOG_ERROR, SLOG_F("route", pattern, "method", r->m.route ? r->m.route->method : NULL, "status", status,
                            "tenant", r->authed ? r->tok.tenant : NULL),
         "%s %s answered %u", r->m.route ? r->m.route->method : "-", pattern, r->status);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    sreq *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    /* An upgraded connection over TLS completes while its session goes on
     * (terminal.c): it stays a stream, not a connection awaiting a head. */
    if (r->status != 101)
        srv_conns_request_ends(r);
    srv_metrics_http(r->m.route, r->method, r->status);
    if (r->status >= 500 && !(r->m.route && (r->m.route->flags & ROUTE_NO_AUDIT) && r->status == 503))
        log_failed_request(r);      /* a probe's 503 (/readyz) is an answer, not a failure */
    write_audit(r);
    if (r->stream_free)
        r->stream_free(r);
    if (r->deferred)
        MHD_destroy_response(r->deferred);
    if (r->cell)
        srv_registry_put(r->cell);
    json_decref(r->audit);
    free(r->body);
    free(r);
}

/* ---- listening ----------------------------------------------------------------- */
static int addr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return sa->sa_family == AF_INET6 &&
           (IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127));
}

/* --listen's HOST:PORT as an address (*ai, freeaddrinfo'd by the caller). */
static int resolve_listen(const char *spec, struct addrinfo **ai, cell_error *err)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof host || !colon[1])
        return util_fail(err, EINVAL, "--listen %s: expected HOST:PORT, e.g. 127.0.0.1:7070", spec);
    /* getaddrinfo() takes any number as a port and keeps its low 16 bits
     * (99999 listened on 34463): check the range first. */
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end || errno || port > 65535 || !isdigit((unsigned char)colon[1]))
        return util_fail(err, EINVAL, "--listen %s: the port must be a number from 0 to 65535 (0: any free port)",
                         spec);
    memcpy(host, spec, colon - spec);
    host[colon - spec] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE };
    int gai = getaddrinfo(host, colon + 1, &hints, ai);
    if (gai != 0)
        return util_fail(err, EINVAL, "--listen %s: %s (use a numeric address and port)", spec, gai_strerror(gai));
    return 0;
}

/* Off loopback, bearer tokens and cell data in plain HTTP are read by anyone
 * on the path: refused unless TLS is on or the operator says otherwise.
 * Checked with the options, before the state directory is touched. */
static int check_listen(const server_options *o, int tls, const char *spec, cell_error *err)
{
    struct addrinfo *ai;
    if (!*spec || resolve_listen(spec, &ai, err) < 0)
        return *spec ? -1 : 0;
    int loopback = addr_is_loopback(ai->ai_addr);
    freeaddrinfo(ai);
    if (!loopback && !tls && !o->insecure_listen)
        return util_fail(err, EINVAL, "--listen %s is not a loopback address and would carry tokens in plain "
                         "HTTP: give --tls-cert FILE --tls-key FILE, or --insecure-listen (e.g. behind a TLS "
                         "proxy on a private network)", spec);
    return 0;
}

/* The checks of options against each other, which need nothing loaded:
 * cell-daemon runs them before it touches the state directory, and a
 * failure is a usage error (exit 2).  TLS is on when a certificate is given
 * (srv_tls_load() fails the start otherwise). */
int srv_options_check(const server_options *o, cell_error *err)
{
    const char *listen_spec = o->listen ? o->listen : SERVER_DEFAULT_LISTEN;
    /* Without tokens anyone who can connect is the admin, and the admin can
     * bind-mount any host path into a cell: on TCP that is every local user. */
    if (o->no_token && *listen_spec && !o->no_token_on_tcp)
        return util_fail(err, EINVAL, "--no-token would make anyone who can connect to %s an admin (a host root "
                         "equivalent): use it with --listen \"\" (the unix socket only, mode 0600), or add "
                         "--no-token-on-tcp-i-understand-anyone-local-is-admin", listen_spec);
    for (const char *const *origin = o->cors_origins; origin && *origin; origin++)
        if (srv_cors_origin_check(*origin, err) < 0)
            return -1;
    return check_listen(o, o->tls_cert_file != NULL, listen_spec, err);
}

static int listen_tcp(const char *spec, cell_error *err)
{
    struct addrinfo *ai;
    if (resolve_listen(spec, &ai, err) < 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) {
        freeaddrinfo(ai);
        return util_fail_errno(err, "socket for %s", spec);
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 512) < 0) {
        int saved = errno;
        freeaddrinfo(ai);
        close(fd);
        errno = saved;
        return util_fail_errno(err, "listen on %s", spec);
    }
    freeaddrinfo(ai);
    return fd;
}

/* "HOST:PORT" the socket is bound to (the port --listen ...:0 got). */
static void bound_name(int fd, char *out, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char addr[INET6_ADDRSTRLEN] = "?";
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(out, size, "?");
        return;
    }
    int v6 = ss.ss_family == AF_INET6;
    const void *a = v6 ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                       : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
    unsigned port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    inet_ntop(ss.ss_family, a, addr, sizeof addr);
    snprintf(out, size, v6 ? "[%s]:%u" : "%s:%u", addr, port);
}

/* --insecure-listen: bearer tokens cross plain HTTP where anyone on the
 * path reads them.  Allowed (behind a TLS proxy it is fine), but said. */
static void warn_if_remote(const srv *s, int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (fd < 0 || s->tls || getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (!addr_is_loopback((struct sockaddr *)&ss))
        srv_slog(SLOG_WARN, NULL, "WARNING: --insecure-listen: --listen is not a loopback address: tokens and "
             "data travel in plain HTTP; put a TLS proxy in front and keep this port off the network");
}

static int listen_unix(const char *path, cell_error *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path)
        return util_fail(err, ENAMETOOLONG, "socket path %s is longer than %zu bytes", path, sizeof sa.sun_path - 1);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return util_fail_errno(err, "socket for %s", path);
    /* A socket left by a killed daemon is stale unless something answers on it. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        close(fd);
        return util_fail(err, EADDRINUSE, "%s: another daemon is serving this state directory", path);
    }
    unlink(path);
    mode_t old = umask(0077);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc < 0 || listen(fd, 512) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return util_fail_errno(err, "listen on %s", path);
    }
    return fd;
}

/* Each listener is its own libmicrohttpd daemon with its own connection
 * limit, so clients filling the TCP port cannot lock the admin out of the
 * unix socket.  per_ip is 0 for the unix socket (its peers have no address). */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        srv_tls_connection_started(cls, conn);
    srv_conns_notify(cls, conn, socket_context, code);
}

/* libmicrohttpd's own messages (MHD_USE_ERROR_LOG) go through the log too. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    srv_slog_va(SLOG_WARN, SLOG_F("component", "http"), fmt, ap);
}

/* tls: the TCP listener with --tls-cert (the unix socket is always plain). */
static struct MHD_Daemon *start_mhd(srv *s, int fd, unsigned per_ip, int tls)
{
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG;
    struct MHD_OptionItem tls_opts[TLS_MHD_OPTIONS] = { { MHD_OPTION_END, 0, NULL } };
    if (tls)
        flags |= srv_tls_mhd_options(s, tls_opts);
    return MHD_start_daemon(flags, 0, NULL, NULL, on_access, s,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,     /* first: it covers the options' own messages */
                            MHD_OPTION_LISTEN_SOCKET, fd,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                            MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, s,
                            MHD_OPTION_ARRAY, tls_opts,
                            MHD_OPTION_CONNECTION_LIMIT, s->opt.max_conns,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
                            MHD_OPTION_CONNECTION_TIMEOUT, s->opt.idle_timeout_s,
                            /* Upload chunks are at most this big: 256 KiB keeps
                             * file writes near disk speed. */
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
                            MHD_OPTION_END);
}

/* ---- the owner thread -------------------------------------------------------------- */
struct owner_job {
    void (*fn)(void *);
    void *arg;
    int done;
    struct owner_job *next;
};

void srv_on_owner_thread(srv *s, void (*fn)(void *), void *arg)
{
    struct owner_job job = { .fn = fn, .arg = arg };
    pthread_mutex_lock(&s->owner_lock);
    if (s->owner_closed) {
        /* The daemon is stopping: nobody would run the job, and whatever
         * it boots dies with the daemon anyway. */
        pthread_mutex_unlock(&s->owner_lock);
        fn(arg);
        return;
    }
    job.next = s->owner_jobs;
    s->owner_jobs = &job;
    uint64_t one = 1;
    if (write(s->owner_wake, &one, sizeof one) < 0) { /* an eventfd write cannot fail short of overflow */ }
    while (!job.done)
        pthread_cond_wait(&s->owner_cond, &s->owner_lock);
    pthread_mutex_unlock(&s->owner_lock);
}

static void run_owner_jobs(srv *s)
{
    uint64_t n;
    if (read(s->owner_wake, &n, sizeof n) < 0) { /* spurious wake */ }
    pthread_mutex_lock(&s->owner_lock);
    while (s->owner_jobs) {
        struct owner_job *job = s->owner_jobs;
        s->owner_jobs = job->next;
        pthread_mutex_unlock(&s->owner_lock);
        job->fn(job->arg);
        pthread_mutex_lock(&s->owner_lock);
        job->done = 1;
        pthread_cond_broadcast(&s->owner_cond);
    }
    pthread_mutex_unlock(&s->owner_lock);
}

/* ---- the log and signals -------------------------------------------------------------- */
/* --log FILE: stdout and stderr (the banner, libmicrohttpd's and our
 * messages, sanitizer reports) go to FILE, reopened by path on SIGHUP so
 * that a rotated log is let go of. */
static int open_log(const char *path, cell_error *err)
{
    _cleanup_close_ int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return util_fail_errno(err, "--log %s", path);
    fflush(stdout);
    fflush(stderr);
    if (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
        return util_fail_errno(err, "--log %s: dup2", path);
    return 0;
}

static void on_sighup(srv *s)
{
    cell_error e = { 0 };
    if (s->opt.log_path && open_log(s->opt.log_path, &e) < 0)
        srv_slog(SLOG_ERROR, NULL, "SIGHUP: %s (logging goes on to the old file)", e.message);
    else if (!s->opt.quiet)
        srv_slog(SLOG_INFO, NULL, "SIGHUP: %s", s->opt.log_path ? "log reopened" : "nothing to reopen (no --log)");
}

/* The main thread: boots cells for the request threads until a signal.
 * Start-up and boots free large temporary buffers below memory still in
 * use, where free() cannot hand them back (an idle daemon kept ~300 KiB of
 * such heap): after a second with nothing to do, malloc_trim() returns the
 * free pages. */
static int owner_loop(srv *s, const sigset_t *sigs)
{
    int sfd = signalfd(-1, sigs, SFD_CLOEXEC);
    if (sfd < 0)
        return -1;
    int trim = 1;
    for (;;) {
        struct pollfd p[2] = { { .fd = sfd, .events = POLLIN }, { .fd = s->owner_wake, .events = POLLIN } };
        int n = poll(p, 2, trim ? 1000 : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (n == 0) {
            malloc_trim(0);
            trim = 0;
            continue;
        }
        if (p[1].revents) {
            run_owner_jobs(s);
            trim = 1;
        }
        if (p[0].revents) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) != sizeof si)
                continue;
            if (si.ssi_signo == SIGHUP) {
                on_sighup(s);
                continue;
            }
            close(sfd);
            return (int)si.ssi_signo;
        }
    }
    close(sfd);
    return 0;
}

/* ---- tokens at start ------------------------------------------------------------ */
static int ensure_admin_token(srv *s, char *path, size_t size, int *created, cell_error *err)
{
    size_t n = 0;
    *created = 0;
    if (util_path(path, size, err, "%s/admin.token", s->state_dir) < 0 ||
        store_token_count(s->st, &n, err) < 0)
        return -1;
    if (n > 0)
        return 0;
    store_token info;
    char bearer[128];
    if (store_token_create(s->st, "default", "admin", 1, 0, &info, bearer, sizeof bearer, err) < 0)
        return -1;
    size_t len = strlen(bearer);
    bearer[len] = '\n';
    if (util_write_file(path, bearer, len + 1, 0600, 1, err) < 0)
        return -1;
    *created = 1;
    return 0;
}

/* ---- one daemon per state directory -------------------------------------------------
 * A second daemon must not mark the first one's cells stopped or finish
 * "unfinished" lanes that the first is importing: STATE/daemon.lock is
 * flock()ed before anything in STATE is opened, and holds the owner's pid
 * for the refusal message.  The CLI's own commands do not take it (libcell
 * contexts lock each cell and lane by itself), so they go on working. */
static int lock_state_dir(const char *state_dir, cell_error *err)
{
    char path[4096];
    if (util_mkdir_p(state_dir, 0700, err) < 0 ||
        util_path(path, sizeof path, err, "%s/daemon.lock", state_dir) < 0)
        return -1;
    _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return util_fail_errno(err, "open %s", path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK)
            return util_fail_errno(err, "lock %s", path);
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        return util_fail(err, EBUSY, "another cell serve (pid %s) is running on the state directory %s; "
                         "stop it first or use another --state", *pid ? pid : "unknown", state_dir);
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        return util_fail_errno(err, "write %s", path);
    return util_steal_fd(&fd);
}

/* Option defaults and the checks that need no state: --no-token on TCP,
 * and enough fds for both listeners' connections besides the cells'. */
#define SERVER_FD_RESERVE 1024

static int check_options(srv *s, const char *listen_spec, cell_error *err)
{
    server_options *o = &s->opt;
    if (!o->max_conns)
        o->max_conns = SERVER_DEFAULT_MAX_CONNS;
    if (!o->max_conns_per_ip)
        o->max_conns_per_ip = SERVER_DEFAULT_MAX_CONNS_PER_IP;
    if (!o->idle_timeout_s)
        o->idle_timeout_s = SERVER_DEFAULT_IDLE_TIMEOUT;
    if (!o->header_timeout_s)
        o->header_timeout_s = SERVER_DEFAULT_HEADER_TIMEOUT;
    if (srv_options_check(o, err) < 0)
        return -1;
    if (o->no_token && *listen_spec)
        srv_slog(SLOG_WARN, NULL, "WARNING: --no-token-on-tcp-i-understand-anyone-local-is-admin: every local "
             "user that can connect to %s is the admin of this daemon", listen_spec);
    if (srv_tls_load(s, listen_spec, err) < 0)
        return -1;
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) < 0)
        return util_fail_errno(err, "getrlimit");
    uint64_t need = 2ull * o->max_conns + SERVER_FD_RESERVE;
    if (nofile.rlim_cur != RLIM_INFINITY && nofile.rlim_cur < need)
        return util_fail(err, EMFILE, "--max-connections %u needs %llu open files (two listeners and %u for "
                         "cells), but RLIMIT_NOFILE is %llu: lower it or raise the limit (ulimit -n)",
                         o->max_conns, (unsigned long long)need, SERVER_FD_RESERVE,
                         (unsigned long long)nofile.rlim_cur);
    return 0;
}

static void srv_free(srv *s)
{
    srv_conns_stop(s);                  /* the HTTP daemons are gone */
    srv_agents_shutdown();              /* installs hold cell references */
    srv_acp_shutdown();                 /* agent instances hold cell references */
    srv_runs_free_all();                /* no driver or stream is left */
    srv_registry_free(s);
    srv_egress_cleanup();
    srv_tls_free(s);
    while (s->buckets) {
        struct rate_bucket *b = s->buckets;
        s->buckets = b->next;
        free(b);
    }
    if (s->st)
        store_close(s->st);
    if (s->ctx)
        cell_ctx_close(s->ctx);
    if (s->owner_wake >= 0)
        close(s->owner_wake);
    pthread_mutex_destroy(&s->owner_lock);
    pthread_cond_destroy(&s->owner_cond);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->ctx_lock);
    pthread_cond_destroy(&s->reaper_cond);
}

int srv_run(const server_options *opt, cell_error *err)
{
    srv s = { .opt = *opt };
    pthread_mutex_init(&s.lock, NULL);
    pthread_mutex_init(&s.ctx_lock, NULL);
    pthread_cond_init(&s.reaper_cond, NULL);
    pthread_mutex_init(&s.owner_lock, NULL);
    pthread_cond_init(&s.owner_cond, NULL);
    s.owner_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!s.opt.max_file_bytes)
        s.opt.max_file_bytes = SERVER_DEFAULT_MAX_FILE;
    if (!s.opt.max_json_bytes)
        s.opt.max_json_bytes = SERVER_DEFAULT_MAX_JSON;
    s.started_ms = srv_now_ms();
    srv_slog_init(opt->log_format);
    srv_sdnotify_init();                /* before any thread: it edits the environment */

    /* Signals are taken synchronously by this thread; every thread created
     * from here on inherits the blocked mask.  Writes to a closed peer must
     * be errors, not deaths. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGQUIT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Each running cell holds a few fds (control socket, pidfd, eventfd,
     * lane and slot locks); a 1024 soft limit would stop at ~160 cells. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }

    int rc = -1, tcp_fd = -1, unix_fd = -1, lock_fd = -1;
    const char *listen_spec = opt->listen ? opt->listen : SERVER_DEFAULT_LISTEN;
    if (s.owner_wake < 0) {
        util_fail_errno(err, "eventfd");
        goto out;
    }
    char sock_path[4096] = "", token_path[4096];
    int created = 0;
    if (check_options(&s, listen_spec, err) < 0 || (opt->log_path && open_log(opt->log_path, err) < 0) ||
        srv_metrics_start(err) < 0)
        goto out;
    srv_slog_init(opt->log_format);     /* again: --log took stderr off the journal */
    /* Before the context: opening one sweeps the state directory. */
    if ((lock_fd = lock_state_dir(opt->state_dir ? opt->state_dir : cell_default_state_dir(), err)) < 0)
        goto out;
    if (srv_conns_start(&s, err) < 0 || cell_ctx_open(&s.ctx, opt->state_dir, err) < 0)
        goto out;
    snprintf(s.state_dir, sizeof s.state_dir, "%s", cell_ctx_state_dir(s.ctx));
    if (store_open(&s.st, s.state_dir, err) < 0 || srv_limits_start(&s, err) < 0 || srv_secrets_start(&s, err) < 0 ||
        srv_agents_start(&s, err) < 0 || srv_pods_start(&s, err) < 0)
        goto out;
    store_audit_set_rotation(s.st, opt->audit_max_size_set ? opt->audit_max_size : STORE_AUDIT_DEFAULT_MAX_SIZE,
                             opt->audit_keep ? opt->audit_keep : STORE_AUDIT_DEFAULT_KEEP);
    if (!opt->no_token && ensure_admin_token(&s, token_path, sizeof token_path, &created, err) < 0)
        goto out;
    if (srv_registry_load(&s, err) < 0)
        goto out;
    if (srv_runs_start(&s, err) < 0)
        goto stop_registry;

    if (*listen_spec && (tcp_fd = listen_tcp(listen_spec, err)) < 0)
        goto stop_registry;
    warn_if_remote(&s, tcp_fd);
    char bound[INET6_ADDRSTRLEN + 16] = "";
    if (tcp_fd >= 0)
        bound_name(tcp_fd, bound, sizeof bound);
    if (!opt->socket_path && util_path(sock_path, sizeof sock_path, err, "%s/cell.sock", s.state_dir) < 0)
        goto stop_registry;
    if (opt->socket_path)
        snprintf(sock_path, sizeof sock_path, "%s", opt->socket_path);
    if (*sock_path && (unix_fd = listen_unix(sock_path, err)) < 0)
        goto stop_registry;
    /* A started libmicrohttpd daemon owns its listening socket. */
    if (tcp_fd >= 0) {
        if (!(s.tcp = start_mhd(&s, tcp_fd, s.opt.max_conns_per_ip, 1))) {
            util_fail(err, EIO, "could not start the HTTP server on %s", listen_spec);
            goto stop_registry;
        }
        tcp_fd = -2;
    }
    if (unix_fd >= 0) {
        if (!(s.unix_d = start_mhd(&s, unix_fd, 0, 0))) {
            util_fail(err, EIO, "could not start the HTTP server on %s", sock_path);
            goto stop_http;
        }
        unix_fd = -2;
    }

    if (!opt->quiet) {
        srv_slog(SLOG_INFO, SLOG_F("state", s.state_dir), "state in %s", s.state_dir);
        if (s.tcp)
            srv_slog(SLOG_INFO, SLOG_F("listen", bound), "listening on %s://%s%s", s.tls ? "https" : "http", bound,
                 s.tls && s.opt.tls_client_ca_file ? " (TLS client certificates required)" : "");
        if (s.unix_d)
            srv_slog(SLOG_INFO, SLOG_F("socket", sock_path), "listening on unix:%s", sock_path);
        if (opt->no_token && s.tcp)
            srv_slog(SLOG_WARN, NULL, "WARNING: --no-token on TCP (%s): EVERY LOCAL USER AND PROCESS that can "
                 "connect to it is the admin, which can read any host file through a bind mount", listen_spec);
        else if (opt->no_token)
            srv_slog(SLOG_WARN, NULL, "WARNING: --no-token: every request is the admin of tenant \"default\"; "
                 "for local development only");
        else
            srv_slog(SLOG_INFO, NULL, "%s token in %s (use: Authorization: Bearer $(cat %s))",
                 created ? "created the admin" : "admin", token_path, token_path);
    }

    /* Now that this thread takes boot jobs: the pool's thread queues them. */
    if (srv_pool_start(&s, err) < 0)
        goto stop_http;
    srv_metrics_set_serving(&s, 1);
    /* Ready: the store is open and both listeners answer (cell.service). */
    srv_sdnotify_send("READY=1\nSTATUS=serving on %s%s%s%s%s", s.unix_d ? "unix:" : "", s.unix_d ? sock_path : "",
                  s.unix_d && s.tcp ? " and " : "", s.tcp ? (s.tls ? "https://" : "http://") : "",
                  s.tcp ? bound : "");
    int sig = owner_loop(&s, &sigs);
    srv_sdnotify_send("STOPPING=1\nSTATUS=stopping on signal %d: halting cells", sig);
    /* Jobs queued before this point run here; later ones run on their own
     * thread (srv_on_owner_thread), so no request waits forever. */
    pthread_mutex_lock(&s.owner_lock);
    s.owner_closed = 1;
    pthread_mutex_unlock(&s.owner_lock);
    run_owner_jobs(&s);
    srv_metrics_set_serving(&s, 0);
    if (!opt->quiet)
        srv_slog(SLOG_INFO, NULL, "signal %d, stopping", sig);
    rc = 0;
stop_http:
    atomic_store(&s.stopping, 1);
    srv_runs_shutdown(&s);              /* the drivers hold cells: they end first */
    srv_registry_shutdown(&s);          /* wakes log followers before MHD joins their threads */
    srv_upgrade_stop_sessions();        /* TLS WebSocket sessions' threads hold MHD upgrade handles */
    if (s.tcp)
        MHD_stop_daemon(s.tcp);
    if (s.unix_d)
        MHD_stop_daemon(s.unix_d);
    if (s.unix_d)
        unlink(sock_path);
stop_registry:
    atomic_store(&s.stopping, 1);
    srv_runs_shutdown(&s);
    srv_registry_shutdown(&s);
out:
    srv_pods_stop(&s);                  /* after the listeners: no handler holds a pod */
    if (tcp_fd >= 0)
        close(tcp_fd);
    if (unix_fd >= 0)
        close(unix_fd);
    srv_free(&s);
    if (lock_fd >= 0)
        close(lock_fd);             /* last: the state is let go of */
    if (rc < 0)
        srv_sdnotify_send("STATUS=failed: %s\nERRNO=%d", err->message, err->code > 0 ? err->code : EIO);
    return rc;
}
