/* pods.c: the node endpoint (/v1/pods, cell serve --pods): Kubernetes pods
 * whose egress this daemon decides, relays and audits.  cell-oci registers
 * a pod sandbox's parked init here (src/oci/oci_egress.c) before the pod
 * runs anything; the daemon starts an egress helper in the pod's netns
 * (net_engine_start, pod mode) and stops it at DELETE, when the sandbox's
 * init exits (its pidfd), or when the daemon stops.  docs/kubernetes.md
 * "Egress: the node daemon" has the design, docs/api.md "Pods" the API. */
#include "server/handlers.h"
#include "server/metrics.h"
#include "server/slog.h"
#include "net/net.h"
#include "isolate/isolate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define POD_TENANT       "pods"
#define POD_MAX          512            /* registrations per node (kubelet's default is 110 pods) */
#define POD_ID_MAX       64             /* containerd's sandbox ids are 64 hex digits */
#define POD_META_MAX     253            /* a Kubernetes name, namespace or uid */
#define POD_POLICY_MAX   (64 * 1024)    /* the annotation's text */
#define NODE_TOKEN_PREFIX "cellnode_"
#define NODE_TOKEN_LEN   (sizeof NODE_TOKEN_PREFIX - 1 + 32)

typedef struct spod {
    struct spod *next;
    srv         *s;
    char         id[POD_ID_MAX + 1];
    char         audit_id[24];           /* "pod-" and the id's first 16 characters: the audit's "cell" */
    char         name[POD_META_MAX + 1], ns[POD_META_MAX + 1], uid[POD_META_MAX + 1];
    pid_t        pid;
    uint64_t     start_time;
    int          pidfd;
    int          node_default;           /* the policy is --pod-policy's */
    int          by_operator;            /* the policy is an operator's (PUT .../policy) */
    int64_t      created_ms;
    char         cgroup[256];            /* where the helper was moved (the init's cgroup; memory's on v1) */
    net_engine  *engine;
} spod;

/* One daemon per process: the node endpoint's state is the file's. */
static struct {
    pthread_mutex_t lock;                /* pods, n, closed */
    /* Held by whoever uses a pod's engine outside `lock` (an operator's
     * policy change, which waits on the helper) and by whoever frees a
     * listed pod (DELETE, the watcher): a pod is never freed under a
     * policy change, and changes of one pod apply one at a time.  Taken
     * before `lock`. */
    pthread_mutex_t change;
    spod     *pods;
    size_t    n;
    int       closed;
    int       on;
    srv      *s;
    char      token[NODE_TOKEN_LEN + 1];
    char     *default_policy;            /* --pod-policy's text, checked at start */
    int       wake;                      /* eventfd: the watcher rebuilds its poll set */
    char      dir[4096];                 /* STATE/pods: one record per registration, for a restart */
    pthread_t watcher;
    int       watcher_on;
} P = { .lock = PTHREAD_MUTEX_INITIALIZER, .change = PTHREAD_MUTEX_INITIALIZER, .wake = -1 };

static int      id_valid(const char *id);
static int      init_exited(const struct spod *p);
static int      policy_without_secrets(const char *text, cell_error *err);
static ino_t    netns_of(pid_t pid, dev_t *dev);

/* ---- the node token ----------------------------------------------------------- */
static int token_valid(const char *t, size_t len)
{
    if (len != NODE_TOKEN_LEN || strncmp(t, NODE_TOKEN_PREFIX, sizeof NODE_TOKEN_PREFIX - 1) != 0)
        return 0;
    for (size_t i = sizeof NODE_TOKEN_PREFIX - 1; i < len; i++)
        if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f')))
            return 0;
    return 1;
}

/* Read the token file, or make it (0600, never over an existing file). */
static int token_load(const char *path, cell_error *err)
{
    char buf[NODE_TOKEN_LEN + 2];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        struct stat st;
        ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, buf, sizeof buf) : -1;
        close(fd);
        if (n > 0 && buf[n - 1] == '\n')
            n--;
        if (n < 0 || !token_valid(buf, (size_t)n))
            return util_fail(err, EINVAL, "--node-token-file %s: not a node token (%s and 32 hex digits); "
                             "remove it and restart to make a new one", path, NODE_TOKEN_PREFIX);
        if (st.st_mode & 0077)
            return util_fail(err, EPERM, "--node-token-file %s: mode %03o lets others read it; chmod 600 it",
                             path, (unsigned)(st.st_mode & 0777));
        memcpy(P.token, buf, NODE_TOKEN_LEN);
        P.token[NODE_TOKEN_LEN] = '\0';
        return 0;
    }
    if (errno != ENOENT)
        return util_fail_errno(err, "--node-token-file %s", path);
    unsigned char raw[16];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return util_fail(err, EIO, "getrandom failed: no randomness for the node token");
    int used = snprintf(P.token, sizeof P.token, NODE_TOKEN_PREFIX);
    for (size_t i = 0; i < sizeof raw; i++)
        used += snprintf(P.token + used, sizeof P.token - (size_t)used, "%02x", raw[i]);
    char line[NODE_TOKEN_LEN + 2];
    snprintf(line, sizeof line, "%s\n", P.token);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return util_fail_errno(err, "--node-token-file %s: cannot create it", path);
    int rc = write(fd, line, strlen(line)) == (ssize_t)strlen(line) && fsync(fd) == 0 ? 0 : -1;
    if (rc < 0)
        util_fail_errno(err, "--node-token-file %s: cannot write it", path);
    close(fd);
    if (rc < 0)
        unlink(path);
    return rc;
}

int srv_pods_node_token(sreq *r, const char *bearer)
{
    if (!P.on || !bearer)
        return 0;
    /* The unix socket only: it is root's (0600), the TCP listener anyone's.
     * Told by the connection's own socket (the srv's daemon pointers are
     * set after their threads start). */
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct sockaddr_storage sa;
    socklen_t len_sa = sizeof sa;
    if (!ci || getsockname(ci->connect_fd, (struct sockaddr *)&sa, &len_sa) < 0 || sa.ss_family != AF_UNIX)
        return 0;
    size_t len = strlen(bearer);
    unsigned char diff = len != NODE_TOKEN_LEN;
    for (size_t i = 0; i < NODE_TOKEN_LEN; i++)
        diff |= (unsigned char)(P.token[i] ^ (i < len ? bearer[i] : 0));
    return diff == 0;
}

/* ---- the engine's hooks ------------------------------------------------------------ */
static void pod_event(void *user, const char *json)
{
    spod *p = user;
    json_t *rec = json_loads(json, 0, NULL);
    if (!rec)
        return;
    json_t *out = json_object_get(rec, "bytesOut"), *in = json_object_get(rec, "bytesIn");
    srv_metrics_egress(json_string_value(json_object_get(rec, "event")),
                   json_string_value(json_object_get(rec, "verdict")),
                   json_is_integer(out) ? json_integer_value(out) : -1, json_is_integer(in) ? json_integer_value(in) : -1);
    json_object_del(rec, "usage");      /* pods have no metered usage to account */
    json_object_set_new(rec, "tenant", json_string(POD_TENANT));
    json_object_set_new(rec, "cell", json_string(p->audit_id));
    json_object_set_new(rec, "pod", json_pack("{s:s, s:s, s:s}", "id", p->id, "name", p->name, "namespace", p->ns));
    store_audit_append(p->s->st, rec);
    json_decref(rec);
}

static int pod_decide(void *user, const cell_net_flow *f, const char *url, int timeout_ms)
{
    spod *p = user;
    return srv_egress_decide_as(p->s, POD_TENANT, p->audit_id, 1, f, url, timeout_ms);
}

/* Pods have no secrets (policy_without_secrets refuses a policy naming
 * one); should one get here, the request is refused. */
static int pod_secret(void *user, const char *name, char **value, size_t *len)
{
    (void)user, (void)name, (void)value, (void)len;
    return -1;
}

static void pod_free(spod *p)
{
    if (!p)
        return;
    net_engine_stop(p->engine);
    if (p->pidfd >= 0)
        close(p->pidfd);
    free(p);
}

/* The pod's egress engine, with the hooks every pod has, into *out (the
 * caller sets p->engine where the watcher and DELETE may read it). */
static int engine_start(spod *p, const char *policy, net_engine **out, cell_error *err)
{
    net_hooks hooks = { .decide = pod_decide, .event = pod_event, .secret = pod_secret, .user = p,
                        .upstream_ca_file = p->s->opt.upstream_ca_file, .pod = 1 };
    if (net_engine_start(out, p->pidfd, p->audit_id, policy, &hooks, err) < 0)
        return -1;
    /* What the pod's traffic costs (the helper's threads, TLS buffers,
     * upstream sockets, CPU) is the pod's, as a cell's is the cell's: the
     * helper joins the cgroups of the sandbox's init, as the kernel names
     * them (the sandbox container's, a leaf under kubelet's pod cgroup, so
     * the pod's limits count it and v2's no-internal-process rule holds).
     * Read after the pidfd was taken and checked again after: a pid reused
     * meanwhile is refused.  No move, no pod (fail closed). */
    pid_t helper = net_engine_pid(*out);
    int rc = helper > 0 ? 0 : util_fail(err, ECHILD, "pod %s: its egress helper ended while starting", p->id);
    if (rc == 0 && (rc = isolate_cgroup_join(p->pid, helper, p->cgroup, sizeof p->cgroup, err)) == 0 &&
        init_exited(p))
        rc = util_fail(err, ESRCH, "pod %s: its sandbox's init %d exited while its egress started", p->id,
                       (int)p->pid);
    if (rc == 0)
        return 0;
    net_engine_stop(*out);
    *out = NULL;
    return -1;
}

/* ---- registrations kept across restarts ----------------------------------------
 * STATE/pods/ID.json: what POST was given (the policy's text, or null for
 * the node's), so that a restarted daemon (a DaemonSet's update) polices
 * its pods again, whose netns kept cell's rules with nothing behind them
 * meanwhile (fail closed).  Written under P.lock; removed when the pod is
 * unregistered, kept when the daemon stops. */
static void record_path(char *out, size_t size, const char *id)
{
    snprintf(out, size, "%s/%s.json", P.dir, id);
}

static void record_save(const spod *p, const char *policy)
{
    char path[sizeof P.dir + 96], tmp[sizeof path + 8];
    record_path(path, sizeof path, p->id);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    json_t *o = json_pack("{s:s, s:i, s:I, s:s?, s:s, s:s, s:s, s:b}", "id", p->id, "pid", (int)p->pid, "startTime",
                          (json_int_t)p->start_time, "policy", policy, "name", p->name, "namespace", p->ns, "uid",
                          p->uid, "byOperator", p->by_operator);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    cell_error err = { 0 };
    if (!text || util_write_file(tmp, text, strlen(text), 0600, 1, &err) < 0 || rename(tmp, path) < 0)
        srv_slog(SLOG_WARN, SLOG_F("pod", p->id), "pod %s: its registration is not kept for a restart: %s", p->id,
             text ? (err.message[0] ? err.message : strerror(errno)) : "out of memory");
    free(text);
}

static void record_forget(const char *id)
{
    char path[sizeof P.dir + 96];
    record_path(path, sizeof path, id);
    if (unlink(path) < 0 && errno != ENOENT)
        srv_slog(SLOG_WARN, SLOG_F("pod", id), "pod %s: cannot remove %s: %s", id, path, strerror(errno));
}

/* One record at start: the pod again if its init is the one registered and
 * its policy still passes; else the record goes (and the pod stays cut off
 * until it is recreated). */
static void restore_one(srv *s, const char *file)
{
    char path[sizeof P.dir + 300], why[300] = "";
    snprintf(path, sizeof path, "%s/%s", P.dir, file);
    json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    const char *id = json_string_value(json_object_get(o, "id"));
    json_t *pol = json_object_get(o, "policy");
    const char *policy = json_is_string(pol) ? json_string_value(pol) : P.default_policy;
    json_int_t pid = json_integer_value(json_object_get(o, "pid"));
    json_int_t start = json_integer_value(json_object_get(o, "startTime"));
    spod *p = NULL;
    char idfile[POD_ID_MAX + 8];
    dev_t dev = 0, own_dev = 0;
    cell_error e = { 0 };
    if (!id || !id_valid(id) || snprintf(idfile, sizeof idfile, "%s.json", id) < 0 || strcmp(idfile, file) != 0 ||
        pid <= 0 || pid > INT32_MAX || start <= 0)
        snprintf(why, sizeof why, "not a registration record");
    else if (!policy)
        snprintf(why, sizeof why, "it had the node's policy, and there is no --pod-policy now");
    else if (cell_policy_check_v2(policy, s->opt.tenant_dest_allow, &e) < 0 || policy_without_secrets(policy, &e) < 0)
        snprintf(why, sizeof why, "its policy is refused now: %.200s", e.message);
    else if (!(p = calloc(1, sizeof *p)))
        snprintf(why, sizeof why, "out of memory");
    else {
        p->s = s;
        p->pid = (pid_t)pid;
        p->start_time = (uint64_t)start;
        p->node_default = !json_is_string(pol);
        p->by_operator = json_is_true(json_object_get(o, "byOperator")) && json_is_string(pol);
        snprintf(p->id, sizeof p->id, "%s", id);
        snprintf(p->audit_id, sizeof p->audit_id, "pod-%.16s", id);
        snprintf(p->name, sizeof p->name, "%s", json_string_value(json_object_get(o, "name")) ?: "");
        snprintf(p->ns, sizeof p->ns, "%s", json_string_value(json_object_get(o, "namespace")) ?: "");
        snprintf(p->uid, sizeof p->uid, "%s", json_string_value(json_object_get(o, "uid")) ?: "");
        ino_t ino = 0, own = netns_of(getpid(), &own_dev);
        p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
        if (p->pidfd < 0 || util_pid_start_time(p->pid) != p->start_time)
            snprintf(why, sizeof why, "its sandbox's init %d is gone", (int)pid);
        else if (!(ino = netns_of(p->pid, &dev)) || (ino == own && dev == own_dev))
            snprintf(why, sizeof why, "its init is in the daemon's own network namespace");
        else if (engine_start(p, policy, &p->engine, &e) < 0)
            snprintf(why, sizeof why, "its egress engine did not start: %.200s", e.message);
    }
    if (why[0]) {
        srv_slog(SLOG_WARN, SLOG_F("pod", id ? id : file), "pods: %s: not policed again: %s", path, why);
        if (unlink(path) < 0 && errno != ENOENT)
            srv_slog(SLOG_WARN, NULL, "pods: cannot remove %s: %s", path, strerror(errno));
        pod_free(p);
    } else {
        p->created_ms = srv_now_ms();
        p->next = P.pods;
        P.pods = p;
        P.n++;
        srv_slog(SLOG_INFO, SLOG_F("pod", id), "pod %s/%s (%s): egress policed again after a restart, helper %d", p->ns,
             p->name, id, (int)net_engine_pid(p->engine));
    }
    json_decref(o);
}

static int restore(srv *s, cell_error *err)
{
    if (util_mkdir_p(P.dir, 0700, err) < 0)
        return -1;
    _cleanup_close_ int dfd = open(P.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0)
        return util_fail_errno(err, "cannot open %s", P.dir);
    _cleanup_names_ util_names names = { 0 };
    if (util_dir_names(dfd, P.dir, &names, err) < 0)
        return -1;
    for (int i = 0; i < names.n && P.n < POD_MAX; i++) {
        const char *n = names.v[i]->d_name;
        size_t len = strlen(n);
        if (len > 5 && strcmp(n + len - 5, ".json") == 0)
            restore_one(s, n);
    }
    return 0;
}

static void wake_watcher(void)
{
    uint64_t one = 1;
    if (P.wake >= 0 && write(P.wake, &one, sizeof one) < 0)
        srv_slog(SLOG_WARN, NULL, "pods: cannot wake the watcher: %s", strerror(errno));
}

static int init_exited(const spod *p)
{
    struct pollfd pf = { .fd = p->pidfd, .events = POLLIN };
    return poll(&pf, 1, 0) == 1 && (pf.revents & POLLIN);
}

/* Take a pod out of the list (NULL if it is not there); the caller frees
 * it.  only_dead: only if its init has exited (the watcher's poll set may
 * be older than a DELETE and a new registration of the same id). */
static spod *unlink_pod_if(const char *id, int only_dead)
{
    spod *found = NULL;
    pthread_mutex_lock(&P.lock);
    for (spod **pp = &P.pods; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->id, id) == 0) {
            if (only_dead && (!(*pp)->engine || !init_exited(*pp)))
                break;
            found = *pp;
            *pp = found->next;
            P.n--;
            break;
        }
    pthread_mutex_unlock(&P.lock);
    if (found)
        wake_watcher();
    return found;
}

static spod *unlink_pod(const char *id)
{
    return unlink_pod_if(id, 0);
}

/* ---- the watcher: a pod whose sandbox init exits is unregistered -------------------- */
static void *watcher_main(void *arg)
{
    (void)arg;
    struct pollfd fds[POD_MAX + 1];
    char ids[POD_MAX][POD_ID_MAX + 1];
    for (;;) {
        size_t n = 0;
        pthread_mutex_lock(&P.lock);
        int closed = P.closed;
        /* Pods still starting are their handler's until their engine runs. */
        for (spod *p = P.pods; p && n < POD_MAX; p = p->next)
            if (p->engine) {
                fds[n] = (struct pollfd){ .fd = p->pidfd, .events = POLLIN };
                memcpy(ids[n++], p->id, sizeof ids[0]);
            }
        pthread_mutex_unlock(&P.lock);
        if (closed)
            return NULL;
        fds[n] = (struct pollfd){ .fd = P.wake, .events = POLLIN };
        if (poll(fds, n + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            srv_slog(SLOG_ERROR, NULL, "pods: the watcher's poll failed: %s", strerror(errno));
            return NULL;
        }
        if (fds[n].revents & POLLIN) {
            uint64_t v;
            if (read(P.wake, &v, sizeof v) < 0 && errno != EAGAIN)
                srv_slog(SLOG_WARN, NULL, "pods: reading the watcher's eventfd: %s", strerror(errno));
        }
        for (size_t i = 0; i < n; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            pthread_mutex_lock(&P.change);
            spod *p = unlink_pod_if(ids[i], 1);
            if (p)
                record_forget(p->id);
            if (p)
                srv_slog(SLOG_INFO, SLOG_F("pod", p->id), "pod %s/%s (%s): its sandbox's init exited; egress stopped",
                     p->ns, p->name, p->id);
            pod_free(p);
            pthread_mutex_unlock(&P.change);
        }
    }
}

/* ---- start and stop -------------------------------------------------------------------- */
int srv_pods_start(srv *s, cell_error *err)
{
    if (!s->opt.pods)
        return 0;
    char path[4096];
    if (s->opt.node_token_file)
        snprintf(path, sizeof path, "%s", s->opt.node_token_file);
    else if (util_path(path, sizeof path, err, "%s/node.token", s->state_dir) < 0)
        return -1;
    if (token_load(path, err) < 0)
        return -1;
    if (s->opt.pod_policy_file) {
        size_t len = 0;
        if (util_read_file(s->opt.pod_policy_file, POD_POLICY_MAX, &P.default_policy, &len, err) < 0)
            return -1;
        cell_error e = { 0 };
        if (strlen(P.default_policy) != len ||
            cell_policy_check_v2(P.default_policy, s->opt.tenant_dest_allow, &e) < 0 ||
            policy_without_secrets(P.default_policy, &e) < 0)
            return util_fail(err, EINVAL, "--pod-policy %s: %s", s->opt.pod_policy_file,
                             e.message[0] ? e.message : "holds a NUL byte");
    }
    if (util_path(P.dir, sizeof P.dir, err, "%s/pods", s->state_dir) < 0 || restore(s, err) < 0)
        return -1;
    if ((P.wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        return util_fail_errno(err, "eventfd");
    int pe = pthread_create(&P.watcher, NULL, watcher_main, NULL);
    if (pe != 0) {
        errno = pe;
        return util_fail_errno(err, "the pods' watcher thread");
    }
    P.watcher_on = 1;
    P.s = s;
    P.on = 1;
    if (!s->opt.quiet)
        srv_slog(SLOG_INFO, SLOG_F("token", path), "pods: the node endpoint is on; node token in %s", path);
    return 0;
}

void srv_pods_stop(srv *s)
{
    (void)s;
    pthread_mutex_lock(&P.lock);
    P.closed = 1;
    spod *all = P.pods;
    P.pods = NULL;
    P.n = 0;
    pthread_mutex_unlock(&P.lock);
    wake_watcher();
    if (P.watcher_on)
        pthread_join(P.watcher, NULL);
    P.watcher_on = 0;
    while (all) {
        spod *next = all->next;
        pod_free(all);
        all = next;
    }
    if (P.wake >= 0)
        close(P.wake);
    P.wake = -1;
    free(P.default_policy);
    P.default_policy = NULL;
    P.on = 0;
}

/* ---- no secrets for pods -----------------------------------------------------------------------
 * A pod's policy may not name ${secret:NAME}: the node daemon keeps no
 * secrets for pods (tenant "pods" has no store, and whoever writes a pod's
 * annotation is not whoever would own a node-wide credential).  Refused when
 * the policy is given, naming the rule, rather than every such request
 * failing later: a pod that needs a credential holds it itself (a
 * Kubernetes Secret).  1 if a string anywhere under v holds a reference. */
static int names_secret(json_t *v)
{
    const char *k;
    json_t *x;
    size_t i;
    if (json_is_string(v))
        return memmem(json_string_value(v), json_string_length(v), "${secret:", 9) != NULL;
    if (json_is_object(v))
        json_object_foreach(v, k, x)
            if (names_secret(x))
                return 1;
    if (json_is_array(v))
        json_array_foreach(v, i, x)
            if (names_secret(x))
                return 1;
    return 0;
}

/* 0, or -1 with err naming the first rule whose text names a secret. */
static int policy_without_secrets(const char *text, cell_error *err)
{
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, NULL), *rule;
    size_t i;
    int rc = 0;
    json_array_foreach(json_object_get(doc, "rules"), i, rule)
        if (rc == 0 && names_secret(rule))
            rc = util_fail(err, EINVAL, "rules[%zu] names a ${secret:NAME}: pods have no secrets on the node "
                           "(the daemon keeps none for tenant \"pods\"); give the credential to the pod itself "
                           "(a Kubernetes Secret) and drop the rule's set_headers reference", i);
    json_decref(doc);
    return rc;
}

/* ---- the handlers -------------------------------------------------------------------------- */
static int pods_off(sreq *r)
{
    return srv_reply_problem(r, 404, "not_found", "the node endpoint is off: start the daemon with cell serve --pods");
}

static json_t *pod_json(const spod *p)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:I, s:s, s:i, s:I, s:s}", "id", p->id, "auditId", p->audit_id,
                     "name", p->name, "namespace", p->ns, "uid", p->uid, "pid", (int)p->pid,
                     "startTime", (json_int_t)p->start_time, "policy",
                     p->by_operator ? "operator" : p->node_default ? "node" : "annotation",
                     "helperPid", (int)net_engine_pid(p->engine), "createdAtMs", (json_int_t)p->created_ms,
                     "helperCgroup", p->cgroup);
}

static int id_valid(const char *id)
{
    size_t len = strlen(id);
    if (len == 0 || len > POD_ID_MAX || id[0] == '.')
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-", id[i]))
            return 0;
    return 1;
}

/* The netns of `pidfd`'s process (the inode that names it), or 0. */
static ino_t netns_of(pid_t pid, dev_t *dev)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/ns/net", (int)pid);
    if (stat(path, &st) < 0)
        return 0;
    *dev = st.st_dev;
    return st.st_ino;
}

/* What a policy is named in errors: at registration its text is the
 * annotation's; an operator's change is the request's body. */
#define FROM_ANNOTATION "policy (annotation cell.dev/egress-policy)"
#define FROM_BODY       "policy (the request's body)"

/* A 400 naming where the policy came from. */
static int policy_invalid(sreq *r, const char *what, const char *fmt, const char *detail)
{
    return srv_reply_problem(r, 400, "invalid_request", "%s: %s%s", what, fmt, detail ? detail : "");
}

/* The policy text: valid JSON, an object, within bounds, and a policy a
 * non-admin may set (pods' authors are the cluster's users). */
static int check_pod_policy(sreq *r, const char *what, const char *text, size_t len)
{
    if (len > POD_POLICY_MAX) {
        char m[64];
        snprintf(m, sizeof m, "%zu bytes, more than %d KiB", len, POD_POLICY_MAX / 1024);
        return policy_invalid(r, what, "too large: ", m), -1;
    }
    json_error_t je;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        char m[256];
        snprintf(m, sizeof m, "%s (line %d, column %d)", je.text, je.line, je.column);
        return policy_invalid(r, what, "not JSON: ", m), -1;
    }
    int is_obj = json_is_object(doc);
    json_decref(doc);
    if (!is_obj)
        return policy_invalid(r, what, "must be a JSON object (e.g. {\"rules\": [...]})", NULL), -1;
    cell_error e = { 0 };
    if (policy_without_secrets(text, &e) < 0)
        return policy_invalid(r, what, e.message, NULL), -1;
    if (cell_policy_check_v2(text, r->s->opt.tenant_dest_allow, &e) < 0) {
        if (e.code == EACCES)
            srv_reply_problem(r, 403, "forbidden", "%s: %s", what, e.message);
        else
            policy_invalid(r, what, e.message, NULL);
        return -1;
    }
    return 0;
}

static int meta_field(sreq *r, json_t *pod, const char *key, char *out, size_t size)
{
    json_t *v = json_object_get(pod, key);
    out[0] = '\0';
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) >= size || strlen(json_string_value(v)) != json_string_length(v))
        return srv_reply_problem(r, 400, "invalid_request", "field \"pod.%s\" must be a string of at most %zu bytes "
                             "without NUL", key, size - 1), -1;
    snprintf(out, size, "%s", json_string_value(v));
    return 0;
}

int srv_h_pods_create(sreq *r)
{
    if (!P.on)
        return pods_off(r);
    json_t *body;
    if (srv_req_json(r, &body) < 0)
        return REPLIED(r);
    const char *id = NULL;
    int64_t pid = 0, start = 0;
    json_t *pol = json_object_get(body, "policy"), *pod = json_object_get(body, "pod");
    spod *p = NULL;
    int rc = MHD_YES;
    if (srv_req_check_fields(r, body, "", "id", "pid", "startTime", "policy", "pod", NULL) < 0 ||
        srv_json_get_str(r, body, "id", 1, &id) < 0 || srv_json_get_int(r, body, "pid", 1, 1, INT32_MAX, &pid) < 0 ||
        srv_json_get_int(r, body, "startTime", 1, 1, INT64_MAX, &start) < 0)
        goto replied;
    if (!id_valid(id)) {
        srv_reply_problem(r, 400, "invalid_request", "field \"id\" must be a container id: 1 to %d of "
                      "[A-Za-z0-9_.+-], not starting with '.'", POD_ID_MAX);
        goto replied;
    }
    srv_req_audit(r, "pod", json_pack("{s:s}", "id", id));   /* the shape of net records' "pod" */
    if (pol && !json_is_null(pol) && !json_is_string(pol)) {
        srv_reply_problem(r, 400, "invalid_request", "field \"policy\" must be a string (the text of the annotation "
                      "cell.dev/egress-policy) or null");
        goto replied;
    }
    if (pod && !json_is_null(pod) && !json_is_object(pod)) {
        srv_reply_problem(r, 400, "invalid_request", "field \"pod\" must be an object {name, namespace, uid}");
        goto replied;
    }
    if (!(p = calloc(1, sizeof *p))) {
        srv_reply_problem(r, 500, "internal", "out of memory");
        goto replied;
    }
    p->pidfd = -1;
    p->s = r->s;
    snprintf(p->id, sizeof p->id, "%s", id);
    snprintf(p->audit_id, sizeof p->audit_id, "pod-%.16s", id);
    if (json_is_object(pod) && (srv_req_check_fields(r, pod, "pod", "name", "namespace", "uid", NULL) < 0 ||
                                meta_field(r, pod, "name", p->name, sizeof p->name) < 0 ||
                                meta_field(r, pod, "namespace", p->ns, sizeof p->ns) < 0 ||
                                meta_field(r, pod, "uid", p->uid, sizeof p->uid) < 0))
        goto replied;
    const char *text = json_is_string(pol) ? json_string_value(pol) : NULL;
    if (text && strlen(text) != json_string_length(pol)) {
        policy_invalid(r, FROM_ANNOTATION, "holds a NUL character", NULL);
        goto replied;
    }
    if (text && check_pod_policy(r, FROM_ANNOTATION, text, json_string_length(pol)) < 0)
        goto replied;
    if (!text && !P.default_policy) {
        /* Nothing to enforce: the pod keeps the network CNI gave it. */
        rc = srv_reply_json(r, 200, json_pack("{s:s, s:b}", "id", id, "policed", 0));
        goto out;
    }
    p->node_default = !text;
    p->pid = (pid_t)pid;
    p->start_time = (uint64_t)start;
    /* The pidfd first, then the start time: a pid that was reused between
     * cell-oci's look and ours is refused, never policed by mistake. */
    p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    if (p->pidfd < 0 || util_pid_start_time(p->pid) != p->start_time) {
        srv_reply_problem(r, 400, "invalid_request", "field \"pid\": process %d with start time %lld is not running "
                      "(the sandbox's init must be alive and parked)", (int)pid, (long long)start);
        goto replied;
    }
    /* Never the daemon's own netns (the node's, with hostNetwork): its
     * rules would cut the node off.  Never one already registered. */
    dev_t dev = 0, own_dev = 0;
    ino_t ino = netns_of(p->pid, &dev), own = netns_of(getpid(), &own_dev);
    if (!ino || !own || (ino == own && dev == own_dev)) {
        srv_reply_problem(r, 400, "invalid_request", "field \"pid\": process %d is in the daemon's own network "
                      "namespace (or it cannot be read): only a pod's own netns is policed", (int)pid);
        goto replied;
    }
    pthread_mutex_lock(&P.lock);
    const char *clash = NULL;
    for (spod *q = P.pods; q && !clash; q = q->next) {
        dev_t qdev = 0;
        if (strcmp(q->id, id) == 0 || strcmp(q->audit_id, p->audit_id) == 0)
            clash = "a pod of that id (or of the same first 16 characters)";
        else if (netns_of(q->pid, &qdev) == ino && qdev == dev)
            clash = "a pod in that network namespace";
    }
    int full = P.n >= POD_MAX;
    if (!clash && !full) {
        /* Held in the list from here (the start is slow): a second POST of
         * the id is refused while this one runs. */
        p->next = P.pods;
        P.pods = p;
        P.n++;
    }
    pthread_mutex_unlock(&P.lock);
    if (clash || full) {
        if (clash)
            srv_reply_problem(r, 409, "conflict", "pod %s: %s is already registered", id, clash);
        else
            srv_reply_problem(r, 503, "unavailable", "this node already polices %d pods", POD_MAX);
        goto replied;
    }
    cell_error e = { 0 };
    net_engine *eng = NULL;
    if (engine_start(p, text ? text : P.default_policy, &eng, &e) < 0) {
        spod *back = unlink_pod(id);
        srv_reply_problem(r, e.code == EINVAL ? 400 : 500, e.code == EINVAL ? "invalid_request" : "internal",
                      "pod %s: starting its egress engine failed: %s", id, e.message);
        pod_free(back);
        p = NULL;
        goto replied;
    }
    /* Once the engine is set, a DELETE or the watcher may free p: the
     * reply and the log line are made before the lock is let go. */
    pthread_mutex_lock(&P.lock);
    p->engine = eng;
    p->created_ms = srv_now_ms();
    json_t *reply = pod_json(p);
    record_save(p, text);
    srv_slog(SLOG_INFO, SLOG_F("pod", id), "pod %s/%s (%s): egress policed (%s policy), helper %d", p->ns, p->name, id,
         text ? "its" : "the node's", (int)net_engine_pid(eng));
    pthread_mutex_unlock(&P.lock);
    wake_watcher();
    json_object_set_new(reply, "policed", json_true());
    p = NULL;
    rc = srv_reply_json(r, 201, reply);
    goto out;
replied:
    rc = REPLIED(r);
out:
    pod_free(p);
    json_decref(body);
    return rc;
}

int srv_h_pods_list(sreq *r)
{
    if (!P.on)
        return pods_off(r);
    json_t *arr = json_array();
    pthread_mutex_lock(&P.lock);
    for (spod *p = P.pods; p; p = p->next)
        if (p->engine)
            json_array_append_new(arr, pod_json(p));
    pthread_mutex_unlock(&P.lock);
    return srv_reply_json(r, 200, json_pack("{s:o}", "pods", arr));
}

int srv_h_pods_get(sreq *r)
{
    if (!P.on)
        return pods_off(r);
    const char *id = srv_router_param(&r->m, "id");
    json_t *o = NULL;
    pthread_mutex_lock(&P.lock);
    for (spod *p = P.pods; p && !o; p = p->next)
        if (p->engine && strcmp(p->id, id) == 0)
            o = pod_json(p);
    pthread_mutex_unlock(&P.lock);
    return o ? srv_reply_json(r, 200, o) : srv_reply_problem(r, 404, "not_found", "pod %s is not registered", id);
}

int srv_h_pods_delete(sreq *r)
{
    if (!P.on)
        return pods_off(r);
    const char *id = srv_router_param(&r->m, "id");
    srv_req_audit(r, "pod", json_pack("{s:s}", "id", id));   /* the shape of net records' "pod" */
    pthread_mutex_lock(&P.lock);
    int starting = 0;
    for (spod *p = P.pods; p; p = p->next)
        if (strcmp(p->id, id) == 0 && !p->engine)
            starting = 1;
    pthread_mutex_unlock(&P.lock);
    if (starting)
        return srv_reply_problem(r, 409, "conflict", "pod %s is still being registered; retry", id);
    pthread_mutex_lock(&P.change);
    spod *p = unlink_pod(id);
    if (p) {
        srv_slog(SLOG_INFO, SLOG_F("pod", id), "pod %s/%s (%s): unregistered; egress stopped", p->ns, p->name, id);
        record_forget(p->id);
        pod_free(p);
    }
    pthread_mutex_unlock(&P.change);
    return p ? srv_reply_empty(r, 204) : srv_reply_problem(r, 404, "not_found", "pod %s is not registered", id);
}

/* PUT /v1/pods/{id}/policy: an operator changes a running pod's policy
 * (the body is the policy, as for a cell's).  Checked as a registration's
 * is; new flows get it, flows already relaying keep their verdict (the
 * engine's live change, as for a cell); kept for a restart; audited with
 * the request. */
int srv_h_pods_policy(sreq *r)
{
    if (!P.on)
        return pods_off(r);
    const char *id = srv_router_param(&r->m, "id");
    srv_req_audit(r, "pod", json_pack("{s:s}", "id", id));   /* the shape of net records' "pod" */
    json_t *body;
    if (srv_req_json(r, &body) < 0)
        return REPLIED(r);
    char *text = json_dumps(body, JSON_COMPACT);
    json_t *reply = NULL;
    int rc = MHD_YES;
    if (!text) {
        rc = srv_reply_problem(r, 500, "internal", "out of memory");
        goto out;
    }
    if (check_pod_policy(r, FROM_BODY, text, strlen(text)) < 0) {
        rc = REPLIED(r);
        goto out;
    }
    pthread_mutex_lock(&P.change);
    spod *p = NULL;
    pthread_mutex_lock(&P.lock);
    for (spod *q = P.pods; q && !p; q = q->next)
        if (q->engine && strcmp(q->id, id) == 0)
            p = q;
    pthread_mutex_unlock(&P.lock);
    cell_error e = { 0 };
    /* p stays listed meanwhile: freeing it takes P.change. */
    if (!p)
        rc = srv_reply_problem(r, 404, "not_found", "pod %s is not registered", id);
    else if (net_engine_set_policy(p->engine, text, &e) < 0)
        rc = srv_reply_problem(r, 500, "internal", "pod %s: its egress helper did not take the policy (the old one "
                           "still applies): %s", id, e.message);
    else {
        pthread_mutex_lock(&P.lock);
        p->by_operator = 1;
        p->node_default = 0;
        record_save(p, text);
        reply = pod_json(p);
        srv_slog(SLOG_INFO, SLOG_F("pod", id), "pod %s/%s (%s): policy changed by an operator (token %s)", p->ns,
             p->name, id, r->tok.id);
        pthread_mutex_unlock(&P.lock);
    }
    pthread_mutex_unlock(&P.change);
    if (reply)
        rc = srv_reply_json(r, 200, reply);
out:
    free(text);
    json_decref(body);
    return rc;
}
