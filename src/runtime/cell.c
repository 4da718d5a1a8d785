/* cell.c: the cell lifecycle of libcell: validate a definition, reserve a
 * uid range, boot through isolate_boot(), talk to cell-init, tear down. */
#include "runtime/cell_internal.h"
#include "runtime/image_meta.h"
#include "runtime/vfs.h"
#include "net/net.h"
#include "isolate/isolate.h"
#include "util/util.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define BOOT_TIMEOUT_MS  30000
#define REPLY_TIMEOUT_MS 30000
/* Policed cells' trust store: the image's bundle plus the egress CA after
 * this marker (cut off and renewed at each boot, for lanes). */
#define CELL_CA_BUNDLE   "/etc/ssl/certs/ca-certificates.crt"
#define CELL_CA_MARK     "# cell egress CA (added at boot; replaced at each boot)\n"

/* ---- validation --------------------------------------------------------- */

/* One DNS label (sethostname and the /etc/hosts line take no more): the
 * rule of cell_config, cell_options and cell_set_hostname. */
int runtime_valid_hostname(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 63 || h[0] == '-' || h[n - 1] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') || (h[i] >= '0' && h[i] <= '9') || h[i] == '-'))
            return 0;
    return 1;
}

int runtime_check_cell_path(const char *path, const char *what, cell_error *err)
{
    if (!path || path[0] != '/')
        return util_fail(err, EINVAL, "%s '%s' must be an absolute path inside the cell (e.g. /workspace)",
                         what, path ? path : "");
    if (strlen(path) >= PATH_MAX / 2)
        return util_fail(err, ENAMETOOLONG, "%s is too long", what);
    /* ".." would be harmless (resolution stays inside the cell) but it is
     * always a mistake or an attack; say so instead of guessing. */
    for (const char *p = path; (p = strstr(p, "..")); p += 2) {
        int starts = p == path || p[-1] == '/';
        int ends = p[2] == '\0' || p[2] == '/';
        if (starts && ends)
            return util_fail(err, EINVAL, "%s '%s' must not contain '..'", what, path);
    }
    return 0;
}

/* "/a//b/./c/" -> "/a/b/c" (".." is refused before this). */
static void canonical_cell_path(const char *in, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = in; *p;) {
        while (*p == '/')
            p++;
        size_t n = strcspn(p, "/");
        if (n == 0)
            break;
        if (!(n == 1 && p[0] == '.') && o + 1 + n < size) {
            out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
}

/* A BIND or OVERLAY source opened (O_PATH) with no symlink in any component:
 * this fd, not the path, is what gets mounted, so nothing swapped in later
 * can redirect it.  Callers that take paths from people canonicalise them
 * when the cell is defined (cell_options_add_bind, the daemon's API). */
static int open_mount_source(const cell_mount *m, struct isolate_mount *out, cell_error *err)
{
    if (!m->source || !*m->source)
        return util_fail(err, EINVAL, "mount for %s has no source directory", m->target);
    struct open_how how = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
    out->src_fd = (int)syscall(SYS_openat2, AT_FDCWD, m->source, &how, sizeof how);
    struct stat st;
    /* A link to nothing is a missing source first: say that. */
    if (out->src_fd < 0 && errno == ELOOP && stat(m->source, &st) < 0)
        return util_fail_errno(err, "mount source %s for %s does not exist (a symbolic link to nothing)", m->source,
                               m->target);
    if (out->src_fd < 0 && errno == ELOOP)
        return util_fail(err, ELOOP, "mount source %s for %s has a symbolic link in its path (refused: a link "
                         "swapped in after a check could redirect the mount); name its real path", m->source,
                         m->target);
    if (out->src_fd < 0)
        return util_fail_errno(err, "mount source %s for %s does not exist or is not accessible", m->source,
                               m->target);
    /* For messages: where the fd really is. */
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", out->src_fd);
    ssize_t n = readlink(link, out->source, sizeof out->source - 1);
    if (n < 0)
        return util_fail_errno(err, "cannot read the path of mount source %s", m->source);
    out->source[n] = '\0';
    if (fstat(out->src_fd, &st) < 0)
        return util_fail_errno(err, "cannot stat mount source %s", m->source);
    if (m->kind == CELL_MOUNT_OVERLAY && !S_ISDIR(st.st_mode))
        return util_fail(err, ENOTDIR, "overlay source %s for %s must be a directory", m->source, m->target);
    return 0;
}

static int check_mount(const cell_mount *m, struct isolate_mount *out, cell_error *err)
{
    /* First, so that a failure leaves nothing for close_bind_trees to close. */
    memset(out, 0, sizeof *out);
    out->src_fd = out->tree_fd = -1;
    if (runtime_check_cell_path(m->target, "mount target", err) < 0)
        return -1;
    char target[PATH_MAX];
    canonical_cell_path(m->target, target, sizeof target);
    if (strcmp(target, "/") == 0)
        return util_fail(err, EINVAL, "mount target '/' would hide the cell's root; pick a directory such as /workspace");
    static const char *const reserved[] = { "/proc", "/dev", "/sys", NULL };
    for (const char *const *r = reserved; *r; r++) {
        size_t n = strlen(*r);
        if (strncmp(target, *r, n) == 0 && (target[n] == '\0' || target[n] == '/'))
            return util_fail(err, EINVAL, "mount target '%s' is inside %s, which the cell runtime owns", m->target, *r);
    }
    out->kind = (int)m->kind;
    out->readonly = m->readonly;
    snprintf(out->target, sizeof out->target, "%s", target);
    if (m->kind == CELL_MOUNT_BIND || m->kind == CELL_MOUNT_OVERLAY) {
        if (open_mount_source(m, out, err) < 0)
            return -1;
        if (m->kind == CELL_MOUNT_OVERLAY)
            out->size = m->size ? m->size : CELL_DEFAULT_DISK;
    } else if (m->kind == CELL_MOUNT_MEMORY) {
        out->size = m->size ? m->size : 64ull << 20;
    } else {
        return util_fail(err, EINVAL, "mount for %s has an unknown kind %d", m->target, (int)m->kind);
    }
    return 0;
}

/* ---- resources ---------------------------------------------------------- */

/* A uid range is owned by whoever holds the flock on its slot file, so a
 * crashed owner frees its range with its file table.  The slot files are
 * host-wide (not per state directory): two owners with different state
 * directories must never hand out the same range.
 *
 * The lock alone is not enough: a dying owner's files are closed (the lock
 * released) before its children get their parent-death signal, so for a
 * moment the old cell still runs on a range the lock calls free, and a new
 * cell given it would share host ids with it (signals, ptrace, files).
 * The owner therefore writes its cell's init ("PID START", record_slot)
 * into the file, and a range is taken only once that init is gone: the
 * init is pid 1 of the cell's pid namespace, which the kernel empties
 * before the init's exit completes, so nothing of the cell outlives it
 * (tests/integration/test_oci_uidrange.py, cells). */
static int slot_init_alive(int fd)
{
    char buf[64];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    long pid;
    unsigned long long start;
    return sscanf(buf, "%ld %llu", &pid, &start) == 2 && pid > 0 && util_pid_start_time((pid_t)pid) == start;
}

static int reserve_slot(uid_t *base, int *fd_out, cell_error *err)
{
    if (util_mkdir_p(ISOLATE_SLOT_DIR, 0700, err) < 0)
        return -1;
    for (unsigned i = 0; i < ISOLATE_MAX_SLOTS; i++) {
        char path[PATH_MAX];
        if (util_path(path, sizeof path, err, "%s/%u.lock", ISOLATE_SLOT_DIR, i) < 0)
            return -1;
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
            return util_fail_errno(err, "cannot open %s", path);
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 && !slot_init_alive(fd)) {
            *base = ISOLATE_UID_FIRST + i * ISOLATE_UID_COUNT;
            *fd_out = fd;
            return 0;
        }
        close(fd);
    }
    return util_fail(err, EAGAIN, "all %u cell uid ranges are in use", ISOLATE_MAX_SLOTS);
}

/* Name the cell's init in its slot file (see reserve_slot). */
static int record_slot(cell *c, cell_error *err)
{
    char line[64];
    uint64_t start = util_pid_start_time(c->pid);
    if (start == 0)
        return util_fail(err, ESRCH, "the cell's init %d died while it booted", (int)c->pid);
    int n = snprintf(line, sizeof line, "%d %llu\n", (int)c->pid, (unsigned long long)start);
    if (ftruncate(c->slot_fd, 0) < 0 || pwrite(c->slot_fd, line, (size_t)n, 0) != n)
        return util_fail_errno(err, "cannot record the cell's init in its uid range's slot file");
    return 0;
}

/* The scratch dir is the cell's one entry in the state directory: its
 * presence names a running cell, and the flock on it says whether its owner
 * is alive (ctx.c sweeps the dead ones).  Its contents live on a tmpfs that
 * the boot child mounts in its own namespace (see boot.c). */
static int make_run_dir(cell *c, cell_error *err)
{
    char tmp[PATH_MAX];
    if (util_path(c->run_dir, sizeof c->run_dir, err, "%s/run/cells/%s", c->ctx->state_dir, c->id) < 0 ||
        util_path(tmp, sizeof tmp, err, "%s/run/cells/.new-%s", c->ctx->state_dir, c->id) < 0)
        return -1;
    /* Made and locked under a hidden name, then renamed (the lock follows
     * the inode): a visible scratch dir is always either locked by a live
     * owner or stale, so the sweeper never races a booting cell. */
    if (mkdir(tmp, 0700) < 0) {
        util_fail_errno(err, "cannot create %s", tmp);
        c->run_dir[0] = '\0';
        return -1;
    }
    c->run_lock_fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c->run_lock_fd < 0 || flock(c->run_lock_fd, LOCK_EX) < 0 || rename(tmp, c->run_dir) < 0) {
        util_fail_errno(err, "cannot lock and install %s", c->run_dir);
        rmdir(tmp);
        c->run_dir[0] = '\0';
        return -1;
    }
    return 0;
}

static void format_hosts(const char *hostname, char *out, size_t size)
{
    snprintf(out, size, "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n", hostname);
}

/* ---- control channel ------------------------------------------------------- */

static int queue_exit(cell *c, const ctl_msg *m)
{
    if (c->n_pending == c->cap_pending) {
        size_t cap = c->cap_pending ? c->cap_pending * 2 : 16;
        cell_exit *p = realloc(c->pending, cap * sizeof *p);
        if (!p)
            return -1;
        c->pending = p;
        c->cap_pending = cap;
    }
    c->pending[c->n_pending++] = (cell_exit){ .pid = (pid_t)m->u[0], .status = (int)m->u[1] };
    return 0;
}

/* If m is an exit notification, queue it and free m: 1 queued, 0 not an
 * exit (m untouched), -1 out of memory. */
static int queue_if_exit(cell *c, ctl_msg *m, cell_error *err)
{
    if (m->type != CTL_EXIT)
        return 0;
    int q = queue_exit(c, m);
    ctl_msg_free(m);
    return q < 0 ? util_fail(err, ENOMEM, "out of memory") : 1;
}

/* Receive one message within timeout_ms.  Returns 1, 0 on timeout, -1. */
static int receive(cell *c, int timeout_ms, ctl_msg *m, cell_error *err)
{
    if (c->dead)
        return util_fail(err, ECONNRESET, "cell %s has stopped", c->id);
    struct pollfd p = { .fd = c->ctl, .events = POLLIN };
    int r;
    do
        r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return util_fail_errno(err, "poll on cell %s", c->id);
    if (r == 0)
        return 0;
    if (ctl_recv(c->ctl, m) < 0) {
        if (errno == EBADMSG)
            return util_fail(err, EBADMSG, "cell %s sent a malformed control message", c->id);
        c->dead = 1;
        return util_fail(err, ECONNRESET, "cell %s has stopped (its init exited)", c->id);
    }
    return 1;
}

int runtime_request(cell *c, uint32_t type, const uint32_t *u, const char *const *str, uint32_t nstr,
                    const int *fds, int nfds, ctl_msg *reply, cell_error *err)
{
    uint32_t seq = ++c->seq;
    if (ctl_send(c->ctl, type, seq, 0, u, str, nstr, fds, nfds) < 0) {
        if (errno == E2BIG)
            return util_fail(err, E2BIG, "request too large for the control channel (limit %d bytes of "
                             "arguments and environment)", CTL_MAX_MSG);
        c->dead = 1;
        return util_fail_errno(err, "cannot talk to cell %s", c->id);
    }
    for (;;) {
        ctl_msg m;
        int r = receive(c, REPLY_TIMEOUT_MS, &m, err);
        if (r < 0)
            return -1;
        if (r == 0)
            return util_fail(err, ETIMEDOUT, "cell %s did not answer within %d s", c->id, REPLY_TIMEOUT_MS / 1000);
        int queued = queue_if_exit(c, &m, err);
        if (queued < 0)
            return -1;
        if (queued)
            continue;
        if (m.type != CTL_REPLY || m.seq != seq) {
            ctl_msg_free(&m);
            continue;
        }
        if (m.err != 0) {
            int code = m.err > 0 && m.err < 4096 ? m.err : EIO;
            util_fail(err, code, "%s", m.nstr > 0 ? m.str[0] : "cell-init refused the request");
            ctl_msg_free(&m);
            return -1;
        }
        *reply = m;
        return 0;
    }
}

/* ---- lifecycle -------------------------------------------------------------- */

static int wait_for_hello(cell *c, cell_error *err)
{
    ctl_msg m;
    int r = receive(c, BOOT_TIMEOUT_MS, &m, err);
    if (r == 0)
        return util_fail(err, ETIMEDOUT, "cell %s did not finish booting within %d s", c->id, BOOT_TIMEOUT_MS / 1000);
    if (r < 0) {
        if (err)
            snprintf(err->message, sizeof err->message, "cell %s died while booting", c->id);
        return -1;
    }
    int rc = 0;
    if (m.type == CTL_BOOT_ERROR)
        rc = util_fail(err, m.err > 0 && m.err < 4096 ? m.err : EIO, "cannot boot the cell: %s",
                       m.nstr ? m.str[0] : "unknown error");
    else if (m.type != CTL_HELLO || m.u[0] != CTL_VERSION)
        rc = util_fail(err, EPROTO, "cell-init spoke an unexpected protocol (message %u, version %u)", m.type, m.u[0]);
    ctl_msg_free(&m);
    return rc;
}

static int fill_plan(cell *c, const cell_config *cfg, const struct runtime_masks *masks, struct isolate_plan *plan,
                     const char *hostname, cell_error *err)
{
    const char *image = cfg->image ? cfg->image : "host";
    char lane_image[64] = "";
    snprintf(plan->run_dir, sizeof plan->run_dir, "%s", c->run_dir);
    if (cfg->lane) {
        char who[64];
        snprintf(who, sizeof who, "cell %s", c->id);
        if (runtime_lane_acquire(c->ctx, cfg->lane, who, lane_image, sizeof lane_image, plan->lane_dir,
                                 sizeof plan->lane_dir, &c->lane_fd, err) < 0)
            return -1;
        if (cfg->image && strcmp(cfg->image, lane_image) != 0)
            return util_fail(err, EINVAL, "lane '%s' is bound to image '%s', not '%s'", cfg->lane, lane_image, cfg->image);
        image = lane_image;
        if (cfg->limits.disk)
            return util_fail(err, EINVAL, "a lane's size is fixed when it is created (cell lane create %s --size "
                             "SIZE); drop --disk when running on a lane", cfg->lane);
        char disk[PATH_MAX];
        if (util_path(disk, sizeof disk, err, "%s/" RUNTIME_LANE_DISK, plan->lane_dir) < 0)
            return -1;
        if (access(disk, F_OK) == 0 &&
            isolate_loop_attach(disk, &c->loop_fd, plan->lane_dev, sizeof plan->lane_dev, err) < 0)
            return -1;
    }
    /* A stored image: marked as this cell's before it is looked up, so
     * that `cell image rm` sees the cell (image_store.c). */
    if (runtime_image_meta_check_name(image, NULL) == 0 && runtime_image_mark_user(c->run_dir, image, err) < 0)
        return -1;
    if (runtime_image_rootfs(c->ctx, image, plan->image_root, sizeof plan->image_root, err) < 0)
        return -1;
    plan->image_is_host = strcmp(image, "host") == 0;
    plan->disk = cfg->limits.disk ? cfg->limits.disk : CELL_DEFAULT_DISK;
    /* The throwaway layer is a tmpfs, whose pages are charged to the memory
     * cgroup of the cell process that writes them: it is memory, counted in
     * the cell's memory limit (and so in a tenant's memory quota).  Capped
     * at 3/4 of that limit, leaving the rest to the cell's processes, a
     * write past it is ENOSPC rather than the OOM killer. */
    if (cfg->limits.memory && plan->disk > cfg->limits.memory / 4 * 3)
        plan->disk = cfg->limits.memory / 4 * 3;
    plan->uid_base = c->uid_base;
    plan->init_fd = c->ctx->init_memfd;
    plan->seccomp = &c->ctx->seccomp;
    snprintf(plan->hostname, sizeof plan->hostname, "%s", hostname);
    format_hosts(hostname, plan->hosts, sizeof plan->hosts);
    if (cfg->n_mounts > ISOLATE_MAX_MOUNTS)
        return util_fail(err, E2BIG, "too many mounts (%zu, at most %d)", cfg->n_mounts, ISOLATE_MAX_MOUNTS);
    for (size_t i = 0; i < cfg->n_mounts; i++) {
        plan->n_mounts = i + 1;
        if (check_mount(&cfg->mounts[i], &plan->mounts[i], err) < 0)
            return -1;
        /* An overlay's upper tmpfs is memory like the throwaway layer:
         * the same cap keeps a full one ENOSPC rather than an OOM kill. */
        if (plan->mounts[i].kind == CELL_MOUNT_OVERLAY && cfg->limits.memory &&
            plan->mounts[i].size > cfg->limits.memory / 4 * 3)
            plan->mounts[i].size = cfg->limits.memory / 4 * 3;
    }
    if (runtime_masks_prepare(plan, masks, err) < 0)
        return -1;
    /* In-cell root writes as host root through a read-write host mount;
     * such cells may not create setuid/setgid files or file capabilities.
     * Not for an overlay: what the cell writes there stays in its tmpfs. */
    plan->nosuid_fd = -1;
    for (size_t i = 0; i < plan->n_mounts; i++)
        if (plan->mounts[i].kind == CELL_MOUNT_BIND && !plan->mounts[i].readonly &&
            (plan->nosuid_fd = runtime_nosuid_fd(c->ctx, err)) < 0)
            return -1;
    return 0;
}

static int make_bind_trees(struct isolate_plan *plan, cell_error *err)
{
    for (size_t i = 0; i < plan->n_mounts; i++) {
        struct isolate_mount *m = &plan->mounts[i];
        if (m->src_fd < 0)
            continue;
        /* An overlay's lower layer is the source read-only, as a read-only
         * bind would show it. */
        int ro = m->readonly || m->kind == CELL_MOUNT_OVERLAY;
        if (isolate_bind_tree(m->src_fd, m->source, plan->userns_fd, ro, &m->tree_fd, err) < 0)
            return -1;
        close(m->src_fd);
        m->src_fd = -1;
    }
    return 0;
}

static void close_bind_trees(struct isolate_plan *plan)
{
    for (size_t i = 0; i < plan->n_mounts; i++) {
        struct isolate_mount *m = &plan->mounts[i];
        if (m->src_fd >= 0)
            close(m->src_fd);
        if (m->tree_fd >= 0)
            close(m->tree_fd);
        m->src_fd = m->tree_fd = -1;
    }
}

static int seed_memory_mounts(cell *c, const cell_config *cfg, cell_error *err)
{
    for (size_t i = 0; i < cfg->n_mounts; i++) {
        const cell_mount *m = &cfg->mounts[i];
        for (size_t j = 0; m->kind == CELL_MOUNT_MEMORY && j < m->n_seed; j++) {
            const cell_seed_file *s = &m->seed[j];
            char path[PATH_MAX];
            if (!s->path || !*s->path)
                return util_fail(err, EINVAL, "seed file %zu of mount %s has no path", j, m->target);
            if (util_path(path, sizeof path, err, "%s/%s", m->target, s->path) < 0 ||
                runtime_check_cell_path(path, "seed file", err) < 0)
                return -1;
            if (runtime_write_whole(c, path, s->data, s->size, s->mode ? s->mode : 0644, err) < 0)
                return -1;
        }
    }
    return 0;
}

/* The image's bundle (without what an earlier boot of a lane appended), or
 * "" when the image has none. */
static int read_bundle(cell *c, char **out, size_t *len, cell_error *err)
{
    cell_xfer x;
    cell_error oe = { 0 };
    *out = NULL;
    *len = 0;
    if (cell_file_read(c, CELL_CA_BUNDLE, &x, &oe) < 0) {
        if (oe.code == ENOENT)
            return 0;
        if (err)
            *err = oe;
        return -1;
    }
    size_t cap = 0;
    for (;;) {
        if (*len + 65536 > cap) {
            char *p = cap + 65536 > (64u << 20) ? NULL : realloc(*out, cap += 65536);
            if (!p) {
                cell_xfer_end(&x, NULL);
                return util_fail(err, EFBIG, "%s is too large to extend with the egress CA", CELL_CA_BUNDLE);
            }
            *out = p;
        }
        ssize_t n = cell_xfer_read(&x, *out + *len, cap - *len - 1, &oe);
        if (n < 0) {
            cell_xfer_end(&x, NULL);
            return util_fail(err, oe.code, "read %s in cell %s: %s", CELL_CA_BUNDLE, c->id, oe.message);
        }
        if (n == 0)
            break;
        *len += (size_t)n;
    }
    if (cell_xfer_end(&x, &oe) < 0)
        return util_fail(err, oe.code, "read %s in cell %s: %s", CELL_CA_BUNDLE, c->id, oe.message);
    (*out)[*len] = '\0';
    char *mark = strstr(*out, CELL_CA_MARK);
    if (mark)
        *len = (size_t)(mark - *out);
    return 0;
}

/* Intercepted HTTPS must verify inside the cell: the CA's certificate (never
 * its key) goes into the cell's bundle and a file of its own.  A cell where
 * that fails is not started (fail closed, not a cell whose TLS breaks). */
static int install_ca(cell *c, cell_error *err)
{
    char *pem = NULL, *bundle = NULL;
    size_t pem_len = 0, len = 0;
    int rc = -1;
    if (net_engine_ca_pem(c->net, &pem, &pem_len, err) < 0 || read_bundle(c, &bundle, &len, err) < 0 ||
        cell_file_mkdir(c, "/etc/ssl/certs", 0755, 1, err) < 0)
        goto out;
    size_t total = len + 1 + strlen(CELL_CA_MARK) + pem_len;
    char *all = malloc(total + 1);
    if (!all) {
        util_fail(err, ENOMEM, "out of memory");
        goto out;
    }
    int nl = len && bundle[len - 1] != '\n';
    memcpy(all, bundle ? bundle : "", len);
    total = len + (size_t)sprintf(all + len, "%s%s%s", nl ? "\n" : "", CELL_CA_MARK, pem);
    rc = runtime_write_whole(c, "/etc/ssl/certs/cell-egress-ca.pem", pem, pem_len, 0644, err) < 0 ||
         runtime_write_whole(c, CELL_CA_BUNDLE, all, total, 0644, err) < 0 ? -1 : 0;
    free(all);
out:
    if (rc < 0 && err)
        snprintf(err->message + strlen(err->message), sizeof err->message - strlen(err->message),
                 " (installing the egress CA into cell %s)", c->id);
    free(pem);
    free(bundle);
    return rc;
}

/* A policed cell: its engine wires the network namespace before any process
 * of the cell runs, and the cell resolves through it. */
static int start_network(cell *c, const cell_config *cfg, cell_error *err)
{
    if (!cfg->policy)
        return 0;
    net_hooks hooks = { .decide = cfg->net_decide, .event = cfg->net_event, .secret = cfg->net_secret,
                        .user = cfg->net_user, .upstream_ca_file = cfg->upstream_ca_file };
    /* A lane's CA lives beside its layer, outside what the cell sees. */
    char ca_dir[PATH_MAX];
    if (cfg->lane) {
        if (runtime_lane_dir(c->ctx, cfg->lane, ca_dir, sizeof ca_dir - 16, err) < 0)
            return -1;
        strcat(ca_dir, "/egress-ca");
        hooks.ca_dir = ca_dir;
    }
    if (net_engine_start(&c->net, c->pidfd, c->id, cfg->policy, &hooks, err) < 0)
        return -1;
    /* What the cell's traffic costs (the helper's threads, TLS buffers,
     * upstream sockets, CPU) is the cell's: a cell that opens a thousand
     * slow flows spends its own pids and memory, not the host's. */
    pid_t helper = net_engine_pid(c->net);
    if (c->cg && (helper <= 0 || isolate_cgroup_attach(c->cg, helper, err) < 0))
        return helper <= 0 ? util_fail(err, ECHILD, "the egress helper of cell %s ended while starting", c->id)
                           : -1;
    static const char resolv[] = "nameserver 127.0.0.1\noptions edns0\n";
    if (runtime_write_whole(c, "/etc/resolv.conf", resolv, sizeof resolv - 1, 0644, err) < 0)
        return -1;
    return install_ca(c, err);
}

int cell_set_policy(cell *c, const char *policy_json, cell_error *err)
{
    if (!c->net)
        return util_fail(err, EPERM, "cell %s was created without a network policy; its network cannot be "
                         "opened later (create it with a policy, even one that denies everything)", c->id);
    return net_engine_set_policy(c->net, policy_json, err);
}

int cell_create(cell_ctx *ctx, const cell_config *cfg, cell **out, cell_error *err)
{
    return runtime_cell_create(ctx, cfg, NULL, out, err);
}

int runtime_cell_create(cell_ctx *ctx, const cell_config *cfg, const struct runtime_masks *masks, cell **out,
                        cell_error *err)
{
    return runtime_cell_create_vfs(ctx, cfg, masks, NULL, 0, out, err);
}

/* The vfs mounts go after cfg's, as plan mounts of kind ISOLATE_MOUNT_VFS;
 * no other mount may lie inside one (the boot child would have to go
 * through FUSE before anyone serves it). */
static int plan_vfs(struct isolate_plan *plan, const struct runtime_vfs_spec *vfs, size_t n_vfs, cell_error *err)
{
    size_t first = plan->n_mounts;
    if (first + n_vfs > ISOLATE_MAX_MOUNTS)
        return util_fail(err, E2BIG, "too many mounts (%zu, at most %d)", first + n_vfs, ISOLATE_MAX_MOUNTS);
    for (size_t i = 0; i < n_vfs; i++) {
        /* Checked as a tmpfs's target is; the kind is not one a caller of
         * cell_create can name. */
        cell_mount m = { .kind = CELL_MOUNT_MEMORY, .target = vfs[i].target };
        struct isolate_mount *pm = &plan->mounts[first + i];
        plan->n_mounts = first + i + 1;
        if (check_mount(&m, pm, err) < 0)
            return -1;
        pm->kind = ISOLATE_MOUNT_VFS;
        pm->size = 0;
        pm->readonly = vfs[i].tier == CELL_VFS_READONLY;
        pm->fuse_fd = -1;
    }
    for (size_t i = first; i < plan->n_mounts; i++)
        for (size_t j = 0; j < plan->n_mounts; j++) {
            const char *t = plan->mounts[i].target, *o = plan->mounts[j].target;
            size_t n = strlen(t);
            if (i != j && strncmp(o, t, n) == 0 && (o[n] == '/' || o[n] == '\0'))
                return util_fail(err, EINVAL, "mount target %s lies inside the virtual filesystem at %s (or is "
                                 "the same); mount it elsewhere", o, t);
        }
    return 0;
}

/* Open /dev/fuse for each vfs (the boot child mounts those fds). */
static int open_vfs(cell *c, struct isolate_plan *plan, const struct runtime_vfs_spec *vfs, size_t n_vfs,
                    cell_error *err)
{
    if (!n_vfs)
        return 0;
    const runtime_vfs_ops *ops = runtime_vfs(err);
    if (!ops)
        return -1;
    size_t first = plan->n_mounts - n_vfs;
    for (size_t i = 0; i < n_vfs; i++) {
        if (ops->open(&vfs[i], c->uid_base, c->uid_base, &c->vfs[i], &plan->mounts[first + i].fuse_fd, err) < 0)
            return -1;
        c->n_vfs = i + 1;
    }
    return 0;
}

static int serve_vfs(cell *c, cell_error *err)
{
    for (size_t i = 0; i < c->n_vfs; i++)
        if (runtime_vfs(NULL)->serve(c->vfs[i], err) < 0)
            return -1;
    return 0;
}

int runtime_cell_create_vfs(cell_ctx *ctx, const cell_config *cfg, const struct runtime_masks *masks,
                            const struct runtime_vfs_spec *vfs, size_t n_vfs, cell **out, cell_error *err)
{
    cell *c = calloc(1, sizeof *c);
    struct isolate_plan *plan = calloc(1, sizeof *plan);
    if (!c || !plan) {
        free(c);
        free(plan);
        return util_fail(err, ENOMEM, "out of memory");
    }
    c->ctx = ctx;
    c->slot_fd = c->lane_fd = c->run_lock_fd = c->ctl = c->pidfd = c->loop_fd = -1;
    plan->userns_fd = plan->ctl_fd = -1;
    int sv[2] = { -1, -1 };
    char hostname[64];

    if (util_random_hex(c->id, 8) < 0) {
        util_fail_errno(err, "getrandom");
        goto fail;
    }
    snprintf(hostname, sizeof hostname, "%s", cfg->hostname ? cfg->hostname : "");
    if (!cfg->hostname)
        snprintf(hostname, sizeof hostname, "cell-%.8s", c->id);
    if (!runtime_valid_hostname(hostname)) {
        util_fail(err, EINVAL, "invalid hostname '%s': use 1-63 letters, digits and '-'", hostname);
        goto fail;
    }
    if (reserve_slot(&c->uid_base, &c->slot_fd, err) < 0 || make_run_dir(c, err) < 0 ||
        fill_plan(c, cfg, masks, plan, hostname, err) < 0 || plan_vfs(plan, vfs, n_vfs, err) < 0 ||
        open_vfs(c, plan, vfs, n_vfs, err) < 0)
        goto fail;
    /* Cgroups exist to enforce limits; a cell without any needs none (its
     * pid namespace already guarantees it dies whole), and skipping them
     * saves a millisecond per boot on cgroup v1. */
    const cell_limits *lim = &cfg->limits;
    if ((lim->memory || lim->pids || lim->cpu_millis) && isolate_cgroup_create(c->id, lim, &c->cg, err) < 0)
        goto fail;
    if ((plan->userns_fd = runtime_userns_for_slot(ctx, c->uid_base, err)) < 0)
        goto fail;
    if (make_bind_trees(plan, err) < 0)
        goto fail;
    if (c->cg && isolate_cgroup_open_self_attach(c->cg, plan->cgroup_fds, sizeof plan->cgroup_fds / sizeof *plan->cgroup_fds,
                                                 &plan->n_cgroup_fds, err) < 0)
        goto fail;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        util_fail_errno(err, "socketpair for the control channel");
        goto fail;
    }
    c->ctl = sv[0];
    plan->ctl_fd = sv[1];
    /* The child joins its cgroups itself (v1 and v2) as its first act, so it
     * waits for nothing: it boots at once, sharing this process's memory
     * until it execs (isolate_boot). */
    c->pid = isolate_boot(plan, &c->pidfd, err);
    close(sv[1]);
    plan->ctl_fd = -1;
    close_bind_trees(plan);
    for (size_t i = 0; i < plan->n_cgroup_fds; i++)
        close(plan->cgroup_fds[i]);
    plan->n_cgroup_fds = 0;
    plan->userns_fd = -1; /* the context's cache owns it */
    if (c->pid < 0) {
        c->pid = 0;
        goto fail;
    }
    if (record_slot(c, err) < 0 || wait_for_hello(c, err) < 0 || serve_vfs(c, err) < 0 ||
        seed_memory_mounts(c, cfg, err) < 0 ||
        start_network(c, cfg, err) < 0)
        goto fail;
    free(plan);
    /* The cell's mount now holds the loop device; autoclear frees it then. */
    if (c->loop_fd >= 0) {
        close(c->loop_fd);
        c->loop_fd = -1;
    }
    *out = c;
    return 0;
fail:
    close_bind_trees(plan);
    for (size_t i = 0; i < plan->n_cgroup_fds; i++)
        close(plan->cgroup_fds[i]);
    free(plan);
    cell_destroy(c);
    return -1;
}

void cell_destroy(cell *c)
{
    if (!c)
        return;
    net_engine_stop(c->net);
    if (c->pid > 0) {
        if (c->pidfd >= 0)
            syscall(SYS_pidfd_send_signal, c->pidfd, SIGKILL, NULL, 0);
        else
            kill(c->pid, SIGKILL);
        while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    if (c->ctl >= 0)
        close(c->ctl);
    if (c->pidfd >= 0)
        close(c->pidfd);
    /* The mount namespace is gone with init, ending each FUSE connection:
     * the servers stop once their callbacks in progress return. */
    for (size_t i = 0; i < c->n_vfs; i++)
        runtime_vfs(NULL)->close(c->vfs[i]);
    /* Init's death took the pid namespace down (the kernel reaps every
     * process in it before init's exit completes); destroy kills whatever
     * could still be in the cgroups, then removes them. */
    isolate_cgroup_destroy(c->cg);
    if (c->run_dir[0])
        util_rm_rf(c->run_dir, NULL);
    if (c->run_lock_fd >= 0)
        close(c->run_lock_fd);
    if (c->loop_fd >= 0)
        close(c->loop_fd);
    if (c->lane_fd >= 0)
        close(c->lane_fd);
    if (c->slot_fd >= 0)
        close(c->slot_fd);
    free(c->pending);
    free(c);
}

const char *cell_id(const cell *c) { return c->id; }
pid_t cell_init_pid(const cell *c) { return c->pid; }
uid_t cell_uid_base(const cell *c) { return c->uid_base; }
int cell_event_fd(const cell *c) { return c->ctl; }

/* ---- processes ---------------------------------------------------------------- */

static const char *const default_env[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root", "LANG=C.UTF-8", NULL,
};

/* Tools that bring their own trust store (Python requests, Node, git,
 * curl builds without the system store) are pointed at the bundle that
 * trusts the egress CA, unless the caller chose one. */
static const char *const ca_env[] = {
    "SSL_CERT_FILE=" CELL_CA_BUNDLE, "REQUESTS_CA_BUNDLE=" CELL_CA_BUNDLE, "NODE_EXTRA_CA_CERTS=" CELL_CA_BUNDLE,
    "CURL_CA_BUNDLE=" CELL_CA_BUNDLE, "GIT_SSL_CAINFO=" CELL_CA_BUNDLE, NULL,
};

static int env_has(const char *const *env, const char *assign)
{
    size_t n = strcspn(assign, "=") + 1;
    for (; *env; env++)
        if (strncmp(*env, assign, n) == 0)
            return 1;
    return 0;
}

/* env plus the CA variables it lacks; a malloc()ed array of borrowed strings. */
static const char **env_with_ca(const char *const *env, cell_error *err)
{
    size_t n = 0;
    while (env[n])
        n++;
    const char **out = calloc(n + sizeof ca_env / sizeof *ca_env, sizeof *out);
    if (!out) {
        util_fail(err, ENOMEM, "out of memory");
        return NULL;
    }
    memcpy(out, env, n * sizeof *out);
    for (const char *const *v = ca_env; *v; v++)
        if (!env_has(env, *v))
            out[n++] = *v;
    return out;
}

int cell_spawn(cell *c, const cell_proc_spec *spec, pid_t *pid, int *pty_fd, cell_error *err)
{
    if (pty_fd)
        *pty_fd = -1;
    if (!spec->argv || !spec->argv[0] || !*spec->argv[0])
        return util_fail(err, EINVAL, "no command given");
    if (spec->cwd && runtime_check_cell_path(spec->cwd, "working directory", err) < 0)
        return -1;
    const char *const *env = spec->env ? spec->env : default_env;
    const char **net_env = NULL;
    if (c->net && !(env = net_env = env_with_ca(env, err)))
        return -1;
    uint32_t argc = 0, envc = 0;
    while (spec->argv[argc])
        argc++;
    while (env[envc])
        envc++;
    const char **strs = (uint64_t)argc + envc + 1 > CTL_MAX_STRS ? NULL : calloc(argc + envc + 1, sizeof *strs);
    if (strs) {
        memcpy(strs, spec->argv, argc * sizeof *strs);
        memcpy(strs + argc, env, envc * sizeof *strs);
    }
    free(net_env);
    if ((uint64_t)argc + envc + 1 > CTL_MAX_STRS)
        return util_fail(err, E2BIG, "too many arguments and environment variables (limit %d)", CTL_MAX_STRS - 1);
    if (!strs)
        return util_fail(err, ENOMEM, "out of memory");
    strs[argc + envc] = spec->cwd ? spec->cwd : "/";
    uint32_t u[CTL_NU] = { argc, envc, spec->tty ? CTL_SPAWN_TTY : 0, (uint32_t)spec->uid, (uint32_t)spec->gid,
                           spec->rows, spec->cols, 0 };
    /* Missing stdio becomes the host's /dev/null: cell-init expects three. */
    _cleanup_close_ int null_fd = -1;
    int fds[3] = { spec->stdin_fd, spec->stdout_fd, spec->stderr_fd };
    for (int i = 0; i < 3 && !spec->tty; i++) {
        if (fds[i] >= 0)
            continue;
        if (null_fd < 0 && (null_fd = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
            free(strs);
            return util_fail_errno(err, "cannot open /dev/null");
        }
        fds[i] = null_fd;
    }
    ctl_msg reply;
    int rc = runtime_request(c, CTL_SPAWN, u, strs, argc + envc + 1, spec->tty ? NULL : fds, spec->tty ? 0 : 3,
                             &reply, err);
    free(strs);
    if (rc < 0)
        return -1;
    *pid = (pid_t)reply.u[0];
    if (spec->tty && pty_fd)
        *pty_fd = ctl_take_fd(&reply, 0);
    ctl_msg_free(&reply);
    if (spec->tty && pty_fd && *pty_fd < 0)
        return util_fail(err, EPROTO, "cell-init did not return a terminal");
    return 0;
}

int cell_signal(cell *c, pid_t pid, int sig, cell_error *err)
{
    if (sig <= 0 || sig >= 65)
        return util_fail(err, EINVAL, "invalid signal number %d", sig);
    uint32_t u[CTL_NU] = { (uint32_t)pid, (uint32_t)sig };
    ctl_msg reply;
    if (runtime_request(c, CTL_SIGNAL, u, NULL, 0, NULL, 0, &reply, err) < 0)
        return -1;
    ctl_msg_free(&reply);
    return 0;
}

int cell_resize(cell *c, pid_t pid, uint16_t rows, uint16_t cols, cell_error *err)
{
    uint32_t u[CTL_NU] = { (uint32_t)pid, rows, cols };
    ctl_msg reply;
    if (runtime_request(c, CTL_RESIZE, u, NULL, 0, NULL, 0, &reply, err) < 0)
        return -1;
    ctl_msg_free(&reply);
    return 0;
}

int cell_wait_exit(cell *c, int timeout_ms, cell_exit *out, cell_error *err)
{
    for (;;) {
        if (c->n_pending) {
            *out = c->pending[0];
            memmove(c->pending, c->pending + 1, (c->n_pending - 1) * sizeof *c->pending);
            c->n_pending--;
            return 1;
        }
        ctl_msg m;
        int r = receive(c, timeout_ms, &m, err);
        if (r <= 0)
            return r;
        int queued = queue_if_exit(c, &m, err);
        if (queued < 0)
            return -1;
        if (queued)
            continue;
        ctl_msg_free(&m); /* a stray reply: nobody is waiting for it */
    }
}
