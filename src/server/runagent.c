/* runagent.c: the agent-facing parts of a run (runs.h), without I/O:
 * checking the request's instructions, skills, MCP servers, permissions,
 * output schema and attachments; materialising them in each agent's own
 * format (files under /root, env, ACP mcpServers, the prompt); normalising
 * what agents report (ACP session/update, `codex exec --json` lines,
 * `opencode run --format json` lines) into the run's events; the
 * permission policy; the output-schema check.
 *
 * Everything an agent reports is hostile input: fields are type-checked
 * before use, text is capped, and the state kept per run is bounded. */
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/runs.h"

#define RA_NAME_MAX       64
#define RA_INSTR_MAX      (256u << 10)
#define RA_SKILLS_MAX     32
#define RA_DESC_MAX       1024
#define RA_BODY_MAX       (256u << 10)
#define RA_FILES_MAX      64         /* per skill */
#define RA_FILE_MAX       (1u << 20)
#define RA_SKILLS_BYTES   (8u << 20) /* all skills' bodies and files */
#define RA_RELPATH_MAX    255
#define RA_RELPATH_DEPTH  8
#define RA_MCP_MAX        16
#define RA_ARGS_MAX       64
#define RA_ENV_MAX        64
#define RA_VALUE_MAX      4096       /* a command, argument, env or header value */
#define RA_URL_MAX        2048
#define RA_MODEL_MAX      256
#define RA_RULES_MAX      64
#define RA_PATTERN_MAX    1024
#define RA_ATTACH_MAX     16
#define RA_ATTACH_BYTES   (8u << 20)
#define RA_SCHEMA_DEPTH   32
#define RA_SCHEMA_NODES   1024
#define RA_OUTPUT_MAX     (4u << 20) /* the assistant text kept for result.output */
#define RA_TOOL_OUT_MAX   (64u << 10)
#define RA_CALLS_MAX      256        /* tool calls tracked at once */
#define RA_SESSION_MAX    256

#define RA_ATTACH_DIR     "/.cell-run/attachments"
/* What a header that names a secret holds inside the cell: the egress
 * engine replaces the header host-side (docs/api.md, "Runs"). */
#define RA_PLACEHOLDER    "cell-placeholder"

static int ra_bad(char *why, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ra_bad(char *why, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
    return -1;
}

/* `s` quoted for a message: printable ASCII kept (quote and backslash
 * escaped), anything else \xNN, at most 48 characters of it. */
typedef struct { char s[4 * 48 + 8]; } ra_quoted;
static ra_quoted ra_q(const char *s)
{
    ra_quoted q;
    size_t o = 0, i = 0;
    q.s[o++] = '"';
    for (; s[i] && i < 48; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            q.s[o++] = '\\';
            q.s[o++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            q.s[o++] = (char)c;
        } else {
            o += (size_t)snprintf(q.s + o, sizeof q.s - o, "\\x%02x", c);
        }
    }
    if (s[i]) {
        memcpy(q.s + o, "...", 3);
        o += 3;
    }
    q.s[o++] = '"';
    q.s[o] = '\0';
    return q;
}

/* ---- checks ------------------------------------------------------------------------------ */

/* A string of at most `max` bytes without NUL (a JSON "\u0000" would cut
 * a C string and every file format short). */
static int ra_string(json_t *v, size_t max)
{
    return json_is_string(v) && json_string_length(v) <= max && strlen(json_string_value(v)) == json_string_length(v);
}

static int ra_no_controls(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* Skill, MCP server and attachment names: they become directory, file and
 * TOML key names. */
static int ra_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > RA_NAME_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static int ra_env_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

/* A skill file's path: relative, components neither empty, "." nor "..",
 * no backslash or control character, at most 8 deep. */
static const char *ra_relpath_why(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > RA_RELPATH_MAX)
        return "a path of 1 to 255 bytes is required";
    if (p[0] == '/')
        return "must be relative";
    if (strchr(p, '\\'))
        return "must not contain a backslash";
    if (!ra_no_controls(p))
        return "must not contain control characters";
    int depth = 0;
    for (const char *c = p; *c;) {
        size_t len = strcspn(c, "/");
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return "must not have empty, \".\" or \"..\" components";
        if (++depth > RA_RELPATH_DEPTH)
            return "is more than 8 levels deep";
        c += len;
        if (*c == '/')
            c++;
    }
    return NULL;
}

/* Whether the object has a key outside `allowed` (NULL-terminated); the
 * first such key into *bad. */
static int ra_unknown_key(json_t *obj, const char *const *allowed, const char **bad)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        const char *const *a = allowed;
        while (*a && strcmp(*a, k) != 0)
            a++;
        if (!*a) {
            *bad = k;
            return 1;
        }
    }
    return 0;
}

/* "${secret:NAME}" as the whole of `s`?  1 yes, 0 no "${" at all, -1 a
 * "${" that is not that. */
static int ra_secret_ref(const char *s)
{
    const char *open = strstr(s, "${");
    if (!open)
        return 0;
    static const char pre[] = "${secret:";
    size_t n = strlen(s);
    if (open != s || strncmp(s, pre, sizeof pre - 1) != 0 || n < sizeof pre + 1 || s[n - 1] != '}')
        return -1;
    char name[64];
    size_t len = n - sizeof pre;            /* the name's length: minus "${secret:" and "}" */
    if (len >= sizeof name)
        return -1;
    memcpy(name, s + sizeof pre - 1, len);
    name[len] = '\0';
    return util_valid_name(name) ? 1 : -1;
}

static int ra_check_instructions(json_t *spec, char *why, size_t size)
{
    json_t *v = json_object_get(spec, "instructions");
    if (v && !ra_string(v, RA_INSTR_MAX))
        return ra_bad(why, size, "instructions: a string of at most 256 KiB without NUL is required");
    v = json_object_get(spec, "model");
    if (v && (!ra_string(v, RA_MODEL_MAX) || json_string_length(v) == 0 || !ra_no_controls(json_string_value(v))))
        return ra_bad(why, size, "model: a string of 1 to 256 bytes without control characters is required");
    return 0;
}

static int ra_check_skill_files(json_t *files, size_t i, size_t *bytes, char *why, size_t size)
{
    if (!json_is_object(files) || json_object_size(files) > RA_FILES_MAX)
        return ra_bad(why, size, "skills[%zu].files: an object of at most %d {\"relative/path\": \"text\"} is required",
                      i, RA_FILES_MAX);
    const char *p;
    json_t *text;
    json_object_foreach(files, p, text) {
        const char *bad = ra_relpath_why(p);
        if (bad)
            return ra_bad(why, size, "skills[%zu].files[%s]: %s", i, ra_q(p).s, bad);
        if (strcmp(p, "SKILL.md") == 0)
            return ra_bad(why, size, "skills[%zu].files[\"SKILL.md\"]: SKILL.md is made from name, description and "
                          "body; give its text as body", i);
        if (!ra_string(text, RA_FILE_MAX))
            return ra_bad(why, size, "skills[%zu].files[%s]: a string of at most 1 MiB without NUL is required", i,
                          ra_q(p).s);
        *bytes += json_string_length(text);
        /* "a" and "a/b" cannot both be files. */
        size_t n = strlen(p);
        const char *q;
        json_t *other;
        json_object_foreach(files, q, other) {
            if (strncmp(q, p, n) == 0 && q[n] == '/')
                return ra_bad(why, size, "skills[%zu].files[%s]: is a file and a directory of %s", i, ra_q(p).s,
                              ra_q(q).s);
        }
    }
    return 0;
}

static int ra_check_skills(json_t *spec, char *why, size_t size)
{
    json_t *skills = json_object_get(spec, "skills");
    if (!skills)
        return 0;
    if (!json_is_array(skills) || json_array_size(skills) > RA_SKILLS_MAX)
        return ra_bad(why, size, "skills: an array of at most %d skills is required", RA_SKILLS_MAX);
    static const char *const keys[] = { "name", "description", "body", "files", NULL };
    size_t i, bytes = 0;
    json_t *s;
    json_array_foreach(skills, i, s) {
        const char *bad = NULL;
        if (!json_is_object(s))
            return ra_bad(why, size, "skills[%zu]: an object {name, description, body?, files?} is required", i);
        if (ra_unknown_key(s, keys, &bad))
            return ra_bad(why, size, "skills[%zu].%s: unknown field (name, description, body, files)", i, bad);
        json_t *name = json_object_get(s, "name");
        if (!json_is_string(name) || !ra_name_ok(json_string_value(name)))
            return ra_bad(why, size, "skills[%zu].name: 1 to 64 of A-Z a-z 0-9 . _ - (not . or ..) is required", i);
        for (size_t j = 0; j < i; j++)
            if (json_equal(name, json_object_get(json_array_get(skills, j), "name")))
                return ra_bad(why, size, "skills[%zu].name: %s is skills[%zu]'s name too", i,
                              ra_q(json_string_value(name)).s, j);
        json_t *desc = json_object_get(s, "description");
        if (!ra_string(desc, RA_DESC_MAX) || json_string_length(desc) == 0)
            return ra_bad(why, size, "skills[%zu].description: a string of 1 to 1024 bytes is required", i);
        json_t *body = json_object_get(s, "body");
        if (body && !ra_string(body, RA_BODY_MAX))
            return ra_bad(why, size, "skills[%zu].body: a string of at most 256 KiB without NUL is required", i);
        bytes += body ? json_string_length(body) : 0;
        json_t *files = json_object_get(s, "files");
        if (files && ra_check_skill_files(files, i, &bytes, why, size) < 0)
            return -1;
        if (bytes > RA_SKILLS_BYTES)
            return ra_bad(why, size, "skills[%zu]: the skills' bodies and files exceed 8 MiB together", i);
    }
    return 0;
}

/* A value that goes into the cell as it is: no "${secret:...}" there. */
static int ra_plain_value(json_t *v)
{
    return ra_string(v, RA_VALUE_MAX) && ra_secret_ref(json_string_value(v)) == 0;
}

static int ra_check_mcp_stdio(json_t *m, size_t i, char *why, size_t size)
{
    static const char *const keys[] = { "name", "type", "command", "args", "env", NULL };
    const char *bad = NULL;
    if (ra_unknown_key(m, keys, &bad))
        return ra_bad(why, size, "mcp[%zu].%s: unknown field for a stdio server (name, type, command, args, env)", i,
                      bad);
    json_t *cmd = json_object_get(m, "command");
    if (json_is_array(cmd)) {
        if (json_array_size(cmd) == 0 || json_array_size(cmd) > RA_ARGS_MAX)
            return ra_bad(why, size, "mcp[%zu].command: a non-empty array of at most %d strings is required", i,
                          RA_ARGS_MAX);
        size_t j;
        json_t *a;
        json_array_foreach(cmd, j, a) {
            if (!ra_plain_value(a))
                return ra_bad(why, size, "mcp[%zu].command[%zu]: a string of at most 4096 bytes (no NUL, no "
                              "${secret:...}: secrets go only in http headers) is required", i, j);
        }
        cmd = json_array_get(cmd, 0);
    }
    if (!ra_plain_value(cmd) || json_string_length(cmd) == 0)
        return ra_bad(why, size, "mcp[%zu].command: a non-empty string (or array of strings) of at most 4096 bytes, "
                      "without ${secret:...}, is required", i);
    json_t *args = json_object_get(m, "args");
    if (args && (!json_is_array(args) || json_array_size(args) > RA_ARGS_MAX))
        return ra_bad(why, size, "mcp[%zu].args: an array of at most %d strings is required", i, RA_ARGS_MAX);
    size_t j;
    json_t *a;
    json_array_foreach(args, j, a) {
        if (!ra_plain_value(a))
            return ra_bad(why, size, "mcp[%zu].args[%zu]: a string of at most 4096 bytes without NUL or "
                          "${secret:...} is required", i, j);
    }
    json_t *env = json_object_get(m, "env");
    if (env && (!json_is_object(env) || json_object_size(env) > RA_ENV_MAX))
        return ra_bad(why, size, "mcp[%zu].env: an object of at most %d {\"NAME\": \"value\"} is required", i,
                      RA_ENV_MAX);
    const char *k;
    json_object_foreach(env, k, a) {
        if (!ra_env_name_ok(k))
            return ra_bad(why, size, "mcp[%zu].env[%s]: a variable name of A-Z a-z 0-9 _ is required", i,
                          ra_q(k).s);
        if (!ra_plain_value(a))
            return ra_bad(why, size, "mcp[%zu].env[%s]: a string of at most 4096 bytes without NUL or "
                          "${secret:...} (secrets go only in http headers) is required", i, ra_q(k).s);
    }
    return 0;
}

static int ra_header_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 128 &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~") == n;
}

static int ra_check_mcp_http(json_t *m, size_t i, char *why, size_t size)
{
    static const char *const keys[] = { "name", "type", "url", "headers", NULL };
    const char *bad = NULL;
    if (ra_unknown_key(m, keys, &bad))
        return ra_bad(why, size, "mcp[%zu].%s: unknown field for an http server (name, type, url, headers)", i, bad);
    json_t *url = json_object_get(m, "url");
    const char *u = json_string_value(url);
    if (!ra_string(url, RA_URL_MAX) || (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) ||
        strpbrk(u, " \"'<>\\`") || !ra_no_controls(u) || strstr(u, "${"))
        return ra_bad(why, size, "mcp[%zu].url: an http:// or https:// URL of at most 2048 bytes without spaces, "
                      "quotes or control characters is required", i);
    json_t *headers = json_object_get(m, "headers");
    if (headers && (!json_is_object(headers) || json_object_size(headers) > RA_ENV_MAX))
        return ra_bad(why, size, "mcp[%zu].headers: an object of at most %d {\"Name\": \"value\"} is required", i,
                      RA_ENV_MAX);
    const char *k;
    json_t *v;
    json_object_foreach(headers, k, v) {
        if (!ra_header_name_ok(k))
            return ra_bad(why, size, "mcp[%zu].headers[%s]: an HTTP header name (token characters) is required", i,
                          ra_q(k).s);
        if (!ra_string(v, RA_VALUE_MAX) || !ra_no_controls(json_string_value(v)))
            return ra_bad(why, size, "mcp[%zu].headers[%s]: a string of at most 4096 bytes without control "
                          "characters is required", i, ra_q(k).s);
        if (ra_secret_ref(json_string_value(v)) < 0)
            return ra_bad(why, size, "mcp[%zu].headers[%s]: ${secret:NAME} must be the whole value (the egress "
                          "engine sets the header to the secret host-side)", i, ra_q(k).s);
    }
    return 0;
}

static int ra_check_mcp(json_t *spec, char *why, size_t size)
{
    json_t *mcp = json_object_get(spec, "mcp");
    if (!mcp)
        return 0;
    if (!json_is_array(mcp) || json_array_size(mcp) > RA_MCP_MAX)
        return ra_bad(why, size, "mcp: an array of at most %d servers is required", RA_MCP_MAX);
    size_t i;
    json_t *m;
    json_array_foreach(mcp, i, m) {
        if (!json_is_object(m))
            return ra_bad(why, size, "mcp[%zu]: an object {name, type: \"stdio\"|\"http\", ...} is required", i);
        json_t *name = json_object_get(m, "name");
        if (!json_is_string(name) || !ra_name_ok(json_string_value(name)))
            return ra_bad(why, size, "mcp[%zu].name: 1 to 64 of A-Z a-z 0-9 . _ - (not . or ..) is required", i);
        for (size_t j = 0; j < i; j++)
            if (json_equal(name, json_object_get(json_array_get(mcp, j), "name")))
                return ra_bad(why, size, "mcp[%zu].name: %s is mcp[%zu]'s name too", i,
                              ra_q(json_string_value(name)).s, j);
        const char *type = json_string_value(json_object_get(m, "type"));
        if (type && strcmp(type, "stdio") == 0) {
            if (ra_check_mcp_stdio(m, i, why, size) < 0)
                return -1;
        } else if (type && strcmp(type, "http") == 0) {
            if (ra_check_mcp_http(m, i, why, size) < 0)
                return -1;
        } else {
            return ra_bad(why, size, "mcp[%zu].type: \"stdio\" or \"http\" is required", i);
        }
    }
    return 0;
}

static const char *const ra_kinds[] = { "read", "edit", "delete", "move", "search", "execute", "think", "fetch",
                                        "other", NULL };

static int ra_in(const char *s, const char *const *list)
{
    for (; s && *list; list++)
        if (strcmp(s, *list) == 0)
            return 1;
    return 0;
}

static const char *const ra_actions[] = { "allow", "deny", "ask", NULL };

static int ra_check_permissions(json_t *spec, char *why, size_t size)
{
    json_t *p = json_object_get(spec, "permissions");
    if (!p)
        return 0;
    static const char *const keys[] = { "default", "rules", NULL };
    static const char *const rule_keys[] = { "kind", "pattern", "action", NULL };
    const char *bad = NULL;
    if (!json_is_object(p))
        return ra_bad(why, size, "permissions: an object {default?, rules?} is required");
    if (ra_unknown_key(p, keys, &bad))
        return ra_bad(why, size, "permissions.%s: unknown field (default, rules)", bad);
    json_t *d = json_object_get(p, "default");
    if (d && !ra_in(json_string_value(d), ra_actions))
        return ra_bad(why, size, "permissions.default: \"allow\", \"deny\" or \"ask\" is required");
    json_t *rules = json_object_get(p, "rules");
    if (rules && (!json_is_array(rules) || json_array_size(rules) > RA_RULES_MAX))
        return ra_bad(why, size, "permissions.rules: an array of at most %d rules is required", RA_RULES_MAX);
    size_t i;
    json_t *r;
    json_array_foreach(rules, i, r) {
        if (!json_is_object(r))
            return ra_bad(why, size, "permissions.rules[%zu]: an object {kind?, pattern?, action} is required", i);
        if (ra_unknown_key(r, rule_keys, &bad))
            return ra_bad(why, size, "permissions.rules[%zu].%s: unknown field (kind, pattern, action)", i, bad);
        json_t *k = json_object_get(r, "kind");
        if (k && !ra_in(json_string_value(k), ra_kinds))
            return ra_bad(why, size, "permissions.rules[%zu].kind: one of read, edit, delete, move, search, execute, "
                          "think, fetch, other is required", i);
        json_t *pat = json_object_get(r, "pattern");
        if (pat && (!ra_string(pat, RA_PATTERN_MAX) || json_string_length(pat) == 0))
            return ra_bad(why, size, "permissions.rules[%zu].pattern: a glob of 1 to 1024 bytes is required", i);
        if (!ra_in(json_string_value(json_object_get(r, "action")), ra_actions))
            return ra_bad(why, size, "permissions.rules[%zu].action: \"allow\", \"deny\" or \"ask\" is required", i);
    }
    return 0;
}

static int ra_check_attachments(json_t *spec, char *why, size_t size)
{
    json_t *att = json_object_get(spec, "attachments");
    if (!att)
        return 0;
    if (!json_is_array(att) || json_array_size(att) > RA_ATTACH_MAX)
        return ra_bad(why, size, "attachments: an array of at most %d {name, text | base64} is required",
                      RA_ATTACH_MAX);
    static const char *const keys[] = { "name", "text", "base64", NULL };
    size_t i, total = 0;
    json_t *a;
    json_array_foreach(att, i, a) {
        const char *bad = NULL;
        if (!json_is_object(a))
            return ra_bad(why, size, "attachments[%zu]: an object {name, text | base64} is required", i);
        if (ra_unknown_key(a, keys, &bad))
            return ra_bad(why, size, "attachments[%zu].%s: unknown field (name, text, base64)", i, bad);
        json_t *name = json_object_get(a, "name");
        if (!json_is_string(name) || !ra_name_ok(json_string_value(name)))
            return ra_bad(why, size, "attachments[%zu].name: 1 to 64 of A-Z a-z 0-9 . _ - (not . or ..) is "
                          "required", i);
        for (size_t j = 0; j < i; j++)
            if (json_equal(name, json_object_get(json_array_get(att, j), "name")))
                return ra_bad(why, size, "attachments[%zu].name: %s is attachments[%zu]'s name too", i,
                              ra_q(json_string_value(name)).s, j);
        json_t *text = json_object_get(a, "text"), *b64 = json_object_get(a, "base64");
        if (!text == !b64)
            return ra_bad(why, size, "attachments[%zu]: exactly one of text and base64 is required", i);
        if (text) {
            if (!json_is_string(text))
                return ra_bad(why, size, "attachments[%zu].text: a string is required", i);
            total += json_string_length(text);
        } else {
            if (!json_is_string(b64))
                return ra_bad(why, size, "attachments[%zu].base64: a string is required", i);
            size_t len = json_string_length(b64), out_len = 0;
            if (len > RA_ATTACH_BYTES / 3 * 4 + 4)
                return ra_bad(why, size, "attachments: more than 8 MiB together");
            unsigned char *buf = malloc(len / 4 * 3 + 3);
            char msg[128];
            if (!buf)
                return ra_bad(why, size, "attachments[%zu].base64: out of memory", i);
            int rc = srv_procs_base64_decode(json_string_value(b64), len, buf, &out_len, msg, sizeof msg);
            free(buf);
            if (rc < 0)
                return ra_bad(why, size, "attachments[%zu].base64: %s", i, msg);
            total += out_len;
        }
        if (total > RA_ATTACH_BYTES)
            return ra_bad(why, size, "attachments: more than 8 MiB together");
    }
    return 0;
}

/* ptr + "/" + key as a JSON pointer (RFC 6901: "~" is "~0", "/" is
 * "~1"), the key clipped to 64 bytes. */
static void ra_ptr(char *out, size_t size, const char *ptr, const char *key)
{
    int w = snprintf(out, size, "%s/", ptr);
    size_t o = w < 0 ? 0 : (size_t)w >= size ? size - 1 : (size_t)w;
    for (size_t i = 0; key[i] && i < 64 && o + 3 < size; i++) {
        if (key[i] == '~' || key[i] == '/') {
            out[o++] = '~';
            out[o++] = key[i] == '~' ? '0' : '1';
        } else {
            out[o++] = key[i];
        }
    }
    out[o < size ? o : size - 1] = '\0';
}

/* ---- output schema: the subset --------------------------------------------------------------- */

static const char *const ra_types[] = { "object", "array", "string", "number", "integer", "boolean", "null", NULL };

/* `ptr` is the JSON pointer of `s` inside output_schema. */
static int ra_check_schema_node(json_t *s, const char *ptr, int depth, size_t *nodes, char *why, size_t size)
{
    static const char *const keys[] = { "type", "properties", "required", "items", "enum", "additionalProperties",
                                        "description", "title", NULL };
    const char *bad = NULL;
    if (++*nodes > RA_SCHEMA_NODES || depth > RA_SCHEMA_DEPTH)
        return ra_bad(why, size, "output_schema: more than %d levels or %d schemas", RA_SCHEMA_DEPTH,
                      RA_SCHEMA_NODES);
    if (!json_is_object(s))
        return ra_bad(why, size, "output_schema%s: a schema object is required", ptr);
    if (ra_unknown_key(s, keys, &bad))
        return ra_bad(why, size, "output_schema%s/%s: unsupported keyword (supported: type, properties, required, "
                      "items, enum, additionalProperties, description, title)", ptr, ra_q(bad).s);
    json_t *t = json_object_get(s, "type");
    if (t && json_is_array(t)) {
        size_t i;
        json_t *e;
        if (json_array_size(t) == 0)
            return ra_bad(why, size, "output_schema%s/type: a type name or a non-empty array of them", ptr);
        json_array_foreach(t, i, e) {
            if (!ra_in(json_string_value(e), ra_types))
                return ra_bad(why, size, "output_schema%s/type/%zu: one of object, array, string, number, integer, "
                              "boolean, null", ptr, i);
        }
    } else if (t && !ra_in(json_string_value(t), ra_types)) {
        return ra_bad(why, size, "output_schema%s/type: one of object, array, string, number, integer, boolean, "
                      "null (or an array of them)", ptr);
    }
    json_t *v = json_object_get(s, "description");
    if (v && !json_is_string(v))
        return ra_bad(why, size, "output_schema%s/description: a string is required", ptr);
    v = json_object_get(s, "title");
    if (v && !json_is_string(v))
        return ra_bad(why, size, "output_schema%s/title: a string is required", ptr);
    v = json_object_get(s, "enum");
    if (v && (!json_is_array(v) || json_array_size(v) == 0))
        return ra_bad(why, size, "output_schema%s/enum: a non-empty array is required", ptr);
    v = json_object_get(s, "required");
    if (v) {
        size_t i;
        json_t *e;
        if (!json_is_array(v))
            return ra_bad(why, size, "output_schema%s/required: an array of property names is required", ptr);
        json_array_foreach(v, i, e) {
            if (!json_is_string(e))
                return ra_bad(why, size, "output_schema%s/required/%zu: a string is required", ptr, i);
        }
    }
    char sub[512];
    v = json_object_get(s, "properties");
    if (v) {
        const char *k;
        json_t *p;
        if (!json_is_object(v))
            return ra_bad(why, size, "output_schema%s/properties: an object of schemas is required", ptr);
        json_object_foreach(v, k, p) {
            char props[512];
            snprintf(props, sizeof props, "%s/properties", ptr);
            ra_ptr(sub, sizeof sub, props, k);
            if (ra_check_schema_node(p, sub, depth + 1, nodes, why, size) < 0)
                return -1;
        }
    }
    v = json_object_get(s, "items");
    if (v) {
        snprintf(sub, sizeof sub, "%s/items", ptr);
        if (ra_check_schema_node(v, sub, depth + 1, nodes, why, size) < 0)
            return -1;
    }
    v = json_object_get(s, "additionalProperties");
    if (v && !json_is_boolean(v)) {
        snprintf(sub, sizeof sub, "%s/additionalProperties", ptr);
        if (ra_check_schema_node(v, sub, depth + 1, nodes, why, size) < 0)
            return -1;
    }
    return 0;
}

static int ra_check_schema(json_t *spec, char *why, size_t size)
{
    json_t *s = json_object_get(spec, "output_schema");
    size_t nodes = 0;
    return s ? ra_check_schema_node(s, "", 0, &nodes, why, size) : 0;
}

int srv_runagent_check(json_t *spec, char *why, size_t size)
{
    if (!json_is_object(spec))
        return ra_bad(why, size, "a JSON object body is required");
    if (ra_check_instructions(spec, why, size) < 0 || ra_check_skills(spec, why, size) < 0 ||
        ra_check_mcp(spec, why, size) < 0 || ra_check_permissions(spec, why, size) < 0 ||
        ra_check_attachments(spec, why, size) < 0 || ra_check_schema(spec, why, size) < 0)
        return -1;
    /* The shell agent runs the prompt as a command: nothing reads these. */
    const char *agent = json_string_value(json_object_get(spec, "agent"));
    static const char *const not_for_shell[] = { "instructions", "skills", "mcp", "model", NULL };
    for (const char *const *f = not_for_shell; agent && strcmp(agent, "shell") == 0 && *f; f++)
        if (json_object_get(spec, *f))
            return ra_bad(why, size, "%s: the shell agent runs the prompt as a command and takes no %s", *f, *f);
    return 0;
}

/* ---- materialisation ------------------------------------------------------------------------- */

static int ra_add(runagent_plan *p, const char *path, const char *data, size_t len, mode_t mode)
{
    runagent_file *f = realloc(p->files, (p->n_files + 1) * sizeof *f);
    if (!f)
        return -1;
    p->files = f;
    f = &p->files[p->n_files];
    f->path = strdup(path);
    f->data = malloc(len + 1);
    f->len = len;
    f->mode = mode;
    if (!f->path || !f->data) {
        free(f->path);
        free(f->data);
        return -1;
    }
    memcpy(f->data, data, len);
    f->data[len] = '\0';
    p->n_files++;
    return 0;
}

/* Add the file `path` with the text of a memstream (closed here). */
static int ra_add_stream(runagent_plan *p, const char *path, FILE *f, char **buf, size_t *len, mode_t mode)
{
    int rc = fclose(f) == 0 ? ra_add(p, path, *buf, *len, mode) : -1;
    free(*buf);
    *buf = NULL;
    return rc;
}

static int ra_env(runagent_plan *p, const char *name, const char *value)
{
    size_t n = 0;
    while (p->env && p->env[n])
        n++;
    char **env = realloc(p->env, (n + 2) * sizeof *env);
    if (!env)
        return -1;
    p->env = env;
    env[n + 1] = NULL;
    return asprintf(&env[n], "%s=%s", name, value) < 0 ? (env[n] = NULL, -1) : 0;
}

/* A TOML basic string: every control character escaped (\uXXXX), so a
 * value can never end the string or the line. */
static void ra_toml_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* A YAML double-quoted scalar: the same escapes work there. */
#define ra_yaml_str ra_toml_str

/* A header value as the cell may see it: a secret reference becomes the
 * placeholder the egress engine replaces. */
static const char *ra_header_value(json_t *v)
{
    return ra_secret_ref(json_string_value(v)) == 1 ? RA_PLACEHOLDER : json_string_value(v);
}

/* The stdio server's argv: command (a string, or an array whose first is
 * the command) then args. */
static json_t *ra_stdio_argv(json_t *m)
{
    json_t *argv = json_array(), *cmd = json_object_get(m, "command");
    if (!argv)
        return NULL;
    if (json_is_array(cmd))
        json_array_extend(argv, cmd);
    else
        json_array_append(argv, cmd);
    json_t *args = json_object_get(m, "args");
    if (args)
        json_array_extend(argv, args);
    return argv;
}

static int ra_is_http(json_t *m)
{
    return strcmp(json_string_value(json_object_get(m, "type")), "http") == 0;
}

/* ACP session/new mcpServers. */
static json_t *ra_acp_mcp(json_t *spec)
{
    json_t *out = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(spec, "mcp"), i, m) {
        json_t *pairs = json_array(), *e;
        const char *k;
        json_t *v;
        if (ra_is_http(m)) {
            json_object_foreach(json_object_get(m, "headers"), k, v)
                json_array_append_new(pairs, json_pack("{s:s, s:s}", "name", k, "value", ra_header_value(v)));
            e = json_pack("{s:s, s:O, s:O, s:o}", "type", "http", "name", json_object_get(m, "name"), "url",
                          json_object_get(m, "url"), "headers", pairs);
        } else {
            json_object_foreach(json_object_get(m, "env"), k, v)
                json_array_append_new(pairs, json_pack("{s:s, s:O}", "name", k, "value", v));
            json_t *argv = ra_stdio_argv(m);
            json_t *cmd = json_incref(json_array_get(argv, 0));
            json_array_remove(argv, 0);
            e = json_pack("{s:O, s:o, s:o, s:o}", "name", json_object_get(m, "name"), "command", cmd, "args", argv,
                          "env", pairs);
        }
        if (!e || json_array_append_new(out, e) < 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static const char *ra_string_of(json_t *v) { return json_string_value(v); }

/* `key = { "k" = "v", ... }` of a JSON object of strings (nothing if empty). */
static void ra_toml_table(FILE *f, const char *key, json_t *obj, const char *(*value)(json_t *))
{
    const char *k;
    json_t *v;
    int first = 1;
    if (!json_object_size(obj))
        return;
    fprintf(f, "%s = { ", key);
    json_object_foreach(obj, k, v) {
        fputs(first ? "" : ", ", f);
        ra_toml_str(f, k);
        fputs(" = ", f);
        ra_toml_str(f, value(v));
        first = 0;
    }
    fputs(" }\n", f);
}

static int ra_codex_config(runagent_plan *p, json_t *spec, const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return -1;
    fputs("# Written by cell for this run (docs/api.md, \"Runs\").\n", f);
    json_t *model = json_object_get(spec, "model");
    if (model) {
        fputs("model = ", f);
        ra_toml_str(f, json_string_value(model));
        fputc('\n', f);
    }
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(spec, "mcp"), i, m) {
        const char *name = json_string_value(json_object_get(m, "name"));
        /* The name is quoted: a bare "a.b" would be a dotted key. */
        fputs("\n[mcp_servers.", f);
        ra_toml_str(f, name);
        fputs("]\n", f);
        if (ra_is_http(m)) {
            fputs("url = ", f);
            ra_toml_str(f, json_string_value(json_object_get(m, "url")));
            fputs("\n", f);
            ra_toml_table(f, "http_headers", json_object_get(m, "headers"), ra_header_value);
            continue;
        }
        json_t *argv = ra_stdio_argv(m);
        size_t j;
        json_t *a;
        json_array_foreach(argv, j, a) {
            if (j == 0) {
                fputs("command = ", f);
                ra_toml_str(f, json_string_value(a));
                fputs("\nargs = [", f);
            } else {
                fputs(j == 1 ? "" : ", ", f);
                ra_toml_str(f, json_string_value(a));
            }
        }
        fputs("]\n", f);
        json_decref(argv);
        ra_toml_table(f, "env", json_object_get(m, "env"), ra_string_of);
    }
    return ra_add_stream(p, path, f, &buf, &len, 0600);
}

/* opencode.jsonc: opencode's own config shape ("mcp": local servers with
 * the whole argv as "command", remote ones with url and headers). */
static int ra_opencode_config(runagent_plan *p, json_t *spec, const char *path)
{
    json_t *cfg = json_pack("{s:s}", "$schema", "https://opencode.ai/config.json"), *mcp = json_object();
    if (!cfg || !mcp) {
        json_decref(cfg);
        json_decref(mcp);
        return -1;
    }
    json_t *model = json_object_get(spec, "model");
    if (model)
        json_object_set(cfg, "model", model);
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(spec, "mcp"), i, m) {
        json_t *e, *obj = json_object();
        const char *k;
        json_t *v;
        if (ra_is_http(m)) {
            json_object_foreach(json_object_get(m, "headers"), k, v)
                json_object_set_new(obj, k, json_string(ra_header_value(v)));
            e = json_pack("{s:s, s:O, s:o, s:b}", "type", "remote", "url", json_object_get(m, "url"), "headers", obj,
                          "enabled", 1);
        } else {
            json_object_update(obj, json_object_get(m, "env"));
            e = json_pack("{s:s, s:o, s:o, s:b}", "type", "local", "command", ra_stdio_argv(m), "environment", obj,
                          "enabled", 1);
        }
        json_object_set_new(mcp, json_string_value(json_object_get(m, "name")), e);
    }
    json_object_set_new(cfg, "mcp", mcp);
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(cfg);
    int rc = text ? ra_add(p, path, text, strlen(text), 0600) : -1;
    free(text);
    return rc;
}

/* Each skill as DIR/NAME/SKILL.md (YAML front matter, then the body) and
 * its files beside it. */
static int ra_skills(runagent_plan *p, json_t *spec, const char *dir)
{
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(spec, "skills"), i, s) {
        const char *name = json_string_value(json_object_get(s, "name"));
        const char *body = json_string_value(json_object_get(s, "body"));
        char *buf = NULL, path[512];
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
            return -1;
        fputs("---\nname: ", f);
        ra_yaml_str(f, name);
        fputs("\ndescription: ", f);
        ra_yaml_str(f, json_string_value(json_object_get(s, "description")));
        fprintf(f, "\n---\n\n%s", body ? body : "");
        snprintf(path, sizeof path, "%s/%s/SKILL.md", dir, name);
        if (ra_add_stream(p, path, f, &buf, &len, 0644) < 0)
            return -1;
        const char *rel;
        json_t *text;
        json_object_foreach(json_object_get(s, "files"), rel, text) {
            snprintf(path, sizeof path, "%s/%s/%s", dir, name, rel);
            if (ra_add(p, path, json_string_value(text), json_string_length(text), 0644) < 0)
                return -1;
        }
    }
    return 0;
}

static int ra_instructions(runagent_plan *p, json_t *spec, const char *path)
{
    json_t *v = json_object_get(spec, "instructions");
    return v ? ra_add(p, path, json_string_value(v), json_string_length(v), 0644) : 0;
}

/* Attachments into RA_ATTACH_DIR, and the prompt naming them. */
static int ra_attachments(runagent_plan *p, json_t *spec, FILE *prompt)
{
    json_t *att = json_object_get(spec, "attachments");
    if (prompt && json_array_size(att))
        fputs("\n\nAttached files:", prompt);
    size_t i;
    json_t *a;
    json_array_foreach(att, i, a) {
        char path[256];
        const char *name = json_string_value(json_object_get(a, "name"));
        snprintf(path, sizeof path, RA_ATTACH_DIR "/%s", name);
        if (prompt)
            fprintf(prompt, "\n- %s", path);
        json_t *text = json_object_get(a, "text");
        if (text) {
            if (ra_add(p, path, json_string_value(text), json_string_length(text), 0644) < 0)
                return -1;
            continue;
        }
        json_t *b64 = json_object_get(a, "base64");
        size_t len = json_string_length(b64), out_len = 0;
        char msg[128];
        unsigned char *buf = malloc(len / 4 * 3 + 3);
        int rc = buf ? srv_procs_base64_decode(json_string_value(b64), len, buf, &out_len, msg, sizeof msg) : -1;
        if (rc == 0)
            rc = ra_add(p, path, (const char *)buf, out_len, 0644);
        free(buf);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int ra_prompt(runagent_plan *p, json_t *spec, int shell)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return -1;
    json_t *prompt = json_object_get(spec, "prompt");
    fputs(json_string_value(prompt) ? json_string_value(prompt) : "", f);
    int rc = 0;
    if (shell) {
        /* The prompt is the command: nothing may be appended to it. */
        rc = ra_attachments(p, spec, NULL);
    } else {
        rc = ra_attachments(p, spec, f);
        json_t *schema = json_object_get(spec, "output_schema");
        char *text = schema ? json_dumps(schema, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        if (text)
            fprintf(f, "\n\nAnswer with exactly one JSON value, and nothing else around it, that matches this JSON "
                    "Schema: %s", text);
        else if (schema)
            rc = -1;
        free(text);
    }
    if (fclose(f) != 0 || rc < 0) {
        free(buf);
        return -1;
    }
    p->prompt = buf;
    return 0;
}

static int ra_plan_agent(const char *agent, json_t *spec, runagent_plan *p)
{
    json_t *model = json_object_get(spec, "model");
    if (strcmp(agent, "codex") == 0) {
        /* codex reads $CODEX_HOME: AGENTS.md, skills/, config.toml. */
        if (ra_env(p, "CODEX_HOME", RUN_HOME "/.codex") < 0 ||
            ra_instructions(p, spec, RUN_HOME "/.codex/AGENTS.md") < 0 ||
            ra_skills(p, spec, RUN_HOME "/.codex/skills") < 0)
            return -1;
        /* Always: codex refuses a CODEX_HOME that does not exist, and a
         * run without instructions, skills, model or MCP writes nothing
         * else there. */
        return ra_codex_config(p, spec, RUN_HOME "/.codex/config.toml");
    }
    if (strcmp(agent, "opencode") == 0) {
        /* Global config, rules and skills under ~/.config/opencode; the
         * skills directory is "skills" (opencode.ai/docs/skills: "Global
         * config: ~/.config/opencode/skills/<name>/SKILL.md"). */
        if (ra_instructions(p, spec, RUN_HOME "/.config/opencode/AGENTS.md") < 0 ||
            ra_skills(p, spec, RUN_HOME "/.config/opencode/skills") < 0)
            return -1;
        return model || json_array_size(json_object_get(spec, "mcp")) ?
               ra_opencode_config(p, spec, RUN_HOME "/.config/opencode/opencode.jsonc") : 0;
    }
    if (strcmp(agent, "claude") == 0) {
        /* User memory and user skills; MCP only through ACP mcpServers. */
        if (model && ra_env(p, "ANTHROPIC_MODEL", json_string_value(model)) < 0)
            return -1;
        return ra_instructions(p, spec, RUN_HOME "/.claude/CLAUDE.md") < 0 ||
               ra_skills(p, spec, RUN_HOME "/.claude/skills") < 0 ? -1 : 0;
    }
    if (strcmp(agent, "mock") == 0) {
        /* What the mock's "instructions" word reads back (src/agent/mock.c). */
        return ra_instructions(p, spec, RUN_HOME "/.config/cell-mock-agent/instructions.md") < 0 ||
               ra_skills(p, spec, RUN_HOME "/.config/cell-mock-agent/skills") < 0 ? -1 : 0;
    }
    return 0;                           /* shell: no files */
}

int srv_runagent_plan_build(const char *agent, json_t *spec, runagent_plan *out, char *why, size_t size)
{
    static const char *const agents[] = { "mock", "codex", "opencode", "claude", "shell", NULL };
    memset(out, 0, sizeof *out);
    if (!agent || !ra_in(agent, agents))
        return ra_bad(why, size, "agent: one of mock, codex, opencode, claude, shell is required");
    if (srv_runagent_check(spec, why, size) < 0)
        return -1;
    int shell = strcmp(agent, "shell") == 0;
    out->mcp_servers = shell ? json_array() : ra_acp_mcp(spec);
    out->env = calloc(1, sizeof *out->env);
    if (!out->mcp_servers || !out->env || ra_plan_agent(agent, spec, out) < 0 || ra_prompt(out, spec, shell) < 0) {
        srv_runagent_plan_free(out);
        return ra_bad(why, size, "out of memory materialising the %s agent's files", agent);
    }
    return 0;
}

void srv_runagent_plan_free(runagent_plan *p)
{
    for (size_t i = 0; i < p->n_files; i++) {
        free(p->files[i].path);
        free(p->files[i].data);
    }
    free(p->files);
    for (size_t i = 0; p->env && p->env[i]; i++)
        free(p->env[i]);
    free(p->env);
    json_decref(p->mcp_servers);
    free(p->prompt);
    memset(p, 0, sizeof *p);
}

/* ---- event normalisation ------------------------------------------------------------------ */

typedef struct ra_call {
    char *id, *kind, *title, *command;
} ra_call;

struct runagent_norm {
    char   *output;                 /* the assistant's text, at most RA_OUTPUT_MAX */
    size_t  output_len;
    int     output_cut;             /* stop appending once cut (no text from the middle) */
    int     have_usage;
    json_int_t in, out;
    char   *session;
    ra_call calls[RA_CALLS_MAX];    /* open tool calls, oldest first */
    size_t  n_calls;
};

runagent_norm *srv_runagent_norm_new(void)
{
    return calloc(1, sizeof(runagent_norm));
}

static void ra_call_clear(ra_call *c)
{
    free(c->id);
    free(c->kind);
    free(c->title);
    free(c->command);
    memset(c, 0, sizeof *c);
}

void srv_runagent_norm_free(runagent_norm *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n_calls; i++)
        ra_call_clear(&n->calls[i]);
    free(n->output);
    free(n->session);
    free(n);
}

static ra_call *ra_call_find(runagent_norm *n, const char *id)
{
    for (size_t i = 0; i < n->n_calls; i++)
        if (strcmp(n->calls[i].id, id) == 0)
            return &n->calls[i];
    return NULL;
}

static void ra_call_drop(runagent_norm *n, ra_call *c)
{
    size_t i = (size_t)(c - n->calls);
    ra_call_clear(c);
    memmove(&n->calls[i], &n->calls[i + 1], (n->n_calls - i - 1) * sizeof *c);
    n->n_calls--;
    memset(&n->calls[n->n_calls], 0, sizeof *c);
}

/* A new open call; the oldest is forgotten when the table is full (an
 * agent that never finishes its calls cannot grow it). */
static ra_call *ra_call_open(runagent_norm *n, const char *id)
{
    if (n->n_calls == RA_CALLS_MAX)
        ra_call_drop(n, &n->calls[0]);
    ra_call *c = &n->calls[n->n_calls];
    if (!(c->id = strdup(id)))
        return NULL;
    n->n_calls++;
    return c;
}

static void ra_set(char **field, const char *value)
{
    if (!value)
        return;
    char *copy = strdup(value);
    if (copy) {
        free(*field);
        *field = copy;
    }
}

/* Append text to the output, cut at a UTF-8 boundary at the cap. */
static void ra_output_add(runagent_norm *n, const char *text, size_t len)
{
    if (n->output_cut || len == 0)
        return;
    if (len > RA_OUTPUT_MAX - n->output_len) {
        len = RA_OUTPUT_MAX - n->output_len;
        while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
            len--;
        n->output_cut = 1;
    }
    char *grown = realloc(n->output, n->output_len + len + 1);
    if (!grown) {
        n->output_cut = 1;
        return;
    }
    n->output = grown;
    memcpy(n->output + n->output_len, text, len);
    n->output_len += len;
    n->output[n->output_len] = '\0';
}

static void ra_session(runagent_norm *n, json_t *id)
{
    if (!n->session && ra_string(id, RA_SESSION_MAX) && json_string_length(id) > 0)
        n->session = strdup(json_string_value(id));
}

static void ra_emit(json_t *events, json_t *e)
{
    if (e)
        json_array_append_new(events, e);
}

/* A string field capped at RA_TOOL_OUT_MAX (whole characters). */
static json_t *ra_capped(const char *s, size_t len)
{
    if (len > RA_TOOL_OUT_MAX) {
        len = RA_TOOL_OUT_MAX;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
            len--;
    }
    return json_stringn(s, len);
}

/* An agent's JSON value for an event field: as it is up to 64 KiB
 * serialised, else {"truncated": true, "bytes": N} with the first 64 KiB
 * of its text when it has some (a bigger event would be dropped whole). */
static void ra_set_bounded(json_t *e, const char *key, json_t *v)
{
    if (!e || !v)
        return;
    size_t bytes = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
    if (bytes <= RA_TOOL_OUT_MAX) {
        json_object_set(e, key, v);
        return;
    }
    json_t *small = json_pack("{s:b, s:I}", "truncated", 1, "bytes", (json_int_t)bytes);
    static const char *const texts[] = { "output", "aggregated_output", "formatted_output", "stdout", "content", NULL };
    for (const char *const *t = texts; small && *t; t++) {
        json_t *text = json_is_string(v) ? v : json_object_get(v, *t);
        if (json_is_string(text)) {
            json_object_set_new(small, "text", ra_capped(json_string_value(text), json_string_length(text)));
            break;
        }
    }
    json_object_set_new(e, key, small);
}

/* `whole`: the text is a whole message (codex, opencode), set apart from
 * the previous one in the output by a blank line; ACP's are chunks. */
static void ra_text(runagent_norm *n, json_t *events, const char *role, json_t *text, int whole)
{
    if (!json_is_string(text) || json_string_length(text) == 0)
        return;
    if (strcmp(role, "assistant") == 0 && whole && n->output_len > 0)
        ra_output_add(n, "\n\n", 2);
    if (strcmp(role, "assistant") == 0)
        ra_output_add(n, json_string_value(text), json_string_length(text));
    ra_emit(events, json_pack("{s:s, s:s, s:O}", "type", "message.delta", "role", role, "text", text));
}

static json_int_t ra_int(json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) >= 0 ? json_integer_value(v) : 0;
}

static void ra_usage_add(runagent_norm *n, json_t *events, json_int_t in, json_int_t out)
{
    /* Agents' numbers: clamp instead of overflowing. */
    const json_int_t cap = (json_int_t)1 << 50;
    n->in = n->in + in > cap ? cap : n->in + in;
    n->out = n->out + out > cap ? cap : n->out + out;
    n->have_usage = 1;
    /* The totals so far: the last usage event is the run's. */
    ra_emit(events, json_pack("{s:s, s:I, s:I, s:I}", "type", "usage", "inputTokens", n->in, "outputTokens", n->out,
                              "totalTokens", n->in + n->out));
}

/* Paths in file.change are relative to the workspace when inside it. */
static json_t *ra_file_change(const char *path, const char *kind)
{
    static const char ws[] = RUN_WORKSPACE "/";
    if (strncmp(path, ws, sizeof ws - 1) == 0 && path[sizeof ws - 1])
        path += sizeof ws - 1;
    return json_pack("{s:s, s:s, s:s}", "type", "file.change", "path", path, "kind", kind);
}

/* An execute call's command: rawInput.command (a string or an argv
 * array, joined by spaces) or rawInput.cmd, else NULL. */
static char *ra_command_of(json_t *raw)
{
    json_t *c = json_object_get(raw, "command");
    if (!c)
        c = json_object_get(raw, "cmd");
    if (ra_string(c, RA_TOOL_OUT_MAX))
        return strdup(json_string_value(c));
    if (!json_is_array(c))
        return NULL;
    /* [sh, -c, SCRIPT] (codex-acp's ["/bin/bash", "-lc", ...]): the script
     * is the command, as the agent's title shows it. */
    const char *shell = json_string_value(json_array_get(c, 0)), *flag = json_string_value(json_array_get(c, 1));
    const char *base = shell ? (strrchr(shell, '/') ? strrchr(shell, '/') + 1 : shell) : "";
    static const char *const shells[] = { "sh", "bash", "dash", "zsh", NULL };
    if (json_array_size(c) == 3 && ra_in(base, shells) && flag && (strcmp(flag, "-c") == 0 || strcmp(flag, "-lc") == 0) &&
        ra_string(json_array_get(c, 2), RA_TOOL_OUT_MAX))
        return strdup(json_string_value(json_array_get(c, 2)));
    char *buf = NULL;
    size_t len = 0, i;
    json_t *a;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    /* Other argvs joined by spaces, each word quoted as sh would need it. */
    json_array_foreach(c, i, a) {
        const char *w = json_string_value(a);
        if (!ra_string(a, RA_TOOL_OUT_MAX) || ftell(f) >= (long)RA_TOOL_OUT_MAX)
            continue;
        fputs(i ? " " : "", f);
        if (*w && strspn(w, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-") == strlen(w)) {
            fputs(w, f);
            continue;
        }
        fputc('\'', f);
        for (; *w; w++)
            fputs(*w == '\'' ? "'\\''" : (char[]){ *w, 0 }, f);
        fputc('\'', f);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* ACP: a tool call's text content blocks, joined. */
static json_t *ra_acp_content_text(json_t *content)
{
    char *buf = NULL;
    size_t len = 0, i;
    json_t *c;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    json_array_foreach(content, i, c) {
        json_t *inner = json_object_get(c, "content");
        const char *t = json_string_value(json_object_get(inner, "text"));
        if (t && json_is_string(json_object_get(c, "type")) &&
            strcmp(json_string_value(json_object_get(c, "type")), "content") == 0 &&
            ftell(f) < (long)RA_TOOL_OUT_MAX)
            fputs(t, f);
    }
    json_t *out = NULL;
    if (fclose(f) == 0 && len > 0)
        out = ra_capped(buf, len);
    free(buf);
    return out;
}

/* The exit code an agent put in a tool's rawOutput, or -1. */
static json_int_t ra_exit_code(json_t *raw)
{
    static const char *const keys[] = { "exitCode", "exit_code", "exit", "code", NULL };
    for (const char *const *k = keys; *k; k++) {
        json_t *v = json_object_get(raw, *k);
        if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= 65535)
            return json_integer_value(v);
    }
    return -1;
}

static void ra_acp_tool_start(ra_call *c, json_t *events, json_t *u)
{
    json_t *input = json_object_get(u, "rawInput");
    json_t *e = json_pack("{s:s, s:s, s:s, s:s}", "type", "tool.call", "callId", c->id, "kind", c->kind, "title",
                          c->title ? c->title : "");
    if (e && input)
        ra_set_bounded(e, "input", input);
    ra_emit(events, e);
    if (strcmp(c->kind, "execute") == 0)
        ra_emit(events, json_pack("{s:s, s:s, s:s}", "type", "command", "callId", c->id, "command",
                                  c->command ? c->command : c->title ? c->title : ""));
}

/* What an ACP diff did to its file: codex-acp's rawOutput.changes says
 * (a deletion is a diff to "" there, like emptying the file); else no
 * oldText is a new file. */
static const char *ra_acp_diff_kind(json_t *raw, json_t *diff, const char *path)
{
    const char *type = json_string_value(json_object_get(json_object_get(json_object_get(raw, "changes"), path), "type"));
    if (type && strcmp(type, "delete") == 0)
        return "deleted";
    if (type && strcmp(type, "add") == 0)
        return "added";
    json_t *old = json_object_get(diff, "oldText");
    return !old || json_is_null(old) ? "added" : "modified";
}

/* A finished ACP tool call: file changes, the result, the exit code. */
static void ra_acp_tool_end(runagent_norm *n, ra_call *c, json_t *events, json_t *u, const char *status)
{
    size_t i;
    json_t *item;
    int diffs = 0;
    json_array_foreach(json_object_get(u, "content"), i, item) {
        const char *path = json_string_value(json_object_get(item, "path"));
        const char *type = json_string_value(json_object_get(item, "type"));
        if (!path || !type || strcmp(type, "diff") != 0)
            continue;
        ra_emit(events, ra_file_change(path, ra_acp_diff_kind(json_object_get(u, "rawOutput"), item, path)));
        diffs++;
    }
    if (!diffs && strcmp(status, "completed") == 0 && (strcmp(c->kind, "delete") == 0 || strcmp(c->kind, "edit") == 0))
        json_array_foreach(json_object_get(u, "locations"), i, item) {
            const char *path = json_string_value(json_object_get(item, "path"));
            if (path)
                ra_emit(events, ra_file_change(path, strcmp(c->kind, "delete") == 0 ? "deleted" : "modified"));
        }
    json_t *raw = json_object_get(u, "rawOutput");
    json_t *e = json_pack("{s:s, s:s, s:s}", "type", "tool.result", "callId", c->id, "status", status);
    json_t *output = raw ? json_incref(raw) : ra_acp_content_text(json_object_get(u, "content"));
    if (e && output)
        ra_set_bounded(e, "output", output);
    json_decref(output);
    ra_emit(events, e);
    json_int_t code = ra_exit_code(raw);
    if (strcmp(c->kind, "execute") == 0 && code >= 0)
        ra_emit(events, json_pack("{s:s, s:s, s:s, s:I}", "type", "command.exit", "callId", c->id, "command",
                                  c->command ? c->command : c->title ? c->title : "", "exitCode", code));
    ra_call_drop(n, c);
}

static void ra_acp_tool(runagent_norm *n, json_t *events, json_t *u, int is_new)
{
    json_t *id = json_object_get(u, "toolCallId");
    if (!ra_string(id, RA_SESSION_MAX))
        return;
    ra_call *c = ra_call_find(n, json_string_value(id));
    int started = c != NULL;
    if (!c && !(c = ra_call_open(n, json_string_value(id))))
        return;
    const char *kind = json_string_value(json_object_get(u, "kind"));
    if (ra_in(kind, ra_kinds) || !c->kind)
        ra_set(&c->kind, ra_in(kind, ra_kinds) ? kind : "other");
    json_t *title = json_object_get(u, "title");
    if (ra_string(title, RA_TOOL_OUT_MAX))
        ra_set(&c->title, json_string_value(title));
    char *cmd = ra_command_of(json_object_get(u, "rawInput"));
    if (cmd) {
        free(c->command);
        c->command = cmd;
    }
    if (!c->kind)
        return;                         /* out of memory: forget it */
    (void)is_new;                       /* a tool_call_update may come first: it opens the call */
    if (!started)
        ra_acp_tool_start(c, events, u);
    const char *status = json_string_value(json_object_get(u, "status"));
    if (status && (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0))
        ra_acp_tool_end(n, c, events, u, status);
}

static json_t *ra_plan(json_t *entries)
{
    json_t *e = json_pack("{s:s}", "type", "plan");
    ra_set_bounded(e, "entries", entries);
    return e;
}

json_t *srv_runagent_from_acp(runagent_norm *n, json_t *params)
{
    json_t *events = json_array();
    if (!events || !json_is_object(params))
        return events;
    json_t *u = json_object_get(params, "update");
    if (!json_is_object(u)) {
        /* A session/prompt result: its usage (ACP's per-turn token counts,
         * as claude-agent-acp reports them). */
        json_t *usage = json_object_get(params, "usage");
        if (json_is_object(usage))
            ra_usage_add(n, events, ra_int(json_object_get(usage, "inputTokens")),
                         ra_int(json_object_get(usage, "outputTokens")));
        return events;
    }
    ra_session(n, json_object_get(params, "sessionId"));
    const char *t = json_string_value(json_object_get(u, "sessionUpdate"));
    json_t *text = json_object_get(json_object_get(u, "content"), "text");
    if (!t)
        return events;
    if (strcmp(t, "agent_message_chunk") == 0)
        ra_text(n, events, "assistant", text, 0);
    else if (strcmp(t, "agent_thought_chunk") == 0)
        ra_text(n, events, "thought", text, 0);
    else if (strcmp(t, "tool_call") == 0)
        ra_acp_tool(n, events, u, 1);
    else if (strcmp(t, "tool_call_update") == 0)
        ra_acp_tool(n, events, u, 0);
    else if (strcmp(t, "plan") == 0 && json_is_array(json_object_get(u, "entries")))
        ra_emit(events, ra_plan(json_object_get(u, "entries")));
    else if (strcmp(t, "usage_update") == 0 && json_is_integer(json_object_get(u, "inputTokens")))
        ra_usage_add(n, events, ra_int(json_object_get(u, "inputTokens")), ra_int(json_object_get(u, "outputTokens")));
    /* user_message_chunk (a session/load replay), available_commands_update,
     * current_mode_update, config_option_update, usage_update's context
     * size: nothing for the run's events. */
    return events;
}

/* ---- codex exec --json ------------------------------------------------------------------------ */

static void ra_codex_start(runagent_norm *n, json_t *events, json_t *item, const char *type, const char *id)
{
    if (ra_call_find(n, id))
        return;
    ra_call *c = ra_call_open(n, id);
    if (!c)
        return;
    if (strcmp(type, "command_execution") == 0) {
        ra_set(&c->kind, "execute");
        c->command = ra_command_of(item);
        ra_set(&c->title, c->command ? c->command : "");
    } else if (strcmp(type, "file_change") == 0) {
        ra_set(&c->kind, "edit");
        ra_set(&c->title, "apply patch");
    } else {
        char title[160];
        const char *server = json_string_value(json_object_get(item, "server"));
        const char *tool = json_string_value(json_object_get(item, "tool"));
        snprintf(title, sizeof title, "%.64s.%.64s", server ? server : "mcp", tool ? tool : "tool");
        /* The names are the agent's, cut at a byte count: a cut inside a
         * UTF-8 character would make json_pack refuse the title and the
         * event would be lost, so the title is made valid (U+FFFD). */
        free(c->title);
        size_t title_len;
        c->title = util_utf8_lossy((const unsigned char *)title, strlen(title), &title_len);
        ra_set(&c->kind, "other");
    }
    if (!c->kind || !c->title) {
        ra_call_drop(n, c);
        return;
    }
    json_t *e = json_pack("{s:s, s:s, s:s, s:s}", "type", "tool.call", "callId", id, "kind", c->kind, "title",
                          c->title);
    json_t *input = strcmp(type, "mcp_tool_call") == 0 ? json_object_get(item, "arguments") : NULL;
    if (e && input)
        ra_set_bounded(e, "input", input);
    ra_emit(events, e);
    if (strcmp(c->kind, "execute") == 0)
        ra_emit(events, json_pack("{s:s, s:s, s:s}", "type", "command", "callId", id, "command", c->title));
}

static void ra_codex_end(runagent_norm *n, json_t *events, json_t *item, const char *type, const char *id)
{
    ra_codex_start(n, events, item, type, id);
    ra_call *c = ra_call_find(n, id);
    if (!c)
        return;
    const char *st = json_string_value(json_object_get(item, "status"));
    const char *status = st && strcmp(st, "completed") == 0 ? "completed" : "failed";
    json_t *output = NULL;
    if (strcmp(type, "file_change") == 0) {
        size_t i;
        json_t *ch;
        json_array_foreach(json_object_get(item, "changes"), i, ch) {
            const char *path = json_string_value(json_object_get(ch, "path"));
            const char *kind = json_string_value(json_object_get(ch, "kind"));
            if (path && kind)
                ra_emit(events, ra_file_change(path, strcmp(kind, "add") == 0 ? "added" :
                                               strcmp(kind, "delete") == 0 ? "deleted" : "modified"));
        }
    } else if (strcmp(type, "command_execution") == 0) {
        json_t *out = json_object_get(item, "aggregated_output");
        output = json_is_string(out) ? ra_capped(json_string_value(out), json_string_length(out)) : NULL;
    } else {
        output = json_incref(json_object_get(item, json_object_get(item, "error") ? "error" : "result"));
    }
    json_t *e = json_pack("{s:s, s:s, s:s}", "type", "tool.result", "callId", id, "status", status);
    if (e && output)
        ra_set_bounded(e, "output", output);
    json_decref(output);
    ra_emit(events, e);
    json_t *code = json_object_get(item, "exit_code");
    if (strcmp(type, "command_execution") == 0 && json_is_integer(code))
        ra_emit(events, json_pack("{s:s, s:s, s:s, s:O}", "type", "command.exit", "callId", id, "command", c->title,
                                  "exitCode", code));
    ra_call_drop(n, c);
}

static void ra_codex_todo(json_t *events, json_t *item)
{
    json_t *entries = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(item, "items"), i, t) {
        json_t *text = json_object_get(t, "text");
        if (json_is_string(text))
            json_array_append_new(entries, json_pack("{s:O, s:s, s:s}", "content", text, "priority", "medium",
                                                     "status", json_is_true(json_object_get(t, "completed")) ?
                                                     "completed" : "pending"));
    }
    ra_emit(events, json_pack("{s:s, s:o}", "type", "plan", "entries", entries));
}

static void ra_error(json_t *events, json_t *msg)
{
    ra_emit(events, json_pack("{s:s, s:o}", "type", "error", "message", json_is_string(msg) ?
                              ra_capped(json_string_value(msg), json_string_length(msg)) : json_string("agent error")));
}

json_t *srv_runagent_from_codex(runagent_norm *n, json_t *line)
{
    json_t *events = json_array();
    const char *t = json_string_value(json_object_get(line, "type"));
    if (!events || !t)
        return events;
    json_t *item = json_object_get(line, "item");
    const char *it = json_string_value(json_object_get(item, "type"));
    const char *id = json_string_value(json_object_get(item, "id"));
    int tool = it && id && strlen(id) <= RA_SESSION_MAX &&
               (strcmp(it, "command_execution") == 0 || strcmp(it, "file_change") == 0 ||
                strcmp(it, "mcp_tool_call") == 0);
    if (strcmp(t, "thread.started") == 0) {
        ra_session(n, json_object_get(line, "thread_id"));
    } else if (strcmp(t, "item.started") == 0 && tool) {
        ra_codex_start(n, events, item, it, id);
    } else if ((strcmp(t, "item.started") == 0 || strcmp(t, "item.updated") == 0 ||
                strcmp(t, "item.completed") == 0) && it && strcmp(it, "todo_list") == 0) {
        ra_codex_todo(events, item);
    } else if (strcmp(t, "item.completed") == 0 && it) {
        if (tool)
            ra_codex_end(n, events, item, it, id);
        else if (strcmp(it, "agent_message") == 0)
            ra_text(n, events, "assistant", json_object_get(item, "text"), 1);
        else if (strcmp(it, "reasoning") == 0)
            ra_text(n, events, "thought", json_object_get(item, "text"), 1);
        else if (strcmp(it, "error") == 0)
            ra_error(events, json_object_get(item, "message"));
    } else if (strcmp(t, "turn.completed") == 0) {
        json_t *u = json_object_get(line, "usage");
        if (json_is_object(u))
            ra_usage_add(n, events, ra_int(json_object_get(u, "input_tokens")),
                         ra_int(json_object_get(u, "output_tokens")));
    } else if (strcmp(t, "turn.failed") == 0) {
        ra_error(events, json_object_get(json_object_get(line, "error"), "message"));
    } else if (strcmp(t, "error") == 0) {
        ra_error(events, json_object_get(line, "message"));
    }
    return events;
}

/* ---- opencode run --format json ---------------------------------------------------------------- */

/* opencode's tool names to ACP kinds. */
static const char *ra_opencode_kind(const char *tool)
{
    static const char *const map[][2] = {
        { "bash", "execute" }, { "edit", "edit" }, { "write", "edit" }, { "patch", "edit" },
        { "multiedit", "edit" }, { "read", "read" }, { "glob", "search" }, { "grep", "search" },
        { "list", "search" }, { "webfetch", "fetch" }, { "todowrite", "think" }, { "todoread", "think" },
    };
    for (size_t i = 0; tool && i < sizeof map / sizeof map[0]; i++)
        if (strcmp(tool, map[i][0]) == 0)
            return map[i][1];
    return "other";
}

static void ra_opencode_tool(json_t *events, json_t *part)
{
    const char *id = json_string_value(json_object_get(part, "callID"));
    const char *tool = json_string_value(json_object_get(part, "tool"));
    json_t *state = json_object_get(part, "state");
    const char *status = json_string_value(json_object_get(state, "status"));
    json_t *input = json_object_get(state, "input");
    if (!id || !tool || strlen(id) > RA_SESSION_MAX || !status)
        return;
    const char *kind = ra_opencode_kind(tool);
    const char *title = json_string_value(json_object_get(state, "title"));
    char *command = strcmp(kind, "execute") == 0 ? ra_command_of(input) : NULL;
    json_t *e = json_pack("{s:s, s:s, s:s, s:s}", "type", "tool.call", "callId", id, "kind", kind, "title",
                          command ? command : title ? title : tool);
    if (e && json_is_object(input))
        ra_set_bounded(e, "input", input);
    ra_emit(events, e);
    if (command)
        ra_emit(events, json_pack("{s:s, s:s, s:s}", "type", "command", "callId", id, "command", command));
    int done = strcmp(status, "completed") == 0, failed = strcmp(status, "error") == 0;
    if (done || failed) {
        const char *path = json_string_value(json_object_get(input, "filePath"));
        json_t *exists = json_object_get(json_object_get(state, "metadata"), "exists");
        if (done && path && strcmp(kind, "edit") == 0)
            ra_emit(events, ra_file_change(path, json_is_false(exists) ? "added" : "modified"));
        json_t *out = json_object_get(state, failed ? "error" : "output");
        e = json_pack("{s:s, s:s, s:s}", "type", "tool.result", "callId", id, "status", done ? "completed" : "failed");
        if (e && json_is_string(out))
            json_object_set_new(e, "output", ra_capped(json_string_value(out), json_string_length(out)));
        ra_emit(events, e);
        json_int_t code = ra_exit_code(json_object_get(state, "metadata"));
        if (command && code >= 0)
            ra_emit(events, json_pack("{s:s, s:s, s:s, s:I}", "type", "command.exit", "callId", id, "command",
                                      command, "exitCode", code));
    }
    free(command);
}

json_t *srv_runagent_from_opencode(runagent_norm *n, json_t *line)
{
    json_t *events = json_array();
    const char *t = json_string_value(json_object_get(line, "type"));
    if (!events || !t)
        return events;
    ra_session(n, json_object_get(line, "sessionID"));
    json_t *part = json_object_get(line, "part");
    if (strcmp(t, "text") == 0) {
        ra_text(n, events, "assistant", json_object_get(part, "text"), 1);
    } else if (strcmp(t, "reasoning") == 0) {
        ra_text(n, events, "thought", json_object_get(part, "text"), 1);
    } else if (strcmp(t, "tool_use") == 0) {
        ra_opencode_tool(events, part);
    } else if (strcmp(t, "step_finish") == 0) {
        json_t *tok = json_object_get(part, "tokens");
        if (json_is_object(tok))
            ra_usage_add(n, events, ra_int(json_object_get(tok, "input")),
                         ra_int(json_object_get(tok, "output")) + ra_int(json_object_get(tok, "reasoning")));
    } else if (strcmp(t, "error") == 0) {
        json_t *err = json_object_get(line, "error");
        json_t *msg = json_object_get(json_object_get(err, "data"), "message");
        ra_error(events, json_is_string(msg) ? msg : json_object_get(err, "message"));
    }
    return events;
}

json_t *srv_runagent_output(runagent_norm *n)
{
    return json_stringn(n->output ? n->output : "", n->output_len);
}

json_t *srv_runagent_usage(runagent_norm *n)
{
    if (!n->have_usage)
        return json_null();
    return json_pack("{s:I, s:I, s:I}", "inputTokens", n->in, "outputTokens", n->out, "totalTokens", n->in + n->out);
}

const char *srv_runagent_session(runagent_norm *n)
{
    return n->session;
}

/* ---- permissions ----------------------------------------------------------------------------- */

const char *srv_runagent_permission(json_t *policy, json_t *request_params)
{
    json_t *call = json_object_get(request_params, "toolCall");
    const char *kind = json_string_value(json_object_get(call, "kind"));
    const char *title = json_string_value(json_object_get(call, "title"));
    char *command = srv_runagent_command(call);
    const char *subject = command ? command : title ? title : "";
    const char *answer = NULL;
    size_t i;
    json_t *rule;
    json_array_foreach(json_object_get(policy, "rules"), i, rule) {
        const char *rk = json_string_value(json_object_get(rule, "kind"));
        const char *pat = json_string_value(json_object_get(rule, "pattern"));
        if (rk && (!kind || strcmp(rk, kind) != 0))
            continue;
        if (pat && fnmatch(pat, subject, 0) != 0)
            continue;
        answer = json_string_value(json_object_get(rule, "action"));
        break;
    }
    free(command);
    if (!answer)
        answer = json_string_value(json_object_get(policy, "default"));
    /* Static strings for the caller, whatever the policy object's life. */
    for (const char *const *a = ra_actions; answer && *a; a++)
        if (strcmp(answer, *a) == 0)
            return *a;
    return "allow";
}

char *srv_runagent_command(json_t *tool_call)
{
    const char *kind = json_string_value(json_object_get(tool_call, "kind"));
    return kind && strcmp(kind, "execute") == 0 ? ra_command_of(json_object_get(tool_call, "rawInput")) : NULL;
}

/* ---- output schema check ------------------------------------------------------------------ */

static int ra_type_is(const char *type, json_t *v)
{
    if (strcmp(type, "object") == 0)
        return json_is_object(v);
    if (strcmp(type, "array") == 0)
        return json_is_array(v);
    if (strcmp(type, "string") == 0)
        return json_is_string(v);
    if (strcmp(type, "number") == 0)
        return json_is_number(v);
    if (strcmp(type, "integer") == 0)
        /* 3.0 is an integer; the range check first: casting 1e300 is undefined. */
        return json_is_integer(v) || (json_is_real(v) && json_real_value(v) > -9e15 && json_real_value(v) < 9e15 &&
                                      json_real_value(v) == (double)(long long)json_real_value(v));
    if (strcmp(type, "boolean") == 0)
        return json_is_boolean(v);
    return strcmp(type, "null") == 0 && json_is_null(v);
}

static int ra_validate(json_t *s, json_t *v, const char *ptr, char *why, size_t size);

static int ra_validate_object(json_t *s, json_t *v, const char *ptr, char *why, size_t size)
{
    json_t *props = json_object_get(s, "properties"), *extra = json_object_get(s, "additionalProperties");
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(s, "required"), i, r) {
        if (!json_object_get(v, json_string_value(r)))
            return ra_bad(why, size, "%s: the required property %s is missing", *ptr ? ptr : "/",
                          ra_q(json_string_value(r)).s);
    }
    const char *k;
    json_t *val;
    json_object_foreach(v, k, val) {
        char sub[512];
        ra_ptr(sub, sizeof sub, ptr, k);
        json_t *ps = json_object_get(props, k);
        if (ps) {
            if (ra_validate(ps, val, sub, why, size) < 0)
                return -1;
        } else if (json_is_false(extra)) {
            return ra_bad(why, size, "%s: no such property is allowed (additionalProperties is false)", sub);
        } else if (json_is_object(extra) && ra_validate(extra, val, sub, why, size) < 0) {
            return -1;
        }
    }
    return 0;
}

static int ra_validate(json_t *s, json_t *v, const char *ptr, char *why, size_t size)
{
    const char *at = *ptr ? ptr : "/";
    json_t *t = json_object_get(s, "type");
    if (json_is_string(t) && !ra_type_is(json_string_value(t), v))
        return ra_bad(why, size, "%s: a value of type %s is required", at, json_string_value(t));
    if (json_is_array(t)) {
        size_t i;
        json_t *e;
        int ok = 0;
        json_array_foreach(t, i, e)
            ok |= ra_type_is(json_string_value(e), v);
        if (!ok)
            return ra_bad(why, size, "%s: a value of none of the allowed types", at);
    }
    json_t *en = json_object_get(s, "enum");
    if (en) {
        size_t i;
        json_t *e;
        int ok = 0;
        json_array_foreach(en, i, e)
            ok |= json_equal(e, v);
        if (!ok)
            return ra_bad(why, size, "%s: not one of the enum's values", at);
    }
    if (json_is_object(v))
        return ra_validate_object(s, v, ptr, why, size);
    json_t *items = json_object_get(s, "items");
    if (json_is_array(v) && items) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%zu", ptr, i);
            if (ra_validate(items, e, sub, why, size) < 0)
                return -1;
        }
    }
    return 0;
}

int srv_runagent_schema_validate(json_t *schema, json_t *value, char *why, size_t size)
{
    size_t nodes = 0;
    /* The schema was checked when the run was accepted; checked again here
     * so a caller can never walk an unchecked (deeper) one. */
    if (ra_check_schema_node(schema, "", 0, &nodes, why, size) < 0)
        return -1;
    return ra_validate(schema, value, "", why, size);
}
