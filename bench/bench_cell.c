/* bench_cell.c: the numbers behind docs/performance.md.
 *
 *   bench_cell cold    --n N  --state DIR --cell BIN --bwrap BIN --unshare BIN
 *   bench_cell warm    --n N  --state DIR
 *   bench_cell density --n N  --state DIR [--bwrap BIN] [--no-sleepers]
 *   bench_cell phases  --n N  --state DIR      (only in the bench_phases build,
 *                                               which re-runs itself as `oneshot`)
 * Common: [--warmup N] [--raw DIR] [--ids FILE]
 *
 * Every benchmark prints one markdown table to stdout; progress and errors go
 * to stderr.  Contenders are interleaved round-robin per iteration (starting
 * with a different one each time) so that noise on a shared machine hits all
 * of them alike.  Nothing here asserts on timings: this is a measurement, not
 * a test.  Processes are timed from just before posix_spawn() to the return of
 * waitpid(); libcell calls are timed in-process with CLOCK_MONOTONIC.
 *
 * Cleanup: every cell is destroyed on the normal path and on SIGINT, SIGTERM
 * and SIGHUP (the loops notice a flag).  If this process dies anyway, each
 * cell-init sees its control socket hang up and takes its cell down; the ids
 * written to --ids let the caller remove the empty cgroup directories. */
#include "cell.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

__attribute__((noreturn, format(printf, 1, 2)))
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_cell: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* ---- options ---------------------------------------------------------------- */

static struct {
    long        n;
    long        warmup;
    const char *state;
    const char *cell_bin;
    const char *bwrap;
    const char *unshare;
    const char *raw_dir;   /* if set, raw samples go to <raw_dir>/<bench>.csv */
    const char *ids_file;  /* if set, each created cell id is appended here */
    int         sleepers;  /* density: also measure one `sleep` per cell */
} opt = { .n = 200, .warmup = 5, .sleepers = 1 };

static FILE *ids_fp;

static void note_cell(const cell *c)
{
    if (!ids_fp)
        return;
    fprintf(ids_fp, "%s\n", cell_id(c));
    fflush(ids_fp);
}

/* ---- statistics ------------------------------------------------------------- */

typedef struct series {
    const char *name;
    double     *v;         /* nanoseconds */
    size_t      n, cap;
} series;

static void series_add(series *s, double ns)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v)
            die("out of memory");
    }
    s->v[s->n++] = ns;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Linear interpolation between order statistics (R's type 7). */
static double quantile(const double *sorted, size_t n, double q)
{
    if (n == 0)
        return 0;
    double h = (double)(n - 1) * q;
    size_t lo = (size_t)h;
    if (lo + 1 >= n)
        return sorted[n - 1];
    return sorted[lo] + (h - (double)lo) * (sorted[lo + 1] - sorted[lo]);
}

struct summary {
    double p50, p90, mean, min, max;
};

static struct summary summarize(const series *s)
{
    struct summary r = { 0 };
    if (s->n == 0)
        return r;
    double *c = malloc(s->n * sizeof *c);
    if (!c)
        die("out of memory");
    memcpy(c, s->v, s->n * sizeof *c);
    qsort(c, s->n, sizeof *c, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += c[i];
    r.p50 = quantile(c, s->n, 0.5);
    r.p90 = quantile(c, s->n, 0.9);
    r.mean = sum / (double)s->n;
    r.min = c[0];
    r.max = c[s->n - 1];
    free(c);
    return r;
}

/* One markdown table; `scale` converts ns to `unit`. */
static void print_table(const char *title, series *s, size_t ns, size_t anchor, double scale, const char *unit)
{
    printf("### %s\n\n", title);
    printf("| contender | n | p50 (%s) | p90 (%s) | mean (%s) | min (%s) | p50 / %s p50 |\n", unit, unit, unit,
           unit, s[anchor].name);
    printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    struct summary a = summarize(&s[anchor]);
    for (size_t i = 0; i < ns; i++) {
        struct summary r = summarize(&s[i]);
        printf("| %s | %zu | %.3f | %.3f | %.3f | %.3f | %.2fx |\n", s[i].name, s[i].n, r.p50 / scale,
               r.p90 / scale, r.mean / scale, r.min / scale, a.p50 > 0 ? r.p50 / a.p50 : 0);
    }
    printf("\n");
    fflush(stdout);
}

static void write_raw(const char *bench, series *s, size_t ns)
{
    if (!opt.raw_dir)
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.csv", opt.raw_dir, bench);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench_cell: cannot write %s: %s\n", path, strerror(errno));
        return;
    }
    fprintf(f, "contender,iteration,ns\n");
    for (size_t i = 0; i < ns; i++)
        for (size_t j = 0; j < s[i].n; j++)
            fprintf(f, "\"%s\",%zu,%.0f\n", s[i].name, j, s[i].v[j]);
    fclose(f);
}

/* ---- host processes ------------------------------------------------------------ */

static int null_fd = -1;

/* posix_spawn argv (stdin/stdout on /dev/null, stderr kept so failures are
 * visible) and wait for it.  Returns the wait status. */
static int run_process(char *const argv[], uint64_t *elapsed_ns)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, null_fd, 0);
    posix_spawn_file_actions_adddup2(&fa, null_fd, 1);
    pid_t pid;
    uint64_t t0 = now_ns();
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    if (rc != 0)
        die("cannot start %s: %s", argv[0], strerror(rc));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            die("waitpid: %s", strerror(errno));
    uint64_t t1 = now_ns();
    posix_spawn_file_actions_destroy(&fa);
    if (elapsed_ns)
        *elapsed_ns = t1 - t0;
    return status;
}

static void check_status(const char *who, int status)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return;
    if (WIFEXITED(status))
        die("%s exited with status %d", who, WEXITSTATUS(status));
    die("%s was killed by signal %d", who, WTERMSIG(status));
}

/* ---- libcell helpers ----------------------------------------------------------- */

static cell_ctx *open_ctx(void)
{
    cell_ctx *ctx;
    cell_error err = { 0 };
    if (cell_ctx_open(&ctx, opt.state, &err) < 0)
        die("cell_ctx_open %s: %s", opt.state ? opt.state : "(default)", err.message);
    return ctx;
}

static const char *const true_argv[] = { "/bin/true", NULL };

/* Spawn /bin/true in c and wait for it; dies on any failure. */
static void cell_true(cell *c)
{
    cell_proc_spec spec = { .argv = true_argv, .stdin_fd = null_fd, .stdout_fd = null_fd, .stderr_fd = null_fd };
    cell_error err = { 0 };
    pid_t pid;
    if (cell_spawn(c, &spec, &pid, NULL, &err) < 0)
        die("cell_spawn /bin/true: %s", err.message);
    cell_exit ex;
    int r = cell_wait_exit(c, 30000, &ex, &err);
    if (r < 0)
        die("cell_wait_exit: %s", err.message);
    if (r == 0)
        die("/bin/true in a cell did not exit within 30 s");
    check_status("/bin/true in a cell", ex.status);
}

/* with_limits: memory, pids and cpu limits, i.e. cgroups (a cell without
 * limits gets none, so both kinds are measured). */
static cell *new_cell_limited(cell_ctx *ctx, int with_limits)
{
    /* Through API v2 (cell_options), built once per kind so that the
     * timings hold cell_create_v2() alone; they stay reachable until exit. */
    static cell_options *kinds[2];
    cell_error err = { 0 };
    cell_options **o = &kinds[with_limits != 0];
    if (!*o && (cell_options_new(o, &err) < 0 ||
                (with_limits && (cell_options_set_memory(*o, 256ull << 20, &err) < 0 ||
                                 cell_options_set_pids(*o, 128, &err) < 0 ||
                                 cell_options_set_cpu(*o, 1000, &err) < 0))))
        die("cell options: %s", err.message);
    cell *c;
    if (cell_create_v2(ctx, *o, &c, &err) < 0)
        die("cell_create_v2: %s", err.message);
    note_cell(c);
    return c;
}

static cell *new_cell(cell_ctx *ctx)
{
    return new_cell_limited(ctx, 0);
}

#ifdef CELL_BENCH_PHASES
/* ---- phase probes (bench_phases only) ----------------------------------------
 * Linked with -Wl,--wrap=SYMBOL for internal libcell functions that cell.c
 * calls across object files, so their duration is recorded without touching
 * src/.  Only the bench_phases binary has these; the main tables never do. */
#include "init/proto.h"
#include "isolate/isolate.h"
#include "runtime/runtime.h"
#include "util/util.h"

enum mark {
    M_ROOTFS_0, M_ROOTFS_1, M_CG_CREATE_0, M_CG_CREATE_1, M_USERNS_0, M_USERNS_1, M_BOOT_0, M_BOOT_1,
    M_ATTACH_0, M_ATTACH_1, M_HELLO, M_CG_KILL_0, M_CG_KILL_1,
    M_CG_DESTROY_0, M_CG_DESTROY_1, M_RMRF_0, M_RMRF_1, M_COUNT
};
static uint64_t marks[M_COUNT];

/* b - a, or 0 when a phase did not happen in this cycle (a mark unset). */
static double span(uint64_t a, uint64_t b)
{
    return a && b && b >= a ? (double)(b - a) : 0.0;
}
static int waiting_hello;

int __real_runtime_image_rootfs(cell_ctx *ctx, const char *name, char *out, size_t size, cell_error *err);
int __wrap_runtime_image_rootfs(cell_ctx *ctx, const char *name, char *out, size_t size, cell_error *err)
{
    marks[M_ROOTFS_0] = now_ns();
    int r = __real_runtime_image_rootfs(ctx, name, out, size, err);
    marks[M_ROOTFS_1] = now_ns();
    return r;
}

int __real_isolate_cgroup_create(const char *name, const cell_limits *lim, isolate_cgroup **out, cell_error *err);
int __wrap_isolate_cgroup_create(const char *name, const cell_limits *lim, isolate_cgroup **out, cell_error *err)
{
    marks[M_CG_CREATE_0] = now_ns();
    int r = __real_isolate_cgroup_create(name, lim, out, err);
    marks[M_CG_CREATE_1] = now_ns();
    return r;
}

/* The context caches one user namespace per uid slot: only a slot's first
 * cell pays for creating it. */
int __real_runtime_userns_for_slot(cell_ctx *ctx, uid_t base, cell_error *err);
int __wrap_runtime_userns_for_slot(cell_ctx *ctx, uid_t base, cell_error *err)
{
    marks[M_USERNS_0] = now_ns();
    int r = __real_runtime_userns_for_slot(ctx, base, err);
    marks[M_USERNS_1] = now_ns();
    return r;
}

pid_t __real_isolate_boot(const struct isolate_plan *plan, int *pidfd_out, cell_error *err);
pid_t __wrap_isolate_boot(const struct isolate_plan *plan, int *pidfd_out, cell_error *err)
{
    marks[M_BOOT_0] = now_ns();
    pid_t r = __real_isolate_boot(plan, pidfd_out, err);
    marks[M_BOOT_1] = now_ns();
    /* The boot child shares the owner's memory and the owner sleeps until it
     * execs cell-init (CLONE_VFORK): the next message is cell-init's HELLO. */
    waiting_hello = 1;
    return r;
}

/* The boot child joins its cgroups itself; the owner opens the v1 tasks
 * and v2 cgroup.procs files (this). */
int __real_isolate_cgroup_open_self_attach(isolate_cgroup *cg, int *fds, size_t max, size_t *n, cell_error *err);
int __wrap_isolate_cgroup_open_self_attach(isolate_cgroup *cg, int *fds, size_t max, size_t *n, cell_error *err)
{
    marks[M_ATTACH_0] = now_ns();
    int r = __real_isolate_cgroup_open_self_attach(cg, fds, max, n, err);
    marks[M_ATTACH_1] = now_ns();
    return r;
}

int __real_ctl_recv(int sock, ctl_msg *m);
int __wrap_ctl_recv(int sock, ctl_msg *m)
{
    int r = __real_ctl_recv(sock, m);
    if (waiting_hello) {
        marks[M_HELLO] = now_ns();
        waiting_hello = 0;
    }
    return r;
}

void __real_isolate_cgroup_kill(isolate_cgroup *cg);
void __wrap_isolate_cgroup_kill(isolate_cgroup *cg)
{
    marks[M_CG_KILL_0] = now_ns();
    __real_isolate_cgroup_kill(cg);
    marks[M_CG_KILL_1] = now_ns();
}

void __real_isolate_cgroup_destroy(isolate_cgroup *cg);
void __wrap_isolate_cgroup_destroy(isolate_cgroup *cg)
{
    marks[M_CG_DESTROY_0] = now_ns();
    __real_isolate_cgroup_destroy(cg);
    marks[M_CG_DESTROY_1] = now_ns();
}

int __real_util_rm_rf(const char *path, cell_error *err);
int __wrap_util_rm_rf(const char *path, cell_error *err)
{
    marks[M_RMRF_0] = now_ns();
    int r = __real_util_rm_rf(path, err);
    marks[M_RMRF_1] = now_ns();
    return r;
}

enum {
    P_EXEC, P_CTX_OPEN,
    P_PREP, P_CG_CREATE, P_USERNS, P_CLONE, P_ATTACH, P_CHILD, P_CREATE_REST, P_CREATE,
    P_SPAWN_WAIT, P_KILL_INIT, P_CG_KILL, P_CG_DESTROY, P_RMRF, P_DESTROY, P_EXIT, P_TOTAL, P_N
};

static const char *const phase_names[P_N] = {
    [P_EXEC] = "process: posix_spawn, exec, dynamic linking, up to main()",
    [P_CTX_OPEN] = "process: cell_ctx_open (state dirs, cell-init to exec, nosuid memfd)",
    [P_PREP] = "create: uid slot, scratch dir, image lookup, plan",
    [P_CG_CREATE] = "create: isolate_cgroup_create (mkdir per hierarchy)",
    [P_USERNS] = "create: user namespace of the slot (cached per context)",
    [P_CLONE] = "create: isolate_boot: clone, and (CLONE_VFORK) the child's mounts, pivot_root, seccomp, exec",
    [P_ATTACH] = "create: open the cgroup files (the child joins itself)",
    [P_CHILD] = "create: cell-init's start to HELLO (sanitizer builds: the forked child's whole boot)",
    [P_CREATE_REST] = "create: rest",
    [P_CREATE] = "**cell_create total**",
    [P_SPAWN_WAIT] = "**cell_spawn + cell_wait_exit (/bin/true)**",
    [P_KILL_INIT] = "destroy: SIGKILL init + waitpid (namespace teardown)",
    [P_CG_KILL] = "destroy: isolate_cgroup_kill (only if the cgroups were not empty)",
    [P_CG_DESTROY] = "destroy: isolate_cgroup_destroy (rmdir)",
    [P_RMRF] = "destroy: remove the scratch dir",
    [P_DESTROY] = "**cell_destroy total**",
    [P_EXIT] = "process: cell_ctx_close, exit, reaped by the parent",
    [P_TOTAL] = "**total**",
};

/* One create + /bin/true + destroy on ctx, split into phases (ns). */
static void probed_cycle(cell_ctx *ctx, double *ph)
{
    memset(marks, 0, sizeof marks);
    uint64_t t0 = now_ns();
    /* With limits, so that the cgroup phases exist. */
    cell *c = new_cell_limited(ctx, 1);
    uint64_t t1 = now_ns();
    cell_true(c);
    uint64_t t2 = now_ns();
    cell_destroy(c);
    uint64_t t3 = now_ns();
    ph[P_PREP] = span(t0, marks[M_CG_CREATE_0]);
    ph[P_CG_CREATE] = span(marks[M_CG_CREATE_0], marks[M_CG_CREATE_1]);
    ph[P_USERNS] = span(marks[M_USERNS_0], marks[M_USERNS_1]);
    ph[P_CLONE] = span(marks[M_BOOT_0], marks[M_BOOT_1]);
    ph[P_ATTACH] = span(marks[M_ATTACH_0], marks[M_ATTACH_1]);
    ph[P_CHILD] = (double)(marks[M_HELLO] - marks[M_BOOT_1]);
    ph[P_CREATE] = (double)(t1 - t0);
    ph[P_CREATE_REST] = ph[P_CREATE] - ph[P_PREP] - ph[P_CG_CREATE] - ph[P_USERNS] - ph[P_CLONE] - ph[P_ATTACH] -
                        ph[P_CHILD];
    ph[P_SPAWN_WAIT] = (double)(t2 - t1);
    ph[P_KILL_INIT] = span(t2, marks[M_CG_DESTROY_0]);
    ph[P_CG_KILL] = span(marks[M_CG_KILL_0], marks[M_CG_KILL_1]);
    ph[P_CG_DESTROY] = span(marks[M_CG_DESTROY_0], marks[M_CG_DESTROY_1]);
    ph[P_RMRF] = span(marks[M_RMRF_0], marks[M_RMRF_1]);
    ph[P_DESTROY] = (double)(t3 - t2);
}

static uint64_t main_start_ns;
static uint64_t oneshot_t0;   /* the parent's clock before posix_spawn */

/* A fresh process doing what `cell run -- /bin/true` does with the library:
 * open a context, one probed cycle, close; phases go to stdout as numbers. */
static int cmd_oneshot(void)
{
    double ph[P_N] = { 0 };
    ph[P_EXEC] = (double)(main_start_ns - oneshot_t0);
    uint64_t t0 = now_ns();
    cell_ctx *ctx = open_ctx();
    ph[P_CTX_OPEN] = (double)(now_ns() - t0);
    probed_cycle(ctx, ph);
    cell_ctx_close(ctx);
    for (int i = 0; i < P_N; i++)
        printf("%.0f ", ph[i]);
    printf("\n");
    return 0;
}

static void print_phase_table(const char *title, series *s, int first)
{
    printf("### %s\n\n", title);
    printf("| phase | p50 (ms) | p90 (ms) | mean (ms) | mean share of total |\n");
    printf("| --- | ---: | ---: | ---: | ---: |\n");
    struct summary tot = summarize(&s[P_TOTAL]);
    for (int i = first; i < P_N; i++) {
        if (s[i].n == 0)
            continue;
        struct summary r = summarize(&s[i]);
        printf("| %s | %.3f | %.3f | %.3f | %.0f%% |\n", s[i].name, r.p50 / 1e6, r.p90 / 1e6, r.mean / 1e6,
               tot.mean > 0 ? 100.0 * r.mean / tot.mean : 0);
    }
    printf("\n");
    fflush(stdout);
}

/* Phases are consecutive, not contenders: the last column is each phase's
 * share of the mean total, which is what "where the time goes" asks. */
static int cmd_phases(const char *self)
{
    if (!opt.state)
        die("phases needs --state");
    series in[P_N], fresh[P_N];
    for (int i = 0; i < P_N; i++) {
        in[i] = (series){ .name = phase_names[i] };
        fresh[i] = (series){ .name = phase_names[i] };
    }
    char t0_arg[32], n_arg[8] = "0";
    char *child_argv[] = { (char *)self, "oneshot", "--state", (char *)opt.state, "--t0", t0_arg,
                           "--warmup", n_arg, opt.ids_file ? "--ids" : NULL, (char *)opt.ids_file, NULL };
    cell_ctx *ctx = open_ctx();
    for (long i = -opt.warmup; i < opt.n && !stop_requested; i++) {
        /* In-process cycle (the libcell contender of the cold table). */
        double ph[P_N] = { 0 };
        probed_cycle(ctx, ph);
        if (i >= 0) {
            ph[P_TOTAL] = ph[P_CREATE] + ph[P_SPAWN_WAIT] + ph[P_DESTROY];
            for (int k = P_PREP; k < P_N; k++)
                if (k != P_EXIT)
                    series_add(&in[k], ph[k]);
        }
        /* Fresh-process cycle (what `cell run` pays). */
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) < 0)
            die("pipe: %s", strerror(errno));
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, null_fd, 0);
        posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
        uint64_t t0 = now_ns();
        snprintf(t0_arg, sizeof t0_arg, "%" PRIu64, t0);
        pid_t pid;
        int rc = posix_spawn(&pid, self, &fa, NULL, child_argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(pfd[1]);
        if (rc != 0)
            die("cannot start %s: %s", self, strerror(rc));
        char buf[2048];
        size_t len = 0;
        ssize_t r;
        while ((r = read(pfd[0], buf + len, sizeof buf - 1 - len)) > 0 || (r < 0 && errno == EINTR))
            if (r > 0)
                len += (size_t)r;
        close(pfd[0]);
        buf[len] = '\0';
        int status;
        while (waitpid(pid, &status, 0) < 0)
            if (errno != EINTR)
                die("waitpid: %s", strerror(errno));
        uint64_t t1 = now_ns();
        check_status("bench_phases oneshot", status);
        double fp[P_N] = { 0 };
        char *p = buf, *end;
        for (int k = 0; k < P_N; k++) {
            fp[k] = strtod(p, &end);
            if (end == p)
                die("bench_phases oneshot printed no phases");
            p = end;
        }
        fp[P_TOTAL] = (double)(t1 - t0);
        fp[P_EXIT] = fp[P_TOTAL] - fp[P_EXEC] - fp[P_CTX_OPEN] - fp[P_CREATE] - fp[P_SPAWN_WAIT] - fp[P_DESTROY];
        if (i >= 0)
            for (int k = 0; k < P_N; k++)
                series_add(&fresh[k], fp[k]);
    }
    cell_ctx_close(ctx);
    char title[256];
    snprintf(title, sizeof title, "Where a cold libcell cycle (with memory/pids/cpu limits) spends its time, in a long-lived process "
             "(probed build, n=%zu)", in[P_TOTAL].n);
    print_phase_table(title, in, P_PREP);
    snprintf(title, sizeof title, "The same cycle in a fresh process per cell, as `cell run` does "
             "(probed build, n=%zu)", fresh[P_TOTAL].n);
    print_phase_table(title, fresh, P_EXEC);
    write_raw("phases_inprocess", in, P_N);
    write_raw("phases_fresh_process", fresh, P_N);
    return stop_requested ? 130 : 0;
}
#endif /* CELL_BENCH_PHASES */

/* ---- cold: boot, run /bin/true, destroy ------------------------------------------ */

static int cmd_cold(void)
{
    if (!opt.cell_bin || !opt.bwrap || !opt.unshare || !opt.state)
        die("cold needs --state, --cell, --bwrap and --unshare");
    cell_ctx *ctx = open_ctx();
    char *cli_argv[] = { (char *)opt.cell_bin, "--state", (char *)opt.state, "run", "--", "/bin/true", NULL };
    char *bwrap_argv[] = { (char *)opt.bwrap, "--unshare-all", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin",
                           "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink",
                           "usr/sbin", "/sbin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--",
                           "/bin/true", NULL };
    char *unshare_argv[] = { (char *)opt.unshare, "--user", "--map-root-user", "--pid", "--fork", "--mount", "--net",
                             "--uts", "--ipc", "/bin/true", NULL };
    enum { C_LIB, C_LIB_LIMITS, C_CLI, C_BWRAP, C_UNSHARE, C_N };
    series s[C_N] = {
        [C_LIB] = { .name = "cell (libcell: create+spawn+wait+destroy)" },
        [C_LIB_LIMITS] = { .name = "cell (libcell, with memory/pids/cpu limits)" },
        [C_CLI] = { .name = "cell run (CLI process)" },
        [C_BWRAP] = { .name = "bwrap" },
        [C_UNSHARE] = { .name = "unshare" },
    };
    for (long i = -opt.warmup; i < opt.n && !stop_requested; i++) {
        for (int k = 0; k < C_N && !stop_requested; k++) {
            int which = (int)((i + opt.warmup + k) % C_N);
            uint64_t dt = 0;
            switch (which) {
            case C_LIB:
            case C_LIB_LIMITS: {
                uint64_t t0 = now_ns();
                cell *c = new_cell_limited(ctx, which == C_LIB_LIMITS);
                cell_true(c);
                cell_destroy(c);
                dt = now_ns() - t0;
                break;
            }
            case C_CLI:
                check_status("cell run", run_process(cli_argv, &dt));
                break;
            case C_BWRAP:
                check_status("bwrap", run_process(bwrap_argv, &dt));
                break;
            case C_UNSHARE:
                check_status("unshare", run_process(unshare_argv, &dt));
                break;
            }
            if (i >= 0)
                series_add(&s[which], (double)dt);
        }
        if (i >= 0 && (i + 1) % 50 == 0)
            fprintf(stderr, "  cold: %ld/%ld\n", i + 1, opt.n);
    }
    cell_ctx_close(ctx);
    print_table("Cold start: boot an isolated environment, run /bin/true, tear it down", s, C_N, C_BWRAP, 1e6, "ms");
    write_raw("cold", s, C_N);
    return stop_requested ? 130 : 0;
}

/* ---- warm: /bin/true in a running cell vs on the host ---------------------------- */

static int cmd_warm(void)
{
    cell_ctx *ctx = open_ctx();
    cell *c = new_cell(ctx);
    char *argv[] = { "/bin/true", NULL };
    enum { W_CELL, W_SPAWN, W_FORK, W_N };
    series s[W_N] = {
        [W_CELL] = { .name = "cell (cell_spawn + cell_wait_exit in a running cell)" },
        [W_SPAWN] = { .name = "host posix_spawn + waitpid" },
        [W_FORK] = { .name = "host fork + execv + waitpid" },
    };
    for (long i = -opt.warmup; i < opt.n && !stop_requested; i++) {
        for (int k = 0; k < W_N; k++) {
            int which = (int)((i + opt.warmup + k) % W_N);
            uint64_t t0 = now_ns(), dt = 0;
            switch (which) {
            case W_CELL:
                cell_true(c);
                dt = now_ns() - t0;
                break;
            case W_SPAWN:
                check_status("/bin/true", run_process(argv, &dt));
                break;
            case W_FORK: {
                pid_t pid = fork();
                if (pid < 0)
                    die("fork: %s", strerror(errno));
                if (pid == 0) {
                    dup2(null_fd, 0);
                    dup2(null_fd, 1);
                    dup2(null_fd, 2);
                    execv(argv[0], argv);
                    _exit(127);
                }
                int status;
                while (waitpid(pid, &status, 0) < 0)
                    if (errno != EINTR)
                        die("waitpid: %s", strerror(errno));
                dt = now_ns() - t0;
                check_status("/bin/true (fork+exec)", status);
                break;
            }
            }
            if (i >= 0)
                series_add(&s[which], (double)dt);
        }
    }
    cell_destroy(c);
    cell_ctx_close(ctx);
    print_table("Warm start: run /bin/true in an already running cell vs on the host", s, W_N, W_SPAWN, 1e3, "µs");
    write_raw("warm", s, W_N);
    return stop_requested ? 130 : 0;
}

/* ---- density: many idle cells at once ----------------------------------------------- */

struct meminfo {
    long total, avail, free, anon, shmem, slab, sreclaim, sunreclaim, kstack, pagetables, percpu;
};

static struct meminfo read_meminfo(void)
{
    struct meminfo m = { 0 };
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        die("cannot read /proc/meminfo");
    char key[64];
    long v;
    while (fscanf(f, "%63[^:]: %ld kB\n", key, &v) == 2) {
        if (!strcmp(key, "MemTotal")) m.total = v;
        else if (!strcmp(key, "MemAvailable")) m.avail = v;
        else if (!strcmp(key, "MemFree")) m.free = v;
        else if (!strcmp(key, "AnonPages")) m.anon = v;
        else if (!strcmp(key, "Shmem")) m.shmem = v;
        else if (!strcmp(key, "Slab")) m.slab = v;
        else if (!strcmp(key, "SReclaimable")) m.sreclaim = v;
        else if (!strcmp(key, "SUnreclaim")) m.sunreclaim = v;
        else if (!strcmp(key, "KernelStack")) m.kstack = v;
        else if (!strcmp(key, "PageTables")) m.pagetables = v;
        else if (!strcmp(key, "Percpu")) m.percpu = v;
    }
    fclose(f);
    return m;
}

/* /proc/slabinfo: bytes in active objects per cache, to show which kernel
 * objects an idle cell holds. */
struct slab_entry {
    char   name[64];
    double bytes;
};
struct slab_snap {
    struct slab_entry *e;
    size_t n;
};

static struct slab_snap read_slabinfo(void)
{
    struct slab_snap s = { 0 };
    FILE *f = fopen("/proc/slabinfo", "re");
    if (!f)
        return s;
    char line[512];
    size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        char name[64];
        long active, total, size;
        if (line[0] == '#' || sscanf(line, "%63s %ld %ld %ld", name, &active, &total, &size) != 4)
            continue;
        if (s.n == cap) {
            cap = cap ? cap * 2 : 256;
            s.e = realloc(s.e, cap * sizeof *s.e);
            if (!s.e)
                die("out of memory");
        }
        snprintf(s.e[s.n].name, sizeof s.e[s.n].name, "%s", name);
        s.e[s.n].bytes = (double)active * (double)size;
        s.n++;
    }
    fclose(f);
    return s;
}

static int cmp_slab_desc(const void *a, const void *b)
{
    double x = ((const struct slab_entry *)a)->bytes, y = ((const struct slab_entry *)b)->bytes;
    return (x < y) - (x > y);
}

static void print_slab_growth(const struct slab_snap *before, const struct slab_snap *after, size_t cells, size_t top)
{
    if (!before->n || !after->n || !cells)
        return;
    struct slab_entry *d = calloc(after->n, sizeof *d);
    if (!d)
        die("out of memory");
    double sum = 0;
    for (size_t i = 0; i < after->n; i++) {
        d[i] = after->e[i];
        for (size_t j = 0; j < before->n; j++)
            if (!strcmp(before->e[j].name, after->e[i].name)) {
                d[i].bytes -= before->e[j].bytes;
                break;
            }
        if (d[i].bytes > 0)
            sum += d[i].bytes;
    }
    qsort(d, after->n, sizeof *d, cmp_slab_desc);
    printf("| slab cache (active objects; merged caches show one name) | growth | per cell |\n| --- | ---: | ---: |\n");
    for (size_t i = 0; i < top && i < after->n && d[i].bytes > 0; i++)
        printf("| %s | %.1f MiB | %.1f KiB |\n", d[i].name, d[i].bytes / 1048576.0, d[i].bytes / 1024.0 / (double)cells);
    printf("| all caches that grew | %.1f MiB | %.1f KiB |\n\n", sum / 1048576.0, sum / 1024.0 / (double)cells);
    free(d);
}

/* A kB field ("VmRSS:", "Pss:") from a /proc file; -1 if absent. */
static long proc_kb(const char *path, const char *field)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0) {
            v = strtol(line + n, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* The cell's cgroup directory that lists its processes and charges its
 * memory: v1 memory hierarchy, else v2.  "" if none is found. */
static void cell_cgroup_dir(const cell *c, char *out, size_t size)
{
    static const char *const roots[] = { "/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified", "/sys/fs/cgroup", NULL };
    out[0] = '\0';
    for (const char *const *r = roots; *r; r++) {
        char probe[4096];
        snprintf(probe, sizeof probe, "%s/cell/%s/cgroup.procs", *r, cell_id(c));
        if (access(probe, R_OK) == 0) {
            snprintf(out, size, "%s/cell/%s", *r, cell_id(c));
            return;
        }
    }
}

struct cellmem {
    long rss, pss, priv, procs;   /* kB over the processes, count */
    long memcg;                   /* bytes charged to the cells' memory cgroups, -1 if unknown */
};

static void add_pid_mem(struct cellmem *m, long pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/smaps_rollup", pid);
    long rss = proc_kb(path, "Rss:");
    if (rss < 0)
        return;
    long pss = proc_kb(path, "Pss:");
    long pc = proc_kb(path, "Private_Clean:");
    long pd = proc_kb(path, "Private_Dirty:");
    m->rss += rss;
    m->pss += pss > 0 ? pss : 0;
    m->priv += (pc > 0 ? pc : 0) + (pd > 0 ? pd : 0);
    m->procs++;
}

static struct cellmem measure_cells(cell **cells, size_t n)
{
    struct cellmem m = { 0 };
    int memcg_ok = 1;
    for (size_t i = 0; i < n; i++) {
        char dir[4096], path[4200];
        cell_cgroup_dir(cells[i], dir, sizeof dir);
        int listed = 0;
        if (dir[0]) {
            snprintf(path, sizeof path, "%s/cgroup.procs", dir);
            FILE *f = fopen(path, "re");
            long pid;
            while (f && fscanf(f, "%ld", &pid) == 1) {
                add_pid_mem(&m, pid);
                listed++;
            }
            if (f)
                fclose(f);
            long long usage = -1;
            snprintf(path, sizeof path, "%s/memory.usage_in_bytes", dir);
            f = fopen(path, "re");
            if (!f) {
                snprintf(path, sizeof path, "%s/memory.current", dir);
                f = fopen(path, "re");
            }
            if (f) {
                if (fscanf(f, "%lld", &usage) != 1)
                    usage = -1;
                fclose(f);
            }
            if (usage >= 0)
                m.memcg += usage;
            else
                memcg_ok = 0;
        } else {
            memcg_ok = 0;
        }
        if (!listed)
            add_pid_mem(&m, cell_init_pid(cells[i]));
    }
    if (!memcg_ok)
        m.memcg = -1;
    return m;
}

/* num_cgroups of the memory controller in /proc/cgroups: live plus dying
 * (removed but still pinned by charged pages or objects); -1 if unknown. */
static long memcg_count(void)
{
    FILE *f = fopen("/proc/cgroups", "re");
    if (!f)
        return -1;
    char line[256], name[64];
    long hier, num = -1, on;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%63s %ld %ld %ld", name, &hier, &num, &on) == 4 && !strcmp(name, "memory"))
            break;
        else
            num = -1;
    fclose(f);
    return num;
}

static void settle(void)
{
    /* Let deferred work (RCU frees, lazy cgroup release) land before reading. */
    struct timespec ts = { 1, 0 };
    nanosleep(&ts, NULL);
}

static void print_density_row(const char *what, double total_kb, size_t n)
{
    printf("| %s | %.1f MiB | %.0f KiB |\n", what, total_kb / 1024.0, n ? total_kb / (double)n : 0);
}

/* Processes whose process group is one of pids[]: counted, and with
 * `measure` their memory summed. */
static struct cellmem scan_groups(const pid_t *pids, size_t n, int measure)
{
    struct cellmem pm = { 0 };
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        long pid = strtol(e->d_name, NULL, 10);
        if (pid <= 0)
            continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        long pgrp = 0;
        /* pid (comm) state ppid pgrp: comm may hold spaces, so skip past ')'. */
        if (fgets(buf, sizeof buf, f)) {
            char *rp = strrchr(buf, ')');
            if (rp)
                sscanf(rp + 2, "%*c %*d %ld", &pgrp);
        }
        fclose(f);
        for (size_t i = 0; i < n; i++)
            if (pgrp == pids[i]) {
                if (measure)
                    add_pid_mem(&pm, pid);
                else
                    pm.procs++;
                break;
            }
    }
    if (d)
        closedir(d);
    return pm;
}

/* For scale: the same number of idle bwrap sandboxes, each running `sleep`
 * (bwrap itself, its pid 1, and sleep).  --die-with-parent and a process
 * group of their own make sure none outlives this process or the kill. */
static void bwrap_density(size_t n)
{
    pid_t *pids = calloc(n, sizeof *pids);
    if (!pids)
        die("out of memory");
    char *argv[] = { (char *)opt.bwrap, "--die-with-parent", "--unshare-all", "--ro-bind", "/usr", "/usr",
                     "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64",
                     "/lib64", "--symlink", "usr/sbin", "/sbin", "--proc", "/proc", "--dev", "/dev", "--tmpfs",
                     "/tmp", "--", "/bin/sleep", "3600", NULL };
    settle();
    struct meminfo m0 = read_meminfo();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, null_fd, 0);
    posix_spawn_file_actions_adddup2(&fa, null_fd, 1);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    size_t started = 0;
    for (; started < n && !stop_requested; started++)
        if (posix_spawn(&pids[started], opt.bwrap, &fa, &attr, argv, environ) != 0)
            break;
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    /* Wait until every sandbox runs its sleep (a process count of 3 per
     * group is not visible cheaply, so give them time). */
    struct timespec ts = { 2, 0 };
    nanosleep(&ts, NULL);
    struct meminfo m1 = read_meminfo();
    struct cellmem pm = scan_groups(pids, started, 1);
    for (size_t i = 0; i < started; i++)
        kill(-pids[i], SIGKILL);
    for (size_t i = 0; i < started; i++)
        while (waitpid(pids[i], NULL, 0) < 0 && errno == EINTR)
            ;
    /* The sandboxes' inner processes are reaped by the host's init: wait
     * until they are gone too, so the next benchmark starts clean. */
    for (int tries = 0; tries < 100 && scan_groups(pids, started, 0).procs > 0; tries++) {
        struct timespec pause = { 0, 50 * 1000000L };
        nanosleep(&pause, NULL);
    }
    free(pids);
    printf("| measure (for scale: %zu idle bwrap sandboxes running `sleep 3600`, %ld processes) | total | per sandbox |\n"
           "| --- | ---: | ---: |\n", started, pm.procs);
    print_density_row("host: MemAvailable drop", (double)(m0.avail - m1.avail), started);
    print_density_row("  of which Slab (unreclaimable + reclaimable)", (double)((m1.sunreclaim + m1.sreclaim) -
                                                                                  (m0.sunreclaim + m0.sreclaim)), started);
    print_density_row("bwrap + sleep processes: sum of Pss", (double)pm.pss, started);
    print_density_row("bwrap + sleep processes: sum of Private", (double)pm.priv, started);
    printf("\n");
    fflush(stdout);
}

static int cmd_density(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    size_t want = (size_t)opt.n;
    cell **cells = calloc(want, sizeof *cells);
    if (!cells)
        die("out of memory");
    cell_ctx *ctx = open_ctx();
    /* One warm-up cell so that the host image and the ctx are built before
     * the baseline is taken. */
    cell_destroy(new_cell(ctx));
    settle();
    struct meminfo m0 = read_meminfo();
    struct slab_snap slab0 = read_slabinfo();
    long memcg0 = memcg_count();
    long self0 = proc_kb("/proc/self/status", "VmRSS:");

    series create_t = { .name = "cell_create with k cells alive" };
    size_t n = 0;
    const char *failure = NULL;
    cell_error err = { 0 };
    uint64_t tc0 = now_ns();
    while (n < want && !stop_requested) {
        cell_config cfg;
        memset(&cfg, 0, sizeof cfg);
        uint64_t t0 = now_ns();
        if (cell_create(ctx, &cfg, &cells[n], &err) < 0) {
            failure = err.message;
            break;
        }
        series_add(&create_t, (double)(now_ns() - t0));
        note_cell(cells[n]);
        n++;
        if (n % 100 == 0)
            fprintf(stderr, "  density: %zu/%zu cells alive\n", n, want);
    }
    uint64_t tc1 = now_ns();
    if (failure)
        fprintf(stderr, "bench_cell: cell_create failed after %zu cells: %s\n", n, failure);

    settle();
    struct meminfo m1 = read_meminfo();
    struct slab_snap slab1 = read_slabinfo();
    long memcg1 = memcg_count();
    long self1 = proc_kb("/proc/self/status", "VmRSS:");
    struct cellmem c1 = measure_cells(cells, n);

    struct meminfo m2 = { 0 };
    struct cellmem c2 = { 0 };
    size_t sleeping = 0;
    if (opt.sleepers) {
        const char *const sleep_argv[] = { "sleep", "3600", NULL };
        for (size_t i = 0; i < n && !stop_requested; i++) {
            cell_proc_spec spec = { .argv = sleep_argv, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1 };
            pid_t pid;
            if (cell_spawn(cells[i], &spec, &pid, NULL, &err) < 0) {
                fprintf(stderr, "bench_cell: cell_spawn sleep in cell %zu: %s\n", i, err.message);
                break;
            }
            sleeping++;
        }
        settle();
        m2 = read_meminfo();
        c2 = measure_cells(cells, n);
    }

    uint64_t td0 = now_ns();
    for (size_t i = 0; i < n; i++)
        cell_destroy(cells[i]);
    uint64_t td1 = now_ns();
    cell_ctx_close(ctx);
    settle();
    settle();
    settle();
    struct meminfo m3 = read_meminfo();
    long memcg3 = memcg_count();

    printf("### Density: %zu idle cells alive at once (requested %zu)\n\n", n, want);
    printf("| measure (idle cells: cell-init only) | total | per cell |\n| --- | ---: | ---: |\n");
    print_density_row("host: MemAvailable drop", (double)(m0.avail - m1.avail), n);
    print_density_row("host: MemFree drop", (double)(m0.free - m1.free), n);
    print_density_row("  of which Slab (unreclaimable)", (double)(m1.sunreclaim - m0.sunreclaim), n);
    print_density_row("  of which Slab (reclaimable)", (double)(m1.sreclaim - m0.sreclaim), n);
    print_density_row("  of which Percpu", (double)(m1.percpu - m0.percpu), n);
    print_density_row("  of which KernelStack", (double)(m1.kstack - m0.kstack), n);
    print_density_row("  of which PageTables", (double)(m1.pagetables - m0.pagetables), n);
    print_density_row("  of which Shmem (tmpfs)", (double)(m1.shmem - m0.shmem), n);
    print_density_row("  of which AnonPages", (double)(m1.anon - m0.anon), n);
    print_density_row("cell-init processes: sum of Rss", (double)c1.rss, n);
    print_density_row("cell-init processes: sum of Pss", (double)c1.pss, n);
    print_density_row("cell-init processes: sum of Private_Clean+Private_Dirty", (double)c1.priv, n);
    if (c1.memcg >= 0)
        print_density_row("cells' memory cgroups: sum of usage (user + kernel charged)", (double)c1.memcg / 1024.0, n);
    print_density_row("owner process (this benchmark): VmRSS growth", (double)(self1 - self0), n);
    printf("\n");
    print_slab_growth(&slab0, &slab1, n, 12);
    free(slab0.e);
    free(slab1.e);
    if (opt.sleepers && sleeping) {
        printf("| measure (each cell also runs `sleep 3600`; %zu sleepers) | total | per cell |\n| --- | ---: | ---: |\n",
               sleeping);
        print_density_row("host: MemAvailable drop (vs before the cells)", (double)(m0.avail - m2.avail), n);
        print_density_row("host: MemAvailable drop due to the sleepers", (double)(m1.avail - m2.avail), n);
        print_density_row("cell processes (init + sleep): sum of Pss", (double)c2.pss, n);
        print_density_row("cell processes (init + sleep): sum of Private", (double)c2.priv, n);
        if (c2.memcg >= 0)
            print_density_row("cells' memory cgroups: sum of usage", (double)c2.memcg / 1024.0, n);
        printf("\n");
    }
    struct summary cs = summarize(&create_t);
    printf("| timing | value |\n| --- | ---: |\n");
    printf("| create %zu cells, total | %.2f s |\n", n, (double)(tc1 - tc0) / 1e9);
    printf("| cell_create p50 / p90 / max while the population grows | %.2f / %.2f / %.2f ms |\n", cs.p50 / 1e6,
           cs.p90 / 1e6, cs.max / 1e6);
    if (create_t.n >= 20) {
        size_t tenth = create_t.n / 10;
        series first = { .v = create_t.v, .n = tenth }, last = { .v = create_t.v + create_t.n - tenth, .n = tenth };
        struct summary f = summarize(&first), l = summarize(&last);
        printf("| cell_create p50: first %zu cells / last %zu cells | %.2f / %.2f ms |\n", tenth, tenth, f.p50 / 1e6,
               l.p50 / 1e6);
    }
    printf("| destroy %zu cells, total | %.2f s |\n", n, (double)(td1 - td0) / 1e9);
    printf("| host MemAvailable 3 s after destroying all, vs before | %+.1f MiB |\n", (double)(m3.avail - m0.avail) / 1024.0);
    if (memcg0 >= 0)
        printf("| memory cgroups in /proc/cgroups (live + dying): before / with the cells / 3 s after destroy | "
               "%ld / %ld / %ld |\n", memcg0, memcg1, memcg3);
    printf("\n");
    fflush(stdout);
    if (opt.bwrap && !stop_requested)
        bwrap_density(n ? n : want);
    write_raw("density_create", &create_t, 1);
    free(cells);
    return stop_requested ? 130 : (failure ? 1 : 0);
}

/* ---- main ---------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_cell cold|warm|density"
#ifdef CELL_BENCH_PHASES
            "|phases"
#endif
            " [--n N] [--warmup N] [--state DIR] [--cell BIN] [--bwrap BIN] [--unshare BIN]\n"
            "                  [--raw DIR] [--ids FILE] [--no-sleepers]\n");
    exit(2);
}

int main(int argc, char **argv)
{
#ifdef CELL_BENCH_PHASES
    main_start_ns = now_ns();
#endif
    if (argc < 2)
        usage();
    const char *cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-sleepers")) {
            opt.sleepers = 0;
            continue;
        }
        if (!v)
            usage();
        if (!strcmp(a, "--n")) opt.n = strtol(v, NULL, 10);
        else if (!strcmp(a, "--warmup")) opt.warmup = strtol(v, NULL, 10);
        else if (!strcmp(a, "--state")) opt.state = v;
        else if (!strcmp(a, "--cell")) opt.cell_bin = v;
        else if (!strcmp(a, "--bwrap")) opt.bwrap = v;
        else if (!strcmp(a, "--unshare")) opt.unshare = v;
        else if (!strcmp(a, "--raw")) opt.raw_dir = v;
        else if (!strcmp(a, "--ids")) opt.ids_file = v;
#ifdef CELL_BENCH_PHASES
        else if (!strcmp(a, "--t0")) oneshot_t0 = strtoull(v, NULL, 10);
#endif
        else usage();
        i++;
    }
    if (opt.n <= 0 || opt.warmup < 0)
        die("--n must be positive and --warmup not negative");
    if (geteuid() != 0)
        die("must run as root (libcell requires it)");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0)
        die("cannot open /dev/null");
    if (opt.ids_file && !(ids_fp = fopen(opt.ids_file, "ae")))
        die("cannot open %s: %s", opt.ids_file, strerror(errno));

    if (!strcmp(cmd, "cold"))
        return cmd_cold();
    if (!strcmp(cmd, "warm"))
        return cmd_warm();
    if (!strcmp(cmd, "density"))
        return cmd_density();
#ifdef CELL_BENCH_PHASES
    if (!strcmp(cmd, "phases")) {
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0)
            die("cannot find my own executable");
        self[n] = '\0';
        return cmd_phases(self);
    }
    if (!strcmp(cmd, "oneshot"))
        return cmd_oneshot();
#endif
    usage();
}
