/* Unit tests of trigger rules: validation, ids, and which stacks a rule matches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/collectord/client.h"
#include "collector/collectord/sym.h"
#include "collector/collectord/trig.h"

#define SEC 1000000000ull
#define T0 (100 * SEC)
#define PID 4242
#define OTHER_PID 4343

/* Stack ids of the fixture's stacks. */
#define SID_DEEP 0xA000000000000001ull    /* symbolized: malloc <- make_widget <- main */
#define SID_MIXED 0xA000000000000002ull   /* symbolized: a stripped library frame inside */
#define SID_RAW 0xA000000000000003ull     /* not symbolized */

/* Two clients (PID and OTHER_PID) with the same stacks; the rule set under test. */
typedef struct fix_s {
    clients_t cs;
    client_t *c;          /* PID */
    client_t *o;          /* OTHER_PID */
    trig_t t;
    char err[256];
} fix_t;

/* One report frame: function NULL for a stripped frame, module NULL for a
 * pc in no known module. */
typedef struct fr_s {
    const char *function;
    const char *module;
} fr_t;

/* A symbolizer result as sym.c hands it over (malloc'd; the stack owns it). */
static symres_t *mk_sym(const fr_t *frs, uint32_t n)
{
    symres_t *r = calloc(1, sizeof *r + n * sizeof r->f[0]);
    assert_non_null(r);
    r->n = n;
    for (uint32_t i = 0; i < n; i++) {
        r->f[i].addr = 0x555555555000ull + 0x10 * i;
        r->f[i].function = sym_intern(frs[i].function);
        r->f[i].module = sym_intern(frs[i].module);
    }
    return r;
}

static cstack_t *def_stack(client_t *c, uint32_t index, uint64_t id, uint32_t npcs)
{
    uint64_t pcs[8];
    assert_true(npcs <= 8);
    for (uint32_t i = 0; i < npcs; i++)
        pcs[i] = 0x555555555000ull + 0x10 * i;
    int err = 0;
    cstack_t *s = client_define_stack(c, index, id, 1, pcs, npcs, 0, &err);
    assert_non_null(s);
    return s;
}

static void set_sym(cstack_t *s, const fr_t *frs, uint32_t n)
{
    sym_release(s->sym);
    s->sym = mk_sym(frs, n);
    s->sym_state = SYM_DONE;
}

static const fr_t DEEP[] = {
    { "malloc", "/usr/lib/x86_64-linux-gnu/libc.so.6" },
    { "make_widget", "/usr/bin/demo" },
    { "main", "/usr/bin/demo" },
};

static const fr_t MIXED[] = {
    { "malloc", "/usr/lib/x86_64-linux-gnu/libc.so.6" },
    { NULL, "/opt/vendor/libblob.so.2" },   /* stripped */
    { "cache_fill", "/usr/lib/libcache.so.1" },
    { NULL, NULL },                         /* in no known module */
};

/* Gives client c stacks 0 (DEEP), 1 (MIXED) and 2 (not symbolized). */
static void populate(client_t *c)
{
    set_sym(def_stack(c, 0, SID_DEEP, 3), DEEP, 3);
    set_sym(def_stack(c, 1, SID_MIXED, 4), MIXED, 4);
    def_stack(c, 2, SID_RAW, 5);
}

static int setup(void **state)
{
    fix_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->c = client_new(&f->cs, PID, SEC, T0);
    f->o = client_new(&f->cs, OTHER_PID, SEC, T0);
    if (!f->c || !f->o)
        return -1;
    populate(f->c);
    populate(f->o);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fix_t *f = *state;
    trig_free(&f->t);
    while (f->cs.head) {
        client_t *c = f->cs.head;
        f->cs.head = c->next;
        client_destroy(c);
    }
    free(f);
    return 0;
}

/* Fault injection: the strdup_fail_at-th strdup call from now on fails
 * (0: none). trig.c copies its patterns with strdup; defined here, this one
 * replaces libc's (and ASan's interceptor) in the whole test program. */
static int strdup_fail_at;

char *strdup(const char *s)
{
    if (strdup_fail_at && --strdup_fail_at == 0) {
        errno = ENOMEM;
        return NULL;
    }
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* trig_add with the arguments that matter here; returns what it returns. */
static int add(fix_t *f, const char *match, const char *module, uint64_t stack_id, int frame,
               uint32_t min_depth, uint32_t pid)
{
    f->err[0] = '\0';
    return trig_add(&f->t, match, module, stack_id, frame, min_depth, pid, 0, 0, f->err,
                    sizeof f->err);
}

static int add_ok(fix_t *f, const char *match, const char *module, uint64_t stack_id, int frame,
                  uint32_t min_depth, uint32_t pid)
{
    int id = add(f, match, module, stack_id, frame, min_depth, pid);
    if (id <= 0)
        fail_msg("trig_add failed: %d (%s)", id, f->err);
    return id;
}

/* The id of the rule matching client c's stack index, 0 if none. */
static uint32_t matched(fix_t *f, client_t *c, uint32_t index)
{
    assert_true(index < c->stacks_cap && cstack_at(c, index));
    trig_rule_t *r = trig_match(&f->t, c, cstack_at(c, index));
    return r ? r->id : 0;
}

/* ------------------------------------------------------------------ adding and removing */

static void test_add_needs_a_selector(void **state)
{
    fix_t *f = *state;
    assert_int_equal(add(f, NULL, NULL, 0, -1, 0, 0), -EINVAL);
    assert_non_null(strstr(f->err, "--match"));
    /* Empty strings count as absent. */
    assert_int_equal(add(f, "", "", 0, -1, 0, PID), -EINVAL);
    assert_int_equal(f->t.n, 0);
    assert_null(f->t.rules);
}

static void test_add_stack_needs_pid(void **state)
{
    fix_t *f = *state;
    assert_int_equal(add(f, NULL, NULL, SID_DEEP, -1, 0, 0), -EINVAL);
    assert_non_null(strstr(f->err, "--pid"));
    assert_int_equal(f->t.n, 0);
    int id = add_ok(f, NULL, NULL, SID_DEEP, -1, 0, PID);
    trig_rule_t *r = trig_get(&f->t, (uint32_t)id);
    assert_non_null(r);
    assert_int_equal(r->stack_id, SID_DEEP);
    assert_int_equal(r->pid, PID);
    assert_null(r->match);
    assert_null(r->module);
}

static void test_add_bad_regex(void **state)
{
    fix_t *f = *state;
    assert_int_equal(add(f, "make_(widget", NULL, 0, -1, 0, 0), -EINVAL);
    assert_non_null(strstr(f->err, "make_(widget"));
    assert_non_null(strstr(f->err, "--match"));
    assert_int_equal(add(f, NULL, "lib[a-", 0, -1, 0, 0), -EINVAL);
    assert_non_null(strstr(f->err, "lib[a-"));
    assert_non_null(strstr(f->err, "--module"));
    /* A good --match with a bad --module: nothing is added (nor leaked). */
    assert_int_equal(add(f, "^make_", "*bad", 0, -1, 0, 0), -EINVAL);
    assert_non_null(strstr(f->err, "*bad"));
    assert_int_equal(f->t.n, 0);
    assert_null(f->t.rules);
    /* Failures do not use up ids. */
    assert_int_equal(add_ok(f, "^make_", NULL, 0, -1, 0, 0), 1);
}

/* Out of memory copying a pattern: -ENOMEM as the header promises, and
 * the compiled regex is released (LeakSanitizer sees it otherwise). */
static void test_add_oom_copying_pattern(void **state)
{
    fix_t *f = *state;
    strdup_fail_at = 1; /* the --match copy */
    int rc = add(f, "^make_", NULL, 0, -1, 0, 0);
    strdup_fail_at = 0;
    assert_int_equal(f->t.n, 0);
    assert_null(f->t.rules);
    strdup_fail_at = 2; /* the --module copy, after --match's */
    int rc2 = add(f, "^make_", "libc", 0, -1, 0, 0);
    strdup_fail_at = 0;
    assert_int_equal(f->t.n, 0);
    assert_null(f->t.rules);
    if (rc != -ENOMEM || rc2 != -ENOMEM)
        fail_msg("trig_add returned %d (--match copy) and %d (--module copy) on a failed "
                 "strdup, not -ENOMEM (%d)", rc, rc2, -ENOMEM);
    /* Still usable afterwards. */
    assert_int_equal(add_ok(f, "^make_", "libc", 0, -1, 0, 0), 1);
}

static void test_add_signals(void **state)
{
    fix_t *f = *state;
    char *e = f->err;
    size_t el = sizeof f->err;
    assert_int_equal(trig_add(&f->t, "x", NULL, 0, -1, 0, 0, SIGKILL, 0, e, el), -EINVAL);
    assert_int_equal(trig_add(&f->t, "x", NULL, 0, -1, 0, 0, SIGSTOP, 0, e, el), -EINVAL);
    assert_int_equal(trig_add(&f->t, "x", NULL, 0, -1, 0, 0, -1, 0, e, el), -EINVAL);
    assert_int_equal(trig_add(&f->t, "x", NULL, 0, -1, 0, 0, 65, 0, e, el), -EINVAL);
    assert_int_equal(f->t.n, 0);
    int a = trig_add(&f->t, "x", NULL, 0, -1, 0, 0, SIGUSR1, 0, e, el);
    int b = trig_add(&f->t, "x", NULL, 0, -1, 0, 0, 0, 7, e, el);
    int c = trig_add(&f->t, "x", NULL, 0, -1, 0, 0, 64, 1, e, el);
    assert_true(a > 0 && b > 0 && c > 0);
    assert_int_equal(trig_get(&f->t, (uint32_t)a)->sig, SIGUSR1);
    assert_int_equal(trig_get(&f->t, (uint32_t)a)->count, TRIG_COUNT_DEFAULT); /* 0: default */
    assert_int_equal(trig_get(&f->t, (uint32_t)b)->sig, 0);
    assert_int_equal(trig_get(&f->t, (uint32_t)b)->count, 7);
    assert_int_equal(trig_get(&f->t, (uint32_t)c)->sig, 64);
}

static void test_ids_get_rm(void **state)
{
    fix_t *f = *state;
    int a = add_ok(f, "a", NULL, 0, -1, 0, 0);
    int b = add_ok(f, NULL, "b", 0, 2, 3, PID);
    int c = add_ok(f, "c", "d", 0, -1, 0, 0);
    assert_int_equal(a, 1);
    assert_int_equal(b, 2);
    assert_int_equal(c, 3);
    assert_int_equal(f->t.n, 3);

    trig_rule_t *r = trig_get(&f->t, 2);
    assert_non_null(r);
    assert_null(r->match);
    assert_string_equal(r->module, "b");
    assert_int_equal(r->frame, 2);
    assert_int_equal(r->min_depth, 3);
    assert_int_equal(r->pid, PID);
    assert_null(trig_get(&f->t, 0));
    assert_null(trig_get(&f->t, 4));

    assert_int_equal(trig_rm(&f->t, 2), 0);
    assert_int_equal(trig_rm(&f->t, 2), -ENOENT);
    assert_int_equal(trig_rm(&f->t, 99), -ENOENT);
    assert_null(trig_get(&f->t, 2));
    assert_int_equal(f->t.n, 2);
    /* Ids are never reused. */
    assert_int_equal(add_ok(f, "e", NULL, 0, -1, 0, 0), 4);
    /* Creation order is kept: 1, 3, 4. */
    uint32_t order[3], k = 0;
    for (trig_rule_t *x = f->t.rules; x; x = x->next)
        order[k++] = x->id;
    assert_int_equal(k, 3);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 3);
    assert_int_equal(order[2], 4);
    assert_int_equal(trig_rm(&f->t, 1), 0); /* the head */
    assert_int_equal(trig_rm(&f->t, 4), 0); /* the tail */
    assert_int_equal(f->t.rules->id, 3);
    assert_null(f->t.rules->next);
}

static void test_rules_max(void **state)
{
    fix_t *f = *state;
    for (int i = 0; i < TRIG_RULES_MAX; i++)
        assert_int_equal(add_ok(f, "x", NULL, 0, -1, 0, 0), i + 1);
    assert_int_equal(f->t.n, TRIG_RULES_MAX);
    assert_int_equal(add(f, "x", NULL, 0, -1, 0, 0), -ENOSPC);
    assert_true(f->err[0] != '\0');
    assert_int_equal(f->t.n, TRIG_RULES_MAX);
    assert_int_equal(trig_rm(&f->t, 100), 0);
    assert_int_equal(add_ok(f, "x", NULL, 0, -1, 0, 0), TRIG_RULES_MAX + 1);
    assert_int_equal(add(f, "x", NULL, 0, -1, 0, 0), -ENOSPC);
}

static void test_needs_symbols(void **state)
{
    fix_t *f = *state;
    assert_int_equal(trig_needs_symbols(&f->t), 0);
    add_ok(f, NULL, NULL, SID_RAW, -1, 0, PID);
    assert_int_equal(trig_needs_symbols(&f->t), 0);
    int m = add_ok(f, "x", NULL, 0, -1, 0, 0);
    assert_int_equal(trig_needs_symbols(&f->t), 1);
    assert_int_equal(trig_rm(&f->t, (uint32_t)m), 0);
    assert_int_equal(trig_needs_symbols(&f->t), 0);
    add_ok(f, NULL, "libc", 0, -1, 0, 0);
    assert_int_equal(trig_needs_symbols(&f->t), 1);
    trig_free(&f->t);
    assert_int_equal(f->t.n, 0);
    assert_int_equal(trig_needs_symbols(&f->t), 0);
}

/* ------------------------------------------------------------------ matching */

static void test_match_function_regex(void **state)
{
    fix_t *f = *state;
    assert_int_equal(matched(f, f->c, 0), 0); /* no rules */
    int none = add_ok(f, "^nothing_here$", NULL, 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 0), 0);
    assert_int_equal(trig_rm(&f->t, (uint32_t)none), 0);

    int r = add_ok(f, "^make_", NULL, 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 0), r);
    assert_int_equal(matched(f, f->c, 1), 0);
    /* Extended syntax, unanchored search. */
    trig_free(&f->t);
    r = add_ok(f, "widget|cache_(fill|drop)", NULL, 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 0), r);
    assert_int_equal(matched(f, f->c, 1), r);
    /* Function names only: a module path does not satisfy --match. */
    trig_free(&f->t);
    add_ok(f, "libblob", NULL, 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 1), 0);
}

static void test_match_module_regex(void **state)
{
    fix_t *f = *state;
    /* The stripped frame (no function) still has a module to match. */
    int r = add_ok(f, NULL, "/libblob\\.so", 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 1), r);
    assert_int_equal(matched(f, f->c, 0), 0);
    trig_free(&f->t);
    r = add_ok(f, NULL, "^/usr/bin/demo$", 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 0), r);
    assert_int_equal(matched(f, f->c, 1), 0);
    /* A frame in no known module matches no module regex, not even ".*". */
    trig_free(&f->t);
    r = add_ok(f, NULL, ".*", 0, 3, 0, 0);
    assert_int_equal(matched(f, f->c, 1), 0);
    /* --match never matches a stripped frame, even with ".*". */
    trig_free(&f->t);
    add_ok(f, ".*", NULL, 0, 1, 0, 0);
    assert_int_equal(matched(f, f->c, 1), 0);
}

/* --match and --module must hold on one frame. */
static void test_match_and_module_same_frame(void **state)
{
    fix_t *f = *state;
    /* make_widget is in demo, malloc in libc: no frame has both. */
    add_ok(f, "^make_widget$", "libc\\.so", 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 0), 0);
    add_ok(f, "^malloc$", "/usr/bin/demo", 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 0), 0);
    int r = add_ok(f, "^make_widget$", "/usr/bin/demo", 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 0), r);
    /* The stripped frame has the module but no function. */
    add_ok(f, ".", "libblob", 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 1), 0);
    int r2 = add_ok(f, "^cache_fill$", "libcache", 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 1), r2);
}

/* --frame N: the match must be at index N, innermost = 0. */
static void test_frame_pins_index(void **state)
{
    fix_t *f = *state;
    int r0 = add_ok(f, "^malloc$", NULL, 0, 0, 0, 0);
    assert_int_equal(matched(f, f->c, 0), r0);
    trig_free(&f->t);
    add_ok(f, "^malloc$", NULL, 0, 1, 0, 0);
    assert_int_equal(matched(f, f->c, 0), 0);
    trig_free(&f->t);
    int r1 = add_ok(f, "^make_widget$", NULL, 0, 1, 0, 0);
    assert_int_equal(matched(f, f->c, 0), r1);
    trig_free(&f->t);
    add_ok(f, "^make_widget$", NULL, 0, 0, 0, 0);
    add_ok(f, "^make_widget$", NULL, 0, 2, 0, 0);
    assert_int_equal(matched(f, f->c, 0), 0);
    trig_free(&f->t);
    int r2 = add_ok(f, "^main$", NULL, 0, 2, 0, 0);
    assert_int_equal(matched(f, f->c, 0), r2); /* the outermost frame */
    /* Out of range: never matches, whatever the regex. */
    trig_free(&f->t);
    add_ok(f, ".", NULL, 0, 3, 0, 0);
    add_ok(f, ".", NULL, 0, 1000, 0, 0);
    add_ok(f, NULL, ".", 0, 3, 0, 0);
    assert_int_equal(matched(f, f->c, 0), 0);
    /* A module pinned to a frame. */
    trig_free(&f->t);
    int rm = add_ok(f, NULL, "libblob", 0, 1, 0, 0);
    assert_int_equal(matched(f, f->c, 1), rm);
    trig_free(&f->t);
    add_ok(f, NULL, "libblob", 0, 2, 0, 0);
    assert_int_equal(matched(f, f->c, 1), 0);
}

static void test_min_depth(void **state)
{
    fix_t *f = *state;
    int r = add_ok(f, "^main$", NULL, 0, -1, 3, 0);
    assert_int_equal(matched(f, f->c, 0), r); /* exactly 3 frames */
    trig_free(&f->t);
    add_ok(f, "^main$", NULL, 0, -1, 4, 0);
    assert_int_equal(matched(f, f->c, 0), 0);
    trig_free(&f->t);
    int r4 = add_ok(f, "^malloc$", NULL, 0, -1, 4, 0);
    assert_int_equal(matched(f, f->c, 1), r4); /* MIXED has 4 */
    assert_int_equal(matched(f, f->c, 0), 0);
    /* A stack-id rule counts the captured pcs (no symbols needed). */
    trig_free(&f->t);
    int rs = add_ok(f, NULL, NULL, SID_RAW, -1, 5, PID);
    assert_int_equal(matched(f, f->c, 2), rs);
    trig_free(&f->t);
    add_ok(f, NULL, NULL, SID_RAW, -1, 6, PID);
    assert_int_equal(matched(f, f->c, 2), 0);
}

static void test_pid_filter(void **state)
{
    fix_t *f = *state;
    int r = add_ok(f, "^make_widget$", NULL, 0, -1, 0, PID);
    assert_int_equal(matched(f, f->c, 0), r);
    assert_int_equal(matched(f, f->o, 0), 0);
    int any = add_ok(f, "^make_widget$", NULL, 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 0), r);
    assert_int_equal(matched(f, f->o, 0), any);
    assert_int_equal(trig_rm(&f->t, (uint32_t)r), 0);
    assert_int_equal(matched(f, f->c, 0), any);
}

/* A stack-id rule matches that stack of that pid, symbolized or not. */
static void test_stack_id_rule(void **state)
{
    fix_t *f = *state;
    int r = add_ok(f, NULL, NULL, SID_RAW, -1, 0, PID);
    assert_int_equal(cstack_at(f->c, 2)->sym_state, SYM_NONE);
    assert_int_equal(matched(f, f->c, 2), r);
    assert_int_equal(matched(f, f->c, 0), 0);
    assert_int_equal(matched(f, f->c, 1), 0);
    /* The same fingerprint in another process is another stack. */
    assert_int_equal(matched(f, f->o, 2), 0);
    int r2 = add_ok(f, NULL, NULL, SID_DEEP, -1, 0, OTHER_PID);
    assert_int_equal(matched(f, f->o, 0), r2);
    assert_int_equal(matched(f, f->c, 0), 0);
    /* Pending symbolization changes nothing for it. */
    cstack_at(f->c, 2)->sym_state = SYM_PENDING;
    assert_int_equal(matched(f, f->c, 2), r);
    /* With a name too, both must hold (and the name needs symbols). */
    trig_free(&f->t);
    add_ok(f, "^main$", NULL, SID_RAW, -1, 0, PID);
    assert_int_equal(matched(f, f->c, 2), 0);
    int r3 = add_ok(f, "^main$", NULL, SID_DEEP, -1, 0, PID);
    assert_int_equal(matched(f, f->c, 0), r3);
    assert_int_equal(matched(f, f->c, 1), 0);
}

static void test_first_rule_wins(void **state)
{
    fix_t *f = *state;
    int a = add_ok(f, "^zzz$", NULL, 0, -1, 0, 0);     /* matches nothing */
    int b = add_ok(f, "^make_widget$", NULL, 0, -1, 0, 0);
    int c = add_ok(f, ".", NULL, 0, -1, 0, 0);          /* matches every symbolized stack */
    assert_true(a > 0);
    assert_int_equal(matched(f, f->c, 0), b);
    assert_int_equal(matched(f, f->c, 1), c);
    /* A later, narrower rule does not take over. */
    add_ok(f, "^make_widget$", "/usr/bin/demo", 0, 1, 3, PID);
    assert_int_equal(matched(f, f->c, 0), b);
    assert_int_equal(trig_rm(&f->t, (uint32_t)b), 0);
    assert_int_equal(matched(f, f->c, 0), c);
}

/* Name rules need symbols: a stack not (yet) symbolized does not match. */
static void test_unsymbolized_no_name_match(void **state)
{
    fix_t *f = *state;
    add_ok(f, ".", NULL, 0, -1, 0, 0);
    add_ok(f, NULL, ".", 0, -1, 0, 0);
    add_ok(f, ".*", ".*", 0, -1, 0, 0);
    assert_int_equal(matched(f, f->c, 2), 0);
    cstack_at(f->c, 2)->sym_state = SYM_PENDING;
    assert_int_equal(matched(f, f->c, 2), 0);
    /* Results not yet published (state not DONE) are not used. */
    cstack_t *s0 = cstack_at(f->c, 0);
    s0->sym_state = SYM_PENDING;
    assert_int_equal(matched(f, f->c, 0), 0);
    s0->sym_state = SYM_DONE;
    assert_int_not_equal(matched(f, f->c, 0), 0);
    /* Symbolized to zero frames, or DONE without a result: no match, no crash. */
    set_sym(cstack_at(f->c, 2), NULL, 0);
    assert_int_equal(matched(f, f->c, 2), 0);
    sym_release(s0->sym);
    s0->sym = NULL;
    assert_int_equal(matched(f, f->c, 0), 0);
}

/* A stack-id rule still matches after a redefinition of the index with the
 * same id (a reconnect resends it), and not after one with another id. */
static void test_stack_redefined(void **state)
{
    fix_t *f = *state;
    int r = add_ok(f, NULL, NULL, SID_DEEP, -1, 0, PID);
    assert_int_equal(matched(f, f->c, 0), r);
    def_stack(f->c, 0, SID_DEEP, 3);
    assert_int_equal(matched(f, f->c, 0), r);
    assert_int_equal(cstack_at(f->c, 0)->sym_state, SYM_DONE); /* kept */
    def_stack(f->c, 0, 0xB000000000000009ull, 3);
    assert_int_equal(matched(f, f->c, 0), 0);
    assert_null(cstack_at(f->c, 0)->sym);                      /* released */
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_add_needs_a_selector),
        T(test_add_stack_needs_pid),
        T(test_add_bad_regex),
        T(test_add_oom_copying_pattern),
        T(test_add_signals),
        T(test_ids_get_rm),
        T(test_rules_max),
        T(test_needs_symbols),
        T(test_match_function_regex),
        T(test_match_module_regex),
        T(test_match_and_module_same_frame),
        T(test_frame_pins_index),
        T(test_min_depth),
        T(test_pid_filter),
        T(test_stack_id_rule),
        T(test_first_rule_wins),
        T(test_unsymbolized_no_name_match),
        T(test_stack_redefined),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
