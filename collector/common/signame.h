/* Signal names for the command line: "USR1", "SIGUSR1" or a number. */
#ifndef STACKWATCH_COLLECTOR_SIGNAME_H
#define STACKWATCH_COLLECTOR_SIGNAME_H

#include <stddef.h>

/* Parses "USR1", "SIGUSR1" (any case) or a number 1..64. SIGKILL and
 * SIGSTOP cannot be caught, so they are refused. Returns the signal or -EINVAL. */
int signame_parse(const char *s);

/* "SIGUSR1" for SIGUSR1, the number as text for others, "" for 0. */
const char *signame_name(int sig, char *buf, size_t len);

#endif
