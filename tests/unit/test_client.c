/*
 * test_client.c — libcoyote (include/coyote.h) end to end.
 *
 * One table of scenarios runs twice, unchanged, on both backends — that is
 * the promise of coyote.h ("the same program runs unchanged on either"):
 *   file/<name>   the embedded backend on a fresh temp directory;
 *   http/<name>   a real coyoted (the build's binary, COYOTED_PATH) started
 *                 on 127.0.0.1 port 0 with its own temp directory, the port
 *                 read from its "coyoted ready ... (port P)" line on stderr.
 *                 Skipped when this build has no http backend.
 * Scenarios: publish (keys, headers, delay, idempotency duplicates), receive
 * in the three modes, ack / nack / extend / configure / redrive, commit /
 * seek, topic configure, cy_call_json, broker errors through cy_last_error
 * (per thread), and long polling woken from another thread.
 *
 * Embedded only: the directory lock (a forked child gets CY_ELOCKED and
 * prints nothing), persistence across close / reopen, URL forms, the fsync
 * option, concurrent publishers (the lock is released during the durability
 * wait), and argument checks.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
#include "coyote.h"
#include "coyoted_proc.h"
#include "server/codec.h"
#include "testutil.h"

/* ---- fixtures ------------------------------------------------------------------- */

struct fx {
    bool http;
    bool skip;
    char *dir;
    char url[4200];
    cy_client *c;  /* the client of the scenario */
    cy_client *c2; /* http: a second client (another connection); embedded: NULL */
    struct coyoted_proc server; /* http */
};

static cy_options fast_opts(const char *ns)
{
    cy_options o;
    memset(&o, 0, sizeof o);
    o.ns = ns;
    o.fsync = "never";
    return o;
}

/* Another client for a second thread: the same one when embedded (one
 * directory, one client per process), a second connection over http. */
static cy_client *other(struct fx *f)
{
    return f->c2 ? f->c2 : f->c;
}

static int setup_file(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = tu_tempdir("client");
    snprintf(f->url, sizeof f->url, "file://%s", f->dir);
    cy_options o = fast_opts(NULL);
    int rc = cy_open(f->url, &o, &f->c);
    if (rc)
        fail_msg("cy_open(%s): %s", f->url, cy_strerror(rc));
    *state = f;
    return 0;
}

/* Start coyoted and read its port from the ready line (no sleeping). */
static unsigned start_server(struct fx *f)
{
    static const char *const extra[] = {"--fsync", "never", NULL};
    if (coyoted_start(&f->server, coyoted_path(COYOTED_PATH_OR_NULL), f->dir, 0, extra, true))
        return 0;
    return f->server.port;
}

static int setup_http(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->http = true;
    f->server.pid = -1;
    *state = f;
    /* An http URL opens lazily: CY_EINVAL here means no http backend. */
    cy_client *probe = NULL;
    if (cy_open("http://127.0.0.1:9", NULL, &probe) == CY_EINVAL) {
        f->skip = true;
        return 0;
    }
    cy_close(probe);
#ifndef COYOTED_PATH
    f->skip = true;
    return 0;
#endif
    f->dir = tu_tempdir("client-http");
    unsigned port = start_server(f);
    if (!port)
        fail_msg("could not start coyoted");
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%u", port);
    cy_options o = fast_opts(NULL);
    int rc = cy_open(f->url, &o, &f->c);
    if (!rc)
        rc = cy_open(f->url, &o, &f->c2);
    if (rc)
        fail_msg("cy_open(%s): %s", f->url, cy_strerror(rc));
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    cy_close(f->c);
    cy_close(f->c2);
    coyoted_stop(&f->server, SIGTERM);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

static struct fx *fx_get(void **state)
{
    struct fx *f = *state;
    if (f->skip)
        skip();
    return f;
}

/* Replace f->c by a new client with namespace ns (embedded: close first —
 * the directory allows one client). */
static void fx_reopen_with(struct fx *f, const char *ns, uint32_t timeout_ms)
{
    cy_close(f->c);
    f->c = NULL;
    cy_options o = fast_opts(ns);
    o.timeout_ms = timeout_ms;
    int rc = cy_open(f->url, &o, &f->c);
    if (rc)
        fail_msg("reopen: %s", cy_strerror(rc));
}

static void fx_reopen(struct fx *f, const char *ns)
{
    fx_reopen_with(f, ns, 0);
}

/* ---- helpers ---------------------------------------------------------------------- */

static void ok_at(cy_client *c, int rc, const char *what, int line)
{
    if (rc == 0)
        return;
    const char *detail = NULL;
    int status = 0;
    const char *code = cy_last_error(c, &detail, &status);
    fail_msg("line %d: %s: %s (%s %d %s)", line, what, cy_strerror(rc), code ? code : "-", status,
             detail ? detail : "");
}
#define OK(c, expr) ok_at((c), (expr), #expr, __LINE__)

/* rc must be CY_ESERVER with this status and code, and a detail containing
 * `detail` (when not NULL). */
static void refused_at(cy_client *c, int rc, int status, const char *code, const char *detail,
                       int line)
{
    if (rc != CY_ESERVER)
        fail_msg("line %d: expected CY_ESERVER (%s), got %d (%s)", line, code, rc, cy_strerror(rc));
    const char *d = NULL;
    int st = 0;
    const char *got = cy_last_error(c, &d, &st);
    if (!got || strcmp(got, code) != 0 || st != status)
        fail_msg("line %d: expected %d %s, got %d %s (%s)", line, status, code, st,
                 got ? got : "(none)", d ? d : "");
    if (detail && (!d || !strstr(d, detail)))
        fail_msg("line %d: detail \"%s\" lacks \"%s\"", line, d ? d : "", detail);
}
#define REFUSED(c, expr, status, code, detail) \
    refused_at((c), (expr), (status), (code), (detail), __LINE__)

static cy_message text_msg(const char *value)
{
    cy_message m;
    memset(&m, 0, sizeof m);
    m.value = value;
    m.value_len = strlen(value);
    return m;
}

static int publish_text(cy_client *c, const char *topic, const char *value)
{
    cy_message m = text_msg(value);
    return cy_publish(c, topic, &m, 1, NULL, NULL);
}

static bool value_is(const cy_received *r, const char *s)
{
    return r->value_len == strlen(s) && memcmp(r->value, s, r->value_len) == 0;
}

static cy_receive_opts recv_opts(uint32_t batch, bool earliest)
{
    cy_receive_opts o;
    memset(&o, 0, sizeof o);
    o.batch_size = batch;
    o.start_earliest = earliest;
    return o;
}

static size_t receive_n(cy_client *c, cy_mode mode, const char *topic, const char *group,
                        uint32_t batch, bool earliest)
{
    cy_receive_opts o = recv_opts(batch, earliest);
    cy_batch b;
    OK(c, cy_receive(c, mode, topic, group, &o, &b));
    size_t n = b.n;
    cy_batch_free(&b);
    return n;
}

static uint32_t djb2(const char *s)
{
    uint32_t h = 5381;
    for (; *s; s++)
        h = h * 33 + (uint8_t)*s;
    return h;
}

/* Parse a JSON answer of cy_call_json (the tree lives in a). */
static const struct val *json(struct arena *a, const char *text)
{
    char detail[256], loc[64];
    struct val *v = NULL;
    if (codec_parse_json((const uint8_t *)text, strlen(text), a, &v, detail, sizeof detail, loc,
                         sizeof loc))
        fail_msg("not JSON (%s): %s", detail, text);
    return v;
}

static uint64_t json_u64(const struct val *m, const char *key)
{
    const struct val *v = val_get(m, key);
    if (!v || v->type != VAL_UINT)
        fail_msg("no integer '%s'", key);
    return v->u;
}

/* ---- scenarios (both backends) ------------------------------------------------------ */

static void test_publish_stream(void **state)
{
    struct fx *f = fx_get(state);
    cy_client *c = f->c;
    static const uint8_t bin[] = {0, 1, 0xff, 0, 'x'};
    cy_header h[2] = {{"content-type", "text/plain"}, {"trace", "abc"}};
    cy_message m[3];
    memset(m, 0, sizeof m);
    m[0].value = bin;
    m[0].value_len = sizeof bin;
    m[0].headers = h;
    m[0].n_headers = 2;
    m[1] = text_msg("second");
    m[1].key = "k1";
    m[2] = text_msg("");
    m[2].key = "key-with-len-xyz";
    m[2].key_len = 3; /* "key" */
    cy_publish_result res;
    OK(c, cy_publish(c, "orders", m, 3, NULL, &res));
    assert_int_equal(res.n, 1);
    assert_int_equal(res.parts[0].partition, 0);
    assert_int_equal(res.parts[0].start_offset, 0);
    assert_int_equal(res.parts[0].end_offset, 3);
    assert_false(res.duplicate);

    cy_receive_opts o = recv_opts(10, true);
    cy_batch b;
    OK(c, cy_receive(c, CY_STREAM, "orders", "g1", &o, &b));
    assert_int_equal(b.n, 3);
    for (size_t i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof id, "0:%zu", i);
        assert_int_equal(b.msgs[i].offset, i);
        assert_int_equal(b.msgs[i].partition, 0);
        assert_string_equal(b.msgs[i].topic, "orders~0");
        assert_string_equal(b.msgs[i].msg_id, id);
        assert_true(b.msgs[i].timestamp > 1600000000000ull);
        assert_false(b.msgs[i].has_scheduled_at);
        assert_int_equal(b.msgs[i].attempt, 0);
    }
    assert_int_equal(b.msgs[0].value_len, sizeof bin);
    assert_memory_equal(b.msgs[0].value, bin, sizeof bin);
    assert_int_equal(b.msgs[0].n_headers, 2);
    for (size_t i = 0; i < 2; i++) { /* header order is not part of the contract */
        const cy_header *g = &b.msgs[0].headers[i];
        const cy_header *want = strcmp(g->name, h[0].name) == 0 ? &h[0] : &h[1];
        assert_string_equal(g->name, want->name);
        assert_string_equal(g->value, want->value);
    }
    assert_null(b.msgs[0].key);
    assert_true(value_is(&b.msgs[1], "second"));
    assert_string_equal(b.msgs[1].key, "k1");
    assert_int_equal(b.msgs[1].key_len, 2);
    assert_int_equal(b.msgs[1].n_headers, 0);
    assert_int_equal(b.msgs[2].value_len, 0);
    assert_non_null(b.msgs[2].value);
    assert_int_equal(b.msgs[2].key_len, 3);
    assert_string_equal(b.msgs[2].key, "key");

    /* Receiving does not move the cursor; the lease holds the partition. */
    cy_batch b2;
    REFUSED(c, cy_receive(c, CY_STREAM, "orders", "g1", &o, &b2), 400, "no_available_leases", NULL);
    assert_int_equal(b2.n, 0);
    OK(c, cy_commit(c, b.msgs[2].topic, "g1", b.msgs[2].offset));
    cy_batch_free(&b);
    assert_null(b.msgs);
    assert_int_equal(receive_n(c, CY_STREAM, "orders", "g1", 10, true), 0);
    OK(c, publish_text(c, "orders", "fourth"));
    OK(c, cy_receive(c, CY_STREAM, "orders", "g1", &o, &b));
    assert_int_equal(b.n, 1);
    assert_int_equal(b.msgs[0].offset, 3);
    assert_true(value_is(&b.msgs[0], "fourth"));
    cy_batch_free(&b);

    /* A "latest" group sees only what comes after its first receive. */
    assert_int_equal(receive_n(c, CY_STREAM, "orders", "late", 10, false), 0);
    OK(c, publish_text(c, "orders", "fifth"));
    assert_int_equal(receive_n(c, CY_STREAM, "orders", "late", 10, false), 1);
}

static void test_partitions_and_keys(void **state)
{
    struct fx *f = fx_get(state);
    cy_client *c = f->c;
    uint32_t parts = 0;
    OK(c, cy_topic_configure(c, "keyed", 4, &parts));
    assert_int_equal(parts, 4);
    OK(c, cy_topic_configure(c, "keyed", 4, NULL)); /* equal: fine */
    static const char *const keys[] = {"alpha", "beta", "gamma", "delta", "alpha", "eps"};
    cy_message m[6];
    for (size_t i = 0; i < 6; i++) {
        m[i] = text_msg(keys[i]);
        m[i].key = keys[i];
    }
    cy_publish_result res;
    OK(c, cy_publish(c, "keyed", m, 6, NULL, &res));
    uint64_t total = 0;
    for (size_t i = 0; i < res.n; i++) {
        if (i)
            assert_true(res.parts[i].partition > res.parts[i - 1].partition);
        total += res.parts[i].end_offset - res.parts[i].start_offset;
    }
    assert_int_equal(total, 6);
    for (uint32_t p = 0; p < 4; p++) {
        char tp[32];
        snprintf(tp, sizeof tp, "keyed~%" PRIu32, p);
        cy_receive_opts o = recv_opts(100, true);
        cy_batch b;
        OK(c, cy_receive(c, CY_STREAM, tp, "g", &o, &b));
        for (size_t i = 0; i < b.n; i++) {
            assert_int_equal(b.msgs[i].partition, p);
            assert_int_equal(djb2(b.msgs[i].key) % 4, p);
            assert_string_equal(b.msgs[i].topic, tp);
        }
        cy_batch_free(&b);
    }
    /* topic~p with a key, and a partition out of range. */
    REFUSED(c, cy_publish(c, "keyed~1", m, 1, NULL, NULL), 400, "invalid_input",
            "msg key cannot be specified alongside a specific partition");
    cy_message plain = text_msg("x");
    REFUSED(c, cy_publish(c, "keyed~9", &plain, 1, NULL, NULL), 400, "invalid_input",
            "partition out of range");
    OK(c, cy_publish(c, "keyed~2", &plain, 1, NULL, &res));
    assert_int_equal(res.n, 1);
    assert_int_equal(res.parts[0].partition, 2);
    /* Empty publish. */
    OK(c, cy_publish(c, "keyed", NULL, 0, NULL, &res));
    assert_int_equal(res.n, 0);
    /* Partition counts: only up, 1..64. */
    REFUSED(c, cy_topic_configure(c, "keyed", 2, &parts), 400, "invalid_input",
            "Cannot decrease partition count. Only increases are allowed.");
    REFUSED(c, cy_topic_configure(c, "keyed", 0, &parts), 400, "invalid_input",
            "Partition count must be between 1 and 64.");
    REFUSED(c, cy_topic_configure(c, "keyed", 65, &parts), 400, "invalid_input",
            "Partition count must be between 1 and 64.");
    OK(c, cy_topic_configure(c, "keyed", 64, &parts));
    assert_int_equal(parts, 64);
}

static void test_delay_and_idempotency(void **state)
{
    struct fx *f = fx_get(state);
    cy_client *c = f->c;
    cy_message m = text_msg("later");
    m.has_delay = true;
    m.delay_ms = 300;
    uint64_t t0 = clock_mono_ms();
    OK(c, cy_publish(c, "delayed", &m, 1, NULL, NULL));
    /* Hidden from queue receives, visible to streams at once. */
    assert_int_equal(receive_n(c, CY_QUEUE, "delayed", "q", 10, false), 0);
    cy_receive_opts o = recv_opts(10, true);
    cy_batch b;
    OK(c, cy_receive(c, CY_STREAM, "delayed", "s", &o, &b));
    assert_int_equal(b.n, 1);
    assert_true(b.msgs[0].has_scheduled_at);
    assert_int_equal(b.msgs[0].scheduled_at, b.msgs[0].timestamp + 300);
    cy_batch_free(&b);
    /* A long poll wakes when the delay ends (no publish needed). */
    o = recv_opts(1, false);
    o.batch_wait_ms = 10000;
    OK(c, cy_receive(c, CY_QUEUE, "delayed", "q", &o, &b));
    uint64_t took = clock_mono_ms() - t0;
    assert_int_equal(b.n, 1);
    assert_true(value_is(&b.msgs[0], "later"));
    assert_int_equal(b.msgs[0].attempt, 1);
    assert_true(took >= 250 && took < 8000);
    cy_batch_free(&b);

    /* Idempotency: the retry stores nothing and returns the original. */
    cy_message two[2] = {text_msg("a"), text_msg("b")};
    cy_publish_result r1, r2;
    OK(c, cy_publish(c, "idem", two, 2, "order-17", &r1));
    assert_false(r1.duplicate);
    OK(c, cy_publish(c, "idem", two, 2, "order-17", &r2));
    assert_true(r2.duplicate);
    assert_int_equal(r2.n, r1.n);
    assert_int_equal(r2.parts[0].start_offset, r1.parts[0].start_offset);
    assert_int_equal(r2.parts[0].end_offset, r1.parts[0].end_offset);
    OK(c, cy_publish(c, "idem", two, 1, "order-18", &r2));
    assert_false(r2.duplicate);
    assert_int_equal(r2.parts[0].start_offset, 2);
    assert_int_equal(receive_n(c, CY_STREAM, "idem", "all", 100, true), 3);
}

static void test_queue_mode(void **state)
{
    struct fx *f = fx_get(state);
    cy_client *c = f->c;
    cy_queue_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.retry_count = 1;
    cfg.retry_schedule[0] = 0;
    cfg.dlq_topic = "jobs-dlq";
    OK(c, cy_queue_configure(c, CY_QUEUE, "jobs", "workers", &cfg));
    for (int i = 0; i < 4; i++) {
        char v[16];
        snprintf(v, sizeof v, "job-%d", i);
        OK(c, publish_text(c, "jobs", v));
    }
    cy_receive_opts o = recv_opts(10, false);
    cy_batch b;
    OK(c, cy_receive(c, CY_QUEUE, "jobs", "workers", &o, &b));
    assert_int_equal(b.n, 4);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(b.msgs[i].attempt, 1);
        assert_string_equal(b.msgs[i].topic, "jobs~0");
    }
    const char *ack[1] = {b.msgs[0].msg_id};
    const char *nack[1] = {b.msgs[1].msg_id};
    const char *ext[2] = {b.msgs[2].msg_id, b.msgs[3].msg_id};
    OK(c, cy_ack(c, CY_QUEUE, "jobs", "workers", ack, 1));
    OK(c, cy_ack(c, CY_QUEUE, "jobs", "workers", ack, 1)); /* idempotent */
    OK(c, cy_ack(c, CY_QUEUE, "jobs", "workers", NULL, 0));
    OK(c, cy_extend(c, CY_QUEUE, "jobs", "workers", ext, 2, 60000));
    OK(c, cy_extend(c, CY_QUEUE, "jobs", "workers", ext, 2, 0)); /* default lease */
    REFUSED(c, cy_extend(c, CY_QUEUE, "jobs", "workers", ack, 1, 1000), 400, "invalid_input",
            "message is already acked");
    /* nack: retry_schedule[0] = 0 → available again at once, attempt 2. */
    OK(c, cy_nack(c, CY_QUEUE, "jobs", "workers", nack, 1, false, 0));
    cy_batch b2;
    OK(c, cy_receive(c, CY_QUEUE, "jobs", "workers", &o, &b2));
    assert_int_equal(b2.n, 1);
    assert_string_equal(b2.msgs[0].msg_id, b.msgs[1].msg_id);
    assert_int_equal(b2.msgs[0].attempt, 2);
    /* Second nack: the schedule is used up → copied to the DLQ topic. */
    OK(c, cy_nack(c, CY_QUEUE, "jobs", "workers", nack, 1, false, 0));
    cy_batch_free(&b2);
    OK(c, cy_receive(c, CY_STREAM, "jobs-dlq", "inspect",
                     &(cy_receive_opts){.start_earliest = true}, &b2));
    assert_int_equal(b2.n, 1);
    assert_true(value_is(&b2.msgs[0], "job-1"));
    cy_batch_free(&b2);
    OK(c, cy_ack(c, CY_QUEUE, "jobs", "workers", ext, 2));
    assert_int_equal(receive_n(c, CY_QUEUE, "jobs", "workers", 10, false), 0);
    cy_batch_free(&b);

    /* No configuration: the first nack dead-letters (marked dead for the
     * group); redrive makes it available again. nack with a delay. */
    OK(c, cy_queue_configure(c, CY_QUEUE, "jobs", "other", NULL));
    OK(c, cy_receive(c, CY_QUEUE, "jobs", "other", &o, &b));
    assert_int_equal(b.n, 4);
    const char *dead[1] = {b.msgs[3].msg_id};
    OK(c, cy_nack(c, CY_QUEUE, "jobs", "other", dead, 1, false, 0));
    REFUSED(c, cy_extend(c, CY_QUEUE, "jobs", "other", dead, 1, 1000), 400, "invalid_input",
            "dead-letter");
    OK(c, cy_redrive(c, CY_QUEUE, "jobs", "other"));
    OK(c, cy_receive(c, CY_QUEUE, "jobs", "other", &o, &b2));
    assert_int_equal(b2.n, 1);
    assert_string_equal(b2.msgs[0].msg_id, b.msgs[3].msg_id);
    cy_batch_free(&b2);
    cfg.retry_count = 1;
    cfg.retry_schedule[0] = 3600000;
    cfg.dlq_topic = NULL;
    cfg.max_deliveries = 5;
    OK(c, cy_queue_configure(c, CY_QUEUE, "jobs", "other", &cfg));
    const char *first[1] = {b.msgs[0].msg_id};
    OK(c, cy_nack(c, CY_QUEUE, "jobs", "other", first, 1, true, 0)); /* delay 0: at once */
    OK(c, cy_receive(c, CY_QUEUE, "jobs", "other", &o, &b2));
    assert_int_equal(b2.n, 1);
    assert_string_equal(b2.msgs[0].msg_id, b.msgs[0].msg_id);
    cy_batch_free(&b2);
    cy_batch_free(&b);
    /* Unknown topic. */
    const char *zero[1] = {"0:0"};
    REFUSED(c, cy_ack(c, CY_QUEUE, "nope", "workers", zero, 1), 400, "invalid_input",
            "topic must exist");
}

static void test_fifo_mode(void **state)
{
    struct fx *f = fx_get(state);
    cy_client *c = f->c;
    static const char *const keys[] = {"a", "a", "b", "a"};
    cy_message m[4];
    for (size_t i = 0; i < 4; i++) {
        m[i] = text_msg(keys[i]);
        m[i].key = keys[i];
    }
    OK(c, cy_publish(c, "fifo", m, 4, NULL, NULL));
    cy_receive_opts o = recv_opts(1, false);
    cy_batch b1, b2, b3;
    OK(c, cy_receive(c, CY_FIFO, "fifo", "g", &o, &b1));
    assert_int_equal(b1.n, 1);
    assert_string_equal(b1.msgs[0].key, "a");
    assert_int_equal(b1.msgs[0].offset, 0);
    /* "a" is held: the next one gets "b", then nothing. */
    OK(c, cy_receive(c, CY_FIFO, "fifo", "g", &o, &b2));
    assert_int_equal(b2.n, 1);
    assert_string_equal(b2.msgs[0].key, "b");
    OK(c, cy_receive(c, CY_FIFO, "fifo", "g", &o, &b3));
    assert_int_equal(b3.n, 0);
    cy_batch_free(&b3);
    /* Releasing "a" (ack) lets its next message out, in order. */
    const char *id[1] = {b1.msgs[0].msg_id};
    OK(c, cy_ack(c, CY_FIFO, "fifo", "g", id, 1));
    OK(c, cy_receive(c, CY_FIFO, "fifo", "g", &o, &b3));
    assert_int_equal(b3.n, 1);
    assert_int_equal(b3.msgs[0].offset, 1);
    /* A FIFO group is distinct from a queue group of the same name. */
    assert_int_equal(receive_n(c, CY_QUEUE, "fifo", "g", 10, false), 4);
    /* nack without configuration dead-letters; redrive brings it back. */
    const char *id3[1] = {b3.msgs[0].msg_id};
    OK(c, cy_nack(c, CY_FIFO, "fifo", "g", id3, 1, false, 0));
    OK(c, cy_redrive(c, CY_FIFO, "fifo", "g"));
    OK(c, cy_queue_configure(c, CY_FIFO, "fifo", "g2", NULL));
    cy_batch_free(&b1);
    cy_batch_free(&b2);
    cy_batch_free(&b3);
}

static void test_seek(void **state)
{
    struct fx *f = fx_get(state);
    cy_client *c = f->c;
    for (int i = 0; i < 5; i++) {
        char v[8];
        snprintf(v, sizeof v, "s%d", i);
        OK(c, publish_text(c, "seekable", v));
    }
    assert_int_equal(receive_n(c, CY_STREAM, "seekable", "g", 2, true), 2);
    OK(c, cy_commit(c, "seekable~0", "g", 1));
    cy_receive_opts o = recv_opts(10, true);
    cy_batch b;
    OK(c, cy_receive(c, CY_STREAM, "seekable", "g", &o, &b));
    assert_int_equal(b.n, 3);
    assert_int_equal(b.msgs[0].offset, 2);
    cy_batch_free(&b);
    OK(c, cy_seek(c, "seekable", "g", CY_SEEK_EARLIEST, 0)); /* also releases the lease */
    OK(c, cy_receive(c, CY_STREAM, "seekable", "g", &o, &b));
    assert_int_equal(b.n, 5);
    uint64_t ts3 = b.msgs[3].timestamp;
    cy_batch_free(&b);
    OK(c, cy_seek(c, "seekable~0", "g", CY_SEEK_OFFSET, 3));
    OK(c, cy_receive(c, CY_STREAM, "seekable", "g", &o, &b));
    assert_int_equal(b.n, 2);
    assert_int_equal(b.msgs[0].offset, 3);
    cy_batch_free(&b);
    OK(c, cy_seek(c, "seekable", "g", CY_SEEK_LATEST, 0));
    assert_int_equal(receive_n(c, CY_STREAM, "seekable", "g", 10, true), 0);
    OK(c, cy_seek(c, "seekable", "g", CY_SEEK_TIMESTAMP, 0));
    assert_int_equal(receive_n(c, CY_STREAM, "seekable", "g", 10, true), 5);
    OK(c, cy_seek(c, "seekable", "g", CY_SEEK_TIMESTAMP, ts3));
    OK(c, cy_receive(c, CY_STREAM, "seekable", "g", &o, &b));
    assert_true(b.n >= 2 && b.msgs[0].timestamp >= ts3);
    cy_batch_free(&b);

    REFUSED(c, cy_seek(c, "seekable", "g", CY_SEEK_OFFSET, 1), 400, "invalid_input", NULL);
    REFUSED(c, cy_seek(c, "unknown", "g", CY_SEEK_EARLIEST, 0), 400, "invalid_input",
            "topic must exist");
    REFUSED(c, cy_commit(c, "seekable", "g", 1), 422, "invalid_data", NULL);
    REFUSED(c, cy_commit(c, "unknown~0", "g", 1), 400, "invalid_input", "partition must exist");
    REFUSED(c, cy_commit(c, "seekable~0", "never-seen", 1), 400, "invalid_input",
            "lease not found");
}

static void test_call_json_and_namespaces(void **state)
{
    struct fx *f = fx_get(state);
    cy_client *c = f->c;
    struct arena a;
    arena_init(&a);
    char *resp = NULL;
    OK(c,
       cy_call_json(c, "v1.msgs.namespace.configure",
                    "{\"name\": \"tenant-1\", \"retention\": {\"period_ms\": 86400000}}", &resp));
    const struct val *v = json(&a, resp);
    const struct val *name = val_get(v, "name");
    assert_non_null(name);
    assert_int_equal(name->s.n, 8);
    assert_memory_equal(name->s.p, "tenant-1", 8);
    assert_int_equal(json_u64(val_get(v, "retention"), "period_ms"), 86400000);
    cy_free(resp);

    /* The namespace option goes into every typed call. */
    fx_reopen(f, "tenant-1");
    c = f->c;
    OK(c, cy_topic_configure(c, "t", 3, NULL));
    OK(c, publish_text(c, "t", "in tenant-1"));
    assert_int_equal(receive_n(c, CY_STREAM, "t", "g", 10, true), 1);
    OK(c, cy_call_json(c, "v1.msgs.topic.get", "{\"namespace\": \"tenant-1\", \"topic\": \"t\"}",
                       &resp));
    v = json(&a, resp);
    const struct val *parts = val_get(v, "partitions");
    assert_non_null(parts);
    assert_int_equal(parts->type, VAL_ARRAY);
    assert_int_equal(parts->arr.n, 3);
    uint64_t end = 0;
    for (size_t i = 0; i < parts->arr.n; i++)
        end += json_u64(&parts->arr.items[i], "end_offset");
    assert_int_equal(end, 1);
    cy_free(resp);
    /* Not in the default namespace. */
    OK(c, cy_call_json(c, "v1.msgs.topic.list", NULL, &resp));
    assert_null(strstr(resp, "\"t\""));
    cy_free(resp);
    OK(c, cy_call_json(c, "v1.msgs.namespace.list", "{}", &resp));
    assert_non_null(strstr(resp, "tenant-1"));
    assert_non_null(strstr(resp, "default"));
    cy_free(resp);

    /* Errors through cy_call_json. */
    REFUSED(c, cy_call_json(c, "v1.msgs.namespace.get", "{\"name\": \"nope\"}", &resp), 400,
            "not_found", NULL);
    assert_null(resp);
    REFUSED(c, cy_call_json(c, "v1.msgs.no.such.op", "{}", &resp), 404, "not_found", NULL);
    REFUSED(c, cy_call_json(c, "v1.msgs.topic.list", "{not json", &resp), 400, "invalid_encoding",
            NULL);
    REFUSED(c, cy_call_json(c, "v1.msgs.topic.list", "{\"a\": 1, \"a\": 2}", &resp), 422,
            "invalid_data", NULL);
    REFUSED(c, cy_call_json(c, "v1.msgs.topic.list", "{\"a\": 99999999999999999999999}", &resp),
            422, "invalid_data", NULL);
    assert_int_equal(cy_call_json(c, "v1/../x", "{}", &resp), CY_EINVAL);
    assert_int_equal(cy_call_json(c, "", "{}", &resp), CY_EINVAL);
    assert_int_equal(cy_call_json(c, "v1.msgs.topic.list", "{}", NULL), CY_EINVAL);

    /* Data operations in an unknown or an explicit "default" namespace. */
    fx_reopen(f, "no-such-ns");
    REFUSED(f->c, publish_text(f->c, "t", "x"), 400, "not_found", NULL);
    fx_reopen(f, "default");
    REFUSED(f->c, publish_text(f->c, "t", "x"), 400, "no_explicit_default_namespace", NULL);
    cy_batch b;
    REFUSED(f->c, cy_receive(f->c, CY_QUEUE, "t", "g", NULL, &b), 400,
            "no_explicit_default_namespace", NULL);
    assert_int_equal(b.n, 0);
    arena_free(&a);
}

struct err_thread {
    cy_client *c;
    const char *code;
    int status;
    char detail[256];
};

static void *fail_in_thread(void *arg)
{
    struct err_thread *t = arg;
    int rc = cy_topic_configure(t->c, "errs", 0, NULL);
    const char *d = NULL;
    t->code = rc == CY_ESERVER ? cy_last_error(t->c, &d, &t->status) : NULL;
    snprintf(t->detail, sizeof t->detail, "%s", d ? d : "");
    return NULL;
}

static void test_errors(void **state)
{
    struct fx *f = fx_get(state);
    cy_client *c = f->c;
    const char *detail = "x";
    int status = 1;
    assert_null(cy_last_error(c, &detail, &status));
    assert_null(detail);
    assert_int_equal(status, 0);

    cy_batch b;
    REFUSED(c, cy_receive(c, CY_STREAM, "t", "bad group!", NULL, &b), 422, "invalid_data", NULL);
    REFUSED(c, cy_receive(c, CY_QUEUE, "t", "g", &(cy_receive_opts){.has_lease = true}, &b), 422,
            "invalid_data", NULL);
    REFUSED(c, publish_text(c, "bad~topic~name~x", "v"), 422, "invalid_data", NULL);
    REFUSED(c, cy_topic_configure(c, "errs", 0, NULL), 400, "invalid_input",
            "Partition count must be between 1 and 64.");
    /* The next call clears it. */
    OK(c, cy_topic_configure(c, "errs", 1, NULL));
    assert_null(cy_last_error(c, NULL, NULL));

    /* Per thread: another thread's failure is not this thread's. */
    REFUSED(c, cy_topic_configure(c, "errs", 70, NULL), 400, "invalid_input", NULL);
    struct err_thread t = {.c = c}; /* the same client, another thread */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fail_in_thread, &t), 0);
    pthread_join(th, NULL);
    assert_non_null(t.code);
    assert_string_equal(t.code, "invalid_input");
    assert_int_equal(t.status, 400);
    assert_non_null(strstr(t.detail, "between 1 and 64"));
    REFUSED(c, CY_ESERVER, 400, "invalid_input", NULL); /* still this thread's own */
    OK(c, cy_topic_configure(c, "errs", 1, NULL));
    assert_null(cy_last_error(c, NULL, NULL));

    /* A body above the server's 2 MiB limit: 413 on both backends, and
     * nothing is stored. */
    size_t big = 1u << 20; /* each value at the per-message limit */
    uint8_t *bytes = calloc(1, big);
    assert_non_null(bytes);
    cy_message three[3];
    for (int i = 0; i < 3; i++) {
        three[i] = text_msg("");
        three[i].value = bytes;
        three[i].value_len = big;
    }
    OK(c, cy_topic_configure(c, "bigt", 1, NULL));
    REFUSED(c, cy_publish(c, "bigt", three, 3, NULL, NULL), 413, "payload_too_large",
            "The request body is too large.");
    OK(c, cy_publish(c, "bigt", three, 1, NULL, NULL)); /* one alone fits */
    free(bytes);

    /* Library-side argument checks never reach the broker. */
    cy_message m = text_msg("v");
    assert_int_equal(cy_publish(c, NULL, &m, 1, NULL, NULL), CY_EINVAL);
    assert_int_equal(cy_publish(c, "t", NULL, 1, NULL, NULL), CY_EINVAL);
    m.value = NULL;
    assert_int_equal(cy_publish(c, "t", &m, 1, NULL, NULL), CY_EINVAL);
    m = text_msg("v");
    m.n_headers = 1;
    assert_int_equal(cy_publish(c, "t", &m, 1, NULL, NULL), CY_EINVAL);
    assert_int_equal(cy_receive(c, (cy_mode)7, "t", "g", NULL, &b), CY_EINVAL);
    assert_int_equal(cy_receive(c, CY_QUEUE, "t", NULL, NULL, &b), CY_EINVAL);
    assert_int_equal(cy_receive(c, CY_QUEUE, "t", "g", NULL, NULL), CY_EINVAL);
    const char *ids[1] = {"0:0"};
    assert_int_equal(cy_ack(c, CY_STREAM, "t", "g", ids, 1), CY_EINVAL);
    assert_int_equal(cy_nack(c, CY_STREAM, "t", "g", ids, 1, false, 0), CY_EINVAL);
    assert_int_equal(cy_extend(c, CY_QUEUE, "t", "g", NULL, 1, 0), CY_EINVAL);
    assert_int_equal(cy_redrive(c, CY_STREAM, "t", "g"), CY_EINVAL);
    cy_queue_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.retry_count = 101;
    assert_int_equal(cy_queue_configure(c, CY_QUEUE, "t", "g", &cfg), CY_EINVAL);
    assert_int_equal(cy_seek(c, "t", "g", (cy_seek_kind)9, 0), CY_EINVAL);
    assert_int_equal(cy_commit(c, NULL, "g", 0), CY_EINVAL);
    assert_int_equal(cy_topic_configure(NULL, "t", 1, NULL), CY_EINVAL);
    /* Malformed ids are the broker's to refuse. */
    const char *bad[1] = {"zero:one"};
    OK(c, cy_topic_configure(c, "t", 1, NULL));
    REFUSED(c, cy_ack(c, CY_QUEUE, "t", "g", bad, 1), 422, "invalid_data", NULL);
}

/* ---- long polling across threads ------------------------------------------------------ */

struct poller {
    cy_client *c;
    cy_mode mode;
    const char *topic, *group;
    cy_receive_opts opts;
    int rc;
    cy_batch batch;
    uint64_t took_ms;
};

static void *poll_thread(void *arg)
{
    struct poller *p = arg;
    uint64_t t0 = clock_mono_ms();
    p->rc = cy_receive(p->c, p->mode, p->topic, p->group, &p->opts, &p->batch);
    p->took_ms = clock_mono_ms() - t0;
    return NULL;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

/* A receive waiting in one thread is woken by a publish from another; while
 * it waits, the same client (embedded) still serves other calls. */
static void long_poll_case(struct fx *f, cy_mode mode, const char *topic)
{
    struct poller p;
    memset(&p, 0, sizeof p);
    p.c = f->c;
    p.mode = mode;
    p.topic = topic;
    p.group = "waiters";
    /* earliest: a stream group that starts late still finds the message */
    p.opts = recv_opts(1, true);
    p.opts.batch_wait_ms = 20000;
    /* Create the topic first, so the publisher's topic.configure below
     * does not race the receive for it. */
    OK(other(f), cy_topic_configure(other(f), topic, 1, NULL));
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, poll_thread, &p), 0);
    /* Let the receive start waiting. (If it has not yet, it simply finds
     * the message: the test still passes, it just tests less.) */
    sleep_ms(300);
    uint64_t t0 = clock_mono_ms();
    OK(other(f), cy_topic_configure(other(f), topic, 1, NULL));
    uint64_t side = clock_mono_ms() - t0;
    assert_true(side < 2000); /* not blocked behind the waiting receive */
    OK(other(f), publish_text(other(f), topic, "wake up"));
    pthread_join(th, NULL);
    OK(p.c, p.rc);
    assert_int_equal(p.batch.n, 1);
    assert_true(value_is(&p.batch.msgs[0], "wake up"));
    assert_true(p.took_ms >= 250 && p.took_ms < 15000);
    cy_batch_free(&p.batch);
}

static void test_long_poll(void **state)
{
    struct fx *f = fx_get(state);
    long_poll_case(f, CY_QUEUE, "lp-queue");
    long_poll_case(f, CY_FIFO, "lp-fifo");
    long_poll_case(f, CY_STREAM, "lp-stream");

    /* Nothing comes: an empty batch after the wait. */
    cy_receive_opts o = recv_opts(5, false);
    o.batch_wait_ms = 300;
    cy_batch b;
    uint64_t t0 = clock_mono_ms();
    OK(f->c, cy_receive(f->c, CY_QUEUE, "lp-queue", "idle", &o, &b));
    uint64_t took = clock_mono_ms() - t0;
    assert_int_equal(b.n, 1); /* the earlier message: the batch is not full */
    assert_true(took >= 250 && took < 10000);
    cy_batch_free(&b);
    t0 = clock_mono_ms();
    OK(f->c, cy_receive(f->c, CY_QUEUE, "lp-queue", "idle", &o, &b));
    assert_int_equal(b.n, 0);
    assert_true(clock_mono_ms() - t0 >= 250);
    /* An error in a long poll answers at once. */
    t0 = clock_mono_ms();
    REFUSED(f->c, cy_receive(f->c, CY_QUEUE, "lp-queue", "bad group!", &o, &b), 422, "invalid_data",
            NULL);
    assert_true(clock_mono_ms() - t0 < 250);

    /* The request timeout covers a long poll's wait on top of itself, for
     * typed receives and for receives sent through cy_call_json. */
    fx_reopen_with(f, NULL, 400);
    o.batch_wait_ms = 1000;
    t0 = clock_mono_ms();
    OK(f->c, cy_receive(f->c, CY_QUEUE, "lp-queue", "idle", &o, &b));
    assert_int_equal(b.n, 0);
    assert_true(clock_mono_ms() - t0 >= 900);
    char *resp = NULL;
    t0 = clock_mono_ms();
    OK(f->c, cy_call_json(f->c, "v1.msgs.queue.receive",
                          "{\"topic\": \"lp-queue\", \"consumer_group\": \"idle\", "
                          "\"batch_wait_ms\": 1000}",
                          &resp));
    assert_true(clock_mono_ms() - t0 >= 900);
    assert_non_null(strstr(resp, "\"msgs\""));
    cy_free(resp);
}

/* ---- embedded only ---------------------------------------------------------------------- */

/* A second opener of the same directory: CY_ELOCKED, in this process and in
 * another one — which prints nothing. */
static void test_directory_lock(void **state)
{
    struct fx *f = fx_get(state);
    cy_client *c2 = NULL;
    cy_options o = fast_opts(NULL);
    assert_int_equal(cy_open(f->url, &o, &c2), CY_ELOCKED);
    assert_null(c2);

    int res[2], err[2];
    assert_int_equal(pipe(res), 0);
    assert_int_equal(pipe(err), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(res[0]);
        close(err[0]);
        dup2(err[1], 2);
        cy_client *cc = NULL;
        int rc = cy_open(f->url, NULL, &cc);
        ssize_t w = write(res[1], &rc, sizeof rc);
        _exit(w == (ssize_t)sizeof rc ? 0 : 1);
    }
    close(res[1]);
    close(err[1]);
    int rc = 0;
    assert_int_equal(read(res[0], &rc, sizeof rc), (ssize_t)sizeof rc);
    char text[512];
    ssize_t n = read(err[0], text, sizeof text - 1);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    close(res[0]);
    close(err[0]);
    assert_int_equal(rc, CY_ELOCKED);
    if (n > 0) {
        text[n] = 0;
        fail_msg("the child wrote to stderr: %s", text);
    }
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* After close, the directory is free again. */
    cy_close(f->c);
    f->c = NULL;
    OK(NULL, cy_open(f->url, &o, &f->c));
}

static void test_reopen_persists(void **state)
{
    struct fx *f = fx_get(state);
    cy_client *c = f->c;
    char *resp = NULL;
    OK(c, cy_call_json(c, "v1.msgs.namespace.configure", "{\"name\": \"kept\"}", &resp));
    cy_free(resp);
    OK(c, cy_topic_configure(c, "p", 2, NULL));
    for (int i = 0; i < 6; i++) {
        char v[8];
        snprintf(v, sizeof v, "m%d", i);
        OK(c, publish_text(c, "p~0", v));
    }
    assert_int_equal(receive_n(c, CY_STREAM, "p~0", "s", 4, true), 4);
    OK(c, cy_commit(c, "p~0", "s", 3));
    cy_batch b;
    cy_receive_opts o = recv_opts(2, false);
    OK(c, cy_receive(c, CY_QUEUE, "p", "q", &o, &b));
    assert_int_equal(b.n, 2);
    const char *ids[2] = {b.msgs[0].msg_id, b.msgs[1].msg_id};
    OK(c, cy_ack(c, CY_QUEUE, "p", "q", ids, 2));
    cy_batch_free(&b);

    /* Reopen with the default durability ("always"). */
    assert_int_equal(cy_close(c), 0);
    f->c = NULL;
    OK(NULL, cy_open(f->url, NULL, &f->c));
    c = f->c;
    uint32_t parts = 0;
    OK(c, cy_topic_configure(c, "p", 2, &parts));
    assert_int_equal(parts, 2);
    o = recv_opts(10, true);
    OK(c, cy_receive(c, CY_STREAM, "p~0", "s", &o, &b));
    assert_int_equal(b.n, 2);
    assert_int_equal(b.msgs[0].offset, 4);
    cy_batch_free(&b);
    OK(c, cy_receive(c, CY_QUEUE, "p", "q", &o, &b));
    assert_int_equal(b.n, 4);
    assert_int_equal(b.msgs[0].offset, 2);
    cy_batch_free(&b);
    OK(c, cy_call_json(c, "v1.msgs.namespace.get", "{\"name\": \"kept\"}", &resp));
    cy_free(resp);
    OK(c, publish_text(c, "p", "after reopen"));
}

struct publisher {
    cy_client *c;
    int id;
    int rc;
};

static void *publish_thread(void *arg)
{
    struct publisher *p = arg;
    for (int i = 0; i < 40 && !p->rc; i++) {
        char v[32];
        snprintf(v, sizeof v, "t%d-%d", p->id, i);
        p->rc = publish_text(p->c, "many", v);
    }
    return NULL;
}

/* Several threads publish through one client under fsync=always: each
 * waits for durability with the client lock released (group commit). */
static void test_concurrent_publishers(void **state)
{
    struct fx *f = fx_get(state);
    cy_close(f->c);
    f->c = NULL;
    cy_options o;
    memset(&o, 0, sizeof o);
    o.fsync = "always";
    OK(NULL, cy_open(f->url, &o, &f->c));
    struct publisher p[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        p[i] = (struct publisher){.c = f->c, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, publish_thread, &p[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        OK(f->c, p[i].rc);
    }
    assert_int_equal(receive_n(f->c, CY_STREAM, "many", "g", 1000, true), 160);
}

static void test_urls_and_options(void **state)
{
    struct fx *f = fx_get(state);
    cy_close(f->c);
    f->c = NULL;
    cy_client *c = NULL;
    char url[4400];
    cy_options o = fast_opts(NULL);

    /* file:<path> (no "//") and file://localhost/<abs>. */
    snprintf(url, sizeof url, "file:%s/plain", f->dir);
    OK(NULL, cy_open(url, &o, &c));
    OK(c, publish_text(c, "t", "v"));
    cy_close(c);
    snprintf(url, sizeof url, "FILE://localhost%s/plain", f->dir);
    OK(NULL, cy_open(url, &o, &c));
    assert_int_equal(receive_n(c, CY_STREAM, "t", "g", 10, true), 1);
    cy_close(c);
    /* Percent-escapes. */
    snprintf(url, sizeof url, "file://%s/with%%20space", f->dir);
    OK(NULL, cy_open(url, &o, &c));
    cy_close(c);
    char path[4300];
    struct stat st;
    snprintf(path, sizeof path, "%s/with space", f->dir);
    assert_int_equal(stat(path, &st), 0);
    /* A relative path. */
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(f->dir), 0);
    int rc = cy_open("file:rel/dir", &o, &c);
    assert_int_equal(chdir(cwd), 0);
    OK(NULL, rc);
    OK(c, publish_text(c, "t", "v")); /* the working directory changed since */
    assert_int_equal(cy_close(c), 0);
    snprintf(path, sizeof path, "%s/rel/dir", f->dir);
    assert_int_equal(stat(path, &st), 0);
    /* fsync policies. */
    snprintf(url, sizeof url, "file://%s", f->dir);
    static const char *const good[] = {"always", "never", "interval=50"};
    for (size_t i = 0; i < 3; i++) {
        o.fsync = good[i];
        OK(NULL, cy_open(url, &o, &c));
        OK(c, publish_text(c, "t", "v"));
        cy_close(c);
    }
    o.fsync = "sometimes";
    assert_int_equal(cy_open(url, &o, &c), CY_EINVAL);
    assert_null(c);
    o.fsync = NULL;

    /* Refused URLs. */
    static const char *const bad[] = {
        "file:",          "file://",           "file://otherhost/tmp/x", "file:///tmp/x%zz",
        "file:///tmp/x%", "file:///tmp/x%00y", "ftp://host/x",           "",
        "tcp://1.2.3.4",  "/tmp/plain/path",
        /* a query or a fragment, and the root directory */
        "file:///tmp/cy-q?x=1", "file:///tmp/cy-f#frag", "file:///", "file://localhost/",
        "file:/", "file:////",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = NULL;
        if (cy_open(bad[i], &o, &c) != CY_EINVAL)
            fail_msg("cy_open(\"%s\") was not CY_EINVAL", bad[i]);
        assert_null(c);
    }
    assert_int_equal(cy_open(NULL, &o, &c), CY_EINVAL);
    assert_int_equal(cy_open(url, &o, NULL), CY_EINVAL);
    assert_int_equal(cy_close(NULL), 0);
    assert_null(cy_last_error(NULL, NULL, NULL));
    cy_batch_free(NULL);
    cy_free(NULL);

    OK(NULL, cy_open(url, NULL, &f->c));
}

static void test_strerror(void **state)
{
    (void)state;
    static const int codes[] = {CY_ESERVER, CY_ECONNECT, CY_ETIMEDOUT, CY_EPROTOCOL};
    for (size_t i = 0; i < 4; i++) {
        const char *s = cy_strerror(codes[i]);
        assert_non_null(s);
        assert_string_not_equal(s, "unknown error");
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, cy_strerror(codes[j]));
    }
}

#define BOTH(fn)                                    \
    {"file/" #fn, fn, setup_file, teardown, NULL},  \
    {                                               \
        "http/" #fn, fn, setup_http, teardown, NULL \
    }
#define FILE_ONLY(fn)                               \
    {                                               \
        "file/" #fn, fn, setup_file, teardown, NULL \
    }

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        BOTH(test_publish_stream),
        BOTH(test_partitions_and_keys),
        BOTH(test_delay_and_idempotency),
        BOTH(test_queue_mode),
        BOTH(test_fifo_mode),
        BOTH(test_seek),
        BOTH(test_call_json_and_namespaces),
        BOTH(test_errors),
        BOTH(test_long_poll),
        FILE_ONLY(test_directory_lock),
        FILE_ONLY(test_reopen_persists),
        FILE_ONLY(test_concurrent_publishers),
        FILE_ONLY(test_urls_and_options),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
