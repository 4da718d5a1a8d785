/* test_options.c: API v2's cell_options and cell_egress: every setter
 * refuses bad input (NULL, names and paths a cell cannot have, sizes below
 * their minimum) with an error naming the option, and, as root, options
 * boot a cell that has what they say and outlives the options object. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cell.h"

static cell_options *opts;

static int setup(void **state)
{
    (void)state;
    return cell_options_new(&opts, NULL);
}

static int teardown(void **state)
{
    (void)state;
    cell_options_free(opts);
    opts = NULL;
    return 0;
}

/* The call failed with `code` and a message containing `word`. */
#define REFUSED(call, code_, word)                                                  \
    do {                                                                            \
        cell_error e_ = { 0 };                                                      \
        int rc_ = (call);                                                           \
        if (rc_ != -1 || e_.code != (code_) || !strstr(e_.message, (word)))         \
            fail_msg("%s: rc %d code %d '%s' (wanted %d and '%s')", #call, rc_,      \
                     e_.code, e_.message, (code_), (word));                          \
    } while (0)
#define ACCEPTED(call)                                                              \
    do {                                                                            \
        cell_error e_ = { 0 };                                                      \
        if ((call) != 0)                                                            \
            fail_msg("%s: %s", #call, e_.message);                                  \
    } while (0)

static void test_version(void **state)
{
    (void)state;
    assert_int_equal(cell_version_number(), CELL_VERSION_NUMBER);
    assert_string_equal(cell_version(), CELL_VERSION_STRING);
    char text[32];
    snprintf(text, sizeof text, "%d.%d.%d", CELL_VERSION_MAJOR, CELL_VERSION_MINOR, CELL_VERSION_PATCH);
    assert_string_equal(cell_version(), text);
}

static void test_null_arguments(void **state)
{
    (void)state;
    REFUSED(cell_options_new(NULL, &e_), EINVAL, "NULL");
    REFUSED(cell_options_set_hostname(NULL, "x", &e_), EINVAL, "cell_options_set_hostname");
    REFUSED(cell_options_set_memory(NULL, 0, &e_), EINVAL, "NULL");
    REFUSED(cell_options_add_bind(opts, NULL, "/w", 0, &e_), EINVAL, "source");
    REFUSED(cell_options_add_bind(opts, "/tmp", NULL, 0, &e_), EINVAL, "target");
    REFUSED(cell_options_add_tmpfs(opts, NULL, 0, &e_), EINVAL, "target");
    REFUSED(cell_options_add_overlay(opts, NULL, "/w", 0, &e_), EINVAL, "source");
    REFUSED(cell_options_add_overlay(opts, "/tmp", NULL, 0, &e_), EINVAL, "target");
    REFUSED(cell_options_add_seed(opts, "/m", NULL, "", 0, 0, &e_), EINVAL, "path");
    REFUSED(cell_options_set_egress(NULL, NULL, &e_), EINVAL, "NULL");
    REFUSED(cell_create_v2(NULL, opts, &(cell *){ NULL }, &e_), EINVAL, "ctx");
    cell_egress *eg = (cell_egress *)&eg;
    REFUSED(cell_egress_new(&eg, NULL, &e_), EINVAL, "policy");
    assert_null(eg);
    REFUSED(cell_egress_set_user(NULL, NULL, &e_), EINVAL, "NULL");
    /* NULL where it means "the default" is accepted, and NULL errors are allowed. */
    ACCEPTED(cell_options_set_image(opts, NULL, &e_));
    ACCEPTED(cell_options_set_lane(opts, NULL, &e_));
    ACCEPTED(cell_options_set_hostname(opts, NULL, &e_));
    ACCEPTED(cell_options_set_egress(opts, NULL, &e_));
    assert_int_equal(cell_options_set_hostname(opts, "-bad", NULL), -1);
    cell_options_free(NULL);
    cell_egress_free(NULL);
}

static void test_names(void **state)
{
    (void)state;
    char longname[80];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    REFUSED(cell_options_set_hostname(opts, longname, &e_), EINVAL, "hostname");
    longname[63] = '\0';
    ACCEPTED(cell_options_set_hostname(opts, longname, &e_));
    longname[64 - 1] = 'a';
    longname[64] = '\0';
    REFUSED(cell_options_set_hostname(opts, longname, &e_), EINVAL, "1-63");
    const char *bad_hosts[] = { "", "-a", "a-", "a_b", "a.b", "a b", "a\nb", "\xc3\xa9" };
    for (size_t i = 0; i < sizeof bad_hosts / sizeof *bad_hosts; i++)
        REFUSED(cell_options_set_hostname(opts, bad_hosts[i], &e_), EINVAL, "hostname");
    const char *bad_names[] = { "", ".", "..", "../x", "a/b", ".hidden", "-x", "a b" };
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        REFUSED(cell_options_set_image(opts, bad_names[i], &e_), EINVAL, "image");
        REFUSED(cell_options_set_lane(opts, bad_names[i], &e_), EINVAL, "lane");
    }
    ACCEPTED(cell_options_set_image(opts, "debian-bookworm", &e_));
    ACCEPTED(cell_options_set_lane(opts, "work.1", &e_));
}

static void test_mount_targets(void **state)
{
    (void)state;
    const char *bad[] = { "../x", "x", "", "/a/../b", "/..", "/a/..", "/", "//", "///" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        REFUSED(cell_options_add_bind(opts, "/tmp", bad[i], 0, &e_), EINVAL, "mount target");
        REFUSED(cell_options_add_tmpfs(opts, bad[i], 0, &e_), EINVAL, "mount target");
        REFUSED(cell_options_add_overlay(opts, "/tmp", bad[i], 0, &e_), EINVAL, "mount target");
    }
    REFUSED(cell_options_add_bind(opts, "", "/w", 0, &e_), EINVAL, "empty source");
    REFUSED(cell_options_add_overlay(opts, "", "/w", 0, &e_), EINVAL, "empty source");
    REFUSED(cell_options_add_overlay(opts, "/tmp", "/w", 4096, &e_), ERANGE, "1 MiB");
    ACCEPTED(cell_options_add_overlay(opts, "/tmp", "/w", 0, &e_));
    REFUSED(cell_options_add_bind(opts, "/tmp", "/w", 2, &e_), EINVAL, "CELL_MOUNT_READONLY");
    /* A name with two dots that is not ".." is fine. */
    ACCEPTED(cell_options_add_bind(opts, "/tmp", "/w/..x/a..", CELL_MOUNT_READONLY, &e_));
    for (int i = 2; i < 32; i++)
        ACCEPTED(cell_options_add_tmpfs(opts, "/m", 0, &e_));
    REFUSED(cell_options_add_tmpfs(opts, "/m2", 0, &e_), E2BIG, "too many mounts");
}

static void test_seeds(void **state)
{
    (void)state;
    REFUSED(cell_options_add_seed(opts, "/m", "f", "x", 1, 0, &e_), ENOENT, "cell_options_add_tmpfs");
    ACCEPTED(cell_options_add_bind(opts, "/tmp", "/b", 0, &e_));
    REFUSED(cell_options_add_seed(opts, "/b", "f", "x", 1, 0, &e_), ENOENT, "no tmpfs at '/b'");
    ACCEPTED(cell_options_add_tmpfs(opts, "/m", 0, &e_));
    REFUSED(cell_options_add_seed(opts, "/m", "../f", "x", 1, 0, &e_), EINVAL, "..");
    REFUSED(cell_options_add_seed(opts, "/m", "a/../../f", "x", 1, 0, &e_), EINVAL, "..");
    REFUSED(cell_options_add_seed(opts, "/m", "/etc/passwd", "x", 1, 0, &e_), EINVAL, "relative");
    REFUSED(cell_options_add_seed(opts, "/m", "", "x", 1, 0, &e_), EINVAL, "relative");
    REFUSED(cell_options_add_seed(opts, "/m", "f", NULL, 5, 0, &e_), EINVAL, "data is NULL");
    REFUSED(cell_options_add_seed(opts, "/m", "f", "x", 1, 04000 | 010000, &e_), EINVAL, "mode");
    ACCEPTED(cell_options_add_seed(opts, "/m", "f", NULL, 0, 0, &e_));
    ACCEPTED(cell_options_add_seed(opts, "/m", "d/g", "x", 1, 0600, &e_));
}

static void test_sizes(void **state)
{
    (void)state;
    REFUSED(cell_options_set_memory(opts, 1, &e_), ERANGE, "memory");
    REFUSED(cell_options_set_memory(opts, CELL_MIN_MEMORY - 1, &e_), ERANGE, "CELL_MIN_MEMORY");
    ACCEPTED(cell_options_set_memory(opts, CELL_MIN_MEMORY, &e_));
    ACCEPTED(cell_options_set_memory(opts, 0, &e_));
    REFUSED(cell_options_set_disk(opts, 4096, &e_), ERANGE, "disk");
    ACCEPTED(cell_options_set_disk(opts, CELL_MIN_DISK, &e_));
    REFUSED(cell_options_set_cpu(opts, 9, &e_), ERANGE, "cpu");
    REFUSED(cell_options_set_cpu(opts, UINT32_MAX, &e_), ERANGE, "cpu");
    ACCEPTED(cell_options_set_cpu(opts, CELL_MIN_CPU_MILLIS, &e_));
    REFUSED(cell_options_set_pids(opts, 4194305, &e_), ERANGE, "pids");
    ACCEPTED(cell_options_set_pids(opts, 1, &e_));
    REFUSED(cell_options_add_tmpfs(opts, "/m", 100, &e_), ERANGE, "tmpfs");
}

static void test_egress(void **state)
{
    (void)state;
    cell_egress *eg = NULL;
    REFUSED(cell_egress_new(&eg, "{", &e_), EINVAL, "policy");
    REFUSED(cell_egress_new(&eg, "{\"rules\": [{\"nonsense\": 1}]}", &e_), EINVAL, "policy");
    assert_null(eg);
    ACCEPTED(cell_egress_new(&eg, "{\"rules\": []}", &e_));
    REFUSED(cell_egress_set_policy(eg, "[]", &e_), EINVAL, "policy");
    REFUSED(cell_egress_set_upstream_ca(eg, "/nonexistent/ca.pem", &e_), ENOENT, "/nonexistent/ca.pem");
    ACCEPTED(cell_egress_set_upstream_ca(eg, "/dev/null", &e_));
    ACCEPTED(cell_egress_set_user(eg, opts, &e_));
    ACCEPTED(cell_options_set_egress(opts, eg, &e_));
    /* A copy: freeing the caller's settings leaves the options' intact. */
    cell_egress_free(eg);
    ACCEPTED(cell_options_set_egress(opts, NULL, &e_));
}

/* ---- as root: options that boot a cell ------------------------------------- */

static char state_dir[] = "/tmp/cell-unit-options.XXXXXX";
static cell_ctx *ctx;

static int root_setup(void **state)
{
    (void)state;
    if (geteuid() != 0)
        return 0;
    cell_error err = { 0 };
    if (!mkdtemp(state_dir) || cell_ctx_open(&ctx, state_dir, &err) < 0) {
        fprintf(stderr, "%s\n", err.message);
        return -1;
    }
    return 0;
}

static int root_teardown(void **state)
{
    (void)state;
    cell_ctx_close(ctx);
    if (geteuid() != 0)
        return 0;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", state_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int run_in(cell *c, const char *script)
{
    const char *argv[] = { "sh", "-c", script, NULL };
    cell_proc_spec spec = { .argv = argv, .stdin_fd = -1, .stdout_fd = 2, .stderr_fd = 2 };
    pid_t pid;
    cell_exit ex;
    cell_error err = { 0 };
    if (cell_spawn(c, &spec, &pid, NULL, &err) < 0 || cell_wait_exit(c, 30000, &ex, &err) != 1)
        fail_msg("%s: %s", script, err.message);
    return ex.status;
}

static void test_unknown_image_fails_at_create(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    cell *c = NULL;
    ACCEPTED(cell_options_set_image(opts, "no-such-image", &e_));
    REFUSED(cell_create_v2(ctx, opts, &c, &e_), ENOENT, "unknown image 'no-such-image'");
    assert_null(c);
    ACCEPTED(cell_options_set_image(opts, NULL, &e_));
    ACCEPTED(cell_options_add_bind(opts, "/nonexistent/dir", "/w", 0, &e_));
    REFUSED(cell_create_v2(ctx, opts, &c, &e_), ENOENT, "/nonexistent/dir");
    assert_null(c);
}

static void test_options_boot_what_they_say(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char host_dir[] = "/tmp/cell-unit-options-bind.XXXXXX";
    assert_non_null(mkdtemp(host_dir));
    char hostname[] = "opts-host";
    char seed[] = "seeded";
    ACCEPTED(cell_options_set_hostname(opts, hostname, &e_));
    ACCEPTED(cell_options_add_tmpfs(opts, "/mem", 2 << 20, &e_));
    ACCEPTED(cell_options_add_seed(opts, "/mem", "sub/s.txt", seed, sizeof seed - 1, 0600, &e_));
    ACCEPTED(cell_options_add_bind(opts, host_dir, "/ro", CELL_MOUNT_READONLY, &e_));
    ACCEPTED(cell_options_set_pids(opts, 64, &e_));
    /* The options copied every string: scribbling on ours changes nothing. */
    memset(hostname, 'x', sizeof hostname - 1);
    memset(seed, 'x', sizeof seed - 1);
    cell *a = NULL, *b = NULL;
    ACCEPTED(cell_create_v2(ctx, opts, &a, &e_));
    ACCEPTED(cell_create_v2(ctx, opts, &b, &e_));
    /* Cells do not keep the options. */
    cell_options_free(opts);
    opts = NULL;
    for (cell *c = a; c; c = c == a ? b : NULL) {
        assert_int_equal(run_in(c, "test \"$(cat /proc/sys/kernel/hostname)\" = opts-host"), 0);
        assert_int_equal(run_in(c, "test \"$(cat /mem/sub/s.txt)\" = seeded"), 0);
        assert_int_equal(run_in(c, "test \"$(stat -c %a /mem/sub/s.txt)\" = 600"), 0);
        assert_int_not_equal(run_in(c, "touch /ro/x 2>/dev/null"), 0);
    }
    cell_destroy(a);
    cell_destroy(b);
    assert_int_equal(rmdir(host_dir), 0);
    assert_int_equal(cell_options_new(&opts, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mount_targets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seeds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_egress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_image_fails_at_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_options_boot_what_they_say, setup, teardown),
    };
    return cmocka_run_group_tests(tests, root_setup, root_teardown);
}
