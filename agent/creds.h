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

#endif
