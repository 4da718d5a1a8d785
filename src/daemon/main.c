/* main.c: cell-daemon, the daemon behind `cell serve` (the lean `cell`
 * execs it, src/cli/serve.c): parses the serve options and hands over to
 * server_run(), which returns only on SIGINT or SIGTERM.  It links
 * everything the daemon needs (libmicrohttpd, SQLite, OpenSSL, the egress
 * and archive code), which the `cell` CLI does not load.
 *
 *   cell-daemon [--state DIR] [SERVE OPTIONS...]   (cell serve --help) */
#include "cli/cli.h"
#include "server/server.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/stat.h>

#define SERVE_MAX_ALLOW 16   /* as in src/cli/serve_usage.c */
#define SERVE_MAX_WARM  8    /* --warm values (images) */
#define SERVE_MAX_REPO_ROOTS 16 /* --run-repo-root values */

extern const char cli_serve_usage[];

/* An IPv4 or IPv6 address with an optional /PREFIX, for --allow-tenant-dest. */
static int cidr_opt(const char *text)
{
    char ip[INET6_ADDRSTRLEN + 1];
    uint8_t addr[16];
    const char *slash = strchr(text, '/');
    size_t len = slash ? (size_t)(slash - text) : strlen(text);
    int v6 = memchr(text, ':', len) != NULL;
    unsigned long prefix = 0;
    char *end = NULL;
    if (len < sizeof ip) {
        memcpy(ip, text, len);
        ip[len] = '\0';
    }
    if (slash)
        prefix = strtoul(slash + 1, &end, 10);
    if (len >= sizeof ip || inet_pton(v6 ? AF_INET6 : AF_INET, ip, addr) != 1 ||
        (slash && (end == slash + 1 || *end || prefix > (v6 ? 128u : 32u))))
        return cli_fail(CLI_EXIT_USAGE, "--allow-tenant-dest %s: expected an address or CIDR like 127.0.0.1/32 "
                        "or fd00::/8", text);
    return 0;
}

/* A count within [min, max] for a limit flag. */
static int count_opt(const char *name, const char *text, unsigned min, unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || n < min || n > max)
        return cli_fail(CLI_EXIT_USAGE, "%s must be a whole number from %u to %u", name, min, max);
    *out = (unsigned)n;
    return 0;
}

static int size_opt(const char *name, const char *text, uint64_t *out)
{
    cell_error err = { 0 };
    if (cell_parse_size(text, out, &err) < 0)
        return cli_fail(CLI_EXIT_USAGE, "%s: %s", name, err.message);
    return 0;
}

static int serve(const char *state_dir, int argc, char **argv)
{
    server_options opt = { .state_dir = state_dir };
    static const char *allow[SERVE_MAX_ALLOW + 1];
    static const char *warm[SERVE_MAX_WARM + 1];
    size_t n_warm = 0;
    static const char *repo_roots[SERVE_MAX_REPO_ROOTS + 1];
    size_t n_roots = 0;
    size_t n_allow = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(cli_serve_usage, stdout);
            return 0;
        } else if (strcmp(a, "--no-token") == 0) {
            opt.no_token = 1;
        } else if (strcmp(a, "--no-token-on-tcp-i-understand-anyone-local-is-admin") == 0) {
            opt.no_token_on_tcp = 1;
        } else if (!v) {
            return cli_fail(CLI_EXIT_USAGE, "serve: unknown option '%s' or missing value (see cell serve --help)", a);
        } else if (strcmp(a, "--listen") == 0) {
            opt.listen = v, i++;
        } else if (strcmp(a, "--socket") == 0) {
            opt.socket_path = v, i++;
        } else if (strcmp(a, "--log") == 0) {
            if (!*v)
                return cli_fail(CLI_EXIT_USAGE, "--log needs a file name");
            opt.log_path = v, i++;
        } else if (strcmp(a, "--max-connections") == 0) {
            if (count_opt(a, v, 4, 100000, &opt.max_conns))
                return CLI_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--max-connections-per-ip") == 0) {
            if (count_opt(a, v, 1, 100000, &opt.max_conns_per_ip))
                return CLI_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--idle-timeout") == 0) {
            if (count_opt(a, v, 1, 86400, &opt.idle_timeout_s))
                return CLI_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--header-timeout") == 0) {
            if (count_opt(a, v, 1, 3600, &opt.header_timeout_s))
                return CLI_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--max-file-size") == 0) {
            if (size_opt(a, v, &opt.max_file_bytes))
                return CLI_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--audit-max-size") == 0) {
            if (size_opt(a, v, &n))
                return CLI_EXIT_USAGE;
            if (n && n < (64u << 10))
                return cli_fail(CLI_EXIT_USAGE, "--audit-max-size must be 0 (never rotate) or at least 64K");
            opt.audit_max_size = n, opt.audit_max_size_set = 1, i++;
        } else if (strcmp(a, "--audit-keep") == 0) {
            if (count_opt(a, v, 1, 64, &opt.audit_keep))
                return CLI_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--max-json-size") == 0) {
            if (size_opt(a, v, &n))
                return CLI_EXIT_USAGE;
            if (n < 1024 || n > (64u << 20))
                return cli_fail(CLI_EXIT_USAGE, "--max-json-size must be between 1K and 64M");
            opt.max_json_bytes = (uint32_t)n, i++;
        } else if (strcmp(a, "--allow-tenant-dest") == 0) {
            if (n_allow == SERVE_MAX_ALLOW)
                return cli_fail(CLI_EXIT_USAGE, "--allow-tenant-dest: at most %d", SERVE_MAX_ALLOW);
            if (cidr_opt(v))
                return CLI_EXIT_USAGE;
            allow[n_allow++] = v, i++;
            opt.tenant_dest_allow = allow;
        } else if (strcmp(a, "--limit") == 0 || strcmp(a, "--reserve-memory") == 0 || strcmp(a, "--reserve-pids") == 0) {
            char kv[256];
            snprintf(kv, sizeof kv, "%s=%s", strcmp(a, "--limit") == 0 ? "" : a[10] == 'm' ? "reserve.memory" : "reserve.pids", v);
            cell_error lerr = { 0 };
            if (server_limit_set(&opt.limits, kv[0] == '=' ? v : kv, &lerr) < 0)
                return cli_fail(CLI_EXIT_USAGE, "%s", lerr.message);
            i++;
        } else if (strcmp(a, "--warm") == 0) {
            char image[64];
            unsigned size;
            cell_error werr = { 0 };
            if (n_warm == SERVE_MAX_WARM)
                return cli_fail(CLI_EXIT_USAGE, "--warm: at most %d", SERVE_MAX_WARM);
            if (server_warm_parse(v, image, sizeof image, &size, &werr) < 0)
                return cli_fail(CLI_EXIT_USAGE, "%s", werr.message);
            warm[n_warm++] = v, i++;
            opt.warm = warm;
        } else if (strcmp(a, "--run-repo-root") == 0) {
            struct stat rst;
            if (n_roots == SERVE_MAX_REPO_ROOTS)
                return cli_fail(CLI_EXIT_USAGE, "--run-repo-root: at most %d", SERVE_MAX_REPO_ROOTS);
            if (v[0] != '/' || stat(v, &rst) < 0 || !S_ISDIR(rst.st_mode))
                return cli_fail(CLI_EXIT_USAGE, "--run-repo-root %s: must be an absolute path to a directory", v);
            repo_roots[n_roots++] = v, i++;
            opt.run_repo_roots = repo_roots;
        } else if (strcmp(a, "--secrets-key-file") == 0) {
            opt.secrets_key_file = v, i++;
        } else if (strcmp(a, "--upstream-ca") == 0) {
            if (access(v, R_OK) < 0)
                return cli_fail(CLI_EXIT_USAGE, "--upstream-ca %s: %s", v, strerror(errno));
            opt.upstream_ca_file = v, i++;
        } else if (strcmp(a, "--agent-registry") == 0) {
            opt.agent_registry = v, i++;
        } else if (strcmp(a, "--token-rate") == 0) {
            char *end;
            unsigned long r = strtoul(v, &end, 10);
            if (*end || end == v || r > 1000000)
                return cli_fail(CLI_EXIT_USAGE, "--token-rate must be a number of requests per second (0 = unlimited)");
            opt.token_rate = (uint32_t)r, i++;
        } else {
            return cli_fail(CLI_EXIT_USAGE, "serve: unknown option '%s' (see cell serve --help)", a);
        }
    }
    cell_error err = { 0 };
    if (server_run(&opt, &err) < 0)
        return cli_fail_err(CLI_EXIT_INTERNAL, &err);
    return 0;
}

int main(int argc, char **argv)
{
    const char *state_dir = NULL;
    int i = 1;
    if (i + 1 < argc && strcmp(argv[i], "--state") == 0)
        state_dir = argv[i + 1], i += 2;
    else if (i < argc && strncmp(argv[i], "--state=", 8) == 0)
        state_dir = argv[i] + 8, i++;
    return serve(state_dir, argc - i, argv + i);
}
