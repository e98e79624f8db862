/* Stopping every thread of a process with ptrace, reading their registers, letting them go. */
#ifndef STACKWATCH_COLLECTOR_TRACEE_H
#define STACKWATCH_COLLECTOR_TRACEE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

typedef struct trc_thread_s {
    pid_t tid;
    int stopped;                    /* in a ptrace stop, regs valid */
    int sig;                        /* a signal it stopped with, delivered on release */
    struct user_regs_struct regs;   /* as stopped */
} trc_thread_t;

typedef struct trc_s {
    pid_t pid;
    trc_thread_t *t;
    size_t n, cap;
    uint64_t stop_ns;               /* CLOCK_MONOTONIC when the first thread was interrupted */
} trc_t;

/* Seizes and stops every thread of pid but skip (0: none), again for
 * threads created meanwhile, until no new one appears; waits up to
 * wait_ms for each to stop and reads its registers (a thread that does not
 * stop in time, e.g. in uninterruptible sleep, stays seized with stopped 0;
 * it cannot run user code before it is released). Returns 0, or -errno with
 * a sentence in err (see trc_explain). On error nothing stays seized. */
int trc_freeze(trc_t *tr, pid_t pid, pid_t skip, int wait_ms, char *err, size_t errlen);

/* Lets every seized thread but keep (0: none) go, delivering any signal it
 * stopped with; forgets them. */
void trc_release_except(trc_t *tr, pid_t keep);

/* Lets every thread go and frees the table. */
void trc_release(trc_t *tr);

/* Why ptrace of pid failed with err, and what to do, as one sentence:
 * no such process, another tracer, another user, a non-dumpable process,
 * Yama's ptrace_scope. Writes to buf (NUL-terminated). */
void trc_explain(pid_t pid, int err, char *buf, size_t len);

/* Yama's kernel.yama.ptrace_scope, or -1 without Yama. */
int trc_yama_scope(void);

/* CLOCK_MONOTONIC in ns. */
uint64_t trc_now_ns(void);

#endif
