/* fuzz_policy.c: libFuzzer target for the network policy: arbitrary bytes are
 * parsed, and a policy that parses is asked about flows derived from them. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/policy.h"

/* Verdicts must be self-consistent whatever the policy says. */
static void check_verdict(const net_verdict *v)
{
    if (v->allow != 0 && v->allow != 1)
        abort();
    if (v->rule < -1 || v->rule >= 256)
        abort();
    if (v->rule == -1 && (v->allow || v->http || v->decide))
        abort();
    if ((v->decide && v->allow) || (v->http && !v->allow) || (v->http && v->decide))
        abort();
}

/* Up to 16 input bytes, zero-padded: addresses and ports come from the
 * input so that the fuzzer can steer them towards the policy's CIDRs. */
static void take(const uint8_t *data, size_t size, size_t off, uint8_t *out, size_t n)
{
    memset(out, 0, n);
    for (size_t i = 0; i < n && off + i < size; i++)
        out[i] = data[off + i];
}

static void one_flow(const net_policy *p, const struct sockaddr *sa, const char *host)
{
    for (int transport = NET_TCP; transport <= NET_UDP; transport++) {
        net_flow f = { .transport = transport, .dst = sa, .host = host };
        net_verdict v;
        net_policy_decide(p, &f, &v);
        check_verdict(&v);
    }
    unsigned cls = net_addr_class(sa);
    if (cls == 0 || (cls & (cls - 1)) != 0)
        abort();   /* exactly one class */
}

static void flows(const net_policy *p, const uint8_t *data, size_t size)
{
    static const char *const hosts[] = { NULL, "example.com", "a.example.com", "API.EXAMPLE.COM.", "localhost", "" };
    uint8_t raw[18];
    take(data, size, size > 18 ? size - 18 : 0, raw, sizeof raw);   /* the tail: least likely to be syntax */
    uint16_t port = (uint16_t)(raw[16] << 8 | raw[17]);

    struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(port) };
    memcpy(&in.sin_addr, raw, 4);
    struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
    memcpy(&in6.sin6_addr, raw, 16);
    struct sockaddr_in6 mapped = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
    mapped.sin6_addr.s6_addr[10] = mapped.sin6_addr.s6_addr[11] = 0xff;
    memcpy(mapped.sin6_addr.s6_addr + 12, raw, 4);

    /* The input itself as a host name, bounded like DNS names are. */
    char name[256];
    size_t n = size < sizeof name - 1 ? size : sizeof name - 1;
    memcpy(name, data, n);
    name[n] = '\0';

    for (size_t h = 0; h < sizeof hosts / sizeof *hosts; h++) {
        one_flow(p, (const struct sockaddr *)&in, hosts[h]);
        one_flow(p, (const struct sockaddr *)&in6, hosts[h]);
        one_flow(p, (const struct sockaddr *)&mapped, hosts[h]);
        if (hosts[h])
            net_policy_name_resolvable(p, hosts[h]);
    }
    one_flow(p, (const struct sockaddr *)&in, name);
    net_policy_name_resolvable(p, name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    net_policy *p = NULL;
    cell_error err;
    if (net_policy_parse((const char *)data, size, &p, &err) < 0) {
        if (p || memchr(err.message, '\0', sizeof err.message) == NULL)
            abort();
        return 0;
    }
    const net_dns_config *d = net_policy_dns(p);
    if (d && (d->n_upstreams < 1 || d->n_upstreams > NET_DNS_MAX_UPSTREAMS))
        abort();
    net_policy_ref(p);
    flows(p, data, size);
    net_policy_unref(p);
    net_policy_unref(p);
    return 0;
}
