/*
 * faultfs.h — an in-memory file system behind struct fileops that models what
 * a crash keeps, and injects I/O faults. Test support only.
 *
 * Model (what a real kernel + disk may do after power loss):
 *   - file contents: bytes written and then covered by a datasync of that file
 *     survive; bytes written after the file's last datasync may be lost
 *     (CRASH_DROP), or survive only in part, sector by sector, some of them
 *     garbled (CRASH_GARBLE) — the "torn write" of a real disk;
 *   - names: a file created, renamed or unlinked is durable only after
 *     sync_dir of its directory; a crash restores every directory's names to
 *     what its last sync_dir saw (a file created and synced but whose
 *     directory was never synced vanishes);
 *   - ftruncate/fallocate sizes behave like data: durable after datasync.
 * Directories exist as soon as mkdir returns (we treat mkdir as durable, as
 * the storage code always syncs the parent after creating its directories).
 *
 * Faults (counted across all files, 1-based):
 *   faultfs_crash_at_sync(fs, n): the n-th datasync/sync_dir does not happen;
 *     the file system is "dead" from then on: that call and every later
 *     mutating call return -EIO (reads still work), as if the process had
 *     died there. Then faultfs_crash() produces the post-crash image.
 *   faultfs_fail_sync_at(fs, n, err): the n-th sync returns err, once;
 *     the data is NOT made durable by that call.
 *   faultfs_fail_write_at(fs, n, err): the n-th pwrite returns err, once.
 *   faultfs_short_write_at(fs, n): the n-th pwrite writes half its bytes.
 *   faultfs_set_space(fs, bytes): total file bytes past this → -ENOSPC
 *     (pwrite, fallocate).
 *
 * Thread-safe (one internal mutex). Descriptors stay valid across
 * faultfs_crash() only in the sense that they return -EBADF: after a crash
 * the storage code must be reopened.
 */
#ifndef COYOTE_TEST_FAULTFS_H
#define COYOTE_TEST_FAULTFS_H

#include <stdbool.h>
#include <stdint.h>

#include "storage/fileops.h"

enum faultfs_crash_mode { CRASH_DROP, CRASH_GARBLE };

struct faultfs;

/* seed drives every random choice (CRASH_GARBLE), so runs are reproducible. */
struct faultfs *faultfs_new(uint64_t seed);
void faultfs_free(struct faultfs *fs);
/* The fileops table bound to this file system (valid until faultfs_free). */
const struct fileops *faultfs_ops(struct faultfs *fs);

void faultfs_crash_at_sync(struct faultfs *fs, unsigned n);
void faultfs_fail_sync_at(struct faultfs *fs, unsigned n, int err);
void faultfs_fail_write_at(struct faultfs *fs, unsigned n, int err);
void faultfs_short_write_at(struct faultfs *fs, unsigned n);
void faultfs_set_space(struct faultfs *fs, uint64_t bytes);
/* Remove every scheduled fault (the "dead" state included). */
void faultfs_clear_faults(struct faultfs *fs);

/* How many syncs (datasync + sync_dir) and pwrites were called so far. */
unsigned faultfs_sync_count(const struct faultfs *fs);
unsigned faultfs_write_count(const struct faultfs *fs);
/* true once a crash_at_sync point was reached. */
bool faultfs_dead(const struct faultfs *fs);

/* Simulate power loss now: every open descriptor is closed, every file and
 * directory is reduced to its durable state per the model above, faults are
 * cleared and the counters reset. The file system is then usable again. */
void faultfs_crash(struct faultfs *fs, enum faultfs_crash_mode mode);

/* Flip one byte of a file's current (and durable) content — to test
 * corruption detection. 0, or -ENOENT / -EINVAL (off past the end). */
int faultfs_corrupt(struct faultfs *fs, const char *path, uint64_t off);
/* Size of a file's current content, or -ENOENT. */
int64_t faultfs_file_size(struct faultfs *fs, const char *path);

#endif
