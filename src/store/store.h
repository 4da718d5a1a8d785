/* store.h: the daemon's persistent state: tenants, tokens, cells and lanes in
 * STATE/cell.db (SQLite), and the append-only audit log STATE/audit.log. */
#ifndef CELL_STORE_H
#define CELL_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "cell.h"

/* Every function is thread-safe: one SQLite connection guarded by a mutex
 * inside the store, so the daemon's threads share one `store`.  The CLI may
 * open the same database at the same time (WAL + busy timeout).
 * Timestamps (`created`, `updated`, the audit log's "ts_ms") are Unix time
 * in milliseconds.
 * Errors follow cell_error: 0 or -1, with code ENOENT (no such row, or a row
 * of another tenant), EEXIST (duplicate), EINVAL (bad argument), EACCES
 * (token check), EBUSY (database locked past the timeout), EIO/ENOSPC. */

#define STORE_SCHEMA_VERSION        4
#define STORE_BUSY_TIMEOUT_MS       5000

/* Quotas of a tenant made by store_tenant_ensure(). */
#define STORE_DEFAULT_MAX_CELLS     32u
#define STORE_DEFAULT_MAX_MEMORY    (16ull << 30)
#define STORE_DEFAULT_MAX_LANES     64u
#define STORE_DEFAULT_MAX_DISK      (64ull << 30)
#define STORE_DEFAULT_MAX_PIDS      8192u   /* the daemon derives its own from the host */

/* Bearer tokens: "cell_<12 hex id>_<32 hex secret>", 50 chars + NUL. */
#define STORE_TOKEN_ID_HEX          12
#define STORE_TOKEN_SECRET_HEX      32
#define STORE_BEARER_SIZE           51

/* Audit records longer than this (serialized) are refused with EMSGSIZE. */
#define STORE_AUDIT_MAX_LINE        (64u << 10)

typedef struct store store;

/* Open (creating) STATE_DIR/cell.db and STATE_DIR/audit.log, both 0600;
 * creates state_dir (0700) if missing and migrates the schema.  A database
 * with a newer schema than this build knows fails with EPROTO. */
int  store_open(store **out, const char *state_dir, cell_error *err);
void store_close(store *s); /* NULL-safe */
/* Sync the cell records committed without waiting for the disk (insert,
 * state) if there are any; the daemon calls it once a second, so a power
 * loss takes at most the last second of creates.  0, or -1 with errno
 * (they are tried again at the next call).  Thread-safe, lock-free. */
int  store_flush(store *s);

/* ---- tenants ---------------------------------------------------------- */
typedef struct store_tenant {
    char     name[64];
    uint32_t max_cells;
    uint64_t max_memory;  /* bytes */
    uint32_t max_lanes;
    uint64_t max_disk;    /* bytes, sum of lane sizes */
    int64_t  created;
    uint32_t max_pids;    /* sum of the tenant's cells' pid limits */
} store_tenant;

/* Create `name` with the default quotas unless it exists.  EINVAL unless
 * util_valid_name(name). */
int store_tenant_ensure(store *s, const char *name, cell_error *err);
int store_tenant_get(store *s, const char *name, store_tenant *out, cell_error *err);
/* The quotas tenants created from now on get (d->name and d->created are
 * ignored); STORE_DEFAULT_* until called.  The daemon derives them from the
 * host so that one tenant's defaults fit in what the host has. */
void store_tenant_defaults(store *s, const store_tenant *d);
/* Set t->name's quotas from *t, creating the tenant if missing (t->created
 * is ignored). */
int store_tenant_set_quota(store *s, const store_tenant *t, cell_error *err);
/* *out is a malloc()ed array (free()), sorted by name; NULL when *n == 0. */
int store_tenant_list(store *s, store_tenant **out, size_t *n, cell_error *err);

/* ---- tokens ----------------------------------------------------------- */
typedef struct store_token {
    char     id[16];      /* 12 lowercase hex chars */
    char     tenant[64];
    char     label[64];
    int      admin;
    uint32_t rate;        /* requests/second, 0 = unlimited */
    int64_t  created;
    int      revoked;
} store_token;

/* Make a token for `tenant` (created with default quotas if missing).  The
 * bearer ("cell_ID_SECRET") is written to bearer_out (>= STORE_BEARER_SIZE,
 * else ERANGE) and exists nowhere else: only SHA-256 of SECRET's 32 hex
 * chars is stored.  label: 0..63 bytes, NULL = "".  info_out may be NULL. */
int store_token_create(store *s, const char *tenant, const char *label, int admin, uint32_t rate,
                       store_token *info_out, char *bearer_out, size_t bearer_size, cell_error *err);
/* Authenticate a bearer.  Malformed, unknown, wrong secret or revoked all
 * fail alike: -1, EACCES, one message.  Other codes are database errors. */
int store_token_check(store *s, const char *bearer, store_token *out, cell_error *err);
/* Every token, revoked ones included, oldest first; *out is malloc()ed. */
int store_token_list(store *s, store_token **out, size_t *n, cell_error *err);
/* ENOENT if unknown or already revoked: one revoke of a token succeeds. */
int store_token_revoke(store *s, const char *id, cell_error *err);
/* Number of tokens NOT revoked (so the daemon can tell "no usable token"). */
int store_token_count(store *s, size_t *n, cell_error *err);

/* ---- cells ------------------------------------------------------------ */
typedef struct store_cell {
    char    id[40];
    char    tenant[64];
    char    state[16];    /* "running" | "stopped" */
    char   *spec;         /* JSON text, malloc'ed */
    int64_t created;
    int64_t updated;
} store_cell;

/* Insert c (the tenant is ensured).  c->created / c->updated are kept when
 * non-zero, else set to now (updated defaults to created).  EEXIST if the id
 * is taken.  Ids, like tenants, follow util_valid_name() and fit id[].
 * Committed when it returns (a daemon crash keeps it); on disk after the
 * next store_flush() or synced write (docs/architecture.md). */
int  store_cell_insert(store *s, store_cell *c, cell_error *err);
/* tenant NULL = any.  ENOENT if missing or another tenant's.  Free out's
 * contents with store_cell_free(). */
int  store_cell_get(store *s, const char *tenant, const char *id, store_cell *out, cell_error *err);
/* tenant NULL = all; oldest first; free with store_cell_list_free(). */
int  store_cell_list(store *s, const char *tenant, store_cell **out, size_t *n, cell_error *err);
/* The next three update `updated`; ENOENT if the id is unknown.  They do not
 * check the tenant: the caller has done store_cell_get() with it. */
int  store_cell_set_state(store *s, const char *id, const char *state, cell_error *err);   /* as insert */
int  store_cell_set_spec(store *s, const char *id, const char *spec, cell_error *err);
int  store_cell_delete(store *s, const char *id, cell_error *err);
/* Frees what *c owns (spec) and sets it to NULL; not c itself.  NULL-safe. */
void store_cell_free(store_cell *c);
void store_cell_list_free(store_cell *arr, size_t n);
/* tenant NULL = all; counts cells in every state. */
int  store_cell_count(store *s, const char *tenant, size_t *n, cell_error *err);
/* Daemon start: every "running" row becomes "stopped"; *n (may be NULL)
 * receives how many did. */
int  store_cells_mark_stopped(store *s, size_t *n, cell_error *err);

/* ---- lanes ------------------------------------------------------------ */
typedef struct store_lane {
    char     id[40];      /* runtime lane name, e.g. "l-<16 hex>" */
    char     tenant[64];
    char     name[64];    /* unique within the tenant */
    char     image[64];
    uint64_t size;        /* bytes, <= INT64_MAX (ERANGE otherwise) */
    char     state[16];   /* "creating" | "ready" | "deleting" */
    int64_t  created;
} store_lane;

/* Insert l (the tenant is ensured); l->created is kept when non-zero, else
 * set to now.  id, name and image follow util_valid_name().  EEXIST if the
 * tenant already has a lane of that name, or the id is taken. */
int store_lane_insert(store *s, store_lane *l, cell_error *err);
int store_lane_get(store *s, const char *tenant, const char *name, store_lane *out, cell_error *err);
/* tenant NULL = any; ENOENT if missing or another tenant's. */
int store_lane_get_by_id(store *s, const char *tenant, const char *id, store_lane *out, cell_error *err);
/* tenant NULL = all; oldest first; *out is malloc()ed (free()). */
int store_lane_list(store *s, const char *tenant, store_lane **out, size_t *n, cell_error *err);
int store_lane_set_state(store *s, const char *id, const char *state, cell_error *err);
/* Compare and set: the state becomes `to` only if it is `from`, so that of
 * concurrent callers (two DELETEs of one lane) exactly one moves it; ENOENT
 * for the others, as for a lane that is gone. */
int store_lane_transition(store *s, const char *id, const char *from, const char *to, cell_error *err);
int store_lane_delete(store *s, const char *id, cell_error *err);
/* tenant NULL = all.  n and total_size may be NULL; total_size saturates. */
int store_lane_count(store *s, const char *tenant, size_t *n, uint64_t *total_size, cell_error *err);
/* Lanes left "creating" or "deleting" (a crash mid-operation), oldest first. */
int store_lanes_unfinished(store *s, store_lane **out, size_t *n, cell_error *err);

/* ---- secrets ------------------------------------------------------------
 * Credentials the daemon injects on the host side (a cell never sees the
 * value).  Sealed with AES-256-GCM under a key kept outside the database
 * (a random nonce per value, "tenant\0name" as associated data, so a row
 * moved to another tenant or name does not open); without the key loaded,
 * put and get fail (EACCES). */
#define STORE_SECRET_MAX_VALUE      (64u << 10)
#define STORE_SECRETS_KEY_SIZE      32

/* Load the sealing key from `path` (exactly 32 bytes, a regular file of the
 * daemon's user with no group/other access), creating it (0600, getrandom)
 * when missing and the database has never held a sealed secret.  Fails
 * closed: ENOKEY when the file is missing but sealed secrets exist,
 * EKEYREJECTED when it is not the key they were sealed with, EPERM/EINVAL
 * for a bad mode or size.  Then seals rows stored in plain text by older
 * versions and empties the WAL; *sealed_now (may be NULL) says how many. */
int store_secrets_key(store *s, const char *path, size_t *sealed_now, cell_error *err);

typedef struct store_secret_info {
    char    name[64];
    int64_t created;      /* of the current value: a put that replaces resets it */
} store_secret_info;

/* Create or replace tenant's secret `name` (util_valid_name(); the tenant is
 * ensured); a replacement gets a new created time.  len is
 * 1..STORE_SECRET_MAX_VALUE bytes, else EINVAL / E2BIG. */
int store_secret_put(store *s, const char *tenant, const char *name, const void *value, size_t len,
                     cell_error *err);
/* *value: malloc()ed copy plus a NUL (not counted in *len); the caller
 * should OPENSSL_cleanse() it before free().  ENOENT if missing or another
 * tenant's; EBADMSG if the row does not open (moved, tampered, unsealed). */
int store_secret_get(store *s, const char *tenant, const char *name, char **value, size_t *len, cell_error *err);
/* Names and created times only, sorted by name; *out malloc()ed (free()),
 * NULL when *n == 0. */
int store_secret_list(store *s, const char *tenant, store_secret_info **out, size_t *n, cell_error *err);
/* ENOENT if missing or another tenant's. */
int store_secret_delete(store *s, const char *tenant, const char *name, cell_error *err);

/* ---- runs (/v1/runs) ---------------------------------------------------- */
typedef struct store_run {
    char    id[40];
    char    tenant[64];
    char    token[16];    /* the token that asked (audit) */
    char    agent[16];
    char    status[16];   /* srv_runs_status_name() */
    char   *spec;         /* JSON text, malloc'ed */
    char   *result;       /* JSON text or NULL (not finished; store_run_list never reads it) */
    char   *timings;      /* JSON text or NULL */
    char    cell[40];     /* "" before the run's cell exists */
    int64_t created, started, finished;   /* 0 = not yet */
} store_run;

/* Insert (the tenant is ensured); EEXIST if the id is taken.  Synced. */
int  store_run_insert(store *s, const store_run *r, cell_error *err);
/* Status, result, timings, cell, started, finished of r->id; ENOENT if unknown. */
int  store_run_update(store *s, const store_run *r, cell_error *err);
int  store_run_get(store *s, const char *id, store_run *out, cell_error *err);
/* Every run, oldest first, without results; free with store_run_list_free(). */
int  store_run_list(store *s, store_run **out, size_t *n, cell_error *err);
int  store_run_delete(store *s, const char *id, cell_error *err);
/* Daemon start: every run not finished becomes "failed" with `result`. */
int  store_runs_mark_failed(store *s, const char *result, size_t *n, cell_error *err);
void store_run_free(store_run *r);
void store_run_list_free(store_run *arr, size_t n);

/* ---- audit (audit.c) -------------------------------------------------- */
/* Append one JSON line.  record must be an object with a "tenant" string;
 * "ts" (RFC 3339 UTC, ms) and "ts_ms" (integer) are added when absent, to a
 * copy: the caller's object is not modified and keeps its reference.
 * Returns 0, or -1 with errno (EINVAL, EMSGSIZE, or write()'s). */
int store_audit_append(store *s, json_t *record);
/* Rotation: past max_size bytes (0 = never) audit.log becomes audit.log.1,
 * .1 becomes .2 and so on; keep (1..STORE_AUDIT_MAX_KEEP) files are kept
 * besides audit.log, the oldest is dropped. */
#define STORE_AUDIT_DEFAULT_MAX_SIZE (64ull << 20)
#define STORE_AUDIT_DEFAULT_KEEP     4u
#define STORE_AUDIT_MAX_KEEP         64u
void store_audit_set_rotation(store *s, uint64_t max_size, unsigned keep);
/* Records the per-cell limiter dropped and appends that failed, since start. */
void store_audit_drops(store *s, uint64_t *limited, uint64_t *failed);
/* A read returns at most this many records (and at most 8 MiB of them). */
#define STORE_AUDIT_MAX_RECORDS      10000u
typedef struct store_audit_query {
    const char *tenant, *kind, *cell;   /* NULL = any */
    const char *decision;               /* a record's "verdict" or "decision" is this; NULL = any */
    int64_t     since_ms;
    uint64_t    before_seq;             /* only records with "seq" below (0 = newest) */
    size_t      limit;                  /* 0 = STORE_AUDIT_MAX_RECORDS */
} store_audit_query;
/* The newest matching records across audit.log and its rotated files,
 * oldest first, as a new array.  Every record carries a "seq" that grows by
 * one per record written; *next (if not NULL) gets the seq to pass as
 * before_seq for the next older page, 0 when there is none. */
int store_audit_find(store *s, const store_audit_query *q, json_t **out_array, uint64_t *next, cell_error *err);
/* The newest `limit` records (0 = STORE_AUDIT_MAX_RECORDS) of `tenant` (NULL = all) with
 * ts_ms >= since_ms, oldest first, as a new array in *out_array.  Lines that
 * do not parse, or lack "tenant"/"ts_ms", are skipped.  The file is read
 * backwards and reading stops at a record more than 5 minutes older than
 * since_ms (records are appended in time order, give or take a clock step). */
int store_audit_read(store *s, const char *tenant, int64_t since_ms, size_t limit, json_t **out_array,
                     cell_error *err);

/* ---- module-internal: how store.c owns audit.c's state ---------------- */
typedef struct store_audit store_audit;
int  store_audit_init(store_audit **out, const char *state_dir, cell_error *err);
void store_audit_fini(store_audit *a);
store_audit *store_audit_of(store *s);

#endif
