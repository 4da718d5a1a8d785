/* test_slog.c: the daemon's log lines (src/server/slog.c): where each level
 * goes, text lines that a hostile string cannot split or forge, JSON lines
 * that parse whatever the message holds, the journal's priority prefix. */
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "server/slog.h"

/* stdout and stderr into files while a test logs; cmocka prints nothing
 * in between. */
typedef struct capture {
    int saved[2], file[2];
    char out[16384], err[16384];
} capture;

static void capture_begin(capture *c)
{
    for (int i = 0; i < 2; i++) {
        c->file[i] = open("/tmp", O_TMPFILE | O_RDWR, 0600);
        assert_true(c->file[i] >= 0);
        c->saved[i] = dup(1 + i);
        assert_true(c->saved[i] >= 0);
        assert_true(dup2(c->file[i], 1 + i) == 1 + i);
    }
}

static void capture_end(capture *c)
{
    char *bufs[2] = { c->out, c->err };
    for (int i = 0; i < 2; i++) {
        assert_true(dup2(c->saved[i], 1 + i) == 1 + i);
        close(c->saved[i]);
        ssize_t n = pread(c->file[i], bufs[i], sizeof c->out - 1, 0);
        assert_true(n >= 0);
        bufs[i][n] = '\0';
        close(c->file[i]);
    }
}

static void format_names(void **state)
{
    (void)state;
    int f = -1;
    assert_int_equal(srv_slog_format_parse("text", &f), 0);
    assert_int_equal(f, SLOG_TEXT);
    assert_int_equal(srv_slog_format_parse("json", &f), 0);
    assert_int_equal(f, SLOG_JSON);
    assert_int_equal(srv_slog_format_parse("JSON", &f), -1);
    assert_int_equal(srv_slog_format_parse("", &f), -1);
    assert_int_equal(srv_slog_format_parse("json ", &f), -1);
}

static void text_levels_go_where_they_went(void **state)
{
    (void)state;
    capture c;
    unsetenv("JOURNAL_STREAM");
    srv_slog_init(SLOG_TEXT);
    capture_begin(&c);
    srv_slog(SLOG_INFO, SLOG_F("listen", "127.0.0.1:1"), "listening on %s", "http://127.0.0.1:1");
    srv_slog(SLOG_WARN, NULL, "careful\n");
    srv_slog(SLOG_ERROR, NULL, "broken: %d", 7);
    capture_end(&c);
    assert_string_equal(c.out, "cell daemon: listening on http://127.0.0.1:1\n");
    assert_string_equal(c.err, "cell daemon: careful\ncell daemon: broken: 7\n");
}

/* A tenant's string in a message (an image name, a URL, a cell's error)
 * with a newline and a forged prefix stays on its line. */
static void text_cannot_be_split_or_forged(void **state)
{
    (void)state;
    capture c;
    srv_slog_init(SLOG_TEXT);
    capture_begin(&c);
    srv_slog(SLOG_WARN, NULL, "image %s failed", "x\n<3>cell daemon: admin token is abc\r\x1b[2J\x7f");
    capture_end(&c);
    assert_string_equal(c.err, "cell daemon: image x\\x0a<3>cell daemon: admin token is abc\\x0d\\x1b[2J\\x7f failed\n");
    assert_ptr_equal(strchr(c.err, '\n'), c.err + strlen(c.err) - 1);   /* one line */
}

static json_t *only_line(const char *text)
{
    const char *nl = strchr(text, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[1], '\0');
    json_error_t je;
    json_t *o = json_loadb(text, (size_t)(nl - text), 0, &je);
    assert_non_null(o);
    return o;
}

static void json_lines_parse_and_carry_fields(void **state)
{
    (void)state;
    capture c;
    srv_slog_init(SLOG_JSON);
    capture_begin(&c);
    srv_slog(SLOG_INFO, SLOG_F("cell", "abc123", "tenant", NULL, "route", "/v1/cells/{id}"), "hello \"%s\"\n\x01",
         "wor\nld");
    capture_end(&c);
    assert_string_equal(c.out, "");         /* json: everything on stderr */
    json_t *o = only_line(c.err);
    assert_string_equal(json_string_value(json_object_get(o, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(o, "msg")), "hello \"wor\nld\"\n\x01");
    assert_string_equal(json_string_value(json_object_get(o, "cell")), "abc123");
    assert_string_equal(json_string_value(json_object_get(o, "route")), "/v1/cells/{id}");
    assert_null(json_object_get(o, "tenant"));  /* a NULL value leaves its key out */
    const char *ts = json_string_value(json_object_get(o, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24);           /* 2026-12-04T03:40:12.118Z */
    assert_int_equal(ts[23], 'Z');
    json_decref(o);
}

static void json_survives_bytes_that_are_not_utf8(void **state)
{
    (void)state;
    capture c;
    srv_slog_init(SLOG_JSON);
    capture_begin(&c);
    srv_slog(SLOG_ERROR, SLOG_F("image", "\xff\xfe"), "path %s", "/tmp/\xc3\x28");
    capture_end(&c);
    json_t *o = only_line(c.err);
    assert_string_equal(json_string_value(json_object_get(o, "level")), "error");
    assert_string_equal(json_string_value(json_object_get(o, "msg")), "path /tmp/?(");
    assert_string_equal(json_string_value(json_object_get(o, "image")), "??");
    json_decref(o);
}

static void long_messages_are_cut_and_marked(void **state)
{
    (void)state;
    capture c;
    char *big = malloc(20000);
    assert_non_null(big);
    memset(big, 'a', 19999);
    big[19999] = '\0';
    srv_slog_init(SLOG_TEXT);
    capture_begin(&c);
    srv_slog(SLOG_WARN, NULL, "%s", big);
    capture_end(&c);
    free(big);
    size_t n = strlen(c.err);
    assert_true(n < 4200);
    assert_memory_equal(c.err + n - 5, "a...\n", 5);
}

/* JOURNAL_STREAM naming stderr: a <N> prefix on every line, all on stderr. */
static void journal_gets_priorities(void **state)
{
    (void)state;
    capture c;
    capture_begin(&c);
    struct stat st;
    assert_int_equal(fstat(2, &st), 0);
    char js[64];
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    srv_slog_init(SLOG_TEXT);
    srv_slog(SLOG_INFO, NULL, "up");
    srv_slog(SLOG_WARN, NULL, "odd");
    srv_slog_init(SLOG_JSON);
    srv_slog(SLOG_ERROR, NULL, "down");
    setenv("JOURNAL_STREAM", "1:1", 1);         /* another stream: no prefix */
    srv_slog_init(SLOG_TEXT);
    srv_slog(SLOG_WARN, NULL, "plain");
    unsetenv("JOURNAL_STREAM");
    srv_slog_init(SLOG_TEXT);
    capture_end(&c);
    assert_string_equal(c.out, "");
    assert_memory_equal(c.err, "<6>cell daemon: up\n<4>cell daemon: odd\n<3>{", 42);
    assert_non_null(strstr(c.err, "\"msg\":\"down\"}\ncell daemon: plain\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(format_names),
        cmocka_unit_test(text_levels_go_where_they_went),
        cmocka_unit_test(text_cannot_be_split_or_forged),
        cmocka_unit_test(json_lines_parse_and_carry_fields),
        cmocka_unit_test(json_survives_bytes_that_are_not_utf8),
        cmocka_unit_test(long_messages_are_cut_and_marked),
        cmocka_unit_test(journal_gets_priorities),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
