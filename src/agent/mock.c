/* mock.c: cell-mock-agent, the `mock` agent shipped with cell.  It speaks
 * the Agent Client Protocol over stdin/stdout (newline-delimited JSON-RPC
 * 2.0) well enough for the sandbox-agent SDK: initialize, session/new,
 * session/load (the session's history replayed as session/update
 * notifications), session/prompt streaming agent_message_chunk updates, a
 * permission request on demand, set_mode/set_model/set_config_option.  It
 * runs inside a cell as an ordinary process; linked statically (like
 * cell-init) so any image can run it.
 *
 * Sessions: each has a random id, a mode, a model, a thought level, an
 * "always allowed" answer and a history of user and agent messages (at most
 * MOCK_HISTORY_MAX messages and MOCK_HISTORY_BYTES of text, the oldest
 * dropped first).  Besides memory, each is saved to
 * $HOME/.local/state/cell-mock-agent/<id>.json right after each answer that
 * changed it, so a new instance (a new agent process) can session/load it.  Two instances that
 * load one session write it in turn: the last write wins.
 *
 * What a prompt asks for is read from its last text block only (earlier
 * blocks are context, e.g. the SDK's history replay that quotes earlier
 * prompts; a quoted "exit now" must not end the agent):
 *   "permission"  ask session/request_permission first (not again once
 *                 the session was allowed always), report the outcome
 *   "settings"    reply with the session's mode, model and thought level
 *   "recall"      reply with the session's user messages so far (this prompt's
 *                 last), one chunk each
 *   "env"         reply with the names of the environment's variables
 *   "pwd"         reply with the working directory
 *   "stderr"      write a line to stderr, then answer as usual
 *   "garbage"     print a line that is not JSON first
 *   "exit now"    exit with status 3 without answering
 *   "no answer"   never answer this prompt
 * Anything else is echoed back as "mock: <text>" in one chunk per word.
 *
 * Scripts (what runs and their tests use, docs/api.md "Runs"): when the
 * last block's first word is one of these, each of its lines is one word
 * and its arguments, done in order; other lines (the notes a run appends:
 * attachments, the output schema) are ignored:
 *   say TEXT        an agent_message_chunk with TEXT
 *   think TEXT      an agent_thought_chunk with TEXT
 *   write PATH TEXT write TEXT ("\n", "\t", "\\" unescaped) to PATH (relative
 *                   to the cwd, parents made): a tool_call of kind edit, then
 *                   a tool_call_update with the change as an ACP diff
 *   delete PATH     unlink PATH: a tool_call of kind delete (its location)
 *   run CMD         a tool_call of kind execute, session/request_permission
 *                   for it, then /bin/sh -c CMD only if an allow option was
 *                   chosen; the update has rawOutput {exitCode (128+N for
 *                   signal N), output (64 KiB at most)}, status failed when
 *                   denied or non-zero
 *   usage [IN OUT]  a usage_update {used, size} now, and the turn's result
 *                   carries usage {inputTokens, outputTokens, totalTokens}
 *                   (ACP's session-usage shape, as claude-agent-acp sends);
 *                   100 and 20 by default, summed over the turn
 *   crash           exit with status 3 mid-prompt
 *   sleep N         wait N seconds (at most 86400); a session/cancel ends
 *                   the turn at once with stopReason "cancelled"
 *   instructions    reply with what a run wrote for the mock (runagent.c):
 *                   $HOME/.config/cell-mock-agent/instructions.md, then each
 *                   skills/NAME/SKILL.md and the skills' other files, sorted
 *   json [TEXT]     reply with TEXT as it is ({"ok":true} without one) */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <dirent.h>
#include <ftw.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

/* A longer line is dropped whole: the mock needs no big messages. */
#define MOCK_MAX_LINE (4u << 20)
/* Sessions one process keeps; a session/new beyond fails (-32000). */
#define MOCK_MAX_SESSIONS 64
/* A session's history: at most this many messages and bytes of text. */
#define MOCK_HISTORY_MAX 256
#define MOCK_HISTORY_BYTES (256u << 10)
/* A saved session bigger than this is not read (JSON escapes may grow the
 * text up to six times). */
#define MOCK_STATE_MAX (MOCK_HISTORY_BYTES * 6 + (64u << 10))
#define MOCK_ID_PREFIX "mock-session-"
#define MOCK_ID_HEX 16

/* JSON-RPC and ACP error codes. */
#define RPC_INVALID_PARAMS (-32602)
#define RPC_NOT_FOUND (-32601)
#define ACP_RESOURCE_NOT_FOUND (-32002)

extern char **environ;

/* One config option: its id, name and the values it allows (value, name
 * pairs, the first the default); indexed by OPT_*. */
typedef struct {
    const char *id, *name;
    const char *const *values;
} mock_option;

static const char *const mock_models_list[] = { "mock", "Mock", "mock-fast", "Mock Fast", NULL };
static const char *const mock_modes_list[] = { "normal", "Normal", "plan", "Plan", NULL };
static const char *const mock_levels_list[] = { "low", "Low", "medium", "Medium", "high", "High", NULL };
enum { OPT_MODEL, OPT_MODE, OPT_LEVEL, OPT_COUNT };
static const mock_option mock_options[OPT_COUNT] = {
    { "model", "Model", mock_models_list },
    { "mode", "Mode", mock_modes_list },
    { "thought_level", "Thought Level", mock_levels_list },
};

typedef struct {
    char id[sizeof MOCK_ID_PREFIX + MOCK_ID_HEX];
    const char *current[OPT_COUNT]; /* points into mock_options' lists */
    int always_allowed;
    json_t *history;                /* [{role: user|agent, text}] */
    size_t history_bytes;
} mock_session;

static mock_session mock_sessions[MOCK_MAX_SESSIONS];
static size_t mock_nsessions;
static unsigned mock_requests;
/* The agent's reply to the prompt being answered, as sent in chunks. */
static FILE *mock_reply;

/* Keep `len` bytes of `text` at most, cut at a UTF-8 character boundary
 * (jansson refuses invalid UTF-8). */
static size_t mock_utf8_cut(const char *text, size_t len)
{
    while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
        len--;
    return len;
}

/* How much of `s` to quote in a message: at most `max` bytes, whole
 * characters only. */
static int mock_clip(const char *s, size_t max)
{
    size_t len = strnlen(s, max);
    return (int)(len < max ? len : mock_utf8_cut(s, max));
}

/* `s` as a JSON string.  Text that is not UTF-8 (an environment name, a
 * path: any bytes) gets '?' for each byte above 0x7f instead of the whole
 * message failing. */
static json_t *mock_json_textn(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (j)
        return j;
    char *copy = strndup(s, len);
    if (!copy)
        exit(1);
    for (char *c = copy; *c; c++)
        if ((unsigned char)*c > 0x7f)
            *c = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static json_t *mock_json_text(const char *s)
{
    return mock_json_textn(s, strlen(s));
}

/* One message per line, flushed at once: the proxy streams line by line. */
static void mock_send(json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!s)
        exit(1);
    if (printf("%s\n", s) < 0 || fflush(stdout) != 0)
        exit(1);                /* the proxy went away */
    free(s);
}

static void mock_result(json_t *id, json_t *result)
{
    mock_send(json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result));
}

static void mock_error(json_t *id, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void mock_error(json_t *id, int code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    mock_send(json_pack("{s:s, s:O, s:{s:i, s:o}}", "jsonrpc", "2.0", "id", id, "error", "code", code,
                        "message", mock_json_text(message)));
}

static void mock_update(const char *session, json_t *update)
{
    mock_send(json_pack("{s:s, s:s, s:{s:s, s:o}}", "jsonrpc", "2.0", "method", "session/update", "params",
                        "sessionId", session, "update", update));
}

static void mock_text_update(const char *session, const char *kind, const char *text)
{
    mock_update(session, json_pack("{s:s, s:{s:s, s:o}}", "sessionUpdate", kind, "content", "type", "text",
                                   "text", mock_json_text(text)));
}

static void mock_chunk(const char *session, const char *text)
{
    if (mock_reply)
        fputs(text, mock_reply);
    mock_text_update(session, "agent_message_chunk", text);
}

/* stdin, read with read(2) so that a wait ("sleep") can poll it for a
 * session/cancel: stdio's buffer would hide lines from poll. */
static char *mock_in;
static size_t mock_in_len, mock_in_cap;
static int mock_in_eof, mock_in_skip;

/* The next line into *line (NUL-terminated, valid until the next call):
 * 1; 0 when `timeout_ms` (>= 0) passed first; -1 at EOF.  A line longer
 * than MOCK_MAX_LINE is dropped whole. */
static int mock_line(int timeout_ms, char **line)
{
    static char *out;
    static size_t out_cap;
    for (;;) {
        char *nl = mock_in_len ? memchr(mock_in, '\n', mock_in_len) : NULL;
        if (nl || (mock_in_eof && mock_in_len > 0)) {
            size_t n = nl ? (size_t)(nl - mock_in) + 1 : mock_in_len;
            int skip = mock_in_skip;
            mock_in_skip = 0;
            if (!skip && n + 1 > out_cap) {
                out_cap = n + 1;
                if (!(out = realloc(out, out_cap)))
                    exit(1);
            }
            if (!skip) {
                memcpy(out, mock_in, n);
                out[n] = '\0';
            }
            memmove(mock_in, mock_in + n, mock_in_len - n);
            mock_in_len -= n;
            if (skip)
                continue;
            *line = out;
            return 1;
        }
        if (mock_in_len > MOCK_MAX_LINE) {
            mock_in_skip = 1;
            mock_in_len = 0;
        }
        if (mock_in_eof)
            return -1;
        if (timeout_ms >= 0) {
            struct pollfd p = { .fd = 0, .events = POLLIN };
            int r = poll(&p, 1, timeout_ms);
            if (r < 0 && errno == EINTR)
                return 0;               /* the caller checks its clock */
            if (r < 0)
                exit(1);
            if (r == 0)
                return 0;
        }
        if (mock_in_cap - mock_in_len < 65536) {
            mock_in_cap = mock_in_len + 65536;
            if (!(mock_in = realloc(mock_in, mock_in_cap)))
                exit(1);
        }
        ssize_t r = read(0, mock_in + mock_in_len, mock_in_cap - mock_in_len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            mock_in_eof = 1;
        else
            mock_in_len += (size_t)r;
    }
}

/* The next message from stdin: NULL at EOF, or with *timed_out set when
 * `timeout_ms` (>= 0) passed.  Lines that are not JSON objects are skipped
 * (the proxy only sends objects). */
static json_t *mock_read_within(int timeout_ms, int *timed_out)
{
    char *line;
    int rc;
    while ((rc = mock_line(timeout_ms, &line)) > 0) {
        json_t *msg = json_loads(line, 0, NULL);
        if (json_is_object(msg))
            return msg;
        json_decref(msg);
    }
    if (timed_out)
        *timed_out = rc == 0;
    return NULL;
}

static json_t *mock_read(void)
{
    return mock_read_within(-1, NULL);
}

/* ---- sessions, their options and history ------------------------------------------------ */

static int mock_valid_id(const char *id)
{
    size_t n = strlen(MOCK_ID_PREFIX);
    if (strncmp(id, MOCK_ID_PREFIX, n) != 0 || strlen(id + n) != MOCK_ID_HEX)
        return 0;
    return strspn(id + n, "0123456789abcdef") == MOCK_ID_HEX;
}

static mock_session *mock_find(const char *id)
{
    for (size_t i = 0; i < mock_nsessions; i++)
        if (strcmp(mock_sessions[i].id, id) == 0)
            return &mock_sessions[i];
    return NULL;
}

/* The allowed value of option `opt` spelled `v` (the list's own string), or NULL. */
static const char *mock_option_value(int opt, const char *v)
{
    for (const char *const *o = mock_options[opt].values; v && *o; o += 2)
        if (strcmp(*o, v) == 0)
            return *o;
    return NULL;
}

static mock_session *mock_session_add(const char *id)
{
    if (mock_nsessions == MOCK_MAX_SESSIONS)
        return NULL;
    mock_session *s = &mock_sessions[mock_nsessions++];
    snprintf(s->id, sizeof s->id, "%s", id);
    for (int i = 0; i < OPT_COUNT; i++)
        s->current[i] = mock_options[i].values[0];
    s->always_allowed = 0;
    s->history = json_array();
    s->history_bytes = 0;
    if (!s->history)
        exit(1);
    return s;
}

/* Append one message; drop the oldest while over the caps. */
static void mock_history_add(mock_session *s, const char *role, const char *text)
{
    size_t len = strlen(text);
    if (len > MOCK_HISTORY_BYTES)
        len = mock_utf8_cut(text, MOCK_HISTORY_BYTES);
    json_t *msg = json_pack("{s:s, s:o}", "role", role, "text", mock_json_textn(text, len));
    if (!msg || json_array_append_new(s->history, msg) != 0)
        exit(1);
    s->history_bytes += len;
    while (json_array_size(s->history) > MOCK_HISTORY_MAX || s->history_bytes > MOCK_HISTORY_BYTES) {
        s->history_bytes -= json_string_length(json_object_get(json_array_get(s->history, 0), "text"));
        json_array_remove(s->history, 0);
    }
}

/* $HOME/.local/state/cell-mock-agent[/<id>.json], created on the way when
 * `create`; 0 on success. */
static int mock_state_path(char *buf, size_t size, const char *id, int create)
{
    const char *home = getenv("HOME");
    errno = ENOENT;             /* no HOME, or a relative one */
    if (!home || home[0] != '/')
        return -1;
    errno = ENAMETOOLONG;
    static const char *const parts[] = { "/.local", "/.local/state", "/.local/state/cell-mock-agent" };
    for (size_t i = 0; create && i < sizeof parts / sizeof parts[0]; i++) {
        if ((size_t)snprintf(buf, size, "%s%s", home, parts[i]) >= size)
            return -1;
        if (mkdir(buf, 0700) < 0 && errno != EEXIST)
            return -1;
        errno = ENAMETOOLONG;
    }
    int n = snprintf(buf, size, "%s%s/%s.json", home, parts[2], id);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static json_t *mock_state_json(const mock_session *s)
{
    return json_pack("{s:i, s:s, s:s, s:s, s:b, s:O}", "version", 1, "model", s->current[OPT_MODEL], "mode",
                     s->current[OPT_MODE], "thought_level", s->current[OPT_LEVEL], "alwaysAllowed",
                     s->always_allowed, "history", s->history);
}

/* Write `text` to `path` beside it and rename it over: a reader never
 * sees half a file.  0 on success. */
static int mock_write_file(const char *path, const char *text)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid()) >= sizeof tmp)
        return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    if (close(fd) == 0 && off == len && rename(tmp, path) == 0)
        return 0;
    unlink(tmp);
    return -1;
}

/* Save the session, right after the answer that changed it: a file write
 * costs about 1 ms, which the client does not wait for.  The signals that
 * end an instance (DELETE sends SIGTERM) wait until the file is whole, so
 * an answered turn is on disk when the agent is gone.  A failure (no HOME,
 * a read-only file system) costs only the resume after a restart: reported
 * once on stderr, the session goes on. */
static void mock_save(const mock_session *s)
{
    static int warned;
    char path[4096];
    sigset_t ends, old;
    sigemptyset(&ends);
    sigaddset(&ends, SIGTERM);
    sigaddset(&ends, SIGINT);
    sigaddset(&ends, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &ends, &old) < 0)
        exit(1);
    json_t *state = mock_state_json(s);
    char *text = state ? json_dumps(state, JSON_COMPACT) : NULL;
    json_decref(state);
    if (!text)
        exit(1);
    if ((mock_state_path(path, sizeof path, s->id, 1) < 0 || mock_write_file(path, text) < 0) && !warned++)
        fprintf(stderr, "cell-mock-agent: cannot save sessions (%s: %s); they live in this process only\n", s->id,
                strerror(errno));
    free(text);
    if (sigprocmask(SIG_SETMASK, &old, NULL) < 0)
        exit(1);
}

/* Read a saved session's file: its JSON, or NULL when missing, not a
 * regular file (a FIFO must not block the agent), too big or not JSON. */
static json_t *mock_state_read(const char *id)
{
    char path[4096];
    if (mock_state_path(path, sizeof path, id, 0) < 0)
        return NULL;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    json_t *state = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size <= MOCK_STATE_MAX) {
        char *buf = malloc(MOCK_STATE_MAX + 1);
        if (!buf)
            exit(1);
        size_t len = 0;
        ssize_t r;
        while (len <= MOCK_STATE_MAX && (r = read(fd, buf + len, MOCK_STATE_MAX + 1 - len)) != 0) {
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                break;
            len += (size_t)r;
        }
        if (len <= MOCK_STATE_MAX)
            state = json_loadb(buf, len, 0, NULL);
        free(buf);
    }
    close(fd);
    if (state && !json_is_object(state)) {
        json_decref(state);
        state = NULL;
    }
    return state;
}

/* A saved session back into memory; NULL with *why set when it cannot be.
 * The file is the cell's: every field is checked like any input. */
static mock_session *mock_restore(const char *id, const char **why)
{
    json_t *state = mock_state_read(id);
    if (!state) {
        *why = "unknown session";
        return NULL;
    }
    const char *cur[OPT_COUNT];
    for (int i = 0; i < OPT_COUNT; i++)
        cur[i] = mock_option_value(i, json_string_value(json_object_get(state, mock_options[i].id)));
    json_t *history = json_object_get(state, "history");
    mock_session *s = NULL;
    if (!cur[OPT_MODEL] || !cur[OPT_MODE] || !cur[OPT_LEVEL] || !json_is_array(history))
        *why = "its saved state is invalid";
    else if (!(s = mock_session_add(id)))
        *why = "too many sessions in this agent process";
    else {
        size_t i;
        json_t *msg;
        json_array_foreach(history, i, msg) {
            const char *role = json_string_value(json_object_get(msg, "role"));
            const char *text = json_string_value(json_object_get(msg, "text"));
            if (role && text && (strcmp(role, "user") == 0 || strcmp(role, "agent") == 0))
                mock_history_add(s, role, text);
        }
        memcpy(s->current, cur, sizeof cur);
        s->always_allowed = json_is_true(json_object_get(state, "alwaysAllowed"));
    }
    json_decref(state);
    return s;
}

static json_t *mock_select(int opt, const char *current)
{
    json_t *options = json_array();
    for (const char *const *o = mock_options[opt].values; *o; o += 2)
        json_array_append_new(options, json_pack("{s:s, s:s}", "value", o[0], "name", o[1]));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "id", mock_options[opt].id, "name", mock_options[opt].name,
                     "category", mock_options[opt].id, "type", "select", "currentValue", current, "options",
                     options);
}

static json_t *mock_config_options(const mock_session *s)
{
    json_t *arr = json_array();
    for (int i = 0; i < OPT_COUNT; i++)
        json_array_append_new(arr, mock_select(i, s->current[i]));
    return arr;
}

static json_t *mock_modes(const mock_session *s)
{
    return json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "currentModeId", s->current[OPT_MODE], "availableModes",
                     "id", "normal", "name", "Normal", "id", "plan", "name", "Plan");
}

static json_t *mock_models(const mock_session *s)
{
    return json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "currentModelId", s->current[OPT_MODEL],
                     "availableModels", "modelId", "mock", "name", "Mock", "modelId", "mock-fast", "name",
                     "Mock Fast");
}

/* The session a request names, or NULL after answering it with an error. */
static mock_session *mock_session_param(json_t *id, json_t *params)
{
    const char *sid = json_string_value(json_object_get(params, "sessionId"));
    if (!sid) {
        mock_error(id, RPC_INVALID_PARAMS, "sessionId: a string is required");
        return NULL;
    }
    mock_session *s = mock_find(sid);
    if (!s)
        mock_error(id, ACP_RESOURCE_NOT_FOUND, "sessionId: unknown session %.*s (session/load it first)",
                   mock_clip(sid, 80), sid);
    return s;
}

/* ---- prompts ------------------------------------------------------------------------------ */

/* The text blocks of a prompt: all of them joined by newlines (what the
 * history keeps) and the last one alone (what the user asks now). */
static char *mock_prompt_text(json_t *params, const char **last)
{
    size_t len = 0;
    char *out = NULL;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        exit(1);
    size_t i;
    json_t *block;
    long last_off = 0;
    json_array_foreach(json_object_get(params, "prompt"), i, block) {
        const char *t = json_string_value(json_object_get(block, "text"));
        if (!t)
            continue;
        if (ftell(f) > 0)
            fputc('\n', f);
        last_off = ftell(f);
        fputs(t, f);
    }
    if (fclose(f) != 0)
        exit(1);
    *last = out + last_off;
    return out;
}

/* Ask the client for permission for `call` (an ACP ToolCallUpdate,
 * stolen; its toolCallId is set here when missing) and wait for its
 * answer; other requests arriving meanwhile are answered as errors (the
 * mock is single-turn).  Returns the chosen optionId, or the outcome
 * ("cancelled") when none was chosen (a new string). */
static char *mock_ask(mock_session *s, json_t *call)
{
    char id[32];
    snprintf(id, sizeof id, "perm-%u", ++mock_requests);
    if (!json_object_get(call, "toolCallId"))
        json_object_set_new(call, "toolCallId", json_string(id));
    mock_send(json_pack("{s:s, s:s, s:s, s:{s:s, s:o, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}, "
                        "{s:s, s:s, s:s}]}}",
                        "jsonrpc", "2.0", "id", id, "method", "session/request_permission", "params",
                        "sessionId", s->id, "toolCall", call, "options",
                        "optionId", "allow-once", "name", "Allow once", "kind", "allow_once",
                        "optionId", "allow-always", "name", "Always allow", "kind", "allow_always",
                        "optionId", "reject-once", "name", "Reject", "kind", "reject_once"));
    for (;;) {
        json_t *msg = mock_read();
        if (!msg)
            exit(0);
        const char *rid = json_string_value(json_object_get(msg, "id"));
        if (!json_object_get(msg, "method") && rid && strcmp(rid, id) == 0) {
            json_t *outcome = json_object_get(json_object_get(msg, "result"), "outcome");
            const char *o = json_string_value(json_object_get(outcome, "outcome"));
            const char *opt = json_string_value(json_object_get(outcome, "optionId"));
            char *answer = strdup(opt ? opt : o ? o : "error");
            if (!answer)
                exit(1);
            json_decref(msg);
            return answer;
        }
        json_t *mid = json_object_get(msg, "id");
        if (json_object_get(msg, "method") && mid)
            mock_error(mid, -32000, "busy: waiting for a permission answer");
        json_decref(msg);
    }
}

static char *mock_ask_permission(mock_session *s)
{
    char *opt = mock_ask(s, json_pack("{s:s, s:s}", "title", "mock wants to write a file", "kind", "edit"));
    if (strcmp(opt, "allow-always") == 0)
        s->always_allowed = 1;
    char *answer = NULL;
    if (asprintf(&answer, "permission: %s", opt) < 0)
        exit(1);
    free(opt);
    return answer;
}

static void mock_words(const char *session, const char *text)
{
    char *copy = strdup(text), *save = NULL;
    if (!copy)
        exit(1);
    int first = 1;
    for (char *w = strtok_r(copy, " \n", &save); w; w = strtok_r(NULL, " \n", &save)) {
        /* The whole word: a cut one could end inside a UTF-8 character,
         * which jansson refuses. */
        char *chunk = NULL;
        if (asprintf(&chunk, "%s%s", first ? "" : " ", w) < 0)
            exit(1);
        mock_chunk(session, chunk);
        free(chunk);
        first = 0;
    }
    free(copy);
}

/* The answer to the words of `ask`, streamed in chunks. */
static void mock_answer(mock_session *s, const char *ask)
{
    if (strstr(ask, "permission")) {
        char *answer = s->always_allowed ? strdup("permission: allow-always (remembered)") : mock_ask_permission(s);
        if (!answer)
            exit(1);
        mock_chunk(s->id, answer);
        free(answer);
    } else if (strstr(ask, "settings")) {
        char buf[256];
        snprintf(buf, sizeof buf, "mode=%s model=%s thought_level=%s", s->current[OPT_MODE], s->current[OPT_MODEL],
                 s->current[OPT_LEVEL]);
        mock_chunk(s->id, buf);
    } else if (strstr(ask, "recall")) {
        size_t i;
        json_t *msg;
        json_array_foreach(s->history, i, msg) {
            if (strcmp(json_string_value(json_object_get(msg, "role")), "user") == 0)
                mock_chunk(s->id, json_string_value(json_object_get(msg, "text")));
        }
    } else if (strstr(ask, "env")) {
        for (char **e = environ; *e; e++) {
            char name[256];
            size_t n = strcspn(*e, "=");
            snprintf(name, sizeof name, "%.*s", mock_clip(*e, n < 255 ? n : 255), *e);
            mock_chunk(s->id, name);
        }
    } else if (strstr(ask, "pwd")) {
        char cwd[4096];
        mock_chunk(s->id, getcwd(cwd, sizeof cwd) ? cwd : "?");
    } else {
        mock_chunk(s->id, "mock:");
        mock_words(s->id, ask);
    }
}

/* ---- script words (runs): one per line of the prompt's last block ------------------------ */

static const char *const mock_script_words[] = { "say", "think", "write", "delete", "run", "usage", "crash", "sleep",
                                                 "instructions", "json", NULL };

/* Whether `ask` is a script: its first word is one of the script words. */
static int mock_is_script(const char *ask)
{
    size_t n = strcspn(ask, " \n");
    for (const char *const *w = mock_script_words; *w; w++)
        if (strlen(*w) == n && strncmp(ask, *w, n) == 0)
            return 1;
    return 0;
}

/* What one turn of a script collected: usage for the prompt's result. */
typedef struct {
    long in, out;
    int have_usage;
    const char *stop;
} mock_turn;

static unsigned mock_tools;

static void mock_tool_update(const char *session, const char *call, const char *status, json_t *extra)
{
    json_t *u = json_pack("{s:s, s:s, s:s}", "sessionUpdate", "tool_call_update", "toolCallId", call, "status",
                          status);
    if (extra)
        json_object_update(u, extra);
    json_decref(extra);
    mock_update(session, u);
}

static json_t *mock_text_content(const char *text)
{
    return json_pack("[{s:s, s:{s:s, s:o}}]", "type", "content", "content", "type", "text", "text",
                     mock_json_text(text));
}

/* `rel` against the working directory (what the agent reports). */
static void mock_abs(const char *rel, char *out, size_t size)
{
    char cwd[4096];
    if (rel[0] == '/' || !getcwd(cwd, sizeof cwd))
        snprintf(out, size, "%s", rel);
    else
        snprintf(out, size, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, rel);
}

/* A file's text (at most 1 MiB), or NULL if it cannot be read. */
static char *mock_slurp(const char *path, size_t max)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (buf = malloc(max + 1))) {
        size_t len = 0;
        ssize_t r;
        while (len < max && (r = read(fd, buf + len, max - len)) != 0) {
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                break;
            len += (size_t)r;
        }
        buf[len] = '\0';
    }
    close(fd);
    return buf;
}

/* "\n", "\t" and "\\" in a write's text. */
static char *mock_unescape(const char *t)
{
    char *out = malloc(strlen(t) + 1), *o = out;
    if (!out)
        exit(1);
    for (; *t; t++) {
        if (*t == '\\' && (t[1] == 'n' || t[1] == 't' || t[1] == '\\')) {
            t++;
            *o++ = *t == 'n' ? '\n' : *t == 't' ? '\t' : '\\';
        } else {
            *o++ = *t;
        }
    }
    *o = '\0';
    return out;
}

/* mkdir -p of `path`'s parent directories. */
static void mock_parents(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *c = buf + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return;
        *c = '/';
    }
}

/* write PATH TEXT: an edit tool call with the change as an ACP diff. */
static void mock_write(mock_session *s, const char *args)
{
    char rel[4096], abs[4200], call[32];
    size_t n = strcspn(args, " ");
    snprintf(rel, sizeof rel, "%.*s", (int)(n < sizeof rel - 1 ? n : sizeof rel - 1), args);
    char *text = mock_unescape(args[n] ? args + n + 1 : "");
    mock_abs(rel, abs, sizeof abs);
    snprintf(call, sizeof call, "tool-%u", ++mock_tools);
    mock_update(s->id, json_pack("{s:s, s:s, s:o, s:s, s:s, s:[{s:o}], s:{s:o, s:o}}", "sessionUpdate", "tool_call",
                                 "toolCallId", call, "title", mock_json_text(rel), "kind", "edit", "status", "pending",
                                 "locations", "path", mock_json_text(abs), "rawInput", "path", mock_json_text(rel),
                                 "content", mock_json_text(text)));
    char *old = mock_slurp(rel, 1u << 20);
    mock_parents(rel);
    int fd = open(rel, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    int saved = errno;
    if (fd >= 0 && close(fd) < 0)
        ok = 0;
    if (ok)
        mock_tool_update(s->id, call, "completed",
                         json_pack("{s:[{s:s, s:o, s:o, s:o}]}", "content", "type", "diff", "path", mock_json_text(abs),
                                   "oldText", old ? mock_json_text(old) : json_null(), "newText",
                                   mock_json_text(text)));
    else
        mock_tool_update(s->id, call, "failed", json_pack("{s:o}", "content", mock_text_content(strerror(saved))));
    free(old);
    free(text);
}

/* delete PATH: a delete tool call naming the file. */
static void mock_delete(mock_session *s, const char *rel)
{
    char abs[4200], call[32];
    mock_abs(rel, abs, sizeof abs);
    snprintf(call, sizeof call, "tool-%u", ++mock_tools);
    mock_update(s->id, json_pack("{s:s, s:s, s:o, s:s, s:s, s:[{s:o}]}", "sessionUpdate", "tool_call", "toolCallId",
                                 call, "title", mock_json_text(rel), "kind", "delete", "status", "pending",
                                 "locations", "path", mock_json_text(abs)));
    if (unlink(rel) == 0)
        mock_tool_update(s->id, call, "completed", json_pack("{s:[{s:o}]}", "locations", "path", mock_json_text(abs)));
    else
        mock_tool_update(s->id, call, "failed", json_pack("{s:o}", "content", mock_text_content(strerror(errno))));
}

/* The command's exit code (128+N for signal N) and its output (at most
 * 64 KiB kept; the rest read and dropped). */
static int mock_sh(const char *cmd, char **output)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        if (null < 0 || dup2(null, 0) < 0 || dup2(p[1], 1) < 0 || dup2(p[1], 2) < 0)
            _exit(127);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    size_t cap = 64u << 10, len = 0;
    char *buf = malloc(cap + 1), junk[4096];
    if (!buf)
        exit(1);
    for (;;) {
        ssize_t r = len < cap ? read(p[0], buf + len, cap - len) : read(p[0], junk, sizeof junk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (len < cap)
            len += (size_t)r;
    }
    close(p[0]);
    buf[len] = '\0';
    *output = buf;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* run CMD: an execute tool call, run with /bin/sh -c only once the client
 * allowed it; the exit code in rawOutput. */
static void mock_run(mock_session *s, const char *cmd)
{
    char call[32];
    snprintf(call, sizeof call, "tool-%u", ++mock_tools);
    mock_update(s->id, json_pack("{s:s, s:s, s:o, s:s, s:s, s:{s:o}}", "sessionUpdate", "tool_call", "toolCallId",
                                 call, "title", mock_json_text(cmd), "kind", "execute", "status", "pending", "rawInput",
                                 "command", mock_json_text(cmd)));
    char *opt = mock_ask(s, json_pack("{s:s, s:o, s:s, s:{s:o}}", "toolCallId", call, "title", mock_json_text(cmd),
                                      "kind", "execute", "rawInput", "command", mock_json_text(cmd)));
    int allowed = strncmp(opt, "allow", 5) == 0;
    free(opt);
    if (!allowed) {
        mock_tool_update(s->id, call, "failed", json_pack("{s:{s:s}, s:o}", "rawOutput", "error", "permission denied",
                                                          "content", mock_text_content("permission denied")));
        return;
    }
    mock_tool_update(s->id, call, "in_progress", NULL);
    char *output = NULL;
    int code = mock_sh(cmd, &output);
    if (code < 0)
        mock_tool_update(s->id, call, "failed", json_pack("{s:o}", "content", mock_text_content(strerror(errno))));
    else
        mock_tool_update(s->id, call, code == 0 ? "completed" : "failed",
                         json_pack("{s:{s:i, s:o}, s:o}", "rawOutput", "exitCode", code, "output",
                                   mock_json_text(output), "content", mock_text_content(output)));
    free(output);
}

/* sleep N: N seconds, or until the client's session/cancel: 1 then. */
static int mock_sleep(mock_session *s, const char *arg)
{
    long secs = strtol(arg, NULL, 10);
    struct timespec now, end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += secs < 0 ? 0 : secs > 86400 ? 86400 : secs;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = (end.tv_sec - now.tv_sec) * 1000 + (end.tv_nsec - now.tv_nsec) / 1000000;
        if (left <= 0)
            return 0;
        int timed_out = 0;
        json_t *msg = mock_read_within((int)(left > 1000000 ? 1000000 : left), &timed_out);
        if (!msg && !timed_out)
            exit(0);                    /* the client went away */
        if (!msg)
            continue;
        const char *method = json_string_value(json_object_get(msg, "method"));
        const char *sid = json_string_value(json_object_get(json_object_get(msg, "params"), "sessionId"));
        json_t *mid = json_object_get(msg, "id");
        int cancel = method && strcmp(method, "session/cancel") == 0 && sid && strcmp(sid, s->id) == 0;
        if (method && mid && !json_is_null(mid))
            mock_error(mid, -32000, "busy: answering a prompt");
        json_decref(msg);
        if (cancel)
            return 1;
    }
}

static int mock_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **mock_found;
static size_t mock_nfound;
static size_t mock_skills_len;

static int mock_walk(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (type == FTW_F && mock_nfound < 1024) {
        char **grown = realloc(mock_found, (mock_nfound + 1) * sizeof *grown);
        if (!grown || !(grown[mock_nfound] = strdup(path + mock_skills_len)))
            exit(1);
        mock_found = grown;
        mock_nfound++;
    }
    return 0;
}

/* instructions: what the run put in ~/.config/cell-mock-agent (runagent.c):
 * the instructions, then each skill's SKILL.md and other files, sorted. */
static void mock_instructions(mock_session *s)
{
    char dir[4096], path[4200];
    const char *home = getenv("HOME");
    snprintf(dir, sizeof dir, "%s/.config/cell-mock-agent", home ? home : "/root");
    snprintf(path, sizeof path, "%s/instructions.md", dir);
    char *text = mock_slurp(path, 64u << 10);
    char *line = NULL;
    if (asprintf(&line, "instructions: %s\n", text ? text : "(none)") < 0)
        exit(1);
    mock_chunk(s->id, line);
    free(line);
    free(text);
    snprintf(path, sizeof path, "%s/skills/", dir);
    mock_skills_len = strlen(path);
    mock_nfound = 0;
    if (nftw(path, mock_walk, 16, FTW_PHYS) < 0)
        return;
    qsort(mock_found, mock_nfound, sizeof *mock_found, mock_cmp);
    for (size_t i = 0; i < mock_nfound; i++) {
        char full[8400];
        snprintf(full, sizeof full, "%s%s", path, mock_found[i]);
        const char *base = strrchr(mock_found[i], '/');
        if (base && strcmp(base, "/SKILL.md") == 0 && strchr(mock_found[i], '/') == base) {
            char *md = mock_slurp(full, 64u << 10);
            if (asprintf(&line, "skill %.*s: %s\n", (int)(base - mock_found[i]), mock_found[i], md ? md : "") < 0)
                exit(1);
            free(md);
        } else if (asprintf(&line, "file %s\n", mock_found[i]) < 0) {
            exit(1);
        }
        mock_chunk(s->id, line);
        free(line);
        free(mock_found[i]);
    }
}

/* One script line; 1 when the turn ends here (cancelled). */
static int mock_script_line(mock_session *s, const char *line, mock_turn *t)
{
    size_t n = strcspn(line, " ");
    const char *rest = line[n] ? line + n + 1 : "";
    char word[16];
    snprintf(word, sizeof word, "%.*s", (int)(n < 15 ? n : 15), line);
    if (strcmp(word, "say") == 0) {
        mock_chunk(s->id, rest);
    } else if (strcmp(word, "think") == 0) {
        mock_text_update(s->id, "agent_thought_chunk", rest);
    } else if (strcmp(word, "write") == 0 && *rest) {
        mock_write(s, rest);
    } else if (strcmp(word, "delete") == 0 && *rest) {
        mock_delete(s, rest);
    } else if (strcmp(word, "run") == 0 && *rest) {
        mock_run(s, rest);
    } else if (strcmp(word, "usage") == 0) {
        long in = 100, out = 20;
        sscanf(rest, "%ld %ld", &in, &out);
        t->in += in;
        t->out += out;
        t->have_usage = 1;
        mock_update(s->id, json_pack("{s:s, s:I, s:I}", "sessionUpdate", "usage_update", "used",
                                     (json_int_t)(t->in + t->out), "size", (json_int_t)200000));
    } else if (strcmp(word, "crash") == 0) {
        exit(3);
    } else if (strcmp(word, "sleep") == 0) {
        if (mock_sleep(s, rest)) {
            t->stop = "cancelled";
            return 1;
        }
    } else if (strcmp(word, "instructions") == 0) {
        mock_instructions(s);
    } else if (strcmp(word, "json") == 0) {
        mock_chunk(s->id, *rest ? rest : "{\"ok\":true}");
    }
    return 0;                           /* anything else (the run's own notes) is ignored */
}

/* A script prompt: each line a word, in order (docs in the header). */
static void mock_script(json_t *id, mock_session *s, const char *text, const char *ask)
{
    mock_history_add(s, "user", text);
    char *reply = NULL, *copy = strdup(ask), *save = NULL;
    size_t reply_len = 0;
    if (!copy || !(mock_reply = open_memstream(&reply, &reply_len)))
        exit(1);
    mock_turn t = { .stop = "end_turn" };
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        if (mock_script_line(s, line, &t))
            break;
    free(copy);
    if (fclose(mock_reply) != 0)
        exit(1);
    mock_reply = NULL;
    mock_history_add(s, "agent", reply);
    free(reply);
    json_t *result = json_pack("{s:s}", "stopReason", t.stop);
    if (t.have_usage)
        json_object_set_new(result, "usage", json_pack("{s:I, s:I, s:I}", "inputTokens", (json_int_t)t.in,
                                                       "outputTokens", (json_int_t)t.out, "totalTokens",
                                                       (json_int_t)(t.in + t.out)));
    mock_result(id, result);
    mock_save(s);
}

static void mock_prompt(json_t *id, json_t *params)
{
    mock_session *s = mock_session_param(id, params);
    if (!s)
        return;
    if (!json_is_array(json_object_get(params, "prompt")))
        return mock_error(id, RPC_INVALID_PARAMS, "prompt: an array of content blocks is required");
    const char *ask;
    char *text = mock_prompt_text(params, &ask);
    if (mock_is_script(ask)) {
        mock_script(id, s, text, ask);
        free(text);
        return;
    }
    if (strstr(ask, "exit now"))
        exit(3);
    if (strstr(ask, "garbage")) {
        printf("this is not json\n");
        fflush(stdout);
    }
    if (strstr(ask, "stderr"))
        fprintf(stderr, "mock: a line on stderr\n");
    if (strstr(ask, "no answer")) {
        free(text);
        return;
    }
    mock_history_add(s, "user", text);
    char *reply = NULL;
    size_t reply_len = 0;
    mock_reply = open_memstream(&reply, &reply_len);
    if (!mock_reply)
        exit(1);
    mock_answer(s, ask);
    if (fclose(mock_reply) != 0)
        exit(1);
    mock_reply = NULL;
    mock_history_add(s, "agent", reply);
    free(reply);
    free(text);
    mock_result(id, json_pack("{s:s}", "stopReason", "end_turn"));
    mock_save(s);
}

/* ---- session lifecycle and settings --------------------------------------------------------- */

static void mock_new(json_t *id, json_t *params)
{
    unsigned char raw[MOCK_ID_HEX / 2];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return mock_error(id, -32603, "getrandom: %s", strerror(errno));
    char sid[sizeof MOCK_ID_PREFIX + MOCK_ID_HEX];
    int n = snprintf(sid, sizeof sid, "%s", MOCK_ID_PREFIX);
    for (size_t i = 0; i < sizeof raw; i++)
        n += snprintf(sid + n, sizeof sid - (size_t)n, "%02x", raw[i]);
    mock_session *s = mock_session_add(sid);
    if (!s)
        return mock_error(id, -32000, "too many sessions in this agent process (%d)", MOCK_MAX_SESSIONS);
    /* _meta tells tests which MCP servers the session got. */
    json_t *mcp = json_object_get(params, "mcpServers");
    mock_result(id, json_pack("{s:s, s:o, s:o, s:o, s:{s:O}}", "sessionId", sid, "modes", mock_modes(s), "models",
                              mock_models(s), "configOptions", mock_config_options(s), "_meta", "mcpServers",
                              mcp ? mcp : json_null()));
    mock_save(s);
}

/* session/load: the history replayed as user_message_chunk and
 * agent_message_chunk updates, in order, then the answer.  A session this
 * process does not hold is read from its saved file. */
static void mock_load(json_t *id, json_t *params)
{
    const char *sid = json_string_value(json_object_get(params, "sessionId"));
    if (!sid)
        return mock_error(id, RPC_INVALID_PARAMS, "sessionId: a string is required");
    /* The id becomes a file name: nothing but our own ids. */
    if (!mock_valid_id(sid))
        return mock_error(id, RPC_INVALID_PARAMS, "sessionId: not a session id of this agent");
    if (!json_is_string(json_object_get(params, "cwd")))
        return mock_error(id, RPC_INVALID_PARAMS, "cwd: a string is required");
    if (!json_is_array(json_object_get(params, "mcpServers")))
        return mock_error(id, RPC_INVALID_PARAMS, "mcpServers: an array is required");
    const char *why = NULL;
    mock_session *s = mock_find(sid);
    if (!s && !(s = mock_restore(sid, &why)))
        return mock_error(id, ACP_RESOURCE_NOT_FOUND, "sessionId: %s: %s", sid, why);
    size_t i;
    json_t *msg;
    json_array_foreach(s->history, i, msg) {
        int user = strcmp(json_string_value(json_object_get(msg, "role")), "user") == 0;
        mock_text_update(s->id, user ? "user_message_chunk" : "agent_message_chunk",
                         json_string_value(json_object_get(msg, "text")));
    }
    mock_result(id, json_pack("{s:o, s:o, s:o}", "modes", mock_modes(s), "models", mock_models(s), "configOptions",
                              mock_config_options(s)));
}

/* Set option `opt` of the request's session to the string param `key`;
 * tells the client (current_mode_update for the mode, config_option_update
 * always) and answers: set_config_option (key "value") with the config
 * options as ACP specifies, set_mode and set_model with {}. */
static void mock_set(json_t *id, json_t *params, int opt, const char *key)
{
    mock_session *s = mock_session_param(id, params);
    if (!s)
        return;
    json_t *v = json_object_get(params, key);
    if (!json_is_string(v))
        return mock_error(id, RPC_INVALID_PARAMS, "%s: a string is required", key);
    const char *value = mock_option_value(opt, json_string_value(v));
    if (!value)
        return mock_error(id, RPC_INVALID_PARAMS, "%s: unknown %s %.*s", key, mock_options[opt].id,
                          mock_clip(json_string_value(v), 80), json_string_value(v));
    s->current[opt] = value;
    if (opt == OPT_MODE)
        mock_update(s->id, json_pack("{s:s, s:s}", "sessionUpdate", "current_mode_update", "currentModeId", value));
    mock_update(s->id, json_pack("{s:s, s:o}", "sessionUpdate", "config_option_update", "configOptions",
                                 mock_config_options(s)));
    if (strcmp(key, "value") == 0)
        mock_result(id, json_pack("{s:o}", "configOptions", mock_config_options(s)));
    else
        mock_result(id, json_object());
    mock_save(s);
}

static void mock_set_config_option(json_t *id, json_t *params)
{
    json_t *cfg = json_object_get(params, "configId");
    if (!json_is_string(cfg))
        return mock_error(id, RPC_INVALID_PARAMS, "configId: a string is required");
    for (int i = 0; i < OPT_COUNT; i++)
        if (strcmp(json_string_value(cfg), mock_options[i].id) == 0)
            return mock_set(id, params, i, "value");
    mock_error(id, RPC_INVALID_PARAMS, "configId: unknown config option %.*s", mock_clip(json_string_value(cfg), 80),
               json_string_value(cfg));
}

static void mock_request(const char *method, json_t *id, json_t *params)
{
    if (params && !json_is_object(params) && strcmp(method, "initialize") != 0)
        return mock_error(id, RPC_INVALID_PARAMS, "params: an object is required");
    if (strcmp(method, "initialize") == 0) {
        mock_result(id, json_pack("{s:i, s:{s:b, s:{s:b, s:b, s:b}}, s:[], s:{s:s, s:s}}", "protocolVersion", 1,
                                  "agentCapabilities", "loadSession", 1, "promptCapabilities", "image", 0,
                                  "audio", 0, "embeddedContext", 0, "authMethods", "agentInfo", "name",
                                  "cell-mock-agent", "version", "1"));
    } else if (strcmp(method, "session/new") == 0) {
        mock_new(id, params);
    } else if (strcmp(method, "session/load") == 0) {
        mock_load(id, params);
    } else if (strcmp(method, "session/prompt") == 0) {
        mock_prompt(id, params);
    } else if (strcmp(method, "session/set_mode") == 0) {
        mock_set(id, params, OPT_MODE, "modeId");
    } else if (strcmp(method, "session/set_model") == 0) {
        mock_set(id, params, OPT_MODEL, "modelId");
    } else if (strcmp(method, "session/set_config_option") == 0) {
        mock_set_config_option(id, params);
    } else {
        mock_error(id, RPC_NOT_FOUND, "Method not found");
    }
}

int main(void)
{
    json_t *msg;
    while ((msg = mock_read())) {
        const char *method = json_string_value(json_object_get(msg, "method"));
        json_t *id = json_object_get(msg, "id");
        json_t *params = json_object_get(msg, "params");
        /* Notifications (session/cancel) and stray responses need no answer. */
        if (method && id && !json_is_null(id))
            mock_request(method, id, params);
        json_decref(msg);
    }
    return 0;
}
