/* oci_main.c: cell-oci's command line, runc's syntax (global options, then
 * a command and its options; Go's flag package also takes -flag, hence
 * getopt_long_only).  Flags that runc takes and cell does not need are
 * accepted and listed in docs/oci.md. */
#include "oci/oci.h"
#include "isolate/isolate.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define OCI_VERSION_TEXT "cell-oci version 0.1\nspec: 1.0.2\n"
#define OCI_DEFAULT_ROOT "/run/cell-oci"

struct globals {
    const char *root;
    const char *log;
    int         json;
    int         debug;
    int         systemd_cgroup;
};

static void usage(FILE *f)
{
    fputs("usage: cell-oci [--root DIR] [--log FILE] [--log-format text|json] [--debug] [--systemd-cgroup]\n"
          "                COMMAND [OPTIONS] ID\n"
          "commands:\n"
          "  create [--bundle DIR] [--pid-file FILE] [--console-socket SOCK] [--no-pivot] ID\n"
          "  start ID\n"
          "  run [--bundle DIR] [--pid-file FILE] [--console-socket SOCK] [--detach] [--keep] ID\n"
          "  state ID\n"
          "  kill [--all] ID [SIGNAL]\n"
          "  delete [--force] ID\n"
          "  exec [--process FILE] [--detach] [--pid-file F] [--console-socket S] [--tty] [--cwd DIR]\n"
          "       [--env K=V]... [--user UID[:GID]] ID [COMMAND [ARG...]]\n"
          "  update --resources FILE|- ID\n"
          "  ps --format json ID\n"
          "  list --format json\n"
          "  features\n"
          "  --version\n"
          "A runc-compatible OCI runtime: containers confined as cell's cells (docs/oci.md).\n", f);
}

/* A failure: the message on stderr and, with --log, as an error line. */
static int failed(const cell_error *err)
{
    oci_log_error(err);
    return 1;
}

static int usage_error(const char *fmt, const char *arg)
{
    cell_error err = { .code = EINVAL };
    snprintf(err.message, sizeof err.message, fmt, arg ? arg : "");
    oci_log_error(&err);
    return 2;
}

static int parse_signal(const char *text, int *sig)
{
    static const struct { const char *name; int sig; } names[] = {
        { "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT }, { "KILL", SIGKILL }, { "USR1", SIGUSR1 },
        { "USR2", SIGUSR2 }, { "TERM", SIGTERM }, { "CONT", SIGCONT }, { "STOP", SIGSTOP }, { "TSTP", SIGTSTP },
        { "WINCH", SIGWINCH }, { "PIPE", SIGPIPE }, { "ALRM", SIGALRM },
    };
    const char *n = strncmp(text, "SIG", 3) == 0 ? text + 3 : text;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(names[i].name, n) == 0) {
            *sig = names[i].sig;
            return 0;
        }
    char *end;
    long v = strtol(text, &end, 10);
    if (*text && !*end && v > 0 && v <= SIGRTMAX) {
        *sig = (int)v;
        return 0;
    }
    return -1;
}

/* The one ID operand a command takes (kill also takes a signal). */
static const char *operand_id(int argc, char **argv, int max_extra)
{
    if (optind >= argc || argc - optind > 1 + max_extra)
        return NULL;
    return argv[optind];
}

enum { OPT_BUNDLE = 'b', OPT_DETACH = 'd', OPT_PID_FILE = 256, OPT_CONSOLE, OPT_NO_PIVOT, OPT_IGNORED,
       OPT_IGNORED_ARG, OPT_KEEP };

static pid_t run_child = -1;

static void forward_signal(int sig)
{
    if (run_child > 0)
        kill(run_child, sig);
}

static int cmd_create(const struct globals *g, int argc, char **argv, int run)
{
    static const struct option opts[] = {
        { "bundle", required_argument, NULL, OPT_BUNDLE },
        { "pid-file", required_argument, NULL, OPT_PID_FILE },
        { "console-socket", required_argument, NULL, OPT_CONSOLE },
        { "no-pivot", no_argument, NULL, OPT_NO_PIVOT },
        { "detach", no_argument, NULL, OPT_DETACH },
        { "keep", no_argument, NULL, OPT_KEEP },
        /* runc's, not needed by cell (docs/oci.md) */
        { "no-new-keyring", no_argument, NULL, OPT_IGNORED },
        { "no-subreaper", no_argument, NULL, OPT_IGNORED },
        { "preserve-fds", required_argument, NULL, OPT_IGNORED_ARG },
        { "pidfd-socket", required_argument, NULL, OPT_IGNORED_ARG },
        { NULL, 0, NULL, 0 },
    };
    struct oci_create_opts o = { .root = g->root, .bundle = ".", .systemd_cgroup = g->systemd_cgroup };
    int detach = 0, keep = 0, c;
    while ((c = getopt_long_only(argc, argv, "+b:d", opts, NULL)) != -1) {
        switch (c) {
        case OPT_BUNDLE: o.bundle = optarg; break;
        case OPT_PID_FILE: o.pid_file = optarg; break;
        case OPT_CONSOLE: o.console_socket = optarg; break;
        case OPT_DETACH: detach = 1; break;
        case OPT_KEEP: keep = 1; break;
        case OPT_NO_PIVOT: /* pivot_root always (docs/oci.md) */
        case OPT_IGNORED:
        case OPT_IGNORED_ARG:
            break;
        default:
            return usage_error("%s: unknown option (cell-oci --help lists them)", argv[0]);
        }
    }
    if (!run && (detach || keep))
        return usage_error("create: --detach and --keep are options of run%s", NULL);
    if (!(o.id = operand_id(argc, argv, 0)))
        return usage_error("%s needs exactly one container ID", argv[0]);
    char bundle[PATH_MAX];
    if (!realpath(o.bundle, bundle)) {
        cell_error err;
        util_fail_errno(&err, "--bundle %s", o.bundle);
        return failed(&err);
    }
    o.bundle = bundle;
    cell_error err = { 0 };
    pid_t child;
    if (oci_create(&o, &child, &err) < 0)
        return failed(&err);
    oci_log("debug", "container %s created, init pid %d", o.id, (int)child);
    if (!run)
        return 0;
    if (!detach) {
        run_child = child;
        struct sigaction sa = { .sa_handler = forward_signal };
        for (int sig = SIGHUP; sig <= SIGTERM; sig++)
            if (sig != SIGKILL && sig != SIGSEGV && sig != SIGCHLD && sig != SIGPIPE && sig != SIGSTOP)
                (void)sigaction(sig, &sa, NULL);
    }
    if (oci_start(g->root, o.id, &err) < 0) {
        cell_error ignored;
        oci_delete(g->root, o.id, 1, &ignored);
        return failed(&err);
    }
    if (detach)
        return 0;
    int code = oci_wait_exit(child);
    if (!keep && oci_delete(g->root, o.id, 1, &err) < 0)
        oci_log_error(&err);
    return code;
}

static int cmd_simple(const struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        { "all", no_argument, NULL, 'a' },
        { "force", no_argument, NULL, 'f' },
        { "format", required_argument, NULL, 'F' },
        { NULL, 0, NULL, 0 },
    };
    const char *cmd = argv[0];
    int is_kill = strcmp(cmd, "kill") == 0, is_delete = strcmp(cmd, "delete") == 0, is_ps = strcmp(cmd, "ps") == 0;
    int all = 0, force = 0, c;
    while ((c = getopt_long_only(argc, argv, is_ps ? "+F:" : "+af", opts, NULL)) != -1) {
        if (c == 'a' && is_kill)
            all = 1;
        else if (c == 'f' && is_delete)
            force = 1;
        else if (c == 'F' && is_ps && strcmp(optarg, "json") == 0)
            continue;
        else
            return usage_error(c == 'F' ? "%s: --format json is the one format cell-oci prints" :
                               "%s: unknown option (cell-oci --help lists them)", cmd);
    }
    const char *id = operand_id(argc, argv, is_kill);
    if (!id)
        return usage_error(is_kill ? "kill needs a container ID and at most one signal%s" :
                           "%s needs exactly one container ID", is_kill ? NULL : cmd);
    cell_error err = { 0 };
    int rc;
    if (is_kill) {
        int sig = SIGTERM;
        if (optind + 1 < argc && parse_signal(argv[optind + 1], &sig) < 0)
            return usage_error("kill: '%s' is not a signal (a name such as KILL or TERM, or a number)",
                               argv[optind + 1]);
        rc = oci_kill(g->root, id, sig, all, &err);
    } else if (is_delete) {
        rc = oci_delete(g->root, id, force, &err);
    } else if (strcmp(cmd, "start") == 0) {
        rc = oci_start(g->root, id, &err);
    } else if (is_ps) {
        rc = oci_ps(g->root, id, &err);
    } else if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0) {
        rc = oci_pause(g->root, id, strcmp(cmd, "pause") == 0, &err);
    } else {
        rc = oci_state_print(g->root, id, &err);
    }
    return rc < 0 ? failed(&err) : 0;
}

#define OCI_MAX_EXEC_ENV 256

static int cmd_exec(const struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        { "process", required_argument, NULL, 'p' },
        { "detach", no_argument, NULL, 'd' },
        { "pid-file", required_argument, NULL, OPT_PID_FILE },
        { "console-socket", required_argument, NULL, OPT_CONSOLE },
        { "tty", no_argument, NULL, 't' },
        { "cwd", required_argument, NULL, 'w' },
        { "env", required_argument, NULL, 'e' },
        { "user", required_argument, NULL, 'u' },
        /* runc's, not needed by cell (docs/oci.md) */
        { "no-new-privs", no_argument, NULL, OPT_IGNORED },
        { "ignore-paused", no_argument, NULL, OPT_IGNORED },
        { "preserve-fds", required_argument, NULL, OPT_IGNORED_ARG },
        { "process-label", required_argument, NULL, OPT_IGNORED_ARG },
        { "apparmor", required_argument, NULL, OPT_IGNORED_ARG },
        { "cap", required_argument, NULL, OPT_IGNORED_ARG },
        { "additional-gids", required_argument, NULL, OPT_IGNORED_ARG },
        { "cgroup", required_argument, NULL, OPT_IGNORED_ARG },
        { "pidfd-socket", required_argument, NULL, OPT_IGNORED_ARG },
        { NULL, 0, NULL, 0 },
    };
    const char *env[OCI_MAX_EXEC_ENV];
    struct oci_exec_opts o = { .root = g->root, .env = env };
    int c;
    while ((c = getopt_long_only(argc, argv, "+p:dte:u:c:g:", opts, NULL)) != -1) {
        switch (c) {
        case 'p': o.process = optarg; break;
        case 'd': o.detach = 1; break;
        case OPT_PID_FILE: o.pid_file = optarg; break;
        case OPT_CONSOLE: o.console_socket = optarg; break;
        case 't': o.tty = 1; break;
        case 'w': o.cwd = optarg; break;
        case 'u': o.user = optarg; break;
        case 'e':
            if (o.n_env == OCI_MAX_EXEC_ENV || !strchr(optarg, '='))
                return usage_error("exec: --env '%s' must be NAME=VALUE (at most 256 of them)", optarg);
            env[o.n_env++] = optarg;
            break;
        case OPT_IGNORED:
        case OPT_IGNORED_ARG:
        case 'c':
        case 'g':
            break;
        default:
            return usage_error("%s: unknown option (cell-oci --help lists them)", argv[0]);
        }
    }
    if (optind >= argc)
        return usage_error("exec needs a container ID%s", NULL);
    o.id = argv[optind];
    o.args = argv + optind + 1;
    if (o.process && *o.args)
        return usage_error("exec: give the command in --process or on the command line, not both%s", NULL);
    if (o.cwd && (o.cwd[0] != '/' || strstr(o.cwd, "/..")))
        return usage_error("exec: --cwd '%s' must be an absolute path without '..'", o.cwd);
    cell_error err = { 0 };
    int code;
    if (oci_exec(&o, &code, &err) < 0)
        return failed(&err);
    return code;
}

static int cmd_update(const struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        { "resources", required_argument, NULL, 'r' },
        { NULL, 0, NULL, 0 },
    };
    const char *file = NULL;
    int c;
    while ((c = getopt_long_only(argc, argv, "+r:", opts, NULL)) != -1)
        if (c == 'r')
            file = optarg;
        else
            return usage_error("update: give the limits as --resources FILE (linux.resources JSON; - = stdin)%s",
                               NULL);
    if (!file || optind != argc - 1)
        return usage_error("update needs --resources FILE and one container ID%s", NULL);
    cell_error err = { 0 };
    return oci_update(g->root, argv[optind], file, &err) < 0 ? failed(&err) : 0;
}

static int cmd_list(const struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        { "format", required_argument, NULL, 'f' },
        { "quiet", no_argument, NULL, 'q' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long_only(argc, argv, "+f:q", opts, NULL)) != -1)
        if (c != 'f' || strcmp(optarg, "json") != 0)
            return usage_error("list: only --format json is supported%s", NULL);
    if (optind != argc)
        return usage_error("list takes no operand%s", NULL);
    cell_error err = { 0 };
    return oci_list(g->root, &err) < 0 ? failed(&err) : 0;
}

static int cmd_features(void)
{
    json_t *caps = json_array();
    for (const int *c = isolate_caps_kept; *c >= 0; c++)
        json_array_append_new(caps, json_string(oci_cap_name(*c)));
    json_t *f = json_pack(
        "{s:s, s:s, s:[s,s,s,s,s,s], s:[s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s,s], s:{s:[s,s,s,s,s,s,s], s:o, s:{s:b, s:b, "
        "s:b}, s:{s:b}, s:{s:b}, s:{s:b}}, s:{s:s}}",
        "ociVersionMin", "1.0.0", "ociVersionMax", "1.1.0", "hooks", "prestart", "createRuntime", "createContainer",
        "startContainer", "poststart", "poststop", "mountOptions", "bind", "rbind", "ro", "rw",
        "nosuid", "suid", "nodev", "dev", "noexec", "exec", "noatime", "nodiratime", "relatime", "strictatime",
        "private", "rprivate", "slave", "rslave", "shared", "rshared", "linux", "namespaces", "cgroup", "ipc",
        "mount", "network", "pid", "user", "uts", "capabilities", caps, "cgroup", "v1", 0, "v2", 0, "systemd", 0,
        "seccomp", "enabled", 0, "apparmor", "enabled", 0, "selinux", "enabled", 0, "annotations",
        "dev.cell.oci.confinement", "cell's seccomp filter, capability set and /proc masks on every container");
    if (!f || json_dumpf(f, stdout, JSON_INDENT(2)) < 0)
        return 1;
    json_decref(f);
    putchar('\n');
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "root", required_argument, NULL, 'r' },
        { "log", required_argument, NULL, 'l' },
        { "log-format", required_argument, NULL, 'F' },
        { "debug", no_argument, NULL, 'D' },
        { "systemd-cgroup", no_argument, NULL, 'S' },
        { "version", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        /* runc's, not needed by cell (docs/oci.md) */
        { "rootless", required_argument, NULL, 'i' },
        { "criu", required_argument, NULL, 'i' },
        { NULL, 0, NULL, 0 },
    };
    struct globals g = { .root = OCI_DEFAULT_ROOT };
    const char *format = "text";
    int c;
    while ((c = getopt_long_only(argc, argv, "+vh", opts, NULL)) != -1) {
        switch (c) {
        case 'r': g.root = optarg; break;
        case 'l': g.log = optarg; break;
        case 'F': format = optarg; break;
        case 'D': g.debug = 1; break;
        case 'S': g.systemd_cgroup = 1; break; /* systemd's cgroupsPath form, mapped (docs/oci.md) */
        case 'i': break;
        case 'v': fputs(OCI_VERSION_TEXT, stdout); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (strcmp(format, "text") != 0 && strcmp(format, "json") != 0)
        return usage_error("--log-format '%s' must be text or json", format);
    g.json = strcmp(format, "json") == 0;
    cell_error err = { 0 };
    if (oci_log_open(g.log, g.json, g.debug, &err) < 0)
        return failed(&err);
    if (g.root[0] != '/')
        return usage_error("--root '%s' must be an absolute path", g.root);
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    char **cargv = argv + optind;
    int cargc = argc - optind;
    const char *cmd = cargv[0];
    optind = 0; /* glibc: restart getopt on the command's arguments */
    /* What becomes the container's init or an exec'd process: from a
     * sealed copy of this binary (oci_sealed.c, runc's CVE-2019-5736). */
    if ((strcmp(cmd, "create") == 0 || strcmp(cmd, "run") == 0 || strcmp(cmd, "exec") == 0) &&
        oci_run_sealed(argv, &err) < 0)
        return failed(&err);
    if (strcmp(cmd, "create") == 0 || strcmp(cmd, "run") == 0)
        return cmd_create(&g, cargc, cargv, strcmp(cmd, "run") == 0);
    static const char *const simple[] = { "start", "state", "kill", "delete", "ps", "pause", "resume", NULL };
    for (const char *const *s = simple; *s; s++)
        if (strcmp(cmd, *s) == 0)
            return cmd_simple(&g, cargc, cargv);
    if (strcmp(cmd, "list") == 0)
        return cmd_list(&g, cargc, cargv);
    if (strcmp(cmd, "exec") == 0)
        return cmd_exec(&g, cargc, cargv);
    if (strcmp(cmd, "update") == 0)
        return cmd_update(&g, cargc, cargv);
    if (strcmp(cmd, "features") == 0)
        return cmd_features();
    return usage_error("unknown command '%s' (cell-oci --help lists them)", cmd);
}
