/* ws.h: server side of RFC 6455 WebSocket framing on a socket libmicrohttpd
 * has upgraded for us: handshake key, incremental frame parser, frame writer. */
#ifndef CELL_WS_H
#define CELL_WS_H

#include <stddef.h>
#include <stdint.h>

/* Frame opcodes (RFC 6455 section 5.2). */
#define WS_OP_CONT   0x0
#define WS_OP_TEXT   0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE  0x8
#define WS_OP_PING   0x9
#define WS_OP_PONG   0xA

/* Close codes this module uses or reports (RFC 6455 section 7.4.1). */
#define WS_CLOSE_NORMAL    1000
#define WS_CLOSE_PROTOCOL  1002
#define WS_CLOSE_NO_STATUS 1005 /* never sent: "the peer's close frame had no code" */
#define WS_CLOSE_BAD_DATA  1007
#define WS_CLOSE_TOO_BIG   1009
#define WS_CLOSE_INTERNAL  1011

/* WebSocket subprotocols (Sec-WebSocket-Protocol) of the daemon.  A browser
 * cannot set Authorization on a WebSocket, so it offers its token as a
 * protocol, "cell.bearer.TOKEN", next to "cell.terminal"; the daemon takes
 * the token from there (http.c) and answers with "cell.terminal" alone, so
 * the token is never echoed and never in a URL (docs/security.md). */
#define WS_PROTO_BEARER   "cell.bearer."
#define WS_PROTO_TERMINAL "cell.terminal"
#define WS_PROTO_DESKTOP  "cell.desktop"  /* the desktop's live view (desktop_live.c) */

/* Largest control frame payload (RFC 6455 section 5.5). */
#define WS_MAX_CONTROL 125

/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64 of the SHA-1
 * of key + the RFC's GUID, NUL-terminated in out.  The key must be exactly
 * 24 base64 characters ending in "==" (16 random bytes); anything else, or a
 * libcrypto failure, returns -1 and the handshake should be refused (400). */
int srv_ws_accept_key(const char *client_key, char out[29]);

/* Called once per complete data message (opcode WS_OP_TEXT or WS_OP_BINARY,
 * never WS_OP_CONT: fragments are already joined) and once per control frame
 * (WS_OP_PING, WS_OP_PONG, WS_OP_CLOSE), in wire order.  `payload` is never
 * NULL, is unmasked, is followed by a NUL byte not counted in len (text can be
 * used as a C string if it holds no NUL), and is valid only during the call.
 * For WS_OP_CLOSE the payload is the raw body (2-byte code + UTF-8 reason,
 * or empty), already validated; the code is also in p->peer_close_code.
 * Return 0 to go on; any other value stops srv_ws_parser_feed, which returns it. */
typedef int (*ws_message_fn)(void *user, int opcode, const uint8_t *payload, size_t len);

/* Incremental parser for client-to-server frames.  Allocate it yourself, call
 * srv_ws_parser_init, feed it the bytes read from the socket in whatever pieces
 * they arrive, and srv_ws_parser_free it.  Fields below the marker are private. */
typedef struct ws_parser {
    /* Set when srv_ws_parser_feed returns -1: the code to send in our close
     * frame: WS_CLOSE_PROTOCOL, WS_CLOSE_TOO_BIG, WS_CLOSE_BAD_DATA, or
     * WS_CLOSE_INTERNAL when the message buffer could not be allocated. */
    int      close_code;
    /* The code of the last close frame received; WS_CLOSE_NO_STATUS if it had none. */
    int      peer_close_code;

    /* ---- private ---- */
    size_t   max_message;       /* limit on a data message, all fragments together */
    int      failed;            /* a protocol error was seen: every later feed fails */
    uint8_t  hdr[14];           /* the frame header being collected */
    size_t   hdr_have;          /* bytes of hdr collected so far */
    int      in_payload;        /* header done, payload bytes still to come */
    int      opcode;            /* current frame's opcode */
    int      fin;               /* current frame's FIN bit */
    uint8_t  mask[4];
    uint64_t payload_left;      /* payload bytes of the current frame not yet seen */
    uint64_t payload_seen;      /* ... and already seen (indexes the mask) */
    uint8_t  ctrl[WS_MAX_CONTROL + 1]; /* control frame payload + NUL */
    size_t   ctrl_len;
    int      msg_opcode;        /* TEXT/BINARY of the data message in progress, 0 if none */
    uint8_t *buf;               /* data message in progress */
    size_t   buf_len, buf_cap;
} ws_parser;

void srv_ws_parser_init(ws_parser *p, size_t max_message);
void srv_ws_parser_free(ws_parser *p);

/* Parse len bytes.  Returns 0 when all were consumed; -1 on a protocol error
 * (p->close_code says which; the parser then refuses further input); or the
 * non-zero value a callback returned, in which case the bytes after the frame
 * that callback was given are not parsed.  cb may be NULL (frames are
 * checked and dropped).
 * Text messages and close reasons must be valid UTF-8 (1007 otherwise),
 * checked once the message is complete.  No extensions are negotiated, so
 * RSV bits must be 0.  Non-minimal length encodings are accepted. */
int srv_ws_parser_feed(ws_parser *p, const uint8_t *data, size_t len, ws_message_fn cb, void *user);

/* Write the header of an unmasked (server-to-client) frame into out; returns
 * its length (2, 4 or 10).  fin = 0 starts or continues a fragmented message. */
size_t srv_ws_frame_header(uint8_t out[14], int opcode, uint64_t payload_len, int fin);

/* Send one whole (FIN) frame: header and payload, retrying on EINTR, partial
 * writes and, for non-blocking sockets, EAGAIN (waiting up to 30 s for the
 * peer, then ETIMEDOUT).  Uses MSG_NOSIGNAL on sockets so a vanished peer is
 * EPIPE, not SIGPIPE.  Returns 0, or -1 with errno; after a failure the
 * stream may hold a partial frame and the connection must be dropped. */
int srv_ws_send(int fd, int opcode, const void *data, size_t len);

/* Send a close frame with code and reason (NULL for none; cut to 123 bytes at
 * a UTF-8 boundary).  code 0 sends an empty body, e.g. to echo a close
 * frame that had no code.  Returns as srv_ws_send. */
int srv_ws_send_close(int fd, uint16_t code, const char *reason);

#endif
