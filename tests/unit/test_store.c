/* test_store.c: the daemon's store: tenants, tokens, cells, lanes in SQLite
 * and the audit log, in a fresh temporary state directory per test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "store/store.h"
#include "util/util.h"

typedef struct fixture {
    char   dir[64];
    store *s;
} fixture;

/* The daemon loads STATE/secrets.key right after store_open(). */
static void load_key(fixture *f)
{
    char path[128];
    snprintf(path, sizeof path, "%s/secrets.key", f->dir);
    cell_error err = { 0 };
    if (store_secrets_key(f->s, path, NULL, &err) < 0)
        fail_msg("store_secrets_key: %s", err.message);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/cell-test-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    cell_error err = { 0 };
    assert_int_equal(store_open(&f->s, f->dir, &err), 0);
    load_key(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    cell_error err = { 0 };
    util_rm_rf(f->dir, &err);
    free(f);
    return 0;
}

static void reopen(fixture *f)
{
    store_close(f->s);
    cell_error err = { 0 };
    assert_int_equal(store_open(&f->s, f->dir, &err), 0);
    load_key(f);
}

static void mode_is_0600(const char *dir, const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void files_are_private(void **state)
{
    fixture *f = *state;
    mode_is_0600(f->dir, "cell.db");
    mode_is_0600(f->dir, "audit.log");
    /* The WAL, once written, inherits the database's mode. */
    assert_int_equal(store_tenant_ensure(f->s, "t1", NULL), 0);
    mode_is_0600(f->dir, "cell.db-wal");
}

static void tenants(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    store_tenant t;
    assert_int_equal(store_tenant_get(f->s, "acme", &t, &err), -1);
    assert_int_equal(err.code, ENOENT);

    assert_int_equal(store_tenant_ensure(f->s, "acme", &err), 0);
    assert_int_equal(store_tenant_get(f->s, "acme", &t, &err), 0);
    assert_string_equal(t.name, "acme");
    assert_int_equal(t.max_cells, STORE_DEFAULT_MAX_CELLS);
    assert_true(t.max_memory == STORE_DEFAULT_MAX_MEMORY);
    assert_int_equal(t.max_lanes, STORE_DEFAULT_MAX_LANES);
    assert_true(t.max_disk == STORE_DEFAULT_MAX_DISK);
    assert_true(t.created > 1600000000000ll); /* ms */

    /* ensure does not reset quotas that were set */
    store_tenant q = t;
    q.max_cells = 3;
    q.max_memory = UINT64_MAX; /* survives the signed SQLite integer */
    q.max_lanes = 7;
    q.max_disk = 1ull << 40;
    assert_int_equal(store_tenant_set_quota(f->s, &q, &err), 0);
    assert_int_equal(store_tenant_ensure(f->s, "acme", &err), 0);
    assert_int_equal(store_tenant_get(f->s, "acme", &t, &err), 0);
    assert_int_equal(t.max_cells, 3);
    assert_true(t.max_memory == UINT64_MAX);
    assert_int_equal(t.max_lanes, 7);
    assert_true(t.max_disk == 1ull << 40);

    /* set_quota creates a missing tenant */
    snprintf(q.name, sizeof q.name, "beta");
    assert_int_equal(store_tenant_set_quota(f->s, &q, &err), 0);

    store_tenant *list = NULL;
    size_t n = 0;
    assert_int_equal(store_tenant_list(f->s, &list, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].name, "acme");
    assert_string_equal(list[1].name, "beta");
    free(list);

    static const char *const bad[] = { "", "-x", ".x", "a/b", "a b", NULL };
    for (const char *const *b = bad; *b; b++) {
        assert_int_equal(store_tenant_ensure(f->s, *b, &err), -1);
        assert_int_equal(err.code, EINVAL);
    }
    assert_int_equal(store_tenant_ensure(f->s, NULL, &err), -1);
}

static void assert_denied(store *s, const char *bearer, const char *expect_msg)
{
    cell_error err = { 0 };
    store_token t;
    assert_int_equal(store_token_check(s, bearer, &t, &err), -1);
    assert_int_equal(err.code, EACCES);
    assert_string_equal(err.message, expect_msg);
}

static void tokens(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    char bearer[STORE_BEARER_SIZE];
    store_token info;
    assert_int_equal(store_token_create(f->s, "acme", "ci bot", 0, 20, &info, bearer, sizeof bearer, &err), 0);
    assert_int_equal(strlen(bearer), 50);
    assert_memory_equal(bearer, "cell_", 5);
    assert_int_equal(bearer[17], '_');
    assert_memory_equal(bearer + 5, info.id, 12);
    assert_int_equal(strlen(info.id), 12);
    assert_string_equal(info.tenant, "acme");
    assert_string_equal(info.label, "ci bot");
    assert_int_equal(info.rate, 20);
    assert_false(info.admin);
    /* the token made its tenant */
    store_tenant ten;
    assert_int_equal(store_tenant_get(f->s, "acme", &ten, &err), 0);

    store_token got;
    assert_int_equal(store_token_check(f->s, bearer, &got, &err), 0);
    assert_string_equal(got.id, info.id);
    assert_string_equal(got.tenant, "acme");
    assert_string_equal(got.label, "ci bot");
    assert_int_equal(got.rate, 20);
    assert_false(got.revoked);

    /* Learn the generic message from one failure; every other must match. */
    char bad[64];
    snprintf(bad, sizeof bad, "%s", bearer);
    bad[49] = bad[49] == '0' ? '1' : '0'; /* wrong secret */
    assert_int_equal(store_token_check(f->s, bad, &got, &err), -1);
    assert_int_equal(err.code, EACCES);
    char msg[sizeof err.message];
    snprintf(msg, sizeof msg, "%s", err.message);
    assert_null(strstr(msg, "secret"));
    assert_null(strstr(msg, info.id));

    snprintf(bad, sizeof bad, "cell_000000000000_%s", bearer + 18); /* unknown id */
    assert_denied(f->s, bad, msg);
    static const char *const malformed[] = {
        "", "cell_", "Bearer x", "cell_0123456789ab_0123456789abcdef0123456789abcdef0", /* too long */
        "cell_0123456789ab_0123456789abcdef0123456789abcde",                          /* too short */
        "cell_0123456789AB_0123456789abcdef0123456789abcdef",                         /* upper case */
        "cell-0123456789ab_0123456789abcdef0123456789abcdef",                         /* separator */
        "cell_0123456789ab-0123456789abcdef0123456789abcdef",
        "cell_0123456789ab_0123456789abcdef0123456789abcdeg", /* not hex */
        NULL,
    };
    for (const char *const *m = malformed; *m; m++)
        assert_denied(f->s, *m, msg);
    assert_denied(f->s, NULL, msg);
    /* the real secret with trailing garbage */
    snprintf(bad, sizeof bad, "%s ", bearer);
    assert_denied(f->s, bad, msg);

    /* second token, admin, for another tenant */
    char bearer2[80];
    store_token info2;
    assert_int_equal(store_token_create(f->s, "root", NULL, 1, 0, &info2, bearer2, sizeof bearer2, &err), 0);
    assert_string_equal(info2.label, "");
    assert_int_equal(store_token_check(f->s, bearer2, &got, &err), 0);
    assert_true(got.admin);
    assert_string_equal(got.tenant, "root");

    size_t n = 0;
    assert_int_equal(store_token_count(f->s, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(store_token_revoke(f->s, info.id, &err), 0);
    /* A second revoke finds no live token: one revoke succeeds. */
    assert_int_equal(store_token_revoke(f->s, info.id, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_denied(f->s, bearer, msg);
    assert_int_equal(store_token_count(f->s, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_token_revoke(f->s, "ffffffffffff", &err), -1);
    assert_int_equal(err.code, ENOENT);

    store_token *list = NULL;
    assert_int_equal(store_token_list(f->s, &list, &n, &err), 0);
    assert_int_equal(n, 2);
    int seen_revoked = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].id, info.id) == 0)
            seen_revoked = list[i].revoked;
    assert_true(seen_revoked);
    free(list);

    /* argument errors */
    char small[50];
    assert_int_equal(store_token_create(f->s, "acme", "", 0, 0, NULL, small, sizeof small, &err), -1);
    assert_int_equal(err.code, ERANGE);
    assert_int_equal(store_token_create(f->s, "../x", "", 0, 0, NULL, bearer, sizeof bearer, &err), -1);
    assert_int_equal(err.code, EINVAL);
    char longlabel[65];
    memset(longlabel, 'l', 64);
    longlabel[64] = '\0';
    assert_int_equal(store_token_create(f->s, "acme", longlabel, 0, 0, NULL, bearer, sizeof bearer, &err), -1);
    assert_int_equal(err.code, EINVAL);
}

static void make_cell(store_cell *c, const char *id, const char *tenant, const char *state, const char *spec)
{
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", id);
    snprintf(c->tenant, sizeof c->tenant, "%s", tenant);
    snprintf(c->state, sizeof c->state, "%s", state);
    c->spec = (char *)spec;
}

static void cells(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    store_cell c;
    make_cell(&c, "c1", "acme", "running", "{\"image\":\"debian\"}");
    assert_int_equal(store_cell_insert(f->s, &c, &err), 0);
    assert_true(c.created > 1600000000000ll && c.updated == c.created);
    make_cell(&c, "c2", "acme", "stopped", "{}");
    assert_int_equal(store_cell_insert(f->s, &c, &err), 0);
    make_cell(&c, "c3", "other", "running", "{}");
    c.created = 1234; /* the caller's stamp is kept */
    assert_int_equal(store_cell_insert(f->s, &c, &err), 0);
    assert_true(c.created == 1234 && c.updated == 1234);

    make_cell(&c, "c1", "other", "running", "{}");
    assert_int_equal(store_cell_insert(f->s, &c, &err), -1);
    assert_int_equal(err.code, EEXIST);
    make_cell(&c, "c9", "acme", "paused", "{}");
    assert_int_equal(store_cell_insert(f->s, &c, &err), -1);
    assert_int_equal(err.code, EINVAL);
    make_cell(&c, "c9", "acme", "running", NULL);
    assert_int_equal(store_cell_insert(f->s, &c, &err), -1);
    assert_int_equal(err.code, EINVAL);

    store_cell got;
    assert_int_equal(store_cell_get(f->s, "acme", "c1", &got, &err), 0);
    assert_string_equal(got.id, "c1");
    assert_string_equal(got.tenant, "acme");
    assert_string_equal(got.state, "running");
    assert_string_equal(got.spec, "{\"image\":\"debian\"}");
    store_cell_free(&got);
    assert_null(got.spec);
    store_cell_free(NULL);
    assert_int_equal(store_cell_get(f->s, NULL, "c3", &got, &err), 0);
    assert_string_equal(got.tenant, "other");
    assert_true(got.created == 1234);
    store_cell_free(&got);

    /* another tenant's id looks exactly like a missing one */
    assert_int_equal(store_cell_get(f->s, "acme", "c3", &got, &err), -1);
    assert_int_equal(err.code, ENOENT);
    char msg[sizeof err.message];
    snprintf(msg, sizeof msg, "%s", err.message);
    assert_int_equal(store_cell_get(f->s, "acme", "c4", &got, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_null(got.spec);

    store_cell *list = NULL;
    size_t n = 0;
    assert_int_equal(store_cell_list(f->s, "acme", &list, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, "c1");
    assert_string_equal(list[1].id, "c2");
    assert_string_equal(list[1].spec, "{}");
    store_cell_list_free(list, n);
    assert_int_equal(store_cell_list(f->s, NULL, &list, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(list[0].id, "c3"); /* oldest first */
    store_cell_list_free(list, n);
    assert_int_equal(store_cell_list(f->s, "nobody", &list, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_null(list);

    assert_int_equal(store_cell_count(f->s, "acme", &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(store_cell_count(f->s, NULL, &n, &err), 0);
    assert_int_equal(n, 3);

    assert_int_equal(store_cell_set_state(f->s, "c2", "running", &err), 0);
    assert_int_equal(store_cell_set_state(f->s, "c2", "bogus", &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_int_equal(store_cell_set_state(f->s, "nope", "running", &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(store_cell_set_spec(f->s, "c2", "{\"x\":1}", &err), 0);
    assert_int_equal(store_cell_set_spec(f->s, "nope", "{}", &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(store_cell_get(f->s, "acme", "c2", &got, &err), 0);
    assert_string_equal(got.state, "running");
    assert_string_equal(got.spec, "{\"x\":1}");
    store_cell_free(&got);

    n = 99;
    assert_int_equal(store_cells_mark_stopped(f->s, &n, &err), 0);
    assert_int_equal(n, 3); /* c1, c2, c3 */
    assert_int_equal(store_cells_mark_stopped(f->s, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_cell_get(f->s, NULL, "c1", &got, &err), 0);
    assert_string_equal(got.state, "stopped");
    store_cell_free(&got);

    assert_int_equal(store_cell_delete(f->s, "c1", &err), 0);
    assert_int_equal(store_cell_delete(f->s, "c1", &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(store_cell_count(f->s, "acme", &n, &err), 0);
    assert_int_equal(n, 1);
}

static void make_lane(store_lane *l, const char *id, const char *tenant, const char *name, uint64_t size,
                      const char *state)
{
    memset(l, 0, sizeof *l);
    snprintf(l->id, sizeof l->id, "%s", id);
    snprintf(l->tenant, sizeof l->tenant, "%s", tenant);
    snprintf(l->name, sizeof l->name, "%s", name);
    snprintf(l->image, sizeof l->image, "debian");
    snprintf(l->state, sizeof l->state, "%s", state);
    l->size = size;
}

static void lanes(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    store_lane l;
    make_lane(&l, "l-0000000000000001", "acme", "work", 1ull << 30, "ready");
    assert_int_equal(store_lane_insert(f->s, &l, &err), 0);
    assert_true(l.created > 0);
    make_lane(&l, "l-0000000000000002", "acme", "cache", 2ull << 30, "creating");
    assert_int_equal(store_lane_insert(f->s, &l, &err), 0);
    /* the same name in another tenant is another lane */
    make_lane(&l, "l-0000000000000003", "other", "work", 5, "deleting");
    assert_int_equal(store_lane_insert(f->s, &l, &err), 0);

    make_lane(&l, "l-0000000000000004", "acme", "work", 0, "ready");
    assert_int_equal(store_lane_insert(f->s, &l, &err), -1);
    assert_int_equal(err.code, EEXIST);
    assert_non_null(strstr(err.message, "work"));
    make_lane(&l, "l-0000000000000001", "acme", "fresh", 0, "ready");
    assert_int_equal(store_lane_insert(f->s, &l, &err), -1);
    assert_int_equal(err.code, EEXIST);
    make_lane(&l, "l-0000000000000005", "acme", "fresh", 0, "weird");
    assert_int_equal(store_lane_insert(f->s, &l, &err), -1);
    assert_int_equal(err.code, EINVAL);
    make_lane(&l, "l-0000000000000005", "acme", "fresh", UINT64_MAX, "ready");
    assert_int_equal(store_lane_insert(f->s, &l, &err), -1);
    assert_int_equal(err.code, ERANGE);

    store_lane got;
    assert_int_equal(store_lane_get(f->s, "acme", "work", &got, &err), 0);
    assert_string_equal(got.id, "l-0000000000000001");
    assert_string_equal(got.image, "debian");
    assert_true(got.size == 1ull << 30);
    assert_string_equal(got.state, "ready");
    assert_int_equal(store_lane_get(f->s, "other", "work", &got, &err), 0);
    assert_string_equal(got.id, "l-0000000000000003");
    assert_int_equal(store_lane_get(f->s, "acme", "none", &got, &err), -1);
    assert_int_equal(err.code, ENOENT);

    assert_int_equal(store_lane_get_by_id(f->s, "acme", "l-0000000000000002", &got, &err), 0);
    assert_string_equal(got.name, "cache");
    assert_int_equal(store_lane_get_by_id(f->s, "acme", "l-0000000000000003", &got, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(store_lane_get_by_id(f->s, NULL, "l-0000000000000003", &got, &err), 0);
    assert_string_equal(got.tenant, "other");

    store_lane *list = NULL;
    size_t n = 0;
    assert_int_equal(store_lane_list(f->s, "acme", &list, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].name, "work");
    assert_string_equal(list[1].name, "cache");
    free(list);
    assert_int_equal(store_lane_list(f->s, NULL, &list, &n, &err), 0);
    assert_int_equal(n, 3);
    free(list);

    uint64_t total = 0;
    assert_int_equal(store_lane_count(f->s, "acme", &n, &total, &err), 0);
    assert_int_equal(n, 2);
    assert_true(total == 3ull << 30);
    assert_int_equal(store_lane_count(f->s, NULL, &n, &total, &err), 0);
    assert_int_equal(n, 3);
    assert_true(total == (3ull << 30) + 5);
    assert_int_equal(store_lane_count(f->s, "nobody", &n, &total, &err), 0);
    assert_int_equal(n, 0);
    assert_true(total == 0);

    assert_int_equal(store_lanes_unfinished(f->s, &list, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, "l-0000000000000002");
    assert_string_equal(list[1].id, "l-0000000000000003");
    free(list);

    /* Compare and set: only from the state named; a second mover is ENOENT. */
    assert_int_equal(store_lane_transition(f->s, "l-0000000000000001", "ready", "deleting", &err), 0);
    assert_int_equal(store_lane_transition(f->s, "l-0000000000000001", "ready", "deleting", &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(store_lane_get(f->s, "acme", "work", &got, &err), 0);
    assert_string_equal(got.state, "deleting");
    assert_int_equal(store_lane_transition(f->s, "l-0000000000000001", "deleting", "ready", &err), 0);
    assert_int_equal(store_lane_transition(f->s, "l-0000000000000001", "ready", "gone", &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_int_equal(store_lane_transition(f->s, "l-nope", "ready", "deleting", &err), -1);
    assert_int_equal(err.code, ENOENT);

    assert_int_equal(store_lane_set_state(f->s, "l-0000000000000002", "ready", &err), 0);
    assert_int_equal(store_lane_set_state(f->s, "l-0000000000000002", "gone", &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_int_equal(store_lane_set_state(f->s, "l-nope", "ready", &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(store_lane_delete(f->s, "l-0000000000000003", &err), 0);
    assert_int_equal(store_lane_delete(f->s, "l-0000000000000003", &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(store_lanes_unfinished(f->s, &list, &n, &err), 0);
    assert_int_equal(n, 0);
    free(list);

    /* the name is free again once deleted */
    make_lane(&l, "l-0000000000000006", "other", "work", 0, "ready");
    assert_int_equal(store_lane_insert(f->s, &l, &err), 0);
}

static void reopen_keeps_data(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    char bearer[STORE_BEARER_SIZE];
    store_token info;
    assert_int_equal(store_token_create(f->s, "acme", "x", 1, 5, &info, bearer, sizeof bearer, &err), 0);
    store_cell c;
    make_cell(&c, "c1", "acme", "running", "{\"a\":[1,2]}");
    assert_int_equal(store_cell_insert(f->s, &c, &err), 0);
    store_lane l;
    make_lane(&l, "l-1", "acme", "work", 42, "creating");
    assert_int_equal(store_lane_insert(f->s, &l, &err), 0);
    store_tenant t = { .name = "acme", .max_cells = 1, .max_memory = 2, .max_lanes = 3, .max_disk = 4 };
    assert_int_equal(store_tenant_set_quota(f->s, &t, &err), 0);

    reopen(f);

    store_token got;
    assert_int_equal(store_token_check(f->s, bearer, &got, &err), 0);
    assert_true(got.admin);
    assert_int_equal(got.rate, 5);
    store_cell gc;
    assert_int_equal(store_cell_get(f->s, "acme", "c1", &gc, &err), 0);
    assert_string_equal(gc.spec, "{\"a\":[1,2]}");
    store_cell_free(&gc);
    store_lane gl;
    assert_int_equal(store_lane_get(f->s, "acme", "work", &gl, &err), 0);
    assert_true(gl.size == 42);
    store_tenant gt;
    assert_int_equal(store_tenant_get(f->s, "acme", &gt, &err), 0);
    assert_int_equal(gt.max_cells, 1);
    assert_true(gt.max_disk == 4);
}

static void newer_schema_refused(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    f->s = NULL;
    char path[128];
    snprintf(path, sizeof path, "%s/cell.db", f->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    cell_error err = { 0 };
    assert_int_equal(store_open(&f->s, f->dir, &err), -1);
    assert_int_equal(err.code, EPROTO);
    assert_null(f->s);
}

/* ---- audit ---------------------------------------------------------------- */

static void audit_add(store *s, const char *tenant, const char *action, int64_t ts_ms)
{
    json_t *r = json_pack("{s:s, s:s}", "tenant", tenant, "action", action);
    assert_non_null(r);
    if (ts_ms >= 0)
        json_object_set_new(r, "ts_ms", json_integer(ts_ms));
    assert_int_equal(store_audit_append(s, r), 0);
    json_decref(r);
}

static const char *action_at(json_t *arr, size_t i)
{
    return json_string_value(json_object_get(json_array_get(arr, i), "action"));
}

static void audit_basic(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    json_t *r = json_pack("{s:s, s:s, s:i}", "tenant", "acme", "action", "cell.create", "status", 201);
    assert_int_equal(store_audit_append(f->s, r), 0);
    /* the caller's object is untouched and still owned by the caller */
    assert_int_equal(json_object_size(r), 3);
    assert_null(json_object_get(r, "ts"));
    json_decref(r);

    json_t *arr = NULL;
    assert_int_equal(store_audit_read(f->s, NULL, 0, 0, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 1);
    json_t *got = json_array_get(arr, 0);
    assert_string_equal(json_string_value(json_object_get(got, "action")), "cell.create");
    assert_int_equal(json_integer_value(json_object_get(got, "status")), 201);
    const char *ts = json_string_value(json_object_get(got, "ts"));
    assert_non_null(ts);
    /* 2024-05-01T12:34:56.789Z */
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(ts[10], 'T');
    assert_int_equal(ts[19], '.');
    assert_int_equal(ts[23], 'Z');
    json_int_t ms = json_integer_value(json_object_get(got, "ts_ms"));
    assert_true(ms > 1600000000000ll);
    char want[8];
    snprintf(want, sizeof want, ".%03dZ", (int)(ms % 1000));
    assert_string_equal(ts + 19, want);
    json_decref(arr);

    /* invalid records */
    r = json_pack("{s:s}", "action", "x");
    assert_int_equal(store_audit_append(f->s, r), -1);
    assert_int_equal(errno, EINVAL);
    json_decref(r);
    r = json_pack("{s:i}", "tenant", 3);
    assert_int_equal(store_audit_append(f->s, r), -1);
    json_decref(r);
    r = json_array();
    assert_int_equal(store_audit_append(f->s, r), -1);
    json_decref(r);
    assert_int_equal(store_audit_append(f->s, NULL), -1);
    /* a newline inside a value stays escaped: still one line */
    r = json_pack("{s:s, s:s}", "tenant", "acme", "action", "a\nb");
    assert_int_equal(store_audit_append(f->s, r), 0);
    json_decref(r);
    assert_int_equal(store_audit_read(f->s, "acme", 0, 0, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(action_at(arr, 1), "a\nb");
    json_decref(arr);
}

static void audit_filters(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    char action[16];
    for (int i = 0; i < 10; i++) {
        snprintf(action, sizeof action, "a%d", i);
        audit_add(f->s, i % 2 ? "odd" : "even", action, 1000 + i);
    }
    json_t *arr = NULL;
    assert_int_equal(store_audit_read(f->s, NULL, 0, 0, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 10);
    assert_string_equal(action_at(arr, 0), "a0");
    assert_string_equal(action_at(arr, 9), "a9");
    json_decref(arr);

    /* tenant filter, newest `limit`, oldest first */
    assert_int_equal(store_audit_read(f->s, "odd", 0, 3, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(action_at(arr, 0), "a5");
    assert_string_equal(action_at(arr, 1), "a7");
    assert_string_equal(action_at(arr, 2), "a9");
    json_decref(arr);

    /* since */
    assert_int_equal(store_audit_read(f->s, "even", 1004, 0, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(action_at(arr, 0), "a4");
    assert_string_equal(action_at(arr, 2), "a8");
    json_decref(arr);
    assert_int_equal(store_audit_read(f->s, "even", 5000, 0, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
    assert_int_equal(store_audit_read(f->s, "nobody", 0, 5, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);

    /* records far older than `since` end the backward scan, even if an
     * out-of-order newer one lies before them */
    store_close(f->s);
    f->s = NULL;
    char path[128];
    snprintf(path, sizeof path, "%s/audit.log", f->dir);
    unlink(path);
    assert_int_equal(store_open(&f->s, f->dir, &err), 0);
    audit_add(f->s, "t", "late", 10000000);
    audit_add(f->s, "t", "old", 1000);
    audit_add(f->s, "t", "new", 10000001);
    assert_int_equal(store_audit_read(f->s, "t", 10000000, 0, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 1);
    assert_string_equal(action_at(arr, 0), "new");
    json_decref(arr);
}

static void audit_torn_line(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    audit_add(f->s, "acme", "one", -1);
    audit_add(f->s, "acme", "two", -1);
    char path[128];
    snprintf(path, sizeof path, "%s/audit.log", f->dir);
    /* a crash mid-line, plus some garbage and a blank line earlier */
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    const char torn[] = "{\"tenant\":\"acme\",\"action\":\"thr";
    assert_int_equal(write(fd, torn, sizeof torn - 1), (ssize_t)(sizeof torn - 1));
    close(fd);

    json_t *arr = NULL;
    assert_int_equal(store_audit_read(f->s, "acme", 0, 0, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(action_at(arr, 1), "two");
    json_decref(arr);

    /* after a restart the next record starts its own line */
    reopen(f);
    audit_add(f->s, "acme", "four", -1);
    assert_int_equal(store_audit_read(f->s, "acme", 0, 2, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(action_at(arr, 0), "two");
    assert_string_equal(action_at(arr, 1), "four");
    json_decref(arr);

    /* non-JSON lines and lines without tenant/ts_ms are skipped */
    fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    const char junk[] = "not json\n\n[1,2]\n{\"tenant\":\"acme\"}\n";
    assert_int_equal(write(fd, junk, sizeof junk - 1), (ssize_t)(sizeof junk - 1));
    close(fd);
    audit_add(f->s, "acme", "five", -1);
    assert_int_equal(store_audit_read(f->s, NULL, 0, 0, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 4);
    assert_string_equal(action_at(arr, 3), "five");
    json_decref(arr);
}

static void audit_large_file(void **state)
{
    /* Many chunks' worth of records: the backward reader must stitch lines
     * across chunk boundaries. */
    fixture *f = *state;
    cell_error err = { 0 };
    char pad[593], action[620];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < 500; i++) {
        snprintf(action, sizeof action, "n%05d-%s", i, pad);
        audit_add(f->s, i % 3 ? "a" : "b", action, 1000 + i);
    }
    json_t *arr = NULL;
    assert_int_equal(store_audit_read(f->s, NULL, 0, 0, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 500);
    for (size_t i = 0; i < 500; i++) {
        char want[8];
        snprintf(want, sizeof want, "n%05zu", i);
        assert_memory_equal(action_at(arr, i), want, 6);
        assert_int_equal(strlen(action_at(arr, i)), 7 + sizeof pad - 1);
    }
    json_decref(arr);
    assert_int_equal(store_audit_read(f->s, "b", 0, 10, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), 10);
    assert_memory_equal(action_at(arr, 9), "n00498", 6);
    json_decref(arr);

    /* an oversized record is refused */
    size_t big = STORE_AUDIT_MAX_LINE + 10;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, 'y', big - 1);
    huge[big - 1] = '\0';
    json_t *r = json_pack("{s:s, s:s}", "tenant", "a", "action", huge);
    assert_int_equal(store_audit_append(f->s, r), -1);
    assert_int_equal(errno, EMSGSIZE);
    json_decref(r);
    free(huge);
}

static int64_t int_at(json_t *arr, size_t i, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(json_array_get(arr, i), key));
}

static void audit_rotation(void **state)
{
    /* Past max_size audit.log moves to .1, .1 to .2; only `keep` old files
     * stay, and reads, filters and cursors span them. */
    fixture *f = *state;
    cell_error err = { 0 };
    store_audit_set_rotation(f->s, 64 << 10, 2);
    char pad[500], action[540], path[128];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < 400; i++) {
        snprintf(action, sizeof action, "n%05d-%s", i, pad);
        audit_add(f->s, i % 2 ? "odd" : "even", action, -1);
    }
    struct stat st;
    for (int n = 0; n <= 2; n++) {
        snprintf(path, sizeof path, n ? "%s/audit.log.%d" : "%s/audit.log", f->dir, n);
        assert_int_equal(stat(path, &st), 0);
        assert_true(st.st_size <= (64 << 10) + 600);
        assert_int_equal(st.st_mode & 0777, 0600);
    }
    snprintf(path, sizeof path, "%s/audit.log.3", f->dir);
    assert_int_equal(stat(path, &st), -1);

    json_t *arr = NULL;
    assert_int_equal(store_audit_read(f->s, NULL, 0, 0, &arr, &err), 0);
    size_t n = json_array_size(arr);
    assert_true(n > 200 && n < 400);    /* the oldest file was dropped */
    assert_memory_equal(action_at(arr, n - 1), "n00399", 6);
    for (size_t i = 1; i < n; i++)
        assert_int_equal(int_at(arr, i, "seq"), int_at(arr, i - 1, "seq") + 1);
    json_decref(arr);

    /* One tenant's pages, 50 at a time, newest first, across the files:
     * every "odd" record once, never an "even" one. */
    store_audit_query q = { .tenant = "odd", .limit = 50 };
    size_t total = 0;
    int64_t last_seq = INT64_MAX;
    for (int page = 0; page < 20; page++) {
        uint64_t next = 0;
        assert_int_equal(store_audit_find(f->s, &q, &arr, &next, &err), 0);
        for (size_t i = json_array_size(arr); i > 0; i--) {
            json_t *rec = json_array_get(arr, i - 1);
            assert_string_equal(json_string_value(json_object_get(rec, "tenant")), "odd");
            assert_true(int_at(arr, i - 1, "seq") < last_seq);
            last_seq = int_at(arr, i - 1, "seq");
            total++;
        }
        json_decref(arr);
        if (!next)
            break;
        q.before_seq = next;
    }
    assert_true(total > 100 && total < 200);

    /* Sequence numbers go on after a restart. */
    reopen(f);
    audit_add(f->s, "odd", "after", -1);
    assert_int_equal(store_audit_read(f->s, "odd", 0, 1, &arr, &err), 0);
    assert_int_equal(int_at(arr, 0, "seq"), 401);
    json_decref(arr);
}

static void net_flood(store *s, const char *cell_id, int n, int distinct)
{
    for (int i = 0; i < n; i++) {
        char src[32], dst[32];
        snprintf(src, sizeof src, "10.0.0.2:%d", 1024 + i);
        snprintf(dst, sizeof dst, "192.0.2.%d:443", distinct ? i % 250 : 1);
        json_t *r = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i}", "tenant", "t", "kind", "net", "cell", cell_id,
                              "verdict", "deny", "src", src, "dst", distinct ? dst : "192.0.2.1:443",
                              "durationMs", i);
        assert_int_equal(store_audit_append(s, r), 0);
        json_decref(r);
    }
}

/* Records written for a cell, and how many events they stand for. */
static void tally(store *s, const char *cell_id, size_t *records, uint64_t *events)
{
    json_t *arr = NULL;
    cell_error err = { 0 };
    store_audit_query q = { .tenant = "t", .cell = cell_id };
    assert_int_equal(store_audit_find(s, &q, &arr, NULL, &err), 0);
    *records = json_array_size(arr);
    *events = 0;
    size_t i;
    json_t *rec;
    json_array_foreach(arr, i, rec) {
        json_t *count = json_object_get(rec, "count"), *dropped = json_object_get(rec, "dropped");
        *events += dropped ? (uint64_t)json_integer_value(dropped) : count ? (uint64_t)json_integer_value(count) : 1;
    }
    json_decref(arr);
}

static void audit_flood_is_coalesced(void **state)
{
    /* A cell denied 5000 times writes a bounded number of records, and the
     * counts in them still add up to every event. */
    fixture *f = *state;
    size_t records;
    uint64_t events;
    net_flood(f->s, "c1", 5000, 0);
    net_flood(f->s, "c2", 5000, 1);
    tally(f->s, "c1", &records, &events);
    assert_true(records <= 4 * (64 + 64 + 1));
    assert_int_equal(events, 5000);
    tally(f->s, "c2", &records, &events);
    assert_true(records <= 4 * (64 + 64 + 1));
    assert_int_equal(events, 5000);
    /* Requests are not coalesced (the token's rate bounds them). */
    for (int i = 0; i < 200; i++) {
        json_t *r = json_pack("{s:s, s:s, s:s}", "tenant", "t", "kind", "request", "cell", "c3");
        assert_int_equal(store_audit_append(f->s, r), 0);
        json_decref(r);
    }
    tally(f->s, "c3", &records, &events);
    assert_int_equal(records, 200);
}

/* ---- concurrency ------------------------------------------------------------ */

#define THREADS 6
#define ROUNDS  40

typedef struct worker {
    store *s;
    int    no;
    int    failures;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    char tenant[16], id[40], bearer[STORE_BEARER_SIZE];
    snprintf(tenant, sizeof tenant, "t%d", w->no % 3);
    for (int i = 0; i < ROUNDS; i++) {
        cell_error err = { 0 };
        store_cell c = { 0 };
        snprintf(c.id, sizeof c.id, "w%d-c%d", w->no, i);
        snprintf(c.tenant, sizeof c.tenant, "%s", tenant);
        snprintf(c.state, sizeof c.state, "running");
        c.spec = "{}";
        if (store_cell_insert(w->s, &c, &err) < 0)
            w->failures++;
        store_cell got;
        if (store_cell_get(w->s, tenant, c.id, &got, &err) < 0)
            w->failures++;
        store_cell_free(&got);
        store_lane l = { 0 };
        snprintf(l.id, sizeof l.id, "l-w%d-%d", w->no, i);
        snprintf(l.tenant, sizeof l.tenant, "%s", tenant);
        snprintf(l.name, sizeof l.name, "lane-w%d-%d", w->no, i);
        snprintf(l.image, sizeof l.image, "debian");
        snprintf(l.state, sizeof l.state, "ready");
        l.size = 1;
        if (store_lane_insert(w->s, &l, &err) < 0)
            w->failures++;
        store_cell *list;
        size_t n;
        if (store_cell_list(w->s, tenant, &list, &n, &err) < 0)
            w->failures++;
        else
            store_cell_list_free(list, n);
        if (i % 8 == 0) {
            store_token info;
            if (store_token_create(w->s, tenant, "w", 0, 0, &info, bearer, sizeof bearer, &err) < 0 ||
                store_token_check(w->s, bearer, NULL, &err) < 0)
                w->failures++;
        }
        json_t *r = json_pack("{s:s, s:s}", "tenant", tenant, "action", c.id);
        if (store_audit_append(w->s, r) < 0)
            w->failures++;
        json_decref(r);
        snprintf(id, sizeof id, "%s", c.id);
        if (i % 2 && store_cell_set_state(w->s, id, "stopped", &err) < 0)
            w->failures++;
        /* The daemon's reaper syncs unsynced cell records while requests write. */
        if (i % 4 == 0 && store_flush(w->s) < 0)
            w->failures++;
    }
    return NULL;
}

static void concurrent(void **state)
{
    fixture *f = *state;
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){ .s = f->s, .no = i };
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
    cell_error err = { 0 };
    size_t n;
    uint64_t total;
    assert_int_equal(store_cell_count(f->s, NULL, &n, &err), 0);
    assert_int_equal(n, THREADS * ROUNDS);
    assert_int_equal(store_lane_count(f->s, NULL, &n, &total, &err), 0);
    assert_int_equal(n, THREADS * ROUNDS);
    assert_true(total == THREADS * ROUNDS);
    assert_int_equal(store_token_count(f->s, &n, &err), 0);
    assert_int_equal(n, THREADS * ((ROUNDS + 7) / 8));
    assert_int_equal(store_cells_mark_stopped(f->s, &n, &err), 0);
    assert_int_equal(n, THREADS * ROUNDS / 2);
    json_t *arr;
    assert_int_equal(store_audit_read(f->s, NULL, 0, 0, &arr, &err), 0);
    assert_int_equal(json_array_size(arr), THREADS * ROUNDS); /* no line torn or glued */
    json_decref(arr);
}

/* A second connection (as the CLI would open) on the same files. */
static void two_handles(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    store *other = NULL;
    assert_int_equal(store_open(&other, f->dir, &err), 0);
    assert_int_equal(store_tenant_ensure(other, "cli", &err), 0);
    store_tenant t;
    assert_int_equal(store_tenant_get(f->s, "cli", &t, &err), 0);
    store_close(other);
    store_close(NULL);
}

/* ---- secrets ---------------------------------------------------------------- */

static void secrets(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    static const char v1[] = "sk-live-1234567890";
    assert_int_equal(store_secret_put(f->s, "acme", "OPENAI_KEY", v1, strlen(v1), &err), 0);
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_secret_get(f->s, "acme", "OPENAI_KEY", &val, &len, &err), 0);
    assert_int_equal(len, strlen(v1));
    assert_memory_equal(val, v1, len);
    assert_int_equal(val[len], '\0');
    free(val);

    /* Another tenant sees nothing, and cannot delete it. */
    assert_int_equal(store_secret_get(f->s, "other", "OPENAI_KEY", &val, &len, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_null(val);
    assert_int_equal(store_secret_delete(f->s, "other", "OPENAI_KEY", &err), -1);
    assert_int_equal(err.code, ENOENT);
    store_secret_info *list = NULL;
    size_t n = 7;
    assert_int_equal(store_secret_list(f->s, "other", &list, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_null(list);

    /* Replace: a new value and a new created time; binary values are kept exactly. */
    assert_int_equal(store_secret_list(f->s, "acme", &list, &n, &err), 0);
    assert_int_equal(n, 1);
    int64_t first = list[0].created;
    assert_true(first > 0);
    free(list);
    const unsigned char bin[] = { 0, 1, 2, 0xff, 0, 'x' };
    usleep(2000);
    assert_int_equal(store_secret_put(f->s, "acme", "OPENAI_KEY", bin, sizeof bin, &err), 0);
    assert_int_equal(store_secret_get(f->s, "acme", "OPENAI_KEY", &val, &len, &err), 0);
    assert_int_equal(len, sizeof bin);
    assert_memory_equal(val, bin, sizeof bin);
    free(val);
    assert_int_equal(store_secret_put(f->s, "acme", "b.token", "x", 1, &err), 0);
    assert_int_equal(store_secret_put(f->s, "other", "OPENAI_KEY", "theirs", 6, &err), 0);
    assert_int_equal(store_secret_list(f->s, "acme", &list, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].name, "OPENAI_KEY");   /* sorted by name (byte order) */
    assert_true(list[0].created > first);
    assert_string_equal(list[1].name, "b.token");
    free(list);

    /* Limits: names as util_valid_name(), values 1..64 KiB. */
    const char *bad_names[] = { "", ".x", "-x", "a/b", "a b", "a\nb",
                                "x234567890123456789012345678901234567890123456789012345678901234" };
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        assert_int_equal(store_secret_put(f->s, "acme", bad_names[i], "v", 1, &err), -1);
        assert_int_equal(err.code, EINVAL);
    }
    assert_int_equal(store_secret_put(f->s, "bad/tenant", "n", "v", 1, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_int_equal(store_secret_put(f->s, "acme", "empty", "", 0, &err), -1);
    assert_int_equal(err.code, EINVAL);
    char *big = malloc(STORE_SECRET_MAX_VALUE + 1);
    assert_non_null(big);
    memset(big, 's', STORE_SECRET_MAX_VALUE + 1);
    assert_int_equal(store_secret_put(f->s, "acme", "big", big, STORE_SECRET_MAX_VALUE + 1, &err), -1);
    assert_int_equal(err.code, E2BIG);
    assert_null(strstr(err.message, "sss"));            /* messages never carry the value */
    assert_int_equal(store_secret_put(f->s, "acme", "big", big, STORE_SECRET_MAX_VALUE, &err), 0);
    assert_int_equal(store_secret_get(f->s, "acme", "big", &val, &len, &err), 0);
    assert_int_equal(len, STORE_SECRET_MAX_VALUE);
    assert_memory_equal(val, big, len);
    free(val);
    free(big);

    /* Delete; survives a reopen otherwise. */
    assert_int_equal(store_secret_delete(f->s, "acme", "b.token", &err), 0);
    assert_int_equal(store_secret_delete(f->s, "acme", "b.token", &err), -1);
    assert_int_equal(err.code, ENOENT);
    reopen(f);
    assert_int_equal(store_secret_get(f->s, "acme", "b.token", &val, &len, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(store_secret_get(f->s, "other", "OPENAI_KEY", &val, &len, &err), 0);
    assert_int_equal(len, 6);
    assert_memory_equal(val, "theirs", 6);
    free(val);
}

/* A version 1 database (before secrets) is migrated in place, data kept. */
static void migrate_from_v1(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    assert_int_equal(store_tenant_ensure(f->s, "old", &err), 0);
    store_close(f->s);
    f->s = NULL;
    char path[128];
    snprintf(path, sizeof path, "%s/cell.db", f->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE secrets; DROP TABLE secrets_key; ALTER TABLE tenants DROP COLUMN max_pids;"
                                      "DROP TABLE runs; PRAGMA user_version = 1", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(store_open(&f->s, f->dir, &err), 0);
    load_key(f);
    store_tenant t;
    assert_int_equal(store_tenant_get(f->s, "old", &t, &err), 0);
    assert_int_equal(t.max_pids, 32768);      /* migration 3's value for older rows */
    assert_int_equal(store_secret_put(f->s, "old", "k", "v", 1, &err), 0);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), STORE_SCHEMA_VERSION);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* ---- sealed secrets ---------------------------------------------------------- */

/* Whether `needle` occurs in the file dir/name (a missing file holds nothing). */
static int file_contains(const char *dir, const char *name, const char *needle)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return 0;
    static char buf[8 << 20];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    return memmem(buf, n, needle, strlen(needle)) != NULL;
}

static void raw_sql(fixture *f, const char *sql)
{
    char path[128];
    snprintf(path, sizeof path, "%s/cell.db", f->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

static void secrets_sealed_at_rest(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    static const char v[] = "sk-MARKER-4f1d2c3b-at-rest";
    assert_int_equal(store_secret_put(f->s, "acme", "K", v, strlen(v), &err), 0);
    mode_is_0600(f->dir, "secrets.key");
    /* Neither the database nor its WAL hold the value, while open or after. */
    assert_false(file_contains(f->dir, "cell.db", v));
    assert_false(file_contains(f->dir, "cell.db-wal", v));
    reopen(f);
    assert_false(file_contains(f->dir, "cell.db", v));
    assert_false(file_contains(f->dir, "cell.db-wal", v));
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_secret_get(f->s, "acme", "K", &val, &len, &err), 0);
    assert_memory_equal(val, v, strlen(v));
    free(val);
}

/* A row moved to another tenant or renamed does not open: fail closed. */
static void secrets_moved_row(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    assert_int_equal(store_secret_put(f->s, "victim", "TOKEN", "victim-value", 12, &err), 0);
    assert_int_equal(store_tenant_ensure(f->s, "thief", &err), 0);
    raw_sql(f, "UPDATE secrets SET tenant = 'thief' WHERE tenant = 'victim'");
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_secret_get(f->s, "thief", "TOKEN", &val, &len, &err), -1);
    assert_int_equal(err.code, EBADMSG);
    assert_null(val);
    assert_null(strstr(err.message, "victim-value"));
    raw_sql(f, "UPDATE secrets SET tenant = 'victim', name = 'OTHER' WHERE tenant = 'thief'");
    assert_int_equal(store_secret_get(f->s, "victim", "OTHER", &val, &len, &err), -1);
    assert_int_equal(err.code, EBADMSG);
    /* Marking it unsealed hands out no plaintext either. */
    raw_sql(f, "UPDATE secrets SET name = 'TOKEN', sealed = 0");
    assert_int_equal(store_secret_get(f->s, "victim", "TOKEN", &val, &len, &err), -1);
    assert_int_equal(err.code, EBADMSG);
    assert_null(val);
}

static void secrets_key_checks(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    assert_int_equal(store_secret_put(f->s, "acme", "K", "value", 5, &err), 0);
    char key[128], other[128];
    snprintf(key, sizeof key, "%s/secrets.key", f->dir);
    snprintf(other, sizeof other, "%s/other.key", f->dir);
    store_close(f->s);
    assert_int_equal(store_open(&f->s, f->dir, &err), 0);
    /* No key loaded: nothing is stored or read. */
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_secret_put(f->s, "acme", "K2", "v", 1, &err), -1);
    assert_int_equal(err.code, EACCES);
    assert_int_equal(store_secret_get(f->s, "acme", "K", &val, &len, &err), -1);
    assert_int_equal(err.code, EACCES);
    /* A missing key with sealed rows is refused, not replaced. */
    assert_int_equal(store_secrets_key(f->s, other, NULL, &err), -1);
    assert_int_equal(err.code, ENOKEY);
    assert_non_null(strstr(err.message, "missing"));
    assert_int_equal(access(other, F_OK), -1);
    /* Another key (right size and mode) is told apart from the right one. */
    unsigned char wrong[STORE_SECRETS_KEY_SIZE];
    memset(wrong, 7, sizeof wrong);
    int fd = open(other, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, wrong, sizeof wrong), (ssize_t)sizeof wrong);
    close(fd);
    assert_int_equal(store_secrets_key(f->s, other, NULL, &err), -1);
    assert_int_equal(err.code, EKEYREJECTED);
    assert_non_null(strstr(err.message, "wrong key"));
    assert_int_equal(store_secret_get(f->s, "acme", "K", &val, &len, &err), -1);
    /* Readable by others, or the wrong size: refused. */
    assert_int_equal(chmod(key, 0644), 0);
    assert_int_equal(store_secrets_key(f->s, key, NULL, &err), -1);
    assert_int_equal(err.code, EPERM);
    assert_int_equal(chmod(key, 0600), 0);
    assert_int_equal(truncate(other, 16), 0);
    assert_int_equal(store_secrets_key(f->s, other, NULL, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_int_equal(store_secrets_key(f->s, key, NULL, &err), 0);
    assert_int_equal(store_secret_get(f->s, "acme", "K", &val, &len, &err), 0);
    assert_memory_equal(val, "value", 5);
    free(val);
}

/* Rows an older version stored in plain text are sealed when the key loads,
 * and their plaintext leaves the database file and the WAL. */
static void secrets_plain_rows_sealed(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    static const char v[] = "plain-MARKER-9a8b7c6d";
    assert_int_equal(store_tenant_ensure(f->s, "acme", &err), 0);
    store_close(f->s);
    f->s = NULL;
    raw_sql(f, "INSERT INTO secrets (tenant, name, value, sealed, created) "
               "VALUES ('acme', 'OLD', CAST('plain-MARKER-9a8b7c6d' AS BLOB), 0, 1)");
    assert_true(file_contains(f->dir, "cell.db", v) || file_contains(f->dir, "cell.db-wal", v));
    assert_int_equal(store_open(&f->s, f->dir, &err), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/secrets.key", f->dir);
    size_t sealed = 0;
    if (store_secrets_key(f->s, path, &sealed, &err) < 0)
        fail_msg("store_secrets_key: %s", err.message);
    assert_int_equal(sealed, 1);
    assert_false(file_contains(f->dir, "cell.db", v));
    assert_false(file_contains(f->dir, "cell.db-wal", v));
    char *val = NULL;
    size_t len = 0;
    assert_int_equal(store_secret_get(f->s, "acme", "OLD", &val, &len, &err), 0);
    assert_int_equal(len, strlen(v));
    assert_memory_equal(val, v, len);
    free(val);
}

/* New tenants get the quotas store_tenant_defaults() set, pids included. */
static void tenant_defaults(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    store_tenant d = { .max_cells = 3, .max_memory = 1ull << 30, .max_lanes = 2, .max_disk = 5ull << 30, .max_pids = 777 };
    store_tenant_defaults(f->s, &d);
    assert_int_equal(store_tenant_ensure(f->s, "fresh", &err), 0);
    store_tenant t;
    assert_int_equal(store_tenant_get(f->s, "fresh", &t, &err), 0);
    assert_int_equal(t.max_cells, 3);
    assert_int_equal(t.max_memory, 1ull << 30);
    assert_int_equal(t.max_pids, 777);
    t.max_pids = 100;
    assert_int_equal(store_tenant_set_quota(f->s, &t, &err), 0);
    assert_int_equal(store_tenant_get(f->s, "fresh", &t, &err), 0);
    assert_int_equal(t.max_pids, 100);
}

/* Runs: insert, update, list (oldest first, without results), get (with
 * it), delete, and a restart's mark_failed of those not finished. */
static void runs(void **state)
{
    fixture *f = *state;
    cell_error err = { 0 };
    store_run r = { .created = 1000, .spec = "{\"agent\":\"shell\"}" };
    snprintf(r.id, sizeof r.id, "00000000000000a1");
    snprintf(r.tenant, sizeof r.tenant, "acme");
    snprintf(r.token, sizeof r.token, "0123456789ab");
    snprintf(r.agent, sizeof r.agent, "shell");
    snprintf(r.status, sizeof r.status, "running");
    assert_int_equal(store_run_insert(f->s, &r, &err), 0);
    assert_int_equal(store_run_insert(f->s, &r, &err), -1);
    assert_int_equal(err.code, EEXIST);
    store_run bad = r;
    snprintf(bad.id, sizeof bad.id, "../x");
    assert_int_equal(store_run_insert(f->s, &bad, &err), -1);
    assert_int_equal(err.code, EINVAL);
    snprintf(r.id, sizeof r.id, "00000000000000a2");
    r.created = 2000;
    snprintf(r.status, sizeof r.status, "queued");
    assert_int_equal(store_run_insert(f->s, &r, &err), 0);
    snprintf(r.status, sizeof r.status, "succeeded");
    snprintf(r.cell, sizeof r.cell, "abcdef012345");
    r.result = "{\"exitCode\":0,\"diff\":\"x\"}";
    r.timings = "{\"finishedMs\":3000}";
    r.finished = 3000;
    assert_int_equal(store_run_update(f->s, &r, &err), 0);

    store_run *all = NULL;
    size_t n = 0;
    assert_int_equal(store_run_list(f->s, &all, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(all[0].id, "00000000000000a1");
    assert_string_equal(all[1].status, "succeeded");
    assert_null(all[1].result);
    assert_string_equal(all[1].timings, "{\"finishedMs\":3000}");
    store_run_list_free(all, n);

    store_run got;
    assert_int_equal(store_run_get(f->s, "00000000000000a2", &got, &err), 0);
    assert_string_equal(got.result, "{\"exitCode\":0,\"diff\":\"x\"}");
    assert_string_equal(got.cell, "abcdef012345");
    assert_int_equal(got.finished, 3000);
    store_run_free(&got);

    size_t marked = 0;
    assert_int_equal(store_runs_mark_failed(f->s, "{\"error\":{\"type\":\"daemon_restarted\"}}", &marked, &err), 0);
    assert_int_equal(marked, 1);
    reopen(f);
    assert_int_equal(store_run_get(f->s, "00000000000000a1", &got, &err), 0);
    assert_string_equal(got.status, "failed");
    assert_non_null(strstr(got.result, "daemon_restarted"));
    assert_true(got.finished > 0);
    store_run_free(&got);

    assert_int_equal(store_run_delete(f->s, "00000000000000a1", &err), 0);
    assert_int_equal(store_run_delete(f->s, "00000000000000a1", &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(store_run_get(f->s, "00000000000000a1", &got, &err), -1);
    assert_int_equal(err.code, ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(files_are_private, setup, teardown),
        cmocka_unit_test_setup_teardown(tenants, setup, teardown),
        cmocka_unit_test_setup_teardown(tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(cells, setup, teardown),
        cmocka_unit_test_setup_teardown(lanes, setup, teardown),
        cmocka_unit_test_setup_teardown(runs, setup, teardown),
        cmocka_unit_test_setup_teardown(reopen_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(audit_basic, setup, teardown),
        cmocka_unit_test_setup_teardown(audit_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(audit_torn_line, setup, teardown),
        cmocka_unit_test_setup_teardown(audit_large_file, setup, teardown),
        cmocka_unit_test_setup_teardown(audit_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(audit_flood_is_coalesced, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(two_handles, setup, teardown),
        cmocka_unit_test_setup_teardown(secrets, setup, teardown),
        cmocka_unit_test_setup_teardown(migrate_from_v1, setup, teardown),
        cmocka_unit_test_setup_teardown(secrets_sealed_at_rest, setup, teardown),
        cmocka_unit_test_setup_teardown(secrets_moved_row, setup, teardown),
        cmocka_unit_test_setup_teardown(secrets_key_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(secrets_plain_rows_sealed, setup, teardown),
        cmocka_unit_test_setup_teardown(tenant_defaults, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
