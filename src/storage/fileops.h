/*
 * fileops.h — every file operation of the storage engine goes through this
 * table (SQLite's VFS, beanstalkd's falloc hook), so tests can replace it with
 * a file system that injects ENOSPC, EIO, short writes and crashes
 * (tests/support/faultfs.h).
 *
 * Contract of every member: return 0 (or a byte count / fd) on success and a
 * negative errno on failure; never set-and-return -1. Paths are ordinary
 * NUL-terminated file names built by the storage code itself (never wire data).
 * All members must be safe to call from two threads at once (the loop thread
 * and the group-commit thread).
 */
#ifndef COYOTE_STORAGE_FILEOPS_H
#define COYOTE_STORAGE_FILEOPS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct fileops {
    void *ctx;
    /* open(2) flags (O_RDONLY/O_RDWR/O_CREAT/O_EXCL/O_TRUNC; O_CLOEXEC implied).
     * Returns an fd >= 0 or -errno. */
    int (*open)(void *ctx, const char *path, int flags, unsigned mode);
    int (*close)(void *ctx, int fd);
    /* One call: may transfer fewer bytes than asked (0 at end of file). */
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t n, uint64_t off);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t n, uint64_t off);
    /* fdatasync(2): file data (and the size) reach stable storage. */
    int (*datasync)(void *ctx, int fd);
    int (*ftruncate)(void *ctx, int fd, uint64_t size);
    /* Reserve [off, off+len) so later writes there cannot fail for space; the
     * file grows to off+len if shorter (new bytes read as zeros).
     * -EOPNOTSUPP where the file system cannot: callers fall back. */
    int (*fallocate)(void *ctx, int fd, uint64_t off, uint64_t len);
    int (*fsize)(void *ctx, int fd, uint64_t *size);
    /* rename(2): atomic replacement; durable only after sync_dir(parent). */
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*unlink)(void *ctx, const char *path);
    /* mkdir(2); an existing directory is success (0). */
    int (*mkdir)(void *ctx, const char *path, unsigned mode);
    /* fsync a directory: names created, renamed or removed in it become durable. */
    int (*sync_dir)(void *ctx, const char *path);
    /* Call cb(arg, name) for each entry of the directory except "." and "..",
     * in no particular order; a non-zero return from cb stops the walk and is
     * returned. -ENOENT if the directory does not exist. */
    int (*list_dir)(void *ctx, const char *path, int (*cb)(void *arg, const char *name),
                    void *arg);
    /* Exclusive advisory lock held as long as fd is open (flock LOCK_EX|LOCK_NB);
     * -EWOULDBLOCK if another process holds it. */
    int (*lock)(void *ctx, int fd);
    /* Start writing [off, off+len) back to the disk without waiting for it
     * (sync_file_range SYNC_FILE_RANGE_WRITE): a hint that spreads the I/O a
     * later datasync would do at once. Durability still needs datasync. May
     * be NULL (nothing to do). */
    int (*writeback)(void *ctx, int fd, uint64_t off, uint64_t len);
};

/* The real thing: POSIX calls, retrying EINTR. */
extern const struct fileops fileops_posix;

/* Write all n bytes at off, looping over short writes. 0 or -errno
 * (-EIO if a write makes no progress). */
int fo_write_all(const struct fileops *fo, int fd, const void *buf, size_t n, uint64_t off);
/* Read up to n bytes at off, looping over short reads; stops at end of file.
 * Returns the byte count (< n only at end of file) or -errno. */
ssize_t fo_read_full(const struct fileops *fo, int fd, void *buf, size_t n, uint64_t off);
/* Read a whole (small) file into a malloc'd buffer the caller frees.
 * 0, -ENOENT, -errno, or CY_ETOOBIG past max_len. */
int fo_read_file(const struct fileops *fo, const char *path, size_t max_len, uint8_t **out,
                 size_t *out_len);
/* mkdir -p for a path whose components the storage code built. */
int fo_mkdirs(const struct fileops *fo, const char *path);
/* The storage's file names: exactly `digits` digits in `radix` (10, or 16 in
 * lowercase), then `suffix`, then nothing. 1 and *v on a match; 0 otherwise,
 * also for a number past UINT64_MAX. (Segments and snapshots: 20 decimal
 * digits; indexes: 16 hex digits.) */
int fo_parse_name(const char *name, int digits, unsigned radix, const char *suffix, uint64_t *v);

#endif
