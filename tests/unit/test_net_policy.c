/* test_net_policy.c: the egress policy: every validation error names its rule
 * and field, first match wins, default deny, classes, globs, ports, dns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/policy.h"
#include "net/screen.h"
#include "util/util.h"

#define DNS_RULE "{\"dns\": {\"upstreams\": [\"1.1.1.1\"]}}"

static net_policy *parse_ok(const char *json)
{
    net_policy *p = NULL;
    cell_error err = { 0 };
    int r = net_policy_parse(json, strlen(json), &p, &err);
    if (r != 0)
        print_error("unexpected error for %s: %s\n", json, err.message);
    assert_int_equal(r, 0);
    assert_non_null(p);
    return p;
}

static void expect_error(const char *json, const char *want)
{
    net_policy *p = (net_policy *)1;
    cell_error err = { 0 };
    assert_int_equal(net_policy_parse(json, strlen(json), &p, &err), -1);
    assert_null(p);
    assert_int_equal(err.code, EINVAL);
    if (!strstr(err.message, want))
        print_error("policy %s\n  message: %s\n  wanted:  %s\n", json, err.message, want);
    assert_non_null(strstr(err.message, want));
}

/* An address ("1.2.3.4" or "::1") and port as a sockaddr. */
static const struct sockaddr *addr(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
    }
    return (const struct sockaddr *)ss;
}

static net_verdict decide(const net_policy *p, int transport, const char *ip, uint16_t port, const char *host)
{
    struct sockaddr_storage ss;
    net_flow f = { .transport = transport, .dst = addr(&ss, ip, port), .host = host };
    net_verdict v;
    memset(&v, 0x5a, sizeof v);
    net_policy_decide(p, &f, &v);
    return v;
}

/* The rule index that decides, or -1; and that it allows (1) or not (0). */
static void expect(const net_policy *p, int transport, const char *ip, uint16_t port, const char *host, int rule,
                   int allow)
{
    net_verdict v = decide(p, transport, ip, port, host);
    if (v.rule != rule || v.allow != allow)
        print_error("flow %s %s:%u host %s: rule %d allow %d, wanted rule %d allow %d\n",
                    transport == NET_TCP ? "tcp" : "udp", ip, port, host ? host : "-", v.rule, v.allow, rule, allow);
    assert_int_equal(v.rule, rule);
    assert_int_equal(v.allow, allow);
}

/* ---- validation ------------------------------------------------------------------- */

static void document_errors(void **state)
{
    (void)state;
    expect_error("not json", "policy: not valid JSON");
    expect_error("", "policy: not valid JSON");
    expect_error("[]", "policy: expected {\"rules\": [...]}, got an array");
    expect_error("{}", "policy: missing \"rules\"");
    expect_error("{\"rules\": [], \"extra\": 1}", "policy: unknown key \"extra\"");
    expect_error("{\"rules\": {}}", "rules: expected an array of rules, got an object");
    expect_error("{\"rules\": [], \"rules\": []}", "policy: not valid JSON");   /* duplicate key */
    expect_error("{\"rules\": [1]}", "rules[0]: expected an object");
    expect_error("{\"rules\": [{\"tcp\": {}}, {\"tcp\": {}, \"udp\": {}}]}",
                 "rules[1]: has both \"tcp\" and \"udp\"; a rule has exactly one matcher");
    expect_error("{\"rules\": [{\"action\": \"allow\"}]}", "rules[0]: no matcher; expected one of dns");
    expect_error("{\"rules\": [{\"tcp\": {}, \"note\": 1}]}", "rules[0]: unknown key \"note\"");
    expect_error("{\"rules\": [{\"action\": \"maybe\", \"tcp\": {}}]}",
                 "rules[0].action: expected \"allow\" or \"deny\", got \"maybe\"");
    expect_error("{\"rules\": [{\"action\": 1, \"tcp\": {}}]}", "rules[0].action: expected \"allow\" or \"deny\", got an integer");
    expect_error("{\"rules\": [{\"tcp\": []}]}", "rules[0].tcp: expected an object, got an array");
    expect_error("{\"rules\": [{\"udp\": {\"port\": 53}}]}", "rules[0].udp: unknown key \"port\" (expected to, ports)");
    expect_error("{\"rules\": [{\"tcp\": {\"to\": \"a\\u0001b\"}}]}", "\"a\\x01b\" is not an IP address");
}

static void too_many_rules(void **state)
{
    (void)state;
    size_t cap = 16 + 257 * 12;
    char *json = malloc(cap);
    assert_non_null(json);
    for (int n = 256; n <= 257; n++) {
        size_t o = (size_t)snprintf(json, cap, "{\"rules\": [");
        for (int i = 0; i < n; i++)
            o += (size_t)snprintf(json + o, cap - o, "%s{\"tcp\":{}}", i ? "," : "");
        snprintf(json + o, cap - o, "]}");
        if (n == 256)
            net_policy_unref(parse_ok(json));
        else
            expect_error(json, "rules: 257 rules; at most 256 are allowed");
    }
    free(json);
}

static void port_errors(void **state)
{
    (void)state;
    static const struct { const char *ports, *want; } cases[] = {
        { "0", "rules[0].tcp.ports: 0 is not a port (1-65535)" },
        { "65536", "rules[0].tcp.ports: 65536 is not a port (1-65535)" },
        { "-1", "rules[0].tcp.ports: -1 is not a port" },
        { "\"70000\"", "rules[0].tcp.ports: \"70000\" is not a port or range (1-65535)" },
        { "\"0-10\"", "rules[0].tcp.ports: \"0-10\" is not a port or range" },
        { "\"80-\"", "rules[0].tcp.ports: \"80-\" is not a port or range" },
        { "\"http\"", "rules[0].tcp.ports: \"http\" is not a port or range" },
        { "\" 80\"", "rules[0].tcp.ports: \" 80\" is not a port or range" },
        { "\"9000-8000\"", "rules[0].tcp.ports: \"9000-8000\": range start 9000 is above its end 8000" },
        { "[443, 65536]", "rules[0].tcp.ports[1]: 65536 is not a port" },
        { "[443, \"2-1\"]", "rules[0].tcp.ports[1]: \"2-1\": range start 2 is above" },
        { "[443, [80]]", "rules[0].tcp.ports[1]: expected a port (1-65535) or a range \"LO-HI\", got an array" },
        { "[]", "rules[0].tcp.ports: empty array" },
        { "true", "rules[0].tcp.ports: expected a port (1-65535) or a range \"LO-HI\", got true" },
        { "443.0", "rules[0].tcp.ports: expected a port (1-65535) or a range \"LO-HI\", got a number with a fraction" },
        { "null", "rules[0].tcp.ports: expected a port (1-65535) or a range \"LO-HI\", got null" },
    };
    char json[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(json, sizeof json, "{\"rules\": [{\"tcp\": {\"ports\": %s}}]}", cases[i].ports);
        expect_error(json, cases[i].want);
    }
}

static void target_errors(void **state)
{
    (void)state;
    static const struct { const char *to, *want; } cases[] = {
        { "\"10.0.0.0/33\"", "rules[0].ip.to: \"10.0.0.0/33\": prefix length 33 is out of range for IPv4 (0-32)" },
        { "[\"::/129\"]", "rules[0].ip.to[0]: \"::/129\": prefix length 129 is out of range for IPv6 (0-128)" },
        { "\"10.0.0.0/\"", "rules[0].ip.to: \"10.0.0.0/\": expected a prefix length after '/' (0-32)" },
        { "\"10.0.0.0/8x\"", "rules[0].ip.to: \"10.0.0.0/8x\": expected a prefix length" },
        { "\"10.0.0.0/-1\"", "rules[0].ip.to: \"10.0.0.0/-1\": expected a prefix length" },
        { "\"intranet\"", "rules[0].ip.to: \"intranet\" is not an IP address, CIDR or class (loopback, private" },
        { "\"Private\"", "rules[0].ip.to: \"Private\" is not an IP address, CIDR or class" },
        { "\"10.0.0\"", "rules[0].ip.to: \"10.0.0\" is not an IP address" },
        { "\"010.0.0.1\"", "rules[0].ip.to: \"010.0.0.1\" is not an IP address" },
        { "\"\"", "rules[0].ip.to: \"\" is not an IP address" },
        { "[\"public\", \"1.2.3.4.5\"]", "rules[0].ip.to[1]: \"1.2.3.4.5\" is not an IP address" },
        { "[]", "rules[0].ip.to: empty array" },
        { "[5]", "rules[0].ip.to[0]: expected an IP address, CIDR or class, got an integer" },
        { "{}", "rules[0].ip.to: expected an array of addresses, CIDRs or classes, got an object" },
    };
    char json[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(json, sizeof json, "{\"rules\": [{\"ip\": {\"to\": %s}}]}", cases[i].to);
        expect_error(json, cases[i].want);
    }
}

static void name_errors(void **state)
{
    (void)state;
    char label64[65], long_name[300], json[512];
    memset(label64, 'a', 64);
    label64[64] = '\0';
    /* 254 characters: 127 "a." pairs... minus the last dot. */
    size_t o = 0;
    while (o < 254) {
        long_name[o++] = 'a';
        long_name[o++] = '.';
    }
    long_name[253] = 'b';
    long_name[254] = '\0';
    const struct { const char *name, *want; } cases[] = {
        { "*", "rules[1].host.name: \"*\": '*' may only be the whole first label" },
        { "*.*", "rules[1].host.name: \"*.*\": '*' may only be the whole first label" },
        { "a*.b", "rules[1].host.name: \"a*.b\": '*' may only be the whole first label" },
        { "a.*.b", "rules[1].host.name: \"a.*.b\": '*' may only" },
        { "*.", "rules[1].host.name: \"*.\": write the name without a trailing dot" },
        { "example.com.", "rules[1].host.name: \"example.com.\": write the name without a trailing dot" },
        { "", "rules[1].host.name: empty name" },
        { "a..b", "rules[1].host.name: \"a..b\" has an empty label" },
        { ".a", "rules[1].host.name: \".a\" has an empty label" },
        { "-a.com", "rules[1].host.name: \"-a.com\": a label cannot start or end with '-'" },
        { "a-.com", "rules[1].host.name: \"a-.com\": a label cannot" },
        { "a b.com", "rules[1].host.name: \"a b.com\": '?' is not allowed" },
        { "a/b.com", "rules[1].host.name: \"a/b.com\": '/' is not allowed" },
        { "1.2.3.4", "rules[1].host.name: \"1.2.3.4\" is an address" },
        { "::1", "rules[1].host.name: \"::1\" is an address" },
        { label64, "rules[1].host.name: \"aaaa" },
        { long_name, "rules[1].host.name: name is 254 characters; at most 253" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(json, sizeof json, "{\"rules\": [" DNS_RULE ", {\"host\": {\"name\": \"%s\"}}]}", cases[i].name);
        expect_error(json, cases[i].want);
    }
    snprintf(json, sizeof json, "{\"rules\": [" DNS_RULE ", {\"host\": {\"name\": \"%s.com\"}}]}", label64);
    expect_error(json, "has a label of 64 characters; at most 63");
    expect_error("{\"rules\": [" DNS_RULE ", {\"host\": {\"name\": 5}}]}",
                 "rules[1].host.name: expected a host name like \"api.example.com\" or \"*.example.com\", got an integer");
    expect_error("{\"rules\": [" DNS_RULE ", {\"host\": {\"ports\": 443}}]}", "rules[1].host.name: missing");
    expect_error("{\"rules\": [" DNS_RULE ", {\"host\": {\"name\": \"a.com\", \"to\": \"public\"}}]}",
                 "rules[1].host: unknown key \"to\" (expected name, ports)");
    expect_error("{\"rules\": [" DNS_RULE ", {\"host\": {\"name\": \"a.com\", \"ports\": 0}}]}",
                 "rules[1].host.ports: 0 is not a port");
    /* 253 characters and 63-character labels are fine. */
    long_name[253] = '\0';
    label64[63] = '\0';
    snprintf(json, sizeof json, "{\"rules\": [" DNS_RULE ", {\"host\": {\"name\": \"%s\"}}, {\"host\": {\"name\": \"*.%s\"}}]}",
             long_name, label64);
    net_policy_unref(parse_ok(json));
}

static void http_errors(void **state)
{
    (void)state;
    static const struct { const char *fields, *want; } cases[] = {
        { "\"ports\": 443", "rules[1].http.host: missing" },
        { "\"host\": \"*\"", "rules[1].http.host: \"*\": '*' may only" },
        { "\"host\": \"a.com\", \"methods\": [\"FETCH\"]", "rules[1].http.methods[0]: \"FETCH\" is not a method (expected GET" },
        { "\"host\": \"a.com\", \"methods\": [\"GET\", 1]", "rules[1].http.methods[1]: expected an HTTP method, got an integer" },
        { "\"host\": \"a.com\", \"methods\": []", "rules[1].http.methods: empty array" },
        { "\"host\": \"a.com\", \"methods\": \"GET\"", "rules[1].http.methods: expected an array of methods, got a string" },
        { "\"host\": \"a.com\", \"paths\": [\"/ok\", \"v1\"]", "rules[1].http.paths[1]: \"v1\" does not start with '/'" },
        { "\"host\": \"a.com\", \"paths\": [\"/a b\"]", "rules[1].http.paths[0]: \"/a b\" contains a space" },
        { "\"host\": \"a.com\", \"paths\": []", "rules[1].http.paths: empty array" },
        { "\"host\": \"a.com\", \"set_headers\": {\"Bad Name\": \"x\"}",
          "rules[1].http.set_headers[\"Bad Name\"]: \"Bad Name\" is not a header name (expected a token" },
        { "\"host\": \"a.com\", \"set_headers\": {\"\": \"x\"}", "rules[1].http.set_headers[\"\"]: \"\" is not a header name" },
        { "\"host\": \"a.com\", \"set_headers\": {\"X-A\": \"a\\r\\nEvil: 1\"}",
          "rules[1].http.set_headers[\"X-A\"]: the value contains CR or LF" },
        { "\"host\": \"a.com\", \"set_headers\": {\"X-A\": \"a\\nb\"}", "rules[1].http.set_headers[\"X-A\"]: the value contains CR or LF" },
        { "\"host\": \"a.com\", \"set_headers\": {\"X-A\": \"a\\u0007\"}", "the value contains control character 0x07" },
        { "\"host\": \"a.com\", \"set_headers\": {\"X-A\": 1}", "rules[1].http.set_headers[\"X-A\"]: expected a header value, got an integer" },
        { "\"host\": \"a.com\", \"set_headers\": {\"X-A\": \"Bearer ${secret:bad name}\"}",
          "rules[1].http.set_headers[\"X-A\"]: \"Bearer ${secret:bad name}\": a secret reference is ${secret:NAME} with NAME 1-63" },
        { "\"host\": \"a.com\", \"set_headers\": {\"X-A\": \"${secret:}\"}", "a secret reference is ${secret:NAME}" },
        { "\"host\": \"a.com\", \"set_headers\": {\"X-A\": \"${secret:TOKEN\"}", "a secret reference is ${secret:NAME}" },
        { "\"host\": \"a.com\", \"set_headers\": {\"X-A\": "
          "\"${secret:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}\"}",
          "a secret reference is ${secret:NAME}" },
        { "\"host\": \"a.com\", \"set_headers\": {\"X-A\": \"${env:HOME}\"}", "\"${\" must start a ${secret:NAME} reference" },
        { "\"host\": \"a.com\", \"set_headers\": {\"X-A\": \"a\", \"x-a\": \"b\"}",
          "rules[1].http.set_headers[\"x-a\"]: header is set twice" },
        { "\"host\": \"a.com\", \"set_headers\": {}", "rules[1].http.set_headers: 0 headers; expected 1-256" },
        { "\"host\": \"a.com\", \"set_headers\": []", "rules[1].http.set_headers: expected an object" },
        { "\"host\": \"a.com\", \"remove_headers\": [\"Cookie\", \"a:b\"]", "rules[1].http.remove_headers[1]: \"a:b\" is not a header name" },
        { "\"host\": \"a.com\", \"remove_headers\": []", "rules[1].http.remove_headers: empty array" },
        { "\"host\": \"a.com\", \"query\": 1", "rules[1].http: unknown key \"query\" (expected host, ports" },
        { "\"host\": \"a.com\", \"tls\": \"yes\"", "rules[1].http.tls: expected true or false, got a string" },
        { "\"host\": \"a.com\", \"tls\": 0, \"set_headers\": {\"X-A\": \"${secret:T}\"}",
          "rules[1].http.tls: expected true or false, got an integer" },
        { "\"host\": \"a.com\", \"tls\": null", "rules[1].http.tls: expected true or false, got null" },
    };
    char json[512];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(json, sizeof json, "{\"rules\": [" DNS_RULE ", {\"http\": {%s}}]}", cases[i].fields);
        expect_error(json, cases[i].want);
    }
    expect_error("{\"rules\": [" DNS_RULE ", {\"action\": \"deny\", \"http\": {\"host\": \"a.com\", \"methods\": [\"POST\"]}}]}",
                 "rules[1].http.methods: a deny rule refuses the whole connection");
}

static void dns_errors(void **state)
{
    (void)state;
    static const struct { const char *rules, *want; } cases[] = {
        { "{\"host\": {\"name\": \"a.com\"}}", "rules[0].host: host and http rules need a dns rule" },
        { "{\"tcp\": {}}, {\"http\": {\"host\": \"a.com\"}}", "rules[1].http: host and http rules need a dns rule" },
        { DNS_RULE ", {\"tcp\": {}}, " DNS_RULE, "rules[2].dns: a policy has at most one dns rule (rules[0] is one)" },
        { "{\"dns\": {}}", "rules[0].dns.upstreams: missing" },
        { "{\"dns\": {\"upstreams\": []}}", "rules[0].dns.upstreams: empty array" },
        { "{\"dns\": {\"upstreams\": \"1.1.1.1\"}}", "rules[0].dns.upstreams: expected an array of resolver addresses, got a string" },
        { "{\"dns\": {\"upstreams\": [\"1.1.1.1\",\"1.1.1.1\",\"1.1.1.1\",\"1.1.1.1\",\"1.1.1.1\",\"1.1.1.1\","
          "\"1.1.1.1\",\"1.1.1.1\",\"1.1.1.1\"]}}",
          "rules[0].dns.upstreams: 9 entries; at most 8 are allowed" },
        { "{\"dns\": {\"upstreams\": [\"1.1.1.1:0\"]}}", "rules[0].dns.upstreams[0]: \"1.1.1.1:0\": the port is not 1-65535" },
        { "{\"dns\": {\"upstreams\": [\"1.1.1.1\", \"1.1.1.1:65536\"]}}", "rules[0].dns.upstreams[1]: \"1.1.1.1:65536\": the port" },
        { "{\"dns\": {\"upstreams\": [\"1.1.1.1:\"]}}", "rules[0].dns.upstreams[0]: \"1.1.1.1:\": the port" },
        { "{\"dns\": {\"upstreams\": [\"[::1]:x\"]}}", "rules[0].dns.upstreams[0]: \"[::1]:x\": the port" },
        { "{\"dns\": {\"upstreams\": [\"dns.google\"]}}", "rules[0].dns.upstreams[0]: \"dns.google\" is not an IP address, IP:PORT or [IPv6]:PORT" },
        { "{\"dns\": {\"upstreams\": [\"[1.1.1.1]:53\"]}}", "rules[0].dns.upstreams[0]: \"[1.1.1.1]:53\" is not an IP address" },
        { "{\"dns\": {\"upstreams\": [\"[::1\"]}}", "rules[0].dns.upstreams[0]: \"[::1\" is not an IP address" },
        { "{\"dns\": {\"upstreams\": [\"[::1]53\"]}}", "rules[0].dns.upstreams[0]: \"[::1]53\" is not an IP address" },
        { "{\"dns\": {\"upstreams\": [53]}}", "rules[0].dns.upstreams[0]: expected an IP address, IP:PORT or [IPv6]:PORT, got an integer" },
        { "{\"dns\": {\"upstreams\": [\"1.1.1.1\"], \"strict\": \"yes\"}}", "rules[0].dns.strict: expected true or false, got a string" },
        { "{\"dns\": {\"upstreams\": [\"1.1.1.1\"], \"cache\": 1}}", "rules[0].dns: unknown key \"cache\" (expected upstreams, strict, rebind)" },
        { "{\"action\": \"deny\", \"dns\": {\"upstreams\": [\"1.1.1.1\"]}}", "rules[0].action: a dns rule enables the resolver" },
    };
    char json[512];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(json, sizeof json, "{\"rules\": [%s]}", cases[i].rules);
        expect_error(json, cases[i].want);
    }
}

static void decide_errors(void **state)
{
    (void)state;
    static const struct { const char *fields, *want; } cases[] = {
        { "\"timeout_ms\": 100", "rules[0].decide.url: missing" },
        { "\"url\": 5", "rules[0].decide.url: expected an http:// or https:// URL, got an integer" },
        { "\"url\": \"ftp://d.example/x\"", "rules[0].decide.url: \"ftp://d.example/x\": expected an http:// or https:// URL" },
        { "\"url\": \"HTTP://d/x\"", "rules[0].decide.url: \"HTTP://d/x\": expected an http:// or https:// URL" },
        { "\"url\": \"https://u:p@d/x\"", "without user info" },
        { "\"url\": \"http:///x\"", "rules[0].decide.url: \"http:///x\": expected http://HOST[:PORT]/path" },
        { "\"url\": \"http://u:p@d/x\"", "rules[0].decide.url: \"http://u:p@d/x\": expected http://HOST[:PORT]/path without user info" },
        { "\"url\": \"http://d:99999/x\"", "rules[0].decide.url: \"http://d:99999/x\": the port is not 1-65535" },
        { "\"url\": \"http://d:/x\"", "rules[0].decide.url: \"http://d:/x\": the port" },
        { "\"url\": \"http://[::1/x\"", "rules[0].decide.url: \"http://[::1/x\": an IPv6 host is written [ADDRESS]" },
        { "\"url\": \"http://d/a b\"", "rules[0].decide.url: \"http://d/a b\" contains a space" },
        { "\"url\": \"http://d/\", \"timeout_ms\": 0", "rules[0].decide.timeout_ms: 0 is out of range (1-60000)" },
        { "\"url\": \"http://d/\", \"timeout_ms\": 60001", "rules[0].decide.timeout_ms: 60001 is out of range (1-60000)" },
        { "\"url\": \"http://d/\", \"timeout_ms\": \"5\"", "rules[0].decide.timeout_ms: expected an integer (1-60000), got a string" },
        { "\"url\": \"http://d/\", \"cache_s\": -1", "rules[0].decide.cache_s: -1 is out of range (0-86400)" },
        { "\"url\": \"http://d/\", \"cache_s\": 86401", "rules[0].decide.cache_s: 86401 is out of range (0-86400)" },
        { "\"url\": \"http://d/\", \"to\": \"nowhere\"", "rules[0].decide.to: \"nowhere\" is not an IP address" },
        { "\"url\": \"http://d/\", \"ports\": [1, 0]", "rules[0].decide.ports[1]: 0 is not a port" },
        { "\"url\": \"http://d/\", \"host\": \"a.com\"", "rules[0].decide: unknown key \"host\" (expected url, timeout_ms" },
    };
    char json[512];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(json, sizeof json, "{\"rules\": [{\"decide\": {%s}}]}", cases[i].fields);
        expect_error(json, cases[i].want);
    }
    expect_error("{\"rules\": [{\"action\": \"deny\", \"decide\": {\"url\": \"http://d/\"}}]}",
                 "rules[0].action: a decide rule's verdict comes from its url");
}

/* ---- decisions -------------------------------------------------------------------- */

static net_verdict decide_self(const net_policy *p, const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    net_flow f = { .transport = NET_TCP, .dst = addr(&ss, ip, port), .to_self = 1 };
    net_verdict v = { .rule = -2 };
    net_policy_decide(p, &f, &v);
    return v;
}

/* The host itself: an allow rule reaches it only by naming the class or the
 * exact address; deny rules match as usual (first match still wins). */
static void host_self(void **state)
{
    (void)state;
    net_policy *p = parse_ok("{\"rules\": [{\"tcp\": {\"to\": [\"10.0.0.0/8\", \"private\", \"0.0.0.0/0\"]}},"
                             " {\"tcp\": {}}, {\"ip\": {\"to\": \"10.1.2.3/32\", \"ports\": 22}},"
                             " {\"tcp\": {\"to\": \"host-self\", \"ports\": 7}}]}");
    net_verdict v = decide_self(p, "10.1.2.3", 80);
    assert_int_equal(v.rule, -1);           /* neither the CIDR, the class nor "any" */
    v = decide_self(p, "10.1.2.3", 22);
    assert_int_equal(v.rule, 2);            /* the exact address */
    assert_int_equal(v.allow, 1);
    v = decide_self(p, "192.0.2.9", 7);
    assert_int_equal(v.rule, 3);            /* the class */
    expect(p, NET_TCP, "10.1.2.3", 80, NULL, 0, 1);   /* the same address, not the host's */
    net_policy_unref(p);
    p = parse_ok("{\"rules\": [{\"action\": \"deny\", \"tcp\": {\"to\": \"private\"}}, {\"tcp\": {\"to\": \"host-self\"}}]}");
    v = decide_self(p, "10.1.2.3", 80);
    assert_int_equal(v.rule, 0);
    assert_int_equal(v.allow, 0);
    net_policy_unref(p);
    p = parse_ok("{\"rules\": [{\"decide\": {\"url\": \"https://d/x\"}}]}");
    assert_int_equal(decide_self(p, "10.1.2.3", 80).rule, -1);
    assert_string_equal(net_policy_decide_rule(p, 0)->url, "https://d/x");
    assert_null(net_policy_decide_rule(p, 1));
    net_policy_unref(p);
    expect_error("{\"rules\": [{\"tcp\": {\"to\": \"host-selfish\"}}]}", "host-self");
}

/* In a netns of its own (a forked child: the parent's cache and watch are
 * inherited and must not be trusted there): 0 when the host's list follows
 * the change, 77 if it cannot make a netns, else the step that failed. */
static int self_watch_child(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    if (inet_pton(AF_INET, "198.18.250.1", &a.sin_addr) != 1)
        return 1;
    if (unshare(CLONE_NEWNET) < 0)
        return 77;
    if (net_self_contains((const struct sockaddr *)&a))
        return 2;
    if (system("ip addr add 198.18.250.1/32 dev lo") != 0)
        return 3;
    /* The very next look-up, well within the cache's second. */
    if (!net_self_contains((const struct sockaddr *)&a))
        return 4;
    if (system("ip addr del 198.18.250.1/32 dev lo") != 0)
        return 5;
    if (net_self_contains((const struct sockaddr *)&a))
        return 6;
    return 0;
}

/* host-self has no window: an address the host adds is its own for the
 * first decision after the add, not up to a second later. */
static void host_self_follows_address_changes(void **state)
{
    (void)state;
    struct sockaddr_in any = { .sin_family = AF_INET };
    net_self_contains((const struct sockaddr *)&any);   /* the parent's cache and watch, for the child to inherit */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(self_watch_child());
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77)
        skip();              /* not root: no netns of its own */
    if (WEXITSTATUS(status) != 0)
        fail_msg("self_watch_child failed at step %d", WEXITSTATUS(status));
}

/* Link-local (the cloud metadata service) is reached only by a rule that
 * names it, as the host is; a tenant's policy may not name either. */
static void link_local_named_only(void **state)
{
    (void)state;
    net_policy *p = parse_ok("{\"rules\": [{\"ip\": {\"to\": [\"0.0.0.0/0\", \"::/0\", \"reserved\"]}},"
                             " {\"tcp\": {\"to\": \"169.254.0.0/16\", \"ports\": 80}},"
                             " {\"udp\": {\"to\": \"link-local\"}}, {\"tcp\": {\"ports\": 443}}]}");
    expect(p, NET_TCP, "169.254.169.254", 80, NULL, 1, 1);   /* the CIDR inside the range */
    expect(p, NET_UDP, "169.254.169.254", 53, NULL, 2, 1);   /* the class */
    expect(p, NET_TCP, "169.254.169.254", 443, NULL, -1, 0); /* neither the catch-alls nor "any" */
    expect(p, NET_TCP, "fe80::1", 80, NULL, -1, 0);
    expect(p, NET_TCP, "1.2.3.4", 80, NULL, 0, 1);           /* the catch-all for the rest */
    net_policy_unref(p);
    cell_error err = { 0 };
    static const char *const refused[] = {
        "{\"rules\": [{\"tcp\": {\"to\": \"host-self\"}}]}", "{\"rules\": [{\"ip\": {\"to\": \"link-local\"}}]}",
        "{\"rules\": [{\"tcp\": {\"to\": \"169.254.169.254/32\"}}]}", "{\"rules\": [{\"udp\": {\"to\": \"fe80::/10\"}}]}",
        "{\"rules\": [{\"decide\": {\"url\": \"https://d/x\", \"to\": \"10.213.0.1\"}}]}",
        "{\"rules\": [{\"dns\": {\"upstreams\": [\"1.1.1.1\"], \"rebind\": [\"host-self\"]}}]}",
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        assert_int_equal(cell_policy_check_v2(refused[i], NULL, &err), -1);
        assert_int_equal(err.code, EACCES);
        assert_non_null(strstr(err.message, "may not open"));
    }
    /* Deny rules, catch-alls and the operator's own CIDRs pass. */
    static const char *const allow[] = { "169.254.169.254/32", NULL };
    assert_int_equal(cell_policy_check_v2("{\"rules\": [{\"tcp\": {\"to\": \"169.254.169.254/32\"}}]}", allow, &err), 0);
    assert_int_equal(cell_policy_check_v2("{\"rules\": [{\"action\": \"deny\", \"ip\": {\"to\": [\"link-local\", "
                                          "\"host-self\"]}}, {\"ip\": {\"to\": \"0.0.0.0/0\"}}]}", NULL, &err), 0);
}

/* DNS rebinding: "rebind" names the answers the resolver may hand out. */
static void dns_rebind(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    net_policy *p = parse_ok("{\"rules\": [{\"dns\": {\"upstreams\": [\"1.1.1.1\"], "
                             "\"rebind\": [\"198.18.0.0/24\", \"loopback\"]}}]}");
    assert_true(net_policy_rebind_ok(p, addr(&ss, "198.18.0.10", 0), 1));
    assert_true(net_policy_rebind_ok(p, addr(&ss, "127.0.0.2", 0), 0));
    assert_false(net_policy_rebind_ok(p, addr(&ss, "169.254.169.254", 0), 0));
    assert_false(net_policy_rebind_ok(p, addr(&ss, "10.0.0.1", 1), 1));
    net_policy_unref(p);
    p = parse_ok("{\"rules\": [{\"dns\": {\"upstreams\": [\"1.1.1.1\"], \"rebind\": \"host-self\"}}]}");
    assert_true(net_policy_rebind_ok(p, addr(&ss, "10.0.0.1", 0), 1));
    assert_false(net_policy_rebind_ok(p, addr(&ss, "127.0.0.1", 0), 0));
    net_policy_unref(p);
    p = parse_ok("{\"rules\": [" DNS_RULE "]}");
    assert_false(net_policy_rebind_ok(p, addr(&ss, "127.0.0.1", 0), 0));
    net_policy_unref(p);
    expect_error("{\"rules\": [{\"dns\": {\"upstreams\": [\"1.1.1.1\"], \"rebind\": 5}}]}", "rules[0].dns.rebind");
    expect_error("{\"rules\": [{\"dns\": {\"upstreams\": [\"1.1.1.1\"], \"rebind\": [\"x\"]}}]}",
                 "rules[0].dns.rebind[0]");
}

static void first_match_and_default_deny(void **state)
{
    (void)state;
    net_policy *p = parse_ok("{\"rules\": ["
                             "{\"action\": \"deny\", \"tcp\": {\"to\": \"10.0.0.5\"}},"
                             "{\"tcp\": {\"to\": \"private\", \"ports\": 22}},"
                             "{\"action\": \"deny\", \"ip\": {\"to\": \"private\"}},"
                             "{\"tcp\": {\"to\": \"public\"}}]}");
    expect(p, NET_TCP, "10.0.0.5", 22, NULL, 0, 0);
    expect(p, NET_TCP, "10.0.0.6", 22, NULL, 1, 1);
    expect(p, NET_TCP, "10.0.0.6", 23, NULL, 2, 0);
    expect(p, NET_UDP, "10.0.0.6", 22, NULL, 2, 0);
    expect(p, NET_TCP, "8.8.8.8", 443, NULL, 3, 1);
    expect(p, NET_UDP, "8.8.8.8", 53, NULL, -1, 0);        /* nothing matches: deny */
    expect(p, NET_TCP, "127.0.0.1", 80, NULL, -1, 0);
    net_verdict v = decide(p, NET_TCP, "8.8.8.8", 443, NULL);
    assert_null(v.http);
    assert_null(v.decide);
    net_policy_unref(p);

    p = parse_ok("{\"rules\": []}");
    expect(p, NET_TCP, "8.8.8.8", 443, NULL, -1, 0);
    net_policy_unref(p);

    /* Not an IP flow, or no flow at all: deny, no rule. */
    p = parse_ok("{\"rules\": [{\"ip\": {}}]}");
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    net_flow f = { .transport = NET_TCP, .dst = (const struct sockaddr *)&un };
    net_verdict w;
    net_policy_decide(p, &f, &w);
    assert_int_equal(w.rule, -1);
    assert_int_equal(w.allow, 0);
    f.dst = NULL;
    net_policy_decide(p, &f, &w);
    assert_int_equal(w.rule, -1);
    net_policy_unref(p);
}

static void transports(void **state)
{
    (void)state;
    net_policy *p = parse_ok("{\"rules\": [{\"tcp\": {\"ports\": 1}}, {\"udp\": {\"ports\": 2}}, {\"ip\": {\"ports\": 3}},"
                             "{\"action\": \"deny\", \"ip\": {}}]}");
    expect(p, NET_TCP, "8.8.8.8", 1, NULL, 0, 1);
    expect(p, NET_UDP, "8.8.8.8", 1, NULL, 3, 0);
    expect(p, NET_UDP, "8.8.8.8", 2, NULL, 1, 1);
    expect(p, NET_TCP, "8.8.8.8", 2, NULL, 3, 0);
    expect(p, NET_TCP, "8.8.8.8", 3, NULL, 2, 1);
    expect(p, NET_UDP, "2606:4700::1111", 3, NULL, 2, 1);
    expect(p, 7, "8.8.8.8", 3, NULL, -1, 0);                 /* unknown transport */
    net_policy_unref(p);
}

static void ports_and_ranges(void **state)
{
    (void)state;
    net_policy *p = parse_ok("{\"rules\": [{\"tcp\": {\"ports\": [443, \"8000-8080\", \"22\", \"1-1\", \"65535\"]}}]}");
    static const struct { uint16_t port; int match; } cases[] = {
        { 443, 1 }, { 442, 0 }, { 444, 0 }, { 8000, 1 }, { 8040, 1 }, { 8080, 1 }, { 7999, 0 }, { 8081, 0 },
        { 22, 1 }, { 1, 1 }, { 2, 0 }, { 65535, 1 }, { 0, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect(p, NET_TCP, "8.8.8.8", cases[i].port, NULL, cases[i].match ? 0 : -1, cases[i].match);
    net_policy_unref(p);
    p = parse_ok("{\"rules\": [{\"tcp\": {\"ports\": \"1000-2000\"}}, {\"udp\": {\"ports\": 53}}]}");
    expect(p, NET_TCP, "8.8.8.8", 1500, NULL, 0, 1);
    expect(p, NET_TCP, "8.8.8.8", 2001, NULL, -1, 0);
    expect(p, NET_UDP, "8.8.8.8", 53, NULL, 1, 1);
    net_policy_unref(p);
}

static void cidrs_and_mapped(void **state)
{
    (void)state;
    net_policy *p = parse_ok("{\"rules\": ["
                             "{\"tcp\": {\"to\": \"10.1.2.3/8\", \"ports\": 1}},"        /* host bits: masked */
                             "{\"tcp\": {\"to\": \"::ffff:192.168.0.0/112\", \"ports\": 2}},"
                             "{\"tcp\": {\"to\": [\"2001:db8::1/32\", \"0.0.0.0/0\"], \"ports\": 3}},"
                             "{\"tcp\": {\"to\": \"::/0\", \"ports\": 4}},"
                             "{\"tcp\": {\"to\": \"172.16.0.1\", \"ports\": 5}},"
                             "{\"tcp\": {\"to\": \"172.16.0.0/31\", \"ports\": 6}},"
                             "{\"tcp\": {\"to\": \"loopback\", \"ports\": 7}}]}");
    expect(p, NET_TCP, "10.9.9.9", 1, NULL, 0, 1);
    expect(p, NET_TCP, "::ffff:10.9.9.9", 1, NULL, 0, 1);     /* mapped flow matches the IPv4 CIDR */
    expect(p, NET_TCP, "11.0.0.1", 1, NULL, -1, 0);
    expect(p, NET_TCP, "192.168.7.7", 2, NULL, 1, 1);          /* mapped CIDR matches IPv4 flows */
    expect(p, NET_TCP, "192.169.0.1", 2, NULL, -1, 0);
    expect(p, NET_TCP, "2001:db8:ffff::9", 3, NULL, 2, 1);
    expect(p, NET_TCP, "2001:db9::9", 3, NULL, -1, 0);
    expect(p, NET_TCP, "1.2.3.4", 3, NULL, 2, 1);
    expect(p, NET_TCP, "2606:4700::1", 4, NULL, 3, 1);
    expect(p, NET_TCP, "1.2.3.4", 4, NULL, -1, 0);              /* ::/0 is IPv6 only */
    expect(p, NET_TCP, "::ffff:1.2.3.4", 4, NULL, -1, 0);       /* ...and mapped flows are IPv4 */
    expect(p, NET_TCP, "172.16.0.1", 5, NULL, 4, 1);
    expect(p, NET_TCP, "172.16.0.2", 5, NULL, -1, 0);
    expect(p, NET_TCP, "172.16.0.1", 6, NULL, 5, 1);
    expect(p, NET_TCP, "172.16.0.2", 6, NULL, -1, 0);
    expect(p, NET_TCP, "::ffff:127.0.0.1", 7, NULL, 6, 1);
    expect(p, NET_TCP, "::1", 7, NULL, 6, 1);
    net_policy_unref(p);
}

static void classes(void **state)
{
    (void)state;
    static const struct { const char *ip; unsigned cls; } cases[] = {
        { "127.0.0.1", NET_CLASS_LOOPBACK }, { "127.255.255.254", NET_CLASS_LOOPBACK },
        { "10.1.2.3", NET_CLASS_PRIVATE }, { "172.16.0.1", NET_CLASS_PRIVATE }, { "172.31.255.255", NET_CLASS_PRIVATE },
        { "172.32.0.1", NET_CLASS_PUBLIC }, { "192.168.1.1", NET_CLASS_PRIVATE }, { "100.64.0.1", NET_CLASS_PRIVATE },
        { "100.127.255.255", NET_CLASS_PRIVATE }, { "100.128.0.1", NET_CLASS_PUBLIC }, { "100.63.255.255", NET_CLASS_PUBLIC },
        { "169.254.169.254", NET_CLASS_LINK_LOCAL }, { "169.254.0.1", NET_CLASS_LINK_LOCAL },
        { "224.0.0.1", NET_CLASS_MULTICAST }, { "239.255.255.250", NET_CLASS_MULTICAST },
        { "255.255.255.255", NET_CLASS_BROADCAST }, { "255.255.255.254", NET_CLASS_RESERVED },
        { "240.0.0.1", NET_CLASS_RESERVED }, { "0.0.0.0", NET_CLASS_RESERVED }, { "0.1.2.3", NET_CLASS_RESERVED },
        { "192.0.0.8", NET_CLASS_RESERVED }, { "192.0.2.1", NET_CLASS_DOCUMENTATION },
        { "198.51.100.7", NET_CLASS_DOCUMENTATION }, { "203.0.113.9", NET_CLASS_DOCUMENTATION },
        { "198.18.0.1", NET_CLASS_RESERVED }, { "198.19.255.255", NET_CLASS_RESERVED }, { "198.20.0.1", NET_CLASS_PUBLIC },
        { "198.17.255.255", NET_CLASS_PUBLIC }, { "8.8.8.8", NET_CLASS_PUBLIC }, { "1.1.1.1", NET_CLASS_PUBLIC },
        { "::1", NET_CLASS_LOOPBACK }, { "::", NET_CLASS_RESERVED }, { "::2", NET_CLASS_RESERVED },
        { "fc00::1", NET_CLASS_PRIVATE }, { "fd12:3456::1", NET_CLASS_PRIVATE }, { "fe80::1", NET_CLASS_LINK_LOCAL },
        { "febf::1", NET_CLASS_LINK_LOCAL }, { "fec0::1", NET_CLASS_RESERVED }, { "ff02::1", NET_CLASS_MULTICAST },
        { "ff0e::1", NET_CLASS_MULTICAST }, { "2001:db8::1", NET_CLASS_DOCUMENTATION },
        { "2606:4700::1111", NET_CLASS_PUBLIC }, { "2a00:1450:4001::1", NET_CLASS_PUBLIC },
        { "64:ff9b::a00:1", NET_CLASS_RESERVED }, { "2002:a00:1::1", NET_CLASS_RESERVED }, { "2001::1", NET_CLASS_RESERVED },
        { "4000::1", NET_CLASS_RESERVED },
        { "::ffff:127.0.0.1", NET_CLASS_LOOPBACK }, { "::ffff:8.8.8.8", NET_CLASS_PUBLIC },
        { "::ffff:10.0.0.1", NET_CLASS_PRIVATE }, { "::ffff:169.254.169.254", NET_CLASS_LINK_LOCAL },
        { "::ffff:255.255.255.255", NET_CLASS_BROADCAST }, { "::ffff:0.0.0.0", NET_CLASS_RESERVED },
    };
    struct sockaddr_storage ss;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        unsigned got = net_addr_class(addr(&ss, cases[i].ip, 80));
        if (got != cases[i].cls)
            print_error("%s: %s, wanted %s\n", cases[i].ip, net_class_name(got), net_class_name(cases[i].cls));
        assert_int_equal(got, cases[i].cls);
    }
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    assert_int_equal(net_addr_class((const struct sockaddr *)&un), NET_CLASS_RESERVED);

    static const char *const names[] = { "loopback", "private", "link-local", "multicast", "broadcast",
                                         "documentation", "reserved", "public" };
    for (unsigned b = 0; b < 8; b++)
        assert_string_equal(net_class_name(1u << b), names[b]);
    assert_string_equal(net_class_name(0), "unknown");
    assert_string_equal(net_class_name(3), "unknown");

    /* Every class name works as a target and matches its own addresses only. */
    net_policy *p = parse_ok("{\"rules\": [{\"ip\": {\"to\": [\"link-local\", \"broadcast\"]}},"
                             "{\"ip\": {\"to\": \"documentation\"}}, {\"ip\": {\"to\": \"multicast\"}},"
                             "{\"ip\": {\"to\": \"reserved\"}}]}");
    expect(p, NET_UDP, "169.254.169.254", 80, NULL, 0, 1);
    expect(p, NET_UDP, "255.255.255.255", 80, NULL, 0, 1);
    expect(p, NET_UDP, "2001:db8::5", 80, NULL, 1, 1);
    expect(p, NET_UDP, "ff02::fb", 5353, NULL, 2, 1);
    expect(p, NET_UDP, "240.1.1.1", 80, NULL, 3, 1);
    expect(p, NET_UDP, "8.8.8.8", 80, NULL, -1, 0);
    net_policy_unref(p);
}

static void host_globs(void **state)
{
    (void)state;
    net_policy *p = parse_ok("{\"rules\": [" DNS_RULE ","
                             "{\"host\": {\"name\": \"API.example.com\", \"ports\": 443}},"
                             "{\"action\": \"deny\", \"host\": {\"name\": \"*.example.com\", \"ports\": [443, 80]}},"
                             "{\"host\": {\"name\": \"*.example.com\"}},"
                             "{\"host\": {\"name\": \"localhost\"}}]}");
    expect(p, NET_TCP, "8.8.8.8", 443, "api.example.com", 1, 1);
    expect(p, NET_TCP, "8.8.8.8", 443, "Api.Example.COM.", 1, 1);
    expect(p, NET_TCP, "8.8.8.8", 80, "api.example.com", 2, 0);
    expect(p, NET_TCP, "8.8.8.8", 443, "x.api.example.com", 2, 0);
    expect(p, NET_TCP, "8.8.8.8", 443, "a.b.example.com", 2, 0);
    expect(p, NET_TCP, "8.8.8.8", 8443, "a.example.com", 3, 1);
    expect(p, NET_TCP, "8.8.8.8", 443, "example.com", -1, 0);   /* the wildcard needs a label */
    expect(p, NET_TCP, "8.8.8.8", 443, ".example.com", -1, 0);
    expect(p, NET_TCP, "8.8.8.8", 443, "badexample.com", -1, 0);
    expect(p, NET_TCP, "8.8.8.8", 443, "example.com.evil", -1, 0);
    expect(p, NET_TCP, "8.8.8.8", 443, "api.example.co", -1, 0);
    expect(p, NET_TCP, "8.8.8.8", 443, NULL, -1, 0);            /* no pinned name: no host rule */
    expect(p, NET_UDP, "8.8.8.8", 443, "api.example.com", -1, 0); /* host rules are TCP */
    expect(p, NET_TCP, "127.0.0.1", 1, "LOCALHOST", 4, 1);
    net_policy_unref(p);
}

static void http_rules(void **state)
{
    (void)state;
    net_policy *p = parse_ok("{\"rules\": [" DNS_RULE ","
                             "{\"http\": {\"host\": \"api.example.com\", \"ports\": [443, 80], \"methods\": [\"get\", \"PATCH\"],"
                             "  \"paths\": [\"/v1/\", \"/health\"], \"set_headers\": {\"Authorization\": \"Bearer ${secret:API_TOKEN.v1-x}\","
                             "  \"X-Cost\": \"$5 {}\"}, \"remove_headers\": [\"Cookie\", \"X-Forwarded-For\"]}},"
                             "{\"action\": \"deny\", \"http\": {\"host\": \"*.example.com\"}},"
                             "{\"http\": {\"host\": \"plain.example.org\"}}]}");
    net_verdict v = decide(p, NET_TCP, "8.8.8.8", 443, "api.example.com");
    assert_int_equal(v.rule, 1);
    assert_int_equal(v.allow, 1);
    assert_null(v.decide);
    assert_non_null(v.http);
    assert_string_equal(v.http->methods[0], "GET");
    assert_string_equal(v.http->methods[1], "PATCH");
    assert_null(v.http->methods[2]);
    assert_string_equal(v.http->paths[0], "/v1/");
    assert_string_equal(v.http->paths[1], "/health");
    assert_null(v.http->paths[2]);
    assert_int_equal(v.http->n_set, 2);
    assert_string_equal(v.http->set[0].name, "Authorization");
    assert_string_equal(v.http->set[0].value, "Bearer ${secret:API_TOKEN.v1-x}");
    assert_string_equal(v.http->set[1].name, "X-Cost");
    assert_string_equal(v.http->remove[0], "Cookie");
    assert_string_equal(v.http->remove[1], "X-Forwarded-For");
    assert_null(v.http->remove[2]);

    v = decide(p, NET_TCP, "8.8.8.8", 8080, "api.example.com");
    assert_int_equal(v.rule, 2);
    assert_int_equal(v.allow, 0);
    assert_null(v.http);

    v = decide(p, NET_TCP, "8.8.8.8", 443, "plain.example.org");
    assert_int_equal(v.rule, 3);
    assert_int_equal(v.allow, 1);
    assert_non_null(v.http);
    assert_null(v.http->methods);
    assert_null(v.http->paths);
    assert_int_equal(v.http->n_set, 0);
    assert_null(v.http->remove);
    net_policy_unref(p);
}

/* A rule injecting a secret refuses plain HTTP unless it says "tls": false;
 * one without a secret allows it unless it says "tls": true. */
static void http_tls_default(void **state)
{
    (void)state;
    static const struct { const char *rule; int tls; } cases[] = {
        { "\"set_headers\": {\"Authorization\": \"Bearer ${secret:K}\"}", 1 },
        { "\"set_headers\": {\"X-A\": \"a\", \"X-B\": \"x${secret:K}y\"}", 1 },
        { "\"set_headers\": {\"X-A\": \"${secret:K}\"}, \"tls\": false", 0 },
        { "\"set_headers\": {\"X-A\": \"${secret:K}\"}, \"tls\": true", 1 },
        { "\"set_headers\": {\"X-A\": \"$5 {secret:K}\"}", 0 },
        { "\"remove_headers\": [\"Cookie\"]", 0 },
        { "\"tls\": true", 1 },
        { "\"tls\": false", 0 },
    };
    char json[512];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(json, sizeof json, "{\"rules\": [" DNS_RULE ", {\"http\": {\"host\": \"a.com\", %s}}]}", cases[i].rule);
        net_policy *p = parse_ok(json);
        net_verdict v = decide(p, NET_TCP, "8.8.8.8", 443, "a.com");
        assert_non_null(v.http);
        if (v.http->tls != cases[i].tls)
            fail_msg("%s: tls %d, expected %d", cases[i].rule, v.http->tls, cases[i].tls);
        net_policy_unref(p);
    }
}

static void decide_rules(void **state)
{
    (void)state;
    net_policy *p = parse_ok("{\"rules\": [{\"decide\": {\"url\": \"http://127.0.0.1:9000/decide\", \"to\": \"public\","
                             "\"ports\": 443}},"
                             "{\"decide\": {\"url\": \"http://[::1]:9/x?y=1\", \"timeout_ms\": 60000, \"cache_s\": 86400}},"
                             "{\"decide\": {\"url\": \"http://decider\"}}]}");
    net_verdict v = decide(p, NET_TCP, "8.8.8.8", 443, NULL);
    assert_int_equal(v.rule, 0);
    assert_int_equal(v.allow, 0);
    assert_null(v.http);
    assert_non_null(v.decide);
    assert_string_equal(v.decide->url, "http://127.0.0.1:9000/decide");
    assert_int_equal(v.decide->timeout_ms, 500);
    assert_int_equal(v.decide->cache_s, 0);
    v = decide(p, NET_UDP, "10.0.0.1", 53, NULL);
    assert_int_equal(v.rule, 1);
    assert_int_equal(v.allow, 0);
    assert_int_equal(v.decide->timeout_ms, 60000);
    assert_int_equal(v.decide->cache_s, 86400);
    net_policy_unref(p);
}

static void dns_config(void **state)
{
    (void)state;
    net_policy *p = parse_ok("{\"rules\": [{\"tcp\": {}}, {\"dns\": {\"strict\": true, \"upstreams\": [\"1.1.1.1\","
                             "\"9.9.9.9:5353\", \"[::1]:5353\", \"::1\", \"[2001:db8::1]\", \"::ffff:8.8.4.4\"]}}]}");
    const net_dns_config *d = net_policy_dns(p);
    assert_non_null(d);
    assert_int_equal(d->rule, 1);
    assert_int_equal(d->strict, 1);
    assert_int_equal(d->n_upstreams, 6);
    static const struct { int family; const char *ip; uint16_t port; } want[] = {
        { AF_INET, "1.1.1.1", 53 }, { AF_INET, "9.9.9.9", 5353 }, { AF_INET6, "::1", 5353 },
        { AF_INET6, "::1", 53 }, { AF_INET6, "2001:db8::1", 53 }, { AF_INET, "8.8.4.4", 53 },
    };
    for (size_t i = 0; i < 6; i++) {
        const struct sockaddr_storage *u = &d->upstreams[i];
        char text[INET6_ADDRSTRLEN];
        assert_int_equal(u->ss_family, want[i].family);
        if (want[i].family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)u;
            assert_int_equal(ntohs(in->sin_port), want[i].port);
            assert_string_equal(inet_ntop(AF_INET, &in->sin_addr, text, sizeof text), want[i].ip);
        } else {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)u;
            assert_int_equal(ntohs(in6->sin6_port), want[i].port);
            assert_string_equal(inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text), want[i].ip);
        }
    }
    /* A dns rule never matches a flow, not even DNS itself. */
    expect(p, NET_UDP, "1.1.1.1", 53, NULL, -1, 0);
    expect(p, NET_TCP, "1.1.1.1", 53, NULL, 0, 1);
    net_policy_unref(p);

    p = parse_ok("{\"rules\": [" DNS_RULE "]}");
    d = net_policy_dns(p);
    assert_int_equal(d->rule, 0);
    assert_int_equal(d->strict, 0);
    assert_int_equal(d->n_upstreams, 1);
    net_policy_unref(p);

    p = parse_ok("{\"rules\": [{\"tcp\": {}}]}");
    assert_null(net_policy_dns(p));
    net_policy_unref(p);
}

static void name_resolvable(void **state)
{
    (void)state;
    net_policy *p = parse_ok("{\"rules\": [{\"tcp\": {}}, " DNS_RULE ","
                             "{\"action\": \"deny\", \"host\": {\"name\": \"blocked.example.net\", \"ports\": 1}},"
                             "{\"http\": {\"host\": \"*.Example.com\", \"ports\": 443}}]}");
    assert_true(net_policy_name_resolvable(p, "blocked.example.net"));
    assert_true(net_policy_name_resolvable(p, "BLOCKED.example.net."));
    assert_true(net_policy_name_resolvable(p, "a.example.com"));
    assert_true(net_policy_name_resolvable(p, "a.b.example.com"));
    assert_false(net_policy_name_resolvable(p, "example.com"));
    assert_false(net_policy_name_resolvable(p, "other.org"));
    assert_false(net_policy_name_resolvable(p, ""));
    assert_false(net_policy_name_resolvable(p, NULL));
    net_policy_unref(p);
    p = parse_ok("{\"rules\": [" DNS_RULE ", {\"tcp\": {}}]}");
    assert_false(net_policy_name_resolvable(p, "example.com"));   /* tcp rules name no host */
    net_policy_unref(p);
}

static void refcount(void **state)
{
    (void)state;
    net_policy *p = parse_ok("{\"rules\": [{\"tcp\": {}}]}");
    assert_ptr_equal(net_policy_ref(p), p);
    assert_ptr_equal(net_policy_ref(p), p);
    net_policy_unref(p);
    net_policy_unref(p);
    expect(p, NET_TCP, "8.8.8.8", 1, NULL, 0, 1);   /* still held once */
    net_policy_unref(p);
    assert_null(net_policy_ref(NULL));
    net_policy_unref(NULL);
    net_policy *q = (net_policy *)1;
    assert_int_equal(net_policy_parse(NULL, 0, &q, NULL), -1);
    assert_null(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(document_errors),
        cmocka_unit_test(too_many_rules),
        cmocka_unit_test(port_errors),
        cmocka_unit_test(target_errors),
        cmocka_unit_test(name_errors),
        cmocka_unit_test(http_errors),
        cmocka_unit_test(dns_errors),
        cmocka_unit_test(decide_errors),
        cmocka_unit_test(first_match_and_default_deny),
        cmocka_unit_test(transports),
        cmocka_unit_test(ports_and_ranges),
        cmocka_unit_test(cidrs_and_mapped),
        cmocka_unit_test(classes),
        cmocka_unit_test(host_globs),
        cmocka_unit_test(http_rules),
        cmocka_unit_test(http_tls_default),
        cmocka_unit_test(decide_rules),
        cmocka_unit_test(dns_config),
        cmocka_unit_test(name_resolvable),
        cmocka_unit_test(refcount),
        cmocka_unit_test(host_self),
        cmocka_unit_test(link_local_named_only),
        cmocka_unit_test(host_self_follows_address_changes),
        cmocka_unit_test(dns_rebind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
