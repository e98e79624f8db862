/* Single-producer single-consumer event ring: one per app thread, drained by the flusher. */
#include "ring.h"

#include <sys/mman.h>

#include "clock.h"
#include "region.h"

int ring_asym_fence;

static size_t ring_part(uint32_t cap)
{
    return (sizeof(ring_t) + (size_t)cap * sizeof(ev_t) + 63) & ~(size_t)63;
}

size_t ring_map_size(uint32_t cap)
{
    return (ring_part(cap) + RING_SCACHE_BYTES + RING_UWT_BYTES + 4095) & ~(size_t)4095;
}

ring_t *ring_create(uint32_t cap, uint32_t tid)
{
    if (cap < 2 || (cap & (cap - 1)) != 0)
        return NULL;
    size_t bytes = ring_map_size(cap);
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    region_add(m, bytes);
    ring_t *r = m; /* mmap memory is zeroed: head = tail = 0, state LIVE */
    r->mask = cap - 1;
    r->tid = tid;
    r->map_bytes = bytes;
    r->scache = (char *)m + ring_part(cap);
    r->uwt = (char *)r->scache + RING_SCACHE_BYTES;
    r->created_ts = clock_now_ns();
    return r;
}

void ring_destroy(ring_t *r)
{
    if (r) {
        region_del(r);
        munmap(r, r->map_bytes);
    }
}

size_t ring_peek(ring_t *r, const ev_t **a, size_t *na, const ev_t **b, size_t *nb)
{
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    /* acquire: pairs with the producer's release of head; slots are complete. */
    uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    size_t n = (size_t)(h - t);
    size_t cap = (size_t)r->mask + 1;
    size_t first = (size_t)(t & r->mask);
    size_t n1 = n < cap - first ? n : cap - first;
    *a = &r->slots[first];
    *na = n1;
    *b = &r->slots[0];
    *nb = n - n1;
    return n;
}

void ring_consume(ring_t *r, size_t n)
{
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    if (n == 0)
        return;
    r->tail_ts = r->slots[(t + n - 1) & r->mask].ts; /* before the slot is freed */
    /* release: our reads of the slots happen before the producer may reuse them. */
    atomic_store_explicit(&r->tail, t + n, memory_order_release);
}

size_t ring_count(ring_t *r)
{
    uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
    return (size_t)(h - t);
}
