/* agents.c: /cells/{cell}/v1/agents, sandbox-agent 0.4.2's agent list and
 * installs, per cell.  Only the `mock` agent (cell-mock-agent, embedded in
 * the daemon) can be installed so far: installing the real agents' CLIs
 * from npm is a later part, so their install answers a problem saying so
 * instead of pretending (docs/compat/sandbox-agent-0.4.2-agents.md).
 *
 * The mock is written into the cell through libcell's file calls (a
 * transfer process inside the cell), never by the daemon opening a path of
 * the cell: a binary and a launcher script at the path install reports,
 * which the ACP proxy executes on each spawn, so a client may replace it
 * through the fs API. */
#include "server/agents.h"
#include "server/handlers.h"

#include <fcntl.h>
#include <string.h>

extern const char cell_mock_agent_start[], cell_mock_agent_end[];

/* The reference's layout under $HOME (/root in a cell). */
#define AGENTS_BIN_DIR    "/root/.local/share/sandbox-agent/bin"
#define AGENTS_PROC_DIR   AGENTS_BIN_DIR "/agent_processes"
#define AGENTS_MOCK_BIN   AGENTS_BIN_DIR "/cell-mock-agent"
#define AGENTS_MOCK_LAUNCHER AGENTS_PROC_DIR "/mock-acp"

typedef struct agent_def {
    const char *id;
    int credentials;            /* the reference's credentialsAvailable without keys */
    /* capabilities, in the reference's order */
    int plan, perms, questions, tool_calls, tool_results, text, images, files, lifecycle, errors, reasoning,
        status, commands, file_changes, mcp, deltas, item_started;
} agent_def;

/* The reference's answer for each agent on a host without credentials. */
static const agent_def agents[] = {
    { "claude",   0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
    { "codex",    0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 },
    { "opencode", 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1 },
    { "amp",      0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0 },
    { "pi",       1, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1 },
    { "cursor",   1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1 },
    { "mock",     1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 },
};

static const agent_def *agent_find(const char *id)
{
    for (size_t i = 0; i < sizeof agents / sizeof agents[0]; i++)
        if (strcmp(agents[i].id, id) == 0)
            return &agents[i];
    return NULL;
}

int agents_known(const char *id) { return agent_find(id) != NULL; }

const char *agents_launcher(const char *id)
{
    return strcmp(id, "mock") == 0 ? AGENTS_MOCK_LAUNCHER : NULL;
}

static json_t *caps_json(const agent_def *a)
{
    return json_pack("{s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b}",
                     "planMode", a->plan, "permissions", a->perms, "questions", a->questions, "toolCalls",
                     a->tool_calls, "toolResults", a->tool_results, "textMessages", a->text, "images", a->images,
                     "fileAttachments", a->files, "sessionLifecycle", a->lifecycle, "errorEvents", a->errors,
                     "reasoning", a->reasoning, "status", a->status, "commandExecution", a->commands,
                     "fileChanges", a->file_changes, "mcpTools", a->mcp, "streamingDeltas", a->deltas,
                     "itemStarted", a->item_started, "sharedProcess", 0);
}

static json_t *select_option(const char *id, const char *name, const char *current, const char *const *opts)
{
    json_t *options = json_array();
    for (const char *const *o = opts; *o; o += 2)
        json_array_append_new(options, json_pack("{s:s, s:s}", "name", o[1], "value", o[0]));
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s}", "category", id, "currentValue", current, "id", id, "name",
                     name, "options", options, "type", "select");
}

/* configOptions: the mock's own; the real agents' model lists change with
 * their releases, so cell reports none for them until it installs them. */
static json_t *config_json(const agent_def *a)
{
    json_t *arr = json_array();
    if (strcmp(a->id, "mock") == 0) {
        static const char *const models[] = { "mock", "Mock", "mock-fast", "Mock Fast", NULL };
        static const char *const modes[] = { "normal", "Normal", "plan", "Plan", NULL };
        static const char *const levels[] = { "low", "Low", "medium", "Medium", "high", "High", NULL };
        json_array_append_new(arr, select_option("model", "Model", "mock", models));
        json_array_append_new(arr, select_option("mode", "Mode", "normal", modes));
        json_array_append_new(arr, select_option("thought_level", "Thought Level", "low", levels));
    }
    return arr;
}

/* Is the agent's launcher in the cell?  A stopped cell answers no. */
static int agent_installed(scell *sc, const agent_def *a)
{
    const char *path = agents_launcher(a->id);
    if (!path)
        return 0;
    cell_stat st;
    scell_io_lock(sc);
    int ok = sc->c && !sc->dead && cell_file_stat(sc->c, path, &st, NULL) == 0;
    scell_io_unlock(sc);
    return ok;
}

static json_t *agent_json(scell *sc, const agent_def *a, int with_config)
{
    json_t *o = json_pack("{s:s, s:b, s:b}", "id", a->id, "installed", agent_installed(sc, a),
                          "credentialsAvailable", a->credentials);
    if (with_config && strcmp(a->id, "mock") == 0) {
        json_object_set_new(o, "version", json_string("builtin"));
        json_object_set_new(o, "path", json_string(AGENTS_MOCK_BIN));
    }
    json_object_set_new(o, "capabilities", caps_json(a));
    if (with_config)
        json_object_set_new(o, "configOptions", config_json(a));
    return o;
}

static int query_flag(sreq *r, const char *key, int *out)
{
    const char *v = req_query(r, key);
    *out = 0;
    if (!v)
        return 0;
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
        return *out = 1, 0;
    if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
        return 0;
    return reply_problem(r, 400, "invalid_request", "invalid query: %s must be true or false", key), -1;
}

int reply_unsupported_agent(sreq *r, const char *id)
{
    return reply_problem_details(r, 400, "unsupported_agent", json_pack("{s:s}", "agent", id),
                                 "%s", id);
}

int h_agents_list(sreq *r)
{
    int config, no_cache;
    if (query_flag(r, "config", &config) < 0 || query_flag(r, "no_cache", &no_cache) < 0)
        return REPLIED(r);
    json_t *arr = json_array();
    for (size_t i = 0; i < sizeof agents / sizeof agents[0]; i++)
        json_array_append_new(arr, agent_json(r->cell, &agents[i], config));
    return reply_json(r, 200, json_pack("{s:o}", "agents", arr));
}

int h_agents_get(sreq *r)
{
    const char *id = router_param(&r->m, "agent");
    int config, no_cache;
    if (query_flag(r, "config", &config) < 0 || query_flag(r, "no_cache", &no_cache) < 0)
        return REPLIED(r);
    const agent_def *a = agent_find(id);
    if (!a)
        return reply_unsupported_agent(r, id);
    return reply_json(r, 200, agent_json(r->cell, a, config));
}

/* Write beside the file and rename over it: a running agent's binary
 * cannot be opened for writing (ETXTBSY), and a spawn must never see half
 * a file. */
static int write_file(cell *c, const char *path, mode_t mode, const void *data, size_t len, cell_error *err)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    cell_xfer x = { .fd = -1, .status_fd = -1 };
    if (cell_file_write(c, tmp, O_WRONLY | O_CREAT | O_TRUNC, mode, &x, err) < 0)
        return -1;
    if (cell_xfer_write(&x, data, len, err) < 0) {
        cell_xfer_end(&x, NULL);
        return -1;
    }
    if (cell_xfer_end(&x, err) < 0)
        return -1;
    return cell_file_move(c, tmp, path, 1, err);
}

/* The launcher execs the binary; a client may replace it with its own. */
static const char mock_launcher[] = "#!/bin/sh\nexec " AGENTS_MOCK_BIN " \"$@\"\n";

int agents_install_mock(scell *sc, int force, int *already, cell_error *err)
{
    cell_stat st;
    *already = 0;
    scell_io_lock(sc);
    int rc = -1;
    if (!sc->c || sc->dead) {
        util_fail(err, ECONNRESET, "cell %s is stopped", sc->id);
    } else if (!force && cell_file_stat(sc->c, AGENTS_MOCK_LAUNCHER, &st, NULL) == 0) {
        *already = 1;
        rc = 0;
    } else if (cell_file_mkdir(sc->c, AGENTS_PROC_DIR, 0755, 1, err) == 0 &&
               write_file(sc->c, AGENTS_MOCK_BIN, 0755, cell_mock_agent_start,
                          (size_t)(cell_mock_agent_end - cell_mock_agent_start), err) == 0 &&
               write_file(sc->c, AGENTS_MOCK_LAUNCHER, 0755, mock_launcher, sizeof mock_launcher - 1, err) == 0) {
        rc = 0;
    }
    scell_io_unlock(sc);
    return rc;
}

int reply_not_installable(sreq *r, const char *id)
{
    return reply_problem_details(r, 501, "install_failed", json_pack("{s:s}", "agent", id),
                                 "%s: cell cannot install this agent yet (only the builtin "
                                 "mock agent; installing agent CLIs from npm comes in a later release)", id);
}

int h_agents_install(sreq *r)
{
    const char *id = router_param(&r->m, "agent");
    json_t *body = NULL;
    int reinstall = 0;
    if (r->body_len && req_json(r, &body) < 0)
        return REPLIED(r);
    if (body && json_get_bool(r, body, "reinstall", &reinstall) < 0) {
        json_decref(body);
        return REPLIED(r);
    }
    json_decref(body);
    const agent_def *a = agent_find(id);
    if (!a)
        return reply_unsupported_agent(r, id);
    if (strcmp(id, "mock") != 0)
        return reply_not_installable(r, id);
    cell_error e = { 0 };
    int already;
    if (agents_install_mock(r->cell, reinstall, &already, &e) < 0)
        return reply_error(r, &e);
    return reply_json(r, 200, json_pack("{s:b, s:[{s:s, s:s, s:s, s:s}]}", "already_installed", already,
                                        "artifacts", "kind", "agent_process", "path", AGENTS_MOCK_LAUNCHER,
                                        "source", "builtin", "version", "builtin"));
}
