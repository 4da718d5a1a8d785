/* test_read_file.c: util_read_file / util_read_fd, which read image.json,
 * an image's /etc/passwd, policies and /proc files: the buffer grows from
 * the file's size, yet every size up to `max` is read whole and one byte
 * more is EFBIG, whatever st_size says (pipes and /proc files say 0). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "util/util.h"

static char tmpdir[] = "/tmp/cell-test-read-XXXXXX";

static int setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    util_rm_rf(tmpdir, NULL);
    return 0;
}

static void write_bytes(const char *path, size_t n)
{
    char *data = malloc(n ? n : 1);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)('a' + i % 26);
    assert_int_equal(util_write_file(path, data, n, 0644, 0, NULL), 0);
    free(data);
}

static void check_content(const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (buf[i] != (char)('a' + i % 26))
            fail_msg("byte %zu differs", i);
    assert_int_equal(buf[n], '\0');
}

/* Sizes around the 4 KiB start and the doubling steps, up to max and one past. */
static void regular_files_of_every_size_up_to_max(void **state)
{
    (void)state;
    static const size_t max = 10000;
    static const size_t sizes[] = { 0, 1, 4095, 4096, 4097, 8192, 9999, 10000 };
    char path[4200];
    snprintf(path, sizeof path, "%s/f", tmpdir);
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        write_bytes(path, sizes[i]);
        char *buf = NULL;
        size_t len = 7;
        cell_error err = { 0 };
        assert_int_equal(util_read_file(path, max, &buf, &len, &err), 0);
        assert_int_equal(len, sizes[i]);
        check_content(buf, len);
        free(buf);
    }
    write_bytes(path, max + 1);
    char *buf = NULL;
    cell_error err = { 0 };
    assert_int_equal(util_read_file(path, max, &buf, NULL, &err), -1);
    assert_int_equal(err.code, EFBIG);
    assert_null(buf);
    assert_non_null(strstr(err.message, "larger than 10000 bytes"));
}

/* A pipe (no size): read to its end, and no further than max. */
static void a_pipe_is_read_whole_and_capped(void **state)
{
    (void)state;
    for (size_t n = 20000; n <= 20001; n++) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            char *data = malloc(n);
            for (size_t i = 0; i < n; i++)
                data[i] = (char)('a' + i % 26);
            _exit(util_write_all(p[1], data, n) < 0);
        }
        close(p[1]);
        char *buf = NULL;
        size_t len = 0;
        cell_error err = { 0 };
        int r = util_read_fd(p[0], "the pipe", 20000, &buf, &len, &err);
        close(p[0]);
        int status;
        waitpid(pid, &status, 0);
        if (n == 20000) {
            assert_int_equal(r, 0);
            assert_int_equal(len, n);
            check_content(buf, len);
            free(buf);
        } else {
            assert_int_equal(r, -1);
            assert_int_equal(err.code, EFBIG);
            assert_non_null(strstr(err.message, "the pipe"));
        }
    }
}

/* A sysctl file says size 0 and answers a read at an offset past 0 with
 * EOF: it must come whole from the first read (a first buffer sized from
 * st_size read pid_max "4194304" as "4", and the daemon's cells could not
 * fork). */
static void a_sysctl_file_is_read_whole(void **state)
{
    (void)state;
    FILE *f = fopen("/proc/sys/kernel/pid_max", "r");
    assert_non_null(f);
    char want[64] = "";
    assert_non_null(fgets(want, sizeof want, f));
    fclose(f);
    char *buf = NULL;
    size_t len = 0;
    cell_error err = { 0 };
    assert_int_equal(util_read_file("/proc/sys/kernel/pid_max", 1u << 20, &buf, &len, &err), 0);
    assert_string_equal(buf, want);
    assert_true(len > 1);
    free(buf);
}

static void missing_and_unreadable(void **state)
{
    (void)state;
    char path[4200], *buf = NULL;
    snprintf(path, sizeof path, "%s/absent", tmpdir);
    cell_error err = { 0 };
    assert_int_equal(util_read_file(path, 100, &buf, NULL, &err), -1);
    assert_int_equal(err.code, ENOENT);
    /* a directory opens but cannot be read */
    memset(&err, 0, sizeof err);
    assert_int_equal(util_read_file(tmpdir, 100, &buf, NULL, &err), -1);
    assert_int_equal(err.code, EISDIR);
    assert_null(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(regular_files_of_every_size_up_to_max),
        cmocka_unit_test(a_pipe_is_read_whole_and_capped),
        cmocka_unit_test(a_sysctl_file_is_read_whole),
        cmocka_unit_test(missing_and_unreadable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
