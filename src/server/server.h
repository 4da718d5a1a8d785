/* server.h: the cell daemon (`cell serve`): the HTTP control plane, the
 * sandbox-agent-compatible per-cell plane, tenants, tokens and audit. */
#ifndef CELL_SERVER_H
#define CELL_SERVER_H

#include <stdint.h>
#include "cell.h"

#define SERVER_DEFAULT_LISTEN     "127.0.0.1:7070"
#define SERVER_DEFAULT_MAX_FILE   (1ull << 30)    /* fs/file and upload bodies */
#define SERVER_DEFAULT_MAX_JSON   (1u << 20)      /* JSON request bodies */

typedef struct server_options {
    const char *state_dir;      /* NULL = cell_default_state_dir() */
    const char *listen;         /* "HOST:PORT"; NULL = default, "" = no TCP */
    const char *socket_path;    /* NULL = STATE/cell.sock, "" = no unix socket */
    int         no_token;       /* development only: every request is the admin */
    uint64_t    max_file_bytes; /* 0 = SERVER_DEFAULT_MAX_FILE */
    uint32_t    max_json_bytes; /* 0 = SERVER_DEFAULT_MAX_JSON */
    uint32_t    token_rate;     /* default rate (req/s) of tokens made by the API, 0 = unlimited */
    int         quiet;          /* no startup banner */
    const char *upstream_ca_file; /* PEM roots trusted for intercepted upstreams, besides the host's */
} server_options;

/* Run the daemon until SIGINT or SIGTERM.  Prints where it listens and
 * where the admin token is (creating one on first start). */
int server_run(const server_options *opt, cell_error *err);

#endif
