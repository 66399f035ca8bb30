/*
 * client_msgs.c — the typed operations of coyote.h: each encodes a
 * MessagePack request (API.md field names), runs it with client_call and
 * decodes the answer into the caller's structs.
 *
 * Invariants:
 *   1. Arguments are checked only for what the library itself needs (NULL
 *      pointers, counts, enum values: CY_EINVAL); every rule of API.md §2 is
 *      the broker's to enforce (CY_ESERVER with its code and detail), so both
 *      backends answer a bad request the same way.
 *   2. Optional fields are sent only when they carry something (a zero
 *      batch_size, lease or wait means "the default": the field is omitted).
 *   3. A response that lacks a field this library needs, or has one of the
 *      wrong type, is CY_EPROTOCOL; unknown fields are ignored.
 *   4. A cy_batch is one allocation, laid out as
 *        [cy_received x n][cy_header x all headers][bytes]
 *      where bytes holds every value, key, header name and header value,
 *      each followed by a NUL (so text values and keys can be used as C
 *      strings; value_len / key_len exclude it). cy_batch_free frees it.
 *      (A header value may carry a NUL byte on the wire; as a C string it
 *      then reads shorter — cy_header has no length.)
 *   5. cy_received has both msg_id ("p:o") and topic ("name~p") in every
 *      mode: stream answers carry the topic, queue/FIFO answers the msg_id;
 *      the other is derived (the topic from the requested name).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"

static const char *const mode_names[] = {"stream", "queue", "fifo"};

static bool valid_mode(cy_mode mode)
{
    return mode == CY_STREAM || mode == CY_QUEUE || mode == CY_FIFO;
}

/* "v1.msgs.<mode>.<verb>" */
static const char *mode_op(cy_mode mode, const char *verb, char *buf, size_t len)
{
    snprintf(buf, len, "v1.msgs.%s.%s", mode_names[mode], verb);
    return buf;
}

/* ---- reading responses ---------------------------------------------------------- */

static bool get_u64(const struct val *m, const char *key, uint64_t *out)
{
    const struct val *v = val_get(m, key);
    if (!v || v->type != VAL_UINT)
        return false;
    *out = v->u;
    return true;
}

/* An optional u64: absent or nil → *has = false. false on a wrong type. */
static bool get_opt_u64(const struct val *m, const char *key, bool *has, uint64_t *out)
{
    const struct val *v = val_get(m, key);
    *has = false;
    *out = 0;
    if (!v || v->type == VAL_NULL)
        return true;
    if (v->type != VAL_UINT)
        return false;
    *has = true;
    *out = v->u;
    return true;
}

/* Parse a decimal u64 from p[0..n) (no sign, no spaces, at least one digit). */
static bool parse_dec(const char *p, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* The partition of "<name>~<p>". */
static bool topic_partition(const char *p, size_t n, uint32_t *out)
{
    size_t i = n;
    while (i > 0 && p[i - 1] != '~')
        i--;
    uint64_t v;
    if (i == 0 || !parse_dec(p + i, n - i, &v) || v >= 64)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* "<p>:<o>" */
static bool parse_msg_id(const char *p, size_t n, uint32_t *part, uint64_t *off)
{
    const char *colon = memchr(p, ':', n);
    uint64_t pv;
    if (!colon || !parse_dec(p, (size_t)(colon - p), &pv) || pv >= 64 ||
        !parse_dec(colon + 1, n - (size_t)(colon - p) - 1, off))
        return false;
    *part = (uint32_t)pv;
    return true;
}

/* ---- publish ---------------------------------------------------------------------- */

static const uint8_t empty_bytes[1];

bool client_valid_message(const cy_message *m)
{
    if (!m->value && m->value_len)
        return false;
    if (!m->headers && m->n_headers)
        return false;
    if (m->n_headers > UINT32_MAX)
        return false;
    for (size_t i = 0; i < m->n_headers; i++)
        if (!m->headers[i].name || !m->headers[i].value)
            return false;
    return true;
}

static void write_message(struct out *o, const cy_message *m)
{
    bool has_key = m->key != NULL;
    out_map(o, 1 + (m->n_headers ? 1 : 0) + (has_key ? 1 : 0) + (m->has_delay ? 1 : 0));
    out_key(o, "value");
    out_bytes(o, m->value ? m->value : empty_bytes, m->value_len, VALUE_DEFAULT);
    if (m->n_headers) {
        out_key(o, "headers");
        out_map(o, (uint32_t)m->n_headers);
        for (size_t i = 0; i < m->n_headers; i++) {
            out_key(o, m->headers[i].name);
            out_cstr(o, m->headers[i].value);
        }
    }
    if (has_key) {
        out_key(o, "key");
        out_str(o, m->key, m->key_len ? m->key_len : strlen(m->key));
    }
    if (m->has_delay) {
        out_key(o, "delay_ms");
        out_u64(o, m->delay_ms);
    }
}

static int read_publish(const struct val *resp, cy_publish_result *r)
{
    const struct val *topics = val_get(resp, "topics");
    if (!topics || topics->type != VAL_ARRAY || topics->arr.n > 64)
        return CY_EPROTOCOL;
    memset(r, 0, sizeof *r);
    for (size_t i = 0; i < topics->arr.n; i++) {
        const struct val *t = &topics->arr.items[i];
        const struct val *name = val_get(t, "topic");
        cy_partition_offsets *p = &r->parts[i];
        if (!name || name->type != VAL_STR ||
            !topic_partition(name->s.p, name->s.n, &p->partition) ||
            !get_u64(t, "start_offset", &p->start_offset) || !get_u64(t, "offset", &p->end_offset))
            return CY_EPROTOCOL;
    }
    r->n = topics->arr.n;
    const struct val *dup = val_get(resp, "duplicate");
    r->duplicate = dup && dup->type == VAL_BOOL && dup->b;
    return 0;
}

int cy_publish(cy_client *c, const char *topic, const cy_message *msgs, size_t n,
               const char *idempotency_key, cy_publish_result *result)
{
    if (result)
        memset(result, 0, sizeof *result);
    if (!c || !topic || (n && !msgs) || n > UINT32_MAX)
        return CY_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!client_valid_message(&msgs[i]))
            return CY_EINVAL;

    struct out o;
    client_begin(c, &o, idempotency_key ? 3 : 2);
    out_key(&o, "topic");
    out_cstr(&o, topic);
    out_key(&o, "msgs");
    out_array(&o, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        write_message(&o, &msgs[i]);
    if (idempotency_key) {
        out_key(&o, "idempotency_key");
        out_cstr(&o, idempotency_key);
    }

    struct arena a;
    arena_init(&a);
    const struct val *resp;
    int rc = client_call(c, "v1.msgs.publish", &o, 0, &a, &resp);
    if (!rc) {
        cy_publish_result tmp;
        rc = read_publish(resp, result ? result : &tmp);
        if (rc && result)
            memset(result, 0, sizeof *result);
    }
    arena_free(&a);
    return rc;
}

/* ---- receive ------------------------------------------------------------------------ */

/* What one received message needs, checked in the first pass. */
struct msg_view {
    const struct val *value, *headers, *key;
};

/* Bytes of a value: bin, str, or an array of ints 0..255 (what a JSON-minded
 * server might send). *n = its length; false on any other type. */
static bool value_len(const struct val *v, size_t *n)
{
    if (v->type == VAL_BIN || v->type == VAL_STR) {
        *n = v->s.n;
        return true;
    }
    if (v->type != VAL_ARRAY)
        return false;
    for (size_t i = 0; i < v->arr.n; i++)
        if (v->arr.items[i].type != VAL_UINT || v->arr.items[i].u > 255)
            return false;
    *n = v->arr.n;
    return true;
}

static void value_copy(const struct val *v, uint8_t *dst)
{
    if (v->type == VAL_ARRAY) {
        for (size_t i = 0; i < v->arr.n; i++)
            dst[i] = (uint8_t)v->arr.items[i].u;
    } else if (v->s.n) {
        memcpy(dst, v->s.p, v->s.n);
    }
}

static bool add_size(size_t *total, size_t n)
{
    if (n > SIZE_MAX - *total)
        return false;
    *total += n;
    return true;
}

/* Copy p[0..n) and a NUL to *cursor; returns where it went. */
static char *put_str(char **cursor, const char *p, size_t n)
{
    char *s = *cursor;
    if (n)
        memcpy(s, p, n);
    s[n] = 0;
    *cursor += n + 1;
    return s;
}

/* The bare name of a requested topic ("name" or "name~p"). */
static size_t bare_len(const char *topic)
{
    const char *t = strrchr(topic, '~');
    return t ? (size_t)(t - topic) : strlen(topic);
}

static int read_batch(cy_mode mode, const char *topic, const struct val *resp, cy_batch *out)
{
    const struct val *list = val_get(resp, "msgs");
    if (!list || list->type != VAL_ARRAY)
        return CY_EPROTOCOL;
    size_t n = list->arr.n;
    if (n == 0)
        return 0;

    /* Pass 1: check every message and size the block (invariant 4). */
    size_t n_headers = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const struct val *m = &list->arr.items[i];
        if (m->type != VAL_MAP)
            return CY_EPROTOCOL;
        const struct val *v = val_get(m, "value"), *h = val_get(m, "headers"),
                         *k = val_get(m, "key");
        size_t vn;
        if (!v || !value_len(v, &vn) || !add_size(&bytes, vn) || !add_size(&bytes, 1))
            return CY_EPROTOCOL;
        if (h && h->type != VAL_NULL) {
            if (h->type != VAL_MAP)
                return CY_EPROTOCOL;
            n_headers += h->map.n;
            for (size_t j = 0; j < h->map.n; j++) {
                const struct val_kv *kv = &h->map.items[j];
                if (kv->v.type != VAL_STR || !add_size(&bytes, kv->key_len) ||
                    !add_size(&bytes, kv->v.s.n) || !add_size(&bytes, 2))
                    return CY_EPROTOCOL;
            }
        }
        if (k && k->type != VAL_NULL &&
            (k->type != VAL_STR || !add_size(&bytes, k->s.n) || !add_size(&bytes, 1)))
            return CY_EPROTOCOL;
    }
    size_t total = 0;
    if (n > SIZE_MAX / sizeof(cy_received) || !add_size(&total, n * sizeof(cy_received)) ||
        n_headers > SIZE_MAX / sizeof(cy_header) ||
        !add_size(&total, n_headers * sizeof(cy_header)) || !add_size(&total, bytes))
        return CY_ENOMEM;
    void *block = calloc(1, total);
    if (!block)
        return CY_ENOMEM;

    /* Pass 2: fill it. */
    cy_received *msgs = block;
    cy_header *hdrs = (cy_header *)(msgs + n);
    char *cursor = (char *)(hdrs + n_headers);
    size_t name_len = bare_len(topic);
    for (size_t i = 0; i < n; i++) {
        const struct val *m = &list->arr.items[i];
        cy_received *r = &msgs[i];
        if (mode == CY_STREAM) {
            const struct val *t = val_get(m, "topic");
            if (!t || t->type != VAL_STR || t->s.n >= sizeof r->topic ||
                !topic_partition(t->s.p, t->s.n, &r->partition) ||
                !get_u64(m, "offset", &r->offset))
                goto protocol;
            memcpy(r->topic, t->s.p, t->s.n);
            snprintf(r->msg_id, sizeof r->msg_id, "%" PRIu32 ":%" PRIu64, r->partition, r->offset);
        } else {
            const struct val *id = val_get(m, "msg_id");
            uint64_t attempt;
            if (!id || id->type != VAL_STR || id->s.n >= sizeof r->msg_id ||
                !parse_msg_id(id->s.p, id->s.n, &r->partition, &r->offset) ||
                !get_u64(m, "attempt", &attempt) || attempt > UINT32_MAX)
                goto protocol;
            memcpy(r->msg_id, id->s.p, id->s.n);
            r->attempt = (uint32_t)attempt;
            snprintf(r->topic, sizeof r->topic, "%.*s~%" PRIu32, (int)name_len, topic,
                     r->partition);
        }
        if (!get_u64(m, "timestamp", &r->timestamp) ||
            !get_opt_u64(m, "scheduled_at", &r->has_scheduled_at, &r->scheduled_at))
            goto protocol;

        const struct val *v = val_get(m, "value"), *h = val_get(m, "headers"),
                         *k = val_get(m, "key");
        size_t vn = 0;
        value_len(v, &vn);
        r->value = (const uint8_t *)cursor;
        r->value_len = vn;
        value_copy(v, (uint8_t *)cursor);
        cursor[vn] = 0;
        cursor += vn + 1;
        if (h && h->type == VAL_MAP && h->map.n) {
            r->headers = hdrs;
            r->n_headers = h->map.n;
            for (size_t j = 0; j < h->map.n; j++) {
                const struct val_kv *kv = &h->map.items[j];
                hdrs[j].name = put_str(&cursor, kv->key, kv->key_len);
                hdrs[j].value = put_str(&cursor, kv->v.s.p, kv->v.s.n);
            }
            hdrs += h->map.n;
        }
        if (k && k->type == VAL_STR) {
            r->key = put_str(&cursor, k->s.p, k->s.n);
            r->key_len = k->s.n;
        }
    }
    out->msgs = msgs;
    out->n = n;
    out->internal_ = block;
    return 0;

protocol:
    free(block);
    return CY_EPROTOCOL;
}

int cy_receive(cy_client *c, cy_mode mode, const char *topic, const char *group,
               const cy_receive_opts *opts, cy_batch *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!c || !topic || !group || !out || !valid_mode(mode))
        return CY_EINVAL;
    cy_receive_opts none;
    memset(&none, 0, sizeof none);
    if (!opts)
        opts = &none;
    bool earliest = mode == CY_STREAM && opts->start_earliest;

    struct out o;
    client_begin(c, &o,
                 2 + (opts->batch_size ? 1 : 0) + (opts->has_lease ? 1 : 0) + (earliest ? 1 : 0) +
                     (opts->batch_wait_ms ? 1 : 0));
    out_key(&o, "topic");
    out_cstr(&o, topic);
    out_key(&o, "consumer_group");
    out_cstr(&o, group);
    if (opts->batch_size) {
        out_key(&o, "batch_size");
        out_u64(&o, opts->batch_size);
    }
    if (opts->has_lease) {
        out_key(&o, "lease_duration_ms");
        out_u64(&o, opts->lease_ms);
    }
    if (earliest) {
        out_key(&o, "default_starting_position");
        out_cstr(&o, "earliest");
    }
    if (opts->batch_wait_ms) {
        out_key(&o, "batch_wait_ms");
        out_u64(&o, opts->batch_wait_ms);
    }

    char op[64];
    struct arena a;
    arena_init(&a);
    const struct val *resp;
    int rc =
        client_call(c, mode_op(mode, "receive", op, sizeof op), &o, opts->batch_wait_ms, &a, &resp);
    if (!rc)
        rc = read_batch(mode, topic, resp, out);
    arena_free(&a);
    return rc;
}

void cy_batch_free(cy_batch *b)
{
    if (!b)
        return;
    free(b->internal_);
    memset(b, 0, sizeof *b);
}

/* ---- queue / FIFO --------------------------------------------------------------------- */

/* An operation whose answer is {} (or anything else we do not read). */
static int call_ignoring_answer(cy_client *c, const char *op, struct out *o)
{
    struct arena a;
    arena_init(&a);
    const struct val *resp;
    int rc = client_call(c, op, o, 0, &a, &resp);
    arena_free(&a);
    return rc;
}

/* topic, consumer_group and msg_ids, plus `extra` more fields. */
static int begin_ids(cy_client *c, struct out *o, cy_mode mode, const char *topic,
                     const char *group, const char *const *ids, size_t n, uint32_t extra)
{
    if (!c || !topic || !group || (n && !ids) || n > UINT32_MAX || !valid_mode(mode) ||
        mode == CY_STREAM)
        return CY_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!ids[i])
            return CY_EINVAL;
    client_begin(c, o, 3 + extra);
    out_key(o, "topic");
    out_cstr(o, topic);
    out_key(o, "consumer_group");
    out_cstr(o, group);
    out_key(o, "msg_ids");
    out_array(o, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        out_cstr(o, ids[i]);
    return 0;
}

int cy_ack(cy_client *c, cy_mode mode, const char *topic, const char *group,
           const char *const *msg_ids, size_t n)
{
    struct out o;
    int rc = begin_ids(c, &o, mode, topic, group, msg_ids, n, 0);
    if (rc)
        return rc;
    char op[64];
    return call_ignoring_answer(c, mode_op(mode, "ack", op, sizeof op), &o);
}

int cy_nack(cy_client *c, cy_mode mode, const char *topic, const char *group,
            const char *const *msg_ids, size_t n, bool has_delay, uint64_t delay_ms)
{
    struct out o;
    int rc = begin_ids(c, &o, mode, topic, group, msg_ids, n, has_delay ? 1 : 0);
    if (rc)
        return rc;
    if (has_delay) {
        out_key(&o, "delay_ms");
        out_u64(&o, delay_ms);
    }
    char op[64];
    return call_ignoring_answer(c, mode_op(mode, "nack", op, sizeof op), &o);
}

/* A nack with the [ext] field "dead_letter": true: the broker dead-letters
 * at once, whatever retries the group's schedule has left (API.md §7). */
int cy_dead_letter(cy_client *c, cy_mode mode, const char *topic, const char *group,
                   const char *const *msg_ids, size_t n)
{
    struct out o;
    int rc = begin_ids(c, &o, mode, topic, group, msg_ids, n, 1);
    if (rc)
        return rc;
    out_key(&o, "dead_letter");
    out_bool(&o, true);
    char op[64];
    return call_ignoring_answer(c, mode_op(mode, "nack", op, sizeof op), &o);
}

/* The reason travels as the [ext] request field "reason" (≤ 1 KiB, checked
 * here: a longer one is CY_EINVAL rather than the broker's 422); NULL or ""
 * is a plain cy_dead_letter. */
#define DEAD_REASON_MAX 1024u
int cy_dead_letter_reason(cy_client *c, cy_mode mode, const char *topic, const char *group,
                          const char *const *msg_ids, size_t n, const char *reason)
{
    if (!reason || !*reason)
        return cy_dead_letter(c, mode, topic, group, msg_ids, n);
    if (strlen(reason) > DEAD_REASON_MAX)
        return CY_EINVAL;
    struct out o;
    int rc = begin_ids(c, &o, mode, topic, group, msg_ids, n, 2);
    if (rc)
        return rc;
    out_key(&o, "dead_letter");
    out_bool(&o, true);
    out_key(&o, "reason");
    out_cstr(&o, reason);
    char op[64];
    return call_ignoring_answer(c, mode_op(mode, "nack", op, sizeof op), &o);
}

/* lease_ms == 0: the broker's default (30000). */
int cy_extend(cy_client *c, cy_mode mode, const char *topic, const char *group,
              const char *const *msg_ids, size_t n, uint64_t lease_ms)
{
    struct out o;
    int rc = begin_ids(c, &o, mode, topic, group, msg_ids, n, lease_ms ? 1 : 0);
    if (rc)
        return rc;
    if (lease_ms) {
        out_key(&o, "lease_duration_ms");
        out_u64(&o, lease_ms);
    }
    char op[64];
    return call_ignoring_answer(c, mode_op(mode, "extend-lease", op, sizeof op), &o);
}

/* topic and consumer_group, plus `extra` more fields. */
static int begin_group(cy_client *c, struct out *o, const char *topic, const char *group,
                       uint32_t extra)
{
    if (!c || !topic || !group)
        return CY_EINVAL;
    client_begin(c, o, 2 + extra);
    out_key(o, "topic");
    out_cstr(o, topic);
    out_key(o, "consumer_group");
    out_cstr(o, group);
    return 0;
}

/* cfg == NULL: the empty configuration (no retries, no DLQ topic, unlimited
 * deliveries). max_deliveries is sent only when non-zero (0 is the
 * compatible default, so a compatible server sees the same request). */
int cy_queue_configure(cy_client *c, cy_mode mode, const char *topic, const char *group,
                       const cy_queue_config *cfg)
{
    cy_queue_config none;
    memset(&none, 0, sizeof none);
    if (!cfg)
        cfg = &none;
    size_t cap = sizeof cfg->retry_schedule / sizeof cfg->retry_schedule[0];
    if (!valid_mode(mode) || mode == CY_STREAM || cfg->retry_count > cap)
        return CY_EINVAL;
    struct out o;
    int rc = begin_group(c, &o, topic, group,
                         1 + (cfg->dlq_topic ? 1 : 0) + (cfg->max_deliveries ? 1 : 0));
    if (rc)
        return rc;
    out_key(&o, "retry_schedule");
    out_array(&o, cfg->retry_count);
    for (uint32_t i = 0; i < cfg->retry_count; i++)
        out_u64(&o, cfg->retry_schedule[i]);
    if (cfg->dlq_topic) {
        out_key(&o, "dlq_topic");
        out_cstr(&o, cfg->dlq_topic);
    }
    if (cfg->max_deliveries) {
        out_key(&o, "max_deliveries");
        out_u64(&o, cfg->max_deliveries);
    }
    char op[64];
    return call_ignoring_answer(c, mode_op(mode, "configure", op, sizeof op), &o);
}

int cy_redrive(cy_client *c, cy_mode mode, const char *topic, const char *group)
{
    if (!valid_mode(mode) || mode == CY_STREAM)
        return CY_EINVAL;
    struct out o;
    int rc = begin_group(c, &o, topic, group, 0);
    if (rc)
        return rc;
    char op[64];
    return call_ignoring_answer(c, mode_op(mode, "redrive-dlq", op, sizeof op), &o);
}

/* ---- stream ---------------------------------------------------------------------------- */

int cy_commit(cy_client *c, const char *topic_partition, const char *group, uint64_t offset)
{
    struct out o;
    int rc = begin_group(c, &o, topic_partition, group, 1);
    if (rc)
        return rc;
    out_key(&o, "offset");
    out_u64(&o, offset);
    return call_ignoring_answer(c, "v1.msgs.stream.commit", &o);
}

int cy_seek(cy_client *c, const char *topic, const char *group, cy_seek_kind kind, uint64_t value)
{
    if (kind != CY_SEEK_OFFSET && kind != CY_SEEK_EARLIEST && kind != CY_SEEK_LATEST &&
        kind != CY_SEEK_TIMESTAMP)
        return CY_EINVAL;
    struct out o;
    int rc = begin_group(c, &o, topic, group, 1);
    if (rc)
        return rc;
    switch (kind) {
    case CY_SEEK_OFFSET:
        out_key(&o, "offset");
        out_u64(&o, value);
        break;
    case CY_SEEK_EARLIEST:
    case CY_SEEK_LATEST:
        out_key(&o, "position");
        out_cstr(&o, kind == CY_SEEK_EARLIEST ? "earliest" : "latest");
        break;
    case CY_SEEK_TIMESTAMP:
        out_key(&o, "timestamp");
        out_u64(&o, value);
        break;
    }
    return call_ignoring_answer(c, "v1.msgs.stream.seek", &o);
}

/* ---- topics ------------------------------------------------------------------------------ */

int cy_topic_configure(cy_client *c, const char *topic, uint32_t partitions, uint32_t *out)
{
    if (out)
        *out = 0;
    if (!c || !topic)
        return CY_EINVAL;
    struct out o;
    client_begin(c, &o, 2);
    out_key(&o, "topic");
    out_cstr(&o, topic);
    out_key(&o, "partitions");
    out_u64(&o, partitions);
    struct arena a;
    arena_init(&a);
    const struct val *resp;
    int rc = client_call(c, "v1.msgs.topic.configure", &o, 0, &a, &resp);
    uint64_t p = 0;
    if (!rc && (!get_u64(resp, "partitions", &p) || p > UINT32_MAX))
        rc = CY_EPROTOCOL;
    if (!rc && out)
        *out = (uint32_t)p;
    arena_free(&a);
    return rc;
}
