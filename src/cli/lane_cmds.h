/* lane_cmds.h: `cell lane ...` (store_cmds.c parses, runs the local ones;
 * lane_remote.c sends them to the daemon's /v1/lanes with --url). */
#ifndef CELL_CLI_LANE_CMDS_H
#define CELL_CLI_LANE_CMDS_H

#include <stdint.h>

#include "cli/cli.h"

struct lane_args {
    const char *sub;        /* create, ls, rm, export, import, commit */
    const char *name;       /* the lane (all but ls) */
    const char *image;      /* create, import: --image; commit: the new image's name */
    uint64_t    size;       /* create, import: --size in bytes, 0 = none */
};

extern const char cli_lane_usage[];

/* The lane command `a` against the daemon; an exit code (printed). */
int cli_lane_remote(struct cli_global *g, const struct lane_args *a);
/* "YYYY-MM-DD HH:MM:SS" of ms since the epoch, SIZE as "NM" or "-" and
 * "yes"/"no": one row of `cell lane ls` (header with name NULL). */
void cli_lane_print_row(const char *name, const char *image, long long created_ms, uint64_t size, int attached);

#endif
