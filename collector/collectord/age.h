/* collectord's aging tick: aging, classification, queued symbolization and arming, scan deadlines, retention. */
#ifndef STACKWATCH_COLLECTOR_AGE_H
#define STACKWATCH_COLLECTOR_AGE_H

#include "state.h"

/* One aging and classification pass at srv_now() (the aging timer's). */
void srv_tick(srv_t *s);

/* srv_tick's pass over one client at now: aging, classification, then the
 * symbolization, first-leak and rule queues it filled, Python re-arming. */
void srv_age_client(srv_t *s, client_t *c, uint64_t now);

/* Test clock: advances it by ns and runs srv_tick. */
void srv_clock_advance(srv_t *s, uint64_t ns);

#endif
