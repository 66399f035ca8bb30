/*
 * buf.h — growable byte buffers, little-endian encoding, and a bounds-checked
 * reader: the tools every disk format is written and read with (STYLE.md:
 * field by field, little-endian, never a C struct on disk).
 *
 * Errors are sticky: a put that cannot grow the buffer sets b->err = CY_ENOMEM
 * and later puts do nothing; check buf_err() once at the end. A read past the
 * end sets r->err = CY_ECORRUPT and returns zeros / NULL from then on.
 */
#ifndef COYOTE_BASE_BUF_H
#define COYOTE_BASE_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct buf {
    uint8_t *data; /* owned; NULL until the first put */
    size_t len;
    size_t cap;
    int err; /* 0 or CY_ENOMEM, sticky */
};

#define BUF_INIT {NULL, 0, 0, 0}

void buf_init(struct buf *b);
void buf_free(struct buf *b);          /* releases the memory; b is empty again */
static inline void buf_reset(struct buf *b) { b->len = 0; b->err = 0; }
static inline int buf_err(const struct buf *b) { return b->err; }

/* Make room for `extra` more bytes. 0 or CY_ENOMEM (also stored in b->err). */
int buf_reserve(struct buf *b, size_t extra);
/* Append n bytes and return a pointer to them inside b (NULL on error):
 * valid until the next call that may grow b. */
uint8_t *buf_extend(struct buf *b, size_t n);
void buf_put(struct buf *b, const void *p, size_t n);
void buf_put_u8(struct buf *b, uint8_t v);
void buf_put_u16(struct buf *b, uint16_t v);
void buf_put_u32(struct buf *b, uint32_t v);
void buf_put_u64(struct buf *b, uint64_t v);
/* u32 length followed by the bytes. */
void buf_put_blob(struct buf *b, const void *p, uint32_t n);

static inline void le_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void le_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void le_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t le_get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t le_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t le_get64(const uint8_t *p)
{
    return (uint64_t)le_get32(p) | ((uint64_t)le_get32(p + 4) << 32);
}

/* A bounds-checked cursor over bytes it does not own. */
struct reader {
    const uint8_t *p;
    size_t len;
    size_t pos;
    int err; /* 0 or CY_ECORRUPT, sticky */
};

static inline void reader_init(struct reader *r, const void *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->pos = 0;
    r->err = 0;
}
static inline size_t reader_left(const struct reader *r) { return r->err ? 0 : r->len - r->pos; }
/* A pointer to the next n bytes (inside the reader's memory), or NULL and
 * r->err = CY_ECORRUPT when fewer remain. */
const uint8_t *rd_bytes(struct reader *r, size_t n);
uint8_t rd_u8(struct reader *r);
uint16_t rd_u16(struct reader *r);
uint32_t rd_u32(struct reader *r);
uint64_t rd_u64(struct reader *r);
/* A u32 length then that many bytes; *n receives the length. */
const uint8_t *rd_blob(struct reader *r, uint32_t *n);

#endif
