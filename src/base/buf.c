/* buf.c — growable byte buffers and the bounds-checked reader (see buf.h). */
#include "base/buf.h"

#include <stdlib.h>

#include "coyote.h"

void buf_init(struct buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->err = 0;
}

void buf_free(struct buf *b)
{
    free(b->data);
    buf_init(b);
}

int buf_reserve(struct buf *b, size_t extra)
{
    if (b->err)
        return b->err;
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->err = CY_ENOMEM;
        return b->err;
    }
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) {
        b->err = CY_ENOMEM;
        return b->err;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

uint8_t *buf_extend(struct buf *b, size_t n)
{
    /* Reserve at least one byte so data is never NULL: the result of an empty
     * extend is a valid pointer, and NULL always means an error. */
    if (buf_reserve(b, n ? n : 1))
        return NULL;
    uint8_t *p = b->data + b->len;
    b->len += n;
    return p;
}

void buf_put(struct buf *b, const void *p, size_t n)
{
    uint8_t *d = buf_extend(b, n);
    if (d && n)
        memcpy(d, p, n);
}

void buf_put_u8(struct buf *b, uint8_t v)
{
    uint8_t *d = buf_extend(b, 1);
    if (d)
        *d = v;
}

void buf_put_u16(struct buf *b, uint16_t v)
{
    uint8_t *d = buf_extend(b, 2);
    if (d)
        le_put16(d, v);
}

void buf_put_u32(struct buf *b, uint32_t v)
{
    uint8_t *d = buf_extend(b, 4);
    if (d)
        le_put32(d, v);
}

void buf_put_u64(struct buf *b, uint64_t v)
{
    uint8_t *d = buf_extend(b, 8);
    if (d)
        le_put64(d, v);
}

void buf_put_blob(struct buf *b, const void *p, uint32_t n)
{
    buf_put_u32(b, n);
    buf_put(b, p, n);
}

const uint8_t *rd_bytes(struct reader *r, size_t n)
{
    if (r->err || n > r->len - r->pos) {
        r->err = CY_ECORRUPT;
        return NULL;
    }
    if (!r->p) /* an empty reader over NULL: zero bytes at a valid address */
        return (const uint8_t *)"";
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}

uint8_t rd_u8(struct reader *r)
{
    const uint8_t *p = rd_bytes(r, 1);
    return p ? *p : 0;
}

uint16_t rd_u16(struct reader *r)
{
    const uint8_t *p = rd_bytes(r, 2);
    return p ? le_get16(p) : 0;
}

uint32_t rd_u32(struct reader *r)
{
    const uint8_t *p = rd_bytes(r, 4);
    return p ? le_get32(p) : 0;
}

uint64_t rd_u64(struct reader *r)
{
    const uint8_t *p = rd_bytes(r, 8);
    return p ? le_get64(p) : 0;
}

const uint8_t *rd_blob(struct reader *r, uint32_t *n)
{
    uint32_t len = rd_u32(r);
    const uint8_t *p = rd_bytes(r, len);
    *n = p ? len : 0;
    return p;
}
