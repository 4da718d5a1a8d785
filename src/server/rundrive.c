/* rundrive.c: one thread per run (issue 12).  The sequence:
 *   1. the plan (runagent.c), then the run's cell: a create body as
 *      POST /v1/cells takes it (image, resources, env, policy, the model
 *      key as "agents"), validated and booted through cells.c as a cell of
 *      the run's tenant; a path repo is an overlay at RUN_WORKSPACE (the
 *      host directory its read-only lower layer) and read-only at RUN_BASE;
 *   2. a lane's directory or an upload unpacked at RUN_BASE and copied to
 *      RUN_WORKSPACE inside the cell; for a resume, the previous patch
 *      applied and the agent's state restored;
 *   3. the agent installed, the plan's files (attachments among them) written;
 *   4. the agent driven: ACP agents through the daemon's own ACP client
 *      (acp.c) as server "run-<id>" of the cell, `shell` as `sh -c PROMPT`;
 *   5. until it ends, the timeout or a cancel (checked every 250 ms);
 *   6. every process of the cell killed, then the diff (rundiff.c), the
 *      output and its schema check, the agent's state saved for a resume;
 *   7. keep: the cell deleted, kept, or its workspace made a lane;
 *   8. srv_runs_finish, exactly once, on every path.
 * Everything the cell holds is the agent's and untrusted: the daemon only
 * reads it through processes in the cell (tar, the transfer processes),
 * bounded, and never follows a path of the cell itself. */
#include "server/acp.h"
#include "server/agentkeys.h"
#include "server/agents.h"
#include "server/runs.h"
#include "server/slog.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <openssl/crypto.h>
#include <openssl/http.h>

#define DRV_SLICE_MS        250
#define DRV_DEFAULT_TIMEOUT 1800            /* s */
#define DRV_SETUP_MS        120000          /* one setup step (copy, install, a handshake request) */
#define DRV_OUTPUT_MAX      (1u << 20)      /* shell: stdout kept as the output */
#define DRV_DIFF_INLINE     (1u << 20)
#define DRV_DIFF_ARTIFACT   (64u << 20)
#define DRV_STATE_MAX       (64u << 20)     /* agent-state.tar */
#define DRV_LANE_MAX        (64ull << 30)   /* keep "lane": the workspace's tar, streamed (the lane's size decides) */
#define DRV_STDERR_TAIL     2048
#define DRV_CANCEL_GRACE_MS 1000            /* session/cancel, then the process group */

typedef struct drive {
    run           *r;
    srv           *s;
    json_t        *spec;            /* r->spec, immutable */
    const char    *agent;
    scell         *sc;              /* the run's cell (a reference) */
    struct scell_usage usage_base;  /* the cell's metered usage when the agent started */
    runagent_plan  plan;
    int            have_plan;
    runagent_norm *norm;
    acp_client    *acp;
    int64_t        deadline;        /* the run's timeout */
    int            timed_out, canceled, stopping, loading, agent_died;
    unsigned       perm_seq;
    json_t        *result;          /* being built */
    json_t        *error;           /* {type, message} of the first failure */
    run           *prev;            /* resume: the previous run (a reference) */
    char           prev_session[256];
} drive;

/* ---- small helpers ---------------------------------------------------------------------- */
static void drv_fail(drive *d, const char *type, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void drv_fail(drive *d, const char *type, const char *fmt, ...)
{
    if (d->error)
        return;                     /* the first cause is the one reported */
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* It may quote the agent (its stderr, cut at a byte count): lossy UTF-8. */
    json_t *text = srv_procs_lossy_string((const unsigned char *)msg, strlen(msg));
    d->error = json_pack("{s:s, s:O}", "type", type, "message", text ? text : json_null());
    srv_runs_emit(d->r, "error", json_pack("{s:o}", "message", text ? text : json_null()));
}

/* Whether the run must stop now: cancel, timeout, the daemon stopping, the
 * cell gone (deleted by its tenant under the run). */
static int drv_stop(void *user)
{
    drive *d = user;
    /* The daemon's stop cancels every run too: said as what it is. */
    if (atomic_load(&d->s->stopping))
        d->stopping = 1;
    else if (srv_runs_cancelled(d->r))
        d->canceled = 1;
    else if (srv_now_ms() >= d->deadline)
        d->timed_out = 1;
    else if (d->sc && !srv_registry_running(d->sc))
        return 1;
    return d->canceled || d->timed_out || d->stopping;
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* A copy of the run's spec field, or NULL. */
static json_t *jcopy(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return v && !json_is_null(v) ? json_deep_copy(v) : NULL;
}

/* ---- processes in the cell -------------------------------------------------------------- */
typedef struct drv_out {
    int    fd;                      /* stdout into this file (-1: into buf) */
    size_t cap;                     /* bytes of stdout kept (buf) or allowed (fd) */
    char  *buf;
    size_t len;
    int    over;                    /* stdout passed cap */
    char   err[DRV_STDERR_TAIL + 1];  /* stderr's last bytes */
    size_t err_len;
} drv_out;

static void out_stderr(drv_out *o, const char *data, size_t n)
{
    if (n >= DRV_STDERR_TAIL) {
        memcpy(o->err, data + n - DRV_STDERR_TAIL, DRV_STDERR_TAIL);
        o->err_len = DRV_STDERR_TAIL;
    } else {
        size_t keep = o->err_len + n > DRV_STDERR_TAIL ? DRV_STDERR_TAIL - n : o->err_len;
        memmove(o->err, o->err + o->err_len - keep, keep);
        memcpy(o->err + keep, data, n);
        o->err_len = keep + n;
    }
    o->err[o->err_len] = '\0';
}

static void out_stdout(drv_out *o, const char *data, size_t n)
{
    if (o->over)
        return;                     /* drained, not kept */
    if (o->len + n > o->cap) {
        o->over = 1;
        n = o->cap - o->len;
    }
    if (o->fd >= 0) {
        if (n && util_write_all(o->fd, data, n) < 0)
            o->over = 1;
    } else if (n) {
        char *b = realloc(o->buf, o->len + n + 1);
        if (!b) {
            o->over = 1;
            return;
        }
        o->buf = b;
        memcpy(o->buf + o->len, data, n);
        o->buf[o->len + n] = '\0';
    }
    o->len += n;
}

/* Run argv in the cell (the cell's environment) with
 * stdin closed, until it exits.  `stoppable`: drv_stop ends it early
 * (ECANCELED); else `limit_ms` bounds it (ETIMEDOUT).  A writer to a file
 * (o->fd) past o->cap is killed (EFBIG).  Once the process exited, its
 * pipes are read until they have been quiet for a moment: a child it left
 * behind may hold them open for good. */
static int drv_exec(drive *d, const char *const *argv, drv_out *o, int stoppable, int64_t limit_ms, int *status,
                    cell_error *err)
{
    /* The shell agent's command starts in the workspace; the driver's own
     * helpers in /, which the agent cannot remove. */
    const char *cwd = stoppable ? RUN_WORKSPACE : "/";
    int fds[3];
    sproc *p = srv_procs_spawn_piped_at(d->sc, argv, cwd, fds, err);
    if (!p)
        return -1;
    close(fds[0]);
    int eof[2] = { 0, 0 }, exited = 0, rc = 0;
    int64_t until = srv_now_ms() + limit_ms, quiet_since = 0;
    char chunk[65536];
    while (!(eof[0] && eof[1])) {
        struct pollfd pf[2] = { { .fd = eof[0] ? -1 : fds[1], .events = POLLIN },
                                { .fd = eof[1] ? -1 : fds[2], .events = POLLIN } };
        int n = poll(pf, 2, DRV_SLICE_MS);
        if (n < 0 && errno != EINTR) {
            rc = util_fail_errno(err, "poll");
            break;
        }
        for (int i = 0; i < 2 && n > 0; i++) {
            if (!pf[i].revents)
                continue;
            ssize_t got = read(pf[i].fd, chunk, sizeof chunk);
            if (got <= 0 && !(got < 0 && (errno == EINTR || errno == EAGAIN)))
                eof[i] = 1;
            else if (got > 0)
                i == 0 ? out_stdout(o, chunk, (size_t)got) : out_stderr(o, chunk, (size_t)got);
        }
        if (o->fd >= 0 && o->over) {
            rc = util_fail(err, EFBIG, "%s wrote more than %zu bytes", argv[0], o->cap);
            break;
        }
        if (stoppable ? drv_stop(d) : srv_now_ms() >= until) {
            rc = util_fail(err, stoppable ? ECANCELED : ETIMEDOUT, "%s was stopped", argv[0]);
            break;
        }
        if (n > 0)
            continue;
        if (!exited)
            exited = srv_procs_wait_exit(p, srv_now_ms(), status);
        if (exited && !quiet_since)
            quiet_since = srv_now_ms();
        if (exited && srv_now_ms() - quiet_since >= 2 * DRV_SLICE_MS)
            break;
    }
    close(fds[1]);
    close(fds[2]);
    /* Its pipes closed; its exit is on the way. */
    while (rc == 0 && !exited) {
        exited = srv_procs_wait_exit(p, srv_now_ms() + DRV_SLICE_MS, status);
        if (!exited && (stoppable ? drv_stop(d) : srv_now_ms() >= until))
            rc = util_fail(err, stoppable ? ECANCELED : ETIMEDOUT, "%s was stopped", argv[0]);
    }
    if (rc < 0) {
        srv_procs_signal(p, SIGKILL);
        srv_procs_wait_exit(p, srv_now_ms() + 2000, status);
    }
    srv_procs_release(p);
    return rc;
}

/* A setup script: sh -c SCRIPT sh ARGS...; a non-zero exit is an error
 * naming `what` with the script's stderr. */
static int drv_sh(drive *d, const char *what, const char *script, const char *arg1, const char *arg2, cell_error *err)
{
    const char *argv[] = { "/bin/sh", "-c", script, "sh", arg1, arg2, NULL };
    drv_out o = { .fd = -1, .cap = 4096 };
    int status = 0;
    int rc = drv_exec(d, argv, &o, 0, DRV_SETUP_MS, &status, err);
    free(o.buf);
    if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        rc = util_fail(err, EIO, "%s failed (%s %d): %.600s", what, WIFEXITED(status) ? "exit" : "signal",
                       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), o.err);
    return rc;
}

/* Write a file into the cell, its directories first (io held throughout). */
static int drv_write(drive *d, const char *path, mode_t mode, const void *data, size_t len, cell_error *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    scell *sc = d->sc;
    srv_scell_io_lock(sc);
    int rc;
    if (!sc->c || sc->dead)
        rc = util_fail(err, ECONNRESET, "cell %s is stopped", sc->id);
    else {
        rc = 0;
        if (slash && slash != dir) {
            *slash = '\0';
            rc = cell_file_mkdir(sc->c, dir, 0755, 1, err);
        }
        if (rc == 0)
            rc = srv_agents_cell_write(sc->c, path, mode, data, len, err);
    }
    srv_scell_io_unlock(sc);
    return rc;
}

/* ---- the cell ----------------------------------------------------------------------------- */
/* An egress rule for each MCP http header that names a secret: the engine
 * sets it host-side, so the value never enters the cell. */
static int mcp_rules(drive *d, json_t *rules)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(d->spec, "mcp"), i, m) {
        json_t *headers = json_object_get(m, "headers");
        const char *url = jstr(m, "url"), *name;
        json_t *v;
        json_t *set = json_object();
        json_object_foreach(headers, name, v)
            if (json_is_string(v) && strstr(json_string_value(v), "${secret:"))
                json_object_set(set, name, v);
        if (!url || json_object_size(set) == 0) {
            json_decref(set);
            continue;
        }
        char *user = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL, *frag = NULL;
        int tls = 0, port_num = 0;
        int ok = OSSL_HTTP_parse_url(url, &tls, &user, &host, &port, &port_num, &path, &query, &frag) && host &&
                 *host;
        if (ok)
            json_array_append_new(rules, json_pack("{s:{s:s, s:[i], s:o, s:b, s:b}}", "http", "host", host, "ports",
                                                   port_num, "set_headers", set, "redact_response", 1, "tls", tls));
        else
            json_decref(set);
        OPENSSL_free(user), OPENSSL_free(host), OPENSSL_free(port);
        OPENSSL_free(path), OPENSSL_free(query), OPENSSL_free(frag);
        if (!ok)
            return drv_fail(d, "invalid_request", "mcp[%zu].url is not a URL", i), -1;
    }
    return 0;
}

static int has_dns_rule(json_t *rules)
{
    size_t i;
    json_t *rule;
    json_array_foreach(rules, i, rule)
        if (json_object_get(rule, "dns"))
            return 1;
    return 0;
}

/* The run's policy: the MCP header rules first (first match decides),
 * then the client's, then, for the MCP hosts' names, the host's resolvers
 * as the agent keys get them (agentkeys.c) when the client gave no dns
 * rule.  NULL: none (no network). */
static json_t *run_policy(drive *d, sreq *q, int *bad)
{
    json_t *user = json_object_get(d->spec, "policy"), *rules = json_array();
    *bad = mcp_rules(d, rules) < 0;
    if (*bad || (!json_is_object(user) && json_array_size(rules) == 0)) {
        json_decref(rules);
        return NULL;
    }
    int ours = json_array_size(rules) > 0;
    json_t *policy = json_is_object(user) ? json_deep_copy(user) : json_object();
    json_t *theirs = json_object_get(policy, "rules");
    if (json_is_array(theirs))
        json_array_extend(rules, theirs);
    json_t *dns = ours && !has_dns_rule(rules) ? srv_agentkeys_host_dns(q) : NULL;
    if (dns)
        json_array_append_new(rules, dns);
    json_object_set_new(policy, "rules", rules);
    return policy;
}

static json_t *create_body(drive *d, sreq *q, int *bad)
{
    char host[16];
    snprintf(host, sizeof host, "run-%.8s", d->r->id);
    json_t *env = json_object_get(d->spec, "env");
    env = json_is_object(env) ? json_deep_copy(env) : json_object();
    for (char **e = d->plan.env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq) {
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)(eq - *e < 255 ? eq - *e : 255), *e);
            json_object_set_new(env, name, json_string(eq + 1));
        }
    }
    const char *image = jstr(d->spec, "image");
    json_t *body = json_pack("{s:s, s:s, s:s, s:o}", "image", image ? image : "host", "hostname", host, "cwd",
                             RUN_WORKSPACE, "env", env);
    json_t *res = jcopy(d->spec, "resources"), *key = jcopy(d->spec, "key");
    if (res)
        json_object_set_new(body, "resources", res);
    if (key)
        json_object_set_new(body, "agents", json_pack("{s:o}", d->agent, key));
    json_t *policy = run_policy(d, q, bad);
    if (policy)
        json_object_set_new(body, "policy", policy);
    return body;
}

/* The host directory of a path repo (canonical: runs.c checked it): the
 * lower layer of an overlay at RUN_WORKSPACE whose upper is the cell's
 * own memory, and read-only at RUN_BASE.  Neither is ever written. */
static json_t *repo_mounts(drive *d)
{
    json_t *repo = json_object_get(d->spec, "repo");
    const char *path = jstr(repo, "path");
    if (!path || jstr(repo, "lane"))
        return NULL;
    return json_pack("[{s:s, s:s, s:s}, {s:s, s:s, s:s, s:b}]", "type", "overlay", "source", path, "target",
                     RUN_WORKSPACE, "type", "bind", "source", path, "target", RUN_BASE, "readonly", 1);
}

/* Boot the run's cell through POST /v1/cells's own steps, as a request of
 * the run's tenant without a connection. */
static int boot_cell(drive *d)
{
    int bad = 0;
    sreq q = { .s = d->s };
    snprintf(q.tok.tenant, sizeof q.tok.tenant, "%s", d->r->tenant);
    snprintf(q.tok.id, sizeof q.tok.id, "%.*s", (int)sizeof q.tok.id - 1, d->r->token_id);
    q.tok.admin = d->r->admin;
    json_t *body = create_body(d, &q, &bad), *spec = json_object();
    int rc = -1;
    if (!bad && body && spec && srv_cells_spec_from_body(&q, body, spec) == 0) {
        json_t *mounts = repo_mounts(d);
        if (mounts)
            json_object_set_new(spec, "mounts", mounts);
        json_object_set_new(spec, "run", json_string(d->r->id));
        rc = srv_cells_create_from_spec(&q, spec, NULL, &d->sc);
    }
    if (rc < 0 && !bad) {
        const char *why = json_string_value(json_object_get(q.audit, "error"));
        drv_fail(d, q.status == 403 || q.status == 429 ? "quota_exceeded" : "cell", "the run's cell: %s",
                 why ? why : "out of memory");
    }
    json_decref(q.audit);
    json_decref(body);
    json_decref(spec);
    return rc;
}

/* ---- the workspace ------------------------------------------------------------------------ */
static int upload_into(drive *d, const char *dir, int fd, cell_error *err)
{
    scell *sc = d->sc;
    srv_scell_io_lock(sc);
    int rc = !sc->c || sc->dead ? util_fail(err, ECONNRESET, "cell %s is stopped", sc->id)
                                : cell_file_mkdir(sc->c, dir, 0755, 1, err) == 0
                                      ? cell_file_upload_tar(sc->c, dir, fd, err) : -1;
    srv_scell_io_unlock(sc);
    return rc;
}

/* A lane's export, written on a thread of its own into a pipe that the
 * cell's upload reads: nothing is staged on the host's disk. */
typedef struct lane_export {
    srv       *s;
    char       id[sizeof ((store_lane *)0)->id];
    int        fd;                  /* the pipe's write end, closed when done */
    int        rc;
    cell_error err;
} lane_export;

static void *lane_export_main(void *arg)
{
    lane_export *x = arg;
    cell_ctx *ctx = NULL;
    x->rc = cell_ctx_open(&ctx, x->s->state_dir, &x->err);
    if (x->rc == 0) {
        x->rc = cell_lane_export(ctx, x->id, x->fd, &x->err);
        cell_ctx_close(ctx);
    }
    close(x->fd);                   /* the upload's end of the tar */
    return NULL;
}

/* A lane's tree (the whole lane, as GET /v1/lanes/{name}/export gives
 * it) unpacked at `dir` in the run's cell. */
static int lane_into(drive *d, const char *name, const char *dir, cell_error *err)
{
    store_lane l;
    if (store_lane_get(d->s->st, d->r->tenant, name, &l, err) < 0 || strcmp(l.state, "ready") != 0)
        return util_fail(err, ENOENT, "lane %s: no such lane of tenant %s", name, d->r->tenant);
    /* As GET /v1/lanes/{name}/export: not while a cell changes it. */
    cell_lane_info info;
    pthread_mutex_lock(&d->s->ctx_lock);
    int rc = cell_lane_get(d->s->ctx, l.id, &info, err);
    pthread_mutex_unlock(&d->s->ctx_lock);
    if (rc < 0)
        return -1;
    if (info.attached)
        return util_fail(err, EBUSY, "lane %s is attached to a running cell; stop it first", name);
    lane_export x = { .s = d->s };
    snprintf(x.id, sizeof x.id, "%s", l.id);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return util_fail_errno(err, "pipe");
    x.fd = p[1];
    pthread_t t;
    int pe = pthread_create(&t, NULL, lane_export_main, &x);
    if (pe != 0) {
        close(p[0]);
        close(p[1]);
        errno = pe;
        return util_fail_errno(err, "the export thread");
    }
    rc = upload_into(d, dir, p[0], err);
    close(p[0]);                    /* an export still writing gets EPIPE, not a wait */
    pthread_join(t, NULL);
    if (x.rc < 0 && rc == 0)
        rc = util_fail(err, x.err.code, "exporting lane %s: %s", name, x.err.message);
    return rc;
}

/* The upload's tar: this run's, or for a resumed run its first run's. */
static int upload_tar(drive *d, const char *upload, char *tar, size_t size)
{
    if (srv_runs_upload_take(d->r, upload, tar, size) == 0)
        return 0;
    return d->prev && srv_runs_upload_take(d->prev, upload, tar, size) == 0 ? 0 : -1;
}

static int fill_workspace(drive *d, cell_error *err)
{
    json_t *repo = json_object_get(d->spec, "repo");
    scell *sc = d->sc;
    if (WITH_CELL(sc, err, cell_file_mkdir(sc->c, RUN_WORKSPACE, 0755, 1, err)) < 0 ||
        WITH_CELL(sc, err, cell_file_mkdir(sc->c, RUN_BASE, 0755, 1, err)) < 0)
        return -1;
    const char *lane = jstr(repo, "lane"), *upload = jstr(repo, "upload");
    char tar[PATH_MAX];
    if (lane) {
        const char *sub = jstr(repo, "path") ? jstr(repo, "path") : RUN_WORKSPACE;
        if (sub[0] != '/' || strstr(sub, ".."))
            return util_fail(err, EINVAL, "repo.path must be an absolute path without '..'");
        /* The lane holds a whole tree: only repo.path of it is the repository. */
        if (lane_into(d, lane, "/.cell-run/lane", err) < 0 || drv_sh(d, "taking the lane's directory",
                             "[ -d \"/.cell-run/lane$1\" ] || { echo \"no directory $1 in the lane\" >&2; exit 1; }; "
                             "cp -a \"/.cell-run/lane$1/.\" /.cell-run/base/ && rm -rf /.cell-run/lane",
                             sub, NULL, err) < 0)
            return -1;
    } else if (upload) {
        if (upload_tar(d, upload, tar, sizeof tar) < 0)
            return util_fail(err, ENOENT, "upload %s: no such upload", upload);
        _cleanup_close_ int fd = open(tar, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || upload_into(d, RUN_BASE, fd, err) < 0)
            return fd < 0 ? util_fail_errno(err, "upload %s", upload) : -1;
    }
    if (!lane && !upload)
        return 0;                   /* none, or a path: the mounts are the workspace */
    return drv_sh(d, "copying the repository into " RUN_WORKSPACE, "cp -a /.cell-run/base/. /workspace/", NULL,
                  NULL, err);
}

/* ---- resume ----------------------------------------------------------------------------- */
/* A file of the previous run's directory, opened without following links. */
static int prev_file(drive *d, const char *name, char *path, size_t size)
{
    char dir[PATH_MAX - 32];
    if (srv_runs_dir(d->prev, dir, sizeof dir) < 0)
        return -1;
    snprintf(path, size, "%s/%s", dir, name);
    return open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
}

/* The previous run's patch applied to RUN_WORKSPACE (so this run's diff
 * against RUN_BASE is cumulative), and its agent's state into RUN_HOME.
 * git runs in the cell, from / so that no repository (the workspace's
 * .git config, say) is found, without system or user config. */
static int restore_prev(drive *d, cell_error *err)
{
    char path[PATH_MAX];
    _cleanup_close_ int pfd = prev_file(d, "diff.patch", path, sizeof path);
    struct stat st;
    if (pfd >= 0 && fstat(pfd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        if (st.st_size > DRV_DIFF_ARTIFACT)
            return util_fail(err, EFBIG, "the previous run's patch is over 64 MiB");
        char *buf = malloc((size_t)st.st_size);
        ssize_t n = buf ? read(pfd, buf, (size_t)st.st_size) : -1;
        int rc = n != st.st_size ? util_fail(err, EIO, "reading the previous run's patch")
                                 : drv_write(d, "/.cell-run/resume.patch", 0600, buf, (size_t)n, err);
        free(buf);
        if (rc < 0 || drv_sh(d, "applying the previous run's patch",
                             "cd / && GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME=/nonexistent "
                             "GIT_CEILING_DIRECTORIES=/ git apply --binary --whitespace=nowarn "
                             "--directory=workspace /.cell-run/resume.patch && rm -f /.cell-run/resume.patch",
                             NULL, NULL, err) < 0)
            return -1;
    }
    _cleanup_close_ int sfd = prev_file(d, "agent-state.tar", path, sizeof path);
    if (sfd >= 0 && upload_into(d, RUN_HOME, sfd, err) < 0)
        return -1;
    return 0;
}

/* The previous run (runs.c checked it is the tenant's, finished, of the
 * same agent) and its session id. */
static int find_prev(drive *d)
{
    const char *id = jstr(json_object_get(d->spec, "resume"), "run");
    if (!id)
        return 0;
    d->prev = srv_runs_find(d->s, d->r->tenant, id);
    if (!d->prev)
        return drv_fail(d, "resume", "run %s is gone", id), -1;
    pthread_mutex_lock(&d->prev->lock);
    const char *sid = jstr(d->prev->result, "sessionId");
    if (sid)
        snprintf(d->prev_session, sizeof d->prev_session, "%s", sid);
    pthread_mutex_unlock(&d->prev->lock);
    if (!d->prev_session[0] && strcmp(d->agent, "shell") != 0)
        return drv_fail(d, "resume", "run %s reported no session to resume", id), -1;
    return 0;
}

static int install_agent(drive *d, cell_error *err)
{
    if (strcmp(d->agent, "shell") == 0)
        return 0;
    if (strcmp(d->agent, "mock") == 0) {
        int already = 0;
        return srv_agents_install_mock(d->sc, 0, &already, err);
    }
    agents_install_result res = { 0 };
    int rc = srv_agents_install(d->sc, d->agent, 0, d->r->token_id, NULL, NULL, &res, err);
    if (rc < 0 && res.npm_failed)
        util_fail(err, EIO, "installing %s: npm failed (exit %d)", d->agent, res.exit_code);
    srv_agents_install_result_free(&res);
    return rc;
}

static int write_plan(drive *d, cell_error *err)
{
    for (size_t i = 0; i < d->plan.n_files; i++) {
        runagent_file *f = &d->plan.files[i];
        if (drv_write(d, f->path, f->mode, f->data, f->len, err) < 0)
            return -1;
    }
    return 0;                       /* attachments are among the plan's files */
}

/* ---- the shell agent ---------------------------------------------------------------------- */
static int exit_code_of(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

static json_t *run_shell(drive *d)
{
    const char *cmd = jstr(d->spec, "prompt");
    const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
    srv_runs_emit(d->r, "command", json_pack("{s:s}", "command", cmd));
    drv_out o = { .fd = -1, .cap = DRV_OUTPUT_MAX };
    cell_error e = { 0 };
    int status = 0;
    json_t *code = json_null();
    if (drv_exec(d, argv, &o, 1, 0, &status, &e) == 0) {
        code = json_integer(exit_code_of(status));
        srv_runs_emit(d->r, "command.exit", json_pack("{s:s, s:O}", "command", cmd, "exitCode", code));
    } else if (e.code != ECANCELED) {
        drv_fail(d, "agent", "sh: %s", e.message);
    }
    /* Invalid UTF-8 (or a character cut at the cap) as U+FFFD. */
    json_t *out = srv_procs_lossy_string((const unsigned char *)(o.buf ? o.buf : ""), o.len);
    json_object_set_new(d->result, "output", out ? out : json_string(""));
    free(o.buf);
    return code;
}

/* ---- ACP agents --------------------------------------------------------------------------- */
static void emit_all(drive *d, json_t *events)
{
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        const char *type = jstr(ev, "type");
        if (!type)
            continue;
        char name[64];
        snprintf(name, sizeof name, "%s", type);
        json_t *fields = json_deep_copy(ev);
        json_object_del(fields, "type");
        srv_runs_emit(d->r, name, fields);
    }
}

/* The option of the agent's request that says `decision`: ACP kinds
 * allow_once / allow_always and reject_once / reject_always, once first. */
static const char *pick_option(json_t *options, const char *decision)
{
    int allow = strcmp(decision, "allow") == 0;
    const char *want[2] = { allow ? "allow_once" : "reject_once", allow ? "allow_always" : "reject_always" };
    for (int k = 0; k < 2; k++) {
        size_t i;
        json_t *o;
        json_array_foreach(options, i, o) {
            const char *kind = jstr(o, "kind"), *id = jstr(o, "optionId");
            if (kind && id && strcmp(kind, want[k]) == 0)
                return id;
        }
    }
    return NULL;
}

static void on_permission(drive *d, json_t *id, json_t *params)
{
    json_t *policy = json_object_get(d->spec, "permissions");
    const char *decision = srv_runagent_permission(policy, params);
    char req[40];
    snprintf(req, sizeof req, "p%u", ++d->perm_seq);
    if (strcmp(decision, "ask") == 0) {
        /* What the client decides on: the tool call's kind, title and
         * command (the agent's words, passed on as data), and the options. */
        json_t *call = json_object_get(params, "toolCall");
        json_t *opts = json_object_get(params, "options");
        json_t *ask = json_pack("{s:s, s:s, s:o}", "kind", jstr(call, "kind") ? jstr(call, "kind") : "other",
                                "title", jstr(call, "title") ? jstr(call, "title") : "", "options",
                                json_is_array(opts) ? json_deep_copy(opts) : json_array());
        char *cmd = srv_runagent_command(call);
        if (ask && cmd)
            json_object_set_new(ask, "command", json_string(cmd));
        free(cmd);
        decision = srv_runs_ask_permission(d->r, req, ask, d->deadline);
        json_decref(ask);
    } else {
        srv_runs_emit(d->r, "permission.decided",
                  json_pack("{s:s, s:s, s:s}", "requestId", req, "decision", decision, "by", "policy"));
    }
    const char *opt = pick_option(json_object_get(params, "options"), decision);
    json_t *outcome = opt ? json_pack("{s:{s:s, s:s}}", "outcome", "outcome", "selected", "optionId", opt)
                          : json_pack("{s:{s:s}}", "outcome", "outcome", "cancelled");
    cell_error e = { 0 };
    srv_acp_client_respond(d->acp, id, outcome, 0, NULL, &e);
}

/* Every message of the agent but the answer the driver waits for. */
static void on_message(void *user, json_t *msg)
{
    drive *d = user;
    const char *method = jstr(msg, "method");
    json_t *id = json_object_get(msg, "id"), *params = json_object_get(msg, "params");
    if (!method)
        return;                     /* a stray answer */
    if (strcmp(method, "session/update") == 0 && !id) {
        if (d->loading || !json_is_object(params))
            return;                 /* session/load replays the old session: not this run's events */
        json_t *events = srv_runagent_from_acp(d->norm, params);
        emit_all(d, events);
        json_decref(events);
        return;
    }
    if (!id || json_is_null(id))
        return;                     /* other notifications */
    cell_error e = { 0 };
    if (strcmp(method, "session/request_permission") == 0 && json_is_object(params))
        on_permission(d, id, params);
    else
        srv_acp_client_respond(d->acp, id, NULL, -32601, "method not found", &e);
}

static int64_t step_deadline(drive *d)
{
    int64_t step = srv_now_ms() + DRV_SETUP_MS;
    return step < d->deadline ? step : d->deadline;
}

/* A request of the handshake; -1 after drv_fail (or a stop). */
static int acp_step(drive *d, const char *method, json_t *params, json_t **result)
{
    cell_error e = { 0 };
    if (srv_acp_client_call(d->acp, method, params, step_deadline(d), drv_stop, on_message, d, result, &e) == 0)
        return 0;
    if (e.code == ETIMEDOUT && srv_now_ms() >= d->deadline)
        d->timed_out = 1;
    if (e.code == ECHILD)
        d->agent_died = 1;          /* said with its code and stderr once it is known */
    else if (e.code != ECANCELED && !d->timed_out)
        drv_fail(d, "agent", "%s", e.message);
    return -1;
}

/* stopReason -> exitCode: end_turn 0, refusal and the limits 1. */
static json_t *stop_code(const char *reason)
{
    if (!reason)
        return json_integer(1);
    if (strcmp(reason, "end_turn") == 0)
        return json_integer(0);
    if (strcmp(reason, "cancelled") == 0)
        return json_null();
    return json_integer(1);
}

static json_t *prompt_params(drive *d, const char *session)
{
    const char *text = d->plan.prompt ? d->plan.prompt : jstr(d->spec, "prompt");
    return json_pack("{s:s, s:[{s:s, s:s}]}", "sessionId", session, "prompt", "type", "text", "text", text);
}

static void agent_end(drive *d, const char *session)
{
    if (!d->acp)
        return;
    cell_error e = { 0 };
    if (session && (d->canceled || d->timed_out || d->stopping)) {
        /* Politely first; whatever it says meanwhile is still this run's. */
        srv_acp_client_notify(d->acp, "session/cancel", json_pack("{s:s}", "sessionId", session), &e);
        srv_acp_client_drain(d->acp, srv_now_ms() + DRV_CANCEL_GRACE_MS, on_message, d);
    }
    srv_acp_client_drain(d->acp, srv_now_ms(), on_message, d);
}

static json_t *run_acp(drive *d, const char *prev_session)
{
    char sid_id[8 + RUN_ID_LEN];
    snprintf(sid_id, sizeof sid_id, "run-%s", d->r->id);
    cell_error e = { 0 };
    if (srv_acp_client_open(d->sc, d->agent, sid_id, &d->acp, &e) < 0) {
        drv_fail(d, "agent", "starting %s: %s", d->agent, e.message);
        return json_null();
    }
    srv_runs_emit(d->r, "agent.started", json_object());
    json_t *res = NULL, *code = json_null();
    char session[256] = "";
    json_t *init = json_pack("{s:i, s:{s:{s:b, s:b}, s:b}}", "protocolVersion", 1, "clientCapabilities", "fs",
                             "readTextFile", 0, "writeTextFile", 0, "terminal", 0);
    json_t *mcp = json_is_array(d->plan.mcp_servers) ? json_deep_copy(d->plan.mcp_servers) : json_array();
    if (acp_step(d, "initialize", init, &res) < 0)
        goto out;
    json_decref(res);
    if (prev_session) {
        d->loading = 1;
        int rc = acp_step(d, "session/load", json_pack("{s:s, s:s, s:O}", "sessionId", prev_session, "cwd",
                                                       RUN_WORKSPACE, "mcpServers", mcp), &res);
        d->loading = 0;
        if (rc < 0)
            goto out;
        snprintf(session, sizeof session, "%s", prev_session);
    } else {
        if (acp_step(d, "session/new", json_pack("{s:s, s:O}", "cwd", RUN_WORKSPACE, "mcpServers", mcp), &res) < 0)
            goto out;
        const char *sid = jstr(res, "sessionId");
        if (!sid || strlen(sid) >= sizeof session) {
            json_decref(res);
            drv_fail(d, "agent", "session/new: the agent gave no sessionId");
            goto out;
        }
        snprintf(session, sizeof session, "%s", sid);
    }
    json_decref(res);
    json_object_set_new(d->result, "sessionId", json_string(session));
    const char *model = jstr(d->spec, "model");
    if (model) {
        if (acp_step(d, "session/set_model", json_pack("{s:s, s:s}", "sessionId", session, "modelId", model),
                     &res) < 0)
            goto out;
        json_decref(res);
    }
    if (srv_acp_client_call(d->acp, "session/prompt", prompt_params(d, session), d->deadline, drv_stop, on_message, d,
                        &res, &e) == 0) {
        json_decref(code);
        code = stop_code(jstr(res, "stopReason"));
        /* The result's usage (ACP's per-turn counts, as claude-agent-acp
         * reports them) is the normaliser's too. */
        json_t *events = json_is_object(res) ? srv_runagent_from_acp(d->norm, res) : NULL;
        emit_all(d, events);
        json_decref(events);
        json_decref(res);
    } else if (e.code == ETIMEDOUT) {
        d->timed_out = 1;
    } else if (e.code == ECHILD) {
        d->agent_died = 1;
    } else if (e.code != ECANCELED) {
        drv_fail(d, "agent", "%s", e.message);
    }
out:
    json_decref(mcp);
    agent_end(d, session[0] ? session : NULL);
    int status;
    if (srv_acp_client_exited(d->acp, &status)) {
        /* It ended on its own: its code is the run's (a crash mid-run). */
        json_t *ec = json_integer(exit_code_of(status));
        srv_runs_emit(d->r, "agent.exited", json_pack("{s:O}", "exitCode", ec));
        if (d->agent_died) {
            char *tail = srv_acp_client_stderr(d->acp);
            drv_fail(d, "agent_exited", "%s exited with code %d mid-run%s%.700s", d->agent, exit_code_of(status),
                     tail && *tail ? "; its last stderr lines: " : "", tail ? tail : "");
            free(tail);
        }
        if (json_is_null(code) && !d->canceled && !d->timed_out && !d->stopping) {
            json_decref(code);
            code = ec;
        } else {
            json_decref(ec);
        }
    }
    srv_acp_client_close(d->acp);
    d->acp = NULL;
    return code;
}

/* ---- after the agent ------------------------------------------------------------------------ */
/* The agent's own session files under its home, for a resume. */
static const char *state_dir_of(const char *agent)
{
    static const char *const dirs[][2] = {
        { "mock", ".local/state/cell-mock-agent" }, { "codex", ".codex" },
        { "opencode", ".local/share/opencode" },    { "claude", ".claude" },
    };
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        if (strcmp(dirs[i][0], agent) == 0)
            return dirs[i][1];
    return NULL;
}

/* Every process of the cell but its init, again until none is left (one
 * that forks while kill(-1) walks the table may escape one round): the
 * diff and the state must not race the agent.  The same process then
 * tars the agent's state (its session files, for a resume) out of the
 * cell: one spawn where two were, on the path from the agent's end to
 * the result. */
static const char kill_and_tar[] =
    "i=0; while [ $i -lt 100 ] && kill -KILL -1 2>/dev/null; do i=$((i+1)); done\n"
    "[ -n \"$1\" ] && cd /root && [ -d \"$1\" ] || exit 0\n"
    "exec tar -cf - -- \"$1\"";

static void stop_and_save(drive *d)
{
    const char *rel = state_dir_of(d->agent);
    char dir[PATH_MAX], path[PATH_MAX + 32] = "";
    _cleanup_close_ int fd = -1;
    if (rel && srv_runs_dir(d->r, dir, sizeof dir) == 0) {
        snprintf(path, sizeof path, "%s/agent-state.tar", dir);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    }
    /* tar runs in the cell: its links are the cell's business, not ours. */
    const char *argv[] = { "/bin/sh", "-c", kill_and_tar, "sh", fd >= 0 ? rel : "", NULL };
    drv_out o = { .fd = fd, .cap = fd >= 0 ? DRV_STATE_MAX : 4096 };
    cell_error e = { 0 };
    int status = 0;
    int rc = drv_exec(d, argv, &o, 0, DRV_SETUP_MS, &status, &e);
    if (fd < 0) {
        free(o.buf);
        if (rc < 0)
            srv_slog(SLOG_WARN, SLOG_F("run", d->r->id), "run %s: killing the agent's processes: %s", d->r->id, e.message);
        return;
    }
    if (rc < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || o.len == 0) {
        if (rc < 0)
            srv_runs_emit(d->r, "error", json_pack("{s:s}", "message", "the agent's state was not saved (over 64 MiB "
                                               "or unreadable): the run cannot be resumed"));
        unlink(path);
    }
}

static void check_schema(drive *d)
{
    json_t *schema = json_object_get(d->spec, "output_schema");
    if (!schema || json_is_null(schema))
        return;
    const char *out = jstr(d->result, "output");
    json_error_t jerr;
    json_t *v = out ? json_loads(out, JSON_DECODE_ANY, &jerr) : NULL;
    char why[512] = "";
    if (!v)
        snprintf(why, sizeof why, "the output is not JSON: %s", out ? jerr.text : "no output");
    else if (srv_runagent_schema_validate(schema, v, why, sizeof why) < 0 && !why[0])
        snprintf(why, sizeof why, "the output does not match output_schema");
    if (why[0]) {
        json_decref(v);
        drv_fail(d, "output_schema", "%s", why);
        return;
    }
    json_object_set_new(d->result, "structuredOutput", v);
}

static void compute_diff(drive *d)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    json_t *diff = json_object();
    cell_error e = { 0 };
    rundiff_limits lim = { .inline_max = DRV_DIFF_INLINE, .artifact_max = DRV_DIFF_ARTIFACT };
    if (srv_runs_dir(d->r, dir, sizeof dir) < 0)
        util_fail(&e, EIO, "the run's directory");
    else {
        snprintf(path, sizeof path, "%s/diff.patch", dir);
        if (srv_rundiff_compute(d->sc, &lim, path, diff, &e) == 0) {
            json_object_update(d->result, diff);
            json_decref(diff);
            return;
        }
    }
    json_decref(diff);
    drv_fail(d, "diff", "the diff: %s", e.message);
}

/* keep "lane": the import, on a thread of its own, reads the tar the cell
 * makes from a pipe: nothing is staged on the host's disk, and the lane's
 * size (the tenant's disk quota) bounds what it takes. */
typedef struct lane_keep {
    drive     *d;
    int        fd;                  /* the pipe's read end, closed when done */
    char       name[8 + RUN_ID_LEN];
    store_lane lane;
    int        rc;
    char       why[512];
} lane_keep;

static void *keep_lane_import(void *arg)
{
    lane_keep *k = arg;
    sreq q = { .s = k->d->s };
    snprintf(q.tok.tenant, sizeof q.tok.tenant, "%s", k->d->r->tenant);
    q.tok.admin = k->d->r->admin;
    const char *image = jstr(k->d->spec, "image");
    k->rc = srv_lanes_import_fd(&q, k->name, image ? image : "host", k->fd, &k->lane);
    if (k->rc < 0) {
        const char *why = json_string_value(json_object_get(q.audit, "error"));
        snprintf(k->why, sizeof k->why, "%s", why ? why : "out of memory");
    }
    json_decref(q.audit);
    close(k->fd);                   /* a tar still writing gets EPIPE, not a wait */
    return NULL;
}

/* keep "lane": /workspace, as tar makes it in the cell, into a new lane
 * run-<id> of the tenant (lanes.c's import: quota, default size), so a
 * cell booted on it sees it at RUN_WORKSPACE. */
static void keep_lane(drive *d)
{
    lane_keep k = { .d = d, .fd = -1 };
    snprintf(k.name, sizeof k.name, "run-%s", d->r->id);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        drv_fail(d, "keep", "pipe: %s", strerror(errno));
        return;
    }
    k.fd = p[0];
    pthread_t t;
    int pe = pthread_create(&t, NULL, keep_lane_import, &k);
    if (pe != 0) {
        close(p[0]);
        close(p[1]);
        drv_fail(d, "keep", "the import thread: %s", strerror(pe));
        return;
    }
    const char *argv[] = { "/bin/sh", "-c", "cd / && exec tar -cf - workspace", NULL };
    drv_out o = { .fd = p[1], .cap = DRV_LANE_MAX };
    cell_error e = { 0 };
    int status = 0;
    int rc = drv_exec(d, argv, &o, 0, DRV_SETUP_MS, &status, &e);
    if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        rc = util_fail(&e, EIO, "tar of the workspace failed: %.300s", o.err);
    close(p[1]);                    /* the end of the tar (or of a cut one: the import fails) */
    pthread_join(t, NULL);
    if (k.rc < 0) {                 /* its reason first: a refused import also cuts the tar */
        drv_fail(d, "keep", "keeping the workspace as lane %s: %s", k.name, k.why);
        return;
    }
    /* Made, even if tar then said something went wrong: named, so that
     * the client sees (and may delete) what it holds. */
    json_object_set_new(d->result, "lane", json_string(k.lane.name));
    if (rc < 0)
        drv_fail(d, "keep", "lane %s may lack part of the workspace: %s", k.name, e.message);
}

/* keep: "nothing" deletes the cell, "cell" leaves it running, "lane"
 * keeps the workspace as a lane and deletes the cell. */
static void keep_or_remove(drive *d)
{
    const char *keep = jstr(d->spec, "keep");
    if (!d->sc)
        return;
    if (keep && strcmp(keep, "cell") == 0 && srv_registry_running(d->sc)) {
        json_object_set_new(d->result, "cellId", json_string(d->sc->id));
        return;
    }
    if (keep && strcmp(keep, "lane") == 0 && srv_registry_running(d->sc) && !d->stopping)
        keep_lane(d);
    cell_error e = { 0 };
    if (srv_registry_delete(d->sc, 1, &e) < 0 && e.code != ENOENT)
        srv_slog(SLOG_WARN, SLOG_F("run", d->r->id, "cell", d->sc->id), "run %s: deleting cell %s: %s", d->r->id, d->sc->id,
             e.message);
}

/* ---- the thread ------------------------------------------------------------------------------ */
static enum run_status final_status(drive *d, json_t *code)
{
    if (d->canceled)
        return RUN_CANCELED;
    if (d->timed_out)
        return RUN_TIMED_OUT;
    if (d->error || !json_is_integer(code) || json_integer_value(code) != 0)
        return RUN_FAILED;
    return RUN_SUCCEEDED;
}

static int64_t run_deadline(drive *d)
{
    json_t *t = json_object_get(d->spec, "timeout_s");
    int64_t ms = (json_is_integer(t) && json_integer_value(t) > 0 ? json_integer_value(t) : DRV_DEFAULT_TIMEOUT) * 1000;
    uint64_t ceiling = d->s->opt.limits.run_timeout_ms;
    if (ceiling && (uint64_t)ms > ceiling)
        ms = (int64_t)ceiling;
    return d->r->created_ms + ms;
}

static int prepare(drive *d)
{
    char why[512] = "";
    if (srv_runagent_plan_build(d->agent, d->spec, &d->plan, why, sizeof why) < 0)
        return drv_fail(d, "invalid_request", "%s", why[0] ? why : "the agent's plan failed"), -1;
    d->have_plan = 1;
    if (!(d->norm = srv_runagent_norm_new()))
        return drv_fail(d, "internal", "out of memory"), -1;
    if (find_prev(d) < 0 || boot_cell(d) < 0)
        return -1;
    srv_runs_set_cell(d->r, d->sc->id);
    srv_runs_mark(d->r, "cellReadyMs");
    cell_error e = { 0 };
    if (fill_workspace(d, &e) < 0)
        return drv_fail(d, "workspace", "the workspace: %s", e.message), -1;
    if (d->prev && restore_prev(d, &e) < 0)
        return drv_fail(d, "resume", "resuming run %s: %s", d->prev->id, e.message), -1;
    if (install_agent(d, &e) < 0)
        return drv_fail(d, "agent", "installing %s: %s", d->agent, e.message), -1;
    if (write_plan(d, &e) < 0)
        return drv_fail(d, "agent", "writing the agent's files: %s", e.message), -1;
    return 0;
}

static void usage_snapshot(scell *sc, struct scell_usage *out)
{
    pthread_mutex_lock(&sc->ulock);
    *out = sc->usage;
    pthread_mutex_unlock(&sc->ulock);
}

/* The agent's own usage when it reports one ("agent"); else what the
 * egress engine metered of the model's responses since the agent started
 * ("egress": codex-acp reports none), which the agent cannot fake. */
static void usage_result(drive *d)
{
    if (json_is_object(json_object_get(d->result, "usage"))) {
        json_object_set_new(d->result, "usageSource", json_string("agent"));
        return;
    }
    json_object_set_new(d->result, "usageSource", json_null());
    if (!d->sc)
        return;
    struct scell_usage now, *b = &d->usage_base;
    usage_snapshot(d->sc, &now);
    if (!now.metered || (now.input == b->input && now.output == b->output && now.total == b->total && b->metered))
        return;
    json_object_set_new(d->result, "usage",
                        json_pack("{s:I, s:I, s:I}", "inputTokens", (json_int_t)(now.input - b->input), "outputTokens",
                                  (json_int_t)(now.output - b->output), "totalTokens",
                                  (json_int_t)(now.total - b->total)));
    json_object_set_new(d->result, "usageSource", json_string("egress"));
}

void *srv_rundrive_main(void *arg)
{
    drive d = { .r = arg };
    d.s = d.r->s;
    d.spec = d.r->spec;
    d.agent = jstr(d.spec, "agent");
    d.deadline = run_deadline(&d);
    d.result = json_pack("{s:n, s:s, s:n, s:n, s:s, s:i, s:b, s:[], s:[]}", "exitCode", "output", "", "sessionId",
                         "usage", "diff", "", "diffBytes", 0, "diffTruncated", 0, "changedFiles", "artifacts");
    json_t *code = json_null();
    srv_runs_set_status(d.r, RUN_STARTING);
    if (!d.agent)
        drv_fail(&d, "invalid_request", "the run names no agent");
    else if (prepare(&d) == 0 && !drv_stop(&d)) {
        srv_runs_set_status(d.r, RUN_RUNNING);
        usage_snapshot(d.sc, &d.usage_base);
        srv_runs_mark(d.r, "agentStartedMs");
        srv_runs_emit(d.r, "run.started", json_pack("{s:s, s:s}", "agent", d.agent, "cellId", d.sc->id));
        json_decref(code);
        code = strcmp(d.agent, "shell") == 0 ? run_shell(&d)
                                             : run_acp(&d, d.prev_session[0] ? d.prev_session : NULL);
        srv_runs_mark(d.r, "agentDoneMs");
    }
    drv_stop(&d);                   /* a cancel or timeout during the setup counts too */
    if (d.stopping)
        drv_fail(&d, "daemon_stopping", "the daemon stopped during the run");
    if (d.canceled || d.timed_out) {
        json_decref(code);
        code = json_null();
    }
    srv_runs_set_status(d.r, RUN_FINISHING);
    if (d.sc && srv_registry_running(d.sc) && !d.stopping) {
        stop_and_save(&d);
        compute_diff(&d);
    } else if (d.sc && !d.stopping && !d.canceled && !d.timed_out) {
        drv_fail(&d, "cell_gone", "the run's cell %s stopped or was deleted during the run", d.sc->id);
    }
    if (strcmp(d.agent ? d.agent : "", "shell") != 0 && d.norm) {
        json_t *out = srv_runagent_output(d.norm);
        json_t *usage = srv_runagent_usage(d.norm);
        if (json_is_string(out))
            json_object_set(d.result, "output", out);
        if (json_is_object(usage))
            json_object_set(d.result, "usage", usage);
        json_decref(out);
        json_decref(usage);
    }
    usage_result(&d);
    if (!d.canceled && !d.timed_out)
        check_schema(&d);
    keep_or_remove(&d);
    json_object_set(d.result, "exitCode", code);
    json_object_set_new(d.result, "durationMs", json_integer(srv_now_ms() - d.r->created_ms));
    if (d.error)
        json_object_set(d.result, "error", d.error);
    enum run_status st = final_status(&d, code);
    json_decref(code);
    json_decref(d.error);
    if (d.have_plan)
        srv_runagent_plan_free(&d.plan);
    if (d.norm)
        srv_runagent_norm_free(d.norm);
    if (d.sc)
        srv_registry_put(d.sc);
    if (d.prev)
        srv_runs_put(d.prev);
    srv_runs_mark(d.r, "finishedMs");
    srv_runs_finish(d.r, st, d.result);
    return NULL;
}
