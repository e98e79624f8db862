/* Unit tests of stack capture: the agent's own frames are cut, caller frames kept, depth honoured.
 *
 * unwind_init marks as "self" the object that contains unwind_init. The unit
 * build links unwind.c statically, so here "self" is this whole test
 * executable, not a libstackagent.so: unwind_capture drops every leading frame
 * of this executable. To see frames of our own functions in a capture, the
 * tests call unwind_capture from a qsort comparator: qsort's frames (libc)
 * stop the skipping, and the frames below them — our call chain — are kept as
 * a caller's frames would be. */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/config.h"
#include "agent/unwind.h"

#define NOINLINE __attribute__((noinline))

/* Keeps a call from becoming a tail call (the frame we assert would vanish). */
static volatile int sink;

static int group_setup(void **state)
{
    (void)state;
    return unwind_init(UNWIND_DWARF, NULL);
}

/* What the comparator captured, and with which depth. */
static struct {
    int depth;          /* requested */
    int n;              /* returned */
    int truncated;      /* returned */
    int calls;          /* captures done (only the first is kept) */
    uint64_t pcs[CFG_DEPTH_MAX];
} cap;

static int cmp_capture(const void *a, const void *b)
{
    if (cap.calls++ == 0)
        cap.n = unwind_capture(cap.pcs, cap.depth, &cap.truncated);
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

/* Return addresses as each level of the chain sees its own: ra_into_X lies
 * inside X, right after its call to the next level. */
static uint64_t ra_into_chain2, ra_into_chain1, ra_into_capture;

static NOINLINE void chain3(void)
{
    ra_into_chain2 = (uint64_t)(uintptr_t)__builtin_return_address(0);
    int v[2] = { 2, 1 };
    qsort(v, 2, sizeof v[0], cmp_capture);
    sink += v[0];
}

static NOINLINE void chain2(void)
{
    ra_into_chain1 = (uint64_t)(uintptr_t)__builtin_return_address(0);
    chain3();
    sink++;
}

static NOINLINE void chain1(void)
{
    ra_into_capture = (uint64_t)(uintptr_t)__builtin_return_address(0);
    chain2();
    sink++;
}

/* capture_via_qsort -> chain1 -> chain2 -> chain3 -> qsort (libc) ->
 * cmp_capture -> unwind_capture. */
static NOINLINE void capture_via_qsort(int depth)
{
    memset(&cap, 0, sizeof cap);
    cap.depth = depth;
    chain1();
    sink++;
}

static int in_object_named(uint64_t pc, const char *needle)
{
    Dl_info info;
    if (!dladdr((void *)(uintptr_t)pc, &info) || !info.dli_fname)
        return 0;
    return strstr(info.dli_fname, needle) != NULL;
}

/* ------------------------------------------------------------------ self range */

static void test_self_range(void **state)
{
    (void)state;
    assert_true(unwind_is_self((uint64_t)(uintptr_t)&unwind_init));
    assert_true(unwind_is_self((uint64_t)(uintptr_t)&test_self_range)); /* same executable */
    assert_false(unwind_is_self((uint64_t)(uintptr_t)dlsym(RTLD_DEFAULT, "qsort")));
    assert_false(unwind_is_self(0));
    assert_false(unwind_is_self(~(uint64_t)0));
    int local = 0;
    assert_false(unwind_is_self((uint64_t)(uintptr_t)&local));
}

/* ------------------------------------------------------------------ captures */

/* Called directly, every leading frame is "self" (this executable) and cut:
 * the first frame kept is the test's caller, inside libcmocka. */
static void test_direct_capture_skips_self(void **state)
{
    (void)state;
    uint64_t pcs[CFG_DEPTH_MAX];
    int truncated = -1;
    int n = unwind_capture(pcs, CFG_DEPTH_MAX, &truncated);
    sink++;
    assert_true(n >= 1);
    assert_true(n < CFG_DEPTH_MAX);
    assert_int_equal(truncated, 0);
    assert_false(unwind_is_self(pcs[0]));
    assert_true(in_object_named(pcs[0], "cmocka"));
}

/* Called from below libc, our own functions are kept, innermost first. */
static void test_chain_frames_kept(void **state)
{
    (void)state;
    capture_via_qsort(CFG_DEPTH_MAX);
    assert_true(cap.calls >= 1);
    assert_true(cap.n >= 4);
    assert_int_equal(cap.truncated, 0);
    /* The comparator and unwind_capture (self) are gone: qsort comes first
     * (libc's, or the sanitizer runtime's interceptor in ASan builds). */
    assert_false(unwind_is_self(cap.pcs[0]));
    assert_true(in_object_named(cap.pcs[0], "libc.so") || in_object_named(cap.pcs[0], "san"));

    /* libc frames, then ours, innermost first: the return address into
     * chain3 (after its qsort call), then the ones chain3, chain2 and chain1
     * saw as their own return addresses. */
    int k = 0;
    while (k < cap.n && !unwind_is_self(cap.pcs[k]))
        k++;
    for (int i = 0; i < k; i++)
        assert_true(in_object_named(cap.pcs[i], "libc.so") || in_object_named(cap.pcs[i], "san"));
    assert_true(k + 3 < cap.n);
    assert_true(cap.pcs[k] > (uint64_t)(uintptr_t)&chain3);
    assert_true(cap.pcs[k] != ra_into_chain2);
    assert_int_equal(cap.pcs[k + 1], ra_into_chain2);
    assert_int_equal(cap.pcs[k + 2], ra_into_chain1);
    assert_int_equal(cap.pcs[k + 3], ra_into_capture);
    /* Every kept frame is a plausible code address. */
    for (int i = 0; i < cap.n; i++)
        assert_true(cap.pcs[i] > 4096);
}

static NOINLINE int recurse(int n, int depth)
{
    if (n == 0) {
        capture_via_qsort(depth);
        return 0;
    }
    int r = recurse(n - 1, depth);
    sink += r;
    return r + 1;
}

static void test_depth_limit_and_truncation(void **state)
{
    (void)state;
    /* 60 frames of ours under qsort: any small depth is cut and flagged. */
    static const int depths[] = { 1, 2, 8, 16, 32 };
    for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
        recurse(60, depths[i]);
        assert_int_equal(cap.n, depths[i]);
        assert_int_equal(cap.truncated, 1);
        assert_false(unwind_is_self(cap.pcs[0]));
    }
    /* Deep enough for the whole stack: not truncated, fewer than asked. */
    recurse(10, CFG_DEPTH_MAX);
    assert_true(cap.n > 10);
    assert_true(cap.n < CFG_DEPTH_MAX);
    assert_int_equal(cap.truncated, 0);

    /* Deeper than the maximum: truncated at CFG_DEPTH_MAX. */
    recurse(200, CFG_DEPTH_MAX);
    assert_int_equal(cap.n, CFG_DEPTH_MAX);
    assert_int_equal(cap.truncated, 1);
}

/* The same call site captured twice gives the same pcs: interning relies on
 * it. Compared up to the return address into capture_via_qsort, which is one
 * call site by construction (the two calls from here may be two sites). */
static void test_repeatable(void **state)
{
    (void)state;
    capture_via_qsort(16);
    uint64_t first[CFG_DEPTH_MAX];
    int n1 = cap.n;
    memcpy(first, cap.pcs, sizeof first);
    capture_via_qsort(16);
    assert_int_equal(cap.n, n1);
    int k = 0;
    while (k < cap.n && cap.pcs[k] != ra_into_capture)
        k++;
    assert_true(k < cap.n);
    assert_memory_equal(cap.pcs, first, (size_t)(k + 1) * sizeof first[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self_range),
        cmocka_unit_test(test_direct_capture_skips_self),
        cmocka_unit_test(test_chain_frames_kept),
        cmocka_unit_test(test_depth_limit_and_truncation),
        cmocka_unit_test(test_repeatable),
    };
    return cmocka_run_group_tests_name("agent_unwind", tests, group_setup, NULL);
}
