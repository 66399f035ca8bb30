/*
 * fuzz_snapshot.c — libFuzzer target for snapshot_decode, the parser of
 * checkpoint files read back from disk (src/storage/snapshot.c).
 *
 * Whatever the bytes: no crash, no read outside the input, and on success
 * every section lies inside the input. Touching each section's bytes (CRC)
 * lets ASan see a section that points past the buffer.
 *
 * Random bytes almost never carry valid CRC-32Cs, so the parser would only
 * ever be fuzzed up to its first checksum. Each input is therefore decoded
 * twice: as given, and as a copy whose checksums (header, each section it can
 * frame, trailer) were recomputed, which lets mutations reach the structural
 * checks behind them.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crc32c.h"
#include "coyote.h"
#include "storage/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Recompute every checksum of p[0..n) that the framing lets us locate; the
 * walk trusts nothing in p, like the decoder. */
static void fix_crcs(uint8_t *p, size_t n)
{
    if (n < 48)
        return;
    le_put32(p + 44, crc32c(0, p, 44));
    uint32_t n_sections = le_get32(p + 24);
    size_t pos = 48;
    for (uint32_t i = 0; i < n_sections && i <= SNAPSHOT_MAX_SECTIONS; i++) {
        if (n - pos < 16)
            return;
        uint64_t len = le_get64(p + pos + 4);
        if (len > n - pos - 16)
            return;
        size_t end = pos + 12 + (size_t)len;
        le_put32(p + end, crc32c(0, p + pos, end - pos));
        pos = end + 4;
    }
    if (n - pos >= 8)
        le_put32(p + pos + 4, crc32c(0, p, pos));
}

static void check(const uint8_t *data, size_t size)
{
    struct snapshot s;
    int rc = snapshot_decode(data, size, &s);
    if (rc != 0) {
        if (rc != CY_ECORRUPT && rc != CY_EFORMAT)
            abort();
        return;
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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size);
    if (size >= 48) {
        uint8_t *copy = malloc(size); /* exact size: ASan sees overreads */
        if (!copy)
            return 0;
        memcpy(copy, data, size);
        fix_crcs(copy, size);
        check(copy, size);
        free(copy);
    }
    return 0;
}
