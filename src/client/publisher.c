/*
 * publisher.c — two ways of publishing built on cy_publish (coyote.h):
 *   cy_writer_*     one message whose value arrives in pieces: buffered, then
 *                   published by cy_writer_close;
 *   cy_publisher_*  a batching publisher: messages are copied into a queue and
 *                   a background thread publishes them in batches, each batch
 *                   with its own idempotency key, retried with that same key.
 *
 * Writer invariants:
 *   W1. The writer owns copies of everything it sends: the topic, the
 *       headers and key of `meta` (one block after the struct), the value
 *       (a buffer grown by doubling, at most WRITER_MAX_VALUE bytes).
 *   W2. A failed write is sticky: the buffer is left as it was, and
 *       cy_writer_close then publishes nothing and returns that error, so a
 *       value with a piece missing is never published.
 *
 * Publisher invariants (all counters under p->lock):
 *   P1. A queued message is one allocation [struct pub_msg][cy_header x n]
 *       [bytes: value, key, header names and values, NUL-terminated].
 *   P2. Messages get seq = 1, 2, ... in the order they enter the queue; the
 *       thread takes them from the head and reports them in that same order,
 *       so `reported` is the seq of the last reported message, and
 *       flush waits for reported >= (enqueued when it began).
 *   P3. pending = queued + taken by the thread and not yet reported; send
 *       blocks while pending >= max_in_flight. A message stops being pending
 *       after its on_done returned.
 *   P4. A batch is sent when one of these holds: batch_size messages (or
 *       BATCH_MAX_BYTES of payload) are queued, its oldest message has waited
 *       linger_ms, a flush asked for it, or the publisher is closing. A batch
 *       holds at most batch_size messages and BATCH_MAX_BYTES of payload
 *       (at least one message), so it stays under the broker's default 2 MiB
 *       body limit.
 *   P5. One batch, one idempotency key "<32 hex random>-<batch number>",
 *       reused on every retry of that batch. Retried: CY_ECONNECT,
 *       CY_ETIMEDOUT and HTTP 503 (storage_unavailable, not_ready,
 *       shutting_down: nothing was acknowledged) — up to `retries` times,
 *       waiting 50 ms, 100 ms, ... capped at 2 s. A duplicate answer carries
 *       the original result, so positions stay right.
 *   P6. A batch the broker refuses with 413 or 422 stored nothing (API.md:
 *       a rejected call changes nothing); when it held several messages, each
 *       is sent again alone (key "<batch key>.<i>"), so one bad message does
 *       not fail its neighbours. Any other failure is every message's rc.
 *   P7. Positions (cy_publish_cb): a result naming one partition gives
 *       message i of the batch offset start_offset + i there (the messages of
 *       one partition get consecutive offsets in request order). A result
 *       naming several partitions cannot be mapped back to messages without
 *       knowing where the broker put each keyless one: those messages are
 *       reported with rc 0 and partition UINT32_MAX, offset UINT64_MAX.
 *   P8. on_done runs on the publisher's thread without p->lock held, right
 *       after the message's last publish attempt (so cy_last_error on that
 *       thread describes a CY_ESERVER failure).
 *
 * Message lifecycle:
 *   send ──> queued ──(P4)──> in a batch ──> attempts (P5/P6) ──> on_done ──> freed
 *
 * Closing: `closing` makes every send (also one blocked at max_in_flight)
 * return CY_ECLOSED; close then flushes, sets `stop`, waits for senders
 * still inside send to leave, joins the thread and frees.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "client/client_int.h"

#define WRITER_MAX_VALUE (64u << 20)
#define WRITER_MIN_CAP 4096u
#define BATCH_MAX_BYTES (1u << 20)
#define BACKOFF_FIRST_MS 50u
#define BACKOFF_MAX_MS 2000u

#define DEFAULT_LINGER_MS 5u
#define DEFAULT_BATCH_SIZE 100u
#define DEFAULT_MAX_IN_FLIGHT 10000u
#define DEFAULT_RETRIES 3u

/* ---- copying a message -------------------------------------------------------------- */

static bool add_size(size_t *total, size_t n)
{
    if (n > SIZE_MAX - *total)
        return false;
    *total += n;
    return true;
}

static size_t key_length(const cy_message *m)
{
    return m->key ? (m->key_len ? m->key_len : strlen(m->key)) : 0;
}

/* The size of a block holding `head` bytes, then m's headers and bytes (with
 * its value when with_value). false on overflow. *payload (may be NULL) gets
 * the bytes the message adds to a request, roughly. */
static bool copy_size(const cy_message *m, bool with_value, size_t head, size_t *total,
                      size_t *payload)
{
    size_t bytes = 0;
    if ((with_value && !add_size(&bytes, m->value_len)) || !add_size(&bytes, 1))
        return false;
    if (m->key && (!add_size(&bytes, key_length(m)) || !add_size(&bytes, 1)))
        return false;
    for (size_t i = 0; i < m->n_headers; i++)
        if (!add_size(&bytes, strlen(m->headers[i].name)) ||
            !add_size(&bytes, strlen(m->headers[i].value)) || !add_size(&bytes, 2))
            return false;
    *total = head;
    if (m->n_headers > SIZE_MAX / sizeof(cy_header) ||
        !add_size(total, m->n_headers * sizeof(cy_header)) || !add_size(total, bytes))
        return false;
    if (payload)
        *payload = bytes;
    return true;
}

static char *put_bytes(char **cursor, const void *p, size_t n)
{
    char *s = *cursor;
    if (n)
        memcpy(s, p, n);
    s[n] = 0;
    *cursor += n + 1;
    return s;
}

/* Copy m into block (sized by copy_size) after `head` bytes; *dst points
 * into the block. head keeps the alignment of cy_header (it is the size of
 * a struct holding pointers). */
static void copy_into(const cy_message *m, bool with_value, void *block, size_t head,
                      cy_message *dst)
{
    cy_header *hdrs = (cy_header *)((char *)block + head);
    char *cursor = (char *)(hdrs + m->n_headers);
    memset(dst, 0, sizeof *dst);
    if (with_value) {
        dst->value = put_bytes(&cursor, m->value, m->value_len);
        dst->value_len = m->value_len;
    } else {
        dst->value = put_bytes(&cursor, NULL, 0);
    }
    if (m->key) {
        size_t n = key_length(m);
        dst->key = put_bytes(&cursor, m->key, n);
        dst->key_len = n;
    }
    for (size_t i = 0; i < m->n_headers; i++) {
        hdrs[i].name = put_bytes(&cursor, m->headers[i].name, strlen(m->headers[i].name));
        hdrs[i].value = put_bytes(&cursor, m->headers[i].value, strlen(m->headers[i].value));
    }
    dst->headers = m->n_headers ? hdrs : NULL;
    dst->n_headers = m->n_headers;
    dst->has_delay = m->has_delay;
    dst->delay_ms = m->delay_ms;
}

/* ---- the writer ------------------------------------------------------------------------- */

struct cy_writer {
    cy_client *c;
    char *topic;
    cy_message meta; /* headers and key in this block (W1); value unused */
    uint8_t *value;
    size_t len, cap;
    int err; /* W2 */
};

int cy_writer_open(cy_client *c, const char *topic, const cy_message *meta, cy_writer **out)
{
    if (out)
        *out = NULL;
    cy_message none;
    memset(&none, 0, sizeof none);
    if (!meta)
        meta = &none;
    if (!c || !topic || !out || !client_valid_message(meta))
        return CY_EINVAL;
    size_t total;
    if (!copy_size(meta, false, sizeof(cy_writer), &total, NULL))
        return CY_ENOMEM;
    cy_writer *w = calloc(1, total);
    if (!w)
        return CY_ENOMEM;
    w->topic = strdup(topic);
    if (!w->topic) {
        free(w);
        return CY_ENOMEM;
    }
    w->c = c;
    copy_into(meta, false, w, sizeof(cy_writer), &w->meta);
    *out = w;
    return 0;
}

int cy_writer_write(cy_writer *w, const void *p, size_t n)
{
    if (!w || (!p && n))
        return CY_EINVAL;
    if (w->err)
        return w->err;
    if (n == 0)
        return 0;
    if (n > WRITER_MAX_VALUE - w->len) {
        w->err = CY_ETOOBIG;
        return w->err;
    }
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : WRITER_MIN_CAP;
        while (cap < w->len + n)
            cap *= 2;
        if (cap > WRITER_MAX_VALUE)
            cap = WRITER_MAX_VALUE;
        uint8_t *v = realloc(w->value, cap);
        if (!v) {
            w->err = CY_ENOMEM;
            return w->err;
        }
        w->value = v;
        w->cap = cap;
    }
    memcpy(w->value + w->len, p, n);
    w->len += n;
    return 0;
}

static void writer_free(cy_writer *w)
{
    free(w->value);
    free(w->topic);
    free(w);
}

int cy_writer_close(cy_writer *w, cy_publish_result *result)
{
    if (result)
        memset(result, 0, sizeof *result);
    if (!w)
        return CY_EINVAL;
    int rc = w->err;
    if (!rc) {
        cy_message m = w->meta;
        m.value = w->value;
        m.value_len = w->len;
        rc = cy_publish(w->c, w->topic, &m, 1, NULL, result);
    }
    writer_free(w);
    return rc;
}

void cy_writer_abort(cy_writer *w)
{
    if (w)
        writer_free(w);
}

/* ---- the publisher ------------------------------------------------------------------------ */

struct pub_msg {
    struct pub_msg *next;
    void *msg_arg;
    uint64_t seq;       /* P2 */
    uint64_t queued_ms; /* monotonic, when it entered the queue */
    size_t payload;     /* its bytes in a request (P4) */
    cy_message m;       /* points into this allocation (P1) */
};

struct cy_publisher {
    cy_client *c;
    char *topic;
    uint32_t linger_ms, batch_size, max_in_flight, retries;
    cy_publish_cb on_done;
    void *arg;
    char key_prefix[33]; /* P5: 16 random bytes in hex */

    pthread_mutex_t lock;
    pthread_cond_t wake;    /* the thread: a message, a flush, stop */
    pthread_cond_t space;   /* senders: pending went down, or closing; close: senders left */
    pthread_cond_t drained; /* flushers: reported went up */
    pthread_t thread;

    struct pub_msg *head, *tail;
    size_t queued, queued_bytes;
    size_t pending;      /* P3 */
    uint64_t enqueued;   /* seq of the last queued message (P2) */
    uint64_t reported;   /* seq of the last reported message (P2) */
    uint64_t flush_upto; /* send messages up to this seq without lingering */
    uint64_t batches;    /* batch numbers handed out (P5) */
    int first_err;       /* since the last flush */
    unsigned senders;    /* threads inside cy_publisher_send */
    bool closing, stop;

    publisher_attempt_fn attempt; /* cy_publish, or a test's stand-in */
    void *attempt_arg;
};

static int publish_attempt(void *arg, cy_client *c, const char *topic, const cy_message *msgs,
                           size_t n, const char *idempotency_key, cy_publish_result *result,
                           int *status)
{
    (void)arg;
    *status = 0;
    int rc = cy_publish(c, topic, msgs, n, idempotency_key, result);
    if (rc == CY_ESERVER)
        cy_last_error(c, NULL, status);
    return rc;
}

void publisher_set_attempt(cy_publisher *p, publisher_attempt_fn fn, void *arg)
{
    pthread_mutex_lock(&p->lock);
    p->attempt = fn ? fn : publish_attempt;
    p->attempt_arg = fn ? arg : NULL;
    pthread_mutex_unlock(&p->lock);
}

/* 16 random bytes as 32 hex digits. getrandom(2) first; where it is missing
 * (an old kernel, a seccomp filter) /dev/urandom; failing both, the clock,
 * pid and an address mixed together (unique enough for keys that live an
 * hour: the key also carries a batch number). */
static void random_hex(char out[33])
{
    uint8_t raw[16];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
        if (r > 0)
            got += (size_t)r;
        else if (r < 0 && errno == EINTR)
            continue;
        else
            break;
    }
    if (got < sizeof raw) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            got = 0;
            while (got < sizeof raw) {
                ssize_t r = read(fd, raw + got, sizeof raw - got);
                if (r > 0)
                    got += (size_t)r;
                else if (!(r < 0 && errno == EINTR))
                    break;
            }
            close(fd);
        }
    }
    if (got < sizeof raw) {
        uint64_t x = clock_mono_ns() ^ (clock_wall_ms() << 20) ^ ((uint64_t)getpid() << 40) ^
                     (uint64_t)(uintptr_t)out;
        for (size_t i = 0; i < sizeof raw; i++) {
            x ^= x >> 12; /* xorshift64* */
            x ^= x << 25;
            x ^= x >> 27;
            raw[i] = (uint8_t)((x * 2685821657736338717ull) >> 56);
        }
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[32] = 0;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

static bool retryable(int rc, int status)
{
    return rc == CY_ECONNECT || rc == CY_ETIMEDOUT || (rc == CY_ESERVER && status == 503);
}

/* One request with its retries (P5). */
static int publish_retrying(cy_publisher *p, publisher_attempt_fn attempt, void *attempt_arg,
                            const cy_message *msgs, size_t n, const char *key,
                            cy_publish_result *res, int *status)
{
    uint64_t backoff = BACKOFF_FIRST_MS;
    for (uint32_t tries = 0;; tries++) {
        int rc = attempt(attempt_arg, p->c, p->topic, msgs, n, key, res, status);
        if (!rc || !retryable(rc, *status) || tries >= p->retries)
            return rc;
        sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

/* Hand message i of a batch of n to on_done, then free it (P7, P8). */
static void report(cy_publisher *p, struct pub_msg *pm, int rc, const cy_publish_result *res,
                   size_t i, size_t n)
{
    uint32_t partition = UINT32_MAX;
    uint64_t offset = UINT64_MAX;
    if (!rc && res->n == 1 && res->parts[0].end_offset - res->parts[0].start_offset == n) {
        partition = res->parts[0].partition;
        offset = res->parts[0].start_offset + i;
    }
    if (p->on_done)
        p->on_done(p->arg, rc, partition, offset, pm->msg_arg);
    free(pm);
}

/* Publish the list `batch` of n messages with key `key`, report and free
 * every one of them. Returns the first error reported (0 if none). Runs on
 * the publisher's thread without the lock. */
static int send_batch(cy_publisher *p, publisher_attempt_fn attempt, void *attempt_arg,
                      struct pub_msg *batch, size_t n, const char *key)
{
    cy_message one[1];
    cy_message *msgs = n == 1 ? one : malloc(n * sizeof *msgs);
    cy_publish_result res;
    memset(&res, 0, sizeof res);
    int rc = CY_ENOMEM, status = 0;
    if (msgs) {
        size_t i = 0;
        for (struct pub_msg *pm = batch; pm; pm = pm->next)
            msgs[i++] = pm->m;
        rc = publish_retrying(p, attempt, attempt_arg, msgs, n, key, &res, &status);
        if (msgs != one)
            free(msgs);
    }
    if (n > 1 && ((rc == CY_ESERVER && (status == 413 || status == 422)) || rc == CY_ENOMEM)) {
        /* P6 (and out of memory for the array: one by one needs none). */
        int first = 0;
        size_t i = 0;
        for (struct pub_msg *pm = batch, *next; pm; pm = next, i++) {
            next = pm->next;
            pm->next = NULL;
            char single[80];
            snprintf(single, sizeof single, "%s.%zu", key, i);
            int r = send_batch(p, attempt, attempt_arg, pm, 1, single);
            if (!first)
                first = r;
        }
        return first;
    }
    size_t i = 0;
    for (struct pub_msg *pm = batch, *next; pm; pm = next, i++) {
        next = pm->next;
        report(p, pm, rc, &res, i, n);
    }
    return rc;
}

/* Detach the next batch from the queue (P4). Under the lock. */
static struct pub_msg *take_batch(cy_publisher *p, size_t *n)
{
    struct pub_msg *batch = p->head, *last = NULL;
    size_t count = 0, bytes = 0;
    for (struct pub_msg *pm = p->head; pm && count < p->batch_size; pm = pm->next) {
        if (count && bytes + pm->payload > BATCH_MAX_BYTES)
            break;
        bytes += pm->payload;
        count++;
        last = pm;
    }
    p->head = last->next;
    if (!p->head)
        p->tail = NULL;
    last->next = NULL;
    p->queued -= count;
    p->queued_bytes -= bytes;
    *n = count;
    return batch;
}

static void cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *lock, uint64_t mono_ms)
{
    struct timespec ts = {.tv_sec = (time_t)(mono_ms / 1000),
                          .tv_nsec = (long)(mono_ms % 1000) * 1000000};
    pthread_cond_timedwait(cv, lock, &ts); /* the cv uses CLOCK_MONOTONIC */
}

static void *publisher_main(void *arg)
{
    cy_publisher *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (!p->head) {
            if (p->stop)
                break;
            pthread_cond_wait(&p->wake, &p->lock);
            continue;
        }
        bool full = p->queued >= p->batch_size || p->queued_bytes >= BATCH_MAX_BYTES;
        uint64_t due = p->head->queued_ms + p->linger_ms;
        if (!full && !p->stop && p->head->seq > p->flush_upto && clock_mono_ms() < due) {
            cond_wait_until(&p->wake, &p->lock, due);
            continue;
        }
        size_t n;
        struct pub_msg *batch = take_batch(p, &n);
        char key[64];
        snprintf(key, sizeof key, "%s-%" PRIu64, p->key_prefix, ++p->batches);
        publisher_attempt_fn attempt = p->attempt;
        void *attempt_arg = p->attempt_arg;
        pthread_mutex_unlock(&p->lock);

        int rc = send_batch(p, attempt, attempt_arg, batch, n, key);

        pthread_mutex_lock(&p->lock);
        p->pending -= n;
        p->reported += n;
        if (rc && !p->first_err)
            p->first_err = rc;
        pthread_cond_broadcast(&p->space);
        pthread_cond_broadcast(&p->drained);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int cy_publisher_new(cy_client *c, const char *topic, const cy_publisher_opts *opts,
                     cy_publisher **out)
{
    if (out)
        *out = NULL;
    if (!c || !topic || !out)
        return CY_EINVAL;
    cy_publisher *p = calloc(1, sizeof *p);
    if (!p)
        return CY_ENOMEM;
    p->topic = strdup(topic);
    if (!p->topic) {
        free(p);
        return CY_ENOMEM;
    }
    p->c = c;
    p->linger_ms = opts && opts->linger_ms ? opts->linger_ms : DEFAULT_LINGER_MS;
    p->batch_size = opts && opts->batch_size ? opts->batch_size : DEFAULT_BATCH_SIZE;
    p->max_in_flight = opts && opts->max_in_flight ? opts->max_in_flight : DEFAULT_MAX_IN_FLIGHT;
    p->retries = opts && opts->retries ? opts->retries : DEFAULT_RETRIES;
    p->on_done = opts ? opts->on_done : NULL;
    p->arg = opts ? opts->arg : NULL;
    p->attempt = publish_attempt;
    random_hex(p->key_prefix);

    int rc, stage = 0;
    pthread_condattr_t ca;
    if ((rc = pthread_mutex_init(&p->lock, NULL)))
        goto fail;
    stage = 1;
    if ((rc = pthread_condattr_init(&ca)))
        goto fail;
    if ((rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC)) ||
        (rc = pthread_cond_init(&p->wake, &ca))) {
        pthread_condattr_destroy(&ca);
        goto fail;
    }
    pthread_condattr_destroy(&ca);
    stage = 2;
    if ((rc = pthread_cond_init(&p->space, NULL)))
        goto fail;
    stage = 3;
    if ((rc = pthread_cond_init(&p->drained, NULL)))
        goto fail;
    stage = 4;
    /* The thread takes no signals: the host's handlers run on its own threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&p->thread, NULL, publisher_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        goto fail;
    *out = p;
    return 0;

fail:
    if (stage >= 4)
        pthread_cond_destroy(&p->drained);
    if (stage >= 3)
        pthread_cond_destroy(&p->space);
    if (stage >= 2)
        pthread_cond_destroy(&p->wake);
    if (stage >= 1)
        pthread_mutex_destroy(&p->lock);
    free(p->topic);
    free(p);
    return rc == ENOMEM || rc == EAGAIN ? CY_ENOMEM : -rc;
}

int cy_publisher_send(cy_publisher *p, const cy_message *m, void *msg_arg)
{
    if (!p || !m || !client_valid_message(m))
        return CY_EINVAL;
    size_t total, payload;
    if (!copy_size(m, true, sizeof(struct pub_msg), &total, &payload))
        return CY_ENOMEM;
    struct pub_msg *pm = malloc(total);
    if (!pm)
        return CY_ENOMEM;
    copy_into(m, true, pm, sizeof(struct pub_msg), &pm->m);
    pm->next = NULL;
    pm->msg_arg = msg_arg;
    pm->payload = payload;

    pthread_mutex_lock(&p->lock);
    p->senders++;
    while (!p->closing && p->pending >= p->max_in_flight)
        pthread_cond_wait(&p->space, &p->lock);
    int rc = 0;
    if (p->closing) {
        rc = CY_ECLOSED;
    } else {
        pm->seq = ++p->enqueued;
        pm->queued_ms = clock_mono_ms();
        bool was_empty = !p->head;
        if (p->tail)
            p->tail->next = pm;
        else
            p->head = pm;
        p->tail = pm;
        p->queued++;
        p->queued_bytes += payload;
        p->pending++;
        /* The thread only needs waking to start a linger or to send a full
         * batch; otherwise it is already waiting for the head's deadline. */
        if (was_empty || p->queued == p->batch_size ||
            (p->queued_bytes >= BATCH_MAX_BYTES && p->queued_bytes - payload < BATCH_MAX_BYTES))
            pthread_cond_signal(&p->wake);
        pm = NULL;
    }
    if (--p->senders == 0 && p->closing)
        pthread_cond_broadcast(&p->space); /* close waits for senders to leave */
    pthread_mutex_unlock(&p->lock);
    free(pm);
    return rc;
}

int cy_publisher_flush(cy_publisher *p)
{
    if (!p)
        return CY_EINVAL;
    pthread_mutex_lock(&p->lock);
    uint64_t target = p->enqueued;
    if (target > p->flush_upto) {
        p->flush_upto = target;
        pthread_cond_signal(&p->wake);
    }
    while (p->reported < target)
        pthread_cond_wait(&p->drained, &p->lock);
    int rc = p->first_err;
    p->first_err = 0;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int cy_publisher_close(cy_publisher *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->lock);
    p->closing = true;
    pthread_cond_broadcast(&p->space);
    pthread_mutex_unlock(&p->lock);

    int rc = cy_publisher_flush(p);

    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_signal(&p->wake);
    while (p->senders)
        pthread_cond_wait(&p->space, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);

    /* Nothing is left: closing stopped new messages before the flush. */
    pthread_cond_destroy(&p->drained);
    pthread_cond_destroy(&p->space);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p->topic);
    free(p);
    return rc;
}
