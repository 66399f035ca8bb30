/*
 * codec.c — MessagePack request bodies in (via msgpack-c), the value tree and
 * its arena, and content negotiation. JSON in is codec_json.c; the response
 * writer is codec_out.c.
 *
 * Invariants:
 *   1. Nesting depth: a container's level is 1 + the number of containers
 *      around it; levels above CODEC_MAX_DEPTH are rejected before msgpack-c
 *      sees the bytes (codec_json.c refuses them as it reads). So every
 *      tree is at most CODEC_MAX_DEPTH deep and the recursive conversions
 *      below are bounded; codec_out.c's writer refuses deeper containers
 *      too, so whatever it writes reads back.
 *   2. Before msgpack-c runs, a structural pre-scan has checked every header
 *      against the bytes that remain (a container of n elements needs at
 *      least n more bytes), so msgpack-c never allocates more than a small
 *      multiple of the body, whatever counts the body claims.
 *   3. Every string in a parsed tree is valid UTF-8 (codec_json.c checks
 *      JSON; msgpack str and map keys are checked here) and lives in the
 *      arena.
 *   4. Duplicate keys are reported in document order: the first key that
 *      repeats an earlier key of its own object, with its path as location.
 */
#include "server/codec.h"

#include <inttypes.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coyote.h"
#include "server/codec_int.h"

/* ---- arena ------------------------------------------------------------------ */

#define ARENA_CHUNK 8192

struct arena_chunk {
    struct arena_chunk *next;
    size_t size; /* usable bytes in data */
    size_t used;
    _Alignas(16) unsigned char data[];
};

void arena_init(struct arena *a)
{
    a->head = NULL;
    a->used_total = 0;
}

void *arena_alloc(struct arena *a, size_t n)
{
    size_t need = (n + 15) & ~(size_t)15;
    if (need < n)
        return NULL;
    if (need == 0)
        need = 16;
    struct arena_chunk *c = a->head;
    if (!c || c->size - c->used < need) {
        size_t size = need > ARENA_CHUNK / 2 ? need : ARENA_CHUNK;
        if (size > SIZE_MAX - sizeof *c)
            return NULL;
        c = malloc(sizeof *c + size);
        if (!c)
            return NULL;
        c->size = size;
        c->used = 0;
        /* A big block gets its own chunk behind the current one, so the
         * current chunk's free space is not wasted. */
        if (size > ARENA_CHUNK && a->head) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->used;
    c->used += need;
    a->used_total += need;
    return p;
}

void arena_free(struct arena *a)
{
    struct arena_chunk *c = a->head;
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    arena_init(a);
}

void *codec_arena_array(struct arena *a, size_t count, size_t size)
{
    if (count && size > SIZE_MAX / count)
        return NULL;
    return arena_alloc(a, count * size);
}

const char *codec_arena_copy(struct arena *a, const void *p, size_t n)
{
    char *s = arena_alloc(a, n + 1);
    if (!s)
        return NULL;
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* ---- helpers the JSON parser and its test oracle share (codec_int.h) ------------- */

/* Deepest container nesting of a body, counting brackets outside strings
 * (the jansson-era pre-check, codec_json.c invariant 3). Exact for valid
 * JSON; for invalid JSON any answer is fine. */
int codec_bracket_depth(const uint8_t *p, size_t n, size_t *deep_at)
{
    int depth = 0, max = 0;
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
        } else if (c == '[' || c == '{') {
            if (++depth > max) {
                max = depth;
                if (max > CODEC_MAX_DEPTH) {
                    *deep_at = i;
                    return max;
                }
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return max;
}

/* Four hex digits at p[at..at+4) (all before n) into *u. */
bool codec_hex4(const uint8_t *p, size_t n, size_t at, uint32_t *u)
{
    if (at > n || n - at < 4)
        return false;
    uint32_t x = 0;
    for (size_t h = 0; h < 4; h++) {
        uint8_t d = p[at + h], l = (uint8_t)(d | 0x20);
        x <<= 4;
        if (d >= '0' && d <= '9')
            x |= (uint32_t)(d - '0');
        else if (l >= 'a' && l <= 'f')
            x |= (uint32_t)(l - 'a' + 10);
        else
            return false;
    }
    *u = x;
    return true;
}

/* Encodes code point cp (<= U+10FFFF, not a surrogate) at s; returns 1..4. */
size_t codec_utf8_put(char *s, uint32_t cp)
{
    if (cp < 0x80) {
        s[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        s[0] = (char)(0xC0 | (cp >> 6));
        s[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        s[0] = (char)(0xE0 | (cp >> 12));
        s[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    s[0] = (char)(0xF0 | (cp >> 18));
    s[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    s[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    s[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- small helpers -------------------------------------------------------------- */

void codec_set_text(char *dst, size_t dst_len, const char *fmt, ...)
{
    if (!dst || dst_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, dst_len, fmt, ap);
    va_end(ap);
}

static bool utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(p + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* ---- field paths (codec_int.h) ---------------------------------------------------- */

void codec_path_render(const struct path *path, char *dst, size_t dst_len)
{
    if (!dst || dst_len == 0)
        return;
    size_t at = 0;
    char tmp[32];
    for (int i = 0; i < path->n; i++) {
        const struct path_elem *e = &path->e[i];
        const char *s;
        size_t n;
        bool dot = false;
        if (e->key) {
            s = e->key;
            n = e->key_len;
            dot = i > 0;
        } else {
            n = (size_t)snprintf(tmp, sizeof tmp, "[%zu]", e->index);
            s = tmp;
        }
        if (dot) {
            if (at + 1 >= dst_len)
                break;
            dst[at++] = '.';
        }
        size_t room = dst_len - 1 - at;
        if (n > room) {
            n = room;
            while (n > 0 && ((uint8_t)s[n] & 0xC0) == 0x80)
                n--; /* do not split a character */
            memcpy(dst + at, s, n);
            at += n;
            break;
        }
        memcpy(dst + at, s, n);
        at += n;
    }
    dst[at] = '\0';
}

/* ---- MessagePack in ---------------------------------------------------------------- */

static uint64_t be_get(const uint8_t *p, size_t n)
{
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = (x << 8) | p[i];
    return x;
}

/* The structural pre-scan (invariant 2): exactly one object, every header
 * inside the body, every container's count <= the bytes left, depth within
 * the limit, no ext types, no reserved 0xc1. 0 or CODEC_EENCODING with a
 * detail. */
static enum codec_err mp_scan(const uint8_t *p, size_t len, char *detail, size_t detail_len)
{
    uint64_t rem[CODEC_MAX_DEPTH + 1]; /* rem[0]: the root; rem[k]: open container k */
    int top = 0;
    size_t pos = 0;
    rem[0] = 1;
    while (rem[0] > 0) {
        if (pos >= len) {
            codec_set_text(detail, detail_len, "invalid MessagePack: the body ends too early (%s)",
                           len == 0 ? "empty body" : "truncated");
            return CODEC_EENCODING;
        }
        size_t at = pos;
        uint8_t b = p[pos++];
        size_t hdr = 0;       /* length-field bytes after the type byte */
        uint64_t payload = 0; /* fixed payload bytes */
        bool var = false;     /* payload length is in the header */
        int container = 0;    /* 1 array, 2 map */
        uint64_t count = 0;
        if (b <= 0x7F || b >= 0xE0 || b == 0xC0 || b == 0xC2 || b == 0xC3) {
            /* fixint, nil, bool */
        } else if (b <= 0x8F) {
            container = 2;
            count = b & 0x0F;
        } else if (b <= 0x9F) {
            container = 1;
            count = b & 0x0F;
        } else if (b <= 0xBF) {
            payload = b & 0x1F;
        } else {
            switch (b) {
            case 0xC4:
                hdr = 1;
                var = true;
                break;
            case 0xC5:
                hdr = 2;
                var = true;
                break;
            case 0xC6:
                hdr = 4;
                var = true;
                break;
            case 0xCA: payload = 4; break;
            case 0xCB: payload = 8; break;
            case 0xCC:
            case 0xD0: payload = 1; break;
            case 0xCD:
            case 0xD1: payload = 2; break;
            case 0xCE:
            case 0xD2: payload = 4; break;
            case 0xCF:
            case 0xD3: payload = 8; break;
            case 0xD9:
                hdr = 1;
                var = true;
                break;
            case 0xDA:
                hdr = 2;
                var = true;
                break;
            case 0xDB:
                hdr = 4;
                var = true;
                break;
            case 0xDC:
                hdr = 2;
                container = 1;
                break;
            case 0xDD:
                hdr = 4;
                container = 1;
                break;
            case 0xDE:
                hdr = 2;
                container = 2;
                break;
            case 0xDF:
                hdr = 4;
                container = 2;
                break;
            case 0xC7:
            case 0xC8:
            case 0xC9:
            case 0xD4:
            case 0xD5:
            case 0xD6:
            case 0xD7:
            case 0xD8:
                codec_set_text(detail, detail_len,
                               "invalid MessagePack: extension types are not supported (byte %zu)",
                               at);
                return CODEC_EENCODING;
            default:
                codec_set_text(detail, detail_len,
                               "invalid MessagePack: reserved type byte 0x%02x at byte %zu", b, at);
                return CODEC_EENCODING;
            }
        }
        if (len - pos < hdr) {
            codec_set_text(detail, detail_len, "invalid MessagePack: truncated header at byte %zu",
                           at);
            return CODEC_EENCODING;
        }
        if (hdr) {
            uint64_t x = be_get(p + pos, hdr);
            pos += hdr;
            if (var)
                payload = x;
            else
                count = x;
        }
        if (len - pos < payload) {
            codec_set_text(detail, detail_len,
                           "invalid MessagePack: truncated value at byte %zu (needs %" PRIu64
                           " bytes, %zu remain)",
                           at, payload, len - pos);
            return CODEC_EENCODING;
        }
        pos += (size_t)payload;
        if (container) {
            if (top >= CODEC_MAX_DEPTH) {
                codec_set_text(detail, detail_len,
                               "invalid MessagePack: nested deeper than %d levels (at byte %zu)",
                               CODEC_MAX_DEPTH, at);
                return CODEC_EENCODING;
            }
            uint64_t items = container == 2 ? count * 2 : count;
            if (items > len - pos) {
                codec_set_text(detail, detail_len,
                               "invalid MessagePack: %s at byte %zu declares %" PRIu64
                               " elements, only %zu bytes remain",
                               container == 2 ? "map" : "array", at, count, len - pos);
                return CODEC_EENCODING;
            }
            if (items > 0) {
                rem[++top] = items;
                continue;
            }
        }
        /* one element complete; close the containers it completes */
        rem[top]--;
        while (top > 0 && rem[top] == 0)
            rem[--top]--;
    }
    if (pos != len) {
        codec_set_text(
            detail, detail_len,
            "invalid MessagePack: %zu bytes of trailing data after the value (at byte %zu)",
            len - pos, pos);
        return CODEC_EENCODING;
    }
    return CODEC_OK;
}

struct mp_ctx {
    struct arena *a;
    struct path path;
    char *detail;
    size_t detail_len;
    char *location;
    size_t location_len;
};

static enum codec_err mp_convert(struct mp_ctx *c, const msgpack_object *o, struct val *v);

static enum codec_err mp_map(struct mp_ctx *c, const msgpack_object_map *m, struct val *v)
{
    size_t n = m->size;
    v->type = VAL_MAP;
    v->map.n = n;
    v->map.items = codec_arena_array(c->a, n, sizeof *v->map.items);
    if (!v->map.items)
        return CODEC_ENOMEM;
    /* An open-addressing set of the keys seen so far (indices + 1), so a
     * duplicate is found in document order (invariant 4) in linear time. */
    size_t slots = 8;
    while (slots < 2 * n)
        slots *= 2;
    uint32_t *set = NULL;
    if (n > 1) {
        set = codec_arena_array(c->a, slots, sizeof *set);
        if (!set)
            return CODEC_ENOMEM;
        memset(set, 0, slots * sizeof *set);
    }
    int at = c->path.n++;
    for (size_t k = 0; k < n; k++) {
        const msgpack_object *key = &m->ptr[k].key;
        struct val_kv *kv = &v->map.items[k];
        c->path.e[at] = (struct path_elem){NULL, 0, k};
        if (key->type != MSGPACK_OBJECT_STR) {
            char where[256];
            c->path.n = at;
            codec_path_render(&c->path, where, sizeof where);
            codec_set_text(
                c->detail, c->detail_len,
                "invalid MessagePack: map keys must be strings (key %zu of the map at '%s')", k,
                where);
            return CODEC_EENCODING;
        }
        const uint8_t *kp = (const uint8_t *)key->via.str.ptr;
        size_t kn = key->via.str.size;
        if (!utf8_valid(kp, kn)) {
            char where[256];
            c->path.n = at;
            codec_path_render(&c->path, where, sizeof where);
            codec_set_text(c->detail, c->detail_len,
                           "invalid MessagePack: a map key in '%s' is not valid UTF-8", where);
            return CODEC_EENCODING;
        }
        if (kn && memchr(kp, '\0', kn)) {
            char where[256];
            c->path.n = at;
            codec_path_render(&c->path, where, sizeof where);
            codec_set_text(c->detail, c->detail_len,
                           "invalid MessagePack: a map key in '%s' contains a NUL byte", where);
            return CODEC_EENCODING;
        }
        kv->key = codec_arena_copy(c->a, kp, kn);
        kv->key_len = kn;
        if (!kv->key)
            return CODEC_ENOMEM;
        c->path.e[at] = (struct path_elem){kv->key, kn, 0};
        if (set) {
            size_t mask = slots - 1, h = (size_t)codec_key_hash(kv->key, kn) & mask;
            for (; set[h]; h = (h + 1) & mask) {
                const struct val_kv *seen = &v->map.items[set[h] - 1];
                if (seen->key_len == kn && memcmp(seen->key, kv->key, kn) == 0) {
                    codec_path_render(&c->path, c->location, c->location_len);
                    char where[256];
                    codec_path_render(&c->path, where, sizeof where);
                    codec_set_text(c->detail, c->detail_len, "duplicate key '%s' in one object",
                                   where);
                    return CODEC_EDUPKEY;
                }
            }
            set[h] = (uint32_t)(k + 1);
        }
        enum codec_err e = mp_convert(c, &m->ptr[k].val, &kv->v);
        if (e)
            return e;
    }
    c->path.n = at;
    return CODEC_OK;
}

static enum codec_err mp_convert(struct mp_ctx *c, const msgpack_object *o, struct val *v)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: v->type = VAL_NULL; return CODEC_OK;
    case MSGPACK_OBJECT_BOOLEAN:
        v->type = VAL_BOOL;
        v->b = o->via.boolean;
        return CODEC_OK;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        v->type = VAL_UINT;
        v->u = o->via.u64;
        return CODEC_OK;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        v->type = VAL_INT;
        v->i = o->via.i64;
        return CODEC_OK;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        v->type = VAL_FLOAT;
        v->f = o->via.f64;
        return CODEC_OK;
    case MSGPACK_OBJECT_STR:
        if (!utf8_valid((const uint8_t *)o->via.str.ptr, o->via.str.size)) {
            char where[256];
            codec_path_render(&c->path, where, sizeof where);
            codec_set_text(c->detail, c->detail_len,
                           "invalid MessagePack: the string at '%s' is not valid UTF-8", where);
            return CODEC_EENCODING;
        }
        v->type = VAL_STR;
        v->s.n = o->via.str.size;
        v->s.p = codec_arena_copy(c->a, o->via.str.ptr, v->s.n);
        return v->s.p ? CODEC_OK : CODEC_ENOMEM;
    case MSGPACK_OBJECT_BIN:
        v->type = VAL_BIN;
        v->s.n = o->via.bin.size;
        v->s.p = codec_arena_copy(c->a, o->via.bin.ptr, v->s.n);
        return v->s.p ? CODEC_OK : CODEC_ENOMEM;
    case MSGPACK_OBJECT_ARRAY: {
        if (c->path.n >= CODEC_MAX_DEPTH)
            break; /* the pre-scan already said so */
        size_t n = o->via.array.size;
        v->type = VAL_ARRAY;
        v->arr.n = n;
        v->arr.items = codec_arena_array(c->a, n, sizeof *v->arr.items);
        if (!v->arr.items)
            return CODEC_ENOMEM;
        int at = c->path.n++;
        for (size_t k = 0; k < n; k++) {
            c->path.e[at] = (struct path_elem){NULL, 0, k};
            enum codec_err e = mp_convert(c, &o->via.array.ptr[k], &v->arr.items[k]);
            if (e)
                return e;
        }
        c->path.n = at;
        return CODEC_OK;
    }
    case MSGPACK_OBJECT_MAP:
        if (c->path.n >= CODEC_MAX_DEPTH)
            break;
        return mp_map(c, &o->via.map, v);
    case MSGPACK_OBJECT_EXT:
        codec_set_text(c->detail, c->detail_len,
                       "invalid MessagePack: extension types are not supported");
        return CODEC_EENCODING;
    }
    codec_set_text(c->detail, c->detail_len, "invalid MessagePack: unexpected object");
    return CODEC_EENCODING;
}

enum codec_err codec_parse_msgpack(const uint8_t *body, size_t len, struct arena *a,
                                   struct val **out, char *detail, size_t detail_len,
                                   char *location, size_t location_len)
{
    codec_set_text(detail, detail_len, "%s", "");
    codec_set_text(location, location_len, "%s", "");
    *out = NULL;
    enum codec_err rc = mp_scan(body, len, detail, detail_len);
    if (rc)
        return rc;

    msgpack_unpacked un;
    msgpack_unpacked_init(&un);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&un, (const char *)body, len, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        codec_set_text(detail, detail_len, "out of memory parsing MessagePack");
        rc = CODEC_ENOMEM;
        goto done;
    }
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
        codec_set_text(detail, detail_len, "invalid MessagePack (at byte %zu)", off);
        rc = CODEC_EENCODING;
        goto done;
    }
    struct mp_ctx c = {a, {.n = 0}, detail, detail_len, location, location_len};
    struct val *v = arena_alloc(a, sizeof *v);
    rc = v ? mp_convert(&c, &un.data, v) : CODEC_ENOMEM;
    if (rc == CODEC_ENOMEM)
        codec_set_text(detail, detail_len, "out of memory parsing MessagePack");
    else if (rc == CODEC_OK)
        *out = v;
done:
    msgpack_unpacked_destroy(&un);
    return rc;
}

const struct val *val_get(const struct val *m, const char *key)
{
    if (!m || m->type != VAL_MAP || !key)
        return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < m->map.n; i++) {
        const struct val_kv *kv = &m->map.items[i];
        if (kv->key_len == n && memcmp(kv->key, key, n) == 0)
            return &kv->v;
    }
    return NULL;
}

bool val_equal(const struct val *a, const struct val *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case VAL_NULL: return true;
    case VAL_BOOL: return a->b == b->b;
    case VAL_INT: return a->i == b->i;
    case VAL_UINT: return a->u == b->u;
    case VAL_FLOAT: return memcmp(&a->f, &b->f, sizeof a->f) == 0;
    case VAL_STR:
    case VAL_BIN: return a->s.n == b->s.n && (a->s.n == 0 || memcmp(a->s.p, b->s.p, a->s.n) == 0);
    case VAL_ARRAY:
        if (a->arr.n != b->arr.n)
            return false;
        for (size_t i = 0; i < a->arr.n; i++)
            if (!val_equal(&a->arr.items[i], &b->arr.items[i]))
                return false;
        return true;
    case VAL_MAP:
        if (a->map.n != b->map.n)
            return false;
        for (size_t i = 0; i < a->map.n; i++) {
            const struct val_kv *x = &a->map.items[i], *y = &b->map.items[i];
            if (x->key_len != y->key_len || memcmp(x->key, y->key, x->key_len) != 0 ||
                !val_equal(&x->v, &y->v))
                return false;
        }
        return true;
    }
    return false;
}

/* ---- content negotiation ------------------------------------------------------------ */

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_tchar(char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool ieq(const char *p, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    if (n != m)
        return false;
    for (size_t i = 0; i < n; i++) {
        char a = p[i], b = lit[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != b)
            return false;
    }
    return true;
}

/* Reads "type/subtype" at *s; the span covers both tokens and the slash. */
static bool media_type(const char **s, const char **start, size_t *n)
{
    const char *p = *s, *b = p;
    while (is_tchar(*p))
        p++;
    if (p == b || *p != '/')
        return false;
    const char *sub = ++p;
    while (is_tchar(*p))
        p++;
    if (p == sub)
        return false;
    *start = b;
    *n = (size_t)(p - b);
    *s = p;
    return true;
}

static bool format_of(const char *p, size_t n, enum codec_format *fmt)
{
    if (ieq(p, n, "application/json")) {
        *fmt = FORMAT_JSON;
        return true;
    }
    if (ieq(p, n, "application/msgpack")) {
        *fmt = FORMAT_MSGPACK;
        return true;
    }
    return false;
}

int codec_content_type(const char *value, enum codec_format *fmt)
{
    if (!value)
        return -2;
    const char *s = value, *t;
    size_t n;
    while (is_ows(*s))
        s++;
    if (!media_type(&s, &t, &n))
        return -1;
    while (is_ows(*s))
        s++;
    if (*s != '\0' && *s != ';')
        return -1; /* parameters (anything after ';') are allowed, nothing else */
    return format_of(t, n, fmt) ? 0 : -1;
}

/* A qvalue in thousandths: "0", "0.5", "1", "1.000"; -1 when malformed. */
static int parse_q(const char *p, size_t n)
{
    if (n == 0 || (p[0] != '0' && p[0] != '1'))
        return -1;
    int q = (p[0] - '0') * 1000;
    if (n == 1)
        return q;
    if (p[1] != '.' || n > 5)
        return -1;
    int scale = 100;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        q += (p[i] - '0') * scale;
    }
    return q <= 1000 ? q : -1;
}

/* Skips to just past the next ',' outside a quoted string (or to the end). */
static const char *next_element(const char *s)
{
    bool quoted = false;
    for (; *s; s++) {
        if (quoted) {
            if (*s == '\\' && s[1])
                s++;
            else if (*s == '"')
                quoted = false;
        } else if (*s == '"') {
            quoted = true;
        } else if (*s == ',') {
            return s + 1;
        }
    }
    return s;
}

/* Parses one media range at s; *q gets its weight (1000 when absent).
 * false when the element is malformed (the caller ignores it). */
static bool accept_element(const char *s, const char **type, size_t *type_len, int *q)
{
    while (is_ows(*s))
        s++;
    if (!media_type(&s, type, type_len))
        return false;
    *q = 1000;
    for (;;) {
        while (is_ows(*s))
            s++;
        if (*s == '\0' || *s == ',')
            return true;
        if (*s != ';')
            return false;
        s++;
        while (is_ows(*s))
            s++;
        if (*s == '\0' || *s == ',')
            return true; /* a trailing ';' */
        const char *name = s;
        while (is_tchar(*s))
            s++;
        size_t name_len = (size_t)(s - name);
        if (name_len == 0 || *s != '=')
            return false;
        s++;
        const char *value = s;
        size_t value_len;
        if (*s == '"') {
            s++;
            while (*s && *s != '"')
                s += (*s == '\\' && s[1]) ? 2 : 1;
            if (*s != '"')
                return false;
            s++;
            value_len = (size_t)(s - value);
        } else {
            while (is_tchar(*s))
                s++;
            value_len = (size_t)(s - value);
            if (value_len == 0)
                return false;
        }
        if (ieq(name, name_len, "q")) {
            *q = parse_q(value, value_len);
            if (*q < 0)
                return false;
        }
    }
}

enum codec_format codec_negotiate(const char *accept, enum codec_format request_format)
{
    if (!accept)
        return request_format;
    for (const char *s = accept; *s; s = next_element(s)) {
        const char *type;
        size_t type_len;
        int q;
        enum codec_format f;
        if (accept_element(s, &type, &type_len, &q) && q > 0 && format_of(type, type_len, &f) &&
            f == FORMAT_MSGPACK)
            return FORMAT_MSGPACK;
    }
    return FORMAT_JSON;
}
