/* Per-thread agent state in initial-exec TLS, and the registry of every thread's ring. */
#include "tstate.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "unwind.h"

_Static_assert(RING_UWT_BYTES >= UNWIND_THREAD_BYTES, "ring too small for the unwinder state");

__thread tstate_t tstate __attribute__((tls_model("initial-exec")));

static pthread_key_t ring_key;
static int key_ok;
static ring_t *_Atomic ring_list;
static _Atomic uint64_t reaped_dropped, reaped_waits, reaped_events;
static _Atomic uint64_t reaped_allocs, reaped_alloc_bytes, reaped_frees, reaped_sc_hits;
static _Atomic uint64_t reaped_offline;
static _Atomic uint64_t ring_bytes, threads_total;
static _Atomic int create_failed_logged;

/* TSD destructor: the thread is exiting. Its ring stays mapped and usable:
 * destructors of other libraries may still free memory on this thread. The
 * flusher unmaps it once the kernel reports the thread gone. */
static void ring_orphan(void *p)
{
    ring_t *r = p;
    /* release: everything pushed so far is visible to a flusher that sees ORPHAN. */
    atomic_store_explicit(&r->state, RING_ORPHAN, memory_order_release);
}

int tstate_init(void)
{
    int rc = pthread_key_create(&ring_key, ring_orphan);
    key_ok = rc == 0;
    return -rc;
}

ring_t *tstate_ring(tstate_t *t)
{
    if (t->ring)
        return t->ring;
    if (t->no_ring)
        return NULL;
    if (!t->tid)
        t->tid = (uint32_t)syscall(SYS_gettid);
    ring_t *r = ring_create(cfg.ring_events, t->tid);
    if (!r) {
        t->no_ring = 1;
        if (!atomic_exchange(&create_failed_logged, 1))
            log_msg("cannot map a %u-event ring (%s); this thread runs untraced",
                    cfg.ring_events, "mmap failed");
        return NULL;
    }
    ring_t *head = atomic_load_explicit(&ring_list, memory_order_relaxed);
    do {
        atomic_store_explicit(&r->next, head, memory_order_relaxed);
        /* release: the ring's fields are initialized before the flusher can see it. */
    } while (!atomic_compare_exchange_weak_explicit(&ring_list, &head, r, memory_order_release,
                                                    memory_order_relaxed));
    atomic_fetch_add_explicit(&ring_bytes, r->map_bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&threads_total, 1, memory_order_relaxed);
    t->ring = r;
    unwind_thread_set(r->uwt);
    /* pthread_setspecific may calloc for high keys: the guard is set here. */
    if (key_ok)
        pthread_setspecific(ring_key, r);
    return r;
}

void tstate_each_ring(void (*fn)(ring_t *r, void *arg), void *arg)
{
    /* acquire: pairs with the release in tstate_ring. */
    for (ring_t *r = atomic_load_explicit(&ring_list, memory_order_acquire); r;
         r = atomic_load_explicit(&r->next, memory_order_acquire))
        fn(r, arg);
}

static int thread_gone(uint32_t tid)
{
    return syscall(SYS_tgkill, getpid(), (pid_t)tid, 0) < 0 && errno == ESRCH;
}

/* Only the flusher unlinks; producers only push at the head. Unlinking a
 * non-head node touches links no producer writes; unlinking the head needs
 * a CAS because a producer may push concurrently. */
static void unlink_ring(ring_t *victim)
{
    ring_t *head = atomic_load_explicit(&ring_list, memory_order_acquire);
    if (head == victim) {
        ring_t *next = atomic_load_explicit(&victim->next, memory_order_relaxed);
        if (atomic_compare_exchange_strong_explicit(&ring_list, &head, next, memory_order_acq_rel,
                                                    memory_order_acquire))
            return;
    }
    for (ring_t *p = head; p; p = atomic_load_explicit(&p->next, memory_order_acquire)) {
        ring_t *n = atomic_load_explicit(&p->next, memory_order_acquire);
        if (n == victim) {
            atomic_store_explicit(&p->next, atomic_load_explicit(&victim->next, memory_order_relaxed),
                                  memory_order_release);
            return;
        }
    }
}

/* Stacks of threads that are gone, as glibc may keep them for reuse (the
 * flusher's alone: written in tstate_reap, read in tstate_dead_stacks). */
#define DEAD_MAX 256u
static uint64_t dead_lo[DEAD_MAX], dead_fhi[DEAD_MAX], dead_hi[DEAD_MAX];
static uint32_t dead_n;

static void dead_add(const ring_t *r)
{
    uint64_t lo, fhi, hi;
    if (!unwind_state_frames(r->uwt, &lo, &fhi, &hi))
        return;
    /* Rings are reaped in no particular order, so an entry never replaces
     * one that merely overlaps it: collectord keeps only those that match
     * a mapping as it is at the scan. The same stack again replaces itself. */
    uint32_t k = 0;
    for (uint32_t i = 0; i < dead_n; i++) {
        if (dead_lo[i] == lo && dead_hi[i] == hi)
            continue;
        dead_lo[k] = dead_lo[i];
        dead_fhi[k] = dead_fhi[i];
        dead_hi[k] = dead_hi[i];
        k++;
    }
    dead_n = k;
    if (dead_n == DEAD_MAX) {
        /* Full: the oldest goes. */
        memmove(dead_lo, dead_lo + 1, (DEAD_MAX - 1) * sizeof *dead_lo);
        memmove(dead_fhi, dead_fhi + 1, (DEAD_MAX - 1) * sizeof *dead_fhi);
        memmove(dead_hi, dead_hi + 1, (DEAD_MAX - 1) * sizeof *dead_hi);
        dead_n--;
    }
    dead_lo[dead_n] = lo;
    dead_fhi[dead_n] = fhi;
    dead_hi[dead_n] = hi;
    dead_n++;
}

typedef struct live_check_s {
    uint64_t lo, hi;
    int hit;
} live_check_t;

static void overlaps_live(ring_t *r, void *arg)
{
    live_check_t *c = arg;
    uint64_t lo, fhi, hi;
    if (atomic_load_explicit(&r->state, memory_order_acquire) != RING_ORPHAN &&
        unwind_state_frames(r->uwt, &lo, &fhi, &hi) && lo < c->hi && c->lo < hi)
        c->hit = 1;
}

size_t tstate_dead_stacks(uint64_t *triples, size_t max)
{
    size_t n = 0;
    for (uint32_t i = 0; i < dead_n && n < max; i++) {
        /* A live thread of ours runs on it again: not dead any more. */
        live_check_t c = { dead_lo[i], dead_hi[i], 0 };
        tstate_each_ring(overlaps_live, &c);
        if (c.hit)
            continue;
        triples[3 * n] = dead_lo[i];
        triples[3 * n + 1] = dead_fhi[i];
        triples[3 * n + 2] = dead_hi[i];
        n++;
    }
    return n;
}

int tstate_reap(void)
{
    int n = 0;
    ring_t *r = atomic_load_explicit(&ring_list, memory_order_acquire);
    while (r) {
        ring_t *next = atomic_load_explicit(&r->next, memory_order_acquire);
        /* Gone first, then empty: a dying thread may still push until the
         * kernel has reaped it. */
        if (atomic_load_explicit(&r->state, memory_order_acquire) == RING_ORPHAN &&
            thread_gone(r->tid) && ring_count(r) == 0) {
            unlink_ring(r);
            atomic_fetch_add(&reaped_dropped, atomic_load(&r->dropped));
            atomic_fetch_add(&reaped_waits, atomic_load(&r->waits));
            atomic_fetch_add(&reaped_events, atomic_load(&r->head));
            atomic_fetch_add(&reaped_allocs, atomic_load(&r->n_alloc));
            atomic_fetch_add(&reaped_alloc_bytes, atomic_load(&r->b_alloc));
            atomic_fetch_add(&reaped_frees, atomic_load(&r->n_free));
            atomic_fetch_add(&reaped_sc_hits, atomic_load(&r->sc_hits));
            atomic_fetch_add(&reaped_offline, atomic_load(&r->offline));
            atomic_fetch_sub(&ring_bytes, r->map_bytes);
            dead_add(r);
            ring_destroy(r);
            n++;
        }
        r = next;
    }
    return n;
}

static void sum_ring(ring_t *r, void *arg)
{
    uint64_t *s = arg;
    s[0] += atomic_load_explicit(&r->dropped, memory_order_relaxed);
    s[1] += atomic_load_explicit(&r->waits, memory_order_relaxed);
    s[2] += atomic_load_explicit(&r->head, memory_order_relaxed);
}

uint64_t tstate_events(void)
{
    uint64_t s[3] = { 0, 0, 0 };
    tstate_each_ring(sum_ring, s);
    return s[2] + atomic_load(&reaped_events);
}

uint64_t tstate_dropped(void)
{
    uint64_t s[3] = { 0, 0, 0 };
    tstate_each_ring(sum_ring, s);
    return s[0] + atomic_load(&reaped_dropped);
}

uint64_t tstate_waits(void)
{
    uint64_t s[3] = { 0, 0, 0 };
    tstate_each_ring(sum_ring, s);
    return s[1] + atomic_load(&reaped_waits);
}

static void sum_hits(ring_t *r, void *arg)
{
    *(uint64_t *)arg += atomic_load_explicit(&r->sc_hits, memory_order_relaxed);
}

uint64_t tstate_cache_hits(void)
{
    uint64_t n = 0;
    tstate_each_ring(sum_hits, &n);
    return n + atomic_load(&reaped_sc_hits);
}

static void sum_totals(ring_t *r, void *arg)
{
    uint64_t *s = arg;
    s[0] += atomic_load_explicit(&r->n_alloc, memory_order_relaxed);
    s[1] += atomic_load_explicit(&r->b_alloc, memory_order_relaxed);
    s[2] += atomic_load_explicit(&r->n_free, memory_order_relaxed);
}

void tstate_totals(uint64_t *allocs, uint64_t *alloc_bytes, uint64_t *frees)
{
    uint64_t s[3] = { 0, 0, 0 };
    tstate_each_ring(sum_totals, s);
    *allocs = s[0] + atomic_load(&reaped_allocs);
    *alloc_bytes = s[1] + atomic_load(&reaped_alloc_bytes);
    *frees = s[2] + atomic_load(&reaped_frees);
}

static void sum_offline(ring_t *r, void *arg)
{
    *(uint64_t *)arg += atomic_load_explicit(&r->offline, memory_order_relaxed);
}

uint64_t tstate_offline(void)
{
    uint64_t n = 0;
    tstate_each_ring(sum_offline, &n);
    return n + atomic_load(&reaped_offline);
}

uint64_t tstate_ring_bytes(void)
{
    return atomic_load(&ring_bytes);
}

uint64_t tstate_threads(void)
{
    return atomic_load(&threads_total);
}

static void discard_ring(ring_t *r, void *arg)
{
    (void)arg;
    ring_consume(r, ring_count(r));
    atomic_store_explicit(&r->n_alloc, 0, memory_order_relaxed);
    atomic_store_explicit(&r->b_alloc, 0, memory_order_relaxed);
    atomic_store_explicit(&r->n_free, 0, memory_order_relaxed);
    atomic_store_explicit(&r->dropped, 0, memory_order_relaxed);
    atomic_store_explicit(&r->waits, 0, memory_order_relaxed);
    atomic_store_explicit(&r->sc_hits, 0, memory_order_relaxed);
}

void tstate_discard(void)
{
    tstate_each_ring(discard_ring, NULL);
    atomic_store(&reaped_dropped, 0);
    atomic_store(&reaped_waits, 0);
    atomic_store(&reaped_allocs, 0);
    atomic_store(&reaped_alloc_bytes, 0);
    atomic_store(&reaped_frees, 0);
    atomic_store(&reaped_sc_hits, 0);
}

void tstate_fork_child(void)
{
    ring_t *r = atomic_load_explicit(&ring_list, memory_order_relaxed);
    while (r) {
        ring_t *next = atomic_load_explicit(&r->next, memory_order_relaxed);
        ring_destroy(r);
        r = next;
    }
    atomic_store(&ring_list, NULL);
    atomic_store(&reaped_dropped, 0);
    atomic_store(&reaped_waits, 0);
    atomic_store(&reaped_events, 0);
    atomic_store(&reaped_allocs, 0);
    atomic_store(&reaped_alloc_bytes, 0);
    atomic_store(&reaped_frees, 0);
    atomic_store(&reaped_sc_hits, 0);
    atomic_store(&reaped_offline, 0);
    atomic_store(&ring_bytes, 0);
    atomic_store(&threads_total, 0);
    tstate.ring = NULL;
    tstate.no_ring = 0;
    tstate.tid = 0; /* the child has a new tid */
    unwind_thread_set(NULL); /* it was in an unmapped ring */
    if (key_ok)
        pthread_setspecific(ring_key, NULL);
}

/* ---------------------------------------------------------------- fork gate */

_Atomic int tstate_fork_gate;
uint32_t tstate_fork_gate_tid;

static void count_inside_other(ring_t *r, void *arg)
{
    /* acquire: pairs with the release in ring_inside_end. */
    if (r->tid != tstate_fork_gate_tid && atomic_load_explicit(&r->inside, memory_order_acquire))
        (*(int *)arg)++;
}

int tstate_fork_gate_close(uint32_t tid, int timeout_ms)
{
    tstate_fork_gate_tid = tid;
    atomic_store(&tstate_fork_gate, 1);
    /* Every thread passes a barrier: one that set inside before it read the
     * gate is seen inside below; one that did after sees the gate. */
    if (!ring_asym_fence || syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
        atomic_thread_fence(memory_order_seq_cst);
    for (int waited_us = 0;; waited_us += 50) {
        int n = 0;
        tstate_each_ring(count_inside_other, &n);
        if (!n)
            return 0;
        if (waited_us >= timeout_ms * 1000)
            return -EBUSY;
        struct timespec ts = { 0, 50000 };
        nanosleep(&ts, NULL);
    }
}

void tstate_fork_gate_open(void)
{
    atomic_store(&tstate_fork_gate, 0);
    tstate_fork_gate_tid = 0;
}

