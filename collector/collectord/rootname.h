/* What a root of a reachability scan is, in words: a register, a thread's stack, a module's global, other memory. */
#ifndef STACKWATCH_COLLECTOR_ROOTNAME_H
#define STACKWATCH_COLLECTOR_ROOTNAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "collector/common/procmaps.h"

typedef struct rootname_s rootname_t;

/* A namer over one scan's memory map (kept, not copied) and its stopped
 * threads: tids[k] and stack pointers sps[k]; a register value k of the
 * scan is register k % wpr of thread k / wpr. NULL on ENOMEM. */
rootname_t *rootname_new(const maps_t *maps, pid_t pid, const pid_t *tids, const uint64_t *sps,
                         size_t nthreads, size_t wpr);

/* The label of the root word at via (an address, or REACH_VIA_REG | k for
 * register value k): "g_table in prog" (a module's symbol from .symtab or
 * .dynsym, +offset when inside it; bss after its file mapping counts as the
 * module's), "prog+0x4010" (no symbol), "stack of thread 4242",
 * "register rbx of thread 4242", "malloc heap outside tracked blocks",
 * "anonymous memory 0x7f..-0x7f..". Equal labels share an index. Returns the
 * index, or -1 (ENOMEM). Modules' symbol tables are read once each. */
long rootname_label(rootname_t *r, uint64_t via);

/* The labels (malloc'd strings in a malloc'd array; the caller frees them)
 * and their count; the namer keeps none. */
char **rootname_take(rootname_t *r, size_t *n);

void rootname_free(rootname_t *r);

#endif
