/* meter.c: token usage found in model responses as they stream (meter.h).
 * SSE bodies are split into events by lines, each event's data parsed as
 * JSON only when it mentions "usage"; other bodies are one JSON document.
 * Everything here is the upstream's (or, through it, the agent's) bytes:
 * each event and body is capped, counts must be non-negative integers and
 * are clamped to 2^53, and a response has one usage, the last it gives. */
#include "net/meter.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum net_meter_kind net_meter_kind_from(const char *name)
{
    if (name && strcmp(name, "openai") == 0)
        return NET_METER_OPENAI;
    if (name && strcmp(name, "anthropic") == 0)
        return NET_METER_ANTHROPIC;
    return NET_METER_NONE;
}

const char *net_meter_kind_name(enum net_meter_kind kind)
{
    return kind == NET_METER_OPENAI ? "openai" : kind == NET_METER_ANTHROPIC ? "anthropic" : "none";
}

void net_meter_init(net_meter *m, enum net_meter_kind kind, const char *content_type)
{
    *m = (net_meter){ .kind = kind };
    if (content_type) {
        content_type += strspn(content_type, " \t");
        m->sse = strncasecmp(content_type, "text/event-stream", 17) == 0;
    }
}

void net_meter_free(net_meter *m)
{
    free(m->buf);
    free(m->data);
    *m = (net_meter){ 0 };
}

/* Append to a growing buffer capped at NET_METER_EVENT_MAX: -1 past the
 * cap or without memory (the caller then skips what it was gathering). */
static int grow_add(char **b, size_t *len, size_t *cap, const char *d, size_t n)
{
    if (n > NET_METER_EVENT_MAX - *len)
        return -1;
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n + 1)
            c *= 2;
        char *nb = realloc(*b, c);
        if (!nb)
            return -1;
        *b = nb, *cap = c;
    }
    memcpy(*b + *len, d, n);
    *len += n;
    (*b)[*len] = '\0';
    return 0;
}

/* A token count: a non-negative integer (jansson reads numbers as doubles
 * here, so one too big for an int64 still parses), clamped to 2^53. */
static int count(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        return 0;
    double d = json_number_value(v);
    if (!(d >= 0))
        return 0;               /* negative or NaN: not a count */
    if (d >= (double)NET_METER_COUNT_MAX) {
        *out = NET_METER_COUNT_MAX;
        return 1;
    }
    if ((double)(uint64_t)d != d)
        return 0;               /* fractional */
    *out = (uint64_t)d;
    return 1;
}

static uint64_t add_clamped(uint64_t a, uint64_t b)
{
    return a + b > NET_METER_COUNT_MAX ? NET_METER_COUNT_MAX : a + b;
}

/* OpenAI: Responses' {input_tokens, output_tokens, total_tokens} or Chat
 * Completions' {prompt_tokens, completion_tokens, total_tokens}. */
static void openai_usage(net_meter *m, json_t *u)
{
    uint64_t in = 0, out = 0, total = 0;
    int hi = count(u, "input_tokens", &in) || count(u, "prompt_tokens", &in);
    int ho = count(u, "output_tokens", &out) || count(u, "completion_tokens", &out);
    int ht = count(u, "total_tokens", &total);
    if (!hi && !ho && !ht)
        return;
    m->u = (net_usage){ in, out, ht ? total : add_clamped(in, out) };
    m->found = 1;
}

static void openai_object(net_meter *m, json_t *o)
{
    json_t *resp = json_object_get(o, "response");
    json_t *u = json_object_get(json_is_object(resp) ? resp : o, "usage");
    if (json_is_object(u))
        openai_usage(m, u);
}

/* Anthropic: the input counts all the prompt's tokens, cached or not. */
static int anthropic_input(json_t *u, uint64_t *in)
{
    uint64_t base = 0, c1 = 0, c2 = 0;
    int have = count(u, "input_tokens", &base);
    count(u, "cache_creation_input_tokens", &c1);
    count(u, "cache_read_input_tokens", &c2);
    *in = add_clamped(add_clamped(base, c1), c2);
    return have;
}

/* message_start.message.usage (or a whole message's usage) gives both;
 * message_delta.usage gives the output so far (and maybe the input). */
static void anthropic_object(net_meter *m, json_t *o)
{
    const char *type = json_string_value(json_object_get(o, "type"));
    if (!type)
        return;
    json_t *u = NULL;
    int delta = strcmp(type, "message_delta") == 0;
    if (strcmp(type, "message_start") == 0)
        u = json_object_get(json_object_get(o, "message"), "usage");
    else if (delta || strcmp(type, "message") == 0)
        u = json_object_get(o, "usage");
    if (!json_is_object(u))
        return;
    uint64_t in, out;
    int hi = anthropic_input(u, &in), ho = count(u, "output_tokens", &out);
    if (!delta) {
        if (!hi && !ho)
            return;
        m->u.input = hi ? in : 0;
        m->u.output = ho ? out : 0;
    } else {
        if (hi)
            m->u.input = in;
        if (ho)
            m->u.output = out;
        if (!hi && !ho)
            return;
    }
    m->u.total = add_clamped(m->u.input, m->u.output);
    m->found = 1;
}

static void parse_doc(net_meter *m, const char *d, size_t n)
{
    /* Most events are text deltas: only those naming usage are parsed. */
    if (!memmem(d, n, "usage", 5))
        return;
    json_t *o = json_loadb(d, n, JSON_DECODE_INT_AS_REAL, NULL);
    if (json_is_object(o)) {
        if (m->kind == NET_METER_OPENAI)
            openai_object(m, o);
        else
            anthropic_object(m, o);
    }
    json_decref(o);
}

static void event_end(net_meter *m)
{
    if (!m->skip_event && m->dlen)
        parse_doc(m, m->data, m->dlen);
    m->dlen = 0;
    m->skip_event = 0;
}

/* One SSE line (without its end): a data field joins the event's data, a
 * blank line ends the event; other fields do not matter here. */
static void sse_line(net_meter *m, char *l, size_t n)
{
    if (n && l[n - 1] == '\r')
        n--;
    if (n == 0) {
        event_end(m);
        return;
    }
    if (m->skip_event || n < 5 || memcmp(l, "data:", 5) != 0)
        return;
    l += 5, n -= 5;
    if (n && *l == ' ')
        l++, n--;
    if ((m->dlen && grow_add(&m->data, &m->dlen, &m->dcap, "\n", 1) < 0) ||
        grow_add(&m->data, &m->dlen, &m->dcap, l, n) < 0) {
        m->skip_event = 1;
        m->dlen = 0;
    }
}

static void sse_feed(net_meter *m, const char *d, size_t len)
{
    while (len) {
        const char *nl = memchr(d, '\n', len);
        size_t n = nl ? (size_t)(nl - d) : len;
        if (!m->skip_line && grow_add(&m->buf, &m->len, &m->cap, d, n) < 0) {
            m->skip_line = 1;   /* past the cap: the line, and so its event, is dropped */
            m->skip_event = 1;
            m->len = 0;
            m->dlen = 0;
        }
        if (!nl)
            return;
        if (!m->skip_line)
            sse_line(m, m->buf ? m->buf : (char *)"", m->len);
        m->skip_line = 0;
        m->len = 0;
        d = nl + 1;
        len -= n + 1;
    }
}

void net_meter_feed(net_meter *m, const char *data, size_t len)
{
    if (m->kind == NET_METER_NONE || len == 0)
        return;
    if (m->sse) {
        sse_feed(m, data, len);
    } else if (!m->skip_event && grow_add(&m->buf, &m->len, &m->cap, data, len) < 0) {
        m->skip_event = 1;      /* a body past the cap is not metered */
        m->len = 0;
    }
}

int net_meter_finish(net_meter *m, net_usage *out)
{
    if (m->kind == NET_METER_NONE)
        return 0;
    if (m->sse) {
        if (!m->skip_line && m->len)
            sse_line(m, m->buf, m->len);
        event_end(m);
    } else if (!m->skip_event && m->len) {
        parse_doc(m, m->buf, m->len);
    }
    m->len = 0;
    if (m->found)
        *out = m->u;
    return m->found;
}
