/*
 * api_admin.c — namespaces (API.md §3), topics (§4), consumer groups (§10)
 * and the test clock.
 *
 * Response shapes that API.md leaves open (docs/api.md repeats them):
 *
 *   namespace: {"name", "retention": {"period_ms", "size_bytes",
 *               "topic_bytes"}, "created", "updated"}
 *     Each retention value is null when unlimited; `retention` itself is
 *     always an object. created / updated are integers: ms since the Unix
 *     epoch (broker clock), like every other timestamp of the API.
 *   namespace.list: {"namespaces": [namespace, ...]} sorted by name.
 *
 *   topic.configure: {"partitions": <count>}
 *   topic.get: {"topic", "partitions": [{"partition", "start_offset",
 *               "end_offset", "bytes", "oldest_timestamp"}], "bytes",
 *               "oldest_timestamp", "groups": {"stream": [g], "queue": [g],
 *               "fifo": [g]}}
 *     where g = {"consumer_group", "lag", "lag_ms"} (sorted by name).
 *     end_offset is one past the last stored offset; oldest_timestamp is
 *     null for an empty partition / topic; top-level bytes is the sum and
 *     oldest_timestamp the minimum over the partitions.
 *   topic.list: {"topics": [name, ...]} sorted.
 *   topic.trim: {"partitions": [{"partition", "start_offset"}]} — the new
 *     start offset of every partition the trim addressed.
 *
 *   group (group.get, and each element of group.list's {"groups": [...]},
 *   sorted by topic, mode, name):
 *     {"topic", "consumer_group", "mode": "stream"|"queue"|"fifo",
 *      "lag", "lag_ms", "in_flight", "waiting_retry", "dead", "delayed",
 *      "config": null (stream) | {"retry_schedule", "dlq_topic",
 *                                 "max_deliveries"},
 *      "partitions": [per partition]}
 *     per partition, stream: {"partition", "cursor", "lag", "lag_ms",
 *     "leased"}; queue / FIFO: {"partition", "floor", "lag", "lag_ms"}.
 *     lag counts messages, lag_ms is the age of the oldest unconsumed one
 *     (0 when none). in_flight / waiting_retry / dead / delayed are 0 for
 *     stream groups.
 *
 *   test clock: {"ms": N} → {"now": <broker clock, ms>}; the clock never
 *   goes past the largest timestamp of API.md §2 (422 at "ms").
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api_int.h"

static const char *const mode_names[] = {"stream", "queue", "fifo"};

/* ---- namespaces --------------------------------------------------------------- */

static void put_ns(struct out *o, const struct broker_ns_info *ns)
{
    const struct broker_retention *ret = &ns->retention;
    out_map(o, 4);
    out_key(o, "name");
    out_bstr(o, ns->name);
    out_key(o, "retention");
    out_map(o, 3);
    out_key(o, "period_ms");
    out_opt_u64(o, ret->has_period, ret->period_ms);
    out_key(o, "size_bytes");
    out_opt_u64(o, ret->has_size, ret->size_bytes);
    out_key(o, "topic_bytes");
    out_opt_u64(o, ret->has_topic_bytes, ret->topic_bytes);
    out_key(o, "created");
    out_u64(o, ns->created_ms);
    out_key(o, "updated");
    out_u64(o, ns->updated_ms);
}

/* One retention value under its name or its alias (never both). */
static int retention_field(struct req *r, const struct val *m, const char *name, const char *alias,
                           uint64_t max, bool *has, uint64_t *v)
{
    char loc[64];
    const struct val *a = req_field(m, name), *b = alias ? req_field(m, alias) : NULL;
    if (a && b) {
        snprintf(loc, sizeof loc, "retention.%s", alias);
        return req_bad(r, loc, "'retention.%s' and its alias 'retention.%s' were both given.", name,
                       alias);
    }
    snprintf(loc, sizeof loc, "retention.%s", a ? name : alias);
    *has = a || b;
    *v = 0;
    return *has ? req_u64_at(r, a ? a : b, loc, max, v) : 0;
}

static int decode_retention(struct req *r, struct broker_retention *ret)
{
    memset(ret, 0, sizeof *ret);
    const struct val *v = req_field(r->body, "retention");
    if (!v)
        return 0;
    if (v->type != VAL_MAP)
        return req_bad(r, "retention", "'retention' must be an object, not %s.",
                       req_type_name(v->type));
    /* period_ms has no documented bound: cap it at the largest timestamp so
     * that no arithmetic on it can overflow. */
    if (retention_field(r, v, "period_ms", "msg_age_ms", API_MAX_TIMESTAMP, &ret->has_period,
                        &ret->period_ms) ||
        retention_field(r, v, "size_bytes", "global_bytes", UINT64_MAX, &ret->has_size,
                        &ret->size_bytes) ||
        retention_field(r, v, "topic_bytes", NULL, UINT64_MAX, &ret->has_topic_bytes,
                        &ret->topic_bytes))
        return -1;
    return 0;
}

enum hres api_op_ns_configure(struct req *r)
{
    struct bstr name;
    struct broker_retention ret;
    if (req_str(r, r->body, "name", true, &name, NULL) || decode_retention(r, &ret))
        return H_ERROR;
    struct broker_ns_info info;
    struct broker_wait w = {0};
    struct broker_error e = {0};
    if (broker_ns_configure(r->b, name, &ret, &info, &w, &e))
        return req_broker_err(r, &e), H_ERROR;
    r->call->wait = w;
    put_ns(r->out, &info);
    return H_DONE;
}

enum hres api_op_ns_get(struct req *r)
{
    struct bstr name;
    if (req_str(r, r->body, "name", true, &name, NULL))
        return H_ERROR;
    struct broker_ns_info info;
    struct broker_error e = {0};
    if (broker_ns_get(r->b, name, &info, &e))
        return req_broker_err(r, &e), H_ERROR;
    put_ns(r->out, &info);
    return H_DONE;
}

enum hres api_op_ns_list(struct req *r)
{
    const struct broker_ns_info *list;
    size_t n;
    if (broker_ns_list(r->b, &list, &n))
        return req_oom(r), H_ERROR;
    out_map(r->out, 1);
    out_key(r->out, "namespaces");
    out_array(r->out, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        put_ns(r->out, &list[i]);
    return H_DONE;
}

/* ---- topics ----------------------------------------------------------------------- */

enum hres api_op_topic_configure(struct req *r)
{
    struct broker_ns_ref ns;
    struct bstr topic;
    if (req_ns(r, &ns) || req_str(r, r->body, "topic", true, &topic, NULL))
        return H_ERROR;
    /* Any integer: out of 1..64 is the broker's 400 invalid_input (API.md §4). */
    const struct val *v = req_field(r->body, "partitions");
    int64_t partitions;
    if (!v)
        return req_bad(r, "partitions", "'partitions' is required."), H_ERROR;
    if (v->type == VAL_INT)
        partitions = v->i;
    else if (v->type == VAL_UINT)
        partitions = v->u > INT64_MAX ? INT64_MAX : (int64_t)v->u;
    else
        return req_bad(r, "partitions", "'partitions' must be an integer, not %s.",
                       req_type_name(v->type)),
               H_ERROR;
    uint32_t count;
    struct broker_wait w = {0};
    struct broker_error e = {0};
    if (broker_topic_configure(r->b, ns, topic, partitions, &count, &w, &e))
        return req_broker_err(r, &e), H_ERROR;
    r->call->wait = w;
    out_map(r->out, 1);
    out_key(r->out, "partitions");
    out_u64(r->out, count);
    return H_DONE;
}

static int cmp_summary(const void *a, const void *b)
{
    const struct broker_group_summary *x = *(const struct broker_group_summary *const *)a;
    const struct broker_group_summary *y = *(const struct broker_group_summary *const *)b;
    if (x->mode != y->mode)
        return (int)x->mode - (int)y->mode;
    size_t n = x->name.n < y->name.n ? x->name.n : y->name.n;
    int c = n ? memcmp(x->name.p, y->name.p, n) : 0;
    return c ? c : (x->name.n > y->name.n) - (x->name.n < y->name.n);
}

enum hres api_op_topic_get(struct req *r)
{
    struct broker_ns_ref ns;
    struct bstr topic;
    if (req_ns(r, &ns) || req_str(r, r->body, "topic", true, &topic, NULL))
        return H_ERROR;
    struct broker_topic_info ti;
    struct broker_error e = {0};
    if (broker_topic_get(r->b, ns, topic, &ti, &e))
        return req_broker_err(r, &e), H_ERROR;
    const struct broker_group_summary **gs =
        arena_alloc(&r->arena, (ti.n_groups ? ti.n_groups : 1) * sizeof *gs);
    if (!gs)
        return req_oom(r), H_ERROR;
    uint32_t per_mode[3] = {0, 0, 0};
    for (size_t i = 0; i < ti.n_groups; i++) {
        gs[i] = &ti.groups[i];
        if ((unsigned)ti.groups[i].mode < 3)
            per_mode[ti.groups[i].mode]++;
    }
    qsort(gs, ti.n_groups, sizeof *gs, cmp_summary);

    struct out *o = r->out;
    uint64_t bytes = 0, oldest = 0;
    out_map(o, 5);
    out_key(o, "topic");
    out_bstr(o, ti.name);
    out_key(o, "partitions");
    out_array(o, ti.partitions);
    for (uint32_t p = 0; p < ti.partitions; p++) {
        const struct broker_partition_info *pi = &ti.parts[p];
        bytes += pi->bytes;
        if (pi->oldest_timestamp && (!oldest || pi->oldest_timestamp < oldest))
            oldest = pi->oldest_timestamp;
        out_map(o, 5);
        out_key(o, "partition");
        out_u64(o, p);
        out_key(o, "start_offset");
        out_u64(o, pi->start_offset);
        out_key(o, "end_offset");
        out_u64(o, pi->end_offset);
        out_key(o, "bytes");
        out_u64(o, pi->bytes);
        out_key(o, "oldest_timestamp");
        out_opt_u64(o, pi->oldest_timestamp != 0, pi->oldest_timestamp);
    }
    out_key(o, "bytes");
    out_u64(o, bytes);
    out_key(o, "oldest_timestamp");
    out_opt_u64(o, oldest != 0, oldest);
    out_key(o, "groups");
    out_map(o, 3);
    for (int m = 0; m < 3; m++) {
        out_key(o, mode_names[m]);
        out_array(o, per_mode[m]);
        for (size_t i = 0; i < ti.n_groups; i++) {
            if ((int)gs[i]->mode != m)
                continue;
            out_map(o, 3);
            out_key(o, "consumer_group");
            out_bstr(o, gs[i]->name);
            out_key(o, "lag");
            out_u64(o, gs[i]->lag);
            out_key(o, "lag_ms");
            out_u64(o, gs[i]->lag_ms);
        }
    }
    return H_DONE;
}

enum hres api_op_topic_list(struct req *r)
{
    struct broker_ns_ref ns;
    if (req_ns(r, &ns))
        return H_ERROR;
    const struct bstr *names;
    size_t n;
    struct broker_error e = {0};
    if (broker_topic_list(r->b, ns, &names, &n, &e))
        return req_broker_err(r, &e), H_ERROR;
    out_map(r->out, 1);
    out_key(r->out, "topics");
    out_array(r->out, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        out_bstr(r->out, names[i]);
    return H_DONE;
}

enum hres api_op_topic_trim(struct req *r)
{
    struct broker_trim_req q;
    memset(&q, 0, sizeof q);
    if (req_ns(r, &q.ns) || req_topic_ref(r, "topic", &q.topic) ||
        req_u64(r, r->body, "before_offset", false, UINT64_MAX, &q.before_offset,
                &q.has_before_offset) ||
        req_u64(r, r->body, "before_timestamp", false, API_MAX_TIMESTAMP, &q.before_timestamp,
                &q.has_before_timestamp))
        return H_ERROR;
    struct broker_trim_res res;
    struct broker_wait w = {0};
    struct broker_error e = {0};
    if (broker_topic_trim(r->b, &q, &res, &w, &e))
        return req_broker_err(r, &e), H_ERROR;
    r->call->wait = w;
    struct out *o = r->out;
    out_map(o, 1);
    out_key(o, "partitions");
    out_array(o, res.n);
    for (uint32_t i = 0; i < res.n; i++) {
        out_map(o, 2);
        out_key(o, "partition");
        out_u64(o, res.partition[i]);
        out_key(o, "start_offset");
        out_u64(o, res.start_offset[i]);
    }
    return H_DONE;
}

/* ---- groups --------------------------------------------------------------------------- */

static void put_group(struct out *o, const struct broker_group_info *g)
{
    bool stream = g->mode == BROKER_STREAM;
    out_map(o, 11);
    out_key(o, "topic");
    out_bstr(o, g->topic);
    out_key(o, "consumer_group");
    out_bstr(o, g->group);
    out_key(o, "mode");
    out_cstr(o, (unsigned)g->mode < 3 ? mode_names[g->mode] : "unknown");
    out_key(o, "lag");
    out_u64(o, g->lag);
    out_key(o, "lag_ms");
    out_u64(o, g->lag_ms);
    out_key(o, "in_flight");
    out_u64(o, g->in_flight);
    out_key(o, "waiting_retry");
    out_u64(o, g->waiting_retry);
    out_key(o, "dead");
    out_u64(o, g->dead);
    out_key(o, "delayed");
    out_u64(o, g->delayed);
    out_key(o, "config");
    if (g->has_config) {
        const struct broker_queue_config *c = &g->config;
        out_map(o, 3);
        out_key(o, "retry_schedule");
        out_array(o, c->retry_count);
        for (uint32_t i = 0; i < c->retry_count; i++)
            out_u64(o, c->retry_schedule[i]);
        out_key(o, "dlq_topic");
        if (c->has_dlq_topic)
            out_bstr(o, c->dlq_topic);
        else
            out_null(o);
        out_key(o, "max_deliveries");
        out_u64(o, c->max_deliveries);
    } else {
        out_null(o);
    }
    out_key(o, "partitions");
    out_array(o, g->n_parts);
    for (uint32_t i = 0; i < g->n_parts; i++) {
        const struct broker_group_partition *gp = &g->parts[i];
        out_map(o, stream ? 5 : 4);
        out_key(o, "partition");
        out_u64(o, gp->partition);
        out_key(o, stream ? "cursor" : "floor");
        out_u64(o, gp->position);
        out_key(o, "lag");
        out_u64(o, gp->lag);
        out_key(o, "lag_ms");
        out_u64(o, gp->lag_ms);
        if (stream) {
            out_key(o, "leased");
            out_bool(o, gp->leased);
        }
    }
}

enum hres api_op_group_list(struct req *r)
{
    struct broker_ns_ref ns;
    struct bstr topic;
    bool has_topic;
    if (req_ns(r, &ns) || req_str(r, r->body, "topic", false, &topic, &has_topic))
        return H_ERROR;
    struct broker_error e = {0};
    if (has_topic) { /* an empty name would mean "every topic" to the broker */
        struct broker_topic_ref ref;
        if (broker_parse_topic_ref(topic, "topic", &ref, &e))
            return req_broker_err(r, &e), H_ERROR;
    }
    const struct broker_group_info *list;
    size_t n;
    if (broker_group_list(r->b, ns, topic, &list, &n, &e))
        return req_broker_err(r, &e), H_ERROR;
    out_map(r->out, 1);
    out_key(r->out, "groups");
    out_array(r->out, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        put_group(r->out, &list[i]);
    return H_DONE;
}

enum hres api_op_group_get(struct req *r)
{
    struct broker_ns_ref ns;
    struct bstr topic, group;
    int mode = 0;
    if (req_ns(r, &ns) || req_str(r, r->body, "topic", true, &topic, NULL) ||
        req_enum(r, r->body, "mode", true, mode_names, 3, &mode, NULL) || req_group(r, &group))
        return H_ERROR;
    struct broker_group_info gi;
    struct broker_error e = {0};
    if (broker_group_get(r->b, ns, topic, (enum broker_mode)mode, group, &gi, &e))
        return req_broker_err(r, &e), H_ERROR;
    put_group(r->out, &gi);
    return H_DONE;
}

/* ---- test clock --------------------------------------------------------------------- */

enum hres api_op_clock_advance(struct req *r)
{
    uint64_t now = broker_now(r->b);
    uint64_t room = now < API_MAX_TIMESTAMP ? API_MAX_TIMESTAMP - now : 0;
    uint64_t ms;
    if (req_u64(r, r->body, "ms", true, room, &ms, NULL))
        return H_ERROR;
    if (broker_clock_advance(r->b, ms)) {
        struct broker_error e = {.status = 400, .code = "invalid_input"};
        snprintf(e.detail, sizeof e.detail, "The test clock is not enabled.");
        return req_broker_err(r, &e), H_ERROR;
    }
    out_map(r->out, 1);
    out_key(r->out, "now");
    out_u64(r->out, broker_now(r->b));
    return H_DONE;
}
