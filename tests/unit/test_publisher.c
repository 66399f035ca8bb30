/*
 * test_publisher.c — cy_writer_* and cy_publisher_* (src/client/publisher.c).
 *
 * Most scenarios run on the embedded backend (a fresh temp directory each).
 * Failures the embedded broker cannot produce on demand (a lost reply, a 503,
 * an unreachable server) come through publisher_set_attempt, the test-only
 * hook that stands in for one publish attempt (client_int.h). The last
 * scenario runs a publisher over http against a real coyoted that is killed
 * (-9) and restarted on the same port and data directory twice mid-run:
 * every message is reported once, stored once, at the offset it was
 * reported with. It is skipped when this build has no http backend or no
 * coyoted (found through $COYOTED, COYOTED_PATH, or ../coyoted next to this
 * test's directory).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
#include "client/client_int.h"
#include "coyote.h"
#include "coyoted_proc.h"
#include "testutil.h"

/* ---- fixture and helpers ---------------------------------------------------------- */

struct fx {
    char *dir;
    cy_client *c;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = tu_tempdir("publisher");
    char url[4200];
    snprintf(url, sizeof url, "file://%s", f->dir);
    cy_options o;
    memset(&o, 0, sizeof o);
    o.fsync = "never";
    int rc = cy_open(url, &o, &f->c);
    if (rc)
        fail_msg("cy_open(%s): %s", url, cy_strerror(rc));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    assert_int_equal(cy_close(f->c), 0);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

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

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

/* Wait until *v >= target, at most timeout_ms. */
static bool wait_for(atomic_size_t *v, size_t target, unsigned timeout_ms)
{
    uint64_t give_up = clock_mono_ms() + timeout_ms;
    while (atomic_load(v) < target) {
        if (clock_mono_ms() > give_up)
            return false;
        sleep_ms(1);
    }
    return true;
}

static cy_message text_msg(const char *value)
{
    cy_message m;
    memset(&m, 0, sizeof m);
    m.value = value;
    m.value_len = strlen(value);
    return m;
}

/* Every message of topic (all partitions) from the earliest, through a new
 * stream group: fn(arg, msg) for each, in batches, committing as it goes. */
static void read_all(cy_client *c, const char *topic, const char *group,
                     void (*fn)(void *arg, const cy_received *r), void *arg)
{
    char name[128];
    for (;;) {
        cy_receive_opts o;
        memset(&o, 0, sizeof o);
        o.batch_size = 1000;
        o.start_earliest = true;
        cy_batch b;
        OK(c, cy_receive(c, CY_STREAM, topic, group, &o, &b));
        if (b.n == 0) {
            cy_batch_free(&b);
            return;
        }
        uint64_t last[64] = {0};
        bool seen[64] = {false};
        for (size_t i = 0; i < b.n; i++) {
            fn(arg, &b.msgs[i]);
            assert_true(b.msgs[i].partition < 64);
            last[b.msgs[i].partition] = b.msgs[i].offset;
            seen[b.msgs[i].partition] = true;
        }
        size_t bare = strcspn(topic, "~");
        for (uint32_t p = 0; p < 64; p++) {
            if (!seen[p])
                continue;
            snprintf(name, sizeof name, "%.*s~%" PRIu32, (int)bare, topic, p);
            OK(c, cy_commit(c, name, group, last[p]));
        }
        cy_batch_free(&b);
    }
}

static void count_one(void *arg, const cy_received *r)
{
    (void)r;
    (*(size_t *)arg)++;
}

static size_t count_all(cy_client *c, const char *topic, const char *group)
{
    size_t n = 0;
    read_all(c, topic, group, count_one, &n);
    return n;
}

/* ---- what the publisher reported ------------------------------------------------------ */

/* One slot per message (msg_arg = its index). */
struct reports {
    size_t n;
    atomic_size_t done;      /* on_done calls */
    atomic_size_t in_flight; /* max_in_flight scenario: sent - done, its peak */
    unsigned *calls;         /* on_done calls per message */
    int *rc;
    uint32_t *partition;
    uint64_t *offset;
    uint64_t *at_ms;   /* when it was reported */
    unsigned sleep_ms; /* each on_done sleeps this long */
    cy_client *c;      /* set: record cy_last_error's status on failures */
    int *status;
};

static void reports_init(struct reports *r, size_t n)
{
    memset(r, 0, sizeof *r);
    r->n = n;
    atomic_init(&r->done, 0);
    atomic_init(&r->in_flight, 0);
    r->calls = calloc(n, sizeof *r->calls);
    r->rc = calloc(n, sizeof *r->rc);
    r->partition = calloc(n, sizeof *r->partition);
    r->offset = calloc(n, sizeof *r->offset);
    r->at_ms = calloc(n, sizeof *r->at_ms);
    r->status = calloc(n, sizeof *r->status);
    assert_true(r->calls && r->rc && r->partition && r->offset && r->at_ms && r->status);
}

static void reports_free(struct reports *r)
{
    free(r->calls);
    free(r->rc);
    free(r->partition);
    free(r->offset);
    free(r->at_ms);
    free(r->status);
}

static void on_done(void *arg, int rc, uint32_t partition, uint64_t offset, void *msg_arg)
{
    struct reports *r = arg;
    size_t i = (size_t)(uintptr_t)msg_arg;
    assert_true(i < r->n);
    if (r->sleep_ms)
        sleep_ms(r->sleep_ms);
    r->calls[i]++;
    r->rc[i] = rc;
    r->partition[i] = partition;
    r->offset[i] = offset;
    r->at_ms[i] = clock_mono_ms();
    if (rc == CY_ESERVER && r->c)
        cy_last_error(r->c, NULL, &r->status[i]);
    atomic_fetch_add(&r->done, 1);
}

static cy_publisher_opts pub_opts(struct reports *r, uint32_t linger, uint32_t batch)
{
    cy_publisher_opts o;
    memset(&o, 0, sizeof o);
    o.linger_ms = linger;
    o.batch_size = batch;
    o.on_done = on_done;
    o.arg = r;
    return o;
}

static void send_text(cy_publisher *p, const char *value, size_t idx)
{
    cy_message m = text_msg(value);
    int rc = cy_publisher_send(p, &m, (void *)(uintptr_t)idx);
    if (rc)
        fail_msg("cy_publisher_send: %s", cy_strerror(rc));
}

/* ---- the attempt hook ------------------------------------------------------------------ */

enum hook_mode {
    HOOK_PASS,       /* cy_publish */
    HOOK_LOSE_REPLY, /* cy_publish, but the first `fails` answers are lost (CY_ETIMEDOUT) */
    HOOK_FAIL,       /* the first `fails` attempts fail with rc/status without publishing */
};

struct hook {
    enum hook_mode mode;
    unsigned fails;
    int fail_rc, fail_status;
    unsigned attempts, failures;
    size_t msgs_max, msgs_total;
    char keys[64][80];
    bool duplicate[64];
};

static int hook_attempt(void *arg, cy_client *c, const char *topic, const cy_message *msgs,
                        size_t n, const char *key, cy_publish_result *res, int *status)
{
    struct hook *h = arg;
    unsigned k = h->attempts++;
    if (k < 64)
        snprintf(h->keys[k], sizeof h->keys[k], "%s", key ? key : "(none)");
    if (n > h->msgs_max)
        h->msgs_max = n;
    h->msgs_total += n;
    *status = 0;
    if (h->mode == HOOK_FAIL && k < h->fails) {
        *status = h->fail_status;
        return h->fail_rc;
    }
    int rc = cy_publish(c, topic, msgs, n, key, res);
    if (rc == CY_ESERVER)
        cy_last_error(c, NULL, status);
    if (k < 64)
        h->duplicate[k] = !rc && res->duplicate;
    if (rc)
        h->failures++;
    if (!rc && h->mode == HOOK_LOSE_REPLY && k < h->fails)
        return CY_ETIMEDOUT; /* stored, but the answer never came back */
    return rc;
}

/* ---- writer -------------------------------------------------------------------------------- */

struct collected {
    size_t n;
    cy_received first;
    uint8_t *value; /* copy of the first message's value */
    char key[64];
    char header[64];
};

static void collect(void *arg, const cy_received *r)
{
    struct collected *col = arg;
    if (col->n++ == 0) {
        col->first = *r;
        col->value = malloc(r->value_len + 1);
        assert_non_null(col->value);
        memcpy(col->value, r->value, r->value_len);
        snprintf(col->key, sizeof col->key, "%.*s", (int)r->key_len, r->key ? r->key : "");
        for (size_t i = 0; i < r->n_headers; i++)
            if (!strcmp(r->headers[i].name, "h"))
                snprintf(col->header, sizeof col->header, "%s", r->headers[i].value);
    }
}

static void test_writer_pieces(void **state)
{
    struct fx *f = *state;
    cy_header hdr[1] = {{.name = "h", .value = "v1"}};
    cy_message meta;
    memset(&meta, 0, sizeof meta);
    meta.headers = hdr;
    meta.n_headers = 1;
    meta.key = "the-key";
    meta.value = "ignored";
    meta.value_len = 7;
    char key_buf[16] = "the-key";
    meta.key = key_buf;

    cy_writer *w;
    OK(f->c, cy_writer_open(f->c, "pieces", &meta, &w));
    /* The writer copied meta: changing the caller's memory changes nothing. */
    key_buf[0] = 'X';

    size_t total = 3 + 300 * 1024;
    uint8_t *expect = malloc(total);
    assert_non_null(expect);
    uint64_t seed = 42;
    tu_fill(&seed, expect, total);
    memcpy(expect, "abc", 3);
    OK(f->c, cy_writer_write(w, "a", 1));
    OK(f->c, cy_writer_write(w, NULL, 0));
    OK(f->c, cy_writer_write(w, "bc", 2));
    for (size_t at = 3; at < total; at += 777) {
        size_t n = total - at < 777 ? total - at : 777;
        OK(f->c, cy_writer_write(w, expect + at, n));
    }
    cy_publish_result res;
    OK(f->c, cy_writer_close(w, &res));
    assert_int_equal(res.n, 1);
    assert_int_equal(res.parts[0].start_offset, 0);
    assert_int_equal(res.parts[0].end_offset, 1);

    struct collected col;
    memset(&col, 0, sizeof col);
    read_all(f->c, "pieces", "g", collect, &col);
    assert_int_equal(col.n, 1);
    assert_int_equal(col.first.value_len, total);
    assert_memory_equal(col.value, expect, total);
    assert_string_equal(col.key, "the-key");
    assert_string_equal(col.header, "v1");
    free(col.value);
    free(expect);

    /* No write at all: an empty value; meta may be NULL. */
    OK(f->c, cy_writer_open(f->c, "empty", NULL, &w));
    OK(f->c, cy_writer_close(w, NULL));
    memset(&col, 0, sizeof col);
    read_all(f->c, "empty", "g", collect, &col);
    assert_int_equal(col.n, 1);
    assert_int_equal(col.first.value_len, 0);
    free(col.value);
}

static void test_writer_abort_and_errors(void **state)
{
    struct fx *f = *state;
    cy_writer *w;
    OK(f->c, cy_writer_open(f->c, "aborted", NULL, &w));
    OK(f->c, cy_writer_write(w, "never sent", 10));
    cy_writer_abort(w);
    cy_writer_abort(NULL);
    assert_int_equal(count_all(f->c, "aborted", "g"), 0);

    /* Past the writer's own cap: refused, sticky, nothing published. The
     * length is refused before anything is read from the pointer. */
    static const char big[1] = {0};
    OK(f->c, cy_writer_open(f->c, "toobig", NULL, &w));
    OK(f->c, cy_writer_write(w, "x", 1));
    assert_int_equal(cy_writer_write(w, big, (size_t)64 << 20), CY_ETOOBIG);
    assert_int_equal(cy_writer_write(w, "y", 1), CY_ETOOBIG);
    assert_int_equal(cy_writer_close(w, NULL), CY_ETOOBIG);
    assert_int_equal(count_all(f->c, "toobig", "g"), 0);

    /* Past the broker's value limit (1 MiB): its refusal, 422. */
    size_t n = (1u << 20) + 1;
    char *v = calloc(1, n);
    assert_non_null(v);
    OK(f->c, cy_writer_open(f->c, "toobig", NULL, &w));
    OK(f->c, cy_writer_write(w, v, n));
    cy_publish_result res;
    assert_int_equal(cy_writer_close(w, &res), CY_ESERVER);
    assert_int_equal(res.n, 0);
    int status = 0;
    const char *code = cy_last_error(f->c, NULL, &status);
    assert_non_null(code);
    assert_string_equal(code, "invalid_data");
    assert_int_equal(status, 422);
    free(v);
    assert_int_equal(count_all(f->c, "toobig", "g2"), 0);

    /* Arguments. */
    cy_message bad = text_msg("x");
    bad.value = NULL;
    assert_int_equal(cy_writer_open(NULL, "t", NULL, &w), CY_EINVAL);
    assert_null(w);
    assert_int_equal(cy_writer_open(f->c, NULL, NULL, &w), CY_EINVAL);
    assert_int_equal(cy_writer_open(f->c, "t", NULL, NULL), CY_EINVAL);
    assert_int_equal(cy_writer_open(f->c, "t", &bad, &w), CY_EINVAL);
    assert_int_equal(cy_writer_write(NULL, "x", 1), CY_EINVAL);
    assert_int_equal(cy_writer_close(NULL, NULL), CY_EINVAL);
    OK(f->c, cy_writer_open(f->c, "t", NULL, &w));
    assert_int_equal(cy_writer_write(w, NULL, 1), CY_EINVAL);
    cy_writer_abort(w);
}

/* ---- publisher: many threads --------------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 2500

struct sender {
    cy_publisher *p;
    size_t first, n;
};

static void *send_many(void *arg)
{
    struct sender *s = arg;
    char value[32];
    for (size_t i = 0; i < s->n; i++) {
        snprintf(value, sizeof value, "m%zu", s->first + i);
        send_text(s->p, value, s->first + i);
    }
    return NULL;
}

struct by_offset {
    size_t n;
    char **values; /* value at each offset of partition 0 */
    size_t dup_offsets;
};

static void record_value(void *arg, const cy_received *r)
{
    struct by_offset *b = arg;
    assert_int_equal(r->partition, 0);
    assert_true(r->offset < b->n);
    if (b->values[r->offset])
        b->dup_offsets++;
    else
        b->values[r->offset] = strndup((const char *)r->value, r->value_len);
}

static void test_publisher_threads(void **state)
{
    struct fx *f = *state;
    const size_t total = THREADS * PER_THREAD;
    struct reports r;
    reports_init(&r, total);
    struct hook h;
    memset(&h, 0, sizeof h);
    cy_publisher_opts o = pub_opts(&r, 5, 100);
    cy_publisher *p;
    OK(f->c, cy_publisher_new(f->c, "many", &o, &p));
    publisher_set_attempt(p, hook_attempt, &h);

    pthread_t t[THREADS];
    struct sender s[THREADS];
    for (size_t i = 0; i < THREADS; i++) {
        s[i] = (struct sender){.p = p, .first = i * PER_THREAD, .n = PER_THREAD};
        assert_int_equal(pthread_create(&t[i], NULL, send_many, &s[i]), 0);
    }
    for (size_t i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    OK(f->c, cy_publisher_flush(p));
    assert_int_equal(atomic_load(&r.done), total);

    /* Each reported once, rc 0, on partition 0; offsets dense and unique;
     * one thread's messages in its order. */
    bool *taken = calloc(total, sizeof *taken);
    assert_non_null(taken);
    for (size_t i = 0; i < total; i++) {
        assert_int_equal(r.calls[i], 1);
        assert_int_equal(r.rc[i], 0);
        assert_int_equal(r.partition[i], 0);
        assert_true(r.offset[i] < total);
        assert_false(taken[r.offset[i]]);
        taken[r.offset[i]] = true;
        if (i % PER_THREAD)
            assert_true(r.offset[i] > r.offset[i - 1]);
    }
    free(taken);
    /* Batched: far fewer requests than messages, none over batch_size. */
    assert_int_equal(h.msgs_total, total);
    assert_true(h.msgs_max <= 100);
    assert_true(h.attempts < total / 4);
    print_message("%zu messages in %u publish calls\n", total, h.attempts);
    OK(f->c, cy_publisher_close(p));

    /* What is stored is what was reported: the value at each offset. */
    struct by_offset b = {.n = total};
    b.values = calloc(total, sizeof *b.values);
    assert_non_null(b.values);
    read_all(f->c, "many", "g", record_value, &b);
    assert_int_equal(b.dup_offsets, 0);
    char value[32];
    for (size_t i = 0; i < total; i++) {
        snprintf(value, sizeof value, "m%zu", i);
        assert_non_null(b.values[r.offset[i]]);
        assert_string_equal(b.values[r.offset[i]], value);
    }
    for (size_t i = 0; i < total; i++)
        free(b.values[i]);
    free(b.values);
    reports_free(&r);
}

/* ---- publisher: when batches go ------------------------------------------------------------- */

static void test_publisher_full_batches(void **state)
{
    /* A linger far longer than the test: only full batches can go. */
    struct fx *f = *state;
    struct reports r;
    reports_init(&r, 1000);
    struct hook h;
    memset(&h, 0, sizeof h);
    cy_publisher_opts o = pub_opts(&r, 60000, 100);
    cy_publisher *p;
    OK(f->c, cy_publisher_new(f->c, "full", &o, &p));
    publisher_set_attempt(p, hook_attempt, &h);
    char value[32];
    for (size_t i = 0; i < 1000; i++) {
        snprintf(value, sizeof value, "f%zu", i);
        send_text(p, value, i);
    }
    assert_true(wait_for(&r.done, 1000, 20000));
    OK(f->c, cy_publisher_close(p));
    assert_int_equal(h.attempts, 10);
    assert_int_equal(h.msgs_max, 100);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(r.offset[i], i);
    reports_free(&r);
}

static void test_publisher_linger(void **state)
{
    struct fx *f = *state;
    struct reports r;
    reports_init(&r, 2);
    cy_publisher_opts o = pub_opts(&r, 100, 100);
    cy_publisher *p;
    OK(f->c, cy_publisher_new(f->c, "linger", &o, &p));
    uint64_t t0 = clock_mono_ms();
    send_text(p, "alone", 0);
    assert_true(wait_for(&r.done, 1, 10000));
    uint64_t waited = r.at_ms[0] - t0;
    print_message("one message reported after %" PRIu64 " ms (linger 100)\n", waited);
    assert_true(waited >= 95);
    assert_true(waited < 100 + 2000);
    OK(f->c, cy_publisher_close(p));

    /* A flush sends at once, whatever the linger. */
    o = pub_opts(&r, 60000, 100);
    OK(f->c, cy_publisher_new(f->c, "linger", &o, &p));
    t0 = clock_mono_ms();
    send_text(p, "flushed", 1);
    OK(f->c, cy_publisher_flush(p));
    assert_int_equal(atomic_load(&r.done), 2);
    assert_true(clock_mono_ms() - t0 < 5000);
    assert_int_equal(r.rc[1], 0);
    assert_int_equal(r.offset[1], 1);
    /* Nothing queued: flush and close return at once. */
    OK(f->c, cy_publisher_flush(p));
    OK(f->c, cy_publisher_close(p));
    reports_free(&r);
}

/* ---- publisher: back-pressure ----------------------------------------------------------------- */

static void test_publisher_max_in_flight(void **state)
{
    struct fx *f = *state;
    enum { N = 40, MAX = 4 };
    struct reports r;
    reports_init(&r, N);
    r.sleep_ms = 10; /* a slow consumer of reports */
    cy_publisher_opts o = pub_opts(&r, 1, 2);
    o.max_in_flight = MAX;
    cy_publisher *p;
    OK(f->c, cy_publisher_new(f->c, "inflight", &o, &p));
    uint64_t t0 = clock_mono_ms();
    size_t peak = 0;
    for (size_t i = 0; i < N; i++) {
        send_text(p, "x", i);
        /* A message stops being pending after its on_done returned, and done
         * counts before that, so this never exceeds what the publisher holds. */
        size_t outstanding = i + 1 - atomic_load(&r.done);
        if (outstanding > peak)
            peak = outstanding;
    }
    uint64_t sending = clock_mono_ms() - t0;
    OK(f->c, cy_publisher_close(p));
    print_message("peak %zu in flight (max %d), sending took %" PRIu64 " ms\n", peak, MAX, sending);
    assert_true(peak <= MAX);
    assert_true(peak >= 2);
    /* The sender was held back: N - MAX reports of 10 ms each had to happen
     * before its last send returned. */
    assert_true(sending >= (N - MAX) * 10 - 20);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(r.calls[i], 1);
        assert_int_equal(r.offset[i], i);
    }
    reports_free(&r);
}

/* max_in_flight 1, and on_done waits at a gate: a second send blocks; a
 * close that begins meanwhile makes it return CY_ECLOSED. */
struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    bool open;
    atomic_size_t done;
};

static void gated_done(void *arg, int rc, uint32_t partition, uint64_t offset, void *msg_arg)
{
    (void)rc;
    (void)partition;
    (void)offset;
    (void)msg_arg;
    struct gate *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->lock);
    pthread_mutex_unlock(&g->lock);
    atomic_fetch_add(&g->done, 1);
}

struct blocked {
    cy_publisher *p;
    int rc;
};

static void *send_blocked(void *arg)
{
    struct blocked *b = arg;
    cy_message m = text_msg("second");
    b->rc = cy_publisher_send(b->p, &m, NULL);
    return NULL;
}

struct closer {
    cy_publisher *p;
    int rc;
};

static void *close_it(void *arg)
{
    struct closer *c = arg;
    c->rc = cy_publisher_close(c->p);
    return NULL;
}

static void test_publisher_close_wakes_sender(void **state)
{
    struct fx *f = *state;
    struct gate g;
    memset(&g, 0, sizeof g);
    pthread_mutex_init(&g.lock, NULL);
    pthread_cond_init(&g.cv, NULL);
    atomic_init(&g.done, 0);
    cy_publisher_opts o;
    memset(&o, 0, sizeof o);
    o.max_in_flight = 1;
    o.linger_ms = 1;
    o.on_done = gated_done;
    o.arg = &g;
    cy_publisher *p;
    OK(f->c, cy_publisher_new(f->c, "closing", &o, &p));
    cy_message m = text_msg("first");
    OK(f->c, cy_publisher_send(p, &m, NULL));

    struct blocked b = {.p = p, .rc = 1};
    pthread_t sender, closer_t;
    assert_int_equal(pthread_create(&sender, NULL, send_blocked, &b), 0);
    sleep_ms(50); /* let it block (it gets CY_ECLOSED either way) */
    struct closer cl = {.p = p, .rc = 1};
    assert_int_equal(pthread_create(&closer_t, NULL, close_it, &cl), 0);
    pthread_join(sender, NULL); /* returns although the first message is still pending */
    assert_int_equal(b.rc, CY_ECLOSED);
    pthread_mutex_lock(&g.lock);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.lock);
    pthread_join(closer_t, NULL);
    assert_int_equal(cl.rc, 0);
    assert_int_equal(atomic_load(&g.done), 1);
    assert_int_equal(count_all(f->c, "closing", "g"), 1);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.lock);
}

static void test_publisher_args(void **state)
{
    struct fx *f = *state;
    cy_publisher *p = (cy_publisher *)1;
    assert_int_equal(cy_publisher_new(NULL, "t", NULL, &p), CY_EINVAL);
    assert_null(p);
    assert_int_equal(cy_publisher_new(f->c, NULL, NULL, &p), CY_EINVAL);
    assert_int_equal(cy_publisher_new(f->c, "t", NULL, NULL), CY_EINVAL);
    assert_int_equal(cy_publisher_flush(NULL), CY_EINVAL);
    assert_int_equal(cy_publisher_close(NULL), 0);
    OK(f->c, cy_publisher_new(f->c, "args", NULL, &p)); /* opts NULL, on_done NULL */
    cy_message m = text_msg("x");
    assert_int_equal(cy_publisher_send(NULL, &m, NULL), CY_EINVAL);
    assert_int_equal(cy_publisher_send(p, NULL, NULL), CY_EINVAL);
    m.value = NULL;
    assert_int_equal(cy_publisher_send(p, &m, NULL), CY_EINVAL);
    cy_header h = {.name = NULL, .value = "v"};
    m = text_msg("x");
    m.headers = &h;
    m.n_headers = 1;
    assert_int_equal(cy_publisher_send(p, &m, NULL), CY_EINVAL);
    m = text_msg("kept");
    OK(f->c, cy_publisher_send(p, &m, NULL));
    OK(f->c, cy_publisher_close(p));
    assert_int_equal(count_all(f->c, "args", "g"), 1);
}

/* ---- publisher: retries and failures ---------------------------------------------------------- */

static void test_publisher_retry_same_key(void **state)
{
    struct fx *f = *state;
    struct reports r;
    reports_init(&r, 10);
    struct hook h;
    memset(&h, 0, sizeof h);
    h.mode = HOOK_LOSE_REPLY;
    h.fails = 1;
    cy_publisher_opts o = pub_opts(&r, 60000, 100);
    cy_publisher *p;
    OK(f->c, cy_publisher_new(f->c, "retry", &o, &p));
    publisher_set_attempt(p, hook_attempt, &h);
    char value[16];
    for (size_t i = 0; i < 5; i++) {
        snprintf(value, sizeof value, "r%zu", i);
        send_text(p, value, i);
    }
    OK(f->c, cy_publisher_flush(p));
    /* Stored by the first attempt, its answer lost; the retry carried the
     * same key and got the original result back. */
    assert_int_equal(h.attempts, 2);
    assert_string_equal(h.keys[0], h.keys[1]);
    assert_false(h.duplicate[0]);
    assert_true(h.duplicate[1]);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(r.calls[i], 1);
        assert_int_equal(r.rc[i], 0);
        assert_int_equal(r.partition[i], 0);
        assert_int_equal(r.offset[i], i);
    }
    assert_int_equal(count_all(f->c, "retry", "g"), 5);

    /* 503 twice, then through: three attempts with one key, after the
     * backoff (50 + 100 ms). */
    memset(&h, 0, sizeof h);
    h.mode = HOOK_FAIL;
    h.fails = 2;
    h.fail_rc = CY_ESERVER;
    h.fail_status = 503;
    uint64_t t0 = clock_mono_ms();
    send_text(p, "r5", 5);
    OK(f->c, cy_publisher_flush(p));
    assert_true(clock_mono_ms() - t0 >= 140);
    assert_int_equal(h.attempts, 3);
    assert_string_equal(h.keys[0], h.keys[2]);
    assert_int_equal(r.rc[5], 0);
    assert_int_equal(r.offset[5], 5);

    /* Each batch has its own key: same random prefix, another number. */
    memset(&h, 0, sizeof h);
    send_text(p, "r6", 6);
    OK(f->c, cy_publisher_flush(p));
    send_text(p, "r7", 7);
    OK(f->c, cy_publisher_flush(p));
    assert_int_equal(h.attempts, 2);
    assert_string_not_equal(h.keys[0], h.keys[1]);
    assert_memory_equal(h.keys[0], h.keys[1], 33); /* "<32 hex>-" */
    char first_key[80];
    snprintf(first_key, sizeof first_key, "%s", h.keys[0]);
    OK(f->c, cy_publisher_close(p));
    assert_int_equal(count_all(f->c, "retry", "g"), 3);

    /* Another publisher, another prefix. */
    memset(&h, 0, sizeof h);
    OK(f->c, cy_publisher_new(f->c, "retry", &o, &p));
    publisher_set_attempt(p, hook_attempt, &h);
    send_text(p, "r8", 8);
    OK(f->c, cy_publisher_close(p));
    assert_int_equal(h.attempts, 1);
    assert_memory_not_equal(h.keys[0], first_key, 32);
    reports_free(&r);
}

static void test_publisher_failures(void **state)
{
    struct fx *f = *state;
    struct reports r;
    reports_init(&r, 20);
    struct hook h;
    memset(&h, 0, sizeof h);
    h.mode = HOOK_FAIL;
    h.fails = 1000;
    h.fail_rc = CY_ECONNECT;
    cy_publisher_opts o = pub_opts(&r, 60000, 100);
    o.retries = 2;
    cy_publisher *p;
    OK(f->c, cy_publisher_new(f->c, "fail", &o, &p));
    publisher_set_attempt(p, hook_attempt, &h);

    /* Unreachable: 1 + retries attempts, then every message gets the error. */
    send_text(p, "a", 0);
    send_text(p, "b", 1);
    assert_int_equal(cy_publisher_flush(p), CY_ECONNECT);
    assert_int_equal(h.attempts, 3);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(r.calls[i], 1);
        assert_int_equal(r.rc[i], CY_ECONNECT);
        assert_int_equal(r.partition[i], UINT32_MAX);
        assert_int_equal(r.offset[i], UINT64_MAX);
    }
    /* The error was reported by that flush; the next one starts afresh. */
    assert_int_equal(cy_publisher_flush(p), 0);

    /* Refusals other than 503 (and 413/422: below) are not retried. */
    memset(&h, 0, sizeof h);
    h.mode = HOOK_FAIL;
    h.fails = 1000;
    h.fail_rc = CY_ESERVER;
    h.fail_status = 400;
    send_text(p, "c", 2);
    send_text(p, "d", 3);
    assert_int_equal(cy_publisher_flush(p), CY_ESERVER);
    assert_int_equal(h.attempts, 1);
    assert_int_equal(r.rc[2], CY_ESERVER);
    assert_int_equal(r.rc[3], CY_ESERVER);

    /* Back to the broker: one bad message (a key over 1 KiB: 422) among
     * good ones fails alone; the others are stored, each at its offset. */
    publisher_set_attempt(p, NULL, NULL);
    r.c = f->c;
    char long_key[2048];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = 0;
    for (size_t i = 4; i < 9; i++) {
        cy_message m = text_msg("v");
        if (i == 6)
            m.key = long_key;
        OK(f->c, cy_publisher_send(p, &m, (void *)(uintptr_t)i));
    }
    assert_int_equal(cy_publisher_flush(p), CY_ESERVER);
    for (size_t i = 4; i < 9; i++) {
        assert_int_equal(r.calls[i], 1);
        if (i == 6) {
            assert_int_equal(r.rc[i], CY_ESERVER);
            assert_int_equal(r.status[i], 422); /* cy_last_error from on_done */
        } else {
            assert_int_equal(r.rc[i], 0);
            assert_int_equal(r.partition[i], 0);
            assert_int_equal(r.offset[i], i < 6 ? i - 4 : i - 5);
        }
    }
    OK(f->c, cy_publisher_close(p));
    assert_int_equal(count_all(f->c, "fail", "g"), 4);
    reports_free(&r);
}

/* ---- publisher: partitions ---------------------------------------------------------------------- */

static uint32_t djb2(const char *s)
{
    uint32_t h = 5381;
    for (; *s; s++)
        h = h * 33 + (uint8_t)*s;
    return h;
}

static void test_publisher_partitions(void **state)
{
    struct fx *f = *state;
    OK(f->c, cy_topic_configure(f->c, "parts", 4, NULL));
    struct reports r;
    reports_init(&r, 30);
    cy_publisher_opts o = pub_opts(&r, 60000, 100);
    cy_publisher *p;

    /* "name~p": every message there, exact offsets. */
    OK(f->c, cy_publisher_new(f->c, "parts~2", &o, &p));
    for (size_t i = 0; i < 5; i++)
        send_text(p, "pinned", i);
    OK(f->c, cy_publisher_close(p));
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(r.rc[i], 0);
        assert_int_equal(r.partition[i], 2);
        assert_int_equal(r.offset[i], i);
    }

    OK(f->c, cy_publisher_new(f->c, "parts", &o, &p));
    /* One key: one partition, exact. */
    for (size_t i = 5; i < 10; i++) {
        cy_message m = text_msg("keyed");
        m.key = "customer-7";
        OK(f->c, cy_publisher_send(p, &m, (void *)(uintptr_t)i));
    }
    OK(f->c, cy_publisher_flush(p));
    uint32_t kp = djb2("customer-7") % 4;
    for (size_t i = 5; i < 10; i++) {
        assert_int_equal(r.rc[i], 0);
        assert_int_equal(r.partition[i], kp);
        assert_int_equal(r.offset[i], (kp == 2 ? 5 : 0) + i - 5);
    }
    /* Keyless, spread over partitions by the broker: stored, position unknown. */
    for (size_t i = 10; i < 18; i++)
        send_text(p, "spread", i);
    OK(f->c, cy_publisher_close(p));
    for (size_t i = 10; i < 18; i++) {
        assert_int_equal(r.calls[i], 1);
        assert_int_equal(r.rc[i], 0);
        assert_int_equal(r.partition[i], UINT32_MAX);
        assert_int_equal(r.offset[i], UINT64_MAX);
    }
    assert_int_equal(count_all(f->c, "parts", "g"), 18);
    reports_free(&r);
}

/* ---- over http: kill -9 and restart mid-run ----------------------------------------------------- */

#define KR_N 6000

struct kr_check {
    struct reports *r;
    unsigned *stored; /* times each message is in the topic */
    size_t wrong_offset;
};

static void kr_record(void *arg, const cy_received *m)
{
    struct kr_check *k = arg;
    char value[32];
    snprintf(value, sizeof value, "%.*s", (int)(m->value_len < 31 ? m->value_len : 31),
             (const char *)m->value);
    assert_memory_equal(value, "kr", 2);
    size_t i = strtoul(value + 2, NULL, 10);
    assert_true(i < KR_N);
    k->stored[i]++;
    if (k->r->rc[i] == 0 && (m->partition != k->r->partition[i] || m->offset != k->r->offset[i]))
        k->wrong_offset++;
}

static void *send_kr(void *arg)
{
    cy_publisher *p = arg;
    char value[32];
    for (size_t i = 0; i < KR_N; i++) {
        snprintf(value, sizeof value, "kr%zu", i);
        send_text(p, value, i);
    }
    return NULL;
}

static void test_publisher_http_kill_restart(void **state)
{
    (void)state;
    const char *bin = coyoted_path(COYOTED_PATH_OR_NULL);
    cy_client *probe = NULL;
    if (cy_open("http://127.0.0.1:9", NULL, &probe) == CY_EINVAL || !bin) {
        print_message("no http backend or no coyoted: skipped\n");
        skip();
    }
    cy_close(probe);
    char *dir = tu_tempdir("publisher-http");
    static const char *const extra[] = {"--fsync", "always", NULL};
    struct coyoted_proc s;
    if (coyoted_start(&s, bin, dir, 0, extra, true))
        fail_msg("could not start %s", bin);
    unsigned port = s.port;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", port);
    cy_options co;
    memset(&co, 0, sizeof co);
    co.timeout_ms = 5000;
    cy_client *c;
    OK(NULL, cy_open(url, &co, &c));

    struct reports r;
    reports_init(&r, KR_N);
    cy_publisher_opts o = pub_opts(&r, 2, 50);
    o.retries = 100; /* backoff capped at 2 s: minutes of patience */
    cy_publisher *p;
    OK(c, cy_publisher_new(c, "kr", &o, &p));
    struct hook h; /* passes through, counting failed attempts */
    memset(&h, 0, sizeof h);
    publisher_set_attempt(p, hook_attempt, &h);
    pthread_t sender;
    assert_int_equal(pthread_create(&sender, NULL, send_kr, p), 0);

    for (int round = 1; round <= 2; round++) {
        if (!wait_for(&r.done, (size_t)KR_N * round / 3, 120000))
            fail_msg("round %d: only %zu reported", round, atomic_load(&r.done));
        coyoted_kill(&s);
        print_message("killed coyoted after %zu reports\n", atomic_load(&r.done));
        sleep_ms(100); /* a few refused connections: the publisher backs off */
        bool up = false;
        for (int tries = 0; tries < 100 && !up; tries++) {
            up = coyoted_restart(&s, tries == 99) == 0;
            if (!up)
                sleep_ms(100); /* the port may take a moment to be free */
        }
        if (!up)
            fail_msg("could not restart coyoted on port %u", port);
    }
    pthread_join(sender, NULL);
    int rc = cy_publisher_flush(p);
    OK(c, cy_publisher_close(p));
    OK(c, rc);
    print_message("%u publish attempts, %u failed and were retried\n", h.attempts, h.failures);
    assert_true(h.failures >= 2); /* each outage was seen */

    struct kr_check k = {.r = &r};
    k.stored = calloc(KR_N, sizeof *k.stored);
    assert_non_null(k.stored);
    read_all(c, "kr", "check", kr_record, &k);
    size_t ok = 0;
    for (size_t i = 0; i < KR_N; i++) {
        assert_int_equal(r.calls[i], 1);
        if (r.rc[i] == 0) {
            ok++;
            if (k.stored[i] != 1)
                fail_msg("message %zu: reported stored, found %u times", i, k.stored[i]);
        } else {
            assert_true(k.stored[i] <= 1); /* outcome unknown, but never twice */
        }
    }
    assert_int_equal(k.wrong_offset, 0);
    assert_int_equal(ok, KR_N);
    free(k.stored);
    reports_free(&r);
    cy_close(c);
    coyoted_stop(&s, SIGTERM);
    tu_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_writer_pieces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_abort_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publisher_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publisher_full_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publisher_linger, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publisher_max_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publisher_close_wakes_sender, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publisher_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publisher_retry_same_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publisher_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publisher_partitions, setup, teardown),
        cmocka_unit_test(test_publisher_http_kill_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
