/* stream.h: a response body written by a worker thread into a pipe.
 * The worker runs detached; it must stop when a write fails (client gone). */
#ifndef CELL_SERVER_STREAM_H
#define CELL_SERVER_STREAM_H

#include <microhttpd.h>
#include "server/server_internal.h"

typedef void (*pipe_job_fn)(int fd, void *arg);

/* Start `run(fd, arg)` on a thread and return a response that streams what
 * it writes; arg_free(arg) runs when the worker is done (also on failure).
 * The stream is r's: long-lived (no idle timeout), ended when r's token is
 * revoked or the daemon stops. */
struct MHD_Response *stream_from_job(sreq *r, pipe_job_fn run, void *arg, void (*arg_free)(void *), cell_error *err);

#endif
