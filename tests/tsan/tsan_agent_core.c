/* ThreadSanitizer stress test of the agent core: rings, interning, the ring registry and the flusher.
 *
 * The agent's core objects are linked directly (no interposition): producer
 * threads record events the way hook.c does (guard, tstate_ring, capture or
 * synthetic stack, intern_stack, ring_try_push else flush_push_slow) while the
 * real flusher thread drains, encodes and sends them to a collector stand-in
 * (a reader thread on a Unix socket) that decodes every frame and checks the
 * stream. Small rings (1024 events) keep the full-ring wait busy, and the
 * reader stalls once mid-run, longer than the producers wait without
 * progress, so the flusher blocks in send and producers drop. Short-lived threads orphan their rings for
 * tstate_reap. A dlopen/dlclose thread refreshes the module map from an app
 * thread the way hook.c's dlclose does, while the flusher checks and
 * refreshes it too.
 *
 * Checks: the first message is a Hello and the last a Goodbye; every ALLOC's
 * stack index was defined by an earlier StackDefs (once), whose pcs hash to
 * its id and lie in modules sent earlier; per thread, events arrive in order;
 * across all threads and batches, events arrive in time order (watermark);
 * allocs received + dropped == allocs recorded, the same for frees and for
 * the allocations' bytes; a FREE arrives only after its own ALLOC (or with
 * that ALLOC dropped); drops match tstate_dropped() and the final Stats;
 * orphaned rings are reaped.
 *
 * With TSAN_AGENT_FOLD_MS=N the stand-in welcomes the agent with an expire
 * time of N ms, so the flusher folds pairs freed within a batch (every
 * producer frees each block right after allocating it): folded pairs count
 * as received allocs and frees with their bytes, each fold entry's stack
 * was defined, its lifetimes lie below N ms and are consistent (min <= max,
 * count x min <= sum <= count x max), and some pairs must have folded;
 * halfway, one producer pushes a note the agent did not count
 * (inject_note), which the flusher must take in its stride.
 *
 * Threads that call unwind_capture (the UNWINDERS first long workers) never
 * exit; they park until the process ends. Debian 12's libunwind 1.6.2 frees
 * its per-thread trace cache from a TSD destructor in the last destructor
 * round (taking a mutex), which is the round in which TSan has already torn
 * the thread down: the intercepted pthread_mutex_lock then crashes in
 * __tsan::MutexPreLock. That is libunwind + TSan, not the agent (libunwind
 * commit 17df56c tried to move the free one round earlier). The other
 * threads exit and have their rings orphaned and reaped.
 *
 * Environment: TSAN_AGENT_ITERS (events per producer, default 200000),
 * TSAN_AGENT_NO_DLCLOSE=1 (no dlopen/dlclose thread), TSAN_AGENT_FOLD_MS
 * (the expire time sent in a Welcome; default 0: no Welcome, no folding).
 * Exit status 0 on success, 1 on a failed check (TSan itself exits 66 when it
 * reports a race). */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent/clock.h"
#include "agent/config.h"
#include "agent/emit.h"
#include "agent/flush.h"
#include "agent/intern.h"
#include "agent/log.h"
#include "agent/modmap.h"
#include "agent/ring.h"
#include "agent/state.h"
#include "agent/tstate.h"
#include "agent/unwind.h"
#include "proto/frame.h"
#include "proto/stackwatch.pb-c.h"

#define LONG_WORKERS 6           /* threads producing all their events themselves */
#define UNWINDERS 2              /* of those, the ones that also unwind; they never exit */
#define CHURNERS 2               /* threads producing through short-lived children */
#define CHUNK 2000               /* events per short-lived child */
#define DEPTH 16                 /* cfg.depth */
#define RING_EVENTS 1024         /* cfg.ring_events: small, so rings fill */
#define VARIANTS 50              /* synthetic stacks per flavour */
#define FLAVOURS 8               /* synthetic stack sets (producer id % FLAVOURS) */
#define UNWIND_EVERY 32          /* every so many ALLOCs use a real unwind_capture */
#define PROD_MAX 1024            /* producer ids */
#define INTERN_SLOTS (1u << 12)
#define DL_CYCLES 5              /* dlopen/dlclose rounds (each bumps the generation) */
#define WATCHDOG_S 170
#define STALL_AT_PERCENT 10      /* the reader stalls once this much has arrived... */
#define STALL_MS 1600            /* ...for this long, once: past the producers' 1 s no-progress limit */

static uint64_t iters = 200000;
static uint32_t fold_ms; /* TSAN_AGENT_FOLD_MS */

#define FAIL(...)                                          \
    do {                                                   \
        fprintf(stderr, "tsan_agent_core: FAIL: " __VA_ARGS__); \
        fputc('\n', stderr);                               \
        failed = 1;                                        \
    } while (0)

static _Atomic int failed; /* set by any thread */

/* ------------------------------------------------------------------ producers */

/* What the producers did; summed from every producer at its end. */
static _Atomic uint64_t rec_alloc, rec_free;      /* events recorded (pushed or dropped) */
static _Atomic uint64_t drop_alloc, drop_free;    /* of those, dropped on a full ring */
static _Atomic uint64_t rec_bytes, drop_bytes;    /* the recorded / dropped ALLOCs' sizes */
static _Atomic uint64_t skipped;                  /* not recorded: guard or recording off */
static _Atomic uint64_t no_ring, intern_none, unwind_fail, unwound;
static _Atomic uint32_t next_prod_id = LONG_WORKERS + 1;
static _Atomic uint32_t producing_threads;

/* Code addresses the synthetic stacks are built from (all in this executable). */
static uint64_t anchors[6];

typedef struct prod_s {
    uint32_t id;          /* producer id, encoded in every address */
    int unwind;           /* use unwind_capture for some stacks */
    uint64_t first, end;  /* iteration range */
    uint64_t ra, rf, da, df, sk, nr, in, uf, uw, rb, db;
} prod_t;

static uint32_t synth_stack(uint64_t *pcs, uint32_t flavour, uint32_t v, int *truncated)
{
    uint32_t n = 4 + v % (DEPTH - 3); /* 4..16 */
    for (uint32_t k = 0; k < n; k++)
        pcs[k] = anchors[(v + k) % 6] + (v * 7 + k * 3 + flavour) % 48;
    if (v == VARIANTS - 1)
        pcs[n - 1] = 0x1000 + flavour; /* outside every module: the flusher refreshes */
    *truncated = n == DEPTH;
    return n;
}

static uint64_t ev_addr(uint32_t id, uint64_t pair)
{
    return ((uint64_t)id << 40) | (pair << 4);
}

static uint64_t ev_size(uint64_t addr)
{
    return 1 + ((addr >> 4) & ((1ull << 36) - 1)) % 4096;
}

/* One event, recorded the way hook.c's rec_alloc / rec_free_ts do. */
static __attribute__((noinline)) void record(prod_t *p, uint32_t kind, uint64_t addr, uint64_t i)
{
    tstate_t *t = &tstate;
    if (t->guard || !atomic_load_explicit(&agent.recording, memory_order_relaxed)) {
        p->sk++;
        return;
    }
    t->guard = 1;
    ev_t ev = { .addr = addr };
    if (kind == EV_ALLOC) {
        uint64_t pcs[CFG_DEPTH_MAX];
        int truncated = 0;
        int n = 0;
        if (p->unwind && (i / 2) % UNWIND_EVERY == 0) {
            n = unwind_capture(pcs, cfg.depth, &truncated);
            if (n <= 0)
                p->uf++;
            else
                p->uw++;
        }
        if (n <= 0)
            n = (int)synth_stack(pcs, p->id % FLAVOURS, (uint32_t)((i / 2) % VARIANTS), &truncated);
        ev.stack = intern_stack(pcs, (uint32_t)n, modmap_gen(), truncated);
        if (ev.stack == INTERN_NONE)
            p->in++;
        ev.size = ev_size(addr);
    }
    ring_t *r = t->ring;
    if (!r && !(r = tstate_ring(t))) {
        p->nr++;
        t->guard = 0;
        return;
    }
    ev.kind_tid = kind | (t->tid << EV_TID_SHIFT);
    ring_busy_begin(r); /* as hook.c: busy from before the timestamp until pushed */
    ev.ts = clock_now_ns();
    if (kind == EV_ALLOC) {
        p->ra++;
        p->rb += ev.size;
    } else {
        p->rf++;
    }
    if (!ring_try_push(r, &ev)) {
        /* Only this thread writes r->dropped: before/after tells whether this event went. */
        uint64_t d0 = atomic_load_explicit(&r->dropped, memory_order_relaxed);
        flush_push_slow(r, &ev);
        if (atomic_load_explicit(&r->dropped, memory_order_relaxed) != d0) {
            if (kind == EV_ALLOC) {
                p->da++;
                p->db += ev.size;
            } else {
                p->df++;
            }
        }
    }
    ring_busy_end(r);
    t->guard = 0;
}

static _Atomic uint64_t notes_injected;

/* A note the agent did not count (arm_notes_pushed untouched), naming no
 * note slot: the flusher, folding while it merges since no note is
 * counted, meets it, merges that batch again without folding and folds
 * after merging from then on; every count must still hold. Pushed as
 * record() pushes, waiting (not dropping) while the ring is full. */
static void inject_note(uint64_t addr)
{
    tstate_t *t = &tstate;
    ring_t *r = t->ring;
    if (t->guard || !r)
        return;
    t->guard = 1;
    ring_busy_begin(r);
    ev_t ev = { .ts = clock_now_ns(), .addr = addr, .stack = UINT32_MAX,
                .kind_tid = EV_NOTE | (t->tid << EV_TID_SHIFT) };
    for (int k = 0; k < 5000; k++) {
        if (ring_try_push(r, &ev)) {
            atomic_fetch_add(&notes_injected, 1);
            break;
        }
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    ring_busy_end(r);
    t->guard = 0;
}

static void produce(prod_t *p)
{
    for (uint64_t i = p->first; i < p->end; i++) {
        if (fold_ms && p->id == LONG_WORKERS && i == p->first + (p->end - p->first) / 2)
            inject_note(ev_addr(p->id, i / 2));
        record(p, (i & 1) ? EV_FREE : EV_ALLOC, ev_addr(p->id, i / 2), i);
    }
    atomic_fetch_add(&rec_alloc, p->ra);
    atomic_fetch_add(&rec_free, p->rf);
    atomic_fetch_add(&drop_alloc, p->da);
    atomic_fetch_add(&drop_free, p->df);
    atomic_fetch_add(&rec_bytes, p->rb);
    atomic_fetch_add(&drop_bytes, p->db);
    atomic_fetch_add(&skipped, p->sk);
    atomic_fetch_add(&no_ring, p->nr);
    atomic_fetch_add(&intern_none, p->in);
    atomic_fetch_add(&unwind_fail, p->uf);
    atomic_fetch_add(&unwound, p->uw);
    if (p->ra + p->rf > 0)
        atomic_fetch_add(&producing_threads, 1);
}

static _Atomic int workers_finished; /* long workers and churners done */

static void *long_worker(void *arg)
{
    prod_t p = { .id = (uint32_t)(uintptr_t)arg, .first = 0, .end = iters };
    p.unwind = p.id <= UNWINDERS;
    produce(&p);
    atomic_fetch_add(&workers_finished, 1);
    /* See the top of the file: a thread that used libunwind must not exit. */
    while (p.unwind)
        pause();
    return NULL;
}

static void *short_child(void *arg)
{
    prod_t *p = arg;
    produce(p);
    return NULL; /* exits: the TSD destructor orphans the ring */
}

/* Produces iters events through a sequence of short-lived threads. */
static void *churner(void *arg)
{
    (void)arg;
    for (uint64_t first = 0; first < iters; first += CHUNK) {
        prod_t p = { .id = atomic_fetch_add(&next_prod_id, 1), .first = 0,
                     .end = first + CHUNK <= iters ? CHUNK : iters - first };
        if (p.id >= PROD_MAX) {
            FAIL("too many producer ids");
            break;
        }
        pthread_t th;
        if (pthread_create(&th, NULL, short_child, &p) != 0) {
            FAIL("pthread_create: %s", strerror(errno));
            break;
        }
        pthread_join(th, NULL);
    }
    atomic_fetch_add(&workers_finished, 1);
    return NULL;
}

/* ------------------------------------------------------------------ dlopen / dlclose */

static _Atomic int producers_done;
static _Atomic int dl_cycles_done;

/* An app thread loading and unloading a library while events flow: the map is
 * refreshed on this thread (hook.c's dlclose) and by the flusher. */
static void *dl_thread(void *arg)
{
    const char *lib = arg;
    for (int c = 0; c < DL_CYCLES && !atomic_load(&producers_done); c++) {
        void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
        if (!h)
            break;
        struct timespec ts = { 0, 100 * 1000000 };
        nanosleep(&ts, NULL); /* let the flusher notice the load */
        modmap_before_unload();
        dlclose(h);
        modmap_after_unload();
        atomic_fetch_add(&dl_cycles_done, 1);
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static const char *pick_library(void)
{
    static const char *const cand[] = { "libz.so.1", "libbz2.so.1.0", "libBrokenLocale.so.1" };
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++) {
        void *h = dlopen(cand[i], RTLD_LAZY | RTLD_NOLOAD);
        if (h) {
            dlclose(h);
            continue;
        }
        h = dlopen(cand[i], RTLD_LAZY | RTLD_LOCAL);
        if (!h)
            continue;
        dlclose(h);
        if (!dlopen(cand[i], RTLD_LAZY | RTLD_NOLOAD))
            return cand[i];
    }
    return NULL;
}

/* ------------------------------------------------------------------ the collector stand-in */

typedef struct rmod_s {
    int known;
    uint32_t gen_added, gen_removed;
    size_t nranges;
    uint64_t ranges[64];
} rmod_t;

static struct reader_s {
    int lfd;                          /* listening socket */
    uint32_t mod_ids;                 /* highest module id seen + 1 */
    /* results */
    uint64_t msgs, allocs, frees, stack0, undefined, dup_defs, bad_defs, bad_cover;
    uint64_t order_errors, ts_errors, size_errors, tid_errors, shape_errors, decode_errors;
    uint64_t gaps, after_bye, defs, batches, module_msgs;
    uint64_t bytes, folded, fold_entries, fold_errors, free_unpaired;
    int first_hello, bye, hello_ok, stalled;
    int have_stats;
    uint64_t st_dropped, st_events, st_threads, st_waits, st_unwind, st_intern;
    /* state */
    uint8_t defined[INTERN_SLOTS];
    int64_t last_seq[PROD_MAX];
    uint64_t last_ts[PROD_MAX];
    uint64_t global_ts;
    uint64_t global_order_errors;
    uint32_t tid_of[PROD_MAX];
    rmod_t mods[4096];
} rd_state;

static int covered(uint64_t pc, uint32_t gen)
{
    for (size_t i = 0; i < rd_state.mod_ids; i++) {
        const rmod_t *m = &rd_state.mods[i];
        if (!m->known || m->gen_added > gen || (m->gen_removed && gen >= m->gen_removed))
            continue;
        for (size_t r = 0; r + 1 < m->nranges; r += 2)
            if (pc >= m->ranges[r] && pc < m->ranges[r + 1])
                return 1;
    }
    return 0;
}

static void on_modules(const Stackwatch__ModuleMap *mm)
{
    rd_state.module_msgs++;
    for (size_t i = 0; i < mm->n_modules; i++) {
        const Stackwatch__Module *m = mm->modules[i];
        if (m->id >= sizeof rd_state.mods / sizeof rd_state.mods[0]) {
            rd_state.shape_errors++;
            continue;
        }
        rmod_t *r = &rd_state.mods[m->id];
        if (m->id >= rd_state.mod_ids)
            rd_state.mod_ids = m->id + 1;
        r->known = 1;
        r->gen_added = m->gen_added;
        r->gen_removed = m->gen_removed;
        r->nranges = m->n_ranges < 64 ? m->n_ranges : 64;
        memcpy(r->ranges, m->ranges, r->nranges * sizeof(uint64_t));
    }
}

static void on_stacks(const Stackwatch__StackDefs *sd)
{
    for (size_t i = 0; i < sd->n_stacks; i++) {
        const Stackwatch__StackDef *d = sd->stacks[i];
        rd_state.defs++;
        if (d->index == INTERN_NONE || d->index >= INTERN_SLOTS || d->n_pcs == 0 ||
            d->n_pcs > DEPTH) {
            rd_state.bad_defs++;
            continue;
        }
        if (rd_state.defined[d->index])
            rd_state.dup_defs++; /* sent once per connection */
        rd_state.defined[d->index] = 1;
        if (intern_hash(d->pcs, (uint32_t)d->n_pcs, d->generation) != d->id)
            rd_state.bad_defs++;
        /* Modules precede the StackDefs that need them. */
        for (size_t k = 0; k < d->n_pcs; k++)
            if (d->pcs[k] >= 0x10000 && !covered(d->pcs[k], d->generation))
                rd_state.bad_cover++;
    }
}

static void on_events(const Stackwatch__EventBatch *b)
{
    rd_state.batches++;
    size_t n = b->n_kind;
    if (b->n_addr != n || b->n_ts_delta != n || b->n_tid != n || b->n_size != b->n_stack) {
        rd_state.shape_errors++;
        return;
    }
    size_t ai = 0;
    uint64_t ts = b->ts_base;
    for (size_t k = 0; k < n; k++) {
        if (k == 0 ? b->ts_delta[k] != 0 : b->ts_delta[k] < 0)
            rd_state.ts_errors++; /* the batch is merged by time */
        ts += (uint64_t)b->ts_delta[k];
        uint64_t addr = b->addr[k];
        uint32_t id = (uint32_t)(addr >> 40);
        uint64_t pair = (addr >> 4) & ((1ull << 36) - 1);
        int is_free = b->kind[k] == STACKWATCH__EVENT_KIND__EVENT_FREE;
        if (b->kind[k] == STACKWATCH__EVENT_KIND__EVENT_ALLOC) {
            if (ai >= b->n_size) {
                rd_state.shape_errors++;
                return;
            }
            uint32_t st = b->stack[ai];
            if (st == INTERN_NONE)
                rd_state.stack0++;
            else if (st >= INTERN_SLOTS || !rd_state.defined[st])
                rd_state.undefined++;
            if (b->size[ai] != ev_size(addr))
                rd_state.size_errors++;
            rd_state.bytes += b->size[ai];
            ai++;
            rd_state.allocs++;
        } else if (is_free) {
            rd_state.frees++;
        } else {
            rd_state.shape_errors++;
            continue;
        }
        if (id == 0 || id >= PROD_MAX) {
            rd_state.order_errors++;
            continue;
        }
        /* One producer is one ring: its events come in order, across batches too. */
        int64_t seq = (int64_t)(pair * 2 + (uint64_t)is_free);
        /* Its own ALLOC came just before, unless that was dropped (folded
         * pairs travel as neither). */
        if (is_free && rd_state.last_seq[id] != seq - 1)
            rd_state.free_unpaired++;
        if (seq <= rd_state.last_seq[id])
            rd_state.order_errors++;
        rd_state.last_seq[id] = seq;
        if (ts < rd_state.last_ts[id])
            rd_state.ts_errors++;
        rd_state.last_ts[id] = ts;
        /* The watermark: all threads together, across batches, in time order. */
        if (ts < rd_state.global_ts)
            rd_state.global_order_errors++;
        else
            rd_state.global_ts = ts;
        if (b->tid[k] == 0 || (rd_state.tid_of[id] && rd_state.tid_of[id] != b->tid[k]))
            rd_state.tid_errors++;
        rd_state.tid_of[id] = b->tid[k];
    }
    if (ai != b->n_size)
        rd_state.shape_errors++;
    size_t nf = b->n_fold_stack;
    if (b->n_fold_count != nf || b->n_fold_bytes != nf || b->n_fold_lt_sum != nf ||
        b->n_fold_lt_min != nf || b->n_fold_lt_max != nf) {
        rd_state.shape_errors++;
        return;
    }
    for (size_t k = 0; k < nf; k++) {
        uint32_t st = b->fold_stack[k];
        uint64_t c = b->fold_count[k], mn = b->fold_lt_min[k], mx = b->fold_lt_max[k];
        unsigned __int128 sum = b->fold_lt_sum[k];
        rd_state.fold_entries++;
        if (st == INTERN_NONE || st >= INTERN_SLOTS || !rd_state.defined[st])
            rd_state.undefined++;
        if (c == 0 || mn > mx || mx >= (uint64_t)fold_ms * 1000000u ||
            sum < (unsigned __int128)c * mn || sum > (unsigned __int128)c * mx)
            rd_state.fold_errors++;
        rd_state.allocs += c;
        rd_state.frees += c;
        rd_state.folded += c;
        rd_state.bytes += b->fold_bytes[k];
    }
}

static void on_msg(const uint8_t *p, uint32_t len)
{
    Stackwatch__AgentMsg *m = stackwatch__agent_msg__unpack(NULL, len, p);
    if (!m) {
        rd_state.decode_errors++;
        return;
    }
    if (rd_state.bye)
        rd_state.after_bye++;
    if (rd_state.msgs++ == 0) {
        rd_state.first_hello = m->msg_case == STACKWATCH__AGENT_MSG__MSG_HELLO;
    }
    switch (m->msg_case) {
    case STACKWATCH__AGENT_MSG__MSG_HELLO:
        rd_state.hello_ok = m->hello->version == PROTO_VERSION &&
                            m->hello->pid == (uint32_t)getpid() && m->hello->instance == 1 &&
                            m->hello->depth == DEPTH && rd_state.msgs == 1;
        break;
    case STACKWATCH__AGENT_MSG__MSG_MODULES:
        on_modules(m->modules);
        break;
    case STACKWATCH__AGENT_MSG__MSG_STACKS:
        on_stacks(m->stacks);
        break;
    case STACKWATCH__AGENT_MSG__MSG_EVENTS:
        on_events(m->events);
        break;
    case STACKWATCH__AGENT_MSG__MSG_STATS:
        rd_state.have_stats = 1;
        rd_state.st_dropped = m->stats->dropped;
        rd_state.st_events = m->stats->events;
        rd_state.st_threads = m->stats->threads;
        rd_state.st_waits = m->stats->ring_waits;
        rd_state.st_unwind = m->stats->unwind_failures;
        rd_state.st_intern = m->stats->intern_full;
        break;
    case STACKWATCH__AGENT_MSG__MSG_GAP:
        rd_state.gaps++;
        break;
    case STACKWATCH__AGENT_MSG__MSG_BYE:
        rd_state.bye = 1;
        break;
    default:
        rd_state.shape_errors++;
        break;
    }
    stackwatch__agent_msg__free_unpacked(m, NULL);
}

static void *reader_main(void *arg)
{
    (void)arg;
    struct pollfd pfd = { .fd = rd_state.lfd, .events = POLLIN };
    if (poll(&pfd, 1, 30000) != 1) {
        FAIL("the agent never connected");
        return NULL;
    }
    int fd = accept(rd_state.lfd, NULL, NULL);
    if (fd < 0) {
        FAIL("accept: %s", strerror(errno));
        return NULL;
    }
    for (int i = 0; i < PROD_MAX; i++)
        rd_state.last_seq[i] = -1;
    if (fold_ms) {
        /* As collectord greets: the expire time turns the fold on. */
        Stackwatch__Welcome w = STACKWATCH__WELCOME__INIT;
        w.version = PROTO_VERSION;
        w.expire_ms = fold_ms;
        Stackwatch__CollectorMsg cm = STACKWATCH__COLLECTOR_MSG__INIT;
        cm.msg_case = STACKWATCH__COLLECTOR_MSG__MSG_WELCOME;
        cm.welcome = &w;
        uint8_t buf[64];
        size_t len = frame_encode(&cm.base, buf, sizeof buf, FRAME_MAX_COMMAND);
        if (len == 0 || frame_write_all(fd, buf, len) < 0)
            FAIL("sending the Welcome");
    }
    frame_rd_t rd;
    if (frame_rd_init(&rd, 1u << 16, FRAME_MAX_AGENT) < 0) {
        FAIL("frame_rd_init");
        close(fd);
        return NULL;
    }
    for (;;) {
        size_t avail;
        uint8_t *sp = frame_rd_space(&rd, &avail);
        if (!sp) {
            FAIL("frame_rd_space: out of memory");
            break;
        }
        ssize_t r = read(fd, sp, avail);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            FAIL("read: %s", strerror(errno));
            break;
        }
        if (r == 0)
            break; /* the flusher closed after Goodbye */
        frame_rd_commit(&rd, (size_t)r);
        const uint8_t *payload;
        uint32_t len;
        int rc;
        while ((rc = frame_rd_next(&rd, &payload, &len)) == 1)
            on_msg(payload, len);
        if (!rd_state.stalled && !atomic_load(&producers_done) &&
            (rd_state.allocs + rd_state.frees) * 100 >=
                (uint64_t)(LONG_WORKERS + CHURNERS) * iters * STALL_AT_PERCENT) {
            /* A slow collector: the flusher blocks in send, rings fill,
             * producers wait their bounded time and drop. Rings hold 1024
             * events, so producers are barely ahead of what arrived: all
             * of them are still running. */
            rd_state.stalled = 1;
            struct timespec ts = { STALL_MS / 1000, (STALL_MS % 1000) * 1000000L };
            nanosleep(&ts, NULL);
        }
        if (rc < 0) {
            FAIL("oversized frame");
            break;
        }
    }
    if (frame_rd_pending(&rd) != 0)
        FAIL("%zu bytes of a partial frame at EOF", frame_rd_pending(&rd));
    frame_rd_free(&rd);
    close(fd);
    return NULL;
}

/* ------------------------------------------------------------------ main */

static size_t ring_map_bytes(void)
{
    return ring_map_size(RING_EVENTS);
}

static void check_eq(const char *what, uint64_t got, uint64_t want)
{
    if (got != want)
        FAIL("%s: %llu, expected %llu", what, (unsigned long long)got, (unsigned long long)want);
}

int main(void)
{
    uint64_t t_start = clock_now_ns();
    const char *e = getenv("TSAN_AGENT_ITERS");
    if (e && *e)
        iters = strtoull(e, NULL, 10);
    iters &= ~1ull; /* ALLOC/FREE pairs */
    e = getenv("TSAN_AGENT_FOLD_MS");
    if (e && *e)
        fold_ms = (uint32_t)strtoul(e, NULL, 10);
    alarm(WATCHDOG_S); /* a hang fails the test (SIGALRM's default action) */

    anchors[0] = (uint64_t)(uintptr_t)&record;
    anchors[1] = (uint64_t)(uintptr_t)&produce;
    anchors[2] = (uint64_t)(uintptr_t)&synth_stack;
    anchors[3] = (uint64_t)(uintptr_t)&on_events;
    anchors[4] = (uint64_t)(uintptr_t)&reader_main;
    anchors[5] = (uint64_t)(uintptr_t)&main;

    /* The collector stand-in's socket. */
    char dir[] = "/tmp/sw_tsan.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.dir, sizeof cfg.dir, "%s", dir);
    snprintf(cfg.sock, sizeof cfg.sock, "%s/agent.sock", dir);
    cfg.sock_ok = 1;
    cfg.enabled = 1;
    cfg.inherit = 1;
    cfg.depth = DEPTH;
    cfg.ring_events = RING_EVENTS;
    cfg.connect_ms = 1000;
    memcpy(cfg.sample, "all", 4);
    rd_state.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(cfg.sock) >= sizeof sa.sun_path)
        return 1;
    memcpy(sa.sun_path, cfg.sock, strlen(cfg.sock) + 1);
    if (rd_state.lfd < 0 || bind(rd_state.lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(rd_state.lfd, 4) < 0) {
        perror("collector socket");
        return 1;
    }

    /* What agent.c's constructor does. */
    log_open(NULL);
    agent.pid = getpid();
    agent.ppid = getppid();
    agent.instance = 1;
    agent.enabled = 1;
    agent.start_realtime_ns = clock_realtime_ns();
    ssize_t n = readlink("/proc/self/exe", agent.exe, sizeof agent.exe - 1);
    agent.exe[n > 0 ? n : 0] = '\0';
    memcpy(agent.cmdline, "tsan_agent_core", 16);
    agent.cmdline_len = 16;
    int dl_disabled = getenv("TSAN_AGENT_NO_DLCLOSE") != NULL;
    const char *lib = dl_disabled ? NULL : pick_library();
    if (intern_init(INTERN_SLOTS, 1u << 16) < 0 || modmap_init(agent.exe) < 0 ||
        flush_init() < 0 || tstate_init() < 0 || unwind_init(UNWIND_DWARF, NULL) < 0) {
        fprintf(stderr, "tsan_agent_core: agent core initialization failed\n");
        return 1;
    }
    pthread_t reader;
    if (pthread_create(&reader, NULL, reader_main, NULL) != 0)
        return 1;
    int rc = flush_connect();
    if (rc != 0) {
        fprintf(stderr, "tsan_agent_core: flush_connect: %s\n", strerror(-rc));
        return 1;
    }
    if (flush_start() != 0) {
        fprintf(stderr, "tsan_agent_core: flush_start failed\n");
        return 1;
    }
    atomic_store(&agent.recording, 1);
    agent.started = 1;

    /* Producers, and an app thread that dlopens/dlcloses. */
    pthread_t th[LONG_WORKERS + CHURNERS], dl;
    for (int i = 0; i < LONG_WORKERS; i++)
        pthread_create(&th[i], NULL, long_worker, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < CHURNERS; i++)
        pthread_create(&th[LONG_WORKERS + i], NULL, churner, NULL);
    int have_dl = lib && pthread_create(&dl, NULL, dl_thread, (void *)lib) == 0;

    /* While they run: orphaned rings of exited children must be reaped, so
     * the rings alive stay far below the threads ever started. */
    uint64_t max_live = 0;
    while (atomic_load(&workers_finished) < LONG_WORKERS + CHURNERS) {
        uint64_t live = tstate_ring_bytes() / ring_map_bytes();
        if (live > max_live)
            max_live = live;
        struct timespec ts = { 0, 20 * 1000000 };
        nanosleep(&ts, NULL);
    }
    for (int i = UNWINDERS; i < LONG_WORKERS + CHURNERS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&producers_done, 1);
    if (have_dl)
        pthread_join(dl, NULL);
    uint64_t t_produced = clock_now_ns();

    /* Every producer but the parked unwinders is gone: the flusher drains and
     * reaps every other ring. */
    uint64_t parked_bytes = UNWINDERS * ring_map_bytes();
    uint64_t deadline = clock_now_ns() + 10ull * 1000000000;
    while (tstate_ring_bytes() != parked_bytes && clock_now_ns() < deadline) {
        struct timespec ts = { 0, 5 * 1000000 };
        nanosleep(&ts, NULL);
    }
    uint64_t ring_bytes_left = tstate_ring_bytes();

    uint64_t t_final = clock_now_ns();
    flush_final();
    uint64_t final_ms = (clock_now_ns() - t_final) / 1000000;
    pthread_join(reader, NULL);
    close(rd_state.lfd);
    unlink(cfg.sock);
    rmdir(dir);

    /* ---------------------------------------------------------------- checks */
    uint64_t ra = atomic_load(&rec_alloc), rf = atomic_load(&rec_free);
    uint64_t da = atomic_load(&drop_alloc), df = atomic_load(&drop_free);
    uint64_t threads = atomic_load(&producing_threads);
    uint64_t expect_threads = LONG_WORKERS + CHURNERS * ((iters + CHUNK - 1) / CHUNK);
    check_eq("events recorded", ra + rf, (uint64_t)(LONG_WORKERS + CHURNERS) * iters);
    check_eq("events skipped (recording off or guard set)", atomic_load(&skipped), 0);
    check_eq("threads without a ring", atomic_load(&no_ring), 0);
    check_eq("stacks not interned", atomic_load(&intern_none), 0);
    check_eq("producing threads", threads, expect_threads);
    check_eq("allocs received + dropped", rd_state.allocs + da, ra);
    check_eq("frees received + dropped", rd_state.frees + df, rf);
    check_eq("bytes received + dropped", rd_state.bytes + atomic_load(&drop_bytes),
             atomic_load(&rec_bytes));
    if (rd_state.free_unpaired > da)
        FAIL("%llu FREEs arrived without their ALLOC, only %llu ALLOCs dropped",
             (unsigned long long)rd_state.free_unpaired, (unsigned long long)da);
    check_eq("fold entries with bad lifetimes", rd_state.fold_errors, 0);
    if (fold_ms && rd_state.folded == 0)
        FAIL("TSAN_AGENT_FOLD_MS=%u but no pair was folded", fold_ms);
    if (!fold_ms && rd_state.folded)
        FAIL("%llu pairs folded without an expire time", (unsigned long long)rd_state.folded);
    check_eq("tstate_dropped()", tstate_dropped(), da + df);
    uint64_t ni = atomic_load(&notes_injected);
    check_eq("tstate_events()", tstate_events(), ra + rf - da - df + ni);
    if (fold_ms && ni != 1)
        FAIL("the uncounted note was not pushed");
    check_eq("tstate_threads()", tstate_threads(), expect_threads);
    check_eq("ring bytes after reaping", ring_bytes_left, parked_bytes);
    if (max_live >= expect_threads / 2)
        FAIL("%llu rings alive at once out of %llu threads: orphans are not reaped",
             (unsigned long long)max_live, (unsigned long long)expect_threads);
    if (!rd_state.first_hello || !rd_state.hello_ok)
        FAIL("the first message is not a valid Hello");
    if (!rd_state.bye || rd_state.after_bye)
        FAIL("the last message is not Goodbye (bye %d, %llu after it)", rd_state.bye,
             (unsigned long long)rd_state.after_bye);
    check_eq("ALLOCs with an undefined stack", rd_state.undefined, 0);
    check_eq("ALLOCs without a stack", rd_state.stack0, 0);
    check_eq("stacks defined twice", rd_state.dup_defs, 0);
    check_eq("bad StackDefs", rd_state.bad_defs, 0);
    check_eq("pcs outside the modules sent before their StackDef", rd_state.bad_cover, 0);
    check_eq("events out of order per thread", rd_state.order_errors, 0);
    check_eq("timestamp order errors", rd_state.ts_errors, 0);
    check_eq("global time order errors (watermark)", rd_state.global_order_errors, 0);
    check_eq("wrong sizes", rd_state.size_errors, 0);
    check_eq("tid errors", rd_state.tid_errors, 0);
    check_eq("malformed batches", rd_state.shape_errors, 0);
    check_eq("undecodable frames", rd_state.decode_errors, 0);
    check_eq("Gap messages", rd_state.gaps, 0);
    if (!rd_state.have_stats) {
        FAIL("no Stats message");
    } else {
        check_eq("Stats.dropped", rd_state.st_dropped, da + df);
        check_eq("Stats.events", rd_state.st_events, ra + rf - da - df + ni);
        check_eq("Stats.threads", rd_state.st_threads, expect_threads);
    }
    /* Folded, the stream is a fraction of the events: the socket's buffer
     * may absorb the stall, so the flusher need not block. */
    if (rd_state.stalled && da + df == 0 && !fold_ms)
        FAIL("the reader stalled %d ms but nothing was dropped", STALL_MS);
    /* A run of drops begins with a bounded wait; the drops after it, until
     * the flusher frees a slot, do not wait again (issue 17.3). */
    if (rd_state.have_stats && da + df > 0 && rd_state.st_waits == 0)
        FAIL("Stats.ring_waits 0 with %llu drops", (unsigned long long)(da + df));
    if (final_ms >= 2000)
        FAIL("flush_final took %llu ms (its bound is 2000)", (unsigned long long)final_ms);

    fprintf(stderr,
            "tsan_agent_core: %s: %llu producers x %llu events (%llu threads), "
            "allocs %llu+%llu dropped, frees %llu+%llu dropped, folded pairs %llu "
            "(%llu entries, expire %u ms), ring waits %llu, "
            "stacks %llu (%llu unwound captures, %llu failed), batches %llu, "
            "module msgs %llu, dl cycles %d%s, reader stall %s, max live rings %llu, final %llu ms, "
            "produce %.1f s, total %.1f s\n",
            failed ? "FAILED" : "ok", (unsigned long long)(LONG_WORKERS + CHURNERS),
            (unsigned long long)iters, (unsigned long long)threads,
            (unsigned long long)rd_state.allocs, (unsigned long long)da,
            (unsigned long long)rd_state.frees, (unsigned long long)df,
            (unsigned long long)rd_state.folded, (unsigned long long)rd_state.fold_entries,
            fold_ms, (unsigned long long)rd_state.st_waits, (unsigned long long)rd_state.defs,
            (unsigned long long)atomic_load(&unwound),
            (unsigned long long)atomic_load(&unwind_fail),
            (unsigned long long)rd_state.batches, (unsigned long long)rd_state.module_msgs,
            atomic_load(&dl_cycles_done), lib ? "" : dl_disabled ? " (disabled)" : " (no library to dlopen)",
            rd_state.stalled ? "yes" : "no",
            (unsigned long long)max_live, (unsigned long long)final_ms,
            (double)(t_produced - t_start) / 1e9, (double)(clock_now_ns() - t_start) / 1e9);
    return failed ? 1 : 0;
}
