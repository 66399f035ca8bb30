/*
 * test_api.c — the API layer (src/server/api.h) against API.md: api_handle
 * driven directly with bodies parsed by codec_parse_json / _msgpack, on a
 * real broker in a temp directory (test clock, fsync "never").
 *
 *   - a table of rejected requests: (op, body) → (status, code, location),
 *     and a check that none of them changed the broker's state;
 *   - the happy path of every operation, with the response parsed back and
 *     its shape inspected;
 *   - MessagePack in and out (nil for absent values), value encodings;
 *   - the long-poll protocol (API_POLL, wake_ms, deadline, final);
 *   - stats, unknown ops, and a sweep of odd field values that must never
 *     crash and always answer with a well-formed body.
 *
 * The test clock is the wall clock plus an offset: timing checks leave
 * margins of seconds. The monotonic clock handed to api_handle is fake
 * (f->mono), so deadlines are exact.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "base/buf.h"
#include "broker/broker.h"
#include "coyote.h"
#include "server/api.h"
#include "server/codec.h"
#include "testutil.h"

/* ---- fixture ------------------------------------------------------------------ */

struct fx {
    char *dir;
    struct broker *b;
    struct api_ctx ctx;
    struct arena a; /* request and response trees of the whole test */
    uint64_t mono;  /* the fake monotonic clock given to api_handle */
};

/* The last response as text (JSON, or "<msgpack>"), for failure messages. */
static char last_body[16384];

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = tu_tempdir("api");
    struct broker_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.data_dir = f->dir;
    cfg.fsync = JOURNAL_FSYNC_NEVER;
    cfg.test_clock = true;
    struct broker_error e = {0};
    if (broker_open(&cfg, &f->b, &e))
        fail_msg("broker_open: %s", e.detail);
    f->ctx.b = f->b;
    f->ctx.test_clock = true;
    arena_init(&f->a);
    f->mono = 1000;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    arena_free(&f->a);
    broker_close(f->b);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

/* ---- building requests --------------------------------------------------------- */

static struct val *parse_json(struct fx *f, const char *json)
{
    char detail[256], loc[64];
    struct val *v = NULL;
    enum codec_err e = codec_parse_json((const uint8_t *)json, strlen(json), &f->a, &v, detail,
                                        sizeof detail, loc, sizeof loc);
    if (e)
        fail_msg("test JSON does not parse (%s): %s", detail, json);
    return v;
}

static struct val *parse_msgpack(struct fx *f, const void *p, size_t n)
{
    char detail[256], loc[64];
    struct val *v = NULL;
    enum codec_err e = codec_parse_msgpack(p, n, &f->a, &v, detail, sizeof detail, loc, sizeof loc);
    if (e)
        fail_msg("MessagePack does not parse: %s", detail);
    return v;
}

static void call_init(struct fx *f, struct api_call *c, const char *op, const struct val *body,
                      enum codec_format fmt)
{
    memset(c, 0, sizeof *c);
    c->op = op;
    c->op_len = strlen(op);
    c->body = body;
    c->fmt = fmt;
    c->now_mono_ms = f->mono;
    out_init(&c->out, fmt);
}

/* One more attempt of c (as the HTTP layer makes it). */
static enum api_result attempt(struct fx *f, struct api_call *c)
{
    c->now_mono_ms = f->mono;
    out_free(&c->out);
    out_init(&c->out, c->fmt);
    return api_handle(&f->ctx, c);
}

/* The response of c parsed back (in f->a); remembers its text. */
static const struct val *response(struct fx *f, struct api_call *c)
{
    assert_int_equal(out_finish(&c->out), 0);
    const uint8_t *p = c->out.buf.data;
    size_t n = c->out.buf.len;
    if (c->fmt == FORMAT_JSON) {
        snprintf(last_body, sizeof last_body, "%.*s", (int)(n < 16000 ? n : 16000),
                 (const char *)p);
        return parse_json(f, last_body);
    }
    snprintf(last_body, sizeof last_body, "<msgpack, %zu bytes>", n);
    return parse_msgpack(f, p, n);
}

/* A whole call: one attempt that must respond; the parsed response. */
static const struct val *call_val(struct fx *f, const char *op, const struct val *body,
                                  enum codec_format fmt, int *status)
{
    struct api_call c;
    call_init(f, &c, op, body, fmt);
    enum api_result r = api_handle(&f->ctx, &c);
    assert_int_equal(r, API_RESPOND);
    const struct val *v = response(f, &c);
    *status = c.status;
    out_free(&c.out);
    return v;
}

/* JSON in, JSON out; the status must be `status`. Body is printf-style. */
static const struct val *api(struct fx *f, int status, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const struct val *api(struct fx *f, int status, const char *op, const char *fmt, ...)
{
    static char body[65536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    int st;
    const struct val *v = call_val(f, op, parse_json(f, body), FORMAT_JSON, &st);
    if (st != status)
        fail_msg("%s %s: status %d, expected %d: %s", op, body, st, status, last_body);
    return v;
}

/* ---- inspecting responses -------------------------------------------------------- */

/* The value at a path like "topics[0].topic" or "msgs[1].headers.h", or NULL. */
static const struct val *at(const struct val *v, const char *path)
{
    const char *p = path;
    while (v && *p) {
        if (*p == '.')
            p++;
        if (*p == '[') {
            char *end;
            unsigned long i = strtoul(p + 1, &end, 10);
            if (*end != ']' || v->type != VAL_ARRAY || i >= v->arr.n)
                return NULL;
            v = &v->arr.items[i];
            p = end + 1;
            continue;
        }
        size_t n = strcspn(p, ".[");
        const struct val *next = NULL;
        if (v->type == VAL_MAP)
            for (size_t i = 0; i < v->map.n; i++)
                if (v->map.items[i].key_len == n && memcmp(v->map.items[i].key, p, n) == 0)
                    next = &v->map.items[i].v;
        v = next;
        p += n;
    }
    return v;
}

#define CHECK(cond, path)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail_msg("%s:%d: check on '%s' failed in: %s", __FILE__, __LINE__, (path), last_body); \
    } while (0)

#define A_U64(v, path, want)                                                  \
    do {                                                                      \
        const struct val *x_ = at((v), (path));                               \
        CHECK(x_ && x_->type == VAL_UINT && x_->u == (uint64_t)(want), path); \
    } while (0)
#define A_STR(v, path, want)                                          \
    do {                                                              \
        const struct val *x_ = at((v), (path));                       \
        CHECK(x_ && x_->type == VAL_STR && x_->s.n == strlen(want) && \
                  memcmp(x_->s.p, (want), x_->s.n) == 0,              \
              path);                                                  \
    } while (0)
#define A_TYPE(v, path, t)                      \
    do {                                        \
        const struct val *x_ = at((v), (path)); \
        CHECK(x_ && x_->type == (t), path);     \
    } while (0)
#define A_NULL(v, path) A_TYPE(v, path, VAL_NULL)
#define A_ABSENT(v, path) CHECK(at((v), (path)) == NULL, path)
#define A_LEN(v, path, count)                                                   \
    do {                                                                        \
        const struct val *x_ = at((v), (path));                                 \
        CHECK(x_ && ((x_->type == VAL_ARRAY && x_->arr.n == (size_t)(count)) || \
                     (x_->type == VAL_MAP && x_->map.n == (size_t)(count))),    \
              path);                                                            \
    } while (0)
/* Message bytes: a JSON int array or a MessagePack bin. */
#define A_BYTES(v, path, want, wn)                                        \
    do {                                                                  \
        const struct val *x_ = at((v), (path));                           \
        CHECK(x_ &&bytes_equal(x_, (const uint8_t *)(want), (wn)), path); \
    } while (0)

static bool bytes_equal(const struct val *v, const uint8_t *p, size_t n)
{
    if (v->type == VAL_BIN)
        return v->s.n == n && (n == 0 || memcmp(v->s.p, p, n) == 0);
    if (v->type != VAL_ARRAY || v->arr.n != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (v->arr.items[i].type != VAL_UINT || v->arr.items[i].u != p[i])
            return false;
    return true;
}

static uint64_t u64_at(const struct val *v, const char *path)
{
    const struct val *x = at(v, path);
    CHECK(x && x->type == VAL_UINT, path);
    return x->u;
}

static void dump(struct fx *f, struct buf *out)
{
    buf_init(out);
    assert_int_equal(broker_dump_state(f->b, out), 0);
}

/* ---- rejected requests ----------------------------------------------------------- */

struct ecase {
    const char *op;
    const char *body;
    int status;
    const char *code;
    const char *location; /* NULL: no "location" key */
};

#define NS "v1.msgs.namespace."
#define TP "v1.msgs.topic."
#define PUB "v1.msgs.publish"
#define SR "v1.msgs.stream.receive"
#define SC "v1.msgs.stream.commit"
#define SK "v1.msgs.stream.seek"
#define Q "v1.msgs.queue."
#define FI "v1.msgs.fifo."
#define GR "v1.msgs.group."
#define CLK "v1.test.clock.advance"

static const struct ecase ecases[] = {
    /* the body */
    {PUB, "[]", 422, "invalid_data", NULL},
    {PUB, "\"x\"", 422, "invalid_data", NULL},
    {PUB, "5", 422, "invalid_data", NULL},
    {PUB, "null", 422, "invalid_data", NULL},
    {"v1.msgs.nope", "{}", 404, "not_found", NULL},
    {"v1.health.ping", "{}", 404, "not_found", NULL},
    /* namespaces */
    {NS "configure", "{}", 422, "invalid_data", "name"},
    {NS "configure", "{\"name\":null}", 422, "invalid_data", "name"},
    {NS "configure", "{\"name\":5}", 422, "invalid_data", "name"},
    {NS "configure", "{\"name\":\"bad name!\"}", 422, "invalid_data", "name"},
    {NS "configure", "{\"name\":\"\"}", 422, "invalid_data", "name"},
    {NS "configure", "{\"name\":\"x\",\"retention\":5}", 422, "invalid_data", "retention"},
    {NS "configure", "{\"name\":\"x\",\"retention\":[]}", 422, "invalid_data", "retention"},
    {NS "configure", "{\"name\":\"x\",\"retention\":{\"period_ms\":-1}}", 422, "invalid_data",
     "retention.period_ms"},
    {NS "configure", "{\"name\":\"x\",\"retention\":{\"period_ms\":1.5}}", 422, "invalid_data",
     "retention.period_ms"},
    {NS "configure", "{\"name\":\"x\",\"retention\":{\"period_ms\":253402207200999}}", 422,
     "invalid_data", "retention.period_ms"},
    {NS "configure", "{\"name\":\"x\",\"retention\":{\"period_ms\":1,\"msg_age_ms\":1}}", 422,
     "invalid_data", "retention.msg_age_ms"},
    {NS "configure", "{\"name\":\"x\",\"retention\":{\"msg_age_ms\":\"1\"}}", 422, "invalid_data",
     "retention.msg_age_ms"},
    {NS "configure", "{\"name\":\"x\",\"retention\":{\"size_bytes\":1,\"global_bytes\":2}}", 422,
     "invalid_data", "retention.global_bytes"},
    {NS "configure", "{\"name\":\"x\",\"retention\":{\"topic_bytes\":true}}", 422, "invalid_data",
     "retention.topic_bytes"},
    {NS "get", "{}", 422, "invalid_data", "name"},
    {NS "get", "{\"name\":[]}", 422, "invalid_data", "name"},
    {NS "get", "{\"name\":\"nope\"}", 400, "not_found", "name"},
    /* the namespace field of data operations */
    {TP "list", "{\"namespace\":5}", 422, "invalid_data", "namespace"},
    {TP "list", "{\"namespace\":\"default\"}", 400, "no_explicit_default_namespace", "namespace"},
    {TP "list", "{\"namespace\":\"nope\"}", 400, "not_found", "namespace"},
    {TP "list", "{\"namespace\":\"bad name!\"}", 422, "invalid_data", "namespace"},
    {PUB, "{\"namespace\":\"default\",\"topic\":\"t\",\"msgs\":[]}", 400,
     "no_explicit_default_namespace", "namespace"},
    {PUB, "{\"namespace\":\"nope\",\"topic\":\"t\",\"msgs\":[{\"value\":[1]}]}", 400, "not_found",
     "namespace"},
    {SR, "{\"namespace\":\"nope\",\"topic\":\"t\",\"consumer_group\":\"g\"}", 400, "not_found",
     "namespace"},
    /* topics */
    {TP "configure", "{\"topic\":\"t\"}", 422, "invalid_data", "partitions"},
    {TP "configure", "{\"topic\":\"t\",\"partitions\":\"2\"}", 422, "invalid_data", "partitions"},
    {TP "configure", "{\"topic\":\"t\",\"partitions\":2.0}", 422, "invalid_data", "partitions"},
    {TP "configure", "{\"topic\":\"t\",\"partitions\":0}", 400, "invalid_input", "partitions"},
    {TP "configure", "{\"topic\":\"t\",\"partitions\":65}", 400, "invalid_input", "partitions"},
    {TP "configure", "{\"topic\":\"t\",\"partitions\":-3}", 400, "invalid_input", "partitions"},
    {TP "configure", "{\"topic\":\"t\",\"partitions\":9223372036854775807}", 400, "invalid_input",
     "partitions"},
    {TP "configure", "{\"topic\":\"t\",\"partitions\":1}", 400, "invalid_input", "partitions"},
    {TP "configure", "{\"topic\":\"t~1\",\"partitions\":3}", 422, "invalid_data", "topic"},
    {TP "configure", "{\"partitions\":3}", 422, "invalid_data", "topic"},
    {TP "configure", "{\"topic\":\"a~b\",\"partitions\":3}", 422, "invalid_data", "topic"},
    {TP "configure", "{\"topic\":\"\",\"partitions\":3}", 422, "invalid_data", "topic"},
    {TP "get", "{}", 422, "invalid_data", "topic"},
    {TP "get", "{\"topic\":\"nope\"}", 400, "invalid_input", "topic"},
    {TP "trim", "{\"topic\":\"t\"}", 400, "invalid_input", NULL},
    {TP "trim", "{\"topic\":\"t~0\",\"before_offset\":1,\"before_timestamp\":1}", 400,
     "invalid_input", NULL},
    {TP "trim", "{\"topic\":\"t\",\"before_offset\":\"x\"}", 422, "invalid_data", "before_offset"},
    {TP "trim", "{\"topic\":\"t\",\"before_timestamp\":253402207200999}", 422, "invalid_data",
     "before_timestamp"},
    {TP "trim", "{\"topic\":\"t\",\"before_offset\":1}", 400, "invalid_input", "topic"},
    {TP "trim", "{\"topic\":\"nope~0\",\"before_offset\":1}", 400, "invalid_input", "topic"},
    {TP "trim", "{\"topic\":\"t~7\",\"before_offset\":1}", 400, "invalid_input", "topic"},
    {TP "trim", "{\"topic\":\"t~64\",\"before_offset\":1}", 422, "invalid_data", "topic"},
    /* publish */
    {PUB, "{\"topic\":\"t\"}", 422, "invalid_data", "msgs"},
    {PUB, "{\"topic\":\"t\",\"msgs\":null}", 422, "invalid_data", "msgs"},
    {PUB, "{\"topic\":\"t\",\"msgs\":{}}", 422, "invalid_data", "msgs"},
    {PUB, "{\"msgs\":[]}", 422, "invalid_data", "topic"},
    {PUB, "{\"topic\":5,\"msgs\":[]}", 422, "invalid_data", "topic"},
    {PUB, "{\"topic\":\"\",\"msgs\":[]}", 422, "invalid_data", "topic"},
    {PUB, "{\"topic\":\"t~64\",\"msgs\":[]}", 422, "invalid_data", "topic"},
    {PUB, "{\"topic\":\"t~\",\"msgs\":[]}", 422, "invalid_data", "topic"},
    {PUB, "{\"topic\":\"a\\u0001b\",\"msgs\":[]}", 422, "invalid_data", "topic"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[5]}", 422, "invalid_data", "msgs[0]"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{}]}", 422, "invalid_data", "msgs[0].value"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":null}]}", 422, "invalid_data", "msgs[0].value"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[1,2,256]}]}", 422, "invalid_data",
     "msgs[0].value[2]"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[1]},{\"value\":[1,-1]}]}", 422, "invalid_data",
     "msgs[1].value[1]"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[1.5]}]}", 422, "invalid_data",
     "msgs[0].value[0]"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[\"a\"]}]}", 422, "invalid_data",
     "msgs[0].value[0]"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[null]}]}", 422, "invalid_data",
     "msgs[0].value[0]"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":true}]}", 422, "invalid_data", "msgs[0].value"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":{}}]}", 422, "invalid_data", "msgs[0].value"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":7}]}", 422, "invalid_data", "msgs[0].value"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[],\"headers\":\"x\"}]}", 422, "invalid_data",
     "msgs[0].headers"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[],\"headers\":[]}]}", 422, "invalid_data",
     "msgs[0].headers"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[],\"headers\":{\"a\":\"1\",\"b\":2}}]}", 422,
     "invalid_data", "msgs[0].headers.b"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[],\"headers\":{\"a\":null}}]}", 422,
     "invalid_data", "msgs[0].headers.a"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[],\"key\":5}]}", 422, "invalid_data",
     "msgs[0].key"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[],\"group_key\":[]}]}", 422, "invalid_data",
     "msgs[0].group_key"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[],\"key\":\"a\",\"group_key\":\"b\"}]}", 422,
     "invalid_data", "msgs[0].group_key"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[],\"delay_ms\":-1}]}", 422, "invalid_data",
     "msgs[0].delay_ms"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[],\"delay_ms\":\"1\"}]}", 422, "invalid_data",
     "msgs[0].delay_ms"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[],\"delay_ms\":2592000001}]}", 422,
     "invalid_data", "msgs[0].delay_ms"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[]}],\"idempotency_key\":5}", 422, "invalid_data",
     "idempotency_key"},
    {PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[]}],\"idempotency_key\":\"\"}", 422,
     "invalid_data", "idempotency_key"},
    {PUB, "{\"topic\":\"t~0\",\"msgs\":[{\"value\":[],\"key\":\"k\"}]}", 400, "invalid_input",
     NULL},
    {PUB, "{\"topic\":\"t~5\",\"msgs\":[{\"value\":[]}]}", 400, "invalid_input", "topic"},
    {PUB, "{\"topic\":\"nope~0\",\"msgs\":[{\"value\":[]}]}", 400, "invalid_input", "topic"},
    /* stream.receive */
    {SR, "{\"topic\":\"t\"}", 422, "invalid_data", "consumer_group"},
    {SR, "{\"consumer_group\":\"g\"}", 422, "invalid_data", "topic"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":5}", 422, "invalid_data", "consumer_group"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"bad group!\"}", 422, "invalid_data",
     "consumer_group"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"batch_size\":0}", 422, "invalid_data",
     "batch_size"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"batch_size\":65536}", 422, "invalid_data",
     "batch_size"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"batch_size\":-1}", 422, "invalid_data",
     "batch_size"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"batch_size\":\"1\"}", 422, "invalid_data",
     "batch_size"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"batch_size\":1.0}", 422, "invalid_data",
     "batch_size"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"lease_duration_ms\":0}", 422, "invalid_data",
     "lease_duration_ms"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"lease_duration_ms\":43200001}", 422,
     "invalid_data", "lease_duration_ms"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"lease_duration_ms\":-5}", 422, "invalid_data",
     "lease_duration_ms"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"default_starting_position\":\"middle\"}", 422,
     "invalid_data", "default_starting_position"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"default_starting_position\":1}", 422,
     "invalid_data", "default_starting_position"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"batch_wait_ms\":3600001}", 422,
     "invalid_data", "batch_wait_ms"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"batch_wait_ms\":-1}", 422, "invalid_data",
     "batch_wait_ms"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"value_encoding\":\"hex\"}", 422,
     "invalid_data", "value_encoding"},
    {SR, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"value_encoding\":[]}", 422, "invalid_data",
     "value_encoding"},
    {SR, "{\"topic\":\"t~9\",\"consumer_group\":\"g\"}", 400, "invalid_input", "topic"},
    /* stream.commit */
    {SC, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"offset\":1}", 422, "invalid_data", "topic"},
    {SC, "{\"topic\":\"t~0\",\"consumer_group\":\"g\"}", 422, "invalid_data", "offset"},
    {SC, "{\"topic\":\"t~0\",\"consumer_group\":\"g\",\"offset\":-1}", 422, "invalid_data",
     "offset"},
    {SC, "{\"topic\":\"t~0\",\"consumer_group\":\"g\",\"offset\":\"0\"}", 422, "invalid_data",
     "offset"},
    {SC, "{\"topic\":\"t~0\",\"offset\":0}", 422, "invalid_data", "consumer_group"},
    {SC, "{\"topic\":\"nope~0\",\"consumer_group\":\"g\",\"offset\":0}", 400, "invalid_input",
     "topic"},
    {SC, "{\"topic\":\"t~0\",\"consumer_group\":\"never\",\"offset\":0}", 400, "invalid_input",
     "consumer_group"},
    /* stream.seek */
    {SK, "{\"topic\":\"t\",\"consumer_group\":\"g\"}", 400, "invalid_input", NULL},
    {SK, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"offset\":null,\"position\":null}", 400,
     "invalid_input", NULL},
    {SK, "{\"topic\":\"t~0\",\"consumer_group\":\"g\",\"offset\":1,\"position\":\"earliest\"}", 400,
     "invalid_input", NULL},
    {SK, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"position\":\"latest\",\"timestamp\":1}", 400,
     "invalid_input", NULL},
    {SK, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"position\":\"middle\"}", 422, "invalid_data",
     "position"},
    {SK, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"position\":0}", 422, "invalid_data",
     "position"},
    {SK, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"timestamp\":-1}", 422, "invalid_data",
     "timestamp"},
    {SK, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"timestamp\":253402207200999}", 422,
     "invalid_data", "timestamp"},
    {SK, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"offset\":1.5}", 422, "invalid_data",
     "offset"},
    {SK, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"offset\":1}", 400, "invalid_input", "topic"},
    {SK, "{\"topic\":\"nope\",\"consumer_group\":\"g\",\"position\":\"earliest\"}", 400,
     "invalid_input", "topic"},
    /* queue / FIFO */
    {Q "receive", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"batch_size\":0}", 422,
     "invalid_data", "batch_size"},
    {Q "receive", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"lease_duration_ms\":0}", 422,
     "invalid_data", "lease_duration_ms"},
    {FI "receive", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"value_encoding\":\"x\"}", 422,
     "invalid_data", "value_encoding"},
    {FI "receive", "{\"topic\":\"t\"}", 422, "invalid_data", "consumer_group"},
    {Q "ack", "{\"topic\":\"t\",\"consumer_group\":\"qg\"}", 422, "invalid_data", "msg_ids"},
    {Q "ack", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"msg_ids\":\"0:1\"}", 422,
     "invalid_data", "msg_ids"},
    {Q "ack", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"msg_ids\":[1]}", 422, "invalid_data",
     "msg_ids[0]"},
    {Q "ack", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"msg_ids\":[\"0:1\",\"x\"]}", 422,
     "invalid_data", "msg_ids[1]"},
    {Q "ack", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"msg_ids\":[\"64:1\"]}", 422,
     "invalid_data", "msg_ids[0]"},
    {Q "ack", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"msg_ids\":[\"0:-1\"]}", 422,
     "invalid_data", "msg_ids[0]"},
    {Q "ack", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"msg_ids\":[\"5:1\"]}", 400,
     "invalid_input", "msg_ids[0]"},
    {Q "ack", "{\"topic\":\"nope\",\"consumer_group\":\"qg\",\"msg_ids\":[\"0:0\"]}", 400,
     "invalid_input", "topic"},
    {Q "ack", "{\"consumer_group\":\"qg\",\"msg_ids\":[]}", 422, "invalid_data", "topic"},
    {FI "ack", "{\"topic\":\"t\",\"consumer_group\":\"bad!\",\"msg_ids\":[]}", 422, "invalid_data",
     "consumer_group"},
    {Q "nack", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"msg_ids\":[],\"delay_ms\":\"x\"}", 422,
     "invalid_data", "delay_ms"},
    {Q "nack", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"msg_ids\":[],\"delay_ms\":2592000001}",
     422, "invalid_data", "delay_ms"},
    {FI "nack", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"msg_ids\":[{}]}", 422, "invalid_data",
     "msg_ids[0]"},
    {Q "extend-lease",
     "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"msg_ids\":[],\"lease_duration_ms\":0}", 422,
     "invalid_data", "lease_duration_ms"},
    {Q "extend-lease",
     "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"msg_ids\":[],\"lease_duration_ms\":true}", 422,
     "invalid_data", "lease_duration_ms"},
    {Q "extend-lease", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"msg_ids\":[\"0:0\"]}", 400,
     "invalid_input", "msg_ids[0]"},
    {Q "configure", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"retry_schedule\":5}", 422,
     "invalid_data", "retry_schedule"},
    {Q "configure", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"retry_schedule\":[1,-1]}", 422,
     "invalid_data", "retry_schedule[1]"},
    {Q "configure", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"retry_schedule\":[604800001]}",
     422, "invalid_data", "retry_schedule[0]"},
    {Q "configure", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"dlq_topic\":5}", 422,
     "invalid_data", "dlq_topic"},
    {Q "configure", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"dlq_topic\":\"d~1\"}", 422,
     "invalid_data", "dlq_topic"},
    {Q "configure", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"max_deliveries\":4294967296}",
     422, "invalid_data", "max_deliveries"},
    {FI "configure", "{\"topic\":\"t\",\"consumer_group\":\"qg\",\"max_deliveries\":-1}", 422,
     "invalid_data", "max_deliveries"},
    {FI "configure", "{\"topic\":\"t\"}", 422, "invalid_data", "consumer_group"},
    {FI "configure", "{\"topic\":\"x~y\",\"consumer_group\":\"qg\"}", 422, "invalid_data", "topic"},
    {Q "redrive-dlq", "{\"topic\":\"nope\",\"consumer_group\":\"qg\"}", 400, "invalid_input",
     "topic"},
    {FI "redrive-dlq", "{\"topic\":\"t\"}", 422, "invalid_data", "consumer_group"},
    /* groups */
    {GR "get", "{\"topic\":\"t\",\"consumer_group\":\"g\"}", 422, "invalid_data", "mode"},
    {GR "get", "{\"topic\":\"t\",\"consumer_group\":\"g\",\"mode\":\"x\"}", 422, "invalid_data",
     "mode"},
    {GR "get", "{\"topic\":\"t\",\"mode\":\"queue\"}", 422, "invalid_data", "consumer_group"},
    {GR "get", "{\"consumer_group\":\"g\",\"mode\":\"queue\"}", 422, "invalid_data", "topic"},
    {GR "get", "{\"topic\":\"t\",\"consumer_group\":\"nope\",\"mode\":\"queue\"}", 400,
     "invalid_input", "consumer_group"},
    {GR "get", "{\"topic\":\"nope\",\"consumer_group\":\"g\",\"mode\":\"stream\"}", 400,
     "invalid_input", "topic"},
    {GR "list", "{\"topic\":\"\"}", 422, "invalid_data", "topic"},
    {GR "list", "{\"topic\":5}", 422, "invalid_data", "topic"},
    {GR "list", "{\"topic\":\"nope\"}", 400, "invalid_input", "topic"},
    /* the test clock */
    {CLK, "{}", 422, "invalid_data", "ms"},
    {CLK, "{\"ms\":-1}", 422, "invalid_data", "ms"},
    {CLK, "{\"ms\":\"5\"}", 422, "invalid_data", "ms"},
    {CLK, "{\"ms\":253402207200998}", 422, "invalid_data", "ms"},
};

static void test_rejections(void **state)
{
    struct fx *f = *state;
    api(f, 200, NS "configure", "{\"name\":\"ns1\"}");
    api(f, 200, TP "configure", "{\"topic\":\"t\",\"partitions\":2}");
    api(f, 200, PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":\"a\"}]}");
    api(f, 200, SR, "{\"topic\":\"t\",\"consumer_group\":\"g\"}");
    api(f, 200, Q "configure", "{\"topic\":\"t\",\"consumer_group\":\"qg\"}");
    struct buf before, after;
    dump(f, &before);
    uint64_t errors = f->ctx.stats.errors_4xx, requests = f->ctx.stats.requests;

    size_t n = sizeof ecases / sizeof ecases[0];
    for (size_t i = 0; i < n; i++) {
        const struct ecase *c = &ecases[i];
        int st;
        const struct val *v = call_val(f, c->op, parse_json(f, c->body), FORMAT_JSON, &st);
        const struct val *code = at(v, "code"), *loc = at(v, "location"), *det = at(v, "detail");
        bool ok = st == c->status && code && code->type == VAL_STR &&
                  code->s.n == strlen(c->code) && memcmp(code->s.p, c->code, code->s.n) == 0 &&
                  det && det->type == VAL_STR && det->s.n > 0;
        if (c->location)
            ok = ok && loc && loc->type == VAL_STR && loc->s.n == strlen(c->location) &&
                 memcmp(loc->s.p, c->location, loc->s.n) == 0;
        else
            ok = ok && !loc;
        if (!ok)
            fail_msg("case %zu: %s %s: expected %d %s at %s, got %d %s", i, c->op, c->body,
                     c->status, c->code, c->location ? c->location : "(none)", st, last_body);
    }
    dump(f, &after);
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.data, after.data, before.len);
    assert_int_equal(f->ctx.stats.errors_4xx, errors + n);
    assert_int_equal(f->ctx.stats.requests, requests + n);
    buf_free(&before);
    buf_free(&after);
}

/* A header map with more than the limit, and an over-long value: the broker's
 * limits come back as 422 with the location of the message. */
static void test_rejections_limits(void **state)
{
    struct fx *f = *state;
    static char body[200000];
    size_t k = (size_t)snprintf(body, sizeof body,
                                "{\"topic\":\"t\",\"msgs\":[{\"value\":[],\"headers\":{");
    for (int i = 0; i < 65; i++)
        k += (size_t)snprintf(body + k, sizeof body - k, "%s\"h%d\":\"v\"", i ? "," : "", i);
    snprintf(body + k, sizeof body - k, "}}]}");
    const struct val *v = api(f, 422, PUB, "%s", body);
    A_STR(v, "location", "msgs[0].headers");
    k = (size_t)snprintf(body, sizeof body,
                         "{\"topic\":\"t\",\"msgs\":[{\"value\":[]},{\"value\":"
                         "[],\"key\":\"");
    for (int i = 0; i < 1025; i++)
        body[k++] = 'k';
    snprintf(body + k, sizeof body - k, "\"}]}");
    v = api(f, 422, PUB, "%s", body);
    A_STR(v, "location", "msgs[1].key");
    /* nothing was created by the rejected publishes */
    v = api(f, 200, TP "list", "{}");
    A_LEN(v, "topics", 0);
}

/* ---- namespaces ------------------------------------------------------------------ */

static void test_namespaces(void **state)
{
    struct fx *f = *state;
    const struct val *v = api(f, 200, NS "configure",
                              "{\"name\":\"alpha\",\"retention\":{\"msg_age_ms\":1000,"
                              "\"global_bytes\":5000,\"unknown\":1},\"other\":[1]}");
    A_LEN(v, "", 4);
    A_STR(v, "name", "alpha");
    A_LEN(v, "retention", 3);
    A_U64(v, "retention.period_ms", 1000);
    A_U64(v, "retention.size_bytes", 5000);
    A_NULL(v, "retention.topic_bytes");
    uint64_t created = u64_at(v, "created");
    A_U64(v, "updated", created);
    assert_true(created > 1600000000000ull); /* ms since the epoch */

    api(f, 200, CLK, "{\"ms\":10}");
    v = api(f, 200, NS "configure", "{\"name\":\"alpha\",\"retention\":{\"topic_bytes\":7}}");
    A_U64(v, "created", created);
    assert_true(u64_at(v, "updated") >= created + 10);
    A_NULL(v, "retention.period_ms");
    A_NULL(v, "retention.size_bytes");
    A_U64(v, "retention.topic_bytes", 7);

    v = api(f, 200, NS "configure", "{\"name\":\"alpha\",\"retention\":null}");
    A_NULL(v, "retention.topic_bytes");
    v = api(f, 200, NS "configure",
            "{\"name\":\"alpha\",\"retention\":{\"period_ms\":5,\"msg_age_ms\":null,"
            "\"size_bytes\":null,\"global_bytes\":9}}");
    A_U64(v, "retention.period_ms", 5);
    A_U64(v, "retention.size_bytes", 9);

    v = api(f, 200, NS "get", "{\"name\":\"alpha\"}");
    A_STR(v, "name", "alpha");
    A_U64(v, "created", created);
    A_U64(v, "retention.period_ms", 5);

    v = api(f, 200, NS "list", "{}");
    A_LEN(v, "", 1);
    A_LEN(v, "namespaces", 2);
    A_STR(v, "namespaces[0].name", "alpha");
    A_STR(v, "namespaces[1].name", "default");
    A_NULL(v, "namespaces[1].retention.period_ms");
    A_TYPE(v, "namespaces[1].created", VAL_UINT);

    /* a data operation in the new namespace */
    api(f, 200, PUB, "{\"namespace\":\"alpha\",\"topic\":\"t\",\"msgs\":[]}");
    v = api(f, 200, TP "list", "{\"namespace\":\"alpha\"}");
    A_LEN(v, "topics", 0); /* an empty publish creates nothing */
    api(f, 200, TP "configure", "{\"namespace\":\"alpha\",\"topic\":\"t\",\"partitions\":1}");
    v = api(f, 200, TP "list", "{\"namespace\":\"alpha\"}");
    A_LEN(v, "topics", 1);
    v = api(f, 200, TP "list", "{\"namespace\":null}");
    A_LEN(v, "topics", 0);
}

/* ---- topics ---------------------------------------------------------------------- */

static void test_topics(void **state)
{
    struct fx *f = *state;
    const struct val *v = api(f, 200, TP "configure", "{\"topic\":\"t\",\"partitions\":3}");
    A_LEN(v, "", 1);
    A_U64(v, "partitions", 3);
    v = api(f, 200, TP "configure", "{\"topic\":\"t\",\"partitions\":3}");
    A_U64(v, "partitions", 3);
    v = api(f, 200, TP "configure", "{\"topic\":\"t\",\"partitions\":4}");
    A_U64(v, "partitions", 4);
    api(f, 200, TP "configure", "{\"topic\":\"b\",\"partitions\":1}");
    v = api(f, 200, TP "list", "{}");
    A_LEN(v, "topics", 2);
    A_STR(v, "topics[0]", "b");
    A_STR(v, "topics[1]", "t");

    api(f, 200, PUB,
        "{\"topic\":\"t~1\",\"msgs\":[{\"value\":[1,2,3]},{\"value\":[4]},{\"value\":[5]}]}");
    api(f, 200, SR,
        "{\"topic\":\"t\",\"consumer_group\":\"s1\","
        "\"default_starting_position\":\"earliest\",\"batch_size\":1}");
    api(f, 200, Q "receive", "{\"topic\":\"t\",\"consumer_group\":\"q1\"}");
    api(f, 200, Q "receive", "{\"topic\":\"t\",\"consumer_group\":\"a0\"}");
    api(f, 200, FI "receive", "{\"topic\":\"t\",\"consumer_group\":\"f1\"}");

    v = api(f, 200, TP "get", "{\"topic\":\"t\"}");
    A_LEN(v, "", 5);
    A_STR(v, "topic", "t");
    A_LEN(v, "partitions", 4);
    A_U64(v, "partitions[0].partition", 0);
    A_U64(v, "partitions[0].start_offset", 0);
    A_U64(v, "partitions[0].end_offset", 0);
    A_U64(v, "partitions[0].bytes", 0);
    A_NULL(v, "partitions[0].oldest_timestamp");
    A_U64(v, "partitions[1].partition", 1);
    A_U64(v, "partitions[1].start_offset", 0);
    A_U64(v, "partitions[1].end_offset", 3);
    assert_true(u64_at(v, "partitions[1].bytes") >= 5);
    uint64_t oldest = u64_at(v, "partitions[1].oldest_timestamp");
    A_U64(v, "oldest_timestamp", oldest);
    A_U64(v, "bytes", u64_at(v, "partitions[1].bytes"));
    A_LEN(v, "groups", 3);
    A_LEN(v, "groups.stream", 1);
    A_STR(v, "groups.stream[0].consumer_group", "s1");
    A_U64(v, "groups.stream[0].lag", 3); /* receiving does not move the cursor */
    A_TYPE(v, "groups.stream[0].lag_ms", VAL_UINT);
    A_LEN(v, "groups.queue", 2);
    A_STR(v, "groups.queue[0].consumer_group", "a0"); /* sorted by name */
    A_STR(v, "groups.queue[1].consumer_group", "q1");
    A_LEN(v, "groups.fifo", 1);
    A_STR(v, "groups.fifo[0].consumer_group", "f1");
    A_LEN(v, "groups.fifo[0]", 3);

    /* "topic~p" names the topic too */
    v = api(f, 200, TP "get", "{\"topic\":\"t~2\"}");
    A_STR(v, "topic", "t");

    /* trim */
    v = api(f, 200, TP "trim", "{\"topic\":\"t~1\",\"before_offset\":2}");
    A_LEN(v, "", 1);
    A_LEN(v, "partitions", 1);
    A_U64(v, "partitions[0].partition", 1);
    A_U64(v, "partitions[0].start_offset", 2);
    v = api(f, 200, TP "trim", "{\"topic\":\"t\",\"before_timestamp\":0}");
    A_LEN(v, "partitions", 4);
    A_U64(v, "partitions[1].start_offset", 2);
    A_U64(v, "partitions[3].partition", 3);
    A_U64(v, "partitions[3].start_offset", 0);
    v = api(f, 200, TP "get", "{\"topic\":\"t\"}");
    A_U64(v, "partitions[1].start_offset", 2);
    A_U64(v, "partitions[1].end_offset", 3);
}

/* ---- publish and stream ---------------------------------------------------------- */

static void test_publish(void **state)
{
    struct fx *f = *state;
    api(f, 200, TP "configure", "{\"topic\":\"t\",\"partitions\":4}");
    const struct val *v = api(f, 200, PUB, "{\"topic\":\"t\",\"msgs\":[]}");
    A_LEN(v, "", 1);
    A_LEN(v, "topics", 0);

    /* keyed: djb2("a") % 4 = 177670 % 4 = 2; "b" → 177671 % 4 = 3 */
    v = api(f, 200, PUB,
            "{\"topic\":\"t\",\"msgs\":[{\"value\":[1],\"key\":\"b\"},{\"value\":[2],\"key\":"
            "\"a\"},{\"value\":[3],\"group_key\":\"a\"},{\"value\":[4],\"key\":\"a\","
            "\"group_key\":\"a\"}]}");
    A_LEN(v, "", 1); /* no "duplicate" key when false */
    A_ABSENT(v, "duplicate");
    A_LEN(v, "topics", 2);
    A_STR(v, "topics[0].topic", "t~2");
    A_U64(v, "topics[0].start_offset", 0);
    A_U64(v, "topics[0].offset", 3);
    A_STR(v, "topics[1].topic", "t~3");
    A_U64(v, "topics[1].start_offset", 0);
    A_U64(v, "topics[1].offset", 1);
    A_LEN(v, "topics[0]", 3);

    /* idempotency */
    const char *body = "{\"topic\":\"t~0\",\"msgs\":[{\"value\":\"x\"},{\"value\":\"y\"}],"
                       "\"idempotency_key\":\"k1\"}";
    v = api(f, 200, PUB, "%s", body);
    A_STR(v, "topics[0].topic", "t~0");
    A_U64(v, "topics[0].start_offset", 0);
    A_U64(v, "topics[0].offset", 2);
    A_ABSENT(v, "duplicate");
    v = api(f, 200, PUB, "%s", body);
    A_LEN(v, "", 2);
    A_TYPE(v, "duplicate", VAL_BOOL);
    CHECK(at(v, "duplicate")->b, "duplicate");
    A_STR(v, "topics[0].topic", "t~0");
    A_U64(v, "topics[0].start_offset", 0);
    A_U64(v, "topics[0].offset", 2);
    v = api(f, 200, TP "get", "{\"topic\":\"t\"}");
    A_U64(v, "partitions[0].end_offset", 2);
    assert_int_equal(f->ctx.stats.duplicates, 1);
    assert_int_equal(f->ctx.stats.published, 6);
    assert_int_equal(f->ctx.stats.publish_calls, 4);

    /* keyless messages are spread over partitions */
    v = api(f, 200, PUB, "{\"topic\":\"u\",\"msgs\":[{\"value\":[1]}]}");
    A_STR(v, "topics[0].topic", "u~0");
}

static void test_stream(void **state)
{
    struct fx *f = *state;
    api(f, 200, TP "configure", "{\"topic\":\"s\",\"partitions\":2}");
    api(f, 200, PUB,
        "{\"topic\":\"s~1\",\"msgs\":[{\"value\":[104,105],\"headers\":{\"h1\":\"v1\","
        "\"h2\":\"\"}},{\"value\":\"\",\"delay_ms\":60000}]}");
    api(f, 200, PUB, "{\"topic\":\"s\",\"msgs\":[{\"value\":[7],\"key\":\"b\"}]}");
    /* djb2("b") % 2 = 1 */
    const struct val *v = api(f, 200, SR,
                              "{\"topic\":\"s~1\",\"consumer_group\":\"g\","
                              "\"default_starting_position\":\"earliest\"}");
    A_LEN(v, "", 1);
    A_LEN(v, "msgs", 3);
    A_LEN(v, "msgs[0]", 7);
    A_U64(v, "msgs[0].offset", 0);
    A_STR(v, "msgs[0].topic", "s~1");
    A_BYTES(v, "msgs[0].value", "hi", 2);
    A_LEN(v, "msgs[0].headers", 2);
    A_STR(v, "msgs[0].headers.h1", "v1");
    A_STR(v, "msgs[0].headers.h2", "");
    uint64_t ts = u64_at(v, "msgs[0].timestamp");
    A_NULL(v, "msgs[0].scheduled_at");
    A_NULL(v, "msgs[0].key");
    A_U64(v, "msgs[1].offset", 1);
    A_BYTES(v, "msgs[1].value", "", 0);
    A_LEN(v, "msgs[1].headers", 0);
    A_TYPE(v, "msgs[1].headers", VAL_MAP);
    A_U64(v, "msgs[1].scheduled_at", ts + 60000); /* streams see delayed messages at once */
    A_U64(v, "msgs[2].offset", 2);
    A_STR(v, "msgs[2].key", "b");
    A_ABSENT(v, "msgs[0].attempt");
    A_ABSENT(v, "msgs[0].msg_id");
    assert_int_equal(f->ctx.stats.received, 3);

    /* the lease blocks a second receive of the same group on that partition */
    v = api(f, 400, SR, "{\"topic\":\"s~1\",\"consumer_group\":\"g\"}");
    A_STR(v, "code", "no_available_leases");

    v = api(f, 200, SC, "{\"topic\":\"s~1\",\"consumer_group\":\"g\",\"offset\":2}");
    A_LEN(v, "", 0);
    assert_int_equal(f->ctx.stats.committed, 1);
    v = api(f, 200, SR, "{\"topic\":\"s~1\",\"consumer_group\":\"g\"}");
    A_LEN(v, "msgs", 0);

    v = api(f, 200, SK, "{\"topic\":\"s~1\",\"consumer_group\":\"g\",\"offset\":1}");
    A_LEN(v, "", 0);
    v = api(f, 200, SR, "{\"topic\":\"s~1\",\"consumer_group\":\"g\",\"batch_size\":1}");
    A_LEN(v, "msgs", 1);
    A_U64(v, "msgs[0].offset", 1);
    api(f, 200, SK, "{\"topic\":\"s\",\"consumer_group\":\"g\",\"position\":\"earliest\"}");
    v = api(f, 200, SR, "{\"topic\":\"s~1\",\"consumer_group\":\"g\",\"batch_size\":65535}");
    A_LEN(v, "msgs", 3);
    api(f, 200, SK, "{\"topic\":\"s\",\"consumer_group\":\"g\",\"position\":\"latest\"}");
    v = api(f, 200, SR, "{\"topic\":\"s\",\"consumer_group\":\"g\"}");
    A_LEN(v, "msgs", 0);
    api(f, 200, SK, "{\"topic\":\"s\",\"consumer_group\":\"g\",\"timestamp\":0}");
    v = api(f, 200, SR, "{\"topic\":\"s\",\"consumer_group\":\"g\"}");
    A_LEN(v, "msgs", 3);

    /* a new group with the default "latest" sees nothing old */
    v = api(f, 200, SR, "{\"topic\":\"s\",\"consumer_group\":\"late\"}");
    A_LEN(v, "msgs", 0);
    api(f, 200, PUB, "{\"topic\":\"s~0\",\"msgs\":[{\"value\":[9]}]}");
    v = api(f, 200, SR, "{\"topic\":\"s\",\"consumer_group\":\"late\",\"namespace\":null}");
    A_LEN(v, "msgs", 1);
    A_STR(v, "msgs[0].topic", "s~0");
    A_BYTES(v, "msgs[0].value", "\x09", 1);
}

/* ---- queue and FIFO -------------------------------------------------------------- */

static void test_queue(void **state)
{
    struct fx *f = *state;
    const struct val *v =
        api(f, 200, Q "configure",
            "{\"topic\":\"q\",\"consumer_group\":\"g\",\"retry_schedule\":[100,200],"
            "\"dlq_topic\":\"dead\",\"max_deliveries\":5}");
    A_LEN(v, "", 3);
    A_LEN(v, "retry_schedule", 2);
    A_U64(v, "retry_schedule[0]", 100);
    A_U64(v, "retry_schedule[1]", 200);
    A_STR(v, "dlq_topic", "dead");
    A_U64(v, "max_deliveries", 5);
    v = api(f, 200, Q "configure", "{\"topic\":\"q\",\"consumer_group\":\"other\"}");
    A_LEN(v, "retry_schedule", 0);
    A_NULL(v, "dlq_topic");
    A_U64(v, "max_deliveries", 0);

    api(f, 200, PUB,
        "{\"topic\":\"q\",\"msgs\":[{\"value\":[1],\"key\":\"k\",\"headers\":{\"a\":\"b\"}},"
        "{\"value\":[2]},{\"value\":[3],\"delay_ms\":3600000}]}");
    v = api(f, 200, Q "receive", "{\"topic\":\"q\",\"consumer_group\":\"g\"}");
    A_LEN(v, "msgs", 2); /* the delayed one is hidden */
    A_LEN(v, "msgs[0]", 7);
    A_STR(v, "msgs[0].msg_id", "0:0");
    A_BYTES(v, "msgs[0].value", "\x01", 1);
    A_STR(v, "msgs[0].headers.a", "b");
    A_TYPE(v, "msgs[0].timestamp", VAL_UINT);
    A_NULL(v, "msgs[0].scheduled_at");
    A_STR(v, "msgs[0].key", "k");
    A_U64(v, "msgs[0].attempt", 1);
    A_STR(v, "msgs[1].msg_id", "0:1");
    A_NULL(v, "msgs[1].key");
    A_ABSENT(v, "msgs[0].offset");
    A_ABSENT(v, "msgs[0].topic");

    v = api(f, 200, Q "extend-lease",
            "{\"topic\":\"q\",\"consumer_group\":\"g\",\"msg_ids\":[\"0:0\",\"0:1\"],"
            "\"lease_duration_ms\":60000}");
    A_LEN(v, "", 0);
    v = api(f, 200, Q "ack", "{\"topic\":\"q\",\"consumer_group\":\"g\",\"msg_ids\":[\"0:0\"]}");
    A_LEN(v, "", 0);
    v = api(f, 200, Q "ack", "{\"topic\":\"q\",\"consumer_group\":\"g\",\"msg_ids\":[]}");
    A_LEN(v, "", 0);
    v = api(f, 400, Q "extend-lease",
            "{\"topic\":\"q\",\"consumer_group\":\"g\",\"msg_ids\":[\"0:1\",\"0:0\"]}");
    A_STR(v, "detail", "message is already acked");
    A_STR(v, "location", "msg_ids[1]");
    v = api(f, 200, Q "nack",
            "{\"topic\":\"q\",\"consumer_group\":\"g\",\"msg_ids\":[\"0:1\"],\"delay_ms\":0}");
    A_LEN(v, "", 0);
    v = api(f, 200, Q "receive", "{\"topic\":\"q~0\",\"consumer_group\":\"g\",\"batch_size\":5}");
    A_LEN(v, "msgs", 1);
    A_STR(v, "msgs[0].msg_id", "0:1");
    A_U64(v, "msgs[0].attempt", 2);

    v = api(f, 200, GR "get", "{\"topic\":\"q\",\"mode\":\"queue\",\"consumer_group\":\"g\"}");
    A_LEN(v, "", 11);
    A_STR(v, "topic", "q");
    A_STR(v, "consumer_group", "g");
    A_STR(v, "mode", "queue");
    A_U64(v, "in_flight", 1);
    A_U64(v, "waiting_retry", 0);
    A_U64(v, "dead", 0);
    A_U64(v, "delayed", 1);
    A_TYPE(v, "lag", VAL_UINT);
    A_TYPE(v, "lag_ms", VAL_UINT);
    A_U64(v, "config.max_deliveries", 5);
    A_STR(v, "config.dlq_topic", "dead");
    A_U64(v, "config.retry_schedule[1]", 200);
    A_LEN(v, "partitions", 1);
    A_LEN(v, "partitions[0]", 4);
    A_U64(v, "partitions[0].partition", 0);
    A_U64(v, "partitions[0].floor", 1);
    A_TYPE(v, "partitions[0].lag", VAL_UINT);
    A_TYPE(v, "partitions[0].lag_ms", VAL_UINT);
    A_ABSENT(v, "partitions[0].cursor");

    /* nack past the schedule: dead-lettered into "dead" */
    api(f, 200, Q "nack", "{\"topic\":\"q\",\"consumer_group\":\"g\",\"msg_ids\":[\"0:1\"]}");
    api(f, 200, CLK, "{\"ms\":1000}");
    v = api(f, 200, Q "receive", "{\"topic\":\"q\",\"consumer_group\":\"g\"}");
    A_U64(v, "msgs[0].attempt", 3);
    api(f, 200, Q "nack", "{\"topic\":\"q\",\"consumer_group\":\"g\",\"msg_ids\":[\"0:1\"]}");
    v = api(f, 200, TP "get", "{\"topic\":\"dead\"}");
    A_U64(v, "partitions[0].end_offset", 1);
    v = api(f, 200, Q "redrive-dlq", "{\"topic\":\"q\",\"consumer_group\":\"g\"}");
    A_LEN(v, "", 0);
    assert_int_equal(f->ctx.stats.acked, 1);
    assert_int_equal(f->ctx.stats.nacked, 3);

    /* group.list: every group of the namespace, or of one topic */
    api(f, 200, SR, "{\"topic\":\"q\",\"consumer_group\":\"s\"}");
    v = api(f, 200, GR "list", "{}");
    A_LEN(v, "", 1);
    A_LEN(v, "groups", 3);
    A_STR(v, "groups[0].consumer_group", "s"); /* by topic, mode, name */
    A_STR(v, "groups[0].mode", "stream");
    A_NULL(v, "groups[0].config");
    A_LEN(v, "groups[0].partitions[0]", 5);
    A_TYPE(v, "groups[0].partitions[0].cursor", VAL_UINT);
    A_TYPE(v, "groups[0].partitions[0].leased", VAL_BOOL);
    A_STR(v, "groups[1].consumer_group", "g");
    A_STR(v, "groups[2].consumer_group", "other");
    v = api(f, 200, GR "list", "{\"topic\":\"dead\"}");
    A_LEN(v, "groups", 0);
    v = api(f, 200, GR "list", "{\"topic\":\"q\",\"namespace\":null}");
    A_LEN(v, "groups", 3);
}

static void test_fifo(void **state)
{
    struct fx *f = *state;
    api(f, 200, FI "configure", "{\"topic\":\"f\",\"consumer_group\":\"g\"}");
    api(f, 200, PUB,
        "{\"topic\":\"f\",\"msgs\":[{\"value\":[1],\"key\":\"a\"},{\"value\":[2],\"key\":\"a\"},"
        "{\"value\":[3],\"key\":\"b\"}]}");
    const struct val *v =
        api(f, 200, FI "receive", "{\"topic\":\"f\",\"consumer_group\":\"g\",\"batch_size\":1}");
    A_LEN(v, "msgs", 1);
    A_STR(v, "msgs[0].msg_id", "0:0");
    A_STR(v, "msgs[0].key", "a");
    /* another consumer: key a is blocked, b is free */
    v = api(f, 200, FI "receive", "{\"topic\":\"f\",\"consumer_group\":\"g\"}");
    A_LEN(v, "msgs", 1);
    A_STR(v, "msgs[0].msg_id", "0:2");
    api(f, 200, FI "ack", "{\"topic\":\"f\",\"consumer_group\":\"g\",\"msg_ids\":[\"0:0\"]}");
    v = api(f, 200, FI "receive", "{\"topic\":\"f\",\"consumer_group\":\"g\"}");
    A_STR(v, "msgs[0].msg_id", "0:1");
    api(f, 200, FI "extend-lease",
        "{\"topic\":\"f\",\"consumer_group\":\"g\",\"msg_ids\":[\"0:1\"]}");
    api(f, 200, FI "nack", "{\"topic\":\"f\",\"consumer_group\":\"g\",\"msg_ids\":[\"0:1\"]}");
    v = api(f, 200, GR "get", "{\"topic\":\"f\",\"mode\":\"fifo\",\"consumer_group\":\"g\"}");
    A_STR(v, "mode", "fifo");
    A_U64(v, "dead", 1);
    api(f, 200, FI "redrive-dlq", "{\"topic\":\"f\",\"consumer_group\":\"g\"}");
    v = api(f, 200, GR "get", "{\"topic\":\"f\",\"mode\":\"fifo\",\"consumer_group\":\"g\"}");
    A_U64(v, "dead", 0);
    /* a FIFO group is distinct from a queue group of the same name */
    api(f, 400, GR "get", "{\"topic\":\"f\",\"mode\":\"queue\",\"consumer_group\":\"g\"}");
}

/* ---- MessagePack and value encodings ----------------------------------------------- */

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void test_msgpack(void **state)
{
    struct fx *f = *state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* {"topic":"m","msgs":[{"value":bin(00 ff 10)},{"value":"hé","key":"k",
     *  "headers":{"x":"y"}},{"value":[1,2],"delay_ms":5}]} */
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "topic");
    pk_str(&pk, "m");
    pk_str(&pk, "msgs");
    msgpack_pack_array(&pk, 3);
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, "value");
    msgpack_pack_bin(&pk, 3);
    msgpack_pack_bin_body(&pk, "\x00\xff\x10", 3);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "value");
    pk_str(&pk, "h\xc3\xa9");
    pk_str(&pk, "key");
    pk_str(&pk, "k");
    pk_str(&pk, "headers");
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, "x");
    pk_str(&pk, "y");
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "value");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_uint8(&pk, 2);
    pk_str(&pk, "delay_ms");
    msgpack_pack_uint64(&pk, 5);
    int st;
    const struct val *v = call_val(f, PUB, parse_msgpack(f, sb.data, sb.size), FORMAT_MSGPACK, &st);
    assert_int_equal(st, 200);
    A_STR(v, "topics[0].topic", "m~0");
    A_U64(v, "topics[0].offset", 3);

    /* receive, answered in MessagePack: bin values, nil for absent values */
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "topic");
    pk_str(&pk, "m");
    pk_str(&pk, "consumer_group");
    pk_str(&pk, "g");
    pk_str(&pk, "default_starting_position");
    pk_str(&pk, "earliest");
    v = call_val(f, SR, parse_msgpack(f, sb.data, sb.size), FORMAT_MSGPACK, &st);
    assert_int_equal(st, 200);
    A_LEN(v, "msgs", 3);
    A_TYPE(v, "msgs[0].value", VAL_BIN);
    A_BYTES(v, "msgs[0].value", "\x00\xff\x10", 3);
    A_NULL(v, "msgs[0].key");
    A_NULL(v, "msgs[0].scheduled_at");
    A_LEN(v, "msgs[0].headers", 0);
    A_BYTES(v, "msgs[1].value", "h\xc3\xa9", 3);
    A_STR(v, "msgs[1].key", "k");
    A_STR(v, "msgs[1].headers.x", "y");
    A_BYTES(v, "msgs[2].value", "\x01\x02", 2);
    A_U64(v, "msgs[2].scheduled_at", u64_at(v, "msgs[2].timestamp") + 5);

    /* MessagePack errors: a negative int in a value array; a bin where a
     * string belongs; a float batch_size */
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "topic");
    pk_str(&pk, "m");
    pk_str(&pk, "msgs");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, "value");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_int8(&pk, -1);
    v = call_val(f, PUB, parse_msgpack(f, sb.data, sb.size), FORMAT_MSGPACK, &st);
    assert_int_equal(st, 422);
    A_STR(v, "code", "invalid_data");
    A_STR(v, "location", "msgs[0].value[1]");
    A_TYPE(v, "detail", VAL_STR);

    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "topic");
    msgpack_pack_bin(&pk, 1);
    msgpack_pack_bin_body(&pk, "m", 1);
    pk_str(&pk, "msgs");
    msgpack_pack_array(&pk, 0);
    v = call_val(f, PUB, parse_msgpack(f, sb.data, sb.size), FORMAT_MSGPACK, &st);
    assert_int_equal(st, 422);
    A_STR(v, "location", "topic");

    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "topic");
    pk_str(&pk, "m");
    pk_str(&pk, "consumer_group");
    pk_str(&pk, "g");
    pk_str(&pk, "batch_size");
    msgpack_pack_double(&pk, 2.0);
    v = call_val(f, Q "receive", parse_msgpack(f, sb.data, sb.size), FORMAT_MSGPACK, &st);
    assert_int_equal(st, 422);
    A_STR(v, "location", "batch_size");

    /* JSON request, MessagePack answer (the HTTP layer negotiated it) */
    v = call_val(f, NS "get", parse_json(f, "{\"name\":\"default\"}"), FORMAT_MSGPACK, &st);
    assert_int_equal(st, 200);
    A_NULL(v, "retention.period_ms");
    A_NULL(v, "retention.size_bytes");
    A_NULL(v, "retention.topic_bytes");
    msgpack_sbuffer_destroy(&sb);
}

static void test_value_encodings(void **state)
{
    struct fx *f = *state;
    api(f, 200, PUB, "{\"topic\":\"e\",\"msgs\":[{\"value\":\"h\\u00e9llo\"},{\"value\":[255]}]}");
    const struct val *v =
        api(f, 200, SR,
            "{\"topic\":\"e\",\"consumer_group\":\"a\",\"default_starting_position\":"
            "\"earliest\",\"value_encoding\":\"utf8\"}");
    A_STR(v, "msgs[0].value", "h\xc3\xa9llo");
    A_STR(v, "msgs[1].value", "\xef\xbf\xbd"); /* invalid UTF-8 becomes U+FFFD */
    v = api(f, 200, SR,
            "{\"topic\":\"e\",\"consumer_group\":\"b\",\"default_starting_position\":"
            "\"earliest\",\"value_encoding\":\"base64\"}");
    A_STR(v, "msgs[0].value", "aMOpbGxv");
    A_STR(v, "msgs[1].value", "/w==");
    v = api(f, 200, Q "receive",
            "{\"topic\":\"e\",\"consumer_group\":\"c\",\"value_encoding\":\"base64\"}");
    A_STR(v, "msgs[0].value", "aMOpbGxv");
    v = api(f, 200, Q "receive",
            "{\"topic\":\"e\",\"consumer_group\":\"d\",\"value_encoding\":null}");
    A_BYTES(v, "msgs[0].value", "h\xc3\xa9llo", 6);
    A_BYTES(v, "msgs[1].value", "\xff", 1);
}

/* ---- long polling ------------------------------------------------------------------- */

static void test_long_poll_publish(void **state)
{
    struct fx *f = *state;
    /* a new "latest" stream group waits for a publish that comes during the wait */
    struct api_call c;
    call_init(f, &c, SR,
              parse_json(f, "{\"topic\":\"lp\",\"consumer_group\":\"g\",\"batch_size\":1,"
                            "\"batch_wait_ms\":5000}"),
              FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_POLL);
    assert_int_equal(c.deadline_ms, f->mono + 5000);
    assert_int_equal(c.wake_ms, UINT64_MAX);
    assert_non_null(c.wait.ns); /* the new group's starting point was journaled */
    uint64_t requests = f->ctx.stats.requests;
    f->mono += 100;
    assert_int_equal(attempt(f, &c), API_POLL);
    assert_int_equal(c.deadline_ms, 1000 + 5000); /* set once */
    assert_non_null(c.wait.ns);                   /* and kept */
    assert_int_equal(f->ctx.stats.requests, requests);

    api(f, 200, PUB, "{\"topic\":\"lp\",\"msgs\":[{\"value\":[42]}]}");
    f->mono += 100;
    assert_int_equal(attempt(f, &c), API_RESPOND);
    assert_int_equal(c.status, 200);
    const struct val *v = response(f, &c);
    A_LEN(v, "msgs", 1);
    A_BYTES(v, "msgs[0].value", "*", 1);
    out_free(&c.out);

    /* not enough for the batch: poll, then answer with what there is at final */
    api(f, 200, PUB, "{\"topic\":\"lq\",\"msgs\":[{\"value\":[1]},{\"value\":[2]}]}");
    call_init(f, &c, Q "receive",
              parse_json(f, "{\"topic\":\"lq\",\"consumer_group\":\"g\",\"batch_size\":5,"
                            "\"batch_wait_ms\":1000}"),
              FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_POLL);
    assert_null(c.wait.ns);
    c.final = true;
    assert_int_equal(attempt(f, &c), API_RESPOND);
    v = response(f, &c);
    A_LEN(v, "msgs", 2);
    out_free(&c.out);

    /* past the deadline (without final) it answers too, possibly empty */
    call_init(f, &c, Q "receive",
              parse_json(f, "{\"topic\":\"lq\",\"consumer_group\":\"g\",\"batch_wait_ms\":50}"),
              FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_POLL);
    f->mono = c.deadline_ms;
    assert_int_equal(attempt(f, &c), API_RESPOND);
    v = response(f, &c);
    A_LEN(v, "msgs", 0);
    out_free(&c.out);

    /* enough available at once: no wait at all */
    api(f, 200, PUB, "{\"topic\":\"lq\",\"msgs\":[{\"value\":[3]}]}");
    call_init(f, &c, Q "receive",
              parse_json(f, "{\"topic\":\"lq\",\"consumer_group\":\"g\",\"batch_size\":1,"
                            "\"batch_wait_ms\":1000}"),
              FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_RESPOND);
    v = response(f, &c);
    A_LEN(v, "msgs", 1);
    out_free(&c.out);

    /* batch_wait_ms 0 answers at once */
    call_init(f, &c, Q "receive",
              parse_json(f, "{\"topic\":\"lq\",\"consumer_group\":\"g\",\"batch_wait_ms\":0}"),
              FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_RESPOND);
    out_free(&c.out);
}

static void test_long_poll_wakeup(void **state)
{
    struct fx *f = *state;
    /* consumer A leases the only message for 10 s; B's wait wakes at the expiry */
    api(f, 200, PUB, "{\"topic\":\"w\",\"msgs\":[{\"value\":[1]}]}");
    api(f, 200, Q "receive",
        "{\"topic\":\"w\",\"consumer_group\":\"g\",\"lease_duration_ms\":10000}");
    struct api_call c;
    call_init(f, &c, Q "receive",
              parse_json(f, "{\"topic\":\"w\",\"consumer_group\":\"g\",\"batch_size\":1,"
                            "\"batch_wait_ms\":60000}"),
              FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_POLL);
    assert_true(c.wake_ms != UINT64_MAX);
    assert_true(c.wake_ms > f->mono + 5000 && c.wake_ms <= f->mono + 10000);
    assert_true(c.wake_ms <= c.deadline_ms);

    api(f, 200, CLK, "{\"ms\":10001}");
    f->mono = c.wake_ms;
    assert_int_equal(attempt(f, &c), API_RESPOND);
    const struct val *v = response(f, &c);
    A_LEN(v, "msgs", 1);
    A_U64(v, "msgs[0].attempt", 2);
    out_free(&c.out);

    /* a wake time never lies beyond the deadline */
    api(f, 200, Q "receive",
        "{\"topic\":\"w\",\"consumer_group\":\"h\",\"lease_duration_ms\":10000}");
    call_init(f, &c, Q "receive",
              parse_json(f, "{\"topic\":\"w\",\"consumer_group\":\"h\",\"batch_wait_ms\":2000}"),
              FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_POLL);
    assert_int_equal(c.wake_ms, c.deadline_ms);
    out_free(&c.out);
}

static void test_long_poll_errors(void **state)
{
    struct fx *f = *state;
    struct api_call c;
    /* errors come at once, not after the wait */
    call_init(f, &c, SR,
              parse_json(f, "{\"namespace\":\"nope\",\"topic\":\"t\",\"consumer_group\":\"g\","
                            "\"batch_wait_ms\":5000}"),
              FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_RESPOND);
    assert_int_equal(c.status, 400);
    out_free(&c.out);

    call_init(f, &c, Q "receive",
              parse_json(f, "{\"topic\":\"t\",\"consumer_group\":\"g\","
                            "\"lease_duration_ms\":0,\"batch_wait_ms\":5000}"),
              FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_RESPOND);
    assert_int_equal(c.status, 422);
    out_free(&c.out);

    /* some available but not enough, bad group name: 422 at once */
    api(f, 200, PUB, "{\"topic\":\"t\",\"msgs\":[{\"value\":[1]}]}");
    call_init(f, &c, Q "receive",
              parse_json(f, "{\"topic\":\"t\",\"consumer_group\":\"bad!\",\"batch_wait_ms\":5000}"),
              FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_RESPOND);
    assert_int_equal(c.status, 422);
    const struct val *v = response(f, &c);
    A_STR(v, "location", "consumer_group");
    out_free(&c.out);

    /* every partition leased to someone else in the group: no_available_leases at once */
    api(f, 200, SR,
        "{\"topic\":\"t\",\"consumer_group\":\"s\","
        "\"default_starting_position\":\"earliest\"}");
    call_init(f, &c, SR,
              parse_json(f, "{\"topic\":\"t\",\"consumer_group\":\"s\",\"batch_wait_ms\":5000}"),
              FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_RESPOND);
    assert_int_equal(c.status, 400);
    v = response(f, &c);
    A_STR(v, "code", "no_available_leases");
    out_free(&c.out);

    /* a rejected body is answered at once even on a later attempt shape */
    call_init(f, &c, Q "receive",
              parse_json(f, "{\"topic\":\"t\",\"consumer_group\":\"g\",\"batch_wait_ms\":3600001}"),
              FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_RESPOND);
    assert_int_equal(c.status, 422);
    out_free(&c.out);
}

/* ---- ops, stats, robustness -------------------------------------------------------- */

static void test_ops_and_clock(void **state)
{
    struct fx *f = *state;
    assert_true(api_known_op(&f->ctx, "v1.msgs.publish", 15));
    assert_false(api_known_op(&f->ctx, "v1.msgs.publis", 14));
    assert_false(api_known_op(&f->ctx, "v1.msgs.publish.", 16));
    assert_false(api_known_op(&f->ctx, NULL, 0));
    assert_true(api_known_op(&f->ctx, CLK, strlen(CLK)));

    uint64_t before = broker_now(f->b);
    const struct val *v = api(f, 200, CLK, "{\"ms\":3600000}");
    A_LEN(v, "", 1);
    assert_true(u64_at(v, "now") >= before + 3600000);
    assert_true(broker_now(f->b) >= before + 3600000);

    /* without --test-clock the route does not exist */
    f->ctx.test_clock = false;
    assert_false(api_known_op(&f->ctx, CLK, strlen(CLK)));
    v = api(f, 404, CLK, "{\"ms\":1}");
    A_STR(v, "code", "not_found");
    A_ABSENT(v, "location");
    f->ctx.test_clock = true;

    /* the op id is matched by length, not as a C string */
    struct api_call c;
    call_init(f, &c, "v1.msgs.topic.listXYZ", parse_json(f, "{}"), FORMAT_JSON);
    c.op_len = strlen("v1.msgs.topic.list");
    assert_int_equal(api_handle(&f->ctx, &c), API_RESPOND);
    assert_int_equal(c.status, 200);
    out_free(&c.out);

    /* a body that is not there at all */
    call_init(f, &c, TP "list", NULL, FORMAT_JSON);
    assert_int_equal(api_handle(&f->ctx, &c), API_RESPOND);
    assert_int_equal(c.status, 422);
    out_free(&c.out);

    /* error bodies, with and without location */
    struct out o;
    out_init(&o, FORMAT_JSON);
    api_error_body(&o, "invalid_data", "Bad.", "msgs[0]");
    assert_int_equal(out_finish(&o), 0);
    assert_int_equal(o.buf.len, strlen("{\"code\":\"invalid_data\",\"detail\":\"Bad.\","
                                       "\"location\":\"msgs[0]\"}"));
    assert_memory_equal(o.buf.data,
                        "{\"code\":\"invalid_data\",\"detail\":\"Bad.\",\"location\":\"msgs[0]\"}",
                        o.buf.len);
    out_free(&o);
    out_init(&o, FORMAT_JSON);
    api_error_body(&o, "not_found", "No.", "");
    assert_int_equal(out_finish(&o), 0);
    assert_memory_equal(o.buf.data, "{\"code\":\"not_found\",\"detail\":\"No.\"}", o.buf.len);
    out_free(&o);
}

static void test_stats(void **state)
{
    struct fx *f = *state;
    api(f, 200, PUB, "{\"topic\":\"st\",\"msgs\":[{\"value\":[1]},{\"value\":[2]}]}");
    api(f, 200, Q "receive", "{\"topic\":\"st\",\"consumer_group\":\"g\"}");
    api(f, 200, Q "ack", "{\"topic\":\"st\",\"consumer_group\":\"g\",\"msg_ids\":[\"0:0\"]}");
    api(f, 200, Q "nack", "{\"topic\":\"st\",\"consumer_group\":\"g\",\"msg_ids\":[\"0:1\"]}");
    api(f, 422, PUB, "{}");
    api(f, 404, "v1.x", "{}");
    const struct api_stats *s = &f->ctx.stats;
    assert_int_equal(s->published, 2);
    assert_int_equal(s->publish_calls, 1);
    assert_int_equal(s->received, 2);
    assert_int_equal(s->acked, 1);
    assert_int_equal(s->nacked, 1);
    assert_int_equal(s->requests, 6);
    assert_int_equal(s->errors_4xx, 2);
    assert_int_equal(s->errors_5xx, 0);
}

static const char *const sweep_ops[] = {
    NS "configure",
    NS "get",
    NS "list",
    TP "configure",
    TP "get",
    TP "list",
    TP "trim",
    PUB,
    SR,
    SC,
    SK,
    Q "receive",
    Q "ack",
    Q "nack",
    Q "extend-lease",
    Q "configure",
    Q "redrive-dlq",
    FI "receive",
    FI "ack",
    FI "nack",
    FI "extend-lease",
    FI "configure",
    FI "redrive-dlq",
    GR "list",
    GR "get",
    CLK,
};
static const char *const sweep_fields[] = {
    "namespace",
    "name",
    "topic",
    "partitions",
    "msgs",
    "value",
    "headers",
    "key",
    "group_key",
    "delay_ms",
    "idempotency_key",
    "consumer_group",
    "batch_size",
    "lease_duration_ms",
    "default_starting_position",
    "batch_wait_ms",
    "value_encoding",
    "offset",
    "position",
    "timestamp",
    "msg_ids",
    "retry_schedule",
    "dlq_topic",
    "max_deliveries",
    "mode",
    "retention",
    "before_offset",
    "before_timestamp",
    "ms",
};
static const char *const sweep_values[] = {
    "null",
    "true",
    "-1",
    "0",
    "1",
    "9223372036854775807",
    "1.5",
    "\"\"",
    "\"t\"",
    "\"t~0\"",
    "\"default\"",
    "\"queue\"",
    "[]",
    "[1]",
    "[\"\"]",
    "[\"0:0\"]",
    "{}",
    "{\"value\":1}",
    "[{\"value\":[300]}]",
    "[{\"value\":\"x\",\"key\":\"k\"}]",
    "{\"period_ms\":\"x\"}",
};

/* Every op × every field × odd values: never a crash, always a well-formed
 * body with an expected status. */
static void test_sweep(void **state)
{
    struct fx *f = *state;
    size_t calls = 0;
    for (size_t o = 0; o < sizeof sweep_ops / sizeof *sweep_ops; o++)
        for (size_t k = 0; k < sizeof sweep_fields / sizeof *sweep_fields; k++) {
            /* the parsed trees of one round are not needed after it */
            arena_free(&f->a);
            arena_init(&f->a);
            for (size_t i = 0; i < sizeof sweep_values / sizeof *sweep_values; i++)
                for (int inside = 0; inside < 2; inside++) {
                    char body[512];
                    if (inside) /* inside a message of a publish */
                        snprintf(body, sizeof body,
                                 "{\"topic\":\"t\",\"consumer_group\":\"g\",\"msgs\":[{"
                                 "%s\"%s\":%s}]}",
                                 strcmp(sweep_fields[k], "value") ? "\"value\":[1]," : "",
                                 sweep_fields[k], sweep_values[i]);
                    else /* the base fields, minus the one swept */
                        snprintf(body, sizeof body, "{%s%s%s\"%s\":%s}",
                                 strcmp(sweep_fields[k], "topic") ? "\"topic\":\"t\"," : "",
                                 strcmp(sweep_fields[k], "consumer_group")
                                     ? "\"consumer_group\":\"g\","
                                     : "",
                                 strcmp(sweep_fields[k], "name") ? "\"name\":\"n\"," : "",
                                 sweep_fields[k], sweep_values[i]);
                    /* keep the clock where it is (the largest value is a 422) */
                    const char *val = sweep_values[i];
                    if (strcmp(sweep_fields[k], "ms") == 0 && val[0] >= '1' && val[0] <= '9' &&
                        strcmp(val, "9223372036854775807") != 0)
                        continue;
                    struct val *body_v = parse_json(f, body);
                    for (int fmt = 0; fmt < 2; fmt++) {
                        struct api_call c;
                        call_init(f, &c, sweep_ops[o], body_v, fmt ? FORMAT_MSGPACK : FORMAT_JSON);
                        enum api_result r = api_handle(&f->ctx, &c);
                        if (r == API_POLL) {
                            c.final = true;
                            r = attempt(f, &c);
                        }
                        assert_int_equal(r, API_RESPOND);
                        const struct val *v = response(f, &c);
                        assert_int_equal(v->type, VAL_MAP);
                        if (c.status != 200) {
                            if (c.status != 400 && c.status != 404 && c.status != 422)
                                fail_msg("%s %s: status %d: %s", sweep_ops[o], body, c.status,
                                         last_body);
                            A_TYPE(v, "code", VAL_STR);
                            A_TYPE(v, "detail", VAL_STR);
                        }
                        out_free(&c.out);
                        calls++;
                    }
                }
        }
    assert_true(calls > 10000);
    const struct val *v = api(f, 200, TP "list", "{}");
    A_TYPE(v, "topics", VAL_ARRAY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rejections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejections_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_namespaces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_topics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msgpack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_value_encodings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_poll_publish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_poll_wakeup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_poll_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ops_and_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
