/* The interposers: the malloc family, CPython's allocator domains, the calls around them. */
#include "hook.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <linux/seccomp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"
#include "arm.h"
#include "clock.h"
#include "config.h"
#include "creds.h"
#include "emit.h"
#include "got.h"
#include "intern.h"
#include "log.h"
#include "modmap.h"
#include "pyarena.h"
#include "pyframes.h"
#include "real.h"
#include "ring.h"
#include "sample.h"
#include "state.h"
#include "tstate.h"
#include "unwind.h"

#define EXPORT __attribute__((visibility("default")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
/* The interposer's frame record: [saved rbp, return address into the
 * caller]; the return address is the allocation's call site, pcs[0] of its
 * stack, and where it is stored keys the stack cache. */
#define CALL_FRAME() ((const uint64_t *)__builtin_frame_address(0))

/* ---------------------------------------------------------------- start */

/* Starts the agent (agent_init) unless it started already, telling it
 * whether the program's malloc is this library's; guard held. */
static void start(void)
{
    if (atomic_load(&agent_init_state) != 0)
        return;
    real_resolve();
    if (agent_init(hook_interposing()) && cfg.py_allocators)
        hook_pyalloc_enable();
}

/* The library's constructor. */
__attribute__((constructor)) static void hook_start(void)
{
    int guard = tstate.guard;
    tstate.guard = 1; /* our own start-up allocations are not the app's */
    start();
    tstate.guard = guard;
}

/* Called from a hook before the agent's constructor ran (another library's
 * constructor allocating first): starts the agent now, with this thread's
 * guard set by the caller. Returns 1 if it records. Only the first caller
 * starts it; any other thread meanwhile (none at process start) records
 * nothing until it is done. */
__attribute__((noinline)) static int early_start(void)
{
    start();
    return atomic_load(&agent.recording);
}

/* ---------------------------------------------------------------- recording */

/* errno's address on this thread, fixed for the thread's life (a thread
 * reusing a dead one's TLS starts from zeroed TLS, or the same block):
 * kept, so a recorded call saves and restores errno with plain loads and
 * stores instead of two calls of __errno_location. */
static inline int *errno_of(tstate_t *t)
{
    int *p = t->errp;
    if (UNLIKELY(p == NULL))
        p = t->errp = &errno;
    return p;
}

/* Enters the agent on this thread: 0 when the event must not be recorded
 * (reentrant call, not recording). On 1 the guard is set and errno saved. */
static inline __attribute__((always_inline)) int rec_enter(tstate_t *t, int *saved_errno)
{
    if (UNLIKELY(t->guard))
        return 0;
    if (UNLIKELY(!atomic_load_explicit(&agent.recording, memory_order_relaxed))) {
        int child = atomic_load_explicit(&agent.child_pending, memory_order_relaxed);
        int early = !child && atomic_load_explicit(&agent_init_state, memory_order_relaxed) == 0;
        if (LIKELY(!child && !early))
            return 0;
        /* A fork child's first event, or an allocation before the agent's
         * constructor ran (a library constructor first): start now. */
        *saved_errno = errno;
        t->guard = 1;
        int ok = child ? agent_child_start() : early_start();
        t->guard = 0;
        errno = *saved_errno;
        if (!ok)
            return 0;
    }
    /* A Python process whose interpreter began finalizing is ending: what
     * it frees now is its teardown (one load per event, Python only). */
    if (UNLIKELY(agent_py_fin != NULL) &&
        UNLIKELY(atomic_load_explicit(agent_py_fin, memory_order_relaxed) != 0)) {
        *saved_errno = errno;
        agent_begin_end("python finalizing");
        errno = *saved_errno;
        return 0;
    }
    ring_t *r = t->ring;
    if (LIKELY(r != NULL)) {
        /* Inside from here (a detach waits for it before closing the
         * agent's fds), then recording is looked at again: stopped in
         * between, nothing is recorded. */
        ring_inside_begin(r);
        if (UNLIKELY(!atomic_load_explicit(&agent.recording, memory_order_relaxed))) {
            ring_inside_end(r);
            return 0;
        }
    }
    *saved_errno = *errno_of(t);
    t->guard = 1;
    return 1;
}

/* rec_enter said no: if only because no collector is connected now (not a
 * reentrant call, not before the start or after the end), the event is
 * counted, so the gap after the reconnect says how much was missed. */
static inline void count_offline(tstate_t *t)
{
    if (t->guard || !agent.started || atomic_load_explicit(&agent.end_ts, memory_order_relaxed))
        return;
    ring_t *r = t->ring;
    if (UNLIKELY(r == NULL)) {
        /* A thread whose first event comes while no collector is
         * connected: its ring (where the count lives) is made now, as it
         * would be on a recorded first event, else what it does until the
         * reconnect is missing from every count. */
        if (t->no_ring)
            return;
        int e = errno;
        t->guard = 1;
        r = tstate_ring(t);
        t->guard = 0;
        errno = e;
        if (!r)
            return;
    }
    ring_count_offline(r);
}

static inline void rec_leave(tstate_t *t, int saved_errno)
{
    if (LIKELY(t->ring != NULL))
        ring_inside_end(t->ring);
    t->guard = 0;
    *errno_of(t) = saved_errno;
}

/* This thread's ring, created on first use; NULL if it cannot be. */
static inline ring_t *ring_of(tstate_t *t)
{
    ring_t *r = t->ring;
    if (UNLIKELY(!r)) {
        r = tstate_ring(t);
        /* A first ring: inside from now on, as rec_enter does. */
        if (r) {
            ring_inside_begin(r);
            if (!atomic_load_explicit(&agent.recording, memory_order_relaxed))
                return NULL;
        }
    }
    return r;
}

/* ---------------------------------------------------------------- stack cache */

/* Per thread (in its ring's mapping): captured stacks by call site and the
 * stack address of its return address. A hit needs the same call site at
 * the same place, the same module-map generation, and every return address
 * of the cached stack still in its slot: then the caller's frames are the
 * same activations as when it was captured, and its interned index is
 * reused without unwinding or hashing. A loop allocating at a few depths
 * below a fixed outer stack unwinds each depth once. */
#define SC_SETS 128u      /* two ways each */
#define SC_ENTRIES (2 * SC_SETS)
#define SC_FRAMES CFG_DEPTH_DEFAULT /* a stack cut at the default depth is cached too */

typedef struct sc_ent_s {
    uint64_t ra0, slot0;      /* key: call site, where its return address is */
    uint32_t gen, idx;        /* module-map generation, interned index */
    uint32_t n, used;         /* frames (0: empty); last use, for eviction */
    uint64_t pcs[SC_FRAMES];
    uint32_t off[SC_FRAMES];  /* where pcs[k] is stored: slot0 + off[k] */
} sc_ent_t;

_Static_assert(SC_ENTRIES * sizeof(sc_ent_t) <= RING_SCACHE_BYTES, "stack cache too big");

/* The stack-cache set of a call site and the stack address of its return address. */
static inline sc_ent_t *sc_set(ring_t *r, uint64_t ra0, uint64_t slot0)
{
    /* One multiply: its top bits depend on every bit of both keys. */
    uint64_t h = ((ra0 * 0x9e3779b97f4a7c15ULL) ^ slot0) * 0xbf58476d1ce4e5b9ULL;
    return &((sc_ent_t *)r->scache)[2 * (h >> (64 - 7))];
}
_Static_assert(SC_SETS == 1u << 7, "sc_set takes 7 bits");

/* capture's miss: unwinds, interns, and caches the stack when its return
 * addresses are found on this thread's stack. Out of line: the hit keeps
 * no big frame and no register saves. */
__attribute__((noinline)) static uint32_t capture_slow(ring_t *r, const uint64_t *frame,
                                                       uint32_t gen)
{
    uint64_t ra0 = frame[1], slot0 = (uint64_t)(uintptr_t)&frame[1];
    sc_ent_t *ce = NULL;
    if (LIKELY(r != NULL) && unwind_on_stack(slot0)) {
        sc_ent_t *set = sc_set(r, ra0, slot0);
        /* The thread's allocation count is its clock: evict the older way. */
        uint32_t now = (uint32_t)atomic_load_explicit(&r->n_alloc, memory_order_relaxed);
        if (set[0].ra0 == ra0 && set[0].slot0 == slot0)
            ce = &set[0];
        else if (set[1].ra0 == ra0 && set[1].slot0 == slot0)
            ce = &set[1];
        else
            ce = (int32_t)(set[0].used - set[1].used) <= 0 ? &set[0] : &set[1];
        ce->used = now;
    }
    if (UNLIKELY(atomic_load_explicit(&tstate_fork_gate, memory_order_relaxed)) &&
        (!r || r->tid != tstate_fork_gate_tid)) {
        /* Another thread is forking: no libunwind now (see tstate.h). */
        atomic_fetch_add_explicit(&agent.unwind_failures, 1, memory_order_relaxed);
        return INTERN_NONE;
    }
    uint64_t pcs[CFG_DEPTH_MAX];
    int truncated = 0;
    int n = unwind_capture(pcs, cfg.depth, &truncated);
    uint32_t idx = INTERN_NONE;
    if (UNLIKELY(n <= 0))
        atomic_fetch_add_explicit(&agent.unwind_failures, 1, memory_order_relaxed);
    else if (UNLIKELY((idx = intern_stack(pcs, (uint32_t)n, gen, truncated)) == INTERN_NONE))
        atomic_fetch_add_explicit(&agent.intern_full, 1, memory_order_relaxed);
    if (ce) {
        ce->n = 0;
        if (idx != INTERN_NONE && n <= SC_FRAMES && pcs[0] == ra0 &&
            unwind_find_slots(pcs, n, slot0, ce->off)) {
            memcpy(ce->pcs, pcs, (size_t)n * sizeof *pcs);
            ce->ra0 = ra0;
            ce->slot0 = slot0;
            ce->gen = gen;
            ce->idx = idx;
            ce->n = (uint32_t)n;
        }
    }
    return idx;
}

/* Captures the caller's stack and interns it. Guard held, r this thread's
 * ring, frame the interposer's frame record. A hit in the stack cache needs
 * no bounds check of slot0: an entry is filled only for a slot0 on this
 * thread's stack (unwind_find_slots checks it), the cache lives and dies
 * with the thread's ring, and a thread's stack does not move; so the same
 * slot0 is on that stack, and so are the slots above it. */
static inline __attribute__((always_inline)) uint32_t capture(ring_t *r, const uint64_t *frame)
{
    uint64_t ra0 = frame[1], slot0 = (uint64_t)(uintptr_t)&frame[1];
    uint32_t gen = modmap_gen();
    if (LIKELY(r != NULL)) {
        sc_ent_t *set = sc_set(r, ra0, slot0), *ce = NULL;
        if (set[0].ra0 == ra0 && set[0].slot0 == slot0)
            ce = &set[0];
        else if (set[1].ra0 == ra0 && set[1].slot0 == slot0)
            ce = &set[1];
        if (ce && ce->n && ce->gen == gen && unwind_still(ce->pcs, slot0, ce->off, (int)ce->n)) {
            ce->used = (uint32_t)atomic_load_explicit(&r->n_alloc, memory_order_relaxed);
            atomic_store_explicit(&r->sc_hits,
                                  atomic_load_explicit(&r->sc_hits, memory_order_relaxed) + 1,
                                  memory_order_relaxed); /* single writer */
            return ce->idx;
        }
    }
    return capture_slow(r, frame, gen);
}

/* Pushes one event, written in place in its ring slot (a copy through the
 * stack costs more); a full ring takes a copy through the slow path. */
static inline __attribute__((always_inline)) void emit_ev(ring_t *r, uint64_t ts, uint64_t addr,
                                                         uint64_t size, uint32_t stack,
                                                         uint32_t kind_tid)
{
    uint64_t h;
    ev_t *s = ring_reserve(r, &h);
    if (LIKELY(s != NULL)) {
        s->ts = ts;
        s->addr = addr;
        s->size = size;
        s->stack = stack;
        s->kind_tid = kind_tid;
        ring_publish(r, h);
    } else {
        ev_t ev = { .ts = ts, .addr = addr, .size = size, .stack = stack, .kind_tid = kind_tid };
        flush_push_slow(r, &ev);
    }
}

/* Pushes ALLOC (kind EV_ALLOC or EV_ALLOC_FORCED) stamped now; returns the
 * stamp. Guard held, ring busy. */
static inline uint64_t emit_alloc(tstate_t *t, ring_t *r, void *p, size_t size, uint32_t idx,
                                  uint32_t kind)
{
    uint64_t ts = clock_now_ns();
    emit_ev(r, ts, (uint64_t)(uintptr_t)p, size, idx, kind | (t->tid << EV_TID_SHIFT));
    return ts;
}

/* After an ALLOC is out: armed stacks fire (rare; one relaxed load when none). */
static inline void check_armed(tstate_t *t, ring_t *r, uint32_t idx, void *p, size_t size,
                               uint64_t ts)
{
    if (UNLIKELY(atomic_load_explicit(&arm_active, memory_order_relaxed)))
        arm_on_alloc(t, r, idx, p, size, ts);
}

/* Before a free: fired blocks get their "free @" line. */
static inline void check_fired(void *p)
{
    if (UNLIKELY(atomic_load_explicit(&arm_fired_live, memory_order_relaxed)))
        arm_on_free(p);
}

static inline void emit_free(tstate_t *t, ring_t *r, void *p, uint64_t ts)
{
    emit_ev(r, ts, (uint64_t)(uintptr_t)p, 0, 0, EV_FREE | (t->tid << EV_TID_SHIFT));
}

/* Sampled mode: whether an allocation is recorded, given whether a sample
 * point fell inside it (sample_take). Sampled: it joins the sampled set (its
 * free will be recorded) and goes out as EV_ALLOC. Else the call site of an
 * armed stack asks for the stack, and *forced says it must still be checked
 * (EV_ALLOC_FORCED: tracked for its note and free, weighted 0 in
 * estimates). */
static inline int sample_pick(int sampled, void *p, const uint64_t *frame, int *forced)
{
    if (UNLIKELY(sampled))
        return sample_insert((uint64_t)(uintptr_t)p);
    if (UNLIKELY(atomic_load_explicit(&arm_active, memory_order_relaxed)) && arm_site(frame[1])) {
        *forced = 1;
        return 1;
    }
    return 0;
}

/* Records an allocation that was picked (sample_pick, or every one when not
 * sampling): captures its stack, pushes ALLOC of kind (EV_ALLOC_FORCED when
 * forced) and lets armed stacks fire. A forced one is recorded only if its
 * own stack is armed. Guard held, r this thread's ring. */
static inline __attribute__((always_inline)) void
record_alloc(tstate_t *t, ring_t *r, void *p, size_t size, const uint64_t *frame, int forced,
             uint32_t kind)
{
    uint32_t idx = capture(r, frame);
    if (UNLIKELY(forced) && (!arm_armed(idx) || !sample_insert((uint64_t)(uintptr_t)p)))
        return; /* another stack from the same call site */
    ring_busy_begin(r);
    uint64_t ts = emit_alloc(t, r, p, size, idx, forced ? EV_ALLOC_FORCED : kind);
    ring_busy_end(r);
    check_armed(t, r, idx, p, size, ts);
}

/* FREE(p) if it is recorded (every block, or a sampled one), stamped now,
 * before the block goes back (the address may be reused at once; the ring
 * is busy from the stamp on); fired blocks get their line. Guard held. */
static inline __attribute__((always_inline)) void record_free(tstate_t *t, void *p)
{
    ring_t *r = ring_of(t);
    if (r) {
        ring_count_free(r);
        if (!sample_rate || sample_forget((uint64_t)(uintptr_t)p)) {
            ring_busy_begin(r);
            emit_free(t, r, p, clock_now_ns());
            ring_busy_end(r);
        }
    }
    check_fired(p);
}

/* What the fast path decided for note_alloc_slow. */
enum { PICK_DECIDE, PICK_SAMPLED, PICK_UNSAMPLED, PICK_DONE };

/* Sampled mode's common case, without entering the agent (no guard, no
 * errno, no call): a thread with a ring, recording, not reentrant, counts
 * the allocation and spends its byte budget, once. PICK_DONE when nothing
 * more is to be done; PICK_DECIDE when the slow path must do all of it. */
static inline int sampled_fast(tstate_t *t, ring_t *r, size_t size)
{
    if (!sample_rate || UNLIKELY(!r || t->guard) ||
        UNLIKELY(!atomic_load_explicit(&agent.recording, memory_order_relaxed)))
        return PICK_DECIDE;
    ring_count_alloc(r, size);
    if (UNLIKELY(sample_take(t, size)))
        return PICK_SAMPLED;
    return LIKELY(!atomic_load_explicit(&arm_active, memory_order_relaxed)) ? PICK_DONE
                                                                             : PICK_UNSAMPLED;
}

static void pyalloc_try_install(void);

/* STACKWATCH_PYTHON_ALLOCATORS: 0 off, 1 wanted (not yet installed), 2
 * installed, 3 given up. */
static _Atomic int pyalloc_state;

/* Out of line: the interposers' fast path stays small (no register saves). */
__attribute__((noinline)) static void note_alloc_slow(void *p, size_t size,
                                                     const uint64_t *frame, int pick)
{
    tstate_t *t = &tstate;
    int e;
    if (!rec_enter(t, &e)) {
        count_offline(t);
        return;
    }
    /* CPython's domains wanted and not hooked yet: only once an interpreter
     * is there (a C program pays two loads, not the install's attempt). */
    if (UNLIKELY(atomic_load_explicit(&pyalloc_state, memory_order_relaxed) == 1) &&
        UNLIKELY(atomic_load_explicit(&py_attached, memory_order_relaxed)))
        pyalloc_try_install();
    ring_t *r = ring_of(t);
    if (r) {
        if (pick == PICK_DECIDE) {
            ring_count_alloc(r, size);
            pick = sample_rate && sample_take(t, size) ? PICK_SAMPLED : PICK_UNSAMPLED;
        }
        int forced = 0;
        if (!sample_rate || sample_pick(pick == PICK_SAMPLED, p, frame, &forced))
            record_alloc(t, r, p, size, frame, forced, EV_ALLOC);
    }
    rec_leave(t, e);
}

static inline void note_alloc(void *p, size_t size, const uint64_t *frame)
{
    tstate_t *t = &tstate;
    int pick = sampled_fast(t, t->ring, size);
    if (LIKELY(pick == PICK_DONE))
        return;
    note_alloc_slow(p, size, frame, pick);
}

static inline void note_failed(void)
{
    if (atomic_load_explicit(&agent.recording, memory_order_relaxed))
        atomic_fetch_add_explicit(&agent.failed_calls, 1, memory_order_relaxed);
}

/* ---------------------------------------------------------------- interposers */

EXPORT void *malloc(size_t size)
{
    if (UNLIKELY(!real_ready()))
        return real_arena_alloc(size, 16);
    void *p = real_fn.malloc(size);
    if (LIKELY(p != NULL))
        note_alloc(p, size, CALL_FRAME());
    else
        note_failed();
    return p;
}

/* free's recording part, out of line (see note_alloc_slow). */
__attribute__((noinline)) static void free_slow(void *p)
{
    tstate_t *t = &tstate;
    int e;
    if (rec_enter(t, &e)) {
        record_free(t, p); /* before the real free */
        rec_leave(t, e);
    } else {
        count_offline(t);
    }
    real_fn.free(p);
}

EXPORT void free(void *p)
{
    if (!p || UNLIKELY(real_arena_owns(p)))
        return;
    if (UNLIKELY(!real_fn.free) && !real_ready())
        return; /* cannot happen for blocks we handed out; never crash */
    tstate_t *t = &tstate;
    ring_t *fr = t->ring;
    /* Sampled mode's common case: an unsampled block, nothing fired. */
    if (sample_rate && LIKELY(fr && !t->guard) &&
        LIKELY(atomic_load_explicit(&agent.recording, memory_order_relaxed)) &&
        LIKELY(!atomic_load_explicit(&arm_fired_live, memory_order_relaxed)) &&
        LIKELY(sample_surely_not((uint64_t)(uintptr_t)p))) {
        ring_count_free(fr);
        real_fn.free(p);
        return;
    }
    free_slow(p);
}

EXPORT void *calloc(size_t n, size_t size)
{
    if (UNLIKELY(!real_ready())) {
        size_t total;
        if (__builtin_mul_overflow(n, size, &total))
            return NULL;
        return real_arena_alloc(total, 16); /* static memory: already zero */
    }
    void *p = real_fn.calloc(n, size);
    if (LIKELY(p != NULL))
        note_alloc(p, n * size, CALL_FRAME());
    else
        note_failed();
    return p;
}

/* realloc and reallocarray: FREE(old) stamped before the call, ALLOC(new)
 * after it; realloc(p, 0) that frees is a FREE; a failure records nothing. */
static void *do_realloc(void *old, size_t size, const uint64_t *frame)
{
    if (UNLIKELY(!real_ready())) {
        void *np = real_arena_alloc(size, 16);
        if (np && old)
            memcpy(np, old, real_arena_size(old) < size ? real_arena_size(old) : size);
        return np;
    }
    if (UNLIKELY(old && real_arena_owns(old))) {
        if (size == 0)
            return NULL;
        void *np = real_fn.malloc(size);
        if (np) {
            memcpy(np, old, real_arena_size(old) < size ? real_arena_size(old) : size);
            note_alloc(np, size, frame);
        }
        return np;
    }
    tstate_t *t = &tstate;
    int e;
    int rec = rec_enter(t, &e);
    if (!rec)
        count_offline(t); /* one event, whatever realloc does */
    ring_t *r = rec ? ring_of(t) : NULL;
    uint64_t ts_free = 0;
    int old_rec = 0; /* FREE(old) is recorded (sampled mode: old was sampled) */
    if (r && old) {
        /* Out of the sampled set before the address can be reused. */
        old_rec = !sample_rate || sample_forget((uint64_t)(uintptr_t)old);
        if (old_rec) {
            /* Busy from the FREE's timestamp until both events are pushed. */
            ring_busy_begin(r);
            ts_free = clock_now_ns();
        }
    }
    void *np = real_fn.realloc(old, size);
    if (r) {
        int freed = old && (np || size == 0); /* moved, in place, or realloc(p, 0) */
        if (old && !freed && old_rec && sample_rate)
            sample_insert((uint64_t)(uintptr_t)old); /* failed: old lives on, still sampled */
        if (freed)
            ring_count_free(r);
        int forced = 0, new_rec = 0;
        uint32_t idx = 0;
        uint64_t ts = 0;
        if (np) {
            ring_count_alloc(r, size);
            new_rec = !sample_rate || sample_pick(sample_take(t, size), np, frame, &forced);
            if (new_rec) {
                idx = capture(r, frame);
                if (forced && (!arm_armed(idx) || !sample_insert((uint64_t)(uintptr_t)np)))
                    new_rec = 0;
            }
        }
        if (freed && old_rec)
            emit_free(t, r, old, ts_free);
        if (new_rec) {
            if (!old_rec)
                ring_busy_begin(r);
            ts = emit_alloc(t, r, np, size, idx, forced ? EV_ALLOC_FORCED : EV_ALLOC);
        }
        if (old_rec || new_rec)
            ring_busy_end(r);
        if (freed)
            check_fired(old);
        if (new_rec)
            check_armed(t, r, idx, np, size, ts);
    }
    if (!np && !(old && size == 0))
        note_failed();
    if (rec)
        rec_leave(t, e);
    return np;
}

EXPORT void *realloc(void *old, size_t size)
{
    return do_realloc(old, size, CALL_FRAME());
}

/* glibc's reallocarray calls realloc through the PLT, which would record the
 * block twice: check the overflow here and go through realloc once. */
EXPORT void *reallocarray(void *old, size_t nmemb, size_t elem)
{
    size_t total;
    if (__builtin_mul_overflow(nmemb, elem, &total)) {
        errno = ENOMEM;
        note_failed();
        return NULL;
    }
    return do_realloc(old, total, CALL_FRAME());
}

EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    if (UNLIKELY(!real_ready())) {
        void *p = real_arena_alloc(size, align);
        if (!p)
            return ENOMEM;
        *out = p;
        return 0;
    }
    int rc = real_fn.posix_memalign(out, align, size);
    if (rc == 0)
        note_alloc(*out, size, CALL_FRAME());
    else
        note_failed();
    return rc;
}

EXPORT void *aligned_alloc(size_t align, size_t size)
{
    if (UNLIKELY(!real_ready()))
        return real_arena_alloc(size, align);
    void *p = real_fn.aligned_alloc(align, size);
    if (p)
        note_alloc(p, size, CALL_FRAME());
    else
        note_failed();
    return p;
}

EXPORT void *memalign(size_t align, size_t size)
{
    if (UNLIKELY(!real_ready()))
        return real_arena_alloc(size, align);
    void *p = real_fn.memalign(align, size);
    if (p)
        note_alloc(p, size, CALL_FRAME());
    else
        note_failed();
    return p;
}

EXPORT void *valloc(size_t size)
{
    if (UNLIKELY(!real_ready()))
        return real_arena_alloc(size, 4096);
    void *p = real_fn.valloc(size);
    if (p)
        note_alloc(p, size, CALL_FRAME());
    else
        note_failed();
    return p;
}

EXPORT void *pvalloc(size_t size)
{
    if (UNLIKELY(!real_ready()))
        return real_arena_alloc(size, 4096);
    void *p = real_fn.pvalloc(size);
    if (p)
        note_alloc(p, size, CALL_FRAME());
    else
        note_failed();
    return p;
}

EXPORT size_t malloc_usable_size(void *p)
{
    if (!p)
        return 0;
    if (real_arena_owns(p))
        return real_arena_size(p);
    if (!real_ready() || !real_fn.malloc_usable_size)
        return 0;
    return real_fn.malloc_usable_size(p);
}

/* ---------------------------------------------------------------- CPython's allocator domains */

/* With STACKWATCH_PYTHON_ALLOCATORS (sampled by default, or exact) the agent
 * chains itself in front of CPython's "mem" and "object" domains (PyMem_Malloc,
 * PyObject_Malloc and friends), whose blocks of 512 bytes or less come from
 * pymalloc's arenas and never reach malloc. The "raw" domain is malloc itself
 * and already seen. Each domain has its own functions (ctx is not relied on:
 * a reader must never pair one domain's ctx with another's function).
 *
 * Exact mode: the previous allocator runs with this thread's guard set, so a
 * block pymalloc passes on to malloc is recorded once, here, with the
 * PyObject_* call in its stack; every block is recorded as malloc's are (at
 * malloc's rate when STACKWATCH_SAMPLE is set). A block allocated before the
 * hooks and freed after them is an unknown free, counted as such.
 *
 * Sampled mode (sample_py_rate > 0): the previous allocator runs unguarded,
 * so what pymalloc hands on to malloc (blocks over 512 bytes) is recorded by
 * the malloc hooks, exactly as every malloc block is. Blocks that stay in
 * pymalloc spend this thread's own byte budget (py_left, independent of
 * malloc's): an unsampled one costs that decrement; a sampled one goes out as
 * EV_ALLOC_PY and joins the sampled set. Whether malloc made the block is
 * seen from this thread's allocation count (the malloc hooks count every
 * allocation they see: it moved during the call). A free costs the sampled
 * set's one-byte check unless the block was sampled (only sampled and forced
 * blocks are in the set; fired blocks are among them). Blocks from before the
 * hooks are simply not in the set. */
static py_mem_alloc_t pa_prev[3];

/* Sampled mode: this thread's count of allocations the malloc hooks saw. */
static inline uint64_t pa_seen(const tstate_t *t)
{
    const ring_t *r = t->ring;
    return r ? atomic_load_explicit(&r->n_alloc, memory_order_relaxed) : 0;
}

/* Sampled mode, out of line: p (n bytes) was sampled (a sample point fell
 * in it), or else its call site is armed (the caller looked: arm_site).
 * seen: pa_seen before the call. */
__attribute__((noinline)) static void pa_note_sampled(void *p, size_t n, const uint64_t *frame,
                                                     int sampled, uint64_t seen)
{
    tstate_t *t = &tstate;
    if (pa_seen(t) != seen)
        return; /* malloc made it, and its hooks recorded it */
    int e;
    if (!rec_enter(t, &e)) {
        count_offline(t);
        return;
    }
    ring_t *r = ring_of(t);
    if (r && (!sampled || sample_insert((uint64_t)(uintptr_t)p)))
        record_alloc(t, r, p, n, frame, !sampled, EV_ALLOC_PY);
    rec_leave(t, e);
}

/* Sampled mode: the decision is taken before the call (a Poisson sample
 * point falls in the next n bytes or not, whatever the block), so the common
 * case spends the budget and jumps to the previous allocator. While a stack
 * is armed (any stack: malloc's too, for as long as its captures last), one
 * unsampled small object in 64 looks whether its call site is armed: an
 * armed small-object stack gets its captures a little later, and every other
 * small object costs one more increment, not a walk of the armed sites
 * (measured: 10% of a JSON loop's instructions when every one walked them). */
#define PA_ARM_EVERY 64u

static inline int pa_wants(tstate_t *t, size_t n)
{
    if (UNLIKELY(sample_py_take(t, n)))
        return 1;
    if (UNLIKELY(atomic_load_explicit(&arm_active, memory_order_relaxed)) &&
        UNLIKELY((++t->py_arm_tick & (PA_ARM_EVERY - 1)) == 0))
        return -1;
    return 0;
}

/* ... and when a sample point fell in the block (want 1) or a stack is
 * armed (want -1: its call site may ask for this one), out of line. */
__attribute__((noinline)) static void *pa_malloc_slow(int d, int zeroed, size_t k, size_t n,
                                                     const uint64_t *frame, int want)
{
    tstate_t *t = &tstate;
    uint64_t seen = pa_seen(t);
    void *p = zeroed ? pa_prev[d].calloc(pa_prev[d].ctx, k, n)
                     : pa_prev[d].malloc(pa_prev[d].ctx, n);
    size_t size = zeroed ? k * n : n;
    if (p && !t->guard && (want > 0 || arm_site(frame[1])))
        pa_note_sampled(p, size, frame, want > 0, seen);
    return p;
}

/* Sampled mode, out of line: FREE(p) if p was sampled, stamped before the
 * block goes back (the address may be reused at once), as free does. */
__attribute__((noinline)) static void pa_forget_sampled(void *p)
{
    tstate_t *t = &tstate;
    int e;
    if (!rec_enter(t, &e)) {
        /* Not recording: forget it all the same (its address is reused). */
        sample_forget((uint64_t)(uintptr_t)p);
        return;
    }
    ring_t *r = ring_of(t);
    if (sample_forget((uint64_t)(uintptr_t)p) && r) {
        ring_busy_begin(r);
        emit_free(t, r, p, clock_now_ns());
        ring_busy_end(r);
    }
    check_fired(p);
    rec_leave(t, e);
}

/* Sampled mode's entries, inlined into each domain's function (below): the
 * common case is a budget decrement and a jump to the previous allocator. */
static inline __attribute__((always_inline)) void *pa_s_malloc(int d, size_t n,
                                                              const uint64_t *frame)
{
    int want = pa_wants(&tstate, n);
    if (LIKELY(!want))
        return pa_prev[d].malloc(pa_prev[d].ctx, n);
    return pa_malloc_slow(d, 0, 1, n, frame, want);
}

static inline __attribute__((always_inline)) void *pa_s_calloc(int d, size_t k, size_t n,
                                                              const uint64_t *frame)
{
    int want = pa_wants(&tstate, k * n);
    if (LIKELY(!want))
        return pa_prev[d].calloc(pa_prev[d].ctx, k, n);
    return pa_malloc_slow(d, 1, k, n, frame, want);
}

/* Unguarded: a block malloc made is freed through free's hook. */
static inline __attribute__((always_inline)) void pa_s_free(int d, void *p)
{
    if (LIKELY(p != NULL) && UNLIKELY(!sample_surely_not((uint64_t)(uintptr_t)p)) &&
        !tstate.guard)
        pa_forget_sampled(p);
    pa_prev[d].free(pa_prev[d].ctx, p);
}

static void *pa_malloc(int d, size_t n, const uint64_t *frame)
{
    tstate_t *t = &tstate;
    if (t->guard)
        return pa_prev[d].malloc(pa_prev[d].ctx, n);
    t->guard = 1;
    void *p = pa_prev[d].malloc(pa_prev[d].ctx, n);
    t->guard = 0;
    if (p)
        note_alloc(p, n, frame);
    return p;
}

static void *pa_calloc(int d, size_t k, size_t n, const uint64_t *frame)
{
    tstate_t *t = &tstate;
    if (t->guard)
        return pa_prev[d].calloc(pa_prev[d].ctx, k, n);
    t->guard = 1;
    void *p = pa_prev[d].calloc(pa_prev[d].ctx, k, n);
    t->guard = 0;
    if (p)
        note_alloc(p, k * n, frame);
    return p;
}

static void pa_free(int d, void *p)
{
    tstate_t *t = &tstate;
    if (!p || t->guard) {
        pa_prev[d].free(pa_prev[d].ctx, p);
        return;
    }
    int e;
    if (rec_enter(t, &e)) {
        record_free(t, p); /* as free does */
        rec_leave(t, e);
    }
    t->guard = 1;
    pa_prev[d].free(pa_prev[d].ctx, p);
    t->guard = 0;
}

/* As realloc: FREE(old) stamped before the call and ALLOC(new) when it
 * succeeds; nothing when it fails (CPython's realloc(p, 0) allocates).
 * Sampled mode: a sampled old block's FREE goes out before the call (if the
 * call fails, the block lives on unsampled), the new block is an allocation
 * of n bytes like any other. */
static void *pa_realloc(int d, void *old, size_t n, const uint64_t *frame)
{
    tstate_t *t = &tstate;
    int e;
    if (!old)
        return sample_py_rate ? pa_s_malloc(d, n, frame) : pa_malloc(d, n, frame);
    if (sample_py_rate) {
        if (UNLIKELY(!sample_surely_not((uint64_t)(uintptr_t)old)) && !t->guard)
            pa_forget_sampled(old);
        int want = pa_wants(t, n);
        if (LIKELY(!want))
            return pa_prev[d].realloc(pa_prev[d].ctx, old, n);
        uint64_t seen = pa_seen(t);
        void *np = pa_prev[d].realloc(pa_prev[d].ctx, old, n);
        if (np && !t->guard && (want > 0 || arm_site(frame[1])))
            pa_note_sampled(np, n, frame, want > 0, seen);
        return np;
    }
    if (!rec_enter(t, &e))
        return pa_prev[d].realloc(pa_prev[d].ctx, old, n);
    /* Guard held: what the previous allocator does is not recorded again.
     * The ring is busy from FREE(old)'s stamp until it is pushed. */
    ring_t *r = ring_of(t);
    int old_rec = r && (!sample_rate || sample_forget((uint64_t)(uintptr_t)old));
    uint64_t ts = 0;
    if (old_rec) {
        ring_busy_begin(r);
        ts = clock_now_ns();
    }
    void *np = pa_prev[d].realloc(pa_prev[d].ctx, old, n);
    if (r && np) {
        ring_count_free(r);
        if (old_rec)
            emit_free(t, r, old, ts);
    } else if (old_rec && sample_rate) {
        sample_insert((uint64_t)(uintptr_t)old); /* failed: old lives on, still sampled */
    }
    if (old_rec)
        ring_busy_end(r);
    if (np)
        check_fired(old);
    rec_leave(t, e);
    if (np)
        note_alloc(np, n, frame);
    return np;
}

/* Sampled mode: CPython's free lists (tuples, lists, dicts, floats; ints
 * from 3.14) keep a deallocated object for the type's next one, and the
 * allocator never hears of it: a sampled object parked there looked live
 * for good (its stack a leak in a program that churns bounded state: CI's
 * 3.15 tuples), and the next object of its type, whoever makes it, inherits
 * the block unseen (a leaked one was blamed on the stack that freed it
 * last). Each such type's tp_dealloc is wrapped: a sampled object's FREE is
 * recorded when it is deallocated, before the free list takes it. An
 * object taken from a free list is still not seen (no allocator call): it
 * is not sampled, as it was not. Paths that bypass tp_dealloc (the
 * interpreter's float/int arithmetic from 3.12 on) keep the gap. */
static py_dealloc_t pa_dealloc_prev[PY_FL_N];
static size_t pa_dealloc_pre[PY_FL_N]; /* the block starts this far before the object */

#define PA_DEALLOC(I)                                                                              \
    static void pa_dealloc_##I(void *op)                                                           \
    {                                                                                              \
        void *block = (char *)op - pa_dealloc_pre[I];                                              \
        if (LIKELY(op != NULL) && UNLIKELY(!sample_surely_not((uint64_t)(uintptr_t)block)) &&     \
            !tstate.guard)                                                                         \
            pa_forget_sampled(block);                                                              \
        pa_dealloc_prev[I](op);                                                                    \
    }
PA_DEALLOC(0)
PA_DEALLOC(1)
PA_DEALLOC(2)
PA_DEALLOC(3)
PA_DEALLOC(4)

static void pa_wrap_deallocs(void)
{
    static const py_dealloc_t wrappers[PY_FL_N] = { pa_dealloc_0, pa_dealloc_1, pa_dealloc_2,
                                                    pa_dealloc_3, pa_dealloc_4 };
    for (int i = 0; i < PY_FL_N; i++) {
        size_t pre = 0;
        py_dealloc_t cur = py_dealloc_peek(i, &pre);
        if (!cur || cur == wrappers[i])
            continue; /* no such free list, or wrapped already */
        /* The previous one is in place before any object reaches the
         * wrapper (the GIL is ours: no other thread deallocates). */
        pa_dealloc_prev[i] = cur;
        pa_dealloc_pre[i] = pre;
        py_dealloc_set(i, wrappers[i]);
    }
}

#define PA_DOMAIN(D, NAME)                                                                         \
    static void *pa_##NAME##_malloc(void *ctx, size_t n)                                           \
    {                                                                                              \
        (void)ctx;                                                                                 \
        return sample_py_rate ? pa_s_malloc(D, n, CALL_FRAME())                                    \
                              : pa_malloc(D, n, CALL_FRAME());                                     \
    }                                                                                              \
    static void *pa_##NAME##_calloc(void *ctx, size_t k, size_t n)                                 \
    {                                                                                              \
        (void)ctx;                                                                                 \
        return sample_py_rate ? pa_s_calloc(D, k, n, CALL_FRAME())                                 \
                              : pa_calloc(D, k, n, CALL_FRAME());                                  \
    }                                                                                              \
    static void *pa_##NAME##_realloc(void *ctx, void *p, size_t n)                                 \
    {                                                                                              \
        (void)ctx;                                                                                 \
        return pa_realloc(D, p, n, CALL_FRAME());                                                  \
    }                                                                                              \
    static void pa_##NAME##_free(void *ctx, void *p)                                               \
    {                                                                                              \
        (void)ctx;                                                                                 \
        if (sample_py_rate)                                                                        \
            pa_s_free(D, p);                                                                       \
        else                                                                                       \
            pa_free(D, p);                                                                         \
    }
PA_DOMAIN(PY_MEM_DOMAIN_MEM, mem)
PA_DOMAIN(PY_MEM_DOMAIN_OBJ, obj)

static void hook_pyalloc_poke(void);

void hook_pyalloc_enable(void)
{
    atomic_store(&pyalloc_state, 1);
    atomic_store(&py_domains_poke, hook_pyalloc_poke);
}

/* Guard held, in an allocation: installs the domain hooks once this thread
 * holds the GIL of an interpreter the agent reads (pre-initialization, which
 * resets the allocators, is over then; and no other thread can be inside a
 * mem/object allocation, which needs the GIL, while the structs are
 * swapped). PyMem_SetAllocator copies a struct (3.13: under a PyMutex no
 * allocation path holds); it allocates nothing. */
static void pyalloc_try_install(void)
{
    void (*get)(int, py_mem_alloc_t *), (*set)(int, py_mem_alloc_t *);
    py_mem_api(&get, &set);
    if (!get || !set) {
        if (!py_version())
            return; /* no interpreter yet (it may be loaded later) */
        atomic_store(&pyalloc_state, 3);
        if (!sample_py_rate)
            log_msg("STACKWATCH_PYTHON_ALLOCATORS: no PyMem_SetAllocator; not hooking");
        return;
    }
    if (!py_holds_gil())
        return;
    get(PY_MEM_DOMAIN_MEM, &pa_prev[PY_MEM_DOMAIN_MEM]);
    get(PY_MEM_DOMAIN_OBJ, &pa_prev[PY_MEM_DOMAIN_OBJ]);
    if (!pa_prev[1].malloc || !pa_prev[1].free || !pa_prev[2].malloc || !pa_prev[2].free) {
        atomic_store(&pyalloc_state, 3);
        return;
    }
    py_mem_alloc_t mem = { NULL, pa_mem_malloc, pa_mem_calloc, pa_mem_realloc, pa_mem_free };
    py_mem_alloc_t obj = { NULL, pa_obj_malloc, pa_obj_calloc, pa_obj_realloc, pa_obj_free };
    set(PY_MEM_DOMAIN_MEM, &mem);
    set(PY_MEM_DOMAIN_OBJ, &obj);
    if (sample_py_rate)
        pa_wrap_deallocs();
    pyarena_install(); /* the memory account's pymalloc arenas */
    atomic_store(&pyalloc_state, 2);
    atomic_store(&py_domains_hooked, 1);
    /* Sampled (the default) says nothing on the program's stderr: the
     * report says what is traced (Stats.python_hooked). */
    if (!sample_py_rate)
        log_msg("STACKWATCH_PYTHON_ALLOCATORS: CPython's mem and object domains are traced");
}

/* Attached: a program that allocates nothing through malloc under the GIL
 * would never get the domains hooked (the install runs inside an
 * allocation). The flusher asks the interpreter to run it in its main thread
 * with the GIL held (Py_AddPendingCall), one request in flight at a time. */
static _Atomic int pa_poked;

static int pa_pending(void *arg)
{
    (void)arg;
    tstate_t *t = &tstate;
    int g = t->guard;
    t->guard = 1;
    if (atomic_load(&pyalloc_state) == 1)
        pyalloc_try_install();
    t->guard = g;
    atomic_store(&pa_poked, 0);
    return 0;
}

static void hook_pyalloc_poke(void)
{
    if (agent.mode == AGENT_PRELOADED || atomic_load(&pyalloc_state) != 1) {
        /* Preloaded (the allocations install it), or installed or given up
         * for good: the flusher stops asking. */
        atomic_store(&py_domains_poke, NULL);
        return;
    }
    if (agent.mode != AGENT_ATTACHED || atomic_load(&pa_poked))
        return;
    int (*add)(int (*)(void *), void *), (*is_init)(void);
    py_pending_api(&add, &is_init);
    if (!add || !is_init || !is_init())
        return;
    if (agent_py_fin && atomic_load_explicit(agent_py_fin, memory_order_relaxed))
        return;
    atomic_store(&pa_poked, 1);
    if (add(pa_pending, NULL) != 0)
        atomic_store(&pa_poked, 0); /* its queue is full: again next time */
}

/* dlclose: the module map is refreshed before and after, so addresses of an
 * unloaded object keep their meaning for stacks captured before (generation).
 * dlopen is deliberately not interposed: glibc resolves RUNPATH and the
 * namespace from dlopen's caller, which would become this library. */
EXPORT int dlclose(void *handle)
{
    if (!real_ready() || !real_fn.dlclose)
        return -1;
    tstate_t *t = &tstate;
    int active = agent.started && agent.enabled && !t->guard;
    if (active)
        modmap_before_unload();
    int rc = real_fn.dlclose(handle);
    if (active) {
        int e = errno;
        modmap_after_unload();
        errno = e;
    }
    return rc;
}

/* dl_iterate_phdr: counted while it runs (modmap_iterating), so the
 * flusher's poll of the module list does not wait for the loader's lock
 * while a caller's callback holds it. Nothing else changes: the callback,
 * its arguments and the result are the caller's. */
EXPORT int dl_iterate_phdr(int (*cb)(struct dl_phdr_info *, size_t, void *), void *data)
{
    if (!real_ready() || !real_fn.dl_iterate_phdr) {
        int (*f)(int (*)(struct dl_phdr_info *, size_t, void *), void *) =
            (int (*)(int (*)(struct dl_phdr_info *, size_t, void *), void *))dlsym(
                RTLD_NEXT, "dl_iterate_phdr");
        return f ? f(cb, data) : 0;
    }
    atomic_fetch_add_explicit(&modmap_iterating, 1, memory_order_relaxed);
    int rc = real_fn.dl_iterate_phdr(cb, data);
    atomic_fetch_sub_explicit(&modmap_iterating, 1, memory_order_relaxed);
    return rc;
}

/* ---------------------------------------------------------------- seccomp strict mode */

static int strict_request(long n, long a, long b)
{
    return (n == SYS_prctl && a == PR_SET_SECCOMP && b == SECCOMP_MODE_STRICT) ||
           (n == SYS_seccomp && a == SECCOMP_SET_MODE_STRICT);
}

EXPORT long syscall(long n, ...)
{
    va_list ap;
    va_start(ap, n);
    long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long);
    long d = va_arg(ap, long), e = va_arg(ap, long), f = va_arg(ap, long);
    va_end(ap);
    if (!strict_request(n, a, b))
        return creds_raw_syscall6(n, a, b, c, d, e, f);
    int g = creds_strict_begin();
    long rc = creds_raw_syscall6(n, a, b, c, d, e, f);
    creds_strict_end(g, rc);
    return rc;
}

/* ---------------------------------------------------------------- pthread_getattr_np */

/* glibc's pthread_getattr_np holds the thread's lock while it reallocs
 * (its cpuset buffer; /proc/self/maps for the main thread). When that
 * realloc is the thread's first allocation, the hook asks for the thread's
 * stack bounds (unwind.c), with pthread_getattr_np: the same lock, a
 * self-deadlock (CPython 3.14 calls it first thing in every new thread,
 * Rust's thread start does too). Inside it, the hook does without the
 * bounds (they are asked again at the next allocation). */
EXPORT int pthread_getattr_np(pthread_t th, pthread_attr_t *attr)
{
    int (*real)(pthread_t, pthread_attr_t *) = real_fn.getattr;
    if (!real) {
        real = (int (*)(pthread_t, pthread_attr_t *))dlsym(RTLD_NEXT, "pthread_getattr_np");
        if (!real)
            return ENOSYS;
    }
    unwind_in_getattr++;
    int rc = real(th, attr);
    unwind_in_getattr--;
    return rc;
}

/* ---------------------------------------------------------------- attach mode */

/* The interposers under names that bind inside the agent: a reference to
 * `malloc` from the agent's own code goes through its GOT to whatever the
 * process resolves malloc to (libc's, when the agent was loaded with dlopen). */
#define SELF(fn) extern __typeof(fn) hook_self_##fn __attribute__((alias(#fn), copy(fn), visibility("hidden")))
SELF(malloc);
SELF(free);
SELF(calloc);
SELF(realloc);
SELF(reallocarray);
SELF(posix_memalign);
SELF(aligned_alloc);
SELF(memalign);
SELF(valloc);
SELF(pvalloc);
SELF(malloc_usable_size);
SELF(dlclose);
SELF(pthread_getattr_np);

/* Where the agent and libc are in the link map (load order). */
typedef struct order_s {
    int i, self, libc;
} order_t;

static int order_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    order_t *o = arg;
    uint64_t me = (uint64_t)(uintptr_t)hook_self_malloc;
    for (int k = 0; k < info->dlpi_phnum; k++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[k];
        uint64_t s = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && me >= s && me < s + ph->p_memsz && o->self < 0)
            o->self = o->i;
    }
    const char *b = info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
    b = b ? b + 1 : info->dlpi_name;
    if (b && !strncmp(b, "libc.so", 7) && o->libc < 0)
        o->libc = o->i;
    o->i++;
    return 0;
}

int hook_interposing(void)
{
    if (dlsym(RTLD_DEFAULT, "malloc") == (void *)hook_self_malloc)
        return 1;
    /* dlsym can answer with a non-PIE program's own PLT stub (see
     * got_definition), so look at the load order instead: the dynamic
     * linker binds calls to the first definition in the global scope, and a
     * library loaded before libc (preloaded, or needed by the program) comes
     * first; one loaded with dlopen comes after. */
    order_t o = { 0, -1, -1 };
    dl_iterate_phdr(order_cb, &o);
    return o.self >= 0 && o.libc >= 0 && o.self < o.libc;
}

/* dlopen's directory search for a name without a slash (DT_RPATH,
 * DT_RUNPATH of the caller) depends on who calls it, and through the GOT
 * that is now this library (which has neither). When the plain call fails,
 * the caller's own run path is tried, $ORIGIN expanded. */
typedef struct rp_find_s {
    uint64_t pc;             /* the caller's return address */
    const char *runpath;     /* DT_RUNPATH, else DT_RPATH, of its module */
    char origin[4096];       /* the module's directory */
} rp_find_t;

static int rp_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    rp_find_t *f = arg;
    const ElfW(Dyn) *dyn = NULL;
    int hit = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uint64_t s = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && f->pc >= s && f->pc < s + ph->p_memsz)
            hit = 1;
        if (ph->p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + ph->p_vaddr);
    }
    if (!hit)
        return 0;
    if (!dyn)
        return 1;
    uint64_t strtab = 0, rp = 0, rpath = 0;
    int has_rp = 0, has_rpath = 0;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        if (dyn->d_tag == DT_STRTAB)
            strtab = dyn->d_un.d_ptr;
        else if (dyn->d_tag == DT_RUNPATH)
            rp = dyn->d_un.d_val, has_rp = 1;
        else if (dyn->d_tag == DT_RPATH)
            rpath = dyn->d_un.d_val, has_rpath = 1;
    }
    if (!strtab || (!has_rp && !has_rpath))
        return 1;
    if (strtab < info->dlpi_addr)
        strtab += info->dlpi_addr; /* not relocated in place */
    f->runpath = (const char *)(uintptr_t)(strtab + (has_rp ? rp : rpath));
    const char *name = info->dlpi_name && *info->dlpi_name ? info->dlpi_name : agent.exe;
    const char *slash = strrchr(name, '/');
    size_t n = slash ? (size_t)(slash - name) : 0;
    if (n >= sizeof f->origin)
        n = 0;
    memcpy(f->origin, name, n);
    f->origin[n] = '\0';
    return 1;
}

static void *dlopen_runpath(uint64_t caller, const char *file, int mode)
{
    rp_find_t f = { .pc = caller };
    dl_iterate_phdr(rp_cb, &f);
    if (!f.runpath)
        return NULL;
    char path[4096];
    for (const char *p = f.runpath; *p;) {
        const char *e = strchr(p, ':');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        size_t k = 0;
        for (size_t i = 0; i < len && k + 1 < sizeof path;) {
            if (!strncmp(p + i, "$ORIGIN", 7) || !strncmp(p + i, "${ORIGIN}", 9)) {
                size_t ol = strlen(f.origin);
                if (k + ol + 1 >= sizeof path)
                    break;
                memcpy(path + k, f.origin, ol);
                k += ol;
                i += p[i + 1] == '{' ? 9 : 7;
            } else {
                path[k++] = p[i++];
            }
        }
        size_t fl = strlen(file);
        if (k > 0 && k + 1 + fl + 1 <= sizeof path) {
            path[k++] = '/';
            memcpy(path + k, file, fl + 1);
            if (access(path, F_OK) == 0) {
                void *h = real_fn.dlopen(path, mode);
                if (h)
                    return h;
            }
        }
        if (!e)
            break;
        p = e + 1;
    }
    return NULL;
}

/* Attach mode's dlopen (through the GOT only; never exported, see dlclose):
 * modules it loads get their allocator entries patched before the caller
 * can use them. */
__attribute__((noinline)) static void *hook_dlopen(const char *file, int mode)
{
    uint64_t caller = (uint64_t)(uintptr_t)__builtin_return_address(0);
    void *h = real_fn.dlopen(file, mode);
    if (!h && file && !strchr(file, '/')) {
        void *h2 = dlopen_runpath(caller, file, mode);
        if (h2) {
            h = h2;
            (void)dlerror(); /* the first attempt's error is not the caller's */
        }
    }
    if (h) {
        int e = errno;
        tstate_t *t = &tstate;
        int g = t->guard;
        t->guard = 1;
        got_refresh();
        t->guard = g;
        errno = e;
    }
    return h;
}

const got_target_t *hook_targets(int *n)
{
    static got_target_t t[15];
#define T(i, nm, fn, rl) t[i] = (got_target_t){ nm, (uint64_t)(uintptr_t)(fn), (uint64_t)(uintptr_t)(rl) }
    T(0, "malloc", hook_self_malloc, real_fn.malloc);
    T(1, "free", hook_self_free, real_fn.free);
    T(2, "calloc", hook_self_calloc, real_fn.calloc);
    T(3, "realloc", hook_self_realloc, real_fn.realloc);
    T(4, "reallocarray", hook_self_reallocarray, real_fn.reallocarray);
    T(5, "posix_memalign", hook_self_posix_memalign, real_fn.posix_memalign);
    T(6, "aligned_alloc", hook_self_aligned_alloc, real_fn.aligned_alloc);
    T(7, "memalign", hook_self_memalign, real_fn.memalign);
    T(8, "valloc", hook_self_valloc, real_fn.valloc);
    T(9, "pvalloc", hook_self_pvalloc, real_fn.pvalloc);
    T(10, "malloc_usable_size", hook_self_malloc_usable_size, real_fn.malloc_usable_size);
    T(11, "dlclose", hook_self_dlclose, real_fn.dlclose);
    T(12, "dlopen", hook_dlopen, real_fn.dlopen);
    T(13, "exit", agent_self_exit, real_fn.exit); /* the end of the process begins (agent.c) */
    T(14, "pthread_getattr_np", hook_self_pthread_getattr_np, real_fn.getattr);
#undef T
    *n = 15;
    return t;
}
