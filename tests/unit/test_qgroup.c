/*
 * test_qgroup.c — the queue/FIFO group state machine (qgroup.h) against API.md
 * §7–§9 at the unit level, over a fake storage (partition bounds, per-message
 * key hash and scheduled_at held in arrays):
 *   queue rules (start position, leases, expiry, ack, nack + retry schedule,
 *   delay_ms, max_deliveries, dlq, redrive, extend, delays, forget_before,
 *   round-robin / one partition, growth), FIFO rules (per-key order, runs to
 *   one caller, release on nack and expiry, keyless, dead-letter unblocks,
 *   blocked keys hold back nothing else, the look-ahead window), bounded
 *   memory over 1M messages, a FIFO property test, a determinism test
 *   (replaying only the apply calls gives the same checkpoint bytes), and the
 *   checkpoint round trip with corrupt inputs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers above, which it needs */

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "broker/qgroup.h"
#include "coyote.h"
#include "testutil.h"

#define LEASE 30000u

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* ---- a fake storage ------------------------------------------------------- */

struct fake {
    uint32_t np;
    uint64_t first[QGROUP_MAX_PARTITIONS], next[QGROUP_MAX_PARTITIONS];
    uint32_t *key[QGROUP_MAX_PARTITIONS];
    uint64_t *sched[QGROUP_MAX_PARTITIONS];
    uint64_t cap[QGROUP_MAX_PARTITIONS];
    bool synthetic;        /* no arrays: every message keyless, not delayed ... */
    uint64_t synth_sched;  /* ... except offsets below synth_delayed: this */
    uint64_t synth_delayed;
    uint64_t bad_meta;     /* meta calls at or above next: must stay 0 */
    uint64_t meta_calls;
};

static void fk_bounds(void *arg, uint32_t p, uint64_t *first, uint64_t *next)
{
    struct fake *f = arg;
    *first = f->first[p];
    *next = f->next[p];
}

static int fk_meta(void *arg, uint32_t p, uint64_t off, uint32_t *key, uint64_t *sched)
{
    struct fake *f = arg;
    f->meta_calls++;
    if (off >= f->next[p]) {
        f->bad_meta++;
        return CY_ERANGE;
    }
    if (off < f->first[p])
        return CY_ERANGE;
    if (f->synthetic) {
        *key = 0;
        *sched = off < f->synth_delayed ? f->synth_sched : 0;
        return 0;
    }
    *key = f->key[p][off];
    *sched = f->sched[p][off];
    return 0;
}

static void fk_init(struct fake *f, uint32_t np)
{
    memset(f, 0, sizeof *f);
    f->np = np;
}

static void fk_free(struct fake *f)
{
    for (uint32_t p = 0; p < QGROUP_MAX_PARTITIONS; p++) {
        free(f->key[p]);
        free(f->sched[p]);
    }
}

static uint64_t fk_pub(struct fake *f, uint32_t p, uint32_t key, uint64_t sched)
{
    if (f->next[p] == f->cap[p]) {
        f->cap[p] = f->cap[p] ? f->cap[p] * 2 : 64;
        f->key[p] = realloc(f->key[p], f->cap[p] * sizeof *f->key[p]);
        f->sched[p] = realloc(f->sched[p], f->cap[p] * sizeof *f->sched[p]);
        assert_non_null(f->key[p]);
        assert_non_null(f->sched[p]);
    }
    f->key[p][f->next[p]] = key;
    f->sched[p][f->next[p]] = sched;
    return f->next[p]++;
}

static struct qgroup_env fk_env(struct fake *f)
{
    struct qgroup_env env = {f, f->np, fk_bounds, fk_meta};
    return env;
}

/* ---- helpers --------------------------------------------------------------- */

struct got {
    uint32_t n;
    struct qplan_item it[256];
    uint32_t dead, wait, skip, block;
};

/* Plan and apply one receive; the delivered items land in *out. */
static uint32_t rcv_at(struct qgroup *g, struct fake *f, uint64_t now, uint32_t batch,
                       uint64_t lease, int32_t only, uint32_t start, struct got *out)
{
    struct qgroup_env env = fk_env(f);
    struct qplan plan = {0};
    assert_int_equal(qgroup_plan_receive(g, &env, now, batch, only, start, &plan), 0);
    static struct got local; /* out == NULL: count only */
    bool keep = out != NULL;
    if (!out)
        out = &local;
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < plan.n; i++) {
        const struct qplan_item *it = &plan.items[i];
        assert_true(it->partition < f->np);
        switch (it->kind) {
        case QPLAN_DELIVER:
            assert_true(out->n < 256 || !keep);
            if (out->n < 256)
                out->it[out->n] = *it;
            out->n++;
            break;
        case QPLAN_DEAD: out->dead++; break;
        case QPLAN_WAIT: out->wait++; break;
        case QPLAN_SKIP: out->skip++; break;
        case QPLAN_BLOCK: out->block++; break;
        default: fail();
        }
    }
    assert_int_equal(plan.delivered, out->n);
    assert_true(out->n <= batch);
    assert_int_equal(qgroup_apply_receive(g, now, now + lease, &plan), 0);
    qplan_free(&plan);
    assert_int_equal(f->bad_meta, 0);
    return out->n;
}

static uint32_t rcv(struct qgroup *g, struct fake *f, uint64_t now, uint32_t batch, struct got *out)
{
    return rcv_at(g, f, now, batch, LEASE, -1, 0, out);
}

static void ack1(struct qgroup *g, uint32_t p, uint64_t off)
{
    struct qgroup_id id = {p, off};
    assert_int_equal(qgroup_apply_ack(g, &id, 1), 0);
}

/* Plan + apply a nack of one id; returns the plan kind (or -1: left out). */
static int nack1(struct qgroup *g, uint32_t p, uint64_t off, uint64_t now, bool has_delay,
                 uint64_t delay, uint64_t *at)
{
    struct qgroup_id id = {p, off};
    struct qplan plan = {0};
    assert_int_equal(qgroup_plan_nack(g, &id, 1, now, has_delay, delay, &plan), 0);
    int kind = -1;
    if (plan.n) {
        assert_int_equal(plan.n, 1);
        kind = plan.items[0].kind;
        if (at)
            *at = plan.items[0].at;
    }
    assert_int_equal(qgroup_apply_nack(g, &plan), 0);
    qplan_free(&plan);
    return kind;
}

static void configure(struct qgroup *g, uint32_t n, const uint64_t *sched, bool dlq,
                      uint32_t maxd)
{
    struct qgroup_config c;
    memset(&c, 0, sizeof c);
    c.retry_count = n;
    for (uint32_t i = 0; i < n; i++)
        c.retry_schedule[i] = sched[i];
    c.has_dlq_topic = dlq;
    c.max_deliveries = maxd;
    qgroup_configure(g, &c);
}

static struct qgroup_stats stats(struct qgroup *g, struct fake *f, uint64_t now)
{
    struct qgroup_env env = fk_env(f);
    struct qgroup_stats st;
    qgroup_get_stats(g, &env, now, &st);
    return st;
}

static void save(const struct qgroup *g, struct buf *b)
{
    buf_reset(b);
    assert_int_equal(qgroup_save(g, b), 0);
}

/* ---- queue mode ------------------------------------------------------------ */

static void test_new_group_starts_at_first(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    for (int i = 0; i < 10; i++)
        fk_pub(&f, 0, 0, 0);
    f.first[0] = 4; /* retention removed 0..3 */
    struct qgroup *g = qgroup_new(false, 0);
    assert_non_null(g);
    assert_false(qgroup_is_fifo(g));
    struct qgroup_stats st = stats(g, &f, 0);
    assert_int_equal(st.floor[0], 4);
    assert_int_equal(st.lag, 6);
    struct got r;
    assert_int_equal(rcv(g, &f, 0, 3, &r), 3);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(r.it[i].offset, 4 + i);
        assert_int_equal(r.it[i].attempt, 1);
    }
    st = stats(g, &f, 0);
    assert_int_equal(st.floor[0], 4);
    assert_int_equal(st.in_flight, 3);
    assert_int_equal(st.lag, 6);
    qgroup_free(g);
    fk_free(&f);
}

static void test_receive_hides_leased(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    for (int i = 0; i < 5; i++)
        fk_pub(&f, 0, 0, 0);
    struct qgroup *g = qgroup_new(false, 0);
    struct qgroup_env env = fk_env(&f);
    assert_int_equal(qgroup_available(g, &env, 0, -1, 100), 5);
    struct got r;
    assert_int_equal(rcv(g, &f, 0, 3, &r), 3);
    assert_int_equal(qgroup_available(g, &env, 0, -1, 100), 2);
    assert_int_equal(rcv(g, &f, 1, 10, &r), 2);
    assert_int_equal(r.it[0].offset, 3);
    assert_int_equal(r.it[1].offset, 4);
    assert_int_equal(rcv(g, &f, 2, 10, &r), 0);
    assert_int_equal(qgroup_available(g, &env, 2, -1, 100), 0);
    /* publish wakes: one more is available */
    fk_pub(&f, 0, 0, 0);
    assert_int_equal(qgroup_available(g, &env, 2, -1, 100), 1);
    assert_int_equal(qgroup_available(g, &env, 2, -1, 0), 0);
    assert_int_equal(rcv(g, &f, 2, 0, &r), 0); /* batch 0: nothing */
    assert_int_equal(rcv(g, &f, 2, 10, &r), 1);
    assert_int_equal(r.it[0].offset, 5);
    assert_int_equal(qgroup_touched(g), 6);
    qgroup_free(g);
    fk_free(&f);
}

static void test_lease_expiry_redelivers(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    fk_pub(&f, 0, 0, 0);
    fk_pub(&f, 0, 0, 0);
    struct qgroup *g = qgroup_new(false, 0);
    struct got r;
    assert_int_equal(rcv_at(g, &f, 0, 10, 1000, -1, 0, &r), 2);
    assert_int_equal(qgroup_next_wakeup(g, 0), 1000);
    assert_int_equal(rcv(g, &f, 999, 10, &r), 0);
    assert_int_equal(stats(g, &f, 999).in_flight, 2);
    assert_int_equal(stats(g, &f, 1000).in_flight, 0);
    struct qgroup_env env = fk_env(&f);
    assert_int_equal(qgroup_available(g, &env, 1000, -1, 10), 2);
    assert_int_equal(rcv_at(g, &f, 1000, 1, 500, -1, 0, &r), 1);
    assert_int_equal(r.it[0].offset, 0);
    assert_int_equal(r.it[0].attempt, 2);
    assert_int_equal(rcv_at(g, &f, 1001, 1, 500, -1, 0, &r), 1);
    assert_int_equal(r.it[0].offset, 1);
    assert_int_equal(r.it[0].attempt, 2);
    /* expires again: attempt 3 */
    assert_int_equal(qgroup_next_wakeup(g, 1001), 1500);
    assert_int_equal(rcv(g, &f, 1500, 10, &r), 1);
    assert_int_equal(r.it[0].offset, 0);
    assert_int_equal(r.it[0].attempt, 3);
    assert_int_equal(qgroup_next_wakeup(g, 1500), 1501);
    assert_int_equal(qgroup_next_wakeup(g, 1501), 1500 + LEASE);
    ack1(g, 0, 0);
    ack1(g, 0, 1);
    assert_int_equal(qgroup_next_wakeup(g, 1501), UINT64_MAX);
    qgroup_free(g);
    fk_free(&f);
}

static void test_ack_idempotent_unknown_ignored(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 2);
    for (int i = 0; i < 6; i++)
        fk_pub(&f, 0, 0, 0);
    struct qgroup *g = qgroup_new(false, 0);
    struct got r;
    assert_int_equal(rcv_at(g, &f, 0, 5, LEASE, 0, 0, &r), 5);
    struct qgroup_id ids[] = {{0, 2}, {0, 2}, {0, 99}, {1, 0}, {7, 3}, {63, 1}, {200, 1}, {0, 5}};
    assert_int_equal(qgroup_apply_ack(g, ids, 8), 0);
    struct qgroup_stats st = stats(g, &f, 0);
    assert_int_equal(st.in_flight, 4);
    assert_int_equal(st.floor[0], 0);
    assert_int_equal(st.lag, 5); /* 0,1,3,4 leased; 5 never looked at */
    ack1(g, 0, 0);
    ack1(g, 0, 1);
    st = stats(g, &f, 0);
    assert_int_equal(st.floor[0], 3);
    assert_int_equal(st.oldest_unsettled_offset[0], 3);
    ack1(g, 0, 0); /* again: nothing */
    assert_int_equal(stats(g, &f, 0).floor[0], 3);
    /* offset 5 was never delivered: the ack above did nothing */
    assert_int_equal(rcv(g, &f, 1, 10, &r), 1);
    assert_int_equal(r.it[0].offset, 5);
    ack1(g, 0, 3);
    ack1(g, 0, 4);
    ack1(g, 0, 5);
    st = stats(g, &f, 0);
    assert_int_equal(st.floor[0], 6);
    assert_int_equal(st.lag, 0);
    assert_int_equal(qgroup_touched(g), 0);
    assert_int_equal(qgroup_apply_ack(g, NULL, 0), 0);
    qgroup_free(g);
    fk_free(&f);
}

static void test_nack_retry_schedule(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    fk_pub(&f, 0, 0, 0);
    struct qgroup *g = qgroup_new(false, 0);
    uint64_t sched[] = {100, 200};
    configure(g, 2, sched, false, 0);
    assert_int_equal(qgroup_config(g)->retry_count, 2);
    struct got r;
    uint64_t at = 0;
    assert_int_equal(rcv(g, &f, 0, 10, &r), 1);
    assert_int_equal(r.it[0].attempt, 1);
    assert_int_equal(nack1(g, 0, 0, 10, false, 0, &at), QPLAN_WAIT);
    assert_int_equal(at, 110);
    assert_int_equal(stats(g, &f, 10).waiting_retry, 1);
    assert_int_equal(stats(g, &f, 10).in_flight, 0);
    assert_int_equal(qgroup_next_wakeup(g, 10), 110);
    assert_int_equal(nack1(g, 0, 0, 11, false, 0, NULL), -1); /* not leased */
    assert_int_equal(rcv(g, &f, 109, 10, &r), 0);
    assert_int_equal(rcv_at(g, &f, 110, 10, 1000, -1, 0, &r), 1);
    assert_int_equal(r.it[0].attempt, 2);
    /* a lease expiry never consumes a retry */
    assert_int_equal(rcv(g, &f, 1110, 10, &r), 1);
    assert_int_equal(r.it[0].attempt, 3);
    assert_int_equal(nack1(g, 0, 0, 1200, false, 0, &at), QPLAN_WAIT);
    assert_int_equal(at, 1400);
    assert_int_equal(rcv(g, &f, 1399, 10, &r), 0);
    assert_int_equal(rcv(g, &f, 1400, 10, &r), 1);
    assert_int_equal(r.it[0].attempt, 4);
    assert_int_equal(nack1(g, 0, 0, 1500, false, 0, NULL), QPLAN_DEAD);
    struct qgroup_stats st = stats(g, &f, 1500);
    assert_int_equal(st.dead, 1);
    assert_int_equal(st.waiting_retry, 0);
    assert_int_equal(st.floor[0], 1); /* dead is settled for the floor */
    assert_int_equal(st.lag, 0);
    assert_int_equal(rcv(g, &f, 100000, 10, &r), 0);
    qgroup_free(g);
    fk_free(&f);
}

static void test_nack_delay_override_and_no_config(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    fk_pub(&f, 0, 0, 0);
    fk_pub(&f, 0, 0, 0);
    struct qgroup *g = qgroup_new(false, 0);
    struct got r;
    assert_int_equal(rcv(g, &f, 0, 10, &r), 2);
    /* no configuration: the first nack dead-letters, even with delay_ms */
    assert_int_equal(nack1(g, 0, 0, 5, true, 50, NULL), QPLAN_DEAD);
    uint64_t sched[] = {100};
    configure(g, 1, sched, false, 0);
    uint64_t at;
    assert_int_equal(nack1(g, 0, 1, 5, true, 5000, &at), QPLAN_WAIT);
    assert_int_equal(at, 5005);
    assert_int_equal(rcv(g, &f, 5004, 10, &r), 0);
    assert_int_equal(rcv(g, &f, 5005, 10, &r), 1);
    assert_int_equal(r.it[0].offset, 1);
    assert_int_equal(r.it[0].attempt, 2);
    /* a duplicated id in one nack counts once; an enormous delay saturates */
    struct qgroup_id ids[] = {{0, 1}, {0, 1}};
    struct qplan plan = {0};
    configure(g, 2, (uint64_t[]){1, 1}, false, 0);
    assert_int_equal(qgroup_plan_nack(g, ids, 2, 6000, true, UINT64_MAX, &plan), 0);
    assert_int_equal(plan.n, 1);
    assert_int_equal(plan.items[0].at, UINT64_MAX);
    assert_int_equal(qgroup_apply_nack(g, &plan), 0);
    qplan_free(&plan);
    assert_int_equal(stats(g, &f, 6000).waiting_retry, 1);
    qgroup_free(g);
    fk_free(&f);
}

static void test_max_deliveries(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    fk_pub(&f, 0, 0, 0);
    fk_pub(&f, 0, 0, 0);
    struct qgroup *g = qgroup_new(false, 0);
    configure(g, 0, NULL, false, 3);
    struct got r;
    uint64_t now = 0;
    for (uint32_t a = 1; a <= 3; a++) {
        assert_int_equal(rcv_at(g, &f, now, 1, 100, -1, 0, &r), 1);
        assert_int_equal(r.it[0].offset, 0);
        assert_int_equal(r.it[0].attempt, a);
        now += 100;
    }
    /* third expiry: dead-lettered instead of redelivered; offset 1 comes */
    assert_int_equal(rcv_at(g, &f, now, 1, 100, -1, 0, &r), 1);
    assert_int_equal(r.dead, 1);
    assert_int_equal(r.it[0].offset, 1);
    struct qgroup_stats st = stats(g, &f, now);
    assert_int_equal(st.dead, 1);
    assert_int_equal(st.floor[0], 1);
    ack1(g, 0, 1);
    assert_int_equal(stats(g, &f, now).floor[0], 2);
    /* acking a dead message does nothing */
    ack1(g, 0, 0);
    assert_int_equal(stats(g, &f, now).dead, 1);
    qgroup_free(g);
    fk_free(&f);
}

/* With a dlq_topic the broker stores a copy, and the group still remembers
 * the message as dead-lettered: redrive brings it back (API.md §7), with its
 * delivery count reset. */
static void test_dlq_topic_dead_letters(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    fk_pub(&f, 0, 0, 0);
    fk_pub(&f, 0, 0, 0);
    struct qgroup *g = qgroup_new(false, 0);
    configure(g, 0, NULL, true, 1);
    assert_true(qgroup_config(g)->has_dlq_topic);
    struct got r;
    assert_int_equal(rcv_at(g, &f, 0, 10, 100, -1, 0, &r), 2);
    assert_int_equal(nack1(g, 0, 1, 50, false, 0, NULL), QPLAN_DEAD);
    assert_int_equal(rcv(g, &f, 100, 10, &r), 0); /* max_deliveries 1: expiry kills */
    assert_int_equal(r.dead, 1);
    struct qgroup_stats st = stats(g, &f, 100);
    assert_int_equal(st.dead, 2);
    assert_int_equal(st.floor[0], 2);
    assert_int_equal(st.lag, 0);
    assert_int_equal(qgroup_touched(g), 2);
    ack1(g, 0, 0); /* acking a dead message does nothing */
    assert_int_equal(stats(g, &f, 100).dead, 2);
    uint32_t count = 9;
    assert_int_equal(qgroup_apply_redrive(g, &count), 0);
    assert_int_equal(count, 2);
    assert_int_equal(rcv(g, &f, 100, 10, &r), 2);
    assert_int_equal(r.it[0].attempt, 1);
    assert_int_equal(r.it[1].attempt, 1);
    ack1(g, 0, 0);
    ack1(g, 0, 1);
    assert_int_equal(qgroup_touched(g), 0);
    qgroup_free(g);
    fk_free(&f);
}

static void test_redrive_resets_counts(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    for (int i = 0; i < 3; i++)
        fk_pub(&f, 0, 0, 0);
    struct qgroup *g = qgroup_new(false, 0);
    struct got r;
    assert_int_equal(rcv(g, &f, 0, 10, &r), 3);
    assert_int_equal(nack1(g, 0, 0, 1, false, 0, NULL), QPLAN_DEAD);
    assert_int_equal(nack1(g, 0, 2, 1, false, 0, NULL), QPLAN_DEAD);
    ack1(g, 0, 1);
    struct qgroup_stats st = stats(g, &f, 1);
    assert_int_equal(st.dead, 2);
    assert_int_equal(st.floor[0], 3);
    uint64_t sched[] = {10};
    configure(g, 1, sched, false, 0);
    uint32_t count = 0;
    assert_int_equal(qgroup_apply_redrive(g, &count), 0);
    assert_int_equal(count, 2);
    st = stats(g, &f, 1);
    assert_int_equal(st.dead, 0);
    assert_int_equal(st.lag, 2);
    assert_int_equal(rcv(g, &f, 2, 10, &r), 2);
    assert_int_equal(r.it[0].offset, 0);
    assert_int_equal(r.it[0].attempt, 1);
    assert_int_equal(r.it[1].offset, 2);
    assert_int_equal(r.it[1].attempt, 1);
    /* nack count reset too: the retry schedule applies again */
    assert_int_equal(nack1(g, 0, 0, 3, false, 0, NULL), QPLAN_WAIT);
    ack1(g, 0, 2);
    assert_int_equal(rcv(g, &f, 13, 10, &r), 1);
    assert_int_equal(r.it[0].attempt, 2);
    ack1(g, 0, 0);
    assert_int_equal(stats(g, &f, 13).lag, 0);
    assert_int_equal(qgroup_touched(g), 0);
    qgroup_free(g);
    fk_free(&f);
}

static void test_extend(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    for (int i = 0; i < 6; i++)
        fk_pub(&f, 0, 0, 0);
    struct qgroup *g = qgroup_new(false, 0);
    uint64_t sched[] = {100000};
    struct got r;
    assert_int_equal(rcv_at(g, &f, 0, 4, 1000, -1, 0, &r), 4); /* 0..3 */
    ack1(g, 0, 0);
    assert_int_equal(nack1(g, 0, 1, 10, false, 0, NULL), QPLAN_DEAD);
    configure(g, 1, sched, false, 0);
    assert_int_equal(nack1(g, 0, 3, 10, false, 0, NULL), QPLAN_WAIT);
    uint32_t bad = 99;
    const char *why = NULL;
    struct qgroup_id ok[] = {{0, 2}};
    assert_int_equal(qgroup_check_extend(g, ok, 1, 500, &bad, &why), 0);
    struct {
        struct qgroup_id id;
        const char *why;
    } cases[] = {
        {{0, 0}, "message is already acked"},
        {{0, 1}, "message is in the dead-letter queue"},
        {{0, 3}, "message has no active lease"}, /* waiting for a retry */
        {{0, 4}, "message has no active lease"}, /* never delivered */
        {{0, 77}, "message has no active lease"},
        {{5, 0}, "message has no active lease"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct qgroup_id ids[] = {{0, 2}, cases[i].id};
        bad = 99;
        assert_int_equal(qgroup_check_extend(g, ids, 2, 500, &bad, &why), CY_EINVAL);
        assert_int_equal(bad, 1);
        assert_string_equal(why, cases[i].why);
    }
    /* all or nothing: the broker applies only after a clean check */
    assert_int_equal(qgroup_check_extend(g, ok, 1, 1000, &bad, &why), CY_EINVAL);
    assert_int_equal(bad, 0);
    assert_string_equal(why, "lease has expired");
    assert_int_equal(qgroup_check_extend(g, ok, 1, 999, &bad, &why), 0);
    assert_int_equal(qgroup_apply_extend(g, ok, 1, 5000), 0);
    assert_int_equal(rcv(g, &f, 4999, 1, &r), 1); /* not 2: still leased */
    assert_int_equal(r.it[0].offset, 4);
    assert_int_equal(qgroup_check_extend(g, ok, 1, 4999, &bad, &why), 0);
    assert_int_equal(qgroup_check_extend(g, ok, 1, 5000, &bad, &why), CY_EINVAL);
    assert_string_equal(why, "lease has expired");
    /* extending a lease many times keeps the timer heap small */
    for (uint64_t t = 0; t < 100000; t++)
        assert_int_equal(qgroup_apply_extend(g, ok, 1, 10000 + t), 0);
    assert_int_equal(qgroup_next_wakeup(g, 4999), 4999 + LEASE); /* 0:4's lease */
    qgroup_free(g);
    fk_free(&f);
}

static void test_delayed_hidden_until_scheduled(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    fk_pub(&f, 0, 0, 5000);
    fk_pub(&f, 0, 0, 0);
    fk_pub(&f, 0, 0, 10); /* scheduled_at in the past: deliverable */
    struct qgroup *g = qgroup_new(false, 0);
    struct got r;
    assert_int_equal(rcv(g, &f, 100, 10, &r), 2);
    assert_int_equal(r.wait, 1);
    assert_int_equal(r.it[0].offset, 1);
    assert_int_equal(r.it[1].offset, 2);
    struct qgroup_stats st = stats(g, &f, 100);
    assert_int_equal(st.delayed, 1);
    assert_int_equal(st.floor[0], 0);
    assert_int_equal(qgroup_next_wakeup(g, 100), 5000);
    struct qgroup_id ids[] = {{0, 0}};
    uint32_t bad;
    const char *why;
    assert_int_equal(qgroup_check_extend(g, ids, 1, 100, &bad, &why), CY_EINVAL);
    ack1(g, 0, 0); /* never delivered: ignored */
    assert_int_equal(rcv(g, &f, 4999, 10, &r), 0);
    assert_int_equal(rcv(g, &f, 5000, 10, &r), 1);
    assert_int_equal(r.it[0].offset, 0);
    assert_int_equal(r.it[0].attempt, 1);
    assert_int_equal(stats(g, &f, 5000).delayed, 0);
    qgroup_free(g);
    fk_free(&f);
}

static void test_forget_before(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 2);
    for (int i = 0; i < 8; i++)
        fk_pub(&f, 0, 0, 0);
    struct qgroup *g = qgroup_new(false, 0);
    struct got r;
    assert_int_equal(rcv_at(g, &f, 0, 5, LEASE, 0, 0, &r), 5); /* 0..4 */
    assert_int_equal(nack1(g, 0, 1, 1, false, 0, NULL), QPLAN_DEAD);
    assert_int_equal(stats(g, &f, 1).dead, 1);
    qgroup_forget_before(g, 1, 100); /* partition never looked at: nothing */
    qgroup_forget_before(g, 77, 100);
    f.first[0] = 3;
    qgroup_forget_before(g, 0, 3);
    struct qgroup_stats st = stats(g, &f, 1);
    assert_int_equal(st.floor[0], 3);
    assert_int_equal(st.dead, 0);
    assert_int_equal(qgroup_touched(g), 2); /* 3, 4 */
    ack1(g, 0, 3);
    ack1(g, 0, 4);
    assert_int_equal(stats(g, &f, 1).floor[0], 5);
    /* trimmed beyond the scan position: the next receive starts at first */
    f.first[0] = 7;
    qgroup_forget_before(g, 0, 7);
    assert_int_equal(stats(g, &f, 1).floor[0], 7);
    uint64_t calls = f.meta_calls;
    assert_int_equal(rcv(g, &f, 2, 10, &r), 1);
    assert_int_equal(r.it[0].offset, 7);
    assert_int_equal(f.meta_calls, calls + 1);
    /* gone from storage without a forget: skipped, settled */
    fk_pub(&f, 0, 0, 0);
    fk_pub(&f, 0, 0, 0);
    f.first[0] = 9;
    assert_int_equal(rcv(g, &f, 3, 10, &r), 1);
    assert_int_equal(r.skip, 1);
    assert_int_equal(r.it[0].offset, 9);
    /* a redelivery of a message that is gone is a skip too */
    assert_int_equal(rcv(g, &f, 3 + LEASE, 10, &r), 1);
    assert_int_equal(r.it[0].offset, 9);
    f.first[0] = 10;
    assert_int_equal(rcv(g, &f, 3 + 3 * LEASE, 10, &r), 0);
    assert_int_equal(r.skip, 1);
    assert_int_equal(stats(g, &f, 1).floor[0], 10);
    assert_int_equal(qgroup_touched(g), 0);
    qgroup_free(g);
    fk_free(&f);
}

static void test_partitions_round_robin_only_growth(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 3);
    for (uint32_t p = 0; p < 3; p++)
        for (int i = 0; i < 3; i++)
            fk_pub(&f, p, 0, 0);
    struct qgroup *g = qgroup_new(false, 0);
    struct got r;
    assert_int_equal(rcv_at(g, &f, 0, 4, LEASE, -1, 1, &r), 4);
    uint32_t want_p[] = {1, 2, 0, 1};
    uint64_t want_o[] = {0, 0, 0, 1};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r.it[i].partition, want_p[i]);
        assert_int_equal(r.it[i].offset, want_o[i]);
    }
    assert_int_equal(rcv_at(g, &f, 0, 10, LEASE, 2, 0, &r), 2);
    assert_int_equal(r.it[0].partition, 2);
    assert_int_equal(r.it[1].partition, 2);
    assert_int_equal(r.it[1].offset, 2);
    assert_int_equal(rcv_at(g, &f, 0, 10, LEASE, 5, 0, &r), 0); /* no such partition */
    /* expired leases of partition 0 are not taken by a receive of partition 1 */
    assert_int_equal(rcv_at(g, &f, LEASE, 10, LEASE, 1, 0, &r), 3); /* 1:0, 1:1 again, 1:2 */
    for (uint32_t i = 0; i < r.n; i++)
        assert_int_equal(r.it[i].partition, 1);
    /* the topic grows: the new partition starts at its beginning */
    f.np = 4;
    fk_pub(&f, 3, 0, 0);
    assert_int_equal(rcv_at(g, &f, LEASE, 10, LEASE, 3, 0, &r), 1);
    assert_int_equal(r.it[0].partition, 3);
    assert_int_equal(r.it[0].offset, 0);
    qgroup_free(g);
    fk_free(&f);
}

static void test_plan_is_bounded(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    f.synthetic = true;
    f.next[0] = 100001;
    f.synth_delayed = 100000; /* a huge delayed backlog, then one message */
    f.synth_sched = 1000000;
    struct qgroup *g = qgroup_new(false, 0);
    struct qgroup_env env = fk_env(&f);
    struct qplan plan = {0};
    uint32_t got = 0, rounds = 0;
    while (!got) {
        assert_int_equal(qgroup_plan_receive(g, &env, 0, 10, -1, 0, &plan), 0);
        assert_true(plan.n <= 4 * 10 + 1000 + 10);
        got = plan.delivered;
        assert_int_equal(qgroup_apply_receive(g, 0, LEASE, &plan), 0);
        rounds++;
        assert_true(rounds < 200);
    }
    assert_int_equal(f.bad_meta, 0);
    qplan_free(&plan);
    assert_int_equal(stats(g, &f, 0).delayed, 100000);
    qgroup_free(g);
    fk_free(&f);
}

/* ---- FIFO ----------------------------------------------------------------- */

#define KA 0xAAu
#define KB 0xBBu
#define KC 0xCCu

static void test_fifo_per_key_order(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    uint32_t keys[] = {KA, KA, KB, KA, KB};
    for (int i = 0; i < 5; i++)
        fk_pub(&f, 0, keys[i], 0);
    struct qgroup *g = qgroup_new(true, 0);
    assert_true(qgroup_is_fifo(g));
    struct got x, y;
    assert_int_equal(rcv(g, &f, 0, 1, &x), 1); /* caller X: A0 */
    assert_int_equal(x.it[0].offset, 0);
    assert_int_equal(rcv(g, &f, 0, 10, &y), 2); /* caller Y: B (2, 4); A blocked */
    assert_int_equal(y.it[0].offset, 2);
    assert_int_equal(y.it[1].offset, 4);
    assert_int_equal(y.block, 2);
    assert_int_equal(rcv(g, &f, 0, 10, &y), 0);
    ack1(g, 0, 0);
    assert_int_equal(rcv(g, &f, 0, 10, &y), 2);
    assert_int_equal(y.it[0].offset, 1);
    assert_int_equal(y.it[1].offset, 3);
    assert_int_equal(y.it[0].attempt, 1);
    assert_int_equal(y.it[1].attempt, 1);
    qgroup_free(g);
    fk_free(&f);
}

static void test_fifo_run_to_one_caller(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    for (int i = 0; i < 5; i++)
        fk_pub(&f, 0, KA, 0);
    struct qgroup *g = qgroup_new(true, 0);
    struct got r;
    assert_int_equal(rcv(g, &f, 0, 3, &r), 3);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(r.it[i].offset, i);
    assert_int_equal(rcv(g, &f, 0, 10, &r), 0); /* 3, 4 wait behind the key */
    ack1(g, 0, 1);                              /* out of order: allowed */
    ack1(g, 0, 0);
    assert_int_equal(rcv(g, &f, 0, 10, &r), 0); /* 2 still held */
    ack1(g, 0, 2);
    assert_int_equal(rcv(g, &f, 0, 10, &r), 2);
    assert_int_equal(r.it[0].offset, 3);
    assert_int_equal(r.it[1].offset, 4);
    qgroup_free(g);
    fk_free(&f);
}

static void test_fifo_release_on_nack(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    for (int i = 0; i < 4; i++)
        fk_pub(&f, 0, KA, 0);
    fk_pub(&f, 0, KB, 0);
    struct qgroup *g = qgroup_new(true, 0);
    uint64_t sched[] = {100};
    configure(g, 1, sched, false, 0);
    struct got r;
    assert_int_equal(rcv(g, &f, 0, 10, &r), 5);
    assert_int_equal(nack1(g, 0, 1, 10, false, 0, NULL), QPLAN_WAIT);
    /* 2 and 3 were released: 0 is still leased, 1 waits for its retry */
    struct qgroup_id ids[] = {{0, 2}};
    uint32_t bad;
    const char *why;
    assert_int_equal(qgroup_check_extend(g, ids, 1, 10, &bad, &why), CY_EINVAL);
    assert_string_equal(why, "message has no active lease");
    assert_int_equal(stats(g, &f, 10).in_flight, 2); /* A0 and B */
    assert_int_equal(rcv(g, &f, 10, 10, &r), 0);
    ack1(g, 0, 0);
    assert_int_equal(rcv(g, &f, 50, 10, &r), 0); /* 1's retry holds the key */
    assert_int_equal(rcv(g, &f, 110, 10, &r), 3);
    assert_int_equal(r.it[0].offset, 1);
    assert_int_equal(r.it[0].attempt, 2);
    assert_int_equal(r.it[1].offset, 2);
    assert_int_equal(r.it[1].attempt, 1); /* released: its delivery did not count */
    assert_int_equal(r.it[2].offset, 3);
    assert_int_equal(r.it[2].attempt, 1);
    /* nacking several of one key in one call: the first releases the rest */
    struct qgroup_id two[] = {{0, 2}, {0, 1}, {0, 3}};
    struct qplan plan = {0};
    configure(g, 2, (uint64_t[]){100, 100}, false, 0);
    assert_int_equal(qgroup_plan_nack(g, two, 3, 120, false, 0, &plan), 0);
    assert_int_equal(plan.n, 2); /* 2 and 1; 3 was released by 2 */
    assert_int_equal(plan.items[0].offset, 2);
    assert_int_equal(plan.items[1].offset, 1);
    assert_int_equal(qgroup_apply_nack(g, &plan), 0);
    qplan_free(&plan);
    assert_int_equal(rcv(g, &f, 220, 10, &r), 3);
    assert_int_equal(r.it[0].offset, 1);
    assert_int_equal(r.it[0].attempt, 3);
    assert_int_equal(r.it[1].offset, 2);
    assert_int_equal(r.it[1].attempt, 2);
    assert_int_equal(r.it[2].offset, 3);
    assert_int_equal(r.it[2].attempt, 1);
    qgroup_free(g);
    fk_free(&f);
}

static void test_fifo_release_on_expiry(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    for (int i = 0; i < 3; i++)
        fk_pub(&f, 0, KA, 0);
    struct qgroup *g = qgroup_new(true, 0);
    struct got r;
    assert_int_equal(rcv_at(g, &f, 0, 10, 1000, -1, 0, &r), 3);
    /* the whole run expires: it restarts in order, to one caller */
    assert_int_equal(rcv_at(g, &f, 1000, 10, 1000, -1, 0, &r), 3);
    uint32_t want[] = {2, 1, 1};
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(r.it[i].offset, i);
        assert_int_equal(r.it[i].attempt, want[i]);
    }
    /* a smaller batch: the rest is released behind the head */
    assert_int_equal(rcv_at(g, &f, 2000, 1, 1000, -1, 0, &r), 1);
    assert_int_equal(r.it[0].offset, 0);
    assert_int_equal(r.it[0].attempt, 3);
    assert_int_equal(rcv_at(g, &f, 2000, 10, 1000, -1, 0, &r), 0);
    ack1(g, 0, 0);
    assert_int_equal(rcv_at(g, &f, 2000, 10, 1000, -1, 0, &r), 2);
    assert_int_equal(r.it[0].offset, 1);
    assert_int_equal(r.it[0].attempt, 1);
    assert_int_equal(r.it[1].offset, 2);
    assert_int_equal(r.it[1].attempt, 1);
    /* the head's lease is extended, the next one expires alone: it counts,
     * and it waits behind the head */
    struct qgroup_id head = {0, 1};
    assert_int_equal(qgroup_apply_extend(g, &head, 1, 10000), 0);
    assert_int_equal(rcv_at(g, &f, 3000, 10, 1000, -1, 0, &r), 0);
    assert_int_equal(r.block, 1);
    ack1(g, 0, 1);
    assert_int_equal(rcv_at(g, &f, 3000, 10, 1000, -1, 0, &r), 1);
    assert_int_equal(r.it[0].offset, 2);
    assert_int_equal(r.it[0].attempt, 2);
    qgroup_free(g);
    fk_free(&f);
}

static void test_fifo_keyless_unordered(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    for (int i = 0; i < 4; i++)
        fk_pub(&f, 0, 0, 0);
    struct qgroup *g = qgroup_new(true, 0);
    uint64_t sched[] = {1000};
    configure(g, 1, sched, false, 0);
    struct got r;
    for (uint32_t i = 0; i < 4; i++) {
        assert_int_equal(rcv(g, &f, 0, 1, &r), 1); /* four callers */
        assert_int_equal(r.it[0].offset, i);
    }
    assert_int_equal(nack1(g, 0, 0, 0, false, 0, NULL), QPLAN_WAIT);
    assert_int_equal(stats(g, &f, 0).in_flight, 3);
    ack1(g, 0, 3);
    assert_int_equal(stats(g, &f, 0).in_flight, 2);
    qgroup_free(g);
    fk_free(&f);
}

static void test_fifo_dead_letter_unblocks(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    for (int i = 0; i < 3; i++)
        fk_pub(&f, 0, KA, 0);
    struct qgroup *g = qgroup_new(true, 0);
    struct got r;
    assert_int_equal(rcv(g, &f, 0, 1, &r), 1);
    assert_int_equal(rcv(g, &f, 0, 10, &r), 0);
    assert_int_equal(nack1(g, 0, 0, 1, false, 0, NULL), QPLAN_DEAD);
    assert_int_equal(rcv(g, &f, 1, 1, &r), 1);
    assert_int_equal(r.it[0].offset, 1);
    assert_int_equal(r.it[0].attempt, 1);
    /* max_deliveries on a FIFO key: the expiry dead-letters and unblocks */
    configure(g, 0, NULL, false, 1);
    assert_int_equal(rcv(g, &f, 1 + LEASE, 10, &r), 1);
    assert_int_equal(r.dead, 1);
    assert_int_equal(r.it[0].offset, 2);
    assert_int_equal(stats(g, &f, 1 + LEASE).dead, 2);
    /* redrive appends the dead ones behind the key */
    uint32_t n;
    assert_int_equal(qgroup_apply_redrive(g, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(rcv(g, &f, 2 + LEASE, 10, &r), 0);
    ack1(g, 0, 2);
    assert_int_equal(rcv(g, &f, 2 + LEASE, 10, &r), 2);
    assert_int_equal(r.it[0].offset, 0);
    assert_int_equal(r.it[1].offset, 1);
    assert_int_equal(r.it[0].attempt, 1);
    qgroup_free(g);
    fk_free(&f);
}

static void test_fifo_blocked_key_holds_nothing_else(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 2);
    uint32_t keys[] = {KA, KA, KB, KA, KB, KC};
    for (int i = 0; i < 6; i++)
        fk_pub(&f, 0, keys[i], 0);
    fk_pub(&f, 1, KA, 0); /* after growth a key can live in two partitions */
    fk_pub(&f, 1, KC, 0);
    struct qgroup *g = qgroup_new(true, 0);
    struct got r;
    assert_int_equal(rcv_at(g, &f, 0, 1, LEASE, 0, 0, &r), 1);
    /* round robin: 0:1 A, 1:0 A blocked; 0:2 B; 1:1 C; 0:3 A blocked; 0:4 B;
     * 0:5 C follows 1:1 in scan order: the same caller gets both */
    assert_int_equal(rcv(g, &f, 0, 10, &r), 4);
    uint32_t want_p[] = {0, 1, 0, 0};
    uint64_t want_o[] = {2, 1, 4, 5};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r.it[i].partition, want_p[i]);
        assert_int_equal(r.it[i].offset, want_o[i]);
    }
    assert_int_equal(r.block, 3);
    /* B and C are free again once acked; A still waits for 0:0 */
    ack1(g, 0, 2);
    ack1(g, 0, 4);
    assert_int_equal(rcv(g, &f, 0, 10, &r), 0);
    ack1(g, 0, 0);
    assert_int_equal(rcv(g, &f, 0, 10, &r), 3);
    assert_int_equal(r.it[0].offset, 1);
    assert_int_equal(r.it[1].partition, 1);
    assert_int_equal(r.it[1].offset, 0);
    assert_int_equal(r.it[2].offset, 3);
    qgroup_free(g);
    fk_free(&f);
}

/*
 * The FIFO memory bound (qgroup.c invariant 8): while key A's head is leased,
 * at most `window` of A's later messages are BLOCKED and the scan of the
 * partition pauses there (B, behind 100 A's, is not reached yet); once the
 * head is acked the key's run is delivered and the scan reaches B.
 */
static void test_fifo_window(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    for (int i = 0; i < 100; i++)
        fk_pub(&f, 0, KA, 0);
    fk_pub(&f, 0, KB, 0);
    struct qgroup *g = qgroup_new(true, 8);
    struct got r;
    assert_int_equal(rcv(g, &f, 0, 1, &r), 1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(rcv(g, &f, 0, 10, &r), 0);
    assert_true(qgroup_touched(g) <= 1 + 8); /* the leased head + 8 blocked */
    ack1(g, 0, 0);
    assert_int_equal(rcv(g, &f, 0, 100, &r), 100); /* A's run (99), then B */
    for (uint32_t i = 0; i < 100; i++)
        assert_int_equal(r.it[i].offset, 1 + i);
    for (uint64_t o = 1; o <= 100; o++)
        ack1(g, 0, o);
    assert_int_equal(rcv(g, &f, 0, 100, &r), 0);
    assert_int_equal(qgroup_touched(g), 0);
    qgroup_free(g);
    fk_free(&f);
}

/*
 * Messages in flight do not count toward the window: with a window of 8,
 * 40 distinct keys can all be leased at once, by several receives, and a
 * key's blocked messages still stop at 8.
 */
static void test_fifo_window_counts_only_blocked(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    for (uint32_t k = 1; k <= 40; k++)
        fk_pub(&f, 0, k, 0);
    for (int i = 0; i < 20; i++)
        fk_pub(&f, 0, 1, 0); /* key 1 again: blocked behind its leased head */
    fk_pub(&f, 0, 41, 0);
    struct qgroup *g = qgroup_new(true, 8);
    struct got r;
    uint32_t total = 0;
    for (int i = 0; i < 4; i++)
        total += rcv(g, &f, 0, 10, &r);
    assert_int_equal(total, 40); /* every key once, far more than 8 in flight */
    /* key 1's later messages: 8 blocked, then the scan pauses before key 41 */
    assert_int_equal(rcv(g, &f, 0, 10, &r), 0);
    assert_true(qgroup_touched(g) <= 40 + 8);
    ack1(g, 0, 0); /* key 1's head: its run goes to the next caller */
    assert_int_equal(rcv(g, &f, 0, 30, &r), 21); /* 20 of key 1, then key 41 */
    assert_int_equal(r.it[20].offset, 60);
    qgroup_free(g);
    fk_free(&f);
}

static void test_fifo_many_keys_one_plan(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    for (uint32_t i = 0; i < 600; i++)
        fk_pub(&f, 0, 1 + i % 300, 0);
    struct qgroup *g = qgroup_new(true, 0);
    struct got r;
    assert_int_equal(rcv(g, &f, 0, 200, &r), 200); /* keys 1..200, one each */
    /* keys 201..300 twice each (a run to one caller); 1..200 blocked */
    assert_int_equal(rcv(g, &f, 0, 250, &r), 200);
    assert_int_equal(r.block, 200);
    for (uint32_t i = 0; i < 300; i++)
        ack1(g, 0, i);
    struct qgroup_env env = fk_env(&f);
    assert_int_equal(qgroup_available(g, &env, 0, -1, 1000), 200);
    assert_int_equal(rcv(g, &f, 0, 250, &r), 200);
    for (uint32_t i = 0; i < 200; i++)
        assert_int_equal(r.it[i].offset, 300 + i);
    qgroup_free(g);
    fk_free(&f);
}

/* API.md §8: a delayed message of a key is delivered in offset order too. It
 * takes its place in its key's queue when the scan meets it and holds the key
 * while it waits (also within the plan that met it); the key's later messages
 * wait behind it, other keys and keyless messages flow. */
static void test_fifo_delayed_holds_key(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    fk_pub(&f, 0, KA, 5000); /* 0 */
    fk_pub(&f, 0, KA, 0);    /* 1 */
    fk_pub(&f, 0, KB, 0);    /* 2 */
    fk_pub(&f, 0, 0, 5000);  /* 3: keyless, delayed */
    fk_pub(&f, 0, KA, 0);    /* 4 */
    fk_pub(&f, 0, 0, 0);     /* 5: keyless */
    struct qgroup *g = qgroup_new(true, 0);
    struct qgroup_env env = fk_env(&f);
    assert_int_equal(qgroup_available(g, &env, 100, -1, 100), 2);
    struct got r;
    assert_int_equal(rcv(g, &f, 100, 10, &r), 2);
    assert_int_equal(r.it[0].offset, 2);
    assert_int_equal(r.it[1].offset, 5);
    assert_int_equal(r.wait, 2);
    assert_int_equal(r.block, 2); /* 1 and 4, behind 0 */
    struct qgroup_stats st = stats(g, &f, 100);
    assert_int_equal(st.delayed, 2);
    assert_int_equal(st.floor[0], 0);
    assert_int_equal(qgroup_next_wakeup(g, 100), 5000); /* the delayed head's time */
    assert_int_equal(qgroup_available(g, &env, 100, -1, 100), 0);
    assert_int_equal(qgroup_available(g, &env, 4999, -1, 100), 0);
    assert_int_equal(qgroup_available(g, &env, 5000, -1, 100), 4);
    /* A's later messages stay blocked, also once B is acked */
    ack1(g, 0, 2);
    ack1(g, 0, 1); /* never delivered: ignored */
    assert_int_equal(rcv(g, &f, 4999, 10, &r), 0);
    /* at its time the delayed one comes first, then the rest of A in order */
    assert_int_equal(rcv(g, &f, 5000, 10, &r), 4);
    uint64_t want[] = {0, 1, 4, 3};
    for (uint32_t i = 0; i < 4; i++) {
        assert_int_equal(r.it[i].offset, want[i]);
        assert_int_equal(r.it[i].attempt, 1);
    }
    assert_int_equal(stats(g, &f, 5000).delayed, 0);
    for (uint64_t o = 0; o < 6; o++)
        ack1(g, 0, o);
    st = stats(g, &f, 5000);
    assert_int_equal(st.lag, 0);
    assert_int_equal(st.floor[0], 6);
    assert_int_equal(qgroup_touched(g), 0);
    qgroup_free(g);
    fk_free(&f);
}

/* A delayed message behind a held key keeps its place: it comes after the
 * key's earlier messages and before its later ones, whether its time comes
 * before or after the key is free again. */
static void test_fifo_delayed_behind_held_key(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 2);
    uint32_t keys[] = {KA, KA, KA, KB, KB, KB, KC, KC, KC};
    uint64_t at[] = {0, 200, 0, 0, 300, 0, 0, 400, 0};
    for (int i = 0; i < 9; i++)
        fk_pub(&f, 0, keys[i], at[i]);
    fk_pub(&f, 1, KA, 0); /* 1:0: A in a second partition (a grown topic) */
    struct qgroup *g = qgroup_new(true, 0);
    struct got r;
    /* caller X takes the heads of A, B, C */
    assert_int_equal(rcv_at(g, &f, 0, 10, LEASE, 0, 0, &r), 3);
    assert_int_equal(r.it[0].offset, 0);
    assert_int_equal(r.it[1].offset, 3);
    assert_int_equal(r.it[2].offset, 6);
    assert_int_equal(r.wait, 3);
    assert_int_equal(r.block, 3);
    assert_int_equal(rcv(g, &f, 0, 10, &r), 0);
    assert_int_equal(r.block, 1); /* 1:0 */
    assert_int_equal(stats(g, &f, 0).delayed, 3);
    /* A: the head is acked before the delay ends: the delayed one waits as
     * the head, then comes first */
    ack1(g, 0, 0);
    assert_int_equal(rcv(g, &f, 100, 10, &r), 0);
    assert_int_equal(qgroup_next_wakeup(g, 100), 200);
    assert_int_equal(rcv(g, &f, 200, 10, &r), 3);
    assert_int_equal(r.it[0].offset, 1);
    assert_int_equal(r.it[1].partition, 0); /* the order the scan met them */
    assert_int_equal(r.it[1].offset, 2);
    assert_int_equal(r.it[2].partition, 1);
    assert_int_equal(r.it[2].offset, 0);
    /* B: its time comes while the head is leased: it waits behind it */
    assert_int_equal(rcv(g, &f, 300, 10, &r), 0);
    assert_int_equal(r.block, 1);
    struct qgroup_env env = fk_env(&f);
    assert_int_equal(qgroup_available(g, &env, 300, -1, 100), 0);
    ack1(g, 0, 3);
    assert_int_equal(qgroup_available(g, &env, 300, -1, 100), 2);
    assert_int_equal(rcv(g, &f, 300, 10, &r), 2);
    assert_int_equal(r.it[0].offset, 4);
    assert_int_equal(r.it[0].attempt, 1);
    assert_int_equal(r.it[1].offset, 5);
    /* C: its time passes with no receive; the head is acked after it */
    ack1(g, 0, 6);
    assert_int_equal(rcv(g, &f, 500, 10, &r), 2);
    assert_int_equal(r.it[0].offset, 7);
    assert_int_equal(r.it[1].offset, 8);
    assert_int_equal(stats(g, &f, 500).delayed, 0);
    qgroup_free(g);
    fk_free(&f);
}

/* A delayed head, once delivered, is an ordinary head: a nack or an expiry
 * releases the key's later messages of its receive, and the key restarts in
 * order with it. */
static void test_fifo_delayed_head_nack_and_expiry(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    fk_pub(&f, 0, KA, 1000);
    fk_pub(&f, 0, KA, 0);
    fk_pub(&f, 0, KA, 0);
    struct qgroup *g = qgroup_new(true, 0);
    configure(g, 1, (uint64_t[]){100}, false, 0);
    struct got r;
    assert_int_equal(rcv(g, &f, 0, 10, &r), 0);
    assert_int_equal(rcv(g, &f, 1000, 10, &r), 3);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(r.it[i].offset, i);
    assert_int_equal(nack1(g, 0, 0, 1000, false, 0, NULL), QPLAN_WAIT);
    struct qgroup_id one = {0, 1};
    uint32_t bad;
    const char *why;
    assert_int_equal(qgroup_check_extend(g, &one, 1, 1000, &bad, &why), CY_EINVAL);
    assert_string_equal(why, "message has no active lease");
    assert_int_equal(rcv(g, &f, 1050, 10, &r), 0); /* the retry holds the key */
    assert_int_equal(qgroup_next_wakeup(g, 1050), 1100);
    assert_int_equal(rcv(g, &f, 1100, 10, &r), 3);
    uint32_t want[] = {2, 1, 1};
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(r.it[i].offset, i);
        assert_int_equal(r.it[i].attempt, want[i]);
    }
    /* the whole run expires: it restarts in order, the head counted */
    assert_int_equal(rcv(g, &f, 1100 + LEASE, 10, &r), 3);
    uint32_t want2[] = {3, 1, 1};
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(r.it[i].offset, i);
        assert_int_equal(r.it[i].attempt, want2[i]);
    }
    qgroup_free(g);
    fk_free(&f);
}

/* Dead-lettering a delayed head (max_deliveries on expiry, or a nack with no
 * retry left) unblocks its key, with or without a dlq_topic. */
static void test_fifo_delayed_head_dead_letter(void **state)
{
    (void)state;
    for (int dlq = 0; dlq < 2; dlq++) {
        struct fake f;
        fk_init(&f, 1);
        fk_pub(&f, 0, KA, 1000);
        fk_pub(&f, 0, KA, 0);
        fk_pub(&f, 0, KB, 1000);
        fk_pub(&f, 0, KB, 0);
        struct qgroup *g = qgroup_new(true, 0);
        configure(g, 0, NULL, dlq, 1);
        struct got r;
        assert_int_equal(rcv(g, &f, 0, 10, &r), 0);
        assert_int_equal(r.wait, 2);
        assert_int_equal(r.block, 2);
        assert_int_equal(rcv(g, &f, 1000, 1, &r), 1); /* A's head alone */
        assert_int_equal(r.it[0].offset, 0);
        assert_int_equal(rcv(g, &f, 1000, 1, &r), 1); /* B's head alone */
        assert_int_equal(r.it[0].offset, 2);
        assert_int_equal(rcv(g, &f, 1000, 10, &r), 0);
        /* B: a nack with no retry left dead-letters it; B's next one flows */
        assert_int_equal(nack1(g, 0, 2, 1000, false, 0, NULL), QPLAN_DEAD);
        assert_int_equal(rcv(g, &f, 1000, 10, &r), 1);
        assert_int_equal(r.it[0].offset, 3);
        ack1(g, 0, 3);
        /* A: the expiry reaches max_deliveries: dead, and A's next one flows */
        assert_int_equal(rcv(g, &f, 1000 + LEASE, 10, &r), 1);
        assert_int_equal(r.dead, 1);
        assert_int_equal(r.it[0].offset, 1);
        assert_int_equal(r.it[0].attempt, 1);
        struct qgroup_stats st = stats(g, &f, 1000 + LEASE);
        assert_int_equal(st.dead, 2); /* with or without a dlq_topic copy */
        ack1(g, 0, 1);
        st = stats(g, &f, 1000 + LEASE);
        assert_int_equal(st.lag, 0);
        assert_int_equal(st.floor[0], 4);
        /* redrive: both come back, each key in order */
        uint32_t n;
        assert_int_equal(qgroup_apply_redrive(g, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(rcv(g, &f, 1000 + LEASE, 10, &r), 2);
        assert_int_equal(r.it[0].offset, 0);
        assert_int_equal(r.it[1].offset, 2);
        qgroup_free(g);
        fk_free(&f);
    }
}

/* The checkpoint keeps a delayed head's hold. A version 1 checkpoint (taken
 * before delayed messages held their key) loads with its old meaning: the
 * delayed one joins its key's queue behind the others. */
static void test_fifo_delayed_checkpoint(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    fk_pub(&f, 0, KA, 1000);
    fk_pub(&f, 0, KA, 0);
    fk_pub(&f, 0, KA, 500);
    struct qgroup *g = qgroup_new(true, 0);
    struct got r;
    assert_int_equal(rcv(g, &f, 0, 10, &r), 0);
    struct buf a = BUF_INIT, b = BUF_INIT;
    save(g, &a);
    assert_int_equal(a.data[4] | a.data[5] << 8, 2); /* the version */
    struct reader rd;
    reader_init(&rd, a.data, a.len);
    struct qgroup *copy = NULL;
    assert_int_equal(qgroup_load(&rd, &copy), 0);
    save(copy, &b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    assert_int_equal(qgroup_next_wakeup(copy, 0), 500);
    assert_int_equal(rcv(copy, &f, 999, 10, &r), 0);
    assert_int_equal(r.block, 1); /* 2 is due, behind 0 */
    assert_int_equal(rcv(copy, &f, 1000, 10, &r), 3);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(r.it[i].offset, i);
    qgroup_free(copy);
    /* version 1: 1 is the key's head at once; 2 then 0 join when due */
    a.data[4] = 1;
    reader_init(&rd, a.data, a.len);
    assert_int_equal(qgroup_load(&rd, &copy), 0);
    assert_int_equal(rcv(copy, &f, 0, 10, &r), 1);
    assert_int_equal(r.it[0].offset, 1);
    ack1(copy, 0, 1);
    assert_int_equal(rcv(copy, &f, 1000, 10, &r), 2);
    assert_int_equal(r.it[0].offset, 2);
    assert_int_equal(r.it[1].offset, 0);
    save(copy, &b);
    assert_int_equal(b.data[4], 2); /* written as the newest version */
    qgroup_free(copy);
    a.data[4] = 3; /* an unknown version */
    reader_init(&rd, a.data, a.len);
    assert_int_equal(qgroup_load(&rd, &copy), CY_ECORRUPT);
    buf_free(&a);
    buf_free(&b);
    qgroup_free(g);
    fk_free(&f);
}

/* ---- memory --------------------------------------------------------------- */

static void test_next_wakeup_many_due(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    f.synthetic = true;
    f.next[0] = 6001;
    struct qgroup *g = qgroup_new(false, 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(rcv_at(g, &f, 0, 1000, 100, -1, 0, NULL), 1000);
    assert_int_equal(rcv_at(g, &f, 0, 10, 1000, -1, 0, NULL), 1);
    assert_int_equal(qgroup_next_wakeup(g, 0), 100);
    /* 6000 expired leases nobody took yet: the answer may come early, never late */
    uint64_t w = qgroup_next_wakeup(g, 500);
    assert_true(w > 500 && w <= 1000);
    struct qgroup_env env = fk_env(&f);
    assert_int_equal(qgroup_available(g, &env, 500, -1, 100000), 6000);
    qgroup_free(g);
    fk_free(&f);
}

#ifndef UNDER_ASAN
/* In a child limited in address space: receive until memory runs out. A
 * failed plan or apply changes nothing, and once memory is back the group
 * works on, every lease still on its timer. */
static int enomem_child(uint32_t headroom_kb)
{
    struct fake f;
    fk_init(&f, 2);
    f.synthetic = true;
    f.next[0] = f.next[1] = 1ull << 40;
    struct qgroup *g = qgroup_new(false, 0);
    struct qgroup_env env = fk_env(&f);
    if (!g)
        return 2;
    struct rlimit old_lim, lim;
    long pages = 0;
    FILE *fp = fopen("/proc/self/statm", "r");
    if (getrlimit(RLIMIT_AS, &old_lim) || !fp || fscanf(fp, "%ld", &pages) != 1)
        return 3;
    fclose(fp);
    lim = old_lim;
    lim.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) +
                   (rlim_t)headroom_kb * 1024;
    if (setrlimit(RLIMIT_AS, &lim))
        return 4;
    struct qplan plan = {0};
    int rc = 0;
    bool apply_failed = false;
    for (int round = 0; round < 100000 && !rc; round++) {
        size_t before = qgroup_touched(g);
        rc = qgroup_plan_receive(g, &env, 0, 1000, -1, (uint32_t)round, &plan);
        if (rc) {
            if (rc != CY_ENOMEM || plan.n || qgroup_touched(g) != before)
                return 5;
            break;
        }
        rc = qgroup_apply_receive(g, 0, 1000, &plan);
        if (rc) {
            if (rc != CY_ENOMEM || qgroup_touched(g) != before)
                return 6;
            apply_failed = true;
            break;
        }
    }
    if (!rc)
        return 7;
    if (setrlimit(RLIMIT_AS, &old_lim))
        return 8;
    if (apply_failed && qgroup_apply_receive(g, 0, 1000, &plan))
        return 9;
    qplan_free(&plan);
    size_t leased = qgroup_touched(g);
    struct qgroup_stats st;
    qgroup_get_stats(g, &env, 0, &st);
    if (st.in_flight != leased || qgroup_next_wakeup(g, 0) != 1000)
        return 10;
    /* lease churn with memory short: a timer heap that cannot grow is marked
     * lost and rebuilt from the entries later */
    if (getrlimit(RLIMIT_AS, &lim))
        return 15;
    fp = fopen("/proc/self/statm", "r");
    if (!fp || fscanf(fp, "%ld", &pages) != 1)
        return 16;
    fclose(fp);
    lim.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (64u << 10);
    if (setrlimit(RLIMIT_AS, &lim))
        return 17;
    struct qgroup_id first = {0, 0};
    for (uint64_t i = 0; i < 2 * leased + 200; i++)
        if (qgroup_apply_extend(g, &first, 1, 500 + i % 400))
            return 18;
    if (setrlimit(RLIMIT_AS, &old_lim))
        return 19;
    uint64_t w = qgroup_next_wakeup(g, 0);
    if (w == 0 || w > 1000)
        return 20;
    /* every lease expires and comes back exactly once */
    size_t again = 0;
    for (;;) {
        if (qgroup_plan_receive(g, &env, 1000, 1000, -1, 0, &plan))
            return 11;
        for (uint32_t i = 0; i < plan.n; i++)
            if (plan.items[i].kind == QPLAN_DELIVER && plan.items[i].attempt == 2)
                again++;
        if (qgroup_apply_receive(g, 1000, 5000, &plan))
            return 12;
        if (!plan.delivered || again >= leased)
            break;
    }
    qplan_free(&plan);
    if (again != leased)
        return 13;
    struct buf b = BUF_INIT;
    if (qgroup_save(g, &b))
        return 14;
    buf_free(&b);
    qgroup_free(g);
    return 0;
}
#endif

static void test_enomem_changes_nothing(void **state)
{
    (void)state;
#ifdef UNDER_ASAN
    skip(); /* ASan reserves terabytes of shadow memory: RLIMIT_AS is unusable */
#else
    /* different headroom: memory runs out in different places (entry pool,
     * table, timer heaps, plan) */
    for (uint32_t kb = 4096; kb <= 40960; kb += 1536) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            _exit(enomem_child(kb));
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
#endif
}

static void test_floor_advances_memory_bounded(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 1);
    f.synthetic = true;
    f.next[0] = 1000000;
    struct qgroup *g = qgroup_new(false, 0);
    struct got r;
    /* one message stays leased for the whole run (extended): acked messages
     * above the floor still cost nothing */
    assert_int_equal(rcv(g, &f, 0, 1, &r), 1);
    struct qgroup_id stuck = {0, 0};
    uint64_t total = 1;
    struct qgroup_id ids[100];
    while (rcv(g, &f, 0, 100, &r)) {
        for (uint32_t i = 0; i < r.n; i++) /* acked in reverse order */
            ids[i] = (struct qgroup_id){0, r.it[r.n - 1 - i].offset};
        assert_int_equal(qgroup_apply_ack(g, ids, r.n), 0);
        total += r.n;
        assert_true(qgroup_touched(g) <= 101);
    }
    assert_int_equal(total, 1000000);
    assert_int_equal(qgroup_touched(g), 1);
    assert_int_equal(stats(g, &f, 0).floor[0], 0);
    assert_int_equal(stats(g, &f, 0).lag, 1);
    assert_int_equal(qgroup_apply_extend(g, &stuck, 1, LEASE * 2), 0);
    assert_int_equal(qgroup_apply_ack(g, &stuck, 1), 0);
    assert_int_equal(stats(g, &f, 0).floor[0], 1000000);
    assert_int_equal(qgroup_touched(g), 0);
    struct buf b = BUF_INIT;
    save(g, &b);
    assert_true(b.len < 200);
    buf_free(&b);
    qgroup_free(g);
    fk_free(&f);
}

/* ---- FIFO property test --------------------------------------------------- */

#define PK 9 /* keys 1..8, 0 = keyless */
#define PMAX 4096

struct hold {
    uint64_t recv, until;
    uint32_t p;
    uint64_t off;
    uint32_t key;
    bool live;
};

struct pmodel {
    struct fake f;
    struct qgroup *g;
    uint64_t now, recv_id;
    /* per key: its offsets (one partition per key), and their status */
    uint64_t koff[PK][PMAX];
    uint8_t kst[PK][PMAX]; /* 0 pending, 1 acked, 2 dead */
    uint32_t kn[PK];
    uint64_t last_acked[PK];
    bool any_acked[PK];
    struct hold h[PMAX];
    uint32_t nh;
    uint64_t acked, dead, published;
};

static uint32_t key_part(uint32_t key, uint32_t np) { return key % np; }

static int key_index(struct pmodel *m, uint32_t key, uint64_t off)
{
    for (uint32_t i = 0; i < m->kn[key]; i++)
        if (m->koff[key][i] == off)
            return (int)i;
    return -1;
}

/* st: 1 acked, 2 dead. in_order: the consumer acked the first message of the
 * key it held (a FIFO consumer); only those acks must come in offset order. */
static void pm_mark(struct pmodel *m, uint32_t p, uint64_t off, uint8_t st, bool in_order)
{
    uint32_t key = m->f.key[p][off];
    if (!key) {
        if (st == 1)
            m->acked++;
        else
            m->dead++;
        return;
    }
    int i = key_index(m, key, off);
    assert_true(i >= 0);
    assert_int_equal(m->kst[key][i], 0);
    m->kst[key][i] = st;
    if (st == 1) {
        /* each key's acks come in offset order */
        if (in_order) {
            if (m->any_acked[key])
                assert_true(off > m->last_acked[key]);
            m->any_acked[key] = true;
            m->last_acked[key] = off;
        }
        m->acked++;
    } else {
        m->dead++;
    }
}

/* The caller drops, with h, its later messages of h's key from h's receive.
 * After a nack (`check`) the group has released them at once: no lease. */
static void pm_release(struct pmodel *m, uint32_t hi, bool check)
{
    struct hold *h = &m->h[hi];
    h->live = false;
    if (!h->key)
        return;
    for (uint32_t j = 0; j < m->nh; j++)
        if (m->h[j].live && m->h[j].recv == h->recv && m->h[j].key == h->key &&
            m->h[j].off > h->off) {
            m->h[j].live = false;
            struct qgroup_id id = {m->h[j].p, m->h[j].off};
            uint32_t bad;
            const char *why = NULL;
            if (check) {
                assert_int_equal(qgroup_check_extend(m->g, &id, 1, m->now, &bad, &why),
                                 CY_EINVAL);
                assert_string_equal(why, "message has no active lease");
            }
        }
}

/* A random live holding, moved to the first held message of its key in its
 * receive (a FIFO consumer works through a key in order) unless `sloppy`.
 * -1 when none. */
static int pm_pick(struct pmodel *m, uint64_t *rnd, bool sloppy)
{
    uint32_t live = 0;
    for (uint32_t i = 0; i < m->nh; i++)
        live += m->h[i].live;
    if (!live)
        return -1;
    uint32_t k = (uint32_t)(tu_rand(rnd) % live), hi = 0;
    for (uint32_t i = 0; i < m->nh; i++)
        if (m->h[i].live && k-- == 0) {
            hi = i;
            break;
        }
    for (uint32_t j = 0; j < m->nh && !sloppy; j++)
        if (m->h[j].live && m->h[hi].key && m->h[j].recv == m->h[hi].recv &&
            m->h[j].key == m->h[hi].key && m->h[j].off < m->h[hi].off)
            hi = j;
    return (int)hi;
}

static void pm_compact(struct pmodel *m)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->nh; i++)
        if (m->h[i].live)
            m->h[n++] = m->h[i];
    m->nh = n;
}

static void pm_receive(struct pmodel *m, uint32_t batch, uint64_t lease, int32_t only)
{
    struct qgroup_env env = fk_env(&m->f);
    struct qplan plan = {0};
    assert_int_equal(qgroup_plan_receive(m->g, &env, m->now, batch, only,
                                         (uint32_t)m->recv_id, &plan), 0);
    uint64_t rid = ++m->recv_id;
    uint32_t run_key = 0, run_next[PK];
    bool seen[PK] = {false};
    memset(run_next, 0, sizeof run_next);
    for (uint32_t i = 0; i < plan.n; i++) {
        const struct qplan_item *it = &plan.items[i];
        uint32_t key = m->f.key[it->partition][it->offset];
        if (it->kind == QPLAN_DEAD)
            pm_mark(m, it->partition, it->offset, 2, false);
        if (it->kind != QPLAN_DELIVER)
            continue;
        if (key) {
            /* nobody else holds the key */
            for (uint32_t j = 0; j < m->nh; j++)
                if (m->h[j].live && m->h[j].key == key && m->h[j].until > m->now &&
                    m->h[j].recv != rid)
                    fail_msg("key %u held by receive %llu and %llu", key,
                             (unsigned long long)m->h[j].recv, (unsigned long long)rid);
            /* the receive's messages of a key are its first pending ones */
            int ki = key_index(m, key, it->offset);
            assert_true(ki >= 0);
            uint32_t from = seen[key] ? run_next[key] : 0;
            uint32_t want = from;
            while (want < m->kn[key] && m->kst[key][want] != 0)
                want++;
            assert_int_equal((uint32_t)ki, want);
            seen[key] = true;
            run_next[key] = want + 1;
            run_key = key;
        }
        assert_true(m->nh < PMAX);
        m->h[m->nh++] = (struct hold){rid, m->now + lease, it->partition, it->offset, key, true};
    }
    (void)run_key;
    assert_int_equal(qgroup_apply_receive(m->g, m->now, m->now + lease, &plan), 0);
    qplan_free(&plan);
}

/* A dry run at `now` (as the broker's long polling does it): how many a
 * receive would get, and when something becomes available by itself at the
 * latest: qgroup_next_wakeup, or a delayed message the plan met. */
static uint32_t pm_dry_run(struct pmodel *m, uint64_t now, uint64_t *wakeup)
{
    struct qgroup_env env = fk_env(&m->f);
    struct qplan plan = {0};
    assert_int_equal(qgroup_plan_receive(m->g, &env, now, 1000, -1, 0, &plan), 0);
    *wakeup = qgroup_next_wakeup(m->g, now);
    for (uint32_t i = 0; i < plan.n; i++)
        if (plan.items[i].kind == QPLAN_WAIT && plan.items[i].at < *wakeup)
            *wakeup = plan.items[i].at;
    uint32_t n = plan.delivered;
    assert_int_equal(qgroup_available(m->g, &env, now, -1, 1000), n);
    qplan_free(&plan);
    return n;
}

static void pm_check_roundtrip(struct pmodel *m)
{
    struct buf a = BUF_INIT, b = BUF_INIT;
    save(m->g, &a);
    struct reader r;
    reader_init(&r, a.data, a.len);
    struct qgroup *copy = NULL;
    assert_int_equal(qgroup_load(&r, &copy), 0);
    assert_int_equal(r.pos, a.len);
    save(copy, &b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    qgroup_free(m->g); /* continue with the loaded copy */
    m->g = copy;
    buf_free(&a);
    buf_free(&b);
}

static void run_fifo_property(uint64_t seed, uint32_t steps, uint32_t np, uint32_t window)
{
    struct pmodel *m = calloc(1, sizeof *m);
    assert_non_null(m);
    fk_init(&m->f, np);
    m->g = qgroup_new(true, window);
    uint64_t rnd = seed;
    uint64_t sched[2] = {tu_rand(&rnd) % 300, tu_rand(&rnd) % 300};
    configure(m->g, (uint32_t)(tu_rand(&rnd) % 3), sched, tu_rand(&rnd) % 2,
              (uint32_t)(tu_rand(&rnd) % 4));
    for (uint32_t step = 0; step < steps; step++) {
        uint32_t op = (uint32_t)(tu_rand(&rnd) % 100);
        if (op < 20 && m->published < PMAX - 16) {
            uint32_t n = 1 + (uint32_t)(tu_rand(&rnd) % 6);
            for (uint32_t i = 0; i < n; i++) {
                uint32_t key = (uint32_t)(tu_rand(&rnd) % PK);
                uint32_t p = key ? key_part(key, np) : (uint32_t)(tu_rand(&rnd) % np);
                /* some are delayed: they hold their key in offset order too */
                uint64_t at = tu_rand(&rnd) % 5 == 0 ? m->now + tu_rand(&rnd) % 600 : 0;
                uint64_t off = fk_pub(&m->f, p, key, at);
                if (key) {
                    m->koff[key][m->kn[key]++] = off;
                }
                m->published++;
            }
        } else if (op < 45) {
            int32_t only = tu_rand(&rnd) % 4 ? -1 : (int32_t)(tu_rand(&rnd) % np);
            pm_receive(m, 1 + (uint32_t)(tu_rand(&rnd) % 5), 50 + tu_rand(&rnd) % 400, only);
        } else if (op < 65) {
            bool sloppy = tu_rand(&rnd) % 5 == 0;
            int hi = pm_pick(m, &rnd, sloppy);
            if (hi >= 0) {
                pm_mark(m, m->h[hi].p, m->h[hi].off, 1, !sloppy);
                ack1(m->g, m->h[hi].p, m->h[hi].off);
                m->h[hi].live = false;
            }
        } else if (op < 75) {
            int hi = pm_pick(m, &rnd, tu_rand(&rnd) % 5 == 0);
            if (hi >= 0) {
                bool has_delay = tu_rand(&rnd) % 4 == 0;
                int kind = nack1(m->g, m->h[hi].p, m->h[hi].off, m->now, has_delay,
                                 tu_rand(&rnd) % 200, NULL);
                assert_true(kind == QPLAN_WAIT || kind == QPLAN_DEAD);
                if (kind == QPLAN_DEAD)
                    pm_mark(m, m->h[hi].p, m->h[hi].off, 2, false);
                pm_release(m, (uint32_t)hi, true);
            }
        } else if (op < 80) {
            /* extend one held message, or its whole receive: every message
             * the consumer believes it holds has an active lease */
            int hi = pm_pick(m, &rnd, true);
            if (hi >= 0) {
                bool whole = tu_rand(&rnd) % 2;
                uint64_t until = m->now + 1 + tu_rand(&rnd) % 500;
                for (uint32_t j = 0; j < m->nh; j++) {
                    struct hold *h = &m->h[j];
                    if (!h->live || (j != (uint32_t)hi && (!whole || h->recv != m->h[hi].recv)))
                        continue;
                    struct qgroup_id id = {h->p, h->off};
                    uint32_t bad;
                    const char *why = NULL;
                    int rc = qgroup_check_extend(m->g, &id, 1, m->now, &bad, &why);
                    if (rc)
                        fail_msg("extend %u:%llu: %s", h->p, (unsigned long long)h->off, why);
                    assert_int_equal(qgroup_apply_extend(m->g, &id, 1, until), 0);
                    h->until = until;
                }
            }
        } else if (op < 97) {
            uint64_t w, w2;
            uint32_t avail = pm_dry_run(m, m->now, &w);
            m->now += tu_rand(&rnd) % 300;
            /* the wake-up time is never late: nothing became available
             * before it by itself */
            if (!avail && m->now < w)
                assert_int_equal(pm_dry_run(m, m->now, &w2), 0);
            /* an expiry releases the caller's later messages of the key too */
            for (uint32_t i = 0; i < m->nh; i++)
                if (m->h[i].live && m->h[i].until <= m->now)
                    pm_release(m, i, false);
        } else {
            pm_check_roundtrip(m);
        }
        pm_compact(m);
    }
    /* drain: everything is eventually acked or dead */
    for (int round = 0; round < 100000; round++) {
        m->now += 1000;
        for (uint32_t i = 0; i < m->nh; i++)
            m->h[i].live = false;
        pm_compact(m);
        pm_receive(m, 50, 500, -1);
        if (!m->nh && stats(m->g, &m->f, m->now).lag == 0)
            break;
        for (uint32_t i = 0; i < m->nh; i++) {
            int hi = pm_pick(m, &rnd, false);
            if (hi < 0)
                break;
            pm_mark(m, m->h[hi].p, m->h[hi].off, 1, true);
            ack1(m->g, m->h[hi].p, m->h[hi].off);
            m->h[hi].live = false;
        }
        pm_compact(m);
    }
    assert_int_equal(m->acked + m->dead, m->published);
    struct qgroup_stats st = stats(m->g, &m->f, m->now);
    assert_int_equal(st.lag, 0);
    assert_int_equal(qgroup_touched(m->g), st.dead); /* dead ones stay (no dlq_topic) */
    qgroup_free(m->g);
    fk_free(&m->f);
    free(m);
}

static void test_fifo_property(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 40; seed++)
        run_fifo_property(seed * 0x9E3779B97F4A7C15ull, 3000, 1 + (uint32_t)(seed % 3),
                          seed % 4 == 0 ? 16 : 0);
}

/* ---- determinism: replaying the apply calls gives the same bytes ---------- */

enum { J_RECEIVE, J_ACK, J_NACK, J_EXTEND, J_CONFIG, J_REDRIVE, J_FORGET };

struct jrec {
    int type;
    uint64_t now, until;
    struct qplan plan;
    struct qgroup_id ids[8];
    uint32_t n;
    struct qgroup_config cfg;
    uint32_t p;
    uint64_t first;
};

static void replay(struct qgroup *g, const struct jrec *j)
{
    uint32_t count;
    switch (j->type) {
    case J_RECEIVE:
        assert_int_equal(qgroup_apply_receive(g, j->now, j->until, &j->plan), 0);
        break;
    case J_ACK: assert_int_equal(qgroup_apply_ack(g, j->ids, j->n), 0); break;
    case J_NACK: assert_int_equal(qgroup_apply_nack(g, &j->plan), 0); break;
    case J_EXTEND: assert_int_equal(qgroup_apply_extend(g, j->ids, j->n, j->until), 0); break;
    case J_CONFIG: qgroup_configure(g, &j->cfg); break;
    case J_REDRIVE: assert_int_equal(qgroup_apply_redrive(g, &count), 0); break;
    default: qgroup_forget_before(g, j->p, j->first); break;
    }
}

static void run_determinism(uint64_t seed, bool fifo, uint32_t steps)
{
    uint64_t rnd = seed;
    struct fake f;
    fk_init(&f, 2);
    struct qgroup *live = qgroup_new(fifo, fifo ? 32 : 0);
    struct jrec *journal = calloc(steps, sizeof *journal);
    assert_non_null(journal);
    uint64_t now = 1000;
    for (uint32_t s = 0; s < steps; s++) {
        struct jrec *j = &journal[s];
        uint32_t op = (uint32_t)(tu_rand(&rnd) % 100);
        struct qgroup_env env = fk_env(&f);
        j->now = now;
        if (op < 15) { /* publish (not a group command) */
            uint32_t n = 1 + (uint32_t)(tu_rand(&rnd) % 5);
            for (uint32_t i = 0; i < n; i++) {
                uint32_t p = (uint32_t)(tu_rand(&rnd) % f.np);
                uint32_t key = (uint32_t)(tu_rand(&rnd) % 6);
                uint64_t sc = tu_rand(&rnd) % 5 == 0 ? now + tu_rand(&rnd) % 3000 : 0;
                fk_pub(&f, p, key, sc);
            }
            j->type = J_EXTEND; /* an empty extend keeps the journal dense */
            j->n = 0;
        } else if (op < 40) {
            j->type = J_RECEIVE;
            j->until = now + 100 + tu_rand(&rnd) % 1000;
            int32_t only = tu_rand(&rnd) % 4 == 0 ? (int32_t)(tu_rand(&rnd) % f.np) : -1;
            uint32_t batch = 1 + (uint32_t)(tu_rand(&rnd) % 8);
            uint32_t start = (uint32_t)tu_rand(&rnd);
            assert_int_equal(qgroup_plan_receive(live, &env, now, batch, only, start, &j->plan), 0);
            /* available() is a dry run of the same planner, starting at
             * partition 0. (FIFO: the scan order is a key's order across
             * partitions, so where a key spans partitions and one of its
             * messages is delayed, the start can change how many a plan
             * gets.) */
            uint32_t avail = qgroup_available(live, &env, now, only, 1000);
            if (!fifo || only >= 0 || start % f.np == 0)
                assert_true(avail >= j->plan.delivered);
        } else if (op < 80) {
            j->n = 1 + (uint32_t)(tu_rand(&rnd) % 8);
            for (uint32_t i = 0; i < j->n; i++) {
                uint32_t p = (uint32_t)(tu_rand(&rnd) % f.np);
                uint64_t hi = f.next[p] ? f.next[p] : 1;
                j->ids[i] = (struct qgroup_id){p, tu_rand(&rnd) % hi};
            }
            uint32_t k = (uint32_t)(tu_rand(&rnd) % 3);
            if (k == 0) {
                j->type = J_ACK;
            } else if (k == 1) {
                j->type = J_NACK;
                assert_int_equal(qgroup_plan_nack(live, j->ids, j->n, now,
                                                  tu_rand(&rnd) % 3 == 0, tu_rand(&rnd) % 500,
                                                  &j->plan), 0);
            } else {
                j->type = J_EXTEND;
                j->until = now + tu_rand(&rnd) % 2000;
            }
        } else if (op < 94) {
            j->type = J_EXTEND;
            j->n = 0;
            now += tu_rand(&rnd) % 700;
        } else if (op < 96) {
            j->type = J_CONFIG;
            j->cfg.retry_count = (uint32_t)(tu_rand(&rnd) % 4);
            for (uint32_t i = 0; i < j->cfg.retry_count; i++)
                j->cfg.retry_schedule[i] = tu_rand(&rnd) % 400;
            j->cfg.has_dlq_topic = tu_rand(&rnd) % 3 == 0;
            j->cfg.max_deliveries = (uint32_t)(tu_rand(&rnd) % 4);
        } else if (op < 98) {
            j->type = J_REDRIVE;
        } else if (op < 99) {
            j->type = J_FORGET;
            j->p = (uint32_t)(tu_rand(&rnd) % f.np);
            uint64_t span = f.next[j->p] - f.first[j->p];
            f.first[j->p] += span ? tu_rand(&rnd) % (span / 4 + 1) : 0;
            j->first = f.first[j->p];
        } else {
            j->type = J_EXTEND;
            j->n = 0;
            if (f.np < 4)
                f.np++; /* the topic grows */
        }
        replay(live, j);
    }
    struct qgroup *again = qgroup_new(fifo, fifo ? 32 : 0);
    for (uint32_t s = 0; s < steps; s++)
        replay(again, &journal[s]);
    struct buf a = BUF_INIT, b = BUF_INIT;
    save(live, &a);
    save(again, &b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    /* the loaded copy plans exactly like the original */
    struct reader r;
    reader_init(&r, a.data, a.len);
    struct qgroup *loaded = NULL;
    assert_int_equal(qgroup_load(&r, &loaded), 0);
    struct qgroup_env env = fk_env(&f);
    for (int k = 0; k < 3; k++) {
        struct qplan p1 = {0}, p2 = {0};
        uint64_t t = now + (uint64_t)k * 5000;
        assert_int_equal(qgroup_plan_receive(live, &env, t, 100, -1, 0, &p1), 0);
        assert_int_equal(qgroup_plan_receive(loaded, &env, t, 100, -1, 0, &p2), 0);
        assert_int_equal(p1.n, p2.n);
        for (uint32_t i = 0; i < p1.n; i++) { /* field by field: structs have padding */
            assert_int_equal(p1.items[i].partition, p2.items[i].partition);
            assert_int_equal(p1.items[i].offset, p2.items[i].offset);
            assert_int_equal(p1.items[i].kind, p2.items[i].kind);
            assert_int_equal(p1.items[i].attempt, p2.items[i].attempt);
            assert_int_equal(p1.items[i].key_hash, p2.items[i].key_hash);
            assert_int_equal(p1.items[i].at, p2.items[i].at);
        }
        assert_int_equal(qgroup_next_wakeup(live, t), qgroup_next_wakeup(loaded, t));
        assert_int_equal(qgroup_apply_receive(live, t, t + 100, &p1), 0);
        assert_int_equal(qgroup_apply_receive(loaded, t, t + 100, &p2), 0);
        qplan_free(&p1);
        qplan_free(&p2);
    }
    save(live, &a);
    save(loaded, &b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    assert_int_equal(f.bad_meta, 0);
    qgroup_free(loaded);
    buf_free(&a);
    buf_free(&b);
    for (uint32_t s = 0; s < steps; s++)
        qplan_free(&journal[s].plan);
    free(journal);
    qgroup_free(live);
    qgroup_free(again);
    fk_free(&f);
}

static void test_determinism_replay(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        run_determinism(seed * 7919, false, 3000);
        run_determinism(seed * 104729, true, 3000);
    }
}

/* ---- checkpoint ------------------------------------------------------------ */

static void test_save_load_roundtrip_and_corruption(void **state)
{
    (void)state;
    struct fake f;
    fk_init(&f, 3);
    uint64_t rnd = 42;
    for (int i = 0; i < 60; i++)
        fk_pub(&f, (uint32_t)(tu_rand(&rnd) % 3), (uint32_t)(tu_rand(&rnd) % 4),
               i % 7 == 0 ? 9000 : 0);
    struct qgroup *g = qgroup_new(true, 20);
    uint64_t sched[] = {100, 200, 300};
    configure(g, 3, sched, false, 2);
    struct got r;
    rcv(g, &f, 0, 5, &r);
    for (uint32_t i = 0; i < r.n; i += 2)
        nack1(g, r.it[i].partition, r.it[i].offset, 1, false, 0, NULL);
    rcv(g, &f, 1, 7, &r);
    if (r.n)
        ack1(g, r.it[0].partition, r.it[0].offset);
    rcv(g, &f, 2, 3, &r);
    if (r.n)
        nack1(g, r.it[0].partition, r.it[0].offset, 2, true, 0, NULL);
    rcv(g, &f, 3, 50, &r);
    struct buf a = BUF_INIT, b = BUF_INIT;
    save(g, &a);
    struct reader rd;
    reader_init(&rd, a.data, a.len);
    struct qgroup *copy = NULL;
    assert_int_equal(qgroup_load(&rd, &copy), 0);
    assert_true(qgroup_is_fifo(copy));
    assert_int_equal(qgroup_config(copy)->retry_count, 3);
    assert_int_equal(qgroup_config(copy)->retry_schedule[2], 300);
    assert_int_equal(qgroup_config(copy)->max_deliveries, 2);
    assert_int_equal(qgroup_touched(copy), qgroup_touched(g));
    save(copy, &b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    qgroup_free(copy);
    /* every truncation fails cleanly */
    for (size_t len = 0; len < a.len; len++) {
        reader_init(&rd, a.data, len);
        copy = (struct qgroup *)&rd; /* must stay untouched on failure */
        assert_int_equal(qgroup_load(&rd, &copy), CY_ECORRUPT);
        assert_ptr_equal(copy, (struct qgroup *)&rd);
    }
    /* random damage: loads or fails, never crashes or leaks */
    uint8_t *dam = malloc(a.len);
    assert_non_null(dam);
    for (int k = 0; k < 20000; k++) {
        memcpy(dam, a.data, a.len);
        int flips = 1 + (int)(tu_rand(&rnd) % 4);
        for (int i = 0; i < flips; i++)
            dam[tu_rand(&rnd) % a.len] ^= (uint8_t)(1u << (tu_rand(&rnd) % 8));
        reader_init(&rd, dam, a.len);
        copy = NULL;
        int rc = qgroup_load(&rd, &copy);
        if (rc == 0) {
            /* whatever was accepted is usable */
            struct qgroup_env env = fk_env(&f);
            struct qplan plan = {0};
            assert_int_equal(qgroup_plan_receive(copy, &env, 5, 10, -1, 0, &plan), 0);
            assert_int_equal(qgroup_apply_receive(copy, 5, 100, &plan), 0);
            qplan_free(&plan);
            qgroup_next_wakeup(copy, 5);
            uint32_t n;
            assert_int_equal(qgroup_apply_redrive(copy, &n), 0);
            qgroup_forget_before(copy, 0, 3);
            buf_reset(&b);
            assert_int_equal(qgroup_save(copy, &b), 0);
            qgroup_free(copy);
        } else {
            assert_int_equal(rc, CY_ECORRUPT);
            assert_null(copy);
        }
    }
    /* random bytes and huge counts */
    for (int k = 0; k < 20000; k++) {
        size_t len = tu_rand(&rnd) % a.len;
        memcpy(dam, a.data, a.len);
        tu_fill(&rnd, dam + (len < 20 ? len : 20), a.len - (len < 20 ? len : 20));
        reader_init(&rd, dam, len);
        copy = NULL;
        int rc = qgroup_load(&rd, &copy);
        if (rc == 0)
            qgroup_free(copy);
        else
            assert_int_equal(rc, CY_ECORRUPT);
    }
    free(dam);
    /* an empty queue group round-trips too */
    struct qgroup *e = qgroup_new(false, 0);
    save(e, &a);
    reader_init(&rd, a.data, a.len);
    assert_int_equal(qgroup_load(&rd, &copy), 0);
    assert_false(qgroup_is_fifo(copy));
    save(copy, &b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    qgroup_free(copy);
    qgroup_free(e);
    buf_free(&a);
    buf_free(&b);
    qgroup_free(g);
    fk_free(&f);
}

static void test_apply_rejects_bad_plans(void **state)
{
    (void)state;
    struct qgroup *g = qgroup_new(false, 0);
    struct qplan_item bad[] = {{64, 0, QPLAN_DELIVER, 1, 0, 0}};
    struct qplan plan = {bad, 1, 1, 1};
    assert_int_equal(qgroup_apply_receive(g, 0, 100, &plan), CY_EINVAL);
    bad[0].partition = 0;
    bad[0].kind = 9;
    assert_int_equal(qgroup_apply_receive(g, 0, 100, &plan), CY_EINVAL);
    assert_int_equal(qgroup_apply_nack(g, &plan), CY_EINVAL);
    assert_int_equal(qgroup_touched(g), 0);
    qplan_free(NULL);
    qgroup_free(NULL);
    qgroup_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_group_starts_at_first),
        cmocka_unit_test(test_receive_hides_leased),
        cmocka_unit_test(test_lease_expiry_redelivers),
        cmocka_unit_test(test_ack_idempotent_unknown_ignored),
        cmocka_unit_test(test_nack_retry_schedule),
        cmocka_unit_test(test_nack_delay_override_and_no_config),
        cmocka_unit_test(test_max_deliveries),
        cmocka_unit_test(test_dlq_topic_dead_letters),
        cmocka_unit_test(test_redrive_resets_counts),
        cmocka_unit_test(test_extend),
        cmocka_unit_test(test_delayed_hidden_until_scheduled),
        cmocka_unit_test(test_forget_before),
        cmocka_unit_test(test_partitions_round_robin_only_growth),
        cmocka_unit_test(test_plan_is_bounded),
        cmocka_unit_test(test_fifo_per_key_order),
        cmocka_unit_test(test_fifo_run_to_one_caller),
        cmocka_unit_test(test_fifo_release_on_nack),
        cmocka_unit_test(test_fifo_release_on_expiry),
        cmocka_unit_test(test_fifo_keyless_unordered),
        cmocka_unit_test(test_fifo_dead_letter_unblocks),
        cmocka_unit_test(test_fifo_blocked_key_holds_nothing_else),
        cmocka_unit_test(test_fifo_window),
        cmocka_unit_test(test_fifo_window_counts_only_blocked),
        cmocka_unit_test(test_fifo_many_keys_one_plan),
        cmocka_unit_test(test_fifo_delayed_holds_key),
        cmocka_unit_test(test_fifo_delayed_behind_held_key),
        cmocka_unit_test(test_fifo_delayed_head_nack_and_expiry),
        cmocka_unit_test(test_fifo_delayed_head_dead_letter),
        cmocka_unit_test(test_fifo_delayed_checkpoint),
        cmocka_unit_test(test_next_wakeup_many_due),
        cmocka_unit_test(test_enomem_changes_nothing),
        cmocka_unit_test(test_floor_advances_memory_bounded),
        cmocka_unit_test(test_fifo_property),
        cmocka_unit_test(test_determinism_replay),
        cmocka_unit_test(test_save_load_roundtrip_and_corruption),
        cmocka_unit_test(test_apply_rejects_bad_plans),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
