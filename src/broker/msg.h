/*
 * msg.h — how one message is stored (the opaque bytes of a msgrec message):
 *
 *   u8  flags            bit0: has key, bit1: has scheduled_at
 *   u64 scheduled_at     (present when bit1)
 *   u32 key_len, key     (present when bit0)
 *   u16 header_count, then each: u32 name_len, name, u32 value_len, value
 *   u32 value_len, value
 *
 * Little-endian; the publish time is the journal record's timestamp.
 */
#ifndef COYOTE_BROKER_MSG_H
#define COYOTE_BROKER_MSG_H

#include "base/buf.h"
#include "broker/broker.h"

/* Encode m (scheduled_at: 0 when !has_scheduled) into out. */
void msg_encode(struct buf *out, const struct broker_msg_in *m, uint64_t scheduled_at);
/* Decode bytes into o (value/key/header strings point into `data`; headers
 * into hdrs, which must have room for max_headers). CY_ECORRUPT when
 * malformed. o->partition/offset/timestamp/attempt are left alone. */
int msg_decode(const uint8_t *data, size_t len, struct broker_msg_out *o,
               struct broker_header *hdrs, size_t max_headers);
/* Only the number of headers (0 when malformed), cheaply. */
size_t msg_header_count(const uint8_t *data, size_t len);
/* Only the scheduled time (0: none), cheaply. */
int msg_scheduled_at(const uint8_t *data, size_t len, uint64_t *scheduled_at);
/* The key hash kept in the index (FIFO ordering): CRC-32C of the key, never 0
 * for a keyed message; 0 means "no key". */
uint32_t msg_key_hash(const char *key, size_t len);
/* djb2 (API.md §5): h = 5381; h = h * 33 + byte, wrapping u32. */
uint32_t djb2(const char *p, size_t n);

#endif
