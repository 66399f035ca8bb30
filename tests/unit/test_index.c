/* test_index.c — the per-partition offset index (src/storage/index.c). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/buf.h"
#include "base/crc32c.h"
#include "base/log.h"
#include "coyote.h"
#include "storage/index.h"
#include "testutil.h"

/* --- helpers -------------------------------------------------------------- */

/* A deterministic entry for offset o: positions and timestamps increase. */
static struct index_entry entry_for(uint64_t o)
{
    struct index_entry e = {
        .pos = 4096 + o * 100,
        .timestamp_ms = 1700000000000ull + o / 3,
        .len = (uint32_t)(o * 7 + 1),
        .key_hash = (uint32_t)(o * 2654435761u),
        .msg_crc = (uint32_t)~o,
    };
    return e;
}

static void assert_entry_eq(const struct index_entry *a, const struct index_entry *b)
{
    assert_int_equal(a->pos, b->pos);
    assert_int_equal(a->timestamp_ms, b->timestamp_ms);
    assert_int_equal(a->len, b->len);
    assert_int_equal(a->key_hash, b->key_hash);
    assert_int_equal(a->msg_crc, b->msg_crc);
}

static void check_entry(struct index *ix, uint64_t o)
{
    struct index_entry want = entry_for(o), got;
    assert_int_equal(index_lookup(ix, o, &got), 0);
    assert_entry_eq(&got, &want);
}

static struct index_set *open_set(const char *dir, unsigned max_open, unsigned buffer,
                                  const struct fileops *fo)
{
    struct index_set_config cfg = {
        .fo = fo, .dir = dir, .max_open_files = max_open, .append_buffer = buffer};
    struct index_set *set = NULL;
    assert_int_equal(index_set_open(&cfg, &set), 0);
    assert_non_null(set);
    return set;
}

static void append_range(struct index *ix, uint64_t from, uint64_t to)
{
    for (uint64_t o = from; o < to; o++) {
        struct index_entry e = entry_for(o);
        assert_int_equal(index_append(ix, o, &e), 0);
    }
}

static char *idx_path(const char *dir, uint64_t id)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%016" PRIx64 ".idx", dir, id);
    return path;
}

static off_t file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    return st.st_size;
}

/* The format written independently of index.c, from the spec. */
static void enc_header(uint8_t *p, uint64_t id, uint64_t base)
{
    memset(p, 0, INDEX_HEADER_SIZE);
    le_put32(p, 0x58495943u);
    le_put16(p + 4, 1);
    le_put16(p + 6, INDEX_HEADER_SIZE);
    le_put64(p + 8, id);
    le_put64(p + 16, base);
    le_put32(p + 60, crc32c(0, p, 60));
}

static void enc_entry(uint8_t *p, const struct index_entry *e)
{
    le_put64(p, e->pos);
    le_put64(p + 8, e->timestamp_ms);
    le_put32(p + 16, e->len);
    le_put32(p + 20, e->key_hash);
    le_put32(p + 24, e->msg_crc);
    le_put32(p + 28, crc32c(0, p, 28));
}

static void write_at(const char *path, const void *p, size_t n, off_t off)
{
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, p, n, off), (ssize_t)n);
    close(fd);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the DIR's own descriptor */
}

/* Captures the last warning. */
static char last_warn[512];
static void warn_hook(void *arg, enum log_level level, const char *line)
{
    (void)arg;
    if (level >= CYLOG_WARN)
        snprintf(last_warn, sizeof last_warn, "%s", line);
}

/* A fileops wrapper around fileops_posix that counts calls and fails the N-th
 * pwrite / datasync. */
struct counting {
    unsigned pwrites, datasyncs, dirsyncs, opens;
    unsigned fail_pwrite_at; /* 1-based over pwrites; 0: never */
    unsigned fail_pwrites;   /* how many consecutive pwrites fail from there */
};
static struct counting cnt;

static int c_open(void *ctx, const char *path, int flags, unsigned mode)
{
    cnt.opens++;
    return fileops_posix.open(ctx, path, flags, mode);
}
static ssize_t c_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off)
{
    cnt.pwrites++;
    if (cnt.fail_pwrite_at && cnt.pwrites >= cnt.fail_pwrite_at &&
        cnt.pwrites < cnt.fail_pwrite_at + cnt.fail_pwrites)
        return -ENOSPC;
    return fileops_posix.pwrite(ctx, fd, buf, n, off);
}
static int c_datasync(void *ctx, int fd)
{
    cnt.datasyncs++;
    return fileops_posix.datasync(ctx, fd);
}
static int c_sync_dir(void *ctx, const char *path)
{
    cnt.dirsyncs++;
    return fileops_posix.sync_dir(ctx, path);
}

static struct fileops counting_ops(void)
{
    struct fileops fo = fileops_posix;
    fo.open = c_open;
    fo.pwrite = c_pwrite;
    fo.datasync = c_datasync;
    fo.sync_dir = c_sync_dir;
    memset(&cnt, 0, sizeof cnt);
    return fo;
}

/* --- tests ---------------------------------------------------------------- */

static void test_zero_entry_is_invalid(void **state)
{
    (void)state;
    uint8_t zero[28] = {0};
    assert_int_not_equal(crc32c(0, zero, sizeof zero), 0);
    assert_int_not_equal(crc32c_sw(0, zero, sizeof zero), 0);
}

static void test_append_lookup_across_buffer_and_reopen(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    const uint64_t base = 1000, id = 7;
    struct index_set *set = open_set(dir, 0, 8, NULL);
    struct index *ix;
    assert_int_equal(index_exists(set, id), 0);
    assert_int_equal(index_get(set, id, base, &ix), 0);
    assert_int_equal(index_exists(set, id), 1);
    assert_int_equal(index_id(ix), id);
    assert_int_equal(index_base(ix), base);
    assert_int_equal(index_next(ix), base);
    for (uint64_t o = base; o < base + 100; o++) {
        struct index_entry e = entry_for(o);
        assert_int_equal(index_append(ix, o, &e), 0);
        check_entry(ix, o); /* visible at once, buffered or not */
        check_entry(ix, base + (o - base) / 2);
    }
    for (uint64_t o = base; o < base + 100; o++)
        check_entry(ix, o);
    struct index *again;
    assert_int_equal(index_get(set, id, 0, &again), 0);
    assert_ptr_equal(again, ix);
    index_set_close(set);
    assert_int_equal(file_size(idx_path(dir, id)), 64 + 100 * 32);

    set = open_set(dir, 0, 8, NULL);
    assert_int_equal(index_exists(set, id), 1);
    assert_int_equal(index_get(set, id, 5, &ix), 0); /* base comes from the file */
    assert_int_equal(index_base(ix), base);
    assert_int_equal(index_next(ix), base + 100);
    for (uint64_t o = base; o < base + 100; o++)
        check_entry(ix, o);
    append_range(ix, base + 100, base + 150);
    for (uint64_t o = base; o < base + 150; o++)
        check_entry(ix, o);
    index_set_close(set);

    set = open_set(dir, 0, 8, NULL);
    assert_int_equal(index_get(set, id, 5, &ix), 0);
    assert_int_equal(index_next(ix), base + 150);
    for (uint64_t o = base; o < base + 150; o++)
        check_entry(ix, o);
    index_set_close(set);
    tu_rmtree(dir);
}

static void test_format_matches_spec(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    const uint64_t id = 0x0123456789abcdefull, base = 77;
    uint8_t file[64 + 3 * 32];
    enc_header(file, id, base);
    for (int i = 0; i < 3; i++) {
        struct index_entry e = entry_for(base + (uint64_t)i);
        enc_entry(file + 64 + 32 * i, &e);
    }
    /* What index.c writes is byte for byte the independent encoding. */
    struct index_set *set = open_set(dir, 0, 0, NULL);
    struct index *ix;
    assert_int_equal(index_get(set, id, base, &ix), 0);
    append_range(ix, base, base + 3);
    index_set_close(set);
    uint8_t got[sizeof file + 1];
    int fd = open(idx_path(dir, id), O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, got, sizeof got), (ssize_t)sizeof file);
    close(fd);
    assert_memory_equal(got, file, sizeof file);
    assert_memory_equal(got, "CYIX", 4);
    tu_rmtree(dir);
}

static void test_out_of_order_append(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    struct index_set *set = open_set(dir, 0, 4, NULL);
    struct index *ix;
    assert_int_equal(index_get(set, 1, 10, &ix), 0);
    struct index_entry e = entry_for(10);
    assert_int_equal(index_append(ix, 11, &e), CY_EINVAL);
    assert_int_equal(index_append(ix, 9, &e), CY_EINVAL);
    assert_int_equal(index_append(ix, 10, &e), 0);
    assert_int_equal(index_append(ix, 10, &e), CY_EINVAL);
    assert_int_equal(index_append(ix, 12, &e), CY_EINVAL);
    /* Positions and timestamps must not go back (load would cut there). */
    struct index_entry back = e;
    back.pos--;
    assert_int_equal(index_append(ix, 11, &back), CY_EINVAL);
    back = e;
    back.timestamp_ms--;
    assert_int_equal(index_append(ix, 11, &back), CY_EINVAL);
    assert_int_equal(index_append(ix, 11, &e), 0); /* equal is fine */
    assert_int_equal(index_next(ix), 12);
    index_set_close(set);
    tu_rmtree(dir);
}

static void test_lookup_out_of_range(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    struct index_set *set = open_set(dir, 0, 4, NULL);
    struct index *ix;
    struct index_entry e;
    assert_int_equal(index_get(set, 1, 50, &ix), 0);
    assert_int_equal(index_lookup(ix, 50, &e), CY_ERANGE);
    assert_int_equal(index_lookup(ix, 0, &e), CY_ERANGE);
    append_range(ix, 50, 60);
    assert_int_equal(index_lookup(ix, 49, &e), CY_ERANGE);
    assert_int_equal(index_lookup(ix, 60, &e), CY_ERANGE);
    assert_int_equal(index_lookup(ix, UINT64_MAX, &e), CY_ERANGE);
    assert_int_equal(index_lookup(ix, 59, &e), 0);
    uint64_t off;
    assert_int_equal(index_seek_time(ix, UINT64_MAX, &off), 0);
    assert_int_equal(off, 60);
    assert_int_equal(index_seek_pos(ix, 0, &off), 0);
    assert_int_equal(off, 50);
    index_set_close(set);
    tu_rmtree(dir);
}

static void test_seek_property(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    uint64_t rnd = 0x5eed;
    for (int round = 0; round < 40; round++) {
        unsigned buffer = 1 + (unsigned)(tu_rand(&rnd) % 200);
        uint64_t n = tu_rand(&rnd) % (round < 5 ? 3 : 5000);
        uint64_t base = tu_rand(&rnd) % 1000000;
        uint64_t id = (uint64_t)round;
        struct index_entry *es = calloc(n ? n : 1, sizeof *es);
        assert_non_null(es);
        uint64_t pos = tu_rand(&rnd) % 1000, ts = tu_rand(&rnd) % 1000;
        for (uint64_t i = 0; i < n; i++) {
            /* Runs of equal values, so "first >=" is exercised. */
            if (tu_rand(&rnd) % 3 == 0)
                pos += tu_rand(&rnd) % 50;
            if (tu_rand(&rnd) % 2 == 0)
                ts += tu_rand(&rnd) % 5;
            es[i] = (struct index_entry){pos, ts, (uint32_t)i, (uint32_t)tu_rand(&rnd), 0};
        }
        struct index_set *set = open_set(dir, 2, buffer, NULL);
        struct index *ix;
        assert_int_equal(index_get(set, id, base, &ix), 0);
        for (uint64_t i = 0; i < n; i++)
            assert_int_equal(index_append(ix, base + i, &es[i]), 0);
        if (round % 2) { /* half of the rounds read back from the file */
            index_set_close(set);
            set = open_set(dir, 2, buffer, NULL);
            assert_int_equal(index_get(set, id, 0, &ix), 0);
            assert_int_equal(index_base(ix), base);
        }
        assert_int_equal(index_next(ix), base + n);
        uint64_t maxv = (pos > ts ? pos : ts) + 10;
        for (int q = 0; q < 300; q++) {
            uint64_t t = tu_rand(&rnd) % maxv;
            uint64_t want_t = n, want_p = n;
            for (uint64_t i = n; i-- > 0;) {
                if (es[i].timestamp_ms >= t)
                    want_t = i;
                if (es[i].pos >= t)
                    want_p = i;
            }
            uint64_t got;
            assert_int_equal(index_seek_time(ix, t, &got), 0);
            assert_int_equal(got, base + want_t);
            assert_int_equal(index_seek_pos(ix, t, &got), 0);
            assert_int_equal(got, base + want_p);
            if (n) {
                uint64_t k = tu_rand(&rnd) % n;
                struct index_entry e;
                assert_int_equal(index_lookup(ix, base + k, &e), 0);
                assert_entry_eq(&e, &es[k]);
            }
        }
        index_set_close(set);
        free(es);
    }
    tu_rmtree(dir);
}

/* Write `n` entries for partition id with base, close. */
static void make_index(const char *dir, uint64_t id, uint64_t base, uint64_t n)
{
    struct index_set *set = open_set(dir, 0, 16, NULL);
    struct index *ix;
    assert_int_equal(index_get(set, id, base, &ix), 0);
    append_range(ix, base, base + n);
    index_set_close(set);
}

static uint64_t reload_next(const char *dir, uint64_t id)
{
    struct index_set *set = open_set(dir, 0, 16, NULL);
    struct index *ix;
    assert_int_equal(index_get(set, id, 0, &ix), 0);
    uint64_t next = index_next(ix);
    for (uint64_t o = index_base(ix); o < next; o++)
        check_entry(ix, o);
    index_set_close(set);
    return next;
}

static void test_garbage_tail_cut(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    const uint64_t id = 3, base = 200;
    make_index(dir, id, base, 100);
    const char *path = idx_path(dir, id);

    /* Zeros as a crash may leave them, plus a torn partial entry. */
    uint8_t zeros[5 * 32 + 10] = {0};
    write_at(path, zeros, sizeof zeros, 64 + 100 * 32);
    last_warn[0] = 0;
    assert_int_equal(reload_next(dir, id), base + 100);
    assert_non_null(strstr(last_warn, "dropped 5 trailing entries"));
    assert_int_equal(file_size(path), 64 + 100 * 32);

    /* Random garbage. */
    uint64_t rnd = 99;
    uint8_t junk[7 * 32];
    tu_fill(&rnd, junk, sizeof junk);
    write_at(path, junk, sizeof junk, 64 + 100 * 32);
    assert_int_equal(reload_next(dir, id), base + 100);
    assert_non_null(strstr(last_warn, "dropped 7 trailing entries"));
    assert_int_equal(file_size(path), 64 + 100 * 32);

    /* A well-formed entry whose timestamp goes back is a bad one too. */
    struct index_entry e = entry_for(base + 100);
    e.timestamp_ms = 1;
    uint8_t p[32];
    enc_entry(p, &e);
    write_at(path, p, sizeof p, 64 + 100 * 32);
    assert_int_equal(reload_next(dir, id), base + 100);

    /* And appending after a cut continues normally. */
    struct index_set *set = open_set(dir, 0, 16, NULL);
    struct index *ix;
    assert_int_equal(index_get(set, id, 0, &ix), 0);
    append_range(ix, base + 100, base + 130);
    index_set_close(set);
    assert_int_equal(reload_next(dir, id), base + 130);
    tu_rmtree(dir);
}

static void test_corrupt_entry_in_middle(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    const uint64_t id = 4, base = 0;
    make_index(dir, id, base, 5000); /* several 64 KiB chunks on load */
    const char *path = idx_path(dir, id);
    uint8_t b = 0xff;
    write_at(path, &b, 1, 64 + 3000 * 32 + 5);
    assert_int_equal(reload_next(dir, id), 3000);
    assert_int_equal(file_size(path), 64 + 3000 * 32);

    /* A corrupt entry found by a lookup (after load) is CY_ECORRUPT. */
    struct index_set *set = open_set(dir, 0, 16, NULL);
    struct index *ix;
    assert_int_equal(index_get(set, id, 0, &ix), 0);
    write_at(path, &b, 1, 64 + 10 * 32);
    struct index_entry e;
    assert_int_equal(index_lookup(ix, 10, &e), CY_ECORRUPT);
    check_entry(ix, 2999);
    index_set_close(set);
    assert_int_equal(reload_next(dir, id), 10);
    tu_rmtree(dir);
}

static void test_bad_header(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    const char *path = idx_path(dir, 5);
    uint8_t h[64];
    struct index_set *set = open_set(dir, 0, 0, NULL);
    struct index *ix;

    enc_header(h, 5, 0);
    h[0] = 'X';
    write_at(path, h, sizeof h, 0);
    assert_int_equal(index_get(set, 5, 0, &ix), CY_EFORMAT);
    assert_int_equal(file_size(path), 64); /* left alone */

    enc_header(h, 5, 0);
    le_put16(h + 4, 2);
    le_put32(h + 60, crc32c(0, h, 60));
    write_at(path, h, sizeof h, 0);
    assert_int_equal(index_get(set, 5, 0, &ix), CY_EFORMAT);

    enc_header(h, 5, 0);
    h[20] ^= 1; /* base, under the CRC */
    write_at(path, h, sizeof h, 0);
    assert_int_equal(index_get(set, 5, 0, &ix), CY_ECORRUPT);

    enc_header(h, 6, 0); /* a valid header for another partition */
    write_at(path, h, sizeof h, 0);
    assert_int_equal(index_get(set, 5, 0, &ix), CY_ECORRUPT);

    memset(h, 0, sizeof h); /* a zeroed header is damage, not a foreign format */
    write_at(path, h, sizeof h, 0);
    assert_int_equal(index_get(set, 5, 0, &ix), CY_ECORRUPT);

    assert_int_equal(truncate(path, 10), 0);
    assert_int_equal(index_get(set, 5, 0, &ix), CY_ECORRUPT);

    /* The store's answer: remove and rebuild. */
    assert_int_equal(index_remove(set, 5), 0);
    assert_int_equal(file_size(path), -1);
    assert_int_equal(index_get(set, 5, 9, &ix), 0);
    assert_int_equal(index_base(ix), 9);
    index_set_close(set);
    tu_rmtree(dir);
}

static void test_truncate(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    const uint64_t id = 8, base = 100;
    struct index_set *set = open_set(dir, 0, 16, NULL);
    struct index *ix;
    struct index_entry e;
    assert_int_equal(index_get(set, id, base, &ix), 0);
    append_range(ix, base, base + 100); /* 96 written, 4 buffered */
    assert_int_equal(index_truncate(ix, base - 1), CY_EINVAL);
    assert_int_equal(index_truncate(ix, base + 101), CY_EINVAL);
    assert_int_equal(index_truncate(ix, base + 100), 0);

    assert_int_equal(index_truncate(ix, base + 98), 0); /* inside the buffer */
    assert_int_equal(index_next(ix), base + 98);
    assert_int_equal(index_lookup(ix, base + 98, &e), CY_ERANGE);
    check_entry(ix, base + 97);
    append_range(ix, base + 98, base + 100);

    check_entry(ix, base + 60);                         /* fill the read cache past the cut */
    assert_int_equal(index_truncate(ix, base + 50), 0); /* inside the file */
    assert_int_equal(index_next(ix), base + 50);
    assert_int_equal(index_lookup(ix, base + 60, &e), CY_ERANGE);
    assert_int_equal(file_size(idx_path(dir, id)), 64 + 50 * 32);
    /* Appending after the cut checks order against the new last entry. */
    struct index_entry back = entry_for(base + 49);
    back.pos--;
    assert_int_equal(index_append(ix, base + 50, &back), CY_EINVAL);
    struct index_entry other = entry_for(base + 50);
    other.pos += 1;
    assert_int_equal(index_append(ix, base + 50, &other), 0);
    assert_int_equal(index_lookup(ix, base + 50, &e), 0);
    assert_entry_eq(&e, &other);
    assert_int_equal(index_truncate(ix, base + 50), 0);
    /* New entries at the cut offsets, written to the file: the read cache
     * (filled above from the old file) must not answer with the old ones. */
    for (uint64_t o = base + 50; o < base + 80; o++) {
        struct index_entry n = entry_for(o);
        n.len += 1000;
        assert_int_equal(index_append(ix, o, &n), 0);
    }
    assert_int_equal(index_set_flush(set), 0);
    assert_int_equal(index_lookup(ix, base + 60, &e), 0);
    assert_int_equal(e.len, entry_for(base + 60).len + 1000);
    assert_int_equal(index_truncate(ix, base + 50), 0);
    append_range(ix, base + 50, base + 80);
    assert_int_equal(index_set_flush(set), 0);
    check_entry(ix, base + 60);
    index_set_close(set);
    assert_int_equal(reload_next(dir, id), base + 80);

    set = open_set(dir, 0, 16, NULL);
    assert_int_equal(index_get(set, id, 0, &ix), 0);
    assert_int_equal(index_truncate(ix, base), 0);
    assert_int_equal(index_next(ix), base);
    struct index_entry low = {1, 1, 1, 1, 1}; /* anything goes on an empty index */
    assert_int_equal(index_append(ix, base, &low), 0);
    index_set_close(set);
    assert_int_equal(file_size(idx_path(dir, id)), 64 + 32);
    tu_rmtree(dir);
}

static void test_drop_before(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    const uint64_t id = 9, base = 500, n = 10000;
    const char *path = idx_path(dir, id);
    struct fileops fo = counting_ops();
    struct index_set *set = open_set(dir, 0, 64, &fo);
    struct index *ix;
    struct index_entry e;
    assert_int_equal(index_get(set, id, base, &ix), 0);
    append_range(ix, base, base + n);
    assert_int_equal(index_drop_before(ix, base + n + 1), CY_EINVAL);
    assert_int_equal(index_drop_before(ix, 0), 0);

    /* Frees less than half: nothing on disk changes. */
    assert_int_equal(index_drop_before(ix, base + 4000), 0);
    assert_int_equal(index_base(ix), base);
    check_entry(ix, base);

    /* Frees 60%: rewritten with the new base. */
    unsigned syncs = cnt.datasyncs;
    assert_int_equal(index_drop_before(ix, base + 6000), 0);
    assert_int_equal(cnt.datasyncs, syncs + 1);
    assert_int_equal(index_base(ix), base + 6000);
    assert_int_equal(index_next(ix), base + n);
    assert_int_equal(file_size(path), 64 + 4000 * 32);
    assert_int_equal(index_lookup(ix, base + 5999, &e), CY_ERANGE);
    assert_int_equal(index_lookup(ix, base, &e), CY_ERANGE);
    for (uint64_t o = base + 6000; o < base + n; o++)
        check_entry(ix, o);
    uint64_t off;
    assert_int_equal(index_seek_pos(ix, 0, &off), 0);
    assert_int_equal(off, base + 6000);
    append_range(ix, base + n, base + n + 10);
    index_set_close(set);
    assert_int_equal(file_size(path), 64 + 4010 * 32);

    set = open_set(dir, 0, 64, NULL);
    assert_int_equal(index_get(set, id, 0, &ix), 0);
    assert_int_equal(index_base(ix), base + 6000);
    assert_int_equal(index_next(ix), base + n + 10);
    for (uint64_t o = base + 6000; o < base + n + 10; o++)
        check_entry(ix, o);
    assert_int_equal(index_lookup(ix, base + 10, &e), CY_ERANGE);

    /* Dropping everything leaves an empty index at next. */
    assert_int_equal(index_drop_before(ix, base + n + 10), 0);
    assert_int_equal(index_base(ix), base + n + 10);
    assert_int_equal(index_next(ix), base + n + 10);
    assert_int_equal(file_size(path), 64);
    append_range(ix, base + n + 10, base + n + 20);
    index_set_close(set);
    assert_int_equal(reload_next(dir, id), base + n + 20);

    /* A small index (< 64 KiB freed) is never rewritten. */
    make_index(dir, 10, 0, 1000);
    set = open_set(dir, 0, 64, NULL);
    assert_int_equal(index_get(set, 10, 0, &ix), 0);
    assert_int_equal(index_drop_before(ix, 900), 0);
    assert_int_equal(index_base(ix), 0);
    check_entry(ix, 0);
    index_set_close(set);
    assert_int_equal(file_size(idx_path(dir, 10)), 64 + 1000 * 32);

    /* A stale temp file from a crashed rewrite is removed at open. */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", idx_path(dir, 10));
    write_at(tmp, "x", 1, 0);
    set = open_set(dir, 0, 64, NULL);
    assert_int_equal(file_size(tmp), -1);
    index_set_close(set);
    tu_rmtree(dir);
}

static void test_lru_bound(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    const unsigned n_ix = 50, per = 200;
    int fds0 = count_fds();
    struct index_set *set = open_set(dir, 4, 8, NULL);
    struct index *ixs[50];
    for (unsigned i = 0; i < n_ix; i++) {
        assert_int_equal(index_get(set, 1000 + i, i * 10, &ixs[i]), 0);
        assert_true(count_fds() - fds0 <= 4);
    }
    for (unsigned k = 0; k < per; k++) {
        for (unsigned i = 0; i < n_ix; i++) {
            uint64_t o = i * 10 + k;
            struct index_entry e = entry_for(o);
            assert_int_equal(index_append(ixs[i], o, &e), 0);
            if (k % 7 == 1)
                check_entry(ixs[(i * 13) % n_ix], (i * 13) % n_ix * 10);
        }
        assert_true(count_fds() - fds0 <= 4);
        if (k == per / 2) {
            assert_int_equal(index_set_sync(set), 0);
            assert_true(count_fds() - fds0 <= 4);
        }
    }
    for (unsigned i = 0; i < n_ix; i++)
        for (unsigned k = 0; k < per; k += 17)
            check_entry(ixs[i], i * 10 + k);
    assert_true(count_fds() - fds0 <= 4);
    index_set_close(set);
    assert_int_equal(count_fds(), fds0);

    set = open_set(dir, 4, 8, NULL);
    for (unsigned i = 0; i < n_ix; i++) {
        struct index *ix;
        assert_int_equal(index_get(set, 1000 + i, 0, &ix), 0);
        assert_int_equal(index_base(ix), i * 10);
        assert_int_equal(index_next(ix), i * 10 + per);
        for (unsigned k = 0; k < per; k++)
            check_entry(ix, i * 10 + k);
        assert_true(count_fds() - fds0 <= 4);
    }
    index_set_close(set);
    tu_rmtree(dir);
}

struct id_list {
    uint64_t ids[16];
    int n;
};

static int collect(void *arg, uint64_t id)
{
    struct id_list *l = arg;
    if (l->n < 16)
        l->ids[l->n] = id;
    l->n++;
    return 0;
}

static int stop_at_first(void *arg, uint64_t id)
{
    (void)arg;
    (void)id;
    return 42;
}

static void test_list_and_remove(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    const uint64_t ids[] = {0, 1, 0xdeadbeefull, UINT64_MAX - 1};
    struct index_set *set = open_set(dir, 0, 0, NULL);
    for (size_t i = 0; i < 4; i++) {
        struct index *ix;
        assert_int_equal(index_get(set, ids[i], 0, &ix), 0);
    }
    struct index *mem_only;
    assert_int_equal(index_get(set, 77, 0, &mem_only), 0);
    assert_int_equal(index_set_flush(set), 0); /* creates the files */
    /* Names that are not index files are ignored. */
    char junk[4200];
    const char *names[] = {"foo", "0123.idx", "00000000000000AA.idx", "00000000000000aa.idx.tmp2",
                           "00000000000000aa.idxx"};
    for (size_t i = 0; i < 5; i++) {
        snprintf(junk, sizeof junk, "%s/%s", dir, names[i]);
        write_at(junk, "x", 1, 0);
    }
    assert_int_equal(index_remove(set, 77), 0);
    assert_int_equal(index_exists(set, 77), 0);

    struct id_list l = {0};
    assert_int_equal(index_set_list(set, collect, &l), 0);
    assert_int_equal(l.n, 4);
    for (size_t i = 0; i < 4; i++) {
        int found = 0;
        for (int j = 0; j < l.n; j++)
            found += l.ids[j] == ids[i];
        assert_int_equal(found, 1);
    }
    assert_int_equal(index_set_list(set, stop_at_first, NULL), 42);

    assert_int_equal(index_remove(set, 0xdeadbeefull), 0);
    assert_int_equal(index_exists(set, 0xdeadbeefull), 0);
    assert_int_equal(file_size(idx_path(dir, 0xdeadbeefull)), -1);
    assert_int_equal(index_remove(set, 12345), 0); /* nothing there: fine */
    index_set_close(set);

    set = open_set(dir, 0, 0, NULL);
    l.n = 0;
    assert_int_equal(index_set_list(set, collect, &l), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(index_exists(set, UINT64_MAX - 1), 1);
    assert_int_equal(index_exists(set, 0xdeadbeefull), 0);
    index_set_close(set);
    tu_rmtree(dir);
}

static void test_sync_counts(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    struct fileops fo = counting_ops();
    struct index_set *set = open_set(dir, 2, 4, &fo);
    struct index *ix[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(index_get(set, (uint64_t)i, 0, &ix[i]), 0);
        append_range(ix[i], 0, 10);
    }
    assert_int_equal(index_set_sync(set), 0);
    assert_int_equal(cnt.datasyncs, 3); /* one was reopened: max_open_files = 2 */
    assert_int_equal(cnt.dirsyncs, 1);  /* three files were created */
    assert_int_equal(index_set_sync(set), 0);
    assert_int_equal(cnt.datasyncs, 3);
    assert_int_equal(cnt.dirsyncs, 1);
    append_range(ix[1], 10, 11);
    assert_int_equal(index_set_sync(set), 0);
    assert_int_equal(cnt.datasyncs, 4);
    assert_int_equal(cnt.dirsyncs, 1);
    /* Appends are buffered: a full buffer is one write. */
    unsigned w = cnt.pwrites;
    append_range(ix[2], 10, 14);
    assert_int_equal(cnt.pwrites, w);
    append_range(ix[2], 14, 15);
    assert_int_equal(cnt.pwrites, w + 1);
    index_set_close(set);
    tu_rmtree(dir);
}

static void test_write_failures(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    struct fileops fo = counting_ops();
    struct index_set *set = open_set(dir, 1, 4, &fo);
    struct index *a, *b;
    assert_int_equal(index_get(set, 1, 0, &a), 0);
    assert_int_equal(index_get(set, 2, 0, &b), 0);
    append_range(a, 0, 4);
    /* The flush of a full buffer fails: the append is refused, nothing lost. */
    cnt.fail_pwrite_at = cnt.pwrites + 1;
    cnt.fail_pwrites = 1;
    struct index_entry e = entry_for(4);
    assert_int_equal(index_append(a, 4, &e), -ENOSPC);
    assert_int_equal(index_next(a), 4);
    for (uint64_t o = 0; o < 4; o++)
        check_entry(a, o);
    assert_int_equal(index_append(a, 4, &e), 0);
    append_range(a, 5, 10);

    /* b's first write must evict a (max_open_files = 1), whose buffered
     * entries (8, 9) cannot be written: they stay in memory. */
    append_range(b, 0, 4);
    cnt.fail_pwrite_at = cnt.pwrites + 1;
    cnt.fail_pwrites = 1;
    e = entry_for(4);
    assert_int_equal(index_append(b, 4, &e), 0);
    assert_int_equal(cnt.pwrites, cnt.fail_pwrite_at + 1);
    for (uint64_t o = 0; o < 10; o++)
        check_entry(a, o);
    for (uint64_t o = 0; o < 5; o++)
        check_entry(b, o);
    assert_int_equal(index_set_sync(set), 0);
    index_set_close(set);
    assert_int_equal(reload_next(dir, 1), 10);
    assert_int_equal(reload_next(dir, 2), 5);

    /* A failed rewrite leaves the old file in force and no temp behind. */
    make_index(dir, 3, 0, 5000);
    fo = counting_ops();
    set = open_set(dir, 4, 64, &fo);
    struct index *c;
    assert_int_equal(index_get(set, 3, 0, &c), 0);
    cnt.fail_pwrite_at = 2; /* the copy of the entries (after the header) */
    cnt.fail_pwrites = 1;
    assert_int_equal(index_drop_before(c, 4000), -ENOSPC);
    assert_int_equal(index_base(c), 0);
    check_entry(c, 0);
    check_entry(c, 4999);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", idx_path(dir, 3));
    assert_int_equal(file_size(tmp), -1);
    assert_int_equal(index_drop_before(c, 4000), 0);
    assert_int_equal(index_base(c), 4000);
    index_set_close(set);
    assert_int_equal(reload_next(dir, 3), 5000);
    tu_rmtree(dir);
}

static void test_large_index_load(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ix");
    const uint64_t n = 1000000;
    struct index_set *set = open_set(dir, 0, 4096, NULL);
    struct index *ix;
    assert_int_equal(index_get(set, 1, 0, &ix), 0);
    append_range(ix, 0, n);
    index_set_close(set);

    set = open_set(dir, 0, 4096, NULL);
    assert_int_equal(index_get(set, 1, 0, &ix), 0);
    assert_int_equal(index_next(ix), n);
    uint64_t rnd = 1;
    for (int i = 0; i < 1000; i++)
        check_entry(ix, tu_rand(&rnd) % n);
    uint64_t off;
    struct index_entry e = entry_for(777777);
    assert_int_equal(index_seek_pos(ix, e.pos, &off), 0);
    assert_int_equal(off, 777777);
    assert_int_equal(index_seek_time(ix, e.timestamp_ms, &off), 0);
    assert_int_equal(off, 777777 / 3 * 3);
    index_set_close(set);
    tu_rmtree(dir);
}

int main(void)
{
    log_set_hook(warn_hook, NULL); /* keeps the expected warnings off the output */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_entry_is_invalid),
        cmocka_unit_test(test_append_lookup_across_buffer_and_reopen),
        cmocka_unit_test(test_format_matches_spec),
        cmocka_unit_test(test_out_of_order_append),
        cmocka_unit_test(test_lookup_out_of_range),
        cmocka_unit_test(test_seek_property),
        cmocka_unit_test(test_garbage_tail_cut),
        cmocka_unit_test(test_corrupt_entry_in_middle),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_truncate),
        cmocka_unit_test(test_drop_before),
        cmocka_unit_test(test_lru_bound),
        cmocka_unit_test(test_list_and_remove),
        cmocka_unit_test(test_sync_counts),
        cmocka_unit_test(test_write_failures),
        cmocka_unit_test(test_large_index_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
