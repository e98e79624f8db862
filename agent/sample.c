/* Byte sampling: geometric intervals per thread and a lock-free set of sampled blocks.
 *
 * Every thread keeps a byte budget drawn from an exponential distribution of
 * mean sample_rate; an allocation that uses the budget up holds a sample
 * point and is sampled, so a block of size s is sampled with probability
 * 1 - exp(-s / rate) (jemalloc and tcmalloc sample the same way), and the
 * collector weights it by the inverse. The next budget is drawn fresh: the
 * process is memoryless, the overshoot carries no information.
 *
 * Frees must reach the collector only for sampled blocks, and the free hook
 * cannot afford a lock: sampled addresses live in buckets of eight (one cache
 * line), found by a multiplicative hash, inserted and removed with CAS. A
 * byte per bucket counts its occupants, so the free of an unsampled block
 * usually costs one load from a 16 KiB array. An address is inserted after
 * malloc returned it and removed before free releases it, so the same address
 * is never inserted and removed at once; distinct addresses only race for
 * distinct slots. A full bucket (8 sampled blocks at one hash) drops the
 * sample, counted. */
#include "sample.h"

#include <errno.h>
#include <math.h>
#include <sys/mman.h>
#include <time.h>

#include "region.h"

uint64_t sample_rate;
uint64_t sample_py_rate;
sample_bucket_t *sample_set;
_Atomic uint8_t *sample_occ;

static _Atomic uint64_t overflow, live;

int sample_init(uint64_t rate, uint64_t py_rate)
{
    if (!rate && !py_rate)
        return 0;
    size_t set = (size_t)SAMPLE_BUCKETS * sizeof(sample_bucket_t);
    void *p = mmap(NULL, set + SAMPLE_BUCKETS, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -ENOMEM;
    region_add(p, set + SAMPLE_BUCKETS);
    sample_set = p;
    sample_occ = (_Atomic uint8_t *)((char *)p + set);
    sample_rate = rate;
    sample_py_rate = py_rate;
    return 0;
}

static uint64_t rng_next(tstate_t *t)
{
    if (!t->rng) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        t->rng = ((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL) ^
                 ((uint64_t)(uintptr_t)t * 0xbf58476d1ce4e5b9ULL) ^ (uint64_t)ts.tv_sec;
        if (!t->rng)
            t->rng = 1;
    }
    /* xorshift64* */
    uint64_t x = t->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t->rng = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static int64_t draw(tstate_t *t, uint64_t rate)
{
    /* u in (0, 1]: -log(u) is exponential with mean 1. */
    double u = (double)((rng_next(t) >> 11) + 1) * (1.0 / 9007199254740992.0);
    double d = -log(u) * (double)rate;
    if (d < 1.0)
        d = 1.0;
    if (d > 9.0e18)
        d = 9.0e18;
    return (int64_t)d;
}

/* A budget (left, drawn once ready) crossed: the next sample point. */
static int budget_slow(tstate_t *t, int64_t *left, uint8_t *ready, uint64_t rate)
{
    if (!*ready) {
        /* First allocation of this thread: draw the budget, then count this
         * allocation against it like any other. */
        int64_t spent = -*left; /* what the take subtracted */
        *ready = 1;
        *left = draw(t, rate) - spent;
        if (*left > 0)
            return 0;
    }
    *left = draw(t, rate);
    return 1;
}

int sample_slow(tstate_t *t)
{
    return budget_slow(t, &t->sample_left, &t->sample_ready, sample_rate);
}

int sample_py_slow(tstate_t *t)
{
    return budget_slow(t, &t->py_left, &t->py_ready, sample_py_rate);
}

int sample_insert(uint64_t addr)
{
    uint32_t b = sample_bucket_of(addr);
    sample_bucket_t *k = &sample_set[b];
    for (uint32_t i = 0; i < SAMPLE_WAYS; i++) {
        uint64_t cur = atomic_load_explicit(&k->addr[i], memory_order_relaxed);
        if (cur)
            continue;
        if (atomic_compare_exchange_strong_explicit(&k->addr[i], &cur, addr,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed)) {
            atomic_fetch_add_explicit(&sample_occ[b], 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
            return 1;
        }
    }
    atomic_fetch_add_explicit(&overflow, 1, memory_order_relaxed);
    return 0;
}

int sample_forget_slow(uint64_t addr, uint32_t b)
{
    sample_bucket_t *k = &sample_set[b];
    for (uint32_t i = 0; i < SAMPLE_WAYS; i++) {
        uint64_t cur = atomic_load_explicit(&k->addr[i], memory_order_relaxed);
        if (cur != addr)
            continue;
        /* Only this free can remove addr: a plain store would do; the CAS
         * keeps a double free from counting twice. */
        if (atomic_compare_exchange_strong_explicit(&k->addr[i], &cur, 0, memory_order_relaxed,
                                                    memory_order_relaxed)) {
            atomic_fetch_sub_explicit(&sample_occ[b], 1, memory_order_relaxed);
            atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
            return 1;
        }
        return 0;
    }
    return 0;
}

uint64_t sample_overflow(void)
{
    return atomic_load_explicit(&overflow, memory_order_relaxed);
}

uint64_t sample_live(void)
{
    return atomic_load_explicit(&live, memory_order_relaxed);
}

uint64_t sample_bytes_mapped(void)
{
    return sample_set ? (uint64_t)SAMPLE_BUCKETS * (sizeof(sample_bucket_t) + 1) : 0;
}
