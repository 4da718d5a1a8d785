/* conns.c: the daemon's open connections.  libmicrohttpd bounds their number
 * (in total and per peer address) and their idle time; this file adds what
 * it lacks: a deadline for the request head (a client dribbling header bytes
 * resets an idle timer forever), a limit on how long a stream may wait for a
 * client that stopped reading, and ending every connection and stream of a
 * token when the token is revoked. */
#include "server/server_internal.h"

#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

/* How often the watchdog looks for heads past their deadline and stalled streams. */
#define CONNS_TICK_MS 500

/* How often a body's reader waiting for its source looks for a revocation. */
#define CONNS_REVOKE_POLL_MS 250

enum sconn_state {
    SCONN_HEAD,         /* waiting for a request head (new, or keep-alive) */
    SCONN_REQUEST,      /* head in: body, handler, response */
    SCONN_STREAM,       /* a long-lived answer: SSE, WebSocket, tar download */
    SCONN_CUT,          /* shut down by us; libmicrohttpd is closing it */
};

struct sconn {
    int              fd;
    enum sconn_state state;
    int64_t          since_ms;      /* when the state began; a stream's last progress */
    uint64_t         acked;         /* a stream's bytes the peer acknowledged (TCP) */
    int              outq;          /* ... or its unsent and unacknowledged bytes (unix) */
    char             token_id[16];  /* "" until authenticated */
    struct sconn    *prev, *next;
};

struct conns {
    pthread_mutex_t  lock;          /* everything below */
    pthread_cond_t   wake;
    struct sconn    *head;
    char           (*revoked)[16];  /* token ids revoked while we run */
    size_t           n_revoked, cap_revoked;
    int              stop;
    pthread_t        watchdog;
    int              watchdog_on;
};

/* A connection's fd stays open until after MHD_CONNECTION_NOTIFY_CLOSED,
 * which takes conns.lock to unlink the record: under the lock, shutdown()
 * can only hit the connection's own socket.  The connection's thread then
 * sees the end of its socket and closes it.
 *
 * abort: a revocation.  shutdown() alone sends a FIN behind what is queued,
 * so a slow reader of a download would still receive the send buffer's
 * megabytes (tcp_wmem) after its token was revoked.  connect(AF_UNSPEC)
 * disconnects a TCP socket at once (tcp_disconnect): the kernel drops the
 * queue and sends a RST, so the client gets nothing more and sees a reset,
 * never the rest of a body.  Only when bytes are queued: a quiet stream
 * (an SSE follow waiting for its next event) has nothing more to deliver,
 * and its client sees the plain end of the connection, a stream without
 * its last chunk, as before.  (A chunk MHD queues between the look and the
 * shutdown still goes out: at most one.)  A unix socket refuses the
 * disconnect (its bytes are in the peer's queue already); shutdown() ends
 * those. */
static void cut_locked(struct sconn *c, int abort)
{
    if (c->state == SCONN_CUT)
        return;
    c->state = SCONN_CUT;
    int outq = 0;
    if (abort && ioctl(c->fd, SIOCOUTQ, &outq) == 0 && outq > 0) {
        struct sockaddr sa = { .sa_family = AF_UNSPEC };
        if (connect(c->fd, &sa, sizeof sa) < 0) { /* not TCP: the shutdown below ends it */ }
    }
    if (shutdown(c->fd, SHUT_RDWR) < 0) { /* already gone or disconnected: nothing to end */ }
}

/* Streams have no idle timeout (a quiet log follow or terminal is fine), but
 * one whose client stopped reading would hold its thread in a send for
 * ever.  Progress: nothing left to send, or the peer took more bytes (TCP:
 * its acknowledgements; a unix socket: the queue shrank). */
static int stream_progressed(struct sconn *c)
{
    int outq = 0;
    if (ioctl(c->fd, SIOCOUTQ, &outq) < 0 || outq == 0)
        return 1;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    int moved;
    if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
        len >= offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof ti.tcpi_bytes_acked) {
        moved = ti.tcpi_bytes_acked != c->acked;
        c->acked = ti.tcpi_bytes_acked;
    } else {
        moved = outq < c->outq;
    }
    c->outq = outq;
    return moved;
}

static void *watchdog_main(void *arg)
{
    srv *s = arg;
    struct conns *cs = s->conns;
    int64_t limit = (int64_t)s->opt.header_timeout_s * 1000, idle = (int64_t)s->opt.idle_timeout_s * 1000;
    pthread_mutex_lock(&cs->lock);
    while (!cs->stop) {
        int64_t now = srv_now_ms();
        for (struct sconn *c = cs->head; c; c = c->next) {
            if (c->state == SCONN_HEAD && now - c->since_ms >= limit)
                cut_locked(c, 0);
            else if (c->state == SCONN_STREAM && stream_progressed(c))
                c->since_ms = now;
            else if (c->state == SCONN_STREAM && now - c->since_ms >= idle)
                cut_locked(c, 0);
        }
        struct timespec ts;
        srv_deadline_after(&ts, CONNS_TICK_MS);
        pthread_cond_timedwait(&cs->wake, &cs->lock, &ts);
    }
    pthread_mutex_unlock(&cs->lock);
    return NULL;
}

int srv_conns_start(srv *s, cell_error *err)
{
    struct conns *cs = calloc(1, sizeof *cs);
    if (!cs)
        return util_fail(err, ENOMEM, "out of memory");
    pthread_mutex_init(&cs->lock, NULL);
    pthread_cond_init(&cs->wake, NULL);
    s->conns = cs;
    int pe = pthread_create(&cs->watchdog, NULL, watchdog_main, s);
    if (pe != 0) {
        errno = pe;
        return util_fail_errno(err, "connection watchdog thread");
    }
    cs->watchdog_on = 1;
    return 0;
}

/* After the HTTP daemons stopped: no connection is left. */
void srv_conns_stop(srv *s)
{
    struct conns *cs = s->conns;
    if (!cs)
        return;
    pthread_mutex_lock(&cs->lock);
    cs->stop = 1;
    pthread_cond_broadcast(&cs->wake);
    pthread_mutex_unlock(&cs->lock);
    if (cs->watchdog_on)
        pthread_join(cs->watchdog, NULL);
    while (cs->head) {              /* only if a daemon failed to stop */
        struct sconn *c = cs->head;
        cs->head = c->next;
        free(c);
    }
    free(cs->revoked);
    pthread_cond_destroy(&cs->wake);
    pthread_mutex_destroy(&cs->lock);
    free(cs);
    s->conns = NULL;
}

void srv_conns_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                  enum MHD_ConnectionNotificationCode code)
{
    struct conns *cs = ((srv *)cls)->conns;
    struct sconn *c = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        /* Without a record the connection only lacks the head deadline. */
        if (!ci || !(c = calloc(1, sizeof *c)))
            return;
        c->fd = ci->connect_fd;
        c->state = SCONN_HEAD;
        c->since_ms = srv_now_ms();
        pthread_mutex_lock(&cs->lock);
        c->next = cs->head;
        if (cs->head)
            cs->head->prev = c;
        cs->head = c;
        pthread_mutex_unlock(&cs->lock);
        *socket_context = c;
        return;
    }
    if (!c)
        return;
    pthread_mutex_lock(&cs->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        cs->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&cs->lock);
    *socket_context = NULL;
    free(c);
}

static struct sconn *record_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void set_state(sreq *r, enum sconn_state st)
{
    struct conns *cs = r->s->conns;
    if (!r->sconn)
        return;
    pthread_mutex_lock(&cs->lock);
    if (r->sconn->state != SCONN_CUT) {
        r->sconn->state = st;
        r->sconn->since_ms = srv_now_ms();
    }
    pthread_mutex_unlock(&cs->lock);
}

void srv_conns_request_begins(sreq *r)
{
    r->sconn = record_of(r->conn);
    set_state(r, SCONN_REQUEST);
}

void srv_conns_request_ends(sreq *r)
{
    set_state(r, SCONN_HEAD);
}

void srv_conns_long_lived(sreq *r)
{
    r->long_lived = 1;
    set_state(r, SCONN_STREAM);
}

static int revoked_locked(struct conns *cs, const char *token_id)
{
    for (size_t i = 0; i < cs->n_revoked; i++)
        if (strcmp(cs->revoked[i], token_id) == 0)
            return 1;
    return 0;
}

void srv_conns_authenticated(sreq *r)
{
    struct conns *cs = r->s->conns;
    if (!r->sconn)
        return;
    pthread_mutex_lock(&cs->lock);
    snprintf(r->sconn->token_id, sizeof r->sconn->token_id, "%s", r->tok.id);
    /* Revoked between the store's check and now: the revoker missed us. */
    if (revoked_locked(cs, r->tok.id))
        cut_locked(r->sconn, 1);
    pthread_mutex_unlock(&cs->lock);
}

int srv_conns_stream_over(srv *s, const char *token_id)
{
    if (atomic_load(&s->stopping))
        return 1;
    struct conns *cs = s->conns;
    if (!cs || !token_id || !*token_id)
        return 0;
    pthread_mutex_lock(&cs->lock);
    int over = revoked_locked(cs, token_id);
    pthread_mutex_unlock(&cs->lock);
    return over;
}

int srv_conns_wait_readable(srv *s, const char *token_id, int fd)
{
    if (fd < 0)
        return 1;                   /* poll would ignore it for ever: the read names the error */
    for (;;) {
        if (srv_conns_stream_over(s, token_id))
            return 0;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int rc = poll(&p, 1, CONNS_REVOKE_POLL_MS);
        if (rc > 0)
            return 1;               /* data, end of file or an error: the read says which */
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

/* Streams wait on their cell's pcond (log followers, terminals): wake them
 * all to look at the revocation. */
static void wake_cells(srv *s)
{
    pthread_mutex_lock(&s->lock);
    for (scell *sc = s->cells; sc; sc = sc->next) {
        pthread_mutex_lock(&sc->plock);
        pthread_cond_broadcast(&sc->pcond);
        pthread_mutex_unlock(&sc->plock);
    }
    pthread_mutex_unlock(&s->lock);
}

void srv_conns_revoke_token(sreq *r, const char *token_id)
{
    srv *s = r->s;
    struct conns *cs = s->conns;
    if (!cs)
        return;
    pthread_mutex_lock(&cs->lock);
    if (!revoked_locked(cs, token_id)) {
        if (cs->n_revoked == cs->cap_revoked) {
            size_t cap = cs->cap_revoked ? 2 * cs->cap_revoked : 16;
            char (*nr)[16] = realloc(cs->revoked, cap * sizeof *nr);
            if (nr) {
                cs->revoked = nr;
                cs->cap_revoked = cap;
            }
        }
        /* Out of memory: the sockets below are still cut. */
        if (cs->n_revoked < cs->cap_revoked)
            snprintf(cs->revoked[cs->n_revoked++], sizeof cs->revoked[0], "%s", token_id);
    }
    /* The revoking request itself is spared its answer's connection. */
    for (struct sconn *c = cs->head; c; c = c->next)
        if (c != r->sconn && strcmp(c->token_id, token_id) == 0)
            cut_locked(c, 1);
    pthread_mutex_unlock(&cs->lock);
    wake_cells(s);
}
