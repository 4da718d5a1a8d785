/* test_ws.c: the WebSocket handshake key, frame parser and frame writer,
 * against the RFC 6455 examples, every protocol error and arbitrary splits. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "server/ws.h"

/* ---- helpers ------------------------------------------------------------- */

/* Every callback invocation, copied, so tests compare what was delivered. */
typedef struct {
    int opcode;
    uint8_t *data;
    size_t len;
} event;

typedef struct {
    event ev[32];
    size_t n;
    int stop_at;  /* return `stop_with` from the callback for event #stop_at (1-based) */
    int stop_with;
} recorder;

static int record(void *user, int opcode, const uint8_t *payload, size_t len)
{
    recorder *r = user;
    assert_non_null(payload);
    assert_int_equal(payload[len], 0); /* the promised NUL after the payload */
    assert_true(r->n < sizeof r->ev / sizeof *r->ev);
    event *e = &r->ev[r->n++];
    e->opcode = opcode;
    e->len = len;
    e->data = malloc(len + 1);
    assert_non_null(e->data);
    memcpy(e->data, payload, len);
    if (r->stop_at && (size_t)r->stop_at == r->n)
        return r->stop_with;
    return 0;
}

static void recorder_free(recorder *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->ev[i].data);
    r->n = 0;
}

static void assert_event(const recorder *r, size_t i, int opcode, const void *data, size_t len)
{
    assert_true(i < r->n);
    assert_int_equal(r->ev[i].opcode, opcode);
    assert_int_equal(r->ev[i].len, len);
    if (len)
        assert_memory_equal(r->ev[i].data, data, len);
}

/* A client frame: first byte b0 as given (FIN, RSV, opcode), masked with key. */
static size_t client_frame(uint8_t *out, uint8_t b0, const void *payload, size_t len, const uint8_t key[4])
{
    size_t h = srv_ws_frame_header(out, 0, len, 0);
    out[0] = b0;
    out[1] |= 0x80;
    memcpy(out + h, key, 4);
    h += 4;
    const uint8_t *src = payload;
    for (size_t i = 0; i < len; i++)
        out[h + i] = src[i] ^ key[i & 3];
    return h + len;
}

static const uint8_t key1[4] = { 0x37, 0xfa, 0x21, 0x3d };
static const uint8_t key2[4] = { 0xde, 0xad, 0xbe, 0xef };

/* Feed `data` in chunks of `chunk` bytes; returns the first non-zero result. */
static int feed_chunked(ws_parser *p, const uint8_t *data, size_t len, size_t chunk, recorder *r)
{
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        int rc = srv_ws_parser_feed(p, data + off, n, record, r);
        if (rc)
            return rc;
    }
    return 0;
}

/* Feed one stream to a fresh parser; expect an error with close_code. */
static void expect_error(const uint8_t *data, size_t len, size_t max, int close_code)
{
    for (size_t chunk = 1; chunk <= len; chunk = chunk < 4 ? chunk + 1 : chunk * 2) {
        ws_parser p;
        recorder r = { 0 };
        srv_ws_parser_init(&p, max);
        assert_int_equal(feed_chunked(&p, data, len, chunk, &r), -1);
        assert_int_equal(p.close_code, close_code);
        /* The parser stays failed. */
        uint8_t more[] = { 0x81, 0x80, 1, 2, 3, 4 };
        assert_int_equal(srv_ws_parser_feed(&p, more, sizeof more, record, &r), -1);
        recorder_free(&r);
        srv_ws_parser_free(&p);
    }
}

/* ---- handshake ----------------------------------------------------------- */

static void accept_key_rfc_example(void **state)
{
    (void)state;
    char out[29];
    assert_int_equal(srv_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
    /* The value printed in RFC 6455 section 1.3 (and what Python's hashlib gives). */
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void accept_key_rejects_bad_keys(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ===", "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQAA", "dGhlIHNhbXBsZSBub25j*Q==", " GhlIHNhbXBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZQ==\n", "dGhlIHNhbXBsZSBub25jZQ=A", NULL,
    };
    char out[29];
    for (const char *const *b = bad; *b; b++)
        assert_int_equal(srv_ws_accept_key(*b, out), -1);
    assert_int_equal(srv_ws_accept_key(NULL, out), -1);
}

/* ---- RFC 6455 section 5.7 examples --------------------------------------- */

static void rfc_single_masked_hello(void **state)
{
    (void)state;
    static const uint8_t frame[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58 };
    ws_parser p;
    recorder r = { 0 };
    srv_ws_parser_init(&p, 1024);
    assert_int_equal(srv_ws_parser_feed(&p, frame, sizeof frame, record, &r), 0);
    assert_int_equal(r.n, 1);
    assert_event(&r, 0, WS_OP_TEXT, "Hello", 5);
    recorder_free(&r);
    srv_ws_parser_free(&p);
}

static void rfc_masked_pong(void **state)
{
    (void)state;
    static const uint8_t frame[] = { 0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58 };
    ws_parser p;
    recorder r = { 0 };
    srv_ws_parser_init(&p, 1024);
    assert_int_equal(srv_ws_parser_feed(&p, frame, sizeof frame, record, &r), 0);
    assert_event(&r, 0, WS_OP_PONG, "Hello", 5);
    recorder_free(&r);
    srv_ws_parser_free(&p);
}

/* "Hel" + ping "ping" + "lo" + close(1000, "bye"): control frames arrive in
 * the middle of a fragmented message and are delivered at once. */
static size_t fragmented_stream(uint8_t *buf)
{
    size_t n = 0;
    n += client_frame(buf + n, 0x01, "Hel", 3, key1);
    n += client_frame(buf + n, 0x89, "ping", 4, key2);
    n += client_frame(buf + n, 0x80, "lo", 2, key1);
    n += client_frame(buf + n, 0x8a, "", 0, key2);
    n += client_frame(buf + n, 0x88, "\x03\xe8" "bye", 5, key1);
    return n;
}

static void check_fragmented_events(const recorder *r, const ws_parser *p)
{
    assert_int_equal(r->n, 4);
    assert_event(r, 0, WS_OP_PING, "ping", 4);
    assert_event(r, 1, WS_OP_TEXT, "Hello", 5);
    assert_event(r, 2, WS_OP_PONG, "", 0);
    assert_event(r, 3, WS_OP_CLOSE, "\x03\xe8" "bye", 5);
    assert_int_equal(p->peer_close_code, 1000);
}

static void fragmented_with_ping_between(void **state)
{
    (void)state;
    uint8_t buf[128];
    size_t n = fragmented_stream(buf);
    ws_parser p;
    recorder r = { 0 };
    srv_ws_parser_init(&p, 1024);
    assert_int_equal(srv_ws_parser_feed(&p, buf, n, record, &r), 0);
    check_fragmented_events(&r, &p);
    recorder_free(&r);
    srv_ws_parser_free(&p);
}

static void every_chunk_size(void **state)
{
    (void)state;
    uint8_t buf[128];
    size_t n = fragmented_stream(buf);
    for (size_t chunk = 1; chunk <= n; chunk++) {
        ws_parser p;
        recorder r = { 0 };
        srv_ws_parser_init(&p, 1024);
        assert_int_equal(feed_chunked(&p, buf, n, chunk, &r), 0);
        check_fragmented_events(&r, &p);
        recorder_free(&r);
        srv_ws_parser_free(&p);
    }
}

static void close_without_code_and_empty_messages(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = 0;
    n += client_frame(buf + n, 0x82, "", 0, key1);  /* empty binary */
    n += client_frame(buf + n, 0x01, "", 0, key1);  /* empty text in two */
    n += client_frame(buf + n, 0x80, "", 0, key2);  /* empty fragments */
    n += client_frame(buf + n, 0x88, "", 0, key2);  /* close, no code */
    for (size_t chunk = 1; chunk <= n; chunk++) {
        ws_parser p;
        recorder r = { 0 };
        srv_ws_parser_init(&p, 0); /* a zero limit still admits empty messages */
        p.peer_close_code = 0;
        assert_int_equal(feed_chunked(&p, buf, n, chunk, &r), 0);
        assert_int_equal(r.n, 3);
        assert_event(&r, 0, WS_OP_BINARY, "", 0);
        assert_event(&r, 1, WS_OP_TEXT, "", 0);
        assert_event(&r, 2, WS_OP_CLOSE, "", 0);
        assert_int_equal(p.peer_close_code, WS_CLOSE_NO_STATUS);
        recorder_free(&r);
        srv_ws_parser_free(&p);
    }
}

/* ---- extended lengths ---------------------------------------------------- */

static void extended_lengths(void **state)
{
    (void)state;
    /* 256 bytes: 16-bit length (RFC example 0x7E 0x0100); 70000: 64-bit. */
    static const size_t sizes[] = { 125, 126, 256, 65535, 65536, 70000 };
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t len = sizes[s];
        uint8_t *payload = malloc(len);
        uint8_t *frame = malloc(len + 14);
        assert_non_null(payload);
        assert_non_null(frame);
        for (size_t i = 0; i < len; i++)
            payload[i] = (uint8_t)(i * 7 + 3);
        size_t n = client_frame(frame, 0x82, payload, len, key2);
        size_t want_hdr = len < 126 ? 6 : len <= 0xFFFF ? 8 : 14;
        assert_int_equal(n, want_hdr + len);
        if (len == 256)
            assert_memory_equal(frame, "\x82\xFE\x01\x00", 4);
        if (len == 65536)
            assert_memory_equal(frame, "\x82\xFF\x00\x00\x00\x00\x00\x01\x00\x00", 10);
        static const size_t chunks[] = { 1, 3, 4096, SIZE_MAX };
        for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
            if (chunks[c] == 1 && len > 300)
                continue; /* byte-at-a-time is covered on the smaller sizes */
            ws_parser p;
            recorder r = { 0 };
            srv_ws_parser_init(&p, 70000);
            assert_int_equal(feed_chunked(&p, frame, n, chunks[c], &r), 0);
            assert_int_equal(r.n, 1);
            assert_event(&r, 0, WS_OP_BINARY, payload, len);
            recorder_free(&r);
            srv_ws_parser_free(&p);
        }
        free(payload);
        free(frame);
    }
}

/* ---- protocol errors ----------------------------------------------------- */

static void rejects_unmasked(void **state)
{
    (void)state;
    /* The RFC's own unmasked server-to-client "Hello": not allowed from a client. */
    static const uint8_t frame[] = { 0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f };
    expect_error(frame, sizeof frame, 1024, WS_CLOSE_PROTOCOL);
}

static void rejects_reserved_bits_and_opcodes(void **state)
{
    (void)state;
    uint8_t buf[32];
    static const uint8_t bad_b0[] = { 0xC1, 0xA1, 0x91, 0x83, 0x87, 0x8B, 0x8F };
    for (size_t i = 0; i < sizeof bad_b0; i++) {
        size_t n = client_frame(buf, bad_b0[i], "x", 1, key1);
        expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    }
}

static void rejects_bad_control_frames(void **state)
{
    (void)state;
    uint8_t payload[126];
    memset(payload, 'a', sizeof payload);
    uint8_t buf[160];
    size_t n = client_frame(buf, 0x89, payload, 126, key1); /* ping > 125 */
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    n = client_frame(buf, 0x09, "x", 1, key1); /* fragmented ping */
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    n = client_frame(buf, 0x08, "", 0, key1); /* fragmented close */
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    n = client_frame(buf, 0x88, "\x03", 1, key1); /* close with 1 byte */
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    static const uint16_t bad_codes[] = { 0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535 };
    for (size_t i = 0; i < sizeof bad_codes / sizeof *bad_codes; i++) {
        uint8_t body[2] = { (uint8_t)(bad_codes[i] >> 8), (uint8_t)bad_codes[i] };
        n = client_frame(buf, 0x88, body, 2, key2);
        expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    }
    n = client_frame(buf, 0x88, "\x03\xe8\xff", 3, key1); /* reason not UTF-8 */
    expect_error(buf, n, 1024, WS_CLOSE_BAD_DATA);

    /* The largest control frame and good codes are fine. */
    static const uint16_t good_codes[] = { 1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999 };
    for (size_t i = 0; i < sizeof good_codes / sizeof *good_codes; i++) {
        uint8_t body[WS_MAX_CONTROL];
        memset(body, 'r', sizeof body);
        body[0] = (uint8_t)(good_codes[i] >> 8);
        body[1] = (uint8_t)good_codes[i];
        n = client_frame(buf, 0x88, body, sizeof body, key2);
        ws_parser p;
        recorder r = { 0 };
        srv_ws_parser_init(&p, 0);
        assert_int_equal(srv_ws_parser_feed(&p, buf, n, record, &r), 0);
        assert_event(&r, 0, WS_OP_CLOSE, body, sizeof body);
        assert_int_equal(p.peer_close_code, good_codes[i]);
        recorder_free(&r);
        srv_ws_parser_free(&p);
    }
}

static void rejects_bad_fragment_sequences(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = client_frame(buf, 0x80, "x", 1, key1); /* continuation, nothing open */
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    n = client_frame(buf, 0x00, "x", 1, key1);
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);

    n = client_frame(buf, 0x01, "ab", 2, key1); /* text open ... */
    n += client_frame(buf + n, 0x81, "cd", 2, key1); /* ... then a new text */
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
    n = client_frame(buf, 0x02, "ab", 2, key1);
    n += client_frame(buf + n, 0x89, "", 0, key2); /* a ping between is fine */
    n += client_frame(buf + n, 0x02, "cd", 2, key1); /* a new binary is not */
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);

    /* After a finished message, a continuation has nothing to continue. */
    n = client_frame(buf, 0x01, "ab", 2, key1);
    n += client_frame(buf + n, 0x80, "cd", 2, key1);
    n += client_frame(buf + n, 0x80, "ef", 2, key1);
    expect_error(buf, n, 1024, WS_CLOSE_PROTOCOL);
}

static void rejects_64bit_length_msb(void **state)
{
    (void)state;
    static const uint8_t frame[] = { 0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4 };
    expect_error(frame, sizeof frame, SIZE_MAX, WS_CLOSE_PROTOCOL);
}

static void rejects_invalid_utf8_text(void **state)
{
    (void)state;
    static const struct { const char *s; size_t len; } bad[] = {
        { "\xc0\xaf", 2 },          /* overlong '/' */
        { "\xe0\x80\xaf", 3 },      /* overlong, 3 bytes */
        { "\xed\xa0\x80", 3 },      /* surrogate U+D800 */
        { "\xf4\x90\x80\x80", 4 },  /* U+110000 */
        { "\xf5\x80\x80\x80", 4 },
        { "ok\xe2\x82", 4 },        /* truncated */
        { "\x80", 1 },              /* stray continuation */
        { "\xe2\x28\xa1", 3 },
    };
    uint8_t buf[64];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t n = client_frame(buf, 0x81, bad[i].s, bad[i].len, key1);
        expect_error(buf, n, 1024, WS_CLOSE_BAD_DATA);
        /* The same bytes as binary are fine. */
        ws_parser p;
        recorder r = { 0 };
        srv_ws_parser_init(&p, 1024);
        buf[0] = 0x82;
        assert_int_equal(srv_ws_parser_feed(&p, buf, n, record, &r), 0);
        assert_int_equal(r.n, 1);
        recorder_free(&r);
        srv_ws_parser_free(&p);
    }

    /* A character split across fragments is valid: the check is per message. */
    size_t n = client_frame(buf, 0x01, "\xe2\x82", 2, key1);          /* U+20AC, first half */
    n += client_frame(buf + n, 0x80, "\xac \xf0\x9f\x98\x80", 6, key2); /* ... and an emoji */
    ws_parser p;
    recorder r = { 0 };
    srv_ws_parser_init(&p, 1024);
    assert_int_equal(srv_ws_parser_feed(&p, buf, n, record, &r), 0);
    assert_event(&r, 0, WS_OP_TEXT, "\xe2\x82\xac \xf0\x9f\x98\x80", 8);
    recorder_free(&r);
    srv_ws_parser_free(&p);
}

static void rejects_too_big(void **state)
{
    (void)state;
    uint8_t payload[40];
    memset(payload, 'z', sizeof payload);
    uint8_t buf[128];

    size_t n = client_frame(buf, 0x82, payload, 17, key1);
    expect_error(buf, n, 16, WS_CLOSE_TOO_BIG);
    /* The header alone is enough to refuse: no payload byte is awaited. */
    expect_error(buf, 6, 16, WS_CLOSE_TOO_BIG);

    n = client_frame(buf, 0x01, payload, 10, key1);
    n += client_frame(buf + n, 0x80, payload, 7, key2);
    expect_error(buf, n, 16, WS_CLOSE_TOO_BIG);

    /* A huge declared length never allocates. */
    static const uint8_t huge[] = { 0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4 };
    expect_error(huge, sizeof huge, 1 << 20, WS_CLOSE_TOO_BIG);

    /* Exactly the limit, in fragments, with control frames (not counted) between. */
    n = client_frame(buf, 0x01, payload, 10, key1);
    n += client_frame(buf + n, 0x89, payload, 20, key2);
    n += client_frame(buf + n, 0x80, payload, 6, key2);
    ws_parser p;
    recorder r = { 0 };
    srv_ws_parser_init(&p, 16);
    assert_int_equal(srv_ws_parser_feed(&p, buf, n, record, &r), 0);
    assert_int_equal(r.n, 2);
    assert_event(&r, 0, WS_OP_PING, payload, 20);
    assert_event(&r, 1, WS_OP_TEXT, payload, 16);
    recorder_free(&r);
    srv_ws_parser_free(&p);
}

/* ---- callback control ---------------------------------------------------- */

static void callback_stops_feeding(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = client_frame(buf, 0x81, "one", 3, key1);
    n += client_frame(buf + n, 0x81, "two", 3, key1);
    ws_parser p;
    recorder r = { .stop_at = 1, .stop_with = 42 };
    srv_ws_parser_init(&p, 1024);
    assert_int_equal(srv_ws_parser_feed(&p, buf, n, record, &r), 42);
    assert_int_equal(r.n, 1);
    assert_event(&r, 0, WS_OP_TEXT, "one", 3);
    recorder_free(&r);

    /* NULL callback: frames are checked and dropped. */
    srv_ws_parser_free(&p);
    srv_ws_parser_init(&p, 1024);
    assert_int_equal(srv_ws_parser_feed(&p, buf, n, NULL, NULL), 0);
    assert_int_equal(srv_ws_parser_feed(&p, NULL, 0, NULL, NULL), 0);
    srv_ws_parser_free(&p);
}

/* ---- encoder ------------------------------------------------------------- */

static void frame_header_lengths(void **state)
{
    (void)state;
    uint8_t h[14];
    assert_int_equal(srv_ws_frame_header(h, WS_OP_TEXT, 5, 1), 2);
    assert_memory_equal(h, "\x81\x05", 2);
    assert_int_equal(srv_ws_frame_header(h, WS_OP_TEXT, 125, 0), 2);
    assert_memory_equal(h, "\x01\x7d", 2);
    assert_int_equal(srv_ws_frame_header(h, WS_OP_BINARY, 126, 1), 4);
    assert_memory_equal(h, "\x82\x7e\x00\x7e", 4);
    assert_int_equal(srv_ws_frame_header(h, WS_OP_BINARY, 256, 1), 4);
    assert_memory_equal(h, "\x82\x7e\x01\x00", 4);
    assert_int_equal(srv_ws_frame_header(h, WS_OP_CONT, 65535, 1), 4);
    assert_memory_equal(h, "\x80\x7e\xff\xff", 4);
    assert_int_equal(srv_ws_frame_header(h, WS_OP_BINARY, 65536, 1), 10);
    assert_memory_equal(h, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    assert_int_equal(srv_ws_frame_header(h, WS_OP_PING, 0x0102030405060708ull, 1), 10);
    assert_memory_equal(h, "\x89\x7f\x01\x02\x03\x04\x05\x06\x07\x08", 10);
}

/* Read everything written to fd (a temp file) back from offset 0. */
static uint8_t *slurp(int fd, size_t *len)
{
    off_t end = lseek(fd, 0, SEEK_END);
    assert_true(end >= 0);
    uint8_t *buf = malloc((size_t)end + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)end, 0), end);
    *len = (size_t)end;
    return buf;
}

/* Turn server frames into client frames (add a mask) so our parser takes them. */
static size_t mask_frames(const uint8_t *in, size_t len, uint8_t *out)
{
    size_t i = 0, o = 0;
    while (i < len) {
        uint8_t len7 = in[i + 1] & 0x7F;
        assert_int_equal(in[i + 1] & 0x80, 0); /* server frames are never masked */
        size_t h = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
        uint64_t plen = len7;
        if (len7 == 126)
            plen = (uint64_t)in[i + 2] << 8 | in[i + 3];
        if (len7 == 127) {
            plen = 0;
            for (int k = 0; k < 8; k++)
                plen = plen << 8 | in[i + 2 + k];
        }
        assert_true(i + h + plen <= len);
        o += client_frame(out + o, in[i], in + i + h, (size_t)plen, key2);
        /* client_frame re-derives the same length encoding */
        i += h + (size_t)plen;
    }
    return o;
}

static void send_round_trip(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    int fd = fileno(f); /* not a socket: exercises the writev fallback */
    size_t big = 70000;
    uint8_t *payload = malloc(big);
    assert_non_null(payload);
    for (size_t i = 0; i < big; i++)
        payload[i] = (uint8_t)(i ^ (i >> 8));

    assert_int_equal(srv_ws_send(fd, WS_OP_TEXT, "Hello", 5), 0);
    assert_int_equal(srv_ws_send(fd, WS_OP_BINARY, payload, 300), 0);
    assert_int_equal(srv_ws_send(fd, WS_OP_BINARY, payload, big), 0);
    assert_int_equal(srv_ws_send(fd, WS_OP_PING, NULL, 0), 0);
    assert_int_equal(srv_ws_send(fd, WS_OP_PONG, payload, WS_MAX_CONTROL), 0);
    assert_int_equal(srv_ws_send_close(fd, 1001, "going away"), 0);

    /* Refused before anything is written. */
    assert_int_equal(srv_ws_send(fd, WS_OP_PING, payload, WS_MAX_CONTROL + 1), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(srv_ws_send(fd, WS_OP_TEXT, NULL, 1), -1);

    size_t len;
    uint8_t *wire = slurp(fd, &len);
    assert_int_equal(len, (2 + 5) + (4 + 300) + (10 + big) + 2 + (2 + 125) + (2 + 12));
    assert_memory_equal(wire, "\x81\x05Hello", 7);

    uint8_t *masked = malloc(len + 6 * 4);
    assert_non_null(masked);
    size_t mlen = mask_frames(wire, len, masked);
    for (size_t chunk = 7; chunk <= mlen; chunk *= 3) {
        ws_parser p;
        recorder r = { 0 };
        srv_ws_parser_init(&p, big);
        assert_int_equal(feed_chunked(&p, masked, mlen, chunk, &r), 0);
        assert_int_equal(r.n, 6);
        assert_event(&r, 0, WS_OP_TEXT, "Hello", 5);
        assert_event(&r, 1, WS_OP_BINARY, payload, 300);
        assert_event(&r, 2, WS_OP_BINARY, payload, big);
        assert_event(&r, 3, WS_OP_PING, "", 0);
        assert_event(&r, 4, WS_OP_PONG, payload, WS_MAX_CONTROL);
        assert_event(&r, 5, WS_OP_CLOSE, "\x03\xe9going away", 12);
        assert_int_equal(p.peer_close_code, 1001);
        recorder_free(&r);
        srv_ws_parser_free(&p);
    }
    free(masked);
    free(wire);
    free(payload);
    fclose(f);
}

static void send_close_variants(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);

    /* 70 two-byte characters: the 123-byte cut would split the 62nd, so
     * the reason backs up to 122 bytes (61 whole characters). */
    char reason[200] = "";
    for (int i = 0; i < 70; i++)
        strcat(reason, "\xc3\xa9");
    assert_int_equal(srv_ws_send_close(sv[0], 1000, reason), 0);
    assert_int_equal(srv_ws_send_close(sv[0], 0, "ignored"), 0);
    assert_int_equal(srv_ws_send_close(sv[0], 1011, NULL), 0);

    uint8_t buf[256];
    ssize_t n = read(sv[1], buf, sizeof buf);
    assert_int_equal(n, (2 + 2 + 122) + 2 + (2 + 2));
    assert_memory_equal(buf, "\x88\x7c\x03\xe8", 4);
    assert_memory_equal(buf + 4, reason, 122);
    assert_memory_equal(buf + 126, "\x88\x00", 2);
    assert_memory_equal(buf + 128, "\x88\x02\x03\xf3", 4);

    /* Round-trip the long close: its reason must still be valid UTF-8. */
    uint8_t masked[300];
    size_t mlen = mask_frames(buf, (size_t)n, masked);
    ws_parser p;
    recorder r = { 0 };
    srv_ws_parser_init(&p, 16);
    assert_int_equal(srv_ws_parser_feed(&p, masked, mlen, record, &r), 0);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.ev[0].len, 124);
    assert_int_equal(p.peer_close_code, 1011);
    recorder_free(&r);
    srv_ws_parser_free(&p);

    /* A vanished peer is EPIPE, not a SIGPIPE that kills the test. */
    close(sv[1]);
    assert_int_equal(srv_ws_send(sv[0], WS_OP_TEXT, "late", 4), -1);
    assert_int_equal(errno, EPIPE);
    close(sv[0]);
}

/* A reader slower than the writer, so a non-blocking socket hits EAGAIN. */
typedef struct {
    int fd;
    uint8_t *buf;
    size_t len, cap;
} slow_reader;

static void *read_slowly(void *arg)
{
    slow_reader *sr = arg;
    for (;;) {
        usleep(200);
        size_t room = sr->cap - sr->len < 4096 ? sr->cap - sr->len : 4096;
        ssize_t n = read(sr->fd, sr->buf + sr->len, room);
        if (n <= 0)
            break;
        sr->len += (size_t)n;
    }
    return NULL;
}

static void send_waits_on_nonblocking_socket(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    size_t big = 1 << 20;
    uint8_t *payload = malloc(big);
    assert_non_null(payload);
    for (size_t i = 0; i < big; i++)
        payload[i] = (uint8_t)(i * 13);
    slow_reader sr = { .fd = sv[1], .cap = big + 64 };
    sr.buf = malloc(sr.cap);
    assert_non_null(sr.buf);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_slowly, &sr), 0);
    assert_int_equal(srv_ws_send(sv[0], WS_OP_BINARY, payload, big), 0);
    close(sv[0]);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(sr.len, 10 + big);
    assert_memory_equal(sr.buf, "\x82\x7f\x00\x00\x00\x00\x00\x10\x00\x00", 10);
    assert_memory_equal(sr.buf + 10, payload, big);
    close(sv[1]);
    free(sr.buf);
    free(payload);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accept_key_rfc_example),
        cmocka_unit_test(accept_key_rejects_bad_keys),
        cmocka_unit_test(rfc_single_masked_hello),
        cmocka_unit_test(rfc_masked_pong),
        cmocka_unit_test(fragmented_with_ping_between),
        cmocka_unit_test(every_chunk_size),
        cmocka_unit_test(close_without_code_and_empty_messages),
        cmocka_unit_test(extended_lengths),
        cmocka_unit_test(rejects_unmasked),
        cmocka_unit_test(rejects_reserved_bits_and_opcodes),
        cmocka_unit_test(rejects_bad_control_frames),
        cmocka_unit_test(rejects_bad_fragment_sequences),
        cmocka_unit_test(rejects_64bit_length_msb),
        cmocka_unit_test(rejects_invalid_utf8_text),
        cmocka_unit_test(rejects_too_big),
        cmocka_unit_test(callback_stops_feeding),
        cmocka_unit_test(frame_header_lengths),
        cmocka_unit_test(send_round_trip),
        cmocka_unit_test(send_close_variants),
        cmocka_unit_test(send_waits_on_nonblocking_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
