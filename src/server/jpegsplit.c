/* jpegsplit.c: cut a byte stream of JPEG images into whole images.
 *
 * Why by markers and not by looking for FF D9: a marker segment's body
 * (an EXIF or ICC block, a quantisation table) may hold any byte, FF D9
 * included, so the segments are walked by their lengths; in the
 * entropy-coded data after SOS a 0xFF byte is stuffed as FF 00 and FF D0-D7
 * are restart markers, so only another marker there ends the scan, and
 * only FF D9 between segments ends the image.  The buffer is bounded: a
 * source that writes more than `max` bytes without ending an image is an
 * error, never unbounded memory (the daemon holds this per viewer), and the
 * walk of an image that arrives in many reads resumes where it stopped
 * rather than starting again at its SOI, so the daemon's work is linear in
 * the bytes a source (a program in the cell) writes, however it slices them. */
#include "server/jpegsplit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* What the buffer grows by at least: one read of a pipe's worth. */
#define JPEGSPLIT_CHUNK 65536

void srv_jpegsplit_init(srv_jpegsplit *j, size_t max)
{
    *j = (srv_jpegsplit){ .max = max };
}

void srv_jpegsplit_free(srv_jpegsplit *j)
{
    free(j->buf);
    *j = (srv_jpegsplit){ .max = j->max };
}

void srv_jpegsplit_reset(srv_jpegsplit *j)
{
    j->len = j->done = j->at = 0;
    j->in_scan = 0;
}

/* Walk the image at the start of b from *at (0: its SOI), *in_scan telling
 * whether *at is inside entropy-coded data.  The length of the image, 0
 * when more bytes are needed (*at, *in_scan: where the walk resumes once
 * they are there, so bytes already walked are not walked again), -1 when
 * b is not a JPEG's marker structure. */
static long jpeg_walk(const uint8_t *b, size_t n, size_t *at, int *in_scan)
{
    if (*at == 0) {
        if (n < 2)
            return 0;
        if (b[0] != 0xFF || b[1] != 0xD8)
            return -1;
        *at = 2;
        *in_scan = 0;
    }
    size_t i = *at;
    for (;;) {
        if (*in_scan) {
            /* After SOS: entropy-coded data until a real marker. */
            for (;; i++) {
                if (i + 1 >= n) {
                    *at = i;
                    return 0;
                }
                if (b[i] != 0xFF)
                    continue;
                uint8_t x = b[i + 1];
                if (x == 0x00 || x == 0xFF || (x >= 0xD0 && x <= 0xD7))
                    continue;
                break;                      /* EOI, or another segment (a progressive JPEG) */
            }
            *in_scan = 0;
        }
        /* A marker segment: a walk that needs more bytes resumes here. */
        *at = i;
        if (i + 2 > n)
            return 0;
        if (b[i] != 0xFF)
            return -1;
        uint8_t m = b[i + 1];
        if (m == 0xFF) {                    /* fill byte */
            i++;
            continue;
        }
        if (m == 0xD9)
            return (long)(i + 2);
        if ((m >= 0xD0 && m <= 0xD7) || m == 0x01) {
            i += 2;                         /* markers without a length */
            continue;
        }
        if (i + 4 > n)
            return 0;
        size_t len = (size_t)b[i + 2] << 8 | b[i + 3];
        if (len < 2)
            return -1;
        if (i + 2 + len > n)
            return 0;
        i += 2 + len;
        *in_scan = m == 0xDA;
    }
}

long srv_jpegsplit_end(const uint8_t *b, size_t n)
{
    size_t at = 0;
    int in_scan = 0;
    return jpeg_walk(b, n, &at, &in_scan);
}

uint8_t *srv_jpegsplit_space(srv_jpegsplit *j, size_t *room)
{
    /* What was handed out goes first: the frame pointer's validity ends here. */
    if (j->done) {
        memmove(j->buf, j->buf + j->done, j->len - j->done);
        j->len -= j->done;
        j->done = 0;
    }
    if (j->cap - j->len < JPEGSPLIT_CHUNK && j->cap < j->max) {
        size_t cap = j->cap ? j->cap * 2 : 4 * JPEGSPLIT_CHUNK;
        if (cap > j->max)
            cap = j->max;
        uint8_t *nb = realloc(j->buf, cap);
        if (!nb) {
            errno = ENOMEM;
            return NULL;
        }
        j->buf = nb;
        j->cap = cap;
    }
    if (j->len >= j->cap) {
        errno = EFBIG;                      /* max bytes and no image ended in them */
        return NULL;
    }
    *room = j->cap - j->len;
    return j->buf + j->len;
}

void srv_jpegsplit_wrote(srv_jpegsplit *j, size_t n)
{
    j->len += n;
}

int srv_jpegsplit_next(srv_jpegsplit *j, const uint8_t **frame, size_t *len)
{
    uint8_t *b = j->buf + j->done;
    size_t n = j->len - j->done;
    /* Garbage before an SOI is dropped: up to the next FF D8, keeping a
     * last FF that may be the first half of one. */
    size_t skip = 0;
    while (skip + 1 < n && !(b[skip] == 0xFF && b[skip + 1] == 0xD8))
        skip++;
    if (skip + 1 == n && b[skip] != 0xFF)
        skip++;
    j->done += skip;
    j->skipped += skip;
    b += skip;
    n -= skip;
    if (skip)
        j->at = 0, j->in_scan = 0;          /* (a walk in progress starts at done: skip is 0 then) */
    size_t from = j->at;
    long end = jpeg_walk(b, n, &j->at, &j->in_scan);
    j->walked += (end > 0 ? (size_t)end : j->at) - from;
    if (end <= 0)
        return end < 0 ? -1 : 0;
    *frame = b;
    *len = (size_t)end;
    j->done += (size_t)end;
    j->at = 0;                              /* the next image's walk starts at its SOI */
    j->in_scan = 0;
    return 1;
}
