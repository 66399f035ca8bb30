/*
 * api.c — the operations of API.md between the HTTP layer and the broker:
 * dispatch by op id, the field decoding rules of API.md §1–§2, error bodies,
 * and small response writers shared by api_msgs.c and api_admin.c.
 *
 * Invariants:
 *   1. A rejected request changes nothing: every field is decoded and
 *      checked before the one broker call of an operation, and the broker
 *      itself validates before it journals (broker.h).
 *   2. Absent and null are the same for every optional field (API.md §1);
 *      unknown fields are ignored.
 *   3. Integers are VAL_UINT (JSON non-negative integers, MessagePack
 *      positive ints); negative numbers, floats and strings are 422.
 *   4. Each attempt that responds gets a fresh call->out; an attempt that
 *      polls writes nothing.
 *   5. stats.requests and the error counters count responses, not attempts.
 *
 * Decisions API.md leaves open (docs/api.md repeats them):
 *   - an unknown op id (and v1.test.clock.advance without --test-clock) is
 *     404 {"code": "not_found"};
 *   - a body that is not an object / map is 422 invalid_data, no location;
 *   - a missing required field is 422 invalid_data at that field ("'x' is
 *     required."), like a field of the wrong type.
 * Request and response details are listed in api_msgs.c and api_admin.c.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "server/api_int.h"

/* ---- the operations -------------------------------------------------------- */

struct op {
    const char *name;
    enum hres (*fn)(struct req *r);
    enum hres (*mode_fn)(struct req *r, enum broker_mode mode);
    enum broker_mode mode;
    bool test_clock_only;
};

static const struct op ops[] = {
    {"v1.msgs.namespace.configure", api_op_ns_configure, NULL, BROKER_STREAM, false},
    {"v1.msgs.namespace.get", api_op_ns_get, NULL, BROKER_STREAM, false},
    {"v1.msgs.namespace.list", api_op_ns_list, NULL, BROKER_STREAM, false},
    {"v1.msgs.topic.configure", api_op_topic_configure, NULL, BROKER_STREAM, false},
    {"v1.msgs.topic.get", api_op_topic_get, NULL, BROKER_STREAM, false},
    {"v1.msgs.topic.list", api_op_topic_list, NULL, BROKER_STREAM, false},
    {"v1.msgs.topic.trim", api_op_topic_trim, NULL, BROKER_STREAM, false},
    {"v1.msgs.publish", api_op_publish, NULL, BROKER_STREAM, false},
    {"v1.msgs.stream.receive", api_op_stream_receive, NULL, BROKER_STREAM, false},
    {"v1.msgs.stream.commit", api_op_stream_commit, NULL, BROKER_STREAM, false},
    {"v1.msgs.stream.seek", api_op_stream_seek, NULL, BROKER_STREAM, false},
    {"v1.msgs.queue.receive", NULL, api_op_queue_receive, BROKER_QUEUE, false},
    {"v1.msgs.queue.ack", NULL, api_op_queue_ack, BROKER_QUEUE, false},
    {"v1.msgs.queue.nack", NULL, api_op_queue_nack, BROKER_QUEUE, false},
    {"v1.msgs.queue.extend-lease", NULL, api_op_queue_extend, BROKER_QUEUE, false},
    {"v1.msgs.queue.configure", NULL, api_op_queue_configure, BROKER_QUEUE, false},
    {"v1.msgs.queue.redrive-dlq", NULL, api_op_queue_redrive, BROKER_QUEUE, false},
    {"v1.msgs.fifo.receive", NULL, api_op_queue_receive, BROKER_FIFO, false},
    {"v1.msgs.fifo.ack", NULL, api_op_queue_ack, BROKER_FIFO, false},
    {"v1.msgs.fifo.nack", NULL, api_op_queue_nack, BROKER_FIFO, false},
    {"v1.msgs.fifo.extend-lease", NULL, api_op_queue_extend, BROKER_FIFO, false},
    {"v1.msgs.fifo.configure", NULL, api_op_queue_configure, BROKER_FIFO, false},
    {"v1.msgs.fifo.redrive-dlq", NULL, api_op_queue_redrive, BROKER_FIFO, false},
    {"v1.msgs.group.list", api_op_group_list, NULL, BROKER_STREAM, false},
    {"v1.msgs.group.get", api_op_group_get, NULL, BROKER_STREAM, false},
    {"v1.test.clock.advance", api_op_clock_advance, NULL, BROKER_STREAM, true},
};

static const struct op *find_op(const struct api_ctx *ctx, const char *name, size_t len)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        const struct op *op = &ops[i];
        if (strlen(op->name) == len && memcmp(op->name, name, len) == 0)
            return op->test_clock_only && !ctx->test_clock ? NULL : op;
    }
    return NULL;
}

bool api_known_op(const struct api_ctx *ctx, const char *op, size_t len)
{
    return find_op(ctx, op, len) != NULL;
}

static bool is_receive(const struct op *op)
{
    return op->fn == api_op_stream_receive || op->mode_fn == api_op_queue_receive;
}

/* ---- errors ------------------------------------------------------------------ */

void api_error_body(struct out *out, const char *code, const char *detail, const char *location)
{
    bool has_loc = location && location[0];
    out_map(out, has_loc ? 3 : 2);
    out_key(out, "code");
    out_cstr(out, code);
    out_key(out, "detail");
    out_cstr(out, detail);
    if (has_loc) {
        out_key(out, "location");
        out_cstr(out, location);
    }
}

static void set_err(struct broker_error *e, int status, const char *code, const char *loc,
                    const char *detail)
{
    e->status = status;
    e->code = code;
    snprintf(e->detail, sizeof e->detail, "%s", detail);
    snprintf(e->location, sizeof e->location, "%s", loc ? loc : "");
}

int req_bad(struct req *r, const char *loc, const char *fmt, ...)
{
    r->err.status = 422;
    r->err.code = "invalid_data";
    snprintf(r->err.location, sizeof r->err.location, "%s", loc ? loc : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err.detail, sizeof r->err.detail, fmt, ap);
    va_end(ap);
    return -1;
}

int req_oom(struct req *r)
{
    set_err(&r->err, 500, "internal_error", NULL, "Internal error: out of memory.");
    return -1;
}

int req_broker_err(struct req *r, const struct broker_error *e)
{
    r->err = *e;
    if (!r->err.code) { /* a broker function that failed without saying why */
        set_err(&r->err, 500, "internal_error", NULL, "Internal error in the broker.");
    }
    return -1;
}

/* ---- decoding ------------------------------------------------------------------ */

const struct val *req_field(const struct val *m, const char *key)
{
    const struct val *v = val_get(m, key);
    return v && v->type != VAL_NULL ? v : NULL;
}

const char *req_type_name(enum val_type t)
{
    switch (t) {
    case VAL_NULL: return "null";
    case VAL_BOOL: return "a boolean";
    case VAL_INT: return "a negative integer";
    case VAL_UINT: return "an integer";
    case VAL_FLOAT: return "a floating-point number";
    case VAL_STR: return "a string";
    case VAL_BIN: return "binary data";
    case VAL_ARRAY: return "an array";
    case VAL_MAP: return "an object";
    }
    return "a value of unknown type";
}

int req_str_at(struct req *r, const struct val *v, const char *loc, struct bstr *out)
{
    if (v->type != VAL_STR)
        return req_bad(r, loc, "'%s' must be a string, not %s.", loc, req_type_name(v->type));
    out->p = v->s.p;
    out->n = v->s.n;
    return 0;
}

int req_str(struct req *r, const struct val *m, const char *key, bool required, struct bstr *out,
            bool *has)
{
    const struct val *v = req_field(m, key);
    if (has)
        *has = v != NULL;
    if (!v) {
        out->p = "";
        out->n = 0;
        return required ? req_bad(r, key, "'%s' is required.", key) : 0;
    }
    return req_str_at(r, v, key, out);
}

int req_u64_at(struct req *r, const struct val *v, const char *loc, uint64_t max, uint64_t *out)
{
    if (v->type == VAL_INT)
        return req_bad(r, loc, "'%s' must not be negative.", loc);
    if (v->type != VAL_UINT)
        return req_bad(r, loc, "'%s' must be an integer, not %s.", loc, req_type_name(v->type));
    if (v->u > max)
        return req_bad(r, loc, "'%s' must be at most %" PRIu64 ".", loc, max);
    *out = v->u;
    return 0;
}

int req_u64(struct req *r, const struct val *m, const char *key, bool required, uint64_t max,
            uint64_t *out, bool *has)
{
    const struct val *v = req_field(m, key);
    if (has)
        *has = v != NULL;
    *out = 0;
    if (!v)
        return required ? req_bad(r, key, "'%s' is required.", key) : 0;
    return req_u64_at(r, v, key, max, out);
}

int req_enum(struct req *r, const struct val *m, const char *key, bool required,
             const char *const *names, int n, int *out, bool *has)
{
    struct bstr s;
    bool given;
    if (req_str(r, m, key, required, &s, &given))
        return -1;
    if (has)
        *has = given;
    if (!given)
        return 0;
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == s.n && memcmp(names[i], s.p, s.n) == 0) {
            *out = i;
            return 0;
        }
    char list[128] = "";
    size_t k = 0;
    for (int i = 0; i < n && k < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s'%s'",
                              i == 0 ? "" : (i == n - 1 ? " or " : ", "), names[i]);
    return req_bad(r, key, "'%s' must be %s.", key, list);
}

int req_ns(struct req *r, struct broker_ns_ref *ns)
{
    return req_str(r, r->body, "namespace", false, &ns->name, &ns->has);
}

int req_topic_ref(struct req *r, const char *key, struct broker_topic_ref *out)
{
    struct bstr s;
    if (req_str(r, r->body, key, true, &s, NULL))
        return -1;
    struct broker_error e = {0};
    if (broker_parse_topic_ref(s, key, out, &e))
        return req_broker_err(r, &e);
    return 0;
}

int req_group(struct req *r, struct bstr *out)
{
    return req_str(r, r->body, "consumer_group", true, out, NULL);
}

/* ---- writing -------------------------------------------------------------------- */

void out_bstr(struct out *o, struct bstr s)
{
    out_str(o, s.p, s.n);
}

void out_opt_u64(struct out *o, bool has, uint64_t v)
{
    if (has)
        out_u64(o, v);
    else
        out_null(o);
}

void out_part_topic(struct out *o, struct bstr name, uint32_t p)
{
    char tmp[160];
    if (name.n > sizeof tmp - 16) { /* topic names are at most 64 bytes */
        out_bstr(o, name);
        return;
    }
    memcpy(tmp, name.p, name.n);
    tmp[name.n] = '~';
    out_str(o, tmp, name.n + 1 + codec_u64_dec(tmp + name.n + 1, p));
}

void out_key_n(struct req *r, const char *p, size_t n)
{
    char *k = arena_alloc(&r->arena, n + 1);
    if (!k) {
        /* Keep the document's shape; the sticky ENOMEM of the buffer will
         * most likely follow, else the key is just empty. */
        out_key(r->out, "");
        return;
    }
    memcpy(k, p, n);
    k[n] = 0;
    out_key(r->out, k);
}

void out_empty(struct out *o)
{
    out_map(o, 0);
}

void out_headers(struct req *r, const struct broker_header *h, size_t n)
{
    out_map(r->out, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        out_key_n(r, h[i].name.p, h[i].name.n);
        out_bstr(r->out, h[i].value);
    }
}

/* ---- dispatch ---------------------------------------------------------------------- */

/* A printable, bounded copy of an op id for an error sentence. */
static void printable(const char *p, size_t n, char *out, size_t len)
{
    size_t k = 0;
    for (size_t i = 0; p && i < n && k + 4 < len; i++)
        out[k++] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
    if (p && n > 0 && k + 4 >= len && k < n) {
        out[k++] = '.';
        out[k++] = '.';
        out[k++] = '.';
    }
    out[k] = 0;
}

enum api_result api_handle(struct api_ctx *ctx, struct api_call *call)
{
    const struct op *op = find_op(ctx, call->op, call->op_len);
    struct req r;
    memset(&r, 0, sizeof r);
    r.ctx = ctx;
    r.call = call;
    r.b = ctx->b;
    r.out = &call->out;
    arena_init(&r.arena);
    out_free(&call->out);
    out_init(&call->out, call->fmt);
    /* A receive keeps the wait of its first attempt (a new stream group's
     * starting point must be durable before the answer); everything else
     * starts with nothing to wait for. */
    if (!op || !is_receive(op) || call->deadline_ms == 0)
        call->wait = (struct broker_wait){0};
    call->wake_ms = UINT64_MAX;

    enum hres h;
    if (!op) {
        char name[80], detail[160];
        printable(call->op, call->op_len, name, sizeof name);
        snprintf(detail, sizeof detail, "There is no operation named '%s'.", name);
        set_err(&r.err, 404, "not_found", NULL, detail);
        h = H_ERROR;
    } else if (!call->body || call->body->type != VAL_MAP) {
        req_bad(&r, NULL,
                "The request body must be an object (a JSON object or a MessagePack "
                "map), not %s.",
                call->body ? req_type_name(call->body->type) : "empty");
        h = H_ERROR;
    } else {
        r.body = call->body;
        h = op->fn ? op->fn(&r) : op->mode_fn(&r, op->mode);
    }
    if (h == H_POLL) {
        arena_free(&r.arena);
        return API_POLL;
    }
    if (h == H_DONE && out_finish(&call->out) != 0) {
        req_oom(&r);
        h = H_ERROR;
    }
    if (h == H_DONE) {
        call->status = 200;
    } else {
        out_free(&call->out);
        out_init(&call->out, call->fmt);
        api_error_body(&call->out, r.err.code, r.err.detail, r.err.location);
        call->status = out_finish(&call->out) == 0 ? r.err.status : 500;
    }
    ctx->stats.requests++;
    if (call->status >= 500)
        ctx->stats.errors_5xx++;
    else if (call->status >= 400)
        ctx->stats.errors_4xx++;
    arena_free(&r.arena);
    return API_RESPOND;
}
