/* Stack interning: a lock-free table from stack fingerprint to a small index sent once per connection. */
#include "intern.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>

#include "region.h"

#define MAX_PROBES 128
#define DEAD_HASH (~(uint64_t)0)

static intern_slot_t *slots;
static uint32_t slot_mask;
static uint64_t *pool;
static size_t pool_cap;
static _Atomic size_t pool_used;
static _Atomic uint32_t nstacks;
static size_t mapped;

int intern_init(uint32_t nslots, size_t pool_pcs)
{
    if (nslots < 2 || (nslots & (nslots - 1)) != 0)
        return -EINVAL;
    size_t sb = (size_t)nslots * sizeof(intern_slot_t);
    size_t pb = pool_pcs * sizeof(uint64_t);
    /* MAP_NORESERVE: pages are touched only as stacks arrive. */
    void *s = mmap(NULL, sb, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s == MAP_FAILED)
        return -ENOMEM;
    void *p = mmap(NULL, pb, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        munmap(s, sb);
        return -ENOMEM;
    }
    region_add(s, sb);
    region_add(p, pb);
    slots = s;
    slot_mask = nslots - 1;
    pool = p;
    pool_cap = pool_pcs;
    mapped = sb + pb;
    return 0;
}

static inline uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t intern_hash(const uint64_t *pcs, uint32_t n, uint32_t gen)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)gen << 32) ^ n;
    for (uint32_t i = 0; i < n; i++) {
        h ^= pcs[i];
        h *= 0x100000001b3ULL;
        h ^= h >> 29;
    }
    h = mix64(h);
    if (h == 0)
        h = 1;
    if (h == DEAD_HASH)
        h = DEAD_HASH - 1;
    return h;
}

/* Another thread claimed the slot and is copying its pcs: a few hundred ns
 * unless it was preempted, so spin, then yield. */
static void wait_ready(intern_slot_t *s)
{
    for (unsigned i = 0; atomic_load_explicit(&s->state, memory_order_acquire) != SLOT_READY; i++) {
        if (i < 256)
            __builtin_ia32_pause();
        else
            sched_yield();
    }
}

static uint32_t result_of(intern_slot_t *s, uint32_t i)
{
    wait_ready(s);
    return (s->flags & SLOT_F_NOPCS) ? INTERN_NONE : i;
}

uint32_t intern_stack(const uint64_t *pcs, uint32_t n, uint32_t gen, int truncated)
{
    if (!slots)
        return INTERN_NONE;
    uint64_t h = intern_hash(pcs, n, gen);
    uint32_t i = (uint32_t)h & slot_mask;
    for (unsigned probe = 0; probe < MAX_PROBES; probe++, i = (i + 1) & slot_mask) {
        if (i == INTERN_NONE)
            continue;
        intern_slot_t *s = &slots[i];
        uint64_t cur = atomic_load_explicit(&s->hash, memory_order_acquire);
        if (cur == h)
            return result_of(s, i);
        if (cur != 0)
            continue;
        uint64_t expect = 0;
        /* acq_rel: claiming publishes nothing yet; readers wait for READY. */
        if (!atomic_compare_exchange_strong_explicit(&s->hash, &expect, h, memory_order_acq_rel,
                                                     memory_order_acquire)) {
            if (expect == h)
                return result_of(s, i);
            continue;
        }
        size_t off = atomic_fetch_add_explicit(&pool_used, n, memory_order_relaxed);
        s->gen = gen;
        s->flags = truncated ? SLOT_F_TRUNCATED : 0;
        if (off + n > pool_cap) {
            s->flags |= SLOT_F_NOPCS;
            s->npcs = 0;
            s->pc_off = 0;
        } else {
            memcpy(&pool[off], pcs, n * sizeof *pcs);
            s->pc_off = (uint32_t)off;
            s->npcs = (uint16_t)n;
        }
        /* release: gen, pcs and flags are visible before READY. */
        atomic_store_explicit(&s->state, SLOT_READY, memory_order_release);
        if (s->flags & SLOT_F_NOPCS)
            return INTERN_NONE;
        atomic_fetch_add_explicit(&nstacks, 1, memory_order_relaxed);
        return i;
    }
    return INTERN_NONE;
}

const intern_slot_t *intern_slot(uint32_t idx)
{
    return &slots[idx & slot_mask];
}

const uint64_t *intern_pcs(const intern_slot_t *s)
{
    return &pool[s->pc_off];
}

int intern_take_unsent(uint32_t idx, uint32_t epoch)
{
    intern_slot_t *s = &slots[idx & slot_mask];
    if (s->sent_epoch == epoch)
        return 0;
    s->sent_epoch = epoch;
    return 1;
}

uint32_t intern_count(void)
{
    return atomic_load_explicit(&nstacks, memory_order_relaxed);
}

size_t intern_bytes(void)
{
    /* What the table holds in memory, not what it reserved (`mapped`):
     * slots are spread by hash, so each stack may touch a page of the slot
     * array of its own; pcs fill the pool in order. */
    size_t slots_mapped = (size_t)(slot_mask + 1) * sizeof(intern_slot_t);
    size_t touched = (size_t)atomic_load_explicit(&nstacks, memory_order_relaxed) * 4096u;
    size_t pcs = atomic_load_explicit(&pool_used, memory_order_relaxed) * sizeof(uint64_t);
    size_t n = (touched < slots_mapped ? touched : slots_mapped) + pcs;
    return n < mapped ? n : mapped;
}

void intern_fork_child(void)
{
    if (!slots)
        return;
    /* Only the forking thread survives, and it was not inside intern_stack
     * (fork is never called from the hook): any CLAIMED slot belongs to a
     * thread that does not exist here and would make readers wait forever. */
    for (uint32_t i = 0; i <= slot_mask; i++) {
        intern_slot_t *s = &slots[i];
        if (atomic_load_explicit(&s->hash, memory_order_relaxed) != 0 &&
            atomic_load_explicit(&s->state, memory_order_relaxed) != SLOT_READY) {
            atomic_store_explicit(&s->hash, DEAD_HASH, memory_order_relaxed);
            s->flags = SLOT_F_NOPCS;
            atomic_store_explicit(&s->state, SLOT_READY, memory_order_relaxed);
        }
        /* sent_epoch needs no reset: epochs only grow, the child's
         * connection gets a new one. Untouched pages stay untouched. */
    }
}
