/* Single-producer single-consumer event ring: one per app thread, drained by the flusher. */
#ifndef STACKWATCH_AGENT_RING_H
#define STACKWATCH_AGENT_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* EV_ALLOC_PY: a CPython small object sampled at sample_py_rate (sampled
 * mode of STACKWATCH_PYTHON_ALLOCATORS), weighted with that rate. */
enum { EV_ALLOC = 0, EV_FREE = 1, EV_NOTE = 2, EV_ALLOC_FORCED = 3, EV_ALLOC_PY = 4 };

#define EV_TID_SHIFT 3

/* One allocation event; 32 bytes so two share a cache line. */
typedef struct ev_s {
    uint64_t ts;       /* clock_now_ns(): after the real allocation, before the real free */
    uint64_t addr;     /* block address */
    uint64_t size;     /* EV_ALLOC: requested size; EV_FREE: 0 */
    uint32_t stack;    /* EV_ALLOC: intern index; EV_NOTE: note slot; EV_FREE: 0 */
    uint32_t kind_tid; /* bits 0-2: EV_*; bits 3-31: kernel tid (pid_max <= 2^22) */
} ev_t;

static inline uint32_t ev_kind(const ev_t *e)
{
    return e->kind_tid & 7u;
}

static inline uint32_t ev_tid(const ev_t *e)
{
    return e->kind_tid >> EV_TID_SHIFT;
}

/* 1 when the flusher issues membarrier(PRIVATE_EXPEDITED) before reading
 * busy flags, so producers may publish them with plain stores. */
extern int ring_asym_fence;

enum { RING_LIVE = 0, RING_ORPHAN = 1 };

typedef struct ring_s {
    /* Producer side. head is written only by the owning thread. */
    _Alignas(64) _Atomic uint64_t head;  /* next slot to write */
    uint64_t tail_cache;                 /* producer's last view of tail */
    _Atomic uint64_t dropped;            /* events dropped when full; producer writes */
    _Atomic uint64_t waits;              /* times the producer waited for space */
    _Atomic uint32_t busy;               /* 1 from before an event's timestamp until it is pushed */
    _Atomic uint32_t inside;             /* 1 while the owner records a call (rec_enter..rec_leave):
                                          * a detach closes the agent's fds only when none is */
    _Atomic uint64_t pending_ts;         /* ts of an event waiting for space (0: none) */
    _Atomic uint64_t n_alloc, b_alloc;   /* every allocation seen, sampled or not */
    _Atomic uint64_t n_free;             /* every free seen */
    _Atomic uint64_t sc_hits;            /* captures answered by the stack cache */
    _Atomic uint64_t offline;            /* events not recorded: no collector connected */
    uint64_t drop_tail;                  /* tail when the last drop happened (producer only) */
    int dropping;                        /* dropped, the flusher has not freed a slot since */
    /* Consumer side. tail is written only by the flusher. */
    _Alignas(64) _Atomic uint64_t tail;  /* next slot to read */
    uint64_t tail_ts;                    /* ts of the event before tail (flusher only) */
    /* Shared, set once at creation (state and next excepted). */
    _Alignas(64) uint32_t mask;          /* capacity - 1 (capacity a power of two) */
    uint32_t tid;                        /* kernel tid of the owner */
    _Atomic int state;                   /* RING_LIVE, or RING_ORPHAN after thread exit */
    struct ring_s *_Atomic next;         /* registry list link (tstate.c) */
    size_t map_bytes;                    /* size of the mmap holding this ring */
    void *scache;                        /* the owner's stack cache (RING_SCACHE_BYTES, hook.c) */
    void *uwt;                           /* the owner's unwinder state (RING_UWT_BYTES, unwind.c) */
    uint64_t created_ts;                 /* creation time: lower bound of its first event */
    ev_t slots[];                        /* capacity events */
} ring_t;

/* Bytes after the slots for the owning thread's stack cache. */
#define RING_SCACHE_BYTES (104u << 10)
/* Bytes after the stack cache for the owning thread's unwinder state: kept
 * out of TLS so that the agent's static TLS stays small enough for dlopen
 * (stackctl attach): glibc reserves only ~1.5 KiB of static TLS for
 * libraries loaded later. */
#define RING_UWT_BYTES 4096u

/* Bytes mapped for a ring of cap events (with the stack cache). */
size_t ring_map_size(uint32_t cap);

/* Maps a ring of cap events (a power of two). Returns NULL on failure.
 * Uses mmap only: safe inside the malloc hook. */
ring_t *ring_create(uint32_t cap, uint32_t tid);

/* Unmaps a ring nobody produces into or consumes from any more. */
void ring_destroy(ring_t *r);

/* Producer: the thread is about to take an event timestamp. The flusher
 * never sends past the last event of a busy ring, so events of all threads
 * leave in global time order (see flush.c, watermark). Ordered before the
 * clock read: by the flusher's membarrier when available (a plain store
 * here), else by a full fence. */
static inline void ring_busy_begin(ring_t *r)
{
    if (__builtin_expect(ring_asym_fence, 1)) { /* Linux >= 4.14: the straight line */
        atomic_store_explicit(&r->busy, 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst); /* compiler order only */
    } else {
        atomic_store_explicit(&r->busy, 1, memory_order_seq_cst);
    }
}

/* Producer: the owner is recording a call from here until ring_inside_end.
 * Published like busy (a plain store when the reader issues membarrier);
 * the caller then loads agent.recording and backs off if it is 0, so a
 * detach that stored 0 and found no ring inside knows none will touch the
 * agent's fds again. */
static inline void ring_inside_begin(ring_t *r)
{
    if (__builtin_expect(ring_asym_fence, 1)) {
        atomic_store_explicit(&r->inside, 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst); /* compiler order only */
    } else {
        atomic_store_explicit(&r->inside, 1, memory_order_seq_cst);
    }
}

static inline void ring_inside_end(ring_t *r)
{
    atomic_store_explicit(&r->inside, 0, memory_order_release);
}

/* Producer: the event is pushed. release: the push is visible first. */
static inline void ring_busy_end(ring_t *r)
{
    atomic_store_explicit(&r->busy, 0, memory_order_release);
}

/* Producer: appends ev. Returns 1, or 0 when the ring is full. Lock-free,
 * no syscall. */
static inline int ring_try_push(ring_t *r, const ev_t *ev)
{
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (h - r->tail_cache > r->mask) {
        /* acquire: the consumer finished reading the slots before this tail. */
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (h - r->tail_cache > r->mask)
            return 0;
    }
    r->slots[h & r->mask] = *ev;
    /* release: the slot's contents are visible before the new head. */
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
    return 1;
}

/* Producer: ring_try_push in two steps, for an event written in place (no
 * copy through the stack): the slot of the next event and its index *h,
 * or NULL when the ring is full (then push a copy: ring_try_push or
 * flush_push_slow). */
static inline ev_t *ring_reserve(ring_t *r, uint64_t *h)
{
    uint64_t i = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (i - r->tail_cache > r->mask) {
        /* acquire: the consumer finished reading the slots before this tail. */
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (i - r->tail_cache > r->mask)
            return NULL;
    }
    *h = i;
    return &r->slots[i & r->mask];
}

/* Producer: the event written at ring_reserve's slot h is pushed. release:
 * its contents are visible before the new head. */
static inline void ring_publish(ring_t *r, uint64_t h)
{
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
}

/* Producer: exact totals (single writer: load and store, no locked RMW). */
static inline void ring_count_alloc(ring_t *r, uint64_t size)
{
    atomic_store_explicit(&r->n_alloc, atomic_load_explicit(&r->n_alloc, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&r->b_alloc,
                          atomic_load_explicit(&r->b_alloc, memory_order_relaxed) + size,
                          memory_order_relaxed);
}

/* An event made while no collector is connected: not recorded, counted
 * (single writer, like the totals). */
static inline void ring_count_offline(ring_t *r)
{
    atomic_store_explicit(&r->offline, atomic_load_explicit(&r->offline, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static inline void ring_count_free(ring_t *r)
{
    atomic_store_explicit(&r->n_free, atomic_load_explicit(&r->n_free, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* Consumer: the readable events as up to two contiguous spans. Returns the total. */
size_t ring_peek(ring_t *r, const ev_t **a, size_t *na, const ev_t **b, size_t *nb);

/* Consumer: releases the first n events returned by ring_peek. */
void ring_consume(ring_t *r, size_t n);

/* Consumer: a lower bound of the timestamp of any event the producer pushes
 * from now on: the last pushed event's (a thread's clock never goes back).
 * An unconsumed slot stays intact (only the consumer frees slots); a consumed
 * one may already hold a newer event, so for an empty ring the timestamp is
 * the one ring_consume kept. */
static inline uint64_t ring_ts_floor(ring_t *r)
{
    uint64_t p = atomic_load_explicit(&r->pending_ts, memory_order_acquire);
    if (p)
        return p; /* waiting on a full ring: its next event is exactly this */
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    if (h != t)
        return r->slots[(h - 1) & r->mask].ts;
    return t ? r->tail_ts : r->created_ts;
}

/* Events waiting (either side may call; approximate while the producer runs). */
size_t ring_count(ring_t *r);

#endif
