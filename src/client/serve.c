/*
 * serve.c — the consumer server of coyote.h (cy_serve_start / cy_serve_stop):
 * pull messages with long polls, run the user's handler on `workers` threads,
 * and settle each message by the handler's outcome.
 *
 * Threads (all share one mutex, s->mu; broker calls are made without it):
 *
 *   receiver ──cy_receive (long poll)──► a "held" batch ──units──► work queue
 *   workers  ◄──────────────────────────────────────────────────────┘
 *      │ handler outcome (a "fate")
 *      ▼
 *   control: settles fates (batched ack / nack / dead-letter calls, stream
 *            commits in order), keeps leases (extend-lease at half the lease)
 *            and enforces deadlines; frees finished batches
 *
 * Clients: handlers get the caller's client (cy_context.client). Over http a
 * call holds its client's lock for its whole round trip (a long poll too), so
 * the receiver and the control thread each open a sibling client on the same
 * URL (client_int.h keeps what cy_open was given): a long poll never holds
 * off an ack or a lease extension. The embedded backend releases the client's
 * lock while a long poll waits, and a second cy_open of its directory would
 * be refused (CY_ELOCKED), so there all three share the caller's client.
 *
 * A message's life (struct job):
 *
 *   QUEUED ──worker──► RUNNING ──handler returns──► fate DONE | RETRY | DEAD
 *     │                   │                               │ (control thread)
 *     │                   └─deadline passed──► EXPIRED    ▼
 *     │                      (nacked at once; the     settled: ack | nack |
 *     │                      handler's outcome is     dead-letter | stream
 *     │                      ignored when it returns) commit / seek
 *     ├─stop before it ran──► RELEASE (queue/FIFO: lease cut to 1 ms)
 *     └─its FIFO key released, or its lease lost──► LOST (no call)
 *
 *   A job is finished once it has a fate, that fate is settled and no handler
 *   runs on it; a batch is freed when all its jobs are finished.
 *
 * Invariants:
 *   1. Every field of the server and of its jobs and batches is read and
 *      written with s->mu held, except a job's message, which is immutable
 *      once its batch is queued, and its dead-letter reason, immutable once
 *      its fate is set. Broker calls are made without s->mu.
 *   2. Only the control thread frees batches (and cy_serve_stop, after every
 *      thread is joined), so the control thread may keep job pointers and
 *      message ids across the unlocked part of its calls.
 *   3. Only the control thread makes settle, extend, commit and seek calls,
 *      in one sequence: an extend never overtakes the nack that released a
 *      FIFO key, and a job is settled at most once.
 *   4. A job's fate is set once (NONE → one of the others); `undecided`
 *      counts the batch's jobs without a fate, `live` those not finished.
 *   5. Queue/FIFO: the lease of every undecided job (queued or running) is
 *      extended when half of it has run, measured from before the call that
 *      took or extended it, so it never lapses while the server holds the
 *      message, unless the broker refuses an extend (the job is then "lease
 *      lost": never extended again; if not started it is dropped; a running
 *      handler finishes and its outcome still counts — the broker takes an
 *      ack after expiry).
 *   6. FIFO: the messages of one key in one batch form a chain run in order
 *      by one worker. When one of them ends otherwise than CY_DONE (or its
 *      lease is lost, or its deadline passes), the broker releases the later
 *      ones of that receive (API.md §8), so they are dropped unrun: the key
 *      restarts in order in a later batch. The broker delivers no later
 *      message of a key while one is leased or waiting for its retry, and
 *      acks are sent only after the handler returned, so a key's messages
 *      are handled one after another across batches too.
 *   7. Stream: one batch at a time (the broker leases a partition to no one,
 *      its holder included, until it is committed past its last message).
 *      Per partition the batch's messages are run in parallel; the control
 *      thread commits the highest offset below which every message of the
 *      batch is done (CY_DONE or CY_DEAD), as completions come in.
 *
 * Decisions (what coyote.h leaves open):
 *   - Queue/FIFO: CY_DONE acks, CY_RETRY nacks (the group's retry schedule;
 *     with none configured the broker dead-letters at the first nack, API.md
 *     §7), CY_DEAD dead-letters at once (cy_dead_letter). Any other return
 *     value counts as CY_RETRY. Calls are batched: one ack / nack / dead
 *     call for all the fates the control thread finds (≤ 1000 ids a call).
 *   - Stream has no retry schedule and no dead-letter queue: CY_DEAD skips
 *     the message (commits past it, like CY_DONE); CY_RETRY and a passed
 *     deadline stop the commits before that message, and when the batch
 *     ends the partition is seeked back to it (which releases its lease), so
 *     it and everything after it are delivered again (at least once). The
 *     receiver then pauses before its next receive, 100 ms doubling up to
 *     5 s while batches keep ending that way (reset by a clean batch).
 *     Stream leases cannot be extended (API.md §6 has no call for it): set
 *     lease_ms above a batch's handling time (the default is 5 minutes).
 *   - The deadline (deadline_ms) runs from the handler's start; the time a
 *     message waits in the work queue does not count (its lease is kept
 *     meanwhile). cy_context.deadline_mono_ms is CLOCK_MONOTONIC in ms.
 *   - The receiver takes a new batch only when the work queue is empty and a
 *     worker is idle (and, stream, when the previous batch has ended), so
 *     at most about one batch waits for workers.
 *   - Graceful stop: no new receive (one in flight ends at its batch_wait_ms,
 *     and what it brings is released); messages not yet started are
 *     released — queue/FIFO by cutting their lease to 1 ms, so they return
 *     to the group at once (as an expired lease: the next delivery's attempt
 *     is one higher, and max_deliveries counts it), stream by seeking the
 *     partition back to the first message not done; running handlers finish
 *     (their leases kept, their deadlines enforced) and are settled.
 *   - Errors never stop the server. A failed receive is retried after a
 *     back-off (50 ms doubling up to 5 s; "no_available_leases" in stream
 *     mode is not an error, only a back-off). A settle call (ack, nack,
 *     dead-letter, release, commit, seek) that fails for a transient reason (no connection, timeout, a 5xx answer, no memory) is
 *     retried up to 5 times, then given up (the lease runs out and the
 *     message is delivered again). The first error of any kind, and the
 *     first lease the broker refused to extend, is what cy_serve_stop
 *     returns.
 *   - cy_serve_stop must not be called from a handler, and the caller's
 *     client must stay open until cy_serve_stop returned.
 *   - Dead-letter reasons (cy_set_dead_reason): cy_context is public and
 *     const, and decorators (middleware.c, router.c) hand their own copy of
 *     it to the handler they wrap, so the reason is not found through the
 *     context pointer: while a worker runs a handler, a thread-local slot
 *     (struct reason_slot, on run_job's stack) names the running message,
 *     and cy_set_dead_reason on that thread stores a copy there (truncated
 *     to 1 KiB at a UTF-8 boundary; the last call wins). A call on any
 *     other thread, or outside a handler (a handler called directly, as in
 *     a test), finds no slot and is ignored (or given to dead_reason.h's
 *     test hook). When the handler returns CY_DEAD in queue/FIFO mode the
 *     reason moves to the job (immutable from then on, so the control
 *     thread reads it without s->mu, like the message); otherwise it is
 *     dropped (stream has no DLQ). Settling sends one dead-letter call per
 *     distinct reason (cy_dead_letter_reason), and plain cy_dead_letter for
 *     the messages without one; a broker that refuses the "reason" field
 *     (400/422) gets the plain call, so the messages still go to the DLQ.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "client/client_int.h"
#include "client/dead_reason.h"

#define MAX_WORKERS 1024u
#define MAX_IDS_PER_CALL 1000u
#define DEFAULT_BATCH_SIZE 10u
#define DEFAULT_BATCH_WAIT_MS 1000u
#define STREAM_DEFAULT_LEASE_MS 300000u
#define QUEUE_DEFAULT_LEASE_MS 30000u
#define RELEASE_LEASE_MS 1u /* the broker's minimum lease: "give it back now" */
#define BACKOFF_MIN_MS 50u
#define BACKOFF_MAX_MS 5000u
#define RETRY_PAUSE_MIN_MS 100u
#define SETTLE_TRIES 5u
#define NO_TIME UINT64_MAX

enum fate {
    FATE_NONE,    /* undecided: queued or running */
    FATE_DONE,    /* ack / commit */
    FATE_RETRY,   /* nack / stream: redeliver */
    FATE_DEAD,    /* dead-letter / stream: skip */
    FATE_EXPIRED, /* the deadline passed: nack / stream: redeliver */
    FATE_RELEASE, /* stop: never ran; queue/FIFO: lease cut to 1 ms */
    FATE_LOST,    /* never ran, and the broker took it back already: no call */
};

struct held;

struct job {
    struct held *h;
    const cy_received *msg;
    struct job *chain; /* FIFO: the next message of the same key in this batch */
    struct job *next;  /* in the work queue (chain heads) or the pending list:
                          a queued job only ever gets FATE_LOST, which is never
                          pending, so it is on one list at a time */
    uint8_t fate;      /* enum fate */
    uint8_t tries;     /* failed settle calls so far */
    bool running;
    bool settled;
    bool finished;
    bool lease_lost;
    uint64_t lease_from; /* mono ms: no later than the start of the current lease */
    uint64_t deadline;   /* mono ms, set when the handler starts; 0: none */
    char *reason;        /* FATE_DEAD with a reason (malloc'd; immutable once set) */
};

/* Stream: the batch's messages of one partition, order[from..to) by offset. */
struct seg {
    size_t from, to;
    size_t done; /* order[from..done) are committed */
};

/* One received batch. */
struct held {
    struct held *next;
    cy_batch batch;
    struct job *jobs;
    size_t n;
    size_t undecided; /* jobs without a fate (invariant 4) */
    size_t live;      /* jobs not finished */
    /* stream */
    struct job **order; /* jobs by (partition, offset) */
    struct seg *segs;
    size_t n_segs;
    bool progress; /* a fate was set since the last commit pass */
    bool ended;    /* the final commits / seeks are done */
    uint8_t tries; /* commit / seek passes that failed for a transient reason */
};

struct cy_server {
    cy_client *c;      /* the caller's: handlers' cy_context.client */
    cy_client *recv_c; /* the receiver's: c (embedded) or a sibling (http) */
    cy_client *ctl_c;  /* the control thread's: likewise */
    cy_mode mode;
    char *topic, *group;
    uint32_t workers, batch_size;
    uint64_t batch_wait_ms, lease_ms, deadline_ms;
    bool start_earliest;
    cy_handler h;

    pthread_mutex_t mu;
    pthread_cond_t recv_cv, work_cv, ctl_cv; /* CLOCK_MONOTONIC */
    pthread_t recv_tid, ctl_tid, *worker_tids;
    uint32_t n_workers_started;
    bool recv_started, ctl_started;

    struct held *held;           /* every batch not freed */
    struct job *q_head, *q_tail; /* units (chain heads) waiting for a worker */
    size_t queued;               /* units in the work queue */
    uint32_t idle;               /* workers waiting for a unit */
    size_t unended;              /* stream: batches not ended */
    struct job *pending;         /* queue/FIFO: fates the broker was not told yet */
    bool stream_progress;        /* some batch has progress set */
    bool reap;                   /* some batch may be finished */
    uint64_t keep_at;            /* control: next lease / deadline check */
    uint64_t ctl_retry_at;       /* control: no settle call before this */
    uint64_t ctl_backoff;
    uint64_t recv_not_before; /* receiver: back-off or stream retry pause */
    uint64_t recv_backoff, retry_pause;
    bool stopping, ctl_exit;
    int first_error;
};

/* ---- dead-letter reasons ------------------------------------------------------------ */

/* The message a worker thread's handler runs for (see "Dead-letter reasons"). */
struct reason_slot {
    const struct cy_server *s;
    char *reason; /* malloc'd, or NULL */
};

static _Thread_local struct reason_slot *current_slot;
static _Thread_local dead_reason_hook test_hook;
static _Thread_local void *test_hook_arg;

void dead_reason_set_hook(dead_reason_hook fn, void *arg)
{
    test_hook = fn;
    test_hook_arg = arg;
}

/* A copy of reason cut to at most DEAD_REASON_MAX_BYTES without splitting a
 * UTF-8 sequence; NULL when out of memory. */
static char *reason_copy(const char *reason)
{
    size_t n = strlen(reason);
    if (n > DEAD_REASON_MAX_BYTES) {
        n = DEAD_REASON_MAX_BYTES;
        while (n > 0 && ((unsigned char)reason[n] & 0xC0) == 0x80)
            n--; /* reason[n] continues a sequence: cut before its start */
    }
    char *copy = malloc(n + 1);
    if (copy) {
        memcpy(copy, reason, n);
        copy[n] = '\0';
    }
    return copy;
}

void cy_set_dead_reason(const cy_context *ctx, const char *reason)
{
    if (!ctx || !reason)
        return;
    struct reason_slot *slot = current_slot;
    if (!slot) {
        if (test_hook)
            test_hook(test_hook_arg, ctx, reason);
        return;
    }
    char *copy = reason_copy(reason); /* out of memory: dead-lettered without one */
    free(slot->reason);
    slot->reason = copy;
}

/* ---- small things ------------------------------------------------------------------ */

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static void wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t at_ms)
{
    if (at_ms == NO_TIME) {
        pthread_cond_wait(cv, mu);
        return;
    }
    struct timespec ts;
    ts.tv_sec = (time_t)(at_ms / 1000);
    ts.tv_nsec = (long)(at_ms % 1000) * 1000000L;
    pthread_cond_timedwait(cv, mu, &ts);
}

static uint64_t next_backoff(uint64_t cur, uint64_t lo, uint64_t hi)
{
    return cur ? min_u64(cur * 2, hi) : lo;
}

/* Under s->mu. */
static void record_error(struct cy_server *s, int rc)
{
    if (rc && !s->first_error)
        s->first_error = rc;
}

/* Whether a failed call may succeed if made again. Right after the call, on
 * the thread that made it (cy_last_error is per thread). */
static bool transient(cy_client *c, int rc)
{
    if (rc == CY_ECONNECT || rc == CY_ETIMEDOUT || rc == CY_ENOMEM || rc == CY_EPROTOCOL)
        return true;
    if (rc != CY_ESERVER)
        return false;
    int status = 0;
    cy_last_error(c, NULL, &status);
    return status >= 500;
}

/* The time at which a job's lease should be extended. */
static uint64_t extend_due(const struct cy_server *s, const struct job *j)
{
    uint64_t half = s->lease_ms / 2 ? s->lease_ms / 2 : 1;
    return j->lease_from + half;
}

static void note_keep(struct cy_server *s, uint64_t at)
{
    if (at < s->keep_at) {
        s->keep_at = at;
        pthread_cond_signal(&s->ctl_cv);
    }
}

/* ---- fates (all under s->mu) ----------------------------------------------------------- */

static void maybe_finish(struct cy_server *s, struct job *j)
{
    if (j->finished || j->running || j->fate == FATE_NONE || !j->settled)
        return;
    j->finished = true;
    if (--j->h->live == 0) {
        s->reap = true;
        pthread_cond_signal(&s->ctl_cv);
    }
}

static void push_pending(struct cy_server *s, struct job *j)
{
    j->next = s->pending;
    s->pending = j;
    pthread_cond_signal(&s->ctl_cv);
}

/* Give j its fate (invariant 4) and hand it to whoever settles it. */
static void set_fate(struct cy_server *s, struct job *j, enum fate f)
{
    j->fate = (uint8_t)f;
    j->h->undecided--;
    if (s->mode == CY_STREAM) {
        /* settled when the batch ends (stream_pass) */
        j->h->progress = true;
        s->stream_progress = true;
        pthread_cond_signal(&s->ctl_cv);
    } else if (f == FATE_LOST) {
        j->settled = true;
        maybe_finish(s, j);
    } else {
        push_pending(s, j);
    }
}

/* Give every undecided job of a chain, from j on, the fate f. */
static void drop_chain(struct cy_server *s, struct job *j, enum fate f)
{
    for (; j; j = j->chain)
        if (j->fate == FATE_NONE && !j->running)
            set_fate(s, j, f);
}

/* ---- the receiver ---------------------------------------------------------------------- */

static int cmp_job_pos(const void *a, const void *b)
{
    const cy_received *x = (*(struct job *const *)a)->msg, *y = (*(struct job *const *)b)->msg;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static bool same_key(const cy_received *a, const cy_received *b)
{
    return a->key && b->key && a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0;
}

/* A held batch for b (taken over on success), its jobs linked into chains
 * (FIFO) or sorted into partitions (stream). NULL when out of memory. */
static struct held *held_new(struct cy_server *s, cy_batch *b, uint64_t lease_from)
{
    struct held *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->n = b->n;
    h->jobs = calloc(b->n, sizeof *h->jobs);
    if (!h->jobs)
        goto fail;
    for (size_t i = 0; i < b->n; i++) {
        h->jobs[i].h = h;
        h->jobs[i].msg = &b->msgs[i];
        h->jobs[i].lease_from = lease_from;
    }
    if (s->mode == CY_FIFO) {
        /* Chain each keyed message to the previous one of its key (batch
         * order is the key's order). tails[] holds the last job of each key
         * seen so far. */
        struct job **tails = malloc(b->n * sizeof *tails);
        if (!tails)
            goto fail;
        size_t n_tails = 0;
        for (size_t i = 0; i < b->n; i++) {
            struct job *j = &h->jobs[i];
            if (!j->msg->key)
                continue;
            size_t t = 0;
            while (t < n_tails && !same_key(tails[t]->msg, j->msg))
                t++;
            if (t < n_tails)
                tails[t]->chain = j;
            else
                n_tails++;
            tails[t] = j;
        }
        free(tails);
    }
    if (s->mode == CY_STREAM) {
        h->order = malloc(b->n * sizeof *h->order);
        h->segs = calloc(b->n, sizeof *h->segs);
        if (!h->order || !h->segs)
            goto fail;
        for (size_t i = 0; i < b->n; i++)
            h->order[i] = &h->jobs[i];
        qsort(h->order, b->n, sizeof *h->order, cmp_job_pos);
        for (size_t i = 0; i < b->n; i++) {
            if (i == 0 || h->order[i]->msg->partition != h->order[i - 1]->msg->partition) {
                h->segs[h->n_segs].from = h->segs[h->n_segs].done = i;
                h->n_segs++;
            }
            h->segs[h->n_segs - 1].to = i + 1;
        }
    }
    h->undecided = h->live = b->n;
    h->batch = *b;
    memset(b, 0, sizeof *b);
    return h;

fail:
    free(h->jobs);
    free(h->order);
    free(h->segs);
    free(h);
    return NULL;
}

static bool is_chain_head(const struct cy_server *s, const struct held *h, const struct job *j)
{
    if (s->mode != CY_FIFO || !j->msg->key)
        return true;
    for (const struct job *k = h->jobs; k < j; k++)
        if (k->chain == j)
            return false;
    return true;
}

/* Queue the batch's units for the workers, or release it all (stopping). */
static void held_start(struct cy_server *s, struct held *h)
{
    h->next = s->held;
    s->held = h;
    if (s->mode == CY_STREAM)
        s->unended++;
    if (s->stopping) {
        for (size_t i = 0; i < h->n; i++)
            set_fate(s, &h->jobs[i], FATE_RELEASE);
        return;
    }
    /* Chain heads are the jobs no other job points to. */
    bool *tail = NULL;
    if (s->mode == CY_FIFO) {
        tail = calloc(h->n, sizeof *tail);
        if (tail)
            for (size_t i = 0; i < h->n; i++)
                if (h->jobs[i].chain)
                    tail[h->jobs[i].chain - h->jobs] = true;
    }
    for (size_t i = 0; i < h->n; i++) {
        struct job *j = &h->jobs[i];
        if (tail ? tail[i] : !is_chain_head(s, h, j))
            continue;
        j->next = NULL;
        if (s->q_tail)
            s->q_tail->next = j;
        else
            s->q_head = j;
        s->q_tail = j;
        s->queued++;
    }
    free(tail);
    pthread_cond_broadcast(&s->work_cv);
    if (s->mode != CY_STREAM)
        note_keep(s, extend_due(s, &h->jobs[0]));
}

static bool can_receive(const struct cy_server *s)
{
    return s->queued == 0 && s->idle > 0 && (s->mode != CY_STREAM || s->unended == 0);
}

static bool is_no_available_leases(cy_client *c)
{
    const char *code = cy_last_error(c, NULL, NULL);
    return code && strcmp(code, "no_available_leases") == 0;
}

static void *receiver_main(void *arg)
{
    struct cy_server *s = arg;
    cy_receive_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.batch_size = s->batch_size;
    ro.has_lease = true;
    ro.lease_ms = s->lease_ms;
    ro.batch_wait_ms = s->batch_wait_ms;
    ro.start_earliest = s->start_earliest;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->stopping)
            break;
        uint64_t now = clock_mono_ms();
        if (now < s->recv_not_before) {
            wait_until(&s->recv_cv, &s->mu, s->recv_not_before);
            continue;
        }
        if (!can_receive(s)) {
            pthread_cond_wait(&s->recv_cv, &s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        uint64_t sent = clock_mono_ms();
        cy_batch b;
        int rc = cy_receive(s->recv_c, s->mode, s->topic, s->group, &ro, &b);
        bool quiet = rc == CY_ESERVER && s->mode == CY_STREAM && is_no_available_leases(s->recv_c);
        pthread_mutex_lock(&s->mu);
        if (rc) {
            if (!quiet)
                record_error(s, rc);
            s->recv_backoff = next_backoff(s->recv_backoff, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
            s->recv_not_before = clock_mono_ms() + s->recv_backoff;
            continue;
        }
        s->recv_backoff = 0;
        if (b.n == 0)
            continue;
        struct held *h = held_new(s, &b, sent);
        if (!h) {
            /* Out of memory: the leases run out and the messages come back. */
            cy_batch_free(&b);
            record_error(s, CY_ENOMEM);
            s->recv_backoff = next_backoff(s->recv_backoff, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
            s->recv_not_before = clock_mono_ms() + s->recv_backoff;
            continue;
        }
        held_start(s, h);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the workers ------------------------------------------------------------------------- */

/* Run j's handler (s->mu held on entry and on return, released meanwhile). */
static void run_job(struct cy_server *s, struct job *j)
{
    j->running = true;
    j->deadline = s->deadline_ms ? clock_mono_ms() + s->deadline_ms : 0;
    if (j->deadline)
        note_keep(s, j->deadline);
    cy_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.client = s->c;
    ctx.mode = s->mode;
    ctx.topic = s->topic;
    ctx.group = s->group;
    ctx.deadline_mono_ms = j->deadline;
    ctx.user = s->h.arg;
    const cy_received *msg = j->msg;
    struct reason_slot slot = {s, NULL};
    pthread_mutex_unlock(&s->mu);
    current_slot = &slot;
    cy_outcome out = s->h.fn(&ctx, msg);
    current_slot = NULL;
    pthread_mutex_lock(&s->mu);
    j->running = false;
    if (j->fate != FATE_NONE) { /* expired meanwhile: the outcome is ignored */
        free(slot.reason);
        maybe_finish(s, j);
        return;
    }
    enum fate f = out == CY_DONE ? FATE_DONE : out == CY_DEAD ? FATE_DEAD : FATE_RETRY;
    if (f == FATE_DEAD && s->mode != CY_STREAM)
        j->reason = slot.reason;
    else
        free(slot.reason);
    set_fate(s, j, f);
    if (f != FATE_DONE && s->mode == CY_FIFO)
        drop_chain(s, j->chain, FATE_LOST); /* invariant 6 */
}

static void *worker_main(void *arg)
{
    struct cy_server *s = arg;
    pthread_mutex_lock(&s->mu);
    s->idle++;
    pthread_cond_signal(&s->recv_cv);
    for (;;) {
        while (!s->q_head && !s->stopping)
            pthread_cond_wait(&s->work_cv, &s->mu);
        struct job *unit = s->q_head;
        if (!unit)
            break;
        s->q_head = unit->next;
        if (!s->q_head)
            s->q_tail = NULL;
        s->queued--;
        s->idle--;
        if (!s->queued && s->idle)
            pthread_cond_signal(&s->recv_cv); /* an idle worker can take more */
        for (struct job *j = unit; j && j->fate == FATE_NONE; j = j->chain) {
            if (s->stopping) {
                drop_chain(s, j, FATE_RELEASE);
                break;
            }
            run_job(s, j);
        }
        s->idle++;
        pthread_cond_signal(&s->recv_cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the control thread: settling ----------------------------------------------------------- */

enum call_kind { CALL_ACK, CALL_NACK, CALL_DEAD, CALL_EXTEND, N_CALLS };

/* ids[0..n) in calls of at most MAX_IDS_PER_CALL. Without s->mu. */
static int call_ids(struct cy_server *s, enum call_kind k, const char *const *ids, size_t n,
                    uint64_t lease_ms)
{
    for (size_t i = 0; i < n; i += MAX_IDS_PER_CALL) {
        size_t m = n - i < MAX_IDS_PER_CALL ? n - i : MAX_IDS_PER_CALL;
        int rc;
        switch (k) {
        case CALL_ACK: rc = cy_ack(s->ctl_c, s->mode, s->topic, s->group, ids + i, m); break;
        case CALL_NACK:
            rc = cy_nack(s->ctl_c, s->mode, s->topic, s->group, ids + i, m, false, 0);
            break;
        case CALL_DEAD:
            rc = cy_dead_letter(s->ctl_c, s->mode, s->topic, s->group, ids + i, m);
            break;
        default: rc = cy_extend(s->ctl_c, s->mode, s->topic, s->group, ids + i, m, lease_ms); break;
        }
        if (rc)
            return rc;
    }
    return 0;
}

static bool same_reason(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* Whether the broker refused a request's fields (a broker that does not
 * know "reason"). Right after the call, on the calling thread. */
static bool refused_fields(cy_client *c)
{
    int status = 0;
    cy_last_error(c, NULL, &status);
    return status == 400 || status == 422;
}

/* Dead-letter jobs[0..n) (ids[i] is jobs[i]'s), which are sorted so that
 * equal reasons are adjacent: one call per reason. Without s->mu (the
 * reasons are immutable). */
static int call_dead(struct cy_server *s, struct job *const *jobs, const char *const *ids, size_t n)
{
    for (size_t i = 0; i < n;) {
        const char *reason = jobs[i]->reason;
        size_t end = i + 1;
        while (end < n && same_reason(jobs[end]->reason, reason))
            end++;
        for (size_t k = i; k < end; k += MAX_IDS_PER_CALL) {
            size_t m = end - k < MAX_IDS_PER_CALL ? end - k : MAX_IDS_PER_CALL;
            int rc;
            if (!reason) {
                rc = cy_dead_letter(s->ctl_c, s->mode, s->topic, s->group, ids + k, m);
            } else {
                rc = cy_dead_letter_reason(s->ctl_c, s->mode, s->topic, s->group, ids + k, m,
                                           reason);
                if (rc == CY_ESERVER && refused_fields(s->ctl_c))
                    rc = cy_dead_letter(s->ctl_c, s->mode, s->topic, s->group, ids + k, m);
            }
            if (rc)
                return rc;
        }
        i = end;
    }
    return 0;
}

static int cmp_job_reason(const void *a, const void *b)
{
    const char *x = (*(struct job *const *)a)->reason, *y = (*(struct job *const *)b)->reason;
    if (!x || !y)
        return (x != NULL) - (y != NULL);
    return strcmp(x, y);
}

static enum call_kind call_of(uint8_t fate)
{
    switch (fate) {
    case FATE_DONE: return CALL_ACK;
    case FATE_DEAD: return CALL_DEAD;
    case FATE_RELEASE: return CALL_EXTEND;
    default: /* RETRY, EXPIRED */ return CALL_NACK;
    }
}

/* Tell the broker every pending fate: one call per kind (queue/FIFO). */
static void settle_pending(struct cy_server *s)
{
    size_t n = 0;
    for (struct job *j = s->pending; j; j = j->next)
        n++;
    struct job **jobs = malloc(n * sizeof *jobs);
    const char **ids = malloc(n * sizeof *ids);
    if (!jobs || !ids) {
        free(jobs);
        free(ids);
        record_error(s, CY_ENOMEM);
        s->ctl_backoff = next_backoff(s->ctl_backoff, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
        s->ctl_retry_at = clock_mono_ms() + s->ctl_backoff;
        return;
    }
    /* Group by call kind: at[k] is where kind k starts. */
    size_t count[N_CALLS] = {0}, at[N_CALLS + 1] = {0};
    for (struct job *j = s->pending; j; j = j->next)
        count[call_of(j->fate)]++;
    for (int k = 0; k < N_CALLS; k++)
        at[k + 1] = at[k] + count[k];
    size_t fill[N_CALLS];
    memcpy(fill, at, sizeof fill);
    for (struct job *j = s->pending; j; j = j->next) {
        size_t i = fill[call_of(j->fate)]++;
        jobs[i] = j;
        ids[i] = j->msg->msg_id;
    }
    s->pending = NULL;
    if (count[CALL_DEAD] > 1) { /* equal reasons side by side (call_dead) */
        qsort(jobs + at[CALL_DEAD], count[CALL_DEAD], sizeof *jobs, cmp_job_reason);
        for (size_t i = at[CALL_DEAD]; i < at[CALL_DEAD + 1]; i++)
            ids[i] = jobs[i]->msg->msg_id;
    }

    int rc[N_CALLS] = {0};
    bool again[N_CALLS] = {false};
    pthread_mutex_unlock(&s->mu);
    for (int k = 0; k < N_CALLS; k++) {
        if (!count[k])
            continue;
        rc[k] = k == CALL_DEAD
                    ? call_dead(s, jobs + at[k], ids + at[k], count[k])
                    : call_ids(s, (enum call_kind)k, ids + at[k], count[k], RELEASE_LEASE_MS);
        again[k] = rc[k] && transient(s->ctl_c, rc[k]);
        if (k == CALL_EXTEND && rc[k] == CY_ESERVER && !again[k]) {
            /* Releasing is best effort, and an extend is all-or-nothing: a
             * lease that ran out already refuses the whole call. */
            for (size_t i = at[k]; i < at[k + 1]; i++)
                call_ids(s, CALL_EXTEND, ids + i, 1, RELEASE_LEASE_MS);
            rc[k] = 0;
        }
    }
    pthread_mutex_lock(&s->mu);
    bool retry = false;
    for (int k = 0; k < N_CALLS; k++) {
        if (rc[k])
            record_error(s, rc[k]);
        for (size_t i = at[k]; i < at[k + 1]; i++) {
            struct job *j = jobs[i];
            if (again[k] && ++j->tries < SETTLE_TRIES) {
                j->next = s->pending;
                s->pending = j;
                retry = true;
                continue;
            }
            j->settled = true; /* or given up: the lease runs out */
            maybe_finish(s, j);
        }
    }
    if (retry) {
        s->ctl_backoff = next_backoff(s->ctl_backoff, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
        s->ctl_retry_at = clock_mono_ms() + s->ctl_backoff;
    } else {
        s->ctl_backoff = 0;
    }
    free(jobs);
    free(ids);
}

/* ---- the control thread: stream commits ------------------------------------------------------ */

struct stream_action {
    size_t seg;
    bool seek;      /* seek to offset (else commit offset) */
    size_t through; /* seg.done after it */
    uint64_t offset;
    const char *topic; /* "name~p", in the batch */
};

static bool fate_done(uint8_t fate)
{
    return fate == FATE_DONE || fate == FATE_DEAD;
}

/* Commit what h's completions allow; end h when every job has a fate. */
static void stream_batch_pass(struct cy_server *s, struct held *h)
{
    h->progress = false;
    bool end = h->undecided == 0;
    struct stream_action act[64];
    size_t n_act = 0;
    bool redeliver = false;
    for (size_t g = 0; g < h->n_segs && n_act < 64; g++) {
        struct seg *sg = &h->segs[g];
        size_t k = sg->done;
        while (k < sg->to && fate_done(h->order[k]->fate))
            k++;
        if (end && k < sg->to) {
            /* The first message not done comes again: the seek also releases
             * the partition's lease (invariant 7). */
            uint8_t f = h->order[k]->fate;
            redeliver |= f == FATE_RETRY || f == FATE_EXPIRED;
            act[n_act++] = (struct stream_action){g, true, k, h->order[k]->msg->offset,
                                                  h->order[k]->msg->topic};
        } else if (k > sg->done) {
            act[n_act++] = (struct stream_action){g, false, k, h->order[k - 1]->msg->offset,
                                                  h->order[k - 1]->msg->topic};
        }
    }
    int rc[64] = {0};
    bool retry[64] = {false}, again = false;
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n_act; i++) {
        rc[i] = act[i].seek
                    ? cy_seek(s->ctl_c, act[i].topic, s->group, CY_SEEK_OFFSET, act[i].offset)
                    : cy_commit(s->ctl_c, act[i].topic, s->group, act[i].offset);
        retry[i] = rc[i] && transient(s->ctl_c, rc[i]);
        again |= retry[i];
    }
    pthread_mutex_lock(&s->mu);
    if (again && ++h->tries >= SETTLE_TRIES) {
        /* Given up: the lease runs out and the batch comes again. */
        memset(retry, 0, sizeof retry);
        again = false;
    }
    for (size_t i = 0; i < n_act; i++) {
        record_error(s, rc[i]);
        if (!retry[i]) /* done, or refused for good: never asked again */
            h->segs[act[i].seg].done = act[i].through;
    }
    if (again) {
        h->progress = true;
        s->stream_progress = true;
        s->ctl_backoff = next_backoff(s->ctl_backoff, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
        s->ctl_retry_at = clock_mono_ms() + s->ctl_backoff;
        return;
    }
    if (!end)
        return;
    h->ended = true;
    s->unended--;
    if (redeliver) {
        s->retry_pause = next_backoff(s->retry_pause, RETRY_PAUSE_MIN_MS, BACKOFF_MAX_MS);
        s->recv_not_before = clock_mono_ms() + s->retry_pause;
    } else {
        s->retry_pause = 0;
    }
    for (size_t i = 0; i < h->n; i++) {
        h->jobs[i].settled = true;
        maybe_finish(s, &h->jobs[i]);
    }
    pthread_cond_signal(&s->recv_cv);
}

static void stream_pass(struct cy_server *s)
{
    s->stream_progress = false;
    for (struct held *h = s->held; h; h = h->next)
        if (h->progress && !h->ended)
            stream_batch_pass(s, h);
}

/* ---- the control thread: leases and deadlines ------------------------------------------------- */

/* The broker refused to extend j's lease (invariant 5). */
static void lease_lost(struct cy_server *s, struct job *j)
{
    j->lease_lost = true;
    record_error(s, CY_ESERVER);
    if (j->fate != FATE_NONE)
        return;
    if (!j->running)
        set_fate(s, j, FATE_LOST);
    if (s->mode == CY_FIFO)
        drop_chain(s, j->chain, FATE_LOST);
}

/* Enforce deadlines, extend leases that are half gone, and find the next
 * time this is needed. */
static void keep(struct cy_server *s, uint64_t now)
{
    uint64_t next = NO_TIME;
    uint64_t slack = s->lease_ms / 8; /* extend a little early to batch the calls */
    size_t n_due = 0;
    for (struct held *h = s->held; h; h = h->next) {
        for (size_t i = 0; i < h->n; i++) {
            struct job *j = &h->jobs[i];
            if (j->fate != FATE_NONE)
                continue;
            if (j->running && j->deadline) {
                if (now >= j->deadline) {
                    set_fate(s, j, FATE_EXPIRED);
                    if (s->mode == CY_FIFO)
                        drop_chain(s, j->chain, FATE_LOST); /* invariant 6 */
                    continue;
                }
                next = min_u64(next, j->deadline);
            }
            if (s->mode != CY_STREAM && !j->lease_lost) {
                if (extend_due(s, j) <= now + slack)
                    n_due++;
                else
                    next = min_u64(next, extend_due(s, j));
            }
        }
    }
    s->keep_at = next;
    if (!n_due)
        return;

    struct job **jobs = malloc(n_due * sizeof *jobs);
    const char **ids = malloc(n_due * sizeof *ids);
    int *one = malloc(n_due * sizeof *one);
    if (!jobs || !ids || !one) {
        free(jobs);
        free(ids);
        free(one);
        record_error(s, CY_ENOMEM);
        s->keep_at = now + BACKOFF_MIN_MS;
        return;
    }
    size_t n = 0;
    for (struct held *h = s->held; h; h = h->next)
        for (size_t i = 0; i < h->n && n < n_due; i++) {
            struct job *j = &h->jobs[i];
            if (j->fate == FATE_NONE && !j->lease_lost && extend_due(s, j) <= now + slack) {
                jobs[n] = j;
                ids[n++] = j->msg->msg_id;
            }
        }
    pthread_mutex_unlock(&s->mu);
    uint64_t sent = clock_mono_ms();
    int rc = call_ids(s, CALL_EXTEND, ids, n, s->lease_ms);
    bool again = rc && transient(s->ctl_c, rc);
    bool each = rc == CY_ESERVER && !again;
    if (each) /* all-or-nothing: find the ones the broker refuses */
        for (size_t i = 0; i < n; i++)
            one[i] = call_ids(s, CALL_EXTEND, ids + i, 1, s->lease_ms);
    pthread_mutex_lock(&s->mu);
    if (again) {
        /* The leases may still be running: try again soon. */
        record_error(s, rc);
        s->keep_at = clock_mono_ms() + BACKOFF_MIN_MS;
    } else {
        for (size_t i = 0; i < n; i++) {
            if (!rc || (each && !one[i])) {
                jobs[i]->lease_from = sent;
                if (jobs[i]->fate == FATE_NONE)
                    s->keep_at = min_u64(s->keep_at, extend_due(s, jobs[i]));
            } else if (!jobs[i]->lease_lost) {
                lease_lost(s, jobs[i]);
            }
        }
    }
    free(jobs);
    free(ids);
    free(one);
}

static void held_free(struct held *h)
{
    for (size_t i = 0; i < h->n; i++)
        free(h->jobs[i].reason);
    cy_batch_free(&h->batch);
    free(h->jobs);
    free(h->order);
    free(h->segs);
    free(h);
}

static void reap(struct cy_server *s)
{
    s->reap = false;
    for (struct held **p = &s->held; *p;) {
        struct held *h = *p;
        if (h->live) {
            p = &h->next;
            continue;
        }
        *p = h->next;
        held_free(h);
    }
    pthread_cond_signal(&s->recv_cv);
}

static void *control_main(void *arg)
{
    struct cy_server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        uint64_t now = clock_mono_ms();
        if (now >= s->keep_at)
            keep(s, now);
        bool may_call = clock_mono_ms() >= s->ctl_retry_at;
        if (may_call && s->pending)
            settle_pending(s);
        if (may_call && s->stream_progress)
            stream_pass(s);
        if (s->reap)
            reap(s);
        if (s->ctl_exit && !s->held)
            break;
        bool work = s->pending || s->stream_progress;
        now = clock_mono_ms();
        if (work && now >= s->ctl_retry_at)
            continue;
        if (s->keep_at <= now)
            continue;
        wait_until(&s->ctl_cv, &s->mu, work ? min_u64(s->keep_at, s->ctl_retry_at) : s->keep_at);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- start and stop ------------------------------------------------------------------------------ */

static int init_cond(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc)
        return rc;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

/* A client of its own on c's broker (http), or c itself (embedded). */
static int sibling(cy_client *c, cy_client **out)
{
    if (client_is_embedded(c)) {
        *out = c;
        return 0;
    }
    cy_options o;
    memset(&o, 0, sizeof o);
    o.token = c->token;
    o.ns = c->ns;
    o.timeout_ms = c->timeout_ms;
    return cy_open(c->url, &o, out);
}

/* Join every thread started, release what is left, free s. Returns the first
 * error. */
static int shutdown_and_free(struct cy_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    /* Units no worker took are released now (the busy workers may be long). */
    while (s->q_head) {
        struct job *unit = s->q_head;
        s->q_head = unit->next;
        drop_chain(s, unit, FATE_RELEASE);
    }
    s->q_tail = NULL;
    s->queued = 0;
    pthread_cond_broadcast(&s->recv_cv);
    pthread_cond_broadcast(&s->work_cv);
    pthread_cond_signal(&s->ctl_cv);
    pthread_mutex_unlock(&s->mu);

    if (s->recv_started)
        pthread_join(s->recv_tid, NULL);
    for (uint32_t i = 0; i < s->n_workers_started; i++)
        pthread_join(s->worker_tids[i], NULL);
    pthread_mutex_lock(&s->mu);
    s->ctl_exit = true;
    pthread_cond_signal(&s->ctl_cv);
    pthread_mutex_unlock(&s->mu);
    if (s->ctl_started)
        pthread_join(s->ctl_tid, NULL);

    /* Only when the control thread never ran can batches be left. */
    while (s->held) {
        struct held *h = s->held;
        s->held = h->next;
        held_free(h);
    }
    int rc = s->first_error;
    if (s->recv_c && s->recv_c != s->c)
        cy_close(s->recv_c);
    if (s->ctl_c && s->ctl_c != s->c)
        cy_close(s->ctl_c);
    pthread_cond_destroy(&s->ctl_cv);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->recv_cv);
    pthread_mutex_destroy(&s->mu);
    free(s->worker_tids);
    free(s->topic);
    free(s->group);
    free(s);
    return rc;
}

static int from_pthread(int rc)
{
    return rc == ENOMEM || rc == EAGAIN ? CY_ENOMEM : -rc;
}

int cy_serve_start(cy_client *c, const cy_serve_opts *opts, cy_handler h, cy_server **out)
{
    if (out)
        *out = NULL;
    if (!c || !opts || !out || !h.fn || !opts->topic || !opts->group ||
        (opts->mode != CY_STREAM && opts->mode != CY_QUEUE && opts->mode != CY_FIFO) ||
        opts->workers > MAX_WORKERS)
        return CY_EINVAL;
    struct cy_server *s = calloc(1, sizeof *s);
    if (!s)
        return CY_ENOMEM;
    s->c = c;
    s->mode = opts->mode;
    s->workers = opts->workers ? opts->workers : 1;
    s->batch_size = opts->batch_size ? opts->batch_size : DEFAULT_BATCH_SIZE;
    s->batch_wait_ms = opts->batch_wait_ms ? opts->batch_wait_ms : DEFAULT_BATCH_WAIT_MS;
    s->lease_ms = opts->lease_ms         ? opts->lease_ms
                  : s->mode == CY_STREAM ? STREAM_DEFAULT_LEASE_MS
                                         : QUEUE_DEFAULT_LEASE_MS;
    s->deadline_ms = opts->deadline_ms;
    s->start_earliest = opts->start_earliest;
    s->h = h;
    s->keep_at = NO_TIME;
    s->topic = strdup(opts->topic);
    s->group = strdup(opts->group);
    s->worker_tids = calloc(s->workers, sizeof *s->worker_tids);
    if (!s->topic || !s->group || !s->worker_tids) {
        free(s->topic);
        free(s->group);
        free(s->worker_tids);
        free(s);
        return CY_ENOMEM;
    }
    int rc = pthread_mutex_init(&s->mu, NULL);
    if (rc)
        goto fail_alloc;
    if ((rc = init_cond(&s->recv_cv)))
        goto fail_mutex;
    if ((rc = init_cond(&s->work_cv)))
        goto fail_recv_cv;
    if ((rc = init_cond(&s->ctl_cv)))
        goto fail_work_cv;

    /* From here on shutdown_and_free undoes everything. */
    if ((rc = sibling(c, &s->recv_c)) || (rc = sibling(c, &s->ctl_c)))
        goto fail;
    if ((rc = pthread_create(&s->ctl_tid, NULL, control_main, s))) {
        rc = from_pthread(rc);
        goto fail;
    }
    s->ctl_started = true;
    for (uint32_t i = 0; i < s->workers; i++) {
        if ((rc = pthread_create(&s->worker_tids[i], NULL, worker_main, s))) {
            rc = from_pthread(rc);
            goto fail;
        }
        s->n_workers_started++;
    }
    if ((rc = pthread_create(&s->recv_tid, NULL, receiver_main, s))) {
        rc = from_pthread(rc);
        goto fail;
    }
    s->recv_started = true;
    *out = s;
    return 0;

fail:
    shutdown_and_free(s);
    return rc;
fail_work_cv:
    pthread_cond_destroy(&s->work_cv);
fail_recv_cv:
    pthread_cond_destroy(&s->recv_cv);
fail_mutex:
    pthread_mutex_destroy(&s->mu);
fail_alloc:
    free(s->worker_tids);
    free(s->topic);
    free(s->group);
    free(s);
    return from_pthread(rc);
}

int cy_serve_stop(cy_server *s)
{
    if (!s)
        return 0;
    return shutdown_and_free(s);
}
