/* screen.c: the host's own addresses ("host-self"), which a cell's policy
 * reaches only by naming them, and the screening of destinations the owner
 * itself connects to for a tenant (decide webhooks, DNS upstreams), so that
 * a policy cannot turn the daemon into a client of the host's own services. */
#include "net/screen.h"
#include "net/netns.h"   /* NET_FAST_SUBNET */
#include "util/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define SELF_MAX        256     /* addresses remembered; more are re-read every time */
#define SELF_REFRESH_MS 1000    /* a re-read at least this often, events or not */
#define SELF_WATCH_BUF  8192    /* the watch's receive buffer: past it, ENOBUFS (= changed) */
#define SELF_DRAIN_MAX  64      /* datagrams read per call; the rest wait, the list is re-read anyway */

/* The list is re-read when an address of the host is added or removed:
 * `watch` is an rtnetlink socket subscribed to RTM_NEWADDR/RTM_DELADDR,
 * drained (never waited on) at each look-up, so the first decision after
 * `ip addr add` already sees the address: the kernel queues the event
 * before the address's local route exists and before the command returns.
 * The timer stays as the fallback for a watch that could not be opened. */
static struct {
    pthread_mutex_t         lock;
    int64_t                 read_ms;     /* 0: never read */
    int                     dirty;       /* an event since the last successful read */
    int                     watch;       /* -1: none (yet) */
    pid_t                   watch_pid;   /* its opener: a forked child must not steal its events */
    size_t                  n;
    int                     overflow;    /* more than SELF_MAX: ask getifaddrs() each time */
    struct sockaddr_storage addrs[SELF_MAX];
} self = { .lock = PTHREAD_MUTEX_INITIALIZER, .watch = -1 };

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* IPv4-mapped IPv6 folds into IPv4, so one address has one form here. */
static int addr_bytes(const struct sockaddr *sa, int *family, uint8_t out[16])
{
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (sa && sa->sa_family == AF_INET) {
        *family = AF_INET;
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (!sa || sa->sa_family != AF_INET6)
        return -1;
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    if (memcmp(a, mapped, sizeof mapped) == 0) {
        *family = AF_INET;
        memcpy(out, a + 12, 4);
    } else {
        *family = AF_INET6;
        memcpy(out, a, 16);
    }
    return 0;
}

static int same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
    int fa, fb;
    uint8_t x[16], y[16];
    if (addr_bytes(a, &fa, x) < 0 || addr_bytes(b, &fb, y) < 0 || fa != fb)
        return 0;
    return memcmp(x, y, fa == AF_INET ? 4 : 16) == 0;
}

/* Scans the live interface list; with `keep`, also refreshes the cache. */
static int scan_interfaces(const struct sockaddr *sa, int keep)
{
    struct ifaddrs *list = NULL;
    if (getifaddrs(&list) < 0)
        return -1;              /* cannot tell: the caller fails closed */
    int found = 0;
    if (keep) {
        self.n = 0;
        self.overflow = 0;
    }
    for (struct ifaddrs *i = list; i; i = i->ifa_next) {
        const struct sockaddr *a = i->ifa_addr;
        if (!a || (a->sa_family != AF_INET && a->sa_family != AF_INET6))
            continue;
        found |= same_addr(a, sa);
        if (!keep)
            continue;
        if (self.n < SELF_MAX)
            memcpy(&self.addrs[self.n++], a, a->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                                      : sizeof(struct sockaddr_in6));
        else
            self.overflow = 1;
    }
    freeifaddrs(list);
    return found;
}

int net_fast_subnet(uint32_t *base, unsigned *count, cell_error *err)
{
    const char *text = getenv("CELL_EGRESS_SUBNET");
    if (!text || !*text)
        text = NET_FAST_SUBNET;
    char ip[32];
    unsigned prefix = 0;
    struct in_addr a;
    if (sscanf(text, "%31[0-9.]/%u", ip, &prefix) != 2 || inet_pton(AF_INET, ip, &a) != 1 || prefix < 8 ||
        prefix > 28)
        return util_fail(err, EINVAL, "CELL_EGRESS_SUBNET=%s: expected an IPv4 range from /8 to /28, e.g. %s",
                         text, NET_FAST_SUBNET);
    *base = ntohl(a.s_addr) & ~((1u << (32 - prefix)) - 1);
    *count = 1u << (30 - prefix);
    return 0;
}

static int in_cell_range(const struct sockaddr *sa)
{
    int family;
    uint8_t a[16];
    uint32_t base;
    unsigned count;
    cell_error err = { 0 };
    if (addr_bytes(sa, &family, a) < 0 || family != AF_INET)
        return 0;
    if (net_fast_subnet(&base, &count, &err) < 0)
        return 0;               /* a bad $CELL_EGRESS_SUBNET already fails every policed boot */
    uint32_t v = (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
    return v - base < (uint64_t)count * 4;
}

/* Subscribes to the host's address changes, in the caller's netns (the one
 * getifaddrs() reads).  Failure leaves the timer alone in charge: the egress
 * helper's fast-path thread may open no socket at all. */
static void self_watch_open(void)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
    if (fd < 0)
        return;
    struct sockaddr_nl nl = { .nl_family = AF_NETLINK, .nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR };
    int size = SELF_WATCH_BUF;   /* events are not kept, only noticed: a small queue is enough */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) < 0 ||
        bind(fd, (struct sockaddr *)&nl, sizeof nl) < 0) {
        close(fd);
        return;
    }
    self.watch = fd;
    self.watch_pid = getpid();
    self.dirty = 1;              /* what changed before the subscription is unknown */
}

/* Reads what the watch has queued, without waiting: 1 if anything changed
 * (an event, or events lost to a full queue), else 0. */
static int self_watch_drain(void)
{
    if (self.watch >= 0 && self.watch_pid != getpid()) {
        /* A forked child: the socket's events are the parent's to read, and
         * the list it inherited may be another netns's. */
        close(self.watch);
        self.watch = -1;
        return 1;
    }
    if (self.watch < 0)
        return 0;
    char buf[4096];
    int changed = 0;
    for (int i = 0; i < SELF_DRAIN_MAX; i++) {
        ssize_t n = recv(self.watch, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            changed = 1;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return changed;
        if (n < 0 && (errno == ENOBUFS || errno == EINTR)) {
            changed = 1;         /* the queue overflowed: events were lost */
            continue;
        }
        close(self.watch);       /* unusable: back to the timer alone */
        self.watch = -1;
        return 1;
    }
    return 1;                    /* more queued: changed either way */
}

int net_self_contains(const struct sockaddr *sa)
{
    if (in_cell_range(sa))
        return 1;
    pthread_mutex_lock(&self.lock);
    int64_t now = mono_ms();
    int found = 0;
    self.dirty |= self_watch_drain();
    int stale = self.read_ms == 0 || self.dirty || self.overflow || now - self.read_ms >= SELF_REFRESH_MS;
    if (stale && self.watch < 0)
        self_watch_open();       /* before the read: no change falls between the two */
    if (stale) {
        /* A failed scan counts as the host's own and leaves the cache as it
         * was, stale (and dirty stays set for the next caller): never an
         * empty or outdated list trusted (the egress helper's fast-path
         * thread may not open the socket a scan needs). */
        found = scan_interfaces(sa, 1);
        if (found < 0) {
            found = 1;
        } else {
            self.read_ms = now;
            self.dirty = 0;
        }
    } else {
        for (size_t i = 0; i < self.n && !found; i++)
            found = same_addr((const struct sockaddr *)&self.addrs[i], sa);
    }
    pthread_mutex_unlock(&self.lock);
    return found;
}

/* ---- owner destinations -------------------------------------------------- */

static int in_cidr(const struct sockaddr *sa, const char *cidr)
{
    char ip[INET6_ADDRSTRLEN + 1];
    unsigned prefix;
    int family;
    uint8_t want[16], have[16];
    const char *slash = strchr(cidr, '/');
    size_t len = slash ? (size_t)(slash - cidr) : strlen(cidr);
    if (len >= sizeof ip || addr_bytes(sa, &family, have) < 0)
        return 0;
    memcpy(ip, cidr, len);
    ip[len] = '\0';
    int cfamily = strchr(ip, ':') ? AF_INET6 : AF_INET;
    unsigned max = cfamily == AF_INET ? 32 : 128;
    if (inet_pton(cfamily, ip, want) != 1 || cfamily != family)
        return 0;
    prefix = max;
    if (slash && (sscanf(slash + 1, "%u", &prefix) != 1 || prefix > max))
        return 0;
    unsigned bytes = prefix / 8, bits = prefix % 8;
    if (memcmp(want, have, bytes) != 0)
        return 0;
    return bits == 0 || ((want[bytes] ^ have[bytes]) & (uint8_t)(0xff << (8 - bits))) == 0;
}

const char *net_screen_reason(const struct sockaddr *sa, const char *const *allow)
{
    for (size_t i = 0; allow && allow[i]; i++)
        if (in_cidr(sa, allow[i]))
            return NULL;
    int family;
    uint8_t a[16];
    static const uint8_t zero[16];
    if (addr_bytes(sa, &family, a) < 0)
        return "not an IP address";
    if (family == AF_INET ? a[0] == 0 : memcmp(a, zero, 16) == 0)
        return "an unspecified address (this host)";
    switch (net_addr_class(sa)) {
    case NET_CLASS_LOOPBACK:   return "a loopback address (this host)";
    case NET_CLASS_LINK_LOCAL: return "a link-local address (e.g. cloud metadata)";
    case NET_CLASS_MULTICAST:  return "a multicast address";
    case NET_CLASS_BROADCAST:  return "a broadcast address";
    default:                   break;
    }
    return net_self_contains(sa) ? "an address of this host or of a cell" : NULL;
}

/* The host of an http(s) URL that check_url() accepted, unbracketed. */
static void url_host(const char *url, char *out, size_t size)
{
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    size_t len = strcspn(h, "/?#");
    if (h[0] == '[') {
        const char *close = memchr(h, ']', len);
        len = close ? (size_t)(close - h - 1) : 0;
        h++;
    } else {
        const char *colon = memchr(h, ':', len);
        if (colon)
            len = (size_t)(colon - h);
    }
    snprintf(out, size, "%.*s", (int)(len < size ? len : size - 1), h);
}

static int screen_url(const char *url, size_t rule, const char *const *allow, cell_error *err)
{
    char host[256];
    url_host(url, host, sizeof host);
    struct sockaddr_storage ss = { 0 };
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else {
        size_t n = strlen(host);
        int local = strcasecmp(host, "localhost") == 0 ||
                    (n > 10 && strcasecmp(host + n - 10, ".localhost") == 0);
        if (local && !(allow && allow[0]))
            return util_fail(err, EACCES, "rules[%zu].decide.url: %s is this host; the daemon does not call the "
                             "host's own services for a tenant unless the operator allows it (cell serve "
                             "--allow-tenant-dest CIDR)", rule, host);
        return 0;               /* a name: screened when connecting */
    }
    const char *why = net_screen_reason((struct sockaddr *)&ss, allow);
    if (why)
        return util_fail(err, EACCES, "rules[%zu].decide.url: %s is %s; the daemon does not call it for a tenant "
                         "unless the operator allows it (cell serve --allow-tenant-dest CIDR)", rule, host, why);
    return 0;
}

/* What a tenant's rule may not open: the engine reaches the host and
 * link-local only for rules that name them (policy.c), so naming them is
 * what is screened: the classes host-self and link-local, an address of
 * the host or of a cell, a CIDR inside link-local.  An operator's CIDR
 * (--allow-tenant-dest) that holds the address lets it through. */
static const char *screen_target(unsigned classes, const struct sockaddr *sa, int prefix, const char *const *allow)
{
    if (classes & NET_CLASS_HOST_SELF)
        return "the class host-self (this host and the cells)";
    if (classes & NET_CLASS_LINK_LOCAL)
        return "the class link-local (e.g. cloud metadata)";
    if (classes)
        return NULL;
    for (size_t i = 0; allow && allow[i]; i++)
        if (in_cidr(sa, allow[i]))
            return NULL;
    int v4 = sa->sa_family == AF_INET;
    if (net_addr_class(sa) == NET_CLASS_LINK_LOCAL && prefix >= (v4 ? 16 : 10))
        return "a link-local address (e.g. cloud metadata)";
    if (prefix == (v4 ? 32 : 128) && net_self_contains(sa))
        return "an address of this host or of a cell";
    return NULL;
}

static int screen_targets(const net_policy *p, const char *const *allow, cell_error *err)
{
    unsigned classes;
    struct sockaddr_storage ss;
    int prefix;
    for (size_t i = 0; i < net_policy_rule_count(p); i++)
        for (size_t j = 0; net_policy_opening_target(p, i, j, &classes, &ss, &prefix); j++) {
            const char *why = screen_target(classes, (struct sockaddr *)&ss, prefix, allow);
            if (why)
                return util_fail(err, EACCES, "rules[%zu]: a tenant's policy may not open %s; only the operator "
                                 "can (cell serve --allow-tenant-dest CIDR)", i, why);
        }
    return 0;
}

int net_screen_policy(const net_policy *p, const char *const *allow, cell_error *err)
{
    if (screen_targets(p, allow, err) < 0)
        return -1;
    const net_dns_config *d = net_policy_dns(p);
    for (size_t i = 0; d && i < d->n_upstreams; i++) {
        const char *why = net_screen_reason((const struct sockaddr *)&d->upstreams[i], allow);
        if (why)
            return util_fail(err, EACCES, "rules[%d].dns.upstreams[%zu] is %s; the daemon does not send a "
                             "tenant's queries there unless the operator allows it (cell serve "
                             "--allow-tenant-dest CIDR)", d->rule, i, why);
    }
    for (size_t i = 0; i < net_policy_rule_count(p); i++) {
        const net_decide_rule *rule = net_policy_decide_rule(p, i);
        if (rule && screen_url(rule->url, i, allow, err) < 0)
            return -1;
    }
    return 0;
}

/* cell_policy_check_v2() of include/cell.h (through src/runtime/plugin.c). */
int net_policy_check_v2(const char *policy_json, const char *const *owner_allow, cell_error *err)
{
    net_policy *p;
    if (!policy_json)
        return util_fail(err, EINVAL, "policy: a JSON document is required");
    if (net_policy_parse(policy_json, strlen(policy_json), &p, err) < 0)
        return -1;
    int rc = net_screen_policy(p, owner_allow, err);
    net_policy_unref(p);
    return rc;
}
