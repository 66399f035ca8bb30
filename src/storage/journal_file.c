/*
 * journal_file.c — the local journal: segment files and a group-commit thread.
 *
 * Files: "<dir>/<base position, 20 digits>.seg". A segment is a 64-byte header
 * (journal.c) followed by `capacity` bytes of record space, preallocated with
 * fallocate so that appends never change the file size (fdatasync then has
 * no size metadata to write). Unused space reads as zeros, and an all-zero
 * record header marks the clean end of data.
 *
 * Segment lifecycle:
 *
 *     roll ──► ACTIVE ──(next roll)──► SEALED, unsynced ──(sync)──► SEALED ──► deleted
 *              (appends)               (fd pinned open)             (fd may   (delete_before,
 *                                                                    close)   once durable)
 *
 * Threads: the owner thread appends (pwrite into the page cache, under `mu`);
 * the group-commit thread takes everything written so far, fdatasyncs it with
 * `mu` released, then publishes the new durable position. All appenders that
 * arrived during one fdatasync share the next one — that is the group commit.
 *
 * Invariants:
 *   1. written = end of the last record = active->end; durable <= written.
 *   2. segs[i].end == segs[i+1].base: positions are dense across segments.
 *   3. A segment whose end > durable keeps its descriptor open (the sync
 *      thread uses it without the lock); only segments entirely durable are
 *      closed for the read-descriptor bound or deleted.
 *   4. The durable hint written into the active header before a sync is a
 *      position an earlier sync completed, so after any crash every hint on
 *      disk is truly durable: damage before the hint is corruption (refuse),
 *      damage after it is a torn tail (cut).
 *   5. err is sticky: once set, no append succeeds and durable never moves.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/crc32c.h"
#include "base/log.h"
#include "coyote.h"
#include "storage/journal.h"

#define DEFAULT_CAPACITY (64ull << 20)
#define MIN_CAPACITY 4096ull
#define SCAN_CHUNK (1u << 20)

struct segment {
    uint64_t base;
    uint64_t end;
    uint64_t first_ts;
    uint64_t capacity;
    int fd; /* -1 when closed */
    bool writable;
    uint64_t last_use;
};

struct jfile {
    struct journal pub;
    const struct fileops *fo;
    char *dir;
    uint64_t capacity; /* for new segments */
    enum journal_fsync policy;
    uint32_t interval_ms;
    bool prealloc;
    unsigned max_open;
    void (*on_durable)(void *, uint64_t);
    void *on_durable_arg;

    pthread_mutex_t mu;
    pthread_cond_t work; /* the sync thread waits here */
    pthread_condattr_t cattr; /* CLOCK_MONOTONIC, for every condition variable */
    struct waiter *waiters;   /* threads in journal_wait_durable, each on its own cond */
    pthread_t thread;
    bool thread_started;
    bool stop;

    struct segment *segs;
    size_t nsegs, segcap;
    uint64_t written;
    uint64_t durable;
    uint64_t sync_req; /* journal_sync asked for durability up to here */
    uint64_t last_ts;
    uint64_t hint_on_active; /* hint last written into the active header */
    uint64_t hint_mono_ms;   /* when it was written (the hint is refreshed at most every
                                HINT_EVERY_MS: it costs a second flushed block per sync) */
    uint64_t durable_floor;  /* from the newest checkpoint (config) */
    int err;
    bool dir_dirty;
    unsigned open_fds;
    uint64_t tick;
    struct buf wbuf; /* one record's bytes, assembled for a single pwrite */
    /* Read-ahead for small reads (messages are read one by one, mostly in
     * order): bytes [rc_pos, rc_pos + rc_len) of the journal. Written bytes
     * never change, and only bytes below a segment's end are cached, so the
     * copy stays true until the segment is deleted (reads check that first). */
    uint8_t *rcache;
    uint64_t rc_pos;
    size_t rc_len;
    struct journal_stats stats;
};

static const struct journal_ops jfile_ops;

#define HINT_EVERY_MS 20
#define READ_AHEAD (64 * 1024)

/* A thread waiting for durability. Each has its own condition variable so a
 * sync wakes exactly the waiters it covered, not all of them (a broadcast to
 * 64 waiters, half of which go back to sleep, costs more than the fdatasync). */
struct waiter {
    uint64_t pos;
    pthread_cond_t cond;
    struct waiter *next;
};

/* Wake waiters whose position is durable (all of them on error). Caller holds mu. */
static void wake_waiters(struct jfile *jf)
{
    for (struct waiter *w = jf->waiters; w; w = w->next)
        if (w->pos <= jf->durable || jf->err)
            pthread_cond_signal(&w->cond);
}

static struct jfile *J(struct journal *j) { return (struct jfile *)j; }

static void seg_path(const struct jfile *jf, uint64_t base, char *buf, size_t len)
{
    char name[32];
    journal_segment_name(base, name, sizeof name);
    snprintf(buf, len, "%s/%s", jf->dir, name);
}

/* Index of the segment holding pos (base <= pos), or -1. */
static ssize_t seg_find(const struct jfile *jf, uint64_t pos)
{
    size_t lo = 0, hi = jf->nsegs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (jf->segs[mid].base <= pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (ssize_t)lo - 1;
}

static void seg_close(struct jfile *jf, struct segment *s)
{
    if (s->fd >= 0) {
        jf->fo->close(jf->fo->ctx, s->fd);
        s->fd = -1;
        jf->open_fds--;
    }
}

/* Close read descriptors beyond the bound, least recently used first, never
 * the active segment nor one with unsynced bytes (invariant 3). Caller holds mu. */
static void seg_evict(struct jfile *jf)
{
    while (jf->open_fds > jf->max_open) {
        struct segment *victim = NULL;
        for (size_t i = 0; i + 1 < jf->nsegs; i++) {
            struct segment *s = &jf->segs[i];
            if (s->fd >= 0 && s->end <= jf->durable && (!victim || s->last_use < victim->last_use))
                victim = s;
        }
        if (!victim)
            return;
        seg_close(jf, victim);
    }
}

/* The descriptor of s, opened on demand. Caller holds mu. */
static int seg_fd(struct jfile *jf, struct segment *s)
{
    s->last_use = ++jf->tick;
    if (s->fd >= 0)
        return s->fd;
    char path[4096];
    seg_path(jf, s->base, path, sizeof path);
    int fd = jf->fo->open(jf->fo->ctx, path, O_RDONLY, 0);
    if (fd < 0) {
        log_error("journal %s: cannot open segment %s: %s", jf->dir, path, cy_strerror(fd));
        return fd;
    }
    s->fd = fd;
    s->writable = false;
    jf->open_fds++;
    seg_evict(jf);
    return fd;
}

static int set_error(struct jfile *jf, int rc, const char *what)
{
    if (!jf->err) {
        jf->err = rc;
        log_error("journal %s: %s failed: %s; the journal is now read-only (nothing more is "
                  "acknowledged; a restart recovers from what is on disk)",
                  jf->dir, what, cy_strerror(rc));
        wake_waiters(jf);
        pthread_cond_broadcast(&jf->work);
    }
    return rc;
}

static void encode_seg_header(uint8_t h[JOURNAL_SEGMENT_HEADER], uint64_t base, uint64_t first_ts,
                              uint64_t capacity, uint64_t hint)
{
    memset(h, 0, JOURNAL_SEGMENT_HEADER);
    le_put32(h, JOURNAL_SEGMENT_MAGIC);
    le_put16(h + 4, JOURNAL_FORMAT_VERSION);
    le_put16(h + 6, JOURNAL_SEGMENT_HEADER);
    le_put64(h + 8, base);
    le_put64(h + 16, first_ts);
    le_put64(h + 24, capacity);
    le_put32(h + 32, crc32c(0, h, 32));
    le_put64(h + 40, hint);
    le_put32(h + 48, crc32c(0, h + 40, 8));
}

static int write_hint(struct jfile *jf, int fd, uint64_t hint)
{
    uint8_t b[12];
    le_put64(b, hint);
    le_put32(b + 8, crc32c(0, b, 8));
    return fo_write_all(jf->fo, fd, b, sizeof b, 40);
}

static int push_segment(struct jfile *jf, const struct segment *s)
{
    if (jf->nsegs == jf->segcap) {
        size_t cap = jf->segcap ? jf->segcap * 2 : 16;
        struct segment *n = realloc(jf->segs, cap * sizeof *n);
        if (!n)
            return CY_ENOMEM;
        jf->segs = n;
        jf->segcap = cap;
    }
    jf->segs[jf->nsegs++] = *s;
    return 0;
}

/* Start a new active segment at `written`. Caller holds mu. */
static int roll(struct jfile *jf, uint64_t first_ts)
{
    char path[4096];
    uint64_t base = jf->written;
    seg_path(jf, base, path, sizeof path);
    int fd = jf->fo->open(jf->fo->ctx, path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fd;
    uint8_t h[JOURNAL_SEGMENT_HEADER];
    encode_seg_header(h, base, first_ts, jf->capacity, jf->durable);
    int rc = fo_write_all(jf->fo, fd, h, sizeof h, 0);
    if (!rc && jf->prealloc) {
        rc = jf->fo->fallocate(jf->fo->ctx, fd, 0, JOURNAL_SEGMENT_HEADER + jf->capacity);
        if (rc == -EOPNOTSUPP)
            rc = 0;
    }
    struct segment s = {.base = base, .end = base, .first_ts = first_ts,
                        .capacity = jf->capacity, .fd = fd, .writable = true,
                        .last_use = ++jf->tick};
    if (!rc)
        rc = push_segment(jf, &s);
    if (rc) {
        jf->fo->close(jf->fo->ctx, fd);
        jf->fo->unlink(jf->fo->ctx, path);
        return rc;
    }
    jf->open_fds++;
    jf->hint_on_active = jf->durable;
    jf->dir_dirty = true;
    seg_evict(jf);
    return 0;
}

static int jf_appendv(struct journal *j, uint8_t type, uint64_t ts, const struct iovec *iov,
                      int iovcnt, uint64_t *pos_out, uint64_t *end_out)
{
    struct jfile *jf = J(j);
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > JOURNAL_MAX_BODY - len)
            return CY_ETOOBIG;
        len += iov[i].iov_len;
    }
    if (len + JOURNAL_RECORD_HEADER > jf->capacity)
        return CY_ETOOBIG;
    if (type == 0)
        return CY_EINVAL;

    pthread_mutex_lock(&jf->mu);
    int rc = 0;
    if (jf->err) {
        rc = CY_EREADONLY;
        goto out;
    }
    if (ts < jf->last_ts) {
        rc = CY_EINVAL;
        goto out;
    }
    struct segment *s = jf->nsegs ? &jf->segs[jf->nsegs - 1] : NULL;
    if (!s || jf->written + JOURNAL_RECORD_HEADER + len > s->base + s->capacity) {
        rc = roll(jf, ts);
        if (rc) {
            set_error(jf, rc, "creating a segment");
            goto out;
        }
        s = &jf->segs[jf->nsegs - 1];
    }
    uint64_t pos = jf->written;
    buf_reset(&jf->wbuf);
    uint8_t *hdr = buf_extend(&jf->wbuf, JOURNAL_RECORD_HEADER);
    for (int i = 0; i < iovcnt; i++)
        buf_put(&jf->wbuf, iov[i].iov_base, iov[i].iov_len);
    if (buf_err(&jf->wbuf)) {
        rc = CY_ENOMEM; /* not an I/O failure: the journal stays healthy */
        goto out;
    }
    hdr = jf->wbuf.data;
    journal_record_header_encode(hdr, pos, type, ts, iov, iovcnt, (uint32_t)len);
    rc = fo_write_all(jf->fo, s->fd, jf->wbuf.data, jf->wbuf.len,
                      JOURNAL_SEGMENT_HEADER + (pos - s->base));
    if (rc) {
        set_error(jf, rc, "writing a record");
        goto out;
    }
    jf->written = pos + JOURNAL_RECORD_HEADER + len;
    s->end = jf->written;
    jf->last_ts = ts;
    jf->stats.appends++;
    if (pos_out)
        *pos_out = pos;
    if (end_out)
        *end_out = jf->written;
    if (jf->policy != JOURNAL_FSYNC_NEVER)
        pthread_cond_signal(&jf->work); /* interval: starts the timed wait */
out:
    pthread_mutex_unlock(&jf->mu);
    return rc;
}

/* ---- group commit ------------------------------------------------------- */

static void timespec_after_ms(struct timespec *ts, uint64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void record_sync_time(struct jfile *jf, uint64_t ns)
{
    jf->stats.syncs++;
    jf->stats.sync_ns_total += ns;
    if (ns > jf->stats.sync_ns_max)
        jf->stats.sync_ns_max = ns;
    unsigned b = 0;
    while (b < 15 && ns >= (64000ull << b))
        b++;
    jf->stats.sync_hist[b]++;
}

static void *sync_main(void *arg)
{
    struct jfile *jf = arg;
    uint64_t last_sync_ms = clock_mono_ms();
    int *fds = NULL;
    size_t fdcap = 0;

    pthread_mutex_lock(&jf->mu);
    while (!jf->err) {
        uint64_t target = jf->written;
        bool want = false;
        if (target > jf->durable) {
            if (jf->sync_req > jf->durable || jf->stop || jf->policy == JOURNAL_FSYNC_ALWAYS)
                want = true;
            else if (jf->policy == JOURNAL_FSYNC_INTERVAL) {
                uint64_t now = clock_mono_ms();
                if (now - last_sync_ms >= jf->interval_ms)
                    want = true;
                else {
                    struct timespec ts;
                    timespec_after_ms(&ts, jf->interval_ms - (now - last_sync_ms));
                    pthread_cond_timedwait(&jf->work, &jf->mu, &ts);
                    continue;
                }
            }
        }
        if (!want) {
            if (jf->stop)
                break;
            pthread_cond_wait(&jf->work, &jf->mu);
            continue;
        }

        /* Collect the descriptors to sync: segments with bytes past durable
         * (pinned open by invariant 3), oldest first. */
        size_t n = 0;
        for (size_t i = jf->nsegs; i-- > 0 && jf->segs[i].end > jf->durable;)
            n++;
        if (n > fdcap) {
            int *nf = realloc(fds, n * sizeof *nf);
            if (!nf) {
                set_error(jf, CY_ENOMEM, "allocating for a sync");
                break;
            }
            fds = nf;
            fdcap = n;
        }
        for (size_t k = 0; k < n; k++)
            fds[k] = jf->segs[jf->nsegs - n + k].fd;
        uint64_t hint = jf->durable;
        bool write_hint_now = hint > jf->hint_on_active &&
                              clock_mono_ms() - jf->hint_mono_ms >= HINT_EVERY_MS;
        bool dir = jf->dir_dirty;
        jf->dir_dirty = false;
        pthread_mutex_unlock(&jf->mu);

        uint64_t t0 = clock_mono_ns();
        int rc = 0;
        const char *what = "fdatasync";
        if (write_hint_now) {
            rc = write_hint(jf, fds[n - 1], hint);
            what = "writing the durable hint";
        }
        for (size_t k = 0; !rc && k < n; k++) {
            rc = jf->fo->datasync(jf->fo->ctx, fds[k]);
            what = "fdatasync";
        }
        if (!rc && dir) {
            rc = jf->fo->sync_dir(jf->fo->ctx, jf->dir);
            what = "syncing the journal directory";
        }
        uint64_t t1 = clock_mono_ns();

        pthread_mutex_lock(&jf->mu);
        record_sync_time(jf, t1 - t0);
        last_sync_ms = t1 / 1000000u;
        if (rc) {
            set_error(jf, rc, what);
            break;
        }
        if (write_hint_now && n && fds[n - 1] == jf->segs[jf->nsegs - 1].fd) {
            jf->hint_on_active = hint;
            jf->hint_mono_ms = t1 / 1000000u;
        }
        jf->durable = target;
        wake_waiters(jf);
        if (jf->on_durable) {
            pthread_mutex_unlock(&jf->mu);
            jf->on_durable(jf->on_durable_arg, target);
            pthread_mutex_lock(&jf->mu);
        }
    }
    uint64_t final_durable = jf->durable;
    bool failed = jf->err != 0;
    pthread_mutex_unlock(&jf->mu);
    free(fds);
    if (failed && jf->on_durable)
        jf->on_durable(jf->on_durable_arg, final_durable);
    return NULL;
}

/* ---- simple accessors --------------------------------------------------- */

static uint64_t jf_end(struct journal *j)
{
    struct jfile *jf = J(j);
    pthread_mutex_lock(&jf->mu);
    uint64_t v = jf->written;
    pthread_mutex_unlock(&jf->mu);
    return v;
}

static uint64_t jf_durable(struct journal *j)
{
    struct jfile *jf = J(j);
    pthread_mutex_lock(&jf->mu);
    uint64_t v = jf->durable;
    pthread_mutex_unlock(&jf->mu);
    return v;
}

static uint64_t jf_start(struct journal *j)
{
    struct jfile *jf = J(j);
    pthread_mutex_lock(&jf->mu);
    uint64_t v = jf->nsegs ? jf->segs[0].base : jf->written;
    pthread_mutex_unlock(&jf->mu);
    return v;
}

static uint64_t jf_last_timestamp(struct journal *j)
{
    struct jfile *jf = J(j);
    pthread_mutex_lock(&jf->mu);
    uint64_t v = jf->last_ts;
    pthread_mutex_unlock(&jf->mu);
    return v;
}

static int jf_error(struct journal *j)
{
    struct jfile *jf = J(j);
    pthread_mutex_lock(&jf->mu);
    int v = jf->err;
    pthread_mutex_unlock(&jf->mu);
    return v;
}

static enum journal_fsync jf_policy(struct journal *j)
{
    return J(j)->policy;
}

static int jf_wait_durable(struct journal *j, uint64_t pos, int timeout_ms)
{
    struct jfile *jf = J(j);
    struct timespec deadline;
    if (timeout_ms >= 0)
        timespec_after_ms(&deadline, (uint64_t)timeout_ms);
    pthread_mutex_lock(&jf->mu);
    int rc = 0;
    if (jf->durable < pos && !jf->err) {
        struct waiter w = {.pos = pos, .next = jf->waiters};
        pthread_cond_init(&w.cond, &jf->cattr);
        jf->waiters = &w;
        while (jf->durable < pos && !jf->err) {
            if (timeout_ms < 0) {
                pthread_cond_wait(&w.cond, &jf->mu);
            } else if (pthread_cond_timedwait(&w.cond, &jf->mu, &deadline) == ETIMEDOUT) {
                rc = jf->durable >= pos ? 0 : -ETIMEDOUT;
                break;
            }
        }
        for (struct waiter **pp = &jf->waiters; *pp; pp = &(*pp)->next)
            if (*pp == &w) {
                *pp = w.next;
                break;
            }
        pthread_cond_destroy(&w.cond);
    }
    if (jf->durable < pos && jf->err)
        rc = CY_EREADONLY;
    pthread_mutex_unlock(&jf->mu);
    return rc;
}

static int jf_sync(struct journal *j)
{
    struct jfile *jf = J(j);
    pthread_mutex_lock(&jf->mu);
    uint64_t target = jf->written;
    if (target > jf->sync_req)
        jf->sync_req = target;
    pthread_cond_signal(&jf->work);
    pthread_mutex_unlock(&jf->mu);
    return jf_wait_durable(j, target, -1);
}

/* ---- reading ------------------------------------------------------------ */

static int jf_read_raw(struct journal *j, uint64_t pos, void *dst, size_t n)
{
    struct jfile *jf = J(j);
    pthread_mutex_lock(&jf->mu);
    ssize_t i = seg_find(jf, pos);
    int rc = CY_ERANGE;
    if (i < 0 || n > jf->segs[i].end - jf->segs[i].base ||
        pos > jf->segs[i].end - n)
        goto out;
    struct segment *s = &jf->segs[i];
    if (jf->rc_len && pos >= jf->rc_pos && pos - jf->rc_pos <= jf->rc_len &&
        n <= jf->rc_len - (pos - jf->rc_pos)) {
        memcpy(dst, jf->rcache + (pos - jf->rc_pos), n);
        rc = 0;
        goto out;
    }
    int fd = seg_fd(jf, s);
    if (fd < 0) {
        rc = fd;
        goto out;
    }
    uint64_t off = JOURNAL_SEGMENT_HEADER + (pos - s->base);
    if (n <= READ_AHEAD / 4 && (jf->rcache || (jf->rcache = malloc(READ_AHEAD)))) {
        uint64_t avail = s->end - pos; /* >= n, checked above */
        size_t want = avail < READ_AHEAD ? (size_t)avail : READ_AHEAD;
        jf->rc_len = 0;
        ssize_t got = fo_read_full(jf->fo, fd, jf->rcache, want, off);
        rc = got < 0 ? (int)got : (size_t)got == want ? 0 : -EIO;
        if (!rc) {
            jf->rc_pos = pos;
            jf->rc_len = want;
            memcpy(dst, jf->rcache, n);
        }
        goto out;
    }
    ssize_t got = fo_read_full(jf->fo, fd, dst, n, off);
    rc = got < 0 ? (int)got : (size_t)got == n ? 0 : -EIO;
out:
    pthread_mutex_unlock(&jf->mu);
    return rc;
}

static int jf_read(struct journal *j, uint64_t pos, struct buf *scratch,
                   struct journal_record *rec)
{
    uint8_t hdr[JOURNAL_RECORD_HEADER];
    int rc = jf_read_raw(j, pos, hdr, sizeof hdr);
    if (rc)
        return rc;
    uint32_t len = le_get32(hdr);
    if (len > JOURNAL_MAX_BODY)
        return CY_ECORRUPT;
    buf_reset(scratch);
    uint8_t *p = buf_extend(scratch, JOURNAL_RECORD_HEADER + (size_t)len);
    if (!p)
        return CY_ENOMEM;
    rc = jf_read_raw(j, pos, p, JOURNAL_RECORD_HEADER + (size_t)len);
    if (rc)
        return rc == CY_ERANGE ? CY_ECORRUPT : rc;
    rc = journal_record_decode(p, JOURNAL_RECORD_HEADER + (size_t)len, pos, rec);
    return rc == 0 ? 0 : CY_ECORRUPT;
}

/* A window of one segment's bytes, for sequential reads. */
struct window {
    uint8_t *data;
    size_t cap;
    uint64_t pos0; /* position of data[0] */
    size_t len;
};

/* Make [pos, pos+need) available in w from segment s (clamped to s->end and
 * the segment's capacity). Returns how many bytes from pos are available. */
static ssize_t window_fill(struct jfile *jf, struct window *w, struct segment *s, uint64_t pos,
                           size_t need, uint64_t limit)
{
    if (pos >= w->pos0 && pos + need <= w->pos0 + w->len)
        return (ssize_t)(w->pos0 + w->len - pos);
    size_t want = need > SCAN_CHUNK ? need : SCAN_CHUNK;
    if (want > w->cap) {
        uint8_t *d = realloc(w->data, want);
        if (!d)
            return CY_ENOMEM;
        w->data = d;
        w->cap = want;
    }
    uint64_t max = limit - pos;
    size_t n = want < max ? want : (size_t)max;
    pthread_mutex_lock(&jf->mu);
    int fd = seg_fd(jf, s);
    pthread_mutex_unlock(&jf->mu);
    if (fd < 0)
        return fd;
    ssize_t got = fo_read_full(jf->fo, fd, w->data, n, JOURNAL_SEGMENT_HEADER + (pos - s->base));
    if (got < 0)
        return got;
    w->pos0 = pos;
    w->len = (size_t)got;
    return got;
}

static int corrupt_at(struct jfile *jf, const struct segment *s, uint64_t pos, const char *why)
{
    char name[32];
    journal_segment_name(s->base, name, sizeof name);
    log_error("journal %s: record at position %" PRIu64 " (segment %s, file offset %" PRIu64
              ") is %s; stopping there — run coyote-check on the data directory",
              jf->dir, pos, name, JOURNAL_SEGMENT_HEADER + (pos - s->base), why);
    return CY_ECORRUPT;
}

/* Walk records of segments from `from` up to `to`, calling cb. Used by scan
 * (limit = segment end) — the caller guarantees [from, to) is written. */
static int scan_range(struct jfile *jf, uint64_t from, uint64_t to,
                      int (*cb)(void *, const struct journal_record *), void *arg)
{
    struct window w = {0};
    int rc = 0;
    uint64_t pos = from;
    while (pos < to) {
        pthread_mutex_lock(&jf->mu);
        ssize_t i = seg_find(jf, pos);
        struct segment *s = i >= 0 ? &jf->segs[i] : NULL;
        uint64_t seg_end = s ? s->end : 0;
        pthread_mutex_unlock(&jf->mu);
        if (!s || pos >= seg_end) {
            rc = CY_ERANGE;
            break;
        }
        ssize_t avail = window_fill(jf, &w, s, pos, JOURNAL_RECORD_HEADER, seg_end);
        if (avail < 0) {
            rc = (int)avail;
            break;
        }
        if (avail < (ssize_t)JOURNAL_RECORD_HEADER) {
            rc = corrupt_at(jf, s, pos, "cut short");
            break;
        }
        struct journal_record rec;
        const uint8_t *p = w.data + (pos - w.pos0);
        rc = journal_record_decode(p, (size_t)avail, pos, &rec);
        if (rc == -EAGAIN) {
            size_t need = JOURNAL_RECORD_HEADER + (size_t)le_get32(p);
            avail = window_fill(jf, &w, s, pos, need, seg_end);
            if (avail < 0) {
                rc = (int)avail;
                break;
            }
            rc = journal_record_decode(w.data, (size_t)avail, pos, &rec);
        }
        if (rc == -EAGAIN) {
            rc = corrupt_at(jf, s, pos, "cut short");
            break;
        }
        if (rc == 1) {
            rc = corrupt_at(jf, s, pos, "missing (zeros before the end of the journal)");
            break;
        }
        if (rc) {
            rc = corrupt_at(jf, s, pos, "damaged (checksum or header check failed)");
            break;
        }
        rc = cb(arg, &rec);
        if (rc)
            break;
        pos = rec.next;
    }
    free(w.data);
    return rc;
}

static int jf_scan(struct journal *j, uint64_t from, uint64_t to,
                   int (*cb)(void *arg, const struct journal_record *rec), void *arg)
{
    struct jfile *jf = J(j);
    uint64_t start = jf_start(j), end = jf_end(j);
    if (from < start || from > end)
        return CY_ERANGE;
    if (to > end)
        to = end;
    return scan_range(jf, from, to, cb, arg);
}

/* ---- retention ---------------------------------------------------------- */

static int jf_delete_before(struct journal *j, uint64_t pos)
{
    struct jfile *jf = J(j);
    pthread_mutex_lock(&jf->mu);
    size_t k = 0;
    int rc = 0;
    while (k + 1 < jf->nsegs && jf->segs[k + 1].base <= pos && jf->segs[k].end <= jf->durable) {
        char path[4096];
        seg_path(jf, jf->segs[k].base, path, sizeof path);
        seg_close(jf, &jf->segs[k]);
        rc = jf->fo->unlink(jf->fo->ctx, path);
        if (rc && rc != -ENOENT) {
            log_error("journal %s: cannot delete segment %s: %s", jf->dir, path, cy_strerror(rc));
            break;
        }
        rc = 0;
        k++;
    }
    if (k) {
        memmove(jf->segs, jf->segs + k, (jf->nsegs - k) * sizeof *jf->segs);
        jf->nsegs -= k;
        jf->dir_dirty = true; /* the next sync makes the deletions durable */
    }
    pthread_mutex_unlock(&jf->mu);
    return rc;
}

static int jf_segments(struct journal *j, struct journal_segment_info *out, int max)
{
    struct jfile *jf = J(j);
    pthread_mutex_lock(&jf->mu);
    int n = (int)jf->nsegs;
    for (int i = 0; i < n && i < max; i++) {
        out[i].base = jf->segs[i].base;
        out[i].end = jf->segs[i].end;
        out[i].active = (size_t)i + 1 == jf->nsegs;
        out[i].max_timestamp = out[i].active ? jf->last_ts : jf->segs[i + 1].first_ts;
    }
    pthread_mutex_unlock(&jf->mu);
    return n;
}

static void jf_get_stats(struct journal *j, struct journal_stats *out)
{
    struct jfile *jf = J(j);
    pthread_mutex_lock(&jf->mu);
    *out = jf->stats;
    out->segments = (uint32_t)jf->nsegs;
    out->bytes = jf->nsegs ? jf->written - jf->segs[0].base : 0;
    pthread_mutex_unlock(&jf->mu);
}

static void jfile_free(struct jfile *jf)
{
    for (size_t i = 0; i < jf->nsegs; i++)
        seg_close(jf, &jf->segs[i]);
    free(jf->segs);
    buf_free(&jf->wbuf);
    free(jf->rcache);
    pthread_mutex_destroy(&jf->mu);
    pthread_cond_destroy(&jf->work);
    pthread_condattr_destroy(&jf->cattr);
    free(jf->dir);
    free(jf);
}

static int jf_close(struct journal *j)
{
    struct jfile *jf = J(j);
    pthread_mutex_lock(&jf->mu);
    jf->stop = true;
    pthread_cond_signal(&jf->work);
    pthread_mutex_unlock(&jf->mu);
    if (jf->thread_started)
        pthread_join(jf->thread, NULL);
    int rc = jf->err;
    /* Leave the hint at the end: after a clean close the next open knows every
     * record was durable, and any damage found later is corruption. */
    struct segment *active = jf->nsegs ? &jf->segs[jf->nsegs - 1] : NULL;
    if (!rc && active && active->fd >= 0 && jf->hint_on_active < jf->durable) {
        rc = write_hint(jf, active->fd, jf->durable);
        if (!rc)
            rc = jf->fo->datasync(jf->fo->ctx, active->fd);
    }
    jfile_free(jf);
    return rc;
}

/* ---- opening and recovery ----------------------------------------------- */

struct listing {
    uint64_t *bases;
    size_t n, cap;
    int err;
};

static int list_cb(void *arg, const char *name)
{
    struct listing *l = arg;
    uint64_t v;
    if (!fo_parse_name(name, 20, 10, ".seg", &v))
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        uint64_t *nb = realloc(l->bases, cap * sizeof *nb);
        if (!nb)
            return CY_ENOMEM;
        l->bases = nb;
        l->cap = cap;
    }
    l->bases[l->n++] = v;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Remove segments [from, nsegs) from disk and from the table. */
static int drop_segments_from(struct jfile *jf, size_t from)
{
    int rc = 0;
    for (size_t i = from; i < jf->nsegs; i++) {
        char path[4096];
        seg_path(jf, jf->segs[i].base, path, sizeof path);
        seg_close(jf, &jf->segs[i]);
        log_warn("journal %s: deleting segment %s: it starts after the torn tail", jf->dir, path);
        int r = jf->fo->unlink(jf->fo->ctx, path);
        if (r && r != -ENOENT && !rc)
            rc = r;
    }
    jf->nsegs = from;
    return rc;
}

/* Give segment s a read-write descriptor (recovery cuts it, or it becomes
 * the active segment again). */
static int seg_make_writable(struct jfile *jf, struct segment *s)
{
    if (s->fd >= 0 && s->writable)
        return 0;
    seg_close(jf, s);
    char path[4096];
    seg_path(jf, s->base, path, sizeof path);
    int fd = jf->fo->open(jf->fo->ctx, path, O_RDWR, 0);
    if (fd < 0)
        return fd;
    s->fd = fd;
    s->writable = true;
    jf->open_fds++;
    return 0;
}

/* Cut segment i at position pos: the rest of its space becomes zeros again. */
static int cut_segment(struct jfile *jf, size_t i, uint64_t pos)
{
    struct segment *s = &jf->segs[i];
    jf->rc_len = 0; /* cached bytes past the cut would be stale */
    int rc = seg_make_writable(jf, s);
    if (rc)
        return rc;
    uint64_t off = JOURNAL_SEGMENT_HEADER + (pos - s->base);
    rc = jf->fo->ftruncate(jf->fo->ctx, s->fd, off);
    if (!rc && jf->prealloc) {
        rc = jf->fo->fallocate(jf->fo->ctx, s->fd, 0, JOURNAL_SEGMENT_HEADER + s->capacity);
        if (rc == -EOPNOTSUPP)
            rc = 0;
    }
    return rc;
}

/* Verify records from `from` through the last segment. Damage before `hint`
 * is corruption; damage at or after it is the torn tail and is cut. */
static int recover_tail(struct jfile *jf, uint64_t from, uint64_t hint)
{
    struct window w = {0};
    int rc = 0;
    uint64_t pos = from;
    ssize_t i = seg_find(jf, pos);
    if (i < 0)
        i = 0;
    for (;;) {
        struct segment *s = &jf->segs[i];
        bool last = (size_t)i + 1 == jf->nsegs;
        uint64_t limit = last ? s->base + s->capacity : jf->segs[i + 1].base;
        const char *why = NULL;
        while (pos < limit) {
            ssize_t avail = window_fill(jf, &w, s, pos, JOURNAL_RECORD_HEADER, limit);
            if (avail < 0) {
                rc = (int)avail;
                goto out;
            }
            if (avail == 0)
                break; /* end of file (segment not preallocated) */
            struct journal_record rec;
            const uint8_t *p = w.data + (pos - w.pos0);
            int d = journal_record_decode(p, (size_t)avail, pos, &rec);
            if (d == -EAGAIN && (size_t)avail >= JOURNAL_RECORD_HEADER) {
                size_t need = JOURNAL_RECORD_HEADER + (size_t)le_get32(p);
                avail = window_fill(jf, &w, s, pos, need, limit);
                if (avail < 0) {
                    rc = (int)avail;
                    goto out;
                }
                d = journal_record_decode(w.data, (size_t)avail, pos, &rec);
            }
            if (d == 1)
                break;
            if (d) {
                why = d == -EAGAIN ? "cut short" : "damaged";
                break;
            }
            if (rec.timestamp_ms > jf->last_ts)
                jf->last_ts = rec.timestamp_ms;
            pos = rec.next;
        }
        if (!last && pos == limit && !why) {
            i++;
            continue;
        }
        /* The data ends at pos, inside segment i. */
        if (!last || why || pos < hint) {
            if (pos < hint) {
                rc = corrupt_at(jf, s, pos, why ? why : "missing");
                log_error("journal %s: position %" PRIu64 " was durable; refusing to discard "
                          "acknowledged data",
                          jf->dir, hint);
                goto out;
            }
            log_warn("journal %s: torn tail at position %" PRIu64 " (%s): cut there; the bytes "
                     "after it were never acknowledged",
                     jf->dir, pos, why ? why : "segment ends early");
            rc = drop_segments_from(jf, (size_t)i + 1);
            jf->dir_dirty = true;
            if (rc)
                goto out;
        }
        /* Always cut the last segment at the end of its data: bytes after a
         * clean end (stale sectors of an abandoned tail) must never come back
         * as valid records once new appends reach their position. */
        rc = cut_segment(jf, (size_t)i, pos);
        if (rc)
            goto out;
        s = &jf->segs[i];
        s->end = pos;
        jf->written = pos;
        break;
    }
out:
    free(w.data);
    return rc;
}

static int open_segments(struct jfile *jf, struct listing *l, uint64_t *hint)
{
    *hint = jf->durable_floor;
    for (size_t k = 0; k < l->n; k++) {
        char path[4096];
        seg_path(jf, l->bases[k], path, sizeof path);
        bool last = k + 1 == l->n;
        int fd = jf->fo->open(jf->fo->ctx, path, last ? O_RDWR : O_RDONLY, 0);
        if (fd < 0)
            return fd;
        uint8_t h[JOURNAL_SEGMENT_HEADER];
        struct journal_segment_header sh;
        ssize_t got = fo_read_full(jf->fo, fd, h, sizeof h, 0);
        int rc = got < 0 ? (int)got
                 : got < (ssize_t)sizeof h ? CY_ECORRUPT
                                           : journal_segment_header_decode(h, sizeof h, &sh);
        if (!rc && sh.base != l->bases[k])
            rc = CY_ECORRUPT;
        if (!rc && (sh.capacity < MIN_CAPACITY || sh.capacity > (1ull << 40)))
            rc = CY_ECORRUPT;
        if (rc == CY_ECORRUPT && last && l->bases[k] >= *hint && (k > 0 || l->bases[k] == 0)) {
            /* A segment whose creation was never synced: nothing in it was
             * acknowledged (its base is past every durable hint). */
            jf->fo->close(jf->fo->ctx, fd);
            log_warn("journal %s: segment %s has a torn header; it was never synced, deleting it",
                     jf->dir, path);
            rc = jf->fo->unlink(jf->fo->ctx, path);
            jf->dir_dirty = true;
            l->n--;
            return rc;
        }
        if (rc) {
            jf->fo->close(jf->fo->ctx, fd);
            log_error("journal %s: segment %s: %s", jf->dir, path, cy_strerror(rc));
            return rc;
        }
        if (sh.hint_valid && sh.durable_hint > *hint)
            *hint = sh.durable_hint;
        struct segment s = {.base = sh.base, .end = sh.base, .first_ts = sh.first_timestamp,
                            .capacity = sh.capacity, .fd = fd, .writable = last};
        rc = push_segment(jf, &s);
        if (rc) {
            jf->fo->close(jf->fo->ctx, fd);
            return rc;
        }
        jf->open_fds++;
        if (!last) /* sealed: reopened on demand, so many segments never mean many fds */
            seg_close(jf, &jf->segs[jf->nsegs - 1]);
        if (k > 0) {
            struct segment *prev = &jf->segs[jf->nsegs - 2];
            if (sh.base < prev->base + JOURNAL_RECORD_HEADER ||
                sh.base - prev->base > prev->capacity) {
                log_error("journal %s: segment %s does not follow the previous segment", jf->dir,
                          path);
                return CY_ECORRUPT;
            }
            prev->end = sh.base;
        }
    }
    return 0;
}

int journal_file_open(const struct journal_file_config *cfg, struct journal **out)
{
    *out = NULL;
    struct jfile *jf = calloc(1, sizeof *jf);
    if (!jf)
        return CY_ENOMEM;
    jf->pub.ops = &jfile_ops;
    jf->fo = cfg->fo ? cfg->fo : &fileops_posix;
    jf->dir = strdup(cfg->dir);
    jf->capacity = cfg->segment_bytes ? cfg->segment_bytes : DEFAULT_CAPACITY;
    if (jf->capacity < MIN_CAPACITY)
        jf->capacity = MIN_CAPACITY;
    jf->policy = cfg->fsync;
    jf->interval_ms = cfg->fsync_interval_ms ? cfg->fsync_interval_ms : 1000;
    jf->prealloc = !cfg->no_preallocate;
    jf->max_open = cfg->max_open_segments ? cfg->max_open_segments : 8;
    jf->on_durable = cfg->on_durable;
    jf->on_durable_arg = cfg->on_durable_arg;
    jf->durable_floor = cfg->durable_floor;
    pthread_mutex_init(&jf->mu, NULL);
    pthread_condattr_init(&jf->cattr);
    pthread_condattr_setclock(&jf->cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&jf->work, &jf->cattr);
    buf_init(&jf->wbuf);

    struct listing l = {0};
    int rc = jf->dir ? fo_mkdirs(jf->fo, jf->dir) : CY_ENOMEM;
    if (!rc)
        rc = jf->fo->list_dir(jf->fo->ctx, jf->dir, list_cb, &l);
    if (rc)
        goto fail;
    if (l.n)
        qsort(l.bases, l.n, sizeof *l.bases, cmp_u64);

    uint64_t hint;
    rc = open_segments(jf, &l, &hint);
    if (rc)
        goto fail;
    if (jf->nsegs) {
        struct segment *first = &jf->segs[0], *last = &jf->segs[jf->nsegs - 1];
        if (hint < first->base)
            hint = first->base;
        jf->last_ts = last->first_ts;
        /* Always verify the whole last segment (its records give last_ts),
         * and everything after the hint. */
        uint64_t from = hint < last->base ? hint : last->base;
        rc = recover_tail(jf, from, hint);
        if (rc)
            goto fail;
        /* What we read back may still sit only in the page cache (the process
         * died, the machine did not): make it durable before calling it so. */
        for (size_t i = 0; i < jf->nsegs; i++) {
            struct segment *s = &jf->segs[i];
            if (s->end > hint || (size_t)i + 1 == jf->nsegs) {
                int fd = seg_fd(jf, s);
                rc = fd < 0 ? fd : jf->fo->datasync(jf->fo->ctx, fd);
                if (rc)
                    goto fail;
            }
        }
        if (jf->dir_dirty) {
            rc = jf->fo->sync_dir(jf->fo->ctx, jf->dir);
            if (rc)
                goto fail;
            jf->dir_dirty = false;
        }
        last = &jf->segs[jf->nsegs - 1];
        rc = seg_make_writable(jf, last);
        if (!rc)
            rc = write_hint(jf, last->fd, jf->written);
        if (!rc)
            rc = jf->fo->datasync(jf->fo->ctx, last->fd);
        if (rc)
            goto fail;
        jf->hint_on_active = jf->written;
        /* Sealed segments' descriptors are opened again on demand. */
        for (size_t i = 0; i + 1 < jf->nsegs; i++)
            seg_close(jf, &jf->segs[i]);
    }
    jf->durable = jf->written;
    jf->sync_req = jf->written;

    if (pthread_create(&jf->thread, NULL, sync_main, jf) != 0) {
        rc = -EAGAIN;
        goto fail;
    }
    jf->thread_started = true;
    free(l.bases);
    *out = &jf->pub;
    return 0;
fail:
    free(l.bases);
    jfile_free(jf);
    return rc;
}

static const struct journal_ops jfile_ops = {
    .appendv = jf_appendv,
    .end = jf_end,
    .durable = jf_durable,
    .start = jf_start,
    .last_timestamp = jf_last_timestamp,
    .error = jf_error,
    .policy = jf_policy,
    .wait_durable = jf_wait_durable,
    .sync = jf_sync,
    .read = jf_read,
    .read_raw = jf_read_raw,
    .scan = jf_scan,
    .delete_before = jf_delete_before,
    .segments = jf_segments,
    .get_stats = jf_get_stats,
    .close = jf_close,
};
