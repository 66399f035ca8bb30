/*
 * crc32c.h — CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum
 * of every journal record, index entry and snapshot section.
 *
 * Chainable like zlib's crc32(): start with 0, feed the previous result back:
 *     crc = crc32c(0, a, na); crc = crc32c(crc, b, nb);  ==  crc32c(0, a||b, ...)
 * crc32c(0, "123456789", 9) == 0xE3069283.
 */
#ifndef COYOTE_BASE_CRC32C_H
#define COYOTE_BASE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Uses the SSE4.2 crc32 instruction when the CPU has it, else a table. */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);

/* The portable table implementation (exposed so tests compare both paths). */
uint32_t crc32c_sw(uint32_t crc, const void *data, size_t len);

/* 1 when crc32c() uses the hardware instruction. */
int crc32c_hw_available(void);

#endif
