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
    assert_null(net_http_check(&r, "GET", "/v1/a.b/..c/.d"));
}

/* The normal form: what rules match and what goes upstream. */
static void path_normal_form(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;   /* out NULL: refused */
    } table[] = {
        { "/v1/models", "/v1/models" },
        { "/v1/../admin", "/admin" },
        { "/v1/./x/", "/v1/x/" },
        { "/v1/..", "/" },
        { "/..", "/" },
        { "/../../etc", "/etc" },
        { "/a/b/c/./../../g", "/a/g" },
        { "/v1//../admin", "/v1/admin" },
        { "/v1/%2e%2e/admin", "/admin" },           /* escaped dots are dots */
        { "/v1/%2E./admin", "/admin" },
        { "/v1/.%2e", "/" },
        { "/%7euser/%41%62", "/~user/Ab" },         /* unreserved: decoded */
        { "/q/%3f%3b%20", "/q/%3F%3B%20" },         /* others: kept, hex upper case */
        { "/v1/..c/.d/...", "/v1/..c/.d/..." },     /* not dot segments */
        { "/x;y/z", "/x;y/z" },                     /* parameters are data */
        { "/v1/..;/admin", NULL },                  /* Tomcat reads "..;" as ".." */
        { "/v1/.;x/admin", NULL },
        { "/v1/%2e%2e;/admin", NULL },
        { "/v1%2fadmin", NULL },                    /* encoded separators */
        { "/v1/%2F..", NULL },
        { "/v1/%5c..%5cadmin", NULL },
        { "/v1/..\\admin", NULL },                   /* backslash */
        { "/v1/%252e%252e/admin", NULL },           /* double encoding */
        { "/v1/%25", NULL },
        { "/v1/%00", NULL },
        { "/v1/%", NULL },
        { "/v1/%4", NULL },
        { "/v1/%zz", NULL },
        { "/v1/a b", NULL },
        { "/v1/\x01", NULL },
        { "/v1/\xc3\xa9", NULL },                     /* raw non-ASCII */
        { "/v1/<script>", NULL },
        { "v1/x", NULL },
        { "", NULL },
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        char out[64];
        const char *why = net_http_path_normalize(table[i].in, strlen(table[i].in), out);
        if (table[i].out) {
            if (why)
                print_error("%s: refused: %s\n", table[i].in, why);
            assert_null(why);
            assert_string_equal(out, table[i].out);
        } else {
            if (!why)
                print_error("%s: allowed as %s\n", table[i].in, out);
            assert_non_null(why);
        }
    }
    char big[NET_HTTP_PATH_MAX + 2], out[sizeof big];
    memset(big, 'a', sizeof big - 1);
    big[0] = '/';
    big[sizeof big - 1] = '\0';
    assert_non_null(net_http_path_normalize(big, strlen(big), out));
}

/* Bytes through the strict parser: 0 if they parse as one whole message. */
static int parse(enum http_parser_type type, const char *bytes, net_http_msg *m)
{
    net_http_msg_init(m, type);
    ssize_t used = net_http_msg_feed(m, bytes, strlen(bytes));
    if (used >= 0 && !m->done)
        used = net_http_msg_feed(m, bytes, 0);
    return used < 0 || !m->done ? -1 : 0;
}

static void strict_requests(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",                        /* whitespace before the colon */
        "GET / HTTP/1.1\r\nHost: a\r\nAuthorization : x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n b\r\n\r\n",            /* obs-fold */
        "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\tb\r\n\r\n",
        "GET / HTTP/1.1\nHost: a\n\n",                                /* bare LF */
        "GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n",                    /* bare CR */
        "GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n",                    /* control character */
        "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",              /* duplicate Host */
        "GET / HTTP/1.1\r\nHost: a\r\nhOsT: b\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        NULL,
    };
    net_http_msg m;
    for (const char *const *b = bad; *b; b++) {
        int rc = parse(HTTP_REQUEST, *b, &m);
        if (rc == 0)
            print_error("parsed: %s\n", *b);
        assert_int_equal(rc, -1);
        assert_non_null(m.error);
        assert_true(net_http_msg_started(&m));     /* answered with a 400, not dropped */
        net_http_msg_free(&m);
    }
    /* Not HTTP at all: dropped without an answer. */
    assert_int_equal(parse(HTTP_REQUEST, "SSH-2.0-OpenSSH_9.2\r\n", &m), -1);
    assert_false(net_http_msg_started(&m));
    net_http_msg_free(&m);

    /* Fields as every check sees them: names as sent, values trimmed;
     * chunk extensions and trailers gone from the body. */
    assert_int_equal(parse(HTTP_REQUEST, "\r\nPOST /x HTTP/1.1\r\nHost:  a.test  \r\nX-A: 1\r\n"
                                         "Transfer-Encoding: Chunked\r\n\r\n"
                                         "3;ext=\"x\"\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n", &m),
                     0);
    int count;
    assert_string_equal(net_http_msg_header(&m, "HOST", &count), "a.test");
    assert_int_equal(count, 1);
    assert_null(net_http_msg_header(&m, "x-trailer", &count));
    assert_int_equal(m.n, 3);
    assert_true(m.chunked);
    assert_int_equal(m.body.len, 3);
    assert_memory_equal(m.body.d, "abc", 3);
    net_http_msg_free(&m);
}

static void strict_responses(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nX-A: 1\rSet-Cookie: x\r\nContent-Length: 0\r\n\r\n",    /* splitting */
        "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        "HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        NULL,
    };
    net_http_msg m;
    for (const char *const *b = bad; *b; b++) {
        int rc = parse(HTTP_RESPONSE, *b, &m);
        if (rc == 0)
            print_error("parsed: %s\n", *b);
        assert_int_equal(rc, -1);
        net_http_msg_free(&m);
    }
    /* An interim response, then the final one on the same parser. */
    const char *two = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    net_http_msg_init(&m, HTTP_RESPONSE);
    ssize_t used = net_http_msg_feed(&m, two, strlen(two));
    assert_true(used > 0 && m.done && m.p.status_code == 103);
    net_http_msg_next(&m);
    assert_int_equal(net_http_msg_feed(&m, two + used, strlen(two) - (size_t)used), strlen(two) - (size_t)used);
    assert_true(m.done && m.p.status_code == 200 && m.body.len == 2);
    net_http_msg_free(&m);
}

/* A value split across pieces, several values, same-length markers. */
static void redaction(void **state)
{
    (void)state;
    net_redact r = { 0 };
    assert_int_equal(net_redact_add(&r, "s3cr3t-token", 12), 0);
    assert_int_equal(net_redact_add(&r, "abc", 3), 0);
    assert_int_equal(net_redact_add(&r, "abc", 3), 0);
    assert_int_equal(r.n, 2);
    const char *text = "{\"auth\": \"Bearer s3cr3t-token\", \"x\": \"abcabc\", \"y\": \"s3cr3t-toke\"}";
    const char *want = "{\"auth\": \"Bearer ************\", \"x\": \"******\", \"y\": \"s3cr3t-toke\"}";
    for (size_t step = 1; step <= strlen(text); step++) {
        net_buf out = { 0 };
        for (size_t i = 0; i < strlen(text); i += step)
            net_redact_feed(&r, text + i, strlen(text) - i < step ? strlen(text) - i : step, &out);
        net_redact_flush(&r, &out);
        assert_int_equal(out.len, strlen(text));
        assert_string_equal(out.d, want);
        net_buf_wipe(&out);
    }
    char hv[] = "x s3cr3t-token y";
    net_redact_inplace(&r, hv, strlen(hv));
    assert_string_equal(hv, "x ************ y");
    net_redact_free(&r);
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
                                         "Content-Length: 5\r\n", 0, fake_secret, &calls, NULL, &out, &len, missing,
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
    assert_int_equal(net_http_build_head(&r, "GET", "/", in, 5, "", 1, fake_secret, &calls, NULL, &out, &len, missing,
                                         sizeof missing),
                     0);
    assert_string_equal(out, "GET / HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer s3cr3t\r\n"
                             "X-Both: s3cr3t-s3cr3t!\r\nX-Plain: literal\r\n\r\n");
    free(out);

    /* redact_response: the injected value is collected, and the cell's
     * Accept-Encoding becomes identity (an encoded echo hides it). */
    net_http_rule rr = { .set = set_hdrs, .n_set = 1, .redact = 1 };
    net_header ae[] = { { "Host", "api.test" }, { "accept-ENCODING", "gzip" } };
    net_redact red = { 0 };
    assert_int_equal(net_http_build_head(&rr, "GET", "/", ae, 2, "", 1, fake_secret, &calls, &red, &out, &len,
                                         missing, sizeof missing),
                     0);
    assert_string_equal(out, "GET / HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer s3cr3t\r\n"
                             "Accept-Encoding: identity\r\n\r\n");
    assert_int_equal(red.n, 1);
    assert_memory_equal(red.vals[0].d, "s3cr3t", 6);
    free(out);
    net_redact_free(&red);

    /* meter: the body is read for usage, so it must come unencoded too. */
    net_http_rule rm = { .set = set_hdrs, .n_set = 1, .meter = 1 };
    assert_int_equal(net_http_build_head(&rm, "GET", "/", ae, 2, "", 1, fake_secret, &calls, NULL, &out, &len,
                                         missing, sizeof missing),
                     0);
    assert_string_equal(out, "GET / HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer s3cr3t\r\n"
                             "Accept-Encoding: identity\r\n\r\n");
    free(out);
}

/* The policy's side: path prefixes must be in normal form, and
 * redact_response is a boolean that needs a secret to redact. */
static void policy_fields(void **state)
{
    (void)state;
    static const struct {
        const char *rule, *error;
    } table[] = {
        { "{\"host\":\"a.test\",\"paths\":[\"/v1/../admin\"]}", "normal form; write it as \"/admin\"" },
        { "{\"host\":\"a.test\",\"paths\":[\"/v1/%2e\"]}", "normal form" },
        { "{\"host\":\"a.test\",\"paths\":[\"/v1%2f\"]}", "escaped slash" },
        { "{\"host\":\"a.test\",\"redact_response\":1,\"set_headers\":{\"A\":\"${secret:T}\"}}", "true or false" },
        { "{\"host\":\"a.test\",\"redact_response\":true}", "no ${secret:NAME}" },
        { "{\"host\":\"a.test\",\"redact_response\":true,\"set_headers\":{\"A\":\"b\"}}", "no ${secret:NAME}" },
        { "{\"host\":\"a.test\",\"redact_response\":true,\"set_headers\":{\"A\":\"${secret:T}\"}}", NULL },
        { "{\"host\":\"a.test\",\"paths\":[\"/v1/\", \"/~u/%3F\"]}", NULL },
        { "{\"host\":\"a.test\",\"meter\":true}", "expected \"openai\" or \"anthropic\", got true" },
        { "{\"host\":\"a.test\",\"meter\":\"OpenAI\"}", "expected \"openai\" or \"anthropic\"" },
        { "{\"host\":\"a.test\",\"meter\":\"\"}", "expected \"openai\" or \"anthropic\"" },
        { "{\"host\":\"a.test\",\"meter\":\"openai\"}", NULL },
        { "{\"host\":\"a.test\",\"meter\":\"anthropic\",\"set_headers\":{\"A\":\"${secret:T}\"}}", NULL },
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        char doc[512];
        snprintf(doc, sizeof doc, "{\"rules\":[{\"dns\":{\"upstreams\":[\"127.0.0.1\"]}},{\"http\":%s}]}",
                 table[i].rule);
        net_policy *p = NULL;
        cell_error err = { 0 };
        int rc = net_policy_parse(doc, strlen(doc), &p, &err);
        if (table[i].error) {
            if (rc == 0 || !strstr(err.message, table[i].error))
                print_error("%s: %s\n", table[i].rule, rc == 0 ? "accepted" : err.message);
            assert_int_equal(rc, -1);
            assert_non_null(strstr(err.message, table[i].error));
            assert_non_null(strstr(err.message, "rules[1].http."));
        } else {
            if (rc != 0)
                print_error("%s: %s\n", table[i].rule, err.message);
            assert_int_equal(rc, 0);
            net_policy_unref(p);
        }
    }
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
    assert_int_equal(net_http_build_head(&r, "GET", "/", NULL, 0, "", 0, fake_secret, &calls, NULL, &out, &len, missing,
                                         sizeof missing),
                     -1);
    assert_int_equal(errno, ENOENT);
    assert_string_equal(missing, "NOPE");
    assert_null(out);

    /* No callback at all: every secret is missing. */
    assert_int_equal(net_http_build_head(&r, "GET", "/", NULL, 0, "", 0, NULL, NULL, NULL, &out, &len, missing,
                                         sizeof missing),
                     -1);
    assert_int_equal(errno, ENOENT);

    /* A value that would smuggle a header of its own is refused. */
    net_header nl_set[] = { { "X-Key", "${secret:NL}" } };
    net_http_rule r2 = { .set = nl_set, .n_set = 1 };
    assert_int_equal(net_http_build_head(&r2, "GET", "/", NULL, 0, "", 0, fake_secret, &calls, NULL, &out, &len, missing,
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
        cmocka_unit_test(upstream_ctx),               cmocka_unit_test(path_normal_form),
        cmocka_unit_test(strict_requests),            cmocka_unit_test(strict_responses),
        cmocka_unit_test(redaction),                  cmocka_unit_test(policy_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
