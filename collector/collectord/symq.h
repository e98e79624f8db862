/* collectord's symbolization queue: stacks to the symbolizer thread (module+offset at once without it). */
#ifndef STACKWATCH_COLLECTOR_SYMQ_H
#define STACKWATCH_COLLECTOR_SYMQ_H

#include "state.h"

/* Queues symbolization of a stack if not done or pending. */
void symq_stack(srv_t *s, client_t *c, cstack_t *st, int urgent);

/* Takes the symbolizer's finished jobs (the loop's wake-up from it) into
 * their stacks, calling symbolized for each stack whose frames came in
 * (arming_eval: rules that match names; a callback, as arming.c queues
 * stacks here). */
void symq_take_done(srv_t *s, void (*symbolized)(srv_t *s, client_t *c, cstack_t *st));

/* Submits the client's stacks that began to expire. Past SYM_EAGER_MAX
 * jobs in the worker's queue they wait on the client's queue instead (a
 * job holds a copy of its frames and modules): finished jobs make room. */
void symq_eager(srv_t *s, client_t *c);

/* Asks the symbolizer to close the libdw handles of modules that no
 * connected process maps (after an ended process is stored). */
void symq_sweep(srv_t *s);

#define SYMQ_SWEEP_MIN_NS (1000ull * 1000000) /* between two sweeps at least */

/* symq_sweep when s->sweep_due says so: after a save at once (queued behind
 * the jobs before it), after a process ended without a save once no job is
 * queued or waiting (its eager jobs are done); at most one a
 * SYMQ_SWEEP_MIN_NS, else at a later call (the aging tick's saves_due, a
 * finished job). */
void symq_sweep_due(srv_t *s);

#endif
