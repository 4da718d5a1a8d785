/* http1.c: the CLI's HTTP/1.1 client (see http1.h).  Requests are written
 * here; answers are parsed by http_parser, never by hand. */
#include "cli/http1.h"

#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* How long a streamed body waits for "100 Continue" before it is sent anyway
 * (curl's default): a daemon that refuses the request at its headers answers
 * at once, without reading a body it will not use. */
#define CONTINUE_WAIT_MS 1000
/* How often a request with a stop flag looks at it. */
#define STOP_POLL_MS 250
#define BODY_PIECE 65536

void cli_http1_buf_add(http1_buf *b, const void *p, size_t n)
{
    if (b->oom || n > HTTP1_MAX_REPLY - b->len) {
        b->oom = 1;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > HTTP1_MAX_REPLY + 1)
            cap = HTTP1_MAX_REPLY + 1;
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

/* ---- connecting ------------------------------------------------------------------ */
static int connect_unix(const char *sock, char *why, size_t why_len)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(sock) >= sizeof sa.sun_path) {
        snprintf(why, why_len, "%s", strerror(ENAMETOOLONG));
        return -1;
    }
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
        return fd;
    snprintf(why, why_len, "%s", strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

/* A blocking connect, as curl's was in effect: the kernel gives up on an
 * unanswered SYN after about two minutes, below curl's 300 s default. */
static int connect_tcp(const char *host, const char *port, char *why, size_t why_len)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        snprintf(why, why_len, "%s", gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
        return -1;
    }
    int fd = -1, err = ENOENT;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        } else if (fd < 0) {
            err = errno;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(why, why_len, "%s", strerror(err));
    return fd;
}

int cli_http1_connect(const char *sock, const char *host, const char *port, char *why, size_t why_len)
{
    return sock ? connect_unix(sock, why, why_len) : connect_tcp(host, port, why, why_len);
}

/* ---- the answer ---------------------------------------------------------------------- */
typedef struct exch {
    http_parser p;
    http1_resp *rs;
    int         interim;        /* the message being parsed is a 1xx */
    int         continued;      /* a "100 Continue" came */
    int         done;           /* the final answer is complete */
    int         cb_err;         /* why a callback stopped the parser */
    int         send_errno;     /* sending failed; an answer may still have come */
    int         unsent;         /* the answer came before all of the request was sent */
} exch;

static int on_headers_complete(http_parser *p)
{
    exch *x = p->data;
    /* 1xx answers have no body; http_parser parses the next message after them. */
    x->interim = p->status_code >= 100 && p->status_code < 200 && p->status_code != 101;
    if (x->interim)
        return 0;
    http1_resp *rs = x->rs;
    rs->status = p->status_code;
    int collected = !rs->on_data || rs->status < 200 || rs->status >= 300;
    /* A body we would collect and that announces more than we hold is refused unread. */
    if (collected && p->content_length != ULLONG_MAX && p->content_length > HTTP1_MAX_REPLY) {
        rs->why = "its body is larger than 256 MiB";
        x->cb_err = HTTP1_HUGE;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    exch *x = p->data;
    http1_resp *rs = x->rs;
    if (rs->on_data && rs->status >= 200 && rs->status < 300) {
        if (rs->on_data(rs->user, at, n) == 0)
            return 0;
        x->cb_err = HTTP1_ABORTED;
        return -1;
    }
    cli_http1_buf_add(&rs->body, at, n);
    if (!rs->body.oom)
        return 0;
    rs->why = "its body is larger than 256 MiB";
    x->cb_err = HTTP1_HUGE;
    return -1;
}

static int on_message_complete(http_parser *p)
{
    exch *x = p->data;
    if (x->interim) {
        x->interim = 0;
        x->continued |= p->status_code == 100;
        return 0;
    }
    x->done = 1;
    x->rs->keep_alive = http_should_keep_alive(p);
    /* Whatever follows belongs to no request of ours. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Parse n received bytes; n == 0 is the end of the connection. */
static int feed(exch *x, const char *data, size_t n)
{
    size_t used = http_parser_execute(&x->p, &parser_settings, data, n);
    if (x->done) {
        if (used < n)
            x->rs->keep_alive = 0;
        return HTTP1_OK;
    }
    if (x->cb_err)
        return x->cb_err;
    if (n == 0)
        return HTTP1_CLOSED;
    enum http_errno e = HTTP_PARSER_ERRNO(&x->p);
    if (e == HPE_OK)
        return HTTP1_OK;
    x->rs->why = e == HPE_HEADER_OVERFLOW ? "its headers are larger than 80 KiB" : http_errno_description(e);
    return e == HPE_HEADER_OVERFLOW ? HTTP1_HUGE : HTTP1_BAD;
}

static int receive(int fd, exch *x)
{
    char data[65536];
    for (;;) {
        ssize_t n = recv(fd, data, sizeof data, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            x->rs->err_no = errno;
            return HTTP1_IO;
        }
        if (n > 0)
            x->rs->started = 1;
        return feed(x, data, (size_t)n);
    }
}

/* poll() for events on fd; with a stop flag in slices that look at it.
 * The revents, 0 after timeout_ms (-1: none), or -HTTP1_STOPPED / -HTTP1_IO. */
static int wait_fd(int fd, short events, int timeout_ms, http1_resp *rs)
{
    for (;;) {
        int slice = rs->stop && (timeout_ms < 0 || timeout_ms > STOP_POLL_MS) ? STOP_POLL_MS : timeout_ms;
        if (rs->stop && atomic_load(rs->stop))
            return -HTTP1_STOPPED;
        struct pollfd pfd = { .fd = fd, .events = events };
        int r = poll(&pfd, 1, slice);
        if (r < 0 && errno != EINTR) {
            rs->err_no = errno;
            return -HTTP1_IO;
        }
        if (r > 0)
            return pfd.revents;
        if (r == 0 && timeout_ms >= 0 && (timeout_ms -= slice) <= 0)
            return 0;
    }
}

static int read_answer(int fd, exch *x)
{
    int err = HTTP1_OK;
    while (!err && !x->done) {
        int ev = wait_fd(fd, POLLIN, -1, x->rs);
        err = ev < 0 ? -ev : receive(fd, x);
    }
    return err;
}

/* ---- the request ----------------------------------------------------------------------- */
/* Send all of data while reading what the daemon answers meanwhile: one that
 * refuses a body answers and stops reading it.  Sending stops when the
 * answer is complete or sending fails (x->send_errno: the daemon may have
 * answered before it closed, read_answer finds out). */
static int send_watching(int fd, exch *x, const char *data, size_t len)
{
    while (len && !x->done && !x->send_errno) {
        int ev = wait_fd(fd, POLLIN | POLLOUT, -1, x->rs);
        if (ev < 0)
            return -ev;
        if (ev & (POLLIN | POLLHUP | POLLERR)) {
            int err = receive(fd, x);
            if (err)
                return err;
            continue;
        }
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            x->send_errno = errno;
        else
            data += n, len -= (size_t)n;
    }
    x->unsent |= len > 0;
    return HTTP1_OK;
}

static int head_of(const http1_req *rq, http1_buf *h)
{
    char line[160];
    int n;
    const char *parts[] = { rq->method, " ", rq->target, " HTTP/1.1\r\nHost: ", rq->host, "\r\n" };
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        cli_http1_buf_add(h, parts[i], strlen(parts[i]));
    if (rq->token) {
        cli_http1_buf_add(h, "Authorization: Bearer ", 22);
        cli_http1_buf_add(h, rq->token, strlen(rq->token));
        cli_http1_buf_add(h, "\r\n", 2);
    }
    if (rq->header) {
        cli_http1_buf_add(h, rq->header, strlen(rq->header));
        cli_http1_buf_add(h, "\r\n", 2);
    }
    if (rq->content_type) {
        n = snprintf(line, sizeof line, "Content-Type: %s\r\n", rq->content_type);
        cli_http1_buf_add(h, line, (size_t)n);
    }
    if (rq->body_fd >= 0 && rq->body_size < 0)
        n = snprintf(line, sizeof line, "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
    else if (rq->body_fd >= 0)
        n = snprintf(line, sizeof line, "Content-Length: %lld\r\nExpect: 100-continue\r\n\r\n", rq->body_size);
    else if (rq->body || strcmp(rq->method, "POST") == 0 || strcmp(rq->method, "PUT") == 0)
        n = snprintf(line, sizeof line, "Content-Length: %zu\r\n\r\n", rq->body_len);
    else
        n = snprintf(line, sizeof line, "\r\n");
    cli_http1_buf_add(h, line, (size_t)n);
    if (rq->body_fd < 0 && rq->body_len)
        cli_http1_buf_add(h, rq->body, rq->body_len);
    return h->oom ? HTTP1_NOMEM : HTTP1_OK;
}

/* Wait a while for "100 Continue" (or an early final answer). */
static int await_continue(int fd, exch *x)
{
    while (!x->continued && !x->done) {
        int ev = wait_fd(fd, POLLIN, CONTINUE_WAIT_MS, x->rs);
        if (ev <= 0)
            return ev < 0 ? -ev : HTTP1_OK;
        int err = receive(fd, x);
        if (err)
            return err;
    }
    return HTTP1_OK;
}

/* One read of the body into frame+16, framed for chunked sending; the
 * framed bytes' start and length.  0 at the end of the body. */
static ssize_t next_piece(const http1_req *rq, long long left, char *frame, char **start, http1_resp *rs)
{
    size_t want = BODY_PIECE;
    if (rq->body_size >= 0 && (unsigned long long)left < want)
        want = (size_t)left;
    ssize_t n;
    do
        n = want ? read(rq->body_fd, frame + 16, want) : 0;
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        rs->err_no = errno;
        return -1;
    }
    if (n == 0 && rq->body_size >= 0 && left > 0) {
        rs->why = "the file got shorter while it was sent";
        return -1;
    }
    *start = frame + 16;
    if (rq->body_size >= 0)
        return n;
    /* Chunked: "SIZE\r\n" before the data, "\r\n" after; size 0 ends it. */
    char size[16];
    int k = snprintf(size, sizeof size, "%zx\r\n", (size_t)n);
    *start -= k;
    memcpy(*start, size, (size_t)k);
    memcpy(frame + 16 + n, "\r\n", 2);
    return n == 0 ? 0 : k + n + 2;
}

static int send_fd_body(int fd, const http1_req *rq, exch *x)
{
    int err = await_continue(fd, x);
    char *frame = malloc(16 + BODY_PIECE + 2), *start;
    int complete = 0;
    if (!frame)
        return HTTP1_NOMEM;
    for (long long left = rq->body_size; !err && !x->done && !x->send_errno && !complete;) {
        ssize_t n = next_piece(rq, left, frame, &start, x->rs);
        if (n < 0) {
            err = HTTP1_BODY_READ;
        } else if (n == 0) {
            /* The end: chunked bodies close with an empty chunk. */
            err = rq->body_size < 0 ? send_watching(fd, x, "0\r\n\r\n", 5) : HTTP1_OK;
            complete = 1;
        } else {
            err = send_watching(fd, x, start, (size_t)n);
            left -= rq->body_size >= 0 ? n : 0;
            complete = rq->body_size >= 0 && left == 0;
        }
    }
    x->unsent |= !complete;
    free(frame);
    return err;
}

int cli_http1_exchange(int fd, const http1_req *rq, http1_resp *rs)
{
    exch x = { .rs = rs };
    http_parser_init(&x.p, HTTP_RESPONSE);
    x.p.data = &x;
    rs->status = rs->keep_alive = rs->started = rs->err_no = 0;
    rs->why = NULL;
    http1_buf head = { 0 };
    int err = head_of(rq, &head);
    if (!err)
        err = send_watching(fd, &x, head.data, head.len);
    /* The head may hold a secret's value (cell secret set). */
    if (head.data)
        explicit_bzero(head.data, head.len);
    free(head.data);
    if (!err && rq->body_fd >= 0 && !x.send_errno && !x.done)
        err = send_fd_body(fd, rq, &x);
    else if (rq->body_fd >= 0)
        x.unsent = 1;
    if (!err)
        err = read_answer(fd, &x);
    /* An answer that came before the whole request was sent ends the connection. */
    if (x.send_errno || x.unsent)
        rs->keep_alive = 0;
    return err;
}

const char *cli_http1_strerror(int err, const http1_resp *rs, char *buf, size_t len)
{
    switch (err) {
    case HTTP1_NOMEM:
        return "out of memory";
    case HTTP1_IO:
        return strerror(rs->err_no);
    case HTTP1_CLOSED:
        return "the connection ended before a complete answer";
    case HTTP1_BAD:
        snprintf(buf, len, "the answer is not HTTP/1.1 (%s)", rs->why ? rs->why : "malformed");
        return buf;
    case HTTP1_HUGE:
        snprintf(buf, len, "the answer is too large: %s", rs->why ? rs->why : "over the limit");
        return buf;
    case HTTP1_BODY_READ:
        snprintf(buf, len, "reading the request body: %s", rs->why ? rs->why : strerror(rs->err_no));
        return buf;
    case HTTP1_ABORTED:
        return "stopped by the receiver";
    case HTTP1_STOPPED:
        return "stopped";
    default:
        return "failed";
    }
}
