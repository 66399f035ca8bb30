/*
 * store.h — the storage of one namespace: its journal, its partitions'
 * indexes, its checkpoints and its retention, and the recovery that ties them
 * together (DESIGN.md §2). The layer above (the broker) sees partitions as
 * 64-bit ids with dense offsets, appends commands and publishes, and hands the
 * store its own state to checkpoint through struct store_client.
 *
 * Directory layout under cfg->dir:
 *     LOCK              flock'd while open (a second opener gets CY_ELOCKED)
 *     journal/NNN.seg   the journal (journal.h)
 *     index/ID.idx      one index per partition (index.h)
 *     snap/NNN.snap     the two newest checkpoints (snapshot.h)
 *
 * Recovery (store_open):
 *   1. the journal cuts its torn tail;
 *   2. the newest valid snapshot that the journal still reaches is loaded
 *      (section STORE: partitions and their high waters; section CLIENT:
 *      handed to client->restore);
 *   3. indexes below a checkpoint's high water are trusted (they were synced
 *      by that checkpoint); one that is missing or shorter is rebuilt by
 *      scanning the journal from its start;
 *   4. records after the snapshot are replayed: publishes are (re)indexed —
 *      an index entry that disagrees with the journal is replaced — and every
 *      record is passed to client->replay in journal order;
 *   5. index entries past what the journal holds are cut off.
 * Recovery reads the journal from the newest checkpoint on, so its time is
 * bounded by the checkpoint interval, not by the data size.
 *
 * Checkpoint (store_checkpoint): sync the journal up to its end E, sync all
 * indexes, write a snapshot covering E. Retention deletes only segments that
 * end before the OLDER of the two kept snapshots, so recovery can always fall
 * back to it.
 *
 * Threading: the owner thread calls everything, except store_durable /
 * store_wait_durable which any thread may call.
 */
#ifndef COYOTE_STORAGE_STORE_H
#define COYOTE_STORAGE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "storage/index.h"
#include "storage/journal.h"
#include "storage/msgrec.h"

enum { SNAP_SECTION_STORE = 1, SNAP_SECTION_CLIENT = 2 };

/* A publish reaches at most this many partitions (a topic has at most 64). */
#define STORE_MAX_PUBLISH_PARTS 64

struct store_config {
    const struct fileops *fo; /* NULL: fileops_posix */
    const char *dir;
    uint64_t segment_bytes; /* 0: 64 MiB */
    enum journal_fsync fsync;
    uint32_t fsync_interval_ms;
    bool no_preallocate;
    unsigned index_max_open;         /* 0: 64 */
    uint64_t checkpoint_interval_ms; /* 0: 60 s */
    uint64_t checkpoint_bytes;       /* journal bytes between checkpoints; 0: 64 MiB */
    void (*on_durable)(void *arg, uint64_t durable);
    void *on_durable_arg;
};

/* The layer above, for recovery and checkpoints. Any member may be NULL. */
struct store_client {
    void *arg;
    /* Restore the state saved by `save` (len 0: a fresh store). */
    int (*restore)(void *arg, const uint8_t *state, size_t len);
    /* Re-apply one record, in journal order, during recovery. */
    int (*replay)(void *arg, const struct journal_record *rec);
    /* Serialize the current state into out. */
    int (*save)(void *arg, struct buf *out);
};

struct store;

/* Open (creating if needed) and recover. Errors: CY_ELOCKED, CY_ECORRUPT
 * (logged with where and why), CY_EFORMAT, a client callback's error, -errno. */
int store_open(const struct store_config *cfg, const struct store_client *client,
               struct store **out);
/* Sync, checkpoint (when healthy), close. Returns the first error met. */
int store_close(struct store *s);

struct journal *store_journal(struct store *s);

/* Append a non-publish command record. *end: position to wait for. */
int store_append(struct store *s, uint8_t type, uint64_t ts, const void *body, uint32_t len,
                 uint64_t *end);

/* Append one atomic publish: each part's first_offset must be the partition's
 * next offset (store_part_next), else CY_EINVAL and nothing is written. The
 * messages are indexed at once (readable before they are durable: the caller
 * decides what to show). parts[i].part_id must be distinct; at most
 * STORE_MAX_PUBLISH_PARTS parts. */
int store_publish(struct store *s, uint64_t ts, const struct msgrec_part *parts, size_t nparts,
                  const void *extra, uint32_t extra_len, uint64_t *end);

/* The body and position of the record the last successful store_publish
 * wrote (owned by the store, valid until the next store_publish). */
void store_last_publish(struct store *s, const uint8_t **body, size_t *len, uint64_t *pos);

/* The partition's next offset (its high water); 0 for a partition never
 * written. */
int store_part_next(struct store *s, uint64_t part_id, uint64_t *next);
/* The oldest offset still readable (retention may have removed older ones). */
int store_part_first(struct store *s, uint64_t part_id, uint64_t *first);
/* First offset with timestamp >= ts (store_part_next when none). */
int store_part_seek_time(struct store *s, uint64_t part_id, uint64_t ts, uint64_t *offset);
/* Read one message: its bytes appended to out and its index
 * entry into e (may be NULL). CY_ERANGE when the offset is not stored (never
 * written, or removed by retention), CY_ECORRUPT, -errno. */
int store_read_msg(struct store *s, uint64_t part_id, uint64_t offset, struct buf *out,
                   struct index_entry *e);

/* The index entry of one message, without reading it. CY_ERANGE when the
 * offset is not stored. */
int store_read_entry(struct store *s, uint64_t part_id, uint64_t offset, struct index_entry *e);

uint64_t store_durable(struct store *s);
int store_wait_durable(struct store *s, uint64_t pos, int timeout_ms);

/* Checkpoint now, on the calling thread (after the background one in flight,
 * if any, has finished). 0 or an error (the previous checkpoint stays in
 * force). */
int store_checkpoint(struct store *s);
/* Called periodically by the owner thread: collects a finished background
 * checkpoint (its error, if it failed), or starts one when due by time or
 * journal bytes since the last one. The fdatasyncs and the snapshot write run
 * on a thread of their own; the owner thread only encodes the state. */
int store_maybe_checkpoint(struct store *s, uint64_t now_mono_ms);
/* True while a background checkpoint runs. */
bool store_checkpoint_running(struct store *s);
/* Wait for the background checkpoint in flight, if any, and take its result
 * (0 or its error). */
int store_checkpoint_wait(struct store *s);

/* Delete whole journal segments whose records are all older than
 * now_ms - max_age_ms (0: no age limit), and then the oldest segments while
 * the journal is larger than max_bytes (0: no limit) — only segments that a
 * kept checkpoint covers. *deleted receives the segment count. */
int store_retain(struct store *s, uint64_t now_ms, uint64_t max_age_ms, uint64_t max_bytes,
                 int *deleted);
/* The same in two steps, so the layer above can act on the messages before
 * they go: where retention would cut (*cut == journal start: nothing), then
 * the cut itself. */
int store_retain_point(struct store *s, uint64_t now_ms, uint64_t max_age_ms,
                       uint64_t max_bytes, uint64_t *cut);
int store_retain_to(struct store *s, uint64_t cut, int *deleted);
/* The journal position of message `first` of a partition (the oldest one the
 * layer above still needs): segments wholly before the minimum over all
 * partitions can go. UINT64_MAX when nothing is stored from first on. */
int store_oldest_needed(struct store *s, uint64_t part_id, uint64_t first, uint64_t *pos);
/* The first offset of a partition whose message lies at or after journal
 * position pos (store_part_next when none). */
int store_part_first_at(struct store *s, uint64_t part_id, uint64_t pos, uint64_t *offset);

struct store_stats {
    uint64_t journal_start, journal_end, journal_durable;
    uint64_t journal_bytes;
    uint32_t segments;
    uint32_t partitions;
    uint64_t checkpoints;
    uint64_t last_checkpoint_pos;
    uint64_t recovery_replayed_records;
    uint64_t recovery_ms;
};
void store_get_stats(struct store *s, struct store_stats *out);

#endif
