/* cgroup.c: one cgroup per cell under "<hierarchy>/cell/<name>", on cgroup v2
 * or on the v1 hierarchies of a hybrid host, chosen per controller from mountinfo. */
#include "isolate/isolate.h"
#include "isolate/cgroup_internal.h"
#include "util/util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct isolate_cgroup {
    struct cg_plan plan;
};

/* Indexed by CG_*_I: the names used in v1 mount options and v2 cgroup.controllers. */
static const char *const cg_ctrl_names[CG_NCTRL] = { "memory", "pids", "cpu", "freezer" };

/* Bounds for waiting on the kernel: tasks need a moment to die after
 * SIGKILL and a cgroup stays busy until they have. */
#define CG_FREEZE_WAIT_MS  100
#define CG_KILL_ROUNDS     100
#define CG_KILL_PAUSE_MS   2
#define CG_RMDIR_WAIT_MS   1000
#define CG_RMDIR_PAUSE_MS  10

/* ---- pure part (cgroup_internal.h) ------------------------------------------ */

static int next_field(const char **p, const char **start, size_t *len)
{
    const char *s = *p;
    while (*s == ' ')
        s++;
    if (*s == '\0' || *s == '\n')
        return 0;
    const char *e = s;
    while (*e && *e != ' ' && *e != '\n')
        e++;
    *start = s;
    *len = (size_t)(e - s);
    *p = e;
    return 1;
}

static int field_is(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(s, word, len) == 0;
}

static int is_octal(char ch)
{
    return ch >= '0' && ch <= '7';
}

/* The kernel escapes space, tab, newline and backslash in mount points as \ooo. */
static int unescape_field(const char *s, size_t len, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '\\' && len - i >= 4 && is_octal(s[i + 1]) && is_octal(s[i + 2]) && is_octal(s[i + 3])) {
            ch = (char)(((s[i + 1] - '0') << 6) | ((s[i + 2] - '0') << 3) | (s[i + 3] - '0'));
            i += 3;
        }
        if (o + 1 >= size)
            return -1;
        out[o++] = ch;
    }
    out[o] = '\0';
    return 0;
}

void isolate_cgroup_parse_mountinfo_line(struct cg_layout *lay, const char *line)
{
    /* id parent major:minor root mount-point options [optional...] - type source super-options */
    const char *p = line, *f, *mnt = NULL, *type, *opts;
    size_t n, mnt_len = 0, type_len, opts_len;
    for (int i = 0; i < 6; i++) {
        if (!next_field(&p, &f, &n))
            return;
        if (i == 4) {
            mnt = f;
            mnt_len = n;
        }
    }
    do {
        if (!next_field(&p, &f, &n))
            return;
    } while (!field_is(f, n, "-"));
    if (!next_field(&p, &type, &type_len) || !next_field(&p, &f, &n) || !next_field(&p, &opts, &opts_len))
        return;

    if (field_is(type, type_len, "cgroup2")) {
        if (!lay->v2_root[0] && unescape_field(mnt, mnt_len, lay->v2_root, sizeof lay->v2_root) < 0)
            lay->v2_root[0] = '\0';
        return;
    }
    if (!field_is(type, type_len, "cgroup"))
        return;
    /* v1 controllers appear as options ("rw,cpu,cpuacct"); match whole
     * words so "cpuset" or "cpuacct" never count as "cpu". */
    const char *o = opts, *end = opts + opts_len;
    while (o < end) {
        const char *comma = memchr(o, ',', (size_t)(end - o));
        size_t wlen = comma ? (size_t)(comma - o) : (size_t)(end - o);
        for (int i = 0; i < CG_NCTRL; i++) {
            char *root = lay->v1_root[i];
            if (field_is(o, wlen, cg_ctrl_names[i]) && !root[0] &&
                unescape_field(mnt, mnt_len, root, sizeof lay->v1_root[i]) < 0)
                root[0] = '\0';
        }
        o += wlen + 1;
    }
}

void isolate_cgroup_parse_mountinfo(struct cg_layout *lay, const char *text)
{
    memset(lay, 0, sizeof *lay);
    for (const char *line = text; line && *line;) {
        isolate_cgroup_parse_mountinfo_line(lay, line);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
}

unsigned isolate_cgroup_parse_controllers(const char *text)
{
    unsigned mask = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        size_t len = strcspn(p, " \t\n");
        /* The v2 freezer is cgroup.freeze, not a controller. */
        for (int i = 0; i < CG_NCTRL; i++)
            if (i != CG_FREEZER_I && field_is(p, len, cg_ctrl_names[i]))
                mask |= 1u << i;
        p += len;
    }
    return mask;
}

int isolate_cgroup_cmdline_nosocket(const char *cmdline)
{
    static const char key[] = "cgroup.memory=";
    const char *p = cmdline, *f;
    size_t n;
    while (next_field(&p, &f, &n)) {
        if (n < sizeof key - 1 || memcmp(f, key, sizeof key - 1) != 0)
            continue;
        /* The value is a comma-separated list of options. */
        const char *o = f + sizeof key - 1, *end = f + n;
        while (o < end) {
            const char *comma = memchr(o, ',', (size_t)(end - o));
            size_t wlen = comma ? (size_t)(comma - o) : (size_t)(end - o);
            if (field_is(o, wlen, "nosocket"))
                return 1;
            o += wlen + 1;
        }
    }
    return 0;
}

int isolate_cgroup_cpu_quota(uint32_t cpu_millis, uint64_t *quota_us, cell_error *err)
{
    uint64_t quota = (uint64_t)cpu_millis * (CG_CPU_PERIOD_US / 1000);
    /* The kernel rejects quotas under 1 ms; raising it silently would grant
     * more CPU than asked. */
    if (cpu_millis != 0 && quota < 1000)
        return util_fail(err, EINVAL,
                         "cannot enforce --cpu: %" PRIu32 " millis is below the minimum of 10 "
                         "(the kernel needs a quota of at least 1 ms per %u us period)",
                         cpu_millis, CG_CPU_PERIOD_US);
    *quota_us = quota;
    return 0;
}

int isolate_cgroup_cpu_max(uint32_t cpu_millis, char *buf, size_t size, cell_error *err)
{
    uint64_t quota = 0;
    if (isolate_cgroup_cpu_quota(cpu_millis, &quota, err) < 0)
        return -1;
    if (cpu_millis == 0)
        return util_path(buf, size, err, "max %u", CG_CPU_PERIOD_US) < 0 ? -1 : 0;
    return util_path(buf, size, err, "%" PRIu64 " %u", quota, CG_CPU_PERIOD_US) < 0 ? -1 : 0;
}

static int plan_add(struct cg_plan *plan, const char *root, int v2, unsigned ctrls, const char *name,
                    cell_error *err)
{
    /* Co-mounted v1 controllers (e.g. "cpu,cpuacct" with freezer) share one directory. */
    for (size_t i = 0; i < plan->n; i++) {
        if (plan->dir[i].v2 == v2 && strcmp(plan->dir[i].root, root) == 0) {
            plan->dir[i].ctrls |= ctrls;
            return 0;
        }
    }
    struct cg_dir *d = &plan->dir[plan->n];
    if (util_path(d->root, sizeof d->root, err, "%s", root) < 0 ||
        util_path(d->path, sizeof d->path, err, "%s/cell/%s", root, name) < 0)
        return -1;
    d->v2 = v2;
    d->ctrls = ctrls;
    d->created = 0;
    plan->n++;
    return 0;
}

int isolate_cgroup_plan(const struct cg_layout *lay, const char *name, const cell_limits *lim,
                        struct cg_plan *out, cell_error *err)
{
    static const cell_limits no_limits;
    memset(out, 0, sizeof *out);
    if (!util_valid_name(name))
        return util_fail(err, EINVAL, "invalid cgroup name \"%s\": use 1..63 of [A-Za-z0-9_.-]",
                         name ? name : "(null)");
    if (!lim)
        lim = &no_limits;
    /* Refuse an unusable cpu limit before anything is created. */
    uint64_t quota = 0;
    if (isolate_cgroup_cpu_quota(lim->cpu_millis, &quota, err) < 0)
        return -1;

    const unsigned v2_wanted = CG_MEMORY | CG_PIDS | CG_CPU;
    unsigned on_v2 = lay->v2_root[0] ? (lay->v2_ctrls & v2_wanted) : 0;
    unsigned on_v1 = 0;
    for (int i = 0; i < CG_NCTRL; i++)
        if (lay->v1_root[i][0] && !(on_v2 & (1u << i)))
            on_v1 |= 1u << i;

    static const struct {
        unsigned    bit;
        const char *flag;
    } needs[] = { { CG_MEMORY, "--memory" }, { CG_PIDS, "--pids" }, { CG_CPU, "--cpu" } };
    const int requested[] = { lim->memory != 0, lim->pids != 0, lim->cpu_millis != 0 };
    for (size_t i = 0; i < sizeof needs / sizeof needs[0]; i++) {
        if (!requested[i] || ((on_v2 | on_v1) & needs[i].bit))
            continue;
        const char *ctrl = cg_ctrl_names[__builtin_ctz(needs[i].bit)];
        return util_fail(err, EOPNOTSUPP,
                         "cannot enforce %s: no %s cgroup controller is mounted (need cgroup v2 with "
                         "the %s controller or the v1 %s hierarchy)%s%s%s",
                         needs[i].flag, ctrl, ctrl, ctrl, lay->v2_root[0] ? "; cgroup v2 at " : "",
                         lay->v2_root[0] ? lay->v2_root : "",
                         lay->v2_root[0] ? " does not offer it" : "");
    }

    /* A v2 cgroup without controllers still tracks the cell's tasks and
     * offers cgroup.kill, so it is kept when v1 offers nothing better. */
    if (on_v2 || (lay->v2_root[0] && !on_v1))
        if (plan_add(out, lay->v2_root, 1, on_v2, name, err) < 0)
            return -1;
    for (int i = 0; i < CG_NCTRL; i++)
        if ((on_v1 & (1u << i)) && plan_add(out, lay->v1_root[i], 0, 1u << i, name, err) < 0)
            return -1;
    return 0;
}

/* ---- host I/O ----------------------------------------------------------------- */

int isolate_cgroup_detect(struct cg_layout *lay, cell_error *err)
{
    memset(lay, 0, sizeof *lay);
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return util_fail_errno(err, "cannot open /proc/self/mountinfo");
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) >= 0)
        isolate_cgroup_parse_mountinfo_line(lay, line);
    int failed = ferror(f);
    int saved = errno;
    free(line);
    fclose(f);
    if (failed) {
        errno = saved;
        return util_fail_errno(err, "cannot read /proc/self/mountinfo");
    }
    if (lay->v2_root[0]) {
        char path[PATH_MAX];
        char *text = NULL;
        if (util_path(path, sizeof path, err, "%s/cgroup.controllers", lay->v2_root) < 0 ||
            util_read_file(path, 4096, &text, NULL, err) < 0)
            return -1;
        lay->v2_ctrls = isolate_cgroup_parse_controllers(text);
        free(text);
    }
    return 0;
}

/* cgroup files take a value in one write() and report rejection there; they
 * cannot be created, so O_CREAT (util_write_file) would turn ENOENT into EACCES.
 * Returns -1 with errno so callers can tell a missing optional file. */
static int cg_write_raw(const char *path, const char *text)
{
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    if (n < 0)
        return -1;
    if ((size_t)n != len) {
        errno = EIO;
        return -1;
    }
    return 0;
}

/* 0 written, 1 if `optional` and the file does not exist, -1 failed. */
static int cg_write(const char *dir, const char *file, const char *text, int optional, cell_error *err)
{
    char path[PATH_MAX];
    if (util_path(path, sizeof path, err, "%s/%s", dir, file) < 0)
        return -1;
    if (cg_write_raw(path, text) == 0)
        return 0;
    if (optional && errno == ENOENT)
        return 1;
    return util_fail_errno(err, "cannot write \"%s\" to %s", text, path);
}

static int cg_read(const char *dir, const char *file, char **out, cell_error *err)
{
    char path[PATH_MAX];
    if (util_path(path, sizeof path, err, "%s/%s", dir, file) < 0)
        return -1;
    return util_read_file(path, 4096, out, NULL, err);
}

static int cg_enable_controllers(const char *dir, unsigned ctrls, cell_error *err)
{
    for (int i = 0; i < CG_NCTRL; i++) {
        if (!(ctrls & (1u << i)))
            continue;
        char path[PATH_MAX], text[32];
        if (util_path(path, sizeof path, err, "%s/cgroup.subtree_control", dir) < 0)
            return -1;
        snprintf(text, sizeof text, "+%s", cg_ctrl_names[i]);
        if (cg_write_raw(path, text) == 0)
            continue;
        if (errno == EBUSY)
            return util_fail_errno(err,
                                   "cannot enable the %s controller in %s (cgroup v2 allows controllers "
                                   "only below cgroups that hold no processes)",
                                   cg_ctrl_names[i], path);
        return util_fail_errno(err, "cannot enable the %s controller in %s", cg_ctrl_names[i], path);
    }
    return 0;
}

static int cg_mkdir_leaf(struct cg_dir *d, cell_error *err)
{
    if (mkdir(d->path, 0755) == 0) {
        d->created = 1;
        return 0;
    }
    if (errno != EEXIST)
        return util_fail_errno(err, "cannot create cgroup %s", d->path);
    /* Left by a crashed owner: an empty one is reusable after removal, a busy
     * one belongs to someone alive and must not be shared. */
    if (rmdir(d->path) < 0)
        return util_fail_errno(err, "cgroup %s already exists and cannot be removed", d->path);
    if (mkdir(d->path, 0755) < 0)
        return util_fail_errno(err, "cannot create cgroup %s", d->path);
    d->created = 1;
    return 0;
}

static int cg_limit_v2(const struct cg_dir *d, const cell_limits *lim, cell_error *err)
{
    char text[64];
    if ((d->ctrls & CG_MEMORY) && lim->memory) {
        snprintf(text, sizeof text, "%" PRIu64, lim->memory);
        /* swap.max = 0 so the memory limit cannot be dodged by swapping. */
        if (cg_write(d->path, "memory.max", text, 0, err) < 0 ||
            cg_write(d->path, "memory.swap.max", "0", 1, err) < 0)
            return -1;
    }
    if ((d->ctrls & CG_PIDS) && lim->pids) {
        snprintf(text, sizeof text, "%" PRIu32, lim->pids);
        if (cg_write(d->path, "pids.max", text, 0, err) < 0)
            return -1;
    }
    if ((d->ctrls & CG_CPU) && lim->cpu_millis) {
        if (isolate_cgroup_cpu_max(lim->cpu_millis, text, sizeof text, err) < 0 ||
            cg_write(d->path, "cpu.max", text, 0, err) < 0)
            return -1;
    }
    return 0;
}

static int cg_limit_v1_memory(const struct cg_dir *d, const cell_limits *lim, cell_error *err)
{
    /* A new memcg inherits oom_kill_disable from its parent; a disabled OOM
     * killer would hang the cell at its limit instead of killing a task. */
    char *oom = NULL;
    if (cg_read(d->path, "memory.oom_control", &oom, err) < 0)
        return -1;
    int disabled = strstr(oom, "oom_kill_disable 1") != NULL;
    free(oom);
    if (disabled && cg_write(d->path, "memory.oom_control", "0", 0, err) < 0)
        return -1;
    if (!lim->memory)
        return 0;
    char text[32];
    snprintf(text, sizeof text, "%" PRIu64, lim->memory);
    /* memsw (memory+swap) must stay >= limit_in_bytes, so it goes second. */
    if (cg_write(d->path, "memory.limit_in_bytes", text, 0, err) < 0)
        return -1;
    int r = cg_write(d->path, "memory.memsw.limit_in_bytes", text, 1, err);
    if (r < 0)
        return -1;
    /* Without swap accounting, swappiness 0 is the closest to "no swap". */
    if (r == 1 && cg_write(d->path, "memory.swappiness", "0", 1, err) < 0)
        return -1;
    /* v1 does not charge socket buffers to limit_in_bytes: without this a
     * cell's sockets could pin the host-wide TCP and UDP pools (a 64 MiB
     * cell held 1 GB with 256 unread connections).  Setting the limit is
     * what turns on v1's socket accounting: every socket created afterwards
     * (all of the cell's, UDP too) is charged to this one counter.  TCP may
     * still exceed it by a small floor per connection (forced charges).  v2
     * needs nothing: it charges socket memory to memory.max. */
    return cg_write(d->path, "memory.kmem.tcp.limit_in_bytes", text, 0, err) < 0 ? -1 : 0;
}

static int cg_limit_v1(const struct cg_dir *d, const cell_limits *lim, cell_error *err)
{
    char text[32];
    if ((d->ctrls & CG_MEMORY) && cg_limit_v1_memory(d, lim, err) < 0)
        return -1;
    if ((d->ctrls & CG_PIDS) && lim->pids) {
        snprintf(text, sizeof text, "%" PRIu32, lim->pids);
        if (cg_write(d->path, "pids.max", text, 0, err) < 0)
            return -1;
    }
    if ((d->ctrls & CG_CPU) && lim->cpu_millis) {
        uint64_t quota = 0;
        if (isolate_cgroup_cpu_quota(lim->cpu_millis, &quota, err) < 0)
            return -1;
        snprintf(text, sizeof text, "%u", CG_CPU_PERIOD_US);
        if (cg_write(d->path, "cpu.cfs_period_us", text, 0, err) < 0)
            return -1;
        snprintf(text, sizeof text, "%" PRIu64, quota);
        if (cg_write(d->path, "cpu.cfs_quota_us", text, 0, err) < 0)
            return -1;
    }
    return 0;
}

static int cg_setup_dir(struct cg_dir *d, const cell_limits *lim, cell_error *err)
{
    char parent[PATH_MAX];
    if (util_path(parent, sizeof parent, err, "%s/cell", d->root) < 0)
        return -1;
    /* On v2 a controller reaches a cgroup only if every ancestor enables it
     * for its children; the "cell" parent holds no tasks, so this is allowed. */
    if (d->v2 && d->ctrls && cg_enable_controllers(d->root, d->ctrls, err) < 0)
        return -1;
    if (mkdir(parent, 0755) < 0 && errno != EEXIST)
        return util_fail_errno(err, "cannot create cgroup %s", parent);
    if (d->v2 && d->ctrls && cg_enable_controllers(parent, d->ctrls, err) < 0)
        return -1;
    if (cg_mkdir_leaf(d, err) < 0)
        return -1;
    return d->v2 ? cg_limit_v2(d, lim, err) : cg_limit_v1(d, lim, err);
}

/* A memory limit must cover socket buffers (see cg_limit_v1_memory); a host
 * booted with cgroup.memory=nosocket cannot do that on v1 or v2. */
static int cg_check_socket_accounting(cell_error *err)
{
    _cleanup_free_ char *cmdline = NULL;
    if (util_read_file("/proc/cmdline", 65536, &cmdline, NULL, err) < 0)
        return -1;
    if (isolate_cgroup_cmdline_nosocket(cmdline))
        return util_fail(err, EOPNOTSUPP,
                         "cannot enforce --memory: the kernel was booted with cgroup.memory=nosocket, so "
                         "socket buffers would not count against the limit");
    return 0;
}

int isolate_cgroup_create(const char *name, const cell_limits *lim, isolate_cgroup **out, cell_error *err)
{
    if (!out)
        return util_fail(err, EINVAL, "isolate_cgroup_create: no output pointer");
    *out = NULL;
    static const cell_limits no_limits;
    if (!lim)
        lim = &no_limits;
    _cleanup_free_ struct cg_layout *lay = calloc(1, sizeof *lay);
    if (!lay)
        return util_fail(err, ENOMEM, "out of memory detecting the cgroup layout");
    if (isolate_cgroup_detect(lay, err) < 0)
        return -1;
    if (lim->memory && cg_check_socket_accounting(err) < 0)
        return -1;
    isolate_cgroup *cg = calloc(1, sizeof *cg);
    if (!cg)
        return util_fail(err, ENOMEM, "out of memory creating cgroup %s", name ? name : "(null)");
    if (isolate_cgroup_plan(lay, name, lim, &cg->plan, err) < 0) {
        free(cg);
        return -1;
    }
    for (size_t i = 0; i < cg->plan.n; i++) {
        if (cg_setup_dir(&cg->plan.dir[i], lim, err) < 0) {
            isolate_cgroup_destroy(cg);
            return -1;
        }
    }
    *out = cg;
    return 0;
}

static int attach_dirs(isolate_cgroup *cg, pid_t pid, int v2_only, cell_error *err)
{
    if (!cg || pid <= 0)
        return util_fail(err, EINVAL, "cannot attach pid %d to a cgroup: invalid argument", (int)pid);
    char text[32];
    snprintf(text, sizeof text, "%d", (int)pid);
    for (size_t i = 0; i < cg->plan.n; i++) {
        const struct cg_dir *d = &cg->plan.dir[i];
        if (d->created && (d->v2 || !v2_only) && cg_write(d->path, "cgroup.procs", text, 0, err) < 0)
            return -1;
    }
    return 0;
}

int isolate_cgroup_attach(isolate_cgroup *cg, pid_t pid, cell_error *err)
{
    return attach_dirs(cg, pid, 0, err);
}

int isolate_cgroup_attach_v2(isolate_cgroup *cg, pid_t pid, cell_error *err)
{
    return attach_dirs(cg, pid, 1, err);
}

int isolate_cgroup_open_self_attach(isolate_cgroup *cg, int *fds, size_t max, size_t *n, cell_error *err)
{
    *n = 0;
    for (size_t i = 0; cg && i < cg->plan.n; i++) {
        const struct cg_dir *d = &cg->plan.dir[i];
        if (!d->created)
            continue;
        /* v2 has no "tasks": "0" to cgroup.procs moves the writer too (under
         * the global lock, as an attach by pid would). */
        char path[PATH_MAX + 16];
        int fd = -1;
        if (*n < max && snprintf(path, sizeof path, "%s/%s", d->path, d->v2 ? "cgroup.procs" : "tasks") < (int)sizeof path)
            fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            int code = *n < max ? errno : E2BIG;
            for (size_t j = 0; j < *n; j++)
                close(fds[j]);
            *n = 0;
            errno = code;
            return util_fail_errno(err, "cannot open %s/%s", d->path, d->v2 ? "cgroup.procs" : "tasks");
        }
        fds[(*n)++] = fd;
    }
    return 0;
}

/* ---- kill and destroy ----------------------------------------------------------- */

static void sleep_ms(long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static long now_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
        return -1;
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const struct cg_dir *cg_freezer_dir(const isolate_cgroup *cg)
{
    const struct cg_dir *v2 = NULL;
    for (size_t i = 0; i < cg->plan.n; i++) {
        const struct cg_dir *d = &cg->plan.dir[i];
        if (!d->created)
            continue;
        if (!d->v2 && (d->ctrls & CG_FREEZER))
            return d;
        if (d->v2)
            v2 = d;
    }
    return v2;
}

/* Freeze (on) or thaw the cgroup; 1 if the request was accepted.  A freeze
 * that does not settle in time is still useful: most tasks stopped. */
static int cg_freeze(const struct cg_dir *d, int on)
{
    const char *file = d->v2 ? "cgroup.freeze" : "freezer.state";
    const char *value = d->v2 ? (on ? "1" : "0") : (on ? "FROZEN" : "THAWED");
    if (cg_write(d->path, file, value, 0, NULL) < 0)
        return 0;
    if (!on)
        return 1;
    const char *state_file = d->v2 ? "cgroup.events" : "freezer.state";
    const char *settled = d->v2 ? "frozen 1" : "FROZEN";
    for (int waited = 0; waited < CG_FREEZE_WAIT_MS; waited++) {
        char *state = NULL;
        if (cg_read(d->path, state_file, &state, NULL) < 0)
            break;
        int done = strstr(state, settled) != NULL;
        free(state);
        if (done)
            break;
        sleep_ms(1);
    }
    return 1;
}

/* SIGKILL every process listed in any of the cgroup's directories; returns
 * how many were listed. */
static int cg_kill_listed(const isolate_cgroup *cg)
{
    int seen = 0;
    pid_t self = getpid();
    for (size_t i = 0; i < cg->plan.n; i++) {
        const struct cg_dir *d = &cg->plan.dir[i];
        char path[PATH_MAX];
        if (!d->created || util_path(path, sizeof path, NULL, "%s/cgroup.procs", d->path) < 0)
            continue;
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        int pid;
        while (fscanf(f, "%d", &pid) == 1) {
            if (pid <= 0 || pid == self)
                continue;
            seen++;
            /* Failure is ESRCH (already gone); a survivor shows up in the
             * next round's list. */
            (void)kill(pid, SIGKILL);
        }
        fclose(f);
    }
    return seen;
}

void isolate_cgroup_kill(isolate_cgroup *cg)
{
    if (!cg)
        return;
    /* cgroup.kill (v2, Linux 5.14+) kills every task atomically, forks included. */
    for (size_t i = 0; i < cg->plan.n; i++) {
        const struct cg_dir *d = &cg->plan.dir[i];
        if (d->created && d->v2 && cg_write(d->path, "cgroup.kill", "1", 0, NULL) == 0)
            return;
    }
    /* Otherwise freeze first so nothing forks between reading the pid list
     * and killing it; killed tasks only die once thawed. */
    const struct cg_dir *fz = cg_freezer_dir(cg);
    int frozen = fz ? cg_freeze(fz, 1) : 0;
    for (int round = 0; round < CG_KILL_ROUNDS; round++) {
        int seen = cg_kill_listed(cg);
        if (frozen) {
            cg_freeze(fz, 0);
            frozen = 0;
        }
        if (!seen)
            break;
        sleep_ms(CG_KILL_PAUSE_MS);
    }
    if (frozen)
        cg_freeze(fz, 0);
}

/* rmdir every directory still present; wait up to wait_ms for EBUSY ones.
 * Returns how many remain. */
static size_t remove_dirs(isolate_cgroup *cg, long wait_ms)
{
    long deadline = now_ms() + wait_ms;
    size_t busy = 0;
    for (size_t i = 0; i < cg->plan.n; i++) {
        struct cg_dir *d = &cg->plan.dir[i];
        if (!d->created)
            continue;
        /* EBUSY while killed tasks finish exiting; give up at the deadline
         * rather than hang the caller (the directory is then left behind). */
        while (rmdir(d->path) < 0) {
            long now = now_ms();
            if (errno != EBUSY || now < 0 || now >= deadline)
                break;
            sleep_ms(CG_RMDIR_PAUSE_MS);
        }
        if (access(d->path, F_OK) == 0)
            busy++;
        else
            d->created = 0;
    }
    return busy;
}

void isolate_cgroup_destroy(isolate_cgroup *cg)
{
    if (!cg)
        return;
    /* Usually the cell's pid namespace is gone by now and the groups are
     * empty: try to remove them first, freeze and kill only if something
     * is still inside. */
    if (remove_dirs(cg, 0) > 0) {
        isolate_cgroup_kill(cg);
        remove_dirs(cg, CG_RMDIR_WAIT_MS);
    }
    free(cg);
}

void isolate_cgroup_sweep(const char *name)
{
    struct cg_layout *lay = calloc(1, sizeof *lay);
    isolate_cgroup *cg = calloc(1, sizeof *cg);
    if (!lay || !cg || isolate_cgroup_detect(lay, NULL) < 0 || isolate_cgroup_plan(lay, name, NULL, &cg->plan, NULL) < 0) {
        free(lay);
        free(cg);
        return;
    }
    free(lay);
    for (size_t i = 0; i < cg->plan.n; i++)
        cg->plan.dir[i].created = access(cg->plan.dir[i].path, F_OK) == 0;
    isolate_cgroup_destroy(cg); /* kills what is left, then rmdir */
}

int isolate_cgroup_set_pids_cpu(isolate_cgroup *cg, uint32_t pids, uint32_t cpu_millis, cell_error *err)
{
    const cell_limits lim = { .pids = pids, .cpu_millis = cpu_millis };
    unsigned covered = 0;
    for (size_t i = 0; i < cg->plan.n; i++)
        covered |= cg->plan.dir[i].ctrls;
    /* As isolate_cgroup_plan refuses at create: never a limit silently skipped. */
    if ((pids && !(covered & CG_PIDS)) || (cpu_millis && !(covered & CG_CPU)))
        return util_fail(err, EOPNOTSUPP, "cannot enforce %s: the cell's cgroups have no %s controller",
                         pids && !(covered & CG_PIDS) ? "--pids" : "--cpu",
                         pids && !(covered & CG_PIDS) ? "pids" : "cpu");
    for (size_t i = 0; i < cg->plan.n; i++) {
        /* A copy limited to pids and cpu: the memory part of a v1 setup
         * (oom_control, socket accounting) is for a new group only. */
        struct cg_dir d = cg->plan.dir[i];
        d.ctrls &= CG_PIDS | CG_CPU;
        if (d.ctrls && (d.v2 ? cg_limit_v2(&d, &lim, err) : cg_limit_v1(&d, &lim, err)) < 0)
            return -1;
    }
    return 0;
}
