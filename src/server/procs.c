/* procs.c: processes in a cell, as sandbox-agent 0.4 serves them: buffered
 * runs, long-running processes with logs (JSON and SSE), input, signals, resize. */
#include "server/handlers.h"
#include "server/slog.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#define SSE_KEEPALIVE_MS 15000
#define PROCS_INPUT_WAIT_MS 5000  /* how long an input write waits for a process to read its stdin */
#define PROCS_READ_MAX      16384 /* one read of a process's output, one log entry at most */

static int64_t at_most(int64_t v, uint64_t ceiling)
{
    return (uint64_t)v > ceiling ? (int64_t)ceiling : v;
}

void srv_procs_config_default(struct proc_config *c, const server_limits *l)
{
    *c = (struct proc_config){
        .max_concurrent = at_most(64, l->procs), .default_run_timeout_ms = at_most(30000, l->run_timeout_ms),
        .max_run_timeout_ms = at_most(300000, l->run_timeout_ms), .max_output_bytes = at_most(1 << 20, l->output_bytes),
        .max_log_bytes = at_most(10 << 20, l->log_bytes), .max_input_bytes = at_most(65536, l->input_bytes),
    };
}

/* What every process's log entries cost in daemon memory together, against
 * --limit log.memory: per-process caps times processes times cells could
 * otherwise add up past what the host has. */
static atomic_ullong log_memory_used;

uint64_t srv_procs_log_memory(void)
{
    return atomic_load(&log_memory_used);
}

static size_t plog_cost(const plog *e)
{
    return sizeof *e + e->len + sizeof e;    /* the entry, its data, its slot */
}

/* ---- small pieces --------------------------------------------------------------- */
static json_t *base64_json(const void *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (!out)
        return NULL;
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    json_t *v = json_string(out);
    free(out);
    return v;
}

/* Strict standard base64 (RFC 4648 section 4, padded), with the
 * reference's error messages; libcrypto's decoder accepts whitespace. */
static int base64_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    return ch == '+' ? 62 : ch == '/' ? 63 : -1;
}

int srv_procs_base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len, char *why, size_t why_size)
{
    /* Symbols first, then length, then padding: the order the reference
     * checks in, so the same input gets the same message. */
    size_t first_pad = len;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '=') {
            if (first_pad == len)
                first_pad = i;
            continue;
        }
        if (base64_value(in[i]) < 0) {
            snprintf(why, why_size, "invalid base64 input: Invalid symbol %d, offset %zu.", (unsigned char)in[i], i);
            return -1;
        }
        if (first_pad < i) {
            snprintf(why, why_size, "invalid base64 input: Invalid symbol 61, offset %zu.", first_pad);
            return -1;
        }
    }
    if (len % 4 == 1) {
        snprintf(why, why_size, "invalid base64 input: Invalid input length: %zu", len);
        return -1;
    }
    if (len % 4 || len - first_pad > 2) {
        snprintf(why, why_size, "invalid base64 input: Invalid padding");
        return -1;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = 0;
        for (int k = 0; k < 4; k++)
            v = v << 6 | (uint32_t)(in[i + k] == '=' ? 0 : base64_value(in[i + k]));
        out[o++] = (unsigned char)(v >> 16);
        if (in[i + 2] != '=')
            out[o++] = (unsigned char)(v >> 8);
        if (in[i + 3] != '=')
            out[o++] = (unsigned char)v;
    }
    *out_len = o;
    return 0;
}

/* Output bytes as a JSON string: invalid UTF-8 becomes U+FFFD, as the
 * reference's lossy conversion does. */
json_t *srv_procs_lossy_string(const unsigned char *s, size_t len)
{
    size_t n;
    char *out = util_utf8_lossy(s, len, &n);
    json_t *v = out ? json_stringn(out, n) : NULL;
    free(out);
    return v;
}

static const char *stream_name(int stream)
{
    return stream == PLOG_STDOUT ? "stdout" : stream == PLOG_STDERR ? "stderr" : "pty";
}

json_t *srv_procs_log_json(const plog *e)
{
    return json_pack("{s:I, s:s, s:I, s:o, s:s}", "sequence", (json_int_t)e->seq, "stream", stream_name(e->stream),
                     "timestampMs", (json_int_t)e->ts_ms, "data", base64_json(e->data, e->len),
                     "encoding", "base64");
}

/* ---- the process table -------------------------------------------------------------- */
static void proc_free(sproc *p)
{
    for (size_t i = 0; i < p->n_log; i++) {
        atomic_fetch_sub(&log_memory_used, plog_cost(p->log[i]));
        free(p->log[i]);
    }
    free(p->log);
    free(p->command);
    free(p->cwd);
    json_decref(p->args);
    if (p->stdin_fd >= 0)
        close(p->stdin_fd);
    if (p->pty_fd >= 0)
        close(p->pty_fd);
    if (p->out_fd >= 0)
        close(p->out_fd);
    if (p->err_fd >= 0)
        close(p->err_fd);
    free(p);
}

/* Drop a reference with plock held; returns 1 if the caller must free. */
static int proc_unref_locked(sproc *p) { return --p->refs == 0; }

void srv_procs_put(sproc *p)
{
    if (!p)
        return;
    scell *sc = p->cell;
    pthread_mutex_lock(&sc->plock);
    int last = proc_unref_locked(p);
    pthread_mutex_unlock(&sc->plock);
    if (last)
        proc_free(p);
}

sproc *srv_procs_find(scell *sc, const char *id)
{
    pthread_mutex_lock(&sc->plock);
    sproc *p = sc->procs;
    while (p && (p->hidden || strcmp(p->id, id) != 0))
        p = p->next;
    if (p)
        p->refs++;
    pthread_mutex_unlock(&sc->plock);
    return p;
}

/* 1 if p was in the table (and is no more). */
static int unlink_locked(scell *sc, sproc *p)
{
    for (sproc **pp = &sc->procs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return 1;
        }
    return 0;
}

static void audit_proc(scell *sc, sproc *p, const char *event);

void srv_procs_on_exit(scell *sc, pid_t pid, int status)
{
    sproc *listed = NULL;
    pthread_mutex_lock(&sc->plock);
    for (sproc *p = sc->procs; p; p = p->next)
        if (p->pid == pid && !p->exited) {
            p->exited = 1;
            p->status = status;
            p->exited_ms = srv_now_ms();
            if (!p->hidden) {
                listed = p;
                p->refs++;
            }
            break;
        }
    pthread_cond_broadcast(&sc->pcond);
    pthread_mutex_unlock(&sc->plock);
    if (listed) {
        audit_proc(sc, listed, "exited");
        srv_procs_put(listed);
    }
}

void srv_procs_on_halt(scell *sc)
{
    pthread_mutex_lock(&sc->plock);
    for (sproc *p = sc->procs; p; p = p->next)
        if (!p->exited) {
            p->exited = 1;
            p->status = SIGKILL;         /* as waitpid() reports a kill */
            p->exited_ms = srv_now_ms();
        }
    pthread_cond_broadcast(&sc->pcond);
    pthread_mutex_unlock(&sc->plock);
}

void srv_procs_free_all(scell *sc)
{
    pthread_mutex_lock(&sc->plock);
    sproc *p = sc->procs;
    sc->procs = NULL;
    pthread_mutex_unlock(&sc->plock);
    while (p) {
        sproc *next = p->next;
        srv_procs_put(p);
        p = next;
    }
}

/* Free p's `n` oldest log entries (plock held). */
static void drop_oldest(sproc *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        atomic_fetch_sub(&log_memory_used, plog_cost(p->log[i]));
        p->log_bytes -= p->log[i]->len;
        if (p->log[i]->seq > p->sent_seq)
            p->unsent_bytes -= p->log[i]->len;      /* lost: the follower sees the gap in the sequence */
        free(p->log[i]);
    }
    memmove(p->log, p->log + n, (p->n_log - n) * sizeof *p->log);
    p->n_log -= n;
}

/* The listed process holding the most log bytes, with a reference.  Locks
 * srv.lock, then each cell's plock (the documented order). */
static sproc *largest_log(srv *s)
{
    sproc *best = NULL;
    scell *best_cell = NULL;
    size_t best_bytes = 0;
    pthread_mutex_lock(&s->lock);
    for (scell *sc = s->cells; sc; sc = sc->next) {
        pthread_mutex_lock(&sc->plock);
        for (sproc *x = sc->procs; x; x = x->next)
            if (x->n_log && (!best || x->log_bytes > best_bytes))
                best = x, best_cell = sc, best_bytes = x->log_bytes;
        pthread_mutex_unlock(&sc->plock);
    }
    /* Take the reference only if it is still listed (the cell cannot go
     * while srv.lock is held; the process could have). */
    sproc *found = NULL;
    if (best_cell) {
        pthread_mutex_lock(&best_cell->plock);
        for (sproc *x = best_cell->procs; x && !found; x = x->next)
            if (x == best)
                found = x, x->refs++;
        pthread_mutex_unlock(&best_cell->plock);
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

/* Over --limit log.memory: trim the largest logs, oldest entries first,
 * until a sixteenth below it, so whoever floods loses the most and a
 * quiet process keeps its output.  Each victim gives up at most half of
 * what it holds before the next largest is looked for. */
static void log_reclaim(srv *s, uint64_t budget)
{
    uint64_t target = budget - budget / 16;
    for (int round = 0; round < 64 && atomic_load(&log_memory_used) > target; round++) {
        sproc *v = largest_log(s);
        if (!v)
            return;
        pthread_mutex_lock(&v->cell->plock);
        uint64_t now = atomic_load(&log_memory_used), over = now > target ? now - target : 0, freed = 0;
        size_t keep = v->log_bytes / 2, bytes = 0, drop = 0;
        while (drop < v->n_log && freed < over && v->log_bytes - bytes > keep) {
            freed += plog_cost(v->log[drop]);
            bytes += v->log[drop]->len;
            drop++;
        }
        if (!drop && v->n_log && over)
            drop = 1;                    /* always progress */
        drop_oldest(v, drop);
        pthread_mutex_unlock(&v->cell->plock);
        srv_procs_put(v);
    }
}

static size_t log_max_entries(int64_t max_bytes)
{
    return (size_t)max_bytes / 256 > 1024 ? (size_t)max_bytes / 256 : 1024;
}

/* A paced process's next read waits (plock held) while what its follower
 * has not been sent would, with one more read, push unsent entries out of
 * the log (over half its bytes or entries).  Not before a follower comes
 * (the client attaches right after the create), and no longer once the
 * last follower has gone (pacing ends) or the process has exited with
 * nobody following: then the log drops the oldest entries as usual. */
static int pace_full_locked(const sproc *p, int64_t max_bytes)
{
    uint64_t unsent_n = p->next_seq - p->sent_seq;
    return p->paced && (p->followers > 0 || !p->exited) && unsent_n > 0 &&
           (p->unsent_bytes + PROCS_READ_MAX > (uint64_t)max_bytes / 2 || unsent_n + 1 > log_max_entries(max_bytes) / 2);
}

static void pace_wait(sproc *p)
{
    scell *sc = p->cell;
    pthread_mutex_lock(&sc->plock);
    while (pace_full_locked(p, sc->pconf.max_log_bytes)) {
        struct timespec ts;
        srv_deadline_after(&ts, 1000);
        pthread_cond_timedwait(&sc->pcond, &sc->plock, &ts);
    }
    pthread_mutex_unlock(&sc->plock);
}

static void append_log(sproc *p, int stream, const char *data, size_t len, int64_t max_bytes, uint64_t budget)
{
    plog *e = malloc(sizeof *e + len);
    if (!e)
        return;
    e->stream = stream;
    e->ts_ms = srv_now_ms();
    e->len = len;
    memcpy(e->data, data, len);
    scell *sc = p->cell;
    pthread_mutex_lock(&sc->plock);
    e->seq = ++p->next_seq;
    if (p->n_log == p->cap_log) {
        size_t cap = p->cap_log ? p->cap_log * 2 : 16;
        plog **nl = realloc(p->log, cap * sizeof *nl);
        if (!nl) {
            pthread_mutex_unlock(&sc->plock);
            free(e);
            return;
        }
        p->log = nl;
        p->cap_log = cap;
    }
    p->log[p->n_log++] = e;
    p->log_bytes += len;
    p->unsent_bytes += len;
    uint64_t used = atomic_fetch_add(&log_memory_used, plog_cost(e)) + plog_cost(e);
    /* Keep the newest max_bytes of output; the oldest entries go first.
     * Tiny writes would make many entries, each costing more in memory and
     * in a JSON answer than its data: at most one per 256 bytes of the cap. */
    size_t max_entries = log_max_entries(max_bytes);
    size_t drop = 0;
    while ((p->log_bytes > (size_t)max_bytes && drop + 1 < p->n_log) || p->n_log - drop > max_entries)
        drop_oldest(p, 1), drop++;
    pthread_cond_broadcast(&sc->pcond);
    pthread_mutex_unlock(&sc->plock);
    if (used > budget)
        log_reclaim(sc->s, budget);
}

/* One thread per long-running process drains its output into the log, so
 * a process never blocks on a full pipe while nobody is reading. */
static void *reader_main(void *arg)
{
    sproc *p = arg;
    scell *sc = p->cell;
    char buf[PROCS_READ_MAX];
    struct pollfd fds[2];
    int streams[2], n = 0;
    if (p->pty_fd >= 0) {
        fds[n] = (struct pollfd){ .fd = p->pty_fd, .events = POLLIN };
        streams[n++] = PLOG_PTY;
    } else {
        fds[n] = (struct pollfd){ .fd = p->out_fd, .events = POLLIN };
        streams[n++] = PLOG_STDOUT;
        fds[n] = (struct pollfd){ .fd = p->err_fd, .events = POLLIN };
        streams[n++] = PLOG_STDERR;
    }
    int open_fds = n;
    while (open_fds > 0) {
        if (poll(fds, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (fds[i].fd < 0 || !fds[i].revents)
                continue;
            pace_wait(p);
            ssize_t got = read(fds[i].fd, buf, sizeof buf);
            if (got > 0) {
                pthread_mutex_lock(&sc->plock);
                int64_t max = sc->pconf.max_log_bytes;
                pthread_mutex_unlock(&sc->plock);
                append_log(p, streams[i], buf, (size_t)got, max, sc->s->opt.limits.log_memory);
            } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
                fds[i].fd = -1;        /* EOF, or EIO on a pty whose last user left */
                open_fds--;
            }
        }
    }
    pthread_mutex_lock(&sc->plock);
    p->output_done = 1;
    pthread_cond_broadcast(&sc->pcond);
    pthread_mutex_unlock(&sc->plock);
    srv_procs_put(p);
    srv_registry_put(sc);
    return NULL;
}

/* ---- spawning ----------------------------------------------------------------------- */
typedef struct spawn_req {
    const char *command;
    const char **args;          /* borrowed from the body */
    size_t n_args;
    const char *cwd;
    char **env;                 /* "K=V", owned */
    size_t n_env;
    int tty, interactive, paced;
    uid_t uid;                  /* "user": UID[:GID] in the cell, default 0:0 */
    gid_t gid;
} spawn_req;

static void spawn_req_free(spawn_req *q)
{
    free(q->args);
    srv_strv_free(q->env);
}

/* A cell maps in-cell ids 0..65535; names are the client's to resolve
 * (the cell's /etc/passwd is the cell's, and may lie). */
#define PROCS_ID_LIMIT 65536

static int parse_id(const char *s, char **end, unsigned long *out)
{
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    *out = strtoul(s, end, 10);
    return errno || *out >= PROCS_ID_LIMIT ? -1 : 0;
}

/* "user": "UID" or "UID:GID" (GID 0 when not given). */
static int parse_user(sreq *r, json_t *body, spawn_req *q)
{
    const char *user = NULL;
    if (srv_json_get_str(r, body, "user", 0, &user) < 0)
        return -1;
    if (!user)
        return 0;
    unsigned long uid, gid = 0;
    char *end;
    if (parse_id(user, &end, &uid) < 0 || (*end == ':' && parse_id(end + 1, &end, &gid) < 0) || *end)
        return srv_reply_problem(r, 400, "invalid_request", "user must be UID or UID:GID, numbers from 0 to %d "
                             "(names are resolved by the client), e.g. \"1000:1000\"", PROCS_ID_LIMIT - 1), -1;
    q->uid = (uid_t)uid;
    q->gid = (gid_t)gid;
    return 0;
}

static int parse_spawn(sreq *r, json_t *body, spawn_req *q)
{
    memset(q, 0, sizeof *q);
    if (srv_json_get_str(r, body, "command", 1, &q->command) < 0 || srv_json_get_strv(r, body, "args", &q->args, &q->n_args) < 0 ||
        srv_json_get_str(r, body, "cwd", 0, &q->cwd) < 0 || srv_json_get_env(r, body, "env", &q->env, &q->n_env) < 0 ||
        srv_json_get_bool(r, body, "tty", &q->tty) < 0 || srv_json_get_bool(r, body, "interactive", &q->interactive) < 0 ||
        srv_json_get_bool(r, body, "backpressure", &q->paced) < 0)
        return -1;
    if (!q->command[0])
        return srv_reply_problem(r, 400, "invalid_request", "command must not be empty"), -1;
    return parse_user(r, body, q);
}

/* PATH, HOME and LANG, then the cell's env, then the request's: later wins. */
static char **build_env(scell *sc, const spawn_req *q)
{
    static const char *const base[] = {
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
        "TERM=xterm-256color", NULL,
    };
    json_t *cell_env = json_object_get(sc->spec, "env");
    size_t cap = 5 + json_object_size(cell_env) + q->n_env, n = 0;
    char **env = calloc(cap + 1, sizeof *env);
    if (!env)
        return NULL;
    const char *key;
    json_t *val;
    for (const char *const *b = base; *b; b++)
        if (!(env[n++] = strdup(*b)))
            goto fail;
    json_object_foreach(cell_env, key, val)
        if (asprintf(&env[n++], "%s=%s", key, json_string_value(val)) < 0) {
            env[--n] = NULL;
            goto fail;
        }
    for (size_t i = 0; i < q->n_env; i++)
        if (!(env[n++] = strdup(q->env[i])))
            goto fail;
    /* Drop earlier duplicates of a name. */
    for (size_t i = 0; i < n; i++) {
        size_t klen = strcspn(env[i], "=");
        for (size_t j = i + 1; j < n; j++)
            if (strncmp(env[i], env[j], klen + 1) == 0) {
                free(env[i]);
                memmove(env + i, env + i + 1, (n - i) * sizeof *env);
                n--, i--;
                break;
            }
    }
    return env;
fail:
    srv_strv_free(env);
    return NULL;
}

typedef struct spawn_out {
    pid_t pid;
    int stdin_fd, out_fd, err_fd, pty_fd;
} spawn_out;

static void close_pair(int p[2])
{
    if (p[0] >= 0)
        close(p[0]);
    if (p[1] >= 0)
        close(p[1]);
}

/* Start the process with the pid recorded in `p` before any exit can be
 * delivered (exits are only dispatched when io is released). */
static int spawn_proc(scell *sc, sproc *p, const spawn_req *q, int want_stdin, spawn_out *o, cell_error *err)
{
    int in[2] = { -1, -1 }, out[2] = { -1, -1 }, errp[2] = { -1, -1 };
    *o = (spawn_out){ .stdin_fd = -1, .out_fd = -1, .err_fd = -1, .pty_fd = -1 };
    if (!q->tty && ((want_stdin && pipe2(in, O_CLOEXEC) < 0) || pipe2(out, O_CLOEXEC) < 0 ||
                    pipe2(errp, O_CLOEXEC) < 0)) {
        util_fail_errno(err, "pipe");
        goto fail;
    }
    const char **argv = calloc(q->n_args + 2, sizeof *argv);
    char **env = build_env(sc, q);
    if (!argv || !env) {
        free(argv);
        srv_strv_free(env);
        util_fail(err, ENOMEM, "out of memory");
        goto fail;
    }
    argv[0] = q->command;
    for (size_t i = 0; i < q->n_args; i++)
        argv[i + 1] = q->args[i];
    const char *cwd = q->cwd ? q->cwd : json_string_value(json_object_get(sc->spec, "cwd"));
    cell_proc_spec spec = {
        .argv = argv, .env = (const char *const *)env, .cwd = cwd ? cwd : "/",
        .uid = q->uid, .gid = q->gid,
        .stdin_fd = in[0], .stdout_fd = out[1], .stderr_fd = errp[1],
        .tty = q->tty, .rows = 24, .cols = 80,
    };
    srv_scell_io_lock(sc);
    int rc;
    if (!sc->c || sc->dead) {
        rc = util_fail(err, ECONNRESET, "cell %s is stopped", sc->id);
    } else {
        rc = cell_spawn(sc->c, &spec, &o->pid, &o->pty_fd, err);
        if (rc == 0) {
            pthread_mutex_lock(&sc->plock);
            p->pid = o->pid;
            pthread_mutex_unlock(&sc->plock);
        }
    }
    srv_scell_io_unlock(sc);
    free(argv);
    srv_strv_free(env);
    if (rc < 0)
        goto fail;
    if (in[0] >= 0)
        close(in[0]);
    if (out[1] >= 0)
        close(out[1]);
    if (errp[1] >= 0)
        close(errp[1]);
    o->stdin_fd = in[1];
    o->out_fd = out[0];
    o->err_fd = errp[0];
    return 0;
fail:
    close_pair(in);
    close_pair(out);
    close_pair(errp);
    return -1;
}

static int reply_spawn_error(sreq *r, const cell_error *e)
{
    if (e->code == ECONNRESET)
        return srv_reply_error(r, e);
    /* The reference reports spawn failures as a 502 "stream_error" with the OS error. */
    return srv_reply_problem(r, 502, "stream_error", "failed to spawn process: %s (os error %d)", strerror(e->code), e->code);
}

/* Exited processes stay listed until deleted (as in sandbox-agent), so a
 * cell spawning short ones forever would grow the table without end: past
 * `keep` listed processes the oldest exited one, output read, is dropped.
 * Returns it when that was its last reference (the caller frees it). */
static sproc *evict_oldest_exited_locked(scell *sc, uint64_t keep)
{
    uint64_t listed = 0;
    sproc *oldest = NULL;
    for (sproc *x = sc->procs; x; x = x->next)     /* newest first */
        if (!x->hidden) {
            listed++;
            if (x->exited && x->output_done)
                oldest = x;
        }
    if (listed <= keep || !oldest)
        return NULL;
    unlink_locked(sc, oldest);
    return proc_unref_locked(oldest) ? oldest : NULL;
}

static sproc *proc_new(scell *sc, const spawn_req *q, int hidden)
{
    sproc *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->cell = sc;
    p->hidden = hidden;
    p->stdin_fd = p->pty_fd = p->out_fd = p->err_fd = -1;
    p->command = strdup(q->command);
    p->cwd = q->cwd ? strdup(q->cwd) : NULL;
    p->args = json_array();
    for (size_t i = 0; i < q->n_args; i++)
        json_array_append_new(p->args, json_string(q->args[i]));
    p->tty = q->tty;
    p->interactive = q->interactive;
    p->paced = q->paced;
    p->created_ms = srv_now_ms();
    p->refs = 1;                    /* the table's */
    if (!p->command || !p->args || (q->cwd && !p->cwd)) {
        proc_free(p);
        return NULL;
    }
    pthread_mutex_lock(&sc->plock);
    if (!hidden)
        snprintf(p->id, sizeof p->id, "proc_%u", ++sc->next_proc);
    p->next = sc->procs;
    sc->procs = p;
    sproc *evicted = hidden ? NULL : evict_oldest_exited_locked(sc, sc->s->opt.limits.procs_kept);
    pthread_mutex_unlock(&sc->plock);
    if (evicted)
        proc_free(evicted);
    return p;
}

/* Remove from the table and drop the table's reference.  Only the caller
 * that unlinks it drops that reference: two DELETEs of one process must not
 * both (the second would free it under the first's feet).  0 if another
 * caller removed it first. */
static int proc_remove(scell *sc, sproc *p)
{
    pthread_mutex_lock(&sc->plock);
    int listed = unlink_locked(sc, p);
    int last = listed && proc_unref_locked(p);
    pthread_mutex_unlock(&sc->plock);
    if (last)
        proc_free(p);
    return listed;
}

static json_t *proc_json_locked(const sproc *p)
{
    json_t *o = json_pack("{s:s, s:s, s:O}", "id", p->id, "command", p->command, "args", p->args);
    if (p->cwd)
        json_object_set_new(o, "cwd", json_string(p->cwd));
    json_object_set_new(o, "tty", json_boolean(p->tty));
    json_object_set_new(o, "interactive", json_boolean(p->interactive));
    json_object_set_new(o, "owner", json_string(p->desktop ? "desktop" : "user"));
    json_object_set_new(o, "status", json_string(p->exited ? "exited" : "running"));
    if (!p->exited)
        json_object_set_new(o, "pid", json_integer(p->pid));
    else if (WIFEXITED(p->status))
        json_object_set_new(o, "exitCode", json_integer(WEXITSTATUS(p->status)));
    else
        json_object_set_new(o, "signal", json_integer(WTERMSIG(p->status)));    /* exitCode stays absent */
    json_object_set_new(o, "createdAtMs", json_integer(p->created_ms));
    if (p->exited)
        json_object_set_new(o, "exitedAtMs", json_integer(p->exited_ms));
    return o;
}

static json_t *proc_json(sproc *p)
{
    pthread_mutex_lock(&p->cell->plock);
    json_t *o = proc_json_locked(p);
    pthread_mutex_unlock(&p->cell->plock);
    return o;
}

int srv_reply_no_process(sreq *r, const char *id)
{
    return srv_reply_problem_details(r, 404, "not_found", json_pack("{s:s, s:s}", "id", id, "resource", "process"),
                                 "process %s", id);
}

/* The {id} process of the request's cell, or a 404 already queued. */
static sproc *find_proc(sreq *r)
{
    const char *id = srv_router_param(&r->m, "id");
    sproc *p = srv_procs_find(r->cell, id);
    if (!p)
        srv_reply_no_process(r, id);
    return p;
}

/* ---- handlers ------------------------------------------------------------------------ */
int srv_h_cell_health(sreq *r)
{
    return srv_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

static json_t *config_json(const struct proc_config *c)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "maxConcurrentProcesses", (json_int_t)c->max_concurrent,
                     "defaultRunTimeoutMs", (json_int_t)c->default_run_timeout_ms,
                     "maxRunTimeoutMs", (json_int_t)c->max_run_timeout_ms,
                     "maxOutputBytes", (json_int_t)c->max_output_bytes,
                     "maxLogBytesPerProcess", (json_int_t)c->max_log_bytes,
                     "maxInputBytesPerRequest", (json_int_t)c->max_input_bytes);
}

int srv_h_proc_config(sreq *r)
{
    scell *sc = r->cell;
    if (strcmp(r->method, "GET") == 0) {
        pthread_mutex_lock(&sc->plock);
        json_t *o = config_json(&sc->pconf);
        pthread_mutex_unlock(&sc->plock);
        return srv_reply_json(r, 200, o);
    }
    json_t *body;
    if (srv_req_json(r, &body) < 0)
        return MHD_YES;
    struct proc_config c;
    const int64_t big = INT64_MAX;   /* the operator's ceilings are checked below, by name */
    if (srv_json_get_int(r, body, "maxConcurrentProcesses", 1, 0, big, &c.max_concurrent) < 0 ||
        srv_json_get_int(r, body, "defaultRunTimeoutMs", 1, 0, big, &c.default_run_timeout_ms) < 0 ||
        srv_json_get_int(r, body, "maxRunTimeoutMs", 1, 0, big, &c.max_run_timeout_ms) < 0 ||
        srv_json_get_int(r, body, "maxOutputBytes", 1, 0, big, &c.max_output_bytes) < 0 ||
        srv_json_get_int(r, body, "maxLogBytesPerProcess", 1, 0, big, &c.max_log_bytes) < 0 ||
        srv_json_get_int(r, body, "maxInputBytesPerRequest", 1, 0, big, &c.max_input_bytes) < 0) {
        json_decref(body);
        return MHD_YES;
    }
    json_decref(body);
    const char *zero = c.max_concurrent == 0 ? "maxConcurrentProcesses" : c.max_run_timeout_ms == 0 ? "maxRunTimeoutMs"
                     : c.max_output_bytes == 0 ? "maxOutputBytes" : c.max_log_bytes == 0 ? "maxLogBytesPerProcess"
                     : c.max_input_bytes == 0 ? "maxInputBytesPerRequest" : NULL;
    if (zero)
        return srv_reply_problem(r, 400, "invalid_request", "%s must be greater than 0", zero);
    const server_limits *l = &sc->s->opt.limits;
    if (srv_limits_check(r, "maxConcurrentProcesses", (uint64_t)c.max_concurrent, l->procs, "procs") < 0 ||
        srv_limits_check(r, "defaultRunTimeoutMs", (uint64_t)c.default_run_timeout_ms, l->run_timeout_ms, "run.timeoutMs") < 0 ||
        srv_limits_check(r, "maxRunTimeoutMs", (uint64_t)c.max_run_timeout_ms, l->run_timeout_ms, "run.timeoutMs") < 0 ||
        srv_limits_check(r, "maxOutputBytes", (uint64_t)c.max_output_bytes, l->output_bytes, "run.outputBytes") < 0 ||
        srv_limits_check(r, "maxLogBytesPerProcess", (uint64_t)c.max_log_bytes, l->log_bytes, "log.bytesPerProcess") < 0 ||
        srv_limits_check(r, "maxInputBytesPerRequest", (uint64_t)c.max_input_bytes, l->input_bytes, "input.bytes") < 0)
        return MHD_YES;
    if (c.default_run_timeout_ms > c.max_run_timeout_ms)
        c.default_run_timeout_ms = c.max_run_timeout_ms;
    pthread_mutex_lock(&sc->plock);
    sc->pconf = c;
    json_t *o = config_json(&c);
    pthread_mutex_unlock(&sc->plock);
    return srv_reply_json(r, 200, o);
}

/* Read both pipes until EOF or the deadline; keep at most cap bytes of each. */
typedef struct run_output {
    unsigned char *buf[2];          /* NULL until a byte is kept */
    size_t len[2], cap[2];
    int truncated[2];
} run_output;

/* Keep `take` more bytes of stream i.  The buffer grows with the output
 * instead of being the cap (1 MiB by default) up front: two such buffers
 * per run were an mmap and munmap each, most runs print little. */
static int keep_output(run_output *ro, int i, const char *data, size_t take)
{
    size_t need = ro->len[i] + take, have = ro->cap[i];
    if (need > have) {
        size_t grow = have ? have : 4096;
        while (grow < need)
            grow *= 2;
        unsigned char *nb = realloc(ro->buf[i], grow);
        if (!nb)
            return -1;
        ro->buf[i] = nb;
        ro->cap[i] = grow;
    }
    if (take)
        memcpy(ro->buf[i] + ro->len[i], data, take);
    ro->len[i] = need;
    return 0;
}

static int collect_output(int out_fd, int err_fd, size_t cap, int64_t deadline_ms, run_output *ro)
{
    struct pollfd fds[2] = { { .fd = out_fd, .events = POLLIN }, { .fd = err_fd, .events = POLLIN } };
    int open_fds = 2;
    char chunk[16384];
    while (open_fds) {
        int64_t left = deadline_ms - srv_now_ms();
        if (left <= 0)
            return 1;
        int n = poll(fds, 2, left > 1000000 ? 1000000 : (int)left);
        if (n < 0 && errno != EINTR)
            return -1;
        for (int i = 0; n > 0 && i < 2; i++) {
            if (fds[i].fd < 0 || !fds[i].revents)
                continue;
            ssize_t got = read(fds[i].fd, chunk, sizeof chunk);
            if (got <= 0) {
                if (got < 0 && (errno == EINTR || errno == EAGAIN))
                    continue;
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            size_t room = cap - ro->len[i];
            size_t take = (size_t)got < room ? (size_t)got : room;
            if (keep_output(ro, i, chunk, take) < 0)
                return -1;
            if (take < (size_t)got)
                ro->truncated[i] = 1;
        }
    }
    return 0;
}

/* Wait until the process has exited or the deadline passes; 1 if exited. */
static int wait_exited(sproc *p, int64_t deadline_ms)
{
    scell *sc = p->cell;
    pthread_mutex_lock(&sc->plock);
    while (!p->exited) {
        int64_t left = deadline_ms - srv_now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        srv_deadline_after(&ts, left);
        pthread_cond_timedwait(&sc->pcond, &sc->plock, &ts);
    }
    int exited = p->exited;
    pthread_mutex_unlock(&sc->plock);
    return exited;
}

static void signal_proc(scell *sc, sproc *p, int sig)
{
    /* io first: exits are delivered with io held, so the process cannot be
     * reported gone (and its pid reused) between this check and the signal. */
    srv_scell_io_lock(sc);
    pthread_mutex_lock(&sc->plock);
    pid_t pid = p->exited ? 0 : p->pid;
    pthread_mutex_unlock(&sc->plock);
    if (pid && sc->c && !sc->dead)
        cell_signal(sc->c, pid, sig, NULL);
    srv_scell_io_unlock(sc);
}

int srv_h_proc_run(sreq *r)
{
    scell *sc = r->cell;
    json_t *body;
    spawn_req q;
    int64_t timeout = 0, max_out = -1;
    if (srv_req_json(r, &body) < 0)
        return MHD_YES;
    if (parse_spawn(r, body, &q) < 0 || srv_json_get_int(r, body, "timeoutMs", 0, 0, INT64_MAX, &timeout) < 0 ||
        srv_json_get_int(r, body, "maxOutputBytes", 0, 0, INT64_MAX, &max_out) < 0)
        goto out;
    q.tty = q.interactive = 0;
    pthread_mutex_lock(&sc->plock);
    struct proc_config c = sc->pconf;
    pthread_mutex_unlock(&sc->plock);
    if (timeout == 0 || timeout > c.max_run_timeout_ms)
        timeout = timeout == 0 ? c.default_run_timeout_ms : c.max_run_timeout_ms;
    if (max_out < 0 || max_out > c.max_output_bytes)
        max_out = c.max_output_bytes;
    srv_req_audit(r, "command", json_string(q.command));

    int64_t start = srv_now_ms();
    sproc *p = proc_new(sc, &q, 1);
    if (!p) {
        srv_reply_problem(r, 500, "internal", "out of memory");
        goto out;
    }
    spawn_out o;
    cell_error e = { 0 };
    if (spawn_proc(sc, p, &q, 0, &o, &e) < 0) {
        proc_remove(sc, p);
        reply_spawn_error(r, &e);
        goto out;
    }
    run_output ro = { 0 };
    int64_t deadline = start + timeout;
    int rc = collect_output(o.out_fd, o.err_fd, (size_t)max_out, deadline, &ro);
    close(o.out_fd);
    close(o.err_fd);
    int timed_out = rc == 1 || !wait_exited(p, deadline);
    if (timed_out) {
        signal_proc(sc, p, SIGKILL);
        wait_exited(p, srv_now_ms() + 2000);   /* reaped by init; keeps the table small */
    }
    pthread_mutex_lock(&sc->plock);
    int status = p->status, exited = p->exited;
    pthread_mutex_unlock(&sc->plock);
    proc_remove(sc, p);
    if (rc < 0) {
        free(ro.buf[0]);
        free(ro.buf[1]);
        srv_reply_problem(r, 500, "internal", "reading the process output failed: %s", strerror(errno));
        goto out;
    }
    json_t *res = json_object();
    json_object_set_new(res, "exitCode", !timed_out && exited && WIFEXITED(status) ? json_integer(WEXITSTATUS(status))
                                                                                    : json_null());
    json_object_set_new(res, "timedOut", json_boolean(timed_out));
    json_object_set_new(res, "stdout", srv_procs_lossy_string(ro.buf[0], ro.len[0]));
    json_object_set_new(res, "stderr", srv_procs_lossy_string(ro.buf[1], ro.len[1]));
    json_object_set_new(res, "stdoutTruncated", json_boolean(ro.truncated[0]));
    json_object_set_new(res, "stderrTruncated", json_boolean(ro.truncated[1]));
    json_object_set_new(res, "durationMs", json_integer(srv_now_ms() - start));
    free(ro.buf[0]);
    free(ro.buf[1]);
    srv_req_audit(r, "exitCode", json_object_get(res, "exitCode") ? json_incref(json_object_get(res, "exitCode")) : NULL);
    srv_reply_json(r, 200, res);
out:
    spawn_req_free(&q);
    json_decref(body);
    return MHD_YES;
}

static void audit_proc(scell *sc, sproc *p, const char *event)
{
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kind", "process", "event", event, "tenant", sc->tenant,
                            "cell", sc->id, "process", p->id, "command", p->command);
    /* The exit is written by the watcher under plock while this runs. */
    pthread_mutex_lock(&sc->plock);
    int exited = p->exited, status = p->status;
    int64_t duration = p->exited_ms - p->created_ms;
    pthread_mutex_unlock(&sc->plock);
    if (rec && exited) {
        if (WIFEXITED(status))
            json_object_set_new(rec, "exitCode", json_integer(WEXITSTATUS(status)));
        else
            json_object_set_new(rec, "signal", json_integer(WTERMSIG(status)));
        json_object_set_new(rec, "durationMs", json_integer(duration));
    }
    store_audit_append(sc->s->st, rec);
    json_decref(rec);
}

static sproc *start_listed(scell *sc, const spawn_req *q, int desktop, int *reader_failed, cell_error *err);

int srv_h_proc_create(sreq *r)
{
    scell *sc = r->cell;
    json_t *body;
    spawn_req q;
    if (srv_req_json(r, &body) < 0)
        return MHD_YES;
    if (parse_spawn(r, body, &q) < 0)
        goto out;
    srv_req_audit(r, "command", json_string(q.command));
    pthread_mutex_lock(&sc->plock);
    int64_t running = 0, limit = sc->pconf.max_concurrent;
    for (sproc *x = sc->procs; x; x = x->next)
        running += !x->hidden && !x->exited;
    pthread_mutex_unlock(&sc->plock);
    if (running >= limit) {
        srv_reply_problem(r, 409, "conflict", "max concurrent process limit reached (%lld)", (long long)limit);
        goto out;
    }
    cell_error e = { 0 };
    int reader_failed = 0;
    sproc *p = start_listed(sc, &q, 0, &reader_failed, &e);
    if (!p) {
        if (reader_failed || e.code == ENOMEM)
            srv_reply_problem(r, 500, "internal", "%s", e.message);
        else
            reply_spawn_error(r, &e);
        goto out;
    }
    srv_req_audit(r, "process", json_string(p->id));
    srv_reply_json(r, 200, proc_json(p));
out:
    spawn_req_free(&q);
    json_decref(body);
    return MHD_YES;
}

/* Start a listed process with its output reader, as POST /processes does;
 * the table holds it (owner "desktop" when desktop).  NULL with err set;
 * *reader_failed when the process started but its reader could not (it
 * was killed). */
static sproc *start_listed(scell *sc, const spawn_req *q, int desktop, int *reader_failed, cell_error *err)
{
    sproc *p = proc_new(sc, q, 0);
    if (!p) {
        util_fail(err, ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_lock(&sc->plock);
    p->desktop = desktop;
    pthread_mutex_unlock(&sc->plock);
    spawn_out o;
    if (spawn_proc(sc, p, q, 1, &o, err) < 0) {
        proc_remove(sc, p);
        return NULL;
    }
    /* Input is written with a deadline (srv_procs_write_input); the reader polls
     * before it reads, so the pty may be non-blocking too. */
    int in_fd = o.pty_fd >= 0 ? o.pty_fd : o.stdin_fd;
    int fl = in_fd >= 0 ? fcntl(in_fd, F_GETFL) : 0;
    if (fl >= 0 && in_fd >= 0)
        fl = fcntl(in_fd, F_SETFL, fl | O_NONBLOCK);
    if (fl < 0)
        srv_slog(SLOG_WARN, SLOG_F("cell", sc->id), "a process's stdin stays blocking: %s", strerror(errno));
    pthread_mutex_lock(&sc->plock);
    p->stdin_fd = o.stdin_fd;
    p->out_fd = o.out_fd;
    p->err_fd = o.err_fd;
    p->pty_fd = o.pty_fd;
    p->rows = 24, p->cols = 80;
    p->refs++;                          /* the reader's */
    pthread_mutex_unlock(&sc->plock);
    /* The reader keeps the cell record alive too. */
    pthread_mutex_lock(&sc->s->lock);
    sc->refs++;
    pthread_mutex_unlock(&sc->s->lock);
    if (util_thread_detached(reader_main, p) != 0) {
        signal_proc(sc, p, SIGKILL);
        srv_procs_put(p);
        srv_registry_put(sc);
        proc_remove(sc, p);
        *reader_failed = 1;
        util_fail(err, EAGAIN, "could not start the output reader");
        return NULL;
    }
    audit_proc(sc, p, "started");
    return p;
}

sproc *srv_procs_start_desktop(scell *sc, const char *const *argv, const char *const *env, cell_error *err)
{
    spawn_req q = { .command = argv[0], .args = (const char **)argv + 1 };
    while (q.args[q.n_args])
        q.n_args++;
    q.env = (char **)env;                   /* borrowed: never freed here */
    while (env && env[q.n_env])
        q.n_env++;
    int reader_failed = 0;
    sproc *p = start_listed(sc, &q, 1, &reader_failed, err);
    if (p) {
        pthread_mutex_lock(&sc->plock);
        p->refs++;                          /* the caller's */
        pthread_mutex_unlock(&sc->plock);
    }
    return p;
}

int srv_h_proc_list(sreq *r)
{
    scell *sc = r->cell;
    const char *owner = srv_req_query(r, "owner");
    if (owner && strcmp(owner, "user") != 0 && strcmp(owner, "desktop") != 0 && strcmp(owner, "system") != 0)
        return srv_reply_problem(r, 400, "invalid_request", "owner must be one of: user, desktop, system");
    json_t *arr = json_array();
    pthread_mutex_lock(&sc->plock);
    size_t n = 0;
    for (sproc *p = sc->procs; p; p = p->next)
        n += !p->hidden;
    /* The table is newest-first; clients expect creation order. */
    const sproc **all = calloc(n ? n : 1, sizeof *all);
    size_t i = n;
    for (sproc *p = sc->procs; all && p; p = p->next)
        if (!p->hidden)
            all[--i] = p;
    /* "system" would be the daemon's own helpers, which are never listed. */
    for (i = 0; all && i < n; i++)
        if (!owner || strcmp(owner, all[i]->desktop ? "desktop" : "user") == 0)
            json_array_append_new(arr, proc_json_locked(all[i]));
    pthread_mutex_unlock(&sc->plock);
    free(all);
    return srv_reply_json(r, 200, json_pack("{s:o}", "processes", arr));
}

int srv_h_proc_get(sreq *r)
{
    sproc *p = find_proc(r);
    if (!p)
        return MHD_YES;
    int ret = srv_reply_json(r, 200, proc_json(p));
    srv_procs_put(p);
    return ret;
}

static int query_u64(sreq *r, const char *key, uint64_t *out, int *present)
{
    const char *v = srv_req_query(r, key);
    *present = v != NULL;
    if (!v)
        return 0;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-' || v[0] == '+') {
        srv_reply_problem(r, 400, "invalid_request", "query parameter \"%s\" must be a non-negative integer", key);
        return -1;
    }
    *out = n;
    return 0;
}

static int query_bool(sreq *r, const char *key, int *out)
{
    const char *v = srv_req_query(r, key);
    if (!v)
        return 0;
    if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) {
        *out = v[0] == 't';
        return 0;
    }
    srv_reply_problem(r, 400, "invalid_request", "query parameter \"%s\" must be true or false", key);
    return -1;
}

/* stream filter: -1 combined (stdout and stderr, as the reference has
 * it: a terminal's output is only in "pty"), else a PLOG_* value. */
static int entry_matches(const plog *e, int filter, uint64_t since)
{
    return e->seq > since && (filter < 0 ? e->stream != PLOG_PTY : e->stream == filter);
}

/* ---- SSE log following ------------------------------------------------------------------ */
typedef struct follow_state {
    sproc   *p;
    int      filter;
    uint64_t after;             /* last sequence sent */
    char    *pending;           /* formatted bytes not yet handed to MHD */
    size_t   pending_len, pending_off;
    int      done;
    char     token_id[16];      /* whose stream: it ends when that token is revoked */
} follow_state;

static void follow_free(void *cls)
{
    follow_state *f = cls;
    scell *sc = f->p->cell;
    pthread_mutex_lock(&sc->plock);
    if (--f->p->followers == 0)
        f->p->paced = 0;        /* the client has gone: the log drops old output again */
    pthread_cond_broadcast(&sc->pcond);
    pthread_mutex_unlock(&sc->plock);
    srv_procs_put(f->p);
    free(f->pending);
    free(f);
}

/* A follower's formatted backlog is built this much at a time: the replay of
 * a full log (maxLogBytesPerProcess as base64 JSON) per open follow would
 * otherwise be a copy per connection. */
#define FOLLOW_CHUNK (256u << 10)

/* Format matching entries after f->after into f->pending, up to about
 * FOLLOW_CHUNK bytes (plock held); the rest comes at the next call. */
/* A follower has been sent everything up to `seq`: what is unsent shrinks
 * and a paced reader may read on. */
static void mark_sent_locked(sproc *p, uint64_t seq)
{
    if (seq <= p->sent_seq)
        return;
    for (size_t i = 0; i < p->n_log; i++)
        if (p->log[i]->seq > p->sent_seq && p->log[i]->seq <= seq)
            p->unsent_bytes -= p->log[i]->len;
    p->sent_seq = seq;
    pthread_cond_broadcast(&p->cell->pcond);
}

static void follow_collect_locked(follow_state *f)
{
    sproc *p = f->p;
    size_t cap = 0;
    for (size_t i = 0; i < p->n_log; i++) {
        const plog *e = p->log[i];
        if (!entry_matches(e, f->filter, f->after))
            continue;
        if (f->pending_len >= FOLLOW_CHUNK)
            return;                      /* more to send: f->after stays at the last one formatted */
        json_t *o = srv_procs_log_json(e);
        char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!text)
            break;
        size_t need = strlen(text) + 32;
        if (f->pending_len + need > cap) {
            cap = (f->pending_len + need) * 2;
            char *nb = realloc(f->pending, cap);
            if (!nb) {
                free(text);
                break;
            }
            f->pending = nb;
        }
        f->pending_len += (size_t)sprintf(f->pending + f->pending_len, "event: log\ndata: %s\n\n", text);
        free(text);
        f->after = e->seq;
    }
    if (p->n_log && p->log[p->n_log - 1]->seq > f->after)
        f->after = p->log[p->n_log - 1]->seq;   /* entries of other streams */
}

static ssize_t follow_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    follow_state *f = cls;
    scell *sc = f->p->cell;
    if (f->pending_off == f->pending_len) {
        free(f->pending);
        f->pending = NULL;
        f->pending_len = f->pending_off = 0;
        if (f->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&sc->plock);
        int64_t until = srv_now_ms() + SSE_KEEPALIVE_MS;
        for (;;) {
            follow_collect_locked(f);
            mark_sent_locked(f->p, f->after);
            if (f->pending_len)
                break;
            if ((f->p->exited && f->p->output_done) || srv_conns_stream_over(sc->s, f->token_id)) {
                f->done = 1;
                break;
            }
            if (srv_now_ms() >= until)
                break;
            struct timespec ts;
            srv_deadline_after(&ts, until - srv_now_ms());
            pthread_cond_timedwait(&sc->pcond, &sc->plock, &ts);
        }
        pthread_mutex_unlock(&sc->plock);
        if (!f->pending_len) {
            if (f->done)
                return MHD_CONTENT_READER_END_OF_STREAM;
            /* A comment line keeps proxies from timing out, and a write
             * to a vanished client ends this connection. */
            static const char keepalive[] = ": keepalive\n\n";
            size_t n = sizeof keepalive - 1 < max ? sizeof keepalive - 1 : max;
            memcpy(buf, keepalive, n);
            return (ssize_t)n;
        }
    }
    size_t n = f->pending_len - f->pending_off;
    if (n > max)
        n = max;
    memcpy(buf, f->pending + f->pending_off, n);
    f->pending_off += n;
    return (ssize_t)n;
}

int srv_h_proc_logs(sreq *r)
{
    const char *stream = srv_req_query(r, "stream");
    int filter = -1, follow = 0, has_since, has_tail;
    uint64_t since = 0, tail = 0;
    if (stream) {
        if (strcmp(stream, "stdout") == 0)
            filter = PLOG_STDOUT;
        else if (strcmp(stream, "stderr") == 0)
            filter = PLOG_STDERR;
        else if (strcmp(stream, "pty") == 0)
            filter = PLOG_PTY;
        else if (strcmp(stream, "combined") != 0)
            return srv_reply_problem(r, 400, "invalid_request", "stream must be one of: stdout, stderr, combined, pty");
    }
    if (query_u64(r, "since", &since, &has_since) < 0 || query_u64(r, "tail", &tail, &has_tail) < 0 ||
        query_bool(r, "follow", &follow) < 0)
        return MHD_YES;
    sproc *p = find_proc(r);
    if (!p)
        return MHD_YES;
    scell *sc = r->cell;
    if (!stream && p->tty)
        filter = PLOG_PTY, stream = "pty";
    /* tail: only the last N matching entries of what exists now. */
    pthread_mutex_lock(&sc->plock);
    size_t first = 0, matching = 0;
    for (size_t i = 0; i < p->n_log; i++)
        matching += entry_matches(p->log[i], filter, since);
    if (has_tail && tail < matching) {
        size_t skip = matching - tail;
        for (first = 0; first < p->n_log && skip; first++)
            skip -= entry_matches(p->log[first], filter, since);
    }
    uint64_t after = first > 0 ? p->log[first - 1]->seq : since;
    if (after < since)
        after = since;
    if (!follow) {
        json_t *arr = json_array();
        for (size_t i = first; i < p->n_log; i++)
            if (entry_matches(p->log[i], filter, after))
                json_array_append_new(arr, srv_procs_log_json(p->log[i]));
        pthread_mutex_unlock(&sc->plock);
        json_t *o = json_pack("{s:s, s:s, s:o}", "processId", p->id, "stream", stream ? stream : "combined",
                              "entries", arr);
        srv_procs_put(p);
        return srv_reply_json(r, 200, o);
    }
    pthread_mutex_unlock(&sc->plock);
    follow_state *f = calloc(1, sizeof *f);
    if (!f) {
        srv_procs_put(p);
        return srv_reply_problem(r, 500, "internal", "out of memory");
    }
    f->p = p;
    f->filter = filter;
    f->after = after;
    pthread_mutex_lock(&sc->plock);
    p->followers++;
    pthread_mutex_unlock(&sc->plock);
    snprintf(f->token_id, sizeof f->token_id, "%s", r->tok.id);
    return srv_reply_event_stream(r, follow_read, f, follow_free);
}

int srv_procs_write_input(sproc *p, const void *data, size_t len, cell_error *err)
{
    scell *sc = p->cell;
    pthread_mutex_lock(&sc->plock);
    int fd = p->exited ? -1 : p->pty_fd >= 0 ? p->pty_fd : p->stdin_fd;
    int dupfd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    int closed = !p->exited && fd < 0;
    pthread_mutex_unlock(&sc->plock);
    if (fd < 0)
        return closed ? util_fail(err, EPIPE, "the process's input was closed (\"eof\": true)")
                      : util_fail(err, ESRCH, "process is not running");
    if (dupfd < 0)
        return util_fail_errno(err, "dup");
    /* The fd is non-blocking: a process that stops reading its stdin
     * costs a request PROCS_INPUT_WAIT_MS, not a daemon thread for ever. */
    ssize_t n = util_write_all_until(dupfd, data, len, PROCS_INPUT_WAIT_MS);
    int saved = errno;
    close(dupfd);
    if (n < 0 && saved == ETIMEDOUT)
        return util_fail(err, ETIMEDOUT, "the process has not read its input for %d s (its stdin is full)",
                         PROCS_INPUT_WAIT_MS / 1000);
    if (n < 0) {
        errno = saved;
        return util_fail_errno(err, "writing to the process");
    }
    return 0;
}

/* "eof": close the stdin pipe once the data is written, so that a reader
 * sees its input end (a terminal has none: send ^D). */
static int close_input(sproc *p, cell_error *err)
{
    scell *sc = p->cell;
    pthread_mutex_lock(&sc->plock);
    int rc = p->exited ? util_fail(err, ESRCH, "process is not running")
           : p->tty    ? util_fail(err, ENOTTY, "a terminal has no end of input: send ^D (\"BA==\") instead of \"eof\"")
                       : 0;
    if (rc == 0 && p->stdin_fd >= 0) {
        close(p->stdin_fd);         /* srv_procs_write_input writes to a dup taken under plock */
        p->stdin_fd = -1;
    }
    pthread_mutex_unlock(&sc->plock);
    return rc;
}

int srv_h_proc_input(sreq *r)
{
    json_t *body;
    const char *data = NULL, *encoding = NULL;
    int eof = 0;
    if (srv_req_json(r, &body) < 0)
        return MHD_YES;
    if (srv_json_get_str(r, body, "data", 1, &data) < 0 || srv_json_get_str(r, body, "encoding", 0, &encoding) < 0 ||
        srv_json_get_bool(r, body, "eof", &eof) < 0) {
        json_decref(body);
        return MHD_YES;
    }
    size_t in_len = json_string_length(json_object_get(body, "data")), len = 0;
    unsigned char *bytes = malloc(in_len + 1);
    char why[128];
    int ret = MHD_YES;
    if (!bytes) {
        ret = srv_reply_problem(r, 500, "internal", "out of memory");
        goto out;
    }
    if (!encoding || strcmp(encoding, "base64") == 0) {
        if (srv_procs_base64_decode(data, in_len, bytes, &len, why, sizeof why) < 0) {
            ret = srv_reply_problem(r, 400, "invalid_request", "%s", why);
            goto out;
        }
    } else if (strcmp(encoding, "utf8") == 0 || strcmp(encoding, "text") == 0) {
        memcpy(bytes, data, in_len);
        len = in_len;
    } else {
        ret = srv_reply_problem(r, 400, "invalid_request", "encoding must be one of: base64, utf8, text");
        goto out;
    }
    pthread_mutex_lock(&r->cell->plock);
    int64_t max = r->cell->pconf.max_input_bytes;
    pthread_mutex_unlock(&r->cell->plock);
    if ((int64_t)len > max) {
        ret = srv_reply_problem(r, 413, "invalid_request", "input payload exceeds maxInputBytesPerRequest (%lld)", (long long)max);
        goto out;
    }
    sproc *p = find_proc(r);
    if (!p)
        goto out;
    cell_error e = { 0 };
    if ((len > 0 || !eof) && srv_procs_write_input(p, bytes, len, &e) < 0)
        ret = e.code == ESRCH ? srv_reply_problem(r, 409, "conflict", "process is not running")
                              : srv_reply_problem(r, 409, "conflict", "%s", e.message);
    else if (eof && close_input(p, &e) < 0)
        ret = e.code == ENOTTY ? srv_reply_problem(r, 400, "invalid_request", "eof: %s", e.message)
                               : srv_reply_problem(r, 409, "conflict", "%s", e.message);
    else
        ret = srv_reply_json(r, 200, json_pack("{s:I}", "bytesWritten", (json_int_t)len));
    srv_procs_put(p);
out:
    free(bytes);
    json_decref(body);
    return r->responded ? MHD_YES : ret;
}

static int signal_and_wait(sreq *r, int sig)
{
    uint64_t wait_ms = 2000;        /* the reference's default */
    int has_wait;
    if (query_u64(r, "waitMs", &wait_ms, &has_wait) < 0)
        return MHD_YES;
    sproc *p = find_proc(r);
    if (!p)
        return MHD_YES;
    signal_proc(r->cell, p, sig);
    if (wait_ms > 600000)
        wait_ms = 600000;
    if (wait_ms)
        wait_exited(p, srv_now_ms() + (int64_t)wait_ms);
    int ret = srv_reply_json(r, 200, proc_json(p));
    srv_procs_put(p);
    return ret;
}

int srv_h_proc_stop(sreq *r) { return signal_and_wait(r, SIGTERM); }
int srv_h_proc_kill(sreq *r) { return signal_and_wait(r, SIGKILL); }

int srv_h_proc_delete(sreq *r)
{
    sproc *p = find_proc(r);
    if (!p)
        return MHD_YES;
    scell *sc = r->cell;
    pthread_mutex_lock(&sc->plock);
    int exited = p->exited;
    pthread_mutex_unlock(&sc->plock);
    int ret;
    if (!exited)
        ret = srv_reply_problem(r, 409, "conflict", "process is still running; stop or kill it before delete");
    else if (proc_remove(sc, p))
        ret = srv_reply_empty(r, 204);
    else
        ret = srv_reply_no_process(r, p->id);   /* a concurrent delete won */
    srv_procs_put(p);
    return ret;
}

int srv_procs_resize(sproc *p, uint16_t rows, uint16_t cols, cell_error *err)
{
    scell *sc = p->cell;
    pthread_mutex_lock(&sc->plock);
    int tty = p->tty, exited = p->exited;
    pid_t pid = p->pid;
    pthread_mutex_unlock(&sc->plock);
    if (!tty || exited) {
        util_fail(err, !tty ? ENOTTY : ESRCH, "%s", !tty ? "process is not running in tty mode" : "process is not running");
        return -2;
    }
    srv_scell_io_lock(sc);
    int rc = sc->c && !sc->dead ? cell_resize(sc->c, pid, rows, cols, err)
                                : util_fail(err, ECONNRESET, "cell %s is stopped", sc->id);
    srv_scell_io_unlock(sc);
    if (rc < 0)
        return -1;
    pthread_mutex_lock(&sc->plock);
    p->rows = rows, p->cols = cols;
    pthread_mutex_unlock(&sc->plock);
    return 0;
}

int srv_h_proc_resize(sreq *r)
{
    json_t *body;
    int64_t cols = 0, rows = 0;
    if (srv_req_json(r, &body) < 0)
        return MHD_YES;
    int bad = srv_json_get_int(r, body, "cols", 1, 0, 65535, &cols) < 0 || srv_json_get_int(r, body, "rows", 1, 0, 65535, &rows) < 0;
    json_decref(body);
    if (bad)
        return MHD_YES;
    sproc *p = find_proc(r);
    if (!p)
        return MHD_YES;
    cell_error e = { 0 };
    int rc = srv_procs_resize(p, (uint16_t)rows, (uint16_t)cols, &e), ret;
    if (rc == 0)
        ret = srv_reply_json(r, 200, json_pack("{s:I, s:I}", "cols", (json_int_t)cols, "rows", (json_int_t)rows));
    else if (rc == -2)
        ret = srv_reply_problem(r, 409, "conflict", "%s", e.message);
    else
        ret = srv_reply_error(r, &e);
    srv_procs_put(p);
    return ret;
}

/* ---- processes of other modules (the ACP proxy's agents) ------------------------------ */
sproc *srv_procs_spawn_piped(scell *sc, const char *const *argv, int fds[3], cell_error *err)
{
    return srv_procs_spawn_piped_at(sc, argv, NULL, fds, err);
}

sproc *srv_procs_spawn_piped_at(scell *sc, const char *const *argv, const char *cwd, int fds[3], cell_error *err)
{
    spawn_req q = { .command = argv[0], .args = (const char **)argv + 1, .cwd = cwd };
    while (q.args[q.n_args])
        q.n_args++;
    sproc *p = proc_new(sc, &q, 1);
    if (!p) {
        util_fail(err, ENOMEM, "out of memory");
        return NULL;
    }
    spawn_out o;
    if (spawn_proc(sc, p, &q, 1, &o, err) < 0) {
        proc_remove(sc, p);
        return NULL;
    }
    pthread_mutex_lock(&sc->plock);
    p->refs++;                      /* the caller's */
    pthread_mutex_unlock(&sc->plock);
    fds[0] = o.stdin_fd;
    fds[1] = o.out_fd;
    fds[2] = o.err_fd;
    return p;
}

void srv_procs_signal(sproc *p, int sig) { signal_proc(p->cell, p, sig); }

int srv_procs_wait_exit(sproc *p, int64_t deadline_ms, int *status)
{
    int exited = wait_exited(p, deadline_ms);
    pthread_mutex_lock(&p->cell->plock);
    *status = p->status;
    pthread_mutex_unlock(&p->cell->plock);
    return exited;
}

void srv_procs_release(sproc *p)
{
    proc_remove(p->cell, p);
    srv_procs_put(p);
}
