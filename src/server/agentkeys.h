/* agentkeys.h: "agents" in POST /v1/cells: an agent's model key stays on
 * the host; the cell gets a placeholder and an egress rule that injects it. */
#ifndef CELL_SERVER_AGENTKEYS_H
#define CELL_SERVER_AGENTKEYS_H

#include "server/server_internal.h"

/* Validate body's "agents" (object of agent id -> {"secret", "baseUrl"})
 * and fold it into the create: spec's "env" gets each agent's placeholder
 * key (and base URL), body's "policy" becomes the agent rules (a dns rule
 * when the client's policy has none, one http rule per agent) followed by
 * the client's rules, and spec keeps "agents" as asked.  0, or -1 after a
 * reply (400/403 naming the field). */
int agentkeys_apply(sreq *r, json_t *body, json_t *spec);

#endif
