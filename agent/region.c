/* The agent's own memory, listed for collectord's reachability scan.
 *
 * Rings hold the addresses of blocks in their events (and keep stale ones in
 * consumed slots), the flusher's columns and the sampled set hold more: a
 * conservative scan that read them as roots would find every block
 * reachable. collectord leaves these ranges out. */
#include "region.h"

#include <stdatomic.h>

typedef struct region_s {
    _Atomic uint64_t lo;   /* start; 0: free slot */
    _Atomic uint64_t hi;   /* end; 0 while the slot is being filled */
} region_t;

static region_t regions[REGION_MAX];
static _Atomic uint32_t used_hint;   /* slots below it have been used */
static _Atomic uint64_t overflow;

void region_add(const void *p, size_t n)
{
    uint64_t lo = (uint64_t)(uintptr_t)p;
    if (!lo || !n)
        return;
    uint32_t lim = atomic_load_explicit(&used_hint, memory_order_relaxed);
    for (uint32_t i = 0; i < REGION_MAX; i++) {
        uint64_t expect = 0;
        /* A slot is claimed by its start; the end follows (release: a reader
         * that sees the end sees a complete entry). */
        if (atomic_load_explicit(&regions[i].lo, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong_explicit(&regions[i].lo, &expect, lo,
                                                    memory_order_relaxed, memory_order_relaxed)) {
            atomic_store_explicit(&regions[i].hi, lo + n, memory_order_release);
            while (i >= lim && !atomic_compare_exchange_weak_explicit(
                                   &used_hint, &lim, i + 1, memory_order_relaxed,
                                   memory_order_relaxed))
                ;
            return;
        }
    }
    atomic_fetch_add_explicit(&overflow, 1, memory_order_relaxed);
}

void region_del(const void *p)
{
    uint64_t lo = (uint64_t)(uintptr_t)p;
    uint32_t lim = atomic_load_explicit(&used_hint, memory_order_relaxed);
    for (uint32_t i = 0; i < lim && i < REGION_MAX; i++) {
        if (atomic_load_explicit(&regions[i].lo, memory_order_relaxed) == lo) {
            atomic_store_explicit(&regions[i].hi, 0, memory_order_relaxed);
            atomic_store_explicit(&regions[i].lo, 0, memory_order_release);
            return;
        }
    }
}

size_t region_collect(uint64_t *out, size_t max)
{
    size_t n = 0;
    uint32_t lim = atomic_load_explicit(&used_hint, memory_order_acquire);
    for (uint32_t i = 0; i < lim && i < REGION_MAX && n < max; i++) {
        uint64_t lo = atomic_load_explicit(&regions[i].lo, memory_order_relaxed);
        /* acquire: pairs with the release of hi in region_add. */
        uint64_t hi = atomic_load_explicit(&regions[i].hi, memory_order_acquire);
        if (lo && hi > lo) {
            out[2 * n] = lo;
            out[2 * n + 1] = hi;
            n++;
        }
    }
    return n;
}

uint64_t region_overflow(void)
{
    return atomic_load(&overflow);
}
