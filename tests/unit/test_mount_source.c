/* test_mount_source.c: BIND and OVERLAY mount sources are opened with no
 * symlink in their path when the cell is created, and that open file is
 * what gets mounted (root only).  A path component swapped for a symlink to
 * /etc, before the create or racing it, fails the create with ELOOP naming
 * the mount; it never mounts /etc. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cell.h"

static char state_dir[] = "/tmp/cell-unit-msrc.XXXXXX";
static char host_dir[] = "/tmp/cell-unit-msrc-host.XXXXXX";
static cell_ctx *ctx;

/* host_dir/comp is a directory holding MARKER and ssl/MARKER2;
 * host_dir/other is a symlink to /etc.  Swapping the two names turns
 * host_dir/comp into a link to /etc, whose ssl/ holds openssl.cnf. */
static void host_path(char *buf, size_t size, const char *rel)
{
    snprintf(buf, size, "%s/%s", host_dir, rel);
}

static int setup(void **state)
{
    (void)state;
    if (geteuid() != 0)
        return 0;
    cell_error err = { 0 };
    if (!mkdtemp(state_dir) || !mkdtemp(host_dir) || cell_ctx_open(&ctx, state_dir, &err) < 0) {
        fprintf(stderr, "setup: %s\n", err.message);
        return -1;
    }
    char p[512];
    host_path(p, sizeof p, "comp");
    if (mkdir(p, 0755) < 0)
        return -1;
    host_path(p, sizeof p, "comp/ssl");
    if (mkdir(p, 0755) < 0)
        return -1;
    static const char *const files[] = { "comp/MARKER", "comp/ssl/MARKER2" };
    for (size_t i = 0; i < 2; i++) {
        host_path(p, sizeof p, files[i]);
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || close(fd) < 0)
            return -1;
    }
    host_path(p, sizeof p, "other");
    return symlink("/etc", p);
}

static int teardown(void **state)
{
    (void)state;
    cell_ctx_close(ctx);
    if (geteuid() == 0) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf %s %s", state_dir, host_dir);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

/* comp <-> other, atomically: the path always exists, as one or the other. */
static int swap_names(void)
{
    char a[512], b[512];
    host_path(a, sizeof a, "comp");
    host_path(b, sizeof b, "other");
    return renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
}

static int exists_in(cell *c, const char *path)
{
    cell_stat st;
    cell_error err = { 0 };
    return cell_file_stat(c, path, &st, &err) == 0;
}

/* Creates a cell with an overlay of comp at /w and a read-only bind of
 * comp/ssl at /b.  Returns 1 booted (and checked), 0 refused with ELOOP. */
static int boot_once(void)
{
    char comp[512], ssl[512];
    host_path(comp, sizeof comp, "comp");
    host_path(ssl, sizeof ssl, "comp/ssl");
    cell_mount m[2] = {
        { .kind = CELL_MOUNT_OVERLAY, .source = comp, .target = "/w", .size = 1 << 20 },
        { .kind = CELL_MOUNT_BIND, .source = ssl, .target = "/b", .readonly = 1 },
    };
    cell_config cfg = { .mounts = m, .n_mounts = 2 };
    cell *c = NULL;
    cell_error err = { 0 };
    if (cell_create(ctx, &cfg, &c, &err) < 0) {
        if (err.code != ELOOP)
            fprintf(stderr, "unexpected: %s\n", err.message);
        assert_int_equal(err.code, ELOOP);
        assert_true(strstr(err.message, " for /w ") || strstr(err.message, " for /b "));
        return 0;
    }
    /* What the cell got is the directory, never /etc. */
    int ok = exists_in(c, "/w/MARKER") && exists_in(c, "/b/MARKER2") && !exists_in(c, "/w/passwd") &&
             !exists_in(c, "/b/openssl.cnf");
    cell_destroy(c);
    assert_true(ok);
    return 1;
}

static void a_symlink_in_the_source_is_refused(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    assert_int_equal(boot_once(), 1);
    assert_int_equal(swap_names(), 0);
    /* comp is now the link (last component for /w, middle one for /b). */
    assert_int_equal(boot_once(), 0);
    assert_int_equal(swap_names(), 0);
    assert_int_equal(boot_once(), 1);
}

static void an_overlay_source_must_be_a_directory(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char file[512];
    host_path(file, sizeof file, "comp/MARKER");
    cell_mount m = { .kind = CELL_MOUNT_OVERLAY, .source = file, .target = "/w" };
    cell_config cfg = { .mounts = &m, .n_mounts = 1 };
    cell *c = NULL;
    cell_error err = { 0 };
    assert_int_equal(cell_create(ctx, &cfg, &c, &err), -1);
    assert_int_equal(err.code, ENOTDIR);
    assert_non_null(strstr(err.message, "/w"));
    m.source = "/nonexistent/dir";
    assert_int_equal(cell_create(ctx, &cfg, &c, &err), -1);
    assert_int_equal(err.code, ENOENT);
}

static atomic_int flipping;

static void *flipper(void *arg)
{
    (void)arg;
    long *n = calloc(1, sizeof *n);
    while (n && atomic_load(&flipping))
        if (swap_names() == 0)
            (*n)++;
    return n;
}

/* The swap races the creates: each create either boots with the directory
 * (checked in the cell) or fails with ELOOP; none mounts /etc. */
static void a_racing_symlink_swap_never_mounts_its_target(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    atomic_store(&flipping, 1);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, flipper, NULL), 0);
    int booted = 0, refused = 0;
    for (int i = 0; i < 60; i++) {
        if (boot_once())
            booted++;
        else
            refused++;
    }
    atomic_store(&flipping, 0);
    void *swaps = NULL;
    assert_int_equal(pthread_join(t, &swaps), 0);
    assert_non_null(swaps);
    /* Leave comp a directory for whatever runs next. */
    if (*(long *)swaps % 2)
        assert_int_equal(swap_names(), 0);
    fprintf(stderr, "race: %d booted with the directory, %d refused (ELOOP), %ld swaps\n", booted, refused,
            *(long *)swaps);
    free(swaps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_symlink_in_the_source_is_refused),
        cmocka_unit_test(an_overlay_source_must_be_a_directory),
        cmocka_unit_test(a_racing_symlink_swap_never_mounts_its_target),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
