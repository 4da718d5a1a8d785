/* terminal.c: a tty process's terminal over a WebSocket, as sandbox-agent 0.4
 * serves GET /cells/{cell}/v1/processes/{id}/terminal/ws: pty output, input, resize. */
#include "server/handlers.h"
#include "server/upgrade.h"
#include "server/ws.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>

/* The protocol, as the reference server speaks it (tests/sdk/terminal_probe.mjs checks it):
 *   server -> client  text   {"processId":ID,"type":"ready"} first, once
 *                     binary raw pty bytes, only those produced after connecting
 *                     text   {"exitCode":N|null,"type":"exit"}, then a close
 *                            frame with no status code
 *                     text   {"message":M,"type":"error"} for a bad client
 *                            frame; the session goes on
 *   client -> server  text   {"type":"input","data":S,"encoding":"base64"|"utf8"|"text"|null}
 *                            (no encoding: S is the text itself)
 *                     text   {"type":"resize","cols":N,"rows":N}
 *                     text   {"type":"close"}: we send a close frame; the
 *                            process keeps running */

/* Input frames carry at most maxInputBytesPerRequest bytes, base64 at most
 * a third bigger; this only bounds what a client can make us buffer. */
#define TERM_MAX_MESSAGE     (16u << 20)
/* How often an idle session looks at srv.stopping (pcond and the socket
 * wake it for everything else). */
#define TERM_POLL_MS         250
/* After our close frame, how long we wait for the client's before hanging up. */
#define TERM_CLOSE_WAIT_MS   2000
/* After the process exits, how long its pty may stay open (a background
 * child holding it) before we send the exit frame anyway. */
#define TERM_DRAIN_GRACE_MS  2000

enum { TERM_GO_ON = 0, TERM_DONE = 1 };

typedef struct term {
    scell           *sc;            /* registry reference */
    sproc           *p;             /* srv_procs_find reference */
    int              fd;
    pthread_mutex_t  wlock;         /* one frame at a time: two threads write */
    int              broken;        /* wlock: a send failed, the stream is unusable */
    int              close_sent;    /* wlock: nothing may follow a close frame */
    atomic_llong     close_sent_ms;
    int              ending;        /* plock: the reader is done; the writer stops */
    uint64_t         after;         /* writer: last log sequence forwarded */
    ws_parser        wp;            /* reader only */
    char             token_id[16];  /* whose session: it ends when that token is revoked */
} term;

/* ---- sending ------------------------------------------------------------------- */
static int term_send(term *t, int opcode, const void *data, size_t len)
{
    pthread_mutex_lock(&t->wlock);
    int rc = -1;
    if (!t->broken && !t->close_sent) {
        rc = srv_ws_send(t->fd, opcode, data, len);
        if (rc < 0) {
            /* A half-written frame cannot be taken back; the reader sees
             * the shutdown and ends the session. */
            t->broken = 1;
            shutdown(t->fd, SHUT_RDWR);
        }
    }
    pthread_mutex_unlock(&t->wlock);
    return rc;
}

/* Send our close frame once; code 0 sends none, as the reference does.
 * With `try`, give up if the writer is in the middle of a frame (it may be
 * stuck on a client that stopped reading). */
static void term_close_maybe(term *t, uint16_t code, const char *reason, int try)
{
    if (try) {
        if (pthread_mutex_trylock(&t->wlock) != 0)
            return;
    } else {
        pthread_mutex_lock(&t->wlock);
    }
    if (!t->broken && !t->close_sent) {
        if (srv_ws_send_close(t->fd, code, reason) < 0) {
            t->broken = 1;
            shutdown(t->fd, SHUT_RDWR);
        }
        t->close_sent = 1;
        atomic_store(&t->close_sent_ms, srv_now_ms());
    }
    pthread_mutex_unlock(&t->wlock);
}

static void term_close(term *t, uint16_t code, const char *reason) { term_close_maybe(t, code, reason, 0); }

/* Send a JSON text frame (stolen).  Keys go in alphabetical order because
 * the reference's serializer sorts them and clients may compare text. */
static int term_send_json(term *t, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return -1;
    int rc = term_send(t, WS_OP_TEXT, text, strlen(text));
    free(text);
    return rc;
}

static void term_error(term *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void term_error(term *t, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* The words may quote the client's bytes cut at a byte count (an
     * unknown variant's %.64s, jansson's "near '...'"), which can end inside
     * a UTF-8 character: jansson refuses such a string and the client would
     * get no error at all.  Invalid UTF-8 becomes U+FFFD instead. */
    json_t *text = srv_procs_lossy_string((const unsigned char *)msg, strlen(msg));
    term_send_json(t, text ? json_pack("{s:o, s:s}", "message", text, "type", "error") : NULL);
}

/* ---- pty output: the writer thread ------------------------------------------------- */
/* The oldest pty entry newer than `after` (plock held).  Sequences rise
 * through the ring, so a binary search finds the start. */
static const plog *next_entry_locked(const sproc *p, uint64_t after)
{
    size_t lo = 0, hi = p->n_log;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->log[mid]->seq <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < p->n_log; lo++)
        if (p->log[lo]->stream == PLOG_PTY)
            return p->log[lo];
    return NULL;
}

static void *term_writer(void *arg)
{
    term *t = arg;
    scell *sc = t->sc;
    sproc *p = t->p;
    char *buf = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&sc->plock);
    while (!t->ending) {
        const plog *e = next_entry_locked(p, t->after);
        if (e) {
            t->after = e->seq;
            if (e->len > cap) {
                char *nb = realloc(buf, e->len);
                if (!nb) {
                    pthread_mutex_unlock(&sc->plock);
                    term_close(t, WS_CLOSE_INTERNAL, "out of memory");
                    pthread_mutex_lock(&sc->plock);
                    break;
                }
                buf = nb, cap = e->len;
            }
            size_t len = e->len;
            memcpy(buf, e->data, len);
            /* The ring may drop entries while we send: only the copy is used. */
            pthread_mutex_unlock(&sc->plock);
            int rc = term_send(t, WS_OP_BINARY, buf, len);
            pthread_mutex_lock(&sc->plock);
            if (rc < 0)
                break;
            continue;
        }
        if (p->exited && (p->output_done || srv_now_ms() >= p->exited_ms + TERM_DRAIN_GRACE_MS)) {
            json_t *code = WIFEXITED(p->status) ? json_integer(WEXITSTATUS(p->status)) : json_null();
            pthread_mutex_unlock(&sc->plock);
            term_send_json(t, json_pack("{s:o, s:s}", "exitCode", code, "type", "exit"));
            term_close(t, 0, NULL);
            pthread_mutex_lock(&sc->plock);
            break;
        }
        if (atomic_load(&sc->s->stopping))
            break;                      /* the reader closes with 1001 */
        struct timespec ts;
        srv_deadline_after(&ts, TERM_POLL_MS);
        pthread_cond_timedwait(&sc->pcond, &sc->plock, &ts);
    }
    pthread_mutex_unlock(&sc->plock);
    free(buf);
    return NULL;
}

/* ---- client frames ----------------------------------------------------------------- */
/* A JSON value in the words serde uses in its errors ("integer `5`"). */
static void describe(const json_t *v, char *out, size_t size)
{
    switch (json_typeof(v)) {
    case JSON_INTEGER: snprintf(out, size, "integer `%lld`", (long long)json_integer_value(v)); break;
    case JSON_REAL:    snprintf(out, size, "floating point `%g`", json_real_value(v)); break;
    case JSON_STRING:  snprintf(out, size, "string \"%.64s\"", json_string_value(v)); break;
    case JSON_TRUE:    snprintf(out, size, "boolean `true`"); break;
    case JSON_FALSE:   snprintf(out, size, "boolean `false`"); break;
    case JSON_ARRAY:   snprintf(out, size, "sequence"); break;
    case JSON_OBJECT:  snprintf(out, size, "map"); break;
    default:           snprintf(out, size, "null"); break;
    }
}

#define BAD_FRAME "invalid terminal frame: "

/* A u16 field of a resize frame; -1 after sending the error frame. */
static int frame_u16(term *t, json_t *o, const char *key, uint16_t *out)
{
    json_t *v = json_object_get(o, key);
    char what[96];
    if (!v) {
        term_error(t, BAD_FRAME "missing field `%s`", key);
        return -1;
    }
    if (!json_is_integer(v)) {
        describe(v, what, sizeof what);
        term_error(t, BAD_FRAME "invalid type: %s, expected u16", what);
        return -1;
    }
    json_int_t n = json_integer_value(v);
    if (n < 0 || n > 65535) {
        term_error(t, BAD_FRAME "invalid value: integer `%lld`, expected u16", (long long)n);
        return -1;
    }
    *out = (uint16_t)n;
    return 0;
}

static void frame_input(term *t, json_t *o)
{
    json_t *data = json_object_get(o, "data"), *enc = json_object_get(o, "encoding");
    char what[96];
    if (!data) {
        term_error(t, BAD_FRAME "missing field `data`");
        return;
    }
    if (!json_is_string(data) || (enc && !json_is_null(enc) && !json_is_string(enc))) {
        describe(json_is_string(data) ? enc : data, what, sizeof what);
        term_error(t, BAD_FRAME "invalid type: %s, expected a string", what);
        return;
    }
    const char *in = json_string_value(data), *encoding = json_is_string(enc) ? json_string_value(enc) : NULL;
    size_t in_len = json_string_length(data), len = in_len;
    unsigned char *bytes = NULL;
    /* Without an encoding the string is the input itself: the SDK sends
     * typed text that way and only binary data as base64. */
    if (encoding && strcmp(encoding, "base64") == 0) {
        char why[128];
        if (!(bytes = malloc(in_len + 1))) {
            term_error(t, "out of memory");
            return;
        }
        if (srv_procs_base64_decode(in, in_len, bytes, &len, why, sizeof why) < 0) {
            term_error(t, "invalid request: %s", why);
            free(bytes);
            return;
        }
        in = (const char *)bytes;
    } else if (encoding && strcmp(encoding, "utf8") != 0 && strcmp(encoding, "text") != 0) {
        term_error(t, "invalid request: encoding must be one of: base64, utf8, text");
        return;
    }
    pthread_mutex_lock(&t->sc->plock);
    int64_t max = t->sc->pconf.max_input_bytes;
    pthread_mutex_unlock(&t->sc->plock);
    cell_error e = { 0 };
    if ((int64_t)len > max)
        term_error(t, "input payload exceeds maxInputBytesPerRequest (%lld)", (long long)max);
    else if (len && srv_procs_write_input(t->p, in, len, &e) < 0)
        term_error(t, "conflict: %s", e.code == ESRCH ? "process is not running" : e.message);
    free(bytes);
}

static void frame_resize(term *t, json_t *o)
{
    uint16_t cols, rows;
    if (frame_u16(t, o, "cols", &cols) < 0 || frame_u16(t, o, "rows", &rows) < 0)
        return;
    cell_error e = { 0 };
    int rc = srv_procs_resize(t->p, rows, cols, &e);
    if (rc == -2)
        term_error(t, "conflict: %s", e.message);
    else if (rc < 0)
        term_error(t, "%s", e.message);
}

/* One text message from the client.  Bad frames get an error frame and
 * the session goes on, as the reference does. */
static int on_text(term *t, const uint8_t *payload, size_t len)
{
    json_error_t je;
    json_t *o = json_loadb((const char *)payload, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
    char what[96];
    if (!o) {
        term_error(t, BAD_FRAME "%s at line %d column %d", je.text, je.line, je.column);
        return TERM_GO_ON;
    }
    json_t *type = json_is_object(o) ? json_object_get(o, "type") : NULL;
    const char *name = json_string_value(type);
    if (!json_is_object(o)) {
        describe(o, what, sizeof what);
        term_error(t, BAD_FRAME "invalid type: %s, expected internally tagged enum TerminalClientFrame", what);
    } else if (!type) {
        term_error(t, BAD_FRAME "missing field `type`");
    } else if (!name) {
        describe(type, what, sizeof what);
        term_error(t, BAD_FRAME "invalid type: %s, expected variant identifier", what);
    } else if (strcmp(name, "input") == 0) {
        frame_input(t, o);
    } else if (strcmp(name, "resize") == 0) {
        frame_resize(t, o);
    } else if (strcmp(name, "close") == 0) {
        /* The client is leaving; the process stays.  The client's own close
         * frame follows and ends the loop. */
        term_close(t, 0, NULL);
    } else {
        term_error(t, BAD_FRAME "unknown variant `%.64s`, expected one of `input`, `resize`, `close`", name);
    }
    json_decref(o);
    return TERM_GO_ON;
}

static int on_message(void *user, int opcode, const uint8_t *payload, size_t len)
{
    term *t = user;
    pthread_mutex_lock(&t->wlock);
    int closing = t->close_sent;
    pthread_mutex_unlock(&t->wlock);
    switch (opcode) {
    case WS_OP_TEXT:
        /* After our close frame we may send nothing more, so requests are moot. */
        return closing ? TERM_GO_ON : on_text(t, payload, len);
    case WS_OP_BINARY:
        if (!closing)
            term_error(t, "binary input is not supported; use text JSON frames");
        return TERM_GO_ON;
    case WS_OP_PING:
        term_send(t, WS_OP_PONG, payload, len);
        return TERM_GO_ON;
    case WS_OP_CLOSE:
        /* Echo the client's code (RFC 6455 section 5.5.1) unless ours went
         * first; either way the session is over. */
        term_close(t, t->wp.peer_close_code == WS_CLOSE_NO_STATUS ? 0 : (uint16_t)t->wp.peer_close_code, NULL);
        return TERM_DONE;
    default:
        return TERM_GO_ON;
    }
}

/* ---- the session ------------------------------------------------------------------- */
static int feed(term *t, const void *data, size_t len)
{
    int r = srv_ws_parser_feed(&t->wp, data, len, on_message, t);
    if (r == -1) {
        term_close(t, (uint16_t)t->wp.close_code, NULL);
        return TERM_DONE;
    }
    return r == TERM_DONE ? TERM_DONE : TERM_GO_ON;
}

/* Read and answer client frames until the client leaves, a close handshake
 * ends, or the daemon stops.  Runs on the connection's own thread. */
static void term_run(term *t, const char *extra, size_t extra_len)
{
    scell *sc = t->sc;
    srv_ws_parser_init(&t->wp, TERM_MAX_MESSAGE);

    pthread_mutex_lock(&sc->plock);
    t->after = t->p->next_seq;          /* no replay: only output from now on */
    pthread_mutex_unlock(&sc->plock);
    term_send_json(t, json_pack("{s:s, s:s}", "processId", t->p->id, "type", "ready"));

    pthread_t writer;
    if (pthread_create(&writer, NULL, term_writer, t) != 0) {
        term_error(t, "could not start the terminal output thread");
        term_close(t, WS_CLOSE_INTERNAL, NULL);
        srv_ws_parser_free(&t->wp);
        return;
    }

    int done = extra_len ? feed(t, extra, extra_len) : TERM_GO_ON;
    uint8_t buf[16384];
    while (!done) {
        int64_t closed_at = atomic_load(&t->close_sent_ms);
        if (closed_at && srv_now_ms() - closed_at >= TERM_CLOSE_WAIT_MS)
            break;
        if (srv_conns_stream_over(sc->s, t->token_id)) {
            /* 1008: policy violation, the close code for a revoked credential. */
            if (atomic_load(&sc->s->stopping))
                term_close_maybe(t, 1001, "the daemon is stopping", 1);
            else
                term_close_maybe(t, 1008, "the token was revoked", 1);
            break;
        }
        struct pollfd pfd = { .fd = t->fd, .events = POLLIN };
        int n = poll(&pfd, 1, TERM_POLL_MS);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        ssize_t got = recv(t->fd, buf, sizeof buf, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (got <= 0)
            break;                      /* the client went away */
        done = feed(t, buf, (size_t)got);
    }

    /* Whatever ended the session, a writer blocked on a client that does
     * not read must fail now rather than after srv_ws_send's timeout; what was
     * already queued (our close frame) still goes out before the FIN. */
    shutdown(t->fd, SHUT_RDWR);
    pthread_mutex_lock(&sc->plock);
    t->ending = 1;
    pthread_cond_broadcast(&sc->pcond);
    pthread_mutex_unlock(&sc->plock);
    pthread_join(writer, NULL);
    srv_ws_parser_free(&t->wp);
}

static void term_free(term *t)
{
    srv_procs_put(t->p);
    srv_registry_put(t->sc);
    pthread_mutex_destroy(&t->wlock);
    free(t);
}

/* The sreq owns the session state: on_completed runs after the upgrade
 * callback has returned, and also when the upgrade never happened. */
static void term_stream_free(sreq *r)
{
    if (r->stream)                  /* NULL: a TLS session's thread owns it */
        term_free(r->stream);
    r->stream = NULL;
}

/* libmicrohttpd hands us the socket.  In thread-per-connection mode this
 * may block, and on plain HTTP we run the whole session here rather than on
 * a thread of our own: MHD_stop_daemon joins this thread (a session stuck
 * in a send was seen to hold it up), so no session outlives the daemon's
 * handle on the socket.  Over TLS the session needs a thread of its own
 * (upgrade.h says why), which then owns the term: the request completes,
 * and would free it, as soon as this callback returns. */
static void term_run_on(void *session, int fd, const char *extra, size_t extra_len)
{
    (void)fd;
    term_run(session, extra, extra_len);
}

static void term_free_session(void *session) { term_free(session); }

static void term_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra_in,
                          size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    term *t = cls;
    t->fd = sock;
    if (srv_upgrade_is_tls(conn)) {
        if (srv_upgrade_start_thread(t, sock, term_run_on, term_free_session, extra_in, extra_in_size, urh))
            ((sreq *)con_cls)->stream = NULL;   /* the thread's now: on_completed must not free it */
        else
            MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        return;
    }
    /* Keystroke echoes are small; do not let Nagle hold them back. */
    int one = 1, zero = 0;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(sock, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero);
    term_run(t, extra_in, extra_in_size);
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
}

/* ---- the handshake ----------------------------------------------------------------- */
/* Whether a comma-separated header value lists `token` (case-insensitive). */
int srv_terminal_has_token(const char *value, const char *token)
{
    size_t tlen = strlen(token);
    while (value && *value) {
        value += strspn(value, " \t,");
        size_t len = strcspn(value, ",");
        size_t end = len;
        while (end > 0 && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end == tlen && strncasecmp(value, token, tlen) == 0)
            return 1;
        value += len;
    }
    return 0;
}

static const char *header(sreq *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

/* NULL when the request is a WebSocket handshake we accept (accept filled
 * in), else the reason, worded as the reference server words it. */
const char *srv_terminal_check_handshake(sreq *r, char accept[29])
{
    const char *upgrade = header(r, MHD_HTTP_HEADER_UPGRADE), *version = header(r, "Sec-WebSocket-Version");
    const char *key = header(r, "Sec-WebSocket-Key");
    if (!srv_terminal_has_token(header(r, MHD_HTTP_HEADER_CONNECTION), "upgrade"))
        return "Connection header did not include 'upgrade'";
    if (!upgrade || strcasecmp(upgrade, "websocket") != 0)
        return "`Upgrade` header did not include 'websocket'";
    if (!version || strcmp(version, "13") != 0)
        return "`Sec-WebSocket-Version` header did not include '13'";
    if (!key)
        return "`Sec-WebSocket-Key` header missing";
    if (srv_ws_accept_key(key, accept) < 0)
        return "`Sec-WebSocket-Key` header is not 16 bytes of base64";
    return NULL;
}

int srv_h_proc_terminal_ws(sreq *r)
{
    char accept[29];
    const char *why = srv_terminal_check_handshake(r, accept);
    if (why)
        return srv_reply_problem(r, 400, "invalid_request", "%s", why);
    const char *id = srv_router_param(&r->m, "id");
    sproc *p = srv_procs_find(r->cell, id);
    if (!p)
        return srv_reply_no_process(r, id);
    srv_req_audit(r, "process", json_string(id));
    pthread_mutex_lock(&r->cell->plock);
    int tty = p->tty;
    pthread_mutex_unlock(&r->cell->plock);
    if (!tty) {
        srv_procs_put(p);
        return srv_reply_problem(r, 409, "conflict", "process is not running in tty mode");
    }
    term *t = calloc(1, sizeof *t);
    if (!t) {
        srv_procs_put(p);
        return srv_reply_problem(r, 500, "internal", "out of memory");
    }
    /* The session keeps its own references: it must not depend on how long
     * libmicrohttpd keeps the request around. */
    pthread_mutex_lock(&r->s->lock);
    r->cell->refs++;
    pthread_mutex_unlock(&r->s->lock);
    t->sc = r->cell;
    t->p = p;
    t->fd = -1;
    snprintf(t->token_id, sizeof t->token_id, "%s", r->tok.id);
    pthread_mutex_init(&t->wlock, NULL);
    r->stream = t;
    r->stream_free = term_stream_free;
    struct MHD_Response *resp = MHD_create_response_for_upgrade(term_upgraded, t);
    if (!resp)
        return srv_reply_problem(r, 500, "internal", "out of memory");
    /* libmicrohttpd adds "Connection: Upgrade" itself. */
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_UPGRADE, "websocket") != MHD_YES ||
        MHD_add_response_header(resp, "Sec-WebSocket-Accept", accept) != MHD_YES) {
        MHD_destroy_response(resp);
        return srv_reply_problem(r, 500, "internal", "out of memory");
    }
    /* A client that offered protocols needs one chosen, or it drops the
     * connection: the browser's token offer (http.c) comes with this one. */
    if (srv_terminal_has_token(header(r, "Sec-WebSocket-Protocol"), WS_PROTO_TERMINAL) &&
        MHD_add_response_header(resp, "Sec-WebSocket-Protocol", WS_PROTO_TERMINAL) != MHD_YES) {
        MHD_destroy_response(resp);
        return srv_reply_problem(r, 500, "internal", "out of memory");
    }
    srv_conns_long_lived(r);
    return srv_reply_response(r, 101, resp);
}
