/*
 * test_err.c — cy_strerror: a distinct sentence for every CY_E* code, the C
 * library's text for negative errno values, and something printable for
 * anything else.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers above, which it needs */

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "coyote.h"

static const int cy_codes[] = {
    CY_OK,      CY_ECORRUPT, CY_EFORMAT, CY_EREADONLY, CY_ENOTFOUND, CY_ELOCKED,
    CY_ETOOBIG, CY_ECLOSED,  CY_ENOMEM,  CY_EINVAL,    CY_ERANGE,
};
#define N_CODES (sizeof cy_codes / sizeof cy_codes[0])

static void test_every_code_has_a_distinct_sentence(void **state)
{
    const char *unknown = cy_strerror(INT_MIN);
    const char *unassigned = cy_strerror(-1999);
    for (size_t i = 0; i < N_CODES; i++) {
        const char *s = cy_strerror(cy_codes[i]);
        assert_non_null(s);
        assert_true(strlen(s) > 3);
        /* not a fallback text */
        assert_string_not_equal(s, unknown);
        assert_string_not_equal(s, unassigned);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, cy_strerror(cy_codes[j]));
    }
}

static void test_codes_are_in_reserved_range(void **state)
{
    for (size_t i = 1; i < N_CODES; i++) {
        assert_true(cy_codes[i] <= -1000);
        assert_true(cy_codes[i] >= -1999);
    }
}

static void test_negative_errno_uses_strerror(void **state)
{
    static const int errs[] = {ENOENT, EIO, ENOSPC, EACCES, EAGAIN, EEXIST, EPIPE, ENOMEM};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        const char *s = cy_strerror(-errs[i]);
        assert_non_null(s);
        assert_string_equal(s, strerror(errs[i]));
    }
    /* -ENOMEM (the errno) and CY_ENOMEM are different codes */
    assert_int_not_equal(-ENOMEM, CY_ENOMEM);
}

static void test_unknown_codes_are_printable(void **state)
{
    static const int odd[] = {1, 42, INT_MAX, INT_MIN, -1000, -1500, -1999, -4096, -100000};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        const char *s = cy_strerror(odd[i]);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_has_a_distinct_sentence),
        cmocka_unit_test(test_codes_are_in_reserved_range),
        cmocka_unit_test(test_negative_errno_uses_strerror),
        cmocka_unit_test(test_unknown_codes_are_printable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
