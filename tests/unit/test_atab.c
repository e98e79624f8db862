/* Unit tests of the allocation table: hashing, removal, growth and aging. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/collectord/atab.h"

#define SEC 1000000000ull

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

/* ------------------------------------------------------------------ expire log */

#define LOG_MAX 8192

/* What on_expire saw. */
typedef struct xlog_s {
    uint64_t addr[LOG_MAX]; /* addresses in call order */
    uint64_t ts[LOG_MAX];   /* their allocation times */
    size_t n;               /* calls */
    uint64_t now;           /* the test's clock at the time of the call */
    int bad_clock;          /* an entry expired before ts + expire passed */
    uint64_t expire_ns;
} xlog_t;

static void log_expire(void *ctx, atab_ent_t *e)
{
    xlog_t *l = ctx;
    if (l->n < LOG_MAX) {
        l->addr[l->n] = e->addr;
        l->ts[l->n] = e->ts;
    }
    l->n++;
    if (!(e->ts + l->expire_ns < l->now))
        l->bad_clock = 1;
}

static xlog_t *xlog_new(uint64_t expire_ns, uint64_t now)
{
    xlog_t *l = calloc(1, sizeof *l);
    assert_non_null(l);
    l->expire_ns = expire_ns;
    l->now = now;
    return l;
}

static size_t xlog_count(const xlog_t *l, uint64_t addr)
{
    size_t c = 0;
    for (size_t i = 0; i < l->n && i < LOG_MAX; i++)
        if (l->addr[i] == addr)
            c++;
    return c;
}

/* ------------------------------------------------------------------ basics */

static void test_find_on_empty_table(void **state)
{
    (void)state;
    atab_t t;
    assert_int_equal(atab_init(&t, SEC, 0, NULL, NULL), 0);
    assert_null(atab_find(&t, 0x1000));
    assert_int_equal(t.live, 0);
    atab_free(&t);
}

static void test_insert_find_remove(void **state)
{
    (void)state;
    atab_t t;
    assert_int_equal(atab_init(&t, 10 * SEC, 100 * SEC, NULL, NULL), 0);

    atab_ent_t *e = atab_insert(&t, 0x1000, 100 * SEC, 16, 3);
    assert_non_null(e);
    assert_non_null(atab_insert(&t, 0x2000, 100 * SEC + 1, 32, 4));
    assert_non_null(atab_insert(&t, 0x3000, 100 * SEC + 2, 48, 5));
    assert_int_equal(t.live, 3);

    e = atab_find(&t, 0x2000);
    assert_non_null(e);
    assert_int_equal(e->addr, 0x2000);
    assert_int_equal(e->ts, 100 * SEC + 1);
    assert_int_equal(e->size, 32);
    assert_int_equal(e->stack, 4);
    assert_int_equal(e->flags, 0);
    assert_null(atab_find(&t, 0x2001));
    assert_null(atab_find(&t, 0x4000));

    atab_remove(&t, e);
    assert_int_equal(t.live, 2);
    assert_null(atab_find(&t, 0x2000));
    assert_non_null(atab_find(&t, 0x1000));
    assert_int_equal(atab_find(&t, 0x1000)->size, 16);
    assert_non_null(atab_find(&t, 0x3000));
    assert_int_equal(atab_find(&t, 0x3000)->stack, 5);

    /* The address can be inserted again and reuses the released entry. */
    uint32_t hw = t.ents_hw;
    e = atab_insert(&t, 0x2000, 100 * SEC + 3, 64, 6);
    assert_non_null(e);
    assert_int_equal(t.ents_hw, hw);
    assert_int_equal(atab_find(&t, 0x2000)->size, 64);
    assert_int_equal(t.live, 3);
    atab_free(&t);
}

static void test_size_is_clamped(void **state)
{
    (void)state;
    atab_t t;
    assert_int_equal(atab_init(&t, SEC, 0, NULL, NULL), 0);
    atab_ent_t *e = atab_insert(&t, 0x10, 1, UINT64_MAX, 1);
    assert_non_null(e);
    assert_int_equal(e->size, ATAB_SIZE_MAX);
    e = atab_insert(&t, 0x20, 1, ATAB_SIZE_MAX - 1, 1);
    assert_int_equal(e->size, ATAB_SIZE_MAX - 1);
    atab_free(&t);
}

static void count_each(void *ctx, atab_ent_t *e)
{
    (void)e;
    (*(size_t *)ctx)++;
}

static void test_growth(void **state)
{
    (void)state;
    enum { N = 20000 };
    atab_t t;
    assert_int_equal(atab_init(&t, 3600 * SEC, SEC, NULL, NULL), 0);
    size_t bytes0 = atab_bytes(&t);
    size_t prev = bytes0;
    /* 16-byte aligned addresses like malloc's: they share their low bits. */
    for (uint64_t i = 0; i < N; i++) {
        assert_non_null(atab_insert(&t, 0x7f0000000000ull + i * 16, SEC + i, i + 1, (uint32_t)i));
        size_t b = atab_bytes(&t);
        assert_true(b >= prev);
        prev = b;
        /* The load factor stays below 0.7 so probing terminates quickly. */
        assert_true((uint64_t)t.live * 10 <= (uint64_t)(t.slot_mask + 1) * 7);
    }
    assert_int_equal(t.live, N);
    assert_true(atab_bytes(&t) > bytes0);
    assert_true(atab_bytes(&t) >= (size_t)N * sizeof(atab_ent_t));
    for (uint64_t i = 0; i < N; i++) {
        atab_ent_t *e = atab_find(&t, 0x7f0000000000ull + i * 16);
        assert_non_null(e);
        assert_int_equal(e->size, i + 1);
        assert_int_equal(e->stack, i);
    }
    /* Remove every other one; the rest stay reachable. */
    for (uint64_t i = 0; i < N; i += 2)
        atab_remove(&t, atab_find(&t, 0x7f0000000000ull + i * 16));
    assert_int_equal(t.live, N / 2);
    for (uint64_t i = 0; i < N; i++) {
        atab_ent_t *e = atab_find(&t, 0x7f0000000000ull + i * 16);
        if (i % 2)
            assert_non_null(e);
        else
            assert_null(e);
    }
    size_t visited = 0;
    atab_each(&t, count_each, &visited);
    assert_int_equal(visited, N / 2);
    /* Reinsertion takes entries from the free list, not new storage. */
    uint32_t cap = t.ents_cap, hw = t.ents_hw;
    for (uint64_t i = 0; i < N; i += 2)
        assert_non_null(atab_insert(&t, 0x7f0000000000ull + i * 16, 2 * SEC, 8, 0));
    assert_int_equal(t.ents_cap, cap);
    assert_int_equal(t.ents_hw, hw);
    assert_int_equal(t.live, N);
    atab_free(&t);
}

/* The table's own hash: the crafted probe chain follows it. */
#define home_of(addr, mask) atab_hash((addr), (mask))

static uint64_t addr_homed_at(uint32_t slot, uint32_t mask, uint64_t after)
{
    for (uint64_t a = after + 16;; a += 16)
        if (home_of(a, mask) == slot)
            return a;
}

static uint32_t slot_index(atab_t *t, uint64_t addr)
{
    for (uint32_t i = 0; i <= t->slot_mask; i++)
        if (t->slots[i] != ATAB_NIL && t->ents[t->slots[i]].addr == addr)
            return i;
    return ATAB_NIL;
}

/* Backward-shift deletion in a cluster that wraps from the last slots to
 * slot 0: entries homed at 0 must stay where lookups start. */
static void test_remove_across_wrap(void **state)
{
    (void)state;
    atab_t t;
    assert_int_equal(atab_init(&t, SEC, 0, NULL, NULL), 0);
    uint32_t mask = t.slot_mask;
    uint64_t x = addr_homed_at(mask - 1, mask, 0);
    uint64_t y = addr_homed_at(mask, mask, 0);
    uint64_t y2 = addr_homed_at(mask, mask, y);
    uint64_t z = addr_homed_at(0, mask, 0);
    uint64_t z2 = addr_homed_at(1, mask, 0);
    uint64_t addrs[] = { x, y, y2, z, z2 };
    for (int k = 0; k < 5; k++)
        assert_non_null(atab_insert(&t, addrs[k], 1, (uint64_t)k + 1, 0));
    if (t.slot_mask != mask || slot_index(&t, x) != mask - 1 || slot_index(&t, y2) != 0 ||
        slot_index(&t, z) != 1)
        fail_msg("the crafted probe chain did not wrap as planned");
    atab_remove(&t, atab_find(&t, x));
    for (int k = 1; k < 5; k++) {
        atab_ent_t *e = atab_find(&t, addrs[k]);
        assert_non_null(e);
        assert_int_equal(e->size, (uint64_t)k + 1);
    }
    atab_remove(&t, atab_find(&t, y));
    for (int k = 2; k < 5; k++)
        assert_non_null(atab_find(&t, addrs[k]));
    atab_remove(&t, atab_find(&t, y2));
    assert_non_null(atab_find(&t, z));
    assert_non_null(atab_find(&t, z2));
    assert_int_equal(slot_index(&t, z), 0);
    assert_int_equal(t.live, 2);
    atab_free(&t);
}

/* ------------------------------------------------------------------ reference model */

#define MODEL_ADDRS 3000

typedef struct model_s {
    uint8_t live[MODEL_ADDRS];
    uint8_t expired[MODEL_ADDRS];  /* times on_expire was called for the live block */
    uint64_t ts[MODEL_ADDRS];
    uint64_t size[MODEL_ADDRS];
    uint32_t stack[MODEL_ADDRS];
    uint64_t now;
    uint64_t expire_ns;
    int bad;                       /* a callback violated the contract */
    uint64_t n_expired;            /* on_expire calls */
    uint64_t n_at_once;            /* ... of them during atab_insert */
} model_t;

/* Addresses cluster in a few pages so probe chains get long and wrap. */
static uint64_t model_addr(uint32_t i)
{
    return 0x55550000ull + (uint64_t)(i % 7) * 0x100000ull + (uint64_t)i * 16;
}

static uint32_t model_index(uint64_t addr)
{
    uint32_t i = (uint32_t)(((addr - 0x55550000ull) & 0xfffffull) / 16);
    return i < MODEL_ADDRS && model_addr(i) == addr ? i : UINT32_MAX;
}

static void model_expire(void *ctx, atab_ent_t *e)
{
    model_t *m = ctx;
    uint32_t i = model_index(e->addr);
    if (i == UINT32_MAX || !m->live[i] || m->ts[i] != e->ts) {
        m->bad = 1;
        return;
    }
    if (m->expired[i] || !(e->ts + m->expire_ns < m->now))
        m->bad = 1;
    m->expired[i]++;
    m->n_expired++;
}

static void model_check_all(atab_t *t, model_t *m)
{
    uint32_t live = 0;
    for (uint32_t i = 0; i < MODEL_ADDRS; i++) {
        atab_ent_t *e = atab_find(t, model_addr(i));
        if (!m->live[i]) {
            assert_null(e);
            continue;
        }
        live++;
        assert_non_null(e);
        assert_int_equal(e->ts, m->ts[i]);
        assert_int_equal(e->size, m->size[i]);
        assert_int_equal(e->stack, m->stack[i]);
        assert_int_equal(!!(e->flags & ATAB_F_EXPIRED), m->expired[i]);
    }
    assert_int_equal(t->live, live);
}

/* After atab_age(now): blocks past ts + expire + one width are expired,
 * blocks younger than expire are not. */
static void model_check_ages(atab_t *t, model_t *m)
{
    for (uint32_t i = 0; i < MODEL_ADDRS; i++) {
        if (!m->live[i])
            continue;
        if (m->ts[i] + m->expire_ns + t->width_ns <= m->now)
            assert_int_equal(m->expired[i], 1);
        if (m->ts[i] + m->expire_ns >= m->now)
            assert_int_equal(m->expired[i], 0);
    }
}

static void test_random_against_model(void **state)
{
    (void)state;
    model_t *m = calloc(1, sizeof *m);
    assert_non_null(m);
    rng_state = 0x9e3779b97f4a7c15ull;
    m->expire_ns = 640 * 1000; /* width 10 us */
    m->now = 1000 * m->expire_ns;
    atab_t t;
    assert_int_equal(atab_init(&t, m->expire_ns, m->now, model_expire, m), 0);

    for (int op = 0; op < 60000; op++) {
        uint32_t i = (uint32_t)(rng() % MODEL_ADDRS);
        uint64_t r = rng() % 100;
        if (r < 50) {
            if (m->live[i]) {
                atab_ent_t *e = atab_find(&t, model_addr(i));
                assert_non_null(e);
                atab_remove(&t, e);
                m->live[i] = 0;
                m->expired[i] = 0;
            } else {
                /* Mostly fresh blocks, some already older than the horizon. */
                uint64_t back = rng() % 8 == 0 ? rng() % (3 * m->expire_ns) : rng() % 1000;
                m->live[i] = 1;
                m->expired[i] = 0;
                m->ts[i] = m->now - back;
                m->size[i] = rng() % 100000;
                m->stack[i] = (uint32_t)(rng() % 50);
                uint64_t before = m->n_expired;
                atab_ent_t *e = atab_insert(&t, model_addr(i), m->ts[i], m->size[i], m->stack[i]);
                assert_non_null(e);
                if (m->n_expired != before) {
                    /* Only the inserted block can expire here. */
                    assert_int_equal(m->n_expired, before + 1);
                    assert_int_equal(m->expired[i], 1);
                    assert_true(e->flags & ATAB_F_EXPIRED);
                    m->n_at_once++;
                }
            }
        } else if (r < 85) {
            atab_ent_t *e = atab_find(&t, model_addr(i));
            if (m->live[i]) {
                assert_non_null(e);
                assert_int_equal(e->ts, m->ts[i]);
            } else {
                assert_null(e);
            }
        } else {
            /* Time moves: mostly small steps, sometimes far past the ring. */
            uint64_t step = rng() % 50 == 0 ? (rng() % 5 + 2) * 2 * m->expire_ns
                                            : rng() % (m->expire_ns / 16);
            m->now += step;
            atab_age(&t, m->now);
            model_check_ages(&t, m);
        }
        assert_false(m->bad);
        if (op % 5000 == 0)
            model_check_all(&t, m);
    }
    model_check_all(&t, m);
    /* The run exercised both paths into expiry. */
    assert_true(m->n_expired > 2000);
    assert_true(m->n_at_once > 100);
    /* Expiring everything still left calls on_expire for each live block once. */
    m->now += 10 * m->expire_ns;
    atab_age(&t, m->now);
    assert_false(m->bad);
    for (uint32_t i = 0; i < MODEL_ADDRS; i++)
        if (m->live[i])
            assert_int_equal(m->expired[i], 1);
    model_check_all(&t, m);
    atab_free(&t);
    free(m);
}

/* ------------------------------------------------------------------ aging */

static void test_age_exactly_once_within_a_width(void **state)
{
    (void)state;
    const uint64_t E = 64 * SEC; /* width 1 s */
    uint64_t t0 = 1000 * SEC;
    xlog_t *l = xlog_new(E, t0);
    atab_t t;
    assert_int_equal(atab_init(&t, E, t0, log_expire, l), 0);
    assert_int_equal(t.width_ns, SEC);
    uint64_t ts[] = { t0, t0 + SEC / 2, t0 + SEC - 1, t0 + SEC, t0 + 5 * SEC + 123 };
    for (size_t k = 0; k < 5; k++)
        assert_non_null(atab_insert(&t, 0x1000 + 16 * k, ts[k], 100 + k, (uint32_t)k));
    assert_int_equal(l->n, 0);

    /* Walk the clock in 1/8 s steps: each block expires once, after its
     * ts + expire and no later than one width beyond it. */
    for (uint64_t now = t0; now <= t0 + E + 10 * SEC; now += SEC / 8) {
        l->now = now;
        atab_age(&t, now);
        assert_false(l->bad_clock);
        for (size_t k = 0; k < 5; k++) {
            size_t c = xlog_count(l, 0x1000 + 16 * k);
            assert_true(c <= 1);
            if (now >= ts[k] + E + t.width_ns)
                assert_int_equal(c, 1);
            if (now <= ts[k] + E)
                assert_int_equal(c, 0);
            atab_ent_t *e = atab_find(&t, 0x1000 + 16 * k);
            assert_non_null(e);
            assert_int_equal(!!(e->flags & ATAB_F_EXPIRED), c);
        }
    }
    assert_int_equal(l->n, 5);
    /* Repeated aging at the same or a later time calls nothing again. */
    l->now += 1000 * E;
    assert_int_equal(atab_age(&t, l->now), 0);
    assert_int_equal(atab_age(&t, l->now), 0);
    assert_int_equal(l->n, 5);

    /* Expired entries stay findable and removable. */
    for (size_t k = 0; k < 5; k++) {
        atab_ent_t *e = atab_find(&t, 0x1000 + 16 * k);
        assert_non_null(e);
        atab_remove(&t, e);
    }
    assert_int_equal(t.live, 0);
    assert_int_equal(l->n, 5);
    atab_free(&t);
    free(l);
}

static void count_expired(void *ctx, atab_ent_t *e)
{
    if (e->flags & ATAB_F_EXPIRED)
        (*(size_t *)ctx)++;
}

static size_t expired_now(atab_t *t)
{
    size_t n = 0;
    atab_each(t, count_expired, &n);
    return n;
}

static void test_age_return_value(void **state)
{
    (void)state;
    const uint64_t E = 64 * SEC;
    atab_t t;
    assert_int_equal(atab_init(&t, E, 0, NULL, NULL), 0);
    /* Time before the first expire horizon: nothing to do. */
    assert_int_equal(atab_age(&t, E / 2), 0);
    for (uint64_t k = 0; k < 10; k++)
        assert_non_null(atab_insert(&t, 0x100 + k * 16, E + k * SEC + SEC / 3, 1, 0));
    assert_int_equal(atab_age(&t, E), 0);
    assert_int_equal(atab_age(&t, 2 * E), 0);
    /* At 2E + 5.5 s blocks E+0.33 .. E+4.33 s are past due by more than a
     * width; E+5.33 is due but may wait one width; E+6.33.. are not due. */
    size_t n = atab_age(&t, 2 * E + 5 * SEC + SEC / 2);
    assert_int_equal(n, expired_now(&t));
    assert_in_range(n, 5, 6);
    assert_int_equal(atab_age(&t, 2 * E + 5 * SEC + SEC / 2), 0);
    size_t m = atab_age(&t, 2 * E + 100 * SEC);
    assert_int_equal(n + m, 10);
    assert_int_equal(expired_now(&t), 10);
    atab_free(&t);
}

static void test_insert_older_than_horizon_expires_at_once(void **state)
{
    (void)state;
    const uint64_t E = 64 * SEC;
    uint64_t now = 1000 * SEC;
    xlog_t *l = xlog_new(E, now);
    atab_t t;
    assert_int_equal(atab_init(&t, E, now, log_expire, l), 0);
    atab_ent_t *e = atab_insert(&t, 0xa0, now - E - 2 * t.width_ns, 7, 1);
    assert_non_null(e);
    assert_true(e->flags & ATAB_F_EXPIRED);
    assert_int_equal(l->n, 1);
    assert_int_equal(l->addr[0], 0xa0);
    assert_false(l->bad_clock);

    /* Much older still. */
    e = atab_insert(&t, 0xb0, 1, 7, 1);
    assert_true(e->flags & ATAB_F_EXPIRED);
    assert_int_equal(l->n, 2);

    /* A recent block does not expire. */
    e = atab_insert(&t, 0xc0, now - SEC, 7, 1);
    assert_false(e->flags & ATAB_F_EXPIRED);
    assert_int_equal(l->n, 2);

    /* Later aging does not report the already expired blocks again. */
    l->now = now + 10 * E;
    atab_age(&t, l->now);
    assert_int_equal(l->n, 3);
    assert_int_equal(xlog_count(l, 0xa0), 1);
    assert_int_equal(xlog_count(l, 0xb0), 1);
    assert_int_equal(xlog_count(l, 0xc0), 1);

    /* Removing an immediately expired entry leaves the others intact. */
    atab_remove(&t, atab_find(&t, 0xa0));
    assert_null(atab_find(&t, 0xa0));
    assert_non_null(atab_find(&t, 0xb0));
    assert_non_null(atab_find(&t, 0xc0));
    assert_int_equal(t.live, 2);
    atab_free(&t);
    free(l);
}

static void test_age_big_time_jump(void **state)
{
    (void)state;
    const uint64_t E = 64 * SEC;
    uint64_t now = 10 * SEC;
    xlog_t *l = xlog_new(E, now);
    atab_t t;
    assert_int_equal(atab_init(&t, E, now, log_expire, l), 0);
    /* Blocks spread over more than the ring (2x expire). */
    for (uint64_t k = 0; k < 300; k++) {
        now += SEC;
        l->now = now;
        atab_age(&t, now);
        assert_non_null(atab_insert(&t, 0x10000 + k * 32, now, k, 0));
    }
    size_t before = l->n;
    assert_true(before > 0 && before < 300);
    /* Removing a few unexpired ones on the way. */
    atab_remove(&t, atab_find(&t, 0x10000 + 299 * 32));
    atab_remove(&t, atab_find(&t, 0x10000 + 250 * 32));
    /* Jump far beyond the ring: everything left expires, once. */
    l->now = now + 1000 * E;
    size_t n = atab_age(&t, l->now);
    assert_int_equal(before + n, 298);
    assert_int_equal(l->n, 298);
    assert_false(l->bad_clock);
    for (uint64_t k = 0; k < 300; k++) {
        atab_ent_t *e = atab_find(&t, 0x10000 + k * 32);
        if (k == 299 || k == 250) {
            assert_null(e);
            continue;
        }
        assert_non_null(e);
        assert_true(e->flags & ATAB_F_EXPIRED);
        assert_int_equal(xlog_count(l, 0x10000 + k * 32), 1);
    }
    /* New blocks after the jump age normally. */
    uint64_t t1 = l->now;
    assert_non_null(atab_insert(&t, 0x900000, t1, 1, 0));
    l->now = t1 + E / 2;
    assert_int_equal(atab_age(&t, l->now), 0);
    l->now = t1 + E + t.width_ns;
    assert_int_equal(atab_age(&t, l->now), 1);
    assert_false(l->bad_clock);
    atab_free(&t);
    free(l);
}

/* An insert whose time lies beyond the ring (no aging pass for a long
 * while) must not put its block into a bucket that is processed early. */
static void test_insert_after_long_idle(void **state)
{
    (void)state;
    const uint64_t E = 64 * SEC;
    uint64_t now = 5 * E;
    xlog_t *l = xlog_new(E, now);
    atab_t t;
    assert_int_equal(atab_init(&t, E, now, log_expire, l), 0);
    assert_non_null(atab_insert(&t, 0x10, now, 1, 0));
    /* No atab_age for 10 expire periods; then a new block arrives. */
    now += 10 * E;
    l->now = now;
    assert_non_null(atab_insert(&t, 0x20, now, 1, 0));
    /* The old block may expire on the way (it is due); the new one is not. */
    assert_int_equal(xlog_count(l, 0x20), 0);
    assert_false(l->bad_clock);
    for (uint64_t s = 0; s <= 64; s++) {
        l->now = now + s * SEC;
        atab_age(&t, l->now);
        assert_false(l->bad_clock);
    }
    assert_int_equal(xlog_count(l, 0x10), 1);
    assert_int_equal(xlog_count(l, 0x20), 0);
    l->now = now + E + t.width_ns;
    atab_age(&t, l->now);
    assert_int_equal(xlog_count(l, 0x20), 1);
    atab_free(&t);
    free(l);
}

/* ------------------------------------------------------------------ each */

typedef struct seen_s {
    uint8_t hit[1000];
    int dup;
    int stray;
} seen_t;

static void mark_seen(void *ctx, atab_ent_t *e)
{
    seen_t *s = ctx;
    uint64_t k = (e->addr - 0x4000) / 64;
    if (e->addr < 0x4000 || k >= 1000 || (e->addr - 0x4000) % 64) {
        s->stray = 1;
        return;
    }
    if (s->hit[k])
        s->dup = 1;
    s->hit[k] = 1;
}

static void test_each_visits_exactly_the_live(void **state)
{
    (void)state;
    const uint64_t E = 64 * SEC;
    atab_t t;
    assert_int_equal(atab_init(&t, E, 0, NULL, NULL), 0);
    for (uint64_t k = 0; k < 1000; k++)
        assert_non_null(atab_insert(&t, 0x4000 + k * 64, E + k * SEC / 10, 1, 0));
    for (uint64_t k = 0; k < 1000; k += 3)
        atab_remove(&t, atab_find(&t, 0x4000 + k * 64));
    /* Expired blocks are still live. */
    atab_age(&t, 2 * E + 30 * SEC);
    seen_t s;
    memset(&s, 0, sizeof s);
    atab_each(&t, mark_seen, &s);
    assert_false(s.dup);
    assert_false(s.stray);
    for (uint64_t k = 0; k < 1000; k++)
        assert_int_equal(s.hit[k], k % 3 != 0);
    atab_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_on_empty_table),
        cmocka_unit_test(test_insert_find_remove),
        cmocka_unit_test(test_size_is_clamped),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_remove_across_wrap),
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_age_exactly_once_within_a_width),
        cmocka_unit_test(test_age_return_value),
        cmocka_unit_test(test_insert_older_than_horizon_expires_at_once),
        cmocka_unit_test(test_age_big_time_jump),
        cmocka_unit_test(test_insert_after_long_idle),
        cmocka_unit_test(test_each_visits_exactly_the_live),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
