/* fuzz_ws.c: libFuzzer target for the WebSocket frame parser, which reads
 * bytes straight from untrusted clients.  Checks the result is split-invariant. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/ws.h"

/* What a parse delivered, folded into a hash so two parses can be compared. */
typedef struct {
    size_t max;
    uint64_t hash;
    size_t count;
} digest;

static void mix(digest *d, const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        d->hash = (d->hash ^ p[i]) * 0x100000001b3ull; /* FNV-1a */
}

static int on_message(void *user, int opcode, const uint8_t *payload, size_t len)
{
    digest *d = user;
    assert(payload && payload[len] == 0);
    switch (opcode) {
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        assert(len <= d->max);
        break;
    case WS_OP_CLOSE:
        assert(len != 1);
        /* fall through */
    case WS_OP_PING:
    case WS_OP_PONG:
        assert(len <= WS_MAX_CONTROL);
        break;
    default:
        assert(!"unexpected opcode");
    }
    uint8_t op = (uint8_t)opcode;
    mix(d, &op, 1);
    mix(d, (const uint8_t *)&len, sizeof len);
    mix(d, payload, len);
    d->count++;
    /* Stop at a close, as the daemon does, to exercise the early return. */
    return opcode == WS_OP_CLOSE ? 7 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Byte 0: message limit; bytes 1-4: seed for the chunk sizes; rest: the stream. */
    if (size < 5)
        return 0;
    static const size_t limits[] = { 0, 1, 16, 125, 126, 4096, 65536, 1 << 20 };
    size_t max = limits[data[0] & 7];
    uint32_t seed = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 | (uint32_t)data[4] << 24;
    data += 5;
    size -= 5;

    /* Reference: the whole stream in one call. */
    ws_parser whole;
    digest dw = { .max = max, .hash = 0xcbf29ce484222325ull };
    srv_ws_parser_init(&whole, max);
    int rw = srv_ws_parser_feed(&whole, data, size, on_message, &dw);

    /* The same stream in pseudo-random chunks (often single bytes). */
    ws_parser split;
    digest ds = { .max = max, .hash = 0xcbf29ce484222325ull };
    srv_ws_parser_init(&split, max);
    int rs = 0;
    size_t off = 0;
    while (off < size) {
        seed = seed * 1103515245u + 12345u;
        uint32_t r = seed >> 16;
        size_t chunk = (r & 3) == 0 ? 1 : 1 + (r >> 2) % (1u << ((r >> 8) % 12));
        if (chunk > size - off)
            chunk = size - off;
        rs = srv_ws_parser_feed(&split, data + off, chunk, on_message, &ds);
        off += chunk;
        if (rs)
            break;
    }

    assert(rw == rs);
    assert(dw.count == ds.count && dw.hash == ds.hash);
    if (rw == -1) {
        assert(whole.close_code == split.close_code);
        assert(whole.close_code == WS_CLOSE_PROTOCOL || whole.close_code == WS_CLOSE_TOO_BIG ||
               whole.close_code == WS_CLOSE_BAD_DATA || whole.close_code == WS_CLOSE_INTERNAL);
    }
    srv_ws_parser_free(&whole);
    srv_ws_parser_free(&split);
    return 0;
}
