/* The agent's own memory, listed for collectord's reachability scan. */
#ifndef STACKWATCH_AGENT_REGION_H
#define STACKWATCH_AGENT_REGION_H

#include <stddef.h>
#include <stdint.h>

/* Entries in the registry; beyond it, regions are counted as lost. */
#define REGION_MAX 8192u

/* Registers [p, p + n) as the agent's. Lock-free, no allocation, no
 * syscall: safe on the malloc path (rings are created there). A full table
 * drops the region (counted by region_overflow). */
void region_add(const void *p, size_t n);

/* Forgets the region starting at p (before it is unmapped). Lock-free. */
void region_del(const void *p);

/* Copies up to max [start, end) pairs into out (2 * max words); returns the
 * pairs written. Regions added or removed meanwhile may or may not appear. */
size_t region_collect(uint64_t *out, size_t max);

/* Regions that did not fit. */
uint64_t region_overflow(void);

#endif
