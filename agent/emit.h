/* The producer side of the rings: a full ring's bounded wait, and waking the flusher. */
#ifndef STACKWATCH_AGENT_EMIT_H
#define STACKWATCH_AGENT_EMIT_H

#include "fdguard.h"
#include "ring.h"

/* The flusher as the threads pushing events see it. flush.c writes it (start,
 * detach, fork child, its sends); any thread pushing reads it. */
typedef struct emit_flusher_s {
    fdguard_t evfd;           /* eventfd that wakes the flusher, -1 none */
    int running;              /* the flusher thread was started in this process image */
    _Atomic int send_stalled; /* a send waits on a stopped collectord (producers look) */
} emit_flusher_t;

extern emit_flusher_t emit_flusher;

/* Ring full: waits a bounded time for space while connected, then drops and
 * counts. Called from the hook with the guard set. */
void flush_push_slow(ring_t *r, const ev_t *ev);

/* Wakes the flusher (eventfd write). Async-signal-safe. */
void flush_kick(void);

#endif
