/*
 * fuzz_snapshot.c — libFuzzer target for snapshot_decode, the parser of
 * checkpoint files read back from disk (src/storage/snapshot.c).
 *
 * Whatever the bytes: no crash, no read outside the input, and on success
 * every section lies inside the input. Touching each section's bytes (CRC)
 * lets ASan see a section that points past the buffer.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/crc32c.h"
#include "coyote.h"
#include "storage/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct snapshot s;
    int rc = snapshot_decode(data, size, &s);
    if (rc != 0) {
        if (rc != CY_ECORRUPT && rc != CY_EFORMAT)
            abort();
        return 0;
    }
    if (s.n_sections > SNAPSHOT_MAX_SECTIONS || s.raw != NULL)
        abort();
    /* Header, trailer and per-section framing are at least this big. */
    uint64_t framed = 48 + 8;
    uint32_t crc = 0;
    for (size_t i = 0; i < s.n_sections; i++) {
        const struct snapshot_section *sec = &s.sections[i];
        if (sec->len > size || sec->data < data || (size_t)(sec->data - data) > size - sec->len)
            abort();
        crc = crc32c(crc, sec->data, (size_t)sec->len);
        framed += 12 + sec->len + 4;
    }
    if (framed != size)
        abort();
    /* Keep the checksum observable so the reads are not optimized away. */
    volatile uint32_t sink = crc;
    (void)sink;
    return 0;
}
