/* Unit tests of the module map: initial set, coverage by generation, dlopen/dlclose, epochs. */
#include <dlfcn.h>
#include <link.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/modmap.h"

static char exe[4096];

/* What modmap_each_unsent handed out. */
#define SEEN_MAX 512
typedef struct seen_s {
    mod_t m[SEEN_MAX];
    char path[SEEN_MAX][256];
    size_t n;
} seen_t;

static seen_t seen;

static void collect(const mod_t *m, const char *path, void *arg)
{
    seen_t *s = arg;
    if (s->n < SEEN_MAX) {
        s->m[s->n] = *m;
        snprintf(s->path[s->n], sizeof s->path[0], "%s", path);
    }
    s->n++;
}

static size_t send_unsent(uint32_t epoch)
{
    memset(&seen, 0, sizeof seen);
    size_t n = modmap_each_unsent(epoch, collect, &seen);
    assert_int_equal(n, seen.n);
    return n;
}

/* Index in seen of the first record whose path contains needle, or -1. */
static int seen_find(const char *needle)
{
    for (size_t i = 0; i < seen.n && i < SEEN_MAX; i++)
        if (strstr(seen.path[i], needle))
            return (int)i;
    return -1;
}

static int group_setup(void **state)
{
    (void)state;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    return modmap_init(exe);
}

static void __attribute__((noinline)) a_function_here(void)
{
    __asm__ volatile("");
}

/* ------------------------------------------------------------------ initial map */

static void test_initial_map(void **state)
{
    (void)state;
    uint32_t epoch = 1;
    size_t n = send_unsent(epoch);
    assert_true(n >= 3); /* at least the exe, libc and ld.so */
    assert_true(modmap_bytes() > 0);

    /* The main program is named by the path given, not "". */
    int ie = -1;
    for (size_t i = 0; i < seen.n; i++)
        if (strcmp(seen.path[i], exe) == 0)
            ie = (int)i;
    assert_true(ie >= 0);
    assert_true(seen.m[ie].build_id_len > 0);

    int ic = seen_find("libc.so");
    assert_true(ic >= 0);
    const mod_t *libc = &seen.m[ic];
    assert_int_equal(seen.path[ic][0], '/');
    assert_true(libc->build_id_len > 0);
    assert_true(libc->build_id_len <= MOD_BUILD_ID_MAX);
    assert_int_equal(libc->gen_removed, 0);
    assert_true(libc->nranges >= 1 && libc->nranges <= MOD_MAX_RANGES);

    for (size_t i = 0; i < seen.n; i++) {
        const mod_t *m = &seen.m[i];
        assert_int_equal(m->id, (uint32_t)i); /* ids are indexes, sent in order */
        assert_true(m->lo < m->hi);
        for (uint32_t r = 0; r < m->nranges; r++) {
            assert_true(m->ranges[2 * r] < m->ranges[2 * r + 1]);
            assert_true(m->ranges[2 * r] >= m->lo && m->ranges[2 * r + 1] <= m->hi);
        }
        assert_true(seen.path[i][0] != '\0');
    }

    /* Sent once per epoch. */
    assert_int_equal(send_unsent(epoch), 0);
    assert_int_equal(send_unsent(epoch + 1), n);
    assert_int_equal(send_unsent(epoch + 1), 0);
    assert_int_equal(send_unsent(epoch), n); /* any other epoch sends all again */

    /* Nothing changed: a refresh reports no change and keeps the generation. */
    uint32_t g = modmap_gen();
    assert_int_equal(modmap_changed(), 0);
    assert_int_equal(modmap_refresh(), 0);
    assert_int_equal(modmap_gen(), g);
}

static void test_covers(void **state)
{
    (void)state;
    uint32_t g = modmap_gen();
    void *libc_printf = dlsym(RTLD_DEFAULT, "printf");
    assert_non_null(libc_printf);
    assert_int_equal(modmap_covers((uint64_t)(uintptr_t)libc_printf, g), 1);
    assert_int_equal(modmap_covers((uint64_t)(uintptr_t)&printf, g), 1);
    assert_int_equal(modmap_covers((uint64_t)(uintptr_t)&a_function_here, g), 1);
    assert_int_equal(modmap_covers((uint64_t)(uintptr_t)&modmap_covers, g), 1);

    int on_stack = 0;
    assert_int_equal(modmap_covers((uint64_t)(uintptr_t)&on_stack, g), 0);
    assert_int_equal(modmap_covers(0, g), 0);
    assert_int_equal(modmap_covers(0x1000, g), 0);
    assert_int_equal(modmap_covers(~(uint64_t)0, g), 0);
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(page != MAP_FAILED);
    assert_int_equal(modmap_covers((uint64_t)(uintptr_t)page, g), 0);
    munmap(page, 4096);
}

/* ------------------------------------------------------------------ dlopen / dlclose */

/* First PT_LOAD range of the loaded object whose name contains needle. */
typedef struct find_s {
    const char *needle;
    uint64_t lo, hi;
} find_t;

static int find_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    find_t *f = arg;
    if (!info->dlpi_name || !strstr(info->dlpi_name, f->needle))
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type != PT_LOAD)
            continue;
        f->lo = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
        f->hi = f->lo + info->dlpi_phdr[i].p_memsz;
        return 1;
    }
    return 0;
}

static int find_range(const char *needle, uint64_t *lo, uint64_t *hi)
{
    find_t f = { .needle = needle };
    dl_iterate_phdr(find_cb, &f);
    *lo = f.lo;
    *hi = f.hi;
    return f.hi != 0;
}

/* A small system library this process has not loaded yet. */
static const char *pick_library(void)
{
    static const char *const cand[] = {
        "libz.so.1", "libbz2.so.1.0", "libBrokenLocale.so.1", "libanl.so.1",
    };
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++) {
        void *h = dlopen(cand[i], RTLD_LAZY | RTLD_NOLOAD);
        if (h) {
            dlclose(h);
            continue;
        }
        /* Installed? Load it for real and unload it at once. */
        h = dlopen(cand[i], RTLD_LAZY | RTLD_LOCAL);
        if (!h)
            continue;
        dlclose(h);
        if (dlopen(cand[i], RTLD_LAZY | RTLD_NOLOAD) == NULL) {
            modmap_refresh(); /* settle: the probe loaded and unloaded it */
            return cand[i];
        }
    }
    return NULL;
}

static void test_dlopen_dlclose(void **state)
{
    (void)state;
    const char *lib = pick_library();
    if (!lib) {
        print_message("no unloaded system library to dlopen; skipped\n");
        skip();
    }
    /* The probe above loaded and unloaded lib: bring every epoch up to date. */
    send_unsent(100);
    uint32_t g0 = modmap_gen();
    assert_int_equal(modmap_changed(), 0);

    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(h);
    uint64_t lo, hi;
    assert_true(find_range(lib, &lo, &hi));
    /* Unknown until the map is refreshed; the cheap check sees the load. */
    assert_int_equal(modmap_covers(lo, modmap_gen()), 0);
    assert_int_equal(modmap_changed(), 1);
    assert_int_equal(modmap_refresh(), 1);
    assert_int_equal(modmap_changed(), 0);
    assert_int_equal(modmap_gen(), g0); /* adding does not change the generation */
    assert_int_equal(modmap_covers(lo, g0), 1);
    assert_int_equal(modmap_covers(hi - 1, g0), 1);

    /* Only the new object is unsent in the current epoch. */
    size_t n = send_unsent(100);
    assert_true(n >= 1);
    int il = seen_find(lib);
    assert_true(il >= 0);
    mod_t added = seen.m[il];
    assert_int_equal(added.gen_removed, 0);
    assert_int_equal(seen.path[il][0], '/'); /* a full path, not the soname */
    for (size_t i = 0; i < seen.n; i++)
        assert_int_equal(seen.m[i].gen_removed, 0);
    assert_int_equal(send_unsent(100), 0);

    /* dlclose the way the hook does it. */
    modmap_before_unload();
    assert_int_equal(modmap_gen(), g0);
    assert_int_equal(dlclose(h), 0);
    modmap_after_unload();
    void *still = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD);
    if (still) {
        /* Something else holds it: nothing vanished, nothing to check. */
        dlclose(still);
        print_message("%s stayed loaded after dlclose; removal not checked\n", lib);
        return;
    }
    uint32_t g1 = modmap_gen();
    assert_int_equal(g1, g0 + 1); /* an unload bumps the generation once */
    assert_int_equal(modmap_changed(), 0);

    /* The removal is sent once in the epoch that saw the module loaded. */
    n = send_unsent(100);
    assert_true(n >= 1);
    il = seen_find(lib);
    assert_true(il >= 0);
    assert_int_equal(seen.m[il].id, added.id);
    assert_int_equal(seen.m[il].gen_removed, g1);
    for (size_t i = 0; i < seen.n; i++)
        assert_int_equal(seen.m[i].gen_removed, g1);
    assert_int_equal(send_unsent(100), 0);

    /* Stacks captured before the unload still resolve in their generation. */
    assert_int_equal(modmap_covers(lo, g0), 1);
    assert_int_equal(modmap_covers(lo, g1), 0);

    /* Load it again: a new record; at the old addresses it is valid only from g1. */
    h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(h);
    uint64_t lo2, hi2;
    assert_true(find_range(lib, &lo2, &hi2));
    assert_int_equal(modmap_refresh(), 1);
    assert_int_equal(modmap_gen(), g1);
    assert_int_equal(modmap_covers(lo2, g1), 1);
    n = send_unsent(100);
    il = seen_find(lib);
    assert_true(il >= 0);
    assert_true(seen.m[il].id != added.id);
    assert_int_equal(seen.m[il].gen_removed, 0);
    if (lo2 < added.hi && added.lo < hi2) {
        assert_int_equal(seen.m[il].gen_added, g1);
    }
    if (lo2 == lo) /* same place: g0 resolves to the old record, g1 to the new */
        assert_int_equal(modmap_covers(lo2, g0), 1);
    modmap_before_unload();
    assert_int_equal(dlclose(h), 0);
    modmap_after_unload();

    /* A new epoch (reconnect) resends everything, removed records included. */
    size_t all = send_unsent(101);
    int removed = 0;
    for (size_t i = 0; i < seen.n; i++)
        removed += seen.m[i].gen_removed != 0;
    assert_true(all >= 3);
    assert_true(removed >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_initial_map),
        cmocka_unit_test(test_covers),
        cmocka_unit_test(test_dlopen_dlclose),
    };
    return cmocka_run_group_tests_name("agent_modmap", tests, group_setup, NULL);
}
