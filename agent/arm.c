/* Armed stacks: what the agent does on the next allocations from a stack collectord asked about. */
#include "arm.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clock.h"
#include "emit.h"
#include "intern.h"
#include "log.h"
#include "note.h"
#include "pyframes.h"
#include "region.h"
#include "sample.h"
#include "state.h"

#define EXPORT __attribute__((visibility("default")))
#define FIRED_SLOTS 4096u
#define FIRED_PROBES 64u
#define FIRED_TOMB 1u

typedef struct armed_s {
    _Atomic int32_t left;    /* firings left; <= 0: not armed */
    int16_t sig;             /* signal to raise, 0: none */
    uint8_t python;          /* capture Python frames */
    uint8_t quiet;           /* no log lines */
} armed_t;

typedef struct fired_s {
    _Atomic uint64_t addr;   /* 0 empty, FIRED_TOMB removed */
    uint64_t ts;             /* the allocation's timestamp */
    uint64_t size;
    uint32_t stack;
    uint32_t quiet;          /* its free is not logged either */
} fired_t;

_Atomic uint32_t arm_active;
_Atomic uint32_t arm_fired_live;
_Atomic uint64_t arm_notes_pushed;

static armed_t *armed;
static uint32_t nslots;

/* Call sites (first pc) of the armed stacks, for sampled mode: an unsampled
 * allocation from one of them is unwound to see whether its stack is armed.
 * Written by the flusher only (arm_set), read lock-free by the hooks. */
#define SITES_MAX 64u
static uint32_t site_idx[SITES_MAX];       /* flusher's list of armed stacks */
static uint32_t nsite_idx;
static _Atomic uint64_t sites[SITES_MAX];
static _Atomic uint32_t nsites;
static _Atomic uint64_t sites_full; /* armings beyond SITES_MAX in sampled mode */
static fired_t fired[FIRED_SLOTS];
static _Atomic uint64_t firings;
static _Atomic uint64_t refused_mask;   /* signals we refused to raise (said once) */
static _Atomic int py_said;

/* The last firing, for a signal handler to ask about (stackwatch_last_fire). */
static struct {
    _Atomic uint64_t thread, addr, size, ts;
} last;

int arm_init(uint32_t slots)
{
    void *p = mmap(NULL, (size_t)slots * sizeof(armed_t), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -ENOMEM;
    region_add(p, (size_t)slots * sizeof(armed_t));
    armed = p;
    nslots = slots;
    return 0;
}

static void sites_rebuild(void)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < nsite_idx; i++) {
        const intern_slot_t *sl = intern_slot(site_idx[i]);
        /* collectord names indexes: one never interned (or still being
         * written by its thread) has no call site to watch. acquire: its
         * pcs are complete once READY is seen. */
        if (!sl || atomic_load_explicit(&sl->state, memory_order_acquire) != SLOT_READY ||
            sl->npcs == 0)
            continue;
        uint64_t pc = intern_pcs(sl)[0];
        uint32_t k = 0;
        while (k < n && atomic_load_explicit(&sites[k], memory_order_relaxed) != pc)
            k++;
        if (k == n)
            atomic_store_explicit(&sites[n++], pc, memory_order_relaxed);
    }
    /* A reader may see a site list mixing old and new entries for a moment:
     * at worst one allocation is unwound for nothing or fires only if sampled. */
    atomic_store_explicit(&nsites, n, memory_order_release);
}

static void sites_track(uint32_t idx, int on)
{
    uint32_t i = 0;
    while (i < nsite_idx && site_idx[i] != idx)
        i++;
    if (on && i == nsite_idx) {
        if (!sample_rate && !sample_py_rate)
            return; /* every allocation is recorded: no call site list needed */
        if (nsite_idx == SITES_MAX) {
            /* Counted for collectord (its log and query clients), never
             * printed into the program's output. */
            atomic_fetch_add_explicit(&sites_full, 1, memory_order_relaxed);
            return;
        }
        site_idx[nsite_idx++] = idx;
    } else if (!on && i < nsite_idx) {
        site_idx[i] = site_idx[--nsite_idx];
    } else {
        return;
    }
    sites_rebuild();
}

int arm_site(uint64_t pc)
{
    uint32_t n = atomic_load_explicit(&nsites, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++)
        if (atomic_load_explicit(&sites[i], memory_order_relaxed) == pc)
            return 1;
    return 0;
}

int arm_armed(uint32_t idx)
{
    return armed && idx != 0 && idx < nslots &&
           atomic_load_explicit(&armed[idx].left, memory_order_acquire) > 0;
}

void arm_set(uint32_t idx, int sig, uint32_t count, int python, int quiet)
{
    if (!armed || idx == 0 || idx >= nslots)
        return;
    armed_t *a = &armed[idx];
    int32_t was = atomic_load(&a->left);
    a->sig = (int16_t)(sig > 0 && sig < 65 ? sig : 0);
    a->python = python != 0;
    a->quiet = quiet != 0;
    if (count > 1000000)
        count = 1000000;
    /* release: sig and python are visible to a thread that sees left > 0. */
    atomic_store_explicit(&a->left, (int32_t)count, memory_order_release);
    if (was <= 0 && count > 0)
        atomic_fetch_add(&arm_active, 1);
    else if (was > 0 && count == 0)
        atomic_fetch_sub(&arm_active, 1);
    sites_track(idx, count > 0);
    if (python && !py_version() && !atomic_exchange(&py_said, 1) && py_status()[0])
        log_msg("no Python frames: %s", py_status());
}

static inline uint32_t fired_hash(uint64_t p)
{
    return (uint32_t)((p * 0x9e3779b97f4a7c15ULL) >> 40) % FIRED_SLOTS;
}

static void fired_add(uint64_t p, uint64_t ts, uint64_t size, uint32_t stack, int quiet)
{
    uint32_t i = fired_hash(p);
    for (uint32_t k = 0; k < FIRED_PROBES; k++, i = (i + 1) % FIRED_SLOTS) {
        uint64_t cur = atomic_load_explicit(&fired[i].addr, memory_order_relaxed);
        if (cur != 0 && cur != FIRED_TOMB)
            continue;
        fired[i].ts = ts;
        fired[i].size = size;
        fired[i].stack = stack;
        fired[i].quiet = (uint32_t)quiet;
        /* release: ts/size/stack before the address that finds them. */
        if (atomic_compare_exchange_strong_explicit(&fired[i].addr, &cur, p, memory_order_release,
                                                    memory_order_relaxed)) {
            atomic_fetch_add(&arm_fired_live, 1);
            return;
        }
    }
    /* Table crowded: this block's free just goes unlogged. */
}

static fired_t *fired_find(uint64_t p)
{
    uint32_t i = fired_hash(p);
    for (uint32_t k = 0; k < FIRED_PROBES; k++, i = (i + 1) % FIRED_SLOTS) {
        uint64_t cur = atomic_load_explicit(&fired[i].addr, memory_order_acquire);
        if (cur == p)
            return &fired[i];
        if (cur == 0)
            return NULL;
    }
    return NULL;
}

void arm_on_free(void *ptr)
{
    uint64_t p = (uint64_t)(uintptr_t)ptr;
    fired_t *f = fired_find(p);
    if (!f)
        return;
    uint64_t expect = p;
    int quiet = f->quiet;
    if (atomic_compare_exchange_strong(&f->addr, &expect, FIRED_TOMB)) {
        atomic_fetch_sub(&arm_fired_live, 1);
        if (!quiet)
            log_msg("free @ %p", ptr);
    }
}

/* 1 if the process has a handler for sig: the default action of SIGUSR1 and
 * most others would kill the host. */
static int has_handler(int sig)
{
    struct sigaction sa;
    if (sigaction(sig, NULL, &sa) < 0)
        return 0;
    if (sa.sa_flags & SA_SIGINFO)
        return sa.sa_sigaction != NULL;
    return sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN;
}

/* Attaches a note to the allocation: pushed after its ALLOC in this thread's
 * ring, so it reaches collectord after the allocation. */
static void push_note(tstate_t *t, ring_t *r, note_t *n, uint32_t slot)
{
    ring_busy_begin(r);
    ev_t ev = { .ts = clock_now_ns(), .addr = n->addr, .size = 0, .stack = slot,
                .kind_tid = EV_NOTE | (t->tid << EV_TID_SHIFT) };
    /* Counted before the push releases the ring's head (arm.h). */
    atomic_fetch_add_explicit(&arm_notes_pushed, 1, memory_order_relaxed);
    if (!ring_try_push(r, &ev)) {
        uint64_t d0 = atomic_load_explicit(&r->dropped, memory_order_relaxed);
        flush_push_slow(r, &ev);
        if (atomic_load_explicit(&r->dropped, memory_order_relaxed) != d0)
            atomic_fetch_sub_explicit(&arm_notes_pushed, 1, memory_order_relaxed);
    }
    ring_busy_end(r);
}

void arm_on_alloc(tstate_t *t, ring_t *r, uint32_t idx, void *ptr, size_t size, uint64_t ts)
{
    if (idx == 0 || idx >= nslots)
        return;
    armed_t *a = &armed[idx];
    int32_t left = atomic_load_explicit(&a->left, memory_order_acquire);
    do {
        if (left <= 0)
            return;
    } while (!atomic_compare_exchange_weak_explicit(&a->left, &left, left - 1,
                                                    memory_order_acq_rel, memory_order_acquire));
    if (left == 1)
        atomic_fetch_sub(&arm_active, 1);
    atomic_fetch_add(&firings, 1);
    uint64_t p = (uint64_t)(uintptr_t)ptr;
    fired_add(p, ts, size, idx, a->quiet);
    atomic_store(&last.thread, (uint64_t)pthread_self());
    atomic_store(&last.addr, p);
    atomic_store(&last.size, size);
    atomic_store(&last.ts, ts);
    if (!a->quiet)
        log_msg("malloc @ %p for %zu", ptr, size);
    uint32_t slot;
    note_t *n = note_claim(&slot);
    if (n) {
        n->addr = p;
        n->ts = ts;
        n->stack = idx;
        n->tid = t->tid;
        n->text_len = 0;
        n->py.n = 0;
        n->py.truncated = 0;
        n->py.why = PY_WHY_NONE;
        if (a->python)
            py_capture(&n->py);
        push_note(t, r, n, slot);
    }
    int sig = a->sig;
    if (!sig)
        return;
    if (!has_handler(sig)) {
        uint64_t bit = 1ull << (sig & 63);
        if (!(atomic_fetch_or(&refused_mask, bit) & bit))
            log_msg("not raising signal %d at malloc @ %p: the process has no handler for it "
                    "(its default action would end the process)",
                    sig, ptr);
        return;
    }
    /* In this thread, now: the handler runs before malloc returns. */
    syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), sig);
}

uint64_t arm_firings(void)
{
    return atomic_load(&firings);
}

uint64_t arm_sites_full(void)
{
    return atomic_load(&sites_full);
}

void arm_fork_child(void)
{
    if (armed && atomic_load(&arm_active)) {
        for (uint32_t i = 0; i < nslots; i++)
            if (atomic_load_explicit(&armed[i].left, memory_order_relaxed) > 0)
                atomic_store_explicit(&armed[i].left, 0, memory_order_relaxed);
    }
    atomic_store(&arm_active, 0);
    atomic_store(&firings, 0);
    nsite_idx = 0;
    atomic_store(&nsites, 0);
    atomic_store(&sites_full, 0);
}

/* ---------------------------------------------------------------- for signal handlers */

/* Fills out[0..3] with the last firing: the allocating thread (pthread_self,
 * which is Python's threading.get_ident()), address, size, timestamp.
 * Returns 0, or -1 if nothing fired yet. Async-signal-safe. */
EXPORT int stackwatch_last_fire(uint64_t out[4])
{
    out[0] = atomic_load(&last.thread);
    out[1] = atomic_load(&last.addr);
    out[2] = atomic_load(&last.size);
    out[3] = atomic_load(&last.ts);
    return out[1] ? 0 : -1;
}

/* Hands text (e.g. a Python traceback printed by a handler) to collectord,
 * attached to the fired allocation at addr. Returns 0, or -1 when the block
 * is unknown, not recording, or no note slot is free. Never allocates. */
EXPORT int stackwatch_note(uint64_t addr, const char *text)
{
    tstate_t *t = &tstate;
    if (!text || t->guard || !atomic_load(&agent.recording))
        return -1;
    fired_t *f = fired_find(addr);
    if (!f)
        return -1;
    int saved = errno;
    t->guard = 1;
    int rc = -1;
    ring_t *r = t->ring ? t->ring : tstate_ring(t);
    uint32_t slot;
    note_t *n = r ? note_claim(&slot) : NULL;
    if (n) {
        size_t len = strlen(text);
        if (len > NOTE_TEXT_MAX)
            len = NOTE_TEXT_MAX;
        memcpy(n->text, text, len);
        n->text_len = (uint32_t)len;
        n->addr = addr;
        n->ts = f->ts;
        n->stack = f->stack;
        n->tid = t->tid;
        n->py.n = 0;
        n->py.truncated = 0;
        n->py.why = PY_WHY_NONE;
        push_note(t, r, n, slot);
        rc = 0;
    }
    t->guard = 0;
    errno = saved;
    return rc;
}
