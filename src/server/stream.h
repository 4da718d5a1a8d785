/* stream.h: a response body written by a worker thread into a pipe.
 * The worker runs detached; it must stop when a write fails (client gone). */
#ifndef CELL_SERVER_STREAM_H
#define CELL_SERVER_STREAM_H

#include <microhttpd.h>
#include "server/server_internal.h"

/* 0 when what it wrote is whole, -1 when it stopped part-way. */
typedef int (*pipe_job_fn)(int fd, void *arg);

/* Start `run(fd, arg)` on a thread and return a response that streams what
 * it writes; arg_free(arg) runs when the worker is done (also on failure).
 * A run that returns -1 ends the response with an error (the connection
 * closes without the chunked body's end), so a client never takes a body
 * cut short for a whole one: the status went out before the work did.
 * The stream is r's: long-lived (no idle timeout), ended when r's token is
 * revoked or the daemon stops. */
struct MHD_Response *srv_stream_from_job(sreq *r, pipe_job_fn run, void *arg, void (*arg_free)(void *), cell_error *err);

#endif
