/*
 * test_recovery.c — crash at every sync point of a scripted workload, then
 * recover and check (DESIGN.md §5, issue "Foundation" item 9):
 *   - every message and command acknowledged as durable before the crash is
 *     present and intact;
 *   - nothing corrupt is returned: every readable message has exactly the
 *     bytes that were published at its offset;
 *   - offsets never repeat: the partition's next offset never goes below what
 *     was acknowledged, and publishing after recovery continues from there;
 *   - commands replay exactly once, in order (the test state machine refuses
 *     anything else).
 * Crashes are simulated by faultfs (tests/support/faultfs.h): unsynced writes
 * are dropped (CRASH_DROP) or torn sector by sector (CRASH_GARBLE), and names
 * not covered by a directory sync vanish. Also: fsync failure and ENOSPC put
 * the journal in its sticky read-only state; short writes are completed.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/buf.h"
#include "base/log.h"
#include "coyote.h"
#include "faultfs.h"
#include "storage/store.h"
#include "testutil.h"

#define NPARTS 4
#define STEPS 70

struct sm {
    uint64_t commands;
};

static int sm_restore(void *arg, const uint8_t *state, size_t len)
{
    struct sm *m = arg;
    m->commands = len == 8 ? le_get64(state) : 0;
    return len == 0 || len == 8 ? 0 : CY_ECORRUPT;
}

static int sm_replay(void *arg, const struct journal_record *rec)
{
    struct sm *m = arg;
    if (rec->type == JREC_PUBLISH)
        return 0;
    if (rec->len != 8 || le_get64(rec->body) != m->commands)
        return CY_ECORRUPT;
    m->commands++;
    return 0;
}

static int sm_save(void *arg, struct buf *out)
{
    buf_put_u64(out, ((struct sm *)arg)->commands);
    return 0;
}

/* What the workload saw acknowledged. */
struct acked {
    uint64_t next[NPARTS];    /* offsets below are acknowledged */
    uint64_t attempted[NPARTS]; /* offsets below were at least attempted */
    uint64_t commands;
    uint64_t ts;
};

static uint32_t msg_bytes(uint64_t part, uint64_t offset, uint8_t *out)
{
    int n = snprintf((char *)out, 64, "P%llu/O%llu|", (unsigned long long)part,
                     (unsigned long long)offset);
    uint32_t len = (uint32_t)n + (uint32_t)((offset * 29 + part * 7) % 300);
    for (uint32_t i = (uint32_t)n; i < len; i++)
        out[i] = (uint8_t)(offset * 3 + i);
    return len;
}

static struct store_config make_cfg(struct faultfs *fs)
{
    struct store_config c = {0};
    c.fo = faultfs_ops(fs);
    c.dir = "/data/ns";
    c.segment_bytes = 4096;
    c.fsync = JOURNAL_FSYNC_ALWAYS;
    c.checkpoint_bytes = 6000;
    c.index_max_open = 2;
    return c;
}

/* One step of the workload; returns 0 or the first error (the crash). */
static int step(struct store *s, struct sm *m, struct acked *a, unsigned i, uint64_t *rng)
{
    uint64_t end;
    int rc;
    unsigned kind = (unsigned)(tu_rand(rng) % 10);
    a->ts += 1 + tu_rand(rng) % 3;
    if (kind < 6) {
        /* publish 1..3 messages to 1..2 partitions */
        struct msgrec_part parts[2];
        struct msgrec_msg msgs[2][3];
        uint8_t data[2][3][400];
        size_t np = 1 + tu_rand(rng) % 2;
        uint64_t p0 = tu_rand(rng) % NPARTS;
        for (size_t k = 0; k < np; k++) {
            uint64_t part = (p0 + k) % NPARTS;
            uint32_t cnt = 1 + (uint32_t)(tu_rand(rng) % 3);
            uint64_t next;
            store_part_next(s, part, &next);
            for (uint32_t x = 0; x < cnt; x++) {
                msgs[k][x].len = msg_bytes(part, next + x, data[k][x]);
                msgs[k][x].data = data[k][x];
                msgs[k][x].key_hash = (uint32_t)part;
            }
            parts[k] = (struct msgrec_part){part, next, cnt, msgs[k]};
            if (next + cnt > a->attempted[part])
                a->attempted[part] = next + cnt;
        }
        rc = store_publish(s, a->ts, parts, np, NULL, 0, &end);
        if (!rc)
            rc = store_wait_durable(s, end, 10000);
        if (rc)
            return rc;
        for (size_t k = 0; k < np; k++)
            a->next[parts[k].part_id] = parts[k].first_offset + parts[k].count;
    } else if (kind < 9) {
        uint8_t body[8];
        le_put64(body, m->commands);
        rc = store_append(s, 16, a->ts, body, 8, &end);
        if (rc)
            return rc;
        m->commands++;
        rc = store_wait_durable(s, end, 10000);
        if (rc)
            return rc;
        a->commands = m->commands;
    } else {
        int deleted;
        rc = store_retain(s, a->ts, 0, 12000, &deleted);
        if (rc)
            return rc;
    }
    (void)i;
    /* Due by bytes only. The checkpoint runs on its own thread; waiting for
     * it keeps the number of sync points the same in every run, so that the
     * matrix below reaches each of them. */
    rc = store_maybe_checkpoint(s, UINT64_MAX / 2);
    return rc ? rc : store_checkpoint_wait(s);
}

/* Run the workload until it ends or fails. Returns how many steps finished. */
static unsigned run(struct faultfs *fs, struct acked *a, uint64_t seed, int *err)
{
    struct store_config cfg = make_cfg(fs);
    struct sm m = {0};
    struct store_client cl = {&m, sm_restore, sm_replay, sm_save};
    struct store *s;
    *err = store_open(&cfg, &cl, &s);
    if (*err)
        return 0;
    uint64_t rng = seed;
    unsigned i;
    for (i = 0; i < STEPS; i++) {
        *err = step(s, &m, a, i, &rng);
        if (*err)
            break;
    }
    int rc = store_close(s);
    if (!*err)
        *err = rc;
    return i;
}

/* After a crash: reopen and check everything the workload was told. */
static void verify(struct faultfs *fs, const struct acked *a, const char *what)
{
    struct store_config cfg = make_cfg(fs);
    struct sm m = {0};
    struct store_client cl = {&m, sm_restore, sm_replay, sm_save};
    struct store *s;
    int rc = store_open(&cfg, &cl, &s);
    if (rc)
        fail_msg("%s: recovery failed: %s", what, cy_strerror(rc));
    if (m.commands < a->commands)
        fail_msg("%s: %llu commands acknowledged, %llu recovered", what,
                 (unsigned long long)a->commands, (unsigned long long)m.commands);
    struct buf b = BUF_INIT;
    uint8_t want[512];
    for (uint64_t p = 0; p < NPARTS; p++) {
        uint64_t first, next;
        assert_int_equal(store_part_first(s, p, &first), 0);
        assert_int_equal(store_part_next(s, p, &next), 0);
        if (next < a->next[p] || next > a->attempted[p])
            fail_msg("%s: partition %llu next %llu, acknowledged %llu, attempted %llu", what,
                     (unsigned long long)p, (unsigned long long)next,
                     (unsigned long long)a->next[p], (unsigned long long)a->attempted[p]);
        for (uint64_t o = first; o < next; o++) {
            buf_reset(&b);
            rc = store_read_msg(s, p, o, &b, NULL);
            if (rc)
                fail_msg("%s: partition %llu offset %llu: %s", what, (unsigned long long)p,
                         (unsigned long long)o, cy_strerror(rc));
            uint32_t len = msg_bytes(p, o, want);
            if (b.len != len || memcmp(b.data, want, len) != 0)
                fail_msg("%s: partition %llu offset %llu has wrong bytes", what,
                         (unsigned long long)p, (unsigned long long)o);
        }
    }
    /* Life goes on: offsets continue, nothing repeats. */
    uint64_t next;
    store_part_next(s, 0, &next);
    uint8_t d[512];
    struct msgrec_msg msg = {d, msg_bytes(0, next, d), 0, 0, 0};
    struct msgrec_part part = {0, next, 1, &msg};
    uint64_t ts = journal_last_timestamp(store_journal(s)) + 1;
    if (ts < a->ts + 1)
        ts = a->ts + 1;
    uint64_t end;
    assert_int_equal(store_publish(s, ts, &part, 1, NULL, 0, &end), 0);
    assert_int_equal(store_wait_durable(s, end, 10000), 0);
    assert_int_equal(store_read_msg(s, 0, next, &b, NULL), 0);
    assert_int_equal(store_close(s), 0);
    buf_free(&b);
}

static void crash_matrix(uint64_t seed)
{
    log_set_level(CYLOG_OFF);
    /* A clean run counts the sync points. */
    struct faultfs *fs = faultfs_new(seed);
    struct acked a = {0};
    int err;
    unsigned steps = run(fs, &a, seed, &err);
    assert_int_equal(err, 0);
    assert_int_equal(steps, STEPS);
    unsigned syncs = faultfs_sync_count(fs);
    assert_true(syncs > STEPS / 2);
    verify(fs, &a, "clean run");
    faultfs_free(fs);

    unsigned crashes = 0;
    for (unsigned k = 1; k <= syncs + 1; k++) {
        for (int mode = 0; mode < 2; mode++) {
            char what[96];
            snprintf(what, sizeof what, "seed %llu crash at sync %u (%s)",
                     (unsigned long long)seed, k, mode ? "garble" : "drop");
            fs = faultfs_new(seed * 1000003u + k * 2u + (unsigned)mode);
            faultfs_crash_at_sync(fs, k);
            struct acked b = {0};
            run(fs, &b, seed, &err);
            if (faultfs_dead(fs))
                crashes++;
            faultfs_crash(fs, mode ? CRASH_GARBLE : CRASH_DROP);
            verify(fs, &b, what);
            faultfs_free(fs);
        }
    }
    assert_true(crashes >= 2 * syncs - 4); /* nearly every point was reached */
    log_set_level(CYLOG_INFO);
}

static void test_crash_matrix_seed1(void **state)
{
    (void)state;
    crash_matrix(1);
}

static void test_crash_matrix_seed2(void **state)
{
    (void)state;
    crash_matrix(0xC0707E);
}

/* Two crashes in a row, the second one during the first recovery's aftermath. */
static void test_double_crash(void **state)
{
    (void)state;
    log_set_level(CYLOG_OFF);
    for (unsigned k = 3; k < 60; k += 7) {
        struct faultfs *fs = faultfs_new(k);
        faultfs_crash_at_sync(fs, k);
        struct acked a = {0};
        int err;
        run(fs, &a, 77, &err);
        faultfs_crash(fs, CRASH_GARBLE);
        /* Second life: a different workload on top, crashed again. */
        faultfs_crash_at_sync(fs, k / 2 + 2);
        struct acked b = a;
        struct store_config cfg = make_cfg(fs);
        struct sm m = {0};
        struct store_client cl = {&m, sm_restore, sm_replay, sm_save};
        struct store *s;
        if (store_open(&cfg, &cl, &s) == 0) {
            b.commands = m.commands;
            for (uint64_t p = 0; p < NPARTS; p++) {
                store_part_next(s, p, &b.next[p]);
                if (b.next[p] > b.attempted[p])
                    b.attempted[p] = b.next[p];
            }
            b.ts = journal_last_timestamp(store_journal(s));
            uint64_t rng = k * 31;
            for (unsigned i = 0; i < 40; i++)
                if (step(s, &m, &b, i, &rng))
                    break;
            store_close(s);
        }
        faultfs_crash(fs, CRASH_GARBLE);
        verify(fs, &b, "double crash");
        faultfs_free(fs);
    }
    log_set_level(CYLOG_INFO);
}

/* I/O errors: the journal goes read-only, nothing more is acknowledged, and
 * a restart recovers every acknowledged record. */
static void io_error_case(void (*inject)(struct faultfs *, unsigned), const char *what)
{
    log_set_level(CYLOG_OFF);
    for (unsigned at = 5; at < 120; at += 11) {
        struct faultfs *fs = faultfs_new(at);
        inject(fs, at);
        struct acked a = {0};
        struct store_config cfg = make_cfg(fs);
        struct sm m = {0};
        struct store_client cl = {&m, sm_restore, sm_replay, sm_save};
        struct store *s;
        assert_int_equal(store_open(&cfg, &cl, &s), 0);
        uint64_t rng = at;
        int err = 0;
        unsigned i;
        for (i = 0; i < STEPS && !err; i++)
            err = step(s, &m, &a, i, &rng);
        if (err && journal_error(store_journal(s))) {
            /* Sticky: a later append is refused. */
            uint8_t body[8] = {0};
            assert_int_equal(store_append(s, 16, a.ts + 10, body, 8, NULL), CY_EREADONLY);
        }
        store_close(s);
        faultfs_clear_faults(fs);
        faultfs_crash(fs, CRASH_DROP);
        char msg[64];
        snprintf(msg, sizeof msg, "%s at %u", what, at);
        verify(fs, &a, msg);
        faultfs_free(fs);
    }
    log_set_level(CYLOG_INFO);
}

static void inject_sync_eio(struct faultfs *fs, unsigned at)
{
    faultfs_fail_sync_at(fs, at, -EIO);
}
static void inject_write_enospc(struct faultfs *fs, unsigned at)
{
    faultfs_fail_write_at(fs, at, -ENOSPC);
}
static void inject_short_write(struct faultfs *fs, unsigned at)
{
    faultfs_short_write_at(fs, at);
}
static void inject_disk_full(struct faultfs *fs, unsigned at)
{
    faultfs_set_space(fs, 20000 + at * 300);
}

static void test_sync_failure(void **state)
{
    (void)state;
    io_error_case(inject_sync_eio, "fsync EIO");
}
static void test_enospc(void **state)
{
    (void)state;
    io_error_case(inject_write_enospc, "write ENOSPC");
}
static void test_short_write(void **state)
{
    (void)state;
    io_error_case(inject_short_write, "short write");
}
static void test_disk_full(void **state)
{
    (void)state;
    io_error_case(inject_disk_full, "disk full");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_matrix_seed1),
        cmocka_unit_test(test_crash_matrix_seed2),
        cmocka_unit_test(test_double_crash),
        cmocka_unit_test(test_sync_failure),
        cmocka_unit_test(test_enospc),
        cmocka_unit_test(test_short_write),
        cmocka_unit_test(test_disk_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
