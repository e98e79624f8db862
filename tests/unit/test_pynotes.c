/* Unit tests of notes (Python tracebacks and handler text) tied to blocks, and the leak queue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/collectord/client.h"
#include "collector/collectord/sym.h"

#define MS 1000000ull
#define SEC 1000000000ull
#define E (10 * MS)      /* expire time used by these tests */
#define T0 (100 * SEC)   /* start of the event clock */

#define A 0x5555555592a0ull  /* heap addresses */
#define B (A + 0x40)
#define C (A + 0x80)
#define D (A + 0x100)

/* One client with stacks 1 and 2 defined; freed by the teardown. */
typedef struct fix_s {
    clients_t cs;
    client_t *c;
} fix_t;

static int setup(void **state)
{
    fix_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->c = client_new(&f->cs, 4242, E, T0);
    if (!f->c)
        return -1;
    uint64_t pcs[2] = { 0x555555555149, 0x5555555551a0 };
    int err = 0;
    if (!client_define_stack(f->c, 1, 0xA1, 1, pcs, 2, 0, &err) ||
        !client_define_stack(f->c, 2, 0xA2, 1, pcs, 1, 0, &err))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fix_t *f = *state;
    while (f->cs.head) {
        client_t *c = f->cs.head;
        f->cs.head = c->next;
        client_destroy(c);
    }
    free(f);
    return 0;
}

/* Sets one frame field by field over zeroed bytes (padding included). */
static void set_frame(pyframe_t *fr, const char *file, const char *function, uint32_t line)
{
    memset(fr, 0, sizeof *fr);
    fr->file = sym_intern(file);
    fr->function = sym_intern(function);
    fr->line = line;
}

/* Two Python tracebacks, innermost first; strings interned as ingest.c does. */
static void frames_f(pyframe_t *fr)
{
    set_frame(&fr[0], "/srv/app/cache.py", "fill", 42);
    set_frame(&fr[1], "/srv/app/main.py", "<module>", 7);
}

static void frames_g(pyframe_t *fr)
{
    set_frame(&fr[0], "/srv/app/cache.py", "fill", 43);
    set_frame(&fr[1], "/srv/app/main.py", "<module>", 7);
}

static void alloc_ok(client_t *c, uint64_t addr, uint64_t ts, uint64_t size, uint32_t stack)
{
    assert_int_equal(client_alloc(c, addr, ts, size, stack), 0);
}

static void free_ok(client_t *c, uint64_t addr, uint64_t ts)
{
    assert_int_equal(client_free(c, addr, ts), 0);
}

static cstack_t *note(client_t *c, uint64_t addr, uint64_t ts, uint32_t stack,
                      const pyframe_t *fr, uint32_t n, const char *text)
{
    return client_note(c, addr, ts, stack, fr, n, 0, text, 0);
}

/* The pytb tied to the live block at addr, or NULL. */
static pytb_t *tb_of(client_t *c, uint64_t addr)
{
    uint32_t i;
    atab_ent_t *e = atab_find(&c->atab, addr);
    if (!e || !(e->flags & ATAB_F_NOTED) || !amap_get(&c->noted, addr, &i))
        return NULL;
    assert_true(i < c->npytbs);
    return &c->pytbs[i];
}

/* A time by which every block allocated at or before ts has expired. */
static uint64_t past_expiry(const client_t *c, uint64_t ts)
{
    return ts + E + 2 * c->atab.width_ns;
}

/* captures = live + freed for every pytb a test made through ordinary notes. */
static void check_balance(const client_t *c)
{
    for (uint32_t i = 0; i < c->npytbs; i++) {
        const pytb_t *t = &c->pytbs[i];
        if (t->captures != t->live_n + t->freed)
            fail_msg("pytb %u: captures %u != live %llu + freed %llu", i, t->captures,
                     (unsigned long long)t->live_n, (unsigned long long)t->freed);
        assert_true(t->may_n <= t->exp_n);
        assert_true(t->may_n <= t->live_n);
    }
}

/* ------------------------------------------------------------------ dedupe */

static void test_same_frames_dedupe(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2];
    frames_f(fr);
    alloc_ok(c, A, T0 + 1, 10, 1);
    alloc_ok(c, B, T0 + 2, 20, 1);
    assert_ptr_equal(note(c, A, T0 + 1, 1, fr, 2, NULL), cstack_at(c, 1));
    frames_f(fr); /* built again, as each Note is */
    assert_ptr_equal(note(c, B, T0 + 2, 1, fr, 2, NULL), cstack_at(c, 1));
    assert_int_equal(c->notes, 2);
    assert_int_equal(c->npytbs, 1);
    pytb_t *t = &c->pytbs[0];
    assert_int_equal(t->stack, 1);
    assert_int_equal(t->captures, 2);
    assert_int_equal(t->live_n, 2);
    assert_int_equal(t->live_b, 30);
    assert_int_equal(t->freed, 0);
    assert_int_equal(t->exp_n, 0);
    assert_int_equal(t->may_n, 0);
    assert_int_equal(t->nframes, 2);
    assert_null(t->text);
    assert_string_equal(t->frames[0].function, "fill");
    assert_int_equal(t->frames[0].line, 42);
    assert_string_equal(t->frames[1].file, "/srv/app/main.py");
    assert_ptr_equal(tb_of(c, A), t);
    assert_ptr_equal(tb_of(c, B), t);
    assert_int_equal(c->noted.used, 2);
    check_balance(c);
}

static void test_different_frames_separate(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2], gr[2];
    frames_f(fr);
    frames_g(gr);
    alloc_ok(c, A, T0 + 1, 10, 1);
    alloc_ok(c, B, T0 + 2, 20, 1);
    alloc_ok(c, C, T0 + 3, 30, 2);
    alloc_ok(c, D, T0 + 4, 40, 1);
    note(c, A, T0 + 1, 1, fr, 2, NULL);
    note(c, B, T0 + 2, 1, gr, 2, NULL);  /* another line */
    note(c, C, T0 + 3, 2, fr, 2, NULL);  /* same frames, another C stack */
    note(c, D, T0 + 4, 1, fr, 1, NULL);  /* a prefix of them */
    assert_int_equal(c->npytbs, 4);
    pytb_t *ta = tb_of(c, A), *tbb = tb_of(c, B), *tc = tb_of(c, C), *td = tb_of(c, D);
    assert_non_null(ta);
    assert_non_null(tbb);
    assert_non_null(tc);
    assert_non_null(td);
    assert_true(ta != tbb && ta != tc && ta != td && tbb != tc && tbb != td && tc != td);
    assert_int_equal(tc->stack, 2);
    assert_int_equal(td->nframes, 1);
    for (uint32_t i = 0; i < 4; i++) {
        assert_int_equal(c->pytbs[i].captures, 1);
        assert_int_equal(c->pytbs[i].live_n, 1);
    }
    assert_int_equal(tc->live_b, 30);
    check_balance(c);
}

/* pyframe_t has 4 bytes of padding after line. ingest.c fills an
 * uninitialized stack array field by field, so two Notes with the same
 * traceback may differ there; they must still be one traceback. */
static void test_dedupe_ignores_padding(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t x[2], y[2];
    memset(x, 0x00, sizeof x);
    memset(y, 0xa5, sizeof y);
    for (int i = 0; i < 2; i++) {
        x[i].file = y[i].file = sym_intern("/srv/app/cache.py");
        x[i].function = y[i].function = sym_intern("fill");
        x[i].line = y[i].line = 42 + (uint32_t)i;
    }
    alloc_ok(c, A, T0 + 1, 10, 1);
    alloc_ok(c, B, T0 + 2, 20, 1);
    note(c, A, T0 + 1, 1, x, 2, NULL);
    note(c, B, T0 + 2, 1, y, 2, NULL);
    if (c->npytbs != 1)
        fail_msg("one traceback noted twice became %u pytbs: the dedupe hash covers the "
                 "padding bytes of pyframe_t (client.c pytb_get)", c->npytbs);
    assert_int_equal(c->pytbs[0].captures, 2);
}

/* ------------------------------------------------------------------ fate of noted blocks */

static void test_note_ts_mismatch_counts_freed(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2];
    frames_f(fr);
    alloc_ok(c, A, T0 + 5, 10, 1);
    /* The note is for an earlier block at A: that one is gone. */
    assert_ptr_equal(note(c, A, T0 + 1, 1, fr, 2, NULL), cstack_at(c, 1));
    assert_int_equal(c->npytbs, 1);
    pytb_t *t = &c->pytbs[0];
    assert_int_equal(t->captures, 1);
    assert_int_equal(t->live_n, 0);
    assert_int_equal(t->live_b, 0);
    assert_int_equal(t->freed, 1);
    assert_null(tb_of(c, A));
    assert_int_equal(atab_find(&c->atab, A)->flags & ATAB_F_NOTED, 0);
    assert_int_equal(c->noted.used, 0);
    /* No live block at the address at all. */
    note(c, D, T0 + 1, 1, fr, 2, NULL);
    assert_int_equal(c->npytbs, 1);
    assert_int_equal(t->captures, 2);
    assert_int_equal(t->freed, 2);
    /* The matching note for the live block still ties it. */
    note(c, A, T0 + 5, 1, fr, 2, NULL);
    assert_ptr_equal(tb_of(c, A), t);
    assert_int_equal(t->live_n, 1);
    check_balance(c);
}

static void test_free_noted_block(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2];
    frames_f(fr);
    alloc_ok(c, A, T0 + 1, 10, 1);
    alloc_ok(c, B, T0 + 2, 20, 1);
    note(c, A, T0 + 1, 1, fr, 2, NULL);
    note(c, B, T0 + 2, 1, fr, 2, NULL);
    pytb_t *t = &c->pytbs[0];
    free_ok(c, A, T0 + 3);
    assert_int_equal(t->live_n, 1);
    assert_int_equal(t->live_b, 20);
    assert_int_equal(t->freed, 1);
    assert_int_equal(t->captures, 2);
    assert_int_equal(c->noted.used, 1);
    uint32_t idx;
    assert_int_equal(amap_get(&c->noted, A, &idx), 0);
    /* A new block at the freed address is not noted. */
    alloc_ok(c, A, T0 + 4, 8, 1);
    assert_null(tb_of(c, A));
    free_ok(c, A, T0 + 5);
    assert_int_equal(t->freed, 1);
    assert_int_equal(t->live_n, 1);
    check_balance(c);
}

/* An allocation at a noted block's address implies its free. */
static void test_reuse_frees_noted_block(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2];
    frames_f(fr);
    alloc_ok(c, A, T0 + 1, 10, 1);
    note(c, A, T0 + 1, 1, fr, 2, NULL);
    alloc_ok(c, A, T0 + 9, 12, 2);
    pytb_t *t = &c->pytbs[0];
    assert_int_equal(c->implied_frees, 1);
    assert_int_equal(t->live_n, 0);
    assert_int_equal(t->live_b, 0);
    assert_int_equal(t->freed, 1);
    assert_null(tb_of(c, A));
    assert_int_equal(c->noted.used, 0);
    check_balance(c);
}

static void test_aging_noted_blocks(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2];
    frames_f(fr);
    alloc_ok(c, A, T0 + 1, 10, 1);
    alloc_ok(c, B, T0 + 2, 20, 1);
    alloc_ok(c, C, T0 + 3, 30, 1); /* not noted */
    note(c, A, T0 + 1, 1, fr, 2, NULL);
    note(c, B, T0 + 2, 1, fr, 2, NULL);
    pytb_t *t = &c->pytbs[0];

    client_age(c, T0 + E / 2);
    assert_int_equal(t->exp_n, 0);
    assert_int_equal(t->may_n, 0);
    client_age(c, past_expiry(c, T0 + 3));
    assert_int_equal(cstack_at(c, 1)->exp_n, 3);
    assert_int_equal(t->exp_n, 2);
    assert_int_equal(t->exp_b, 30);
    assert_int_equal(t->may_n, 2);
    assert_int_equal(t->may_b, 30);
    assert_int_equal(t->live_n, 2);
    /* Aging again counts nothing twice. */
    client_age(c, past_expiry(c, T0 + 3) + 10 * E);
    assert_int_equal(t->exp_n, 2);
    assert_int_equal(t->may_n, 2);

    /* Freeing an expired noted block: no longer may-leak; it did expire. */
    uint64_t later = past_expiry(c, T0 + 3) + 20 * E;
    free_ok(c, A, later);
    assert_int_equal(t->may_n, 1);
    assert_int_equal(t->may_b, 20);
    assert_int_equal(t->exp_n, 2);
    assert_int_equal(t->exp_b, 30);
    assert_int_equal(t->live_n, 1);
    assert_int_equal(t->freed, 1);
    free_ok(c, B, later + 1);
    assert_int_equal(t->may_n, 0);
    assert_int_equal(t->may_b, 0);
    assert_int_equal(t->live_n, 0);
    assert_int_equal(t->live_b, 0);
    assert_int_equal(t->freed, 2);
    check_balance(c);
}

/* A note arriving after its block expired counts it expired at once. */
static void test_note_after_expiry(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2];
    frames_f(fr);
    alloc_ok(c, A, T0 + 1, 10, 1);
    client_age(c, past_expiry(c, T0 + 1));
    assert_int_equal(cstack_at(c, 1)->exp_n, 1);
    note(c, A, T0 + 1, 1, fr, 2, NULL);
    pytb_t *t = tb_of(c, A);
    assert_non_null(t);
    assert_int_equal(t->exp_n, 1);
    assert_int_equal(t->exp_b, 10);
    assert_int_equal(t->may_n, 1);
    assert_int_equal(t->live_n, 1);
    free_ok(c, A, past_expiry(c, T0 + 1) + 1);
    assert_int_equal(t->may_n, 0);
    assert_int_equal(t->freed, 1);
    check_balance(c);
}

/* Address 0 (only a broken or hostile agent sends it) is amap's empty-slot
 * key: a note must not tie such a block to a traceback it can never find
 * again, or the traceback stays live (and the map's count grows) forever. */
static void test_note_addr_zero(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2];
    frames_f(fr);
    (void)client_alloc(c, 0, T0 + 1, 10, 1); /* accepted or refused: both fine */
    note(c, 0, T0 + 1, 1, fr, 2, NULL);
    client_age(c, past_expiry(c, T0 + 1));
    free_ok(c, 0, past_expiry(c, T0 + 1) + 1);
    assert_int_equal(c->npytbs, 1);
    pytb_t *t = &c->pytbs[0];
    if (t->live_n != 0 || t->captures != t->live_n + t->freed || c->noted.used != 0)
        fail_msg("block at 0 freed, yet its traceback has live_n %llu, freed %llu, captures "
                 "%u; noted map holds %u (client.c client_note puts key 0 into amap)",
                 (unsigned long long)t->live_n, (unsigned long long)t->freed, t->captures,
                 c->noted.used);
}

/* ------------------------------------------------------------------ text and empty notes */

static void test_text_attaches_to_frames(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2];
    frames_f(fr);
    alloc_ok(c, A, T0 + 1, 10, 1);
    note(c, A, T0 + 1, 1, fr, 2, NULL);
    pytb_t *t = &c->pytbs[0];
    assert_null(t->text);
    const char *txt = "Traceback (most recent call last):\n  File \"x.py\", line 1\n";
    assert_ptr_equal(note(c, A, T0 + 1, 1, NULL, 0, txt), cstack_at(c, 1));
    assert_int_equal(c->npytbs, 1);
    t = &c->pytbs[0];
    assert_non_null(t->text);
    assert_string_equal(t->text, txt);
    assert_int_equal(t->captures, 1);
    assert_int_equal(t->live_n, 1);
    assert_int_equal(t->nframes, 2);
    assert_ptr_equal(tb_of(c, A), t);
    /* A second text keeps the first. */
    note(c, A, T0 + 1, 1, NULL, 0, "other text");
    assert_int_equal(c->npytbs, 1);
    assert_string_equal(c->pytbs[0].text, txt);
    check_balance(c);
}

static void test_text_only_note(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, A, T0 + 1, 10, 1);
    alloc_ok(c, B, T0 + 2, 20, 1);
    note(c, A, T0 + 1, 1, NULL, 0, "handler says hi");
    note(c, B, T0 + 2, 1, NULL, 0, "handler says hi");
    assert_int_equal(c->npytbs, 1);
    pytb_t *t = &c->pytbs[0];
    assert_int_equal(t->nframes, 0);
    assert_null(t->frames);
    assert_string_equal(t->text, "handler says hi");
    assert_int_equal(t->captures, 2);
    assert_int_equal(t->live_n, 2);
    assert_ptr_equal(tb_of(c, B), t);
    note(c, A, T0 + 1, 1, NULL, 0, "another text");
    /* The block already has its traceback: the new text is not a new one. */
    assert_int_equal(c->npytbs, 1);
    /* A text for a block that is gone. */
    note(c, D, T0 + 1, 1, NULL, 0, "late text");
    assert_int_equal(c->npytbs, 2);
    assert_int_equal(c->pytbs[1].freed, 1);
    assert_int_equal(c->pytbs[1].live_n, 0);
    check_balance(c);
}

static void test_text_truncated(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    size_t n = CLIENT_PYTB_TEXT_MAX + 100;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    alloc_ok(c, A, T0 + 1, 10, 1);
    note(c, A, T0 + 1, 1, NULL, 0, big);
    assert_int_equal(c->npytbs, 1);
    assert_int_equal(strlen(c->pytbs[0].text), CLIENT_PYTB_TEXT_MAX);
    /* Attached to a frames pytb: cut the same way. */
    pyframe_t fr[2];
    frames_f(fr);
    alloc_ok(c, B, T0 + 2, 10, 1);
    note(c, B, T0 + 2, 1, fr, 2, NULL);
    note(c, B, T0 + 2, 1, NULL, 0, big);
    pytb_t *t = tb_of(c, B);
    assert_non_null(t);
    assert_int_equal(strlen(t->text), CLIENT_PYTB_TEXT_MAX);
    free(big);
}

/* A firing with nothing to attach (not Python, GIL not held). */
static void test_empty_note_changes_nothing(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2];
    frames_f(fr);
    alloc_ok(c, A, T0 + 1, 10, 1);
    alloc_ok(c, B, T0 + 2, 20, 1);
    assert_ptr_equal(note(c, A, T0 + 1, 1, NULL, 0, NULL), cstack_at(c, 1));
    assert_ptr_equal(note(c, A, T0 + 1, 1, fr, 0, ""), cstack_at(c, 1));
    assert_int_equal(c->npytbs, 0);
    assert_null(tb_of(c, A));
    assert_int_equal(c->notes, 2);
    /* On a noted block: its pytb is unchanged. */
    note(c, B, T0 + 2, 1, fr, 2, NULL);
    pytb_t before = c->pytbs[0];
    note(c, B, T0 + 2, 1, NULL, 0, NULL);
    note(c, B, T0 + 2, 1, NULL, 0, "");
    note(c, D, T0 + 2, 1, NULL, 0, NULL);
    assert_int_equal(c->npytbs, 1);
    assert_memory_equal(&c->pytbs[0], &before, sizeof before);
    assert_int_equal(c->notes, 6);
}

static void test_unknown_stack(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2];
    frames_f(fr);
    alloc_ok(c, A, T0 + 1, 10, 1);
    assert_null(note(c, A, T0 + 1, 7, fr, 2, NULL));          /* slot never used */
    assert_null(note(c, A, T0 + 1, 1u << 19, fr, 2, NULL));   /* beyond the array */
    assert_null(note(c, A, T0 + 1, UINT32_MAX, fr, 2, "t"));
    assert_int_equal(c->npytbs, 0);
    assert_int_equal(c->notes, 3);
    assert_null(tb_of(c, A));
}

/* ------------------------------------------------------------------ end of the process */

static void test_freeze_clean_keeps_counts(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2], gr[2];
    frames_f(fr);
    frames_g(gr);
    alloc_ok(c, A, T0 + 1, 10, 1);
    alloc_ok(c, B, T0 + 2, 20, 1);
    alloc_ok(c, C, T0 + 3, 30, 1);
    note(c, A, T0 + 1, 1, fr, 2, NULL);
    note(c, B, T0 + 2, 1, fr, 2, NULL);
    note(c, C, T0 + 3, 1, gr, 2, "text");
    free_ok(c, B, T0 + 4);
    uint64_t end = past_expiry(c, T0 + 3);
    client_freeze(c, end, 1);
    assert_int_equal(c->atab_ok, 0);
    assert_int_equal(c->npytbs, 2);
    pytb_t *t = &c->pytbs[0], *u = &c->pytbs[1];
    assert_int_equal(t->captures, 2);
    assert_int_equal(t->live_n, 1);
    assert_int_equal(t->live_b, 10);
    assert_int_equal(t->freed, 1);
    assert_int_equal(t->exp_n, 1); /* aged to the end first */
    assert_int_equal(t->may_n, 1);
    assert_int_equal(u->live_n, 1);
    assert_int_equal(u->may_n, 1);
    assert_string_equal(u->text, "text");
    assert_int_equal(u->nframes, 2);
    /* Late notes after a clean exit count as freed, without a table. */
    note(c, A, T0 + 1, 1, fr, 2, NULL);
    assert_int_equal(t->captures, 3);
    assert_int_equal(t->live_n, 1);
    assert_int_equal(t->freed, 2);
}

static void test_freeze_lost_keeps_counts(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[2];
    frames_f(fr);
    alloc_ok(c, A, T0 + 1, 10, 1);
    note(c, A, T0 + 1, 1, fr, 2, NULL);
    client_freeze(c, T0 + 2, 0);
    assert_int_equal(c->atab_ok, 1);
    pytb_t *t = tb_of(c, A);
    assert_non_null(t);
    assert_int_equal(t->live_n, 1);
    assert_int_equal(t->exp_n, 0);
    client_revive(c);
    free_ok(c, A, T0 + 3);
    assert_int_equal(t->live_n, 0);
    assert_int_equal(t->freed, 1);
    check_balance(c);
}

/* At most CLIENT_MAX_PYTB distinct tracebacks; known ones still dedupe. */
static void test_pytb_bound(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    pyframe_t fr[1];
    set_frame(&fr[0], "/srv/app/gen.py", "f", 0);
    for (uint32_t i = 0; i < CLIENT_MAX_PYTB + 10; i++) {
        fr[0].line = i + 1;
        note(c, 0x10000 + 16ull * i, T0, 1, fr, 1, NULL); /* no live blocks: freed */
    }
    assert_int_equal(c->npytbs, CLIENT_MAX_PYTB);
    assert_int_equal(c->notes, CLIENT_MAX_PYTB + 10);
    /* Known: dedupes. */
    fr[0].line = 1;
    note(c, 0x10, T0, 1, fr, 1, NULL);
    assert_int_equal(c->pytbs[0].captures, 2);
    assert_int_equal(c->pytbs[0].freed, 2);
    /* New, on a live block: dropped, the block is not tied to anything. */
    alloc_ok(c, A, T0 + 1, 10, 1);
    fr[0].line = CLIENT_MAX_PYTB + 100;
    note(c, A, T0 + 1, 1, fr, 1, NULL);
    assert_int_equal(c->npytbs, CLIENT_MAX_PYTB);
    assert_null(tb_of(c, A));
    assert_int_equal(c->noted.used, 0);
    free_ok(c, A, T0 + 2);
    check_balance(c);
}

/* ------------------------------------------------------------------ leak queue */

static void test_leakq_first_expiry_once(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, A, T0 + 1, 10, 1);
    alloc_ok(c, B, T0 + 2, 20, 1);
    alloc_ok(c, C, T0 + 3, 30, 2);
    assert_int_equal(c->nleakq, 0);
    client_age(c, past_expiry(c, T0 + 3));
    /* Both stacks queued, each once, though stack 1 had two blocks expire. */
    assert_int_equal(c->nleakq, 2);
    int saw1 = 0, saw2 = 0;
    for (uint32_t i = 0; i < c->nleakq; i++) {
        saw1 += c->leakq[i] == 1;
        saw2 += c->leakq[i] == 2;
    }
    assert_int_equal(saw1, 1);
    assert_int_equal(saw2, 1);
    assert_int_equal(cstack_at(c, 1)->leak_seen, 1);
    assert_int_equal(cstack_at(c, 2)->leak_seen, 1);

    /* srv.c drains the queue; later expiries of those stacks do not refill it. */
    c->nleakq = 0;
    uint64_t t1 = past_expiry(c, T0 + 3) + E;
    alloc_ok(c, D, t1, 40, 1);
    free_ok(c, A, t1 + 1);
    client_age(c, past_expiry(c, t1));
    assert_int_equal(cstack_at(c, 1)->exp_n, 3);
    assert_int_equal(c->nleakq, 0);

    /* A stack expiring for the first time later is queued. */
    uint64_t pcs[1] = { 0x1234 };
    int err = 0;
    assert_non_null(client_define_stack(c, 3, 0xA3, 1, pcs, 1, 0, &err));
    uint64_t t2 = past_expiry(c, t1) + E;
    alloc_ok(c, A, t2, 8, 3);
    client_age(c, past_expiry(c, t2));
    assert_int_equal(c->nleakq, 1);
    assert_int_equal(c->leakq[0], 3);
}

/* A block freed before it expires never queues its stack. */
static void test_leakq_not_for_freed(void **state)
{
    fix_t *f = *state;
    client_t *c = f->c;
    alloc_ok(c, A, T0 + 1, 10, 1);
    free_ok(c, A, T0 + E / 2);
    client_age(c, past_expiry(c, T0 + E));
    assert_int_equal(c->nleakq, 0);
    assert_int_equal(cstack_at(c, 1)->leak_seen, 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_same_frames_dedupe),
        T(test_different_frames_separate),
        T(test_dedupe_ignores_padding),
        T(test_note_ts_mismatch_counts_freed),
        T(test_free_noted_block),
        T(test_reuse_frees_noted_block),
        T(test_aging_noted_blocks),
        T(test_note_after_expiry),
        T(test_note_addr_zero),
        T(test_text_attaches_to_frames),
        T(test_text_only_note),
        T(test_text_truncated),
        T(test_empty_note_changes_nothing),
        T(test_unknown_stack),
        T(test_freeze_clean_keeps_counts),
        T(test_freeze_lost_keeps_counts),
        T(test_pytb_bound),
        T(test_leakq_first_expiry_once),
        T(test_leakq_not_for_freed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
