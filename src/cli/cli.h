/* cli.h: the `cell` command's subcommands and the helpers they share
 * (option parsing, error reporting, JSON output). */
#ifndef CELL_CLI_H
#define CELL_CLI_H

#include <jansson.h>

#include "cell.h"

/* Exit codes, as docker and timeout(1) use them. */
#define CLI_EXIT_USAGE     2
#define CLI_EXIT_TIMEOUT   124
#define CLI_EXIT_INTERNAL  125
#define CLI_EXIT_CANNOT    126
#define CLI_EXIT_NOTFOUND  127

struct cli_global {
    const char *state_dir;
    int         json;
    const char *url;        /* --url: the daemon's address (else $CELL_URL, STATE/cell.sock) */
};

int cli_run(struct cli_global *g, int argc, char **argv);
int cli_lane(struct cli_global *g, int argc, char **argv);
int cli_image(struct cli_global *g, int argc, char **argv);
/* image_cmds.c: `cell image import|ls|rm` (argv[0] is the subcommand). */
int cli_image_store(struct cli_global *g, int argc, char **argv);
extern const char cli_image_import_usage[];
int cli_serve(struct cli_global *g, int argc, char **argv);

/* Clients of the daemon (cells_cmds.c). */
int cli_create(struct cli_global *g, int argc, char **argv);
int cli_ls(struct cli_global *g, int argc, char **argv);
int cli_start(struct cli_global *g, int argc, char **argv);
int cli_stop(struct cli_global *g, int argc, char **argv);
int cli_rm(struct cli_global *g, int argc, char **argv);
int cli_exec(struct cli_global *g, int argc, char **argv);
int cli_shell(struct cli_global *g, int argc, char **argv);
int cli_cp(struct cli_global *g, int argc, char **argv);
int cli_logs(struct cli_global *g, int argc, char **argv);
int cli_audit(struct cli_global *g, int argc, char **argv);
int cli_token(struct cli_global *g, int argc, char **argv);
/* secret_cmds.c: `cell secret set|ls|rm`, and its --help text. */
int cli_secret(struct cli_global *g, int argc, char **argv);
extern const char cli_secret_usage[];
/* SECRET[,base=URL][,provider=NAME] (--agent-key, --key) as the API's
 * {"secret", "baseUrl"?, "provider"?}; NULL (printed) when bad. */
json_t *cli_key_spec(const char *opt, const char *arg, const char *spec);
/* agent_cmds.c: `cell agent run` and `cell agent runs ...` (issue 12's runs). */
int cli_agentcmd_main(struct cli_global *g, int argc, char **argv);
/* The help text of `cell help agent [run|runs]`. */
const char *cli_agentcmd_usage(int argc, char **argv);
/* The --help text of one of those commands, or NULL. */
const char *cli_client_usage(const char *cmd);

/* Print "cell: <message>" to stderr; returns `code` for `return cli_fail(...)`. */
int cli_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_fail_err(int code, const cell_error *err);
/* Open the context for g->state_dir, or print why not. */
int cli_open(struct cli_global *g, cell_ctx **ctx);
/* Print a JSON value on stdout followed by a newline; takes the reference. */
void cli_print_json(json_t *value);

#endif
