/* netns.h: wiring of a policed cell's network namespace (route, nftables
 * rules, the owner's listeners inside it); used by the engine. */
#ifndef CELL_NET_NETNS_H
#define CELL_NET_NETNS_H

#include "cell.h"

typedef struct net_listeners {
    int relay;      /* TCP, 127.0.0.1:NET_RELAY_PORT */
    int dns_udp;    /* UDP, 127.0.0.1:NET_DNS_PORT */
    int dns_tcp;    /* TCP, 127.0.0.1:NET_DNS_PORT */
    int udp;        /* UDP, 127.0.0.1:NET_UDP_PORT, transparent (TPROXY target) */
    int netns;      /* the cell's network namespace (for UDP reply sockets) */
} net_listeners;

/* Policy routing of the cell's transparent UDP (see net_ruleset()). */
#define NET_UDP_MARK  1
#define NET_UDP_TABLE 100

int  net_netns_setup(int netns_fd, net_listeners *out, cell_error *err);
void net_listeners_close(net_listeners *l);

#endif
