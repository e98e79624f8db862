/* The interposed allocation functions. */
#ifndef STACKWATCH_AGENT_HOOK_H
#define STACKWATCH_AGENT_HOOK_H

#include <stdint.h>

/* Where the main wrapper's code is (hidden from stacks). */
void hook_main_wrapper_range(uint64_t *lo, uint64_t *hi);

/* STACKWATCH_PYTHON_ALLOCATORS: hook CPython's mem and object allocator
 * domains at the first allocation made under the GIL (constructor). */
void hook_pyalloc_enable(void);

/* 1 once the domain hooks are in place. */
int hook_pyalloc_installed(void);
/* 1 when the program's malloc is the agent's (LD_PRELOAD), 0 when calls are
 * bound elsewhere (the agent was loaded with dlopen, or the program brings
 * its own allocator). Constructor only (dlsym). */
int hook_interposing(void);

/* One function the GOT patcher redirects: the name programs call, the
 * interposer, and the real function behind it. */
typedef struct hook_target_s {
    const char *name;
    uint64_t mine;    /* the agent's function */
    uint64_t real;    /* what the program's references resolve to */
} hook_target_t;

/* The functions attach mode redirects (after real_resolve_global). Sets *n. */
const hook_target_t *hook_targets(int *n);

#endif
