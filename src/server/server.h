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
#define SERVER_DEFAULT_MAX_CONNS_PER_IP 256     /* per TCP peer address: a platform backend is one peer with a connection per stream */
#define SERVER_DEFAULT_IDLE_TIMEOUT     60      /* seconds without a byte */
#define SERVER_DEFAULT_HEADER_TIMEOUT   15      /* seconds to send a request's head */

/* Operator ceilings on every number a tenant can set through the API, and
 * the host budget all cells together reserve from.  0 = the default, most
 * derived from the host at start (docs/api.md "Limits" lists them); `cell
 * serve --limit KEY=VALUE` sets one. */
typedef struct server_limits {
    uint64_t cell_memory;       /* resources.memory and a memory mount's size (bytes) */
    uint64_t cell_pids;         /* resources.pids */
    uint64_t cell_cpu_millis;   /* resources.cpus x 1000 */
    uint64_t cell_disk;         /* resources.disk (bytes) */
    uint64_t cell_ttl_s;        /* ttl (seconds) */
    uint64_t lane_size;         /* lanes: size (bytes) */
    uint64_t procs;             /* maxConcurrentProcesses */
    uint64_t run_timeout_ms;    /* maxRunTimeoutMs, defaultRunTimeoutMs; run timeoutMs is clamped */
    uint64_t output_bytes;      /* maxOutputBytes; run maxOutputBytes is clamped */
    uint64_t log_bytes;         /* maxLogBytesPerProcess */
    uint64_t input_bytes;       /* maxInputBytesPerRequest */
    uint64_t log_memory;        /* all processes' logs in daemon memory together (bytes) */
    uint64_t procs_kept;        /* processes a cell keeps listed, exited ones included */
    uint64_t secrets;           /* secrets per tenant */
    uint64_t host_memory;       /* 0 = MemTotal */
    uint64_t host_pids;         /* 0 = min(pid_max, threads-max) */
    uint64_t reserve_memory;    /* kept from cells for the host and the daemon */
    uint64_t reserve_pids;
    uint64_t agents_install_disk; /* what one agent install may write (its staging filesystem's size) */
} server_limits;

/* Set one limit from "KEY=VALUE" (`cell serve --limit`); srv_limit_keys
 * lists the keys. */
int srv_limit_set(server_limits *l, const char *assignment, cell_error *err);
extern const char srv_limit_keys[];

/* New tenants' quotas, as cell serve --tenant-max-cells ... set them. */
typedef struct server_tenant_quota {
    uint64_t cells, memory, lanes, disk, pids;
    unsigned set;               /* 1 << the index of each one given, in this order */
} server_tenant_quota;

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
    server_limits limits;       /* ceilings and the host budget, 0 = derived */
    const char *secrets_key_file; /* NULL = STATE/secrets.key */
    unsigned    max_conns;      /* 0 = SERVER_DEFAULT_MAX_CONNS */
    unsigned    max_conns_per_ip; /* 0 = SERVER_DEFAULT_MAX_CONNS_PER_IP */
    unsigned    idle_timeout_s; /* 0 = SERVER_DEFAULT_IDLE_TIMEOUT */
    unsigned    header_timeout_s; /* 0 = SERVER_DEFAULT_HEADER_TIMEOUT */
    const char *log_path;       /* stdout and stderr go here; reopened on SIGHUP */
    /* CIDRs (NULL-terminated) a non-admin's policy may still make the daemon
     * connect to (decide webhooks, DNS upstreams) although they are loopback,
     * link-local or this host's own; NULL = none (cell serve --allow-tenant-dest). */
    const char *const *tenant_dest_allow;
    uint64_t    audit_max_size; /* rotate audit.log past this (if audit_max_size_set; 0 = never) */
    int         audit_max_size_set;
    unsigned    audit_keep;     /* rotated audit files kept; 0 = STORE_AUDIT_DEFAULT_KEEP */
    /* npm registry that agent installs fetch from (the install cell's
     * policy allows only its host and port); NULL = SERVER_DEFAULT_AGENT_REGISTRY */
    const char *agent_registry;
    /* The warm pool (pool.c): NULL-terminated --warm values, "N" (the
     * default image's pool) or "IMAGE=N"; NULL = SERVER_DEFAULT_WARM cells
     * of SERVER_DEFAULT_WARM_IMAGE. */
    const char *const *warm;
    /* Host directories (NULL-terminated, --run-repo-root) under which any
     * token's run may name its repo.path; admins may name any. */
    const char *const *run_repo_roots;
    /* New tenants' quotas: each one given, else the default (docs/api.md
     * "Quotas"); a tenant's row keeps the quotas it got when it was made. */
    server_tenant_quota tenant_quota;
    /* TLS on the TCP listener (tls.c): PEM files; with a client CA every
     * TCP client must also present a certificate it signed (tokens are
     * still required).  The unix socket stays plaintext. */
    const char *tls_cert_file;
    const char *tls_key_file;
    const char *tls_client_ca_file;
    int         insecure_listen; /* allow plain HTTP on a non-loopback address */
    /* Exact origins (NULL-terminated, --cors-origin) whose browser pages
     * may call the API (cors.c); NULL = CORS off. */
    const char *const *cors_origins;
    int         log_format;     /* slog.h's SLOG_TEXT (0, the default) or SLOG_JSON: --log-format */
    int         metrics_public; /* GET /metrics without a token (it names no tenant): --metrics-public */
    /* The node endpoint /v1/pods (pods.c, docs/kubernetes.md): --pods turns
     * it on; its node token is kept in node_token_file (NULL =
     * STATE/node.token); pod_policy_file is the node-wide default policy
     * of pods that register without one (NULL = none). */
    int         pods;
    const char *node_token_file;
    const char *pod_policy_file;
} server_options;

/* Whether a --cors-origin value is an exact origin (scheme://host[:port]). */
int srv_cors_origin_check(const char *origin, cell_error *err);

#define SERVER_DEFAULT_WARM       2
#define SERVER_DEFAULT_WARM_IMAGE "host"
#define SERVER_WARM_MAX           64      /* cells kept ready per image */
/* Parse one --warm value into its image and size. */
int srv_warm_parse(const char *text, char *image, size_t size, unsigned *n, cell_error *err);

#define SERVER_DEFAULT_AGENT_REGISTRY "https://registry.npmjs.org/"

/* The options' checks against each other (--no-token on TCP, --cors-origin,
 * plain HTTP off loopback), which touch nothing: a failure is a usage error. */
int srv_options_check(const server_options *opt, cell_error *err);

/* Run the daemon until SIGINT or SIGTERM (SIGHUP reopens the log).  Prints where it listens and
 * where the admin token is (creating one on first start). */
int srv_run(const server_options *opt, cell_error *err);

#endif
