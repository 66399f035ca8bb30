/*
 * test_clock.c — the broker clock: wall time plus a test offset, never going
 * backwards; clock_advance shifts it by exactly the requested amount relative
 * to the wall clock; clock_observe raises its floor. Assertions bracket the
 * clock between two wall-clock readings, so they hold however slow the
 * machine is. A frozen clock (deterministic tests) moves only by advance.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers above, which it needs */

#include <time.h>

#include "base/clock.h"

static void test_mono_clocks(void **state)
{
    uint64_t prev_ns = clock_mono_ns();
    uint64_t prev_ms = clock_mono_ms();
    for (int i = 0; i < 100000; i++) {
        uint64_t ns = clock_mono_ns();
        uint64_t ms = clock_mono_ms();
        assert_true(ns >= prev_ns);
        assert_true(ms >= prev_ms);
        /* ms is read after ns, so it cannot be behind it */
        assert_true(ms >= ns / 1000000u);
        prev_ns = ns;
        prev_ms = ms;
    }
}

static void test_wall_clock_is_epoch_ms(void **state)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t before = (uint64_t)ts.tv_sec * 1000u;
    uint64_t w = clock_wall_ms();
    /* after 2020-01-01 and within a second of time() */
    assert_true(w > 1577836800000ull);
    assert_true(w + 1000 >= before && w <= before + 2000);
}

static void test_now_follows_wall_clock(void **state)
{
    struct cy_clock c;
    clock_init(&c);
    uint64_t w1 = clock_wall_ms();
    uint64_t now = clock_now_ms(&c);
    uint64_t w2 = clock_wall_ms();
    assert_true(w1 <= now && now <= w2);
}

static void test_now_is_monotonic(void **state)
{
    struct cy_clock c;
    clock_init(&c);
    uint64_t prev = clock_now_ms(&c);
    for (int i = 0; i < 200000; i++) {
        uint64_t now = clock_now_ms(&c);
        assert_true(now >= prev);
        prev = now;
    }
}

static void test_advance_is_exact(void **state)
{
    struct cy_clock c;
    clock_init(&c);
    uint64_t total = 0;
    static const uint64_t steps[] = {1, 999, 60000, 0, 86400000ull, 7};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        uint64_t before = clock_now_ms(&c);
        clock_advance(&c, steps[i]);
        total += steps[i];
        uint64_t w1 = clock_wall_ms();
        uint64_t now = clock_now_ms(&c);
        uint64_t w2 = clock_wall_ms();
        /* exactly `total` ahead of the wall clock ... */
        assert_true(w1 + total <= now && now <= w2 + total);
        /* ... and at least `step` ahead of the last reading */
        assert_true(now >= before + steps[i]);
    }
}

static void test_advance_without_reading_in_between(void **state)
{
    struct cy_clock c;
    clock_init(&c);
    clock_advance(&c, 1000);
    clock_advance(&c, 2000);
    uint64_t w1 = clock_wall_ms();
    uint64_t now = clock_now_ms(&c);
    uint64_t w2 = clock_wall_ms();
    assert_true(w1 + 3000 <= now && now <= w2 + 3000);
}

static void test_frozen_clock_moves_only_by_advance(void **state)
{
    (void)state;
    struct cy_clock c;
    clock_init(&c);
    uint64_t w1 = clock_wall_ms();
    clock_freeze(&c);
    uint64_t w2 = clock_wall_ms();
    uint64_t t0 = clock_now_ms(&c);
    assert_true(w1 <= t0 && t0 <= w2);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_int_equal(clock_now_ms(&c), t0); /* wall time passed, this clock did not */
    clock_advance(&c, 1500);
    assert_int_equal(clock_now_ms(&c), t0 + 1500);
    clock_observe(&c, t0 + 9000); /* a replayed timestamp still raises the floor */
    assert_int_equal(clock_now_ms(&c), t0 + 9000);
}

static void test_observe_raises_floor(void **state)
{
    struct cy_clock c;
    clock_init(&c);
    uint64_t future = clock_wall_ms() + 3600000ull; /* an hour ahead */
    clock_observe(&c, future);
    /* The wall clock is behind the observed value: now holds at it. */
    assert_int_equal(clock_now_ms(&c), future);
    assert_int_equal(clock_now_ms(&c), future);

    /* Observing something older changes nothing. */
    clock_observe(&c, 5);
    assert_int_equal(clock_now_ms(&c), future);

    /* Advancing moves on from the floor, not from the wall clock. */
    clock_advance(&c, 10);
    assert_true(clock_now_ms(&c) >= future + 10);

    /* A past value (recovery of an old journal) does not pull the clock
     * back to it either. */
    struct cy_clock d;
    clock_init(&d);
    uint64_t w1 = clock_wall_ms();
    clock_observe(&d, w1 - 60000);
    uint64_t now = clock_now_ms(&d);
    assert_true(now >= w1);
}

/* A system clock that steps back is simulated by an observed value ahead of
 * it: the broker clock stays put until the wall clock catches up, then
 * follows it again. */
static void test_stays_put_until_wall_catches_up(void **state)
{
    struct cy_clock c;
    clock_init(&c);
    uint64_t floor = clock_wall_ms() + 30;
    clock_observe(&c, floor);
    uint64_t now;
    do {
        now = clock_now_ms(&c);
        assert_true(now >= floor);
    } while (clock_wall_ms() <= floor + 5);
    uint64_t w1 = clock_wall_ms();
    now = clock_now_ms(&c);
    uint64_t w2 = clock_wall_ms();
    assert_true(w1 <= now && now <= w2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mono_clocks),
        cmocka_unit_test(test_wall_clock_is_epoch_ms),
        cmocka_unit_test(test_now_follows_wall_clock),
        cmocka_unit_test(test_now_is_monotonic),
        cmocka_unit_test(test_advance_is_exact),
        cmocka_unit_test(test_advance_without_reading_in_between),
        cmocka_unit_test(test_frozen_clock_moves_only_by_advance),
        cmocka_unit_test(test_observe_raises_floor),
        cmocka_unit_test(test_stays_put_until_wall_catches_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
