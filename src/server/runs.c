/* runs.c: /v1/runs, the API of issue 12's runs (runs.h): validation, the
 * run list, the store, events (STATE/runs/<id>/events.jsonl and SSE),
 * cancel, permission answers, apply, artifacts, uploads, audit.
 *
 * Lifetimes: a run is referenced by the list (until DELETE of a finished
 * run, a prune, or the daemon's end), by its driver thread (until
 * srv_runs_finish) and by each request and stream using it; the last
 * reference frees it.  Locks, in order: runs_lock (the list, refs) ->
 * run.lock (everything that changes in a run).  The store and the audit
 * log are written without either held.
 *
 * Events go to events.jsonl as they come (one JSON object a line, "seq"
 * first), which is what every stream reads: a follower keeps its offset in
 * the file and waits on the run's condition variable for more, so replay
 * after Last-Event-ID and following are one path, and the events of a
 * finished run (also after a restart) are there for as long as the run. */
#include "server/handlers.h"
#include "server/runs.h"
#include "server/slog.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define RUNS_ACTIVE_MAX     8              /* per tenant: 429 too_many_runs beyond */
#define RUNS_KEPT_MAX       256            /* finished runs kept per tenant */
#define RUNS_PROMPT_MAX     (1u << 20)
#define RUNS_ATTACH_MAX     16
#define RUNS_ATTACH_BYTES   (8u << 20)
#define RUNS_TIMEOUT_DEF    1800
#define RUNS_TIMEOUT_MAX    86400
#define RUNS_EVENTS_MAX     (16u << 20)    /* events.jsonl */
#define RUNS_EVENT_MAX      ((256u << 10) - 1) /* one event line: fits a follower's batch */
#define RUNS_HEARTBEAT_MS   15000
#define RUNS_SLICE_MS       250
#define RUNS_BATCH          (256u << 10)   /* SSE bytes formatted at once */
#define RUNS_UPLOAD_TTL_S   3600
#define RUNS_UPLOADS_MAX    8              /* pending per tenant */
#define RUNS_LIST_DEFAULT   100
#define RUNS_LIST_MAX       1000
#define RUNS_DECIDED_MAX    256            /* answered permission ids remembered (409 on a second answer) */
#define RUNS_PATCH_MAX      (64ull << 20)

/* What runs.c keeps beyond runs.h's struct (r->events). */
typedef struct run_priv {
    int       fd;                  /* events.jsonl, append; -1 if it could not be opened */
    uint64_t  file_bytes;
    uint64_t  last_seq;
    uint64_t  dropped;
    int       listed;              /* runs_lock */
    int       driving;             /* the driver thread has not called srv_runs_finish */
    int       applying;            /* an apply is running */
    int       result_stripped;     /* r->result lacks "diff": the store has the whole one */
    int64_t   started_ms, finished_ms;
    char    (*decided)[40];        /* permission ids already answered (ring) */
    size_t    n_decided, next_decided;
    char      resumed_from[RUN_ID_LEN + 1];
} run_priv;

static pthread_mutex_t runs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  runs_cond = PTHREAD_COND_INITIALIZER;   /* a driver ended */
static pthread_mutex_t uploads_lock = PTHREAD_MUTEX_INITIALIZER;
static run *runs_list;             /* newest first */
static int  runs_drivers;          /* runs_lock: driver threads not finished */

static const char *const status_names[] = {
    [RUN_QUEUED] = "queued",       [RUN_STARTING] = "starting", [RUN_RUNNING] = "running",
    [RUN_FINISHING] = "finishing", [RUN_SUCCEEDED] = "succeeded", [RUN_FAILED] = "failed",
    [RUN_CANCELED] = "canceled",   [RUN_TIMED_OUT] = "timed_out",
};

const char *srv_runs_status_name(enum run_status st)
{
    return (unsigned)st <= RUN_TIMED_OUT ? status_names[st] : "failed";
}

static int status_parse(const char *name, enum run_status *out)
{
    for (int i = 0; i <= RUN_TIMED_OUT; i++)
        if (strcmp(name, status_names[i]) == 0) {
            *out = (enum run_status)i;
            return 0;
        }
    return -1;
}

static int terminal(enum run_status st) { return st >= RUN_SUCCEEDED; }

static run_priv *priv(run *r) { return r->events; }

/* ---- the list and references ------------------------------------------------------- */
static void run_free(run *r)
{
    run_priv *p = priv(r);
    if (p) {
        if (p->fd >= 0)
            close(p->fd);
        free(p->decided);
        free(p);
    }
    for (run_perm *pm = r->perms, *next; pm; pm = next) {
        next = pm->next;
        free(pm->decision);
        free(pm);
    }
    json_decref(r->spec);
    json_decref(r->result);
    json_decref(r->timings);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
}

void srv_runs_put(run *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&runs_lock);
    int last = --r->refs == 0;
    pthread_mutex_unlock(&runs_lock);
    if (last)
        run_free(r);
}

static run *run_new(srv *s, const char *id, const char *tenant)
{
    run *r = calloc(1, sizeof *r);
    run_priv *p = calloc(1, sizeof *p);
    if (!r || !p) {
        free(r);
        free(p);
        return NULL;
    }
    r->s = s;
    snprintf(r->id, sizeof r->id, "%s", id);
    snprintf(r->tenant, sizeof r->tenant, "%s", tenant);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    p->fd = -1;
    r->events = p;
    r->refs = 1;
    r->timings = json_object();
    return r;
}

static int valid_id(const char *id)
{
    if (!id || strlen(id) != RUN_ID_LEN)
        return 0;
    for (const char *c = id; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return 0;
    return 1;
}

/* The tenant's run `id` (tenant NULL: any), with a reference. */
static run *runs_lookup(const char *tenant, const char *id)
{
    if (!valid_id(id))
        return NULL;
    pthread_mutex_lock(&runs_lock);
    run *r = runs_list;
    while (r && (strcmp(r->id, id) != 0 || (tenant && strcmp(r->tenant, tenant) != 0)))
        r = r->next;
    if (r)
        r->refs++;
    pthread_mutex_unlock(&runs_lock);
    return r;
}

run *srv_runs_find(srv *s, const char *tenant, const char *id)
{
    (void)s;
    return runs_lookup(tenant, id);
}

static void unlist_locked(run *r)
{
    if (!priv(r)->listed)
        return;
    for (run **pp = &runs_list; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    priv(r)->listed = 0;
    r->refs--;                      /* the list's; the caller holds another */
}

int srv_runs_dir(run *r, char *out, size_t size)
{
    return util_path(out, size, NULL, "%s/runs/%s", r->s->state_dir, r->id) < 0 ? -1 : 0;
}

/* ---- the store ----------------------------------------------------------------------- */
static char *dump(json_t *v)
{
    return v ? json_dumps(v, JSON_COMPACT) : NULL;
}

/* Write the run's changing fields to its row (status, result, timings,
 * cell, times); `result` is the whole result (NULL: as in r).  A failure
 * is said in the log: the run goes on from memory. */
static void persist(run *r, json_t *result)
{
    store_run row = { 0 };
    snprintf(row.id, sizeof row.id, "%s", r->id);
    pthread_mutex_lock(&r->lock);
    snprintf(row.status, sizeof row.status, "%s", srv_runs_status_name(r->status));
    snprintf(row.cell, sizeof row.cell, "%s", r->cell_id);
    row.result = dump(result ? result : r->result);
    row.timings = dump(r->timings);
    row.started = priv(r)->started_ms;
    row.finished = priv(r)->finished_ms;
    pthread_mutex_unlock(&r->lock);
    cell_error e = { 0 };
    if (store_run_update(r->s->st, &row, &e) < 0)
        srv_slog(SLOG_ERROR, SLOG_F("run", r->id), "run %s: could not record it: %s", r->id, e.message);
    free(row.result);
    free(row.timings);
}

static void audit_run(run *r, const char *event)
{
    pthread_mutex_lock(&r->lock);
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kind", "run", "event", event, "tenant",
                            r->tenant, "token", r->token_id, "run", r->id, "agent",
                            json_string_value(json_object_get(r->spec, "agent")), "cell", r->cell_id, "status",
                            srv_runs_status_name(r->status));
    pthread_mutex_unlock(&r->lock);
    if (rec)
        store_audit_append(r->s->st, rec);
    json_decref(rec);
}

/* ---- events ------------------------------------------------------------------------ */
/* Always recorded, past the file's cap: what a follower needs to end. */
static int essential(const char *type)
{
    return strncmp(type, "run.", 4) == 0 || strcmp(type, "events.dropped") == 0 ||
           strcmp(type, "agent.exited") == 0;
}

/* A type goes into an SSE "event:" line as it is. */
static int type_ok(const char *type)
{
    size_t n = strspn(type, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-");
    return n > 0 && n <= 64 && type[n] == '\0';
}

static void emit_locked(run *r, const char *type, json_t *fields)
{
    run_priv *p = priv(r);
    if (!type_ok(type)) {
        json_decref(fields);
        p->dropped++;
        return;
    }
    json_t *ev = json_pack("{s:I, s:s, s:I}", "seq", (json_int_t)(p->last_seq + 1), "type", type, "timeMs",
                           (json_int_t)srv_now_ms());
    if (ev && json_is_object(fields)) {
        json_object_del(fields, "seq");      /* the daemon's, never the caller's */
        json_object_del(fields, "type");
        json_object_del(fields, "timeMs");
        json_object_update(ev, fields);
    }
    json_decref(fields);
    char *line = dump(ev);
    json_decref(ev);
    size_t len = line ? strlen(line) : 0;
    if (!line || p->fd < 0 || len > RUNS_EVENT_MAX ||
        (!essential(type) && p->file_bytes + len + 1 > RUNS_EVENTS_MAX)) {
        p->dropped++;
        free(line);
        return;
    }
    line[len] = '\n';               /* the NUL becomes the line's end */
    if (util_write_all(p->fd, line, len + 1) < 0) {
        p->dropped++;
    } else {
        p->last_seq++;
        p->file_bytes += len + 1;
        pthread_cond_broadcast(&r->cond);
    }
    free(line);
}

void srv_runs_emit(run *r, const char *type, json_t *fields)
{
    if (!type) {
        json_decref(fields);
        return;
    }
    pthread_mutex_lock(&r->lock);
    emit_locked(r, type, fields);
    pthread_mutex_unlock(&r->lock);
}

void srv_runs_set_status(run *r, enum run_status st)
{
    if (terminal(st))
        return;                     /* only srv_runs_finish ends a run */
    pthread_mutex_lock(&r->lock);
    int changed = !terminal(r->status) && r->status != st;
    if (changed) {
        r->status = st;
        if (st >= RUN_STARTING && !priv(r)->started_ms)
            priv(r)->started_ms = srv_now_ms();
        emit_locked(r, "run.status", json_pack("{s:s}", "status", srv_runs_status_name(st)));
    }
    pthread_mutex_unlock(&r->lock);
    if (changed)
        persist(r, NULL);
}

void srv_runs_set_cell(run *r, const char *cell_id)
{
    pthread_mutex_lock(&r->lock);
    snprintf(r->cell_id, sizeof r->cell_id, "%s", cell_id ? cell_id : "");
    pthread_mutex_unlock(&r->lock);
    persist(r, NULL);
}

void srv_runs_mark(run *r, const char *point)
{
    pthread_mutex_lock(&r->lock);
    json_object_set_new(r->timings, point, json_integer(srv_now_ms()));
    pthread_mutex_unlock(&r->lock);
}

int srv_runs_cancelled(run *r)
{
    pthread_mutex_lock(&r->lock);
    int c = r->cancel;
    pthread_mutex_unlock(&r->lock);
    return c || atomic_load(&r->s->stopping);
}

static int uploads_dir(srv *s, const char *tenant, char *out, size_t size, cell_error *err);

/* Disk blocks of the regular files directly in `dir` (a run's directory
 * and a tenant's uploads are flat). */
static uint64_t dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    uint64_t total = 0;
    for (struct dirent *de; d && (de = readdir(d));) {
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            total += (uint64_t)st.st_blocks * 512;
    }
    if (d)
        closedir(d);
    return total;
}

/* What a tenant's runs and waiting uploads hold on disk. */
static uint64_t tenant_run_bytes(srv *s, const char *tenant)
{
    char (*ids)[RUN_ID_LEN + 1] = NULL;
    size_t n = 0, cap = 0;
    pthread_mutex_lock(&runs_lock);
    for (run *x = runs_list; x; x = x->next) {
        if (strcmp(x->tenant, tenant) != 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 64;
            void *grown = realloc(ids, ncap * sizeof *ids);
            if (!grown)
                break;
            ids = grown;
            cap = ncap;
        }
        memcpy(ids[n++], x->id, sizeof ids[0]);
    }
    pthread_mutex_unlock(&runs_lock);
    char dir[4096];
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (util_path(dir, sizeof dir, NULL, "%s/runs/%s", s->state_dir, ids[i]) >= 0)
            total += dir_bytes(dir);
    free(ids);
    if (uploads_dir(s, tenant, dir, sizeof dir, NULL) >= 0)
        total += dir_bytes(dir);
    return total;
}

uint64_t srv_runs_tenant_bytes(srv *s, const char *tenant)
{
    return tenant_run_bytes(s, tenant);
}

/* The tenant's disk quota (maxDisk), which its run files count against too. */
static uint64_t tenant_disk(srv *s, const char *tenant)
{
    store_tenant t;
    return store_tenant_get(s->st, tenant, &t, NULL) == 0 ? t.max_disk : UINT64_MAX;
}

/* Drop the oldest finished runs of a tenant past RUNS_KEPT_MAX, and while
 * its run files exceed its disk quota. */
static void runs_remove(run *r);
static void prune(srv *s, const char *tenant)
{
    uint64_t quota = tenant_disk(s, tenant);
    for (;;) {
        run *oldest = NULL;
        size_t n = 0;
        pthread_mutex_lock(&runs_lock);
        for (run *x = runs_list; x; x = x->next) {
            if (strcmp(x->tenant, tenant) != 0)
                continue;
            pthread_mutex_lock(&x->lock);
            int done = terminal(x->status) && !priv(x)->driving;
            pthread_mutex_unlock(&x->lock);
            if (done) {
                n++;
                oldest = x;         /* newest first: the last one seen */
            }
        }
        if (oldest)
            oldest->refs++;
        pthread_mutex_unlock(&runs_lock);
        if (!oldest)
            return;
        int over = n > RUNS_KEPT_MAX || tenant_run_bytes(s, tenant) > quota;
        pthread_mutex_lock(&runs_lock);
        int mine = over && priv(oldest)->listed;    /* not taken by a DELETE meanwhile */
        if (mine)
            unlist_locked(oldest);
        pthread_mutex_unlock(&runs_lock);
        if (mine)
            runs_remove(oldest);
        srv_runs_put(oldest);
        if (!over)
            return;
    }
}

void srv_runs_finish(run *r, enum run_status st, json_t *result)
{
    if (!terminal(st))
        st = RUN_FAILED;
    if (!json_is_object(result)) {
        json_decref(result);
        result = json_object();
    }
    int64_t now = srv_now_ms();
    pthread_mutex_lock(&r->lock);
    run_priv *p = priv(r);
    json_object_set_new(r->timings, "finishedMs", json_integer(now));
    if (!json_object_get(result, "durationMs"))
        json_object_set_new(result, "durationMs", json_integer(now - r->created_ms));
    p->finished_ms = now;
    if (p->dropped)
        emit_locked(r, "events.dropped", json_pack("{s:I}", "count", (json_int_t)p->dropped));
    json_t *code = json_object_get(result, "exitCode");
    emit_locked(r, "run.finished", json_pack("{s:s, s:O, s:O}", "status", srv_runs_status_name(st), "exitCode",
                                             code ? code : json_null(), "durationMs",
                                             json_object_get(result, "durationMs")));
    /* Terminal after run.finished is in the file: a follower that sees the
     * status has the event to read. */
    r->status = st;
    json_decref(r->result);
    r->result = result;
    p->driving = 0;
    for (run_perm *pm = r->perms; pm; pm = pm->next)
        if (!pm->decision)
            pm->decision = strdup("deny");
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    persist(r, result);
    /* The whole result is in the store; memory keeps it without the diff
     * (GET /v1/runs/{id} reads the diff back). */
    pthread_mutex_lock(&r->lock);
    json_t *lean = json_deep_copy(result);
    if (lean && json_object_get(lean, "diff")) {
        json_object_del(lean, "diff");
        json_decref(r->result);
        r->result = lean;
        p->result_stripped = 1;
    } else {
        json_decref(lean);
    }
    pthread_mutex_unlock(&r->lock);
    audit_run(r, st == RUN_CANCELED ? "canceled" : "finished");
    char tenant[64];
    snprintf(tenant, sizeof tenant, "%s", r->tenant);
    srv *s = r->s;
    pthread_mutex_lock(&runs_lock);
    runs_drivers--;
    pthread_cond_broadcast(&runs_cond);
    pthread_mutex_unlock(&runs_lock);
    srv_runs_put(r);                    /* the driver's */
    prune(s, tenant);
}

/* ---- permissions ----------------------------------------------------------------------- */
static int decided_locked(run *r, const char *id)
{
    run_priv *p = priv(r);
    for (size_t i = 0; i < p->n_decided; i++)
        if (strcmp(p->decided[i], id) == 0)
            return 1;
    return 0;
}

static void remember_decided_locked(run *r, const char *id)
{
    run_priv *p = priv(r);
    if (!p->decided && !(p->decided = calloc(RUNS_DECIDED_MAX, sizeof *p->decided)))
        return;
    snprintf(p->decided[p->next_decided], sizeof p->decided[0], "%s", id);
    p->next_decided = (p->next_decided + 1) % RUNS_DECIDED_MAX;
    if (p->n_decided < RUNS_DECIDED_MAX)
        p->n_decided++;
}

const char *srv_runs_ask_permission(run *r, const char *req_id, json_t *request, int64_t deadline_ms)
{
    run_perm *pm = calloc(1, sizeof *pm);
    pthread_mutex_lock(&r->lock);
    if (!pm || !req_id || strlen(req_id) >= sizeof pm->id || decided_locked(r, req_id)) {
        pthread_mutex_unlock(&r->lock);
        free(pm);
        return "deny";
    }
    snprintf(pm->id, sizeof pm->id, "%s", req_id);
    pm->next = r->perms;
    r->perms = pm;
    json_t *fields = json_is_object(request) ? json_deep_copy(request) : json_object();
    json_object_set_new(fields, "requestId", json_string(req_id));
    emit_locked(r, "permission.asked", fields);
    const char *by = "client";
    while (!pm->decision) {
        if (r->cancel || atomic_load(&r->s->stopping)) {
            by = "cancel";
            break;
        }
        int64_t left = deadline_ms - srv_now_ms();
        if (left <= 0) {
            by = "timeout";
            break;
        }
        struct timespec ts;
        srv_deadline_after(&ts, left < RUNS_SLICE_MS ? left : RUNS_SLICE_MS);
        pthread_cond_timedwait(&r->cond, &r->lock, &ts);
    }
    const char *decision = pm->decision && strcmp(pm->decision, "allow") == 0 ? "allow" : "deny";
    for (run_perm **pp = &r->perms; *pp; pp = &(*pp)->next)
        if (*pp == pm) {
            *pp = pm->next;
            break;
        }
    remember_decided_locked(r, req_id);
    emit_locked(r, "permission.decided",
                json_pack("{s:s, s:s, s:s}", "requestId", req_id, "decision", decision, "by", by));
    pthread_mutex_unlock(&r->lock);
    free(pm->decision);
    free(pm);
    return decision;
}

/* ---- uploads ---------------------------------------------------------------------------- */
static int uploads_dir(srv *s, const char *tenant, char *out, size_t size, cell_error *err)
{
    return util_path(out, size, err, "%s/runs/uploads/%s", s->state_dir, tenant);
}

/* Remove the tenant's expired uploads (and, at start, those cut short:
 * `parts`) and count those left (in progress too). */
static size_t uploads_sweep(const char *dir, int parts)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    time_t now = time(NULL);
    for (struct dirent *de; (de = readdir(d));) {
        struct stat st;
        if (de->d_name[0] == '.' || fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        size_t len = strlen(de->d_name);
        if (now - st.st_mtime > RUNS_UPLOAD_TTL_S || (parts && len > 5 && strcmp(de->d_name + len - 5, ".part") == 0)) {
            if (unlinkat(dirfd(d), de->d_name, 0) < 0) { /* tried again next time */ }
            continue;
        }
        n++;
    }
    closedir(d);
    return n;
}

typedef struct upload_state {
    int      fd;
    char     part[4096], final[4096];
    char     id[RUN_ID_LEN + 1];
    uint64_t bytes;
    uint64_t room;                 /* what the tenant's disk quota leaves for it */
    int      done;
} upload_state;

static void upload_free(sreq *r)
{
    upload_state *u = r->stream;
    if (!u)
        return;
    if (u->fd >= 0)
        close(u->fd);
    if (!u->done && unlink(u->part) < 0) { /* never made */ }
    free(u);
    r->stream = NULL;
}

static int content_type_ok(sreq *r)
{
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    return ct && (strncasecmp(ct, "application/x-tar", 17) == 0 || strncasecmp(ct, "application/gzip", 16) == 0);
}

static upload_state *upload_begin(sreq *r)
{
    if (!content_type_ok(r))
        return srv_reply_problem(r, 415, "invalid_request", "an upload is a tar stream: Content-Type: "
                             "application/x-tar or application/gzip"), NULL;
    char dir[4096];
    cell_error e = { 0 };
    upload_state *u = calloc(1, sizeof *u);
    if (!u)
        return srv_reply_problem(r, 500, "internal", "out of memory"), NULL;
    u->fd = -1;
    r->stream = u;
    r->stream_free = upload_free;
    u->done = 1;                    /* nothing to unlink until the file exists */
    if (uploads_dir(r->s, r->tok.tenant, dir, sizeof dir, &e) < 0 || util_mkdir_p(dir, 0700, &e) < 0)
        return srv_reply_error(r, &e), NULL;
    util_random_hex(u->id, RUN_ID_LEN / 2);
    if (util_path(u->part, sizeof u->part, &e, "%s/%s.part", dir, u->id) < 0 ||
        util_path(u->final, sizeof u->final, &e, "%s/%s.tar", dir, u->id) < 0)
        return srv_reply_error(r, &e), NULL;
    /* Runs and uploads count against the tenant's disk quota (maxDisk). */
    prune(r->s, r->tok.tenant);
    uint64_t quota = tenant_disk(r->s, r->tok.tenant), used = tenant_run_bytes(r->s, r->tok.tenant);
    if (used >= quota)
        return srv_reply_problem(r, 403, "quota_exceeded", "tenant %s: quota \"disk\" is %llu bytes and its runs and "
                             "uploads hold %llu; remove runs first (DELETE /v1/runs/{id})", r->tok.tenant,
                             (unsigned long long)quota, (unsigned long long)used), NULL;
    u->room = quota - used;
    /* The count and the new file are one step: two uploads cannot both be the eighth. */
    pthread_mutex_lock(&uploads_lock);
    size_t pending = uploads_sweep(dir, 0);
    if (pending < RUNS_UPLOADS_MAX)
        u->fd = open(u->part, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int oe = errno;
    pthread_mutex_unlock(&uploads_lock);
    if (pending >= RUNS_UPLOADS_MAX)
        return srv_reply_problem(r, 429, "too_many_uploads", "tenant %s has %d uploads waiting for a run; use or "
                             "let them expire (1 h) first", r->tok.tenant, RUNS_UPLOADS_MAX), NULL;
    if (u->fd < 0) {
        errno = oe;
        util_fail_errno(&e, "create upload");
        return srv_reply_error(r, &e), NULL;
    }
    u->done = 0;
    return u;
}

int srv_h_runs_upload_body(sreq *r, const char *data, size_t len)
{
    upload_state *u = r->stream;
    if (!u && !(u = upload_begin(r)))
        return -1;
    if (u->bytes + len > u->room) {
        srv_reply_problem(r, 403, "quota_exceeded", "tenant %s: the upload outgrows what quota \"disk\" leaves for the "
                      "tenant's runs and uploads (%llu bytes)", r->tok.tenant, (unsigned long long)u->room);
        return -1;
    }
    if (util_write_all(u->fd, data, len) < 0) {
        cell_error e = { 0 };
        util_fail_errno(&e, "write upload");
        srv_reply_error(r, &e);
        return -1;
    }
    u->bytes += len;
    return 0;
}

int srv_h_runs_upload(sreq *r)
{
    upload_state *u = r->stream;
    if (!u) {
        if (!content_type_ok(r))
            return srv_reply_problem(r, 415, "invalid_request", "an upload is a tar stream: Content-Type: "
                                 "application/x-tar or application/gzip");
        return srv_reply_problem(r, 400, "invalid_request", "the body must be a tar stream, not empty");
    }
    cell_error e = { 0 };
    if (fsync(u->fd) < 0 || close(u->fd) < 0) {
        u->fd = -1;
        util_fail_errno(&e, "write upload");
        return srv_reply_error(r, &e);
    }
    u->fd = -1;
    if (rename(u->part, u->final) < 0) {
        util_fail_errno(&e, "rename upload");
        return srv_reply_error(r, &e);
    }
    u->done = 1;
    srv_req_audit(r, "upload", json_string(u->id));
    return srv_reply_json(r, 201, json_pack("{s:s, s:I}", "upload", u->id, "bytes", (json_int_t)u->bytes));
}

/* Move the tenant's upload into the run's directory: one run gets it. */
static int upload_claim(srv *s, const char *tenant, const char *upload, const char *run_dir, cell_error *err)
{
    char dir[4096], from[4096], to[4096];
    if (uploads_dir(s, tenant, dir, sizeof dir, err) < 0 ||
        util_path(from, sizeof from, err, "%s/%s.tar", dir, upload) < 0 ||
        util_path(to, sizeof to, err, "%s/upload.tar", run_dir) < 0)
        return -1;
    struct stat st;
    if (lstat(from, &st) < 0 || !S_ISREG(st.st_mode) || time(NULL) - st.st_mtime > RUNS_UPLOAD_TTL_S)
        return util_fail(err, ENOENT, "no upload %s (unknown, expired or used by another run)", upload);
    if (rename(from, to) < 0)
        return errno == ENOENT ? util_fail(err, ENOENT, "no upload %s (used by another run)", upload)
                               : util_fail_errno(err, "take upload %s", upload);
    return 0;
}

/* A resumed run of an upload repo gets its own link to the tar, so a
 * chain of resumes, or the first run's removal, keeps it. */
static int upload_inherit(run *x, cell_error *err)
{
    char from[4096], to[4096], dir[4096];
    if (srv_runs_dir(x, dir, sizeof dir) < 0 || util_path(to, sizeof to, err, "%s/upload.tar", dir) < 0 ||
        util_path(from, sizeof from, err, "%s/runs/%s/upload.tar", x->s->state_dir, priv(x)->resumed_from) < 0)
        return -1;
    if (link(from, to) < 0)
        return util_fail_errno(err, "the upload of run %s", priv(x)->resumed_from);
    return 0;
}

int srv_runs_upload_take(run *r, const char *upload_id, char *path, size_t size)
{
    (void)upload_id;                /* claimed at POST /v1/runs */
    char dir[4096];
    struct stat st;
    if (srv_runs_dir(r, dir, sizeof dir) < 0 || util_path(path, size, NULL, "%s/upload.tar", dir) < 0)
        return -1;
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode) ? 0 : -1;
}

/* ---- validation ------------------------------------------------------------------------- */
static const char *const known_fields[] = {
    "agent", "prompt", "model", "instructions", "repo", "skills", "mcp", "policy", "key", "permissions",
    "timeout_s", "output_schema", "attachments", "resume", "keep", "image", "resources", "env", NULL,
};
static const char *const known_agents[] = { "mock", "codex", "opencode", "claude", "shell", NULL };

static int in_list(const char *v, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(v, *list) == 0)
            return 1;
    return 0;
}

static int bad(sreq *r, const char *fmt, const char *field)
{
    srv_reply_problem(r, 400, "invalid_request", fmt, field);
    return -1;
}

/* Whether `path` is `root` or under it (both canonical). */
static int under(const char *path, const char *root)
{
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/')
        return 1;
    return strncmp(path, root, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static int repo_path_allowed(srv *s, const char *canon)
{
    for (const char *const *root = s->opt.run_repo_roots; root && *root; root++) {
        char croot[PATH_MAX];
        if (realpath(*root, croot) && under(canon, croot))
            return 1;
    }
    return 0;
}

/* A lane path: absolute, no "." or ".." segment. */
static int clean_abs(const char *p)
{
    if (p[0] != '/')
        return 0;
    for (const char *seg = p; seg && *seg;) {
        seg++;
        size_t len = strcspn(seg, "/");
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return 0;
        seg = strchr(seg, '/');
    }
    return 1;
}

static int parse_repo(sreq *r, json_t *body, json_t *spec, char *upload, size_t upload_size)
{
    json_t *repo = json_object_get(body, "repo");
    upload[0] = '\0';
    if (!repo || json_is_null(repo))
        return 0;
    if (!json_is_object(repo))
        return bad(r, "field \"%s\" must be an object: {\"path\"}, {\"lane\"} or {\"upload\"}", "repo");
    json_t *path = json_object_get(repo, "path"), *lane = json_object_get(repo, "lane"),
           *up = json_object_get(repo, "upload");
    const char *key;
    json_t *v;
    json_object_foreach(repo, key, v)
        if (strcmp(key, "path") != 0 && strcmp(key, "lane") != 0 && strcmp(key, "upload") != 0) {
            srv_reply_problem(r, 400, "invalid_request", "field \"repo.%s\" is unknown (repo takes path, lane "
                          "(with path) or upload)", key);
            return -1;
        }
    if (!!lane + !!up > 1 || (!lane && !up && !path) || (up && path))
        return bad(r, "field \"%s\" takes one of {\"path\": DIR}, {\"lane\": NAME, \"path\"?: DIR} or "
                   "{\"upload\": ID}", "repo");
    if (path && !json_is_string(path))
        return bad(r, "field \"%s\" must be a string", "repo.path");
    if (lane) {
        if (!json_is_string(lane))
            return bad(r, "field \"%s\" must be a string", "repo.lane");
        const char *dir = path ? json_string_value(path) : RUN_WORKSPACE;
        if (!clean_abs(dir) || strlen(dir) >= PATH_MAX)
            return bad(r, "field \"%s\" must be an absolute path without \".\" or \"..\"", "repo.path");
        store_lane l;
        if (store_lane_get(r->s->st, r->tok.tenant, json_string_value(lane), &l, NULL) < 0 ||
            strcmp(l.state, "ready") != 0) {
            srv_reply_problem(r, 404, "not_found", "field \"repo.lane\": lane %s; create it with POST /v1/lanes",
                          json_string_value(lane));
            return -1;
        }
        json_object_set_new(spec, "repo", json_pack("{s:s, s:s}", "lane", l.name, "path", dir));
        return 0;
    }
    if (up) {
        if (!json_is_string(up) || !valid_id(json_string_value(up)))
            return bad(r, "field \"%s\" must be an upload id from POST /v1/runs/uploads (16 hex digits)",
                       "repo.upload");
        snprintf(upload, upload_size, "%s", json_string_value(up));
        json_object_set_new(spec, "repo", json_pack("{s:s}", "upload", upload));
        return 0;
    }
    const char *p = json_string_value(path);
    char canon[PATH_MAX];
    struct stat st;
    if (p[0] != '/')
        return bad(r, "field \"%s\" must be an absolute path", "repo.path");
    /* The canonical path (links resolved) is what is checked and kept: a
     * link under a root that leads out of it is out of it. */
    if (!realpath(p, canon) || stat(canon, &st) < 0 || !S_ISDIR(st.st_mode)) {
        if (!r->tok.admin && !r->s->opt.run_repo_roots)
            return srv_reply_problem(r, 403, "forbidden", "field \"repo.path\": host paths need an admin token, or "
                                 "a daemon started with --run-repo-root"), -1;
        return bad(r, "field \"%s\" must name an existing directory", "repo.path");
    }
    if (!r->tok.admin && !repo_path_allowed(r->s, canon)) {
        srv_reply_problem(r, 403, "forbidden", "field \"repo.path\": %s is not under a --run-repo-root of the daemon "
                      "(host paths outside them need an admin token)", canon);
        return -1;
    }
    json_object_set_new(spec, "repo", json_pack("{s:s}", "path", canon));
    return 0;
}

static int parse_attachments(sreq *r, json_t *body)
{
    json_t *arr = json_object_get(body, "attachments");
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > RUNS_ATTACH_MAX) {
        srv_reply_problem(r, 400, "invalid_request", "field \"attachments\" must be an array of at most %d "
                      "{name, text | base64}", RUNS_ATTACH_MAX);
        return -1;
    }
    size_t i, total = 0;
    json_t *a;
    json_array_foreach(arr, i, a) {
        json_t *name = json_object_get(a, "name"), *text = json_object_get(a, "text"),
               *b64 = json_object_get(a, "base64");
        const char *n = json_string_value(name);
        if (!json_is_object(a) || json_object_size(a) != 2 || !n || !util_valid_name(n) || !!text + !!b64 != 1) {
            srv_reply_problem(r, 400, "invalid_request", "field \"attachments[%zu]\" must be {\"name\": a file name "
                          "(letters, digits, '.', '_', '-'), and \"text\" or \"base64\"}", i);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(n, json_string_value(json_object_get(json_array_get(arr, j), "name"))) == 0) {
                srv_reply_problem(r, 400, "invalid_request", "field \"attachments[%zu].name\": %s is given twice", i, n);
                return -1;
            }
        if (text && !json_is_string(text)) {
            srv_reply_problem(r, 400, "invalid_request", "field \"attachments[%zu].text\" must be a string", i);
            return -1;
        }
        if (text) {
            total += json_string_length(text);
        } else {
            const char *in = json_string_value(b64);
            size_t len = json_string_length(b64), out_len = 0;
            unsigned char *out = in ? malloc(len / 4 * 3 + 3) : NULL;
            char why[128];
            int ok = out && srv_procs_base64_decode(in, len, out, &out_len, why, sizeof why) == 0;
            free(out);
            if (!ok) {
                srv_reply_problem(r, 400, "invalid_request", "field \"attachments[%zu].base64\" must be a string of "
                              "padded base64", i);
                return -1;
            }
            total += out_len;
        }
        if (total > RUNS_ATTACH_BYTES) {
            srv_reply_problem(r, 400, "invalid_request", "field \"attachments\": at most %u bytes in all",
                          RUNS_ATTACH_BYTES);
            return -1;
        }
    }
    return 0;
}

/* The tenant's run to resume: {"run": ID} or {"last": true} (its newest
 * finished run of the same agent). */
static int parse_resume(sreq *r, json_t *body, json_t *spec, const char *agent, run_priv *p)
{
    json_t *res = json_object_get(body, "resume");
    if (!res || json_is_null(res))
        return 0;
    json_t *id = json_object_get(res, "run"), *last = json_object_get(res, "last"), *fork = json_object_get(res, "fork");
    const char *key;
    json_t *v;
    if (!json_is_object(res))
        return bad(r, "field \"%s\" must be {\"run\": ID} or {\"last\": true}, with \"fork\"?: true", "resume");
    json_object_foreach(res, key, v)
        if (strcmp(key, "run") != 0 && strcmp(key, "last") != 0 && strcmp(key, "fork") != 0) {
            srv_reply_problem(r, 400, "invalid_request", "field \"resume.%s\" is unknown (run, last, fork)", key);
            return -1;
        }
    if (fork && !json_is_boolean(fork))
        return bad(r, "field \"%s\" must be a boolean", "resume.fork");
    if (!!id == !!last || (id && !json_is_string(id)) || (last && !json_is_true(last)))
        return bad(r, "field \"%s\" must be {\"run\": ID} or {\"last\": true}", "resume");
    run *prev = NULL;
    if (id) {
        prev = runs_lookup(r->tok.tenant, json_string_value(id));
    } else {
        pthread_mutex_lock(&runs_lock);
        for (run *x = runs_list; x && !prev; x = x->next) {
            if (strcmp(x->tenant, r->tok.tenant) != 0 ||
                strcmp(json_string_value(json_object_get(x->spec, "agent")), agent) != 0)
                continue;
            pthread_mutex_lock(&x->lock);
            if (terminal(x->status) && !priv(x)->driving)
                prev = x, x->refs++;
            pthread_mutex_unlock(&x->lock);
        }
        pthread_mutex_unlock(&runs_lock);
    }
    if (!prev) {
        srv_reply_problem(r, 404, "not_found", "field \"resume\": %s%s", id ? "no run " : "no finished run of agent ",
                      id ? json_string_value(id) : agent);
        return -1;
    }
    pthread_mutex_lock(&prev->lock);
    int done = terminal(prev->status) && !priv(prev)->driving;
    pthread_mutex_unlock(&prev->lock);
    int rc = 0;
    if (!done) {
        srv_reply_problem(r, 409, "conflict", "field \"resume\": run %s has not finished", prev->id);
        rc = -1;
    } else if (strcmp(json_string_value(json_object_get(prev->spec, "agent")), agent) != 0) {
        srv_reply_problem(r, 400, "invalid_request", "field \"resume\": run %s ran agent %s, not %s", prev->id,
                      json_string_value(json_object_get(prev->spec, "agent")), agent);
        rc = -1;
    } else {
        json_object_set_new(spec, "resume", json_pack("{s:s, s:b}", "run", prev->id, "fork", json_is_true(fork)));
        /* A resumed run works on the previous run's repository. */
        if (!json_object_get(body, "repo") && json_object_get(prev->spec, "repo"))
            json_object_set_new(spec, "repo", json_deep_copy(json_object_get(prev->spec, "repo")));
        snprintf(p->resumed_from, sizeof p->resumed_from, "%s", prev->id);
    }
    srv_runs_put(prev);
    return rc;
}

static int parse_run(sreq *r, json_t *body, json_t *spec, run_priv *p, char *upload, size_t upload_size)
{
    if (srv_req_check_known(r, body, "", known_fields) < 0)
        return -1;
    const char *agent = NULL, *prompt = NULL, *model = NULL, *keep = "nothing", *image = "host";
    int64_t timeout = RUNS_TIMEOUT_DEF;
    if (srv_json_get_str(r, body, "agent", 1, &agent) < 0 || srv_json_get_str(r, body, "prompt", 1, &prompt) < 0 ||
        srv_json_get_str(r, body, "model", 0, &model) < 0 || srv_json_get_str(r, body, "keep", 0, &keep) < 0 ||
        srv_json_get_str(r, body, "image", 0, &image) < 0 ||
        srv_json_get_int(r, body, "timeout_s", 0, 1, RUNS_TIMEOUT_MAX, &timeout) < 0)
        return -1;
    if (!in_list(agent, known_agents))
        return bad(r, "field \"%s\" must be one of mock, codex, opencode, claude, shell", "agent");
    if (json_string_length(json_object_get(body, "prompt")) > RUNS_PROMPT_MAX)
        return bad(r, "field \"%s\" is longer than 1 MiB", "prompt");
    if (strcmp(keep, "nothing") != 0 && strcmp(keep, "lane") != 0 && strcmp(keep, "cell") != 0)
        return bad(r, "field \"%s\" must be \"nothing\", \"lane\" or \"cell\"", "keep");
    json_t *pol = json_object_get(body, "policy");
    if (pol && !json_is_null(pol) && !json_is_object(pol))
        return bad(r, "field \"%s\" must be an egress policy object, as POST /v1/cells takes", "policy");
    uint64_t ceiling = r->s->opt.limits.run_timeout_ms / 1000;
    if (ceiling && (uint64_t)timeout > ceiling)
        timeout = (int64_t)ceiling;         /* the operator's ceiling caps it */
    char why[512] = "";
    if (srv_runagent_check(body, why, sizeof why) < 0) {
        srv_reply_problem(r, 400, "invalid_request", "%s", why[0] ? why : "invalid run request");
        return -1;
    }
    /* The cell's part, checked as POST /v1/cells checks it. */
    json_t *cellbody = json_pack("{s:s}", "image", image);
    static const char *const cell_keys[] = { "resources", "env", "policy", NULL };
    for (const char *const *k = cell_keys; cellbody && *k; k++)
        if (json_object_get(body, *k))
            json_object_set(cellbody, *k, json_object_get(body, *k));
    json_t *keyo = json_object_get(body, "key");
    if (cellbody && keyo && !json_is_null(keyo))
        json_object_set_new(cellbody, "agents", json_pack("{s:O}", agent, keyo));
    json_t *cellspec = json_object();
    int rc = cellbody && cellspec ? srv_cells_spec_from_body(r, cellbody, cellspec)
                                  : (srv_reply_problem(r, 500, "internal", "out of memory"), -1);
    json_decref(cellbody);
    json_decref(cellspec);
    if (rc < 0 || parse_repo(r, body, spec, upload, upload_size) < 0 || parse_attachments(r, body) < 0 ||
        parse_resume(r, body, spec, agent, p) < 0)
        return -1;
    json_object_set_new(spec, "agent", json_string(agent));
    json_object_set_new(spec, "keep", json_string(keep));
    json_object_set_new(spec, "image", json_string(image));
    json_object_set_new(spec, "timeout_s", json_integer(timeout));
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
        if (!json_object_get(spec, key) && strcmp(key, "resume") != 0)
            json_object_set(spec, key, v);
    return 0;
}

/* ---- run JSON --------------------------------------------------------------------------- */
static json_t *run_json(run *r, int with_diff)
{
    json_t *o = json_object();
    pthread_mutex_lock(&r->lock);
    run_priv *p = priv(r);
    json_object_set_new(o, "id", json_string(r->id));
    json_object_set_new(o, "tenant", json_string(r->tenant));
    /* Copies: the spec is shared by every thread that reads the run. */
    json_object_set_new(o, "agent", json_deep_copy(json_object_get(r->spec, "agent")));
    json_object_set_new(o, "status", json_string(srv_runs_status_name(r->status)));
    json_object_set_new(o, "createdAtMs", json_integer(r->created_ms));
    if (p->started_ms)
        json_object_set_new(o, "startedAtMs", json_integer(p->started_ms));
    if (p->finished_ms && terminal(r->status))
        json_object_set_new(o, "finishedAtMs", json_integer(p->finished_ms));
    if (r->cell_id[0])
        json_object_set_new(o, "cellId", json_string(r->cell_id));
    json_object_set_new(o, "keep", json_deep_copy(json_object_get(r->spec, "keep")));
    json_t *repo = json_object_get(r->spec, "repo");
    json_object_set_new(o, "repo", repo ? json_deep_copy(repo) : json_null());
    if (p->resumed_from[0])
        json_object_set_new(o, "resumedFrom", json_string(p->resumed_from));
    json_t *t = json_pack("{s:I, s:n, s:n, s:n, s:n}", "acceptedMs", (json_int_t)r->created_ms, "cellReadyMs",
                          "agentStartedMs", "agentDoneMs", "finishedMs");
    json_object_update(t, r->timings);
    json_object_set_new(o, "timings", t);
    int stripped = p->result_stripped && terminal(r->status);
    json_t *result = r->result && terminal(r->status) ? json_deep_copy(r->result) : NULL;
    pthread_mutex_unlock(&r->lock);
    if (result && with_diff && stripped) {
        store_run row;
        json_t *whole = NULL;
        if (store_run_get(r->s->st, r->id, &row, NULL) == 0 && row.result)
            whole = json_loads(row.result, 0, NULL);
        store_run_free(&row);
        if (json_is_object(whole))
            json_object_set(result, "diff", json_object_get(whole, "diff"));
        json_decref(whole);
    }
    if (result && !with_diff)
        json_object_del(result, "diff");
    json_object_set_new(o, "result", result ? result : json_null());
    return o;
}

/* ---- handlers ----------------------------------------------------------------------------- */
static run *find_run(sreq *r)
{
    const char *id = srv_router_param(&r->m, "id");
    run *x = runs_lookup(r->tok.tenant, id);
    if (!x)
        srv_reply_problem(r, 404, "not_found", "run %s", id);
    else
        srv_req_audit(r, "run", json_string(x->id));
    return x;
}

static size_t active_runs_locked(const char *tenant)
{
    size_t n = 0;
    for (run *x = runs_list; x; x = x->next)
        if (strcmp(x->tenant, tenant) == 0) {
            pthread_mutex_lock(&x->lock);
            n += !terminal(x->status) || priv(x)->driving;
            pthread_mutex_unlock(&x->lock);
        }
    return n;
}

/* STATE/runs/<id> with an empty events.jsonl open for appending. */
static int make_dir(run *r, cell_error *err)
{
    char dir[4096], path[4096];
    if (srv_runs_dir(r, dir, sizeof dir) < 0 || util_mkdir_p(dir, 0700, err) < 0 ||
        util_path(path, sizeof path, err, "%s/events.jsonl", dir) < 0)
        return -1;
    priv(r)->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    return priv(r)->fd < 0 ? util_fail_errno(err, "open %s", path) : 0;
}

static void runs_remove(run *r)
{
    char dir[4096];
    cell_error e = { 0 };
    if (store_run_delete(r->s->st, r->id, &e) < 0 && e.code != ENOENT)
        srv_slog(SLOG_WARN, SLOG_F("run", r->id), "run %s: %s", r->id, e.message);
    if (srv_runs_dir(r, dir, sizeof dir) == 0 && util_rm_rf(dir, &e) < 0)
        srv_slog(SLOG_WARN, SLOG_F("run", r->id), "run %s: %s", r->id, e.message);
}

int srv_h_runs_create(sreq *r)
{
    json_t *body = NULL;
    if (srv_req_json(r, &body) < 0)
        return REPLIED(r);
    char id[RUN_ID_LEN + 1], upload[RUN_ID_LEN + 1];
    util_random_hex(id, RUN_ID_LEN / 2);
    run *x = run_new(r->s, id, r->tok.tenant);
    json_t *spec = json_object();
    if (!x || !spec) {
        json_decref(body);
        json_decref(spec);
        if (x)
            run_free(x);
        return srv_reply_problem(r, 500, "internal", "out of memory");
    }
    int ret = MHD_YES;
    cell_error e = { 0 };
    if (parse_run(r, body, spec, priv(x), upload, sizeof upload) < 0)
        goto fail;
    x->spec = spec;
    spec = NULL;
    snprintf(x->token_id, sizeof x->token_id, "%s", r->tok.id);
    x->admin = r->tok.admin;
    x->created_ms = srv_now_ms();
    x->status = RUN_QUEUED;
    pthread_mutex_lock(&runs_lock);
    size_t going = active_runs_locked(r->tok.tenant);
    pthread_mutex_unlock(&runs_lock);
    prune(r->s, r->tok.tenant);
    uint64_t quota = tenant_disk(r->s, r->tok.tenant), used = tenant_run_bytes(r->s, r->tok.tenant);
    if (used >= quota) {
        ret = srv_reply_problem(r, 403, "quota_exceeded", "tenant %s: quota \"disk\" is %llu bytes and its runs and "
                            "uploads hold %llu; remove runs first (DELETE /v1/runs/{id})", r->tok.tenant,
                            (unsigned long long)quota, (unsigned long long)used);
        goto fail;
    }
    if (going >= RUNS_ACTIVE_MAX) {
        ret = srv_reply_problem(r, 429, "too_many_runs", "tenant %s has %d runs going; wait for one to finish or "
                            "cancel one (DELETE /v1/runs/{id})", r->tok.tenant, RUNS_ACTIVE_MAX);
        goto fail;
    }
    if (make_dir(x, &e) < 0) {
        ret = srv_reply_error(r, &e);
        goto fail;
    }
    char dir[4096];
    if (!upload[0] && priv(x)->resumed_from[0] && json_object_get(json_object_get(x->spec, "repo"), "upload") &&
        upload_inherit(x, &e) < 0) {
        ret = srv_reply_error(r, &e);
        goto fail_dir;
    }
    if (upload[0] && (srv_runs_dir(x, dir, sizeof dir) < 0 || upload_claim(r->s, r->tok.tenant, upload, dir, &e) < 0)) {
        ret = e.code == ENOENT ? srv_reply_problem(r, 404, "not_found", "field \"repo.upload\": %s", e.message)
                               : srv_reply_error(r, &e);
        goto fail_dir;
    }
    store_run row = { .created = x->created_ms };
    snprintf(row.id, sizeof row.id, "%s", x->id);
    snprintf(row.tenant, sizeof row.tenant, "%s", x->tenant);
    snprintf(row.token, sizeof row.token, "%.15s", x->token_id);
    snprintf(row.agent, sizeof row.agent, "%s", json_string_value(json_object_get(x->spec, "agent")));
    snprintf(row.status, sizeof row.status, "queued");
    row.spec = dump(x->spec);
    /* The limit and the listing are one step. */
    pthread_mutex_lock(&runs_lock);
    size_t active = active_runs_locked(r->tok.tenant);
    int ins = active >= RUNS_ACTIVE_MAX ? 1
              : row.spec            ? store_run_insert(r->s->st, &row, &e)
                                    : util_fail(&e, ENOMEM, "out of memory");
    if (ins == 0) {
        priv(x)->listed = 1;
        priv(x)->driving = 1;
        x->refs++;                  /* the list's */
        x->next = runs_list;
        runs_list = x;
        runs_drivers++;
    }
    pthread_mutex_unlock(&runs_lock);
    free(row.spec);
    if (ins != 0) {
        ret = ins > 0 ? srv_reply_problem(r, 429, "too_many_runs", "tenant %s has %d runs going; wait for one to "
                                      "finish or cancel one (DELETE /v1/runs/{id})", r->tok.tenant, RUNS_ACTIVE_MAX)
                      : srv_reply_error(r, &e);
        goto fail_dir;
    }
    srv_req_audit(r, "run", json_string(x->id));
    srv_runs_emit(x, "run.status", json_pack("{s:s}", "status", "queued"));
    audit_run(x, "created");
    pthread_mutex_lock(&runs_lock);
    x->refs++;                      /* the driver's */
    pthread_mutex_unlock(&runs_lock);
    int pe = util_thread_detached(srv_rundrive_main, x);
    if (pe != 0) {
        srv_runs_finish(x, RUN_FAILED, json_pack("{s:n, s:s, s:{s:s, s:s}}", "exitCode", "output", "", "error", "type",
                                             "internal", "message", "could not start the run's thread"));
    }
    ret = srv_reply_json(r, 202, run_json(x, 0));
    srv_runs_put(x);
    json_decref(body);
    return ret;
fail_dir:
    runs_remove(x);
fail:
    json_decref(body);
    json_decref(spec);
    run_free(x);
    return r->responded ? MHD_YES : ret;
}

void srv_runs_count_by_status(uint64_t counts[RUN_TIMED_OUT + 1])
{
    pthread_mutex_lock(&runs_lock);
    for (run *x = runs_list; x; x = x->next) {
        pthread_mutex_lock(&x->lock);
        if ((unsigned)x->status <= RUN_TIMED_OUT)
            counts[x->status]++;
        pthread_mutex_unlock(&x->lock);
    }
    pthread_mutex_unlock(&runs_lock);
}

int srv_h_runs_list(sreq *r)
{
    const char *tenant = r->tok.tenant, *q_tenant = srv_req_query(r, "tenant"), *q_status = srv_req_query(r, "status"),
               *q_limit = srv_req_query(r, "limit");
    if (q_tenant && !r->tok.admin && strcmp(q_tenant, r->tok.tenant) != 0)
        return srv_reply_problem(r, 403, "forbidden", "?tenant= needs an admin token");
    if (q_tenant)
        tenant = q_tenant;
    enum run_status want = RUN_QUEUED;
    if (q_status && status_parse(q_status, &want) < 0)
        return srv_reply_problem(r, 400, "invalid_request", "?status= must be one of queued, starting, running, "
                             "finishing, succeeded, failed, canceled, timed_out");
    long limit = RUNS_LIST_DEFAULT;
    if (q_limit) {
        char *end;
        errno = 0;
        limit = strtol(q_limit, &end, 10);
        if (errno || *end || !*q_limit || limit < 1 || limit > RUNS_LIST_MAX)
            return srv_reply_problem(r, 400, "invalid_request", "?limit= must be a number from 1 to %d", RUNS_LIST_MAX);
    }
    run **mine = calloc((size_t)limit, sizeof *mine);
    if (!mine)
        return srv_reply_problem(r, 500, "internal", "out of memory");
    size_t n = 0;
    pthread_mutex_lock(&runs_lock);
    for (run *x = runs_list; x && n < (size_t)limit; x = x->next) {
        if (strcmp(x->tenant, tenant) != 0)
            continue;
        if (q_status) {
            pthread_mutex_lock(&x->lock);
            int match = x->status == want;
            pthread_mutex_unlock(&x->lock);
            if (!match)
                continue;
        }
        x->refs++;
        mine[n++] = x;
    }
    pthread_mutex_unlock(&runs_lock);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, run_json(mine[i], 0));
        srv_runs_put(mine[i]);
    }
    free(mine);
    return srv_reply_json(r, 200, json_pack("{s:o}", "runs", arr));
}

int srv_h_runs_get(sreq *r)
{
    run *x = find_run(r);
    if (!x)
        return MHD_YES;
    int ret = srv_reply_json(r, 200, run_json(x, 1));
    srv_runs_put(x);
    return ret;
}

int srv_h_runs_delete(sreq *r)
{
    run *x = find_run(r);
    if (!x)
        return MHD_YES;
    pthread_mutex_lock(&x->lock);
    int active = !terminal(x->status) || priv(x)->driving, first = !x->cancel;
    if (active) {
        x->cancel = 1;
        pthread_cond_broadcast(&x->cond);
    }
    pthread_mutex_unlock(&x->lock);
    int ret;
    if (active) {
        (void)first;
        ret = srv_reply_empty(r, 202);
    } else {
        /* Only one of concurrent DELETEs unlists it; the others are 404s. */
        pthread_mutex_lock(&runs_lock);
        int mine = priv(x)->listed;
        unlist_locked(x);
        pthread_mutex_unlock(&runs_lock);
        if (mine) {
            runs_remove(x);
            ret = srv_reply_empty(r, 204);
        } else {
            ret = srv_reply_problem(r, 404, "not_found", "run %s", x->id);
        }
    }
    srv_runs_put(x);
    return ret;
}

int srv_h_runs_permission(sreq *r)
{
    run *x = find_run(r);
    if (!x)
        return MHD_YES;
    const char *req_id = srv_router_param(&r->m, "req");
    json_t *body = NULL;
    const char *decision = NULL;
    int ret;
    if (srv_req_json(r, &body) < 0 || srv_json_get_str(r, body, "decision", 1, &decision) < 0) {
        ret = REPLIED(r);
        goto out;
    }
    if (json_object_size(body) != 1) {
        ret = srv_reply_problem(r, 400, "invalid_request", "the body is {\"decision\": \"allow\" | \"deny\"} only");
        goto out;
    }
    if (strcmp(decision, "allow") != 0 && strcmp(decision, "deny") != 0) {
        ret = srv_reply_problem(r, 400, "invalid_request", "field \"decision\" must be \"allow\" or \"deny\"");
        goto out;
    }
    pthread_mutex_lock(&x->lock);
    run_perm *pm = x->perms;
    while (pm && strcmp(pm->id, req_id) != 0)
        pm = pm->next;
    int outcome = pm && !pm->decision ? 0 : pm || decided_locked(x, req_id) ? 409 : 404;
    if (outcome == 0) {
        pm->decision = strdup(decision);
        if (!pm->decision)
            outcome = 500;
        pthread_cond_broadcast(&x->cond);
    }
    pthread_mutex_unlock(&x->lock);
    srv_req_audit(r, "decision", json_string(decision));
    ret = outcome == 0     ? srv_reply_empty(r, 204)
          : outcome == 409 ? srv_reply_problem(r, 409, "conflict", "permission request %s was decided already", req_id)
          : outcome == 404 ? srv_reply_problem(r, 404, "not_found", "permission request %s of run %s", req_id, x->id)
                           : srv_reply_problem(r, 500, "internal", "out of memory");
out:
    json_decref(body);
    srv_runs_put(x);
    return ret;
}

int srv_h_runs_apply(sreq *r)
{
    run *x = find_run(r);
    if (!x)
        return MHD_YES;
    int ret;
    const char *repo = json_string_value(json_object_get(json_object_get(x->spec, "repo"), "path"));
    pthread_mutex_lock(&x->lock);
    int done = terminal(x->status) && !priv(x)->driving, busy = priv(x)->applying;
    /* A run whose diff failed has no diffBytes: nothing to apply is not
     * the same as an empty change, so it must not answer "applied". */
    int has_diff = json_is_integer(json_object_get(x->result, "diffBytes"));
    if (done && !busy && repo && has_diff)
        priv(x)->applying = 1;
    json_t *changed = json_deep_copy(json_object_get(x->result, "changedFiles"));
    pthread_mutex_unlock(&x->lock);
    if (!done || busy) {
        ret = srv_reply_problem(r, 409, "conflict", busy ? "run %s is being applied already" : "run %s has not finished",
                            x->id);
        goto out;
    }
    if (!repo) {
        ret = srv_reply_problem(r, 400, "invalid_request", "run %s did not work on a host directory (repo.path): "
                            "apply its patch yourself, GET /v1/runs/%s/artifacts/diff.patch", x->id, x->id);
        goto out;
    }
    if (!has_diff) {
        ret = srv_reply_problem(r, 409, "conflict", "run %s has no diff to apply (see its result.error)", x->id);
        goto out;
    }
    char dir[4096], patch[4096];
    cell_error e = { 0 };
    json_t *conflicts = NULL;
    struct stat st;
    int rc = srv_runs_dir(x, dir, sizeof dir) < 0 || util_path(patch, sizeof patch, &e, "%s/diff.patch", dir) < 0 ? -1 : 0;
    if (rc == 0 && lstat(patch, &st) == 0 && st.st_size == 0) {
        ret = srv_reply_json(r, 200, json_pack("{s:b, s:o}", "applied", 1, "changedFiles", json_array()));
    } else if (rc == 0 && srv_rundiff_apply(r->s, repo, patch, &conflicts, &e) == 0) {
        audit_run(x, "applied");
        ret = srv_reply_json(r, 200, json_pack("{s:b, s:o}", "applied", 1, "changedFiles",
                                           changed ? json_incref(changed) : json_array()));
    } else if (e.code == EEXIST) {
        ret = srv_reply_problem_details(r, 409, "conflict",
                                    json_pack("{s:o}", "conflicts", conflicts ? conflicts : json_array()),
                                    "the patch of run %s does not apply to %s: nothing was written", x->id, repo);
        conflicts = NULL;
    } else {
        ret = srv_reply_error(r, &e);
    }
    json_decref(conflicts);
    pthread_mutex_lock(&x->lock);
    priv(x)->applying = 0;
    pthread_mutex_unlock(&x->lock);
out:
    json_decref(changed);
    srv_runs_put(x);
    return ret;
}

static const char *const served_artifacts[] = { "diff.patch", "events.jsonl", NULL };

int srv_h_runs_artifact(sreq *r)
{
    run *x = find_run(r);
    if (!x)
        return MHD_YES;
    const char *name = srv_router_param(&r->m, "name");
    char dir[4096];
    int ret, fd = -1;
    struct stat st;
    if (!in_list(name, served_artifacts)) {
        ret = srv_reply_problem(r, 404, "not_found", "artifact %s of run %s (served: diff.patch, events.jsonl)", name,
                            x->id);
        goto out;
    }
    int dfd = srv_runs_dir(x, dir, sizeof dir) == 0 ? open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
    fd = dfd >= 0 ? openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
    if (dfd >= 0)
        close(dfd);
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        ret = srv_reply_problem(r, 404, "not_found", "artifact %s of run %s", name, x->id);
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size < RUNS_PATCH_MAX ? (uint64_t)st.st_size : RUNS_PATCH_MAX;
    struct MHD_Response *resp = MHD_create_response_from_fd(size, fd);
    if (!resp) {
        ret = srv_reply_problem(r, 500, "internal", "out of memory");
        goto out;
    }
    fd = -1;                        /* the response's */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            strcmp(name, "diff.patch") == 0 ? "text/x-diff" : "application/x-ndjson");
    ret = srv_reply_response(r, 200, resp);
out:
    if (fd >= 0)
        close(fd);
    srv_runs_put(x);
    return ret;
}

/* ---- the event stream --------------------------------------------------------------------- */
typedef struct run_follow {
    run     *r;
    int      fd;                   /* events.jsonl, read-only */
    uint64_t off;                  /* bytes of it consumed */
    uint64_t read_to;              /* the file's end at the last read (a torn last line waits there) */
    uint64_t after;                /* events up to this seq are not sent */
    int      follow, done;
    char    *pending;
    size_t   len, sent;
    char     token_id[16];
} run_follow;

static void follow_free(void *cls)
{
    run_follow *f = cls;
    if (f->fd >= 0)
        close(f->fd);
    free(f->pending);
    srv_runs_put(f->r);
    free(f);
}

/* Format the complete lines after f->off into f->pending (at most
 * RUNS_BATCH of input); 1 if any bytes were consumed. */
static int follow_collect(run_follow *f)
{
    char *buf = malloc(RUNS_BATCH);
    if (!buf)
        return 0;
    ssize_t n = pread(f->fd, buf, RUNS_BATCH, (off_t)f->off);
    size_t used = 0;
    f->read_to = f->off + (n > 0 ? (uint64_t)n : 0);
    FILE *m = n > 0 ? open_memstream(&f->pending, &f->len) : NULL;
    while (m && used < (size_t)n) {
        char *nl = memchr(buf + used, '\n', (size_t)n - used);
        if (!nl)
            break;                  /* a line being written: next time */
        size_t len = (size_t)(nl - (buf + used));
        json_t *ev = json_loadb(buf + used, len, 0, NULL);
        json_int_t seq = json_integer_value(json_object_get(ev, "seq"));
        const char *type = json_string_value(json_object_get(ev, "type"));
        if (type && seq > 0 && (uint64_t)seq > f->after) {
            fprintf(m, "id: %lld\nevent: %s\ndata: %.*s\n\n", (long long)seq, type, (int)len, buf + used);
            f->after = (uint64_t)seq;
        }
        json_decref(ev);
        used += len + 1;
    }
    if (m && fclose(m) != 0) {
        free(f->pending);
        f->pending = NULL;
        f->len = 0;
    }
    free(buf);
    /* Every line fits in a batch (RUNS_EVENT_MAX): a whole batch without
     * a newline is a torn line glued to the next, skipped. */
    if (used == 0 && n == (ssize_t)RUNS_BATCH)
        used = (size_t)n;
    f->off += used;
    f->sent = 0;
    if (f->pending && f->len == 0) {
        free(f->pending);
        f->pending = NULL;
    }
    return used > 0;
}

static ssize_t follow_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    run_follow *f = cls;
    run *r = f->r;
    int64_t until = srv_now_ms() + RUNS_HEARTBEAT_MS;
    while (!f->pending) {
        if (f->done || srv_conns_stream_over(r->s, f->token_id))
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (follow_collect(f))
            continue;
        /* Lines are written whole under the run's lock: with it held, a
         * file longer than it was at the last read has a line more.  What
         * was there without its newline (a write cut short by a full disk
         * or a crash) is never completed: it does not count as more. */
        pthread_mutex_lock(&r->lock);
        struct stat st;
        int more = fstat(f->fd, &st) == 0 && (uint64_t)st.st_size > f->read_to;
        int beat = 0;
        if (!more && (terminal(r->status) || !f->follow)) {
            f->done = 1;
        } else if (!more && srv_now_ms() >= until) {
            beat = 1;
        } else if (!more) {
            struct timespec ts;
            srv_deadline_after(&ts, RUNS_SLICE_MS);
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
        }
        pthread_mutex_unlock(&r->lock);
        if (beat) {
            static const char text[] = ": heartbeat\n\n";
            size_t n = sizeof text - 1 < max ? sizeof text - 1 : max;
            memcpy(buf, text, n);
            return (ssize_t)n;
        }
    }
    size_t n = f->len - f->sent < max ? f->len - f->sent : max;
    memcpy(buf, f->pending + f->sent, n);
    f->sent += n;
    if (f->sent == f->len) {
        free(f->pending);
        f->pending = NULL;
        f->len = f->sent = 0;
    }
    return (ssize_t)n;
}

int srv_h_runs_events(sreq *r)
{
    const char *last = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID");
    const char *follow = srv_req_query(r, "follow");
    uint64_t after = 0;
    if (last) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(last, &end, 10);
        if (errno || *end || !*last || last[0] == '-')
            return srv_reply_problem(r, 400, "invalid_request", "Last-Event-ID must be a non-negative integer");
        after = v;
    }
    if (follow && strcmp(follow, "true") != 0 && strcmp(follow, "false") != 0)
        return srv_reply_problem(r, 400, "invalid_request", "?follow= must be true or false");
    run *x = find_run(r);
    if (!x)
        return MHD_YES;
    char dir[4096], path[4096];
    int fd = srv_runs_dir(x, dir, sizeof dir) == 0 && util_path(path, sizeof path, NULL, "%s/events.jsonl", dir) >= 0
                 ? open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                 : -1;
    run_follow *f = fd >= 0 ? calloc(1, sizeof *f) : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        srv_runs_put(x);
        return srv_reply_problem(r, fd < 0 ? 404 : 500, fd < 0 ? "not_found" : "internal",
                             fd < 0 ? "the events of run %s are gone" : "out of memory (run %s)", srv_router_param(&r->m, "id"));
    }
    f->r = x;
    f->fd = fd;
    f->after = after;
    f->follow = !follow || strcmp(follow, "false") != 0;
    snprintf(f->token_id, sizeof f->token_id, "%s", r->tok.id);
    return srv_reply_event_stream(r, follow_read, f, follow_free);
}

/* ---- cells of runs, start and stop ---------------------------------------------------------- */
json_t *srv_runs_cell_run(srv *s, const char *cell_id)
{
    (void)s;
    json_t *id = NULL;
    pthread_mutex_lock(&runs_lock);
    for (run *x = runs_list; x && !id; x = x->next) {
        pthread_mutex_lock(&x->lock);
        if (x->cell_id[0] && strcmp(x->cell_id, cell_id) == 0)
            id = json_string(x->id);
        pthread_mutex_unlock(&x->lock);
    }
    pthread_mutex_unlock(&runs_lock);
    return id;
}

static run *run_from_row(srv *s, const store_run *row)
{
    run *x = run_new(s, row->id, row->tenant);
    if (!x)
        return NULL;
    x->spec = json_loads(row->spec, 0, NULL);
    if (row->timings) {
        json_t *t = json_loads(row->timings, 0, NULL);
        if (json_is_object(t)) {
            json_decref(x->timings);
            x->timings = t;
        } else {
            json_decref(t);
        }
    }
    if (!json_is_object(x->spec)) {
        run_free(x);
        return NULL;
    }
    snprintf(x->token_id, sizeof x->token_id, "%s", row->token);
    snprintf(x->cell_id, sizeof x->cell_id, "%.12s", row->cell);
    x->created_ms = row->created;
    priv(x)->started_ms = row->started;
    priv(x)->finished_ms = row->finished;
    if (status_parse(row->status, &x->status) < 0 || !terminal(x->status))
        x->status = RUN_FAILED;
    json_t *resumed = json_object_get(json_object_get(x->spec, "resume"), "run");
    if (json_is_string(resumed))
        snprintf(priv(x)->resumed_from, sizeof priv(x)->resumed_from, "%s", json_string_value(resumed));
    x->result = json_object();     /* the store's, without the diff: read on demand */
    priv(x)->result_stripped = 1;
    return x;
}

/* At start: uploads cut short by the stop or expired, and run
 * directories without a record (a crash between the record and its
 * files) go. */
static void sweep_state(srv *s)
{
    char dir[4096], path[4096];
    if (util_path(dir, sizeof dir, NULL, "%s/runs", s->state_dir) < 0)
        return;
    DIR *d = opendir(dir);
    for (struct dirent *de; d && (de = readdir(d));) {
        if (de->d_name[0] == '.' || util_path(path, sizeof path, NULL, "%s/%s", dir, de->d_name) < 0)
            continue;
        if (strcmp(de->d_name, "uploads") == 0) {
            DIR *u = opendir(path);
            for (struct dirent *t; u && (t = readdir(u));) {
                char tdir[4096];
                if (t->d_name[0] != '.' && util_path(tdir, sizeof tdir, NULL, "%s/%s", path, t->d_name) >= 0)
                    uploads_sweep(tdir, 1);
            }
            if (u)
                closedir(u);
            continue;
        }
        run *x = valid_id(de->d_name) ? runs_lookup(NULL, de->d_name) : NULL;
        if (x)
            srv_runs_put(x);
        else if (valid_id(de->d_name) && util_rm_rf(path, NULL) < 0)
            srv_slog(SLOG_WARN, NULL, "could not remove %s", path);
    }
    if (d)
        closedir(d);
}

int srv_runs_start(srv *s, cell_error *err)
{
    json_t *res = json_pack("{s:n, s:s, s:n, s:n, s:s, s:I, s:b, s:[], s:[], s:I, s:{s:s, s:s}}", "exitCode",
                            "output", "", "sessionId", "usage", "diff", "", "diffBytes", (json_int_t)0,
                            "diffTruncated", 0, "changedFiles", "artifacts", "durationMs", (json_int_t)0, "error",
                            "type", "daemon_restarted", "message", "the daemon stopped while the run went on");
    char *text = dump(res);
    json_decref(res);
    size_t marked = 0, n = 0;
    store_run *rows = NULL;
    int rc = text ? store_runs_mark_failed(s->st, text, &marked, err) : util_fail(err, ENOMEM, "out of memory");
    free(text);
    if (rc < 0 || store_run_list(s->st, &rows, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {     /* oldest first: each goes in front */
        run *x = run_from_row(s, &rows[i]);
        if (!x)
            continue;
        /* The result, without its diff, for listings. */
        store_run whole;
        if (store_run_get(s->st, x->id, &whole, NULL) == 0 && whole.result) {
            json_t *res1 = json_loads(whole.result, 0, NULL);
            if (json_is_object(res1)) {
                json_object_del(res1, "diff");
                json_decref(x->result);
                x->result = res1;
            } else {
                json_decref(res1);
            }
        }
        store_run_free(&whole);
        priv(x)->listed = 1;
        x->next = runs_list;
        runs_list = x;
    }
    store_run_list_free(rows, n);
    sweep_state(s);
    if (marked)
        srv_slog(SLOG_WARN, NULL, "%zu runs were going when the daemon stopped: marked failed", marked);
    return 0;
}

/* Ask every run to stop and wait for their drivers (they hold cells and
 * the server). */
void srv_runs_shutdown(srv *s)
{
    (void)s;
    pthread_mutex_lock(&runs_lock);
    for (run *x = runs_list; x; x = x->next) {
        pthread_mutex_lock(&x->lock);
        x->cancel = 1;
        pthread_cond_broadcast(&x->cond);
        pthread_mutex_unlock(&x->lock);
    }
    while (runs_drivers > 0)
        pthread_cond_wait(&runs_cond, &runs_lock);
    pthread_mutex_unlock(&runs_lock);
}

void srv_runs_free_all(void)
{
    for (;;) {
        pthread_mutex_lock(&runs_lock);
        run *x = runs_list;
        if (x) {
            x->refs++;
            unlist_locked(x);
        }
        pthread_mutex_unlock(&runs_lock);
        if (!x)
            break;
        srv_runs_put(x);
    }
}
