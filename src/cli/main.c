/* main.c: the `cell` command: global options, dispatch to subcommands,
 * help text.  All real work is done by libcell. */
#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: cell [--state DIR] [--json] COMMAND [ARGS...]\n"
    "\n"
    "Run untrusted work in isolated Linux cells.\n"
    "\n"
    "commands:\n"
    "  run [OPTIONS] [--] CMD [ARGS...]   run CMD in a new one-shot cell\n"
    "  lane create NAME [--image IMAGE]   create a durable writable layer\n"
    "  lane ls                            list lanes\n"
    "  lane rm NAME                       delete a lane\n"
    "  lane export NAME                   write a lane as a tar stream to stdout\n"
    "  lane import NAME [--image IMAGE]   create a lane from a tar stream on stdin\n"
    "  lane commit NAME IMAGE             flatten a lane over its image into a new image\n"
    "  image ls                           list images and whether they are built\n"
    "  image build NAME                   build an image (debian-bookworm: debootstrap)\n"
    "  image import NAME FILE|-           import an OCI or docker-archive image tar\n"
    "  image export NAME [FILE|-]         write an image as an OCI image layout tar\n"
    "  image rm NAME                      remove an imported or committed image\n"
    "  serve [OPTIONS]                    run the daemon (HTTP API, see cell help serve)\n"
    "  help [COMMAND]                     show help\n"
    "\n"
    "commands that talk to a running daemon (cell serve):\n"
    "  create [OPTIONS]                   create and boot a cell; prints its ID\n"
    "  ls                                 list cells\n"
    "  start ID | stop ID | rm ID         boot, stop or delete a cell\n"
    "  exec [-it] ID [--] CMD [ARGS...]   run CMD in a cell: output live, exit code\n"
    "  shell ID [CMD [ARGS...]]           an interactive terminal in a cell\n"
    "  cp SRC ID:DST | cp ID:SRC DST      copy files and directories into or out of\n"
    "                                     a cell (- for a tar on stdin or stdout)\n"
    "  logs ID PROC [--follow]            output of a process in a cell\n"
    "  audit [--net] [OPTIONS]            the audit log (--net: network flows, DNS)\n"
    "  policy set ID FILE                 replace a cell's network policy (live)\n"
    "  token create|ls|revoke             API tokens (admin)\n"
    "  secret set NAME | ls | rm NAME     secrets injected on the host side (value on stdin)\n"
    "  agent run [OPTIONS] PROMPT...      run a coding agent on a repository: output, events, diff\n"
    "  agent runs [ls|show|events|...]    list, inspect, cancel and apply runs\n"
    "\n"
    "global options:\n"
    "  --state DIR   state directory (default: $CELL_STATE, ./var in a checkout,\n"
    "                else /var/lib/cell)\n"
    "  --json        machine-readable output\n"
    "  --url URL     the daemon (http://HOST:PORT or unix:PATH; default: $CELL_URL,\n"
    "                else unix:STATE/cell.sock); token: $CELL_TOKEN or STATE/admin.token\n"
    "  --version     print the version\n"
    "\n"
    "Run `cell help COMMAND` (or `cell COMMAND --help`) for the options of a command.\n";

int cli_open(struct cli_global *g, cell_ctx **ctx)
{
    cell_error err = { 0 };
    if (cell_ctx_open(ctx, g->state_dir, &err) < 0)
        return cli_fail_err(CLI_EXIT_INTERNAL, &err);
    return 0;
}

void cli_print_json(json_t *value)
{
    if (!value) {
        fputs("{}\n", stdout);
        return;
    }
    json_dumpf(value, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(value);
}

extern const char cli_run_usage[];
extern const char cli_serve_usage[];
int cli_policy(struct cli_global *g, int argc, char **argv);   /* cells_cmds.c */

/* The commands that are clients of `cell serve`. */
static const struct {
    const char *name;
    int (*fn)(struct cli_global *g, int argc, char **argv);
} client_cmds[] = {
    { "create", cli_create }, { "ls", cli_ls }, { "start", cli_start }, { "stop", cli_stop },
    { "rm", cli_rm }, { "exec", cli_exec }, { "shell", cli_shell }, { "cp", cli_cp },
    { "logs", cli_logs }, { "audit", cli_audit }, { "token", cli_token }, { "policy", cli_policy },
    { "secret", cli_secret }, { "agent", agentcmd_main },
};

int main(int argc, char **argv)
{
    struct cli_global g = { 0 };
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
            g.state_dir = argv[++i];
        else if (strncmp(argv[i], "--state=", 8) == 0)
            g.state_dir = argv[i] + 8;
        else if (strcmp(argv[i], "--json") == 0)
            g.json = 1;
        else if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
            g.url = argv[++i];
        else if (strncmp(argv[i], "--url=", 6) == 0)
            g.url = argv[i] + 6;
        else if (strcmp(argv[i], "--version") == 0) {
            printf("cell %s\n", cell_version()); /* the library's, as run */
            return 0;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else {
            fputs(usage_text, stderr);
            return cli_fail(CLI_EXIT_USAGE, "unknown global option '%s'", argv[i]);
        }
    }
    if (i >= argc) {
        fputs(usage_text, stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[i];
    int sub_argc = argc - i;
    char **sub_argv = argv + i;
    if (strcmp(cmd, "run") == 0)
        return cli_run(&g, sub_argc, sub_argv);
    if (strcmp(cmd, "lane") == 0)
        return cli_lane(&g, sub_argc, sub_argv);
    if (strcmp(cmd, "image") == 0)
        return cli_image(&g, sub_argc, sub_argv);
    if (strcmp(cmd, "serve") == 0)
        return cli_serve(&g, sub_argc, sub_argv);
    for (size_t k = 0; k < sizeof client_cmds / sizeof *client_cmds; k++)
        if (strcmp(cmd, client_cmds[k].name) == 0)
            return client_cmds[k].fn(&g, sub_argc, sub_argv);
    if (strcmp(cmd, "help") == 0) {
        if (sub_argc > 1 && strcmp(sub_argv[1], "run") == 0)
            fputs(cli_run_usage, stdout);
        else if (sub_argc > 1 && strcmp(sub_argv[1], "serve") == 0)
            fputs(cli_serve_usage, stdout);
        else if (sub_argc > 1 && strcmp(sub_argv[1], "secret") == 0)
            fputs(cli_secret_usage, stdout);
        else if (sub_argc > 1 && strcmp(sub_argv[1], "agent") == 0)
            fputs(agentcmd_usage(sub_argc - 2, sub_argv + 2), stdout);
        else if (sub_argc > 1 && cli_client_usage(sub_argv[1]))
            fputs(cli_client_usage(sub_argv[1]), stdout);
        else
            fputs(usage_text, stdout);
        return 0;
    }
    fputs(usage_text, stderr);
    return cli_fail(CLI_EXIT_USAGE, "unknown command '%s'", cmd);
}
