/*
 * test_router.c — the router of coyote.h (cy_router_*, src/client/router.c),
 * cy_set_dead_reason and cy_dead_letter_reason.
 *
 * Direct dispatch (no server: a fake cy_context and cy_received, reasons
 * caught with dead_reason.h's test hook):
 *   - each media_type to its handler, with the route's arg as ctx->user;
 *     the header name case-insensitive, its value case-sensitive;
 *   - required fields: every type, missing, wrong type, not JSON, not an
 *     object, "number" takes integers and reals, "integer" no reals;
 *   - the fallback, for unknown and missing media types; without one, CY_DEAD
 *     with "no route for media_type '<x>'" / "no media_type header";
 *   - cy_router_add argument checks (bad `required`, duplicates, after the
 *     first dispatch); cy_set_dead_reason outside cy_serve does not crash;
 *   - cy_handler_free on a decorator chain around the router handler frees
 *     the decorators only (ASan catches a double free);
 *   - 4 threads dispatching at once.
 * End to end (embedded backend): cy_serve with the router over a queue
 * group with a dlq_topic; the invalid messages land in the DLQ with the
 * header coyote-dead-letter-reason (skipped, with a message, if the broker
 * does not take the nack's "reason" field), the valid ones are handled.
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
#include <time.h>

#include <cmocka.h>

#include "base/clock.h"
#include "client/dead_reason.h"
#include "coyote.h"
#include "testutil.h"

/* ---- direct dispatch ------------------------------------------------------------------- */

/* What a route handler saw. */
struct seen {
    pthread_mutex_t mu;
    int calls;
    void *user;
    cy_outcome answer;
};

static cy_outcome seen_handler(const cy_context *ctx, const cy_received *m)
{
    struct seen *s = ctx->user;
    (void)m;
    pthread_mutex_lock(&s->mu);
    s->calls++;
    s->user = ctx->user;
    pthread_mutex_unlock(&s->mu);
    return s->answer;
}

static void seen_init(struct seen *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->answer = CY_DONE;
}

/* The reasons cy_set_dead_reason was given on this thread. */
struct reasons {
    int n;
    char last[1200];
};

static void record_reason(void *arg, const cy_context *ctx, const char *reason)
{
    struct reasons *r = arg;
    (void)ctx;
    r->n++;
    snprintf(r->last, sizeof r->last, "%s", reason);
}

/* Dispatch one message with headers name: value (name NULL: none). */
static cy_outcome dispatch(cy_router *r, const char *name, const char *media_type,
                           const char *value)
{
    cy_header hdrs[2] = {{"other", "x"}, {name, media_type}};
    cy_received m;
    memset(&m, 0, sizeof m);
    snprintf(m.msg_id, sizeof m.msg_id, "0:1");
    m.value = (const uint8_t *)value;
    m.value_len = value ? strlen(value) : 0;
    m.headers = hdrs;
    m.n_headers = name ? 2 : 1;
    m.attempt = 1;
    cy_handler h = cy_router_handler(r);
    cy_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.mode = CY_QUEUE;
    ctx.topic = "t";
    ctx.group = "g";
    ctx.user = h.arg;
    return h.fn(&ctx, &m);
}

static void test_routes_by_media_type(void **state)
{
    (void)state;
    struct seen a, b;
    seen_init(&a);
    seen_init(&b);
    b.answer = CY_RETRY;
    struct reasons rs = {0};
    dead_reason_set_hook(record_reason, &rs);
    cy_router *r;
    assert_int_equal(cy_router_new(&r), 0);
    assert_int_equal(cy_router_add(r, "application/a", (cy_handler){seen_handler, &a}, NULL), 0);
    assert_int_equal(cy_router_add(r, "application/b", (cy_handler){seen_handler, &b}, NULL), 0);

    assert_int_equal(dispatch(r, "media_type", "application/a", "x"), CY_DONE);
    assert_int_equal(a.calls, 1);
    assert_ptr_equal(a.user, &a);
    assert_int_equal(dispatch(r, "MEDIA_TYPE", "application/b", "x"), CY_RETRY);
    assert_int_equal(dispatch(r, "Media_Type", "application/b", "x"), CY_RETRY);
    assert_int_equal(b.calls, 2);
    assert_ptr_equal(b.user, &b);
    assert_int_equal(rs.n, 0);

    /* The value is case-sensitive; no fallback: dead with the reason. */
    assert_int_equal(dispatch(r, "media_type", "Application/A", "x"), CY_DEAD);
    assert_int_equal(rs.n, 1);
    assert_string_equal(rs.last, "no route for media_type 'Application/A'");
    assert_int_equal(dispatch(r, NULL, NULL, "x"), CY_DEAD);
    assert_int_equal(rs.n, 2);
    assert_string_equal(rs.last, "no media_type header");
    /* A header of another name is not the media type. */
    assert_int_equal(dispatch(r, "media-type", "application/a", "x"), CY_DEAD);
    assert_string_equal(rs.last, "no media_type header");
    /* A very long media type is cut in the reason, which stays under 1 KiB. */
    char longmt[3000];
    memset(longmt, 'm', sizeof longmt - 1);
    longmt[sizeof longmt - 1] = 0;
    assert_int_equal(dispatch(r, "media_type", longmt, "x"), CY_DEAD);
    assert_true(strlen(rs.last) < 1024);
    assert_int_equal(strncmp(rs.last, "no route for media_type 'mmm", 28), 0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 2);

    dead_reason_set_hook(NULL, NULL);
    cy_router_free(r);
}

static void test_required_fields(void **state)
{
    (void)state;
    struct seen o;
    seen_init(&o);
    struct reasons rs = {0};
    dead_reason_set_hook(record_reason, &rs);
    cy_router *r;
    assert_int_equal(cy_router_new(&r), 0);
    assert_int_equal(cy_router_add(r, "order", (cy_handler){seen_handler, &o},
                                   "{\"id\": \"integer\", \"amount\": \"number\", "
                                   "\"name\": \"string\", \"paid\": \"boolean\", "
                                   "\"tags\": \"array\", \"meta\": \"object\", "
                                   "\"note\": \"null\"}"),
                     0);
    const char *ok1 = "{\"id\": 7, \"amount\": 12.5, \"name\": \"n\", \"paid\": true, "
                      "\"tags\": [], \"meta\": {}, \"note\": null, \"extra\": 1}";
    const char *ok2 = "{\"id\": -1, \"amount\": 12, \"name\": \"\", \"paid\": false, "
                      "\"tags\": [1], \"meta\": {\"a\": 1}, \"note\": null}";
    assert_int_equal(dispatch(r, "media_type", "order", ok1), CY_DONE);
    assert_int_equal(dispatch(r, "media_type", "order", ok2), CY_DONE); /* integer as number */
    assert_int_equal(o.calls, 2);
    assert_int_equal(rs.n, 0);

    static const struct {
        const char *value, *reason;
    } bad[] = {
        {"{\"id\": 7.5, \"amount\": 1, \"name\": \"n\", \"paid\": true, \"tags\": [], "
         "\"meta\": {}, \"note\": null}",
         "order: field 'id' must be integer"},
        {"{\"id\": 7, \"amount\": \"1\", \"name\": \"n\", \"paid\": true, \"tags\": [], "
         "\"meta\": {}, \"note\": null}",
         "order: field 'amount' must be number"},
        {"{\"id\": 7, \"amount\": 1, \"paid\": true, \"tags\": [], \"meta\": {}, \"note\": null}",
         "order: field 'name' is missing"},
        {"{\"id\": 7, \"amount\": 1, \"name\": 3, \"paid\": true, \"tags\": [], "
         "\"meta\": {}, \"note\": null}",
         "order: field 'name' must be string"},
        {"{\"id\": 7, \"amount\": 1, \"name\": \"n\", \"paid\": 1, \"tags\": [], "
         "\"meta\": {}, \"note\": null}",
         "order: field 'paid' must be boolean"},
        {"{\"id\": 7, \"amount\": 1, \"name\": \"n\", \"paid\": true, \"tags\": {}, "
         "\"meta\": {}, \"note\": null}",
         "order: field 'tags' must be array"},
        {"{\"id\": 7, \"amount\": 1, \"name\": \"n\", \"paid\": true, \"tags\": [], "
         "\"meta\": [], \"note\": null}",
         "order: field 'meta' must be object"},
        {"{\"id\": 7, \"amount\": 1, \"name\": \"n\", \"paid\": true, \"tags\": [], "
         "\"meta\": {}, \"note\": 0}",
         "order: field 'note' must be null"},
        {"not json", "order: value is not a JSON object"},
        {"{\"id\": 7", "order: value is not a JSON object"},
        {"", "order: value is not a JSON object"},
        {"[1, 2]", "order: value is not a JSON object"},
        {"42", "order: value is not a JSON object"},
        {"\"order\"", "order: value is not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rs.last[0] = 0;
        assert_int_equal(dispatch(r, "media_type", "order", bad[i].value), CY_DEAD);
        assert_string_equal(rs.last, bad[i].reason);
        assert_int_equal(rs.n, (int)i + 1);
    }
    assert_int_equal(o.calls, 2);
    /* A NULL value with no length is an empty value. */
    assert_int_equal(dispatch(r, "media_type", "order", NULL), CY_DEAD);
    assert_string_equal(rs.last, "order: value is not a JSON object");

    dead_reason_set_hook(NULL, NULL);
    cy_router_free(r);
}

static void test_fallback(void **state)
{
    (void)state;
    struct seen a, fb;
    seen_init(&a);
    seen_init(&fb);
    fb.answer = CY_RETRY;
    struct reasons rs = {0};
    dead_reason_set_hook(record_reason, &rs);
    cy_router *r;
    assert_int_equal(cy_router_new(&r), 0);
    assert_int_equal(cy_router_add(r, "a", (cy_handler){seen_handler, &a}, "{\"x\": \"string\"}"),
                     0);
    assert_int_equal(cy_router_fallback(r, (cy_handler){seen_handler, &fb}), 0);
    assert_int_equal(dispatch(r, "media_type", "unknown", "{}"), CY_RETRY);
    assert_int_equal(dispatch(r, NULL, NULL, "{}"), CY_RETRY);
    assert_int_equal(fb.calls, 2);
    assert_ptr_equal(fb.user, &fb);
    /* A known media type that fails its checks is not the fallback's. */
    assert_int_equal(dispatch(r, "media_type", "a", "{}"), CY_DEAD);
    assert_string_equal(rs.last, "a: field 'x' is missing");
    assert_int_equal(dispatch(r, "media_type", "a", "{\"x\": \"y\"}"), CY_DONE);
    assert_int_equal(fb.calls, 2);
    assert_int_equal(a.calls, 1);
    assert_int_equal(rs.n, 1);
    dead_reason_set_hook(NULL, NULL);
    cy_router_free(r);
}

static void test_add_checks(void **state)
{
    (void)state;
    struct seen a;
    seen_init(&a);
    cy_handler h = {seen_handler, &a};
    cy_router *r;
    assert_int_equal(cy_router_new(NULL), CY_EINVAL);
    assert_int_equal(cy_router_new(&r), 0);
    static const char *const bad[] = {
        "",
        "not json",
        "[]",
        "\"string\"",
        "{\"a\": \"float\"}",
        "{\"a\": \"String\"}",
        "{\"a\": 1}",
        "{\"a\": [\"string\"]}",
        "{\"a\": \"string\", \"a\": \"number\"}",
        "{\"a\": \"string\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(cy_router_add(r, "m", h, bad[i]), CY_EINVAL);
    assert_int_equal(cy_router_add(NULL, "m", h, NULL), CY_EINVAL);
    assert_int_equal(cy_router_add(r, NULL, h, NULL), CY_EINVAL);
    assert_int_equal(cy_router_add(r, "m", (cy_handler){NULL, NULL}, NULL), CY_EINVAL);
    assert_int_equal(cy_router_fallback(r, (cy_handler){NULL, NULL}), CY_EINVAL);
    assert_int_equal(cy_router_add(r, "m", h, "{}"), 0);
    assert_int_equal(cy_router_add(r, "m", h, NULL), CY_EINVAL); /* twice */
    assert_int_equal(cy_router_add(r, "M", h, NULL), 0);         /* another value */
    /* Many routes (the table grows). */
    for (int i = 0; i < 40; i++) {
        char mt[16];
        snprintf(mt, sizeof mt, "t%d", i);
        assert_int_equal(cy_router_add(r, mt, h, "{\"k\": \"null\"}"), 0);
    }
    assert_int_equal(dispatch(r, "media_type", "t39", "{\"k\": null}"), CY_DONE);
    assert_int_equal(dispatch(r, "media_type", "m", "anything: {} requires nothing"), CY_DONE);
    assert_int_equal(a.calls, 2);
    /* Routes are fixed once dispatch began. */
    assert_int_equal(cy_router_add(r, "late", h, NULL), CY_EINVAL);
    assert_int_equal(cy_router_fallback(r, h), CY_EINVAL);
    cy_router_free(r);
    cy_router_free(NULL);
}

static void test_set_dead_reason_outside_serve(void **state)
{
    (void)state;
    cy_context ctx;
    memset(&ctx, 0, sizeof ctx);
    /* No serve slot and no hook on this thread: ignored, no crash. */
    cy_set_dead_reason(&ctx, "nobody listens");
    cy_set_dead_reason(NULL, "x");
    cy_set_dead_reason(&ctx, NULL);
    /* A router without routes or hook: dead, the reason dropped quietly. */
    cy_router *r;
    assert_int_equal(cy_router_new(&r), 0);
    assert_int_equal(dispatch(r, "media_type", "x", "{}"), CY_DEAD);
    cy_router_free(r);
}

static void test_handler_free_chain(void **state)
{
    (void)state;
    struct seen a;
    seen_init(&a);
    cy_router *r;
    assert_int_equal(cy_router_new(&r), 0);
    assert_int_equal(cy_router_add(r, "a", (cy_handler){seen_handler, &a}, NULL), 0);
    cy_metrics m;
    memset(&m, 0, sizeof m);
    cy_handler metered, logged;
    assert_int_equal(cy_mw_metrics(cy_router_handler(r), &m, &metered), 0);
    FILE *devnull = fopen("/dev/null", "w");
    assert_non_null(devnull);
    assert_int_equal(cy_mw_logging(metered, devnull, &logged), 0);
    /* Run the chain once, then free it: the router stays (ASan would see a
     * double free at cy_router_free, or a use after free below). */
    cy_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.user = logged.arg;
    cy_header hdr = {"media_type", "a"};
    cy_received msg;
    memset(&msg, 0, sizeof msg);
    msg.headers = &hdr;
    msg.n_headers = 1;
    msg.attempt = 1;
    assert_int_equal(logged.fn(&ctx, &msg), CY_DONE);
    assert_int_equal(m.done, 1);
    cy_handler_free(logged);
    cy_handler_free(cy_router_handler(r)); /* the router alone: nothing freed */
    assert_int_equal(dispatch(r, "media_type", "a", ""), CY_DONE);
    assert_int_equal(a.calls, 2);
    cy_router_free(r);
    fclose(devnull);
}

struct racer {
    cy_router *r;
    int dead;
};

static void *race(void *arg)
{
    struct racer *rc = arg;
    struct reasons rs = {0};
    dead_reason_set_hook(record_reason, &rs);
    for (int i = 0; i < 2000; i++) {
        cy_outcome o = i % 3 == 0   ? dispatch(rc->r, "media_type", "a", "{\"x\": 1}")
                       : i % 3 == 1 ? dispatch(rc->r, "media_type", "a", "{\"x\": \"no\"}")
                                    : dispatch(rc->r, "media_type", "b", "");
        if (o == CY_DEAD)
            rc->dead++;
    }
    dead_reason_set_hook(NULL, NULL);
    if (rs.n != rc->dead || strcmp(rs.last, "a: field 'x' must be integer") != 0)
        rc->dead = -1;
    return NULL;
}

static void test_concurrent_dispatch(void **state)
{
    (void)state;
    struct seen a, b;
    seen_init(&a);
    seen_init(&b);
    cy_router *r;
    assert_int_equal(cy_router_new(&r), 0);
    assert_int_equal(cy_router_add(r, "a", (cy_handler){seen_handler, &a}, "{\"x\": \"integer\"}"),
                     0);
    assert_int_equal(cy_router_add(r, "b", (cy_handler){seen_handler, &b}, NULL), 0);
    pthread_t t[4];
    struct racer rc[4];
    for (int i = 0; i < 4; i++) {
        rc[i] = (struct racer){r, 0};
        assert_int_equal(pthread_create(&t[i], NULL, race, &rc[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(rc[i].dead, 667); /* i % 3 == 1 for i < 2000 */
    }
    assert_int_equal(a.calls, 4 * 667);
    assert_int_equal(b.calls, 4 * 666);
    cy_router_free(r);
}

/* ---- end to end ---------------------------------------------------------------------- */

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

/* Whether the broker takes the nack's "reason" field: a reason of the wrong
 * type is refused (422, about "reason") only by a broker that reads it. */
static bool broker_knows_reason(cy_client *c)
{
    char *resp = NULL;
    int rc = cy_call_json(c, "v1.msgs.queue.nack",
                          "{\"topic\": \"probe\", \"consumer_group\": \"g\", \"msg_ids\": "
                          "[\"0:0\"], \"dead_letter\": true, \"reason\": 5}",
                          &resp);
    cy_free(resp);
    if (rc != CY_ESERVER)
        return false;
    const char *detail = NULL;
    int status = 0;
    cy_last_error(c, &detail, &status);
    return status == 422 && detail && strstr(detail, "reason");
}

struct e2e {
    pthread_mutex_t mu;
    int valid, fallback;
};

static cy_outcome valid_handler(const cy_context *ctx, const cy_received *m)
{
    struct e2e *e = ctx->user;
    (void)m;
    /* A reason with CY_DONE is dropped: the message is acked, not dead. */
    cy_set_dead_reason(ctx, "not dead after all");
    pthread_mutex_lock(&e->mu);
    e->valid++;
    pthread_mutex_unlock(&e->mu);
    return CY_DONE;
}

static cy_outcome poison_handler(const cy_context *ctx, const cy_received *m)
{
    struct e2e *e = ctx->user;
    (void)m;
    cy_set_dead_reason(ctx, "first, replaced");
    cy_set_dead_reason(ctx, "poison: handled and refused");
    pthread_mutex_lock(&e->mu);
    e->fallback++;
    pthread_mutex_unlock(&e->mu);
    return CY_DEAD;
}

static const char *header_of(const cy_received *m, const char *name)
{
    for (size_t i = 0; i < m->n_headers; i++)
        if (strcmp(m->headers[i].name, name) == 0)
            return m->headers[i].value;
    return NULL;
}

static void test_serve_dead_letters_with_reasons(void **state)
{
    (void)state;
    char *dir = tu_tempdir("router");
    char url[4200];
    snprintf(url, sizeof url, "file://%s", dir);
    cy_options o;
    memset(&o, 0, sizeof o);
    o.fsync = "never";
    cy_client *c;
    OK(NULL, cy_open(url, &o, &c));
    bool knows = broker_knows_reason(c);

    cy_queue_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.retry_count = 3;
    cfg.retry_schedule[0] = cfg.retry_schedule[1] = cfg.retry_schedule[2] = 60000;
    cfg.dlq_topic = "orders-dlq";
    OK(c, cy_queue_configure(c, CY_QUEUE, "orders", "g", &cfg));

    /* value → the reason its DLQ copy must carry (NULL: handled, not dead). */
    static const struct {
        const char *media_type, *value, *reason;
    } cases[] = {
        {"order", "{\"id\": 1, \"amount\": 2.5}", NULL},
        {"order", "{\"id\": 2, \"amount\": 3}", NULL},
        {"order", "{\"id\": 3}", "order: field 'amount' is missing"},
        {"order", "{\"id\": \"4\", \"amount\": 1}", "order: field 'id' must be integer"},
        {"order", "not json 5", "order: value is not a JSON object"},
        {"invoice", "{\"id\": 6}", "no route for media_type 'invoice'"},
        {NULL, "{\"id\": 7}", "no media_type header"},
        {"poison", "{\"id\": 8}", "poison: handled and refused"},
    };
    enum { N = sizeof cases / sizeof cases[0] };
    cy_message msgs[N];
    cy_header hdrs[N];
    size_t n_dead = 0;
    for (size_t i = 0; i < N; i++) {
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].value = cases[i].value;
        msgs[i].value_len = strlen(cases[i].value);
        hdrs[i] = (cy_header){"media_type", cases[i].media_type};
        msgs[i].headers = &hdrs[i];
        msgs[i].n_headers = cases[i].media_type ? 1 : 0;
        n_dead += cases[i].reason != NULL;
    }
    OK(c, cy_publish(c, "orders", msgs, N, NULL, NULL));

    struct e2e e;
    memset(&e, 0, sizeof e);
    pthread_mutex_init(&e.mu, NULL);
    cy_router *r;
    OK(NULL, cy_router_new(&r));
    OK(NULL, cy_router_add(r, "order", (cy_handler){valid_handler, &e},
                           "{\"id\": \"integer\", \"amount\": \"number\"}"));
    OK(NULL, cy_router_add(r, "poison", (cy_handler){poison_handler, &e}, NULL));
    cy_serve_opts so;
    memset(&so, 0, sizeof so);
    so.mode = CY_QUEUE;
    so.topic = "orders";
    so.group = "g";
    so.workers = 3;
    so.batch_size = 4; /* several settle rounds */
    so.batch_wait_ms = 100;
    cy_server *s;
    OK(c, cy_serve_start(c, &so, cy_router_handler(r), &s));

    /* Collect the DLQ copies (each seen once by a stream group). */
    bool found[N] = {false};
    size_t got = 0;
    uint64_t give_up = clock_mono_ms() + 10000;
    while (got < n_dead && clock_mono_ms() < give_up) {
        cy_receive_opts ro;
        memset(&ro, 0, sizeof ro);
        ro.start_earliest = true;
        ro.batch_wait_ms = 100;
        cy_batch b;
        OK(c, cy_receive(c, CY_STREAM, "orders-dlq", "inspect", &ro, &b));
        for (size_t k = 0; k < b.n; k++) {
            const cy_received *m = &b.msgs[k];
            size_t i = 0;
            while (i < N && !(strlen(cases[i].value) == m->value_len &&
                              memcmp(cases[i].value, m->value, m->value_len) == 0))
                i++;
            assert_true(i < N);
            if (!cases[i].reason)
                fail_msg("a valid message was dead-lettered: %s", cases[i].value);
            assert_false(found[i]);
            found[i] = true;
            got++;
            const char *why = header_of(m, "coyote-dead-letter-reason");
            if (knows) {
                if (!why)
                    fail_msg("no coyote-dead-letter-reason on the DLQ copy of %s", cases[i].value);
                assert_string_equal(why, cases[i].reason);
            }
            if (b.n && k + 1 == b.n)
                OK(c, cy_commit(c, m->topic, "inspect", m->offset));
        }
        cy_batch_free(&b);
    }
    OK(c, cy_serve_stop(s));
    assert_int_equal(got, n_dead);
    assert_int_equal(e.valid, 2);
    assert_int_equal(e.fallback, 1);
    if (!knows)
        print_message("SKIPPED the coyote-dead-letter-reason header checks: this broker does not "
                      "take the nack's \"reason\" field yet\n");

    /* cy_dead_letter_reason's own checks. */
    char longr[1100];
    memset(longr, 'r', sizeof longr - 1);
    longr[sizeof longr - 1] = 0;
    const char *id = "0:0";
    assert_int_equal(cy_dead_letter_reason(c, CY_QUEUE, "orders", "g", &id, 1, longr), CY_EINVAL);
    assert_int_equal(cy_dead_letter_reason(c, CY_STREAM, "orders", "g", &id, 1, "x"), CY_EINVAL);

    cy_router_free(r);
    pthread_mutex_destroy(&e.mu);
    cy_close(c);
    tu_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_by_media_type),
        cmocka_unit_test(test_required_fields),
        cmocka_unit_test(test_fallback),
        cmocka_unit_test(test_add_checks),
        cmocka_unit_test(test_set_dead_reason_outside_serve),
        cmocka_unit_test(test_handler_free_chain),
        cmocka_unit_test(test_concurrent_dispatch),
        cmocka_unit_test(test_serve_dead_letters_with_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
