/*
 * test_serve.c — the consumer server of coyote.h (cy_serve_start /
 * cy_serve_stop, src/client/serve.c) and cy_dead_letter.
 *
 * Embedded backend on a fresh temp directory for each case:
 *   - queue, 4 workers: 2,000 messages handled exactly once, all acked;
 *   - CY_RETRY then CY_DONE under a retry schedule: attempt 2 seen;
 *   - CY_DEAD: in the dlq_topic at once although retries remain;
 *   - a deadline passed: nacked at the deadline (not when the handler
 *     returns) and delivered again; the late outcome ignored;
 *   - a handler slower than the lease (within its deadline): the lease is
 *     extended, the message is never delivered to another worker;
 *   - FIFO, 4 workers: each key's messages in order, never two at once;
 *     and after a CY_RETRY the key goes on at the retried message (the
 *     later ones of its batch are released with it, not run);
 *   - stream, out-of-order completion: the cursor stops at the first
 *     message not done, and moves on once it is;
 *   - stream over 3 partitions: everything once, every partition committed;
 *   - stream CY_RETRY: the batch is delivered again from that message; after
 *     a stop and a reopen, receiving starts right after the highest
 *     contiguous done offset;
 *   - graceful stop with handlers running: they finish and are acked; after
 *     a restart none of them comes back, the unstarted ones do;
 *   - stop with nothing to do returns within about batch_wait_ms;
 *   - argument checks.
 * Over http (a real coyoted, when this build has the http backend and the
 * binary is found: COYOTED_PATH at compile time or in the environment, or
 * ../coyoted beside this test's directory): the basic queue case, and the
 * server surviving a restart of coyoted (receives fail with CY_ECONNECT, the
 * server backs off and carries on; cy_serve_stop reports the first error).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
#include "coyote.h"
#include "coyoted_proc.h"
#include "server/codec.h"
#include "testutil.h"

/* ---- fixture ------------------------------------------------------------------------ */

struct fx {
    char *dir;
    char url[4200];
    cy_client *c;
};

static cy_options fast_opts(void)
{
    cy_options o;
    memset(&o, 0, sizeof o);
    o.fsync = "never";
    return o;
}

static void ok_at(cy_client *c, int rc, const char *what, int line)
{
    if (rc == 0)
        return;
    const char *detail = NULL;
    const char *code = c ? cy_last_error(c, &detail, NULL) : NULL;
    fail_msg("line %d: %s: %s (%s: %s)", line, what, cy_strerror(rc), code ? code : "-",
             detail ? detail : "-");
}
#define OK(c, expr) ok_at((c), (expr), #expr, __LINE__)

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = tu_tempdir("serve");
    snprintf(f->url, sizeof f->url, "file://%s", f->dir);
    cy_options o = fast_opts();
    OK(NULL, cy_open(f->url, &o, &f->c));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    cy_close(f->c);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

static void reopen(struct fx *f)
{
    cy_close(f->c);
    f->c = NULL;
    cy_options o = fast_opts();
    OK(NULL, cy_open(f->url, &o, &f->c));
}

/* ---- helpers ------------------------------------------------------------------------ */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* Publish n messages "0".."n-1" (with key "k<i % keys>" when keys > 0), in
 * calls of up to 100. */
static void publish_n(cy_client *c, const char *topic, size_t first, size_t n)
{
    char vals[100][24];
    cy_message msgs[100];
    for (size_t done = 0; done < n;) {
        size_t m = n - done < 100 ? n - done : 100;
        for (size_t i = 0; i < m; i++) {
            snprintf(vals[i], sizeof vals[i], "%zu", first + done + i);
            memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].value = vals[i];
            msgs[i].value_len = strlen(vals[i]);
        }
        OK(c, cy_publish(c, topic, msgs, m, NULL, NULL));
        done += m;
    }
}

static size_t value_index(const cy_received *m)
{
    char buf[24];
    size_t n = m->value_len < sizeof buf - 1 ? m->value_len : sizeof buf - 1;
    memcpy(buf, m->value, n);
    buf[n] = 0;
    return (size_t)strtoull(buf, NULL, 10);
}

/* Parse a JSON answer of cy_call_json (the tree lives in a). */
static const struct val *json(struct arena *a, const char *text)
{
    char detail[256], loc[64];
    struct val *v = NULL;
    if (codec_parse_json((const uint8_t *)text, strlen(text), a, &v, detail, sizeof detail, loc,
                         sizeof loc))
        fail_msg("not JSON (%s): %s", detail, text);
    return v;
}

static uint64_t json_u64(const struct val *m, const char *key)
{
    const struct val *v = val_get(m, key);
    if (!v || v->type != VAL_UINT)
        fail_msg("no integer '%s'", key);
    return v->u;
}

/* What v1.msgs.group.get says of a group. */
struct group_info {
    uint64_t lag, in_flight, waiting_retry, dead;
    uint64_t cursor0; /* stream: partition 0's cursor */
};

static struct group_info group_get(cy_client *c, const char *topic, const char *mode,
                                   const char *group)
{
    char body[512];
    snprintf(body, sizeof body, "{\"topic\":\"%s\",\"mode\":\"%s\",\"consumer_group\":\"%s\"}",
             topic, mode, group);
    char *resp = NULL;
    OK(c, cy_call_json(c, "v1.msgs.group.get", body, &resp));
    struct arena a;
    arena_init(&a);
    const struct val *v = json(&a, resp);
    struct group_info gi;
    memset(&gi, 0, sizeof gi);
    gi.lag = json_u64(v, "lag");
    gi.in_flight = json_u64(v, "in_flight");
    gi.waiting_retry = json_u64(v, "waiting_retry");
    gi.dead = json_u64(v, "dead");
    const struct val *parts = val_get(v, "partitions");
    if (strcmp(mode, "stream") == 0 && parts && parts->type == VAL_ARRAY && parts->arr.n)
        gi.cursor0 = json_u64(&parts->arr.items[0], "cursor");
    arena_free(&a);
    cy_free(resp);
    return gi;
}

static cy_serve_opts serve_opts(cy_mode mode, const char *topic, const char *group,
                                uint32_t workers)
{
    cy_serve_opts o;
    memset(&o, 0, sizeof o);
    o.mode = mode;
    o.topic = topic;
    o.group = group;
    o.workers = workers;
    o.batch_size = 10;
    o.batch_wait_ms = 100;
    o.start_earliest = true;
    return o;
}

/* Shared by a test and its handler. */
struct probe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t n;        /* handler calls */
    unsigned *count; /* calls per message index */
    size_t cap;
    uint32_t attempts[8];
    size_t n_attempts;
    bool violation;
    char why[256];
    /* scenario knobs */
    size_t block_index; /* a message whose handler waits for `release` */
    bool release;
    size_t running, finished;
    uint64_t a1_end_ms, a2_start_ms, a1_start_ms, a1_deadline_ms;
    uint64_t seed;
    uint32_t next_seq[16];
    bool busy[16];
};

static void probe_init(struct probe *p, size_t cap)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->cap = cap;
    p->count = calloc(cap ? cap : 1, sizeof *p->count);
    assert_non_null(p->count);
    p->block_index = SIZE_MAX;
    p->seed = 0x9e3779b97f4a7c15ull;
}

static void probe_free(struct probe *p)
{
    free(p->count);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
}

static void violation(struct probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(struct probe *p, const char *fmt, ...)
{
    if (p->violation)
        return;
    p->violation = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->why, sizeof p->why, fmt, ap);
    va_end(ap);
}

/* Wait until *counter >= want (under p->mu), up to ms. */
static bool wait_count(struct probe *p, const size_t *counter, size_t want, unsigned ms)
{
    uint64_t give_up = clock_mono_ms() + ms;
    pthread_mutex_lock(&p->mu);
    while (*counter < want && clock_mono_ms() < give_up) {
        pthread_mutex_unlock(&p->mu);
        sleep_ms(5);
        pthread_mutex_lock(&p->mu);
    }
    bool ok = *counter >= want;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

static unsigned rand_ms(struct probe *p, unsigned max)
{
    return (unsigned)(tu_rand(&p->seed) % (max + 1));
}

/* ---- queue ------------------------------------------------------------------------------- */

static cy_outcome count_handler(const cy_context *ctx, const cy_received *m)
{
    struct probe *p = ctx->user;
    size_t i = value_index(m);
    pthread_mutex_lock(&p->mu);
    if (i < p->cap)
        p->count[i]++;
    else
        violation(p, "unexpected message %zu", i);
    p->n++;
    pthread_mutex_unlock(&p->mu);
    return CY_DONE;
}

static void exactly_once_case(cy_client *c, size_t n, cy_mode mode)
{
    const char *topic = mode == CY_FIFO ? "jobs-fifo" : "jobs";
    publish_n(c, topic, 0, n);
    struct probe p;
    probe_init(&p, n);
    cy_serve_opts o = serve_opts(mode, topic, "workers", 4);
    o.batch_size = 50;
    cy_server *s = NULL;
    OK(c, cy_serve_start(c, &o, (cy_handler){count_handler, &p}, &s));
    bool all = wait_count(&p, &p.n, n, 60000);
    sleep_ms(200); /* a duplicate would show up now */
    OK(c, cy_serve_stop(s));
    assert_true(all);
    assert_false(p.violation);
    for (size_t i = 0; i < n; i++)
        if (p.count[i] != 1)
            fail_msg("message %zu handled %u times", i, p.count[i]);
    assert_int_equal(p.n, n);
    struct group_info gi = group_get(c, topic, mode == CY_FIFO ? "fifo" : "queue", "workers");
    assert_int_equal(gi.in_flight, 0);
    assert_int_equal(gi.lag, 0);
    probe_free(&p);
}

static void test_queue_exactly_once(void **state)
{
    struct fx *f = *state;
    exactly_once_case(f->c, 2000, CY_QUEUE);
}

static cy_outcome retry_once_handler(const cy_context *ctx, const cy_received *m)
{
    struct probe *p = ctx->user;
    pthread_mutex_lock(&p->mu);
    if (p->n_attempts < 8)
        p->attempts[p->n_attempts++] = m->attempt;
    p->n++;
    pthread_mutex_unlock(&p->mu);
    return m->attempt == 1 ? CY_RETRY : CY_DONE;
}

static void test_retry_then_done(void **state)
{
    struct fx *f = *state;
    cy_queue_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.retry_count = 1;
    cfg.retry_schedule[0] = 50;
    OK(f->c, cy_queue_configure(f->c, CY_QUEUE, "retry", "g", &cfg));
    publish_n(f->c, "retry", 0, 1);
    struct probe p;
    probe_init(&p, 1);
    cy_serve_opts o = serve_opts(CY_QUEUE, "retry", "g", 2);
    cy_server *s;
    OK(f->c, cy_serve_start(f->c, &o, (cy_handler){retry_once_handler, &p}, &s));
    bool two = wait_count(&p, &p.n, 2, 10000);
    sleep_ms(300); /* no third delivery */
    OK(f->c, cy_serve_stop(s));
    assert_true(two);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.attempts[0], 1);
    assert_int_equal(p.attempts[1], 2);
    struct group_info gi = group_get(f->c, "retry", "queue", "g");
    assert_int_equal(gi.in_flight + gi.waiting_retry + gi.dead + gi.lag, 0);
    probe_free(&p);
}

static cy_outcome dead_handler(const cy_context *ctx, const cy_received *m)
{
    struct probe *p = ctx->user;
    (void)m;
    pthread_mutex_lock(&p->mu);
    p->n++;
    pthread_mutex_unlock(&p->mu);
    return CY_DEAD;
}

static void test_dead_letters_at_once(void **state)
{
    struct fx *f = *state;
    cy_queue_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.retry_count = 3;
    cfg.retry_schedule[0] = cfg.retry_schedule[1] = cfg.retry_schedule[2] = 60000;
    cfg.dlq_topic = "poison";
    OK(f->c, cy_queue_configure(f->c, CY_QUEUE, "orders", "g", &cfg));
    publish_n(f->c, "orders", 0, 1);
    struct probe p;
    probe_init(&p, 1);
    cy_serve_opts o = serve_opts(CY_QUEUE, "orders", "g", 1);
    cy_server *s;
    OK(f->c, cy_serve_start(f->c, &o, (cy_handler){dead_handler, &p}, &s));
    assert_true(wait_count(&p, &p.n, 1, 10000));
    /* In the DLQ within a second, although a retry 60 s later was left. */
    size_t got = 0;
    uint64_t give_up = clock_mono_ms() + 3000;
    while (!got && clock_mono_ms() < give_up) {
        cy_receive_opts ro;
        memset(&ro, 0, sizeof ro);
        ro.start_earliest = true;
        ro.batch_wait_ms = 100;
        cy_batch b;
        OK(f->c, cy_receive(f->c, CY_STREAM, "poison", "inspect", &ro, &b));
        if (b.n) {
            assert_int_equal(value_index(&b.msgs[0]), 0);
            got = b.n;
        }
        cy_batch_free(&b);
    }
    OK(f->c, cy_serve_stop(s));
    assert_int_equal(got, 1);
    assert_int_equal(p.n, 1);
    struct group_info gi = group_get(f->c, "orders", "queue", "g");
    assert_int_equal(gi.in_flight + gi.waiting_retry + gi.lag, 0);
    probe_free(&p);
}

static cy_outcome deadline_handler(const cy_context *ctx, const cy_received *m)
{
    struct probe *p = ctx->user;
    uint64_t start = clock_mono_ms();
    pthread_mutex_lock(&p->mu);
    p->n++;
    if (m->attempt == 1) {
        p->a1_start_ms = start;
        p->a1_deadline_ms = ctx->deadline_mono_ms;
    } else if (!p->a2_start_ms) {
        p->a2_start_ms = start;
    }
    if (p->n_attempts < 8)
        p->attempts[p->n_attempts++] = m->attempt;
    pthread_mutex_unlock(&p->mu);
    /* Attempt 1 sleeps far past its 600 ms deadline and, returning while
     * attempt 2 still runs, says CY_DEAD: ignored, or the message would be
     * dead-lettered under attempt 2's feet. */
    sleep_ms(m->attempt == 1 ? 1000 : 500);
    pthread_mutex_lock(&p->mu);
    if (m->attempt == 1)
        p->a1_end_ms = clock_mono_ms();
    p->finished++;
    pthread_mutex_unlock(&p->mu);
    return m->attempt == 1 ? CY_DEAD : CY_DONE;
}

static void test_deadline_nacks(void **state)
{
    struct fx *f = *state;
    cy_queue_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.retry_count = 2;
    cfg.retry_schedule[0] = cfg.retry_schedule[1] = 20;
    OK(f->c, cy_queue_configure(f->c, CY_QUEUE, "slow", "g", &cfg));
    publish_n(f->c, "slow", 0, 1);
    struct probe p;
    probe_init(&p, 1);
    cy_serve_opts o = serve_opts(CY_QUEUE, "slow", "g", 2);
    o.lease_ms = 200;
    o.deadline_ms = 600;
    cy_server *s;
    OK(f->c, cy_serve_start(f->c, &o, (cy_handler){deadline_handler, &p}, &s));
    bool both = wait_count(&p, &p.finished, 2, 10000);
    sleep_ms(300); /* no third delivery */
    OK(f->c, cy_serve_stop(s));
    assert_true(both);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.attempts[0], 1);
    assert_int_equal(p.attempts[1], 2);
    /* The handler was told its deadline... */
    assert_true(p.a1_deadline_ms >= p.a1_start_ms + 550 && p.a1_deadline_ms <= p.a1_start_ms + 650);
    /* ...and the message was nacked at it, not when the handler returned. */
    assert_true(p.a2_start_ms < p.a1_end_ms);
    struct group_info gi = group_get(f->c, "slow", "queue", "g");
    assert_int_equal(gi.in_flight + gi.waiting_retry + gi.lag, 0);
    assert_int_equal(gi.dead, 0); /* attempt 1's late CY_DEAD was ignored */
    probe_free(&p);
}

static cy_outcome slow_handler(const cy_context *ctx, const cy_received *m)
{
    struct probe *p = ctx->user;
    size_t i = value_index(m);
    pthread_mutex_lock(&p->mu);
    p->n++;
    if (i < p->cap)
        p->count[i]++;
    if (m->attempt != 1)
        violation(p, "message %zu delivered again (attempt %" PRIu32 ")", i, m->attempt);
    pthread_mutex_unlock(&p->mu);
    sleep_ms(1000); /* five leases */
    pthread_mutex_lock(&p->mu);
    p->finished++;
    pthread_mutex_unlock(&p->mu);
    return CY_DONE;
}

static void test_lease_extension(void **state)
{
    struct fx *f = *state;
    publish_n(f->c, "long", 0, 3);
    struct probe p;
    probe_init(&p, 3);
    cy_serve_opts o = serve_opts(CY_QUEUE, "long", "g", 4);
    o.batch_size = 1; /* every worker receives on its own: a lapsed lease would show */
    o.lease_ms = 200;
    o.deadline_ms = 5000;
    cy_server *s;
    OK(f->c, cy_serve_start(f->c, &o, (cy_handler){slow_handler, &p}, &s));
    bool all = wait_count(&p, &p.finished, 3, 20000);
    OK(f->c, cy_serve_stop(s));
    assert_true(all);
    if (p.violation)
        fail_msg("%s", p.why);
    assert_int_equal(p.n, 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(p.count[i], 1);
    struct group_info gi = group_get(f->c, "long", "queue", "g");
    assert_int_equal(gi.in_flight + gi.lag, 0);
    probe_free(&p);
}

/* ---- FIFO ------------------------------------------------------------------------------- */

#define FIFO_KEYS 8
#define FIFO_PER_KEY 40

static cy_outcome fifo_handler(const cy_context *ctx, const cy_received *m)
{
    struct probe *p = ctx->user;
    unsigned key = 0, seq = 0;
    if (!m->key || sscanf(m->key, "k%u", &key) != 1 || key >= FIFO_KEYS ||
        sscanf((const char *)m->value, "%u", &seq) != 1) {
        pthread_mutex_lock(&p->mu);
        violation(p, "unexpected message");
        pthread_mutex_unlock(&p->mu);
        return CY_DONE;
    }
    pthread_mutex_lock(&p->mu);
    if (p->busy[key])
        violation(p, "key %u handled twice at once", key);
    if (seq != p->next_seq[key])
        violation(p, "key %u: seq %u after %u", key, seq, p->next_seq[key]);
    p->busy[key] = true;
    p->next_seq[key] = seq + 1;
    unsigned nap = rand_ms(p, 3);
    pthread_mutex_unlock(&p->mu);
    sleep_ms(nap);
    pthread_mutex_lock(&p->mu);
    p->busy[key] = false;
    p->n++;
    pthread_mutex_unlock(&p->mu);
    return CY_DONE;
}

static void test_fifo_order(void **state)
{
    struct fx *f = *state;
    /* Keys interleaved in a shuffled order, each key's seq counting up. */
    uint64_t seed = 42;
    unsigned next[FIFO_KEYS] = {0};
    size_t total = FIFO_KEYS * FIFO_PER_KEY, sent = 0;
    while (sent < total) {
        cy_message msgs[50];
        char vals[50][16], keys[50][8];
        size_t m = 0;
        while (m < 50 && sent < total) {
            unsigned k = (unsigned)(tu_rand(&seed) % FIFO_KEYS);
            if (next[k] == FIFO_PER_KEY)
                continue;
            snprintf(vals[m], sizeof vals[m], "%u", next[k]++);
            snprintf(keys[m], sizeof keys[m], "k%u", k);
            memset(&msgs[m], 0, sizeof msgs[m]);
            msgs[m].value = vals[m];
            msgs[m].value_len = strlen(vals[m]);
            msgs[m].key = keys[m];
            m++;
            sent++;
        }
        OK(f->c, cy_publish(f->c, "fifo", msgs, m, NULL, NULL));
    }
    struct probe p;
    probe_init(&p, 0);
    cy_serve_opts o = serve_opts(CY_FIFO, "fifo", "g", 4);
    o.batch_size = 20;
    cy_server *s;
    OK(f->c, cy_serve_start(f->c, &o, (cy_handler){fifo_handler, &p}, &s));
    bool all = wait_count(&p, &p.n, total, 60000);
    OK(f->c, cy_serve_stop(s));
    assert_true(all);
    if (p.violation)
        fail_msg("%s", p.why);
    for (unsigned k = 0; k < FIFO_KEYS; k++)
        assert_int_equal(p.next_seq[k], FIFO_PER_KEY);
    struct group_info gi = group_get(f->c, "fifo", "fifo", "g");
    assert_int_equal(gi.in_flight + gi.lag, 0);
    probe_free(&p);
}

/* k0's message 5 fails once: the later k0 messages its batch held are
 * released with it, so k0 goes on at 5 again, never at 6. */
static cy_outcome fifo_retry_handler(const cy_context *ctx, const cy_received *m)
{
    struct probe *p = ctx->user;
    unsigned key = 0, seq = 0;
    if (!m->key || sscanf(m->key, "k%u", &key) != 1 || key >= FIFO_KEYS ||
        sscanf((const char *)m->value, "%u", &seq) != 1)
        return CY_DONE;
    pthread_mutex_lock(&p->mu);
    if (seq != p->next_seq[key])
        violation(p, "key %u: seq %u when %u was due", key, seq, p->next_seq[key]);
    bool fail = key == 0 && seq == 5 && m->attempt == 1;
    if (!fail) {
        p->next_seq[key] = seq + 1;
        p->n++;
    }
    pthread_mutex_unlock(&p->mu);
    return fail ? CY_RETRY : CY_DONE;
}

static void test_fifo_retry_keeps_order(void **state)
{
    struct fx *f = *state;
    cy_queue_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.retry_count = 1;
    cfg.retry_schedule[0] = 30;
    OK(f->c, cy_queue_configure(f->c, CY_FIFO, "fifo", "g", &cfg));
    const unsigned keys = 3, per_key = 20;
    for (unsigned i = 0; i < keys * per_key; i++) {
        char val[16], key[8];
        snprintf(val, sizeof val, "%u", i / keys);
        snprintf(key, sizeof key, "k%u", i % keys);
        cy_message m;
        memset(&m, 0, sizeof m);
        m.value = val;
        m.value_len = strlen(val);
        m.key = key;
        OK(f->c, cy_publish(f->c, "fifo", &m, 1, NULL, NULL));
    }
    struct probe p;
    probe_init(&p, 0);
    cy_serve_opts o = serve_opts(CY_FIFO, "fifo", "g", 4);
    o.batch_size = 30; /* each batch holds ~10 messages of a key */
    cy_server *s;
    OK(f->c, cy_serve_start(f->c, &o, (cy_handler){fifo_retry_handler, &p}, &s));
    bool all = wait_count(&p, &p.n, keys * per_key, 20000);
    OK(f->c, cy_serve_stop(s));
    assert_true(all);
    if (p.violation)
        fail_msg("%s", p.why);
    for (unsigned k = 0; k < keys; k++)
        assert_int_equal(p.next_seq[k], per_key);
    struct group_info gi = group_get(f->c, "fifo", "fifo", "g");
    assert_int_equal(gi.in_flight + gi.waiting_retry + gi.dead + gi.lag, 0);
    probe_free(&p);
}

/* ---- stream -------------------------------------------------------------------------------- */

static cy_outcome stream_handler(const cy_context *ctx, const cy_received *m)
{
    struct probe *p = ctx->user;
    size_t i = (size_t)m->offset;
    pthread_mutex_lock(&p->mu);
    if (value_index(m) != i)
        violation(p, "offset %zu carries another value", i);
    unsigned nap = rand_ms(p, 15);
    if (i == p->block_index) {
        while (!p->release)
            pthread_cond_wait(&p->cv, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    sleep_ms(nap); /* completions in a random order */
    pthread_mutex_lock(&p->mu);
    if (i < p->cap)
        p->count[i]++;
    p->n++;
    pthread_mutex_unlock(&p->mu);
    return CY_DONE;
}

static void test_stream_commits_in_order(void **state)
{
    struct fx *f = *state;
    const size_t n = 40;
    publish_n(f->c, "events", 0, n);
    struct probe p;
    probe_init(&p, n);
    p.block_index = 25;
    cy_serve_opts o = serve_opts(CY_STREAM, "events", "g", 4);
    cy_server *s;
    OK(f->c, cy_serve_start(f->c, &o, (cy_handler){stream_handler, &p}, &s));
    /* 26..29 finish while 25 is held: the cursor must reach 25 and stay. */
    assert_true(wait_count(&p, &p.n, 29, 10000));
    uint64_t give_up = clock_mono_ms() + 5000;
    struct group_info gi;
    do {
        gi = group_get(f->c, "events", "stream", "g");
        if (gi.cursor0 != 25)
            sleep_ms(10);
    } while (gi.cursor0 != 25 && clock_mono_ms() < give_up);
    assert_int_equal(gi.cursor0, 25);
    sleep_ms(100);
    assert_int_equal(group_get(f->c, "events", "stream", "g").cursor0, 25);
    pthread_mutex_lock(&p.mu);
    for (size_t i = 30; i < n; i++)
        if (p.count[i])
            fail_msg("offset %zu handled before its batch's 25 was done", i);
    p.release = true;
    pthread_cond_broadcast(&p.cv);
    pthread_mutex_unlock(&p.mu);
    bool all = wait_count(&p, &p.n, n, 10000);
    OK(f->c, cy_serve_stop(s));
    assert_true(all);
    if (p.violation)
        fail_msg("%s", p.why);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(p.count[i], 1);
    assert_int_equal(group_get(f->c, "events", "stream", "g").cursor0, n);

    /* After a reopen the group goes on right after the last message. */
    reopen(f);
    publish_n(f->c, "events", n, 1);
    cy_receive_opts ro;
    memset(&ro, 0, sizeof ro);
    cy_batch b;
    OK(f->c, cy_receive(f->c, CY_STREAM, "events", "g", &ro, &b));
    assert_int_equal(b.n, 1);
    assert_int_equal(b.msgs[0].offset, n);
    cy_batch_free(&b);
    probe_free(&p);
}

static void test_stream_partitions(void **state)
{
    struct fx *f = *state;
    const size_t n = 90;
    uint32_t parts = 0;
    OK(f->c, cy_topic_configure(f->c, "wide", 3, &parts));
    assert_int_equal(parts, 3);
    publish_n(f->c, "wide", 0, n); /* keyless: spread over the partitions */
    struct probe p;
    probe_init(&p, n);
    cy_serve_opts o = serve_opts(CY_STREAM, "wide", "g", 4);
    o.batch_size = 25;
    cy_server *s;
    OK(f->c, cy_serve_start(f->c, &o, (cy_handler){count_handler, &p}, &s));
    bool all = wait_count(&p, &p.n, n, 20000);
    sleep_ms(200); /* a duplicate would show up now */
    OK(f->c, cy_serve_stop(s));
    assert_true(all);
    for (size_t i = 0; i < n; i++)
        if (p.count[i] != 1)
            fail_msg("message %zu handled %u times", i, p.count[i]);
    struct group_info gi = group_get(f->c, "wide", "stream", "g");
    assert_int_equal(gi.lag, 0); /* every partition committed to its end */
    probe_free(&p);
}

static cy_outcome stream_retry_handler(const cy_context *ctx, const cy_received *m)
{
    struct probe *p = ctx->user;
    size_t i = (size_t)m->offset;
    unsigned nap = 0;
    pthread_mutex_lock(&p->mu);
    if (i < p->cap)
        p->count[i]++;
    p->n++;
    nap = rand_ms(p, 5);
    pthread_mutex_unlock(&p->mu);
    sleep_ms(nap);
    return i == 13 ? CY_RETRY : CY_DONE;
}

static void test_stream_retry_and_cursor(void **state)
{
    struct fx *f = *state;
    const size_t n = 30;
    publish_n(f->c, "ticks", 0, n);
    struct probe p;
    probe_init(&p, n);
    cy_serve_opts o = serve_opts(CY_STREAM, "ticks", "g", 4);
    cy_server *s;
    OK(f->c, cy_serve_start(f->c, &o, (cy_handler){stream_retry_handler, &p}, &s));
    /* 13 keeps failing: its batch comes back from 13 on, again and again. */
    uint64_t give_up = clock_mono_ms() + 10000;
    for (;;) {
        pthread_mutex_lock(&p.mu);
        bool enough = p.count[13] >= 3;
        pthread_mutex_unlock(&p.mu);
        if (enough || clock_mono_ms() > give_up)
            break;
        sleep_ms(10);
    }
    OK(f->c, cy_serve_stop(s));
    for (size_t i = 0; i < 13; i++)
        assert_int_equal(p.count[i], 1); /* committed: never again */
    assert_true(p.count[13] >= 3);
    assert_true(p.count[14] >= 2); /* after the retried one: delivered again */
    assert_int_equal(group_get(f->c, "ticks", "stream", "g").cursor0, 13);

    reopen(f);
    cy_receive_opts ro;
    memset(&ro, 0, sizeof ro);
    cy_batch b;
    OK(f->c, cy_receive(f->c, CY_STREAM, "ticks", "g", &ro, &b));
    assert_true(b.n > 0);
    assert_int_equal(b.msgs[0].offset, 13); /* right after 12, the last contiguous done */
    cy_batch_free(&b);
    probe_free(&p);
}

/* ---- stopping ------------------------------------------------------------------------------- */

static cy_outcome stop_handler(const cy_context *ctx, const cy_received *m)
{
    struct probe *p = ctx->user;
    size_t i = value_index(m);
    pthread_mutex_lock(&p->mu);
    p->running++;
    if (i < p->cap)
        p->count[i]++;
    pthread_mutex_unlock(&p->mu);
    sleep_ms(400);
    pthread_mutex_lock(&p->mu);
    p->finished++;
    pthread_mutex_unlock(&p->mu);
    return CY_DONE;
}

static void test_graceful_stop(void **state)
{
    struct fx *f = *state;
    publish_n(f->c, "stopme", 0, 8);
    struct probe p;
    probe_init(&p, 8);
    cy_serve_opts o = serve_opts(CY_QUEUE, "stopme", "g", 4);
    o.batch_size = 8;  /* 4 run, 4 wait for a worker */
    o.lease_ms = 3000; /* the unstarted ones come back at once: released, not expired */
    cy_server *s;
    OK(f->c, cy_serve_start(f->c, &o, (cy_handler){stop_handler, &p}, &s));
    assert_true(wait_count(&p, &p.running, 4, 10000));
    OK(f->c, cy_serve_stop(s));
    pthread_mutex_lock(&p.mu);
    size_t running = p.running, finished = p.finished;
    pthread_mutex_unlock(&p.mu);
    assert_int_equal(finished, running); /* every started handler finished */
    assert_int_equal(running, 4);

    /* After a restart: the handled ones are gone, the others are there. */
    reopen(f);
    cy_receive_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.batch_size = 100;
    ro.batch_wait_ms = 200;
    cy_batch b;
    OK(f->c, cy_receive(f->c, CY_QUEUE, "stopme", "g", &ro, &b));
    assert_int_equal(b.n, 8 - running);
    for (size_t i = 0; i < b.n; i++) {
        size_t v = value_index(&b.msgs[i]);
        if (v >= 8 || p.count[v])
            fail_msg("message %zu was handled, yet delivered again", v);
    }
    cy_batch_free(&b);
    probe_free(&p);
}

static cy_outcome never_handler(const cy_context *ctx, const cy_received *m)
{
    (void)ctx;
    (void)m;
    fail_msg("no message was published");
    return CY_DONE;
}

static void test_stop_idle_is_prompt(void **state)
{
    struct fx *f = *state;
    static const cy_mode modes[] = {CY_QUEUE, CY_FIFO, CY_STREAM};
    for (size_t i = 0; i < 3; i++) {
        cy_serve_opts o = serve_opts(modes[i], "empty", "g", 3);
        o.batch_wait_ms = 300;
        cy_server *s;
        OK(f->c, cy_serve_start(f->c, &o, (cy_handler){never_handler, NULL}, &s));
        sleep_ms(50);
        uint64_t t0 = clock_mono_ms();
        OK(f->c, cy_serve_stop(s));
        uint64_t took = clock_mono_ms() - t0;
        if (took > 1000)
            fail_msg("mode %d: stop took %" PRIu64 " ms", (int)modes[i], took);
    }
}

static void test_arguments(void **state)
{
    struct fx *f = *state;
    cy_server *s = (cy_server *)f;
    cy_serve_opts o = serve_opts(CY_QUEUE, "t", "g", 1);
    cy_handler h = {count_handler, NULL};
    assert_int_equal(cy_serve_start(NULL, &o, h, &s), CY_EINVAL);
    assert_null(s);
    assert_int_equal(cy_serve_start(f->c, NULL, h, &s), CY_EINVAL);
    assert_int_equal(cy_serve_start(f->c, &o, (cy_handler){NULL, NULL}, &s), CY_EINVAL);
    assert_int_equal(cy_serve_start(f->c, &o, h, NULL), CY_EINVAL);
    o.topic = NULL;
    assert_int_equal(cy_serve_start(f->c, &o, h, &s), CY_EINVAL);
    o = serve_opts((cy_mode)7, "t", "g", 1);
    assert_int_equal(cy_serve_start(f->c, &o, h, &s), CY_EINVAL);
    assert_null(s);
    assert_int_equal(cy_serve_stop(NULL), 0);

    const char *ids[] = {"0:0"};
    assert_int_equal(cy_dead_letter(f->c, CY_STREAM, "t", "g", ids, 1), CY_EINVAL);
    assert_int_equal(cy_dead_letter(NULL, CY_QUEUE, "t", "g", ids, 1), CY_EINVAL);
    /* cy_dead_letter on its own: straight to the DLQ, retries left or not. */
    cy_queue_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.retry_count = 1;
    cfg.retry_schedule[0] = 60000;
    cfg.dlq_topic = "t-dlq";
    OK(f->c, cy_queue_configure(f->c, CY_FIFO, "t", "g", &cfg));
    publish_n(f->c, "t", 0, 1);
    cy_batch b;
    OK(f->c, cy_receive(f->c, CY_FIFO, "t", "g", NULL, &b));
    assert_int_equal(b.n, 1);
    const char *id = b.msgs[0].msg_id;
    OK(f->c, cy_dead_letter(f->c, CY_FIFO, "t", "g", &id, 1));
    cy_batch_free(&b);
    cy_receive_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.start_earliest = true;
    OK(f->c, cy_receive(f->c, CY_STREAM, "t-dlq", "look", &ro, &b));
    assert_int_equal(b.n, 1);
    cy_batch_free(&b);
}

/* ---- over http ------------------------------------------------------------------------------- */

/* Start coyoted on listen_port (0: any) over dir; its port from the ready
 * line (no sleeping), 0 on failure. */
static unsigned start_coyoted(const char *bin, const char *dir, unsigned listen_port,
                              struct coyoted_proc *sp)
{
    static const char *const extra[] = {"--fsync", "never", NULL};
    if (coyoted_start(sp, bin, dir, listen_port, extra, true))
        return 0;
    return sp->port;
}

/* NULL (and the test skipped) without an http backend or a coyoted. */
static const char *http_or_skip(void)
{
    cy_client *probe = NULL;
    if (cy_open("http://127.0.0.1:9", NULL, &probe) == CY_EINVAL)
        skip();
    cy_close(probe);
    const char *bin = coyoted_path(COYOTED_PATH_OR_NULL);
    if (!bin)
        skip();
    return bin;
}

static void test_http_queue(void **state)
{
    (void)state;
    const char *bin = http_or_skip();
    char *dir = tu_tempdir("serve-http");
    struct coyoted_proc sp;
    unsigned port = start_coyoted(bin, dir, 0, &sp);
    assert_true(port > 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", port);
    cy_options o = fast_opts();
    cy_client *c;
    OK(NULL, cy_open(url, &o, &c));
    exactly_once_case(c, 500, CY_QUEUE);
    exactly_once_case(c, 300, CY_FIFO);
    cy_close(c);
    coyoted_stop(&sp, SIGTERM);
    tu_rmtree(dir);
}

static void test_http_server_restart(void **state)
{
    (void)state;
    const char *bin = http_or_skip();
    char *dir = tu_tempdir("serve-restart");
    struct coyoted_proc sp;
    unsigned port = start_coyoted(bin, dir, 0, &sp);
    assert_true(port > 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", port);
    cy_options o = fast_opts();
    o.timeout_ms = 2000;
    cy_client *c;
    OK(NULL, cy_open(url, &o, &c));
    publish_n(c, "jobs", 0, 100);
    struct probe p;
    probe_init(&p, 200);
    cy_serve_opts so = serve_opts(CY_QUEUE, "jobs", "g", 4);
    cy_server *s;
    OK(c, cy_serve_start(c, &so, (cy_handler){count_handler, &p}, &s));
    assert_true(wait_count(&p, &p.n, 100, 20000));
    sleep_ms(200); /* the acks go out */

    coyoted_stop(&sp, SIGTERM);
    sleep_ms(300); /* receives fail meanwhile */
    unsigned again = coyoted_restart(&sp, true) ? 0 : sp.port;
    if (!again) {
        cy_serve_stop(s);
        cy_close(c);
        probe_free(&p);
        tu_rmtree(dir);
        skip(); /* the port was taken meanwhile */
    }
    publish_n(c, "jobs", 100, 100);
    bool all = wait_count(&p, &p.n, 200, 30000);
    int rc = cy_serve_stop(s);
    assert_true(all);
    assert_int_equal(rc, CY_ECONNECT); /* the first error met, and survived */
    for (size_t i = 0; i < 200; i++)
        if (p.count[i] < 1)
            fail_msg("message %zu never handled", i);
    cy_close(c);
    coyoted_stop(&sp, SIGTERM);
    probe_free(&p);
    tu_rmtree(dir);
}

#define CASE(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        CASE(test_queue_exactly_once),
        CASE(test_retry_then_done),
        CASE(test_dead_letters_at_once),
        CASE(test_deadline_nacks),
        CASE(test_lease_extension),
        CASE(test_fifo_order),
        CASE(test_fifo_retry_keeps_order),
        CASE(test_stream_commits_in_order),
        CASE(test_stream_partitions),
        CASE(test_stream_retry_and_cursor),
        CASE(test_graceful_stop),
        CASE(test_stop_idle_is_prompt),
        CASE(test_arguments),
        cmocka_unit_test(test_http_queue),
        cmocka_unit_test(test_http_server_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
