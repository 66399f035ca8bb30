/*
 * msgrec.h — the body of a JREC_PUBLISH journal record: the messages of one
 * atomic publish, grouped by partition, plus opaque bytes for the layer above
 * (the broker's idempotency key, for instance).
 *
 *   u32 part_count
 *   part_count × { u64 part_id  u64 first_offset  u32 msg_count
 *                  msg_count × { u32 len  u32 key_hash  u32 crc  bytes[len] } }
 *   u32 extra_len  bytes[extra_len]
 *
 * crc is the CRC-32C of the message bytes: the index keeps it, and a read of
 * one message (which does not read the whole record) checks it.
 * All integers little-endian. The decoder never trusts a length.
 */
#ifndef COYOTE_STORAGE_MSGREC_H
#define COYOTE_STORAGE_MSGREC_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define MSGREC_MAX_PARTS 4096

struct msgrec_msg {
    const uint8_t *data;
    uint32_t len;
    uint32_t key_hash;
    uint32_t crc;         /* filled by the decoder; ignored by the encoder */
    uint32_t body_offset; /* decoder: offset of data within the record body */
};

struct msgrec_part {
    uint64_t part_id;
    uint64_t first_offset;
    uint32_t count;
    const struct msgrec_msg *msgs; /* encoder input */
};

/* Where the encoder put one message: offset of its bytes in the body, CRC. */
struct msgrec_loc {
    uint32_t body_offset;
    uint32_t crc;
};

/* Append the encoding of parts + extra to out (sticky buf error on OOM). If
 * locs is not NULL it receives one entry per message, in order (parts[0]'s
 * messages first); body offsets are relative to out->len at the call. */
void msgrec_encode(struct buf *out, const struct msgrec_part *parts, size_t nparts,
                   const void *extra, uint32_t extra_len, struct msgrec_loc *locs);

/* Walk a body: for each message call cb(arg, part_id, offset, msg); a
 * non-zero return stops the walk and is returned. extra and extra_len receive
 * the trailing bytes (may be NULL). 0, or CY_ECORRUPT for any inconsistency
 * (lengths, counts, message checksums, trailing garbage, offset overflow). */
int msgrec_decode(const uint8_t *body, size_t len,
                  int (*cb)(void *arg, uint64_t part_id, uint64_t offset,
                            const struct msgrec_msg *msg),
                  void *arg, const uint8_t **extra, uint32_t *extra_len);

#endif
