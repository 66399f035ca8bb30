/*
 * qgroup.h — the state machine of one queue or FIFO consumer group on one
 * topic (API.md §7, §8; DESIGN.md §3).
 *
 * The broker drives it in two steps for every command that needs a decision:
 *   plan  (live only)       look at the state and `now`, decide; change nothing
 *   apply (live and replay) change the state exactly as a journaled decision says
 * The broker journals the plan between the two, so replaying the journal
 * calls only the apply functions and reaches exactly the same state. Apply
 * functions must depend on nothing but the state and their arguments (no
 * clock, no randomness, no hash-table iteration order in any output).
 *
 * State per partition p (0..63):
 *   floor[p]   every offset below is settled (acked, dead-lettered, or gone)
 *   scan[p]    every offset >= scan[p] was never looked at by this group
 *   touched    offsets in [floor, scan) with a state: LEASED(until, attempt),
 *              ACKED, RETRY(at), WAITING(at: delivery delayed by delay_ms),
 *              and for FIFO BLOCKED (an earlier message of its key is held)
 *   dead       offsets dead-lettered for this group (a dlq_topic copy or not),
 *              kept (outside the floor logic) so redrive can bring them back
 * An offset in [floor, scan) that is not touched is available. The floor
 * advances over ACKED offsets; scan advances as receives look further.
 * Memory is O(touched + dead): messages in flight, never the backlog.
 *
 * Message lifecycle (queue):
 *
 *   new ──deliver──► LEASED ──ack──► ACKED ──(floor passes)──► forgotten
 *    │                │ │ └──nack, n < len(retry)──► RETRY(at) ──(at <= now)──► available
 *    │                │ └──nack, retries used up──► dead (+ a dlq copy, by the broker)
 *    │                └──lease expires──► available (or dead-lettered when the
 *    │                                    expiry count reaches max_deliveries)
 *    └─(scheduled_at > now)─► WAITING(at) ──(at <= now)──► available
 *
 * FIFO adds, per key hash (messages without a key have key_hash 0 and no
 * ordering): a message is deliverable only if no earlier message of its key
 * in the group is LEASED, RETRY (waiting for a retry) or WAITING (delayed: a
 * keyed message that a receive meets before its scheduled_at takes its place
 * in its key's order then, and holds the key while it waits; at its time it
 * is delivered as its key's head, or waits behind the message holding the
 * key); later messages of a held key are BLOCKED in order behind it. One
 * receive may give one caller several consecutive messages of one key. When a
 * message of a key is nacked or its lease expires, the later messages of that
 * key leased in the same receive are released (available again, attempt not
 * counted). Dead-lettering a message releases its key. Memory is bounded:
 * the scan of a partition pauses while `fifo_window` of its messages are
 * BLOCKED behind held keys (messages in flight do not count), so a key held
 * for long stalls the partition's look-ahead only once that many of the
 * messages after it are blocked.
 *
 * Message ids: (partition, offset). Thread-safety: none (the broker thread).
 */
#ifndef COYOTE_BROKER_QGROUP_H
#define COYOTE_BROKER_QGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define QGROUP_MAX_PARTITIONS 64
#define QGROUP_MAX_RETRY 100
#define QGROUP_DEFAULT_FIFO_WINDOW 100000 /* qgroup_new(fifo, 0) uses it */

struct qgroup_config {
    uint32_t retry_count;
    uint64_t retry_schedule[QGROUP_MAX_RETRY]; /* ms */
    bool has_dlq_topic;                        /* the broker keeps the name */
    uint32_t max_deliveries;                   /* 0: unlimited */
};

/* What the group needs to know about messages: provided by the broker. */
struct qgroup_env {
    void *arg;
    uint32_t partitions; /* the topic's current partition count */
    /* Offsets [first, next) of partition p are stored. */
    void (*bounds)(void *arg, uint32_t p, uint64_t *first, uint64_t *next);
    /* The key hash (0: no key) and scheduled_at (0: none) of a stored message.
     * 0, or CY_ERANGE when it is gone (retention, trim): treat as settled. */
    int (*meta)(void *arg, uint32_t p, uint64_t offset, uint32_t *key_hash,
                uint64_t *scheduled_at);
};

struct qgroup_id {
    uint32_t partition;
    uint64_t offset;
};

enum qplan_kind {
    QPLAN_DELIVER, /* lease it; `attempt` is its delivery number (1 = first) */
    QPLAN_WAIT,    /* not yet: WAITING until `at` (scheduled_at) */
    QPLAN_DEAD,    /* dead-letter it (max_deliveries reached on lease expiry) */
    QPLAN_SKIP,    /* gone from storage: settle it (treated like ACKED) */
    QPLAN_BLOCK,   /* FIFO: looked at, but an earlier message of its key is held */
};

struct qplan_item {
    uint32_t partition;
    uint64_t offset;
    uint8_t kind; /* enum qplan_kind */
    uint32_t attempt;
    uint32_t key_hash; /* FIFO: the message's key hash (apply needs no storage access) */
    uint64_t at;
};

struct qplan {
    struct qplan_item *items; /* grown by the planner (malloc); freed by qplan_free */
    uint32_t n, cap;
    uint32_t delivered; /* how many items are QPLAN_DELIVER */
};
void qplan_free(struct qplan *p);

struct qgroup;

/* A new, empty group (fifo: FIFO semantics). NULL when out of memory.
 * New groups start at the earliest retained message: floor = scan = first. */
struct qgroup *qgroup_new(bool fifo, uint32_t fifo_window);
void qgroup_free(struct qgroup *g);
bool qgroup_is_fifo(const struct qgroup *g);
/* How many per-message entries the group holds (in flight, waiting, blocked,
 * dead): a memory gauge for metrics and tests. */
size_t qgroup_touched(const struct qgroup *g);
const struct qgroup_config *qgroup_config(const struct qgroup *g);
/* Replace the configuration (apply). */
void qgroup_configure(struct qgroup *g, const struct qgroup_config *cfg);

/* Plan a receive of up to `batch` messages (only partition `only` when
 * only >= 0): expired leases and due retries/waits first (oldest first), then
 * messages never looked at, partitions visited round-robin starting at
 * `start_partition`. Items of kind WAIT/DEAD/SKIP do not count toward batch.
 * The plan may be empty. 0 or CY_ENOMEM. */
int qgroup_plan_receive(struct qgroup *g, const struct qgroup_env *env, uint64_t now,
                        uint32_t batch, int32_t only, uint32_t start_partition,
                        struct qplan *plan);
/* Apply a receive plan: DELIVER items become LEASED until lease_until with
 * their attempt (all items of one plan form one "receive" for the FIFO
 * release rule), WAIT items WAITING until `at`, DEAD items dead (the broker
 * stored the copy when the group has a dlq_topic), SKIP items
 * ACKED, BLOCK items BLOCKED behind their key; scan positions move past every
 * item's offset. Uses nothing but the state and the plan (no storage). */
int qgroup_apply_receive(struct qgroup *g, uint64_t now, uint64_t lease_until,
                         const struct qplan *plan);

/* Ack: each id becomes ACKED (idempotent; ids never delivered, already
 * settled or unknown are ignored). For FIFO, releases the key. */
int qgroup_apply_ack(struct qgroup *g, const struct qgroup_id *ids, uint32_t n);

/* Plan a nack: per id, RETRY at now + (delay_ms if has_delay else
 * retry_schedule[nacks]) while nacks < retry_count, else DEAD. Ids that are
 * not LEASED are left out of the plan (kind: only QPLAN_DELIVER is not used:
 * items are QPLAN_WAIT with `at` = retry time, or QPLAN_DEAD). */
int qgroup_plan_nack(struct qgroup *g, const struct qgroup_id *ids, uint32_t n, uint64_t now,
                     bool has_delay, uint64_t delay_ms, struct qplan *plan);
int qgroup_apply_nack(struct qgroup *g, const struct qplan *plan);

/* Extend leases, all or nothing: 0, or CY_EINVAL with *bad_id set and
 * *reason one of "message is already acked", "message is in the dead-letter
 * queue", "lease has expired", "message has no active lease". */
int qgroup_check_extend(struct qgroup *g, const struct qgroup_id *ids, uint32_t n, uint64_t now,
                        uint32_t *bad_index, const char **reason);
int qgroup_apply_extend(struct qgroup *g, const struct qgroup_id *ids, uint32_t n,
                        uint64_t lease_until);

/* Redrive: every dead message becomes available again with its delivery and
 * nack counts reset. Returns how many via *count. */
int qgroup_apply_redrive(struct qgroup *g, uint32_t *count);

/* Partition p's stored range moved up (retention, trim): offsets below
 * `first` are gone; forget them (floor/scan move up, touched/dead entries
 * below are dropped). Apply (journaled by the broker as part of a trim or
 * discovered identically on replay). */
void qgroup_forget_before(struct qgroup *g, uint32_t p, uint64_t first);

/* Numbers for group.get / metrics / long polling. */
struct qgroup_stats {
    uint64_t floor[QGROUP_MAX_PARTITIONS];
    uint64_t in_flight;      /* LEASED and not expired at now */
    uint64_t waiting_retry;  /* RETRY */
    uint64_t dead;           /* dead for this group */
    uint64_t delayed;        /* WAITING */
    uint64_t lag;            /* stored messages not yet settled (sum over partitions of next - floor, minus acked above floor) */
    uint64_t oldest_unsettled_offset[QGROUP_MAX_PARTITIONS]; /* == floor */
};
void qgroup_get_stats(const struct qgroup *g, const struct qgroup_env *env, uint64_t now,
                      struct qgroup_stats *st);
/* How many messages a receive at `now` could return, counting up to cap
 * (cheap enough to call after every publish for long polling). */
uint32_t qgroup_available(struct qgroup *g, const struct qgroup_env *env, uint64_t now, int32_t only,
                          uint32_t cap);
/* The earliest future time at which something becomes available by itself
 * (lease expiry, retry, delay), or UINT64_MAX. Never late; it may be early
 * (e.g. the time of a delayed message whose key an earlier one holds).
 * Delayed messages no receive has met yet are not known here: a receive plan
 * lists them as QPLAN_WAIT items with their time. */
uint64_t qgroup_next_wakeup(const struct qgroup *g, uint64_t now);

/* Checkpoint: a canonical encoding (equal states give equal bytes: sorted,
 * no pointers), and its decoder. */
int qgroup_save(const struct qgroup *g, struct buf *out);
/* Reads every version written so far. CY_ECORRUPT on malformed input;
 * NULL-safe on failure (*out untouched). */
int qgroup_load(struct reader *r, struct qgroup **out);

#endif
