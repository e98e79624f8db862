/* Unit tests of the address map: put/get/del, overwrite, growth, deletion against a reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/collectord/amap.h"

/* Deterministic generator (xorshift64*) so failures reproduce. */
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

static void test_empty(void **state)
{
    (void)state;
    amap_t m = { 0 };
    uint32_t v = 77;
    assert_int_equal(amap_get(&m, 0x1000, &v), 0);
    assert_int_equal(v, 77);
    assert_int_equal(amap_del(&m, 0x1000), 0);
    amap_free(&m);
    amap_free(&m); /* twice is harmless */
    assert_null(m.slots);
    assert_int_equal(m.used, 0);
}

static void test_put_get_del(void **state)
{
    (void)state;
    amap_t m = { 0 };
    uint32_t v;
    assert_int_equal(amap_put(&m, 0x5555555592a0, 1), 0);
    assert_int_equal(amap_put(&m, 0x5555555592e0, 2), 0);
    assert_int_equal(amap_put(&m, UINT64_MAX, 3), 0);
    assert_int_equal(amap_put(&m, 1, UINT32_MAX), 0);
    assert_int_equal(m.used, 4);

    assert_int_equal(amap_get(&m, 0x5555555592a0, &v), 1);
    assert_int_equal(v, 1);
    assert_int_equal(amap_get(&m, 0x5555555592e0, &v), 1);
    assert_int_equal(v, 2);
    assert_int_equal(amap_get(&m, UINT64_MAX, &v), 1);
    assert_int_equal(v, 3);
    assert_int_equal(amap_get(&m, 1, &v), 1);
    assert_int_equal(v, UINT32_MAX);
    assert_int_equal(amap_get(&m, 0x5555555592b0, &v), 0);

    /* Overwrite: same slot, new value, no new entry. */
    assert_int_equal(amap_put(&m, 0x5555555592a0, 10), 0);
    assert_int_equal(m.used, 4);
    assert_int_equal(amap_get(&m, 0x5555555592a0, &v), 1);
    assert_int_equal(v, 10);

    assert_int_equal(amap_del(&m, 0x5555555592a0), 1);
    assert_int_equal(m.used, 3);
    assert_int_equal(amap_get(&m, 0x5555555592a0, &v), 0);
    assert_int_equal(amap_del(&m, 0x5555555592a0), 0); /* already gone */
    assert_int_equal(amap_del(&m, 0xdead0), 0);        /* never there */
    assert_int_equal(m.used, 3);
    assert_int_equal(amap_get(&m, 0x5555555592e0, &v), 1);
    assert_int_equal(v, 2);

    /* Put back after delete. */
    assert_int_equal(amap_put(&m, 0x5555555592a0, 11), 0);
    assert_int_equal(amap_get(&m, 0x5555555592a0, &v), 1);
    assert_int_equal(v, 11);
    assert_int_equal(m.used, 4);
    amap_free(&m);
}

/* Thousands of heap-like keys (16-byte aligned, dense): the map grows and
 * keeps every key; then every other one is deleted. */
static void test_growth(void **state)
{
    (void)state;
    amap_t m = { 0 };
    const uint32_t n = 20000;
    const uint64_t base = 0x7f0000001000ull;
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(amap_put(&m, base + 16ull * i, i), 0);
    assert_int_equal(m.used, n);
    assert_true(m.mask + 1 >= 2 * n); /* at most half full */
    assert_int_equal((m.mask + 1) & m.mask, 0);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t v = UINT32_MAX;
        if (amap_get(&m, base + 16ull * i, &v) != 1 || v != i)
            fail_msg("key %u lost after growth (got %u)", i, v);
    }
    for (uint32_t i = 0; i < n; i += 2)
        assert_int_equal(amap_del(&m, base + 16ull * i), 1);
    assert_int_equal(m.used, n / 2);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t v = UINT32_MAX;
        int want = i & 1;
        if (amap_get(&m, base + 16ull * i, &v) != want || (want && v != i))
            fail_msg("key %u: present %d after deleting the even keys", i, !want);
    }
    amap_free(&m);
}

/* A reference model: keys[i] holds vals[i] when present[i]. */
typedef struct ref_s {
    uint64_t *keys;
    uint32_t *vals;
    uint8_t *present;
    uint32_t n;       /* distinct keys in the universe */
    uint32_t used;    /* present keys */
} ref_t;

static void ref_init(ref_t *r, uint32_t n, int clustered)
{
    r->keys = calloc(n, sizeof *r->keys);
    r->vals = calloc(n, sizeof *r->vals);
    r->present = calloc(n, 1);
    assert_non_null(r->keys);
    assert_non_null(r->vals);
    assert_non_null(r->present);
    r->n = n;
    r->used = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t k;
        int dup;
        do {
            k = clustered ? 0x555555559000ull + 16 * (rng() % (4ull * n)) : rng();
            dup = k == 0;
            for (uint32_t j = 0; j < i && !dup; j++)
                dup = r->keys[j] == k;
        } while (dup);
        r->keys[i] = k;
    }
}

static void ref_free(ref_t *r)
{
    free(r->keys);
    free(r->vals);
    free(r->present);
}

static void ref_check(const amap_t *m, const ref_t *r, uint32_t step)
{
    if (m->used != r->used)
        fail_msg("step %u: map holds %u keys, the reference %u", step, m->used, r->used);
    for (uint32_t i = 0; i < r->n; i++) {
        uint32_t v = UINT32_MAX;
        int got = amap_get(m, r->keys[i], &v);
        if (got != r->present[i])
            fail_msg("step %u: key %#llx present %d, expected %d", step,
                     (unsigned long long)r->keys[i], got, r->present[i]);
        if (got && v != r->vals[i])
            fail_msg("step %u: key %#llx has %u, expected %u", step,
                     (unsigned long long)r->keys[i], v, r->vals[i]);
    }
}

/* Random puts, overwrites and deletes over a fixed key universe, checked
 * against the reference every check_every operations. */
static void random_ops(uint64_t seed, uint32_t nkeys, uint32_t steps, int clustered,
                       uint32_t check_every)
{
    rng_state = seed;
    ref_t r;
    ref_init(&r, nkeys, clustered);
    amap_t m = { 0 };
    for (uint32_t s = 0; s < steps; s++) {
        uint32_t i = (uint32_t)(rng() % nkeys);
        uint32_t op = (uint32_t)(rng() % 3);
        if (op < 2) {
            uint32_t v = (uint32_t)rng();
            assert_int_equal(amap_put(&m, r.keys[i], v), 0);
            if (!r.present[i])
                r.used++;
            r.present[i] = 1;
            r.vals[i] = v;
        } else {
            int had = amap_del(&m, r.keys[i]);
            if (had != r.present[i])
                fail_msg("step %u: del of %#llx returned %d, expected %d", s,
                         (unsigned long long)r.keys[i], had, r.present[i]);
            if (r.present[i])
                r.used--;
            r.present[i] = 0;
        }
        if (s % check_every == 0)
            ref_check(&m, &r, s);
    }
    /* Empty it: every key deletes once. */
    for (uint32_t i = 0; i < nkeys; i++) {
        assert_int_equal(amap_del(&m, r.keys[i]), r.present[i]);
        if (r.present[i])
            r.used--;
        r.present[i] = 0;
    }
    ref_check(&m, &r, steps);
    assert_int_equal(m.used, 0);
    amap_free(&m);
    ref_free(&r);
}

/* At most 32 keys live: the table stays at 64 slots, so probe chains are
 * long and wrap around its end, the hard case for backward-shift deletion. */
static void test_random_small(void **state)
{
    (void)state;
    random_ops(0x9e3779b97f4a7c15ull, 32, 20000, 0, 1);
    random_ops(0x0123456789abcdefull, 32, 20000, 1, 1);
}

static void test_random_large(void **state)
{
    (void)state;
    random_ops(0xdeadbeefcafef00dull, 3000, 30000, 0, 97);
    random_ops(0x5eed5eed5eed5eedull, 3000, 30000, 1, 97);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_put_get_del),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_random_small),
        cmocka_unit_test(test_random_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
