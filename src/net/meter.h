/* meter.h: token usage read from a model provider's responses as they
 * stream through the egress engine ("meter" on an http rule), so a cell's
 * usage is measured by cell, not reported by the agent.  Runs in the
 * unprivileged egress helper; memory is bounded per event. */
#ifndef CELL_NET_METER_H
#define CELL_NET_METER_H

#include <stddef.h>
#include <stdint.h>

enum net_meter_kind { NET_METER_NONE = 0, NET_METER_OPENAI, NET_METER_ANTHROPIC };

#define NET_METER_EVENT_MAX (1u << 20)      /* bytes of one SSE event or JSON body; past it: skipped */
#define NET_METER_COUNT_MAX (1ull << 53)    /* counts are clamped here (exact in JSON doubles) */

typedef struct net_usage {
    uint64_t input, output, total;
} net_usage;

typedef struct net_meter {
    enum net_meter_kind kind;
    int       sse;                  /* text/event-stream: events of data: lines; else one JSON body */
    char     *buf;                  /* the line (SSE) or body being gathered */
    size_t    len, cap;
    char     *data;                 /* SSE: the event's data lines so far, joined by \n */
    size_t    dlen, dcap;
    int       skip_line;            /* the line passed the cap: dropped to its end */
    int       skip_event;           /* the event passed the cap: dropped to its blank line */
    int       found;                /* a usage was seen (the last one counts) */
    int       have_in, have_out, have_total;
    net_usage u;
} net_meter;

/* kind NET_METER_NONE leaves the meter off (feed does nothing). */
void net_meter_init(net_meter *m, enum net_meter_kind kind, const char *content_type);
void net_meter_feed(net_meter *m, const char *data, size_t len);
/* The body ended (or was cut): 1 with *out if a usage was seen, else 0. */
int  net_meter_finish(net_meter *m, net_usage *out);
void net_meter_free(net_meter *m);
/* "openai", "anthropic" -> the kind; NET_METER_NONE for anything else. */
enum net_meter_kind net_meter_kind_from(const char *name);
const char *net_meter_kind_name(enum net_meter_kind kind);

#endif
