/*
 * codec.h — request bodies in, response bodies out, in JSON or MessagePack
 * (API.md §1).
 *
 * In: codec_parse_json / codec_parse_msgpack turn untrusted bytes into a small
 * tree of struct val, allocated from an arena that the request frees at once.
 * JSON is read by a one-pass parser that builds the tree as it goes
 * (codec_json.c: RFC 8259, strict UTF-8, U+0000 allowed in string values but
 * not in keys, exact 64-bit integers, duplicate keys rejected; it accepts and
 * rejects what jansson did, tests/support/json_oracle.c), MessagePack with
 * msgpack-c (maps must have string keys, valid UTF-8 without NUL; str must
 * be valid UTF-8; duplicate keys rejected; bin and str kept apart; ext
 * rejected).
 * Strings are length + pointer (never rely on a NUL).
 *
 * Out: struct out writes one response in the negotiated format. Containers
 * are declared with their element count (MessagePack needs it; the JSON
 * writer checks it), and JSON is emitted by hand into a buffer (no
 * intermediate tree). Bytes (message values) are written as a JSON array of
 * ints, a MessagePack bin, or — when the caller asked for value_encoding —
 * a UTF-8 or base64 JSON string.
 *
 * Limits: nesting depth <= CODEC_MAX_DEPTH; anything deeper is an encoding
 * error (protects the stack and the arena).
 */
#ifndef COYOTE_SERVER_CODEC_H
#define COYOTE_SERVER_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define CODEC_MAX_DEPTH 32

/* ---- arena ------------------------------------------------------------------ */

/* Bump allocator for one request; chunks are malloc'd and freed together. */
struct arena {
    struct arena_chunk *head;
    size_t used_total;
};
void arena_init(struct arena *a);
/* n bytes aligned to 16, or NULL when out of memory. Valid until arena_free. */
void *arena_alloc(struct arena *a, size_t n);
void arena_free(struct arena *a);

/* ---- the value tree ----------------------------------------------------------- */

enum val_type {
    VAL_NULL,
    VAL_BOOL,
    VAL_INT,   /* a negative integer (i) */
    VAL_UINT,  /* a non-negative integer (u) */
    VAL_FLOAT,
    VAL_STR,   /* UTF-8 text (JSON string, MessagePack str) */
    VAL_BIN,   /* MessagePack bin */
    VAL_ARRAY,
    VAL_MAP,
};

struct val;
struct val_kv;

struct val {
    enum val_type type;
    union {
        bool b;
        int64_t i;
        uint64_t u;
        double f;
        struct {
            const char *p;
            size_t n;
        } s; /* VAL_STR and VAL_BIN */
        struct {
            struct val *items;
            size_t n;
        } arr;
        struct {
            struct val_kv *items;
            size_t n;
        } map;
    };
};

struct val_kv {
    const char *key;
    size_t key_len;
    struct val v;
};

enum codec_err {
    CODEC_OK = 0,
    CODEC_EENCODING = 1, /* not valid JSON / MessagePack, or too deep: 400 invalid_encoding */
    CODEC_EDUPKEY = 2,   /* a duplicate key in one object: 422 invalid_data */
    CODEC_ENOMEM = 3,
    CODEC_ERANGE = 4,    /* a JSON integer outside the 64-bit signed range: 422 invalid_data
                            at `location` (every bounded field of API.md is far below it) */
};

/* Parse a whole body (an empty body is CODEC_EENCODING). On failure `detail`
 * gets a short human sentence (e.g. "invalid JSON at line 1 column 7: ..."),
 * and for CODEC_EDUPKEY `location` the path of the repeated key itself (e.g.
 * "msgs[0].value" for a second "value" in the first message; the first
 * duplicate in document order), for CODEC_ERANGE the path of the integer.
 * `location` is "" otherwise. *out and everything under it (strings
 * included, each NUL-terminated) is allocated in a, valid until arena_free. */
enum codec_err codec_parse_json(const uint8_t *body, size_t len, struct arena *a,
                                struct val **out, char *detail, size_t detail_len,
                                char *location, size_t location_len);
enum codec_err codec_parse_msgpack(const uint8_t *body, size_t len, struct arena *a,
                                   struct val **out, char *detail, size_t detail_len,
                                   char *location, size_t location_len);

/* The value of key in a map (NULL when absent or when m is not a map). */
const struct val *val_get(const struct val *m, const char *key);

/* True when a and b are the same tree: same types, equal scalars (reals
 * compared bit for bit), equal bytes, maps with the same keys in the same
 * order. For tests and fuzz targets. */
bool val_equal(const struct val *a, const struct val *b);

/* ---- content negotiation (API.md §1) --------------------------------------------- */

enum codec_format { FORMAT_JSON, FORMAT_MSGPACK };

/* Classify a Content-Type header value: 0 and *fmt for application/json or
 * application/msgpack (case-insensitive, parameters such as "; charset=utf-8"
 * allowed), -1 for anything else. NULL → -2 (missing). */
int codec_content_type(const char *value, enum codec_format *fmt);
/* The response format for an Accept header value (NULL when absent) and the
 * request's format: MessagePack when Accept lists application/msgpack with
 * q > 0 (spaces and q-values parsed properly), or when there is no Accept and
 * the request was MessagePack; otherwise JSON. */
enum codec_format codec_negotiate(const char *accept, enum codec_format request_format);

/* ---- the response writer ------------------------------------------------------------ */

/* v in decimal at out (room for 20 characters; no NUL); returns the length.
 * The hot paths' number formatting (no printf machinery). */
size_t codec_u64_dec(char *out, uint64_t v);

enum value_encoding { VALUE_DEFAULT, VALUE_UTF8, VALUE_BASE64 };

struct out_frame {
    uint32_t expected; /* elements declared (map: pairs) */
    uint32_t written;
    bool is_map;
    bool want_value; /* map: a key was written, its value is next */
};

struct out {
    enum codec_format fmt;
    struct buf buf; /* the body (owned) */
    struct out_frame stack[CODEC_MAX_DEPTH];
    int depth;
    int err; /* sticky: CY_ENOMEM or CY_EINVAL (count mismatch: a bug) */
};

void out_init(struct out *o, enum codec_format fmt);
void out_free(struct out *o);
void out_map(struct out *o, uint32_t pairs);
void out_array(struct out *o, uint32_t n);
/* A key inside a map (NUL-terminated literal or name). */
void out_key(struct out *o, const char *key);
void out_str(struct out *o, const char *p, size_t n);
void out_cstr(struct out *o, const char *s);
void out_u64(struct out *o, uint64_t v);
void out_i64(struct out *o, int64_t v);
/* A real number: JSON "%.17g" (always with a '.' or an exponent, so it reads
 * back as a real; NaN and infinities become null), MessagePack float 64. */
void out_f64(struct out *o, double v);
void out_bool(struct out *o, bool v);
void out_null(struct out *o);
/* Message bytes: JSON int array / MessagePack bin by default; with
 * VALUE_UTF8 a string (invalid UTF-8 replaced by U+FFFD in JSON), with
 * VALUE_BASE64 a base64 string (standard alphabet, padded). */
void out_bytes(struct out *o, const uint8_t *p, size_t n, enum value_encoding enc);
/* Writes a parsed tree (VAL_BIN as out_bytes with VALUE_DEFAULT). Writing
 * what codec_parse_* returned and parsing the result gives an equal tree
 * (for JSON: a tree that came from JSON). */
void out_val(struct out *o, const struct val *v);
/* 0 when the document is complete and consistent (every container got
 * exactly its declared elements), else the sticky error. */
int out_finish(struct out *o);

#endif
