/* test_cgroup.c: cgroup layout detection and planning on sample hybrid and
 * pure v2 hosts, cpu.max text, and (as root) a live cgroup on this host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "isolate/cgroup_internal.h"
#include "isolate/isolate.h"
#include "util/util.h"

/* This machine: v1 controllers each on their own mount, an empty v2 tree. */
static const char hybrid_split[] =
    "22 1 0:20 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices\n"
    "37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n"
    "38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

/* systemd's hybrid layout: optional fields, cpu co-mounted with cpuacct,
 * and (for the escape test) memory at a path with a space. */
static const char hybrid_systemd[] =
    "25 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
    "31 26 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
    "32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate\n"
    "33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd\n"
    "36 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 master:3 - cgroup cgroup rw,cpu,cpuacct\n"
    "37 31 0:32 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpuset\n"
    "38 31 0:33 / /mnt/my\\040cgroups rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory\n"
    "39 31 0:34 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids\n"
    "40 31 0:35 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,freezer\n"
    "41 31 0:36 / /sys/fs/cgroup/memory2 rw,relatime shared:19 - cgroup cgroup rw,memory\n";

static const char pure_v2[] =
    "24 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw\n"
    "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
    "90 35 0:30 /sub /mnt/bound rw,relatime shared:4 - cgroup2 cgroup2 rw\n"
    "91 1 0:40 / /mnt/trunc rw shared:5\n";

static struct cg_layout *layout_of(const char *text, const char *v2_controllers)
{
    struct cg_layout *lay = calloc(1, sizeof *lay);
    assert_non_null(lay);
    isolate_cgroup_parse_mountinfo(lay, text);
    lay->v2_ctrls = isolate_cgroup_parse_controllers(v2_controllers);
    return lay;
}

static void test_parse_hybrid_split(void **state)
{
    (void)state;
    struct cg_layout *lay = layout_of(hybrid_split, "hugetlb\n");
    assert_string_equal(lay->v2_root, "/sys/fs/cgroup/unified");
    assert_int_equal(lay->v2_ctrls, 0);
    assert_string_equal(lay->v1_root[CG_MEMORY_I], "/sys/fs/cgroup/memory");
    assert_string_equal(lay->v1_root[CG_PIDS_I], "/sys/fs/cgroup/pids");
    assert_string_equal(lay->v1_root[CG_CPU_I], "/sys/fs/cgroup/cpu");
    assert_string_equal(lay->v1_root[CG_FREEZER_I], "/sys/fs/cgroup/freezer");
    free(lay);
}

static void test_parse_hybrid_systemd(void **state)
{
    (void)state;
    struct cg_layout *lay = layout_of(hybrid_systemd, "");
    assert_string_equal(lay->v2_root, "/sys/fs/cgroup/unified");
    assert_string_equal(lay->v1_root[CG_CPU_I], "/sys/fs/cgroup/cpu,cpuacct");
    /* Unescaped, and the first mount of a hierarchy wins over later ones. */
    assert_string_equal(lay->v1_root[CG_MEMORY_I], "/mnt/my cgroups");
    assert_string_equal(lay->v1_root[CG_PIDS_I], "/sys/fs/cgroup/pids");
    assert_string_equal(lay->v1_root[CG_FREEZER_I], "/sys/fs/cgroup/freezer");
    free(lay);
}

static void test_parse_pure_v2(void **state)
{
    (void)state;
    struct cg_layout *lay = layout_of(pure_v2, "cpuset cpu io memory hugetlb pids rdma misc\n");
    assert_string_equal(lay->v2_root, "/sys/fs/cgroup");
    assert_int_equal(lay->v2_ctrls, CG_MEMORY | CG_PIDS | CG_CPU);
    for (int i = 0; i < CG_NCTRL; i++)
        assert_string_equal(lay->v1_root[i], "");
    free(lay);
}

static void test_parse_controllers(void **state)
{
    (void)state;
    assert_int_equal(isolate_cgroup_parse_controllers(""), 0);
    assert_int_equal(isolate_cgroup_parse_controllers("cpuset cpuacct io\n"), 0);
    assert_int_equal(isolate_cgroup_parse_controllers("freezer memory"), CG_MEMORY);
    assert_int_equal(isolate_cgroup_parse_controllers("pids\tcpu\n"), CG_PIDS | CG_CPU);
}

static void test_plan_hybrid(void **state)
{
    (void)state;
    struct cg_layout *lay = layout_of(hybrid_split, "hugetlb\n");
    struct cg_plan *plan = calloc(1, sizeof *plan);
    assert_non_null(plan);
    cell_limits lim = { .memory = 64u << 20, .pids = 32, .cpu_millis = 500 };
    cell_error err = { 0 };
    assert_int_equal(isolate_cgroup_plan(lay, "c1", &lim, plan, &err), 0);
    assert_int_equal(plan->n, 4);
    const char *want[] = { "/sys/fs/cgroup/memory/cell/c1", "/sys/fs/cgroup/pids/cell/c1",
                           "/sys/fs/cgroup/cpu/cell/c1", "/sys/fs/cgroup/freezer/cell/c1" };
    const unsigned bits[] = { CG_MEMORY, CG_PIDS, CG_CPU, CG_FREEZER };
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(plan->dir[i].path, want[i]);
        assert_int_equal(plan->dir[i].v2, 0);
        assert_int_equal(plan->dir[i].ctrls, bits[i]);
    }
    free(plan);
    free(lay);
}

static void test_plan_hybrid_comounted(void **state)
{
    (void)state;
    /* cpu and freezer on one v1 hierarchy: one directory serves both. */
    struct cg_layout *lay = layout_of(
        "1 0 0:1 / /cg/cpu rw - cgroup cgroup rw,cpu,cpuacct,freezer\n"
        "2 0 0:2 / /cg/memory rw - cgroup cgroup rw,memory\n",
        "");
    struct cg_plan *plan = calloc(1, sizeof *plan);
    assert_non_null(plan);
    assert_int_equal(isolate_cgroup_plan(lay, "c2", NULL, plan, NULL), 0);
    assert_int_equal(plan->n, 2);
    assert_string_equal(plan->dir[0].path, "/cg/memory/cell/c2");
    assert_int_equal(plan->dir[0].ctrls, CG_MEMORY);
    assert_string_equal(plan->dir[1].path, "/cg/cpu/cell/c2");
    assert_int_equal(plan->dir[1].ctrls, CG_CPU | CG_FREEZER);
    free(plan);
    free(lay);
}

static void test_plan_pure_v2(void **state)
{
    (void)state;
    struct cg_layout *lay = layout_of(pure_v2, "cpuset cpu io memory pids\n");
    struct cg_plan *plan = calloc(1, sizeof *plan);
    assert_non_null(plan);
    cell_limits lim = { .memory = 1u << 30, .pids = 100, .cpu_millis = 2000 };
    assert_int_equal(isolate_cgroup_plan(lay, "abc", &lim, plan, NULL), 0);
    assert_int_equal(plan->n, 1);
    assert_string_equal(plan->dir[0].root, "/sys/fs/cgroup");
    assert_string_equal(plan->dir[0].path, "/sys/fs/cgroup/cell/abc");
    assert_int_equal(plan->dir[0].v2, 1);
    assert_int_equal(plan->dir[0].ctrls, CG_MEMORY | CG_PIDS | CG_CPU);
    free(plan);
    free(lay);
}

static void test_plan_mixed(void **state)
{
    (void)state;
    /* memory bound to v2, pids still on v1: each controller where it lives. */
    struct cg_layout *lay = layout_of(
        "1 0 0:1 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        "2 0 0:2 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
        "memory");
    struct cg_plan *plan = calloc(1, sizeof *plan);
    assert_non_null(plan);
    cell_limits lim = { .memory = 1u << 20, .pids = 5 };
    assert_int_equal(isolate_cgroup_plan(lay, "m", &lim, plan, NULL), 0);
    assert_int_equal(plan->n, 2);
    assert_string_equal(plan->dir[0].path, "/sys/fs/cgroup/unified/cell/m");
    assert_int_equal(plan->dir[0].ctrls, CG_MEMORY);
    assert_string_equal(plan->dir[1].path, "/sys/fs/cgroup/pids/cell/m");
    free(plan);
    free(lay);
}

static void test_plan_missing_controller(void **state)
{
    (void)state;
    /* A v2 host whose root offers no memory controller. */
    struct cg_layout *lay = layout_of(pure_v2, "cpu pids\n");
    struct cg_plan *plan = calloc(1, sizeof *plan);
    assert_non_null(plan);
    cell_error err = { 0 };
    cell_limits lim = { .memory = 1u << 20 };
    assert_int_equal(isolate_cgroup_plan(lay, "x", &lim, plan, &err), -1);
    assert_int_equal(err.code, EOPNOTSUPP);
    assert_non_null(strstr(err.message, "cannot enforce --memory: no memory cgroup controller"));
    assert_non_null(strstr(err.message, "/sys/fs/cgroup"));

    lim = (cell_limits){ .cpu_millis = 100 };
    lay->v2_ctrls = CG_MEMORY;
    assert_int_equal(isolate_cgroup_plan(lay, "x", &lim, plan, &err), -1);
    assert_non_null(strstr(err.message, "cannot enforce --cpu"));

    /* No limits: the same host is fine, with a tracking-only v2 cgroup. */
    lay->v2_ctrls = 0;
    assert_int_equal(isolate_cgroup_plan(lay, "x", NULL, plan, &err), 0);
    assert_int_equal(plan->n, 1);
    assert_int_equal(plan->dir[0].ctrls, 0);

    /* No cgroup filesystem at all: nothing to create, and limits fail. */
    memset(lay, 0, sizeof *lay);
    assert_int_equal(isolate_cgroup_plan(lay, "x", NULL, plan, &err), 0);
    assert_int_equal(plan->n, 0);
    lim = (cell_limits){ .pids = 3 };
    assert_int_equal(isolate_cgroup_plan(lay, "x", &lim, plan, &err), -1);
    assert_non_null(strstr(err.message, "cannot enforce --pids"));
    free(plan);
    free(lay);
}

static void test_plan_bad_name(void **state)
{
    (void)state;
    struct cg_layout *lay = layout_of(pure_v2, "memory pids cpu");
    struct cg_plan *plan = calloc(1, sizeof *plan);
    assert_non_null(plan);
    cell_error err = { 0 };
    assert_int_equal(isolate_cgroup_plan(lay, "..", NULL, plan, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_int_equal(isolate_cgroup_plan(lay, "a/b", NULL, plan, &err), -1);
    assert_int_equal(isolate_cgroup_plan(lay, "", NULL, plan, &err), -1);
    assert_int_equal(isolate_cgroup_plan(lay, NULL, NULL, plan, &err), -1);
    free(plan);
    free(lay);
}

static void test_cmdline_nosocket(void **state)
{
    (void)state;
    assert_int_equal(isolate_cgroup_cmdline_nosocket(""), 0);
    assert_int_equal(isolate_cgroup_cmdline_nosocket("root=/dev/vda ro quiet\n"), 0);
    assert_int_equal(isolate_cgroup_cmdline_nosocket("root=/dev/vda cgroup.memory=nosocket\n"), 1);
    assert_int_equal(isolate_cgroup_cmdline_nosocket("cgroup.memory=nokmem,nosocket quiet"), 1);
    assert_int_equal(isolate_cgroup_cmdline_nosocket("a cgroup.memory=nosocket,nokmem b"), 1);
    assert_int_equal(isolate_cgroup_cmdline_nosocket("cgroup.memory=nokmem cgroup.memory=nosocket"), 1);
    /* Near misses: other options, other parameters, substrings. */
    assert_int_equal(isolate_cgroup_cmdline_nosocket("cgroup.memory=nokmem,nobpf"), 0);
    assert_int_equal(isolate_cgroup_cmdline_nosocket("cgroup.memory=nosockets"), 0);
    assert_int_equal(isolate_cgroup_cmdline_nosocket("cgroup.memory=xnosocket"), 0);
    assert_int_equal(isolate_cgroup_cmdline_nosocket("mycgroup.memory=nosocket"), 0);
    assert_int_equal(isolate_cgroup_cmdline_nosocket("cgroup.memoryx=nosocket"), 0);
    assert_int_equal(isolate_cgroup_cmdline_nosocket("nosocket cgroup.memory="), 0);
    assert_int_equal(isolate_cgroup_cmdline_nosocket("cgroup.memory=,,"), 0);
}

static void test_cpu_max(void **state)
{
    (void)state;
    char buf[64];
    cell_error err = { 0 };
    assert_int_equal(isolate_cgroup_cpu_max(500, buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "50000 100000");
    assert_int_equal(isolate_cgroup_cpu_max(1000, buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "100000 100000");
    assert_int_equal(isolate_cgroup_cpu_max(2500, buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "250000 100000");
    assert_int_equal(isolate_cgroup_cpu_max(10, buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "1000 100000");
    assert_int_equal(isolate_cgroup_cpu_max(0, buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "max 100000");
    assert_int_equal(isolate_cgroup_cpu_max(UINT32_MAX, buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "429496729500 100000");
    /* Below the kernel's 1 ms minimum: refused, not rounded up. */
    assert_int_equal(isolate_cgroup_cpu_max(9, buf, sizeof buf, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_non_null(strstr(err.message, "--cpu"));
    assert_int_equal(isolate_cgroup_cpu_max(500, buf, 5, &err), -1);
}

/* ---- live ------------------------------------------------------------------------ */

static void assert_file_is(const char *dir, const char *file, const char *want)
{
    char path[PATH_MAX + 64], *text = NULL;
    cell_error err = { 0 };
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (util_read_file(path, 4096, &text, NULL, &err) < 0)
        fail_msg("%s", err.message);
    text[strcspn(text, "\n")] = '\0';
    if (strcmp(text, want) != 0) {
        print_error("%s holds \"%s\", expected \"%s\"\n", path, text, want);
        free(text);
        fail();
    }
    free(text);
}

static int procs_contains(const char *dir, pid_t pid)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    FILE *f = fopen(path, "re");
    assert_non_null(f);
    int p, found = 0;
    while (fscanf(f, "%d", &p) == 1)
        found |= p == pid;
    fclose(f);
    return found;
}

static int procs_count(const char *dir)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    FILE *f = fopen(path, "re");
    assert_non_null(f);
    int p, n = 0;
    while (fscanf(f, "%d", &p) == 1)
        n++;
    fclose(f);
    return n;
}

static void test_live(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char name[64];
    snprintf(name, sizeof name, "unit-test-%d", (int)getpid());
    cell_limits lim = { .memory = 64u << 20, .pids = 32, .cpu_millis = 500 };
    cell_error err = { 0 };

    /* The same plan create() makes tells where to look on any layout. */
    struct cg_layout *lay = calloc(1, sizeof *lay);
    struct cg_plan *plan = calloc(1, sizeof *plan);
    assert_non_null(lay);
    assert_non_null(plan);
    if (isolate_cgroup_detect(lay, &err) < 0 || isolate_cgroup_plan(lay, name, &lim, plan, &err) < 0)
        fail_msg("%s", err.message);
    assert_true(plan->n > 0);

    isolate_cgroup *cg = NULL;
    if (isolate_cgroup_create(name, &lim, &cg, &err) < 0)
        fail_msg("%s", err.message);
    assert_non_null(cg);

    for (size_t i = 0; i < plan->n; i++) {
        const struct cg_dir *d = &plan->dir[i];
        struct stat st;
        assert_int_equal(stat(d->path, &st), 0);
        if (d->v2) {
            if (d->ctrls & CG_MEMORY)
                assert_file_is(d->path, "memory.max", "67108864");
            if (d->ctrls & CG_PIDS)
                assert_file_is(d->path, "pids.max", "32");
            if (d->ctrls & CG_CPU)
                assert_file_is(d->path, "cpu.max", "50000 100000");
        } else {
            if (d->ctrls & CG_MEMORY) {
                assert_file_is(d->path, "memory.limit_in_bytes", "67108864");
                char memsw[PATH_MAX + 64];
                snprintf(memsw, sizeof memsw, "%s/memory.memsw.limit_in_bytes", d->path);
                if (access(memsw, F_OK) == 0)
                    assert_file_is(d->path, "memory.memsw.limit_in_bytes", "67108864");
                /* v1 charges TCP buffers only to this separate counter. */
                assert_file_is(d->path, "memory.kmem.tcp.limit_in_bytes", "67108864");
            }
            if (d->ctrls & CG_PIDS)
                assert_file_is(d->path, "pids.max", "32");
            if (d->ctrls & CG_CPU) {
                assert_file_is(d->path, "cpu.cfs_period_us", "100000");
                assert_file_is(d->path, "cpu.cfs_quota_us", "50000");
            }
        }
    }

    /* Killed grandchildren are reparented to us, so we can prove they died. */
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
    int go[2], ready[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        /* Forks only once attached, so its children start inside the cgroup. */
        char byte;
        if (read(go[0], &byte, 1) != 1)
            _exit(1);
        for (int i = 0; i < 3; i++) {
            pid_t g = fork();
            if (g == 0)
                for (;;)
                    pause();
        }
        if (write(ready[1], "r", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(go[0]);
    close(ready[1]);
    if (isolate_cgroup_attach(cg, child, &err) < 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        fail_msg("%s", err.message);
    }
    char byte;
    assert_int_equal(write(go[1], "g", 1), 1);
    assert_int_equal(read(ready[0], &byte, 1), 1);
    close(go[1]);
    close(ready[0]);
    for (size_t i = 0; i < plan->n; i++) {
        assert_true(procs_contains(plan->dir[i].path, child));
        assert_int_equal(procs_count(plan->dir[i].path), 4);
    }

    /* A busy cgroup of the same name is never taken over, nor its tasks touched. */
    isolate_cgroup *dup = NULL;
    assert_int_equal(isolate_cgroup_create(name, &lim, &dup, &err), -1);
    assert_null(dup);
    assert_non_null(strstr(err.message, "already exists"));
    for (size_t i = 0; i < plan->n; i++)
        assert_int_equal(procs_count(plan->dir[i].path), 4);

    isolate_cgroup_kill(cg);
    /* Destroy before reaping: killed, unreaped tasks must not keep the
     * directories busy (the daemon reaps cell-init asynchronously). */
    isolate_cgroup_destroy(cg);
    for (int reaped = 0; reaped < 4; reaped++) {
        int status = 0;
        pid_t got = waitpid(-1, &status, 0);
        assert_true(got > 0);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGKILL);
    }
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0), 0);
    for (size_t i = 0; i < plan->n; i++) {
        struct stat st;
        assert_int_equal(stat(plan->dir[i].path, &st), -1);
        assert_int_equal(errno, ENOENT);
    }
    free(plan);
    free(lay);
}

static void test_live_no_limits(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char name[64];
    snprintf(name, sizeof name, "unit-test-nolim-%d", (int)getpid());
    isolate_cgroup *cg = NULL;
    cell_error err = { 0 };
    if (isolate_cgroup_create(name, NULL, &cg, &err) < 0)
        fail_msg("%s", err.message);
    /* destroy kills with nothing to kill and must still remove everything. */
    isolate_cgroup_destroy(cg);
    isolate_cgroup_destroy(NULL);
    isolate_cgroup_kill(NULL);

    cell_limits tiny = { .cpu_millis = 1 };
    assert_int_equal(isolate_cgroup_create(name, &tiny, &cg, &err), -1);
    assert_null(cg);
    assert_int_equal(isolate_cgroup_attach(NULL, 1, &err), -1);
}

/* /proc/PID/cgroup: the path of a hierarchy by controller (whole words),
 * v2's "0::" line, and paths outside the reader's cgroup namespace refused. */
static void test_proc_path(void **state)
{
    (void)state;
    static const char text[] = "12:cpuset:/\n"
                               "8:pids:/kubepods/pod1/ctr\n"
                               "4:memory:/kubepods/pod1/ctr\n"
                               "2:cpu,cpuacct:/kubepods/pod1/ctr\n"
                               "1:name=systemd:/x\n"
                               "0::/kubepods/pod1/ctr\n";
    char out[64];
    assert_int_equal(isolate_cgroup_proc_path(text, "pids", out, sizeof out), 1);
    assert_string_equal(out, "/kubepods/pod1/ctr");
    assert_int_equal(isolate_cgroup_proc_path(text, "cpu", out, sizeof out), 1);
    assert_int_equal(isolate_cgroup_proc_path(text, NULL, out, sizeof out), 1);
    assert_string_equal(out, "/kubepods/pod1/ctr");
    assert_int_equal(isolate_cgroup_proc_path(text, "cpuacc", out, sizeof out), 0);
    assert_int_equal(isolate_cgroup_proc_path(text, "freezer", out, sizeof out), 0);
    assert_int_equal(isolate_cgroup_proc_path("0::/../../other\n", NULL, out, sizeof out), -1);
    assert_int_equal(isolate_cgroup_proc_path("4:memory:relative\n", "memory", out, sizeof out), -1);
    assert_int_equal(isolate_cgroup_proc_path("4:memory:/a/very/long/path/beyond/eight\n", "memory", out, 8), -1);
    assert_int_equal(isolate_cgroup_proc_path("garbage without colons\n", NULL, out, sizeof out), 0);
    assert_int_equal(isolate_cgroup_proc_path("", "pids", out, sizeof out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_hybrid_split),
        cmocka_unit_test(test_parse_hybrid_systemd),
        cmocka_unit_test(test_parse_pure_v2),
        cmocka_unit_test(test_parse_controllers),
        cmocka_unit_test(test_plan_hybrid),
        cmocka_unit_test(test_plan_hybrid_comounted),
        cmocka_unit_test(test_plan_pure_v2),
        cmocka_unit_test(test_plan_mixed),
        cmocka_unit_test(test_plan_missing_controller),
        cmocka_unit_test(test_plan_bad_name),
        cmocka_unit_test(test_cmdline_nosocket),
        cmocka_unit_test(test_cpu_max),
        cmocka_unit_test(test_live),
        cmocka_unit_test(test_live_no_limits),
        cmocka_unit_test(test_proc_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
