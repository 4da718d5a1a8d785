/* fast.h: the kernel fast path for TCP flows a policy allows outright: the
 * owner answers each new flow's SYN from NFQUEUE and audits it from conntrack. */
#ifndef CELL_NET_FAST_H
#define CELL_NET_FAST_H

#include <jansson.h>
#include <netinet/in.h>
#include <stddef.h>

#include "cell.h"
#include "net/netns.h"

/* Flows decided for the kernel and not yet ended (audited); beyond it new
 * flows go to the relay, which has limits of its own. */
#define NET_FAST_MAX_FLOWS 1024

typedef struct net_fast net_fast;

typedef struct net_fast_hooks {
    /* 1 if a new TCP flow to `dst` may bypass the relay: the policy allows
     * it with no webhook and no HTTP enforcement.  Fills the deciding rule
     * and the host name pinned to dst ("" if none). */
    int  (*decide)(void *arg, const struct sockaddr_in *dst, char *host, size_t host_size, int *rule);
    void (*audit)(void *arg, json_t *rec);     /* takes the record */
    /* Called first on the fast path's thread (NULL: nothing); -1 ends it. */
    int  (*confine)(void *arg);
    void *arg;
} net_fast_hooks;

/* Get ready to serve l's queue and conntrack sockets (which stay the
 * caller's) until stop_fd is readable; l->cell_ip must be set.  The thread
 * is started by net_fast_run() (the egress helper drops privileges in
 * between, and the thread inherits the capabilities then left) and serves
 * once net_fast_open_route() has opened its host rtnetlink socket, which
 * the helper calls from a thread without capabilities. */
int  net_fast_start(net_fast **out, const net_listeners *l, int stop_fd, const net_fast_hooks *hooks,
                    cell_error *err);
int  net_fast_run(net_fast *f, cell_error *err);
int  net_fast_open_route(net_fast *f, cell_error *err);
/* Join the thread; flows still open get their record now (bytes so far).
 * NULL-safe. */
void net_fast_stop(net_fast *f);

#endif
