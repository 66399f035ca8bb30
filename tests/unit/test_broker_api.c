/*
 * test_broker_api.c — the broker's C API (src/broker/broker.h) against the
 * contract of API.md §2–§10: every rule the broker owns, with the exact
 * status, error code and sentence where API.md gives one.
 *
 * Each test gets a fresh data directory and a broker with the test clock
 * (broker_clock_advance) and fsync "never" (one test uses "always"). The test
 * clock is the wall clock plus an offset, so real time still passes: every
 * timing assertion leaves a margin of seconds (leases of 10 s or more,
 * checks made well before or exactly at an expiry the test moved to).
 *
 * Tests marked "BUG:" assert API.md's behaviour where the broker was found to
 * contradict it.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/buf.h"
#include "base/log.h"
#include "broker/broker.h"
#include "coyote.h"
#include "faultfs.h"
#include "testutil.h"

#define SEC 1000ull
#define HOUR (3600ull * SEC)
#define DAY (24ull * HOUR)

/* ---- fixture ------------------------------------------------------------------ */

struct fx {
    char *dir;
    struct broker_config cfg;
    struct broker *b;
};

static struct broker_error E;
static struct broker_wait W;

static void open_broker(struct fx *f)
{
    memset(&E, 0, sizeof E);
    int rc = broker_open(&f->cfg, &f->b, &E);
    if (rc)
        fail_msg("broker_open: %d (%d %s: %s)", rc, E.status, E.code ? E.code : "", E.detail);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = tu_tempdir("broker_api");
    f->cfg.data_dir = f->dir;
    f->cfg.fsync = JOURNAL_FSYNC_NEVER;
    f->cfg.test_clock = true;
    open_broker(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    broker_close(f->b);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

/* Close and reopen the same data directory. */
static void reopen(struct fx *f)
{
    assert_int_equal(broker_close(f->b), 0);
    f->b = NULL;
    open_broker(f);
}

#define FB(state) (((struct fx *)*(state))->b)

/* ---- small builders -------------------------------------------------------------- */

static struct bstr S(const char *s) {
    return (struct bstr){s, strlen(s)};
}
#define DEF ((struct broker_ns_ref){false, {NULL, 0}})
static struct broker_ns_ref
NS(const char *s) {
    return (struct broker_ns_ref){true, S(s)};
}

static struct broker_topic_ref
TR(const char *s) {
    struct broker_topic_ref r;
    struct broker_error e;
    memset(&e, 0, sizeof e);
    if (broker_parse_topic_ref(S(s), "topic", &r, &e))
        fail_msg("bad topic ref in a test: %s (%s)", s, e.detail);
    return r;
}

static struct broker_msg_in
M(const char *value) {
    return (struct broker_msg_in){.value = (const uint8_t *)value, .value_len = strlen(value)};
}

static struct broker_msg_in
MK(const char *value, const char *key) {
    struct broker_msg_in m = M(value);
    m.has_key = true;
    m.key = S(key);
    return m;
}

static struct broker_msg_in
MD(const char *value, uint64_t delay_ms) {
    struct broker_msg_in m = M(value);
    m.has_delay = true;
    m.delay_ms = delay_ms;
    return m;
}

static struct broker_msg_id
ID(uint32_t p, uint64_t o) {
    return (struct broker_msg_id){p, o};
}

/* ---- error assertions -------------------------------------------------------------- */

#define CLR() memset(&E, 0, sizeof E)

/* The call fails with this status, code and (when not NULL) exact detail. */
#define expect_error(call, st, cd, det)                                                     \
    do {                                                                                    \
        CLR();                                                                              \
        int rc_ = (call);                                                                   \
        if (rc_ == 0)                                                                       \
            fail_msg("line %d: %s succeeded; expected %d %s", __LINE__, #call, (st), (cd)); \
        assert_true(rc_ < 0);                                                               \
        assert_int_equal(E.status, (st));                                                   \
        assert_non_null(E.code);                                                            \
        assert_string_equal(E.code, (cd));                                                  \
        const char *det_ = (det);                                                           \
        if (det_)                                                                           \
            assert_string_equal(E.detail, det_);                                            \
    } while (0)

#define expect_ok(call)                                                                        \
    do {                                                                                       \
        CLR();                                                                                 \
        int rc_ = (call);                                                                      \
        if (rc_)                                                                               \
            fail_msg("line %d: %s failed: %d (%d %s: %s @%s)", __LINE__, #call, rc_, E.status, \
                     E.code ? E.code : "", E.detail, E.location);                              \
    } while (0)

/* ---- operation wrappers -------------------------------------------------------------- */

static struct broker_publish_res PR;

static int pub_ns(struct broker *b, struct broker_ns_ref ns, const char *topic,
                  const struct broker_msg_in *msgs, size_t n, const char *idem)
{
    struct broker_publish_req req = {.ns = ns, .msgs = msgs, .n_msgs = n};
    int rc = broker_parse_topic_ref(S(topic), "topic", &req.topic, &E);
    if (rc)
        return rc;
    if (idem) {
        req.has_idempotency_key = true;
        req.idempotency_key = S(idem);
    }
    return broker_publish(b, &req, &PR, &W, &E);
}

static int pub(struct broker *b, const char *topic, const struct broker_msg_in *msgs, size_t n)
{
    return pub_ns(b, DEF, topic, msgs, n, NULL);
}

/* Publish one keyless message. */
static void pub1(struct broker *b, const char *topic, const char *value)
{
    struct broker_msg_in m = M(value);
    expect_ok(pub(b, topic, &m, 1));
}

/* Publish one keyed message. */
static void pubk(struct broker *b, const char *topic, const char *value, const char *key)
{
    struct broker_msg_in m = MK(value, key);
    expect_ok(pub(b, topic, &m, 1));
}

/* Publish n keyless messages "<prefix><i>" (i from 0) in one call. */
static void pubn(struct broker *b, const char *topic, const char *prefix, int n)
{
    static char vals[2048][32];
    static struct broker_msg_in ms[2048];
    assert_true(n <= 2048);
    for (int i = 0; i < n; i++) {
        snprintf(vals[i], sizeof vals[i], "%s%d", prefix, i);
        ms[i] = M(vals[i]);
    }
    expect_ok(pub(b, topic, ms, (size_t)n));
}

/* Received messages, copied out of broker memory. */
struct got {
    uint32_t partition;
    uint64_t offset;
    uint32_t attempt;
    uint64_t timestamp;
    bool has_sched;
    uint64_t sched;
    char value[160];
    size_t value_len;
    bool has_key;
    char key[64];
    size_t n_headers;
};
static struct got G[2048];
static size_t NG;
static struct broker_receive_res RR;

static void snap(void)
{
    assert_true(RR.n <= 2048);
    NG = RR.n;
    for (size_t i = 0; i < RR.n; i++) {
        const struct broker_msg_out *o = &RR.msgs[i];
        struct got *g = &G[i];
        memset(g, 0, sizeof *g);
        g->partition = o->partition;
        g->offset = o->offset;
        g->attempt = o->attempt;
        g->timestamp = o->timestamp;
        g->has_sched = o->has_scheduled_at;
        g->sched = o->scheduled_at;
        g->value_len = o->value_len;
        memcpy(g->value, o->value,
               o->value_len < sizeof g->value - 1 ? o->value_len : sizeof g->value - 1);
        g->has_key = o->has_key;
        if (o->has_key)
            memcpy(g->key, o->key.p, o->key.n < sizeof g->key - 1 ? o->key.n : sizeof g->key - 1);
        g->n_headers = o->n_headers;
    }
}

static struct broker_receive_req rreq(struct broker_ns_ref ns, const char *topic, const char *group,
                                      uint32_t batch, uint64_t lease)
{
    struct broker_receive_req r = {
        .ns = ns, .topic = TR(topic), .group = S(group), .batch_size = batch};
    if (lease) {
        r.has_lease = true;
        r.lease_ms = lease;
    }
    return r;
}

/* Stream receive; on success G/NG hold the messages. */
static int srecv_ns(struct broker *b, struct broker_ns_ref ns, const char *topic, const char *group,
                    uint32_t batch, bool earliest, uint64_t lease)
{
    struct broker_receive_req r = rreq(ns, topic, group, batch, lease);
    r.start_earliest = earliest;
    NG = 0;
    int rc = broker_stream_receive(b, &r, &RR, &W, &E);
    if (!rc)
        snap();
    return rc;
}

static int srecv(struct broker *b, const char *topic, const char *group, uint32_t batch,
                 bool earliest, uint64_t lease)
{
    return srecv_ns(b, DEF, topic, group, batch, earliest, lease);
}

static int qrecv_ns(struct broker *b, enum broker_mode mode, struct broker_ns_ref ns,
                    const char *topic, const char *group, uint32_t batch, uint64_t lease)
{
    struct broker_receive_req r = rreq(ns, topic, group, batch, lease);
    NG = 0;
    int rc = broker_queue_receive(b, mode, &r, &RR, &W, &E);
    if (!rc)
        snap();
    return rc;
}

static int qrecv(struct broker *b, enum broker_mode mode, const char *topic, const char *group,
                 uint32_t batch, uint64_t lease)
{
    return qrecv_ns(b, mode, DEF, topic, group, batch, lease);
}

static struct broker_ids_req idsreq(const char *topic, const char *group,
                                    const struct broker_msg_id *ids, size_t n)
{
    return (struct broker_ids_req){
        .ns = DEF, .topic = S(topic), .group = S(group), .ids = ids, .n_ids = n};
}

static int qack(struct broker *b, enum broker_mode m, const char *topic, const char *group,
                const struct broker_msg_id *ids, size_t n)
{
    struct broker_ids_req r = idsreq(topic, group, ids, n);
    return broker_queue_ack(b, m, &r, &W, &E);
}

static int qnack(struct broker *b, enum broker_mode m, const char *topic, const char *group,
                 const struct broker_msg_id *ids, size_t n)
{
    struct broker_ids_req r = idsreq(topic, group, ids, n);
    return broker_queue_nack(b, m, &r, &W, &E);
}

static int qnack_delay(struct broker *b, enum broker_mode m, const char *topic, const char *group,
                       const struct broker_msg_id *ids, size_t n, uint64_t delay)
{
    struct broker_ids_req r = idsreq(topic, group, ids, n);
    r.has_delay = true;
    r.delay_ms = delay;
    return broker_queue_nack(b, m, &r, &W, &E);
}

static int qnack_dead(struct broker *b, enum broker_mode m, const char *topic, const char *group,
                      const struct broker_msg_id *ids, size_t n)
{
    struct broker_ids_req r = idsreq(topic, group, ids, n);
    r.dead_letter = true;
    r.has_reason = true;
    r.reason = S("bad input: no order id");
    return broker_queue_nack(b, m, &r, &W, &E);
}

static int qextend(struct broker *b, enum broker_mode m, const char *topic, const char *group,
                   const struct broker_msg_id *ids, size_t n, uint64_t lease)
{
    struct broker_ids_req r = idsreq(topic, group, ids, n);
    if (lease) {
        r.has_lease = true;
        r.lease_ms = lease;
    }
    return broker_queue_extend(b, m, &r, &W, &E);
}

static struct broker_queue_config QC;

static int qconf(struct broker *b, enum broker_mode m, const char *topic, const char *group,
                 const uint64_t *sched, uint32_t n, const char *dlq, uint32_t max_deliveries)
{
    struct broker_group_req req = {DEF, S(topic), S(group)};
    static struct broker_queue_config c;
    memset(&c, 0, sizeof c);
    c.retry_count = n;
    for (uint32_t i = 0; i < n && i < 100; i++)
        c.retry_schedule[i] = sched[i];
    if (dlq) {
        c.has_dlq_topic = true;
        c.dlq_topic = S(dlq);
    }
    c.max_deliveries = max_deliveries;
    memset(&QC, 0, sizeof QC);
    return broker_queue_configure(b, m, &req, &c, &QC, &W, &E);
}

static int qredrive(struct broker *b, enum broker_mode m, const char *topic, const char *group)
{
    struct broker_group_req req = {DEF, S(topic), S(group)};
    return broker_queue_redrive(b, m, &req, &W, &E);
}

static int scommit(struct broker *b, const char *topic, const char *group, uint64_t offset)
{
    struct broker_commit_req r = {
        .ns = DEF, .topic = TR(topic), .group = S(group), .offset = offset};
    return broker_stream_commit(b, &r, &W, &E);
}

static int sseek(struct broker *b, const char *topic, const char *group, int n_targets,
                 enum broker_seek_kind kind, uint64_t value)
{
    struct broker_seek_req r = {.ns = DEF,
                                .topic = TR(topic),
                                .group = S(group),
                                .n_targets = n_targets,
                                .kind = kind,
                                .value = value};
    return broker_stream_seek(b, &r, &W, &E);
}

static int tconf(struct broker *b, const char *topic, int64_t parts)
{
    uint32_t out = 0;
    int rc = broker_topic_configure(b, DEF, S(topic), parts, &out, &W, &E);
    if (!rc && out != (uint32_t)parts && parts >= 1)
        fail_msg("topic configure answered %u partitions, asked %" PRId64, out, parts);
    return rc;
}

static struct broker_topic_info TI;

static int tget(struct broker *b, const char *topic)
{
    memset(&TI, 0, sizeof TI);
    return broker_topic_get(b, DEF, S(topic), &TI, &E);
}

static uint64_t end_offset(struct broker *b, const char *topic, uint32_t p)
{
    expect_ok(tget(b, topic));
    assert_true(p < TI.partitions);
    return TI.parts[p].end_offset;
}

static uint64_t start_offset(struct broker *b, const char *topic, uint32_t p)
{
    expect_ok(tget(b, topic));
    assert_true(p < TI.partitions);
    return TI.parts[p].start_offset;
}

static struct broker_group_info GI;

static int gget(struct broker *b, const char *topic, enum broker_mode m, const char *group)
{
    memset(&GI, 0, sizeof GI);
    return broker_group_get(b, DEF, S(topic), m, S(group), &GI, &E);
}

static void advance(struct broker *b, uint64_t ms)
{
    assert_int_equal(broker_clock_advance(b, ms), 0);
}

/* Index in G of the message with this value, or -1. */
static int find_value(const char *v)
{
    for (size_t i = 0; i < NG; i++)
        if (G[i].value_len == strlen(v) && memcmp(G[i].value, v, G[i].value_len) == 0)
            return (int)i;
    return -1;
}

/* ======================================================================== */
/* §2 names and ids                                                          */
/* ======================================================================== */

struct name_case {
    const char *s;
    size_t n;   /* 0: strlen(s) */
    int status; /* 0: valid, else 422 */
    int32_t partition;
};

static void test_parse_topic_ref_table(void **state)
{
    (void)state;
    static char long64[65], long65[66], long65p[70];
    memset(long64, 'a', 64);
    memset(long65, 'a', 65);
    memset(long65p, 'a', 65);
    memcpy(long65p + 65, "~1", 3);
    char long64p[70];
    memcpy(long64p, long64, 64);
    memcpy(long64p + 64, "~63", 4);
    const struct name_case cases[] = {
        {"orders", 0, 0, -1},
        {"orders~0", 0, 0, 0},
        {"orders~7", 0, 0, 7},
        {"orders~63", 0, 0, 63},
        {"with space", 0, 0, -1},  /* space is not a control character */
        {"caf\xc3\xa9", 0, 0, -1}, /* valid UTF-8 */
        {"a.b-c_d/e:f", 0, 0, -1},
        {long64, 0, 0, -1}, /* 64 bytes: the maximum */
        {long64p, 0, 0, 63},
        {"orders~64", 0, 422, 0}, /* p must be < 64 */
        {"orders~100", 0, 422, 0},
        {"orders~", 0, 422, 0}, /* no digits */
        {"orders~-1", 0, 422, 0},
        {"orders~1a", 0, 422, 0},
        {"orders~ 1", 0, 422, 0},
        {"~1", 0, 422, 0}, /* empty topic name */
        {"", 0, 422, 0},
        {"a~b~1", 0, 422, 0}, /* split at the last '~': "a~b" has a '~' */
        {"a~b", 0, 422, 0},   /* not a number after the last '~' */
        {long65, 0, 422, 0},  /* 65 bytes */
        {long65p, 0, 422, 0},
        {"ctl\x01", 0, 422, 0}, /* control characters */
        {"tab\there", 0, 422, 0},
        {"nl\n", 0, 422, 0},
        {"del\x7f", 0, 422, 0},
        {"c1\xc2\x85", 0, 422, 0}, /* U+0085, a C1 control */
        {"bad\xff", 0, 422, 0},    /* invalid UTF-8 */
        {"trunc\xc3", 0, 422, 0},
        {"over\xc0\xaf", 0, 422, 0},    /* overlong '/' */
        {"sur\xed\xa0\x80", 0, 422, 0}, /* a UTF-16 surrogate */
        {"nul\0x", 5, 422, 0},          /* NUL inside */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct name_case *c = &cases[i];
        struct bstr s = {c->s, c->n ? c->n : strlen(c->s)};
        struct broker_topic_ref r;
        CLR();
        int rc = broker_parse_topic_ref(s, "topic", &r, &E);
        if (c->status == 0) {
            if (rc)
                fail_msg("case %zu (%s): rejected: %s", i, c->s, E.detail);
            assert_int_equal(r.partition, c->partition);
            size_t base = c->partition >= 0 ? (size_t)(strrchr(c->s, '~') - c->s) : s.n;
            assert_int_equal(r.name.n, base);
            assert_memory_equal(r.name.p, c->s, base);
        } else {
            if (!rc)
                fail_msg("case %zu (%.*s): accepted", i, (int)s.n, c->s);
            assert_int_equal(E.status, 422);
            assert_string_equal(E.code, "invalid_data");
            assert_string_equal(E.location, "topic");
            assert_true(E.detail[0] != 0);
        }
    }
    /* the location is the field the caller names */
    struct broker_topic_ref r;
    CLR();
    assert_int_not_equal(broker_parse_topic_ref(S("x~99"), "dlq_topic", &r, &E), 0);
    assert_string_equal(E.location, "dlq_topic");
}

static void test_namespace_name_table(void **state)
{
    (void)state;
    static char n256[257], n257[258];
    memset(n256, 'n', 256);
    memset(n257, 'n', 257);
    const struct name_case cases[] = {
        {"default", 0, 0, 0},
        {"a", 0, 0, 0},
        {"Az09-/_.=+", 0, 0, 0},
        {"team/billing.v2=x+y_z-w", 0, 0, 0},
        {n256, 0, 0, 0},
        {n257, 0, 422, 0},
        {"", 0, 422, 0},
        {"a b", 0, 422, 0},
        {"a:b", 0, 422, 0},
        {"a~b", 0, 422, 0},
        {"a*b", 0, 422, 0},
        {"a\\b", 0, 422, 0},
        {"caf\xc3\xa9", 0, 422, 0},
        {"a\nb", 0, 422, 0},
        {"nul\0", 4, 422, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct name_case *c = &cases[i];
        struct bstr s = {c->s, c->n ? c->n : strlen(c->s)};
        CLR();
        int rc = broker_check_namespace_name(s, "name", &E);
        if (c->status == 0) {
            if (rc)
                fail_msg("case %zu (%s): rejected: %s", i, c->s, E.detail);
        } else {
            if (!rc)
                fail_msg("case %zu (%.20s): accepted", i, c->s);
            assert_int_equal(E.status, 422);
            assert_string_equal(E.code, "invalid_data");
            assert_string_equal(E.location, "name");
        }
    }
}

static void test_group_name_table(void **state)
{
    (void)state;
    static char g64[65], g65[66];
    memset(g64, 'g', 64);
    memset(g65, 'g', 65);
    const struct name_case cases[] = {
        {"workers", 0, 0, 0}, {"A-z.0_9", 0, 0, 0},       {g64, 0, 0, 0},     {g65, 0, 422, 0},
        {"", 0, 422, 0},      {"a/b", 0, 422, 0}, /* '/' is allowed in namespaces, not in groups */
        {"a=b", 0, 422, 0},   {"a+b", 0, 422, 0},         {"a b", 0, 422, 0}, {"a~b", 0, 422, 0},
        {"a:b", 0, 422, 0},   {"caf\xc3\xa9", 0, 422, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct name_case *c = &cases[i];
        struct bstr s = {c->s, c->n ? c->n : strlen(c->s)};
        CLR();
        int rc = broker_check_group_name(s, "consumer_group", &E);
        if (c->status == 0) {
            if (rc)
                fail_msg("case %zu (%s): rejected: %s", i, c->s, E.detail);
        } else {
            if (!rc)
                fail_msg("case %zu (%s): accepted", i, c->s);
            assert_int_equal(E.status, 422);
            assert_string_equal(E.code, "invalid_data");
            assert_string_equal(E.location, "consumer_group");
        }
    }
}

static void test_msg_id_table(void **state)
{
    (void)state;
    struct {
        const char *s;
        int status;
        uint32_t p;
        uint64_t o;
    } cases[] = {
        {"0:0", 0, 0, 0},
        {"3:17", 0, 3, 17},
        {"63:18446744073709551615", 0, 63, UINT64_MAX},
        {"64:0", 422, 0, 0},
        {"99:1", 422, 0, 0},
        {"0:18446744073709551616", 422, 0, 0}, /* offset overflows u64 */
        {"", 422, 0, 0},
        {":", 422, 0, 0},
        {"0:", 422, 0, 0},
        {":5", 422, 0, 0},
        {"5", 422, 0, 0},
        {"a:1", 422, 0, 0},
        {"1:b", 422, 0, 0},
        {"-1:1", 422, 0, 0},
        {"1:-1", 422, 0, 0},
        {"1:2:3", 422, 0, 0},
        {" 1:2", 422, 0, 0},
        {"1:2 ", 422, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct broker_msg_id id = {99, 99};
        CLR();
        int rc = broker_parse_msg_id(S(cases[i].s), "msg_ids[2]", &id, &E);
        if (cases[i].status == 0) {
            if (rc)
                fail_msg("case %zu (%s): rejected: %s", i, cases[i].s, E.detail);
            assert_int_equal(id.partition, cases[i].p);
            assert_true(id.offset == cases[i].o);
        } else {
            if (!rc)
                fail_msg("case %zu (%s): accepted", i, cases[i].s);
            assert_int_equal(E.status, 422);
            assert_string_equal(E.code, "invalid_data");
            assert_string_equal(E.location, "msg_ids[2]");
        }
    }
}

/* ======================================================================== */
/* §3 namespaces                                                             */
/* ======================================================================== */

static void test_ns_default_exists(void **state)
{
    struct broker *b = FB(state);
    struct broker_ns_info info;
    expect_ok(broker_ns_get(b, S("default"), &info, &E));
    assert_int_equal(info.name.n, 7);
    assert_memory_equal(info.name.p, "default", 7);
    assert_false(info.retention.has_period);
    assert_false(info.retention.has_size);
    assert_false(info.retention.has_topic_bytes);
    const struct broker_ns_info *list;
    size_t n;
    assert_int_equal(broker_ns_list(b, &list, &n), 0);
    assert_int_equal(n, 1);
    assert_memory_equal(list[0].name.p, "default", 7);
    /* data operations without a namespace use it */
    pub1(b, "t", "x");
    assert_int_equal(end_offset(b, "t", 0), 1);
}

static void test_ns_configure_upsert(void **state)
{
    struct broker *b = FB(state);
    struct broker_retention r1 = {.has_period = true, .period_ms = 60 * SEC};
    struct broker_ns_info a, c, g;
    uint64_t t0 = broker_now(b);
    expect_ok(broker_ns_configure(b, S("alpha"), &r1, &a, &W, &E));
    uint64_t t1 = broker_now(b);
    assert_int_equal(a.name.n, 5);
    assert_memory_equal(a.name.p, "alpha", 5);
    assert_true(a.created_ms >= t0 && a.created_ms <= t1);
    assert_true(a.updated_ms == a.created_ms);
    assert_true(a.retention.has_period);
    assert_true(a.retention.period_ms == 60 * SEC);
    uint64_t created = a.created_ms;

    advance(b, 5 * SEC);
    struct broker_retention r2 = {.has_size = true, .size_bytes = 1 << 20};
    expect_ok(broker_ns_configure(b, S("alpha"), &r2, &c, &W, &E));
    assert_true(c.created_ms == created);           /* keeps created */
    assert_true(c.updated_ms >= created + 5 * SEC); /* a new updated */
    assert_false(c.retention.has_period);           /* retention replaced, not merged */
    assert_true(c.retention.has_size);
    assert_true(c.retention.size_bytes == 1 << 20);

    expect_ok(broker_ns_get(b, S("alpha"), &g, &E));
    assert_true(g.created_ms == created);
    assert_true(g.updated_ms == c.updated_ms);
    assert_false(g.retention.has_period);
    assert_true(g.retention.has_size && g.retention.size_bytes == 1 << 20);

    /* the default namespace can be configured too (it is not a data op) */
    expect_ok(broker_ns_configure(b, S("default"), &r1, &g, &W, &E));
    assert_true(g.retention.has_period);
    const struct broker_ns_info *list;
    size_t n;
    assert_int_equal(broker_ns_list(b, &list, &n), 0);
    assert_int_equal(n, 2);
}

static void test_ns_get_unknown_and_bad_names(void **state)
{
    struct broker *b = FB(state);
    struct broker_ns_info info;
    expect_error(broker_ns_get(b, S("nope"), &info, &E), 400, "not_found", NULL);
    struct broker_retention none = {0};
    expect_error(broker_ns_configure(b, S("bad name"), &none, &info, &W, &E), 422, "invalid_data",
                 NULL);
    assert_string_equal(E.location, "name");
    expect_error(broker_ns_configure(b, S(""), &none, &info, &W, &E), 422, "invalid_data", NULL);
    /* a rejected configure creates nothing */
    const struct broker_ns_info *list;
    size_t n;
    assert_int_equal(broker_ns_list(b, &list, &n), 0);
    assert_int_equal(n, 1);
}

static void test_ns_list_sorted(void **state)
{
    struct broker *b = FB(state);
    const char *names[] = {"zeta", "alpha", "Mid", "beta/1", "beta", "beta.0", "a+b"};
    struct broker_retention none = {0};
    struct broker_ns_info info;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        expect_ok(broker_ns_configure(b, S(names[i]), &none, &info, &W, &E));
    const struct broker_ns_info *list;
    size_t n;
    assert_int_equal(broker_ns_list(b, &list, &n), 0);
    const char *want[] = {"Mid", "a+b", "alpha", "beta", "beta.0", "beta/1", "default", "zeta"};
    assert_int_equal(n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(list[i].name.n, strlen(want[i]));
        assert_memory_equal(list[i].name.p, want[i], strlen(want[i]));
    }
}

static void test_ns_retention_roundtrip(void **state)
{
    struct broker *b = FB(state);
    struct broker_retention all = {true, 7 * DAY, true, 5ull << 30, true, 123456789};
    struct broker_ns_info info;
    expect_ok(broker_ns_configure(b, S("ret"), &all, &info, &W, &E));
    expect_ok(broker_ns_get(b, S("ret"), &info, &E));
    assert_true(info.retention.has_period && info.retention.period_ms == 7 * DAY);
    assert_true(info.retention.has_size && info.retention.size_bytes == 5ull << 30);
    assert_true(info.retention.has_topic_bytes && info.retention.topic_bytes == 123456789);
    /* null fields stay null (unlimited), including a zero value next to them */
    struct broker_retention some = {false, 0, true, 0, false, 0};
    expect_ok(broker_ns_configure(b, S("ret"), &some, &info, &W, &E));
    expect_ok(broker_ns_get(b, S("ret"), &info, &E));
    assert_false(info.retention.has_period);
    assert_true(info.retention.has_size && info.retention.size_bytes == 0);
    assert_false(info.retention.has_topic_bytes);
}

/* The `namespace` field of data operations (API.md §2). */
static void test_ns_ref_rules(void **state)
{
    struct broker *b = FB(state);
    struct broker_msg_in m = M("v");
    struct broker_ns_ref dflt = NS("default"), unknown = NS("nope"), bad = NS("bad name");
    uint32_t parts;

    expect_error(pub_ns(b, dflt, "t", &m, 1, NULL), 400, "no_explicit_default_namespace", NULL);
    expect_error(pub_ns(b, unknown, "t", &m, 1, NULL), 400, "not_found", NULL);
    expect_error(pub_ns(b, bad, "t", &m, 1, NULL), 422, "invalid_data", NULL);
    assert_string_equal(E.location, "namespace");

    expect_error(srecv_ns(b, dflt, "t", "g", 1, true, 0), 400, "no_explicit_default_namespace",
                 NULL);
    expect_error(srecv_ns(b, unknown, "t", "g", 1, true, 0), 400, "not_found", NULL);
    expect_error(qrecv_ns(b, BROKER_QUEUE, dflt, "t", "g", 1, 0), 400,
                 "no_explicit_default_namespace", NULL);
    expect_error(qrecv_ns(b, BROKER_FIFO, unknown, "t", "g", 1, 0), 400, "not_found", NULL);
    expect_error(broker_topic_configure(b, dflt, S("t"), 2, &parts, &W, &E), 400,
                 "no_explicit_default_namespace", NULL);
    expect_error(broker_topic_configure(b, unknown, S("t"), 2, &parts, &W, &E), 400, "not_found",
                 NULL);
    struct broker_topic_info ti;
    expect_error(broker_topic_get(b, unknown, S("t"), &ti, &E), 400, "not_found", NULL);
    const struct bstr *names;
    size_t n;
    expect_error(broker_topic_list(b, dflt, &names, &n, &E), 400, "no_explicit_default_namespace",
                 NULL);
    expect_error(broker_topic_list(b, unknown, &names, &n, &E), 400, "not_found", NULL);
    struct broker_ids_req ack = idsreq("t", "g", NULL, 0);
    ack.ns = unknown;
    expect_error(broker_queue_ack(b, BROKER_QUEUE, &ack, &W, &E), 400, "not_found", NULL);
    struct broker_seek_req sk = {
        .ns = dflt, .topic = TR("t"), .group = S("g"), .n_targets = 1, .kind = SEEK_EARLIEST};
    expect_error(broker_stream_seek(b, &sk, &W, &E), 400, "no_explicit_default_namespace", NULL);

    /* none of that created anything */
    expect_error(tget(b, "t"), 400, "invalid_input", NULL);
    const struct broker_ns_info *list;
    assert_int_equal(broker_ns_list(b, &list, &n), 0);
    assert_int_equal(n, 1);

    /* a configured namespace works, and is separate from default */
    struct broker_retention none = {0};
    struct broker_ns_info info;
    expect_ok(broker_ns_configure(b, S("other"), &none, &info, &W, &E));
    expect_ok(pub_ns(b, NS("other"), "t", &m, 1, NULL));
    expect_ok(pub_ns(b, NS("other"), "t", &m, 1, NULL));
    assert_int_equal(PR.parts[0].start_offset, 1);
    pub1(b, "t", "in default");
    assert_int_equal(PR.parts[0].start_offset, 0); /* default's "t" is another topic */
    expect_ok(broker_topic_list(b, NS("other"), &names, &n, &E));
    assert_int_equal(n, 1);
}

/* ======================================================================== */
/* §4 topics                                                                 */
/* ======================================================================== */

static void test_topic_implicit_creation(void **state)
{
    struct broker *b = FB(state);
    /* unknown topic for info: 400 */
    expect_error(tget(b, "p"), 400, "invalid_input", NULL);
    pub1(b, "p", "x"); /* publish to a bare topic */
    expect_ok(tget(b, "p"));
    assert_int_equal(TI.partitions, 1); /* default 1 */

    expect_ok(srecv(b, "s", "g", 10, true, 0)); /* any receive */
    assert_int_equal(NG, 0);
    expect_ok(tget(b, "s"));
    expect_ok(qrecv(b, BROKER_QUEUE, "q", "g", 10, 0));
    expect_ok(tget(b, "q"));
    expect_ok(qrecv(b, BROKER_FIFO, "f", "g", 10, 0));
    expect_ok(tget(b, "f"));
    expect_ok(tconf(b, "c", 3)); /* any configure */
    expect_ok(tget(b, "c"));
    assert_int_equal(TI.partitions, 3);
    expect_ok(qconf(b, BROKER_QUEUE, "qc", "g", NULL, 0, NULL, 0));
    expect_ok(tget(b, "qc"));
    assert_int_equal(TI.partitions, 1);

    const struct bstr *names;
    size_t n;
    expect_ok(broker_topic_list(b, DEF, &names, &n, &E));
    const char *want[] = {"c", "f", "p", "q", "qc", "s"}; /* sorted */
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(names[i].n, strlen(want[i]));
        assert_memory_equal(names[i].p, want[i], names[i].n);
    }
}

static void test_topic_configure_partition_range(void **state)
{
    struct broker *b = FB(state);
    const int64_t bad[] = {0, -1, 65, 100, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_error(tconf(b, "t", bad[i]), 400, "invalid_input",
                     "Partition count must be between 1 and 64.");
        /* rejected: the topic was not created */
        expect_error(tget(b, "t"), 400, "invalid_input", NULL);
    }
    expect_ok(tconf(b, "one", 1));
    expect_ok(tconf(b, "max", 64));
    expect_ok(tget(b, "max"));
    assert_int_equal(TI.partitions, 64);
    /* topic~p is not a topic name here */
    uint32_t out;
    expect_error(broker_topic_configure(b, DEF, S("max~1"), 64, &out, &W, &E), 422, "invalid_data",
                 NULL);
    expect_error(broker_topic_configure(b, DEF, S("bad\x01"), 2, &out, &W, &E), 422, "invalid_data",
                 NULL);
}

static void test_topic_configure_only_grows(void **state)
{
    struct broker *b = FB(state);
    expect_ok(tconf(b, "t", 4));
    expect_error(tconf(b, "t", 2), 400, "invalid_input",
                 "Cannot decrease partition count. Only increases are allowed.");
    expect_error(tconf(b, "t", 1), 400, "invalid_input",
                 "Cannot decrease partition count. Only increases are allowed.");
    expect_ok(tconf(b, "t", 4)); /* equal → 200 */
    expect_ok(tget(b, "t"));
    assert_int_equal(TI.partitions, 4);
    expect_ok(tconf(b, "t", 9));
    expect_ok(tget(b, "t"));
    assert_int_equal(TI.partitions, 9);
    /* an implicitly created topic has 1 partition and can grow */
    pub1(b, "u", "x");
    expect_ok(tconf(b, "u", 2));
    struct broker_msg_in m = M("y");
    expect_ok(pub(b, "u~1", &m, 1));
    assert_int_equal(PR.parts[0].partition, 1);
}

/* ======================================================================== */
/* §5 publish                                                                */
/* ======================================================================== */

static void test_publish_offsets_consecutive(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "a", 5);
    assert_int_equal(PR.n_parts, 1);
    assert_int_equal(PR.parts[0].partition, 0);
    assert_int_equal(PR.parts[0].start_offset, 0);
    assert_int_equal(PR.parts[0].offset, 5); /* one past the last */
    assert_false(PR.duplicate);
    assert_int_equal(PR.topic.n, 1);
    assert_memory_equal(PR.topic.p, "t", 1);
    pubn(b, "t", "b", 3);
    assert_int_equal(PR.parts[0].start_offset, 5);
    assert_int_equal(PR.parts[0].offset, 8);
    /* request order = offset order */
    expect_ok(srecv(b, "t", "g", 100, true, 0));
    assert_int_equal(NG, 8);
    const char *want[] = {"a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"};
    for (size_t i = 0; i < NG; i++) {
        assert_int_equal(G[i].offset, i);
        assert_int_equal(G[i].partition, 0);
        assert_string_equal(G[i].value, want[i]);
    }
}

/* djb2 as API.md §5 defines it, written independently of the broker. */
static uint32_t ref_djb2(const char *s, size_t n)
{
    uint32_t h = 5381;
    for (size_t i = 0; i < n; i++)
        h = (uint32_t)(h * 33u + (unsigned char)s[i]);
    return h;
}

static void test_publish_djb2_partitioning(void **state)
{
    struct broker *b = FB(state);
    /* the reference against values computed by hand / elsewhere */
    assert_int_equal(ref_djb2("", 0), 5381);
    assert_int_equal(ref_djb2("a", 1), 177670);
    assert_int_equal(ref_djb2("hello", 5), 261238937u);
    assert_int_equal(ref_djb2("user-42", 7), 1170314839u);
    assert_int_equal(ref_djb2("zzzzzzzzzzzzzzzzzzzz", 20), 449770637u); /* wraps */
    assert_int_equal(ref_djb2("\xff\xfe", 2),
                     (5381u * 33u + 255u) * 33u + 254u); /* unsigned bytes */

    const uint32_t P = 7;
    expect_ok(tconf(b, "k", P));
    /* one message per call: the partition is djb2(key) % partitions */
    const char *keys[] = {"",         "a",  "hello", "user-42", "order:9", "zzzzzzzzzzzzzzzzzzzz",
                          "\xff\xfe", "k1", "k2",    "k3",      "k4",      "k5",
                          "k6",       "k7", "k8"};
    size_t nk = sizeof keys / sizeof keys[0];
    for (size_t i = 0; i < nk; i++) {
        pubk(b, "k", "v", keys[i]);
        assert_int_equal(PR.n_parts, 1);
        assert_int_equal(PR.parts[0].partition, ref_djb2(keys[i], strlen(keys[i])) % P);
    }
    /* one call with many keys: one entry per partition, ascending, each
     * partition's messages consecutive in request order */
    expect_ok(tconf(b, "m", P));
    struct broker_msg_in ms[40];
    char vals[40][16], ks[40][16];
    uint32_t count[7] = {0};
    for (int i = 0; i < 40; i++) {
        snprintf(vals[i], sizeof vals[i], "v%d", i);
        snprintf(ks[i], sizeof ks[i], "key-%d", i % 13);
        ms[i] = MK(vals[i], ks[i]);
        count[ref_djb2(ks[i], strlen(ks[i])) % P]++;
    }
    expect_ok(pub(b, "m", ms, 40));
    uint32_t used = 0;
    for (uint32_t p = 0; p < P; p++)
        used += count[p] > 0;
    assert_int_equal(PR.n_parts, used);
    for (uint32_t i = 0; i < PR.n_parts; i++) {
        if (i)
            assert_true(PR.parts[i].partition > PR.parts[i - 1].partition);
        assert_int_equal(PR.parts[i].start_offset, 0);
        assert_int_equal(PR.parts[i].offset, count[PR.parts[i].partition]);
    }
    for (uint32_t p = 0; p < P; p++) {
        char tp[16];
        snprintf(tp, sizeof tp, "m~%u", p);
        expect_ok(srecv(b, tp, "reader", 100, true, 0));
        assert_int_equal(NG, count[p]);
        int last = -1;
        for (size_t i = 0; i < NG; i++) {
            assert_int_equal(G[i].partition, p);
            assert_int_equal(G[i].offset, i);
            int idx = atoi(G[i].value + 1);
            assert_true(idx > last); /* request order */
            last = idx;
            assert_int_equal(ref_djb2(ks[idx], strlen(ks[idx])) % P, p);
            assert_true(G[i].has_key);
            assert_string_equal(G[i].key, ks[idx]);
        }
    }
}

static void test_publish_keyless_spread(void **state)
{
    struct broker *b = FB(state);
    expect_ok(tconf(b, "t", 4));
    pubn(b, "t", "v", 8);
    assert_true(PR.n_parts >= 2); /* the server spreads keyless messages */
    uint64_t total = 0;
    for (uint32_t i = 0; i < PR.n_parts; i++) {
        if (i)
            assert_true(PR.parts[i].partition > PR.parts[i - 1].partition);
        total += PR.parts[i].offset - PR.parts[i].start_offset;
    }
    assert_int_equal(total, 8);
    /* and across calls */
    bool seen[4] = {false};
    for (int i = 0; i < 8; i++) {
        pub1(b, "t", "one");
        seen[PR.parts[0].partition] = true;
    }
    int distinct = 0;
    for (int p = 0; p < 4; p++)
        distinct += seen[p];
    assert_true(distinct >= 2);
}

static void test_publish_partition_routing(void **state)
{
    struct broker *b = FB(state);
    expect_ok(tconf(b, "t", 3));
    struct broker_msg_in ms[3] = {M("a"), M("b"), M("c")};
    expect_ok(pub(b, "t~2", ms, 3));
    assert_int_equal(PR.n_parts, 1);
    assert_int_equal(PR.parts[0].partition, 2);
    assert_int_equal(PR.parts[0].start_offset, 0);
    assert_int_equal(PR.parts[0].offset, 3);
    assert_int_equal(end_offset(b, "t", 0), 0);
    assert_int_equal(end_offset(b, "t", 1), 0);

    /* a key with topic~p, even on one message of several */
    struct broker_msg_in mk[2] = {M("a"), MK("b", "k")};
    expect_error(pub(b, "t~1", mk, 2), 400, "invalid_input",
                 "msg key cannot be specified alongside a specific partition");
    expect_error(pub(b, "t~3", ms, 1), 400, "invalid_input", "partition out of range");
    expect_error(pub(b, "t~63", ms, 1), 400, "invalid_input", "partition out of range");
    expect_error(pub(b, "nope~0", ms, 1), 400, "invalid_input", "topic does not exist");
    expect_error(tget(b, "nope"), 400, "invalid_input", NULL); /* not created */
    /* receives and configures of a partition an unknown topic will not have
     * are refused before the topic is created (a refused call changes nothing) */
    expect_error(srecv(b, "fresh~2", "g", 10, true, 1000), 400, "invalid_input",
                 "partition out of range");
    expect_error(qrecv(b, BROKER_QUEUE, "fresh~1", "g", 10, 1000), 400, "invalid_input",
                 "partition out of range");
    expect_error(qrecv(b, BROKER_FIFO, "fresh~5", "g", 10, 1000), 400, "invalid_input",
                 "partition out of range");
    expect_error(qconf(b, BROKER_QUEUE, "fresh~3", "g", NULL, 0, NULL, 0), 400, "invalid_input",
                 "partition out of range");
    expect_error(tget(b, "fresh"), 400, "invalid_input", NULL);
    expect_ok(qrecv(b, BROKER_QUEUE, "fresh~0", "g", 10, 1000)); /* partition 0: created */
    expect_ok(tget(b, "fresh"));
    /* rejected calls stored nothing */
    for (uint32_t p = 0; p < 3; p++)
        assert_int_equal(end_offset(b, "t", p), p == 2 ? 3 : 0);
    /* a bad topic reference is a 422 */
    expect_error(pub(b, "t~64", ms, 1), 422, "invalid_data", NULL);
    expect_error(pub(b, "t~0064", ms, 1), 422, "invalid_data", NULL);
    expect_error(pub(b, "t~99999999999999999999999", ms, 1), 422, "invalid_data", NULL);
    expect_error(pub(b, "t~", ms, 1), 422, "invalid_data", NULL);
    expect_error(pub(b, "t~+1", ms, 1), 422, "invalid_data", NULL);
    /* leading zeros name the same partition, however many */
    expect_ok(pub(b, "t~02", ms, 1));
    assert_int_equal(PR.parts[0].partition, 2);
    expect_ok(pub(b, "t~000000000000000000000002", ms, 1));
    assert_int_equal(PR.parts[0].partition, 2);
    assert_int_equal(end_offset(b, "t", 2), 5);
}

static void test_publish_empty(void **state)
{
    struct broker *b = FB(state);
    pub1(b, "t", "x");
    memset(&PR, 0xee, sizeof PR);
    expect_ok(pub(b, "t", NULL, 0));
    assert_int_equal(PR.n_parts, 0);
    assert_false(PR.duplicate);
    assert_int_equal(end_offset(b, "t", 0), 1);
}

static void test_publish_idempotency(void **state)
{
    struct broker *b = FB(state);
    expect_ok(tconf(b, "t", 4));
    struct broker_msg_in ms[6] = {MK("a", "x"), MK("b", "y"), MK("c", "z"),
                                  MK("d", "w"), MK("e", "x"), MK("f", "q")};
    expect_ok(pub_ns(b, DEF, "t", ms, 6, "req-1"));
    assert_false(PR.duplicate);
    struct broker_publish_res first = PR;
    uint64_t ends[4];
    for (uint32_t p = 0; p < 4; p++)
        ends[p] = end_offset(b, "t", p);

    /* the retry (even with other content) stores nothing and gets the original */
    advance(b, 30 * 60 * SEC);
    struct broker_msg_in other = M("other");
    expect_ok(pub_ns(b, DEF, "t", &other, 1, "req-1"));
    assert_true(PR.duplicate);
    assert_int_equal(PR.n_parts, first.n_parts);
    for (uint32_t i = 0; i < first.n_parts; i++) {
        assert_int_equal(PR.parts[i].partition, first.parts[i].partition);
        assert_int_equal(PR.parts[i].start_offset, first.parts[i].start_offset);
        assert_int_equal(PR.parts[i].offset, first.parts[i].offset);
    }
    assert_int_equal(PR.topic.n, 1);
    assert_memory_equal(PR.topic.p, "t", 1);
    for (uint32_t p = 0; p < 4; p++)
        assert_int_equal(end_offset(b, "t", p), ends[p]);

    /* scope: another key, another topic, another namespace are not duplicates */
    expect_ok(pub_ns(b, DEF, "t", &other, 1, "req-2"));
    assert_false(PR.duplicate);
    expect_ok(pub_ns(b, DEF, "t2", &other, 1, "req-1"));
    assert_false(PR.duplicate);
    struct broker_retention none = {0};
    struct broker_ns_info info;
    expect_ok(broker_ns_configure(b, S("ns2"), &none, &info, &W, &E));
    expect_ok(pub_ns(b, NS("ns2"), "t", &other, 1, "req-1"));
    assert_false(PR.duplicate);

    /* the window is 1 h from the original publish */
    advance(b, 29 * 60 * SEC);
    expect_ok(pub_ns(b, DEF, "t", &other, 1, "req-1"));
    assert_true(PR.duplicate);
    advance(b, 2 * 60 * SEC);
    uint64_t before = 0;
    for (uint32_t p = 0; p < 4; p++)
        before += end_offset(b, "t", p);
    expect_ok(pub_ns(b, DEF, "t", &other, 1, "req-1"));
    assert_false(PR.duplicate);
    uint64_t after = 0;
    for (uint32_t p = 0; p < 4; p++)
        after += end_offset(b, "t", p);
    assert_int_equal(after, before + 1);
    /* the new publish opens a new window */
    expect_ok(pub_ns(b, DEF, "t", &other, 1, "req-1"));
    assert_true(PR.duplicate);
}

static void test_publish_timestamps(void **state)
{
    struct broker *b = FB(state);
    expect_ok(tconf(b, "t", 3));
    uint64_t t0 = broker_now(b);
    pubn(b, "t", "a", 9);
    uint64_t t1 = broker_now(b);
    expect_ok(srecv(b, "t", "g", 100, true, 0));
    assert_int_equal(NG, 9);
    uint64_t ts = G[0].timestamp;
    assert_true(ts >= t0 && ts <= t1);
    for (size_t i = 0; i < NG; i++) {
        assert_true(G[i].timestamp == ts); /* the same for all messages of one call */
        assert_false(G[i].has_sched);
    }
    /* later publishes to a partition never get a lower timestamp */
    for (int i = 0; i < 5; i++) {
        if (i == 2)
            advance(b, 10 * SEC);
        pub1(b, "t~0", "later");
    }
    expect_ok(srecv(b, "t~0", "g2", 100, true, 0));
    assert_true(NG >= 5);
    uint64_t prev = 0;
    for (size_t i = 0; i < NG; i++) {
        assert_true(G[i].timestamp >= prev);
        prev = G[i].timestamp;
    }
    assert_true(G[NG - 1].timestamp >= ts + 10 * SEC);
    assert_true(G[NG - 5].timestamp >= ts);
}

static void test_publish_delay_sets_scheduled_at(void **state)
{
    struct broker *b = FB(state);
    struct broker_msg_in ms[3] = {MD("d5", 5 * SEC), MD("d0", 0), M("none")};
    expect_ok(pub(b, "t", ms, 3));
    expect_ok(srecv(b, "t", "g", 10, true, 0)); /* stream sees them at once */
    assert_int_equal(NG, 3);
    assert_true(G[0].has_sched);
    assert_true(G[0].sched == G[0].timestamp + 5 * SEC);
    assert_true(G[1].has_sched); /* 0: deliverable now, but scheduled_at is set */
    assert_true(G[1].sched == G[1].timestamp);
    assert_false(G[2].has_sched);
    /* the maximum delay is 30 days */
    struct broker_msg_in max = MD("max", 30 * DAY);
    expect_ok(pub(b, "t", &max, 1));
}

static void test_publish_limits(void **state)
{
    struct broker *b = FB(state);
    const size_t MiB = 1u << 20;
    uint8_t *big = calloc(1, MiB + 1);
    char *h4k = malloc(4097);
    char *k1k = malloc(1025);
    assert_non_null(big);
    assert_non_null(h4k);
    assert_non_null(k1k);
    memset(h4k, 'h', 4097);
    memset(k1k, 'k', 1025);
    struct broker_header hdr_ok[64];
    for (int i = 0; i < 64; i++)
        hdr_ok[i] = (struct broker_header){S("name"), S("value")};
    struct broker_header hdr65[65];
    for (int i = 0; i < 65; i++)
        hdr65[i] = (struct broker_header){S("n"), S("v")};
    struct broker_header hname[1] = {{{h4k, 4097}, S("v")}};
    struct broker_header hvalue[1] = {{S("n"), {h4k, 4097}}};
    struct broker_header hmax[1] = {{{h4k, 4096}, {h4k, 4096}}};

    struct {
        struct broker_msg_in m;
        const char *loc; /* NULL: accepted */
    } cases[] = {
        {{.value = big, .value_len = MiB + 1}, "msgs[1].value"},
        {{.value = big, .value_len = MiB}, NULL},
        {{.value = big, .value_len = 0}, NULL},
        {{.value = big, .value_len = 1, .headers = hdr65, .n_headers = 65}, "msgs[1].headers"},
        {{.value = big, .value_len = 1, .headers = hdr_ok, .n_headers = 64}, NULL},
        {{.value = big, .value_len = 1, .headers = hname, .n_headers = 1}, "msgs[1].headers"},
        {{.value = big, .value_len = 1, .headers = hvalue, .n_headers = 1}, "msgs[1].headers"},
        {{.value = big, .value_len = 1, .headers = hmax, .n_headers = 1}, NULL},
        {{.value = big, .value_len = 1, .has_key = true, .key = {k1k, 1025}}, "msgs[1].key"},
        {{.value = big, .value_len = 1, .has_key = true, .key = {k1k, 1024}}, NULL},
        {{.value = big, .value_len = 1, .has_delay = true, .delay_ms = 30 * DAY + 1},
         "msgs[1].delay_ms"},
        {{.value = big, .value_len = 1, .has_delay = true, .delay_ms = UINT64_MAX},
         "msgs[1].delay_ms"},
    };
    uint64_t stored = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* msg 0 is fine; msg 1 is the case: the call is atomic */
        struct broker_msg_in two[2] = {M("fine"), cases[i].m};
        if (cases[i].loc) {
            expect_error(pub(b, "lim", two, 2), 422, "invalid_data", NULL);
            assert_string_equal(E.location, cases[i].loc);
            assert_true(E.detail[0] != 0);
            if (stored == 0) /* nothing stored: not even the topic */
                expect_error(tget(b, "lim"), 400, "invalid_input", NULL);
            else
                assert_int_equal(end_offset(b, "lim", 0), stored);
        } else {
            CLR();
            int rc = pub(b, "lim", two, 2);
            if (rc)
                fail_msg("case %zu rejected: %s @%s", i, E.detail, E.location);
            stored += 2;
            assert_int_equal(end_offset(b, "lim", 0), stored);
        }
    }
    /* a big value comes back intact */
    for (size_t i = 0; i < MiB; i++)
        big[i] = (uint8_t)(i * 7);
    struct broker_msg_in mb = {.value = big, .value_len = MiB};
    expect_ok(pub(b, "bigv", &mb, 1));
    struct broker_receive_req r = rreq(DEF, "bigv", "g", 1, 0);
    r.start_earliest = true;
    expect_ok(broker_stream_receive(b, &r, &RR, &W, &E));
    assert_int_equal(RR.n, 1);
    assert_int_equal(RR.msgs[0].value_len, MiB);
    assert_memory_equal(RR.msgs[0].value, big, MiB);
    free(big);
    free(h4k);
    free(k1k);
}

static void test_publish_content_roundtrip(void **state)
{
    struct broker *b = FB(state);
    static const uint8_t bin[] = {0, 1, 2, 0, 255, 128, 0};
    struct broker_header hs[3] = {{S("content-type"), S("text/plain")},
                                  {S("empty"), {"", 0}},
                                  {{"bin\0ary", 7}, {"v\0v", 3}}};
    struct broker_msg_in ms[3] = {
        {.value = bin, .value_len = sizeof bin, .headers = hs, .n_headers = 3},
        {.value = (const uint8_t *)"", .value_len = 0},
        {.value = (const uint8_t *)"keyed", .value_len = 5, .has_key = true, .key = {"", 0}},
    };
    expect_ok(pub(b, "t", ms, 3));
    struct broker_receive_req r = rreq(DEF, "t", "g", 10, 0);
    r.start_earliest = true;
    expect_ok(broker_stream_receive(b, &r, &RR, &W, &E));
    assert_int_equal(RR.n, 3);
    const struct broker_msg_out *o = &RR.msgs[0];
    assert_int_equal(o->value_len, sizeof bin);
    assert_memory_equal(o->value, bin, sizeof bin);
    assert_false(o->has_key);
    assert_int_equal(o->n_headers, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o->headers[i].name.n, hs[i].name.n);
        assert_memory_equal(o->headers[i].name.p, hs[i].name.p, hs[i].name.n);
        assert_int_equal(o->headers[i].value.n, hs[i].value.n);
        if (hs[i].value.n)
            assert_memory_equal(o->headers[i].value.p, hs[i].value.p, hs[i].value.n);
    }
    assert_int_equal(RR.msgs[1].value_len, 0);
    assert_int_equal(RR.msgs[1].n_headers, 0);
    assert_true(RR.msgs[2].has_key); /* an empty key is a key */
    assert_int_equal(RR.msgs[2].key.n, 0);
}

/* ======================================================================== */
/* §6 stream                                                                 */
/* ======================================================================== */

static void test_stream_new_group_latest(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "old", 3);
    expect_ok(srecv(b, "t", "g", 10, false, 0)); /* default: latest */
    assert_int_equal(NG, 0);
    pubn(b, "t", "new", 2);
    expect_ok(srecv(b, "t", "g", 10, false, 0));
    assert_int_equal(NG, 2);
    assert_int_equal(G[0].offset, 3);
    assert_string_equal(G[0].value, "new0");
    assert_int_equal(G[1].offset, 4);
    /* start_earliest only matters for a new group */
    expect_ok(scommit(b, "t~0", "g", 4));
    expect_ok(srecv(b, "t", "g", 10, true, 0));
    assert_int_equal(NG, 0);
}

static void test_stream_new_group_earliest(void **state)
{
    struct broker *b = FB(state);
    expect_ok(tconf(b, "t", 3));
    pubn(b, "t", "m", 12);
    expect_ok(srecv(b, "t", "g", 100, true, 0));
    assert_int_equal(NG, 12); /* all partitions, from their start */
    uint64_t per[3] = {0};
    for (size_t i = 0; i < NG; i++) {
        assert_int_equal(G[i].offset, per[G[i].partition]); /* offset order per partition */
        per[G[i].partition]++;
        assert_int_equal(G[i].attempt, 0);
    }
}

static void test_stream_receive_keeps_cursor(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "m", 5);
    expect_ok(srecv(b, "t", "g", 3, true, 20 * SEC));
    assert_int_equal(NG, 3);
    assert_int_equal(G[0].offset, 0);
    expect_ok(gget(b, "t", BROKER_STREAM, "g"));
    assert_int_equal(GI.parts[0].position, 0); /* receiving does not move the cursor */
    assert_true(GI.parts[0].leased);
    advance(b, 20 * SEC); /* the lease expires */
    expect_ok(srecv(b, "t", "g", 10, true, 20 * SEC));
    assert_int_equal(NG, 5); /* redelivered from the cursor */
    assert_int_equal(G[0].offset, 0);
    assert_int_equal(G[4].offset, 4);
}

static void test_stream_no_available_leases(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "one", "m", 3);
    expect_ok(srecv(b, "one", "g", 10, true, 60 * SEC));
    assert_int_equal(NG, 3);
    expect_error(srecv(b, "one", "g", 10, true, 60 * SEC), 400, "no_available_leases", NULL);
    expect_error(srecv(b, "one~0", "g", 10, true, 60 * SEC), 400, "no_available_leases", NULL);
    /* another group is not affected */
    expect_ok(srecv(b, "one", "other", 10, true, 60 * SEC));
    assert_int_equal(NG, 3);
    /* still leased just before expiry; free at expiry */
    advance(b, 50 * SEC);
    expect_error(srecv(b, "one", "g", 10, true, 60 * SEC), 400, "no_available_leases", NULL);
    advance(b, 10 * SEC);
    expect_ok(srecv(b, "one", "g", 10, true, 60 * SEC));
    assert_int_equal(NG, 3);

    /* two partitions: a batch that fills from one leases only that one */
    expect_ok(tconf(b, "two", 2));
    pubn(b, "two~0", "a", 2);
    pubn(b, "two~1", "b", 2);
    expect_ok(srecv(b, "two", "g", 2, true, 60 * SEC));
    assert_int_equal(NG, 2);
    uint32_t p1 = G[0].partition;
    assert_int_equal(G[1].partition, p1);
    expect_ok(srecv(b, "two", "g", 2, true, 60 * SEC));
    assert_int_equal(NG, 2);
    assert_int_equal(G[0].partition, 1 - p1);
    expect_error(srecv(b, "two", "g", 2, true, 60 * SEC), 400, "no_available_leases", NULL);

    /* a partition with nothing to read is not leased */
    expect_ok(tconf(b, "empty", 1));
    expect_ok(srecv(b, "empty", "g", 10, true, 60 * SEC));
    assert_int_equal(NG, 0);
    expect_ok(srecv(b, "empty", "g", 10, true, 60 * SEC));
    assert_int_equal(NG, 0);
    expect_ok(gget(b, "empty", BROKER_STREAM, "g"));
    assert_false(GI.parts[0].leased);
}

static void test_stream_commit(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "m", 5);
    expect_ok(srecv(b, "t", "g", 10, true, 60 * SEC));
    assert_int_equal(NG, 5); /* last handed out: 4 */
    /* partial commit keeps the lease */
    expect_ok(scommit(b, "t~0", "g", 2));
    expect_ok(gget(b, "t", BROKER_STREAM, "g"));
    assert_int_equal(GI.parts[0].position, 3);
    assert_true(GI.parts[0].leased);
    expect_error(srecv(b, "t", "g", 10, true, 60 * SEC), 400, "no_available_leases", NULL);
    /* after the lease expires the next receive starts at offset + 1 */
    advance(b, 60 * SEC);
    expect_ok(srecv(b, "t", "g", 10, true, 60 * SEC));
    assert_int_equal(NG, 2);
    assert_int_equal(G[0].offset, 3);
    assert_int_equal(G[1].offset, 4);
    /* full commit (offset >= last handed out) releases the lease */
    expect_ok(scommit(b, "t~0", "g", 4));
    expect_ok(gget(b, "t", BROKER_STREAM, "g"));
    assert_false(GI.parts[0].leased);
    assert_int_equal(GI.parts[0].position, 5);
    expect_ok(srecv(b, "t", "g", 10, true, 60 * SEC));
    assert_int_equal(NG, 0);
    pubn(b, "t", "n", 2);
    expect_ok(srecv(b, "t", "g", 10, true, 60 * SEC));
    assert_int_equal(NG, 2);
    assert_int_equal(G[0].offset, 5);
    /* committing beyond what was handed out also releases */
    expect_ok(scommit(b, "t~0", "g", 100));
    expect_ok(gget(b, "t", BROKER_STREAM, "g"));
    assert_false(GI.parts[0].leased);
    assert_int_equal(GI.parts[0].position, 101);
    /* a commit can move the cursor back (at-least-once replays) */
    expect_ok(scommit(b, "t~0", "g", 0));
    expect_ok(srecv(b, "t", "g", 10, true, 60 * SEC));
    assert_int_equal(NG, 6);
    assert_int_equal(G[0].offset, 1);
}

static void test_stream_commit_errors(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "m", 2);
    expect_error(scommit(b, "t", "g", 0), 422, "invalid_data", NULL); /* bare topic */
    expect_error(scommit(b, "nope~0", "g", 0), 400, "invalid_input", "partition must exist");
    expect_error(scommit(b, "t~1", "g", 0), 400, "invalid_input", "partition must exist");
    expect_error(scommit(b, "t~0", "g", 0), 400, "invalid_input", "lease not found");
    struct broker_commit_req r = {.ns = DEF, .topic = TR("t~0"), .group = S("bad/group")};
    expect_error(broker_stream_commit(b, &r, &W, &E), 422, "invalid_data", NULL);
    /* a queue group of that name gives no stream cursor */
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 0));
    expect_error(scommit(b, "t~0", "g", 0), 400, "invalid_input", "lease not found");
    /* once the group has a cursor, commit works */
    expect_ok(srecv(b, "t", "g", 10, true, 0));
    expect_ok(scommit(b, "t~0", "g", 1));
}

static void test_stream_seek(void **state)
{
    struct broker *b = FB(state);
    uint64_t ts[4];
    for (int i = 0; i < 4; i++) {
        char v[8];
        snprintf(v, sizeof v, "m%d", i);
        if (i)
            advance(b, 10 * SEC);
        pub1(b, "t", v);
        expect_ok(srecv(b, "t", "peek", 10, true, 1));
        ts[i] = G[NG - 1].timestamp;
        expect_ok(scommit(b, "t~0", "peek", (uint64_t)i));
    }
    assert_true(ts[1] >= ts[0] + 10 * SEC);
    /* timestamp: the first message with timestamp >= it */
    expect_ok(sseek(b, "t", "g", 1, SEEK_TIMESTAMP, ts[1]));
    expect_ok(srecv(b, "t", "g", 10, false, 1));
    assert_int_equal(NG, 3);
    assert_int_equal(G[0].offset, 1);
    expect_ok(sseek(b, "t", "g", 1, SEEK_TIMESTAMP, ts[1] + 1));
    expect_ok(srecv(b, "t", "g", 10, false, 1));
    assert_int_equal(NG, 2);
    assert_int_equal(G[0].offset, 2);
    expect_ok(sseek(b, "t", "g", 1, SEEK_TIMESTAMP, 0)); /* 0 → earliest */
    expect_ok(srecv(b, "t", "g", 10, false, 1));
    assert_int_equal(NG, 4);
    assert_int_equal(G[0].offset, 0);
    expect_ok(sseek(b, "t", "g", 1, SEEK_TIMESTAMP, broker_now(b) + DAY)); /* future → latest */
    expect_ok(srecv(b, "t", "g", 10, false, 1));
    assert_int_equal(NG, 0);
    /* position */
    expect_ok(sseek(b, "t", "g", 1, SEEK_EARLIEST, 0));
    expect_ok(srecv(b, "t", "g", 10, false, 1));
    assert_int_equal(NG, 4);
    expect_ok(sseek(b, "t", "g", 1, SEEK_LATEST, 0));
    expect_ok(srecv(b, "t", "g", 10, false, 1));
    assert_int_equal(NG, 0);
    /* offset, with topic~p */
    expect_ok(sseek(b, "t~0", "g", 1, SEEK_OFFSET, 2));
    expect_ok(srecv(b, "t", "g", 10, false, 1));
    assert_int_equal(NG, 2);
    assert_int_equal(G[0].offset, 2);
    expect_ok(gget(b, "t", BROKER_STREAM, "g"));
    assert_int_equal(GI.parts[0].position, 2);

    /* seek overwrites the cursor and releases the lease */
    expect_ok(srecv(b, "t", "held", 10, true, 60 * SEC));
    assert_int_equal(NG, 4);
    expect_error(srecv(b, "t", "held", 10, true, 60 * SEC), 400, "no_available_leases", NULL);
    expect_ok(sseek(b, "t", "held", 1, SEEK_EARLIEST, 0));
    expect_ok(srecv(b, "t", "held", 10, true, 60 * SEC));
    assert_int_equal(NG, 4);

    /* errors */
    expect_error(sseek(b, "t", "g", 1, SEEK_OFFSET, 1), 400, "invalid_input", NULL);
    const char *one = "exactly one of 'offset', 'position', or 'timestamp' must be provided";
    expect_error(sseek(b, "t", "g", 0, SEEK_EARLIEST, 0), 400, "invalid_input", one);
    expect_error(sseek(b, "t", "g", 2, SEEK_EARLIEST, 0), 400, "invalid_input", one);
    expect_error(sseek(b, "t", "g", 3, SEEK_OFFSET, 0), 400, "invalid_input", one);
    expect_error(sseek(b, "nope", "g", 1, SEEK_EARLIEST, 0), 400, "invalid_input",
                 "topic must exist");
    expect_error(tget(b, "nope"), 400, "invalid_input", NULL); /* seek creates no topic */
}

static void test_stream_seek_initializes_new_group(void **state)
{
    struct broker *b = FB(state);
    expect_ok(tconf(b, "t", 2));
    pubn(b, "t~0", "a", 3);
    pubn(b, "t~1", "b", 3);
    /* a new group's first seek on one partition: the others start at latest */
    expect_ok(sseek(b, "t~0", "g", 1, SEEK_OFFSET, 1));
    expect_ok(srecv(b, "t", "g", 10, true, 1)); /* start_earliest no longer applies */
    assert_int_equal(NG, 2);
    for (size_t i = 0; i < NG; i++)
        assert_int_equal(G[i].partition, 0);
    assert_int_equal(G[0].offset, 1);
    pubn(b, "t~1", "c", 1);
    advance(b, 1);
    expect_ok(srecv(b, "t~1", "g", 10, true, 1));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].offset, 3);
}

static void test_stream_partitions_added_later(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "old", 2);
    expect_ok(srecv(b, "t", "g", 10, false, 0)); /* latest on partition 0 */
    assert_int_equal(NG, 0);
    expect_ok(tconf(b, "t", 3));
    pubn(b, "t~1", "p1-", 2);
    pubn(b, "t~2", "p2-", 1);
    pubn(b, "t~0", "p0-", 1);
    expect_ok(srecv(b, "t", "g", 100, false, 0));
    assert_int_equal(NG, 4);
    for (size_t i = 0; i < NG; i++) {
        if (G[i].partition == 0)
            assert_int_equal(G[i].offset, 2);
        else
            assert_true(G[i].offset <= 1); /* from the beginning, not "latest" */
    }
    int i1 = find_value("p1-0");
    assert_true(i1 >= 0);
    assert_int_equal(G[i1].offset, 0);
    /* a group created after the growth starts every partition at latest */
    expect_ok(srecv(b, "t", "late", 100, false, 0));
    assert_int_equal(NG, 0);
}

static void test_stream_skips_trimmed(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "m", 6);
    expect_ok(srecv(b, "t", "g", 2, true, 60 * SEC));
    assert_int_equal(NG, 2);
    expect_ok(scommit(b, "t~0", "g", 1)); /* cursor 2, lease released */
    struct broker_trim_req tr = {
        .ns = DEF, .topic = TR("t~0"), .has_before_offset = true, .before_offset = 4};
    struct broker_trim_res res;
    expect_ok(broker_topic_trim(b, &tr, &res, &W, &E));
    expect_ok(srecv(b, "t", "g", 10, true, 60 * SEC));
    assert_int_equal(NG, 2); /* 2 and 3 are gone: no stall */
    assert_int_equal(G[0].offset, 4);
    assert_int_equal(G[1].offset, 5);
    /* a new group with earliest starts at the new start */
    expect_ok(srecv(b, "t", "new", 10, true, 60 * SEC));
    assert_int_equal(NG, 2);
    assert_int_equal(G[0].offset, 4);
}

static void test_stream_batch_and_lease_limits(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "m", 1500);
    expect_ok(srecv(b, "t", "d", 0, true, 0));
    assert_int_equal(NG, 10); /* default batch_size */
    expect_ok(srecv(b, "t", "three", 3, true, 0));
    assert_int_equal(NG, 3);
    expect_ok(srecv(b, "t", "big", 65535, true, 0));
    assert_int_equal(NG, 1000); /* capped, not refused */
    /* lease_duration_ms: 1 ms .. 12 h */
    struct broker_receive_req r = rreq(DEF, "t", "x", 1, 0);
    r.has_lease = true;
    r.lease_ms = 0;
    expect_error(broker_stream_receive(b, &r, &RR, &W, &E), 422, "invalid_data", NULL);
    assert_string_equal(E.location, "lease_duration_ms");
    r.lease_ms = 12 * HOUR + 1;
    expect_error(broker_stream_receive(b, &r, &RR, &W, &E), 422, "invalid_data", NULL);
    assert_string_equal(E.location, "lease_duration_ms");
    r.lease_ms = 12 * HOUR;
    r.start_earliest = true;
    expect_ok(broker_stream_receive(b, &r, &RR, &W, &E));
    assert_int_equal(RR.n, 1);
    /* the default stream lease is 300000 ms */
    expect_ok(srecv(b, "t", "dl", 1, true, 0));
    advance(b, 299 * SEC);
    expect_error(srecv(b, "t", "dl", 1, true, 0), 400, "no_available_leases", NULL);
    advance(b, 1 * SEC);
    expect_ok(srecv(b, "t", "dl", 1, true, 0));
    assert_int_equal(NG, 1);
    /* a bad group name */
    expect_error(srecv(b, "t", "a b", 1, true, 0), 422, "invalid_data", NULL);
    assert_string_equal(E.location, "consumer_group");
}

/* ======================================================================== */
/* §7 queue                                                                  */
/* ======================================================================== */

static void test_queue_receive_ack(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "m", 5);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 30 * SEC));
    assert_int_equal(NG, 5); /* a new group starts at the earliest retained message */
    for (size_t i = 0; i < NG; i++) {
        assert_int_equal(G[i].attempt, 1);
        assert_int_equal(G[i].partition, 0);
    }
    struct broker_msg_id all[5];
    for (size_t i = 0; i < NG; i++)
        all[i] = ID(G[i].partition, G[i].offset);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 30 * SEC));
    assert_int_equal(NG, 0); /* all leased */
    struct broker_msg_id two[2] = {all[1], all[3]};
    expect_ok(qack(b, BROKER_QUEUE, "t", "g", two, 2));
    expect_ok(qack(b, BROKER_QUEUE, "t", "g", two, 2));  /* idempotent */
    expect_ok(qack(b, BROKER_QUEUE, "t", "g", NULL, 0)); /* empty */
    /* API.md §7: an empty list answers {} at once, also for a topic that does
     * not exist (not created by it); a non-empty one needs the topic */
    struct broker_msg_id one = ID(0, 0);
    expect_ok(qack(b, BROKER_QUEUE, "nosuch", "g", NULL, 0));
    expect_ok(qnack(b, BROKER_FIFO, "nosuch", "g", NULL, 0));
    expect_ok(qextend(b, BROKER_QUEUE, "nosuch", "g", NULL, 0, 1000));
    expect_error(qack(b, BROKER_QUEUE, "nosuch", "g", &one, 1), 400, "invalid_input",
                 "topic must exist");
    expect_error(qack(b, BROKER_QUEUE, "bad~name~x", "g", NULL, 0), 422, "invalid_data", NULL);
    expect_error(tget(b, "nosuch"), 400, "invalid_input", NULL);
    advance(b, 30 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 30 * SEC));
    assert_int_equal(NG, 3); /* the unacked ones come back */
    for (size_t i = 0; i < NG; i++) {
        assert_int_equal(G[i].attempt, 2);
        assert_true(G[i].offset == 0 || G[i].offset == 2 || G[i].offset == 4);
    }
    expect_ok(qack(b, BROKER_QUEUE, "t", "g", all, 5));
    advance(b, 30 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 30 * SEC));
    assert_int_equal(NG, 0);
    pub1(b, "t", "later");
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 30 * SEC));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].offset, 5);
    assert_string_equal(G[0].value, "later");
    assert_int_equal(G[0].attempt, 1);
}

static void test_queue_others_leases_do_not_block(void **state)
{
    struct broker *b = FB(state);
    expect_ok(tconf(b, "t", 2));
    pubn(b, "t", "m", 6);
    bool seen[2][6] = {{false}};
    for (int round = 0; round < 3; round++) {
        expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 2, 60 * SEC));
        assert_int_equal(NG, 2);
        for (size_t i = 0; i < NG; i++) {
            assert_false(seen[G[i].partition][G[i].offset]); /* never twice while leased */
            seen[G[i].partition][G[i].offset] = true;
        }
    }
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 2, 60 * SEC));
    assert_int_equal(NG, 0);
    /* topic~p limits the receive to p */
    pubn(b, "t", "n", 6);
    expect_ok(qrecv(b, BROKER_QUEUE, "t~1", "g", 10, 60 * SEC));
    assert_int_equal(NG, 3);
    for (size_t i = 0; i < NG; i++)
        assert_int_equal(G[i].partition, 1);
    expect_error(qrecv(b, BROKER_QUEUE, "t~5", "g", 10, 60 * SEC), 400, "invalid_input", NULL);
}

static void test_queue_ack_errors(void **state)
{
    struct broker *b = FB(state);
    struct broker_msg_id id = ID(0, 0);
    expect_error(qack(b, BROKER_QUEUE, "nope", "g", &id, 1), 400, "invalid_input",
                 "topic must exist");
    expect_error(qnack(b, BROKER_QUEUE, "nope", "g", &id, 1), 400, "invalid_input",
                 "topic must exist");
    expect_error(qextend(b, BROKER_QUEUE, "nope", "g", &id, 1, 0), 400, "invalid_input",
                 "topic must exist");
    expect_error(qredrive(b, BROKER_FIFO, "nope", "g"), 400, "invalid_input", "topic must exist");
    pub1(b, "t", "x");
    expect_error(qack(b, BROKER_QUEUE, "t", "bad group", &id, 1), 422, "invalid_data", NULL);
    /* acking ids nothing delivered is harmless (idempotent) */
    struct broker_msg_id ids[2] = {ID(0, 0), ID(0, 77)};
    expect_ok(qack(b, BROKER_QUEUE, "t", "g", ids, 2));
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 0));
    assert_int_equal(NG, 1);
    /* nack delay_ms over 30 days */
    expect_error(qnack_delay(b, BROKER_QUEUE, "t", "g", &id, 1, 30 * DAY + 1), 422, "invalid_data",
                 NULL);
    assert_string_equal(E.location, "delay_ms");
    /* extend lease bounds */
    expect_error(qextend(b, BROKER_QUEUE, "t", "g", &id, 1, 12 * HOUR + 1), 422, "invalid_data",
                 NULL);
    assert_string_equal(E.location, "lease_duration_ms");
    /* queue receive lease bounds */
    expect_error(qrecv(b, BROKER_QUEUE, "t", "g", 1, 12 * HOUR + 1), 422, "invalid_data", NULL);
    assert_string_equal(E.location, "lease_duration_ms");
}

static void test_queue_nack_retry_schedule(void **state)
{
    struct broker *b = FB(state);
    const uint64_t sched[2] = {10 * SEC, 20 * SEC};
    expect_ok(qconf(b, BROKER_QUEUE, "t", "g", sched, 2, NULL, 0));
    pub1(b, "t", "m");
    struct broker_msg_id id = ID(0, 0);
    int deliveries = 0;
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].attempt, 1);
    deliveries++;
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &id, 1)); /* n=0 → retry_schedule[0] */
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.waiting_retry, 1);
    assert_int_equal(GI.in_flight, 0);
    advance(b, 5 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 0);
    advance(b, 5 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].attempt, 2);
    deliveries++;
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &id, 1)); /* n=1 → retry_schedule[1] */
    advance(b, 15 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 0);
    advance(b, 5 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].attempt, 3);
    deliveries++;
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &id, 1)); /* n=2 = len → dead */
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 1);
    assert_int_equal(GI.waiting_retry, 0);
    advance(b, DAY);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 0);
    assert_int_equal(deliveries, 3); /* len(retry_schedule) + 1 */
    /* dead-lettering an unleased message does nothing more */
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &id, 1));
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 1);
}

static void test_queue_nack_without_config_dead_letters(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "m", 3);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 3);
    struct broker_msg_id id = ID(0, 1);
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &id, 1));
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 1);
    assert_int_equal(GI.in_flight, 2);
    advance(b, 60 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 2); /* the dead one is not redelivered */
    assert_int_equal(find_value("m1"), -1);
    struct broker_msg_id rest[2] = {ID(0, 0), ID(0, 2)};
    expect_ok(qack(b, BROKER_QUEUE, "t", "g", rest, 2));
    /* redrive: available again, delivery count reset */
    expect_ok(qredrive(b, BROKER_QUEUE, "t", "g"));
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 0);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "m1");
    assert_int_equal(G[0].attempt, 1);
    /* and it dead-letters again on the first nack */
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &id, 1));
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 1);
    /* redrive of a group that never existed is a no-op */
    expect_ok(qredrive(b, BROKER_QUEUE, "t", "ghost"));
}

static void test_queue_nack_delay_override(void **state)
{
    struct broker *b = FB(state);
    const uint64_t sched[1] = {100 * SEC};
    expect_ok(qconf(b, BROKER_QUEUE, "t", "g", sched, 1, NULL, 0));
    pub1(b, "t", "m");
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    struct broker_msg_id id = ID(0, 0);
    expect_ok(qnack_delay(b, BROKER_QUEUE, "t", "g", &id, 1, 10 * SEC));
    advance(b, 5 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 0);
    advance(b, 5 * SEC); /* the given delay, not retry_schedule[0] */
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].attempt, 2);
    /* the override used up the retry: the next nack dead-letters */
    expect_ok(qnack_delay(b, BROKER_QUEUE, "t", "g", &id, 1, 1 * SEC));
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 1);
}

/* [ext] nack with dead_letter: a permanent failure skips the retries left. */
static void test_queue_nack_dead_letter(void **state)
{
    struct broker *b = FB(state);
    uint64_t sched[2] = {1000, 1000};
    expect_ok(qconf(b, BROKER_QUEUE, "t", "g", sched, 2, "dead", 0));
    expect_ok(qconf(b, BROKER_FIFO, "t", "f", sched, 2, NULL, 0));
    struct broker_msg_in ms[2] = {M("a"), M("b")};
    expect_ok(pub(b, "t", ms, 2));
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 2);
    struct broker_msg_id a = ID(0, 0), bb = ID(0, 1);
    expect_ok(qnack_dead(b, BROKER_QUEUE, "t", "g", &a, 1)); /* retries left, but dead */
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &bb, 1));     /* a normal retry */
    expect_ok(tget(b, "dead"));
    assert_int_equal(TI.parts[0].end_offset, 1); /* only "a" was copied */
    /* the copy carries the reason as one more header, the value intact */
    expect_ok(srecv(b, "dead", "reader", 10, true, 0));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "a");
    bool found = false;
    for (size_t h = 0; h < RR.msgs[0].n_headers; h++) /* RR: the raw result */
        if (RR.msgs[0].headers[h].name.n == 25 &&
            memcmp(RR.msgs[0].headers[h].name.p, "coyote-dead-letter-reason", 25) == 0) {
            assert_int_equal(RR.msgs[0].headers[h].value.n, 22);
            assert_memory_equal(RR.msgs[0].headers[h].value.p, "bad input: no order id", 22);
            found = true;
        }
    assert_true(found);
    advance(b, 2 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "b"); /* "a" never comes back */
    /* without a dlq_topic it is dead for the group, and redrive brings it back */
    expect_ok(qrecv(b, BROKER_FIFO, "t", "f", 10, 60 * SEC));
    assert_int_equal(NG, 2);
    expect_ok(qnack_dead(b, BROKER_FIFO, "t", "f", &a, 1));
    expect_ok(gget(b, "t", BROKER_FIFO, "f"));
    assert_int_equal(GI.dead, 1);
}

static void test_queue_dlq_topic(void **state)
{
    struct broker *b = FB(state);
    expect_ok(qconf(b, BROKER_QUEUE, "t", "g", NULL, 0, "dead", 0));
    assert_true(QC.has_dlq_topic);
    assert_int_equal(QC.dlq_topic.n, 4);
    assert_memory_equal(QC.dlq_topic.p, "dead", 4);
    struct broker_header h = {S("h"), S("hv")};
    struct broker_msg_in ms[4] = {MK("a", "ka"), M("b"), M("c"), M("d")};
    ms[0].headers = &h;
    ms[0].n_headers = 1;
    expect_ok(pub(b, "t", ms, 4));
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 4);
    /* several in one call: each gets its own offset in the DLQ topic */
    struct broker_msg_id ids[3] = {ID(0, 0), ID(0, 1), ID(0, 2)};
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", ids, 3));
    expect_ok(tget(b, "dead"));
    uint64_t total = 0;
    for (uint32_t p = 0; p < TI.partitions; p++)
        total += TI.parts[p].end_offset - TI.parts[p].start_offset;
    assert_int_equal(total, 3);
    expect_ok(srecv(b, "dead", "r", 10, true, 0));
    assert_int_equal(NG, 3);
    for (size_t i = 0; i < NG; i++)
        for (size_t j = 0; j < i; j++)
            assert_false(G[i].partition == G[j].partition && G[i].offset == G[j].offset);
    int ia = find_value("a");
    assert_true(ia >= 0 && find_value("b") >= 0 && find_value("c") >= 0);
    assert_int_equal(G[ia].n_headers, 1); /* content kept */
    /* the originals are dead-lettered for the group (API.md §7: redrive brings
     * them back), and never delivered again until then */
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 3);
    assert_int_equal(GI.in_flight, 1);
    struct broker_msg_id a0 = ID(0, 0);
    expect_error(qextend(b, BROKER_QUEUE, "t", "g", &a0, 1, 1000), 400, "invalid_input",
                 "message is in the dead-letter queue");
    advance(b, 60 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "d");
    /* a second dead-lettering continues the DLQ numbering */
    struct broker_msg_id d = ID(0, 3);
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &d, 1));
    expect_ok(tget(b, "dead"));
    total = 0;
    for (uint32_t p = 0; p < TI.partitions; p++)
        total += TI.parts[p].end_offset;
    assert_int_equal(total, 4);
    /* redrive makes the four available again, delivery counts reset, and
     * leaves the copies where they are */
    expect_ok(qredrive(b, BROKER_QUEUE, "t", "g"));
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 0);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 4);
    for (size_t i = 0; i < NG; i++)
        assert_int_equal(G[i].attempt, 1);
    expect_ok(tget(b, "dead"));
    total = 0;
    for (uint32_t p = 0; p < TI.partitions; p++)
        total += TI.parts[p].end_offset;
    assert_int_equal(total, 4);
    /* an existing multi-partition DLQ topic: still one offset each */
    expect_ok(tconf(b, "dead2", 3));
    expect_ok(qconf(b, BROKER_QUEUE, "u", "g", NULL, 0, "dead2", 0));
    pubn(b, "u", "x", 5);
    expect_ok(qrecv(b, BROKER_QUEUE, "u", "g", 10, 60 * SEC));
    struct broker_msg_id five[5];
    for (size_t i = 0; i < 5; i++)
        five[i] = ID(G[i].partition, G[i].offset);
    expect_ok(qnack(b, BROKER_QUEUE, "u", "g", five, 5));
    expect_ok(srecv(b, "dead2", "r", 10, true, 0));
    assert_int_equal(NG, 5);
    for (size_t i = 0; i < NG; i++)
        for (size_t j = 0; j < i; j++)
            assert_false(G[i].partition == G[j].partition && G[i].offset == G[j].offset);
}

static void test_queue_extend_lease(void **state)
{
    struct broker *b = FB(state);
    /* success: extends from now */
    pub1(b, "ok", "m");
    expect_ok(qrecv(b, BROKER_QUEUE, "ok", "g", 10, 20 * SEC));
    struct broker_msg_id id = ID(0, 0);
    advance(b, 10 * SEC);
    expect_ok(qextend(b, BROKER_QUEUE, "ok", "g", &id, 1, 60 * SEC));
    advance(b, 50 * SEC); /* the old lease would have expired 40 s ago */
    expect_ok(qrecv(b, BROKER_QUEUE, "ok", "g", 10, 20 * SEC));
    assert_int_equal(NG, 0);
    advance(b, 10 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "ok", "g", 10, 20 * SEC));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].attempt, 2);
    /* the default extension is 30000 ms */
    advance(b, 10 * SEC);
    expect_ok(qextend(b, BROKER_QUEUE, "ok", "g", &id, 1, 0));
    advance(b, 29 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "ok", "g", 10, 20 * SEC));
    assert_int_equal(NG, 0);
    advance(b, 1 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "ok", "g", 10, 20 * SEC));
    assert_int_equal(NG, 1);

    /* the four refusals, each on its own topic */
    pubn(b, "e", "m", 4);
    expect_ok(qrecv(b, BROKER_QUEUE, "e", "g", 3, 20 * SEC)); /* 0, 1, 2 leased; 3 never */
    assert_int_equal(NG, 3);
    struct broker_msg_id m0 = ID(0, 0), m1 = ID(0, 1), m2 = ID(0, 2), m3 = ID(0, 3);
    expect_ok(qack(b, BROKER_QUEUE, "e", "g", &m0, 1));
    expect_ok(qnack(b, BROKER_QUEUE, "e", "g", &m1, 1)); /* no config → dead */
    expect_error(qextend(b, BROKER_QUEUE, "e", "g", &m0, 1, 0), 400, "invalid_input",
                 "message is already acked");
    expect_error(qextend(b, BROKER_QUEUE, "e", "g", &m1, 1, 0), 400, "invalid_input",
                 "message is in the dead-letter queue");
    expect_error(qextend(b, BROKER_QUEUE, "e", "g", &m3, 1, 0), 400, "invalid_input",
                 "message has no active lease");
    /* all or nothing: m2 is fine, m0 is not → m2 keeps its old lease */
    struct broker_msg_id mixed[2] = {m2, m0};
    expect_error(qextend(b, BROKER_QUEUE, "e", "g", mixed, 2, 60 * SEC), 400, "invalid_input",
                 "message is already acked");
    assert_string_equal(E.location, "msg_ids[1]");
    advance(b, 20 * SEC); /* m2's lease expires */
    expect_error(qextend(b, BROKER_QUEUE, "e", "g", &m2, 1, 0), 400, "invalid_input",
                 "lease has expired");
    assert_string_equal(E.location, "msg_ids[0]");
    expect_ok(qrecv(b, BROKER_QUEUE, "e", "g", 10, 20 * SEC));
    assert_int_equal(NG, 2); /* m2 (not extended) and m3 */
    assert_true(find_value("m2") >= 0 && find_value("m3") >= 0);
    /* a group that never received: no active lease */
    expect_error(qextend(b, BROKER_QUEUE, "e", "nobody", &m3, 1, 0), 400, "invalid_input",
                 "message has no active lease");
    /* an empty list is fine */
    expect_ok(qextend(b, BROKER_QUEUE, "e", "g", NULL, 0, 0));
}

static void test_queue_configure(void **state)
{
    struct broker *b = FB(state);
    const uint64_t sched[3] = {1000, 2000, 7 * DAY};
    expect_ok(qconf(b, BROKER_QUEUE, "t", "g", sched, 3, "dlq", 5));
    assert_int_equal(QC.retry_count, 3);
    assert_true(QC.retry_schedule[2] == 7 * DAY);
    assert_true(QC.has_dlq_topic);
    assert_int_equal(QC.max_deliveries, 5);
    expect_ok(tget(b, "t")); /* creates the topic */
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_true(GI.has_config);
    assert_int_equal(GI.config.retry_count, 3);
    assert_true(GI.config.retry_schedule[1] == 2000);
    assert_true(GI.config.has_dlq_topic);
    assert_int_equal(GI.config.dlq_topic.n, 3);
    assert_memory_equal(GI.config.dlq_topic.p, "dlq", 3);
    assert_int_equal(GI.config.max_deliveries, 5);
    /* replaces the whole configuration */
    expect_ok(qconf(b, BROKER_QUEUE, "t", "g", NULL, 0, NULL, 0));
    assert_int_equal(QC.retry_count, 0);
    assert_false(QC.has_dlq_topic);
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.config.retry_count, 0);
    assert_false(GI.config.has_dlq_topic);
    assert_int_equal(GI.config.max_deliveries, 0);
    /* the FIFO group of the same name has its own configuration */
    expect_ok(qconf(b, BROKER_FIFO, "t", "g", sched, 1, NULL, 0));
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.config.retry_count, 0);
    expect_ok(gget(b, "t", BROKER_FIFO, "g"));
    assert_int_equal(GI.config.retry_count, 1);

    /* limits: ≤ 100 entries, each ≤ 7 days; dlq_topic a topic name */
    uint64_t many[101];
    for (int i = 0; i < 101; i++)
        many[i] = 1000;
    expect_ok(qconf(b, BROKER_QUEUE, "t", "g", many, 100, NULL, 0));
    expect_error(qconf(b, BROKER_QUEUE, "t", "g", many, 101, NULL, 0), 422, "invalid_data", NULL);
    assert_string_equal(E.location, "retry_schedule");
    const uint64_t too_long[2] = {1000, 7 * DAY + 1};
    expect_error(qconf(b, BROKER_QUEUE, "t", "g", too_long, 2, NULL, 0), 422, "invalid_data", NULL);
    assert_string_equal(E.location, "retry_schedule[1]");
    expect_error(qconf(b, BROKER_QUEUE, "t", "g", NULL, 0, "d~1", 0), 422, "invalid_data", NULL);
    assert_string_equal(E.location, "dlq_topic");
    expect_error(qconf(b, BROKER_QUEUE, "t", "g", NULL, 0, "", 0), 422, "invalid_data", NULL);
    expect_error(qconf(b, BROKER_QUEUE, "t", "bad/name", NULL, 0, NULL, 0), 422, "invalid_data",
                 NULL);
    /* a rejected configure changed nothing */
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.config.retry_count, 100);
    expect_error(qconf(b, BROKER_QUEUE, "new", "g", many, 101, NULL, 0), 422, "invalid_data", NULL);
    expect_error(tget(b, "new"), 400, "invalid_input", NULL);
}

static void test_queue_max_deliveries(void **state)
{
    struct broker *b = FB(state);
    expect_ok(qconf(b, BROKER_QUEUE, "t", "g", NULL, 0, NULL, 2));
    pub1(b, "t", "poison");
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 10 * SEC));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].attempt, 1);
    advance(b, 10 * SEC); /* expiry 1 */
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 10 * SEC));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].attempt, 2);
    advance(b, 10 * SEC); /* expiry 2 = max_deliveries → dead-lettered */
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 10 * SEC));
    assert_int_equal(NG, 0);
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 1);
    assert_int_equal(GI.in_flight, 0);
    /* with a dlq_topic the poison message is copied there */
    expect_ok(qconf(b, BROKER_QUEUE, "u", "g", NULL, 0, "udlq", 1));
    pub1(b, "u", "poison2");
    expect_ok(qrecv(b, BROKER_QUEUE, "u", "g", 10, 10 * SEC));
    assert_int_equal(NG, 1);
    advance(b, 10 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "u", "g", 10, 10 * SEC));
    assert_int_equal(NG, 0);
    expect_ok(srecv(b, "udlq", "r", 10, true, 0));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "poison2");
    /* max_deliveries 0: unlimited */
    pub1(b, "v", "x");
    for (uint32_t i = 1; i <= 5; i++) {
        expect_ok(qrecv(b, BROKER_QUEUE, "v", "g", 10, 10 * SEC));
        assert_int_equal(NG, 1);
        assert_int_equal(G[0].attempt, i);
        advance(b, 10 * SEC);
    }
}

static void test_queue_lease_expiry_consumes_no_retry(void **state)
{
    struct broker *b = FB(state);
    const uint64_t sched[1] = {10 * SEC};
    expect_ok(qconf(b, BROKER_QUEUE, "t", "g", sched, 1, NULL, 0));
    pub1(b, "t", "m");
    struct broker_msg_id id = ID(0, 0);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 10 * SEC));
    advance(b, 10 * SEC); /* expires: available again, no retry used */
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 10 * SEC));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].attempt, 2);
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &id, 1)); /* first nack → retry */
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 0);
    assert_int_equal(GI.waiting_retry, 1);
    advance(b, 10 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 10 * SEC));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].attempt, 3);
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &id, 1)); /* second → dead */
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 1);
}

static void test_queue_delay_hides(void **state)
{
    struct broker *b = FB(state);
    struct broker_msg_in ms[3] = {MD("later", 20 * SEC), MD("now", 0), M("plain")};
    expect_ok(pub(b, "t", ms, 3));
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "q", 10, 60 * SEC));
    assert_int_equal(NG, 2);
    assert_int_equal(find_value("later"), -1);
    expect_ok(qrecv(b, BROKER_FIFO, "t", "f", 10, 60 * SEC));
    assert_int_equal(NG, 2);
    assert_int_equal(find_value("later"), -1);
    expect_ok(srecv(b, "t", "s", 10, true, 60 * SEC)); /* stream sees it at once */
    assert_int_equal(NG, 3);
    expect_ok(gget(b, "t", BROKER_QUEUE, "q"));
    assert_int_equal(GI.delayed, 1);
    advance(b, 10 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "q", 10, 60 * SEC));
    assert_int_equal(NG, 0);
    advance(b, 10 * SEC); /* scheduled_at reached */
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "q", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "later");
    assert_int_equal(G[0].attempt, 1);
    assert_true(G[0].has_sched && G[0].sched == G[0].timestamp + 20 * SEC);
    expect_ok(qrecv(b, BROKER_FIFO, "t", "f", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "later");
    /* a delayed message does not hold back later ones in queue mode */
    struct broker_msg_in m2[2] = {MD("d", 30 * SEC), M("after")};
    expect_ok(pub(b, "u", m2, 2));
    expect_ok(qrecv(b, BROKER_QUEUE, "u", "q", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "after");
}

static void test_queue_new_group_starts_at_retained(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "m", 5);
    struct broker_trim_req tr = {
        .ns = DEF, .topic = TR("t~0"), .has_before_offset = true, .before_offset = 3};
    struct broker_trim_res res;
    expect_ok(broker_topic_trim(b, &tr, &res, &W, &E));
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 0));
    assert_int_equal(NG, 2);
    assert_int_equal(G[0].offset, 3);
    assert_int_equal(G[1].offset, 4);
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 0));
    assert_int_equal(NG, 2);
    assert_int_equal(G[0].offset, 3);
}

/* ======================================================================== */
/* §8 FIFO                                                                   */
/* ======================================================================== */

static void test_fifo_key_order(void **state)
{
    struct broker *b = FB(state);
    struct broker_msg_in ms[5] = {MK("A1", "A"), MK("A2", "A"), MK("B1", "B"), MK("A3", "A"),
                                  MK("B2", "B")};
    expect_ok(pub(b, "t", ms, 5));
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 1, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "A1");
    /* while A1 is leased, no later A goes to anyone */
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_true(NG >= 1);
    assert_int_equal(find_value("A2"), -1);
    assert_int_equal(find_value("A3"), -1);
    int b1 = find_value("B1"), b2 = find_value("B2");
    assert_true(b1 >= 0);
    if (b2 >= 0)
        assert_true(b1 < b2);
    struct broker_msg_id bids[2];
    assert_true(NG <= 2);
    size_t nb = NG;
    for (size_t i = 0; i < NG; i++)
        bids[i] = ID(G[i].partition, G[i].offset);
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_int_equal(find_value("A2"), -1);
    struct broker_msg_id a1 = ID(0, 0);
    expect_ok(qack(b, BROKER_FIFO, "t", "g", &a1, 1));
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 1, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "A2"); /* the key continues in order */
    expect_ok(qack(b, BROKER_FIFO, "t", "g", bids, nb));
    struct broker_msg_id a2 = ID(0, 1);
    expect_ok(qack(b, BROKER_FIFO, "t", "g", &a2, 1));
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_true(find_value("A3") >= 0);
}

static void test_fifo_consecutive_run_to_one_caller(void **state)
{
    struct broker *b = FB(state);
    struct broker_msg_in ms[4] = {MK("A1", "A"), MK("A2", "A"), MK("A3", "A"), MK("C1", "C")};
    expect_ok(pub(b, "t", ms, 4));
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 4);
    int i1 = find_value("A1"), i2 = find_value("A2"), i3 = find_value("A3");
    assert_true(i1 >= 0 && i2 > i1 && i3 > i2); /* in order */
    for (size_t i = 0; i < NG; i++)
        assert_int_equal(G[i].attempt, 1);
    expect_ok(qrecv(b, BROKER_FIFO, "t", "other", 10, 60 * SEC)); /* another group */
    assert_int_equal(NG, 4);
}

static void test_fifo_nack_releases_later_messages(void **state)
{
    struct broker *b = FB(state);
    const uint64_t sched[1] = {10 * SEC};
    expect_ok(qconf(b, BROKER_FIFO, "t", "g", sched, 1, NULL, 0));
    struct broker_msg_in ms[4] = {MK("A1", "A"), MK("A2", "A"), MK("A3", "A"), MK("B1", "B")};
    expect_ok(pub(b, "t", ms, 4));
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 4);
    struct broker_msg_id a1 = ID(0, 0);
    expect_ok(qnack(b, BROKER_FIFO, "t", "g", &a1, 1));
    /* A2, A3 were released, but the key is held by A1's retry */
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 0);
    struct broker_msg_id a2 = ID(0, 1);
    expect_error(qextend(b, BROKER_FIFO, "t", "g", &a2, 1, 0), 400, "invalid_input",
                 "message has no active lease");
    advance(b, 10 * SEC);
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 3); /* the key restarts in order */
    assert_string_equal(G[0].value, "A1");
    assert_string_equal(G[1].value, "A2");
    assert_string_equal(G[2].value, "A3");
    assert_int_equal(G[0].attempt, 2);
    assert_int_equal(G[1].attempt, 1); /* the release did not count a delivery */
    assert_int_equal(G[2].attempt, 1);
}

static void test_fifo_lease_expiry_releases_without_counting(void **state)
{
    struct broker *b = FB(state);
    /* max_deliveries 1: A1 is dead-lettered at its first expiry; A2, held by
     * the same caller, is only released (not counted) and comes next */
    expect_ok(qconf(b, BROKER_FIFO, "t", "g", NULL, 0, NULL, 1));
    struct broker_msg_in ms[3] = {MK("A1", "A"), MK("A2", "A"), MK("A3", "A")};
    expect_ok(pub(b, "t", ms, 3));
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 2, 10 * SEC));
    assert_int_equal(NG, 2);
    assert_string_equal(G[0].value, "A1");
    assert_string_equal(G[1].value, "A2");
    advance(b, 10 * SEC);
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 10 * SEC));
    assert_true(NG >= 1);
    assert_string_equal(G[0].value, "A2"); /* dead-lettering A1 unblocked the key */
    assert_int_equal(G[0].attempt, 1);
    assert_int_equal(find_value("A1"), -1);
    expect_ok(gget(b, "t", BROKER_FIFO, "g"));
    assert_int_equal(GI.dead, 1);

    /* without max_deliveries: everything comes back in order */
    struct broker_msg_in m2[2] = {MK("X1", "X"), MK("X2", "X")};
    expect_ok(pub(b, "u", m2, 2));
    expect_ok(qrecv(b, BROKER_FIFO, "u", "g", 10, 10 * SEC));
    assert_int_equal(NG, 2);
    advance(b, 10 * SEC);
    expect_ok(qrecv(b, BROKER_FIFO, "u", "g", 10, 10 * SEC));
    assert_int_equal(NG, 2);
    assert_string_equal(G[0].value, "X1");
    assert_int_equal(G[0].attempt, 2);
    assert_string_equal(G[1].value, "X2");
}

static void test_fifo_keyless_and_dead_unblock(void **state)
{
    struct broker *b = FB(state);
    struct broker_msg_in ms[5] = {M("n1"), MK("A1", "A"), M("n2"), MK("A2", "A"), M("n3")};
    expect_ok(pub(b, "t", ms, 5));
    /* keyless messages have no ordering constraint: each receive of one gets
     * something, and A2 waits for A1 */
    int got_keyless = 0;
    for (int i = 0; i < 4; i++) {
        expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 1, 60 * SEC));
        assert_int_equal(NG, 1);
        assert_string_not_equal(G[0].value, "A2");
        got_keyless += G[0].value[0] == 'n';
    }
    assert_int_equal(got_keyless, 3);
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 0);
    /* dead-lettering A1 (no configuration: first nack) unblocks its key */
    struct broker_msg_id a1 = ID(0, 1);
    expect_ok(qnack(b, BROKER_FIFO, "t", "g", &a1, 1));
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "A2");
}

static void test_fifo_blocked_key_does_not_hold_others(void **state)
{
    struct broker *b = FB(state);
    /* 8 keys a..h, 5 messages each, interleaved: a0 b0 ... h0 a1 b1 ... */
    char vals[40][16], ks[40][8];
    struct broker_msg_in ms[40];
    for (int i = 0; i < 40; i++) {
        snprintf(vals[i], sizeof vals[i], "%c%d", 'a' + i % 8, i / 8);
        snprintf(ks[i], sizeof ks[i], "%c", 'a' + i % 8);
        ms[i] = MK(vals[i], ks[i]);
    }
    expect_ok(pub(b, "t", ms, 40));
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 1, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "a0"); /* key 'a' is now held */
    /* every other key still flows, in order per key */
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 1000, 60 * SEC));
    assert_int_equal(NG, 35);
    int last[8];
    for (int k = 0; k < 8; k++)
        last[k] = -1;
    for (size_t i = 0; i < NG; i++) {
        int k = G[i].value[0] - 'a';
        int seq = atoi(G[i].value + 1);
        assert_true(k > 0 && k < 8); /* never 'a' */
        assert_int_equal(seq, last[k] + 1);
        last[k] = seq;
    }
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 1000, 60 * SEC));
    assert_int_equal(NG, 0);
    struct broker_msg_id a0 = ID(0, 0);
    expect_ok(qack(b, BROKER_FIFO, "t", "g", &a0, 1));
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 1000, 60 * SEC));
    assert_int_equal(NG, 4);
    for (size_t i = 0; i < NG; i++) {
        assert_int_equal(G[i].value[0], 'a');
        assert_int_equal(atoi(G[i].value + 1), (int)i + 1);
    }
}

static void test_mode_groups_are_distinct(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "m", 3);
    expect_ok(srecv(b, "t", "g", 10, true, 60 * SEC));
    assert_int_equal(NG, 3);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 3);
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 3);
    struct broker_msg_id all[3] = {ID(0, 0), ID(0, 1), ID(0, 2)};
    expect_ok(qack(b, BROKER_QUEUE, "t", "g", all, 3));
    advance(b, 60 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 0); /* acked in the queue group */
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 3); /* not in the FIFO group */
    expect_ok(srecv(b, "t", "g", 10, true, 60 * SEC));
    assert_int_equal(NG, 3); /* nor the stream group's cursor */
    const struct broker_group_info *list;
    size_t n;
    expect_ok(broker_group_list(b, DEF, S("t"), &list, &n, &E));
    assert_int_equal(n, 3);
    assert_int_equal(list[0].mode, BROKER_STREAM);
    assert_int_equal(list[1].mode, BROKER_QUEUE);
    assert_int_equal(list[2].mode, BROKER_FIFO);
    for (size_t i = 0; i < n; i++)
        assert_memory_equal(list[i].group.p, "g", 1);
}

/* ======================================================================== */
/* trim (§4 [ext])                                                           */
/* ======================================================================== */

static int trim(struct broker *b, const char *topic, int which, uint64_t v,
                struct broker_trim_res *res)
{
    struct broker_trim_req tr = {.ns = DEF, .topic = TR(topic)};
    if (which & 1) {
        tr.has_before_offset = true;
        tr.before_offset = v;
    }
    if (which & 2) {
        tr.has_before_timestamp = true;
        tr.before_timestamp = v;
    }
    memset(res, 0, sizeof *res);
    return broker_topic_trim(b, &tr, res, &W, &E);
}

static void test_trim(void **state)
{
    struct broker *b = FB(state);
    struct broker_trim_res res;
    expect_error(trim(b, "nope~0", 1, 1, &res), 400, "invalid_input", "topic must exist");
    expect_ok(tconf(b, "t", 2));
    pubn(b, "t~0", "a", 5);
    pubn(b, "t~1", "b", 5);
    expect_error(trim(b, "t", 1, 3, &res), 400, "invalid_input", NULL); /* needs a partition */
    expect_error(trim(b, "t~0", 0, 0, &res), 400, "invalid_input", NULL);
    expect_error(trim(b, "t~0", 3, 1, &res), 400, "invalid_input", NULL);
    assert_int_equal(start_offset(b, "t", 0), 0);

    expect_ok(trim(b, "t~0", 1, 3, &res));
    assert_int_equal(res.n, 1);
    assert_int_equal(res.partition[0], 0);
    assert_int_equal(res.start_offset[0], 3);
    expect_ok(tget(b, "t"));
    assert_int_equal(TI.parts[0].start_offset, 3);
    assert_int_equal(TI.parts[0].end_offset, 5);
    assert_int_equal(TI.parts[1].start_offset, 0);
    /* never below the current start; beyond the end clamps to the end */
    expect_ok(trim(b, "t~0", 1, 1, &res));
    assert_int_equal(res.start_offset[0], 3);
    expect_ok(trim(b, "t~1", 1, 1000, &res));
    assert_int_equal(res.start_offset[0], 5);
    /* trimmed messages are never delivered, in any mode */
    expect_ok(srecv(b, "t", "s", 100, true, 0));
    assert_int_equal(NG, 2);
    for (size_t i = 0; i < NG; i++)
        assert_true(G[i].partition == 0 && G[i].offset >= 3);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "q", 100, 0));
    assert_int_equal(NG, 2);
    expect_ok(qrecv(b, BROKER_FIFO, "t", "f", 100, 0));
    assert_int_equal(NG, 2);
    /* offsets are never reused after everything was trimmed */
    expect_ok(trim(b, "t~0", 1, 5, &res));
    expect_ok(tget(b, "t"));
    assert_int_equal(TI.parts[0].start_offset, 5);
    assert_int_equal(TI.parts[0].end_offset, 5);
    struct broker_msg_in m = M("fresh");
    expect_ok(pub(b, "t~0", &m, 1));
    assert_int_equal(PR.parts[0].start_offset, 5);
    assert_int_equal(PR.parts[0].offset, 6);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "q", 100, 0));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].offset, 5);
    /* a leased message that gets trimmed is not redelivered */
    pubn(b, "t~0", "c", 2); /* offsets 6, 7 */
    expect_ok(qrecv(b, BROKER_QUEUE, "t~0", "q", 100, 10 * SEC));
    assert_int_equal(NG, 2);
    expect_ok(trim(b, "t~0", 1, 7, &res));
    advance(b, 10 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t~0", "q", 100, 10 * SEC));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].offset, 7);
}

static void test_trim_by_timestamp(void **state)
{
    struct broker *b = FB(state);
    expect_ok(tconf(b, "t", 2));
    pubn(b, "t~0", "old", 2);
    pubn(b, "t~1", "old", 1);
    advance(b, 10 * SEC);
    uint64_t cut = broker_now(b);
    pubn(b, "t~0", "new", 3);
    pubn(b, "t~1", "new", 1);
    struct broker_trim_res res;
    expect_ok(trim(b, "t", 2, cut, &res)); /* a bare topic: every partition */
    assert_int_equal(res.n, 2);
    assert_int_equal(res.partition[0], 0);
    assert_int_equal(res.start_offset[0], 2);
    assert_int_equal(res.partition[1], 1);
    assert_int_equal(res.start_offset[1], 1);
    expect_ok(srecv(b, "t", "s", 100, true, 0));
    assert_int_equal(NG, 4);
    for (size_t i = 0; i < NG; i++)
        assert_memory_equal(G[i].value, "new", 3);
}

/* ======================================================================== */
/* introspection (§4 topic.get, §10 group.get/list)                          */
/* ======================================================================== */

static void test_topic_get_info(void **state)
{
    struct broker *b = FB(state);
    expect_ok(tconf(b, "t", 3));
    expect_ok(tget(b, "t"));
    assert_int_equal(TI.name.n, 1);
    assert_int_equal(TI.partitions, 3);
    for (uint32_t p = 0; p < 3; p++) {
        assert_int_equal(TI.parts[p].start_offset, 0);
        assert_int_equal(TI.parts[p].end_offset, 0);
        assert_int_equal(TI.parts[p].bytes, 0);
        assert_int_equal(TI.parts[p].oldest_timestamp, 0);
    }
    assert_int_equal(TI.n_groups, 0);
    uint64_t t0 = broker_now(b);
    pubn(b, "t~1", "m", 4);
    uint64_t t1 = broker_now(b);
    expect_ok(tget(b, "t"));
    assert_int_equal(TI.parts[1].end_offset, 4);
    assert_true(TI.parts[1].bytes >= 4 * 2); /* at least the values */
    uint64_t bytes4 = TI.parts[1].bytes;
    assert_true(TI.parts[1].oldest_timestamp >= t0 && TI.parts[1].oldest_timestamp <= t1);
    assert_int_equal(TI.parts[0].bytes, 0);
    struct broker_msg_in big = M("a much longer value than the others, to count bytes");
    expect_ok(pub(b, "t~1", &big, 1));
    expect_ok(tget(b, "t"));
    assert_true(TI.parts[1].bytes >= bytes4 + big.value_len);
    /* groups per mode with their lag */
    expect_ok(srecv(b, "t", "s", 2, true, 60 * SEC));
    expect_ok(scommit(b, "t~1", "s", 1)); /* cursor 2 of 5 → lag 3 */
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "q", 1, 60 * SEC));
    expect_ok(qack(b, BROKER_QUEUE, "t", "q", (struct broker_msg_id[]){ID(1, 0)}, 1));
    advance(b, 5 * SEC);
    expect_ok(tget(b, "t"));
    assert_int_equal(TI.n_groups, 2);
    bool seen_s = false, seen_q = false;
    for (size_t i = 0; i < TI.n_groups; i++) {
        const struct broker_group_summary *s = &TI.groups[i];
        if (s->mode == BROKER_STREAM) {
            assert_memory_equal(s->name.p, "s", 1);
            assert_int_equal(s->lag, 3);
            assert_true(s->lag_ms >= 5 * SEC);
            seen_s = true;
        } else {
            assert_int_equal(s->mode, BROKER_QUEUE);
            assert_memory_equal(s->name.p, "q", 1);
            assert_int_equal(s->lag, 4);
            seen_q = true;
        }
    }
    assert_true(seen_s && seen_q);
}

static void test_group_get_and_list(void **state)
{
    struct broker *b = FB(state);
    expect_ok(tconf(b, "t", 2));
    pubn(b, "t~0", "a", 4);
    pubn(b, "t~1", "b", 2);
    expect_error(gget(b, "t", BROKER_STREAM, "nobody"), 400, "invalid_input", NULL);
    expect_error(gget(b, "nope", BROKER_STREAM, "g"), 400, "invalid_input", NULL);
    /* stream: cursor and lag per partition */
    expect_ok(srecv(b, "t~0", "s", 10, true, 60 * SEC));
    expect_ok(scommit(b, "t~0", "s", 0));
    expect_ok(gget(b, "t", BROKER_STREAM, "s"));
    assert_int_equal(GI.mode, BROKER_STREAM);
    assert_int_equal(GI.n_parts, 2);
    assert_int_equal(GI.parts[0].position, 1);
    assert_int_equal(GI.parts[0].lag, 3);
    assert_true(GI.parts[0].leased);
    assert_int_equal(GI.parts[1].position, 0); /* earliest at the first receive */
    assert_int_equal(GI.parts[1].lag, 2);
    assert_false(GI.parts[1].leased);
    assert_int_equal(GI.lag, 5);
    /* queue: in flight, waiting for retry, dead, delayed */
    const uint64_t sched[1] = {60 * SEC};
    expect_ok(qconf(b, BROKER_QUEUE, "t", "q", sched, 1, NULL, 0));
    struct broker_msg_in dm = MD("delayed", 60 * SEC);
    expect_ok(pub(b, "t~1", &dm, 1));
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "q", 100, 60 * SEC));
    assert_int_equal(NG, 6);
    struct broker_msg_id a0 = ID(0, 0), a1 = ID(0, 1), a2 = ID(0, 2);
    expect_ok(qack(b, BROKER_QUEUE, "t", "q", &a0, 1));
    expect_ok(qnack(b, BROKER_QUEUE, "t", "q", &a1, 1)); /* → retry */
    expect_ok(qnack(b, BROKER_QUEUE, "t", "q", &a2, 1)); /* → retry */
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "q", 100, 60 * SEC));
    assert_int_equal(NG, 0);
    expect_ok(gget(b, "t", BROKER_QUEUE, "q"));
    assert_int_equal(GI.mode, BROKER_QUEUE);
    assert_int_equal(GI.in_flight, 3); /* a3, b0, b1 */
    assert_int_equal(GI.waiting_retry, 2);
    assert_int_equal(GI.dead, 0);
    assert_int_equal(GI.delayed, 1);
    assert_int_equal(GI.parts[0].position, 1); /* floor passed the acked a0 */
    assert_int_equal(GI.parts[1].position, 0);
    assert_int_equal(GI.lag, 6); /* 7 stored, 1 settled */

    /* list: every group of the namespace, sorted by topic, mode, name */
    expect_ok(srecv(b, "u", "z", 1, true, 0));
    expect_ok(qrecv(b, BROKER_FIFO, "t", "a", 1, 0));
    expect_ok(srecv(b, "t", "b", 1, true, 0));
    const struct broker_group_info *list;
    size_t n;
    expect_ok(broker_group_list(b, DEF, (struct bstr){NULL, 0}, &list, &n, &E));
    assert_int_equal(n, 5);
    const char *want_t[] = {"t", "t", "t", "t", "u"};
    const char *want_g[] = {"b", "s", "q", "a", "z"};
    enum broker_mode want_m[] = {BROKER_STREAM, BROKER_STREAM, BROKER_QUEUE, BROKER_FIFO,
                                 BROKER_STREAM};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(list[i].topic.n, 1);
        assert_memory_equal(list[i].topic.p, want_t[i], 1);
        assert_int_equal(list[i].group.n, 1);
        assert_memory_equal(list[i].group.p, want_g[i], 1);
        assert_int_equal(list[i].mode, want_m[i]);
    }
    expect_ok(broker_group_list(b, DEF, S("u"), &list, &n, &E));
    assert_int_equal(n, 1);
    expect_error(broker_group_list(b, DEF, S("nope"), &list, &n, &E), 400, "invalid_input", NULL);
}

/* ======================================================================== */
/* §9 long polling                                                           */
/* ======================================================================== */

static void test_available_and_wakeup(void **state)
{
    struct broker *b = FB(state);
    uint64_t wake;
    struct broker_receive_req q = rreq(DEF, "t", "g", 10, 0);
    /* unknown topic */
    assert_int_equal(broker_available(b, BROKER_QUEUE, &q, 10, &wake), 0);
    assert_true(wake == UINT64_MAX);
    pubn(b, "t", "m", 3);
    assert_int_equal(broker_available(b, BROKER_QUEUE, &q, 10, &wake), 3);
    assert_int_equal(broker_available(b, BROKER_QUEUE, &q, 2, &wake), 2);
    uint64_t t0 = broker_now(b);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 20 * SEC));
    uint64_t t1 = broker_now(b);
    assert_int_equal(broker_available(b, BROKER_QUEUE, &q, 10, &wake), 0);
    assert_true(wake >= t0 + 20 * SEC && wake <= t1 + 20 * SEC); /* the lease expiry */
    struct broker_msg_id ids[3] = {ID(0, 0), ID(0, 1), ID(0, 2)};
    expect_ok(qack(b, BROKER_QUEUE, "t", "g", ids, 3));
    assert_int_equal(broker_available(b, BROKER_QUEUE, &q, 10, &wake), 0);
    assert_true(wake == UINT64_MAX);
    /* a retry time */
    const uint64_t sched[1] = {15 * SEC};
    expect_ok(qconf(b, BROKER_QUEUE, "t", "g", sched, 1, NULL, 0));
    pub1(b, "t", "r");
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    struct broker_msg_id r = ID(0, 3);
    t0 = broker_now(b);
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &r, 1));
    t1 = broker_now(b);
    assert_int_equal(broker_available(b, BROKER_QUEUE, &q, 10, &wake), 0);
    assert_true(wake >= t0 + 15 * SEC && wake <= t1 + 15 * SEC);
    advance(b, 15 * SEC);
    assert_int_equal(broker_available(b, BROKER_QUEUE, &q, 10, &wake), 1);

    /* stream: earliest vs latest for a new group; a lease's expiry */
    struct broker_receive_req s = rreq(DEF, "s", "g", 10, 0);
    pubn(b, "s", "m", 4);
    s.start_earliest = true;
    assert_int_equal(broker_available(b, BROKER_STREAM, &s, 10, &wake), 4);
    s.start_earliest = false;
    assert_int_equal(broker_available(b, BROKER_STREAM, &s, 10, &wake), 0);
    t0 = broker_now(b);
    expect_ok(srecv(b, "s", "g", 10, true, 30 * SEC));
    t1 = broker_now(b);
    pub1(b, "s", "more");
    assert_int_equal(broker_available(b, BROKER_STREAM, &s, 10, &wake), 0);
    assert_true(wake >= t0 + 30 * SEC && wake <= t1 + 30 * SEC);
    expect_ok(scommit(b, "s~0", "g", 3));
    assert_int_equal(broker_available(b, BROKER_STREAM, &s, 10, &wake), 1);
}

/* BUG: a delayed message is not available to a queue/FIFO receive before
 * its scheduled_at (API.md §5, §9); broker_available must not count it, and
 * the long poll must wake at scheduled_at. */
/* Collects the slots broker_changed_topics reports. */
struct slots_seen {
    void **slot[8];
    int n;
};

static void note_slot(void *arg, void **slot)
{
    struct slots_seen *s = arg;
    if (s->n < 8)
        s->slot[s->n++] = slot;
}

/*
 * Long-poll watches (broker.h): a watch sees its own topic's changes (publish,
 * ack, configure, a DLQ copy made by another topic's nack) and the ones that
 * concern every topic (the test clock), not other topics'; the changed-topic
 * list names each changed topic once per round, by the slot its watch has.
 */
static void test_watch_and_changed_topics(void **state)
{
    struct broker *b = FB(state);
    pub1(b, "wa", "x");
    pub1(b, "wb", "x");
    expect_ok(qconf(b, BROKER_QUEUE, "wb", "g", NULL, 0, "wa", 0));
    struct slots_seen seen = {0};
    broker_changed_topics(b, note_slot, &seen); /* forget what came before */
    struct broker_receive_req qa = rreq(DEF, "wa", "g", 10, 0), qb = rreq(DEF, "wb", "g", 10, 0);
    struct broker_watch wa, wb, none;
    broker_watch_init(b, &qa, &wa);
    broker_watch_init(b, &qb, &wb);
    struct broker_receive_req qn = rreq(DEF, "never-made", "g", 10, 0);
    broker_watch_init(b, &qn, &none);
    assert_true(broker_watch_changed(b, &none)); /* no topic: always worth a try */
    assert_null(broker_watch_slot(b, &none));
    void **sa = broker_watch_slot(b, &wa), **sb = broker_watch_slot(b, &wb);
    assert_non_null(sa);
    assert_true(sa != sb);
    assert_false(broker_watch_changed(b, &wa));

    pub1(b, "wb", "y");
    pub1(b, "wb", "z");
    assert_false(broker_watch_changed(b, &wa)); /* another topic's publish */
    assert_true(broker_watch_changed(b, &wb));
    seen.n = 0;
    broker_changed_topics(b, note_slot, &seen);
    assert_int_equal(seen.n, 1); /* wb, once for two publishes */
    assert_true(seen.slot[0] == sb);
    seen.n = 0;
    broker_changed_topics(b, note_slot, &seen);
    assert_int_equal(seen.n, 0); /* reported, then forgotten */

    /* a nack on wb (no retry left) copies into wa: both change */
    broker_watch_init(b, &qb, &wb);
    expect_ok(qrecv(b, BROKER_QUEUE, "wb", "g", 1, 0));
    assert_int_equal(NG, 1);
    broker_watch_init(b, &qa, &wa);
    broker_watch_init(b, &qb, &wb);
    seen.n = 0;
    broker_changed_topics(b, note_slot, &seen);
    struct broker_msg_id id = ID(G[0].partition, G[0].offset);
    expect_ok(qnack(b, BROKER_QUEUE, "wb", "g", &id, 1));
    assert_true(broker_watch_changed(b, &wa));
    assert_true(broker_watch_changed(b, &wb));
    seen.n = 0;
    broker_changed_topics(b, note_slot, &seen);
    assert_int_equal(seen.n, 2);
    assert_true((seen.slot[0] == sa && seen.slot[1] == sb) ||
                (seen.slot[0] == sb && seen.slot[1] == sa));

    /* the test clock concerns every topic */
    broker_watch_init(b, &qa, &wa);
    broker_watch_init(b, &qb, &wb);
    advance(b, 1000);
    assert_true(broker_watch_changed(b, &wa));
    assert_true(broker_watch_changed(b, &wb));
}

static void test_available_delayed_message(void **state)
{
    struct broker *b = FB(state);
    uint64_t wake;
    struct broker_msg_in m = MD("later", 20 * SEC);
    uint64_t t0 = broker_now(b);
    expect_ok(pub(b, "t", &m, 1));
    uint64_t t1 = broker_now(b);
    struct broker_receive_req q = rreq(DEF, "t", "g", 10, 0);
    /* a group that already exists */
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 0));
    assert_int_equal(NG, 0);
    assert_int_equal(broker_available(b, BROKER_QUEUE, &q, 10, &wake), 0);
    assert_true(wake >= t0 + 20 * SEC && wake <= t1 + 20 * SEC);
    /* a group that does not exist yet */
    struct broker_receive_req nq = rreq(DEF, "t", "fresh", 10, 0);
    assert_int_equal(broker_available(b, BROKER_QUEUE, &nq, 10, &wake), 0);
    assert_true(wake >= t0 + 20 * SEC && wake <= t1 + 20 * SEC);
    assert_int_equal(broker_available(b, BROKER_FIFO, &nq, 10, &wake), 0);
    advance(b, 20 * SEC);
    assert_int_equal(broker_available(b, BROKER_QUEUE, &q, 10, &wake), 1);
    assert_int_equal(broker_available(b, BROKER_QUEUE, &nq, 10, &wake), 1);
}

static void test_change_seq(void **state)
{
    struct broker *b = FB(state);
    uint64_t s0 = broker_change_seq(b);
    pub1(b, "t", "x");
    uint64_t s1 = broker_change_seq(b);
    assert_true(s1 > s0);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 0));
    uint64_t s2 = broker_change_seq(b);
    struct broker_msg_id id = ID(0, 0);
    expect_ok(qack(b, BROKER_QUEUE, "t", "g", &id, 1));
    uint64_t s3 = broker_change_seq(b);
    assert_true(s3 > s2);
    advance(b, 1);
    uint64_t s4 = broker_change_seq(b);
    assert_true(s4 > s3);
    /* reads change nothing */
    expect_ok(tget(b, "t"));
    uint64_t wake;
    struct broker_receive_req q = rreq(DEF, "t", "g", 10, 0);
    broker_available(b, BROKER_QUEUE, &q, 10, &wake);
    assert_true(broker_change_seq(b) == s4);
    expect_ok(srecv(b, "t", "s", 10, true, 0));
    expect_ok(sseek(b, "t", "s", 1, SEEK_EARLIEST, 0));
    assert_true(broker_change_seq(b) > s4);
}

/* ======================================================================== */
/* durability, clock, restart                                                */
/* ======================================================================== */

static void test_fsync_always(void **state)
{
    struct fx *f = *state;
    broker_close(f->b);
    f->cfg.fsync = JOURNAL_FSYNC_ALWAYS;
    open_broker(f);
    struct broker *b = f->b;
    assert_string_equal(broker_fsync_name(b), "always");
    struct broker_msg_in m = M("durable");
    expect_ok(pub(b, "t", &m, 1));
    assert_non_null(W.ns);
    assert_int_equal(broker_wait_durable(b, &W), 0);
    bool failed = true;
    assert_true(broker_is_durable(b, &W, &failed));
    assert_false(failed);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 0));
    struct broker_msg_id id = ID(0, 0);
    expect_ok(qack(b, BROKER_QUEUE, "t", "g", &id, 1));
    assert_int_equal(broker_wait_durable(b, &W), 0);
    struct broker_wait none = {0};
    assert_true(broker_is_durable(b, &none, NULL));
    reopen(f);
    b = f->b;
    assert_int_equal(end_offset(b, "t", 0), 1);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 0));
    assert_int_equal(NG, 0);
}

static void test_clock_advance_needs_test_clock(void **state)
{
    struct fx *f = *state;
    broker_close(f->b);
    f->cfg.test_clock = false;
    open_broker(f);
    assert_int_equal(broker_clock_advance(f->b, 1000), CY_EINVAL);
    assert_string_equal(broker_fsync_name(f->b), "never");
    /* the directory is locked while open */
    struct broker *second = NULL;
    CLR();
    int rc = broker_open(&f->cfg, &second, &E);
    assert_int_equal(rc, CY_ELOCKED);
    assert_null(second);
    assert_int_equal(E.status, 503);
    assert_string_equal(E.code, "storage_unavailable");
}

static void test_restart_persists_state(void **state)
{
    struct fx *f = *state;
    struct broker *b = f->b;
    /* the test clock far ahead of the wall clock */
    advance(b, DAY);
    pub1(b, "ts", "before");
    expect_ok(srecv(b, "ts", "r", 10, true, 0));
    uint64_t ts_before = G[0].timestamp;

    struct broker_retention ret = {.has_period = true, .period_ms = 30 * DAY};
    struct broker_ns_info nsi;
    expect_ok(broker_ns_configure(b, S("kept"), &ret, &nsi, &W, &E));
    uint64_t created = nsi.created_ms;
    expect_ok(tconf(b, "t", 3));
    struct broker_msg_in ms[6] = {MK("a", "k1"), MK("b", "k2"), MK("c", "k3"),
                                  MK("d", "k4"), MK("e", "k5"), MK("f", "k6")};
    expect_ok(pub_ns(b, DEF, "t", ms, 6, "idem"));
    struct broker_publish_res orig = PR;
    pubn(b, "s", "m", 5);
    expect_ok(srecv(b, "s", "sg", 3, true, 0));
    expect_ok(scommit(b, "s~0", "sg", 2));
    pubn(b, "q", "m", 4);
    const uint64_t sched[2] = {5 * SEC, 6 * SEC};
    expect_ok(qconf(b, BROKER_QUEUE, "q", "qg", sched, 2, "qdlq", 3));
    expect_ok(qrecv(b, BROKER_QUEUE, "q", "qg", 10, 60 * SEC));
    assert_int_equal(NG, 4);
    struct broker_msg_id q0 = ID(0, 0), q1 = ID(0, 1);
    expect_ok(qack(b, BROKER_QUEUE, "q", "qg", &q0, 1));
    expect_ok(qnack(b, BROKER_QUEUE, "q", "qg", &q1, 1));
    struct broker_msg_in fm[2] = {MK("F1", "K"), MK("F2", "K")};
    expect_ok(pub(b, "f", fm, 2));
    expect_ok(qrecv(b, BROKER_FIFO, "f", "fg", 1, 60 * SEC));
    assert_int_equal(NG, 1);
    struct broker_trim_res tres;
    pubn(b, "tr", "m", 4);
    expect_ok(trim(b, "tr~0", 1, 2, &tres));

    reopen(f);
    b = f->b;
    /* namespace config */
    expect_ok(broker_ns_get(b, S("kept"), &nsi, &E));
    assert_true(nsi.retention.has_period && nsi.retention.period_ms == 30 * DAY);
    assert_true(nsi.created_ms == created);
    /* partitions */
    expect_ok(tget(b, "t"));
    assert_int_equal(TI.partitions, 3);
    /* idempotency key within the window */
    struct broker_msg_in other = M("x");
    expect_ok(pub_ns(b, DEF, "t", &other, 1, "idem"));
    assert_true(PR.duplicate);
    assert_int_equal(PR.n_parts, orig.n_parts);
    for (uint32_t i = 0; i < orig.n_parts; i++) {
        assert_int_equal(PR.parts[i].partition, orig.parts[i].partition);
        assert_int_equal(PR.parts[i].start_offset, orig.parts[i].start_offset);
        assert_int_equal(PR.parts[i].offset, orig.parts[i].offset);
    }
    /* the stream cursor (and no lease: committed up to the last handed out) */
    expect_ok(srecv(b, "s", "sg", 10, false, 0));
    assert_int_equal(NG, 2);
    assert_int_equal(G[0].offset, 3);
    /* queue: config, ack, retry, leases */
    expect_ok(gget(b, "q", BROKER_QUEUE, "qg"));
    assert_int_equal(GI.config.retry_count, 2);
    assert_true(GI.config.retry_schedule[1] == 6 * SEC);
    assert_true(GI.config.has_dlq_topic);
    assert_int_equal(GI.config.dlq_topic.n, 4);
    assert_memory_equal(GI.config.dlq_topic.p, "qdlq", 4);
    assert_int_equal(GI.config.max_deliveries, 3);
    assert_int_equal(GI.in_flight, 2);
    assert_int_equal(GI.waiting_retry, 1);
    assert_int_equal(GI.parts[0].position, 1);
    expect_ok(qrecv(b, BROKER_QUEUE, "q", "qg", 10, 60 * SEC));
    assert_int_equal(NG, 0); /* q1 waits for its retry, q2 and q3 are leased */
    advance(b, 5 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "q", "qg", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "m1");
    assert_int_equal(G[0].attempt, 2);
    /* FIFO: the key is still held by F1's lease */
    expect_ok(qrecv(b, BROKER_FIFO, "f", "fg", 10, 60 * SEC));
    assert_int_equal(NG, 0);
    /* trim */
    assert_int_equal(start_offset(b, "tr", 0), 2);
    /* time never goes back: publish timestamps keep growing */
    pub1(b, "ts", "after");
    expect_ok(srecv(b, "ts", "r2", 10, true, 0));
    assert_int_equal(NG, 2);
    assert_true(G[1].timestamp >= ts_before);
    /* offsets continue */
    pub1(b, "s", "next");
    assert_int_equal(PR.parts[0].start_offset, 5);

    /* a second restart after more work */
    expect_ok(scommit(b, "s~0", "sg", 4));
    struct broker_msg_id q2 = ID(0, 2);
    expect_ok(qack(b, BROKER_QUEUE, "q", "qg", &q2, 1));
    reopen(f);
    b = f->b;
    expect_ok(gget(b, "s", BROKER_STREAM, "sg"));
    assert_int_equal(GI.parts[0].position, 5);
    assert_false(GI.parts[0].leased);
    expect_ok(srecv(b, "s", "sg", 10, false, 0));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "next");
    expect_ok(gget(b, "q", BROKER_QUEUE, "qg"));
    assert_int_equal(GI.in_flight, 2); /* q1 (again) and q3 */
    assert_int_equal(GI.waiting_retry, 0);
    /* the idempotency window still runs from the original publish */
    advance(b, HOUR);
    expect_ok(pub_ns(b, DEF, "t", &other, 1, "idem"));
    assert_false(PR.duplicate);
}

/* The same data directory gives the same state, whether the broker ran
 * straight through or was restarted in between. */
static void test_restart_state_dump_stable(void **state)
{
    struct fx *f = *state;
    struct broker *b = f->b;
    pubn(b, "t", "m", 10);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 3, 60 * SEC));
    struct broker_msg_id id = ID(0, 1);
    expect_ok(qack(b, BROKER_QUEUE, "t", "g", &id, 1));
    expect_ok(srecv(b, "t", "s", 4, true, 60 * SEC));
    struct buf before = BUF_INIT, after = BUF_INIT;
    assert_int_equal(broker_dump_state(b, &before), 0);
    reopen(f);
    assert_int_equal(broker_dump_state(f->b, &after), 0);
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.data, after.data, before.len);
    buf_free(&before);
    buf_free(&after);
}

/* ======================================================================== */
/* §3 retention                                                              */
/* ======================================================================== */

static void test_retention_period_skips_old(void **state)
{
    struct broker *b = FB(state);
    struct broker_retention r = {.has_period = true, .period_ms = 60 * SEC};
    struct broker_ns_info info;
    expect_ok(broker_ns_configure(b, S("short"), &r, &info, &W, &E));
    struct broker_ns_ref ns = NS("short");
    struct broker_msg_in m = M("old");
    expect_ok(pub_ns(b, ns, "t", &m, 1, NULL));
    advance(b, 30 * SEC);
    struct broker_msg_in m2 = M("young");
    expect_ok(pub_ns(b, ns, "t", &m2, 1, NULL));
    advance(b, 40 * SEC); /* "old" is 70 s old, "young" 40 s */
    expect_ok(srecv_ns(b, ns, "t", "s", 10, true, 0));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "young");
    assert_int_equal(G[0].offset, 1);
    expect_ok(qrecv_ns(b, BROKER_QUEUE, ns, "t", "q", 10, 0));
    assert_int_equal(NG, 1);
    assert_string_equal(G[0].value, "young");
    /* retention never renumbers offsets and never blocks publishing */
    advance(b, 60 * SEC);
    broker_tick(b);
    expect_ok(pub_ns(b, ns, "t", &m, 1, NULL));
    assert_int_equal(PR.parts[0].start_offset, 2);
}

static void test_retention_topic_bytes(void **state)
{
    struct broker *b = FB(state);
    struct broker_retention r = {.has_topic_bytes = true, .topic_bytes = 1000};
    struct broker_ns_info info;
    expect_ok(broker_ns_configure(b, S("small"), &r, &info, &W, &E));
    struct broker_ns_ref ns = NS("small");
    char val[200];
    memset(val, 'v', sizeof val - 1);
    val[sizeof val - 1] = 0;
    for (int i = 0; i < 20; i++) {
        struct broker_msg_in m = M(val);
        expect_ok(pub_ns(b, ns, "t", &m, 1, NULL));
    }
    broker_tick(b);
    struct broker_topic_info ti;
    expect_ok(broker_topic_get(b, ns, S("t"), &ti, &E));
    assert_true(ti.parts[0].bytes <= 1000);
    assert_true(ti.parts[0].start_offset > 0);
    assert_int_equal(ti.parts[0].end_offset, 20);
    assert_true(ti.parts[0].end_offset - ti.parts[0].start_offset >= 3); /* the newest stay */
    uint64_t start = ti.parts[0].start_offset;
    expect_ok(srecv_ns(b, ns, "t", "s", 100, true, 0));
    assert_int_equal(NG, 20 - start);
    assert_int_equal(G[0].offset, start);
}

/* A first receive on topic~p starts the new group on every current
 * partition, not only p (API.md §6). */
static void test_stream_first_receive_on_one_partition_inits_all(void **state)
{
    struct broker *b = FB(state);
    expect_ok(tconf(b, "t", 2));
    pubn(b, "t~0", "a", 2);
    pubn(b, "t~1", "b", 2);
    expect_ok(srecv(b, "t~0", "g", 10, true, 0));
    assert_int_equal(NG, 2);
    expect_ok(srecv(b, "t~1", "g", 10, false, 0)); /* already started: earliest */
    assert_int_equal(NG, 2);
    assert_int_equal(G[0].partition, 1);
    assert_int_equal(G[0].offset, 0);
    /* and the other way round with latest */
    expect_ok(srecv(b, "t~0", "h", 10, false, 0));
    assert_int_equal(NG, 0);
    expect_ok(srecv(b, "t~1", "h", 10, true, 0)); /* already started: latest */
    assert_int_equal(NG, 0);
}

static void test_queue_batch_cap(void **state)
{
    struct broker *b = FB(state);
    pubn(b, "t", "m", 1200);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 65535, 0));
    assert_int_equal(NG, 1000); /* capped, not refused */
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 0, 0));
    assert_int_equal(NG, 10); /* default batch_size */
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 5000, 0));
    assert_int_equal(NG, 1000);
}

static void test_fifo_available_and_wakeup(void **state)
{
    struct broker *b = FB(state);
    struct broker_msg_in ms[2] = {MK("A1", "A"), MK("A2", "A")};
    expect_ok(pub(b, "t", ms, 2));
    uint64_t t0 = broker_now(b);
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 1, 20 * SEC));
    uint64_t t1 = broker_now(b);
    struct broker_receive_req q = rreq(DEF, "t", "g", 10, 0);
    uint64_t wake;
    /* A2 is blocked behind A1: nothing available until A1's lease ends */
    assert_int_equal(broker_available(b, BROKER_FIFO, &q, 10, &wake), 0);
    assert_true(wake >= t0 + 20 * SEC && wake <= t1 + 20 * SEC);
    struct broker_msg_id a1 = ID(0, 0);
    expect_ok(qack(b, BROKER_FIFO, "t", "g", &a1, 1));
    assert_int_equal(broker_available(b, BROKER_FIFO, &q, 10, &wake), 1);
}

/* A write error: 503 storage_unavailable (or a failed durability wait),
 * nothing acknowledged is lost, nothing unacknowledged appears. */
static void test_storage_failure_acknowledges_nothing(void **state)
{
    (void)state;
    struct faultfs *fs = faultfs_new(7);
    struct fx f = {0};
    f.cfg.data_dir = "/data";
    f.cfg.fsync = JOURNAL_FSYNC_ALWAYS;
    f.cfg.test_clock = true;
    f.cfg.fo = faultfs_ops(fs);
    open_broker(&f);
    struct broker *b = f.b;
    pub1(b, "t", "kept");
    assert_int_equal(broker_wait_durable(b, &W), 0);

    faultfs_fail_write_at(fs, faultfs_write_count(fs) + 1, -EIO);
    struct broker_msg_in m = M("lost");
    CLR();
    int rc = pub(b, "t", &m, 1);
    if (rc == 0) {
        /* accepted into memory but never durable: the caller must not ack */
        assert_int_not_equal(broker_wait_durable(b, &W), 0);
        bool failed = false;
        assert_true(broker_is_durable(b, &W, &failed));
        assert_true(failed);
    } else {
        assert_int_equal(E.status, 503);
        assert_string_equal(E.code, "storage_unavailable");
    }
    /* the journal stays failed: later writes answer 503 */
    struct broker_msg_in m2 = M("after");
    expect_error(pub(b, "t", &m2, 1), 503, "storage_unavailable", NULL);
    expect_error(tconf(b, "t", 2), 503, "storage_unavailable", NULL);

    broker_close(b);
    faultfs_crash(fs, CRASH_DROP);
    open_broker(&f);
    b = f.b;
    expect_ok(srecv(b, "t", "g", 10, true, 0));
    assert_true(NG >= 1);
    assert_string_equal(G[0].value, "kept");
    assert_int_equal(find_value("after"), -1);
    expect_ok(tget(b, "t"));
    assert_int_equal(TI.partitions, 1);
    broker_close(b);
    faultfs_free(fs);
}

/* Namespace names are 1..256 bytes of [A-Za-z0-9-/_.=+] (API.md §2): every
 * valid name can be created, used, and survives a restart. */
static void test_ns_long_names(void **state)
{
    struct fx *f = *state;
    char n256[257], slashes[201];
    memset(n256, 'n', 256);
    n256[256] = 0;
    memset(slashes, '/', 200);
    slashes[200] = 0;
    const char *names[] = {n256, slashes, "a/b.c", "=+.-_/"};
    struct broker_retention none = {0};
    struct broker_ns_info info;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        /* BUG: the namespace's directory name is the (percent-encoded) name,
         * so a valid name longer than NAME_MAX (255) once encoded cannot be
         * created: 256 plain bytes, or 86+ bytes of '/' or '.' (3 bytes each). */
        expect_ok(broker_ns_configure(f->b, S(names[i]), &none, &info, &W, &E));
        struct broker_msg_in m = M("v");
        expect_ok(pub_ns(f->b, NS(names[i]), "t", &m, 1, NULL));
    }
    reopen(f);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        expect_ok(broker_ns_get(f->b, S(names[i]), &info, &E));
        struct broker_topic_info ti;
        expect_ok(broker_topic_get(f->b, NS(names[i]), S("t"), &ti, &E));
        assert_int_equal(ti.parts[0].end_offset, 1);
    }
}

/* Names with characters the data directory encodes come back after a
 * restart, and the list stays sorted. */
static void test_ns_list_survives_restart(void **state)
{
    struct fx *f = *state;
    const char *names[] = {"beta/1", "a+b", "beta.0", "x=y", "Up_Low-9"};
    struct broker_retention none = {0};
    struct broker_ns_info info;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        expect_ok(broker_ns_configure(f->b, S(names[i]), &none, &info, &W, &E));
    reopen(f);
    const struct broker_ns_info *list;
    size_t n;
    assert_int_equal(broker_ns_list(f->b, &list, &n), 0);
    const char *want[] = {"Up_Low-9", "a+b", "beta.0", "beta/1", "default", "x=y"};
    assert_int_equal(n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(list[i].name.n, strlen(want[i]));
        assert_memory_equal(list[i].name.p, want[i], strlen(want[i]));
    }
}

/* Redrive resets the delivery count, and with it the nacks used up. */
static void test_queue_redrive_resets_counts(void **state)
{
    struct broker *b = FB(state);
    const uint64_t sched[1] = {10 * SEC};
    expect_ok(qconf(b, BROKER_QUEUE, "t", "g", sched, 1, NULL, 0));
    pub1(b, "t", "m");
    struct broker_msg_id id = ID(0, 0);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &id, 1)); /* retry */
    advance(b, 10 * SEC);
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(G[0].attempt, 2);
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &id, 1)); /* dead */
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 1);
    expect_ok(qredrive(b, BROKER_QUEUE, "t", "g"));
    expect_ok(qrecv(b, BROKER_QUEUE, "t", "g", 10, 60 * SEC));
    assert_int_equal(NG, 1);
    assert_int_equal(G[0].attempt, 1);
    expect_ok(qnack(b, BROKER_QUEUE, "t", "g", &id, 1)); /* a retry again, not dead */
    expect_ok(gget(b, "t", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 0);
    assert_int_equal(GI.waiting_retry, 1);
    /* without a retry_schedule a nack with delay_ms still dead-letters */
    pub1(b, "u", "x");
    expect_ok(qrecv(b, BROKER_QUEUE, "u", "g", 10, 60 * SEC));
    expect_ok(qnack_delay(b, BROKER_QUEUE, "u", "g", &id, 1, 5 * SEC));
    expect_ok(gget(b, "u", BROKER_QUEUE, "g"));
    assert_int_equal(GI.dead, 1);
    assert_int_equal(GI.waiting_retry, 0);
}

/* BUG: "Messages with the same key are delivered in offset order" (API.md
 * §8): a delayed message of a key holds back the later messages of that key
 * until it has been delivered (and settled); they are not delivered before it. */
static void test_fifo_delayed_message_keeps_key_order(void **state)
{
    struct broker *b = FB(state);
    struct broker_msg_in ms[2] = {MK("A1", "A"), MK("A2", "A")};
    ms[0].has_delay = true;
    ms[0].delay_ms = 20 * SEC;
    expect_ok(pub(b, "t", ms, 2));
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_int_equal(find_value("A2"), -1); /* A2 may not overtake A1 */
    assert_int_equal(NG, 0);
    advance(b, 20 * SEC);
    expect_ok(qrecv(b, BROKER_FIFO, "t", "g", 10, 60 * SEC));
    assert_true(NG >= 1);
    assert_string_equal(G[0].value, "A1");
}

/* size_bytes: the namespace keeps at most this many bytes on disk, oldest
 * first; offsets stay, and what topic.get reports follows. */
static void test_retention_size_bytes(void **state)
{
    struct fx *f = *state;
    broker_close(f->b);
    f->cfg.segment_bytes = 8192;
    f->cfg.checkpoint_bytes = 4096;
    open_broker(f);
    struct broker *b = f->b;
    struct broker_retention r = {.has_size = true, .size_bytes = 32768};
    struct broker_ns_info info;
    expect_ok(broker_ns_configure(b, S("sz"), &r, &info, &W, &E));
    struct broker_ns_ref ns = NS("sz");
    char val[501];
    memset(val, 'v', 500);
    val[500] = 0;
    for (int i = 0; i < 400; i++) { /* ~200 KB */
        struct broker_msg_in m = M(val);
        expect_ok(pub_ns(b, ns, "t", &m, 1, NULL));
        if (i % 20 == 19)
            broker_tick(b);
    }
    for (int i = 0; i < 5; i++)
        broker_tick(b);
    struct broker_topic_info ti;
    expect_ok(broker_topic_get(b, ns, S("t"), &ti, &E));
    assert_int_equal(ti.parts[0].end_offset, 400);
    uint64_t kept = ti.parts[0].end_offset - ti.parts[0].start_offset;
    assert_true(ti.parts[0].start_offset > 0);
    assert_true(kept * 500 <= 32768);
    /* BUG: topic.get's bytes still counts the messages retention removed */
    if (ti.parts[0].bytes > 32768 || ti.parts[0].bytes < kept * 500)
        fail_msg("topic.get bytes = %" PRIu64 " for %" PRIu64 " kept messages of 500 bytes "
                 "(offsets %" PRIu64 "..%" PRIu64 ")",
                 ti.parts[0].bytes, kept, ti.parts[0].start_offset, ti.parts[0].end_offset);
    expect_ok(srecv_ns(b, ns, "t", "s", 1000, true, 0));
    assert_int_equal(NG, kept);
    assert_int_equal(G[0].offset, ti.parts[0].start_offset);
    struct broker_msg_in m = M("next");
    expect_ok(pub_ns(b, ns, "t", &m, 1, NULL));
    assert_int_equal(PR.parts[0].start_offset, 400);
}

int main(void)
{
    log_set_level(CYLOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_topic_ref_table),
        cmocka_unit_test(test_namespace_name_table),
        cmocka_unit_test(test_group_name_table),
        cmocka_unit_test(test_msg_id_table),
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_ns_default_exists),
        T(test_ns_configure_upsert),
        T(test_ns_get_unknown_and_bad_names),
        T(test_ns_list_sorted),
        T(test_ns_list_survives_restart),
        T(test_ns_long_names),
        T(test_ns_retention_roundtrip),
        T(test_ns_ref_rules),
        T(test_topic_implicit_creation),
        T(test_topic_configure_partition_range),
        T(test_topic_configure_only_grows),
        T(test_publish_offsets_consecutive),
        T(test_publish_djb2_partitioning),
        T(test_publish_keyless_spread),
        T(test_publish_partition_routing),
        T(test_publish_empty),
        T(test_publish_idempotency),
        T(test_publish_timestamps),
        T(test_publish_delay_sets_scheduled_at),
        T(test_publish_limits),
        T(test_publish_content_roundtrip),
        T(test_stream_new_group_latest),
        T(test_stream_new_group_earliest),
        T(test_stream_receive_keeps_cursor),
        T(test_stream_no_available_leases),
        T(test_stream_commit),
        T(test_stream_commit_errors),
        T(test_stream_seek),
        T(test_stream_seek_initializes_new_group),
        T(test_stream_partitions_added_later),
        T(test_stream_first_receive_on_one_partition_inits_all),
        T(test_stream_skips_trimmed),
        T(test_stream_batch_and_lease_limits),
        T(test_queue_receive_ack),
        T(test_queue_others_leases_do_not_block),
        T(test_queue_ack_errors),
        T(test_queue_nack_retry_schedule),
        T(test_queue_nack_without_config_dead_letters),
        T(test_queue_nack_delay_override),
        T(test_queue_dlq_topic),
        T(test_queue_nack_dead_letter),
        T(test_queue_extend_lease),
        T(test_queue_configure),
        T(test_queue_max_deliveries),
        T(test_queue_lease_expiry_consumes_no_retry),
        T(test_queue_delay_hides),
        T(test_queue_new_group_starts_at_retained),
        T(test_queue_batch_cap),
        T(test_queue_redrive_resets_counts),
        T(test_fifo_key_order),
        T(test_fifo_consecutive_run_to_one_caller),
        T(test_fifo_nack_releases_later_messages),
        T(test_fifo_lease_expiry_releases_without_counting),
        T(test_fifo_keyless_and_dead_unblock),
        T(test_fifo_delayed_message_keeps_key_order),
        T(test_fifo_blocked_key_does_not_hold_others),
        T(test_mode_groups_are_distinct),
        T(test_trim),
        T(test_trim_by_timestamp),
        T(test_topic_get_info),
        T(test_group_get_and_list),
        T(test_available_and_wakeup),
        T(test_available_delayed_message),
        T(test_watch_and_changed_topics),
        T(test_fifo_available_and_wakeup),
        T(test_change_seq),
        T(test_fsync_always),
        T(test_clock_advance_needs_test_clock),
        T(test_restart_persists_state),
        T(test_restart_state_dump_stable),
        cmocka_unit_test(test_storage_failure_acknowledges_nothing),
        T(test_retention_period_skips_old),
        T(test_retention_topic_bytes),
        T(test_retention_size_bytes),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
