/* test_daemon_opts.c: cell-daemon's option table, command line and config
 * file (src/daemon/options.c): every option is in `cell serve --help`, both
 * spellings of a value work, the file's values yield to the flags, and bad
 * values, unknown and abbreviated options, unknown, repeated or misplaced
 * keys and a config file others can write are refused with exit code 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

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
    daemon_config_free(c);
    memset(c, 0, sizeof *c);
    return daemon_options_parse(c, argc, argv, "/nonexistent/cell.conf");
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
    daemon_config c = { 0 };
    assert_int_equal(PARSE(&c, "--listen=127.0.0.1:0", "--max-connections", "64", "--state=/tmp/x", "--init"), 0);
    assert_string_equal(c.opt.listen, "127.0.0.1:0");
    assert_int_equal(c.opt.max_conns, 64);
    assert_string_equal(c.opt.state_dir, "/tmp/x");
    assert_int_equal(c.init, 1);
    assert_int_equal(PARSE(&c, "--listen", "", "--warm", "0", "--warm=busybox=1", "--limit", "cell.pids=100"), 0);
    assert_string_equal(c.opt.listen, "");
    assert_string_equal(c.warm.v[0], "0");
    assert_string_equal(c.warm.v[1], "busybox=1");
    assert_null(c.warm.v[2]);
    assert_true(c.opt.warm == c.warm.v);
    assert_true(c.opt.limits.cell_pids == 100);
    assert_int_equal(PARSE(&c, "--listen", "[::1]:7070", "--audit-max-size", "0"), 0);
    assert_int_equal(c.opt.audit_max_size_set, 1);
    /* A quota of 0 is a quota (no cells until an admin gives some). */
    assert_int_equal(PARSE(&c, "--tenant-max-cells=0", "--tenant-max-disk", "1G", "--tenant-max-pids", "4294967295"), 0);
    assert_int_equal(c.opt.tenant_quota.set, 1u << 0 | 1u << 3 | 1u << 4);
    assert_true(c.opt.tenant_quota.cells == 0 && c.opt.tenant_quota.disk == 1ull << 30);
    assert_true(c.opt.tenant_quota.pids == 4294967295u);
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
        { "--audit-max-size", "1K" }, { "--max-file-size", "1Q" }, { "--max-file-size", "0" }, { "--max-file-size", "2T" }, { "--allow-tenant-dest", "10.0.0.0/33" },
        { "--allow-tenant-dest", "10.0.0.0/" }, { "--allow-tenant-dest", "fd00::/129" },
        { "--allow-tenant-dest", "example.com" }, { "--warm", "-1" }, { "--limit", "nosuch=1" },
        { "--limit", "cell.pids" }, { "--run-repo-root", "relative" }, { "--run-repo-root", "/nonexistent/x" },
        { "--upstream-ca", "/nonexistent/ca.pem" }, { "--log", "" }, { "--state", "" },
        { "--no-token=yes" }, { "--bogus" }, { "--bogus=1" }, { "--list", "127.0.0.1:1" },
        { "--no-token-on-tcp" }, { "--listen" }, { "stray" }, { "--init", "stray" }, { "-x" },
        { "--config", "/nonexistent/cell.conf" }, { "--config=/etc/hostname", "--no-config" },
        { "--config", "/dev/null" }, { "--config", "/tmp" }, { "--init=1" },
        { "--tenant-max-cells", "1000001" }, { "--tenant-max-pids", "4294967296" },
        { "--tenant-max-memory", "lots" }, { "--tenant-max-disk", "-1" }, { "--tenant-max-lanes", "x" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        daemon_config c = { 0 };
        int rc = parse_words(&c, bad[i]);
        daemon_config_free(&c);
        if (rc != 2)
            fail_msg("%s %s: exit %d, not 2", bad[i][0], bad[i][1] ? bad[i][1] : "", rc);
    }
}

/* A config file with `text`, mode `mode`; its path in path. */
static void write_conf(char *path, const char *text, mode_t mode)
{
    strcpy(path, "/tmp/test_daemon_opts.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_true(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static int parse_conf(daemon_config *c, const char *text, mode_t mode, const char *const *flags)
{
    char path[64];
    const char *words[32] = { "--config", path };
    size_t n = 2;
    write_conf(path, text, mode);
    for (; flags && *flags && n < 31; flags++)
        words[n++] = *flags;
    words[n] = NULL;
    int rc = parse_words(c, words);
    unlink(path);
    return rc;
}

static void file_then_flags(void **state)
{
    (void)state;
    daemon_config c = { 0 };
    static const char conf[] = "# the daemon\n"
                               "listen = 127.0.0.1:7171   # inline comment\n"
                               "\n"
                               "  ; another comment\n"
                               "max-connections=64\n"
                               "socket = \"\"\n"
                               "no-token = false\n"
                               "warm = 1\n"
                               "warm = busybox=2\n"
                               "limit = cell.pids=100\n"
                               "limit = cell.memory=1G\n"
                               "allow-tenant-dest = 127.0.0.1/32\n";
    assert_int_equal(parse_conf(&c, conf, 0600, NULL), 0);
    assert_string_equal(c.opt.listen, "127.0.0.1:7171");
    assert_string_equal(c.opt.socket_path, "");
    assert_int_equal(c.opt.max_conns, 64);
    assert_int_equal(c.opt.no_token, 0);
    assert_int_equal(c.warm.n, 2);
    assert_true(c.opt.warm == c.warm.v && c.opt.tenant_dest_allow == c.allow.v);
    assert_true(c.opt.limits.cell_pids == 100 && c.opt.limits.cell_memory == 1ull << 30);
    /* Flags win; a list flag replaces the file's list, --limit one key. */
    const char *const flags[] = { "--listen=127.0.0.1:9", "--warm", "0", "--limit", "cell.pids=7", NULL };
    assert_int_equal(parse_conf(&c, conf, 0600, flags), 0);
    assert_string_equal(c.opt.listen, "127.0.0.1:9");
    assert_int_equal(c.opt.max_conns, 64);
    assert_int_equal(c.warm.n, 1);
    assert_string_equal(c.warm.v[0], "0");
    assert_int_equal(c.allow.n, 1);
    assert_true(c.opt.limits.cell_pids == 7 && c.opt.limits.cell_memory == 1ull << 30);
    /* --no-config: none at all, the default file not even looked at. */
    assert_int_equal(PARSE(&c, "--no-config"), 0);
    daemon_config_free(&c);
}

/* /etc/cell/cell.conf is read when it exists (here a file of the test's)
 * and not when --no-config is given; a missing one is no error. */
static void default_file(void **state)
{
    (void)state;
    daemon_config c = { 0 };
    char path[64];
    char *argv[] = { "cell-daemon", "--no-config", NULL };
    write_conf(path, "max-connections = 77\n", 0600);
    assert_int_equal(daemon_options_parse(&c, 1, argv, path), 0);
    assert_int_equal(c.opt.max_conns, 77);
    daemon_config_free(&c);
    memset(&c, 0, sizeof c);
    assert_int_equal(daemon_options_parse(&c, 2, argv, path), 0);
    assert_int_equal(c.opt.max_conns, 0);
    daemon_config_free(&c);
    memset(&c, 0, sizeof c);
    /* A default file others can write is refused as one named with --config. */
    assert_int_equal(chmod(path, 0666), 0);
    assert_int_equal(daemon_options_parse(&c, 1, argv, path), 2);
    daemon_config_free(&c);
    unlink(path);
    memset(&c, 0, sizeof c);
    assert_int_equal(daemon_options_parse(&c, 1, argv, path), 0);
}

static void refuses_bad_files(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "listen = 127.0.0.1:99999\n", "max-connections = 3\n", "nosuch = 1\n", "listen\n", "= 1\n",
        "listen = 127.0.0.1:1\nlisten = 127.0.0.1:2\n", "[serve]\nlisten = 127.0.0.1:1\n", "init = true\n",
        "config = /etc/cell/other.conf\n", "no-token = maybe\n", "no-token =\n", "state =\n",
        "warm = x=1=2\n", "limit = nosuch=1\n", "run-repo-root = relative\n", "--listen = 127.0.0.1:1\n",
        "listen 127.0.0.1:1\n", "  listen = 127.0.0.1:1\n  = 2\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        daemon_config c = { 0 };
        int rc = parse_conf(&c, bad[i], 0600, NULL);
        daemon_config_free(&c);
        if (rc != 2)
            fail_msg("config '%s': exit %d, not 2", bad[i], rc);
    }
    /* A line longer than inih's buffer is refused, not cut in two. */
    char *long_line = malloc(9000);
    assert_non_null(long_line);
    memset(long_line, 'x', 8990);
    memcpy(long_line, "agent-registry = ", 17);
    strcpy(long_line + 8990, "\n");
    daemon_config c = { 0 };
    assert_int_equal(parse_conf(&c, long_line, 0600, NULL), 2);
    free(long_line);
    /* A NUL would end the line for inih and hide what follows it. */
    char path[64];
    write_conf(path, "listen = 127.0.0.1:1\n", 0600);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite("socket = /tmp/s\nlisten = 127.0.0.1:1\0no-token = true\n", 1, 53, f), 53);
    fclose(f);
    const char *nul_args[] = { "--config", path, NULL };
    assert_int_equal(parse_words(&c, nul_args), 2);
    /* More than 1 MiB is refused before it is read. */
    f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < (1 << 20) / 16 + 1; i++)
        fputs("# padding line\n\n", f);
    fclose(f);
    assert_int_equal(parse_words(&c, nul_args), 2);
    unlink(path);
    /* Anyone who can write the file is the daemon's admin (no-token). */
    assert_int_equal(parse_conf(&c, "listen = 127.0.0.1:1\n", 0622, NULL), 2);
    assert_int_equal(parse_conf(&c, "listen = 127.0.0.1:1\n", 0660, NULL), 2);
    assert_int_equal(parse_conf(&c, "listen = 127.0.0.1:1\n", 0644, NULL), 0);
    daemon_config_free(&c);
}

static void help_stops(void **state)
{
    (void)state;
    daemon_config c = { 0 };
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
        cmocka_unit_test(file_then_flags),
        cmocka_unit_test(refuses_bad_files),
        cmocka_unit_test(default_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
