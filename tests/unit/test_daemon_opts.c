/* test_daemon_opts.c: cell-daemon's option table and command line
 * (src/daemon/options.c): every option is in `cell serve --help`, both
 * spellings of a value work, and bad values, unknown and abbreviated
 * options are refused with exit code 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "daemon/options.h"

extern const char cli_serve_usage[];

/* Parse a NULL-terminated list of words after "cell-daemon". */
static int parse_words(daemon_config *c, const char *const *words)
{
    char *argv[64] = { "cell-daemon" };
    int argc = 1;
    for (; *words && argc < 63; words++)
        argv[argc++] = (char *)*words;
    argv[argc] = NULL;
    memset(c, 0, sizeof *c);
    return daemon_options_parse(c, argc, argv);
}

#define PARSE(c, ...) parse_words(c, (const char *const[]){ __VA_ARGS__, NULL })

static void usage_names_every_option(void **state)
{
    (void)state;
    for (const daemon_option *o = daemon_options; o->name; o++) {
        char want[96];
        snprintf(want, sizeof want, "  --%s", o->name);
        if (!strstr(cli_serve_usage, want))
            fail_msg("cell serve --help does not describe --%s", o->name);
    }
}

static void both_spellings(void **state)
{
    (void)state;
    daemon_config c;
    assert_int_equal(PARSE(&c, "--listen=127.0.0.1:0", "--max-connections", "64", "--state=/tmp/x", "--init"), 0);
    assert_string_equal(c.opt.listen, "127.0.0.1:0");
    assert_int_equal(c.opt.max_conns, 64);
    assert_string_equal(c.opt.state_dir, "/tmp/x");
    assert_int_equal(c.init, 1);
    assert_int_equal(PARSE(&c, "--listen", "", "--warm", "0", "--warm=busybox=1", "--limit", "cell.pids=100"), 0);
    assert_string_equal(c.opt.listen, "");
    assert_string_equal(c.warm[0], "0");
    assert_string_equal(c.warm[1], "busybox=1");
    assert_null(c.warm[2]);
    assert_true(c.opt.warm == c.warm);
    assert_true(c.opt.limits.cell_pids == 100);
    assert_int_equal(PARSE(&c, "--listen", "[::1]:7070", "--audit-max-size", "0"), 0);
    assert_int_equal(c.opt.audit_max_size_set, 1);
}

static void refuses_bad_input(void **state)
{
    (void)state;
    static const char *const bad[][4] = {
        { "--listen", "127.0.0.1:99999" }, { "--listen", "127.0.0.1:-1" }, { "--listen", "127.0.0.1:" },
        { "--listen", "localhost:80" }, { "--listen", "7070" }, { "--listen", "[::1]:65536" },
        { "--listen", "127.0.0.1: 80" }, { "--max-connections", "3" }, { "--max-connections", "100001" },
        { "--max-connections", "-1" }, { "--max-connections", " 5" }, { "--max-connections", "5x" },
        { "--idle-timeout", "0" }, { "--header-timeout", "3601" }, { "--audit-keep", "65" },
        { "--token-rate", "1000001" }, { "--max-json-size", "512" }, { "--max-json-size", "65M" },
        { "--audit-max-size", "1K" }, { "--max-file-size", "1Q" }, { "--allow-tenant-dest", "10.0.0.0/33" },
        { "--allow-tenant-dest", "10.0.0.0/" }, { "--allow-tenant-dest", "fd00::/129" },
        { "--allow-tenant-dest", "example.com" }, { "--warm", "-1" }, { "--limit", "nosuch=1" },
        { "--limit", "cell.pids" }, { "--run-repo-root", "relative" }, { "--run-repo-root", "/nonexistent/x" },
        { "--upstream-ca", "/nonexistent/ca.pem" }, { "--log", "" }, { "--state", "" },
        { "--no-token=yes" }, { "--bogus" }, { "--bogus=1" }, { "--list", "127.0.0.1:1" },
        { "--no-token-on-tcp" }, { "--listen" }, { "stray" }, { "--init", "stray" }, { "-x" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        daemon_config c;
        int rc = parse_words(&c, bad[i]);
        if (rc != 2)
            fail_msg("%s %s: exit %d, not 2", bad[i][0], bad[i][1] ? bad[i][1] : "", rc);
    }
}

static void help_stops(void **state)
{
    (void)state;
    daemon_config c;
    assert_int_equal(PARSE(&c, "--help", "--bogus"), 0);
    assert_int_equal(c.help, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(usage_names_every_option),
        cmocka_unit_test(both_spellings),
        cmocka_unit_test(refuses_bad_input),
        cmocka_unit_test(help_stops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
