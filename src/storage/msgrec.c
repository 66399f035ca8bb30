/* msgrec.c — encode and decode publish record bodies (see msgrec.h). */
#include "storage/msgrec.h"

#include "base/crc32c.h"
#include "coyote.h"

void msgrec_encode(struct buf *out, const struct msgrec_part *parts, size_t nparts,
                   const void *extra, uint32_t extra_len, struct msgrec_loc *locs)
{
    size_t start = out->len;
    buf_put_u32(out, (uint32_t)nparts);
    for (size_t i = 0; i < nparts; i++) {
        const struct msgrec_part *p = &parts[i];
        buf_put_u64(out, p->part_id);
        buf_put_u64(out, p->first_offset);
        buf_put_u32(out, p->count);
        for (uint32_t k = 0; k < p->count; k++) {
            const struct msgrec_msg *m = &p->msgs[k];
            buf_put_u32(out, m->len);
            buf_put_u32(out, m->key_hash);
            uint32_t crc = crc32c(0, m->data, m->len);
            buf_put_u32(out, crc);
            if (locs) {
                locs->body_offset = (uint32_t)(out->len - start);
                locs->crc = crc;
                locs++;
            }
            buf_put(out, m->data, m->len);
        }
    }
    buf_put_blob(out, extra, extra_len);
}

int msgrec_decode(const uint8_t *body, size_t len,
                  int (*cb)(void *arg, uint64_t part_id, uint64_t offset,
                            const struct msgrec_msg *msg),
                  void *arg, const uint8_t **extra, uint32_t *extra_len)
{
    struct reader r;
    reader_init(&r, body, len);
    uint32_t nparts = rd_u32(&r);
    if (r.err || nparts > MSGREC_MAX_PARTS)
        return CY_ECORRUPT;
    for (uint32_t i = 0; i < nparts; i++) {
        uint64_t part_id = rd_u64(&r);
        uint64_t first = rd_u64(&r);
        uint32_t count = rd_u32(&r);
        if (r.err || first > UINT64_MAX - count)
            return CY_ECORRUPT;
        /* each message takes at least 12 bytes: reject impossible counts early */
        if ((uint64_t)count * 12 > reader_left(&r))
            return CY_ECORRUPT;
        for (uint32_t k = 0; k < count; k++) {
            struct msgrec_msg m;
            m.len = rd_u32(&r);
            m.key_hash = rd_u32(&r);
            m.crc = rd_u32(&r);
            m.body_offset = (uint32_t)r.pos;
            m.data = rd_bytes(&r, m.len);
            if (!m.data || crc32c(0, m.data, m.len) != m.crc)
                return CY_ECORRUPT;
            if (cb) {
                int rc = cb(arg, part_id, first + k, &m);
                if (rc)
                    return rc;
            }
        }
    }
    uint32_t n;
    const uint8_t *x = rd_blob(&r, &n);
    if (r.err || reader_left(&r) != 0)
        return CY_ECORRUPT;
    if (extra)
        *extra = x;
    if (extra_len)
        *extra_len = n;
    return 0;
}
