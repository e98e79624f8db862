/* Stack capture: libunwind's unw_backtrace, or a validated frame-pointer walk with a cached tail. */
#ifndef STACKWATCH_AGENT_UNWIND_H
#define STACKWATCH_AGENT_UNWIND_H

#include <stdint.h>

/* Frames the agent itself may add above the caller (hook + record path). */
#define UNWIND_SKIP_MAX 12

/* Modules whose frame pointers may be walked, at most. */
#define UNWIND_FP_MODULES 16
/* Captures compared with libunwind before a module's frame pointers are trusted. */
#define UNWIND_FP_CHECKS 32

/* Sets libunwind's per-thread cache and finds the agent's own address range.
 * mode is UNWIND_DWARF or UNWIND_FP (config.h); with UNWIND_FP the main executable and
 * modules whose path matches fp_globs (comma-separated fnmatch, may be NULL;
 * kept, not copied) become frame-pointer candidates as the module map reports
 * them. Returns 0 or -errno. Constructor only, before modmap_init. */
int unwind_init(int mode, const char *fp_globs);

/* Closes the pipe libunwind opened to validate addresses (its static
 * mem_validate_pipe, found in libunwind's initialized data as the one pair
 * of fds that are the two ends of one O_NONBLOCK|O_CLOEXEC pipe) and sets
 * the pair to -1: libunwind opens a new pipe when it validates again. For
 * a detach, when no thread can be inside libunwind. Returns the fds
 * closed (0 or 2), or -ENOENT when no such pair was found (nothing done). */
int unwind_close_fds(void);

/* The module map saw a module load / unload (under its lock: one writer). */
void unwind_module_added(const char *path, int is_exe, uint64_t lo, uint64_t hi);
void unwind_module_removed(uint64_t lo, uint64_t hi);

/* Calls of the program's pthread_getattr_np this thread is inside (hook.c's
 * interposer counts them): glibc's holds the thread's lock, which asking for
 * the stack bounds would take again, so captures do without them meanwhile. */
extern __thread uint32_t unwind_in_getattr __attribute__((tls_model("initial-exec")));

/* Bytes of per-thread unwinder state (the caller provides them, zeroed). */
#define UNWIND_THREAD_BYTES 4096

/* Gives the calling thread its unwinder state (UNWIND_THREAD_BYTES of
 * zeroed memory that outlives the thread's captures), or NULL to take it
 * away. Without it only libunwind is used (no frame-pointer walk, no stack
 * cache). Safe on the malloc path. */
void unwind_thread_set(void *mem);

/* Captures up to depth return addresses of the caller, innermost first, into
 * out (room for depth entries), leaving out the agent's frames. Sets
 * *truncated when deeper frames were cut. Returns the number of frames, 0 when
 * nothing could be captured. Safe on the malloc path (no lock, no malloc,
 * given libunwind's per-thread cache; the frame-pointer walk reads only this
 * thread's stack and touches libunwind on a cache miss). */
int unwind_capture(uint64_t *out, int depth, int *truncated);

/* The agent library's address range [lo, hi). Returns 0, or -ENOENT before
 * unwind_init found it. */
int unwind_self_range(uint64_t *lo, uint64_t *hi);

/* 1 if pc lies inside the agent library. */
int unwind_is_self(uint64_t pc);

/* Code in [lo, hi) runs the app's code (the main wrapper): its frames are
 * dropped wherever they are in a stack. Set once at start. */
void unwind_hide_range(uint64_t lo, uint64_t hi);

/* Words of stack unwind_find_slots may scan for one capture. */
#define UNWIND_SCAN_MAX 32768u

/* 1 when addr (8 bytes, aligned) lies on this thread's own stack (not a
 * coroutine's, not a signal stack). */
int unwind_on_stack(uint64_t addr);

/* Where each return address of a just-captured stack (pcs[0] stored at
 * slot0) is stored: the first word above the previous one holding it, on
 * this thread's stack. Fills off[0..n) with their offsets from slot0.
 * Returns 1, or 0 when one is not found within the stack (or
 * UNWIND_SCAN_MAX words). */
int unwind_find_slots(const uint64_t *pcs, int n, uint64_t slot0, uint32_t *off);

/* A thread's stack as its unwinder state (uwt, see unwind_thread_set) saw
 * it: [lo, hi) the whole stack, [lo, frames_hi) where its frames were (up to
 * the outermost return address a capture found; the thread's TCB and static
 * TLS lie above). Returns 1, or 0 when not known. Any thread may call it on
 * the state of a thread that is gone. */
int unwind_state_frames(const void *uwt, uint64_t *lo, uint64_t *frames_hi, uint64_t *hi);

/* 1 when every slot0 + off[k] (k >= 1) still holds pcs[k]: the frames
 * outward of a frame at the same place are the same activations as when
 * captured. The slots lie between the caller's frame (slot0, checked with
 * unwind_on_stack) and the top of this thread's stack, so they are mapped. */
static inline int unwind_still(const uint64_t *pcs, uint64_t slot0, const uint32_t *off, int n)
{
    /* Plain loads: the slots are this thread's live frames, which nothing
     * in this function writes; the barrier keeps them from being read
     * before the caller's own stores (or cached across calls). */
    const unsigned char *base = (const unsigned char *)(uintptr_t)slot0;
    __asm__ volatile("" ::: "memory");
#define UNWIND_AT(k) (*(const uint64_t *)(const void *)(base + off[k]))
    int k = 1;
    /* Four at a time, one branch each: a hit reads them all anyway. */
    for (; k + 4 <= n; k += 4) {
        uint64_t d = (UNWIND_AT(k) ^ pcs[k]) | (UNWIND_AT(k + 1) ^ pcs[k + 1]) |
                     (UNWIND_AT(k + 2) ^ pcs[k + 2]) | (UNWIND_AT(k + 3) ^ pcs[k + 3]);
        if (d)
            return 0;
    }
    for (; k < n; k++)
        if (UNWIND_AT(k) != pcs[k])
            return 0;
    return 1;
#undef UNWIND_AT
}

#endif
