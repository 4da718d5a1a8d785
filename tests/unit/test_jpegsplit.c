/* test_jpegsplit.c: the live view's JPEG splitter (src/server/jpegsplit.c):
 * whole images out of a stream read in arbitrary pieces: a marker split
 * across reads, 0xFF stuffing and restart markers in the scan, a segment
 * body holding FF D9, garbage before SOI, an image past the size bound,
 * bytes that are not a JPEG after SOI. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "server/jpegsplit.h"

/* A minimal JPEG's shape: SOI, an APP0 segment, SOS (its header), scan
 * data with a stuffed FF 00 and a restart marker, EOI.  The splitter walks
 * markers, it does not decode. */
static const uint8_t jpeg_a[] = {
    0xFF, 0xD8,                                     /* SOI */
    0xFF, 0xE0, 0x00, 0x06, 'J', 'F', 0xFF, 0xD9,   /* APP0 whose body holds FF D9 */
    0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02,             /* SOS, 2 header bytes */
    0x11, 0xFF, 0x00, 0x22, 0xFF, 0xD0, 0x33, 0xFF, 0xFF, 0xD1, 0x44,   /* scan: stuffing, RST0, fill, RST1 */
    0xFF, 0xD9,                                     /* EOI */
};
static const uint8_t jpeg_b[] = { 0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x55, 0xFF, 0xD9 };

typedef struct {
    size_t n, len[8];
    uint8_t data[8][64];
    int end;                        /* 0, -1 (not a JPEG), or -errno of space() */
} got;

/* Feed `in` in pieces of `piece` bytes (0: as much as there is room for). */
static void feed(srv_jpegsplit *j, const uint8_t *in, size_t n, size_t piece, got *g)
{
    memset(g, 0, sizeof *g);
    size_t at = 0;
    while (at < n) {
        size_t room;
        uint8_t *dst = srv_jpegsplit_space(j, &room);
        if (!dst) {
            g->end = -errno;
            return;
        }
        size_t k = piece && piece < room ? piece : room;
        if (k > n - at)
            k = n - at;
        memcpy(dst, in + at, k);
        srv_jpegsplit_wrote(j, k);
        at += k;
        const uint8_t *f;
        size_t len;
        int r;
        while ((r = srv_jpegsplit_next(j, &f, &len)) > 0) {
            assert_true(g->n < 8 && len <= sizeof g->data[0]);
            memcpy(g->data[g->n], f, len);
            g->len[g->n++] = len;
        }
        if (r < 0) {
            g->end = -1;
            return;
        }
    }
}

static void assert_frame(const got *g, size_t i, const uint8_t *want, size_t len)
{
    assert_true(i < g->n);
    assert_int_equal(g->len[i], len);
    assert_memory_equal(g->data[i], want, len);
}

static void two_images_whatever_the_read_size(void **state)
{
    (void)state;
    uint8_t in[sizeof jpeg_a + sizeof jpeg_b];
    memcpy(in, jpeg_a, sizeof jpeg_a);
    memcpy(in + sizeof jpeg_a, jpeg_b, sizeof jpeg_b);
    /* Every piece size splits some marker (FF | D9, FF | 00, the length's
     * two bytes) across reads somewhere. */
    for (size_t piece = 0; piece <= sizeof in; piece++) {
        srv_jpegsplit j;
        srv_jpegsplit_init(&j, 1024);
        got g;
        feed(&j, in, sizeof in, piece, &g);
        assert_int_equal(g.end, 0);
        assert_int_equal(g.n, 2);
        assert_frame(&g, 0, jpeg_a, sizeof jpeg_a);
        assert_frame(&g, 1, jpeg_b, sizeof jpeg_b);
        assert_int_equal(j.skipped, 0);
        srv_jpegsplit_free(&j);
    }
}

static void stuffing_and_segment_bodies_do_not_end_an_image(void **state)
{
    (void)state;
    /* Cut just before the real EOI: FF D9 in APP0's body, FF 00 and the
     * restart markers in the scan are no end. */
    assert_int_equal(srv_jpegsplit_end(jpeg_a, sizeof jpeg_a - 2), 0);
    assert_int_equal(srv_jpegsplit_end(jpeg_a, sizeof jpeg_a - 1), 0);
    assert_int_equal(srv_jpegsplit_end(jpeg_a, sizeof jpeg_a), (long)sizeof jpeg_a);
}

static void garbage_before_soi_is_skipped_and_counted(void **state)
{
    (void)state;
    uint8_t in[64];
    const uint8_t junk[] = { 'n', 'o', 0xFF, 0xFF, 0x00, 0xD8, 0xFF };   /* an FF last: maybe half an SOI */
    memcpy(in, junk, sizeof junk);
    memcpy(in + sizeof junk, jpeg_b, sizeof jpeg_b);
    for (size_t piece = 0; piece < 4; piece++) {
        srv_jpegsplit j;
        srv_jpegsplit_init(&j, 1024);
        got g;
        feed(&j, in, sizeof junk + sizeof jpeg_b, piece, &g);
        assert_int_equal(g.end, 0);
        assert_int_equal(g.n, 1);
        assert_frame(&g, 0, jpeg_b, sizeof jpeg_b);
        assert_int_equal(j.skipped, sizeof junk);
        srv_jpegsplit_free(&j);
    }
}

static void an_image_past_the_bound_is_an_error(void **state)
{
    (void)state;
    uint8_t in[200];
    memcpy(in, jpeg_b, 7);                          /* SOI, SOS, then scan bytes without an end */
    memset(in + 7, 0x11, sizeof in - 7);
    srv_jpegsplit j;
    srv_jpegsplit_init(&j, 64);
    got g;
    feed(&j, in, sizeof in, 5, &g);
    assert_int_equal(g.end, -EFBIG);
    assert_int_equal(g.n, 0);
    assert_true(j.cap <= 64);
    srv_jpegsplit_free(&j);
    /* An image of exactly the bound fits. */
    uint8_t exact[64];
    memcpy(exact, jpeg_b, 7);
    memset(exact + 7, 0x11, sizeof exact - 9);
    exact[62] = 0xFF, exact[63] = 0xD9;
    srv_jpegsplit_init(&j, 64);
    feed(&j, exact, sizeof exact, 0, &g);
    assert_int_equal(g.end, 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.len[0], 64);
    srv_jpegsplit_free(&j);
}

static void not_a_jpeg_after_soi_is_an_error(void **state)
{
    (void)state;
    const uint8_t no_marker[] = { 0xFF, 0xD8, 0x00, 0x00 };
    const uint8_t short_len[] = { 0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01 };
    assert_int_equal(srv_jpegsplit_end(no_marker, sizeof no_marker), -1);
    assert_int_equal(srv_jpegsplit_end(short_len, sizeof short_len), -1);
    srv_jpegsplit j;
    srv_jpegsplit_init(&j, 1024);
    got g;
    feed(&j, short_len, sizeof short_len, 1, &g);
    assert_int_equal(g.end, -1);
    srv_jpegsplit_free(&j);
}

static void reset_forgets_what_is_held(void **state)
{
    (void)state;
    srv_jpegsplit j;
    srv_jpegsplit_init(&j, 1024);
    got g;
    feed(&j, jpeg_a, 10, 0, &g);                    /* half an image of the old source */
    assert_int_equal(g.n, 0);
    srv_jpegsplit_reset(&j);
    feed(&j, jpeg_b, sizeof jpeg_b, 0, &g);
    assert_int_equal(g.n, 1);
    assert_frame(&g, 0, jpeg_b, sizeof jpeg_b);
    srv_jpegsplit_free(&j);
}

/* An image that arrives a few bytes a read (a slow or hostile source in
 * the cell) is walked once, not again from its SOI at every read: the
 * walk resumes where the last one stopped, so the daemon's work is linear
 * in the bytes, where a rewalk would be len x reads (for an 8 MiB image
 * a byte a read, about 3.5e13 bytes looked at).  walked counts them. */
static void a_slowly_arriving_image_is_walked_once(void **state)
{
    (void)state;
    enum { SEGS = 500, SCAN = 60000 };
    static uint8_t in[2 + SEGS * 8 + 6 + SCAN + 2];
    size_t n = 0;
    in[n++] = 0xFF, in[n++] = 0xD8;
    for (int i = 0; i < SEGS; i++) {                /* APP1 segments whose bodies hold FF D9 */
        const uint8_t seg[8] = { 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0xFF, 0xD8 };
        memcpy(in + n, seg, sizeof seg);
        n += sizeof seg;
    }
    const uint8_t sos[6] = { 0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02 };
    memcpy(in + n, sos, sizeof sos);
    n += sizeof sos;
    for (int i = 0; i < SCAN; i++)                  /* scan data with stuffing and restart markers */
        in[n++] = i % 97 == 0 ? 0xFF : i % 97 == 1 ? (i % 3 ? 0x00 : 0xD3) : 0x5A;
    in[n++] = 0xFF, in[n++] = 0xD9;
    assert_int_equal(n, sizeof in);
    for (size_t piece = 1; piece <= 7; piece += 3) {
        srv_jpegsplit j;
        srv_jpegsplit_init(&j, 1 << 20);
        size_t at = 0, frames = 0, flen = 0;
        while (at < n) {
            size_t room;
            uint8_t *dst = srv_jpegsplit_space(&j, &room);
            assert_non_null(dst);
            size_t k = piece < room ? piece : room;
            if (k > n - at)
                k = n - at;
            memcpy(dst, in + at, k);
            srv_jpegsplit_wrote(&j, k);
            at += k;
            const uint8_t *f;
            size_t len;
            int r;
            while ((r = srv_jpegsplit_next(&j, &f, &len)) > 0) {
                assert_memory_equal(f, in, len);
                frames++;
                flen = len;
            }
            assert_int_equal(r, 0);
        }
        assert_int_equal(frames, 1);
        assert_int_equal(flen, n);
        assert_true(j.walked <= 2 * n);
        srv_jpegsplit_free(&j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(two_images_whatever_the_read_size),
        cmocka_unit_test(stuffing_and_segment_bodies_do_not_end_an_image),
        cmocka_unit_test(garbage_before_soi_is_skipped_and_counted),
        cmocka_unit_test(an_image_past_the_bound_is_an_error),
        cmocka_unit_test(not_a_jpeg_after_soi_is_an_error),
        cmocka_unit_test(reset_forgets_what_is_held),
        cmocka_unit_test(a_slowly_arriving_image_is_walked_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
