/* Unit tests of stack interning: identity, generations, epochs, full table and pool, the hash. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/intern.h"

/* intern.c keeps its pool cursor and stack count across intern_init calls (it
 * is meant to run once per process), so each test runs in a fresh child
 * process and reports through its exit status. CHECK is the child's assert. */
#define CHECK(c)                                                                  \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
            _exit(1);                                                             \
        }                                                                         \
    } while (0)

static void in_child(void (*body)(void))
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        body();
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void fill_pcs(uint64_t *pcs, uint32_t n, uint64_t seed)
{
    for (uint32_t i = 0; i < n; i++)
        pcs[i] = 0x400000 + seed * 0x1000 + i * 8;
}

/* ------------------------------------------------------------------ identity */

static void body_same_and_different(void)
{
    CHECK(intern_init(1u << 10, 1u << 16) == 0);
    /* Memory in use, not reserved: nothing yet. */
    CHECK(intern_bytes() == 0);
    uint64_t a[8], b[8];
    fill_pcs(a, 8, 1);
    memcpy(b, a, sizeof a);
    b[7] ^= 0x10; /* differs only in the outermost frame */

    uint32_t ia = intern_stack(a, 8, 0, 0);
    CHECK(ia != INTERN_NONE);
    CHECK(intern_stack(a, 8, 0, 0) == ia);
    CHECK(intern_stack(a, 8, 0, 1) == ia); /* truncation is not part of the identity */
    CHECK(intern_count() == 1);
    /* One stack: a page of the slot array at most, and its eight pcs. */
    CHECK(intern_bytes() == 4096 + 8 * sizeof(uint64_t));

    uint32_t ig = intern_stack(a, 8, 1, 0); /* same pcs, next module-map generation */
    CHECK(ig != INTERN_NONE && ig != ia);
    uint32_t ib = intern_stack(b, 8, 0, 0);
    CHECK(ib != INTERN_NONE && ib != ia && ib != ig);
    uint32_t ip = intern_stack(a, 7, 0, 0); /* a prefix is another stack */
    CHECK(ip != INTERN_NONE && ip != ia && ip != ib && ip != ig);
    CHECK(intern_count() == 4);

    /* Looking them up again changes nothing. */
    CHECK(intern_stack(a, 8, 1, 0) == ig);
    CHECK(intern_stack(b, 8, 0, 0) == ib);
    CHECK(intern_stack(a, 7, 0, 0) == ip);
    CHECK(intern_count() == 4);
}

static void test_same_and_different(void **state)
{
    (void)state;
    in_child(body_same_and_different);
}

static void body_stored_pcs(void)
{
    CHECK(intern_init(1u << 10, 1u << 16) == 0);
    uint64_t a[5], b[3];
    fill_pcs(a, 5, 7);
    fill_pcs(b, 3, 9);
    uint32_t ia = intern_stack(a, 5, 3, 1);
    uint32_t ib = intern_stack(b, 3, 4, 0);
    CHECK(ia != INTERN_NONE && ib != INTERN_NONE);

    const intern_slot_t *sa = intern_slot(ia);
    CHECK(atomic_load(&((intern_slot_t *)sa)->state) == SLOT_READY);
    CHECK(sa->npcs == 5);
    CHECK(sa->gen == 3);
    CHECK(sa->flags == SLOT_F_TRUNCATED);
    CHECK(atomic_load(&((intern_slot_t *)sa)->hash) == intern_hash(a, 5, 3));
    CHECK(memcmp(intern_pcs(sa), a, sizeof a) == 0);

    const intern_slot_t *sb = intern_slot(ib);
    CHECK(sb->npcs == 3);
    CHECK(sb->gen == 4);
    CHECK(sb->flags == 0);
    CHECK(memcmp(intern_pcs(sb), b, sizeof b) == 0);
    /* The pcs live in distinct pool ranges. */
    CHECK(intern_pcs(sa) + 5 <= intern_pcs(sb) || intern_pcs(sb) + 3 <= intern_pcs(sa));
}

static void test_stored_pcs(void **state)
{
    (void)state;
    in_child(body_stored_pcs);
}

/* A stack whose hash lands on slot 0 must still get a real index: 0 is
 * INTERN_NONE on the wire. */
static void body_never_none(void)
{
    enum { SLOTS = 64 };
    CHECK(intern_init(SLOTS, 1u << 12) == 0);
    uint64_t pc = 0;
    int found = 0;
    for (uint64_t s = 1; s < 100000 && !found; s++) {
        pc = 0x400000 + s * 16;
        if ((intern_hash(&pc, 1, 0) & (SLOTS - 1)) == 0)
            found = 1;
    }
    CHECK(found);
    uint32_t i = intern_stack(&pc, 1, 0, 0);
    CHECK(i != INTERN_NONE);
    CHECK(i == 1); /* linear probing skips slot 0 */
    CHECK(intern_stack(&pc, 1, 0, 0) == i);
    /* And many normal inserts never return 0 either. */
    for (uint64_t s = 0; s < SLOTS / 2; s++) {
        uint64_t p[2] = { 0x500000 + s * 32, 0x600000 + s };
        CHECK(intern_stack(p, 2, 0, 0) != INTERN_NONE);
    }
}

static void test_never_none(void **state)
{
    (void)state;
    in_child(body_never_none);
}

static void body_uninitialized(void)
{
    uint64_t pc = 0x401000;
    CHECK(intern_stack(&pc, 1, 0, 0) == INTERN_NONE);
    CHECK(intern_count() == 0);
    CHECK(intern_init(3, 16) == -EINVAL);
    CHECK(intern_init(0, 16) == -EINVAL);
    CHECK(intern_init(1, 16) == -EINVAL);
    CHECK(intern_stack(&pc, 1, 0, 0) == INTERN_NONE);
}

static void test_uninitialized(void **state)
{
    (void)state;
    in_child(body_uninitialized);
}

/* ------------------------------------------------------------------ epochs */

static void body_take_unsent(void)
{
    CHECK(intern_init(1u << 8, 1u << 12) == 0);
    uint64_t a[4], b[4];
    fill_pcs(a, 4, 1);
    fill_pcs(b, 4, 2);
    uint32_t ia = intern_stack(a, 4, 0, 0), ib = intern_stack(b, 4, 0, 0);
    CHECK(ia != INTERN_NONE && ib != INTERN_NONE);
    CHECK(intern_take_unsent(ia, 1) == 1);
    CHECK(intern_take_unsent(ia, 1) == 0);
    CHECK(intern_take_unsent(ia, 1) == 0);
    CHECK(intern_take_unsent(ib, 1) == 1);
    CHECK(intern_take_unsent(ib, 1) == 0);
    /* A new connection epoch sends every stack again, once. */
    CHECK(intern_take_unsent(ia, 2) == 1);
    CHECK(intern_take_unsent(ia, 2) == 0);
    CHECK(intern_take_unsent(ib, 2) == 1);
    CHECK(intern_take_unsent(ib, 2) == 0);
}

static void test_take_unsent(void **state)
{
    (void)state;
    in_child(body_take_unsent);
}

/* ------------------------------------------------------------------ limits */

static void body_tiny_table_fills(void)
{
    enum { SLOTS = 8 };
    CHECK(intern_init(SLOTS, 1u << 12) == 0);
    uint32_t idx[64];
    uint64_t pcs[64][2];
    int ok = 0, full_at = -1;
    for (int s = 0; s < 64; s++) {
        pcs[s][0] = 0x400000 + (uint64_t)s * 64;
        pcs[s][1] = 0x7f0000000000 + (uint64_t)s;
        idx[s] = intern_stack(pcs[s], 2, 0, 0);
        if (idx[s] != INTERN_NONE) {
            CHECK(full_at < 0); /* once full, nothing more fits */
            CHECK(idx[s] < SLOTS);
            ok++;
        } else if (full_at < 0) {
            full_at = s;
        }
    }
    /* Slot 0 is reserved: 7 stacks fit in 8 slots. */
    CHECK(ok == SLOTS - 1);
    CHECK(full_at == SLOTS - 1);
    CHECK(intern_count() == SLOTS - 1);
    /* The stored ones are still found, at distinct indexes. */
    for (int s = 0; s < SLOTS - 1; s++) {
        CHECK(intern_stack(pcs[s], 2, 0, 0) == idx[s]);
        for (int t = 0; t < s; t++)
            CHECK(idx[s] != idx[t]);
        CHECK(memcmp(intern_pcs(intern_slot(idx[s])), pcs[s], sizeof pcs[s]) == 0);
    }
}

static void test_tiny_table_fills(void **state)
{
    (void)state;
    in_child(body_tiny_table_fills);
}

static void body_pool_exhaustion(void)
{
    CHECK(intern_init(64, 10) == 0); /* room for 10 pcs */
    uint64_t s[6][3];
    for (int i = 0; i < 6; i++)
        fill_pcs(s[i], 3, (uint64_t)i + 1);
    uint32_t i0 = intern_stack(s[0], 3, 0, 0);
    uint32_t i1 = intern_stack(s[1], 3, 0, 0);
    uint32_t i2 = intern_stack(s[2], 3, 0, 1);
    CHECK(i0 != INTERN_NONE && i1 != INTERN_NONE && i2 != INTERN_NONE);
    /* 9 pcs used; 3 more do not fit. */
    CHECK(intern_stack(s[3], 3, 0, 0) == INTERN_NONE);
    CHECK(intern_stack(s[3], 3, 0, 0) == INTERN_NONE); /* stays out */
    /* Even a 1-pc stack no longer fits: the cursor moved past the end. */
    uint64_t one = 0x401234;
    CHECK(intern_stack(&one, 1, 0, 0) == INTERN_NONE);
    CHECK(intern_count() == 3);
    /* What is stored stays intact and findable. */
    CHECK(intern_stack(s[0], 3, 0, 0) == i0);
    CHECK(intern_stack(s[2], 3, 0, 0) == i2);
    CHECK(memcmp(intern_pcs(intern_slot(i1)), s[1], sizeof s[1]) == 0);
    CHECK(intern_slot(i2)->flags == SLOT_F_TRUNCATED);
}

static void test_pool_exhaustion(void **state)
{
    (void)state;
    in_child(body_pool_exhaustion);
}

/* ------------------------------------------------------------------ the hash */

#define H_SEED 0x9e3779b97f4a7c15ULL
#define H_PRIME 0x100000001b3ULL

/* Inverse of an odd 64-bit multiplier (Newton's iteration). */
static uint64_t inv64(uint64_t a)
{
    uint64_t x = a; /* correct to 3 bits */
    for (int i = 0; i < 6; i++)
        x *= 2 - a * x;
    return x;
}

/* Inverse of h ^= h >> s for 0 < s < 64. */
static uint64_t unxorshift(uint64_t h, unsigned s)
{
    uint64_t x = h;
    for (unsigned k = s; k < 64; k += s)
        x = h ^ (x >> s);
    return x;
}

/* Inverse of intern.c's final mixer (murmur3 fmix64). */
static uint64_t unmix64(uint64_t h)
{
    h = unxorshift(h, 33);
    h *= inv64(0xc4ceb9fe1a85ec53ULL);
    h = unxorshift(h, 33);
    h *= inv64(0xff51afd7ed558ccdULL);
    h = unxorshift(h, 33);
    return h;
}

/* The one pc that makes a 1-frame stack at generation gen hash to target
 * before intern_hash's remapping of 0 and ~0. Mirrors intern.c's loop. */
static uint64_t pc_for_hash(uint64_t target, uint32_t gen)
{
    uint64_t h0 = H_SEED ^ ((uint64_t)gen << 32) ^ 1u;
    uint64_t h1 = unxorshift(unmix64(target), 29);
    return h0 ^ (h1 * inv64(H_PRIME));
}

static void test_hash_never_zero(void **state)
{
    (void)state;
    /* Sanity of the inversion on an ordinary value. */
    uint64_t pc = pc_for_hash(0x123456789abcdefULL, 5);
    assert_int_equal(intern_hash(&pc, 1, 5), 0x123456789abcdefULL);

    /* The raw hash would be 0 (empty slot) and ~0 (dead slot): both remapped. */
    pc = pc_for_hash(0, 0);
    assert_int_equal(intern_hash(&pc, 1, 0), 1);
    pc = pc_for_hash(~(uint64_t)0, 7);
    assert_int_equal(intern_hash(&pc, 1, 7), ~(uint64_t)0 - 1);

    /* Many ordinary stacks: never 0 or ~0, and gen/n take part. */
    uint64_t pcs[16];
    for (uint64_t s = 0; s < 20000; s++) {
        fill_pcs(pcs, 16, s);
        uint32_t n = 1 + (uint32_t)(s % 16);
        uint64_t h = intern_hash(pcs, n, (uint32_t)(s % 3));
        assert_true(h != 0 && h != ~(uint64_t)0);
        assert_true(h != intern_hash(pcs, n, (uint32_t)(s % 3) + 1));
    }
    assert_true(intern_hash(pcs, 0, 0) != 0);
}

/* A stack that hashes to 0 is an ordinary stack to intern_stack. */
static void body_zero_hash_stack(void)
{
    CHECK(intern_init(1u << 8, 1u << 12) == 0);
    uint64_t pc = pc_for_hash(0, 0);
    uint32_t i = intern_stack(&pc, 1, 0, 0);
    CHECK(i != INTERN_NONE);
    CHECK(intern_stack(&pc, 1, 0, 0) == i);
    CHECK(intern_pcs(intern_slot(i))[0] == pc);
}

static void test_zero_hash_stack(void **state)
{
    (void)state;
    in_child(body_zero_hash_stack);
}

/* ------------------------------------------------------------------ threads */

#define RACE_THREADS 4
#define RACE_STACKS 500

static uint32_t race_idx[RACE_THREADS][RACE_STACKS];

static void *race_worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int k = 0; k < RACE_STACKS; k++) {
        /* Threads walk the same stacks in different orders. */
        int s = (t & 1) ? RACE_STACKS - 1 - k : k;
        uint64_t pcs[6];
        fill_pcs(pcs, 6, (uint64_t)s);
        race_idx[t][s] = intern_stack(pcs, 6, 0, 0);
    }
    return NULL;
}

/* Threads interning the same stacks concurrently agree on one index each. */
static void body_threads_agree(void)
{
    CHECK(intern_init(1u << 12, 1u << 16) == 0);
    pthread_t th[RACE_THREADS];
    for (int t = 0; t < RACE_THREADS; t++)
        CHECK(pthread_create(&th[t], NULL, race_worker, (void *)(intptr_t)t) == 0);
    for (int t = 0; t < RACE_THREADS; t++)
        CHECK(pthread_join(th[t], NULL) == 0);
    for (int s = 0; s < RACE_STACKS; s++) {
        CHECK(race_idx[0][s] != INTERN_NONE);
        for (int t = 1; t < RACE_THREADS; t++)
            CHECK(race_idx[t][s] == race_idx[0][s]);
        uint64_t pcs[6];
        fill_pcs(pcs, 6, (uint64_t)s);
        CHECK(memcmp(intern_pcs(intern_slot(race_idx[0][s])), pcs, sizeof pcs) == 0);
    }
    CHECK(intern_count() == RACE_STACKS);
}

static void test_threads_agree(void **state)
{
    (void)state;
    in_child(body_threads_agree);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_and_different),
        cmocka_unit_test(test_stored_pcs),
        cmocka_unit_test(test_never_none),
        cmocka_unit_test(test_uninitialized),
        cmocka_unit_test(test_take_unsent),
        cmocka_unit_test(test_tiny_table_fills),
        cmocka_unit_test(test_pool_exhaustion),
        cmocka_unit_test(test_hash_never_zero),
        cmocka_unit_test(test_zero_hash_stack),
        cmocka_unit_test(test_threads_agree),
    };
    return cmocka_run_group_tests_name("agent_intern", tests, NULL, NULL);
}
