/* acp.c: /cells/{cell}/v1/acp, sandbox-agent 0.4.2's ACP proxy, per cell.
 *
 * An instance (a "server" of the reference) is one agent process running
 * inside the cell, spawned as a hidden cell process (procs.c): the cell's
 * environment and working directory, never the daemon's.  POST writes one
 * JSON-RPC envelope as a line to its stdin; a request waits for the agent's
 * response with the same id.  Every line the agent prints goes into a ring
 * (the last ACP_RING_MAX messages, at most ACP_RING_BYTES) that GET streams
 * as SSE, resuming after Last-Event-ID.  One reader thread per instance
 * reads stdout and stderr (the last ACP_STDERR_LINES lines are kept for
 * error.data.agentStderr) and reports the agent's exit.
 *
 * Lifetimes: an instance is referenced by the cell's list (until DELETE,
 * or until its agent is gone and the cell is no longer running), by its
 * reader thread, and by each request and stream using it; the last one
 * frees it.  An instance holds a reference on its cell and its process. */
#include "server/acp.h"
#include "server/agentcfg.h"
#include "server/agents.h"
#include "server/handlers.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#define ACP_RING_MAX       1024
#define ACP_RING_BYTES     (8u << 20)   /* per instance */
#define ACP_TOTAL_BYTES    (256ull << 20) /* every instance's ring together */
#define ACP_LINE_MAX       (4u << 20)   /* a longer stdout line is reported as invalid */
#define ACP_RAW_MAX        1024         /* of an invalid line, in _adapter/invalid_stdout */
#define ACP_STDERR_LINES   16
#define ACP_STDERR_LINE_MAX 1024
#define ACP_MAX_PER_CELL   16
#define ACP_ID_MAX         128
#define ACP_TIMEOUT_MS     120000       /* a request's default wait for its answer */
#define ACP_HEARTBEAT_MS   15000
#define ACP_SLICE_MS       250          /* waits look for revocation and DELETE this often */
#define ACP_TERM_GRACE_MS  1000         /* DELETE: SIGTERM, then SIGKILL */
#define ACP_GET_WAIT_MS    2000         /* a stream opened just before the first POST */

typedef struct acp_msg {
    uint64_t seq;
    size_t   len;
    char     data[];                /* one JSON text, no newline */
} acp_msg;

typedef struct acp_pending {
    char   *key;                    /* the request id, as compact JSON */
    json_t *resp;                   /* set by the reader */
    struct acp_pending *next;
} acp_pending;

typedef struct acp_inst acp_inst;
struct acp_inst {
    scell   *sc;                    /* a reference */
    char     id[ACP_ID_MAX + 1];
    char     agent[16];
    int64_t  created_ms;
    int      refs;                  /* acp_lock */
    int      listed;                /* acp_lock */
    pthread_mutex_t lock;           /* everything below */
    pthread_cond_t  cond;           /* new message, answer, exit, close */
    acp_msg *ring[ACP_RING_MAX];    /* ring[(first + i) % MAX] */
    size_t   first, n, bytes;
    uint64_t next_seq;
    acp_pending *pending;
    char    *err_lines[ACP_STDERR_LINES];
    size_t   err_next;
    int      exited, status, closed;
    pthread_mutex_t wlock;          /* writes to stdin */
    int      in_fd, out_fd, err_fd;
    sproc   *proc;
    /* The daemon's own client (acp_client_*, runs): every message from the
     * agent is also queued here, in order, for the driver thread. */
    int      tapped;
    json_t  *tap;                   /* array of messages not yet taken */
    acp_inst *next;
};

static pthread_mutex_t acp_lock = PTHREAD_MUTEX_INITIALIZER;
static acp_inst *acp_list;
static atomic_int acp_readers;      /* reader threads still running */
static atomic_ullong acp_ring_total; /* bytes in every ring */

/* ---- instances ------------------------------------------------------------------------ */
static void acp_free(acp_inst *in)
{
    atomic_fetch_sub(&acp_ring_total, in->bytes);
    for (size_t i = 0; i < in->n; i++)
        free(in->ring[(in->first + i) % ACP_RING_MAX]);
    for (size_t i = 0; i < ACP_STDERR_LINES; i++)
        free(in->err_lines[i]);
    json_decref(in->tap);
    for (acp_pending *p = in->pending, *next; p; p = next) {
        next = p->next;
        free(p->key);
        json_decref(p->resp);
        free(p);
    }
    if (in->in_fd >= 0)
        close(in->in_fd);
    if (in->out_fd >= 0)
        close(in->out_fd);
    if (in->err_fd >= 0)
        close(in->err_fd);
    if (in->proc)
        srv_procs_release(in->proc);
    srv_registry_put(in->sc);
    pthread_mutex_destroy(&in->lock);
    pthread_mutex_destroy(&in->wlock);
    pthread_cond_destroy(&in->cond);
    free(in);
}

static void acp_put(acp_inst *in)
{
    pthread_mutex_lock(&acp_lock);
    int last = --in->refs == 0;
    pthread_mutex_unlock(&acp_lock);
    if (last)
        acp_free(in);
}

static void unlist_locked(acp_inst *in)
{
    if (!in->listed)
        return;
    for (acp_inst **p = &acp_list; *p; p = &(*p)->next)
        if (*p == in) {
            *p = in->next;
            break;
        }
    in->listed = 0;
    in->refs--;                     /* the list's; the caller holds another */
}

/* The instance `id` of this request's cell, with a reference. */
static acp_inst *acp_find_locked(scell *sc, const char *id)
{
    acp_inst *in = acp_list;
    while (in && (in->sc != sc || strcmp(in->id, id) != 0))
        in = in->next;
    if (in)
        in->refs++;
    return in;
}

static acp_inst *acp_find(scell *sc, const char *id)
{
    pthread_mutex_lock(&acp_lock);
    acp_inst *in = acp_find_locked(sc, id);
    pthread_mutex_unlock(&acp_lock);
    return in;
}

/* Append one message to the ring (lock held), dropping the oldest past
 * any bound: the instance's count and bytes, and the daemon-wide bytes (a
 * busy instance then keeps less history, never more than its bound). */
static void ring_push_locked(acp_inst *in, const char *data, size_t len)
{
    acp_msg *m = malloc(sizeof *m + len + 1);
    if (!m)
        return;
    m->seq = ++in->next_seq;
    m->len = len;
    memcpy(m->data, data, len);
    m->data[len] = '\0';
    while (in->n && (in->n == ACP_RING_MAX || in->bytes + len > ACP_RING_BYTES ||
                     atomic_load(&acp_ring_total) + len > ACP_TOTAL_BYTES)) {
        acp_msg *old = in->ring[in->first];
        in->bytes -= old->len;
        atomic_fetch_sub(&acp_ring_total, old->len);
        free(old);
        in->first = (in->first + 1) % ACP_RING_MAX;
        in->n--;
    }
    in->ring[(in->first + in->n) % ACP_RING_MAX] = m;
    in->n++;
    in->bytes += len;
    atomic_fetch_add(&acp_ring_total, len);
    pthread_cond_broadcast(&in->cond);
}

static void push_json_locked(acp_inst *in, json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (s)
        ring_push_locked(in, s, strlen(s));
    free(s);
}

/* The client's queue: a copy (jansson's reference counts are not atomic).
 * A driver that falls behind holds the reader, and so the agent, back
 * rather than losing a permission request. */
#define ACP_TAP_MAX 4096
static void tap_push_locked(acp_inst *in, json_t *msg)
{
    if (!in->tapped)
        return;
    while (json_array_size(in->tap) >= ACP_TAP_MAX && !in->closed) {
        struct timespec ts;
        srv_deadline_after(&ts, ACP_SLICE_MS);
        pthread_cond_timedwait(&in->cond, &in->lock, &ts);
    }
    if (!in->closed)
        json_array_append_new(in->tap, json_deep_copy(msg));
    pthread_cond_broadcast(&in->cond);
}

static char *id_key(json_t *id) { return json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY); }

/* A line from the agent's stdout. */
static void on_stdout_line(acp_inst *in, const char *line, size_t len, int too_long)
{
    json_error_t jerr;
    json_t *msg = too_long ? NULL : json_loadb(line, len, 0, &jerr);
    pthread_mutex_lock(&in->lock);
    if (!json_is_object(msg)) {
        char raw[ACP_RAW_MAX + 1];
        snprintf(raw, sizeof raw, "%.*s", (int)(len < ACP_RAW_MAX ? len : ACP_RAW_MAX), line);
        const char *why = too_long ? "line too long" : msg ? "not a JSON object" : jerr.text;
        json_t *raw_j = json_stringn(raw, strlen(raw));
        if (!raw_j)
            raw_j = json_string("(not UTF-8)");
        push_json_locked(in, json_pack("{s:s, s:s, s:{s:s, s:o}}", "jsonrpc", "2.0", "method",
                                       "_adapter/invalid_stdout", "params", "error", why, "raw", raw_j));
        pthread_mutex_unlock(&in->lock);
        json_decref(msg);
        return;
    }
    ring_push_locked(in, line, len);
    tap_push_locked(in, msg);
    json_t *id = json_object_get(msg, "id");
    if (id && !json_object_get(msg, "method")) {
        char *key = id_key(id);
        for (acp_pending *p = in->pending; key && p; p = p->next)
            if (!p->resp && strcmp(p->key, key) == 0) {
                /* A copy: jansson's reference counts are not atomic, and
                 * the waiting request thread owns what it answers with. */
                p->resp = json_deep_copy(msg);
                break;
            }
        free(key);
    }
    pthread_mutex_unlock(&in->lock);
    json_decref(msg);
}

static void on_stderr_line(acp_inst *in, const char *line, size_t len)
{
    char *copy = strndup(line, len < ACP_STDERR_LINE_MAX ? len : ACP_STDERR_LINE_MAX);
    if (!copy)
        return;
    pthread_mutex_lock(&in->lock);
    free(in->err_lines[in->err_next]);
    in->err_lines[in->err_next] = copy;
    in->err_next = (in->err_next + 1) % ACP_STDERR_LINES;
    pthread_mutex_unlock(&in->lock);
}

/* The last stderr lines, oldest first, joined by newlines (lock held). */
static json_t *stderr_json_locked(acp_inst *in)
{
    size_t len = 0;
    char *out = NULL;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return json_string("");
    for (size_t i = 0, first = 1; i < ACP_STDERR_LINES; i++) {
        const char *l = in->err_lines[(in->err_next + i) % ACP_STDERR_LINES];
        if (l) {
            fprintf(f, "%s%s", first ? "" : "\n", l);
            first = 0;
        }
    }
    fclose(f);
    json_t *s = out ? json_string(out) : NULL;
    free(out);
    return s ? s : json_string("(not UTF-8)");
}

/* Line splitting for one of the agent's pipes. */
typedef struct line_buf {
    char  *buf;
    size_t len, cap;
    int    skipping;                /* inside a line longer than ACP_LINE_MAX */
    int    eof;
} line_buf;

static int lines_feed(acp_inst *in, int fd, line_buf *lb, int is_stdout)
{
    char chunk[65536];
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : (lb->eof = 1, -1);
    if (n == 0) {
        lb->eof = 1;
        if (lb->len && !lb->skipping)
            is_stdout ? on_stdout_line(in, lb->buf, lb->len, 0) : on_stderr_line(in, lb->buf, lb->len);
        lb->len = 0;
        return 0;
    }
    size_t max = is_stdout ? ACP_LINE_MAX : ACP_STDERR_LINE_MAX;
    for (ssize_t i = 0; i < n; i++) {
        char c = chunk[i];
        if (c == '\n') {
            if (!is_stdout)         /* a long one keeps its start */
                on_stderr_line(in, lb->buf, lb->len);
            else if (lb->skipping || lb->len)
                on_stdout_line(in, lb->buf, lb->len, lb->skipping);
            lb->len = 0;
            lb->skipping = 0;
            continue;
        }
        if (lb->len >= max) {
            /* Past the bound only the start is kept (for the report). */
            lb->skipping = 1;
            continue;
        }
        if (lb->len == lb->cap) {
            size_t cap = lb->cap ? lb->cap * 2 : 4096;
            char *b = realloc(lb->buf, cap);
            if (!b)
                return lb->eof = 1, -1;
            lb->buf = b;
            lb->cap = cap;
        }
        lb->buf[lb->len++] = c;
    }
    return 0;
}

/* The reader: both pipes until EOF (or the agent exited and they are
 * quiet), then the exit.  Holds a reference on the instance. */
static void *reader_main(void *arg)
{
    acp_inst *in = arg;
    line_buf lb[2] = { { 0 }, { 0 } };
    int exited = 0, status = 0;
    int64_t quiet_since = 0;
    for (;;) {
        struct pollfd p[2] = { { .fd = lb[0].eof ? -1 : in->out_fd, .events = POLLIN },
                               { .fd = lb[1].eof ? -1 : in->err_fd, .events = POLLIN } };
        if (lb[0].eof && lb[1].eof)
            break;
        int rc = poll(p, 2, ACP_SLICE_MS);
        if (rc < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2 && rc > 0; i++)
            if (p[i].revents)
                lines_feed(in, p[i].fd, &lb[i], i == 0);
        if (rc > 0)
            continue;
        /* A child of the agent may hold the pipes open after it exited. */
        if (!exited)
            exited = srv_procs_wait_exit(in->proc, srv_now_ms(), &status);
        if (exited && !quiet_since)
            quiet_since = srv_now_ms();
        if (exited && srv_now_ms() - quiet_since >= 2 * ACP_SLICE_MS)
            break;
    }
    free(lb[0].buf);
    free(lb[1].buf);
    /* The pipes are done; the exit itself is reported by cell-init. */
    while (!exited) {
        exited = srv_procs_wait_exit(in->proc, srv_now_ms() + ACP_SLICE_MS, &status);
        pthread_mutex_lock(&in->lock);
        int closed = in->closed;
        pthread_mutex_unlock(&in->lock);
        if (closed && !exited) {
            srv_procs_signal(in->proc, SIGKILL);
            exited = srv_procs_wait_exit(in->proc, srv_now_ms() + 2000, &status);
            break;
        }
    }
    pthread_mutex_lock(&in->lock);
    in->exited = 1;
    in->status = exited ? status : SIGKILL;
    int code = WIFEXITED(in->status) ? WEXITSTATUS(in->status) : -1;
    json_t *params = json_pack("{s:b}", "success", WIFEXITED(in->status) && code == 0);
    json_object_set_new(params, "code", code >= 0 ? json_integer(code) : json_null());
    push_json_locked(in, json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", "_adapter/agent_exited",
                                   "params", params));
    pthread_mutex_unlock(&in->lock);
    /* An instance of a cell that stopped or went away cannot come back:
     * unlisted, and its streams end (they hold the cell otherwise). */
    pthread_mutex_lock(&acp_lock);
    int gone = !srv_registry_running(in->sc);
    if (gone)
        unlist_locked(in);
    pthread_mutex_unlock(&acp_lock);
    if (gone) {
        pthread_mutex_lock(&in->lock);
        in->closed = 1;
        pthread_cond_broadcast(&in->cond);
        pthread_mutex_unlock(&in->lock);
    }
    acp_put(in);
    atomic_fetch_sub(&acp_readers, 1);
    return NULL;
}

void srv_acp_shutdown(void)
{
    /* The cells are halted: every agent is dead, so the readers end soon;
     * they use the server's lock, which must outlive them. */
    for (int i = 0; i < 250 && atomic_load(&acp_readers) > 0; i++) {
        struct timespec ts = { 0, 20 * 1000000L };
        nanosleep(&ts, NULL);
    }
    for (;;) {
        pthread_mutex_lock(&acp_lock);
        acp_inst *in = acp_list;
        if (in) {
            in->refs++;
            unlist_locked(in);
        }
        pthread_mutex_unlock(&acp_lock);
        if (!in)
            break;
        acp_put(in);
    }
}

static int spawn_agent(scell *sc, const char *agent, const char *id, acp_inst **out, cell_error *err)
{
    const char *launcher = srv_agents_launcher(agent);
    const char *const argv[] = { launcher, NULL };
    acp_inst *in = calloc(1, sizeof *in);
    if (!in)
        return util_fail(err, ENOMEM, "out of memory");
    snprintf(in->id, sizeof in->id, "%s", id);
    snprintf(in->agent, sizeof in->agent, "%s", agent);
    in->created_ms = srv_now_ms();
    in->in_fd = in->out_fd = in->err_fd = -1;
    pthread_mutex_init(&in->lock, NULL);
    pthread_mutex_init(&in->wlock, NULL);
    pthread_cond_init(&in->cond, NULL);
    pthread_mutex_lock(&sc->s->lock);
    sc->refs++;
    pthread_mutex_unlock(&sc->s->lock);
    in->sc = sc;
    in->refs = 1;                   /* ours until listed */
    int fds[3];
    in->proc = srv_procs_spawn_piped(sc, argv, fds, err);
    if (!in->proc) {
        acp_free(in);
        return -1;
    }
    in->in_fd = fds[0];
    in->out_fd = fds[1];
    in->err_fd = fds[2];
    /* A write never blocks past its deadline: an agent that stops reading
     * fills the pipe, and the POST answers 504 instead of hanging. */
    int fl = fcntl(in->in_fd, F_GETFL);
    if (fl < 0 || fcntl(in->in_fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        srv_procs_signal(in->proc, SIGKILL);
        acp_free(in);
        return util_fail_errno(err, "agent stdin");
    }
    in->refs++;                     /* the reader's */
    atomic_fetch_add(&acp_readers, 1);
    int pe = util_thread_detached(reader_main, in);
    if (pe != 0) {
        atomic_fetch_sub(&acp_readers, 1);
        srv_procs_signal(in->proc, SIGKILL);
        acp_free(in);
        errno = pe;
        return util_fail_errno(err, "agent reader thread");
    }
    *out = in;
    return 0;
}

/* ---- requests --------------------------------------------------------------------------- */
static int id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > ACP_ID_MAX)
        return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("._-", *p)))
            return 0;
    return 1;
}

static int reply_not_found(sreq *r, const char *id)
{
    return srv_reply_problem_details(r, 404, "session_not_found", json_pack("{s:s}", "sessionId", id),
                                 "%s", id);
}

static int reply_exited_locked(sreq *r, acp_inst *in)
{
    json_t *d = json_pack("{s:s, s:o}", "agent", in->agent, "stderr", stderr_json_locked(in));
    int code = WIFEXITED(in->status) ? WEXITSTATUS(in->status) : -1;
    json_object_set_new(d, "exitCode", code >= 0 ? json_integer(code) : json_null());
    if (WIFSIGNALED(in->status))
        json_object_set_new(d, "signal", json_integer(WTERMSIG(in->status)));
    return srv_reply_problem_details(r, 500, "agent_process_exited", d, "%s (server %s)",
                                 in->agent, in->id);
}

/* Ids being started, so that two first POSTs of one id make one instance
 * without a lock held across a spawn (a slow cell would stall every
 * tenant's starts). */
typedef struct acp_starting {
    scell *sc;
    const char *id;
    struct acp_starting *next;
} acp_starting;
static acp_starting *acp_starts;
static pthread_cond_t acp_started = PTHREAD_COND_INITIALIZER;

static int starting_locked(scell *sc, const char *id, size_t *per_cell)
{
    int found = 0;
    for (acp_starting *x = acp_starts; x; x = x->next)
        if (x->sc == sc) {
            (*per_cell)++;
            found |= strcmp(x->id, id) == 0;
        }
    return found;
}

/* The existing instance `id`, waiting for one being started; with none,
 * *per_cell counts the cell's instances (and starts). */
static acp_inst *find_settled_locked(scell *sc, const char *id, size_t *per_cell)
{
    for (;;) {
        size_t n = 0;
        acp_inst *in = acp_list;
        for (acp_inst *x = acp_list; x; x = x->next)
            n += x->sc == sc;
        while (in && (in->sc != sc || strcmp(in->id, id) != 0))
            in = in->next;
        if (in) {
            in->refs++;
            return in;
        }
        if (!starting_locked(sc, id, &n)) {
            *per_cell = n;
            return NULL;
        }
        pthread_cond_wait(&acp_started, &acp_lock);
    }
}

static acp_inst *start_instance(sreq *r, const char *id, const char *agent)
{
    cell_error e = { 0 };
    agents_install_result res;
    acp_inst *in = NULL;
    /* Lazily, as the reference: the same install as POST .../install (a
     * no-op once the launcher and the cache are there). */
    if (srv_agents_install(r->cell, agent, 0, r->tok.id, NULL, NULL, &res, &e) < 0)
        srv_agents_reply_install_error(r, agent, &res, &e);
    else if (spawn_agent(r->cell, agent, id, &in, &e) < 0)
        e.code == ECONNRESET ? srv_reply_error(r, &e)
                             : srv_reply_problem(r, 502, "stream_error", "failed to spawn agent %s: %s", agent, e.message);
    srv_agents_install_result_free(&res);
    return in;
}

/* Find the instance, or start it on the first POST (with ?agent=). */
static acp_inst *find_or_start(sreq *r, const char *id)
{
    const char *agent = srv_req_query(r, "agent");
    if (agent && !srv_agents_known(agent))
        return srv_reply_unsupported_agent(r, agent), NULL;
    size_t per_cell = 0;
    pthread_mutex_lock(&acp_lock);
    acp_inst *in = find_settled_locked(r->cell, id, &per_cell);
    if (in || !agent || per_cell >= ACP_MAX_PER_CELL) {
        pthread_mutex_unlock(&acp_lock);
        if (in && agent && strcmp(agent, in->agent) != 0) {
            srv_reply_problem_details(r, 409, "conflict", json_pack("{s:s, s:s}", "agent", in->agent, "requested", agent),
                                  "server '%s' already exists for agent '%s'; requested '%s'", id,
                                  in->agent, agent);
            acp_put(in);
            in = NULL;
        } else if (!in && !agent) {
            srv_reply_problem(r, 400, "invalid_request",
                          "missing required 'agent' query parameter for first POST to /v1/acp/%s", id);
        } else if (!in) {
            srv_reply_problem(r, 409, "conflict", "this cell already runs %d ACP servers (DELETE one first)",
                          ACP_MAX_PER_CELL);
        }
        return in;
    }
    acp_starting me = { .sc = r->cell, .id = id, .next = acp_starts };
    acp_starts = &me;
    pthread_mutex_unlock(&acp_lock);
    in = start_instance(r, id, agent);
    pthread_mutex_lock(&acp_lock);
    for (acp_starting **p = &acp_starts; *p; p = &(*p)->next)
        if (*p == &me) {
            *p = me.next;
            break;
        }
    if (in) {
        in->listed = 1;
        in->refs++;                 /* the list's, besides the caller's */
        in->next = acp_list;
        acp_list = in;
    }
    pthread_cond_broadcast(&acp_started);
    pthread_mutex_unlock(&acp_lock);
    if (in)
        srv_req_audit(r, "agent", json_string(agent));
    return in;
}

/* Write one line to the agent's stdin, waiting at most until deadline for
 * room in the pipe.  0, or -1 with errno (EPIPE: the agent is gone). */
static int write_line(acp_inst *in, const char *s, size_t len, int64_t deadline)
{
    pthread_mutex_lock(&in->wlock);
    int rc = 0;
    if (in->in_fd < 0)              /* DELETE closed it */
        rc = -1, errno = EPIPE;
    size_t off = 0;
    while (off < len && rc == 0) {
        struct pollfd p = { .fd = in->in_fd, .events = POLLOUT };
        int64_t left = deadline - srv_now_ms();
        int pr = left > 0 ? poll(&p, 1, (int)(left < ACP_SLICE_MS ? left : ACP_SLICE_MS)) : 0;
        if (pr < 0 && errno != EINTR)
            rc = -1;
        else if (pr == 0 && srv_now_ms() >= deadline)
            rc = -1, errno = ETIMEDOUT;
        else if (pr > 0) {
            ssize_t n = write(in->in_fd, s + off, len - off);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EINTR && errno != EAGAIN)
                rc = -1;
        }
    }
    if (rc < 0 && off > 0) {
        /* Half a line is in the pipe: whatever came next would be glued
         * to it, so the agent's input ends here (later writes: EPIPE). */
        int e = errno;
        close(in->in_fd);
        in->in_fd = -1;
        errno = e;
    }
    pthread_mutex_unlock(&in->wlock);
    return rc;
}

enum { KIND_REQUEST, KIND_NOTIFICATION, KIND_RESPONSE };

static int classify(sreq *r, json_t *msg, int *kind)
{
    json_t *method = json_object_get(msg, "method"), *id = json_object_get(msg, "id");
    if (id && !json_is_string(id) && !json_is_integer(id) && !json_is_null(id))
        return srv_reply_problem(r, 400, "invalid_request", "id must be a string, an integer or null"), -1;
    if (method) {
        if (!json_is_string(method))
            return srv_reply_problem(r, 400, "invalid_request", "method must be a string"), -1;
        *kind = id && !json_is_null(id) ? KIND_REQUEST : KIND_NOTIFICATION;
        return 0;
    }
    if (id && (json_object_get(msg, "result") || json_object_get(msg, "error"))) {
        *kind = KIND_RESPONSE;
        return 0;
    }
    return srv_reply_problem(r, 400, "invalid_request",
                         "not a JSON-RPC request, notification or response"), -1;
}

static int64_t request_timeout(sreq *r, const char *method, int *ok)
{
    const char *t = srv_req_query(r, "timeoutMs");
    *ok = 1;
    if (!t)     /* a prompt takes as long as the model: no default bound */
        return strcmp(method, "session/prompt") == 0 ? -1 : ACP_TIMEOUT_MS;
    char *end;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    uint64_t ceiling = r->s->opt.limits.run_timeout_ms;
    if (errno || *end || v < 1 || (ceiling && (uint64_t)v > ceiling)) {
        *ok = 0;
        srv_reply_problem(r, 400, "invalid_request", "timeoutMs must be an integer from 1 to %llu",
                      (unsigned long long)(ceiling ? ceiling : INT64_MAX));
        return 0;
    }
    return v;
}

/* Unlist and free a pending request; its answer if one came. */
static json_t *pending_drop_locked(acp_inst *in, acp_pending *p)
{
    json_t *resp = p->resp;
    for (acp_pending **pp = &in->pending; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    free(p->key);
    free(p);
    return resp;
}

/* Wait for the answer to `p`: 200 with it, 504, or 500 if the agent exits. */
static int await_response(sreq *r, acp_inst *in, acp_pending *p, int64_t timeout)
{
    int64_t deadline = timeout < 0 ? INT64_MAX : srv_now_ms() + timeout;
    pthread_mutex_lock(&in->lock);
    while (!p->resp && !in->exited && !in->closed && srv_now_ms() < deadline &&
           !srv_conns_stream_over(r->s, r->tok.id)) {
        struct timespec ts;
        int64_t left = deadline - srv_now_ms();
        srv_deadline_after(&ts, left < ACP_SLICE_MS ? left : ACP_SLICE_MS);
        pthread_cond_timedwait(&in->cond, &in->lock, &ts);
    }
    json_t *resp = pending_drop_locked(in, p);
    int rc;
    if (resp) {
        json_t *error = json_object_get(resp, "error");
        if (json_is_object(error)) {
            json_t *data = json_object_get(error, "data");
            if (!data)
                json_object_set_new(error, "data", data = json_object());
            if (json_is_object(data))
                json_object_set_new(data, "agentStderr", stderr_json_locked(in));
        }
        pthread_mutex_unlock(&in->lock);
        return srv_reply_json(r, 200, resp);
    }
    if (in->exited)
        rc = reply_exited_locked(r, in);
    else if (in->closed)
        rc = srv_reply_problem(r, 410, "session_not_found", "server %s was deleted while the request waited", in->id);
    else if (srv_now_ms() >= deadline)
        rc = srv_reply_problem(r, 504, "timeout", "the agent did not answer within %lld ms (its answer, if "
                           "it comes, is still streamed)", (long long)timeout);
    else
        rc = srv_reply_problem(r, 401, "token_invalid", "the token was revoked");
    pthread_mutex_unlock(&in->lock);
    return rc;
}

int srv_h_acp_post(sreq *r)
{
    const char *id = srv_router_param(&r->m, "server");
    if (!id_ok(id))
        return srv_reply_problem(r, 400, "invalid_request", "invalid server id: 1 to %d letters, digits, '.', '_' or '-'",
                             ACP_ID_MAX);
    if (r->body_len == 0)
        return srv_reply_problem(r, 400, "invalid_request", "a JSON-RPC body is required");
    json_error_t jerr;
    json_t *msg = json_loadb(r->body, r->body_len, 0, &jerr);
    if (!msg)
        return srv_reply_problem(r, 400, "invalid_request", "invalid JSON body: %s at line %d column %d",
                             jerr.text, jerr.line, jerr.column);
    int kind, ok;
    if (!json_is_object(msg)) {
        json_decref(msg);
        return srv_reply_problem(r, 400, "invalid_request", "request body must be a JSON-RPC object");
    }
    if (classify(r, msg, &kind) < 0) {
        json_decref(msg);
        return REPLIED(r);
    }
    const char *method = json_string_value(json_object_get(msg, "method"));
    int64_t timeout = request_timeout(r, method ? method : "", &ok);
    acp_inst *in = ok ? find_or_start(r, id) : NULL;
    if (!in) {
        json_decref(msg);
        return REPLIED(r);
    }
    if (method)
        srv_req_audit(r, "method", json_string(method));
    /* Beyond the reference: the MCP servers and skills configured for the
     * session's directory (/config, agentcfg.c).  On failure the request
     * goes on unchanged, as the client sent it. */
    json_t *params = json_object_get(msg, "params");
    if (kind == KIND_REQUEST && strcmp(method, "session/new") == 0 && json_is_object(params))
        srv_agentcfg_prepare_session_new(r->cell, in->agent, params, NULL, &(cell_error){ 0 });
    char *line = json_dumps(msg, JSON_COMPACT);
    acp_pending *p = NULL;
    int rc = -2;
    pthread_mutex_lock(&in->lock);
    if (in->exited || in->closed) {
        rc = in->exited ? reply_exited_locked(r, in) : reply_not_found(r, id);
    } else if (kind == KIND_REQUEST) {
        char *key = id_key(json_object_get(msg, "id"));
        for (acp_pending *x = in->pending; key && x; x = x->next)
            if (strcmp(x->key, key) == 0) {
                rc = srv_reply_problem(r, 409, "conflict", "request id %s is already waiting for an answer", key);
                break;
            }
        if (rc == -2 && key && (p = calloc(1, sizeof *p))) {
            p->key = key;
            key = NULL;
            p->next = in->pending;
            in->pending = p;
        }
        free(key);
    }
    pthread_mutex_unlock(&in->lock);
    json_decref(msg);
    if (rc == -2 && (!line || (kind == KIND_REQUEST && !p)))
        rc = srv_reply_problem(r, 500, "internal", "out of memory");
    if (rc == -2) {
        size_t len = strlen(line);
        line[len] = '\n';           /* json_dumps' NUL becomes the separator */
        int64_t wdl = srv_now_ms() + (timeout < 0 ? ACP_TIMEOUT_MS : timeout);
        int wr = write_line(in, line, len + 1, wdl), werr = errno;
        if (kind == KIND_REQUEST && (wr == 0 || werr == EPIPE)) {
            rc = await_response(r, in, p, timeout);   /* EPIPE: the exit is reported there */
        } else if (wr < 0) {
            if (p) {                /* never sent: nothing will answer it */
                pthread_mutex_lock(&in->lock);
                json_decref(pending_drop_locked(in, p));
                pthread_mutex_unlock(&in->lock);
            }
            rc = werr == EPIPE ? srv_reply_problem(r, 502, "stream_error", "failed writing to agent stdin: %s",
                                               strerror(werr))
                               : srv_reply_problem(r, 504, "timeout", "the agent does not read its input");
        } else {
            rc = srv_reply_empty(r, 202);
        }
    }
    free(line);
    acp_put(in);
    return rc;
}

int srv_h_acp_list(sreq *r)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&acp_lock);
    for (acp_inst *in = acp_list; in; in = in->next)
        if (in->sc == r->cell)
            json_array_append_new(arr, json_pack("{s:s, s:s, s:I}", "serverId", in->id, "agent", in->agent,
                                                 "createdAtMs", (json_int_t)in->created_ms));
    pthread_mutex_unlock(&acp_lock);
    return srv_reply_json(r, 200, json_pack("{s:o}", "servers", arr));
}

/* DELETE's end of an unlisted instance: closed, stdin closed (an agent
 * may end on EOF), then its process group TERM and KILL. */
static void acp_stop(acp_inst *in)
{
    pthread_mutex_lock(&in->lock);
    in->closed = 1;
    pthread_cond_broadcast(&in->cond);
    pthread_mutex_unlock(&in->lock);
    pthread_mutex_lock(&in->wlock);
    if (in->in_fd >= 0)
        close(in->in_fd);
    in->in_fd = -1;
    pthread_mutex_unlock(&in->wlock);
    int status;
    if (!srv_procs_wait_exit(in->proc, srv_now_ms() + 100, &status)) {
        srv_procs_signal(in->proc, SIGTERM);
        if (!srv_procs_wait_exit(in->proc, srv_now_ms() + ACP_TERM_GRACE_MS, &status)) {
            srv_procs_signal(in->proc, SIGKILL);
            srv_procs_wait_exit(in->proc, srv_now_ms() + 500, &status);
        }
    }
}

int srv_h_acp_delete(sreq *r)
{
    const char *id = srv_router_param(&r->m, "server");
    acp_inst *in = id_ok(id) ? acp_find(r->cell, id) : NULL;
    if (!in)
        return reply_not_found(r, id);
    pthread_mutex_lock(&acp_lock);
    int mine = in->listed;
    unlist_locked(in);
    pthread_mutex_unlock(&acp_lock);
    if (!mine) {                    /* a concurrent DELETE got it */
        acp_put(in);
        return reply_not_found(r, id);
    }
    acp_stop(in);
    acp_put(in);
    return srv_reply_empty(r, 204);
}

/* ---- the SSE stream -------------------------------------------------------------------- */
typedef struct acp_follow {
    acp_inst *in;
    uint64_t  after;                /* the last id sent */
    char     *pending;
    size_t    len, off;
    int       done;
    char      token_id[16];
} acp_follow;

static void follow_free(void *cls)
{
    acp_follow *f = cls;
    free(f->pending);
    acp_put(f->in);
    free(f);
}

/* Format every message after f->after (lock held). */
static void follow_collect_locked(acp_follow *f)
{
    acp_inst *in = f->in;
    size_t len = 0;
    char *out = NULL;
    FILE *m = NULL;
    for (size_t i = 0; i < in->n; i++) {
        acp_msg *msg = in->ring[(in->first + i) % ACP_RING_MAX];
        if (msg->seq <= f->after)
            continue;
        if (!m && !(m = open_memstream(&out, &len)))
            return;
        fprintf(m, "event: message\nid: %llu\ndata: %s\n\n", (unsigned long long)msg->seq, msg->data);
        f->after = msg->seq;
        if (ftell(m) > 256 * 1024)   /* a replay goes out in parts */
            break;
    }
    if (m && fclose(m) == 0) {
        f->pending = out;
        f->len = len;
        f->off = 0;
    } else if (m) {
        free(out);
    }
}

static ssize_t follow_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    acp_follow *f = cls;
    acp_inst *in = f->in;
    if (f->off == f->len) {
        free(f->pending);
        f->pending = NULL;
        f->len = f->off = 0;
        if (f->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        int64_t until = srv_now_ms() + ACP_HEARTBEAT_MS;
        pthread_mutex_lock(&in->lock);
        for (;;) {
            if (srv_conns_stream_over(in->sc->s, f->token_id)) {
                f->done = 1;
                break;
            }
            follow_collect_locked(f);       /* what came before a close goes out first */
            if (f->len || srv_now_ms() >= until)
                break;
            if (in->closed) {
                f->done = 1;
                break;
            }
            struct timespec ts;
            srv_deadline_after(&ts, ACP_SLICE_MS);
            pthread_cond_timedwait(&in->cond, &in->lock, &ts);
        }
        pthread_mutex_unlock(&in->lock);
        if (f->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (!f->len) {
            static const char beat[] = ": heartbeat\n\n";
            size_t n = sizeof beat - 1 < max ? sizeof beat - 1 : max;
            memcpy(buf, beat, n);
            return (ssize_t)n;
        }
    }
    size_t n = f->len - f->off < max ? f->len - f->off : max;
    memcpy(buf, f->pending + f->off, n);
    f->off += n;
    return (ssize_t)n;
}

/* The SDK opens its stream together with its first POST: give that POST
 * up to ACP_GET_WAIT_MS to create the server, woken as soon as it is listed
 * (find_or_start's broadcast; polling every 50 ms delayed the first prompt's
 * chunks by up to 50 ms, bench/agents.sh). */
static acp_inst *acp_await(scell *sc, const char *id)
{
    int64_t until = srv_now_ms() + ACP_GET_WAIT_MS;
    pthread_mutex_lock(&acp_lock);
    acp_inst *in = acp_find_locked(sc, id);
    for (int64_t left; !in && (left = until - srv_now_ms()) > 0; in = acp_find_locked(sc, id)) {
        struct timespec ts;
        srv_deadline_after(&ts, left);
        pthread_cond_timedwait(&acp_started, &acp_lock, &ts);
    }
    pthread_mutex_unlock(&acp_lock);
    return in;
}

int srv_h_acp_get(sreq *r)
{
    const char *id = srv_router_param(&r->m, "server");
    const char *last = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID");
    uint64_t after = 0;
    if (last) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(last, &end, 10);
        if (errno || *end || !*last || last[0] == '-')
            return srv_reply_problem(r, 400, "invalid_request", "Last-Event-ID must be a non-negative integer");
        after = v;
    }
    if (!id_ok(id))
        return reply_not_found(r, id);
    acp_inst *in = acp_await(r->cell, id);
    if (!in)
        return reply_not_found(r, id);
    acp_follow *f = calloc(1, sizeof *f);
    if (!f) {
        acp_put(in);
        return srv_reply_problem(r, 500, "internal", "out of memory");
    }
    f->in = in;
    f->after = after;
    snprintf(f->token_id, sizeof f->token_id, "%s", r->tok.id);
    return srv_reply_event_stream(r, follow_read, f, follow_free);
}

/* ---- the daemon's own client (acp.h) ---------------------------------------------------- */
int srv_acp_client_open(scell *sc, const char *agent, const char *id, acp_client **out, cell_error *err)
{
    acp_inst *in = NULL;
    *out = NULL;
    if (!id_ok(id))
        return util_fail(err, EINVAL, "invalid server id %s", id);
    if (spawn_agent(sc, agent, id, &in, err) < 0)
        return -1;
    pthread_mutex_lock(&in->lock);
    in->tap = json_array();
    in->tapped = in->tap != NULL;
    pthread_mutex_unlock(&in->lock);
    pthread_mutex_lock(&acp_lock);
    acp_inst *other = acp_find_locked(sc, id);
    if (!other && in->tapped) {
        in->listed = 1;
        in->refs++;                 /* the list's, besides ours */
        in->next = acp_list;
        acp_list = in;
        pthread_cond_broadcast(&acp_started);
    }
    pthread_mutex_unlock(&acp_lock);
    if (other || !in->tapped) {
        if (other)
            acp_put(other);
        acp_stop(in);
        acp_put(in);
        return other ? util_fail(err, EEXIST, "server %s exists in cell %s", id, sc->id)
                     : util_fail(err, ENOMEM, "out of memory");
    }
    *out = in;
    return 0;
}

/* An answer or notification the agent does not take within this long
 * (its stdin pipe full: it stopped reading) fails, so that a hostile
 * agent cannot hold the driver past a cancel or timeout. */
#define ACP_CLIENT_SEND_MS 5000

/* Write one message as a line (msg stolen), waiting until deadline at most. */
static int client_send(acp_inst *in, json_t *msg, int64_t deadline, cell_error *err)
{
    char *line = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (!line)
        return util_fail(err, ENOMEM, "out of memory");
    size_t len = strlen(line);
    line[len] = '\n';               /* json_dumps' NUL becomes the separator */
    int rc = write_line(in, line, len + 1, deadline);
    int e = errno;
    free(line);
    if (rc < 0)
        return e == EPIPE ? util_fail(err, ECHILD, "the agent's input is closed")
                          : util_fail(err, e, "writing to the agent: %s", strerror(e));
    return 0;
}

int srv_acp_client_notify(acp_client *in, const char *method, json_t *params, cell_error *err)
{
    json_t *msg = json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method", method);
    if (msg && params)
        json_object_set_new(msg, "params", params);
    else
        json_decref(params);
    return client_send(in, msg, srv_now_ms() + ACP_CLIENT_SEND_MS, err);
}

int srv_acp_client_respond(acp_client *in, json_t *id, json_t *result, int code, const char *message, cell_error *err)
{
    json_t *msg = json_pack("{s:s, s:O}", "jsonrpc", "2.0", "id", id);
    if (msg && result)
        json_object_set_new(msg, "result", result);
    else if (msg)
        json_object_set_new(msg, "error", json_pack("{s:i, s:s}", "code", code, "message", message));
    else
        json_decref(result);
    return client_send(in, msg, srv_now_ms() + ACP_CLIENT_SEND_MS, err);
}

/* The oldest queued message (owned), or NULL. */
static json_t *tap_take_locked(acp_inst *in)
{
    if (json_array_size(in->tap) == 0)
        return NULL;
    json_t *m = json_incref(json_array_get(in->tap, 0));
    json_array_remove(in->tap, 0);
    pthread_cond_broadcast(&in->cond);   /* a reader held back by a full queue */
    return m;
}

void srv_acp_client_drain(acp_client *in, int64_t until_ms, acp_client_fn fn, void *user)
{
    for (;;) {
        pthread_mutex_lock(&in->lock);
        json_t *m = tap_take_locked(in);
        while (!m && !in->exited && srv_now_ms() < until_ms) {
            struct timespec ts;
            int64_t left = until_ms - srv_now_ms();
            srv_deadline_after(&ts, left < ACP_SLICE_MS ? left : ACP_SLICE_MS);
            pthread_cond_timedwait(&in->cond, &in->lock, &ts);
            m = tap_take_locked(in);
        }
        pthread_mutex_unlock(&in->lock);
        if (!m)
            return;
        fn(user, m);
        json_decref(m);
    }
}

int srv_acp_client_call(acp_client *in, const char *method, json_t *params, int64_t deadline_ms, acp_client_stop_fn stop,
                    acp_client_fn fn, void *user, json_t **result, cell_error *err)
{
    static atomic_llong next_id;
    long long id = atomic_fetch_add(&next_id, 1) + 1;
    *result = NULL;
    json_t *msg = json_pack("{s:s, s:I, s:s}", "jsonrpc", "2.0", "id", (json_int_t)id, "method", method);
    if (msg && params)
        json_object_set_new(msg, "params", params);
    else
        json_decref(params);
    int64_t wdl = srv_now_ms() + ACP_TIMEOUT_MS;
    if (client_send(in, msg, wdl < deadline_ms ? wdl : deadline_ms, err) < 0)
        return -1;
    for (;;) {
        pthread_mutex_lock(&in->lock);
        json_t *m = tap_take_locked(in);
        int exited = in->exited;
        if (!m && !exited) {
            struct timespec ts;
            srv_deadline_after(&ts, ACP_SLICE_MS);
            pthread_cond_timedwait(&in->cond, &in->lock, &ts);
            m = tap_take_locked(in);
        }
        pthread_mutex_unlock(&in->lock);
        if (m) {
            json_t *mid = json_object_get(m, "id");
            if (!json_object_get(m, "method") && json_is_integer(mid) && json_integer_value(mid) == id) {
                json_t *error = json_object_get(m, "error");
                int rc = 0;
                if (error) {
                    const char *text = json_string_value(json_object_get(error, "message"));
                    rc = util_fail(err, EPROTO, "%s: %.400s", method, text ? text : "error");
                } else {
                    json_t *res = json_object_get(m, "result");
                    *result = res ? json_deep_copy(res) : json_null();
                }
                json_decref(m);
                return rc;
            }
            fn(user, m);
            json_decref(m);
            continue;
        }
        if (exited)
            return util_fail(err, ECHILD, "the agent exited");
        if (srv_now_ms() >= deadline_ms)
            return util_fail(err, ETIMEDOUT, "%s: no answer in time", method);
        if (stop && stop(user))
            return util_fail(err, ECANCELED, "%s: stopped", method);
    }
}

int srv_acp_client_exited(acp_client *in, int *status)
{
    pthread_mutex_lock(&in->lock);
    int done = in->exited && json_array_size(in->tap) == 0;
    *status = in->status;
    pthread_mutex_unlock(&in->lock);
    return done;
}

char *srv_acp_client_stderr(acp_client *in)
{
    pthread_mutex_lock(&in->lock);
    json_t *t = stderr_json_locked(in);
    pthread_mutex_unlock(&in->lock);
    char *out = json_string_value(t) ? strdup(json_string_value(t)) : NULL;
    json_decref(t);
    return out;
}

void srv_acp_client_close(acp_client *in)
{
    pthread_mutex_lock(&acp_lock);
    unlist_locked(in);              /* unless a client's DELETE did */
    pthread_mutex_unlock(&acp_lock);
    acp_stop(in);
    acp_put(in);
}
