/*
 * fuzz_msgrec.c — libFuzzer target for msgrec_decode, the parser of publish
 * record bodies (src/storage/msgrec.c), and a round trip through
 * msgrec_encode.
 *
 * Invariants checked (abort() when broken):
 *   1. Whatever the bytes: no crash, no read outside the input, and the
 *      result is 0 or CY_ECORRUPT.
 *   2. On success every message handed to the callback lies inside the input
 *      at its body_offset, and its crc is the CRC-32C of its bytes.
 *   3. On success the framing read independently here (msgrec.h's layout)
 *      agrees with the callback: the same messages, in order, each with its
 *      part's id and first_offset + k.
 *   4. On success, re-encoding exactly the decoded sequence of parts (ids may
 *      repeat, parts may be empty) and the extra bytes gives back the input
 *      byte for byte, and the encoder's locs match the decoder's offsets.
 *   5. A callback's non-zero return stops the walk and is returned as is.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crc32c.h"
#include "coyote.h"
#include "storage/msgrec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define STOP_CODE 7

struct seen_msg {
    uint64_t part_id;
    uint64_t offset;
    struct msgrec_msg msg;
};

struct collect {
    const uint8_t *input;
    size_t size;
    struct seen_msg *msgs; /* room for size / 12 + 1 messages: each takes >= 12 bytes */
    size_t count;
    size_t cap;
    size_t stop_at; /* SIZE_MAX: never stop */
    uint32_t crc;   /* of every message byte, so the reads are not optimized away */
};

static int collect_msg(void *arg, uint64_t part_id, uint64_t offset, const struct msgrec_msg *m)
{
    struct collect *c = arg;
    if (c->count == c->stop_at)
        return STOP_CODE;
    if (c->count == c->cap)
        abort(); /* more messages than the bytes can hold */
    if (m->len > c->size || m->data < c->input || (size_t)(m->data - c->input) > c->size - m->len)
        abort();
    if ((size_t)(m->data - c->input) != m->body_offset)
        abort();
    if (crc32c(0, m->data, m->len) != m->crc)
        abort();
    c->crc = crc32c(c->crc, m->data, m->len);
    c->msgs[c->count].part_id = part_id;
    c->msgs[c->count].offset = offset;
    c->msgs[c->count].msg = *m;
    c->count++;
    return 0;
}

/* Reads the part framing of a body msgrec_decode accepted and builds the
 * part list for the encoder, pointing into c->msgs. Aborts when the framing
 * and the callback disagree (invariant 3). Returns the part count. */
static size_t rebuild_parts(const uint8_t *data, size_t size, struct collect *c,
                            struct msgrec_part *parts, size_t max_parts)
{
    if (size < 4)
        abort();
    uint32_t nparts = le_get32(data);
    size_t at = 4, next_msg = 0;
    if (nparts > max_parts)
        abort();
    for (uint32_t i = 0; i < nparts; i++) {
        if (size - at < 20)
            abort();
        parts[i].part_id = le_get64(data + at);
        parts[i].first_offset = le_get64(data + at + 8);
        parts[i].count = le_get32(data + at + 16);
        at += 20;
        if (parts[i].count > c->count - next_msg)
            abort();
        parts[i].msgs = NULL;
        for (uint32_t k = 0; k < parts[i].count; k++) {
            const struct seen_msg *s = &c->msgs[next_msg + k];
            if (s->part_id != parts[i].part_id || s->offset != parts[i].first_offset + k)
                abort();
            if (s->msg.body_offset != at + 12)
                abort();
            at += 12 + (size_t)s->msg.len;
            if (at > size)
                abort();
        }
        next_msg += parts[i].count;
    }
    if (next_msg != c->count)
        abort();
    return nparts;
}

static void round_trip(const uint8_t *data, size_t size, struct collect *c, const uint8_t *extra,
                       uint32_t extra_len)
{
    size_t max_parts = size / 20 + 1;
    if (max_parts > MSGREC_MAX_PARTS)
        max_parts = MSGREC_MAX_PARTS;
    struct msgrec_part *parts = calloc(max_parts, sizeof *parts);
    struct msgrec_msg *msgs = calloc(c->count + 1, sizeof *msgs);
    struct msgrec_loc *locs = calloc(c->count + 1, sizeof *locs);
    struct buf out = BUF_INIT;
    if (!parts || !msgs || !locs)
        abort();
    size_t nparts = rebuild_parts(data, size, c, parts, max_parts);
    for (size_t i = 0; i < c->count; i++)
        msgs[i] = c->msgs[i].msg;
    size_t next_msg = 0;
    for (size_t i = 0; i < nparts; i++) {
        parts[i].msgs = msgs + next_msg;
        next_msg += parts[i].count;
    }
    if (extra_len > size || extra < data || (size_t)(extra - data) != size - extra_len)
        abort();

    msgrec_encode(&out, parts, nparts, extra, extra_len, locs);
    if (buf_err(&out) || out.len != size || memcmp(out.data, data, size) != 0)
        abort();
    for (size_t i = 0; i < c->count; i++)
        if (locs[i].body_offset != msgs[i].body_offset || locs[i].crc != msgs[i].crc)
            abort();

    buf_free(&out);
    free(locs);
    free(msgs);
    free(parts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct collect c = {data, size, NULL, 0, size / 12 + 1, SIZE_MAX, 0};
    c.msgs = calloc(c.cap, sizeof *c.msgs);
    if (!c.msgs)
        abort();

    const uint8_t *extra = NULL;
    uint32_t extra_len = 0;
    int rc = msgrec_decode(data, size, collect_msg, &c, &extra, &extra_len);
    if (rc != 0 && rc != CY_ECORRUPT)
        abort();

    /* Without a callback the verdict is the same. */
    if (msgrec_decode(data, size, NULL, NULL, NULL, NULL) != rc)
        abort();

    if (rc == 0) {
        round_trip(data, size, &c, extra, extra_len);
        /* Stopping halfway: the callback's code comes back unchanged. */
        if (c.count > 0) {
            struct collect stop = c;
            stop.count = 0;
            stop.stop_at = c.count / 2;
            if (msgrec_decode(data, size, collect_msg, &stop, NULL, NULL) != STOP_CODE)
                abort();
        }
    }

    volatile uint32_t sink = c.crc;
    (void)sink;
    free(c.msgs);
    return 0;
}
