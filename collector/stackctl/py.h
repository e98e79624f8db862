/* The blamed Python frames of a stack, placed among its C frames: the merged stack of text and HTML, folded, pprof; a stack's name. */
#ifndef STACKWATCH_COLLECTOR_CLI_PY_H
#define STACKWATCH_COLLECTOR_CLI_PY_H

#include <stddef.h>
#include <stdint.h>

#include "proto/stackwatch.pb-c.h"

/* Where the Python frames of s go among its C frames (innermost first): the
 * index of the innermost interpreter frame (_PyEval_EvalFrameDefault and
 * kin), so that they sit after the C frames they run under and before the
 * extension's frames they called. Without one: the innermost frame of a
 * libpython/python module, else n_frames (at the root). */
size_t cli_py_anchor(const Stackwatch__StackReport *s);

/* 1 if fr is the interpreter's own (collector/common/cpython.h): a frame of
 * libpython or of a python3 executable, or the eval loop by name. */
int cli_py_interp(const Stackwatch__Frame *fr);

/* How many times s enters the interpreter's eval loop from C, as far as
 * its frame names say (0: no named eval-loop frame). */
size_t cli_py_entries(const Stackwatch__StackReport *s);

/* Rendering flags of text and HTML reports. */
enum {
    CLI_ALL_FRAMES = 1u, /* --all-frames: the interpreter's own frames too, not folded */
};

/* Rows of the merged stack a person reads (text, HTML), innermost first. */
enum {
    CLI_ROW_FRAME = 1,  /* frames[k] */
    CLI_ROW_FOLD = 2,   /* frames[k, k+n): the interpreter's own, folded to one line */
    CLI_ROW_PYTHON = 3, /* the blamed Python frames go here (k: the frame after them) */
    CLI_ROW_CUT = 4,    /* the C stack was cut at STACKWATCH_DEPTH */
};
typedef void (*cli_row_fn)(void *ctx, int kind, size_t k, size_t n);

/* Calls fn for each row of s, innermost first. The agent records the whole
 * Python stack of an allocation, not which eval-loop frame ran which Python
 * frame, so the Python block (python: there is one to place) goes where the
 * run of interpreter frames holding cli_py_anchor starts: after the
 * extension's C frames, before what called the interpreter; with
 * all_frames just before the anchor frame itself. Without all_frames a run
 * of two or more interpreter frames is one CLI_ROW_FOLD, except that a
 * stack starting in the interpreter (its own allocation) shows its frames
 * up to the anchor. Without an interpreter frame the block comes last
 * (after CLI_ROW_CUT when the stack was cut). */
void cli_py_rows(const Stackwatch__StackReport *s, int python, int all_frames, cli_row_fn fn,
                 void *ctx);

/* The frame a stack is named by (cpython_site): innermost of the frame the
 * Python frames run under, the first that says something and is not
 * CPython's own (a stripped extension's module+offset counts); else the
 * first named frame (the interpreter's own allocation), else one with a
 * module; NULL without frames. Allocation wrappers are already cut by
 * collectord (StackReport.skipped). */
const Stackwatch__Frame *cli_stack_site(const Stackwatch__StackReport *s);

/* The name a stack goes by (HTML "allocated at", the chart's legend):
 * cli_stack_site's short name, then the top blamed Python line:
 * "_multiarray_umath+0xde138 ← leaky.py:27 backtest". Returns buf. */
const char *cli_stack_name(char *buf, size_t cap, const Stackwatch__StackReport *s);

/* Blamed tracebacks of s that have frames, at most cap, in the report's
 * order (most may-leak bytes first). Returns how many. */
size_t cli_py_blamed(const Stackwatch__StackReport *s, const Stackwatch__PyTraceback **out,
                     size_t cap);

/* The top blamed traceback of s that has frames (cli_py_blamed's first), or
 * NULL: the one merged into the stack in text and HTML. */
const Stackwatch__PyTraceback *cli_py_top(const Stackwatch__StackReport *s);

/* Part i of total split among tbs[0..n) by their may-leak (else live) bytes;
 * the parts add up to total. */
uint64_t cli_py_share(uint64_t total, const Stackwatch__PyTraceback *const *tbs, size_t n,
                      size_t i);

/* Why a traceback is or is not blamed, in a few words: blamed (its
 * blocks expired and stay live, or the process ended holding them);
 * "not blamed yet" (some of its blocks are live but none has outlived the
 * expire time: a capture made when the stack turned may-leak is young, so
 * the verdict waits one expire time); "not blamed" (its blocks are freed). */
const char *cli_py_verdict(const Stackwatch__PyTraceback *t);

/* "leaky.py:27 backtest" (file's base name, line, function) into buf. */
const char *cli_py_name(char *buf, size_t cap, const Stackwatch__PyFrame *fr);

#endif
