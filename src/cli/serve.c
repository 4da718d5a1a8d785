/* serve.c: `cell serve`, the daemon: parses its options and hands over to
 * server_run(), which returns only on SIGINT or SIGTERM. */
#include "cli/cli.h"
#include "server/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

const char cli_serve_usage[] =
    "usage: cell serve [OPTIONS]\n"
    "\n"
    "Run the cell daemon: the HTTP API (/v1/...) and the per-cell\n"
    "sandbox-agent-compatible API (/cells/ID/v1/...).\n"
    "\n"
    "options:\n"
    "  --listen HOST:PORT    TCP address (default " SERVER_DEFAULT_LISTEN "; \"\" for none)\n"
    "  --socket PATH         unix socket (default STATE/cell.sock; \"\" for none)\n"
    "  --no-token            no authentication: every request is the admin of\n"
    "                        tenant \"default\" (local development only)\n"
    "  --max-file-size SIZE  largest fs/file, upload-batch or lane import body\n"
    "                        (default 1G)\n"
    "  --max-json-size SIZE  largest JSON request body (default 1M)\n"
    "  --token-rate N        default requests/second of tokens created through\n"
    "                        the API (default 0 = unlimited)\n"
    "  --upstream-ca FILE    PEM certificates trusted, besides the host's trust\n"
    "                        store, when verifying upstreams of intercepted HTTPS\n"
    "                        (\"http\" policy rules; private CAs, tests)\n"
    "\n"
    "On first start the daemon creates an admin token in STATE/admin.token (0600).\n";

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
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(cli_serve_usage, stdout);
            return 0;
        } else if (strcmp(a, "--no-token") == 0) {
            opt.no_token = 1;
        } else if (!v) {
            return cli_fail(CLI_EXIT_USAGE, "serve: unknown option '%s' or missing value (see cell serve --help)", a);
        } else if (strcmp(a, "--listen") == 0) {
            opt.listen = v, i++;
        } else if (strcmp(a, "--socket") == 0) {
            opt.socket_path = v, i++;
        } else if (strcmp(a, "--max-file-size") == 0) {
            if (size_opt(a, v, &opt.max_file_bytes))
                return CLI_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--max-json-size") == 0) {
            if (size_opt(a, v, &n))
                return CLI_EXIT_USAGE;
            if (n < 1024 || n > (64u << 20))
                return cli_fail(CLI_EXIT_USAGE, "--max-json-size must be between 1K and 64M");
            opt.max_json_bytes = (uint32_t)n, i++;
        } else if (strcmp(a, "--upstream-ca") == 0) {
            if (access(v, R_OK) < 0)
                return cli_fail(CLI_EXIT_USAGE, "--upstream-ca %s: %s", v, strerror(errno));
            opt.upstream_ca_file = v, i++;
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
