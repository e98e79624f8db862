/* pymalloc's arenas for the memory account: a counter chained in front of CPython's arena allocator. */
#include "pyarena.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stddef.h>

/* CPython's PyObjectArenaAllocator (a stable public struct since 3.4). */
typedef struct py_arena_alloc_s {
    void *ctx;
    void *(*alloc)(void *ctx, size_t size);
    void (*free)(void *ctx, void *ptr, size_t size);
} py_arena_alloc_t;

static py_arena_alloc_t prev;
static _Atomic int installed;
static _Atomic uint64_t mapped_b, unmapped_b;

/* Called by pymalloc once per arena (256 KiB or 1 MiB), with the GIL. */
static void *arena_alloc(void *ctx, size_t size)
{
    (void)ctx;
    void *p = prev.alloc(prev.ctx, size);
    if (p)
        atomic_fetch_add_explicit(&mapped_b, size, memory_order_relaxed);
    return p;
}

static void arena_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (ptr)
        atomic_fetch_add_explicit(&unmapped_b, size, memory_order_relaxed);
    prev.free(prev.ctx, ptr, size);
}

int pyarena_install(void)
{
    void (*get)(py_arena_alloc_t *) =
        (void (*)(py_arena_alloc_t *))dlsym(RTLD_DEFAULT, "PyObject_GetArenaAllocator");
    void (*set)(py_arena_alloc_t *) =
        (void (*)(py_arena_alloc_t *))dlsym(RTLD_DEFAULT, "PyObject_SetArenaAllocator");
    if (!get || !set)
        return 0;
    get(&prev);
    if (!prev.alloc || !prev.free)
        return 0;
    py_arena_alloc_t mine = { NULL, arena_alloc, arena_free };
    set(&mine);
    atomic_store(&installed, 1);
    return 1;
}

int pyarena_totals(uint64_t *mapped, uint64_t *unmapped)
{
    *mapped = atomic_load_explicit(&mapped_b, memory_order_relaxed);
    *unmapped = atomic_load_explicit(&unmapped_b, memory_order_relaxed);
    return atomic_load(&installed);
}
