/* test_journal.c — the file journal: appends, reads, scans, segments, policies,
 * recovery of torn tails, corruption detection, retention, concurrency. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/buf.h"
#include "base/log.h"
#include "coyote.h"
#include "storage/journal.h"
#include "testutil.h"

struct fixture {
    char *dir;
    struct journal *j;
    struct journal_file_config cfg;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->dir = tu_tempdir("journal");
    f->cfg.dir = f->dir;
    f->cfg.segment_bytes = 4096;
    f->cfg.fsync = JOURNAL_FSYNC_ALWAYS;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    journal_close(f->j);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

static void reopen(struct fixture *f)
{
    if (f->j)
        assert_int_equal(journal_close(f->j), 0);
    f->j = NULL;
    assert_int_equal(journal_file_open(&f->cfg, &f->j), 0);
}

/* Body of record i: deterministic bytes of a length that varies with i. */
static size_t body_of(unsigned i, uint8_t *out)
{
    size_t len = (i * 37u) % 300u;
    for (size_t k = 0; k < len; k++)
        out[k] = (uint8_t)(i * 7u + k);
    return len;
}

static void append_n(struct fixture *f, unsigned from, unsigned n, uint64_t *positions)
{
    uint8_t body[512];
    for (unsigned i = from; i < from + n; i++) {
        size_t len = body_of(i, body);
        uint64_t pos, end;
        assert_int_equal(journal_append(f->j, 16 + (i % 200), 1000 + i, body, (uint32_t)len, &pos,
                                        &end),
                         0);
        assert_int_equal(end, pos + JOURNAL_RECORD_HEADER + len);
        if (positions)
            positions[i] = pos;
    }
}

struct check_ctx {
    unsigned next;
    unsigned stop_at;
};

static int check_cb(void *arg, const struct journal_record *rec)
{
    struct check_ctx *c = arg;
    uint8_t body[512];
    size_t len = body_of(c->next, body);
    assert_int_equal(rec->len, len);
    assert_memory_equal(rec->body, body, len);
    assert_int_equal(rec->type, 16 + (c->next % 200));
    assert_int_equal(rec->timestamp_ms, 1000 + c->next);
    c->next++;
    return c->next == c->stop_at ? 7 : 0;
}

static void test_append_read_scan(void **state)
{
    struct fixture *f = *state;
    reopen(f);
    uint64_t pos[500];
    append_n(f, 0, 500, pos);
    assert_int_equal(journal_wait_durable(f->j, journal_end(f->j), 5000), 0);
    assert_true(journal_durable(f->j) == journal_end(f->j));
    for (unsigned i = 1; i < 500; i++)
        assert_true(pos[i] > pos[i - 1]);

    struct check_ctx c = {0, 0};
    assert_int_equal(journal_scan(f->j, journal_start(f->j), UINT64_MAX, check_cb, &c), 0);
    assert_int_equal(c.next, 500);

    /* Random access, and a scan that the callback stops. */
    struct buf scratch = BUF_INIT;
    struct journal_record rec;
    assert_int_equal(journal_read(f->j, pos[123], &scratch, &rec), 0);
    assert_int_equal(rec.timestamp_ms, 1123);
    assert_int_equal(rec.next, pos[124]);
    c = (struct check_ctx){200, 210};
    assert_int_equal(journal_scan(f->j, pos[200], UINT64_MAX, check_cb, &c), 7);
    assert_int_equal(c.next, 210);
    assert_int_equal(journal_read(f->j, journal_end(f->j), &scratch, &rec), CY_ERANGE);
    buf_free(&scratch);

    /* Several segments were used and positions chain. */
    struct journal_segment_info segs[64];
    int n = journal_segments(f->j, segs, 64);
    assert_true(n > 10);
    for (int i = 1; i < n; i++) {
        assert_int_equal(segs[i].base, segs[i - 1].end);
        assert_true(segs[i - 1].max_timestamp <= segs[i].max_timestamp);
    }
    assert_true(segs[n - 1].active);

    /* Everything survives a reopen; appends continue after it. */
    uint64_t end = journal_end(f->j);
    reopen(f);
    assert_int_equal(journal_end(f->j), end);
    assert_int_equal(journal_durable(f->j), end);
    assert_int_equal(journal_last_timestamp(f->j), 1499);
    append_n(f, 500, 100, NULL);
    reopen(f);
    c = (struct check_ctx){0, 0};
    assert_int_equal(journal_scan(f->j, 0, UINT64_MAX, check_cb, &c), 0);
    assert_int_equal(c.next, 600);
}

/* Read record i's body at pos with journal_read_raw and compare. */
static void read_body_ok(struct fixture *f, uint64_t pos, unsigned i)
{
    uint8_t want[512], got[512];
    size_t len = body_of(i, want);
    assert_int_equal(journal_read_raw(f->j, pos + JOURNAL_RECORD_HEADER, got, len), 0);
    assert_memory_equal(got, want, len);
}

/*
 * Small reads go through a read-ahead copy of the journal. Reads interleaved
 * with appends (the copy was taken when the segment ended earlier), reads
 * backwards, reads across the copy's edge, after a segment switch, after
 * delete_before and after a reopen all return the bytes written.
 */
static void test_read_ahead_interleaved(void **state)
{
    struct fixture *f = *state;
    f->cfg.segment_bytes = 160 * 1024; /* more than two read-ahead windows per segment */
    reopen(f);
    static uint64_t pos[3000];
    uint64_t rng = 77;
    unsigned n = 0;
    while (n < 3000) {
        unsigned k = 1 + (unsigned)((rng = rng * 6364136223846793005ull + 1442695040888963407ull) >>
                                    59);
        if (n + k > 3000)
            k = 3000 - n;
        append_n(f, n, k, pos);
        n += k;
        /* the newest record (just past whatever was cached), one in the
         * middle, and the oldest */
        read_body_ok(f, pos[n - 1], n - 1);
        unsigned mid = (unsigned)((rng >> 33) % n);
        read_body_ok(f, pos[mid], mid);
        read_body_ok(f, pos[0], 0);
    }
    for (unsigned i = 3000; i-- > 0;) /* backwards */
        read_body_ok(f, pos[i], i);
    for (unsigned i = 0; i < 3000; i++) /* forwards */
        read_body_ok(f, pos[i], i);
    /* A read running past the end of what is written is refused. */
    uint8_t b[600];
    assert_int_equal(journal_read_raw(f->j, journal_end(f->j) - 10, b, 20), CY_ERANGE);
    /* Deleted segments are not served from the copy. */
    int nseg = journal_segments(f->j, NULL, 0);
    assert_true(nseg > 2);
    struct journal_segment_info segs[64];
    journal_segments(f->j, segs, 64);
    read_body_ok(f, pos[0], 0); /* cached now */
    assert_int_equal(journal_wait_durable(f->j, journal_end(f->j), 5000), 0); /* deletable */
    assert_int_equal(journal_delete_before(f->j, segs[1].base), 0);
    assert_int_equal(journal_read_raw(f->j, pos[0] + JOURNAL_RECORD_HEADER, b, 10), CY_ERANGE);
    reopen(f);
    for (unsigned i = 0; i < 3000; i++)
        if (pos[i] >= segs[1].base)
            read_body_ok(f, pos[i], i);
}

static void test_bad_appends(void **state)
{
    struct fixture *f = *state;
    reopen(f);
    uint8_t big[5000] = {0};
    assert_int_equal(journal_append(f->j, 16, 10, big, sizeof big, NULL, NULL), CY_ETOOBIG);
    assert_int_equal(journal_append(f->j, 0, 10, "x", 1, NULL, NULL), CY_EINVAL);
    assert_int_equal(journal_append(f->j, 16, 10, "x", 1, NULL, NULL), 0);
    assert_int_equal(journal_append(f->j, 16, 9, "x", 1, NULL, NULL), CY_EINVAL);
    assert_int_equal(journal_append(f->j, 16, 10, "", 0, NULL, NULL), 0);
    assert_int_equal(journal_error(f->j), 0);
}

static void test_fsync_policies(void **state)
{
    struct fixture *f = *state;
    enum journal_fsync p;
    uint32_t ms;
    assert_int_equal(journal_fsync_parse("always", &p, &ms), 0);
    assert_int_equal(p, JOURNAL_FSYNC_ALWAYS);
    assert_int_equal(journal_fsync_parse("interval=25", &p, &ms), 0);
    assert_int_equal(p, JOURNAL_FSYNC_INTERVAL);
    assert_int_equal(ms, 25);
    const char *bad[] = {"", "Always", "interval=", "interval=0", "interval=-1", "interval=1x",
                         "interval=60001", "sometimes", "interval= 5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(journal_fsync_parse(bad[i], &p, &ms), CY_EINVAL);
    char name[32];
    assert_string_equal(journal_fsync_name(JOURNAL_FSYNC_INTERVAL, 25, name, sizeof name),
                        "interval=25");

    /* never: nothing becomes durable until journal_sync. */
    f->cfg.fsync = JOURNAL_FSYNC_NEVER;
    reopen(f);
    append_n(f, 0, 20, NULL);
    assert_int_equal(journal_wait_durable(f->j, journal_end(f->j), 100), -ETIMEDOUT);
    assert_true(journal_durable(f->j) < journal_end(f->j));
    assert_int_equal(journal_sync(f->j), 0);
    assert_int_equal(journal_durable(f->j), journal_end(f->j));

    /* interval: durable follows within about the interval. */
    f->cfg.fsync = JOURNAL_FSYNC_INTERVAL;
    f->cfg.fsync_interval_ms = 20;
    reopen(f);
    append_n(f, 20, 20, NULL);
    assert_int_equal(journal_wait_durable(f->j, journal_end(f->j), 5000), 0);
    /* ... and keeps doing so when the thread was idle before the append. */
    usleep(100 * 1000);
    append_n(f, 40, 1, NULL);
    usleep(300 * 1000);
    assert_int_equal(journal_durable(f->j), journal_end(f->j));
}

/* Find the file of the last segment. */
static void last_segment_path(struct fixture *f, char *out, size_t len)
{
    struct journal_segment_info segs[256];
    int n = journal_segments(f->j, segs, 256);
    char name[32];
    journal_segment_name(segs[n - 1].base, name, sizeof name);
    snprintf(out, len, "%s/%s", f->dir, name);
}

static void poke(const char *path, off_t off, const void *bytes, size_t n)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, n, off), (ssize_t)n);
    close(fd);
}

static void test_torn_tail_is_cut(void **state)
{
    struct fixture *f = *state;
    reopen(f);
    append_n(f, 0, 30, NULL);
    uint64_t end = journal_end(f->j);
    struct journal_segment_info segs[64];
    int n = journal_segments(f->j, segs, 64);
    uint64_t off = JOURNAL_SEGMENT_HEADER + (end - segs[n - 1].base);
    char path[4096];
    last_segment_path(f, path, sizeof path);
    assert_int_equal(journal_close(f->j), 0);
    f->j = NULL;

    /* A half-written record after the end: a plausible header, no body. */
    uint8_t junk[20] = {50, 0, 0, 0, 1, 2, 3, 4, 17, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9};
    poke(path, (off_t)off, junk, sizeof junk);
    assert_int_equal(journal_file_open(&f->cfg, &f->j), 0);
    assert_int_equal(journal_end(f->j), end);
    /* The junk is gone for good: appending and reopening sees only new data. */
    append_n(f, 30, 5, NULL);
    reopen(f);
    struct check_ctx c = {0, 0};
    assert_int_equal(journal_scan(f->j, 0, UINT64_MAX, check_cb, &c), 0);
    assert_int_equal(c.next, 35);
}

static void test_corruption_before_durable_refuses(void **state)
{
    struct fixture *f = *state;
    f->cfg.segment_bytes = 1 << 20; /* one segment */
    reopen(f);
    uint64_t pos[40];
    append_n(f, 0, 40, pos);
    char path[4096];
    last_segment_path(f, path, sizeof path);
    assert_int_equal(journal_close(f->j), 0);
    f->j = NULL;
    /* Damage record 10's body: everything was synced, so this is corruption,
     * not a torn tail, and opening must refuse rather than discard. */
    uint8_t x = 0xAB;
    poke(path, (off_t)(JOURNAL_SEGMENT_HEADER + pos[10] + JOURNAL_RECORD_HEADER), &x, 1);
    log_set_level(CYLOG_OFF);
    assert_int_equal(journal_file_open(&f->cfg, &f->j), CY_ECORRUPT);
    log_set_level(CYLOG_INFO);
    assert_null(f->j);
}

static void test_corruption_in_sealed_segment_stops_scan(void **state)
{
    struct fixture *f = *state;
    reopen(f);
    uint64_t pos[300];
    append_n(f, 0, 300, pos);
    struct journal_segment_info segs[128];
    int n = journal_segments(f->j, segs, 128);
    assert_true(n > 3);
    char name[32], path[4096];
    journal_segment_name(segs[1].base, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", f->dir, name);
    unsigned victim = 0;
    while (pos[victim] < segs[1].base)
        victim++;
    assert_int_equal(journal_close(f->j), 0);
    f->j = NULL;
    uint8_t x = 0x5A;
    poke(path, (off_t)(JOURNAL_SEGMENT_HEADER + pos[victim] - segs[1].base + 14), &x, 1);
    reopen(f); /* sealed segments are verified when read, not at open */
    struct check_ctx c = {0, 0};
    log_set_level(CYLOG_OFF);
    assert_int_equal(journal_scan(f->j, 0, UINT64_MAX, check_cb, &c), CY_ECORRUPT);
    log_set_level(CYLOG_INFO);
    assert_int_equal(c.next, victim); /* nothing at or past the damage was served */
}

static void test_zeros_before_hint_are_corruption(void **state)
{
    struct fixture *f = *state;
    f->cfg.segment_bytes = 1 << 20;
    reopen(f);
    uint64_t pos[40];
    append_n(f, 0, 40, pos);
    char path[4096];
    last_segment_path(f, path, sizeof path);
    assert_int_equal(journal_close(f->j), 0); /* a clean close: the hint is the end */
    f->j = NULL;
    /* The last records vanish (zeros): a clean-looking end, but before the
     * durable hint — acknowledged data is missing. */
    uint8_t zeros[4096] = {0};
    poke(path, (off_t)(JOURNAL_SEGMENT_HEADER + pos[35]), zeros, sizeof zeros);
    log_set_level(CYLOG_OFF);
    assert_int_equal(journal_file_open(&f->cfg, &f->j), CY_ECORRUPT);
    log_set_level(CYLOG_INFO);
}

static void test_delete_before(void **state)
{
    struct fixture *f = *state;
    reopen(f);
    uint64_t pos[400];
    append_n(f, 0, 400, pos);
    assert_int_equal(journal_sync(f->j), 0);
    struct journal_segment_info segs[128];
    int n = journal_segments(f->j, segs, 128);
    assert_int_equal(journal_delete_before(f->j, segs[3].base + 1), 0);
    assert_int_equal(journal_start(f->j), segs[3].base);
    assert_int_equal(journal_segments(f->j, segs, 128), n - 3);
    struct buf scratch = BUF_INIT;
    struct journal_record rec;
    assert_int_equal(journal_read(f->j, pos[0], &scratch, &rec), CY_ERANGE);
    assert_int_equal(journal_read(f->j, pos[399], &scratch, &rec), 0);
    buf_free(&scratch);
    /* The active segment is never deleted. */
    assert_int_equal(journal_delete_before(f->j, UINT64_MAX), 0);
    assert_int_equal(journal_segments(f->j, segs, 128), 1);
    uint64_t start = journal_start(f->j), end = journal_end(f->j);
    reopen(f);
    assert_int_equal(journal_start(f->j), start);
    assert_int_equal(journal_end(f->j), end);
}

struct appender {
    struct journal *j;
    unsigned id;
    unsigned count;
    pthread_mutex_t *ts_mu;
    uint64_t *ts;
};

static void *appender_main(void *arg)
{
    struct appender *a = arg;
    for (unsigned i = 0; i < a->count; i++) {
        uint8_t body[16];
        memset(body, (int)a->id, sizeof body);
        le_put32(body, i);
        uint64_t end;
        pthread_mutex_lock(a->ts_mu);
        int rc = journal_append(a->j, 20, ++*a->ts, body, sizeof body, NULL, &end);
        pthread_mutex_unlock(a->ts_mu);
        if (rc || journal_wait_durable(a->j, end, 10000))
            return (void *)1;
    }
    return NULL;
}

struct count_ctx {
    unsigned per[8];
};

static int count_cb(void *arg, const struct journal_record *rec)
{
    struct count_ctx *c = arg;
    unsigned id = rec->body[4];
    assert_true(id < 8);
    assert_int_equal(le_get32(rec->body), c->per[id]); /* per-thread order kept */
    c->per[id]++;
    return 0;
}

static void test_concurrent_appenders(void **state)
{
    struct fixture *f = *state;
    f->cfg.segment_bytes = 64 * 1024;
    reopen(f);
    pthread_t th[8];
    struct appender a[8];
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    uint64_t ts = 0;
    for (unsigned i = 0; i < 8; i++) {
        a[i] = (struct appender){f->j, i, 300, &mu, &ts};
        pthread_create(&th[i], NULL, appender_main, &a[i]);
    }
    for (unsigned i = 0; i < 8; i++) {
        void *r;
        pthread_join(th[i], &r);
        assert_null(r);
    }
    struct journal_stats st;
    journal_get_stats(f->j, &st);
    assert_int_equal(st.appends, 2400);
    assert_true(st.syncs < 2400); /* group commit shared syncs */
    reopen(f);
    struct count_ctx c = {{0}};
    assert_int_equal(journal_scan(f->j, 0, UINT64_MAX, count_cb, &c), 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(c.per[i], 300);
}

static void test_record_codec(void **state)
{
    (void)state;
    uint8_t rec[64];
    struct iovec iov = {(void *)"hello", 5};
    journal_record_header_encode(rec, 777, 16, 42, &iov, 1, 5);
    memcpy(rec + JOURNAL_RECORD_HEADER, "hello", 5);
    struct journal_record r;
    assert_int_equal(journal_record_decode(rec, 25, 777, &r), 0);
    assert_int_equal(r.next, 777 + 25);
    assert_int_equal(r.len, 5);
    assert_memory_equal(r.body, "hello", 5);
    /* the position is part of the checksum */
    assert_int_equal(journal_record_decode(rec, 25, 778, &r), CY_ECORRUPT);
    assert_int_equal(journal_record_decode(rec, 24, 777, &r), -EAGAIN);
    uint8_t zero[32] = {0};
    assert_int_equal(journal_record_decode(zero, 32, 0, &r), 1);
    for (int bit = 0; bit < 25 * 8; bit++) {
        rec[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int rc = journal_record_decode(rec, 25, 777, &r);
        assert_true(rc == CY_ECORRUPT || rc == -EAGAIN);
        rec[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_codec),
        cmocka_unit_test_setup_teardown(test_append_read_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_ahead_interleaved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsync_policies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_is_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_before_durable_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_in_sealed_segment_stops_scan, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_delete_before, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zeros_before_hint_are_corruption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_appenders, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
