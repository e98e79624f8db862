/* Unit tests of byte sampling: the geometric budget, the sampled set (full
 * buckets, double frees, threads racing on distinct addresses). */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/sample.h"

#define RATE 4096

static int setup(void **state)
{
    (void)state;
    static int done;
    if (!done) {
        assert_int_equal(sample_init(RATE), 0);
        done = 1;
    }
    return 0;
}

/* An allocation of size s is sampled with probability 1 - exp(-s/RATE). */
static void test_sampling_probability(void **state)
{
    (void)state;
    tstate_t t;
    memset(&t, 0, sizeof t);
    const uint64_t sizes[] = { 16, 512, 4096, 65536 };
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        uint64_t n = 200000, hit = 0;
        for (uint64_t i = 0; i < n; i++)
            hit += (uint64_t)sample_take(&t, sizes[k]);
        double p = 1.0 - exp(-(double)sizes[k] / RATE);
        double got = (double)hit / (double)n;
        double sd = sqrt(p * (1 - p) / (double)n);
        assert_true(fabs(got - p) < 5 * sd + 5.0 / (double)n); /* p ~ 1: a rare miss */
    }
}

/* Total sampled bytes estimate: sum of size/p over samples ~ bytes allocated. */
static void test_estimate_unbiased(void **state)
{
    (void)state;
    tstate_t t;
    memset(&t, 0, sizeof t);
    double est = 0, truth = 0;
    for (uint64_t i = 0; i < 400000; i++) {
        uint64_t s = 8 + (i * 2654435761u) % 3000;
        truth += (double)s;
        if (sample_take(&t, s))
            est += (double)s / (1.0 - exp(-(double)s / RATE));
    }
    assert_true(fabs(est - truth) / truth < 0.03);
}

static void test_set_insert_forget(void **state)
{
    (void)state;
    uint64_t live0 = sample_live();
    assert_int_equal(sample_forget(0x5550), 0);
    assert_int_equal(sample_insert(0x5550), 1);
    assert_int_equal(sample_live(), live0 + 1);
    assert_int_equal(sample_forget(0x5560), 0); /* a neighbour is not it */
    assert_int_equal(sample_forget(0x5550), 1);
    assert_int_equal(sample_forget(0x5550), 0); /* a double free counts once */
    assert_int_equal(sample_live(), live0);
}

/* Nine addresses hashing to one bucket: the ninth is refused and counted. */
static void test_full_bucket(void **state)
{
    (void)state;
    uint64_t want = sample_bucket_of(0x100000), got[16];
    int n = 0;
    for (uint64_t a = 0x100010; n < 9; a += 16)
        if (sample_bucket_of(a) == want)
            got[n++] = a;
    uint64_t of0 = sample_overflow();
    for (int i = 0; i < 8; i++)
        assert_int_equal(sample_insert(got[i]), 1);
    assert_int_equal(sample_insert(got[8]), 0);
    assert_int_equal(sample_overflow(), of0 + 1);
    assert_int_equal(sample_forget(got[8]), 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(sample_forget(got[i]), 1);
    assert_int_equal(sample_occ[want], 0);
}

#define THREADS 4
#define PER 200000

static void *racer(void *arg)
{
    uint64_t base = (uint64_t)(uintptr_t)arg;
    uint64_t lost = 0;
    for (uint64_t r = 0; r < 4; r++) {
        for (uint64_t i = 0; i < PER / 4; i++) {
            uint64_t a = base + (r * (PER / 4) + i) * 64;
            if (!sample_insert(a))
                lost++;
            else if (!sample_forget(a))
                return (void *)1; /* inserted and not found: broken */
        }
    }
    return (void *)(uintptr_t)(lost ? 2 : 0);
}

/* Threads insert and forget distinct addresses concurrently: each finds
 * exactly its own, the occupancy counts return to zero. */
static void test_threads_distinct(void **state)
{
    (void)state;
    pthread_t th[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, racer,
                                        (void *)(0x7f0000000000ull + i * 0x100000000ull)), 0);
    for (int i = 0; i < THREADS; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        assert_true(rc != (void *)1);
    }
    for (uint32_t b = 0; b < SAMPLE_BUCKETS; b++)
        assert_int_equal(sample_occ[b], 0);
    assert_int_equal(sample_live(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_sampling_probability, setup),
        cmocka_unit_test_setup(test_estimate_unbiased, setup),
        cmocka_unit_test_setup(test_set_insert_forget, setup),
        cmocka_unit_test_setup(test_full_bucket, setup),
        cmocka_unit_test_setup(test_threads_distinct, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
