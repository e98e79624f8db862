/* Unit tests of the per-process model: event semantics, stack counters, freeze, modules, pruning. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/collectord/client.h"

#define MS 1000000ull
#define SEC 1000000000ull
#define E SEC            /* expire time used by these tests */
#define T0 (100 * SEC)   /* start of the event clock */
#define FAR (T0 + 3600 * SEC)

/* One client in its own list; freed by the teardown. */
typedef struct fix_s {
    clients_t cs;
    client_t *c;
} fix_t;

static void destroy_all(clients_t *cs)
{
    while (cs->head) {
        client_t *c = cs->head;
        cs->head = c->next;
        cs->count--;
        client_destroy(c);
    }
}

static int setup(void **state)
{
    fix_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->c = client_new(&f->cs, 4242, E, T0);
    if (!f->c) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fix_t *f = *state;
    destroy_all(&f->cs);
    free(f);
    return 0;
}

static cstack_t *stk(client_t *c, uint32_t i)
{
    assert_true(i < c->stacks_cap);
    assert_non_null(cstack_at(c, i));
    return cstack_at(c, i);
}

static void alloc_ok(client_t *c, uint64_t addr, uint64_t ts, uint64_t size, uint32_t stack)
{
    assert_int_equal(client_alloc(c, addr, ts, size, stack), 0);
}

static void free_ok(client_t *c, uint64_t addr, uint64_t ts)
{
    assert_int_equal(client_free(c, addr, ts), 0);
}

/* ------------------------------------------------------------------ creation */

static void test_new_and_find(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    assert_int_equal(f->cs.count, 1);
    assert_ptr_equal(f->cs.head, c);
    assert_int_equal(c->pid, 4242);
    assert_int_equal(c->serial, 1);
    assert_int_equal(c->state, CLIENT_CONNECTED);
    assert_int_equal(c->atab_ok, 1);
    assert_int_equal(c->first_mono, T0);

    client_t *d = client_new(&f->cs, 4243, E, T0);
    assert_non_null(d);
    assert_int_equal(d->serial, 2);
    assert_ptr_equal(f->cs.head, d); /* newest first */
    assert_int_equal(f->cs.count, 2);

    char *argv[] = { "prog", NULL, "--x" };
    assert_int_equal(client_set_identity(c, 7, 1, "/bin/prog", argv, 3, 0xabc, 0x123, 55, 16,
                                         "all"),
                     0);
    /* A second Hello replaces the identity (old strings freed). */
    assert_int_equal(client_set_identity(c, 7, 1, "/bin/prog2", argv, 1, 0xabc, 0x123, 55, 16,
                                         NULL),
                     0);
    assert_string_equal(c->exe, "/bin/prog2");
    assert_string_equal(c->sample, "");
    assert_int_equal(c->argc, 1);
    assert_string_equal(c->argv[0], "prog");
    assert_int_equal(client_set_identity(c, 7, 1, "/bin/prog", argv, 3, 0xabc, 0x123, 55, 16,
                                         "all"),
                     0);
    assert_int_equal(c->argc, 3);
    assert_string_equal(c->argv[1], "");
    assert_string_equal(c->argv[2], "--x");
    assert_int_equal(c->instance, 0xabc);
    assert_int_equal(c->parent_instance, 0x123);

    assert_ptr_equal(client_find(&f->cs, 4242, 0xabc), c);
    assert_null(client_find(&f->cs, 4242, 0xabd));
    assert_null(client_find(&f->cs, 1, 0xabc));
    assert_ptr_equal(client_find(&f->cs, 4243, 0), d);
}

static void test_identity_argc_capped(void **state)
{
    fix_t *f = *state;
    char *argv[300];
    for (int i = 0; i < 300; i++)
        argv[i] = "a";
    assert_int_equal(client_set_identity(f->c, 1, 1, "x", argv, 300, 1, 0, 0, 0, "all"), 0);
    assert_int_equal(f->c->argc, 256);
}

/* Issue 17.4: strings a client sends are cut (at a UTF-8 boundary). */
static void test_strings_cut(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    size_t big = 4u << 20;
    char *s = malloc(big + 1);
    assert_non_null(s);
    memset(s, 'a', big);
    s[big] = 0;
    char *argv[3] = { s, s, "tail" };
    assert_int_equal(client_set_identity(c, 1, 1, s, argv, 3, 1, 0, 0, 0, s), 0);
    assert_int_equal(strlen(c->exe), CLIENT_STR_MAX);
    assert_int_equal(strlen(c->sample), CLIENT_SAMPLE_MAX);
    size_t total = 0;
    for (uint32_t i = 0; i < c->argc; i++)
        total += strlen(c->argv[i]) + 1;
    assert_true(total <= CLIENT_ARGV_MAX);
    assert_int_equal(c->argc, 1);
    /* "a" then two-byte characters: the cut at 4096 falls inside one. */
    s[0] = 'a';
    for (size_t i = 1; i + 1 < big; i += 2) {
        s[i] = (char)0xC3;
        s[i + 1] = (char)0xA9;
    }
    uint64_t r[2] = { 0x1000, 0x2000 };
    assert_int_equal(client_put_module(c, 0, s, 0, r, 2, NULL, 0, 1, 0), 0);
    assert_int_equal(strlen(c->mods[0].path), CLIENT_STR_MAX - 1);
    client_set_status(c, s);
    assert_true(strlen(c->python_status) <= CLIENT_STR_MAX);
    free(s);
}

/* Issue 17.4: one process's client records (instance tokens) share
 * --max-live, the stack frames and the string budget. */
static void test_process_shares_limits(void **state)
{
    clients_t *cs = *state;
    cs->max_live = 10;
    cproc_t *p = cproc_get(cs, 77, 12345);
    assert_non_null(p);
    assert_ptr_equal(cproc_get(cs, 77, 12345), p);
    cproc_ref(p); /* as a connection does */
    client_t *a = client_new(cs, 77, E, T0), *b = client_new(cs, 77, E, T0);
    assert_non_null(a);
    assert_non_null(b);
    client_set_proc(a, p);
    client_set_proc(b, p);
    uint64_t pcs[2] = { 0x10, 0x20 };
    int err = 0;
    assert_non_null(client_define_stack(a, 1, 1, 0, pcs, 2, 0, &err));
    assert_non_null(client_define_stack(b, 1, 2, 0, pcs, 2, 0, &err));
    for (uint64_t i = 0; i < 8; i++) {
        assert_int_equal(client_alloc(a, 0x1000 + i * 16, T0 + i, 8, 1), 0);
        assert_int_equal(client_alloc(b, 0x9000 + i * 16, T0 + i, 8, 1), 0);
    }
    assert_int_equal(a->atab.live + b->atab.live, 10);
    assert_int_equal(a->table_full + b->table_full, 6);
    assert_int_equal(p->live, 10);
    assert_int_equal(p->pcs, 4);
    /* Module paths: 4 MiB for the whole process, then refused. */
    char path[CLIENT_STR_MAX + 1];
    memset(path, 'm', CLIENT_STR_MAX);
    path[CLIENT_STR_MAX] = 0;
    uint64_t r[2] = { 0x1000, 0x2000 };
    uint32_t ok = 0;
    int rc = 0;
    for (uint32_t id = 0; id < 2000 && rc == 0; id++) {
        rc = client_put_module(id & 1 ? a : b, id, path, 0, r, 2, NULL, 0, 1, 0);
        ok += rc == 0;
    }
    assert_int_equal(rc, -E2BIG);
    assert_true(ok < CPROC_STR_MAX / CLIENT_STR_MAX);
    assert_true(p->str <= CPROC_STR_MAX);
    /* Frees are seen by the process's count once synced (aging tick). */
    assert_int_equal(client_free(a, 0x1000, T0 + 100), 0);
    client_age(a, T0 + 200);
    assert_int_equal(p->live, 9);
    /* Late-event records (frees of blocks not seen yet) too. */
    for (uint64_t i = 0; i < CLIENT_REO_MAX; i++)
        assert_int_equal(client_free(a, 0x100000000ull + i * 16, T0 + 300), 0);
    assert_int_equal(p->reo, CLIENT_REO_MAX);
    uint64_t unknown = b->unknown_frees;
    assert_int_equal(client_free(b, 0x900000000ull, T0 + 300), 0);
    assert_int_equal(b->unknown_frees, unknown + 1); /* counted, not remembered */
    assert_int_equal(b->reo.used, 0);
    /* The record goes when its last connection and client do. */
    destroy_all(cs);
    assert_ptr_equal(cs->procs, p);
    assert_int_equal(p->live, 0);
    assert_int_equal(p->str, 0);
    assert_int_equal(p->reo, 0);
    assert_int_equal(p->stacks, 0);
    cproc_unref(p);
    assert_null(cs->procs);
}

/* Python tracebacks (thousands while a program imports) stop short of the
 * process's string budget: the module paths that follow still fit, or the
 * agent's connection would be closed for them (python3 -c 'import numba'
 * lost its connection in a loop). */
static void test_tracebacks_leave_room_for_modules(void **state)
{
    clients_t *cs = *state;
    cproc_t *p = cproc_get(cs, 78, 12345);
    assert_non_null(p);
    cproc_ref(p);
    client_t *a = client_new(cs, 78, E, T0);
    assert_non_null(a);
    client_set_proc(a, p);
    uint64_t pcs[2] = { 0x10, 0x20 };
    int err = 0;
    assert_non_null(client_define_stack(a, 1, 1, 0, pcs, 2, 0, &err));
    /* Python names new to the intern table, 4 KiB at a time (ingest). */
    uint64_t refused = a->str_refused;
    while (client_pystr_room(a))
        client_charge_pystr(a, 4096);
    assert_int_equal(a->str_refused, refused + 1);
    assert_true(p->str <= CPROC_STR_MAX - CPROC_STR_RESERVE + 4096);
    /* A traceback charges its frames only (the names are shared). */
    pyframe_t fr[8];
    for (int i = 0; i < 8; i++)
        fr[i] = (pyframe_t){ .file = "f.py", .function = "g", .line = (uint32_t)i + 1 };
    uint64_t before = p->str;
    client_note(a, 0, T0, 1, fr, 8, 0, NULL, 0);
    assert_int_equal(p->str, before); /* no room: refused */
    char path[CLIENT_STR_MAX + 1];
    memset(path, 'm', CLIENT_STR_MAX);
    path[CLIENT_STR_MAX] = 0;
    uint64_t r[2] = { 0x1000, 0x2000 };
    for (uint32_t id = 0; id < 200; id++)
        assert_int_equal(client_put_module(a, id, path, 0, r, 2, NULL, 0, 1, 0), 0);
    destroy_all(cs);
    cproc_unref(p);
}

/* ------------------------------------------------------------------ alloc/free */

static void test_alloc_free_counts(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, 0x1000, T0 + 1 * MS, 10, 1);
    alloc_ok(c, 0x2000, T0 + 2 * MS, 20, 1);
    alloc_ok(c, 0x3000, T0 + 3 * MS, 30, 1);
    alloc_ok(c, 0x4000, T0 + 4 * MS, 40, 2);
    free_ok(c, 0x2000, T0 + 7 * MS);   /* lifetime 5 ms */
    free_ok(c, 0x1000, T0 + 101 * MS); /* lifetime 100 ms */
    free_ok(c, 0x4000, T0 + 4 * MS);   /* same time: lifetime 0 */

    cstack_t *s1 = stk(c, 1), *s2 = stk(c, 2);
    assert_int_equal(c->nstacks, 2);
    assert_int_equal(s1->alloc_n, 3);
    assert_int_equal(s1->alloc_b, 60);
    assert_int_equal(s1->free_n, 2);
    assert_int_equal(s1->free_b, 30);
    assert_int_equal(s1->lt_min, 5 * MS);
    assert_int_equal(s1->lt_max, 100 * MS);
    assert_int_equal(s1->lt_sum, 105 * MS);
    assert_int_equal(cstack_lt_avg_ms(s1), 52);
    assert_int_equal(s2->alloc_n, 1);
    assert_int_equal(s2->free_n, 1);
    assert_int_equal(s2->free_b, 40);
    assert_int_equal(s2->lt_min, 0);
    assert_int_equal(s2->lt_max, 0);

    assert_int_equal(c->events, 7);
    assert_int_equal(c->allocs, 4);
    assert_int_equal(c->frees, 3);
    assert_int_equal(c->live_n, 1);
    assert_int_equal(c->live_b, 30);
    assert_int_equal(c->unknown_frees, 0);
    assert_int_equal(c->implied_frees, 0);
    assert_int_equal(c->max_ts, T0 + 101 * MS);
    assert_non_null(atab_find(&c->atab, 0x3000));
    assert_null(atab_find(&c->atab, 0x1000));

    client_age(c, FAR);
    assert_int_equal(c->unknown_frees, 0);
    assert_int_equal(s1->exp_n, 1);
    assert_int_equal(s1->exp_b, 30);
}

/* Sampled client: each block stands for 1/p blocks and size/p bytes, the
 * count rounded at random so that sums are unbiased; frees take off exactly
 * what the allocation added; unsampled (armed-only) blocks weigh 0. */
static void test_sampled_weights(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    c->sample_bytes = 65536;
    uint64_t wn, wb;
    client_weight(c, 1 << 30, 0, &wn, &wb); /* p = 1 */
    assert_int_equal(wn, 1);
    assert_int_equal(wb, 1 << 30);
    client_weight(c, 64, 0, &wn, &wb); /* 1/p = 1024.5 */
    assert_int_equal(wn, 1024);
    assert_int_equal(wb, 65568);
    client_weight(c, 64, ATAB_F_WUP, &wn, &wb);
    assert_int_equal(wn, 1025);
    client_weight(c, 64, ATAB_F_UNSAMPLED, &wn, &wb);
    assert_int_equal(wn, 0);
    assert_int_equal(wb, 0);

    /* 4000 blocks of 64 bytes: counts unbiased (about half round up). */
    for (uint64_t i = 0; i < 4000; i++)
        alloc_ok(c, 0x100000 + i * 64, T0 + i, 64, 1);
    cstack_t *s = stk(c, 1);
    assert_int_equal(s->alloc_b, 4000 * 65568);
    double mean = (double)s->alloc_n / 4000;
    assert_true(mean > 1024.45 && mean < 1024.55);
    assert_int_equal(c->live_n, s->alloc_n);
    assert_int_equal(c->live_b, s->alloc_b);
    for (uint64_t i = 0; i < 4000; i++)
        free_ok(c, 0x100000 + i * 64, T0 + 10 * MS);
    assert_int_equal(s->free_n, s->alloc_n);
    assert_int_equal(s->free_b, s->alloc_b);
    assert_int_equal(c->live_n, 0);
    assert_int_equal(c->live_b, 0);
    assert_int_equal(cstack_lt_avg_ms(s), 9); /* over the 4000 recorded lifetimes */

    /* Unsampled: tracked (found, freed) but counted nowhere. */
    assert_int_equal(client_alloc_unsampled(c, 0x900000, T0 + 20 * MS, 100, 2), 0);
    assert_non_null(atab_find(&c->atab, 0x900000));
    assert_int_equal(stk(c, 2)->alloc_n, 0);
    client_age(c, FAR);
    assert_int_equal(stk(c, 2)->exp_n, 0);
    assert_int_equal(c->may_n, 0);
    free_ok(c, 0x900000, FAR);
    assert_int_equal(stk(c, 2)->free_n, 0);
    assert_null(atab_find(&c->atab, 0x900000));
}

/* A sampled block that arrives already past the expire time expires inside
 * the insert: with its own weight (an unsampled one with none), so that its
 * free takes off exactly what its expiry added. */
static void test_sampled_late_block_weights(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    c->sample_bytes = 65536;
    client_age(c, T0 + 10 * E);
    assert_int_equal(client_alloc_unsampled(c, 0x5000, T0, 100, 2), 0);
    assert_int_equal(stk(c, 2)->exp_n, 0);
    assert_int_equal(c->may_n, 0);
    for (uint64_t i = 0; i < 200; i++)
        alloc_ok(c, 0x10000 + i * 64, T0 + i, 64, 3);
    cstack_t *s = stk(c, 3);
    assert_int_equal(s->exp_n, s->alloc_n); /* every one expired at once, same weights */
    assert_int_equal(c->may_n, s->alloc_n);
    free_ok(c, 0x5000, T0 + 10 * E);
    for (uint64_t i = 0; i < 200; i++)
        free_ok(c, 0x10000 + i * 64, T0 + 10 * E);
    assert_int_equal(s->fexp_n, s->exp_n);
    assert_int_equal(s->fexp_b, s->exp_b);
    assert_int_equal(c->may_n, 0);
    assert_int_equal(stk(c, 2)->fexp_n, 0);
}

/* Folded pairs count as that many allocations and frees, lifetimes merged;
 * impossible figures are refused and change nothing. */
static void test_fold(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, 0x1000, T0, 10, 3);
    free_ok(c, 0x1000, T0 + 4 * MS);
    assert_int_equal(client_fold(c, 3, 5, 500, 10 * MS, 1 * MS, 3 * MS, T0), 0);
    cstack_t *s = stk(c, 3);
    assert_int_equal(s->alloc_n, 6);
    assert_int_equal(s->alloc_b, 510);
    assert_int_equal(s->free_n, 6);
    assert_int_equal(s->free_b, 510);
    assert_int_equal(s->lt_min, 1 * MS);
    assert_int_equal(s->lt_max, 4 * MS);
    assert_int_equal(s->lt_n, 6);
    assert_int_equal(cstack_lt_avg_ms(s), 2); /* 14 ms / 6 */
    assert_int_equal(c->events, 12);
    assert_int_equal(c->allocs, 6);
    assert_int_equal(c->frees, 6);
    assert_int_equal(c->live_n, 0);
    assert_int_equal(client_fold(c, 3, 0, 0, 0, 0, 0, T0), -ERANGE);
    assert_int_equal(client_fold(c, 3, 2, 10, 5, 3, 2, T0), -ERANGE);     /* min > max */
    assert_int_equal(client_fold(c, 3, 2, 10, 100, 1, 3, T0), -ERANGE);   /* avg > max */
    assert_int_equal(client_fold(c, 3, 2, UINT64_MAX, 4, 1, 3, T0), -ERANGE);
    assert_int_equal(client_fold(c, 3, 1, 10, 2, 1, 3, T0), -ERANGE);     /* one pair, two lifetimes */
    assert_int_equal(client_fold(c, 3, 1, 10, E, E, E, T0), -ERANGE);     /* lived to expire: not foldable */
    assert_int_equal(client_fold(c, CLIENT_MAX_STACKS, 1, 10, 2, 2, 2, T0), -EINVAL);
    assert_int_equal(s->alloc_n, 6);
    assert_int_equal(c->events, 12);
    c->sample_bytes = 4096;
    assert_int_equal(client_fold(c, 3, 1, 10, 2, 2, 2, T0), -ERANGE);
}

static void test_bad_stack_index(void **state)
{
    fix_t *f = *state;
    assert_int_equal(client_alloc(f->c, 0x10, T0, 1, CLIENT_MAX_STACKS), -EINVAL);
    assert_int_equal(client_alloc(f->c, 0x10, T0, 1, UINT32_MAX), -EINVAL);
    assert_int_equal(f->c->live_n, 0);
    assert_null(atab_find(&f->c->atab, 0x10));
}

/* ------------------------------------------------------------------ expiry */

static void test_expired_once_then_freed(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    uint64_t w = c->atab.width_ns;
    alloc_ok(c, 0xa0, T0, 100, 3);
    alloc_ok(c, 0xb0, T0, 7, 3);
    cstack_t *s = stk(c, 3);

    client_age(c, T0 + E / 2);
    assert_int_equal(s->exp_n, 0);
    assert_int_equal(c->nsymq, 0);
    client_age(c, T0 + E + w);
    assert_int_equal(s->exp_n, 2);
    assert_int_equal(s->exp_b, 107);
    /* The stack is queued for symbolization, once. */
    assert_int_equal(c->nsymq, 1);
    assert_int_equal(c->symq[0], 3);
    assert_int_equal(s->sym_queued, 1);

    client_age(c, T0 + 3 * E);
    client_age(c, T0 + 10 * E);
    assert_int_equal(s->exp_n, 2);
    assert_int_equal(c->nsymq, 1);

    free_ok(c, 0xa0, T0 + 20 * E);
    assert_int_equal(s->free_n, 1);
    assert_int_equal(s->fexp_n, 1);
    assert_int_equal(s->fexp_b, 100);
    assert_int_equal(s->lt_max, 20 * E);
    /* may_leak = exp - fexp: the block still live. */
    assert_int_equal(s->exp_n - s->fexp_n, 1);
    assert_int_equal(s->exp_b - s->fexp_b, 7);

    /* A block freed before it expires never counts as expired. */
    alloc_ok(c, 0xc0, T0 + 21 * E, 5, 3);
    free_ok(c, 0xc0, T0 + 21 * E + E / 2);
    client_age(c, T0 + 30 * E);
    assert_int_equal(s->exp_n, 2);
    assert_int_equal(s->fexp_n, 1);
}

/* An ALLOC whose time is already past the expire age (late delivery) is
 * counted expired at once, after the table aged past it. */
static void test_alloc_older_than_expire(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    client_age(c, T0 + 10 * E);
    alloc_ok(c, 0xd0, T0 + 2 * E, 9, 4);
    assert_int_equal(stk(c, 4)->exp_n, 1);
    client_age(c, T0 + 20 * E);
    assert_int_equal(stk(c, 4)->exp_n, 1);
    free_ok(c, 0xd0, T0 + 21 * E);
    assert_int_equal(stk(c, 4)->fexp_n, 1);
}

/* ------------------------------------------------------------------ reordering */

static void test_free_before_alloc(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    free_ok(c, 0x5000, T0 + 200 * MS);
    assert_int_equal(c->unknown_frees, 0);
    alloc_ok(c, 0x5000, T0 + 100 * MS, 64, 1);
    cstack_t *s = stk(c, 1);
    assert_int_equal(s->alloc_n, 1);
    assert_int_equal(s->free_n, 1);
    assert_int_equal(s->free_b, 64);
    assert_int_equal(s->lt_min, 100 * MS);
    assert_int_equal(c->allocs, 1);
    assert_int_equal(c->frees, 1);
    assert_int_equal(c->live_n, 0);
    assert_int_equal(c->live_b, 0);
    assert_null(atab_find(&c->atab, 0x5000));
    assert_int_equal(c->reo.used, 0);
    client_age(c, FAR);
    assert_int_equal(c->unknown_frees, 0);
    assert_int_equal(s->exp_n, 0);

    /* The address is free for a new block afterwards. */
    alloc_ok(c, 0x5000, FAR + 1, 8, 1);
    free_ok(c, 0x5000, FAR + 2);
    assert_int_equal(s->free_n, 2);
    assert_int_equal(c->live_n, 0);
}

static void test_reuse_implies_free_and_absorbs_late_free(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, 0x6000, T0 + 100 * MS, 10, 1);
    alloc_ok(c, 0x6000, T0 + 300 * MS, 20, 2); /* reuse: the free of the first is late */
    cstack_t *s1 = stk(c, 1), *s2 = stk(c, 2);
    assert_int_equal(c->implied_frees, 1);
    assert_int_equal(s1->free_n, 1);
    assert_int_equal(s1->free_b, 10);
    assert_int_equal(s1->lt_min, 200 * MS);
    assert_int_equal(s2->alloc_n, 1);
    assert_int_equal(s2->free_n, 0);
    assert_int_equal(c->live_n, 1);
    assert_int_equal(c->live_b, 20);
    atab_ent_t *e = atab_find(&c->atab, 0x6000);
    assert_non_null(e);
    assert_int_equal(e->ts, T0 + 300 * MS);
    assert_int_equal(e->stack, 2);

    /* The late FREE of the first block (between the two allocations). */
    free_ok(c, 0x6000, T0 + 200 * MS);
    assert_int_equal(c->unknown_frees, 0);
    assert_int_equal(s1->free_n, 1);
    assert_int_equal(s2->free_n, 0);
    assert_int_equal(c->frees, 1);
    assert_non_null(atab_find(&c->atab, 0x6000));
    client_age(c, FAR);
    assert_int_equal(c->unknown_frees, 0);

    free_ok(c, 0x6000, FAR + 1);
    assert_int_equal(s2->free_n, 1);
    assert_int_equal(c->live_n, 0);
    assert_int_equal(c->unknown_frees, 0);
}

/* An ALLOC older than the live block at its address arrives late: that
 * block died before the live one was made. */
static void test_late_alloc_older_than_live(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, 0x7000, T0 + 300 * MS, 20, 2);
    alloc_ok(c, 0x7000, T0 + 100 * MS, 10, 1);
    cstack_t *s1 = stk(c, 1), *s2 = stk(c, 2);
    assert_int_equal(c->implied_frees, 1);
    assert_int_equal(s1->alloc_n, 1);
    assert_int_equal(s1->free_n, 1);
    assert_int_equal(s1->lt_max, 200 * MS);
    assert_int_equal(c->live_n, 1);
    assert_int_equal(c->live_b, 20);
    assert_int_equal(atab_find(&c->atab, 0x7000)->stack, 2);
    free_ok(c, 0x7000, T0 + 150 * MS);
    assert_int_equal(c->unknown_frees, 0);
    assert_int_equal(s2->free_n, 0);
    client_age(c, FAR);
    assert_int_equal(c->unknown_frees, 0);
    assert_non_null(atab_find(&c->atab, 0x7000));
}

static void test_unmatched_free_becomes_unknown(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    free_ok(c, 0x8000, T0);
    assert_int_equal(c->unknown_frees, 0);
    client_age(c, T0 + 100 * MS); /* still inside the reorder window */
    assert_int_equal(c->unknown_frees, 0);
    client_age(c, FAR);
    assert_int_equal(c->unknown_frees, 1);
    assert_int_equal(c->reo.used, 0);
    client_age(c, FAR + SEC);
    assert_int_equal(c->unknown_frees, 1);

    /* Two unmatched frees of one address: both end up unknown (whether the
     * older counts at once or when the window passes is not specified). */
    free_ok(c, 0x9000, FAR);
    free_ok(c, 0x9000, FAR + MS);
    assert_in_range(c->unknown_frees, 1, 2);
    client_age(c, FAR + 3600 * SEC);
    assert_int_equal(c->unknown_frees, 3);

    /* A FREE older than the live block at its address is not that block's. */
    alloc_ok(c, 0xa000, FAR + 10 * SEC, 4, 1);
    free_ok(c, 0xa000, FAR + 9 * SEC);
    assert_non_null(atab_find(&c->atab, 0xa000));
    assert_int_equal(stk(c, 1)->free_n, 0);
    client_age(c, FAR + 7200 * SEC);
    assert_int_equal(c->unknown_frees, 4);
    assert_non_null(atab_find(&c->atab, 0xa000));
}

/* Events far ahead of a pending free resolve it even without idle time. */
static void test_event_clock_resolves_records(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    free_ok(c, 0xb000, T0);
    alloc_ok(c, 0xc000, T0 + 3 * CLIENT_REORDER_NS, 1, 1);
    client_age(c, T0); /* collector clock lags: the event clock decides */
    assert_int_equal(c->unknown_frees, 1);
}

/* The agent merges rings per batch, but a ring visited after BATCH_MAX
 * filled (or collected before a thread pushed) goes out in the next batch.
 * One address, real history A1@1 F1@2 A2@3 F2@4 (the allocator hands the
 * freed block straight back, as glibc's tcache does within one thread),
 * delivered in orders two threads produce. */
static void check_one_address_history(client_t *c, uint64_t addr)
{
    client_age(c, FAR);
    uint64_t an = 0, fn = 0;
    for (uint32_t i = 0; i < c->stacks_cap; i++)
        if (cstack_at(c, i)) {
            an += cstack_at(c, i)->alloc_n;
            fn += cstack_at(c, i)->free_n;
        }
    assert_null(atab_find(&c->atab, addr)); /* else reported as a leak */
    assert_int_equal(c->live_n, 0);
    assert_int_equal(c->unknown_frees, 0);
    assert_int_equal(an, 2);
    assert_int_equal(fn, 2);
}

/* The agent emits events in global time order (flush.c, watermark), so the
 * collector never sees the two histories below in a broken order from a
 * working agent; the collector's reorder records are a fallback. These tests
 * pin down the fallback contract for orders it cannot untangle: totals stay
 * consistent (every allocation counted once, the table agrees with the
 * counters) and the broken order is counted in late_events. */
static void check_consistent_fallback(client_t *c)
{
    client_age(c, FAR);
    uint64_t an = 0, fn = 0;
    for (uint32_t i = 0; i < c->stacks_cap; i++)
        if (cstack_at(c, i)) {
            an += cstack_at(c, i)->alloc_n;
            fn += cstack_at(c, i)->free_n;
        }
    assert_int_equal(an, 2);
    assert_int_equal(an - fn, c->atab.live);
    assert_int_equal(c->live_n, c->atab.live);
    assert_true(c->late_events >= 1);
    assert_true(fn + c->unknown_frees >= 1);
}

/* Ping-pong: T1 allocates (A1) and later frees what T2 handed back (F2);
 * T2 frees A1 (F1) and allocates the reply (A2). T1's events first. */
static void test_reorder_pingpong(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, 0xe000, T0 + 1 * MS, 32, 1); /* T1 */
    free_ok(c, 0xe000, T0 + 4 * MS);         /* T1 */
    free_ok(c, 0xe000, T0 + 2 * MS);         /* T2 */
    alloc_ok(c, 0xe000, T0 + 3 * MS, 32, 2); /* T2 */
    check_consistent_fallback(c);
}

/* Producer/consumer: T1 allocates A1 and A2, T2 frees both; T2's first. */
static void test_reorder_producer_consumer(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    free_ok(c, 0xe000, T0 + 2 * MS);         /* T2 */
    free_ok(c, 0xe000, T0 + 4 * MS);         /* T2 */
    alloc_ok(c, 0xe000, T0 + 1 * MS, 32, 1); /* T1 */
    alloc_ok(c, 0xe000, T0 + 3 * MS, 32, 1); /* T1 */
    check_consistent_fallback(c);
}

/* The same four events in time order, as the agent sends them: exact. */
static void test_in_order_history_exact(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, 0xe000, T0 + 1 * MS, 32, 1);
    free_ok(c, 0xe000, T0 + 2 * MS);
    alloc_ok(c, 0xe000, T0 + 3 * MS, 32, 2);
    free_ok(c, 0xe000, T0 + 4 * MS);
    check_one_address_history(c, 0xe000);
    assert_int_equal(c->late_events, 0);
}

/* The orders the model already handles, for contrast. */
static void test_reorder_handled_orders(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    /* T2's ring first: F1 A2, then T1's: A1 F2. */
    free_ok(c, 0xe000, T0 + 2 * MS);
    alloc_ok(c, 0xe000, T0 + 3 * MS, 32, 2);
    alloc_ok(c, 0xe000, T0 + 1 * MS, 32, 1);
    free_ok(c, 0xe000, T0 + 4 * MS);
    check_one_address_history(c, 0xe000);
}

/* ------------------------------------------------------------------ gaps */

static void test_gap_marks_uncertain(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, 0x100, T0 + 1, 1, 5);
    alloc_ok(c, 0x200, T0 + 2, 2, 5);
    alloc_ok(c, 0x300, T0 + 3, 3, 5);
    alloc_ok(c, 0x400, T0 + 4, 4, 6);
    client_gap(c, 17);
    cstack_t *s5 = stk(c, 5), *s6 = stk(c, 6);
    assert_int_equal(c->gaps, 1);
    assert_int_equal(c->lost_events, 17);
    assert_int_equal(s5->unc_n, 3);
    assert_int_equal(s5->unc_b, 6);
    assert_int_equal(s6->unc_n, 1);
    assert_true(atab_find(&c->atab, 0x100)->flags & ATAB_F_UNCERTAIN);

    /* A second gap does not count the same blocks twice. */
    client_gap(c, 3);
    assert_int_equal(c->gaps, 2);
    assert_int_equal(c->lost_events, 20);
    assert_int_equal(s5->unc_n, 3);

    /* Blocks after the gap are certain. */
    alloc_ok(c, 0x500, T0 + 5, 50, 5);
    assert_false(atab_find(&c->atab, 0x500)->flags & ATAB_F_UNCERTAIN);
    free_ok(c, 0x500, T0 + 6);
    assert_int_equal(s5->unc_n, 3);

    free_ok(c, 0x200, T0 + 7);
    assert_int_equal(s5->unc_n, 2);
    assert_int_equal(s5->unc_b, 4);
    /* Freed implicitly by address reuse: also no longer uncertain. */
    alloc_ok(c, 0x100, T0 + 8, 9, 7);
    assert_int_equal(s5->unc_n, 1);
    assert_int_equal(s5->unc_b, 3);
    assert_int_equal(stk(c, 7)->unc_n, 0);
}

/* ------------------------------------------------------------------ freeze */

static void test_freeze_clean(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, 0x10, T0 + 5 * MS, 10, 1);
    alloc_ok(c, 0x20, T0 + 3 * MS, 20, 1);
    alloc_ok(c, 0x30, T0 + 9 * MS, 30, 1);
    alloc_ok(c, 0x40, T0 + 1 * MS, 40, 2);
    alloc_ok(c, 0x50, T0 + 2 * MS, 50, 3);
    free_ok(c, 0x20, T0 + 10 * MS);
    free_ok(c, 0x50, T0 + 10 * MS);
    free_ok(c, 0x60, T0 + 11 * MS); /* pending: never allocated */

    client_freeze(c, T0 + 20 * MS, 1);
    cstack_t *s1 = stk(c, 1), *s2 = stk(c, 2), *s3 = stk(c, 3);
    assert_int_equal(c->state, CLIENT_EXITED);
    assert_int_equal(c->frozen, 1);
    assert_int_equal(c->end_ts, T0 + 20 * MS);
    assert_int_equal(c->atab_ok, 0);
    assert_int_equal(c->unknown_frees, 1);
    assert_int_equal(s1->exit_live_n, 2);
    assert_int_equal(s1->exit_live_b, 40);
    assert_int_equal(s1->oldest_live_ts, T0 + 5 * MS);
    assert_int_equal(s2->exit_live_n, 1);
    assert_int_equal(s2->exit_live_b, 40);
    assert_int_equal(s2->oldest_live_ts, T0 + 1 * MS);
    assert_int_equal(s3->exit_live_n, 0);
    assert_int_equal(s3->oldest_live_ts, 0);
    assert_int_equal(c->live_n, 3);

    /* Events after the end are counted, never applied; aging and reviving
     * do nothing. */
    alloc_ok(c, 0x70, T0 + 30 * MS, 1, 1);
    free_ok(c, 0x70, T0 + 31 * MS);
    assert_int_equal(s1->alloc_n, 3);
    assert_int_equal(c->after_end, 2);
    client_age(c, FAR);
    assert_int_equal(s1->exp_n, 0);
    client_gap(c, 1);
    client_revive(c);
    assert_int_equal(c->frozen, 1);
    assert_int_equal(c->state, CLIENT_EXITED);
    client_freeze(c, FAR, 0);
    assert_int_equal(c->end_ts, T0 + 20 * MS);
    assert_int_equal(c->state, CLIENT_EXITED);
}

/* At the end, blocks older than the expire age count as expired. */
static void test_freeze_ages_to_end(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, 0x10, T0, 10, 1);
    alloc_ok(c, 0x20, T0 + 5 * E, 20, 1);
    client_freeze(c, T0 + 5 * E + MS, 1);
    cstack_t *s = stk(c, 1);
    assert_int_equal(s->exp_n, 1);
    assert_int_equal(s->exp_b, 10);
    assert_int_equal(s->exit_live_n, 2);
    assert_int_equal(s->oldest_live_ts, T0);
}

static void test_freeze_lost_and_revive(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, 0x10, T0, 10, 1);
    client_freeze(c, T0 + MS, 0);
    cstack_t *s = stk(c, 1);
    assert_int_equal(c->state, CLIENT_LOST);
    assert_int_equal(c->frozen, 1);
    assert_int_equal(c->atab_ok, 1);
    assert_int_equal(s->exit_live_n, 1);
    /* Ages are frozen at end_ts. */
    client_age(c, FAR);
    assert_int_equal(s->exp_n, 0);

    client_revive(c);
    assert_int_equal(c->frozen, 0);
    assert_int_equal(c->state, CLIENT_CONNECTED);
    assert_int_equal(c->end_ts, 0);
    assert_int_equal(s->exit_live_n, 0);
    assert_int_equal(s->oldest_live_ts, 0);
    client_age(c, FAR);
    assert_int_equal(s->exp_n, 1);
    free_ok(c, 0x10, FAR);
    assert_int_equal(s->fexp_n, 1);

    /* A second freeze recomputes from the current table. */
    alloc_ok(c, 0x20, FAR, 3, 1);
    client_freeze(c, FAR + 1, 0);
    assert_int_equal(s->exit_live_n, 1);
    assert_int_equal(s->exit_live_b, 3);
    assert_int_equal(s->oldest_live_ts, FAR);
}

/* ------------------------------------------------------------------ stacks */

static void test_define_stack(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    uint64_t pcs[CLIENT_MAX_PCS + 1];
    for (uint32_t i = 0; i <= CLIENT_MAX_PCS; i++)
        pcs[i] = 0x400000 + i;
    int err = 0;

    assert_null(client_define_stack(c, CLIENT_MAX_STACKS, 1, 0, pcs, 3, 0, &err));
    assert_int_equal(err, -EINVAL);
    err = 0;
    assert_null(client_define_stack(c, UINT32_MAX, 1, 0, pcs, 3, 0, &err));
    assert_int_equal(err, -EINVAL);
    err = 0;
    assert_null(client_define_stack(c, 1, 1, 0, pcs, CLIENT_MAX_PCS + 1, 0, &err));
    assert_int_equal(err, -EINVAL);
    assert_int_equal(c->nstacks, 0);

    cstack_t *s = client_define_stack(c, 9, 0xfeed, 2, pcs, CLIENT_MAX_PCS, 1, &err);
    assert_non_null(s);
    assert_int_equal(s->index, 9);
    assert_int_equal(s->id, 0xfeed);
    assert_int_equal(s->gen, 2);
    assert_int_equal(s->npcs, CLIENT_MAX_PCS);
    assert_int_equal(s->truncated, 1);
    assert_int_equal(s->defined, 1);
    for (uint32_t i = 0; i < CLIENT_MAX_PCS; i++)
        assert_int_equal(cstack_pc(c, s, i), pcs[i]);
    assert_int_equal(s->lt_min, UINT64_MAX);

    /* The highest index is accepted. */
    cstack_t *hi = client_define_stack(c, CLIENT_MAX_STACKS - 1, 2, 0, pcs, 1, 0, &err);
    assert_non_null(hi);
    assert_int_equal(hi->index, CLIENT_MAX_STACKS - 1);

    /* Events may name a stack before its definition; stats survive it. */
    alloc_ok(c, 0x10, T0, 5, 11);
    assert_int_equal(stk(c, 11)->defined, 0);
    s = client_define_stack(c, 11, 0xbeef, 0, pcs, 2, 0, &err);
    assert_ptr_equal(s, stk(c, 11));
    assert_int_equal(s->alloc_n, 1);
    assert_int_equal(s->npcs, 2);

    /* Resent after a reconnect: same stack. A new id replaces the frames,
     * statistics stay. */
    assert_ptr_equal(client_define_stack(c, 11, 0xbeef, 0, pcs + 5, 1, 0, &err), s);
    assert_int_equal(s->npcs, 2);
    assert_int_equal(cstack_pc(c, s, 0), pcs[0]);
    assert_ptr_equal(client_define_stack(c, 11, 0xcafe, 1, pcs + 5, 1, 0, &err), s);
    assert_int_equal(s->npcs, 1);
    assert_int_equal(cstack_pc(c, s, 0), pcs[5]);
    assert_int_equal(s->id, 0xcafe);
    assert_int_equal(s->alloc_n, 1);

    /* No frames at all. */
    s = client_define_stack(c, 12, 3, 0, NULL, 0, 0, &err);
    assert_non_null(s);
    assert_int_equal(s->npcs, 0);
    assert_int_equal(c->nstacks, 4);
}

/* ------------------------------------------------------------------ modules */

static void test_put_module_rejects(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    uint64_t r[66] = { 0x1000, 0x2000, 0x3000 };
    assert_int_equal(client_put_module(c, 0, "/a", 0, r, 3, NULL, 0, 1, 0), -EINVAL);
    assert_int_equal(client_put_module(c, 0, "/a", 0, r, 1, NULL, 0, 1, 0), -EINVAL);
    assert_int_equal(client_put_module(c, 0, "/a", 0, r, 66, NULL, 0, 1, 0), -EINVAL);
    assert_int_equal(client_put_module(c, CLIENT_MAX_MODULES, "/a", 0, r, 2, NULL, 0, 1, 0),
                     -EINVAL);
    assert_int_equal(client_put_module(c, UINT32_MAX, "/a", 0, r, 2, NULL, 0, 1, 0), -EINVAL);
    assert_int_equal(c->mods_cap, 0);
    assert_null(client_module_at(c, 0x1800, 1));
}

/* client_module_near: the previous pc's module first, but only where
 * client_module_at would find it (its ranges, its generations). */
static void test_module_near_follows_the_hint_only_where_it_holds(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    uint64_t ra[] = { 0x1000, 0x2000 }, rb[] = { 0x1000, 0x3000 }, rc[] = { 0x8000, 0x9000 };
    assert_int_equal(client_put_module(c, 1, "/lib/a.so", 0, ra, 2, NULL, 0, 2, 5), 0);
    assert_int_equal(client_put_module(c, 2, "/lib/b.so", 0, rb, 2, NULL, 0, 5, 0), 0);
    assert_int_equal(client_put_module(c, 3, "/lib/c.so", 0, rc, 2, NULL, 0, 1, 0), 0);
    const cmod_t *hint = NULL;
    assert_ptr_equal(client_module_near(c, 0x1800, 3, &hint), &c->mods[1]);
    assert_ptr_equal(hint, &c->mods[1]);
    assert_ptr_equal(client_module_near(c, 0x1900, 3, &hint), &c->mods[1]);
    /* Not in the hint's ranges: found, and the hint follows. */
    assert_ptr_equal(client_module_near(c, 0x8100, 3, &hint), &c->mods[3]);
    assert_ptr_equal(hint, &c->mods[3]);
    /* Nowhere: NULL, the hint stays. */
    assert_null(client_module_near(c, 0x7000, 3, &hint));
    assert_ptr_equal(hint, &c->mods[3]);
    /* The hint's range but a generation it was gone in: the module then. */
    hint = &c->mods[1];
    assert_ptr_equal(client_module_near(c, 0x1800, 5, &hint), &c->mods[2]);
    hint = &c->mods[2];
    assert_ptr_equal(client_module_near(c, 0x1800, 3, &hint), &c->mods[1]);
    hint = &c->mods[2];
    assert_null(client_module_near(c, 0x2800, 4, &hint));
}

static void test_put_module_and_lookup(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    uint64_t ra[] = { 0x1000, 0x2000, 0x5000, 0x6000 };
    uint8_t bid[40];
    for (int i = 0; i < 40; i++)
        bid[i] = (uint8_t)i;
    assert_int_equal(client_put_module(c, 3, "/lib/a.so", 0x1000, ra, 4, bid, 40, 2, 5), 0);
    const cmod_t *m = &c->mods[3];
    assert_string_equal(m->path, "/lib/a.so");
    assert_int_equal(m->nranges, 2);
    assert_int_equal(m->bias, 0x1000);
    assert_int_equal(m->build_id_len, 32);
    assert_memory_equal(m->build_id, bid, 32);
    assert_ptr_not_equal(m->ranges, ra);

    /* Ranges are [start, end); generations [gen_added, gen_removed). */
    assert_null(client_module_at(c, 0x1800, 1));
    assert_ptr_equal(client_module_at(c, 0x1000, 2), m);
    assert_ptr_equal(client_module_at(c, 0x1fff, 4), m);
    assert_ptr_equal(client_module_at(c, 0x5000, 3), m);
    assert_null(client_module_at(c, 0x2000, 2));
    assert_null(client_module_at(c, 0x4fff, 2));
    assert_null(client_module_at(c, 0x1800, 5));
    assert_null(client_module_at(c, 0x1800, 100));

    /* Another object loaded at the same place from generation 5 on. */
    uint64_t rb[] = { 0x1000, 0x3000 };
    assert_int_equal(client_put_module(c, 1000, "/lib/b.so", 0, rb, 2, NULL, 0, 5, 0), 0);
    assert_true(c->mods_cap > 1000);
    const cmod_t *mb = &c->mods[1000];
    assert_ptr_equal(client_module_at(c, 0x1800, 4), &c->mods[3]);
    assert_ptr_equal(client_module_at(c, 0x1800, 5), mb);
    assert_ptr_equal(client_module_at(c, 0x2800, 1000), mb);
    assert_null(client_module_at(c, 0x2800, 4));

    /* An update (the unload message) replaces the record. */
    assert_int_equal(client_put_module(c, 1000, "/lib/b.so", 0, rb, 2, bid, 4, 5, 9), 0);
    assert_ptr_equal(client_module_at(c, 0x1800, 8), mb);
    assert_null(client_module_at(c, 0x1800, 9));
    assert_int_equal(c->mods[1000].build_id_len, 4);

    /* Highest id; a module without ranges matches nothing. */
    assert_int_equal(client_put_module(c, CLIENT_MAX_MODULES - 1, NULL, 0, NULL, 0, NULL, 0, 0, 0),
                     0);
    assert_string_equal(c->mods[CLIENT_MAX_MODULES - 1].path, "");
    assert_null(client_module_at(c, 0x9000, 1));
}

/* ------------------------------------------------------------------ prune */

static client_t *ended_client(clients_t *cs, uint32_t pid, uint64_t end_ts, int clean)
{
    client_t *c = client_new(cs, pid, E, T0);
    assert_non_null(c);
    alloc_ok(c, 0x10, T0, 1, 1);
    client_freeze(c, end_ts, clean);
    return c;
}

static int in_list(const clients_t *cs, const client_t *c)
{
    for (const client_t *x = cs->head; x; x = x->next)
        if (x == c)
            return 1;
    return 0;
}

/* A bare clients_t (no client yet), destroyed with all it holds. */
static int setup_cs(void **state)
{
    clients_t *cs = calloc(1, sizeof *cs);
    *state = cs;
    return cs ? 0 : -1;
}

static int teardown_cs(void **state)
{
    destroy_all(*state);
    free(*state);
    return 0;
}

static void test_prune_count(void **state)
{
    clients_t *cs = *state;
    cs->retain_max = 2;
    client_t *c1 = ended_client(cs, 1, T0 + 1, 1);
    client_t *c2 = ended_client(cs, 2, T0 + 2, 0);
    client_t *live = client_new(cs, 3, E, T0);
    client_t *c4 = ended_client(cs, 4, T0 + 4, 1);
    client_t *c5 = ended_client(cs, 5, T0 + 5, 1);
    assert_non_null(live);
    assert_int_equal(cs->count, 5);
    clients_prune(cs, T0 + 10);
    /* The connected one stays; of the ended, the two newest. */
    assert_int_equal(cs->count, 3);
    assert_true(in_list(cs, live));
    assert_true(in_list(cs, c5));
    assert_true(in_list(cs, c4));
    (void)c1;
    (void)c2;
    uint32_t n = 0;
    for (client_t *x = cs->head; x; x = x->next)
        n++;
    assert_int_equal(n, 3);
    /* Idempotent. */
    clients_prune(cs, T0 + 10);
    assert_int_equal(cs->count, 3);

    cs->retain_max = 0;
    clients_prune(cs, T0 + 10);
    assert_int_equal(cs->count, 1);
    assert_ptr_equal(cs->head, live);
    assert_null(live->next);
}

/* Retention keeps the clients that ended last, not the ones that started
 * last: a long-running process that just ended is not evicted by a burst of
 * short-lived ones that ended before it. */
static void test_prune_keeps_latest_ended(void **state)
{
    clients_t *cs = *state;
    cs->retain_max = 2;
    client_t *longrun = ended_client(cs, 1, T0 + 50, 1); /* started first, ended last */
    client_t *a = ended_client(cs, 2, T0 + 10, 0);
    client_t *b = ended_client(cs, 3, T0 + 20, 1);
    client_t *c = ended_client(cs, 4, T0 + 30, 1);
    clients_prune(cs, T0 + 60);
    assert_int_equal(cs->count, 2);
    assert_true(in_list(cs, longrun));
    assert_true(in_list(cs, c));
    assert_false(in_list(cs, a));
    assert_false(in_list(cs, b));
    /* Ties at the cut: the oldest started goes. */
    cs->retain_max = 1;
    client_t *t1 = ended_client(cs, 5, T0 + 55, 1);
    client_t *t2 = ended_client(cs, 6, T0 + 55, 1);
    clients_prune(cs, T0 + 60);
    assert_int_equal(cs->count, 1);
    assert_ptr_equal(cs->head, t2);
    assert_null(t2->next);
    (void)t1;
}

static void test_prune_age(void **state)
{
    clients_t *cs = *state;
    cs->retain_max = 10;
    cs->retain_ns = 60 * SEC;
    client_t *old = ended_client(cs, 1, T0, 1);
    client_t *recent = ended_client(cs, 2, T0 + 100 * SEC, 1);
    clients_prune(cs, T0 + 120 * SEC);
    assert_int_equal(cs->count, 1);
    assert_false(in_list(cs, old));
    assert_true(in_list(cs, recent));
}

/* A client dropped for its age must not use up a place of the count:
 * with retain_max 2 and two recent ended clients, both stay. */
static void test_prune_aged_out_do_not_count(void **state)
{
    clients_t *cs = *state;
    cs->retain_max = 2;
    cs->retain_ns = 60 * SEC;
    /* Created oldest first; the newest created ended long ago. */
    client_t *a = ended_client(cs, 1, T0 + 100 * SEC, 1);
    client_t *b = ended_client(cs, 2, T0 + 100 * SEC, 1);
    client_t *stale = ended_client(cs, 3, T0, 1);
    clients_prune(cs, T0 + 120 * SEC);
    assert_false(in_list(cs, stale));
    assert_true(in_list(cs, b));
    assert_true(in_list(cs, a));
    assert_int_equal(cs->count, 2);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_new_and_find),
        T(test_identity_argc_capped),
        T(test_strings_cut),
        cmocka_unit_test_setup_teardown(test_process_shares_limits, setup_cs, teardown_cs),
        cmocka_unit_test_setup_teardown(test_tracebacks_leave_room_for_modules, setup_cs,
                                        teardown_cs),
        T(test_alloc_free_counts),
        T(test_sampled_weights),
        T(test_fold),
        T(test_sampled_late_block_weights),
        T(test_bad_stack_index),
        T(test_expired_once_then_freed),
        T(test_alloc_older_than_expire),
        T(test_free_before_alloc),
        T(test_reuse_implies_free_and_absorbs_late_free),
        T(test_late_alloc_older_than_live),
        T(test_unmatched_free_becomes_unknown),
        T(test_event_clock_resolves_records),
        T(test_reorder_pingpong),
        T(test_reorder_producer_consumer),
        T(test_in_order_history_exact),
        T(test_reorder_handled_orders),
        T(test_gap_marks_uncertain),
        T(test_freeze_clean),
        T(test_freeze_ages_to_end),
        T(test_freeze_lost_and_revive),
        T(test_define_stack),
        T(test_put_module_rejects),
        T(test_module_near_follows_the_hint_only_where_it_holds),
        T(test_put_module_and_lookup),
        cmocka_unit_test_setup_teardown(test_prune_count, setup_cs, teardown_cs),
        cmocka_unit_test_setup_teardown(test_prune_keeps_latest_ended, setup_cs, teardown_cs),
        cmocka_unit_test_setup_teardown(test_prune_age, setup_cs, teardown_cs),
        cmocka_unit_test_setup_teardown(test_prune_aged_out_do_not_count, setup_cs,
                                        teardown_cs),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
