/* Stack capture with libunwind's unw_backtrace, minus the agent's own frames. */
#ifndef UNW_LOCAL_ONLY
#define UNW_LOCAL_ONLY /* the Makefile sets it; unit builds may not */
#endif
#include "unwind.h"

#include <errno.h>
#include <link.h>
#include <libunwind.h>
#include <string.h>

#include "config.h"

static uint64_t self_lo, self_hi;

static int find_self(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    uint64_t probe = (uint64_t)(uintptr_t)arg;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uint64_t s = info->dlpi_addr + ph->p_vaddr;
        uint64_t e = s + ph->p_memsz;
        if (s < lo)
            lo = s;
        if (e > hi)
            hi = e;
    }
    if (probe >= lo && probe < hi) {
        self_lo = lo;
        self_hi = hi;
        return 1;
    }
    return 0;
}

int unwind_init(void)
{
    /* Per-thread caches: no lock shared between threads on the unwind path. */
    unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
    dl_iterate_phdr(find_self, (void *)(uintptr_t)&unwind_init);
    return self_hi ? 0 : -ENOENT;
}

int unwind_is_self(uint64_t pc)
{
    return pc >= self_lo && pc < self_hi;
}

int unwind_capture(uint64_t *out, int depth, int *truncated)
{
    void *buf[CFG_DEPTH_MAX + UNWIND_SKIP_MAX];
    int want = depth + UNWIND_SKIP_MAX;
    int n = unw_backtrace(buf, want);
    *truncated = 0;
    if (n <= 0)
        return 0;
    int i = 0;
    while (i < n && unwind_is_self((uint64_t)(uintptr_t)buf[i]))
        i++;
    int kept = n - i;
    if (kept > depth) {
        kept = depth;
        *truncated = 1;
    } else if (n == want) {
        *truncated = 1; /* the buffer filled up: there may be more */
    }
    for (int k = 0; k < kept; k++)
        out[k] = (uint64_t)(uintptr_t)buf[i + k];
    return kept;
}
