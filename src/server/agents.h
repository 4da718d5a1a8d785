/* agents.h: the agents a cell can run (agents.c), for the ACP proxy (acp.c). */
#ifndef CELL_SERVER_AGENTS_H
#define CELL_SERVER_AGENTS_H

#include "server/server_internal.h"

/* One of sandbox-agent 0.4.2's agent ids? */
int agents_known(const char *id);
/* The path inside the cell that the proxy executes to start `id`; NULL
 * for agents cell cannot install yet. */
const char *agents_launcher(const char *id);
/* Write the mock agent and its launcher into the cell unless the launcher
 * is there already (*already = 1) or `force`.  Takes the cell's io lock. */
int agents_install_mock(scell *sc, int force, int *already, cell_error *err);
/* 400 unsupported_agent, as the reference words it. */
int reply_unsupported_agent(sreq *r, const char *id);

/* At daemon stop, after the cells halted: wait for the ACP readers and
 * drop every instance (acp.c). */
void acp_shutdown(void);

#endif
