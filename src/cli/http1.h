/* http1.h: the CLI's HTTP/1.1 client: one request and its answer on a
 * connected stream socket (the daemon's unix socket or TCP), the answer
 * parsed by http_parser.  No TLS. */
#ifndef CELL_CLI_HTTP1_H
#define CELL_CLI_HTTP1_H

#include <stdatomic.h>
#include <stddef.h>

/* Larger answers are a broken or hostile daemon, not a reply worth holding. */
#define HTTP1_MAX_REPLY (256u << 20)

/* A growing buffer that refuses to pass HTTP1_MAX_REPLY (oom is then set). */
typedef struct http1_buf {
    char  *data;
    size_t len, cap;
    int    oom;
} http1_buf;

void cli_http1_buf_add(http1_buf *b, const void *p, size_t n);

/* A piece of a 2xx answer's body; non-zero stops the request (HTTP1_ABORTED). */
typedef int (*http1_data_fn)(void *user, const char *p, size_t n);

typedef struct http1_req {
    const char *method;
    const char *host;           /* the Host header */
    const char *target;         /* path and query, already escaped */
    const char *token;          /* bearer token, or NULL */
    const char *header;         /* one more "Name: value" line (no CRLF, no control bytes), or NULL */
    const char *content_type;   /* NULL: no Content-Type */
    const char *body;           /* a body in memory (body_fd < 0) */
    size_t      body_len;
    int         body_fd;        /* >= 0: the body is read from this fd */
    long long   body_size;      /* its length; < 0: sent chunked */
} http1_req;

typedef struct http1_resp {
    http1_data_fn on_data;      /* 2xx bodies go here when set; else into body */
    void         *user;
    atomic_int   *stop;         /* set non-zero: the request ends (HTTP1_STOPPED) */
    int           status;       /* the final status */
    int           keep_alive;   /* the connection may carry another request */
    int           started;      /* a byte of an answer arrived */
    int           err_no;       /* the errno of HTTP1_IO and HTTP1_BODY_READ */
    const char   *why;          /* what was wrong with the answer (static) */
    http1_buf     body;
} http1_resp;

enum http1_err {
    HTTP1_OK = 0,
    HTTP1_NOMEM,
    HTTP1_IO,                   /* sending or receiving failed (err_no) */
    HTTP1_CLOSED,               /* the connection ended before a complete answer */
    HTTP1_BAD,                  /* the answer is not HTTP/1.x (why) */
    HTTP1_HUGE,                 /* headers or body over their limits (why) */
    HTTP1_BODY_READ,            /* reading the request body failed (err_no or why) */
    HTTP1_ABORTED,              /* on_data said stop */
    HTTP1_STOPPED,              /* *stop was set */
};

/* A connected socket: unix socket `sock`, else TCP host:port.  -1 with the
 * reason in why (errno's text, or the resolver's). */
int cli_http1_connect(const char *sock, const char *host, const char *port, char *why, size_t why_len);

/* Send the request and read its answer (1xx interim answers skipped).
 * Returns an enum http1_err; rs->body is the caller's to free. */
int cli_http1_exchange(int fd, const http1_req *rq, http1_resp *rs);

/* The reason of a failed exchange, for "request ... failed: <reason>". */
const char *cli_http1_strerror(int err, const http1_resp *rs, char *buf, size_t len);

#endif
