/* test_snapshot.c — snapshot files: round trip, retention, damage, fallback. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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
#include "storage/snapshot.h"
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------------- */

static char warnings[8192];
static int n_warnings;

static void capture_log(void *arg, enum log_level level, const char *line)
{
    (void)arg;
    if (level != CYLOG_WARN)
        return;
    n_warnings++;
    size_t used = strlen(warnings);
    snprintf(warnings + used, sizeof warnings - used, "%s\n", line);
}

static void capture_start(void)
{
    warnings[0] = '\0';
    n_warnings = 0;
    log_set_hook(capture_log, NULL);
}

static void capture_stop(void) { log_set_hook(NULL, NULL); }

static void snap_path(char *path, size_t cap, const char *dir, uint64_t pos, const char *suffix)
{
    snprintf(path, cap, "%s/%020" PRIu64 "%s", dir, pos, suffix);
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static uint8_t *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static void write_whole(const char *path, const void *p, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len)
        assert_int_equal(fwrite(p, 1, len, f), len);
    fclose(f);
}

static void flip_byte(const char *path, size_t off)
{
    size_t len;
    uint8_t *p = read_whole(path, &len);
    assert_true(off < len);
    p[off] ^= 0x5A;
    write_whole(path, p, len);
    free(p);
}

/* A small snapshot with one section whose content says which it is. */
static void write_small(const char *dir, uint64_t pos)
{
    char text[32];
    int n = snprintf(text, sizeof text, "state@%" PRIu64, pos);
    struct snapshot_section sec = {7, (const uint8_t *)text, (uint64_t)n};
    assert_int_equal(snapshot_write(NULL, dir, pos, 1000 + pos, &sec, 1), 0);
}

static size_t count_files(const char *dir)
{
    uint64_t pos[16];
    int n = snapshot_list(NULL, dir, pos, 16);
    assert_true(n >= 0);
    return (size_t)n;
}

/* The bytes of a small valid snapshot file (malloc'd). */
static uint8_t *small_file_bytes(const char *dir, uint64_t pos, size_t *len)
{
    struct snapshot_section secs[3] = {
        {1, (const uint8_t *)"alpha", 5},
        {2, NULL, 0},
        {3, (const uint8_t *)"gamma-gamma", 11},
    };
    assert_int_equal(snapshot_write(NULL, dir, pos, 42, secs, 3), 0);
    char path[4096];
    snap_path(path, sizeof path, dir, pos, ".snap");
    return read_whole(path, len);
}

/* A 48-byte header with the given fields and a correct CRC. */
static void make_header(uint8_t *h, uint32_t magic, uint16_t version, uint32_t n_sections)
{
    memset(h, 0, 48);
    le_put32(h, magic);
    le_put16(h + 4, version);
    le_put16(h + 6, 48);
    le_put64(h + 8, 5);
    le_put64(h + 16, 6);
    le_put32(h + 24, n_sections);
    le_put32(h + 44, crc32c(0, h, 44));
}

/* ---- tests ------------------------------------------------------------------ */

static void test_round_trip(void **state)
{
    (void)state;
    char *dir = tu_tempdir("snap");
    size_t big_len = 1u << 20;
    uint8_t *big = malloc(big_len);
    assert_non_null(big);
    uint64_t seed = 12345;
    tu_fill(&seed, big, big_len);

    struct snapshot_section secs[4] = {
        {0x544F5043, (const uint8_t *)"topics", 6},
        {2, NULL, 0},
        {3, big, big_len},
        {0xFFFFFFFFu, (const uint8_t *)"x", 1},
    };
    assert_int_equal(snapshot_write(NULL, dir, 987654321, 1700000000123ull, secs, 4), 0);

    char path[4096];
    snap_path(path, sizeof path, dir, 987654321, ".snap");
    assert_true(file_exists(path));
    assert_string_equal(strrchr(path, '/') + 1, "00000000000987654321.snap");

    struct snapshot s;
    assert_int_equal(snapshot_load_newest(NULL, dir, UINT64_MAX, &s), 0);
    assert_int_equal(s.covered_pos, 987654321);
    assert_int_equal(s.created_ms, 1700000000123ull);
    assert_int_equal(s.n_sections, 4);
    assert_non_null(s.raw);
    assert_int_equal(s.raw_len, 48 + (12 + 6 + 4) + (12 + 4) + (12 + big_len + 4) + (12 + 1 + 4) + 8);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(s.sections[i].tag, secs[i].tag);
        assert_int_equal(s.sections[i].len, secs[i].len);
        if (secs[i].len)
            assert_memory_equal(s.sections[i].data, secs[i].data, secs[i].len);
        /* sections point into raw */
        assert_true(s.sections[i].data >= s.raw &&
                    s.sections[i].data + s.sections[i].len <= s.raw + s.raw_len);
    }
    snapshot_free(&s);
    assert_null(s.raw);

    /* Zero sections is a valid snapshot too. */
    assert_int_equal(snapshot_write(NULL, dir, 987654322, 1, NULL, 0), 0);
    assert_int_equal(snapshot_load_newest(NULL, dir, UINT64_MAX, &s), 0);
    assert_int_equal(s.covered_pos, 987654322);
    assert_int_equal(s.n_sections, 0);
    assert_int_equal(s.raw_len, 56);
    snapshot_free(&s);

    free(big);
    tu_rmtree(dir);
}

static void test_keeps_two_newest(void **state)
{
    (void)state;
    char *dir = tu_tempdir("snap");
    /* A file that merely looks similar must be left alone. */
    char other[4096];
    snprintf(other, sizeof other, "%s/notes.snap", dir);
    write_whole(other, "x", 1);
    snprintf(other, sizeof other, "%s/0000000000000000000001.snap", dir);
    write_whole(other, "x", 1); /* 22 digits: not a snapshot name */

    uint64_t written[5] = {10, 20, 30, 40, 50};
    for (int i = 0; i < 5; i++)
        write_small(dir, written[i]);

    uint64_t pos[8];
    assert_int_equal(snapshot_list(NULL, dir, pos, 8), 2);
    assert_int_equal(pos[0], 40);
    assert_int_equal(pos[1], 50);
    /* max limits the count, the oldest first */
    assert_int_equal(snapshot_list(NULL, dir, pos, 1), 1);
    assert_int_equal(pos[0], 40);
    assert_int_equal(snapshot_list(NULL, dir, pos, 0), 0);

    char path[4096];
    for (int i = 0; i < 3; i++) {
        snap_path(path, sizeof path, dir, written[i], ".snap");
        assert_false(file_exists(path));
    }
    snprintf(path, sizeof path, "%s/notes.snap", dir);
    assert_true(file_exists(path));
    assert_true(file_exists(other));

    struct snapshot s;
    assert_int_equal(snapshot_load_newest(NULL, dir, UINT64_MAX, &s), 0);
    assert_int_equal(s.covered_pos, 50);
    assert_int_equal(s.sections[0].len, strlen("state@50"));
    assert_memory_equal(s.sections[0].data, "state@50", 8);
    snapshot_free(&s);
    tu_rmtree(dir);
}

static void test_same_position_replaces(void **state)
{
    (void)state;
    char *dir = tu_tempdir("snap");
    write_small(dir, 10);
    write_small(dir, 20);
    struct snapshot_section sec = {9, (const uint8_t *)"again", 5};
    assert_int_equal(snapshot_write(NULL, dir, 20, 1, &sec, 1), 0);
    uint64_t pos[4];
    assert_int_equal(snapshot_list(NULL, dir, pos, 4), 2);
    assert_int_equal(pos[0], 10);
    assert_int_equal(pos[1], 20);
    struct snapshot s;
    assert_int_equal(snapshot_load_newest(NULL, dir, UINT64_MAX, &s), 0);
    assert_int_equal(s.covered_pos, 20);
    assert_int_equal(s.sections[0].tag, 9);
    assert_memory_equal(s.sections[0].data, "again", 5);
    snapshot_free(&s);
    tu_rmtree(dir);
}

static void test_lower_position_drops_lost_future(void **state)
{
    (void)state;
    /* After the journal lost its tail, a snapshot at a lower position is
     * written: the ones beyond it describe a history that no longer exists,
     * and the new one must survive its own retention pass. */
    char *dir = tu_tempdir("snap");
    write_small(dir, 100);
    write_small(dir, 200);
    write_small(dir, 300); /* deletes 100 */
    write_small(dir, 250);
    uint64_t pos[4];
    assert_int_equal(snapshot_list(NULL, dir, pos, 4), 2);
    assert_int_equal(pos[0], 200);
    assert_int_equal(pos[1], 250);
    write_small(dir, 150);
    assert_int_equal(snapshot_list(NULL, dir, pos, 4), 1);
    assert_int_equal(pos[0], 150);
    tu_rmtree(dir);
}

static void test_newest_damaged_falls_back(void **state)
{
    (void)state;
    char *dir = tu_tempdir("snap");
    write_small(dir, 100);
    write_small(dir, 200);
    char path[4096];
    snap_path(path, sizeof path, dir, 200, ".snap");

    size_t len;
    uint8_t *orig = read_whole(path, &len);
    /* Damage anywhere (header, section, trailer) is detected. */
    for (size_t off = 0; off < len; off++) {
        write_whole(path, orig, len);
        flip_byte(path, off);
        capture_start();
        struct snapshot s;
        int rc = snapshot_load_newest(NULL, dir, UINT64_MAX, &s);
        capture_stop();
        assert_int_equal(rc, 0);
        assert_int_equal(s.covered_pos, 100);
        assert_memory_equal(s.sections[0].data, "state@100", 9);
        snapshot_free(&s);
        assert_int_equal(n_warnings, 1);
        assert_non_null(strstr(warnings, "00000000000000000200.snap"));
    }
    free(orig);
    tu_rmtree(dir);
}

static void test_all_damaged_not_found(void **state)
{
    (void)state;
    char *dir = tu_tempdir("snap");
    write_small(dir, 100);
    write_small(dir, 200);
    char path[4096];
    snap_path(path, sizeof path, dir, 100, ".snap");
    flip_byte(path, 60);
    snap_path(path, sizeof path, dir, 200, ".snap");
    flip_byte(path, 3);

    capture_start();
    struct snapshot s;
    assert_int_equal(snapshot_load_newest(NULL, dir, UINT64_MAX, &s), CY_ENOTFOUND);
    capture_stop();
    assert_null(s.raw);
    assert_int_equal(n_warnings, 2);
    assert_non_null(strstr(warnings, "00000000000000000100.snap"));
    assert_non_null(strstr(warnings, "00000000000000000200.snap"));
    assert_non_null(strstr(warnings, cy_strerror(CY_EFORMAT))); /* magic byte flipped */
    assert_non_null(strstr(warnings, cy_strerror(CY_ECORRUPT)));
    tu_rmtree(dir);
}

static void test_missing_and_empty_dir(void **state)
{
    (void)state;
    char *dir = tu_tempdir("snap");
    struct snapshot s;
    assert_int_equal(snapshot_load_newest(NULL, dir, UINT64_MAX, &s), CY_ENOTFOUND);
    char missing[4096];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    assert_int_equal(snapshot_load_newest(NULL, missing, UINT64_MAX, &s), CY_ENOTFOUND);
    uint64_t pos[2];
    assert_int_equal(snapshot_list(NULL, missing, pos, 2), 0);
    assert_int_equal(snapshot_write(NULL, missing, 1, 1, NULL, 0), -ENOENT);
    tu_rmtree(dir);
}

static void test_max_pos_skips_newer(void **state)
{
    (void)state;
    char *dir = tu_tempdir("snap");
    write_small(dir, 100);
    write_small(dir, 200);
    struct snapshot s;
    assert_int_equal(snapshot_load_newest(NULL, dir, 150, &s), 0);
    assert_int_equal(s.covered_pos, 100);
    snapshot_free(&s);
    assert_int_equal(snapshot_load_newest(NULL, dir, 200, &s), 0);
    assert_int_equal(s.covered_pos, 200);
    snapshot_free(&s);
    assert_int_equal(snapshot_load_newest(NULL, dir, 100, &s), 0);
    assert_int_equal(s.covered_pos, 100);
    snapshot_free(&s);
    assert_int_equal(snapshot_load_newest(NULL, dir, 99, &s), CY_ENOTFOUND);
    tu_rmtree(dir);
}

static void test_truncated_never_succeeds(void **state)
{
    (void)state;
    char *dir = tu_tempdir("snap");
    size_t len;
    uint8_t *full = small_file_bytes(dir, 77, &len);
    struct snapshot s;
    assert_int_equal(snapshot_decode(full, len, &s), 0);
    assert_int_equal(s.n_sections, 3);

    char path[4096];
    snap_path(path, sizeof path, dir, 77, ".snap");
    for (size_t cut = 0; cut < len; cut++) {
        /* An exact-size copy, so the sanitizer sees any read past the end. */
        uint8_t *copy = malloc(cut ? cut : 1);
        assert_non_null(copy);
        memcpy(copy, full, cut);
        int rc = snapshot_decode(copy, cut, &s);
        assert_true(rc == CY_ECORRUPT);
        free(copy);

        write_whole(path, full, cut);
        capture_start();
        rc = snapshot_load_newest(NULL, dir, UINT64_MAX, &s);
        capture_stop();
        assert_int_equal(rc, CY_ENOTFOUND);
        assert_int_equal(n_warnings, 1);
    }
    /* A byte after the trailer is damage too. */
    uint8_t *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, full, len);
    longer[len] = 0;
    assert_int_equal(snapshot_decode(longer, len + 1, &s), CY_ECORRUPT);
    free(longer);
    free(full);
    tu_rmtree(dir);
}

static void test_leftover_tmp_ignored_and_cleaned(void **state)
{
    (void)state;
    char *dir = tu_tempdir("snap");
    write_small(dir, 100);
    char tmp[4096];
    snap_path(tmp, sizeof tmp, dir, 300, ".snap.tmp");
    size_t len;
    char path[4096];
    snap_path(path, sizeof path, dir, 100, ".snap");
    uint8_t *bytes = read_whole(path, &len);
    write_whole(tmp, bytes, len / 2); /* a torn write of a newer snapshot */
    free(bytes);
    char foreign[4096];
    snprintf(foreign, sizeof foreign, "%s/index.tmp", dir); /* not ours */
    write_whole(foreign, "i", 1);

    uint64_t pos[4];
    assert_int_equal(snapshot_list(NULL, dir, pos, 4), 1);
    assert_int_equal(pos[0], 100);
    struct snapshot s;
    capture_start();
    assert_int_equal(snapshot_load_newest(NULL, dir, UINT64_MAX, &s), 0);
    capture_stop();
    assert_int_equal(n_warnings, 0);
    assert_int_equal(s.covered_pos, 100);
    snapshot_free(&s);

    write_small(dir, 200);
    assert_false(file_exists(tmp));
    assert_true(file_exists(foreign));
    assert_int_equal(count_files(dir), 2);
    tu_rmtree(dir);
}

static void test_bad_magic_and_version(void **state)
{
    (void)state;
    struct snapshot s;
    uint8_t h[56];
    make_header(h, 0x12345678, 1, 0);
    assert_int_equal(snapshot_decode(h, sizeof h, &s), CY_EFORMAT);
    make_header(h, 0x4E535943, 2, 0);
    assert_int_equal(snapshot_decode(h, sizeof h, &s), CY_EFORMAT);
    make_header(h, 0x4E535943, 0, 0);
    assert_int_equal(snapshot_decode(h, sizeof h, &s), CY_EFORMAT);
    assert_memory_equal(h, "CYSN", 4);

    /* A valid empty snapshot built by hand: the format is what docs say. */
    make_header(h, 0x4E535943, 1, 0);
    le_put32(h + 48, 0x444E4559);
    le_put32(h + 52, crc32c(0, h, 48));
    assert_memory_equal(h + 48, "YEND", 4);
    assert_int_equal(snapshot_decode(h, sizeof h, &s), 0);
    assert_int_equal(s.covered_pos, 5);
    assert_int_equal(s.created_ms, 6);
    assert_int_equal(s.n_sections, 0);
    assert_null(s.raw);

    /* Wrong header size with a good CRC. */
    le_put16(h + 6, 64);
    le_put32(h + 44, crc32c(0, h, 44));
    assert_int_equal(snapshot_decode(h, sizeof h, &s), CY_ECORRUPT);
    assert_int_equal(snapshot_decode(NULL, 0, &s), CY_ECORRUPT);
}

static void test_too_many_sections(void **state)
{
    (void)state;
    char *dir = tu_tempdir("snap");
    struct snapshot_section secs[SNAPSHOT_MAX_SECTIONS + 1];
    for (size_t i = 0; i < SNAPSHOT_MAX_SECTIONS + 1; i++) {
        secs[i].tag = (uint32_t)i;
        secs[i].data = (const uint8_t *)"s";
        secs[i].len = 1;
    }
    assert_int_equal(snapshot_write(NULL, dir, 1, 1, secs, SNAPSHOT_MAX_SECTIONS + 1), CY_EINVAL);
    assert_int_equal(count_files(dir), 0);

    /* Exactly the maximum is fine. */
    assert_int_equal(snapshot_write(NULL, dir, 1, 1, secs, SNAPSHOT_MAX_SECTIONS), 0);
    struct snapshot s;
    assert_int_equal(snapshot_load_newest(NULL, dir, UINT64_MAX, &s), 0);
    assert_int_equal(s.n_sections, SNAPSHOT_MAX_SECTIONS);
    assert_int_equal(s.sections[SNAPSHOT_MAX_SECTIONS - 1].tag, SNAPSHOT_MAX_SECTIONS - 1);
    snapshot_free(&s);

    /* A header claiming more than the maximum, CRC correct. */
    uint8_t h[56];
    make_header(h, 0x4E535943, 1, SNAPSHOT_MAX_SECTIONS + 1);
    le_put32(h + 48, 0x444E4559);
    le_put32(h + 52, crc32c(0, h, 48));
    assert_int_equal(snapshot_decode(h, sizeof h, &s), CY_ECORRUPT);
    make_header(h, 0x4E535943, 1, UINT32_MAX);
    assert_int_equal(snapshot_decode(h, sizeof h, &s), CY_ECORRUPT);
    tu_rmtree(dir);
}

static void test_huge_section_length(void **state)
{
    (void)state;
    /* Section lengths near the u64 limit must not wrap any bound check. */
    uint64_t lens[] = {UINT64_MAX, UINT64_MAX - 3, UINT64_MAX - 11, (uint64_t)1 << 63, 5, 4, 0};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint8_t f[48 + 12 + 4 + 8];
        make_header(f, 0x4E535943, 1, 1);
        le_put32(f + 48, 1);
        le_put64(f + 60 - 8, lens[i]);
        le_put32(f + 60, 0);
        le_put32(f + 64, 0x444E4559);
        le_put32(f + 68, 0);
        uint8_t *copy = malloc(sizeof f);
        assert_non_null(copy);
        memcpy(copy, f, sizeof f);
        struct snapshot s;
        assert_int_equal(snapshot_decode(copy, sizeof f, &s), CY_ECORRUPT);
        free(copy);
    }
}

/* A fileops that fails one chosen operation, delegating the rest to POSIX. */
struct failing {
    int fail_datasync, fail_rename, fail_write, fail_sync_dir;
};

static struct failing failing_cfg;

static int f_open(void *ctx, const char *path, int flags, unsigned mode)
{
    return fileops_posix.open(fileops_posix.ctx, path, flags, mode);
}
static int f_close(void *ctx, int fd) { return fileops_posix.close(fileops_posix.ctx, fd); }
static ssize_t f_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off)
{
    if (failing_cfg.fail_write && off > 48)
        return -ENOSPC;
    return fileops_posix.pwrite(fileops_posix.ctx, fd, buf, n, off);
}
static int f_datasync(void *ctx, int fd)
{
    return failing_cfg.fail_datasync ? -EIO : fileops_posix.datasync(fileops_posix.ctx, fd);
}
static int f_rename(void *ctx, const char *from, const char *to)
{
    return failing_cfg.fail_rename ? -EIO : fileops_posix.rename(fileops_posix.ctx, from, to);
}
static int f_sync_dir(void *ctx, const char *path)
{
    return failing_cfg.fail_sync_dir ? -EIO : fileops_posix.sync_dir(fileops_posix.ctx, path);
}

static void test_write_errors_remove_temp(void **state)
{
    (void)state;
    char *dir = tu_tempdir("snap");
    write_small(dir, 100);

    struct fileops fo = fileops_posix;
    fo.open = f_open;
    fo.close = f_close;
    fo.pwrite = f_pwrite;
    fo.datasync = f_datasync;
    fo.rename = f_rename;
    fo.sync_dir = f_sync_dir;
    struct snapshot_section sec = {1, (const uint8_t *)"new state", 9};
    char tmp[4096], fin[4096];
    snap_path(tmp, sizeof tmp, dir, 200, ".snap.tmp");
    snap_path(fin, sizeof fin, dir, 200, ".snap");

    struct failing cases[3] = {{.fail_write = 1}, {.fail_datasync = 1}, {.fail_rename = 1}};
    int expect[3] = {-ENOSPC, -EIO, -EIO};
    for (int i = 0; i < 3; i++) {
        failing_cfg = cases[i];
        assert_int_equal(snapshot_write(&fo, dir, 200, 1, &sec, 1), expect[i]);
        assert_false(file_exists(tmp));
        assert_false(file_exists(fin));
        struct snapshot s;
        assert_int_equal(snapshot_load_newest(&fo, dir, UINT64_MAX, &s), 0);
        assert_int_equal(s.covered_pos, 100);
        snapshot_free(&s);
    }
    /* The directory sync fails after the rename: an error, nothing deleted. */
    failing_cfg = (struct failing){.fail_sync_dir = 1};
    write_small(dir, 150);
    assert_int_equal(snapshot_write(&fo, dir, 200, 1, &sec, 1), -EIO);
    assert_int_equal(count_files(dir), 3);
    failing_cfg = (struct failing){0};
    assert_int_equal(snapshot_write(&fo, dir, 300, 1, &sec, 1), 0);
    uint64_t pos[4];
    assert_int_equal(snapshot_list(&fo, dir, pos, 4), 2);
    assert_int_equal(pos[0], 200);
    assert_int_equal(pos[1], 300);
    tu_rmtree(dir);
}

static void test_renamed_file_rejected(void **state)
{
    (void)state;
    /* A file whose name disagrees with its header is not trusted. */
    char *dir = tu_tempdir("snap");
    write_small(dir, 100);
    write_small(dir, 200);
    char from[4096], to[4096];
    snap_path(from, sizeof from, dir, 200, ".snap");
    snap_path(to, sizeof to, dir, 500, ".snap");
    assert_int_equal(rename(from, to), 0);
    struct snapshot s;
    capture_start();
    assert_int_equal(snapshot_load_newest(NULL, dir, UINT64_MAX, &s), 0);
    capture_stop();
    assert_int_equal(s.covered_pos, 100);
    assert_int_equal(n_warnings, 1);
    snapshot_free(&s);
    tu_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_keeps_two_newest),
        cmocka_unit_test(test_same_position_replaces),
        cmocka_unit_test(test_lower_position_drops_lost_future),
        cmocka_unit_test(test_newest_damaged_falls_back),
        cmocka_unit_test(test_all_damaged_not_found),
        cmocka_unit_test(test_missing_and_empty_dir),
        cmocka_unit_test(test_max_pos_skips_newer),
        cmocka_unit_test(test_truncated_never_succeeds),
        cmocka_unit_test(test_leftover_tmp_ignored_and_cleaned),
        cmocka_unit_test(test_bad_magic_and_version),
        cmocka_unit_test(test_too_many_sections),
        cmocka_unit_test(test_huge_section_length),
        cmocka_unit_test(test_write_errors_remove_temp),
        cmocka_unit_test(test_renamed_file_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
