/* fuzz_meter: the egress meter (src/net/meter.c) on upstream bodies.  The
 * first byte picks the API, SSE or JSON and a piece size; the body is fed
 * whole and in pieces, which must give the same usage, every count within
 * 2^53. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/meter.h"

static int run(enum net_meter_kind kind, const char *ct, const uint8_t *d, size_t n, size_t step, net_usage *u)
{
    net_meter m;
    net_meter_init(&m, kind, ct);
    for (size_t off = 0; off < n;) {
        size_t k = step && step < n - off ? step : n - off;
        net_meter_feed(&m, (const char *)d + off, k);
        off += k;
    }
    int found = net_meter_finish(&m, u);
    net_meter_free(&m);
    return found;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum net_meter_kind kind = data[0] & 1 ? NET_METER_ANTHROPIC : NET_METER_OPENAI;
    const char *ct = data[0] & 2 ? "text/event-stream" : "application/json";
    size_t step = (size_t)(data[0] >> 2) + 1;
    net_usage a = { 0 }, b = { 0 };
    int fa = run(kind, ct, data + 1, size - 1, 0, &a);
    int fb = run(kind, ct, data + 1, size - 1, step, &b);
    if (fa != fb || (fa && memcmp(&a, &b, sizeof a) != 0))
        abort();
    if (fa && (a.input > NET_METER_COUNT_MAX || a.output > NET_METER_COUNT_MAX || a.total > NET_METER_COUNT_MAX))
        abort();
    return 0;
}
