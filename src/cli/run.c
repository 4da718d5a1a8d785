/* run.c: `cell run`, a one-shot cell: boot, run one command with the
 * caller's stdio, forward signals, enforce the timeout, destroy. */
#include "cli/cli.h"
#include "cli/cells_cmds.h"
#include "cli/opts.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

const char cli_run_usage[] =
    "usage: cell run [OPTIONS] [--] CMD [ARGS...]\n"
    "\n"
    "Boot a new cell, run CMD in it with this terminal's stdin/stdout/stderr,\n"
    "destroy the cell, and exit with CMD's exit code.\n"
    "\n"
    "options:\n"
    "  --image NAME         root image (default host, or the lane's): host,\n"
    "                       debian-bookworm or desktop once built, or one imported or\n"
    "                       committed (`cell image ls`)\n"
    "  --lane NAME          durable writable layer (see `cell lane create`);\n"
    "                       without it, changes vanish when the cell ends\n"
    "  --memory SIZE        memory limit, e.g. 256M, 2G (default: none)\n"
    "  --cpus N             CPU limit in CPUs, e.g. 1, 0.5 (default: none)\n"
    "  --pids N             maximum number of processes and threads (default: none)\n"
    "  --disk SIZE          size of the in-memory writable layer (default 1G);\n"
    "                       writes beyond it fail with ENOSPC\n"
    "  --timeout SECONDS    kill the cell after this long (exit code 124)\n"
    "  --mount SRC:DST[:ro] bind the host path SRC at DST in the cell (rw unless :ro)\n"
    "  --mask PATH          hide PATH (relative to SRC, e.g. .env) in the --mount or\n"
    "                       --overlay before it (repeatable): absent in read-only\n"
    "                       mounts and overlays, an empty private copy in rw ones\n"
    "  --tmpfs DST[:SIZE]   an empty in-memory directory at DST (default 64M)\n"
    "  --overlay SRC:DST[:SIZE]  the host directory SRC at DST, writable in the\n"
    "                       cell but never written: changes go to an in-memory\n"
    "                       layer of SIZE (default 1G) that vanishes with the cell\n"
    "  --cwd DIR            working directory inside the cell (default: the\n"
    "                       image's WorkingDir, else /)\n"
    "  --env NAME=VALUE     set an environment variable (repeatable)\n"
    "  --hostname NAME      the cell's hostname: one DNS label, 1-63 letters,\n"
    "                       digits and '-', no dots (default cell-<8 hex digits>)\n"
    "  --policy FILE        network policy (JSON, see docs/egress.md); without\n"
    "                       one the cell has no network at all\n"
    "  --upstream-ca FILE   PEM certificates trusted, besides the host's trust\n"
    "                       store, when verifying upstreams of intercepted HTTPS\n"
    "                       (`http` rules; private CAs, tests)\n"
    "  --secret NAME=FILE   the value of ${secret:NAME} in the policy's http rules\n"
    "                       is FILE's content (one trailing newline dropped), read\n"
    "                       on the host for each request: it never enters the cell\n"
    "                       (repeatable)\n"
    "  --user UID[:GID]     run as this uid/gid inside the cell (default: the\n"
    "                       image's User, else 0:0)\n"
    "  -t, --tty            run CMD on a pseudo-terminal (interactive shells);\n"
    "                       this terminal is put in raw mode while it runs\n"
    "  --json               (global) capture CMD's stdout and stderr and print,\n"
    "                       once it ends, the object `cell exec --json` prints:\n"
    "                       {exitCode (null if killed or timed out), timedOut,\n"
    "                       stdout, stderr, stdoutTruncated, stderrTruncated,\n"
    "                       durationMs}; each stream kept up to 1 MiB (the\n"
    "                       daemon's default maxOutputBytes), the rest read and\n"
    "                       dropped (flagged, warned about); invalid UTF-8\n"
    "                       becomes U+FFFD; stdin is still ours; not with -t\n"
    "\n"
    "exit codes: CMD's own; 128+N if killed by signal N; 124 timeout;\n"
    "125 the cell could not be created; 126 CMD cannot be executed; 127 not found\n"
    "(the same with --json, which prints its object only when CMD ran).\n";

struct run_opts {
    cell_options *cell;         /* the cell's definition (API v2), owned */
    char       *policy;         /* read from --policy FILE, owned */
    const char *upstream_ca;
    const char *image, *lane;   /* --image, --lane as given */
    int         user_set;       /* --user given */
    cell_image_config defaults; /* the image's config (image_defaults), owned */
    char      **cmd;            /* the command from it, or NULL: argv's */
    const char *env[256];
    size_t      n_env;
    const char *cwd;
    double      timeout;
    int         tty;
    uid_t       uid;
    gid_t       gid;
    struct {
        const char *name;       /* NUL-terminated inside the --secret argument */
        const char *file;
    } secrets[32];
    size_t      n_secrets;
    const char *mask_target;    /* DST of the last --mount SRC:DST or --overlay, for --mask */
};

/* cell_net_secret_fn for --secret: read at each use, so a rotated file
 * takes effect on the next request; the value stays on the host. */
static int run_secret(void *user, const char *name, char **value, size_t *len)
{
    const struct run_opts *o = user;
    for (size_t i = 0; i < o->n_secrets; i++) {
        if (strcmp(o->secrets[i].name, name) != 0)
            continue;
        if (util_read_file(o->secrets[i].file, 64 * 1024, value, len, NULL) < 0)
            return -1;
        if (*len && (*value)[*len - 1] == '\n')
            (*value)[--*len] = '\0';
        return 0;
    }
    return -1;
}

static int parse_secret(struct run_opts *o, char *spec)
{
    char *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1])
        return cli_fail(CLI_EXIT_USAGE, "invalid --secret '%s': expected NAME=FILE", spec);
    *eq = '\0';
    /* The daemon's rule for secret names (/v1/secrets), so a policy means the same under both. */
    if (!util_valid_name(spec))
        return cli_fail(CLI_EXIT_USAGE,
                        "invalid --secret name '%s': 1-63 letters, digits, '_', '-' and '.', not starting with '-' or '.'",
                        spec);
    if (access(eq + 1, R_OK) < 0)
        return cli_fail(CLI_EXIT_USAGE, "--secret %s=%s: %s", spec, eq + 1, strerror(errno));
    if (o->n_secrets >= sizeof o->secrets / sizeof o->secrets[0])
        return cli_fail(CLI_EXIT_USAGE, "too many --secret options (at most %zu)", sizeof o->secrets / sizeof o->secrets[0]);
    o->secrets[o->n_secrets].name = spec;
    o->secrets[o->n_secrets++].file = eq + 1;
    return 0;
}

/* libcell refused the value of `flag` (a cell_options setter): exit 125 as
 * when cell_create refuses a cell, 2 staying for what this parser refuses. */
static int option_refused(const char *flag, const cell_error *err)
{
    const char *m = err->message;
    if (strncmp(m, "options: ", 9) == 0)
        m += 9;
    return cli_fail(CLI_EXIT_INTERNAL, "%s: %s", flag, m);
}

/* The egress settings of --policy, --upstream-ca and --secret, known once
 * every option is read. */
static int set_egress(struct run_opts *o)
{
    if (!o->policy)
        return 0;
    cell_egress *e = NULL;
    cell_error err = { 0 };
    int rc = cell_egress_new(&e, o->policy, &err) < 0 || cell_egress_set_upstream_ca(e, o->upstream_ca, &err) < 0 ||
             (o->n_secrets && (cell_egress_set_secret(e, run_secret, &err) < 0 ||
                               cell_egress_set_user(e, o, &err) < 0)) ||
             cell_options_set_egress(o->cell, e, &err) < 0 ? option_refused("--policy", &err) : 0;
    cell_egress_free(e);
    return rc;
}

/* The parsers return 0 or the exit code of their (already printed) error. */
static int parse_uint(const char *text, const char *what, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (!*text || *end || errno || v > max || text[0] == '-')
        return cli_fail(CLI_EXIT_USAGE, "invalid %s '%s': expected a whole number up to %lu", what, text, max);
    *out = v;
    return 0;
}

static int parse_mount(struct run_opts *o, char *spec, int memory)
{
    cell_error err = { 0 };
    if (memory) {
        /* DST[:SIZE] */
        uint64_t size = 0;
        char *colon = strchr(spec, ':');
        if (colon) {
            *colon = '\0';
            if (cell_parse_size(colon + 1, &size, &err) < 0)
                return cli_fail(CLI_EXIT_USAGE, "--tmpfs %s: %s", spec, err.message);
        }
        if (cell_options_add_tmpfs(o->cell, spec, size, &err) < 0)
            return option_refused("--tmpfs", &err);
    } else {
        /* SRC:DST[:ro|rw] */
        char *first = strchr(spec, ':');
        if (!first || first == spec || !first[1])
            return cli_fail(CLI_EXIT_USAGE, "invalid --mount '%s': expected SRC:DST[:ro|rw], e.g. ./repo:/workspace", spec);
        *first = '\0';
        char *dst = first + 1;
        char *mode = strrchr(dst, ':');
        unsigned flags = 0;
        if (mode) {
            *mode++ = '\0';
            if (strcmp(mode, "ro") == 0)
                flags = CELL_MOUNT_READONLY;
            else if (strcmp(mode, "rw") != 0)
                return cli_fail(CLI_EXIT_USAGE, "invalid --mount mode '%s': use ro or rw", mode);
        }
        if (cell_options_add_bind(o->cell, spec, dst, flags, &err) < 0)
            return option_refused("--mount", &err);
        o->mask_target = dst;
    }
    return 0;
}

/* SRC:DST[:SIZE] */
static int parse_overlay(struct run_opts *o, char *spec)
{
    cell_error err = { 0 };
    char *dst = strchr(spec, ':');
    if (!dst || dst == spec || !dst[1])
        return cli_fail(CLI_EXIT_USAGE, "invalid --overlay '%s': expected SRC:DST[:SIZE], e.g. ./repo:/workspace:2G",
                        spec);
    *dst++ = '\0';
    uint64_t size = 0;
    char *colon = strchr(dst, ':');
    if (colon) {
        *colon = '\0';
        if (cell_parse_size(colon + 1, &size, &err) < 0)
            return cli_fail(CLI_EXIT_USAGE, "--overlay %s:%s: %s", spec, dst, err.message);
    }
    if (cell_options_add_overlay(o->cell, spec, dst, size, &err) < 0)
        return option_refused("--overlay", &err);
    o->mask_target = dst;
    return 0;
}

/* File scope: main.c's first pass reads the table too (cli/opts.h). */
enum { O_IMAGE = 1, O_LANE, O_MEMORY, O_CPUS, O_PIDS, O_DISK, O_TIMEOUT, O_MOUNT, O_TMPFS, O_CWD, O_ENV,
       O_HOSTNAME, O_USER, O_HELP, O_TTY, O_POLICY, O_UPSTREAM_CA, O_SECRET, O_OVERLAY, O_MASK };
const struct option cli_run_options[] = {
    { "image", required_argument, 0, O_IMAGE }, { "lane", required_argument, 0, O_LANE },
    { "memory", required_argument, 0, O_MEMORY }, { "cpus", required_argument, 0, O_CPUS },
    { "pids", required_argument, 0, O_PIDS }, { "disk", required_argument, 0, O_DISK },
    { "timeout", required_argument, 0, O_TIMEOUT }, { "mount", required_argument, 0, O_MOUNT },
    { "tmpfs", required_argument, 0, O_TMPFS }, { "cwd", required_argument, 0, O_CWD },
    { "env", required_argument, 0, O_ENV }, { "hostname", required_argument, 0, O_HOSTNAME },
    { "user", required_argument, 0, O_USER }, { "help", no_argument, 0, O_HELP },
    { "tty", no_argument, 0, O_TTY }, { "policy", required_argument, 0, O_POLICY },
    { "upstream-ca", required_argument, 0, O_UPSTREAM_CA }, { "secret", required_argument, 0, O_SECRET },
    { "overlay", required_argument, 0, O_OVERLAY }, { "mask", required_argument, 0, O_MASK },
    { 0, 0, 0, 0 },
};

static int parse_run_options(struct run_opts *o, int argc, char **argv, int *first_cmd)
{
    opterr = 0;
    optind = 1;
    int c;
    cell_error err = { 0 };
    unsigned long v;
    uint64_t size;
    int rc;
    while ((c = getopt_long(argc, argv, "+:ht", cli_run_options, NULL)) != -1) {
        switch (c) {
        case O_IMAGE:
            if (cell_options_set_image(o->cell, optarg, &err) < 0)
                return option_refused("--image", &err);
            o->image = optarg;
            break;
        case O_LANE:
            if (cell_options_set_lane(o->cell, optarg, &err) < 0)
                return option_refused("--lane", &err);
            o->lane = optarg;
            break;
        case O_HOSTNAME:
            if (cell_options_set_hostname(o->cell, optarg, &err) < 0)
                return option_refused("--hostname", &err);
            break;
        case O_POLICY: {
            size_t len;
            free(o->policy);
            o->policy = NULL;
            if (util_read_file(optarg, 1 << 20, &o->policy, &len, &err) < 0 ||
                cell_policy_check(o->policy, &err) < 0)
                return cli_fail(CLI_EXIT_USAGE, "--policy %s: %s", optarg, err.message);
            break;
        }
        case O_UPSTREAM_CA:
            if (access(optarg, R_OK) < 0)
                return cli_fail(CLI_EXIT_USAGE, "--upstream-ca %s: %s", optarg, strerror(errno));
            o->upstream_ca = optarg;
            break;
        case O_SECRET:
            if (parse_secret(o, optarg) != 0)
                return CLI_EXIT_USAGE;
            break;
        case O_CWD: o->cwd = optarg; break;
        case O_MEMORY:
            if (cell_parse_size(optarg, &size, &err) < 0)
                return cli_fail(CLI_EXIT_USAGE, "--memory: %s", err.message);
            if (cell_options_set_memory(o->cell, size, &err) < 0)
                return option_refused("--memory", &err);
            break;
        case O_DISK:
            if (cell_parse_size(optarg, &size, &err) < 0)
                return cli_fail(CLI_EXIT_USAGE, "--disk: %s", err.message);
            if (cell_options_set_disk(o->cell, size, &err) < 0)
                return option_refused("--disk", &err);
            break;
        case O_CPUS: {
            char *end;
            double cpus = strtod(optarg, &end);
            if (!*optarg || *end || !(cpus > 0) || cpus > 4096)
                return cli_fail(CLI_EXIT_USAGE, "invalid --cpus '%s': expected a positive number such as 1 or 0.5", optarg);
            if (cell_options_set_cpu(o->cell, (uint32_t)(cpus * 1000 + 0.5), &err) < 0)
                return option_refused("--cpus", &err);
            break;
        }
        case O_PIDS:
            if (parse_uint(optarg, "--pids", 4194304, &v) != 0)
                return CLI_EXIT_USAGE;
            if (v == 0)
                return cli_fail(CLI_EXIT_USAGE, "invalid --pids 0: a cell needs at least one process");
            if (cell_options_set_pids(o->cell, (uint32_t)v, &err) < 0)
                return option_refused("--pids", &err);
            break;
        case O_TIMEOUT: {
            char *end;
            o->timeout = strtod(optarg, &end);
            if (!*optarg || *end || !(o->timeout > 0))
                return cli_fail(CLI_EXIT_USAGE, "invalid --timeout '%s': expected seconds > 0", optarg);
            break;
        }
        case O_MOUNT:
        case O_TMPFS:
            if ((rc = parse_mount(o, optarg, c == O_TMPFS)) != 0)
                return rc;
            break;
        case O_OVERLAY:
            if ((rc = parse_overlay(o, optarg)) != 0)
                return rc;
            break;
        case O_MASK:
            if (!o->mask_target)
                return cli_fail(CLI_EXIT_USAGE, "--mask %s: put it after the --mount SRC:DST or --overlay it "
                                "applies to", optarg);
            if (cell_options_add_mask(o->cell, o->mask_target, optarg, &err) < 0)
                return option_refused("--mask", &err);
            break;
        case O_ENV:
            if (!strchr(optarg, '=') || optarg[0] == '=')
                return cli_fail(CLI_EXIT_USAGE, "invalid --env '%s': expected NAME=VALUE", optarg);
            if (o->n_env >= sizeof o->env / sizeof o->env[0] - 8)
                return cli_fail(CLI_EXIT_USAGE, "too many --env options");
            o->env[o->n_env++] = optarg;
            break;
        case O_USER: {
            o->user_set = 1;
            char *colon = strchr(optarg, ':');
            if (colon)
                *colon = '\0';
            if (parse_uint(optarg, "--user uid", 65535, &v) != 0)
                return CLI_EXIT_USAGE;
            o->uid = (uid_t)v;
            o->gid = (gid_t)v;
            if (colon) {
                if (parse_uint(colon + 1, "--user gid", 65535, &v) != 0)
                    return CLI_EXIT_USAGE;
                o->gid = (gid_t)v;
            }
            break;
        }
        case 't':
        case O_TTY:
            o->tty = 1;
            break;
        case 'h':
        case O_HELP:
            fputs(cli_run_usage, stdout);
            exit(0);
        default:
            return cli_getopt_fail("run", c, argc, argv);
        }
    }
    if (optind >= argc && !o->image && !o->lane) /* an image's Entrypoint/Cmd may be the command */
        return cli_fail(CLI_EXIT_USAGE, "no command given: cell run [OPTIONS] -- CMD [ARGS...]");
    *first_cmd = optind;
    return set_egress(o);
}

/* An imported image's config fills what the command line left out: its Env
 * (after --env, for names not given), WorkingDir, User, and Entrypoint+Cmd
 * as the command when none is given (argv then points into the config). */
static int image_defaults(struct run_opts *o, cell_ctx *ctx, int argc, int *first)
{
    cell_error err = { 0 };
    const char *image = o->image;
    cell_lane_info lane;
    if (!image && o->lane && cell_lane_get(ctx, o->lane, &lane, NULL) == 0)
        image = lane.image;
    cell_image_config *d = &o->defaults;
    if (cell_image_config_get(ctx, image, d, &err) < 0)
        return cli_fail_err(CLI_EXIT_INTERNAL, &err);
    for (size_t i = 0; i < d->n_env && o->n_env < sizeof o->env / sizeof o->env[0] - 8; i++) {
        size_t len = strcspn(d->env[i], "=");
        int set = 0;
        for (size_t j = 0; j < o->n_env; j++)
            set |= strncmp(o->env[j], d->env[i], len) == 0 && o->env[j][len] == '=';
        if (!set && d->env[i][len] == '=')
            o->env[o->n_env++] = d->env[i];
    }
    if (!o->cwd)
        o->cwd = d->cwd;
    if (!o->user_set && d->has_user) {
        o->uid = d->uid;
        o->gid = d->gid;
    }
    if (*first < argc)
        return 0;
    if (!d->n_argv)
        return cli_fail(CLI_EXIT_USAGE, "no command given, and image '%s' has no Entrypoint or Cmd: "
                        "cell run [OPTIONS] -- CMD [ARGS...]", image ? image : "host");
    o->cmd = d->argv;
    return 0;
}

/* The user's --env values, then the defaults for names they did not set:
 * one entry per name, so no program sees two PATHs. */
static void build_env(struct run_opts *o)
{
    static const char *const defaults[] = {
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "TERM=xterm",
    };
    for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++) {
        size_t name_len = (size_t)(strchr(defaults[i], '=') - defaults[i]);
        int overridden = 0;
        for (size_t j = 0; j < o->n_env; j++)
            if (strncmp(o->env[j], defaults[i], name_len + 1) == 0)
                overridden = 1;
        if (!overridden)
            o->env[o->n_env++] = defaults[i];
    }
    if (o->uid != 0) {
        for (size_t j = 0; j < o->n_env; j++)
            if (strcmp(o->env[j], "HOME=/root") == 0)
                o->env[j] = "HOME=/tmp";
    }
    o->env[o->n_env] = NULL;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int exit_code_of(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return CLI_EXIT_INTERNAL;
}

/* Copy what is readable on `from` to `to`; 0 at EOF or error. */
static int relay(int from, int to)
{
    char buf[16384];
    ssize_t n = read(from, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 1;
    if (n <= 0)
        return 0;
    return util_write_all(to, buf, (size_t)n) >= 0;
}

/* --json: CMD's stdout and stderr read from pipes into buffers of at most
 * RUN_JSON_MAX bytes each; what comes beyond is read and dropped, so that
 * CMD never blocks on a full pipe. */
#define RUN_JSON_MAX (1u << 20)     /* the daemon's default maxOutputBytes (procs.c) */
struct capture {
    int    fd[2];                   /* read ends, non-blocking; -1 at EOF or unused */
    char  *buf[2];
    size_t len[2];
    int    truncated[2];
};

/* Read what is there on stream i; 0 at EOF (fd closed), 1 otherwise. */
static int capture_read(struct capture *cap, int i)
{
    char chunk[16384];
    ssize_t n = read(cap->fd[i], chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 1;
    if (n <= 0) {
        close(cap->fd[i]);
        cap->fd[i] = -1;
        return 0;
    }
    size_t room = RUN_JSON_MAX - cap->len[i], take = (size_t)n < room ? (size_t)n : room;
    if (take) {
        char *b = realloc(cap->buf[i], cap->len[i] + take);
        if (!b) {           /* kept short, and said so */
            cap->truncated[i] = 1;
            return 1;
        }
        memcpy(b + cap->len[i], chunk, take);
        cap->buf[i] = b;
        cap->len[i] += take;
    }
    cap->truncated[i] |= take < (size_t)n;
    return 1;
}

/* After CMD's exit: what it wrote is in the pipes (its writes returned
 * before it exited); read until empty.  A child of CMD still holding a
 * write end gives EAGAIN, not EOF: the cell and the child go next. */
static void capture_drain(struct capture *cap)
{
    for (int i = 0; i < 2; i++)
        while (cap->fd[i] >= 0 && poll(&(struct pollfd){ .fd = cap->fd[i], .events = POLLIN }, 1, 0) > 0 &&
               capture_read(cap, i))
            ;
}

static json_t *lossy_json(const char *s, size_t len)
{
    size_t n;
    char *u = util_utf8_lossy((const unsigned char *)(s ? s : ""), len, &n);
    json_t *v = u ? json_stringn(u, n) : NULL;
    free(u);
    return v;
}

/* The object of `cell exec --json` (ProcessRunResponse in docs/openapi.json). */
static int print_capture(const struct capture *cap, int status, int exited, int timed_out, double ms)
{
    json_t *o = json_object();
    json_object_set_new(o, "exitCode", exited && !timed_out && WIFEXITED(status) ? json_integer(WEXITSTATUS(status))
                                                                                  : json_null());
    json_object_set_new(o, "timedOut", json_boolean(timed_out));
    json_object_set_new(o, "stdout", lossy_json(cap->buf[0], cap->len[0]));
    json_object_set_new(o, "stderr", lossy_json(cap->buf[1], cap->len[1]));
    json_object_set_new(o, "stdoutTruncated", json_boolean(cap->truncated[0]));
    json_object_set_new(o, "stderrTruncated", json_boolean(cap->truncated[1]));
    json_object_set_new(o, "durationMs", json_integer((json_int_t)ms));
    if (!json_is_string(json_object_get(o, "stdout")) || !json_is_string(json_object_get(o, "stderr"))) {
        json_decref(o);
        return cli_fail(CLI_EXIT_INTERNAL, "run: --json: out of memory");
    }
    if (cap->truncated[0] || cap->truncated[1])
        cli_fail(0, "run: --json: the output was cut at 1 MiB per stream (stdoutTruncated, stderrTruncated); "
                    "without --json it goes through whole");
    cli_print_json(o);
    return 0;
}

/* Wait for `pid` while forwarding SIGINT/SIGTERM/SIGHUP/SIGQUIT to it and,
 * with a terminal (pty >= 0), relaying stdin/stdout and window sizes; with
 * cap, reading CMD's output into it.  *status is the wait status when CMD
 * exited (*exited set). */
static int supervise(cell *c, pid_t pid, double timeout, int sfd, int pty, struct capture *cap, int *timed_out,
                     int *status, int *exited)
{
    double deadline = timeout > 0 ? now_seconds() + timeout : 0;
    int stdin_open = pty >= 0;
    for (;;) {
        int wait_ms = -1;
        if (deadline) {
            double left = deadline - now_seconds();
            if (left <= 0) {
                *timed_out = 1;
                return CLI_EXIT_TIMEOUT;
            }
            wait_ms = (int)(left * 1000) + 1;
        }
        struct pollfd p[6] = { { .fd = cell_event_fd(c), .events = POLLIN }, { .fd = sfd, .events = POLLIN },
                               { .fd = pty, .events = POLLIN }, { .fd = stdin_open ? 0 : -1, .events = POLLIN },
                               { .fd = cap ? cap->fd[0] : -1, .events = POLLIN },
                               { .fd = cap ? cap->fd[1] : -1, .events = POLLIN } };
        if (poll(p, 6, wait_ms) < 0 && errno != EINTR)
            return cli_fail(CLI_EXIT_INTERNAL, "poll: %s", strerror(errno));
        for (int i = 0; i < 2; i++)
            if (p[4 + i].revents)
                capture_read(cap, i);
        if (p[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                struct winsize ws;
                if (si.ssi_signo == SIGWINCH) {
                    if (pty >= 0 && ioctl(0, TIOCGWINSZ, &ws) == 0)
                        cell_resize(c, pid, ws.ws_row, ws.ws_col, NULL);
                } else {
                    cell_signal(c, pid, (int)si.ssi_signo, NULL);
                }
            }
        }
        if (p[2].revents & (POLLIN | POLLHUP))
            relay(pty, 1);
        if (p[3].revents & (POLLIN | POLLHUP) && !relay(0, pty))
            stdin_open = 0;
        if (p[0].revents) {
            cell_exit ex;
            cell_error err = { 0 };
            int r = cell_wait_exit(c, 0, &ex, &err);
            if (r < 0)
                return cli_fail_err(CLI_EXIT_INTERNAL, &err);
            if (r == 1 && ex.pid == pid) {
                /* Whatever the process wrote last is still in the pty. */
                while (pty >= 0 && poll(&(struct pollfd){ .fd = pty, .events = POLLIN }, 1, 0) > 0 && relay(pty, 1))
                    ;
                *status = ex.status;
                *exited = 1;
                return exit_code_of(ex.status);
            }
        }
    }
}

static void run_opts_free(struct run_opts *o)
{
    cell_options_free(o->cell);
    free(o->policy);
    cell_image_config_free(&o->defaults);
    free(o);
}

int cli_run(struct cli_global *g, int argc, char **argv)
{
    struct run_opts *o = calloc(1, sizeof *o);
    if (!o || cell_options_new(&o->cell, NULL) < 0) {
        free(o);
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    }
    int first = 0, rc = parse_run_options(o, argc, argv, &first);
    if (rc == 0 && g->json && o->tty)
        rc = cli_fail(CLI_EXIT_USAGE, "run: --json captures CMD's output: not with -t/--tty");
    if (rc != 0) {
        run_opts_free(o);
        return rc;
    }
    cell_ctx *ctx = NULL;
    if ((rc = cli_open(g, &ctx)) != 0) {
        run_opts_free(o);
        return rc;
    }
    if ((rc = image_defaults(o, ctx, argc, &first)) != 0) {
        cell_ctx_close(ctx);
        run_opts_free(o);
        return rc;
    }
    build_env(o);
    /* Signals meant for the command arrive here; block them now so none is
     * lost between boot and supervision. */
    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGQUIT);
    sigaddset(&mask, SIGWINCH);
    sigprocmask(SIG_BLOCK, &mask, &old);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);

    cell *c = NULL;
    cell_error err = { 0 };
    int timed_out = 0, pty = -1, restore_tty = 0, status = 0, exited = 0;
    struct termios saved_tty;
    struct capture cap = { .fd = { -1, -1 } };
    int wr[2] = { -1, -1 };             /* --json: the pipes' write ends, CMD's stdout and stderr */
    for (int i = 0; g->json && i < 2; i++) {
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) < 0) {
            rc = cli_fail(CLI_EXIT_INTERNAL, "run: --json: cannot make a pipe for CMD's output: %s", strerror(errno));
            goto out;
        }
        cap.fd[i] = pfd[0];
        wr[i] = pfd[1];
        if (fcntl(pfd[0], F_SETFL, O_NONBLOCK) < 0) {
            rc = cli_fail(CLI_EXIT_INTERNAL, "run: --json: fcntl O_NONBLOCK: %s", strerror(errno));
            goto out;
        }
    }
    if (cell_create_v2(ctx, o->cell, &c, &err) < 0) {
        rc = cli_fail_err(CLI_EXIT_INTERNAL, &err);
        goto out;
    }
    cell_proc_spec spec = {
        .argv = o->cmd ? (const char *const *)o->cmd : (const char *const *)argv + first, .env = o->env, .cwd = o->cwd, .uid = o->uid, .gid = o->gid,
        .stdin_fd = 0, .stdout_fd = g->json ? wr[0] : 1, .stderr_fd = g->json ? wr[1] : 2, .tty = o->tty,
    };
    double started = now_seconds();
    struct winsize ws;
    if (o->tty && ioctl(0, TIOCGWINSZ, &ws) == 0) {
        spec.rows = ws.ws_row;
        spec.cols = ws.ws_col;
    }
    pid_t pid;
    int spawned = cell_spawn(c, &spec, &pid, o->tty ? &pty : NULL, &err);
    /* CMD has its copies: ours would keep the pipes from ending. */
    for (int i = 0; i < 2; i++)
        if (wr[i] >= 0) {
            close(wr[i]);
            wr[i] = -1;
        }
    if (spawned < 0) {
        rc = cli_fail_err(err.code == ENOENT && strstr(err.message, "not found") ? CLI_EXIT_NOTFOUND
                          : err.code == EACCES || err.code == ENOEXEC ? CLI_EXIT_CANNOT
                                                                        : CLI_EXIT_INTERNAL, &err);
        goto out;
    }
    /* Raw mode: keys (^C included) go to the cell's terminal, whose line
     * discipline turns them into signals there. */
    if (o->tty && isatty(0) && tcgetattr(0, &saved_tty) == 0) {
        struct termios raw = saved_tty;
        cfmakeraw(&raw);
        if (tcsetattr(0, TCSANOW, &raw) == 0)
            restore_tty = 1;
    }
    rc = supervise(c, pid, o->timeout, sfd, pty, g->json ? &cap : NULL, &timed_out, &status, &exited);
    if (restore_tty)
        tcsetattr(0, TCSANOW, &saved_tty);
    if (timed_out)
        cli_fail(CLI_EXIT_TIMEOUT, "timed out after %g s; the cell was killed", o->timeout);
    if (g->json && (exited || timed_out)) {
        capture_drain(&cap);
        int prc = print_capture(&cap, status, exited, timed_out, (now_seconds() - started) * 1000);
        if (prc)
            rc = prc;
    }
out:
    for (int i = 0; i < 2; i++) {
        if (wr[i] >= 0)
            close(wr[i]);
        if (cap.fd[i] >= 0)
            close(cap.fd[i]);
        free(cap.buf[i]);
    }
    if (pty >= 0)
        close(pty);
    cell_destroy(c);
    cell_ctx_close(ctx);
    if (sfd >= 0)
        close(sfd);
    sigprocmask(SIG_SETMASK, &old, NULL);
    run_opts_free(o);
    return rc;
}
