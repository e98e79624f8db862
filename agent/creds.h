/* Per-thread credentials the program sets on one thread, mirrored on the flusher thread. */
#ifndef STACKWATCH_AGENT_CREDS_H
#define STACKWATCH_AGENT_CREDS_H

/* The flusher's loop: applies a pending mirrored call to itself (flusher
 * thread only). Cheap when none is pending (one load). */
void creds_apply_pending(void);

/* The flusher thread's tid once it runs (0 before), set by it. */
void creds_set_flusher(int tid);

#endif
