/* The producer side of the rings: a full ring's bounded wait, and waking the flusher. */
#include "emit.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "state.h"

#define WAIT_STALL_NS (1000ull * 1000000)   /* a full ring the flusher has not touched this long: drop */
#define WAIT_SEND_STALL_NS (50ull * 1000000) /* ... this long while its send is stalled: drop */

emit_flusher_t emit_flusher = { .evfd = { .fd = -1 } };

void flush_kick(void)
{
    if (emit_flusher.evfd.fd < 0)
        return;
    uint64_t one = 1;
    ssize_t w = write(emit_flusher.evfd.fd, &one, sizeof one);
    (void)w;
}

void flush_push_slow(ring_t *r, const ev_t *ev)
{
    /* Not recording (disconnected, ending, detached): the flusher discards,
     * so no wait and no kick. Looked at after the caller set busy: a detach
     * that stored 0 and then found this ring not busy knows no kick of it
     * reaches the eventfd it closes. */
    if (!atomic_load_explicit(&agent.recording, memory_order_relaxed) || !emit_flusher.running) {
        if (!ring_try_push(r, ev))
            atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
        return;
    }
    /* A drop just happened on this ring and the flusher has freed nothing
     * since: drop at once, without waiting again. A frozen collectord so
     * costs each thread one bounded wait per stall, not one per event. */
    uint64_t tail0 = atomic_load_explicit(&r->tail, memory_order_relaxed);
    if (r->dropping && tail0 == r->drop_tail)
        goto drop;
    r->dropping = 0;
    atomic_fetch_add_explicit(&r->waits, 1, memory_order_relaxed);
    /* release: the flusher may pin its watermark here, not at our last
     * pushed event, so it keeps emitting (and freeing) our ring. */
    atomic_store_explicit(&r->pending_ts, ev->ts, memory_order_release);
    flush_kick();
    /* Lossless while connected and the flusher runs: wait for space (on a
     * loaded machine the flusher may not run for a while), but never past
     * WAIT_STALL_NS, nor past WAIT_SEND_STALL_NS while the flusher itself
     * waits on a stopped collectord (send_all): then drop and count. Any
     * progress of the flusher frees a slot and ends the wait. */
    uint64_t start = clock_now_ns();
    for (unsigned i = 0;; i++) {
        if (ring_try_push(r, ev)) {
            atomic_store_explicit(&r->pending_ts, 0, memory_order_relaxed);
            return;
        }
        /* Disconnected (or exiting): the flusher discards; do not wait for it. */
        if (!atomic_load_explicit(&agent.recording, memory_order_relaxed) || !emit_flusher.running)
            break;
        if (i < 64) {
            __builtin_ia32_pause();
        } else if (i < 128) {
            sched_yield();
        } else {
            struct timespec ts = { 0, 50000 };
            nanosleep(&ts, NULL);
            uint64_t waited = clock_now_ns() - start;
            if (waited > WAIT_STALL_NS ||
                (waited > WAIT_SEND_STALL_NS &&
                 atomic_load_explicit(&emit_flusher.send_stalled, memory_order_relaxed)))
                break;
        }
    }
    atomic_store_explicit(&r->pending_ts, 0, memory_order_relaxed);
    r->dropping = 1;
    r->drop_tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
drop:
    atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
}
