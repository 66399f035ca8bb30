/*
 * qgroup.c — one queue or FIFO consumer group (qgroup.h, API.md §7–§9,
 * DESIGN.md §3): its state, the apply functions that change it, and its
 * checkpoint. The planning side (plans, dry runs, checks and numbers, which
 * change nothing but scratch marks) is qgroup_plan.c; the structures both
 * share are in qgroup_int.h.
 *
 * Representation. Every offset in [floor[p], scan[p]) was looked at by a
 * receive plan. Those that are not settled have an entry in one table keyed by
 * (partition, offset); an offset in that range WITHOUT an entry is settled
 * (acked or skipped), so acked messages cost
 * nothing. Entries:
 *
 *   LEASED(at = until)   RETRY(at)   WAITING(at = scheduled_at)
 *   AVAIL(at = 0)        BLOCKED     DEAD (kept for redrive)
 *
 * AVAIL is "available again, not by a timer": a FIFO key's released or
 * unblocked head, a redriven message. The timed states (LEASED, RETRY,
 * WAITING, AVAIL) sit in a per-partition min-heap ordered by (at, offset);
 * the heap is derived data (never saved, rebuilt on load) with lazy deletion:
 * an item is valid while its entry still has that offset, a timed state and
 * that `at`. A receive visits due items in (at, partition, offset) order
 * without popping them (a small auxiliary heap walks the partition heaps), so
 * planning changes nothing but scratch marks.
 *
 * Invariants:
 *   1. floor[p] <= scan[p]; entries have offset < scan[p]. Entries below
 *      floor[p] are DEAD ones the floor passed, or redriven ones (counted in
 *      part.below).
 *   2. floor[p] is the lowest offset >= the old floor with a non-DEAD entry,
 *      or scan[p]. Entries are only ever created at the scan position, so
 *      their offsets arrive in increasing order: part.ahead is a queue of
 *      the offsets of entries created at or above the floor, in order (stale
 *      ones, of entries since freed, are dropped lazily at the front and by
 *      compaction). The floor jumps to its front: amortized O(1), and no walk
 *      over acked offsets, however many there are.
 *   3. Memory is O(entries): in flight, waiting, blocked, dead. Never backlog.
 *   4. FIFO: for each key hash K != 0, queue Q(K) links the entries of K in
 *      states LEASED, RETRY, WAITING, AVAIL, BLOCKED (all but DEAD) in the
 *      order they became visible to the group, by `qseq`: scan order (a
 *      delayed message too: it takes its place when the scan meets it, and
 *      keeps it while it waits), a redriven one at the end. Only the head
 *      may be AVAIL; a BLOCKED head is made AVAIL at once (head_fix); a
 *      WAITING head stays WAITING until its time.
 *   5. FIFO deliverability: an entry of Q(K) may be delivered by a receive
 *      only if every entry before it in Q(K) is delivered (or dead-lettered,
 *      or skipped) by that same receive, and it is not a WAITING one before
 *      its time. So one receive holds the key, and may take a run of
 *      consecutive messages of it; a waiting (delayed) entry holds the key
 *      for everything behind it. The planner treats a key as held from the
 *      moment it decides a WAIT for it (later messages of the key in the
 *      same plan are BLOCK items). A WAITING entry that a receive finds due
 *      while an earlier entry holds the key becomes BLOCKED behind it.
 *   6. FIFO release: a nack or a lease expiry of a LEASED entry e turns the
 *      later entries of Q(K) LEASED in e's receive (same recv id) BLOCKED and
 *      un-counts their delivery (attempt - 1), so their next delivery carries
 *      the same attempt number as the one that was released, and the release
 *      never counts toward max_deliveries.
 *   7. Apply functions allocate before they change anything (reserve), except
 *      heap pushes: a failed push marks the partition's heap lost, and it is
 *      rebuilt from the entries before the next plan. Entries are the state.
 *   8. FIFO memory bound: the scan of a partition pauses while `window` of
 *      its entries are BLOCKED (counting those the same plan blocks); it goes
 *      on once some are delivered. Leased, waiting and other entries do not
 *      count, so any number of keys may be in flight; only a key held while
 *      `window` of its (or other held keys') later messages wait stalls the
 *      partition's look-ahead.
 *
 * Lifecycle (as in qgroup.h):
 *
 *   new ─plan─► LEASED ──ack──► (settled: entry freed)
 *    │            ├─nack──► RETRY ──(due)──► LEASED (again) ...
 *    │            ├─nack, no retry left / expiry count reached──► DEAD (+ dlq copy)
 *    │            └─(expired)──► LEASED again on the next receive (attempt + 1)
 *    ├─(scheduled later)─► WAITING ──(due)──► LEASED
 *    │                        └─FIFO, due, key held before it──► BLOCKED
 *    └─FIFO, key held──► BLOCKED ──(head of its key)──► AVAIL ──► LEASED
 *   DEAD ──redrive──► AVAIL (or BLOCKED behind its key)
 *
 * Choices the API leaves open:
 *   - A key's order across partitions (after the topic grew) is the order
 *     the group's scan met its messages. Messages never looked at in the
 *     same scan round are met in the order of the receive's start partition
 *     (round robin), so with a key in several partitions, a receive's start
 *     can decide which of them comes first, and, when one of them is
 *     delayed, how many a receive gets (qgroup_available counts from
 *     partition 0). Once met, the order is fixed.
 *   - A delayed (delay_ms) message with a key holds its key while it waits,
 *     from the moment the scan meets it (API.md §8: offset order), so a long
 *     delay stalls its key, and the messages blocked behind it count toward
 *     fifo_window (invariant 8), but it holds back no other key. Keyless delayed messages hold
 *     nothing; in queue mode nothing is ordered.
 *   - A waiting message's time is a wake-up time (qgroup_next_wakeup) even
 *     when an earlier message holds its key (then early, never late).
 *   - An ack is taken for any unsettled message delivered at least once
 *     (also after its lease expired or it was released); never-delivered,
 *     waiting and dead ones are ignored. An out-of-order ack is the caller's
 *     business: FIFO order is about deliveries.
 *   - A partition unknown to the group starts at the first offset of the
 *     receive plan that reaches it (the plan starts it at `first`).
 *   - qgroup_next_wakeup may answer early (now + 1) when thousands of due but
 *     untaken items would have to be walked; never late.
 *
 * Checkpoint format (qgroup_save), little-endian:
 *   u32 magic "CYQG", u16 version 2, u8 fifo, u32 fifo_window,
 *   u32 retry_count, retry_count × u64, u8 has_dlq_topic, u32 max_deliveries,
 *   u64 recv_seq, u64 qseq, u64 partition mask, per set bit (ascending)
 *   u64 floor, u64 scan; u32 n, then n entries sorted by (partition, offset):
 *   u8 partition, u64 offset, u8 state, u8 flags, u64 at, u64 recv, u64 qseq,
 *   u32 attempt, u32 nacks, u32 expiries, u32 key_hash.
 * Version 1 (same layout) kept keyed WAITING entries out of their key's
 * queue (their qseq is meaningless); it is read as it was meant: each joins
 * its key's queue at the end, in (at, partition, offset) order, as it would
 * have when due.
 */
#include "broker/qgroup.h"

#include <stdlib.h>
#include <string.h>

#include "broker/qgroup_int.h"
#include "coyote.h"

#define QG_MAGIC 0x47515943u /* "CYQG" */
#define QG_VERSION 2         /* 1: keyed WAITING entries were not in their key's queue */
#define ENTRY_BYTES 51u      /* one saved entry */

static bool is_timed(uint8_t st)
{
    return st == ST_LEASED || st == ST_RETRY || st == ST_WAITING || st == ST_AVAIL;
}

/* ---- entry table --------------------------------------------------------- */

static uint32_t ehash(uint32_t p, uint64_t off)
{
    uint64_t x = off + (uint64_t)p * 0x9E3779B97F4A7C15ull;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (uint32_t)x;
}

static uint32_t *slot_of(const struct qgroup *g, uint32_t p, uint64_t off)
{
    if (!g->scap)
        return NULL;
    uint32_t mask = g->scap - 1, i = ehash(p, off) & mask;
    while (g->slots[i] != NIL) {
        const struct entry *e = &g->ents[g->slots[i]];
        if (e->offset == off && e->part == p)
            return &g->slots[i];
        i = (i + 1) & mask;
    }
    return NULL;
}

uint32_t qg_lookup(const struct qgroup *g, uint32_t p, uint64_t off)
{
    const uint32_t *s = p < QGROUP_MAX_PARTITIONS ? slot_of(g, p, off) : NULL;
    return s ? *s : NIL;
}

static void slot_insert(struct qgroup *g, uint32_t idx)
{
    const struct entry *e = &g->ents[idx];
    uint32_t mask = g->scap - 1, i = ehash(e->part, e->offset) & mask;
    while (g->slots[i] != NIL)
        i = (i + 1) & mask;
    g->slots[i] = idx;
}

static void slot_delete(struct qgroup *g, uint32_t *s)
{
    uint32_t mask = g->scap - 1, i = (uint32_t)(s - g->slots), j = i;
    g->slots[i] = NIL;
    for (;;) { /* backward shift: no tombstones */
        j = (j + 1) & mask;
        if (g->slots[j] == NIL)
            return;
        const struct entry *e = &g->ents[g->slots[j]];
        uint32_t k = ehash(e->part, e->offset) & mask;
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            g->slots[i] = g->slots[j];
            g->slots[j] = NIL;
            i = j;
        }
    }
}

/* ---- key table (FIFO) ---------------------------------------------------- */

static uint32_t khash(uint32_t k)
{
    k ^= k >> 16;
    k *= 0x85ebca6bu;
    k ^= k >> 13;
    k *= 0xc2b2ae35u;
    k ^= k >> 16;
    return k;
}

struct kslot *qg_kt_find(const struct ktab *t, uint32_t key)
{
    if (!t->cap || !key)
        return NULL;
    uint32_t mask = t->cap - 1, i = khash(key) & mask;
    while (t->s[i].key) {
        if (t->s[i].key == key)
            return &t->s[i];
        i = (i + 1) & mask;
    }
    return NULL;
}

struct kslot *qg_kt_insert(struct ktab *t, uint32_t key) /* reserved */
{
    uint32_t mask = t->cap - 1, i = khash(key) & mask;
    while (t->s[i].key)
        i = (i + 1) & mask;
    t->s[i] = (struct kslot){key, NIL, NIL};
    t->count++;
    return &t->s[i];
}

static void kt_delete(struct ktab *t, struct kslot *ks)
{
    uint32_t mask = t->cap - 1, i = (uint32_t)(ks - t->s), j = i;
    t->s[i].key = 0;
    t->count--;
    for (;;) {
        j = (j + 1) & mask;
        if (!t->s[j].key)
            return;
        uint32_t k = khash(t->s[j].key) & mask;
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            t->s[i] = t->s[j];
            t->s[j].key = 0;
            i = j;
        }
    }
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint64_t c = 64;
    while (c < n)
        c <<= 1;
    return c > (1u << 31) ? 0 : (uint32_t)c;
}

/* Room for n more keys. 0 or CY_ENOMEM (the table unchanged). */
int qg_kt_reserve(struct ktab *t, uint64_t n)
{
    uint64_t want = (uint64_t)t->count + n;
    if (want * 2 <= t->cap)
        return 0;
    uint32_t cap = pow2_at_least(want * 2);
    struct kslot *ns = cap ? calloc(cap, sizeof *ns) : NULL;
    if (!ns)
        return CY_ENOMEM;
    struct ktab old = *t;
    *t = (struct ktab){ns, cap, 0};
    for (uint32_t i = 0; i < old.cap; i++)
        if (old.s[i].key)
            *qg_kt_insert(t, old.s[i].key) = old.s[i];
    free(old.s);
    return 0;
}

/* ---- reservations: every allocation an apply may need, made up front ---- */

static int reserve(struct qgroup *g, uint64_t n)
{
    uint64_t want = (uint64_t)g->elive + n;
    if (want >= NIL / 2)
        return CY_ENOMEM;
    if (g->ecap < want) {
        uint64_t cap = g->ecap ? (uint64_t)g->ecap * 2 : 64;
        if (cap < want)
            cap = want;
        if (cap >= NIL)
            cap = NIL - 1;
        struct entry *ne = realloc(g->ents, cap * sizeof *ne);
        if (!ne)
            return CY_ENOMEM;
        g->ents = ne;
        g->ecap = (uint32_t)cap;
    }
    if (want * 2 > g->scap) {
        uint32_t cap = pow2_at_least(want * 2);
        uint32_t *ns = cap ? malloc((size_t)cap * sizeof *ns) : NULL;
        if (!ns)
            return CY_ENOMEM;
        memset(ns, 0xff, (size_t)cap * sizeof *ns);
        free(g->slots);
        g->slots = ns;
        g->scap = cap;
        for (uint32_t i = 0; i < g->ehw; i++)
            if (g->ents[i].state != ST_FREE)
                slot_insert(g, i);
    }
    return g->fifo ? qg_kt_reserve(&g->keys, n) : 0;
}

/* ---- entries -------------------------------------------------------------- */

static void set_state(struct qgroup *g, struct entry *e, uint8_t st)
{
    g->part[e->part].cnt[e->state]--;
    e->state = st;
    g->part[e->part].cnt[st]++;
}

static uint32_t ent_new(struct qgroup *g, uint32_t p, uint64_t off, uint32_t key) /* reserved */
{
    uint32_t idx;
    if (g->efree != NIL) {
        idx = g->efree;
        g->efree = g->ents[idx].qnext;
    } else {
        idx = g->ehw++;
    }
    struct entry *e = &g->ents[idx];
    memset(e, 0, sizeof *e);
    e->offset = off;
    e->part = (uint8_t)p;
    e->key_hash = key;
    e->qprev = e->qnext = NIL;
    e->state = ST_BLOCKED; /* not timed: the caller sets the real state */
    g->part[p].cnt[ST_BLOCKED]++;
    g->elive++;
    slot_insert(g, idx);
    return idx;
}

static void ent_free(struct qgroup *g, uint32_t idx)
{
    struct entry *e = &g->ents[idx];
    struct part *P = &g->part[e->part];
    slot_delete(g, slot_of(g, e->part, e->offset));
    P->cnt[e->state]--;
    if (e->offset < P->floor)
        P->below--;
    e->state = ST_FREE;
    e->qnext = g->efree;
    g->efree = idx;
    g->elive--;
}

/* ---- timer heaps ---------------------------------------------------------- */

static bool hless(const struct hitem *a, const struct hitem *b)
{
    return a->at != b->at ? a->at < b->at : a->off < b->off;
}

bool qg_hvalid(const struct qgroup *g, uint32_t p, const struct hitem *it)
{
    if (it->idx >= g->ehw)
        return false;
    const struct entry *e = &g->ents[it->idx];
    return e->part == p && e->offset == it->off && is_timed(e->state) && e->at == it->at;
}

static void sift_down(struct hitem *h, uint32_t n, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, m = i;
        if (l < n && hless(&h[l], &h[m]))
            m = l;
        if (l + 1 < n && hless(&h[l + 1], &h[m]))
            m = l + 1;
        if (m == i)
            return;
        struct hitem t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void heapify(struct hitem *h, uint32_t n)
{
    for (uint32_t i = n / 2; i-- > 0;)
        sift_down(h, n, i);
}

static uint32_t timed_count(const struct part *P)
{
    return P->cnt[ST_LEASED] + P->cnt[ST_RETRY] + P->cnt[ST_WAITING] + P->cnt[ST_AVAIL];
}

/* Drop stale items in place (no allocation). */
static void heap_compact(struct qgroup *g, uint32_t p)
{
    struct part *P = &g->part[p];
    uint32_t n = 0;
    for (uint32_t i = 0; i < P->hn; i++)
        if (qg_hvalid(g, p, &P->heap[i]))
            P->heap[n++] = P->heap[i];
    P->hn = n;
    heapify(P->heap, n);
}

static void heap_push(struct qgroup *g, uint32_t idx)
{
    const struct entry *e = &g->ents[idx];
    uint32_t p = e->part;
    struct part *P = &g->part[p];
    if (g->heap_lost & (1ull << p))
        return; /* rebuilt from the entries later */
    if (P->hn >= 2 * timed_count(P) + 64)
        heap_compact(g, p);
    if (P->hn == P->hcap) {
        uint32_t cap = P->hcap ? P->hcap * 2 : 16;
        struct hitem *nh = cap > P->hcap ? realloc(P->heap, (size_t)cap * sizeof *nh) : NULL;
        if (!nh) {
            g->heap_lost |= 1ull << p;
            return;
        }
        P->heap = nh;
        P->hcap = cap;
    }
    struct hitem *h = P->heap;
    uint32_t i = P->hn++;
    h[i] = (struct hitem){e->at, e->offset, idx};
    while (i > 0) {
        uint32_t up = (i - 1) / 2;
        if (!hless(&h[i], &h[up]))
            break;
        struct hitem t = h[i];
        h[i] = h[up];
        h[up] = t;
        i = up;
    }
}

/* Pop stale items off the top: keeps the walks of plan and next_wakeup short. */
static void heap_trim(struct qgroup *g, uint32_t p)
{
    struct part *P = &g->part[p];
    while (P->hn && !qg_hvalid(g, p, &P->heap[0])) {
        P->heap[0] = P->heap[--P->hn];
        sift_down(P->heap, P->hn, 0);
    }
}

static int heap_rebuild(struct qgroup *g, uint32_t p)
{
    struct part *P = &g->part[p];
    uint32_t n = timed_count(P);
    if (n > P->hcap) {
        struct hitem *nh = realloc(P->heap, (size_t)n * sizeof *nh);
        if (!nh)
            return CY_ENOMEM;
        P->heap = nh;
        P->hcap = n;
    }
    P->hn = 0;
    for (uint32_t i = 0; i < g->ehw; i++) {
        const struct entry *e = &g->ents[i];
        if (e->state != ST_FREE && e->part == p && is_timed(e->state) && P->hn < n)
            P->heap[P->hn++] = (struct hitem){e->at, e->offset, i};
    }
    heapify(P->heap, P->hn);
    g->heap_lost &= ~(1ull << p);
    return 0;
}

int qg_heaps_repair(struct qgroup *g)
{
    for (uint32_t p = 0; p < QGROUP_MAX_PARTITIONS && g->heap_lost; p++)
        if (g->heap_lost & (1ull << p)) {
            int rc = heap_rebuild(g, p);
            if (rc)
                return rc;
        }
    return 0;
}

static void set_timer(struct qgroup *g, uint32_t idx, uint8_t st, uint64_t at)
{
    struct entry *e = &g->ents[idx];
    if (e->state == st && e->at == at)
        return; /* its heap item is still valid */
    set_state(g, e, st);
    e->at = at;
    heap_push(g, idx);
}

/* ---- FIFO key queues ------------------------------------------------------ */

static void q_append(struct qgroup *g, uint32_t idx) /* reserved */
{
    struct entry *e = &g->ents[idx];
    struct kslot *k = qg_kt_find(&g->keys, e->key_hash);
    if (!k)
        k = qg_kt_insert(&g->keys, e->key_hash);
    e->qseq = g->qseq++;
    e->qprev = k->tail;
    e->qnext = NIL;
    if (k->tail != NIL)
        g->ents[k->tail].qnext = idx;
    else
        k->head = idx;
    k->tail = idx;
    e->flags |= F_INQ;
}

static void q_unlink(struct qgroup *g, uint32_t idx)
{
    struct entry *e = &g->ents[idx];
    if (!(e->flags & F_INQ))
        return;
    struct kslot *k = qg_kt_find(&g->keys, e->key_hash);
    if (e->qprev != NIL)
        g->ents[e->qprev].qnext = e->qnext;
    else
        k->head = e->qnext;
    if (e->qnext != NIL)
        g->ents[e->qnext].qprev = e->qprev;
    else
        k->tail = e->qprev;
    e->qprev = e->qnext = NIL;
    e->flags &= (uint8_t)~F_INQ;
    if (k->head == NIL)
        kt_delete(&g->keys, k);
}

/* A key's head is never BLOCKED: nothing before it holds the key. */
static void head_fix(struct qgroup *g, uint32_t key)
{
    struct kslot *k = qg_kt_find(&g->keys, key);
    if (k && g->ents[k->head].state == ST_BLOCKED)
        set_timer(g, k->head, ST_AVAIL, 0);
}

/* Invariant 6: e's lease ends (nack, expiry); its receive's later messages of
 * the key are released. */
static void release_after(struct qgroup *g, uint32_t idx)
{
    const struct entry *e = &g->ents[idx];
    if (!(e->flags & F_INQ) || e->state != ST_LEASED)
        return;
    for (uint32_t s = e->qnext; s != NIL; s = g->ents[s].qnext) {
        struct entry *se = &g->ents[s];
        if (se->state == ST_LEASED && se->recv == e->recv) {
            set_state(g, se, ST_BLOCKED);
            if (se->attempt)
                se->attempt--;
        }
    }
}

/* ---- settling and the floor ---------------------------------------------- */

static int ahead_reserve(struct part *P, uint64_t extra)
{
    uint64_t want = (uint64_t)P->ahead_n + extra;
    if (want <= P->ahead_cap)
        return 0;
    uint64_t cap = P->ahead_cap ? (uint64_t)P->ahead_cap * 2 : 64;
    while (cap < want)
        cap *= 2;
    if (cap > UINT32_MAX)
        return CY_ENOMEM;
    uint64_t *na = malloc((size_t)cap * sizeof *na);
    if (!na)
        return CY_ENOMEM;
    for (uint32_t i = 0; i < P->ahead_n; i++)
        na[i] = P->ahead[(P->ahead_head + i) % P->ahead_cap];
    free(P->ahead);
    P->ahead = na;
    P->ahead_cap = (uint32_t)cap;
    P->ahead_head = 0;
    return 0;
}

static uint64_t ahead_at(const struct part *P, uint32_t i)
{
    return P->ahead[(P->ahead_head + i) % P->ahead_cap];
}

/* Drop the offsets of freed entries (in place). */
static void ahead_compact(struct qgroup *g, uint32_t p)
{
    struct part *P = &g->part[p];
    uint32_t n = 0;
    for (uint32_t i = 0; i < P->ahead_n; i++) {
        uint64_t off = ahead_at(P, i);
        if (qg_lookup(g, p, off) != NIL)
            P->ahead[(P->ahead_head + n++) % P->ahead_cap] = off;
    }
    P->ahead_n = n;
}

static void ahead_push(struct qgroup *g, uint32_t p, uint64_t off) /* reserved */
{
    struct part *P = &g->part[p];
    uint32_t entries = 0;
    for (int s = ST_LEASED; s < ST_COUNT; s++)
        entries += P->cnt[s];
    if (P->ahead_n >= 2 * (uint64_t)(entries - P->below) + 64)
        ahead_compact(g, p);
    P->ahead[(P->ahead_head + P->ahead_n++) % P->ahead_cap] = off;
}

static void floor_advance(struct qgroup *g, uint32_t p)
{
    struct part *P = &g->part[p];
    while (P->ahead_n) {
        uint64_t off = ahead_at(P, 0);
        uint32_t idx = qg_lookup(g, p, off);
        if (idx != NIL && off >= P->floor) {
            if (g->ents[idx].state != ST_DEAD) {
                P->floor = off;
                return;
            }
            P->below++; /* the floor passes a dead one */
        }
        P->ahead_head = (P->ahead_head + 1) % P->ahead_cap;
        P->ahead_n--;
    }
    P->floor = P->scan;
}

static void settle(struct qgroup *g, uint32_t idx)
{
    struct entry *e = &g->ents[idx];
    uint32_t key = e->key_hash, p = e->part;
    bool inq = e->flags & F_INQ;
    q_unlink(g, idx);
    ent_free(g, idx);
    if (inq)
        head_fix(g, key);
    floor_advance(g, p);
}

/* Dead for this group (kept for redrive), whether or not the broker also
 * stored a copy in a dlq_topic (API.md §7: redrive brings every dead-lettered
 * message back; the copies stay where they are). */
static void dead_letter(struct qgroup *g, uint32_t idx)
{
    struct entry *e = &g->ents[idx];
    uint32_t key = e->key_hash, p = e->part;
    bool inq = e->flags & F_INQ;
    q_unlink(g, idx);
    set_state(g, e, ST_DEAD);
    e->at = 0;
    if (inq)
        head_fix(g, key);
    floor_advance(g, p);
}

/* ---- lifecycle ------------------------------------------------------------ */

void qplan_free(struct qplan *p)
{
    if (!p)
        return;
    free(p->items);
    p->items = NULL;
    p->n = p->cap = p->delivered = 0;
}

struct qgroup *qgroup_new(bool fifo, uint32_t fifo_window)
{
    struct qgroup *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->fifo = fifo;
    g->window = fifo_window ? fifo_window : QGROUP_DEFAULT_FIFO_WINDOW;
    g->efree = NIL;
    return g;
}

void qgroup_free(struct qgroup *g)
{
    if (!g)
        return;
    for (uint32_t p = 0; p < QGROUP_MAX_PARTITIONS; p++) {
        free(g->part[p].heap);
        free(g->part[p].ahead);
    }
    free(g->ents);
    free(g->slots);
    free(g->keys.s);
    free(g);
}

bool qgroup_is_fifo(const struct qgroup *g) { return g->fifo; }
const struct qgroup_config *qgroup_config(const struct qgroup *g) { return &g->cfg; }
size_t qgroup_touched(const struct qgroup *g) { return g->elive; }

void qgroup_configure(struct qgroup *g, const struct qgroup_config *cfg)
{
    memset(&g->cfg, 0, sizeof g->cfg);
    g->cfg.retry_count = cfg->retry_count > QGROUP_MAX_RETRY ? QGROUP_MAX_RETRY : cfg->retry_count;
    memcpy(g->cfg.retry_schedule, cfg->retry_schedule,
           g->cfg.retry_count * sizeof cfg->retry_schedule[0]);
    g->cfg.has_dlq_topic = cfg->has_dlq_topic;
    g->cfg.max_deliveries = cfg->max_deliveries;
}

/* ---- applying ------------------------------------------------------------- */

static int check_plan(const struct qplan *plan)
{
    for (uint32_t i = 0; i < plan->n; i++)
        if (plan->items[i].partition >= QGROUP_MAX_PARTITIONS || plan->items[i].kind > QPLAN_BLOCK)
            return CY_EINVAL;
    return 0;
}

static void after_apply(struct qgroup *g)
{
    for (uint32_t p = 0; p < QGROUP_MAX_PARTITIONS; p++)
        if (g->part[p].hn)
            heap_trim(g, p);
    qg_heaps_repair(g); /* best effort; the next plan retries */
}

/* An item for an offset the group never looked at: create its entry. */
static void apply_new(struct qgroup *g, const struct qplan_item *it, uint64_t recv,
                      uint64_t lease_until)
{
    uint32_t p = it->partition;
    struct part *P = &g->part[p];
    P->scan = it->offset + 1; /* offsets skipped over are settled */
    if (it->kind == QPLAN_SKIP) {
        floor_advance(g, p);
        return;
    }
    uint32_t idx = ent_new(g, p, it->offset, it->key_hash);
    struct entry *e = &g->ents[idx];
    ahead_push(g, p, it->offset);
    switch (it->kind) {
    case QPLAN_DEAD:
        set_state(g, e, ST_DEAD);
        floor_advance(g, p);
        return;
    case QPLAN_WAIT:
        set_timer(g, idx, ST_WAITING, it->at);
        if (keyed(g, e))
            q_append(g, idx); /* holds its key while it waits (invariant 4) */
        return;
    case QPLAN_BLOCK:
        if (keyed(g, e)) {
            set_state(g, e, ST_BLOCKED);
            q_append(g, idx);
            head_fix(g, e->key_hash);
        } else {
            set_timer(g, idx, ST_AVAIL, 0);
        }
        return;
    default: /* DELIVER */
        if (keyed(g, e))
            q_append(g, idx);
        e->attempt = it->attempt;
        e->recv = recv;
        e->flags |= F_DELIVERED;
        set_timer(g, idx, ST_LEASED, lease_until);
        return;
    }
}

int qgroup_apply_receive(struct qgroup *g, uint64_t now, uint64_t lease_until,
                         const struct qplan *plan)
{
    (void)now;
    int rc = check_plan(plan);
    if (rc || (rc = reserve(g, plan->n)))
        return rc;
    uint32_t per[QGROUP_MAX_PARTITIONS] = {0};
    for (uint32_t i = 0; i < plan->n; i++)
        per[plan->items[i].partition]++;
    for (uint32_t p = 0; p < QGROUP_MAX_PARTITIONS; p++)
        if (per[p] && (rc = ahead_reserve(&g->part[p], per[p])))
            return rc;
    uint64_t recv = ++g->recv_seq;
    for (uint32_t i = 0; i < plan->n; i++) {
        const struct qplan_item *it = &plan->items[i];
        uint32_t p = it->partition;
        struct part *P = &g->part[p];
        if (!(g->init_mask & (1ull << p))) {
            g->init_mask |= 1ull << p;
            P->floor = P->scan = it->offset;
        }
        uint32_t idx = qg_lookup(g, p, it->offset);
        if (idx == NIL) {
            if (it->offset >= P->scan && it->offset != UINT64_MAX)
                apply_new(g, it, recv, lease_until);
            continue; /* otherwise settled already */
        }
        struct entry *e = &g->ents[idx];
        if (it->kind != QPLAN_WAIT && it->kind != QPLAN_SKIP && e->state == ST_LEASED) {
            if (e->expiries != UINT32_MAX)
                e->expiries++;
            release_after(g, idx);
        }
        switch (it->kind) {
        case QPLAN_DELIVER:
            if (e->state == ST_DEAD)
                break;
            if (keyed(g, e) && !(e->flags & F_INQ))
                q_append(g, idx);
            e->attempt = it->attempt;
            e->recv = recv;
            e->flags |= F_DELIVERED;
            set_timer(g, idx, ST_LEASED, lease_until);
            break;
        case QPLAN_BLOCK:
            if (e->state == ST_DEAD)
                break;
            if (!keyed(g, e)) {
                set_timer(g, idx, ST_AVAIL, 0);
                break;
            }
            if (!(e->flags & F_INQ))
                q_append(g, idx);
            set_state(g, e, ST_BLOCKED);
            head_fix(g, e->key_hash);
            break;
        case QPLAN_DEAD:
            if (e->state != ST_DEAD)
                dead_letter(g, idx);
            break;
        case QPLAN_SKIP:
            settle(g, idx);
            break;
        default: /* WAIT: only for offsets never looked at */
            break;
        }
    }
    after_apply(g);
    return 0;
}

int qgroup_apply_ack(struct qgroup *g, const struct qgroup_id *ids, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx = qg_lookup(g, ids[i].partition, ids[i].offset);
        if (idx == NIL)
            continue;
        const struct entry *e = &g->ents[idx];
        if (e->state == ST_DEAD || e->state == ST_WAITING || !(e->flags & F_DELIVERED))
            continue;
        settle(g, idx);
    }
    after_apply(g);
    return 0;
}

int qgroup_apply_nack(struct qgroup *g, const struct qplan *plan)
{
    int rc = check_plan(plan);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < plan->n; i++) {
        const struct qplan_item *it = &plan->items[i];
        uint32_t idx = qg_lookup(g, it->partition, it->offset);
        if (idx == NIL || g->ents[idx].state != ST_LEASED)
            continue;
        if (it->kind != QPLAN_WAIT && it->kind != QPLAN_DEAD)
            continue;
        struct entry *e = &g->ents[idx];
        if (e->nacks != UINT32_MAX)
            e->nacks++;
        release_after(g, idx);
        if (it->kind == QPLAN_WAIT)
            set_timer(g, idx, ST_RETRY, it->at);
        else
            dead_letter(g, idx);
    }
    after_apply(g);
    return 0;
}

int qgroup_apply_extend(struct qgroup *g, const struct qgroup_id *ids, uint32_t n,
                        uint64_t lease_until)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx = qg_lookup(g, ids[i].partition, ids[i].offset);
        if (idx != NIL && g->ents[idx].state == ST_LEASED)
            set_timer(g, idx, ST_LEASED, lease_until);
    }
    after_apply(g);
    return 0;
}

static int cmp_pos(const void *a, const void *b, void *arg)
{
    const struct entry *ents = arg;
    const struct entry *x = &ents[*(const uint32_t *)a], *y = &ents[*(const uint32_t *)b];
    if (x->part != y->part)
        return x->part < y->part ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Indices of live entries matching `want` (a state, or ST_FREE for all),
 * sorted by (partition, offset). *out is malloc'd (NULL when none). */
static int collect_sorted(const struct qgroup *g, uint8_t want, uint32_t **out, uint32_t *n)
{
    *out = NULL;
    *n = 0;
    uint32_t c = 0;
    for (uint32_t i = 0; i < g->ehw; i++)
        c += g->ents[i].state != ST_FREE && (want == ST_FREE || g->ents[i].state == want);
    if (!c)
        return 0;
    uint32_t *v = malloc((size_t)c * sizeof *v);
    if (!v)
        return CY_ENOMEM;
    c = 0;
    for (uint32_t i = 0; i < g->ehw; i++)
        if (g->ents[i].state != ST_FREE && (want == ST_FREE || g->ents[i].state == want))
            v[c++] = i;
    qsort_r(v, c, sizeof *v, cmp_pos, g->ents);
    *out = v;
    *n = c;
    return 0;
}

int qgroup_apply_redrive(struct qgroup *g, uint32_t *count)
{
    uint32_t *v, n;
    *count = 0;
    int rc = collect_sorted(g, ST_DEAD, &v, &n);
    if (rc || (rc = reserve(g, n)))
        goto out;
    for (uint32_t i = 0; i < n; i++) {
        struct entry *e = &g->ents[v[i]];
        e->attempt = e->nacks = e->expiries = 0;
        if (keyed(g, e)) {
            set_state(g, e, ST_BLOCKED);
            q_append(g, v[i]);
            head_fix(g, e->key_hash);
        } else {
            set_timer(g, v[i], ST_AVAIL, 0);
        }
    }
    *count = n;
    after_apply(g);
out:
    free(v);
    return rc;
}

void qgroup_forget_before(struct qgroup *g, uint32_t p, uint64_t first)
{
    if (p >= QGROUP_MAX_PARTITIONS || !(g->init_mask & (1ull << p)))
        return;
    struct part *P = &g->part[p];
    if (first <= P->floor && P->below == 0)
        return; /* nothing stored below `first` */
    /* Dropping a set of entries and then fixing every key's head gives the same
     * state in any order, so the table order of this walk does not matter. */
    bool unlinked = false;
    for (uint32_t i = 0; i < g->ehw; i++) {
        struct entry *e = &g->ents[i];
        if (e->state == ST_FREE || e->part != p || e->offset >= first)
            continue;
        unlinked |= (e->flags & F_INQ) != 0;
        q_unlink(g, i);
        ent_free(g, i);
    }
    if (P->scan < first)
        P->scan = first;
    if (P->floor < first)
        P->floor = first;
    floor_advance(g, p);
    P->below = 0;
    for (uint32_t i = 0; i < g->ehw; i++)
        P->below += g->ents[i].state != ST_FREE && g->ents[i].part == p &&
                    g->ents[i].offset < P->floor;
    if (unlinked)
        for (uint32_t i = 0; i < g->keys.cap; i++)
            if (g->keys.s[i].key && g->ents[g->keys.s[i].head].state == ST_BLOCKED)
                set_timer(g, g->keys.s[i].head, ST_AVAIL, 0);
    after_apply(g);
}

/* ---- checkpoint ----------------------------------------------------------- */

int qgroup_save(const struct qgroup *g, struct buf *out)
{
    uint32_t *v, n;
    int rc = collect_sorted(g, ST_FREE, &v, &n);
    if (rc)
        return rc;
    buf_put_u32(out, QG_MAGIC);
    buf_put_u16(out, QG_VERSION);
    buf_put_u8(out, g->fifo);
    buf_put_u32(out, g->window);
    buf_put_u32(out, g->cfg.retry_count);
    for (uint32_t i = 0; i < g->cfg.retry_count; i++)
        buf_put_u64(out, g->cfg.retry_schedule[i]);
    buf_put_u8(out, g->cfg.has_dlq_topic);
    buf_put_u32(out, g->cfg.max_deliveries);
    buf_put_u64(out, g->recv_seq);
    buf_put_u64(out, g->qseq);
    buf_put_u64(out, g->init_mask);
    for (uint32_t p = 0; p < QGROUP_MAX_PARTITIONS; p++)
        if (g->init_mask & (1ull << p)) {
            buf_put_u64(out, g->part[p].floor);
            buf_put_u64(out, g->part[p].scan);
        }
    buf_put_u32(out, n);
    for (uint32_t i = 0; i < n; i++) {
        const struct entry *e = &g->ents[v[i]];
        buf_put_u8(out, e->part);
        buf_put_u64(out, e->offset);
        buf_put_u8(out, e->state);
        buf_put_u8(out, e->flags & F_DELIVERED);
        buf_put_u64(out, e->at);
        buf_put_u64(out, e->recv);
        buf_put_u64(out, e->qseq);
        buf_put_u32(out, e->attempt);
        buf_put_u32(out, e->nacks);
        buf_put_u32(out, e->expiries);
        buf_put_u32(out, e->key_hash);
    }
    free(v);
    return buf_err(out);
}

static int cmp_qorder(const void *a, const void *b, void *arg)
{
    const struct entry *ents = arg;
    const struct entry *x = &ents[*(const uint32_t *)a], *y = &ents[*(const uint32_t *)b];
    if (x->key_hash != y->key_hash)
        return x->key_hash < y->key_hash ? -1 : 1;
    if (x->qseq != y->qseq)
        return x->qseq < y->qseq ? -1 : 1;
    return cmp_pos(a, b, arg);
}

static int cmp_due(const void *a, const void *b, void *arg)
{
    const struct entry *ents = arg;
    const struct entry *x = &ents[*(const uint32_t *)a], *y = &ents[*(const uint32_t *)b];
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    return cmp_pos(a, b, arg);
}

/* Which keyed entries a loader links into their key's queues. */
enum qpick {
    QP_QUEUED,  /* every one but DEAD */
    QP_V1,      /* version 1 kept WAITING ones out: every one but DEAD, WAITING */
    QP_WAITING, /* WAITING ones */
};

static bool picked(const struct entry *e, enum qpick which)
{
    if (e->state == ST_FREE || e->state == ST_DEAD || !e->key_hash)
        return false;
    return which == QP_QUEUED || (e->state == ST_WAITING) == (which == QP_WAITING);
}

/* Indices of the picked entries sorted by cmp. *out is malloc'd (NULL when
 * none). */
static int collect_keyed(const struct qgroup *g, enum qpick which,
                         int (*cmp)(const void *, const void *, void *), uint32_t **out,
                         uint32_t *n)
{
    *out = NULL;
    *n = 0;
    uint32_t c = 0;
    for (uint32_t i = 0; i < g->ehw; i++)
        c += picked(&g->ents[i], which);
    if (!c)
        return 0;
    uint32_t *v = malloc((size_t)c * sizeof *v);
    if (!v)
        return CY_ENOMEM;
    c = 0;
    for (uint32_t i = 0; i < g->ehw; i++)
        if (picked(&g->ents[i], which))
            v[c++] = i;
    qsort_r(v, c, sizeof *v, cmp, g->ents);
    *out = v;
    *n = c;
    return 0;
}

static int load_entries(struct reader *r, struct qgroup *g, uint16_t version)
{
    uint32_t n = rd_u32(r);
    if (r->err || (uint64_t)n * ENTRY_BYTES > reader_left(r))
        return CY_ECORRUPT;
    int rc = reserve(g, n);
    if (rc)
        return rc;
    uint32_t prev_p = 0;
    uint64_t prev_off = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t p = rd_u8(r);
        uint64_t off = rd_u64(r);
        uint8_t st = rd_u8(r), fl = rd_u8(r);
        uint64_t at = rd_u64(r), recv = rd_u64(r), qseq = rd_u64(r);
        uint32_t attempt = rd_u32(r), nacks = rd_u32(r), exp = rd_u32(r), key = rd_u32(r);
        if (r->err || p >= QGROUP_MAX_PARTITIONS || !(g->init_mask & (1ull << p)) ||
            st == ST_FREE || st >= ST_COUNT || (fl & ~F_DELIVERED) ||
            off >= g->part[p].scan || (i && (p < prev_p || (p == prev_p && off <= prev_off))))
            return CY_ECORRUPT;
        prev_p = p;
        prev_off = off;
        uint32_t idx = ent_new(g, p, off, key);
        struct entry *e = &g->ents[idx];
        set_state(g, e, st);
        e->flags = fl;
        e->at = at;
        e->recv = recv;
        e->qseq = qseq;
        e->attempt = attempt;
        e->nacks = nacks;
        e->expiries = exp;
        if (off < g->part[p].floor)
            g->part[p].below++;
        else if ((rc = ahead_reserve(&g->part[p], 1)))
            return rc;
        else
            ahead_push(g, p, off);
    }
    if (!g->fifo)
        return 0;
    /* Rebuild the key queues in their saved order. */
    uint32_t *v, c;
    if ((rc = collect_keyed(g, version >= 2 ? QP_QUEUED : QP_V1, cmp_qorder, &v, &c)))
        return rc;
    uint64_t next_qseq = g->qseq;
    for (uint32_t i = 0; i < c; i++) {
        uint64_t qseq = g->ents[v[i]].qseq;
        q_append(g, v[i]); /* assigns a fresh qseq: put the saved one back */
        g->ents[v[i]].qseq = qseq;
    }
    g->qseq = next_qseq;
    free(v);
    if (version >= 2)
        return 0;
    /* Version 1: a delayed message joined its key's queue when it became due;
     * append the waiting ones in that order (fresh qseqs, after the saved). */
    if ((rc = collect_keyed(g, QP_WAITING, cmp_due, &v, &c)))
        return rc;
    for (uint32_t i = 0; i < c; i++)
        q_append(g, v[i]);
    free(v);
    return 0;
}

int qgroup_load(struct reader *r, struct qgroup **out)
{
    uint16_t version;
    if (rd_u32(r) != QG_MAGIC || (version = rd_u16(r)) < 1 || version > QG_VERSION)
        return CY_ECORRUPT;
    uint8_t fifo = rd_u8(r);
    uint32_t window = rd_u32(r);
    if (r->err || fifo > 1 || window == 0)
        return CY_ECORRUPT;
    struct qgroup *g = qgroup_new(fifo, window);
    if (!g)
        return CY_ENOMEM;
    int rc = CY_ECORRUPT;
    g->cfg.retry_count = rd_u32(r);
    if (g->cfg.retry_count > QGROUP_MAX_RETRY)
        goto fail;
    for (uint32_t i = 0; i < g->cfg.retry_count; i++)
        g->cfg.retry_schedule[i] = rd_u64(r);
    uint8_t dlq = rd_u8(r);
    g->cfg.has_dlq_topic = dlq;
    g->cfg.max_deliveries = rd_u32(r);
    g->recv_seq = rd_u64(r);
    uint64_t qseq = rd_u64(r);
    g->init_mask = rd_u64(r);
    if (r->err || dlq > 1)
        goto fail;
    for (uint32_t p = 0; p < QGROUP_MAX_PARTITIONS; p++)
        if (g->init_mask & (1ull << p)) {
            g->part[p].floor = rd_u64(r);
            g->part[p].scan = rd_u64(r);
            if (r->err || g->part[p].floor > g->part[p].scan)
                goto fail;
        }
    g->qseq = qseq;
    if ((rc = load_entries(r, g, version)))
        goto fail;
    for (uint32_t i = 0; i < g->keys.cap; i++) /* heads are never BLOCKED */
        if (g->keys.s[i].key && g->ents[g->keys.s[i].head].state == ST_BLOCKED) {
            struct entry *e = &g->ents[g->keys.s[i].head];
            set_state(g, e, ST_AVAIL);
            e->at = 0;
        }
    for (uint32_t p = 0; p < QGROUP_MAX_PARTITIONS; p++) {
        if (g->init_mask & (1ull << p))
            floor_advance(g, p);
        if ((rc = heap_rebuild(g, p)))
            goto fail;
    }
    *out = g;
    return 0;
fail:
    qgroup_free(g);
    return rc;
}
