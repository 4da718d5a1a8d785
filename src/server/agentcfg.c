/* agentcfg.c: /cells/{cell}/v1/config/mcp and /config/skills, wire-compatible
 * with sandbox-agent 0.4.2 (docs/compat/sandbox-agent-0.4.2-config.md), and
 * the functions the ACP proxy uses to hand that configuration to an agent
 * (agentcfg.h).  Files are read and written by transfer processes inside
 * the cell (files.c); paths resolve in the cell's root. */
#include "server/agentcfg.h"
#include "server/handlers.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define CFG_HOME   "/root"                    /* relative directories, as the fs API */
#define CFG_SUBDIR "/.sandbox-agent/config"
#define PATH_MAX_  4096

#define COPY_MAX_DEPTH 8
#define COPY_MAX_FILES 1024
#define COPY_MAX_BYTES (16u << 20)

/* One of the two config files: its name, its query parameter, the prefix
 * of the reference's 404 ("session not found: mcp:NAME") and its entry
 * normaliser (validates an entry and builds the reference's stored form). */
typedef int (*cfg_norm_fn)(json_t *in, json_t **out, char *why, size_t size);
typedef struct cfg_kind {
    const char *file, *param, *prefix;
    cfg_norm_fn norm;
} cfg_kind;

/* ---- entry validation: the reference's serde types, field by field ------ */
#define BAD(...) (snprintf(why, size, __VA_ARGS__), -1)

static int has_nul(json_t *s) { return strlen(json_string_value(s)) != json_string_length(s); }

/* Optional fields: absent and null are the same (and dropped). */
static json_t *opt(json_t *in, const char *key)
{
    json_t *v = json_object_get(in, key);
    return v && !json_is_null(v) ? v : NULL;
}

static int copy_str(json_t *in, const char *key, int required, json_t *out, char *why, size_t size)
{
    json_t *v = opt(in, key);
    if (!v)
        return required ? BAD("missing field \"%s\"", key) : 0;
    if (!json_is_string(v) || has_nul(v))
        return BAD("field \"%s\" must be a string without NUL characters", key);
    return json_object_set(out, key, v);
}

static int str_array_ok(json_t *v)
{
    size_t i;
    json_t *e;
    if (!json_is_array(v))
        return 0;
    json_array_foreach(v, i, e)
        if (!json_is_string(e) || has_nul(e))
            return 0;
    return 1;
}

static int copy_str_array(json_t *in, const char *key, int dflt, json_t *out, char *why, size_t size)
{
    json_t *v = opt(in, key);
    if (!v)
        return dflt ? json_object_set_new(out, key, json_array()) : 0;
    if (!str_array_ok(v))
        return BAD("field \"%s\" must be an array of strings", key);
    return json_object_set(out, key, v);
}

static int copy_str_map(json_t *in, const char *key, json_t *out, char *why, size_t size)
{
    json_t *v = opt(in, key), *e;
    const char *k;
    if (!v)
        return 0;
    if (!json_is_object(v))
        return BAD("field \"%s\" must be an object of strings", key);
    json_object_foreach(v, k, e)
        if (!json_is_string(e) || has_nul(e))
            return BAD("field \"%s\" must be an object of strings (\"%s\" is not)", key, k);
    return json_object_set(out, key, v);
}

static int copy_bool(json_t *in, const char *key, json_t *out, char *why, size_t size)
{
    json_t *v = opt(in, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return BAD("field \"%s\" must be a boolean", key);
    return json_object_set(out, key, v);
}

static int copy_u64(json_t *in, const char *key, json_t *out, char *why, size_t size)
{
    json_t *v = opt(in, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return BAD("field \"%s\" must be a non-negative integer", key);
    return json_object_set(out, key, v);
}

/* oauth: false/true, or {clientId, clientSecret, scope} (others dropped). */
static int copy_oauth(json_t *in, json_t *out, char *why, size_t size)
{
    json_t *v = opt(in, "oauth");
    if (!v || json_is_boolean(v))
        return v ? json_object_set(out, "oauth", v) : 0;
    if (!json_is_object(v))
        return BAD("field \"oauth\" must be a boolean or an object");
    json_t *o = json_object();
    if (!o)
        return BAD("out of memory");
    static const char *const keys[] = { "clientId", "clientSecret", "scope" };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (copy_str(v, keys[i], 0, o, why, size) < 0) {
            json_decref(o);
            return BAD("field \"oauth.%s\" must be a string", keys[i]);
        }
    return json_object_set_new(out, "oauth", o);
}

/* The command: a string, or an array of strings (the reference's McpCommand). */
static int copy_command(json_t *in, json_t *out, char *why, size_t size)
{
    json_t *v = opt(in, "command");
    if (!v)
        return BAD("missing field \"command\"");
    if (json_is_array(v) ? !str_array_ok(v) : !json_is_string(v) || has_nul(v))
        return BAD("field \"command\" must be a string or an array of strings");
    return json_object_set(out, "command", v);
}

/* "stdio" is stored as "local" and "http" as "remote", as the reference does. */
static int mcp_norm(json_t *in, json_t **out, char *why, size_t size)
{
    *out = NULL;
    if (!json_is_object(in))
        return BAD("an MCP server config must be a JSON object");
    json_t *t = json_object_get(in, "type");
    if (!t)
        return BAD("missing field \"type\"");
    const char *ts = json_is_string(t) ? json_string_value(t) : "";
    int local = strcmp(ts, "local") == 0 || strcmp(ts, "stdio") == 0;
    if (!local && strcmp(ts, "remote") != 0 && strcmp(ts, "http") != 0)
        return BAD("field \"type\" must be one of \"local\", \"stdio\", \"http\", \"remote\"");
    json_t *o = json_pack("{s:s}", "type", local ? "local" : "remote");
    if (!o)
        return BAD("out of memory");
    int rc = local ? (copy_command(in, o, why, size) < 0 || copy_str_array(in, "args", 1, o, why, size) < 0 ||
                      copy_str_map(in, "env", o, why, size) < 0 || copy_bool(in, "enabled", o, why, size) < 0 ||
                      copy_u64(in, "timeoutMs", o, why, size) < 0 || copy_str(in, "cwd", 0, o, why, size) < 0)
                   : (copy_str(in, "url", 1, o, why, size) < 0 || copy_str_map(in, "headers", o, why, size) < 0 ||
                      copy_str(in, "bearerTokenEnvVar", 0, o, why, size) < 0 ||
                      copy_str_map(in, "envHeaders", o, why, size) < 0 || copy_oauth(in, o, why, size) < 0 ||
                      copy_bool(in, "enabled", o, why, size) < 0 || copy_u64(in, "timeoutMs", o, why, size) < 0 ||
                      copy_str(in, "transport", 0, o, why, size) < 0);
    if (rc) {
        json_decref(o);
        return -1;
    }
    *out = o;
    return 0;
}

static int skills_norm(json_t *in, json_t **out, char *why, size_t size)
{
    *out = NULL;
    if (!json_is_object(in))
        return BAD("a skills config must be a JSON object");
    json_t *src = json_object_get(in, "sources");
    if (!src)
        return BAD("missing field \"sources\"");
    if (!json_is_array(src))
        return BAD("field \"sources\" must be an array");
    json_t *arr = json_array(), *o = json_pack("{s:o}", "sources", arr), *e;
    if (!o)
        return BAD("out of memory");
    size_t i;
    json_array_foreach(src, i, e) {
        json_t *s = json_object();
        if (!s || json_array_append_new(arr, s) < 0 || !json_is_object(e) ||
            copy_str(e, "type", 1, s, why, size) < 0 || copy_str(e, "source", 1, s, why, size) < 0 ||
            copy_str_array(e, "skills", 0, s, why, size) < 0 || copy_str(e, "ref", 0, s, why, size) < 0 ||
            copy_str(e, "subpath", 0, s, why, size) < 0) {
            char inner[256];
            snprintf(inner, sizeof inner, "%s", json_is_object(e) ? why : "must be an object");
            json_decref(o);
            return BAD("sources[%zu]: %s", i, inner);
        }
    }
    *out = o;
    return 0;
}

static const cfg_kind MCP = { "mcp.json", "mcpName", "mcp", mcp_norm };
static const cfg_kind SKILLS = { "skills.json", "skillName", "skills", skills_norm };

int srv_agentcfg_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > AGENTCFG_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p == '/' || *p == '\\' || *p < 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

/* ---- paths ------------------------------------------------------------- */

/* `directory` made absolute (relative against /root) and collapsed
 * lexically ("//", ".", ".."): safe because it is still resolved inside
 * the cell's root, where ".." stops at "/". */
static int cfg_dir(const char *directory, char *out, size_t size, cell_error *err)
{
    char tmp[PATH_MAX_];
    int n = directory[0] == '/' ? snprintf(tmp, sizeof tmp, "%s", directory)
                                : snprintf(tmp, sizeof tmp, CFG_HOME "/%s", directory);
    if (n < 0 || (size_t)n >= sizeof tmp || size < 2)
        return util_fail(err, ENAMETOOLONG, "directory is longer than %zu bytes", sizeof tmp - 1);
    size_t o = 0;
    for (char *p = tmp; *p;) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (len == 0 || (len == 1 && p[0] == '.')) {
            /* nothing */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            while (o > 0 && out[--o] != '/')
                ;
        } else {
            if (o + 1 + len >= size)
                return util_fail(err, ENAMETOOLONG, "directory is too long");
            out[o++] = '/';
            memcpy(out + o, p, len);
            o += len;
        }
        p += len;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return 0;
}

static int cfg_file_path(const char *dir, const char *file, char *out, size_t size, cell_error *err)
{
    int n = snprintf(out, size, "%s" CFG_SUBDIR "/%s", strcmp(dir, "/") == 0 ? "" : dir, file);
    if (n < 0 || (size_t)n >= size)
        return util_fail(err, ENAMETOOLONG, "directory is too long");
    return 0;
}

/* ---- reading and writing files of the cell ------------------------------ */

/* The whole file at `path` (NUL-terminated) in *out, at most `max` bytes:
 * E2BIG beyond. */
static int read_small(cell *c, const char *path, size_t max, char **out, size_t *len, cell_error *err)
{
    cell_xfer x = { .fd = -1, .status_fd = -1 };
    *out = NULL;
    if (cell_file_read(c, path, &x, err) < 0)
        return -1;
    size_t cap = x.size && x.size < max ? (size_t)x.size + 1 : 64 * 1024, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        cell_xfer_end(&x, NULL);
        return util_fail(err, ENOMEM, "out of memory");
    }
    for (;;) {
        if (n == cap) {
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = ncap > cap ? realloc(buf, ncap + 1) : NULL;
            if (!nb) {
                free(buf);
                cell_xfer_end(&x, NULL);
                return ncap > cap ? util_fail(err, ENOMEM, "out of memory")
                                  : util_fail(err, E2BIG, "%s is larger than %zu bytes", path, max);
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = cell_xfer_read(&x, buf + n, cap - n, err);
        if (r < 0 || (r > 0 && n + (size_t)r > max)) {
            free(buf);
            cell_xfer_end(&x, NULL);
            return r < 0 ? -1 : util_fail(err, E2BIG, "%s is larger than %zu bytes", path, max);
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (cell_xfer_end(&x, err) < 0) {
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

static int write_small(cell *c, const char *path, const char *data, size_t len, cell_error *err)
{
    cell_xfer x = { .fd = -1, .status_fd = -1 };
    if (cell_file_write(c, path, O_WRONLY | O_CREAT | O_TRUNC, 0644, &x, err) < 0)
        return -1;
    if (cell_xfer_write(&x, data, len, err) < 0) {
        cell_xfer_end(&x, NULL);
        return -1;
    }
    return cell_xfer_end(&x, err);
}

/* The config object of `dir` (an empty one if the file or the directory is
 * missing), every entry validated and in its stored form. */
static int cfg_load(cell *c, const char *dir, const cfg_kind *k, json_t **out, cell_error *err)
{
    char path[PATH_MAX_ + 64], *text = NULL, why[256];
    size_t len = 0;
    *out = NULL;
    if (cfg_file_path(dir, k->file, path, sizeof path, err) < 0)
        return -1;
    /* Most session/new calls find no config: cell-init answers a stat
     * itself, while a read forks a transfer process in the cell (about
     * 2 ms each for mcp.json and skills.json, bench/agents.sh). */
    cell_stat st;
    if (cell_file_stat(c, path, &st, err) < 0 || read_small(c, path, AGENTCFG_FILE_MAX, &text, &len, err) < 0) {
        if (err->code != ENOENT && err->code != ENOTDIR)
            return -1;
        return (*out = json_object()) ? 0 : util_fail(err, ENOMEM, "out of memory");
    }
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr), *v, *nv;
    free(text);
    if (!doc)
        return util_fail(err, EINVAL, "invalid config file %s: %s at line %d column %d", path, jerr.text,
                         jerr.line, jerr.column);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return util_fail(err, EINVAL, "invalid config file %s: expected a map", path);
    }
    const char *name;
    void *tmp;
    json_object_foreach_safe(doc, tmp, name, v) {
        if (k->norm(v, &nv, why, sizeof why) < 0) {
            json_decref(doc);
            return util_fail(err, EINVAL, "invalid config file %s: %s", path, why);
        }
        json_object_set_new(doc, name, nv);
    }
    *out = doc;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The file's text: entries sorted by name, pretty-printed with two spaces,
 * no trailing newline (what the reference writes). */
static char *cfg_dump(json_t *doc)
{
    size_t n = json_object_size(doc), i = 0;
    const char **keys = calloc(n ? n : 1, sizeof *keys);
    json_t *sorted = json_object(), *v;
    const char *name;
    char *text = NULL;
    if (keys && sorted) {
        json_object_foreach(doc, name, v)
            keys[i++] = name;
        qsort(keys, n, sizeof *keys, cmp_str);
        for (i = 0; i < n; i++)
            json_object_set(sorted, keys[i], json_object_get(doc, keys[i]));
        text = json_dumps(sorted, JSON_INDENT(2));
    }
    free(keys);
    json_decref(sorted);
    return text;
}

/* Write the config object: a temporary file in the same directory renamed
 * over the old one, so a reader (or a crash) never sees half a file. */
static int cfg_store(cell *c, const char *dir, const cfg_kind *k, json_t *doc, cell_error *err)
{
    char cdir[PATH_MAX_ + 64], path[PATH_MAX_ + 64], tmp[PATH_MAX_ + 80];
    if (cfg_file_path(dir, k->file, path, sizeof path, err) < 0)
        return -1;
    snprintf(cdir, sizeof cdir, "%s", path);
    *strrchr(cdir, '/') = '\0';
    snprintf(tmp, sizeof tmp, "%s/.%s.cell-tmp", cdir, k->file);
    _cleanup_free_ char *text = cfg_dump(doc);
    if (!text)
        return util_fail(err, ENOMEM, "out of memory");
    size_t len = strlen(text);
    if (len > AGENTCFG_FILE_MAX)
        return util_fail(err, E2BIG, "%s would be larger than %u bytes", k->file, AGENTCFG_FILE_MAX);
    if (cell_file_mkdir(c, cdir, 0755, 1, err) < 0)
        return -1;
    cell_error e1 = { 0 };
    (void)cell_file_delete(c, tmp, 0, &e1);         /* a leftover, or a symlink planted in its place */
    if (write_small(c, tmp, text, len, err) < 0)
        return -1;
    if (cell_file_move(c, tmp, path, 1, err) < 0) {
        cell_error e2 = { 0 };
        (void)cell_file_delete(c, tmp, 0, &e2);    /* best effort: the move's error is the answer */
        return -1;
    }
    return 0;
}

/* ---- HTTP ----------------------------------------------------------------- */

/* A query parameter with its decoded length: NULL when missing or empty,
 * and a 400 when it holds a NUL ("%00"), which the C string would hide. */
static int cfg_param(sreq *r, const char *key, const char **out)
{
    const char *v = NULL;
    size_t len = 0;
    *out = NULL;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v, &len) != MHD_YES ||
        !v || len == 0)
        return srv_reply_problem(r, 400, "invalid_request", "missing required '%s' query parameter", key), -1;
    if (strlen(v) != len)
        return srv_reply_problem(r, 400, "invalid_request", "query parameter '%s' contains a NUL character", key), -1;
    *out = v;
    return 0;
}

static int cfg_query(sreq *r, const cfg_kind *k, char *dir, size_t size, const char **name)
{
    const char *d;
    cell_error e = { 0 };
    if (cfg_param(r, "directory", &d) < 0 || cfg_param(r, k->param, name) < 0)
        return -1;
    if (cfg_dir(d, dir, size, &e) < 0)
        return srv_reply_problem(r, 400, "invalid_request", "%s", e.message), -1;
    if (!srv_agentcfg_name_ok(*name))
        return srv_reply_problem(r, 400, "invalid_request",
                             "invalid %s: 1 to %d bytes without '/', '\\\\' or control characters, not '.' or '..'",
                             k->param, AGENTCFG_NAME_MAX), -1;
    return 0;
}

/* Errors in the reference's words: an invalid file is the client's (400),
 * an OS failure a 502 stream_error with the errno. */
static int cfg_reply_error(sreq *r, const cell_error *e)
{
    switch (e->code) {
    case EINVAL:
    case ELOOP:             /* a link out of the cell's root, or a magic link */
    case EXDEV:
        return srv_reply_problem(r, 400, "invalid_request", "%s", e->message);
    case E2BIG:
        return srv_reply_problem(r, 413, "payload_too_large", "%s", e->message);
    case ECONNRESET:
    case ESRCH:
    case ETIMEDOUT:
    case ENOMEM:
        return srv_reply_error(r, e);
    default:
        return srv_reply_problem(r, 502, "stream_error", "%s (os error %d)", strerror(e->code), e->code);
    }
}

/* The reference's 404 names the entry as a session, with a top-level
 * "sessionId" the generic problem helpers have no place for. */
static int cfg_reply_missing(sreq *r, const cfg_kind *k, const char *name)
{
    char id[AGENTCFG_NAME_MAX + 16];
    snprintf(id, sizeof id, "%s:%s", k->prefix, name);
    char detail[AGENTCFG_NAME_MAX + 48];
    snprintf(detail, sizeof detail, "session not found: %s", id);
    json_t *body = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "urn:sandbox-agent:error:session_not_found",
                             "title", "Session Not Found", "status", 404, "detail", detail, "sessionId", id);
    return body ? srv_reply_problem_body(r, 404, body, "not found") : MHD_NO;
}


static int cfg_get(sreq *r, const cfg_kind *k)
{
    char dir[PATH_MAX_];
    const char *name;
    if (cfg_query(r, k, dir, sizeof dir, &name) < 0)
        return MHD_YES;
    json_t *doc = NULL;
    cell_error e = { 0 };
    if (WITH_CELL(r->cell, &e, cfg_load(r->cell->c, dir, k, &doc, &e)) < 0)
        return cfg_reply_error(r, &e);
    json_t *v = json_incref(json_object_get(doc, name));
    json_decref(doc);
    return v ? srv_reply_json(r, 200, v) : cfg_reply_missing(r, k, name);
}

static int cfg_set(cell *c, const char *dir, const cfg_kind *k, const char *name, json_t *entry, cell_error *err)
{
    json_t *doc;
    if (cfg_load(c, dir, k, &doc, err) < 0)
        return -1;
    int rc = 0;
    if (entry)
        json_object_set(doc, name, entry);
    else if (json_object_del(doc, name) < 0)
        rc = 1;                                 /* nothing to delete: leave the file alone */
    if (rc == 0)
        rc = cfg_store(c, dir, k, doc, err);
    json_decref(doc);
    return rc < 0 ? -1 : 0;
}

static int cfg_put(sreq *r, const cfg_kind *k)
{
    char dir[PATH_MAX_], why[256];
    const char *name;
    if (cfg_query(r, k, dir, sizeof dir, &name) < 0)
        return MHD_YES;
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct || strncasecmp(ct, "application/json", 16) != 0)
        return srv_reply_problem(r, 415, "invalid_request", "expected a request with Content-Type: application/json");
    /* Any JSON value parses (null and 5 are 422s for the reference, as
     * type errors, not 400s); the body is within max_json_bytes (http.c). */
    json_error_t jerr;
    json_t *entry, *body = r->body_len ? json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr)
                                       : NULL;
    if (!body)
        return r->body_len ? srv_reply_problem(r, 400, "invalid_request", "body is not valid JSON: %s (line %d, column %d)",
                                           jerr.text, jerr.line, jerr.column)
                           : srv_reply_problem(r, 400, "invalid_request", "a JSON body is required");
    int bad = k->norm(body, &entry, why, sizeof why);
    json_decref(body);
    if (bad)
        return srv_reply_problem(r, 422, "invalid_request", "%s", why);
    cell_error e = { 0 };
    int rc = WITH_CELL(r->cell, &e, cfg_set(r->cell->c, dir, k, name, entry, &e));
    json_decref(entry);
    return rc < 0 ? cfg_reply_error(r, &e) : srv_reply_empty(r, 204);
}

static int cfg_delete(sreq *r, const cfg_kind *k)
{
    char dir[PATH_MAX_];
    const char *name;
    if (cfg_query(r, k, dir, sizeof dir, &name) < 0)
        return MHD_YES;
    cell_error e = { 0 };
    if (WITH_CELL(r->cell, &e, cfg_set(r->cell->c, dir, k, name, NULL, &e)) < 0)
        return cfg_reply_error(r, &e);
    return srv_reply_empty(r, 204);
}

int srv_h_config_mcp_get(sreq *r) { return cfg_get(r, &MCP); }
int srv_h_config_mcp_put(sreq *r) { return cfg_put(r, &MCP); }
int srv_h_config_mcp_delete(sreq *r) { return cfg_delete(r, &MCP); }
int srv_h_config_skills_get(sreq *r) { return cfg_get(r, &SKILLS); }
int srv_h_config_skills_put(sreq *r) { return cfg_put(r, &SKILLS); }
int srv_h_config_skills_delete(sreq *r) { return cfg_delete(r, &SKILLS); }

/* ---- for the ACP proxy: MCP servers in session/new's shape -------------- */

/* {"K":"V",...} as ACP's [{"name":"K","value":"V"},...]. */
static json_t *name_values(json_t *map)
{
    json_t *arr = json_array(), *v;
    const char *k;
    json_object_foreach(map, k, v)
        json_array_append_new(arr, json_pack("{s:s, s:O}", "name", k, "value", v));
    return arr;
}

static json_t *mcp_to_acp(const char *name, json_t *e)
{
    json_t *en = json_object_get(e, "enabled");
    if (json_is_false(en))
        return NULL;
    if (strcmp(json_string_value(json_object_get(e, "type")), "remote") == 0) {
        const char *tr = json_string_value(json_object_get(e, "transport"));
        return json_pack("{s:s, s:s, s:O, s:o}", "type", tr && strcmp(tr, "sse") == 0 ? "sse" : "http", "name", name,
                         "url", json_object_get(e, "url"), "headers", name_values(json_object_get(e, "headers")));
    }
    json_t *cmd = json_object_get(e, "command"), *args = json_array(), *a;
    size_t i;
    const char *command = json_string_value(cmd);
    if (json_is_array(cmd)) {
        command = json_string_value(json_array_get(cmd, 0));
        json_array_foreach(cmd, i, a)
            if (i > 0)
                json_array_append(args, a);
    }
    json_array_extend(args, json_object_get(e, "args"));
    if (!command || !*command) {                /* nothing to run */
        json_decref(args);
        return NULL;
    }
    return json_pack("{s:s, s:s, s:o, s:o}", "name", name, "command", command, "args", args, "env",
                     name_values(json_object_get(e, "env")));
}

int srv_agentcfg_cell_mcp_servers(cell *c, const char *directory, json_t **out, cell_error *err)
{
    char dir[PATH_MAX_];
    json_t *doc, *v;
    *out = NULL;
    if (cfg_dir(directory, dir, sizeof dir, err) < 0 || cfg_load(c, dir, &MCP, &doc, err) < 0)
        return -1;
    _cleanup_free_ char *text = cfg_dump(doc);          /* sorted by name */
    json_decref(doc);
    doc = text ? json_loads(text, 0, NULL) : NULL;
    json_t *arr = json_array();
    if (!doc || !arr) {
        json_decref(doc);
        json_decref(arr);
        return util_fail(err, ENOMEM, "out of memory");
    }
    const char *name;
    json_object_foreach(doc, name, v) {
        json_t *s = mcp_to_acp(name, v);
        if (s)
            json_array_append_new(arr, s);
    }
    json_decref(doc);
    *out = arr;
    return 0;
}

int srv_agentcfg_mcp_servers(scell *sc, const char *directory, json_t **out, cell_error *err)
{
    *out = NULL;
    return WITH_CELL(sc, err, srv_agentcfg_cell_mcp_servers(sc->c, directory, out, err));
}

/* ---- for the ACP proxy: skills into the agent's skill directory -------- */

static const struct { const char *agent, *dir; } skill_dirs[] = {
    { "claude", ".claude/skills" }, { "codex", ".codex/skills" }, { "opencode", ".opencode/skill" },
    { "amp", ".agents/skills" },    { "pi", ".pi/skills" },       { "cursor", ".cursor/skills" },
    { "mock", ".sandbox-agent/skills" },
};

const char *srv_agentcfg_skill_dir(const char *agent)
{
    for (size_t i = 0; agent && i < sizeof skill_dirs / sizeof skill_dirs[0]; i++)
        if (strcmp(agent, skill_dirs[i].agent) == 0)
            return skill_dirs[i].dir;
    return NULL;
}

typedef struct copy_budget {
    unsigned files;
    size_t   bytes;
} copy_budget;

static int copy_file(cell *c, const char *from, const char *to, copy_budget *b, cell_error *err)
{
    char *data;
    size_t len;
    if (++b->files > COPY_MAX_FILES)
        return util_fail(err, E2BIG, "a skill has more than %d files", COPY_MAX_FILES);
    if (read_small(c, from, COPY_MAX_BYTES - b->bytes, &data, &len, err) < 0)
        return err->code == E2BIG ? util_fail(err, E2BIG, "skills are larger than %u bytes", COPY_MAX_BYTES) : -1;
    b->bytes += len;
    int rc = write_small(c, to, data, len, err);
    free(data);
    return rc;
}

/* What a skill may hold that is left out of its copy rather than failing
 * it: dangling links, links the cell's root or the kernel refuses (to
 * another root, magic links), files the cell cannot read, FIFOs. */
static int unreadable(const cell_error *e)
{
    return e->code == ENOENT || e->code == ELOOP || e->code == EXDEV || e->code == EACCES || e->code == EPERM ||
           e->code == EINVAL;
}

/* Copy a directory tree inside the cell: regular files and directories
 * only (anything else is left out), bounded by depth and the budget. */
static int copy_tree(cell *c, const char *from, const char *to, int depth, copy_budget *b, cell_error *err)
{
    cell_stat st;
    if (cell_file_stat(c, from, &st, err) < 0)
        return depth > 0 && unreadable(err) ? 0 : -1;
    if (S_ISREG(st.mode))
        return copy_file(c, from, to, b, err) < 0 && !(depth > 0 && unreadable(err)) ? -1 : 0;
    if (!S_ISDIR(st.mode))
        return 0;
    if (depth > COPY_MAX_DEPTH)
        return util_fail(err, E2BIG, "a skill is nested deeper than %d directories", COPY_MAX_DEPTH);
    cell_dirent *ents = NULL;
    size_t n = 0;
    if (cell_file_mkdir(c, to, 0755, 1, err) < 0 || cell_file_list(c, from, &ents, &n, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char f[PATH_MAX_], t[PATH_MAX_];
        if (snprintf(f, sizeof f, "%s/%s", from, ents[i].name) >= (int)sizeof f ||
            snprintf(t, sizeof t, "%s/%s", to, ents[i].name) >= (int)sizeof t)
            rc = util_fail(err, ENAMETOOLONG, "a path in a skill is too long");
        else
            rc = copy_tree(c, f, t, depth + 1, b, err);
    }
    free(ents);
    return rc;
}

static int has_skill_md(cell *c, const char *dir)
{
    char p[PATH_MAX_];
    cell_stat st;
    cell_error e = { 0 };
    return snprintf(p, sizeof p, "%s/SKILL.md", dir) < (int)sizeof p && cell_file_stat(c, p, &st, &e) == 0 &&
           S_ISREG(st.mode);
}

static void report_add(json_t *report, const char *name, const char *source, const char *key, const char *val)
{
    json_array_append_new(report, json_pack("{s:s, s:s, s:s, s:s}", "name", name, "source", source, "status",
                                            strcmp(key, "path") == 0 ? "installed" : "skipped", key, val));
}

/* One skill directory `from` copied to <dest>/<name>, replacing it. */
static int install_one(cell *c, const char *from, const char *dest, const char *name, const char *source,
                       copy_budget *b, json_t *report, cell_error *err)
{
    char to[PATH_MAX_];
    cell_error e2 = { 0 };
    if (!srv_agentcfg_name_ok(name) || snprintf(to, sizeof to, "%s/%s", dest, name) >= (int)sizeof to) {
        report_add(report, name, source, "reason", "not a valid skill directory name");
        return 0;
    }
    (void)cell_file_delete(c, to, 1, &e2);      /* ENOENT the first time */
    if (copy_tree(c, from, to, 0, b, err) < 0)
        return -1;
    report_add(report, name, source, "path", to);
    return 0;
}

/* A "local" source: see agentcfg.h for which directories it names. */
static int install_local(cell *c, const char *dir, const char *dest, const char *entry, json_t *src, copy_budget *b,
                         json_t *report, cell_error *err)
{
    const char *source = json_string_value(json_object_get(src, "source"));
    const char *sub = json_string_value(json_object_get(src, "subpath"));
    json_t *list = json_object_get(src, "skills"), *s;
    char joined[PATH_MAX_ * 2], root[PATH_MAX_];
    snprintf(joined, sizeof joined, "%s%s%s%s%s", source[0] == '/' ? "" : dir, source[0] == '/' ? "" : "/", source,
             sub ? "/" : "", sub ? sub : "");
    if (cfg_dir(joined, root, sizeof root, err) < 0)
        return -1;
    size_t i;
    if (list) {
        json_array_foreach(list, i, s) {
            char from[PATH_MAX_ + 256];
            const char *nm = json_string_value(s);
            snprintf(from, sizeof from, "%s/%s", root, nm);
            if (!srv_agentcfg_name_ok(nm) || !has_skill_md(c, from))
                report_add(report, nm, source, "reason", "no SKILL.md in the source directory");
            else if (install_one(c, from, dest, nm, source, b, report, err) < 0)
                return -1;
        }
        return 0;
    }
    if (has_skill_md(c, root))
        return install_one(c, root, dest, entry, source, b, report, err);
    cell_dirent *ents = NULL;
    size_t n = 0;
    cell_error e = { 0 };
    if (cell_file_list(c, root, &ents, &n, &e) < 0) {
        report_add(report, entry, source, "reason", e.message);
        return 0;
    }
    int rc = 0, found = 0;
    for (i = 0; i < n && rc == 0; i++) {
        char from[PATH_MAX_ + 256];
        snprintf(from, sizeof from, "%s/%s", root, ents[i].name);
        if (S_ISDIR(ents[i].st.mode) && has_skill_md(c, from)) {
            found = 1;
            rc = install_one(c, from, dest, ents[i].name, source, b, report, err);
        }
    }
    free(ents);
    if (rc == 0 && !found)
        report_add(report, entry, source, "reason", "no SKILL.md in the source directory");
    return rc;
}

int srv_agentcfg_cell_skills_materialise(cell *c, const char *directory, const char *agent, json_t **report,
                                     cell_error *err)
{
    const char *sdir = srv_agentcfg_skill_dir(agent);
    char dir[PATH_MAX_], dest[PATH_MAX_ + 64];
    json_t *doc, *entry, *src;
    if (report)
        *report = NULL;
    if (!sdir)
        return util_fail(err, EINVAL, "unknown agent \"%s\"", agent ? agent : "");
    if (cfg_dir(directory, dir, sizeof dir, err) < 0 || cfg_load(c, dir, &SKILLS, &doc, err) < 0)
        return -1;
    snprintf(dest, sizeof dest, "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, sdir);
    json_t *rep = json_array();
    copy_budget b = { 0 };
    const char *name;
    int rc = rep ? 0 : util_fail(err, ENOMEM, "out of memory");
    json_object_foreach(doc, name, entry) {
        size_t i;
        json_array_foreach(json_object_get(entry, "sources"), i, src) {
            const char *type = json_string_value(json_object_get(src, "type"));
            const char *source = json_string_value(json_object_get(src, "source"));
            if (rc < 0)
                break;
            if (strcmp(type, "local") == 0)
                rc = install_local(c, dir, dest, name, src, &b, rep, err);
            else
                report_add(rep, name, source, "reason",
                           "only local sources are materialised (the daemon does not fetch skills from the network)");
        }
    }
    json_decref(doc);
    if (rc == 0 && report)
        *report = rep;
    else
        json_decref(rep);
    return rc;
}

int srv_agentcfg_cell_prepare_session_new(cell *c, const char *agent, json_t *params, json_t **report,
                                      cell_error *err)
{
    if (report)
        *report = NULL;
    if (!json_is_object(params))
        return util_fail(err, EINVAL, "session/new params must be an object");
    json_t *cwd = json_object_get(params, "cwd"), *have = json_object_get(params, "mcpServers"), *servers = NULL;
    const char *dir = json_is_string(cwd) && json_string_length(cwd) > 0 ? json_string_value(cwd) : CFG_HOME;
    int fill = !have || json_is_null(have) || (json_is_array(have) && json_array_size(have) == 0);
    if (fill && srv_agentcfg_cell_mcp_servers(c, dir, &servers, err) < 0)
        return -1;
    if (srv_agentcfg_skill_dir(agent) && srv_agentcfg_cell_skills_materialise(c, dir, agent, report, err) < 0) {
        json_decref(servers);
        return -1;
    }
    if (servers)
        json_object_set_new(params, "mcpServers", servers);
    return 0;
}

int srv_agentcfg_prepare_session_new(scell *sc, const char *agent, json_t *params, json_t **report, cell_error *err)
{
    if (report)
        *report = NULL;
    return WITH_CELL(sc, err, srv_agentcfg_cell_prepare_session_new(sc->c, agent, params, report, err));
}

int srv_agentcfg_skills_materialise(scell *sc, const char *directory, const char *agent, json_t **report,
                                cell_error *err)
{
    if (report)
        *report = NULL;
    return WITH_CELL(sc, err, srv_agentcfg_cell_skills_materialise(sc->c, directory, agent, report, err));
}
