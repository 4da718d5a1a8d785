/* egress.c: the daemon's side of cell networking: each decision of a cell's
 * engine becomes an audit record, "decide" rules ask a webhook (cached), and
 * http rules' ${secret:NAME} come from the cell's tenant's secrets. */
#include "server/server_internal.h"
#include "server/metrics.h"
#include "server/slog.h"

#include <curl/curl.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#define DECIDE_CACHE_SIZE 1024
#define DECIDE_MAX_REPLY  4096

#define USAGE_MAX ((json_int_t)1 << 53)

/* A token count of the helper's record: the helper parses what the cell
 * and the upstream send, so it is held to the same bounds as its parser. */
static int usage_count(json_t *u, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(u, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > USAGE_MAX)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static uint64_t usage_add(uint64_t a, uint64_t b)
{
    return a + b > (uint64_t)USAGE_MAX ? (uint64_t)USAGE_MAX : a + b;
}

/* An http event's metered usage (a "meter" rule) adds to the cell's. */
static void usage_account(scell *sc, json_t *rec)
{
    json_t *u = json_object_get(rec, "usage");
    uint64_t in, out, total;
    if (!json_is_object(u) || usage_count(u, "inputTokens", &in) < 0 || usage_count(u, "outputTokens", &out) < 0 ||
        usage_count(u, "totalTokens", &total) < 0) {
        json_object_del(rec, "usage");     /* not a usage: not audited as one either */
        return;
    }
    pthread_mutex_lock(&sc->ulock);
    sc->usage.metered = 1;
    sc->usage.input = usage_add(sc->usage.input, in);
    sc->usage.output = usage_add(sc->usage.output, out);
    sc->usage.total = usage_add(sc->usage.total, total);
    pthread_mutex_unlock(&sc->ulock);
}

json_t *srv_egress_usage(scell *sc)
{
    pthread_mutex_lock(&sc->ulock);
    struct scell_usage u = sc->usage;
    pthread_mutex_unlock(&sc->ulock);
    if (!u.metered)
        return NULL;
    return json_pack("{s:I, s:I, s:I}", "inputTokens", (json_int_t)u.input, "outputTokens", (json_int_t)u.output,
                     "totalTokens", (json_int_t)u.total);
}

void srv_egress_event(void *user, const char *json)
{
    scell *sc = user;
    json_t *rec = json_loads(json, 0, NULL);
    if (!rec)
        return;
    const char *event = json_string_value(json_object_get(rec, "event"));
    /* Counted before the audit's per-cell limiter: the metrics see every record. */
    json_t *out = json_object_get(rec, "bytesOut"), *in = json_object_get(rec, "bytesIn");
    srv_metrics_egress(event, json_string_value(json_object_get(rec, "verdict")),
                   json_is_integer(out) ? json_integer_value(out) : -1, json_is_integer(in) ? json_integer_value(in) : -1);
    if (json_object_get(rec, "usage")) {
        if (event && strcmp(event, "http") == 0)
            usage_account(sc, rec);
        else
            json_object_del(rec, "usage");
    }
    json_object_set_new(rec, "tenant", json_string(sc->tenant));
    /* The engine knows the runtime's id; the API's callers know this one. */
    json_object_set_new(rec, "cell", json_string(sc->id));
    store_audit_append(sc->s->st, rec);
    json_decref(rec);
}

/* ---- the webhook's answers, reused for the rule's cache_s ------------------- */
typedef struct decide_entry {
    char    key[768];
    int     allow;
    int64_t expires_ms;
} decide_entry;

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static decide_entry *cache;
static size_t cache_next;

static int cache_get(const char *key, int *allow)
{
    int hit = 0;
    int64_t now = srv_now_ms();
    pthread_mutex_lock(&cache_lock);
    for (size_t i = 0; cache && i < DECIDE_CACHE_SIZE && !hit; i++)
        if (cache[i].expires_ms > now && strcmp(cache[i].key, key) == 0) {
            *allow = cache[i].allow;
            hit = 1;
        }
    pthread_mutex_unlock(&cache_lock);
    return hit;
}

static void cache_put(const char *key, int allow, int cache_s)
{
    pthread_mutex_lock(&cache_lock);
    if (!cache)
        cache = calloc(DECIDE_CACHE_SIZE, sizeof *cache);
    if (cache) {
        decide_entry *e = &cache[cache_next++ % DECIDE_CACHE_SIZE];
        snprintf(e->key, sizeof e->key, "%s", key);
        e->allow = allow;
        e->expires_ms = srv_now_ms() + (int64_t)cache_s * 1000;
    }
    pthread_mutex_unlock(&cache_lock);
}

void srv_egress_cleanup(void)
{
    pthread_mutex_lock(&cache_lock);
    free(cache);
    cache = NULL;
    pthread_mutex_unlock(&cache_lock);
}

typedef struct reply_buf {
    char   data[DECIDE_MAX_REPLY];
    size_t len;
} reply_buf;

static size_t collect(char *ptr, size_t size, size_t n, void *user)
{
    reply_buf *b = user;
    size_t len = size * n;
    if (b->len + len >= sizeof b->data)
        return 0;                   /* too long: the transfer fails, the flow is denied */
    memcpy(b->data + b->len, ptr, len);
    b->len += len;
    return len;
}

/* Every address curl is about to connect to for a screened policy: a name
 * in a tenant's webhook URL may resolve to the host's own services (SSRF,
 * DNS rebinding), so the check is on the address, at connect time. */
static curl_socket_t open_screened(void *user, curlsocktype purpose, struct curl_sockaddr *a)
{
    const char *const *allow = user;
    if (purpose != CURLSOCKTYPE_IPCXN || cell_net_screen(&a->addr, allow))
        return CURL_SOCKET_BAD;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* ---- libcurl, loaded on the first webhook question -------------------------------
 * Linking it would load it and its dependencies (Kerberos, LDAP, SSH, HTTP/2,
 * IDN...) into every daemon at start, most of which never asks a webhook. */
static struct {
    __typeof__(curl_global_init) *global_init;
    __typeof__(curl_easy_init) *easy_init;
    __typeof__(curl_easy_setopt) *easy_setopt;
    __typeof__(curl_easy_perform) *easy_perform;
    __typeof__(curl_easy_getinfo) *easy_getinfo;
    __typeof__(curl_easy_cleanup) *easy_cleanup;
    __typeof__(curl_slist_append) *slist_append;
    __typeof__(curl_slist_free_all) *slist_free_all;
} curl_fn;
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_loaded;

#define CURL_SYM(h, field, name) (curl_fn.field = (__typeof__(curl_fn.field))dlsym(h, name)) != NULL

/* The handle stays open for the life of the daemon.  A daemon without
 * libcurl denies every decide question (and says why, once). */
static void curl_load(void)
{
    void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *m = dlerror();
        srv_slog(SLOG_ERROR, NULL, "decide webhooks deny every flow: cannot load libcurl.so.4: %s",
             m ? m : "dlopen failed");
        return;
    }
    if (CURL_SYM(h, global_init, "curl_global_init") && CURL_SYM(h, easy_init, "curl_easy_init") &&
        CURL_SYM(h, easy_setopt, "curl_easy_setopt") && CURL_SYM(h, easy_perform, "curl_easy_perform") &&
        CURL_SYM(h, easy_getinfo, "curl_easy_getinfo") && CURL_SYM(h, easy_cleanup, "curl_easy_cleanup") &&
        CURL_SYM(h, slist_append, "curl_slist_append") && CURL_SYM(h, slist_free_all, "curl_slist_free_all") &&
        curl_fn.global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK) {
        curl_loaded = 1;
        return;
    }
    srv_slog(SLOG_ERROR, NULL, "decide webhooks deny every flow: libcurl.so.4 lacks a function or failed to initialise");
    dlclose(h);
}

/* POST the flow's metadata; only a 200 with {"allow": true} allows.  Any
 * failure, timeout included, denies.  https:// is verified against the
 * host's trust store (curl's default); no proxy from the environment. */
static int ask_webhook(const char *url, int timeout_ms, const char *body, const char *const *screen_allow,
                       int screened)
{
    pthread_once(&curl_once, curl_load);
    CURL *curl = curl_loaded ? curl_fn.easy_init() : NULL;
    if (!curl)
        return 0;
    reply_buf *b = calloc(1, sizeof *b);
    struct curl_slist *hdr = curl_fn.slist_append(NULL, "Content-Type: application/json");
    long status = 0;
    int allow = 0;
    if (b && hdr) {
        curl_fn.easy_setopt(curl, CURLOPT_URL, url);
        curl_fn.easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_fn.easy_setopt(curl, CURLOPT_PROXY, "");
        if (screened) {
            curl_fn.easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, open_screened);
            curl_fn.easy_setopt(curl, CURLOPT_OPENSOCKETDATA, (void *)screen_allow);
        }
        curl_fn.easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_fn.easy_setopt(curl, CURLOPT_HTTPHEADER, hdr);
        curl_fn.easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
        curl_fn.easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_fn.easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
        curl_fn.easy_setopt(curl, CURLOPT_WRITEDATA, b);
        if (curl_fn.easy_perform(curl) == CURLE_OK &&
            curl_fn.easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200) {
            json_t *o = json_loadb(b->data, b->len, 0, NULL);
            allow = json_is_true(json_object_get(o, "allow"));
            json_decref(o);
        }
    }
    curl_fn.slist_free_all(hdr);
    free(b);
    curl_fn.easy_cleanup(curl);
    return allow;
}

int srv_egress_decide(void *user, const cell_net_flow *f, const char *url, int timeout_ms)
{
    scell *sc = user;
    return srv_egress_decide_as(sc->s, sc->tenant, sc->id, atomic_load(&sc->policy_screened), f, url, timeout_ms);
}

int srv_egress_decide_as(srv *s, const char *tenant, const char *id, int screened, const cell_net_flow *f,
                     const char *url, int timeout_ms)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "tenant", tenant, "cell", id, "transport",
                          f->transport, "src", f->src, "dst", f->dst, "rule", f->rule);
    if (!o)
        return 0;
    json_object_set_new(o, "host", f->host ? json_string(f->host) : json_null());
    char *body = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (!body)
        return 0;
    char key[768];
    snprintf(key, sizeof key, "%s|%s|%s|%s|%s", url, id, f->transport, f->dst, f->host ? f->host : "");
    int allow, cached = f->cache_s > 0 && cache_get(key, &allow);
    if (!cached) {
        allow = ask_webhook(url, timeout_ms, body, s->opt.tenant_dest_allow, screened);
        if (f->cache_s > 0)
            cache_put(key, allow, f->cache_s);
    }
    srv_metrics_decide(allow, cached);
    free(body);
    return allow;
}

/* The value goes straight into the request head; neither it nor the store's
 * error (which could only name the secret) is logged here. */
int srv_egress_secret(void *user, const char *name, char **value, size_t *len)
{
    scell *sc = user;
    cell_error err = { 0 };
    return store_secret_get(sc->s->st, sc->tenant, name, value, len, &err) < 0 ? -1 : 0;
}
