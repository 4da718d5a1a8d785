/* pool.c: the warm pool: cells booted ahead of requests, one template per
 * image, refilled by one thread off the request path.  A create whose spec
 * boots what a template boots (its image, the default memory and disk, no
 * policy, no lane, no mounts but the agent cache) takes a ready cell
 * instead of booting one, renamed and its pids and CPU limits set when it
 * asks for others; any other create boots cold.
 *
 * A pooled cell belongs to no tenant and never had one: it enters the pool
 * once, straight from its boot, and leaves it once, to one create (or to
 * cell_destroy at shutdown).  Nothing ever puts a cell back: the cell a
 * tenant had is destroyed when that cell stops or is deleted (registry.c). */
#include "server/agents.h"
#include "server/server_internal.h"
#include "server/slog.h"

#include <stdio.h>
#include <string.h>

#define POOL_MAX_TEMPLATES (1 + 8)  /* the default image and up to 8 of --warm IMAGE=N */
#define POOL_RETRY_MS      5000     /* after a failed boot or an image not built yet */
/* A refill waits this long after the last take while a cell is still
 * ready: a boot (clone, mounts, cgroups) beside the taker's first requests
 * slowed its first run by half on a loaded 2-CPU host.  An empty pool
 * refills at once: the next create would boot cold otherwise. */
#define POOL_REFILL_DELAY_MS 50

typedef struct pool_tpl {
    char     image[64];
    unsigned size;                  /* cells kept ready */
    cell    *ready[SERVER_WARM_MAX];
    unsigned n_ready;
    int64_t  retry_ms;              /* no boot before this */
    int      failing;               /* a failure was logged; said again once one boots */
    int      warmed;                /* filled to its size once, or a boot failed (/readyz) */
} pool_tpl;

/* One daemon per process: module state, as agents.c and egress.c keep. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t  cond;           /* the refill thread: a cell was taken, or stop */
    pool_tpl        tpl[POOL_MAX_TEMPLATES];
    size_t          n_tpl;
    /* Every template's resources, as cells.c normalizes a create's (cpu and
     * disk 0); plain numbers: jansson's reference counts are not thread-safe. */
    json_int_t      memory, pids;
    int             open;           /* configured and not stopped: cells may fit */
    uint64_t        taken, empty, unfit, booted, failed;
    int64_t         quiet_ms;       /* no refill before this (the last take + POOL_REFILL_DELAY_MS) */
    int             stop, started;
    pthread_t       thread;
} pool = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

int srv_warm_parse(const char *text, char *image, size_t size, unsigned *n, cell_error *err)
{
    const char *eq = strchr(text, '=');
    const char *num = eq ? eq + 1 : text;
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(num, &end, 10);
    if (errno || end == num || *end || num[0] == '-' || v > SERVER_WARM_MAX)
        return util_fail(err, EINVAL, "--warm %s: expected N or IMAGE=N with N from 0 to %d", text, SERVER_WARM_MAX);
    size_t len = eq ? (size_t)(eq - text) : strlen(SERVER_DEFAULT_WARM_IMAGE);
    if (len >= size || len >= sizeof pool.tpl[0].image)
        return util_fail(err, EINVAL, "--warm %s: image name too long", text);
    memcpy(image, eq ? text : SERVER_DEFAULT_WARM_IMAGE, len);
    image[len] = '\0';
    if (!util_valid_name(image))
        return util_fail(err, EINVAL, "--warm %s: '%s' is no image name", text, image);
    *n = (unsigned)v;
    return 0;
}

/* The templates from --warm; a later setting of an image replaces an
 * earlier one.  pool.lock held: request threads already look at them. */
static int pool_configure(srv *s, cell_error *err)
{
    const server_options *o = &s->opt;
    pool.n_tpl = 1;
    snprintf(pool.tpl[0].image, sizeof pool.tpl[0].image, "%s", SERVER_DEFAULT_WARM_IMAGE);
    pool.tpl[0].size = SERVER_DEFAULT_WARM;
    for (size_t i = 0; o->warm && o->warm[i]; i++) {
        char image[64];
        unsigned n;
        if (srv_warm_parse(o->warm[i], image, sizeof image, &n, err) < 0)
            return -1;
        size_t j = 0;
        while (j < pool.n_tpl && strcmp(pool.tpl[j].image, image) != 0)
            j++;
        if (j == POOL_MAX_TEMPLATES)
            return util_fail(err, EINVAL, "--warm: at most %d images", POOL_MAX_TEMPLATES);
        if (j == pool.n_tpl)
            snprintf(pool.tpl[pool.n_tpl++].image, sizeof pool.tpl[0].image, "%s", image);
        pool.tpl[j].size = n;
    }
    uint64_t memory, pids;
    srv_cells_default_resources(&o->limits, &memory, &pids);
    pool.memory = (json_int_t)memory;
    pool.pids = (json_int_t)pids;
    pool.open = 1;
    return 0;
}

/* A new object each time: the caller owns it alone. */
static json_t *pool_resources_json(void)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "memory", pool.memory, "pids", pool.pids, "cpuMillis", (json_int_t)0,
                     "disk", (json_int_t)0);
}

/* ---- filling ---------------------------------------------------------------------- */
/* Boot one cell of the template, as registry.c boots a create's spec. */
static int pool_boot(srv *s, const char *image, cell **out, cell_error *err)
{
    pthread_mutex_lock(&s->ctx_lock);
    int ready = cell_image_status(s->ctx, image, err);
    pthread_mutex_unlock(&s->ctx_lock);
    if (ready <= 0)
        return ready < 0 ? -1 : util_fail(err, ENOENT, "image %s is not built", image);
    json_t *spec = json_pack("{s:s, s:o}", "image", image, "resources", pool_resources_json());
    if (!spec)
        return util_fail(err, ENOMEM, "out of memory");
    int rc = srv_registry_cell_create_spec(s, spec, out, err);
    json_decref(spec);
    return rc;
}

/* pool.lock held: the first template short of its size that may boot now. */
static pool_tpl *pool_wanting(int64_t now)
{
    for (size_t i = 0; i < pool.n_tpl; i++) {
        pool_tpl *t = &pool.tpl[i];
        if (t->n_ready < t->size && t->retry_ms <= now && (!t->n_ready || now >= pool.quiet_ms))
            return t;
    }
    return NULL;
}

/* pool.lock held: file a boot's outcome.  Returns a cell the pool cannot
 * keep (the daemon stops), for the caller to destroy without the lock. */
static cell *pool_settle(pool_tpl *t, cell *c, const cell_error *e)
{
    if (!c) {
        pool.failed++;
        t->warmed = 1;              /* creates boot cold meanwhile: not worth waiting for */
        t->retry_ms = srv_now_ms() + POOL_RETRY_MS;
        if (!t->failing && e->code != ENOENT)
            srv_slog(SLOG_WARN, SLOG_F("image", t->image), "warm pool: cannot boot a cell of image %s (retrying every %d s): %s",
                 t->image, POOL_RETRY_MS / 1000, e->message);
        t->failing = e->code != ENOENT;
        return NULL;
    }
    if (pool.stop)
        return c;
    if (t->failing)
        srv_slog(SLOG_INFO, SLOG_F("image", t->image), "warm pool: image %s boots again", t->image);
    t->failing = 0;
    t->ready[t->n_ready++] = c;
    t->warmed |= t->n_ready == t->size;
    pool.booted++;
    return NULL;
}

static void *pool_main(void *arg)
{
    srv *s = arg;
    pthread_mutex_lock(&pool.lock);
    while (!pool.stop) {
        int64_t now = srv_now_ms();
        pool_tpl *t = pool_wanting(now);
        if (!t) {
            /* Woken by a take; the timeout ends the quiet time after one
             * and retries templates that failed. */
            struct timespec ts;
            srv_deadline_after(&ts, now < pool.quiet_ms ? pool.quiet_ms - now : 1000);
            pthread_cond_timedwait(&pool.cond, &pool.lock, &ts);
            continue;
        }
        char image[64];
        snprintf(image, sizeof image, "%s", t->image);
        pthread_mutex_unlock(&pool.lock);
        cell *c = NULL;
        cell_error e = { 0 };
        if (pool_boot(s, image, &c, &e) < 0)
            c = NULL;
        pthread_mutex_lock(&pool.lock);
        cell *spare = pool_settle(t, c, &e);
        if (spare) {
            pthread_mutex_unlock(&pool.lock);
            srv_registry_cell_destroy(s, spare);
            pthread_mutex_lock(&pool.lock);
        }
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

int srv_pool_start(srv *s, cell_error *err)
{
    pthread_mutex_lock(&pool.lock);
    int rc = pool_configure(s, err);
    unsigned total = 0;
    for (size_t i = 0; rc == 0 && i < pool.n_tpl; i++)
        total += pool.tpl[i].size;
    pthread_mutex_unlock(&pool.lock);
    if (rc < 0 || !total)
        return rc;
    int pe = pthread_create(&pool.thread, NULL, pool_main, s);
    if (pe != 0) {
        errno = pe;
        return util_fail_errno(err, "warm pool thread");
    }
    pool.started = 1;
    return 0;
}

/* Stop filling and destroy every ready cell.  Safe to call twice. */
void srv_pool_stop(srv *s)
{
    pthread_mutex_lock(&pool.lock);
    pool.stop = 1;
    pool.open = 0;                  /* nothing fits any more */
    pthread_cond_broadcast(&pool.cond);
    int started = pool.started;
    pool.started = 0;
    pthread_mutex_unlock(&pool.lock);
    if (started)
        pthread_join(pool.thread, NULL);
    for (;;) {
        cell *c = NULL;
        pthread_mutex_lock(&pool.lock);
        for (size_t i = 0; i < pool.n_tpl && !c; i++)
            if (pool.tpl[i].n_ready)
                c = pool.tpl[i].ready[--pool.tpl[i].n_ready];
        pthread_mutex_unlock(&pool.lock);
        if (!c)
            break;
        srv_registry_cell_destroy(s, c);
    }
}

/* ---- taking ----------------------------------------------------------------------- */
/* A hostname libcell takes (1-63 of [A-Za-z0-9-], no '-' at either end);
 * the API also allows dots, which a cold boot then refuses as before. */
static json_int_t resource(json_t *res, const char *key)
{
    return json_integer_value(json_object_get(res, key));
}

/* pool.lock held: the template that boots what `spec` asks for.  Memory is
 * the template's or nothing: it also sized the throwaway layer (3/4 of it). */
static pool_tpl *pool_fit(json_t *spec)
{
    json_t *mounts = json_object_get(spec, "mounts"), *hostname = json_object_get(spec, "hostname");
    json_t *res = json_object_get(spec, "resources");
    if (!pool.open || json_object_get(spec, "laneId") || (mounts && json_array_size(mounts) > 0) ||
        (hostname && !srv_cells_valid_hostname(json_string_value(hostname))) ||
        resource(res, "memory") != pool.memory || resource(res, "disk") != 0)
        return NULL;
    const char *image = json_string_value(json_object_get(spec, "image"));
    for (size_t i = 0; image && i < pool.n_tpl; i++)
        if (pool.tpl[i].size && strcmp(pool.tpl[i].image, image) == 0)
            return &pool.tpl[i];
    return NULL;
}

/* A pooled cell only waited: any message or a hang-up on its control
 * channel means its init is gone.  Then it gets the create's pids and CPU
 * limits and hostname (a cell booted without one is named after its
 * libcell id, as a cold one). */
static int pool_finish(cell *c, json_t *spec, json_int_t pool_pids)
{
    cell_exit ex;
    cell_error e;
    if (cell_wait_exit(c, 0, &ex, &e) != 0)
        return -1;
    json_t *res = json_object_get(spec, "resources");
    json_int_t pids = resource(res, "pids"), cpu = resource(res, "cpuMillis");
    const char *hostname = json_string_value(json_object_get(spec, "hostname"));
    if (((pids != pool_pids || cpu) && cell_set_pids_cpu(c, (uint32_t)pids, (uint32_t)cpu, &e) < 0) ||
        (hostname && cell_set_hostname(c, hostname, &e) < 0)) {
        srv_slog(SLOG_WARN, NULL, "warm pool: %s", e.message);
        return -2;
    }
    return 0;
}

cell *srv_pool_take(srv *s, json_t *spec, int has_policy)
{
    for (;;) {
        cell *c = NULL;
        pthread_mutex_lock(&pool.lock);
        json_int_t pool_pids = pool.pids;
        pool_tpl *t = has_policy ? NULL : pool_fit(spec);
        if (!t)
            pool.unfit++;
        else if (t->n_ready)
            c = t->ready[--t->n_ready];
        else
            pool.empty++;
        if (c) {
            pool.quiet_ms = srv_now_ms() + POOL_REFILL_DELAY_MS;
            pthread_cond_signal(&pool.cond);
        }
        pthread_mutex_unlock(&pool.lock);
        if (!c)
            return NULL;
        int rc = pool_finish(c, spec, pool_pids);
        pthread_mutex_lock(&pool.lock);
        if (rc == 0)
            pool.taken++;
        else
            pool.failed++;
        pthread_mutex_unlock(&pool.lock);
        if (rc == 0)
            return c;
        srv_registry_cell_destroy(s, c);
        if (rc == -2)               /* not the cell's fault: the next would fail alike */
            return NULL;
    }
}

int srv_pool_image_ready(const char *image)
{
    int ready = 0;
    pthread_mutex_lock(&pool.lock);
    for (size_t i = 0; image && i < pool.n_tpl && !ready; i++)
        ready = pool.tpl[i].n_ready && strcmp(pool.tpl[i].image, image) == 0;
    pthread_mutex_unlock(&pool.lock);
    return ready;
}

int srv_pool_warmed(void)
{
    int warmed = 1;
    pthread_mutex_lock(&pool.lock);
    for (size_t i = 0; i < pool.n_tpl; i++)
        warmed &= pool.tpl[i].size == 0 || pool.tpl[i].warmed;
    pthread_mutex_unlock(&pool.lock);
    return warmed;
}

json_t *srv_pool_json(void)
{
    json_t *tpls = json_array();
    pthread_mutex_lock(&pool.lock);
    for (size_t i = 0; tpls && i < pool.n_tpl; i++)
        json_array_append_new(tpls, json_pack("{s:s, s:I, s:I}", "image", pool.tpl[i].image, "size",
                                              (json_int_t)pool.tpl[i].size, "ready", (json_int_t)pool.tpl[i].n_ready));
    json_t *o = json_pack("{s:o*, s:o*, s:I, s:I, s:I, s:I, s:I}", "templates", tpls, "resources",
                          pool.open ? pool_resources_json() : NULL,
                          "taken", (json_int_t)pool.taken, "empty", (json_int_t)pool.empty, "unfit",
                          (json_int_t)pool.unfit, "booted", (json_int_t)pool.booted, "bootFailures",
                          (json_int_t)pool.failed);
    pthread_mutex_unlock(&pool.lock);
    return o;
}
