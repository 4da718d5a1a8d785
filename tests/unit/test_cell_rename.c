/* test_cell_rename.c: what the daemon's warm pool changes on a booted cell
 * (root only): cell_set_hostname (the UTS name and /etc/hosts, which stays
 * read-only for the cell; names that would inject lines into /etc/hosts
 * are refused) and cell_set_pids_cpu (the cgroup files). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cell.h"

static char state_dir[] = "/tmp/cell-unit-rename.XXXXXX";
static cell_ctx *ctx;
static cell *c;

static int setup(void **state)
{
    (void)state;
    if (geteuid() != 0)
        return 0;
    cell_error err = { 0 };
    cell_config cfg = { .limits = { .memory = 64ull << 20, .pids = 100 } };
    if (!mkdtemp(state_dir) || cell_ctx_open(&ctx, state_dir, &err) < 0 || cell_create(ctx, &cfg, &c, &err) < 0) {
        fprintf(stderr, "setup: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cell_destroy(c);
    cell_ctx_close(ctx);
    if (geteuid() == 0) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf %s", state_dir);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

/* A file of the cell as the cell sees it, NUL-terminated in buf. */
static void read_in_cell(const char *path, char *buf, size_t size)
{
    cell_xfer x;
    cell_error err = { 0 };
    assert_int_equal(cell_file_read(c, path, &x, &err), 0);
    size_t len = 0;
    ssize_t n;
    while ((n = cell_xfer_read(&x, buf + len, size - 1 - len, &err)) > 0)
        len += (size_t)n;
    assert_true(n == 0);
    assert_int_equal(cell_xfer_end(&x, &err), 0);
    buf[len] = '\0';
}

static void bad_names_are_refused_and_change_nothing(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char before[512], after[512];
    read_in_cell("/etc/hosts", before, sizeof before);
    static const char *const bad[] = {
        "", "-lead", "trail-", "a.b", "a b", "a_b", "x\n6.6.6.6\tevil", "x\t6.6.6.6",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 64 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cell_error err = { 0 };
        assert_int_equal(cell_set_hostname(c, bad[i], &err), -1);
        assert_int_equal(err.code, EINVAL);
    }
    cell_error err = { 0 };
    assert_int_equal(cell_set_hostname(c, NULL, &err), -1);
    assert_int_equal(err.code, EINVAL);
    read_in_cell("/etc/hosts", after, sizeof after);
    assert_string_equal(before, after);
}

static void rename_sets_uts_name_and_hosts(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    cell_error err = { 0 };
    assert_int_equal(cell_set_hostname(c, "renamed-1", &err), 0);
    char buf[512];
    read_in_cell("/proc/sys/kernel/hostname", buf, sizeof buf);
    assert_string_equal(buf, "renamed-1\n");
    read_in_cell("/etc/hosts", buf, sizeof buf);
    assert_non_null(strstr(buf, "127.0.1.1\trenamed-1\n"));
    assert_null(strstr(buf, "cell-"));
    /* Read-only again for the cell. */
    cell_xfer x;
    int rc = cell_file_write(c, "/etc/hosts", O_WRONLY | O_TRUNC, 0644, &x, &err);
    if (rc == 0) {
        cell_xfer_write(&x, "6.6.6.6 evil\n", 13, &err);
        rc = cell_xfer_end(&x, &err);
    }
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, EROFS);
    /* And again: a second rename works the same way. */
    assert_int_equal(cell_set_hostname(c, "renamed-2", &err), 0);
    read_in_cell("/etc/hosts", buf, sizeof buf);
    assert_non_null(strstr(buf, "127.0.1.1\trenamed-2\n"));
}

/* Run a shell command as the cell's root; its exit status. */
static int sh_in(cell *in, const char *script)
{
    const char *argv[] = { "/bin/sh", "-c", script, NULL };
    cell_proc_spec spec = { .argv = argv, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = 2 };
    cell_error err = { 0 };
    pid_t pid;
    int pty;
    assert_int_equal(cell_spawn(in, &spec, &pid, &pty, &err), 0);
    cell_exit ex;
    assert_int_equal(cell_wait_exit(in, 10000, &ex, &err), 1);
    return ex.status;
}

/* The attack: /etc replaced by a link into a read-only bind of host files
 * bound at "hosts"; a rename by host root must neither make that mount
 * writable nor write the host's file.  A cell cannot get there today (the
 * bind on /etc/hosts pins /etc: not removable, and overlayfs refuses to
 * rename a lower directory), so the test makes that state from the host,
 * in the cell's mount namespace, as an image whose /etc is in the upper
 * layer or a later kernel might let a cell make it. */
static void rename_never_follows_the_cells_links(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char dir[] = "/tmp/cell-unit-rename-host.XXXXXX", file[64];
    assert_non_null(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/hosts", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("host file\n", f);
    assert_int_equal(fclose(f), 0);
    /* A read-only bind of one host file: a mount root, as /etc/hosts is. */
    cell_mount m = { .kind = CELL_MOUNT_BIND, .source = file, .target = "/data/hosts", .readonly = 1 };
    cell_config cfg = { .mounts = &m, .n_mounts = 1 };
    cell *v = NULL;
    cell_error err = { 0 };
    assert_int_equal(cell_create(ctx, &cfg, &v, &err), 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "nsenter -t %d -m -p -r -w sh -c 'grep -qx \"host file\" /data/hosts && "
             "umount -n /etc/hosts && rm -rf /etc && ln -s /data /etc'",
             (int)cell_init_pid(v));
    assert_int_equal(system(cmd), 0);
    assert_int_equal(sh_in(v, "test -f /etc/hosts && test -L /etc"), 0);
    assert_int_equal(cell_set_hostname(v, "evil", &err), -1);
    /* Still read-only for the cell, and the host's file untouched. */
    assert_int_not_equal(sh_in(v, "echo x > /data/hosts"), 0);
    cell_destroy(v);
    char buf[64] = { 0 };
    f = fopen(file, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_string_equal(buf, "host file\n");
    unlink(file);
    rmdir(dir);
}

/* The cell's cgroup file `file` of a v1 hierarchy or of v2, trimmed. */
static int cgroup_value(const char *v1_ctrl, const char *file, char *buf, size_t size)
{
    char path[512];
    const char *roots[] = { v1_ctrl, "" };
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s%scell/%s/%s", roots[i], roots[i][0] ? "/" : "", cell_id(c), file);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        char *got = fgets(buf, (int)size, f);
        fclose(f);
        if (got) {
            buf[strcspn(buf, "\n")] = '\0';
            return 0;
        }
    }
    return -1;
}

static void pids_and_cpu_are_rewritten(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    cell_error err = { 0 };
    char v[64];
    assert_int_equal(cgroup_value("pids", "pids.max", v, sizeof v), 0);
    assert_string_equal(v, "100");
    assert_int_equal(cell_set_pids_cpu(c, 50, 250, &err), 0);
    assert_int_equal(cgroup_value("pids", "pids.max", v, sizeof v), 0);
    assert_string_equal(v, "50");
    if (cgroup_value("cpu", "cpu.max", v, sizeof v) == 0)
        assert_string_equal(v, "25000 100000");
    else {
        assert_int_equal(cgroup_value("cpu", "cpu.cfs_quota_us", v, sizeof v), 0);
        assert_string_equal(v, "25000");
    }
    /* 0 leaves a limit as it is; a CPU limit below what cgroups take is refused. */
    assert_int_equal(cell_set_pids_cpu(c, 0, 0, &err), 0);
    assert_int_equal(cgroup_value("pids", "pids.max", v, sizeof v), 0);
    assert_string_equal(v, "50");
    assert_int_equal(cell_set_pids_cpu(c, 0, 1, &err), -1);
    assert_int_equal(err.code, EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_names_are_refused_and_change_nothing),
        cmocka_unit_test(rename_sets_uts_name_and_hosts),
        cmocka_unit_test(rename_never_follows_the_cells_links),
        cmocka_unit_test(pids_and_cpu_are_rewritten),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
