/* The agent's lifecycle: start, sessions, fork, the end of the process (exit, main's return). */
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

/* Starts the agent, once per process: from the library's constructor, or
 * from the first allocation of another library's constructor that runs
 * before it (hook.c calls it for both, with this thread's guard set).
 * interposing is hook_interposing()'s answer: 0 leaves the agent dormant
 * (loaded with dlopen, waiting for stackwatch_attach). Sets up, connects and
 * starts the flusher. Returns 1 when this call set the agent up (the caller
 * then enables what the settings ask of the interposers), else 0. */
int agent_init(int interposing);

/* The process begins to end (exit() called, main returned, the interpreter
 * finalizing): from now on it tears itself down, and what it frees is not
 * its behaviour. Stops recording, remembers when and why (why must be a
 * string literal), wakes the flusher to tell collectord. Once per process
 * image; never allocates; safe in the hooks (no lock; one write(2)). */
void agent_begin_end(const char *why);

/* The agent's exit under a name that binds inside it (attach mode's GOT
 * target for exit; see hook_targets). */
void agent_self_exit(int status) __attribute__((noreturn, visibility("hidden")));

#endif
