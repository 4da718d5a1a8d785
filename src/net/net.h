/* net.h: a cell's egress engine, as the runtime uses it: wire the cell's
 * network namespace (one route, redirect rules, listeners) and serve it. */
#ifndef CELL_NET_H
#define CELL_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cell.h"

/* Ports of the daemon's listeners inside every policed cell, on 127.0.0.1:
 * every TCP flow leaving the cell is redirected to NET_RELAY_PORT, every
 * DNS query (UDP and TCP, to any address) to NET_DNS_PORT, and every other
 * IPv4 UDP datagram is delivered by TPROXY to NET_UDP_PORT. */
#define NET_RELAY_PORT 15001
#define NET_UDP_PORT   15002
#define NET_DNS_PORT   15053

/* Two implementations of this API: src/net/engine.c serves the cell in the
 * calling process (it is linked only into the egress helper, cell-egress),
 * and src/net/sep.c, in libcell, runs one such helper per policed cell
 * (fork+exec, a socketpair in the framing of src/init/proto.h) and answers
 * its hooks: what a cell's owner (the CLI or the daemon) uses.  The owner
 * calls these through src/runtime/plugin.c, which forwards to sep.c's
 * table, linked in or loaded with libcell-net.so (src/runtime/plugin.h). */
typedef struct net_engine net_engine;

typedef struct net_hooks {
    cell_net_decide_fn decide;
    cell_net_event_fn  event;
    cell_net_secret_fn secret;          /* ${secret:NAME} in http rules */
    void              *user;
    const char        *upstream_ca_file; /* extra upstream TLS roots (PEM), or NULL */
    const char        *ca_dir;           /* keep the interception CA here across boots (a lane's), or NULL */
    /* The egress helper's (src/egress/main.c): called once every privileged
     * step of start is done (netns entered, rules in, sockets open) and
     * before any thread that serves the cell exists, to drop privileges
     * keeping only the capabilities in `caps` (a mask of 1 << CAP_*); then
     * again with fewer before each further thread starts (the calling
     * thread's capabilities are what a new thread inherits). */
    int              (*confine)(void *user, uint64_t caps, cell_error *err);
    /* Called first on the fast path's thread, the one that keeps
     * CAP_NET_ADMIN: the helper forbids it new sockets.  -1 ends the
     * thread (held flows are then dropped: fail closed). */
    int              (*confine_thread)(void *user);
    /* The netns is a Kubernetes pod's, wired by CNI (src/server/pods.c):
     * its eth0, address and routes stay (connections made to the pod are
     * answered), no fast path, and UDP is relayed from the pod's address
     * too (netns.c, pod mode). */
    int              pod;
} net_hooks;

/* The PEM of the cell's interception CA (for its trust store); malloc()ed. */
int  net_engine_ca_pem(net_engine *e, char **pem, size_t *len, cell_error *err);

/* Enter the network namespace `netns_fd` (on a short-lived thread, so no
 * caller thread changes namespace), add the default route and the nftables
 * rules, open the listeners, and start serving with `policy_json`.
 * The cell must not have run anything yet: its rules are in place before
 * its first process starts. */
int  net_engine_start(net_engine **out, int netns_fd, const char *cell_id, const char *policy_json,
                      const net_hooks *hooks, cell_error *err);
/* Replace the policy; flows already relaying keep the verdict they got. */
int  net_engine_set_policy(net_engine *e, const char *policy_json, cell_error *err);
/* Stop serving, cut every relayed flow, free.  NULL-safe. */
void net_engine_stop(net_engine *e);
/* The egress helper process serving the cell (sep.c), or 0 once it is gone:
 * the owner puts it into the cell's cgroups, so the threads, memory, socket
 * buffers and CPU a cell's traffic costs count against the cell's limits. */
pid_t net_engine_pid(net_engine *e);

/* The nftables ruleset net_engine_start() installs (for docs and tests). */
const char *net_ruleset(void);

#endif
