/* agents.c: /cells/{cell}/v1/agents, sandbox-agent 0.4.2's agent list and
 * installs, per cell.  The `mock` agent (cell-mock-agent, embedded in the
 * daemon) is written into the cell; the real agents come from npm through
 * the host-wide cache (agentinstall.c), each with the pinned packages and
 * launcher command of agents_packages[] below.
 *
 * Everything is written into the cell through libcell's file calls (a
 * transfer process inside the cell), never by the daemon opening a path of
 * the cell: a launcher script at the path install reports, which the ACP
 * proxy executes on each spawn, so a client may replace it through the fs
 * API. */
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

int srv_agents_known(const char *id) { return agent_find(id) != NULL; }

/* Pinned on the npm registry (npm view PKG versions, 2026-12); what the
 * launcher execs is relative to the cache dir, whose node_modules/.bin is
 * put first in PATH.  docs/compat/sandbox-agent-0.4.2-agents.md lists them. */
static const agents_package agents_packages[] = {
    /* claude-agent-acp bundles Claude Code through @anthropic-ai/claude-agent-sdk; needs node */
    { "claude", { "@zed-industries/claude-agent-acp@0.23.1", NULL }, AGENTS_PROC_DIR "/claude-acp",
      "node_modules/@zed-industries/claude-agent-acp/dist/index.js", "", NULL, NULL },
    /* the adapter's bin is a node wrapper around this native binary: exec it directly.
     * Codex's own sandbox (bubblewrap) cannot run in a cell, which is the
     * sandbox: commands run directly, and "untrusted" still asks the client
     * before any but known-safe read-only ones (docs/security.md). */
    { "codex", { "@zed-industries/codex-acp@0.16.0", NULL }, AGENTS_PROC_DIR "/codex-acp",
      "node_modules/@zed-industries/codex-acp-linux-x64/bin/codex-acp",
      "-c 'sandbox_mode=\"danger-full-access\"' -c 'approval_policy=\"untrusted\"' ", NULL,
      /* codex-acp ignores OPENAI_BASE_URL (what the agents switch sets): make
       * it a model provider.  It goes into a TOML string, so a value with a
       * quote, a backslash or anything but printable ASCII is refused. */
      "if [ -n \"${OPENAI_BASE_URL-}\" ]; then\n"
      "  case $OPENAI_BASE_URL in *[!\\ -~]*|*\\\"*|*\\\\*)\n"
      "    echo 'cell: OPENAI_BASE_URL may hold only printable ASCII, no quote or backslash' >&2; exit 2;;\n"
      "  esac\n"
      "  set -- -c 'model_provider=\"cell\"' -c \"model_providers.cell={name=\\\"cell\\\",base_url=\\\"$OPENAI_BASE_URL\\\","
      "env_key=\\\"OPENAI_API_KEY\\\",wire_api=\\\"responses\\\"}\" \"$@\"\n"
      "fi\n" },
    /* opencode speaks ACP itself: `opencode acp` */
    { "opencode", { "opencode-ai@1.18.33", NULL }, AGENTS_PROC_DIR "/opencode-acp",
      "node_modules/opencode-linux-x64/bin/opencode", "acp ", NULL, NULL },
    { "amp", { NULL }, NULL, NULL, NULL,
      "no ACP adapter for Amp is published on the npm registry (sandbox-agent's amp-acp is not there)", NULL },
    /* pi-acp runs the `pi` CLI from PATH */
    { "pi", { "pi-acp@0.0.34", "@mariozechner/pi-coding-agent@0.73.1", NULL }, AGENTS_PROC_DIR "/pi-acp",
      "node_modules/pi-acp/dist/index.js", "", NULL, NULL },
    { "cursor", { NULL }, NULL, NULL, NULL,
      "the ACP adapter (@blowmage/cursor-agent-acp) drives Cursor's cursor-agent CLI, which Cursor does not "
      "publish on the npm registry", NULL },
};

const agents_package *srv_agents_package_find(const char *id)
{
    for (size_t i = 0; i < sizeof agents_packages / sizeof agents_packages[0]; i++)
        if (strcmp(agents_packages[i].id, id) == 0)
            return &agents_packages[i];
    return NULL;
}

const char *srv_agents_launcher(const char *id)
{
    if (strcmp(id, "mock") == 0)
        return AGENTS_MOCK_LAUNCHER;
    const agents_package *p = srv_agents_package_find(id);
    return p ? p->launcher : NULL;
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
    const char *path = srv_agents_launcher(a->id);
    if (!path)
        return 0;
    cell_stat st;
    srv_scell_io_lock(sc);
    int ok = sc->c && !sc->dead && cell_file_stat(sc->c, path, &st, NULL) == 0;
    srv_scell_io_unlock(sc);
    return ok;
}

static json_t *agent_json(scell *sc, const agent_def *a, int with_config)
{
    json_t *o = json_pack("{s:s, s:b, s:b}", "id", a->id, "installed", agent_installed(sc, a),
                          "credentialsAvailable", a->credentials);
    const agents_package *p = srv_agents_package_find(a->id);
    if (with_config && strcmp(a->id, "mock") == 0) {
        json_object_set_new(o, "version", json_string("builtin"));
        json_object_set_new(o, "path", json_string(AGENTS_MOCK_BIN));
    } else if (with_config && p && !p->unavailable) {
        agents_install_result d = { 0 };
        srv_agents_describe(p, &d);
        json_object_set_new(o, "version", json_string(d.version));
        json_object_set_new(o, "path", json_string(d.path));
    }
    json_object_set_new(o, "capabilities", caps_json(a));
    if (with_config)
        json_object_set_new(o, "configOptions", config_json(a));
    return o;
}

static int query_flag(sreq *r, const char *key, int *out)
{
    const char *v = srv_req_query(r, key);
    *out = 0;
    if (!v)
        return 0;
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
        return *out = 1, 0;
    if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
        return 0;
    return srv_reply_problem(r, 400, "invalid_request", "invalid query: %s must be true or false", key), -1;
}

int srv_reply_unsupported_agent(sreq *r, const char *id)
{
    return srv_reply_problem_details(r, 400, "unsupported_agent", json_pack("{s:s}", "agent", id),
                                 "%s", id);
}

int srv_h_agents_list(sreq *r)
{
    int config, no_cache;
    if (query_flag(r, "config", &config) < 0 || query_flag(r, "no_cache", &no_cache) < 0)
        return REPLIED(r);
    json_t *arr = json_array();
    for (size_t i = 0; i < sizeof agents / sizeof agents[0]; i++)
        json_array_append_new(arr, agent_json(r->cell, &agents[i], config));
    return srv_reply_json(r, 200, json_pack("{s:o}", "agents", arr));
}

int srv_h_agents_get(sreq *r)
{
    const char *id = srv_router_param(&r->m, "agent");
    int config, no_cache;
    if (query_flag(r, "config", &config) < 0 || query_flag(r, "no_cache", &no_cache) < 0)
        return REPLIED(r);
    const agent_def *a = agent_find(id);
    if (!a)
        return srv_reply_unsupported_agent(r, id);
    return srv_reply_json(r, 200, agent_json(r->cell, a, config));
}

/* Write beside the file and rename over it: a running agent's binary
 * cannot be opened for writing (ETXTBSY), and a spawn must never see half
 * a file. */
int srv_agents_cell_write(cell *c, const char *path, mode_t mode, const void *data, size_t len, cell_error *err)
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

int srv_agents_install_mock(scell *sc, int force, int *already, cell_error *err)
{
    cell_stat st;
    *already = 0;
    srv_scell_io_lock(sc);
    int rc = -1;
    if (!sc->c || sc->dead) {
        util_fail(err, ECONNRESET, "cell %s is stopped", sc->id);
    } else if (!force && cell_file_stat(sc->c, AGENTS_MOCK_LAUNCHER, &st, NULL) == 0) {
        *already = 1;
        rc = 0;
    } else if (cell_file_mkdir(sc->c, AGENTS_PROC_DIR, 0755, 1, err) == 0 &&
               srv_agents_cell_write(sc->c, AGENTS_MOCK_BIN, 0755, cell_mock_agent_start,
                          (size_t)(cell_mock_agent_end - cell_mock_agent_start), err) == 0 &&
               srv_agents_cell_write(sc->c, AGENTS_MOCK_LAUNCHER, 0755, mock_launcher, sizeof mock_launcher - 1, err) == 0) {
        rc = 0;
    }
    srv_scell_io_unlock(sc);
    return rc;
}

/* The JSON a successful install answers (plain and as SSE's result event). */
static json_t *install_json(const agents_install_result *res, const char *agent)
{
    return json_pack("{s:b, s:[{s:s, s:s, s:s, s:s}]}", "already_installed", res->already, "artifacts", "kind",
                     "agent_process", "path", srv_agents_launcher(agent), "source", res->source, "version",
                     res->version);
}

/* ---- SSE installs: a thread installs, the stream sends its lines ---------- */
#define INSTALL_STREAM_MAX (1u << 20)  /* progress kept for a slow reader; the result always goes */

typedef struct install_stream {
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    char   *buf;
    size_t  len, off, cap;
    int     done, refs;
    unsigned flags;
    srv    *s;
    scell  *sc;                     /* a reference, the thread's */
    char    agent[32], token_id[64];
} install_stream;

static void stream_put(install_stream *st, const char *event, const char *data, int always)
{
    pthread_mutex_lock(&st->lock);
    size_t need = strlen(event) + strlen(data) + 32;
    if (st->len + need > st->cap && (always || st->len + need <= INSTALL_STREAM_MAX)) {
        size_t cap = (st->len + need) * 2;
        char *b = realloc(st->buf, cap);
        if (b)
            st->buf = b, st->cap = cap;
    }
    if (st->len + need <= st->cap)
        st->len += (size_t)snprintf(st->buf + st->len, st->cap - st->len, "event: %s\ndata: %s\n\n", event, data);
    pthread_cond_broadcast(&st->cond);
    pthread_mutex_unlock(&st->lock);
}

static void stream_progress(void *user, const char *line)
{
    json_t *o = json_pack("{s:s}", "line", line);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (text)
        stream_put(user, "progress", text, 0);
    free(text);
    json_decref(o);
}

static void stream_unref(install_stream *st)
{
    pthread_mutex_lock(&st->lock);
    int last = --st->refs == 0;
    pthread_mutex_unlock(&st->lock);
    if (!last)
        return;
    pthread_mutex_destroy(&st->lock);
    pthread_cond_destroy(&st->cond);
    free(st->buf);
    free(st);
}

static void *stream_main(void *arg)
{
    install_stream *st = arg;
    agents_install_result res;
    cell_error e = { 0 };
    json_t *out;
    if (srv_agents_install(st->sc, st->agent, st->flags, st->token_id, stream_progress, st, &res, &e) == 0) {
        out = install_json(&res, st->agent);
    } else {
        unsigned status;
        out = srv_agents_install_error_json(st->agent, &res, &e, &status);
    }
    srv_agents_install_result_free(&res);
    char *text = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    stream_put(st, "result", text ? text : "{}", 1);
    free(text);
    pthread_mutex_lock(&st->lock);
    st->done = 1;
    pthread_cond_broadcast(&st->cond);
    pthread_mutex_unlock(&st->lock);
    srv_registry_put(st->sc);
    stream_unref(st);
    srv_agents_worker_end();
    return NULL;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    install_stream *st = cls;
    pthread_mutex_lock(&st->lock);
    int64_t beat = srv_now_ms() + 15000;
    while (st->off == st->len && !st->done && !srv_conns_stream_over(st->s, st->token_id) && srv_now_ms() < beat) {
        struct timespec ts;
        srv_deadline_after(&ts, 500);
        pthread_cond_timedwait(&st->cond, &st->lock, &ts);
    }
    ssize_t n;
    if (st->off < st->len) {
        n = (ssize_t)(st->len - st->off < max ? st->len - st->off : max);
        memcpy(buf, st->buf + st->off, (size_t)n);
        st->off += (size_t)n;
        if (st->off == st->len)
            st->off = st->len = 0;
    } else if (st->done || srv_conns_stream_over(st->s, st->token_id)) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        static const char hb[] = ": heartbeat\n\n";
        n = (ssize_t)(sizeof hb - 1 < max ? sizeof hb - 1 : max);
        memcpy(buf, hb, (size_t)n);
    }
    pthread_mutex_unlock(&st->lock);
    return n;
}

static void stream_free(void *cls) { stream_unref(cls); }

/* The install runs on its own thread, which outlives a client that goes
 * away (the install finishes for the next one). */
static int install_as_stream(sreq *r, const char *agent, unsigned flags)
{
    install_stream *st = calloc(1, sizeof *st);
    if (!st)
        return srv_reply_problem(r, 500, "internal", "out of memory");
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->cond, NULL);
    st->refs = 2;
    st->flags = flags;
    st->s = r->s;
    st->sc = r->cell;
    snprintf(st->agent, sizeof st->agent, "%s", agent);
    snprintf(st->token_id, sizeof st->token_id, "%s", r->tok.id);
    pthread_mutex_lock(&r->s->lock);
    r->cell->refs++;
    pthread_mutex_unlock(&r->s->lock);
    srv_agents_worker_begin();
    if (util_thread_detached(stream_main, st) != 0) {
        srv_agents_worker_end();
        srv_registry_put(st->sc);
        st->refs = 1;
        stream_unref(st);
        return srv_reply_problem(r, 500, "internal", "cannot start the install thread");
    }
    return srv_reply_event_stream(r, stream_read, st, stream_free);
}

static int wants_stream(sreq *r)
{
    const char *accept = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    return accept && strstr(accept, "text/event-stream") != NULL;
}

int srv_h_agents_install(sreq *r)
{
    const char *id = srv_router_param(&r->m, "agent");
    json_t *body = NULL;
    int reinstall = 0;
    if (r->body_len && srv_req_json(r, &body) < 0)
        return REPLIED(r);
    if (body && srv_json_get_bool(r, body, "reinstall", &reinstall) < 0) {
        json_decref(body);
        return REPLIED(r);
    }
    json_decref(body);
    const agent_def *a = agent_find(id);
    if (!a)
        return srv_reply_unsupported_agent(r, id);
    srv_req_audit(r, "agent", json_string(id));
    const agents_package *p = srv_agents_package_find(id);
    if (p && p->unavailable)
        return srv_reply_problem_details(r, 501, "install_failed", json_pack("{s:s}", "agent", id), "%s: %s", id,
                                     p->unavailable);
    /* A tenant's reinstall rewrites its own cell's launcher; running npm
     * again over the host-wide cache (every tenant's agents, a download
     * each time) is the admin's. */
    unsigned flags = reinstall ? AGENTS_REINSTALL | (r->tok.admin ? AGENTS_REFETCH : 0) : 0;
    if (wants_stream(r))
        return install_as_stream(r, id, flags);
    agents_install_result res;
    cell_error e = { 0 };
    int rc = srv_agents_install(r->cell, id, flags, r->tok.id, NULL, NULL, &res, &e) == 0
             ? srv_reply_json(r, 200, install_json(&res, id)) : srv_agents_reply_install_error(r, id, &res, &e);
    srv_agents_install_result_free(&res);
    return rc;
}
