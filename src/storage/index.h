/*
 * index.h — the per-partition offset index (DESIGN.md §2).
 *
 * One file per partition, named by the partition's 64-bit id (assigned by the
 * broker; topic names never reach the file system): "<dir>/<id as 16 hex>.idx".
 * The file is a 64-byte header then fixed 32-byte entries; entry i describes
 * offset base+i, so lookup by offset is O(1) and seeking by timestamp is a
 * binary search (timestamps never decrease within a partition). Format in
 * docs/storage.md.
 *
 * Indexes are derived data: written without fsync except by index_set_sync()
 * (called by a checkpoint, which then records each partition's high water),
 * validated on load (a damaged or zero tail is cut off at the first bad entry),
 * and rebuilt from the journal by the store when missing or behind.
 *
 * Resource bounds: an index's metadata (base, count, a small append buffer) is
 * in memory while it is known to the set; its file descriptor is opened on
 * demand and closed in LRU order so that at most max_open_files are open.
 *
 * Thread-safety: none; the owning (loop) thread calls everything.
 */
#ifndef COYOTE_STORAGE_INDEX_H
#define COYOTE_STORAGE_INDEX_H

#include <stdbool.h>
#include <stdint.h>

#include "storage/fileops.h"

#define INDEX_ENTRY_SIZE 32
#define INDEX_HEADER_SIZE 64

/* One message's place in the journal. */
struct index_entry {
    uint64_t pos;          /* journal position of the message bytes */
    uint64_t timestamp_ms; /* publish time */
    uint32_t len;          /* byte length of the message in the journal */
    uint32_t key_hash;     /* 0 = no key; the broker's hash of the key otherwise */
    uint32_t msg_crc;      /* CRC-32C of the message bytes (checked on read) */
};

struct index_set_config {
    const struct fileops *fo; /* NULL: fileops_posix */
    const char *dir;          /* created if missing */
    unsigned max_open_files;  /* 0: 64 */
    unsigned append_buffer;   /* entries buffered in memory per index before a write; 0: 64 */
};

struct index_set;
struct index;

int index_set_open(const struct index_set_config *cfg, struct index_set **out);
/* Flushes buffered entries (no fsync), closes files, frees everything. */
void index_set_close(struct index_set *set);

/* The index of partition `id`: loaded (and validated) from its file on first
 * use, or created empty with first offset `base` when no file exists (a
 * created file is written at the first flush). The returned pointer is owned
 * by the set and valid until index_set_close/index_remove.
 * Errors: -errno, CY_EFORMAT (bad magic/version: the file is left alone). */
int index_get(struct index_set *set, uint64_t id, uint64_t base, struct index **out);
/* 1 if an index file or in-memory index exists for id, else 0. */
int index_exists(struct index_set *set, uint64_t id);
/* Delete the index (file included). */
int index_remove(struct index_set *set, uint64_t id);
/* Call cb for every partition id that has an index file in the directory
 * (used by recovery and the checker). */
int index_set_list(struct index_set *set, int (*cb)(void *arg, uint64_t id), void *arg);

uint64_t index_id(const struct index *ix);
/* First offset still in the file (entries below it were dropped). */
uint64_t index_base(const struct index *ix);
/* One past the last offset: the partition's high water. */
uint64_t index_next(const struct index *ix);

/* Record offset `offset`; it must equal index_next(ix) (else CY_EINVAL).
 * The entry is buffered; it is visible to lookups at once. */
int index_append(struct index *ix, uint64_t offset, const struct index_entry *e);
/* The entry of `offset`: 0, CY_ERANGE outside [base, next), CY_ECORRUPT if
 * the stored entry fails its checksum, -errno on I/O error. */
int index_lookup(struct index *ix, uint64_t offset, struct index_entry *e);
/* The first offset in [base, next) whose timestamp >= ts, or index_next() when none. */
int index_seek_time(struct index *ix, uint64_t ts, uint64_t *offset);
/* The first offset whose journal position >= pos, or index_next() when none
 * (positions increase with offsets; used after retention deleted segments). */
int index_seek_pos(struct index *ix, uint64_t pos, uint64_t *offset);
/* Forget entries >= next (recovery: entries past the recovered journal).
 * next must be in [base, index_next()]. */
int index_truncate(struct index *ix, uint64_t next);
/* Entries below `offset` are no longer needed. The file is rewritten with a
 * new base (temp + rename) when that frees at least half of it and at least
 * 64 KiB; otherwise nothing changes on disk. Offsets are never renumbered. */
int index_drop_before(struct index *ix, uint64_t offset);

/* Decode one 32-byte entry (the file format, for readers such as the
 * checker): 0, or CY_ECORRUPT when its checksum fails. */
int index_entry_decode(const uint8_t *p, struct index_entry *e);

/* Write every index's buffered entries (no fsync). */
int index_set_flush(struct index_set *set);
/* Write and fdatasync every index changed since the last sync, and the
 * directory when files were created or renamed (a checkpoint's step). */
int index_set_sync(struct index_set *set);

/* The same in three steps, so that a checkpoint's fdatasyncs run off the
 * owner thread. index_set_sync_begin (owner thread) writes buffered entries,
 * lists the files changed since their last sync (names copied) and whether
 * the directory needs a sync, and clears those marks. index_sync_files runs
 * on any thread: it opens each listed file by name and fdatasyncs it (a file
 * removed meanwhile needs nothing), then the directory; it touches no set
 * state. When it fails, index_set_sync_failed (owner thread) marks every
 * index and the directory as changed again. */
struct index_sync_list {
    char **paths;
    size_t n;
    char *dir; /* NULL: the directory needs no sync */
};
int index_set_sync_begin(struct index_set *set, struct index_sync_list *out);
int index_sync_files(const struct fileops *fo, const struct index_sync_list *l);
void index_set_sync_failed(struct index_set *set);
void index_sync_list_free(struct index_sync_list *l);

#endif
