/* clock.c — monotonic and wall clocks, and the broker's monotonic "now". */
#include "base/clock.h"

#include <time.h>

static uint64_t read_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t clock_mono_ns(void)
{
    return read_ns(CLOCK_MONOTONIC);
}

uint64_t clock_mono_ms(void)
{
    return read_ns(CLOCK_MONOTONIC) / 1000000u;
}

uint64_t clock_wall_ms(void)
{
    return read_ns(CLOCK_REALTIME) / 1000000u;
}

void clock_init(struct cy_clock *c)
{
    c->last_ms = 0;
    c->offset_ms = 0;
    c->frozen_ms = 0;
}

void clock_freeze(struct cy_clock *c)
{
    c->frozen_ms = clock_wall_ms();
}

uint64_t clock_now_ms(struct cy_clock *c)
{
    uint64_t now = (c->frozen_ms ? c->frozen_ms : clock_wall_ms()) + c->offset_ms;
    if (now < c->last_ms)
        now = c->last_ms;
    c->last_ms = now;
    return now;
}

void clock_advance(struct cy_clock *c, uint64_t ms)
{
    c->offset_ms += ms;
    c->last_ms += ms;
}

void clock_observe(struct cy_clock *c, uint64_t ms)
{
    if (ms > c->last_ms)
        c->last_ms = ms;
}
