/* serve.c: `cell serve`, the daemon: parses its options and hands over to
 * server_run(), which returns only on SIGINT or SIGTERM. */
#include "cli/cli.h"
#include "server/server.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

#define SERVE_MAX_ALLOW 16
#define STR_(x) #x
#define STR(x) STR_(x)

const char cli_serve_usage[] =
    "usage: cell serve [OPTIONS]\n"
    "\n"
    "Run the cell daemon: the HTTP API (/v1/...) and the per-cell\n"
    "sandbox-agent-compatible API (/cells/ID/v1/...).\n"
    "\n"
    "options:\n"
    "  --listen HOST:PORT    TCP address (default " SERVER_DEFAULT_LISTEN "; \"\" for none); numeric\n"
    "                        HOST, PORT 0-65535 (0: any free port, printed at start)\n"
    "  --socket PATH         unix socket (default STATE/cell.sock; \"\" for none)\n"
    "  --no-token            no authentication: every request is the admin of\n"
    "                        tenant \"default\" (local development only).  Refused\n"
    "                        with a TCP listener (use --listen \"\": the unix socket\n"
    "                        is 0600, root only) unless you also give\n"
    "  --no-token-on-tcp-i-understand-anyone-local-is-admin\n"
    "                        every local user that can connect becomes the admin\n"
    "                        (who can read any host file through a bind mount)\n"
    "  --max-file-size SIZE  largest fs/file, upload-batch or lane import body\n"
    "                        (default 1G)\n"
    "  --max-json-size SIZE  largest JSON request body (default 1M)\n"
    "  --audit-max-size SIZE rotate STATE/audit.log past SIZE (default 64M;\n"
    "                        0 = never): it becomes audit.log.1, .1 becomes .2...\n"
    "  --audit-keep N        rotated audit files kept, 1-64 (default 4)\n"
    "  --token-rate N        default requests/second of tokens created through\n"
    "                        the API (default 0 = unlimited)\n"
    "  --max-connections N   open connections per listener, TCP and the unix\n"
    "                        socket each (default " STR(SERVER_DEFAULT_MAX_CONNS) "; each is a thread and an fd;\n"
    "                        2N + 1024 must fit in RLIMIT_NOFILE)\n"
    "  --max-connections-per-ip N  open TCP connections per client address\n"
    "                        (default " STR(SERVER_DEFAULT_MAX_CONNS_PER_IP) ")\n"
    "  --idle-timeout SECS   close a connection that sends nothing for SECS while\n"
    "                        a request is expected or its body is coming (default\n"
    "                        " STR(SERVER_DEFAULT_IDLE_TIMEOUT) "); streams (log follow, terminals, builds,\n"
    "                        exports) have none: they end when the client leaves\n"
    "                        or stops reading for SECS, its token is revoked, or\n"
    "                        the daemon stops\n"
    "  --header-timeout SECS close a connection whose request head (request line\n"
    "                        and headers) is not complete SECS after the connection\n"
    "                        or its previous request (default " STR(SERVER_DEFAULT_HEADER_TIMEOUT) "; slow clients)\n"
    "  --log FILE            append stdout and stderr to FILE (0600); SIGHUP\n"
    "                        reopens it, for log rotation\n"
    "  --allow-tenant-dest CIDR  let non-admin tokens' policies make the daemon\n"
    "                        connect to CIDR (decide webhooks, DNS upstreams) although\n"
    "                        it is loopback, link-local or this host's own; repeat\n"
    "                        for more (at most " STR(SERVE_MAX_ALLOW) "); by default such policies are refused (403)\n"
    "  --upstream-ca FILE    PEM certificates trusted, besides the host's trust\n"
    "                        store, when verifying upstreams of intercepted HTTPS\n"
    "                        (\"http\" policy rules; private CAs, tests)\n"
    "  --agent-registry URL  the npm registry agent installs use (default\n"
    "                        " SERVER_DEFAULT_AGENT_REGISTRY "); npm runs in an install\n"
    "                        cell whose network reaches only this URL's host and port,\n"
    "                        writing at most --limit agents.installDisk (default 2G)\n"
    "  --limit KEY=VALUE     an operator ceiling on what tenants may ask (docs/api.md\n"
    "                        \"Limits\"; defaults derived from the host), e.g.\n"
    "                        cell.memory=8G, cell.pids=2048, log.bytesPerProcess=16M,\n"
    "                        log.memory=512M (all processes' logs together)\n"
    "  --reserve-memory SIZE memory kept from cells for the host and the daemon:\n"
    "                        all cells together reserve at most MemTotal - SIZE\n"
    "                        (default MemTotal/8, at least 1G)\n"
    "  --reserve-pids N      pids kept likewise from min(pid_max, threads-max)\n"
    "                        (default a quarter, at least 2048)\n"
    "  --secrets-key-file F  the 32-byte key that seals tenant secrets in cell.db\n"
    "                        (default STATE/secrets.key, created 0600 on first start)\n"
    "\n"
    "On first start the daemon creates an admin token in STATE/admin.token (0600).\n"
    "One daemon per state directory: it holds STATE/daemon.lock (with its pid),\n"
    "and a second one exits with an error naming the first one's pid.\n"
    "\n"
    "signals:\n"
    "  TERM, INT, QUIT  stop gracefully: cells are halted (their lanes and records\n"
    "                   stay, as \"stopped\"), connections closed, then exit 0\n"
    "  HUP              reopen the --log file; nothing else changes\n"
    "  PIPE             ignored (a vanished client is an error on its connection)\n"
    "  KILL             every cell dies with the daemon (cell-init's parent-death\n"
    "                   signal); records, lanes and tokens survive, and the next\n"
    "                   start marks the cells stopped\n";

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

int cli_serve(struct cli_global *g, int argc, char **argv)
{
    server_options opt = { .state_dir = g->state_dir };
    static const char *allow[SERVE_MAX_ALLOW + 1];
    size_t n_allow = 0;
    for (int i = 1; i < argc; i++) {
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
