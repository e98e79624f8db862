/* pymalloc's arenas for the memory account: bytes CPython's small-object allocator maps and unmaps. */
#ifndef STACKWATCH_AGENT_PYARENA_H
#define STACKWATCH_AGENT_PYARENA_H

#include <stdint.h>

/* Chains a counter in front of CPython's arena allocator
 * (PyObject_SetArenaAllocator). Call once, with the GIL held (no thread can
 * be inside pymalloc then) and this thread's guard set. Returns 1 when
 * installed, 0 when the interpreter has no such API. */
int pyarena_install(void);

/* Bytes of arenas mapped and unmapped since the install (an arena mapped
 * before and unmapped after counts in unmapped: the difference is the
 * change since the install, possibly negative). Returns 1 once installed.
 * Any thread; off the hot path. */
int pyarena_totals(uint64_t *mapped, uint64_t *unmapped);

#endif
