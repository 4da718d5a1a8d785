/* test_net_sep.c: the egress helper's protocol (src/net/sep.h), from the
 * owner's side.  The helper parses what a cell sends, so it may be the
 * cell's: these are the requests a compromised helper could make, and what
 * the owner does with them (a secret no rule names, a webhook the policy
 * does not have, an audit record for another cell, malformed messages). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/policy.h"
#include "net/sep.h"

static const char policy_json[] =
    "{\"rules\": ["
    " {\"dns\": {\"upstreams\": [\"192.0.2.53\"]}},"
    " {\"http\": {\"host\": \"api.test\", \"set_headers\": {\"Authorization\": \"Bearer ${secret:API_KEY}\","
    "   \"X-Two\": \"${secret:FIRST}-${secret:SECOND}\"}}},"
    " {\"action\": \"deny\", \"http\": {\"host\": \"deny.test\"}},"
    " {\"decide\": {\"url\": \"http://127.0.0.1:9/hook\", \"timeout_ms\": 700, \"cache_s\": 5, \"to\": \"192.0.2.0/24\"}},"
    " {\"tcp\": {\"to\": \"198.51.100.0/24\"}}"
    "]}";

static net_policy *parse(void)
{
    net_policy *p = NULL;
    cell_error err = { 0 };
    assert_int_equal(net_policy_parse(policy_json, strlen(policy_json), &p, &err), 0);
    return p;
}

/* A message as the owner's reader gets it, without a socket. */
static ctl_msg msg(uint32_t type, const char *const *s, uint32_t n, const uint32_t *u)
{
    ctl_msg m = { .type = type, .seq = 7, .nstr = n, .str = (const char **)s, .nfds = 0 };
    if (u)
        memcpy(m.u, u, sizeof m.u);
    for (int i = 0; i < CTL_MAX_FDS; i++)
        m.fds[i] = -1;
    return m;
}

static void framing_carries_helper_types(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    const char *s[3] = { "127.0.0.1:4000", "192.0.2.9:443", "" };
    uint32_t u[CTL_NU] = { 3, NET_TCP, 0 };
    for (uint32_t t = NET_SEP_START; t < NET_SEP_TYPE_MAX; t++) {
        assert_int_equal(ctl_send(sv[0], t, t, 0, u, s, 3, NULL, 0), 0);
        ctl_msg m;
        assert_int_equal(ctl_recv(sv[1], &m), 0);
        assert_int_equal(m.type, t);
        assert_int_equal(m.nstr, 3);
        ctl_msg_free(&m);
    }
    /* Outside both ranges: refused by the decoder, whoever sends it. */
    uint32_t bad[] = { CTL_TYPE_MAX, CTL_EXT_BASE - 1, CTL_EXT_MAX, 0xffffffffu };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ctl_send(sv[0], bad[i], 1, 0, NULL, NULL, 0, NULL, 0), 0);
        ctl_msg m;
        assert_int_equal(ctl_recv(sv[1], &m), -1);
        assert_int_equal(errno, EBADMSG);
    }
    close(sv[0]);
    close(sv[1]);
}

static void secret_only_if_the_policy_names_it(void **state)
{
    (void)state;
    net_policy *p = parse();
    const char *ok[] = { "API_KEY", "FIRST", "SECOND" };
    for (size_t i = 0; i < 3; i++) {
        ctl_msg m = msg(NET_SEP_SECRET, &ok[i], 1, NULL);
        const char *name = net_sep_secret_name(&m, p);
        assert_non_null(name);
        assert_string_equal(name, ok[i]);
    }
    /* Other secrets of the tenant, prefixes and extensions of named ones,
     * and text that is in the rule but not a reference: nothing. */
    const char *no[] = { "OTHER", "API", "API_KEY_2", "api_key", "Bearer", "secret:API_KEY", "FIRST}-${secret:SECOND" };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        ctl_msg m = msg(NET_SEP_SECRET, &no[i], 1, NULL);
        errno = 0;
        assert_null(net_sep_secret_name(&m, p));
        assert_true(errno == EACCES || errno == EBADMSG);
    }
    /* Malformed requests. */
    const char *big = NULL;
    char *huge = malloc(4096);
    memset(huge, 'A', 4095);
    huge[4095] = '\0';
    big = huge;
    const char *two[2] = { "API_KEY", "FIRST" }, *empty = "", *ctrl = "API\nKEY";
    ctl_msg cases[] = { msg(NET_SEP_SECRET, two, 2, NULL), msg(NET_SEP_SECRET, NULL, 0, NULL),
                        msg(NET_SEP_SECRET, &empty, 1, NULL), msg(NET_SEP_SECRET, &ctrl, 1, NULL),
                        msg(NET_SEP_SECRET, &big, 1, NULL), msg(NET_SEP_DECIDE, ok, 1, NULL) };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        errno = 0;
        assert_null(net_sep_secret_name(&cases[i], p));
        assert_int_equal(errno, EBADMSG);
    }
    free(huge);
    /* With fds attached: refused. */
    ctl_msg m = msg(NET_SEP_SECRET, ok, 1, NULL);
    m.nfds = 1;
    assert_null(net_sep_secret_name(&m, p));
    /* No policy, or one without http rules: nothing. */
    m = msg(NET_SEP_SECRET, ok, 1, NULL);
    assert_null(net_sep_secret_name(&m, NULL));
    net_policy_unref(p);
}

static void decide_takes_the_webhook_from_the_policy(void **state)
{
    (void)state;
    net_policy *p = parse();
    const char *s[3] = { "127.0.0.1:4000", "192.0.2.9:443", "api.test" };
    uint32_t u[CTL_NU] = { 3, NET_TCP, 1 };
    ctl_msg m = msg(NET_SEP_DECIDE, s, 3, u);
    cell_net_flow f;
    const net_decide_rule *rule = NULL;
    assert_int_equal(net_sep_decide(&m, p, "cellid", &f, &rule), 0);
    assert_string_equal(rule->url, "http://127.0.0.1:9/hook");
    assert_int_equal(rule->timeout_ms, 700);
    assert_int_equal(f.cache_s, 5);
    assert_string_equal(f.cell, "cellid");
    assert_string_equal(f.transport, "tcp");
    assert_string_equal(f.host, "api.test");
    /* A rule that is not a decide rule, or no rule: no webhook is called. */
    uint32_t idx[] = { 0, 1, 2, 4, 5, 1000, 0xffffffffu };
    for (size_t i = 0; i < sizeof idx / sizeof idx[0]; i++) {
        u[0] = idx[i];
        m = msg(NET_SEP_DECIDE, s, 3, u);
        errno = 0;
        assert_int_equal(net_sep_decide(&m, p, "cellid", &f, &rule), -1);
        assert_int_equal(errno, ENOENT);
    }
    /* Malformed: transport, host flag, strings. */
    uint32_t bad_u[][3] = { { 3, 0, 1 }, { 3, 3, 1 }, { 3, NET_TCP, 2 }, { 3, NET_TCP, 0 } };
    for (size_t i = 0; i < 4; i++) {
        uint32_t uu[CTL_NU] = { bad_u[i][0], bad_u[i][1], bad_u[i][2] };
        m = msg(NET_SEP_DECIDE, s, 3, uu);
        errno = 0;
        assert_int_equal(net_sep_decide(&m, p, "cellid", &f, &rule), -1);
        assert_int_equal(errno, EBADMSG);
    }
    u[0] = 3;
    const char *bad_s[][3] = { { "", "192.0.2.9:443", "" }, { "a b", "192.0.2.9:443", "" },
                               { "127.0.0.1:1", "192.0.2.9:443\r\nX: y", "" } };
    for (size_t i = 0; i < 3; i++) {
        uint32_t uu[CTL_NU] = { 3, NET_UDP, 0 };
        m = msg(NET_SEP_DECIDE, bad_s[i], 3, uu);
        assert_int_equal(net_sep_decide(&m, p, "cellid", &f, &rule), -1);
        assert_int_equal(errno, EBADMSG);
    }
    m = msg(NET_SEP_DECIDE, s, 2, u);
    assert_int_equal(net_sep_decide(&m, p, "cellid", &f, &rule), -1);
    net_policy_unref(p);
}

static void events_are_the_owners_records(void **state)
{
    (void)state;
    /* A helper cannot write records for another cell or of another kind. */
    const char *forged = "{\"event\":\"connect\",\"cell\":\"someone-else\",\"kind\":\"admin\",\"verdict\":\"allow\"}";
    ctl_msg m = msg(NET_SEP_EVENT, &forged, 1, NULL);
    char *text = net_sep_event(&m, "mine");
    assert_non_null(text);
    json_t *rec = json_loads(text, 0, NULL);
    assert_non_null(rec);
    assert_string_equal(json_string_value(json_object_get(rec, "cell")), "mine");
    assert_string_equal(json_string_value(json_object_get(rec, "kind")), "net");
    assert_string_equal(json_string_value(json_object_get(rec, "verdict")), "allow");
    json_decref(rec);
    free(text);
    char *huge = malloc(NET_SEP_MAX_EVENT + 64);
    memset(huge, ' ', NET_SEP_MAX_EVENT + 63);
    memcpy(huge, "{\"a\":1}", 7);
    huge[NET_SEP_MAX_EVENT + 63] = '\0';
    const char *bad[] = { "[1,2]", "\"text\"", "{\"a\":", "", "{\"a\":1,\"a\":2}", huge, "{\"a\":1} {\"b\":2}" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m = msg(NET_SEP_EVENT, &bad[i], 1, NULL);
        assert_null(net_sep_event(&m, "mine"));
    }
    free(huge);
    const char *two[2] = { "{}", "{}" };
    m = msg(NET_SEP_EVENT, two, 2, NULL);
    assert_null(net_sep_event(&m, "mine"));
    m = msg(NET_SEP_SECRET, two, 1, NULL);
    assert_null(net_sep_event(&m, "mine"));
}

static void ca_pem_is_one_bounded_certificate(void **state)
{
    (void)state;
    const char *good = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    assert_true(net_sep_valid_pem(good));
    const char *bad[] = { "", "-----BEGIN CERTIFICATE-----\nMIIB\n",
                          ("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nB\n"
                           "-----END CERTIFICATE-----\n"),
                          "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
                          "-----BEGIN CERTIFICATE-----\nM\x01IB\n-----END CERTIFICATE-----\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(net_sep_valid_pem(bad[i]));
    size_t n = NET_SEP_MAX_PEM + 100;
    char *big = malloc(n + 1);
    memset(big, 'A', n);
    memcpy(big, "-----BEGIN CERTIFICATE-----\n", 28);
    memcpy(big + n - 26, "-----END CERTIFICATE-----\n", 26);
    big[n] = '\0';
    assert_false(net_sep_valid_pem(big));
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(framing_carries_helper_types),
        cmocka_unit_test(secret_only_if_the_policy_names_it),
        cmocka_unit_test(decide_takes_the_webhook_from_the_policy),
        cmocka_unit_test(events_are_the_owners_records),
        cmocka_unit_test(ca_pem_is_one_bounded_certificate),
    };
    return cmocka_run_group_tests_name("egress helper protocol", tests, NULL, NULL);
}
