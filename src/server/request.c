/* request.c: what every handler uses to read a request and answer it:
 * JSON bodies and fields with errors that name the field, problem+json. */
#include "server/handlers.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Problem types are URIs; the sandbox-agent API uses this scheme and its
 * clients match on the short name at the end. */
#define PROBLEM_TYPE_BASE "urn:sandbox-agent:error:"

int64_t srv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void srv_deadline_after(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

int srv_reply_event_stream(sreq *r, MHD_ContentReaderCallback read, void *state, MHD_ContentReaderFreeCallback free_state)
{
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, read, state, free_state);
    if (!resp) {
        free_state(state);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    srv_conns_long_lived(r);
    return srv_reply_response(r, 200, resp);
}

int srv_reply_response(sreq *r, unsigned status, struct MHD_Response *resp)
{
    if (!resp)
        return MHD_NO;
    if (r->responded) {             /* a handler bug; keep the first answer */
        MHD_destroy_response(resp);
        return MHD_YES;
    }
    r->status = status;
    r->responded = 1;
    /* A request the daemon makes itself (a run's cell, rundrive.c) has no
     * connection: its answer is r->status and r->audit's "error". */
    if (!r->conn) {
        MHD_destroy_response(resp);
        return MHD_YES;
    }
    srv_cors_add_headers(r, resp);
    /* An answer may echo what the client sent (a path, a name): no browser
     * may take it for a page or a script of another type than it says. */
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (r->url && strncmp(r->url, "/ui", 3) == 0 && (r->url[3] == '\0' || r->url[3] == '/' || r->url[3] == '?'))
        srv_ui_security_headers(resp);
    /* libmicrohttpd accepts a response only before the body or after all
     * of it; one made in between waits for the last call. */
    if (r->in_body) {
        r->deferred = resp;
        return MHD_YES;
    }
    enum MHD_Result ok = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ok;
}

static int reply_text(sreq *r, unsigned status, const char *type, char *text)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == 405 && r->allow[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    return srv_reply_response(r, status, resp);
}

int srv_reply_json(sreq *r, unsigned status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return MHD_NO;
    return reply_text(r, status, "application/json", text);
}

int srv_reply_empty(sreq *r, unsigned status)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    return srv_reply_response(r, status, resp);
}

static const char *status_title(unsigned status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 507: return "Insufficient Storage";
    default:  return status >= 500 ? "Internal Server Error" : "Error";
    }
}

/* sandbox-agent names the title after the type ("Invalid Request", "Stream
 * Error"), except for 413, and starts the detail with the type in words. */
static void type_words(const char *type, char *out, size_t size, int title_case)
{
    size_t i = 0;
    for (const char *p = type; *p && i + 1 < size; p++, i++) {
        char ch = *p == '_' ? ' ' : *p;
        if (title_case && (p == type || p[-1] == '_') && ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        out[i] = ch;
    }
    out[i] = '\0';
}

/* A host-unique lane id ("l-" and 16 hex digits) at `p`? */
static int lane_id_at(const char *p)
{
    if (p[0] != 'l' || p[1] != '-')
        return 0;
    for (int i = 2; i < 18; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return !((p[18] >= '0' && p[18] <= '9') || (p[18] >= 'a' && p[18] <= 'f'));
}

/* Messages from libcell and the store may name host paths in the state
 * directory and host-unique lane ids; a tenant sees neither: the state
 * directory becomes "(state)" and a lane id the tenant's name for it (or
 * "(lane)" if it is not the caller's). */
static void scrub_message(sreq *r, const char *in, char *out, size_t size)
{
    const char *state = r->s->state_dir;
    size_t o = 0, slen = strlen(state);
    while (*in && o + 1 < size) {
        const char *put = NULL;
        char name[64];
        store_lane l;
        if (slen > 1 && strncmp(in, state, slen) == 0) {
            put = "(state)";
            in += slen;
        } else if (lane_id_at(in)) {
            char id[19];
            memcpy(id, in, 18);
            id[18] = '\0';
            int mine = r->tok.tenant[0] && store_lane_get_by_id(r->s->st, r->tok.tenant, id, &l, NULL) == 0;
            snprintf(name, sizeof name, "%s", mine ? l.name : "(lane)");
            put = name;
            in += 18;
        }
        if (!put) {
            out[o++] = *in++;
            continue;
        }
        int n = snprintf(out + o, size - o, "%s", put);
        o = n < 0 || (size_t)n >= size - o ? size - 1 : o + (size_t)n;
    }
    out[o] = '\0';
}

/* jansson takes UTF-8 only, and a message may quote the request's own
 * bytes (a path, an id: "/v1/nosuch%ff"), or be cut inside a character: such
 * a message loses its non-ASCII bytes ('?') rather than the answer (with no
 * answer begin() went on as if the request had passed its checks). */
static void utf8_or_ascii(char *s)
{
    json_t *t = json_string(s);
    if (t) {
        json_decref(t);
        return;
    }
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            *s = '?';
}

static int reply_problem_v(sreq *r, unsigned status, const char *type, json_t *details, const char *fmt, va_list ap)
{
    char raw[1024], msg[1024], detail[1200], uri[128], title[64], words[64];
    vsnprintf(raw, sizeof raw, fmt, ap);
    scrub_message(r, raw, msg, sizeof msg);
    utf8_or_ascii(msg);
    snprintf(uri, sizeof uri, PROBLEM_TYPE_BASE "%s", type);
    type_words(type, words, sizeof words, 0);
    snprintf(detail, sizeof detail, "%s: %s", words, msg);
    if (status == 404 || status == 413 || status == 405 || status == 429)
        snprintf(title, sizeof title, "%s", status_title(status));
    else
        type_words(type, title, sizeof title, 1);
    json_t *body = json_pack("{s:s, s:s, s:i, s:s}", "type", uri, "title", title, "status", (int)status,
                             "detail", detail);
    if (!body) {
        json_decref(details);
        return MHD_NO;
    }
    if (!details && (status == 409 || status == 502))
        details = json_pack("{s:s}", "message", msg);
    if (details)
        json_object_set_new(body, "details", details);
    return srv_reply_problem_body(r, status, body, msg);
}

int srv_reply_problem_body(sreq *r, unsigned status, json_t *body, const char *audit_msg)
{
    srv_req_audit(r, "error", json_string(audit_msg));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return MHD_NO;
    return reply_text(r, status, "application/problem+json", text);
}

int srv_reply_problem(sreq *r, unsigned status, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int ret = reply_problem_v(r, status, type, NULL, fmt, ap);
    va_end(ap);
    return ret;
}

int srv_reply_problem_details(sreq *r, unsigned status, const char *type, json_t *details, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int ret = reply_problem_v(r, status, type, details, fmt, ap);
    va_end(ap);
    return ret;
}

int srv_reply_error(sreq *r, const cell_error *e)
{
    const char *msg = e->message[0] ? e->message : strerror(e->code);
    switch (e->code) {
    case ENOENT:       return srv_reply_problem(r, 404, "not_found", "%s", msg);
    case EEXIST:       return srv_reply_problem(r, 409, "conflict", "%s", msg);
    case EBUSY:        return srv_reply_problem(r, 409, "conflict", "%s", msg);
    case ENOTEMPTY:    return srv_reply_problem(r, 409, "conflict", "%s", msg);
    case EINVAL:
    case ENAMETOOLONG:
    case ENOTDIR:
    case EISDIR:
    case ELOOP:
    case EXDEV:        return srv_reply_problem(r, 400, "invalid_request", "%s", msg);
    case EACCES:
    case EPERM:        return srv_reply_problem(r, 403, "forbidden", "%s", msg);
    case EDQUOT:       return srv_reply_problem(r, 403, "quota_exceeded", "%s", msg);
    case EFBIG:
    case E2BIG:        return srv_reply_problem(r, 413, "payload_too_large", "%s", msg);
    case ENOSPC:       return srv_reply_problem(r, 507, "insufficient_storage", "%s", msg);
    case ETIMEDOUT:    return srv_reply_problem(r, 504, "timeout", "%s", msg);
    case ECONNRESET:
    case ESRCH:        return srv_reply_problem(r, 409, "cell_stopped", "%s", msg);
    case ENOSYS:
    case EOPNOTSUPP:   return srv_reply_problem(r, 501, "not_implemented", "%s", msg);
    default:           return srv_reply_problem(r, 500, "internal", "%s", msg);
    }
}

void srv_req_audit(sreq *r, const char *key, json_t *value)
{
    if (!value)
        return;
    if (!r->audit)
        r->audit = json_object();
    if (r->audit)
        json_object_set_new(r->audit, key, value);
    else
        json_decref(value);
}

const char *srv_req_query(sreq *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

int srv_req_query_integer(sreq *r, const char *key, long long *out, int *present)
{
    const char *v = srv_req_query(r, key);
    if (present)
        *present = v != NULL;
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end)
        return -1;
    *out = n;
    return 0;
}

static enum MHD_Result find_nul(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                                const char *value, size_t value_size)
{
    (void)kind;
    const char **found = cls;
    if (strlen(key) != key_size || (value && strlen(value) != value_size)) {
        *found = key;
        return MHD_NO;
    }
    return MHD_YES;
}

const char *srv_req_query_nul(sreq *r)
{
    const char *found = NULL;
    MHD_get_connection_values_n(r->conn, MHD_GET_ARGUMENT_KIND, find_nul, &found);
    return found;
}

int srv_req_json(sreq *r, json_t **out)
{
    json_error_t jerr;
    *out = NULL;
    if (r->body_len == 0) {
        srv_reply_problem(r, 400, "invalid_request", "a JSON object body is required");
        return -1;
    }
    json_t *v = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v) {
        srv_reply_problem(r, 400, "invalid_request", "body is not valid JSON: %s (line %d, column %d)",
                      jerr.text, jerr.line, jerr.column);
        return -1;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        srv_reply_problem(r, 422, "invalid_request", "body must be a JSON object");
        return -1;
    }
    *out = v;
    return 0;
}

/* Unknown members are refused rather than ignored: a mistyped optional
 * field ("memroy") would otherwise silently get its default. */
int srv_req_check_known(sreq *r, json_t *obj, const char *where, const char *const *known)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        size_t i = 0;
        while (known[i] && strcmp(known[i], key) != 0)
            i++;
        if (known[i])
            continue;
        char list[1024] = "";
        size_t used = 0;
        for (i = 0; known[i] && used < sizeof list; i++) {
            int n = snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", known[i]);
            used += n > 0 ? (size_t)n : 0;
        }
        srv_reply_problem(r, 400, "invalid_request", "field \"%s%s%.200s\" is not known; known fields: %s",
                      where, *where ? "." : "", key, list[0] ? list : "(none)");
        return -1;
    }
    return 0;
}

int srv_req_check_fields(sreq *r, json_t *obj, const char *where, ...)
{
    const char *known[REQ_FIELDS_MAX + 1];
    size_t n = 0;
    va_list ap;
    va_start(ap, where);
    for (const char *k; (k = va_arg(ap, const char *));)
        if (n < REQ_FIELDS_MAX)
            known[n++] = k;
    va_end(ap);
    known[n] = NULL;
    return srv_req_check_known(r, obj, where, known);
}

static json_t *field(sreq *r, json_t *o, const char *key, int required)
{
    json_t *v = json_object_get(o, key);
    if (v && json_is_null(v))
        v = NULL;
    if (!v && required)
        srv_reply_problem(r, 422, "invalid_request", "missing field \"%s\"", key);
    return v;
}

int srv_json_get_str(sreq *r, json_t *o, const char *key, int required, const char **out)
{
    json_t *v = field(r, o, key, required);
    if (!v)
        return required ? -1 : 0;
    if (!json_is_string(v)) {
        srv_reply_problem(r, 422, "invalid_request", "field \"%s\" must be a string", key);
        return -1;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        srv_reply_problem(r, 400, "invalid_request", "field \"%s\" must not contain NUL characters", key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

int srv_json_get_int(sreq *r, json_t *o, const char *key, int required, int64_t min, int64_t max, int64_t *out)
{
    json_t *v = field(r, o, key, required);
    if (!v)
        return required ? -1 : 0;
    if (!json_is_integer(v)) {
        srv_reply_problem(r, 422, "invalid_request", "field \"%s\" must be an integer", key);
        return -1;
    }
    json_int_t n = json_integer_value(v);
    if (n < min || n > max) {
        srv_reply_problem(r, 400, "invalid_request", "field \"%s\" must be between %lld and %lld",
                      key, (long long)min, (long long)max);
        return -1;
    }
    *out = n;
    return 0;
}

int srv_json_get_bool(sreq *r, json_t *o, const char *key, int *out)
{
    json_t *v = field(r, o, key, 0);
    if (!v)
        return 0;
    if (!json_is_boolean(v)) {
        srv_reply_problem(r, 422, "invalid_request", "field \"%s\" must be true or false", key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

int srv_json_get_size(sreq *r, json_t *o, const char *key, uint64_t *out)
{
    json_t *v = field(r, o, key, 0);
    if (!v)
        return 0;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    cell_error e = { 0 };
    if (json_is_string(v) && cell_parse_size(json_string_value(v), out, &e) == 0)
        return 0;
    srv_reply_problem(r, 400, "invalid_request",
                  "field \"%s\" must be a byte count or a size like \"512M\" or \"2G\"", key);
    return -1;
}

int srv_json_get_strv(sreq *r, json_t *o, const char *key, const char ***out, size_t *n)
{
    json_t *v = field(r, o, key, 0);
    *out = NULL;
    *n = 0;
    if (!v)
        return 0;
    if (!json_is_array(v) || json_array_size(v) > 4096) {
        srv_reply_problem(r, 422, "invalid_request", "field \"%s\" must be an array of strings", key);
        return -1;
    }
    const char **vec = calloc(json_array_size(v) + 1, sizeof *vec);
    if (!vec)
        return srv_reply_problem(r, 500, "internal", "out of memory"), -1;
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        if (!json_is_string(item) || strlen(json_string_value(item)) != json_string_length(item)) {
            free(vec);
            srv_reply_problem(r, 422, "invalid_request", "field \"%s\" item %zu must be a string", key, i);
            return -1;
        }
        vec[i] = json_string_value(item);
    }
    *out = vec;
    *n = json_array_size(v);
    return 0;
}

void srv_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

int srv_json_get_env(sreq *r, json_t *o, const char *key, char ***out, size_t *n)
{
    json_t *v = field(r, o, key, 0);
    *out = NULL;
    *n = 0;
    if (!v)
        return 0;
    if (!json_is_object(v) || json_object_size(v) > 4096) {
        srv_reply_problem(r, 422, "invalid_request", "field \"%s\" must be an object of strings", key);
        return -1;
    }
    char **vec = calloc(json_object_size(v) + 1, sizeof *vec);
    if (!vec)
        return srv_reply_problem(r, 500, "internal", "out of memory"), -1;
    size_t i = 0;
    const char *name;
    json_t *val;
    json_object_foreach(v, name, val) {
        if (!json_is_string(val)) {
            srv_strv_free(vec);
            srv_reply_problem(r, 422, "invalid_request", "field \"%s.%s\" must be a string", key, name);
            return -1;
        }
        if (!name[0] || strchr(name, '=') || strlen(json_string_value(val)) != json_string_length(val)) {
            srv_strv_free(vec);
            srv_reply_problem(r, 400, "invalid_request",
                          "field \"%s\": \"%s\" must be a non-empty name without '=' with a string value",
                          key, name);
            return -1;
        }
        if (asprintf(&vec[i], "%s=%s", name, json_string_value(val)) < 0) {
            vec[i] = NULL;
            srv_strv_free(vec);
            return srv_reply_problem(r, 500, "internal", "out of memory"), -1;
        }
        i++;
    }
    *out = vec;
    *n = i;
    return 0;
}
