/* Unit tests of attach mode's GOT patching: entries of loaded modules redirected (lazy GOT and RELRO), restored, re-patched. */
#include <dlfcn.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/got.h"

static void *(*real_malloc)(size_t);
static unsigned long counted;

static void *counting_malloc(size_t n)
{
    counted++;
    return real_malloc(n);
}

static void *lib;
static void *(*dl_leak)(size_t);

/* build/progs/libdlleak.so, next to this test's build (or the plain build's
 * for sanitizer builds, whose tree has no test programs). */
static int setup(void **state)
{
    (void)state;
    char self[PATH_MAX], path[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    const char *tries[] = { "%s/../progs/libdlleak.so", "%s/../../progs/libdlleak.so" };
    for (int i = 0; i < 2 && !lib; i++) {
        snprintf(path, sizeof path, tries[i], self);
        lib = dlopen(path, RTLD_NOW);
    }
    if (!lib) {
        print_error("libdlleak.so not found next to %s (make progs)\n", self);
        return -1;
    }
    dl_leak = (void *(*)(size_t))dlsym(lib, "dl_leak");
    assert_non_null(dl_leak);
    return 0;
}

static got_target_t tg[1];

#ifdef __SANITIZE_ADDRESS__
#define LIBC_STRDUP_MALLOCS 0
#else
#define LIBC_STRDUP_MALLOCS 1
#endif

/* libc's strdup, called through a pointer: the compiler turns a direct call
 * on a literal into malloc + memcpy of its own. */
static char *(*volatile libc_strdup)(const char *) = strdup;

/* Whatever a failed test left patched goes back. */
static int unpatch(void **state)
{
    (void)state;
    got_restore();
    return 0;
}

static void test_patch_restore(void **state)
{
    (void)state;
    int imported = 0;
    uint64_t def = got_definition("malloc", (uint64_t)(uintptr_t)dlsym(RTLD_DEFAULT, "malloc"),
                                  &imported);
    assert_true(def != 0);
    real_malloc = (void *(*)(size_t))(uintptr_t)def;
    tg[0] = (got_target_t){ "malloc", (uint64_t)(uintptr_t)counting_malloc, def };
    assert_int_equal(got_init(tg, 1), 0);
    free(dl_leak(8)); /* binds the lazy entry before */
    unsigned long before = counted;
    free(dl_leak(8));
    assert_int_equal(counted, before); /* not patched yet */
    int n = got_patch();
    /* libdlleak's entry, libc's own (RELRO, GLOB_DAT), and the others'. */
    assert_true(n >= 2);
    assert_int_equal(got_entries(), (uint32_t)n);
    assert_true(got_modules() >= 2);
    before = counted;
    void *p = dl_leak(8);
    assert_int_equal(counted, before + 1);
    free(p);
    /* libc's calls to malloc go through its GOT too (strdup): the RELRO page
     * was made writable for the write. (ASan intercepts strdup itself.) */
    before = counted;
    char *s = libc_strdup("through libc's GOT");
    assert_int_equal(counted, before + LIBC_STRDUP_MALLOCS);
    free(s);
    /* A second pass changes nothing. */
    got_refresh();
    assert_int_equal(got_entries(), (uint32_t)n);
    assert_int_equal(got_restore(), n);
    assert_int_equal(got_entries(), 0);
    before = counted;
    free(dl_leak(8));
    free(libc_strdup("x"));
    assert_int_equal(counted, before);
    /* Patching again after a restore works the same. */
    assert_int_equal(got_patch(), n);
    before = counted;
    free(dl_leak(8));
    assert_int_equal(counted, before + 1);
    assert_int_equal(got_restore(), n);
    /* Not patching: refresh does nothing. */
    got_refresh();
    assert_int_equal(got_entries(), 0);
    before = counted;
    free(dl_leak(8));
    assert_int_equal(counted, before);
}

/* An entry that holds something else (another tool's hook, a module's own
 * allocator) is left alone. */
static void test_foreign_entries_left_alone(void **state)
{
    (void)state;
    int imported = 0;
    uint64_t def = got_definition("malloc", (uint64_t)(uintptr_t)dlsym(RTLD_DEFAULT, "malloc"),
                                  &imported);
    real_malloc = (void *(*)(size_t))(uintptr_t)def;
    /* Pretend the real malloc is something else: no entry holds it. */
    tg[0] = (got_target_t){ "malloc", (uint64_t)(uintptr_t)counting_malloc, 0x1000 };
    got_init(tg, 1);
    /* Only entries not bound yet (still on their own PLT stub) can be
     * taken; libdlleak's is bound (setup called it), libc's GLOB_DAT holds
     * libc's own malloc, not a stub. */
    got_patch();
    unsigned long before = counted;
    free(dl_leak(8));
    free(libc_strdup("x"));
    assert_int_equal(counted, before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_patch_restore, unpatch),
        cmocka_unit_test_teardown(test_foreign_entries_left_alone, unpatch),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
