/* The agent's rare diagnostics: formatted into a stack buffer, written with write(2). */
#ifndef STACKWATCH_AGENT_LOG_H
#define STACKWATCH_AGENT_LOG_H

#include <stdarg.h>
#include <stddef.h>

/* Formats like a small printf: %s %c %d %u %ld %lu %lld %llu %zu %x %lx %llx %p %%.
 * Never allocates, never touches stdio; truncates to cap. Returns the length. */
size_t log_vfmt(char *buf, size_t cap, const char *fmt, va_list ap);
size_t log_fmt(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Opens the log destination from STACKWATCH_LOG (path, "stderr", or "fd:N"),
 * moving the fd to a high O_CLOEXEC number. Safe to call again after fork. */
void log_open(const char *spec);

/* Writes "stackwatch[pid]: message\n" to the log. Safe on the malloc path
 * (one write(2), no allocation); checks the fd is still ours first. */
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The log fd in use (-1: none), for the signal/trigger path. */
int log_fd(void);

/* Closes the log's fd (a detach; log_open opens it again). */
void log_close(void);

#endif
