/* options.c: cell-daemon's option table and its command-line parser
 * (getopt_long).  Each row is one option; its setter validates the value
 * and stores it, so a bad value is refused before the daemon touches its
 * state directory, with a message naming the option and what it takes. */
#include "daemon/options.h"
#include "cli/cli.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

extern const char cli_serve_usage[];

#define FIELD(c, o, type) ((type *)((char *)(c) + (o)->field))

/* A message from the server's parsers already names the flag ("--limit
 * x: ..."); on the command line it is printed as is. */
static int fail_err(const char *label, const cell_error *err)
{
    if (strncmp(label, "--", 2) == 0)
        return cli_fail(CLI_EXIT_USAGE, "%s", err->message);
    return cli_fail(CLI_EXIT_USAGE, "%s: %s", label, err->message);
}

/* ---- generic setters ------------------------------------------------------- */
int daemon_set_string(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    (void)label;
    *FIELD(c, o, const char *) = value;
    return 0;
}

int daemon_set_nonempty(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    if (!*value)
        return cli_fail(CLI_EXIT_USAGE, "%s needs a value (see cell serve --help)", label);
    return daemon_set_string(c, o, label, value);
}

int daemon_set_flag(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    static const char *const yes[] = { "true", "yes", "on", "1" }, *const no[] = { "false", "no", "off", "0" };
    int on = -1;
    for (size_t i = 0; value && i < sizeof yes / sizeof *yes; i++) {
        if (strcasecmp(value, yes[i]) == 0)
            on = 1;
        else if (strcasecmp(value, no[i]) == 0)
            on = 0;
    }
    if (value && on < 0)
        return cli_fail(CLI_EXIT_USAGE, "%s %s: expected true or false", label, value);
    *FIELD(c, o, int) = value ? on : 1;
    return 0;
}

/* A whole number in decimal digits only: strtoul alone would take " 5",
 * "+5" and "-1" (as ULONG_MAX). */
static int parse_whole(const char *text, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(text, &end, 10);
    if (!isdigit((unsigned char)text[0]) || errno || *end)
        return -1;
    *out = n;
    return 0;
}

int daemon_set_count(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    unsigned long long n;
    if (parse_whole(value, &n) < 0 || n < o->min || n > o->max)
        return cli_fail(CLI_EXIT_USAGE, "%s must be a whole number from %llu to %llu", label, o->min, o->max);
    *FIELD(c, o, unsigned) = (unsigned)n;
    return 0;
}

int daemon_set_size(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    cell_error err = { 0 };
    if (cell_parse_size(value, FIELD(c, o, uint64_t), &err) < 0)
        return cli_fail(CLI_EXIT_USAGE, "%s: %s", label, err.message);
    return 0;
}

/* ---- setters of their own ---------------------------------------------------- */
/* HOST:PORT with a numeric host (IPv6 in brackets or bare) and a port from
 * 0 to 65535, or "" for no TCP listener.  getaddrinfo() would take 99999
 * and listen on its low 16 bits. */
static int set_listen(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    const char *colon = strrchr(value, ':');
    char host[INET6_ADDRSTRLEN + 2];
    unsigned char addr[16];
    unsigned long long port;
    if (!*value)
        return daemon_set_string(c, o, label, value);
    if (!colon || colon == value || (size_t)(colon - value) >= sizeof host)
        return cli_fail(CLI_EXIT_USAGE, "%s %s: expected HOST:PORT, e.g. 127.0.0.1:7070 (\"\" for no TCP listener)",
                        label, value);
    if (parse_whole(colon + 1, &port) < 0 || port > 65535)
        return cli_fail(CLI_EXIT_USAGE, "%s %s: the port must be a number from 0 to 65535 (0: any free port)", label,
                        value);
    size_t len = (size_t)(colon - value);
    int bracket = value[0] == '[' && len >= 2 && value[len - 1] == ']';
    memcpy(host, value + bracket, len - 2 * bracket);
    host[len - 2 * bracket] = '\0';
    if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1)
        return cli_fail(CLI_EXIT_USAGE, "%s %s: HOST must be a numeric address such as 127.0.0.1, 0.0.0.0 or [::1]",
                        label, value);
    return daemon_set_string(c, o, label, value);
}

static int set_audit_max_size(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    uint64_t n;
    cell_error err = { 0 };
    (void)o;
    if (cell_parse_size(value, &n, &err) < 0)
        return cli_fail(CLI_EXIT_USAGE, "%s: %s", label, err.message);
    if (n && n < (64u << 10))
        return cli_fail(CLI_EXIT_USAGE, "%s must be 0 (never rotate) or at least 64K", label);
    c->opt.audit_max_size = n;
    c->opt.audit_max_size_set = 1;
    return 0;
}

static int set_max_json_size(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    uint64_t n;
    cell_error err = { 0 };
    (void)o;
    if (cell_parse_size(value, &n, &err) < 0)
        return cli_fail(CLI_EXIT_USAGE, "%s: %s", label, err.message);
    if (n < 1024 || n > (64u << 20))
        return cli_fail(CLI_EXIT_USAGE, "%s must be between 1K and 64M", label);
    c->opt.max_json_bytes = (uint32_t)n;
    return 0;
}

/* Append to one of the NULL-terminated lists of daemon_config. */
static int add_value(const char **list, size_t *n, size_t max, const char *label, const char *value)
{
    if (*n == max)
        return cli_fail(CLI_EXIT_USAGE, "%s: at most %zu", label, max);
    list[(*n)++] = value;
    return 0;
}

/* An IPv4 or IPv6 address with an optional /PREFIX. */
static int set_allow_dest(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    char ip[INET6_ADDRSTRLEN + 1];
    uint8_t addr[16];
    const char *slash = strchr(value, '/');
    size_t len = slash ? (size_t)(slash - value) : strlen(value);
    int v6 = memchr(value, ':', len) != NULL;
    unsigned long long prefix = 0;
    (void)o;
    if (len < sizeof ip) {
        memcpy(ip, value, len);
        ip[len] = '\0';
    }
    if (len >= sizeof ip || inet_pton(v6 ? AF_INET6 : AF_INET, ip, addr) != 1 ||
        (slash && (parse_whole(slash + 1, &prefix) < 0 || prefix > (v6 ? 128u : 32u))))
        return cli_fail(CLI_EXIT_USAGE, "%s %s: expected an address or CIDR like 127.0.0.1/32 or fd00::/8", label,
                        value);
    if (add_value(c->allow, &c->n_allow, DAEMON_MAX_ALLOW, label, value))
        return CLI_EXIT_USAGE;
    c->opt.tenant_dest_allow = c->allow;
    return 0;
}

static int set_warm(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    char image[64];
    unsigned size;
    cell_error err = { 0 };
    (void)o;
    if (server_warm_parse(value, image, sizeof image, &size, &err) < 0)
        return fail_err(label, &err);
    if (add_value(c->warm, &c->n_warm, DAEMON_MAX_WARM, label, value))
        return CLI_EXIT_USAGE;
    c->opt.warm = c->warm;
    return 0;
}

static int set_repo_root(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    struct stat st;
    (void)o;
    if (value[0] != '/' || stat(value, &st) < 0 || !S_ISDIR(st.st_mode))
        return cli_fail(CLI_EXIT_USAGE, "%s %s: must be an absolute path to a directory", label, value);
    if (add_value(c->repo_roots, &c->n_roots, DAEMON_MAX_REPO_ROOTS, label, value))
        return CLI_EXIT_USAGE;
    c->opt.run_repo_roots = c->repo_roots;
    return 0;
}

/* --limit KEY=VALUE; --reserve-memory and --reserve-pids are its keys
 * reserve.memory and reserve.pids. */
static int set_limit(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    char kv[256];
    cell_error err = { 0 };
    const char *key = strcmp(o->name, "reserve-memory") == 0 ? "reserve.memory"
                    : strcmp(o->name, "reserve-pids") == 0   ? "reserve.pids" : NULL;
    if (key && snprintf(kv, sizeof kv, "%s=%s", key, value) >= (int)sizeof kv)
        return cli_fail(CLI_EXIT_USAGE, "%s: value too long", label);
    if (server_limit_set(&c->opt.limits, key ? kv : value, &err) < 0)
        return fail_err(label, &err);
    return 0;
}

static int set_upstream_ca(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    if (access(value, R_OK) < 0)
        return cli_fail(CLI_EXIT_USAGE, "%s %s: %s", label, value, strerror(errno));
    return daemon_set_string(c, o, label, value);
}

/* ---- the table ----------------------------------------------------------------- */
#define OPT(f) offsetof(daemon_config, f)

const daemon_option daemon_options[] = {
    { "state", required_argument, 0, daemon_set_nonempty, OPT(opt.state_dir), 0, 0 },
    { "init", no_argument, 0, daemon_set_flag, OPT(init), 0, 0 },
    { "listen", required_argument, 0, set_listen, OPT(opt.listen), 0, 0 },
    { "socket", required_argument, 0, daemon_set_string, OPT(opt.socket_path), 0, 0 },
    { "no-token", no_argument, 0, daemon_set_flag, OPT(opt.no_token), 0, 0 },
    { "no-token-on-tcp-i-understand-anyone-local-is-admin", no_argument, 0, daemon_set_flag,
      OPT(opt.no_token_on_tcp), 0, 0 },
    { "log", required_argument, 0, daemon_set_nonempty, OPT(opt.log_path), 0, 0 },
    { "max-connections", required_argument, 0, daemon_set_count, OPT(opt.max_conns), 4, 100000 },
    { "max-connections-per-ip", required_argument, 0, daemon_set_count, OPT(opt.max_conns_per_ip), 1, 100000 },
    { "idle-timeout", required_argument, 0, daemon_set_count, OPT(opt.idle_timeout_s), 1, 86400 },
    { "header-timeout", required_argument, 0, daemon_set_count, OPT(opt.header_timeout_s), 1, 3600 },
    { "max-file-size", required_argument, 0, daemon_set_size, OPT(opt.max_file_bytes), 0, 0 },
    { "max-json-size", required_argument, 0, set_max_json_size, 0, 0, 0 },
    { "audit-max-size", required_argument, 0, set_audit_max_size, 0, 0, 0 },
    { "audit-keep", required_argument, 0, daemon_set_count, OPT(opt.audit_keep), 1, 64 },
    { "token-rate", required_argument, 0, daemon_set_count, OPT(opt.token_rate), 0, 1000000 },
    { "allow-tenant-dest", required_argument, DAEMON_OPT_REPEAT, set_allow_dest, 0, 0, 0 },
    { "limit", required_argument, DAEMON_OPT_REPEAT, set_limit, 0, 0, 0 },
    { "reserve-memory", required_argument, 0, set_limit, 0, 0, 0 },
    { "reserve-pids", required_argument, 0, set_limit, 0, 0, 0 },
    { "warm", required_argument, DAEMON_OPT_REPEAT, set_warm, 0, 0, 0 },
    { "run-repo-root", required_argument, DAEMON_OPT_REPEAT, set_repo_root, 0, 0, 0 },
    { "secrets-key-file", required_argument, 0, daemon_set_nonempty, OPT(opt.secrets_key_file), 0, 0 },
    { "upstream-ca", required_argument, 0, set_upstream_ca, OPT(opt.upstream_ca_file), 0, 0 },
    { "agent-registry", required_argument, 0, daemon_set_nonempty, OPT(opt.agent_registry), 0, 0 },
    { NULL, 0, 0, NULL, 0, 0, 0 },
};

/* ---- the command line -------------------------------------------------------------- */
#define OPT_HELP 'h'
#define OPT_ROW  0x100   /* getopt_long's value for row i is OPT_ROW + i */

static size_t table_size(void)
{
    size_t n = 0;
    while (daemon_options[n].name)
        n++;
    return n;
}

/* getopt_long takes any unique prefix ("--no-token-on" for the long
 * confirmation flag): the option must be spelled out. */
static int spelled_out(const char *word, const char *name)
{
    size_t len = strlen(name);
    return strncmp(word, "--", 2) == 0 && strncmp(word + 2, name, len) == 0 &&
           (word[2 + len] == '\0' || word[2 + len] == '=');
}

int daemon_options_parse(daemon_config *c, int argc, char **argv)
{
    size_t n = table_size();
    struct option *longopts = calloc(n + 2, sizeof *longopts);
    int rc = 0;
    if (!longopts)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++)
        longopts[i] = (struct option){ daemon_options[i].name, daemon_options[i].has_arg, NULL, OPT_ROW + (int)i };
    longopts[n] = (struct option){ "help", no_argument, NULL, OPT_HELP };
    opterr = 0;
    optind = 1;
    /* "+": stop at the first word that is no option (an error below);
     * ":": a missing value is ':', not '?'. */
    for (int at = optind, ch; rc == 0 && (ch = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1; at = optind) {
        const daemon_option *row = ch >= OPT_ROW ? &daemon_options[ch - OPT_ROW] : NULL;
        char label[128];
        if (ch == OPT_HELP) {
            fputs(cli_serve_usage, stdout);
            c->help = 1;
            break;
        } else if (ch == ':') {
            rc = cli_fail(CLI_EXIT_USAGE, "serve: %s needs a value (see cell serve --help)", argv[at]);
        } else if (ch == '?' && optopt >= OPT_ROW) {
            rc = cli_fail(CLI_EXIT_USAGE, "serve: %s: --%s takes no value (see cell serve --help)", argv[at],
                          daemon_options[optopt - OPT_ROW].name);
        } else if (!row) {
            rc = cli_fail(CLI_EXIT_USAGE, "serve: unknown option '%s' (see cell serve --help)", argv[at]);
        } else if (!spelled_out(argv[at], row->name)) {
            rc = cli_fail(CLI_EXIT_USAGE, "serve: unknown option '%s' (options are not abbreviated: --%s; see "
                          "cell serve --help)", argv[at], row->name);
        } else {
            snprintf(label, sizeof label, "--%s", row->name);
            rc = row->set(c, row, label, optarg);
        }
    }
    if (rc == 0 && !c->help && optind < argc)
        rc = cli_fail(CLI_EXIT_USAGE, "serve: unexpected argument '%s' (see cell serve --help)", argv[optind]);
    free(longopts);
    return rc;
}
