/* terminal.c: placeholder until the terminal WebSocket lands.
 * Answers 501. */
#include "server/handlers.h"
int h_proc_terminal_ws(sreq *r) { return reply_problem(r, 501, "not_implemented", "terminal WebSocket"); }
