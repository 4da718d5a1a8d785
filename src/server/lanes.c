/* lanes.c: /v1/lanes (tenant-named lanes over host-unique runtime lanes,
 * export and import as tar streams) and POST /v1/images/{name}/build (with
 * progress; listing, import and removal are images.c's). */
#include "server/handlers.h"
#include "server/stream.h"
#include "server/slog.h"
#include "runtime/image_meta.h"
#include "runtime/runtime.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>

static pthread_mutex_t quota_lock = PTHREAD_MUTEX_INITIALIZER;

void srv_lanes_quota_hold(void)
{
    pthread_mutex_lock(&quota_lock);
}

void srv_lanes_quota_release(void)
{
    pthread_mutex_unlock(&quota_lock);
}

void srv_lanes_start(srv *s)
{
    runtime_lane_daemon_mode();
    store_lane *lanes = NULL;
    size_t n = 0;
    cell_error e = { 0 };
    if (store_lane_list(s->st, NULL, &lanes, &n, &e) < 0) {
        srv_slog(SLOG_WARN, NULL, "cannot list lanes to mark them as the daemon's: %s", e.message);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(lanes[i].state, "ready") == 0 &&
            runtime_lane_mark_owner(s->ctx, lanes[i].id, lanes[i].tenant, lanes[i].name, &e) < 0 && e.code != ENOENT)
            srv_slog(SLOG_WARN, SLOG_F("lane", lanes[i].id), "cannot mark lane %s as the daemon's: %s", lanes[i].id,
                 e.message);
    free(lanes);
}

/* A lane made through the API without a size gets this much, or what is
 * left of its tenant's disk quota if that is less: every API lane is sized,
 * so the quota counts declared sizes and the filesystem enforces them. */
#define LANE_DEFAULT_SIZE (1ull << 30)

/* Runtime messages name the host-unique lane id: show the tenant's name
 * instead, and say which quota a full lane comes from. */
static int lane_reply_error(sreq *r, const store_lane *l, const cell_error *e)
{
    cell_error out = { .code = e->code };
    const char *m = e->message;
    size_t o = 0, idlen = strlen(l->id);
    while (*m && o + 1 < sizeof out.message) {
        if (idlen && strncmp(m, l->id, idlen) == 0) {
            o += (size_t)snprintf(out.message + o, sizeof out.message - o, "%s", l->name);
            m += idlen;
        } else {
            out.message[o++] = *m++;
        }
    }
    if (o >= sizeof out.message)
        o = sizeof out.message - 1;
    out.message[o] = '\0';
    if (e->code == ENOSPC || e->code == EFBIG)
        snprintf(out.message + o, sizeof out.message - o, " (lane %s is %llu bytes, counted against quota \"disk\"; "
                 "give a larger \"size\" if the quota allows)", l->name, (unsigned long long)l->size);
    return srv_reply_error(r, &out);
}

static json_t *lane_json(srv *s, const store_lane *l)
{
    cell_lane_info info;
    cell_error e;
    pthread_mutex_lock(&s->ctx_lock);
    int ok = cell_lane_get(s->ctx, l->id, &info, &e) == 0;
    pthread_mutex_unlock(&s->ctx_lock);
    return json_pack("{s:s, s:s, s:I, s:I, s:b}", "name", l->name, "image", l->image, "size", (json_int_t)l->size,
                     "createdAtMs", (json_int_t)l->created, "attached", ok && info.attached);
}

static int find_lane(sreq *r, store_lane *out)
{
    const char *name = srv_router_param(&r->m, "name");
    cell_error e = { 0 };
    srv_req_audit(r, "lane", json_string(name));
    if (store_lane_get(r->s->st, r->tok.tenant, name, out, &e) < 0 || strcmp(out->state, "ready") != 0) {
        if (e.code && e.code != ENOENT)
            return srv_reply_error(r, &e), -1;
        return srv_reply_problem(r, 404, "not_found", "lane %s", name), -1;
    }
    return 0;
}

/* Reserve a lane row in "creating" state after the quota check; the caller
 * makes the runtime lane and marks the row ready (or deletes it). */
static int reserve_lane(sreq *r, const char *name, const char *image, uint64_t size, store_lane *l)
{
    if (!srv_images_visible(r, image)) /* not shared with the tenant: as unknown (images.c) */
        return srv_reply_problem(r, 400, "invalid_request", "field \"image\": unknown image '%s'", image), -1;
    if (!util_valid_name(name))
        return srv_reply_problem(r, 400, "invalid_request", "lane name \"%s\": use 1-63 of A-Z a-z 0-9 _ . - "
                             "not starting with '.' or '-'", name), -1;
    if (size && size < CELL_LANE_MIN_SIZE)
        return srv_reply_problem(r, 400, "invalid_request", "field \"size\" must be at least 16M (or omitted for the "
                             "default)"), -1;
    if (srv_limits_check(r, "size", size, r->s->opt.limits.lane_size, "lane.size") < 0)
        return -1;
    store_tenant t;
    cell_error e = { 0 };
    if (store_tenant_ensure(r->s->st, r->tok.tenant, &e) < 0 || store_tenant_get(r->s->st, r->tok.tenant, &t, &e) < 0)
        return srv_reply_error(r, &e), -1;
    pthread_mutex_lock(&quota_lock);
    size_t count = 0;
    uint64_t total = 0;
    int rc = store_lane_count(r->s->st, r->tok.tenant, &count, &total, &e);
    uint64_t images = rc == 0 ? srv_images_tenant_bytes(r->s, r->tok.tenant) : 0;
    total += images;    /* the tenant's images share its disk quota */
    if (rc == 0 && count + 1 > t.max_lanes) {
        pthread_mutex_unlock(&quota_lock);
        return srv_reply_problem(r, 403, "quota_exceeded", "tenant %s: quota \"lanes\" is %u and %zu exist",
                             t.name, t.max_lanes, count), -1;
    }
    uint64_t left = rc == 0 && total < t.max_disk ? t.max_disk - total : 0;
    if (rc == 0 && !size) {
        size = left < LANE_DEFAULT_SIZE ? left : LANE_DEFAULT_SIZE;
        if (r->s->opt.limits.lane_size && size > r->s->opt.limits.lane_size)
            size = r->s->opt.limits.lane_size;
    }
    if (rc == 0 && (size > left || size < CELL_LANE_MIN_SIZE)) {
        pthread_mutex_unlock(&quota_lock);
        return srv_reply_problem(r, 403, "quota_exceeded", "tenant %s: quota \"disk\" is %llu bytes, lanes and images "
                             "hold %llu (images %llu) and this lane needs %llu (at least 16M)", t.name,
                             (unsigned long long)t.max_disk, (unsigned long long)total, (unsigned long long)images,
                             (unsigned long long)(size ? size : CELL_LANE_MIN_SIZE)), -1;
    }
    memset(l, 0, sizeof *l);
    char hex[17];
    util_random_hex(hex, 8);
    snprintf(l->id, sizeof l->id, "l-%s", hex);
    snprintf(l->tenant, sizeof l->tenant, "%s", r->tok.tenant);
    snprintf(l->name, sizeof l->name, "%s", name);
    snprintf(l->image, sizeof l->image, "%s", image);
    snprintf(l->state, sizeof l->state, "creating");
    l->size = size;
    l->created = srv_now_ms();
    if (rc == 0)
        rc = store_lane_insert(r->s->st, l, &e);
    pthread_mutex_unlock(&quota_lock);
    if (rc < 0) {
        if (e.code == EEXIST)
            return srv_reply_problem(r, 409, "conflict", "lane %s already exists", name), -1;
        return srv_reply_error(r, &e), -1;
    }
    return 0;
}

int srv_h_lanes_create(sreq *r)
{
    json_t *body;
    const char *name = NULL, *image = "host";
    uint64_t size = 0;
    if (srv_req_json(r, &body) < 0)
        return MHD_YES;
    store_lane l;
    if (srv_req_check_fields(r, body, "", "name", "image", "size", NULL) < 0 ||
        srv_json_get_str(r, body, "name", 1, &name) < 0 || srv_json_get_str(r, body, "image", 0, &image) < 0 ||
        srv_json_get_size(r, body, "size", &size) < 0 || reserve_lane(r, name, image, size, &l) < 0) {
        json_decref(body);
        return MHD_YES;
    }
    json_decref(body);
    cell_error e = { 0 };
    pthread_mutex_lock(&r->s->ctx_lock);
    int rc = runtime_lane_set_owner(r->s->ctx, l.tenant, l.name, &e);
    if (rc == 0)
        rc = cell_lane_create_sized(r->s->ctx, l.id, l.image, l.size, &e);
    runtime_lane_set_owner(r->s->ctx, NULL, NULL, NULL);
    pthread_mutex_unlock(&r->s->ctx_lock);
    if (rc < 0 || store_lane_set_state(r->s->st, l.id, "ready", &e) < 0) {
        pthread_mutex_lock(&r->s->ctx_lock);
        cell_lane_delete(r->s->ctx, l.id, NULL);
        pthread_mutex_unlock(&r->s->ctx_lock);
        store_lane_delete(r->s->st, l.id, NULL);
        if (e.code == ENOENT)   /* the runtime's "unknown image" */
            return srv_reply_problem(r, 400, "invalid_request", "field \"image\": %s", e.message);
        return lane_reply_error(r, &l, &e);
    }
    snprintf(l.state, sizeof l.state, "ready");
    return srv_reply_json(r, 201, lane_json(r->s, &l));
}

int srv_h_lanes_list(sreq *r)
{
    store_lane *lanes = NULL;
    size_t n = 0;
    cell_error e = { 0 };
    if (store_lane_list(r->s->st, r->tok.tenant, &lanes, &n, &e) < 0)
        return srv_reply_error(r, &e);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        if (strcmp(lanes[i].state, "ready") == 0)
            json_array_append_new(arr, lane_json(r->s, &lanes[i]));
    free(lanes);
    return srv_reply_json(r, 200, json_pack("{s:o}", "lanes", arr));
}

int srv_h_lanes_get(sreq *r)
{
    store_lane l;
    if (find_lane(r, &l) < 0)
        return MHD_YES;
    return srv_reply_json(r, 200, lane_json(r->s, &l));
}

/* The cell of this tenant whose spec names the lane, if any. */
static int lane_user(srv *s, const char *tenant, const char *lane_id, char *cell_id, size_t size)
{
    int found = 0;
    pthread_mutex_lock(&s->lock);
    for (scell *sc = s->cells; sc && !found; sc = sc->next) {
        const char *id = json_string_value(json_object_get(sc->spec, "laneId"));
        if (strcmp(sc->tenant, tenant) == 0 && id && strcmp(id, lane_id) == 0) {
            snprintf(cell_id, size, "%s", sc->id);
            found = 1;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

/* Lane deletes run one at a time: a DELETE that comes while another one
 * of the same lane is under way must see how it ended (gone: 404; given
 * back because a cell uses it: the same 409), not the "deleting" state in
 * between.  The runtime's delete already holds ctx_lock, so this costs no
 * concurrency that was there. */
static pthread_mutex_t delete_lock = PTHREAD_MUTEX_INITIALIZER;

static int lane_delete_locked(sreq *r)
{
    store_lane l;
    if (find_lane(r, &l) < 0)
        return MHD_YES;
    /* Marked first, cells looked for second; a cell create on the lane is
     * listed first and checks the lane second (cells.c), so one of the two
     * sees the other and a cell never boots on a lane being deleted. */
    char user[24];
    cell_error e = { 0 };
    /* From "ready" only, in one statement (as srv_registry_delete's transition
     * for cells): whatever else changed the lane since find_lane, one
     * DELETE moves it, and a lane not ready any more is a 404.  Setting it
     * unconditionally let two concurrent DELETEs both answer 204. */
    if (store_lane_transition(r->s->st, l.id, "ready", "deleting", &e) < 0)
        return e.code == ENOENT ? srv_reply_problem(r, 404, "not_found", "lane %s", l.name) : srv_reply_error(r, &e);
    if (lane_user(r->s, r->tok.tenant, l.id, user, sizeof user)) {
        store_lane_transition(r->s->st, l.id, "deleting", "ready", NULL);
        return srv_reply_problem(r, 409, "conflict", "lane %s is used by cell %s; delete that cell first", l.name, user);
    }
    pthread_mutex_lock(&r->s->ctx_lock);
    int rc = cell_lane_delete(r->s->ctx, l.id, &e);
    pthread_mutex_unlock(&r->s->ctx_lock);
    if (rc < 0 && e.code != ENOENT) {
        store_lane_transition(r->s->st, l.id, "deleting", "ready", NULL);
        return lane_reply_error(r, &l, &e);
    }
    if (store_lane_delete(r->s->st, l.id, &e) < 0)
        return srv_reply_error(r, &e);
    return srv_reply_empty(r, 204);
}

int srv_h_lanes_delete(sreq *r)
{
    pthread_mutex_lock(&delete_lock);
    int ret = lane_delete_locked(r);
    pthread_mutex_unlock(&delete_lock);
    return ret;
}

/* ---- export: a worker with its own context writes the tar into a pipe ------ */
typedef struct lane_job {
    char state_dir[4096];
    char id[40];
    char tenant[64], name[64];   /* the daemon lane's owner (import) */
    char image[64];
    uint64_t size;               /* import: the lane's size */
    int  fd;                     /* import: the pipe's read end */
    int  lock_fd;                /* export: the lane's shared lock, held until the tar is written */
    cell_error err;
    int  rc;
} lane_job;

static int export_run(int fd, void *arg)
{
    lane_job *job = arg;
    cell_ctx *ctx = NULL;
    int rc = cell_ctx_open(&ctx, job->state_dir, &job->err);
    if (rc == 0) {
        rc = cell_lane_export(ctx, job->id, fd, &job->err);
        if (rc < 0)
            srv_slog(SLOG_ERROR, SLOG_F("lane", job->id), "export of lane %s failed: %s", job->id, job->err.message);
        cell_ctx_close(ctx);
    }
    return rc;
}

static void export_free(void *arg)
{
    lane_job *job = arg;
    if (job->lock_fd >= 0)
        close(job->lock_fd);
    free(job);
}

int srv_h_lanes_export(sreq *r)
{
    store_lane l;
    if (find_lane(r, &l) < 0)
        return MHD_YES;
    /* The lane's shared lock is taken here and held by the job until the
     * tar is written: the client gets a status (409 naming the holder), not
     * an empty tar, and no cell attaches (nor a delete or commit starts)
     * between this check and the worker's walk. */
    lane_job *job = calloc(1, sizeof *job);
    if (!job)
        return srv_reply_problem(r, 500, "internal", "out of memory");
    char dir[PATH_MAX];
    cell_error e = { 0 };
    pthread_mutex_lock(&r->s->ctx_lock);
    int rc = runtime_lane_lock(r->s->ctx, l.id, LOCK_SH, NULL, dir, sizeof dir, &job->lock_fd, &e);
    pthread_mutex_unlock(&r->s->ctx_lock);
    if (rc < 0) {
        free(job);
        char user[24];
        /* The runtime knows its own cell ids: name the tenant's. */
        if (e.code == EBUSY && lane_user(r->s, r->tok.tenant, l.id, user, sizeof user))
            return srv_reply_problem(r, 409, "conflict", "lane %s is attached to cell %s; stop that cell first", l.name,
                                 user);
        return lane_reply_error(r, &l, &e);
    }
    snprintf(job->state_dir, sizeof job->state_dir, "%s", r->s->state_dir);
    snprintf(job->id, sizeof job->id, "%s", l.id);
    struct MHD_Response *resp = srv_stream_from_job(r, export_run, job, export_free, &e);
    if (!resp)
        return srv_reply_error(r, &e);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-tar");
    return srv_reply_response(r, 200, resp);
}

/* ---- commit: the lane flattened over its image into a new image ------------ */
static json_t *committed_json(srv *s, const char *image, const store_lane *l)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/images/%s/image.json", s->state_dir, image);
    json_t *meta = json_load_file(path, 0, NULL);
    json_t *o = json_pack("{s:s, s:s, s:O?, s:O?, s:s}", "name", image, "lane", l->name, "digest",
                          json_object_get(meta, "digest"), "size", json_object_get(meta, "size"), "source", "commit");
    json_decref(meta);
    return o;
}

/* POST /v1/lanes/{name}/commit {"image": NAME}.  The runtime takes the
 * lane's lock for the whole commit, so a cell cannot attach meanwhile, and
 * refuses an attached lane; a cell of the tenant that names the lane but
 * is stopped is refused here too, as for delete. */
int srv_h_lanes_commit(sreq *r)
{
    json_t *body;
    const char *image = NULL;
    if (srv_req_json(r, &body) < 0)
        return MHD_YES;
    if (srv_req_check_fields(r, body, "", "image", NULL) < 0 || srv_json_get_str(r, body, "image", 1, &image) < 0) {
        json_decref(body);
        return MHD_YES;
    }
    char name[64];
    snprintf(name, sizeof name, "%s", image);
    int too_long = strlen(image) >= sizeof name;
    json_decref(body);
    if (too_long || !util_valid_name(name))
        return srv_reply_problem(r, 400, "invalid_request", "field \"image\": use 1-63 of A-Z a-z 0-9 _ . - not "
                             "starting with '.' or '-'");
    srv_req_audit(r, "image", json_string(name));
    store_lane l;
    if (find_lane(r, &l) < 0)
        return MHD_YES;
    char user[24];
    if (lane_user(r->s, r->tok.tenant, l.id, user, sizeof user))
        return srv_reply_problem(r, 409, "conflict", "lane %s is used by cell %s; delete that cell first", l.name, user);
    /* The image holds the tenant's files: its image.json names the tenant,
     * which alone sees it (images.c) unless the operator shares it, from
     * the moment it exists; it counts against the tenant's disk quota. */
    uint64_t left = 0;
    if (srv_images_quota_before(r, name, &left) < 0)
        return MHD_YES;
    /* A context of its own: a commit copies a tree and must not hold the
     * shared context's lock meanwhile. */
    cell_error e = { 0 };
    cell_ctx *ctx = NULL;
    int rc = cell_ctx_open(&ctx, r->s->state_dir, &e);
    if (rc == 0) {
        rc = runtime_image_commit_owned(ctx, l.id, name, r->tok.tenant, &e);
        cell_ctx_close(ctx);
    }
    if (rc < 0)
        return lane_reply_error(r, &l, &e);
    if (srv_images_quota_after(r, name) < 0)
        return MHD_YES;
    return srv_reply_json(r, 201, committed_json(r->s, name, &l));
}

/* ---- GET /v1/images/{name}/export: the OCI layout tar, written by a worker - */
static int image_export_run(int fd, void *arg)
{
    lane_job *job = arg;
    cell_ctx *ctx = NULL;
    int rc = cell_ctx_open(&ctx, job->state_dir, &job->err);
    if (rc == 0) {
        rc = cell_image_export(ctx, job->image, fd, &job->err);
        if (rc < 0)
            srv_slog(SLOG_ERROR, SLOG_F("image", job->image), "export of image %s failed: %s", job->image, job->err.message);
        cell_ctx_close(ctx);
    }
    return rc;
}

int srv_h_images_export(sreq *r)
{
    const char *name = srv_router_param(&r->m, "name");
    srv_req_audit(r, "image", json_string(name));
    /* Checked before the stream starts, so the client gets a status rather
     * than a cut-off tar; an image hidden from the tenant is unknown. */
    cell_error e = { 0 };
    pthread_mutex_lock(&r->s->ctx_lock);
    int st = util_valid_name(name) ? cell_image_status(r->s->ctx, name, &e) : -1;
    pthread_mutex_unlock(&r->s->ctx_lock);
    if (st != 1 || !srv_images_visible(r, name))
        return srv_reply_problem(r, 404, "not_found", "image %s (see GET /v1/images)", name);
    if (strcmp(name, "host") == 0)
        return srv_reply_problem(r, 400, "invalid_request", "image host is this host's /usr with a generated /etc; "
                             "it cannot be exported");
    lane_job *job = calloc(1, sizeof *job);
    if (!job)
        return srv_reply_problem(r, 500, "internal", "out of memory");
    snprintf(job->state_dir, sizeof job->state_dir, "%s", r->s->state_dir);
    snprintf(job->image, sizeof job->image, "%s", name);
    struct MHD_Response *resp = srv_stream_from_job(r, image_export_run, job, free, &e);
    if (!resp)
        return srv_reply_error(r, &e);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-tar");
    return srv_reply_response(r, 200, resp);
}

/* ---- import: the body streams into a pipe a worker reads the tar from ------- */
typedef struct import_state {
    store_lane lane;
    int        wfd;
    pthread_t  worker;
    int        worker_on;
    lane_job   job;
} import_state;

static void *import_main(void *arg)
{
    lane_job *job = arg;
    cell_ctx *ctx = NULL;
    job->rc = -1;
    if (cell_ctx_open(&ctx, job->state_dir, &job->err) == 0) {
        if (runtime_lane_set_owner(ctx, job->tenant, job->name, &job->err) == 0)
            job->rc = cell_lane_import_sized(ctx, job->id, job->image, job->size, job->fd, &job->err);
        cell_ctx_close(ctx);
    }
    close(job->fd);
    job->fd = -1;
    return NULL;
}

static void import_abandon(sreq *r, import_state *st);

/* An import that did not finish (refused body, client gone) leaves no lane
 * behind; a finished one has cleared lane.id. */
static void import_free(sreq *r)
{
    import_state *st = r->stream;
    if (!st)
        return;
    import_abandon(r, st);
    if (st->job.fd >= 0)
        close(st->job.fd);
    free(st);
    r->stream = NULL;
}

static import_state *import_begin(sreq *r)
{
    const char *name = srv_router_param(&r->m, "name");
    const char *image = srv_req_query(r, "image");
    import_state *st = calloc(1, sizeof *st);
    if (!st)
        return srv_reply_problem(r, 500, "internal", "out of memory"), NULL;
    st->wfd = st->job.fd = -1;
    r->stream = st;
    r->stream_free = import_free;
    srv_req_audit(r, "lane", json_string(name));
    const char *size_text = srv_req_query(r, "size");
    uint64_t size = 0;
    cell_error se = { 0 };
    if (size_text && cell_parse_size(size_text, &size, &se) < 0)
        return srv_reply_problem(r, 400, "invalid_request", "query parameter \"size\": %s", se.message), NULL;
    if (reserve_lane(r, name, image ? image : "host", size, &st->lane) < 0)
        return NULL;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        cell_error e;
        util_fail_errno(&e, "pipe");
        return srv_reply_error(r, &e), NULL;
    }
    st->job.fd = fds[0];
    st->wfd = fds[1];
    snprintf(st->job.state_dir, sizeof st->job.state_dir, "%s", r->s->state_dir);
    snprintf(st->job.id, sizeof st->job.id, "%s", st->lane.id);
    snprintf(st->job.tenant, sizeof st->job.tenant, "%s", st->lane.tenant);
    snprintf(st->job.name, sizeof st->job.name, "%s", st->lane.name);
    snprintf(st->job.image, sizeof st->job.image, "%s", st->lane.image);
    st->job.size = st->lane.size;
    if (pthread_create(&st->worker, NULL, import_main, &st->job) != 0)
        return srv_reply_problem(r, 500, "internal", "could not start the import worker"), NULL;
    st->worker_on = 1;
    return st;
}

static void import_abandon(sreq *r, import_state *st)
{
    if (st->wfd >= 0) {
        close(st->wfd);
        st->wfd = -1;
    }
    if (st->worker_on) {
        pthread_join(st->worker, NULL);
        st->worker_on = 0;
    }
    if (st->lane.id[0]) {
        pthread_mutex_lock(&r->s->ctx_lock);
        cell_lane_delete(r->s->ctx, st->lane.id, NULL);
        pthread_mutex_unlock(&r->s->ctx_lock);
        store_lane_delete(r->s->st, st->lane.id, NULL);
        st->lane.id[0] = '\0';
    }
}

int srv_h_lanes_import_body(sreq *r, const char *data, size_t len)
{
    import_state *st = r->stream;
    if (!st && !(st = import_begin(r))) {
        if (r->stream)
            import_abandon(r, r->stream);
        return -1;
    }
    if (st->wfd >= 0 && util_write_all(st->wfd, data, len) < 0) {
        /* The worker stopped reading: it failed; its error is reported at the end. */
        close(st->wfd);
        st->wfd = -1;
    }
    return 0;
}

int srv_lanes_import_fd(sreq *r, const char *name, const char *image, int fd, store_lane *out)
{
    store_lane l;
    if (reserve_lane(r, name, image, 0, &l) < 0)
        return -1;
    cell_ctx *ctx = NULL;
    cell_error e = { 0 };
    int rc = cell_ctx_open(&ctx, r->s->state_dir, &e);
    if (rc == 0) {
        rc = runtime_lane_set_owner(ctx, l.tenant, l.name, &e);
        if (rc == 0)
            rc = cell_lane_import_sized(ctx, l.id, l.image, l.size, fd, &e);
        cell_ctx_close(ctx);
    }
    if (rc == 0)
        rc = store_lane_set_state(r->s->st, l.id, "ready", &e);
    if (rc < 0) {
        pthread_mutex_lock(&r->s->ctx_lock);
        cell_lane_delete(r->s->ctx, l.id, NULL);
        pthread_mutex_unlock(&r->s->ctx_lock);
        store_lane_delete(r->s->st, l.id, NULL);
        return lane_reply_error(r, &l, &e), -1;
    }
    snprintf(l.state, sizeof l.state, "ready");
    *out = l;
    return 0;
}

int srv_h_lanes_import(sreq *r)
{
    import_state *st = r->stream;
    if (!st) {
        srv_reply_problem(r, 400, "invalid_request", "the body must be a tar stream (Content-Type: application/x-tar)");
        return MHD_YES;
    }
    if (st->wfd >= 0) {
        close(st->wfd);
        st->wfd = -1;
    }
    pthread_join(st->worker, NULL);
    st->worker_on = 0;
    cell_error e = st->job.err;
    if (st->job.rc < 0 || store_lane_set_state(r->s->st, st->lane.id, "ready", &e) < 0) {
        store_lane lane = st->lane;
        import_abandon(r, st);
        return lane_reply_error(r, &lane, &e);
    }
    snprintf(st->lane.state, sizeof st->lane.state, "ready");
    store_lane done = st->lane;
    st->lane.id[0] = '\0';
    return srv_reply_json(r, 201, lane_json(r->s, &done));
}

/* ---- image builds (the rest of /v1/images: images.c) ------------------------ */
static json_t *image_json(srv *s, const char *name)
{
    cell_error e;
    pthread_mutex_lock(&s->ctx_lock);
    int st = cell_image_status(s->ctx, name, &e);
    pthread_mutex_unlock(&s->ctx_lock);
    if (st < 0)
        return NULL;
    return json_pack("{s:s, s:b}", "name", name, "ready", st == 1);
}

/* Build progress goes out as server-sent events: "progress" per line, then
 * "done" or "error" (with a problem object). */
static void sse_write(int fd, const char *event, json_t *data)
{
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!text)
        return;
    char *frame;
    int n = asprintf(&frame, "event: %s\ndata: %s\n\n", event, text);
    free(text);
    if (n > 0) {
        if (util_write_all(fd, frame, (size_t)n) < 0) { /* client gone: the build goes on */ }
        free(frame);
    }
}

typedef struct build_job {
    char state_dir[4096];
    char name[64];
    int  fd;
} build_job;

static void build_progress(void *user, const char *line)
{
    build_job *job = user;
    sse_write(job->fd, "progress", json_pack("{s:s}", "line", line));
}

/* A failed build is told in the stream (an "error" event): the stream
 * itself is whole. */
static int build_run(int fd, void *arg)
{
    build_job *job = arg;
    cell_ctx *ctx = NULL;
    cell_error e = { 0 };
    job->fd = fd;
    if (cell_ctx_open(&ctx, job->state_dir, &e) == 0 && cell_image_build(ctx, job->name, build_progress, job, &e) == 0)
        sse_write(fd, "done", json_pack("{s:s, s:b}", "name", job->name, "ready", 1));
    else
        sse_write(fd, "error", json_pack("{s:s, s:s, s:i, s:s}", "type", "urn:sandbox-agent:error:build_failed",
                                         "title", "Image build failed", "status", 500, "detail", e.message));
    cell_ctx_close(ctx);
    return 0;
}

int srv_h_images_build(sreq *r)
{
    const char *name = srv_router_param(&r->m, "name");
    json_t *o = image_json(r->s, name);
    if (!o)
        return srv_reply_problem(r, 404, "not_found", "image %s; known images: host, debian-bookworm, desktop", name);
    json_decref(o);
    build_job *job = calloc(1, sizeof *job);
    if (!job)
        return srv_reply_problem(r, 500, "internal", "out of memory");
    snprintf(job->state_dir, sizeof job->state_dir, "%s", r->s->state_dir);
    snprintf(job->name, sizeof job->name, "%s", name);
    cell_error e = { 0 };
    struct MHD_Response *resp = srv_stream_from_job(r, build_run, job, free, &e);
    if (!resp)
        return srv_reply_error(r, &e);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return srv_reply_response(r, 200, resp);
}
