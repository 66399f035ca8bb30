/*
 * codec_out.c — the response writer of codec.h: one document in JSON or
 * MessagePack, written straight into a buf with no intermediate tree.
 *
 * Invariants:
 *   1. Every container is declared with its element count (map: pairs); the
 *      frame stack counts what is written and closes a container (JSON: its
 *      bracket) the moment it is full, so there is no out_end call.
 *   2. Output is valid whatever the caller passes: strings are escaped
 *      (JSON: ", \, control characters; short forms \b \f \n \r \t,
 *      otherwise \u00XX) and invalid UTF-8 becomes U+FFFD in both formats.
 *   3. MessagePack uses the smallest form of every int, str, bin, array and
 *      map header (a non-negative int is always written unsigned); reals are
 *      float 64.
 *   4. Misuse (a wrong element count, a key outside a map or twice in a row,
 *      a value where a key belongs, a second top-level value, nesting beyond
 *      CODEC_MAX_DEPTH) sets the sticky CY_EINVAL; running out of memory the
 *      sticky CY_ENOMEM. After an error nothing more is written, and
 *      out_finish returns the first error.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "coyote.h"
#include "server/codec.h"
#include "server/codec_int.h"

/* ---- the response writer ----------------------------------------------------------- */

static void out_fail(struct out *o, int err)
{
    if (!o->err)
        o->err = err;
}

void out_init(struct out *o, enum codec_format fmt)
{
    memset(o, 0, sizeof *o);
    o->fmt = fmt;
    buf_init(&o->buf);
}

void out_free(struct out *o)
{
    buf_free(&o->buf);
    o->depth = 0;
}

/* Checks that a value may be written here and writes the JSON separator. */
static bool begin_value(struct out *o)
{
    if (!o->err && o->buf.err)
        out_fail(o, o->buf.err);
    if (o->err)
        return false;
    if (o->depth == 0) {
        if (o->buf.len > 0) {
            out_fail(o, CY_EINVAL); /* a second top-level value */
            return false;
        }
        return true;
    }
    struct out_frame *f = &o->stack[o->depth - 1];
    if (f->is_map) {
        if (!f->want_value) {
            out_fail(o, CY_EINVAL); /* a value where a key belongs */
            return false;
        }
    } else if (f->written > 0 && o->fmt == FORMAT_JSON) {
        buf_put_u8(&o->buf, ',');
    }
    return true;
}

/* Counts one finished value and closes every container it completes. */
static void end_value(struct out *o)
{
    while (o->depth > 0) {
        struct out_frame *f = &o->stack[o->depth - 1];
        if (f->written == f->expected) {
            /* a container that was just opened empty, or just filled */
            if (o->fmt == FORMAT_JSON)
                buf_put_u8(&o->buf, f->is_map ? '}' : ']');
            o->depth--;
            continue;
        }
        f->written++;
        f->want_value = false;
        if (f->written < f->expected)
            return;
    }
}

static void put_be(struct out *o, uint8_t tag, uint64_t x, int bytes)
{
    uint8_t b[9];
    b[0] = tag;
    for (int i = 0; i < bytes; i++)
        b[1 + i] = (uint8_t)(x >> (8 * (bytes - 1 - i)));
    buf_put(&o->buf, b, (size_t)bytes + 1);
}

/* A MessagePack header for a length or count: fix form when it fits, then
 * the 8/16/32-bit forms (tag8 == 0 when the type has no 8-bit form). */
static void mp_header(struct out *o, uint64_t n, uint8_t fixbase, uint64_t fixmax, uint8_t tag8,
                      uint8_t tag16, uint8_t tag32)
{
    if (fixbase && n <= fixmax)
        buf_put_u8(&o->buf, (uint8_t)(fixbase | n));
    else if (tag8 && n <= 0xFF)
        put_be(o, tag8, n, 1);
    else if (n <= 0xFFFF)
        put_be(o, tag16, n, 2);
    else
        put_be(o, tag32, n, 4);
}

static void open_container(struct out *o, uint32_t n, bool is_map)
{
    if (!begin_value(o))
        return;
    if (o->depth >= CODEC_MAX_DEPTH) {
        out_fail(o, CY_EINVAL);
        return;
    }
    if (o->fmt == FORMAT_JSON)
        buf_put_u8(&o->buf, is_map ? '{' : '[');
    else if (is_map)
        mp_header(o, n, 0x80, 15, 0, 0xDE, 0xDF);
    else
        mp_header(o, n, 0x90, 15, 0, 0xDC, 0xDD);
    o->stack[o->depth++] = (struct out_frame){n, 0, is_map, false};
    if (n == 0)
        end_value(o); /* closes it at once and counts it in its parent */
}

void out_map(struct out *o, uint32_t pairs)
{
    open_container(o, pairs, true);
}

void out_array(struct out *o, uint32_t n)
{
    open_container(o, n, false);
}

/* Writes the JSON string body (no quotes) with escapes and U+FFFD for
 * invalid UTF-8. */
static void json_put_escaped(struct out *o, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (n == 0)
        return;     /* p may be NULL then */
    size_t run = 0; /* start of the bytes not yet copied */
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        size_t k = c >= 0x80 ? utf8_seq(p + i, n - i) : 0;
        if (k > 0) {
            i += k;
            continue;
        }
        buf_put(&o->buf, p + run, i - run);
        char esc[6];
        size_t en = 2;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            if (c < 0x20) {
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 0xF];
                en = 6;
            } else {
                memcpy(esc, "\xEF\xBF\xBD", 3); /* U+FFFD for a bad byte */
                en = 3;
            }
        }
        buf_put(&o->buf, esc, en);
        i++;
        run = i;
    }
    buf_put(&o->buf, p + run, n - run);
}

/* The length of p once every invalid byte is replaced by U+FFFD (3 bytes). */
static size_t sanitized_len(const uint8_t *p, size_t n)
{
    size_t i = 0, out = 0;
    while (i < n) {
        size_t k = p[i] < 0x80 ? 1 : utf8_seq(p + i, n - i);
        if (k == 0) {
            out += 3;
            i++;
        } else {
            out += k;
            i += k;
        }
    }
    return out;
}

static void mp_put_str(struct out *o, const uint8_t *p, size_t n)
{
    size_t m = sanitized_len(p, n);
    if (m > UINT32_MAX) {
        out_fail(o, CY_EINVAL);
        return;
    }
    mp_header(o, m, 0xA0, 31, 0xD9, 0xDA, 0xDB);
    if (m == n) {
        buf_put(&o->buf, p, n);
        return;
    }
    size_t i = 0;
    while (i < n) {
        size_t k = p[i] < 0x80 ? 1 : utf8_seq(p + i, n - i);
        if (k == 0) {
            buf_put(&o->buf, "\xEF\xBF\xBD", 3);
            i++;
        } else {
            buf_put(&o->buf, p + i, k);
            i += k;
        }
    }
}

static void put_string(struct out *o, const uint8_t *p, size_t n)
{
    if (o->fmt == FORMAT_JSON) {
        buf_put_u8(&o->buf, '"');
        json_put_escaped(o, p, n);
        buf_put_u8(&o->buf, '"');
    } else {
        mp_put_str(o, p, n);
    }
}

void out_key(struct out *o, const char *key)
{
    if (!o->err && o->buf.err)
        out_fail(o, o->buf.err);
    if (o->err)
        return;
    struct out_frame *f = o->depth > 0 ? &o->stack[o->depth - 1] : NULL;
    if (!f || !f->is_map || f->want_value || !key) {
        out_fail(o, CY_EINVAL);
        return;
    }
    if (f->written > 0 && o->fmt == FORMAT_JSON)
        buf_put_u8(&o->buf, ',');
    put_string(o, (const uint8_t *)key, strlen(key));
    if (o->fmt == FORMAT_JSON)
        buf_put_u8(&o->buf, ':');
    f->want_value = true;
}

void out_str(struct out *o, const char *p, size_t n)
{
    if (!begin_value(o))
        return;
    put_string(o, (const uint8_t *)p, n);
    end_value(o);
}

void out_cstr(struct out *o, const char *s)
{
    out_str(o, s, strlen(s));
}

size_t codec_u64_dec(char *out, uint64_t v)
{
    char rev[20];
    size_t n = 0;
    do
        rev[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    for (size_t k = 0; k < n; k++)
        out[k] = rev[n - 1 - k];
    return n;
}

void out_u64(struct out *o, uint64_t v)
{
    if (!begin_value(o))
        return;
    if (o->fmt == FORMAT_JSON) {
        char tmp[20];
        buf_put(&o->buf, tmp, codec_u64_dec(tmp, v));
    } else if (v <= 0x7F) {
        buf_put_u8(&o->buf, (uint8_t)v);
    } else if (v <= 0xFF) {
        put_be(o, 0xCC, v, 1);
    } else if (v <= 0xFFFF) {
        put_be(o, 0xCD, v, 2);
    } else if (v <= 0xFFFFFFFF) {
        put_be(o, 0xCE, v, 4);
    } else {
        put_be(o, 0xCF, v, 8);
    }
    end_value(o);
}

void out_i64(struct out *o, int64_t v)
{
    if (v >= 0) {
        out_u64(o, (uint64_t)v); /* the canonical form of a non-negative int */
        return;
    }
    if (!begin_value(o))
        return;
    if (o->fmt == FORMAT_JSON) {
        char tmp[21];
        tmp[0] = '-';
        /* |v| as u64: correct for INT64_MIN too */
        buf_put(&o->buf, tmp, 1 + codec_u64_dec(tmp + 1, (uint64_t)0 - (uint64_t)v));
    } else if (v >= -32) {
        buf_put_u8(&o->buf, (uint8_t)(int8_t)v);
    } else if (v >= INT8_MIN) {
        put_be(o, 0xD0, (uint64_t)v, 1);
    } else if (v >= INT16_MIN) {
        put_be(o, 0xD1, (uint64_t)v, 2);
    } else if (v >= INT32_MIN) {
        put_be(o, 0xD2, (uint64_t)v, 4);
    } else {
        put_be(o, 0xD3, (uint64_t)v, 8);
    }
    end_value(o);
}

void out_f64(struct out *o, double v)
{
    if (!begin_value(o))
        return;
    if (o->fmt == FORMAT_JSON) {
        if (!isfinite(v)) {
            buf_put(&o->buf, "null", 4); /* JSON has no NaN or infinity */
        } else {
            char tmp[40];
            int n = snprintf(tmp, sizeof tmp, "%.17g", v);
            buf_put(&o->buf, tmp, (size_t)n);
            /* keep it a real number when read back ("1" would be an integer) */
            if (!strpbrk(tmp, ".eE"))
                buf_put(&o->buf, ".0", 2);
        }
    } else {
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        put_be(o, 0xCB, bits, 8);
    }
    end_value(o);
}

void out_bool(struct out *o, bool v)
{
    if (!begin_value(o))
        return;
    if (o->fmt == FORMAT_JSON)
        buf_put(&o->buf, v ? "true" : "false", v ? 4 : 5);
    else
        buf_put_u8(&o->buf, v ? 0xC3 : 0xC2);
    end_value(o);
}

void out_null(struct out *o)
{
    if (!begin_value(o))
        return;
    if (o->fmt == FORMAT_JSON)
        buf_put(&o->buf, "null", 4);
    else
        buf_put_u8(&o->buf, 0xC0);
    end_value(o);
}

static void put_base64(struct out *o, const uint8_t *p, size_t n)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t *d = buf_extend(&o->buf, (n + 2) / 3 * 4);
    if (!d)
        return;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t x = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *d++ = (uint8_t)alphabet[x >> 18];
        *d++ = (uint8_t)alphabet[(x >> 12) & 63];
        *d++ = (uint8_t)alphabet[(x >> 6) & 63];
        *d++ = (uint8_t)alphabet[x & 63];
    }
    if (n - i == 1) {
        uint32_t x = (uint32_t)p[i] << 16;
        *d++ = (uint8_t)alphabet[x >> 18];
        *d++ = (uint8_t)alphabet[(x >> 12) & 63];
        *d++ = '=';
        *d++ = '=';
    } else if (n - i == 2) {
        uint32_t x = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *d++ = (uint8_t)alphabet[x >> 18];
        *d++ = (uint8_t)alphabet[(x >> 12) & 63];
        *d++ = (uint8_t)alphabet[(x >> 6) & 63];
        *d++ = '=';
    }
}

void out_bytes(struct out *o, const uint8_t *p, size_t n, enum value_encoding enc)
{
    if (enc == VALUE_UTF8) {
        out_str(o, (const char *)p, n);
        return;
    }
    if (!begin_value(o))
        return;
    if (enc == VALUE_BASE64) {
        if (n > (o->fmt == FORMAT_MSGPACK ? (size_t)UINT32_MAX / 4 * 3 : SIZE_MAX / 2)) {
            out_fail(o, CY_EINVAL);
            return;
        }
        size_t m = (n + 2) / 3 * 4;
        if (o->fmt == FORMAT_JSON)
            buf_put_u8(&o->buf, '"');
        else
            mp_header(o, m, 0xA0, 31, 0xD9, 0xDA, 0xDB);
        put_base64(o, p, n);
        if (o->fmt == FORMAT_JSON)
            buf_put_u8(&o->buf, '"');
    } else if (o->fmt == FORMAT_MSGPACK) {
        if (n > UINT32_MAX) {
            out_fail(o, CY_EINVAL);
            return;
        }
        mp_header(o, n, 0, 0, 0xC4, 0xC5, 0xC6);
        buf_put(&o->buf, p, n);
    } else {
        /* "[1,2,255]": at most 4 bytes per value, reserved once */
        if (n > SIZE_MAX / 4 - 2 || buf_reserve(&o->buf, n * 4 + 2) != 0) {
            out_fail(o, n > SIZE_MAX / 4 - 2 ? CY_EINVAL : CY_ENOMEM);
            return;
        }
        uint8_t *d = o->buf.data + o->buf.len, *start = d;
        *d++ = '[';
        for (size_t i = 0; i < n; i++) {
            if (i)
                *d++ = ',';
            uint8_t b = p[i];
            if (b >= 100)
                *d++ = (uint8_t)('0' + b / 100);
            if (b >= 10)
                *d++ = (uint8_t)('0' + b / 10 % 10);
            *d++ = (uint8_t)('0' + b % 10);
        }
        *d++ = ']';
        o->buf.len += (size_t)(d - start);
    }
    end_value(o);
}

void out_val(struct out *o, const struct val *v)
{
    switch (v->type) {
    case VAL_NULL: out_null(o); return;
    case VAL_BOOL: out_bool(o, v->b); return;
    case VAL_INT: out_i64(o, v->i); return;
    case VAL_UINT: out_u64(o, v->u); return;
    case VAL_FLOAT: out_f64(o, v->f); return;
    case VAL_STR: out_str(o, v->s.p, v->s.n); return;
    case VAL_BIN: out_bytes(o, (const uint8_t *)v->s.p, v->s.n, VALUE_DEFAULT); return;
    case VAL_ARRAY:
        if (v->arr.n > UINT32_MAX) {
            out_fail(o, CY_EINVAL);
            return;
        }
        out_array(o, (uint32_t)v->arr.n);
        for (size_t i = 0; i < v->arr.n && !o->err; i++)
            out_val(o, &v->arr.items[i]);
        return;
    case VAL_MAP:
        if (v->map.n > UINT32_MAX) {
            out_fail(o, CY_EINVAL);
            return;
        }
        out_map(o, (uint32_t)v->map.n);
        for (size_t i = 0; i < v->map.n && !o->err; i++) {
            out_key(o, v->map.items[i].key);
            out_val(o, &v->map.items[i].v);
        }
        return;
    }
    out_fail(o, CY_EINVAL);
}

int out_finish(struct out *o)
{
    if (!o->err && o->buf.err)
        out_fail(o, o->buf.err);
    if (o->err)
        return o->err;
    if (o->depth != 0 || o->buf.len == 0)
        out_fail(o, CY_EINVAL); /* an unfinished container, or nothing written */
    return o->err;
}
