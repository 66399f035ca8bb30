/* test_faultfs.c — the crash model and fault schedule of tests/support/faultfs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four above, as cmocka requires */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coyote.h"
#include "faultfs.h"
#include "testutil.h"

#define RW_CREATE (O_RDWR | O_CREAT)

/* ---- helpers ------------------------------------------------------------ */

static int open_file(const struct fileops *fo, const char *path, int flags)
{
    int fd = fo->open(fo->ctx, path, flags, 0644);
    assert_true(fd >= 0);
    return fd;
}

static void put(const struct fileops *fo, int fd, const void *buf, size_t n, uint64_t off)
{
    assert_int_equal(fo_write_all(fo, fd, buf, n, off), 0);
}

static void put_str(const struct fileops *fo, int fd, const char *s, uint64_t off)
{
    put(fo, fd, s, strlen(s), off);
}

/* The whole current content of path as a NUL-terminated string (caller frees). */
static char *slurp(const struct fileops *fo, const char *path)
{
    uint8_t *data;
    size_t len;
    assert_int_equal(fo_read_file(fo, path, 1 << 20, &data, &len), 0);
    char *s = malloc(len + 1);
    assert_non_null(s);
    memcpy(s, data, len);
    s[len] = '\0';
    free(data);
    return s;
}

static void assert_content(const struct fileops *fo, const char *path, const char *want)
{
    char *got = slurp(fo, path);
    assert_string_equal(got, want);
    free(got);
}

static void assert_missing(const struct fileops *fo, const char *path)
{
    assert_int_equal(fo->open(fo->ctx, path, O_RDONLY, 0), -ENOENT);
}

struct names {
    char buf[1024];
    int count;
    int stop_at; /* return 7 from the callback at this count; 0: never */
};

static int collect(void *arg, const char *name)
{
    struct names *n = arg;
    strcat(n->buf, name);
    strcat(n->buf, ";");
    n->count++;
    return n->count == n->stop_at ? 7 : 0;
}

static struct faultfs *new_fs_with_dir(uint64_t seed, const struct fileops **fo)
{
    struct faultfs *fs = faultfs_new(seed);
    *fo = faultfs_ops(fs);
    assert_int_equal(fo_mkdirs(*fo, "/data/ns"), 0);
    return fs;
}

/* ---- plain file system behaviour ---------------------------------------- */

static void test_basic_files_and_dirs(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    char buf[16];
    uint64_t size;

    assert_int_equal(fo->open(fo->ctx, "/nodir/f", RW_CREATE, 0644), -ENOENT);
    assert_int_equal(fo->open(fo->ctx, "/data/ns", O_RDONLY, 0), -EISDIR);
    assert_missing(fo, "/data/ns/f");

    int fd = open_file(fo, "/data/ns/f", RW_CREATE);
    assert_int_equal(fo->open(fo->ctx, "/data/ns/f", RW_CREATE | O_EXCL, 0644), -EEXIST);
    put_str(fo, fd, "hello", 0);
    put_str(fo, fd, "!", 7); /* a hole reads as zeros */
    assert_int_equal(fo->fsize(fo->ctx, fd, &size), 0);
    assert_int_equal(size, 8);
    assert_int_equal(fo->pread(fo->ctx, fd, buf, sizeof buf, 0), 8);
    assert_memory_equal(buf, "hello\0\0!", 8);
    assert_int_equal(fo->pread(fo->ctx, fd, buf, sizeof buf, 8), 0);
    assert_int_equal(fo->pread(fo->ctx, fd, buf, 2, 3), 2);
    assert_memory_equal(buf, "lo", 2);
    assert_int_equal(faultfs_file_size(fs, "/data/ns/f"), 8);
    assert_int_equal(faultfs_file_size(fs, "/data/ns/nope"), -ENOENT);

    /* a file used as a directory */
    assert_int_equal(fo->open(fo->ctx, "/data/ns/f/x", RW_CREATE, 0644), -ENOTDIR);
    assert_int_equal(fo->mkdir(fo->ctx, "/data/ns/f", 0755), -EEXIST);
    assert_int_equal(fo->mkdir(fo->ctx, "/data/ns", 0755), 0);
    assert_int_equal(fo->mkdir(fo->ctx, "/a/b", 0755), -ENOENT);

    /* read-only descriptors do not write, and the reverse */
    int ro = open_file(fo, "/data/ns/f", O_RDONLY);
    assert_int_equal(fo->pwrite(fo->ctx, ro, "x", 1, 0), -EBADF);
    int wo = open_file(fo, "/data/ns/f", O_WRONLY);
    assert_int_equal(fo->pread(fo->ctx, wo, buf, 1, 0), -EBADF);

    /* O_TRUNC, ftruncate */
    int tr = open_file(fo, "/data/ns/f", O_RDWR | O_TRUNC);
    assert_int_equal(faultfs_file_size(fs, "/data/ns/f"), 0);
    put_str(fo, tr, "abcdef", 0);
    assert_int_equal(fo->ftruncate(fo->ctx, tr, 3), 0);
    assert_content(fo, "/data/ns/f", "abc");
    assert_int_equal(fo->ftruncate(fo->ctx, tr, 5), 0);
    assert_int_equal(fo->pread(fo->ctx, tr, buf, sizeof buf, 0), 5);
    assert_memory_equal(buf, "abc\0\0", 5);

    /* list_dir: files and subdirectories, early stop */
    assert_int_equal(fo->mkdir(fo->ctx, "/data/ns/sub", 0755), 0);
    struct names n = {0};
    assert_int_equal(fo->list_dir(fo->ctx, "/data/ns", collect, &n), 0);
    assert_int_equal(n.count, 2);
    assert_non_null(strstr(n.buf, "f;"));
    assert_non_null(strstr(n.buf, "sub;"));
    struct names stop = {.stop_at = 1};
    assert_int_equal(fo->list_dir(fo->ctx, "/data/ns", collect, &stop), 7);
    assert_int_equal(stop.count, 1);
    assert_int_equal(fo->list_dir(fo->ctx, "/nodir", collect, &n), -ENOENT);
    assert_int_equal(fo->list_dir(fo->ctx, "/data/ns/f", collect, &n), -ENOTDIR);
    struct names root = {0};
    assert_int_equal(fo->list_dir(fo->ctx, "/", collect, &root), 0);
    assert_string_equal(root.buf, "data;");

    /* paths are normalized */
    assert_int_equal(faultfs_file_size(fs, "//data///ns/f"), 5);
    assert_int_equal(fo->list_dir(fo->ctx, "/data/ns/", collect, &(struct names){0}), 0);

    /* unlink keeps open descriptors working (POSIX) */
    assert_int_equal(fo->unlink(fo->ctx, "/data/ns/f"), 0);
    assert_int_equal(fo->unlink(fo->ctx, "/data/ns/f"), -ENOENT);
    assert_int_equal(fo->unlink(fo->ctx, "/data/ns/sub"), -EISDIR);
    assert_int_equal(fo->pread(fo->ctx, tr, buf, 3, 0), 3);
    assert_memory_equal(buf, "abc", 3);

    assert_int_equal(fo->close(fo->ctx, fd), 0);
    assert_int_equal(fo->close(fo->ctx, fd), -EBADF);
    assert_int_equal(fo->close(fo->ctx, ro), 0);
    assert_int_equal(fo->close(fo->ctx, wo), 0);
    assert_int_equal(fo->close(fo->ctx, tr), 0);
    assert_int_equal(fo->close(fo->ctx, 12345), -EBADF);
    faultfs_free(fs);
}

static int unlink_each(void *arg, const char *name)
{
    const struct fileops *fo = arg;
    char path[256];
    snprintf(path, sizeof path, "/data/ns/%s", name);
    return fo->unlink(fo->ctx, path);
}

static void test_list_dir_callback_may_reenter(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    for (int i = 0; i < 5; i++) {
        char path[64];
        snprintf(path, sizeof path, "/data/ns/%d.seg", i);
        fo->close(fo->ctx, open_file(fo, path, RW_CREATE));
    }
    assert_int_equal(fo->list_dir(fo->ctx, "/data/ns", unlink_each, (void *)fo), 0);
    struct names n = {0};
    assert_int_equal(fo->list_dir(fo->ctx, "/data/ns", collect, &n), 0);
    assert_int_equal(n.count, 0);
    faultfs_free(fs);
}

static void test_rename_replaces_atomically(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    int a = open_file(fo, "/data/ns/a", RW_CREATE);
    put_str(fo, a, "new", 0);
    int b = open_file(fo, "/data/ns/b", RW_CREATE);
    put_str(fo, b, "old", 0);
    assert_int_equal(fo->rename(fo->ctx, "/data/ns/a", "/data/ns/b"), 0);
    assert_missing(fo, "/data/ns/a");
    assert_content(fo, "/data/ns/b", "new");
    assert_int_equal(fo->rename(fo->ctx, "/data/ns/a", "/data/ns/c"), -ENOENT);
    assert_int_equal(fo->rename(fo->ctx, "/data/ns/b", "/nodir/c"), -ENOENT);
    assert_int_equal(fo->rename(fo->ctx, "/data/ns/b", "/data/ns/b"), 0);
    assert_content(fo, "/data/ns/b", "new");
    /* across directories */
    assert_int_equal(fo->mkdir(fo->ctx, "/data/other", 0755), 0);
    assert_int_equal(fo->rename(fo->ctx, "/data/ns/b", "/data/other/b"), 0);
    assert_missing(fo, "/data/ns/b");
    assert_content(fo, "/data/other/b", "new");
    fo->close(fo->ctx, a);
    fo->close(fo->ctx, b);
    faultfs_free(fs);
}

/* ---- the crash model ---------------------------------------------------- */

static void test_crash_drop_keeps_only_synced_data(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    int fd = open_file(fo, "/data/ns/j", RW_CREATE);
    put_str(fo, fd, "durable|", 0);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0);
    put_str(fo, fd, "lost", 8);
    put_str(fo, fd, "D", 0); /* an unsynced overwrite is lost too */
    assert_content(fo, "/data/ns/j", "Durable|lost");

    faultfs_crash(fs, CRASH_DROP);
    assert_content(fo, "/data/ns/j", "durable|");
    /* descriptors from before the crash are dead, and never reused */
    assert_int_equal(fo->pwrite(fo->ctx, fd, "x", 1, 0), -EBADF);
    assert_int_equal(fo->close(fo->ctx, fd), -EBADF);
    int fd2 = open_file(fo, "/data/ns/j", O_RDWR);
    assert_int_not_equal(fd2, fd);
    assert_int_equal(fo->pwrite(fo->ctx, fd, "x", 1, 0), -EBADF);
    fo->close(fo->ctx, fd2);
    assert_content(fo, "/data/ns/j", "durable|");
    faultfs_free(fs);
}

static void test_names_need_sync_dir(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);

    /* synced data, unsynced name: the file vanishes */
    int fd = open_file(fo, "/data/ns/x", RW_CREATE);
    put_str(fo, fd, "data", 0);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    faultfs_crash(fs, CRASH_DROP);
    assert_missing(fo, "/data/ns/x");

    /* synced name, unsynced data: the file is there, empty */
    fd = open_file(fo, "/data/ns/y", RW_CREATE);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0);
    put_str(fo, fd, "data", 0);
    faultfs_crash(fs, CRASH_DROP);
    assert_content(fo, "/data/ns/y", "");

    /* an unlink is undone by a crash until the directory is synced */
    assert_int_equal(fo->unlink(fo->ctx, "/data/ns/y"), 0);
    faultfs_crash(fs, CRASH_DROP);
    assert_content(fo, "/data/ns/y", "");
    assert_int_equal(fo->unlink(fo->ctx, "/data/ns/y"), 0);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0);
    faultfs_crash(fs, CRASH_DROP);
    assert_missing(fo, "/data/ns/y");

    /* directories are durable at mkdir; syncing one does not sync another */
    assert_int_equal(fo->mkdir(fo->ctx, "/data/ns/sub", 0755), 0);
    fd = open_file(fo, "/data/ns/sub/z", RW_CREATE);
    fo->close(fo->ctx, fd);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0);
    faultfs_crash(fs, CRASH_DROP);
    struct names n = {0};
    assert_int_equal(fo->list_dir(fo->ctx, "/data/ns", collect, &n), 0);
    assert_string_equal(n.buf, "sub;");
    assert_missing(fo, "/data/ns/sub/z");
    faultfs_free(fs);
}

static void test_rename_durability(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    int fd = open_file(fo, "/data/ns/snap", RW_CREATE);
    put_str(fo, fd, "v1", 0);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    fo->close(fo->ctx, fd);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0);

    /* write temp, fsync, rename; without the directory sync the old one wins */
    fd = open_file(fo, "/data/ns/snap.tmp", RW_CREATE);
    put_str(fo, fd, "v2", 0);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    fo->close(fo->ctx, fd);
    assert_int_equal(fo->rename(fo->ctx, "/data/ns/snap.tmp", "/data/ns/snap"), 0);
    assert_content(fo, "/data/ns/snap", "v2");
    faultfs_crash(fs, CRASH_DROP);
    assert_content(fo, "/data/ns/snap", "v1");
    assert_missing(fo, "/data/ns/snap.tmp");

    /* ... and with it, the new one */
    fd = open_file(fo, "/data/ns/snap.tmp", RW_CREATE);
    put_str(fo, fd, "v3", 0);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    fo->close(fo->ctx, fd);
    assert_int_equal(fo->rename(fo->ctx, "/data/ns/snap.tmp", "/data/ns/snap"), 0);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0);
    faultfs_crash(fs, CRASH_GARBLE);
    assert_content(fo, "/data/ns/snap", "v3");
    assert_missing(fo, "/data/ns/snap.tmp");

    /* a rename whose file data was never synced: the name survives, the data not */
    fd = open_file(fo, "/data/ns/snap.tmp", RW_CREATE);
    put_str(fo, fd, "v4", 0);
    fo->close(fo->ctx, fd);
    assert_int_equal(fo->rename(fo->ctx, "/data/ns/snap.tmp", "/data/ns/snap"), 0);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0);
    faultfs_crash(fs, CRASH_DROP);
    assert_content(fo, "/data/ns/snap", "");
    faultfs_free(fs);
}

static void test_sizes_are_durable_after_datasync(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    int fd = open_file(fo, "/data/ns/seg", RW_CREATE);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0);
    assert_int_equal(fo->fallocate(fo->ctx, fd, 0, 1 << 20), 0);
    assert_int_equal(faultfs_file_size(fs, "/data/ns/seg"), 1 << 20);
    faultfs_crash(fs, CRASH_DROP);
    assert_int_equal(faultfs_file_size(fs, "/data/ns/seg"), 0);

    fd = open_file(fo, "/data/ns/seg", O_RDWR);
    assert_int_equal(fo->fallocate(fo->ctx, fd, 0, 1 << 20), 0);
    assert_int_equal(fo->fallocate(fo->ctx, fd, 0, 10), 0); /* never shrinks */
    assert_int_equal(fo->fallocate(fo->ctx, fd, 5, 0), 0);
    put_str(fo, fd, "rec", 1000);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    assert_int_equal(fo->ftruncate(fo->ctx, fd, 1003), 0);
    faultfs_crash(fs, CRASH_DROP);
    assert_int_equal(faultfs_file_size(fs, "/data/ns/seg"), 1 << 20);

    fd = open_file(fo, "/data/ns/seg", O_RDWR);
    uint8_t buf[1100];
    assert_int_equal(fo_read_full(fo, fd, buf, sizeof buf, 0), (ssize_t)sizeof buf);
    for (size_t i = 0; i < sizeof buf; i++)
        if (i < 1000 || i >= 1003)
            assert_int_equal(buf[i], 0);
    assert_memory_equal(buf + 1000, "rec", 3);
    assert_int_equal(fo->ftruncate(fo->ctx, fd, 1003), 0);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    faultfs_crash(fs, CRASH_DROP);
    assert_int_equal(faultfs_file_size(fs, "/data/ns/seg"), 1003);
    faultfs_free(fs);
}

/*
 * Property, over many seeds: a file synced at some point then changed (appends
 * and overwrites, maybe a truncate) and crashed with CRASH_GARBLE
 *   - has the synced or the current size;
 *   - every byte equal in the synced and the current content is intact, so a
 *     sector untouched since the sync is intact, and so is the synced prefix
 *     of a sector an append extended;
 *   - every other sector is entirely current, entirely synced, or garbled
 *     only where the two differ.
 * And over the seeds all three outcomes happen; the same seed, same result.
 */
static void garble_once(uint64_t seed, uint8_t *out, size_t *out_len, unsigned *outcomes)
{
    enum { MAX = 8192 };
    uint64_t rng = seed * 7919 + 1;
    uint8_t dur[MAX] = {0}, cur[MAX] = {0};
    size_t dur_len = 1 + tu_rand(&rng) % 4000, cur_len;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(seed, &fo);

    int fd = open_file(fo, "/data/ns/j", RW_CREATE);
    tu_fill(&rng, dur, dur_len);
    put(fo, fd, dur, dur_len, 0);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0);

    memcpy(cur, dur, MAX);
    cur_len = dur_len;
    unsigned changes = 1 + (unsigned)(tu_rand(&rng) % 4);
    for (unsigned k = 0; k < changes; k++) {
        uint64_t what = tu_rand(&rng) % 8;
        if (what == 0 && cur_len > 1) { /* truncate */
            cur_len = 1 + tu_rand(&rng) % cur_len;
            memset(cur + cur_len, 0, MAX - cur_len);
            assert_int_equal(fo->ftruncate(fo->ctx, fd, cur_len), 0);
        } else { /* write: an append mostly, sometimes an overwrite */
            size_t off = what < 5 ? cur_len : tu_rand(&rng) % cur_len;
            size_t n = 1 + tu_rand(&rng) % 1500;
            if (off + n > MAX)
                n = MAX - off;
            tu_fill(&rng, cur + off, n);
            put(fo, fd, cur + off, n, off);
            if (off + n > cur_len)
                cur_len = off + n;
        }
    }
    faultfs_crash(fs, CRASH_GARBLE);

    uint8_t *got;
    size_t got_len;
    assert_int_equal(fo_read_file(fo, "/data/ns/j", MAX, &got, &got_len), 0);
    assert_true(got_len == dur_len || got_len == cur_len);
    for (size_t s = 0; s < got_len; s += 512) {
        size_t e = s + 512 < got_len ? s + 512 : got_len;
        bool is_cur = true, is_dur = true;
        for (size_t i = s; i < e; i++) {
            if (cur[i] == dur[i])
                assert_int_equal(got[i], cur[i]);
            is_cur = is_cur && got[i] == cur[i];
            is_dur = is_dur && got[i] == dur[i];
        }
        if (is_cur && is_dur)
            continue;
        outcomes[is_cur ? 0 : is_dur ? 1 : 2]++;
    }
    /* the post-crash image is durable as it is */
    faultfs_crash(fs, CRASH_GARBLE);
    uint8_t *again;
    size_t again_len;
    assert_int_equal(fo_read_file(fo, "/data/ns/j", MAX, &again, &again_len), 0);
    assert_int_equal(again_len, got_len);
    assert_memory_equal(again, got, got_len);

    memcpy(out, got, got_len);
    *out_len = got_len;
    free(got);
    free(again);
    faultfs_free(fs);
}

static void test_garble_keeps_synced_bytes(void **state)
{
    (void)state;
    static uint8_t a[8192], b[8192];
    size_t a_len, b_len;
    unsigned outcomes[3] = {0};
    for (uint64_t seed = 1; seed <= 400; seed++) {
        garble_once(seed, a, &a_len, outcomes);
        garble_once(seed, b, &b_len, outcomes);
        assert_int_equal(a_len, b_len);
        assert_memory_equal(a, b, a_len);
    }
    assert_true(outcomes[0] > 0); /* a sector kept as current */
    assert_true(outcomes[1] > 0); /* a sector kept as synced */
    assert_true(outcomes[2] > 0); /* a garbled sector */
}

static void test_garble_varies_by_seed(void **state)
{
    (void)state;
    /* different seeds give different torn images of the same history */
    char images[16][2048];
    for (int i = 0; i < 16; i++) {
        const struct fileops *fo;
        struct faultfs *fs = new_fs_with_dir((uint64_t)i + 100, &fo);
        int fd = open_file(fo, "/data/ns/j", RW_CREATE);
        assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0);
        char buf[2048];
        memset(buf, 'a', sizeof buf);
        put(fo, fd, buf, sizeof buf, 0);
        faultfs_crash(fs, CRASH_GARBLE);
        memset(images[i], 0, sizeof images[i]);
        fd = open_file(fo, "/data/ns/j", O_RDONLY);
        assert_true(fo_read_full(fo, fd, images[i], sizeof images[i], 0) >= 0);
        fo->close(fo->ctx, fd);
        faultfs_free(fs);
    }
    int distinct = 0;
    for (int i = 1; i < 16; i++)
        distinct += memcmp(images[i], images[0], sizeof images[0]) != 0;
    assert_true(distinct > 0);
}

/* ---- the fault schedule ------------------------------------------------- */

static void test_counters_and_fail_sync(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    int fd = open_file(fo, "/data/ns/j", RW_CREATE);
    assert_int_equal(faultfs_sync_count(fs), 0);
    assert_int_equal(faultfs_write_count(fs), 0);
    put_str(fo, fd, "a", 0);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0); /* sync 1 */
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);         /* sync 2 */
    assert_int_equal(faultfs_sync_count(fs), 2);
    assert_int_equal(faultfs_write_count(fs), 1);

    faultfs_fail_sync_at(fs, 3, -EIO);
    put_str(fo, fd, "b", 1);
    assert_int_equal(fo->datasync(fo->ctx, fd), -EIO); /* sync 3: fails, not durable */
    assert_false(faultfs_dead(fs));
    faultfs_crash(fs, CRASH_DROP);
    assert_content(fo, "/data/ns/j", "a");
    assert_int_equal(faultfs_sync_count(fs), 0); /* counters restart after a crash */
    assert_int_equal(faultfs_write_count(fs), 0);

    /* the failure happens once; a failed sync_dir does not make names durable */
    fd = open_file(fo, "/data/ns/j", O_RDWR);
    faultfs_fail_sync_at(fs, 1, -ENOSPC);
    int fd2 = open_file(fo, "/data/ns/k", RW_CREATE);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), -ENOSPC);
    put_str(fo, fd, "b", 1);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    faultfs_crash(fs, CRASH_DROP);
    assert_content(fo, "/data/ns/j", "ab");
    assert_missing(fo, "/data/ns/k");
    (void)fd2;

    /* a fault scheduled, then cleared, does not fire */
    fd = open_file(fo, "/data/ns/j", O_RDWR);
    faultfs_fail_sync_at(fs, 1, -EIO);
    faultfs_clear_faults(fs);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    fo->close(fo->ctx, fd);
    faultfs_free(fs);
}

static void test_fail_write_and_short_write(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    int fd = open_file(fo, "/data/ns/j", RW_CREATE);

    faultfs_fail_write_at(fs, 2, -EIO);
    assert_int_equal(fo->pwrite(fo->ctx, fd, "abcd", 4, 0), 4);
    assert_int_equal(fo->pwrite(fo->ctx, fd, "efgh", 4, 4), -EIO); /* write 2 */
    assert_int_equal(faultfs_file_size(fs, "/data/ns/j"), 4);
    assert_int_equal(fo->pwrite(fo->ctx, fd, "efgh", 4, 4), 4); /* once only */

    faultfs_short_write_at(fs, 4);
    assert_int_equal(fo->pwrite(fo->ctx, fd, "ijkl", 4, 8), 2); /* write 4: half */
    assert_content(fo, "/data/ns/j", "abcdefghij");
    assert_int_equal(fo->pwrite(fo->ctx, fd, "kl", 2, 10), 2);

    /* fo_write_all rides over a short write */
    faultfs_short_write_at(fs, 6);
    put_str(fo, fd, "mnopqrst", 12);
    assert_content(fo, "/data/ns/j", "abcdefghijklmnopqrst");
    assert_int_equal(faultfs_write_count(fs), 7);

    /* and reports a failing one */
    faultfs_fail_write_at(fs, 8, -EIO);
    assert_int_equal(fo_write_all(fo, fd, "u", 1, 20), -EIO);
    assert_false(faultfs_dead(fs)); /* a failed write is not a crash */
    fo->close(fo->ctx, fd);
    faultfs_free(fs);
}

static void test_enospc(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    faultfs_set_space(fs, 1000);
    char buf[1000];
    memset(buf, 'x', sizeof buf);

    int a = open_file(fo, "/data/ns/a", RW_CREATE);
    assert_int_equal(fo->pwrite(fo->ctx, a, buf, 800, 0), 800);
    int b = open_file(fo, "/data/ns/b", RW_CREATE);
    assert_int_equal(fo->pwrite(fo->ctx, b, buf, 400, 0), 200); /* what fits */
    assert_int_equal(fo->pwrite(fo->ctx, b, buf, 1, 200), -ENOSPC);
    assert_int_equal(fo->pwrite(fo->ctx, a, buf, 100, 700), 100); /* overwrite: no space needed */
    assert_int_equal(fo_write_all(fo, a, buf, 10, 800), -ENOSPC);
    assert_int_equal(fo->fallocate(fo->ctx, a, 0, 801), -ENOSPC);
    assert_int_equal(fo->fallocate(fo->ctx, a, 0, 800), 0);

    /* space comes back when a file is truncated or its last reference goes */
    assert_int_equal(fo->ftruncate(fo->ctx, b, 0), 0);
    assert_int_equal(fo->fallocate(fo->ctx, a, 0, 1000), 0);
    assert_int_equal(fo->pwrite(fo->ctx, b, buf, 1, 0), -ENOSPC);
    assert_int_equal(fo->unlink(fo->ctx, "/data/ns/a"), 0);
    assert_int_equal(fo->pwrite(fo->ctx, b, buf, 1, 0), -ENOSPC); /* a is still open */
    fo->close(fo->ctx, a);
    assert_int_equal(fo->pwrite(fo->ctx, b, buf, 1000, 0), 1000);

    faultfs_clear_faults(fs);
    assert_int_equal(fo->pwrite(fo->ctx, b, buf, 1000, 1000), 1000);
    fo->close(fo->ctx, b);
    faultfs_free(fs);
}

static void test_crash_at_sync_dead_state(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    int fd = open_file(fo, "/data/ns/j", RW_CREATE);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0); /* sync 1 */
    put_str(fo, fd, "one|", 0);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0); /* sync 2 */

    faultfs_crash_at_sync(fs, 3);
    put_str(fo, fd, "two|", 4);
    assert_false(faultfs_dead(fs));
    assert_int_equal(fo->datasync(fo->ctx, fd), -EIO); /* sync 3: the crash point */
    assert_true(faultfs_dead(fs));

    /* every mutating call now fails ... */
    assert_int_equal(fo->pwrite(fo->ctx, fd, "x", 1, 0), -EIO);
    assert_int_equal(fo->datasync(fo->ctx, fd), -EIO);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), -EIO);
    assert_int_equal(fo->ftruncate(fo->ctx, fd, 0), -EIO);
    assert_int_equal(fo->fallocate(fo->ctx, fd, 0, 4096), -EIO);
    assert_int_equal(fo->rename(fo->ctx, "/data/ns/j", "/data/ns/k"), -EIO);
    assert_int_equal(fo->unlink(fo->ctx, "/data/ns/j"), -EIO);
    assert_int_equal(fo->mkdir(fo->ctx, "/data/ns/d", 0755), -EIO);
    assert_int_equal(fo->open(fo->ctx, "/data/ns/new", RW_CREATE, 0644), -EIO);
    assert_int_equal(fo->open(fo->ctx, "/data/ns/j", O_RDWR | O_TRUNC, 0), -EIO);
    /* ... while reads still work */
    assert_content(fo, "/data/ns/j", "one|two|");
    assert_int_equal(fo->list_dir(fo->ctx, "/data/ns", collect, &(struct names){0}), 0);
    assert_int_equal(faultfs_sync_count(fs), 5);

    /* the crash keeps what the last successful sync saw */
    faultfs_crash(fs, CRASH_DROP);
    assert_false(faultfs_dead(fs));
    assert_content(fo, "/data/ns/j", "one|");
    fd = open_file(fo, "/data/ns/j", O_RDWR);
    put_str(fo, fd, "three", 4);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    fo->close(fo->ctx, fd);

    /* clear_faults also leaves the dead state */
    assert_int_equal(faultfs_sync_count(fs), 1);
    faultfs_crash_at_sync(fs, 2);
    fd = open_file(fo, "/data/ns/j", O_RDWR);
    assert_int_equal(fo->datasync(fo->ctx, fd), -EIO);
    assert_true(faultfs_dead(fs));
    faultfs_clear_faults(fs);
    assert_false(faultfs_dead(fs));
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    fo->close(fo->ctx, fd);
    faultfs_free(fs);
}

static void test_crash_at_sync_dir(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    int fd = open_file(fo, "/data/ns/j", RW_CREATE);
    put_str(fo, fd, "x", 0);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    faultfs_crash_at_sync(fs, 2);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), -EIO); /* did not happen */
    faultfs_crash(fs, CRASH_GARBLE);
    assert_missing(fo, "/data/ns/j");
    faultfs_free(fs);
}

static void test_lock_is_exclusive(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    int a = open_file(fo, "/data/ns/LOCK", RW_CREATE);
    int b = open_file(fo, "/data/ns/LOCK", O_RDWR);
    int other = open_file(fo, "/data/ns/other", RW_CREATE);
    assert_int_equal(fo->lock(fo->ctx, a), 0);
    assert_int_equal(fo->lock(fo->ctx, a), 0); /* again on the same fd: fine */
    assert_int_equal(fo->lock(fo->ctx, b), -EWOULDBLOCK);
    assert_int_equal(fo->lock(fo->ctx, other), 0);
    assert_int_equal(fo->close(fo->ctx, a), 0);
    assert_int_equal(fo->lock(fo->ctx, b), 0); /* released with its fd */
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0);

    /* a crash ends the process that held it */
    faultfs_crash(fs, CRASH_DROP);
    int c = open_file(fo, "/data/ns/LOCK", O_RDWR);
    assert_int_equal(fo->lock(fo->ctx, c), 0);
    assert_int_equal(fo->lock(fo->ctx, b), -EBADF);
    fo->close(fo->ctx, c);
    faultfs_free(fs);
}

static void test_corrupt(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    int fd = open_file(fo, "/data/ns/j", RW_CREATE);
    put_str(fo, fd, "abc", 0);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);
    assert_int_equal(fo->sync_dir(fo->ctx, "/data/ns"), 0);
    fo->close(fo->ctx, fd);

    assert_int_equal(faultfs_corrupt(fs, "/data/ns/j", 1), 0);
    char *s = slurp(fo, "/data/ns/j");
    assert_int_equal(s[0], 'a');
    assert_int_not_equal(s[1], 'b');
    assert_int_equal(s[2], 'c');
    faultfs_crash(fs, CRASH_DROP); /* the damage is durable too */
    char *t = slurp(fo, "/data/ns/j");
    assert_string_equal(s, t);
    free(s);
    free(t);
    assert_int_equal(faultfs_corrupt(fs, "/data/ns/j", 3), -EINVAL);
    assert_int_equal(faultfs_corrupt(fs, "/data/ns/nope", 0), -ENOENT);
    faultfs_free(fs);
}

/* ---- helpers over faultfs, and threads ---------------------------------- */

static void test_fo_helpers_on_faultfs(void **state)
{
    (void)state;
    struct faultfs *fs = faultfs_new(3);
    const struct fileops *fo = faultfs_ops(fs);
    assert_int_equal(fo_mkdirs(fo, "/data/ns1/journal/"), 0);
    assert_int_equal(fo_mkdirs(fo, "/data/ns1/journal"), 0);
    int fd = open_file(fo, "/data/ns1/journal/000.seg", RW_CREATE);
    put_str(fo, fd, "0123456789", 0);
    fo->close(fo->ctx, fd);
    assert_int_equal(fo_mkdirs(fo, "/data/ns1/journal/000.seg/x"), -EEXIST);
    assert_int_equal(fo->mkdir(fo->ctx, "/data/ns1/journal/000.seg/x", 0755), -ENOTDIR);
    uint8_t *data;
    size_t len;
    assert_int_equal(fo_read_file(fo, "/data/ns1/journal/000.seg", 9, &data, &len), CY_ETOOBIG);
    assert_int_equal(fo_read_file(fo, "/data/ns1/journal/nope", 9, &data, &len), -ENOENT);
    assert_int_equal(fo_read_file(fo, "/data/ns1/journal/000.seg", 10, &data, &len), 0);
    assert_int_equal(len, 10);
    assert_memory_equal(data, "0123456789", 10);
    free(data);
    faultfs_free(fs);
}

struct worker {
    const struct fileops *fo;
    const char *path;
};

static void *write_and_sync(void *arg)
{
    struct worker *w = arg;
    int fd = w->fo->open(w->fo->ctx, w->path, RW_CREATE, 0644);
    if (fd < 0)
        return (void *)1;
    uint8_t rec[100];
    memset(rec, 'r', sizeof rec);
    for (int i = 0; i < 500; i++) {
        if (fo_write_all(w->fo, fd, rec, sizeof rec, (uint64_t)i * sizeof rec) < 0)
            return (void *)1;
        if (i % 10 == 0 && w->fo->datasync(w->fo->ctx, fd) < 0)
            return (void *)1;
    }
    w->fo->close(w->fo->ctx, fd);
    return NULL;
}

static void test_two_threads(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    struct worker w1 = {fo, "/data/ns/one"}, w2 = {fo, "/data/ns/two"};
    pthread_t t1, t2;
    void *r1, *r2;
    assert_int_equal(pthread_create(&t1, NULL, write_and_sync, &w1), 0);
    assert_int_equal(pthread_create(&t2, NULL, write_and_sync, &w2), 0);
    pthread_join(t1, &r1);
    pthread_join(t2, &r2);
    assert_null(r1);
    assert_null(r2);
    assert_int_equal(faultfs_write_count(fs), 1000);
    assert_int_equal(faultfs_sync_count(fs), 100);
    assert_int_equal(faultfs_file_size(fs, "/data/ns/one"), 50000);
    assert_int_equal(faultfs_file_size(fs, "/data/ns/two"), 50000);
    faultfs_free(fs);
}

static void test_free_with_open_files(void **state)
{
    (void)state;
    const struct fileops *fo;
    struct faultfs *fs = new_fs_with_dir(1, &fo);
    int fd = open_file(fo, "/data/ns/j", RW_CREATE);
    put_str(fo, fd, "x", 0);
    assert_int_equal(fo->unlink(fo->ctx, "/data/ns/j"), 0);
    open_file(fo, "/data/ns/k", RW_CREATE);
    faultfs_free(fs); /* LeakSanitizer checks that nothing stays behind */
    faultfs_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_files_and_dirs),
        cmocka_unit_test(test_list_dir_callback_may_reenter),
        cmocka_unit_test(test_rename_replaces_atomically),
        cmocka_unit_test(test_crash_drop_keeps_only_synced_data),
        cmocka_unit_test(test_names_need_sync_dir),
        cmocka_unit_test(test_rename_durability),
        cmocka_unit_test(test_sizes_are_durable_after_datasync),
        cmocka_unit_test(test_garble_keeps_synced_bytes),
        cmocka_unit_test(test_garble_varies_by_seed),
        cmocka_unit_test(test_counters_and_fail_sync),
        cmocka_unit_test(test_fail_write_and_short_write),
        cmocka_unit_test(test_enospc),
        cmocka_unit_test(test_crash_at_sync_dead_state),
        cmocka_unit_test(test_crash_at_sync_dir),
        cmocka_unit_test(test_lock_is_exclusive),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_fo_helpers_on_faultfs),
        cmocka_unit_test(test_two_threads),
        cmocka_unit_test(test_free_with_open_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
