/* Calling a function inside another process's stopped thread (ptrace, x86_64). */
#ifndef STACKWATCH_COLLECTOR_INJECT_H
#define STACKWATCH_COLLECTOR_INJECT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

#define INJ_SCRATCH (32u << 10)   /* bytes below the red zone for strings and buffers */

typedef struct inj_s {
    pid_t tid;                          /* the thread (seized, stopped) */
    struct user_regs_struct saved;      /* its registers when stopped */
    unsigned char *xstate;              /* its FPU/SSE/AVX state (NT_X86_XSTATE) */
    size_t xlen;
    int have_xstate;
    uint64_t lo;                        /* scratch area [lo, hi) on its stack */
    uint64_t hi;
    uint64_t next;                      /* allocation pointer, moving down from hi */
    unsigned char *orig;                /* the scratch area's bytes before */
} inj_t;

/* Saves the thread's registers, vector state and the stack area it will
 * use (below the red zone). The thread must be in a ptrace stop with
 * regs (from trc_freeze). Returns 0 or -errno, with a sentence in err. */
int inj_begin(inj_t *j, pid_t tid, const struct user_regs_struct *regs, char *err, size_t errlen);

/* Copies len bytes into the scratch area; sets *addr. Returns 0 or -errno. */
int inj_put(inj_t *j, const void *data, size_t len, uint64_t *addr);

/* Reserves len bytes (zeroed) in the scratch area. */
int inj_reserve(inj_t *j, size_t len, uint64_t *addr);

/* Reads len bytes of the target. Returns 0 or -errno. */
int inj_get(inj_t *j, uint64_t addr, void *buf, size_t len);

/* Calls fn(a0, a1, a2) in the thread: a return address of 0 brings the
 * thread back as a SIGSEGV at address 0, which is taken away. Signals the
 * thread receives meanwhile are delivered. Waits up to timeout_ms. Returns
 * 0 and *ret (rax), or -errno with a sentence in err: the process exited,
 * the call crashed (-EFAULT), it did not return in time (-ETIMEDOUT). */
int inj_call(inj_t *j, uint64_t fn, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t *ret,
             int timeout_ms, char *err, size_t errlen);

/* Puts back the scratch area, the vector state and the registers (a thread
 * stopped in a system call restarts it when released). Returns 0 or
 * -errno. Frees j's buffers. */
int inj_end(inj_t *j);

#endif
