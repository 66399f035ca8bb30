/*
 * codec_json.c — JSON request bodies in: one pass over the bytes that builds
 * the struct val tree directly in the request's arena (codec.h).
 *
 * The grammar is RFC 8259 as jansson reads it with JSON_DECODE_ANY |
 * JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL (jansson was the parser before this
 * file; tests/support/json_oracle.c keeps it as the reference, and
 * tests/fuzz/fuzz_json.c checks the two agree): any value at the top level,
 * whitespace is space, tab, LF and CR, strict UTF-8, no raw control
 * characters in strings, lone surrogate escapes rejected, \u0000 allowed in
 * values but not in keys, no leading zeros, '+', bare '.' or NaN.
 *
 * Invariants:
 *   1. Containers are read with an explicit stack of at most CODEC_MAX_DEPTH
 *      frames, never by recursion; opening one more is an encoding error at
 *      that bracket. The elements of the open containers wait on two
 *      scratch vectors (values of arrays, entries of objects), innermost
 *      last; when a container closes its elements are copied into one arena
 *      array and popped. The scratch starts on the C stack and moves to the
 *      heap when it outgrows it, and is freed before the call returns.
 *   2. Every string in the tree is valid UTF-8, lives in the arena and is
 *      NUL-terminated there (values may hold U+0000 too; length is the truth).
 *   3. Errors come in document order, the first one wins, as in jansson: a
 *      duplicate key is found right after the key is read (before its ':'),
 *      an integer outside int64 right after its last digit. jansson's quirks
 *      that change the kind of error are kept: it read the whole token after
 *      a value (or a key, or '{') before finding it misplaced, so a
 *      misplaced integer out of range ("[1 99999999999999999999]") is a range
 *      error at jansson's location (see current_path); it read one character
 *      past a number, so an undecodable byte right after an out-of-range
 *      integer is an encoding error; and the whole body was checked for depth
 *      first, so a duplicate key or a big integer followed by nesting deeper
 *      than CODEC_MAX_DEPTH is an encoding error too. One quirk is not kept:
 *      jansson skipped a NUL byte right after a number or a literal ("[1\0]"
 *      was [1]); here every raw NUL is an error.
 *   4. An integer literal (no '.', no exponent) is VAL_UINT when >= 0 ("-0"
 *      included; up to 2^64 - 1, where jansson stopped at 2^63 - 1: the one
 *      difference in kind from the oracle) and VAL_INT when < 0 (down to
 *      -2^63); any other number is VAL_FLOAT with
 *      strtod's value in the C locale, and an overflow to infinity is an
 *      encoding error ("real number overflow", as jansson).
 *   5. Duplicate keys: an object's keys are compared linearly while it has
 *      at most DUP_LINEAR of them, then through an open-addressing set of
 *      key indices (heap, freed when the object closes).
 */
#include <errno.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/codec.h"
#include "server/codec_int.h"

#define LOCAL_VALS 128 /* scratch on the C stack before the heap (invariant 1) */
#define LOCAL_KVS 32
#define DUP_LINEAR 16

struct frame {
    size_t start; /* its first element in vals (array) or kvs (object) */
    size_t n;     /* elements read; an object counts the key being read */
    size_t *set;  /* more than DUP_LINEAR keys: key index + 1 per slot, 0 empty */
    size_t set_mask;
    bool is_map;
};

struct parser {
    const uint8_t *p;
    size_t n;
    struct arena *a;
    struct val *vals, *vals_local;
    size_t nvals, vals_cap;
    struct val_kv *kvs, *kvs_local;
    size_t nkvs, kvs_cap;
    struct frame stack[CODEC_MAX_DEPTH];
    int depth;
    char *detail;
    size_t detail_len;
    char *location;
    size_t location_len;
};

/* ---- errors ------------------------------------------------------------------------ */

/* An encoding error at byte `at` (n: the end of the body): "invalid JSON at
 * line L column C: <reason>", C counting characters up to and including the
 * one at `at` (at the end: the characters of the last line), as jansson did.
 * With `near`, the character there is quoted when printable. */
static enum codec_err fail(struct parser *ps, size_t at, bool near, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum codec_err fail(struct parser *ps, size_t at, bool near, const char *fmt, ...)
{
    if (!ps->detail || ps->detail_len == 0)
        return CODEC_EENCODING;
    char why[128], what[32] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    size_t line = 1, column = 0, end = at < ps->n ? at + 1 : ps->n;
    for (size_t k = 0; k < end; k++) {
        if (ps->p[k] == '\n') {
            line++;
            column = 0;
        } else if ((ps->p[k] & 0xC0) != 0x80) {
            column++;
        }
    }
    if (near && at >= ps->n)
        snprintf(what, sizeof what, " near end of file");
    else if (near && ps->p[at] > 0x20 && ps->p[at] < 0x7F)
        snprintf(what, sizeof what, " near '%c'", ps->p[at]);
    codec_set_text(ps->detail, ps->detail_len, "invalid JSON at line %zu column %zu: %s%s", line,
                   column, why, what);
    return CODEC_EENCODING;
}

static enum codec_err no_memory(struct parser *ps)
{
    codec_set_text(ps->detail, ps->detail_len, "out of memory parsing JSON");
    return CODEC_ENOMEM;
}

/* The path of the value being read: each open array's index, each open
 * object's current key — or, as jansson's error position gave it, "" in an
 * object before its first key. With after_element, the innermost array's
 * element is complete and the path names it (a token after it was bad). */
static void current_path(const struct parser *ps, struct path *path, bool after_element)
{
    path->n = 0;
    for (int d = 0; d < ps->depth; d++) {
        const struct frame *f = &ps->stack[d];
        if (f->is_map && f->n == 0) {
            path->e[path->n++] = (struct path_elem){"", 0, 0};
        } else if (f->is_map) {
            const struct val_kv *kv = &ps->kvs[f->start + f->n - 1];
            path->e[path->n++] = (struct path_elem){kv->key, kv->key_len, 0};
        } else {
            size_t index = f->n - (after_element && d == ps->depth - 1 ? 1 : 0);
            path->e[path->n++] = (struct path_elem){NULL, 0, index};
        }
    }
}

/* ---- scratch vectors ------------------------------------------------------------------ */

/* vec (cap elements of size each) with twice the room, moved off the C
 * stack (local) on its first growth; NULL when out of memory (vec is then
 * unchanged). */
static void *grow(void *vec, size_t *cap, size_t size, const void *local)
{
    if (*cap > SIZE_MAX / 2 / size)
        return NULL;
    size_t want = *cap * 2;
    void *v;
    if (vec == local) {
        v = malloc(want * size);
        if (v)
            memcpy(v, vec, *cap * size);
    } else {
        v = realloc(vec, want * size);
    }
    if (v)
        *cap = want;
    return v;
}

/* ---- strings ---------------------------------------------------------------------------- */

static inline bool plain_byte(uint8_t c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* True when none of the 8 bytes in x ends or escapes a string or needs a
 * check: no '"', '\\', control character or non-ASCII byte. */
static inline bool plain_word(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    uint64_t t = ((q - ones) & ~q) | ((b - ones) & ~b) | (x - ones * 0x20) | x;
    return (t & high) == 0;
}

/* The rest of a string whose bytes [start, j) are plain and p[j] is not a
 * closing quote: escapes, non-ASCII, errors. */
static enum codec_err string_slow(struct parser *ps, size_t *ip, size_t start, size_t j,
                                  const char **out, size_t *out_len, bool is_key)
{
    const uint8_t *p = ps->p;
    size_t n = ps->n;
    /* Size the copy by the closing quote (escapes skipped): decoding never
     * makes the text longer, and the decoder below stops at that same quote
     * (an escape or a UTF-8 sequence never holds a '"'), or fails first. */
    size_t end = j;
    while (end < n && p[end] != '"')
        end += p[end] == '\\' ? 2 : 1;
    if (end > n)
        end = n;
    char *s = arena_alloc(ps->a, end - start + 1);
    if (!s)
        return no_memory(ps);
    memcpy(s, p + start, j - start);
    size_t o = j - start, k = j;
    bool nul = false;
    for (;;) {
        if (k >= n)
            return fail(ps, n, false, "premature end of input");
        uint8_t c = p[k];
        if (c == '"')
            break;
        if (c == '\\') {
            uint8_t e = k + 1 < n ? p[k + 1] : 0;
            char simple = 0;
            switch (e) {
            case '"': simple = '"'; break;
            case '\\': simple = '\\'; break;
            case '/': simple = '/'; break;
            case 'b': simple = '\b'; break;
            case 'f': simple = '\f'; break;
            case 'n': simple = '\n'; break;
            case 'r': simple = '\r'; break;
            case 't': simple = '\t'; break;
            case 'u': break;
            default: return fail(ps, k, false, "invalid escape");
            }
            if (simple) {
                s[o++] = simple;
                k += 2;
                continue;
            }
            uint32_t cp, lo;
            if (!codec_hex4(p, n, k + 2, &cp))
                return fail(ps, k, false, "invalid escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (k + 7 >= n || p[k + 6] != '\\' || p[k + 7] != 'u')
                    return fail(ps, k, false, "invalid Unicode '\\u%04X'", (unsigned)cp);
                if (!codec_hex4(p, n, k + 8, &lo))
                    return fail(ps, k + 6, false, "invalid escape");
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return fail(ps, k, false, "invalid Unicode '\\u%04X\\u%04X'", (unsigned)cp,
                                (unsigned)lo);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                k += 12;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(ps, k, false, "invalid Unicode '\\u%04X'", (unsigned)cp);
            } else {
                k += 6;
            }
            nul |= cp == 0;
            o += codec_utf8_put(s + o, cp);
            continue;
        }
        if (c < 0x20)
            return fail(ps, k, false, "control character 0x%x", c);
        if (c < 0x80) {
            s[o++] = (char)c;
            k++;
            continue;
        }
        size_t len = utf8_seq(p + k, n - k);
        if (len == 0)
            return fail(ps, k, false, "unable to decode byte 0x%x", c);
        memcpy(s + o, p + k, len);
        o += len;
        k += len;
    }
    s[o] = '\0';
    if (is_key && nul)
        return fail(ps, k, false, "NUL byte in object key not supported");
    *out = s;
    *out_len = o;
    *ip = k + 1;
    return CODEC_OK;
}

/* The string whose opening quote is at *ip, decoded into the arena
 * (NUL-terminated); *ip moves past the closing quote. */
static inline enum codec_err parse_string(struct parser *ps, size_t *ip, const char **out,
                                          size_t *out_len, bool is_key)
{
    const uint8_t *p = ps->p;
    size_t n = ps->n, start = *ip + 1, j = start;
    while (n - j >= 8) {
        uint64_t x;
        memcpy(&x, p + j, 8);
        if (!plain_word(x))
            break;
        j += 8;
    }
    while (j < n && plain_byte(p[j]))
        j++;
    if (j >= n || p[j] != '"')
        return string_slow(ps, ip, start, j, out, out_len, is_key);
    size_t len = j - start;
    char *s = arena_alloc(ps->a, len + 1);
    if (!s)
        return no_memory(ps);
    memcpy(s, p + start, len);
    s[len] = '\0';
    *out = s;
    *out_len = len;
    *ip = j + 1;
    return CODEC_OK;
}

/* ---- numbers ------------------------------------------------------------------------------ */

static inline bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

/* strtod of p[0..n) in the C locale (jansson converted to the current
 * locale's decimal point; the result is the same). false on overflow. */
static bool slow_real(const uint8_t *p, size_t n, double *out, bool *oom)
{
    char local[64], *buf = local;
    if (n >= sizeof local) {
        buf = malloc(n + 1);
        if (!buf) {
            *oom = true;
            return false;
        }
    }
    memcpy(buf, p, n);
    buf[n] = '\0';
    pthread_once(&c_locale_once, c_locale_init);
    errno = 0;
    double d = c_locale ? strtod_l(buf, NULL, c_locale) : strtod(buf, NULL);
    bool overflow = (d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE;
    if (buf != local)
        free(buf);
    *out = d;
    return !overflow;
}

/* The number at *ip (a '-' or a digit there) into *v; *ip moves past it.
 * An integer out of range is located with current_path(after_element). */
static enum codec_err parse_number(struct parser *ps, size_t *ip, struct val *v, bool after_element)
{
    static const double tens[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                  1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                  1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const uint8_t *p = ps->p;
    size_t n = ps->n, start = *ip, i = start;
    bool neg = p[i] == '-';
    if (neg)
        i++;
    size_t int_at = i;
    if (i >= n || !is_digit(p[i]))
        return fail(ps, start, true, "invalid token");
    if (p[i] == '0') {
        if (++i < n && is_digit(p[i]))
            return fail(ps, i, true, "invalid token"); /* a leading zero */
    } else {
        while (i < n && is_digit(p[i]))
            i++;
    }
    size_t int_end = i, frac_at = i, frac_end = i;
    bool real = false;
    int64_t exp = 0;
    if (i < n && p[i] == '.') {
        frac_at = ++i;
        if (i >= n || !is_digit(p[i]))
            return fail(ps, i, true, "invalid token");
        while (i < n && is_digit(p[i]))
            i++;
        frac_end = i;
        real = true;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        bool exp_neg = false;
        if (++i < n && (p[i] == '+' || p[i] == '-'))
            exp_neg = p[i++] == '-';
        if (i >= n || !is_digit(p[i]))
            return fail(ps, i, true, "invalid token");
        for (; i < n && is_digit(p[i]); i++)
            if (exp < 1000000)
                exp = exp * 10 + (p[i] - '0'); /* beyond that only its sign matters */
        if (exp_neg)
            exp = -exp;
        real = true;
    }
    *ip = i;

    if (!real) {
        uint64_t u = 0;
        bool over = int_end - int_at > 20;
        for (size_t k = int_at; k < int_end && !over; k++)
            over = __builtin_mul_overflow(u, 10, &u) ||
                   __builtin_add_overflow(u, (uint64_t)(p[k] - '0'), &u);
        if (!over && neg && u > (uint64_t)INT64_MAX + 1)
            over = true; /* non-negative: any u64 (API.md §2: offsets are u64) */
        if (!over) {
            if (neg && u) {
                v->type = VAL_INT;
                v->i = u > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)u;
            } else {
                v->type = VAL_UINT;
                v->u = u;
            }
            return CODEC_OK;
        }
        if (i < n && p[i] >= 0x80 && utf8_seq(p + i, n - i) == 0) /* invariant 3 */
            return fail(ps, i, false, "unable to decode byte 0x%x", p[i]);
        struct path path;
        current_path(ps, &path, after_element);
        codec_path_render(&path, ps->location, ps->location_len);
        if (ps->detail && ps->detail_len) {
            size_t line = 1, column = 0;
            for (size_t k = 0; k < i; k++) {
                if (p[k] == '\n') {
                    line++;
                    column = 0;
                } else if ((p[k] & 0xC0) != 0x80) {
                    column++;
                }
            }
            codec_set_text(ps->detail, ps->detail_len,
                           "the integer at line %zu column %zu is out of range (%s)", line, column,
                           neg ? "below -2^63" : "above 2^64 - 1");
        }
        return CODEC_ERANGE;
    }

    v->type = VAL_FLOAT;
#if FLT_EVAL_METHOD == 0
    /* Exact for up to 2^53 with a power of ten up to 1e22: one correctly
     * rounded multiplication or division, the same double as strtod. */
    uint64_t m = 0;
    int digits = 0;
    for (size_t k = int_at; k < frac_end && digits <= 19; k++) {
        if (k == int_end)
            k = frac_at;
        if (k == frac_end)
            break;
        if (digits || p[k] != '0') {
            m = m * 10 + (uint64_t)(p[k] - '0');
            digits++;
        }
    }
    if (digits <= 19 && m <= (1ull << 53)) {
        int64_t e = exp - (int64_t)(frac_end - frac_at);
        if (m == 0 || (e >= -22 && e <= 22)) {
            double d = (double)m;
            if (m && e < 0)
                d /= tens[-e];
            else if (m)
                d *= tens[e];
            v->f = neg ? -d : d;
            return CODEC_OK;
        }
    }
#endif
    bool oom = false;
    if (!slow_real(p + start, i - start, &v->f, &oom))
        return oom ? no_memory(ps) : fail(ps, i - 1, false, "real number overflow");
    return CODEC_OK;
}

static inline size_t skip_ws(const uint8_t *p, size_t n, size_t i)
{
    while (i < n && p[i] <= ' ' && (p[i] == ' ' || p[i] == '\n' || p[i] == '\r' || p[i] == '\t'))
        i++;
    return i;
}

/* ---- containers ---------------------------------------------------------------------------- */

/* Whether the key just read into the innermost object (the last of its
 * entries) repeats an earlier one: 1 yes, 0 no, -1 out of memory. */
static int key_repeats(struct parser *ps, struct frame *f)
{
    const struct val_kv *kv = ps->kvs + f->start;
    size_t last = f->n - 1, len = kv[last].key_len;
    const char *key = kv[last].key;
    if (f->n <= DUP_LINEAR) {
        for (size_t k = 0; k < last; k++)
            if (kv[k].key_len == len && memcmp(kv[k].key, key, len) == 0)
                return 1;
        return 0;
    }
    if (!f->set || f->n > (f->set_mask + 1) / 2) {
        size_t slots = 64;
        while (slots < 4 * f->n)
            slots *= 2;
        size_t *set = calloc(slots, sizeof *set);
        if (!set)
            return -1;
        for (size_t k = 0; k < last; k++) { /* all different: no compare */
            size_t h = (size_t)codec_key_hash(kv[k].key, kv[k].key_len) & (slots - 1);
            while (set[h])
                h = (h + 1) & (slots - 1);
            set[h] = k + 1;
        }
        free(f->set);
        f->set = set;
        f->set_mask = slots - 1;
    }
    size_t h = (size_t)codec_key_hash(key, len) & f->set_mask;
    for (; f->set[h]; h = (h + 1) & f->set_mask) {
        const struct val_kv *seen = &kv[f->set[h] - 1];
        if (seen->key_len == len && memcmp(seen->key, key, len) == 0)
            return 1;
    }
    f->set[h] = last + 1;
    return 0;
}

/* A syntax error at p[i] where jansson had already read the token there:
 * when that token is a number, its own error came first (an integer out of
 * range is a range error; invariant 3). */
static enum codec_err unexpected(struct parser *ps, size_t i, bool after_element,
                                 const char *reason)
{
    if (i < ps->n && (ps->p[i] == '-' || is_digit(ps->p[i]))) {
        size_t end = i;
        struct val ignored;
        enum codec_err rc = parse_number(ps, &end, &ignored, after_element);
        if (rc != CODEC_OK)
            return rc;
    }
    return fail(ps, i, true, "%s", reason);
}

/* The document from p[i] (not whitespace) into *root. */
static enum codec_err parse(struct parser *ps, size_t i, struct val *root)
{
    const uint8_t *p = ps->p;
    size_t n = ps->n;
    struct frame *f = NULL; /* the innermost open container */
    struct val v;
    enum codec_err rc;

value:
    i = skip_ws(p, n, i);
    if (i >= n)
        return fail(ps, n, true, "unexpected token");
    switch (p[i]) {
    case '[':
    case '{':
        if (ps->depth == CODEC_MAX_DEPTH) {
            codec_set_text(ps->detail, ps->detail_len,
                           "invalid JSON: nested deeper than %d levels (at byte %zu)",
                           CODEC_MAX_DEPTH, i);
            return CODEC_EENCODING;
        }
        f = &ps->stack[ps->depth++];
        f->is_map = p[i] == '{';
        f->start = f->is_map ? ps->nkvs : ps->nvals;
        f->n = 0;
        f->set = NULL;
        i++;
        i = skip_ws(p, n, i);
        if (i < n && p[i] == (f->is_map ? '}' : ']')) {
            i++;
            goto close;
        }
        if (f->is_map)
            goto key;
        goto value;
    case '"':
        rc = parse_string(ps, &i, &v.s.p, &v.s.n, false);
        if (rc)
            return rc;
        v.type = VAL_STR;
        goto have_value;
    case 't':
        if (n - i >= 4 && memcmp(p + i, "true", 4) == 0) {
            v.type = VAL_BOOL;
            v.b = true;
            i += 4;
            goto have_value;
        }
        break;
    case 'f':
        if (n - i >= 5 && memcmp(p + i, "false", 5) == 0) {
            v.type = VAL_BOOL;
            v.b = false;
            i += 5;
            goto have_value;
        }
        break;
    case 'n':
        if (n - i >= 4 && memcmp(p + i, "null", 4) == 0) {
            v.type = VAL_NULL;
            i += 4;
            goto have_value;
        }
        break;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        rc = parse_number(ps, &i, &v, false);
        if (rc)
            return rc;
        goto have_value;
    case ']':
    case '}':
    case ',':
    case ':': return fail(ps, i, true, "unexpected token");
    default: break;
    }
    if (p[i] >= 0x80 && utf8_seq(p + i, n - i) == 0)
        return fail(ps, i, false, "unable to decode byte 0x%x", p[i]);
    return fail(ps, i, true, "invalid token");

key: /* at the first byte after '{' or ',' that is not whitespace */
    if (i >= n || p[i] != '"')
        return unexpected(ps, i, false, "string or '}' expected");
    if (ps->nkvs == ps->kvs_cap) {
        struct val_kv *kvs = grow(ps->kvs, &ps->kvs_cap, sizeof *kvs, ps->kvs_local);
        if (!kvs)
            return no_memory(ps);
        ps->kvs = kvs;
    }
    {
        struct val_kv *kv = &ps->kvs[ps->nkvs];
        rc = parse_string(ps, &i, &kv->key, &kv->key_len, true);
        if (rc)
            return rc;
        ps->nkvs++;
        f->n++;
        int seen = key_repeats(ps, f);
        if (seen < 0)
            return no_memory(ps);
        if (seen) {
            struct path path;
            char where[256];
            current_path(ps, &path, false);
            codec_path_render(&path, ps->location, ps->location_len);
            codec_path_render(&path, where, sizeof where);
            codec_set_text(ps->detail, ps->detail_len, "duplicate key '%s' in one object", where);
            return CODEC_EDUPKEY;
        }
    }
    i = skip_ws(p, n, i);
    if (i >= n || p[i] != ':')
        return unexpected(ps, i, false, "':' expected");
    i++;
    goto value;

have_value:
    if (!f) {
        i = skip_ws(p, n, i);
        if (i < n)
            return unexpected(ps, i, false, "end of file expected");
        *root = v;
        return CODEC_OK;
    }
    if (f->is_map) {
        ps->kvs[ps->nkvs - 1].v = v;
    } else {
        if (ps->nvals == ps->vals_cap) {
            struct val *vals = grow(ps->vals, &ps->vals_cap, sizeof *vals, ps->vals_local);
            if (!vals)
                return no_memory(ps);
            ps->vals = vals;
        }
        ps->vals[ps->nvals++] = v;
        f->n++;
    }
    i = skip_ws(p, n, i);
    if (i < n && p[i] == ',') {
        i++;
        if (!f->is_map)
            goto value;
        i = skip_ws(p, n, i);
        goto key;
    }
    if (i < n && p[i] == (f->is_map ? '}' : ']')) {
        i++;
        goto close;
    }
    return unexpected(ps, i, !f->is_map, f->is_map ? "'}' expected" : "']' expected");

close: /* the innermost container is complete: into one arena array */
    if (f->is_map) {
        struct val_kv *items = arena_alloc(ps->a, f->n * sizeof *items);
        if (!items)
            return no_memory(ps);
        memcpy(items, ps->kvs + f->start, f->n * sizeof *items);
        ps->nkvs = f->start;
        v.type = VAL_MAP;
        v.map.items = items;
        v.map.n = f->n;
        free(f->set);
        f->set = NULL;
    } else {
        struct val *items = arena_alloc(ps->a, f->n * sizeof *items);
        if (!items)
            return no_memory(ps);
        memcpy(items, ps->vals + f->start, f->n * sizeof *items);
        ps->nvals = f->start;
        v.type = VAL_ARRAY;
        v.arr.items = items;
        v.arr.n = f->n;
    }
    ps->depth--;
    f = ps->depth ? &ps->stack[ps->depth - 1] : NULL;
    goto have_value;
}

enum codec_err codec_parse_json(const uint8_t *body, size_t len, struct arena *a, struct val **out,
                                char *detail, size_t detail_len, char *location,
                                size_t location_len)
{
    codec_set_text(detail, detail_len, "%s", "");
    codec_set_text(location, location_len, "%s", "");
    *out = NULL;

    size_t i = skip_ws(body, len, 0);
    if (i == len) {
        codec_set_text(detail, detail_len, "invalid JSON: the body is empty");
        return CODEC_EENCODING;
    }

    struct val vals_local[LOCAL_VALS];
    struct val_kv kvs_local[LOCAL_KVS];
    struct parser ps = {
        .p = body,
        .n = len,
        .a = a,
        .vals = vals_local,
        .vals_local = vals_local,
        .vals_cap = LOCAL_VALS,
        .kvs = kvs_local,
        .kvs_local = kvs_local,
        .kvs_cap = LOCAL_KVS,
        .detail = detail,
        .detail_len = detail_len,
        .location = location,
        .location_len = location_len,
    };
    struct val root;
    enum codec_err rc = parse(&ps, i, &root);
    for (int d = 0; d < ps.depth; d++)
        free(ps.stack[d].set);
    if (ps.vals != vals_local)
        free(ps.vals);
    if (ps.kvs != kvs_local)
        free(ps.kvs);

    if (rc == CODEC_OK) {
        struct val *v = arena_alloc(a, sizeof *v);
        if (!v)
            return no_memory(&ps);
        *v = root;
        *out = v;
    } else if (rc == CODEC_EDUPKEY || rc == CODEC_ERANGE) {
        size_t deep_at = 0;
        if (codec_bracket_depth(body, len, &deep_at) > CODEC_MAX_DEPTH) { /* invariant 3 */
            codec_set_text(location, location_len, "%s", "");
            codec_set_text(detail, detail_len,
                           "invalid JSON: nested deeper than %d levels (at byte %zu)",
                           CODEC_MAX_DEPTH, deep_at);
            rc = CODEC_EENCODING;
        }
    }
    return rc;
}
