/* untar.h: parsing a tar upload in a confined program of its own, cell-untar
 * (src/untar/main.c), which untar.c runs and reads. */
#ifndef CELL_RUNTIME_UNTAR_H
#define CELL_RUNTIME_UNTAR_H

#include "cell.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum {
    UNTAR_DIR = 1, UNTAR_FILE, UNTAR_SYMLINK, UNTAR_HARDLINK, UNTAR_OTHER, /* entries */
    UNTAR_DATA, UNTAR_DATA_END, UNTAR_DONE, UNTAR_ERROR,
};

/* The parser's frames: a header, then len bytes (a name, data or an error
 * message) and len2 bytes (a link target). */
struct untar_frame {
    uint32_t kind, mode, len, len2;     /* mode: perm bits, or errno for UNTAR_ERROR */
    uint64_t off;                       /* UNTAR_DATA: offset in the file; an entry:
                                           its uid << 32 | gid */
};
#define UNTAR_BLOCK (1u << 20)          /* data frames carry at most this much */

typedef struct runtime_untar {
    int    fd;
    pid_t  pid;
    char  *buf;        /* the last frame's payload */
    size_t cap;
} runtime_untar;

typedef struct runtime_untar_entry {
    uint32_t    kind;  /* UNTAR_DIR .. UNTAR_OTHER */
    uint32_t    perm;
    const char *name;  /* valid until the next call */
    const char *link;  /* symlink or hard link target, or "" */
    uint32_t    uid, gid; /* as the tar says (UINT32_MAX: out of range) */
} runtime_untar_entry;

/* Start the parser on tar_fd (which it reads; the caller keeps its copy). */
int  runtime_untar_start(int tar_fd, runtime_untar *u, cell_error *err);
/* 1 and the next entry, 0 at the end of the archive, -1 with *err (a
 * malformed archive is EBADMSG, as libarchive words it). */
int  runtime_untar_next(runtime_untar *u, runtime_untar_entry *e, cell_error *err);
/* After a UNTAR_FILE entry: 1 and a block of its data, 0 after the last. */
int  runtime_untar_data(runtime_untar *u, const void **buf, size_t *len, uint64_t *off, cell_error *err);
/* Stop (kill) and reap the parser. */
void runtime_untar_end(runtime_untar *u);

#endif
