/* ws.c: RFC 6455 framing for the daemon's WebSocket endpoints; everything
 * after libmicrohttpd's HTTP Upgrade hands us the raw socket is done here. */
#include "server/ws.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <openssl/evp.h>

/* How long srv_ws_send waits for a non-blocking socket to drain before giving up
 * on a client that stopped reading. */
#define WS_SEND_TIMEOUT_MS 30000

/* A finished message buffer larger than this is freed rather than kept, so
 * one large message does not pin max_message bytes for the connection's life. */
#define WS_KEEP_BUFFER (64 * 1024)

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static int is_base64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int srv_ws_accept_key(const char *client_key, char out[29])
{
    if (!client_key || !out)
        return -1;
    /* 16 bytes encode to 22 significant characters plus "==" (RFC 6455 4.1). */
    if (strnlen(client_key, 25) != 24 || client_key[22] != '=' || client_key[23] != '=')
        return -1;
    for (int i = 0; i < 22; i++)
        if (!is_base64_char(client_key[i]))
            return -1;

    unsigned char input[24 + sizeof ws_guid - 1];
    memcpy(input, client_key, 24);
    memcpy(input + 24, ws_guid, sizeof ws_guid - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (EVP_Digest(input, sizeof input, md, &md_len, EVP_sha1(), NULL) != 1 || md_len != 20)
        return -1;
    /* 20 bytes -> 28 characters, and EVP_EncodeBlock adds the NUL. */
    if (EVP_EncodeBlock((unsigned char *)out, md, 20) != 28)
        return -1;
    return 0;
}

/* ---- parser -------------------------------------------------------------- */

void srv_ws_parser_init(ws_parser *p, size_t max_message)
{
    memset(p, 0, sizeof *p);
    /* Keeps buf_len + payload + 1 (the NUL) from overflowing size_t. */
    p->max_message = max_message > SIZE_MAX / 2 ? SIZE_MAX / 2 : max_message;
    p->peer_close_code = WS_CLOSE_NO_STATUS;
}

void srv_ws_parser_free(ws_parser *p)
{
    free(p->buf);
    p->buf = NULL;
    p->buf_len = p->buf_cap = 0;
}

static int fail(ws_parser *p, int code)
{
    p->failed = 1;
    p->close_code = code;
    return -1;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past
 * U+10FFFF.  Checked on whole messages; a browser would do the same. */
static int valid_utf8(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF)
            n = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* > U+10FFFF */
        } else
            return 0;
        if (len - i - 1 < n)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += n + 1;
    }
    return 1;
}

/* Codes a peer may put on the wire (RFC 6455 7.4 and the IANA registry):
 * 1004-1006 and 1015 are reserved for local use, 1016-2999 for future RFCs. */
static int valid_close_code(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

static int is_control(int op) { return op >= 0x8; }

/* The first two header bytes decide everything that can be refused before
 * the length: reject early so a bad peer is cut off at once. */
static int check_head(ws_parser *p)
{
    uint8_t b0 = p->hdr[0], b1 = p->hdr[1];
    int op = b0 & 0x0F;
    if (b0 & 0x70) /* RSV1-3: we negotiate no extension */
        return fail(p, WS_CLOSE_PROTOCOL);
    if (!(b1 & 0x80)) /* clients must mask (RFC 6455 5.1) */
        return fail(p, WS_CLOSE_PROTOCOL);
    switch (op) {
    case WS_OP_CONT:
        if (!p->msg_opcode)
            return fail(p, WS_CLOSE_PROTOCOL);
        break;
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        if (p->msg_opcode) /* data frames cannot interleave (RFC 6455 5.4) */
            return fail(p, WS_CLOSE_PROTOCOL);
        break;
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        if (!(b0 & 0x80) || (b1 & 0x7F) > WS_MAX_CONTROL)
            return fail(p, WS_CLOSE_PROTOCOL);
        break;
    default:
        return fail(p, WS_CLOSE_PROTOCOL);
    }
    return 0;
}

static size_t header_size(const ws_parser *p)
{
    uint8_t len7 = p->hdr[1] & 0x7F;
    return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
}

/* The whole header is in: decode length and mask, make room for the payload. */
static int start_frame(ws_parser *p)
{
    uint8_t len7 = p->hdr[1] & 0x7F;
    uint64_t plen = len7;
    const uint8_t *q = p->hdr + 2;
    if (len7 == 126) {
        plen = (uint64_t)q[0] << 8 | q[1];
        q += 2;
    } else if (len7 == 127) {
        if (q[0] & 0x80) /* the most significant bit MUST be 0 */
            return fail(p, WS_CLOSE_PROTOCOL);
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = plen << 8 | q[i];
        q += 8;
    }
    memcpy(p->mask, q, 4);
    p->opcode = p->hdr[0] & 0x0F;
    p->fin = (p->hdr[0] & 0x80) != 0;
    p->payload_left = plen;
    p->payload_seen = 0;
    p->in_payload = 1;

    if (is_control(p->opcode)) {
        p->ctrl_len = 0;
        return 0;
    }
    if (plen > p->max_message - p->buf_len)
        return fail(p, WS_CLOSE_TOO_BIG);
    /* Grow once per frame, to the size the header announced (bounded by
     * max_message above), doubling so many small fragments stay cheap. */
    size_t need = p->buf_len + (size_t)plen + 1;
    if (need > p->buf_cap) {
        size_t cap = p->buf_cap * 2;
        if (cap > p->max_message + 1)
            cap = p->max_message + 1;
        if (cap < need)
            cap = need;
        uint8_t *nb = realloc(p->buf, cap);
        if (!nb)
            return fail(p, WS_CLOSE_INTERNAL);
        p->buf = nb;
        p->buf_cap = cap;
    }
    if (p->opcode != WS_OP_CONT)
        p->msg_opcode = p->opcode;
    return 0;
}

/* The last payload byte is in: validate and deliver. */
static int finish_frame(ws_parser *p, ws_message_fn cb, void *user)
{
    if (is_control(p->opcode)) {
        p->ctrl[p->ctrl_len] = 0;
        if (p->opcode == WS_OP_CLOSE) {
            if (p->ctrl_len == 1)
                return fail(p, WS_CLOSE_PROTOCOL);
            if (p->ctrl_len >= 2) {
                unsigned code = (unsigned)p->ctrl[0] << 8 | p->ctrl[1];
                if (!valid_close_code(code))
                    return fail(p, WS_CLOSE_PROTOCOL);
                if (!valid_utf8(p->ctrl + 2, p->ctrl_len - 2))
                    return fail(p, WS_CLOSE_BAD_DATA);
                p->peer_close_code = (int)code;
            } else
                p->peer_close_code = WS_CLOSE_NO_STATUS;
        }
        return cb ? cb(user, p->opcode, p->ctrl, p->ctrl_len) : 0;
    }
    if (!p->fin)
        return 0;
    p->buf[p->buf_len] = 0;
    if (p->msg_opcode == WS_OP_TEXT && !valid_utf8(p->buf, p->buf_len))
        return fail(p, WS_CLOSE_BAD_DATA);
    int op = p->msg_opcode;
    int r = cb ? cb(user, op, p->buf, p->buf_len) : 0;
    p->msg_opcode = 0;
    p->buf_len = 0;
    if (p->buf_cap > WS_KEEP_BUFFER)
        srv_ws_parser_free(p);
    return r;
}

int srv_ws_parser_feed(ws_parser *p, const uint8_t *data, size_t len, ws_message_fn cb, void *user)
{
    if (p->failed)
        return -1;
    size_t i = 0;
    for (;;) {
        if (!p->in_payload) {
            while (p->hdr_have < 2 && i < len)
                p->hdr[p->hdr_have++] = data[i++];
            if (p->hdr_have < 2)
                return 0;
            /* Pure function of hdr[0..1] and message state, so re-checking
             * it while the rest of a split header trickles in is harmless. */
            if (check_head(p) < 0)
                return -1;
            size_t need = header_size(p);
            while (p->hdr_have < need && i < len)
                p->hdr[p->hdr_have++] = data[i++];
            if (p->hdr_have < need)
                return 0;
            if (start_frame(p) < 0)
                return -1;
        }

        size_t n = len - i;
        if ((uint64_t)n > p->payload_left)
            n = (size_t)p->payload_left;
        uint8_t *dst = is_control(p->opcode) ? p->ctrl + p->ctrl_len : p->buf + p->buf_len;
        for (size_t k = 0; k < n; k++)
            dst[k] = data[i + k] ^ p->mask[(p->payload_seen + k) & 3];
        if (is_control(p->opcode))
            p->ctrl_len += n;
        else
            p->buf_len += n;
        i += n;
        p->payload_left -= n;
        p->payload_seen += n;
        if (p->payload_left > 0)
            return 0; /* input exhausted mid-payload */

        p->in_payload = 0;
        p->hdr_have = 0;
        int r = finish_frame(p, cb, user);
        if (r != 0)
            return r;
        if (i == len)
            return 0;
    }
}

/* ---- encoder ------------------------------------------------------------- */

size_t srv_ws_frame_header(uint8_t out[14], int opcode, uint64_t payload_len, int fin)
{
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    if (payload_len < 126) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    return 10;
}

/* Drop the first n bytes from an iovec array, skipping emptied entries. */
static void iov_advance(struct iovec **iov, int *cnt, size_t n)
{
    while (*cnt > 0 && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++;
        (*cnt)--;
    }
    if (*cnt > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}

/* writev until done.  sendmsg first, for MSG_NOSIGNAL: a client that hangs
 * up must not kill the daemon with SIGPIPE; writev for non-sockets (tests). */
static int send_iov(int fd, struct iovec *iov, int cnt)
{
    int is_socket = 1;
    iov_advance(&iov, &cnt, 0);
    while (cnt > 0) {
        ssize_t n;
        if (is_socket) {
            struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)cnt };
            n = sendmsg(fd, &mh, MSG_NOSIGNAL);
            if (n < 0 && errno == ENOTSOCK) {
                is_socket = 0;
                continue;
            }
        } else
            n = writev(fd, iov, cnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            struct pollfd pfd = { .fd = fd, .events = POLLOUT };
            int r = poll(&pfd, 1, WS_SEND_TIMEOUT_MS);
            if (r == 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            if (r < 0 && errno != EINTR)
                return -1;
            continue;
        }
        if (n == 0) { /* cannot happen with bytes left; never spin on it */
            errno = EIO;
            return -1;
        }
        iov_advance(&iov, &cnt, (size_t)n);
    }
    return 0;
}

int srv_ws_send(int fd, int opcode, const void *data, size_t len)
{
    if ((len && !data) || (is_control(opcode) && len > WS_MAX_CONTROL)) {
        errno = EINVAL;
        return -1;
    }
    uint8_t hdr[14];
    size_t hlen = srv_ws_frame_header(hdr, opcode, len, 1);
    struct iovec iov[2] = {
        { .iov_base = hdr, .iov_len = hlen },
        { .iov_base = (void *)data, .iov_len = len },
    };
    return send_iov(fd, iov, 2);
}

int srv_ws_send_close(int fd, uint16_t code, const char *reason)
{
    if (code == 0)
        return srv_ws_send(fd, WS_OP_CLOSE, NULL, 0);
    uint8_t body[WS_MAX_CONTROL];
    body[0] = (uint8_t)(code >> 8);
    body[1] = (uint8_t)code;
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > WS_MAX_CONTROL - 2) {
        /* Back up to a character start so the peer sees valid UTF-8. */
        rlen = WS_MAX_CONTROL - 2;
        while (rlen > 0 && ((uint8_t)reason[rlen] & 0xC0) == 0x80)
            rlen--;
    }
    if (rlen)
        memcpy(body + 2, reason, rlen);
    return srv_ws_send(fd, WS_OP_CLOSE, body, 2 + rlen);
}
