/* Armed stacks: what the agent does on the next allocations from a stack collectord asked about. */
#ifndef STACKWATCH_AGENT_ARM_H
#define STACKWATCH_AGENT_ARM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ring.h"
#include "tstate.h"

/* Stacks armed now, and fired blocks not yet freed: the hot path tests
 * these two words and nothing else when there is nothing to do. */
extern _Atomic uint32_t arm_active;
extern _Atomic uint32_t arm_fired_live;

/* Notes pushed into the rings, ever (a dropped one taken back): counted
 * before the push, so a flusher that read a ring's head and then finds
 * this equal to the notes it consumed knows no note is among the events
 * it read (it then folds while merging, see flush.c). */
extern _Atomic uint64_t arm_notes_pushed;

/* Maps the table (one entry per intern slot). Returns 0 or -ENOMEM. */
int arm_init(uint32_t slots);

/* Flusher (commands): arm a stack for count firings, raising sig (0: none),
 * capturing Python frames if python, logging unless quiet. Disarm with count 0. */
void arm_set(uint32_t idx, int sig, uint32_t count, int python, int quiet);

/* Hook: 1 when pc is the call site (first frame) of an armed stack. */
int arm_site(uint64_t pc);

/* Hook: 1 when stack idx is armed with firings left. */
int arm_armed(uint32_t idx);

/* Hook, guard held, after ALLOC(p) was pushed with timestamp ts: if idx is
 * armed, fire once: log "malloc @ PTR for SIZE", attach a note (Python frames
 * when asked), and raise the signal in this thread if the process handles
 * it (else refuse, saying so once per signal). */
void arm_on_alloc(tstate_t *t, ring_t *r, uint32_t idx, void *p, size_t size, uint64_t ts);

/* Hook, guard held, before a free of p: logs "free @ PTR" for a fired block. */
void arm_on_free(void *p);

/* Firings so far (for Stats). */
/* Sampled mode: stacks armed beyond the call-site list (they fire only when
 * sampled). */
uint64_t arm_sites_full(void);

uint64_t arm_firings(void);

/* Fork child: the parent's arming is not the child's; fired blocks are. */
void arm_fork_child(void);

#endif
