/* agentkeys.c: "agents" in POST /v1/cells, one switch that brokers an
 * agent's model key.  The cell never holds the key: its environment gets
 * a placeholder, and its egress policy gets an http rule for the agent's
 * provider that replaces the auth header with ${secret:NAME}, which the
 * egress engine fills in host-side per request (docs/egress.md).  The
 * result is an ordinary env and policy in the spec, so restarts rebuild
 * the same rules and GET shows them. */
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
    const char *key_env;     /* the variable the agent reads its key from */
    const char *base_env;    /* the variable that overrides its endpoint */
    const char *host;        /* the provider's API host */
    const char *header;      /* the header that carries the key */
    const char *prefix;      /* before the key in that header */
} agentkeys_provider;

/* Checked against each CLI's documentation (docs/api.md "Model keys"). */
static const agentkeys_provider agentkeys_providers[] = {
    { "codex",  "OPENAI_API_KEY",    "OPENAI_BASE_URL",    "api.openai.com",    "Authorization", "Bearer " },
    { "claude", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "api.anthropic.com", "x-api-key",     "" },
};

static const agentkeys_provider *agentkeys_find(const char *agent)
{
    for (size_t i = 0; i < sizeof agentkeys_providers / sizeof *agentkeys_providers; i++)
        if (strcmp(agentkeys_providers[i].agent, agent) == 0)
            return &agentkeys_providers[i];
    return NULL;
}

/* The endpoint a key goes to. */
typedef struct agentkeys_dest {
    char host[256];
    int  port;
    int  tls;
} agentkeys_dest;

static int agentkeys_bad(sreq *r, const char *agent, const char *field, const char *why)
{
    reply_problem(r, 400, "invalid_request", "field \"agents.%s%s%s\" %s", agent, field[0] ? "." : "", field, why);
    return -1;
}

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
        reply_problem(r, 403, "forbidden", "field \"agents.%s.baseUrl\": the daemon may not connect to %s for "
                      "this tenant (%s)", agent, host, why);
        return -1;
    }
    return 0;
}

/* baseUrl: http(s)://HOST[:PORT][/path], no user info, printable ASCII;
 * parsed by OpenSSL's URL parser. */
static int agentkeys_parse_url(sreq *r, const char *agent, const char *url, agentkeys_dest *d)
{
    size_t n = strlen(url);
    if (n == 0 || n > AGENTKEYS_MAX_URL)
        return agentkeys_bad(r, agent, "baseUrl", "must be a URL of 1-2048 characters");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
            return agentkeys_bad(r, agent, "baseUrl", "must be printable ASCII without spaces");
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
            return reply_problem(r, 400, "invalid_request", "field \"agents.%s.secret\": tenant %s has no secret %s; "
                                 "store it with POST /v1/secrets", agent, r->tok.tenant, name), -1;
        return reply_error(r, &e), -1;
    }
    OPENSSL_cleanse(value, len);
    free(value);
    return 0;
}

/* {"http": {...}} for one agent: its key's header replaced host-side. */
static json_t *agentkeys_rule(const agentkeys_provider *p, const char *secret, const agentkeys_dest *d)
{
    char value[160];
    snprintf(value, sizeof value, "%s${secret:%s}", p->prefix, secret);
    json_t *ports = d->port == (d->tls ? 443 : 80) ? json_pack("[i,i]", 80, 443) : json_pack("[i]", d->port);
    return json_pack("{s:{s:s, s:o, s:{s:s}, s:b}}", "http", "host", d->host, "ports", ports, "set_headers",
                     p->header, value, "redact_response", 1);
}

/* A dns rule from the host's resolver config (/etc/resolv.conf), with
 * only the nameservers the daemon may contact for this client; NULL when
 * none is left. */
static json_t *agentkeys_host_dns(sreq *r)
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

static int agentkeys_has_dns(json_t *rules)
{
    size_t i;
    json_t *rule;
    json_array_foreach(rules, i, rule)
        if (json_object_get(rule, "dns"))
            return 1;
    return 0;
}

/* One agent: validate, add its env and its rule. */
static int agentkeys_one(sreq *r, const char *agent, json_t *want, json_t *env, json_t *rules)
{
    const agentkeys_provider *p = agentkeys_find(agent);
    if (!p)
        return agentkeys_bad(r, agent, "", "names no agent whose key can be brokered (known: codex, claude)");
    if (!json_is_object(want))
        return agentkeys_bad(r, agent, "", "must be an object {\"secret\": NAME, \"baseUrl\": URL}");
    const char *key;
    json_t *v;
    json_object_foreach(want, key, v)
        if (strcmp(key, "secret") != 0 && strcmp(key, "baseUrl") != 0)
            return agentkeys_bad(r, agent, key, "is not a field (secret, baseUrl)");
    json_t *sec = json_object_get(want, "secret"), *base = json_object_get(want, "baseUrl");
    if (!json_is_string(sec))
        return agentkeys_bad(r, agent, "secret", "is required: the name of a secret (POST /v1/secrets)");
    if (base && !json_is_null(base) && !json_is_string(base))
        return agentkeys_bad(r, agent, "baseUrl", "must be a string");
    agentkeys_dest d = { .port = 443, .tls = 1 };
    snprintf(d.host, sizeof d.host, "%s", p->host);
    if (json_is_string(base) && agentkeys_parse_url(r, agent, json_string_value(base), &d) < 0)
        return -1;
    if (agentkeys_check_secret(r, agent, json_string_value(sec)) < 0)
        return -1;
    json_object_set_new(env, p->key_env, json_string(AGENTKEYS_PLACEHOLDER));
    if (json_is_string(base))
        json_object_set(env, p->base_env, base);
    json_t *rule = agentkeys_rule(p, json_string_value(sec), &d);
    if (!rule || json_array_append_new(rules, rule) < 0)
        return reply_problem(r, 500, "internal", "out of memory"), -1;
    return 0;
}

/* Our rules first, then the client's; the whole is screened by
 * cell_policy_check_v2 in cells.c's parse_policy like any policy. */
static int agentkeys_merge(sreq *r, json_t *body, json_t *ours)
{
    json_t *policy = json_object_get(body, "policy");
    json_t *theirs = json_is_object(policy) ? json_object_get(policy, "rules") : NULL;
    if (policy && !json_is_null(policy) && (!json_is_object(policy) || (theirs && !json_is_array(theirs))))
        return reply_problem(r, 400, "invalid_request", "field \"policy\" must be an object with \"rules\" (an array)"), -1;
    if (!agentkeys_has_dns(theirs)) {
        json_t *dns = agentkeys_host_dns(r);
        if (!dns)
            return reply_problem(r, 400, "invalid_request", "field \"agents\" needs a dns rule and the daemon knows no "
                                 "upstream it may use for you (/etc/resolv.conf); give one in \"policy\": "
                                 "{\"rules\": [{\"dns\": {\"upstreams\": [\"IP\"]}}]}"), -1;
        json_array_insert_new(ours, 0, dns);
    }
    if (theirs)
        json_array_extend(ours, theirs);
    json_t *merged = json_is_object(policy) ? json_deep_copy(policy) : json_object();
    if (!merged || json_object_set(merged, "rules", ours) < 0 || json_object_set_new(body, "policy", merged) < 0)
        return reply_problem(r, 500, "internal", "out of memory"), -1;
    return 0;
}

int agentkeys_apply(sreq *r, json_t *body, json_t *spec)
{
    json_t *agents = json_object_get(body, "agents");
    if (!agents || json_is_null(agents))
        return 0;
    if (!json_is_object(agents) || json_object_size(agents) == 0 || json_object_size(agents) > AGENTKEYS_MAX)
        return reply_problem(r, 400, "invalid_request", "field \"agents\" must be an object of 1-%d agents, "
                             "like {\"codex\": {\"secret\": \"OPENAI_KEY\"}}", AGENTKEYS_MAX), -1;
    /* A copy: the spec's env may share the request body's object. */
    json_t *env = json_deep_copy(json_object_get(spec, "env"));
    json_t *rules = json_array();
    int rc = env && rules ? 0 : (reply_problem(r, 500, "internal", "out of memory"), -1);
    const char *agent;
    json_t *want;
    json_object_foreach(agents, agent, want)
        if (rc == 0)
            rc = agentkeys_one(r, agent, want, env, rules);
    if (rc == 0)
        rc = agentkeys_merge(r, body, rules);
    if (rc == 0) {
        json_object_set(spec, "env", env);
        json_object_set(spec, "agents", agents);
    }
    json_decref(env);
    json_decref(rules);
    return rc;
}
