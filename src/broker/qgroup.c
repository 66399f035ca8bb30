/*
 * qgroup.c — one queue or FIFO consumer group (qgroup.h, API.md §7–§9,
 * DESIGN.md §3).
 *
 * Representation. Every offset in [floor[p], scan[p]) was looked at by a
 * receive plan. Those that are not settled have an entry in one table keyed by
 * (partition, offset); an offset in that range WITHOUT an entry is settled
 * (acked, skipped, or dead-lettered into a dlq_topic), so acked messages cost
 * nothing. Entries:
 *
 *   LEASED(at = until)   RETRY(at)   WAITING(at = scheduled_at)
 *   AVAIL(at = 0)        BLOCKED     DEAD (no dlq_topic; kept for redrive)
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
 *      states LEASED, RETRY, AVAIL, BLOCKED in the order they became visible
 *      to the group (scan order; a delayed message joins when its time comes;
 *      a redriven one at the end), by `qseq`. Only the head may be AVAIL; a
 *      BLOCKED head is made AVAIL at once (head_fix).
 *   5. FIFO deliverability: an entry of Q(K) may be delivered by a receive
 *      only if every entry before it in Q(K) is delivered (or dead-lettered,
 *      or skipped) by that same receive. So one receive holds the key, and
 *      may take a run of consecutive messages of it.
 *   6. FIFO release: a nack or a lease expiry of a LEASED entry e turns the
 *      later entries of Q(K) LEASED in e's receive (same recv id) BLOCKED and
 *      un-counts their delivery (attempt - 1), so their next delivery carries
 *      the same attempt number as the one that was released, and the release
 *      never counts toward max_deliveries.
 *   7. Apply functions allocate before they change anything (reserve), except
 *      heap pushes: a failed push marks the partition's heap lost, and it is
 *      rebuilt from the entries before the next plan. Entries are the state.
 *
 * Lifecycle (as in qgroup.h):
 *
 *   new ─plan─► LEASED ──ack──► (settled: entry freed)
 *    │            ├─nack──► RETRY ──(due)──► LEASED (again) ...
 *    │            ├─nack, no retry left / expiry count reached──► DEAD or settled (dlq)
 *    │            └─(expired)──► LEASED again on the next receive (attempt + 1)
 *    ├─(scheduled later)─► WAITING ──(due)──► LEASED
 *    └─FIFO, key held──► BLOCKED ──(head of its key)──► AVAIL ──► LEASED
 *   DEAD ──redrive──► AVAIL (or BLOCKED behind its key)
 *
 * Checkpoint format (qgroup_save), little-endian:
 *   u32 magic "CYQG", u16 version 1, u8 fifo, u32 fifo_window,
 *   u32 retry_count, retry_count × u64, u8 has_dlq_topic, u32 max_deliveries,
 *   u64 recv_seq, u64 qseq, u64 partition mask, per set bit (ascending)
 *   u64 floor, u64 scan; u32 n, then n entries sorted by (partition, offset):
 *   u8 partition, u64 offset, u8 state, u8 flags, u64 at, u64 recv, u64 qseq,
 *   u32 attempt, u32 nacks, u32 expiries, u32 key_hash.
 */
#include "broker/qgroup.h"

#include <stdlib.h>
#include <string.h>

#include "coyote.h"

#define NIL UINT32_MAX
#define QG_MAGIC 0x47515943u /* "CYQG" */
#define QG_VERSION 1
#define ENTRY_BYTES 51u   /* one saved entry */
#define WAKEUP_BUDGET 4096 /* heap nodes next_wakeup may visit */

enum estate { ST_FREE, ST_LEASED, ST_RETRY, ST_WAITING, ST_AVAIL, ST_BLOCKED, ST_DEAD, ST_COUNT };

#define F_DELIVERED 0x01u /* delivered at least once (acks count) */
#define F_INQ 0x80u       /* linked in its key's queue (not saved) */

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

struct hitem {
    uint64_t at;
    uint64_t off;
    uint32_t idx;
};

struct part {
    uint64_t floor, scan;
    struct hitem *heap;
    uint32_t hn, hcap;
    uint32_t cnt[ST_COUNT]; /* entries per state */
    uint32_t below;         /* entries with offset < floor */
    uint64_t *ahead;        /* ring: offsets of entries at or above floor (inv. 2) */
    uint32_t ahead_head, ahead_n, ahead_cap;
};

struct kslot {
    uint32_t key; /* 0: empty */
    uint32_t head, tail;
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
    struct kslot *keys;
    uint32_t kcap, kcount;
    uint32_t gen; /* planner generation for scratch marks */
};

static bool is_timed(uint8_t st)
{
    return st == ST_LEASED || st == ST_RETRY || st == ST_WAITING || st == ST_AVAIL;
}

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

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

static uint32_t lookup(const struct qgroup *g, uint32_t p, uint64_t off)
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

static struct kslot *key_find(const struct qgroup *g, uint32_t key)
{
    if (!g->kcap || !key)
        return NULL;
    uint32_t mask = g->kcap - 1, i = khash(key) & mask;
    while (g->keys[i].key) {
        if (g->keys[i].key == key)
            return &g->keys[i];
        i = (i + 1) & mask;
    }
    return NULL;
}

static struct kslot *key_insert(struct qgroup *g, uint32_t key) /* reserved */
{
    uint32_t mask = g->kcap - 1, i = khash(key) & mask;
    while (g->keys[i].key)
        i = (i + 1) & mask;
    g->keys[i] = (struct kslot){key, NIL, NIL};
    g->kcount++;
    return &g->keys[i];
}

static void key_delete(struct qgroup *g, struct kslot *s)
{
    uint32_t mask = g->kcap - 1, i = (uint32_t)(s - g->keys), j = i;
    g->keys[i].key = 0;
    g->kcount--;
    for (;;) {
        j = (j + 1) & mask;
        if (!g->keys[j].key)
            return;
        uint32_t k = khash(g->keys[j].key) & mask;
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            g->keys[i] = g->keys[j];
            g->keys[j].key = 0;
            i = j;
        }
    }
}

/* ---- reservations: every allocation an apply may need, made up front ---- */

static uint32_t pow2_at_least(uint64_t n)
{
    uint64_t c = 64;
    while (c < n)
        c <<= 1;
    return c > (1u << 31) ? 0 : (uint32_t)c;
}

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
    uint64_t kwant = g->fifo ? (uint64_t)g->kcount + n : 0;
    if (kwant * 2 > g->kcap) {
        uint32_t cap = pow2_at_least(kwant * 2);
        struct kslot *nk = cap ? calloc(cap, sizeof *nk) : NULL;
        if (!nk)
            return CY_ENOMEM;
        struct kslot *old = g->keys;
        uint32_t ocap = g->kcap;
        g->keys = nk;
        g->kcap = cap;
        g->kcount = 0;
        for (uint32_t i = 0; i < ocap; i++)
            if (old[i].key)
                *key_insert(g, old[i].key) = old[i];
        free(old);
    }
    return 0;
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

static bool hvalid(const struct qgroup *g, uint32_t p, const struct hitem *it)
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
        if (hvalid(g, p, &P->heap[i]))
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
    while (P->hn && !hvalid(g, p, &P->heap[0])) {
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

static int heaps_repair(struct qgroup *g)
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
    struct kslot *k = key_find(g, e->key_hash);
    if (!k)
        k = key_insert(g, e->key_hash);
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
    struct kslot *k = key_find(g, e->key_hash);
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
        key_delete(g, k);
}

/* A key's head is never BLOCKED: nothing before it holds the key. */
static void head_fix(struct qgroup *g, uint32_t key)
{
    struct kslot *k = key_find(g, key);
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

static bool keyed(const struct qgroup *g, const struct entry *e) { return g->fifo && e->key_hash; }

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
        if (lookup(g, p, off) != NIL)
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
        uint32_t idx = lookup(g, p, off);
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

static void dead_letter(struct qgroup *g, uint32_t idx)
{
    if (g->cfg.has_dlq_topic) {
        settle(g, idx); /* the broker stored the copy: acked */
        return;
    }
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
    free(g->keys);
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

/* ---- planning ------------------------------------------------------------- */

static void next_gen(struct qgroup *g)
{
    if (++g->gen == 0) { /* wrapped: old marks could look current */
        for (uint32_t i = 0; i < g->ehw; i++)
            g->ents[i].pmark = g->ents[i].prel = 0;
        g->gen = 1;
    }
}

struct planner {
    struct qgroup *g;
    const struct qgroup_env *env;
    struct qplan *out; /* NULL: only count (qgroup_available) */
    uint64_t now;
    uint32_t batch, delivered, work, work_cap, np;
    int32_t only;
    uint64_t first[QGROUP_MAX_PARTITIONS], next[QGROUP_MAX_PARTITIONS];
    /* keys whose new messages this plan already decided: 1 clear, 2 blocked */
    uint32_t *kkeys;
    uint8_t *kval;
    uint32_t kcap, kn;
};

static bool pl_full(const struct planner *pl)
{
    return pl->delivered >= pl->batch || pl->work >= pl->work_cap;
}

static int emit(struct planner *pl, uint32_t p, uint64_t off, uint8_t kind, uint32_t attempt,
                uint32_t key, uint64_t at)
{
    if (kind == QPLAN_DELIVER)
        pl->delivered++;
    else
        pl->work++;
    struct qplan *q = pl->out;
    if (!q)
        return 0;
    if (q->n == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 16;
        struct qplan_item *ni = realloc(q->items, (size_t)cap * sizeof *ni);
        if (!ni)
            return CY_ENOMEM;
        q->items = ni;
        q->cap = cap;
    }
    q->items[q->n++] = (struct qplan_item){p, off, kind, attempt, key, at};
    if (kind == QPLAN_DELIVER)
        q->delivered++;
    return 0;
}

static uint8_t kmap_get(const struct planner *pl, uint32_t key)
{
    if (!pl->kcap)
        return 0;
    uint32_t mask = pl->kcap - 1, i = khash(key) & mask;
    while (pl->kkeys[i]) {
        if (pl->kkeys[i] == key)
            return pl->kval[i];
        i = (i + 1) & mask;
    }
    return 0;
}

static int kmap_set(struct planner *pl, uint32_t key, uint8_t v)
{
    if ((pl->kn + 1) * 2 > pl->kcap) {
        uint32_t cap = pl->kcap ? pl->kcap * 2 : 64;
        uint32_t *nk = calloc(cap, sizeof *nk);
        uint8_t *nv = calloc(cap, 1);
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return CY_ENOMEM;
        }
        for (uint32_t i = 0; i < pl->kcap; i++)
            if (pl->kkeys[i]) {
                uint32_t j = khash(pl->kkeys[i]) & (cap - 1);
                while (nk[j])
                    j = (j + 1) & (cap - 1);
                nk[j] = pl->kkeys[i];
                nv[j] = pl->kval[i];
            }
        free(pl->kkeys);
        free(pl->kval);
        pl->kkeys = nk;
        pl->kval = nv;
        pl->kcap = cap;
    }
    uint32_t mask = pl->kcap - 1, i = khash(key) & mask;
    while (pl->kkeys[i] && pl->kkeys[i] != key)
        i = (i + 1) & mask;
    if (!pl->kkeys[i])
        pl->kn++;
    pl->kkeys[i] = key;
    pl->kval[i] = v;
    return 0;
}

/* May a message of `key` that is not in its queue yet be delivered now? Only
 * when everything already queued for the key is passed by this plan. */
static bool tail_clear(const struct planner *pl, uint32_t key)
{
    uint8_t v = kmap_get(pl, key);
    if (v)
        return v == 1;
    const struct kslot *k = key_find(pl->g, key);
    if (!k)
        return true;
    const struct entry *t = &pl->g->ents[k->tail];
    return t->pmark == pl->g->gen && t->pclear;
}

static bool clear_before(const struct qgroup *g, const struct entry *e)
{
    if (e->qprev == NIL)
        return true;
    const struct entry *pe = &g->ents[e->qprev];
    return pe->pmark == g->gen && pe->pclear;
}

static bool expiry_kills(const struct qgroup *g, const struct entry *e)
{
    return g->cfg.max_deliveries && (uint64_t)e->expiries + 1 >= g->cfg.max_deliveries;
}

static uint32_t next_attempt(const struct entry *e)
{
    return e->attempt == UINT32_MAX ? UINT32_MAX : e->attempt + 1;
}

static bool gone(const struct planner *pl, const struct entry *e)
{
    return e->part < pl->np && e->offset < pl->first[e->part];
}

/* After e (in its key's queue) was passed, give the same caller the messages
 * queued right behind it while they are available (invariant 5). */
static int walk_after(struct planner *pl, uint32_t idx)
{
    struct qgroup *g = pl->g;
    uint32_t gen = g->gen;
    for (uint32_t s = g->ents[idx].qnext; s != NIL && !pl_full(pl); s = g->ents[s].qnext) {
        struct entry *se = &g->ents[s];
        if (se->pmark == gen || (pl->only >= 0 && se->part != (uint32_t)pl->only))
            return 0;
        uint8_t kind = QPLAN_DELIVER;
        uint32_t attempt;
        if (gone(pl, se))
            kind = QPLAN_SKIP, attempt = se->attempt;
        else if (se->prel == gen)
            attempt = se->attempt; /* released by this plan: not counted */
        else if (se->state == ST_BLOCKED || se->state == ST_AVAIL ||
                 (se->state == ST_RETRY && se->at <= pl->now))
            attempt = next_attempt(se);
        else
            return 0; /* held by a live lease or a future retry */
        int rc = emit(pl, se->part, se->offset, kind, attempt, se->key_hash, 0);
        if (rc)
            return rc;
        se->pmark = gen;
        se->pclear = 1;
    }
    return 0;
}

/* A due heap entry (lease expired, retry or delay reached, available again). */
static int decide_due(struct planner *pl, uint32_t idx)
{
    struct qgroup *g = pl->g;
    struct entry *e = &g->ents[idx];
    uint32_t gen = g->gen, p = e->part, key = e->key_hash;
    int rc;
    e->pmark = gen;
    e->pclear = 0;
    if (!keyed(g, e)) {
        uint8_t kind = QPLAN_DELIVER;
        if (gone(pl, e))
            kind = QPLAN_SKIP;
        else if (e->state == ST_LEASED && expiry_kills(g, e))
            kind = QPLAN_DEAD;
        e->pclear = 1;
        return emit(pl, p, e->offset,
                    kind, kind == QPLAN_DELIVER ? next_attempt(e) : e->attempt, key, 0);
    }
    if (!(e->flags & F_INQ)) { /* WAITING: joins its key's queue now */
        if (gone(pl, e))
            return emit(pl, p, e->offset, QPLAN_SKIP, 0, key, 0);
        bool clear = tail_clear(pl, key);
        if ((rc = kmap_set(pl, key, clear ? 1 : 2)))
            return rc;
        return emit(pl, p, e->offset, clear ? QPLAN_DELIVER : QPLAN_BLOCK,
                    clear ? next_attempt(e) : 0, key, 0);
    }
    bool cb = clear_before(g, e);
    if (gone(pl, e)) {
        e->pclear = cb;
        rc = emit(pl, p, e->offset, QPLAN_SKIP, e->attempt, key, 0);
    } else if (e->prel == gen) {
        if (!cb) {
            pl->work++; /* apply blocks it anyway: no item */
            return 0;
        }
        e->pclear = 1;
        rc = emit(pl, p, e->offset, QPLAN_DELIVER, e->attempt, key, 0);
    } else {
        if (e->state == ST_LEASED) /* an expiry: its receive's later ones are released */
            for (uint32_t s = e->qnext; s != NIL; s = g->ents[s].qnext) {
                struct entry *se = &g->ents[s];
                if (se->state == ST_LEASED && se->recv == e->recv && se->pmark != gen)
                    se->prel = gen;
            }
        if (e->state == ST_LEASED && expiry_kills(g, e)) {
            e->pclear = cb;
            rc = emit(pl, p, e->offset, QPLAN_DEAD, e->attempt, key, 0);
        } else if (cb) {
            e->pclear = 1;
            rc = emit(pl, p, e->offset, QPLAN_DELIVER, next_attempt(e), key, 0);
        } else {
            rc = emit(pl, p, e->offset, QPLAN_BLOCK, e->attempt, key, 0);
        }
    }
    if (rc || !e->pclear)
        return rc;
    return walk_after(pl, idx);
}

/* Aux heap over (partition, position) pairs: visits the partition heaps in
 * (at, partition, offset) order without changing them. */
struct aux {
    uint32_t p, pos;
};

static bool aux_less(const struct qgroup *g, struct aux a, struct aux b)
{
    const struct hitem *x = &g->part[a.p].heap[a.pos], *y = &g->part[b.p].heap[b.pos];
    if (x->at != y->at)
        return x->at < y->at;
    if (a.p != b.p)
        return a.p < b.p;
    return x->off < y->off;
}

struct auxheap {
    struct aux *v;
    uint32_t n, cap;
};

static int aux_push(const struct qgroup *g, struct auxheap *h, struct aux a)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 128;
        struct aux *nv = realloc(h->v, (size_t)cap * sizeof *nv);
        if (!nv)
            return CY_ENOMEM;
        h->v = nv;
        h->cap = cap;
    }
    uint32_t i = h->n++;
    h->v[i] = a;
    while (i > 0 && aux_less(g, h->v[i], h->v[(i - 1) / 2])) {
        struct aux t = h->v[i];
        h->v[i] = h->v[(i - 1) / 2];
        h->v[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
    return 0;
}

static struct aux aux_pop(const struct qgroup *g, struct auxheap *h)
{
    struct aux top = h->v[0];
    h->v[0] = h->v[--h->n];
    for (uint32_t i = 0;;) {
        uint32_t l = 2 * i + 1, m = i;
        if (l < h->n && aux_less(g, h->v[l], h->v[m]))
            m = l;
        if (l + 1 < h->n && aux_less(g, h->v[l + 1], h->v[m]))
            m = l + 1;
        if (m == i)
            break;
        struct aux t = h->v[i];
        h->v[i] = h->v[m];
        h->v[m] = t;
        i = m;
    }
    return top;
}

static int plan_due(struct planner *pl)
{
    struct qgroup *g = pl->g;
    struct auxheap h = {0};
    int rc = 0;
    for (uint32_t p = 0; p < QGROUP_MAX_PARTITIONS && !rc; p++)
        if (g->part[p].hn && (pl->only < 0 || (uint32_t)pl->only == p))
            rc = aux_push(g, &h, (struct aux){p, 0});
    while (!rc && h.n && !pl_full(pl)) {
        struct aux a = aux_pop(g, &h);
        const struct part *P = &g->part[a.p];
        const struct hitem *it = &P->heap[a.pos];
        if (it->at > pl->now)
            break;
        if (2 * a.pos + 1 < P->hn)
            rc = aux_push(g, &h, (struct aux){a.p, 2 * a.pos + 1});
        if (!rc && 2 * a.pos + 2 < P->hn)
            rc = aux_push(g, &h, (struct aux){a.p, 2 * a.pos + 2});
        if (rc || !hvalid(g, a.p, it) || g->ents[it->idx].pmark == g->gen)
            continue;
        rc = decide_due(pl, it->idx);
    }
    free(h.v);
    return rc;
}

/* Offsets never looked at, one per partition per round. */
static int plan_scan(struct planner *pl, uint32_t start)
{
    struct qgroup *g = pl->g;
    uint64_t pos[QGROUP_MAX_PARTITIONS], lim[QGROUP_MAX_PARTITIONS];
    for (uint32_t p = 0; p < pl->np; p++) {
        bool init = g->init_mask & (1ull << p);
        uint64_t base = init ? g->part[p].floor : pl->first[p];
        pos[p] = init ? g->part[p].scan : pl->first[p];
        lim[p] = pl->next[p];
        if (g->fifo && base + g->window < lim[p] && base + g->window > base)
            lim[p] = base + g->window; /* bounded look-ahead */
        if (pl->only >= 0 && (uint32_t)pl->only != p)
            lim[p] = 0;
    }
    bool more = true;
    while (more && !pl_full(pl)) {
        more = false;
        for (uint32_t k = 0; k < pl->np && !pl_full(pl); k++) {
            uint32_t p = (start + k) % pl->np;
            if (pos[p] >= lim[p])
                continue;
            more = true;
            uint64_t off = pos[p]++;
            uint32_t key = 0;
            uint64_t sched = 0;
            int rc = off < pl->first[p] ? CY_ERANGE
                                        : pl->env->meta(pl->env->arg, p, off, &key, &sched);
            if (rc == CY_ERANGE) {
                rc = emit(pl, p, off, QPLAN_SKIP, 0, 0, 0);
            } else if (rc) {
                return rc;
            } else if (sched > pl->now) {
                rc = emit(pl, p, off, QPLAN_WAIT, 0, key, sched);
            } else if (g->fifo && key) {
                bool clear = tail_clear(pl, key);
                rc = kmap_set(pl, key, clear ? 1 : 2);
                if (!rc)
                    rc = emit(pl, p, off, clear ? QPLAN_DELIVER : QPLAN_BLOCK, clear ? 1 : 0,
                              key, 0);
            } else {
                rc = emit(pl, p, off, QPLAN_DELIVER, 1, key, 0);
            }
            if (rc)
                return rc;
        }
    }
    return 0;
}

static int run_planner(struct qgroup *g, const struct qgroup_env *env, uint64_t now,
                       uint32_t batch, int32_t only, uint32_t start, struct qplan *out,
                       uint32_t *delivered)
{
    struct planner pl;
    memset(&pl, 0, sizeof pl);
    pl.g = g;
    pl.env = env;
    pl.out = out;
    pl.now = now;
    pl.batch = batch;
    pl.only = only;
    uint64_t cap = 4 * (uint64_t)batch + 1000;
    pl.work_cap = cap > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)cap;
    pl.np = env->partitions > QGROUP_MAX_PARTITIONS ? QGROUP_MAX_PARTITIONS : env->partitions;
    *delivered = 0;
    if (batch == 0 || (only >= 0 && (uint32_t)only >= pl.np))
        return 0;
    int rc = heaps_repair(g);
    if (rc)
        return rc;
    for (uint32_t p = 0; p < pl.np; p++) {
        env->bounds(env->arg, p, &pl.first[p], &pl.next[p]);
        if (pl.next[p] < pl.first[p])
            pl.next[p] = pl.first[p];
    }
    next_gen(g);
    rc = plan_due(&pl);
    if (!rc)
        rc = plan_scan(&pl, pl.np ? start % pl.np : 0);
    free(pl.kkeys);
    free(pl.kval);
    *delivered = pl.delivered;
    return rc;
}

int qgroup_plan_receive(struct qgroup *g, const struct qgroup_env *env, uint64_t now,
                        uint32_t batch, int32_t only, uint32_t start_partition,
                        struct qplan *plan)
{
    uint32_t delivered;
    plan->n = plan->delivered = 0;
    int rc = run_planner(g, env, now, batch, only, start_partition, plan, &delivered);
    if (rc)
        plan->n = plan->delivered = 0;
    return rc;
}

uint32_t qgroup_available(struct qgroup *g, const struct qgroup_env *env, uint64_t now,
                          int32_t only, uint32_t cap)
{
    uint32_t delivered = 0;
    run_planner(g, env, now, cap, only, 0, NULL, &delivered);
    return delivered;
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
    heaps_repair(g); /* best effort; the next plan retries */
}

/* An item for an offset the group never looked at: create its entry. */
static void apply_new(struct qgroup *g, const struct qplan_item *it, uint64_t recv,
                      uint64_t lease_until)
{
    uint32_t p = it->partition;
    struct part *P = &g->part[p];
    P->scan = it->offset + 1; /* offsets skipped over are settled */
    if (it->kind == QPLAN_SKIP || (it->kind == QPLAN_DEAD && g->cfg.has_dlq_topic)) {
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
        uint32_t idx = lookup(g, p, it->offset);
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
        uint32_t idx = lookup(g, ids[i].partition, ids[i].offset);
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

int qgroup_plan_nack(struct qgroup *g, const struct qgroup_id *ids, uint32_t n, uint64_t now,
                     bool has_delay, uint64_t delay_ms, struct qplan *plan)
{
    struct planner pl;
    memset(&pl, 0, sizeof pl);
    pl.g = g;
    pl.out = plan;
    plan->n = plan->delivered = 0;
    next_gen(g);
    uint32_t gen = g->gen;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx = lookup(g, ids[i].partition, ids[i].offset);
        if (idx == NIL)
            continue;
        struct entry *e = &g->ents[idx];
        if (e->state != ST_LEASED || e->pmark == gen || e->prel == gen)
            continue; /* not leased, a duplicate, or released by an earlier id */
        e->pmark = gen;
        int rc;
        if (e->nacks < g->cfg.retry_count) {
            uint64_t d = has_delay ? delay_ms : g->cfg.retry_schedule[e->nacks];
            rc = emit(&pl, e->part, e->offset, QPLAN_WAIT, e->attempt, e->key_hash,
                      sat_add(now, d));
        } else {
            rc = emit(&pl, e->part, e->offset, QPLAN_DEAD, e->attempt, e->key_hash, 0);
        }
        if (rc) {
            plan->n = 0;
            return rc;
        }
        if (e->flags & F_INQ)
            for (uint32_t s = e->qnext; s != NIL; s = g->ents[s].qnext) {
                struct entry *se = &g->ents[s];
                if (se->state == ST_LEASED && se->recv == e->recv && se->pmark != gen)
                    se->prel = gen;
            }
    }
    return 0;
}

int qgroup_apply_nack(struct qgroup *g, const struct qplan *plan)
{
    int rc = check_plan(plan);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < plan->n; i++) {
        const struct qplan_item *it = &plan->items[i];
        uint32_t idx = lookup(g, it->partition, it->offset);
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

int qgroup_check_extend(struct qgroup *g, const struct qgroup_id *ids, uint32_t n, uint64_t now,
                        uint32_t *bad_index, const char **reason)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t p = ids[i].partition;
        uint64_t off = ids[i].offset;
        uint32_t idx = lookup(g, p, off);
        const char *why = NULL;
        if (idx == NIL) {
            bool init = p < QGROUP_MAX_PARTITIONS && (g->init_mask & (1ull << p));
            why = init && off < g->part[p].scan ? "message is already acked"
                                                : "message has no active lease";
        } else {
            const struct entry *e = &g->ents[idx];
            if (e->state == ST_DEAD)
                why = "message is in the dead-letter queue";
            else if (e->state != ST_LEASED)
                why = "message has no active lease";
            else if (e->at <= now)
                why = "lease has expired";
        }
        if (why) {
            *bad_index = i;
            *reason = why;
            return CY_EINVAL;
        }
    }
    return 0;
}

int qgroup_apply_extend(struct qgroup *g, const struct qgroup_id *ids, uint32_t n,
                        uint64_t lease_until)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx = lookup(g, ids[i].partition, ids[i].offset);
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
        for (uint32_t i = 0; i < g->kcap; i++)
            if (g->keys[i].key && g->ents[g->keys[i].head].state == ST_BLOCKED)
                set_timer(g, g->keys[i].head, ST_AVAIL, 0);
    after_apply(g);
}

/* ---- numbers ------------------------------------------------------------- */

void qgroup_get_stats(const struct qgroup *g, const struct qgroup_env *env, uint64_t now,
                      struct qgroup_stats *st)
{
    memset(st, 0, sizeof *st);
    uint32_t np = env->partitions > QGROUP_MAX_PARTITIONS ? QGROUP_MAX_PARTITIONS : env->partitions;
    for (uint32_t p = 0; p < QGROUP_MAX_PARTITIONS; p++) {
        const struct part *P = &g->part[p];
        uint64_t first = 0, next = 0;
        if (p < np)
            env->bounds(env->arg, p, &first, &next);
        bool init = g->init_mask & (1ull << p);
        uint64_t scan = init ? P->scan : first;
        st->floor[p] = st->oldest_unsettled_offset[p] = init ? P->floor : first;
        st->lag += (next > scan ? next - scan : 0) + P->cnt[ST_LEASED] + P->cnt[ST_RETRY] +
                   P->cnt[ST_WAITING] + P->cnt[ST_AVAIL] + P->cnt[ST_BLOCKED];
        st->waiting_retry += P->cnt[ST_RETRY];
        st->dead += P->cnt[ST_DEAD];
        st->delayed += P->cnt[ST_WAITING];
    }
    for (uint32_t i = 0; i < g->ehw; i++)
        st->in_flight += g->ents[i].state == ST_LEASED && g->ents[i].at > now;
}

uint64_t qgroup_next_wakeup(const struct qgroup *g, uint64_t now)
{
    uint64_t best = UINT64_MAX;
    uint32_t budget = WAKEUP_BUDGET;
    for (uint32_t p = 0; p < QGROUP_MAX_PARTITIONS; p++) {
        const struct part *P = &g->part[p];
        if (g->heap_lost & (1ull << p))
            return now + 1; /* unknown: look again soon */
        /* Depth-first over the heap; a subtree whose root is at or after the
         * best time so far cannot hold an earlier one. */
        uint32_t stack[128], sp = 0;
        if (P->hn)
            stack[sp++] = 0;
        while (sp) {
            uint32_t i = stack[--sp];
            const struct hitem *it = &P->heap[i];
            if (it->at >= best)
                continue;
            if (!budget--)
                return now + 1 < best ? now + 1 : best;
            if (it->at > now && hvalid(g, p, it)) {
                best = it->at;
                continue;
            }
            for (uint32_t c = 2 * i + 1; c <= 2 * i + 2; c++)
                if (c < P->hn && sp < 128)
                    stack[sp++] = c;
        }
    }
    return best;
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

static bool in_queue_state(uint8_t st)
{
    return st == ST_LEASED || st == ST_RETRY || st == ST_AVAIL || st == ST_BLOCKED;
}

static int load_entries(struct reader *r, struct qgroup *g)
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
    uint32_t c = 0;
    for (uint32_t i = 0; i < g->ehw; i++)
        c += g->ents[i].key_hash && in_queue_state(g->ents[i].state);
    if (!c)
        return 0;
    uint32_t *v = malloc((size_t)c * sizeof *v);
    if (!v)
        return CY_ENOMEM;
    c = 0;
    for (uint32_t i = 0; i < g->ehw; i++)
        if (g->ents[i].key_hash && in_queue_state(g->ents[i].state))
            v[c++] = i;
    qsort_r(v, c, sizeof *v, cmp_qorder, g->ents);
    for (uint32_t i = 0; i < c; i++) {
        uint64_t qseq = g->ents[v[i]].qseq;
        q_append(g, v[i]); /* assigns a fresh qseq: put the saved one back */
        g->ents[v[i]].qseq = qseq;
    }
    free(v);
    return 0;
}

int qgroup_load(struct reader *r, struct qgroup **out)
{
    if (rd_u32(r) != QG_MAGIC || rd_u16(r) != QG_VERSION)
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
    if ((rc = load_entries(r, g)))
        goto fail;
    g->qseq = qseq;
    for (uint32_t i = 0; i < g->kcap; i++) /* heads are never BLOCKED */
        if (g->keys[i].key && g->ents[g->keys[i].head].state == ST_BLOCKED) {
            struct entry *e = &g->ents[g->keys[i].head];
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
