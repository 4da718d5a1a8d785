/* opts.h: the option tables of the commands, for main.c's first pass that
 * lifts the global options (--json, --state, --url) out of a command line:
 * it must know which of a command's options take a value, so that a value
 * is never taken for a global option, and where the operands begin. */
#ifndef CELL_CLI_OPTS_H
#define CELL_CLI_OPTS_H

#include <getopt.h>

extern const struct option cli_create_options[], cli_logs_options[], cli_audit_options[], cli_token_options[];
extern const struct option cli_secret_options[], cli_agent_run_options[], cli_agent_runs_options[];
extern const struct option cli_exec_options[], cli_run_options[];
/* store_cmds.c: `cell lane`'s (--image and --size take a value). */
extern const struct option cli_lane_options[];

#endif
