/*
 * fuzz_msgpack.c — libFuzzer target for codec_parse_msgpack
 * (src/server/codec.c) and the response writer.
 *
 * Invariants checked (abort() when broken):
 *   1. Whatever the bytes: no crash, no read outside the input, no huge
 *      allocation from a count the body claims; the result is CODEC_OK,
 *      CODEC_EENCODING or CODEC_EDUPKEY; on failure the detail is a
 *      non-empty sentence and the location is "" unless the error is a
 *      duplicate key.
 *   2. On success every string and key is valid UTF-8 (jansson is the
 *      independent judge) and no key holds a NUL.
 *   3. On success the tree written back as MessagePack finishes cleanly,
 *      parses to an equal tree, and writing that again gives the same bytes
 *      (one canonical form).
 *   4. On success the tree written as JSON is valid JSON that our parser
 *      accepts whenever the tree fits JSON (no NUL in a string, no integer
 *      above INT64_MAX, and a bin, which becomes an array, not at the
 *      deepest level).
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Checks invariant 2 and reports whether the tree fits JSON (invariant 4). */
static bool check_tree(const struct val *v, int depth)
{
    bool fits = true;
    switch (v->type) {
    case VAL_STR: {
        /* split at NULs: each part must be valid UTF-8 */
        const char *p = v->s.p, *end = p + v->s.n;
        while (p < end) {
            const char *z = memchr(p, 0, (size_t)(end - p));
            size_t n = z ? (size_t)(z - p) : (size_t)(end - p);
            json_t *s = json_stringn(p, n);
            if (!s)
                abort();
            json_decref(s);
            if (!z)
                break;
            fits = false;
            p = z + 1;
        }
        return fits;
    }
    case VAL_UINT: return v->u <= (uint64_t)INT64_MAX;
    case VAL_BIN: return depth < CODEC_MAX_DEPTH;
    case VAL_ARRAY:
        for (size_t i = 0; i < v->arr.n; i++)
            fits &= check_tree(&v->arr.items[i], depth + 1);
        return fits;
    case VAL_MAP:
        for (size_t i = 0; i < v->map.n; i++) {
            const struct val_kv *kv = &v->map.items[i];
            json_t *k = memchr(kv->key, 0, kv->key_len) ? NULL : json_stringn(kv->key, kv->key_len);
            if (!k)
                abort();
            json_decref(k);
            fits &= check_tree(&kv->v, depth + 1);
        }
        return fits;
    default: return true;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct arena a;
    struct val *v = NULL;
    char detail[256], loc[128];
    arena_init(&a);
    enum codec_err rc =
        codec_parse_msgpack(data, size, &a, &v, detail, sizeof detail, loc, sizeof loc);
    if (rc == CODEC_EENCODING || rc == CODEC_EDUPKEY) {
        if (v || !detail[0] || !memchr(detail, 0, sizeof detail))
            abort();
        if (rc == CODEC_EENCODING && loc[0])
            abort();
        arena_free(&a);
        return 0;
    }
    if (rc != CODEC_OK || !v || detail[0] || loc[0])
        abort();
    bool fits_json = check_tree(v, 0);

    /* invariant 3 */
    struct out o, o2;
    out_init(&o, FORMAT_MSGPACK);
    out_val(&o, v);
    if (out_finish(&o) != 0)
        abort();
    struct arena a2;
    struct val *back;
    arena_init(&a2);
    if (codec_parse_msgpack(o.buf.data, o.buf.len, &a2, &back, NULL, 0, NULL, 0) != CODEC_OK ||
        !val_equal(v, back))
        abort();
    out_init(&o2, FORMAT_MSGPACK);
    out_val(&o2, back);
    if (out_finish(&o2) != 0 || o2.buf.len != o.buf.len ||
        memcmp(o2.buf.data, o.buf.data, o.buf.len) != 0)
        abort();
    out_free(&o2);
    arena_free(&a2);
    out_free(&o);

    /* invariant 4 */
    out_init(&o, FORMAT_JSON);
    out_val(&o, v);
    if (out_finish(&o) != 0)
        abort();
    arena_init(&a2);
    rc = codec_parse_json(o.buf.data, o.buf.len, &a2, &back, detail, sizeof detail, NULL, 0);
    if (fits_json && rc != CODEC_OK)
        abort();
    arena_free(&a2);
    out_free(&o);

    arena_free(&a);
    return 0;
}
