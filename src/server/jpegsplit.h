/* jpegsplit.h: cutting a stream of concatenated JPEG images (ffmpeg's
 * `-f mjpeg` output, the desktop live view's frame source) into whole
 * images, with a bound on one image's size (jpegsplit.c).
 *
 * Use: read into srv_jpegsplit_space(), tell srv_jpegsplit_wrote() how much
 * came, then take frames with srv_jpegsplit_next() until it answers 0. */
#ifndef CELL_SERVER_JPEGSPLIT_H
#define CELL_SERVER_JPEGSPLIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct srv_jpegsplit {
    uint8_t *buf;
    size_t   len, cap;      /* bytes held, allocated */
    size_t   done;          /* bytes at the front already handed out or skipped */
    size_t   max;           /* the most one image may take */
    uint64_t skipped;       /* bytes dropped before an SOI (not part of any image) */
    size_t   at;            /* the walk of the image at done: where it resumes (0: at its SOI) */
    int      in_scan;       /* ... inside entropy-coded data (after an SOS) */
    uint64_t walked;        /* bytes the marker walk looked at: about len, never len x reads */
} srv_jpegsplit;

void srv_jpegsplit_init(srv_jpegsplit *j, size_t max);
void srv_jpegsplit_free(srv_jpegsplit *j);
/* Forget what is held (a new source starts). */
void srv_jpegsplit_reset(srv_jpegsplit *j);

/* Where the next read goes and how much fits there (*room > 0).  NULL
 * with errno EFBIG when `max` bytes are held and no image has ended in
 * them (an image over the bound), ENOMEM when the buffer cannot grow. */
uint8_t *srv_jpegsplit_space(srv_jpegsplit *j, size_t *room);
/* n bytes were read into the space. */
void srv_jpegsplit_wrote(srv_jpegsplit *j, size_t n);

/* The next whole image: 1 and *frame, *len (valid until the next call of
 * any srv_jpegsplit_ function); 0 when more bytes are needed; -1 when the
 * bytes after an SOI are not a JPEG's marker structure (the source is not
 * writing JPEG).  Bytes before an SOI are skipped and counted. */
int srv_jpegsplit_next(srv_jpegsplit *j, const uint8_t **frame, size_t *len);

/* The length of the whole JPEG at the start of b, 0 when more bytes are
 * needed, -1 when b does not start with one. */
long srv_jpegsplit_end(const uint8_t *b, size_t n);

#endif
