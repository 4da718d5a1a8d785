/* test_size.c: cell_parse_size and util_valid_name, the parsers every
 * size and name a user types goes through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "util/util.h"

static void accepts_units(void **state)
{
    (void)state;
    static const struct { const char *text; uint64_t want; } cases[] = {
        { "0", 0 }, { "512", 512 }, { "512B", 512 }, { "64K", 64ull << 10 }, { "64k", 64ull << 10 },
        { "256M", 256ull << 20 }, { "256MB", 256ull << 20 }, { "256MiB", 256ull << 20 }, { "2G", 2ull << 30 },
        { "1T", 1ull << 40 }, { "16777215T", 16777215ull << 40 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint64_t v = 1;
        cell_error err = { 0 };
        assert_int_equal(cell_parse_size(cases[i].text, &v, &err), 0);
        assert_true(v == cases[i].want);
    }
}

static void rejects_garbage(void **state)
{
    (void)state;
    static const char *const bad[] = { "", "12X", "M", "-1", " 1", "1 ", "1.5G", "1GG", "1Gx", "0x10",
                                       "99999999999999999999", "16777216T", "1KiBB", NULL };
    for (const char *const *b = bad; *b; b++) {
        uint64_t v = 7;
        cell_error err = { 0 };
        assert_int_equal(cell_parse_size(*b, &v, &err), -1);
        assert_true(err.code == EINVAL || err.code == ERANGE);
        assert_true(strlen(err.message) > 10);
        assert_true(v == 7); /* untouched on failure */
    }
    assert_int_equal(cell_parse_size(NULL, &(uint64_t){ 0 }, NULL), -1);
}

static void message_names_the_input(void **state)
{
    (void)state;
    cell_error err = { 0 };
    uint64_t v;
    assert_int_equal(cell_parse_size("12X", &v, &err), -1);
    assert_non_null(strstr(err.message, "12X"));
    assert_non_null(strstr(err.message, "'X'"));
}

static void names(void **state)
{
    (void)state;
    assert_true(util_valid_name("work1"));
    assert_true(util_valid_name("a.b_c-d"));
    assert_true(util_valid_name("x"));
    char long_ok[64], too_long[65];
    memset(long_ok, 'a', 63);
    long_ok[63] = '\0';
    memset(too_long, 'a', 64);
    too_long[64] = '\0';
    assert_true(util_valid_name(long_ok));
    assert_false(util_valid_name(too_long));
    static const char *const bad[] = { "", ".", "..", "../x", "a/b", ".hidden", "-opt", "sp ace", "ü", "a\n", NULL };
    for (const char *const *b = bad; *b; b++)
        assert_false(util_valid_name(*b));
    assert_false(util_valid_name(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_units),
        cmocka_unit_test(rejects_garbage),
        cmocka_unit_test(message_names_the_input),
        cmocka_unit_test(names),
    };
    return cmocka_run_group_tests_name("size and names", tests, NULL, NULL);
}
