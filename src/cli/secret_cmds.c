/* secret_cmds.c: `cell secret set|ls|rm`: a tenant's secrets in the daemon.
 * Values are read from stdin or a file, never from argv (ps would show them). */
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/cells_cmds.h"
#include "cli/opts.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* The daemon's limit (STORE_SECRET_MAX_VALUE), checked here for a clear message. */
#define SECRET_MAX_VALUE (64u << 10)

const char cli_secret_usage[] =
    "usage: cell secret set NAME [--value-file FILE]\n"
    "       cell secret ls\n"
    "       cell secret rm NAME\n"
    "\n"
    "Manage your tenant's secrets: credentials the daemon injects on the host\n"
    "side, so their values never enter a cell.  `set` creates or replaces NAME\n"
    "with a value read from stdin (typed without echo on a terminal) or FILE;\n"
    "one trailing newline is removed.  Values are 1 byte to 64 KiB and cannot\n"
    "be read back: `ls` shows names and creation times only.\n"
    "NAME: 1-63 of A-Z a-z 0-9 _ . - (not starting with . or -).\n"
    "\n"
    "exit codes: 0 done; 1 the daemon refused the request (4xx: not found,\n"
    "invalid, forbidden); 2 usage; 125 the daemon is unreachable or failed (5xx).\n"
    "\n"
    "The daemon is reached at STATE/cell.sock, or at --url URL / $CELL_URL\n"
    "(http://HOST:PORT or unix:PATH); the token is $CELL_TOKEN, else STATE/admin.token.\n";

/* Free a buffer that held a value, wiping it first (the CLI does not load
 * libcrypto for OPENSSL_clear_free). */
static void secret_free(char *buf, size_t cap)
{
    if (buf)
        explicit_bzero(buf, cap);
    free(buf);
}

/* Read all of fd, at most SECRET_MAX_VALUE + 2 bytes (room for "\r\n"). */
static int read_value(int fd, const char *from, char **out, size_t *len)
{
    size_t cap = SECRET_MAX_VALUE + 3;
    char *buf = malloc(cap);
    if (!buf)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    ssize_t n = util_read_all(fd, buf, cap - 1);
    if (n < 0) {
        int saved = errno;
        secret_free(buf, cap);
        return cli_fail(CLI_EXIT_USAGE, "cannot read the value from %s: %s", from, strerror(saved));
    }
    size_t l = (size_t)n;
    if (l && buf[l - 1] == '\n') {
        l--;
        if (l && buf[l - 1] == '\r')
            l--;
    }
    if (l > SECRET_MAX_VALUE) {
        secret_free(buf, cap);
        return cli_fail(CLI_EXIT_USAGE, "the value from %s is larger than %u bytes", from, SECRET_MAX_VALUE);
    }
    if (l == 0) {
        secret_free(buf, cap);
        return cli_fail(CLI_EXIT_USAGE, "the value from %s is empty", from);
    }
    if (memchr(buf, '\0', l)) {
        secret_free(buf, cap);
        return cli_fail(CLI_EXIT_USAGE, "the value from %s contains a NUL byte (values are text)", from);
    }
    buf[l] = '\0';
    *out = buf;
    *len = cap;       /* the size to clear on free */
    return 0;
}

/* From a terminal: prompt on stderr and read one line without echo. */
static int read_tty(const char *name, char **out, size_t *len)
{
    struct termios old, quiet;
    int tty = tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        fprintf(stderr, "value for %s: ", name);
        fflush(stderr);
    }
    size_t cap = SECRET_MAX_VALUE + 3;
    char *buf = malloc(cap);
    int rc = 0;
    if (!buf) {
        rc = cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    } else if (!fgets(buf, (int)cap, stdin)) {
        rc = cli_fail(CLI_EXIT_USAGE, "no value was entered");
    }
    if (tty)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    if (rc) {
        if (buf)
            secret_free(buf, cap);
        return rc;
    }
    size_t l = strlen(buf);
    if (l && buf[l - 1] == '\n')
        buf[--l] = '\0';
    if (l && buf[l - 1] == '\r')
        buf[--l] = '\0';
    if (l == 0 || l > SECRET_MAX_VALUE) {
        secret_free(buf, cap);
        return cli_fail(CLI_EXIT_USAGE, l ? "the value is larger than %u bytes" : "the value is empty",
                        SECRET_MAX_VALUE);
    }
    *out = buf;
    *len = cap;
    return 0;
}

static int secret_set(client *c, struct cli_global *g, const char *name, const char *value)
{
    json_t *body = json_pack("{s:s, s:s}", "name", name, "value", value);
    if (!body)
        return cli_fail(CLI_EXIT_USAGE, "the value is not valid UTF-8 text");
    json_t *reply = NULL;
    int rc = cli_client_json(c, "POST", "/v1/secrets", body, "secret", &reply);
    json_t *v = json_object_get(body, "value");
    explicit_bzero((char *)json_string_value(v), json_string_length(v));
    json_decref(body);
    if (rc)
        return rc;
    if (g->json)
        cli_print_json(reply);
    else {
        printf("set secret %s\n", name);
        json_decref(reply);
    }
    return 0;
}

static int secret_ls(client *c, struct cli_global *g)
{
    json_t *reply = NULL;
    int rc = cli_client_json(c, "GET", "/v1/secrets", NULL, NULL, &reply);
    if (rc)
        return rc;
    if (g->json) {
        cli_print_json(reply);
        return 0;
    }
    printf("%-32s %s\n", "NAME", "CREATED");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(reply, "secrets"), i, s) {
        char when[32];
        cli_client_utc_ms(json_integer_value(json_object_get(s, "createdAtMs")), when, sizeof when);
        const char *name = json_string_value(json_object_get(s, "name"));
        printf("%-32s %s\n", name ? name : "?", when);
    }
    json_decref(reply);
    return 0;
}

static int secret_rm(client *c, struct cli_global *g, const char *name)
{
    char *path = cli_client_pathf("/v1/secrets/%s", name);
    if (!path)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    char what[96];
    snprintf(what, sizeof what, "secret %s", name);
    int rc = cli_client_json(c, "DELETE", path, NULL, what, NULL);
    free(path);
    if (rc)
        return rc;
    if (g->json)
        cli_print_json(json_pack("{s:s, s:b}", "name", name, "deleted", 1));
    else
        printf("removed secret %s\n", name);
    return 0;
}

static int is_help(const char *a)
{
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "help") == 0;
}

enum { O_VALUE_FILE = 256, O_VALUE };

/* --value is known only to refuse it by name (optional_argument: both
 * --value and --value=V land here). */
const struct option cli_secret_options[] = {
    { "value-file", required_argument, NULL, O_VALUE_FILE }, { "value", optional_argument, NULL, O_VALUE },
    { "help", no_argument, NULL, 'h' },                      { NULL, 0, NULL, 0 },
};

/* SUBCOMMAND [OPTIONS] [NAME] (argv[0] the subcommand); 0, -1 after
 * --help, or an exit code. */
static int parse_secret(const char *sub, int argc, char **argv, const char **name, const char **file)
{
    static const struct option help_only[] = { { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
    int set = strcmp(sub, "set") == 0;
    char cmd[16];
    snprintf(cmd, sizeof cmd, "secret %s", sub);
    opterr = 0;
    optind = 0;
    int o;
    while ((o = getopt_long(argc, argv, ":h", set ? cli_secret_options : help_only, NULL)) != -1) {
        if (o == 'h')
            return fputs(cli_secret_usage, stdout), -1;
        if (o == O_VALUE)
            return cli_fail(CLI_EXIT_USAGE, "secret set: no --value: a value on the command line is visible "
                                            "to every user (ps); use stdin or --value-file FILE");
        if (o != O_VALUE_FILE)
            return cli_getopt_fail(cmd, o, argc, argv);
        *file = optarg;
    }
    int n = argc - optind;
    *name = n ? argv[optind] : NULL;
    if (strcmp(sub, "ls") == 0 && n)
        return cli_fail(CLI_EXIT_USAGE, "secret ls takes no arguments");
    if (strcmp(sub, "rm") == 0 && n != 1)
        return cli_fail(CLI_EXIT_USAGE, "secret rm takes exactly one NAME (see cell secret ls)");
    if (!set)
        return 0;
    if (n > 1)
        return cli_fail(CLI_EXIT_USAGE, "secret set takes one NAME");
    if (!*name)
        return cli_fail(CLI_EXIT_USAGE, "secret set: NAME is required");
    return 0;
}

int cli_secret(struct cli_global *g, int argc, char **argv)
{
    if (argc < 2 || is_help(argv[1])) {
        fputs(cli_secret_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    const char *sub = argv[1];
    const char *name = NULL, *file = NULL;
    if (strcmp(sub, "ls") != 0 && strcmp(sub, "rm") != 0 && strcmp(sub, "set") != 0)
        return cli_fail(CLI_EXIT_USAGE, "unknown secret command '%s' (set, ls, rm)", sub);
    int prc = parse_secret(sub, argc - 1, argv + 1, &name, &file);
    if (prc)
        return prc < 0 ? 0 : prc;

    char *value = NULL;
    size_t value_cap = 0;
    if (strcmp(sub, "set") == 0) {
        int rc;
        if (!util_valid_name(name))
            return cli_fail(CLI_EXIT_USAGE, "secret name '%s': 1-63 of A-Z a-z 0-9 _ . - "
                                            "(not starting with . or -)", name);
        /* Read before connecting: a prompt must not wait on an open connection. */
        if (file) {
            _cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                return cli_fail(CLI_EXIT_USAGE, "cannot open %s: %s", file, strerror(errno));
            rc = read_value(fd, file, &value, &value_cap);
        } else if (isatty(STDIN_FILENO)) {
            rc = read_tty(name, &value, &value_cap);
        } else {
            rc = read_value(STDIN_FILENO, "stdin", &value, &value_cap);
        }
        if (rc)
            return rc;
    }

    client c;
    int rc = cli_client_open(&c, g);
    if (rc == 0) {
        if (strcmp(sub, "set") == 0)
            rc = secret_set(&c, g, name, value);
        else if (strcmp(sub, "ls") == 0)
            rc = secret_ls(&c, g);
        else
            rc = secret_rm(&c, g, name);
        cli_client_close(&c);
    }
    if (value)
        secret_free(value, value_cap);
    return rc;
}
