/*
 * fuzz_request.c — libFuzzer target for api_handle (src/server/api.c): a
 * decoded request body run as one API operation against a live broker.
 *
 * Input layout:
 *   byte 0  the operation: index (mod the table size) into ops[] below, every
 *           op id of src/server/api.c's table, v1.test.clock.advance included;
 *   byte 1  the body format: even = JSON, odd = MessagePack;
 *   rest    the body, parsed with codec_parse_json / codec_parse_msgpack.
 * Inputs whose body does not parse are skipped (the codec has its own
 * targets: fuzz_json, fuzz_msgpack).
 *
 * One broker (a static, opened lazily) runs on an in-memory faultfs with
 * fsync=never and the test clock, so the fuzzer does no disk I/O and state
 * carries over between inputs (a publish then a receive, ack, ...). To keep
 * memory bounded it is closed and reopened fresh on a new faultfs every
 * RESET_INPUTS inputs, or once the request bytes fed to it since the last
 * reset (an upper bound on what its journal grew by) pass RESET_BYTES.
 *
 * Invariants checked (abort() when broken):
 *   1. api_handle with final = true answers API_RESPOND (never API_POLL);
 *   2. the status is 200 or one API.md allows: 400, 404, 413, 422, 500, 503;
 *   3. out_finish(&call.out) == 0: the response is a complete document;
 *   4. a non-200 body parses back as JSON into a map with a string "code".
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "faultfs.h"
#include "server/api.h"
#include "server/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const ops[] = {
    "v1.msgs.namespace.configure",
    "v1.msgs.namespace.get",
    "v1.msgs.namespace.list",
    "v1.msgs.topic.configure",
    "v1.msgs.topic.get",
    "v1.msgs.topic.list",
    "v1.msgs.topic.trim",
    "v1.msgs.publish",
    "v1.msgs.stream.receive",
    "v1.msgs.stream.commit",
    "v1.msgs.stream.seek",
    "v1.msgs.queue.receive",
    "v1.msgs.queue.ack",
    "v1.msgs.queue.nack",
    "v1.msgs.queue.extend-lease",
    "v1.msgs.queue.configure",
    "v1.msgs.queue.redrive-dlq",
    "v1.msgs.fifo.receive",
    "v1.msgs.fifo.ack",
    "v1.msgs.fifo.nack",
    "v1.msgs.fifo.extend-lease",
    "v1.msgs.fifo.configure",
    "v1.msgs.fifo.redrive-dlq",
    "v1.msgs.group.list",
    "v1.msgs.group.get",
    "v1.test.clock.advance",
};
#define N_OPS (sizeof ops / sizeof ops[0])

#define RESET_INPUTS 1000u
#define RESET_BYTES (4u << 20)

static struct faultfs *fs;
static struct broker *broker;
static struct api_ctx ctx;
static unsigned inputs_since_reset;
static uint64_t bytes_since_reset;
static uint64_t mono_ms = 1000;

static void env_close(void)
{
    if (broker) {
        broker_close(broker);
        broker = NULL;
    }
    if (fs) {
        faultfs_free(fs);
        fs = NULL;
    }
}

static void env_open(void)
{
    fs = faultfs_new(1);
    if (!fs)
        abort();
    struct broker_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.data_dir = "/data";
    cfg.fsync = JOURNAL_FSYNC_NEVER;
    cfg.test_clock = true;
    cfg.fo = faultfs_ops(fs);
    struct broker_error e;
    memset(&e, 0, sizeof e);
    if (broker_open(&cfg, &broker, &e) != 0)
        abort();
    memset(&ctx, 0, sizeof ctx);
    ctx.b = broker;
    ctx.test_clock = true;
    inputs_since_reset = 0;
    bytes_since_reset = 0;
}

static bool allowed_status(int s)
{
    switch (s) {
    case 200:
    case 400:
    case 404:
    case 413:
    case 422:
    case 500:
    case 503:
        return true;
    default:
        return false;
    }
}

static void check_error_body(const struct out *o)
{
    struct arena a;
    struct val *v = NULL;
    char detail[256], loc[128];
    arena_init(&a);
    if (codec_parse_json(o->buf.data, o->buf.len, &a, &v, detail, sizeof detail, loc,
                         sizeof loc) != CODEC_OK)
        abort();
    const struct val *code = val_get(v, "code");
    if (v->type != VAL_MAP || !code || code->type != VAL_STR)
        abort();
    arena_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const char *op = ops[data[0] % N_OPS];
    bool msgpack = data[1] & 1;
    const uint8_t *body = data + 2;
    size_t body_len = size - 2;

    if (broker && (inputs_since_reset >= RESET_INPUTS || bytes_since_reset >= RESET_BYTES))
        env_close();
    if (!broker)
        env_open();
    inputs_since_reset++;
    bytes_since_reset += size;

    struct arena a;
    struct val *v = NULL;
    char detail[256], loc[128];
    arena_init(&a);
    enum codec_err rc = msgpack ? codec_parse_msgpack(body, body_len, &a, &v, detail,
                                                      sizeof detail, loc, sizeof loc)
                                : codec_parse_json(body, body_len, &a, &v, detail, sizeof detail,
                                                   loc, sizeof loc);
    if (rc != CODEC_OK) {
        arena_free(&a);
        return 0;
    }

    struct api_call call;
    memset(&call, 0, sizeof call);
    call.op = op;
    call.op_len = strlen(op);
    call.body = v;
    call.fmt = FORMAT_JSON;
    call.final = true;
    call.now_mono_ms = mono_ms++;
    out_init(&call.out, FORMAT_JSON);

    if (api_handle(&ctx, &call) != API_RESPOND)
        abort();
    if (!allowed_status(call.status))
        abort();
    if (out_finish(&call.out) != 0)
        abort();
    if (call.status != 200)
        check_error_body(&call.out);

    out_free(&call.out);
    arena_free(&a);
    return 0;
}
