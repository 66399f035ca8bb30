/*
 * codec_int.h — what the codec's files share: codec.c (arena, MessagePack
 * in, negotiation), codec_json.c (JSON in) and codec_out.c (the writer).
 * Not for other modules (the JSON test oracle in tests/support uses it too).
 */
#ifndef COYOTE_SERVER_CODEC_INT_H
#define COYOTE_SERVER_CODEC_INT_H

#include <stddef.h>
#include <stdint.h>

#include "server/codec.h"

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when the bytes there
 * are not one (overlong forms, surrogates, > U+10FFFF, truncated). */
static inline size_t utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (p[2] & 0xC0) != 0x80)
            return 0;
        uint8_t lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return p[1] >= lo && p[1] <= hi ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        uint8_t lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return p[1] >= lo && p[1] <= hi ? 4 : 0;
    }
    return 0;
}

/* FNV-1a of a map key (the duplicate-key sets of both parsers). */
static inline uint64_t codec_key_hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

/* printf into dst (cut to dst_len, always terminated); nothing when dst is
 * NULL or dst_len is 0. */
void codec_set_text(char *dst, size_t dst_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- field paths (the location of a duplicate key or an out-of-range integer) ---- */

struct path_elem {
    const char *key; /* NULL: an array index */
    size_t key_len;
    size_t index;
};

struct path {
    struct path_elem e[CODEC_MAX_DEPTH + 1];
    int n;
};

/* Renders "msgs[0].value" into dst, cut at a UTF-8 boundary when too long;
 * nothing when dst is NULL or dst_len is 0. */
void codec_path_render(const struct path *path, char *dst, size_t dst_len);

/* Helpers shared by codec.c, codec_json.c and the JSON test oracle. */
struct arena;
/* count * size bytes from the arena, or NULL (overflow, out of memory). */
void *codec_arena_array(struct arena *a, size_t count, size_t size);
/* A NUL-terminated copy of n bytes in the arena, or NULL. */
const char *codec_arena_copy(struct arena *a, const void *p, size_t n);
/* Deepest container nesting of a JSON text, counting brackets outside
 * strings (exact for valid JSON); *deep_at: where it first went past
 * CODEC_MAX_DEPTH. */
int codec_bracket_depth(const uint8_t *p, size_t n, size_t *deep_at);
/* Four hex digits at p[at..at+4) (all before n) into *u. */
bool codec_hex4(const uint8_t *p, size_t n, size_t at, uint32_t *u);
/* Encodes code point cp (<= U+10FFFF, not a surrogate) at s; returns 1..4. */
size_t codec_utf8_put(char *s, uint32_t cp);

#endif
