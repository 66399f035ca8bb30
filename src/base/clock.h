/*
 * clock.h — time for the broker and the storage engine.
 *
 * clock_mono_ms/ns: CLOCK_MONOTONIC, for durations and timeouts.
 * struct cy_clock: the broker's notion of "now" — wall-clock milliseconds since
 * the Unix epoch, plus a test offset, made monotonic (never lower than a value
 * it returned before, even when the system clock steps back). One per broker;
 * not thread-safe (the owning thread calls it).
 */
#ifndef COYOTE_BASE_CLOCK_H
#define COYOTE_BASE_CLOCK_H

#include <stdint.h>

uint64_t clock_mono_ns(void);
uint64_t clock_mono_ms(void);
uint64_t clock_wall_ms(void);

struct cy_clock {
    uint64_t last_ms;   /* the highest value returned so far */
    uint64_t offset_ms; /* added to the wall clock: the test clock's advance */
    uint64_t frozen_ms; /* non-zero: the wall clock reading this clock is held at */
};

void clock_init(struct cy_clock *c);
/* Wall-clock ms + offset, never lower than a previous result of this clock. */
uint64_t clock_now_ms(struct cy_clock *c);
/* Hold the wall-clock part at its current reading: from now on the clock moves
 * only by clock_advance, so tests that script time are deterministic. */
void clock_freeze(struct cy_clock *c);
/* Move this clock forward by ms (the test clock, API.md §10). */
void clock_advance(struct cy_clock *c, uint64_t ms);
/* Make the clock never return less than ms (used after recovery: the newest
 * replayed timestamp). */
void clock_observe(struct cy_clock *c, uint64_t ms);

#endif
