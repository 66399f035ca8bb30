/*
 * test_middleware.c — the decorators of coyote.h (src/client/middleware.c):
 * cy_mw_logging, cy_mw_zstd, cy_mw_metrics, cy_handler_free and the
 * publisher side cy_send_*.
 *
 * The decorators are called directly with fake inner handlers and a
 * capturing fake send (no broker); one end-to-end case publishes through
 * cy_send_zstd(cy_send_client(c)) on the embedded backend and consumes with
 * cy_serve through cy_mw_zstd. Leaks (cy_handler_free / cy_send_free) are
 * left to LSan in the sanitizer build.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zstd.h>

#include "client/client_int.h"
#include "coyote.h"
#include "testutil.h"

/* ---- fakes -------------------------------------------------------------------------- */

/* The innermost handler: records what it saw, returns `result`. */
struct inner {
    cy_outcome result;
    unsigned calls;
    unsigned sleep_ms;
    uint8_t *value;
    size_t value_len;
    size_t n_headers;
    bool saw_encoding;
    char first_header[64];
    /* composition: what the outer decorators had done when we ran */
    cy_metrics *metrics;
    uint64_t handled_during;
    FILE *log;
    long log_pos_during;
};

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static cy_outcome inner_fn(const cy_context *ctx, const cy_received *msg)
{
    struct inner *in = ctx->user;
    in->calls++;
    free(in->value);
    in->value = malloc(msg->value_len ? msg->value_len : 1);
    assert_non_null(in->value);
    if (msg->value_len)
        memcpy(in->value, msg->value, msg->value_len);
    in->value_len = msg->value_len;
    in->n_headers = msg->n_headers;
    in->saw_encoding = false;
    in->first_header[0] = 0;
    for (size_t i = 0; i < msg->n_headers; i++) {
        if (strcasecmp(msg->headers[i].name, "content-encoding") == 0)
            in->saw_encoding = true;
        if (i == 0)
            snprintf(in->first_header, sizeof in->first_header, "%s=%s", msg->headers[i].name,
                     msg->headers[i].value);
    }
    if (in->metrics)
        in->handled_during = __atomic_load_n(&in->metrics->handled, __ATOMIC_RELAXED);
    if (in->log) {
        fflush(in->log);
        in->log_pos_during = ftell(in->log);
    }
    if (in->sleep_ms)
        sleep_ms(in->sleep_ms);
    return in->result;
}

/* What a capturing send was given (deep copies). */
struct capture {
    unsigned calls;
    char topic[64];
    uint8_t *value;
    size_t value_len;
    cy_header headers[8];
    char names[8][64], values[8][64];
    size_t n_headers;
    int rc;
};

static int capture_fn(void *arg, const char *topic, const cy_message *m, cy_publish_result *r)
{
    struct capture *c = arg;
    c->calls++;
    snprintf(c->topic, sizeof c->topic, "%s", topic);
    free(c->value);
    c->value = malloc(m->value_len ? m->value_len : 1);
    assert_non_null(c->value);
    if (m->value_len)
        memcpy(c->value, m->value, m->value_len);
    c->value_len = m->value_len;
    assert_true(m->n_headers <= 8);
    c->n_headers = m->n_headers;
    for (size_t i = 0; i < m->n_headers; i++) {
        snprintf(c->names[i], sizeof c->names[i], "%s", m->headers[i].name);
        snprintf(c->values[i], sizeof c->values[i], "%s", m->headers[i].value);
        c->headers[i].name = c->names[i];
        c->headers[i].value = c->values[i];
    }
    if (r) {
        memset(r, 0, sizeof *r);
        r->n = 1;
        r->parts[0].partition = 0;
        r->parts[0].start_offset = 41;
        r->parts[0].end_offset = 42;
    }
    return c->rc;
}

static cy_received received_from(const struct capture *c, cy_mode mode)
{
    cy_received r;
    memset(&r, 0, sizeof r);
    r.partition = 0;
    r.offset = 5;
    snprintf(r.msg_id, sizeof r.msg_id, "0:5");
    snprintf(r.topic, sizeof r.topic, "t~0");
    r.value = c->value;
    r.value_len = c->value_len;
    r.headers = c->headers;
    r.n_headers = c->n_headers;
    r.attempt = mode == CY_STREAM ? 0 : 1;
    return r;
}

static cy_outcome run(cy_handler h, cy_mode mode, const cy_received *msg)
{
    cy_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.mode = mode;
    ctx.topic = "t";
    ctx.group = "g";
    ctx.user = h.arg;
    return h.fn(&ctx, msg);
}

/* A compressible value of n bytes. */
static uint8_t *text_value(size_t n)
{
    uint8_t *v = malloc(n);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = (uint8_t)("the quick brown fox jumps over the lazy dog "[i % 44] + (i / 997) % 3);
    return v;
}

static cy_message message_of(const void *v, size_t n, const cy_header *h, size_t nh)
{
    cy_message m;
    memset(&m, 0, sizeof m);
    m.value = v;
    m.value_len = n;
    m.headers = h;
    m.n_headers = nh;
    return m;
}

/* ---- zstd ----------------------------------------------------------------------------- */

static void test_zstd_round_trip(void **state)
{
    (void)state;
    struct capture cap = {0};
    cy_send s;
    assert_int_equal(cy_send_zstd((cy_send){capture_fn, &cap}, 0, 64, &s), 0);
    size_t n = 100000;
    uint8_t *v = text_value(n);
    cy_header hd[1] = {{"media_type", "text/plain"}};
    cy_message m = message_of(v, n, hd, 1);
    cy_publish_result r;
    assert_int_equal(cy_send_message(s, "t", &m, &r), 0);
    assert_int_equal(cap.calls, 1);
    assert_string_equal(cap.topic, "t");
    assert_int_equal(r.parts[0].start_offset, 41); /* result passed through */
    assert_true(cap.value_len < n / 4);
    assert_int_equal(cap.n_headers, 2);
    assert_string_equal(cap.names[0], "media_type");
    assert_string_equal(cap.names[1], "content-encoding");
    assert_string_equal(cap.values[1], "zstd");

    struct inner in = {.result = CY_DONE};
    cy_handler h;
    assert_int_equal(cy_mw_zstd((cy_handler){inner_fn, &in}, &h), 0);
    cy_received rcv = received_from(&cap, CY_QUEUE);
    assert_int_equal(run(h, CY_QUEUE, &rcv), CY_DONE);
    assert_int_equal(in.calls, 1);
    assert_int_equal(in.value_len, n);
    assert_memory_equal(in.value, v, n);
    assert_false(in.saw_encoding);
    assert_int_equal(in.n_headers, 1);
    assert_string_equal(in.first_header, "media_type=text/plain");

    /* Header names and the encoding match case-insensitively. */
    snprintf(cap.names[1], sizeof cap.names[1], "Content-Encoding");
    snprintf(cap.values[1], sizeof cap.values[1], "ZSTD");
    in.result = CY_RETRY;
    assert_int_equal(run(h, CY_QUEUE, &rcv), CY_RETRY);
    assert_int_equal(in.value_len, n);
    assert_memory_equal(in.value, v, n);
    assert_false(in.saw_encoding);

    cy_handler_free(h);
    cy_send_free(s);
    free(v);
    free(in.value);
    free(cap.value);
}

static void test_zstd_passes_plain_and_other_encodings(void **state)
{
    (void)state;
    struct inner in = {.result = CY_DONE};
    cy_handler h;
    assert_int_equal(cy_mw_zstd((cy_handler){inner_fn, &in}, &h), 0);
    struct capture cap = {0};
    cap.value = (uint8_t *)strdup("plain");
    cap.value_len = 5;
    cy_received rcv = received_from(&cap, CY_QUEUE);
    assert_int_equal(run(h, CY_QUEUE, &rcv), CY_DONE);
    assert_int_equal(in.value_len, 5);
    assert_memory_equal(in.value, "plain", 5);

    cy_header gz[1] = {{"content-encoding", "gzip"}};
    rcv.headers = gz;
    rcv.n_headers = 1;
    assert_int_equal(run(h, CY_QUEUE, &rcv), CY_DONE);
    assert_int_equal(in.calls, 2);
    assert_true(in.saw_encoding); /* not ours: left alone */
    cy_handler_free(h);
    free(in.value);
    free(cap.value);
}

static void test_zstd_corrupt_is_dead(void **state)
{
    (void)state;
    struct inner in = {.result = CY_DONE};
    cy_handler h;
    assert_int_equal(cy_mw_zstd((cy_handler){inner_fn, &in}, &h), 0);
    cy_header hd[1] = {{"content-encoding", "zstd"}};
    uint8_t junk[64];
    memset(junk, 0xab, sizeof junk);
    cy_received rcv;
    memset(&rcv, 0, sizeof rcv);
    rcv.value = junk;
    rcv.value_len = sizeof junk;
    rcv.headers = hd;
    rcv.n_headers = 1;
    assert_int_equal(run(h, CY_QUEUE, &rcv), CY_DEAD);

    /* A valid frame cut short. */
    size_t n = 5000;
    uint8_t *v = text_value(n);
    uint8_t frame[8192];
    size_t fl = ZSTD_compress(frame, sizeof frame, v, n, 3);
    assert_false(ZSTD_isError(fl));
    rcv.value = frame;
    rcv.value_len = fl - 3;
    assert_int_equal(run(h, CY_QUEUE, &rcv), CY_DEAD);
    /* Empty value. */
    rcv.value = NULL;
    rcv.value_len = 0;
    assert_int_equal(run(h, CY_QUEUE, &rcv), CY_DEAD);
    assert_int_equal(in.calls, 0);
    cy_handler_free(h);
    free(v);
}

/* A frame without a content size (streamed) is decompressed too. */
static void test_zstd_unknown_size(void **state)
{
    (void)state;
    size_t n = 3 * 1024 * 1024 + 17; /* several streaming output blocks */
    uint8_t *v = text_value(n);
    ZSTD_CStream *cs = ZSTD_createCStream();
    assert_non_null(cs);
    ZSTD_initCStream(cs, 3);
    size_t cap = ZSTD_compressBound(n);
    uint8_t *frame = malloc(cap);
    assert_non_null(frame);
    ZSTD_outBuffer ob = {frame, cap, 0};
    ZSTD_inBuffer ib = {v, n, 0};
    while (ib.pos < ib.size)
        assert_false(ZSTD_isError(ZSTD_compressStream(cs, &ob, &ib)));
    assert_int_equal(ZSTD_endStream(cs, &ob), 0);
    ZSTD_freeCStream(cs);
    assert_true(ZSTD_getFrameContentSize(frame, ob.pos) == ZSTD_CONTENTSIZE_UNKNOWN);

    struct inner in = {.result = CY_DONE};
    cy_handler h;
    assert_int_equal(cy_mw_zstd((cy_handler){inner_fn, &in}, &h), 0);
    cy_header hd[1] = {{"content-encoding", "zstd"}};
    cy_received rcv;
    memset(&rcv, 0, sizeof rcv);
    rcv.value = frame;
    rcv.value_len = ob.pos;
    rcv.headers = hd;
    rcv.n_headers = 1;
    assert_int_equal(run(h, CY_QUEUE, &rcv), CY_DONE);
    assert_int_equal(in.value_len, n);
    assert_memory_equal(in.value, v, n);
    assert_int_equal(in.n_headers, 0);
    cy_handler_free(h);
    free(frame);
    free(v);
    free(in.value);
}

static void test_send_zstd_below_min_bytes(void **state)
{
    (void)state;
    struct capture cap = {0};
    cy_send s;
    assert_int_equal(cy_send_zstd((cy_send){capture_fn, &cap}, 5, 100, &s), 0);
    uint8_t *v = text_value(99);
    cy_message m = message_of(v, 99, NULL, 0);
    assert_int_equal(cy_send_message(s, "t", &m, NULL), 0);
    assert_int_equal(cap.value_len, 99);
    assert_memory_equal(cap.value, v, 99);
    assert_int_equal(cap.n_headers, 0);
    /* At min_bytes it is compressed. */
    free(v);
    v = text_value(100);
    m = message_of(v, 100, NULL, 0);
    assert_int_equal(cy_send_message(s, "t", &m, NULL), 0);
    assert_int_equal(cap.n_headers, 1);
    assert_string_equal(cap.names[0], "content-encoding");
    /* The inner send's error comes back. */
    cap.rc = CY_ECONNECT;
    assert_int_equal(cy_send_message(s, "t", &m, NULL), CY_ECONNECT);
    cy_send_free(s);
    /* Bad levels and arguments. */
    assert_int_equal(cy_send_zstd((cy_send){capture_fn, &cap}, 1000, 0, &s), CY_EINVAL);
    assert_int_equal(cy_send_zstd((cy_send){NULL, NULL}, 0, 0, &s), CY_EINVAL);
    assert_int_equal(cy_send_message((cy_send){NULL, NULL}, "t", &m, NULL), CY_EINVAL);
    free(v);
    free(cap.value);
}

/* ---- logging ------------------------------------------------------------------------------ */

static char *read_all(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    assert_true(n >= 0);
    char *s = calloc(1, (size_t)n + 1);
    assert_non_null(s);
    rewind(f);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    fseek(f, 0, SEEK_END);
    return s;
}

static void test_logging_format(void **state)
{
    (void)state;
    FILE *log = tmpfile();
    assert_non_null(log);
    struct inner in = {.result = CY_RETRY};
    cy_handler h;
    assert_int_equal(cy_mw_logging((cy_handler){inner_fn, &in}, log, &h), 0);
    struct capture cap = {0};
    cap.value = (uint8_t *)strdup("x");
    cap.value_len = 1;
    cy_received rcv = received_from(&cap, CY_QUEUE);
    rcv.attempt = 3;
    assert_int_equal(run(h, CY_QUEUE, &rcv), CY_RETRY);
    in.result = CY_DEAD;
    rcv.offset = 7;
    rcv.attempt = 0;
    assert_int_equal(run(h, CY_STREAM, &rcv), CY_DEAD);
    in.result = CY_DONE;
    in.sleep_ms = 20;
    assert_int_equal(run(h, CY_FIFO, &rcv), CY_DONE);

    char *out = read_all(log);
    char *save = NULL;
    char *l1 = strtok_r(out, "\n", &save);
    char *l2 = strtok_r(NULL, "\n", &save);
    char *l3 = strtok_r(NULL, "\n", &save);
    assert_non_null(l1);
    assert_non_null(l2);
    assert_non_null(l3);
    assert_null(strtok_r(NULL, "\n", &save));
    unsigned long long ms;
    unsigned frac;
    char tail;
    assert_int_equal(sscanf(l1, "msg=0:5 attempt=3 outcome=retry duration_ms=%llu.%3u%c", &ms,
                            &frac, &tail),
                     2);
    assert_int_equal(sscanf(l2, "msg=t~0:7 attempt=0 outcome=dead duration_ms=%llu.%3u%c", &ms,
                            &frac, &tail),
                     2);
    assert_int_equal(sscanf(l3, "msg=0:5 attempt=0 outcome=done duration_ms=%llu.%3u%c", &ms,
                            &frac, &tail),
                     2);
    assert_true(ms >= 20);
    free(out);
    assert_int_equal(cy_mw_logging((cy_handler){inner_fn, &in}, NULL, &h), CY_EINVAL);

    /* The publisher side. */
    rewind(log);
    assert_int_equal(ftruncate(fileno(log), 0), 0);
    struct capture sc = {0};
    cy_send s;
    assert_int_equal(cy_send_logging((cy_send){capture_fn, &sc}, log, &s), 0);
    cy_message m = message_of("hello", 5, NULL, 0);
    cy_publish_result r;
    assert_int_equal(cy_send_message(s, "orders", &m, &r), 0);
    sc.rc = CY_ECONNECT;
    assert_int_equal(cy_send_message(s, "orders", &m, NULL), CY_ECONNECT);
    out = read_all(log);
    char want[256];
    snprintf(want, sizeof want, "publish topic=orders bytes=5 result=%s duration_ms=",
             cy_strerror(CY_ECONNECT));
    assert_non_null(strstr(out, "publish topic=orders bytes=5 result=ok partition=0 offset=41 "
                                "duration_ms="));
    assert_non_null(strstr(out, want));
    free(out);
    cy_send_free(s);
    free(sc.value);

    cy_handler_free(h);
    fclose(log);
    free(in.value);
    free(cap.value);
}

/* Several threads log through one decorator: every line is whole. */
struct log_thread {
    cy_handler h;
};

static cy_outcome quiet_fn(const cy_context *ctx, const cy_received *msg)
{
    return CY_DONE;
}

static void *log_thread_main(void *arg)
{
    struct log_thread *t = arg;
    cy_received rcv;
    memset(&rcv, 0, sizeof rcv);
    snprintf(rcv.msg_id, sizeof rcv.msg_id, "3:1234567");
    rcv.attempt = 1;
    for (int i = 0; i < 500; i++)
        run(t->h, CY_QUEUE, &rcv);
    return NULL;
}

static void test_logging_threads(void **state)
{
    (void)state;
    FILE *log = tmpfile();
    assert_non_null(log);
    struct log_thread t;
    assert_int_equal(cy_mw_logging((cy_handler){quiet_fn, NULL}, log, &t.h), 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, log_thread_main, &t), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    char *out = read_all(log);
    size_t lines = 0;
    char *save = NULL;
    for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        lines++;
        assert_int_equal(strncmp(l, "msg=3:1234567 attempt=1 outcome=done duration_ms=", 49), 0);
    }
    assert_int_equal(lines, 2000);
    free(out);
    cy_handler_free(t.h);
    fclose(log);
}

/* ---- metrics ------------------------------------------------------------------------------ */

static void test_metrics_counts_and_buckets(void **state)
{
    (void)state;
    cy_metrics m;
    memset(&m, 0, sizeof m);
    struct inner in = {.result = CY_DONE};
    cy_handler h;
    assert_int_equal(cy_mw_metrics((cy_handler){inner_fn, &in}, &m, &h), 0);
    struct capture cap = {0};
    cap.value = (uint8_t *)strdup("x");
    cap.value_len = 1;
    cy_received rcv = received_from(&cap, CY_QUEUE);
    cy_outcome seq[] = {CY_DONE, CY_DONE, CY_RETRY, CY_DEAD, CY_DONE, CY_RETRY};
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        in.result = seq[i];
        assert_int_equal(run(h, CY_QUEUE, &rcv), seq[i]);
    }
    assert_int_equal(m.handled, 6);
    assert_int_equal(m.done, 3);
    assert_int_equal(m.retried, 2);
    assert_int_equal(m.dead, 1);
    uint64_t sum = 0;
    for (int i = 0; i < 16; i++)
        sum += m.latency_us_hist[i];
    assert_int_equal(sum, 6);

    /* A slow message: 30 ms lands at or above bucket 9 ([25.6 ms, 51.2 ms)). */
    uint64_t before[16];
    memcpy(before, m.latency_us_hist, sizeof before);
    in.result = CY_DONE;
    in.sleep_ms = 30;
    run(h, CY_QUEUE, &rcv);
    int bucket = -1;
    for (int i = 0; i < 16; i++)
        if (m.latency_us_hist[i] != before[i]) {
            assert_int_equal(m.latency_us_hist[i], before[i] + 1);
            assert_int_equal(bucket, -1);
            bucket = i;
        }
    assert_true(bucket >= 9);
    assert_int_equal(m.handled, 7);
    assert_int_equal(cy_mw_metrics((cy_handler){inner_fn, &in}, NULL, &h), CY_EINVAL);
    cy_handler_free(h);
    free(in.value);
    free(cap.value);
}

/* ---- composition ------------------------------------------------------------------------ */

static void test_composition_order(void **state)
{
    (void)state;
    FILE *log = tmpfile();
    assert_non_null(log);
    cy_metrics m;
    memset(&m, 0, sizeof m);
    struct inner in = {.result = CY_DEAD, .metrics = &m, .log = log, .handled_during = 99};
    cy_handler z, mh, lh;
    assert_int_equal(cy_mw_zstd((cy_handler){inner_fn, &in}, &z), 0);
    assert_int_equal(cy_mw_metrics(z, &m, &mh), 0);
    assert_int_equal(cy_mw_logging(mh, log, &lh), 0);

    struct capture cap = {0};
    cy_send s;
    assert_int_equal(cy_send_zstd((cy_send){capture_fn, &cap}, 1, 0, &s), 0);
    uint8_t *v = text_value(2000);
    cy_message msg = message_of(v, 2000, NULL, 0);
    assert_int_equal(cy_send_message(s, "t", &msg, NULL), 0);
    cy_received rcv = received_from(&cap, CY_QUEUE);
    rcv.attempt = 2;
    assert_int_equal(run(lh, CY_QUEUE, &rcv), CY_DEAD);
    /* The inner ran inside metrics and logging (neither had recorded yet)
     * and saw the decompressed value. */
    assert_int_equal(in.calls, 1);
    assert_int_equal(in.handled_during, 0);
    assert_int_equal(in.log_pos_during, 0);
    assert_int_equal(in.value_len, 2000);
    assert_memory_equal(in.value, v, 2000);
    assert_false(in.saw_encoding);
    assert_int_equal(m.handled, 1);
    assert_int_equal(m.dead, 1);
    char *out = read_all(log);
    assert_int_equal(strncmp(out, "msg=0:5 attempt=2 outcome=dead duration_ms=", 43), 0);
    free(out);

    /* A corrupt value is dead in zstd: metrics and logging still see it. */
    cap.value[cap.value_len / 2] ^= 0x5a;
    cap.value[4] ^= 0xff;
    in.result = CY_DONE;
    assert_int_equal(run(lh, CY_QUEUE, &rcv), CY_DEAD);
    assert_int_equal(m.handled, 2);
    assert_int_equal(m.dead, 2);

    cy_handler_free(lh); /* frees all three decorators, not in */
    cy_send_free(s);
    fclose(log);
    free(v);
    free(in.value);
    free(cap.value);
}

/* ---- freeing ---------------------------------------------------------------------------- */

/* A foreign decorator registered with mw_register_free (as the router does). */
struct foreign {
    cy_handler next;
    unsigned *freed;
};

static cy_outcome foreign_fn(const cy_context *ctx, const cy_received *msg)
{
    const struct foreign *f = ctx->user;
    cy_context inner = *ctx;
    inner.user = f->next.arg;
    return f->next.fn(&inner, msg);
}

static void foreign_free(void *arg, cy_handler *next_out)
{
    struct foreign *f = arg;
    (*f->freed)++;
    *next_out = f->next;
    free(f);
}

static void test_free_chains(void **state)
{
    (void)state;
    assert_int_equal(mw_register_free(foreign_fn, foreign_free), 0);
    assert_int_equal(mw_register_free(foreign_fn, foreign_free), 0); /* idempotent */
    assert_int_equal(mw_register_free(NULL, foreign_free), CY_EINVAL);

    cy_metrics m;
    memset(&m, 0, sizeof m);
    unsigned freed = 0;
    struct inner in = {.result = CY_DONE};
    /* zstd(foreign(metrics(logging(inner)))) */
    cy_handler h1, h2, h3, h4;
    assert_int_equal(cy_mw_logging((cy_handler){inner_fn, &in}, stderr, &h1), 0);
    assert_int_equal(cy_mw_metrics(h1, &m, &h2), 0);
    struct foreign *f = malloc(sizeof *f);
    assert_non_null(f);
    f->next = h2;
    f->freed = &freed;
    h3 = (cy_handler){foreign_fn, f};
    assert_int_equal(cy_mw_zstd(h3, &h4), 0);
    cy_handler_free(h4);
    assert_int_equal(freed, 1);
    /* The user's own handler alone: nothing to free. */
    cy_handler_free((cy_handler){inner_fn, &in});
    cy_handler_free((cy_handler){NULL, NULL});

    /* Publisher chains: logging(zstd(logging(client))). The client is not
     * touched (any pointer will do). */
    cy_send s1, s2, s3;
    cy_send base = cy_send_client((cy_client *)&freed);
    assert_non_null(base.fn);
    assert_int_equal(cy_send_logging(base, stderr, &s1), 0);
    assert_int_equal(cy_send_zstd(s1, 0, 16, &s2), 0);
    assert_int_equal(cy_send_logging(s2, stderr, &s3), 0);
    cy_send_free(s3);
    cy_send_free(base);
    /* LSan (sanitizer build) checks nothing is left. */
}

/* ---- end to end (embedded backend) ------------------------------------------------------ */

struct e2e {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned n;
    uint8_t *value;
    size_t value_len;
    bool saw_encoding;
};

static cy_outcome e2e_handler(const cy_context *ctx, const cy_received *msg)
{
    struct e2e *e = ctx->user;
    pthread_mutex_lock(&e->mu);
    free(e->value);
    e->value = malloc(msg->value_len ? msg->value_len : 1);
    if (e->value && msg->value_len)
        memcpy(e->value, msg->value, msg->value_len);
    e->value_len = msg->value_len;
    for (size_t i = 0; i < msg->n_headers; i++)
        if (strcasecmp(msg->headers[i].name, "content-encoding") == 0)
            e->saw_encoding = true;
    e->n++;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return CY_DONE;
}

static void test_end_to_end_embedded(void **state)
{
    (void)state;
    char *dir = tu_tempdir("mw");
    char url[4200];
    snprintf(url, sizeof url, "file://%s", dir);
    cy_options o;
    memset(&o, 0, sizeof o);
    o.fsync = "never";
    cy_client *c = NULL;
    assert_int_equal(cy_open(url, &o, &c), 0);

    cy_send s;
    assert_int_equal(cy_send_zstd(cy_send_client(c), 0, 128, &s), 0);
    size_t n = 200000;
    uint8_t *v = text_value(n);
    cy_header hd[1] = {{"media_type", "text/plain"}};
    cy_message m = message_of(v, n, hd, 1);
    cy_publish_result r;
    assert_int_equal(cy_send_message(s, "blobs", &m, &r), 0);
    assert_int_equal(r.n, 1);

    /* What is stored is compressed and marked. */
    cy_batch b;
    memset(&b, 0, sizeof b);
    cy_receive_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.start_earliest = true;
    assert_int_equal(cy_receive(c, CY_STREAM, "blobs", "peek", &ro, &b), 0);
    assert_int_equal(b.n, 1);
    assert_true(b.msgs[0].value_len < n / 4);
    bool marked = false;
    for (size_t i = 0; i < b.msgs[0].n_headers; i++)
        if (strcmp(b.msgs[0].headers[i].name, "content-encoding") == 0 &&
            strcmp(b.msgs[0].headers[i].value, "zstd") == 0)
            marked = true;
    assert_true(marked);
    cy_batch_free(&b);

    struct e2e e = {.n = 0};
    pthread_mutex_init(&e.mu, NULL);
    pthread_cond_init(&e.cv, NULL);
    cy_handler h;
    assert_int_equal(cy_mw_zstd((cy_handler){e2e_handler, &e}, &h), 0);
    cy_serve_opts so;
    memset(&so, 0, sizeof so);
    so.mode = CY_QUEUE;
    so.topic = "blobs";
    so.group = "g";
    so.workers = 2;
    so.batch_wait_ms = 100;
    so.start_earliest = true;
    cy_server *srv = NULL;
    assert_int_equal(cy_serve_start(c, &so, h, &srv), 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&e.mu);
    while (e.n == 0 && pthread_cond_timedwait(&e.cv, &e.mu, &until) == 0) {
    }
    unsigned got = e.n;
    pthread_mutex_unlock(&e.mu);
    assert_int_equal(cy_serve_stop(srv), 0);
    assert_int_equal(got, 1);
    assert_int_equal(e.value_len, n);
    assert_memory_equal(e.value, v, n);
    assert_false(e.saw_encoding);

    cy_handler_free(h);
    cy_send_free(s);
    free(e.value);
    pthread_cond_destroy(&e.cv);
    pthread_mutex_destroy(&e.mu);
    free(v);
    assert_int_equal(cy_close(c), 0);
    tu_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zstd_round_trip),
        cmocka_unit_test(test_zstd_passes_plain_and_other_encodings),
        cmocka_unit_test(test_zstd_corrupt_is_dead),
        cmocka_unit_test(test_zstd_unknown_size),
        cmocka_unit_test(test_send_zstd_below_min_bytes),
        cmocka_unit_test(test_logging_format),
        cmocka_unit_test(test_logging_threads),
        cmocka_unit_test(test_metrics_counts_and_buckets),
        cmocka_unit_test(test_composition_order),
        cmocka_unit_test(test_free_chains),
        cmocka_unit_test(test_end_to_end_embedded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
