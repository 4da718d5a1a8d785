/* netns.c: wiring of a policed cell's network namespace: a default route
 * over lo, policy routing for transparent UDP, nftables rules that send every
 * flow to the owner, and its listeners. */
#include "net/netns.h"
#include "net/screen.h"
#include "net/net.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <linux/fib_rules.h>
#include <linux/if_link.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_compat.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netfilter/xt_NFQUEUE.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The three rulesets below (a cell's, a cell's with the fast path, a
 * Kubernetes pod's) are built from these pieces, so what they share is
 * written once.  LOCAL is what counts as the netns's own: a destination that
 * stays inside, a source UDP is relayed from.  The fast path's and the pod's
 * rulesets are snprintf formats whose one argument (%1$s) is the cell's or
 * the pod's address. */
#define RS_LOCAL_LO   "127.0.0.0/8"
#define RS_LOCAL_ADDR "{ 127.0.0.0/8, %1$s }"

/* nat_out: DNS to the resolver (whatever the destination), then what stays
 * local returns, then `extra` (the fast path's flows), then every other
 * IPv4 TCP flow to the relay. */
#define RS_NAT_OUT(local, extra)                                              \
    "  chain nat_out {\n"                                                      \
    "    type nat hook output priority -100; policy accept;\n"                 \
    "    meta nfproto ipv4 udp dport 53 redirect to :15053\n"                  \
    "    meta nfproto ipv4 tcp dport 53 redirect to :15053\n"                  \
    "    ip daddr " local " return\n"                                          \
    extra                                                                      \
    "    meta nfproto ipv4 meta l4proto tcp redirect to :15001\n"              \
    "  }\n"

/* udp_mark and udp_tproxy: IPv4 UDP but DNS, from a local source (`match`
 * narrows it further) to a destination that is not, is marked for the
 * transparent relay, and handed to the owner's socket on its way in. */
#define RS_UDP(local, match)                                                          \
    "  chain udp_mark {\n"                                                             \
    "    type route hook output priority mangle; policy accept;\n"                     \
    "    meta nfproto ipv4 " match "ip saddr " local " ip daddr != " local             \
    " udp dport != 53 meta mark set 1\n"                                               \
    "  }\n"                                                                            \
    "  chain udp_tproxy {\n"                                                           \
    "    type filter hook prerouting priority mangle; policy accept;\n"                \
    "    meta nfproto ipv4 meta l4proto udp meta mark 1 tproxy ip to 127.0.0.1:15002 accept\n" \
    "    meta mark 1 drop\n"                                                           \
    "  }\n"

/* The filter: drop what leaves by any device but lo, except `extra`. */
#define RS_FILTER(chain, hook, extra)                                         \
    "  chain " chain " {\n"                                                    \
    "    type filter hook " hook " priority 0; policy drop;\n"                 \
    "    oif \"lo\" accept\n"                                                  \
    extra                                                                      \
    "  }\n"

/* The fast path's bit in the packet and conntrack marks (NET_FAST_MARK). */
#define RS_FAST "0x40000000"

/* The cell cannot change these: its netns belongs to the initial user
 * namespace and it has no CAP_NET_ADMIN there.  DNS first (to any address,
 * so hard-coded resolvers are answered by the policy too), then loopback
 * stays local, then every other IPv4 TCP flow goes to the relay.
 * Other IPv4 UDP cannot be redirected by NAT without losing its original
 * destination for later datagrams, so it is proxied transparently:
 * udp_mark marks it (never DNS, which NAT sends to the resolver whatever
 * the policy says about port 53; and only from loopback, the cell's one
 * address, so a socket bound elsewhere with IP_FREEBIND gets no relay);
 * the "fwmark 1 lookup 100" rule routes marked packets to "local 0.0.0.0/0
 * dev lo", so they loop back through lo; on the way in, udp_tproxy hands
 * them to the owner's transparent socket on NET_UDP_PORT, which reads their
 * original destination with IP_RECVORIGDSTADDR (and drops them if that
 * socket is gone).  The filter chain drops whatever is not on lo after
 * that: ICMP, raw, IPv6. */
static const char ruleset[] =
    "table inet cell {\n"
    RS_NAT_OUT(RS_LOCAL_LO, "")
    RS_UDP(RS_LOCAL_LO, "")
    RS_FILTER("filter_out", "output", "")
    "}\n";

const char *net_ruleset(void) { return ruleset; }

/* With the fast path the default route is the veth (eth0), and a new TCP
 * flow is first held in NFQUEUE (table ip cell_q: nftables' own "queue"
 * statement is not in every kernel, so the queue is the xtables NFQUEUE
 * target, added by add_queue_rule() into the empty chain "q").  The owner
 * answers every held SYN at once: with NET_FAST_MARK in the packet mark
 * when the policy allows the flow outright (tcp or host rule, no webhook,
 * no http enforcement), which fast_verdict moves to the conntrack mark;
 * without it otherwise, and nat_out then redirects the flow to the relay,
 * which decides it again and audits or refuses it as before.  A flow whose
 * conntrack mark has the bit leaves by eth0 untouched: nothing else may,
 * and only its replies may come in (filter_in).  The filter runs at
 * postrouting because at output a redirected packet still shows the
 * device it was first routed to.  UDP and DNS are as without the fast
 * path, the cell's veth address counting as its own like 127.0.0.0/8 (a
 * source to relay from; a destination that stays inside). */
static const char ruleset_fast[] =
    "table ip cell_q {\n"
    "  chain decide {\n"
    "    type filter hook output priority mangle; policy accept;\n"
    "    ct state new ct mark 0 meta l4proto tcp ip daddr != " RS_LOCAL_ADDR " tcp dport != 53 jump q\n"
    "  }\n"
    "  chain q {\n"
    "  }\n"
    "}\n"
    "table inet cell {\n"
    "  chain fast_verdict {\n"
    "    type filter hook output priority mangle + 10; policy accept;\n"
    "    meta mark & " RS_FAST " == " RS_FAST " ct mark set meta mark meta mark set 0\n"
    "  }\n"
    RS_NAT_OUT(RS_LOCAL_ADDR, "    ct mark & " RS_FAST " == " RS_FAST " return\n")
    RS_UDP(RS_LOCAL_ADDR, "")
    RS_FILTER("filter_post", "postrouting",
              "    oifname \"eth0\" meta nfproto ipv4 meta l4proto tcp ct mark & " RS_FAST " == " RS_FAST " accept\n")
    "  chain filter_in {\n"
    "    type filter hook input priority 0; policy accept;\n"
    "    iifname \"eth0\" ct mark & " RS_FAST " != " RS_FAST " drop\n"
    "  }\n"
    "}\n";

int net_ruleset_fast(char *out, size_t size, const char *cell_ip)
{
    int n = snprintf(out, size, ruleset_fast, cell_ip);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* A Kubernetes pod's netns (NET_SETUP_POD): CNI made eth0, its address
 * (%1$s, the pod's) and its routes, and connections made *to* the pod
 * (services, probes) must keep working, so the default route stays eth0's.
 * What the pod sends is a cell's: DNS to the resolver, TCP to the relay
 * (nat_out re-routes a redirected flow over lo), UDP from the pod's own
 * addresses marked for the transparent relay.  The filter runs at
 * postrouting, where a redirected packet shows lo rather than the device
 * it was first routed to: lo passes, and eth0 only for packets of the
 * reply direction of a connection someone else opened to the pod (a flow
 * the pod opens is original direction, and is redirected above, or
 * dropped: ICMP, raw, IPv6, UDP from an address that is not the pod's).
 * The fast path's veth is not made: CNI owns the pod's links. */
static const char ruleset_pod[] =
    "table inet cell {\n"
    RS_NAT_OUT(RS_LOCAL_ADDR, "")
    RS_UDP(RS_LOCAL_ADDR, "ct direction original ")
    RS_FILTER("filter_post", "postrouting", "    oifname \"eth0\" ct direction reply accept\n")
    "}\n";

int net_ruleset_pod(char *out, size_t size, const char *pod_ip)
{
    int n = snprintf(out, size, ruleset_pod, pod_ip);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* Send one request on a fresh rtnetlink socket and wait for its ack. */
static int nl_request(struct nlmsghdr *nlh, char *buf, const char *what, cell_error *err)
{
    struct mnl_socket *nl = mnl_socket_open(NETLINK_ROUTE);
    if (!nl)
        return util_fail_errno(err, "netlink socket");
    int rc = -1;
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        util_fail_errno(err, "netlink bind");
        goto out;
    }
    unsigned portid = mnl_socket_get_portid(nl);
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
        util_fail_errno(err, "netlink send (%s)", what);
        goto out;
    }
    ssize_t n = mnl_socket_recvfrom(nl, buf, MNL_SOCKET_BUFFER_SIZE);
    if (n < 0 || mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, portid, NULL, NULL) < 0) {
        util_fail_errno(err, "netlink: %s", what);
        goto out;
    }
    rc = 0;
out:
    mnl_socket_close(nl);
    return rc;
}

/* A request that creates something (and fails if it exists), acked. */
static struct nlmsghdr *nl_new(char *buf, uint16_t type, unsigned seq)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
    nlh->nlmsg_seq = seq;
    return nlh;
}

/* An IPv4 0.0.0.0/0 route over lo in `table`, of the given scope and type. */
static struct nlmsghdr *lo_default_route(char *buf, unsigned seq, uint32_t table, uint8_t scope, uint8_t type)
{
    struct nlmsghdr *nlh = nl_new(buf, RTM_NEWROUTE, seq);
    struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof *rtm);
    rtm->rtm_family = AF_INET;
    rtm->rtm_dst_len = 0;
    rtm->rtm_table = table < 256 ? (uint8_t)table : RT_TABLE_UNSPEC;
    rtm->rtm_protocol = RTPROT_STATIC;
    rtm->rtm_scope = scope;
    rtm->rtm_type = type;
    mnl_attr_put_u32(nlh, RTA_TABLE, table);
    mnl_attr_put_u32(nlh, RTA_OIF, if_nametoindex("lo"));
    return nlh;
}

/* "default dev lo src 127.0.0.1": without a route connect() fails with
 * ENETUNREACH before netfilter sees the packet; with it, the nat hook
 * redirects the flow.  The source must be 127.0.0.1: left to choose, the
 * kernel binds such sockets to 0.0.0.0 and our replies never arrive. */
static int add_default_route(cell_error *err)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = lo_default_route(buf, (unsigned)time(NULL), RT_TABLE_MAIN, RT_SCOPE_LINK, RTN_UNICAST);
    mnl_attr_put_u32(nlh, RTA_PREFSRC, htonl(INADDR_LOOPBACK));
    return nl_request(nlh, buf, "adding the default route over lo in the cell", err);
}

/* For transparent UDP: "fwmark 1 lookup 100" and, in table 100,
 * "local 0.0.0.0/0 dev lo", so datagrams marked by udp_mark are routed as
 * if addressed to this host and come back in through lo, where TPROXY can
 * hand them to the owner's socket with their destination untouched.
 * `again`: either may be there already (a pod's netns the node daemon set
 * up before it restarted; nothing in the pod can add them). */
static int add_udp_routing(int again, cell_error *err)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = nl_new(buf, RTM_NEWRULE, (unsigned)time(NULL));
    struct fib_rule_hdr *frh = mnl_nlmsg_put_extra_header(nlh, sizeof *frh);
    frh->family = AF_INET;
    frh->action = FR_ACT_TO_TBL;
    frh->table = NET_UDP_TABLE;
    mnl_attr_put_u32(nlh, FRA_PRIORITY, 100);
    mnl_attr_put_u32(nlh, FRA_FWMARK, NET_UDP_MARK);
    mnl_attr_put_u32(nlh, FRA_FWMASK, 0xffffffffu);
    mnl_attr_put_u32(nlh, FRA_TABLE, NET_UDP_TABLE);
    if (nl_request(nlh, buf, "adding the policy routing rule for UDP in the cell", err) < 0 &&
        !(again && err && err->code == EEXIST))
        return -1;

    nlh = lo_default_route(buf, (unsigned)time(NULL) + 1, NET_UDP_TABLE, RT_SCOPE_HOST, RTN_LOCAL);
    if (nl_request(nlh, buf, "adding the local route for UDP in the cell", err) < 0 &&
        !(again && err && err->code == EEXIST))
        return -1;
    return 0;
}

/* Apply nftables text in this thread's netns, as one transaction. */
static int run_nft(const char *text, const char *what, cell_error *err)
{
    struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!nft)
        return util_fail(err, ENOMEM, "nftables context");
    nft_ctx_buffer_error(nft);
    int rc = nft_run_cmd_from_buffer(nft, text);
    if (rc != 0) {
        const char *why = nft_ctx_get_error_buffer(nft);
        util_fail(err, EIO, "%s: %s", what, why && *why ? why : "failed");
    }
    nft_ctx_free(nft);
    return rc != 0 ? -1 : 0;
}

/* ---- the fast path: a veth to the host ------------------------------------ */

/* Host rules, one table for every fast-path cell of every owner on the host:
 * cells never reach each other through the host (their replies only, as
 * filter_in in each cell also insists), and what they send beyond the host
 * leaves with the host's address.  Replaced whole in one transaction, so
 * concurrent owners cannot duplicate it. */
static int install_host_rules(const char *subnet, cell_error *err)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "add table ip cell_egress\n"
             "delete table ip cell_egress\n"
             "table ip cell_egress {\n"
             "  chain forward {\n"
             "    type filter hook forward priority 0; policy accept;\n"
             "    iifname \"" NET_FAST_IFPREFIX "*\" oifname \"" NET_FAST_IFPREFIX "*\" drop\n"
             "  }\n"
             "  chain postrouting {\n"
             "    type nat hook postrouting priority srcnat; policy accept;\n"
             "    ip saddr %s oifname != \"" NET_FAST_IFPREFIX "*\" masquerade\n"
             "  }\n"
             "}\n",
             subnet);
    return run_nft(cmd, "host rules for the egress fast path", err);
}

static pthread_mutex_t host_rules_lock = PTHREAD_MUTEX_INITIALIZER;
static int host_rules_done;

static int host_rules_once(uint32_t base, unsigned count, cell_error *err)
{
    pthread_mutex_lock(&host_rules_lock);
    int rc = 0;
    if (!host_rules_done) {
        char subnet[48];
        struct in_addr a = { .s_addr = htonl(base) };
        unsigned prefix = 30 - (unsigned)__builtin_ctz(count);
        snprintf(subnet, sizeof subnet, "%s/%u", inet_ntoa(a), prefix);
        rc = install_host_rules(subnet, err);
        host_rules_done = rc == 0;
    }
    pthread_mutex_unlock(&host_rules_lock);
    return rc;
}

/* "ip link add NAME mtu M type veth peer name eth0 mtu M netns FD". */
static int create_veth(int netns_fd, const char *name, cell_error *err)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = nl_new(buf, RTM_NEWLINK, (unsigned)time(NULL));
    struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof *ifi);
    ifi->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
    mnl_attr_put_u32(nlh, IFLA_MTU, NET_FAST_MTU);
    struct nlattr *info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
    struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
    struct nlattr *peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
    /* The peer's attributes follow a header of its own. */
    struct ifinfomsg *pifi = mnl_nlmsg_get_payload_tail(nlh);
    memset(pifi, 0, sizeof *pifi);
    nlh->nlmsg_len += MNL_ALIGN(sizeof *pifi);
    mnl_attr_put_strz(nlh, IFLA_IFNAME, "eth0");
    mnl_attr_put_u32(nlh, IFLA_MTU, NET_FAST_MTU);
    mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, (uint32_t)netns_fd);
    mnl_attr_nest_end(nlh, peer);
    mnl_attr_nest_end(nlh, data);
    mnl_attr_nest_end(nlh, info);
    return nl_request(nlh, buf, "creating the fast path's veth", err);
}

/* A request about the existing link `index` (RTM_NEWLINK to change it,
 * RTM_DELLINK), acked; `flags` are set and the only ones changed. */
static struct nlmsghdr *nl_link(char *buf, uint16_t type, unsigned index, unsigned flags)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = (unsigned)time(NULL);
    struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof *ifi);
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = (int)index;
    ifi->ifi_flags = flags;
    ifi->ifi_change = flags;
    return nlh;
}

static int link_up(const char *name, cell_error *err)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    unsigned index = if_nametoindex(name);
    if (index == 0)
        return util_fail_errno(err, "link %s", name);
    return nl_request(nl_link(buf, RTM_NEWLINK, index, IFF_UP), buf, "setting the fast path's veth up", err);
}

static int add_address(const char *name, uint32_t ip, cell_error *err)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = nl_new(buf, RTM_NEWADDR, (unsigned)time(NULL));
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof *ifa);
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = 30;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = if_nametoindex(name);
    if (ifa->ifa_index == 0)
        return util_fail_errno(err, "link %s", name);
    mnl_attr_put_u32(nlh, IFA_LOCAL, ip);
    mnl_attr_put_u32(nlh, IFA_ADDRESS, ip);
    return nl_request(nlh, buf, "addressing the fast path's veth", err);
}

/* "default via HOST dev eth0 src CELL". */
static int add_veth_default_route(uint32_t host_ip, uint32_t cell_ip, cell_error *err)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = nl_new(buf, RTM_NEWROUTE, (unsigned)time(NULL));
    struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof *rtm);
    rtm->rtm_family = AF_INET;
    rtm->rtm_table = RT_TABLE_MAIN;
    rtm->rtm_protocol = RTPROT_STATIC;
    rtm->rtm_scope = RT_SCOPE_UNIVERSE;
    rtm->rtm_type = RTN_UNICAST;
    mnl_attr_put_u32(nlh, RTA_GATEWAY, host_ip);
    mnl_attr_put_u32(nlh, RTA_OIF, if_nametoindex("eth0"));
    mnl_attr_put_u32(nlh, RTA_PREFSRC, cell_ip);
    return nl_request(nlh, buf, "adding the default route over the fast path's veth in the cell", err);
}

/* A netns fd for the cell's network namespace: the caller's fd may be a
 * pidfd, which setns() takes but IFLA_NET_NS_FD does not. */
static void *open_netns_main(void *arg)
{
    int *fd = arg;
    *fd = setns(*fd, CLONE_NEWNET) < 0 ? -1 : open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    return NULL;
}

static int open_netns(int ns_or_pidfd, cell_error *err)
{
    int fd = ns_or_pidfd;
    pthread_t t;
    int pe = pthread_create(&t, NULL, open_netns_main, &fd);
    if (pe != 0) {
        errno = pe;
        return util_fail_errno(err, "thread for the cell's network setup");
    }
    pthread_join(t, NULL);
    return fd < 0 ? util_fail(err, EIO, "cannot open the cell's network namespace") : fd;
}

/* The host's end of a veth whose other end is the cell's eth0, on the first
 * free /30: a name taken by another cell (of any owner) fails with EEXIST,
 * so the kernel's link names are the allocator.  The pair disappears with
 * the cell's netns, so nothing is left behind by a crash. */
static int make_host_end(int netns_fd, uint32_t base, unsigned count, net_listeners *l, uint32_t *host_ip,
                         cell_error *err)
{
    if (host_rules_once(base, count, err) < 0)
        return -1;
    int ns = open_netns(netns_fd, err), rc = -1;
    if (ns < 0)
        return -1;
    unsigned start = ((unsigned)getpid() * 131u + (unsigned)time(NULL)) % count;
    for (unsigned i = 0; i < count && i < 4096; i++) {
        unsigned slot = (start + i) % count;
        char name[IFNAMSIZ];
        snprintf(name, sizeof name, NET_FAST_IFPREFIX "%u", slot);
        if (create_veth(ns, name, err) < 0) {
            if (err && err->code == EEXIST)
                continue;
            goto out;
        }
        uint32_t net = base + slot * 4;
        *host_ip = htonl(net + 1);
        if (add_address(name, *host_ip, err) == 0 && link_up(name, err) == 0) {
            l->cell_ip = htonl(net + 2);
            rc = 0;
        }
        goto out;   /* on failure the pair goes with the netns */
    }
    util_fail(err, EADDRINUSE, "no free /30 for the fast path's veth in %s",
                     getenv("CELL_EGRESS_SUBNET") ? getenv("CELL_EGRESS_SUBNET") : NET_FAST_SUBNET);
out:
    close(ns);
    return rc;
}

/* The xtables NFQUEUE target (revision 3) as the one rule of chain "q":
 * no bypass, so held flows are dropped, never let through, if the owner's
 * queue socket is gone. */
static int add_queue_rule(cell_error *err)
{
    char buf[MNL_SOCKET_BUFFER_SIZE], ack[MNL_SOCKET_BUFFER_SIZE];
    struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(buf, sizeof buf);
    unsigned seq = (unsigned)time(NULL);
    nftnl_batch_begin(mnl_nlmsg_batch_current(b), seq++);
    mnl_nlmsg_batch_next(b);
    struct nftnl_rule *r = nftnl_rule_alloc();
    struct nftnl_expr *e = nftnl_expr_alloc("target");
    struct xt_NFQ_info_v3 *info = calloc(1, sizeof *info);   /* owned by e once set */
    if (!r || !e || !info) {
        nftnl_rule_free(r);
        nftnl_expr_free(e);
        free(info);
        mnl_nlmsg_batch_stop(b);
        return util_fail(err, ENOMEM, "out of memory");
    }
    info->queuenum = NET_FAST_QUEUE;
    info->queues_total = 1;
    nftnl_rule_set_str(r, NFTNL_RULE_TABLE, "cell_q");
    nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, "q");
    nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, NFPROTO_IPV4);
    nftnl_expr_set_str(e, NFTNL_EXPR_TG_NAME, "NFQUEUE");
    nftnl_expr_set_u32(e, NFTNL_EXPR_TG_REV, 3);
    nftnl_expr_set(e, NFTNL_EXPR_TG_INFO, info, sizeof *info);
    nftnl_rule_add_expr(r, e);
    unsigned rule_seq = seq;
    struct nlmsghdr *nlh = nftnl_rule_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_NEWRULE, NFPROTO_IPV4,
                                                      NLM_F_APPEND | NLM_F_CREATE | NLM_F_ACK, seq++);
    nftnl_rule_nlmsg_build_payload(nlh, r);
    nftnl_rule_free(r);
    mnl_nlmsg_batch_next(b);
    nftnl_batch_end(mnl_nlmsg_batch_current(b), seq++);
    mnl_nlmsg_batch_next(b);
    int rc = -1;
    struct mnl_socket *nl = mnl_socket_open(NETLINK_NETFILTER);
    if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        util_fail_errno(err, "netfilter netlink socket");
        goto out;
    }
    if (mnl_socket_sendto(nl, mnl_nlmsg_batch_head(b), mnl_nlmsg_batch_size(b)) < 0) {
        util_fail_errno(err, "netlink send (the fast path's queue rule)");
        goto out;
    }
    ssize_t n = mnl_socket_recvfrom(nl, ack, sizeof ack);
    if (n < 0 || mnl_cb_run(ack, (size_t)n, rule_seq, mnl_socket_get_portid(nl), NULL, NULL) < 0) {
        util_fail_errno(err, "adding the fast path's queue rule (xtables NFQUEUE target) in the cell");
        goto out;
    }
    rc = 0;
out:
    if (nl)
        mnl_socket_close(nl);
    mnl_nlmsg_batch_stop(b);
    return rc;
}

/* A NETLINK_NETFILTER socket in this (the cell's) netns; `groups` for events. */
static struct mnl_socket *nf_socket(unsigned groups, int rcvbuf, cell_error *err)
{
    struct mnl_socket *nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
    if (!nl) {
        util_fail_errno(err, "netfilter netlink socket in the cell");
        return NULL;
    }
    if (rcvbuf > 0)
        setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    if (mnl_socket_bind(nl, groups, MNL_SOCKET_AUTOPID) < 0) {
        util_fail_errno(err, "binding a netfilter netlink socket in the cell");
        mnl_socket_close(nl);
        return NULL;
    }
    return nl;
}

/* One acked NFQUEUE config message for queue NET_FAST_QUEUE. */
static int queue_config(struct mnl_socket *nl, const void *attr, uint16_t type, size_t len, uint32_t maxlen,
                        cell_error *err)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = (unsigned)time(NULL);
    struct nfgenmsg *g = mnl_nlmsg_put_extra_header(nlh, sizeof *g);
    g->nfgen_family = AF_UNSPEC;
    g->version = NFNETLINK_V0;
    g->res_id = htons(NET_FAST_QUEUE);
    mnl_attr_put(nlh, type, len, attr);
    if (maxlen)
        mnl_attr_put_u32(nlh, NFQA_CFG_QUEUE_MAXLEN, htonl(maxlen));
    ssize_t n;
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0 || (n = mnl_socket_recvfrom(nl, buf, sizeof buf)) < 0 ||
        mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, mnl_socket_get_portid(nl), NULL, NULL) < 0)
        return util_fail_errno(err, "configuring the fast path's queue in the cell");
    return 0;
}

/* The queue: bound to this netns' queue NET_FAST_QUEUE, copying each held
 * packet's first 64 bytes (IPv4 and TCP headers are all it reads). */
static struct mnl_socket *open_queue(cell_error *err)
{
    struct mnl_socket *nl = nf_socket(0, 1 << 20, err);
    if (!nl)
        return NULL;
    struct nfqnl_msg_config_cmd cmd = { .command = NFQNL_CFG_CMD_BIND, .pf = htons(AF_INET) };
    struct nfqnl_msg_config_params params = { .copy_range = htonl(64), .copy_mode = NFQNL_COPY_PACKET };
    if (queue_config(nl, &cmd, NFQA_CFG_CMD, sizeof cmd, 0, err) < 0 ||
        queue_config(nl, &params, NFQA_CFG_PARAMS, sizeof params, 4096, err) < 0) {
        mnl_socket_close(nl);
        return NULL;
    }
    return nl;
}

/* In the cell's netns: eth0 addressed and up, the default route over it,
 * no IPv6 on it, the rules, byte counters in conntrack, and the sockets. */
static int setup_fast(net_listeners *l, uint32_t host_ip, cell_error *err)
{
    char cell_text[INET_ADDRSTRLEN], rules[sizeof ruleset_fast + 128];
    inet_ntop(AF_INET, &l->cell_ip, cell_text, sizeof cell_text);
    if (add_address("eth0", l->cell_ip, err) < 0 || link_up("eth0", err) < 0 ||
        add_veth_default_route(host_ip, l->cell_ip, err) < 0)
        return -1;
    if (access("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", F_OK) == 0 &&
        util_write_file("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1", 1, 0644, 0, err) < 0)
        return -1;
    if (net_ruleset_fast(rules, sizeof rules, cell_text) < 0)
        return util_fail(err, EINVAL, "the fast path's ruleset");
    /* After the rules: their conntrack expressions are what loads conntrack
     * (and its sysctls) on a modular kernel; before any flow, since counters
     * are attached when a connection is tracked. */
    if (run_nft(rules, "installing the cell's nftables rules", err) < 0 ||
        util_write_file("/proc/sys/net/netfilter/nf_conntrack_acct", "1", 1, 0644, 0, err) < 0 || add_queue_rule(err) < 0)
        return -1;
    if (!(l->queue = open_queue(err)) ||
        !(l->ct_events = nf_socket(NF_NETLINK_CONNTRACK_UPDATE | NF_NETLINK_CONNTRACK_DESTROY, 4 << 20, err)) ||
        !(l->ct_query = nf_socket(0, 0, err)))
        return -1;
    return 0;
}

/* The pod's IPv4 address: eth0's first (network order), 0 if it has none. */
static uint32_t pod_address(void)
{
    struct ifaddrs *all = NULL;
    uint32_t ip = 0;
    if (getifaddrs(&all) < 0)
        return 0;
    for (struct ifaddrs *a = all; a && !ip; a = a->ifa_next)
        if (a->ifa_addr && a->ifa_addr->sa_family == AF_INET && strcmp(a->ifa_name, "eth0") == 0)
            ip = ((const struct sockaddr_in *)(const void *)a->ifa_addr)->sin_addr.s_addr;
    freeifaddrs(all);
    return ip;
}

/* In the pod's netns: the rules and UDP's policy routing; no route changes.
 * The table is replaced in the same transaction that fills it: a pod the
 * node daemon policed before it restarted keeps its rules throughout, and
 * gets one copy of them, never two. */
static int setup_pod(net_listeners *l, cell_error *err)
{
    char ip[INET_ADDRSTRLEN] = "127.0.0.1", rules[sizeof ruleset_pod + 192];
    l->pod_ip = pod_address();
    if (l->pod_ip)
        inet_ntop(AF_INET, &l->pod_ip, ip, sizeof ip);
    static const char replace[] = "add table inet cell\ndelete table inet cell\n";
    memcpy(rules, replace, sizeof replace - 1);
    if (net_ruleset_pod(rules + sizeof replace - 1, sizeof rules - (sizeof replace - 1), ip) < 0)
        return util_fail(err, EINVAL, "the pod's ruleset");
    if (add_udp_routing(1, err) < 0 || run_nft(rules, "installing the pod's nftables rules", err) < 0)
        return -1;
    return 0;
}

static int listen_on(int type, uint16_t port, cell_error *err)
{
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        return util_fail_errno(err, "socket in the cell's network namespace");
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* TPROXY delivers only to transparent sockets; the original destination
     * of each datagram arrives as an IP_ORIGDSTADDR control message. */
    if (port == NET_UDP_PORT &&
        (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one) < 0 ||
         setsockopt(fd, SOL_IP, IP_RECVORIGDSTADDR, &one, sizeof one) < 0)) {
        int saved = errno;
        close(fd);
        errno = saved;
        return util_fail_errno(err, "making the UDP socket in the cell transparent");
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || (type == SOCK_STREAM && listen(fd, 256) < 0)) {
        int saved = errno;
        close(fd);
        errno = saved;
        return util_fail_errno(err, "listening on 127.0.0.1:%u in the cell", port);
    }
    return fd;
}

typedef struct setup_job {
    int netns_fd;
    uint32_t host_ip;   /* network order; 0 = no fast path */
    int pod;            /* NET_SETUP_POD */
    net_listeners *out;
    cell_error *err;
    int rc;
} setup_job;

static void *setup_main(void *arg)
{
    setup_job *job = arg;
    net_listeners *l = job->out;
    job->rc = -1;
    /* This thread alone moves into the cell's namespace and then ends. */
    if (setns(job->netns_fd, CLONE_NEWNET) < 0) {
        util_fail_errno(job->err, "entering the cell's network namespace");
        return NULL;
    }
    if (job->pod) {
        if (setup_pod(l, job->err) < 0)
            return NULL;
    } else if (job->host_ip) {
        if (setup_fast(l, job->host_ip, job->err) < 0 || add_udp_routing(0, job->err) < 0)
            return NULL;
    } else if (add_default_route(job->err) < 0 || add_udp_routing(0, job->err) < 0 ||
               run_nft(ruleset, "installing the cell's nftables rules", job->err) < 0) {
        return NULL;
    }
    if ((l->relay = listen_on(SOCK_STREAM, NET_RELAY_PORT, job->err)) < 0 ||
        (l->dns_udp = listen_on(SOCK_DGRAM, NET_DNS_PORT, job->err)) < 0 ||
        (l->dns_tcp = listen_on(SOCK_STREAM, NET_DNS_PORT, job->err)) < 0 ||
        (l->udp = listen_on(SOCK_DGRAM, NET_UDP_PORT, job->err)) < 0)
        return NULL;
    /* The namespace itself, not init's pidfd: UDP reply sockets are made in
     * it for as long as the engine runs, and this fd stays valid whatever
     * happens to the cell's processes. */
    if ((l->netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) < 0) {
        util_fail_errno(job->err, "opening the cell's network namespace");
        return NULL;
    }
    job->rc = 0;
    return NULL;
}

int net_netns_setup(int netns_fd, int mode, net_listeners *out, cell_error *err)
{
    *out = (net_listeners){ .relay = -1, .dns_udp = -1, .dns_tcp = -1, .udp = -1, .netns = -1 };
    setup_job job = { .netns_fd = netns_fd, .out = out, .err = err, .pod = mode == NET_SETUP_POD };
    int fast = mode == NET_SETUP_FAST;
    /* Made from here, the caller's (the host's) netns: the host's end stays
     * in it.  Failing that, the cell is served by the relay alone. */
    cell_error why = { 0 };
    uint32_t base = 0;
    unsigned count = 0;
    /* A host that cannot have the veth falls back to the relay; a range the
     * operator mistyped is an error, not a silent fallback. */
    if (fast && net_fast_subnet(&base, &count, err) < 0)
        return -1;
    if (!fast)
        snprintf(out->fast_off, sizeof out->fast_off, "%s", job.pod ? "a pod's netns (CNI's links)" : "turned off");
    else if (make_host_end(netns_fd, base, count, out, &job.host_ip, &why) < 0) {
        snprintf(out->fast_off, sizeof out->fast_off, "%.127s", why.message);
        out->cell_ip = 0;
        job.host_ip = 0;
    }
    pthread_t t;
    int pe = pthread_create(&t, NULL, setup_main, &job);
    if (pe != 0) {
        errno = pe;
        return util_fail_errno(err, "thread for the cell's network setup");
    }
    pthread_join(t, NULL);
    if (job.rc < 0) {
        net_listeners_close(out);
        return -1;
    }
    return 0;
}

void net_listeners_close(net_listeners *l)
{
    struct mnl_socket **nls[] = { &l->queue, &l->ct_events, &l->ct_query };
    for (size_t i = 0; i < sizeof nls / sizeof nls[0]; i++)
        if (*nls[i]) {
            mnl_socket_close(*nls[i]);
            *nls[i] = NULL;
        }
    int *fds[] = { &l->relay, &l->dns_udp, &l->dns_tcp, &l->udp, &l->netns };
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (*fds[i] >= 0) {
            close(*fds[i]);
            *fds[i] = -1;
        }
}

/* ---- cutting a cell off (its egress helper died) ---------------------------- */
typedef struct cut_job {
    int         netns_fd;
    cell_error *err;
    int         rc;
} cut_job;

/* Delete the cell's eth0: its veth pair goes with it, and with it every
 * flow the kernel carried for the cell (the fast path's), and the default
 * route over it.  No eth0 (no fast path) is nothing to cut. */
static void *cut_main(void *arg)
{
    cut_job *job = arg;
    job->rc = -1;
    if (setns(job->netns_fd, CLONE_NEWNET) < 0) {
        util_fail_errno(job->err, "entering the cell's network namespace");
        return NULL;
    }
    unsigned idx = if_nametoindex("eth0");
    if (idx == 0) {
        job->rc = 0;
        return NULL;
    }
    char buf[MNL_SOCKET_BUFFER_SIZE];
    job->rc = nl_request(nl_link(buf, RTM_DELLINK, idx, 0), buf, "deleting the cell's fast-path veth", job->err);
    return NULL;
}

int net_netns_cut(int ns_or_pidfd, cell_error *err)
{
    cut_job job = { .netns_fd = ns_or_pidfd, .err = err };
    pthread_t t;
    int pe = pthread_create(&t, NULL, cut_main, &job);
    if (pe != 0) {
        errno = pe;
        return util_fail_errno(err, "thread for cutting the cell's network");
    }
    pthread_join(t, NULL);
    return job.rc;
}
