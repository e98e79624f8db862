/* Python frames of the allocating thread, read synchronously in the hook (CPython 3.11, 3.13-3.15). */
#ifndef STACKWATCH_AGENT_PYFRAMES_H
#define STACKWATCH_AGENT_PYFRAMES_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct dl_phdr_info;

#define PY_FRAMES_MAX 48

/* Why a capture has no frames (the wire's Note.py_missing). */
enum {
    PY_WHY_NONE = 0,        /* frames were captured */
    PY_WHY_GIL = 1,         /* this thread does not hold the GIL */
    PY_WHY_NO_FRAME = 2,    /* it holds the GIL but runs no Python frame */
    PY_WHY_UNSUPPORTED = 3, /* no interpreter this module can read */
};
#define PY_STR_MAX 3072

/* One captured traceback, innermost first. Strings live in buf. */
typedef struct py_tb_s {
    uint32_t n;                    /* frames */
    uint32_t truncated;            /* more frames than PY_FRAMES_MAX or than buf holds */
    uint32_t why;                  /* PY_WHY_*: why n is 0 */
    struct {
        uint32_t line;             /* 0 when unknown */
        uint16_t file, file_len;   /* offsets into buf */
        uint16_t func, func_len;
    } f[PY_FRAMES_MAX];
    uint32_t used;                 /* bytes of buf in use */
    char buf[PY_STR_MAX];
} py_tb_t;

/* Looks for a CPython this module can read (in the main program or a library
 * already loaded): Py_Version, _PyRuntime and PyCode_Type via dlsym.
 * Constructor only (dlsym takes the loader lock). Never fails: without a
 * known interpreter, captures return 0 and py_status() says why. */
void py_init(void);

/* The module map saw a new object (path resolved): if no interpreter was
 * found yet and it is a libpython3, look its symbols up in its in-memory
 * dynamic symbol table and attach (embedding: dlopen + Py_Initialize).
 * Takes no lock and calls no dlsym: safe on the flusher; not for the malloc
 * path (it may log). */
void py_module_added(const struct dl_phdr_info *info, const char *path);

/* The line of code unit `unit` from a 3.11+ location table (n bytes) of a
 * code object starting at firstlineno; 0 when unknown. Pure. */
int py_line_at(const uint8_t *table, size_t n, int firstlineno, int unit);

/* CPython's PyMemAllocatorEx (a stable public struct). */
typedef struct py_mem_alloc_s {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr);
} py_mem_alloc_t;

enum { PY_MEM_DOMAIN_RAW = 0, PY_MEM_DOMAIN_MEM = 1, PY_MEM_DOMAIN_OBJ = 2 };

/* The attached interpreter's PyMem_GetAllocator and PyMem_SetAllocator
 * (both NULL without one). */
void py_mem_api(void (**get)(int, py_mem_alloc_t *), void (**set)(int, py_mem_alloc_t *));

/* CPython's types whose objects a free list keeps on dealloc, for the
 * interpreter's next object of that type (tuple, list, dict, float; int
 * from 3.14): the allocator never sees them freed. py_dealloc_peek gives
 * type i's tp_dealloc (0 <= i < PY_FL_N; NULL when the type has no free
 * list in this version or is not found) and in *pre how far before an
 * object of it its allocated block starts (the GC header);
 * py_dealloc_set replaces it. With the GIL held. */
#define PY_FL_N 5
typedef void (*py_dealloc_t)(void *op);
py_dealloc_t py_dealloc_peek(int i, size_t *pre);
void py_dealloc_set(int i, py_dealloc_t fn);

/* The attached interpreter's Py_AddPendingCall (callable from any thread,
 * without the GIL: the function runs in its main thread, GIL held, at its
 * next eval-breaker check) and Py_IsInitialized (NULL without one). */
void py_pending_api(int (**pending)(int (*)(void *), void *), int (**is_init)(void));

/* CPython's allocator domains, as hook.c hooks them (the flusher reads these
 * without linking hook.c): 1 once the agent is chained in front of them;
 * the attached-mode request to hook them from the interpreter's main thread
 * (NULL: nothing to ask). */
extern _Atomic int py_domains_hooked;
extern void (*_Atomic py_domains_poke)(void);

/* 1 when the calling thread holds the GIL of the attached interpreter.
 * Reads memory only: safe on the malloc path. */
int py_holds_gil(void);

/* Py_Version of the interpreter captures work for, 0 if none. */
uint32_t py_version(void);

/* 1 once an interpreter's layout is in use (never goes back): one load, for
 * the allocation path to skip Python's work in a process without one. */
extern _Atomic int py_attached;

/* The interpreter's "finalizing" word (non-zero once Py_FinalizeEx began
 * tearing the runtime down), or NULL without a known interpreter. Reading it
 * is one load: safe on the malloc path. */
const _Atomic uintptr_t *py_finalizing_word(void);

/* Why there is no capture ("" when there is). */
const char *py_status(void);

/* Captures the calling thread's Python stack into tb. Only when this thread
 * holds the GIL and has a current frame; it reads interpreter memory and
 * decodes line numbers itself, allocates nothing, takes no lock, runs no
 * Python code and creates no frame objects. Returns the number of frames
 * (0: none now, tb->why says why). Safe on the malloc path. */
int py_capture(py_tb_t *tb);

#endif
