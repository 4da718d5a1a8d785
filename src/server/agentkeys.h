/* agentkeys.h: "agents" in POST /v1/cells: an agent's model key stays on
 * the host; the cell gets a placeholder and an egress rule that injects it. */
#ifndef CELL_SERVER_AGENTKEYS_H
#define CELL_SERVER_AGENTKEYS_H

#include "server/server_internal.h"

/* Validate body's "agents" (object of agent id -> {"secret", "baseUrl",
 * "provider"}) and fold it into the create: spec's "env" gets each
 * agent's placeholder key (and base URL), spec's "agentPolicy" the
 * switch's rules (one http rule per endpoint, then a dns rule of the
 * host's resolvers when the caller may use one; without it the client's
 * policy must have a dns rule), and spec keeps "agents" as asked.  The
 * client's "policy" is not touched.  0, or -1 after a reply (400/403
 * naming the field). */
int srv_agentkeys_apply(sreq *r, json_t *body, json_t *spec);

/* The policy a cell runs with: spec's "agentPolicy" rules (dns aside)
 * first, then the client's policy `user` (may be NULL), then the agents'
 * dns rule if `user` has none.  A new value; NULL when neither exists (no
 * network) or out of memory.  Never takes a reference to spec's parts. */
json_t *srv_agentkeys_policy(json_t *spec, json_t *user);

/* `user` as the client sent it, with only the agents' dns rule appended
 * when it has none: validated first, so errors name the client's own
 * rules[N].  A new value, NULL if out of memory. */
json_t *srv_agentkeys_policy_as_sent(json_t *spec, json_t *user);

/* A dns rule from the host's resolver config (/etc/resolv.conf), with
 * only the nameservers the daemon may contact for r's token; NULL when
 * none is left. */
json_t *srv_agentkeys_host_dns(sreq *r);

#endif
