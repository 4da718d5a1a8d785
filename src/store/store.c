/* store.c: the daemon's metadata (tenants, tokens, cells, lanes, secrets) in SQLite,
 * one connection shared by every thread behind the store's mutex. */
#include "store/store.h"

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
/* SHA-256 of tokens and of the secrets key: nettle's (GnuTLS's, already in
 * the daemon through libmicrohttpd) runs the digest without OpenSSL 3's
 * provider machinery, whose first EVP fetch maps ~1.8 MiB of libcrypto and
 * allocates ~120 KiB that the daemon would keep for good. */
#include <nettle/sha2.h>

#include "util/util.h"

struct store {
    sqlite3        *db;
    /* SQLITE_OPEN_FULLMUTEX only makes single calls safe: a statement's
     * steps, a transaction, sqlite3_changes() and sqlite3_errmsg() must
     * not interleave with another thread's, so every operation holds this. */
    pthread_mutex_t lock;
    int             last_rc;   /* extended code of the last failure, under lock */
    store_audit    *audit;
    store_tenant    defaults;  /* quotas of new tenants */
    unsigned char   skey[STORE_SECRETS_KEY_SIZE]; /* seals secrets; has_skey */
    int             has_skey;
    int             sync_full; /* the connection's synchronous is FULL (else NORMAL) */
    int             wal_fd;    /* the WAL file, for store_flush; -1: every commit syncs */
    atomic_int      unsynced;  /* a NORMAL commit since the last store_flush */
    struct stmt_slot *stmts;   /* prepared statements by SQL text (db_prepare) */
    size_t          n_stmts, cap_stmts;
};

/* One prepared statement per SQL text, kept for the store's life: the
 * daemon runs the same few dozen statements on every request, and parsing
 * and planning one cost more than running it. */
struct stmt_slot {
    char         *sql;
    sqlite3_stmt *st;
};

#define TENANT_COLS "name, max_cells, max_memory, max_lanes, max_disk, created, max_pids"
#define TOKEN_COLS  "id, tenant, label, admin, rate, created, revoked"
#define CELL_COLS   "id, tenant, state, spec, created, updated"
#define LANE_COLS   "id, tenant, name, image, size, state, created"
#define SECRET_COLS "name, created"
#define RUN_COLS    "id, tenant, token, agent, status, spec, result, timings, cell, created, started, finished"

/* Schema migrations: entry i takes user_version i to i + 1.  A later change
 * appends an entry and bumps STORE_SCHEMA_VERSION; entries never change. */
static const char *const migrations[STORE_SCHEMA_VERSION] = {
    /* Quotas and sizes are uint64 in C and stored as their int64 bit pattern
     * (SQLite integers are signed), so UINT64_MAX round-trips. */
    "CREATE TABLE tenants ("
    "  name       TEXT PRIMARY KEY NOT NULL,"
    "  max_cells  INTEGER NOT NULL,"
    "  max_memory INTEGER NOT NULL,"
    "  max_lanes  INTEGER NOT NULL,"
    "  max_disk   INTEGER NOT NULL,"
    "  created    INTEGER NOT NULL);"
    "CREATE TABLE tokens ("
    "  id      TEXT PRIMARY KEY NOT NULL,"
    "  tenant  TEXT NOT NULL REFERENCES tenants(name),"
    "  label   TEXT NOT NULL,"
    "  hash    BLOB NOT NULL CHECK (length(hash) = 32),"
    "  admin   INTEGER NOT NULL,"
    "  rate    INTEGER NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX tokens_tenant ON tokens(tenant);"
    "CREATE TABLE cells ("
    "  id      TEXT PRIMARY KEY NOT NULL,"
    "  tenant  TEXT NOT NULL REFERENCES tenants(name),"
    "  state   TEXT NOT NULL CHECK (state IN ('running', 'stopped')),"
    "  spec    TEXT NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  updated INTEGER NOT NULL);"
    "CREATE INDEX cells_tenant ON cells(tenant);"
    "CREATE TABLE lanes ("
    "  id      TEXT PRIMARY KEY NOT NULL,"
    "  tenant  TEXT NOT NULL REFERENCES tenants(name),"
    "  name    TEXT NOT NULL,"
    "  image   TEXT NOT NULL,"
    "  size    INTEGER NOT NULL CHECK (size >= 0),"
    "  state   TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'deleting')),"
    "  created INTEGER NOT NULL,"
    "  UNIQUE (tenant, name));",
    /* 2: secrets for host-side credential injection.  The CHECK mirrors
     * STORE_SECRET_MAX_VALUE so another writer cannot store more. */
    "CREATE TABLE secrets ("
    "  tenant  TEXT NOT NULL REFERENCES tenants(name),"
    "  name    TEXT NOT NULL,"
    "  value   BLOB NOT NULL CHECK (length(value) BETWEEN 1 AND 65536),"
    "  created INTEGER NOT NULL,"
    "  UNIQUE (tenant, name));",
    /* 3: a tenant pid quota (rows from before get the old per-cell default
     * times 8, the daemon's host budget bounds the sum anyway), and sealed
     * secrets: `value` is nonce | AES-256-GCM ciphertext | tag when sealed = 1
     * (28 bytes more than the value), plain when 0 (rows from version 2,
     * sealed at the next start); `secrets_key` holds a digest of the key
     * that sealed them, so a wrong key file is told apart from a bad row. */
    "ALTER TABLE tenants ADD COLUMN max_pids INTEGER NOT NULL DEFAULT 32768;"
    "CREATE TABLE secrets_v3 ("
    "  tenant  TEXT NOT NULL REFERENCES tenants(name),"
    "  name    TEXT NOT NULL,"
    "  value   BLOB NOT NULL CHECK (length(value) BETWEEN 1 AND 65564),"
    "  sealed  INTEGER NOT NULL DEFAULT 0 CHECK (sealed IN (0, 1)),"
    "  created INTEGER NOT NULL,"
    "  UNIQUE (tenant, name));"
    "INSERT INTO secrets_v3 (tenant, name, value, sealed, created) SELECT tenant, name, value, 0, created FROM secrets;"
    "DROP TABLE secrets;"
    "ALTER TABLE secrets_v3 RENAME TO secrets;"
    "CREATE TABLE secrets_key ("
    "  id     INTEGER PRIMARY KEY CHECK (id = 1),"
    "  digest BLOB NOT NULL CHECK (length(digest) = 32));",
    /* 4: runs (/v1/runs): the validated request, the result once finished
     * and the run's timings and cell, as JSON texts. */
    "CREATE TABLE runs ("
    "  id       TEXT PRIMARY KEY NOT NULL,"
    "  tenant   TEXT NOT NULL REFERENCES tenants(name),"
    "  token    TEXT NOT NULL,"
    "  agent    TEXT NOT NULL,"
    "  status   TEXT NOT NULL,"
    "  spec     TEXT NOT NULL,"
    "  result   TEXT,"
    "  timings  TEXT,"
    "  cell     TEXT NOT NULL DEFAULT '',"
    "  created  INTEGER NOT NULL,"
    "  started  INTEGER NOT NULL DEFAULT 0,"
    "  finished INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX runs_tenant ON runs(tenant, created);",
};

/* ---- plumbing ------------------------------------------------------------ */

static pthread_mutex_t *lock_store(store *s)
{
    pthread_mutex_lock(&s->lock);
    return &s->lock;
}
static void unlockp(pthread_mutex_t **m)
{
    if (*m)
        pthread_mutex_unlock(*m);
}
#define _cleanup_unlock_ __attribute__((cleanup(unlockp)))
/* The guard is only read by its cleanup, which clang's -Wunused-variable does
 * not count as a use: mark it unused rather than silence the warning. */
#define LOCKED(s) _cleanup_unlock_ __attribute__((unused)) pthread_mutex_t *lock_guard_ = lock_store(s)

/* Statements come from the cache (db_prepare) and go back to it: reset,
 * which also ends the read it may hold (it would block a checkpoint), and
 * unbound, so it keeps no pointer into the caller's memory. */
static void releasep(sqlite3_stmt **st)
{
    if (!*st)
        return;
    sqlite3_reset(*st);
    sqlite3_clear_bindings(*st);
    *st = NULL;
}
#define _cleanup_stmt_ __attribute__((cleanup(releasep)))

static int rc_errno(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:   return EBUSY;
    case SQLITE_FULL:     return ENOSPC;
    case SQLITE_READONLY: return EROFS;
    case SQLITE_NOMEM:    return ENOMEM;
    case SQLITE_TOOBIG:   return E2BIG;
    case SQLITE_PERM:     return EPERM;
    case SQLITE_CONSTRAINT:
        return rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY ? EEXIST : EINVAL;
    default:              return EIO;
    }
}

static int db_fail(store *s, int rc, cell_error *err, const char *what)
{
    s->last_rc = rc;
    return util_fail(err, rc_errno(rc), "%s: %s", what, sqlite3_errmsg(s->db));
}

/* Bind by a format: 't' text (NULL binds NULL), 'i' int64_t, 'b' 32-byte blob,
 * 'B' blob of any length (two arguments: const void *, size_t). */
static int bind_va(sqlite3_stmt *st, const char *fmt, va_list ap)
{
    if ((size_t)sqlite3_bind_parameter_count(st) != strlen(fmt))
        return SQLITE_RANGE; /* a programming error: fail loudly in tests */
    for (int i = 0; fmt[i]; i++) {
        int rc;
        switch (fmt[i]) {
        case 't': rc = sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_STATIC); break;
        case 'i': rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t)); break;
        case 'b': rc = sqlite3_bind_blob(st, i + 1, va_arg(ap, const void *), 32, SQLITE_STATIC); break;
        case 'B': {
            const void *p = va_arg(ap, const void *);
            rc = sqlite3_bind_blob64(st, i + 1, p, (sqlite3_uint64)va_arg(ap, size_t), SQLITE_STATIC);
            break;
        }
        default:  rc = SQLITE_MISUSE; break;
        }
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* The cached statement for `sql`, prepared on first use.  The caller holds
 * the lock and releases it (_cleanup_stmt_) before it prepares the same
 * SQL again: one statement per text serves one caller at a time. */
static int db_prepare(store *s, const char *sql, sqlite3_stmt **st)
{
    for (size_t i = 0; i < s->n_stmts; i++)
        if (strcmp(s->stmts[i].sql, sql) == 0) {
            *st = s->stmts[i].st;
            return SQLITE_OK;
        }
    if (s->n_stmts == s->cap_stmts) {
        size_t cap = s->cap_stmts ? 2 * s->cap_stmts : 32;
        struct stmt_slot *grown = realloc(s->stmts, cap * sizeof *grown);
        if (!grown)
            return SQLITE_NOMEM;
        s->stmts = grown;
        s->cap_stmts = cap;
    }
    char *copy = strdup(sql);
    if (!copy)
        return SQLITE_NOMEM;
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    if (rc != SQLITE_OK) {
        free(copy);
        return rc;
    }
    s->stmts[s->n_stmts++] = (struct stmt_slot){ .sql = copy, .st = *st };
    return SQLITE_OK;
}

static void stmts_free(store *s)
{
    for (size_t i = 0; i < s->n_stmts; i++) {
        sqlite3_finalize(s->stmts[i].st);
        free(s->stmts[i].sql);
    }
    free(s->stmts);
    s->stmts = NULL;
    s->n_stmts = s->cap_stmts = 0;
}

static int db_exec(store *s, cell_error *err, const char *what, const char *sql)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_fail(s, rc, err, what);
}

/* Whether a commit syncs the WAL before it returns.  FULL is the default
 * for every write; store_cell_set_state asks NORMAL for its own commit
 * (see there), and the next write outside a transaction or the next
 * db_begin switches back first, failing rather than writing unsynced.
 * SQLite only changes it outside a transaction. */
static int db_sync(store *s, int full, cell_error *err)
{
    if (s->sync_full == full)
        return 0;
    if (db_exec(s, err, "set synchronous", full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL") < 0)
        return -1;
    s->sync_full = full;
    return 0;
}

/* Prepare and bind; the caller steps.  Caller holds the lock. */
static int db_query(store *s, sqlite3_stmt **st, cell_error *err, const char *what, const char *sql,
                    const char *fmt, ...)
{
    int rc = db_prepare(s, sql, st);
    if (rc != SQLITE_OK)
        return db_fail(s, rc, err, what);
    va_list ap;
    va_start(ap, fmt);
    rc = bind_va(*st, fmt, ap);
    va_end(ap);
    if (rc != SQLITE_OK) {
        releasep(st);
        return db_fail(s, rc, err, what);
    }
    return 0;
}

/* Run one statement that returns no rows; returns the rows it changed or
 * -1.  Caller holds the lock.  Outside a transaction its commit syncs. */
static int db_run(store *s, cell_error *err, const char *what, const char *sql, const char *fmt, ...)
{
    if (sqlite3_get_autocommit(s->db) && db_sync(s, 1, err) < 0)
        return -1;
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc = db_prepare(s, sql, &st);
    if (rc != SQLITE_OK)
        return db_fail(s, rc, err, what);
    va_list ap;
    va_start(ap, fmt);
    rc = bind_va(st, fmt, ap);
    va_end(ap);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return db_fail(s, rc, err, what);
    return sqlite3_changes(s->db);
}

/* IMMEDIATE takes the write lock up front: a deferred transaction that
 * upgrades later fails with SQLITE_BUSY without waiting out busy_timeout
 * when the CLI writes at the same time. */
static int db_begin(store *s, cell_error *err)
{
    if (db_sync(s, 1, err) < 0)
        return -1;
    return db_exec(s, err, "begin transaction", "BEGIN IMMEDIATE");
}
/* A transaction whose commit store_flush() syncs later (the cell records
 * of store_cell_insert and store_cell_set_state); synced at once when the
 * store has no WAL descriptor to flush. */
static int db_begin_relaxed(store *s, cell_error *err)
{
    if (db_sync(s, s->wal_fd < 0, err) < 0)
        return -1;
    return db_exec(s, err, "begin transaction", "BEGIN IMMEDIATE");
}
static int db_commit(store *s, cell_error *err)
{
    if (db_exec(s, err, "commit", "COMMIT") < 0) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}
static int db_rollback(store *s)
{
    int saved = errno;
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    errno = saved;
    return -1;
}

/* One-row, one-integer query, e.g. count(*). */
static int db_int(store *s, cell_error *err, const char *what, int64_t *out, const char *sql, const char *fmt,
                  const char *arg)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, what, sql, fmt, arg) < 0)
        return -1;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return db_fail(s, rc == SQLITE_DONE ? SQLITE_ERROR : rc, err, what);
    *out = sqlite3_column_int64(st, 0);
    return 0;
}

static void col_text(sqlite3_stmt *st, int i, char *dst, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(dst, size, "%s", t ? (const char *)t : "");
}

/* Milliseconds, like the audit log's ts_ms and the API's *AtMs fields. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Copyable into a char[size] field, i.e. a name that never truncates. */
static int check_name(const char *v, size_t size, const char *what, cell_error *err)
{
    if (!v || !util_valid_name(v) || strlen(v) >= size)
        return util_fail(err, EINVAL, "invalid %s name '%s'", what, v ? v : "(null)");
    return 0;
}

static int check_state(const char *state, const char *const *allowed, const char *what, cell_error *err)
{
    for (; state && *allowed; allowed++)
        if (strcmp(state, *allowed) == 0)
            return 0;
    return util_fail(err, EINVAL, "invalid %s state '%s'", what, state ? state : "(null)");
}
static const char *const cell_states[] = { "running", "stopped", NULL };
static const char *const lane_states[] = { "creating", "ready", "deleting", NULL };

/* Step through a SELECT and gather rows into a malloc()ed array.  On failure
 * releases what it gathered (with free_row, if the rows own memory). */
typedef int (*row_reader)(sqlite3_stmt *st, void *row);
static int collect(store *s, sqlite3_stmt *st, size_t elem, row_reader read, void (*free_row)(void *),
                   void **out, size_t *n, cell_error *err, const char *what)
{
    char *arr = NULL;
    size_t len = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char *p = realloc(arr, ncap * elem);
            if (!p)
                goto nomem;
            arr = p;
            cap = ncap;
        }
        memset(arr + len * elem, 0, elem);
        if (read(st, arr + len * elem) < 0)
            goto nomem;
        len++;
    }
    if (rc != SQLITE_DONE) {
        db_fail(s, rc, err, what);
        goto fail;
    }
    *out = len ? arr : NULL;
    if (!len)
        free(arr);
    *n = len;
    return 0;
nomem:
    util_fail(err, ENOMEM, "%s: out of memory", what);
fail:
    for (size_t i = 0; free_row && i < len; i++)
        free_row(arr + i * elem);
    free(arr);
    return -1;
}

/* ---- open / close -------------------------------------------------------- */

static int journal_cb(void *arg, int ncol, char **vals, char **names)
{
    (void)names;
    if (ncol > 0 && vals[0])
        snprintf(arg, 16, "%s", vals[0]);
    return 0;
}

static int migrate(store *s, cell_error *err)
{
    int64_t version;
    if (db_int(s, err, "read schema version", &version, "PRAGMA user_version", "", NULL) < 0)
        return -1;
    if (version == STORE_SCHEMA_VERSION)
        return 0;
    /* Re-read inside the write lock: the CLI may be migrating too. */
    if (db_begin(s, err) < 0)
        return -1;
    if (db_int(s, err, "read schema version", &version, "PRAGMA user_version", "", NULL) < 0)
        return db_rollback(s);
    if (version < 0 || version > STORE_SCHEMA_VERSION) {
        db_rollback(s);
        return util_fail(err, EPROTO, "database schema version %lld is newer than this cell's (%d)",
                         (long long)version, STORE_SCHEMA_VERSION);
    }
    for (; version < STORE_SCHEMA_VERSION; version++) {
        char what[64], pragma[64];
        snprintf(what, sizeof what, "migrate schema to version %lld", (long long)version + 1);
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %lld", (long long)version + 1);
        if (db_exec(s, err, what, migrations[version]) < 0 || db_exec(s, err, what, pragma) < 0)
            return db_rollback(s);
    }
    return db_commit(s, err);
}

/* Create the database file ourselves so it is 0600 whatever the umask;
 * SQLite gives the -wal and -shm files the database file's mode. */
static int create_db_file(const char *path, cell_error *err)
{
    _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return util_fail_errno(err, "open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return util_fail_errno(err, "stat %s", path);
    if (!S_ISREG(st.st_mode))
        return util_fail(err, EINVAL, "%s is not a regular file", path);
    if ((st.st_mode & 077) && fchmod(fd, 0600) < 0)
        return util_fail_errno(err, "chmod %s", path);
    return 0;
}

int store_open(store **out, const char *state_dir, cell_error *err)
{
    if (!out || !state_dir || !*state_dir)
        return util_fail(err, EINVAL, "store_open: no state directory");
    if (!sqlite3_threadsafe())
        return util_fail(err, ENOTSUP, "the SQLite library was built without thread support");
    if (util_mkdir_p(state_dir, 0700, err) < 0)
        return -1;
    char path[4096];
    if (util_path(path, sizeof path, err, "%s/cell.db", state_dir) < 0 || create_db_file(path, err) < 0)
        return -1;

    store *s = calloc(1, sizeof *s);
    if (!s)
        return util_fail(err, ENOMEM, "store_open: out of memory");
    s->wal_fd = -1;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        return util_fail(err, ENOMEM, "store_open: cannot create mutex");
    }
    s->defaults = (store_tenant){ .max_cells = STORE_DEFAULT_MAX_CELLS, .max_memory = STORE_DEFAULT_MAX_MEMORY,
                                  .max_lanes = STORE_DEFAULT_MAX_LANES, .max_disk = STORE_DEFAULT_MAX_DISK,
                                  .max_pids = STORE_DEFAULT_MAX_PIDS };
    int rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW |
                                 SQLITE_OPEN_EXRESCODE,
                             NULL);
    if (rc != SQLITE_OK) {
        util_fail(err, rc_errno(rc), "open %s: %s", path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);

    char mode[16] = "";
    rc = sqlite3_exec(s->db, "PRAGMA journal_mode = WAL", journal_cb, mode, NULL);
    if (rc != SQLITE_OK) {
        db_fail(s, rc, err, "set journal_mode=WAL");
        goto fail;
    }
    if (strcmp(mode, "wal") != 0) {
        util_fail(err, ENOTSUP, "%s: the file system does not support SQLite's WAL mode (got '%s')", path, mode);
        goto fail;
    }
    /* FULL syncs the WAL at every commit: metadata must survive power loss
     * (docs/architecture.md, "The store after a crash"); db_sync. */
    if (db_exec(s, err, "set synchronous=FULL", "PRAGMA synchronous = FULL") < 0 ||
        db_exec(s, err, "enable foreign keys", "PRAGMA foreign_keys = ON") < 0 ||
        /* Zero freed pages, so a deleted or replaced secret does not linger in the file. */
        db_exec(s, err, "enable secure_delete", "PRAGMA secure_delete = ON") < 0 || migrate(s, err) < 0)
        goto fail;
    s->sync_full = 1;
    /* The WAL exists once migrate() has read the database.  Without it
     * every commit syncs (db_begin_relaxed). */
    char wal[4096 + 8];
    snprintf(wal, sizeof wal, "%s-wal", path);
    s->wal_fd = open(wal, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (store_audit_init(&s->audit, state_dir, err) < 0)
        goto fail;
    *out = s;
    return 0;
fail:
    store_close(s);
    return -1;
}

void store_close(store *s)
{
    if (!s)
        return;
    store_audit_fini(s->audit);
    OPENSSL_cleanse(s->skey, sizeof s->skey);
    store_flush(s);
    if (s->wal_fd >= 0)
        close(s->wal_fd);
    stmts_free(s);
    sqlite3_close_v2(s->db); /* NULL is a no-op */
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* fdatasync() of the WAL is what a synchronous=FULL commit would have
 * done: it makes every commit written so far durable, ours and SQLite's
 * alike (a checkpoint never reuses WAL space before it has synced it).
 * Not under the store's lock: requests go on while the disk works. */
int store_flush(store *s)
{
    if (!s || s->wal_fd < 0 || !atomic_exchange(&s->unsynced, 0))
        return 0;
    if (fdatasync(s->wal_fd) == 0)
        return 0;
    int saved = errno;
    atomic_store(&s->unsynced, 1);       /* try again next time */
    errno = saved;
    return -1;
}

store_audit *store_audit_of(store *s)
{
    return s->audit;
}

/* ---- tenants ------------------------------------------------------------- */

static int ensure_tenant_locked(store *s, const char *name, cell_error *err)
{
    const store_tenant *d = &s->defaults;
    return db_run(s, err, "create tenant",
                  "INSERT INTO tenants (" TENANT_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO NOTHING",
                  "tiiiiii", name, (int64_t)d->max_cells, (int64_t)d->max_memory, (int64_t)d->max_lanes,
                  (int64_t)d->max_disk, now_ms(), (int64_t)d->max_pids) < 0
               ? -1
               : 0;
}

int store_tenant_ensure(store *s, const char *name, cell_error *err)
{
    if (check_name(name, sizeof ((store_tenant *)0)->name, "tenant", err) < 0)
        return -1;
    LOCKED(s);
    return ensure_tenant_locked(s, name, err);
}

static int read_tenant(sqlite3_stmt *st, void *row)
{
    store_tenant *t = row;
    col_text(st, 0, t->name, sizeof t->name);
    t->max_cells = (uint32_t)sqlite3_column_int64(st, 1);
    t->max_memory = (uint64_t)sqlite3_column_int64(st, 2);
    t->max_lanes = (uint32_t)sqlite3_column_int64(st, 3);
    t->max_disk = (uint64_t)sqlite3_column_int64(st, 4);
    t->created = sqlite3_column_int64(st, 5);
    t->max_pids = (uint32_t)sqlite3_column_int64(st, 6);
    return 0;
}

/* Fetch at most one row into *out with `read`; ENOENT (message `missing`) if none. */
static int fetch_one(store *s, sqlite3_stmt *st, row_reader read, void *out, cell_error *err, const char *what,
                     const char *missing)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return util_fail(err, ENOENT, "%s", missing);
    if (rc != SQLITE_ROW)
        return db_fail(s, rc, err, what);
    if (read(st, out) < 0)
        return util_fail(err, ENOMEM, "%s: out of memory", what);
    return 0;
}

void store_tenant_defaults(store *s, const store_tenant *d)
{
    LOCKED(s);
    s->defaults = *d;
    snprintf(s->defaults.name, sizeof s->defaults.name, "%s", "");
}

int store_tenant_get(store *s, const char *name, store_tenant *out, cell_error *err)
{
    if (!name || !out)
        return util_fail(err, EINVAL, "store_tenant_get: missing argument");
    char missing[128];
    snprintf(missing, sizeof missing, "no tenant '%.63s'", name);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "read tenant", "SELECT " TENANT_COLS " FROM tenants WHERE name = ?", "t", name) < 0)
        return -1;
    return fetch_one(s, st, read_tenant, out, err, "read tenant", missing);
}

int store_tenant_set_quota(store *s, const store_tenant *t, cell_error *err)
{
    if (!t || check_name(t->name, sizeof t->name, "tenant", err) < 0)
        return t ? -1 : util_fail(err, EINVAL, "store_tenant_set_quota: no tenant");
    LOCKED(s);
    return db_run(s, err, "set tenant quota",
                  "INSERT INTO tenants (" TENANT_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                  "max_cells = excluded.max_cells, max_memory = excluded.max_memory, "
                  "max_lanes = excluded.max_lanes, max_disk = excluded.max_disk, max_pids = excluded.max_pids",
                  "tiiiiii", t->name, (int64_t)t->max_cells, (int64_t)t->max_memory, (int64_t)t->max_lanes,
                  (int64_t)t->max_disk, now_ms(), (int64_t)t->max_pids) < 0
               ? -1
               : 0;
}

int store_tenant_list(store *s, store_tenant **out, size_t *n, cell_error *err)
{
    if (!out || !n)
        return util_fail(err, EINVAL, "store_tenant_list: missing argument");
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "list tenants", "SELECT " TENANT_COLS " FROM tenants ORDER BY name", "") < 0)
        return -1;
    return collect(s, st, sizeof **out, read_tenant, NULL, (void **)out, n, err, "list tenants");
}

/* ---- tokens -------------------------------------------------------------- */

static void hex_encode(char *dst, const unsigned char *src, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = digits[src[i] >> 4];
        dst[2 * i + 1] = digits[src[i] & 15];
    }
    dst[2 * n] = '\0';
}

static int is_lower_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

/* The hash covers the secret's hex text, as it appears in the bearer.  No
 * salt or slow hash: the secret is 128 random bits, not a password. */
static int hash_secret(const char *secret, unsigned char md[32])
{
    struct sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, STORE_TOKEN_SECRET_HEX, (const uint8_t *)secret);
    sha256_digest(&c, SHA256_DIGEST_SIZE, md);
    return 0;
}

static int read_token(sqlite3_stmt *st, void *row)
{
    store_token *t = row;
    col_text(st, 0, t->id, sizeof t->id);
    col_text(st, 1, t->tenant, sizeof t->tenant);
    col_text(st, 2, t->label, sizeof t->label);
    t->admin = sqlite3_column_int64(st, 3) != 0;
    t->rate = (uint32_t)sqlite3_column_int64(st, 4);
    t->created = sqlite3_column_int64(st, 5);
    t->revoked = sqlite3_column_int64(st, 6) != 0;
    return 0;
}

int store_token_create(store *s, const char *tenant, const char *label, int admin, uint32_t rate,
                       store_token *info_out, char *bearer_out, size_t bearer_size, cell_error *err)
{
    if (check_name(tenant, sizeof info_out->tenant, "tenant", err) < 0)
        return -1;
    if (!label)
        label = "";
    if (strlen(label) >= sizeof info_out->label)
        return util_fail(err, EINVAL, "token label longer than %zu bytes", sizeof info_out->label - 1);
    if (!bearer_out || bearer_size < STORE_BEARER_SIZE)
        return util_fail(err, ERANGE, "token buffer smaller than %d bytes", STORE_BEARER_SIZE);

    unsigned char raw[STORE_TOKEN_ID_HEX / 2 + STORE_TOKEN_SECRET_HEX / 2], md[32];
    char id[STORE_TOKEN_ID_HEX + 1], secret[STORE_TOKEN_SECRET_HEX + 1];
    int64_t created = now_ms();
    int rc = -1;
    LOCKED(s);
    if (db_begin(s, err) < 0)
        return -1;
    if (ensure_tenant_locked(s, tenant, err) < 0)
        goto out;
    /* A 48-bit id can collide (it never should in practice): draw again. */
    for (int attempt = 0;; attempt++) {
        /* The kernel's CSPRNG: RAND_bytes() would set up OpenSSL's DRBG. */
        if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
            util_fail(err, EIO, "getrandom failed: no randomness for a token");
            goto out;
        }
        hex_encode(id, raw, STORE_TOKEN_ID_HEX / 2);
        hex_encode(secret, raw + STORE_TOKEN_ID_HEX / 2, STORE_TOKEN_SECRET_HEX / 2);
        if (hash_secret(secret, md) < 0) {
            util_fail(err, EIO, "SHA-256 failed");
            goto out;
        }
        if (db_run(s, err, "create token", "INSERT INTO tokens (" TOKEN_COLS ", hash) VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                   "tttiiib", id, tenant, label, (int64_t)(admin != 0), (int64_t)rate, created, md) >= 0)
            break;
        if (s->last_rc != SQLITE_CONSTRAINT_PRIMARYKEY || attempt == 3)
            goto out;
    }
    if (db_commit(s, err) < 0)
        goto cleanse;
    snprintf(bearer_out, bearer_size, "cell_%s_%s", id, secret);
    if (info_out) {
        memset(info_out, 0, sizeof *info_out);
        snprintf(info_out->id, sizeof info_out->id, "%s", id);
        snprintf(info_out->tenant, sizeof info_out->tenant, "%s", tenant);
        snprintf(info_out->label, sizeof info_out->label, "%s", label);
        info_out->admin = admin != 0;
        info_out->rate = rate;
        info_out->created = created;
    }
    rc = 0;
    goto cleanse;
out:
    db_rollback(s);
cleanse:
    OPENSSL_cleanse(raw, sizeof raw);
    OPENSSL_cleanse(secret, sizeof secret);
    return rc;
}

int store_token_check(store *s, const char *bearer, store_token *out, cell_error *err)
{
    /* One message for every way a bearer can be wrong, so a caller learns
     * nothing about which ids exist or which tokens were revoked. */
    static const char denied[] = "invalid or revoked token";
    enum { ID_AT = 5, SECRET_AT = ID_AT + STORE_TOKEN_ID_HEX + 1, LEN = SECRET_AT + STORE_TOKEN_SECRET_HEX };
    if (!bearer || strnlen(bearer, LEN + 1) != LEN || memcmp(bearer, "cell_", ID_AT) != 0 ||
        bearer[SECRET_AT - 1] != '_' || !is_lower_hex(bearer + ID_AT, STORE_TOKEN_ID_HEX) ||
        !is_lower_hex(bearer + SECRET_AT, STORE_TOKEN_SECRET_HEX))
        return util_fail(err, EACCES, "%s", denied);
    char id[STORE_TOKEN_ID_HEX + 1];
    memcpy(id, bearer + ID_AT, STORE_TOKEN_ID_HEX);
    id[STORE_TOKEN_ID_HEX] = '\0';
    unsigned char md[32], stored[32] = { 0 };
    if (hash_secret(bearer + SECRET_AT, md) < 0)
        return util_fail(err, EIO, "SHA-256 failed");

    store_token tok = { 0 };
    int found = 0;
    {
        LOCKED(s);
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (db_query(s, &st, err, "check token", "SELECT " TOKEN_COLS ", hash FROM tokens WHERE id = ?", "t", id) < 0)
            return -1;
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            read_token(st, &tok);
            if (sqlite3_column_bytes(st, 7) == 32) {
                memcpy(stored, sqlite3_column_blob(st, 7), 32);
                found = 1;
            }
        } else if (rc != SQLITE_DONE) {
            return db_fail(s, rc, err, "check token");
        }
    }
    /* Compare even for an unknown id, so the time taken does not say
     * whether the id exists. */
    int differs = CRYPTO_memcmp(md, stored, sizeof md) != 0;
    OPENSSL_cleanse(md, sizeof md);
    if (!found || differs || tok.revoked)
        return util_fail(err, EACCES, "%s", denied);
    if (out)
        *out = tok;
    return 0;
}

int store_token_list(store *s, store_token **out, size_t *n, cell_error *err)
{
    if (!out || !n)
        return util_fail(err, EINVAL, "store_token_list: missing argument");
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "list tokens", "SELECT " TOKEN_COLS " FROM tokens ORDER BY created, rowid", "") < 0)
        return -1;
    return collect(s, st, sizeof **out, read_token, NULL, (void **)out, n, err, "list tokens");
}

int store_token_revoke(store *s, const char *id, cell_error *err)
{
    if (!id)
        return util_fail(err, EINVAL, "store_token_revoke: no id");
    LOCKED(s);
    /* Only a live token changes: of two revokes (concurrent or not) one
     * succeeds and the other finds nothing, so one is answered and audited. */
    int n = db_run(s, err, "revoke token", "UPDATE tokens SET revoked = 1 WHERE id = ? AND revoked = 0", "t", id);
    if (n == 0)
        return util_fail(err, ENOENT, "no token '%.32s' that is not revoked", id);
    return n < 0 ? -1 : 0;
}

int store_token_count(store *s, size_t *n, cell_error *err)
{
    int64_t v;
    LOCKED(s);
    if (db_int(s, err, "count tokens", &v, "SELECT count(*) FROM tokens WHERE revoked = 0", "", NULL) < 0)
        return -1;
    if (n)
        *n = (size_t)v;
    return 0;
}

/* ---- cells --------------------------------------------------------------- */

static int read_cell(sqlite3_stmt *st, void *row)
{
    store_cell *c = row;
    col_text(st, 0, c->id, sizeof c->id);
    col_text(st, 1, c->tenant, sizeof c->tenant);
    col_text(st, 2, c->state, sizeof c->state);
    const unsigned char *spec = sqlite3_column_text(st, 3);
    c->spec = strdup(spec ? (const char *)spec : "");
    c->created = sqlite3_column_int64(st, 4);
    c->updated = sqlite3_column_int64(st, 5);
    return c->spec ? 0 : -1;
}

void store_cell_free(store_cell *c)
{
    if (c) {
        free(c->spec);
        c->spec = NULL;
    }
}

static void free_cell_row(void *row)
{
    store_cell_free(row);
}

void store_cell_list_free(store_cell *arr, size_t n)
{
    for (size_t i = 0; arr && i < n; i++)
        store_cell_free(&arr[i]);
    free(arr);
}

int store_cell_insert(store *s, store_cell *c, cell_error *err)
{
    if (!c)
        return util_fail(err, EINVAL, "store_cell_insert: no cell");
    if (check_name(c->id, sizeof c->id, "cell", err) < 0 || check_name(c->tenant, sizeof c->tenant, "tenant", err) < 0 ||
        check_state(c->state, cell_states, "cell", err) < 0)
        return -1;
    if (!c->spec)
        return util_fail(err, EINVAL, "cell %s has no spec", c->id);
    /* The caller's stamps are kept (it may show them before the insert). */
    int64_t now = now_ms();
    int64_t created = c->created ? c->created : now, updated = c->updated ? c->updated : created;
    LOCKED(s);
    if (db_begin_relaxed(s, err) < 0)
        return -1;
    if (ensure_tenant_locked(s, c->tenant, err) < 0)
        return db_rollback(s);
    if (db_run(s, err, "insert cell", "INSERT INTO cells (" CELL_COLS ") VALUES (?, ?, ?, ?, ?, ?)", "ttttii", c->id,
               c->tenant, c->state, c->spec, created, updated) < 0) {
        db_rollback(s);
        if (s->last_rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return util_fail(err, EEXIST, "cell %s already exists", c->id);
        return -1;
    }
    if (db_commit(s, err) < 0)
        return -1;
    atomic_store(&s->unsynced, 1);
    c->created = created;
    c->updated = updated;
    return 0;
}

int store_cell_get(store *s, const char *tenant, const char *id, store_cell *out, cell_error *err)
{
    if (!id || !out)
        return util_fail(err, EINVAL, "store_cell_get: missing argument");
    char missing[96];
    snprintf(missing, sizeof missing, "no cell '%.39s'", id);
    memset(out, 0, sizeof *out);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "read cell", "SELECT " CELL_COLS " FROM cells WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)",
                 "tt", id, tenant) < 0)
        return -1;
    return fetch_one(s, st, read_cell, out, err, "read cell", missing);
}

int store_cell_list(store *s, const char *tenant, store_cell **out, size_t *n, cell_error *err)
{
    if (!out || !n)
        return util_fail(err, EINVAL, "store_cell_list: missing argument");
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "list cells",
                 "SELECT " CELL_COLS " FROM cells WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created, rowid", "t",
                 tenant) < 0)
        return -1;
    return collect(s, st, sizeof **out, read_cell, free_cell_row, (void **)out, n, err, "list cells");
}

/* Turn "0 rows changed" into ENOENT for updates and deletes by id. */
static int changed_one(int changed, const char *what, const char *id, cell_error *err)
{
    if (changed == 0)
        return util_fail(err, ENOENT, "no %s '%.39s'", what, id);
    return changed < 0 ? -1 : 0;
}

/* The state is the one record written on every boot and halt, and the
 * one no crash can make wrong: cell-init dies with its daemon, and
 * srv_registry_load marks every cell stopped at the next start.  So its commit
 * does not wait for the disk (synchronous=NORMAL: in the WAL, which a
 * process crash keeps, synced by store_flush or the next FULL commit). */
int store_cell_set_state(store *s, const char *id, const char *state, cell_error *err)
{
    if (!id || check_state(state, cell_states, "cell", err) < 0)
        return id ? -1 : util_fail(err, EINVAL, "store_cell_set_state: no id");
    LOCKED(s);
    if (db_sync(s, 0, err) < 0)
        return -1;
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "set cell state", "UPDATE cells SET state = ?, updated = ? WHERE id = ?", "tit", state,
                 now_ms(), id) < 0)
        return -1;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, rc, err, "set cell state");
    atomic_store(&s->unsynced, 1);
    return changed_one(sqlite3_changes(s->db), "cell", id, err);
}

int store_cell_set_spec(store *s, const char *id, const char *spec, cell_error *err)
{
    if (!id || !spec)
        return util_fail(err, EINVAL, "store_cell_set_spec: missing argument");
    LOCKED(s);
    return changed_one(db_run(s, err, "set cell spec", "UPDATE cells SET spec = ?, updated = ? WHERE id = ?", "tit",
                              spec, now_ms(), id),
                       "cell", id, err);
}

int store_cell_delete(store *s, const char *id, cell_error *err)
{
    if (!id)
        return util_fail(err, EINVAL, "store_cell_delete: no id");
    LOCKED(s);
    return changed_one(db_run(s, err, "delete cell", "DELETE FROM cells WHERE id = ?", "t", id), "cell", id, err);
}

int store_cell_count(store *s, const char *tenant, size_t *n, cell_error *err)
{
    int64_t v;
    LOCKED(s);
    if (db_int(s, err, "count cells", &v, "SELECT count(*) FROM cells WHERE ?1 IS NULL OR tenant = ?1", "t",
               tenant) < 0)
        return -1;
    if (n)
        *n = (size_t)v;
    return 0;
}

int store_cells_mark_stopped(store *s, size_t *n, cell_error *err)
{
    LOCKED(s);
    int changed = db_run(s, err, "mark cells stopped",
                         "UPDATE cells SET state = 'stopped', updated = ? WHERE state = 'running'", "i", now_ms());
    if (changed < 0)
        return -1;
    if (n)
        *n = (size_t)changed;
    return 0;
}

/* ---- lanes --------------------------------------------------------------- */

static int read_lane(sqlite3_stmt *st, void *row)
{
    store_lane *l = row;
    col_text(st, 0, l->id, sizeof l->id);
    col_text(st, 1, l->tenant, sizeof l->tenant);
    col_text(st, 2, l->name, sizeof l->name);
    col_text(st, 3, l->image, sizeof l->image);
    l->size = (uint64_t)sqlite3_column_int64(st, 4);
    col_text(st, 5, l->state, sizeof l->state);
    l->created = sqlite3_column_int64(st, 6);
    return 0;
}

int store_lane_insert(store *s, store_lane *l, cell_error *err)
{
    if (!l)
        return util_fail(err, EINVAL, "store_lane_insert: no lane");
    if (check_name(l->id, sizeof l->id, "lane id", err) < 0 || check_name(l->tenant, sizeof l->tenant, "tenant", err) < 0 ||
        check_name(l->name, sizeof l->name, "lane", err) < 0 || check_name(l->image, sizeof l->image, "image", err) < 0 ||
        check_state(l->state, lane_states, "lane", err) < 0)
        return -1;
    if (l->size > (uint64_t)INT64_MAX)
        return util_fail(err, ERANGE, "lane %s: size %llu is too large", l->name, (unsigned long long)l->size);
    int64_t now = l->created ? l->created : now_ms();
    LOCKED(s);
    if (db_begin(s, err) < 0)
        return -1;
    if (ensure_tenant_locked(s, l->tenant, err) < 0)
        return db_rollback(s);
    if (db_run(s, err, "insert lane", "INSERT INTO lanes (" LANE_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?)", "ttttiti", l->id,
               l->tenant, l->name, l->image, (int64_t)l->size, l->state, now) < 0) {
        db_rollback(s);
        if (s->last_rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return util_fail(err, EEXIST, "lane id %s already exists", l->id);
        if (s->last_rc == SQLITE_CONSTRAINT_UNIQUE)
            return util_fail(err, EEXIST, "tenant %s already has a lane named %s", l->tenant, l->name);
        return -1;
    }
    if (db_commit(s, err) < 0)
        return -1;
    l->created = now;
    return 0;
}

int store_lane_get(store *s, const char *tenant, const char *name, store_lane *out, cell_error *err)
{
    if (!tenant || !name || !out)
        return util_fail(err, EINVAL, "store_lane_get: missing argument");
    char missing[96];
    snprintf(missing, sizeof missing, "no lane '%.63s'", name);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "read lane", "SELECT " LANE_COLS " FROM lanes WHERE tenant = ? AND name = ?", "tt", tenant,
                 name) < 0)
        return -1;
    return fetch_one(s, st, read_lane, out, err, "read lane", missing);
}

int store_lane_get_by_id(store *s, const char *tenant, const char *id, store_lane *out, cell_error *err)
{
    if (!id || !out)
        return util_fail(err, EINVAL, "store_lane_get_by_id: missing argument");
    char missing[96];
    snprintf(missing, sizeof missing, "no lane with id '%.39s'", id);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "read lane", "SELECT " LANE_COLS " FROM lanes WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)",
                 "tt", id, tenant) < 0)
        return -1;
    return fetch_one(s, st, read_lane, out, err, "read lane", missing);
}

int store_lane_list(store *s, const char *tenant, store_lane **out, size_t *n, cell_error *err)
{
    if (!out || !n)
        return util_fail(err, EINVAL, "store_lane_list: missing argument");
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "list lanes",
                 "SELECT " LANE_COLS " FROM lanes WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created, rowid", "t",
                 tenant) < 0)
        return -1;
    return collect(s, st, sizeof **out, read_lane, NULL, (void **)out, n, err, "list lanes");
}

int store_lane_set_state(store *s, const char *id, const char *state, cell_error *err)
{
    if (!id || check_state(state, lane_states, "lane", err) < 0)
        return id ? -1 : util_fail(err, EINVAL, "store_lane_set_state: no id");
    LOCKED(s);
    return changed_one(db_run(s, err, "set lane state", "UPDATE lanes SET state = ? WHERE id = ?", "tt", state, id),
                       "lane", id, err);
}

int store_lane_transition(store *s, const char *id, const char *from, const char *to, cell_error *err)
{
    if (!id || check_state(from, lane_states, "lane", err) < 0 || check_state(to, lane_states, "lane", err) < 0)
        return id ? -1 : util_fail(err, EINVAL, "store_lane_transition: no id");
    LOCKED(s);
    int n = db_run(s, err, "set lane state", "UPDATE lanes SET state = ? WHERE id = ? AND state = ?", "ttt", to, id,
                   from);
    if (n == 0)
        return util_fail(err, ENOENT, "no %s lane '%.39s'", from, id);
    return n < 0 ? -1 : 0;
}

int store_lane_delete(store *s, const char *id, cell_error *err)
{
    if (!id)
        return util_fail(err, EINVAL, "store_lane_delete: no id");
    LOCKED(s);
    return changed_one(db_run(s, err, "delete lane", "DELETE FROM lanes WHERE id = ?", "t", id), "lane", id, err);
}

int store_lane_count(store *s, const char *tenant, size_t *n, uint64_t *total_size, cell_error *err)
{
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    /* Summed here rather than with SUM(), which fails on int64 overflow. */
    if (db_query(s, &st, err, "count lanes", "SELECT size FROM lanes WHERE ?1 IS NULL OR tenant = ?1", "t", tenant) < 0)
        return -1;
    size_t count = 0;
    uint64_t total = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t size = (uint64_t)sqlite3_column_int64(st, 0);
        total = total > UINT64_MAX - size ? UINT64_MAX : total + size;
        count++;
    }
    if (rc != SQLITE_DONE)
        return db_fail(s, rc, err, "count lanes");
    if (n)
        *n = count;
    if (total_size)
        *total_size = total;
    return 0;
}

int store_lanes_unfinished(store *s, store_lane **out, size_t *n, cell_error *err)
{
    if (!out || !n)
        return util_fail(err, EINVAL, "store_lanes_unfinished: missing argument");
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "list unfinished lanes",
                 "SELECT " LANE_COLS " FROM lanes WHERE state IN ('creating', 'deleting') ORDER BY created, rowid",
                 "") < 0)
        return -1;
    return collect(s, st, sizeof **out, read_lane, NULL, (void **)out, n, err, "list unfinished lanes");
}

/* ---- secrets: the key and sealing ------------------------------------------
 * A sealed value is nonce (12) | AES-256-GCM ciphertext | tag (16), with
 * "tenant\0name" as associated data: a row copied to another tenant or name
 * does not open. */
#define SEAL_NONCE    12
#define SEAL_TAG      16
#define SEAL_OVERHEAD (SEAL_NONCE + SEAL_TAG)

/* SHA-256("cell secrets key v1" | key): recorded so that a wrong key file is
 * reported as such; the key itself never enters the database. */
static int key_digest(const unsigned char *key, unsigned char out[32])
{
    static const char label[] = "cell secrets key v1";
    unsigned char buf[sizeof label - 1 + STORE_SECRETS_KEY_SIZE];
    memcpy(buf, label, sizeof label - 1);
    memcpy(buf + sizeof label - 1, key, STORE_SECRETS_KEY_SIZE);
    struct sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, sizeof buf, buf);
    sha256_digest(&c, SHA256_DIGEST_SIZE, out);
    OPENSSL_cleanse(buf, sizeof buf);
    OPENSSL_cleanse(&c, sizeof c);
    return 0;
}

/* A GCM context keyed, with its nonce and the row's associated data fed. */
static EVP_CIPHER_CTX *gcm_begin(const store *s, int enc, const unsigned char *nonce, const char *tenant,
                                 const char *name)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int outl;
    if (c && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, s->skey, nonce, enc) == 1 &&
        EVP_CipherUpdate(c, NULL, &outl, (const unsigned char *)tenant, (int)strlen(tenant) + 1) == 1 &&
        EVP_CipherUpdate(c, NULL, &outl, (const unsigned char *)name, (int)strlen(name)) == 1)
        return c;
    EVP_CIPHER_CTX_free(c);
    return NULL;
}

/* out: len + SEAL_OVERHEAD bytes. */
static int seal(const store *s, const char *tenant, const char *name, const void *in, size_t len, unsigned char *out)
{
    if (RAND_bytes(out, SEAL_NONCE) != 1)
        return -1;
    EVP_CIPHER_CTX *c = gcm_begin(s, 1, out, tenant, name);
    int n1 = 0, n2 = 0;
    int ok = c && EVP_CipherUpdate(c, out + SEAL_NONCE, &n1, in, (int)len) == 1 &&
             EVP_CipherFinal_ex(c, out + SEAL_NONCE + n1, &n2) == 1 && (size_t)(n1 + n2) == len &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, SEAL_TAG, out + SEAL_NONCE + len) == 1;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

/* out: n - SEAL_OVERHEAD bytes; -1 unless the tag verifies. */
static int unseal(const store *s, const char *tenant, const char *name, const unsigned char *in, size_t n,
                  unsigned char *out)
{
    if (n <= SEAL_OVERHEAD)
        return -1;
    size_t len = n - SEAL_OVERHEAD;
    EVP_CIPHER_CTX *c = gcm_begin(s, 0, in, tenant, name);
    int n1 = 0, n2 = 0;
    int ok = c && EVP_CipherUpdate(c, out, &n1, in + SEAL_NONCE, (int)len) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, SEAL_TAG, (void *)(in + SEAL_NONCE + len)) == 1 &&
             EVP_CipherFinal_ex(c, out + n1, &n2) == 1 && (size_t)(n1 + n2) == len;
    EVP_CIPHER_CTX_free(c);
    if (!ok)
        OPENSSL_cleanse(out, len);
    return ok ? 0 : -1;
}

/* Read a 32-byte key file that only its owner can read. */
static int read_key_file(const char *path, unsigned char *key, cell_error *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return util_fail_errno(err, "secrets key %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return util_fail_errno(err, "secrets key %s", path);
    if (!S_ISREG(st.st_mode))
        return util_fail(err, EINVAL, "secrets key %s is not a regular file", path);
    if (st.st_mode & 077)
        return util_fail(err, EPERM, "secrets key %s is readable by others (mode %03o): chmod 600 it",
                         path, (unsigned)(st.st_mode & 0777));
    if (st.st_uid != geteuid())
        return util_fail(err, EPERM, "secrets key %s is not owned by the daemon's user", path);
    if (st.st_size != STORE_SECRETS_KEY_SIZE)
        return util_fail(err, EINVAL, "secrets key %s must hold exactly %d bytes, not %lld", path,
                         STORE_SECRETS_KEY_SIZE, (long long)st.st_size);
    ssize_t n = read(fd, key, STORE_SECRETS_KEY_SIZE);
    if (n != STORE_SECRETS_KEY_SIZE)
        return n < 0 ? util_fail_errno(err, "read secrets key %s", path)
                     : util_fail(err, EIO, "read secrets key %s: short read", path);
    return 0;
}

/* A new key from getrandom(), written to a new 0600 file (never over one). */
static int create_key_file(const char *path, unsigned char *key, cell_error *err)
{
    for (size_t got = 0; got < STORE_SECRETS_KEY_SIZE;) {
        ssize_t n = getrandom(key + got, STORE_SECRETS_KEY_SIZE - got, 0);
        if (n < 0 && errno != EINTR)
            return util_fail_errno(err, "getrandom");
        got += n > 0 ? (size_t)n : 0;
    }
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return util_fail_errno(err, "create secrets key %s", path);
    if (write(fd, key, STORE_SECRETS_KEY_SIZE) != STORE_SECRETS_KEY_SIZE || fsync(fd) < 0) {
        util_fail_errno(err, "write secrets key %s", path);
        unlink(path);
        return -1;
    }
    return 0;
}

/* Seal every row older versions stored in plain text.  Caller holds the
 * lock and has a key. */
static int seal_plain_rows(store *s, size_t *count, cell_error *err)
{
    typedef struct plain_row { char tenant[64], name[64]; } plain_row;
    *count = 0;
    if (db_begin(s, err) < 0)
        return -1;
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "read plain secrets", "SELECT tenant, name, value FROM secrets WHERE sealed = 0", "") < 0)
        return db_rollback(s);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        plain_row row;
        col_text(st, 0, row.tenant, sizeof row.tenant);
        col_text(st, 1, row.name, sizeof row.name);
        size_t len = (size_t)sqlite3_column_bytes(st, 2);
        const void *value = sqlite3_column_blob(st, 2);
        unsigned char *sealed = malloc(len + SEAL_OVERHEAD);
        if (!sealed || !value || seal(s, row.tenant, row.name, value, len, sealed) < 0) {
            free(sealed);
            util_fail(err, EIO, "seal secret %s of tenant %s", row.name, row.tenant);
            return db_rollback(s);
        }
        /* Updating the row a SELECT stands on is fine in SQLite (same
         * connection, the row is not moved: its key is unchanged). */
        int ch = db_run(s, err, "seal secret", "UPDATE secrets SET value = ?, sealed = 1 WHERE tenant = ? AND name = ?",
                        "Btt", sealed, len + SEAL_OVERHEAD, row.tenant, row.name);
        free(sealed);
        if (ch < 0)
            return db_rollback(s);
        (*count)++;
    }
    if (rc != SQLITE_DONE) {
        db_fail(s, rc, err, "read plain secrets");
        return db_rollback(s);
    }
    return db_commit(s, err);
}

int store_secrets_key(store *s, const char *path, size_t *sealed_now, cell_error *err)
{
    cell_error local = { 0 };
    if (!err)
        err = &local;            /* the ENOENT test below reads err->code */
    if (!path || !*path)
        return util_fail(err, EINVAL, "store_secrets_key: no path");
    LOCKED(s);
    int64_t n_sealed = 0, has_digest = 0;
    if (db_int(s, err, "count sealed secrets", &n_sealed, "SELECT count(*) FROM secrets WHERE sealed = 1", "", NULL) < 0 ||
        db_int(s, err, "read key digest", &has_digest, "SELECT count(*) FROM secrets_key", "", NULL) < 0)
        return -1;
    unsigned char key[STORE_SECRETS_KEY_SIZE], digest[32];
    int rc = read_key_file(path, key, err);
    if (rc < 0 && err && err->code == ENOENT) {
        /* Fail closed: a new key would make the sealed rows unreadable. */
        if (n_sealed || has_digest)
            return util_fail(err, ENOKEY, "secrets key %s is missing, but cell.db holds %lld sealed secrets: "
                             "restore the key file (or point --secrets-key-file at it)", path, (long long)n_sealed);
        rc = create_key_file(path, key, err);
    }
    if (rc < 0 || key_digest(key, digest) < 0) {
        OPENSSL_cleanse(key, sizeof key);
        return rc < 0 ? -1 : util_fail(err, EIO, "secrets key: SHA-256 failed");
    }
    memcpy(s->skey, key, sizeof key);
    OPENSSL_cleanse(key, sizeof key);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "read key digest", "SELECT digest FROM secrets_key WHERE id = 1", "") < 0)
        return -1;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && (sqlite3_column_bytes(st, 0) != 32 || CRYPTO_memcmp(sqlite3_column_blob(st, 0), digest, 32))) {
        OPENSSL_cleanse(s->skey, sizeof s->skey);
        return util_fail(err, EKEYREJECTED, "secrets key %s is not the key cell.db's secrets were sealed with "
                         "(wrong key file?)", path);
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_fail(s, rc, err, "read key digest");
    releasep(&st);               /* an open statement would block the checkpoint below */
    if (rc == SQLITE_DONE &&
        db_run(s, err, "record key digest", "INSERT INTO secrets_key (id, digest) VALUES (1, ?)", "b", digest) < 0)
        return -1;
    s->has_skey = 1;
    size_t count = 0;
    if (seal_plain_rows(s, &count, err) < 0)
        return -1;
    /* Plain values of rows just sealed are still in WAL frames: copy the
     * WAL into the (secure_delete) database and empty it. */
    if (count && sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL) != SQLITE_OK)
        return db_fail(s, sqlite3_errcode(s->db), err, "checkpoint the WAL after sealing secrets");
    if (sealed_now)
        *sealed_now = count;
    return 0;
}

/* ---- secrets ------------------------------------------------------------- */

static int read_secret_info(sqlite3_stmt *st, void *row)
{
    store_secret_info *i = row;
    col_text(st, 0, i->name, sizeof i->name);
    i->created = sqlite3_column_int64(st, 1);
    return 0;
}

int store_secret_put(store *s, const char *tenant, const char *name, const void *value, size_t len,
                     cell_error *err)
{
    if (check_name(tenant, sizeof ((store_tenant *)0)->name, "tenant", err) < 0 ||
        check_name(name, sizeof ((store_secret_info *)0)->name, "secret", err) < 0)
        return -1;
    /* Messages name the secret, never the value: they reach the audit log. */
    if (!value || len == 0)
        return util_fail(err, EINVAL, "secret %s: the value is empty", name);
    if (len > STORE_SECRET_MAX_VALUE)
        return util_fail(err, E2BIG, "secret %s: the value is larger than %u bytes", name, STORE_SECRET_MAX_VALUE);
    LOCKED(s);
    if (!s->has_skey)
        return util_fail(err, EACCES, "secret %s: no secrets key is loaded, so it cannot be stored sealed", name);
    _cleanup_free_ unsigned char *sealed = malloc(len + SEAL_OVERHEAD);
    if (!sealed)
        return util_fail(err, ENOMEM, "secret %s: out of memory", name);
    if (seal(s, tenant, name, value, len, sealed) < 0)
        return util_fail(err, EIO, "secret %s: sealing failed", name);
    if (db_begin(s, err) < 0)
        return -1;
    if (ensure_tenant_locked(s, tenant, err) < 0 ||
        db_run(s, err, "store secret",
               "INSERT INTO secrets (tenant, name, value, sealed, created) VALUES (?, ?, ?, 1, ?) "
               "ON CONFLICT(tenant, name) DO UPDATE SET value = excluded.value, sealed = 1, created = excluded.created",
               "ttBi", tenant, name, sealed, len + SEAL_OVERHEAD, now_ms()) < 0)
        return db_rollback(s);
    return db_commit(s, err);
}

int store_secret_get(store *s, const char *tenant, const char *name, char **value, size_t *len, cell_error *err)
{
    if (!tenant || !name || !value || !len)
        return util_fail(err, EINVAL, "store_secret_get: missing argument");
    *value = NULL;
    *len = 0;
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "read secret", "SELECT value, sealed FROM secrets WHERE tenant = ? AND name = ?", "tt",
                 tenant, name) < 0)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return util_fail(err, ENOENT, "no secret '%.63s'", name);
    if (rc != SQLITE_ROW)
        return db_fail(s, rc, err, "read secret");
    /* Fail closed: only a sealed row that opens with this tenant and name. */
    if (!s->has_skey)
        return util_fail(err, EACCES, "secret %.63s: no secrets key is loaded", name);
    const void *blob = sqlite3_column_blob(st, 0);
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    if (sqlite3_column_int(st, 1) != 1 || !blob || n <= SEAL_OVERHEAD)
        return util_fail(err, EBADMSG, "secret %.63s is not sealed; restart the daemon to seal it", name);
    char *copy = malloc(n - SEAL_OVERHEAD + 1);
    if (!copy)
        return util_fail(err, ENOMEM, "read secret: out of memory");
    if (unseal(s, tenant, name, blob, n, (unsigned char *)copy) < 0) {
        free(copy);
        return util_fail(err, EBADMSG, "secret %.63s cannot be unsealed: it was not sealed for this tenant and name "
                         "with this key", name);
    }
    copy[n - SEAL_OVERHEAD] = '\0';
    *value = copy;
    *len = n - SEAL_OVERHEAD;
    return 0;
}

int store_secret_list(store *s, const char *tenant, store_secret_info **out, size_t *n, cell_error *err)
{
    if (!tenant || !out || !n)
        return util_fail(err, EINVAL, "store_secret_list: missing argument");
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "list secrets", "SELECT " SECRET_COLS " FROM secrets WHERE tenant = ? ORDER BY name", "t",
                 tenant) < 0)
        return -1;
    return collect(s, st, sizeof **out, read_secret_info, NULL, (void **)out, n, err, "list secrets");
}

int store_secret_delete(store *s, const char *tenant, const char *name, cell_error *err)
{
    if (!tenant || !name)
        return util_fail(err, EINVAL, "store_secret_delete: missing argument");
    LOCKED(s);
    int changed = db_run(s, err, "delete secret", "DELETE FROM secrets WHERE tenant = ? AND name = ?", "tt", tenant, name);
    if (changed == 0)
        return util_fail(err, ENOENT, "no secret '%.63s'", name);
    return changed < 0 ? -1 : 0;
}

/* ---- runs ---------------------------------------------------------------- */

static int read_run(sqlite3_stmt *st, void *row)
{
    store_run *r = row;
    col_text(st, 0, r->id, sizeof r->id);
    col_text(st, 1, r->tenant, sizeof r->tenant);
    col_text(st, 2, r->token, sizeof r->token);
    col_text(st, 3, r->agent, sizeof r->agent);
    col_text(st, 4, r->status, sizeof r->status);
    const unsigned char *spec = sqlite3_column_text(st, 5), *result = sqlite3_column_text(st, 6),
                        *timings = sqlite3_column_text(st, 7);
    r->spec = strdup(spec ? (const char *)spec : "{}");
    r->result = result ? strdup((const char *)result) : NULL;
    r->timings = timings ? strdup((const char *)timings) : NULL;
    col_text(st, 8, r->cell, sizeof r->cell);
    r->created = sqlite3_column_int64(st, 9);
    r->started = sqlite3_column_int64(st, 10);
    r->finished = sqlite3_column_int64(st, 11);
    return r->spec && (!result || r->result) && (!timings || r->timings) ? 0 : -1;
}

void store_run_free(store_run *r)
{
    if (!r)
        return;
    free(r->spec);
    free(r->result);
    free(r->timings);
    r->spec = r->result = r->timings = NULL;
}

static void free_run_row(void *row)
{
    store_run_free(row);
}

void store_run_list_free(store_run *arr, size_t n)
{
    for (size_t i = 0; arr && i < n; i++)
        store_run_free(&arr[i]);
    free(arr);
}

int store_run_insert(store *s, const store_run *r, cell_error *err)
{
    if (!r || !r->spec)
        return util_fail(err, EINVAL, "store_run_insert: missing argument");
    if (check_name(r->id, sizeof r->id, "run", err) < 0 || check_name(r->tenant, sizeof r->tenant, "tenant", err) < 0)
        return -1;
    LOCKED(s);
    if (db_begin(s, err) < 0)
        return -1;
    if (ensure_tenant_locked(s, r->tenant, err) < 0)
        return db_rollback(s);
    if (db_run(s, err, "insert run", "INSERT INTO runs (" RUN_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               "ttttttttt" "iii", r->id, r->tenant, r->token, r->agent, r->status, r->spec, r->result, r->timings,
               r->cell, r->created, r->started, r->finished) < 0) {
        db_rollback(s);
        if (s->last_rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return util_fail(err, EEXIST, "run %s already exists", r->id);
        return -1;
    }
    return db_commit(s, err);
}

int store_run_update(store *s, const store_run *r, cell_error *err)
{
    if (!r)
        return util_fail(err, EINVAL, "store_run_update: no run");
    LOCKED(s);
    return changed_one(db_run(s, err, "update run",
                              "UPDATE runs SET status = ?, result = ?, timings = ?, cell = ?, started = ?, "
                              "finished = ? WHERE id = ?",
                              "ttttiit", r->status, r->result, r->timings, r->cell, r->started, r->finished, r->id),
                       "run", r->id, err);
}

int store_run_get(store *s, const char *id, store_run *out, cell_error *err)
{
    if (!id || !out)
        return util_fail(err, EINVAL, "store_run_get: missing argument");
    char missing[96];
    snprintf(missing, sizeof missing, "no run '%.39s'", id);
    memset(out, 0, sizeof *out);
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (db_query(s, &st, err, "read run", "SELECT " RUN_COLS " FROM runs WHERE id = ?", "t", id) < 0)
        return -1;
    return fetch_one(s, st, read_run, out, err, "read run", missing);
}

int store_run_list(store *s, store_run **out, size_t *n, cell_error *err)
{
    if (!out || !n)
        return util_fail(err, EINVAL, "store_run_list: missing argument");
    LOCKED(s);
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    /* Without the results: a listing never needs them (store_run_get does). */
    if (db_query(s, &st, err, "list runs",
                 "SELECT id, tenant, token, agent, status, spec, NULL, timings, cell, created, started, finished "
                 "FROM runs ORDER BY created, rowid", "") < 0)
        return -1;
    return collect(s, st, sizeof **out, read_run, free_run_row, (void **)out, n, err, "list runs");
}

int store_run_delete(store *s, const char *id, cell_error *err)
{
    if (!id)
        return util_fail(err, EINVAL, "store_run_delete: no id");
    LOCKED(s);
    return changed_one(db_run(s, err, "delete run", "DELETE FROM runs WHERE id = ?", "t", id), "run", id, err);
}

int store_runs_mark_failed(store *s, const char *result, size_t *n, cell_error *err)
{
    if (!result)
        return util_fail(err, EINVAL, "store_runs_mark_failed: no result");
    LOCKED(s);
    int changed = db_run(s, err, "mark runs failed",
                         "UPDATE runs SET status = 'failed', result = ?, finished = ? "
                         "WHERE status IN ('queued', 'starting', 'running', 'finishing')",
                         "ti", result, now_ms());
    if (changed < 0)
        return -1;
    if (n)
        *n = (size_t)changed;
    return 0;
}
