/* policy.c: parses and strictly validates a cell's JSON network policy, then
 * answers per flow (first matching rule wins, no match denies). */
#include "net/policy.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "net/httppath.h"
#include "net/meter.h"
#include "util/util.h"

#define MAX_RULES     256
#define MAX_LIST      256   /* entries in any one list: bounds memory and decide() time */
#define MAX_NAME      253
#define MAX_LABEL     63
#define MAX_URL       2048
#define MAX_HTTP_PATH 2048
#define PATH_LEN      160   /* "rules[255].http.set_headers[\"...\"]" and some */

enum rule_kind { R_DNS, R_TCP, R_UDP, R_IP, R_HOST, R_HTTP, R_DECIDE, R_COUNT };
static const char *const kind_names[R_COUNT] = { "dns", "tcp", "udp", "ip", "host", "http", "decide" };

typedef struct port_range {
    uint16_t lo, hi;
} port_range;

/* A class target has `classes` set; otherwise an address masked to `prefix`. */
typedef struct target {
    unsigned classes;
    int      family;
    uint8_t  addr[16];
    int      prefix;
} target;

typedef struct rule {
    enum rule_kind  kind;
    int             allow;
    target         *to;        /* n_to == 0: any address */
    size_t          n_to;
    port_range     *ports;     /* n_ports == 0: any port */
    size_t          n_ports;
    char           *name;      /* host/http: lower case, maybe "*.suffix" */
    net_http_rule   http;
    net_decide_rule decide;
} rule;

struct net_policy {
    atomic_size_t  refs;
    rule          *rules;
    size_t         n_rules;
    int            has_dns;
    net_dns_config dns;
};

/* A flow's destination, IPv4-mapped IPv6 folded into IPv4 so that every
 * check sees one form of each address. */
typedef struct flow_addr {
    int      family;
    uint8_t  addr[16];
    uint16_t port;
} flow_addr;

/* ---- error messages --------------------------------------------------------------- */

/* User text in messages: quoted, bounded, control bytes escaped, so that a
 * hostile policy cannot make an error message lie or overflow. */
typedef struct qstr {
    char s[96];
} qstr;

static qstr q(const char *text)
{
    qstr out;
    size_t o = 0, i = 0;
    out.s[o++] = '"';
    for (; text[i] && o < sizeof out.s - 8; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
            o += (size_t)snprintf(out.s + o, sizeof out.s - o, "\\x%02x", c);
        else
            out.s[o++] = (char)c;
    }
    if (text[i])
        o += (size_t)snprintf(out.s + o, sizeof out.s - o, "...");
    snprintf(out.s + o, sizeof out.s - o, "\"");
    return out;
}

static const char *jtype(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:  return "an object";
    case JSON_ARRAY:   return "an array";
    case JSON_STRING:  return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL:    return "a number with a fraction";
    case JSON_TRUE:    return "true";
    case JSON_FALSE:   return "false";
    default:           return "null";
    }
}

/* `path: message`, EINVAL. */
__attribute__((format(printf, 3, 4)))
static int bad(cell_error *err, const char *path, const char *fmt, ...)
{
    char msg[440];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return util_fail(err, EINVAL, "%s: %s", path, msg);
}

/* Build a field path into buf; truncation only shortens a message. */
__attribute__((format(printf, 3, 4)))
static const char *at(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return buf;
}
#define AT(buf, ...) at(buf, sizeof buf, __VA_ARGS__)

/* Every key of obj must be in `allowed` (NULL-terminated). */
static int check_keys(const json_t *obj, const char *path, const char *const *allowed, const char *expected,
                      cell_error *err)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        const char *const *a = allowed;
        while (*a && strcmp(*a, key) != 0)
            a++;
        if (!*a)
            return bad(err, path, "unknown key %s (expected %s)", q(key).s, expected);
    }
    return 0;
}

static int want_object(const json_t *v, const char *path, cell_error *err)
{
    return json_is_object(v) ? 0 : bad(err, path, "expected an object, got %s", jtype(v));
}

static int want_string(const json_t *v, const char *path, const char *what, cell_error *err)
{
    return json_is_string(v) ? 0 : bad(err, path, "expected %s, got %s", what, jtype(v));
}

/* A non-empty array of at most `max` entries. */
static int want_list(const json_t *v, const char *path, const char *what, size_t max, cell_error *err)
{
    if (!json_is_array(v))
        return bad(err, path, "expected an array of %s, got %s", what, jtype(v));
    if (json_array_size(v) == 0)
        return bad(err, path, "empty array; expected at least one of %s (or omit the field)", what);
    if (json_array_size(v) > max)
        return bad(err, path, "%zu entries; at most %zu are allowed", json_array_size(v), max);
    return 0;
}

static int int_in_range(const json_t *v, const char *path, long long lo, long long hi, int *out, cell_error *err)
{
    if (!json_is_integer(v))
        return bad(err, path, "expected an integer (%lld-%lld), got %s", lo, hi, jtype(v));
    long long n = json_integer_value(v);
    if (n < lo || n > hi)
        return bad(err, path, "%lld is out of range (%lld-%lld)", n, lo, hi);
    *out = (int)n;
    return 0;
}

static char **strv_new(size_t n)
{
    return calloc(n + 1, sizeof(char *));
}

static void strv_free(char **v)
{
    for (char **s = v; s && *s; s++)
        free(*s);
    free(v);
}

/* ---- addresses and classes --------------------------------------------------------- */

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static int prefix_match(const uint8_t *a, const uint8_t *net, int prefix)
{
    int bytes = prefix / 8, bits = prefix % 8;
    if (memcmp(a, net, (size_t)bytes) != 0)
        return 0;
    if (bits == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - bits));
    return (a[bytes] & mask) == (net[bytes] & mask);
}

static void mask_to_prefix(uint8_t *a, int prefix, int len)
{
    for (int i = 0; i < len; i++) {
        int keep = prefix - i * 8;
        if (keep <= 0)
            a[i] = 0;
        else if (keep < 8)
            a[i] &= (uint8_t)(0xff << (8 - keep));
    }
}

static int flow_addr_of(const struct sockaddr *sa, flow_addr *fa)
{
    memset(fa, 0, sizeof *fa);
    if (!sa)
        return -1;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        fa->family = AF_INET;
        memcpy(fa->addr, &in->sin_addr, 4);
        fa->port = ntohs(in->sin_port);
        return 0;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    fa->port = ntohs(in6->sin6_port);
    if (memcmp(in6->sin6_addr.s6_addr, v4_mapped_prefix, 12) == 0) {
        fa->family = AF_INET;
        memcpy(fa->addr, in6->sin6_addr.s6_addr + 12, 4);
    } else {
        fa->family = AF_INET6;
        memcpy(fa->addr, in6->sin6_addr.s6_addr, 16);
    }
    return 0;
}

typedef struct class_net {
    uint8_t  addr[16];
    int      prefix;
    unsigned cls;
} class_net;

/* Most specific first where ranges nest (255.255.255.255 inside 240/4). */
static const class_net v4_classes[] = {
    { { 255, 255, 255, 255 }, 32, NET_CLASS_BROADCAST },
    { { 0 }, 8, NET_CLASS_RESERVED },
    { { 10 }, 8, NET_CLASS_PRIVATE },
    { { 100, 64 }, 10, NET_CLASS_PRIVATE },          /* CGNAT: never the public internet */
    { { 127 }, 8, NET_CLASS_LOOPBACK },
    { { 169, 254 }, 16, NET_CLASS_LINK_LOCAL },      /* incl. cloud metadata 169.254.169.254 */
    { { 172, 16 }, 12, NET_CLASS_PRIVATE },
    { { 192, 0, 0 }, 24, NET_CLASS_RESERVED },
    { { 192, 0, 2 }, 24, NET_CLASS_DOCUMENTATION },
    { { 192, 88, 99 }, 24, NET_CLASS_RESERVED },     /* 6to4 relay anycast */
    { { 192, 168 }, 16, NET_CLASS_PRIVATE },
    { { 198, 18 }, 15, NET_CLASS_RESERVED },         /* benchmarking */
    { { 198, 51, 100 }, 24, NET_CLASS_DOCUMENTATION },
    { { 203, 0, 113 }, 24, NET_CLASS_DOCUMENTATION },
    { { 224 }, 4, NET_CLASS_MULTICAST },
    { { 240 }, 4, NET_CLASS_RESERVED },
};

/* Anything outside these and 2000::/3 is unassigned: reserved.  The ranges
 * that embed IPv4 (0::/8 incl. NAT64, 2001::/23 incl. Teredo, 2002::/16) are
 * reserved so that "public" cannot reach a private IPv4 through a gateway. */
static const class_net v6_classes[] = {
    { { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, 128, NET_CLASS_LOOPBACK },
    { { 0 }, 8, NET_CLASS_RESERVED },
    { { 0x01, 0x00 }, 64, NET_CLASS_RESERVED },      /* discard-only */
    { { 0x20, 0x01, 0x0d, 0xb8 }, 32, NET_CLASS_DOCUMENTATION },
    { { 0x20, 0x01 }, 23, NET_CLASS_RESERVED },
    { { 0x20, 0x02 }, 16, NET_CLASS_RESERVED },
    { { 0xfc }, 7, NET_CLASS_PRIVATE },
    { { 0xfe, 0x80 }, 10, NET_CLASS_LINK_LOCAL },
    { { 0xff }, 8, NET_CLASS_MULTICAST },
};

static unsigned classify(const flow_addr *fa)
{
    const class_net *t = fa->family == AF_INET ? v4_classes : v6_classes;
    size_t n = fa->family == AF_INET ? sizeof v4_classes / sizeof *v4_classes : sizeof v6_classes / sizeof *v6_classes;
    for (size_t i = 0; i < n; i++)
        if (prefix_match(fa->addr, t[i].addr, t[i].prefix))
            return t[i].cls;
    if (fa->family == AF_INET6 && (fa->addr[0] & 0xe0) != 0x20)
        return NET_CLASS_RESERVED;
    return NET_CLASS_PUBLIC;
}

unsigned net_addr_class(const struct sockaddr *sa)
{
    flow_addr fa;
    if (flow_addr_of(sa, &fa) < 0)
        return NET_CLASS_RESERVED;   /* not IP: never "public" */
    return classify(&fa);
}

static const struct {
    const char *name;
    unsigned    bit;
} class_names[] = {
    { "loopback", NET_CLASS_LOOPBACK },   { "private", NET_CLASS_PRIVATE },
    { "link-local", NET_CLASS_LINK_LOCAL }, { "multicast", NET_CLASS_MULTICAST },
    { "broadcast", NET_CLASS_BROADCAST }, { "documentation", NET_CLASS_DOCUMENTATION },
    { "reserved", NET_CLASS_RESERVED },   { "public", NET_CLASS_PUBLIC },
    { "host-self", NET_CLASS_HOST_SELF },
};
#define CLASS_LIST "loopback, private, link-local, multicast, broadcast, documentation, reserved, public, host-self"

const char *net_class_name(unsigned bit)
{
    for (size_t i = 0; i < sizeof class_names / sizeof *class_names; i++)
        if (class_names[i].bit == bit)
            return class_names[i].name;
    return "unknown";
}

/* ---- PORTS ------------------------------------------------------------------------- */

/* 1-5 digits; the caller checks the range.  Returns the end or NULL. */
static const char *parse_digits(const char *s, unsigned *out)
{
    unsigned v = 0;
    int n = 0;
    for (; *s >= '0' && *s <= '9'; s++, n++) {
        if (n == 5)
            return NULL;
        v = v * 10 + (unsigned)(*s - '0');
    }
    *out = v;
    return n ? s : NULL;
}

static int port_ok(unsigned p)
{
    return p >= 1 && p <= 65535;
}

static int parse_port_text(const char *s, const char *path, port_range *out, cell_error *err)
{
    unsigned lo, hi;
    const char *e = parse_digits(s, &lo);
    if (e && *e == '-')
        e = parse_digits(e + 1, &hi);
    else
        hi = lo;
    if (!e || *e || !port_ok(lo) || !port_ok(hi))
        return bad(err, path, "%s is not a port or range (1-65535)", q(s).s);
    if (lo > hi)
        return bad(err, path, "%s: range start %u is above its end %u (expected \"LO-HI\", LO <= HI)", q(s).s, lo, hi);
    out->lo = (uint16_t)lo;
    out->hi = (uint16_t)hi;
    return 0;
}

static int parse_port_item(const json_t *v, const char *path, port_range *out, cell_error *err)
{
    if (json_is_string(v))
        return parse_port_text(json_string_value(v), path, out, err);
    if (!json_is_integer(v))
        return bad(err, path, "expected a port (1-65535) or a range \"LO-HI\", got %s", jtype(v));
    long long n = json_integer_value(v);
    if (n < 1 || n > 65535)
        return bad(err, path, "%lld is not a port (1-65535)", n);
    out->lo = out->hi = (uint16_t)n;
    return 0;
}

static int parse_ports(const json_t *v, const char *path, rule *r, cell_error *err)
{
    char sub[PATH_LEN];
    if (!json_is_array(v)) {
        r->ports = calloc(1, sizeof *r->ports);
        if (!r->ports)
            return util_fail(err, ENOMEM, "%s: out of memory", path);
        r->n_ports = 1;
        return parse_port_item(v, path, r->ports, err);
    }
    if (want_list(v, path, "ports or ranges", MAX_LIST, err) < 0)
        return -1;
    r->ports = calloc(json_array_size(v), sizeof *r->ports);
    if (!r->ports)
        return util_fail(err, ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < json_array_size(v); i++, r->n_ports++)
        if (parse_port_item(json_array_get(v, i), AT(sub, "%s[%zu]", path, i), &r->ports[i], err) < 0)
            return -1;
    return 0;
}

static int ports_match(const rule *r, uint16_t port)
{
    if (r->n_ports == 0)
        return 1;
    for (size_t i = 0; i < r->n_ports; i++)
        if (port >= r->ports[i].lo && port <= r->ports[i].hi)
            return 1;
    return 0;
}

/* ---- TARGETS ----------------------------------------------------------------------- */

/* An IPv4 or IPv6 literal into 16 bytes; mapped IPv6 becomes IPv4. */
static int parse_ip(const char *s, int *family, uint8_t addr[16])
{
    memset(addr, 0, 16);
    if (inet_pton(AF_INET, s, addr) == 1) {
        *family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, s, addr) != 1)
        return -1;
    *family = AF_INET6;
    return 0;
}

/* "/N" after an address: digits only, within the family's width. */
static int parse_prefix(const char *text, const char *slash, int family, const char *path, int *out, cell_error *err)
{
    unsigned n;
    int max = family == AF_INET ? 32 : 128;
    const char *e = parse_digits(slash + 1, &n);
    if (!e || *e)
        return bad(err, path, "%s: expected a prefix length after '/' (0-%d)", q(text).s, max);
    if ((int)n > max)
        return bad(err, path, "%s: prefix length %u is out of range for %s (0-%d)", q(text).s, n,
                   family == AF_INET ? "IPv4" : "IPv6", max);
    *out = (int)n;
    return 0;
}

static int parse_class(const char *s, target *t)
{
    for (size_t i = 0; i < sizeof class_names / sizeof *class_names; i++)
        if (strcmp(s, class_names[i].name) == 0) {
            t->classes = class_names[i].bit;
            return 0;
        }
    return -1;
}

static int parse_target(const char *s, const char *path, target *t, cell_error *err)
{
    if (parse_class(s, t) == 0)
        return 0;
    char ip[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t len = slash ? (size_t)(slash - s) : strlen(s);
    if (len < sizeof ip) {
        memcpy(ip, s, len);
        ip[len] = '\0';
    }
    if (len >= sizeof ip || parse_ip(ip, &t->family, t->addr) < 0)
        return bad(err, path, "%s is not an IP address, CIDR or class (" CLASS_LIST ")", q(s).s);
    t->prefix = t->family == AF_INET ? 32 : 128;
    if (slash && parse_prefix(s, slash, t->family, path, &t->prefix, err) < 0)
        return -1;
    if (t->family == AF_INET6 && t->prefix >= 96 && memcmp(t->addr, v4_mapped_prefix, 12) == 0) {
        memmove(t->addr, t->addr + 12, 4);   /* flows see mapped addresses as IPv4 */
        memset(t->addr + 4, 0, 12);
        t->family = AF_INET;
        t->prefix -= 96;
    }
    mask_to_prefix(t->addr, t->prefix, 16);   /* host bits set: allowed, ignored */
    return 0;
}

static int parse_targets(const json_t *v, const char *path, rule *r, cell_error *err)
{
    char sub[PATH_LEN];
    if (json_is_string(v)) {
        r->to = calloc(1, sizeof *r->to);
        if (!r->to)
            return util_fail(err, ENOMEM, "%s: out of memory", path);
        r->n_to = 1;
        return parse_target(json_string_value(v), path, r->to, err);
    }
    if (want_list(v, path, "addresses, CIDRs or classes", MAX_LIST, err) < 0)
        return -1;
    r->to = calloc(json_array_size(v), sizeof *r->to);
    if (!r->to)
        return util_fail(err, ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < json_array_size(v); i++, r->n_to++) {
        const json_t *e = json_array_get(v, i);
        AT(sub, "%s[%zu]", path, i);
        if (want_string(e, sub, "an IP address, CIDR or class", err) < 0 ||
            parse_target(json_string_value(e), sub, &r->to[i], err) < 0)
            return -1;
    }
    return 0;
}

static int target_match(const target *t, const flow_addr *fa, unsigned cls)
{
    if (t->classes)
        return (t->classes & cls) != 0;
    return t->family == fa->family && prefix_match(fa->addr, t->addr, t->prefix);
}

/* For the host itself: the class "host-self" or this very address (a /32
 * or /128).  For link-local: the class "link-local" or a CIDR inside the
 * range (169.254.0.0/16 or longer, fe80::/10 or longer).  Not a wider
 * CIDR or class that merely contains it. */
static int names_exactly(const rule *r, const flow_addr *fa, int to_self)
{
    int full = fa->family == AF_INET ? 32 : 128, local = fa->family == AF_INET ? 16 : 10;
    for (size_t i = 0; i < r->n_to; i++) {
        const target *t = &r->to[i];
        if (t->classes & (to_self ? NET_CLASS_HOST_SELF : NET_CLASS_LINK_LOCAL))
            return 1;
        if (!t->classes && (t->prefix == full || (!to_self && t->prefix >= local)) && target_match(t, fa, 0))
            return 1;
    }
    return 0;
}

/* A flow to the host itself, or to link-local (where clouds serve instance
 * credentials at 169.254.169.254), is allowed only by a rule that names
 * it: a "private" or "0.0.0.0/0" meant for other machines must not reach
 * the daemon's listeners, the host's services or the metadata service.
 * Deny rules still match as usual, so first-match-wins keeps holding for
 * them. */
static int targets_match(const rule *r, const flow_addr *fa, int to_self)
{
    int allowing = r->allow || r->kind == R_DECIDE;
    if ((to_self || classify(fa) == NET_CLASS_LINK_LOCAL) && allowing)
        return names_exactly(r, fa, to_self);
    if (r->n_to == 0)
        return 1;
    unsigned cls = classify(fa) | (to_self ? NET_CLASS_HOST_SELF : 0);
    for (size_t i = 0; i < r->n_to; i++)
        if (target_match(&r->to[i], fa, cls))
            return 1;
    return 0;
}

/* ---- NAME -------------------------------------------------------------------------- */

static int label_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* One label of a lower-cased name, [start, start+len). */
static int check_label(const char *name, const char *start, size_t len, const char *path, cell_error *err)
{
    if (len == 0)
        return bad(err, path, "%s has an empty label", q(name).s);
    if (len > MAX_LABEL)
        return bad(err, path, "%s has a label of %zu characters; at most %d", q(name).s, len, MAX_LABEL);
    if (start[0] == '-' || start[len - 1] == '-')
        return bad(err, path, "%s: a label cannot start or end with '-'", q(name).s);
    for (size_t i = 0; i < len; i++)
        if (!label_char(start[i]))
            return bad(err, path, "%s: '%c' is not allowed (expected letters, digits, '-', '_' and a leading \"*.\")",
                       q(name).s, start[i] >= 0x21 && start[i] < 0x7f ? start[i] : '?');
    return 0;
}

static int check_name(const char *name, const char *path, cell_error *err)
{
    size_t len = strlen(name);
    int family;
    uint8_t addr[16];
    if (len == 0)
        return bad(err, path, "empty name; expected a host name like \"api.example.com\" or \"*.example.com\"");
    if (len > MAX_NAME)
        return bad(err, path, "name is %zu characters; at most %d", len, MAX_NAME);
    if (name[len - 1] == '.')
        return bad(err, path, "%s: write the name without a trailing dot", q(name).s);
    if (parse_ip(name, &family, addr) == 0)
        return bad(err, path, "%s is an address; match addresses with a tcp rule's \"to\"", q(name).s);
    const char *s = name;
    if (strncmp(s, "*.", 2) == 0)
        s += 2;   /* the wildcard: only as the whole first label */
    if (strcmp(name, "*") == 0 || strchr(s, '*'))
        return bad(err, path, "%s: '*' may only be the whole first label, followed by a name, as in \"*.example.com\"",
                   q(name).s);
    for (;;) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (check_label(name, s, n, path, err) < 0)
            return -1;
        if (!dot)
            return 0;
        s = dot + 1;
    }
}

static int parse_name(const json_t *v, const char *path, char **out, cell_error *err)
{
    if (want_string(v, path, "a host name like \"api.example.com\" or \"*.example.com\"", err) < 0)
        return -1;
    char *name = strdup(json_string_value(v));
    if (!name)
        return util_fail(err, ENOMEM, "%s: out of memory", path);
    for (char *c = name; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    *out = name;   /* owned by the rule from here, even if invalid */
    return check_name(name, path, err);
}

/* `host` as pinned by DNS (any case, trailing dot tolerated). */
static int name_match(const char *pattern, const char *host)
{
    size_t hl = strlen(host);
    if (hl && host[hl - 1] == '.')
        hl--;
    if (pattern[0] != '*')
        return strlen(pattern) == hl && strncasecmp(pattern, host, hl) == 0;
    const char *suffix = pattern + 1;   /* ".example.com" */
    size_t sl = strlen(suffix);
    return hl > sl && host[hl - sl - 1] != '.' && host[0] != '.' && strncasecmp(host + hl - sl, suffix, sl) == 0;
}

/* ---- dns ---------------------------------------------------------------------------- */

static int set_sockaddr(struct sockaddr_storage *ss, int family, const uint8_t *addr, unsigned port)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        memcpy(&in->sin_addr, addr, 4);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        memcpy(&in6->sin6_addr, addr, 16);
    }
    return 0;
}

/* "IP", "IPv4:PORT", "IPv6" or "[IPv6]:PORT", port 53 when not given. */
static int parse_upstream(const char *s, const char *path, struct sockaddr_storage *ss, cell_error *err)
{
    char ip[INET6_ADDRSTRLEN + 1];
    const char *host = s, *port_text = NULL;
    size_t len;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        host = s + 1;
        len = close ? (size_t)(close - host) : sizeof ip;
        if (close && close[1] == ':')
            port_text = close + 2;
        else if (close && close[1])
            len = sizeof ip;   /* junk after ']' */
    } else {
        const char *colon = strchr(s, ':');
        len = strlen(s);
        if (colon && !strchr(colon + 1, ':')) {   /* one colon: IPv4:PORT */
            len = (size_t)(colon - s);
            port_text = colon + 1;
        }
    }
    int family = 0;
    uint8_t addr[16];
    unsigned port = 53;
    if (len >= sizeof ip)
        return bad(err, path, "%s is not an IP address, IP:PORT or [IPv6]:PORT", q(s).s);
    memcpy(ip, host, len);
    ip[len] = '\0';
    if (parse_ip(ip, &family, addr) < 0 || (s[0] == '[' && family != AF_INET6))
        return bad(err, path, "%s is not an IP address, IP:PORT or [IPv6]:PORT", q(s).s);
    const char *e = port_text ? parse_digits(port_text, &port) : "";
    if (!e || *e || !port_ok(port))
        return bad(err, path, "%s: the port is not 1-65535", q(s).s);
    if (family == AF_INET6 && memcmp(addr, v4_mapped_prefix, 12) == 0) {
        memmove(addr, addr + 12, 4);
        family = AF_INET;
    }
    return set_sockaddr(ss, family, addr, port);
}

static int parse_dns(const json_t *m, const char *path, int index, rule *r, net_dns_config *d, cell_error *err)
{
    static const char *const keys[] = { "upstreams", "strict", "rebind", NULL };
    char sub[PATH_LEN];
    if (check_keys(m, path, keys, "upstreams, strict, rebind", err) < 0)
        return -1;
    /* The dns rule never matches a flow, so its targets are free to hold
     * the answers its "rebind" accepts. */
    const json_t *rebind = json_object_get(m, "rebind");
    if (rebind && parse_targets(rebind, AT(sub, "%s.rebind", path), r, err) < 0)
        return -1;
    const json_t *ups = json_object_get(m, "upstreams");
    AT(sub, "%s.upstreams", path);
    if (!ups)
        return bad(err, sub, "missing; expected 1-%d resolver addresses like \"1.1.1.1\" or \"[::1]:5353\"",
                   NET_DNS_MAX_UPSTREAMS);
    if (want_list(ups, sub, "resolver addresses", NET_DNS_MAX_UPSTREAMS, err) < 0)
        return -1;
    memset(d, 0, sizeof *d);
    d->rule = index;
    for (size_t i = 0; i < json_array_size(ups); i++, d->n_upstreams++) {
        const json_t *u = json_array_get(ups, i);
        AT(sub, "%s.upstreams[%zu]", path, i);
        if (want_string(u, sub, "an IP address, IP:PORT or [IPv6]:PORT", err) < 0 ||
            parse_upstream(json_string_value(u), sub, &d->upstreams[i], err) < 0)
            return -1;
    }
    const json_t *strict = json_object_get(m, "strict");
    if (strict && !json_is_boolean(strict))
        return bad(err, AT(sub, "%s.strict", path), "expected true or false, got %s", jtype(strict));
    d->strict = json_is_true(strict);
    return 0;
}

/* ---- tcp, udp, ip, host ------------------------------------------------------------ */

static int parse_opt_to_ports(const json_t *m, const char *path, rule *r, cell_error *err)
{
    char sub[PATH_LEN];
    const json_t *to = json_object_get(m, "to"), *ports = json_object_get(m, "ports");
    if (to && parse_targets(to, AT(sub, "%s.to", path), r, err) < 0)
        return -1;
    if (ports && parse_ports(ports, AT(sub, "%s.ports", path), r, err) < 0)
        return -1;
    return 0;
}

static int parse_l4(const json_t *m, const char *path, rule *r, cell_error *err)
{
    static const char *const keys[] = { "to", "ports", NULL };
    if (check_keys(m, path, keys, "to, ports", err) < 0)
        return -1;
    return parse_opt_to_ports(m, path, r, err);
}

/* The required name field of host ("name") and http ("host") rules. */
static int parse_required_name(const json_t *m, const char *path, const char *key, rule *r, cell_error *err)
{
    char sub[PATH_LEN];
    const json_t *name = json_object_get(m, key);
    AT(sub, "%s.%s", path, key);
    if (!name)
        return bad(err, sub, "missing; expected a host name like \"api.example.com\" or \"*.example.com\"");
    if (parse_name(name, sub, &r->name, err) < 0)
        return -1;
    const json_t *ports = json_object_get(m, "ports");
    if (ports && parse_ports(ports, AT(sub, "%s.ports", path), r, err) < 0)
        return -1;
    return 0;
}

static int parse_host(const json_t *m, const char *path, rule *r, cell_error *err)
{
    static const char *const keys[] = { "name", "ports", NULL };
    if (check_keys(m, path, keys, "name, ports", err) < 0)
        return -1;
    return parse_required_name(m, path, "name", r, err);
}

/* ---- http --------------------------------------------------------------------------- */

static int method_known(const char *m)
{
    static const char *const known[] = { "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                                         "TRACE", "PATCH", NULL };
    for (const char *const *k = known; *k; k++)
        if (strcasecmp(*k, m) == 0)
            return 1;
    return 0;
}

static int parse_method(const json_t *v, const char *path, char **out, cell_error *err)
{
    if (want_string(v, path, "an HTTP method", err) < 0)
        return -1;
    const char *m = json_string_value(v);
    if (!method_known(m))
        return bad(err, path, "%s is not a method (expected GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)",
                   q(m).s);
    if (!(*out = strdup(m)))
        return util_fail(err, ENOMEM, "%s: out of memory", path);
    for (char *c = *out; *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 'a' + 'A');
    return 0;
}

static int parse_http_path(const json_t *v, const char *path, char **out, cell_error *err)
{
    if (want_string(v, path, "a path prefix starting with '/'", err) < 0)
        return -1;
    const char *p = json_string_value(v);
    if (p[0] != '/')
        return bad(err, path, "%s does not start with '/' (expected a path prefix like \"/v1/\")", q(p).s);
    if (strlen(p) > MAX_HTTP_PATH)
        return bad(err, path, "path prefix is %zu characters; at most %d", strlen(p), MAX_HTTP_PATH);
    for (const char *c = p; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return bad(err, path, "%s contains a space or control character", q(p).s);
    /* Requests are matched in normal form: a prefix in any other form
     * would never match, or match other than it reads. */
    char norm[MAX_HTTP_PATH + 1];
    const char *why = net_http_path_normalize(p, strlen(p), norm);
    if (why)
        return bad(err, path, "%s: %s", q(p).s, why);
    if (strcmp(norm, p) != 0)
        return bad(err, path, "%s is not in normal form; write it as %s (dot segments resolved, escapes of "
                   "letters, digits and -._~ decoded, other escapes in upper case)", q(p).s, q(norm).s);
    if (!(*out = strdup(p)))
        return util_fail(err, ENOMEM, "%s: out of memory", path);
    return 0;
}


static int check_header_name(const char *name, const char *path, cell_error *err)
{
    if (!net_http_is_token(name))
        return bad(err, path, "%s is not a header name (expected a token: letters, digits and !#$%%&'*+-.^_`|~)",
                   q(name).s);
    return 0;
}

static int secret_name_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
}

/* At "${": it must be "${secret:NAME}".  Returns the length consumed or -1. */
static int check_secret_ref(const char *value, const char *ref, const char *path, cell_error *err)
{
    static const char open[] = "${secret:";
    if (strncmp(ref, open, sizeof open - 1) != 0)
        return bad(err, path, "%s: \"${\" must start a ${secret:NAME} reference", q(value).s);
    const char *name = ref + sizeof open - 1, *e = name;
    while (secret_name_char(*e))
        e++;
    if (*e != '}' || e == name || e - name > 63)
        return bad(err, path, "%s: a secret reference is ${secret:NAME} with NAME 1-63 of [A-Za-z0-9_.-]", q(value).s);
    return (int)(e + 1 - ref);
}

static int check_header_value(const char *v, const char *path, cell_error *err)
{
    for (const char *c = v; *c;) {
        unsigned char u = (unsigned char)*c;
        if (u == '\r' || u == '\n')
            return bad(err, path, "the value contains CR or LF; a header value is one line");
        if ((u < 0x20 && u != '\t') || u == 0x7f)
            return bad(err, path, "the value contains control character 0x%02x", u);
        if (c[0] == '$' && c[1] == '{') {
            int n = check_secret_ref(v, c, path, err);
            if (n < 0)
                return -1;
            c += n;
        } else {
            c++;
        }
    }
    return 0;
}

static int parse_set_headers(const json_t *v, const char *path, net_http_rule *h, cell_error *err)
{
    char sub[PATH_LEN];
    if (!json_is_object(v))
        return bad(err, path, "expected an object of header name to value, got %s", jtype(v));
    if (json_object_size(v) == 0 || json_object_size(v) > MAX_LIST)
        return bad(err, path, "%zu headers; expected 1-%d (or omit the field)", json_object_size(v), MAX_LIST);
    if (!(h->set = calloc(json_object_size(v), sizeof *h->set)))
        return util_fail(err, ENOMEM, "%s: out of memory", path);
    const char *name;
    json_t *val;
    json_object_foreach((json_t *)v, name, val) {
        AT(sub, "%s[%s]", path, q(name).s);
        if (check_header_name(name, sub, err) < 0 || want_string(val, sub, "a header value", err) < 0 ||
            check_header_value(json_string_value(val), sub, err) < 0)
            return -1;
        for (size_t i = 0; i < h->n_set; i++)
            if (strcasecmp(h->set[i].name, name) == 0)
                return bad(err, sub, "header is set twice (names are case-insensitive)");
        net_header *out = &h->set[h->n_set];
        out->name = strdup(name);
        out->value = strdup(json_string_value(val));
        h->n_set++;   /* counted now so that a failed strdup is still freed */
        if (!out->name || !out->value)
            return util_fail(err, ENOMEM, "%s: out of memory", sub);
    }
    return 0;
}

typedef int (*item_fn)(const json_t *v, const char *path, char **out, cell_error *err);

static int parse_remove_item(const json_t *v, const char *path, char **out, cell_error *err)
{
    if (want_string(v, path, "a header name", err) < 0 || check_header_name(json_string_value(v), path, err) < 0)
        return -1;
    if (!(*out = strdup(json_string_value(v))))
        return util_fail(err, ENOMEM, "%s: out of memory", path);
    return 0;
}

/* A non-empty array into a NULL-terminated string vector, item by item. */
static int parse_strv(const json_t *v, const char *path, const char *what, item_fn fn, char ***out, cell_error *err)
{
    char sub[PATH_LEN];
    if (want_list(v, path, what, MAX_LIST, err) < 0)
        return -1;
    if (!(*out = strv_new(json_array_size(v))))
        return util_fail(err, ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < json_array_size(v); i++)
        if (fn(json_array_get(v, i), AT(sub, "%s[%zu]", path, i), &(*out)[i], err) < 0)
            return -1;
    return 0;
}

/* 1 if set_headers injects a ${secret:NAME} (values are checked already). */
static int http_injects_secret(const net_http_rule *h)
{
    for (size_t i = 0; i < h->n_set; i++)
        if (strstr(h->set[i].value, "${secret:"))
            return 1;
    return 0;
}

/* "redact_response": only meaningful when set_headers injects a secret. */
static int parse_redact(const json_t *v, const char *path, net_http_rule *h, cell_error *err)
{
    if (!json_is_boolean(v))
        return bad(err, path, "expected true or false, got %s", jtype(v));
    h->redact = json_is_true(v);
    if (h->redact && !http_injects_secret(h))
        return bad(err, path, "there is no ${secret:NAME} in set_headers to redact");
    return 0;
}

/* "meter": whose responses' token usage to read (net/meter.h). */
static int parse_meter(const json_t *v, const char *path, net_http_rule *h, cell_error *err)
{
    if (!json_is_string(v))
        return bad(err, path, "expected \"openai\" or \"anthropic\", got %s", jtype(v));
    /* Compared here, not with meter.c's net_meter_kind_from: the net
     * plugin and the fuzzers link policy.c without the meter. */
    const char *k = json_string_value(v);
    h->meter = strcmp(k, "openai") == 0 ? NET_METER_OPENAI : strcmp(k, "anthropic") == 0 ? NET_METER_ANTHROPIC
                                                                                          : NET_METER_NONE;
    if (h->meter == NET_METER_NONE)
        return bad(err, path, "%s: expected \"openai\" or \"anthropic\" (the API whose responses carry the usage)",
                   q(json_string_value(v)).s);
    return 0;
}

static int parse_http(const json_t *m, const char *path, rule *r, cell_error *err)
{
    static const char *const keys[] = { "host", "ports", "methods", "paths", "set_headers", "remove_headers",
                                        "redact_response", "tls", "meter", NULL };
    char sub[PATH_LEN];
    if (check_keys(m, path, keys,
                   "host, ports, methods, paths, set_headers, remove_headers, redact_response, tls, meter", err) < 0)
        return -1;
    if (parse_required_name(m, path, "host", r, err) < 0)
        return -1;
    const json_t *v;
    if (!r->allow)
        for (const char *const *k = keys + 2; *k; k++)
            if (json_object_get(m, *k))
                return bad(err, AT(sub, "%s.%s", path, *k),
                           "a deny rule refuses the whole connection; only allow rules filter or rewrite requests");
    if ((v = json_object_get(m, "methods")) &&
        parse_strv(v, AT(sub, "%s.methods", path), "methods", parse_method, &r->http.methods, err) < 0)
        return -1;
    if ((v = json_object_get(m, "paths")) &&
        parse_strv(v, AT(sub, "%s.paths", path), "path prefixes", parse_http_path, &r->http.paths, err) < 0)
        return -1;
    if ((v = json_object_get(m, "set_headers")) && parse_set_headers(v, AT(sub, "%s.set_headers", path), &r->http, err) < 0)
        return -1;
    if ((v = json_object_get(m, "remove_headers")) &&
        parse_strv(v, AT(sub, "%s.remove_headers", path), "header names", parse_remove_item, &r->http.remove, err) < 0)
        return -1;
    if ((v = json_object_get(m, "redact_response")) && parse_redact(v, AT(sub, "%s.redact_response", path), &r->http, err) < 0)
        return -1;
    if ((v = json_object_get(m, "meter")) && parse_meter(v, AT(sub, "%s.meter", path), &r->http, err) < 0)
        return -1;
    if ((v = json_object_get(m, "tls")) && !json_is_boolean(v))
        return bad(err, AT(sub, "%s.tls", path), "expected true or false, got %s", jtype(v));
    /* The upstream leg follows the cell's TLS-or-not, so a rule that
     * injects a secret refuses plain HTTP unless it opts out by name. */
    r->http.tls = v ? json_is_true(v) : http_injects_secret(&r->http);
    return 0;
}

/* ---- decide ------------------------------------------------------------------------- */

/* "http[s]://HOST[:PORT][/path]": HOST a name, IPv4 or [IPv6]; no userinfo. */
static int check_url(const char *u, const char *path, cell_error *err)
{
    const char *scheme = strncmp(u, "https://", 8) == 0 ? "https://" : "http://";
    if (strncmp(u, scheme, strlen(scheme)) != 0)
        return bad(err, path, "%s: expected an http:// or https:// URL like \"https://hooks.example/decide\"",
                   q(u).s);
    if (strlen(u) > MAX_URL)
        return bad(err, path, "URL is %zu characters; at most %d", strlen(u), MAX_URL);
    for (const char *c = u; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
            return bad(err, path, "%s contains a space, control or non-ASCII character", q(u).s);
    const char *host = u + strlen(scheme);
    size_t alen = strcspn(host, "/?#");
    const char *port = NULL, *end = host + alen;
    if (alen == 0 || memchr(host, '@', alen))
        return bad(err, path, "%s: expected http://HOST[:PORT]/path without user info", q(u).s);
    if (host[0] == '[') {
        const char *close = memchr(host, ']', alen);
        if (!close || (close + 1 != end && close[1] != ':'))
            return bad(err, path, "%s: an IPv6 host is written [ADDRESS]", q(u).s);
        port = close + 1 != end ? close + 2 : NULL;
    } else {
        port = memchr(host, ':', alen);
        port = port ? port + 1 : NULL;
    }
    unsigned n;
    const char *e = port ? parse_digits(port, &n) : end;
    if (!e || e != end || (port && !port_ok(n)))
        return bad(err, path, "%s: the port is not 1-65535", q(u).s);
    return 0;
}

static int parse_decide(const json_t *m, const char *path, rule *r, cell_error *err)
{
    static const char *const keys[] = { "url", "timeout_ms", "cache_s", "to", "ports", NULL };
    char sub[PATH_LEN];
    if (check_keys(m, path, keys, "url, timeout_ms, cache_s, to, ports", err) < 0)
        return -1;
    const json_t *url = json_object_get(m, "url"), *v;
    AT(sub, "%s.url", path);
    if (!url)
        return bad(err, sub, "missing; expected the decision service's http:// URL");
    if (want_string(url, sub, "an http:// or https:// URL", err) < 0 || check_url(json_string_value(url), sub, err) < 0)
        return -1;
    if (!(r->decide.url = strdup(json_string_value(url))))
        return util_fail(err, ENOMEM, "%s: out of memory", sub);
    r->decide.timeout_ms = 500;
    r->decide.cache_s = 0;
    if ((v = json_object_get(m, "timeout_ms")) &&
        int_in_range(v, AT(sub, "%s.timeout_ms", path), 1, 60000, &r->decide.timeout_ms, err) < 0)
        return -1;
    if ((v = json_object_get(m, "cache_s")) &&
        int_in_range(v, AT(sub, "%s.cache_s", path), 0, 86400, &r->decide.cache_s, err) < 0)
        return -1;
    return parse_opt_to_ports(m, path, r, err);
}

/* ---- rules -------------------------------------------------------------------------- */

static void rule_free(rule *r)
{
    free(r->to);
    free(r->ports);
    free(r->name);
    strv_free(r->http.methods);
    strv_free(r->http.paths);
    for (size_t i = 0; i < r->http.n_set; i++) {
        free(r->http.set[i].name);
        free(r->http.set[i].value);
    }
    free(r->http.set);
    strv_free(r->http.remove);
    free(r->decide.url);
}

static int kind_of(const char *key)
{
    for (int k = 0; k < R_COUNT; k++)
        if (strcmp(kind_names[k], key) == 0)
            return k;
    return -1;
}

/* Finds the one matcher key; every other key must be "action". */
static int find_matcher(const json_t *jr, const char *path, const char **matcher, cell_error *err)
{
    const char *key;
    json_t *v;
    *matcher = NULL;
    json_object_foreach((json_t *)jr, key, v) {
        if (strcmp(key, "action") == 0)
            continue;
        if (kind_of(key) < 0)
            return bad(err, path, "unknown key %s (expected \"action\" and one of dns, tcp, udp, ip, host, http, decide)",
                       q(key).s);
        if (*matcher)
            return bad(err, path, "has both \"%s\" and \"%s\"; a rule has exactly one matcher", *matcher, key);
        *matcher = key;
    }
    if (!*matcher)
        return bad(err, path, "no matcher; expected one of dns, tcp, udp, ip, host, http, decide");
    return 0;
}

static int parse_action(const json_t *jr, const char *path, enum rule_kind kind, int *allow, cell_error *err)
{
    char sub[PATH_LEN];
    const json_t *a = json_object_get(jr, "action");
    *allow = 1;
    if (!a)
        return 0;
    AT(sub, "%s.action", path);
    if (!json_is_string(a) || (strcmp(json_string_value(a), "allow") != 0 && strcmp(json_string_value(a), "deny") != 0))
        return bad(err, sub, "expected \"allow\" or \"deny\", got %s",
                   json_is_string(a) ? q(json_string_value(a)).s : jtype(a));
    *allow = strcmp(json_string_value(a), "allow") == 0;
    if (!*allow && kind == R_DNS)
        return bad(err, sub, "a dns rule enables the resolver; it cannot be \"deny\" (omit the rule instead)");
    if (!*allow && kind == R_DECIDE)
        return bad(err, sub, "a decide rule's verdict comes from its url; it cannot be \"deny\"");
    return 0;
}

static int parse_rule(struct net_policy *p, const json_t *jr, size_t index, cell_error *err)
{
    char path[PATH_LEN], sub[PATH_LEN];
    rule *r = &p->rules[index];
    const char *matcher;
    AT(path, "rules[%zu]", index);
    if (!json_is_object(jr))
        return bad(err, path, "expected an object like {\"action\": \"allow\", \"tcp\": {...}}, got %s", jtype(jr));
    if (find_matcher(jr, path, &matcher, err) < 0)
        return -1;
    r->kind = (enum rule_kind)kind_of(matcher);
    if (parse_action(jr, path, r->kind, &r->allow, err) < 0)
        return -1;
    const json_t *m = json_object_get(jr, matcher);
    AT(sub, "%s.%s", path, matcher);
    if (want_object(m, sub, err) < 0)
        return -1;
    switch (r->kind) {
    case R_DNS:
        if (p->has_dns)
            return bad(err, sub, "a policy has at most one dns rule (rules[%d] is one)", p->dns.rule);
        p->has_dns = 1;
        return parse_dns(m, sub, (int)index, r, &p->dns, err);
    case R_TCP:
    case R_UDP:
    case R_IP:     return parse_l4(m, sub, r, err);
    case R_HOST:   return parse_host(m, sub, r, err);
    case R_HTTP:   return parse_http(m, sub, r, err);
    case R_DECIDE: return parse_decide(m, sub, r, err);
    default:       return bad(err, sub, "unknown matcher");
    }
}

/* Names are trusted only from the cell's own DNS answers. */
static int check_names_need_dns(const struct net_policy *p, cell_error *err)
{
    char path[PATH_LEN];
    if (p->has_dns)
        return 0;
    for (size_t i = 0; i < p->n_rules; i++) {
        const rule *r = &p->rules[i];
        if (r->kind == R_HOST || r->kind == R_HTTP)
            return bad(err, AT(path, "rules[%zu].%s", i, kind_names[r->kind]),
                       "host and http rules need a dns rule (names are known only from the cell's own resolver)");
    }
    return 0;
}

static int parse_document(struct net_policy *p, const json_t *doc, cell_error *err)
{
    static const char *const keys[] = { "rules", NULL };
    if (!json_is_object(doc))
        return bad(err, "policy", "expected {\"rules\": [...]}, got %s", jtype(doc));
    if (check_keys(doc, "policy", keys, "only \"rules\"", err) < 0)
        return -1;
    const json_t *rules = json_object_get(doc, "rules");
    if (!rules)
        return bad(err, "policy", "missing \"rules\"; expected {\"rules\": [...]}");
    if (!json_is_array(rules))
        return bad(err, "rules", "expected an array of rules, got %s", jtype(rules));
    if (json_array_size(rules) > MAX_RULES)
        return bad(err, "rules", "%zu rules; at most %d are allowed", json_array_size(rules), MAX_RULES);
    p->rules = calloc(json_array_size(rules) + 1, sizeof *p->rules);
    if (!p->rules)
        return util_fail(err, ENOMEM, "policy: out of memory");
    for (size_t i = 0; i < json_array_size(rules); i++) {
        p->n_rules = i + 1;   /* rule i is freed with the policy even if it fails half-way */
        if (parse_rule(p, json_array_get(rules, i), i, err) < 0)
            return -1;
    }
    return check_names_need_dns(p, err);
}

static void policy_free(struct net_policy *p)
{
    for (size_t i = 0; i < p->n_rules; i++)
        rule_free(&p->rules[i]);
    free(p->rules);
    free(p);
}

int net_policy_parse(const char *json, size_t len, net_policy **out, cell_error *err)
{
    json_error_t jerr;
    *out = NULL;
    if (!json)
        return util_fail(err, EINVAL, "policy: no document");
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return util_fail(err, EINVAL, "policy: not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                         jerr.column);
    struct net_policy *p = calloc(1, sizeof *p);
    if (!p) {
        json_decref(doc);
        return util_fail(err, ENOMEM, "policy: out of memory");
    }
    atomic_init(&p->refs, 1);
    int r = parse_document(p, doc, err);
    json_decref(doc);
    if (r < 0) {
        policy_free(p);
        return -1;
    }
    *out = p;
    return 0;
}

net_policy *net_policy_ref(net_policy *p)
{
    if (p)
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void net_policy_unref(net_policy *p)
{
    if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_release) != 1)
        return;
    atomic_thread_fence(memory_order_acquire);   /* see every other holder's last use */
    policy_free(p);
}

/* ---- decisions ---------------------------------------------------------------------- */

static int rule_matches(const rule *r, const net_flow *f, const flow_addr *fa)
{
    switch (r->kind) {
    case R_TCP:    if (f->transport != NET_TCP) return 0; break;
    case R_UDP:    if (f->transport != NET_UDP) return 0; break;
    case R_IP:
    case R_DECIDE: if (f->transport != NET_TCP && f->transport != NET_UDP) return 0; break;
    case R_HOST:
    case R_HTTP:
        return f->transport == NET_TCP && f->host && name_match(r->name, f->host) && ports_match(r, fa->port);
    default:       return 0;   /* dns: never a flow */
    }
    return targets_match(r, fa, f->to_self) && ports_match(r, fa->port);
}

void net_policy_decide(const net_policy *p, const net_flow *f, net_verdict *out)
{
    flow_addr fa;
    memset(out, 0, sizeof *out);
    out->rule = -1;
    if (!p || !f || flow_addr_of(f->dst, &fa) < 0)
        return;
    for (size_t i = 0; i < p->n_rules; i++) {
        const rule *r = &p->rules[i];
        if (!rule_matches(r, f, &fa))
            continue;
        out->rule = (int)i;
        out->allow = r->kind == R_DECIDE ? 0 : r->allow;
        out->http = r->kind == R_HTTP && r->allow ? &r->http : NULL;
        out->decide = r->kind == R_DECIDE ? &r->decide : NULL;
        return;
    }
}

size_t net_policy_rule_count(const net_policy *p)
{
    return p ? p->n_rules : 0;
}

int net_policy_opening_target(const net_policy *p, size_t i, size_t j, unsigned *classes,
                              struct sockaddr_storage *ss, int *prefix)
{
    if (!p || i >= p->n_rules)
        return 0;
    const rule *r = &p->rules[i];
    if (!(r->allow || r->kind == R_DECIDE || r->kind == R_DNS) || j >= r->n_to)
        return 0;
    const target *t = &r->to[j];
    *classes = t->classes;
    *prefix = t->prefix;
    memset(ss, 0, sizeof *ss);
    if (!t->classes && t->family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, t->addr, 4);
    } else if (!t->classes) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, t->addr, 16);
    }
    return 1;
}

int net_policy_rebind_ok(const net_policy *p, const struct sockaddr *sa, int to_self)
{
    flow_addr fa;
    if (!p || !p->has_dns || flow_addr_of(sa, &fa) < 0)
        return 0;
    const rule *r = &p->rules[p->dns.rule];
    unsigned cls = classify(&fa) | (to_self ? NET_CLASS_HOST_SELF : 0);
    for (size_t i = 0; i < r->n_to; i++)
        if (target_match(&r->to[i], &fa, cls))
            return 1;
    return 0;
}

const net_dns_config *net_policy_dns(const net_policy *p)
{
    return p && p->has_dns ? &p->dns : NULL;
}

int net_policy_name_resolvable(const net_policy *p, const char *name)
{
    if (!p || !name)
        return 0;
    for (size_t i = 0; i < p->n_rules; i++) {
        const rule *r = &p->rules[i];
        if ((r->kind == R_HOST || r->kind == R_HTTP) && name_match(r->name, name))
            return 1;
    }
    return 0;
}

const net_decide_rule *net_policy_decide_rule(const net_policy *p, size_t i)
{
    return p && i < p->n_rules && p->rules[i].kind == R_DECIDE ? &p->rules[i].decide : NULL;
}

/* The same scan as the engine's expansion (http.c): "${secret:" up to the
 * next '}'. */
static int value_names_secret(const char *value, const char *name)
{
    static const char open[] = "${secret:";
    size_t nl = strlen(name);
    for (const char *ref = value; value && (ref = strstr(ref, open)) != NULL;) {
        const char *s = ref + sizeof open - 1, *end = strchr(s, '}');
        if (!end)
            return 0;
        if ((size_t)(end - s) == nl && memcmp(s, name, nl) == 0)
            return 1;
        ref = end + 1;
    }
    return 0;
}

int net_policy_names_secret(const net_policy *p, const char *name)
{
    if (!p || !name || !name[0])
        return 0;
    for (size_t i = 0; i < p->n_rules; i++) {
        const rule *r = &p->rules[i];
        if (r->kind != R_HTTP || !r->allow)
            continue;
        for (size_t k = 0; k < r->http.n_set; k++)
            if (value_names_secret(r->http.set[k].value, name))
                return 1;
    }
    return 0;
}
