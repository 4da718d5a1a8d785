/* test_masks.c: masks in mounts, the checks made when a mask is defined
 * (runtime_mask_check, runtime_mask_overlaps, cell_options_add_mask):
 * '..', '.', absolute, empty and overlong paths and components are refused
 * naming the mask, as are overlapping masks, masks of a mount that is not
 * there or takes none, and a 65th mask; good ones are kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

static void refused(const char *path, const char *word)
{
    cell_error e = { 0 };
    if (runtime_mask_check(path, "mounts[0].mask[0]", &e) != -1 || e.code != EINVAL || !strstr(e.message, word) ||
        !strstr(e.message, "mounts[0].mask[0]")) {
        fprintf(stderr, "mask '%.40s': code %d, message '%s' (wanted '%s')\n", path ? path : "(null)", e.code,
                e.message, word);
        fail();
    }
}

static void bad_paths_are_refused(void **state)
{
    (void)state;
    refused(NULL, "empty");
    refused("", "empty");
    refused("..", "'..'");
    refused("../x", "'..'");
    refused("a/../../etc/passwd", "'..'");
    refused("a/..", "'..'");
    refused(".", "'.'");
    refused("./.env", "'.'");
    refused("a/./b", "'.'");
    refused("/etc/shadow", "absolute");
    refused("a//b", "empty component");
    refused("a/", "empty component");
    char big[RUNTIME_MASK_MAX_LEN + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    for (size_t i = 100; i < sizeof big - 1; i += 100)
        big[i] = '/';
    refused(big, "bytes long");
    char name[NAME_MAX + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    refused(name, "longer than");
}

static void good_paths_pass(void **state)
{
    (void)state;
    static const char *const ok[] = { ".env", ".git/config", "a/b/c", "...", "..a", "a..", ".a./b", "x y",
                                      "node_modules/.cache", NULL };
    for (const char *const *p = ok; *p; p++) {
        cell_error e = { 0 };
        assert_int_equal(runtime_mask_check(*p, "m", &e), 0);
    }
    char name[NAME_MAX + 1];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    assert_int_equal(runtime_mask_check(name, "m", NULL), 0);
}

static void overlaps(void **state)
{
    (void)state;
    assert_true(runtime_mask_overlaps(".git", ".git"));
    assert_true(runtime_mask_overlaps(".git", ".git/config"));
    assert_true(runtime_mask_overlaps(".git/config", ".git"));
    assert_false(runtime_mask_overlaps(".git", ".gitignore"));
    assert_false(runtime_mask_overlaps(".gitignore", ".git"));
    assert_false(runtime_mask_overlaps("a/b", "a/c"));
    assert_false(runtime_mask_overlaps("a/b", "a/bc"));
}

static void options_refuse_and_keep(void **state)
{
    (void)state;
    cell_options *o = NULL;
    cell_error e = { 0 };
    assert_int_equal(cell_options_new(&o, &e), 0);
    assert_int_equal(cell_options_add_mask(o, "/w", ".env", &e), -1);
    assert_int_equal(e.code, ENOENT);
    assert_non_null(strstr(e.message, "no bind or overlay mount at '/w'"));
    assert_int_equal(cell_options_add_tmpfs(o, "/t", 0, &e), 0);
    assert_int_equal(cell_options_add_mask(o, "/t", ".env", &e), -1);
    assert_int_equal(e.code, ENOENT);
    assert_int_equal(cell_options_add_bind(o, "/tmp", "/w", 0, &e), 0);
    assert_int_equal(cell_options_add_mask(o, "/w", "../etc", &e), -1);
    assert_int_equal(e.code, EINVAL);
    assert_non_null(strstr(e.message, "mount /w"));
    assert_int_equal(cell_options_add_mask(o, "/w", ".git", &e), 0);
    assert_int_equal(cell_options_add_mask(o, "/w", ".git/config", &e), -1);
    assert_non_null(strstr(e.message, "overlaps"));
    assert_int_equal(cell_options_add_mask(o, "/w", ".git", &e), -1);
    assert_int_equal(cell_options_add_mask(o, NULL, ".git", &e), -1);
    assert_int_equal(cell_options_add_mask(o, "/w", NULL, &e), -1);
    for (int i = 1; i < RUNTIME_MAX_MASKS; i++) {
        char p[32];
        snprintf(p, sizeof p, "m%d", i);
        assert_int_equal(cell_options_add_mask(o, "/w", p, &e), 0);
    }
    assert_int_equal(cell_options_add_mask(o, "/w", "one-more", &e), -1);
    assert_int_equal(e.code, E2BIG);
    assert_int_equal(cell_options_add_overlay(o, "/tmp", "/o", 0, &e), 0);
    assert_int_equal(cell_options_add_mask(o, "/o", ".env", &e), 0);
    cell_options_free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_paths_are_refused),
        cmocka_unit_test(good_paths_pass),
        cmocka_unit_test(overlaps),
        cmocka_unit_test(options_refuse_and_keep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
