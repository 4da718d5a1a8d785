/* screen.h: which addresses are the host itself ("host-self"), and which
 * destinations the owner may connect to on a tenant's behalf. */
#ifndef CELL_NET_SCREEN_H
#define CELL_NET_SCREEN_H

#include <stdint.h>
#include <sys/socket.h>

#include "net/policy.h"

/* The cells' veth range, NET_FAST_SUBNET or $CELL_EGRESS_SUBNET (/8 to /28):
 * its first address (host order) and how many /30s it holds; EINVAL naming
 * $CELL_EGRESS_SUBNET when it does not parse. */
int net_fast_subnet(uint32_t *base, unsigned *count, cell_error *err);

/* 1 if `sa` (port ignored) is an address of one of this host's interfaces
 * (in the caller's network namespace), or in the cells' veth range
 * (NET_FAST_SUBNET or $CELL_EGRESS_SUBNET): the host's own services and the
 * other cells.  The interface list is re-read when the kernel reports an
 * address added or removed (an rtnetlink subscription, drained at each
 * call), and at least once a second. */
int net_self_contains(const struct sockaddr *sa);

/* The reason `sa` must not be a destination of the owner's own connections
 * for a tenant (decide webhooks, DNS upstreams): loopback, link-local,
 * unspecified, multicast, broadcast, or net_self_contains().  NULL when it
 * may be, or when it lies in one of `allow` (NULL-terminated CIDRs the
 * operator allows; entries that do not parse never match). */
const char *net_screen_reason(const struct sockaddr *sa, const char *const *allow);

/* Every owner destination a policy names (DNS upstreams; decide URLs whose
 * host is an address or "localhost"), screened: 0, or EACCES naming the
 * rule and field.  Names in decide URLs are screened when connecting. */
int net_screen_policy(const net_policy *p, const char *const *allow, cell_error *err);

/* Parse a policy and screen it (cell_policy_check_v2()). */
int net_policy_check_v2(const char *policy_json, const char *const *owner_allow, cell_error *err);

#endif
