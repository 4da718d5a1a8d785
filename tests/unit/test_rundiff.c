/* test_rundiff.c: the reader of the runs' diff script output (rundiff.c),
 * fed what a hostile cell could send instead: malformed headers, output
 * cut anywhere, listings that disagree, invalid UTF-8, newlines in paths,
 * more than the caps; and the paths read from git apply's complaints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "server/rundiff.h"

/* A script output: header, the two listings, the patch. */
static char *make_output(const char *names, size_t nlen, const char *numstat, size_t slen, const char *patch,
                         size_t plen, size_t *len)
{
    char head[64];
    int h = snprintf(head, sizeof head, "cell-rundiff 1 %zu %zu\n", nlen, slen);
    char *buf = malloc((size_t)h + nlen + slen + plen);
    assert_non_null(buf);
    memcpy(buf, head, (size_t)h);
    memcpy(buf + h, names, nlen);
    memcpy(buf + h + nlen, numstat, slen);
    memcpy(buf + h + nlen + slen, patch, plen);
    *len = (size_t)h + nlen + slen + plen;
    return buf;
}

static json_t *read_all(const rundiff_limits *lim, int fd, const char *data, size_t len, size_t step, int *feed_rc,
                        cell_error *err)
{
    rundiff_reader *rd = srv_rundiff_reader_new(lim, fd);
    assert_non_null(rd);
    *feed_rc = 0;
    for (size_t at = 0; at < len && *feed_rc == 0;) {
        size_t n = len - at < step ? len - at : step;
        *feed_rc = srv_rundiff_reader_feed(rd, data + at, n, err);
        at += n;
    }
    json_t *out = json_object();
    if (*feed_rc < 0 || srv_rundiff_reader_end(rd, "/v1/runs/0123456789abcdef/artifacts/diff.patch", out, err) < 0) {
        json_decref(out);
        out = NULL;
    }
    srv_rundiff_reader_free(rd);
    return out;
}

#define NAMES "M\0a.txt\0A\0bin\0D\0gone\0R087\0old name\0new\nname\0T\0link\0"
#define STATS "1\t1\ta.txt\0-\t-\tbin\0" "0\t3\tgone\0" "2\t0\t\0old name\0new\nname\0" "1\t1\tlink\0"
#define PATCH "diff --git a/a.txt b/a.txt\n-x\n+y\n"

static void reads_a_whole_output_in_any_pieces(void **state)
{
    (void)state;
    size_t len;
    char *out = make_output(NAMES, sizeof NAMES - 1, STATS, sizeof STATS - 1, PATCH, sizeof PATCH - 1, &len);
    rundiff_limits lim = { .inline_max = 1 << 20, .artifact_max = 64 << 20 };
    for (size_t step = 1; step <= len; step = step * 3 + 1) {
        int fd = memfd_create("patch", MFD_CLOEXEC);
        assert_true(fd >= 0);
        cell_error err = { 0 };
        int rc;
        json_t *r = read_all(&lim, fd, out, len, step, &rc, &err);
        assert_non_null(r);
        assert_string_equal(json_string_value(json_object_get(r, "diff")), PATCH);
        assert_int_equal(json_integer_value(json_object_get(r, "diffBytes")), sizeof PATCH - 1);
        assert_true(json_is_false(json_object_get(r, "diffTruncated")));
        assert_true(json_is_false(json_object_get(r, "changedFilesTruncated")));
        json_t *files = json_object_get(r, "changedFiles");
        assert_int_equal(json_array_size(files), 5);
        static const char *const want[][3] = { { "a.txt", "modified", "0" }, { "bin", "added", "1" },
                                               { "gone", "deleted", "0" }, { "new\nname", "renamed", "0" },
                                               { "link", "modified", "0" } };
        for (size_t i = 0; i < 5; i++) {
            json_t *f = json_array_get(files, i);
            assert_string_equal(json_string_value(json_object_get(f, "path")), want[i][0]);
            assert_string_equal(json_string_value(json_object_get(f, "status")), want[i][1]);
            assert_int_equal(json_is_true(json_object_get(f, "binary")), want[i][2][0] == '1');
        }
        assert_string_equal(json_string_value(json_object_get(json_array_get(files, 3), "oldPath")), "old name");
        json_t *art = json_array_get(json_object_get(r, "artifacts"), 0);
        assert_string_equal(json_string_value(json_object_get(art, "name")), "diff.patch");
        assert_string_equal(json_string_value(json_object_get(art, "url")),
                            "/v1/runs/0123456789abcdef/artifacts/diff.patch");
        assert_true(json_is_false(json_object_get(art, "truncated")));
        char back[256];
        assert_int_equal(pread(fd, back, sizeof back, 0), sizeof PATCH - 1);
        assert_memory_equal(back, PATCH, sizeof PATCH - 1);
        json_decref(r);
        close(fd);
    }
    free(out);
}

static void reads_an_empty_diff(void **state)
{
    (void)state;
    /* No change: the header alone, or with empty listings in any pieces. */
    rundiff_limits lim = { .inline_max = 10, .artifact_max = 10 };
    static const char out[] = "cell-rundiff 1 0 0\n";
    for (size_t step = 1; step < sizeof out; step++) {
        cell_error err = { 0 };
        int rc;
        json_t *r = read_all(&lim, -1, out, sizeof out - 1, step, &rc, &err);
        assert_non_null(r);
        assert_string_equal(json_string_value(json_object_get(r, "diff")), "");
        assert_int_equal(json_integer_value(json_object_get(r, "diffBytes")), 0);
        assert_int_equal(json_array_size(json_object_get(r, "changedFiles")), 0);
        assert_true(json_is_false(json_object_get(r, "diffTruncated")));
        json_decref(r);
    }
    /* Listings but no patch (git printed none): still a whole output. */
    size_t len;
    char *o2 = make_output("M\0a\0", 4, "", 0, "", 0, &len);
    cell_error err = { 0 };
    int rc;
    json_t *r = read_all(&lim, -1, o2, len, 1, &rc, &err);
    assert_non_null(r);
    assert_int_equal(json_array_size(json_object_get(r, "changedFiles")), 1);
    json_decref(r);
    free(o2);
}

static void refuses_malformed_or_cut_output(void **state)
{
    (void)state;
#define S(x) { x, sizeof x - 1 }
    static const struct { const char *data; size_t len; } bad[] = {
        S(""),                                          /* nothing at all */
        S("cell-rundiff 2 0 0\n"),                      /* another version */
        S("cell-rundiff 1 -1 0\n"),
        S("cell-rundiff 1 0\n"),
        S("cell-rundiff 1 0 0 0\n"),
        S("cell-rundiff 1  0 0\n"),
        S("cell-rundiff 1 99999999999999999999999 0\n"), /* overflow */
        S("cell-rundiff 1 0 0"),                        /* no end of line */
        S("cell-rundiff 1 10 0\nA\0x\0"),               /* cut inside the names */
        S("cell-rundiff 1 0 10\n1\t"),                  /* cut inside numstat */
        S("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"), /* long */
    };
#undef S
    rundiff_limits lim = { .inline_max = 100, .artifact_max = 1000 };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cell_error err = { 0 };
        int rc;
        json_t *r = read_all(&lim, -1, bad[i].data, bad[i].len, 7, &rc, &err);
        assert_null(r);
        assert_int_equal(err.code, EPROTO);
    }
}

static void caps_the_inline_diff_and_the_artifact(void **state)
{
    (void)state;
    /* 9 ASCII bytes then a two-byte character across the inline cap: the
     * inline diff stops before it, whole characters only. */
    char patch[200];
    memset(patch, 'a', 9);
    patch[9] = '\xc3', patch[10] = '\xa9';
    memset(patch + 11, 'b', sizeof patch - 11);
    size_t len;
    char *out = make_output("", 0, "", 0, patch, sizeof patch, &len);
    rundiff_limits lim = { .inline_max = 10, .artifact_max = 150 };
    int fd = memfd_create("patch", MFD_CLOEXEC);
    cell_error err = { 0 };
    int rc;
    json_t *r = read_all(&lim, fd, out, len, 64, &rc, &err);
    assert_int_equal(rc, 1);                     /* the artifact is full: stop the script */
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(r, "diff")), "aaaaaaaaa");
    assert_int_equal(json_integer_value(json_object_get(r, "diffBytes")), 150);
    assert_true(json_is_true(json_object_get(r, "diffTruncated")));
    json_t *art = json_array_get(json_object_get(r, "artifacts"), 0);
    assert_int_equal(json_integer_value(json_object_get(art, "bytes")), 150);
    assert_true(json_is_true(json_object_get(art, "truncated")));
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 150);
    json_decref(r);
    close(fd);
    free(out);
}

static void replaces_invalid_utf8_and_keeps_nuls_out(void **state)
{
    (void)state;
    static const char names[] = "A\0bad\xff\xfe name\0M\0ok\0";
    static const char stats[] = "1\t0\tbad\xff\xfe name\0-\t-\tok\0";
    static const char patch[] = "+\xff\xc3(\xed\xa0\x80\n";   /* invalid, overlong-ish, a surrogate */
    size_t len;
    char *out = make_output(names, sizeof names - 1, stats, sizeof stats - 1, patch, sizeof patch - 1, &len);
    rundiff_limits lim = { .inline_max = 1000, .artifact_max = 1000 };
    cell_error err = { 0 };
    int rc;
    json_t *r = read_all(&lim, -1, out, len, 1000, &rc, &err);
    assert_non_null(r);
    char *dump = json_dumps(r, JSON_COMPACT);
    assert_non_null(dump);
    json_t *again = json_loads(dump, 0, NULL);  /* what a client parses: valid JSON, valid UTF-8 */
    assert_non_null(again);
    json_t *f0 = json_array_get(json_object_get(again, "changedFiles"), 0);
    assert_string_equal(json_string_value(json_object_get(f0, "path")), "bad\xef\xbf\xbd\xef\xbf\xbd name");
    assert_true(json_is_true(json_object_get(json_array_get(json_object_get(again, "changedFiles"), 1), "binary")));
    assert_non_null(strstr(json_string_value(json_object_get(again, "diff")), "\xef\xbf\xbd"));
    json_decref(again);
    free(dump);
    json_decref(r);
    free(out);
}

static void distrusts_listings_that_disagree(void **state)
{
    (void)state;
    /* numstat names other paths (or is garbage): no binary flag is believed. */
    static const char names[] = "M\0a\0M\0b\0M\0c\0";
    static const char stats[] = "-\t-\ta\0-\t-\tzzz\0-\t-\tc\0";
    size_t len;
    char *out = make_output(names, sizeof names - 1, stats, sizeof stats - 1, "", 0, &len);
    rundiff_limits lim = { .inline_max = 10, .artifact_max = 10 };
    cell_error err = { 0 };
    int rc;
    json_t *r = read_all(&lim, -1, out, len, 5, &rc, &err);
    assert_non_null(r);
    json_t *files = json_object_get(r, "changedFiles");
    assert_int_equal(json_array_size(files), 3);
    assert_true(json_is_true(json_object_get(json_array_get(files, 0), "binary")));
    assert_true(json_is_false(json_object_get(json_array_get(files, 1), "binary")));
    assert_true(json_is_false(json_object_get(json_array_get(files, 2), "binary")));
    json_decref(r);
    free(out);
    /* A status without its path, an empty status, tabs missing: stops there. */
    static const char names2[] = "M\0a\0\0b\0M";
    static const char stats2[] = "garbage\0";
    out = make_output(names2, sizeof names2 - 1, stats2, sizeof stats2 - 1, "", 0, &len);
    r = read_all(&lim, -1, out, len, 3, &rc, &err);
    assert_non_null(r);
    files = json_object_get(r, "changedFiles");
    assert_int_equal(json_array_size(files), 1);
    assert_true(json_is_false(json_object_get(json_array_get(files, 0), "binary")));
    json_decref(r);
    free(out);
}

static void caps_the_file_list(void **state)
{
    (void)state;
    /* More entries than RUNDIFF_FILES_MAX, and a listing past RUNDIFF_LIST_MAX. */
    size_t n = RUNDIFF_LIST_MAX / 8 + 10, nlen = 0;
    char *names = malloc(n * 12);
    assert_non_null(names);
    for (size_t i = 0; i < n; i++)
        nlen += (size_t)sprintf(names + nlen, "A%c%06zx%c", 0, i, 0);
    assert_true(nlen > RUNDIFF_LIST_MAX);
    size_t len;
    char *out = make_output(names, nlen, "", 0, "p", 1, &len);
    rundiff_limits lim = { .inline_max = 10, .artifact_max = 10 };
    cell_error err = { 0 };
    int rc;
    json_t *r = read_all(&lim, -1, out, len, 1 << 16, &rc, &err);
    assert_non_null(r);
    assert_int_equal(json_array_size(json_object_get(r, "changedFiles")), RUNDIFF_FILES_MAX);
    assert_true(json_is_true(json_object_get(r, "changedFilesTruncated")));
    assert_string_equal(json_string_value(json_object_get(r, "diff")), "p");
    json_decref(r);
    free(out);
    free(names);
}

static void reads_the_paths_git_apply_names(void **state)
{
    (void)state;
    static const char text[] =
        "error: patch failed: src/a.c:12\n"
        "error: src/a.c: patch does not apply\n"
        "error: new.txt: already exists in working directory\n"
        "error: invalid path '.git/hooks/pre-commit'\n"
        "error: affected file 'link/evil' is beyond a symbolic link\n"
        "warning: something else\n"
        "error: \xff: patch does not apply\n"
        "error: : patch does not apply\n"
        "fatal: corrupt patch at line 3";
    json_t *c = srv_rundiff_conflicts(text, sizeof text - 1);
    assert_non_null(c);
    assert_int_equal(json_array_size(c), 5);
    assert_string_equal(json_string_value(json_array_get(c, 0)), "src/a.c");
    assert_string_equal(json_string_value(json_array_get(c, 1)), "new.txt");
    assert_string_equal(json_string_value(json_array_get(c, 2)), ".git/hooks/pre-commit");
    assert_string_equal(json_string_value(json_array_get(c, 3)), "link/evil");
    assert_string_equal(json_string_value(json_array_get(c, 4)), "\xef\xbf\xbd");
    json_decref(c);
    c = srv_rundiff_conflicts("fatal: corrupt patch at line 3\n", 31);
    assert_int_equal(json_array_size(c), 0);
    json_decref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_a_whole_output_in_any_pieces),
        cmocka_unit_test(reads_an_empty_diff),
        cmocka_unit_test(refuses_malformed_or_cut_output),
        cmocka_unit_test(caps_the_inline_diff_and_the_artifact),
        cmocka_unit_test(replaces_invalid_utf8_and_keeps_nuls_out),
        cmocka_unit_test(distrusts_listings_that_disagree),
        cmocka_unit_test(caps_the_file_list),
        cmocka_unit_test(reads_the_paths_git_apply_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
