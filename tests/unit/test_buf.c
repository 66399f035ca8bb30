/*
 * test_buf.c — the byte buffer and the bounds-checked reader: exact
 * little-endian bytes, round trips, growth, and sticky errors on both sides
 * (a reserve that cannot be satisfied on the writer; every rd_* past the end
 * and a blob whose length lies on the reader).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers above, which it needs */

#include <string.h>

#include "base/buf.h"
#include "coyote.h"
#include "testutil.h"

static void test_le_helpers(void **state)
{
    uint8_t b[8];

    le_put16(b, 0xBEEF);
    assert_int_equal(b[0], 0xEF);
    assert_int_equal(b[1], 0xBE);
    assert_int_equal(le_get16(b), 0xBEEF);

    le_put32(b, 0x01020304u);
    static const uint8_t want32[4] = {0x04, 0x03, 0x02, 0x01};
    assert_memory_equal(b, want32, 4);
    assert_int_equal(le_get32(b), 0x01020304u);

    le_put64(b, 0x0102030405060708ull);
    static const uint8_t want64[8] = {0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01};
    assert_memory_equal(b, want64, 8);
    assert_int_equal(le_get64(b), 0x0102030405060708ull);

    /* High bits survive (no sign extension through int promotion). */
    le_put16(b, 0xFFFF);
    assert_int_equal(le_get16(b), 0xFFFF);
    le_put32(b, 0xFFFFFFFFu);
    assert_int_equal(le_get32(b), 0xFFFFFFFFu);
    le_put64(b, UINT64_MAX);
    assert_int_equal(le_get64(b), UINT64_MAX);
    le_put64(b, 0x8000000000000001ull);
    assert_int_equal(le_get64(b), 0x8000000000000001ull);
    assert_int_equal(b[7], 0x80);
    assert_int_equal(b[0], 0x01);
}

static void test_puts_encode_little_endian(void **state)
{
    struct buf b = BUF_INIT;
    buf_put_u8(&b, 0xAB);
    buf_put_u16(&b, 0x1234);
    buf_put_u32(&b, 0xDEADBEEFu);
    buf_put_u64(&b, 0x0011223344556677ull);
    buf_put_blob(&b, "hey", 3);
    buf_put(&b, "!", 1);
    assert_int_equal(buf_err(&b), 0);

    static const uint8_t want[] = {
        0xAB,                                           /* u8 */
        0x34, 0x12,                                     /* u16 */
        0xEF, 0xBE, 0xAD, 0xDE,                         /* u32 */
        0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00, /* u64 */
        0x03, 0x00, 0x00, 0x00, 'h',  'e',  'y',        /* blob */
        '!',
    };
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
}

static void test_round_trip(void **state)
{
    struct buf b;
    buf_init(&b);
    uint64_t rng = 1;
    uint8_t blob[1000];
    tu_fill(&rng, blob, sizeof blob);

    static const uint64_t edge[] = {0,          1,           0x7F,        0x80,
                                    0xFF,       0x100,       0xFFFF,      0x10000,
                                    0x7FFFFFFF, 0x80000000u, 0xFFFFFFFFu, UINT64_MAX};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        buf_put_u8(&b, (uint8_t)edge[i]);
        buf_put_u16(&b, (uint16_t)edge[i]);
        buf_put_u32(&b, (uint32_t)edge[i]);
        buf_put_u64(&b, edge[i]);
        buf_put_blob(&b, blob, (uint32_t)(i * 83));
    }
    buf_put_blob(&b, NULL, 0);
    assert_int_equal(buf_err(&b), 0);

    struct reader r;
    reader_init(&r, b.data, b.len);
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        assert_int_equal(rd_u8(&r), (uint8_t)edge[i]);
        assert_int_equal(rd_u16(&r), (uint16_t)edge[i]);
        assert_int_equal(rd_u32(&r), (uint32_t)edge[i]);
        assert_int_equal(rd_u64(&r), edge[i]);
        uint32_t n = 12345;
        const uint8_t *p = rd_blob(&r, &n);
        assert_non_null(p);
        assert_int_equal(n, i * 83);
        assert_memory_equal(p, blob, n);
        /* The blob points into the reader's memory, not a copy. */
        assert_true(p >= b.data && p + n <= b.data + b.len);
    }
    uint32_t n = 99;
    assert_non_null(rd_blob(&r, &n));
    assert_int_equal(n, 0);
    assert_int_equal(r.err, 0);
    assert_int_equal(reader_left(&r), 0);
    buf_free(&b);
}

static void test_growth_preserves_contents(void **state)
{
    struct buf b = BUF_INIT;
    uint64_t rng = 3;
    uint8_t chunk[777];
    size_t total = 0;
    uint64_t check_rng = rng;
    for (int i = 0; i < 300; i++) {
        tu_fill(&rng, chunk, sizeof chunk);
        buf_put(&b, chunk, sizeof chunk);
        total += sizeof chunk;
        assert_int_equal(b.len, total);
        assert_true(b.cap >= b.len);
    }
    assert_int_equal(buf_err(&b), 0);
    for (int i = 0; i < 300; i++) {
        tu_fill(&check_rng, chunk, sizeof chunk);
        assert_memory_equal(b.data + (size_t)i * sizeof chunk, chunk, sizeof chunk);
    }

    /* buf_extend hands out the appended region; reserve keeps room. */
    size_t before = b.len;
    uint8_t *p = buf_extend(&b, 10);
    assert_non_null(p);
    assert_ptr_equal(p, b.data + before);
    assert_int_equal(b.len, before + 10);
    assert_int_equal(buf_reserve(&b, 100000), 0);
    assert_true(b.cap - b.len >= 100000);
    uint8_t *data = b.data;
    buf_put(&b, chunk, sizeof chunk); /* fits: no reallocation */
    assert_ptr_equal(b.data, data);

    /* reset keeps the memory for reuse */
    size_t cap = b.cap;
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, cap);
    buf_put_u8(&b, 5);
    assert_int_equal(b.data[0], 5);
    buf_free(&b);
}

static void test_zero_length_puts(void **state)
{
    struct buf b = BUF_INIT;
    buf_put(&b, NULL, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_err(&b), 0);
    assert_int_equal(buf_reserve(&b, 0), 0);
    buf_free(&b);
}

static void test_writer_error_is_sticky(void **state)
{
    struct buf b = BUF_INIT;
    buf_put_u32(&b, 7);
    /* No allocator can satisfy this: the reserve fails without touching
     * the contents. */
    assert_int_equal(buf_reserve(&b, SIZE_MAX), CY_ENOMEM);
    assert_int_equal(buf_err(&b), CY_ENOMEM);
    assert_int_equal(b.len, 4);
    assert_int_equal(le_get32(b.data), 7);

    /* From now on every put is a no-op, even ones that would fit. */
    buf_put_u8(&b, 1);
    buf_put_u16(&b, 1);
    buf_put_u32(&b, 1);
    buf_put_u64(&b, 1);
    buf_put(&b, "x", 1);
    buf_put_blob(&b, "x", 1);
    assert_null(buf_extend(&b, 1));
    assert_int_equal(buf_reserve(&b, 1), CY_ENOMEM);
    assert_int_equal(b.len, 4);
    assert_int_equal(buf_err(&b), CY_ENOMEM);

    /* reset clears the error */
    buf_reset(&b);
    assert_int_equal(buf_err(&b), 0);
    buf_put_u8(&b, 9);
    assert_int_equal(b.len, 1);
    assert_int_equal(b.data[0], 9);
    buf_free(&b);

    /* A huge extend fails the same way on an empty buffer. */
    buf_init(&b);
    assert_null(buf_extend(&b, SIZE_MAX - 3));
    assert_int_equal(buf_err(&b), CY_ENOMEM);
    assert_int_equal(b.len, 0);
    buf_free(&b);
    assert_int_equal(buf_err(&b), 0);
}

/* Each reader, run on a buffer one byte too short for it, must fail with
 * CY_ECORRUPT, return zero, consume nothing, and poison the reader. */
static void test_reader_past_end_is_sticky(void **state)
{
    static const uint8_t data[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    struct reader r;

    for (int which = 0; which < 5; which++) {
        static const size_t need[5] = {1, 2, 4, 8, 5};
        reader_init(&r, data, need[which] - 1);
        uint64_t got = 1;
        switch (which) {
        case 0: got = rd_u8(&r); break;
        case 1: got = rd_u16(&r); break;
        case 2: got = rd_u32(&r); break;
        case 3: got = rd_u64(&r); break;
        case 4: got = rd_bytes(&r, 5) ? 1 : 0; break;
        }
        assert_int_equal(got, 0);
        assert_int_equal(r.err, CY_ECORRUPT);
        assert_int_equal(r.pos, 0);
        assert_int_equal(reader_left(&r), 0);
    }

    /* After an error, even reads that would fit fail. */
    reader_init(&r, data, sizeof data);
    assert_int_equal(rd_u64(&r), 0x0807060504030201ull);
    assert_int_equal(rd_u64(&r), 0x100F0E0D0C0B0A09ull);
    assert_int_equal(r.err, 0);
    assert_int_equal(rd_u8(&r), 0);
    assert_int_equal(r.err, CY_ECORRUPT);

    reader_init(&r, data, sizeof data);
    assert_null(rd_bytes(&r, 17));
    assert_int_equal(r.err, CY_ECORRUPT);
    assert_int_equal(rd_u8(&r), 0);
    assert_int_equal(rd_u16(&r), 0);
    assert_int_equal(rd_u32(&r), 0);
    assert_int_equal(rd_u64(&r), 0);
    assert_null(rd_bytes(&r, 0));
    uint32_t n = 77;
    assert_null(rd_blob(&r, &n));
    assert_int_equal(n, 0);
    assert_int_equal(r.err, CY_ECORRUPT);
    assert_int_equal(reader_left(&r), 0);

    /* Exactly reaching the end is fine; one more byte is not. */
    reader_init(&r, data, 3);
    assert_non_null(rd_bytes(&r, 3));
    assert_int_equal(reader_left(&r), 0);
    assert_int_equal(r.err, 0);
    assert_non_null(rd_bytes(&r, 0));
    assert_int_equal(r.err, 0);
    assert_null(rd_bytes(&r, 1));
    assert_int_equal(r.err, CY_ECORRUPT);

    /* A length that would overflow pos + n must not wrap around. */
    reader_init(&r, data, sizeof data);
    rd_u8(&r);
    assert_null(rd_bytes(&r, SIZE_MAX));
    assert_int_equal(r.err, CY_ECORRUPT);
}

static void test_blob_with_lying_length(void **state)
{
    struct buf b = BUF_INIT;
    buf_put_u32(&b, 100);  /* claims 100 bytes ... */
    buf_put(&b, "abc", 3); /* ... has 3 */
    struct reader r;
    reader_init(&r, b.data, b.len);
    uint32_t n = 5;
    assert_null(rd_blob(&r, &n));
    assert_int_equal(n, 0);
    assert_int_equal(r.err, CY_ECORRUPT);
    assert_int_equal(rd_u8(&r), 0);

    /* a length of 0xFFFFFFFF with nothing behind it */
    buf_reset(&b);
    buf_put_u32(&b, UINT32_MAX);
    reader_init(&r, b.data, b.len);
    assert_null(rd_blob(&r, &n));
    assert_int_equal(r.err, CY_ECORRUPT);

    /* a truncated length field */
    reader_init(&r, b.data, 3);
    assert_null(rd_blob(&r, &n));
    assert_int_equal(n, 0);
    assert_int_equal(r.err, CY_ECORRUPT);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_le_helpers),
        cmocka_unit_test(test_puts_encode_little_endian),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_growth_preserves_contents),
        cmocka_unit_test(test_zero_length_puts),
        cmocka_unit_test(test_writer_error_is_sticky),
        cmocka_unit_test(test_reader_past_end_is_sticky),
        cmocka_unit_test(test_blob_with_lying_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
