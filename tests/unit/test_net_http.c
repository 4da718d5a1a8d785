/* test_net_http.c: the pure parts of HTTP enforcement: rule checks (methods,
 * path prefixes, canonical paths), Host/SNI matching, header middleware. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>

#include "net/http.h"

static void name_and_host_matching(void **state)
{
    (void)state;
    assert_true(net_http_name_equal("api.example.com", "API.Example.COM"));
    assert_true(net_http_name_equal("api.example.com.", "api.example.com"));
    assert_false(net_http_name_equal("api.example.com", "example.com"));
    assert_false(net_http_name_equal("xapi.example.com", "api.example.com"));
    assert_false(net_http_name_equal(NULL, "api.example.com"));
    assert_false(net_http_name_equal("", ""));

    assert_true(net_http_host_matches("api.example.com", "api.example.com"));
    assert_true(net_http_host_matches(" Api.Example.com:443 ", "api.example.com"));
    assert_true(net_http_host_matches("api.example.com.:8080", "api.example.com"));
    assert_false(net_http_host_matches("api.example.com:", "api.example.com"));
    assert_false(net_http_host_matches("api.example.com:44x", "api.example.com"));
    assert_false(net_http_host_matches("api.example.com:443:1", "api.example.com"));
    assert_false(net_http_host_matches("evil.test", "api.example.com"));
    assert_false(net_http_host_matches("api.example.com@evil.test", "api.example.com"));
    assert_false(net_http_host_matches("", "api.example.com"));
    assert_false(net_http_host_matches(NULL, "api.example.com"));
}

static char *get_methods[] = { "GET", "HEAD", NULL };
static char *v1_paths[] = { "/v1/", "/health", NULL };

static void rule_checks(void **state)
{
    (void)state;
    net_http_rule any = { 0 };
    assert_null(net_http_check(&any, "DELETE", "/anything/../x"));
    assert_non_null(net_http_check(&any, "CONNECT", "/"));

    net_http_rule r = { .methods = get_methods, .paths = v1_paths };
    assert_null(net_http_check(&r, "GET", "/v1/models"));
    assert_null(net_http_check(&r, "HEAD", "/health"));
    assert_null(net_http_check(&r, "GET", "/healthz"));       /* prefixes are literal */
    assert_string_equal(net_http_check(&r, "POST", "/v1/models"), "method not allowed by the rule");
    assert_string_equal(net_http_check(&r, "GET", "/v2/models"), "path not allowed by the rule");
    assert_string_equal(net_http_check(&r, "GET", "/v1"), "path not allowed by the rule");
    assert_string_equal(net_http_check(&r, "GET", "*"), "path not allowed by the rule");
    /* A prefix cannot be left through the upstream's path resolution. */
    const char *bad[] = { "/v1/../admin", "/v1/./x", "/v1/..", "/v1/%2e%2e/admin", "/v1/%2E./admin",
                          "/v1%2fadmin", "/v1/..\\admin", "/v1/%5c", NULL };
    for (const char **b = bad; *b; b++) {
        const char *why = net_http_check(&r, "GET", *b);
        if (!why || !strstr(why, "canonical"))
            print_error("path %s: %s\n", *b, why ? why : "(allowed)");
        assert_non_null(why);
        assert_non_null(strstr(why, "canonical"));
    }
    assert_null(net_http_check(&r, "GET", "/v1/a.b/..c/.d"));
}

/* A secret store for the tests: TOKEN and a value with a newline. */
static int fake_secret(void *user, const char *name, char **value, size_t *len)
{
    int *calls = user;
    (*calls)++;
    const char *v = strcmp(name, "TOKEN") == 0 ? "s3cr3t" : strcmp(name, "NL") == 0 ? "a\r\nX-Evil: 1" : NULL;
    if (!v)
        return -1;
    *value = strdup(v);
    *len = strlen(v);
    return 0;
}

static net_header set_hdrs[] = {
    { "Authorization", "Bearer ${secret:TOKEN}" },
    { "X-Both", "${secret:TOKEN}-${secret:TOKEN}!" },
    { "X-Plain", "literal" },
};
static char *remove_hdrs[] = { "X-Remove-Me", "Cookie", NULL };

static void head_middleware(void **state)
{
    (void)state;
    net_http_rule r = { .set = set_hdrs, .n_set = 3, .remove = remove_hdrs };
    net_header in[] = {
        { "Host", "api.test" },       { "authorization", "Bearer from-the-cell" }, { "x-remove-me", "1" },
        { "COOKIE", "a=b" },          { "Connection", "keep-alive" },             { "Keep-Alive", "300" },
        { "Transfer-Encoding", "chunked" }, { "Content-Length", "99" },          { "Expect", "100-continue" },
        { "Upgrade", "websocket" },   { "Accept", "*/*" },                         { "X-Empty", "" },
    };
    int calls = 0;
    char *out = NULL, missing[64];
    size_t len = 0;
    assert_int_equal(net_http_build_head(&r, "POST", "/v1/x?q=1", in, sizeof in / sizeof in[0],
                                         "Content-Length: 5\r\n", 0, fake_secret, &calls, &out, &len, missing,
                                         sizeof missing),
                     0);
    assert_int_equal(calls, 3);
    assert_int_equal(len, strlen(out));
    const char *want = "POST /v1/x?q=1 HTTP/1.1\r\n"
                       "Host: api.test\r\n"
                       "Accept: */*\r\n"
                       "X-Empty: \r\n"
                       "Authorization: Bearer s3cr3t\r\n"
                       "X-Both: s3cr3t-s3cr3t!\r\n"
                       "X-Plain: literal\r\n"
                       "Content-Length: 5\r\n"
                       "Connection: close\r\n\r\n";
    assert_string_equal(out, want);
    free(out);

    /* Keep-alive (a pooled upstream connection): HTTP/1.1's default, so
     * no Connection header at all; the cell's own is still dropped. */
    assert_int_equal(net_http_build_head(&r, "GET", "/", in, 5, "", 1, fake_secret, &calls, &out, &len, missing,
                                         sizeof missing),
                     0);
    assert_string_equal(out, "GET / HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer s3cr3t\r\n"
                             "X-Both: s3cr3t-s3cr3t!\r\nX-Plain: literal\r\n\r\n");
    free(out);
}

static void head_missing_or_bad_secret(void **state)
{
    (void)state;
    net_header missing_set[] = { { "X-Key", "k=${secret:NOPE}" } };
    net_http_rule r = { .set = missing_set, .n_set = 1 };
    int calls = 0;
    char *out = (char *)1, missing[64];
    size_t len = 0;
    errno = 0;
    assert_int_equal(net_http_build_head(&r, "GET", "/", NULL, 0, "", 0, fake_secret, &calls, &out, &len, missing,
                                         sizeof missing),
                     -1);
    assert_int_equal(errno, ENOENT);
    assert_string_equal(missing, "NOPE");
    assert_null(out);

    /* No callback at all: every secret is missing. */
    assert_int_equal(net_http_build_head(&r, "GET", "/", NULL, 0, "", 0, NULL, NULL, &out, &len, missing,
                                         sizeof missing),
                     -1);
    assert_int_equal(errno, ENOENT);

    /* A value that would smuggle a header of its own is refused. */
    net_header nl_set[] = { { "X-Key", "${secret:NL}" } };
    net_http_rule r2 = { .set = nl_set, .n_set = 1 };
    assert_int_equal(net_http_build_head(&r2, "GET", "/", NULL, 0, "", 0, fake_secret, &calls, &out, &len, missing,
                                         sizeof missing),
                     -1);
    assert_int_equal(errno, EINVAL);
    assert_string_equal(missing, "NL");
    assert_null(out);
}

static void upstream_ctx(void **state)
{
    (void)state;
    SSL_CTX *ctx = NULL;
    cell_error err = { 0 };
    assert_int_equal(net_http_upstream_ctx(&ctx, NULL, &err), 0);
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    assert_int_equal(SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER, SSL_VERIFY_PEER);
    SSL_CTX_free(ctx);
    assert_int_equal(net_http_upstream_ctx(&ctx, "/nonexistent/ca.pem", &err), -1);
    assert_null(ctx);
    assert_int_equal(err.code, EINVAL);
    assert_non_null(strstr(err.message, "/nonexistent/ca.pem"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(name_and_host_matching),     cmocka_unit_test(rule_checks),
        cmocka_unit_test(head_middleware),            cmocka_unit_test(head_missing_or_bad_secret),
        cmocka_unit_test(upstream_ctx),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
