/* dns.h: the cell's resolver: answers the cell's queries through the
 * policy's upstreams and pins every address it hands out to its name. */
#ifndef CELL_NET_DNS_H
#define CELL_NET_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/policy.h"

/* Address -> name, with the TTL of the answer that carried it.  A host rule
 * trusts a name only through this table.  Thread-safe. */
typedef struct net_pins net_pins;
net_pins *net_pins_new(void);
void net_pins_free(net_pins *pins);
/* Port in `addr` is ignored.  The TTL is clamped to [5 s, 1 h] so a name
 * stays usable for a connection that follows its lookup. */
void net_pins_add(net_pins *pins, const struct sockaddr *addr, const char *name, uint32_t ttl_s);
/* 1 and the (lower-case, no trailing dot) name if addr is pinned and not expired. */
int  net_pins_lookup(net_pins *pins, const struct sockaddr *addr, char *name, size_t size);

typedef struct net_dns_result {
    char qname[256];     /* lower case, no trailing dot */
    int  qtype;          /* 1 A, 28 AAAA, ... */
    int  rcode;          /* of the reply sent to the cell */
    int  forwarded;      /* 1 if an upstream was asked */
    int  blocked;        /* 1 if refused by policy (no dns rule, strict mode) */
    int  n_pinned;       /* addresses pinned from the answer */
    char refused[128];   /* why the upstream's answer was withheld (DNS rebinding), or "" */
} net_dns_result;

/* Answer one query read from the cell (over_tcp: without the 2-byte length
 * prefix).  The reply (malloc()ed) carries the query's id.
 * - no dns rule: REFUSED; strict mode and a name no rule allows: NXDOMAIN;
 * - AAAA: an empty NOERROR (cells have no IPv6; clients fall back fast);
 * - else forwarded to the upstreams in order (UDP, 2 s each, TCP when the
 *   answer is truncated); A records of the answer are pinned to qname
 *   (also through CNAME chains); no upstream answering: SERVFAIL;
 * - an answer with an address record pointing at loopback, link-local,
 *   unspecified, multicast, broadcast or the host itself (net_screen_reason)
 *   that the policy's "rebind" does not accept: REFUSED, res->refused says
 *   why, nothing pinned (DNS rebinding).
 * A query that does not parse: -1 (EINVAL), no reply. */
int net_dns_answer(const net_policy *p, net_pins *pins, const uint8_t *query, size_t len,
                   uint8_t **reply, size_t *reply_len, net_dns_result *res, cell_error *err);

/* How long each upstream gets to answer (default 2000 ms; ms <= 0 restores
 * it).  Process-wide, for tests that cannot wait 2 s per dead upstream. */
void net_dns_set_timeout_ms(int ms);

#endif
