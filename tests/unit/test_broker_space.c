/* test_broker_space.c — disk space and checkpoint edge cases of the broker:
 * trims give space back once checkpoints cover it, a journal whose segments
 * vanished under existing checkpoints is refused, and an idempotency key
 * reused after its entry expired under a shrunk window replays cleanly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/log.h"
#include "broker/broker.h"
#include "coyote.h"
#include "testutil.h"

static struct broker *open_broker_headers(const char *dir, uint64_t dedup_ms, uint32_t max_headers,
                                          struct broker_error *err);

static struct broker *open_broker(const char *dir, uint64_t dedup_ms, struct broker_error *err)
{
    return open_broker_headers(dir, dedup_ms, 0, err);
}

static struct broker *open_broker_headers(const char *dir, uint64_t dedup_ms, uint32_t max_headers,
                                          struct broker_error *err)
{
    struct broker_config cfg = {0};
    cfg.data_dir = dir;
    cfg.fsync = JOURNAL_FSYNC_NEVER;
    cfg.segment_bytes = 1 << 20; /* the smallest the server allows */
    cfg.checkpoint_bytes = 1 << 20;
    cfg.test_clock = true;
    broker_limits_default(&cfg.limits);
    if (dedup_ms)
        cfg.limits.dedup_window_ms = dedup_ms;
    if (max_headers)
        cfg.limits.max_headers = max_headers;
    struct broker *b = NULL;
    if (broker_open(&cfg, &b, err))
        return NULL;
    return b;
}

static void publish_n(struct broker *b, const char *topic, int n, size_t size)
{
    static uint8_t value[8192];
    struct broker_msg_in m = {.value = value, .value_len = size};
    struct broker_publish_req req = {0};
    req.topic.name = (struct bstr){topic, strlen(topic)};
    req.topic.partition = -1;
    req.msgs = &m;
    req.n_msgs = 1;
    for (int i = 0; i < n; i++) {
        struct broker_publish_res res;
        struct broker_wait w;
        struct broker_error err;
        assert_int_equal(broker_publish(b, &req, &res, &w, &err), 0);
    }
}

static uint64_t journal_bytes(struct broker *b)
{
    struct journal_stats js;
    assert_int_equal(broker_ns_journal_stats(b, BSTR("default"), &js), 0);
    return js.bytes;
}

static void test_trim_gives_space_back(void **state)
{
    (void)state;
    char *dir = tu_tempdir("space");
    struct broker_error err;
    struct broker *b = open_broker(dir, 0, &err);
    assert_non_null(b);
    publish_n(b, "big", 1000, 8000); /* ~8 MB: several 1 MiB segments */
    uint64_t before = journal_bytes(b);
    assert_true(before > 6u << 20);
    struct broker_trim_req tr = {0};
    tr.topic.name = BSTR("big");
    tr.topic.partition = 0;
    tr.has_before_offset = true;
    tr.before_offset = 1000; /* everything */
    struct broker_trim_res res;
    struct broker_wait w;
    assert_int_equal(broker_topic_trim(b, &tr, &res, &w, &err), 0);
    /* Two ticks with checkpoints in between: segments go only below the older
     * of the two kept checkpoints. */
    for (int i = 0; i < 3; i++) {
        publish_n(b, "small", 200, 8000); /* journal bytes make checkpoints due */
        broker_tick(b);
        broker_checkpoints_wait(b);
    }
    uint64_t after = journal_bytes(b);
    assert_true(after < before); /* the trimmed topic's segments were deleted */
    assert_int_equal(broker_close(b), 0);
    /* and the data directory still opens, with offsets intact */
    b = open_broker(dir, 0, &err);
    assert_non_null(b);
    struct broker_topic_info ti;
    struct broker_ns_ref def = {0};
    assert_int_equal(broker_topic_get(b, def, BSTR("big"), &ti, &err), 0);
    assert_int_equal(ti.parts[0].start_offset, 1000);
    assert_int_equal(ti.parts[0].end_offset, 1000);
    assert_int_equal(broker_close(b), 0);
    tu_rmtree(dir);
}

static void test_missing_segments_under_checkpoints_refused(void **state)
{
    (void)state;
    char *dir = tu_tempdir("space");
    struct broker_error err;
    struct broker *b = open_broker(dir, 0, &err);
    assert_non_null(b);
    publish_n(b, "t", 50, 100);
    assert_int_equal(broker_close(b), 0); /* checkpoints */
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -f %s/ns/default/journal/*.seg", dir);
    assert_int_equal(system(cmd), 0);
    log_set_level(CYLOG_OFF);
    b = open_broker(dir, 0, &err);
    log_set_level(CYLOG_INFO);
    assert_null(b); /* never an empty broker pretending nothing was there */
    assert_int_equal(err.status, 503);
    tu_rmtree(dir);
}

static void test_idempotency_key_after_window_shrank(void **state)
{
    (void)state;
    char *dir = tu_tempdir("space");
    struct broker_error err;
    struct broker *b = open_broker(dir, 3600000, &err);
    assert_non_null(b);
    struct broker_msg_in m = {.value = (const uint8_t *)"x", .value_len = 1};
    struct broker_publish_req req = {0};
    req.topic.name = BSTR("t");
    req.topic.partition = -1;
    req.msgs = &m;
    req.n_msgs = 1;
    req.has_idempotency_key = true;
    struct broker_publish_res res;
    struct broker_wait w;
    req.idempotency_key = BSTR("long");
    assert_int_equal(broker_publish(b, &req, &res, &w, &err), 0);
    assert_int_equal(broker_close(b), 0);
    /* Restart with a 1 s window: "short" expires before "long" does. */
    b = open_broker(dir, 1000, &err);
    assert_non_null(b);
    req.idempotency_key = BSTR("short");
    assert_int_equal(broker_publish(b, &req, &res, &w, &err), 0);
    assert_int_equal(broker_clock_advance(b, 2000), 0);
    assert_int_equal(broker_publish(b, &req, &res, &w, &err), 0); /* expired: stored again */
    assert_false(res.duplicate);
    assert_int_equal(res.parts[0].start_offset, 2);
    struct buf before = BUF_INIT, after = BUF_INIT;
    assert_int_equal(broker_dump_state(b, &before), 0);
    assert_int_equal(broker_close(b), 0);
    b = open_broker(dir, 1000, &err); /* replays cleanly, same state */
    assert_non_null(b);
    assert_int_equal(broker_dump_state(b, &after), 0);
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.data, after.data, before.len);
    buf_free(&before);
    buf_free(&after);
    assert_int_equal(broker_close(b), 0);
    tu_rmtree(dir);
}

/* --max-headers may be raised above 64: receives must return every header. */
static void test_many_headers_round_trip(void **state)
{
    (void)state;
    char *dir = tu_tempdir("space");
    struct broker_error err;
    struct broker *b = open_broker_headers(dir, 0, 200, &err);
    assert_non_null(b);
    static char names[150][8];
    struct broker_header h[150];
    for (int i = 0; i < 150; i++) {
        snprintf(names[i], sizeof names[i], "h%03d", i);
        h[i] = (struct broker_header){{names[i], 4}, {names[i], 4}};
    }
    struct broker_msg_in m = {.value = (const uint8_t *)"v", .value_len = 1, .headers = h,
                              .n_headers = 150};
    struct broker_publish_req req = {0};
    req.topic.name = BSTR("t");
    req.topic.partition = -1;
    req.msgs = &m;
    req.n_msgs = 1;
    struct broker_publish_res res;
    struct broker_wait w;
    assert_int_equal(broker_publish(b, &req, &res, &w, &err), 0);
    struct broker_receive_req rr = {0};
    rr.topic.name = BSTR("t");
    rr.topic.partition = -1;
    rr.group = BSTR("g");
    rr.start_earliest = true;
    struct broker_receive_res out;
    assert_int_equal(broker_stream_receive(b, &rr, &out, &w, &err), 0);
    assert_int_equal(out.n, 1);
    assert_int_equal(out.msgs[0].n_headers, 150);
    assert_memory_equal(out.msgs[0].headers[149].name.p, "h149", 4);
    assert_int_equal(broker_close(b), 0);
    tu_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trim_gives_space_back),
        cmocka_unit_test(test_missing_segments_under_checkpoints_refused),
        cmocka_unit_test(test_idempotency_key_after_window_shrank),
        cmocka_unit_test(test_many_headers_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
