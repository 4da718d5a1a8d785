/* oci_cgroup.c: the container's cgroup, at linux.cgroupsPath (or
 * /cell-oci/ID).  On cgroup v2 one directory; on v1 one per hierarchy cell
 * uses (freezer first: the "primary" directory the state records, then
 * memory, pids, cpu where the host has them).  Every process of the
 * container joins all of them before anything else; linux.resources'
 * memory, pids and cpu limits are written there (create, update), and
 * the freezer serves pause and resume. */
#include "oci/oci.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>

#define CG_BASE "/sys/fs/cgroup"
/* Bounds on waiting for the kernel to settle a freeze or empty a cgroup. */
#define CG_WAIT_STEPS 500
#define CG_WAIT_STEP_NS (10 * 1000 * 1000)

static const char *const v1_hierarchies[] = { "freezer", "memory", "pids", "cpu" };

static int cg_v2(void)
{
    return access(CG_BASE "/cgroup.controllers", F_OK) == 0;
}

/* Whether `dir` (an existing cgroup directory) is on cgroup v2: every
 * command but create reads it from the state's path, so a container keeps
 * the hierarchy create chose for it. */
static int dir_v2(const char *dir)
{
    struct statfs f;
    return statfs(dir, &f) == 0 && f.f_type == CGROUP2_SUPER_MAGIC;
}

/* CELL_OCI_CGROUP2_ROOT: a cgroup2 mount to make containers' cgroups in
 * instead of the host's hierarchies, so the v2 code paths run on a hybrid
 * host's /sys/fs/cgroup/unified (tests; docs/oci.md).  Anything but a
 * cgroup2 mount root is refused. */
static int v2_root_override(const char **root, cell_error *err)
{
    const char *r = getenv("CELL_OCI_CGROUP2_ROOT");
    *root = NULL;
    if (!r || !*r)
        return 0;
    char probe[PATH_MAX];
    if (r[0] != '/' || strstr(r, "/..") || util_path(probe, sizeof probe, NULL, "%s/cgroup.controllers", r) < 0 ||
        !dir_v2(r) || access(probe, F_OK) < 0)
        return util_fail(err, EINVAL, "CELL_OCI_CGROUP2_ROOT '%.64s' must be the absolute path of a cgroup2 "
                         "hierarchy", r);
    *root = r;
    return 0;
}

int oci_cgroup_dir(const char *cgroups_path, const char *id, char *out, size_t size, cell_error *err)
{
    const char *root;
    if (v2_root_override(&root, err) < 0)
        return -1;
    if (!root)
        root = cg_v2() ? CG_BASE : CG_BASE "/freezer";
    int n = cgroups_path ? util_path(out, size, err, "%s%s", root, cgroups_path)
                         : util_path(out, size, err, "%s/cell-oci/%s", root, id);
    return n < 0 ? -1 : 0;
}

/* Every directory of the container's cgroup, the primary one first. */
static size_t cg_dirs(const char *primary, char dirs[OCI_CG_MAX][PATH_MAX])
{
    snprintf(dirs[0], PATH_MAX, "%s", primary);
    const char *v1 = CG_BASE "/freezer/";
    if (strncmp(primary, v1, strlen(v1)) != 0)
        return 1; /* v2: one directory */
    const char *rel = primary + strlen(v1) - 1;
    size_t n = 1;
    for (size_t i = 1; i < sizeof v1_hierarchies / sizeof *v1_hierarchies; i++) {
        char h[64];
        snprintf(h, sizeof h, CG_BASE "/%s", v1_hierarchies[i]);
        if (access(h, F_OK) == 0 && (size_t)snprintf(dirs[n], PATH_MAX, "%s%s", h, rel) < PATH_MAX)
            n++;
    }
    return n;
}

/* The directory holding `file` (memory.max...), or NULL when the host has none. */
static const char *dir_with(char dirs[OCI_CG_MAX][PATH_MAX], size_t n, const char *file)
{
    for (size_t i = 0; i < n; i++) {
        char p[PATH_MAX + 64];
        snprintf(p, sizeof p, "%s/%s", dirs[i], file);
        if (access(p, F_OK) == 0)
            return dirs[i];
    }
    return NULL;
}

static int cg_write(char dirs[OCI_CG_MAX][PATH_MAX], size_t n, const char *file, const char *value, const char *field,
                    cell_error *err)
{
    const char *dir = dir_with(dirs, n, file);
    if (!dir)
        return util_fail(err, ENOTSUP, "linux.resources.%s: this host's cgroups have no %s, so the limit cannot be "
                         "enforced", field, file);
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    _cleanup_close_ int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || util_write_all(fd, value, strlen(value)) < 0)
        return util_fail_errno(err, "linux.resources.%s: cannot write %s to %s", field, value, p);
    return 0;
}

/* A member of linux.resources.<group> as an integer: 1 found, 0 absent, -1 bad. */
static int res_int(json_t *res, const char *group, const char *key, long long *out, cell_error *err)
{
    json_t *g = json_object_get(res, group), *v = g ? json_object_get(g, key) : NULL;
    if (g && !json_is_object(g))
        return util_fail(err, EINVAL, "linux.resources.%s must be an object", group);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return util_fail(err, EINVAL, "linux.resources.%s.%s must be an integer", group, key);
    *out = json_integer_value(v);
    return 1;
}

/* v2: let the leaf's controllers be used (each ancestor's subtree_control;
 * the directories above the cgroup2 mount have none and are skipped). */
static void v2_enable(const char *leaf)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", leaf);
    for (char *s = p; (s = strchr(s + 1, '/'));) {
        *s = 0;
        char f[PATH_MAX + 32];
        snprintf(f, sizeof f, "%s/cgroup.subtree_control", p);
        _cleanup_close_ int fd = open(f, O_WRONLY | O_CLOEXEC);
        for (const char *const *c = (const char *const[]){ "+memory", "+pids", "+cpu", NULL }; fd >= 0 && *c; c++)
            (void)!write(fd, *c, strlen(*c)); /* a controller the host lacks shows at the limit's write */
        *s = '/';
    }
}

static int apply(char dirs[OCI_CG_MAX][PATH_MAX], size_t n, json_t *res, cell_error *err)
{
    if (!res)
        return 0;
    if (!json_is_object(res))
        return util_fail(err, EINVAL, "linux.resources must be an object");
    int v2 = dir_v2(dirs[0]);
    long long mem = 0, pids = 0, quota = 0, period = 0, shares = 0;
    char v[64];
    int r;
    if ((r = res_int(res, "memory", "limit", &mem, err)) < 0)
        return -1;
    if (r && mem > 0) {
        snprintf(v, sizeof v, "%lld", mem);
        if (cg_write(dirs, n, v2 ? "memory.max" : "memory.limit_in_bytes", v, "memory.limit", err) < 0)
            return -1;
    }
    if ((r = res_int(res, "pids", "limit", &pids, err)) < 0)
        return -1;
    if (r && pids > 0) {
        snprintf(v, sizeof v, "%lld", pids);
        if (cg_write(dirs, n, "pids.max", v, "pids.limit", err) < 0)
            return -1;
    }
    if (res_int(res, "cpu", "quota", &quota, err) < 0 || res_int(res, "cpu", "period", &period, err) < 0 ||
        res_int(res, "cpu", "shares", &shares, err) < 0)
        return -1;
    if (period < 0 || period > 1000000 || shares < 0 || shares > 262144)
        return util_fail(err, EINVAL, "linux.resources.cpu: period must be 0..1000000 and shares 0..262144");
    if (quota > 0 && v2) {
        snprintf(v, sizeof v, "%lld %lld", quota, period ? period : 100000);
        if (cg_write(dirs, n, "cpu.max", v, "cpu.quota", err) < 0)
            return -1;
    } else if (quota > 0) {
        snprintf(v, sizeof v, "%lld", period ? period : 100000);
        if (cg_write(dirs, n, "cpu.cfs_period_us", v, "cpu.period", err) < 0)
            return -1;
        snprintf(v, sizeof v, "%lld", quota);
        if (cg_write(dirs, n, "cpu.cfs_quota_us", v, "cpu.quota", err) < 0)
            return -1;
    }
    if (shares >= 2) {
        /* v2's weight is 1..10000 where v1's shares are 2..262144 (runc's mapping). */
        snprintf(v, sizeof v, "%lld", v2 ? 1 + ((shares - 2) * 9999) / 262142 : shares);
        if (cg_write(dirs, n, v2 ? "cpu.weight" : "cpu.shares", v, "cpu.shares", err) < 0)
            return -1;
    }
    return 0;
}

/* Never a cgroup that holds other processes: kill --all and delete signal
 * every process of the container's cgroup. */
static int check_empty(const char *dir, cell_error *err)
{
    char procs[PATH_MAX + 32], one[2];
    snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
    _cleanup_close_ int fd = open(procs, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, one, sizeof one);
    if (n < 0)
        return util_fail_errno(err, "cannot read %s", procs);
    if (n > 0)
        return util_fail(err, EBUSY, "linux.cgroupsPath: %s already holds processes; a container needs a cgroup of "
                         "its own", dir);
    return 0;
}

int oci_cgroup_procs(const char *primary, int fds[OCI_CG_MAX], size_t *nfds, cell_error *err)
{
    char dirs[OCI_CG_MAX][PATH_MAX];
    size_t n = cg_dirs(primary, dirs);
    *nfds = 0;
    for (size_t i = 0; i < n; i++) {
        char procs[PATH_MAX + 32];
        snprintf(procs, sizeof procs, "%s/cgroup.procs", dirs[i]);
        int fd = open(procs, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            util_fail_errno(err, "cannot open %s", procs);
            for (size_t k = 0; k < *nfds; k++)
                close(fds[k]);
            *nfds = 0;
            return -1;
        }
        fds[(*nfds)++] = fd;
    }
    return 0;
}

int oci_cgroup_create(const char *primary, json_t *resources, int fds[OCI_CG_MAX], size_t *nfds, cell_error *err)
{
    char dirs[OCI_CG_MAX][PATH_MAX];
    size_t n = cg_dirs(primary, dirs);
    for (size_t i = 0; i < n; i++)
        if (util_mkdir_p(dirs[i], 0755, err) < 0 || check_empty(dirs[i], err) < 0)
            return -1;
    if (resources && dir_v2(dirs[0]))
        v2_enable(dirs[0]);
    if (apply(dirs, n, resources, err) < 0)
        return -1;
    return oci_cgroup_procs(primary, fds, nfds, err);
}

int oci_cgroup_update(const char *primary, json_t *resources, cell_error *err)
{
    char dirs[OCI_CG_MAX][PATH_MAX];
    size_t n = cg_dirs(primary, dirs);
    if (dir_v2(dirs[0]))
        v2_enable(dirs[0]);
    return apply(dirs, n, resources, err);
}

static void nap(void)
{
    struct timespec ts = { 0, CG_WAIT_STEP_NS };
    nanosleep(&ts, NULL);
}

int oci_cgroup_frozen(const char *dir)
{
    char path[PATH_MAX], buf[256];
    int v2 = dir_v2(dir);
    if (util_path(path, sizeof path, NULL, "%s/%s", dir, v2 ? "cgroup.events" : "freezer.state") < 0)
        return 0;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return v2 ? strstr(buf, "frozen 1") != NULL : strncmp(buf, "FROZEN", 6) == 0;
}

int oci_cgroup_freeze(const char *dir, int on, cell_error *err)
{
    int v2 = dir_v2(dir);
    char path[PATH_MAX];
    if (util_path(path, sizeof path, err, "%s/%s", dir, v2 ? "cgroup.freeze" : "freezer.state") < 0)
        return -1;
    const char *value = v2 ? (on ? "1" : "0") : (on ? "FROZEN" : "THAWED");
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || util_write_all(fd, value, strlen(value)) < 0)
        return util_fail_errno(err, "cannot write %s to %s", value, path);
    /* v1 passes through FREEZING; the caller expects it settled. */
    for (int i = 0; i < CG_WAIT_STEPS; i++) {
        if (oci_cgroup_frozen(dir) == on)
            return 0;
        nap();
    }
    return util_fail(err, ETIMEDOUT, "%s did not become %s", dir, on ? "frozen" : "thawed");
}

void oci_cgroup_remove(const char *primary)
{
    char dirs[OCI_CG_MAX][PATH_MAX];
    size_t n = cg_dirs(primary, dirs);
    /* Killed tasks leave their cgroup as they exit: a moment for the last
     * ones, bounded in all (the shim gives delete ten seconds). */
    int steps = 200;
    for (size_t k = 0; k < n; k++)
        while (rmdir(dirs[k]) < 0 && errno == EBUSY && steps-- > 0)
            nap();
}
