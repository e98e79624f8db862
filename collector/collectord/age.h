/* collectord's aging tick: aging, classification, queued symbolization and arming, scan deadlines, retention. */
#ifndef STACKWATCH_COLLECTOR_AGE_H
#define STACKWATCH_COLLECTOR_AGE_H

#include "state.h"

/* One aging and classification pass at clock_now() (the aging timer's). */
void age_tick(srv_t *s);

/* age_tick's pass over one client at now: aging, classification, then the
 * symbolization, first-leak and rule queues it filled, Python re-arming. */
void age_client(srv_t *s, client_t *c, uint64_t now);

/* Test clock: advances it by ns and runs age_tick. */
void age_advance(srv_t *s, uint64_t ns);

#endif
