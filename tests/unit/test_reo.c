/* Unit tests of the reorder records: lookup, removal, growth, cap and expiry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/collectord/reo.h"

static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dull;
}

static uint32_t count_records(const reo_t *r)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i <= r->mask; i++)
        if (r->slots[i].addr)
            n++;
    return n;
}

static void test_get_find_remove(void **state)
{
    (void)state;
    reo_t r;
    assert_int_equal(reo_init(&r, 100), 0);
    assert_null(reo_find(&r, 0x1000));

    reo_rec_t *a = reo_get(&r, 0x1000);
    assert_non_null(a);
    assert_int_equal(a->addr, 0x1000);
    assert_int_equal(a->free_ts, 0);
    assert_int_equal(a->tomb_lo, 0);
    assert_int_equal(a->tomb_hi, 0);
    assert_int_equal(a->due, 0);
    a->free_ts = 111;
    a->due = 222;
    assert_int_equal(r.used, 1);

    /* get of an existing address returns the same record, contents kept. */
    reo_rec_t *b = reo_get(&r, 0x1000);
    assert_ptr_equal(a, b);
    assert_int_equal(b->free_ts, 111);
    assert_int_equal(r.used, 1);

    reo_rec_t *c = reo_get(&r, 0x2000);
    assert_non_null(c);
    c->tomb_lo = 5;
    c->tomb_hi = 6;
    assert_int_equal(r.used, 2);

    a = reo_find(&r, 0x1000);
    assert_non_null(a);
    assert_int_equal(a->due, 222);
    assert_null(reo_find(&r, 0x3000));

    reo_remove(&r, a);
    assert_int_equal(r.used, 1);
    assert_null(reo_find(&r, 0x1000));
    c = reo_find(&r, 0x2000);
    assert_non_null(c);
    assert_int_equal(c->tomb_hi, 6);

    /* A re-created record starts empty. */
    a = reo_get(&r, 0x1000);
    assert_non_null(a);
    assert_int_equal(a->free_ts, 0);
    assert_int_equal(a->due, 0);
    reo_free(&r);
}

static void test_address_zero_is_never_a_record(void **state)
{
    (void)state;
    reo_t r;
    assert_int_equal(reo_init(&r, 100), 0);
    assert_null(reo_get(&r, 0));
    assert_null(reo_find(&r, 0));
    assert_int_equal(r.used, 0);
    reo_free(&r);
}

static void test_growth_keeps_records(void **state)
{
    (void)state;
    enum { N = 10000 };
    reo_t r;
    assert_int_equal(reo_init(&r, N), 0);
    uint32_t slots0 = r.mask + 1;
    for (uint64_t i = 1; i <= N; i++) {
        reo_rec_t *s = reo_get(&r, i * 16);
        assert_non_null(s);
        s->due = i;
        s->free_ts = i * 3;
        assert_true((uint64_t)r.used * 2 <= (uint64_t)r.mask + 1);
    }
    assert_true(r.mask + 1 > slots0);
    assert_int_equal(r.used, N);
    assert_int_equal(count_records(&r), N);
    for (uint64_t i = 1; i <= N; i++) {
        reo_rec_t *s = reo_find(&r, i * 16);
        assert_non_null(s);
        assert_int_equal(s->due, i);
        assert_int_equal(s->free_ts, i * 3);
    }
    reo_free(&r);
}

static void test_max_cap(void **state)
{
    (void)state;
    reo_t r;
    assert_int_equal(reo_init(&r, 5), 0);
    for (uint64_t i = 1; i <= 5; i++)
        assert_non_null(reo_get(&r, i * 8));
    /* Full: a new address gets nothing, an existing one still does. */
    assert_null(reo_get(&r, 0x999));
    assert_int_equal(r.used, 5);
    assert_non_null(reo_get(&r, 3 * 8));
    assert_null(reo_find(&r, 0x999));
    /* Room again after a removal. */
    reo_remove(&r, reo_find(&r, 2 * 8));
    assert_non_null(reo_get(&r, 0x999));
    assert_int_equal(r.used, 5);
    reo_free(&r);

    assert_int_equal(reo_init(&r, 0), 0);
    assert_null(reo_get(&r, 0x10));
    reo_free(&r);
}

static void test_expire_counts_pending_frees(void **state)
{
    (void)state;
    reo_t r;
    assert_int_equal(reo_init(&r, 1000), 0);
    /* 300 records: due at i; every third has a pending free, others are
     * tombstones only. */
    uint64_t pend_upto_150 = 0, pend_all = 0;
    for (uint64_t i = 1; i <= 300; i++) {
        reo_rec_t *s = reo_get(&r, 0x10000 + i * 64);
        assert_non_null(s);
        s->due = i;
        if (i % 3 == 0) {
            s->free_ts = i;
            pend_all++;
            if (i <= 150)
                pend_upto_150++;
        } else {
            s->tomb_lo = i;
            s->tomb_hi = i + 1;
        }
    }
    assert_int_equal(reo_expire(&r, 0), 0);
    assert_int_equal(r.used, 300);
    assert_int_equal(reo_expire(&r, 150), pend_upto_150);
    assert_int_equal(r.used, 150);
    assert_int_equal(count_records(&r), 150);
    for (uint64_t i = 1; i <= 300; i++) {
        reo_rec_t *s = reo_find(&r, 0x10000 + i * 64);
        if (i <= 150) {
            assert_null(s);
        } else {
            assert_non_null(s);
            assert_int_equal(s->due, i);
        }
    }
    assert_int_equal(reo_expire(&r, 150), 0);
    assert_int_equal(reo_expire(&r, UINT64_MAX), pend_all - pend_upto_150);
    assert_int_equal(r.used, 0);
    assert_int_equal(count_records(&r), 0);
    assert_int_equal(reo_expire(&r, UINT64_MAX), 0);
    reo_free(&r);
}

/* Records due at UINT64_MAX itself go too when now is UINT64_MAX. */
static void test_expire_everything(void **state)
{
    (void)state;
    reo_t r;
    assert_int_equal(reo_init(&r, 100), 0);
    reo_rec_t *s = reo_get(&r, 0x10);
    s->due = UINT64_MAX;
    s->free_ts = 1;
    s = reo_get(&r, 0x20);
    s->due = UINT64_MAX - 1;
    assert_int_equal(reo_expire(&r, UINT64_MAX - 2), 0);
    assert_int_equal(reo_expire(&r, UINT64_MAX), 1);
    assert_int_equal(r.used, 0);
    reo_free(&r);
}

/* The table's own hash: the crafted probe chain follows it. */
#define home_of(addr, mask) reo_hash((addr), (mask))

static uint64_t addr_homed_at(uint32_t slot, uint32_t mask, uint64_t after)
{
    for (uint64_t a = after + 16;; a += 16)
        if (home_of(a, mask) == slot)
            return a;
}

static reo_rec_t *must_get(reo_t *r, uint64_t addr)
{
    reo_rec_t *s = reo_get(r, addr);
    assert_non_null(s);
    return s;
}

/* Removing the head of a cluster that wraps from the last slots to slot 0
 * must leave the records homed at slot 0 where lookups find them. */
static void test_remove_across_wrap(void **state)
{
    (void)state;
    reo_t r;
    assert_int_equal(reo_init(&r, 100), 0);
    uint32_t mask = r.mask;
    uint64_t x = addr_homed_at(mask - 1, mask, 0);
    uint64_t y = addr_homed_at(mask, mask, 0);
    uint64_t y2 = addr_homed_at(mask, mask, y);
    uint64_t z = addr_homed_at(0, mask, 0);
    uint64_t z2 = addr_homed_at(1, mask, 0);
    /* Slots: x at mask-1, y at mask, y2 wraps to 0, z to 1, z2 to 2. */
    uint64_t addrs[] = { x, y, y2, z, z2 };
    for (int k = 0; k < 5; k++)
        must_get(&r, addrs[k])->due = (uint64_t)k + 1;
    if (r.mask != mask || reo_find(&r, x) - r.slots != mask - 1 ||
        reo_find(&r, z) - r.slots != 1)
        fail_msg("the crafted probe chain did not wrap as planned");
    reo_remove(&r, reo_find(&r, x));
    for (int k = 1; k < 5; k++) {
        reo_rec_t *s = reo_find(&r, addrs[k]);
        assert_non_null(s);
        assert_int_equal(s->due, (uint64_t)k + 1);
    }
    reo_remove(&r, reo_find(&r, y));
    for (int k = 2; k < 5; k++)
        assert_non_null(reo_find(&r, addrs[k]));
    /* Expiry walking over the wrapped cluster removes exactly the due ones. */
    must_get(&r, x)->due = 100;
    must_get(&r, y)->due = 100;
    assert_int_equal(reo_expire(&r, 4), 0);
    assert_null(reo_find(&r, y2));
    assert_null(reo_find(&r, z));
    assert_non_null(reo_find(&r, x));
    assert_non_null(reo_find(&r, y));
    assert_non_null(reo_find(&r, z2));
    assert_int_equal(r.used, 3);
    reo_free(&r);
}

/* Randomized: interleaved get/remove/expire against a plain array model,
 * with clustered addresses so removals shift records across the wrap. */
#define M 2048

static void test_random_against_model(void **state)
{
    (void)state;
    static uint8_t live[M];
    static uint64_t due[M], fts[M];
    memset(live, 0, sizeof live);
    rng_state = 12345;
    reo_t r;
    assert_int_equal(reo_init(&r, 1u << 20), 0);
    uint64_t now = 0;
    for (int op = 0; op < 40000; op++) {
        uint32_t i = (uint32_t)(rng() % M);
        uint64_t addr = 0x7000 + (uint64_t)i * 16;
        uint64_t k = rng() % 100;
        if (k < 45) {
            reo_rec_t *s = reo_get(&r, addr);
            assert_non_null(s);
            if (live[i]) {
                assert_int_equal(s->due, due[i]);
                assert_int_equal(s->free_ts, fts[i]);
            }
            live[i] = 1;
            due[i] = s->due = now + rng() % 1000;
            fts[i] = s->free_ts = rng() % 2 ? now + 1 : 0;
        } else if (k < 65) {
            reo_rec_t *s = reo_find(&r, addr);
            if (live[i]) {
                assert_non_null(s);
                reo_remove(&r, s);
                live[i] = 0;
            } else {
                assert_null(s);
            }
        } else if (k < 90) {
            reo_rec_t *s = reo_find(&r, addr);
            if (live[i]) {
                assert_non_null(s);
                assert_int_equal(s->due, due[i]);
                assert_int_equal(s->free_ts, fts[i]);
            } else {
                assert_null(s);
            }
        } else {
            now += rng() % 300;
            uint64_t want = 0;
            for (uint32_t x = 0; x < M; x++)
                if (live[x] && due[x] <= now) {
                    want += fts[x] != 0;
                    live[x] = 0;
                }
            assert_int_equal(reo_expire(&r, now), want);
        }
        if (op % 4000 == 0) {
            uint32_t n = 0;
            for (uint32_t x = 0; x < M; x++) {
                reo_rec_t *s = reo_find(&r, 0x7000 + (uint64_t)x * 16);
                assert_int_equal(s != NULL, live[x]);
                n += live[x];
            }
            assert_int_equal(r.used, n);
            assert_int_equal(count_records(&r), n);
        }
    }
    reo_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_find_remove),
        cmocka_unit_test(test_address_zero_is_never_a_record),
        cmocka_unit_test(test_growth_keeps_records),
        cmocka_unit_test(test_max_cap),
        cmocka_unit_test(test_expire_counts_pending_frees),
        cmocka_unit_test(test_expire_everything),
        cmocka_unit_test(test_remove_across_wrap),
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
