/* policy.h: a cell's network policy: parsed from JSON, validated with errors
 * that name the rule and field, and asked about each flow (first match wins). */
#ifndef CELL_NET_POLICY_H
#define CELL_NET_POLICY_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cell.h"

/* The policy document:
 *   {"rules": [RULE, ...]}
 *   RULE = {"action": "allow" | "deny" (default "allow"), and exactly one of
 *     "dns":    {"upstreams": ["IP" | "IP:PORT", ...] (1..8), "strict": bool,
 *                "rebind": TARGETS (none)}
 *     "tcp":    {"to": TARGETS, "ports": PORTS}
 *     "udp":    {"to": TARGETS, "ports": PORTS}
 *     "ip":     {"to": TARGETS, "ports": PORTS}            (tcp and udp)
 *     "host":   {"name": NAME, "ports": PORTS}
 *     "http":   {"host": NAME, "ports": PORTS, "methods": [..], "paths": [prefix, ..],
 *                "set_headers": {"Name": "value with ${secret:NAME}"}, "remove_headers": ["Name"],
 *                "redact_response": bool (needs a ${secret:NAME} in set_headers),
 *                "tls": bool (plain HTTP refused; default: true when set_headers
 *                       names a ${secret:NAME}, else false),
 *                "meter": "openai" | "anthropic" (token usage read from the
 *                       responses, reported with each http event; net/meter.h)}
 *     "decide": {"url": "http[s]://HOST:PORT/path", "timeout_ms": 1..60000 (500),
 *                "cache_s": 0..86400 (0), "to": TARGETS, "ports": PORTS}
 *   }
 *   TARGETS = a string or an array of: IPv4/IPv6 address, CIDR, or an
 *     endpoint class: loopback, private, link-local, multicast, broadcast,
 *     documentation, reserved, public, host-self.  Omitted = any.
 *   host-self: the host's own addresses and the cells' veth range.  An allow
 *     (or decide) rule reaches them only by naming the class "host-self" or
 *     the exact address; no other class, CIDR or omitted "to" does.
 *   rebind: the cell's resolver refuses answers that point at loopback,
 *     link-local, unspecified or host-self addresses (DNS rebinding) unless
 *     they are among these targets; host/http rules reach a host-self address
 *     only through such an accepted answer.
 *   PORTS = 443 | "8000-8080" | [443, "8000-8080"]; omitted = any.
 *   NAME = "api.example.com" or "*.example.com" (one label or more).
 * No rule matching a flow denies it.  A "dns" rule never matches a flow; it
 * enables the cell's resolver.  "host"/"http" rules need a "dns" rule. */

typedef struct net_policy net_policy;

enum net_transport { NET_TCP = 1, NET_UDP = 2 };

enum net_class {
    NET_CLASS_LOOPBACK      = 1u << 0,
    NET_CLASS_PRIVATE       = 1u << 1,   /* 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 */
    NET_CLASS_LINK_LOCAL    = 1u << 2,   /* 169.254/16 (incl. 169.254.169.254), fe80::/10 */
    NET_CLASS_MULTICAST     = 1u << 3,
    NET_CLASS_BROADCAST     = 1u << 4,
    NET_CLASS_DOCUMENTATION = 1u << 5,   /* 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32 */
    NET_CLASS_RESERVED      = 1u << 6,   /* 0/8, 240/4, 192.0.0/24, 198.18/15, ::/128 ... */
    NET_CLASS_PUBLIC        = 1u << 7,   /* none of the above */
    NET_CLASS_HOST_SELF     = 1u << 8,   /* the host itself: never from the address alone (net_flow.to_self) */
};

#define NET_DNS_MAX_UPSTREAMS 8
typedef struct net_dns_config {
    int                     rule;        /* index of the dns rule */
    int                     strict;      /* only names some host/http rule allows resolve */
    size_t                  n_upstreams;
    struct sockaddr_storage upstreams[NET_DNS_MAX_UPSTREAMS];  /* port 53 when not given */
} net_dns_config;

typedef struct net_header {
    char *name;
    char *value;                 /* set_headers: may contain ${secret:NAME}; NULL for remove */
} net_header;

typedef struct net_http_rule {
    char      **methods;         /* NULL-terminated, upper case; NULL = any */
    char      **paths;           /* NULL-terminated prefixes; NULL = any */
    net_header *set;             /* n_set entries */
    size_t      n_set;
    char      **remove;          /* NULL-terminated */
    int         redact;          /* "redact_response": injected secrets become '*' in responses */
    int         tls;             /* "tls": plain HTTP from the cell is refused, so nothing the rule
                                  * adds (a secret) goes upstream in clear; on by default
                                  * for a rule that injects a secret */
    int         meter;           /* "meter": enum net_meter_kind (net/meter.h); 0 = none */
} net_http_rule;

typedef struct net_decide_rule {
    char *url;
    int   timeout_ms;
    int   cache_s;
} net_decide_rule;

/* One flow out of the cell, as the engine sees it. */
typedef struct net_flow {
    int                    transport;   /* NET_TCP or NET_UDP */
    const struct sockaddr *dst;         /* address and port */
    const char            *host;        /* name pinned to dst's address by the cell's DNS, or NULL */
    int                    to_self;     /* dst is the host's own (net_self_contains), set by the engine */
} net_flow;

typedef struct net_verdict {
    int                    allow;       /* 1 allow, 0 deny */
    int                    rule;        /* index of the deciding rule, -1 = no rule matched */
    const net_http_rule   *http;        /* allow through HTTP enforcement (rule is "http") */
    const net_decide_rule *decide;      /* the rule is "decide": ask, then allow or deny */
} net_verdict;

/* Parse and validate.  Errors are EINVAL with messages like
 * `rules[2].tcp.ports: "70000" is not a port or range (1-65535)`. */
int  net_policy_parse(const char *json, size_t len, net_policy **out, cell_error *err);
/* Policies are shared by the engine's threads and replaced live:
 * reference counted (atomic); parse returns one reference. */
net_policy *net_policy_ref(net_policy *p);
void net_policy_unref(net_policy *p);

void net_policy_decide(const net_policy *p, const net_flow *f, net_verdict *out);
size_t net_policy_rule_count(const net_policy *p);
/* Target j of rule i if that rule opens something (an allow or decide
 * rule's "to", a dns rule's "rebind"): 1 with its classes (a bit set, or
 * 0 for an address) or its address and prefix; 0 past the end. */
int net_policy_opening_target(const net_policy *p, size_t i, size_t j, unsigned *classes,
                              struct sockaddr_storage *ss, int *prefix);
/* DNS rebinding: 1 if an answer pointing at `sa` (loopback, link-local,
 * unspecified or the host's own: the caller decides that) may be handed to
 * the cell, because the dns rule's "rebind" targets name it. */
int  net_policy_rebind_ok(const net_policy *p, const struct sockaddr *sa, int to_self);
/* The dns rule, or NULL when the cell has no resolver. */
const net_dns_config *net_policy_dns(const net_policy *p);
/* Strict DNS: 1 if some host/http rule (of either action, before or after)
 * could allow `name` (case-insensitive, no trailing dot needed). */
int  net_policy_name_resolvable(const net_policy *p, const char *name);
/* Rule i's "decide" settings, or NULL if rule i is not a decide rule
 * (the egress helper's owner takes a webhook's URL from here, never from
 * the helper). */
const net_decide_rule *net_policy_decide_rule(const net_policy *p, size_t i);
/* 1 if an allowing http rule's set_headers names ${secret:name}: the only
 * secrets the owner hands the egress helper. */
int  net_policy_names_secret(const net_policy *p, const char *name);
/* The classes of an address (one bit, or LOOPBACK|... combinations never
 * overlap: exactly one bit is set). */
unsigned net_addr_class(const struct sockaddr *sa);
const char *net_class_name(unsigned bit);

#endif
