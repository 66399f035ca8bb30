/*
 * journal.h — the write-ahead journal of one namespace (DESIGN.md §2), behind a
 * small interface: append, durable position, read, delete-before. The broker
 * and the store use only these functions, so a replicated implementation (a
 * NATS JetStream stream, DESIGN.md §6) can replace the local one without
 * touching them.
 *
 * Positions: a journal is one dense sequence of record bytes. A record's
 * position is the number of record bytes before it; positions never repeat
 * and never move, whatever is deleted. A record occupies [pos, next).
 *
 * Invariants (every implementation):
 *   1. durable <= end; both only grow (until close).
 *   2. Every record that ends at or before `durable` survives a crash intact.
 *   3. After the first write or sync failure the journal is read-only for
 *      good (sticky error): appends return CY_EREADONLY, `durable` stops, and
 *      nothing appended after the last successful sync is ever reported
 *      durable. A restart recovers from what is on disk.
 *   4. Record timestamps never decrease (appends with an older timestamp are
 *      refused), so a segment's records are all older than the first record
 *      of the next segment (retention by age relies on it).
 *
 * Threading: one owner thread calls append/read/scan/delete_before/close (the
 * server's loop); journal_durable, journal_wait_durable and journal_sync may be
 * called from any thread. Implementations may run their own threads (the file
 * journal's group-commit thread) and report progress through on_durable.
 */
#ifndef COYOTE_STORAGE_JOURNAL_H
#define COYOTE_STORAGE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "base/buf.h"
#include "storage/fileops.h"

#define JOURNAL_RECORD_HEADER 20u
#define JOURNAL_MAX_BODY (64u << 20)

enum journal_fsync {
    JOURNAL_FSYNC_ALWAYS,   /* a record is acknowledged after fdatasync covered it (group commit) */
    JOURNAL_FSYNC_INTERVAL, /* fdatasync every interval_ms; acknowledged when written */
    JOURNAL_FSYNC_NEVER,    /* fdatasync only on journal_sync/close; acknowledged when written */
};

/* "always" | "interval=<ms>" (1..60000) | "never". 0 or CY_EINVAL. */
int journal_fsync_parse(const char *s, enum journal_fsync *policy, uint32_t *interval_ms);
/* Writes "always" / "interval=N" / "never" into buf. */
const char *journal_fsync_name(enum journal_fsync policy, uint32_t interval_ms, char *buf,
                               size_t len);

/* A view of one record. body points into memory owned by the journal call
 * that produced it, valid until that call returns (scan callbacks) or until
 * the scratch buffer given to journal_read changes. */
struct journal_record {
    uint64_t pos;
    uint64_t next;
    uint8_t type; /* 1..255; 0 is never a valid type */
    uint64_t timestamp_ms;
    const uint8_t *body;
    uint32_t len;
};

struct journal_stats {
    uint64_t appends;
    uint64_t syncs;
    uint64_t sync_ns_total;
    uint64_t sync_ns_max;
    uint64_t sync_hist[16]; /* syncs by latency: bucket i counts < 2^i * 64 us (last: the rest) */
    uint64_t bytes;         /* bytes of records currently kept */
    uint32_t segments;
};

/* The interface. An implementation embeds struct journal first and fills ops;
 * the journal_* functions below dispatch through it. */
struct journal;
struct journal_segment_info;
struct journal_ops {
    int (*appendv)(struct journal *j, uint8_t type, uint64_t ts, const struct iovec *iov,
                   int iovcnt, uint64_t *pos, uint64_t *end);
    uint64_t (*end)(struct journal *j);
    uint64_t (*durable)(struct journal *j);
    uint64_t (*start)(struct journal *j);
    uint64_t (*last_timestamp)(struct journal *j);
    int (*error)(struct journal *j);
    enum journal_fsync (*policy)(struct journal *j);
    int (*wait_durable)(struct journal *j, uint64_t pos, int timeout_ms);
    int (*sync)(struct journal *j);
    int (*read)(struct journal *j, uint64_t pos, struct buf *scratch, struct journal_record *rec);
    int (*read_raw)(struct journal *j, uint64_t pos, void *dst, size_t n);
    int (*scan)(struct journal *j, uint64_t from, uint64_t to,
                int (*cb)(void *arg, const struct journal_record *rec), void *arg);
    int (*delete_before)(struct journal *j, uint64_t pos);
    int (*segments)(struct journal *j, struct journal_segment_info *out, int max);
    void (*get_stats)(struct journal *j, struct journal_stats *out);
    int (*close)(struct journal *j);
};
struct journal {
    const struct journal_ops *ops;
};

/* Record types 1..15 are the storage layer's; 16..255 the broker's. */
enum { JREC_PUBLISH = 1 };

/* Append one record whose body is the concatenation of iov[0..iovcnt).
 * On success *pos (if not NULL) is the record's position and *end (if not
 * NULL) the position after it — what journal_durable() must reach before the
 * record may be acknowledged under JOURNAL_FSYNC_ALWAYS.
 * Errors: CY_EREADONLY (sticky error state), CY_ETOOBIG (body over
 * JOURNAL_MAX_BODY or larger than a segment), CY_EINVAL (type 0 or a timestamp
 * older than the previous record's), -errno (the journal is now read-only). */
int journal_appendv(struct journal *j, uint8_t type, uint64_t timestamp_ms, const struct iovec *iov,
                    int iovcnt, uint64_t *pos, uint64_t *end);
static inline int journal_append(struct journal *j, uint8_t type, uint64_t timestamp_ms,
                                 const void *body, uint32_t len, uint64_t *pos, uint64_t *end)
{
    struct iovec iov = {(void *)body, len};
    return journal_appendv(j, type, timestamp_ms, &iov, 1, pos, end);
}

/* Position after the last appended record. */
uint64_t journal_end(struct journal *j);
/* Everything before this position is durable (invariant 2). */
uint64_t journal_durable(struct journal *j);
/* Position of the oldest record still kept. */
uint64_t journal_start(struct journal *j);
/* Timestamp of the newest record (0 when empty). */
uint64_t journal_last_timestamp(struct journal *j);
/* The sticky error: 0 while healthy, else the negative code that caused it. */
int journal_error(struct journal *j);
/* The durability policy in force. */
enum journal_fsync journal_policy(struct journal *j);

/* Block until durable >= pos: 0, CY_EREADONLY if the journal failed first,
 * -ETIMEDOUT after timeout_ms (< 0: no limit). */
int journal_wait_durable(struct journal *j, uint64_t pos, int timeout_ms);
/* Make everything appended so far durable now, whatever the policy; wait. */
int journal_sync(struct journal *j);

/* Read the record at pos (a record boundary) into scratch, verifying its
 * checksum. 0, CY_ERANGE (outside [start, end)), CY_ECORRUPT, -errno. */
int journal_read(struct journal *j, uint64_t pos, struct buf *scratch,
                 struct journal_record *rec);
/* Read n raw bytes at pos (inside one record). 0, CY_ERANGE, -errno. */
int journal_read_raw(struct journal *j, uint64_t pos, void *dst, size_t n);
/* Call cb for each record in [from, to) in order (to = UINT64_MAX: to the
 * end), verifying every checksum. A non-zero return of cb stops the scan and
 * is returned. 0 at the end, CY_ECORRUPT on a damaged record (logged with the
 * segment and file offset: the scan never skips past corrupt data), -errno. */
int journal_scan(struct journal *j, uint64_t from, uint64_t to,
                 int (*cb)(void *arg, const struct journal_record *rec), void *arg);

/* Delete whole segments whose records all lie before pos and are durable.
 * journal_start() moves to the first kept segment. Never deletes the active
 * segment. 0 or -errno. */
int journal_delete_before(struct journal *j, uint64_t pos);

/* Segment list for retention decisions. */
struct journal_segment_info {
    uint64_t base;           /* first position */
    uint64_t end;            /* one past the last record */
    uint64_t max_timestamp;  /* an upper bound of its record timestamps */
    bool active;             /* the segment being appended to */
};
/* Fill at most max entries, oldest first; returns the segment count. */
int journal_segments(struct journal *j, struct journal_segment_info *out, int max);

void journal_get_stats(struct journal *j, struct journal_stats *out);

/* Sync what was appended (unless in the error state), stop the group-commit
 * thread, release everything. Returns the sticky error or the last sync's. */
int journal_close(struct journal *j);

/* ---- the local implementation: segment files with group commit ---------- */

struct journal_file_config {
    const struct fileops *fo;   /* NULL: fileops_posix */
    const char *dir;            /* created if missing */
    uint64_t segment_bytes;     /* record space per segment; 0: 64 MiB; min 4 KiB */
    enum journal_fsync fsync;
    uint32_t fsync_interval_ms; /* for JOURNAL_FSYNC_INTERVAL */
    bool no_preallocate;        /* default: fallocate whole segments at creation */
    unsigned max_open_segments; /* read descriptors kept open; 0: 8 */
    /* A position known to be durable from elsewhere (the newest checkpoint's
     * covered position): recovery treats damage before it as corruption, like
     * damage before the durable hint. 0: none. */
    uint64_t durable_floor;
    /* Called from the group-commit thread each time the durable position
     * advances, and once when the journal enters its error state (with the
     * unchanged durable position). Must be quick and thread-safe (e.g. write
     * an eventfd). */
    void (*on_durable)(void *arg, uint64_t durable);
    void *on_durable_arg;
};

/* Open (or create) the journal in cfg->dir and recover it:
 *   - segments are listed and their headers checked (CY_EFORMAT / CY_ECORRUPT
 *     for a damaged header, CY_ECORRUPT when positions do not chain);
 *   - from the newest durable hint on (a position every earlier sync proved
 *     durable, kept in segment headers), records are verified; the first bad
 *     record there is a torn tail: the segment is cut at it (the rest zeroed)
 *     and later segments are deleted, logged as a warning;
 *   - records before the hint are not read here (recovery time stays bounded);
 *     journal_scan verifies them when the store replays.
 * 0 and *out, or a negative code (nothing is modified on CY_EFORMAT). */
int journal_file_open(const struct journal_file_config *cfg, struct journal **out);

/* ---- the on-disk format, exposed for the checker and the fuzzers -------- */

#define JOURNAL_SEGMENT_HEADER 64u
#define JOURNAL_SEGMENT_MAGIC 0x4C4A5943u /* "CYJL" */
#define JOURNAL_FORMAT_VERSION 1

struct journal_segment_header {
    uint64_t base;
    uint64_t first_timestamp;
    uint64_t capacity;
    uint64_t durable_hint; /* 0 when its checksum fails */
    bool hint_valid;
};

/* Decode a 64-byte segment header. 0, CY_EFORMAT, CY_ECORRUPT. */
int journal_segment_header_decode(const uint8_t *p, size_t n, struct journal_segment_header *h);
/* Decode the record at the start of p[0..n) that sits at position pos.
 * Returns 0 (rec filled, body points into p), 1 (an all-zero header: the
 * clean end of data), CY_ECORRUPT (bad length, type or checksum), or
 * -EAGAIN when n is too short to hold the record its header announces. */
int journal_record_decode(const uint8_t *p, size_t n, uint64_t pos, struct journal_record *rec);
/* Encode a record header for body bytes (checksum over pos, header, body). */
void journal_record_header_encode(uint8_t hdr[JOURNAL_RECORD_HEADER], uint64_t pos, uint8_t type,
                                  uint64_t timestamp_ms, const struct iovec *iov, int iovcnt,
                                  uint32_t len);
/* "<20-digit base>.seg" into buf. */
void journal_segment_name(uint64_t base, char *buf, size_t len);

#endif
