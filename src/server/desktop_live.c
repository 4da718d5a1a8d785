/* desktop_live.c: the live view of a cell's desktop without WebRTC:
 * GET /cells/{cell}/v1/desktop/live upgraded to a WebSocket that carries
 * JPEG frames to the client and input (pointer, keyboard) and settings
 * (fps, quality, scale) from it.
 *
 * Why it looks like this: the frame source is `ffmpeg -f x11grab ... -f
 * mjpeg` run INSIDE the cell as a hidden process of the cell (procs.c), as
 * every desktop tool is: it counts against the cell's limits, dies with the
 * cell, and dies with the X server (x11grab fails once Xvfb is gone), and
 * the daemon never connects to X.  Its stdout is split into JPEG frames by
 * walking the JPEG markers (jpegsplit.c, a size bound per frame), and each
 * frame is one binary WebSocket message.
 *
 * A refused input or setting (bad JSON, an unknown type, a field of the
 * wrong type, coordinates off the screen, a key xdotool refuses) is
 * answered with an error message on the socket, and the session goes on:
 * one bad click must not cost a viewer its view.  Only protocol
 * violations close it: bad framing, a message over DL_MESSAGE_MAX, binary
 * where text is expected, and a client that sends faster than it reads
 * answers (more than DL_TEXT_QUEUE waiting).
 *
 * Each viewer has its own source (its own fps, quality and scale; at most
 * DL_VIEWERS_MAX viewers per cell), and the whole session runs on the
 * connection's own thread: one poll loop over the socket (non-blocking)
 * and the source's pipes.  Backpressure is "latest wins": at most one frame
 * is being written and one waits; a newer frame replaces the waiting one,
 * so a client that does not read costs at most three frames of memory
 * (the one being parsed, sent and waiting), never a queue. */
#include "server/desktop.h"
#include "server/handlers.h"
#include "server/jpegsplit.h"
#include "server/slog.h"
#include "server/upgrade.h"
#include "server/ws.h"

#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define DL_FPS_DEFAULT     10
#define DL_FPS_MAX         30
#define DL_QUALITY_DEFAULT 70               /* 1..100, as the screenshot's quality */
#define DL_SCALE_MIN       0.1
#define DL_FRAME_MAX       (8u << 20)       /* one JPEG; an 8K frame at quality 100 may not fit: lower it */
#define DL_VIEWERS_MAX     4                /* per cell: each viewer's ffmpeg costs the cell CPU */
#define DL_MESSAGE_MAX     (128u << 10)     /* a client message: keyboard/type text is 64 KiB at most */
#define DL_TEXT_QUEUE      8                /* our text/control messages waiting; more and the client is not reading */
#define DL_POLL_MS         250              /* how often an idle session looks at revocation and stopping */
#define DL_CLOSE_WAIT_MS   2000             /* after our close frame is queued, until we hang up */
#define DL_STOP_MS         2000             /* the source: SIGKILL to reaped */

typedef struct dl_settings {
    long   fps, quality;
    double scale;
} dl_settings;

/* One framed message being written or waiting. */
typedef struct dl_msg {
    uint8_t *data;
    size_t   len, off;
} dl_msg;

typedef struct dl_session {
    scell      *sc;                         /* registry reference */
    int         fd;                         /* the upgraded socket (libmicrohttpd's) */
    char        token_id[16];               /* whose session: it ends when that token is revoked */
    dl_settings set;
    int         display, width, height;     /* the desktop's */
    int         fw, fh;                     /* the frames' (scaled) */
    sproc      *src;                        /* the frame source, NULL when none runs */
    int         src_fds[3];
    srv_jpegsplit split;                    /* source stdout not yet cut into frames */
    char        src_err[256];               /* the end of the source's stderr */
    dl_msg      out;                        /* being written */
    dl_msg      latest;                     /* the newest frame waiting (latest wins) */
    dl_msg      texts[DL_TEXT_QUEUE + 1];   /* text and control messages, FIFO; +1: the close */
    unsigned    n_texts;
    int         close_queued, peer_closed, broken;
    int64_t     close_queued_ms;
    uint64_t    sent, dropped;
    ws_parser   wp;
    int         registered;                 /* counted in dl_viewers */
} dl_session;

/* ---- the viewers of each cell --------------------------------------------------- */
static pthread_mutex_t dl_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dl_viewer { const scell *sc; unsigned n; struct dl_viewer *next; } *dl_viewers;

/* Count one more viewer of sc; 0 when there are DL_VIEWERS_MAX already. */
static int dl_viewer_add(const scell *sc)
{
    pthread_mutex_lock(&dl_lock);
    struct dl_viewer *v = dl_viewers;
    while (v && v->sc != sc)
        v = v->next;
    int ok = 0;
    if (!v && (v = calloc(1, sizeof *v))) {
        v->sc = sc;
        v->next = dl_viewers;
        dl_viewers = v;
    }
    if (v && v->n < DL_VIEWERS_MAX) {
        v->n++;
        ok = 1;
    }
    pthread_mutex_unlock(&dl_lock);
    return ok;
}

static void dl_viewer_drop(const scell *sc)
{
    pthread_mutex_lock(&dl_lock);
    for (struct dl_viewer **pp = &dl_viewers; *pp; pp = &(*pp)->next)
        if ((*pp)->sc == sc) {
            struct dl_viewer *v = *pp;
            if (--v->n == 0) {
                *pp = v->next;
                free(v);
            }
            break;
        }
    pthread_mutex_unlock(&dl_lock);
}

/* ---- settings --------------------------------------------------------------------- */
/* Check settings; NULL, or what is wrong and how to fix it (*field: which). */
static const char *dl_settings_check(const dl_settings *s, const char **field)
{
    if (s->fps < 1 || s->fps > DL_FPS_MAX)
        return *field = "fps", "fps must be an integer from 1 to 30";
    if (s->quality < 1 || s->quality > 100)
        return *field = "quality", "quality must be an integer from 1 (smallest) to 100 (best)";
    if (!isfinite(s->scale) || s->scale < DL_SCALE_MIN || s->scale > 1.0)
        return *field = "scale", "scale must be a number from 0.1 to 1 (the frame's size over the desktop's)";
    return NULL;
}

/* The frame size for a scale: even (the JPEG's chroma subsampling), at least 2. */
static void dl_frame_size(dl_session *s)
{
    s->fw = (int)(s->width * s->set.scale + 0.5) & ~1;
    s->fh = (int)(s->height * s->set.scale + 0.5) & ~1;
    if (s->fw < 2)
        s->fw = 2;
    if (s->fh < 2)
        s->fh = 2;
}

/* ---- the frame source ----------------------------------------------------------- */
static void dl_source_stop(dl_session *s)
{
    if (!s->src)
        return;
    int st;
    /* Its output is worth nothing now: no grace. */
    srv_procs_signal(s->src, SIGKILL);
    if (!srv_procs_wait_exit(s->src, srv_now_ms() + DL_STOP_MS, &st))
        srv_slog(SLOG_WARN, SLOG_F("cell", s->sc->id), "desktop live: the frame source did not end after SIGKILL");
    for (int i = 0; i < 3; i++)
        if (s->src_fds[i] >= 0) {
            close(s->src_fds[i]);
            s->src_fds[i] = -1;
        }
    srv_procs_release(s->src);
    s->src = NULL;
    srv_jpegsplit_reset(&s->split);
}

/* Start ffmpeg in the cell for the current settings; -1 with why. */
static int dl_source_start(dl_session *s, char *why, size_t size)
{
    char rate[24], grab[32], input[16], vf[64], q[24];
    snprintf(rate, sizeof rate, "%ld", s->set.fps);
    snprintf(grab, sizeof grab, "%dx%d", s->width, s->height);
    snprintf(input, sizeof input, ":%d", s->display);
    snprintf(vf, sizeof vf, "scale=%d:%d", s->fw, s->fh);
    /* mjpeg's -q:v runs 2 (best) .. 31 (smallest). */
    snprintf(q, sizeof q, "%ld", 2 + (100 - s->set.quality) * 29 / 99);
    /* -flush_packets 1: each frame leaves ffmpeg when encoded, not when
     * its output buffer fills. */
    const char *argv[] = { "ffmpeg", "-nostdin", "-nostats", "-loglevel", "error", "-f", "x11grab", "-draw_mouse",
                           "1", "-framerate", rate, "-video_size", grab, "-i", input, "-vf", vf, "-pix_fmt",
                           "yuvj420p", "-f", "mjpeg", "-q:v", q, "-flush_packets", "1", "pipe:1", NULL };
    cell_error e = { 0 };
    s->src = srv_procs_spawn_piped_at(s->sc, argv, "/", s->src_fds, &e);
    if (!s->src) {
        snprintf(why, size, "cannot start the frame source (ffmpeg) in the cell: %.160s", e.message);
        return -1;
    }
    close(s->src_fds[0]);                   /* -nostdin */
    s->src_fds[0] = -1;
    for (int i = 1; i < 3; i++) {
        int fl = fcntl(s->src_fds[i], F_GETFL);
        if (fl < 0 || fcntl(s->src_fds[i], F_SETFL, fl | O_NONBLOCK) < 0) {
            snprintf(why, size, "fcntl on the frame source's pipe: %s", strerror(errno));
            dl_source_stop(s);
            return -1;
        }
    }
    s->src_err[0] = '\0';
    srv_jpegsplit_reset(&s->split);
    return 0;
}

/* ---- sending ---------------------------------------------------------------------- */
static void dl_msg_free(dl_msg *m)
{
    free(m->data);
    *m = (dl_msg){ 0 };
}

/* A framed copy of a message (header + payload). */
static int dl_msg_make(dl_msg *m, int opcode, const void *data, size_t len)
{
    uint8_t hdr[14];
    size_t hlen = srv_ws_frame_header(hdr, opcode, len, 1);
    if (!(m->data = malloc(hlen + len)))
        return -1;
    memcpy(m->data, hdr, hlen);
    if (len)
        memcpy(m->data + hlen, data, len);
    m->len = hlen + len;
    m->off = 0;
    return 0;
}

static int dl_pump(dl_session *s);

/* Queue a text or control message; after our close nothing more goes.
 * -1 when the queue is full and the socket takes none of it now: the
 * client sends and does not read (a burst of messages in one read is not
 * that: what the socket takes leaves the queue first). */
static int dl_queue(dl_session *s, int opcode, const void *data, size_t len)
{
    if (s->close_queued)
        return 0;
    unsigned room = opcode == WS_OP_CLOSE ? DL_TEXT_QUEUE + 1 : DL_TEXT_QUEUE;
    if (s->n_texts >= room && dl_pump(s) < 0)
        s->broken = 1;
    if (s->n_texts >= room)
        return -1;
    if (dl_msg_make(&s->texts[s->n_texts], opcode, data, len) < 0)
        return -1;
    s->n_texts++;
    return 0;
}

static int dl_queue_json(dl_session *s, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return -1;
    int rc = dl_queue(s, WS_OP_TEXT, text, strlen(text));
    free(text);
    return rc;
}

/* Our close frame (code and a reason naming the field and the fix); the
 * source stops first, so a client that sees the close knows it is gone. */
static void dl_close(dl_session *s, uint16_t code, const char *reason)
{
    if (s->close_queued)
        return;
    dl_source_stop(s);
    dl_msg_free(&s->latest);
    /* Its place among the viewers is free before the client hears of the end. */
    if (s->registered)
        dl_viewer_drop(s->sc);
    s->registered = 0;
    uint8_t body[WS_MAX_CONTROL];
    size_t n = 0;
    if (code) {
        body[0] = (uint8_t)(code >> 8);
        body[1] = (uint8_t)code;
        size_t rlen = reason ? strlen(reason) : 0;
        if (rlen > WS_MAX_CONTROL - 2)
            rlen = WS_MAX_CONTROL - 2;      /* our reasons are ASCII: any cut is valid UTF-8 */
        if (rlen)
            memcpy(body + 2, reason, rlen);
        n = 2 + rlen;
    }
    if (dl_queue(s, WS_OP_CLOSE, body, n) < 0)
        s->broken = 1;
    s->close_queued = 1;
    s->close_queued_ms = srv_now_ms();
}

/* Write what the socket takes now: the message in progress, then text and
 * control messages, then the newest frame.  -1 when the client is gone. */
static int dl_pump(dl_session *s)
{
    for (;;) {
        if (!s->out.data) {
            if (s->n_texts) {
                s->out = s->texts[0];
                memmove(s->texts, s->texts + 1, --s->n_texts * sizeof s->texts[0]);
                s->texts[s->n_texts] = (dl_msg){ 0 };
            } else if (s->latest.data && !s->close_queued) {
                s->out = s->latest;
                s->latest = (dl_msg){ 0 };
                s->sent++;
            } else {
                return 0;
            }
        }
        ssize_t n = send(s->fd, s->out.data + s->out.off, s->out.len - s->out.off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0)
            return -1;
        s->out.off += (size_t)n;
        if (s->out.off == s->out.len)
            dl_msg_free(&s->out);
    }
}

/* ---- client messages -------------------------------------------------------------- */
/* Input message types and the desktop route each is applied as. */
static const struct { const char *type, *tail; } dl_inputs[] = {
    { "move", "/mouse/move" },       { "click", "/mouse/click" },    { "down", "/mouse/down" },
    { "up", "/mouse/up" },           { "drag", "/mouse/drag" },      { "scroll", "/mouse/scroll" },
    { "type", "/keyboard/type" },    { "key", "/keyboard/press" },   { "keydown", "/keyboard/down" },
    { "keyup", "/keyboard/up" },
};

static int dl_ready_json(dl_session *s, const char *type)
{
    return dl_queue_json(s, json_pack("{s:s, s:i, s:i, s:i, s:i, s:I, s:I, s:f}", "type", type, "width", s->width,
                                      "height", s->height, "frameWidth", s->fw, "frameHeight", s->fh, "fps",
                                      (json_int_t)s->set.fps, "quality", (json_int_t)s->set.quality, "scale",
                                      s->set.scale));
}

/* A refused message: {"type":"error", "status", "message", "field"?, "id"?}
 * on the socket, and the session goes on.  status is the HTTP status the
 * same input gets from the desktop's route (400 for what this file checks);
 * field names the message's field at fault when one is; id echoes the
 * client's.  Answers that cannot wait (DL_TEXT_QUEUE) close with 1008. */
static void dl_error(dl_session *s, json_t *id, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void dl_error(dl_session *s, json_t *id, int status, const char *field, const char *fmt, ...)
{
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* The words may quote the client's bytes cut at a byte count (an
     * unknown type's %.24s, jansson's "near '...'"), which can end inside a
     * UTF-8 character: jansson refuses such a string, and the answer would
     * be lost and the view closed as if the client did not read.  Invalid
     * UTF-8 becomes U+FFFD instead. */
    json_t *text = srv_procs_lossy_string((const unsigned char *)msg, strlen(msg));
    json_t *o = text ? json_pack("{s:s, s:i, s:o}", "type", "error", "status", status, "message", text) : NULL;
    if (o && field)
        json_object_set_new(o, "field", json_string(field));
    if (o && id)
        json_object_set(o, "id", id);
    if (dl_queue_json(s, o) < 0)
        dl_close(s, 1008, "more than 8 answers wait: read the socket");
}

/* {"type":"settings", "fps"?, "quality"?, "scale"?}: restart the source. */
static void dl_on_settings(dl_session *s, json_t *o, json_t *id)
{
    dl_settings n = s->set;
    static const char *const keys[] = { "fps", "quality", "scale" };
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(o, keys[i]);
        if (v && !(i < 2 ? json_is_integer(v) : json_is_number(v))) {
            dl_error(s, id, 400, keys[i], "settings: %s must be %s", keys[i],
                     i == 0 ? "an integer from 1 to 30" : i == 1 ? "an integer from 1 to 100" : "a number from 0.1 to 1");
            return;
        }
    }
    json_t *fps = json_object_get(o, "fps"), *q = json_object_get(o, "quality"), *sc = json_object_get(o, "scale");
    if (fps)
        n.fps = json_integer_value(fps) > DL_FPS_MAX ? DL_FPS_MAX + 1 : (long)json_integer_value(fps);
    if (q)
        n.quality = json_integer_value(q) > 100 ? 101 : (long)json_integer_value(q);
    if (sc)
        n.scale = json_number_value(sc);
    const char *field = NULL, *bad = dl_settings_check(&n, &field);
    if (bad) {
        dl_error(s, id, 400, field, "settings: %s", bad);
        return;
    }
    dl_source_stop(s);
    dl_msg_free(&s->latest);                /* a frame of the old settings */
    s->set = n;
    dl_frame_size(s);
    char why[256];
    if (dl_source_start(s, why, sizeof why) < 0) {
        dl_close(s, WS_CLOSE_INTERNAL, why);
        return;
    }
    if (dl_ready_json(s, "settings") < 0)
        dl_close(s, 1008, "more than 8 answers wait: read the socket");
}

static void dl_on_text(dl_session *s, const uint8_t *payload, size_t len)
{
    json_error_t je;
    json_t *o = json_loadb((const char *)payload, len, 0, &je);
    if (!o) {
        dl_error(s, NULL, 400, NULL, "not JSON (%.160s at column %d): send a JSON object with a string \"type\"",
                 je.text, je.column);
        return;
    }
    /* "id" is the client's: echoed with the answer (a latency probe waits for it). */
    json_t *id = json_is_object(o) ? json_incref(json_object_get(o, "id")) : NULL;
    const char *type = json_string_value(json_object_get(o, "type"));
    size_t i = 0;
    while (type && i < sizeof dl_inputs / sizeof dl_inputs[0] && strcmp(dl_inputs[i].type, type) != 0)
        i++;
    if (!json_is_object(o)) {
        dl_error(s, NULL, 400, NULL, "a message must be a JSON object with a string \"type\", not a %s",
                 json_is_array(o) ? "list" : "scalar");
    } else if (!type) {
        dl_error(s, id, 400, "type", "field \"type\" is missing or not a string: one of settings, move, click, "
                 "down, up, drag, scroll, type, key, keydown, keyup");
    } else if (strcmp(type, "settings") == 0) {
        dl_on_settings(s, o, id);
    } else if (i == sizeof dl_inputs / sizeof dl_inputs[0]) {
        dl_error(s, id, 400, "type", "unknown \"type\" \"%.24s\": one of settings, move, click, down, up, drag, "
                 "scroll, type, key, keydown, keyup", type);
    } else {
        /* The rest is the route's body. */
        char name[32], msg[512];
        snprintf(name, sizeof name, "%s", type);
        json_object_del(o, "id");
        json_object_del(o, "type");
        int status = srv_desktop_input(s->sc, dl_inputs[i].tail, o, msg, sizeof msg);
        /* A refused input is answered with the route's words, which name
         * the field and the fix; the view goes on.  A desktop that
         * stopped ends the frame source, and that closes the session. */
        if (status)
            dl_error(s, id, status, NULL, "%s: %s", name, msg);
        else if (id && dl_queue_json(s, json_pack("{s:s, s:O}", "type", "done", "id", id)) < 0)
            dl_close(s, 1008, "more than 8 answers wait: read the socket");
    }
    json_decref(id);
    json_decref(o);
}

static int dl_on_message(void *user, int opcode, const uint8_t *payload, size_t len)
{
    dl_session *s = user;
    switch (opcode) {
    case WS_OP_TEXT:
        if (!s->close_queued)
            dl_on_text(s, payload, len);
        break;
    case WS_OP_BINARY:
        dl_close(s, 1003, "binary messages are not accepted: send input and settings as JSON text");
        break;
    case WS_OP_PING:
        if (dl_queue(s, WS_OP_PONG, payload, len) < 0)
            s->broken = 1;
        break;
    case WS_OP_CLOSE:
        s->peer_closed = 1;
        dl_close(s, s->wp.peer_close_code == WS_CLOSE_NO_STATUS ? 0 : (uint16_t)s->wp.peer_close_code, NULL);
        return 1;
    default:
        break;
    }
    return 0;
}

/* ---- the source's output -------------------------------------------------------- */
/* Read what the source has; cut complete frames; the newest waits.
 * 0 go on, -1 the source ended (EOF), -2 a bad or oversized frame. */
static int dl_on_source(dl_session *s)
{
    for (;;) {
        size_t room;
        uint8_t *at = srv_jpegsplit_space(&s->split, &room);
        if (!at)
            return -2;                      /* DL_FRAME_MAX without a whole frame (or no memory) */
        ssize_t n = read(s->src_fds[1], at, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0)
            return -1;
        srv_jpegsplit_wrote(&s->split, (size_t)n);
        const uint8_t *frame;
        size_t len;
        int r;
        while ((r = srv_jpegsplit_next(&s->split, &frame, &len)) > 0) {
            dl_msg m;
            if (dl_msg_make(&m, WS_OP_BINARY, frame, len) < 0)
                return -2;
            if (s->latest.data)
                s->dropped++;               /* latest wins */
            dl_msg_free(&s->latest);
            s->latest = m;
        }
        if (r < 0)
            return -2;
    }
}

/* Keep the end of the source's stderr (why it ended). */
static void dl_on_source_err(dl_session *s)
{
    char buf[512];
    ssize_t n;
    while ((n = read(s->src_fds[2], buf, sizeof buf - 1)) > 0) {
        buf[n] = '\0';
        size_t have = strlen(s->src_err), add = (size_t)n;
        if (have + add >= sizeof s->src_err)
            have = 0;                       /* keep the newest */
        if (add >= sizeof s->src_err)
            add = sizeof s->src_err - 1;
        memcpy(s->src_err + have, buf + n - add, add);
        s->src_err[have + add] = '\0';
    }
    if (n == 0) {
        close(s->src_fds[2]);
        s->src_fds[2] = -1;
    }
}

/* The source ended by itself: the desktop stopped (the X server is gone,
 * or the cell) or ffmpeg failed. */
static void dl_source_ended(dl_session *s, int how)
{
    int display, w, h;
    char reason[640];
    pthread_mutex_lock(&s->sc->s->lock);
    int cell_running = s->sc->state == SCELL_RUNNING;
    pthread_mutex_unlock(&s->sc->s->lock);
    if (how == -2) {
        dl_close(s, WS_CLOSE_TOO_BIG, "a frame was not a JPEG or over 8 MiB: lower quality or scale");
    } else if (!cell_running) {
        dl_close(s, 1001, "the cell stopped");
    } else if (srv_desktop_live_target(s->sc, &display, &w, &h) < 0 || display != s->display || w != s->width ||
               h != s->height) {
        dl_close(s, 1001, "the desktop stopped");
    } else {
        for (char *p = s->src_err; *p; p++)
            if (*p < ' ' || *p > '~')
                *p = ' ';
        snprintf(reason, sizeof reason, "the frame source ended: %.80s", s->src_err[0] ? s->src_err : "no output");
        dl_close(s, WS_CLOSE_INTERNAL, reason);
    }
}

/* ---- the session ------------------------------------------------------------------ */
static void dl_run(dl_session *s, const char *extra, size_t extra_len)
{
    /* Over TLS s->fd is libmicrohttpd's end of a socketpair: the same
     * non-blocking sends and receives work on it. */
    srv_ws_parser_init(&s->wp, DL_MESSAGE_MAX);
    int fl = fcntl(s->fd, F_GETFL);
    if (fl < 0 || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        srv_slog(SLOG_WARN, SLOG_F("cell", s->sc->id), "desktop live: fcntl: %s", strerror(errno));
        srv_ws_parser_free(&s->wp);
        return;
    }
    if (dl_ready_json(s, "ready") < 0)
        s->broken = 1;
    if (extra_len && srv_ws_parser_feed(&s->wp, (const uint8_t *)extra, extra_len, dl_on_message, s) == -1)
        dl_close(s, (uint16_t)s->wp.close_code, "bad WebSocket frame");
    uint8_t buf[16384];
    while (!s->broken) {
        if (dl_pump(s) < 0)
            break;
        if (s->close_queued && !s->out.data && !s->n_texts && s->peer_closed)
            break;                          /* the close handshake is done */
        if (s->close_queued && srv_now_ms() - s->close_queued_ms >= DL_CLOSE_WAIT_MS)
            break;
        if (!s->close_queued && srv_conns_stream_over(s->sc->s, s->token_id)) {
            if (atomic_load(&s->sc->s->stopping))
                dl_close(s, 1001, "the daemon is stopping");
            else
                dl_close(s, 1008, "the token was revoked");
            continue;
        }
        struct pollfd pf[3] = {
            { .fd = s->fd, .events = POLLIN | (s->out.data || s->n_texts || s->latest.data ? POLLOUT : 0) },
            { .fd = s->src ? s->src_fds[1] : -1, .events = POLLIN },
            { .fd = s->src ? s->src_fds[2] : -1, .events = POLLIN },
        };
        int n = poll(pf, 3, DL_POLL_MS);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t got = recv(s->fd, buf, sizeof buf, 0);
            if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK))
                break;                      /* the client went away */
            if (got > 0) {
                int r = srv_ws_parser_feed(&s->wp, buf, (size_t)got, dl_on_message, s);
                if (r == -1)
                    dl_close(s, (uint16_t)s->wp.close_code,
                             s->wp.close_code == WS_CLOSE_TOO_BIG ? "a message over 128 KiB" : "bad WebSocket frame");
            }
        }
        if (s->src && (pf[2].revents & (POLLIN | POLLHUP)))
            dl_on_source_err(s);
        if (s->src && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            int r = dl_on_source(s);
            if (r < 0)
                dl_source_ended(s, r);
        }
    }
    dl_source_stop(s);
    srv_ws_parser_free(&s->wp);
    srv_slog(SLOG_INFO, SLOG_F("cell", s->sc->id),
             "desktop live view ended: %llu frames sent, %llu dropped, %llu source bytes not in a frame",
             (unsigned long long)s->sent, (unsigned long long)s->dropped, (unsigned long long)s->split.skipped);
}

static void dl_session_free(dl_session *s)
{
    if (!s)
        return;
    dl_source_stop(s);
    srv_jpegsplit_free(&s->split);
    dl_msg_free(&s->out);
    dl_msg_free(&s->latest);
    for (unsigned i = 0; i < s->n_texts; i++)
        dl_msg_free(&s->texts[i]);
    if (s->registered)
        dl_viewer_drop(s->sc);
    srv_registry_put(s->sc);
    free(s);
}

/* The sreq owns the session: on_completed runs after the upgrade callback
 * has returned, and also when the upgrade never happened; NULL when a TLS
 * session's thread owns it. */
static void dl_stream_free(sreq *r)
{
    dl_session_free(r->stream);
    r->stream = NULL;
}

static void dl_run_on(void *session, int fd, const char *extra, size_t extra_len)
{
    (void)fd;                               /* the session's s->fd */
    dl_run(session, extra, extra_len);
}

static void dl_free_session(void *session) { dl_session_free(session); }

/* libmicrohttpd hands us the socket on the connection's own thread
 * (thread-per-connection), which MHD_stop_daemon joins: on plain HTTP the
 * session runs here, to its end.  Over TLS it needs a thread of its own
 * (upgrade.h), which then owns the session. */
static void dl_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra_in,
                        size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    dl_session *s = cls;
    s->fd = sock;
    if (srv_upgrade_is_tls(conn)) {
        if (srv_upgrade_start_thread(s, sock, dl_run_on, dl_free_session, extra_in, extra_in_size, urh))
            ((sreq *)con_cls)->stream = NULL;
        else
            MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        return;
    }
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    dl_run(s, extra_in, extra_in_size);
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
}

/* ---- the handshake ------------------------------------------------------------------ */
/* An optional query setting into a settings field (dl_settings_check
 * bounds it); -1 when it is not a whole number. */
static int dl_query_long(sreq *r, const char *key, long *out)
{
    long long n = *out;
    if (srv_req_query_integer(r, key, &n, NULL) < 0 || (long)n != n)
        return -1;
    *out = (long)n;
    return 0;
}

int srv_h_desktop_live(sreq *r)
{
    char accept[29];
    const char *why = srv_terminal_check_handshake(r, accept);
    if (why)
        return srv_reply_problem(r, 400, "invalid_request", "%s", why);
    dl_settings set = { DL_FPS_DEFAULT, DL_QUALITY_DEFAULT, 1.0 };
    const char *scale = srv_req_query(r, "scale");
    char *end = NULL;
    if (dl_query_long(r, "fps", &set.fps) < 0)
        return srv_reply_problem(r, 400, "desktop_invalid_action", "query parameter fps must be an integer from 1 to 30");
    if (dl_query_long(r, "quality", &set.quality) < 0)
        return srv_reply_problem(r, 400, "desktop_invalid_action",
                             "query parameter quality must be an integer from 1 to 100");
    if (scale && (set.scale = strtod(scale, &end), !*scale || *end))
        return srv_reply_problem(r, 400, "desktop_invalid_action", "query parameter scale must be a number from 0.1 to 1");
    const char *field, *bad = dl_settings_check(&set, &field);
    if (bad)
        return srv_reply_problem(r, 400, "desktop_invalid_action", "query parameter %s", bad);

    dl_session *s = calloc(1, sizeof *s);
    if (!s)
        return srv_reply_problem(r, 500, "internal", "out of memory");
    pthread_mutex_lock(&r->s->lock);
    r->cell->refs++;
    pthread_mutex_unlock(&r->s->lock);
    s->sc = r->cell;
    s->fd = -1;
    s->set = set;
    s->src_fds[0] = s->src_fds[1] = s->src_fds[2] = -1;
    srv_jpegsplit_init(&s->split, DL_FRAME_MAX);
    snprintf(s->token_id, sizeof s->token_id, "%s", r->tok.id);
    r->stream = s;
    r->stream_free = dl_stream_free;
    if (srv_desktop_live_target(r->cell, &s->display, &s->width, &s->height) < 0)
        return srv_reply_problem(r, 409, "desktop_runtime_inactive",
                             "Desktop runtime has not been started: POST /v1/desktop/start first");
    if (!(s->registered = dl_viewer_add(r->cell)))
        return srv_reply_problem(r, 409, "conflict",
                             "%d live views of this desktop are open (the most there may be): close one",
                             DL_VIEWERS_MAX);
    srv_req_audit(r, "desktop", json_string("live"));
    dl_frame_size(s);
    /* The source starts before the answer, so a failure is an HTTP error. */
    char swhy[256];
    if (dl_source_start(s, swhy, sizeof swhy) < 0)
        return srv_reply_problem(r, 503, "desktop_runtime_failed", "%s", swhy);
    struct MHD_Response *resp = MHD_create_response_for_upgrade(dl_upgraded, s);
    if (!resp)
        return srv_reply_problem(r, 500, "internal", "out of memory");
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_UPGRADE, "websocket") != MHD_YES ||
        MHD_add_response_header(resp, "Sec-WebSocket-Accept", accept) != MHD_YES ||
        (srv_terminal_has_token(MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Sec-WebSocket-Protocol"),
                            WS_PROTO_DESKTOP) &&
         MHD_add_response_header(resp, "Sec-WebSocket-Protocol", WS_PROTO_DESKTOP) != MHD_YES)) {
        MHD_destroy_response(resp);
        return srv_reply_problem(r, 500, "internal", "out of memory");
    }
    srv_conns_long_lived(r);
    return srv_reply_response(r, 101, resp);
}
