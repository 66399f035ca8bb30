/*
 * qgroup_int.h — the internal structures of a queue or FIFO group, shared by
 *   qgroup.c       the state, the apply functions, the checkpoint
 *   qgroup_plan.c  the planning side: plans, dry runs, checks, numbers
 * The representation and its invariants are described at the top of
 * qgroup.c. Not for use outside these two files.
 */
#ifndef COYOTE_BROKER_QGROUP_INT_H
#define COYOTE_BROKER_QGROUP_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/qgroup.h"

#define NIL UINT32_MAX

enum estate { ST_FREE, ST_LEASED, ST_RETRY, ST_WAITING, ST_AVAIL, ST_BLOCKED, ST_DEAD, ST_COUNT };

#define F_DELIVERED 0x01u /* delivered at least once (acks count) */
#define F_INQ 0x80u       /* linked in its key's queue (not saved) */

/* An offset in [floor, scan) that is not settled (or a dead one). */
struct entry {
    uint64_t offset;
    uint64_t at;
    uint64_t recv; /* receive that leased it */
    uint64_t qseq; /* position in its key's queue */
    uint32_t attempt, nacks, expiries, key_hash;
    uint32_t qprev, qnext; /* key queue links; qnext also links free slots */
    uint32_t pmark, prel;  /* planner scratch: decided / released in plan `gen` */
    uint8_t part, state, flags, pclear;
};

/* A timer heap item: valid while its entry still matches (qg_hvalid). */
struct hitem {
    uint64_t at;
    uint64_t off;
    uint32_t idx;
};

/* One partition's floor, scan position, timer heap and counters. */
struct part {
    uint64_t floor, scan;
    struct hitem *heap;
    uint32_t hn, hcap;
    uint32_t cnt[ST_COUNT]; /* entries per state */
    uint32_t below;         /* entries with offset < floor */
    uint64_t *ahead;        /* ring: offsets of entries at or above floor (inv. 2) */
    uint32_t ahead_head, ahead_n, ahead_cap;
};

/* A key hash and the (head, tail) entries of its queue Q(K). */
struct kslot {
    uint32_t key; /* 0: empty */
    uint32_t head, tail;
};

/* Key hash -> kslot (open addressing); the planner uses one too. */
struct ktab {
    struct kslot *s;
    uint32_t cap, count;
};

struct qgroup {
    bool fifo;
    uint32_t window;
    struct qgroup_config cfg;
    uint64_t recv_seq, qseq;
    uint64_t init_mask; /* partitions with a floor and scan */
    uint64_t heap_lost; /* partitions whose heap must be rebuilt */
    struct part part[QGROUP_MAX_PARTITIONS];
    struct entry *ents;
    uint32_t ecap, ehw, elive, efree;
    uint32_t *slots; /* (partition, offset) -> entry index; NIL empty */
    uint32_t scap;
    struct ktab keys;
    uint32_t gen; /* planner generation for scratch marks */
};

static inline bool keyed(const struct qgroup *g, const struct entry *e)
{
    return g->fifo && e->key_hash;
}

/* The entry of (p, offset), or NIL. */
uint32_t qg_lookup(const struct qgroup *g, uint32_t p, uint64_t off);
/* Is heap item `it` of partition p still current (its entry has that
 * offset, a timed state and that `at`)? Stale items are dropped lazily. */
bool qg_hvalid(const struct qgroup *g, uint32_t p, const struct hitem *it);
/* Rebuild the heaps a failed push lost (qgroup.c invariant 7). 0 or
 * CY_ENOMEM. */
int qg_heaps_repair(struct qgroup *g);

/* Key tables: the group's key queues, the planner's decided keys. */
struct kslot *qg_kt_find(const struct ktab *t, uint32_t key);
/* Insert a key that is not there; room must be reserved (qg_kt_reserve). */
struct kslot *qg_kt_insert(struct ktab *t, uint32_t key);
/* Room for n more keys. 0 or CY_ENOMEM (the table unchanged). */
int qg_kt_reserve(struct ktab *t, uint64_t n);

#endif
