/*
 * fuzz_segment.c — libFuzzer target for the journal's on-disk codec
 * (src/storage/journal.c): the input is the image of one segment file. Its
 * 64-byte header goes through journal_segment_header_decode, then records are
 * walked from file offset 64 with journal_record_decode, the way recovery and
 * coyote-check read them, and the body of every publish record goes through
 * msgrec_decode (src/storage/msgrec.c).
 *
 * The walk runs whether or not the header decodes (with base 0 when it does
 * not), so most inputs reach the record decoder.
 *
 * Invariants checked (abort() when broken):
 *   1. Whatever the bytes: no crash, no read outside the input; every decoder
 *      returns one of its documented codes.
 *   2. A decoded record: type != 0, len <= JOURNAL_MAX_BODY, body inside the
 *      input right after its 20-byte header, pos as asked and
 *      next == pos + 20 + len.
 *   3. A decoded header whose hint fails its checksum reports hint 0.
 *   4. msgrec_decode hands out messages inside the record body only (the body
 *      is copied into a block of exactly its size so ASan sees any overread).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/crc32c.h"
#include "coyote.h"
#include "storage/journal.h"
#include "storage/msgrec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct body_view {
    const uint8_t *body;
    size_t len;
    uint32_t crc; /* of every byte touched, so the reads are not optimized away */
};

static int touch_msg(void *arg, uint64_t part_id, uint64_t offset, const struct msgrec_msg *m)
{
    struct body_view *v = arg;
    if (m->len > v->len || m->data < v->body || (size_t)(m->data - v->body) > v->len - m->len)
        abort();
    if ((size_t)(m->data - v->body) != m->body_offset)
        abort();
    v->crc = crc32c(v->crc, m->data, m->len);
    return 0;
}

static uint32_t check_publish(const struct journal_record *rec)
{
    /* An exact-size copy: inside the input the body is followed by the next
     * record, where an overread would go unnoticed. */
    uint8_t *copy = malloc(rec->len ? rec->len : 1);
    if (!copy)
        abort();
    memcpy(copy, rec->body, rec->len);
    struct body_view v = {copy, rec->len, 0};
    const uint8_t *extra = NULL;
    uint32_t extra_len = 0;
    int rc = msgrec_decode(copy, rec->len, touch_msg, &v, &extra, &extra_len);
    if (rc != 0 && rc != CY_ECORRUPT)
        abort();
    if (rc == 0) {
        if (extra_len > rec->len || extra < copy || (size_t)(extra - copy) != rec->len - extra_len)
            abort();
        v.crc = crc32c(v.crc, extra, extra_len);
    }
    free(copy);
    return v.crc;
}

/* Walks records from file offset 64, positions starting at base. */
static uint32_t walk_records(const uint8_t *data, size_t size, uint64_t base)
{
    uint32_t crc = 0;
    size_t off = JOURNAL_SEGMENT_HEADER;
    uint64_t pos = base;
    while (off <= size) {
        struct journal_record rec;
        int rc = journal_record_decode(data + off, size - off, pos, &rec);
        if (rc != 0) {
            if (rc != 1 && rc != CY_ECORRUPT && rc != -EAGAIN)
                abort();
            break;
        }
        if (rec.type == 0 || rec.len > JOURNAL_MAX_BODY || rec.pos != pos)
            abort();
        if (rec.next != pos + JOURNAL_RECORD_HEADER + rec.len)
            abort();
        if (rec.body != data + off + JOURNAL_RECORD_HEADER ||
            rec.len > size - off - JOURNAL_RECORD_HEADER)
            abort();
        crc = crc32c(crc, rec.body, rec.len);
        if (rec.type == JREC_PUBLISH)
            crc ^= check_publish(&rec);
        off += JOURNAL_RECORD_HEADER + (size_t)rec.len;
        pos = rec.next;
    }
    return crc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct journal_segment_header h;
    memset(&h, 0, sizeof h);
    int rc = journal_segment_header_decode(data, size, &h);
    if (rc != 0 && rc != CY_EFORMAT && rc != CY_ECORRUPT)
        abort();
    if (rc == 0 && !h.hint_valid && h.durable_hint != 0)
        abort();
    uint64_t base = rc == 0 ? h.base : 0;

    uint32_t crc = 0;
    if (size >= JOURNAL_SEGMENT_HEADER)
        crc = walk_records(data, size, base);

    volatile uint32_t sink = crc;
    (void)sink;
    return 0;
}
