/* metrics.c: GET /metrics, /healthz and /readyz (metrics.h).  One daemon
 * per process: the counters are module state, as pool.c and egress.c keep
 * theirs. */
#include "server/metrics.h"
#include "server/runs.h"
#include "runtime/plugin.h"
#include "runtime/vfs.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- HTTP requests by route, method and status ------------------------------------
 * One counter per (route, status) in a fixed array: a request's path costs
 * one atomic add.  Labels are the route's template, never the raw path, and
 * statuses outside METRICS_CODES count as "other": whatever clients send,
 * the series are bounded.  Requests that match no route are counted by
 * method (the client's method: known ones, else "other"). */
#define METRICS_MAX_ROUTES 224
static const unsigned metrics_codes[] = {
    101, 200, 201, 202, 204, 206, 304, 400, 401, 403, 404, 405, 406, 408, 409, 410,
    411, 413, 414, 415, 416, 422, 429, 431, 500, 501, 502, 503, 504, 507,
};
#define METRICS_CODES (sizeof metrics_codes / sizeof metrics_codes[0])
static const char *const metrics_methods[] = { "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other" };
#define METRICS_METHODS (sizeof metrics_methods / sizeof metrics_methods[0])

static atomic_uint_fast64_t http_counts[METRICS_MAX_ROUTES + METRICS_METHODS][METRICS_CODES + 1];

/* ---- cell creates: outcome and a latency histogram ------------------------------- */
static const double create_bounds[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 };
#define CREATE_BUCKETS (sizeof create_bounds / sizeof create_bounds[0])
static atomic_uint_fast64_t create_ok, create_failed, create_sum_ms;
static atomic_uint_fast64_t create_hist[CREATE_BUCKETS + 1];   /* per bucket, not cumulative; last: +Inf */

/* ---- egress ---------------------------------------------------------------------- */
static const char *const egress_events[] = { "connect", "dns", "http", "other" };
static const char *const egress_verdicts[] = { "allow", "deny", "other" };
#define EGRESS_EVENTS   (sizeof egress_events / sizeof egress_events[0])
#define EGRESS_VERDICTS (sizeof egress_verdicts / sizeof egress_verdicts[0])
static atomic_uint_fast64_t egress_counts[EGRESS_EVENTS][EGRESS_VERDICTS];
static atomic_uint_fast64_t egress_bytes_out, egress_bytes_in;
static atomic_uint_fast64_t decide_counts[2][2];   /* [cached][allow] */
static atomic_uint_fast64_t audit_suppressed;

static atomic_int serving;

int srv_metrics_start(cell_error *err)
{
    if (srv_n_control_routes + srv_n_agent_routes > METRICS_MAX_ROUTES)
        return util_fail(err, EOVERFLOW, "metrics: %zu routes, more than METRICS_MAX_ROUTES (%d): raise it",
                         srv_n_control_routes + srv_n_agent_routes, METRICS_MAX_ROUTES);
    return 0;
}

void srv_metrics_set_serving(srv *s, int on)
{
    (void)s;
    atomic_store(&serving, on);
}

/* Index of rt in the two tables, or -1.  Compared as addresses: rt points
 * into one of them when a route matched. */
static long route_index(const route *rt)
{
    uintptr_t p = (uintptr_t)rt, c = (uintptr_t)srv_control_routes, a = (uintptr_t)srv_agent_routes;
    if (!rt)
        return -1;
    if (p >= c && p < c + srv_n_control_routes * sizeof(route))
        return (long)((p - c) / sizeof(route));
    if (p >= a && p < a + srv_n_agent_routes * sizeof(route))
        return (long)(srv_n_control_routes + (p - a) / sizeof(route));
    return -1;
}

static size_t code_slot(unsigned status)
{
    for (size_t i = 0; i < METRICS_CODES; i++)
        if (metrics_codes[i] == status)
            return i;
    return METRICS_CODES;
}

static size_t method_slot(const char *method)
{
    for (size_t i = 0; method && i + 1 < METRICS_METHODS; i++)
        if (strcmp(metrics_methods[i], method) == 0)
            return i;
    return METRICS_METHODS - 1;
}

void srv_metrics_http(const route *rt, const char *method, unsigned status)
{
    long i = route_index(rt);
    size_t row = i >= 0 ? (size_t)i : METRICS_MAX_ROUTES + method_slot(method);
    atomic_fetch_add_explicit(&http_counts[row][code_slot(status)], 1, memory_order_relaxed);
}

void srv_metrics_audit_suppressed(void)
{
    atomic_fetch_add_explicit(&audit_suppressed, 1, memory_order_relaxed);
}

int64_t srv_metrics_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void srv_metrics_cell_create(int ok, int64_t ms)
{
    if (!ok) {
        atomic_fetch_add_explicit(&create_failed, 1, memory_order_relaxed);
        return;
    }
    if (ms < 0)
        ms = 0;
    size_t b = 0;
    while (b < CREATE_BUCKETS && (double)ms / 1000.0 > create_bounds[b])
        b++;
    atomic_fetch_add_explicit(&create_hist[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&create_sum_ms, (uint64_t)ms, memory_order_relaxed);
    atomic_fetch_add_explicit(&create_ok, 1, memory_order_relaxed);
}

static size_t name_slot(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; name && i + 1 < n; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return n - 1;
}

void srv_metrics_egress(const char *event, const char *verdict, int64_t bytes_out, int64_t bytes_in)
{
    size_t e = name_slot(egress_events, EGRESS_EVENTS, event);
    size_t v = name_slot(egress_verdicts, EGRESS_VERDICTS, verdict);
    atomic_fetch_add_explicit(&egress_counts[e][v], 1, memory_order_relaxed);
    if (bytes_out > 0)
        atomic_fetch_add_explicit(&egress_bytes_out, (uint64_t)bytes_out, memory_order_relaxed);
    if (bytes_in > 0)
        atomic_fetch_add_explicit(&egress_bytes_in, (uint64_t)bytes_in, memory_order_relaxed);
}

void srv_metrics_decide(int allow, int cached)
{
    atomic_fetch_add_explicit(&decide_counts[!!cached][!!allow], 1, memory_order_relaxed);
}

static uint64_t load(atomic_uint_fast64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

/* ---- the exposition ------------------------------------------------------------------ */
static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as the format wants it: \\, \" and \n escaped.  Values
 * here are route templates, image names (util_valid_name) and fixed
 * words, but escaping keeps the output valid whatever they hold. */
static void label(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void write_http(FILE *f)
{
    head(f, "cell_http_requests_total", "counter",
         "HTTP requests answered, by route template (\"unmatched\": no route), method and status code");
    for (size_t row = 0; row < METRICS_MAX_ROUTES + METRICS_METHODS; row++) {
        const route *rt = NULL;
        if (row < srv_n_control_routes)
            rt = &srv_control_routes[row];
        else if (row < srv_n_control_routes + srv_n_agent_routes)
            rt = &srv_agent_routes[row - srv_n_control_routes];
        else if (row < METRICS_MAX_ROUTES)
            continue;
        for (size_t c = 0; c <= METRICS_CODES; c++) {
            uint64_t n = load(&http_counts[row][c]);
            if (!n)
                continue;
            fputs("cell_http_requests_total{method=\"", f);
            label(f, rt ? rt->method : metrics_methods[row - METRICS_MAX_ROUTES]);
            fputs("\",route=\"", f);
            label(f, rt ? rt->pattern : "unmatched");
            if (c < METRICS_CODES)
                fprintf(f, "\",code=\"%u\"} %llu\n", metrics_codes[c], (unsigned long long)n);
            else
                fprintf(f, "\",code=\"other\"} %llu\n", (unsigned long long)n);
        }
    }
}

static void write_creates(FILE *f)
{
    head(f, "cell_cell_creates_total", "counter", "Cell creates that got as far as booting, by result");
    fprintf(f, "cell_cell_creates_total{result=\"ok\"} %llu\n", (unsigned long long)load(&create_ok));
    fprintf(f, "cell_cell_creates_total{result=\"failed\"} %llu\n", (unsigned long long)load(&create_failed));
    head(f, "cell_cell_create_duration_seconds", "histogram",
         "Time from a create's checks to its cell running (warm pool or cold boot), successful creates");
    /* Cumulative counts; the total is the last bucket's, so the series
     * agree even while creates end during the read. */
    uint64_t cum = 0;
    for (size_t b = 0; b <= CREATE_BUCKETS; b++) {
        cum += load(&create_hist[b]);
        if (b < CREATE_BUCKETS)
            fprintf(f, "cell_cell_create_duration_seconds_bucket{le=\"%g\"} %llu\n", create_bounds[b],
                    (unsigned long long)cum);
        else
            fprintf(f, "cell_cell_create_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    fprintf(f, "cell_cell_create_duration_seconds_sum %.3f\n", (double)load(&create_sum_ms) / 1000.0);
    fprintf(f, "cell_cell_create_duration_seconds_count %llu\n", (unsigned long long)cum);
}

/* Cells by state and their live processes, walked under srv.lock (then
 * each cell's plock: the documented order, io skipped). */
static void write_cells(FILE *f, srv *s)
{
    uint64_t by_state[SCELL_DELETED + 1] = { 0 }, procs = 0;
    pthread_mutex_lock(&s->lock);
    for (scell *sc = s->cells; sc; sc = sc->next) {
        if ((unsigned)sc->state <= SCELL_DELETED)
            by_state[sc->state]++;
        pthread_mutex_lock(&sc->plock);
        for (sproc *p = sc->procs; p; p = p->next)
            procs += !p->exited;
        pthread_mutex_unlock(&sc->plock);
    }
    pthread_mutex_unlock(&s->lock);
    head(f, "cell_cells", "gauge", "Cells the daemon holds, by state");
    for (int st = SCELL_CREATING; st < SCELL_DELETED; st++)
        fprintf(f, "cell_cells{state=\"%s\"} %llu\n", srv_registry_state_name((enum scell_state)st),
                (unsigned long long)by_state[st]);
    head(f, "cell_processes_running", "gauge", "Processes started in cells through the API that have not exited");
    fprintf(f, "cell_processes_running %llu\n", (unsigned long long)procs);
}

static void write_egress(FILE *f, srv *s)
{
    head(f, "cell_egress_events_total", "counter",
         "Egress records of cells' engines by event (connect: a flow, dns: a query, http: a request) and verdict");
    for (size_t e = 0; e < EGRESS_EVENTS; e++)
        for (size_t v = 0; v < EGRESS_VERDICTS; v++)
            fprintf(f, "cell_egress_events_total{event=\"%s\",verdict=\"%s\"} %llu\n", egress_events[e],
                    egress_verdicts[v], (unsigned long long)load(&egress_counts[e][v]));
    head(f, "cell_egress_bytes_total", "counter", "Bytes of finished egress flows, by direction");
    fprintf(f, "cell_egress_bytes_total{direction=\"out\"} %llu\n", (unsigned long long)load(&egress_bytes_out));
    fprintf(f, "cell_egress_bytes_total{direction=\"in\"} %llu\n", (unsigned long long)load(&egress_bytes_in));
    head(f, "cell_egress_decide_total", "counter",
         "Answers of decide webhooks, by verdict and source (webhook: asked, cache: a cached answer)");
    for (int c = 0; c < 2; c++)
        for (int a = 0; a < 2; a++)
            fprintf(f, "cell_egress_decide_total{verdict=\"%s\",source=\"%s\"} %llu\n", a ? "allow" : "deny",
                    c ? "cache" : "webhook", (unsigned long long)load(&decide_counts[c][a]));
    uint64_t limited = 0, failed = 0;
    store_audit_drops(s->st, &limited, &failed);
    head(f, "cell_audit_dropped_total", "counter",
         "Audit records not written: limited (a cell past its per-second share, counted in an audit_dropped "
         "record), unauthenticated (a flood of requests without a valid token), write_failed (disk full, I/O)");
    fprintf(f, "cell_audit_dropped_total{reason=\"limited\"} %llu\n", (unsigned long long)limited);
    fprintf(f, "cell_audit_dropped_total{reason=\"unauthenticated\"} %llu\n",
            (unsigned long long)load(&audit_suppressed));
    fprintf(f, "cell_audit_dropped_total{reason=\"write_failed\"} %llu\n", (unsigned long long)failed);
}

static void write_pool(FILE *f)
{
    json_t *p = srv_pool_json();
    head(f, "cell_pool_ready", "gauge", "Warm pool cells ready, by image");
    json_t *t;
    size_t i;
    json_array_foreach(json_object_get(p, "templates"), i, t) {
        fputs("cell_pool_ready{image=\"", f);
        label(f, json_string_value(json_object_get(t, "image")) ? json_string_value(json_object_get(t, "image")) : "");
        fprintf(f, "\"} %lld\n", (long long)json_integer_value(json_object_get(t, "ready")));
    }
    head(f, "cell_pool_size", "gauge", "Warm pool cells kept ready when full, by image");
    json_array_foreach(json_object_get(p, "templates"), i, t) {
        fputs("cell_pool_size{image=\"", f);
        label(f, json_string_value(json_object_get(t, "image")) ? json_string_value(json_object_get(t, "image")) : "");
        fprintf(f, "\"} %lld\n", (long long)json_integer_value(json_object_get(t, "size")));
    }
    head(f, "cell_pool_takes_total", "counter", "Creates that asked the warm pool, by result");
    static const char *const results[][2] = { { "taken", "taken" }, { "empty", "empty" }, { "unfit", "unfit" } };
    for (size_t k = 0; k < 3; k++)
        fprintf(f, "cell_pool_takes_total{result=\"%s\"} %lld\n", results[k][0],
                (long long)json_integer_value(json_object_get(p, results[k][1])));
    head(f, "cell_pool_boots_total", "counter", "Cells the warm pool booted, by result");
    fprintf(f, "cell_pool_boots_total{result=\"ok\"} %lld\n", (long long)json_integer_value(json_object_get(p, "booted")));
    fprintf(f, "cell_pool_boots_total{result=\"failed\"} %lld\n",
            (long long)json_integer_value(json_object_get(p, "bootFailures")));
    json_decref(p);
}

static void write_runs(FILE *f)
{
    uint64_t by_status[RUN_TIMED_OUT + 1] = { 0 };
    srv_runs_count_by_status(by_status);
    head(f, "cell_runs", "gauge", "Runs the daemon lists (POST /v1/runs), by status");
    for (int st = RUN_QUEUED; st <= RUN_TIMED_OUT; st++)
        fprintf(f, "cell_runs{status=\"%s\"} %llu\n", srv_runs_status_name((enum run_status)st),
                (unsigned long long)by_status[st]);
}

int srv_h_metrics(sreq *r)
{
    srv *s = r->s;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return srv_reply_problem(r, 500, "internal", "out of memory");
    head(f, "cell_build_info", "gauge", "The daemon's version (always 1)");
    fprintf(f, "cell_build_info{version=\"%s\"} 1\n", CELL_VERSION_STRING);
    head(f, "cell_start_time_seconds", "gauge", "When the daemon started (Unix time)");
    fprintf(f, "cell_start_time_seconds %.3f\n", (double)s->started_ms / 1000.0);   /* srv_now_ms: CLOCK_REALTIME */
    write_cells(f, s);
    write_creates(f);
    write_http(f);
    write_egress(f, s);
    write_pool(f);
    write_runs(f);
    if (fclose(f) != 0 || !text) {
        free(text);
        return srv_reply_problem(r, 500, "internal", "out of memory");
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return srv_reply_response(r, 200, resp);
}

/* ---- health and readiness ---------------------------------------------------------- */
static int reply_text(sreq *r, const char *text)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return srv_reply_response(r, 200, resp);
}

int srv_h_healthz(sreq *r)
{
    return reply_text(r, "ok\n");
}

/* Not ready: each reason a fixed code, nothing of the error behind it (no
 * token is needed here, and messages name paths and libraries). */
int srv_h_readyz(sreq *r)
{
    srv *s = r->s;
    const char *why[6];
    size_t n = 0;
    cell_error e = { 0 };
    size_t tokens;
    if (atomic_load(&s->stopping))
        why[n++] = "stopping";
    else if (!atomic_load(&serving))
        why[n++] = "starting";
    if (!s->st || store_token_count(s->st, &tokens, &e) < 0)
        why[n++] = "store_unavailable";
    if (atomic_load(&serving) && !srv_pool_warmed())
        why[n++] = "pool_filling";
    if (!runtime_net(NULL))
        why[n++] = "plugin_net_unavailable";
    if (!runtime_archive(NULL))
        why[n++] = "plugin_archive_unavailable";
    if (!runtime_vfs(NULL))
        why[n++] = "plugin_vfs_unavailable";
    if (n == 0)
        return reply_text(r, "ok\n");
    json_t *reasons = json_array();
    for (size_t i = 0; reasons && i < n; i++)
        json_array_append_new(reasons, json_string(why[i]));
    return srv_reply_problem_details(r, 503, "not_ready", json_pack("{s:o*}", "reasons", reasons),
                                 "%s%s (GET /readyz again later)", why[0], n > 1 ? " and more" : "");
}
