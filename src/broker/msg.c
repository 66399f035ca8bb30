/* msg.c — the stored form of one message (see msg.h). */
#include "broker/msg.h"

#include "base/crc32c.h"
#include "coyote.h"

enum { MSG_HAS_KEY = 1, MSG_HAS_SCHEDULED = 2 };

void msg_encode(struct buf *out, const struct broker_msg_in *m, uint64_t scheduled_at)
{
    uint8_t flags = (m->has_key ? MSG_HAS_KEY : 0) | (m->has_delay ? MSG_HAS_SCHEDULED : 0);
    buf_put_u8(out, flags);
    if (m->has_delay)
        buf_put_u64(out, scheduled_at);
    if (m->has_key)
        buf_put_blob(out, m->key.p, (uint32_t)m->key.n);
    buf_put_u16(out, (uint16_t)m->n_headers);
    for (size_t i = 0; i < m->n_headers; i++) {
        buf_put_blob(out, m->headers[i].name.p, (uint32_t)m->headers[i].name.n);
        buf_put_blob(out, m->headers[i].value.p, (uint32_t)m->headers[i].value.n);
    }
    buf_put_blob(out, m->value, (uint32_t)m->value_len);
}

int msg_decode(const uint8_t *data, size_t len, struct broker_msg_out *o,
               struct broker_header *hdrs, size_t max_headers)
{
    struct reader r;
    reader_init(&r, data, len);
    uint8_t flags = rd_u8(&r);
    o->has_scheduled_at = flags & MSG_HAS_SCHEDULED;
    o->scheduled_at = o->has_scheduled_at ? rd_u64(&r) : 0;
    o->has_key = flags & MSG_HAS_KEY;
    o->key.p = NULL;
    o->key.n = 0;
    if (o->has_key) {
        uint32_t n;
        o->key.p = (const char *)rd_blob(&r, &n);
        o->key.n = n;
    }
    uint16_t nh = rd_u16(&r);
    if (r.err || nh > max_headers || (flags & ~3))
        return CY_ECORRUPT;
    for (uint16_t i = 0; i < nh; i++) {
        uint32_t a, b;
        hdrs[i].name.p = (const char *)rd_blob(&r, &a);
        hdrs[i].name.n = a;
        hdrs[i].value.p = (const char *)rd_blob(&r, &b);
        hdrs[i].value.n = b;
    }
    o->headers = hdrs;
    o->n_headers = nh;
    uint32_t vn;
    o->value = rd_blob(&r, &vn);
    o->value_len = vn;
    if (r.err || reader_left(&r))
        return CY_ECORRUPT;
    return 0;
}

size_t msg_header_count(const uint8_t *data, size_t len)
{
    struct reader r;
    reader_init(&r, data, len);
    uint8_t flags = rd_u8(&r);
    if (flags & MSG_HAS_SCHEDULED)
        rd_u64(&r);
    if (flags & MSG_HAS_KEY) {
        uint32_t n;
        rd_blob(&r, &n);
    }
    uint16_t nh = rd_u16(&r);
    return r.err ? 0 : nh;
}

int msg_scheduled_at(const uint8_t *data, size_t len, uint64_t *scheduled_at)
{
    struct reader r;
    reader_init(&r, data, len);
    uint8_t flags = rd_u8(&r);
    *scheduled_at = (flags & MSG_HAS_SCHEDULED) ? rd_u64(&r) : 0;
    return r.err;
}

uint32_t msg_key_hash(const char *key, size_t len)
{
    uint32_t h = crc32c(0, key, len);
    return h ? h : 1;
}

uint32_t djb2(const char *p, size_t n)
{
    uint32_t h = 5381;
    for (size_t i = 0; i < n; i++)
        h = h * 33 + (uint8_t)p[i];
    return h;
}
