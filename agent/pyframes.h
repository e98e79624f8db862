/* Python frames of the allocating thread, read synchronously in the hook (CPython 3.11 layouts). */
#ifndef STACKWATCH_AGENT_PYFRAMES_H
#define STACKWATCH_AGENT_PYFRAMES_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define PY_FRAMES_MAX 48
#define PY_STR_MAX 3072

/* One captured traceback, innermost first. Strings live in buf. */
typedef struct py_tb_s {
    uint32_t n;                    /* frames */
    uint32_t truncated;            /* more frames than PY_FRAMES_MAX or than buf holds */
    struct {
        uint32_t line;             /* 0 when unknown */
        uint16_t file, file_len;   /* offsets into buf */
        uint16_t func, func_len;
    } f[PY_FRAMES_MAX];
    uint32_t used;                 /* bytes of buf in use */
    char buf[PY_STR_MAX];
} py_tb_t;

/* Looks for a CPython this module can read (in the main program or a library
 * already loaded): Py_Version, _PyRuntime and PyCode_Addr2Line via dlsym.
 * Constructor only (dlsym takes the loader lock). Never fails: without a
 * known interpreter, captures return 0 and py_status() says why. */
void py_init(void);

/* Py_Version of the interpreter captures work for, 0 if none. */
uint32_t py_version(void);

/* The interpreter's "finalizing" word (non-zero once Py_FinalizeEx began
 * tearing the runtime down), or NULL without a known interpreter. Reading it
 * is one load: safe on the malloc path. */
const _Atomic uintptr_t *py_finalizing_word(void);

/* Why there is no capture ("" when there is). */
const char *py_status(void);

/* Captures the calling thread's Python stack into tb. Only when this thread
 * holds the GIL and its thread state, cframe and current frame are set; it
 * reads interpreter memory, calls PyCode_Addr2Line (which computes without
 * allocating), allocates nothing, takes no lock, runs no Python code and
 * creates no frame objects. Returns the number of frames (0: none now).
 * Safe on the malloc path. */
int py_capture(py_tb_t *tb);

#endif
