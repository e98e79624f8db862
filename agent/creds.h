/* Per-thread credentials the program sets on one thread, mirrored on the flusher thread. */
#ifndef STACKWATCH_AGENT_CREDS_H
#define STACKWATCH_AGENT_CREDS_H

/* The flusher's loop: applies a pending mirrored call to itself (flusher
 * thread only). Cheap when none is pending (one load). */
void creds_apply_pending(void);

/* The flusher thread's tid once it runs, set by it; CREDS_FLUSHER_STARTING
 * from its creator just before pthread_create (it exists, tid not known yet:
 * calls are mirrored already, it applies them when it first runs); 0: none. */
#define CREDS_FLUSHER_STARTING (-1)
void creds_set_flusher(int tid);

/* Seccomp strict mode (prctl(PR_SET_SECCOMP), seccomp(2) through
 * syscall(2)): creds_strict_begin before the call sets the thread's guard
 * (returns its previous value), creds_strict_end after it keeps it set for
 * good when the call succeeded (rc 0), else restores it. */
int creds_strict_begin(void);
void creds_strict_end(int guard, long rc);

/* The system call n, made directly (x86-64): -1 and errno on failure. */
long creds_raw_syscall6(long n, long a, long b, long c, long d, long e, long f);

#endif
