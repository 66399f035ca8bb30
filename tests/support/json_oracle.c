/*
 * json_oracle.c — the jansson-based JSON reader that codec_json.c replaced,
 * kept as the reference for tests and fuzz targets only (never linked into
 * the server): jansson parses, a bracket pre-scan enforces CODEC_MAX_DEPTH
 * first, and the jansson tree is copied into the arena. Duplicate keys and
 * out-of-range integers get their location by re-walking the tokens up to
 * jansson's error position.
 */
#include "json_oracle.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/codec_int.h"

/* Decodes the JSON string token starting at p[*i] (the opening quote) into
 * the arena, for a location. Advances *i past the closing quote. The text
 * up to jansson's error position is valid JSON, so escapes are well formed;
 * anything odd is copied as is. */
static const char *json_scan_string(const uint8_t *p, size_t n, size_t *i, struct arena *a,
                                    size_t *out_len)
{
    size_t start = ++*i, j = start;
    while (j < n && p[j] != '"')
        j += p[j] == '\\' ? 2 : 1;
    size_t end = j < n ? j : n;
    *i = end + 1;
    char *s = arena_alloc(a, end - start + 1);
    if (!s)
        return NULL;
    size_t o = 0;
    for (size_t k = start; k < end; k++) {
        if (p[k] != '\\' || k + 1 >= end) {
            s[o++] = (char)p[k];
            continue;
        }
        uint8_t e = p[++k];
        switch (e) {
        case 'b': s[o++] = '\b'; break;
        case 'f': s[o++] = '\f'; break;
        case 'n': s[o++] = '\n'; break;
        case 'r': s[o++] = '\r'; break;
        case 't': s[o++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (!codec_hex4(p, end, k + 1, &cp)) {
                s[o++] = 'u';
                break;
            }
            k += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && k + 2 < end && p[k + 1] == '\\' &&
                p[k + 2] == 'u' && codec_hex4(p, end, k + 3, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                k += 6;
            } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD; /* a lone surrogate (jansson rejects those anyway) */
            }
            o += codec_utf8_put(s + o, cp);
            break;
        }
        default: s[o++] = (char)e; break;
        }
    }
    s[o] = '\0';
    *out_len = o;
    return s;
}

/* The path of the key that ends at `pos` (jansson reports a duplicate key
 * right after its closing quote): walks the tokens before pos keeping the
 * container stack, the current key of each object and the index of each
 * array. */
static void json_dup_path(const uint8_t *p, size_t n, size_t pos, struct arena *a,
                          struct path *path_out)
{
    struct path path = {.n = 0};
    bool expect_key[CODEC_MAX_DEPTH + 1] = {false};
    size_t i = 0;
    if (pos > n)
        pos = n;
    while (i < pos) {
        uint8_t c = p[i];
        int top = path.n - 1;
        if (c == '{' || c == '[') {
            if (path.n > CODEC_MAX_DEPTH)
                break;
            path.e[path.n] = (struct path_elem){NULL, 0, 0};
            expect_key[path.n] = c == '{';
            if (c == '{')
                path.e[path.n].key = ""; /* an object frame: key set below */
            path.n++;
            i++;
        } else if (c == '}' || c == ']') {
            if (path.n > 0)
                path.n--;
            i++;
        } else if (c == ',') {
            if (top >= 0) {
                if (path.e[top].key)
                    expect_key[top] = true;
                else
                    path.e[top].index++;
            }
            i++;
        } else if (c == '"') {
            if (top >= 0 && path.e[top].key && expect_key[top]) {
                size_t len = 0;
                const char *k = json_scan_string(p, n, &i, a, &len);
                if (!k)
                    break; /* out of memory: a shorter location */
                path.e[top].key = k;
                path.e[top].key_len = len;
                expect_key[top] = false;
            } else {
                size_t skip = i + 1;
                while (skip < n && p[skip] != '"')
                    skip += p[skip] == '\\' ? 2 : 1;
                i = skip + 1;
            }
        } else {
            i++;
        }
    }
    *path_out = path;
}

static enum codec_err json_convert(json_t *j, struct val *v, struct arena *a, int depth)
{
    switch (json_typeof(j)) {
    case JSON_NULL: v->type = VAL_NULL; return CODEC_OK;
    case JSON_TRUE:
        v->type = VAL_BOOL;
        v->b = true;
        return CODEC_OK;
    case JSON_FALSE:
        v->type = VAL_BOOL;
        v->b = false;
        return CODEC_OK;
    case JSON_INTEGER: {
        json_int_t x = json_integer_value(j);
        if (x < 0) {
            v->type = VAL_INT;
            v->i = (int64_t)x;
        } else {
            v->type = VAL_UINT;
            v->u = (uint64_t)x;
        }
        return CODEC_OK;
    }
    case JSON_REAL:
        v->type = VAL_FLOAT;
        v->f = json_real_value(j);
        return CODEC_OK;
    case JSON_STRING: {
        v->type = VAL_STR;
        v->s.n = json_string_length(j);
        v->s.p = codec_arena_copy(a, json_string_value(j), v->s.n);
        return v->s.p ? CODEC_OK : CODEC_ENOMEM;
    }
    case JSON_ARRAY: {
        if (depth >= CODEC_MAX_DEPTH)
            return CODEC_EENCODING; /* the pre-scan already said so */
        size_t n = json_array_size(j);
        v->type = VAL_ARRAY;
        v->arr.n = n;
        v->arr.items = codec_arena_array(a, n, sizeof *v->arr.items);
        if (!v->arr.items)
            return CODEC_ENOMEM;
        for (size_t k = 0; k < n; k++) {
            enum codec_err e = json_convert(json_array_get(j, k), &v->arr.items[k], a, depth + 1);
            if (e)
                return e;
        }
        return CODEC_OK;
    }
    case JSON_OBJECT: {
        if (depth >= CODEC_MAX_DEPTH)
            return CODEC_EENCODING;
        size_t n = json_object_size(j), k = 0;
        v->type = VAL_MAP;
        v->map.items = codec_arena_array(a, n, sizeof *v->map.items);
        if (!v->map.items)
            return CODEC_ENOMEM;
        for (void *it = json_object_iter(j); it && k < n; it = json_object_iter_next(j, it), k++) {
            struct val_kv *kv = &v->map.items[k];
            kv->key_len = json_object_iter_key_len(it);
            kv->key = codec_arena_copy(a, json_object_iter_key(it), kv->key_len);
            if (!kv->key)
                return CODEC_ENOMEM;
            enum codec_err e = json_convert(json_object_iter_value(it), &kv->v, a, depth + 1);
            if (e)
                return e;
        }
        v->map.n = k;
        return CODEC_OK;
    }
    }
    return CODEC_EENCODING;
}

enum codec_err json_oracle_parse(const uint8_t *body, size_t len, struct arena *a, struct val **out,
                                 char *detail, size_t detail_len, char *location,
                                 size_t location_len)
{
    codec_set_text(detail, detail_len, "%s", "");
    codec_set_text(location, location_len, "%s", "");
    *out = NULL;

    size_t k = 0;
    while (k < len && (body[k] == ' ' || body[k] == '\t' || body[k] == '\n' || body[k] == '\r'))
        k++;
    if (k == len) {
        codec_set_text(detail, detail_len, "invalid JSON: the body is empty");
        return CODEC_EENCODING;
    }
    size_t deep_at = 0;
    if (codec_bracket_depth(body, len, &deep_at) > CODEC_MAX_DEPTH) {
        codec_set_text(detail, detail_len,
                       "invalid JSON: nested deeper than %d levels (at byte %zu)", CODEC_MAX_DEPTH,
                       deep_at);
        return CODEC_EENCODING;
    }

    json_error_t jerr;
    json_t *root = json_loadb((const char *)body, len,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        enum json_error_code code = json_error_code(&jerr);
        if (code == json_error_duplicate_key) {
            struct path path;
            char where[256];
            json_dup_path(body, len, (size_t)jerr.position, a, &path);
            codec_path_render(&path, location, location_len);
            codec_path_render(&path, where, sizeof where);
            codec_set_text(detail, detail_len, "duplicate key '%s' in one object", where);
            return CODEC_EDUPKEY;
        }
        if (code == json_error_out_of_memory) {
            codec_set_text(detail, detail_len, "out of memory parsing JSON");
            return CODEC_ENOMEM;
        }
        if (code == json_error_numeric_overflow && strstr(jerr.text, "integer")) {
            /* Valid JSON, but a value no field accepts: a data error at its place. */
            struct path path;
            json_dup_path(body, len, (size_t)jerr.position, a, &path);
            codec_path_render(&path, location, location_len);
            codec_set_text(detail, detail_len,
                           "the integer at line %d column %d is out of range (above 2^63 - 1)",
                           jerr.line, jerr.column);
            return CODEC_ERANGE;
        }
        codec_set_text(detail, detail_len, "invalid JSON at line %d column %d: %s", jerr.line,
                       jerr.column, jerr.text);
        return CODEC_EENCODING;
    }

    enum codec_err rc = CODEC_ENOMEM;
    struct val *v = arena_alloc(a, sizeof *v);
    if (v)
        rc = json_convert(root, v, a, 0);
    json_decref(root);
    if (rc == CODEC_ENOMEM)
        codec_set_text(detail, detail_len, "out of memory parsing JSON");
    else if (rc != CODEC_OK)
        codec_set_text(detail, detail_len, "invalid JSON: nested deeper than %d levels",
                       CODEC_MAX_DEPTH);
    else
        *out = v;
    return rc;
}
