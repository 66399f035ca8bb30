/*
 * fuzz_json.c — libFuzzer target for codec_parse_json (src/server/codec_json.c),
 * the response writer, and content negotiation, on the same bytes.
 *
 * Invariants checked (abort() when broken):
 *   1. Whatever the bytes: no crash, no read outside the input; the result is
 *      CODEC_OK, CODEC_EENCODING, CODEC_EDUPKEY or CODEC_ERANGE; on failure
 *      the detail is a non-empty sentence and the location is "" unless the
 *      error is a duplicate key or an out-of-range integer (whose location is
 *      valid UTF-8).
 *   2. On success, the tree written back with out_val (JSON and MessagePack)
 *      finishes cleanly, parses again to an equal tree, and writing that
 *      tree again gives the same bytes.
 *   3. The input written as a JSON string (out_str) is valid JSON: it reads
 *      back as the input when the input is valid UTF-8 without NUL (jansson
 *      is the independent judge of validity). Every out_bytes encoding of
 *      the input reads back in both formats.
 *   4. codec_parse_json agrees with the jansson-based oracle
 *      (tests/support/json_oracle.c, the parser it replaced): the same
 *      result (OK, EENCODING, EDUPKEY or ERANGE), an equal tree on success,
 *      the same location for a duplicate key or an out-of-range integer —
 *      except where jansson swallows a NUL byte (jansson_nul_quirk).
 *   5. The input as a header value (up to its first NUL): codec_content_type
 *      answers 0 or -1, and codec_negotiate picks the same format for a JSON
 *      and a MessagePack request.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_oracle.h"
#include "server/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_round_trip(const struct val *v, enum codec_format fmt)
{
    struct out o, o2;
    out_init(&o, fmt);
    out_val(&o, v);
    if (out_finish(&o) != 0)
        abort();
    struct arena a;
    struct val *back;
    char detail[256], loc[128];
    arena_init(&a);
    enum codec_err rc = fmt == FORMAT_JSON
                            ? codec_parse_json(o.buf.data, o.buf.len, &a, &back, detail,
                                               sizeof detail, loc, sizeof loc)
                            : codec_parse_msgpack(o.buf.data, o.buf.len, &a, &back, detail,
                                                  sizeof detail, loc, sizeof loc);
    if (rc != CODEC_OK || !val_equal(v, back))
        abort();
    out_init(&o2, fmt);
    out_val(&o2, back);
    if (out_finish(&o2) != 0 || o2.buf.len != o.buf.len ||
        memcmp(o2.buf.data, o.buf.data, o.buf.len) != 0)
        abort();
    out_free(&o2);
    arena_free(&a);
    out_free(&o);
}

/* Writes the input as one string / bytes value and reads it back. */
static void check_writer_strings(const uint8_t *data, size_t size)
{
    json_t *oracle = json_stringn((const char *)data, size); /* NULL: invalid UTF-8 */
    bool clean = oracle != NULL;
    json_decref(oracle);

    for (int f = 0; f < 2; f++) {
        enum codec_format fmt = f ? FORMAT_MSGPACK : FORMAT_JSON;
        struct out o;
        out_init(&o, fmt);
        out_array(&o, 4);
        out_str(&o, (const char *)data, size);
        out_bytes(&o, data, size, VALUE_DEFAULT);
        out_bytes(&o, data, size, VALUE_UTF8);
        out_bytes(&o, data, size, VALUE_BASE64);
        if (out_finish(&o) != 0)
            abort();
        struct arena a;
        struct val *v;
        arena_init(&a);
        enum codec_err rc =
            fmt == FORMAT_JSON
                ? codec_parse_json(o.buf.data, o.buf.len, &a, &v, NULL, 0, NULL, 0)
                : codec_parse_msgpack(o.buf.data, o.buf.len, &a, &v, NULL, 0, NULL, 0);
        {
            if (rc != CODEC_OK || v->type != VAL_ARRAY || v->arr.n != 4)
                abort();
            const struct val *s = &v->arr.items[0], *u = &v->arr.items[2];
            if (s->type != VAL_STR || !val_equal(s, u))
                abort();
            if (clean && (s->s.n != size || memcmp(s->s.p, data, size) != 0))
                abort();
            const struct val *b = &v->arr.items[1];
            if (fmt == FORMAT_MSGPACK) {
                if (b->type != VAL_BIN || b->s.n != size || memcmp(b->s.p, data, size) != 0)
                    abort();
            } else {
                if (b->type != VAL_ARRAY || b->arr.n != size)
                    abort();
                for (size_t i = 0; i < size; i++)
                    if (b->arr.items[i].type != VAL_UINT || b->arr.items[i].u != data[i])
                        abort();
            }
            if (v->arr.items[3].type != VAL_STR || v->arr.items[3].s.n != (size + 2) / 3 * 4)
                abort();
        }
        arena_free(&a);
        out_free(&o);
    }
}

/* jansson swallows a NUL byte right after a number or true/false/null
 * (its stream_unget leaves the NUL where its buffer expects a terminator),
 * so it accepts "[1\0]"; codec_json.c rejects every raw NUL. True when a NUL
 * outside strings follows a letter or a digit: there the two may differ. */
static bool jansson_nul_quirk(const uint8_t *p, size_t n)
{
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == 0 && i > 0 &&
                   ((p[i - 1] >= '0' && p[i - 1] <= '9') ||
                    ((p[i - 1] | 0x20) >= 'a' && (p[i - 1] | 0x20) <= 'z'))) {
            return true;
        }
    }
    return false;
}

/* Invariant 4. */
/* True when the input holds a run of digits, not after '-', whose value is in
 * (2^63 - 1, 2^64 - 1]: an integer the parser takes (u64) and jansson did not. */
static bool has_u64_only_literal(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < size;) {
        if (data[i] < '0' || data[i] > '9') {
            i++;
            continue;
        }
        bool neg = i > 0 && data[i - 1] == '-';
        uint64_t u = 0;
        bool over = false;
        for (; i < size && data[i] >= '0' && data[i] <= '9'; i++)
            over = over || __builtin_mul_overflow(u, 10, &u) ||
                   __builtin_add_overflow(u, (uint64_t)(data[i] - '0'), &u);
        if (!neg && !over && u > (uint64_t)INT64_MAX)
            return true;
    }
    return false;
}

static void check_oracle(const uint8_t *data, size_t size, enum codec_err rc, const struct val *v,
                         const char *loc)
{
    struct arena a;
    struct val *ov = NULL;
    char detail[256], oloc[128];
    arena_init(&a);
    enum codec_err orc =
        json_oracle_parse(data, size, &a, &ov, detail, sizeof detail, oloc, sizeof oloc);
    if (jansson_nul_quirk(data, size)) {
        if (rc == CODEC_OK) /* any raw NUL is an error */
            abort();
        arena_free(&a);
        return;
    }
    if (orc == CODEC_ERANGE && has_u64_only_literal(data, size)) {
        /* jansson stopped at an integer this parser takes: nothing after it
         * can be compared (what the parser finds is checked elsewhere) */
        arena_free(&a);
        return;
    }
    if (orc != rc)
        abort();
    if (rc == CODEC_OK && !val_equal(v, ov))
        abort();
    if ((rc == CODEC_EDUPKEY || rc == CODEC_ERANGE) && strcmp(loc, oloc) != 0)
        abort();
    arena_free(&a);
}

static void check_headers(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    enum codec_format fmt;
    int rc = codec_content_type(s, &fmt);
    if (rc != 0 && rc != -1)
        abort();
    if (rc == 0 && fmt != FORMAT_JSON && fmt != FORMAT_MSGPACK)
        abort();
    if (codec_negotiate(s, FORMAT_JSON) != codec_negotiate(s, FORMAT_MSGPACK))
        abort();
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct arena a;
    struct val *v = NULL;
    char detail[256], loc[128];
    arena_init(&a);
    enum codec_err rc =
        codec_parse_json(data, size, &a, &v, detail, sizeof detail, loc, sizeof loc);
    if (rc == CODEC_OK) {
        if (!v || detail[0] || loc[0])
            abort();
        check_round_trip(v, FORMAT_JSON);
        check_round_trip(v, FORMAT_MSGPACK);
    } else if (rc == CODEC_EENCODING || rc == CODEC_EDUPKEY || rc == CODEC_ERANGE) {
        if (v || !detail[0] || !memchr(detail, 0, sizeof detail))
            abort();
        if (rc == CODEC_EENCODING && loc[0])
            abort();
        if (rc != CODEC_EENCODING) {
            json_t *oracle = json_string(loc);
            if (!oracle)
                abort();
            json_decref(oracle);
        }
    } else {
        abort();
    }
    check_oracle(data, size, rc, v, loc);
    arena_free(&a);

    if (size <= 4096)
        check_writer_strings(data, size);
    check_headers(data, size);
    return 0;
}
