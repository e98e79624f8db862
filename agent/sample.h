/* Byte sampling (STACKWATCH_SAMPLE=SIZE for malloc, STACKWATCH_PYTHON_SAMPLE=SIZE for CPython's small objects): Poisson sampling over allocated bytes, and the set of sampled blocks. */
#ifndef STACKWATCH_AGENT_SAMPLE_H
#define STACKWATCH_AGENT_SAMPLE_H

#include <stdatomic.h>
#include <stdint.h>

#include "tstate.h"

/* Sampled-set geometry: buckets of 8 addresses (one cache line), no probing
 * across buckets, a one-byte occupancy count per bucket checked first. */
#define SAMPLE_BUCKETS (1u << 14)
#define SAMPLE_WAYS 8u

/* Mean bytes between samples; 0 when every allocation is recorded. */
extern uint64_t sample_rate;
/* The same for CPython's mem and object domains in sampled mode (their own
 * per-thread budget, independent of malloc's); 0 when not sampled. */
extern uint64_t sample_py_rate;

/* Maps the sampled set when rate or py_rate > 0 (one set holds both kinds of
 * sampled blocks: live blocks have distinct addresses). Returns 0 or -ENOMEM
 * (then neither samples: the caller says so). Constructor only. */
int sample_init(uint64_t rate, uint64_t py_rate);

/* The next sample point (geometric over bytes, mean sample_rate); returns 1
 * when the allocation that crossed the budget is sampled. A thread's first
 * call draws its first budget and counts the allocation against it. */
int sample_slow(tstate_t *t);

/* Spends size bytes of a budget; 1 while it lasts (no sample point). */
static inline int sample_spend(int64_t *left, uint64_t size)
{
    *left -= (int64_t)(size < (1ull << 62) ? size : (1ull << 62));
    return __builtin_expect(*left > 0, 1);
}

/* Hook: counts size against this thread's byte budget; 1 when this
 * allocation is sampled (a sample point fell inside its bytes). */
static inline int sample_take(tstate_t *t, uint64_t size)
{
    return sample_spend(&t->sample_left, size) ? 0 : sample_slow(t);
}

/* The same for CPython's small objects, with their own budget (py_left) and
 * mean (sample_py_rate). */
int sample_py_slow(tstate_t *t);

static inline int sample_py_take(tstate_t *t, uint64_t size)
{
    return sample_spend(&t->py_left, size) ? 0 : sample_py_slow(t);
}

/* Hook: 1 when addr's bucket holds no sampled block (addr is surely not
 * sampled): the one-byte load of sample_forget's fast path. */
static inline int sample_surely_not(uint64_t addr);

/* Hook: remembers a sampled block. 0 when its bucket is full (the sample is
 * dropped and counted: its free could not be recognized). */
int sample_insert(uint64_t addr);

/* Hook: 1 if addr is a sampled block (and forgets it), else 0. Lock-free; a
 * load of one byte for most unsampled frees. */
static inline int sample_forget(uint64_t addr);

/* Samples dropped for a full bucket; blocks in the set now. */
uint64_t sample_overflow(void);
uint64_t sample_live(void);
/* Bytes mapped for the set. */
uint64_t sample_bytes_mapped(void);

/* Fork child: the parent's sampled blocks are the child's too (same
 * addresses): the set stays as it is. */

/* ---------------------------------------------------------------- inline part */

typedef struct sample_bucket_s {
    _Atomic uint64_t addr[SAMPLE_WAYS]; /* 0: empty */
} sample_bucket_t;

extern sample_bucket_t *sample_set;
extern _Atomic uint8_t *sample_occ;

static inline uint32_t sample_bucket_of(uint64_t addr)
{
    return (uint32_t)((addr * 0x9e3779b97f4a7c15ULL) >> (64 - 14)) & (SAMPLE_BUCKETS - 1);
}

int sample_forget_slow(uint64_t addr, uint32_t b);

static inline int sample_surely_not(uint64_t addr)
{
    return atomic_load_explicit(&sample_occ[sample_bucket_of(addr)], memory_order_relaxed) == 0;
}

static inline int sample_forget(uint64_t addr)
{
    if (__builtin_expect(sample_surely_not(addr), 1))
        return 0;
    return sample_forget_slow(addr, sample_bucket_of(addr));
}

#endif
