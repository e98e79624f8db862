/* The agent's lifecycle: start (constructor, attach), fork, the end of the process. */
#ifndef STACKWATCH_AGENT_AGENT_H
#define STACKWATCH_AGENT_AGENT_H

/* Everything but the connection and the flusher: identity, settings (from
 * the environment, or from stackctl attach's list when list is not NULL),
 * tables. Returns 0, or -errno with the reason logged. Once per process. */
int agent_setup(const char *list);

/* A new identity for a new tracing session of this process (attach):
 * instance, pid, start time. */
void agent_new_session(void);

/* Fork child: starts the agent for this process on its first event (connect
 * and flusher thread). Called from the hook with the guard set. Returns 1 if
 * the child now records. */
int agent_child_start(void);

/* Called from a hook before the agent's constructor ran (another library's
 * constructor allocating first): starts the agent now, with this thread's
 * guard set by the caller. Returns 1 if it records. */
int agent_early_start(void);

/* The process begins to end (exit() called, main returned, the interpreter
 * finalizing): from now on it tears itself down, and what it frees is not
 * its behaviour. Stops recording, remembers when and why (why must be a
 * string literal), wakes the flusher to tell collectord. Once per process
 * image; never allocates; safe in the hooks (no lock; one write(2)). */
void agent_begin_end(const char *why);

#endif
