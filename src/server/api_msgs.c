/*
 * api_msgs.c — the message operations of API.md §5–§9: publish, the three
 * receives (with long polling), stream commit and seek, and the queue / FIFO
 * ack, nack, extend-lease, configure and redrive-dlq.
 *
 * Request decisions (API.md leaves them open; docs/api.md repeats them):
 *   - `value`: JSON array of ints 0..255 or a string (its UTF-8 bytes);
 *     MessagePack bin, str or array of ints. Anything else is 422 at the
 *     field or at the offending element ("msgs[0].value[2]"). `value` is
 *     required (null counts as absent).
 *   - `headers`: a map of string → string; a non-string value is 422 at
 *     "msgs[i].headers.<name>"; a name containing a NUL byte is 422.
 *   - `key` and its alias `group_key`: either may be given; both with the
 *     same value is accepted, both with different values is 422 at
 *     "msgs[i].group_key". A key must be a string.
 *   - batch_size: 1..65535 else 422; the broker caps it at its maximum
 *     (1000 by default) without an error.
 *   - batch_wait_ms: 0..3600000 (1 h) else 422; 0 or absent answers at once.
 *   - value_encoding (receives): "utf8" | "base64", else 422.
 *   - seek: offset, position and timestamp are counted when present and not
 *     null; "not exactly one" is the broker's 400. position must be
 *     "earliest" | "latest" (422); timestamp <= 253402207200998 (422).
 *   - queue/FIFO configure: retry_schedule has at most 100 entries (422
 *     before the broker's own, possibly lower, limit); max_deliveries fits
 *     in 32 bits (422).
 *
 * Long polling (API.md §9, the API_POLL protocol of api.h). A receive with
 * batch_wait_ms > 0 that is not final:
 *   1. first attempt: deadline_ms = now_mono_ms + batch_wait_ms;
 *   2. until the deadline, if broker_available() < the batch it wants
 *      (batch_size, default 10, at most the broker's default maximum 1000),
 *      answer API_POLL with wake_ms at the broker's next wakeup (lease expiry,
 *      retry, delay) translated to the monotonic clock;
 *   3. otherwise (or when final / past the deadline) receive and answer,
 *      possibly with an empty list.
 * On the first attempt, when nothing at all is available, the receive runs
 * once before waiting: it validates everything the broker checks (namespace,
 * group name, lease bounds, partition range), answers errors such as
 * no_available_leases at once instead of after the wait, creates the topic,
 * and fixes a new stream group's starting point now — so a "latest" group
 * sees what is published during its wait. (Its durability wait, if any, is
 * kept in call->wait for the final answer.) When some but not enough
 * messages are available, only the group name is checked up front; the
 * lease bounds are then checked when the receive runs.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "server/api_int.h"

/* ---- publish ------------------------------------------------------------------ */

static int decode_bytes(struct req *r, const struct val *v, const char *loc, const uint8_t **p,
                        size_t *n)
{
    switch (v->type) {
    case VAL_STR:
    case VAL_BIN:
        *p = (const uint8_t *)v->s.p;
        *n = v->s.n;
        return 0;
    case VAL_ARRAY: {
        uint8_t *bytes = arena_alloc(&r->arena, v->arr.n ? v->arr.n : 1);
        if (!bytes)
            return req_oom(r);
        for (size_t i = 0; i < v->arr.n; i++) {
            const struct val *e = &v->arr.items[i];
            if (e->type != VAL_UINT || e->u > 255) {
                char at[128];
                snprintf(at, sizeof at, "%.60s[%zu]", loc, i);
                return req_bad(r, at, "'%s' must be an integer between 0 and 255.", at);
            }
            bytes[i] = (uint8_t)e->u;
        }
        *p = bytes;
        *n = v->arr.n;
        return 0;
    }
    default:
        return req_bad(r, loc, "'%s' must be an array of integers 0..255 or a string, not %s.", loc,
                       req_type_name(v->type));
    }
}

static int decode_headers(struct req *r, const struct val *v, const char *loc,
                          struct broker_msg_in *m)
{
    if (v->type != VAL_MAP)
        return req_bad(r, loc, "'%s' must be an object of strings, not %s.", loc,
                       req_type_name(v->type));
    struct broker_header *h = arena_alloc(&r->arena, (v->map.n ? v->map.n : 1) * sizeof *h);
    if (!h)
        return req_oom(r);
    for (size_t i = 0; i < v->map.n; i++) {
        const struct val_kv *kv = &v->map.items[i];
        char at[128];
        snprintf(at, sizeof at, "%.60s.%.*s", loc, (int)(kv->key_len < 32 ? kv->key_len : 32),
                 kv->key);
        if (memchr(kv->key, 0, kv->key_len))
            return req_bad(r, loc, "Header names must not contain NUL bytes.");
        if (kv->v.type != VAL_STR)
            return req_bad(r, at, "Header values must be strings; '%s' is %s.", at,
                           req_type_name(kv->v.type));
        h[i].name = (struct bstr){kv->key, kv->key_len};
        h[i].value = (struct bstr){kv->v.s.p, kv->v.s.n};
    }
    m->headers = h;
    m->n_headers = v->map.n;
    return 0;
}

/* "msgs[<i>]<suffix>" into loc (64 bytes). Every message of a publish needs
 * two or three of these whether or not it is bad: no printf machinery. */
static const char *msg_loc(char *loc, size_t i, const char *suffix)
{
    memcpy(loc, "msgs[", 5);
    size_t k = 5 + codec_u64_dec(loc + 5, i);
    loc[k++] = ']';
    size_t sl = strlen(suffix);
    if (sl > 64 - 1 - k)
        sl = 64 - 1 - k;
    memcpy(loc + k, suffix, sl);
    loc[k + sl] = '\0';
    return loc;
}

static int decode_msg(struct req *r, const struct val *v, size_t i, struct broker_msg_in *m)
{
    char loc[64];
    memset(m, 0, sizeof *m);
    msg_loc(loc, i, "");
    if (v->type != VAL_MAP)
        return req_bad(r, loc, "'%s' must be an object, not %s.", loc, req_type_name(v->type));

    const struct val *f = req_field(v, "value");
    msg_loc(loc, i, ".value");
    if (!f)
        return req_bad(r, loc, "'%s' is required.", loc);
    if (decode_bytes(r, f, loc, &m->value, &m->value_len))
        return -1;

    if ((f = req_field(v, "headers"))) {
        msg_loc(loc, i, ".headers");
        if (decode_headers(r, f, loc, m))
            return -1;
    }

    /* key, or its alias group_key: both given must agree. */
    const struct val *key = req_field(v, "key"), *gkey = req_field(v, "group_key");
    if (key) {
        msg_loc(loc, i, ".key");
        if (req_str_at(r, key, loc, &m->key))
            return -1;
        m->has_key = true;
    }
    if (gkey) {
        struct bstr g;
        msg_loc(loc, i, ".group_key");
        if (req_str_at(r, gkey, loc, &g))
            return -1;
        if (m->has_key && (g.n != m->key.n || memcmp(g.p, m->key.p, g.n) != 0))
            return req_bad(r, loc,
                           "'key' and its alias 'group_key' were both given, with "
                           "different values.");
        m->key = g;
        m->has_key = true;
    }

    if ((f = req_field(v, "delay_ms"))) {
        msg_loc(loc, i, ".delay_ms");
        if (req_u64_at(r, f, loc, UINT64_MAX, &m->delay_ms)) /* the broker bounds it */
            return -1;
        m->has_delay = true;
    }
    return 0;
}

enum hres api_op_publish(struct req *r)
{
    struct broker_publish_req q;
    memset(&q, 0, sizeof q);
    if (req_ns(r, &q.ns) || req_topic_ref(r, "topic", &q.topic))
        return H_ERROR;
    const struct val *msgs = req_field(r->body, "msgs");
    if (!msgs)
        return req_bad(r, "msgs", "'msgs' is required."), H_ERROR;
    if (msgs->type != VAL_ARRAY)
        return req_bad(r, "msgs", "'msgs' must be an array, not %s.", req_type_name(msgs->type)),
               H_ERROR;
    struct broker_msg_in *in = arena_alloc(&r->arena, (msgs->arr.n ? msgs->arr.n : 1) * sizeof *in);
    if (!in)
        return req_oom(r), H_ERROR;
    for (size_t i = 0; i < msgs->arr.n; i++)
        if (decode_msg(r, &msgs->arr.items[i], i, &in[i]))
            return H_ERROR;
    q.msgs = in;
    q.n_msgs = msgs->arr.n;
    if (req_str(r, r->body, "idempotency_key", false, &q.idempotency_key, &q.has_idempotency_key))
        return H_ERROR;

    struct broker_publish_res res;
    struct broker_wait w = {0};
    struct broker_error e = {0};
    if (broker_publish(r->b, &q, &res, &w, &e))
        return req_broker_err(r, &e), H_ERROR;
    r->call->wait = w;
    r->ctx->stats.publish_calls++;
    if (res.duplicate)
        r->ctx->stats.duplicates++;
    else {
        r->ctx->stats.published += q.n_msgs;
        for (size_t i = 0; i < q.n_msgs; i++)
            r->ctx->stats.published_bytes += q.msgs[i].value_len;
    }

    /* "duplicate" is sent only when true: compatible servers never send it. */
    struct out *o = r->out;
    out_map(o, res.duplicate ? 2 : 1);
    out_key(o, "topics");
    out_array(o, res.n_parts);
    for (uint32_t i = 0; i < res.n_parts; i++) {
        const struct broker_publish_part *pp = &res.parts[i];
        out_map(o, 3);
        out_key(o, "topic");
        out_part_topic(o, res.topic.n ? res.topic : q.topic.name, pp->partition);
        out_key(o, "start_offset");
        out_u64(o, pp->start_offset);
        out_key(o, "offset");
        out_u64(o, pp->offset);
    }
    if (res.duplicate) {
        out_key(o, "duplicate");
        out_bool(o, true);
    }
    return H_DONE;
}

/* ---- receives ------------------------------------------------------------------ */

struct recv_args {
    struct broker_receive_req q;
    uint32_t want;    /* the batch a long poll waits to fill */
    uint64_t wait_ms; /* batch_wait_ms */
    enum value_encoding enc;
};

static int decode_receive(struct req *r, enum broker_mode mode, struct recv_args *a)
{
    static const char *const positions[] = {"earliest", "latest"};
    static const char *const encodings[] = {"utf8", "base64"};
    struct broker_limits lim = r->ctx->limits;
    if (!lim.max_batch)
        broker_limits_default(&lim);
    memset(a, 0, sizeof *a);
    if (req_ns(r, &a->q.ns) || req_topic_ref(r, "topic", &a->q.topic) || req_group(r, &a->q.group))
        return -1;
    uint64_t v;
    bool has;
    if (req_u64(r, r->body, "batch_size", false, UINT64_MAX, &v, &has))
        return -1;
    if (has && (v < 1 || v > API_MAX_BATCH_SIZE))
        return req_bad(r, "batch_size", "'batch_size' must be between 1 and %u.",
                       API_MAX_BATCH_SIZE);
    a->q.batch_size = has ? (uint32_t)v : 0;
    a->want = has ? (uint32_t)v : API_DEFAULT_BATCH;
    if (a->want > lim.max_batch)
        a->want = lim.max_batch;
    /* The broker checks the lease bounds (1 ms .. its maximum). */
    if (req_u64(r, r->body, "lease_duration_ms", false, UINT64_MAX, &a->q.lease_ms,
                &a->q.has_lease))
        return -1;
    if (mode == BROKER_STREAM) {
        int pos = 1; /* latest */
        if (req_enum(r, r->body, "default_starting_position", false, positions, 2, &pos, NULL))
            return -1;
        a->q.start_earliest = pos == 0;
    }
    if (req_u64(r, r->body, "batch_wait_ms", false, lim.max_batch_wait_ms, &a->wait_ms, NULL))
        return -1;
    int enc = -1;
    if (req_enum(r, r->body, "value_encoding", false, encodings, 2, &enc, NULL))
        return -1;
    a->enc = enc == 0 ? VALUE_UTF8 : enc == 1 ? VALUE_BASE64 : VALUE_DEFAULT;
    return 0;
}

static int run_receive(struct req *r, enum broker_mode mode, const struct recv_args *a,
                       struct broker_receive_res *res)
{
    struct broker_wait w = {0};
    struct broker_error e = {0};
    int rc = mode == BROKER_STREAM ? broker_stream_receive(r->b, &a->q, res, &w, &e)
                                   : broker_queue_receive(r->b, mode, &a->q, res, &w, &e);
    if (rc)
        return req_broker_err(r, &e);
    if (w.ns) /* else keep what an earlier attempt had to wait for */
        r->call->wait = w;
    r->ctx->stats.received += res->n;
    for (size_t i = 0; i < res->n; i++)
        r->ctx->stats.received_bytes += res->msgs[i].value_len;
    return 0;
}

static void write_msgs(struct req *r, enum broker_mode mode, const struct recv_args *a,
                       const struct broker_receive_res *res)
{
    struct out *o = r->out;
    out_map(o, 1);
    out_key(o, "msgs");
    out_array(o, (uint32_t)res->n);
    for (size_t i = 0; i < res->n; i++) {
        const struct broker_msg_out *m = &res->msgs[i];
        out_map(o, 7);
        if (mode == BROKER_STREAM) {
            out_key(o, "offset");
            out_u64(o, m->offset);
            out_key(o, "topic");
            out_part_topic(o, a->q.topic.name, m->partition);
        } else {
            char id[48];
            size_t k = codec_u64_dec(id, m->partition);
            id[k++] = ':';
            k += codec_u64_dec(id + k, m->offset);
            out_key(o, "msg_id");
            out_str(o, id, k);
        }
        out_key(o, "value");
        out_bytes(o, m->value, m->value_len, a->enc);
        out_key(o, "headers");
        out_headers(r, m->headers, m->n_headers);
        out_key(o, "timestamp");
        out_u64(o, m->timestamp);
        out_key(o, "scheduled_at");
        out_opt_u64(o, m->has_scheduled_at, m->scheduled_at);
        out_key(o, "key");
        if (m->has_key)
            out_bstr(o, m->key);
        else
            out_null(o);
        if (mode != BROKER_STREAM) {
            out_key(o, "attempt");
            out_u64(o, m->attempt);
        }
    }
}

/* The monotonic time at which the broker's next_wakeup (broker clock) comes. */
static uint64_t wake_time(struct req *r, uint64_t next)
{
    const struct api_call *c = r->call;
    if (next == UINT64_MAX)
        return UINT64_MAX;
    uint64_t now = broker_now(r->b);
    uint64_t d = next > now ? next - now : 1; /* never a busy loop */
    uint64_t w = d > UINT64_MAX - c->now_mono_ms ? UINT64_MAX : c->now_mono_ms + d;
    return w > c->deadline_ms ? c->deadline_ms : w;
}

static enum hres receive(struct req *r, enum broker_mode mode)
{
    struct recv_args a;
    if (decode_receive(r, mode, &a))
        return H_ERROR;
    struct api_call *c = r->call;
    struct broker_receive_res res;
    if (a.wait_ms > 0 && !c->final) {
        bool first = c->deadline_ms == 0;
        if (first)
            c->deadline_ms = c->now_mono_ms + a.wait_ms; /* >= 1: never "unset" again */
        if (c->now_mono_ms < c->deadline_ms) {
            uint64_t next;
            uint32_t avail = broker_available(r->b, mode, &a.q, a.want, &next);
            if (first && avail == 0) {
                if (run_receive(r, mode, &a, &res))
                    return H_ERROR;
                if (res.n > 0) {
                    write_msgs(r, mode, &a, &res);
                    return H_DONE;
                }
                avail = broker_available(r->b, mode, &a.q, a.want, &next);
            } else if (first) {
                struct broker_error e = {0};
                if (broker_check_group_name(a.q.group, "consumer_group", &e))
                    return req_broker_err(r, &e), H_ERROR;
            }
            if (avail < a.want) {
                c->wake_ms = wake_time(r, next);
                broker_watch_init(r->b, &a.q, &c->watch);
                c->poll_empty = avail == 0 && mode != BROKER_STREAM;
                c->poll_mode = mode;
                c->poll_req = a.q;
                return H_POLL;
            }
        }
    }
    if (run_receive(r, mode, &a, &res))
        return H_ERROR;
    write_msgs(r, mode, &a, &res);
    return H_DONE;
}

enum hres api_op_stream_receive(struct req *r)
{
    return receive(r, BROKER_STREAM);
}

enum hres api_op_queue_receive(struct req *r, enum broker_mode mode)
{
    return receive(r, mode);
}

/* ---- stream commit / seek --------------------------------------------------------- */

enum hres api_op_stream_commit(struct req *r)
{
    struct broker_commit_req q;
    memset(&q, 0, sizeof q);
    if (req_ns(r, &q.ns) || req_topic_ref(r, "topic", &q.topic) || req_group(r, &q.group) ||
        req_u64(r, r->body, "offset", true, UINT64_MAX, &q.offset, NULL))
        return H_ERROR;
    struct broker_wait w = {0};
    struct broker_error e = {0};
    if (broker_stream_commit(r->b, &q, &w, &e))
        return req_broker_err(r, &e), H_ERROR;
    r->call->wait = w;
    r->ctx->stats.committed++;
    out_empty(r->out);
    return H_DONE;
}

enum hres api_op_stream_seek(struct req *r)
{
    static const char *const positions[] = {"earliest", "latest"};
    struct broker_seek_req q;
    memset(&q, 0, sizeof q);
    if (req_ns(r, &q.ns) || req_topic_ref(r, "topic", &q.topic) || req_group(r, &q.group))
        return H_ERROR;
    uint64_t offset, ts;
    bool has_offset, has_pos, has_ts;
    int pos = 0;
    if (req_u64(r, r->body, "offset", false, UINT64_MAX, &offset, &has_offset) ||
        req_enum(r, r->body, "position", false, positions, 2, &pos, &has_pos) ||
        req_u64(r, r->body, "timestamp", false, API_MAX_TIMESTAMP, &ts, &has_ts))
        return H_ERROR;
    q.n_targets = (int)has_offset + (int)has_pos + (int)has_ts;
    if (has_offset) {
        q.kind = SEEK_OFFSET;
        q.value = offset;
    } else if (has_pos) {
        q.kind = pos == 0 ? SEEK_EARLIEST : SEEK_LATEST;
    } else {
        q.kind = SEEK_TIMESTAMP;
        q.value = ts;
    }
    struct broker_wait w = {0};
    struct broker_error e = {0};
    if (broker_stream_seek(r->b, &q, &w, &e))
        return req_broker_err(r, &e), H_ERROR;
    r->call->wait = w;
    out_empty(r->out);
    return H_DONE;
}

/* ---- queue / FIFO ---------------------------------------------------------------- */

/* namespace, topic (bare or topic~p: the broker parses it), consumer_group. */
static int decode_group_req(struct req *r, struct broker_ns_ref *ns, struct bstr *topic,
                            struct bstr *group)
{
    if (req_ns(r, ns) || req_str(r, r->body, "topic", true, topic, NULL) || req_group(r, group))
        return -1;
    return 0;
}

static int decode_ids(struct req *r, struct broker_ids_req *q)
{
    memset(q, 0, sizeof *q);
    if (decode_group_req(r, &q->ns, &q->topic, &q->group))
        return -1;
    const struct val *ids = req_field(r->body, "msg_ids");
    if (!ids)
        return req_bad(r, "msg_ids", "'msg_ids' is required.");
    if (ids->type != VAL_ARRAY)
        return req_bad(r, "msg_ids", "'msg_ids' must be an array of strings, not %s.",
                       req_type_name(ids->type));
    struct broker_msg_id *out = arena_alloc(&r->arena, (ids->arr.n ? ids->arr.n : 1) * sizeof *out);
    if (!out)
        return req_oom(r);
    for (size_t i = 0; i < ids->arr.n; i++) {
        char loc[64];
        struct bstr s;
        snprintf(loc, sizeof loc, "msg_ids[%zu]", i);
        if (req_str_at(r, &ids->arr.items[i], loc, &s))
            return -1;
        struct broker_error e = {0};
        if (broker_parse_msg_id(s, loc, &out[i], &e))
            return req_broker_err(r, &e);
    }
    q->ids = out;
    q->n_ids = ids->arr.n;
    return 0;
}

enum hres api_op_queue_ack(struct req *r, enum broker_mode mode)
{
    struct broker_ids_req q;
    if (decode_ids(r, &q))
        return H_ERROR;
    struct broker_wait w = {0};
    struct broker_error e = {0};
    if (broker_queue_ack(r->b, mode, &q, &w, &e))
        return req_broker_err(r, &e), H_ERROR;
    r->call->wait = w;
    r->ctx->stats.acked += q.n_ids;
    out_empty(r->out);
    return H_DONE;
}

enum hres api_op_queue_nack(struct req *r, enum broker_mode mode)
{
    struct broker_ids_req q;
    if (decode_ids(r, &q) ||
        req_u64(r, r->body, "delay_ms", false, UINT64_MAX, &q.delay_ms, &q.has_delay))
        return H_ERROR;
    /* [ext] "dead_letter": true dead-letters at once (a permanent failure),
     * whatever retries the group's schedule has left. */
    const struct val *dl = req_field(r->body, "dead_letter");
    if (dl && dl->type != VAL_NULL) {
        if (dl->type != VAL_BOOL)
            return req_bad(r, "dead_letter", "'dead_letter' must be a boolean."), H_ERROR;
        q.dead_letter = dl->b;
    }
    /* [ext] "reason": dead-letter copies of this call carry it in the header
     * coyote-dead-letter-reason. */
    const struct val *why = req_field(r->body, "reason");
    if (why && why->type != VAL_NULL) {
        if (why->type != VAL_STR || why->s.n > 1024)
            return req_bad(r, "reason", "'reason' must be a string of at most 1024 bytes."),
                   H_ERROR;
        q.has_reason = why->s.n > 0;
        q.reason = (struct bstr){why->s.p, why->s.n};
    }
    struct broker_wait w = {0};
    struct broker_error e = {0};
    if (broker_queue_nack(r->b, mode, &q, &w, &e))
        return req_broker_err(r, &e), H_ERROR;
    r->call->wait = w;
    r->ctx->stats.nacked += q.n_ids;
    out_empty(r->out);
    return H_DONE;
}

enum hres api_op_queue_extend(struct req *r, enum broker_mode mode)
{
    struct broker_ids_req q;
    if (decode_ids(r, &q) ||
        req_u64(r, r->body, "lease_duration_ms", false, UINT64_MAX, &q.lease_ms, &q.has_lease))
        return H_ERROR;
    struct broker_wait w = {0};
    struct broker_error e = {0};
    if (broker_queue_extend(r->b, mode, &q, &w, &e))
        return req_broker_err(r, &e), H_ERROR;
    r->call->wait = w;
    out_empty(r->out);
    return H_DONE;
}

enum hres api_op_queue_configure(struct req *r, enum broker_mode mode)
{
    struct broker_group_req q;
    struct broker_queue_config cfg, res;
    memset(&q, 0, sizeof q);
    memset(&cfg, 0, sizeof cfg);
    if (decode_group_req(r, &q.ns, &q.topic, &q.group))
        return H_ERROR;
    const struct val *rs = req_field(r->body, "retry_schedule");
    if (rs) {
        size_t cap = sizeof cfg.retry_schedule / sizeof cfg.retry_schedule[0];
        if (rs->type != VAL_ARRAY)
            return req_bad(r, "retry_schedule",
                           "'retry_schedule' must be an array of integers, not %s.",
                           req_type_name(rs->type)),
                   H_ERROR;
        if (rs->arr.n > cap)
            return req_bad(r, "retry_schedule", "retry_schedule has at most %zu entries.", cap),
                   H_ERROR;
        for (size_t i = 0; i < rs->arr.n; i++) {
            char loc[64];
            snprintf(loc, sizeof loc, "retry_schedule[%zu]", i);
            if (req_u64_at(r, &rs->arr.items[i], loc, UINT64_MAX, &cfg.retry_schedule[i]))
                return H_ERROR;
        }
        cfg.retry_count = (uint32_t)rs->arr.n;
    }
    uint64_t maxd;
    if (req_str(r, r->body, "dlq_topic", false, &cfg.dlq_topic, &cfg.has_dlq_topic) ||
        req_u64(r, r->body, "max_deliveries", false, UINT32_MAX, &maxd, NULL))
        return H_ERROR;
    cfg.max_deliveries = (uint32_t)maxd;
    struct broker_wait w = {0};
    struct broker_error e = {0};
    if (broker_queue_configure(r->b, mode, &q, &cfg, &res, &w, &e))
        return req_broker_err(r, &e), H_ERROR;
    r->call->wait = w;

    struct out *o = r->out;
    out_map(o, 3);
    out_key(o, "retry_schedule");
    out_array(o, res.retry_count);
    for (uint32_t i = 0; i < res.retry_count; i++)
        out_u64(o, res.retry_schedule[i]);
    out_key(o, "dlq_topic");
    if (res.has_dlq_topic)
        out_bstr(o, res.dlq_topic);
    else
        out_null(o);
    out_key(o, "max_deliveries");
    out_u64(o, res.max_deliveries);
    return H_DONE;
}

enum hres api_op_queue_redrive(struct req *r, enum broker_mode mode)
{
    struct broker_group_req q;
    memset(&q, 0, sizeof q);
    if (decode_group_req(r, &q.ns, &q.topic, &q.group))
        return H_ERROR;
    struct broker_wait w = {0};
    struct broker_error e = {0};
    if (broker_queue_redrive(r->b, mode, &q, &w, &e))
        return req_broker_err(r, &e), H_ERROR;
    r->call->wait = w;
    out_empty(r->out);
    return H_DONE;
}
