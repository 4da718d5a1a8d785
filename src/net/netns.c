/* netns.c: wiring of a policed cell's network namespace: a default route
 * over lo, policy routing for transparent UDP, nftables rules that send every
 * flow to the owner, and its listeners. */
#include "net/netns.h"
#include "net/net.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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
    "  chain nat_out {\n"
    "    type nat hook output priority -100; policy accept;\n"
    "    meta nfproto ipv4 udp dport 53 redirect to :15053\n"
    "    meta nfproto ipv4 tcp dport 53 redirect to :15053\n"
    "    ip daddr 127.0.0.0/8 return\n"
    "    meta nfproto ipv4 meta l4proto tcp redirect to :15001\n"
    "  }\n"
    "  chain udp_mark {\n"
    "    type route hook output priority mangle; policy accept;\n"
    "    meta nfproto ipv4 ip saddr 127.0.0.0/8 ip daddr != 127.0.0.0/8 udp dport != 53 meta mark set 1\n"
    "  }\n"
    "  chain udp_tproxy {\n"
    "    type filter hook prerouting priority mangle; policy accept;\n"
    "    meta nfproto ipv4 meta l4proto udp meta mark 1 tproxy ip to 127.0.0.1:15002 accept\n"
    "    meta mark 1 drop\n"
    "  }\n"
    "  chain filter_out {\n"
    "    type filter hook output priority 0; policy drop;\n"
    "    oif \"lo\" accept\n"
    "  }\n"
    "}\n";

const char *net_ruleset(void) { return ruleset; }

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
        util_fail_errno(err, "adding %s in the cell", what);
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
    return nl_request(nlh, buf, "the default route over lo", err);
}

/* For transparent UDP: "fwmark 1 lookup 100" and, in table 100,
 * "local 0.0.0.0/0 dev lo", so datagrams marked by udp_mark are routed as
 * if addressed to this host and come back in through lo, where TPROXY can
 * hand them to the owner's socket with their destination untouched. */
static int add_udp_routing(cell_error *err)
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
    if (nl_request(nlh, buf, "the policy routing rule for UDP", err) < 0)
        return -1;

    nlh = lo_default_route(buf, (unsigned)time(NULL) + 1, NET_UDP_TABLE, RT_SCOPE_HOST, RTN_LOCAL);
    return nl_request(nlh, buf, "the local route for UDP", err);
}

static int install_rules(cell_error *err)
{
    struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!nft)
        return util_fail(err, ENOMEM, "nftables context");
    nft_ctx_buffer_error(nft);
    int rc = nft_run_cmd_from_buffer(nft, ruleset);
    if (rc != 0) {
        const char *why = nft_ctx_get_error_buffer(nft);
        util_fail(err, EIO, "installing the cell's nftables rules: %s", why && *why ? why : "failed");
    }
    nft_ctx_free(nft);
    return rc != 0 ? -1 : 0;
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
    if (add_default_route(job->err) < 0 || add_udp_routing(job->err) < 0 || install_rules(job->err) < 0)
        return NULL;
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

int net_netns_setup(int netns_fd, net_listeners *out, cell_error *err)
{
    *out = (net_listeners){ .relay = -1, .dns_udp = -1, .dns_tcp = -1, .udp = -1, .netns = -1 };
    setup_job job = { .netns_fd = netns_fd, .out = out, .err = err };
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
    int *fds[] = { &l->relay, &l->dns_udp, &l->dns_tcp, &l->udp, &l->netns };
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (*fds[i] >= 0) {
            close(*fds[i]);
            *fds[i] = -1;
        }
}
