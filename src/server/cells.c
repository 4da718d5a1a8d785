/* cells.c: /v1/cells: create (validate, check quotas, record, boot), list,
 * get, stop, start, delete.  The record is durable before the cell boots. */
#include "server/agentkeys.h"
#include "server/handlers.h"
#include "server/metrics.h"
#include "server/slog.h"
#include "server/runs.h"
#include "runtime/runtime.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEFAULT_CELL_MEMORY (512ull << 20)   /* 32 cells fill the default 16 GiB quota */
#define DEFAULT_CELL_PIDS   1024              /* the daemon-wide pid budget is about 24k on a 32k pid_max */
#define MAX_TTL_SECONDS     (365ll * 24 * 3600)

/* Quota checks and the insert that follows are one step per daemon. */
static pthread_mutex_t quota_lock = PTHREAD_MUTEX_INITIALIZER;

/* Agent installs reserve from the host budget under it too (limits.c). */
void srv_cells_quota_lock(void) { pthread_mutex_lock(&quota_lock); }
void srv_cells_quota_unlock(void) { pthread_mutex_unlock(&quota_lock); }

json_t *srv_cell_json(scell *sc)
{
    json_t *o = json_deep_copy(sc->spec);     /* the spec never changes after srv_registry_add */
    if (!o)
        return NULL;
    json_object_del(o, "laneId");
    json_object_del(o, "policyScreened");
    enum scell_state st = srv_registry_state(sc);
    pthread_mutex_lock(&sc->io);
    /* Running with a dead init is reported stopped: the reaper halts it. */
    if (st == SCELL_RUNNING && (!sc->c || sc->dead))
        st = SCELL_STOPPED;
    int64_t started = sc->started_ms;
    if (sc->policy)
        json_object_set_new(o, "policy", json_deep_copy(sc->policy));
    pthread_mutex_unlock(&sc->io);
    json_object_set_new(o, "id", json_string(sc->id));
    json_object_set_new(o, "state", json_string(srv_registry_state_name(st)));
    json_object_set_new(o, "createdAtMs", json_integer(sc->created_ms));
    if (started && st == SCELL_RUNNING)
        json_object_set_new(o, "startedAtMs", json_integer(started));
    char url[64];
    snprintf(url, sizeof url, "/cells/%s", sc->id);
    json_object_set_new(o, "baseUrl", json_string(url));
    json_t *run_id = srv_runs_cell_run(sc->s, sc->id);   /* a run's cell says whose */
    if (run_id)
        json_object_set_new(o, "run", run_id);
    json_t *usage = srv_egress_usage(sc);         /* model tokens its "meter" rules saw */
    if (usage)
        json_object_set_new(o, "usage", usage);
    return o;
}

/* A transition refused because of the cell's state: 409 conflict whose
 * details name the state; anything else as srv_reply_error maps it. */
static int reply_transition(sreq *r, scell *sc, const cell_error *e)
{
    if (e->code != EBUSY)
        return srv_reply_error(r, e);
    json_t *d = json_pack("{s:s, s:s, s:s}", "message", e->message, "id", sc->id, "state",
                          srv_registry_state_name(srv_registry_state(sc)));
    return srv_reply_problem_details(r, 409, "conflict", d, "%s", e->message);
}

/* ---- validating a create request into a spec ---------------------------------- */
/* {"type":"overlay","source":HOST_DIR,"target":...,"size"?}: the host
 * directory writable in the cell, never written (an in-memory upper layer
 * of `size`, default 1 GiB, memory like a memory mount's). */
static int parse_overlay_mount(sreq *r, size_t i, const char *source, const char *target, uint64_t size, json_t *out)
{
    /* A host path in a cell is the host's trust decision, not a tenant's. */
    if (!r->tok.admin)
        return srv_reply_problem(r, 403, "forbidden", "mounts[%zu]: overlay mounts of host paths need an admin token", i), -1;
    if (!source)
        return srv_reply_problem(r, 400, "invalid_request", "mounts[%zu]: field \"source\" is required for an overlay mount", i), -1;
    char canon[PATH_MAX];
    struct stat st;
    if (source[0] != '/' || !realpath(source, canon) || stat(canon, &st) < 0 || !S_ISDIR(st.st_mode))
        return srv_reply_problem(r, 400, "invalid_request",
                             "mounts[%zu].source: %s must be an absolute path to an existing host directory", i,
                             source), -1;
    char field[48];
    snprintf(field, sizeof field, "mounts[%zu].size", i);
    /* 0: libcell caps its 1 GiB to 3/4 of the cell's memory limit. */
    if (size && srv_limits_check(r, field, size, r->s->opt.limits.cell_memory, "cell.memory") < 0)
        return -1;
    json_t *m = json_pack("{s:s, s:s, s:s}", "type", "overlay", "source", canon, "target", target);
    if (size)
        json_object_set_new(m, "size", json_integer((json_int_t)size));
    json_array_append_new(out, m);
    return 0;
}

/* {"type":"lane","lane":NAME,"target":...}: one of the tenant's lanes,
 * read-only, served by the daemon without a copy (laneview.c).  The name
 * is kept, not the lane's id: each boot looks it up for the cell's tenant. */
static int parse_lane_mount(sreq *r, size_t i, json_t *m, const char *target, json_t *out)
{
    const char *name = NULL;
    if (srv_json_get_str(r, m, "lane", 1, &name) < 0)
        return -1;
    store_lane l;
    if (store_lane_get(r->s->st, r->tok.tenant, name, &l, NULL) < 0 || strcmp(l.state, "ready") != 0)
        return srv_reply_problem(r, 404, "not_found", "mounts[%zu].lane: no lane %s; create it with POST /v1/lanes or "
                             "/v1/lanes/{name}/import", i, name), -1;
    json_t *v = json_object_get(m, "readonly");
    if (v && !json_is_true(v))
        return srv_reply_problem(r, 400, "invalid_request", "mounts[%zu]: a lane mount is read-only; leave out "
                             "\"readonly\" or set it to true", i), -1;
    json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:b}", "type", "lane", "lane", name, "target", target,
                                         "readonly", 1));
    return 0;
}

/* mounts[i].mask: up to RUNTIME_MAX_MASKS paths relative to the source that
 * the cell must not see, each checked as libcell checks it (the create
 * checks the host tree: symlinks, hard links, the tree mounted twice). */
static int parse_mount_masks(sreq *r, size_t i, json_t *m, json_t *out)
{
    json_t *arr = json_object_get(m, "mask");
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > RUNTIME_MAX_MASKS)
        return srv_reply_problem(r, 400, "invalid_request", "mounts[%zu].mask must be an array of at most %d paths "
                             "relative to the source, such as [\".env\"]", i, RUNTIME_MAX_MASKS), -1;
    const char *type = json_string_value(json_object_get(out, "type"));
    if (json_array_size(arr) && strcmp(type, "bind") != 0 && strcmp(type, "overlay") != 0)
        return srv_reply_problem(r, 400, "invalid_request", "mounts[%zu].mask: only bind and overlay mounts take "
                             "masks, not a %s mount", i, type), -1;
    size_t j, k;
    json_t *v;
    json_array_foreach(arr, j, v) {
        char field[64];
        snprintf(field, sizeof field, "mounts[%zu].mask[%zu]", i, j);
        cell_error e = { 0 };
        if (!json_is_string(v))
            return srv_reply_problem(r, 400, "invalid_request", "%s must be a string", field), -1;
        if (runtime_mask_check(json_string_value(v), field, &e) < 0)
            return srv_reply_problem(r, 400, "invalid_request", "%s", e.message), -1;
        for (k = 0; k < j; k++)
            if (runtime_mask_overlaps(json_string_value(v), json_string_value(json_array_get(arr, k))))
                return srv_reply_problem(r, 400, "invalid_request", "%s: '%s' overlaps mounts[%zu].mask[%zu]; keep "
                                     "the outer one", field, json_string_value(v), i, k), -1;
    }
    json_object_set(out, "mask", arr);
    return 0;
}

static int parse_mounts(sreq *r, json_t *body, json_t *spec)
{
    json_t *arr = json_object_get(body, "mounts");
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > 16)
        return srv_reply_problem(r, 400, "invalid_request", "field \"mounts\" must be an array of at most 16 mounts"), -1;
    json_t *out = json_array();
    json_object_set_new(spec, "mounts", out);
    size_t i;
    json_t *m;
    json_array_foreach(arr, i, m) {
        const char *type = "memory", *target = NULL, *source = NULL;
        uint64_t size = 0;
        int ro = 0;
        if (!json_is_object(m))
            return srv_reply_problem(r, 400, "invalid_request", "mounts[%zu] must be an object", i), -1;
        char where[32];
        snprintf(where, sizeof where, "mounts[%zu]", i);
        if (srv_req_check_fields(r, m, where, "type", "lane", "target", "source", "size", "readonly", "mask", NULL) < 0)
            return -1;
        if (srv_json_get_str(r, m, "type", 0, &type) < 0 || srv_json_get_str(r, m, "target", 1, &target) < 0 ||
            srv_json_get_str(r, m, "source", 0, &source) < 0 || srv_json_get_size(r, m, "size", &size) < 0 ||
            srv_json_get_bool(r, m, "readonly", &ro) < 0)
            return -1;
        if (strcmp(type, "memory") == 0) {
            char field[48];
            snprintf(field, sizeof field, "mounts[%zu].size", i);
            if (srv_limits_check(r, field, size, r->s->opt.limits.cell_memory, "cell.memory") < 0)
                return -1;
            json_array_append_new(out, json_pack("{s:s, s:s, s:I}", "type", "memory", "target", target,
                                                 "size", (json_int_t)size));
        } else if (strcmp(type, "bind") == 0) {
            /* A host path in a cell is the host's trust decision, not a tenant's. */
            if (!r->tok.admin)
                return srv_reply_problem(r, 403, "forbidden", "mounts[%zu]: bind mounts of host paths need an admin token", i), -1;
            if (!source)
                return srv_reply_problem(r, 400, "invalid_request", "mounts[%zu]: field \"source\" is required for a bind mount", i), -1;
            /* Canonical now: the boot refuses a source holding a symlink,
             * so one swapped in after this cannot redirect the mount. */
            char canon[PATH_MAX];
            json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:b}", "type", "bind", "source",
                                                 realpath(source, canon) ? canon : source, "target", target,
                                                 "readonly", ro));
        } else if (strcmp(type, "overlay") == 0) {
            if (parse_overlay_mount(r, i, source, target, size, out) < 0)
                return -1;
        } else if (strcmp(type, "lane") == 0) {
            if (parse_lane_mount(r, i, m, target, out) < 0)
                return -1;
        } else {
            return srv_reply_problem(r, 400, "invalid_request",
                                 "mounts[%zu]: type must be \"memory\", \"bind\", \"overlay\" or \"lane\"", i), -1;
        }
        if (parse_mount_masks(r, i, m, json_array_get(out, json_array_size(out) - 1)) < 0)
            return -1;
    }
    return 0;
}

/* The defaults, lowered to the operator's ceilings if above them. */
void srv_cells_default_resources(const server_limits *l, uint64_t *memory, uint64_t *pids)
{
    *memory = DEFAULT_CELL_MEMORY < l->cell_memory ? DEFAULT_CELL_MEMORY : l->cell_memory;
    *pids = DEFAULT_CELL_PIDS < l->cell_pids ? DEFAULT_CELL_PIDS : l->cell_pids;
}

static int parse_resources(sreq *r, json_t *body, json_t *spec)
{
    json_t *res = json_object_get(body, "resources");
    const server_limits *l = &r->s->opt.limits;
    uint64_t memory, default_pids, disk = 0;
    srv_cells_default_resources(l, &memory, &default_pids);
    int64_t pids = (int64_t)default_pids;
    double cpus = 0;
    if (res && !json_is_null(res)) {
        if (!json_is_object(res))
            return srv_reply_problem(r, 400, "invalid_request", "field \"resources\" must be an object"), -1;
        if (srv_req_check_fields(r, res, "resources", "memory", "disk", "pids", "cpus", NULL) < 0 ||
            srv_json_get_size(r, res, "memory", &memory) < 0 || srv_json_get_size(r, res, "disk", &disk) < 0 ||
            srv_json_get_int(r, res, "pids", 0, 1, 1 << 22, &pids) < 0)
            return -1;
        json_t *c = json_object_get(res, "cpus");
        if (c && !json_is_null(c)) {
            if (!json_is_number(c) || json_number_value(c) <= 0 || json_number_value(c) > 1024)
                return srv_reply_problem(r, 400, "invalid_request", "field \"resources.cpus\" must be a number of CPUs above 0, e.g. 0.5 or 2"), -1;
            cpus = json_number_value(c);
        }
        if (memory < (16ull << 20))
            return srv_reply_problem(r, 400, "invalid_request", "field \"resources.memory\" must be at least 16M"), -1;
    }
    if (srv_limits_check(r, "resources.memory", memory, l->cell_memory, "cell.memory") < 0 ||
        srv_limits_check(r, "resources.pids", (uint64_t)pids, l->cell_pids, "cell.pids") < 0 ||
        srv_limits_check(r, "resources.cpus", (uint64_t)(cpus * 1000), l->cell_cpu_millis, "cell.cpus") < 0 ||
        srv_limits_check(r, "resources.disk", disk, l->cell_disk, "cell.disk") < 0)
        return -1;
    json_object_set_new(spec, "resources",
                        json_pack("{s:I, s:I, s:I, s:I}", "memory", (json_int_t)memory, "pids", (json_int_t)pids,
                                  "cpuMillis", (json_int_t)(cpus * 1000), "disk", (json_int_t)disk));
    return 0;
}

/* Plain-HTTP webhooks off loopback send every flow's metadata in clear
 * and trust whoever answers on the path: allowed, but said in the log. */
static void warn_plain_webhooks(sreq *r, json_t *policy)
{
    size_t i;
    json_t *rule;
    json_array_foreach(json_object_get(policy, "rules"), i, rule) {
        const char *url = json_string_value(json_object_get(json_object_get(rule, "decide"), "url"));
        if (!url || strncmp(url, "http://", 7) != 0)
            continue;
        const char *host = url + 7;
        if (strncmp(host, "127.", 4) == 0 || strncmp(host, "[::1]", 5) == 0 || strncmp(host, "localhost", 9) == 0)
            continue;
        srv_slog(SLOG_WARN, SLOG_F("tenant", r->tok.tenant), "warning: tenant %s: rules[%zu].decide.url %s is plain "
             "http off loopback; use https://", r->tok.tenant, i, url);
    }
}

/* A network policy is validated by libcell (errors name rule and field).
 * A non-admin's policy must not make the daemon itself connect to the
 * host's own services (decide webhooks, DNS upstreams): SSRF. */
static int check_policy(sreq *r, json_t *policy)
{
    /* json_dumps() of a non-object is NULL, which read as out of memory. */
    if (!json_is_object(policy))
        return srv_reply_problem(r, 400, "invalid_request", "field \"policy\" must be an object "
                             "(e.g. {\"rules\": [...]}), not %s", json_is_string(policy) ? "a string"
                             : json_is_array(policy) ? "an array" : "a scalar"), -1;
    char *text = json_dumps(policy, JSON_COMPACT);
    cell_error e = { 0 };
    int rc = !text            ? util_fail(&e, ENOMEM, "out of memory")
             : r->tok.admin   ? cell_policy_check(text, &e)
                              : cell_policy_check_v2(text, r->s->opt.tenant_dest_allow, &e);
    free(text);
    if (rc < 0 && e.code == EACCES)
        srv_reply_problem(r, 403, "forbidden", "policy: %s", e.message);
    else if (rc < 0)
        srv_reply_problem(r, e.code == EINVAL ? 400 : 500, e.code == EINVAL ? "invalid_request" : "internal",
                      "policy: %s", e.message);
    else
        warn_plain_webhooks(r, policy);
    return rc;
}

/* The client's policy (NULL: none) with the cell's agent rules
 * (agentkeys.c), checked as the cell will run it: first as the client
 * sent it, so errors name its own rules, then composed. */
static int check_cell_policy(sreq *r, json_t *spec, json_t *policy)
{
    if (!json_object_get(spec, "agentPolicy"))
        return check_policy(r, policy);
    json_t *sent = policy ? srv_agentkeys_policy_as_sent(spec, policy) : NULL;
    json_t *all = srv_agentkeys_policy(spec, policy);
    int rc = (policy && !sent) || !all ? (srv_reply_problem(r, 500, "internal", "out of memory"), -1)
             : sent && check_policy(r, sent) < 0 ? -1
                                                 : check_policy(r, all);
    json_decref(sent);
    json_decref(all);
    return rc;
}

static int parse_policy(sreq *r, json_t *body, json_t *spec)
{
    json_t *policy = json_object_get(body, "policy");
    if (json_is_null(policy))
        policy = NULL;
    if (!policy && !json_object_get(spec, "agentPolicy"))
        return 0;
    if (check_cell_policy(r, spec, policy) < 0)
        return -1;
    if (policy)
        json_object_set(spec, "policy", policy);
    json_object_set_new(spec, "policyScreened", json_boolean(!r->tok.admin));
    return 0;
}

/* libcell's hostname rule (one DNS label: sethostname and the /etc/hosts
 * line take no more): 1-63 letters, digits or '-', no '-' at either end.
 * The warm pool takes a cell only for a name that passes it (pool.c). */
int srv_cells_valid_hostname(const char *h)
{
    size_t n = strlen(h);
    return util_valid_name(h) && !strpbrk(h, "_.") && h[n - 1] != '-';
}

/* An imported or committed image's config (issue 13): its Env for the
 * names the request's env leaves out, its WorkingDir when the request
 * gives no cwd.  (User and Entrypoint/Cmd are for `cell run`: processes
 * here name their command and run as the cell's root.) */
static int image_defaults(sreq *r, const char *image, json_t *spec, int cwd_given)
{
    /* An image not shared with the tenant is as unknown as a missing one. */
    if (!srv_images_visible(r, image))
        return srv_reply_problem(r, 400, "invalid_request", "field \"image\": unknown image '%s'", image), -1;
    cell_image_config c;
    cell_error e = { 0 };
    pthread_mutex_lock(&r->s->ctx_lock);
    int rc = cell_image_config_get(r->s->ctx, image, &c, &e);
    pthread_mutex_unlock(&r->s->ctx_lock);
    if (rc < 0)
        return srv_reply_problem(r, 400, "invalid_request", "field \"image\": %s", e.message), -1;
    json_t *env = json_object_get(spec, "env");
    for (size_t i = 0; i < c.n_env; i++) {
        char *eq = strchr(c.env[i], '=');
        if (!eq || eq == c.env[i])
            continue;
        *eq = '\0';
        if (!json_object_get(env, c.env[i]))
            json_object_set_new(env, c.env[i], json_string(eq + 1));
    }
    if (!cwd_given && c.cwd && c.cwd[0] == '/')
        json_object_set_new(spec, "cwd", json_string(c.cwd));
    cell_image_config_free(&c);
    return 0;
}

static int parse_create(sreq *r, json_t *body, json_t *spec, store_lane *lane, int *has_lane)
{
    const char *image = NULL, *lane_name = NULL, *cwd = "/", *hostname = NULL;
    int64_t ttl = 0;
    if (srv_req_check_fields(r, body, "", "image", "lane", "cwd", "hostname", "ttl", "env", "resources", "mounts",
                         "policy", "agents", NULL) < 0 ||
        srv_json_get_str(r, body, "image", 0, &image) < 0 || srv_json_get_str(r, body, "lane", 0, &lane_name) < 0 ||
        srv_json_get_str(r, body, "cwd", 0, &cwd) < 0 || srv_json_get_str(r, body, "hostname", 0, &hostname) < 0 ||
        srv_json_get_int(r, body, "ttl", 0, 0, MAX_TTL_SECONDS, &ttl) < 0 ||
        srv_limits_check(r, "ttl", (uint64_t)ttl, r->s->opt.limits.cell_ttl_s, "cell.ttl") < 0)
        return -1;
    char **env = NULL;
    size_t n_env = 0;
    if (srv_json_get_env(r, body, "env", &env, &n_env) < 0)
        return -1;
    srv_strv_free(env);
    if (cwd[0] != '/')
        return srv_reply_problem(r, 400, "invalid_request", "field \"cwd\" must be an absolute path"), -1;
    /* Checked here so that a bad name is a 400, not a failed boot. */
    if (hostname && !srv_cells_valid_hostname(hostname))
        return srv_reply_problem(r, 400, "invalid_request", "field \"hostname\" must be 1-63 letters, digits or '-', with no '-' at either end"), -1;
    *has_lane = 0;
    if (lane_name) {
        cell_error e = { 0 };
        if (store_lane_get(r->s->st, r->tok.tenant, lane_name, lane, &e) < 0 || strcmp(lane->state, "ready") != 0)
            return srv_reply_problem(r, 404, "not_found", "lane %s; create it with POST /v1/lanes", lane_name), -1;
        if (image && strcmp(image, lane->image) != 0)
            return srv_reply_problem(r, 400, "invalid_request", "lane %s belongs to image %s, not %s", lane_name, lane->image, image), -1;
        image = lane->image;
        *has_lane = 1;
        json_object_set_new(spec, "lane", json_string(lane->name));
        json_object_set_new(spec, "laneId", json_string(lane->id));
    }
    if (!image)
        image = "host";
    json_object_set_new(spec, "image", json_string(image));
    json_object_set_new(spec, "cwd", json_string(cwd));
    if (hostname)
        json_object_set_new(spec, "hostname", json_string(hostname));
    json_object_set_new(spec, "ttl", json_integer(ttl));
    json_t *envo = json_object_get(body, "env");
    json_object_set_new(spec, "env", json_is_object(envo) ? json_incref(envo) : json_object());
    if (image_defaults(r, image, spec, json_object_get(body, "cwd") != NULL) < 0)
        return -1;
    /* agents first: it folds its env and rules into the spec and policy. */
    if (parse_resources(r, body, spec) < 0 || parse_mounts(r, body, spec) < 0 || srv_agentkeys_apply(r, body, spec) < 0 ||
        parse_policy(r, body, spec) < 0)
        return -1;
    return 0;
}

static int check_quota(sreq *r, uint64_t memory, uint64_t pids)
{
    store_tenant t;
    cell_error e = { 0 };
    if (store_tenant_ensure(r->s->st, r->tok.tenant, &e) < 0 || store_tenant_get(r->s->st, r->tok.tenant, &t, &e) < 0)
        return srv_reply_error(r, &e), -1;
    size_t cells;
    uint64_t used;
    srv_registry_usage(r->s, r->tok.tenant, &cells, &used);
    if (cells + 1 > t.max_cells) {
        srv_reply_problem(r, 403, "quota_exceeded", "tenant %s: quota \"cells\" is %u and %zu exist; delete one first",
                      t.name, t.max_cells, cells);
        return -1;
    }
    if (used + memory > t.max_memory) {
        srv_reply_problem(r, 403, "quota_exceeded",
                      "tenant %s: quota \"memory\" is %llu bytes, %llu are reserved and this cell asks %llu",
                      t.name, (unsigned long long)t.max_memory, (unsigned long long)used, (unsigned long long)memory);
        return -1;
    }
    uint64_t used_mem, used_pids;
    srv_limits_usage(r->s, r->tok.tenant, &used_mem, &used_pids);
    if (used_pids + pids > t.max_pids) {
        srv_reply_problem(r, 403, "quota_exceeded",
                      "tenant %s: quota \"pids\" is %u, %llu are reserved and this cell asks %llu",
                      t.name, t.max_pids, (unsigned long long)used_pids, (unsigned long long)pids);
        return -1;
    }
    /* Each tenant under its quota can still add up past the host. */
    return srv_limits_check_budget(r, memory, pids);
}

static void audit_cell_event(srv *s, const char *tenant, const char *id, const char *event)
{
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s}", "kind", "cell", "tenant", tenant, "cell", id, "event", event);
    store_audit_append(s->st, rec);
    json_decref(rec);
}

int srv_cells_spec_from_body(sreq *r, json_t *body, json_t *spec)
{
    store_lane lane;
    int has_lane = 0;
    if (parse_create(r, body, spec, &lane, &has_lane) < 0)
        return -1;
    if (has_lane)   /* the runs' cells take no lane (their workspace is copied in) */
        return srv_reply_problem(r, 400, "invalid_request", "field \"lane\" is not taken here"), -1;
    return 0;
}

/* The image must be built before the create is recorded. */
static int check_image(sreq *r, json_t *spec)
{
    const char *image = json_string_value(json_object_get(spec, "image"));
    cell_error e = { 0 };
    /* A ready pooled cell of the image says it is built, without waiting
     * for ctx_lock, which a pool refill holds while it boots. */
    int ready = srv_pool_image_ready(image);
    if (!ready) {
        pthread_mutex_lock(&r->s->ctx_lock);
        ready = cell_image_status(r->s->ctx, image, &e);
        pthread_mutex_unlock(&r->s->ctx_lock);
    }
    if (ready < 0)
        return srv_reply_problem(r, 400, "invalid_request", "field \"image\": %s", e.message), -1;
    if (ready == 0)
        return srv_reply_problem(r, 409, "image_not_built", "image %s is not built yet; POST /v1/images/%s/build first",
                             image, image), -1;
    return 0;
}

int srv_cells_create_from_spec(sreq *r, json_t *spec, const store_lane *lane, scell **out)
{
    *out = NULL;
    int64_t t0 = srv_metrics_clock_ms();
    if (check_image(r, spec) < 0)
        return -1;
    cell_error e = { 0 };
    char id[13];
    util_random_hex(id, 6);
    uint64_t memory = (uint64_t)json_integer_value(json_object_get(json_object_get(spec, "resources"), "memory"));
    uint64_t pids = (uint64_t)json_integer_value(json_object_get(json_object_get(spec, "resources"), "pids"));
    pthread_mutex_lock(&quota_lock);
    if (check_quota(r, memory, pids) < 0) {
        pthread_mutex_unlock(&quota_lock);
        return -1;
    }
    char *text = json_dumps(spec, JSON_COMPACT);
    store_cell rec = { .spec = text, .created = srv_now_ms(), .updated = srv_now_ms() };
    snprintf(rec.id, sizeof rec.id, "%s", id);
    snprintf(rec.tenant, sizeof rec.tenant, "%s", r->tok.tenant);
    snprintf(rec.state, sizeof rec.state, "stopped");
    int ins = text ? store_cell_insert(r->s->st, &rec, &e) : util_fail(&e, ENOMEM, "out of memory");
    free(text);
    scell *sc = ins == 0 ? srv_registry_add(r->s, id, r->tok.tenant, spec, rec.created, 1) : NULL;
    pthread_mutex_unlock(&quota_lock);
    if (!sc)
        return srv_reply_error(r, &e), -1;
    srv_req_audit(r, "cell", json_string(id));
    /* Listed first, lane checked second; a lane delete marks the lane first
     * and looks for its cells second, so one of the two sees the other. */
    store_lane now;
    if (lane && (store_lane_get_by_id(r->s->st, r->tok.tenant, lane->id, &now, NULL) < 0 ||
                 strcmp(now.state, "ready") != 0)) {
        srv_registry_create_abort(sc);
        srv_reply_problem(r, 409, "conflict", "lane %s is being deleted", lane->name);
        srv_registry_put(sc);
        return -1;
    }
    int booted = srv_registry_create_boot(sc, &e) == 0;
    srv_metrics_cell_create(booted, srv_metrics_clock_ms() - t0);
    if (!booted) {
        /* Waits out a start that raced in (the id was listed meanwhile). */
        srv_registry_delete(sc, 1, NULL);
        reply_transition(r, sc, &e);
        srv_registry_put(sc);
        return -1;
    }
    audit_cell_event(r->s, r->tok.tenant, id, "created");
    *out = sc;
    return 0;
}

int srv_h_cells_create(sreq *r)
{
    json_t *body = NULL, *spec = json_object();
    store_lane lane;
    int has_lane = 0;
    scell *sc;
    if (!spec)
        return srv_reply_problem(r, 500, "internal", "out of memory");
    if (srv_req_json(r, &body) == 0 && parse_create(r, body, spec, &lane, &has_lane) == 0 &&
        srv_cells_create_from_spec(r, spec, has_lane ? &lane : NULL, &sc) == 0) {
        srv_reply_json(r, 201, srv_cell_json(sc));
        srv_registry_put(sc);
    }
    json_decref(body);
    json_decref(spec);
    return REPLIED(r);
}

int srv_h_cells_list(sreq *r)
{
    json_t *arr = json_array();
    srv *s = r->s;
    /* References first, JSON after: srv_cell_json takes each cell's io lock. */
    pthread_mutex_lock(&s->lock);
    size_t n = 0;
    for (scell *sc = s->cells; sc; sc = sc->next)
        n += strcmp(sc->tenant, r->tok.tenant) == 0;
    scell **mine = calloc(n ? n : 1, sizeof *mine);
    n = 0;
    /* A deleting cell is gone for clients (lookups 404), so it is not listed. */
    for (scell *sc = s->cells; mine && sc; sc = sc->next)
        if (strcmp(sc->tenant, r->tok.tenant) == 0 && sc->state < SCELL_DELETING) {
            sc->refs++;
            mine[n++] = sc;
        }
    pthread_mutex_unlock(&s->lock);
    if (!mine)
        return srv_reply_problem(r, 500, "internal", "out of memory");
    for (size_t i = n; i-- > 0;) {
        json_array_append_new(arr, srv_cell_json(mine[i]));
        srv_registry_put(mine[i]);
    }
    free(mine);
    return srv_reply_json(r, 200, json_pack("{s:o}", "cells", arr));
}

/* The tenant's cell named by {id}, or a 404 that never says whether the id
 * exists for another tenant. */
static scell *find_cell(sreq *r)
{
    const char *id = srv_router_param(&r->m, "id");
    scell *sc = srv_registry_get(r->s, r->tok.tenant, id);
    if (!sc)
        srv_reply_problem(r, 404, "not_found", "cell %s", id);
    else
        srv_req_audit(r, "cell", json_string(id));
    return sc;
}

int srv_h_cells_get(sreq *r)
{
    scell *sc = find_cell(r);
    if (!sc)
        return MHD_YES;
    int ret = srv_reply_json(r, 200, srv_cell_json(sc));
    srv_registry_put(sc);
    return ret;
}

/* Delete and stop wait out a boot or stop in progress, so a delete during a
 * start leaves nothing running: the booting thread owns the cell until it
 * is running, then the delete halts it. */
int srv_h_cells_delete(sreq *r)
{
    scell *sc = find_cell(r);
    if (!sc)
        return MHD_YES;
    cell_error e = { 0 };
    int rc = srv_registry_delete(sc, 1, &e);
    if (rc == 0)
        audit_cell_event(r->s, sc->tenant, sc->id, "deleted");
    int ret = rc < 0 ? reply_transition(r, sc, &e) : srv_reply_empty(r, 204);
    srv_registry_put(sc);
    return ret;
}

int srv_h_cells_stop(sreq *r)
{
    scell *sc = find_cell(r);
    if (!sc)
        return MHD_YES;
    cell_error e = { 0 };
    int ret;
    if (srv_registry_stop(sc, 1, &e) < 0) {
        ret = reply_transition(r, sc, &e);
    } else {
        audit_cell_event(r->s, sc->tenant, sc->id, "stopped");
        ret = srv_reply_json(r, 200, srv_cell_json(sc));
    }
    srv_registry_put(sc);
    return ret;
}

int srv_h_cells_start(sreq *r)
{
    scell *sc = find_cell(r);
    if (!sc)
        return MHD_YES;
    cell_error e = { 0 };
    int ret;
    if (srv_registry_start(sc, &e) < 0) {
        ret = reply_transition(r, sc, &e);
    } else {
        audit_cell_event(r->s, sc->tenant, sc->id, "started");
        ret = srv_reply_json(r, 200, srv_cell_json(sc));
    }
    srv_registry_put(sc);
    return ret;
}

/* PUT /v1/cells/{id}/policy: the body is the new policy.  It is stored for
 * the next boots and, when the cell runs with a policy, applied at once to
 * new connections. */
int srv_h_cells_policy(sreq *r)
{
    scell *sc = find_cell(r);
    if (!sc)
        return MHD_YES;
    json_t *policy = NULL;
    int ret = MHD_YES;
    if (srv_req_json(r, &policy) < 0 || check_cell_policy(r, sc->spec, policy) < 0)
        goto out;
    /* The cell runs the client's policy composed with its agent rules;
     * the record and GET keep the client's as sent. */
    json_t *runs = srv_agentkeys_policy(sc->spec, policy);
    char *text = runs ? json_dumps(runs, JSON_COMPACT) : NULL;
    json_decref(runs);
    if (!text) {
        ret = srv_reply_problem(r, 500, "internal", "out of memory");
        goto out;
    }
    cell_error e = { 0 };
    int live = 0;
    /* The spec is shared read-only; the policy is the one part that changes,
     * so it lives beside it (io) and the record gets a copy. */
    json_t *copy = json_deep_copy(sc->spec);
    srv_scell_io_lock(sc);
    char *spec = copy && json_object_set(copy, "policy", policy) == 0 &&
                 json_object_set_new(copy, "policyScreened", json_boolean(!r->tok.admin)) == 0
                     ? json_dumps(copy, JSON_COMPACT) : NULL;
    int rc = spec ? store_cell_set_spec(r->s->st, sc->id, spec, &e) : util_fail(&e, ENOMEM, "out of memory");
    if (rc == 0) {
        json_decref(sc->policy);
        sc->policy = json_deep_copy(policy);
        atomic_store(&sc->policy_screened, !r->tok.admin);
    }
    if (rc == 0 && sc->c && !sc->dead) {
        rc = cell_set_policy(sc->c, text, &e);
        live = rc == 0;
        if (rc < 0 && e.code == EPERM)
            rc = 0;     /* started without a network: applies from the next start */
    }
    srv_scell_io_unlock(sc);
    json_decref(copy);
    free(spec);
    free(text);
    if (rc < 0) {
        ret = srv_reply_error(r, &e);
        goto out;
    }
    json_t *o = srv_cell_json(sc);
    json_object_set_new(o, "policyLive", json_boolean(live));
    ret = srv_reply_json(r, 200, o);
out:
    json_decref(policy);
    srv_registry_put(sc);
    return ret;
}
