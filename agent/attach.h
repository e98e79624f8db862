/* stackctl attach and detach: the entry points the injector calls in a running process. */
#ifndef STACKWATCH_AGENT_ATTACH_H
#define STACKWATCH_AGENT_ATTACH_H

#include <stddef.h>

/* Starts tracing in a process the agent was loaded into with dlopen:
 * settings from list ("NAME=value\0...\0\0": stackctl's STACKWATCH_*
 * variables and the collector's directory), connects, starts the flusher,
 * patches the GOT entries. Blocks allocated before are unknown to the
 * collector (their frees count as unknown_frees). On success 0 and a
 * summary in msg; else -errno and the reason in msg (NUL-terminated,
 * msglen > 0). Called by stackctl through ptrace, in a thread it stopped
 * outside the allocator and the loader: not for the malloc path. */
int stackwatch_attach(const char *list, char *msg, size_t msglen);

/* Stops tracing: restores the GOT entries, sends the last events and a
 * Goodbye saying "detached", stops the flusher. The library stays mapped
 * (code of it may still be on some thread's stack); stackwatch_attach can
 * start again. 0, or -errno with the reason in msg. */
int stackwatch_detach(char *msg, size_t msglen);

#endif
