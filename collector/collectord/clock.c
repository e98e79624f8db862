/* collectord's clock: CLOCK_MONOTONIC, or the test clock that only Tick requests advance. */
#include "clock.h"

#include <time.h>

/* --test-clock: collectord's "now" is driven by Tick requests (tests),
 * starting where the real clock was; the aging timer is not started. */
static int virt_clock;
static uint64_t virt_now;

void clock_virtual(void)
{
    virt_now = clock_now();
    virt_clock = 1;
}

int clock_is_virtual(void)
{
    return virt_clock;
}

uint64_t clock_now(void)
{
    if (virt_clock)
        return virt_now;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void clock_forward(uint64_t ns)
{
    virt_now += ns;
}
