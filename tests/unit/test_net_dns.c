/* test_net_dns.c: the cell's resolver against a fake upstream on 127.0.0.1:
 * policy refusals, AAAA, forwarding over UDP and TCP, id checks, pins and their bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <ldns/ldns.h>

#include "net/dns.h"
#include "util/util.h"

/* ---- the fake upstream ------------------------------------------------------------ */
typedef struct fake_dns {
    int        udp, tcp, stop[2];
    uint16_t   port;
    pthread_t  thread;
    atomic_int queries;                 /* every query received, UDP and TCP */
    atomic_int tcp_queries;
    atomic_int last_id;                 /* the id of the last query received */
} fake_dns;

static fake_dns fake;

static void push(ldns_pkt *r, ldns_pkt_section section, const char *text)
{
    ldns_rr *rr = NULL;
    ldns_status s = section == LDNS_SECTION_QUESTION ? ldns_rr_new_question_frm_str(&rr, text, NULL, NULL)
                                                     : ldns_rr_new_frm_str(&rr, text, 0, NULL, NULL);
    assert_int_equal(s, LDNS_STATUS_OK);
    assert_true(ldns_pkt_push_rr(r, section, rr));
}

static ldns_pkt *reply_to(const ldns_pkt *q, uint16_t id, const char *question)
{
    ldns_pkt *r = ldns_pkt_new();
    ldns_pkt_set_id(r, id);
    ldns_pkt_set_qr(r, true);
    ldns_pkt_set_rd(r, ldns_pkt_rd(q));
    ldns_pkt_set_ra(r, true);
    if (question) {
        push(r, LDNS_SECTION_QUESTION, question);
    } else {
        ldns_rr *qrr = ldns_rr_clone(ldns_rr_list_rr(ldns_pkt_question(q), 0));
        ldns_pkt_push_rr(r, LDNS_SECTION_QUESTION, qrr);
    }
    return r;
}

/* The fake's zone: at most 3 replies per query, sent in order. */
static int answer_for(const ldns_pkt *q, const char *name, int tcp, ldns_pkt *out[3])
{
    uint16_t id = ldns_pkt_id(q);
    ldns_pkt *r = reply_to(q, id, NULL);
    out[0] = r;
    if (strcmp(name, "a.test.") == 0) {
        /* Not 192.0.2/24: some hosts (CI's) are on it, and answers
         * pointing at the host itself are withheld (DNS rebinding). */
        push(r, LDNS_SECTION_ANSWER, "a.test. 300 IN A 203.0.113.1");
        push(r, LDNS_SECTION_ANSWER, "a.test. 300 IN A 203.0.113.2");
    } else if (strcmp(name, "rebind.test.") == 0) {
        push(r, LDNS_SECTION_ANSWER, "rebind.test. 300 IN A 203.0.113.5");
        push(r, LDNS_SECTION_ANSWER, "rebind.test. 300 IN A 127.0.0.1");
    } else if (strcmp(name, "glue.test.") == 0) {
        push(r, LDNS_SECTION_ANSWER, "glue.test. 300 IN A 203.0.113.6");
        push(r, LDNS_SECTION_ADDITIONAL, "ns.glue.test. 300 IN A 169.254.169.254");
    } else if (strcmp(name, "alias.test.") == 0) {
        push(r, LDNS_SECTION_ANSWER, "alias.test. 300 IN CNAME mid.test.");
        push(r, LDNS_SECTION_ANSWER, "mid.test. 300 IN CNAME target.test.");
        push(r, LDNS_SECTION_ANSWER, "target.test. 300 IN A 192.0.2.10");
        push(r, LDNS_SECTION_ANSWER, "unrelated.test. 300 IN A 192.0.2.99");
    } else if (strcmp(name, "big.test.") == 0) {
        if (tcp)
            push(r, LDNS_SECTION_ANSWER, "big.test. 300 IN A 192.0.2.20");
        else
            ldns_pkt_set_tc(r, true);
    } else if (strcmp(name, "wrongid.test.") == 0) {
        /* A wrong id, then the right id with a wrong question, then the answer. */
        ldns_pkt *bad_id = reply_to(q, (uint16_t)(id + 1), NULL);
        push(bad_id, LDNS_SECTION_ANSWER, "wrongid.test. 300 IN A 192.0.2.66");
        ldns_pkt *bad_q = reply_to(q, id, "other.test. IN A");
        push(bad_q, LDNS_SECTION_ANSWER, "other.test. 300 IN A 192.0.2.67");
        push(r, LDNS_SECTION_ANSWER, "wrongid.test. 300 IN A 192.0.2.30");
        out[0] = bad_id, out[1] = bad_q, out[2] = r;
        return 3;
    } else if (strcmp(name, "tiny.test.") == 0) {
        push(r, LDNS_SECTION_ANSWER, "tiny.test. 0 IN A 192.0.2.40");
    } else if (strcmp(name, "silent.test.") == 0) {
        ldns_pkt_free(r);
        return 0;
    } else {
        ldns_pkt_set_rcode(r, LDNS_RCODE_NXDOMAIN);
    }
    return 1;
}

/* The replies to one query (wire form), counted as received. */
static int fake_handle(const uint8_t *buf, size_t len, int tcp, uint8_t *wire[3], size_t wlen[3])
{
    ldns_pkt *q = NULL;
    if (ldns_wire2pkt(&q, buf, len) != LDNS_STATUS_OK || ldns_pkt_qdcount(q) != 1) {
        ldns_pkt_free(q);
        return 0;
    }
    atomic_fetch_add(&fake.queries, 1);
    atomic_fetch_add(&fake.tcp_queries, tcp);
    atomic_store(&fake.last_id, ldns_pkt_id(q));
    char *name = ldns_rdf2str(ldns_rr_owner(ldns_rr_list_rr(ldns_pkt_question(q), 0)));
    for (char *c = name; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
    ldns_pkt *out[3];
    int n = answer_for(q, name, tcp, out);
    for (int i = 0; i < n; i++) {
        assert_int_equal(ldns_pkt2wire(&wire[i], out[i], &wlen[i]), LDNS_STATUS_OK);
        ldns_pkt_free(out[i]);
    }
    free(name);
    ldns_pkt_free(q);
    return n;
}

static void fake_udp(void)
{
    uint8_t buf[4096], *wire[3];
    size_t wlen[3];
    struct sockaddr_storage from;
    socklen_t flen = sizeof from;
    ssize_t n = recvfrom(fake.udp, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
    int k = n > 0 ? fake_handle(buf, (size_t)n, 0, wire, wlen) : 0;
    for (int i = 0; i < k; i++) {
        sendto(fake.udp, wire[i], wlen[i], 0, (struct sockaddr *)&from, flen);
        free(wire[i]);
    }
}

static void fake_tcp(void)
{
    int fd = accept(fake.tcp, NULL, NULL);
    if (fd < 0)
        return;
    struct timeval tv = { .tv_sec = 2 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t hdr[2], buf[4096], *wire[3];
    size_t wlen[3];
    int k = 0;
    if (util_read_all(fd, hdr, 2) == 2) {
        size_t len = (size_t)hdr[0] << 8 | hdr[1];
        if (len <= sizeof buf && util_read_all(fd, buf, len) == (ssize_t)len)
            k = fake_handle(buf, len, 1, wire, wlen);
    }
    for (int i = 0; i < k; i++) {
        uint8_t pre[2] = { (uint8_t)(wlen[i] >> 8), (uint8_t)wlen[i] };
        util_write_all(fd, pre, 2);
        util_write_all(fd, wire[i], wlen[i]);
        free(wire[i]);
    }
    close(fd);
}

static void *fake_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd pf[3] = { { .fd = fake.udp, .events = POLLIN }, { .fd = fake.tcp, .events = POLLIN },
                                { .fd = fake.stop[0], .events = POLLIN } };
        if (poll(pf, 3, -1) < 0 || pf[2].revents)
            return NULL;
        if (pf[0].revents)
            fake_udp();
        if (pf[1].revents)
            fake_tcp();
    }
}

static struct sockaddr_in loopback(uint16_t port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sin;
}

/* A UDP socket on an ephemeral loopback port; *port tells which. */
static int bound_udp(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = loopback(0);
    socklen_t l = sizeof sin;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &l), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

static int fake_start(void **state)
{
    (void)state;
    fake.udp = bound_udp(&fake.port);
    fake.tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = loopback(fake.port);
    int one = 1;
    setsockopt(fake.tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fake.tcp, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fake.tcp, 8) < 0 || pipe(fake.stop) < 0)
        return -1;
    return pthread_create(&fake.thread, NULL, fake_main, NULL) == 0 ? 0 : -1;
}

static int fake_stop(void **state)
{
    (void)state;
    if (write(fake.stop[1], "x", 1) != 1)
        return -1;
    pthread_join(fake.thread, NULL);
    close(fake.udp), close(fake.tcp), close(fake.stop[0]), close(fake.stop[1]);
    return 0;
}

static int reset(void **state)
{
    (void)state;
    atomic_store(&fake.queries, 0);
    atomic_store(&fake.tcp_queries, 0);
    net_dns_set_timeout_ms(0);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------ */

static net_policy *policy(const char *json)
{
    net_policy *p = NULL;
    cell_error err = { 0 };
    if (net_policy_parse(json, strlen(json), &p, &err) < 0)
        print_error("policy %s: %s\n", json, err.message);
    assert_non_null(p);
    return p;
}

/* A dns rule that asks the fake (after 127.0.0.1:dead_port, if given) and
 * a host rule for a.test, the one name strict mode lets through. */
static net_policy *dns_policy(int strict, int dead_port)
{
    char json[512], dead[32] = "";
    if (dead_port)
        snprintf(dead, sizeof dead, "\"127.0.0.1:%d\", ", dead_port);
    snprintf(json, sizeof json,
             "{\"rules\": [{\"dns\": {\"upstreams\": [%s\"127.0.0.1:%u\"], \"strict\": %s}},"
             " {\"host\": {\"name\": \"a.test\", \"ports\": 443}}]}",
             dead, fake.port, strict ? "true" : "false");
    return policy(json);
}

static void query_wire(const char *name, ldns_rr_type type, uint16_t id, uint8_t **wire, size_t *len)
{
    ldns_pkt *q = NULL;
    assert_int_equal(ldns_pkt_query_new_frm_str(&q, name, type, LDNS_RR_CLASS_IN, LDNS_RD), LDNS_STATUS_OK);
    ldns_pkt_set_id(q, id);
    assert_int_equal(ldns_pkt2wire(wire, q, len), LDNS_STATUS_OK);
    ldns_pkt_free(q);
}

/* Ask; the reply must parse, be a response and carry our id. */
static ldns_pkt *ask(const net_policy *p, net_pins *pins, const char *name, ldns_rr_type type, net_dns_result *res)
{
    uint8_t *q = NULL, *reply = NULL;
    size_t qlen = 0, rlen = 0;
    uint16_t id = 0xbeef;
    cell_error err = { 0 };
    query_wire(name, type, id, &q, &qlen);
    int rc = net_dns_answer(p, pins, q, qlen, &reply, &rlen, res, &err);
    if (rc != 0)
        print_error("net_dns_answer(%s): %s\n", name, err.message);
    assert_int_equal(rc, 0);
    ldns_pkt *r = NULL;
    assert_int_equal(ldns_wire2pkt(&r, reply, rlen), LDNS_STATUS_OK);
    assert_true(ldns_pkt_qr(r));
    assert_int_equal(ldns_pkt_id(r), id);
    assert_int_equal((int)ldns_pkt_get_rcode(r), res->rcode);
    free(q);
    free(reply);
    return r;
}

static struct sockaddr_in ip4(const char *text)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    assert_int_equal(inet_pton(AF_INET, text, &sin.sin_addr), 1);
    return sin;
}

/* The name pinned to an IPv4 address, "" if none. */
static const char *pinned(net_pins *pins, const char *addr)
{
    static char name[256];
    struct sockaddr_in sin = ip4(addr);
    int r = net_pins_lookup(pins, (struct sockaddr *)&sin, name, sizeof name);
    assert_int_equal(r, name[0] != '\0');
    return name;
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_refused_without_dns_rule(void **state)
{
    (void)state;
    net_policy *p = policy("{\"rules\": [{\"tcp\": {\"ports\": 443}}]}");
    net_pins *pins = net_pins_new();
    net_dns_result res;
    ldns_pkt *r = ask(p, pins, "a.test", LDNS_RR_TYPE_A, &res);
    assert_int_equal(res.rcode, LDNS_RCODE_REFUSED);
    assert_int_equal(res.blocked, 1);
    assert_int_equal(res.forwarded, 0);
    assert_string_equal(res.qname, "a.test");
    assert_int_equal(res.qtype, LDNS_RR_TYPE_A);
    assert_int_equal(ldns_pkt_qdcount(r), 1);        /* the question is echoed */
    assert_int_equal(atomic_load(&fake.queries), 0);
    ldns_pkt_free(r);
    net_pins_free(pins);
    net_policy_unref(p);
}

static void test_strict_nxdomain(void **state)
{
    (void)state;
    net_policy *p = dns_policy(1, 0);
    net_pins *pins = net_pins_new();
    net_dns_result res;
    ldns_pkt *r = ask(p, pins, "evil.test.", LDNS_RR_TYPE_A, &res);
    assert_int_equal(res.rcode, LDNS_RCODE_NXDOMAIN);
    assert_int_equal(res.blocked, 1);
    assert_int_equal(res.forwarded, 0);
    assert_int_equal(ldns_pkt_ancount(r), 0);
    assert_int_equal(atomic_load(&fake.queries), 0);
    ldns_pkt_free(r);
    /* A name some rule allows goes through, whatever its case. */
    r = ask(p, pins, "A.Test.", LDNS_RR_TYPE_A, &res);
    assert_string_equal(res.qname, "a.test");
    assert_int_equal(res.rcode, LDNS_RCODE_NOERROR);
    assert_int_equal(res.blocked, 0);
    assert_int_equal(res.forwarded, 1);
    assert_int_equal(ldns_pkt_ancount(r), 2);
    assert_int_equal(atomic_load(&fake.queries), 1);
    ldns_pkt_free(r);
    net_pins_free(pins);
    net_policy_unref(p);
}

static void test_aaaa_empty(void **state)
{
    (void)state;
    net_policy *p = dns_policy(0, 0);
    net_pins *pins = net_pins_new();
    net_dns_result res;
    ldns_pkt *r = ask(p, pins, "a.test", LDNS_RR_TYPE_AAAA, &res);
    assert_int_equal(res.rcode, LDNS_RCODE_NOERROR);
    assert_int_equal(res.qtype, LDNS_RR_TYPE_AAAA);
    assert_int_equal(res.forwarded, 0);
    assert_int_equal(res.blocked, 0);
    assert_int_equal(ldns_pkt_ancount(r), 0);
    assert_int_equal(ldns_pkt_qdcount(r), 1);
    assert_int_equal(ldns_rr_get_type(ldns_rr_list_rr(ldns_pkt_question(r), 0)), LDNS_RR_TYPE_AAAA);
    assert_int_equal(atomic_load(&fake.queries), 0);
    ldns_pkt_free(r);
    net_pins_free(pins);
    net_policy_unref(p);
}

static void test_a_pinned(void **state)
{
    (void)state;
    net_policy *p = dns_policy(0, 0);
    net_pins *pins = net_pins_new();
    net_dns_result res;
    ldns_pkt *r = ask(p, pins, "a.test", LDNS_RR_TYPE_A, &res);
    assert_int_equal(res.rcode, LDNS_RCODE_NOERROR);
    assert_int_equal(res.forwarded, 1);
    assert_int_equal(res.n_pinned, 2);
    assert_int_equal(ldns_pkt_ancount(r), 2);
    assert_string_equal(pinned(pins, "203.0.113.1"), "a.test");
    assert_string_equal(pinned(pins, "203.0.113.2"), "a.test");
    assert_string_equal(pinned(pins, "203.0.113.3"), "");
    /* The same address as IPv4-mapped IPv6. */
    struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };
    char name[256];
    assert_int_equal(inet_pton(AF_INET6, "::ffff:203.0.113.1", &s6.sin6_addr), 1);
    assert_int_equal(net_pins_lookup(pins, (struct sockaddr *)&s6, name, sizeof name), 1);
    assert_string_equal(name, "a.test");
    ldns_pkt_free(r);
    net_pins_free(pins);
    net_policy_unref(p);
}

/* An answer pointing at loopback (or link-local, even in the additional
 * section) is withheld: REFUSED, nothing pinned, the reason said; a policy
 * whose "rebind" names the address gets it. */
static void test_rebinding_refused(void **state)
{
    (void)state;
    net_policy *p = dns_policy(0, 0);
    net_pins *pins = net_pins_new();
    net_dns_result res;
    const char *names[] = { "rebind.test", "glue.test" };
    for (size_t i = 0; i < 2; i++) {
        ldns_pkt *r = ask(p, pins, names[i], LDNS_RR_TYPE_A, &res);
        assert_int_equal(res.rcode, LDNS_RCODE_REFUSED);
        assert_int_equal(res.blocked, 1);
        assert_int_equal(res.n_pinned, 0);
        assert_int_equal(ldns_pkt_ancount(r), 0);
        assert_non_null(strstr(res.refused, "DNS rebinding"));
        ldns_pkt_free(r);
    }
    assert_non_null(strstr(res.refused, "169.254.169.254"));
    assert_string_equal(pinned(pins, "203.0.113.5"), "");
    net_pins_free(pins);
    net_policy_unref(p);
    char json[256];
    snprintf(json, sizeof json, "{\"rules\": [{\"dns\": {\"upstreams\": [\"127.0.0.1:%u\"], \"rebind\": \"loopback\"}}]}",
             fake.port);
    p = policy(json);
    pins = net_pins_new();
    ldns_pkt *r = ask(p, pins, "rebind.test", LDNS_RR_TYPE_A, &res);
    assert_int_equal(res.rcode, LDNS_RCODE_NOERROR);
    assert_string_equal(res.refused, "");
    assert_int_equal(ldns_pkt_ancount(r), 2);
    ldns_pkt_free(r);
    net_pins_free(pins);
    net_policy_unref(p);
}

static void test_cname_chain(void **state)
{
    (void)state;
    net_policy *p = dns_policy(0, 0);
    net_pins *pins = net_pins_new();
    net_dns_result res;
    ldns_pkt *r = ask(p, pins, "Alias.test", LDNS_RR_TYPE_A, &res);
    assert_int_equal(res.rcode, LDNS_RCODE_NOERROR);
    assert_int_equal(res.n_pinned, 1);
    assert_int_equal(ldns_pkt_ancount(r), 4);           /* passed through unchanged */
    assert_string_equal(pinned(pins, "192.0.2.10"), "alias.test");
    assert_string_equal(pinned(pins, "192.0.2.99"), "");  /* not reachable from the qname */
    ldns_pkt_free(r);
    net_pins_free(pins);
    net_policy_unref(p);
}

static void test_upstream_nxdomain(void **state)
{
    (void)state;
    net_policy *p = dns_policy(0, 0);
    net_pins *pins = net_pins_new();
    net_dns_result res;
    ldns_pkt *r = ask(p, pins, "nx.test", LDNS_RR_TYPE_A, &res);
    assert_int_equal(res.rcode, LDNS_RCODE_NXDOMAIN);
    assert_int_equal(res.forwarded, 1);
    assert_int_equal(res.blocked, 0);
    assert_int_equal(res.n_pinned, 0);
    ldns_pkt_free(r);
    net_pins_free(pins);
    net_policy_unref(p);
}

static void test_truncated_goes_tcp(void **state)
{
    (void)state;
    net_policy *p = dns_policy(0, 0);
    net_pins *pins = net_pins_new();
    net_dns_result res;
    ldns_pkt *r = ask(p, pins, "big.test", LDNS_RR_TYPE_A, &res);
    assert_int_equal(res.rcode, LDNS_RCODE_NOERROR);
    assert_false(ldns_pkt_tc(r));
    assert_int_equal(ldns_pkt_ancount(r), 1);
    assert_int_equal(atomic_load(&fake.queries), 2);
    assert_int_equal(atomic_load(&fake.tcp_queries), 1);
    assert_string_equal(pinned(pins, "192.0.2.20"), "big.test");
    ldns_pkt_free(r);
    net_pins_free(pins);
    net_policy_unref(p);
}

static void test_wrong_replies_ignored(void **state)
{
    (void)state;
    net_policy *p = dns_policy(0, 0);
    net_pins *pins = net_pins_new();
    net_dns_result res;
    ldns_pkt *r = ask(p, pins, "wrongid.test", LDNS_RR_TYPE_A, &res);
    assert_int_equal(res.rcode, LDNS_RCODE_NOERROR);
    assert_int_equal(res.n_pinned, 1);
    assert_int_equal(ldns_pkt_ancount(r), 1);
    assert_string_equal(pinned(pins, "192.0.2.30"), "wrongid.test");
    assert_string_equal(pinned(pins, "192.0.2.66"), "");
    assert_string_equal(pinned(pins, "192.0.2.67"), "");
    ldns_pkt_free(r);
    net_pins_free(pins);
    net_policy_unref(p);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_silent_servfail(void **state)
{
    (void)state;
    net_dns_set_timeout_ms(200);
    net_policy *p = dns_policy(0, 0);
    net_pins *pins = net_pins_new();
    net_dns_result res;
    int64_t start = mono_ms();
    ldns_pkt *r = ask(p, pins, "silent.test", LDNS_RR_TYPE_A, &res);
    int64_t took = mono_ms() - start;
    assert_int_equal(res.rcode, LDNS_RCODE_SERVFAIL);
    assert_int_equal(res.forwarded, 1);
    assert_int_equal(ldns_pkt_qdcount(r), 1);
    assert_true(took >= 190 && took < 1500);
    ldns_pkt_free(r);
    net_pins_free(pins);
    net_policy_unref(p);
}

static void test_failover(void **state)
{
    (void)state;
    net_dns_set_timeout_ms(200);
    uint16_t dead_port;
    int dead = bound_udp(&dead_port);            /* bound, never read: a black hole */
    net_policy *p = dns_policy(0, dead_port);
    net_pins *pins = net_pins_new();
    net_dns_result res;
    ldns_pkt *r = ask(p, pins, "a.test", LDNS_RR_TYPE_A, &res);
    assert_int_equal(res.rcode, LDNS_RCODE_NOERROR);
    assert_int_equal(ldns_pkt_ancount(r), 2);
    assert_int_equal(atomic_load(&fake.queries), 1);
    ldns_pkt_free(r);
    net_pins_free(pins);
    net_policy_unref(p);
    close(dead);
}

static void test_fresh_upstream_ids(void **state)
{
    (void)state;
    net_policy *p = dns_policy(0, 0);
    net_pins *pins = net_pins_new();
    net_dns_result res;
    /* ask() sends 0xbeef and checks the reply carries it back; upstream the
     * id is random (four equal draws: a chance of 2^-64). */
    int differs = 0;
    for (int i = 0; i < 4; i++) {
        ldns_pkt_free(ask(p, pins, "a.test", LDNS_RR_TYPE_A, &res));
        differs |= atomic_load(&fake.last_id) != 0xbeef;
    }
    assert_true(differs);
    net_pins_free(pins);
    net_policy_unref(p);
}

static void expect_unparsed(const net_policy *p, const uint8_t *q, size_t len)
{
    uint8_t *reply = (uint8_t *)1;
    size_t rlen = 1;
    net_dns_result res;
    cell_error err = { 0 };
    assert_int_equal(net_dns_answer(p, NULL, q, len, &reply, &rlen, &res, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_null(reply);
    assert_int_equal(rlen, 0);
}

/* A query built by hand with ldns: FORMERR expected. */
static void expect_formerr(const net_policy *p, ldns_pkt *q)
{
    uint8_t *wire = NULL, *reply = NULL;
    size_t len = 0, rlen = 0;
    net_dns_result res;
    assert_int_equal(ldns_pkt2wire(&wire, q, &len), LDNS_STATUS_OK);
    assert_int_equal(net_dns_answer(p, NULL, wire, len, &reply, &rlen, &res, NULL), 0);
    ldns_pkt *r = NULL;
    assert_int_equal(ldns_wire2pkt(&r, reply, rlen), LDNS_STATUS_OK);
    assert_int_equal(ldns_pkt_get_rcode(r), LDNS_RCODE_FORMERR);
    assert_int_equal(res.rcode, LDNS_RCODE_FORMERR);
    assert_int_equal(ldns_pkt_id(r), ldns_pkt_id(q));
    ldns_pkt_free(r);
    free(wire);
    free(reply);
    ldns_pkt_free(q);
}

static void test_malformed(void **state)
{
    (void)state;
    net_policy *p = dns_policy(0, 0);
    static const uint8_t garbage[] = { 0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x40, 'x' };
    expect_unparsed(p, garbage, sizeof garbage);          /* a label running off the end */
    expect_unparsed(p, garbage, 5);                       /* shorter than a header */
    expect_unparsed(p, NULL, 0);
    /* A response is not a query. */
    uint8_t *wire = NULL;
    size_t len = 0;
    query_wire("a.test", LDNS_RR_TYPE_A, 7, &wire, &len);
    wire[2] |= 0x80;
    expect_unparsed(p, wire, len);
    free(wire);

    ldns_pkt *two = NULL;
    assert_int_equal(ldns_pkt_query_new_frm_str(&two, "a.test", LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, LDNS_RD),
                     LDNS_STATUS_OK);
    ldns_pkt_set_id(two, 41);
    push(two, LDNS_SECTION_QUESTION, "b.test. IN A");
    expect_formerr(p, two);
    ldns_pkt *chaos = NULL;
    assert_int_equal(ldns_pkt_query_new_frm_str(&chaos, "version.bind", LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_CH, 0),
                     LDNS_STATUS_OK);
    ldns_pkt_set_id(chaos, 42);
    expect_formerr(p, chaos);
    ldns_pkt *none = ldns_pkt_new();
    ldns_pkt_set_id(none, 43);
    expect_formerr(p, none);
    assert_int_equal(atomic_load(&fake.queries), 0);
    net_policy_unref(p);
}

static void test_pin_expiry(void **state)
{
    (void)state;
    net_policy *p = dns_policy(0, 0);
    net_pins *pins = net_pins_new();
    net_dns_result res;
    ldns_pkt_free(ask(p, pins, "tiny.test", LDNS_RR_TYPE_A, &res));     /* TTL 0 */
    assert_int_equal(res.n_pinned, 1);
    usleep(1100 * 1000);                                /* TTL 0 raised to 5 s */
    assert_string_equal(pinned(pins, "192.0.2.40"), "tiny.test");
    usleep(4100 * 1000);
    assert_string_equal(pinned(pins, "192.0.2.40"), "");
    net_pins_free(pins);
    net_policy_unref(p);
}

static void add4(net_pins *pins, uint32_t addr, const char *name, uint32_t ttl)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(addr) };
    net_pins_add(pins, (struct sockaddr *)&sin, name, ttl);
}

static int has4(net_pins *pins, uint32_t addr)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(addr) };
    return net_pins_lookup(pins, (struct sockaddr *)&sin, NULL, 0);
}

static void test_pins_bound(void **state)
{
    (void)state;
    net_pins *pins = net_pins_new();
    const uint32_t base = 0x0a000000;                   /* 10.0.0.0 */
    add4(pins, base, "short.test", 10);
    for (uint32_t i = 1; i < 4096; i++)
        add4(pins, base + i, "long.test", 1000);
    assert_true(has4(pins, base));
    /* Full: the entry expiring soonest makes room. */
    add4(pins, 0x0b000001, "new.test", 2000);
    assert_false(has4(pins, base));
    assert_true(has4(pins, 0x0b000001));
    assert_true(has4(pins, base + 1));
    /* Many more: the table keeps the latest-expiring 4096. */
    for (uint32_t i = 0; i < 5000; i++)
        add4(pins, 0x0c000000 + i, "later.test", 3000);
    assert_false(has4(pins, 0x0b000001));
    for (uint32_t i = 1; i < 4096; i++)
        assert_false(has4(pins, base + i));
    int kept = 0;
    for (uint32_t i = 0; i < 5000; i++)
        kept += has4(pins, 0x0c000000 + i);
    assert_int_equal(kept, 4096);
    assert_true(has4(pins, 0x0c000000 + 4999));
    net_pins_free(pins);
}

static void test_pins_names_and_families(void **state)
{
    (void)state;
    net_pins *pins = net_pins_new();
    char name[256];
    struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr), 1);
    net_pins_add(pins, (struct sockaddr *)&s6, "Six.Example.COM.", 60);
    assert_int_equal(net_pins_lookup(pins, (struct sockaddr *)&s6, name, sizeof name), 1);
    assert_string_equal(name, "six.example.com");
    /* 10.0.0.1 is not 2001:db8::1, whatever their bytes share. */
    assert_int_equal(has4(pins, 0x0a000001), 0);
    /* The last name resolved to an address is the one it answers for. */
    add4(pins, 0x0a000001, "one.test", 60);
    add4(pins, 0x0a000001, "two.test", 60);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000001) };
    assert_int_equal(net_pins_lookup(pins, (struct sockaddr *)&sin, name, sizeof name), 1);
    assert_string_equal(name, "two.test");
    /* A short buffer gets a truncated, terminated name. */
    assert_int_equal(net_pins_lookup(pins, (struct sockaddr *)&sin, name, 4), 1);
    assert_string_equal(name, "two");
    net_pins_free(pins);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_refused_without_dns_rule, reset),
        cmocka_unit_test_setup(test_strict_nxdomain, reset),
        cmocka_unit_test_setup(test_aaaa_empty, reset),
        cmocka_unit_test_setup(test_a_pinned, reset),
        cmocka_unit_test_setup(test_rebinding_refused, reset),
        cmocka_unit_test_setup(test_cname_chain, reset),
        cmocka_unit_test_setup(test_upstream_nxdomain, reset),
        cmocka_unit_test_setup(test_truncated_goes_tcp, reset),
        cmocka_unit_test_setup(test_wrong_replies_ignored, reset),
        cmocka_unit_test_setup(test_silent_servfail, reset),
        cmocka_unit_test_setup(test_failover, reset),
        cmocka_unit_test_setup(test_fresh_upstream_ids, reset),
        cmocka_unit_test_setup(test_malformed, reset),
        cmocka_unit_test_setup(test_pin_expiry, reset),
        cmocka_unit_test_setup(test_pins_bound, reset),
        cmocka_unit_test_setup(test_pins_names_and_families, reset),
    };
    return cmocka_run_group_tests(tests, fake_start, fake_stop);
}
