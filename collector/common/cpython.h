/* Which frames of a C stack are CPython's own, and a frame's short name: shared by stackctl's reports and collectord's metrics. */
#ifndef STACKWATCH_COLLECTOR_CPYTHON_H
#define STACKWATCH_COLLECTOR_CPYTHON_H

#include <stddef.h>
#include <stdint.h>

/* 1 if a frame is the interpreter's own: its module is libpython* or a
 * python3* executable (the eval loop, call machinery, start-up), or, in any
 * module (an embedding program linking libpython statically), its function
 * is the eval loop (_PyEval_EvalFrame*, PyEval_EvalCode*). module (a path)
 * and function may be NULL or "". An extension module (numpy's
 * _multiarray_umath.cpython-311-....so) is not the interpreter. */
int cpython_frame(const char *module, const char *function);

/* 1 if function is the eval loop that runs Python frames
 * (_PyEval_EvalFrame*): one per entry into the interpreter from C. */
int cpython_eval_loop(const char *function);

/* What cpython_anchor and cpython_site read of frame k of a stack
 * (innermost first): its module path and function, each NULL or "" when
 * unknown. */
typedef struct cpython_fr_s {
    const char *module, *function;
} cpython_fr_t;
typedef cpython_fr_t (*cpython_at_fn)(const void *ctx, size_t k);

/* The frame the Python frames of an allocation run under: the innermost
 * eval loop by name (_PyEval_EvalFrame*, PyEval_EvalCode: in Debian's 3.14
 * and 3.15 the loop itself is nameless and PyEval_EvalCode is a few frames
 * further out), else the innermost frame of CPython's modules; n when none. */
size_t cpython_anchor(const void *ctx, size_t n, cpython_at_fn at);

/* The frame a stack is named by: innermost of cpython_anchor, the first
 * frame that says something (a name or a module: a stripped extension's
 * module+offset counts) and is not CPython's own (the C code a Python line
 * called); without one (the interpreter's own allocation, a C program's
 * frames without names) the first named frame, else the first with a
 * module, else 0. n when n is 0. */
size_t cpython_site(const void *ctx, size_t n, cpython_at_fn at);

/* A frame's name in a few characters, for a stack's name: its function,
 * else its module's base name up to the first '.' and the offset
 * ("_multiarray_umath+0xde138"), else "0x" and its address. Returns buf. */
const char *cpython_short_name(char *buf, size_t cap, const char *module, const char *function,
                               uint64_t module_offset, uint64_t addr);

#endif
