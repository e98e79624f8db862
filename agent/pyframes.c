/* Python frames of the allocating thread, read synchronously in the hook (CPython 3.11, 3.13-3.15).
 *
 * The one place that knows CPython's internal structures. Every version is
 * read through one table of offsets (py_layout_t):
 * - 3.11.1 and later 3.11: filled from 3.11's own headers (python3.11-dev);
 *   3.11.0 is refused (it could leave a frame whose code object was being
 *   freed).
 * - 3.13 and later: filled from the interpreter's own _Py_DebugOffsets, the
 *   table at the start of _PyRuntime that out-of-process profilers read. Its
 *   own layout changes between minor versions, so each verified minor has one
 *   row in dbg_maps (where its fields sit in the table); patch releases need
 *   nothing. The cookie, the version and every offset are checked.
 * - 3.12 (no debug table, its layout not verifiable here), free-threaded
 *   builds and unknown versions: refused, with one message.
 *
 * The line is decoded from the code object's location table here (the
 * format of 3.11 to 3.14, InternalDocs/locations.md): no interpreter call.
 *
 * Why synchronously, here: a capture deferred to Py_AddPendingCall or a
 * Python signal handler runs at the next eval-breaker check (a line or more
 * later, e.g. inside numba's dispatcher) and only in the main thread. In 3.11
 * a Python-to-Python call adds no C frame, so the C stack alone cannot tell
 * two Python lines apart either. */
#define Py_BUILD_CORE 1
#include "pyframes.h"

#include <Python.h>
#include <internal/pycore_frame.h>
#include <internal/pycore_runtime.h>

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "log.h"

#define V311_MIN 0x030B01F0u /* 3.11.1 final */
#define INTERP_WALK_MAX 16   /* interpreters looked at for the GIL holder */

/* How the thread holding the GIL is found. */
enum { GIL_RUNTIME_TSTATE = 1, /* 3.11: _PyRuntime.gilstate.tstate_current */
       GIL_INTERP_HOLDER = 2   /* 3.13+: interp->ceval.gil->{locked,last_holder} */ };

/* Offsets (bytes) into CPython's structures for one running interpreter. */
typedef struct py_layout_s {
    uint32_t version;        /* Py_Version */
    int gil;                 /* GIL_* */
    uint64_t rt_tstate;      /* 3.11: runtime -> tstate holding the GIL */
    uint64_t rt_finalizing;  /* runtime -> _finalizing (tstate pointer, 0 until Py_FinalizeEx) */
    uint64_t rt_interp_head; /* 3.13+: runtime -> newest interpreter */
    uint64_t is_next;        /* interpreter -> next */
    uint64_t is_ceval_gil;   /* interpreter -> its GIL (pointer) */
    uint64_t gil_locked;     /* GIL -> locked (int) */
    uint64_t gil_holder;     /* GIL -> last holder (tstate) */
    uint64_t ts_thread_id;   /* tstate -> pthread_self() of its thread */
    uint64_t ts_cframe;      /* 3.11: tstate -> cframe; 0: current frame in tstate */
    uint64_t ts_frame;       /* tstate (or cframe) -> current interpreter frame */
    uint64_t fr_previous;    /* frame -> previous */
    uint64_t fr_code;        /* frame -> code object (f_code / f_executable) */
    uint64_t fr_code_tag;    /* tag bits to clear from it (stack references), 0: none */
    uint64_t fr_instr;       /* frame -> instruction pointer */
    uint64_t fr_owner;       /* frame -> owner (char) */
    int owner_skip;          /* owners >= this are C-stack/interpreter shims */
    uint64_t co_filename, co_name, co_qualname, co_linetable, co_firstlineno;
    uint64_t co_code;        /* code object -> first code unit */
    uint64_t co_firsttraceable; /* 3.11: _co_firsttraceable (int); 0: not checked */
    uint64_t ob_type;        /* object -> type */
    uint64_t by_size, by_sval; /* bytes object -> size, data */
    uint64_t un_state, un_length, un_ascii_size; /* str object */
    const void *code_type;   /* &PyCode_Type */
    const void *rt;          /* &_PyRuntime */
    void (*mem_get)(int, py_mem_alloc_t *); /* PyMem_GetAllocator */
    void (*mem_set)(int, py_mem_alloc_t *); /* PyMem_SetAllocator */
    int (*pending)(int (*)(void *), void *); /* Py_AddPendingCall */
    int (*is_init)(void);                     /* Py_IsInitialized */
    void *fl_types[PY_FL_N]; /* fl_names' type objects (NULL: none, or no free list) */
} py_layout_t;

/* The types of py_dealloc_peek/_set, by index; the minor version their free
 * list came in (ints: 3.14). */
static const struct {
    const char *name;
    unsigned since_minor;
} fl_names[PY_FL_N] = {
    { "PyTuple_Type", 11 }, { "PyList_Type", 11 }, { "PyDict_Type", 11 },
    { "PyFloat_Type", 11 }, { "PyLong_Type", 14 },
};

static py_layout_t layout_store;
/* Published with release once layout_store is complete; read with acquire
 * by the hooks (py_attach may run on the flusher after start-up). */
static _Atomic(const py_layout_t *) active;
_Atomic int py_attached;
static _Atomic uint32_t attach_once;
static char status[200];

/* ---------------------------------------------------------------- _Py_DebugOffsets */

/* Where a minor version's _Py_DebugOffsets keeps the fields used here: the
 * index of each 8-byte word in the table (word 0 is the cookie, 1 the
 * version, 2 free_threaded). From CPython's Include/internal/
 * pycore_runtime.h (3.13) and pycore_debug_offsets.h (3.14, 3.15). */
typedef struct dbg_map_s {
    uint32_t minor;
    int owner_skip;          /* first owner value that is not a Python frame */
    uint64_t code_tag;       /* f_executable tag bits */
    uint16_t words;          /* words the table has at least */
    uint16_t rt_size, rt_finalizing, rt_interp_head;
    uint16_t is_size, is_next, is_ceval_gil, is_gil, is_gil_locked, is_gil_holder;
    uint16_t ts_size, ts_current_frame, ts_thread_id;
    uint16_t fr_size, fr_previous, fr_executable, fr_instr_ptr, fr_owner;
    uint16_t co_size, co_filename, co_name, co_qualname, co_linetable, co_firstlineno,
        co_code_adaptive;
    uint16_t ob_type;
    uint16_t by_size, by_ob_size, by_ob_sval;
    uint16_t un_size, un_state, un_length, un_ascii_size;
} dbg_map_t;

static const dbg_map_t dbg_maps[] = {
    { .minor = 13, .owner_skip = 3, .code_tag = 0, .words = 73,
      .rt_size = 3, .rt_finalizing = 4, .rt_interp_head = 5,
      .is_size = 6, .is_next = 8, .is_ceval_gil = 14, .is_gil = 15, .is_gil_locked = 17,
      .is_gil_holder = 18,
      .ts_size = 19, .ts_current_frame = 23, .ts_thread_id = 24,
      .fr_size = 28, .fr_previous = 29, .fr_executable = 30, .fr_instr_ptr = 31, .fr_owner = 33,
      .co_size = 34, .co_filename = 35, .co_name = 36, .co_qualname = 37, .co_linetable = 38,
      .co_firstlineno = 39, .co_code_adaptive = 43,
      .ob_type = 45,
      .by_size = 64, .by_ob_size = 65, .by_ob_sval = 66,
      .un_size = 67, .un_state = 68, .un_length = 69, .un_ascii_size = 70 },
    /* 3.14: the interpreter's GIL block gains code_object_generation and
     * tlbc_generation, the frame stackpointer and tlbc_index, the code
     * object co_tlbc, and set/float/long/gc/generator/debugger sections
     * come in; owners 3 (interpreter) and 4 (C stack) are shims;
     * f_executable is a _PyStackRef whose low 2 bits are tags. */
    { .minor = 14, .owner_skip = 3, .code_tag = 3, .words = 95,
      .rt_size = 3, .rt_finalizing = 4, .rt_interp_head = 5,
      .is_size = 6, .is_next = 8, .is_ceval_gil = 15, .is_gil = 16, .is_gil_locked = 18,
      .is_gil_holder = 19,
      .ts_size = 22, .ts_current_frame = 26, .ts_thread_id = 27,
      .fr_size = 31, .fr_previous = 32, .fr_executable = 33, .fr_instr_ptr = 34, .fr_owner = 36,
      .co_size = 39, .co_filename = 40, .co_name = 41, .co_qualname = 42, .co_linetable = 43,
      .co_firstlineno = 44, .co_code_adaptive = 48,
      .ob_type = 51,
      .by_size = 74, .by_ob_size = 75, .by_ob_sval = 76,
      .un_size = 77, .un_state = 78, .un_length = 79, .un_ascii_size = 80 },
    /* 3.15: the thread state gains base_frame, last_profiled_frame(_seq)
     * before thread_id and exception fields after; an err_stackitem and a
     * heap type section, more type/unicode/gc fields. The C-stack owner is
     * gone (3 is the interpreter's shim). */
    { .minor = 15, .owner_skip = 3, .code_tag = 3, .words = 111,
      .rt_size = 3, .rt_finalizing = 4, .rt_interp_head = 5,
      .is_size = 6, .is_next = 8, .is_ceval_gil = 15, .is_gil = 16, .is_gil_locked = 18,
      .is_gil_holder = 19,
      .ts_size = 22, .ts_current_frame = 26, .ts_thread_id = 30,
      .fr_size = 39, .fr_previous = 40, .fr_executable = 41, .fr_instr_ptr = 42, .fr_owner = 44,
      .co_size = 47, .co_filename = 48, .co_name = 49, .co_qualname = 50, .co_linetable = 51,
      .co_firstlineno = 52, .co_code_adaptive = 56,
      .ob_type = 59,
      .by_size = 86, .by_ob_size = 87, .by_ob_sval = 88,
      .un_size = 89, .un_state = 90, .un_length = 91, .un_ascii_size = 92 },
};

/* Fixed facts of the default (GIL) build of 3.11 to 3.14 on 64-bit Linux,
 * used to check that a table reads the way its map says. */
#define OB_TYPE_OFF 8u
#define BYTES_SVAL_OFF 32u

/* ---------------------------------------------------------------- small helpers */

static void set_status(const char *a, const char *b)
{
    size_t n = 0;
    for (const char *s = a; s && *s && n + 1 < sizeof status; s++)
        status[n++] = *s;
    for (const char *s = b; s && *s && n + 1 < sizeof status; s++)
        status[n++] = *s;
    status[n] = '\0';
}

/* "3.13.15" (or "0x..." for odd values) into out (>= 24 bytes). */
static void version_str(uint32_t v, char *out)
{
    char *p = out;
    unsigned parts[3] = { v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff };
    for (int i = 0; i < 3; i++) {
        char d[4];
        int k = 0;
        unsigned x = parts[i];
        do {
            d[k++] = (char)('0' + x % 10);
            x /= 10;
        } while (x && k < 3);
        while (k)
            *p++ = d[--k];
        if (i < 2)
            *p++ = '.';
    }
    *p = '\0';
}

static inline uint64_t rd64(const void *base, uint64_t off)
{
    uint64_t v;
    memcpy(&v, (const char *)base + off, sizeof v);
    return v;
}

static inline const void *rdp(const void *base, uint64_t off)
{
    return (const void *)(uintptr_t)rd64(base, off);
}

/* ---------------------------------------------------------------- layouts */

/* 3.11 from its own headers. */
static void layout_311(py_layout_t *l)
{
    memset(l, 0, sizeof *l);
    l->gil = GIL_RUNTIME_TSTATE;
    l->rt_tstate = offsetof(_PyRuntimeState, gilstate.tstate_current);
    _Static_assert(sizeof(((_PyRuntimeState *)0)->_finalizing) == sizeof(uintptr_t), "a word");
    l->rt_finalizing = offsetof(_PyRuntimeState, _finalizing);
    l->ts_thread_id = offsetof(PyThreadState, thread_id);
    l->ts_cframe = offsetof(PyThreadState, cframe);
    l->ts_frame = offsetof(_PyCFrame, current_frame);
    l->fr_previous = offsetof(_PyInterpreterFrame, previous);
    l->fr_code = offsetof(_PyInterpreterFrame, f_code);
    l->fr_instr = offsetof(_PyInterpreterFrame, prev_instr);
    l->fr_owner = offsetof(_PyInterpreterFrame, owner);
    l->owner_skip = 3; /* 3.11 has owners 0..2 only */
    l->co_filename = offsetof(PyCodeObject, co_filename);
    l->co_name = offsetof(PyCodeObject, co_name);
    l->co_qualname = offsetof(PyCodeObject, co_qualname);
    l->co_linetable = offsetof(PyCodeObject, co_linetable);
    l->co_firstlineno = offsetof(PyCodeObject, co_firstlineno);
    l->co_code = offsetof(PyCodeObject, co_code_adaptive);
    l->co_firsttraceable = offsetof(PyCodeObject, _co_firsttraceable);
    l->ob_type = offsetof(PyObject, ob_type);
    l->by_size = offsetof(PyVarObject, ob_size);
    l->by_sval = offsetof(PyBytesObject, ob_sval);
    l->un_state = offsetof(PyASCIIObject, state);
    l->un_length = offsetof(PyASCIIObject, length);
    l->un_ascii_size = sizeof(PyASCIIObject);
}

/* An offset of a field of a size-byte structure that a reader may take
 * width bytes from. */
static int off_ok(uint64_t off, uint64_t size, uint64_t width)
{
    return size >= width && size < (1u << 20) && off <= size - width;
}

/* 3.13+ from the interpreter's _Py_DebugOffsets at rt. Returns NULL, or a
 * reason it cannot be used. */
static const char *layout_debug(py_layout_t *l, const void *rt, uint32_t version)
{
    const uint64_t *w = rt;
    if (memcmp(rt, "xdebugpy", 8) != 0)
        return "no _Py_DebugOffsets cookie in _PyRuntime";
    if ((uint32_t)w[1] != version)
        return "_Py_DebugOffsets version differs from Py_Version";
    if (w[2] != 0)
        return "free-threaded build (not supported)";
    const dbg_map_t *m = NULL;
    for (size_t i = 0; i < sizeof dbg_maps / sizeof dbg_maps[0]; i++)
        if (dbg_maps[i].minor == ((version >> 16) & 0xff))
            m = &dbg_maps[i];
    if (!m)
        return NULL; /* caller says "not verified" */
    uint64_t rt_size = w[m->rt_size], is_size = w[m->is_size], ts_size = w[m->ts_size];
    uint64_t fr_size = w[m->fr_size], co_size = w[m->co_size], by_size = w[m->by_size];
    uint64_t un_size = w[m->un_size];
    memset(l, 0, sizeof *l);
    l->gil = GIL_INTERP_HOLDER;
    l->rt_interp_head = w[m->rt_interp_head];
    l->rt_finalizing = w[m->rt_finalizing];
    l->is_next = w[m->is_next];
    l->is_ceval_gil = w[m->is_ceval_gil];
    /* locked and holder are given within the interpreter's own GIL; the
     * GIL in use (ceval.gil) may be another interpreter's: keep them
     * relative to the GIL structure. */
    uint64_t gil_base = w[m->is_gil];
    if (w[m->is_gil_locked] < gil_base || w[m->is_gil_holder] < gil_base)
        return "_Py_DebugOffsets: GIL fields outside the GIL";
    l->gil_locked = w[m->is_gil_locked] - gil_base;
    l->gil_holder = w[m->is_gil_holder] - gil_base;
    l->ts_thread_id = w[m->ts_thread_id];
    l->ts_frame = w[m->ts_current_frame];
    l->fr_previous = w[m->fr_previous];
    l->fr_code = w[m->fr_executable];
    l->fr_code_tag = m->code_tag;
    l->fr_instr = w[m->fr_instr_ptr];
    l->fr_owner = w[m->fr_owner];
    l->owner_skip = m->owner_skip;
    l->co_filename = w[m->co_filename];
    l->co_name = w[m->co_name];
    l->co_qualname = w[m->co_qualname];
    l->co_linetable = w[m->co_linetable];
    l->co_firstlineno = w[m->co_firstlineno];
    l->co_code = w[m->co_code_adaptive];
    l->ob_type = w[m->ob_type];
    l->by_size = w[m->by_ob_size];
    l->by_sval = w[m->by_ob_sval];
    l->un_state = w[m->un_state];
    l->un_length = w[m->un_length];
    l->un_ascii_size = w[m->un_ascii_size];
    int ok = off_ok(l->rt_interp_head, rt_size, 8) && off_ok(l->rt_finalizing, rt_size, 8) && off_ok(l->is_next, is_size, 8) &&
             off_ok(l->is_ceval_gil, is_size, 8) && off_ok(gil_base, is_size, 16) &&
             off_ok(w[m->is_gil_locked], is_size, 4) && off_ok(w[m->is_gil_holder], is_size, 8) &&
             off_ok(l->ts_thread_id, ts_size, 8) && off_ok(l->ts_frame, ts_size, 8) &&
             off_ok(l->fr_previous, fr_size, 8) && off_ok(l->fr_code, fr_size, 8) &&
             off_ok(l->fr_instr, fr_size, 8) && off_ok(l->fr_owner, fr_size, 1) &&
             off_ok(l->co_filename, co_size, 8) && off_ok(l->co_name, co_size, 8) &&
             off_ok(l->co_qualname, co_size, 8) && off_ok(l->co_linetable, co_size, 8) &&
             off_ok(l->co_firstlineno, co_size, 4) && l->co_code <= co_size &&
             l->ob_type == OB_TYPE_OFF && l->by_sval == BYTES_SVAL_OFF &&
             off_ok(l->by_size, by_size, 8) && off_ok(l->un_state, un_size, 4) &&
             off_ok(l->un_length, un_size, 8) && l->un_ascii_size <= un_size &&
             l->un_ascii_size >= 32;
    if (!ok)
        return "_Py_DebugOffsets: an offset is out of range";
    return "";
}

/* Installs the layout for an interpreter whose symbols are v (Py_Version),
 * rt (_PyRuntime) and code_type (PyCode_Type); sets status either way.
 * Returns 1 when captures are now possible. Not for the malloc path. */
/* Py_AddPendingCall and Py_IsInitialized of the interpreter being attached
 * (set by its caller just before attach). */
static void *attach_pending, *attach_is_init;

/* The free-listed types' objects of the interpreter being attached (set by
 * its caller just before attach). */
static void *attach_fl[PY_FL_N];

static int attach(const unsigned long *v, const void *rt, const void *code_type, void *mem_get,
                  void *mem_set)
{
    if (!v || !rt) {
        set_status("not a CPython process (no Py_Version/_PyRuntime)", NULL);
        return 0;
    }
    uint32_t ver = (uint32_t)*v;
    char vs[24];
    version_str(ver, vs);
    uint32_t minor = (ver >> 16) & 0xff;
    py_layout_t *l = &layout_store;
    const char *why = NULL;
    if ((ver >> 24) != 3 || minor < 11) {
        why = "";
    } else if (minor == 11) {
        if (ver < V311_MIN)
            why = " (3.11.0 can leave a frame whose code object is being freed)";
        else
            layout_311(l);
    } else if (minor == 12) {
        why = " (3.12 has no _Py_DebugOffsets and its layout is not verified)";
    } else {
        const char *e = layout_debug(l, rt, ver);
        if (!e)
            why = " (not verified: 3.11, 3.13, 3.14 and 3.15 are)";
        else if (*e) {
            set_status("CPython ", vs);
            strncat(status, ": ", sizeof status - strlen(status) - 1);
            strncat(status, e, sizeof status - strlen(status) - 1);
            strncat(status, "; no Python frames", sizeof status - strlen(status) - 1);
            return 0;
        }
    }
    if (!why && !code_type)
        why = " (no PyCode_Type)";
    if (why) {
        set_status("CPython version ", vs);
        strncat(status, " not supported for Python frames", sizeof status - strlen(status) - 1);
        strncat(status, why, sizeof status - strlen(status) - 1);
        return 0;
    }
    l->version = ver;
    l->code_type = code_type;
    l->rt = rt;
    l->mem_get = (void (*)(int, py_mem_alloc_t *))mem_get;
    l->mem_set = (void (*)(int, py_mem_alloc_t *))mem_set;
    l->pending = (int (*)(int (*)(void *), void *))attach_pending;
    l->is_init = (int (*)(void))attach_is_init;
    for (int i = 0; i < PY_FL_N; i++)
        l->fl_types[i] = minor >= fl_names[i].since_minor ? attach_fl[i] : NULL;
    atomic_store_explicit(&active, l, memory_order_release);
    atomic_store_explicit(&py_attached, 1, memory_order_release);
    status[0] = '\0';
    return 1;
}

void py_init(void)
{
    const unsigned long *v = dlsym(RTLD_DEFAULT, "Py_Version");
    void *rt = dlsym(RTLD_DEFAULT, "_PyRuntime");
    void *ct = dlsym(RTLD_DEFAULT, "PyCode_Type");
    if (v || rt)
        atomic_store(&attach_once, 1);
    attach_pending = dlsym(RTLD_DEFAULT, "Py_AddPendingCall");
    attach_is_init = dlsym(RTLD_DEFAULT, "Py_IsInitialized");
    for (int i = 0; i < PY_FL_N; i++)
        attach_fl[i] = dlsym(RTLD_DEFAULT, fl_names[i].name);
    attach(v, rt, ct, dlsym(RTLD_DEFAULT, "PyMem_GetAllocator"),
           dlsym(RTLD_DEFAULT, "PyMem_SetAllocator"));
}

/* ---------------------------------------------------------------- late interpreters */

/* Looks name up in the dynamic symbol table of a loaded object, reading its
 * DT_GNU_HASH table from memory (no dlsym: the flusher must not take the
 * loader lock). NULL when absent or the object has no GNU hash table. */
static const void *dyn_lookup(const struct dl_phdr_info *info, const char *name)
{
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    if (!dyn)
        return NULL;
    const uint32_t *gh = NULL;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        /* ld.so relocates these d_ptr entries in place when it maps the
         * object; one seen before that is still a file address. */
        ElfW(Addr) a = dyn->d_un.d_ptr;
        if (a < info->dlpi_addr)
            a += info->dlpi_addr;
        if (dyn->d_tag == DT_GNU_HASH)
            gh = (const uint32_t *)a;
        else if (dyn->d_tag == DT_SYMTAB)
            symtab = (const ElfW(Sym) *)a;
        else if (dyn->d_tag == DT_STRTAB)
            strtab = (const char *)a;
    }
    if (!gh || !symtab || !strtab)
        return NULL;
    uint32_t h = 5381;
    for (const unsigned char *s = (const unsigned char *)name; *s; s++)
        h = h * 33 + *s;
    uint32_t nbuckets = gh[0], symoffset = gh[1], bloom_size = gh[2], bloom_shift = gh[3];
    if (!nbuckets || !bloom_size)
        return NULL;
    const ElfW(Addr) *bloom = (const ElfW(Addr) *)(gh + 4);
    const uint32_t *buckets = (const uint32_t *)(bloom + bloom_size);
    const uint32_t *chain = buckets + nbuckets;
    const unsigned bits = sizeof(ElfW(Addr)) * 8;
    ElfW(Addr) word = bloom[(h / bits) % bloom_size];
    ElfW(Addr) mask = ((ElfW(Addr))1 << (h % bits)) | ((ElfW(Addr))1 << ((h >> bloom_shift) % bits));
    if ((word & mask) != mask)
        return NULL;
    uint32_t idx = buckets[h % nbuckets];
    if (idx < symoffset)
        return NULL;
    for (;; idx++) {
        uint32_t h2 = chain[idx - symoffset];
        if ((h | 1) == (h2 | 1)) {
            const ElfW(Sym) *s = &symtab[idx];
            if (s->st_shndx != SHN_UNDEF && strcmp(strtab + s->st_name, name) == 0)
                return (const void *)(info->dlpi_addr + s->st_value);
        }
        if (h2 & 1)
            break;
    }
    return NULL;
}

void py_module_added(const struct dl_phdr_info *info, const char *path)
{
    if (atomic_load(&attach_once))
        return;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strncmp(base, "libpython3", 10) != 0)
        return;
    const unsigned long *v = dyn_lookup(info, "Py_Version");
    const void *rt = dyn_lookup(info, "_PyRuntime");
    const void *ct = dyn_lookup(info, "PyCode_Type");
    if (!v || !rt)
        return;
    atomic_store(&attach_once, 1);
    attach_pending = (void *)dyn_lookup(info, "Py_AddPendingCall");
    attach_is_init = (void *)dyn_lookup(info, "Py_IsInitialized");
    for (int i = 0; i < PY_FL_N; i++)
        attach_fl[i] = (void *)dyn_lookup(info, fl_names[i].name);
    if (attach(v, rt, ct, (void *)dyn_lookup(info, "PyMem_GetAllocator"),
               (void *)dyn_lookup(info, "PyMem_SetAllocator")))
        log_msg("Python frames: %s loaded later (CPython %u.%u.%u)", base,
                (unsigned)(*v >> 24), (unsigned)((*v >> 16) & 0xff), (unsigned)((*v >> 8) & 0xff));
    else
        log_msg("%s loaded later: %s", base, status);
}

uint32_t py_version(void)
{
    const py_layout_t *l = atomic_load_explicit(&active, memory_order_acquire);
    return l ? l->version : 0;
}

const _Atomic uintptr_t *py_finalizing_word(void)
{
    /* _PyRuntimeState._finalizing: the thread state finalizing the runtime,
     * set by Py_FinalizeEx after atexit callbacks and thread shutdown. */
    const py_layout_t *l = atomic_load_explicit(&active, memory_order_acquire);
    return l ? (const _Atomic uintptr_t *)(const void *)((const char *)l->rt + l->rt_finalizing)
             : NULL;
}

const char *py_status(void)
{
    return status;
}

/* ---------------------------------------------------------------- capture */

/* Appends s (len bytes) to tb->buf; returns its offset, or UINT16_MAX when
 * it does not fit (the name is then shown as "?"). */
static uint16_t put(py_tb_t *tb, const char *s, size_t len, uint16_t *out_len)
{
    if (len > 255)
        len = 255; /* keep room for the other frames */
    if (tb->used + len > sizeof tb->buf) {
        tb->truncated = 1;
        *out_len = 0;
        return UINT16_MAX;
    }
    uint16_t off = (uint16_t)tb->used;
    memcpy(tb->buf + tb->used, s, len);
    tb->used += (uint32_t)len;
    *out_len = (uint16_t)len;
    return off;
}

/* Copies a str object as UTF-8 without calling into the interpreter: compact
 * ASCII directly, other compact kinds encoded here; anything else is "?".
 * The state bits (interned:2, kind:3, compact:1, ascii:1) are those of 3.11
 * to 3.14's default builds. */
static uint16_t put_str(const py_layout_t *l, py_tb_t *tb, const void *o, uint16_t *out_len)
{
    char tmp[256];
    size_t n = 0;
    if (!o)
        return put(tb, "?", 1, out_len);
    uint32_t state;
    memcpy(&state, (const char *)o + l->un_state, sizeof state);
    int64_t len = (int64_t)rd64(o, l->un_length);
    unsigned kind = (state >> 2) & 7, compact = (state >> 5) & 1, ascii = (state >> 6) & 1;
    if (!compact || len < 0 || (kind != 1 && kind != 2 && kind != 4))
        return put(tb, "?", 1, out_len);
    if (ascii)
        return put(tb, (const char *)o + l->un_ascii_size, (size_t)len, out_len);
    /* Compact non-ASCII: data follows PyCompactUnicodeObject (utf8_length, utf8). */
    const unsigned char *data = (const unsigned char *)o + l->un_ascii_size + 16;
    for (int64_t i = 0; i < len && n + 4 <= sizeof tmp; i++) {
        uint32_t ch;
        if (kind == 1)
            ch = data[i];
        else if (kind == 2) {
            uint16_t c16;
            memcpy(&c16, data + 2 * i, 2);
            ch = c16;
        } else {
            memcpy(&ch, data + 4 * i, 4);
        }
        if (ch < 0x80) {
            tmp[n++] = (char)ch;
        } else if (ch < 0x800) {
            tmp[n++] = (char)(0xc0 | (ch >> 6));
            tmp[n++] = (char)(0x80 | (ch & 0x3f));
        } else if (ch < 0x10000) {
            tmp[n++] = (char)(0xe0 | (ch >> 12));
            tmp[n++] = (char)(0x80 | ((ch >> 6) & 0x3f));
            tmp[n++] = (char)(0x80 | (ch & 0x3f));
        } else {
            tmp[n++] = (char)(0xf0 | (ch >> 18));
            tmp[n++] = (char)(0x80 | ((ch >> 12) & 0x3f));
            tmp[n++] = (char)(0x80 | ((ch >> 6) & 0x3f));
            tmp[n++] = (char)(0x80 | (ch & 0x3f));
        }
    }
    return put(tb, tmp, n, out_len);
}

static unsigned varint(const uint8_t *p, size_t n, size_t *i)
{
    unsigned v = 0, shift = 0;
    while (*i < n) {
        uint8_t b = p[(*i)++];
        v |= (unsigned)(b & 63) << shift;
        shift += 6;
        if (!(b & 64) || shift > 24)
            break;
    }
    return v;
}

static int svarint(const uint8_t *p, size_t n, size_t *i)
{
    unsigned u = varint(p, n, i);
    return (u & 1) ? -(int)(u >> 1) : (int)(u >> 1);
}

int py_line_at(const uint8_t *table, size_t n, int firstlineno, int unit)
{
    int line = firstlineno, addr = 0;
    size_t i = 0;
    while (i < n) {
        uint8_t b = table[i++];
        if (!(b & 0x80))
            return 0; /* not at an entry start: malformed */
        int code = (b >> 3) & 15, len = (b & 7) + 1;
        int has_line = 1;
        if (code == 15) {
            has_line = 0;
        } else if (code == 14) {
            line += svarint(table, n, &i);
            varint(table, n, &i);
            varint(table, n, &i);
            varint(table, n, &i);
        } else if (code == 13) {
            line += svarint(table, n, &i);
        } else if (code >= 10) {
            line += code - 10;
            i += 2;
        } else {
            i += 1;
        }
        if (unit < addr + len)
            return has_line && line > 0 ? line : 0;
        addr += len;
    }
    return 0;
}

/* The tstate of the calling thread if it holds the GIL, else NULL. */
static const void *gil_tstate(const py_layout_t *l, const void *rt, unsigned long self)
{
    if (l->gil == GIL_RUNTIME_TSTATE) {
        const void *ts = rdp(rt, l->rt_tstate);
        return ts && rd64(ts, l->ts_thread_id) == self ? ts : NULL;
    }
    const void *interp = rdp(rt, l->rt_interp_head);
    for (int k = 0; interp && k < INTERP_WALK_MAX; k++) {
        const char *gil = rdp(interp, l->is_ceval_gil);
        if (gil) {
            int locked;
            memcpy(&locked, gil + l->gil_locked, sizeof locked);
            const void *ts = rdp(gil, l->gil_holder);
            if (locked && ts && rd64(ts, l->ts_thread_id) == self)
                return ts;
        }
        interp = rdp(interp, l->is_next);
    }
    return NULL;
}

void py_mem_api(void (**get)(int, py_mem_alloc_t *), void (**set)(int, py_mem_alloc_t *))
{
    const py_layout_t *l = atomic_load_explicit(&active, memory_order_acquire);
    *get = l ? l->mem_get : NULL;
    *set = l ? l->mem_set : NULL;
}

void py_dealloc_set(int i, py_dealloc_t fn)
{
    const py_layout_t *l = atomic_load_explicit(&active, memory_order_acquire);
    if (!l || i < 0 || i >= PY_FL_N || !l->fl_types[i])
        return;
    /* PyTypeObject's head is the same from 3.11 to 3.15 (builds with the
     * GIL): tp_dealloc sits where 3.11's header says. The GIL holder is the
     * only thread that can be deallocating an object meanwhile. */
    ((PyTypeObject *)l->fl_types[i])->tp_dealloc = (destructor)fn;
}

py_dealloc_t py_dealloc_peek(int i, size_t *pre)
{
    const py_layout_t *l = atomic_load_explicit(&active, memory_order_acquire);
    if (!l || i < 0 || i >= PY_FL_N || !l->fl_types[i])
        return NULL;
    const PyTypeObject *t = l->fl_types[i];
    /* A GC type's block starts with the collector's PyGC_Head (two words
     * from 3.11 to 3.15, builds with the GIL); these types have no other
     * pre-header (no managed dict or weakref slot). */
    *pre = (t->tp_flags & Py_TPFLAGS_HAVE_GC) ? sizeof(PyGC_Head) : 0;
    return (py_dealloc_t)t->tp_dealloc;
}

_Atomic int py_domains_hooked;
void (*_Atomic py_domains_poke)(void);

void py_pending_api(int (**pending)(int (*)(void *), void *), int (**is_init)(void))
{
    const py_layout_t *l = atomic_load_explicit(&active, memory_order_acquire);
    *pending = l ? l->pending : NULL;
    *is_init = l ? l->is_init : NULL;
}

int py_holds_gil(void)
{
    const py_layout_t *l = atomic_load_explicit(&active, memory_order_acquire);
    return l && gil_tstate(l, l->rt, (unsigned long)pthread_self()) != NULL;
}

int py_capture(py_tb_t *tb)
{
    tb->n = 0;
    tb->truncated = 0;
    tb->used = 0;
    tb->why = PY_WHY_UNSUPPORTED;
    const py_layout_t *l = atomic_load_explicit(&active, memory_order_acquire);
    if (!l)
        return 0;
    tb->why = PY_WHY_GIL;
    const void *ts = gil_tstate(l, l->rt, (unsigned long)pthread_self());
    if (!ts)
        return 0;
    tb->why = PY_WHY_NO_FRAME;
    const void *holder = ts;
    if (l->ts_cframe && !(holder = rdp(ts, l->ts_cframe)))
        return 0;
    const char *f = rdp(holder, l->ts_frame);
    for (int guard = 0; f && guard < 4096; guard++, f = rdp(f, l->fr_previous)) {
        if (tb->n == PY_FRAMES_MAX) {
            tb->truncated = 1;
            break;
        }
        if ((unsigned char)f[l->fr_owner] >= (unsigned)l->owner_skip)
            continue; /* a C-stack or interpreter shim frame */
        const char *co = (const char *)(uintptr_t)(rd64(f, l->fr_code) & ~l->fr_code_tag);
        if (!co || rdp(co, l->ob_type) != l->code_type)
            continue; /* not a code object (e.g. None in a 3.13 entry frame) */
        const char *code = co + l->co_code;
        const char *ip = rdp(f, l->fr_instr);
        int32_t unit = (int32_t)((ip - code) / 2);
        if (l->co_firsttraceable) {
            /* 3.11: a frame still being set up (prev_instr not past RESUME). */
            int ft;
            memcpy(&ft, co + l->co_firsttraceable, sizeof ft);
            if (unit < ft && f[l->fr_owner] != 1 /* FRAME_OWNED_BY_GENERATOR */)
                continue;
        }
        int firstline;
        memcpy(&firstline, co + l->co_firstlineno, sizeof firstline);
        const char *lt = rdp(co, l->co_linetable);
        int line = 0;
        if (lt && unit >= 0) {
            int64_t n = (int64_t)rd64(lt, l->by_size);
            if (n > 0 && n < (1 << 24))
                line = py_line_at((const uint8_t *)lt + l->by_sval, (size_t)n, firstline, unit);
        }
        const void *name = rdp(co, l->co_qualname);
        if (!name)
            name = rdp(co, l->co_name);
        uint32_t k = tb->n;
        tb->f[k].line = line > 0 ? (uint32_t)line : 0;
        tb->f[k].file = put_str(l, tb, rdp(co, l->co_filename), &tb->f[k].file_len);
        tb->f[k].func = put_str(l, tb, name, &tb->f[k].func_len);
        tb->n++;
    }
    if (tb->n)
        tb->why = PY_WHY_NONE;
    return (int)tb->n;
}
