/* runs.h: /v1/runs, one call from (agent, instructions, repo, prompt) to
 * output, events and a diff (issue 12).
 *
 * Four modules share this header, one prefix each:
 *   runs.c      (runs_)      the API: validation, the run list, the store,
 *                            events (ring, file, SSE), cancel, permissions
 *                            answers, apply, artifacts, uploads, audit;
 *   rundrive.c  (rundrive_)  one thread per run: boots the run's cell with
 *                            the workspace, installs and starts the agent,
 *                            drives it (ACP or shell), answers permission
 *                            requests, times out, computes the diff, keeps
 *                            or removes what `keep` says, finishes the run;
 *   runagent.c  (runagent_)  pure functions: each agent's materialisation
 *                            (files, argv, env, ACP mcpServers), event
 *                            normalisation (ACP updates, codex and opencode
 *                            JSON streams), the permission policy, the
 *                            output-schema check;
 *   rundiff.c   (rundiff_)   the diff of /workspace against its base,
 *                            computed inside the run's cell, and its apply
 *                            to the host repository in an apply cell.
 *
 * Paths inside a run's cell (fixed, documented in docs/api.md):
 *   RUN_WORKSPACE  the repository as the agent sees and changes it;
 *   RUN_BASE       the repository as it was (read-only for path repos).
 * Instructions, skills and MCP config go under the agent's home, never
 * under RUN_WORKSPACE, so they cannot show in the diff. */
#ifndef CELL_SERVER_RUNS_H
#define CELL_SERVER_RUNS_H

#include "server/server_internal.h"

#define RUN_WORKSPACE "/workspace"
#define RUN_BASE      "/.cell-run/base"
#define RUN_HOME      "/root"

#define RUN_ID_LEN    16            /* hex characters */

enum run_status {
    RUN_QUEUED = 0,                 /* accepted, the driver thread not yet going */
    RUN_STARTING,                   /* booting the cell, installing, materialising */
    RUN_RUNNING,                    /* the agent runs */
    RUN_FINISHING,                  /* the agent is done: diff, keep, cleanup */
    RUN_SUCCEEDED,                  /* terminal states from here on */
    RUN_FAILED,
    RUN_CANCELED,
    RUN_TIMED_OUT,
};

/* A permission request the driver waits on (srv_runs_ask_permission). */
typedef struct run_perm {
    char    id[40];                 /* reqId in POST /v1/runs/{id}/permissions/{reqId} */
    char   *decision;               /* "allow" | "deny", set by the client's POST */
    struct run_perm *next;
} run_perm;

typedef struct run run;
struct run {
    srv      *s;
    char      id[RUN_ID_LEN + 1];
    char      tenant[64];
    char      token_id[40];         /* who asked (audit) */
    int       admin;                /* the asking token was an admin's */
    json_t   *spec;                 /* the validated request (runs.c); immutable once listed */
    int64_t   created_ms;
    int       refs;                 /* runs.c's lock; srv_runs_put drops one */

    pthread_mutex_t lock;           /* everything below */
    pthread_cond_t  cond;           /* state, events, permission decisions, cancel */
    enum run_status status;
    int       cancel;               /* DELETE asked: the driver ends the agent and finishes as canceled */
    char      cell_id[13];          /* the run's cell, once booted ("" before) */
    json_t   *result;               /* set by srv_runs_finish */
    json_t   *timings;             /* {acceptedMs, cellReadyMs, agentStartedMs, agentDoneMs, finishedMs} */
    run_perm *perms;                /* pending permission requests */
    void     *events;               /* runs.c's ring; opaque to the others */
    run      *next;                 /* runs.c's list */
};

/* ---- runs.c: what the driver calls ------------------------------------------------------- */
/* Append one normalised event: {"seq", "type", "timeMs", ...fields of
 * `fields`}.  `fields` is stolen (may be NULL).  Never fails the run: an
 * event that does not fit the caps is counted and dropped (one
 * "events.dropped" event says so). */
void srv_runs_emit(run *r, const char *type, json_t *fields);
/* Move to a non-terminal status (emits "run.status"). */
void srv_runs_set_status(run *r, enum run_status st);
/* Record the run's cell id (GET /v1/runs/{id} shows it). */
void srv_runs_set_cell(run *r, const char *cell_id);
/* Record a timing point, e.g. srv_runs_mark(r, "agentStartedMs"), as ms since
 * the epoch (srv_now_ms()). */
void srv_runs_mark(run *r, const char *point);
/* Whether DELETE asked the run to stop (read without waiting). */
int  srv_runs_cancelled(run *r);
/* The driver's last call: the terminal status and the result object
 * {exitCode, output, sessionId, usage, diff, changedFiles, artifacts,
 * durationMs, error?, cellId?, lane?} (stolen).  Persists it, emits
 * "run.finished", wakes every follower, and drops the driver's reference. */
void srv_runs_finish(run *r, enum run_status st, json_t *result);
/* A permission request the policy said "ask" for: emits
 * "permission.asked" (with `request`, borrowed), waits until
 * POST /v1/runs/{id}/permissions/{reqId} decides, the run is cancelled or
 * `deadline_ms` (srv_now_ms() clock) passes, emits "permission.decided"
 * and returns "allow" or "deny" (static strings). */
const char *srv_runs_ask_permission(run *r, const char *req_id, json_t *request, int64_t deadline_ms);
/* STATE/runs/<id>: the run's directory for artifacts (exists once listed). */
int  srv_runs_dir(run *r, char *out, size_t size);
const char *srv_runs_status_name(enum run_status st);
/* Add the listed runs to counts[] by status (GET /metrics). */
void srv_runs_count_by_status(uint64_t counts[RUN_TIMED_OUT + 1]);
void srv_runs_put(run *r);
/* The tenant's run `id` (tenant NULL: any) with a reference (srv_runs_put),
 * or NULL; for resume: the run's spec, srv_runs_dir and, once it finished,
 * its result. */
run *srv_runs_find(srv *s, const char *tenant, const char *id);
/* The tar of an upload repo ({"upload": ID}): POST /v1/runs moved it to
 * STATE/runs/<id>/upload.tar, whose path goes to `path`.  0, or -1 if it
 * is not there. */
int  srv_runs_upload_take(run *r, const char *upload_id, char *path, size_t size);

/* ---- runs.c: what the daemon calls ---------------------------------------------------------- */
/* Load the stored runs (those not finished become "failed" with error
 * daemon_restarted); at start, after srv_registry_load. */
int  srv_runs_start(srv *s, cell_error *err);
/* Cancel every run and wait for the driver threads; before the registry's shutdown. */
void srv_runs_shutdown(srv *s);
void srv_runs_free_all(void);
/* The id of the run whose cell is `cell_id` (a new JSON string) or NULL. */
json_t *srv_runs_cell_run(srv *s, const char *cell_id);
/* What a tenant's runs and waiting uploads hold on disk (its maxDisk
 * counts them with its lanes and images). */
uint64_t srv_runs_tenant_bytes(srv *s, const char *tenant);

/* ---- rundrive.c ------------------------------------------------------------------------- */
/* The driver thread's body: owns one reference to r, calls srv_runs_finish
 * exactly once, whatever happens. */
void *srv_rundrive_main(void *r);

/* ---- runagent.c: backends, without I/O --------------------------------------------------- */
typedef struct runagent_file {
    char  *path;                    /* absolute, inside the cell */
    mode_t mode;
    char  *data;
    size_t len;
} runagent_file;

typedef struct runagent_plan {
    runagent_file *files;           /* to write into the cell before the agent starts */
    size_t         n_files;
    json_t        *mcp_servers;     /* ACP session/new "mcpServers" (owned; [] if none) */
    char         **env;             /* extra "NAME=value" for the agent (NULL-terminated, owned) */
    char          *prompt;          /* the prompt as the agent gets it (schema instructions added) */
} runagent_plan;

/* Validate the run request's agent-facing fields (instructions, skills,
 * mcp, output_schema, permissions), naming the field in `why` (a 400). */
int  srv_runagent_check(json_t *spec, char *why, size_t size);
/* What to write and pass for `agent` ("mock", "codex", "opencode",
 * "claude", "shell"). */
int  srv_runagent_plan_build(const char *agent, json_t *spec, runagent_plan *out, char *why, size_t size);
void srv_runagent_plan_free(runagent_plan *p);

/* Event normalisation keeps a little state per run (open tool calls, the
 * message being assembled, usage totals). */
typedef struct runagent_norm runagent_norm;
runagent_norm *srv_runagent_norm_new(void);
void srv_runagent_norm_free(runagent_norm *n);
/* Normalised events (a new array of {"type", ...}) from one ACP
 * session/update's params, one line of `codex exec --json`, one line of
 * `opencode run --format json`. */
json_t *srv_runagent_from_acp(runagent_norm *n, json_t *update_params);
json_t *srv_runagent_from_codex(runagent_norm *n, json_t *line);
json_t *srv_runagent_from_opencode(runagent_norm *n, json_t *line);
/* What the normaliser has seen: the assistant's whole output text, the
 * usage {inputTokens, outputTokens, totalTokens} (new references). */
json_t *srv_runagent_output(runagent_norm *n);
json_t *srv_runagent_usage(runagent_norm *n);
/* The session id the agent reported (ACP sessionId, codex thread_id,
 * opencode sessionID), or NULL: result.sessionId for the CLI backends. */
const char *srv_runagent_session(runagent_norm *n);

/* The per-run permission policy's answer for an ACP
 * session/request_permission's params: "allow", "deny" or "ask". */
const char *srv_runagent_permission(json_t *policy, json_t *request_params);
/* The command of an ACP tool call of kind execute as the policy matches it
 * (rawInput.command; an argv [sh, -c, SCRIPT] is SCRIPT, another argv its
 * words quoted as sh needs), a new string; NULL for other kinds or none:
 * for permission.asked's "command". */
char *srv_runagent_command(json_t *tool_call);
/* Check `value` against the run's output_schema; 0 or -1 with why. */
int srv_runagent_schema_validate(json_t *schema, json_t *value, char *why, size_t size);

/* ---- rundiff.c --------------------------------------------------------------------------- */
typedef struct rundiff_limits {
    size_t inline_max;              /* bytes of patch in the result; the rest only in the artifact */
    size_t artifact_max;            /* bytes of patch kept in STATE/runs/<id>/diff.patch */
} rundiff_limits;

/* Diff RUN_WORKSPACE against RUN_BASE inside the running cell `sc` (the
 * agent's processes stopped first): fills `out` with {"diff": text
 * (capped), "diffBytes", "diffTruncated", "changedFiles": [{path,
 * status: added|modified|deleted|renamed, binary}], "artifacts": [...]} and
 * writes the whole patch to `patch_path` (capped at artifact_max). */
int srv_rundiff_compute(scell *sc, const rundiff_limits *lim, const char *patch_path, json_t *out, cell_error *err);
/* Apply the patch at `patch_path` to the host directory `repo` in a
 * short-lived apply cell, as the directory's owner.  -1 with err; a patch
 * that does not apply is EEXIST with the conflicting paths in *conflicts
 * (owned array) and nothing written. */
int srv_rundiff_apply(srv *s, const char *repo, const char *patch_path, json_t **conflicts, cell_error *err);

#endif
