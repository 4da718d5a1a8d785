/* agentinstall.c: real agents from npm, installed once per host.
 *
 * The pinned packages of an agent (agents.c's table) go into a versioned,
 * content-addressed cache, STATE/agents/<agent>-<version>-<16 hex of the
 * sha256 of the registry and the package list>/, which every cell the
 * daemon boots sees read-only at AGENTS_CACHE_TARGET (registry.c).  npm
 * runs inside an install cell (host image, throwaway layer, memory and pids
 * limits) whose egress policy reaches only the registry's host and port:
 * packages' install scripts are untrusted code and run there, confined.
 * The cell writes into a staging directory bound at /stage; once it is
 * gone, the daemon checks what it left, makes it root-owned without group
 * or other write and without setuid bits, writes a manifest and renames
 * it into place, so a cell never sees half an install.  An install then
 * writes the agent's launcher into the cell (AGENTS_PROC_DIR/<agent>-acp),
 * which execs the cached binary.
 *
 * One npm run per cache key at a time: concurrent installs of one agent
 * wait for the first (agents_lock + agents_cond), then find it cached. */
#include "server/agents.h"
#include "server/slog.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>

#include <openssl/evp.h>
#include <openssl/http.h>

#define AGENTS_STAGE_TARGET  "/stage"
#define AGENTS_MANIFEST      ".cell-manifest.json"
/* npm extracts big tarballs (the codex adapter's is ~220 MB unpacked) in
 * memory and the page cache counts too. */
#define AGENTS_INSTALL_MEMORY (1536ull << 20)
#define AGENTS_INSTALL_PIDS   512
#define AGENTS_INSTALL_DISK   (256ull << 20)   /* the cell's own layer: /tmp; the install is in /stage */
#define AGENTS_INSTALL_MS     (20 * 60 * 1000)
#define AGENTS_TAIL_LINES     16
#define AGENTS_LINE_MAX       2048
#define AGENTS_LOCK_MAX       (16u << 20)      /* package-lock.json read for the manifest */
#define AGENTS_FULL_SLACK     (1u << 20)       /* less free on the staging filesystem: it was filled */

static pthread_mutex_t agents_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t agents_cond = PTHREAD_COND_INITIALIZER;
static int agents_workers;          /* agents_lock: installs running (plain and SSE) */

typedef struct agents_flight {
    const char *key;
    struct agents_flight *next;
} agents_flight;
static agents_flight *agents_flights; /* agents_lock: cache keys being filled */

static char agents_root[4096], agents_staging[4096];
static char *agents_policy;         /* the install cell's policy (JSON) */
static cell_error agents_policy_err; /* why there is none: installs fail with it */
static const char *agents_registry;
static uint64_t agents_disk;        /* --limit agents.installDisk: the staging filesystem's size */

static void agents_cache_scan(void);

const char *srv_agents_cache_root(void) { return agents_root; }

void srv_agents_worker_begin(void)
{
    pthread_mutex_lock(&agents_lock);
    agents_workers++;
    pthread_mutex_unlock(&agents_lock);
}

void srv_agents_worker_end(void)
{
    pthread_mutex_lock(&agents_lock);
    agents_workers--;
    pthread_cond_broadcast(&agents_cond);
    pthread_mutex_unlock(&agents_lock);
}

void srv_agents_shutdown(void)
{
    pthread_mutex_lock(&agents_lock);
    while (agents_workers > 0)
        pthread_cond_wait(&agents_cond, &agents_lock);
    pthread_mutex_unlock(&agents_lock);
    free(agents_policy);
    agents_policy = NULL;
}

/* ---- start: the registry and the install cell's policy ---------------------- */
/* The host's resolvers, for a registry named by a host name. */
static json_t *agents_host_dns(void)
{
    FILE *f = fopen("/etc/resolv.conf", "re");
    if (!f)
        return NULL;
    json_t *ups = json_array();
    char line[512], addr[128], bin[16];
    while (ups && fgets(line, sizeof line, f))
        if (sscanf(line, " nameserver %127s", addr) == 1 &&
            (inet_pton(AF_INET, addr, bin) == 1 || inet_pton(AF_INET6, addr, bin) == 1))
            json_array_append_new(ups, json_string(addr));
    fclose(f);
    if (ups && json_array_size(ups) == 0)
        return json_decref(ups), NULL;
    return ups;
}

/* Only the registry: an address literal by a tcp rule, a name by a host
 * rule (with the host's resolvers, strict: no other name resolves). */
static json_t *agents_policy_for(const char *host, int port, cell_error *err)
{
    unsigned char bin[16];
    if (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1)
        return json_pack("{s:[{s:{s:s, s:[i]}}]}", "rules", "tcp", "to", host, "ports", port);
    json_t *ups = agents_host_dns();
    if (!ups)
        return util_fail(err, ENETUNREACH, "--agent-registry names host %s, but /etc/resolv.conf has no nameserver "
                         "to resolve it with", host), NULL;
    return json_pack("{s:[{s:{s:o, s:b}}, {s:{s:s, s:[i]}}]}", "rules", "dns", "upstreams", ups, "strict", 1,
                     "host", "name", host, "ports", port);
}

static int agents_parse_registry(const char *url, cell_error *err)
{
    char *user = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL, *frag = NULL;
    int tls = 0, port_num = 0, rc = -1;
    if ((strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0) || strpbrk(url, " \t\r\n") ||
        !OSSL_HTTP_parse_url(url, &tls, &user, &host, &port, &port_num, &path, &query, &frag)) {
        util_fail(err, EINVAL, "--agent-registry %s: not an http:// or https:// URL", url);
    } else if ((user && *user) || !host || !*host || port_num <= 0 || port_num > 65535) {
        util_fail(err, EINVAL, "--agent-registry %s: needs a host (and no user info)", url);
    } else {
        /* A host without resolvers still runs the daemon; its installs
         * fail saying why.  The policy itself is checked by the first
         * install (agents_policy_ok). */
        json_t *pol = agents_policy_for(host, port_num, &agents_policy_err);
        agents_policy = pol ? json_dumps(pol, JSON_COMPACT) : NULL;
        json_decref(pol);
        if (pol && !agents_policy)
            util_fail(err, ENOMEM, "out of memory");
        else if (agents_policy)
            rc = 0;
        else
            rc = 0, srv_slog(SLOG_WARN, NULL, "agent installs will fail: %s", agents_policy_err.message);
    }
    OPENSSL_free(user), OPENSSL_free(host), OPENSSL_free(port);
    OPENSSL_free(path), OPENSSL_free(query), OPENSSL_free(frag);
    return rc;
}

/* A crash's staging filesystems are still mounted: unmount them (their
 * blocks go back to the host) before the directory is removed. */
static int agents_unmount_leftovers(cell_error *err)
{
    DIR *d = opendir(agents_staging);
    if (!d)
        return errno == ENOENT ? 0 : util_fail_errno(err, "cannot open %s", agents_staging);
    struct dirent *e;
    int rc = 0;
    char path[4200];
    while (rc == 0 && (e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
            util_path(path, sizeof path, NULL, "%s/%s", agents_staging, e->d_name) >= 0)
            rc = cell_scratch_unmount(path, err);
    closedir(d);
    return rc;
}

static void agents_cache_key(const agents_package *p, char *key, size_t size);

/* Keep only the pinned agents' current cache directories (this registry,
 * these pins): no cell runs at start, so an older version, another
 * registry's copy or a removed agent's is nobody's.  A cell whose launcher
 * still names one gets the current one on its next install. */
static int agents_prune(cell_error *err)
{
    DIR *d = opendir(agents_root);
    if (!d)
        return util_fail_errno(err, "cannot open %s", agents_root);
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char agent[32], key[160], path[4200];
        snprintf(agent, sizeof agent, "%.*s", (int)strcspn(e->d_name, "-"), e->d_name);
        const agents_package *p = srv_agents_package_find(agent);
        if (p && !p->unavailable) {
            agents_cache_key(p, key, sizeof key);
            if (strcmp(key, e->d_name) == 0)
                continue;
        }
        if (util_path(path, sizeof path, err, "%s/%s", agents_root, e->d_name) < 0 || util_rm_rf(path, err) < 0)
            rc = -1;
        else
            srv_slog(SLOG_INFO, NULL, "removed agent cache %s (not a current pin of --agent-registry)", e->d_name);
    }
    closedir(d);
    return rc;
}

int srv_agents_start(srv *s, cell_error *err)
{
    agents_registry = s->opt.agent_registry ? s->opt.agent_registry : SERVER_DEFAULT_AGENT_REGISTRY;
    agents_disk = s->opt.limits.agents_install_disk;
    if (agents_parse_registry(agents_registry, err) < 0 ||
        util_path(agents_root, sizeof agents_root, err, "%s/agents", s->state_dir) < 0 ||
        util_path(agents_staging, sizeof agents_staging, err, "%s/agents-staging", s->state_dir) < 0 ||
        util_mkdir_p(agents_root, 0755, err) < 0 || agents_unmount_leftovers(err) < 0 ||
        util_rm_rf(agents_staging, err) < 0 || util_mkdir_p(agents_staging, 0700, err) < 0 ||
        agents_prune(err) < 0)
        return -1;
    if (chmod(agents_root, 0755) < 0)
        return util_fail_errno(err, "chmod %s", agents_root);
    agents_cache_scan();
    return 0;
}

/* ---- what the cache holds ---------------------------------------------------------- */
static pthread_mutex_t agents_scan_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t agents_cache_bytes, agents_scan_bytes;  /* agents_scan_lock */
static size_t agents_cache_dirs, agents_scan_dirs;

static int agents_scan_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)path, (void)type;
    agents_scan_bytes += (uint64_t)st->st_blocks * 512;
    agents_scan_dirs += ftw->level == 1;
    return 0;
}

/* Walk the cache (at start and after each install): GET /v1/limits shows
 * its disk usage without walking it. */
static void agents_cache_scan(void)
{
    pthread_mutex_lock(&agents_scan_lock);
    agents_scan_bytes = 0, agents_scan_dirs = 0;
    if (nftw(agents_root, agents_scan_entry, 32, FTW_PHYS | FTW_MOUNT) == 0)
        agents_cache_bytes = agents_scan_bytes, agents_cache_dirs = agents_scan_dirs;
    pthread_mutex_unlock(&agents_scan_lock);
}

void srv_agents_cache_usage(uint64_t *bytes, size_t *dirs)
{
    pthread_mutex_lock(&agents_scan_lock);
    *bytes = agents_cache_bytes, *dirs = agents_cache_dirs;
    pthread_mutex_unlock(&agents_scan_lock);
}

/* ---- the cache key -------------------------------------------------------------- */
static const char *agents_version_of(const char *spec)
{
    const char *at = strrchr(spec, '@');
    return at && at != spec ? at + 1 : "";
}

/* <agent>-<version>-<first 16 hex of sha256("cell-agents 1\nREGISTRY\nPKG\n...")>:
 * what decides the cache's content, so another pin or registry is another dir. */
static void agents_cache_key(const agents_package *p, char *key, size_t size)
{
    unsigned char md[32];
    unsigned len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, "cell-agents 1\n", 14) &&
             EVP_DigestUpdate(ctx, agents_registry, strlen(agents_registry)) && EVP_DigestUpdate(ctx, "\n", 1);
    for (const char *const *pkg = p->packages; ok && *pkg; pkg++)
        ok = EVP_DigestUpdate(ctx, *pkg, strlen(*pkg)) && EVP_DigestUpdate(ctx, "\n", 1);
    ok = ok && EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    char hex[17] = "0000000000000000";
    for (unsigned i = 0; ok && i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(key, size, "%s-%s-%s", p->id, agents_version_of(p->packages[0]), hex);
}

/* ---- npm's output: progress lines and the stderr tail ------------------------ */
typedef struct npm_out {
    agents_progress_fn progress;
    void *user;
    char part[2][AGENTS_LINE_MAX];
    size_t plen[2];
    char tail[AGENTS_TAIL_LINES][AGENTS_LINE_MAX];
    unsigned n_tail;                /* lines ever put in the ring */
} npm_out;

static void npm_line(npm_out *o, int stream)
{
    char *line = o->part[stream];
    line[o->plen[stream]] = '\0';
    o->plen[stream] = 0;
    if (!*line)
        return;
    if (o->progress)
        o->progress(o->user, line);
    if (stream == 1) {
        size_t n = strlen(line);    /* < AGENTS_LINE_MAX: npm_feed cuts longer lines */
        memcpy(o->tail[o->n_tail++ % AGENTS_TAIL_LINES], line, n + 1);
    }
}

static void npm_feed(npm_out *o, int stream, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            npm_line(o, stream);
            continue;
        }
        if (data[i] != '\r')
            o->part[stream][o->plen[stream]++] = data[i];
        if (o->plen[stream] == AGENTS_LINE_MAX - 1)     /* a longer line goes out in parts */
            npm_line(o, stream);
    }
}

static json_t *npm_tail(npm_out *o)
{
    json_t *arr = json_array();
    unsigned first = o->n_tail > AGENTS_TAIL_LINES ? o->n_tail - AGENTS_TAIL_LINES : 0;
    for (unsigned i = first; arr && i < o->n_tail; i++)
        json_array_append_new(arr, json_string(o->tail[i % AGENTS_TAIL_LINES]));
    return arr;
}

/* Read what a pipe has now; 0 at EOF, 1 if more may come. */
static int npm_drain(int fd, npm_out *o, int stream)
{
    char buf[8192];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            npm_feed(o, stream, buf, (size_t)n);
            continue;
        }
        if (n == 0)
            return 0;
        return errno == EAGAIN || errno == EINTR ? 1 : 0;
    }
}

/* ---- the install cell ------------------------------------------------------------ */
static int agents_pipe(int p[2], cell_error *err)
{
    if (pipe2(p, O_CLOEXEC) < 0)
        return util_fail_errno(err, "pipe");
    /* Only our end: the cell's end stays blocking for npm. */
    if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0) {
        util_fail_errno(err, "fcntl");
        close(p[0]), close(p[1]);
        return -1;
    }
    return 0;
}

/* Follow npm until it exits (status in *status), the deadline passes or
 * the daemon stops. */
static int agents_follow(srv *s, cell *c, pid_t pid, int out, int errfd, npm_out *o, int *status, cell_error *err)
{
    struct pollfd pf[3] = { { .fd = out, .events = POLLIN }, { .fd = errfd, .events = POLLIN },
                            { .fd = cell_event_fd(c), .events = POLLIN } };
    int64_t deadline = srv_now_ms() + AGENTS_INSTALL_MS;
    for (;;) {
        if (atomic_load(&s->stopping))
            return util_fail(err, ECANCELED, "the daemon is stopping");
        if (srv_now_ms() >= deadline)
            return util_fail(err, ETIMEDOUT, "npm did not finish within %d minutes", AGENTS_INSTALL_MS / 60000);
        if (poll(pf, 3, 250) < 0 && errno != EINTR)
            return util_fail_errno(err, "poll");
        for (int i = 0; i < 2; i++)
            if (pf[i].fd >= 0 && pf[i].revents && npm_drain(pf[i].fd, o, i) == 0)
                pf[i].fd = -1;      /* poll skips it */
        cell_exit ex;
        int r;
        while ((r = cell_wait_exit(c, 0, &ex, err)) == 1)
            if (ex.pid == pid) {
                *status = ex.status;
                /* What npm wrote last is in the pipes; whatever it left
                 * running dies with the cell. */
                if (pf[0].fd >= 0)
                    npm_drain(out, o, 0);
                if (pf[1].fd >= 0)
                    npm_drain(errfd, o, 1);
                return 0;
            }
        if (r < 0)
            return -1;
    }
}

/* Whom the install cell's network events are audited for. */
typedef struct agents_net_ctx {
    srv *s;
    const char *tenant, *key;
} agents_net_ctx;

/* The install cell's flows and DNS answers (denied ones included), as a
 * cell's, under the requesting tenant and the cache key. */
static void agents_net_event(void *user, const char *json)
{
    agents_net_ctx *n = user;
    json_t *rec = json_loads(json, 0, NULL);
    if (!rec)
        return;
    json_object_set_new(rec, "tenant", json_string(n->tenant));
    json_object_set_new(rec, "cell", json_string("agent-install"));
    json_object_set_new(rec, "installKey", json_string(n->key));
    store_audit_append(n->s->st, rec);
    json_decref(rec);
}

/* The install cell's policy is checked on the first install, not at start:
 * checking loads the net plugin and its libraries (nftables, ldns, libssl),
 * which a daemon that installs no agent never needs.  A host name the
 * policy refuses fails every install, naming the flag. */
static pthread_once_t agents_policy_once = PTHREAD_ONCE_INIT;
static cell_error agents_policy_bad;

static void agents_policy_check(void)
{
    cell_error e = { 0 };
    if (cell_policy_check(agents_policy, &e) < 0)
        util_fail(&agents_policy_bad, EIO, "--agent-registry %s: the install cell's policy for it is refused: %s",
                  agents_registry, e.message);
}

static int agents_policy_ok(cell_error *err)
{
    if (!agents_policy)
        return *err = agents_policy_err, -1;
    pthread_once(&agents_policy_once, agents_policy_check);
    return agents_policy_bad.code ? (*err = agents_policy_bad, -1) : 0;
}

/* Boot the install cell with `stage` at /stage and run npm in it. */
static int agents_npm(srv *s, const agents_package *p, const char *stage, agents_net_ctx *net, npm_out *o,
                      int *status, cell_error *err)
{
    cell_mount m = { .kind = CELL_MOUNT_BIND, .source = stage, .target = AGENTS_STAGE_TARGET };
    cell_config cfg = {
        .image = "host", .hostname = "cell-agent-install", .mounts = &m, .n_mounts = 1, .policy = agents_policy,
        .limits = { .memory = AGENTS_INSTALL_MEMORY, .pids = AGENTS_INSTALL_PIDS, .disk = AGENTS_INSTALL_DISK },
        .net_event = agents_net_event, .net_user = net,
    };
    if (atomic_load(&s->stopping))
        return util_fail(err, ECANCELED, "the daemon is stopping");
    if (agents_policy_ok(err) < 0)
        return -1;
    cell *c = NULL;
    if (srv_registry_cell_create(s, &cfg, &c, err) < 0)
        return -1;
    int out[2] = { -1, -1 }, errp[2] = { -1, -1 }, rc = -1;
    /* Saved: package-lock.json has what the manifest records. */
    const char *argv[16 + 3] = { "npm", "install", "--no-audit", "--no-fund", "--loglevel", "http",
                                 "--prefix", AGENTS_STAGE_TARGET "/pkg", "--cache", AGENTS_STAGE_TARGET "/cache",
                                 "--registry", agents_registry };
    size_t n = 12;
    for (const char *const *pkg = p->packages; *pkg; pkg++)
        argv[n++] = *pkg;
    /* Install scripts run (opencode's fetches its binary): they are as
     * untrusted as the packages' code and as confined, in this cell.
     * npm >= 11.10 runs only approved ones unless told so. */
    static const char *const env[] = { "HOME=" AGENTS_STAGE_TARGET "/home", "PATH=/usr/local/bin:/usr/bin:/bin",
                                       "LANG=C.UTF-8", "npm_config_update_notifier=false",
                                       "npm_config_dangerously_allow_all_scripts=true", NULL };
    if (agents_pipe(out, err) == 0 && agents_pipe(errp, err) == 0) {
        cell_proc_spec spec = { .argv = argv, .env = env, .cwd = AGENTS_STAGE_TARGET, .stdin_fd = -1,
                                .stdout_fd = out[1], .stderr_fd = errp[1] };
        pid_t pid;
        if (cell_spawn(c, &spec, &pid, NULL, err) == 0) {
            close(out[1]), close(errp[1]);
            out[1] = errp[1] = -1;
            rc = agents_follow(s, c, pid, out[0], errp[0], o, status, err);
        }
    }
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (errp[i] >= 0)
            close(errp[i]);
    }
    srv_registry_cell_destroy(s, c);
    return rc;
}

/* ---- from staging to the cache ---------------------------------------------------- */
/* Root-owned, no group or other write, no setuid, setgid or sticky bits:
 * what the install cell wrote is untrusted.  Symlinks are changed, never
 * followed (they resolve inside cells, where the cache is read-only). */
static int agents_sanitize_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (lchown(path, 0, 0) < 0)
        return -1;
    if (type == FTW_SL || S_ISLNK(st->st_mode))
        return 0;
    /* cp kept the modes, and with them any ACL the install set: only the
     * mode bits grant anything here.  (No ACL: ENODATA, ignored.) */
    lremovexattr(path, "system.posix_acl_access");
    if (S_ISDIR(st->st_mode))
        lremovexattr(path, "system.posix_acl_default");
    return chmod(path, st->st_mode & 0755);
}

/* Regular files, directories and symlinks only: what a package is made of. */
static int agents_check_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)path, (void)ftw;
    if (type == FTW_NS || type == FTW_DNR)
        return -1;
    return type == FTW_SL || S_ISLNK(st->st_mode) || S_ISREG(st->st_mode) || S_ISDIR(st->st_mode) ? 0 : 1;
}

/* From the staging filesystem to the host's: cp never follows the tree's
 * symlinks (-d), keeps its hard links and holes, so the copy takes no more
 * than the staging filesystem held (at most --limit agents.installDisk);
 * ownership is the copier's (root), extended attributes are left behind. */
static int agents_copy(const char *from, const char *to, cell_error *err)
{
    const char *argv[] = { "cp", "-dR", "--preserve=mode,timestamps,links", "--sparse=always", "-T", "--",
                           from, to, NULL };
    return util_run(argv, err);
}

/* The manifest: what was asked and what npm's lock file says it installed. */
static json_t *agents_manifest(int pkg_fd, const agents_package *p, const char *key)
{
    json_t *asked = json_array(), *installed = json_object();
    for (const char *const *pkg = p->packages; *pkg; pkg++)
        json_array_append_new(asked, json_string(*pkg));
    _cleanup_close_ int fd = openat(pkg_fd, "package-lock.json", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    json_t *lock = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= AGENTS_LOCK_MAX
                   ? json_loadfd(fd, 0, NULL) : NULL;
    const char *name;
    json_t *v;
    json_object_foreach(json_object_get(lock, "packages"), name, v) {
        if (strncmp(name, "node_modules/", 13) != 0 || !json_is_object(v))
            continue;
        json_t *one = json_object();
        const char *fields[] = { "version", "integrity", "resolved" };
        for (size_t i = 0; i < 3; i++)
            if (json_is_string(json_object_get(v, fields[i])))
                json_object_set(one, fields[i], json_object_get(v, fields[i]));
        json_object_set_new(installed, name + 13, one);
    }
    json_decref(lock);
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:I}", "agent", p->id, "key", key, "registry", agents_registry,
                     "requested", asked, "packages", installed, "installedAtMs", (json_int_t)srv_now_ms());
}

static int agents_write_manifest(int pkg_fd, json_t *manifest, cell_error *err)
{
    if (unlinkat(pkg_fd, AGENTS_MANIFEST, 0) < 0 && errno != ENOENT)
        return util_fail_errno(err, "cannot replace %s", AGENTS_MANIFEST);
    _cleanup_close_ int fd = openat(pkg_fd, AGENTS_MANIFEST, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                                    0644);
    if (fd < 0 || json_dumpfd(manifest, fd, JSON_INDENT(1)) < 0)
        return util_fail_errno(err, "cannot write %s", AGENTS_MANIFEST);
    return 0;
}

/* The install cell is gone: check what it left in stage/pkg, copy it to
 * `copy` (on the state directory's filesystem), fix that and move it to
 * `final` (exchanging it with an older one on a reinstall). */
static int agents_finish(const agents_package *p, const char *key, const char *stage, const char *copy,
                         const char *final, cell_error *err)
{
    char pkg[4096];
    if (util_path(pkg, sizeof pkg, err, "%s/pkg", stage) < 0)
        return -1;
    _cleanup_close_ int pkg_fd = open(pkg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (pkg_fd < 0)
        return util_fail(err, EIO, "npm left no package directory (%s)", strerror(errno));
    struct stat st;
    if (fstatat(pkg_fd, p->exec, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return util_fail(err, EIO, "npm installed %s, but %s is not there", p->packages[0], p->exec);
    int bad = nftw(pkg, agents_check_entry, 32, FTW_PHYS | FTW_MOUNT);
    if (bad != 0)
        return bad > 0 ? util_fail(err, EIO, "npm left a file that is no regular file, directory or symlink")
                       : util_fail_errno(err, "cannot read what npm left in %s", pkg);
    json_t *manifest = agents_manifest(pkg_fd, p, key);
    int rc = manifest ? agents_write_manifest(pkg_fd, manifest, err) : util_fail(err, ENOMEM, "out of memory");
    json_decref(manifest);
    if (rc < 0 || agents_copy(pkg, copy, err) < 0)
        return -1;
    if (nftw(copy, agents_sanitize_entry, 32, FTW_PHYS | FTW_MOUNT) != 0)
        return util_fail_errno(err, "cannot make %s root-owned and read-only", copy);
    if (chmod(copy, 0755) < 0)
        return util_fail_errno(err, "chmod %s", copy);
    if (rename(copy, final) == 0)
        return 0;
    if (errno != EEXIST && errno != ENOTEMPTY)
        return util_fail_errno(err, "cannot move %s to %s", copy, final);
    /* A reinstall: swap atomically; running agents keep the old files open. */
    if (renameat2(AT_FDCWD, copy, AT_FDCWD, final, RENAME_EXCHANGE) < 0)
        return util_fail_errno(err, "cannot replace %s", final);
    return util_rm_rf(copy, err);    /* now the old install */
}

/* Did the install fill its staging filesystem?  Either it is (nearly)
 * full now or npm said ENOSPC (it may have removed what it wrote). */
static int agents_disk_full(const char *stage, const npm_out *o)
{
    struct statvfs v;
    if (statvfs(stage, &v) == 0 && ((uint64_t)v.f_bavail * v.f_frsize < AGENTS_FULL_SLACK || v.f_favail == 0))
        return 1;
    unsigned first = o->n_tail > AGENTS_TAIL_LINES ? o->n_tail - AGENTS_TAIL_LINES : 0;
    for (unsigned i = first; i < o->n_tail; i++)
        if (strstr(o->tail[i % AGENTS_TAIL_LINES], "ENOSPC"))
            return 1;
    return 0;
}

/* Boot the install cell on a staging filesystem of agents_disk bytes at
 * `stage`, within the host budget, and run npm; the reservation ends with
 * the install cell. */
static int agents_run(scell *sc, const agents_package *p, const char *stage, agents_net_ctx *net, npm_out *o,
                      int *status, agents_install_result *res, cell_error *err)
{
    char image[4200];
    if (util_path(image, sizeof image, err, "%s.img", stage) < 0)
        return -1;
    if (srv_limits_reserve(sc->s, AGENTS_INSTALL_MEMORY, AGENTS_INSTALL_PIDS, "this agent install", &res->budget,
                       err) < 0)
        return -1;
    int rc = cell_scratch_mount(image, stage, agents_disk, err);
    if (rc == 0) {
        rc = agents_npm(sc->s, p, stage, net, o, status, err);
        res->ran_npm = 1;
    }
    srv_limits_release(sc->s, AGENTS_INSTALL_MEMORY, AGENTS_INSTALL_PIDS);
    return rc;
}

/* Run npm for the cache key into a fresh staging dir; leave nothing behind
 * on failure. */
static int agents_build(scell *sc, const agents_package *p, const char *key, const char *final,
                        agents_progress_fn progress, void *user, agents_install_result *res, cell_error *err)
{
    agents_net_ctx net = { .s = sc->s, .tenant = sc->tenant, .key = key };
    char stage[4096], copy[4200], rnd[17];
    if (util_random_hex(rnd, 8) < 0)
        return util_fail(err, EIO, "no random bytes");
    rnd[16] = '\0';
    if (util_path(stage, sizeof stage, err, "%s/%s.%s", agents_staging, key, rnd) < 0 ||
        util_path(copy, sizeof copy, err, "%s.copy", stage) < 0)
        return -1;
    if (mkdir(stage, 0700) < 0)
        return util_fail_errno(err, "mkdir %s", stage);
    npm_out *o = calloc(1, sizeof *o);
    if (!o) {
        util_rm_rf(stage, NULL);
        return util_fail(err, ENOMEM, "out of memory");
    }
    o->progress = progress;
    o->user = user;
    int status = 0;
    int rc = agents_run(sc, p, stage, &net, o, &status, res, err);
    if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        res->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (rc == 0 && agents_disk_full(stage, o)) {
        /* Even if npm said it succeeded: what it wrote was cut short. */
        res->disk_limit = agents_disk;
        rc = util_fail(err, ENOSPC, "npm install %s wrote more than the install's disk limit of %llu bytes "
                       "(cell serve --limit agents.installDisk=)", p->packages[0], (unsigned long long)agents_disk);
        res->npm_failed = 1;
    } else if (rc == 0 && res->exit_code) {
        rc = util_fail(err, EIO, "npm install %s failed (exit %d)", p->packages[0], res->exit_code);
        res->npm_failed = 1;
    }
    if (rc == 0 && agents_finish(p, key, stage, copy, final, err) < 0) {
        rc = -1;
        res->npm_failed = 1;
    }
    if (rc < 0 && (res->npm_failed || err->code == ETIMEDOUT))
        res->npm_failed = 1, res->stderr_tail = npm_tail(o);
    free(o);
    /* Unmounted, the staging filesystem's blocks go back to the host. */
    cell_error e2 = { 0 };
    if (cell_scratch_unmount(stage, &e2) < 0 || util_rm_rf(stage, &e2) < 0 || util_rm_rf(copy, &e2) < 0)
        srv_slog(SLOG_ERROR, NULL, "agent install: %s", e2.message);
    if (rc == 0)
        agents_cache_scan();
    return rc;
}

/* ---- one install ----------------------------------------------------------------- */
static agents_flight *agents_flight_find_locked(const char *key)
{
    agents_flight *f = agents_flights;
    while (f && strcmp(f->key, key) != 0)
        f = f->next;
    return f;
}

static int agents_cached(const char *final)
{
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", final, AGENTS_MANIFEST);
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Wait out another install of this key; then either the cache has it
 * (*cached) or `me` is listed and this caller runs npm. */
static void agents_claim(agents_flight *me, const char *final, int force, agents_progress_fn progress,
                         void *user, int *cached)
{
    pthread_mutex_lock(&agents_lock);
    int said = 0;
    while (agents_flight_find_locked(me->key)) {
        if (progress && !said++) {
            char line[256];
            snprintf(line, sizeof line, "waiting for another install of %s", me->key);
            progress(user, line);
        }
        pthread_cond_wait(&agents_cond, &agents_lock);
    }
    *cached = !force && agents_cached(final);
    if (!*cached) {
        me->next = agents_flights;
        agents_flights = me;
    }
    pthread_mutex_unlock(&agents_lock);
}

static void agents_unclaim(agents_flight *me)
{
    pthread_mutex_lock(&agents_lock);
    for (agents_flight **f = &agents_flights; *f; f = &(*f)->next)
        if (*f == me) {
            *f = me->next;
            break;
        }
    pthread_cond_broadcast(&agents_cond);
    pthread_mutex_unlock(&agents_lock);
}

#define AGENTS_LAUNCHER_MARK "#!/bin/sh\n# cell: agent "

/* The first bytes of the cell's launcher ("" if there is none). */
static void agents_launcher_head(cell *c, const char *path, char *buf, size_t size)
{
    cell_xfer x = { .fd = -1, .status_fd = -1 };
    size_t n = 0;
    ssize_t r = 0;
    if (cell_file_read(c, path, &x, NULL) == 0) {
        while (n < size - 1 && (r = cell_xfer_read(&x, buf + n, size - 1 - n, NULL)) > 0)
            n += (size_t)r;
        cell_xfer_end(&x, NULL);
    }
    buf[r < 0 ? 0 : n] = '\0';
}

#define AGENTS_LAUNCHER_MAX 2048

/* The launcher this daemon writes for p over cache dir key: its length. */
static int agents_launcher_script(const agents_package *p, const char *key, char script[AGENTS_LAUNCHER_MAX],
                                  cell_error *err)
{
    int n = snprintf(script, AGENTS_LAUNCHER_MAX,
                     AGENTS_LAUNCHER_MARK "%s from %s (cache %s), read-only at " AGENTS_CACHE_TARGET "\n"
                     "PATH=" AGENTS_CACHE_TARGET "/%s/node_modules/.bin:$PATH\nexport PATH\n"
                     "%s"
                     "exec " AGENTS_CACHE_TARGET "/%s/%s %s\"$@\"\n",
                     p->id, p->packages[0], key, key, p->prelude ? p->prelude : "", key, p->exec, p->args);
    if (n < 0 || n >= AGENTS_LAUNCHER_MAX)
        return util_fail(err, ENAMETOOLONG, "launcher of %s too long", p->id);
    return n;
}

/* Is the launcher there and to be kept?  Ours is kept only as this daemon
 * writes it: one naming another cache directory (removed at start) or
 * written by an older daemon (other arguments) is not.  A client's own
 * launcher is kept. */
static int agents_launcher_there(scell *sc, const char *path, const char *script)
{
    char head[AGENTS_LAUNCHER_MAX + 1];
    srv_scell_io_lock(sc);
    head[0] = '\0';
    if (sc->c && !sc->dead)
        agents_launcher_head(sc->c, path, head, sizeof head);
    srv_scell_io_unlock(sc);
    if (!*head)
        return 0;
    return strncmp(head, AGENTS_LAUNCHER_MARK, strlen(AGENTS_LAUNCHER_MARK)) != 0 || strcmp(head, script) == 0;
}

static int agents_write_launcher(scell *sc, const agents_package *p, const char *script, size_t n, cell_error *err)
{
    const char *launcher = srv_agents_launcher(p->id);
    char dir[512];
    snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(launcher, '/') - launcher), launcher);
    return WITH_CELL(sc, err, cell_file_mkdir(sc->c, dir, 0755, 1, err) < 0
                                  ? -1 : srv_agents_cell_write(sc->c, launcher, 0755, script, n, err));
}

static void agents_audit(scell *sc, const char *who, const char *agent, const agents_install_result *res,
                         int rc, const cell_error *e)
{
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:s}", "kind", "agent_install", "tenant",
                            sc->tenant, "token", who ? who : "", "cell", sc->id, "agent", agent, "key", res->key,
                            "npm", res->ran_npm, "already", res->already, "outcome", rc == 0 ? "ok" : "failed");
    if (rec && rc < 0)
        json_object_set_new(rec, "error", json_string(e->message));
    if (rec)
        store_audit_append(sc->s->st, rec);
    json_decref(rec);
}

void srv_agents_describe(const agents_package *p, agents_install_result *res)
{
    agents_cache_key(p, res->key, sizeof res->key);
    snprintf(res->version, sizeof res->version, "%s", agents_version_of(p->packages[0]));
    snprintf(res->source, sizeof res->source, "npm");
    snprintf(res->path, sizeof res->path, AGENTS_CACHE_TARGET "/%s/%s", res->key, p->exec);
}

static int agents_install_npm(scell *sc, const agents_package *p, unsigned flags, agents_progress_fn progress,
                              void *user, agents_install_result *res, cell_error *err)
{
    char final[4096];
    srv_agents_describe(p, res);
    if (util_path(final, sizeof final, err, "%s/%s", agents_root, res->key) < 0)
        return -1;
    if (!srv_registry_running(sc))
        return util_fail(err, ECONNRESET, "cell %s is stopped", sc->id);
    char script[AGENTS_LAUNCHER_MAX];
    int len = agents_launcher_script(p, res->key, script, err);
    if (len < 0)
        return -1;
    int launcher = agents_launcher_there(sc, srv_agents_launcher(p->id), script);
    agents_flight me = { .key = res->key };
    int cached, rc = 0;
    agents_claim(&me, final, (flags & AGENTS_REFETCH) != 0, progress, user, &cached);
    if (!cached) {
        rc = agents_build(sc, p, res->key, final, progress, user, res, err);
        agents_unclaim(&me);
    }
    if (rc < 0)
        return -1;
    res->already = cached && launcher && !(flags & AGENTS_REINSTALL);
    return res->already ? 0 : agents_write_launcher(sc, p, script, (size_t)len, err);
}

int srv_agents_install(scell *sc, const char *agent, unsigned flags, const char *who, agents_progress_fn progress,
                   void *user, agents_install_result *res, cell_error *err)
{
    memset(res, 0, sizeof *res);
    if (strcmp(agent, "mock") == 0) {
        snprintf(res->version, sizeof res->version, "builtin");
        snprintf(res->source, sizeof res->source, "builtin");
        return srv_agents_install_mock(sc, (flags & AGENTS_REINSTALL) != 0, &res->already, err);
    }
    const agents_package *p = srv_agents_package_find(agent);
    if (!p)
        return util_fail(err, EINVAL, "unsupported agent: %s", agent);
    if (p->unavailable)
        return util_fail(err, EOPNOTSUPP, "%s: %s", agent, p->unavailable);
    srv_agents_worker_begin();
    int rc = agents_install_npm(sc, p, flags, progress, user, res, err);
    agents_audit(sc, who, agent, res, rc, err);
    srv_agents_worker_end();
    return rc;
}

void srv_agents_install_result_free(agents_install_result *res)
{
    json_decref(res->stderr_tail);
    json_decref(res->budget);
    res->stderr_tail = res->budget = NULL;
}

/* install_failed's details: npm's stderr tail and exit code, the disk
 * limit it hit. */
static json_t *agents_failure_details(const char *agent, const agents_install_result *res)
{
    json_t *details = json_pack("{s:s}", "agent", agent);
    if (res->npm_failed && res->stderr_tail)
        json_object_set(details, "stderr", res->stderr_tail);
    if (res->exit_code)
        json_object_set_new(details, "exitCode", json_integer(res->exit_code));
    if (res->disk_limit) {
        json_object_set_new(details, "limit", json_string("agents.installDisk"));
        json_object_set_new(details, "limitBytes", json_integer((json_int_t)res->disk_limit));
    }
    return details;
}

/* ---- answers for failed installs --------------------------------------------------- */
json_t *srv_agents_install_error_json(const char *agent, const agents_install_result *res, const cell_error *e,
                                  unsigned *status)
{
    const char *type = "install_failed", *title = "Install Failed", *words = "install failed";
    *status = 500;
    if (e->code == EOPNOTSUPP)
        *status = 501;
    else if (res->npm_failed)
        *status = 502;
    else if (e->code == ECONNRESET)
        *status = 409, type = "cell_stopped", title = "Cell Stopped", words = "cell stopped";
    else if (res->budget)
        *status = 409, type = "budget_exceeded", title = "Budget Exceeded", words = "budget exceeded";
    char uri[96], detail[1200];
    snprintf(uri, sizeof uri, "urn:sandbox-agent:error:%s", type);
    snprintf(detail, sizeof detail, "%s: %s", words, e->message);
    json_t *details = res->budget ? json_deep_copy(res->budget) : agents_failure_details(agent, res);
    return json_pack("{s:s, s:s, s:i, s:s, s:o}", "type", uri, "title", title, "status", (int)*status, "detail",
                     detail, "details", details);
}

int srv_agents_reply_install_error(sreq *r, const char *agent, const agents_install_result *res, const cell_error *e)
{
    if (res->budget && !res->npm_failed)
        return srv_reply_problem_details(r, 409, "budget_exceeded", json_deep_copy(res->budget), "%s", e->message);
    if (e->code != EOPNOTSUPP && !res->npm_failed)
        return srv_reply_error(r, e);
    return srv_reply_problem_details(r, e->code == EOPNOTSUPP ? 501 : 502, "install_failed",
                                 agents_failure_details(agent, res), "%s", e->message);
}
