/* test_oci_seccomp.c: cell-oci's linux.seccomp translation
 * (src/oci/oci_seccomp.c): flags, defaultErrnoRet, listenerPath, and
 * malformed profiles refused naming the field; loaded profiles checked by
 * what a syscall returns in a child that loaded them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "oci/oci.h"

static int check(const char *text, cell_error *err)
{
    json_error_t jerr;
    json_t *sc = json_loads(text, 0, &jerr);
    if (!sc)
        fail_msg("test profile does not parse: %s: %s", text, jerr.text);
    memset(err, 0, sizeof *err);
    int rc = oci_seccomp_check(sc, err);
    json_decref(sc);
    return rc;
}

static void refused(const char *text, const char *field)
{
    cell_error err;
    int rc = check(text, &err);
    if (rc == 0 || !strstr(err.message, field))
        fail_msg("profile %.200s: rc %d, message '%s', wanted one naming '%s'", text, rc, err.message, field);
}

/* Load `text` in a child and call getppid there: its errno (0 when it
 * succeeded), or -1 when the child failed to load the profile. */
static int errno_of_getppid(const char *text)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        json_t *sc = json_loads(text, 0, NULL);
        cell_error err = { 0 };
        if (!sc || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || oci_seccomp_load(sc, &err) < 0)
            _exit(255);
        errno = 0;
        long r = syscall(SYS_getppid);
        /* exit_group itself: a sanitizer's _exit would run its leak check,
         * whose syscalls the profile refuses. */
        syscall(SYS_exit_group, r < 0 ? errno : 0);
        _exit(254);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st) == 255 ? -1 : WEXITSTATUS(st);
}

#define ALLOW_EXIT "{\"names\": [\"exit_group\", \"exit\"], \"action\": \"SCMP_ACT_ALLOW\"}"

static void flags_accepted_and_applied(void **state)
{
    (void)state;
    cell_error err;
    static const char *const ok[] = { "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                      "SECCOMP_FILTER_FLAG_SPEC_ALLOW" };
    char text[512];
    for (size_t i = 0; i < 3; i++) {
        snprintf(text, sizeof text, "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"flags\": [\"%s\"], \"syscalls\": "
                 "[{\"names\": [\"getppid\"], \"action\": \"SCMP_ACT_ERRNO\", \"errnoRet\": 99}]}", ok[i]);
        if (check(text, &err) != 0)
            fail_msg("%s: %s", ok[i], err.message);
        /* The filter with the flag is loaded and does what it says. */
        assert_int_equal(errno_of_getppid(text), 99);
    }
    assert_int_equal(check("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"flags\": []}", &err), 0);
    assert_int_equal(check("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"flags\": [\"SECCOMP_FILTER_FLAG_LOG\", "
                           "\"SECCOMP_FILTER_FLAG_TSYNC\"]}", &err), 0);
}

static void flags_refused(void **state)
{
    (void)state;
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"flags\": [\"SECCOMP_FILTER_FLAG_NEW_LISTENER\"]}",
            "flags[0] SECCOMP_FILTER_FLAG_NEW_LISTENER is for SCMP_ACT_NOTIFY");
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"flags\": [\"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV\"]}",
            "flags[0] SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV");
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"flags\": [\"SECCOMP_FILTER_FLAG_LOG\", \"FLAG_X\"]}",
            "flags[1] 'FLAG_X' is not a flag");
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"flags\": [7]}", "flags[0] must be a string");
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"flags\": \"SECCOMP_FILTER_FLAG_LOG\"}", "flags must be an array");
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"flags\": [\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]}",
            "at most 8");
}

static void default_errno_ret(void **state)
{
    (void)state;
    cell_error err;
    /* Everything but exit fails with the profile's errno, not EPERM. */
    const char *p = "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": 77, \"syscalls\": [" ALLOW_EXIT "]}";
    assert_int_equal(check(p, &err), 0);
    assert_int_equal(errno_of_getppid(p), 77);
    /* Without it: EPERM, as runc. */
    assert_int_equal(errno_of_getppid("{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [" ALLOW_EXIT "]}"), 1);
    refused("{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": -1}", "linux.seccomp.defaultErrnoRet");
    refused("{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": 70000}", "linux.seccomp.defaultErrnoRet");
    refused("{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": \"38\"}", "linux.seccomp.defaultErrnoRet");
    refused("{\"defaultErrnoRet\": 1}", "linux.seccomp.defaultAction is missing");
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"getpid\"], \"action\": "
            "\"SCMP_ACT_ERRNO\", \"errnoRet\": 5000}]}", "linux.seccomp.syscalls[0].errnoRet");
}

static void listener_refused(void **state)
{
    (void)state;
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"listenerPath\": \"/run/agent.sock\"}", "listenerPath");
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"listenerMetadata\": \"x\"}", "listenerMetadata");
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"mount\"], \"action\": "
            "\"SCMP_ACT_NOTIFY\"}]}", "linux.seccomp.syscalls[0].action 'SCMP_ACT_NOTIFY' is not supported");
    refused("{\"defaultAction\": \"SCMP_ACT_NOTIFY\"}", "linux.seccomp.defaultAction 'SCMP_ACT_NOTIFY'");
}

static void malformed_refused(void **state)
{
    (void)state;
    refused("[]", "linux.seccomp must be an object");
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": {}}", "linux.seccomp.syscalls");
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"architectures\": [\"SCMP_ARCH_PDP11\"]}", "architectures[0]");
    refused("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"read\"], \"action\": "
            "\"SCMP_ACT_ERRNO\", \"args\": [{\"index\": 9, \"value\": 1, \"op\": \"SCMP_CMP_EQ\"}]}]}",
            "linux.seccomp.syscalls[0].args");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(flags_accepted_and_applied),
        cmocka_unit_test(flags_refused),
        cmocka_unit_test(default_errno_ret),
        cmocka_unit_test(listener_refused),
        cmocka_unit_test(malformed_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
