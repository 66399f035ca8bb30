/* metrics.c — the Prometheus text exposition of coyoted (see metrics.h). */
#include "server/metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

/* A string literal, its length taken by the compiler (never counted by hand). */
#define PUT_LIT(out, lit) buf_put((out), (lit), sizeof(lit) - 1)

static void put(struct buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *out, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        buf_put(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* A label value with \, " and newlines escaped. */
static void label(struct buf *out, struct bstr s)
{
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        if (c == '\\' || c == '"')
            buf_put_u8(out, '\\');
        if (c == '\n') {
            PUT_LIT(out, "\\n");
            continue;
        }
        buf_put_u8(out, (uint8_t)c);
    }
}

static void counter(struct buf *out, const char *name, const char *help, uint64_t v)
{
    put(out, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}

static const char *mode_name(enum broker_mode m)
{
    return m == BROKER_STREAM ? "stream" : m == BROKER_QUEUE ? "queue" : "fifo";
}

void metrics_render(struct broker *b, const struct api_ctx *api, const uint64_t responses[6],
                    struct buf *out)
{
    const struct api_stats *st = &api->stats;
    counter(out, "coyote_published_messages_total", "Messages stored by publish.", st->published);
    counter(out, "coyote_publish_requests_total", "Publish calls.", st->publish_calls);
    counter(out, "coyote_publish_duplicates_total",
            "Publishes answered from an idempotency key.", st->duplicates);
    counter(out, "coyote_published_bytes_total", "Value bytes stored by publish.",
            st->published_bytes);
    counter(out, "coyote_received_messages_total", "Messages handed out by receives.",
            st->received);
    counter(out, "coyote_received_bytes_total", "Value bytes handed out by receives.",
            st->received_bytes);
    counter(out, "coyote_dead_lettered_messages_total",
            "Messages dead-lettered (retries used up, or max_deliveries reached).",
            broker_dead_lettered(b));
    counter(out, "coyote_acked_messages_total", "Message ids acked.", st->acked);
    counter(out, "coyote_nacked_messages_total", "Message ids nacked.", st->nacked);
    counter(out, "coyote_stream_commits_total", "Stream commits.", st->committed);
    counter(out, "coyote_requests_total", "Operations handled.", st->requests);
    put(out, "# HELP coyote_http_responses_total HTTP responses by status class.\n"
             "# TYPE coyote_http_responses_total counter\n");
    for (int c = 1; c <= 5; c++)
        put(out, "coyote_http_responses_total{class=\"%dxx\"} %" PRIu64 "\n", c, responses[c]);

    put(out, "# HELP coyote_durability_mode The --fsync policy in force.\n"
             "# TYPE coyote_durability_mode gauge\ncoyote_durability_mode{mode=\"%s\"} 1\n",
        broker_fsync_name(b));

    const struct broker_ns_info *nss;
    size_t nn;
    if (broker_ns_list(b, &nss, &nn))
        return;
    /* Copy the names: later broker calls reuse the list memory. */
    struct bstr names[nn ? nn : 1];
    for (size_t i = 0; i < nn; i++)
        names[i] = nss[i].name;

    put(out, "# HELP coyote_log_bytes Journal bytes kept per namespace.\n"
             "# TYPE coyote_log_bytes gauge\n");
    for (size_t i = 0; i < nn; i++) {
        struct journal_stats js;
        if (broker_ns_journal_stats(b, names[i], &js))
            continue;
        PUT_LIT(out, "coyote_log_bytes{namespace=\"");
        label(out, names[i]);
        put(out, "\"} %" PRIu64 "\n", js.bytes);
    }
    put(out, "# HELP coyote_fsync_seconds fdatasync latency of the journals.\n"
             "# TYPE coyote_fsync_seconds histogram\n");
    for (size_t i = 0; i < nn; i++) {
        struct journal_stats js;
        if (broker_ns_journal_stats(b, names[i], &js))
            continue;
        uint64_t cum = 0;
        for (int k = 0; k < 16; k++) {
            cum += js.sync_hist[k];
            PUT_LIT(out, "coyote_fsync_seconds_bucket{namespace=\"");
            label(out, names[i]);
            if (k < 15)
                put(out, "\",le=\"%.6f\"} %" PRIu64 "\n", (64e-6 * (double)(1u << k)), cum);
            else
                put(out, "\",le=\"+Inf\"} %" PRIu64 "\n", cum);
        }
        PUT_LIT(out, "coyote_fsync_seconds_sum{namespace=\"");
        label(out, names[i]);
        put(out, "\"} %.6f\n", (double)js.sync_ns_total / 1e9);
        PUT_LIT(out, "coyote_fsync_seconds_count{namespace=\"");
        label(out, names[i]);
        put(out, "\"} %" PRIu64 "\n", js.syncs);
    }

    static const struct {
        const char *name, *help;
    } gauges[] = {
        {"coyote_consumer_lag_messages", "Messages not yet consumed by the group."},
        {"coyote_consumer_lag_seconds", "Age of the oldest message not yet consumed."},
        {"coyote_in_flight_messages", "Leased messages (queue, FIFO)."},
        {"coyote_dead_letter_messages", "Messages dead-lettered for the group."},
    };
    for (size_t gk = 0; gk < 4; gk++) {
        put(out, "# HELP %s %s\n# TYPE %s gauge\n", gauges[gk].name, gauges[gk].help,
            gauges[gk].name);
        for (size_t i = 0; i < nn; i++) {
            struct broker_ns_ref ref = {!bstr_is_default(names[i]), names[i]};
            const struct broker_group_info *gs;
            size_t ng;
            struct broker_error err;
            if (broker_group_list(b, ref, (struct bstr){NULL, 0}, &gs, &ng, &err))
                continue;
            for (size_t g = 0; g < ng; g++) {
                put(out, "%s{namespace=\"", gauges[gk].name);
                label(out, names[i]);
                PUT_LIT(out, "\",topic=\"");
                label(out, gs[g].topic);
                put(out, "\",mode=\"%s\",group=\"", mode_name(gs[g].mode));
                label(out, gs[g].group);
                if (gk == 0)
                    put(out, "\"} %" PRIu64 "\n", gs[g].lag);
                else if (gk == 1)
                    put(out, "\"} %.3f\n", (double)gs[g].lag_ms / 1000.0);
                else if (gk == 2)
                    put(out, "\"} %" PRIu64 "\n", gs[g].in_flight);
                else
                    put(out, "\"} %" PRIu64 "\n", gs[g].dead);
            }
        }
    }
}
