/* rundiff.h: the parts of rundiff.c that are pure functions of bytes, for
 * its unit test (tests/unit/test_rundiff.c): the reader of the diff
 * script's output (src/server/rundiff.sh) and of git apply's complaints.
 * Everything they read comes from a hostile cell. */
#ifndef CELL_SERVER_RUNDIFF_H
#define CELL_SERVER_RUNDIFF_H

#include "server/runs.h"

/* changedFiles kept in a result, and bytes of each listing read for them. */
#define RUNDIFF_FILES_MAX   10000
#define RUNDIFF_LIST_MAX    (4u << 20)

typedef struct rundiff_reader rundiff_reader;

/* A reader writing the patch to patch_fd (-1: none) up to lim->artifact_max. */
rundiff_reader *srv_rundiff_reader_new(const rundiff_limits *lim, int patch_fd);
/* The next bytes of the script's stdout: 0 to go on, 1 when the artifact
 * is full (the rest is not wanted: stop the script), -1 with err. */
int  srv_rundiff_reader_feed(rundiff_reader *rd, const void *data, size_t len, cell_error *err);
/* The script's output ended: the result's fields into `out` (see runs.h);
 * `url` is the artifact's URL (NULL: none).  -1 with err if the output
 * was cut short or malformed. */
int  srv_rundiff_reader_end(rundiff_reader *rd, const char *url, json_t *out, cell_error *err);
void srv_rundiff_reader_free(rundiff_reader *rd);

/* The paths git apply's error lines name (a new array of strings, at most
 * 100, invalid UTF-8 replaced). */
json_t *srv_rundiff_conflicts(const char *text, size_t len);

#endif
