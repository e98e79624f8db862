/* Unit tests of the symbolizer (libdw) in the calling thread: the symbol of a pc found without reading the whole symbol table. */
#include <dlfcn.h>
#include <link.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "collector/collectord/sym.h"

/* A loaded module: its path, load bias and executable segments. */
typedef struct lmod_s {
    char path[4096];
    uint64_t bias;
    uint64_t lo[8], hi[8]; /* file addresses of its PT_LOAD PF_X segments */
    int nseg;
} lmod_t;

typedef struct mods_s {
    lmod_t m[64];
    int n;
} mods_t;

static int collect(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    mods_t *ms = arg;
    if (ms->n == 64)
        return 0;
    lmod_t *m = &ms->m[ms->n];
    memset(m, 0, sizeof *m);
    if (info->dlpi_name && info->dlpi_name[0] == '/')
        snprintf(m->path, sizeof m->path, "%s", info->dlpi_name);
    else if (ms->n == 0 && readlink("/proc/self/exe", m->path, sizeof m->path - 1) < 0)
        return 0;
    if (!m->path[0] || strstr(m->path, "linux-vdso"))
        return 0;
    m->bias = info->dlpi_addr;
    for (int i = 0; i < info->dlpi_phnum && m->nseg < 8; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            m->lo[m->nseg] = ph->p_vaddr;
            m->hi[m->nseg] = ph->p_vaddr + ph->p_memsz;
            m->nseg++;
        }
    }
    if (m->nseg)
        ms->n++;
    return 0;
}

static const lmod_t *find_mod(const mods_t *ms, const char *needle)
{
    for (int i = 0; i < ms->n; i++)
        if (strstr(ms->m[i].path, needle))
            return &ms->m[i];
    return NULL;
}

/* The index answers as dwfl_module_addrinfo does, in every module this
 * test has loaded (the test itself with its full symbol table, libc,
 * libstdc++, libdw...: globals, weak aliases, locals, labels without a
 * size, gaps between symbols), for ~2,000 addresses across the code of
 * each, and answers almost all of them itself. */
static void test_index_answers_as_libdw(void **state)
{
    (void)state;
    static mods_t ms;
    ms.n = 0;
    if (getenv("SYM_DLOPEN"))
        dlopen(getenv("SYM_DLOPEN"), RTLD_LAZY);
    dl_iterate_phdr(collect, &ms);
    assert_true(ms.n >= 3);
    size_t total = 0, total_indexed = 0;
    for (int i = 0; i < ms.n; i++) {
        const lmod_t *m = &ms.m[i];
        uint64_t span = 0;
        for (int k = 0; k < m->nseg; k++)
            span += m->hi[k] - m->lo[k];
        uint64_t stride = span / 2000 | 1;
        size_t cap = 2000 + 16 * (size_t)m->nseg, n = 0;
        uint64_t *a = malloc(cap * sizeof *a);
        assert_non_null(a);
        for (int k = 0; k < m->nseg; k++)
            for (uint64_t x = m->lo[k]; x < m->hi[k] && n < cap; x += stride)
                a[n++] = x;
        size_t indexed = 0;
        long differ = sym_index_check(m->path, a, n, &indexed);
        if (differ != 0 || getenv("SYM_VERBOSE"))
            fprintf(stderr, "%s: %ld of %zu differ, %zu indexed\n", m->path, differ, n, indexed);
        assert_int_equal(differ, 0);
        total += n;
        total_indexed += indexed;
        free(a);
    }
    assert_true(total_indexed * 100 >= total * 95);
}

/* A pc of the test itself, in a function with a name and a line. */
__attribute__((noinline)) static int probe_fn(int x)
{
    return x * 3 + 1;
}

static sym_job_t *job_for(const lmod_t *m, const uint64_t *pcs, uint32_t n)
{
    sym_job_t *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->pid = (uint32_t)getpid();
    j->npcs = n;
    j->pcs = malloc(n * sizeof *j->pcs);
    j->pc_mod = malloc(n * sizeof *j->pc_mod);
    j->nmods = 1;
    j->mods = calloc(1, sizeof *j->mods);
    assert_non_null(j->pcs);
    assert_non_null(j->pc_mod);
    assert_non_null(j->mods);
    j->mods[0].path = strdup(m->path);
    j->mods[0].bias = m->bias;
    j->mods[0].lo = m->bias + m->lo[0];
    memcpy(j->pcs, pcs, n * sizeof *pcs);
    for (uint32_t i = 0; i < n; i++)
        j->pc_mod[i] = 0;
    return j;
}

/* Issue 18: the distinct pcs of a module are looked up without reading its
 * whole symbol table for each (dwfl_module_addrinfo does: ~1 ms a pc in a
 * stripped libLLVM, seconds of a core after a numba process). 400 distinct
 * pcs across libc's code: one read of its table, not 400; the same pcs
 * again: from the frames cache, no lookup at all. */
static void test_distinct_pcs_read_the_symbol_table_once(void **state)
{
    (void)state;
    static mods_t ms;
    ms.n = 0;
    dl_iterate_phdr(collect, &ms);
    const lmod_t *libc = find_mod(&ms, "/libc.so");
    assert_non_null(libc);
    enum { N = 400 };
    uint64_t pcs[N];
    uint64_t span = libc->hi[0] - libc->lo[0];
    for (uint32_t i = 0; i < N; i++)
        pcs[i] = libc->bias + libc->lo[0] + 1 + span / N * i;

    sym_stats_t s0, s1, s2;
    sym_get_stats(&s0);
    sym_job_t *j = job_for(libc, pcs, N);
    sym_resolve_now(j);
    assert_non_null(j->result);
    sym_get_stats(&s1);
    assert_int_equal(s1.pcs - s0.pcs, N);
    assert_int_equal(s1.looked_up - s0.looked_up, N);
    uint32_t named = 0;
    for (uint32_t i = 0; i < j->result->n; i++)
        named += j->result->f[i].function != NULL;
    assert_true(named >= N / 2);
    /* Was N reads of the whole table (one dwfl_module_addrinfo each). */
    assert_true(s1.symscans - s0.symscans <= N / 20);
    assert_int_equal(s1.index_builds - s0.index_builds, 1);
    sym_job_free(j);

    j = job_for(libc, pcs, N);
    sym_resolve_now(j);
    sym_get_stats(&s2);
    assert_int_equal(s2.cached - s1.cached, N);
    assert_int_equal(s2.looked_up, s1.looked_up);
    assert_int_equal(s2.symscans, s1.symscans);
    sym_job_free(j);
}

/* The quality stays: a pc of a function of the test itself (full symbol
 * table and DWARF) is that function, at its file and line. */
static void test_frames_keep_function_and_line(void **state)
{
    (void)state;
    static mods_t ms;
    ms.n = 0;
    dl_iterate_phdr(collect, &ms);
    const lmod_t *self = &ms.m[0];
    assert_true(probe_fn(2) == 7);
    /* A return address inside probe_fn: the lookup is at pc - 1. */
    uint64_t pc = (uint64_t)(uintptr_t)&probe_fn + 2;
    sym_job_t *j = job_for(self, &pc, 1);
    sym_resolve_now(j);
    assert_non_null(j->result);
    const symframe_t *f = &j->result->f[j->result->n - 1];
    assert_non_null(f->function);
    assert_string_equal(f->function, "probe_fn");
    assert_int_equal(f->offset, 2);
    assert_non_null(f->file);
    assert_non_null(strstr(f->file, "test_sym.c"));
    assert_true(f->line > 0);
    sym_job_free(j);
}

/* Issue 20.2: a sweep closes the libdw handles of the modules no process
 * still maps (a numba process leaves ~85 MB of libdw's and libelf's data
 * open for libLLVM and 55 more), keeps the ones named, and keeps every
 * module's resolved frames: a pc seen before is answered from the cache
 * without opening the module, a new one opens it again and resolves as
 * before. */
static void test_sweep_closes_handles_not_kept(void **state)
{
    (void)state;
    static mods_t ms;
    ms.n = 0;
    dl_iterate_phdr(collect, &ms);
    const lmod_t *self = &ms.m[0];
    const lmod_t *libc = find_mod(&ms, "/libc.so");
    assert_non_null(libc);
    uint64_t cpc = libc->bias + libc->lo[0] + 1 + (libc->hi[0] - libc->lo[0]) / 3;
    uint64_t spc = (uint64_t)(uintptr_t)&probe_fn + 2;
    sym_job_t *j = job_for(libc, &cpc, 1);
    sym_resolve_now(j);
    sym_job_free(j);
    j = job_for(self, &spc, 1);
    sym_resolve_now(j);
    assert_non_null(j->result);
    const char *fn = j->result->f[j->result->n - 1].function;
    assert_non_null(fn);
    sym_job_free(j);

    sym_stats_t s0, s1, s2, s3;
    sym_get_stats(&s0);
    assert_true(s0.open_now >= 2);
    sym_mod_t keep = { .path = (char *)libc->path };
    size_t closed = sym_sweep_now(&keep, 1);
    sym_get_stats(&s1);
    assert_int_equal(closed, s0.open_now - 1);
    assert_int_equal(s1.open_now, 1); /* libc's */
    assert_int_equal(s1.swept - s0.swept, closed);

    /* The same pc: its frames from the cache, the module stays closed. */
    j = job_for(self, &spc, 1);
    sym_resolve_now(j);
    assert_non_null(j->result);
    assert_string_equal(j->result->f[j->result->n - 1].function, fn);
    sym_job_free(j);
    sym_get_stats(&s2);
    assert_int_equal(s2.cached - s1.cached, 1);
    assert_int_equal(s2.open_now, 1);

    /* A new pc of the closed module opens it again. */
    uint64_t spc2 = spc + 1;
    j = job_for(self, &spc2, 1);
    sym_resolve_now(j);
    assert_non_null(j->result);
    assert_string_equal(j->result->f[j->result->n - 1].function, "probe_fn");
    sym_job_free(j);
    sym_get_stats(&s3);
    assert_int_equal(s3.open_now, 2);
    assert_int_equal(s3.looked_up - s2.looked_up, 1);

    /* Nothing kept: nothing stays open. */
    sym_sweep_now(NULL, 0);
    sym_get_stats(&s3);
    assert_int_equal(s3.open_now, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_answers_as_libdw),
        cmocka_unit_test(test_distinct_pcs_read_the_symbol_table_once),
        cmocka_unit_test(test_frames_keep_function_and_line),
        cmocka_unit_test(test_sweep_closes_handles_not_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
