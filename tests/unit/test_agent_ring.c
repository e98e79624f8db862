/* Unit tests of the agent's SPSC event ring: capacity, wrap-around spans, counts, threads. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "agent/ring.h"

static ev_t ev_n(uint64_t n)
{
    ev_t e = { .ts = n, .addr = 0x1000 + 16 * n, .size = n, .stack = (uint32_t)n,
               .kind_tid = (uint32_t)(n & 1) };
    return e;
}

/* ------------------------------------------------------------------ creation */

static void test_create_rejects_bad_capacity(void **state)
{
    (void)state;
    assert_null(ring_create(0, 1));
    assert_null(ring_create(1, 1));
    assert_null(ring_create(3, 1));
    assert_null(ring_create(1000, 1));
    assert_null(ring_create((1u << 20) + 1, 1));
    assert_null(ring_create(0xffffffffu, 1));
}

static void test_create_fields(void **state)
{
    (void)state;
    ring_t *r = ring_create(1024, 4242);
    assert_non_null(r);
    assert_int_equal(r->mask, 1023);
    assert_int_equal(r->tid, 4242);
    assert_int_equal(atomic_load(&r->state), RING_LIVE);
    assert_int_equal(atomic_load(&r->head), 0);
    assert_int_equal(atomic_load(&r->tail), 0);
    assert_int_equal(atomic_load(&r->dropped), 0);
    assert_null(atomic_load(&r->next));
    assert_int_equal(r->map_bytes % 4096, 0);
    assert_true(r->map_bytes >= sizeof(ring_t) + 1024 * sizeof(ev_t));
    /* The stack cache lies after the slots, inside the mapping, and is zero. */
    assert_true((char *)r->scache >= (char *)&r->slots[1024]);
    assert_true((char *)r->scache + RING_SCACHE_BYTES <= (char *)r + r->map_bytes);
    assert_int_equal(r->map_bytes, ring_map_size(1024));
    for (size_t k = 0; k < RING_SCACHE_BYTES; k += 512)
        assert_int_equal(((unsigned char *)r->scache)[k], 0);
    /* head, tail and the shared fields sit on separate cache lines. */
    assert_true(offsetof(ring_t, tail) - offsetof(ring_t, head) >= 64);
    assert_true(offsetof(ring_t, mask) - offsetof(ring_t, tail) >= 64);
    assert_int_equal(sizeof(ev_t), 32);
    assert_int_equal(ring_count(r), 0);
    ring_destroy(r);
    ring_destroy(NULL); /* no-op */

    ring_t *two = ring_create(2, 1);
    assert_non_null(two);
    assert_int_equal(two->mask, 1);
    ring_destroy(two);
}

/* ------------------------------------------------------------------ single thread */

static void test_push_until_full(void **state)
{
    (void)state;
    enum { CAP = 8 };
    ring_t *r = ring_create(CAP, 1);
    assert_non_null(r);
    for (uint64_t i = 0; i < CAP; i++) {
        ev_t e = ev_n(i);
        assert_int_equal(ring_try_push(r, &e), 1);
        assert_int_equal(ring_count(r), i + 1);
    }
    /* Exactly at capacity the push fails, and keeps failing. */
    ev_t extra = ev_n(99);
    assert_int_equal(ring_try_push(r, &extra), 0);
    assert_int_equal(ring_try_push(r, &extra), 0);
    assert_int_equal(ring_count(r), CAP);
    assert_int_equal(atomic_load(&r->head), CAP);

    const ev_t *a, *b;
    size_t na, nb;
    assert_int_equal(ring_peek(r, &a, &na, &b, &nb), CAP);
    assert_int_equal(na, CAP);
    assert_int_equal(nb, 0);
    for (uint64_t i = 0; i < CAP; i++) {
        ev_t want = ev_n(i);
        assert_memory_equal(&a[i], &want, sizeof want);
    }

    /* One slot freed: one push fits, the next does not. */
    ring_consume(r, 1);
    assert_int_equal(ring_count(r), CAP - 1);
    assert_int_equal(ring_try_push(r, &extra), 1);
    assert_int_equal(ring_try_push(r, &extra), 0);
    ring_destroy(r);
}

/* ring_reserve / ring_publish: the same ring as ring_try_push, the event
 * written in place. */
static void test_reserve_until_full(void **state)
{
    (void)state;
    enum { CAP = 8 };
    ring_t *r = ring_create(CAP, 1);
    assert_non_null(r);
    for (uint64_t i = 0; i < CAP; i++) {
        uint64_t h = 99;
        ev_t *s = ring_reserve(r, &h);
        assert_non_null(s);
        assert_int_equal(h, i);
        assert_int_equal(ring_count(r), i); /* not pushed before ring_publish */
        *s = ev_n(i);
        ring_publish(r, h);
        assert_int_equal(ring_count(r), i + 1);
    }
    /* Full: no slot, head unchanged. */
    uint64_t h = 99;
    assert_null(ring_reserve(r, &h));
    assert_int_equal(h, 99);
    assert_int_equal(atomic_load(&r->head), CAP);

    const ev_t *a, *b;
    size_t na, nb;
    assert_int_equal(ring_peek(r, &a, &na, &b, &nb), CAP);
    for (uint64_t i = 0; i < CAP; i++) {
        ev_t want = ev_n(i);
        assert_memory_equal(&a[i], &want, sizeof want);
    }
    /* One slot freed: one reserve fits (the first slot again), then none. */
    ring_consume(r, 1);
    ev_t *s = ring_reserve(r, &h);
    assert_ptr_equal(s, &r->slots[0]);
    assert_int_equal(h, CAP);
    *s = ev_n(CAP);
    ring_publish(r, h);
    assert_null(ring_reserve(r, &h));
    ev_t e = ev_n(0);
    assert_int_equal(ring_try_push(r, &e), 0);
    ring_destroy(r);
}

static void test_peek_spans_wrap(void **state)
{
    (void)state;
    enum { CAP = 8 };
    ring_t *r = ring_create(CAP, 1);
    assert_non_null(r);
    uint64_t next = 0, expect = 0;
    /* Fill 6, consume 5: tail = 5, head = 6. */
    for (int i = 0; i < 6; i++) {
        ev_t e = ev_n(next++);
        assert_int_equal(ring_try_push(r, &e), 1);
    }
    const ev_t *a, *b;
    size_t na, nb;
    assert_int_equal(ring_peek(r, &a, &na, &b, &nb), 6);
    ring_consume(r, 5);
    expect = 5;
    /* Push 7 more: slots 6,7 then 0..4. head = 13, tail = 5: full. */
    for (int i = 0; i < 7; i++) {
        ev_t e = ev_n(next++);
        assert_int_equal(ring_try_push(r, &e), 1);
    }
    ev_t e = ev_n(1000);
    assert_int_equal(ring_try_push(r, &e), 0);
    assert_int_equal(ring_count(r), CAP);

    size_t n = ring_peek(r, &a, &na, &b, &nb);
    assert_int_equal(n, CAP);
    assert_int_equal(na, 3); /* slots 5, 6, 7 */
    assert_int_equal(nb, 5); /* slots 0..4 */
    assert_ptr_equal(a, &r->slots[5]);
    assert_ptr_equal(b, &r->slots[0]);
    for (size_t i = 0; i < na; i++) {
        ev_t want = ev_n(expect++);
        assert_memory_equal(&a[i], &want, sizeof want);
    }
    for (size_t i = 0; i < nb; i++) {
        ev_t want = ev_n(expect++);
        assert_memory_equal(&b[i], &want, sizeof want);
    }
    assert_int_equal(expect, next);

    /* Partial consume across the wrap point: 4 = the 3 of span a + 1 of b. */
    ring_consume(r, 4);
    assert_int_equal(ring_count(r), 4);
    n = ring_peek(r, &a, &na, &b, &nb);
    assert_int_equal(n, 4);
    assert_int_equal(na, 4); /* slots 1..4, no wrap any more */
    assert_int_equal(nb, 0);
    assert_int_equal(a[0].ts, 9);
    ring_consume(r, n);
    assert_int_equal(ring_count(r), 0);
    assert_int_equal(ring_peek(r, &a, &na, &b, &nb), 0);
    assert_int_equal(na + nb, 0);
    ring_destroy(r);
}

static void test_peek_empty_at_wrap(void **state)
{
    (void)state;
    ring_t *r = ring_create(4, 1);
    assert_non_null(r);
    /* Walk head and tail around several times; the ring stays consistent. */
    uint64_t seq = 0;
    for (int round = 0; round < 50; round++) {
        int k = 1 + round % 4;
        for (int i = 0; i < k; i++) {
            ev_t e = ev_n(seq + (uint64_t)i);
            assert_int_equal(ring_try_push(r, &e), 1);
        }
        const ev_t *a, *b;
        size_t na, nb;
        assert_int_equal(ring_peek(r, &a, &na, &b, &nb), (size_t)k);
        for (int i = 0; i < k; i++) {
            const ev_t *got = (size_t)i < na ? &a[i] : &b[(size_t)i - na];
            assert_int_equal(got->ts, seq + (uint64_t)i);
        }
        ring_consume(r, (size_t)k);
        seq += (uint64_t)k;
        assert_int_equal(ring_count(r), 0);
    }
    assert_int_equal(atomic_load(&r->head), seq);
    assert_int_equal(atomic_load(&r->tail), seq);
    ring_destroy(r);
}

/* ------------------------------------------------------------------ two threads */

#define SPSC_EVENTS 2000000u

typedef struct spsc_s {
    ring_t *r;
    uint64_t fails;   /* producer: full rings seen */
} spsc_t;

static void *spsc_producer(void *arg)
{
    spsc_t *s = arg;
    for (uint64_t i = 0; i < SPSC_EVENTS;) {
        ev_t e = ev_n(i);
        /* Every other event written in place (hook.c's way). */
        uint64_t h;
        ev_t *slot = (i & 1) ? ring_reserve(s->r, &h) : NULL;
        if (slot) {
            *slot = e;
            ring_publish(s->r, h);
            i++;
        } else if (!(i & 1) && ring_try_push(s->r, &e)) {
            i++;
        } else {
            s->fails++;
        }
    }
    return NULL;
}

/* Producer (ring_try_push and ring_reserve/ring_publish in turn) and
 * consumer on two threads: every event arrives once, in order, with its
 * contents intact, across many wraps of a small ring. */
static void test_spsc_threads(void **state)
{
    (void)state;
    spsc_t s = { .r = ring_create(64, 1) };
    assert_non_null(s.r);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, spsc_producer, &s), 0);
    uint64_t got = 0, bad = 0;
    while (got < SPSC_EVENTS) {
        const ev_t *a, *b;
        size_t na, nb;
        size_t n = ring_peek(s.r, &a, &na, &b, &nb);
        assert_true(n <= 64);
        for (size_t i = 0; i < n; i++) {
            const ev_t *e = i < na ? &a[i] : &b[i - na];
            ev_t want = ev_n(got + i);
            if (memcmp(e, &want, sizeof want) != 0)
                bad++;
        }
        ring_consume(s.r, n);
        got += n;
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(bad, 0);
    assert_int_equal(got, SPSC_EVENTS);
    assert_int_equal(ring_count(s.r), 0);
    ring_destroy(s.r);
}

/* ------------------------------------------------------------------ ts floor */

/* The floor of an empty ring: its creation time, then the last consumed
 * event's timestamp (kept by ring_consume), never a slot's contents. */
static void test_ts_floor_empty(void **state)
{
    (void)state;
    ring_t *r = ring_create(4, 1);
    assert_non_null(r);
    assert_int_equal(ring_ts_floor(r), r->created_ts);
    for (uint64_t i = 1; i <= 3; i++) {
        ev_t e = ev_n(100 + i);
        assert_true(ring_try_push(r, &e));
    }
    assert_int_equal(ring_ts_floor(r), 103); /* the last pushed, unconsumed */
    ring_consume(r, 2);
    assert_int_equal(ring_ts_floor(r), 103);
    ring_consume(r, 1);
    assert_int_equal(ring_ts_floor(r), 103); /* empty: the kept timestamp */
    /* A consumed slot that the producer overwrites does not move the floor
     * of what the consumer saw: slot (3 - 1) & 3 is reused by event 7. */
    for (uint64_t i = 4; i <= 7; i++) {
        ev_t e = ev_n(100 + i);
        assert_true(ring_try_push(r, &e));
    }
    assert_int_equal(ring_ts_floor(r), 107);
    ring_consume(r, 4);
    assert_int_equal(ring_ts_floor(r), 107);
    ring_consume(r, 0);
    assert_int_equal(ring_ts_floor(r), 107);
    ring_destroy(r);
}

#define FLOOR_EVENTS 1000000u

static void *floor_producer(void *arg)
{
    ring_t *r = arg;
    for (uint64_t i = 1; i <= FLOOR_EVENTS;) {
        ev_t e = ev_n(i);
        if (ring_try_push(r, &e))
            i++;
    }
    return NULL;
}

/* The flusher's use: right after consuming everything, the floor. On a ring
 * of 2 the producer reuses a consumed slot at once: reading the floor from
 * that slot is a data race (ThreadSanitizer, which this test is built for in
 * check-sanitizers, reports it) and can return a newer event's timestamp,
 * even one not yet pushed. */
static void test_ts_floor_threads(void **state)
{
    (void)state;
    ring_t *r = ring_create(2, 1);
    assert_non_null(r);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, floor_producer, r), 0);
    uint64_t got = 0, ahead = 0, floor;
    while (got < FLOOR_EVENTS) {
        const ev_t *a, *b;
        size_t na, nb;
        size_t n = ring_peek(r, &a, &na, &b, &nb);
        for (size_t i = 0; i < n; i++) {
            const ev_t *e = i < na ? &a[i] : &b[i - na];
            if (e->ts != got + i + 1)
                ahead++;
        }
        ring_consume(r, n);
        got += n;
        floor = ring_ts_floor(r);
        /* Event k has ts k: the floor names an event already pushed (before
         * the first, it is the ring's creation time). */
        if (got > 0 && floor > atomic_load_explicit(&r->head, memory_order_acquire))
            ahead++;
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(ahead, 0);
    assert_int_equal(ring_ts_floor(r), FLOOR_EVENTS);
    ring_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_rejects_bad_capacity),
        cmocka_unit_test(test_create_fields),
        cmocka_unit_test(test_push_until_full),
        cmocka_unit_test(test_reserve_until_full),
        cmocka_unit_test(test_peek_spans_wrap),
        cmocka_unit_test(test_peek_empty_at_wrap),
        cmocka_unit_test(test_spsc_threads),
        cmocka_unit_test(test_ts_floor_empty),
        cmocka_unit_test(test_ts_floor_threads),
    };
    return cmocka_run_group_tests_name("agent_ring", tests, NULL, NULL);
}
