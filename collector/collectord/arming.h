/* collectord's arming: stacks armed in their agents by rules, --on-leak and Python captures; signals back to clients. */
#ifndef STACKWATCH_COLLECTOR_ARMING_H
#define STACKWATCH_COLLECTOR_ARMING_H

#include "state.h"

/* A sampled client's agent watches 64 call sites for armed stacks: past
 * this many rule-armed stacks, only leaking ones are armed. */
#define ARMING_SAMPLED_BUDGET 48

/* Disarms a stack in its agent (if connected) and forgets why it was armed. */
void arming_disarm(srv_t *s, client_t *c, cstack_t *st);

/* Arms a stack if a trigger rule matches it (after symbolization or
 * definition). */
void arming_eval(srv_t *s, client_t *c, cstack_t *st);

/* Evaluates every rule against every stack of connected clients (after a
 * rule was added), queueing symbolization where names are needed. */
void arming_eval_all(srv_t *s);

/* A stack's first block just became may-leak (the aging tick): --on-leak
 * signals and arms it; for a Python client it is armed for a few captures
 * of the Python line. */
void arming_first_leak(srv_t *s, client_t *c, cstack_t *st);

/* The aging tick: re-arms Python captures of stacks that keep leaking
 * after their captures were used up (a few rounds at most). */
void arming_rearm_python(srv_t *s, client_t *c);

#endif
