/* collectord's clock: CLOCK_MONOTONIC, or the test clock that only Tick requests advance. */
#ifndef STACKWATCH_COLLECTOR_CLOCK_H
#define STACKWATCH_COLLECTOR_CLOCK_H

#include <stdint.h>

/* Test clock (collectord start --test-clock): clock_now() then returns a
 * time that only Tick requests advance (age_advance, which also runs
 * the aging and classification pass); the aging timer does not run. Event
 * times are the agents' own: a test that drives the clock sends its events
 * with the times it chose (a fake agent). */
void clock_virtual(void);
int clock_is_virtual(void);

/* Test clock: moves it forward by ns (age_advance's first half). */
void clock_forward(uint64_t ns);

/* CLOCK_MONOTONIC in ns: the clock agents stamp events with. */
uint64_t clock_now(void);

#endif
