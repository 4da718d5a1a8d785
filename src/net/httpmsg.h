/* httpmsg.h: HTTP/1.x messages as the egress engine reads them: one strict
 * parser for requests from the cell and responses from upstreams (every
 * check works on its validated fields), the rule checks, the forwarded
 * request head, and redaction of injected secrets.  No I/O here: the
 * fuzzer (fuzz/fuzz_http.c) drives all of it. */
#ifndef CELL_NET_HTTPMSG_H
#define CELL_NET_HTTPMSG_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cell.h"
#include "net/policy.h"

#define NET_HTTP_MAX_HEADERS   128
#define NET_HTTP_MAX_HEAD      65536   /* bytes of a request or response head */
#define NET_HTTP_REFRAME_MAX   65536   /* a chunked request body up to this goes upstream with a Content-Length */

/* A growable buffer.  It may hold secrets: every copy is wiped. */
typedef struct net_buf {
    char  *d;
    size_t len, cap;
    int    oom;
} net_buf;

void net_buf_add(net_buf *b, const void *p, size_t n);
void net_buf_str(net_buf *b, const char *s);
void net_buf_wipe(net_buf *b);

/* One message being parsed.  http_parser (without its lenient flags)
 * frames it; a scan of the head's raw bytes and a check of its fields
 * refuse what http_parser would let through and another parser might
 * read differently (RFC 9112 and 9110):
 *  - lines end with CRLF: no bare CR or LF, no NUL or other control
 *    character, no obs-fold continuation lines, a head of at most 64 KiB;
 *  - field names are tokens (so "Host : x" is refused, not a header
 *    named "Host "), values lose trailing whitespace;
 *  - HTTP/1.x only; at most one Content-Length, digits only; no
 *    Transfer-Encoding with a Content-Length; Transfer-Encoding only as
 *    exactly "chunked", never in an HTTP/1.0 request; at most one Host.
 * Chunk extensions and trailers are parsed and dropped.  Body bytes
 * collect in `body` without their framing; the caller re-frames them. */
typedef struct net_http_msg {
    http_parser p;
    net_buf     url;                /* request target, or a response's reason phrase */
    net_header  h[NET_HTTP_MAX_HEADERS];
    size_t      n;
    net_buf     hname, hvalue;      /* the field being read */
    int         in_value, head_done, done, chunked, has_clen;
    int         skip_body;          /* set by the caller: a response to HEAD */
    uint64_t    clen;
    net_buf     body;
    /* the raw head scan */
    size_t      scan_total, scan_line, scan_col;
    int         scan_cr, scan_done;
    const char *error;              /* why the bytes were refused */
} net_http_msg;

void net_http_msg_init(net_http_msg *m, enum http_parser_type type);
void net_http_msg_free(net_http_msg *m);
/* Ready for the next message on the same connection (after an interim
 * 1xx response): fields dropped, parser state kept. */
void net_http_msg_next(net_http_msg *m);
/* Feed bytes (len 0: the peer closed).  Parsing pauses when a message
 * ends (m->done): the bytes after it are not consumed.  Returns how many
 * were, or -1 with m->error. */
ssize_t net_http_msg_feed(net_http_msg *m, const char *data, size_t len);
/* The last value of a field (names are tokens: compared without case),
 * and how many there are. */
const char *net_http_msg_header(const net_http_msg *m, const char *name, int *count);
/* The start line was read: a malformed request earns a 400, where bytes
 * that are not HTTP at all are only dropped. */
int net_http_msg_started(const net_http_msg *m);

/* ---- rule checks and the forwarded head ------------------------------------ */

/* Host names equal without case and a trailing dot (SNI vs the pinned host). */
int  net_http_name_equal(const char *a, const char *b);
/* A Host header value: the pinned host, optionally ":PORT" (digits). */
int  net_http_host_matches(const char *value, const char *pinned);
/* NULL if the rule allows `method` on `path`, else why not, as a short
 * sentence.  `path` is in normal form (net_http_path_normalize()). */
const char *net_http_check(const net_http_rule *r, const char *method, const char *path);

/* Redaction of injected values (the rule's "redact_response"): every
 * occurrence becomes '*' of the same length, so a Content-Length stays
 * right.  Streamed: the last bytes are held back, since a value may be
 * split across pieces. */
typedef struct net_redact {
    net_buf *vals;
    size_t   n, maxlen;
    net_buf  hold;
} net_redact;

int  net_redact_add(net_redact *r, const char *v, size_t len);
void net_redact_inplace(const net_redact *r, char *s, size_t len);
/* `data` redacted onto `out`, minus a tail that may start a value. */
void net_redact_feed(net_redact *r, const char *data, size_t len, net_buf *out);
void net_redact_flush(net_redact *r, net_buf *out);
void net_redact_free(net_redact *r);

/* The request head forwarded upstream: "METHOD TARGET HTTP/1.1", the
 * client's headers minus hop-by-hop and framing ones, minus the rule's
 * remove_headers and every header it sets; then the rule's set_headers
 * with ${secret:NAME} expanded (each secret's value also added to
 * `redact` unless NULL), then `framing` (e.g. "Content-Length: 5\r\n",
 * may be ""), then "Connection: close" unless `keep_alive`.  With
 * r->redact the cell's Accept-Encoding is replaced by "identity" (an
 * encoded echo could not be redacted).  A secret that is missing (or
 * holds CR/LF/NUL) fails with its name in `missing`.  *out holds secrets:
 * OPENSSL_cleanse() it before free(). */
int  net_http_build_head(const net_http_rule *r, const char *method, const char *target, const net_header *hdrs,
                         size_t n, const char *framing, int keep_alive, cell_net_secret_fn secret, void *user,
                         net_redact *redact, char **out, size_t *len, char *missing, size_t missing_size);

#endif
