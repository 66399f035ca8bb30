/*
 * test_codec.c — request bodies in (JSON and MessagePack tables of valid and
 * invalid bodies: empty, truncated, trailing bytes, too deep, duplicate keys
 * with their location, integer ranges, reals, NUL and invalid UTF-8, map key
 * types, bin vs str), val_get, content negotiation (Content-Type and Accept
 * tables), and the response writer (exact bytes, canonical MessagePack forms
 * checked against msgpack-c's packer, JSON escaping of every control
 * character, U+FFFD for invalid UTF-8, out_bytes in every encoding, round
 * trips through the parsers, and out_finish catching misuse).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers above, which it needs */

#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coyote.h"
#include "json_oracle.h"
#include "server/codec.h"
#include "testutil.h"

#define B(lit) (const uint8_t *)(lit), (sizeof(lit) - 1)

/* ---- helpers ------------------------------------------------------------------- */

struct parsed {
    struct arena a;
    struct val *v;
    enum codec_err rc;
    char detail[256];
    char location[128];
};

static void parse_fmt(struct parsed *p, enum codec_format fmt, const uint8_t *body, size_t len)
{
    arena_init(&p->a);
    memset(p->detail, 'X', sizeof p->detail);
    memset(p->location, 'X', sizeof p->location);
    if (fmt == FORMAT_JSON)
        p->rc = codec_parse_json(body, len, &p->a, &p->v, p->detail, sizeof p->detail, p->location,
                                 sizeof p->location);
    else
        p->rc = codec_parse_msgpack(body, len, &p->a, &p->v, p->detail, sizeof p->detail,
                                    p->location, sizeof p->location);
    /* always NUL-terminated, whatever the outcome */
    assert_non_null(memchr(p->detail, '\0', sizeof p->detail));
    assert_non_null(memchr(p->location, '\0', sizeof p->location));
    if (p->rc == CODEC_OK) {
        assert_non_null(p->v);
        assert_string_equal(p->detail, "");
    } else {
        assert_null(p->v);
        assert_true(strlen(p->detail) > 0);
    }
    if (p->rc != CODEC_EDUPKEY && p->rc != CODEC_ERANGE)
        assert_string_equal(p->location, "");
}

static void parsed_free(struct parsed *p)
{
    arena_free(&p->a);
}

/* Writes v in fmt, parses it back and checks the tree is equal. */
static void assert_round_trip(const struct val *v, enum codec_format fmt)
{
    struct out o;
    out_init(&o, fmt);
    out_val(&o, v);
    assert_int_equal(out_finish(&o), 0);
    struct parsed p;
    parse_fmt(&p, fmt, o.buf.data, o.buf.len);
    if (p.rc != CODEC_OK)
        fail_msg("round trip: %s (%.*s)", p.detail, (int)o.buf.len, (const char *)o.buf.data);
    assert_true(val_equal(v, p.v));
    /* writing it again gives the same bytes (one canonical form) */
    struct out o2;
    out_init(&o2, fmt);
    out_val(&o2, p.v);
    assert_int_equal(out_finish(&o2), 0);
    assert_int_equal(o2.buf.len, o.buf.len);
    assert_memory_equal(o2.buf.data, o.buf.data, o.buf.len);
    out_free(&o2);
    parsed_free(&p);
    out_free(&o);
}

static void nested(char *dst, int levels, char open, char close)
{
    int i = 0;
    for (; i < levels; i++)
        dst[i] = open;
    for (int k = 0; k < levels; k++)
        dst[i++] = close;
    dst[i] = '\0';
}

/* ---- arena -------------------------------------------------------------------------- */

static void test_arena(void **state)
{
    struct arena a;
    arena_init(&a);
    for (int i = 0; i < 2000; i++) {
        size_t n = (size_t)(i % 37);
        uint8_t *p = arena_alloc(&a, n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xAB, n);
    }
    uint8_t *big = arena_alloc(&a, 1 << 20);
    assert_non_null(big);
    assert_int_equal((uintptr_t)big % 16, 0);
    memset(big, 1, 1 << 20);
    /* allocations keep working after a big one */
    assert_non_null(arena_alloc(&a, 8));
    assert_null(arena_alloc(&a, SIZE_MAX - 3));
    assert_true(a.used_total >= (1 << 20));
    arena_free(&a);
    assert_null(a.head);
    assert_int_equal(a.used_total, 0);
    arena_free(&a); /* twice is harmless */
}

/* ---- JSON in ----------------------------------------------------------------------- */

static void test_json_scalars(void **state)
{
    struct parsed p;

    parse_fmt(&p, FORMAT_JSON, B("null"));
    assert_int_equal(p.v->type, VAL_NULL);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B(" true "));
    assert_int_equal(p.v->type, VAL_BOOL);
    assert_true(p.v->b);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("false"));
    assert_int_equal(p.v->type, VAL_BOOL);
    assert_false(p.v->b);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("0"));
    assert_int_equal(p.v->type, VAL_UINT);
    assert_int_equal(p.v->u, 0);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("-0"));
    assert_int_equal(p.v->type, VAL_UINT);
    assert_int_equal(p.v->u, 0);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("-1"));
    assert_int_equal(p.v->type, VAL_INT);
    assert_int_equal(p.v->i, -1);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("9223372036854775807"));
    assert_int_equal(p.v->type, VAL_UINT);
    assert_true(p.v->u == (uint64_t)INT64_MAX);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("-9223372036854775808"));
    assert_int_equal(p.v->type, VAL_INT);
    assert_true(p.v->i == INT64_MIN);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("253402207200998"));
    assert_int_equal(p.v->type, VAL_UINT);
    assert_true(p.v->u == 253402207200998ull);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("1.5"));
    assert_int_equal(p.v->type, VAL_FLOAT);
    assert_true(p.v->f == 1.5);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("1e3"));
    assert_int_equal(p.v->type, VAL_FLOAT);
    assert_true(p.v->f == 1000.0);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("-2.5E-3"));
    assert_int_equal(p.v->type, VAL_FLOAT);
    assert_true(p.v->f == -2.5e-3);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("\"\""));
    assert_int_equal(p.v->type, VAL_STR);
    assert_int_equal(p.v->s.n, 0);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\""));
    assert_int_equal(p.v->type, VAL_STR);
    assert_int_equal(p.v->s.n, 10);
    assert_memory_equal(p.v->s.p, "a\"\\/\b\f\n\r\t\x01", 10);
    parsed_free(&p);

    /* escaped and raw non-ASCII are the same bytes */
    parse_fmt(&p, FORMAT_JSON, B("[\"\\u00e9\\ud83d\\ude00\", \"\xc3\xa9\xf0\x9f\x98\x80\"]"));
    assert_int_equal(p.v->type, VAL_ARRAY);
    assert_int_equal(p.v->arr.n, 2);
    assert_int_equal(p.v->arr.items[0].s.n, 6);
    assert_memory_equal(p.v->arr.items[0].s.p, "\xc3\xa9\xf0\x9f\x98\x80", 6);
    assert_true(val_equal(&p.v->arr.items[0], &p.v->arr.items[1]));
    parsed_free(&p);
}

static void test_json_documents(void **state)
{
    static const char body[] =
        " \r\n{\"namespace\": null, \"topic\": \"orders~3\",\n"
        "  \"msgs\": [{\"value\": [104, 105], \"headers\": {\"a\": \"b\"}, \"key\": \"k1\"},\n"
        "           {\"value\": \"hi\", \"delay_ms\": 1000}],\n"
        "  \"idempotency_key\": \"x-1\"}\n\t ";
    struct parsed p;
    parse_fmt(&p, FORMAT_JSON, B(body));
    assert_int_equal(p.rc, CODEC_OK);
    assert_int_equal(p.v->type, VAL_MAP);
    assert_int_equal(p.v->map.n, 4);
    /* keys keep their document order */
    assert_string_equal(p.v->map.items[0].key, "namespace");
    assert_string_equal(p.v->map.items[1].key, "topic");
    assert_string_equal(p.v->map.items[2].key, "msgs");
    assert_string_equal(p.v->map.items[3].key, "idempotency_key");
    assert_int_equal(val_get(p.v, "namespace")->type, VAL_NULL);
    const struct val *topic = val_get(p.v, "topic");
    assert_int_equal(topic->type, VAL_STR);
    assert_int_equal(topic->s.n, 8);
    assert_memory_equal(topic->s.p, "orders~3", 8);
    const struct val *msgs = val_get(p.v, "msgs");
    assert_int_equal(msgs->type, VAL_ARRAY);
    assert_int_equal(msgs->arr.n, 2);
    const struct val *value = val_get(&msgs->arr.items[0], "value");
    assert_int_equal(value->type, VAL_ARRAY);
    assert_int_equal(value->arr.items[1].type, VAL_UINT);
    assert_int_equal(value->arr.items[1].u, 105);
    const struct val *hdrs = val_get(&msgs->arr.items[0], "headers");
    assert_int_equal(hdrs->type, VAL_MAP);
    assert_int_equal(val_get(hdrs, "a")->s.n, 1);
    assert_int_equal(val_get(&msgs->arr.items[1], "delay_ms")->u, 1000);
    assert_null(val_get(&msgs->arr.items[1], "key"));
    assert_round_trip(p.v, FORMAT_JSON);
    assert_round_trip(p.v, FORMAT_MSGPACK);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("{}"));
    assert_int_equal(p.v->type, VAL_MAP);
    assert_int_equal(p.v->map.n, 0);
    assert_null(val_get(p.v, "x"));
    parsed_free(&p);

    parse_fmt(&p, FORMAT_JSON, B("[]"));
    assert_int_equal(p.v->type, VAL_ARRAY);
    assert_int_equal(p.v->arr.n, 0);
    parsed_free(&p);
}

static void test_json_depth(void **state)
{
    char doc[512];
    struct parsed p;

    nested(doc, CODEC_MAX_DEPTH, '[', ']');
    parse_fmt(&p, FORMAT_JSON, (const uint8_t *)doc, strlen(doc));
    assert_int_equal(p.rc, CODEC_OK);
    assert_round_trip(p.v, FORMAT_JSON);
    assert_round_trip(p.v, FORMAT_MSGPACK);
    parsed_free(&p);

    nested(doc, CODEC_MAX_DEPTH + 1, '[', ']');
    parse_fmt(&p, FORMAT_JSON, (const uint8_t *)doc, strlen(doc));
    assert_int_equal(p.rc, CODEC_EENCODING);
    assert_non_null(strstr(p.detail, "deeper"));
    parsed_free(&p);

    /* objects count too, and brackets inside strings do not */
    strcpy(doc, "");
    for (int i = 0; i < CODEC_MAX_DEPTH; i++)
        strcat(doc, "{\"a\":");
    strcat(doc, "\"[[[[{{{{\"");
    for (int i = 0; i < CODEC_MAX_DEPTH; i++)
        strcat(doc, "}");
    parse_fmt(&p, FORMAT_JSON, (const uint8_t *)doc, strlen(doc));
    assert_int_equal(p.rc, CODEC_OK);
    parsed_free(&p);

    strcpy(doc, "{\"a\":");
    nested(doc + 5, CODEC_MAX_DEPTH, '[', ']');
    strcat(doc, "}");
    parse_fmt(&p, FORMAT_JSON, (const uint8_t *)doc, strlen(doc));
    assert_int_equal(p.rc, CODEC_EENCODING);
    parsed_free(&p);

    /* a long run of brackets is refused before jansson recurses */
    size_t n = 100000;
    char *deep = malloc(n);
    assert_non_null(deep);
    memset(deep, '[', n);
    parse_fmt(&p, FORMAT_JSON, (const uint8_t *)deep, n);
    assert_int_equal(p.rc, CODEC_EENCODING);
    parsed_free(&p);
    free(deep);
}

struct bad_case {
    const char *body;
    size_t len;
    const char *detail_has; /* NULL: any */
};

#define BAD(lit, has)             \
    {                             \
        lit, sizeof(lit) - 1, has \
    }

/* Valid JSON that no field accepts: integers beyond 64-bit signed range are
 * data errors (422) at their place; NUL inside a string value is allowed
 * (API.md: a string value is its UTF-8 bytes). */
static void test_json_big_ints_and_nul(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        const char *location;
    } big[] = {
        {"18446744073709551616", ""},
        {"{\"a\":18446744073709551616}", "a"},
        {"{\"msgs\":[{\"delay_ms\":99999999999999999999999}]}", "msgs[0].delay_ms"},
        {"[-9223372036854775809]", "[0]"},
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        struct parsed p;
        parse_fmt(&p, FORMAT_JSON, (const uint8_t *)big[i].body, strlen(big[i].body));
        if (p.rc != CODEC_ERANGE)
            fail_msg("big %zu: rc %d", i, p.rc);
        if (!strstr(p.detail, "out of range"))
            fail_msg("big %zu: detail '%s'", i, p.detail);
        if (strcmp(p.location, big[i].location) != 0)
            fail_msg("big %zu: location '%s', want '%s'", i, p.location, big[i].location);
        parsed_free(&p);
    }
    /* Any u64 is an integer (API.md §2: offsets are u64), as in MessagePack;
     * jansson (the oracle) stopped at 2^63 - 1. */
    struct parsed p;
    parse_fmt(&p, FORMAT_JSON,
              B("[9223372036854775808, 18446744073709551615, -9223372036854775808]"));
    assert_int_equal(p.rc, CODEC_OK);
    assert_int_equal(p.v->arr.items[0].type, VAL_UINT);
    assert_true(p.v->arr.items[0].u == (uint64_t)INT64_MAX + 1);
    assert_int_equal(p.v->arr.items[1].type, VAL_UINT);
    assert_true(p.v->arr.items[1].u == UINT64_MAX);
    assert_int_equal(p.v->arr.items[2].type, VAL_INT);
    assert_true(p.v->arr.items[2].i == INT64_MIN);
    parsed_free(&p);
    /* misplaced, it is a misplaced token like any other */
    parse_fmt(&p, FORMAT_JSON, B("[1 18446744073709551615]"));
    assert_int_equal(p.rc, CODEC_EENCODING);
    parsed_free(&p);
    parse_fmt(&p, FORMAT_JSON, B("\"a\\u0000b\""));
    assert_int_equal(p.rc, CODEC_OK);
    assert_int_equal(p.v->type, VAL_STR);
    assert_int_equal(p.v->s.n, 3);
    assert_memory_equal(p.v->s.p, "a\0b", 3);
    parsed_free(&p);
}

static void test_json_invalid(void **state)
{
    static const struct bad_case cases[] = {
        BAD("", "empty"),
        BAD("   \r\n\t", "empty"),
        BAD("{", NULL),
        BAD("{\"a\":1", NULL),
        BAD("{\"a\":", NULL),
        BAD("[1,2", NULL),
        BAD("\"abc", NULL),
        BAD("{\"a\":1}x", NULL),
        BAD("{\"a\":1} {}", NULL),
        BAD("[1] 2", NULL),
        BAD("1 2", NULL),
        BAD("[1,]", NULL),
        BAD("{\"a\":1,}", NULL),
        BAD("{'a':1}", NULL),
        BAD("{a:1}", NULL),
        BAD("[01]", NULL),
        BAD("[+1]", NULL),
        BAD("[.5]", NULL),
        BAD("[NaN]", NULL),
        BAD("[Infinity]", NULL),
        BAD("[1e400]", NULL),
        BAD("[tru]", NULL),
        BAD("{\"a\\u0000b\":1}", NULL),    /* NUL in a key */
        BAD("\"a\0b\"", NULL),             /* a raw NUL */
        BAD("{\"a\":1}\0", NULL),          /* a NUL after the value */
        BAD("\"\x01\"", NULL),             /* raw control character */
        BAD("\"\xff\"", NULL),             /* invalid UTF-8 */
        BAD("\"\xc0\xaf\"", NULL),         /* overlong */
        BAD("\"\xed\xa0\x80\"", NULL),     /* an encoded surrogate */
        BAD("\"\xf4\x90\x80\x80\"", NULL), /* above U+10FFFF */
        BAD("\"\xe2\x82\"", NULL),         /* truncated sequence */
        BAD("{\"\xff\":1}", NULL),         /* invalid UTF-8 in a key */
        BAD("\"\\ud800\"", NULL),          /* a lone surrogate escape */
        BAD("\"\\x41\"", NULL),
        BAD("\xef\xbb\xbf{}", NULL), /* a BOM is not JSON */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct parsed p;
        parse_fmt(&p, FORMAT_JSON, (const uint8_t *)cases[i].body, cases[i].len);
        if (p.rc != CODEC_EENCODING)
            fail_msg("case %zu: rc %d", i, p.rc);
        if (cases[i].detail_has && !strstr(p.detail, cases[i].detail_has))
            fail_msg("case %zu: detail '%s' lacks '%s'", i, p.detail, cases[i].detail_has);
        assert_non_null(strstr(p.detail, "JSON"));
        parsed_free(&p);
    }
}

struct dup_case {
    const char *body;
    const char *location;
};

static void test_json_duplicate_keys(void **state)
{
    static const struct dup_case cases[] = {
        {"{\"a\":1,\"a\":2}", "a"},
        {"{\"topic\":\"t\", \"msgs\":[], \"topic\" : \"u\"}", "topic"},
        {"{\"msgs\":[{\"value\":1,\"value\":2}]}", "msgs[0].value"},
        {"{\"msgs\":[{},{\"key\":\"k\",\"headers\":{\"x\":\"1\",\"x\":\"2\"}}]}",
         "msgs[1].headers.x"},
        {"[[0],{\"a\":{\"b\":1,\"b\":1}}]", "[1].a.b"},
        {"{\"x\":[1,2,[3,{\"k\":1,\"k\":2}]]}", "x[2][1].k"},
        {"{\"a\":\"\\\"{[,\",\"a\":1}", "a"},           /* brackets and commas in a string */
        {"{\"\\u00e9\":1,\"\xc3\xa9\":2}", "\xc3\xa9"}, /* an escape names the same key */
        {"{\"a\\\"b\":1,\"a\\\"b\":2}", "a\"b"},
        {"{\"b\":{\"x\":1,\"x\":2},\"b\":1}", "b.x"}, /* the first in document order */
        {"{\"b\":1,\"b\":2,\"c\":{\"x\":1,\"x\":2}}", "b"},
        {"{\"\":1,\"\":2}", ""},
        {"[{\"a\":[{\"b\":[]}],\"c\":{\"d\":{},\"d\":{}}}]", "[0].c.d"},
        {"{\"\\ud83d\\ude00\":0,\"\xf0\x9f\x98\x80\":0}", "\xf0\x9f\x98\x80"},
        /* multi-byte characters before the duplicate (jansson counts bytes) */
        {"{\"\xc3\xa9\xc3\xa9\xc3\xa9\":\"\xe2\x82\xac\xe2\x82\xac\",\"b\":1,\"b\":2}", "b"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct parsed p;
        parse_fmt(&p, FORMAT_JSON, (const uint8_t *)cases[i].body, strlen(cases[i].body));
        if (p.rc != CODEC_EDUPKEY)
            fail_msg("case %zu: rc %d (%s)", i, p.rc, p.detail);
        if (strcmp(p.location, cases[i].location) != 0)
            fail_msg("case %zu: location '%s', want '%s'", i, p.location, cases[i].location);
        assert_non_null(strstr(p.detail, "duplicate"));
        parsed_free(&p);
    }

    /* a duplicate at the end of a big object */
    struct buf b = BUF_INIT;
    buf_put(&b, "{", 1);
    char tmp[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(tmp, sizeof tmp, "\"k%d\":%d,", i, i);
        buf_put(&b, tmp, (size_t)n);
    }
    buf_put(&b, "\"k4321\":0}", 10);
    struct parsed p;
    parse_fmt(&p, FORMAT_JSON, b.data, b.len);
    assert_int_equal(p.rc, CODEC_EDUPKEY);
    assert_string_equal(p.location, "k4321");
    parsed_free(&p);
    buf_free(&b);

    /* a location longer than the caller's buffer is cut, still terminated */
    char loc[8], detail[64];
    struct arena a;
    struct val *v;
    arena_init(&a);
    static const char longkey[] = "{\"abcdefghijklmnop\":1,\"abcdefghijklmnop\":2}";
    assert_int_equal(codec_parse_json(B(longkey), &a, &v, detail, sizeof detail, loc, sizeof loc),
                     CODEC_EDUPKEY);
    assert_string_equal(loc, "abcdefg");
    arena_free(&a);
    /* NULL / zero-length text buffers are fine */
    arena_init(&a);
    assert_int_equal(codec_parse_json(B(longkey), &a, &v, NULL, 0, NULL, 0), CODEC_EDUPKEY);
    assert_int_equal(codec_parse_json(B("{"), &a, &v, NULL, 0, NULL, 0), CODEC_EENCODING);
    arena_free(&a);
}

/* ---- JSON in: the hand-written parser against its table and jansson ------------------- */

struct json_case {
    const char *body;
    size_t len;
    enum codec_err rc;
    const char *location; /* CODEC_EDUPKEY / CODEC_ERANGE: where */
};

#define JC(lit, rc, loc)              \
    {                                 \
        lit, sizeof(lit) - 1, rc, loc \
    }

/* Parses with codec_parse_json and with the jansson oracle (the parser it
 * replaced): the same result, an equal tree, the same location. */
static void check_json_case(const char *what, const uint8_t *body, size_t len, enum codec_err rc,
                            const char *location)
{
    struct parsed p, o;
    parse_fmt(&p, FORMAT_JSON, body, len);
    arena_init(&o.a);
    o.rc = json_oracle_parse(body, len, &o.a, &o.v, o.detail, sizeof o.detail, o.location,
                             sizeof o.location);
    if (p.rc != rc)
        fail_msg("%s: rc %d, want %d (%s)", what, p.rc, rc, p.detail);
    if (o.rc != rc)
        fail_msg("%s: the oracle says %d, want %d (%s)", what, o.rc, rc, o.detail);
    if (rc == CODEC_OK && !val_equal(p.v, o.v))
        fail_msg("%s: the tree differs from the oracle's", what);
    if (rc == CODEC_EDUPKEY || rc == CODEC_ERANGE) {
        if (strcmp(p.location, location) != 0)
            fail_msg("%s: location '%s', want '%s'", what, p.location, location);
        if (strcmp(o.location, location) != 0)
            fail_msg("%s: the oracle's location '%s', want '%s'", what, o.location, location);
    }
    if (rc == CODEC_EENCODING && !strstr(p.detail, "JSON"))
        fail_msg("%s: detail '%s'", what, p.detail);
    if (rc == CODEC_ERANGE && !strstr(p.detail, "out of range"))
        fail_msg("%s: detail '%s'", what, p.detail);
    if (rc == CODEC_EDUPKEY && !strstr(p.detail, "duplicate key"))
        fail_msg("%s: detail '%s'", what, p.detail);
    parsed_free(&o);
    parsed_free(&p);
}

static void test_json_table(void **state)
{
    static const struct json_case cases[] = {
        /* numbers */
        JC("0", CODEC_OK, NULL),
        JC("-0", CODEC_OK, NULL),
        JC("-0.0", CODEC_OK, NULL),
        JC("0.0", CODEC_OK, NULL),
        JC("[0,-0,1,-1,10,-10]", CODEC_OK, NULL),
        JC("1e5", CODEC_OK, NULL),
        JC("1E+5", CODEC_OK, NULL),
        JC("1e-5", CODEC_OK, NULL),
        JC("1e05", CODEC_OK, NULL),
        JC("0.1", CODEC_OK, NULL),
        JC("123.456e-7", CODEC_OK, NULL),
        JC("-2.5E-3", CODEC_OK, NULL),
        JC("1.5e300", CODEC_OK, NULL),
        JC("4.9e-324", CODEC_OK, NULL),
        JC("1e-400", CODEC_OK, NULL),  /* underflow to 0: accepted, as jansson */
        JC("-1e-400", CODEC_OK, NULL), /* -0.0 */
        JC("0e99999999999", CODEC_OK, NULL),
        JC("0.000e-99999999999", CODEC_OK, NULL),
        JC("1.7976931348623157e308", CODEC_OK, NULL),
        JC("1.7976931348623159e308", CODEC_EENCODING, NULL), /* rounds to infinity */
        JC("1e400", CODEC_EENCODING, NULL),
        JC("-1e400", CODEC_EENCODING, NULL),
        JC("[1e99999999999999999999]", CODEC_EENCODING, NULL),
        JC("9007199254740993", CODEC_OK, NULL),
        JC("9007199254740993.0", CODEC_OK, NULL), /* 2^53 + 1: strtod's rounding */
        JC("9007199254740992e-22", CODEC_OK, NULL),
        JC("12345678901234567890e-5", CODEC_OK, NULL),
        JC("0.12345678901234567890123", CODEC_OK, NULL),
        JC("123456789012345678901234567890e-10", CODEC_OK, NULL),
        JC("1e23", CODEC_OK, NULL),
        JC("8.98846567431158e307", CODEC_OK, NULL),
        JC("2.2250738585072011e-308", CODEC_OK, NULL),
        JC("9223372036854775807", CODEC_OK, NULL),
        JC("-9223372036854775808", CODEC_OK, NULL),
        JC("-9223372036854775809", CODEC_ERANGE, ""),
        JC("18446744073709551616", CODEC_ERANGE, ""),
        JC("123456789012345678901234567890", CODEC_ERANGE, ""),
        JC("[1,{\"a\":[2,-99999999999999999999]}]", CODEC_ERANGE, "[1].a[1]"),
        JC("[99999999999999999999\xc3\xa9]", CODEC_ERANGE, "[0]"), /* then an invalid token */
        JC("[99999999999999999999\xff]", CODEC_EENCODING, NULL),   /* jansson read the \xff first */
        JC("[99999999999999999999\xc3]", CODEC_EENCODING, NULL),
        JC("[1e400, 99999999999999999999]", CODEC_EENCODING, NULL), /* the first error wins */
        JC("[99999999999999999999, 1e400]", CODEC_ERANGE, "[0]"),
        JC("01", CODEC_EENCODING, NULL),
        JC("-01", CODEC_EENCODING, NULL),
        JC("00", CODEC_EENCODING, NULL),
        JC("+1", CODEC_EENCODING, NULL),
        JC("-", CODEC_EENCODING, NULL),
        JC("-a", CODEC_EENCODING, NULL),
        JC("1.", CODEC_EENCODING, NULL),
        JC("1.e5", CODEC_EENCODING, NULL),
        JC(".5", CODEC_EENCODING, NULL),
        JC("1e", CODEC_EENCODING, NULL),
        JC("1e+", CODEC_EENCODING, NULL),
        JC("1e-x", CODEC_EENCODING, NULL),
        JC("0x10", CODEC_EENCODING, NULL),
        JC("1_000", CODEC_EENCODING, NULL),
        JC("-Infinity", CODEC_EENCODING, NULL),
        JC("[NaN]", CODEC_EENCODING, NULL),
        /* strings */
        JC("\"\"", CODEC_OK, NULL),
        JC("\"a much longer plain ASCII string, past the 8-byte words\"", CODEC_OK, NULL),
        JC("\"0123456789abcdef\\n0123456789abcdef\\\"x\"", CODEC_OK, NULL),
        JC("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", CODEC_OK, NULL),
        JC("\"\\u0000\"", CODEC_OK, NULL),
        JC("\"a\\u0000b\\u0000\"", CODEC_OK, NULL),
        JC("\"\\u0041\\u00e9\\u20AC\\uFFFF\\uffff\"", CODEC_OK, NULL),
        JC("\"\\ud83d\\ude00\\uD83D\\uDE00\"", CODEC_OK, NULL),
        JC("\"\\udbff\\udfff\"", CODEC_OK, NULL), /* U+10FFFF */
        JC("\"\\ud800\\udc00\"", CODEC_OK, NULL), /* U+10000 */
        JC("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"", CODEC_OK, NULL),
        JC("\"\x7f\"", CODEC_OK, NULL), /* DEL is not a control character here */
        JC("\"\\ud83d\"", CODEC_EENCODING, NULL),
        JC("\"\\ude00\"", CODEC_EENCODING, NULL),
        JC("\"\\ude00\\ud83d\"", CODEC_EENCODING, NULL),
        JC("\"\\ud83dx\"", CODEC_EENCODING, NULL),
        JC("\"\\ud83d\\n\"", CODEC_EENCODING, NULL),
        JC("\"\\ud83d\\u0041\"", CODEC_EENCODING, NULL),
        JC("\"\\ud83d\\ud83d\"", CODEC_EENCODING, NULL),
        JC("\"\\ud83d\\u12\"", CODEC_EENCODING, NULL),
        JC("\"\\ud83d\\", CODEC_EENCODING, NULL),
        JC("\"\\u12\"", CODEC_EENCODING, NULL),
        JC("\"\\u12", CODEC_EENCODING, NULL),
        JC("\"\\uZZZZ\"", CODEC_EENCODING, NULL),
        JC("\"\\U0041\"", CODEC_EENCODING, NULL),
        JC("\"\\a\"", CODEC_EENCODING, NULL),
        JC("\"\\x41\"", CODEC_EENCODING, NULL),
        JC("\"\\'\"", CODEC_EENCODING, NULL),
        JC("\"abc\\", CODEC_EENCODING, NULL),
        JC("\"abc\\\"", CODEC_EENCODING, NULL),
        JC("\"\x1f\"", CODEC_EENCODING, NULL),
        JC("\"\t\"", CODEC_EENCODING, NULL),
        JC("\"line\nbreak\"", CODEC_EENCODING, NULL),
        JC("\"a\0b\"", CODEC_EENCODING, NULL),
        JC("\"\x80\"", CODEC_EENCODING, NULL),
        JC("\"\xc1\xbf\"", CODEC_EENCODING, NULL),
        JC("\"\xe0\x9f\xbf\"", CODEC_EENCODING, NULL),
        JC("\"\xf0\x8f\xbf\xbf\"", CODEC_EENCODING, NULL),
        JC("\"\xf5\x80\x80\x80\"", CODEC_EENCODING, NULL),
        JC("\"\xed\xbf\xbf\"", CODEC_EENCODING, NULL),
        JC("\"01234567\xc3\"", CODEC_EENCODING, NULL),
        JC("\"01234567\xc3", CODEC_EENCODING, NULL),
        JC("\"unterminated, and longer than a word", CODEC_EENCODING, NULL),
        JC("'a'", CODEC_EENCODING, NULL),
        JC("{\"a\\u0000\":1}", CODEC_EENCODING, NULL), /* NUL in a key */
        JC("{\"\\u0000\":1,\"\\u0000\":2}", CODEC_EENCODING, NULL),
        JC("{\"\\u0001\":1}", CODEC_OK, NULL),
        /* literals and whitespace */
        JC("[true,false,null]", CODEC_OK, NULL),
        JC(" \t\r\n[ 1 , 2 ]\n\t\r ", CODEC_OK, NULL),
        JC("{ \"a\" : 1 , \"b\" : [ ] , \"c\" : { } }", CODEC_OK, NULL),
        JC("tru", CODEC_EENCODING, NULL),
        JC("truex", CODEC_EENCODING, NULL),
        JC("True", CODEC_EENCODING, NULL),
        JC("nul", CODEC_EENCODING, NULL),
        JC("nulll", CODEC_EENCODING, NULL),
        JC("[falsey]", CODEC_EENCODING, NULL),
        JC("\f1", CODEC_EENCODING, NULL), /* form feed is not whitespace */
        JC("\v1", CODEC_EENCODING, NULL),
        JC("[1]\xc2\xa0", CODEC_EENCODING, NULL), /* nor is U+00A0 */
        JC("\xc3\xa9", CODEC_EENCODING, NULL),
        JC("\xff", CODEC_EENCODING, NULL),
        /* structure */
        JC("[]", CODEC_OK, NULL),
        JC("{}", CODEC_OK, NULL),
        JC("[[],[[]],{},{\"\":{}}]", CODEC_OK, NULL),
        JC("[1,]", CODEC_EENCODING, NULL),
        JC("[,1]", CODEC_EENCODING, NULL),
        JC("[,]", CODEC_EENCODING, NULL),
        JC("{,}", CODEC_EENCODING, NULL),
        JC("{\"a\" 1}", CODEC_EENCODING, NULL),
        JC("{\"a\":}", CODEC_EENCODING, NULL),
        JC("{\"a\"}", CODEC_EENCODING, NULL),
        JC("{1:1}", CODEC_EENCODING, NULL),
        JC("{null:1}", CODEC_EENCODING, NULL),
        JC("[1 2]", CODEC_EENCODING, NULL),
        JC("{\"a\":1 \"b\":2}", CODEC_EENCODING, NULL),
        JC("{\"a\":1,}", CODEC_EENCODING, NULL),
        JC("[}", CODEC_EENCODING, NULL),
        JC("{]", CODEC_EENCODING, NULL),
        JC("[]]", CODEC_EENCODING, NULL),
        JC("{}}", CODEC_EENCODING, NULL),
        JC("]", CODEC_EENCODING, NULL),
        JC("}", CODEC_EENCODING, NULL),
        JC(":", CODEC_EENCODING, NULL),
        JC(",", CODEC_EENCODING, NULL),
        JC("[", CODEC_EENCODING, NULL),
        JC("[1", CODEC_EENCODING, NULL),
        JC("[1,", CODEC_EENCODING, NULL),
        JC("{\"a\"", CODEC_EENCODING, NULL),
        JC("{\"a\":", CODEC_EENCODING, NULL),
        JC("{\"a\":1", CODEC_EENCODING, NULL),
        JC("1 2", CODEC_EENCODING, NULL),
        JC("\"a\"\"b\"", CODEC_EENCODING, NULL),
        JC("{}[]", CODEC_EENCODING, NULL),
        JC("{}\0", CODEC_EENCODING, NULL),
        JC("\0", CODEC_EENCODING, NULL),
        /* jansson read the token after a value before checking it: an integer out
         * of range where it is not expected is a range error, at jansson's place */
        JC("1 99999999999999999999", CODEC_ERANGE, ""),
        JC("{} -99999999999999999999", CODEC_ERANGE, ""),
        JC("[1 99999999999999999999]", CODEC_ERANGE, "[0]"),
        JC("[[1],[2] 99999999999999999999]", CODEC_ERANGE, "[1]"),
        JC("[9223372036854775807,922-92233720368547758093372036854775808]", CODEC_ERANGE, "[1]"),
        JC("{\"a\":1 99999999999999999999}", CODEC_ERANGE, "a"),
        JC("{\"a\" 99999999999999999999}", CODEC_ERANGE, "a"),
        JC("{99999999999999999999:1}", CODEC_ERANGE, ""),
        JC("{\"x\":[{99999999999999999999:1}]}", CODEC_ERANGE, "x[0]."),
        JC("{\"a\":1,99999999999999999999}", CODEC_ERANGE, "a"),
        JC("[1 2 99999999999999999999]", CODEC_EENCODING, NULL),
        JC("[1 1e400]", CODEC_EENCODING, NULL),
        JC("[1 99999999999999999999\xff]", CODEC_EENCODING, NULL),
        JC("[1 -]", CODEC_EENCODING, NULL),
        /* duplicate keys */
        JC("{\"a\":1,\"a\":2}", CODEC_EDUPKEY, "a"),
        JC("{\"a\":1,\"a\"", CODEC_EDUPKEY, "a"),  /* found before the ':' */
        JC("{\"a\":1,\"a\":", CODEC_EDUPKEY, "a"), /* and before the value */
        JC("{\"a\":1,\"a\" x", CODEC_EDUPKEY, "a"),
        JC("[[[{\"a\":{\"b\":[{\"c\":1,\"c\":2}]}}]]]", CODEC_EDUPKEY, "[0][0][0].a.b[0].c"),
        JC("[{},{\"k\":{\"a\":[1,{\"x\":{},\"y\":0,\"x\":[]}]}}]", CODEC_EDUPKEY, "[1].k.a[1].x"),
        JC("{\"a\":{\"b\":1},\"a\":{\"b\":1,\"b\":2}}", CODEC_EDUPKEY, "a"),
        JC("{\"a\":{\"b\":1,\"b\":2},\"a\":1}", CODEC_EDUPKEY, "a.b"),
        JC("{\"a\":{\"a\":{\"a\":1}}}", CODEC_OK, NULL), /* the same key in nested objects */
        JC("[{\"a\":1},{\"a\":1}]", CODEC_OK, NULL),
        JC("{\"a\":1,\"A\":2,\"a \":3,\"\":4}", CODEC_OK, NULL),
        JC("{\"\\u0061\":1,\"a\":2}", CODEC_EDUPKEY, "a"),
        JC("{\"a\":1,\"a\":99999999999999999999}", CODEC_EDUPKEY, "a"),
        JC("{\"a\":99999999999999999999,\"a\":1}", CODEC_ERANGE, "a"),
        JC("{\"a\":1,\"a\":2,\"b\":[1,}", CODEC_EDUPKEY, "a"), /* the first error wins */
        JC("{\"a\":1,\"b\":[1,],\"a\":2}", CODEC_EENCODING, NULL),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "case %zu", i);
        check_json_case(what, (const uint8_t *)cases[i].body, cases[i].len, cases[i].rc,
                        cases[i].location);
    }
}

/* Values the table above only compares with jansson. */
static void test_json_values(void **state)
{
    struct parsed p;
    parse_fmt(&p, FORMAT_JSON, B("[-0, -0.0, 1e-400, -1e-400, 0.1, 9007199254740993.0, 1e23]"));
    assert_int_equal(p.rc, CODEC_OK);
    const struct val *x = p.v->arr.items;
    assert_int_equal(x[0].type, VAL_UINT);
    assert_true(x[0].u == 0);
    assert_int_equal(x[1].type, VAL_FLOAT);
    assert_true(x[1].f == 0.0 && signbit(x[1].f));
    assert_true(x[2].f == 0.0 && !signbit(x[2].f));
    assert_true(x[3].f == 0.0 && signbit(x[3].f));
    assert_true(x[4].f == 0.1);
    assert_true(x[5].f == 9007199254740992.0); /* ties to even */
    assert_true(x[6].f == 1e23);
    parsed_free(&p);

    /* strings are NUL-terminated in the arena, U+0000 included */
    parse_fmt(&p, FORMAT_JSON, B("{\"k\\n\":\"a\\u0000\\u00e9\"}"));
    assert_int_equal(p.rc, CODEC_OK);
    assert_int_equal(p.v->map.items[0].key_len, 2);
    assert_string_equal(p.v->map.items[0].key, "k\n");
    const struct val *s = &p.v->map.items[0].v;
    assert_int_equal(s->s.n, 4);
    assert_memory_equal(s->s.p, "a\0\xc3\xa9\0", 5);
    parsed_free(&p);

    /* the range error names the side it fell off */
    parse_fmt(&p, FORMAT_JSON, B("{\"a\":\n -9223372036854775809}"));
    assert_int_equal(p.rc, CODEC_ERANGE);
    assert_string_equal(p.location, "a");
    assert_non_null(strstr(p.detail, "line 2"));
    assert_non_null(strstr(p.detail, "below -2^63"));
    parsed_free(&p);

    /* jansson accepted a NUL byte right after a number or a literal (a bug of
     * its stream: "[1\0]" read as [1]); here it is an error like any raw NUL */
    parse_fmt(&p, FORMAT_JSON, B("[1\0]"));
    assert_int_equal(p.rc, CODEC_EENCODING);
    parsed_free(&p);
    parse_fmt(&p, FORMAT_JSON, B("true\0"));
    assert_int_equal(p.rc, CODEC_EENCODING);
    parsed_free(&p);
    parse_fmt(&p, FORMAT_JSON, B("{\"a\":1.5\0}"));
    assert_int_equal(p.rc, CODEC_EENCODING);
    parsed_free(&p);

    /* the example of docs/api.md */
    parse_fmt(&p, FORMAT_JSON, B("{\"namespace\":"));
    assert_string_equal(p.detail,
                        "invalid JSON at line 1 column 13: unexpected token near end of file");
    parsed_free(&p);
    parse_fmt(&p, FORMAT_JSON, B("[1,\n 2,\n x]"));
    assert_string_equal(p.detail, "invalid JSON at line 3 column 2: invalid token near 'x'");
    parsed_free(&p);
}

/* Containers bigger than the parser's stack scratch, and objects past the
 * linear duplicate search, several of them open at once. */
static void test_json_big_containers(void **state)
{
    struct buf b = BUF_INIT;
    char tmp[64];
    /* [[0..999], {k0..k299: [..]}, ...] nested three levels */
    buf_put(&b, "[", 1);
    for (int outer = 0; outer < 3; outer++) {
        buf_put(&b, outer ? ",{" : "{", outer ? 2 : 1);
        for (int k = 0; k < 300; k++) {
            int n = snprintf(tmp, sizeof tmp, "%s\"k%d\":[", k ? "," : "", k);
            buf_put(&b, tmp, (size_t)n);
            for (int e = 0; e < (k % 7 == 0 ? 200 : 2); e++) {
                n = snprintf(tmp, sizeof tmp, "%s%d", e ? "," : "", e - 100);
                buf_put(&b, tmp, (size_t)n);
            }
            buf_put(&b, "]", 1);
        }
        buf_put(&b, "}", 1);
    }
    buf_put(&b, "]", 1);
    check_json_case("big", b.data, b.len, CODEC_OK, NULL);

    /* one duplicate, deep inside the third object's k150 */
    b.len = 0;
    buf_put(&b, "{\"outer\":[", 10);
    for (int i = 0; i < 3; i++) {
        buf_put(&b, i ? ",{" : "{", i ? 2 : 1);
        for (int k = 0; k < 40; k++) {
            int n = snprintf(tmp, sizeof tmp, "%s\"k%d\":", k ? "," : "", k);
            buf_put(&b, tmp, (size_t)n);
            if (i == 2 && k == 30) {
                buf_put(&b, "{", 1);
                for (int j = 0; j < 25; j++) {
                    n = snprintf(tmp, sizeof tmp, "\"j%d\":%d,", j, j);
                    buf_put(&b, tmp, (size_t)n);
                }
                buf_put(&b, "\"j17\":0}", 8);
            } else {
                buf_put(&b, "0", 1);
            }
        }
        buf_put(&b, "}", 1);
    }
    buf_put(&b, "]}", 2);
    check_json_case("dup deep", b.data, b.len, CODEC_EDUPKEY, "outer[2].k30.j17");

    /* 17 keys: the first past the linear search, no duplicate */
    b.len = 0;
    buf_put(&b, "{", 1);
    for (int k = 0; k < 17; k++) {
        int n = snprintf(tmp, sizeof tmp, "%s\"%c\":%d", k ? "," : "", 'a' + k, k);
        buf_put(&b, tmp, (size_t)n);
    }
    buf_put(&b, "}", 1);
    check_json_case("17 keys", b.data, b.len, CODEC_OK, NULL);
    b.data[b.len - 1] = ',';
    buf_put(&b, "\"a\":1}", 6);
    check_json_case("17 keys + a", b.data, b.len, CODEC_EDUPKEY, "a");
    buf_free(&b);
}

/* Nesting: within the limit, one past it at the start, at the end, and
 * after an error that alone would be a 422 (the jansson era checked depth
 * over the whole body first). */
static void test_json_depth_limits(void **state)
{
    char doc[1024], deep[128];
    nested(deep, CODEC_MAX_DEPTH + 1, '[', ']');

    strcpy(doc, "");
    for (int i = 0; i < CODEC_MAX_DEPTH; i++)
        strcat(doc, "{\"a\":");
    strcat(doc, "99999999999999999999");
    for (int i = 0; i < CODEC_MAX_DEPTH; i++)
        strcat(doc, "}");
    char where[512] = "a";
    for (int i = 1; i < CODEC_MAX_DEPTH; i++)
        strcat(where, ".a");
    check_json_case("big at depth 32", (const uint8_t *)doc, strlen(doc), CODEC_ERANGE, where);

    strcpy(doc, "");
    for (int i = 0; i < CODEC_MAX_DEPTH - 1; i++)
        strcat(doc, "{\"a\":[");
    strcat(doc, "{\"x\":1,\"x\":2}");
    for (int i = 0; i < CODEC_MAX_DEPTH - 1; i++)
        strcat(doc, "]}");
    /* 63 levels: too deep before the duplicate */
    check_json_case("deep dup", (const uint8_t *)doc, strlen(doc), CODEC_EENCODING, NULL);

    strcpy(doc, "");
    for (int i = 0; i < CODEC_MAX_DEPTH / 2 - 1; i++)
        strcat(doc, "{\"a\":[");
    strcat(doc, "{\"x\":1,\"x\":2}");
    for (int i = 0; i < CODEC_MAX_DEPTH / 2 - 1; i++)
        strcat(doc, "]}");
    strcpy(where, "");
    for (int i = 0; i < CODEC_MAX_DEPTH / 2 - 1; i++)
        strcat(where, i ? ".a[0]" : "a[0]");
    strcat(where, ".x");
    check_json_case("dup at depth 31", (const uint8_t *)doc, strlen(doc), CODEC_EDUPKEY, where);

    snprintf(doc, sizeof doc, "{\"a\":1,\"a\":2,\"b\":%s}", deep);
    check_json_case("dup, then too deep", (const uint8_t *)doc, strlen(doc), CODEC_EENCODING, NULL);
    snprintf(doc, sizeof doc, "[99999999999999999999,%s]", deep);
    check_json_case("big, then too deep", (const uint8_t *)doc, strlen(doc), CODEC_EENCODING, NULL);
    snprintf(doc, sizeof doc, "{\"a\":1,\"a\":2} %s", deep);
    check_json_case("dup, then deep garbage", (const uint8_t *)doc, strlen(doc), CODEC_EENCODING,
                    NULL);
    snprintf(doc, sizeof doc, "{\"a\":1,\"a\":2,\"b\":\"%s\"}", deep);
    check_json_case("dup, brackets in a string", (const uint8_t *)doc, strlen(doc), CODEC_EDUPKEY,
                    "a");
    snprintf(doc, sizeof doc, "[1,]%s", deep);
    check_json_case("syntax, then too deep", (const uint8_t *)doc, strlen(doc), CODEC_EENCODING,
                    NULL);

    struct parsed p;
    parse_fmt(&p, FORMAT_JSON, (const uint8_t *)deep, strlen(deep));
    assert_int_equal(p.rc, CODEC_EENCODING);
    assert_string_equal(p.detail, "invalid JSON: nested deeper than 32 levels (at byte 32)");
    parsed_free(&p);
}

/* ---- MessagePack in ------------------------------------------------------------------- */

static void test_msgpack_scalars(void **state)
{
    struct parsed p;
    struct {
        const char *body;
        size_t len;
        enum val_type type;
        uint64_t u;
        int64_t i;
    } cases[] = {
        {"\xc0", 1, VAL_NULL, 0, 0},
        {"\xc2", 1, VAL_BOOL, 0, 0},
        {"\xc3", 1, VAL_BOOL, 1, 0},
        {"\x00", 1, VAL_UINT, 0, 0},
        {"\x7f", 1, VAL_UINT, 127, 0},
        {"\xff", 1, VAL_INT, 0, -1},
        {"\xe0", 1, VAL_INT, 0, -32},
        {"\xcc\xff", 2, VAL_UINT, 255, 0},
        {"\xcd\x01\x00", 3, VAL_UINT, 256, 0},
        {"\xce\xff\xff\xff\xff", 5, VAL_UINT, 0xFFFFFFFFu, 0},
        {"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, VAL_UINT, UINT64_MAX, 0},
        {"\xcf\x80\x00\x00\x00\x00\x00\x00\x00", 9, VAL_UINT, 1ull << 63, 0},
        {"\xd0\x05", 2, VAL_UINT, 5, 0}, /* a signed form holding a non-negative value */
        {"\xd0\x80", 2, VAL_INT, 0, -128},
        {"\xd1\x80\x00", 3, VAL_INT, 0, INT16_MIN},
        {"\xd2\x80\x00\x00\x00", 5, VAL_INT, 0, INT32_MIN},
        {"\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9, VAL_INT, 0, INT64_MIN},
        {"\xd3\x00\x00\x00\x00\x00\x00\x00\x07", 9, VAL_UINT, 7, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        parse_fmt(&p, FORMAT_MSGPACK, (const uint8_t *)cases[k].body, cases[k].len);
        if (p.rc != CODEC_OK)
            fail_msg("case %zu: %s", k, p.detail);
        assert_int_equal(p.v->type, cases[k].type);
        if (cases[k].type == VAL_BOOL)
            assert_int_equal(p.v->b, cases[k].u);
        if (cases[k].type == VAL_UINT)
            assert_true(p.v->u == cases[k].u);
        if (cases[k].type == VAL_INT)
            assert_true(p.v->i == cases[k].i);
        assert_round_trip(p.v, FORMAT_MSGPACK);
        parsed_free(&p);
    }

    parse_fmt(&p, FORMAT_MSGPACK, B("\xca\x3f\xc0\x00\x00")); /* float32 1.5 */
    assert_int_equal(p.v->type, VAL_FLOAT);
    assert_true(p.v->f == 1.5);
    assert_round_trip(p.v, FORMAT_MSGPACK);
    assert_round_trip(p.v, FORMAT_JSON);
    parsed_free(&p);

    parse_fmt(&p, FORMAT_MSGPACK, B("\xcb\x40\x09\x21\xfb\x54\x44\x2d\x18")); /* pi */
    assert_int_equal(p.v->type, VAL_FLOAT);
    assert_true(p.v->f == 3.141592653589793);
    assert_round_trip(p.v, FORMAT_MSGPACK);
    assert_round_trip(p.v, FORMAT_JSON);
    parsed_free(&p);

    /* str and bin stay apart; a str may hold NUL */
    parse_fmt(&p, FORMAT_MSGPACK,
              B("\x93\xa3"
                "a\0b"
                "\xc4\x03"
                "a\0b"
                "\xd9\x02\xc3\xa9"));
    assert_int_equal(p.rc, CODEC_OK);
    assert_int_equal(p.v->arr.items[0].type, VAL_STR);
    assert_int_equal(p.v->arr.items[0].s.n, 3);
    assert_memory_equal(p.v->arr.items[0].s.p, "a\0b", 3);
    assert_int_equal(p.v->arr.items[1].type, VAL_BIN);
    assert_int_equal(p.v->arr.items[1].s.n, 3);
    assert_memory_equal(p.v->arr.items[1].s.p, "a\0b", 3);
    assert_int_equal(p.v->arr.items[2].type, VAL_STR);
    assert_memory_equal(p.v->arr.items[2].s.p, "\xc3\xa9", 2);
    assert_false(val_equal(&p.v->arr.items[0], &p.v->arr.items[1]));
    assert_round_trip(p.v, FORMAT_MSGPACK);
    parsed_free(&p);

    /* empty str, bin, array, map (bin with an invalid-UTF-8 payload is fine) */
    parse_fmt(&p, FORMAT_MSGPACK, B("\x95\xa0\xc4\x00\x90\x80\xc4\x01\xff"));
    assert_int_equal(p.rc, CODEC_OK);
    assert_int_equal(p.v->arr.items[0].type, VAL_STR);
    assert_int_equal(p.v->arr.items[1].type, VAL_BIN);
    assert_int_equal(p.v->arr.items[2].type, VAL_ARRAY);
    assert_int_equal(p.v->arr.items[3].type, VAL_MAP);
    assert_int_equal(p.v->arr.items[4].s.n, 1);
    assert_round_trip(p.v, FORMAT_MSGPACK);
    parsed_free(&p);
}

static void test_msgpack_documents(void **state)
{
    /* a publish body packed by msgpack-c itself */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "namespace", 9);
    msgpack_pack_nil(&pk);
    msgpack_pack_str_with_body(&pk, "topic", 5);
    msgpack_pack_str_with_body(&pk, "orders", 6);
    msgpack_pack_str_with_body(&pk, "msgs", 4);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "value", 5);
    msgpack_pack_bin_with_body(&pk, "\x00\x01\xff", 3);
    msgpack_pack_str_with_body(&pk, "headers", 7);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "h", 1);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_str_with_body(&pk, "delay_ms", 8);
    msgpack_pack_uint64(&pk, 30ull * 24 * 3600 * 1000);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "value", 5);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, 104);
    msgpack_pack_int(&pk, 105);

    struct parsed p;
    parse_fmt(&p, FORMAT_MSGPACK, (const uint8_t *)sb.data, sb.size);
    assert_int_equal(p.rc, CODEC_OK);
    assert_int_equal(p.v->type, VAL_MAP);
    assert_int_equal(val_get(p.v, "namespace")->type, VAL_NULL);
    assert_memory_equal(val_get(p.v, "topic")->s.p, "orders", 6);
    const struct val *msgs = val_get(p.v, "msgs");
    assert_int_equal(msgs->arr.n, 2);
    const struct val *value = val_get(&msgs->arr.items[0], "value");
    assert_int_equal(value->type, VAL_BIN);
    assert_memory_equal(value->s.p, "\x00\x01\xff", 3);
    assert_true(val_get(&msgs->arr.items[0], "delay_ms")->u == 30ull * 24 * 3600 * 1000);
    assert_int_equal(val_get(&msgs->arr.items[1], "value")->arr.items[1].u, 105);
    assert_round_trip(p.v, FORMAT_MSGPACK);

    /* our writer produces exactly what msgpack-c's packer produced */
    struct out o;
    out_init(&o, FORMAT_MSGPACK);
    out_val(&o, p.v);
    assert_int_equal(out_finish(&o), 0);
    assert_int_equal(o.buf.len, sb.size);
    assert_memory_equal(o.buf.data, sb.data, sb.size);
    out_free(&o);
    parsed_free(&p);
    msgpack_sbuffer_destroy(&sb);
}

static void test_msgpack_depth(void **state)
{
    uint8_t doc[CODEC_MAX_DEPTH + 2];
    struct parsed p;

    memset(doc, 0x91, sizeof doc); /* [[[...]]] with one element each */
    doc[CODEC_MAX_DEPTH - 1] = 0x90;
    parse_fmt(&p, FORMAT_MSGPACK, doc, CODEC_MAX_DEPTH);
    assert_int_equal(p.rc, CODEC_OK);
    assert_round_trip(p.v, FORMAT_MSGPACK);
    parsed_free(&p);

    memset(doc, 0x91, sizeof doc);
    doc[CODEC_MAX_DEPTH] = 0x90; /* one level more */
    parse_fmt(&p, FORMAT_MSGPACK, doc, CODEC_MAX_DEPTH + 1);
    assert_int_equal(p.rc, CODEC_EENCODING);
    assert_non_null(strstr(p.detail, "deeper"));
    parsed_free(&p);

    /* maps count as levels as well: {"a":{"a":...{}}} */
    struct buf b = BUF_INIT;
    for (int i = 0; i < CODEC_MAX_DEPTH; i++)
        buf_put(&b,
                "\x81\xa1"
                "a",
                3);
    buf_put_u8(&b, 0x80);
    parse_fmt(&p, FORMAT_MSGPACK, b.data, b.len);
    assert_int_equal(p.rc, CODEC_EENCODING);
    parsed_free(&p);
    b.len -= 4;
    buf_put_u8(&b, 0x80);
    parse_fmt(&p, FORMAT_MSGPACK, b.data, b.len);
    assert_int_equal(p.rc, CODEC_OK);
    parsed_free(&p);
    buf_free(&b);

    uint8_t *deep = malloc(100000);
    assert_non_null(deep);
    memset(deep, 0x91, 100000);
    parse_fmt(&p, FORMAT_MSGPACK, deep, 100000);
    assert_int_equal(p.rc, CODEC_EENCODING);
    parsed_free(&p);
    free(deep);
}

static void test_msgpack_invalid(void **state)
{
    static const struct bad_case cases[] = {
        BAD("", "empty"),
        BAD("\xc1", "reserved"),
        BAD("\xcd\x01", "truncated"),
        BAD("\xcf\x01\x02\x03", NULL),
        BAD("\xa5"
            "abc",
            NULL),
        BAD("\xd9", "truncated"),
        BAD("\xda\x00\x05"
            "ab",
            NULL),
        BAD("\xc4\x05"
            "ab",
            NULL),
        BAD("\xc6\xff\xff\xff\xff", NULL),
        BAD("\x92\x01", NULL),
        BAD("\x82\xa1"
            "a\x01",
            NULL),
        BAD("\x01\x02", "trailing"),
        BAD("\x80\x80", "trailing"),
        BAD("\xc0\x00", "trailing"),
        BAD("\xdd\xff\xff\xff\xff", "elements"), /* a huge array claimed by 5 bytes */
        BAD("\xdf\xff\xff\xff\xff\x00", "elements"),
        BAD("\xdc\xff\xff\x00\x00\x00", "elements"),
        BAD("\xd4\x01\x00", "extension"),
        BAD("\xd8\x01"
            "0123456789abcdef",
            "extension"),
        BAD("\xc7\x01\x05\x00", "extension"),
        BAD("\xd6\xff\x00\x00\x00\x00", "extension"), /* a timestamp */
        BAD("\x91\xd5\x01\x00\x00", "extension"),
        BAD("\x81\x01\x02", "string"), /* int key */
        BAD("\x81\xc4\x01"
            "a\x01",
            "string"),                 /* bin key */
        BAD("\x81\xc0\x01", "string"), /* nil key */
        BAD("\x81\x90\x01", "string"), /* array key */
        BAD("\x91\x81\xa1"
            "a\x81\x07\x01",
            "string"),                    /* a nested bad key */
        BAD("\xa1\xff", "UTF-8"),         /* invalid UTF-8 str */
        BAD("\xa2\xc0\xaf", "UTF-8"),     /* overlong */
        BAD("\xa3\xed\xa0\x80", "UTF-8"), /* a surrogate */
        BAD("\xa2\xe2\x82", "UTF-8"),     /* truncated sequence */
        BAD("\x81\xa1"
            "a\x91\xa1\x80",
            "UTF-8"),                     /* deep inside */
        BAD("\x81\xa1\xff\x01", "UTF-8"), /* in a key */
        BAD("\x81\xa3"
            "a\0b\x01",
            "NUL"), /* NUL in a key */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct parsed p;
        parse_fmt(&p, FORMAT_MSGPACK, (const uint8_t *)cases[i].body, cases[i].len);
        if (p.rc != CODEC_EENCODING)
            fail_msg("case %zu: rc %d", i, p.rc);
        if (cases[i].detail_has && !strstr(p.detail, cases[i].detail_has))
            fail_msg("case %zu: detail '%s' lacks '%s'", i, p.detail, cases[i].detail_has);
        assert_non_null(strstr(p.detail, "MessagePack"));
        parsed_free(&p);
    }

    /* every proper prefix of a valid document is truncated */
    static const uint8_t doc[] = "\x82\xa5topic\xa1t\xa4msgs\x91\x81\xa5value\xc4\x02hi";
    for (size_t n = 0; n + 1 < sizeof doc; n++) {
        struct parsed p;
        parse_fmt(&p, FORMAT_MSGPACK, doc, n);
        assert_int_equal(p.rc, CODEC_EENCODING);
        parsed_free(&p);
    }
    struct parsed p;
    parse_fmt(&p, FORMAT_MSGPACK, doc, sizeof doc - 1);
    assert_int_equal(p.rc, CODEC_OK);
    parsed_free(&p);
}

#define DUP(lit, loc)             \
    {                             \
        lit, sizeof(lit) - 1, loc \
    }

static void test_msgpack_duplicate_keys(void **state)
{
    static const struct {
        const char *body;
        size_t len;
        const char *location;
    } cases[] = {
        DUP("\x82\xa1"
            "a\x01\xa1"
            "a\x02",
            "a"),
        DUP("\x81\xa4msgs\x91\x82\xa5value\x01\xa5value\x02", "msgs[0].value"),
        DUP("\x92\x80\x81\xa1"
            "b\x82\xa1"
            "c\xc0\xa1"
            "c\xc0",
            "[1].b.c"),
        /* the first in document order: the inner one comes first here */
        DUP("\x82\xa1"
            "b\x82\xa1x\x01\xa1x\x02\xa1"
            "b\x01",
            "b.x"),
        DUP("\x83\xa1"
            "b\x01\xa1"
            "b\x02\xa1"
            "c\x82\xa1x\x01\xa1x\x02",
            "b"),
        DUP("\x82\xa0\x01\xa0\x02", ""),
        /* the same key written with str8 and fixstr is the same key */
        DUP("\x82\xa1"
            "k\x01\xd9\x01k\x02",
            "k"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct parsed p;
        parse_fmt(&p, FORMAT_MSGPACK, (const uint8_t *)cases[i].body, cases[i].len);
        if (p.rc != CODEC_EDUPKEY)
            fail_msg("case %zu: rc %d (%s)", i, p.rc, p.detail);
        if (strcmp(p.location, cases[i].location) != 0)
            fail_msg("case %zu: location '%s', want '%s'", i, p.location, cases[i].location);
        assert_non_null(strstr(p.detail, "duplicate"));
        parsed_free(&p);
    }

    /* many keys: the hash set finds the one duplicate at the end */
    struct out o;
    out_init(&o, FORMAT_MSGPACK);
    out_map(&o, 10001);
    char key[16];
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        out_key(&o, key);
        out_u64(&o, (uint64_t)i);
    }
    out_key(&o, "k9876");
    out_null(&o);
    assert_int_equal(out_finish(&o), 0);
    struct parsed p;
    parse_fmt(&p, FORMAT_MSGPACK, o.buf.data, o.buf.len);
    assert_int_equal(p.rc, CODEC_EDUPKEY);
    assert_string_equal(p.location, "k9876");
    parsed_free(&p);
    out_free(&o);

    /* and without it, all 10000 are there in order */
    out_init(&o, FORMAT_MSGPACK);
    out_map(&o, 10000);
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        out_key(&o, key);
        out_u64(&o, (uint64_t)i);
    }
    assert_int_equal(out_finish(&o), 0);
    parse_fmt(&p, FORMAT_MSGPACK, o.buf.data, o.buf.len);
    assert_int_equal(p.rc, CODEC_OK);
    assert_int_equal(p.v->map.n, 10000);
    assert_int_equal(val_get(p.v, "k9999")->u, 9999);
    assert_string_equal(p.v->map.items[1234].key, "k1234");
    parsed_free(&p);
    out_free(&o);
}

static void test_val_get(void **state)
{
    struct parsed p;
    parse_fmt(&p, FORMAT_JSON, B("{\"a\":1,\"ab\":2,\"\":3,\"A\":4}"));
    assert_int_equal(val_get(p.v, "a")->u, 1);
    assert_int_equal(val_get(p.v, "ab")->u, 2);
    assert_int_equal(val_get(p.v, "")->u, 3);
    assert_int_equal(val_get(p.v, "A")->u, 4);
    assert_null(val_get(p.v, "b"));
    assert_null(val_get(p.v, "abc"));
    assert_null(val_get(p.v, NULL));
    assert_null(val_get(NULL, "a"));
    parsed_free(&p);
    parse_fmt(&p, FORMAT_JSON, B("[\"a\"]"));
    assert_null(val_get(p.v, "a"));
    assert_null(val_get(&p.v->arr.items[0], "a"));
    parsed_free(&p);
}

/* ---- content negotiation ---------------------------------------------------------------- */

static void test_content_type(void **state)
{
    static const struct {
        const char *value;
        int rc;
        enum codec_format fmt;
    } cases[] = {
        {"application/json", 0, FORMAT_JSON},
        {"application/msgpack", 0, FORMAT_MSGPACK},
        {" APPLICATION/MSGPACK ", 0, FORMAT_MSGPACK},
        {"Application/Json", 0, FORMAT_JSON},
        {"application/msgpack; charset=utf-8", 0, FORMAT_MSGPACK},
        {"application/json;charset=UTF-8", 0, FORMAT_JSON},
        {"application/json ; charset=utf-8", 0, FORMAT_JSON},
        {"\tapplication/json\t", 0, FORMAT_JSON},
        {"application/json;", 0, FORMAT_JSON},
        {"", -1, FORMAT_JSON},
        {"   ", -1, FORMAT_JSON},
        {"text/plain", -1, FORMAT_JSON},
        {"application/jsonx", -1, FORMAT_JSON},
        {"application/json5", -1, FORMAT_JSON},
        {"application/x-msgpack", -1, FORMAT_JSON},
        {"application/octet-stream", -1, FORMAT_JSON},
        {"application/json garbage", -1, FORMAT_JSON},
        {"application/json,application/msgpack", -1, FORMAT_JSON},
        {"application/", -1, FORMAT_JSON},
        {"application", -1, FORMAT_JSON},
        {"/json", -1, FORMAT_JSON},
        {"application /json", -1, FORMAT_JSON},
        {"application/ json", -1, FORMAT_JSON},
        {"*/*", -1, FORMAT_JSON},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum codec_format fmt = (enum codec_format)99;
        int rc = codec_content_type(cases[i].value, &fmt);
        if (rc != cases[i].rc)
            fail_msg("'%s': rc %d, want %d", cases[i].value, rc, cases[i].rc);
        if (rc == 0 && fmt != cases[i].fmt)
            fail_msg("'%s': format %d", cases[i].value, fmt);
    }
    enum codec_format fmt;
    assert_int_equal(codec_content_type(NULL, &fmt), -2);
}

static void test_accept(void **state)
{
    static const struct {
        const char *accept; /* "\x01": NULL */
        enum codec_format if_json_request;
        enum codec_format if_msgpack_request;
    } cases[] = {
        {NULL, FORMAT_JSON, FORMAT_MSGPACK},
        {"application/msgpack", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"application/json", FORMAT_JSON, FORMAT_JSON},
        {"application/msgpack;q=0, application/json", FORMAT_JSON, FORMAT_JSON},
        {"application/json, application/msgpack;q=0.1", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"application/json;q=1, application/msgpack;q=0.001", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {" APPLICATION/MSGPACK ", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"application/msgpack; charset=utf-8", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"text/*;q=0.5, */*", FORMAT_JSON, FORMAT_JSON},
        {"*/*", FORMAT_JSON, FORMAT_JSON},
        {"application/*", FORMAT_JSON, FORMAT_JSON},
        {"", FORMAT_JSON, FORMAT_JSON},
        {"application/msgpack;q=1.000", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"application/msgpack;q=1", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"application/msgpack;q=1.", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"application/msgpack;q=1.5", FORMAT_JSON, FORMAT_JSON}, /* invalid: ignored */
        {"application/msgpack;q=1.001", FORMAT_JSON, FORMAT_JSON},
        {"application/msgpack;q=2", FORMAT_JSON, FORMAT_JSON},
        {"application/msgpack;q=-1", FORMAT_JSON, FORMAT_JSON},
        {"application/msgpack;q=0.0001", FORMAT_JSON, FORMAT_JSON}, /* 4 decimals */
        {"application/msgpack;q=", FORMAT_JSON, FORMAT_JSON},
        {"application/msgpack;q=abc", FORMAT_JSON, FORMAT_JSON},
        {"application/msgpack;q=1.5, application/msgpack", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"application/msgpack;q=0", FORMAT_JSON, FORMAT_JSON},
        {"application/msgpack; q=0.000", FORMAT_JSON, FORMAT_JSON},
        {"application/msgpack ; Q=0", FORMAT_JSON, FORMAT_JSON},
        {"application/msgpack;q=0.001", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"application/msgpack;level=1;q=0.5", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"application/msgpack;q=0.5;level=1", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {",,application/msgpack,,", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"application/msgpackx", FORMAT_JSON, FORMAT_JSON},
        {"application/x-msgpack", FORMAT_JSON, FORMAT_JSON},
        {"application/json, application/msgpack", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"application/json;foo=\"a,application/msgpack\"", FORMAT_JSON, FORMAT_JSON},
        {"application/json;foo=\"a,b\", application/msgpack", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"application/msgpack;foo=\"unterminated", FORMAT_JSON, FORMAT_JSON},
        {"application/msgpack garbage", FORMAT_JSON, FORMAT_JSON},
        {"garbage, application/msgpack", FORMAT_MSGPACK, FORMAT_MSGPACK},
        {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", FORMAT_JSON,
         FORMAT_JSON},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum codec_format a = codec_negotiate(cases[i].accept, FORMAT_JSON);
        enum codec_format b = codec_negotiate(cases[i].accept, FORMAT_MSGPACK);
        if (a != cases[i].if_json_request || b != cases[i].if_msgpack_request)
            fail_msg("'%s': %d/%d, want %d/%d", cases[i].accept ? cases[i].accept : "(none)", a, b,
                     cases[i].if_json_request, cases[i].if_msgpack_request);
    }
}

/* ---- the writer ------------------------------------------------------------------------ */

static void assert_out(struct out *o, const void *want, size_t n)
{
    assert_int_equal(out_finish(o), 0);
    if (o->buf.len != n || memcmp(o->buf.data, want, n) != 0)
        fail_msg("got '%.*s' (%zu bytes), want '%.*s' (%zu bytes)", (int)o->buf.len,
                 (const char *)o->buf.data, o->buf.len, (int)n, (const char *)want, n);
    out_free(o);
}

static void write_sample(struct out *o)
{
    out_map(o, 4);
    out_key(o, "a");
    out_u64(o, 1);
    out_key(o, "b");
    out_array(o, 3);
    out_cstr(o, "x");
    out_null(o);
    out_i64(o, -2);
    out_key(o, "c");
    out_bool(o, true);
    out_key(o, "d");
    out_map(o, 0);
}

static void test_writer_exact(void **state)
{
    struct out o;
    out_init(&o, FORMAT_JSON);
    write_sample(&o);
    static const char json[] = "{\"a\":1,\"b\":[\"x\",null,-2],\"c\":true,\"d\":{}}";
    assert_out(&o, json, sizeof json - 1);

    out_init(&o, FORMAT_MSGPACK);
    write_sample(&o);
    static const uint8_t mp[] = {0x84, 0xa1, 'a',  0x01, 0xa1, 'b',  0x93, 0xa1, 'x',
                                 0xc0, 0xfe, 0xa1, 'c',  0xc3, 0xa1, 'd',  0x80};
    assert_out(&o, mp, sizeof mp);

    /* scalars at the top level */
    out_init(&o, FORMAT_JSON);
    out_bool(&o, false);
    assert_out(&o, "false", 5);
    out_init(&o, FORMAT_JSON);
    out_i64(&o, INT64_MIN);
    assert_out(&o, "-9223372036854775808", 20);
    out_init(&o, FORMAT_JSON);
    out_u64(&o, UINT64_MAX);
    assert_out(&o, "18446744073709551615", 20);
    out_init(&o, FORMAT_JSON);
    out_array(&o, 4);
    out_u64(&o, 0);
    out_u64(&o, 10);
    out_i64(&o, -10);
    out_u64(&o, 1000000007);
    assert_out(&o, "[0,10,-10,1000000007]", 21);
    out_init(&o, FORMAT_JSON);
    out_array(&o, 0);
    assert_out(&o, "[]", 2);
    out_init(&o, FORMAT_JSON);
    out_array(&o, 2);
    out_array(&o, 0);
    out_map(&o, 1);
    out_key(&o, "k");
    out_array(&o, 1);
    out_str(&o, "", 0);
    assert_out(&o, "[[],{\"k\":[\"\"]}]", 15);
}

static void test_writer_reals(void **state)
{
    static const struct {
        double v;
        const char *json;
    } cases[] = {
        {1.0, "1.0"},
        {-0.0, "-0.0"},
        {0.5, "0.5"},
        {0.1, "0.10000000000000001"},
        {1e300, "1.0000000000000001e+300"},
        {-2.5e-3, "-0.0025000000000000001"},
        {100000.0, "100000.0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct out o;
        out_init(&o, FORMAT_JSON);
        out_f64(&o, cases[i].v);
        assert_out(&o, cases[i].json, strlen(cases[i].json));
        /* read back as the same real */
        struct parsed p;
        parse_fmt(&p, FORMAT_JSON, (const uint8_t *)cases[i].json, strlen(cases[i].json));
        assert_int_equal(p.v->type, VAL_FLOAT);
        assert_true(p.v->f == cases[i].v);
        assert_round_trip(p.v, FORMAT_JSON);
        assert_round_trip(p.v, FORMAT_MSGPACK);
        parsed_free(&p);
    }
    struct out o;
    out_init(&o, FORMAT_JSON);
    out_array(&o, 3);
    out_f64(&o, NAN);
    out_f64(&o, INFINITY);
    out_f64(&o, -INFINITY);
    assert_out(&o, "[null,null,null]", 16);
    out_init(&o, FORMAT_MSGPACK);
    out_f64(&o, 1.5);
    assert_out(&o, "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00", 9);
}

/* The writer's integer forms are exactly msgpack-c's (the smallest ones). */
static void test_writer_msgpack_ints(void **state)
{
    static const int64_t signed_vals[] = {
        0,
        1,
        31,
        32,
        127,
        128,
        255,
        256,
        65535,
        65536,
        0xFFFFFFFFll,
        0x100000000ll,
        INT64_MAX,
        -1,
        -31,
        -32,
        -33,
        -127,
        -128,
        -129,
        -255,
        -256,
        -32767,
        -32768,
        -32769,
        -65536,
        INT32_MIN,
        (int64_t)INT32_MIN - 1,
        INT64_MIN + 1,
        INT64_MIN,
    };
    static const uint64_t unsigned_vals[] = {
        0,
        1,
        127,
        128,
        255,
        256,
        65535,
        65536,
        0xFFFFFFFFull,
        0x100000000ull,
        UINT64_MAX,
        (uint64_t)INT64_MAX + 1,
    };
    for (size_t i = 0; i < sizeof signed_vals / sizeof signed_vals[0]; i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_int64(&pk, signed_vals[i]);
        struct out o;
        out_init(&o, FORMAT_MSGPACK);
        out_i64(&o, signed_vals[i]);
        assert_out(&o, sb.data, sb.size);
        struct parsed p;
        parse_fmt(&p, FORMAT_MSGPACK, (const uint8_t *)sb.data, sb.size);
        if (signed_vals[i] < 0) {
            assert_int_equal(p.v->type, VAL_INT);
            assert_true(p.v->i == signed_vals[i]);
        } else {
            assert_int_equal(p.v->type, VAL_UINT);
            assert_true(p.v->u == (uint64_t)signed_vals[i]);
        }
        parsed_free(&p);
        msgpack_sbuffer_destroy(&sb);
    }
    for (size_t i = 0; i < sizeof unsigned_vals / sizeof unsigned_vals[0]; i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_uint64(&pk, unsigned_vals[i]);
        struct out o;
        out_init(&o, FORMAT_MSGPACK);
        out_u64(&o, unsigned_vals[i]);
        assert_out(&o, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    }
}

/* str, bin, array and map headers at every length boundary, against msgpack-c. */
static void test_writer_msgpack_lengths(void **state)
{
    static const size_t lens[] = {0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536, 70000};
    uint8_t *bytes = malloc(70000);
    assert_non_null(bytes);
    memset(bytes, 'z', 70000);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n = lens[i];
        for (int kind = 0; kind < 5; kind++) {
            msgpack_sbuffer sb;
            msgpack_packer pk;
            msgpack_sbuffer_init(&sb);
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            struct out o;
            out_init(&o, FORMAT_MSGPACK);
            switch (kind) {
            case 0:
                msgpack_pack_str_with_body(&pk, bytes, n);
                out_str(&o, (const char *)bytes, n);
                break;
            case 1:
                msgpack_pack_bin_with_body(&pk, bytes, n);
                out_bytes(&o, bytes, n, VALUE_DEFAULT);
                break;
            case 2:
                msgpack_pack_array(&pk, n);
                out_array(&o, (uint32_t)n);
                for (size_t k = 0; k < n; k++) {
                    msgpack_pack_nil(&pk);
                    out_null(&o);
                }
                break;
            case 3:
                msgpack_pack_map(&pk, n);
                out_map(&o, (uint32_t)n);
                for (size_t k = 0; k < n; k++) {
                    char key[24];
                    snprintf(key, sizeof key, "%zu", k);
                    msgpack_pack_str_with_body(&pk, key, strlen(key));
                    msgpack_pack_true(&pk);
                    out_key(&o, key);
                    out_bool(&o, true);
                }
                break;
            case 4:
                msgpack_pack_str_with_body(&pk, bytes, n);
                out_bytes(&o, bytes, n, VALUE_UTF8);
                break;
            }
            assert_out(&o, sb.data, sb.size);
            msgpack_sbuffer_destroy(&sb);
        }
    }
    free(bytes);
}

static void test_writer_json_escapes(void **state)
{
    static const char *const want[32] = {
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
        "\\b",     "\\t",     "\\n",     "\\u000b", "\\f",     "\\r",     "\\u000e", "\\u000f",
        "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
        "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    };
    for (int c = 0; c < 32; c++) {
        char in[3] = {'a', (char)c, 'z'};
        char expect[16];
        int n = snprintf(expect, sizeof expect, "\"a%sz\"", want[c]);
        struct out o;
        out_init(&o, FORMAT_JSON);
        out_str(&o, in, 3);
        assert_int_equal(out_finish(&o), 0);
        assert_int_equal(o.buf.len, (size_t)n);
        assert_memory_equal(o.buf.data, expect, (size_t)n);
        out_free(&o);
    }
    /* quotes, backslashes; '/', DEL and non-ASCII pass through */
    struct out o;
    out_init(&o, FORMAT_JSON);
    out_cstr(&o, "\"\\/\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    static const char w1[] = "\"\\\"\\\\/\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"";
    assert_out(&o, w1, sizeof w1 - 1);

    /* keys are escaped too */
    out_init(&o, FORMAT_JSON);
    out_map(&o, 1);
    out_key(&o, "a\"b\n");
    out_null(&o);
    static const char w2[] = "{\"a\\\"b\\n\":null}";
    assert_out(&o, w2, sizeof w2 - 1);

    /* every byte 1..255 as a string: valid JSON, and the ASCII part reads back */
    char all[128];
    for (int i = 0; i < 127; i++)
        all[i] = (char)(i + 1);
    out_init(&o, FORMAT_JSON);
    out_str(&o, all, 127);
    assert_int_equal(out_finish(&o), 0);
    struct parsed p;
    parse_fmt(&p, FORMAT_JSON, o.buf.data, o.buf.len);
    assert_int_equal(p.rc, CODEC_OK);
    assert_int_equal(p.v->s.n, 127);
    assert_memory_equal(p.v->s.p, all, 127);
    parsed_free(&p);
    out_free(&o);
}

static void test_writer_invalid_utf8(void **state)
{
    static const struct {
        const char *in;
        size_t n;
        const char *out; /* the string's bytes after replacement */
    } cases[] = {
        {"a\xff"
         "b",
         3,
         "a\xef\xbf\xbd"
         "b"},
        {"\xe2\x82", 2, "\xef\xbf\xbd\xef\xbf\xbd"},                 /* truncated */
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* a surrogate */
        {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong */
        {"\xf4\x90\x80\x80", 4,
         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
        {"\xe2\x82\xac", 3, "\xe2\x82\xac"},                  /* valid */
        {"\x80x", 2, "\xef\xbf\xbdx"},                        /* lone continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int f = 0; f < 2; f++) {
            enum codec_format fmt = f ? FORMAT_MSGPACK : FORMAT_JSON;
            struct out o;
            out_init(&o, fmt);
            out_array(&o, 2);
            out_str(&o, cases[i].in, cases[i].n);
            out_bytes(&o, (const uint8_t *)cases[i].in, cases[i].n, VALUE_UTF8);
            assert_int_equal(out_finish(&o), 0);
            struct parsed p;
            parse_fmt(&p, fmt, o.buf.data, o.buf.len);
            if (p.rc != CODEC_OK)
                fail_msg("case %zu fmt %d: %s", i, f, p.detail);
            for (int k = 0; k < 2; k++) {
                const struct val *s = &p.v->arr.items[k];
                assert_int_equal(s->type, VAL_STR);
                assert_int_equal(s->s.n, strlen(cases[i].out));
                assert_memory_equal(s->s.p, cases[i].out, s->s.n);
            }
            parsed_free(&p);
            out_free(&o);
        }
    }
}

static void test_writer_bytes(void **state)
{
    static const uint8_t v[] = {0, 1, 9, 10, 99, 100, 255};
    struct out o;
    out_init(&o, FORMAT_JSON);
    out_bytes(&o, v, sizeof v, VALUE_DEFAULT);
    assert_out(&o, "[0,1,9,10,99,100,255]", 21);
    out_init(&o, FORMAT_JSON);
    out_bytes(&o, v, 0, VALUE_DEFAULT);
    assert_out(&o, "[]", 2);
    out_init(&o, FORMAT_JSON);
    out_bytes(&o, (const uint8_t *)"hi\n", 3, VALUE_UTF8);
    assert_out(&o, "\"hi\\n\"", 6);
    out_init(&o, FORMAT_MSGPACK);
    out_bytes(&o, v, sizeof v, VALUE_DEFAULT);
    assert_out(&o, "\xc4\x07\x00\x01\x09\x0a\x63\x64\xff", 9);
    out_init(&o, FORMAT_MSGPACK);
    out_bytes(&o, (const uint8_t *)"hi", 2, VALUE_UTF8);
    assert_out(&o, "\xa2hi", 3);

    /* RFC 4648 test vectors */
    static const char *const b64[][2] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof b64 / sizeof b64[0]; i++) {
        char want[32];
        int n = snprintf(want, sizeof want, "\"%s\"", b64[i][1]);
        out_init(&o, FORMAT_JSON);
        out_bytes(&o, (const uint8_t *)b64[i][0], strlen(b64[i][0]), VALUE_BASE64);
        assert_out(&o, want, (size_t)n);
        out_init(&o, FORMAT_MSGPACK);
        out_bytes(&o, (const uint8_t *)b64[i][0], strlen(b64[i][0]), VALUE_BASE64);
        want[0] = (char)(0xa0 | strlen(b64[i][1]));
        assert_out(&o, want, strlen(b64[i][1]) + 1);
    }
    /* every byte value, and the '+' and '/' of the standard alphabet */
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    out_init(&o, FORMAT_JSON);
    out_bytes(&o, (const uint8_t *)"\xfb\xff\xbf", 3, VALUE_BASE64);
    assert_out(&o, "\"+/+/\"", 6);
    out_init(&o, FORMAT_JSON);
    out_bytes(&o, all, 256, VALUE_DEFAULT);
    assert_int_equal(out_finish(&o), 0);
    struct parsed p;
    parse_fmt(&p, FORMAT_JSON, o.buf.data, o.buf.len);
    assert_int_equal(p.v->arr.n, 256);
    for (int i = 0; i < 256; i++)
        assert_int_equal(p.v->arr.items[i].u, (uint64_t)i);
    parsed_free(&p);
    out_free(&o);
    /* base64 of a larger value: the length and a decode of the first block */
    out_init(&o, FORMAT_MSGPACK);
    out_bytes(&o, all, 256, VALUE_BASE64);
    assert_int_equal(out_finish(&o), 0);
    assert_int_equal(o.buf.len, 3 + 344);
    assert_memory_equal(o.buf.data, "\xda\x01\x58", 3); /* str16 of 344 bytes */
    assert_memory_equal(o.buf.data + 3, "AAECAwQF", 8);
    out_free(&o);
}

/* A receive response written in both formats and read back field by field. */
static void write_receive(struct out *o, enum value_encoding enc)
{
    out_map(o, 1);
    out_key(o, "msgs");
    out_array(o, 2);
    for (int i = 0; i < 2; i++) {
        out_map(o, 7);
        out_key(o, "msg_id");
        out_cstr(o, i ? "3:18446744073709551615" : "0:7");
        out_key(o, "value");
        out_bytes(o, (const uint8_t *)"v\x01\xff", 3, enc);
        out_key(o, "headers");
        out_map(o, i);
        if (i) {
            out_key(o, "content-type");
            out_cstr(o, "text/plain");
        }
        out_key(o, "timestamp");
        out_u64(o, 253402207200998ull);
        out_key(o, "scheduled_at");
        out_null(o);
        out_key(o, "key");
        if (i)
            out_cstr(o, "k\xc3\xa9");
        else
            out_null(o);
        out_key(o, "attempt");
        out_i64(o, i + 1);
    }
}

static void test_writer_round_trip(void **state)
{
    for (int f = 0; f < 2; f++) {
        enum codec_format fmt = f ? FORMAT_MSGPACK : FORMAT_JSON;
        for (int e = 0; e < 3; e++) {
            enum value_encoding enc = (enum value_encoding)e;
            struct out o;
            out_init(&o, fmt);
            write_receive(&o, enc);
            assert_int_equal(out_finish(&o), 0);
            struct parsed p;
            parse_fmt(&p, fmt, o.buf.data, o.buf.len);
            if (p.rc != CODEC_OK)
                fail_msg("fmt %d enc %d: %s", f, e, p.detail);
            const struct val *msgs = val_get(p.v, "msgs");
            assert_int_equal(msgs->arr.n, 2);
            const struct val *m1 = &msgs->arr.items[1];
            assert_memory_equal(val_get(m1, "msg_id")->s.p, "3:18446744073709551615", 22);
            const struct val *value = val_get(m1, "value");
            if (enc == VALUE_DEFAULT && fmt == FORMAT_JSON) {
                assert_int_equal(value->type, VAL_ARRAY);
                assert_int_equal(value->arr.n, 3);
                assert_int_equal(value->arr.items[2].u, 255);
            } else if (enc == VALUE_DEFAULT) {
                assert_int_equal(value->type, VAL_BIN);
                assert_memory_equal(value->s.p, "v\x01\xff", 3);
            } else if (enc == VALUE_UTF8) {
                assert_int_equal(value->type, VAL_STR);
                assert_int_equal(value->s.n, 5);
                assert_memory_equal(value->s.p, "v\x01\xef\xbf\xbd", 5);
            } else {
                assert_int_equal(value->type, VAL_STR);
                assert_int_equal(value->s.n, 4);
                assert_memory_equal(value->s.p, "dgH/", 4);
            }
            assert_int_equal(val_get(val_get(m1, "headers"), "content-type")->s.n, 10);
            assert_int_equal(val_get(&msgs->arr.items[0], "headers")->map.n, 0);
            assert_true(val_get(m1, "timestamp")->u == 253402207200998ull);
            assert_int_equal(val_get(m1, "scheduled_at")->type, VAL_NULL);
            assert_int_equal(val_get(&msgs->arr.items[0], "key")->type, VAL_NULL);
            assert_memory_equal(val_get(m1, "key")->s.p, "k\xc3\xa9", 3);
            assert_int_equal(val_get(m1, "attempt")->type, VAL_UINT);
            assert_int_equal(val_get(m1, "attempt")->u, 2);
            assert_round_trip(p.v, fmt);
            parsed_free(&p);
            out_free(&o);
        }
    }
}

/* Parsed documents written back in both formats give the same tree. */
static void test_val_round_trips(void **state)
{
    static const char *const docs[] = {
        "{\"namespace\":\"default\",\"topic\":\"t\",\"msgs\":[{\"value\":[1,2,3],"
        "\"headers\":{\"a\":\"\\u0001\\n\"},\"key\":\"\\u00e9\"}],\"idempotency_key\":null}",
        "{\"topic\":\"t~0\",\"consumer_group\":\"g\",\"batch_size\":1000,"
        "\"lease_duration_ms\":43200000,\"batch_wait_ms\":0}",
        "{\"msg_ids\":[\"0:1\",\"0:2\",\"63:18446744073709551\"]}",
        "[-9223372036854775808,9223372036854775807,0,-1,1.25,-0.0,1e-300,true,false,null]",
        "{\"a\":{\"b\":{\"c\":[[[{}]]]}},\"\":\"\",\"\\\"\":\"\\\\\"}",
        "\"just a string\"",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        struct parsed p;
        parse_fmt(&p, FORMAT_JSON, (const uint8_t *)docs[i], strlen(docs[i]));
        if (p.rc != CODEC_OK)
            fail_msg("doc %zu: %s", i, p.detail);
        assert_round_trip(p.v, FORMAT_JSON);
        assert_round_trip(p.v, FORMAT_MSGPACK);
        parsed_free(&p);
    }
}

static void test_writer_misuse(void **state)
{
    struct out o;

    out_init(&o, FORMAT_JSON); /* nothing written */
    assert_int_equal(out_finish(&o), CY_EINVAL);
    out_free(&o);

    for (int f = 0; f < 2; f++) {
        enum codec_format fmt = f ? FORMAT_MSGPACK : FORMAT_JSON;

        out_init(&o, fmt); /* too few elements */
        out_array(&o, 2);
        out_null(&o);
        assert_int_equal(out_finish(&o), CY_EINVAL);
        out_free(&o);

        out_init(&o, fmt); /* too many: the extra is a second top-level value */
        out_array(&o, 1);
        out_null(&o);
        out_null(&o);
        assert_int_equal(out_finish(&o), CY_EINVAL);
        out_free(&o);

        out_init(&o, fmt); /* too many inside a map: a value where a key belongs */
        out_map(&o, 1);
        out_key(&o, "a");
        out_array(&o, 1);
        out_null(&o);
        out_null(&o);
        assert_int_equal(out_finish(&o), CY_EINVAL);
        out_free(&o);

        out_init(&o, fmt); /* a key without its value */
        out_map(&o, 1);
        out_key(&o, "a");
        assert_int_equal(out_finish(&o), CY_EINVAL);
        out_free(&o);

        out_init(&o, fmt); /* two keys in a row */
        out_map(&o, 2);
        out_key(&o, "a");
        out_key(&o, "b");
        assert_int_equal(out_finish(&o), CY_EINVAL);
        out_free(&o);

        out_init(&o, fmt); /* a value without a key */
        out_map(&o, 1);
        out_u64(&o, 1);
        assert_int_equal(out_finish(&o), CY_EINVAL);
        out_free(&o);

        out_init(&o, fmt); /* a key in an array */
        out_array(&o, 1);
        out_key(&o, "a");
        assert_int_equal(out_finish(&o), CY_EINVAL);
        out_free(&o);

        out_init(&o, fmt); /* a key at the top */
        out_key(&o, "a");
        assert_int_equal(out_finish(&o), CY_EINVAL);
        out_free(&o);

        out_init(&o, fmt); /* two top-level values */
        out_map(&o, 0);
        out_map(&o, 0);
        assert_int_equal(out_finish(&o), CY_EINVAL);
        out_free(&o);

        out_init(&o, fmt); /* the deepest allowed, then one more */
        for (int i = 0; i < CODEC_MAX_DEPTH; i++)
            out_array(&o, 1);
        out_null(&o);
        assert_int_equal(out_finish(&o), 0);
        out_free(&o);
        out_init(&o, fmt);
        for (int i = 0; i < CODEC_MAX_DEPTH + 1; i++)
            out_array(&o, 1);
        out_null(&o);
        assert_int_equal(out_finish(&o), CY_EINVAL);
        /* sticky: later calls change nothing, finish says the same again */
        size_t len = o.buf.len;
        out_u64(&o, 1);
        out_map(&o, 0);
        out_bytes(&o, (const uint8_t *)"x", 1, VALUE_BASE64);
        assert_int_equal(o.buf.len, len);
        assert_int_equal(out_finish(&o), CY_EINVAL);
        out_free(&o);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena),
        cmocka_unit_test(test_json_scalars),
        cmocka_unit_test(test_json_documents),
        cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_json_invalid),
        cmocka_unit_test(test_json_big_ints_and_nul),
        cmocka_unit_test(test_json_duplicate_keys),
        cmocka_unit_test(test_json_table),
        cmocka_unit_test(test_json_values),
        cmocka_unit_test(test_json_big_containers),
        cmocka_unit_test(test_json_depth_limits),
        cmocka_unit_test(test_msgpack_scalars),
        cmocka_unit_test(test_msgpack_documents),
        cmocka_unit_test(test_msgpack_depth),
        cmocka_unit_test(test_msgpack_invalid),
        cmocka_unit_test(test_msgpack_duplicate_keys),
        cmocka_unit_test(test_val_get),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_accept),
        cmocka_unit_test(test_writer_exact),
        cmocka_unit_test(test_writer_reals),
        cmocka_unit_test(test_writer_msgpack_ints),
        cmocka_unit_test(test_writer_msgpack_lengths),
        cmocka_unit_test(test_writer_json_escapes),
        cmocka_unit_test(test_writer_invalid_utf8),
        cmocka_unit_test(test_writer_bytes),
        cmocka_unit_test(test_writer_round_trip),
        cmocka_unit_test(test_val_round_trips),
        cmocka_unit_test(test_writer_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
