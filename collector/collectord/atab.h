/* Allocation table: live blocks of one client by address, aged in time buckets. */
#ifndef STACKWATCH_COLLECTOR_ATAB_H
#define STACKWATCH_COLLECTOR_ATAB_H

#include <stddef.h>
#include <stdint.h>

#define ATAB_NIL 0xffffffffu
#define ATAB_NB 128u          /* aging buckets in the ring (covers 2x expire) */
#define ATAB_SIZE_MAX ((1ull << 48) - 1)

enum {
    ATAB_F_EXPIRED = 1,   /* counted as expired in its stack */
    ATAB_F_UNCERTAIN = 2, /* allocated before a gap: its free may have been lost */
    ATAB_F_NOTED = 4,     /* has a Python traceback (client's noted map) */
    ATAB_F_WUP = 8,       /* sampled client: its estimated count is rounded up */
    ATAB_F_UNSAMPLED = 16,/* sampled client: recorded only for an armed stack; weight 0 */
    ATAB_F_SCANNED = 32,  /* live during the last reachability scan */
    ATAB_F_UNREACH = 64,  /* ... and no chain from a root reached it (lost) */
    ATAB_F_INDIRECT = 128,/* ... only other lost blocks point to it (lost indirectly) */
};

/* One live block. 40 bytes; with the hash slots ~46 bytes per live block. */
typedef struct atab_ent_s {
    uint64_t addr;        /* block address (the key) */
    uint64_t ts;          /* allocation time, CLOCK_MONOTONIC ns */
    uint64_t size : 48;   /* requested size */
    uint64_t flags : 16;  /* ATAB_F_* */
    uint32_t stack;       /* the client's stack index */
    uint32_t prev;        /* bucket list neighbours (ATAB_NIL: not in a bucket) */
    uint32_t next;        /* ... also the free-list link of unused entries */
} atab_ent_t;

typedef void (*atab_expire_fn)(void *ctx, atab_ent_t *e);

typedef struct atab_s {
    atab_ent_t *ents;         /* entry storage */
    uint32_t ents_cap;        /* allocated entries */
    uint32_t ents_hw;         /* high-water mark of used entries */
    uint32_t free_head;       /* free-list of released entries */
    uint32_t live;            /* entries in use */
    uint32_t *slots;          /* open addressing: entry index or ATAB_NIL */
    uint32_t slot_mask;       /* slots - 1 */
    uint64_t expire_ns;       /* age at which a block expires */
    uint64_t width_ns;        /* bucket width (expire / 64) */
    uint64_t aged_upto;       /* buckets below this number are processed */
    uint32_t heads[ATAB_NB];  /* bucket list heads, by bucket number mod ATAB_NB */
    atab_expire_fn on_expire; /* called once per block as it expires */
    void *ctx;                /* for on_expire */
    uint64_t b_cur;           /* the bucket number last computed ... */
    uint64_t b_lo;            /* ... and its first ns (b_cur * width_ns) */
    uint64_t hint_addr;       /* key of the last atab_find ... */
    uint32_t hint_slot;       /* ... the slot its probe ended at (its entry or an empty slot) */
    int hint_ok;              /* no insert or remove since: hint_slot still holds */
} atab_t;

/* Initializes an empty table aging at expire_ns, starting from now.
 * Returns 0 or -ENOMEM. */
int atab_init(atab_t *t, uint64_t expire_ns, uint64_t now, atab_expire_fn fn, void *ctx);
void atab_free(atab_t *t);

/* The live entry at addr, or NULL. Valid until the next insert or remove. */
atab_ent_t *atab_find(atab_t *t, uint64_t addr);

/* Inserts a block (addr must not be live) with its flags (the caller's
 * ATAB_F_* other than EXPIRED), set before anything sees the entry: a block
 * already older than the expire time is expired at once (on_expire is
 * called). Returns the entry (valid until the next insert/remove) or NULL on
 * allocation failure. */
atab_ent_t *atab_insert_flags(atab_t *t, uint64_t addr, uint64_t ts, uint64_t size, uint32_t stack,
                              unsigned flags);

static inline atab_ent_t *atab_insert(atab_t *t, uint64_t addr, uint64_t ts, uint64_t size,
                                      uint32_t stack)
{
    return atab_insert_flags(t, addr, ts, size, stack, 0);
}

/* Removes a live entry. */
void atab_remove(atab_t *t, atab_ent_t *e);

/* Expires every block whose age at now reached the expire time, calling
 * on_expire for each. Cost: the blocks expiring plus at most ATAB_NB buckets.
 * Returns the number expired. */
size_t atab_age(atab_t *t, uint64_t now);

/* Calls fn for every live entry. fn must not insert or remove. */
void atab_each(atab_t *t, void (*fn)(void *ctx, atab_ent_t *e), void *ctx);

/* Bytes held by the table. */
size_t atab_bytes(const atab_t *t);

/* Home slot of addr. Fibonacci hashing: malloc addresses share low bits
 * (alignment). */
static inline uint32_t atab_hash(uint64_t addr, uint32_t mask)
{
    return (uint32_t)((addr * 0x9e3779b97f4a7c15ULL) >> 32) & mask;
}

/*
 * Prefetch hints for a lookup of addr a few events ahead. With a large live
 * set each lookup is a chain of cache misses (slot, entry, its bucket
 * neighbours, the entries a removal shifts back); issued early they overlap
 * with the work on earlier events. Stage 1 fetches the home slot; stage 2,
 * once that arrived, the entries of the probe chain (the cluster up to the
 * next empty slot, which is also what a removal shifts back); stage 3, once
 * those arrived, the link fields of the bucket neighbours of addr's entry,
 * and returns the entry (NULL: not live). atab_prefetch_free fetches the
 * entry that the insertion after next takes from the free list (the next
 * one's was just freed, or fetched here before). They only read the table,
 * never change it, and are never needed for correctness. Safe on a table
 * without entries.
 *
 * Always inlined: GCC finds a function whose only effect is a prefetch
 * "pure" (a prefetch is no side effect) and deletes calls to it.
 */
#define ATAB_PF_INLINE static inline __attribute__((always_inline))

ATAB_PF_INLINE void atab_prefetch_slot(const atab_t *t, uint64_t addr)
{
    if (t->slots)
        __builtin_prefetch(&t->slots[atab_hash(addr, t->slot_mask)]);
}

/* One probe of stage 2: the entry in slot i, both cache lines it may span
 * (the one that matches is needed whole); 0 at an empty slot. */
ATAB_PF_INLINE int atab_prefetch_probe(const atab_t *t, uint32_t i)
{
    uint32_t e = t->slots[i];
    if (e == ATAB_NIL)
        return 0;
    __builtin_prefetch(&t->ents[e]);
    __builtin_prefetch((const char *)(&t->ents[e] + 1) - 1);
    return 1;
}

/* Stage 2: the first four probes (written out: a loop of prefetches is
 * deleted like a pure call). */
ATAB_PF_INLINE void atab_prefetch_chain(const atab_t *t, uint64_t addr)
{
    if (!t->ents)
        return;
    uint32_t m = t->slot_mask, i = atab_hash(addr, m);
    if (atab_prefetch_probe(t, i) && atab_prefetch_probe(t, (i + 1) & m) &&
        atab_prefetch_probe(t, (i + 2) & m))
        atab_prefetch_probe(t, (i + 3) & m);
}

ATAB_PF_INLINE const atab_ent_t *atab_prefetch_links(const atab_t *t, uint64_t addr)
{
    if (!t->ents)
        return NULL;
    uint32_t i = atab_hash(addr, t->slot_mask);
    for (int k = 0; k < 4; k++) {
        uint32_t e = t->slots[i];
        if (e == ATAB_NIL)
            return NULL;
        const atab_ent_t *x = &t->ents[e];
        if (x->addr == addr) {
            if (x->prev != ATAB_NIL)
                __builtin_prefetch(&t->ents[x->prev].next, 1);
            if (x->next != ATAB_NIL)
                __builtin_prefetch(&t->ents[x->next].prev, 1);
            return x;
        }
        i = (i + 1) & t->slot_mask;
    }
    return NULL;
}

ATAB_PF_INLINE void atab_prefetch_free(const atab_t *t)
{
    if (!t->ents || t->free_head == ATAB_NIL)
        return;
    uint32_t n = t->ents[t->free_head].next;
    if (n != ATAB_NIL)
        __builtin_prefetch(&t->ents[n], 1);
}

#endif
