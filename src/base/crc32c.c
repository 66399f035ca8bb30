/*
 * crc32c.c — CRC-32C with a slicing-by-8 table and an SSE4.2 path.
 *
 * The hardware path is chosen once at first use (cpuid through
 * __builtin_cpu_supports); both paths produce identical results, which the
 * unit tests check on random buffers of every alignment.
 */
#include "base/crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = table[0][n];
        for (int t = 1; t < 8; t++) {
            c = table[0][c & 0xff] ^ (c >> 8);
            table[t][n] = c;
        }
    }
}

uint32_t crc32c_sw(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;
    pthread_once(&table_once, table_init);
    crc = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc; /* little-endian host: the low byte is the first in memory */
        crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
              table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^
              table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *data,
                                                            size_t len)
{
    const uint8_t *p = data;
    uint64_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        len -= 8;
    }
    while (len--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

int crc32c_hw_available(void)
{
    return __builtin_cpu_supports("sse4.2");
}

uint32_t crc32c(uint32_t crc, const void *data, size_t len)
{
    static int hw = -1; /* racing first calls all store the same value */
    int use = __atomic_load_n(&hw, __ATOMIC_RELAXED);
    if (use < 0) {
        use = crc32c_hw_available();
        __atomic_store_n(&hw, use, __ATOMIC_RELAXED);
    }
    return use ? crc32c_hw(crc, data, len) : crc32c_sw(crc, data, len);
}
#else
int crc32c_hw_available(void)
{
    return 0;
}

uint32_t crc32c(uint32_t crc, const void *data, size_t len)
{
    return crc32c_sw(crc, data, len);
}
#endif
