/* acp.h: the daemon's own ACP client (acp.c), for runs (rundrive.c).  The
 * instance it opens is an ordinary listed ACP server of the cell, so
 * GET /cells/{cell}/v1/acp/{id} follows it like any other. */
#ifndef CELL_SERVER_ACP_H
#define CELL_SERVER_ACP_H

#include "server/server_internal.h"

typedef struct acp_inst acp_client;

/* Each message from the agent other than the answer being waited for:
 * notifications, the agent's requests (answer with srv_acp_client_respond)
 * and stray responses.  `msg` is borrowed. */
typedef void (*acp_client_fn)(void *user, json_t *msg);
/* Asked between waits (at least every 250 ms): non-zero ends the wait. */
typedef int (*acp_client_stop_fn)(void *user);

/* Start `agent`'s launcher in the cell (installed already) as server `id`
 * and list it.  EEXIST: the id is taken; ECONNRESET: the cell stopped. */
int  srv_acp_client_open(scell *sc, const char *agent, const char *id, acp_client **out, cell_error *err);
/* Send the request `method` (params stolen) and wait for its answer,
 * handing every other message to fn.  0 with *result (the response's
 * "result", owned) or -1 with err: EPROTO (the agent answered with an
 * error: err's message is its message), ETIMEDOUT (deadline_ms passed),
 * ECANCELED (stop said so), ECHILD (the agent exited: srv_acp_client_exited). */
int  srv_acp_client_call(acp_client *c, const char *method, json_t *params, int64_t deadline_ms, acp_client_stop_fn stop,
                     acp_client_fn fn, void *user, json_t **result, cell_error *err);
/* A notification (params stolen). */
int  srv_acp_client_notify(acp_client *c, const char *method, json_t *params, cell_error *err);
/* Answer the agent's request `id` with result or, when result is NULL,
 * the error code and message (result stolen). */
int  srv_acp_client_respond(acp_client *c, json_t *id, json_t *result, int code, const char *message, cell_error *err);
/* Hand queued messages to fn until none is left or `until_ms` passes. */
void srv_acp_client_drain(acp_client *c, int64_t until_ms, acp_client_fn fn, void *user);
/* 1 with the agent's wait status once it exited (and every message of it
 * was taken), else 0. */
int  srv_acp_client_exited(acp_client *c, int *status);
/* The agent's last stderr lines, oldest first (malloc()ed; NULL: none). */
char *srv_acp_client_stderr(acp_client *c);
/* As DELETE: unlisted, stdin closed, its process group ended; frees c. */
void srv_acp_client_close(acp_client *c);

#endif
