/* The real allocator functions behind the interposers, and the arena serving calls before them. */
#ifndef STACKWATCH_AGENT_REAL_H
#define STACKWATCH_AGENT_REAL_H

#include <link.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Declared hidden: the interposers reach these with one RIP-relative load,
 * as when they lived in hook.c (an extern declaration is otherwise reached
 * through the GOT, -fvisibility=hidden notwithstanding). */
#define REAL_HIDDEN __attribute__((visibility("hidden")))

typedef struct real_fn_s {
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
    void *(*reallocarray)(void *, size_t, size_t); /* attach mode only (real_resolve_global) */
    int (*dl_iterate_phdr)(int (*)(struct dl_phdr_info *, size_t, void *), void *);
} real_fn_t;

extern real_fn_t real_fn REAL_HIDDEN;

/* Resolves the real functions with dlsym(RTLD_NEXT); allocations made during
 * the lookup are served from the bootstrap arena. Returns 0, or -ENOENT if
 * malloc/free could not be found. Idempotent. */
int real_resolve(void);

/* Attach mode: the real functions become what the program's own references
 * resolve to (dlsym(RTLD_DEFAULT)), whatever the agent's own dependencies
 * say. Returns 0, or -ENOENT without malloc/free. Not for the malloc path. */
int real_resolve_global(void);

/* 1 when the real functions are usable; 0 when the caller must use the
 * arena. Inline: every interposer asks it first. */
static inline int real_ready(void)
{
    if (__builtin_expect(real_fn.malloc != NULL, 1))
        return 1;
    real_resolve();
    return real_fn.malloc != NULL;
}

/* ---------------------------------------------------------------- bootstrap arena */

/* dlsym allocates (and so does ld.so's error path); while the real functions
 * are unknown those requests are served here. free ignores these addresses,
 * realloc copies them out. Never reused: 256 KiB is far more than dlsym needs. */
#define REAL_ARENA_SIZE (256u << 10)

extern unsigned char real_arena[REAL_ARENA_SIZE] REAL_HIDDEN;

/* 1 if p was handed out by the bootstrap arena. Inline: free asks it first. */
static inline int real_arena_owns(const void *p)
{
    return (const unsigned char *)p >= real_arena &&
           (const unsigned char *)p < real_arena + REAL_ARENA_SIZE;
}

/* n bytes aligned to align (at least 16, at most 4096) from the arena, or
 * NULL when it is used up. Lock-free; safe anywhere. */
void *real_arena_alloc(size_t n, size_t align);

/* The size a block of the arena was asked with. */
static inline size_t real_arena_size(const void *p)
{
    return ((const size_t *)p)[-1];
}

#endif
