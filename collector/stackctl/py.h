/* The blamed Python frames of a stack, placed among its C frames, for folded, pprof and HTML. */
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

/* Blamed tracebacks of s that have frames, at most cap, in the report's
 * order (most may-leak bytes first). Returns how many. */
size_t cli_py_blamed(const Stackwatch__StackReport *s, const Stackwatch__PyTraceback **out,
                     size_t cap);

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
