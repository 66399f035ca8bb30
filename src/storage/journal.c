/*
 * journal.c — the journal interface's dispatch, the fsync policy names, and
 * the record/segment-header codec shared by every reader of journal files
 * (the file journal, the checker, the fuzzers). Format: docs/storage.md.
 *
 * Record header (20 bytes, little-endian):
 *   0 u32 body length   4 u32 CRC-32C   8 u8 type   9 u8 flags (0)
 *   10 u16 reserved (0) 12 u64 timestamp_ms
 * The CRC covers the record's position (u64), header bytes 0..3 and 8..19,
 * and the body: a record copied to another position does not verify, so stale
 * bytes of an earlier, abandoned tail can never pass for a record.
 */
#include "storage/journal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crc32c.h"
#include "coyote.h"

int journal_appendv(struct journal *j, uint8_t type, uint64_t ts, const struct iovec *iov,
                    int iovcnt, uint64_t *pos, uint64_t *end)
{
    return j->ops->appendv(j, type, ts, iov, iovcnt, pos, end);
}
uint64_t journal_end(struct journal *j) { return j->ops->end(j); }
uint64_t journal_durable(struct journal *j) { return j->ops->durable(j); }
uint64_t journal_start(struct journal *j) { return j->ops->start(j); }
uint64_t journal_last_timestamp(struct journal *j) { return j->ops->last_timestamp(j); }
int journal_error(struct journal *j) { return j->ops->error(j); }
enum journal_fsync journal_policy(struct journal *j) { return j->ops->policy(j); }
int journal_wait_durable(struct journal *j, uint64_t pos, int timeout_ms)
{
    return j->ops->wait_durable(j, pos, timeout_ms);
}
int journal_sync(struct journal *j) { return j->ops->sync(j); }
int journal_read(struct journal *j, uint64_t pos, struct buf *scratch, struct journal_record *rec)
{
    return j->ops->read(j, pos, scratch, rec);
}
int journal_read_raw(struct journal *j, uint64_t pos, void *dst, size_t n)
{
    return j->ops->read_raw(j, pos, dst, n);
}
int journal_scan(struct journal *j, uint64_t from, uint64_t to,
                 int (*cb)(void *arg, const struct journal_record *rec), void *arg)
{
    return j->ops->scan(j, from, to, cb, arg);
}
int journal_delete_before(struct journal *j, uint64_t pos) { return j->ops->delete_before(j, pos); }
int journal_segments(struct journal *j, struct journal_segment_info *out, int max)
{
    return j->ops->segments(j, out, max);
}
void journal_get_stats(struct journal *j, struct journal_stats *out) { j->ops->get_stats(j, out); }
int journal_close(struct journal *j)
{
    return j ? j->ops->close(j) : 0;
}

int journal_fsync_parse(const char *s, enum journal_fsync *policy, uint32_t *interval_ms)
{
    if (strcmp(s, "always") == 0) {
        *policy = JOURNAL_FSYNC_ALWAYS;
        *interval_ms = 0;
        return 0;
    }
    if (strcmp(s, "never") == 0) {
        *policy = JOURNAL_FSYNC_NEVER;
        *interval_ms = 0;
        return 0;
    }
    if (strncmp(s, "interval=", 9) == 0) {
        const char *num = s + 9;
        char *endp;
        errno = 0;
        unsigned long v = strtoul(num, &endp, 10);
        if (*num < '0' || *num > '9' || *endp || errno || v < 1 || v > 60000)
            return CY_EINVAL;
        *policy = JOURNAL_FSYNC_INTERVAL;
        *interval_ms = (uint32_t)v;
        return 0;
    }
    return CY_EINVAL;
}

const char *journal_fsync_name(enum journal_fsync policy, uint32_t interval_ms, char *buf,
                               size_t len)
{
    switch (policy) {
    case JOURNAL_FSYNC_ALWAYS: snprintf(buf, len, "always"); break;
    case JOURNAL_FSYNC_NEVER: snprintf(buf, len, "never"); break;
    case JOURNAL_FSYNC_INTERVAL: snprintf(buf, len, "interval=%" PRIu32, interval_ms); break;
    }
    return buf;
}

void journal_segment_name(uint64_t base, char *buf, size_t len)
{
    snprintf(buf, len, "%020" PRIu64 ".seg", base);
}

/* Segment header (64 bytes):
 *   0 u32 magic "CYJL"   4 u16 version   6 u16 header size (64)
 *   8 u64 base position  16 u64 first record timestamp  24 u64 capacity
 *   32 u32 CRC-32C of bytes 0..31     36 u32 reserved
 *   40 u64 durable hint  48 u32 CRC-32C of bytes 40..47  52..63 reserved
 * The hint is rewritten in place at most every HINT_EVERY_MS (20 ms) before a sync, and at a clean close with a position an earlier
 * sync proved durable; it has its own checksum because it changes. */
int journal_segment_header_decode(const uint8_t *p, size_t n, struct journal_segment_header *h)
{
    if (n < JOURNAL_SEGMENT_HEADER)
        return CY_EFORMAT;
    /* A header that never reached the disk (a preallocated file whose first
     * block was not written) is damage, not a foreign format. */
    bool zero = true;
    for (size_t i = 0; i < JOURNAL_SEGMENT_HEADER && zero; i++)
        zero = p[i] == 0;
    if (zero)
        return CY_ECORRUPT;
    if (le_get32(p) != JOURNAL_SEGMENT_MAGIC)
        return CY_EFORMAT;
    if (le_get16(p + 4) != JOURNAL_FORMAT_VERSION || le_get16(p + 6) != JOURNAL_SEGMENT_HEADER)
        return CY_EFORMAT;
    if (crc32c(0, p, 32) != le_get32(p + 32))
        return CY_ECORRUPT;
    h->base = le_get64(p + 8);
    h->first_timestamp = le_get64(p + 16);
    h->capacity = le_get64(p + 24);
    h->hint_valid = crc32c(0, p + 40, 8) == le_get32(p + 48);
    h->durable_hint = h->hint_valid ? le_get64(p + 40) : 0;
    return 0;
}

static uint32_t record_crc(uint64_t pos, const uint8_t *hdr, const struct iovec *iov, int iovcnt)
{
    uint8_t posb[8];
    le_put64(posb, pos);
    uint32_t c = crc32c(0, posb, 8);
    c = crc32c(c, hdr, 4);
    c = crc32c(c, hdr + 8, JOURNAL_RECORD_HEADER - 8);
    for (int i = 0; i < iovcnt; i++)
        c = crc32c(c, iov[i].iov_base, iov[i].iov_len);
    return c;
}

void journal_record_header_encode(uint8_t hdr[JOURNAL_RECORD_HEADER], uint64_t pos, uint8_t type,
                                  uint64_t timestamp_ms, const struct iovec *iov, int iovcnt,
                                  uint32_t len)
{
    le_put32(hdr, len);
    hdr[8] = type;
    hdr[9] = 0;
    le_put16(hdr + 10, 0);
    le_put64(hdr + 12, timestamp_ms);
    le_put32(hdr + 4, record_crc(pos, hdr, iov, iovcnt));
}

int journal_record_decode(const uint8_t *p, size_t n, uint64_t pos, struct journal_record *rec)
{
    if (n < JOURNAL_RECORD_HEADER) {
        /* A short all-zero remainder is the clean end too. */
        for (size_t i = 0; i < n; i++)
            if (p[i])
                return -EAGAIN;
        return n ? 1 : -EAGAIN;
    }
    static const uint8_t zero[JOURNAL_RECORD_HEADER];
    if (memcmp(p, zero, JOURNAL_RECORD_HEADER) == 0)
        return 1;
    uint32_t len = le_get32(p);
    uint8_t type = p[8];
    if (type == 0 || p[9] != 0 || le_get16(p + 10) != 0 || len > JOURNAL_MAX_BODY)
        return CY_ECORRUPT;
    if (len > n - JOURNAL_RECORD_HEADER)
        return -EAGAIN;
    struct iovec iov = {(void *)(p + JOURNAL_RECORD_HEADER), len};
    if (record_crc(pos, p, &iov, 1) != le_get32(p + 4))
        return CY_ECORRUPT;
    rec->pos = pos;
    rec->next = pos + JOURNAL_RECORD_HEADER + len;
    rec->type = type;
    rec->timestamp_ms = le_get64(p + 12);
    rec->body = p + JOURNAL_RECORD_HEADER;
    rec->len = len;
    return 0;
}
