/* fuzz_route.c: libFuzzer target for request routing and JSON bodies, with
 * no network and no server.  The input is "METHOD\nPATH\nBODY": the path is
 * matched against both route tables by srv_router_match() and checked against a
 * naive reference matcher; the body is parsed as the daemon parses it and its
 * fields are read the way the handlers' json_get_* helpers read them.
 *
 * routes.c names every handler, so they are linked as stubs that must never
 * run (generated, see below): the fuzzer needs neither libmicrohttpd nor SQLite. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/handlers.h"

/* ---- handler stubs: routing never calls a handler -----------------------------
 * The stubs of the handlers routes.c names are generated at build time from
 * the prototypes in the src/server headers (fuzz/gen_route_stubs.py, linked as
 * $(BUILD)/fuzz/route_stubs.c), so a handler added or renamed cannot break
 * this build. */

/* srv_h_not_implemented (in routes.c) calls this. */
int srv_reply_problem(sreq *r, unsigned status, const char *type, const char *fmt, ...)
{
    (void)r, (void)status, (void)type, (void)fmt;
    abort();
}

/* ---- a naive reference matcher ------------------------------------------------
 * Splits both strings into '/'-separated segments.  A pattern segment {x}
 * takes one non-empty segment; a last segment "*" takes a non-empty rest
 * whose first segment is non-empty. */
#define REF_MAX_SEGS 600

static size_t split(const char *s, const char **seg, size_t *len)
{
    size_t n = 0;
    assert(*s == '/');
    for (const char *p = s + 1;; ) {
        const char *slash = strchr(p, '/');
        size_t l = slash ? (size_t)(slash - p) : strlen(p);
        assert(n < REF_MAX_SEGS);
        seg[n] = p, len[n] = l, n++;
        if (!slash)
            return n;
        p = slash + 1;
    }
}

typedef struct ref_match {
    size_t n_params;
    const char *val[8];
    size_t val_len[8];
} ref_match;

static int ref_pattern(const char *pattern, const char *path, ref_match *m)
{
    static const char *ps[REF_MAX_SEGS], *qs[REF_MAX_SEGS];
    static size_t pl[REF_MAX_SEGS], ql[REF_MAX_SEGS];
    m->n_params = 0;
    if (*path != '/')
        return 0;
    size_t np = split(pattern, ps, pl), nq = split(path, qs, ql);
    for (size_t i = 0; i < np; i++) {
        if (i == np - 1 && pl[i] == 1 && ps[i][0] == '*')
            return i < nq && ql[i] > 0;
        if (i >= nq)
            return 0;
        if (ps[i][0] == '{') {
            if (ql[i] == 0 || m->n_params == ROUTE_MAX_PARAMS)
                return 0;
            m->val[m->n_params] = qs[i];
            m->val_len[m->n_params++] = ql[i];
        } else if (pl[i] != ql[i] || memcmp(ps[i], qs[i], pl[i]) != 0) {
            return 0;
        }
    }
    return np == nq;
}

/* The reference's answer for a whole table: ROUTER_* and the route index. */
static int ref_match_table(const route *t, size_t n, const char *method, const char *path, size_t *idx,
                           ref_match *m)
{
    int seen = 0;
    if (strlen(path) >= sizeof ((route_match *)0)->buf)
        return ROUTER_TOO_LONG;
    for (size_t i = 0; i < n; i++) {
        if (!ref_pattern(t[i].pattern, path, m))
            continue;
        if (strcmp(t[i].method, method) == 0) {
            *idx = i;
            return ROUTER_FOUND;
        }
        seen = 1;
    }
    return seen ? ROUTER_BAD_METHOD : ROUTER_NO_PATH;
}

static void check_table(const route *t, size_t n, const char *method, const char *path, const char *extra_name)
{
    route_match m;
    memset(&m, 0xA5, sizeof m);                 /* srv_router_match must not read stale state */
    int rc = srv_router_match(t, n, method, path, &m);
    size_t ref_idx = 0;
    ref_match ref;
    int ref_rc = ref_match_table(t, n, method, path, &ref_idx, &ref);
    assert(rc == ref_rc);
    if (rc != ROUTER_FOUND) {
        assert(rc == ROUTER_NO_PATH || rc == ROUTER_BAD_METHOD || rc == ROUTER_TOO_LONG);
        if (rc != ROUTER_TOO_LONG)
            assert(m.n_params == 0);
        assert(srv_router_param(&m, "cell") == NULL || rc == ROUTER_TOO_LONG);
        return;
    }
    assert(m.route == &t[ref_idx]);
    assert(strcmp(m.route->method, method) == 0);
    assert(m.n_params <= ROUTE_MAX_PARAMS && m.n_params == ref.n_params);
    for (size_t i = 0; i < m.n_params; i++) {
        /* Each capture is a NUL-terminated copy inside buf, equal to the
         * reference's segment, and named by a "{name}" of the pattern. */
        assert(m.values[i] >= m.buf && m.values[i] < m.buf + sizeof m.buf);
        size_t len = strnlen(m.values[i], (size_t)(m.buf + sizeof m.buf - m.values[i]));
        assert(m.values[i] + len < m.buf + sizeof m.buf);
        assert(len == ref.val_len[i] && len > 0 && memcmp(m.values[i], ref.val[i], len) == 0);
        assert(!memchr(m.values[i], '/', len));
        assert(m.names[i] > m.route->pattern && m.names[i][-1] == '{');
        size_t nlen = strcspn(m.names[i], "}");
        assert(m.names[i][nlen] == '}');
        char name[64];
        assert(nlen < sizeof name);
        memcpy(name, m.names[i], nlen);
        name[nlen] = '\0';
        /* srv_router_param answers the first capture of that name. */
        const char *v = srv_router_param(&m, name);
        assert(v);
        size_t first = 0;
        while (strncmp(m.names[first], name, nlen) != 0 || m.names[first][nlen] != '}')
            first++;
        assert(v == m.values[first]);
    }
    if (m.route->flags & ROUTE_CELL)
        assert(srv_router_param(&m, "cell"));
    else
        assert(!srv_router_param(&m, "cell"));
    srv_router_param(&m, "");
    srv_router_param(&m, extra_name);
    assert(!(m.route->flags & ROUTE_STREAM_BODY) || m.route->body);
}

/* ---- JSON bodies, read as the handlers read them ---------------------------- */
/* request.c's field(): an explicit null is an absent field. */
static json_t *field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return v && json_is_null(v) ? NULL : v;
}

static int get_str(json_t *o, const char *key, const char **out)
{
    json_t *v = field(o, key);
    if (!v)
        return 0;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return -1;
    *out = json_string_value(v);
    return 1;
}

static int get_int(json_t *o, const char *key, int64_t min, int64_t max, int64_t *out)
{
    json_t *v = field(o, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return -1;
    *out = json_integer_value(v);
    return 1;
}

static int get_bool(json_t *o, const char *key, int *out)
{
    json_t *v = field(o, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return -1;
    *out = json_is_true(v);
    return 1;
}

static int get_size(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = field(o, key);
    if (!v)
        return 0;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 1;
    }
    cell_error e = { 0 };
    return json_is_string(v) && cell_parse_size(json_string_value(v), out, &e) == 0 ? 1 : -1;
}

static int get_strv(json_t *o, const char *key)
{
    json_t *v = field(o, key), *item;
    size_t i;
    if (!v)
        return 0;
    if (!json_is_array(v) || json_array_size(v) > 4096)
        return -1;
    json_array_foreach(v, i, item)
        if (!json_is_string(item) || strlen(json_string_value(item)) != json_string_length(item))
            return -1;
    return 1;
}

static int get_env(json_t *o, const char *key)
{
    json_t *v = field(o, key), *val;
    const char *name;
    if (!v)
        return 0;
    if (!json_is_object(v) || json_object_size(v) > 4096)
        return -1;
    json_object_foreach(v, name, val) {
        if (!json_is_string(val) || !name[0] || strchr(name, '=') ||
            strlen(json_string_value(val)) != json_string_length(val))
            return -1;
        char *kv;
        if (asprintf(&kv, "%s=%s", name, json_string_value(val)) < 0)
            return -1;
        assert(strlen(kv) == strlen(name) + 1 + json_string_length(val));
        free(kv);
    }
    return 1;
}

/* Every field any handler reads, with the types and ranges it reads them with. */
static void read_fields(json_t *o)
{
    const char *s;
    int64_t n;
    int b;
    uint64_t z;
    static const char *const strs[] = { "command", "cwd", "encoding", "data", "from", "to", "tenant", "label",
                                        "name", "image", "lane", "hostname", "type", "target", "source" };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (get_str(o, strs[i], &s) > 0)
            assert(strlen(s) == json_string_length(json_object_get(o, strs[i])));
    static const char *const bools[] = { "tty", "interactive", "overwrite", "admin", "readonly" };
    for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++)
        if (get_bool(o, bools[i], &b) > 0)
            assert(b == 0 || b == 1);
    static const struct { const char *key; int64_t min, max; } ints[] = {
        { "timeoutMs", 0, INT64_MAX }, { "maxOutputBytes", 0, INT64_MAX }, { "cols", 0, 65535 },
        { "rows", 0, 65535 }, { "rate", 0, 1000000 }, { "maxCells", 0, 1000000 }, { "maxLanes", 0, 1000000 },
        { "ttl", 0, 365ll * 24 * 3600 }, { "pids", 1, 1 << 22 }, { "maxConcurrentProcesses", 0, 1 << 20 },
        { "defaultRunTimeoutMs", 0, INT64_MAX / 2 }, { "maxRunTimeoutMs", 0, INT64_MAX / 2 },
        { "maxLogBytesPerProcess", 0, INT64_MAX / 2 }, { "maxInputBytesPerRequest", 0, INT64_MAX / 2 },
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (get_int(o, ints[i].key, ints[i].min, ints[i].max, &n) > 0)
            assert(n >= ints[i].min && n <= ints[i].max);
    static const char *const sizes[] = { "size", "memory", "disk", "maxMemory", "maxDisk" };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        get_size(o, sizes[i], &z);
    get_strv(o, "args");
    get_env(o, "env");
    /* cells.c: resources.cpus and mounts[]. */
    json_t *res = field(o, "resources");
    if (json_is_object(res)) {
        read_fields(res);
        json_t *c = field(res, "cpus");
        if (json_is_number(c))
            (void)(int64_t)(json_number_value(c) > 0 && json_number_value(c) <= 1024 ? json_number_value(c) * 1000 : 0);
    }
    json_t *mounts = field(o, "mounts"), *m;
    size_t i;
    if (json_is_array(mounts) && json_array_size(mounts) <= 16)
        json_array_foreach(mounts, i, m)
            if (json_is_object(m))
                read_fields(m);
}

/* A walk over any value with the accessors of each type. */
static size_t walk(json_t *v, int depth)
{
    size_t count = 1, i;
    const char *key;
    json_t *item;
    assert(depth < 4096);
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        json_object_foreach(v, key, item) {
            assert(json_object_get(v, key) == item);
            count += walk(item, depth + 1);
        }
        break;
    case JSON_ARRAY:
        json_array_foreach(v, i, item)
            count += walk(item, depth + 1);
        break;
    case JSON_STRING:
        assert(json_string_value(v)[json_string_length(v)] == '\0');
        break;
    case JSON_INTEGER:
        (void)json_integer_value(v);
        break;
    case JSON_REAL:
        (void)json_real_value(v);
        break;
    default:
        break;
    }
    return count;
}

static void check_body(const char *body, size_t len)
{
    json_error_t jerr;
    json_t *v = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v)
        return;
    walk(v, 0);
    if (json_is_object(v))
        read_fields(v);
    /* What the daemon writes back (json_dumps) must read as the same value. */
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text) {
        json_t *again = json_loads(text, JSON_DECODE_ANY, &jerr);
        assert(again && json_equal(v, again));
        json_decref(again);
        free(text);
    }
    json_decref(v);
}

/* ---- the entry point ------------------------------------------------------------ */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    const char *nl1 = memchr(p, '\n', size);
    if (!nl1)
        return 0;
    const char *nl2 = memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1));
    if (!nl2)
        nl2 = end;
    char method[32], *path = malloc((size_t)(nl2 - nl1));
    if (!path)
        return 0;
    snprintf(method, sizeof method, "%.*s", (int)(nl1 - p), p);
    size_t plen = (size_t)(nl2 - nl1 - 1);
    memcpy(path, nl1 + 1, plen);
    path[plen] = '\0';                  /* an embedded NUL ends the path, as in a C string */
    /* begin() refuses a decoded path with a control byte (a NUL among
     * them) before routing: the offset is the first such byte's. */
    long ctl = srv_router_path_ctl(path, plen);
    for (size_t i = 0; i < (ctl < 0 ? plen : (size_t)ctl); i++)
        assert((unsigned char)path[i] >= 0x20 && (unsigned char)path[i] != 0x7f);
    assert(ctl < 0 || (unsigned char)path[ctl] < 0x20 || (unsigned char)path[ctl] == 0x7f);
    assert(memchr(path, '\0', plen) == NULL || ctl >= 0);

    /* As http.c's begin(): the query string is cut.  Both tables are tried
     * (begin() picks one by the "/cells/" prefix). */
    path[strcspn(path, "?")] = '\0';
    const char *extra = path + strlen(path) / 2;
    check_table(srv_control_routes, srv_n_control_routes, method, path, extra);
    check_table(srv_agent_routes, srv_n_agent_routes, method, path, extra);
    free(path);
    if (nl2 < end)
        check_body(nl2 + 1, (size_t)(end - nl2 - 1));
    return 0;
}
