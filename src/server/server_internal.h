/* server_internal.h: what the daemon's files share: the server, the request,
 * the running-cell registry and its processes, routing and reply helpers. */
#ifndef CELL_SERVER_INTERNAL_H
#define CELL_SERVER_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "server/server.h"
#include "store/store.h"
#include "util/util.h"

typedef struct srv   srv;
typedef struct sreq  sreq;
typedef struct scell scell;
typedef struct sproc sproc;

/* ---- routing (router.c) ----------------------------------------------------
 * Patterns are literal segments and {name} captures, e.g.
 * "/cells/{cell}/v1/processes/{id}/logs"; a last segment "*" matches any
 * non-empty rest.  Pure functions: fuzzed. */
enum route_flag {
    ROUTE_PUBLIC      = 1,  /* no token needed */
    ROUTE_ADMIN       = 2,  /* admin tokens only */
    ROUTE_CELL        = 4,  /* per-cell plane: {cell} must be a running cell of the tenant */
    ROUTE_STREAM_BODY = 8,  /* body chunks go to `body`, not a JSON buffer */
    ROUTE_NO_AUDIT    = 16, /* high-rate, side-effect-free (health) */
    ROUTE_EVENTS      = 32, /* may answer with SSE or a WebSocket: ?access_token= allowed for those */
    ROUTE_METRICS     = 64, /* with ROUTE_ADMIN: public under cell serve --metrics-public */
    ROUTE_NODE        = 128, /* with ROUTE_ADMIN: the node token (pods.c) also, on the unix socket */
};
typedef int (*route_fn)(sreq *r);
/* Called for each chunk of a streamed body; len 0 never happens.  Returns
 * 0, or -1 after queueing an error reply. */
typedef int (*route_body_fn)(sreq *r, const char *data, size_t len);

typedef struct route {
    const char   *method;
    const char   *pattern;
    route_fn      fn;
    route_body_fn body;
    unsigned      flags;
} route;

#define ROUTE_MAX_PARAMS 4
typedef struct route_match {
    const route *route;
    size_t       n_params;
    const char  *names[ROUTE_MAX_PARAMS];   /* point into the pattern */
    char        *values[ROUTE_MAX_PARAMS];  /* point into buf */
    char         buf[512];
} route_match;

enum { ROUTER_FOUND = 0, ROUTER_NO_PATH = -1, ROUTER_BAD_METHOD = -2, ROUTER_TOO_LONG = -3 };
/* Match `path` (no query string) against the table.  On ROUTER_BAD_METHOD
 * the path exists with another method. */
int srv_router_match(const route *table, size_t n, const char *method, const char *path, route_match *m);
const char *srv_router_param(const route_match *m, const char *name);
/* The methods `path` has in the table, comma-separated, into out. */
void srv_router_allowed(const route *table, size_t n, const char *path, char *out, size_t size);
/* The offset of the first control byte (0x00-0x1f, 0x7f) in the decoded
 * path's len bytes, or -1: such paths are refused (a NUL would cut them). */
long srv_router_path_ctl(const char *path, size_t len);

/* ---- the server ------------------------------------------------------------ */
struct srv {
    server_options   opt;
    char             state_dir[4096];
    cell_ctx        *ctx;
    pthread_mutex_t  ctx_lock;      /* libcell contexts are single-threaded */
    store           *st;
    struct MHD_Daemon *tcp, *unix_d;
    struct conns     *conns;        /* open connections (conns.c) */
    struct stls      *tls;          /* the TCP listener's TLS material (tls.c); NULL = plain HTTP */
    int64_t          started_ms;

    /* Cells die with the thread that booted them (cell-init's parent-death
     * signal), so every boot runs on the daemon's main thread, which lives
     * as long as the daemon; request threads queue the work and wait. */
    int              owner_wake;    /* eventfd the main thread polls */
    pthread_mutex_t  owner_lock;
    pthread_cond_t   owner_cond;
    struct owner_job *owner_jobs;
    int              owner_closed;  /* owner_lock: the main thread stopped taking jobs */

    pthread_mutex_t  lock;          /* cells list, refcounts, rate buckets */
    scell           *cells;
    struct rate_bucket *buckets;
    atomic_int       stopping;
    pthread_t        reaper;
    int              reaper_started, reaper_cond_used;
    pthread_cond_t   reaper_cond;
};

/* ---- one HTTP request ------------------------------------------------------ */
struct sreq {
    srv          *s;
    struct MHD_Connection *conn;
    const char   *method, *url;
    route_match   m;
    int           matched;          /* ROUTER_* result */
    char          allow[64];        /* methods of the path, for a 405 */
    store_token   tok;
    int           authed;
    scell        *cell;             /* ROUTE_CELL: held reference */
    char         *body;             /* JSON routes: the whole body */
    size_t        body_len, body_cap;
    void         *stream;           /* ROUTE_STREAM_BODY state, owned by the route */
    void        (*stream_free)(sreq *r);
    unsigned      status;
    int           responded;
    int           in_body;          /* between the first and the last call */
    struct MHD_Response *deferred;  /* a reply made while the body streamed in */
    uint64_t      discarded;        /* body bytes dropped after an error */
    uint64_t      streamed;         /* ROUTE_STREAM_BODY bytes handed to the route */
    int64_t       start_ms;
    json_t       *audit;            /* extra audit fields (cell, command, exit code) */
    struct sconn *sconn;            /* the connection's record (conns.c) */
    int           long_lived;       /* a stream: no idle timeout (srv_conns_long_lived) */
    int           cors_preflight;   /* OPTIONS with Access-Control-Request-Method (cors.c) */
};

/* ---- TLS (tls.c) and CORS (cors.c) ------------------------------------------
 * srv_tls_load reads and checks --tls-cert/--tls-key/--tls-client-ca (nothing
 * without them); srv_tls_mhd_options fills the TCP daemon's options (items has
 * room for TLS_MHD_OPTIONS) and returns the MHD_USE_TLS flag or 0. */
#define TLS_MHD_OPTIONS 5
int      srv_tls_load(srv *s, const char *listen_spec, cell_error *err);
void     srv_tls_free(srv *s);
unsigned srv_tls_mhd_options(const srv *s, struct MHD_OptionItem items[TLS_MHD_OPTIONS]);
void     srv_tls_connection_started(srv *s, struct MHD_Connection *conn);  /* MHD_CONNECTION_NOTIFY_STARTED */
int      srv_tls_request_allowed(sreq *r);  /* 0: a client certificate was required and is not valid */
/* Vary/Access-Control-* headers on every answer (srv_reply_response). */
void     srv_cors_add_headers(sreq *r, struct MHD_Response *resp);
/* 1 when a WebSocket handshake comes from a page on another origin than the
 * daemon's and --cors-origin's (*origin: the refused Origin), else 0. */
int      srv_cors_ws_origin_refused(sreq *r, const char **origin);
/* Answer OPTIONS on a path of the table: 204 with Allow (and the preflight's CORS headers). */
int      srv_cors_options(sreq *r, const route *table, size_t n, const char *path);

/* ---- connections (conns.c) --------------------------------------------------
 * Every accepted connection has a record: the request head must arrive
 * within --header-timeout (slowloris), and revoking a token ends every
 * connection and stream authenticated with it. */
int  srv_conns_start(srv *s, cell_error *err);
void srv_conns_stop(srv *s);
/* libmicrohttpd's MHD_OPTION_NOTIFY_CONNECTION callback (cls = srv). */
void srv_conns_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                  enum MHD_ConnectionNotificationCode code);
void srv_conns_request_begins(sreq *r);         /* the head is in */
void srv_conns_request_ends(sreq *r);           /* the next head's deadline starts */
void srv_conns_authenticated(sreq *r);          /* remember r->tok.id for revocation */
/* The answer is a stream (SSE, WebSocket, a long download): no idle timeout
 * and no head deadline; the stream ends on revocation or shutdown. */
void srv_conns_long_lived(sreq *r);
/* End every connection and stream of this token, now and for good (but
 * r's own connection, which carries the answer). */
void srv_conns_revoke_token(sreq *r, const char *token_id);
/* Whether a stream authenticated as token_id must end (revoked, or the
 * daemon stopping).  Streams check it at each wake-up. */
int  srv_conns_stream_over(srv *s, const char *token_id);
/* Wait until fd (a download's source: a worker's pipe, a cell's transfer
 * process) is readable, looking for a revocation every 250 ms, so a body
 * whose source is slow still ends at its token's revocation: 1 readable,
 * 0 the stream is over (srv_conns_stream_over), -1 poll failed (errno). */
int  srv_conns_wait_readable(srv *s, const char *token_id, int fd);

int64_t srv_now_ms(void);
/* An absolute CLOCK_REALTIME deadline `ms` from now, for pthread_cond_timedwait. */
void srv_deadline_after(struct timespec *ts, int64_t ms);
/* Run fn(arg) on the daemon's main thread and wait for it. */
void srv_on_owner_thread(srv *s, void (*fn)(void *), void *arg);
/* Boot a cell on that thread (cells die with the thread that booted them)
 * under ctx_lock, and destroy one under ctx_lock (registry.c). */
int  srv_registry_cell_create(srv *s, const cell_config *cfg, cell **out, cell_error *err);
void srv_registry_cell_destroy(srv *s, cell *c);
/* Boot, as above, what a create's normalized spec without a policy boots. */
int  srv_registry_cell_create_spec(srv *s, json_t *spec, cell **out, cell_error *err);

/* laneview.c: mounts[] of type "lane", a tenant's lane shown read-only
 * through a vfs.  srv_laneview_open runs on the owner thread under ctx_lock;
 * srv_laneview_close after the cell is destroyed. */
struct laneviews;
struct runtime_vfs_spec;
size_t srv_laneview_count(json_t *spec);
int    srv_laneview_open(srv *s, const char *tenant, json_t *spec, struct runtime_vfs_spec *specs, size_t *n,
                     struct laneviews **out, cell_error *err);
void   srv_laneview_close(struct laneviews *lv);

/* ---- the warm pool (pool.c) -------------------------------------------------
 * Cells booted ahead of creates, per image, refilled by a thread of its own
 * (started once the main thread takes boot jobs).  srv_pool_take hands out a
 * ready cell that boots exactly what `spec` asks for (NULL: none fits or
 * none is ready; the caller boots cold); the cell is the caller's and never
 * goes back.  srv_pool_stop destroys every ready cell. */
int     srv_pool_start(srv *s, cell_error *err);
int     srv_cells_valid_hostname(const char *h);  /* cells.c: libcell's rule, for a 400 before a boot */
void    srv_pool_stop(srv *s);
cell   *srv_pool_take(srv *s, json_t *spec, int has_policy);
int     srv_pool_image_ready(const char *image);  /* a ready cell of it exists: it is built */
json_t *srv_pool_json(void);                      /* GET /v1/limits "pool" */
int     srv_pool_warmed(void);                    /* each image's pool filled once or failed a boot (/readyz) */

/* Replies.  Each queues a response and returns an MHD_Result for the
 * access handler to return.  srv_reply_json steals `body`. */
int srv_reply_json(sreq *r, unsigned status, json_t *body);
int srv_reply_empty(sreq *r, unsigned status);
int srv_reply_response(sreq *r, unsigned status, struct MHD_Response *resp);
/* 200 text/event-stream whose body `read` produces from `state` (freed by
 * `free_state`, also when no response can be made); a long-lived stream
 * (no idle timeout; ended by revocation or the daemon's stop). */
int srv_reply_event_stream(sreq *r, MHD_ContentReaderCallback read, void *state, MHD_ContentReaderFreeCallback free_state);
/* application/problem+json: {type, title, status, detail}.  `type` is a
 * short name ("not_found"); it is expanded to the full type URI. */
int srv_reply_problem(sreq *r, unsigned status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same with a "details" object (stolen). */
int srv_reply_problem_details(sreq *r, unsigned status, const char *type, json_t *details, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Map a libcell/store error (errno-classified) onto a status and problem. */
int srv_reply_error(sreq *r, const cell_error *e);
/* A problem+json body built by the caller, for the reference's problems
 * that carry members of their own (sessionId, code): audited with
 * audit_msg; steals `body`. */
int srv_reply_problem_body(sreq *r, unsigned status, json_t *body, const char *audit_msg);

/* Request input.  Each returns -1 after queueing a 400 problem that names
 * the field, so handlers write `if (srv_req_json(r, &o) < 0) return r->status_result;`. */
const char *srv_req_query(sreq *r, const char *key);
/* An optional integer query parameter: 0 (with *out set if it is there, and
 * *present, if given, saying whether), -1 when it is not a whole decimal
 * number; no answer is queued: the caller checks its range and says so. */
int srv_req_query_integer(sreq *r, const char *key, long long *out, int *present);
/* The name of a query parameter whose decoded value holds a NUL ("%00"),
 * which every srv_req_query() caller would see cut short, or NULL. */
const char *srv_req_query_nul(sreq *r);
int srv_req_json(sreq *r, json_t **out);            /* body must be a JSON object */
/* A 400 naming the first member of obj not in the NULL-terminated list of
 * known names (where: "" or the object's own field, like "policy"). */
int srv_req_check_fields(sreq *r, json_t *obj, const char *where, ...) __attribute__((sentinel));
#define REQ_FIELDS_MAX 64                       /* names srv_req_check_fields takes */
int srv_req_check_known(sreq *r, json_t *obj, const char *where, const char *const *known);  /* the same, from a list */
int srv_json_get_str(sreq *r, json_t *o, const char *key, int required, const char **out);
int srv_json_get_int(sreq *r, json_t *o, const char *key, int required, int64_t min, int64_t max, int64_t *out);
int srv_json_get_bool(sreq *r, json_t *o, const char *key, int *out);
/* A size: a non-negative integer of bytes or a string like "512M". */
int srv_json_get_size(sreq *r, json_t *o, const char *key, uint64_t *out);
/* An array of strings (NULL-terminated malloc()ed vector, strings borrowed
 * from the JSON) and an object of strings ("K=V" malloc()ed strings). */
int srv_json_get_strv(sreq *r, json_t *o, const char *key, const char ***out, size_t *n);
int srv_json_get_env(sreq *r, json_t *o, const char *key, char ***out, size_t *n);
void srv_strv_free(char **v);

/* Add a field to this request's audit record. */
void srv_req_audit(sreq *r, const char *key, json_t *value);

/* MHD_YES / MHD_NO as int, for handlers that already replied. */
#define REPLIED(r) ((r)->responded ? MHD_YES : MHD_NO)

/* ---- running cells (registry.c) --------------------------------------------
 * A scell is a cell record the daemon holds in memory: its spec and, while
 * it runs, the libcell handle.  Locks, in order: srv.lock (list, refs,
 * state) -> scell.io (the control channel and `c`) -> scell.plock
 * (processes, logs).
 *
 * Lifecycle: one state machine, every transition taken under srv.lock by
 * the one thread that then does the work (boot, halt, delete) without it:
 *   creating -> booting -> running -> stopping -> stopped -> booting ...
 *   any settled state (running, stopped) -> deleting -> deleted
 * creating, booting, stopping and deleting are transitional: start answers
 * 409 naming the state, stop and delete wait for it to settle.  A deleting
 * cell is invisible to lookups but still counts for quotas until its
 * resources are gone; deleted is final. */
enum scell_state {
    SCELL_CREATING, SCELL_BOOTING, SCELL_RUNNING, SCELL_STOPPING, SCELL_STOPPED, SCELL_DELETING, SCELL_DELETED,
};
struct scell {
    srv            *s;
    char            id[24];
    char            tenant[64];
    json_t         *spec;           /* normalized create request; never changed after srv_registry_add */
    json_t         *policy;         /* io: the current policy (PUT .../policy), NULL if none */
    int             refs;           /* srv.lock */
    enum scell_state state;         /* srv.lock */
    pthread_cond_t  state_cond;     /* with srv.lock: a transition ended */
    pthread_mutex_t io;
    cell           *c;              /* NULL while stopped */
    int             dead;           /* io: init died on its own; the reaper halts it */
    int             halted_at_shutdown; /* srv.lock */
    int64_t         created_ms, started_ms;
    atomic_llong    active_ms;      /* last request, for the ttl reaper */
    atomic_int      policy_screened; /* its policy came from a non-admin token: the daemon's own
                                        connections for it (decide webhooks) are screened (egress.c) */
    pthread_t       watcher;
    int             watcher_on;
    int             wake_fd;        /* eventfd that stops the watcher */
    pthread_mutex_t plock;
    pthread_cond_t  pcond;          /* process exits and new log entries */
    sproc          *procs;
    unsigned        next_proc;
    struct laneviews *views;        /* its lane mounts' servers (laneview.c), from boot to halt */
    struct desktop  *desktop;       /* plock to create: its virtual desktop (desktop.c), or NULL */
    pthread_mutex_t ulock;          /* usage: the model tokens its egress metered ("meter" rules) */
    struct scell_usage {
        int      metered;           /* a metered response was seen */
        uint64_t input, output, total;
    } usage;
    struct proc_config {            /* plock; sandbox-agent's /processes/config */
        int64_t max_concurrent, default_run_timeout_ms, max_run_timeout_ms;
        int64_t max_output_bytes, max_log_bytes, max_input_bytes;
    } pconf;
    scell          *next;
};

/* Look up a tenant's cell (tenant NULL = any) and take a reference; a
 * deleting or deleted cell is not found. */
scell *srv_registry_get(srv *s, const char *tenant, const char *id);
void   srv_registry_put(scell *sc);
/* Register a new record in state creating (stopped if `creating` is 0, as at
 * load) with one reference for the caller. */
scell *srv_registry_add(srv *s, const char *id, const char *tenant, json_t *spec, int64_t created_ms, int creating);
/* Transitions (io must NOT be held).  Each fails with ENOENT once the cell
 * is deleting, and EBUSY (a 409 whose message names the state) when the
 * cell is not in a state the transition starts from.
 * srv_registry_create_boot: creating -> booting -> running (stopped on failure).
 * srv_registry_start: stopped -> booting -> running (stopped on failure).
 * srv_registry_stop: running -> stopping -> stopped; stopped stays stopped.
 * srv_registry_delete: running|stopped -> deleting -> deleted, halting the cell
 *   and deleting its record.
 * With `wait`, stop and delete first wait out a transition in progress. */
int    srv_registry_create_boot(scell *sc, cell_error *err);
/* The creator gives up before booting: creating -> deleted. */
void   srv_registry_create_abort(scell *sc);
int    srv_registry_start(scell *sc, cell_error *err);
int    srv_registry_stop(scell *sc, int wait, cell_error *err);
int    srv_registry_delete(scell *sc, int wait, cell_error *err);
enum scell_state srv_registry_state(scell *sc);
const char *srv_registry_state_name(enum scell_state st);
int    srv_registry_running(scell *sc);
/* A copy of the cell's current policy (NULL if none). */
json_t *srv_registry_policy(scell *sc);
/* Load every stored cell at start (all stopped), start the ttl reaper. */
int    srv_registry_load(srv *s, cell_error *err);
void   srv_registry_shutdown(srv *s);
void   srv_registry_free(srv *s);
/* Count a tenant's cells and the memory they reserve. */
void   srv_registry_usage(srv *s, const char *tenant, size_t *cells, uint64_t *memory);

/* Control-channel access: unlock also delivers exits that arrived while
 * the lock was held (they are queued inside libcell, not on the fd). */
void srv_scell_io_lock(scell *sc);
void srv_scell_io_unlock(scell *sc);
/* Run `call` (a libcell call on sc->c) with the control channel held, so
 * that the cell cannot stop under it and one file operation (or a read,
 * change and write of one file) is not interleaved with another on this
 * cell; ECONNRESET when the cell is stopped. */
#define WITH_CELL(sc, err, call)                                                          \
    ({                                                                                    \
        int rc_;                                                                          \
        srv_scell_io_lock(sc);                                                                \
        rc_ = (sc)->c && !(sc)->dead ? (call) : util_fail(err, ECONNRESET, "cell %s is stopped", (sc)->id); \
        srv_scell_io_unlock(sc);                                                              \
        rc_;                                                                              \
    })

/* ---- limits (limits.c) -------------------------------------------------------
 * srv_limits_start fills s->opt.limits' zeros from the host and sets new
 * tenants' default quotas within the host budget. */
int      srv_limits_start(srv *s, cell_error *err);
uint64_t srv_limits_budget_memory(srv *s);  /* host memory minus the reserve */
uint64_t srv_limits_budget_pids(srv *s);
/* 0 if value <= ceiling, else -1 after a 400 naming the field and ceiling. */
int      srv_limits_check(sreq *r, const char *field, uint64_t value, uint64_t ceiling, const char *key);
/* Memory and pids reserved by the cells of `tenant` (NULL = every tenant). */
void     srv_limits_usage(srv *s, const char *tenant, uint64_t *memory, uint64_t *pids);
/* 0 if a cell asking memory and pids fits the daemon-wide budget, else -1
 * after a 409 budget_exceeded naming the budget.  Callers serialize. */
int      srv_limits_check_budget(sreq *r, uint64_t memory, uint64_t pids);
/* Reserve memory and pids from the same budget for something that is no
 * cell (an agent install, `asker` in the sentence) until srv_limits_release;
 * -1 (EDQUOT) with the 409's details (owned by the caller) if they do not fit. */
int      srv_limits_reserve(srv *s, uint64_t memory, uint64_t pids, const char *asker, json_t **details,
                        cell_error *err);
void     srv_limits_release(srv *s, uint64_t memory, uint64_t pids);
/* cells.c's lock around a create's quota check and insert. */
void     srv_cells_quota_lock(void);
void     srv_cells_quota_unlock(void);
/* POST /v1/cells in two steps, for the runs' cells too (rundrive.c):
 * validate a create body into a spec (no "lane" there), then check the
 * image and quotas, record, list and boot it as r's tenant (lane: the
 * spec's, or NULL); *out holds a reference.  Each -1 after a reply. */
int      srv_cells_spec_from_body(sreq *r, json_t *body, json_t *spec);
int      srv_cells_create_from_spec(sreq *r, json_t *spec, const store_lane *lane, scell **out);
/* lanes.c: a new lane `name` of r's tenant from the tar read from fd, as
 * POST /v1/lanes/{name}/import makes it (quota, default size); -1 after
 * a reply. */
int      srv_lanes_import_fd(sreq *r, const char *name, const char *image, int fd, store_lane *out);
/* At start, before the first lane operation: this process is the daemon
 * (its lanes are marked as its own, lane.c), and lanes made before the
 * marks existed get theirs. */
void     srv_lanes_start(srv *s);
/* The resources of a create that asks for none (within the ceilings). */
void     srv_cells_default_resources(const server_limits *l, uint64_t *memory, uint64_t *pids);
/* secrets.c: load (or create) the key that seals secrets, seal old rows. */
int      srv_secrets_start(srv *s, cell_error *err);

/* ---- processes (procs.c) ----------------------------------------------------*/
enum plog_stream { PLOG_STDOUT = 0, PLOG_STDERR = 1, PLOG_PTY = 2 };
typedef struct plog {
    uint64_t seq;
    int      stream;
    int64_t  ts_ms;
    size_t   len;
    char     data[];
} plog;

struct sproc {
    scell    *cell;
    char      id[24];
    int       refs;                 /* cell->plock */
    int       hidden;               /* a buffered run: not listed */
    int       desktop;              /* owner "desktop": an app the desktop launched (desktop.c) */
    char     *command;
    json_t   *args;
    char     *cwd;
    int       tty, interactive;
    pid_t     pid;
    int64_t   created_ms, exited_ms;
    int       exited, status;       /* status as from waitpid() */
    int       stdin_fd, pty_fd;     /* our ends; -1 when absent */
    int       out_fd, err_fd;       /* read by the reader thread */
    int       reader_on, output_done;
    uint16_t  rows, cols;
    plog    **log;                  /* ring of entries, oldest first */
    size_t    n_log, cap_log, log_bytes;
    uint64_t  next_seq;
    /* "backpressure": while a follower has not been sent half the log,
     * the reader waits instead of dropping unread output (procs.c). */
    int       paced, followers;
    uint64_t  sent_seq;             /* the furthest any follower has been sent */
    size_t    unsent_bytes;         /* entries after sent_seq */
    sproc    *next;
};

/* A listed process by id, with a reference; srv_procs_put drops it. */
sproc *srv_procs_find(scell *sc, const char *id);
void   srv_procs_put(sproc *p);
/* Bytes as a JSON string: invalid UTF-8 becomes U+FFFD (NULL: no memory). */
json_t *srv_procs_lossy_string(const unsigned char *s, size_t len);
/* JSON of a log entry: {sequence, stream, timestampMs, data (base64), encoding}. */
json_t *srv_procs_log_json(const plog *e);
/* Write to the process's stdin or terminal. */
int    srv_procs_write_input(sproc *p, const void *data, size_t len, cell_error *err);
/* sandbox-agent's defaults, lowered to the operator's ceilings if above. */
void   srv_procs_config_default(struct proc_config *c, const server_limits *l);
/* Bytes every process's log entries hold in daemon memory together. */
uint64_t srv_procs_log_memory(void);
/* Set a tty process's window size.  Returns 0; -2 (a 409 for clients, err
 * says why) if it is not a tty process or has exited; -1 if the cell failed. */
int    srv_procs_resize(sproc *p, uint16_t rows, uint16_t cols, cell_error *err);
/* Strict padded base64 (RFC 4648 section 4) into out (len * 3 / 4 bytes
 * suffice); on failure `why` gets the reference server's message. */
int    srv_procs_base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len, char *why, size_t why_size);
/* 404 problem for an unknown process id, as sandbox-agent words it. */
int    srv_reply_no_process(sreq *r, const char *id);

/* A hidden process (not listed) for another module, the ACP proxy: argv in
 * the cell with the cell's environment and working directory; fds get its
 * stdin (write end), stdout and stderr (read ends), the caller's to close.
 * The caller holds a reference: srv_procs_release unlists and drops it. */
sproc *srv_procs_spawn_piped(scell *sc, const char *const *argv, int fds[3], cell_error *err);
/* The same in directory cwd of the cell (NULL: the cell's), for helpers
 * that must not depend on a directory the agent may have removed. */
sproc *srv_procs_spawn_piped_at(scell *sc, const char *const *argv, const char *cwd, int fds[3], cell_error *err);
void   srv_procs_signal(sproc *p, int sig);         /* its process group */
/* A listed process of owner "desktop" (an app the desktop launched, with
 * `env`'s "K=V" entries added), logged like POST /processes' ones; the
 * caller holds a reference (srv_procs_put; it stays listed). */
sproc *srv_procs_start_desktop(scell *sc, const char *const *argv, const char *const *env, cell_error *err);
/* 1 once it exited (status as from waitpid()), 0 at the deadline. */
int    srv_procs_wait_exit(sproc *p, int64_t deadline_ms, int *status);
void   srv_procs_release(sproc *p);

/* Deliver one exit (called with io held by srv_scell_io_unlock / the watcher). */
void srv_procs_on_exit(scell *sc, pid_t pid, int status);
/* The cell stopped: every process is over. */
void srv_procs_on_halt(scell *sc);
void srv_procs_free_all(scell *sc);

/* ---- egress (egress.c): libcell's network callbacks, user = the scell ---- */
void srv_egress_event(void *user, const char *json);
/* The cell's metered usage {inputTokens, outputTokens, totalTokens} (a
 * new object), or NULL when none was metered. */
json_t *srv_egress_usage(scell *sc);
int  srv_egress_decide(void *user, const cell_net_flow *f, const char *url, int timeout_ms);
/* The same for a flow owner that is not a cell (a pod, pods.c): `id` is
 * the webhook's "cell" and the cache's key. */
int  srv_egress_decide_as(srv *s, const char *tenant, const char *id, int screened, const cell_net_flow *f,
                      const char *url, int timeout_ms);
int  srv_egress_secret(void *user, const char *name, char **value, size_t *len);
void srv_egress_cleanup(void);

/* ---- handlers ------------------------------------------------------------- */
extern const route srv_control_routes[];
extern const size_t srv_n_control_routes;
extern const route srv_agent_routes[];
extern const size_t srv_n_agent_routes;

/* openapi.c */
int srv_openapi_serve(sreq *r);

#endif
