/* Unit tests of the frame table (each distinct frame once, symbols kept per frame) and of what a stack costs collectord. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/collectord/client.h"
#include "collector/collectord/ftab.h"
#include "collector/collectord/sym.h"

#define MS 1000000ull
#define SEC 1000000000ull
#define T0 (100 * SEC)

static void test_ids_dense_and_by_generation(void **state)
{
    (void)state;
    ftab_t t = { 0 };
    assert_int_equal(ftab_find(&t, 0x1000, 1), FTAB_NONE);
    uint32_t a = ftab_get(&t, 0x1000, 1);
    uint32_t b = ftab_get(&t, 0x1000, 2); /* another generation: maybe another module */
    uint32_t c = ftab_get(&t, 0x2000, 1);
    assert_int_equal(a, 0);
    assert_int_equal(b, 1);
    assert_int_equal(c, 2);
    assert_int_equal(ftab_get(&t, 0x1000, 1), a);
    assert_int_equal(ftab_find(&t, 0x1000, 2), b);
    assert_int_equal(t.n, 3);
    /* Many more: still found after the slots grew, ids in order of first use. */
    for (uint32_t i = 0; i < 100000; i++)
        assert_int_equal(ftab_get(&t, 0x7f0000000000ull + 16ull * i, 7), 3 + i);
    for (uint32_t i = 0; i < 100000; i += 7)
        assert_int_equal(ftab_find(&t, 0x7f0000000000ull + 16ull * i, 7), 3 + i);
    assert_int_equal(ftab_find(&t, 0x7f0000000000ull + 8, 7), FTAB_NONE);
    assert_int_equal(t.ent[a].pc, 0x1000);
    assert_int_equal(t.ent[b].gen, 2);
    assert_true(t.nslot >= 2 * t.n); /* load at most a half */
    /* 24 bytes an entry and 8 of slots at most, at capacity. */
    assert_true(ftab_bytes(&t) <= (size_t)t.cap * sizeof(fent_t) + 4ull * 4 * t.n + 4096);
    ftab_free(&t);
}

static symframe_t sf(const char *fn, const char *file, uint32_t line, int inl)
{
    symframe_t f;
    memset(&f, 0, sizeof f);
    f.addr = 0xdead; /* not kept: a frame's address is its entry's pc */
    f.function = fn;
    f.file = file;
    f.line = line;
    f.is_inline = (uint8_t)inl;
    f.module = "/lib/libx.so";
    f.offset = 12;
    return f;
}

static void test_symbols_once_degraded_replaced(void **state)
{
    (void)state;
    ftab_t t = { 0 };
    uint32_t id = ftab_get(&t, 0x1000, 1);
    symframe_t two[2] = { sf("inl", "a.c", 3, 1), sf("outer", "a.c", 9, 0) };
    /* Degraded (a module that could not be read): kept, and replaced by a
     * later result that is not. */
    symframe_t bare = sf(NULL, NULL, 0, 0);
    assert_int_equal(ftab_set_sym(&t, id, &bare, 1, 1), 0);
    assert_int_equal(t.ent[id].state, FT_SYM_DEGRADED);
    assert_int_equal(t.ent[id].nsym, 1);
    assert_int_equal(ftab_set_sym(&t, id, two, 1, 1), 0); /* degraded again: no better */
    assert_null(t.sym[t.ent[id].sym].function);
    assert_int_equal(ftab_set_sym(&t, id, two, 2, 0), 0);
    assert_int_equal(t.ent[id].state, FT_SYM_DONE);
    assert_int_equal(t.ent[id].nsym, 2);
    const fsym_t *f = &t.sym[t.ent[id].sym];
    assert_string_equal(f[0].function, "inl");
    assert_int_equal(f[0].is_inline, 1);
    assert_string_equal(f[1].function, "outer");
    assert_int_equal(f[1].line, 9);
    assert_int_equal(f[1].offset, 12);
    /* Done: a pc's frames do not change. */
    uint32_t pool = t.nsym;
    assert_int_equal(ftab_set_sym(&t, id, &bare, 1, 0), 0);
    assert_int_equal(t.nsym, pool);
    assert_string_equal(t.sym[t.ent[id].sym].function, "inl");
    /* Too many frames for one pc: refused, the entry as it was. */
    uint32_t id2 = ftab_get(&t, 0x2000, 1);
    symframe_t *many = calloc(FTAB_SYM_MAX + 1, sizeof *many);
    assert_non_null(many);
    assert_int_equal(ftab_set_sym(&t, id2, many, FTAB_SYM_MAX + 1, 0), -E2BIG);
    assert_int_equal(t.ent[id2].state, FT_SYM_NONE);
    assert_int_equal(ftab_set_sym(&t, 99, many, 1, 0), -EINVAL);
    free(many);
    ftab_free(&t);
}

/* A finished job as the worker leaves it: frames per pc given by nf. */
static sym_job_t *job_for(const client_t *c, const cstack_t *s, const uint16_t *nf,
                          const uint8_t *deg)
{
    sym_job_t *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->npcs = s->npcs;
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->npcs; i++)
        n += nf[i];
    j->result = calloc(1, sizeof *j->result + n * sizeof(symframe_t));
    j->pcs = calloc(s->npcs + 1, sizeof *j->pcs);
    for (uint32_t i = 0; i < s->npcs; i++)
        j->pcs[i] = cstack_pc(c, s, i);
    j->pc_nf = calloc(s->npcs, sizeof *j->pc_nf);
    j->pc_deg = calloc(s->npcs, 1);
    assert_non_null(j->result);
    j->result->n = n;
    uint32_t k = 0;
    static char names[64][16];
    for (uint32_t i = 0; i < s->npcs; i++) {
        j->pc_nf[i] = nf[i];
        j->pc_deg[i] = deg ? deg[i] : 0;
        j->result->degraded |= j->pc_deg[i];
        for (uint32_t m = 0; m < nf[i]; m++) {
            uint64_t pc = cstack_pc(c, s, i);
            snprintf(names[pc % 64], sizeof names[0], "fn%u", (unsigned)(pc % 64));
            j->result->f[k] = sf(sym_intern(names[pc % 64]), "x.c", (uint32_t)(pc % 64), m + 1 < nf[i]);
            j->result->f[k++].addr = pc;
        }
    }
    return j;
}

static void test_stacks_share_frames_and_symbols(void **state)
{
    (void)state;
    clients_t cs = { 0 };
    client_t *c = client_new(&cs, 4242, SEC, T0);
    assert_non_null(c);
    uint64_t a[4] = { 0x11, 0x12, 0x13, 0x14 }, b[3] = { 0x21, 0x13, 0x14 };
    int err = 0;
    cstack_t *sa = client_define_stack(c, 0, 1, 1, a, 4, 0, &err);
    cstack_t *sb = client_define_stack(c, 1, 2, 1, b, 3, 0, &err);
    assert_non_null(sa);
    assert_non_null(sb);
    assert_int_equal(c->ftab.n, 5);   /* the outer two frames are shared */
    assert_int_equal(c->total_pcs, 7);
    assert_int_equal(sa->fids[2], sb->fids[1]);
    assert_int_equal(cstack_pc(c, sb, 0), 0x21);
    /* The same address at another generation is another frame. */
    cstack_t *sc = client_define_stack(c, 2, 3, 2, b, 1, 0, &err);
    assert_int_not_equal(sc->fids[0], sb->fids[0]);
    assert_int_equal(c->ftab.n, 6);

    /* Not symbolized yet: nothing. */
    assert_null(cstack_sym(c, sa));
    /* Stack a's job: 0x13 gave two frames (an inlined call). */
    uint16_t nfa[4] = { 1, 1, 2, 1 };
    sym_job_t *j = job_for(c, sa, nfa, NULL);
    sa->sym_state = SYM_PENDING;
    client_sym_done(c, sa, j);
    assert_non_null(j->result); /* kept in the table, not by the stack */
    assert_null(sa->sym);
    sym_job_free(j);
    assert_int_equal(sa->sym_state, SYM_DONE);
    const symres_t *r = cstack_sym(c, sa);
    assert_non_null(r);
    assert_int_equal(r->n, 5);
    assert_int_equal(r->degraded, 0);
    assert_int_equal(r->f[2].addr, 0x13);
    assert_int_equal(r->f[3].addr, 0x13);
    assert_int_equal(r->f[2].is_inline, 1);
    assert_int_equal(r->f[3].is_inline, 0);
    assert_string_equal(r->f[4].function, "fn20");
    assert_int_equal(r->f[4].line, 0x14 % 64);
    /* b's shared frames are in already; its job keeps them as they are. */
    uint32_t pool = c->ftab.nsym;
    uint16_t nfb[3] = { 1, 1, 1 };
    j = job_for(c, sb, nfb, NULL);
    sb->sym_state = SYM_PENDING;
    client_sym_done(c, sb, j);
    sym_job_free(j);
    assert_int_equal(c->ftab.nsym, pool + 1); /* only 0x21 was new */
    r = cstack_sym(c, sb);
    assert_int_equal(r->n, 4);
    assert_int_equal(r->f[1].addr, 0x13);
    assert_int_equal(r->f[1].is_inline, 1);

    /* A degraded frame makes the stack read as degraded, until a result
     * that is not comes. */
    uint8_t deg[1] = { 1 };
    uint16_t nfc[1] = { 1 };
    j = job_for(c, sc, nfc, deg);
    sc->sym_state = SYM_PENDING;
    client_sym_done(c, sc, j);
    sym_job_free(j);
    assert_int_equal(cstack_sym(c, sc)->degraded, 1);
    j = job_for(c, sc, nfc, NULL);
    client_sym_done(c, sc, j);
    sym_job_free(j);
    assert_int_equal(cstack_sym(c, sc)->degraded, 0);

    /* No per-pc split (the worker ran out of memory for it): the stack
     * keeps its own frames. */
    j = job_for(c, sb, nfb, NULL);
    free(j->pc_nf);
    j->pc_nf = NULL;
    symres_t *own = j->result;
    client_sym_done(c, sb, j);
    assert_null(j->result);
    assert_ptr_equal(sb->sym, own);
    assert_ptr_equal(cstack_sym(c, sb), own);
    sym_job_free(j);
    /* A job made for the stack's old frames (it was redefined meanwhile,
     * same depth): never the table's; the stack keeps it as its own. */
    j = job_for(c, sb, nfb, NULL);
    j->pcs[0] = 0x99;
    pool = c->ftab.nsym;
    own = j->result;
    client_sym_done(c, sb, j);
    assert_ptr_equal(sb->sym, own);
    assert_int_equal(c->ftab.nsym, pool);
    sym_job_free(j);
    /* Redefined (a new id at that index): frames and symbols go. */
    cstack_t *sb2 = client_define_stack(c, 1, 9, 1, a, 2, 0, &err);
    assert_ptr_equal(sb2, sb);
    assert_null(sb->sym);
    assert_int_equal(sb->sym_state, SYM_NONE);
    assert_null(cstack_sym(c, sb));
    assert_int_equal(c->total_pcs, 4 + 2 + 1);
    client_destroy(c);
}

/* The process's distinct frames are bounded like its frames: redefining
 * stacks over new addresses cannot grow the table without end. */
static void test_distinct_frames_bounded(void **state)
{
    (void)state;
    clients_t cs = { 0 };
    client_t *c = client_new(&cs, 4242, SEC, T0);
    cproc_t *p = cproc_get(&cs, 4242, 1);
    assert_non_null(c);
    assert_non_null(p);
    client_set_proc(c, p);
    uint64_t pcs[3] = { 0x100, 0x200, 0x300 };
    int err = 0;
    assert_non_null(client_define_stack(c, 0, 1, 1, pcs, 3, 0, &err));
    assert_int_equal(p->frames, 3);
    /* Near the limit: a stack with frames already known still fits. */
    p->frames = CLIENT_MAX_TOTAL_PCS - 1;
    assert_non_null(client_define_stack(c, 1, 2, 1, pcs, 3, 0, &err));
    uint64_t fresh[2] = { 0x400, 0x500 };
    assert_null(client_define_stack(c, 2, 3, 1, fresh, 2, 0, &err));
    assert_int_equal(err, -E2BIG);
    assert_non_null(client_define_stack(c, 2, 3, 1, fresh, 1, 0, &err));
    assert_int_equal(p->frames, CLIENT_MAX_TOTAL_PCS);
    p->frames = c->ftab.n;
    /* client_destroy gives the process its share back and drops it. */
    cproc_ref(p);
    uint32_t frames = c->ftab.n;
    assert_int_equal(p->frames, frames);
    cs.head = c->next;
    client_destroy(c);
    assert_int_equal(p->frames, 0);
    cproc_unref(p);
}

/* Issue 20: at most 1 KB of collectord per distinct stack (30 frames over
 * shared ones, symbolized, classified with a full series) and 64 B per
 * live block, as client_mem counts them. */
static void test_bytes_per_stack_and_block(void **state)
{
    (void)state;
    clients_t cs = { 0 };
    uint64_t expire = SEC;
    client_t *c = client_new(&cs, 4242, expire, T0);
    assert_non_null(c);
    enum { NS = 2000, DEPTH = 30, DISTINCT = 300 };
    uint64_t rng = 88172645463325252ull;
    for (uint32_t i = 0; i < NS; i++) {
        uint64_t pcs[DEPTH];
        for (uint32_t k = 0; k < DEPTH; k++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            pcs[k] = 0x555500000000ull + 64 * (rng % DISTINCT);
        }
        int err = 0;
        cstack_t *s = client_define_stack(c, i * 3, i + 1, 1, pcs, DEPTH, 0, &err);
        assert_non_null(s);
        uint16_t nf[DEPTH];
        for (uint32_t k = 0; k < DEPTH; k++)
            nf[k] = k % 3 == 0 ? 2 : 1; /* a third with an inlined call */
        sym_job_t *j = job_for(c, s, nf, NULL);
        s->sym_state = SYM_PENDING;
        client_sym_done(c, s, j);
        sym_job_free(j);
        for (uint32_t b = 0; b < 4; b++)
            assert_int_equal(client_alloc(c, 0x10000000ull + 64ull * (4 * i + b), T0 + i + b, 48,
                                          i * 3), 0);
    }
    /* Every block expires; the series fill (flat, the usual case). */
    uint64_t now = T0 + 2 * expire;
    for (uint32_t t = 0; t < 200; t++, now += expire / 4) {
        client_age(c, now);
        client_classify(c, now);
    }
    uint32_t with_series = 0;
    for (uint32_t i = 0; i < c->nstacks; i++)
        with_series += c->slist[i]->cls && c->slist[i]->cls->series.n >= SERIES_CAP / 2;
    assert_int_equal(with_series, NS);
    uint64_t sb, bb;
    client_mem(c, &sb, &bb);
    print_message("%llu B per stack, %llu B per live block\n", (unsigned long long)(sb / NS),
                  (unsigned long long)(bb / (4 * NS)));
    assert_true(sb / NS <= 1024);
    assert_true(sb / NS >= sizeof(cstack_t) + DEPTH * 4); /* it counts what is there */
    assert_true(bb / (4 * NS) <= 64);
    client_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_dense_and_by_generation),
        cmocka_unit_test(test_symbols_once_degraded_replaced),
        cmocka_unit_test(test_stacks_share_frames_and_symbols),
        cmocka_unit_test(test_distinct_frames_bounded),
        cmocka_unit_test(test_bytes_per_stack_and_block),
    };
    return cmocka_run_group_tests_name("ftab", tests, NULL, NULL);
}
