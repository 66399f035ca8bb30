/*
 * qgroup_plan.c — the planning side of a queue or FIFO group (qgroup.h;
 * the state, its invariants and the apply side are in qgroup.c): receive and
 * nack plans, the dry run behind qgroup_available, the extend check, and the
 * numbers (stats, next wake-up). Nothing here changes the group's state:
 * only the entries' planner scratch marks (pmark, prel, pclear, under `gen`)
 * and the timer heaps, which are derived data (a lost heap is rebuilt).
 *
 * How a receive is planned: first the due timer items (expired leases, due
 * retries and delays, AVAIL heads) in (at, partition, offset) order, then
 * offsets never looked at, one per partition per round. FIFO (qgroup.c
 * invariants 4-6): an entry of Q(K) is delivered only when everything before
 * it was passed by this plan (`pclear`); after a delivered one, walk_after
 * hands the same caller the run behind it. Messages the scan meets for the
 * first time consult `decided` (keys this plan already decided) and then the
 * tail of Q(K); a keyed message met before its time is a WAIT item that
 * holds its key for the rest of the plan.
 */
#include "broker/qgroup.h"

#include <stdlib.h>
#include <string.h>

#include "broker/qgroup_int.h"
#include "coyote.h"

#define WAKEUP_BUDGET 4096 /* heap nodes next_wakeup may visit */

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

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
    /* keys whose new messages this plan already decided: head 1 clear, 2 blocked */
    struct ktab decided;
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

static int decided_set(struct planner *pl, uint32_t key, bool clear)
{
    struct kslot *k = qg_kt_find(&pl->decided, key);
    if (!k) {
        int rc = qg_kt_reserve(&pl->decided, 1);
        if (rc)
            return rc;
        k = qg_kt_insert(&pl->decided, key);
    }
    k->head = clear ? 1 : 2;
    return 0;
}

/* May a message of `key` that is not in its queue yet be delivered now? Only
 * when everything already queued for the key is passed by this plan. */
static bool tail_clear(const struct planner *pl, uint32_t key)
{
    const struct kslot *d = qg_kt_find(&pl->decided, key);
    if (d)
        return d->head == 1;
    const struct kslot *k = qg_kt_find(&pl->g->keys, key);
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
                 ((se->state == ST_RETRY || se->state == ST_WAITING) && se->at <= pl->now))
            attempt = next_attempt(se);
        else
            return 0; /* held by a live lease, a future retry or a delay */
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
    /* In its key's queue (a due WAITING one too: it kept its place). */
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
        if (rc || !qg_hvalid(g, a.p, it) || g->ents[it->idx].pmark == g->gen)
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
    /* FIFO: BLOCKED entries of each partition, those this plan adds included.
     * The scan of a partition pauses while `window` of them wait (invariant
     * 8): they are the memory a held key costs; leased and other messages do
     * not count, so many keys in flight never stop the scan. */
    uint32_t blocked[QGROUP_MAX_PARTITIONS];
    for (uint32_t p = 0; p < pl->np; p++) {
        bool init = g->init_mask & (1ull << p);
        pos[p] = init ? g->part[p].scan : pl->first[p];
        lim[p] = pl->next[p];
        blocked[p] = init ? g->part[p].cnt[ST_BLOCKED] : 0;
        if (pl->only >= 0 && (uint32_t)pl->only != p)
            lim[p] = 0;
    }
    bool more = true;
    while (more && !pl_full(pl)) {
        more = false;
        for (uint32_t k = 0; k < pl->np && !pl_full(pl); k++) {
            uint32_t p = (start + k) % pl->np;
            if (pos[p] >= lim[p] || (g->fifo && blocked[p] >= g->window))
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
                /* FIFO: it takes its place in its key's queue now and holds
                 * the key (invariant 4): later messages of the key block */
                rc = g->fifo && key ? decided_set(pl, key, false) : 0;
                if (!rc)
                    rc = emit(pl, p, off, QPLAN_WAIT, 0, key, sched);
            } else if (g->fifo && key) {
                bool clear = tail_clear(pl, key);
                rc = decided_set(pl, key, clear);
                if (!rc)
                    rc = emit(pl, p, off, clear ? QPLAN_DELIVER : QPLAN_BLOCK, clear ? 1 : 0,
                              key, 0);
                blocked[p] += clear ? 0 : 1;
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
    int rc = qg_heaps_repair(g);
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
    free(pl.decided.s);
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
        uint32_t idx = qg_lookup(g, ids[i].partition, ids[i].offset);
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

int qgroup_check_extend(struct qgroup *g, const struct qgroup_id *ids, uint32_t n, uint64_t now,
                        uint32_t *bad_index, const char **reason)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t p = ids[i].partition;
        uint64_t off = ids[i].offset;
        uint32_t idx = qg_lookup(g, p, off);
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
            if (it->at > now && qg_hvalid(g, p, it)) {
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
