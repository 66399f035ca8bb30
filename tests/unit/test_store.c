/* test_store.c — the namespace store: publish/read, recovery with and without
 * checkpoints, index rebuilds, the directory lock, retention, time seeks. */
#include <errno.h>
#include <fcntl.h>
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
#include "storage/snapshot.h"
#include "storage/store.h"
#include "faultfs.h"
#include "testutil.h"

/* A tiny state machine standing in for the broker: it counts command records
 * and checks they arrive in sequence. */
struct sm {
    uint64_t commands; /* command records applied */
    uint64_t publishes;
    uint64_t restored_from; /* commands count found in the checkpoint */
    int replays;
};

static int sm_restore(void *arg, const uint8_t *state, size_t len)
{
    struct sm *m = arg;
    if (len == 0) {
        m->commands = m->publishes = 0;
        return 0;
    }
    if (len != 16)
        return CY_ECORRUPT;
    m->commands = le_get64(state);
    m->publishes = le_get64(state + 8);
    m->restored_from = m->commands;
    return 0;
}

static int sm_replay(void *arg, const struct journal_record *rec)
{
    struct sm *m = arg;
    m->replays++;
    if (rec->type == JREC_PUBLISH) {
        m->publishes++;
        return 0;
    }
    if (rec->len != 8 || le_get64(rec->body) != m->commands)
        return CY_ECORRUPT; /* commands must replay exactly once, in order */
    m->commands++;
    return 0;
}

static int sm_save(void *arg, struct buf *out)
{
    struct sm *m = arg;
    buf_put_u64(out, m->commands);
    buf_put_u64(out, m->publishes);
    return 0;
}

struct fixture {
    char *dir;
    struct store *s;
    struct store_config cfg;
    struct sm sm;
    struct store_client client;
    uint64_t ts;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->dir = tu_tempdir("store");
    f->cfg.dir = f->dir;
    f->cfg.segment_bytes = 8192;
    f->cfg.fsync = JOURNAL_FSYNC_ALWAYS;
    f->client = (struct store_client){&f->sm, sm_restore, sm_replay, sm_save};
    f->ts = 1000;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->s)
        store_close(f->s);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

static void reopen(struct fixture *f)
{
    if (f->s)
        assert_int_equal(store_close(f->s), 0);
    f->s = NULL;
    memset(&f->sm, 0, sizeof f->sm);
    assert_int_equal(store_open(&f->cfg, &f->client, &f->s), 0);
}

/* The bytes of message (part, offset). */
static uint32_t msg_bytes(uint64_t part, uint64_t offset, uint8_t *out)
{
    int n = snprintf((char *)out, 64, "p%llu-o%llu:", (unsigned long long)part,
                     (unsigned long long)offset);
    uint32_t len = (uint32_t)n + (uint32_t)((offset * 13 + part) % 150);
    for (uint32_t i = (uint32_t)n; i < len; i++)
        out[i] = (uint8_t)(offset + i);
    return len;
}

/* Publish `count` messages to each of the given partitions in one record. */
static uint64_t publish(struct fixture *f, const uint64_t *parts, size_t nparts, uint32_t count)
{
    struct msgrec_part mp[8];
    struct msgrec_msg msgs[8][16];
    uint8_t data[8][16][256];
    for (size_t i = 0; i < nparts; i++) {
        uint64_t next;
        assert_int_equal(store_part_next(f->s, parts[i], &next), 0);
        for (uint32_t k = 0; k < count; k++) {
            msgs[i][k].len = msg_bytes(parts[i], next + k, data[i][k]);
            msgs[i][k].data = data[i][k];
            msgs[i][k].key_hash = (uint32_t)(next + k);
        }
        mp[i] = (struct msgrec_part){parts[i], next, count, msgs[i]};
    }
    uint64_t end;
    assert_int_equal(store_publish(f->s, ++f->ts, mp, nparts, "xtra", 4, &end), 0);
    assert_int_equal(store_wait_durable(f->s, end, 5000), 0);
    return end;
}

static void command(struct fixture *f)
{
    uint8_t body[8];
    le_put64(body, f->sm.commands);
    uint64_t end;
    assert_int_equal(store_append(f->s, 16, ++f->ts, body, 8, &end), 0);
    f->sm.commands++; /* the live state machine applies as it appends */
    assert_int_equal(store_wait_durable(f->s, end, 5000), 0);
}

static void check_part(struct fixture *f, uint64_t part, uint64_t from, uint64_t to)
{
    struct buf b = BUF_INIT;
    uint8_t want[256];
    uint64_t next;
    assert_int_equal(store_part_next(f->s, part, &next), 0);
    assert_int_equal(next, to);
    for (uint64_t o = from; o < to; o++) {
        struct index_entry e;
        assert_int_equal((buf_reset(&b), store_read_msg(f->s, part, o, &b, &e)), 0);
        uint32_t len = msg_bytes(part, o, want);
        assert_int_equal(b.len, len);
        assert_memory_equal(b.data, want, len);
        assert_int_equal(e.key_hash, (uint32_t)o);
    }
    assert_int_equal(store_read_msg(f->s, part, to, &b, NULL), CY_ERANGE);
    buf_free(&b);
}

static void test_publish_and_read(void **state)
{
    struct fixture *f = *state;
    reopen(f);
    uint64_t parts[3] = {7, 8, 1ull << 40};
    for (int i = 0; i < 20; i++)
        publish(f, parts, 3, 5);
    check_part(f, 7, 0, 100);
    check_part(f, 1ull << 40, 0, 100);
    /* A stale first offset is refused and nothing is written. */
    struct msgrec_msg m = {(const uint8_t *)"x", 1, 0, 0, 0};
    struct msgrec_part bad = {7, 99, 1, &m};
    uint64_t end = journal_end(store_journal(f->s));
    assert_int_equal(store_publish(f->s, ++f->ts, &bad, 1, NULL, 0, NULL), CY_EINVAL);
    struct msgrec_part dup[2] = {{9, 0, 1, &m}, {9, 0, 1, &m}};
    assert_int_equal(store_publish(f->s, ++f->ts, dup, 2, NULL, 0, NULL), CY_EINVAL);
    assert_int_equal(journal_end(store_journal(f->s)), end);
    assert_int_equal(store_append(f->s, JREC_PUBLISH, ++f->ts, "x", 1, NULL), CY_EINVAL);
    uint64_t next;
    assert_int_equal(store_part_next(f->s, 12345, &next), 0);
    assert_int_equal(next, 0);
}

static void test_recovery_without_checkpoint(void **state)
{
    struct fixture *f = *state;
    f->cfg.checkpoint_bytes = UINT64_MAX / 2;
    reopen(f);
    uint64_t parts[2] = {1, 2};
    for (int i = 0; i < 30; i++) {
        publish(f, parts, 2, 3);
        command(f);
    }
    /* Simulate a crash: no checkpoint at close. Re-open a second store in the
     * same process is refused by the lock, so close the journal the hard way:
     * we copy the directory while open. */
    char cmd[8192];
    char *copy = tu_tempdir("store-copy");
    snprintf(cmd, sizeof cmd, "cp -a %s/. %s/", f->dir, copy);
    assert_int_equal(system(cmd), 0);
    unlink(strcat(strcpy(cmd, copy), "/LOCK"));
    struct store_config c2 = f->cfg;
    c2.dir = copy;
    struct sm m2 = {0};
    struct store_client cl2 = {&m2, sm_restore, sm_replay, sm_save};
    struct store *s2;
    assert_int_equal(store_open(&c2, &cl2, &s2), 0);
    assert_int_equal(m2.commands, 30);
    assert_int_equal(m2.publishes, 30);
    assert_int_equal(m2.restored_from, 0);
    struct fixture g = *f;
    g.s = s2;
    check_part(&g, 1, 0, 90);
    check_part(&g, 2, 0, 90);
    assert_int_equal(store_close(s2), 0);
    tu_rmtree(copy);
}

static void test_checkpoint_bounds_replay(void **state)
{
    struct fixture *f = *state;
    reopen(f);
    uint64_t parts[1] = {3};
    for (int i = 0; i < 10; i++) {
        publish(f, parts, 1, 2);
        command(f);
    }
    assert_int_equal(store_checkpoint(f->s), 0);
    for (int i = 0; i < 4; i++)
        command(f);
    publish(f, parts, 1, 2);
    /* close checkpoints again; reopen replays nothing */
    reopen(f);
    assert_int_equal(f->sm.commands, 14);
    assert_int_equal(f->sm.restored_from, 14);
    assert_int_equal(f->sm.replays, 0);
    check_part(f, 3, 0, 22);
    struct store_stats st;
    store_get_stats(f->s, &st);
    assert_int_equal(st.partitions, 1);
}

static void remove_index_files(struct fixture *f, const char *how)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s/index/*.idx", how, f->dir);
    assert_int_equal(system(cmd), 0);
}

static void test_index_rebuilt_when_missing_or_damaged(void **state)
{
    struct fixture *f = *state;
    reopen(f);
    uint64_t parts[2] = {10, 11};
    for (int i = 0; i < 25; i++)
        publish(f, parts, 2, 4);
    assert_int_equal(store_close(f->s), 0);
    f->s = NULL;
    remove_index_files(f, "rm -f");
    log_set_level(CYLOG_ERROR);
    reopen(f);
    check_part(f, 10, 0, 100);
    check_part(f, 11, 0, 100);
    assert_int_equal(store_close(f->s), 0);
    f->s = NULL;
    /* Cut every index file in half: the rest comes back from the journal. */
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "for x in %s/index/*.idx; do truncate -s $(( ($(stat -c %%s $x) / 2) )) $x; done",
             f->dir);
    assert_int_equal(system(cmd), 0);
    reopen(f);
    log_set_level(CYLOG_INFO);
    check_part(f, 10, 0, 100);
    check_part(f, 11, 0, 100);
}

/* Flip one byte in the middle of snapshot `pos`. */
static void damage_snapshot(struct fixture *f, uint64_t pos)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/snap/%020llu.snap", f->dir, (unsigned long long)pos);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    off_t size = lseek(fd, 0, SEEK_END);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, size / 2), 1);
    b ^= 0x5A;
    assert_int_equal(pwrite(fd, &b, 1, size / 2), 1);
    close(fd);
}

/* A damaged newest snapshot must never displace the valid fallback: after
 * recovering from the older one, the next checkpoint keeps the older one. */
static void test_damaged_snapshot_keeps_valid_fallback(void **state)
{
    struct fixture *f = *state;
    reopen(f);
    uint64_t parts[1] = {2};
    publish(f, parts, 1, 3);
    assert_int_equal(store_checkpoint(f->s), 0);
    uint64_t a = journal_end(store_journal(f->s));
    publish(f, parts, 1, 3);
    assert_int_equal(store_checkpoint(f->s), 0);
    uint64_t b = journal_end(store_journal(f->s));
    assert_int_equal(store_close(f->s), 0); /* nothing new: no third checkpoint */
    f->s = NULL;
    damage_snapshot(f, b);
    log_set_level(CYLOG_ERROR);
    reopen(f); /* falls back to a, replays the rest */
    check_part(f, 2, 0, 6);
    publish(f, parts, 1, 3);
    assert_int_equal(store_checkpoint(f->s), 0);
    uint64_t c = journal_end(store_journal(f->s));
    char snapdir[4200];
    snprintf(snapdir, sizeof snapdir, "%s/snap", f->dir);
    uint64_t have[4];
    int n = snapshot_list(NULL, snapdir, have, 4);
    assert_int_equal(n, 2);
    assert_int_equal(have[0], a); /* the valid fallback, not the damaged b */
    assert_int_equal(have[1], c);
    assert_int_equal(store_close(f->s), 0);
    f->s = NULL;
    damage_snapshot(f, c);
    reopen(f); /* c is damaged too: a still recovers everything */
    log_set_level(CYLOG_INFO);
    check_part(f, 2, 0, 9);
}

static void test_lock(void **state)
{
    struct fixture *f = *state;
    reopen(f);
    struct store *s2 = NULL;
    log_set_level(CYLOG_OFF);
    assert_int_equal(store_open(&f->cfg, NULL, &s2), CY_ELOCKED);
    log_set_level(CYLOG_INFO);
    assert_null(s2);
}

static void test_retention(void **state)
{
    struct fixture *f = *state;
    f->cfg.segment_bytes = 4096;
    reopen(f);
    uint64_t parts[1] = {5};
    for (int i = 0; i < 200; i++)
        publish(f, parts, 1, 2);
    int deleted;
    /* No checkpoint yet: nothing may go. */
    assert_int_equal(store_retain(f->s, f->ts, 0, 1, &deleted), 0);
    assert_int_equal(deleted, 0);
    assert_int_equal(store_checkpoint(f->s), 0);
    assert_int_equal(store_checkpoint(f->s), 0);
    /* By bytes: keep at most ~16 KiB. */
    assert_int_equal(store_retain(f->s, f->ts, 0, 16384, &deleted), 0);
    assert_true(deleted > 0);
    struct store_stats st;
    store_get_stats(f->s, &st);
    assert_true(st.journal_end - st.journal_start <= 16384 + 8192);
    uint64_t first, next;
    assert_int_equal(store_part_first(f->s, 5, &first), 0);
    assert_int_equal(store_part_next(f->s, 5, &next), 0);
    assert_true(first > 0);
    assert_int_equal(next, 400);
    struct buf b = BUF_INIT;
    assert_int_equal(store_read_msg(f->s, 5, first - 1, &b, NULL), CY_ERANGE);
    buf_free(&b);
    check_part(f, 5, first, 400);
    /* By age: everything older than the newest few ms goes, except what the
     * active segment holds. */
    publish(f, parts, 1, 2);
    assert_int_equal(store_checkpoint(f->s), 0);
    assert_int_equal(store_checkpoint(f->s), 0);
    assert_int_equal(store_retain(f->s, f->ts, 1, 0, &deleted), 0);
    assert_true(deleted > 0);
    assert_int_equal(store_part_first(f->s, 5, &first), 0);
    check_part(f, 5, first, 402);
    /* Offsets are never reused, also after a restart. */
    reopen(f);
    assert_int_equal(store_part_next(f->s, 5, &next), 0);
    assert_int_equal(next, 402);
    check_part(f, 5, first, 402);
    publish(f, parts, 1, 1);
    check_part(f, 5, first, 403);
}

static void test_seek_time(void **state)
{
    struct fixture *f = *state;
    reopen(f);
    uint64_t parts[1] = {4};
    uint64_t ts_at[50];
    for (int i = 0; i < 50; i++) {
        ts_at[i] = f->ts + 1;
        publish(f, parts, 1, 2);
        f->ts += 10;
    }
    uint64_t off;
    assert_int_equal(store_part_seek_time(f->s, 4, 0, &off), 0);
    assert_int_equal(off, 0);
    assert_int_equal(store_part_seek_time(f->s, 4, ts_at[20], &off), 0);
    assert_int_equal(off, 40);
    assert_int_equal(store_part_seek_time(f->s, 4, ts_at[20] + 1, &off), 0);
    assert_int_equal(off, 42);
    assert_int_equal(store_part_seek_time(f->s, 4, UINT64_MAX, &off), 0);
    assert_int_equal(off, 100);
}

/*
 * A checkpoint started by store_maybe_checkpoint runs on its own thread: the
 * store goes on taking publishes and commands meanwhile; the checkpoint
 * covers the position at its start (state and indexes as they were then),
 * and recovery from it replays exactly what came after.
 */
static void test_background_checkpoint(void **state)
{
    struct fixture *f = *state;
    f->cfg.checkpoint_bytes = 1000;
    reopen(f);
    uint64_t parts[2] = {1, 2};
    for (int i = 0; i < 10; i++) {
        publish(f, parts, 2, 3);
        command(f);
    }
    uint64_t at = journal_end(store_journal(f->s));
    assert_false(store_checkpoint_running(f->s));
    assert_int_equal(store_maybe_checkpoint(f->s, 0), 0); /* due by bytes */
    assert_true(store_checkpoint_running(f->s));
    for (int i = 0; i < 5; i++) { /* while it runs */
        publish(f, parts, 2, 3);
        command(f);
    }
    assert_int_equal(store_checkpoint_wait(f->s), 0);
    assert_false(store_checkpoint_running(f->s));
    struct store_stats st;
    store_get_stats(f->s, &st);
    assert_int_equal(st.checkpoints, 1);
    assert_int_equal(st.last_checkpoint_pos, at);
    /* A crash now (a copy of the directory, the store still open): recovery
     * starts from that checkpoint and replays the five rounds after it. */
    char cmd[8192];
    char *copy = tu_tempdir("store-bg");
    snprintf(cmd, sizeof cmd, "cp -a %s/. %s/ && rm -f %s/LOCK", f->dir, copy, copy);
    assert_int_equal(system(cmd), 0);
    struct store_config c2 = f->cfg;
    c2.dir = copy;
    struct sm m2 = {0};
    struct store_client cl2 = {&m2, sm_restore, sm_replay, sm_save};
    struct store *s2;
    assert_int_equal(store_open(&c2, &cl2, &s2), 0);
    assert_int_equal(m2.restored_from, 10);
    assert_int_equal(m2.commands, 15);
    assert_int_equal(m2.replays, 10); /* 5 publishes + 5 commands */
    struct fixture g = *f;
    g.s = s2;
    check_part(&g, 1, 0, 45);
    check_part(&g, 2, 0, 45);
    assert_int_equal(store_close(s2), 0);
    tu_rmtree(copy);
    /* Closing with a checkpoint in flight waits for it, then checkpoints. */
    publish(f, parts, 2, 3);
    assert_int_equal(store_maybe_checkpoint(f->s, 0), 0);
    reopen(f);
    assert_int_equal(f->sm.restored_from, 15);
    assert_int_equal(f->sm.replays, 0);
    check_part(f, 1, 0, 48);
}

/*
 * A background checkpoint whose index sync fails leaves the previous
 * checkpoint in force, keeps the store writable, and the next checkpoint
 * syncs those indexes again (their marks were restored).
 */
static void test_background_checkpoint_failure(void **state)
{
    struct fixture *f = *state;
    struct faultfs *fs = faultfs_new(11);
    f->cfg.fo = faultfs_ops(fs);
    f->cfg.dir = "/bg";
    f->cfg.checkpoint_bytes = 1000;
    reopen(f);
    uint64_t parts[1] = {6};
    for (int i = 0; i < 10; i++)
        publish(f, parts, 1, 2);
    /* Every sync from here on fails once: the first one the checkpoint's
     * thread makes is an index file's (the journal is already durable). */
    unsigned syncs = faultfs_sync_count(fs);
    faultfs_fail_sync_at(fs, syncs + 1, -EIO);
    log_set_level(CYLOG_OFF);
    assert_int_equal(store_maybe_checkpoint(f->s, 0), 0);
    assert_int_equal(store_checkpoint_wait(f->s), -EIO);
    log_set_level(CYLOG_INFO);
    struct store_stats st;
    store_get_stats(f->s, &st);
    assert_int_equal(st.checkpoints, 0);
    /* The next attempt syncs the index (marked again) and succeeds. */
    syncs = faultfs_sync_count(fs);
    assert_int_equal(store_maybe_checkpoint(f->s, 0), 0);
    assert_int_equal(store_checkpoint_wait(f->s), 0);
    assert_true(faultfs_sync_count(fs) >= syncs + 3); /* index, snapshot file, directory */
    store_get_stats(f->s, &st);
    assert_int_equal(st.checkpoints, 1);
    publish(f, parts, 1, 2); /* still writable */
    assert_int_equal(store_checkpoint(f->s), 0);
    /* Power loss now (the next sync never happens, nothing after it either):
     * everything published is there, from that checkpoint alone. */
    faultfs_crash_at_sync(fs, faultfs_sync_count(fs) + 1);
    log_set_level(CYLOG_OFF);
    store_close(f->s);
    log_set_level(CYLOG_INFO);
    f->s = NULL;
    faultfs_crash(fs, CRASH_DROP);
    faultfs_clear_faults(fs);
    reopen(f);
    assert_int_equal(f->sm.replays, 0); /* all of it in the checkpoint */
    check_part(f, 6, 0, 22);
    assert_int_equal(store_close(f->s), 0);
    f->s = NULL;
    faultfs_free(fs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_publish_and_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_without_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_bounds_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_rebuilt_when_missing_or_damaged, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_snapshot_keeps_valid_fallback, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seek_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_background_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_background_checkpoint_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
