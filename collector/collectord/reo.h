/* Reorder records: per-address memory of events that arrived out of time order across threads. */
#ifndef STACKWATCH_COLLECTOR_REO_H
#define STACKWATCH_COLLECTOR_REO_H

#include <stdint.h>

/* Rings are per thread, so thread B's free of a block can arrive before
 * thread A's allocation of it, and an allocation reusing an address can
 * arrive before the free of its previous owner. One record per address keeps
 * what is needed to match the late event when it comes. */
typedef struct reo_rec_s {
    uint64_t addr;      /* key; 0 = empty slot */
    uint64_t free_ts;   /* a FREE with no live block yet (0: none) */
    uint64_t tomb_lo;   /* a block counted as freed implicitly: its alloc time ... */
    uint64_t tomb_hi;   /* ... and the time its address was reused (0: no tombstone) */
    uint64_t due;       /* event time after which the record is resolved */
} reo_rec_t;

typedef struct reo_s {
    reo_rec_t *slots;   /* open addressing by addr */
    uint32_t mask;      /* slots - 1 */
    uint32_t used;      /* records in use */
    uint32_t max;       /* cap on records (beyond it nothing is remembered) */
} reo_t;

int reo_init(reo_t *r, uint32_t max);
void reo_free(reo_t *r);

/* The record for addr or NULL. Valid until the next get/remove. */
reo_rec_t *reo_find(reo_t *r, uint64_t addr);

/* The record for addr, created empty if absent. NULL when full or out of memory. */
reo_rec_t *reo_get(reo_t *r, uint64_t addr);

/* Removes a record (pointer from find/get). */
void reo_remove(reo_t *r, reo_rec_t *rec);

/* Removes every record with due <= now (all when now == UINT64_MAX); returns
 * the number of pending frees among them (frees of unknown blocks). */
uint64_t reo_expire(reo_t *r, uint64_t now);

/* Home slot of addr (exposed for tests that build probe chains). */
static inline uint32_t reo_hash(uint64_t addr, uint32_t mask)
{
    return (uint32_t)((addr * 0x9e3779b97f4a7c15ULL) >> 32) & mask;
}

#endif
