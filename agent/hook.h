/* The interposed allocation functions. */
#ifndef STACKWATCH_AGENT_HOOK_H
#define STACKWATCH_AGENT_HOOK_H

#include "got.h"

/* STACKWATCH_PYTHON_ALLOCATORS: hook CPython's mem and object allocator
 * domains at the first allocation made under the GIL (constructor). */
void hook_pyalloc_enable(void);

/* 1 when the program's malloc is the agent's (LD_PRELOAD), 0 when calls are
 * bound elsewhere (the agent was loaded with dlopen, or the program brings
 * its own allocator). Constructor only (dlsym). */
int hook_interposing(void);

/* The functions attach mode redirects (after real_resolve_global). Sets *n. */
const got_target_t *hook_targets(int *n);

#endif
