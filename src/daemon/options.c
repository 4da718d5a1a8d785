/* options.c: cell-daemon's option table and its command-line parser
 * (getopt_long).  Each row is one option; its setter validates the value
 * and stores it, so a bad value is refused before the daemon touches its
 * state directory, with a message naming the option and what it takes. */
#include "daemon/options.h"
#include "cli/cli.h"
#include "server/slog.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

extern const char cli_serve_usage[];

#define FIELD(c, o, type) ((type *)((char *)(c) + (o)->field))

/* A message from the server's parsers already names the flag ("--limit
 * x: ..."): on the command line it is printed as is, from the config file
 * after the file, line and key instead of the flag. */
static int fail_err(const char *label, const daemon_option *o, const cell_error *err)
{
    size_t len = strlen(o->name);
    const char *m = err->message;
    if (strncmp(label, "--", 2) == 0)
        return cli_fail(CLI_EXIT_USAGE, "%s", m);
    if (strncmp(m, "--", 2) == 0 && strncmp(m + 2, o->name, len) == 0 && (m[2 + len] == ' ' || m[2 + len] == ':'))
        return cli_fail(CLI_EXIT_USAGE, "%s%s", label, m + 2 + len);
    return cli_fail(CLI_EXIT_USAGE, "%s: %s", label, m);
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

/* A size as the help writes it: 1K, 64M, 1T, else bytes. */
static const char *size_text(unsigned long long n, char *buf, size_t size)
{
    static const char units[] = "KMGT";
    int u = -1;
    while (u < 3 && n >= 1024 && n % 1024 == 0)
        n /= 1024, u++;
    snprintf(buf, size, u < 0 ? "%llu" : "%llu%c", n, u < 0 ? 0 : units[u]);
    return buf;
}

int daemon_set_size(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    cell_error err = { 0 };
    uint64_t n;
    char lo[32], hi[32];
    if (cell_parse_size(value, &n, &err) < 0)
        return cli_fail(CLI_EXIT_USAGE, "%s: %s", label, err.message);
    if (o->max && (n < o->min || n > o->max))
        return cli_fail(CLI_EXIT_USAGE, "%s must be between %s and %s", label, size_text(o->min, lo, sizeof lo),
                        size_text(o->max, hi, sizeof hi));
    *FIELD(c, o, uint64_t) = n;
    return 0;
}

int daemon_set_list(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    daemon_list *l = FIELD(c, o, daemon_list);
    if (l->n == o->max || l->n == DAEMON_MAX_LIST)
        return cli_fail(CLI_EXIT_USAGE, "%s: at most %llu", label, o->max);
    l->v[l->n++] = value;
    l->v[l->n] = NULL;
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

/* An IPv4 or IPv6 address with an optional /PREFIX. */
static int set_allow_dest(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    char ip[INET6_ADDRSTRLEN + 1];
    uint8_t addr[16];
    const char *slash = strchr(value, '/');
    size_t len = slash ? (size_t)(slash - value) : strlen(value);
    int v6 = memchr(value, ':', len) != NULL;
    unsigned long long prefix = 0;
    if (len < sizeof ip) {
        memcpy(ip, value, len);
        ip[len] = '\0';
    }
    if (len >= sizeof ip || inet_pton(v6 ? AF_INET6 : AF_INET, ip, addr) != 1 ||
        (slash && (parse_whole(slash + 1, &prefix) < 0 || prefix > (v6 ? 128u : 32u))))
        return cli_fail(CLI_EXIT_USAGE, "%s %s: expected an address or CIDR like 127.0.0.1/32 or fd00::/8", label,
                        value);
    return daemon_set_list(c, o, label, value);
}

static int set_warm(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    char image[64];
    unsigned size;
    cell_error err = { 0 };
    if (srv_warm_parse(value, image, sizeof image, &size, &err) < 0)
        return fail_err(label, o, &err);
    return daemon_set_list(c, o, label, value);
}

static int set_repo_root(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    struct stat st;
    if (value[0] != '/' || stat(value, &st) < 0 || !S_ISDIR(st.st_mode))
        return cli_fail(CLI_EXIT_USAGE, "%s %s: must be an absolute path to a directory", label, value);
    return daemon_set_list(c, o, label, value);
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
    if (srv_limit_set(&c->opt.limits, key ? kv : value, &err) < 0)
        return fail_err(label, o, &err);
    return 0;
}

/* A file read at start (--upstream-ca, --pod-policy): readable now. */
static int set_upstream_ca(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    if (access(value, R_OK) < 0)
        return cli_fail(CLI_EXIT_USAGE, "%s %s: %s", label, value, strerror(errno));
    return daemon_set_string(c, o, label, value);
}

static int set_cors_origin(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    cell_error err = { 0 };
    if (srv_cors_origin_check(value, &err) < 0)
        return fail_err(label, o, &err);
    return daemon_set_list(c, o, label, value);
}

static int set_log_format(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    (void)o;
    if (srv_slog_format_parse(value, &c->opt.log_format) < 0)
        return cli_fail(CLI_EXIT_USAGE, "%s %s: expected text or json", label, value);
    return 0;
}

/* A new tenant's quota: a count (cells, lanes, pids: min..max) or a size
 * (memory, disk), and its bit in tenant_quota.set (the fields are in the
 * order of the bits). */
static int set_tenant_quota(daemon_config *c, const daemon_option *o, const char *label, const char *value)
{
    uint64_t *field = FIELD(c, o, uint64_t);
    unsigned bit = (unsigned)(field - &c->opt.tenant_quota.cells);
    unsigned long long n;
    if (o->max) {
        if (parse_whole(value, &n) < 0 || n < o->min || n > o->max)
            return cli_fail(CLI_EXIT_USAGE, "%s must be a whole number from %llu to %llu", label, o->min, o->max);
        *field = n;
    } else if (daemon_set_size(c, o, label, value)) {
        return CLI_EXIT_USAGE;
    }
    c->opt.tenant_quota.set |= 1u << bit;
    return 0;
}

/* ---- the table ----------------------------------------------------------------- */
#define OPT(f) offsetof(daemon_config, f)

const daemon_option daemon_options[] = {
    { "config", required_argument, DAEMON_OPT_CMDLINE, daemon_set_nonempty, OPT(config), 0, 0 },
    { "no-config", no_argument, DAEMON_OPT_CMDLINE, daemon_set_flag, OPT(no_config), 0, 0 },
    { "init", no_argument, DAEMON_OPT_CMDLINE, daemon_set_flag, OPT(init), 0, 0 },
    { "state", required_argument, 0, daemon_set_nonempty, OPT(opt.state_dir), 0, 0 },
    { "listen", required_argument, 0, set_listen, OPT(opt.listen), 0, 0 },
    { "socket", required_argument, 0, daemon_set_string, OPT(opt.socket_path), 0, 0 },
    { "no-token", no_argument, 0, daemon_set_flag, OPT(opt.no_token), 0, 0 },
    { "no-token-on-tcp-i-understand-anyone-local-is-admin", no_argument, 0, daemon_set_flag,
      OPT(opt.no_token_on_tcp), 0, 0 },
    { "log", required_argument, 0, daemon_set_nonempty, OPT(opt.log_path), 0, 0 },
    { "log-format", required_argument, 0, set_log_format, 0, 0, 0 },
    { "metrics-public", no_argument, 0, daemon_set_flag, OPT(opt.metrics_public), 0, 0 },
    { "max-connections", required_argument, 0, daemon_set_count, OPT(opt.max_conns), 4, 100000 },
    { "max-connections-per-ip", required_argument, 0, daemon_set_count, OPT(opt.max_conns_per_ip), 1, 100000 },
    { "idle-timeout", required_argument, 0, daemon_set_count, OPT(opt.idle_timeout_s), 1, 86400 },
    { "header-timeout", required_argument, 0, daemon_set_count, OPT(opt.header_timeout_s), 1, 3600 },
    { "max-file-size", required_argument, 0, daemon_set_size, OPT(opt.max_file_bytes), 1u << 10, 1ull << 40 },
    { "max-json-size", required_argument, 0, set_max_json_size, 0, 0, 0 },
    { "audit-max-size", required_argument, 0, set_audit_max_size, 0, 0, 0 },
    { "audit-keep", required_argument, 0, daemon_set_count, OPT(opt.audit_keep), 1, 64 },
    { "token-rate", required_argument, 0, daemon_set_count, OPT(opt.token_rate), 0, 1000000 },
    { "allow-tenant-dest", required_argument, DAEMON_OPT_REPEAT, set_allow_dest, OPT(allow), 0, 16 },
    { "limit", required_argument, DAEMON_OPT_REPEAT, set_limit, 0, 0, 0 },
    { "reserve-memory", required_argument, 0, set_limit, 0, 0, 0 },
    { "reserve-pids", required_argument, 0, set_limit, 0, 0, 0 },
    { "warm", required_argument, DAEMON_OPT_REPEAT, set_warm, OPT(warm), 0, 8 },
    { "run-repo-root", required_argument, DAEMON_OPT_REPEAT, set_repo_root, OPT(repo_roots), 0, 16 },
    { "secrets-key-file", required_argument, 0, daemon_set_nonempty, OPT(opt.secrets_key_file), 0, 0 },
    { "upstream-ca", required_argument, 0, set_upstream_ca, OPT(opt.upstream_ca_file), 0, 0 },
    { "agent-registry", required_argument, 0, daemon_set_nonempty, OPT(opt.agent_registry), 0, 0 },
    { "tenant-max-cells", required_argument, 0, set_tenant_quota, OPT(opt.tenant_quota.cells), 0, 1000000 },
    { "tenant-max-memory", required_argument, 0, set_tenant_quota, OPT(opt.tenant_quota.memory), 0, 0 },
    { "tenant-max-lanes", required_argument, 0, set_tenant_quota, OPT(opt.tenant_quota.lanes), 0, 1000000 },
    { "tenant-max-disk", required_argument, 0, set_tenant_quota, OPT(opt.tenant_quota.disk), 0, 0 },
    { "tenant-max-pids", required_argument, 0, set_tenant_quota, OPT(opt.tenant_quota.pids), 0, UINT32_MAX },
    { "tls-cert", required_argument, 0, daemon_set_nonempty, OPT(opt.tls_cert_file), 0, 0 },
    { "tls-key", required_argument, 0, daemon_set_nonempty, OPT(opt.tls_key_file), 0, 0 },
    { "tls-client-ca", required_argument, 0, daemon_set_nonempty, OPT(opt.tls_client_ca_file), 0, 0 },
    { "insecure-listen", no_argument, 0, daemon_set_flag, OPT(opt.insecure_listen), 0, 0 },
    { "cors-origin", required_argument, DAEMON_OPT_REPEAT, set_cors_origin, OPT(cors), 0, 16 },
    { "pods", no_argument, 0, daemon_set_flag, OPT(opt.pods), 0, 0 },
    { "node-token-file", required_argument, 0, daemon_set_nonempty, OPT(opt.node_token_file), 0, 0 },
    { "pod-policy", required_argument, 0, set_upstream_ca, OPT(opt.pod_policy_file), 0, 0 },
    { NULL, 0, 0, NULL, 0, 0, 0 },
};

/* ---- the config file ---------------------------------------------------------------- */
static const daemon_option *find_row(const char *name)
{
    for (const daemon_option *o = daemon_options; o->name; o++)
        if (strcmp(o->name, name) == 0)
            return o;
    return NULL;
}

struct load {
    daemon_config *c;
    const char    *path;
    FILE          *f;
    int            line;        /* the line inih is on */
    int            too_long;
    int            nul;
    int            rc;          /* a key's error, already printed */
    int            first[64];   /* the line each row was set on (0: not yet) */
};

/* inih's reader: one line (with its newline) per call, counted, refusing
 * one longer than the buffer (inih would read its rest as another line)
 * and a NUL byte (the line would end there for inih and hide the rest). */
static char *read_line(char *buf, int size, void *stream)
{
    struct load *l = stream;
    int n = 0, ch = EOF;
    while (n < size - 1 && (ch = getc(l->f)) != EOF) {
        if (ch == '\0') {
            l->line++;
            l->nul = 1;
            return NULL;
        }
        buf[n++] = (char)ch;
        if (ch == '\n')
            break;
    }
    if (n == 0)
        return NULL;
    buf[n] = '\0';
    l->line++;
    if (n == size - 1 && ch != '\n' && (ch = getc(l->f)) != EOF) {
        l->too_long = size - 2;
        return NULL;
    }
    return buf;
}

/* "allow-tenant-dest, limit, ...": the table's repeatable rows. */
static const char *repeatable_keys(void)
{
    static char list[512];
    size_t n = 0;
    list[0] = '\0';
    for (const daemon_option *o = daemon_options; o->name; o++)
        if ((o->flags & DAEMON_OPT_REPEAT) && n < sizeof list)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", o->name);
    return list;
}

/* One "key = value" line: the value is checked by the key's setter and
 * kept (the options point into it) until daemon_config_free. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct load *l = user;
    const daemon_option *row = find_row(name);
    char label[PATH_MAX + 128];
    if (*section)
        l->rc = cli_fail(CLI_EXIT_USAGE, "%s:%d: [%s]: the config file has no sections; write the keys of "
                         "cell serve --help without --", l->path, l->line, section);
    else if (!row)
        l->rc = cli_fail(CLI_EXIT_USAGE, "%s:%d: unknown key '%s' (the keys are the options of cell serve --help "
                         "without --)", l->path, l->line, name);
    else if (row->flags & DAEMON_OPT_CMDLINE)
        l->rc = cli_fail(CLI_EXIT_USAGE, "%s:%d: %s: only on the command line (--%s)", l->path, l->line, name, name);
    else if (!(row->flags & DAEMON_OPT_REPEAT) && l->first[row - daemon_options])
        l->rc = cli_fail(CLI_EXIT_USAGE, "%s:%d: %s is set twice (first on line %d); only the repeatable keys (%s) "
                         "may be", l->path, l->line, name, l->first[row - daemon_options], repeatable_keys());
    if (l->rc)
        return 0;
    l->first[row - daemon_options] = l->line;
    /* A value in double quotes is the text between them ("" is empty). */
    size_t len = strlen(value);
    int quoted = len >= 2 && value[0] == '"' && value[len - 1] == '"';
    char *copy = strndup(value + quoted, len - 2 * quoted);
    char **owned = realloc(l->c->owned, (l->c->n_owned + 1) * sizeof *owned);
    if (!copy || !owned) {
        free(copy);
        if (owned)
            l->c->owned = owned;
        l->rc = cli_fail(CLI_EXIT_INTERNAL, "out of memory");
        return 0;
    }
    l->c->owned = owned;
    owned[l->c->n_owned++] = copy;
    snprintf(label, sizeof label, "%s:%d: %s", l->path, l->line, name);
    l->rc = row->set(l->c, row, label, copy);
    return l->rc == 0;
}

/* The file the daemon trusts with its whole configuration (no-token,
 * listen, run-repo-root): a regular file that only its owner, root or the
 * daemon's user, can write. */
static int open_config(const char *path, FILE **out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (fd < 0)
        return cli_fail(CLI_EXIT_USAGE, "config file %s: %s (--no-config for none)", path, strerror(errno));
    if (fstat(fd, &st) < 0) {
        int saved = errno;
        close(fd);
        return cli_fail(CLI_EXIT_INTERNAL, "config file %s: %s", path, strerror(saved));
    }
    if (!S_ISREG(st.st_mode) || st.st_size > DAEMON_CONFIG_MAX || (st.st_mode & (S_IWGRP | S_IWOTH)) ||
        (st.st_uid != 0 && st.st_uid != geteuid())) {
        close(fd);
        return cli_fail(CLI_EXIT_USAGE, "config file %s: must be a regular file of at most %u bytes, owned by "
                        "root or this user and writable by no one else (chmod go-w)", path, DAEMON_CONFIG_MAX);
    }
    if (!(*out = fdopen(fd, "r"))) {
        close(fd);
        return cli_fail(CLI_EXIT_INTERNAL, "config file %s: %s", path, strerror(errno));
    }
    return 0;
}

int daemon_config_load(daemon_config *c, const char *path)
{
    struct load l = { .c = c, .path = path };
    int rc = open_config(path, &l.f);
    if (rc)
        return rc;
    /* One error at a time, each line on its own (an indented line is no
     * continuation), and # or ; after a space starts a comment. */
    ini_stop_on_first_error = 1;
    ini_allow_multiline = 0;
    ini_use_stack = 0;          /* a line of up to 4K (paths, URLs), not 200 */
    ini_max_line = 4096;
    ini_initial_alloc = 4096;
    ini_inline_comment_prefixes = (char *)";#";
    int at = ini_parse_stream(read_line, &l, on_key, &l);
    fclose(l.f);
    if (l.rc)
        return l.rc;
    if (l.nul)
        return cli_fail(CLI_EXIT_USAGE, "%s:%d: a NUL byte (the file must be text)", path, l.line);
    if (l.too_long)
        return cli_fail(CLI_EXIT_USAGE, "%s:%d: line longer than %d characters", path, l.line, l.too_long);
    if (at > 0)
        return cli_fail(CLI_EXIT_USAGE, "%s:%d: expected KEY = VALUE, a # comment or an empty line", path, at);
    if (at < 0)
        return cli_fail(CLI_EXIT_INTERNAL, "config file %s: out of memory", path);
    return 0;
}

void daemon_config_free(daemon_config *c)
{
    for (size_t i = 0; i < c->n_owned; i++)
        free(c->owned[i]);
    free(c->owned);
    c->owned = NULL;
    c->n_owned = 0;
}

/* ---- the state directory -------------------------------------------------------------- */
int daemon_check_state(const daemon_config *c)
{
    const char *dir = c->opt.state_dir ? c->opt.state_dir : cell_default_state_dir();
    char db[PATH_MAX];
    struct stat st;
    if (c->init)
        return 0;
    if (stat(dir, &st) < 0 && errno == ENOENT)
        return cli_fail(CLI_EXIT_USAGE, "serve: the state directory %s does not exist: pass --init to make a new "
                        "store there, or name the existing one with --state", dir);
    if (snprintf(db, sizeof db, "%s/cell.db", dir) >= (int)sizeof db)
        return cli_fail(CLI_EXIT_USAGE, "serve: the state directory's path is too long");
    if (stat(db, &st) < 0 && errno == ENOENT)
        return cli_fail(CLI_EXIT_USAGE, "serve: %s holds no store (no cell.db): pass --init to make a new one "
                        "there, or name the existing one with --state", dir);
    /* Other errors (not a directory, no access) are the daemon's to report. */
    return 0;
}

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

struct flag_use {
    const daemon_option *row;
    const char          *value;
};

/* The first pass: check the words, apply --config, --no-config and
 * --init, and keep the other options for after the config file. */
static int read_flags(daemon_config *c, int argc, char **argv, struct option *longopts, struct flag_use *uses,
                      size_t *n_uses)
{
    int rc = 0;
    opterr = 0;
    optind = 1;
    /* "+": stop at the first word that is no option (an error below);
     * ":": a missing value is ':', not '?'. */
    for (int at = optind, ch; rc == 0 && (ch = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1; at = optind) {
        const daemon_option *row = ch >= OPT_ROW ? &daemon_options[ch - OPT_ROW] : NULL;
        if (ch == OPT_HELP) {
            fputs(cli_serve_usage, stdout);
            c->help = 1;
            return 0;
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
        } else if (row->flags & DAEMON_OPT_CMDLINE) {
            char label[128];
            snprintf(label, sizeof label, "--%s", row->name);
            rc = row->set(c, row, label, optarg);
        } else {
            uses[(*n_uses)++] = (struct flag_use){ row, optarg };
        }
    }
    if (rc == 0 && optind < argc)
        rc = cli_fail(CLI_EXIT_USAGE, "serve: unexpected argument '%s' (see cell serve --help)", argv[optind]);
    if (rc == 0 && c->config && c->no_config)
        rc = cli_fail(CLI_EXIT_USAGE, "serve: --config and --no-config: give one of them");
    return rc;
}

/* The second pass, over the config file: the flags in order.  A list
 * option on the command line replaces the file's list (--limit sets keys
 * one by one, so the file's other keys stay). */
static int apply_flags(daemon_config *c, const struct flag_use *uses, size_t n_uses)
{
    int replaced[64] = { 0 };
    for (size_t i = 0; i < n_uses; i++) {
        const daemon_option *row = uses[i].row;
        char label[128];
        if ((row->flags & DAEMON_OPT_REPEAT) && row->set != set_limit && !replaced[row - daemon_options]) {
            daemon_list *l = FIELD(c, row, daemon_list);
            l->n = 0;
            l->v[0] = NULL;
            replaced[row - daemon_options] = 1;
        }
        snprintf(label, sizeof label, "--%s", row->name);
        int rc = row->set(c, row, label, uses[i].value);
        if (rc)
            return rc;
    }
    return 0;
}

int daemon_options_parse(daemon_config *c, int argc, char **argv, const char *default_config)
{
    size_t n = table_size(), n_uses = 0;
    struct option *longopts = calloc(n + 2, sizeof *longopts);
    struct flag_use *uses = calloc((size_t)argc + 1, sizeof *uses);
    int rc = 0;
    if (!longopts || !uses || n > 64) {
        rc = cli_fail(CLI_EXIT_INTERNAL, n > 64 ? "the option table has more than 64 rows" : "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        longopts[i] = (struct option){ daemon_options[i].name, daemon_options[i].has_arg, NULL, OPT_ROW + (int)i };
    longopts[n] = (struct option){ "help", no_argument, NULL, OPT_HELP };
    if ((rc = read_flags(c, argc, argv, longopts, uses, &n_uses)) || c->help)
        goto out;
    /* The default file is optional; one named with --config must exist. */
    const char *path = c->config ? c->config : c->no_config ? NULL : default_config;
    if (path && !c->config && access(path, F_OK) < 0 && errno == ENOENT)
        path = NULL;
    if ((path && (rc = daemon_config_load(c, path))) || (rc = apply_flags(c, uses, n_uses)))
        goto out;
    c->opt.tenant_dest_allow = c->allow.n ? c->allow.v : NULL;
    c->opt.warm = c->warm.n ? c->warm.v : NULL;
    c->opt.run_repo_roots = c->repo_roots.n ? c->repo_roots.v : NULL;
    c->opt.cors_origins = c->cors.n ? c->cors.v : NULL;
out:
    free(longopts);
    free(uses);
    return rc;
}
