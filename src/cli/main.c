/* main.c: the `cell` command: global options, dispatch to subcommands,
 * help text.  All real work is done by libcell. */
#include "cli/cli.h"
#include "cli/opts.h"

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
    "  image build NAME                   build an image (debian-bookworm, desktop: debootstrap)\n"
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
    "  --state DIR   state directory (default: $CELL_STATE, else var/ of the\n"
    "                checkout whose build/cell runs, else /var/lib/cell)\n"
    "  --json        machine-readable output: the API's JSON objects (run: the\n"
    "                object of exec --json); cp, shell, lane export and image\n"
    "                export have none and refuse it (exit 2)\n"
    "  --url URL     the daemon (http://HOST:PORT or unix:PATH; default: $CELL_URL,\n"
    "                else unix:STATE/cell.sock); token: $CELL_TOKEN or STATE/admin.token\n"
    "  --version     print the version\n"
    "--json, --state and --url may also come after COMMAND, anywhere up to a --\n"
    "or, for run, exec and shell, up to the command run in the cell (`cell exec\n"
    "ID ls --json` gives --json to ls).  After COMMAND, --help is the command's.\n"
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

/* The commands, and what the global-option pass must know of each. */
static const struct cmd {
    const char *name;
    int (*fn)(struct cli_global *g, int argc, char **argv);
    const struct option *opts[2];   /* its options: a value they take is never a global option */
    const char *shorts;             /* its short options, getopt style ("u:" takes a value) */
    int operands;                   /* the cell's command line starts after this many operands;
                                     * 0: the whole line is another program's (serve); -1: none */
    const char *subs;               /* its subcommands, for `cell help CMD SUB` (NULL: none) */
    const char *own_help;           /* those with a help text of their own (else CMD's) */
} cmds[] = {
    { "run", cli_run, { cli_run_options, NULL }, "ht", 1, NULL, NULL },
    { "exec", cli_exec, { cli_exec_options, NULL }, "itu:e:w:h", 2, NULL, NULL },
    { "shell", cli_shell, { NULL, NULL }, "h", 1, NULL, NULL },
    { "serve", cli_serve, { NULL, NULL }, "", 0, NULL, NULL },
    { "lane", cli_lane, { cli_lane_options, NULL }, "h", -1, "create ls rm export import commit", "" },
    { "image", cli_image, { NULL, NULL }, "h", -1, "ls build import export rm", "ls import rm" },
    { "create", cli_create, { cli_create_options, NULL }, "h", -1, NULL, NULL },
    { "ls", cli_ls, { NULL, NULL }, "h", -1, NULL, NULL },
    { "start", cli_start, { NULL, NULL }, "h", -1, NULL, NULL },
    { "stop", cli_stop, { NULL, NULL }, "h", -1, NULL, NULL },
    { "rm", cli_rm, { NULL, NULL }, "h", -1, NULL, NULL },
    { "cp", cli_cp, { NULL, NULL }, "h", -1, NULL, NULL },
    { "logs", cli_logs, { cli_logs_options, NULL }, "hf", -1, NULL, NULL },
    { "audit", cli_audit, { cli_audit_options, NULL }, "h", -1, NULL, NULL },
    { "token", cli_token, { cli_token_options, NULL }, "h", -1, "create ls revoke", "" },
    { "policy", cli_policy, { NULL, NULL }, "h", -1, "set", "" },
    { "secret", cli_secret, { cli_secret_options, NULL }, "h", -1, "set ls rm", "" },
    { "agent", cli_agentcmd_main, { cli_agent_run_options, cli_agent_runs_options }, "hf", -1, "run runs", "run runs" },
    { "help", NULL, { NULL, NULL }, "", -1, NULL, NULL },
};

static const struct cmd *find_cmd(const char *name)
{
    for (size_t k = 0; k < sizeof cmds / sizeof *cmds; k++)
        if (strcmp(name, cmds[k].name) == 0)
            return &cmds[k];
    return NULL;
}

/* 1 if the long option A (--NAME or --NAME=V) of c takes its value from the
 * next argument; unknown ones are taken for flags, as getopt_long would
 * refuse them anyway.  Unique prefixes count, as they do for getopt_long. */
static int long_takes_next(const struct cmd *c, const char *a)
{
    const char *name = a + 2;
    size_t n = strcspn(name, "=");
    if (name[n] == '=')
        return 0;
    const struct option *found = NULL;
    int matches = 0;
    for (int t = 0; t < 2; t++)
        for (const struct option *o = c->opts[t]; o && o->name; o++) {
            if (strncmp(o->name, name, n) != 0)
                continue;
            if (o->name[n] == '\0')
                return o->has_arg == required_argument;
            if (!found || strcmp(found->name, o->name) != 0)
                matches++;
            found = o;
        }
    return matches == 1 && found->has_arg == required_argument;
}

/* 1 if the short-option cluster A (-xyz) ends in an option that takes the
 * next argument as its value. */
static int short_takes_next(const struct cmd *c, const char *a)
{
    for (const char *p = a + 1; *p; p++) {
        const char *at = *p != ':' ? strchr(c->shorts, *p) : NULL;
        if (at && at[1] == ':')
            return p[1] == '\0';    /* else the rest of the cluster is the value */
    }
    return 0;
}

/* A global option at argv[*i] into g: 1 taken (*i past it and its value),
 * 0 not one, CLI_EXIT_USAGE (printed) when its value is missing. */
static int global_option(struct cli_global *g, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (strcmp(a, "--json") == 0) {
        g->json = 1;
        ++*i;
        return 1;
    }
    if (strncmp(a, "--json=", 7) == 0)
        return cli_fail(CLI_EXIT_USAGE, "option '--json' takes no value (see cell --help)"), CLI_EXIT_USAGE;
    const char **slot = NULL;
    size_t n = strcspn(a, "=");
    if (n == 7 && strncmp(a, "--state", 7) == 0)
        slot = &g->state_dir;
    else if (n == 5 && strncmp(a, "--url", 5) == 0)
        slot = &g->url;
    else
        return 0;
    if (a[n] == '=') {
        *slot = a + n + 1;
        ++*i;
        return 1;
    }
    if (*i + 1 >= argc)
        return cli_fail(CLI_EXIT_USAGE, "option '%s' needs a value (see cell --help)", a), CLI_EXIT_USAGE;
    *slot = argv[*i + 1];
    *i += 2;
    return 1;
}

/* The first pass over a command's line (argv[0] the command): lift the
 * global options --json, --state and --url out of it into g, wherever they
 * are, up to where the line stops being cell's: a "--", or the start of the
 * cell's command (after c->operands operands: `cell exec ID ls --json` gives
 * --json to ls).  A value of one of the command's own options is never
 * taken for a global option (`--hostname --json` is a hostname).  argv is
 * compacted in place; returns its new argc, or -CLI_EXIT_USAGE (printed). */
static int lift_globals(struct cli_global *g, const struct cmd *c, int argc, char **argv)
{
    int in = 1, out = 1, operands = 0;
    while (in < argc && c->operands != 0 && operands != c->operands && strcmp(argv[in], "--") != 0) {
        int k = global_option(g, argc, argv, &in);
        if (k > 1)
            return -k;
        if (k == 1)
            continue;
        const char *a = argv[in];
        int take = 1;
        if (a[0] != '-' || a[1] == '\0')
            operands++;
        else
            take += a[1] == '-' ? long_takes_next(c, a) : short_takes_next(c, a);
        for (; take > 0 && in < argc; take--)
            argv[out++] = argv[in++];
    }
    while (in < argc)
        argv[out++] = argv[in++];
    argv[out] = NULL;
    return out;
}

/* 1 if `word` is one of the space-separated `list`. */
static int word_in(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; p && *p; p += strcspn(p, " "), p += *p == ' ')
        if (n && strncmp(p, word, n) == 0 && (p[n] == ' ' || p[n] == '\0'))
            return 1;
    return 0;
}

/* `cell help [COMMAND [SUBCOMMAND]]`: runs `cell COMMAND [SUBCOMMAND] --help`,
 * so that the two print the same text by construction.  A subcommand
 * without a text of its own gets its group's (`cell help token create` is
 * `cell token --help`): only those known to answer --help are run with it,
 * so that help never does what the subcommand does.  serve's text is
 * printed here: `cell serve --help` gets it from the daemon it runs. */
static int help(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    const struct cmd *c = find_cmd(argv[1]);
    if (!c)
        return cli_fail(CLI_EXIT_USAGE, "help: unknown command '%s' (see cell help for the commands)", argv[1]);
    if (argc > 3 || (argc == 3 && !c->subs))
        return cli_fail(CLI_EXIT_USAGE, "help: expected cell help COMMAND%s, not '%s'",
                        c->subs ? " [SUBCOMMAND]" : "", argv[argc - 1]);
    if (argc == 3 && !word_in(c->subs, argv[2]))
        return cli_fail(CLI_EXIT_USAGE, "help: %s has no subcommand '%s' (%s)", c->name, argv[2], c->subs);
    if (argc == 3 && !word_in(c->own_help, argv[2]))
        argc = 2;
    if (c->fn == cli_serve)
        return fputs(cli_serve_usage, stdout), 0;
    char flag[] = "--help";
    char *hargv[] = { argv[1], argc == 3 ? argv[2] : flag, argc == 3 ? flag : NULL, NULL };
    struct cli_global g = { 0 };
    return c->fn(&g, argc == 3 ? 3 : 2, hargv);
}

/* Options before COMMAND: the global ones, --version and --help.  (No
 * getopt here: glibc's getopt keeps the ordering, "+" or not, of its first
 * call until optind is set to 0, and run.c restarts it with optind 1.) */
static int leading_options(struct cli_global *g, int argc, char **argv, int *i)
{
    while (*i < argc && argv[*i][0] == '-') {
        const char *a = argv[*i];
        int k = global_option(g, argc, argv, i);
        if (k > 1)
            return k;
        if (k == 1)
            continue;
        if (strcmp(a, "--version") == 0) {
            printf("cell %s\n", cell_version()); /* the library's, as run */
            return -1;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            return -1;
        }
        fputs(usage_text, stderr);
        return cli_fail(CLI_EXIT_USAGE, "unknown global option '%s'", a);
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct cli_global g = { 0 };
    int i = 1;
    int rc = leading_options(&g, argc, argv, &i);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (i >= argc) {
        fputs(usage_text, stderr);
        return CLI_EXIT_USAGE;
    }
    const struct cmd *c = find_cmd(argv[i]);
    if (!c) {
        fputs(usage_text, stderr);
        return cli_fail(CLI_EXIT_USAGE, "unknown command '%s'", argv[i]);
    }
    int sub_argc = lift_globals(&g, c, argc - i, argv + i);
    if (sub_argc < 0)
        return -sub_argc;
    return c->fn ? c->fn(&g, sub_argc, argv + i) : help(sub_argc, argv + i);
}
