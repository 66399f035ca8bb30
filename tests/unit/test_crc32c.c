/*
 * test_crc32c.c — CRC-32C against published vectors (RFC 3720 §B.4 and the
 * check value), chaining, and agreement of the hardware, slicing-by-8 and a
 * bit-at-a-time reference on every length 0..300 at every alignment 0..7.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers above, which it needs */

#include <stdio.h>
#include <string.h>

#include "base/crc32c.h"
#include "testutil.h"

/* The definition, one bit at a time: shares no table with the library. */
static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
    }
    return ~crc;
}

/* Both public entry points must agree with an expected value. */
static void expect_crc(const void *data, size_t n, uint32_t want)
{
    assert_int_equal(crc32c(0, data, n), want);
    assert_int_equal(crc32c_sw(0, data, n), want);
    assert_int_equal(crc_bitwise(0, data, n), want);
}

static void test_check_value(void **state)
{
    expect_crc("123456789", 9, 0xE3069283u);
}

/* RFC 3720 (iSCSI) appendix B.4. */
static void test_rfc3720_vectors(void **state)
{
    uint8_t b[48];

    memset(b, 0x00, 32);
    expect_crc(b, 32, 0x8A9136AAu);

    memset(b, 0xFF, 32);
    expect_crc(b, 32, 0x62A8AB43u);

    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)i;
    expect_crc(b, 32, 0x46DD794Eu);

    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)(31 - i);
    expect_crc(b, 32, 0x113FDB5Cu);

    /* an iSCSI SCSI Read (10) command PDU */
    static const uint8_t pdu[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    };
    expect_crc(pdu, sizeof pdu, 0xD9963A56u);
}

static void test_empty_input(void **state)
{
    assert_int_equal(crc32c(0, "", 0), 0);
    assert_int_equal(crc32c_sw(0, "", 0), 0);
    assert_int_equal(crc32c(0, NULL, 0), 0);
    assert_int_equal(crc32c_sw(0, NULL, 0), 0);
    /* Feeding nothing leaves a running CRC as it was. */
    assert_int_equal(crc32c(0xE3069283u, "", 0), 0xE3069283u);
    assert_int_equal(crc32c_sw(0xDEADBEEFu, "", 0), 0xDEADBEEFu);
}

static void test_chaining(void **state)
{
    uint8_t buf[1024];
    uint64_t rng = 7;
    tu_fill(&rng, buf, sizeof buf);
    uint32_t whole = crc32c(0, buf, sizeof buf);
    assert_int_equal(whole, crc_bitwise(0, buf, sizeof buf));
    for (size_t cut = 0; cut <= sizeof buf; cut += (cut < 40 ? 1 : 37)) {
        assert_int_equal(crc32c(crc32c(0, buf, cut), buf + cut, sizeof buf - cut), whole);
        assert_int_equal(crc32c_sw(crc32c_sw(0, buf, cut), buf + cut, sizeof buf - cut), whole);
    }
    /* three pieces, mixing the two paths */
    uint32_t c = crc32c(0, buf, 100);
    c = crc32c_sw(c, buf + 100, 333);
    c = crc32c(c, buf + 433, sizeof buf - 433);
    assert_int_equal(c, whole);

    assert_int_equal(crc32c(crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

static void test_paths_agree(void **state)
{
    /* 8 spare bytes in front for the alignments, and the buffer itself
     * 8-aligned so "alignment a" really means address % 8 == a. */
    _Alignas(8) uint8_t buf[8 + 300 + 8];
    uint64_t rng = 0xC0701E;
    if (!crc32c_hw_available())
        print_message("note: no SSE4.2 here; crc32c() is the table path\n");
    for (int round = 0; round < 3; round++) {
        tu_fill(&rng, buf, sizeof buf);
        uint32_t seed = round == 0 ? 0 : (uint32_t)tu_rand(&rng);
        for (size_t align = 0; align < 8; align++) {
            for (size_t len = 0; len <= 300; len++) {
                const uint8_t *p = buf + align;
                uint32_t want = crc_bitwise(seed, p, len);
                assert_int_equal(crc32c_sw(seed, p, len), want);
                assert_int_equal(crc32c(seed, p, len), want);
            }
        }
    }
}

/* A flipped bit anywhere must change the checksum: the property the journal
 * relies on. */
static void test_detects_single_bit_flips(void **state)
{
    uint8_t buf[64];
    uint64_t rng = 99;
    tu_fill(&rng, buf, sizeof buf);
    uint32_t good = crc32c(0, buf, sizeof buf);
    for (size_t bit = 0; bit < sizeof buf * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_not_equal(crc32c(0, buf, sizeof buf), good);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    assert_int_equal(crc32c(0, buf, sizeof buf), good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_value), cmocka_unit_test(test_rfc3720_vectors),
        cmocka_unit_test(test_empty_input), cmocka_unit_test(test_chaining),
        cmocka_unit_test(test_paths_agree), cmocka_unit_test(test_detects_single_bit_flips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
