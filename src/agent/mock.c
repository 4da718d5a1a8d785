/* mock.c: cell-mock-agent, the `mock` agent shipped with cell.  It speaks
 * the Agent Client Protocol over stdin/stdout (newline-delimited JSON-RPC
 * 2.0) well enough for the sandbox-agent SDK: initialize, session/new,
 * session/prompt streaming agent_message_chunk updates, a permission
 * request on demand, set_mode/set_model/set_config_option.  It runs inside
 * a cell as an ordinary process; linked statically (like cell-init) so any
 * image can run it.
 *
 * What a prompt's text asks for (tests drive it with these words):
 *   "permission"  ask session/request_permission first, report the outcome
 *   "env"         reply with the names of the environment's variables
 *   "pwd"         reply with the working directory
 *   "stderr"      write a line to stderr, then answer as usual
 *   "garbage"     print a line that is not JSON first
 *   "exit now"    exit with status 3 without answering
 *   "no answer"   never answer this prompt
 * Anything else is echoed back as "mock: <text>" in one chunk per word. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A longer line is dropped whole: the mock needs no big messages. */
#define MOCK_MAX_LINE (4u << 20)

extern char **environ;

static unsigned mock_sessions;
static unsigned mock_requests;
static char mock_mode[32] = "normal";
static char mock_model[32] = "mock";

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

static void mock_error(json_t *id, int code, const char *message)
{
    mock_send(json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error", "code", code,
                        "message", message));
}

static void mock_chunk(const char *session, const char *text)
{
    mock_send(json_pack("{s:s, s:s, s:{s:s, s:{s:s, s:{s:s, s:s}}}}", "jsonrpc", "2.0", "method",
                        "session/update", "params", "sessionId", session, "update", "sessionUpdate",
                        "agent_message_chunk", "content", "type", "text", "text", text));
}

/* The next message from stdin, NULL at EOF.  Lines that are not JSON
 * objects are skipped (the proxy only sends objects). */
static json_t *mock_read(void)
{
    static char *line;
    static size_t cap;
    for (;;) {
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0)
            return NULL;
        if ((size_t)n > MOCK_MAX_LINE)
            continue;
        json_t *msg = json_loadb(line, (size_t)n, 0, NULL);
        if (json_is_object(msg))
            return msg;
        json_decref(msg);
    }
}

/* The text blocks of a prompt, joined. */
static char *mock_prompt_text(json_t *params)
{
    size_t len = 0;
    char *out = NULL;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        exit(1);
    size_t i;
    json_t *block;
    json_array_foreach(json_object_get(params, "prompt"), i, block) {
        const char *t = json_string_value(json_object_get(block, "text"));
        if (t)
            fputs(t, f);
    }
    if (fclose(f) != 0)
        exit(1);
    return out;
}

/* Ask the client for permission and wait for its answer; other messages
 * arriving meanwhile are answered as errors (the mock is single-turn). */
static char *mock_ask_permission(const char *session)
{
    char id[32];
    snprintf(id, sizeof id, "perm-%u", ++mock_requests);
    mock_send(json_pack("{s:s, s:s, s:s, s:{s:s, s:{s:s, s:s, s:s}, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}, "
                        "{s:s, s:s, s:s}]}}",
                        "jsonrpc", "2.0", "id", id, "method", "session/request_permission", "params",
                        "sessionId", session, "toolCall", "toolCallId", id, "title", "mock wants to write a file",
                        "kind", "edit", "options",
                        "optionId", "allow-once", "name", "Allow once", "kind", "allow_once",
                        "optionId", "allow-always", "name", "Always allow", "kind", "allow_always",
                        "optionId", "reject-once", "name", "Reject", "kind", "reject_once"));
    for (;;) {
        json_t *msg = mock_read();
        if (!msg)
            exit(0);
        const char *rid = json_string_value(json_object_get(msg, "id"));
        if (!json_object_get(msg, "method") && rid && strcmp(rid, id) == 0) {
            json_t *outcome = json_object_get(json_object_get(json_object_get(msg, "result"), "outcome"), "outcome");
            const char *o = json_string_value(outcome);
            const char *opt = json_string_value(json_object_get(json_object_get(json_object_get(msg, "result"),
                                                                                "outcome"), "optionId"));
            char *answer = NULL;
            if (asprintf(&answer, "permission: %s", opt ? opt : o ? o : "error") < 0)
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

static void mock_words(const char *session, const char *text)
{
    char *copy = strdup(text), *save = NULL;
    if (!copy)
        exit(1);
    int first = 1;
    for (char *w = strtok_r(copy, " \n", &save); w; w = strtok_r(NULL, " \n", &save)) {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s%s", first ? "" : " ", w);
        mock_chunk(session, buf);
        first = 0;
    }
    free(copy);
}

static void mock_prompt(json_t *id, json_t *params)
{
    const char *session = json_string_value(json_object_get(params, "sessionId"));
    if (!session)
        return mock_error(id, -32602, "sessionId is required");
    char *text = mock_prompt_text(params);
    if (strstr(text, "exit now"))
        exit(3);
    if (strstr(text, "garbage")) {
        printf("this is not json\n");
        fflush(stdout);
    }
    if (strstr(text, "stderr"))
        fprintf(stderr, "mock: a line on stderr\n");
    if (strstr(text, "no answer")) {
        free(text);
        return;
    }
    if (strstr(text, "permission")) {
        char *answer = mock_ask_permission(session);
        mock_chunk(session, answer);
        free(answer);
    } else if (strstr(text, "env")) {
        for (char **e = environ; *e; e++) {
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)strcspn(*e, "="), *e);
            mock_chunk(session, name);
        }
    } else if (strstr(text, "pwd")) {
        char cwd[4096];
        mock_chunk(session, getcwd(cwd, sizeof cwd) ? cwd : "?");
    } else {
        mock_chunk(session, "mock:");
        mock_words(session, text);
    }
    free(text);
    mock_result(id, json_pack("{s:s}", "stopReason", "end_turn"));
}

static json_t *mock_modes(void)
{
    return json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "currentModeId", mock_mode, "availableModes",
                     "id", "normal", "name", "Normal", "id", "plan", "name", "Plan");
}

static json_t *mock_models(void)
{
    return json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "currentModelId", mock_model, "availableModels",
                     "modelId", "mock", "name", "Mock", "modelId", "mock-fast", "name", "Mock Fast");
}

static void mock_set(char *dst, size_t size, json_t *params, const char *key)
{
    const char *v = json_string_value(json_object_get(params, key));
    if (v)
        snprintf(dst, size, "%s", v);
}

static void mock_request(const char *method, json_t *id, json_t *params)
{
    if (strcmp(method, "initialize") == 0) {
        mock_result(id, json_pack("{s:i, s:{s:b, s:{s:b, s:b, s:b}}, s:[], s:{s:s, s:s}}", "protocolVersion", 1,
                                  "agentCapabilities", "loadSession", 0, "promptCapabilities", "image", 0,
                                  "audio", 0, "embeddedContext", 0, "authMethods", "agentInfo", "name",
                                  "cell-mock-agent", "version", "1"));
    } else if (strcmp(method, "session/new") == 0) {
        char sid[32];
        snprintf(sid, sizeof sid, "mock-session-%u", ++mock_sessions);
        /* _meta tells tests which MCP servers the session got. */
        json_t *mcp = json_object_get(params, "mcpServers");
        mock_result(id, json_pack("{s:s, s:o, s:o, s:{s:O}}", "sessionId", sid, "modes", mock_modes(), "models",
                                  mock_models(), "_meta", "mcpServers", mcp ? mcp : json_null()));
    } else if (strcmp(method, "session/prompt") == 0) {
        mock_prompt(id, params);
    } else if (strcmp(method, "session/set_mode") == 0) {
        mock_set(mock_mode, sizeof mock_mode, params, "modeId");
        const char *session = json_string_value(json_object_get(params, "sessionId"));
        if (session)
            mock_send(json_pack("{s:s, s:s, s:{s:s, s:{s:s, s:s}}}", "jsonrpc", "2.0", "method", "session/update",
                                "params", "sessionId", session, "update", "sessionUpdate", "current_mode_update",
                                "currentModeId", mock_mode));
        mock_result(id, json_object());
    } else if (strcmp(method, "session/set_model") == 0) {
        mock_set(mock_model, sizeof mock_model, params, "modelId");
        mock_result(id, json_object());
    } else {
        mock_error(id, -32601, "Method not found");
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
