/* metrics.h — GET /metrics in the Prometheus text format (API.md §10). */
#ifndef COYOTE_SERVER_METRICS_H
#define COYOTE_SERVER_METRICS_H

#include "base/buf.h"
#include "broker/broker.h"
#include "server/api.h"

/* Render every series into out: operation counters, responses by status
 * class, per-group lag (messages and seconds), in-flight and dead-letter
 * gauges, journal bytes per namespace, the fsync latency histogram, and the
 * durability mode in force. responses[i]: responses of class i xx. */
void metrics_render(struct broker *b, const struct api_ctx *api, const uint64_t responses[6],
                    struct buf *out);

#endif
