/* cells_cmds.h: what the client commands of cells_cmds.c, exec_cmd.c and
 * cp_cmd.c share: help notes, option helpers, running with a client. */
#ifndef CELL_CLI_CELLS_CMDS_H
#define CELL_CLI_CELLS_CMDS_H

#include "cli/cli.h"
#include "cli/client.h"

#define DAEMON_NOTE                                                                                        \
    "\nThe daemon is reached at STATE/cell.sock, or at --url URL / $CELL_URL\n"                            \
    "(http://HOST:PORT or unix:PATH); the token is $CELL_TOKEN, else STATE/admin.token.\n"
#define EXIT_NOTE                                                                                          \
    "exit codes: 0 done; 1 the daemon refused the request (4xx: not found, invalid,\n"                   \
    "forbidden, conflict); 2 usage; 125 the daemon is unreachable or failed (5xx).\n"

extern const char cli_exec_usage[], cli_shell_usage[], cli_cp_usage[];

/* -h or --help. */
int cli_is_help(const char *a);
/* "CMD: unknown option 'A' (see cell CMD --help)"; returns CLI_EXIT_USAGE. */
int cli_bad_option(const char *cmd, const char *a);
/* After getopt_long (opterr 0, optstring starting with ':') returned '?' or
 * ':' (o): "CMD: unknown option 'A'", "CMD: option 'A' needs a value" or
 * "CMD: option 'A' takes no value", each pointing at `cell CMD --help`;
 * returns CLI_EXIT_USAGE. */
int cli_getopt_fail(const char *cmd, int o, int argc, char **argv);
/* Seconds above 0 (e.g. 10 or 0.5); 0 or CLI_EXIT_USAGE (printed). */
int cli_parse_seconds(const char *opt, const char *text, double *out);
/* NAME=VALUE into an env object; 0 or CLI_EXIT_USAGE (printed). */
int cli_add_env(json_t *env, const char *kv);
/* o[key] if a non-empty string, else dflt. */
const char *cli_str_or(json_t *o, const char *key, const char *dflt);

/* 1 if PATH in the cell exists with fs/stat's entryType TYPE ("file",
 * "directory"), else 0 (also when the daemon cannot say). */
int cli_remote_is(client *c, const char *id, const char *path, const char *type);
/* cli_remote_is(c, id, path, "directory"). */
int cli_remote_is_dir(client *c, const char *id, const char *path);

/* Run one command against the daemon: open the client, call fn, close. */
typedef int (*cli_client_fn)(client *c, struct cli_global *g, void *arg);
int cli_with_client(struct cli_global *g, cli_client_fn fn, void *arg);

/* exec_cmd.c: run argv in cell `id` with its output to `out_fd` (stdout of
 * the process; stderr goes to 2), stdin from /dev/null; for `cell cp` out
 * of a cell.  The process's exit code, 128+N for signal N, 127/126 when it
 * cannot start, or an exit code (printed). */
int cli_exec_to_fd(client *c, const char *id, const char *const *argv, int out_fd);

#endif
