/* Per-thread agent state in initial-exec TLS, and the registry of every thread's ring. */
#ifndef STACKWATCH_AGENT_TSTATE_H
#define STACKWATCH_AGENT_TSTATE_H

#include <stdint.h>

#include "ring.h"

typedef struct tstate_s {
    int guard;       /* reentrancy guard: set while the agent works on this thread */
    uint8_t no_ring; /* ring creation failed here: pass through, count once */
    uint8_t sample_ready; /* sample_left was drawn */
    uint8_t py_ready;     /* py_left was drawn */
    uint8_t py_arm_tick;  /* counts small objects while a stack is armed (hook.c) */
    ring_t *ring;    /* this thread's ring, created on its first event */
    uint32_t tid;    /* kernel tid, cached */
    int64_t sample_left; /* bytes until the next sample point (sample.c) */
    uint64_t rng;        /* xorshift state for the draws, 0 unseeded */
    int64_t py_left;     /* CPython's small objects: bytes until their next sample point */
    int *errp;           /* &errno on this thread (hook.c's errno_of), NULL until first used */
} tstate_t;

extern __thread tstate_t tstate __attribute__((tls_model("initial-exec")));

/* Creates the pthread key whose destructor orphans a thread's ring. Constructor only. */
int tstate_init(void);

/* The calling thread's ring, creating and registering it on first use.
 * Returns NULL if it cannot be created (counted). mmap on first use only. */
ring_t *tstate_ring(tstate_t *t);

/* Flusher: calls fn on every registered ring. */
void tstate_each_ring(void (*fn)(ring_t *r, void *arg), void *arg);

/* Flusher: unmaps orphaned rings that are drained and whose thread the kernel
 * no longer knows; adds their drop counters to the totals. Returns the count. */
int tstate_reap(void);

/* Stacks of threads that are gone (glibc may keep them for reuse, stale
 * words and all): up to max (lo, frames_hi, hi) triples into triples
 * (3 * max words): the stack [lo, hi), its frames below frames_hi; none a
 * live traced thread runs on. Entries may overlap (rings are reaped in no
 * particular order): the reader keeps those that match the memory map.
 * Returns the triples. Flusher only. */
size_t tstate_dead_stacks(uint64_t *triples, size_t max);

/* Sum of drops and waits over live and reaped rings; bytes mapped by rings;
 * threads ever registered. */
uint64_t tstate_dropped(void);
uint64_t tstate_waits(void);
uint64_t tstate_ring_bytes(void);
uint64_t tstate_threads(void);
/* Events ever pushed (ring heads, reaped rings included). */
uint64_t tstate_events(void);
/* Exact totals of every allocation and free the hooks saw while recording,
 * sampled or not (per-thread counters, reaped rings included). */
void tstate_totals(uint64_t *allocs, uint64_t *alloc_bytes, uint64_t *frees);

/* Events made while no collector was connected (not recorded), ever. */
uint64_t tstate_offline(void);
/* Captures answered by the threads' stack caches (hook.c). */
uint64_t tstate_cache_hits(void);

/* A new session after a detach (attach mode, no flusher running): drops
 * whatever events a stray call left in the rings and zeroes the counters. */
void tstate_discard(void);

/* Fork child: forget (and unmap) every inherited ring; the calling thread
 * starts over. */
void tstate_fork_child(void);

/* The fork gate. fork() may not happen while a thread is inside libunwind
 * (its memory pools' mutexes would stay locked in the child, whose first
 * unwind then hangs for good). fork's prepare handler closes the gate:
 * threads recording from then on capture no stack (counted as unwind
 * failures) unless they are the forking thread, and it waits until no other
 * thread is inside the recording path (their ring's inside flag), at most
 * timeout_ms. Returns 0, or -EBUSY when one still was. The parent and child
 * handlers open it again. */
extern _Atomic int tstate_fork_gate;
extern uint32_t tstate_fork_gate_tid;
int tstate_fork_gate_close(uint32_t tid, int timeout_ms);
void tstate_fork_gate_open(void);

#endif
