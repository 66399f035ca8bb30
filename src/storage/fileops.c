/*
 * fileops.c — the POSIX implementation of struct fileops, and the small
 * helpers every storage module uses on top of any fileops table.
 *
 * Invariants:
 *   1. Every member returns 0 / a count / an fd, or a negative errno; errno is
 *      read right after the failing call and never leaks out as -1.
 *   2. EINTR is retried everywhere except close(2): on Linux the descriptor is
 *      already released when close fails with EINTR, so retrying could close a
 *      descriptor another thread just opened; we report success instead.
 *   3. Every descriptor is opened O_CLOEXEC (directories too), so a fork+exec
 *      elsewhere in the process never inherits the journal's files.
 *   4. Offsets above INT64_MAX are -EINVAL here rather than wrapping into a
 *      negative off_t.
 *   5. The helpers allocate with malloc and return -ENOMEM: storage also runs
 *      inside a user's process through the embedded client backend.
 */
#include "storage/fileops.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coyote.h"

static int px_open(void *ctx, const char *path, int flags, unsigned mode)
{
    int fd;
    do
        fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

static int px_close(void *ctx, int fd)
{
    if (close(fd) < 0 && errno != EINTR)
        return -errno;
    return 0;
}

static ssize_t px_pread(void *ctx, int fd, void *buf, size_t n, uint64_t off)
{
    ssize_t r;
    if (off > INT64_MAX)
        return -EINVAL;
    do
        r = pread(fd, buf, n, (off_t)off);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static ssize_t px_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off)
{
    ssize_t r;
    if (off > INT64_MAX)
        return -EINVAL;
    do
        r = pwrite(fd, buf, n, (off_t)off);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static int px_writeback(void *ctx, int fd, uint64_t off, uint64_t len)
{
    (void)ctx;
    int r;
    do
        r = sync_file_range(fd, (off64_t)off, (off64_t)len, SYNC_FILE_RANGE_WRITE);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int px_datasync(void *ctx, int fd)
{
    int r;
    do
        r = fdatasync(fd);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int px_ftruncate(void *ctx, int fd, uint64_t size)
{
    int r;
    if (size > INT64_MAX)
        return -EINVAL;
    do
        r = ftruncate(fd, (off_t)size);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int px_fallocate(void *ctx, int fd, uint64_t off, uint64_t len)
{
    int r;
    if (len == 0)
        return 0; /* nothing to reserve; the kernel would say EINVAL */
    if (off > INT64_MAX || len > INT64_MAX - off)
        return -EFBIG;
    do
        r = fallocate(fd, 0, (off_t)off, (off_t)len);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (errno == EOPNOTSUPP || errno == ENOSYS)
        return -EOPNOTSUPP;
    return -errno;
}

static int px_fsize(void *ctx, int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int px_rename(void *ctx, const char *from, const char *to)
{
    return rename(from, to) < 0 ? -errno : 0;
}

static int px_unlink(void *ctx, const char *path)
{
    return unlink(path) < 0 ? -errno : 0;
}

static int px_mkdir(void *ctx, const char *path, unsigned mode)
{
    struct stat st;
    if (mkdir(path, (mode_t)mode) == 0)
        return 0;
    if (errno != EEXIST)
        return -errno;
    if (stat(path, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -EEXIST;
}

static int open_dir(const char *path)
{
    int fd;
    do
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

static int px_sync_dir(void *ctx, const char *path)
{
    int fd = open_dir(path), r;
    if (fd < 0)
        return fd;
    do
        r = fsync(fd);
    while (r < 0 && errno == EINTR);
    r = r < 0 ? -errno : 0;
    close(fd);
    return r;
}

static int px_list_dir(void *ctx, const char *path, int (*cb)(void *arg, const char *name),
                       void *arg)
{
    int fd = open_dir(path), r = 0;
    DIR *dir;
    if (fd < 0)
        return fd;
    dir = fdopendir(fd);
    if (!dir) {
        r = -errno;
        close(fd);
        return r;
    }
    for (;;) {
        struct dirent *de;
        errno = 0;
        de = readdir(dir);
        if (!de) {
            r = errno ? -errno : 0;
            break;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        r = cb(arg, de->d_name);
        if (r != 0)
            break;
    }
    closedir(dir); /* closes fd too */
    return r;
}

static int px_lock(void *ctx, int fd)
{
    int r;
    do
        r = flock(fd, LOCK_EX | LOCK_NB);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

const struct fileops fileops_posix = {
    .ctx = NULL,
    .open = px_open,
    .close = px_close,
    .pread = px_pread,
    .pwrite = px_pwrite,
    .datasync = px_datasync,
    .ftruncate = px_ftruncate,
    .fallocate = px_fallocate,
    .fsize = px_fsize,
    .rename = px_rename,
    .unlink = px_unlink,
    .mkdir = px_mkdir,
    .sync_dir = px_sync_dir,
    .list_dir = px_list_dir,
    .lock = px_lock,
    .writeback = px_writeback,
};

int fo_write_all(const struct fileops *fo, int fd, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = fo->pwrite(fo->ctx, fd, p, n, off);
        if (w < 0)
            return (int)w;
        if (w == 0)
            return -EIO;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

ssize_t fo_read_full(const struct fileops *fo, int fd, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t r = fo->pread(fo->ctx, fd, p + done, n - done, off + done);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

int fo_read_file(const struct fileops *fo, const char *path, size_t max_len, uint8_t **out,
                 size_t *out_len)
{
    uint64_t size;
    uint8_t *data = NULL;
    ssize_t got;
    int r, fd;

    *out = NULL;
    *out_len = 0;
    fd = fo->open(fo->ctx, path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    r = fo->fsize(fo->ctx, fd, &size);
    if (r < 0)
        goto fail;
    if (size > max_len) {
        r = CY_ETOOBIG;
        goto fail;
    }
    data = malloc(size ? (size_t)size : 1);
    if (!data) {
        r = -ENOMEM;
        goto fail;
    }
    /* The file may shrink under us (it never should, but then the count is
     * what was there); it may not grow past what fsize promised the caller. */
    got = fo_read_full(fo, fd, data, (size_t)size, 0);
    if (got < 0) {
        r = (int)got;
        goto fail;
    }
    fo->close(fo->ctx, fd);
    *out = data;
    *out_len = (size_t)got;
    return 0;

fail:
    free(data);
    fo->close(fo->ctx, fd);
    return r;
}

int fo_mkdirs(const struct fileops *fo, const char *path)
{
    size_t len = strlen(path);
    char *copy;
    int r = 0;

    if (len == 0)
        return -ENOENT;
    copy = malloc(len + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, path, len + 1);
    /* Create each prefix that ends a component: "/a", "/a/b", ... The root
     * and empty components ("a//b", a trailing '/') are skipped. */
    for (size_t i = 1; i <= len; i++) {
        if (i < len && copy[i] != '/')
            continue;
        if (copy[i - 1] == '/')
            continue;
        copy[i] = '\0';
        r = fo->mkdir(fo->ctx, copy, 0755);
        if (i < len)
            copy[i] = '/';
        if (r < 0)
            break;
    }
    free(copy);
    return r;
}

int fo_parse_name(const char *name, int digits, unsigned radix, const char *suffix, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < digits; i++) {
        char c = name[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (radix == 16 && c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return 0; /* the NUL of a short name too */
        if (x > (UINT64_MAX - d) / radix)
            return 0;
        x = x * radix + d;
    }
    if (strcmp(name + digits, suffix) != 0)
        return 0;
    *v = x;
    return 1;
}
