/* registry.c: the daemon's cells in memory: lookup with references, boot and
 * halt, one watcher thread per running cell for process exits, the ttl reaper. */
#include "server/agentkeys.h"
#include "server/server_internal.h"
#include "server/agents.h"
#include "server/desktop.h"
#include "server/slog.h"
#include "runtime/runtime.h"
#include "runtime/vfs.h"

#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>

/* ---- references and states ------------------------------------------------------ */
static void scell_free(scell *sc)
{
    srv_desktop_free(sc);               /* drops its references to the processes first */
    srv_procs_free_all(sc);
    json_decref(sc->spec);
    json_decref(sc->policy);
    pthread_mutex_destroy(&sc->io);
    pthread_mutex_destroy(&sc->plock);
    pthread_mutex_destroy(&sc->ulock);
    pthread_cond_destroy(&sc->pcond);
    pthread_cond_destroy(&sc->state_cond);
    free(sc);
}

scell *srv_registry_add(srv *s, const char *id, const char *tenant, json_t *spec, int64_t created_ms, int creating)
{
    scell *sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    sc->s = s;
    snprintf(sc->id, sizeof sc->id, "%s", id);
    snprintf(sc->tenant, sizeof sc->tenant, "%s", tenant);
    /* Copies, not references: jansson's reference counts are not safe to
     * share between threads (json_incref reads the count unlocked), so the
     * cell's JSON is its own and only read by others. */
    sc->spec = json_deep_copy(spec);
    json_t *policy = json_object_get(spec, "policy");
    sc->policy = json_is_object(policy) ? json_deep_copy(policy) : NULL;
    if (!sc->spec || (json_is_object(policy) && !sc->policy)) {
        json_decref(sc->spec);
        json_decref(sc->policy);
        free(sc);
        return NULL;
    }
    atomic_store(&sc->policy_screened, json_is_true(json_object_get(spec, "policyScreened")));
    sc->state = creating ? SCELL_CREATING : SCELL_STOPPED;
    sc->created_ms = created_ms;
    sc->wake_fd = -1;
    atomic_store(&sc->active_ms, srv_now_ms());
    pthread_mutex_init(&sc->io, NULL);
    pthread_mutex_init(&sc->plock, NULL);
    pthread_mutex_init(&sc->ulock, NULL);
    pthread_cond_init(&sc->pcond, NULL);
    pthread_cond_init(&sc->state_cond, NULL);
    srv_procs_config_default(&sc->pconf, &s->opt.limits);
    sc->refs = 2;                   /* the list's and the caller's */
    pthread_mutex_lock(&s->lock);
    sc->next = s->cells;
    s->cells = sc;
    pthread_mutex_unlock(&s->lock);
    return sc;
}

scell *srv_registry_get(srv *s, const char *tenant, const char *id)
{
    pthread_mutex_lock(&s->lock);
    scell *sc = s->cells;
    while (sc && (sc->state >= SCELL_DELETING || strcmp(sc->id, id) != 0 ||
                  (tenant && strcmp(sc->tenant, tenant) != 0)))
        sc = sc->next;
    if (sc)
        sc->refs++;
    pthread_mutex_unlock(&s->lock);
    return sc;
}

void srv_registry_put(scell *sc)
{
    if (!sc)
        return;
    srv *s = sc->s;
    pthread_mutex_lock(&s->lock);
    int last = --sc->refs == 0;
    pthread_mutex_unlock(&s->lock);
    if (last)
        scell_free(sc);
}

/* Unlink from the list (srv.lock held); the caller drops the list's reference. */
static void unlink_locked(scell *sc)
{
    for (scell **p = &sc->s->cells; *p; p = &(*p)->next)
        if (*p == sc) {
            *p = sc->next;
            return;
        }
}

static const char *const state_names[] = {
    [SCELL_CREATING] = "creating", [SCELL_BOOTING] = "booting", [SCELL_RUNNING] = "running",
    [SCELL_STOPPING] = "stopping", [SCELL_STOPPED] = "stopped", [SCELL_DELETING] = "deleting",
    [SCELL_DELETED] = "deleted",
};

const char *srv_registry_state_name(enum scell_state st)
{
    return (unsigned)st < sizeof state_names / sizeof state_names[0] ? state_names[st] : "unknown";
}

enum scell_state srv_registry_state(scell *sc)
{
    pthread_mutex_lock(&sc->s->lock);
    enum scell_state st = sc->state;
    pthread_mutex_unlock(&sc->s->lock);
    return st;
}

static int transitional(enum scell_state st)
{
    return st == SCELL_CREATING || st == SCELL_BOOTING || st == SCELL_STOPPING || st == SCELL_DELETING;
}

/* End a transition: the one thread that began it sets the settled state. */
static void settle(scell *sc, enum scell_state st)
{
    pthread_mutex_lock(&sc->s->lock);
    sc->state = st;
    pthread_cond_broadcast(&sc->state_cond);
    pthread_mutex_unlock(&sc->s->lock);
}

/* Begin a transition from one of the states in `from` (a bit mask) to `to`.
 * With `wait`, a transition in progress is waited out first.  Returns 0 with
 * the state set, or -1: ENOENT once deleting, EBUSY naming the state. */
static int begin(scell *sc, unsigned from, enum scell_state to, int wait, cell_error *err)
{
    srv *s = sc->s;
    pthread_mutex_lock(&s->lock);
    while (wait && transitional(sc->state) && sc->state != SCELL_DELETING)
        pthread_cond_wait(&sc->state_cond, &s->lock);
    enum scell_state st = sc->state;
    int ok = (from & (1u << st)) != 0;
    /* Nothing boots once the daemon stops: it could not be halted any more. */
    int shutting = to == SCELL_BOOTING && atomic_load(&s->stopping);
    if (ok && !shutting) {
        sc->state = to;
        pthread_cond_broadcast(&sc->state_cond);
    }
    pthread_mutex_unlock(&s->lock);
    if (ok && !shutting)
        return 0;
    if (st >= SCELL_DELETING)
        return util_fail(err, ENOENT, "cell %s", sc->id);
    if (shutting)
        return util_fail(err, EBUSY, "cell %s: the daemon is shutting down", sc->id);
    if (st == SCELL_RUNNING)
        return util_fail(err, EBUSY, "cell %s is already running", sc->id);
    return util_fail(err, EBUSY, "cell %s is %s; retry when it is running or stopped", sc->id,
                     srv_registry_state_name(st));
}

/* What the cell runs: the client's policy composed with the spec's agent
 * rules (agentkeys.c), built anew for every boot and catch-up. */
json_t *srv_registry_policy(scell *sc)
{
    pthread_mutex_lock(&sc->io);
    json_t *p = srv_agentkeys_policy(sc->spec, sc->policy);
    pthread_mutex_unlock(&sc->io);
    return p;
}

/* ---- the control channel -------------------------------------------------------- */
static void drain_exits(scell *sc)
{
    cell_exit ex;
    cell_error e;
    int r;
    while (sc->c && !sc->dead && (r = cell_wait_exit(sc->c, 0, &ex, &e)) != 0) {
        if (r < 0) {
            sc->dead = 1;           /* the cell died on its own; the reaper halts it */
            pthread_cond_signal(&sc->s->reaper_cond);
            break;
        }
        srv_procs_on_exit(sc, ex.pid, ex.status);
    }
}

void srv_scell_io_lock(scell *sc) { pthread_mutex_lock(&sc->io); }

void srv_scell_io_unlock(scell *sc)
{
    drain_exits(sc);
    pthread_mutex_unlock(&sc->io);
}

int srv_registry_running(scell *sc)
{
    pthread_mutex_lock(&sc->io);
    int running = sc->c && !sc->dead;
    pthread_mutex_unlock(&sc->io);
    return running;
}

/* One thread per running cell sleeps on its control socket: exits arrive
 * there whenever a process ends, with no request in flight to read them. */
static void *watcher_main(void *arg)
{
    scell *sc = arg;
    for (;;) {
        pthread_mutex_lock(&sc->io);
        int fd = sc->c && !sc->dead ? cell_event_fd(sc->c) : -1;
        pthread_mutex_unlock(&sc->io);
        if (fd < 0)
            return NULL;
        struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = sc->wake_fd, .events = POLLIN } };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        if (p[1].revents)
            return NULL;
        srv_scell_io_lock(sc);
        srv_scell_io_unlock(sc);        /* unlock drains */
    }
}

/* ---- boot and halt ------------------------------------------------------------- */
typedef struct boot_config {
    cell_config cfg;
    cell_mount  mounts[16 + 1];     /* the client's and the agent cache */
    char       *policy;             /* owned */
    /* mounts[i].mask of the spec (strings borrowed from it) */
    struct runtime_masks masks[16 + 1];
    const char *mask_paths[16][RUNTIME_MAX_MASKS];
} boot_config;

static uint64_t spec_u64(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static const char *spec_str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void spec_to_config(json_t *spec, json_t *policy, boot_config *b)
{
    memset(b, 0, sizeof *b);
    b->cfg.image = spec_str(spec, "image");
    b->cfg.lane = spec_str(spec, "laneId");
    b->cfg.hostname = spec_str(spec, "hostname");
    json_t *res = json_object_get(spec, "resources");
    b->cfg.limits.memory = spec_u64(res, "memory");
    b->cfg.limits.pids = (uint32_t)spec_u64(res, "pids");
    b->cfg.limits.cpu_millis = (uint32_t)spec_u64(res, "cpuMillis");
    b->cfg.limits.disk = spec_u64(res, "disk");
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(spec, "mounts"), i, m) {
        const char *type = spec_str(m, "type");
        /* Lane mounts are vfs mounts, opened at boot (laneview.c). */
        if (type && strcmp(type, "lane") == 0)
            continue;
        size_t k = b->cfg.n_mounts;
        if (k >= sizeof b->mounts / sizeof b->mounts[0])
            break;
        cell_mount *cm = &b->mounts[k];
        cm->kind = type && strcmp(type, "bind") == 0      ? CELL_MOUNT_BIND
                   : type && strcmp(type, "overlay") == 0 ? CELL_MOUNT_OVERLAY
                                                          : CELL_MOUNT_MEMORY;
        cm->source = spec_str(m, "source");
        cm->target = spec_str(m, "target");
        cm->readonly = json_is_true(json_object_get(m, "readonly"));
        cm->size = spec_u64(m, "size");
        size_t j;
        json_t *v;
        json_array_foreach(json_object_get(m, "mask"), j, v) {
            if (j >= RUNTIME_MAX_MASKS)
                break;
            b->mask_paths[k][j] = json_string_value(v);
            b->masks[k] = (struct runtime_masks){ b->mask_paths[k], j + 1 };
        }
        b->cfg.n_mounts = k + 1;
    }
    /* Last, so that it sits above a client's mount of /opt: the agent
     * cache, read-only; installs add directories that show up here. */
    if (srv_agents_cache_root()[0])
        b->mounts[b->cfg.n_mounts++] = (cell_mount){ .kind = CELL_MOUNT_BIND, .source = srv_agents_cache_root(),
                                                     .target = AGENTS_CACHE_TARGET, .readonly = 1 };
    b->cfg.mounts = b->mounts;
    if (json_is_object(policy) && (b->policy = json_dumps(policy, JSON_COMPACT))) {
        b->cfg.policy = b->policy;
        b->cfg.net_event = srv_egress_event;
        b->cfg.net_decide = srv_egress_decide;
        b->cfg.net_secret = srv_egress_secret;
    }
}

struct boot_job {
    srv *s;
    const cell_config *cfg;
    const struct runtime_masks *masks;
    scell *sc;                          /* lane mounts: its spec's, opened for it (NULL: none) */
    struct laneviews *views;
    cell *c;
    cell_error *err;
    int rc;
};

static void boot_on_owner(void *arg)
{
    struct boot_job *job = arg;
    struct runtime_vfs_spec vfs[16];
    size_t n_vfs = 0;
    pthread_mutex_lock(&job->s->ctx_lock);
    job->rc = job->sc ? srv_laneview_open(job->s, job->sc->tenant, job->sc->spec, vfs, &n_vfs, &job->views, job->err)
                      : 0;
    if (job->rc == 0)
        job->rc = runtime_cell_create_vfs(job->s->ctx, job->cfg, job->masks, vfs, n_vfs, &job->c, job->err);
    if (job->rc < 0) {
        srv_laneview_close(job->views);
        job->views = NULL;
    }
    pthread_mutex_unlock(&job->s->ctx_lock);
}

/* Cells die with the thread that booted them (cell-init's parent-death
 * signal), so every cell of the daemon boots on its main thread. */
/* With masks[i] for cfg->mounts[i] (runtime_cell_create). */
static int registry_cell_create_masked(srv *s, const cell_config *cfg, const struct runtime_masks *masks, cell **out,
                                       cell_error *err)
{
    struct boot_job job = { .s = s, .cfg = cfg, .masks = masks, .err = err };
    srv_on_owner_thread(s, boot_on_owner, &job);
    *out = job.c;
    return job.rc;
}

int srv_registry_cell_create(srv *s, const cell_config *cfg, cell **out, cell_error *err)
{
    return registry_cell_create_masked(s, cfg, NULL, out, err);
}

void srv_registry_cell_destroy(srv *s, cell *c)
{
    pthread_mutex_lock(&s->ctx_lock);
    cell_destroy(c);
    pthread_mutex_unlock(&s->ctx_lock);
}

/* The warm pool boots its cells here, so that a pooled cell is what boot()
 * would make of the same spec. */
int srv_registry_cell_create_spec(srv *s, json_t *spec, cell **out, cell_error *err)
{
    boot_config b;
    spec_to_config(spec, NULL, &b);
    b.cfg.upstream_ca_file = s->opt.upstream_ca_file;
    return registry_cell_create_masked(s, &b.cfg, b.masks, out, err);
}

/* A PUT .../policy that landed while the cell booted stored a policy the
 * boot did not see, and found no handle to apply it to: apply it before
 * the handle is used (io held), or the cell would run with the old one.
 * EPERM: booted without a network, the new policy applies from the next
 * start, as PUT says. */
static int catch_up_policy(scell *sc, json_t *booted_with, cell_error *err)
{
    json_t *now = sc->policy ? srv_agentkeys_policy(sc->spec, sc->policy) : NULL;
    if (!now || json_equal(now, booted_with)) {
        json_decref(now);
        return 0;
    }
    char *text = json_dumps(now, JSON_COMPACT);
    json_decref(now);
    cell_error e = { 0 };
    int rc = text ? cell_set_policy(sc->c, text, &e) : util_fail(&e, ENOMEM, "out of memory");
    free(text);
    if (rc < 0 && e.code != EPERM) {
        *err = e;
        return -1;
    }
    return 0;
}

/* Boot the cell from its spec; the caller holds the booting state, so no
 * other transition runs, and io is taken only to publish the handle.  A
 * create (`warm`) takes a pooled cell when one boots exactly this spec. */
static int boot(scell *sc, int warm, cell_error *err)
{
    srv *s = sc->s;
    boot_config b;
    json_t *policy = srv_registry_policy(sc);
    spec_to_config(sc->spec, policy, &b);
    b.cfg.net_user = sc;
    b.cfg.upstream_ca_file = s->opt.upstream_ca_file;
    /* A pooled cell has no lane mounts. */
    int views = srv_laneview_count(sc->spec) > 0;
    cell *c = warm && !views ? srv_pool_take(s, sc->spec, policy != NULL) : NULL;
    struct boot_job job = { .s = s, .cfg = &b.cfg, .masks = b.masks, .sc = views ? sc : NULL, .err = err };
    if (!c) {
        srv_on_owner_thread(s, boot_on_owner, &job);
        c = job.c;
    }
    int rc = c ? 0 : -1;
    free(b.policy);
    if (rc < 0) {
        json_decref(policy);
        return -1;
    }
    int wake_fd = eventfd(0, EFD_CLOEXEC);
    if (wake_fd < 0) {
        util_fail_errno(err, "eventfd for cell %s", sc->id);
        goto fail;
    }
    pthread_mutex_lock(&sc->io);
    sc->c = c;
    if (catch_up_policy(sc, policy, err) < 0) {
        sc->c = NULL;
        pthread_mutex_unlock(&sc->io);
        goto fail;
    }
    sc->dead = 0;
    sc->wake_fd = wake_fd;
    sc->started_ms = srv_now_ms();
    int pe = pthread_create(&sc->watcher, NULL, watcher_main, sc);
    if (pe != 0) {
        sc->c = NULL;
        sc->wake_fd = -1;
        pthread_mutex_unlock(&sc->io);
        errno = pe;
        util_fail_errno(err, "thread for cell %s", sc->id);
        goto fail;
    }
    sc->watcher_on = 1;
    sc->views = job.views;
    pthread_mutex_unlock(&sc->io);
    json_decref(policy);
    atomic_store(&sc->active_ms, srv_now_ms());
    store_cell_set_state(s->st, sc->id, "running", NULL);
    return 0;
fail:
    json_decref(policy);
    if (wake_fd >= 0)
        close(wake_fd);
    srv_registry_cell_destroy(s, c);
    srv_laneview_close(job.views);
    return -1;
}

/* Kill the cell and everything in it; processes are marked exited.  The
 * caller holds the stopping or deleting state.  Requests that use the handle
 * hold io, so once `c` is cleared under io none of them still uses it. */
static void halt(scell *sc)
{
    srv *s = sc->s;
    pthread_mutex_lock(&sc->io);
    cell *c = sc->c;
    sc->c = NULL;
    sc->dead = 0;
    if (c && sc->wake_fd >= 0) {
        uint64_t one = 1;
        if (write(sc->wake_fd, &one, sizeof one) < 0) { /* the watcher also stops on c == NULL */ }
    }
    int watcher_on = sc->watcher_on;
    sc->watcher_on = 0;
    struct laneviews *views = sc->views;
    sc->views = NULL;
    pthread_mutex_unlock(&sc->io);
    if (!c)
        return;
    if (watcher_on)
        pthread_join(sc->watcher, NULL);
    close(sc->wake_fd);
    sc->wake_fd = -1;
    srv_registry_cell_destroy(s, c);
    srv_laneview_close(views);      /* after the cell: its vfs servers are stopped */
    srv_procs_on_halt(sc);
    store_cell_set_state(s->st, sc->id, "stopped", NULL);
}

#define FROM(st) (1u << (st))

static int boot_from(scell *sc, enum scell_state from, cell_error *err)
{
    if (begin(sc, FROM(from), SCELL_BOOTING, 0, err) < 0)
        return -1;
    int rc = boot(sc, from == SCELL_CREATING, err);
    settle(sc, rc == 0 ? SCELL_RUNNING : SCELL_STOPPED);
    return rc;
}

/* Only the creator leaves creating: settle it as stopped, or a delete
 * would wait for ever. */
static void leave_creating(scell *sc)
{
    pthread_mutex_lock(&sc->s->lock);
    if (sc->state == SCELL_CREATING) {
        sc->state = SCELL_STOPPED;
        pthread_cond_broadcast(&sc->state_cond);
    }
    pthread_mutex_unlock(&sc->s->lock);
}

int srv_registry_create_boot(scell *sc, cell_error *err)
{
    if (boot_from(sc, SCELL_CREATING, err) == 0)
        return 0;
    leave_creating(sc);             /* refused before booting: the daemon stops */
    return -1;
}

void srv_registry_create_abort(scell *sc)
{
    leave_creating(sc);
    srv_registry_delete(sc, 1, NULL);
}

int srv_registry_start(scell *sc, cell_error *err) { return boot_from(sc, SCELL_STOPPED, err); }

int srv_registry_stop(scell *sc, int wait, cell_error *err)
{
    if (begin(sc, FROM(SCELL_RUNNING) | FROM(SCELL_STOPPED), SCELL_STOPPING, wait, err) < 0)
        return -1;
    halt(sc);
    settle(sc, SCELL_STOPPED);
    return 0;
}

int srv_registry_delete(scell *sc, int wait, cell_error *err)
{
    if (begin(sc, FROM(SCELL_RUNNING) | FROM(SCELL_STOPPED), SCELL_DELETING, wait, err) < 0)
        return -1;
    halt(sc);
    /* The record goes before the list entry: quotas count the cell until
     * nothing of it is left. */
    int rc = store_cell_delete(sc->s->st, sc->id, err);
    pthread_mutex_lock(&sc->s->lock);
    sc->state = SCELL_DELETED;
    pthread_cond_broadcast(&sc->state_cond);
    unlink_locked(sc);
    pthread_mutex_unlock(&sc->s->lock);
    srv_registry_put(sc);               /* the list's reference */
    return rc;
}

/* ---- usage for quotas ------------------------------------------------------------ */
void srv_registry_usage(srv *s, const char *tenant, size_t *cells, uint64_t *memory)
{
    *cells = 0;
    *memory = 0;
    pthread_mutex_lock(&s->lock);
    for (scell *sc = s->cells; sc; sc = sc->next) {
        if (strcmp(sc->tenant, tenant) != 0)
            continue;
        (*cells)++;
        *memory += spec_u64(json_object_get(sc->spec, "resources"), "memory");
    }
    pthread_mutex_unlock(&s->lock);
}

/* ---- the reaper -------------------------------------------------------------------
 * Once a second: halt cells whose init died, delete cells idle past their
 * ttl.  Idle means no request and no running process. */
static int has_running_process(scell *sc)
{
    int any = 0;
    pthread_mutex_lock(&sc->plock);
    for (sproc *p = sc->procs; p && !any; p = p->next)
        any = !p->exited;
    pthread_mutex_unlock(&sc->plock);
    return any;
}

static void reap_one(srv *s, scell *sc, int64_t now)
{
    pthread_mutex_lock(&sc->io);
    int dead = sc->dead;
    int running = sc->c != NULL;
    pthread_mutex_unlock(&sc->io);
    /* Never wait: a cell in a transition is looked at again next second. */
    if (dead) {
        if (srv_registry_stop(sc, 0, NULL) < 0)
            return;
        json_t *rec = json_pack("{s:s, s:s, s:s}", "kind", "cell", "tenant", sc->tenant, "cell", sc->id);
        json_object_set_new(rec, "event", json_string("died"));
        store_audit_append(s->st, rec);
        json_decref(rec);
        return;
    }
    int64_t ttl = (int64_t)spec_u64(sc->spec, "ttl");
    if (!ttl || !running)
        return;
    if (has_running_process(sc))
        atomic_store(&sc->active_ms, now);
    if (now - atomic_load(&sc->active_ms) < ttl * 1000)
        return;
    if (srv_registry_delete(sc, 0, NULL) < 0)
        return;
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:I}", "kind", "cell", "tenant", sc->tenant,
                            "cell", sc->id, "event", "reaped", "ttl", (json_int_t)ttl);
    store_audit_append(s->st, rec);
    json_decref(rec);
}

static void *reaper_main(void *arg)
{
    srv *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!atomic_load(&s->stopping)) {
        struct timespec ts;
        srv_deadline_after(&ts, 1000);
        pthread_cond_timedwait(&s->reaper_cond, &s->lock, &ts);
        if (atomic_load(&s->stopping))
            break;
        /* Take references, then work without the list lock. */
        size_t n = 0;
        for (scell *sc = s->cells; sc; sc = sc->next)
            n++;
        scell **all = calloc(n ? n : 1, sizeof *all);
        if (!all)
            continue;
        n = 0;
        for (scell *sc = s->cells; sc; sc = sc->next, n++) {
            all[n] = sc;
            sc->refs++;
        }
        pthread_mutex_unlock(&s->lock);
        /* Creates are answered before they are on disk; this bounds what a
         * power loss can take to about a second of them (store.h). */
        if (store_flush(s->st) < 0)
            srv_slog(SLOG_ERROR, NULL, "syncing cell.db's WAL: %s", strerror(errno));
        int64_t now = srv_now_ms();
        for (size_t i = 0; i < n; i++) {
            reap_one(s, all[i], now);
            srv_registry_put(all[i]);
        }
        free(all);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- start and stop ---------------------------------------------------------------- */
/* A lane row left in "creating" or "deleting" by a crash: finish deleting it,
 * since its creator never answered the client. */
static void recover_lanes(srv *s)
{
    store_lane *lanes = NULL;
    size_t n = 0;
    if (store_lanes_unfinished(s->st, &lanes, &n, NULL) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        cell_error e;
        if (cell_lane_delete(s->ctx, lanes[i].id, &e) < 0 && e.code != ENOENT) {
            srv_slog(SLOG_WARN, SLOG_F("lane", lanes[i].id), "lane %s (%s) left unfinished: %s", lanes[i].name, lanes[i].id,
                 e.message);
            continue;
        }
        store_lane_delete(s->st, lanes[i].id, NULL);
    }
    free(lanes);
}

int srv_registry_load(srv *s, cell_error *err)
{
    size_t stopped = 0, n = 0;
    store_cell *cells = NULL;
    /* cell-init dies with its daemon link, so after a crash nothing of a
     * cell is left running: its record becomes "stopped", its lane stays. */
    if (store_cells_mark_stopped(s->st, &stopped, err) < 0)
        return -1;
    srv_lanes_start(s);
    recover_lanes(s);
    if (store_cell_list(s->st, NULL, &cells, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *spec = json_loads(cells[i].spec ? cells[i].spec : "{}", 0, NULL);
        scell *sc = spec ? srv_registry_add(s, cells[i].id, cells[i].tenant, spec, cells[i].created, 0) : NULL;
        json_decref(spec);
        srv_registry_put(sc);
    }
    store_cell_list_free(cells, n);
    if (stopped && !s->opt.quiet)
        srv_slog(SLOG_INFO, NULL, "%zu cell(s) were running when the daemon last stopped; they are now stopped", stopped);
    int pe = pthread_create(&s->reaper, NULL, reaper_main, s);
    if (pe != 0) {
        errno = pe;
        return util_fail_errno(err, "reaper thread");
    }
    s->reaper_started = 1;
    return 0;
}

/* Halt every cell and wake everything waiting on one; the list itself is
 * freed after the HTTP threads are gone.  Safe to call twice. */
void srv_registry_shutdown(srv *s)
{
    srv_pool_stop(s);
    pthread_mutex_lock(&s->lock);
    int first = s->reaper_cond_used == 0;
    s->reaper_cond_used = 1;
    pthread_cond_broadcast(&s->reaper_cond);
    pthread_mutex_unlock(&s->lock);
    if (first && s->reaper_started)
        pthread_join(s->reaper, NULL);
    for (;;) {
        pthread_mutex_lock(&s->lock);
        scell *sc = s->cells;
        while (sc && sc->halted_at_shutdown)
            sc = sc->next;
        if (sc) {
            sc->halted_at_shutdown = 1;
            sc->refs++;
        }
        pthread_mutex_unlock(&s->lock);
        if (!sc)
            break;
        srv_registry_stop(sc, 0, NULL);  /* a cell in a transition is left to it: boots are refused now */
        pthread_mutex_lock(&sc->plock);
        pthread_cond_broadcast(&sc->pcond);
        pthread_mutex_unlock(&sc->plock);
        srv_registry_put(sc);
    }
}

/* After the HTTP threads are gone: nothing holds a reference or runs a
 * transition any more. */
void srv_registry_free(srv *s)
{
    for (;;) {
        pthread_mutex_lock(&s->lock);
        scell *sc = s->cells;
        if (sc)
            unlink_locked(sc);
        pthread_mutex_unlock(&s->lock);
        if (!sc)
            break;
        halt(sc);                   /* one whose boot ended after srv_registry_shutdown */
        srv_registry_put(sc);
    }
}
