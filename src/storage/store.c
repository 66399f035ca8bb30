/*
 * store.c — one namespace's storage: journal + indexes + checkpoints +
 * retention, and the recovery that ties them together (see store.h for the
 * steps and the directory layout).
 *
 * Invariants:
 *   1. Every partition that ever received a message is in `parts` (loaded
 *      from the checkpoint, found in replay, or created by a publish), so a
 *      checkpoint lists them all.
 *   2. For a partition in the newest checkpoint, index entries below its
 *      recorded high water were synced by that checkpoint and are trusted;
 *      entries at or above it are checked against the journal during replay.
 *   3. A checkpoint covers position P only after the journal is durable up
 *      to P and the indexes are synced: a snapshot never claims data that a
 *      crash could take back.
 *   4. Segments are deleted only below the older kept checkpoint.
 *   5. At most one checkpoint is in flight. A background checkpoint captures
 *      everything it needs on the owner thread (the position, the encoded
 *      state, the names of the index files to sync); its thread then only
 *      syncs the journal and those files and writes the snapshot, touching
 *      no store state. The owner thread takes the result (ckpt_pos,
 *      snap_valid) when it joins the thread. Only that thread writes the
 *      snapshot directory while it runs; retention lists it, which is safe
 *      (the lowest names are read: an unfinished newer snapshot never raises
 *      the floor).
 */
#include "storage/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/crc32c.h"
#include "base/hashmap.h"
#include "base/log.h"
#include "coyote.h"
#include "storage/snapshot.h"

#define STORE_SECTION_VERSION 1
#define DEFAULT_CKPT_INTERVAL_MS 60000u
#define DEFAULT_CKPT_BYTES (64ull << 20)

struct part {
    uint64_t id;
    struct index *ix;      /* owned by the index set */
    uint64_t trusted_next; /* entries below this are trusted (invariant 2) */
    uint64_t replay_next;  /* recovery: one past the highest offset replayed */
    bool rebuild;          /* recovery: index shorter than the checkpoint says */
    uint64_t first_cache;  /* store_part_first, valid while first_at == journal start */
    uint64_t first_at;
};

/* A checkpoint running on its own thread (invariant 5). */
struct ckpt_job {
    struct store *s;   /* read-only there: fo, snap_dir, dir, j */
    uint64_t pos;      /* the journal position it covers */
    uint64_t keep;     /* the fallback snapshot to keep (snap_valid at start) */
    struct buf st, cl; /* the encoded sections */
    struct index_sync_list ix;
    uint64_t t0_mono_ms;
    pthread_t thread;
    atomic_bool done;
    int rc;
};

struct store {
    const struct fileops *fo;
    char *dir;
    char *snap_dir;
    int lock_fd;
    struct journal *j;
    struct index_set *ixs;
    struct store_client client;
    struct hmap *parts;
    struct buf enc;
    struct msgrec_loc *locs;
    size_t locs_cap;
    uint64_t ckpt_interval_ms, ckpt_bytes;
    uint64_t ckpt_pos, ckpt_mono_ms;
    int err; /* sticky: indexing failed after a journal append (restart rebuilds) */
    uint64_t last_publish_pos;
    uint64_t snap_valid; /* a snapshot known valid (recovered from or written); UINT64_MAX: none */
    struct ckpt_job *job; /* the background checkpoint in flight, or NULL */
    struct store_stats stats;
};

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

static struct part *part_find(struct store *s, uint64_t id)
{
    return hmap_get(s->parts, &id, sizeof id);
}

/* The partition id, loading or creating its index (base used only when no
 * index exists yet). */
static int part_get(struct store *s, uint64_t id, uint64_t base, struct part **out)
{
    struct part *p = part_find(s, id);
    if (p) {
        *out = p;
        return 0;
    }
    p = calloc(1, sizeof *p);
    if (!p)
        return CY_ENOMEM;
    p->id = id;
    p->first_at = UINT64_MAX;
    int rc = index_get(s->ixs, id, base, &p->ix);
    if (rc == CY_ECORRUPT) {
        /* Derived data: start it again; recovery refills it from the journal. */
        log_warn("store %s: index of partition %016" PRIx64 " is damaged; rebuilding it", s->dir,
                 id);
        rc = index_remove(s->ixs, id);
        if (!rc)
            rc = index_get(s->ixs, id, base, &p->ix);
    }
    if (!rc)
        rc = hmap_put(s->parts, &id, sizeof id, p, NULL);
    if (rc) {
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* Replace p's index with an empty one starting at base. */
static int part_reset(struct store *s, struct part *p, uint64_t base)
{
    int rc = index_remove(s->ixs, p->id);
    if (!rc)
        rc = index_get(s->ixs, p->id, base, &p->ix);
    p->first_at = UINT64_MAX;
    return rc;
}

struct journal *store_journal(struct store *s)
{
    return s->j;
}

uint64_t store_durable(struct store *s)
{
    return journal_durable(s->j);
}

int store_wait_durable(struct store *s, uint64_t pos, int timeout_ms)
{
    return journal_wait_durable(s->j, pos, timeout_ms);
}

int store_append(struct store *s, uint8_t type, uint64_t ts, const void *body, uint32_t len,
                 uint64_t *end)
{
    if (type == JREC_PUBLISH)
        return CY_EINVAL;
    if (s->err)
        return CY_EREADONLY;
    return journal_append(s->j, type, ts, body, len, NULL, end);
}

int store_publish(struct store *s, uint64_t ts, const struct msgrec_part *parts, size_t nparts,
                  const void *extra, uint32_t extra_len, uint64_t *end)
{
    if (nparts > STORE_MAX_PUBLISH_PARTS)
        return CY_EINVAL;
    if (s->err)
        return CY_EREADONLY;
    size_t nmsgs = 0;
    struct part *pp[STORE_MAX_PUBLISH_PARTS];
    for (size_t i = 0; i < nparts; i++) {
        int rc = part_get(s, parts[i].part_id, parts[i].first_offset, &pp[i]);
        if (rc)
            return rc;
        if (parts[i].first_offset != index_next(pp[i]->ix))
            return CY_EINVAL;
        for (size_t k = 0; k < i; k++)
            if (pp[k] == pp[i])
                return CY_EINVAL;
        nmsgs += parts[i].count;
    }
    if (nmsgs > s->locs_cap) {
        struct msgrec_loc *l = realloc(s->locs, nmsgs * sizeof *l);
        if (!l)
            return CY_ENOMEM;
        s->locs = l;
        s->locs_cap = nmsgs;
    }
    buf_reset(&s->enc);
    msgrec_encode(&s->enc, parts, nparts, extra, extra_len, s->locs);
    if (buf_err(&s->enc))
        return CY_ENOMEM;
    if (s->enc.len > JOURNAL_MAX_BODY)
        return CY_ETOOBIG;
    uint64_t pos;
    int rc = journal_append(s->j, JREC_PUBLISH, ts, s->enc.data, (uint32_t)s->enc.len, &pos, end);
    if (rc)
        return rc;
    s->last_publish_pos = pos;
    const struct msgrec_loc *loc = s->locs;
    for (size_t i = 0; i < nparts; i++) {
        for (uint32_t k = 0; k < parts[i].count; k++, loc++) {
            struct index_entry e = {
                .pos = pos + JOURNAL_RECORD_HEADER + loc->body_offset,
                .timestamp_ms = ts,
                .len = parts[i].msgs[k].len,
                .key_hash = parts[i].msgs[k].key_hash,
                .msg_crc = loc->crc,
            };
            rc = index_append(pp[i]->ix, parts[i].first_offset + k, &e);
            if (rc) {
                /* The record is in the journal but the offsets are not in the
                 * index: refuse further writes rather than reuse offsets. A
                 * restart re-indexes from the journal. */
                log_error("store %s: indexing partition %016" PRIx64
                          " failed: %s; the store is read-only until restarted",
                          s->dir, parts[i].part_id, cy_strerror(rc));
                s->err = rc;
                return CY_EREADONLY;
            }
        }
    }
    return 0;
}

void store_last_publish(struct store *s, const uint8_t **body, size_t *len, uint64_t *pos)
{
    *body = s->enc.data;
    *len = s->enc.len;
    *pos = s->last_publish_pos;
}

int store_part_next(struct store *s, uint64_t part_id, uint64_t *next)
{
    struct part *p = part_find(s, part_id);
    *next = p ? index_next(p->ix) : 0;
    return 0;
}

int store_part_first(struct store *s, uint64_t part_id, uint64_t *first)
{
    struct part *p = part_find(s, part_id);
    if (!p) {
        *first = 0;
        return 0;
    }
    uint64_t start = journal_start(s->j);
    if (p->first_at != start) {
        uint64_t off;
        int rc = index_seek_pos(p->ix, start, &off);
        if (rc)
            return rc;
        p->first_cache = off;
        p->first_at = start;
    }
    *first = p->first_cache;
    return 0;
}

int store_part_seek_time(struct store *s, uint64_t part_id, uint64_t ts, uint64_t *offset)
{
    struct part *p = part_find(s, part_id);
    if (!p) {
        *offset = 0;
        return 0;
    }
    uint64_t first;
    int rc = store_part_first(s, part_id, &first);
    if (!rc)
        rc = index_seek_time(p->ix, ts, offset);
    if (!rc && *offset < first)
        *offset = first;
    return rc;
}

int store_read_entry(struct store *s, uint64_t part_id, uint64_t offset, struct index_entry *e)
{
    struct part *p = part_find(s, part_id);
    if (!p)
        return CY_ERANGE;
    uint64_t first;
    int rc = store_part_first(s, part_id, &first);
    if (rc)
        return rc;
    if (offset < first)
        return CY_ERANGE;
    return index_lookup(p->ix, offset, e);
}

int store_read_msg(struct store *s, uint64_t part_id, uint64_t offset, struct buf *out,
                   struct index_entry *e_out)
{
    struct index_entry e;
    int rc = store_read_entry(s, part_id, offset, &e);
    if (rc)
        return rc;
    size_t at = out->len;
    uint8_t *d = buf_extend(out, e.len);
    if (!d)
        return CY_ENOMEM;
    rc = journal_read_raw(s->j, e.pos, d, e.len);
    if (!rc && crc32c(0, d, e.len) != e.msg_crc)
        rc = CY_ECORRUPT;
    if (rc)
        out->len = at;
    if (rc == CY_ERANGE)
        return CY_ERANGE; /* the segment went away under retention */
    if (rc == CY_ECORRUPT) {
        log_error("store %s: partition %016" PRIx64 " offset %" PRIu64
                  " fails its checksum (journal position %" PRIu64 ")",
                  s->dir, part_id, offset, e.pos);
        return CY_ECORRUPT;
    }
    if (rc)
        return rc;
    if (e_out)
        *e_out = e;
    return 0;
}

/* ---- checkpoints -------------------------------------------------------- */

static int encode_store_section(struct store *s, struct buf *out)
{
    buf_put_u32(out, STORE_SECTION_VERSION);
    buf_put_u32(out, (uint32_t)hmap_count(s->parts));
    size_t it = 0;
    const void *k;
    size_t kl;
    void *v;
    while (hmap_next(s->parts, &it, &k, &kl, &v)) {
        struct part *p = v;
        buf_put_u64(out, p->id);
        buf_put_u64(out, index_base(p->ix));
        buf_put_u64(out, index_next(p->ix));
    }
    return buf_err(out);
}

/* Encode the store's and the client's sections (owner thread). */
static int ckpt_encode(struct store *s, struct buf *st, struct buf *cl)
{
    int rc = encode_store_section(s, st);
    if (!rc && s->client.save)
        rc = s->client.save(s->client.arg, cl);
    if (!rc)
        rc = buf_err(cl);
    return rc;
}

/* Durable journal up to the position, then the snapshot (any thread). */
static int ckpt_write(struct store *s, uint64_t pos, uint64_t keep, const struct buf *st,
                      const struct buf *cl)
{
    int rc = journal_wait_durable(s->j, pos, -1);
    if (rc)
        return rc;
    struct snapshot_section secs[2] = {
        {SNAP_SECTION_STORE, st->data, st->len},
        {SNAP_SECTION_CLIENT, cl->data, cl->len},
    };
    return snapshot_write_keep(s->fo, s->snap_dir, pos, clock_wall_ms(), secs, 2, keep);
}

static void ckpt_done(struct store *s, uint64_t pos, uint64_t t0_mono_ms)
{
    s->ckpt_pos = pos;
    s->snap_valid = pos;
    s->ckpt_mono_ms = t0_mono_ms;
    s->stats.checkpoints++;
    s->stats.last_checkpoint_pos = pos;
    log_debug("store %s: checkpoint at position %" PRIu64 " in %" PRIu64 " ms", s->dir, pos,
              clock_mono_ms() - t0_mono_ms);
}

static void *ckpt_thread(void *arg)
{
    struct ckpt_job *job = arg;
    struct store *s = job->s;
    /* The journal is asked to sync (under fsync=never nothing else would). */
    int rc = journal_sync(s->j);
    if (!rc)
        rc = index_sync_files(s->fo, &job->ix);
    if (!rc)
        rc = ckpt_write(s, job->pos, job->keep, &job->st, &job->cl);
    job->rc = rc;
    atomic_store(&job->done, true);
    return NULL;
}

/* Join the job in flight (blocking when `wait`, else only when it has
 * finished) and take its result. 0, or the job's error (logged). */
static int ckpt_collect(struct store *s, bool wait)
{
    struct ckpt_job *job = s->job;
    if (!job || (!wait && !atomic_load(&job->done)))
        return 0;
    pthread_join(job->thread, NULL);
    s->job = NULL;
    int rc = job->rc;
    if (rc) {
        index_set_sync_failed(s->ixs);
        log_error("store %s: checkpoint at position %" PRIu64 " failed: %s", s->dir, job->pos,
                  cy_strerror(rc));
    } else {
        ckpt_done(s, job->pos, job->t0_mono_ms);
    }
    buf_free(&job->st);
    buf_free(&job->cl);
    index_sync_list_free(&job->ix);
    free(job);
    return rc;
}

int store_checkpoint(struct store *s)
{
    ckpt_collect(s, true);
    if (s->err)
        return CY_EREADONLY;
    int rc = journal_error(s->j);
    if (rc)
        return rc;
    uint64_t t0 = clock_mono_ms();
    rc = journal_sync(s->j);
    if (rc)
        return rc;
    uint64_t pos = journal_end(s->j);
    rc = index_set_sync(s->ixs);
    if (rc) {
        log_error("store %s: syncing indexes for a checkpoint failed: %s", s->dir,
                  cy_strerror(rc));
        return rc;
    }
    struct buf st = BUF_INIT, cl = BUF_INIT;
    rc = ckpt_encode(s, &st, &cl);
    if (!rc)
        rc = ckpt_write(s, pos, s->snap_valid, &st, &cl);
    buf_free(&st);
    buf_free(&cl);
    if (rc) {
        log_error("store %s: checkpoint at position %" PRIu64 " failed: %s", s->dir, pos,
                  cy_strerror(rc));
        return rc;
    }
    ckpt_done(s, pos, t0);
    return 0;
}

/* Start a checkpoint on its own thread (invariant 5). */
static int ckpt_start(struct store *s)
{
    if (s->err)
        return CY_EREADONLY;
    int rc = journal_error(s->j);
    if (rc)
        return rc;
    struct ckpt_job *job = calloc(1, sizeof *job);
    if (!job)
        return CY_ENOMEM;
    job->s = s;
    job->pos = journal_end(s->j);
    job->keep = s->snap_valid;
    job->t0_mono_ms = clock_mono_ms();
    buf_init(&job->st);
    buf_init(&job->cl);
    atomic_init(&job->done, false);
    rc = index_set_sync_begin(s->ixs, &job->ix);
    if (!rc) {
        rc = ckpt_encode(s, &job->st, &job->cl);
        if (rc)
            index_set_sync_failed(s->ixs);
    }
    if (!rc) {
        rc = -pthread_create(&job->thread, NULL, ckpt_thread, job);
        if (rc)
            index_set_sync_failed(s->ixs);
    }
    if (rc) {
        log_error("store %s: starting a checkpoint failed: %s", s->dir, cy_strerror(rc));
        buf_free(&job->st);
        buf_free(&job->cl);
        index_sync_list_free(&job->ix);
        free(job);
        return rc;
    }
    s->job = job;
    return 0;
}

int store_maybe_checkpoint(struct store *s, uint64_t now_mono_ms)
{
    if (s->job)
        return ckpt_collect(s, false); /* one at a time; the next when due again */
    uint64_t end = journal_end(s->j);
    if (end == s->ckpt_pos)
        return 0;
    if (now_mono_ms - s->ckpt_mono_ms < s->ckpt_interval_ms && end - s->ckpt_pos < s->ckpt_bytes)
        return 0;
    return ckpt_start(s);
}

bool store_checkpoint_running(struct store *s)
{
    return s->job != NULL;
}

int store_checkpoint_wait(struct store *s)
{
    return ckpt_collect(s, true);
}

/* ---- retention ---------------------------------------------------------- */

int store_retain_point(struct store *s, uint64_t now_ms, uint64_t max_age_ms,
                       uint64_t max_bytes, uint64_t *cut)
{
    *cut = journal_start(s->j);
    uint64_t snaps[2];
    int ns = snapshot_list(s->fo, s->snap_dir, snaps, 2);
    if (ns <= 0)
        return ns; /* no checkpoint covers anything yet */
    uint64_t limit = snaps[0]; /* the older kept checkpoint (invariant 4) */
    uint64_t durable = journal_durable(s->j);
    if (durable < limit)
        limit = durable;

    int n = journal_segments(s->j, NULL, 0);
    struct journal_segment_info *segs = calloc((size_t)n + 1, sizeof *segs);
    if (!segs)
        return CY_ENOMEM;
    n = journal_segments(s->j, segs, n);
    uint64_t end = journal_end(s->j);
    for (int i = 0; i + 1 < n; i++) {
        if (segs[i].end > limit)
            break;
        bool old = max_age_ms && now_ms > max_age_ms && segs[i].max_timestamp < now_ms - max_age_ms;
        bool big = max_bytes && end - segs[i].base > max_bytes;
        if (!old && !big)
            break;
        *cut = segs[i].end;
    }
    free(segs);
    return 0;
}

int store_retain_to(struct store *s, uint64_t cut, int *deleted)
{
    *deleted = 0;
    /* Never past the older kept checkpoint, nor past what is durable. */
    uint64_t snaps[2];
    int ns = snapshot_list(s->fo, s->snap_dir, snaps, 2);
    if (ns <= 0)
        return ns;
    if (cut > snaps[0])
        cut = snaps[0];
    if (cut > journal_durable(s->j))
        cut = journal_durable(s->j);
    uint64_t start = journal_start(s->j);
    if (cut <= start)
        return 0;
    int before = journal_segments(s->j, NULL, 0);
    int rc = journal_delete_before(s->j, cut);
    if (rc)
        return rc;
    *deleted = before - journal_segments(s->j, NULL, 0);
    /* Give the index space of removed messages back. */
    size_t it = 0;
    const void *k;
    size_t kl;
    void *v;
    while (hmap_next(s->parts, &it, &k, &kl, &v)) {
        struct part *p = v;
        uint64_t first;
        rc = store_part_first(s, p->id, &first);
        if (!rc)
            rc = index_drop_before(p->ix, first);
        if (rc)
            return rc;
    }
    return 0;
}

int store_retain(struct store *s, uint64_t now_ms, uint64_t max_age_ms, uint64_t max_bytes,
                 int *deleted)
{
    uint64_t cut;
    *deleted = 0;
    int rc = store_retain_point(s, now_ms, max_age_ms, max_bytes, &cut);
    return rc ? rc : store_retain_to(s, cut, deleted);
}

int store_oldest_needed(struct store *s, uint64_t part_id, uint64_t first, uint64_t *pos)
{
    struct index_entry e;
    int rc = store_read_entry(s, part_id, first, &e);
    if (rc == CY_ERANGE) {
        *pos = UINT64_MAX; /* nothing stored at or after first */
        return 0;
    }
    if (!rc)
        *pos = e.pos;
    return rc;
}

int store_part_first_at(struct store *s, uint64_t part_id, uint64_t pos, uint64_t *offset)
{
    struct part *p = part_find(s, part_id);
    if (!p) {
        *offset = 0;
        return 0;
    }
    return index_seek_pos(p->ix, pos, offset);
}

/* ---- recovery ----------------------------------------------------------- */

static int load_store_section(struct store *s, const uint8_t *data, size_t len)
{
    struct reader r;
    reader_init(&r, data, len);
    uint32_t version = rd_u32(&r);
    uint32_t n = rd_u32(&r);
    if (r.err || version != STORE_SECTION_VERSION || (uint64_t)n * 24 != reader_left(&r)) {
        log_error("store %s: checkpoint's store section is malformed", s->dir);
        return CY_ECORRUPT;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t id = rd_u64(&r), base = rd_u64(&r), next = rd_u64(&r);
        if (base > next)
            return CY_ECORRUPT;
        struct part *p;
        int rc = part_get(s, id, base, &p);
        if (rc)
            return rc;
        p->trusted_next = next;
        p->replay_next = next;
        /* A base above the checkpoint's is retention's rewrite (dropped on
         * purpose); only a shorter index needs the journal. */
        uint64_t have = index_next(p->ix);
        if (have < next) {
            log_warn("store %s: index of partition %016" PRIx64 " holds offsets up to %" PRIu64
                     " but the checkpoint says %" PRIu64 "; rebuilding it from the journal",
                     s->dir, id, have, next);
            p->rebuild = true;
            rc = part_reset(s, p, base);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* Put (offset, e) into p's index during recovery: append, verify, or replace
 * what a crash left (invariant 2). */
static int reindex(struct store *s, struct part *p, uint64_t offset, const struct index_entry *e)
{
    struct index *ix = p->ix;
    if (index_next(ix) == index_base(ix) && offset != index_base(ix)) {
        int rc = part_reset(s, p, offset); /* empty: start where the journal does */
        if (rc)
            return rc;
        ix = p->ix;
    }
    if (offset < index_base(ix)) {
        if (offset < p->trusted_next)
            return 0; /* dropped by retention on purpose */
        int rc = part_reset(s, p, offset);
        if (rc)
            return rc;
        ix = p->ix;
    }
    if (offset < index_next(ix)) {
        if (offset < p->trusted_next)
            return 0;
        struct index_entry have;
        int rc = index_lookup(ix, offset, &have);
        if (!rc && have.pos == e->pos && have.len == e->len && have.msg_crc == e->msg_crc &&
            have.timestamp_ms == e->timestamp_ms)
            return 0;
        rc = index_truncate(ix, offset);
        if (rc)
            return rc;
    }
    if (offset != index_next(ix)) {
        log_error("store %s: partition %016" PRIx64 " jumps from offset %" PRIu64 " to %" PRIu64
                  " in the journal",
                  s->dir, p->id, index_next(ix), offset);
        return CY_ECORRUPT;
    }
    return index_append(ix, offset, e);
}

struct replay_ctx {
    struct store *s;
    const struct journal_record *rec;
    bool rebuild_only; /* before the checkpoint: only partitions being rebuilt */
    int err;
};

static int replay_msg(void *arg, uint64_t part_id, uint64_t offset, const struct msgrec_msg *m)
{
    struct replay_ctx *c = arg;
    struct store *s = c->s;
    struct part *p = part_find(s, part_id);
    if (c->rebuild_only && (!p || !p->rebuild))
        return 0;
    if (!p) {
        int rc = part_get(s, part_id, offset, &p);
        if (rc)
            return rc;
    }
    struct index_entry e = {
        .pos = c->rec->pos + JOURNAL_RECORD_HEADER + m->body_offset,
        .timestamp_ms = c->rec->timestamp_ms,
        .len = m->len,
        .key_hash = m->key_hash,
        .msg_crc = m->crc,
    };
    int rc = reindex(s, p, offset, &e);
    if (!rc && offset + 1 > p->replay_next)
        p->replay_next = offset + 1;
    return rc;
}

static int replay_record(void *arg, const struct journal_record *rec)
{
    struct replay_ctx *c = arg;
    c->rec = rec;
    if (rec->type == JREC_PUBLISH) {
        int rc = msgrec_decode(rec->body, rec->len, replay_msg, c, NULL, NULL);
        if (rc == CY_ECORRUPT)
            log_error("store %s: publish record at position %" PRIu64 " is malformed", c->s->dir,
                      rec->pos);
        if (rc)
            return rc;
    }
    if (c->rebuild_only)
        return 0;
    c->s->stats.recovery_replayed_records++;
    if (c->s->client.replay)
        return c->s->client.replay(c->s->client.arg, rec);
    return 0;
}

static int remove_unknown_index(void *arg, uint64_t id)
{
    struct store *s = arg;
    if (part_find(s, id))
        return 0;
    log_warn("store %s: removing the index of partition %016" PRIx64
             ": no checkpoint or journal record knows it",
             s->dir, id);
    return index_remove(s->ixs, id);
}

static int recover(struct store *s)
{
    uint64_t t0 = clock_mono_ms();
    uint64_t start = journal_start(s->j), end = journal_end(s->j);
    struct snapshot snap;
    memset(&snap, 0, sizeof snap);
    uint64_t covered = start;
    int rc = snapshot_load_newest(s->fo, s->snap_dir, end, &snap);
    bool have_snap = rc == 0;
    if (rc && rc != CY_ENOTFOUND)
        return rc;
    s->snap_valid = UINT64_MAX;
    if (have_snap) {
        covered = snap.covered_pos;
        s->snap_valid = covered;
    }
    if (!have_snap && start != 0) {
        log_error("store %s: the journal starts at position %" PRIu64
                  " but no valid checkpoint covers what came before",
                  s->dir, start);
        return CY_ECORRUPT;
    }
    if (covered < start) {
        log_error("store %s: the newest valid checkpoint covers up to %" PRIu64
                  " but the journal now starts at %" PRIu64,
                  s->dir, covered, start);
        rc = CY_ECORRUPT;
        goto out;
    }

    const uint8_t *client_state = NULL;
    size_t client_len = 0;
    for (size_t i = 0; have_snap && i < snap.n_sections; i++) {
        if (snap.sections[i].tag == SNAP_SECTION_STORE) {
            rc = load_store_section(s, snap.sections[i].data, snap.sections[i].len);
            if (rc)
                goto out;
        } else if (snap.sections[i].tag == SNAP_SECTION_CLIENT) {
            client_state = snap.sections[i].data;
            client_len = snap.sections[i].len;
        }
    }
    if (s->client.restore) {
        rc = s->client.restore(s->client.arg, client_state, client_len);
        if (rc)
            goto out;
    }

    /* Rebuild indexes the checkpoint says are longer than they are. */
    struct replay_ctx c = {.s = s, .rebuild_only = true};
    bool any_rebuild = false;
    size_t it = 0;
    const void *k;
    size_t kl;
    void *v;
    while (hmap_next(s->parts, &it, &k, &kl, &v))
        any_rebuild |= ((struct part *)v)->rebuild;
    if (any_rebuild) {
        rc = journal_scan(s->j, start, covered, replay_record, &c);
        if (rc)
            goto out;
        it = 0;
        while (hmap_next(s->parts, &it, &k, &kl, &v)) {
            struct part *p = v;
            if (p->rebuild && index_next(p->ix) < p->trusted_next) {
                if (index_next(p->ix) != index_base(p->ix)) {
                    log_error("store %s: partition %016" PRIx64
                              " cannot be rebuilt: the journal ends at offset %" PRIu64,
                              s->dir, p->id, index_next(p->ix));
                    rc = CY_ECORRUPT;
                    goto out;
                }
                /* Everything it held is before the journal's start. */
                rc = part_reset(s, p, p->trusted_next);
                if (rc)
                    goto out;
            }
            p->rebuild = false;
        }
    }

    c.rebuild_only = false;
    rc = journal_scan(s->j, covered, UINT64_MAX, replay_record, &c);
    if (rc)
        goto out;

    /* Cut index entries past what the journal holds (invariant 2). */
    it = 0;
    while (hmap_next(s->parts, &it, &k, &kl, &v)) {
        struct part *p = v;
        if (index_next(p->ix) > p->replay_next) {
            rc = index_truncate(p->ix, p->replay_next);
            if (rc)
                goto out;
        }
    }
    rc = index_set_list(s->ixs, remove_unknown_index, s);
    if (!rc)
        rc = index_set_flush(s->ixs);
    s->ckpt_pos = covered;
    s->stats.recovery_ms = clock_mono_ms() - t0;
    if (!rc && (start != end || have_snap))
        log_info("store %s: recovered: checkpoint at %" PRIu64 ", replayed %" PRIu64
                 " records up to %" PRIu64 ", %zu partitions, %" PRIu64 " ms",
                 s->dir, covered, s->stats.recovery_replayed_records, end, hmap_count(s->parts),
                 s->stats.recovery_ms);
out:
    if (have_snap)
        snapshot_free(&snap);
    return rc;
}

/* ---- open / close ------------------------------------------------------- */

static void store_free(struct store *s)
{
    if (s->parts) {
        size_t it = 0;
        const void *k;
        size_t kl;
        void *v;
        while (hmap_next(s->parts, &it, &k, &kl, &v))
            free(v);
        hmap_free(s->parts);
    }
    if (s->ixs)
        index_set_close(s->ixs);
    if (s->lock_fd >= 0)
        s->fo->close(s->fo->ctx, s->lock_fd);
    buf_free(&s->enc);
    free(s->locs);
    free(s->snap_dir);
    free(s->dir);
    free(s);
}

int store_open(const struct store_config *cfg, const struct store_client *client,
               struct store **out)
{
    *out = NULL;
    struct store *s = calloc(1, sizeof *s);
    if (!s)
        return CY_ENOMEM;
    s->fo = cfg->fo ? cfg->fo : &fileops_posix;
    s->lock_fd = -1;
    if (client)
        s->client = *client;
    s->ckpt_interval_ms = cfg->checkpoint_interval_ms ? cfg->checkpoint_interval_ms
                                                      : DEFAULT_CKPT_INTERVAL_MS;
    s->ckpt_bytes = cfg->checkpoint_bytes ? cfg->checkpoint_bytes : DEFAULT_CKPT_BYTES;
    s->ckpt_mono_ms = clock_mono_ms();
    buf_init(&s->enc);
    char *jdir = NULL, *idir = NULL, *lock = NULL;
    int rc = CY_ENOMEM;
    s->dir = strdup(cfg->dir);
    s->parts = hmap_new();
    if (!s->dir || !s->parts)
        goto fail;
    s->snap_dir = path_join(cfg->dir, "snap");
    jdir = path_join(cfg->dir, "journal");
    idir = path_join(cfg->dir, "index");
    lock = path_join(cfg->dir, "LOCK");
    if (!s->snap_dir || !jdir || !idir || !lock)
        goto fail;
    if ((rc = fo_mkdirs(s->fo, cfg->dir)) || (rc = fo_mkdirs(s->fo, s->snap_dir)))
        goto fail;

    rc = s->fo->open(s->fo->ctx, lock, O_RDWR | O_CREAT, 0644);
    if (rc < 0)
        goto fail;
    s->lock_fd = rc;
    rc = s->fo->lock(s->fo->ctx, s->lock_fd);
    if (rc == -EWOULDBLOCK || rc == -EAGAIN) {
        log_error("store %s: the directory is in use by another process", s->dir);
        rc = CY_ELOCKED;
    }
    if (rc)
        goto fail;

    /* A checkpoint's position is durable whatever the (lagging) durable hint
     * says: damage before it is corruption, not a torn tail. snapshot_list
     * gives the lowest names; the newest of them is a safe floor (at most two
     * snapshots are kept). */
    uint64_t snaps[2];
    int nsnap = snapshot_list(s->fo, s->snap_dir, snaps, 2);
    struct journal_file_config jc = {
        .durable_floor = nsnap > 0 ? snaps[nsnap - 1] : 0,
        .fo = s->fo,
        .dir = jdir,
        .segment_bytes = cfg->segment_bytes,
        .fsync = cfg->fsync,
        .fsync_interval_ms = cfg->fsync_interval_ms,
        .no_preallocate = cfg->no_preallocate,
        .on_durable = cfg->on_durable,
        .on_durable_arg = cfg->on_durable_arg,
    };
    rc = journal_file_open(&jc, &s->j);
    if (rc)
        goto fail;
    if (jc.durable_floor > journal_end(s->j)) {
        log_error("store %s: a checkpoint covers the journal up to %" PRIu64
                  " but the journal ends at %" PRIu64 " (segment files are missing)",
                  s->dir, jc.durable_floor, journal_end(s->j));
        rc = CY_ECORRUPT;
        goto fail;
    }
    struct index_set_config ic = {.fo = s->fo, .dir = idir, .max_open_files = cfg->index_max_open};
    rc = index_set_open(&ic, &s->ixs);
    if (rc)
        goto fail;
    /* The subdirectories' names must be durable before anything in them is. */
    rc = s->fo->sync_dir(s->fo->ctx, s->dir);
    if (rc)
        goto fail;
    rc = recover(s);
    if (rc)
        goto fail;
    free(jdir);
    free(idir);
    free(lock);
    *out = s;
    return 0;
fail:
    if (rc > 0)
        rc = CY_EINVAL;
    journal_close(s->j);
    s->j = NULL;
    free(jdir);
    free(idir);
    free(lock);
    store_free(s);
    return rc;
}

int store_close(struct store *s)
{
    if (!s)
        return 0;
    int rc = ckpt_collect(s, true);
    if (!journal_error(s->j) && journal_end(s->j) != s->ckpt_pos)
        rc = store_checkpoint(s);
    int jrc = journal_close(s->j);
    s->j = NULL;
    store_free(s);
    return rc ? rc : jrc;
}

void store_get_stats(struct store *s, struct store_stats *out)
{
    struct journal_stats js;
    journal_get_stats(s->j, &js);
    *out = s->stats;
    out->journal_start = journal_start(s->j);
    out->journal_end = journal_end(s->j);
    out->journal_durable = journal_durable(s->j);
    out->journal_bytes = js.bytes;
    out->segments = js.segments;
    out->partitions = (uint32_t)hmap_count(s->parts);
}
