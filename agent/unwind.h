/* Stack capture with libunwind's unw_backtrace, minus the agent's own frames. */
#ifndef STACKWATCH_AGENT_UNWIND_H
#define STACKWATCH_AGENT_UNWIND_H

#include <stdint.h>

/* Frames the agent itself may add above the caller (hook + record path). */
#define UNWIND_SKIP_MAX 12

/* Sets libunwind's per-thread cache and finds the agent's own address range.
 * Returns 0 or -errno. Constructor only. */
int unwind_init(void);

/* Captures up to depth return addresses of the caller, innermost first, into
 * out (room for depth entries), leaving out the agent's frames. Sets
 * *truncated when deeper frames were cut. Returns the number of frames, 0 when
 * nothing could be captured. Safe on the malloc path (no lock, no malloc,
 * given libunwind's per-thread cache). */
int unwind_capture(uint64_t *out, int depth, int *truncated);

/* 1 if pc lies inside the agent library. */
int unwind_is_self(uint64_t pc);

#endif
