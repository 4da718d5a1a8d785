/* desktop.h: a cell's virtual desktop (sandbox-agent 0.4.2's /v1/desktop/...):
 * Xvfb, openbox and the tools that drive them run inside the cell as hidden
 * processes of the cell (procs.c), so they count against its limits and die
 * with it; the daemon only talks to them through their pipes. */
#ifndef CELL_SERVER_DESKTOP_H
#define CELL_SERVER_DESKTOP_H

#include "server/server_internal.h"

/* With the cell record (registry.c's scell_free): stops nothing (the cell's
 * processes are gone by then), drops the desktop's process references. */
void desktop_free(scell *sc);

#endif
