/* The real allocator functions behind the interposers, and the arena serving calls before them. */
#include "real.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

#include "got.h"

real_fn_t real_fn;

/* ---------------------------------------------------------------- bootstrap arena */

#define ARENA_HDR 16u

_Alignas(64) unsigned char real_arena[REAL_ARENA_SIZE];
static _Atomic size_t arena_used;

void *real_arena_alloc(size_t n, size_t align)
{
    if (align < ARENA_HDR)
        align = ARENA_HDR;
    if (n > REAL_ARENA_SIZE || align > 4096)
        return NULL;
    size_t need = n + align + ARENA_HDR;
    size_t off = atomic_fetch_add_explicit(&arena_used, need, memory_order_relaxed);
    if (off + need > REAL_ARENA_SIZE)
        return NULL;
    uintptr_t base = (uintptr_t)(real_arena + off + ARENA_HDR);
    uintptr_t p = (base + align - 1) & ~(uintptr_t)(align - 1);
    ((size_t *)p)[-1] = n; /* size for realloc and malloc_usable_size */
    return (void *)p;
}

/* ---------------------------------------------------------------- resolution */

static _Atomic int resolve_state; /* 0 not yet, 1 in progress, 2 done */

int real_resolve(void)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&resolve_state, &expect, 1))
        return expect == 2 ? 0 : -EAGAIN;
    real_fn_t r;
    r.malloc = dlsym(RTLD_NEXT, "malloc");
    r.free = dlsym(RTLD_NEXT, "free");
    r.calloc = dlsym(RTLD_NEXT, "calloc");
    r.realloc = dlsym(RTLD_NEXT, "realloc");
    r.posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    r.aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    r.memalign = dlsym(RTLD_NEXT, "memalign");
    r.valloc = dlsym(RTLD_NEXT, "valloc");
    r.pvalloc = dlsym(RTLD_NEXT, "pvalloc");
    r.malloc_usable_size = dlsym(RTLD_NEXT, "malloc_usable_size");
    r.dlclose = dlsym(RTLD_NEXT, "dlclose");
    r.exit = dlsym(RTLD_NEXT, "exit");
    r.libc_start_main = dlsym(RTLD_NEXT, "__libc_start_main");
    r.dlopen = dlsym(RTLD_NEXT, "dlopen");
    r.getattr = dlsym(RTLD_NEXT, "pthread_getattr_np");
    r.dl_iterate_phdr = dlsym(RTLD_NEXT, "dl_iterate_phdr");
    /* Publish free before malloc: once malloc is non-NULL callers stop using
     * the arena and will free through free. */
    real_fn.free = r.free;
    real_fn.calloc = r.calloc;
    real_fn.realloc = r.realloc;
    real_fn.posix_memalign = r.posix_memalign;
    real_fn.aligned_alloc = r.aligned_alloc;
    real_fn.memalign = r.memalign;
    real_fn.valloc = r.valloc;
    real_fn.pvalloc = r.pvalloc;
    real_fn.malloc_usable_size = r.malloc_usable_size;
    real_fn.dlclose = r.dlclose;
    real_fn.exit = r.exit;
    real_fn.libc_start_main = r.libc_start_main;
    real_fn.dlopen = r.dlopen;
    real_fn.getattr = r.getattr;
    real_fn.dl_iterate_phdr = r.dl_iterate_phdr;
    atomic_thread_fence(memory_order_release);
    real_fn.malloc = r.malloc;
    atomic_store(&resolve_state, 2);
    return r.malloc && r.free ? 0 : -ENOENT;
}

/* What the program's references to name resolve to: the definition, never
 * the program's own PLT stub (got_definition). */
static void *global_def(const char *name)
{
    return (void *)(uintptr_t)got_definition(name, (uint64_t)(uintptr_t)dlsym(RTLD_DEFAULT, name),
                                             NULL);
}

int real_resolve_global(void)
{
    real_fn_t r = { 0 };
    r.malloc = global_def("malloc");
    r.free = global_def("free");
    r.calloc = global_def("calloc");
    r.realloc = global_def("realloc");
    r.posix_memalign = global_def("posix_memalign");
    r.aligned_alloc = global_def("aligned_alloc");
    r.memalign = global_def("memalign");
    r.valloc = global_def("valloc");
    r.pvalloc = global_def("pvalloc");
    r.malloc_usable_size = global_def("malloc_usable_size");
    r.dlclose = global_def("dlclose");
    r.dlopen = global_def("dlopen");
    r.exit = global_def("exit");
    r.libc_start_main = global_def("__libc_start_main");
    r.reallocarray = global_def("reallocarray");
    r.getattr = (int (*)(pthread_t, pthread_attr_t *))global_def("pthread_getattr_np");
    r.dl_iterate_phdr = dlsym(RTLD_DEFAULT, "dl_iterate_phdr");
    if (!r.malloc || !r.free || !r.calloc || !r.realloc || !r.dlopen)
        return -ENOENT;
    /* Nothing calls the interposers before the GOT is patched, which comes
     * after this: plain stores do. */
    real_fn = r;
    atomic_store(&resolve_state, 2);
    return 0;
}
