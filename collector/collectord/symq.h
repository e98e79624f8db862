/* collectord's symbolization queue: stacks to the symbolizer thread (module+offset at once without it). */
#ifndef STACKWATCH_COLLECTOR_SYMQ_H
#define STACKWATCH_COLLECTOR_SYMQ_H

#include "state.h"

/* Queues symbolization of a stack if not done or pending. */
void symq_stack(srv_t *s, client_t *c, cstack_t *st, int urgent);

#endif
