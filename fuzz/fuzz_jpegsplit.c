/* fuzz_jpegsplit.c: libFuzzer target for the live view's JPEG splitter
 * (src/server/jpegsplit.c), which cuts what the frame source (ffmpeg, run
 * inside the cell, so its output is the cell's to shape) writes into images.
 *
 * The input is the stream; its first byte picks the read sizes.  The same
 * stream is split twice, in reads of that size pattern and one byte at a
 * time, with a small frame bound (so the over-the-bound path is reached
 * within -max_len); both must give the same images and the same end, and
 * every image must start with SOI, end with EOI and fit the bound. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/jpegsplit.h"

#define FUZZ_MAX 1024               /* the frame bound in the fuzzer */
#define FUZZ_FRAMES 4096

typedef struct {
    size_t   n;
    size_t   len[FUZZ_FRAMES];
    uint32_t sum[FUZZ_FRAMES];      /* a checksum of each image */
    int      end;                   /* 0 input used up, -1 not a JPEG, -2 over the bound */
} outcome;

static uint32_t checksum(const uint8_t *b, size_t n)
{
    uint32_t h = 2166136261u;       /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

static void split(const uint8_t *data, size_t size, uint8_t pattern, outcome *o)
{
    srv_jpegsplit j;
    srv_jpegsplit_init(&j, FUZZ_MAX);
    memset(o, 0, sizeof *o);
    size_t at = 0, step = 0;
    while (at < size && !o->end) {
        size_t room;
        uint8_t *dst = srv_jpegsplit_space(&j, &room);
        if (!dst) {
            o->end = -2;
            break;
        }
        /* pattern 0: one byte a read; else reads of 1..pattern bytes, varying. */
        size_t want = pattern ? 1 + (step++ * 7 + pattern) % pattern : 1;
        if (want > room)
            want = room;
        if (want > size - at)
            want = size - at;
        memcpy(dst, data + at, want);
        srv_jpegsplit_wrote(&j, want);
        at += want;
        const uint8_t *f;
        size_t len;
        int r;
        while ((r = srv_jpegsplit_next(&j, &f, &len)) > 0) {
            if (len < 4 || len > FUZZ_MAX || f[0] != 0xFF || f[1] != 0xD8 || f[len - 2] != 0xFF || f[len - 1] != 0xD9)
                abort();
            if (o->n == FUZZ_FRAMES)
                abort();            /* 4 bytes an image at least: cannot happen within -max_len */
            o->len[o->n] = len;
            o->sum[o->n++] = checksum(f, len);
        }
        if (r < 0)
            o->end = -1;
    }
    /* When the input ended with bytes held, the buffer never passes the bound. */
    if (j.len - j.done > FUZZ_MAX)
        abort();
    srv_jpegsplit_free(&j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static outcome a, b;
    split(data + 1, size - 1, data[0], &a);
    split(data + 1, size - 1, 0, &b);
    /* The over-the-bound end can come at different points of a stream
     * split differently only if it ends the stream's images the same way. */
    if (a.end != b.end || a.n != b.n || memcmp(a.len, b.len, a.n * sizeof a.len[0]) != 0 ||
        memcmp(a.sum, b.sum, a.n * sizeof a.sum[0]) != 0)
        abort();
    return 0;
}
