/* agentkeys.c: "agents" in POST /v1/cells, one switch that brokers an
 * agent's model key.  The cell never holds the key: its environment gets
 * a placeholder, and its egress policy gets an http rule for the agent's
 * provider that replaces the auth header with ${secret:NAME}, which the
 * egress engine fills in host-side per request (docs/egress.md).
 *
 * The switch's rules are their own part of the spec ("agentPolicy"),
 * derived once from "agents" at create; the client's "policy" stays as
 * the client wrote it.  srv_agentkeys_policy() composes the two each time a
 * policy is built (create, PUT .../policy, every boot), the agents' rules
 * first: the first matching rule decides a flow, so no client rule can
 * take the provider's flows from them (re-header or redirect the key). */
#include "server/agentkeys.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/http.h>

#define AGENTKEYS_PLACEHOLDER "cell-placeholder"
#define AGENTKEYS_MAX         8
#define AGENTKEYS_MAX_URL     2048

typedef struct agentkeys_provider {
    const char *agent;
    const char *provider;    /* "provider" in the request; an agent's first row is its default */
    const char *key_env;     /* the variable the agent reads its key from */
    const char *base_env;    /* the variable that overrides its endpoint; NULL: none */
    const char *host;        /* the provider's API host */
    const char *header;      /* the header that carries the key */
    const char *prefix;      /* before the key in that header */
} agentkeys_provider;

/* Checked against each CLI's code from npm (docs/api.md "Model keys"):
 * codex (@openai/codex) and opencode (opencode-ai, the AI SDK's OpenAI
 * provider) read OPENAI_API_KEY and OPENAI_BASE_URL and send a Bearer
 * token; claude (@anthropic-ai/claude-agent-sdk's cli.js) and opencode's
 * Anthropic provider read ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL and
 * send x-api-key; pi (@mariozechner/pi-ai) reads the same key variables
 * but takes its endpoint from its model registry, not the environment;
 * amp (@ampcode/cli) reads AMP_API_KEY and AMP_URL and sends a Bearer
 * token to ampcode.com.  An agent with two rows needs "provider". */
static const agentkeys_provider agentkeys_providers[] = {
    /* agent     provider     key variable         base-URL variable     host                 header           prefix */
    { "codex",    "openai",    "OPENAI_API_KEY",    "OPENAI_BASE_URL",    "api.openai.com",    "Authorization", "Bearer " },
    { "claude",   "anthropic", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "api.anthropic.com", "x-api-key",     "" },
    { "opencode", "anthropic", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "api.anthropic.com", "x-api-key",     "" },
    { "opencode", "openai",    "OPENAI_API_KEY",    "OPENAI_BASE_URL",    "api.openai.com",    "Authorization", "Bearer " },
    { "amp",      "amp",       "AMP_API_KEY",       "AMP_URL",            "ampcode.com",       "Authorization", "Bearer " },
    { "pi",       "anthropic", "ANTHROPIC_API_KEY", NULL,                 "api.anthropic.com", "x-api-key",     "" },
    { "pi",       "openai",    "OPENAI_API_KEY",    NULL,                 "api.openai.com",    "Authorization", "Bearer " },
};

/* More variables an agent reads the same key from; each gets the
 * placeholder too.  codex-acp offers the ACP auth method "codex-api-key"
 * (CODEX_API_KEY) before "openai-api-key", and the sandbox-agent SDK
 * authenticates with the first env-based method listed: without
 * CODEX_API_KEY that fails and session/new is "Authentication required"
 * (docs/compat/sandbox-agent-0.4.2-agents.md, "Codex"). */
static const struct { const char *agent, *var; } agentkeys_also[] = {
    { "codex", "CODEX_API_KEY" },
};

/* Agents of the API whose key cannot be brokered, and why (the 400 says it). */
static const struct { const char *agent, *why; } agentkeys_refused[] = {
    { "cursor", "cannot be brokered: Cursor's CLI (cursor-agent) is installed from cursor.com, not npm, and signs "
                "in with 'cursor-agent login'; its use of a key could not be checked, so no rule is made for it" },
    { "mock", "needs no model key" },
};

#define AGENTKEYS_N(a) (sizeof a / sizeof *a)

static int agentkeys_bad(sreq *r, const char *agent, const char *field, const char *why)
{
    srv_reply_problem(r, 400, "invalid_request", "field \"agents.%s%s%s\" %s", agent, field[0] ? "." : "", field, why);
    return -1;
}

/* The row for agent and provider (NULL: the agent's only one), or NULL
 * after a 400 naming the agent and what it accepts. */
static const agentkeys_provider *agentkeys_find(sreq *r, const char *agent, const char *provider)
{
    for (size_t i = 0; i < AGENTKEYS_N(agentkeys_refused); i++)
        if (strcmp(agentkeys_refused[i].agent, agent) == 0)
            return agentkeys_bad(r, agent, "", agentkeys_refused[i].why), NULL;
    const agentkeys_provider *first = NULL;
    size_t rows = 0;
    char known[96] = "";
    for (size_t i = 0; i < AGENTKEYS_N(agentkeys_providers); i++) {
        const agentkeys_provider *p = &agentkeys_providers[i];
        if (strcmp(p->agent, agent) != 0)
            continue;
        if (provider && strcmp(p->provider, provider) == 0)
            return p;
        first = first ? first : p;
        rows++;
        size_t n = strlen(known);
        snprintf(known + n, sizeof known - n, "%s%s", n ? ", " : "", p->provider);
    }
    if (!first)
        return agentkeys_bad(r, agent, "", "names no agent whose key can be brokered "
                             "(known: codex, claude, opencode, amp, pi)"), NULL;
    if (provider) {
        char why[160];
        snprintf(why, sizeof why, "must be one of: %s", known);
        return agentkeys_bad(r, agent, "provider", why), NULL;
    }
    if (rows > 1) {
        char why[160];
        snprintf(why, sizeof why, "is required for %s, which speaks to several providers: one of %s", agent, known);
        return agentkeys_bad(r, agent, "provider", why), NULL;
    }
    return first;
}

/* The endpoint a key goes to. */
typedef struct agentkeys_dest {
    char host[256];
    int  port;
    int  tls;
} agentkeys_dest;

/* An address literal the daemon would send the key to: the tenant's
 * screening (src/net/screen.c) decides, as for a DNS upstream. */
static int agentkeys_screen_addr(sreq *r, const char *agent, const char *host)
{
    struct sockaddr_storage ss = { 0 };
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    char bare[256];
    size_t n = strlen(host);
    /* An IPv6 literal may come in its URL brackets. */
    snprintf(bare, sizeof bare, "%.*s", host[0] == '[' && n > 2 && host[n - 1] == ']' ? (int)n - 2 : (int)n,
             host[0] == '[' && n > 2 && host[n - 1] == ']' ? host + 1 : host);
    if (inet_pton(AF_INET, bare, &in4->sin_addr) == 1)
        in4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, bare, &in6->sin6_addr) == 1)
        in6->sin6_family = AF_INET6;
    else
        return 0;
    const char *why = r->tok.admin ? NULL : cell_net_screen((struct sockaddr *)&ss, r->s->opt.tenant_dest_allow);
    if (why) {
        srv_reply_problem(r, 403, "forbidden", "field \"agents.%s.baseUrl\": the daemon may not connect to %s for "
                      "this tenant (%s)", agent, host, why);
        return -1;
    }
    return 0;
}

/* baseUrl: http(s)://HOST[:PORT][/path], no user info, printable ASCII
 * without quotes or backslashes (launchers put it into a config string:
 * codex's TOML refuses them at spawn, better here); parsed by OpenSSL's
 * URL parser. */
static int agentkeys_parse_url(sreq *r, const char *agent, const char *url, agentkeys_dest *d)
{
    size_t n = strlen(url);
    if (n == 0 || n > AGENTKEYS_MAX_URL)
        return agentkeys_bad(r, agent, "baseUrl", "must be a URL of 1-2048 characters");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f || strchr("\"'\\`", url[i]))
            return agentkeys_bad(r, agent, "baseUrl", "must be printable ASCII without spaces, quotes or backslashes");
    if (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0)
        return agentkeys_bad(r, agent, "baseUrl", "must be an http:// or https:// URL");
    char *user = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL, *frag = NULL;
    int tls = 0, port_num = 0, rc = 0;
    if (!OSSL_HTTP_parse_url(url, &tls, &user, &host, &port, &port_num, &path, &query, &frag))
        rc = agentkeys_bad(r, agent, "baseUrl", "is not a URL like https://models.example/v1");
    else if (user && *user)
        rc = agentkeys_bad(r, agent, "baseUrl", "must not carry user info");
    else if (!host || !*host || strlen(host) >= sizeof d->host || strchr(host, '*'))
        rc = agentkeys_bad(r, agent, "baseUrl", "must name a host");
    else if (port_num <= 0 || port_num > 65535)
        rc = agentkeys_bad(r, agent, "baseUrl", "has a bad port");
    else if (strcasecmp(host, "localhost") == 0 || (strlen(host) > 10 && strcasecmp(host + strlen(host) - 10, ".localhost") == 0))
        rc = agentkeys_bad(r, agent, "baseUrl", "must not name localhost");
    else {
        snprintf(d->host, sizeof d->host, "%s", host);
        d->port = port_num;
        d->tls = tls;
        rc = agentkeys_screen_addr(r, agent, host);
    }
    OPENSSL_free(user), OPENSSL_free(host), OPENSSL_free(port);
    OPENSSL_free(path), OPENSSL_free(query), OPENSSL_free(frag);
    return rc;
}

/* The tenant's secret must exist now (its value is read and wiped: only
 * the name goes into the policy; the engine reads it per request). */
static int agentkeys_check_secret(sreq *r, const char *agent, const char *name)
{
    if (!util_valid_name(name))
        return agentkeys_bad(r, agent, "secret", "must be a secret name (1-63 of A-Z a-z 0-9 _ . -)");
    char *value = NULL;
    size_t len = 0;
    cell_error e = { 0 };
    if (store_secret_get(r->s->st, r->tok.tenant, name, &value, &len, &e) < 0) {
        if (e.code == ENOENT)
            return srv_reply_problem(r, 400, "invalid_request", "field \"agents.%s.secret\": tenant %s has no secret %s; "
                                 "store it with POST /v1/secrets", agent, r->tok.tenant, name), -1;
        return srv_reply_error(r, &e), -1;
    }
    OPENSSL_cleanse(value, len);
    free(value);
    return 0;
}


/* {"http": {...}} for one agent: its key's header replaced host-side, on
 * the endpoint's one port (443, or baseUrl's).  Not port 80 beside 443,
 * and "tls" as the endpoint's scheme says: the cell chooses TLS or not per
 * connection and the upstream leg follows it, so for an https endpoint a
 * plain request would put the key on the network in clear.  An http://
 * baseUrl is the client's choice of plain text, so "tls": false says so
 * (a rule with a secret refuses plain HTTP unless it does). */
static json_t *agentkeys_rule(const agentkeys_provider *p, const char *secret, const agentkeys_dest *d)
{
    char value[160];
    snprintf(value, sizeof value, "%s${secret:%s}", p->prefix, secret);
    json_t *rule = json_pack("{s:s, s:[i], s:{s:s}, s:b, s:b}", "host", d->host, "ports", d->port, "set_headers",
                             p->header, value, "redact_response", 1, "tls", d->tls);
    /* The provider's responses carry its token usage: the egress engine
     * reads it there, so a cell's usage is cell's measure, not the agent's
     * word (amp's API is not one the meter knows). */
    if (rule && (strcmp(p->provider, "openai") == 0 || strcmp(p->provider, "anthropic") == 0))
        json_object_set_new(rule, "meter", json_string(p->provider));
    return rule ? json_pack("{s:o}", "http", rule) : NULL;
}

/* Two agents' rules for one host and port: the first would decide every
 * flow and the second agent's key would silently never be sent, so that
 * is refused; the same rule twice (one secret, one header) is kept once.
 * Takes the rule. */
static int agentkeys_add_rule(sreq *r, const char *agent, json_t *rules, json_t *rule)
{
    json_t *h = json_object_get(rule, "http"), *o;
    const char *host = json_string_value(json_object_get(h, "host"));
    size_t i;
    json_array_foreach(rules, i, o) {
        json_t *oh = json_object_get(o, "http");
        if (strcasecmp(json_string_value(json_object_get(oh, "host")), host) != 0 ||
            !json_equal(json_object_get(oh, "ports"), json_object_get(h, "ports")))
            continue;
        int same = json_equal(oh, h);
        json_decref(rule);
        return same ? 0 : agentkeys_bad(r, agent, "", "sends a key to the endpoint of another agent of this cell "
                                        "with another secret or header; give both one secret or their own baseUrl");
    }
    if (json_array_append_new(rules, rule) < 0)
        return srv_reply_problem(r, 500, "internal", "out of memory"), -1;
    return 0;
}

/* Agents that read one key variable share it in the cell's environment
 * (and its base-URL variable): they must name one secret and one
 * baseUrl.  seen maps the variable to the first agent's choice. */
static int agentkeys_share(sreq *r, const char *agent, const agentkeys_provider *p, json_t *sec, json_t *base,
                           json_t *seen)
{
    json_t *mine = json_pack("{s:O, s:O}", "secret", sec, "baseUrl", json_is_string(base) ? base : json_null());
    if (!mine)
        return srv_reply_problem(r, 500, "internal", "out of memory"), -1;
    json_t *theirs = json_object_get(seen, p->key_env);
    if (theirs) {
        int same = json_equal(theirs, mine);
        json_decref(mine);
        if (same)
            return 0;
        char why[160];
        snprintf(why, sizeof why, "shares %s with another agent of this cell: give both the same secret and baseUrl",
                 p->key_env);
        return agentkeys_bad(r, agent, "", why);
    }
    return json_object_set_new(seen, p->key_env, mine) < 0 ? (srv_reply_problem(r, 500, "internal", "out of memory"), -1)
                                                            : 0;
}

json_t *srv_agentkeys_host_dns(sreq *r)
{
    FILE *f = fopen("/etc/resolv.conf", "re");
    if (!f)
        return NULL;
    json_t *ups = json_array();
    char line[512], addr[128];
    while (ups && fgets(line, sizeof line, f)) {
        if (sscanf(line, " nameserver %127s", addr) != 1)
            continue;
        struct sockaddr_storage ss = { 0 };
        struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET, addr, &in4->sin_addr) == 1)
            in4->sin_family = AF_INET;
        else if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1)
            in6->sin6_family = AF_INET6;
        else
            continue;
        if (r->tok.admin || !cell_net_screen((struct sockaddr *)&ss, r->s->opt.tenant_dest_allow))
            json_array_append_new(ups, json_string(addr));
    }
    fclose(f);
    if (!ups || json_array_size(ups) == 0)
        return json_decref(ups), NULL;
    return json_pack("{s:{s:o, s:b}}", "dns", "upstreams", ups, "strict", 1);
}

/* A policy's rules array, or NULL when it has none (absent, malformed). */
static json_t *agentkeys_rules_of(json_t *policy)
{
    json_t *rules = json_object_get(policy, "rules");
    return json_is_array(rules) ? rules : NULL;
}

static json_t *agentkeys_dns_of(json_t *rules)
{
    size_t i;
    json_t *rule;
    json_array_foreach(rules, i, rule)
        if (json_object_get(rule, "dns"))
            return rule;
    return NULL;
}

/* One agent: validate, add its env and its rule. */
static int agentkeys_one(sreq *r, const char *agent, json_t *want, json_t *env, json_t *rules, json_t *seen)
{
    if (!json_is_object(want))
        return agentkeys_bad(r, agent, "", "must be an object {\"secret\": NAME, \"baseUrl\": URL, \"provider\": NAME}");
    const char *key;
    json_t *v;
    json_object_foreach(want, key, v)
        if (strcmp(key, "secret") != 0 && strcmp(key, "baseUrl") != 0 && strcmp(key, "provider") != 0)
            return agentkeys_bad(r, agent, key, "is not a field (secret, baseUrl, provider)");
    json_t *sec = json_object_get(want, "secret"), *base = json_object_get(want, "baseUrl");
    json_t *prov = json_object_get(want, "provider");
    if (prov && !json_is_null(prov) && !json_is_string(prov))
        return agentkeys_bad(r, agent, "provider", "must be a string");
    const agentkeys_provider *p = agentkeys_find(r, agent, json_string_value(prov));
    if (!p)
        return -1;
    if (!json_is_string(sec))
        return agentkeys_bad(r, agent, "secret", "is required: the name of a secret (POST /v1/secrets)");
    if (base && !json_is_null(base) && !json_is_string(base))
        return agentkeys_bad(r, agent, "baseUrl", "must be a string");
    agentkeys_dest d = { .port = 443, .tls = 1 };
    snprintf(d.host, sizeof d.host, "%s", p->host);
    if (json_is_string(base) && agentkeys_parse_url(r, agent, json_string_value(base), &d) < 0)
        return -1;
    if (agentkeys_check_secret(r, agent, json_string_value(sec)) < 0 ||
        agentkeys_share(r, agent, p, sec, base, seen) < 0)
        return -1;
    json_object_set_new(env, p->key_env, json_string(AGENTKEYS_PLACEHOLDER));
    for (size_t i = 0; i < AGENTKEYS_N(agentkeys_also); i++)
        if (strcmp(agentkeys_also[i].agent, agent) == 0)
            json_object_set_new(env, agentkeys_also[i].var, json_string(AGENTKEYS_PLACEHOLDER));
    if (json_is_string(base) && p->base_env)
        json_object_set(env, p->base_env, base);
    json_t *rule = agentkeys_rule(p, json_string_value(sec), &d);
    if (!rule)
        return srv_reply_problem(r, 500, "internal", "out of memory"), -1;
    return agentkeys_add_rule(r, agent, rules, rule);
}

/* The host's resolvers as the agents' dns rule, after their http rules;
 * it applies only while the client's policy has no dns rule of its own
 * (a policy has one), and one of the two must exist now. */
static int agentkeys_add_dns(sreq *r, json_t *body, json_t *rules)
{
    json_t *policy = json_object_get(body, "policy");
    json_t *dns = srv_agentkeys_host_dns(r);
    if (!dns && !agentkeys_dns_of(agentkeys_rules_of(policy)))
        return srv_reply_problem(r, 400, "invalid_request", "field \"agents\" needs a dns rule and the daemon knows no "
                             "upstream it may use for you (/etc/resolv.conf); give one in \"policy\": "
                             "{\"rules\": [{\"dns\": {\"upstreams\": [\"IP\"]}}]}"), -1;
    if (dns && json_array_append_new(rules, dns) < 0)
        return srv_reply_problem(r, 500, "internal", "out of memory"), -1;
    return 0;
}

int srv_agentkeys_apply(sreq *r, json_t *body, json_t *spec)
{
    json_t *agents = json_object_get(body, "agents");
    if (!agents || json_is_null(agents))
        return 0;
    if (!json_is_object(agents) || json_object_size(agents) == 0 || json_object_size(agents) > AGENTKEYS_MAX)
        return srv_reply_problem(r, 400, "invalid_request", "field \"agents\" must be an object of 1-%d agents, "
                             "like {\"codex\": {\"secret\": \"OPENAI_KEY\"}}", AGENTKEYS_MAX), -1;
    /* A copy: the spec's env may share the request body's object. */
    json_t *env = json_deep_copy(json_object_get(spec, "env"));
    json_t *rules = json_array(), *seen = json_object();
    int rc = env && rules && seen ? 0 : (srv_reply_problem(r, 500, "internal", "out of memory"), -1);
    const char *agent;
    json_t *want;
    json_object_foreach(agents, agent, want)
        if (rc == 0)
            rc = agentkeys_one(r, agent, want, env, rules, seen);
    if (rc == 0)
        rc = agentkeys_add_dns(r, body, rules);
    if (rc == 0 && (json_object_set(spec, "env", env) < 0 || json_object_set(spec, "agents", agents) < 0 ||
                    json_object_set_new(spec, "agentPolicy", json_pack("{s:O}", "rules", rules)) < 0))
        rc = (srv_reply_problem(r, 500, "internal", "out of memory"), -1);
    json_decref(env);
    json_decref(rules);
    json_decref(seen);
    return rc;
}

/* Deep copies throughout: the spec is shared read-only between threads,
 * and json_incref on its parts would write to it. */
static int agentkeys_append_copy(json_t *to, json_t *rule)
{
    return json_array_append_new(to, json_deep_copy(rule));
}

json_t *srv_agentkeys_policy(json_t *spec, json_t *user)
{
    json_t *ours = agentkeys_rules_of(json_object_get(spec, "agentPolicy"));
    if (!ours)
        return json_is_object(user) ? json_deep_copy(user) : NULL;
    json_t *theirs = agentkeys_rules_of(user), *dns = agentkeys_dns_of(theirs) ? NULL : agentkeys_dns_of(ours);
    json_t *rules = json_array(), *rule;
    int rc = rules ? 0 : -1;
    size_t i;
    json_array_foreach(ours, i, rule)
        if (rc == 0 && !json_object_get(rule, "dns"))
            rc = agentkeys_append_copy(rules, rule);
    json_array_foreach(theirs, i, rule)
        if (rc == 0)
            rc = agentkeys_append_copy(rules, rule);
    if (rc == 0 && dns)
        rc = agentkeys_append_copy(rules, dns);
    json_t *out = rc == 0 ? json_pack("{s:O}", "rules", rules) : NULL;
    json_decref(rules);
    return out;
}

json_t *srv_agentkeys_policy_as_sent(json_t *spec, json_t *user)
{
    json_t *copy = json_deep_copy(user);
    json_t *theirs = agentkeys_rules_of(copy);
    json_t *dns = agentkeys_dns_of(agentkeys_rules_of(json_object_get(spec, "agentPolicy")));
    if (copy && theirs && dns && !agentkeys_dns_of(theirs) && agentkeys_append_copy(theirs, dns) < 0)
        return json_decref(copy), NULL;
    return copy;
}
