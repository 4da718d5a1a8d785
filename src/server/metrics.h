/* metrics.h: GET /metrics (Prometheus text format), GET /healthz and
 * GET /readyz.  Event counters are atomics bumped where the events happen
 * (no lock on a request's path); gauges (cells by state, processes, the
 * pool, runs) are gathered when /metrics is read.  No label carries a
 * tenant's name or a cell's id: the output is the same whoever reads it.
 * docs/api.md "Observability" lists every metric. */
#ifndef CELL_SERVER_METRICS_H
#define CELL_SERVER_METRICS_H

#include <stdint.h>

#include "server/server_internal.h"

/* Check that the route tables fit the counters; before the listeners. */
int  srv_metrics_start(cell_error *err);
/* The daemon serves (listeners up, the pool started) or stops: /readyz. */
void srv_metrics_set_serving(srv *s, int serving);

/* A request ended (route NULL: no route matched; method is the client's). */
void srv_metrics_http(const route *rt, const char *method, unsigned status);
/* A request left out of the audit log (unauthenticated flood). */
void srv_metrics_audit_suppressed(void);
/* CLOCK_MONOTONIC in ms, for durations. */
int64_t srv_metrics_clock_ms(void);
/* A cell create that got as far as booting: its outcome and duration. */
void srv_metrics_cell_create(int ok, int64_t ms);
/* One egress record of a cell's engine: its event and verdict, and for a
 * finished flow its byte counts (-1: none). */
void srv_metrics_egress(const char *event, const char *verdict, int64_t bytes_out, int64_t bytes_in);
/* A decide webhook's answer (cached: from the cache, no request made). */
void srv_metrics_decide(int allow, int cached);

int srv_h_metrics(sreq *r);
int srv_h_healthz(sreq *r);
int srv_h_readyz(sreq *r);

#endif
