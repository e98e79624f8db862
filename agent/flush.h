/* The flusher thread: drains all rings, encodes frames, owns the collector connection. */
#ifndef STACKWATCH_AGENT_FLUSH_H
#define STACKWATCH_AGENT_FLUSH_H

/* Maps the flusher's buffers. Returns 0 or -ENOMEM. Constructor only. */
int flush_init(void);

/* Tries to connect to the collector now (non-blocking connect, retried up to
 * cfg.connect_ms). Returns 0 or -errno. Not for the malloc path except the
 * fork child's first event. */
int flush_connect(void);

/* Starts the flusher thread (all signals blocked, guard set for its life).
 * Returns 0 or -errno. */
int flush_start(void);

/* Exit: asks the flusher for a final drain, Stats and Goodbye, and waits for
 * it a bounded time. Idempotent. */
void flush_final(void);

/* stackctl detach: the last drain, Stats and a Goodbye saying "detached",
 * then the flusher ends and the connection closes; flush_start may run
 * again. Returns 0, or -ETIMEDOUT when the flusher did not finish in time
 * (it is then left alone for good: flush_stuck). */
int flush_detach(void);

/* 1 after a detach whose flusher did not stop. */
int flush_stuck(void);

/* After a detach (the flusher stopped, the GOT restored, recording off):
 * waits up to timeout_ms until no thread is inside the agent's recording
 * path (ring_inside_begin) or pushing an event, so none can touch the
 * agent's fds again. 0, or -EBUSY when one still was at the deadline. */
int flush_quiesce(int timeout_ms);

/* Closes the flusher's eventfd (flush_start makes a new one). Only after
 * flush_quiesce returned 0. */
void flush_close_fds(void);

/* Closes the connection flush_connect opened (attach failed after it). */
void flush_disconnect(void);

/* Records that "no collector" was logged, so a later connection is announced. */
void flush_note_unreachable(void);

/* Fork child: forgets the parent's connection (closing our copies of its fds,
 * never shutting them down) and the thread. */
void flush_fork_child(void);

/* STACKWATCH_SCAN_AT_EXIT: the process is about to end (exit, main
 * returned, Python finalizing): asks the collector for a reachability scan
 * of it now and waits until it is over, at most STACKWATCH_SCAN_AT_EXIT_WAIT
 * seconds; at once without a collector, or when it is stopped. The first
 * thread asks; another one ending meanwhile waits for the same scan. */
void flush_scan_at_end(const char *why);

#endif
