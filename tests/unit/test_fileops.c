/* test_fileops.c — fileops_posix and the fo_* helpers against a temp directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four above, as cmocka requires */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coyote.h"
#include "storage/fileops.h"
#include "testutil.h"

static const struct fileops *const fo = &fileops_posix;

struct fixture {
    char *dir;
    char path[4096];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->dir = tu_tempdir("fileops");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

/* dir/name, in a buffer reused by each call. */
static const char *at(struct fixture *f, const char *name)
{
    snprintf(f->path, sizeof f->path, "%s/%s", f->dir, name);
    return f->path;
}

static void test_open_write_read_size(void **state)
{
    struct fixture *f = *state;
    char buf[32];
    uint64_t size;

    assert_int_equal(fo->open(fo->ctx, at(f, "missing"), O_RDONLY, 0), -ENOENT);
    int fd = fo->open(fo->ctx, at(f, "a"), O_RDWR | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(fo->open(fo->ctx, at(f, "a"), O_RDWR | O_CREAT | O_EXCL, 0644), -EEXIST);

    assert_int_equal(fo->pwrite(fo->ctx, fd, "hello world", 11, 0), 11);
    assert_int_equal(fo->pread(fo->ctx, fd, buf, sizeof buf, 6), 5);
    assert_memory_equal(buf, "world", 5);
    assert_int_equal(fo->pread(fo->ctx, fd, buf, sizeof buf, 11), 0);
    assert_int_equal(fo->fsize(fo->ctx, fd, &size), 0);
    assert_int_equal(size, 11);
    assert_int_equal(fo->datasync(fo->ctx, fd), 0);

    assert_int_equal(fo->ftruncate(fo->ctx, fd, 5), 0);
    assert_int_equal(fo->fsize(fo->ctx, fd, &size), 0);
    assert_int_equal(size, 5);
    assert_int_equal(fo->ftruncate(fo->ctx, fd, 8), 0);
    assert_int_equal(fo->pread(fo->ctx, fd, buf, sizeof buf, 0), 8);
    assert_memory_equal(buf, "hello\0\0\0", 8);

    /* offsets that do not fit an off_t are refused, not wrapped */
    assert_int_equal(fo->pread(fo->ctx, fd, buf, 1, UINT64_MAX), -EINVAL);
    assert_int_equal(fo->pwrite(fo->ctx, fd, buf, 1, UINT64_MAX), -EINVAL);
    assert_int_equal(fo->ftruncate(fo->ctx, fd, UINT64_MAX), -EINVAL);

    /* a read-only descriptor does not write */
    int ro = fo->open(fo->ctx, at(f, "a"), O_RDONLY, 0);
    assert_true(ro >= 0);
    assert_int_equal(fo->pwrite(fo->ctx, ro, "x", 1, 0), -EBADF);
    assert_int_equal(fo->close(fo->ctx, ro), 0);

    assert_int_equal(fo->close(fo->ctx, fd), 0);
    assert_int_equal(fo->close(fo->ctx, fd), -EBADF);
    assert_int_equal(fo->datasync(fo->ctx, fd), -EBADF);
    assert_int_equal(fo->fsize(fo->ctx, fd, &size), -EBADF);
    assert_int_equal(fo->pread(fo->ctx, fd, buf, 1, 0), -EBADF);

    /* O_TRUNC */
    fd = fo->open(fo->ctx, at(f, "a"), O_RDWR | O_TRUNC, 0);
    assert_true(fd >= 0);
    assert_int_equal(fo->fsize(fo->ctx, fd, &size), 0);
    assert_int_equal(size, 0);
    fo->close(fo->ctx, fd);
}

static void test_fallocate(void **state)
{
    struct fixture *f = *state;
    uint64_t size;
    int fd = fo->open(fo->ctx, at(f, "seg"), O_RDWR | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(fo->fallocate(fo->ctx, fd, 0, 0), 0);
    int r = fo->fallocate(fo->ctx, fd, 0, 65536);
    if (r == -EOPNOTSUPP) {
        print_message("fallocate not supported by this file system; fallback path only\n");
    } else {
        assert_int_equal(r, 0);
        assert_int_equal(fo->fsize(fo->ctx, fd, &size), 0);
        assert_int_equal(size, 65536);
        uint8_t buf[65536];
        assert_int_equal(fo_read_full(fo, fd, buf, sizeof buf, 0), (ssize_t)sizeof buf);
        for (size_t i = 0; i < sizeof buf; i++)
            assert_int_equal(buf[i], 0);
        /* never shrinks */
        assert_int_equal(fo->fallocate(fo->ctx, fd, 0, 10), 0);
        assert_int_equal(fo->fsize(fo->ctx, fd, &size), 0);
        assert_int_equal(size, 65536);
    }
    assert_int_equal(fo->fallocate(fo->ctx, fd, UINT64_MAX - 10, 100), -EFBIG);
    assert_int_equal(fo->fallocate(fo->ctx, -1, 0, 10), -EBADF);
    fo->close(fo->ctx, fd);
}

/* writeback is a hint: it changes no bytes, and reports a bad descriptor. */
static void test_writeback(void **state)
{
    struct fixture *f = *state;
    int fd = fo->open(fo->ctx, at(f, "wb"), O_RDWR | O_CREAT, 0644);
    assert_true(fd >= 0);
    uint8_t buf[8192], back[8192];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 7);
    assert_int_equal(fo_write_all(fo, fd, buf, sizeof buf, 0), 0);
    assert_non_null(fo->writeback);
    assert_int_equal(fo->writeback(fo->ctx, fd, 0, sizeof buf), 0);
    assert_int_equal(fo->writeback(fo->ctx, fd, 4096, 1u << 20), 0); /* past the end: fine */
    assert_int_equal(fo_read_full(fo, fd, back, sizeof back, 0), (ssize_t)sizeof back);
    assert_memory_equal(back, buf, sizeof buf);
    assert_int_equal(fo->writeback(fo->ctx, -1, 0, 10), -EBADF);
    fo->close(fo->ctx, fd);
}

static void test_parse_name(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int digits;
        unsigned radix;
        const char *suffix;
        int ok;
        uint64_t v;
    } cases[] = {
        {"00000000000000000042.seg", 20, 10, ".seg", 1, 42},
        {"18446744073709551615.snap", 20, 10, ".snap", 1, UINT64_MAX},
        {"18446744073709551616.snap", 20, 10, ".snap", 0, 0}, /* past UINT64_MAX */
        {"0000000000000000042.seg", 20, 10, ".seg", 0, 0},    /* one digit short */
        {"00000000000000000042.seg.x", 20, 10, ".seg", 0, 0}, /* trailing bytes */
        {"00000000000000000042.snap.tmp", 20, 10, ".snap.tmp", 1, 42},
        {"000000000000004a.idx", 16, 16, ".idx", 1, 0x4a},
        {"ffffffffffffffff.idx.tmp", 16, 16, ".idx.tmp", 1, UINT64_MAX},
        {"000000000000004A.idx", 16, 16, ".idx", 0, 0}, /* lowercase only */
        {"000000000000004a.idx", 16, 10, ".idx", 0, 0}, /* not decimal */
        {"", 20, 10, ".seg", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 7;
        int ok = fo_parse_name(cases[i].name, cases[i].digits, cases[i].radix, cases[i].suffix, &v);
        if (ok != cases[i].ok || (ok && v != cases[i].v))
            fail_msg("case %zu (%s): %d %llu", i, cases[i].name, ok, (unsigned long long)v);
    }
}

static void test_rename_unlink_mkdir_sync_dir(void **state)
{
    struct fixture *f = *state;
    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s/tmp", f->dir);
    snprintf(to, sizeof to, "%s/final", f->dir);

    int fd = fo->open(fo->ctx, from, O_RDWR | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(fo_write_all(fo, fd, "v2", 2, 0), 0);
    fo->close(fo->ctx, fd);
    fd = fo->open(fo->ctx, to, O_RDWR | O_CREAT, 0644);
    assert_int_equal(fo_write_all(fo, fd, "v1", 2, 0), 0);
    fo->close(fo->ctx, fd);

    assert_int_equal(fo->rename(fo->ctx, from, to), 0);
    assert_int_equal(fo->sync_dir(fo->ctx, f->dir), 0);
    assert_int_equal(access(from, F_OK), -1);
    uint8_t *data;
    size_t len;
    assert_int_equal(fo_read_file(fo, to, 100, &data, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(data, "v2", 2);
    free(data);
    assert_int_equal(fo->rename(fo->ctx, from, to), -ENOENT);

    assert_int_equal(fo->unlink(fo->ctx, to), 0);
    assert_int_equal(fo->unlink(fo->ctx, to), -ENOENT);

    /* mkdir: an existing directory is success; an existing file is not */
    assert_int_equal(fo->mkdir(fo->ctx, at(f, "d"), 0755), 0);
    assert_int_equal(fo->mkdir(fo->ctx, at(f, "d"), 0755), 0);
    fd = fo->open(fo->ctx, at(f, "file"), O_RDWR | O_CREAT, 0644);
    fo->close(fo->ctx, fd);
    assert_int_equal(fo->mkdir(fo->ctx, at(f, "file"), 0755), -EEXIST);
    assert_int_equal(fo->mkdir(fo->ctx, at(f, "no/such"), 0755), -ENOENT);

    assert_int_equal(fo->sync_dir(fo->ctx, at(f, "d")), 0);
    assert_int_equal(fo->sync_dir(fo->ctx, at(f, "nope")), -ENOENT);
    assert_int_equal(fo->sync_dir(fo->ctx, at(f, "file")), -ENOTDIR);
}

struct names {
    char buf[1024];
    int count;
    int stop_at;
};

static int collect(void *arg, const char *name)
{
    struct names *n = arg;
    strcat(n->buf, name);
    strcat(n->buf, ";");
    n->count++;
    return n->count == n->stop_at ? 42 : 0;
}

static void test_list_dir(void **state)
{
    struct fixture *f = *state;
    struct names n = {0};
    assert_int_equal(fo->list_dir(fo->ctx, f->dir, collect, &n), 0);
    assert_int_equal(n.count, 0);

    const char *names[] = {"000.seg", "001.seg", "snap"};
    for (size_t i = 0; i < 3; i++) {
        int fd = fo->open(fo->ctx, at(f, names[i]), O_RDWR | O_CREAT, 0644);
        assert_true(fd >= 0);
        fo->close(fo->ctx, fd);
    }
    assert_int_equal(fo->mkdir(fo->ctx, at(f, "sub"), 0755), 0);
    assert_int_equal(fo->list_dir(fo->ctx, f->dir, collect, &n), 0);
    assert_int_equal(n.count, 4);
    for (size_t i = 0; i < 3; i++)
        assert_non_null(strstr(n.buf, names[i]));
    assert_non_null(strstr(n.buf, "sub;"));
    assert_null(strstr(n.buf, ".;"));

    struct names stop = {.stop_at = 2};
    assert_int_equal(fo->list_dir(fo->ctx, f->dir, collect, &stop), 42);
    assert_int_equal(stop.count, 2);
    assert_int_equal(fo->list_dir(fo->ctx, at(f, "nope"), collect, &n), -ENOENT);
    assert_int_equal(fo->list_dir(fo->ctx, at(f, "snap"), collect, &n), -ENOTDIR);
}

static void test_lock(void **state)
{
    struct fixture *f = *state;
    /* flock locks belong to the open file description: a second open() in the
     * same process conflicts like another process would. */
    int a = fo->open(fo->ctx, at(f, "LOCK"), O_RDWR | O_CREAT, 0644);
    int b = fo->open(fo->ctx, at(f, "LOCK"), O_RDWR, 0);
    assert_true(a >= 0 && b >= 0);
    assert_int_equal(fo->lock(fo->ctx, a), 0);
    assert_int_equal(fo->lock(fo->ctx, a), 0);
    assert_int_equal(fo->lock(fo->ctx, b), -EWOULDBLOCK);
    fo->close(fo->ctx, a);
    assert_int_equal(fo->lock(fo->ctx, b), 0);
    fo->close(fo->ctx, b);
    assert_int_equal(fo->lock(fo->ctx, b), -EBADF);
}

static void test_write_all_and_read_full(void **state)
{
    struct fixture *f = *state;
    enum { N = 3 << 20 };
    uint8_t *src = malloc(N), *dst = malloc(N + 10);
    uint64_t rng = 42;
    assert_non_null(src);
    assert_non_null(dst);
    tu_fill(&rng, src, N);

    int fd = fo->open(fo->ctx, at(f, "big"), O_RDWR | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(fo_write_all(fo, fd, src, N, 100), 0);
    assert_int_equal(fo_read_full(fo, fd, dst, N, 100), N);
    assert_memory_equal(src, dst, N);
    /* stops at end of file */
    assert_int_equal(fo_read_full(fo, fd, dst, N + 10, 100), N);
    assert_int_equal(fo_read_full(fo, fd, dst, 10, N + 100), 0);
    assert_int_equal(fo_write_all(fo, fd, src, 0, 0), 0);
    assert_int_equal(fo_write_all(fo, -1, src, 1, 0), -EBADF);
    assert_int_equal(fo_read_full(fo, -1, dst, 1, 0), -EBADF);
    fo->close(fo->ctx, fd);
    free(src);
    free(dst);
}

static void test_read_file(void **state)
{
    struct fixture *f = *state;
    static uint8_t sentinel[1];
    uint8_t *data = sentinel;
    size_t len = 99;

    assert_int_equal(fo_read_file(fo, at(f, "none"), 100, &data, &len), -ENOENT);
    assert_null(data);

    int fd = fo->open(fo->ctx, at(f, "empty"), O_RDWR | O_CREAT, 0644);
    fo->close(fo->ctx, fd);
    assert_int_equal(fo_read_file(fo, at(f, "empty"), 0, &data, &len), 0);
    assert_non_null(data);
    assert_int_equal(len, 0);
    free(data);

    fd = fo->open(fo->ctx, at(f, "small"), O_RDWR | O_CREAT, 0644);
    assert_int_equal(fo_write_all(fo, fd, "0123456789", 10, 0), 0);
    fo->close(fo->ctx, fd);
    assert_int_equal(fo_read_file(fo, at(f, "small"), 10, &data, &len), 0);
    assert_int_equal(len, 10);
    assert_memory_equal(data, "0123456789", 10);
    free(data);
    assert_int_equal(fo_read_file(fo, at(f, "small"), 9, &data, &len), CY_ETOOBIG);
    assert_null(data);
}

static void test_mkdirs(void **state)
{
    struct fixture *f = *state;
    struct stat st;
    assert_int_equal(fo_mkdirs(fo, at(f, "a/b/c")), 0);
    assert_int_equal(stat(f->path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(fo_mkdirs(fo, at(f, "a/b/c")), 0); /* already there */
    assert_int_equal(fo_mkdirs(fo, at(f, "a//b/d/")), 0);
    assert_int_equal(stat(at(f, "a/b/d"), &st), 0);
    assert_true(S_ISDIR(st.st_mode));

    int fd = fo->open(fo->ctx, at(f, "a/file"), O_RDWR | O_CREAT, 0644);
    fo->close(fo->ctx, fd);
    assert_int_equal(fo_mkdirs(fo, at(f, "a/file")), -EEXIST);
    assert_int_equal(fo_mkdirs(fo, at(f, "a/file/x")), -EEXIST); /* stops at a/file */
    assert_int_equal(fo->mkdir(fo->ctx, at(f, "a/file/x"), 0755), -ENOTDIR);
    assert_int_equal(fo_mkdirs(fo, ""), -ENOENT);
    assert_int_equal(fo_mkdirs(fo, "/"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_write_read_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fallocate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writeback, setup, teardown),
        cmocka_unit_test(test_parse_name),
        cmocka_unit_test_setup_teardown(test_rename_unlink_mkdir_sync_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_all_and_read_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mkdirs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
