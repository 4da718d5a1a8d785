/* cells_cmds.c: the commands that drive a running `cell serve` over its API:
 * create, ls, start, stop, rm, logs, audit, policy and token (exec and shell
 * are in exec_cmd.c, cp in cp_cmd.c). */
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/cells_cmds.h"
#include "cli/opts.h"
#include "runtime/plugin.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static const char create_usage[] =
    "usage: cell create [OPTIONS]\n"
    "\n"
    "Create and boot a cell in the daemon; prints its id (--json: the cell).\n"
    "\n"
    "options:\n"
    "  --image NAME              root image (default host, or the lane's): host,\n"
    "                            debian-bookworm or desktop once built, or an image your\n"
    "                            tenant may use (GET /v1/images)\n"
    "  --lane NAME               durable writable layer (a lane of your tenant)\n"
    "  --memory SIZE             memory limit, e.g. 256M (default 512M, or the\n"
    "                            daemon's --limit cell.memory if lower)\n"
    "  --cpus N                  CPU limit in CPUs, e.g. 0.5\n"
    "  --pids N                  maximum number of processes and threads\n"
    "                            (default 1024, or --limit cell.pids if lower)\n"
    "  --disk SIZE               size of the in-memory writable layer (default\n"
    "                            1G; at most 3/4 of --memory: 384M by default)\n"
    "  --env NAME=VALUE          environment of every process (repeatable)\n"
    "  --cwd DIR                 default working directory (absolute; default:\n"
    "                            the image's WorkingDir, else /)\n"
    "  --hostname NAME           the cell's hostname: one DNS label, 1-63 letters,\n"
    "                            digits and '-', no dots (default cell-<8 hex>)\n"
    "  --ttl SECONDS             delete the cell once it has been running this\n"
    "                            long with no request to /cells/ID/... (exec, cp,\n"
    "                            shell, logs) and no running process (default 0:\n"
    "                            never)\n"
    "  --mount-memory DST[:SIZE] an empty in-memory directory at DST (repeatable)\n"
    "  --mount-overlay SRC:DST[:SIZE]\n"
    "                            the daemon host's directory SRC at DST, writable\n"
    "                            in the cell but never written: changes go to an\n"
    "                            in-memory layer of SIZE (default 1G); admin tokens\n"
    "                            only (repeatable)\n"
    "  --mask PATH               hide PATH (relative to SRC, e.g. .env) in the\n"
    "                            --mount-overlay before it (repeatable)\n"
    "  --policy FILE             network policy: a JSON file (see docs/egress.md);\n"
    "                            without one the cell has no network at all\n"
    "  --agent-key AGENT=SECRET[,base=URL][,provider=NAME]\n"
    "                            broker AGENT's model key (codex, claude, opencode,\n"
    "                            amp, pi): the cell gets a placeholder key and an\n"
    "                            egress rule that puts your secret SECRET in the\n"
    "                            provider's auth header on the host; base=URL points\n"
    "                            the agent at another endpoint; provider=openai or\n"
    "                            anthropic for opencode and pi (repeatable; see\n"
    "                            docs/api.md)\n"
    "\n" EXIT_NOTE DAEMON_NOTE;

static const char ls_usage[] =
    "usage: cell ls\n"
    "\n"
    "List your tenant's cells: ID STATE IMAGE LANE MEMORY CREATED (UTC).\n"
    "\n" EXIT_NOTE DAEMON_NOTE;

static const char start_usage[] =
    "usage: cell start ID...\n"
    "       cell stop ID...\n"
    "       cell rm ID...\n"
    "\n"
    "Boot a stopped cell, stop a running one (its processes are killed), or\n"
    "delete a cell (stopping it first).  Prints each id (--json: the cell).\n"
    "\n" EXIT_NOTE DAEMON_NOTE;

static const char logs_usage[] =
    "usage: cell logs ID PROC [--follow] [--stream stdout|stderr|combined|pty]\n"
    "\n"
    "Write the output of process PROC (from `cell shell` or the API) in cell ID.\n"
    "--follow keeps writing until the process exits.  --stream: pty (the default\n"
    "for terminal processes), combined (stdout and stderr, the default for\n"
    "others), stdout or stderr.  --json prints the daemon's answer (with\n"
    "--follow: one log entry per line).\n"
    "\n" EXIT_NOTE DAEMON_NOTE;

static const char audit_usage[] =
    "usage: cell audit [--net] [--since MS] [--limit N]\n"
    "\n"
    "Print your tenant's audit log: one line per record (time tenant kind, then\n"
    "method path status for requests, or the event for cells and processes).\n"
    "--net: only the cells' network records, one per line:\n"
    "  TIME VERDICT tcp SRC -> DST HOST rule=N bytes=OUT/IN [via=kernel] [(REASON)] cell=ID\n"
    "  TIME VERDICT dns QNAME TYPE RCODE rule=N [(REASON)] cell=ID\n"
    "(HOST is the name the cell's DNS answer gave DST, or -; rule=-1: none matched;\n"
    "via=kernel: carried by the egress fast path, bytes counted with IP headers).\n"
    "--since: records from this time on (ms since the epoch); --limit: at most\n"
    "N records (default 100).\n"
    "\n" EXIT_NOTE DAEMON_NOTE;

static const char policy_usage[] =
    "usage: cell policy set ID FILE\n"
    "\n"
    "Replace the network policy of cell ID with the JSON document in FILE (see\n"
    "docs/egress.md).  A running cell that has a network applies it at once to\n"
    "new connections (connections already relaying keep their verdict); else it\n"
    "applies from the cell's next start.  Prints which (--json: the cell, with\n"
    "\"policyLive\").  Errors name the rule and field, e.g. rules[2].tcp.ports.\n"
    "\n" EXIT_NOTE DAEMON_NOTE;

static const char token_usage[] =
    "usage: cell token create --tenant NAME [--label L] [--admin] [--rate N]\n"
    "       cell token ls\n"
    "       cell token revoke ID\n"
    "\n"
    "Manage API tokens (admin tokens only).  `create` prints the new bearer\n"
    "token once; it cannot be shown again.  --rate: requests per second\n"
    "(default: the daemon's --token-rate; 0 = unlimited).\n"
    "\n" EXIT_NOTE DAEMON_NOTE;

const char *cli_client_usage(const char *cmd)
{
    static const struct { const char *name, *text; } all[] = {
        { "create", create_usage }, { "ls", ls_usage }, { "start", start_usage }, { "stop", start_usage },
        { "rm", start_usage }, { "exec", cli_exec_usage }, { "shell", cli_shell_usage }, { "cp", cli_cp_usage },
        { "logs", logs_usage }, { "audit", audit_usage }, { "token", token_usage },
        { "policy", policy_usage },
    };
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (strcmp(all[i].name, cmd) == 0)
            return all[i].text;
    return NULL;
}

/* ---- option parsing ------------------------------------------------------------- */
int cli_is_help(const char *a)
{
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

int cli_bad_option(const char *cmd, const char *a)
{
    return cli_fail(CLI_EXIT_USAGE, "%s: unknown option '%s' (see cell %s --help)", cmd, a, cmd);
}

/* glibc's getopt_long leaves optind past a long option it refused (unknown:
 * optopt 0; --flag=VALUE for a flag: optopt its val) and past a short one
 * only at the end of its cluster, so argv[optind - 1] names a long option
 * and optopt a short one. */
int cli_getopt_fail(const char *cmd, int o, int argc, char **argv)
{
    const char *a = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
    int is_long = strncmp(a, "--", 2) == 0 && (o == ':' || optopt == 0 || strchr(a, '='));
    char s[3] = { '-', (char)optopt, 0 };
    if (!is_long && optopt <= 0)
        return cli_bad_option(cmd, a);
    if (o == ':')
        return cli_fail(CLI_EXIT_USAGE, "%s: option '%s' needs a value (see cell %s --help)", cmd, is_long ? a : s, cmd);
    if (is_long && optopt)
        return cli_fail(CLI_EXIT_USAGE, "%s: option '%.*s' takes no value (see cell %s --help)", cmd,
                        (int)(strchr(a, '=') - a), a, cmd);
    return cli_bad_option(cmd, is_long ? a : s);
}

/* The options of a command whose only one is --help: -1 after printing
 * the help, an exit status (printed) for any other option, else 0 with the
 * operands from argv[optind] on. */
static int help_only(const char *cmd, const char *usage, int argc, char **argv)
{
    static const struct option opts[] = { { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
    opterr = 0;
    optind = 0;
    int o = getopt_long(argc, argv, ":h", opts, NULL);
    if (o == 'h')
        return fputs(usage, stdout), -1;
    return o != -1 ? cli_getopt_fail(cmd, o, argc, argv) : 0;
}

/* Help, or the first operand given to a command that takes none. */
static int no_operands(const char *cmd, const char *usage, int argc, char **argv)
{
    int r = help_only(cmd, usage, argc, argv);
    if (r)
        return r;
    if (optind < argc)
        return cli_fail(CLI_EXIT_USAGE, "%s takes no arguments, not '%s' (see cell %s --help)", cmd, argv[optind], cmd);
    return 0;
}

static int parse_count(const char *opt, const char *text, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (!*text || *end || errno || v < 0 || v > max)
        return cli_fail(CLI_EXIT_USAGE, "%s '%s': expected a whole number from 0 to %lld", opt, text, max);
    *out = v;
    return 0;
}

int cli_parse_seconds(const char *opt, const char *text, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (!*text || *end || !(v > 0) || v > 1e9)
        return cli_fail(CLI_EXIT_USAGE, "%s '%s': expected a number of seconds above 0, e.g. 10 or 0.5", opt, text);
    *out = v;
    return 0;
}

/* NAME=VALUE into an env object. */
int cli_add_env(json_t *env, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv)
        return cli_fail(CLI_EXIT_USAGE, "--env '%s': expected NAME=VALUE, e.g. --env DEBUG=1", kv);
    char *name = strndup(kv, (size_t)(eq - kv));
    int rc = name && json_object_set_new(env, name, json_string(eq + 1)) == 0 ? 0
             : cli_fail(CLI_EXIT_USAGE, "--env '%s': the value must be UTF-8", kv);
    free(name);
    return rc;
}

/* SECRET[,base=URL][,provider=NAME] as {"secret", "baseUrl"?, "provider"?}:
 * the options split at ",base=" and ",provider=" (a URL may hold other
 * commas).  NULL (printed, naming `opt` and the whole `arg`) when bad. */
json_t *cli_key_spec(const char *opt, const char *arg, const char *spec)
{
    static const char *const opts[] = { ",base=", ",provider=" };
    static const char *const fields[] = { "baseUrl", "provider" };
    const char *at[2] = { strstr(spec, opts[0]), strstr(spec, opts[1]) };
    const char *comma = strchr(spec, ',');
    if (comma && comma != at[0] && comma != at[1])
        return cli_fail(CLI_EXIT_USAGE, "%s '%s': after the secret only ,base=URL and ,provider=NAME may "
                        "follow", opt, arg), NULL;
    json_t *want = json_pack("{s:s%}", "secret", spec, comma ? (size_t)(comma - spec) : strlen(spec));
    for (int i = 0; i < 2 && want; i++) {
        if (!at[i])
            continue;
        const char *v = at[i] + strlen(opts[i]), *other = at[1 - i];
        size_t n = other && other > v ? (size_t)(other - v) : strlen(v);
        if (json_object_set_new(want, fields[i], json_stringn(v, n)) < 0) {
            json_decref(want);      /* not UTF-8 */
            want = NULL;
        }
    }
    if (!want)
        cli_fail(CLI_EXIT_USAGE, "%s '%s': must be UTF-8", opt, arg);
    return want;
}

/* AGENT=SECRET[,base=URL][,provider=NAME] into the body's "agents" object. */
static int add_agent_key(json_t *body, const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1])
        return cli_fail(CLI_EXIT_USAGE, "--agent-key '%s': expected AGENT=SECRET[,base=URL][,provider=NAME], "
                        "e.g. codex=OPENAI_KEY", spec);
    json_t *want = cli_key_spec("--agent-key", spec, eq + 1);
    if (!want)
        return CLI_EXIT_USAGE;
    char *agent = strndup(spec, (size_t)(eq - spec));
    json_t *agents = json_object_get(body, "agents");
    if (!agents)
        json_object_set_new(body, "agents", agents = json_object());
    if (!agent || !agents)
        json_decref(want);
    int rc = agent && agents && json_object_set_new(agents, agent, want) == 0
                 ? 0 : cli_fail(CLI_EXIT_USAGE, "--agent-key '%s': must be UTF-8", spec);
    free(agent);
    return rc;
}

static int size_value(const char *opt, const char *text, json_int_t *out)
{
    uint64_t v;
    cell_error err = { 0 };
    if (cell_parse_size(text, &v, &err) < 0)
        return cli_fail(CLI_EXIT_USAGE, "%s: %s", opt, err.message);
    *out = (json_int_t)v;
    return 0;
}

/* ---- output helpers ----------------------------------------------------------------- */
static void human_size(json_int_t bytes, char *out, size_t size)
{
    static const char units[] = "KMGT";
    if (bytes <= 0) {
        snprintf(out, size, "-");
        return;
    }
    int u = -1;
    double v = (double)bytes;
    while (u < 3 && v >= 1024 && ((json_int_t)v % 1024 == 0 || v >= 10240))
        v /= 1024, u++;
    if (u < 0)
        snprintf(out, size, "%lld", (long long)bytes);
    else
        snprintf(out, size, v == (double)(long long)v ? "%.0f%c" : "%.1f%c", v, units[u]);
}

const char *cli_str_or(json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && *s ? s : dflt;
}

/* Run one command against the daemon: open the client, call fn, close. */
int cli_with_client(struct cli_global *g, cli_client_fn fn, void *arg)
{
    client c;
    int rc = cli_client_open(&c, g);
    if (rc)
        return rc;
    rc = fn(&c, g, arg);
    cli_client_close(&c);
    return rc;
}

/* ---- create ------------------------------------------------------------------------ */
static int add_memory_mount(json_t *mounts, const char *spec)
{
    const char *colon = strchr(spec, ':');
    char *target = colon ? strndup(spec, (size_t)(colon - spec)) : strdup(spec);
    json_int_t size = 0;
    int rc = 0;
    if (!target || !*target || target[0] != '/')
        rc = cli_fail(CLI_EXIT_USAGE, "--mount-memory '%s': expected an absolute DST[:SIZE], e.g. /scratch:256M", spec);
    else if (colon && size_value("--mount-memory", colon + 1, &size))
        rc = CLI_EXIT_USAGE;
    else
        json_array_append_new(mounts, json_pack("{s:s, s:s, s:I}", "type", "memory", "target", target, "size", size));
    free(target);
    return rc;
}

/* SRC:DST[:SIZE]; SRC made absolute here (the daemon resolves it again and
 * checks it is a directory). */
static int add_overlay_mount(json_t *mounts, const char *spec)
{
    const char *colon = strchr(spec, ':');
    if (!colon || colon == spec || colon[1] != '/')
        return cli_fail(CLI_EXIT_USAGE, "--mount-overlay '%s': expected SRC:DST[:SIZE] with an absolute DST, e.g. "
                        "./repo:/workspace:2G", spec);
    char *src = strndup(spec, (size_t)(colon - spec)), canon[PATH_MAX];
    const char *size_at = strchr(colon + 1, ':');
    char *target = size_at ? strndup(colon + 1, (size_t)(size_at - colon - 1)) : strdup(colon + 1);
    json_int_t size = 0;
    int rc = 0;
    if (!src || !target)
        rc = cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    else if (size_at && size_value("--mount-overlay", size_at + 1, &size))
        rc = CLI_EXIT_USAGE;
    else {
        json_t *m = json_pack("{s:s, s:s, s:s}", "type", "overlay", "source", realpath(src, canon) ? canon : src,
                              "target", target);
        if (size)
            json_object_set_new(m, "size", json_integer(size));
        json_array_append_new(mounts, m);
    }
    free(src);
    free(target);
    return rc;
}

/* --mask PATH: into mounts[].mask of the --mount-overlay before it (the
 * daemon checks the path and names mounts[N].mask[M] when it refuses it). */
static int add_mount_mask(json_t *mounts, const char *path)
{
    size_t n = json_array_size(mounts);
    json_t *m = n ? json_array_get(mounts, n - 1) : NULL;
    const char *type = json_string_value(json_object_get(m, "type"));
    if (!type || strcmp(type, "overlay") != 0)
        return cli_fail(CLI_EXIT_USAGE, "--mask %s: put it after the --mount-overlay SRC:DST it applies to", path);
    json_t *masks = json_object_get(m, "mask");
    if (!masks) {
        masks = json_array();
        json_object_set_new(m, "mask", masks);
    }
    return json_array_append_new(masks, json_string(path)) < 0
               ? cli_fail(CLI_EXIT_USAGE, "--mask: '%s' is not valid UTF-8", path) : 0;
}

/* A policy file as JSON; the daemon validates the rules themselves (its
 * errors name the rule and field).  NULL after printing a usage error. */
static json_t *read_policy(const char *opt, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    cell_error err = { 0 };
    if (util_read_file(path, 1 << 20, &text, &len, &err) < 0) {
        cli_fail(CLI_EXIT_USAGE, "%s %s: %s", opt, path, err.message);
        return NULL;
    }
    json_error_t je;
    json_t *policy = json_loadb(text, len, 0, &je);
    free(text);
    if (!policy)
        cli_fail(CLI_EXIT_USAGE, "%s %s: not a JSON document (line %d: %s); expected {\"rules\": [...]}, see docs/egress.md",
                 opt, path, je.line, je.text);
    else if (!json_is_object(policy)) {
        cli_fail(CLI_EXIT_USAGE, "%s %s: expected a JSON object {\"rules\": [...]}, see docs/egress.md", opt, path);
        json_decref(policy);
        policy = NULL;
    }
    return policy;
}

enum {
    O_IMAGE = 256, O_LANE, O_CWD, O_HOSTNAME, O_MEMORY, O_DISK, O_PIDS, O_CPUS, O_TTL, O_ENV, O_AGENT_KEY,
    O_MOUNT_MEMORY, O_MOUNT_OVERLAY, O_MASK, O_POLICY, O_NET, O_SINCE, O_LIMIT, O_STREAM, O_TENANT, O_LABEL,
    O_ADMIN, O_RATE,
};

const struct option cli_create_options[] = {
    { "image", required_argument, NULL, O_IMAGE },       { "lane", required_argument, NULL, O_LANE },
    { "cwd", required_argument, NULL, O_CWD },           { "hostname", required_argument, NULL, O_HOSTNAME },
    { "memory", required_argument, NULL, O_MEMORY },     { "disk", required_argument, NULL, O_DISK },
    { "pids", required_argument, NULL, O_PIDS },         { "cpus", required_argument, NULL, O_CPUS },
    { "ttl", required_argument, NULL, O_TTL },           { "env", required_argument, NULL, O_ENV },
    { "agent-key", required_argument, NULL, O_AGENT_KEY },
    { "mount-memory", required_argument, NULL, O_MOUNT_MEMORY },
    { "mount-overlay", required_argument, NULL, O_MOUNT_OVERLAY },
    { "mask", required_argument, NULL, O_MASK },         { "policy", required_argument, NULL, O_POLICY },
    { "help", no_argument, NULL, 'h' },                  { NULL, 0, NULL, 0 },
};

/* body[key] = v; an argument that is not UTF-8 is refused by name (jansson
 * would not make it a string, and the field would silently go missing). */
static int set_text(json_t *body, const char *key, const char *opt, const char *v)
{
    json_t *t = json_string(v);
    if (!t)
        return cli_fail(CLI_EXIT_USAGE, "%s: the value is not valid UTF-8", opt);
    return json_object_set_new(body, key, t) < 0 ? cli_fail(CLI_EXIT_INTERNAL, "out of memory") : 0;
}

/* One create option into the body; 0, or an exit code. */
static int create_option(json_t *body, int o, const char *v)
{
    json_t *res = json_object_get(body, "resources");
    json_int_t n;
    long long count;
    double cpus;
    switch (o) {
    case O_IMAGE: return set_text(body, "image", "--image", v);
    case O_LANE: return set_text(body, "lane", "--lane", v);
    case O_CWD: return set_text(body, "cwd", "--cwd", v);
    case O_HOSTNAME: return set_text(body, "hostname", "--hostname", v);
    case O_MEMORY:
        return size_value("--memory", v, &n) ? CLI_EXIT_USAGE : (json_object_set_new(res, "memory", json_integer(n)), 0);
    case O_DISK:
        return size_value("--disk", v, &n) ? CLI_EXIT_USAGE : (json_object_set_new(res, "disk", json_integer(n)), 0);
    case O_PIDS:
        return parse_count("--pids", v, 1 << 22, &count) ? CLI_EXIT_USAGE
               : (json_object_set_new(res, "pids", json_integer(count)), 0);
    case O_CPUS:
        return cli_parse_seconds("--cpus", v, &cpus) ? CLI_EXIT_USAGE
               : (json_object_set_new(res, "cpus", json_real(cpus)), 0);
    case O_TTL:
        return parse_count("--ttl", v, 365ll * 24 * 3600, &count) ? CLI_EXIT_USAGE
               : (json_object_set_new(body, "ttl", json_integer(count)), 0);
    case O_ENV: return cli_add_env(json_object_get(body, "env"), v) ? CLI_EXIT_USAGE : 0;
    case O_AGENT_KEY: return add_agent_key(body, v) ? CLI_EXIT_USAGE : 0;
    case O_MOUNT_MEMORY: return add_memory_mount(json_object_get(body, "mounts"), v) ? CLI_EXIT_USAGE : 0;
    case O_MOUNT_OVERLAY: return add_overlay_mount(json_object_get(body, "mounts"), v);
    case O_MASK: return add_mount_mask(json_object_get(body, "mounts"), v);
    case O_POLICY: {
        json_t *policy = read_policy("--policy", v);
        return policy ? (json_object_set_new(body, "policy", policy), 0) : CLI_EXIT_USAGE;
    }
    }
    return CLI_EXIT_USAGE;
}

/* All of create's options into the body; 0, -1 after --help, or an exit code. */
static int parse_create(json_t *body, int argc, char **argv)
{
    opterr = 0;
    optind = 0;
    int o, rc;
    while ((o = getopt_long(argc, argv, ":h", cli_create_options, NULL)) != -1) {
        if (o == 'h')
            return fputs(create_usage, stdout), -1;
        if (o == '?' || o == ':')
            return cli_getopt_fail("create", o, argc, argv);
        if ((rc = create_option(body, o, optarg)) != 0)
            return rc;
    }
    if (optind < argc)
        return cli_fail(CLI_EXIT_USAGE, "create takes options only, not '%s' (see cell create --help)", argv[optind]);
    return 0;
}

static int do_create(client *c, struct cli_global *g, void *arg)
{
    json_t *cellj = NULL;
    int rc = cli_client_json(c, "POST", "/v1/cells", arg, NULL, &cellj);
    if (rc)
        return rc;
    if (g->json) {
        cli_print_json(cellj);
        return 0;
    }
    printf("%s\n", cli_str_or(cellj, "id", "?"));
    json_decref(cellj);
    return 0;
}

int cli_create(struct cli_global *g, int argc, char **argv)
{
    json_t *body = json_pack("{s:{}, s:{}, s:[]}", "resources", "env", "mounts");
    if (!body)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    int rc = parse_create(body, argc, argv);
    if (rc < 0) {
        json_decref(body);
        return 0;
    }
    /* Empty groups stay out: the daemon then applies its defaults. */
    static const char *const groups[] = { "resources", "env", "mounts" };
    for (size_t k = 0; k < 3; k++) {
        json_t *v = json_object_get(body, groups[k]);
        if (json_is_object(v) ? json_object_size(v) == 0 : json_array_size(v) == 0)
            json_object_del(body, groups[k]);
    }
    if (rc == 0)
        rc = cli_with_client(g, do_create, body);
    json_decref(body);
    return rc;
}

/* ---- ls, start, stop, rm ------------------------------------------------------------------- */
static int do_ls(client *c, struct cli_global *g, void *arg)
{
    (void)arg;
    json_t *reply = NULL;
    int rc = cli_client_json(c, "GET", "/v1/cells", NULL, NULL, &reply);
    if (rc)
        return rc;
    if (g->json) {
        cli_print_json(reply);
        return 0;
    }
    printf("%-14s %-8s %-16s %-16s %-7s %s\n", "ID", "STATE", "IMAGE", "LANE", "MEMORY", "CREATED");
    size_t i;
    json_t *cj;
    json_array_foreach(json_object_get(reply, "cells"), i, cj) {
        char mem[32], when[32];
        human_size(json_integer_value(json_object_get(json_object_get(cj, "resources"), "memory")), mem, sizeof mem);
        cli_client_utc_ms(json_integer_value(json_object_get(cj, "createdAtMs")), when, sizeof when);
        printf("%-14s %-8s %-16s %-16s %-7s %s\n", cli_str_or(cj, "id", "?"), cli_str_or(cj, "state", "?"),
               cli_str_or(cj, "image", "-"), cli_str_or(cj, "lane", "-"), mem, when);
    }
    json_decref(reply);
    return 0;
}

int cli_ls(struct cli_global *g, int argc, char **argv)
{
    int rc = no_operands("ls", ls_usage, argc, argv);
    return rc ? (rc < 0 ? 0 : rc) : cli_with_client(g, do_ls, NULL);
}

struct lifecycle {
    const char *verb;       /* start, stop, rm */
    int         argc;
    char      **argv;
};

static int lifecycle_one(client *c, struct cli_global *g, const char *verb, const char *id)
{
    int rm = strcmp(verb, "rm") == 0;
    char *path = rm ? cli_client_pathf("/v1/cells/%s", id) : cli_client_pathf(strcmp(verb, "start") == 0
                                                                       ? "/v1/cells/%s/start" : "/v1/cells/%s/stop", id);
    if (!path)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    json_t *reply = NULL;
    int rc = cli_client_json(c, rm ? "DELETE" : "POST", path, NULL, NULL, &reply);
    free(path);
    if (rc)
        return rc;
    if (g->json && rm)
        cli_print_json(json_pack("{s:s, s:b}", "id", id, "deleted", 1));
    else if (g->json)
        cli_print_json(reply), reply = NULL;
    else
        printf("%s\n", id);
    json_decref(reply);
    return 0;
}

static int do_lifecycle(client *c, struct cli_global *g, void *arg)
{
    struct lifecycle *l = arg;
    int rc = 0;
    for (int i = 1; i < l->argc; i++) {
        int one = lifecycle_one(c, g, l->verb, l->argv[i]);
        if (one)
            rc = one;
        if (one == CLI_EXIT_INTERNAL)
            break;              /* the daemon is gone: the others fail the same way */
    }
    return rc;
}

static int lifecycle(struct cli_global *g, const char *verb, int argc, char **argv)
{
    int r = help_only(verb, start_usage, argc, argv);
    if (r)
        return r < 0 ? 0 : r;
    if (optind >= argc)
        return cli_fail(CLI_EXIT_USAGE, "%s: missing cell ID (see cell %s --help)", verb, verb);
    /* The ids from argv[1] on (getopt_long moved them after the options). */
    struct lifecycle l = { verb, argc - optind + 1, argv + optind - 1 };
    return cli_with_client(g, do_lifecycle, &l);
}

int cli_start(struct cli_global *g, int argc, char **argv) { return lifecycle(g, "start", argc, argv); }
int cli_stop(struct cli_global *g, int argc, char **argv) { return lifecycle(g, "stop", argc, argv); }
int cli_rm(struct cli_global *g, int argc, char **argv) { return lifecycle(g, "rm", argc, argv); }

/* ---- logs ------------------------------------------------------------------------------------ */
struct logs_args {
    const char *id, *proc, *stream;
    int         follow;
};

static void logs_entry(void *user, json_t *entry)
{
    struct cli_global *g = user;
    if (g->json) {
        json_dumpf(entry, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        fflush(stdout);
    } else {
        cli_client_write_entry(1, entry);
    }
}

static int do_logs(client *c, struct cli_global *g, void *arg)
{
    struct logs_args *l = arg;
    /* Without ?stream the daemon picks pty or combined by the process's kind. */
    char *path = l->stream ? cli_client_pathf(l->follow ? "/cells/%s/v1/processes/%s/logs?follow=true&stream=%s"
                                                    : "/cells/%s/v1/processes/%s/logs?stream=%s", l->id, l->proc, l->stream)
                           : cli_client_pathf(l->follow ? "/cells/%s/v1/processes/%s/logs?follow=true"
                                                    : "/cells/%s/v1/processes/%s/logs", l->id, l->proc);
    if (!path)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    int rc;
    json_t *reply = NULL;
    if (l->follow) {
        rc = cli_client_follow(c, path, logs_entry, g, NULL);
    } else if ((rc = cli_client_json(c, "GET", path, NULL, NULL, &reply)) == 0) {
        if (g->json) {
            cli_print_json(reply);
            reply = NULL;
        } else {
            size_t i;
            json_t *e;
            json_array_foreach(json_object_get(reply, "entries"), i, e)
                cli_client_write_entry(1, e);
        }
    }
    json_decref(reply);
    free(path);
    return rc;
}

const struct option cli_logs_options[] = {
    { "follow", no_argument, NULL, 'f' }, { "stream", required_argument, NULL, O_STREAM },
    { "help", no_argument, NULL, 'h' },   { NULL, 0, NULL, 0 },
};

int cli_logs(struct cli_global *g, int argc, char **argv)
{
    struct logs_args l = { 0 };
    opterr = 0;
    optind = 0;
    int o;
    while ((o = getopt_long(argc, argv, ":hf", cli_logs_options, NULL)) != -1) {
        if (o == 'h')
            return fputs(logs_usage, stdout), 0;
        if (o == 'f')
            l.follow = 1;
        else if (o == O_STREAM)
            l.stream = optarg;
        else
            return cli_getopt_fail("logs", o, argc, argv);
    }
    if (argc - optind > 2)
        return cli_fail(CLI_EXIT_USAGE, "logs: unexpected argument '%s' (see cell logs --help)", argv[optind + 2]);
    l.id = optind < argc ? argv[optind] : NULL;
    l.proc = optind + 1 < argc ? argv[optind + 1] : NULL;
    if (!l.proc)
        return cli_fail(CLI_EXIT_USAGE, "logs: expected ID and PROC, e.g. cell logs 3f2a9c proc_1");
    if (l.stream && strcmp(l.stream, "stdout") && strcmp(l.stream, "stderr") && strcmp(l.stream, "combined") &&
        strcmp(l.stream, "pty"))
        return cli_fail(CLI_EXIT_USAGE, "--stream '%s': use stdout, stderr, combined or pty", l.stream);
    return cli_with_client(g, do_logs, &l);
}

/* ---- audit ---------------------------------------------------------------------------------- */
struct audit_args {
    const char *since, *limit;
    int         net;        /* --net: kind=net, printed as flows and queries */
};

/* DNS codes by name, for the common ones; others as numbers. */
static void dns_code(char *out, size_t size, const char *const *names, size_t n, json_t *v)
{
    json_int_t code = json_integer_value(v);
    if (json_is_integer(v) && code >= 0 && (size_t)code < n && names[code])
        snprintf(out, size, "%s", names[code]);
    else
        snprintf(out, size, "%lld", (long long)code);
}

/* One "net" record: what a reader scans for first (the verdict), then the
 * flow; a reason only where there is one (denials). */
static void print_net_record(json_t *r)
{
    const char *event = cli_str_or(r, "event", "-");
    printf("%s", cli_str_or(r, "ts", "-"));
    if (json_is_string(json_object_get(r, "verdict")))      /* a policy change has none */
        printf(" %s", json_string_value(json_object_get(r, "verdict")));
    if (strcmp(event, "connect") == 0) {
        printf(" %s %s -> %s %s rule=%lld", cli_str_or(r, "transport", "-"), cli_str_or(r, "src", "-"),
               cli_str_or(r, "dst", "-"), cli_str_or(r, "host", "-"), (long long)json_integer_value(json_object_get(r, "rule")));
        if (json_object_get(r, "bytesOut") || json_object_get(r, "bytesIn"))
            printf(" bytes=%lld/%lld", (long long)json_integer_value(json_object_get(r, "bytesOut")),
                   (long long)json_integer_value(json_object_get(r, "bytesIn")));
        if (json_is_string(json_object_get(r, "path")))     /* "kernel": IP bytes, not payload */
            printf(" via=%s", json_string_value(json_object_get(r, "path")));
    } else if (strcmp(event, "dns") == 0) {
        static const char *const types[29] = { [1] = "A", [2] = "NS", [5] = "CNAME", [6] = "SOA", [12] = "PTR",
                                               [15] = "MX", [16] = "TXT", [28] = "AAAA" };
        static const char *const rcodes[] = { "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED" };
        char type[16], rcode[16];
        dns_code(type, sizeof type, types, sizeof types / sizeof *types, json_object_get(r, "qtype"));
        dns_code(rcode, sizeof rcode, rcodes, sizeof rcodes / sizeof *rcodes, json_object_get(r, "rcode"));
        printf(" dns %s %s %s rule=%lld", cli_str_or(r, "qname", "-"), type, rcode,
               (long long)json_integer_value(json_object_get(r, "rule")));
    } else {
        printf(" %s", event);
    }
    if (json_is_string(json_object_get(r, "reason")))
        printf(" (%s)", json_string_value(json_object_get(r, "reason")));
    printf(" cell=%s\n", cli_str_or(r, "cell", "-"));
}

static void print_audit_record(json_t *r)
{
    const char *ts = cli_str_or(r, "ts", "-");
    printf("%s %s %s", ts, cli_str_or(r, "tenant", "-"), cli_str_or(r, "kind", "-"));
    if (json_object_get(r, "method")) {
        printf(" %s %s %lld", cli_str_or(r, "method", "-"), cli_str_or(r, "path", "-"),
               (long long)json_integer_value(json_object_get(r, "status")));
    } else {
        printf(" %s", cli_str_or(r, "event", "-"));
        static const char *const keys[] = { "cell", "process", "command", "exitCode", "signal" };
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
            json_t *v = json_object_get(r, keys[i]);
            if (json_is_string(v))
                printf(" %s=%s", keys[i], json_string_value(v));
            else if (json_is_integer(v))
                printf(" %s=%lld", keys[i], (long long)json_integer_value(v));
        }
    }
    putchar('\n');
}

static int do_audit(client *c, struct cli_global *g, void *arg)
{
    struct audit_args *a = arg;
    const char *kind = a->net ? "net" : NULL;
    char *path = kind && a->since && a->limit
                     ? cli_client_pathf("/v1/audit?kind=%s&since=%s&limit=%s", kind, a->since, a->limit)
               : kind && a->since ? cli_client_pathf("/v1/audit?kind=%s&since=%s", kind, a->since)
               : kind && a->limit ? cli_client_pathf("/v1/audit?kind=%s&limit=%s", kind, a->limit)
               : kind             ? cli_client_pathf("/v1/audit?kind=%s", kind)
               : a->since && a->limit ? cli_client_pathf("/v1/audit?since=%s&limit=%s", a->since, a->limit)
               : a->since             ? cli_client_pathf("/v1/audit?since=%s", a->since)
               : a->limit             ? cli_client_pathf("/v1/audit?limit=%s", a->limit)
                                      : cli_client_pathf("/v1/audit");
    json_t *reply = NULL;
    int rc = path ? cli_client_json(c, "GET", path, NULL, NULL, &reply) : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    if (rc)
        return rc;
    if (g->json) {
        cli_print_json(reply);
        return 0;
    }
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(reply, "records"), i, r)
        a->net ? print_net_record(r) : print_audit_record(r);
    json_decref(reply);
    return 0;
}

const struct option cli_audit_options[] = {
    { "net", no_argument, NULL, O_NET },         { "since", required_argument, NULL, O_SINCE },
    { "limit", required_argument, NULL, O_LIMIT }, { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

int cli_audit(struct cli_global *g, int argc, char **argv)
{
    struct audit_args a = { 0 };
    long long n;
    opterr = 0;
    optind = 0;
    int o;
    while ((o = getopt_long(argc, argv, ":h", cli_audit_options, NULL)) != -1) {
        if (o == 'h')
            return fputs(audit_usage, stdout), 0;
        if (o == O_NET)
            a.net = 1;
        else if (o == O_SINCE && parse_count("--since", a.since = optarg, INT64_MAX, &n) == 0)
            continue;
        else if (o == O_LIMIT && parse_count("--limit", a.limit = optarg, 10000, &n) == 0)
            continue;
        else
            return o == O_SINCE || o == O_LIMIT ? CLI_EXIT_USAGE : cli_getopt_fail("audit", o, argc, argv);
    }
    if (optind < argc)
        return cli_fail(CLI_EXIT_USAGE, "audit takes options only, not '%s' (see cell audit --help)", argv[optind]);
    return cli_with_client(g, do_audit, &a);
}

/* ---- policy --------------------------------------------------------------------------------- */
struct policy_args {
    const char *id;
    json_t     *policy;
};

static int do_policy(client *c, struct cli_global *g, void *arg)
{
    struct policy_args *p = arg;
    char *path = cli_client_pathf("/v1/cells/%s/policy", p->id);
    char what[64];
    snprintf(what, sizeof what, "cell %s", p->id);
    json_t *reply = NULL;
    int rc = path ? cli_client_json(c, "PUT", path, p->policy, what, &reply) : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    if (rc)
        return rc;
    if (g->json) {
        cli_print_json(reply);
        return 0;
    }
    /* Say whether it is in force now: a stopped cell, or one started
     * without a network, only gets it at its next start. */
    if (json_is_true(json_object_get(reply, "policyLive")))
        printf("cell %s: policy applied live (new connections)\n", p->id);
    else
        printf("cell %s: policy stored; it applies from the cell's next start\n", p->id);
    json_decref(reply);
    return 0;
}

int cli_policy(struct cli_global *g, int argc, char **argv)
{
    int r = help_only("policy", policy_usage, argc, argv);
    if (r)
        return r < 0 ? 0 : r;
    argv += optind - 1;         /* the operands from argv[1] on */
    argc -= optind - 1;
    if (argc < 2 || strcmp(argv[1], "set") != 0) {
        fputs(policy_usage, stderr);
        return argc < 2 ? cli_fail(CLI_EXIT_USAGE, "policy: missing command (set)")
                        : cli_fail(CLI_EXIT_USAGE, "unknown policy command '%s' (set)", argv[1]);
    }
    if (argc != 4)
        return cli_fail(CLI_EXIT_USAGE, "policy set takes a cell ID and a FILE (see cell policy --help)");
    struct policy_args p = { .id = argv[2], .policy = read_policy("policy set", argv[3]) };
    if (!p.policy)
        return CLI_EXIT_USAGE;
    int rc = cli_with_client(g, do_policy, &p);
    json_decref(p.policy);
    return rc;
}

/* ---- token ---------------------------------------------------------------------------------- */
struct token_args {
    const char *sub;
    json_t     *body;       /* create */
    const char *id;         /* revoke */
};

static int token_create(client *c, struct cli_global *g, json_t *body)
{
    json_t *t = NULL;
    int rc = cli_client_json(c, "POST", "/v1/tokens", body, NULL, &t);
    if (rc)
        return rc;
    if (g->json) {
        cli_print_json(t);
        return 0;
    }
    printf("%s\n", cli_str_or(t, "token", "?"));
    fprintf(stderr, "cell: token %s for tenant %s%s; it is shown only this once\n", cli_str_or(t, "id", "?"),
            cli_str_or(t, "tenant", "?"), json_is_true(json_object_get(t, "admin")) ? " (admin)" : "");
    json_decref(t);
    return 0;
}

static int token_ls(client *c, struct cli_global *g)
{
    json_t *reply = NULL;
    int rc = cli_client_json(c, "GET", "/v1/tokens", NULL, NULL, &reply);
    if (rc)
        return rc;
    if (g->json) {
        cli_print_json(reply);
        return 0;
    }
    printf("%-14s %-16s %-16s %-5s %-6s %-19s %s\n", "ID", "TENANT", "LABEL", "ADMIN", "RATE", "CREATED", "REVOKED");
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(reply, "tokens"), i, t) {
        char when[32], rate[24];
        cli_client_utc_ms(json_integer_value(json_object_get(t, "createdAtMs")), when, sizeof when);
        json_int_t r = json_integer_value(json_object_get(t, "rate"));
        snprintf(rate, sizeof rate, r ? "%lld" : "-", (long long)r);
        printf("%-14s %-16s %-16s %-5s %-6s %-19s %s\n", cli_str_or(t, "id", "?"), cli_str_or(t, "tenant", "?"),
               cli_str_or(t, "label", "-"), json_is_true(json_object_get(t, "admin")) ? "yes" : "no", rate, when,
               json_is_true(json_object_get(t, "revoked")) ? "yes" : "no");
    }
    json_decref(reply);
    return 0;
}

static int token_revoke(client *c, struct cli_global *g, const char *id)
{
    char *path = cli_client_pathf("/v1/tokens/%s", id);
    int rc = path ? cli_client_json(c, "DELETE", path, NULL, NULL, NULL) : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    if (rc)
        return rc;
    if (g->json)
        cli_print_json(json_pack("{s:s, s:b}", "id", id, "revoked", 1));
    else
        printf("revoked token %s\n", id);
    return 0;
}

static int do_token(client *c, struct cli_global *g, void *arg)
{
    struct token_args *t = arg;
    if (strcmp(t->sub, "create") == 0)
        return token_create(c, g, t->body);
    if (strcmp(t->sub, "ls") == 0)
        return token_ls(c, g);
    return token_revoke(c, g, t->id);
}

const struct option cli_token_options[] = {
    { "tenant", required_argument, NULL, O_TENANT }, { "label", required_argument, NULL, O_LABEL },
    { "admin", no_argument, NULL, O_ADMIN },         { "rate", required_argument, NULL, O_RATE },
    { "help", no_argument, NULL, 'h' },              { NULL, 0, NULL, 0 },
};

/* --tenant NAME [--label L] [--admin] [--rate N] into the body. */
static int token_option(json_t *body, int o, const char *v)
{
    long long rate;
    switch (o) {
    case O_ADMIN: return json_object_set_new(body, "admin", json_true()), 0;
    case O_TENANT: return set_text(body, "tenant", "--tenant", v);
    case O_LABEL: return set_text(body, "label", "--label", v);
    case O_RATE:
        return parse_count("--rate", v, 1000000, &rate) ? CLI_EXIT_USAGE
               : (json_object_set_new(body, "rate", json_integer(rate)), 0);
    }
    return CLI_EXIT_USAGE;
}

/* TOKEN-SUBCOMMAND [OPTIONS] [ID] (argv[0] the subcommand): options (only
 * create has any) into t->body, the operands into *rest; 0, -1 after
 * --help, or an exit code. */
static int parse_token(struct token_args *t, int argc, char **argv, int *rest)
{
    static const struct option help_only[] = { { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
    char cmd[32];
    snprintf(cmd, sizeof cmd, "token %s", t->sub);
    opterr = 0;
    optind = 0;
    int o, rc;
    while ((o = getopt_long(argc, argv, ":h", t->body ? cli_token_options : help_only, NULL)) != -1) {
        if (o == 'h')
            return fputs(token_usage, stdout), -1;
        if (o == '?' || o == ':')
            return cli_getopt_fail(cmd, o, argc, argv);
        if ((rc = token_option(t->body, o, optarg)) != 0)
            return rc;
    }
    *rest = argc - optind;
    if (t->body && *rest)
        return cli_fail(CLI_EXIT_USAGE, "token create takes options only, not '%s'", argv[optind]);
    if (t->body && !json_object_get(t->body, "tenant"))
        return cli_fail(CLI_EXIT_USAGE, "token create: --tenant NAME is required (the tenant the token acts for)");
    if (strcmp(t->sub, "ls") == 0 && *rest)
        return cli_fail(CLI_EXIT_USAGE, "token ls takes no arguments");
    if (strcmp(t->sub, "revoke") == 0 && *rest != 1)
        return cli_fail(CLI_EXIT_USAGE, "token revoke takes exactly one token ID (see cell token ls)");
    t->id = *rest ? argv[optind] : NULL;
    return 0;
}

int cli_token(struct cli_global *g, int argc, char **argv)
{
    if (argc < 2 || cli_is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
        fputs(token_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    struct token_args t = { .sub = argv[1] };
    if (strcmp(t.sub, "create") != 0 && strcmp(t.sub, "ls") != 0 && strcmp(t.sub, "revoke") != 0)
        return cli_fail(CLI_EXIT_USAGE, "unknown token command '%s' (create, ls, revoke)", t.sub);
    if (strcmp(t.sub, "create") == 0 && !(t.body = json_object()))
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    int rest = 0;
    int rc = parse_token(&t, argc - 1, argv + 1, &rest);
    if (rc == 0)
        rc = cli_with_client(g, do_token, &t);
    json_decref(t.body);
    return rc < 0 ? 0 : rc;
}
