/* server.h: the cell daemon (`cell serve`): the HTTP control plane, the
 * sandbox-agent-compatible per-cell plane, tenants, tokens and audit. */
#ifndef CELL_SERVER_H
#define CELL_SERVER_H

#include <stdint.h>
#include "cell.h"

#define SERVER_DEFAULT_LISTEN     "127.0.0.1:7070"
#define SERVER_DEFAULT_MAX_FILE   (1ull << 30)    /* fs/file and upload bodies */
#define SERVER_DEFAULT_MAX_JSON   (1u << 20)      /* JSON request bodies */
/* Connection limits: a thread and an fd each, so they bound what idle or
 * slow clients can pin (cell serve --help says what each one means). */
#define SERVER_DEFAULT_MAX_CONNS        512     /* per listener */
#define SERVER_DEFAULT_MAX_CONNS_PER_IP 32      /* per TCP peer address */
#define SERVER_DEFAULT_IDLE_TIMEOUT     60      /* seconds without a byte */
#define SERVER_DEFAULT_HEADER_TIMEOUT   15      /* seconds to send a request's head */

typedef struct server_options {
    const char *state_dir;      /* NULL = cell_default_state_dir() */
    const char *listen;         /* "HOST:PORT"; NULL = default, "" = no TCP */
    const char *socket_path;    /* NULL = STATE/cell.sock, "" = no unix socket */
    int         no_token;       /* development only: every request is the admin */
    int         no_token_on_tcp; /* allow no_token with a TCP listener (anyone local is admin) */
    uint64_t    max_file_bytes; /* 0 = SERVER_DEFAULT_MAX_FILE */
    uint32_t    max_json_bytes; /* 0 = SERVER_DEFAULT_MAX_JSON */
    uint32_t    token_rate;     /* default rate (req/s) of tokens made by the API, 0 = unlimited */
    int         quiet;          /* no startup banner */
    const char *upstream_ca_file; /* PEM roots trusted for intercepted upstreams, besides the host's */
    unsigned    max_conns;      /* 0 = SERVER_DEFAULT_MAX_CONNS */
    unsigned    max_conns_per_ip; /* 0 = SERVER_DEFAULT_MAX_CONNS_PER_IP */
    unsigned    idle_timeout_s; /* 0 = SERVER_DEFAULT_IDLE_TIMEOUT */
    unsigned    header_timeout_s; /* 0 = SERVER_DEFAULT_HEADER_TIMEOUT */
    const char *log_path;       /* stdout and stderr go here; reopened on SIGHUP */
} server_options;

/* Run the daemon until SIGINT or SIGTERM (SIGHUP reopens the log).  Prints where it listens and
 * where the admin token is (creating one on first start). */
int server_run(const server_options *opt, cell_error *err);

#endif
