/* The interposed allocation functions and the real ones behind them. */
#ifndef STACKWATCH_AGENT_HOOK_H
#define STACKWATCH_AGENT_HOOK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hook_real_s {
    void *(*malloc)(size_t);
    void (*free)(void *);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    int (*posix_memalign)(void **, size_t, size_t);
    void *(*aligned_alloc)(size_t, size_t);
    void *(*memalign)(size_t, size_t);
    void *(*valloc)(size_t);
    void *(*pvalloc)(size_t);
    size_t (*malloc_usable_size)(void *);
    int (*dlclose)(void *);
    void (*exit)(int) __attribute__((noreturn));
    int (*libc_start_main)(int (*)(int, char **, char **), int, char **, void (*)(void),
                           void (*)(void), void (*)(void), void *);
    void *(*dlopen)(const char *, int);
    int (*getattr)(pthread_t, pthread_attr_t *); /* pthread_getattr_np */
} hook_real_t;

extern hook_real_t hook_real;

/* Resolves the real functions with dlsym(RTLD_NEXT); allocations made during
 * the lookup are served from the bootstrap arena. Returns 0, or -ENOENT if
 * malloc/free could not be found. Idempotent. */
int hook_resolve(void);

/* Where the main wrapper's code is (hidden from stacks). */
void hook_main_wrapper_range(uint64_t *lo, uint64_t *hi);

/* 1 if p was handed out by the bootstrap arena. */
int hook_arena_owns(const void *p);

/* STACKWATCH_PYTHON_ALLOCATORS: hook CPython's mem and object allocator
 * domains at the first allocation made under the GIL (constructor). */
void hook_pyalloc_enable(void);

/* 1 once the domain hooks are in place. */
int hook_pyalloc_installed(void);
/* 1 when the program's malloc is the agent's (LD_PRELOAD), 0 when calls are
 * bound elsewhere (the agent was loaded with dlopen, or the program brings
 * its own allocator). Constructor only (dlsym). */
int hook_interposing(void);

/* Attach mode: the real functions become what the program's own references
 * resolve to (dlsym(RTLD_DEFAULT)), whatever the agent's own dependencies
 * say. Returns 0, or -ENOENT without malloc/free. Not for the malloc path. */
int hook_resolve_global(void);

/* One function the GOT patcher redirects: the name programs call, the
 * interposer, and the real function behind it. */
typedef struct hook_target_s {
    const char *name;
    uint64_t mine;    /* the agent's function */
    uint64_t real;    /* what the program's references resolve to */
} hook_target_t;

/* The functions attach mode redirects (after hook_resolve_global). Sets *n. */
const hook_target_t *hook_targets(int *n);

#endif
