/* netns.h: wiring of a policed cell's network namespace (route, nftables
 * rules, the owner's listeners inside it); used by the engine. */
#ifndef CELL_NET_NETNS_H
#define CELL_NET_NETNS_H

#include <stdint.h>

#include "cell.h"

struct mnl_socket;

typedef struct net_listeners {
    int relay;      /* TCP, 127.0.0.1:NET_RELAY_PORT */
    int dns_udp;    /* UDP, 127.0.0.1:NET_DNS_PORT */
    int dns_tcp;    /* TCP, 127.0.0.1:NET_DNS_PORT */
    int udp;        /* UDP, 127.0.0.1:NET_UDP_PORT, transparent (TPROXY target) */
    int netns;      /* the cell's network namespace (for UDP reply sockets) */
    /* The kernel fast path (see fast.h), when the host side could be made:
     * then the cell's default route is a veth to the host instead of lo. */
    uint32_t           cell_ip;     /* network order; 0 = no fast path, every TCP flow is relayed */
    struct mnl_socket *queue;       /* NFQUEUE NET_FAST_QUEUE: new TCP flows, held until decided */
    struct mnl_socket *ct_events;   /* conntrack updates and ends, for the audit */
    struct mnl_socket *ct_query;    /* conntrack look-ups (byte counters) */
    char               fast_off[128]; /* why there is no fast path, if there is none */
    uint32_t           pod_ip;      /* network order; a pod's eth0 address (NET_SETUP_POD), else 0 */
} net_listeners;

/* Policy routing of the cell's transparent UDP (see net_ruleset()). */
#define NET_UDP_MARK  1
#define NET_UDP_TABLE 100

/* Fast-path flows carry this bit in their conntrack mark, with the engine's
 * slot and generation below it (fast.c); the cell's rules test only the bit. */
#define NET_FAST_MARK   0x40000000u
#define NET_FAST_QUEUE  0
#define NET_FAST_MTU    65535
/* The /30s of fast-path veths come from this IPv4 range (or $CELL_EGRESS_SUBNET,
 * /8 to /28), one per policed cell: .1 the host's end, .2 the cell's. */
#define NET_FAST_SUBNET "10.213.0.0/16"
#define NET_FAST_IFPREFIX "cellv"

/* How net_netns_setup() wires the netns. */
enum net_setup_mode {
    NET_SETUP_RELAY,    /* default route over lo: every flow relayed */
    NET_SETUP_FAST,     /* try the fast path's veth first, else as RELAY */
    NET_SETUP_POD,      /* a pod's netns (CNI's eth0 stays): see ruleset_pod */
};

/* Wire the cell's netns (see netns.c) and open the owner's listeners in it.
 * NET_SETUP_FAST first tries the fast path's veth; if the host cannot have
 * one (no permission, no free /30, no host rules), out->cell_ip stays 0 and
 * out->fast_off says why: every flow is then relayed, still decided. */
int  net_netns_setup(int netns_fd, int mode, net_listeners *out, cell_error *err);
/* The nftables ruleset of a pod whose eth0 has `pod_ip` (text). */
int  net_ruleset_pod(char *out, size_t size, const char *pod_ip);
/* The nftables ruleset of a cell with the fast path (cell_ip in text). */
int  net_ruleset_fast(char *out, size_t size, const char *cell_ip);
void net_listeners_close(net_listeners *l);
/* Cut a policed cell off when its engine is gone: delete its eth0 (the
 * fast path's veth, and every flow the kernel carries over it).  The relay's
 * listeners went with the engine's process. */
int  net_netns_cut(int ns_or_pidfd, cell_error *err);

#endif
