/* desktop.h: a cell's virtual desktop (sandbox-agent 0.4.2's /v1/desktop/...):
 * Xvfb, openbox and the tools that drive them run inside the cell as hidden
 * processes of the cell (procs.c), so they count against its limits and die
 * with it; the daemon only talks to them through their pipes. */
#ifndef CELL_SERVER_DESKTOP_H
#define CELL_SERVER_DESKTOP_H

#include "server/server_internal.h"

/* With the cell record (registry.c's scell_free): stops nothing (the cell's
 * processes are gone by then), drops the desktop's process references. */
void srv_desktop_free(scell *sc);

/* For the live view (desktop_live.c).  The active desktop's X display and
 * size: 0, or -1 when it is not active (not started, stopped, failed). */
int srv_desktop_live_target(scell *sc, int *display, int *width, int *height);

/* Apply one pointer or keyboard input as its POST route would (tail
 * "/mouse/move", "/keyboard/type", ...; body an object, borrowed), under the
 * desktop's lock.  0, or the HTTP status the route would answer with its
 * message in msg (400 bad field, 409 not active, 502 the tool failed). */
int srv_desktop_input(scell *sc, const char *tail, json_t *body, char *msg, size_t size);

#endif
