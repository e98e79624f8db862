/* The agent's own fds: kept at high O_CLOEXEC numbers and re-identified before use. */
#ifndef STACKWATCH_AGENT_FDGUARD_H
#define STACKWATCH_AGENT_FDGUARD_H

#include <sys/types.h>

/* An fd of ours plus the identity it had when we took it. Daemons close and
 * reuse fds (0-2 above all); writing to a reused number would corrupt the
 * host's file, so every use checks dev/ino first. */
typedef struct fdguard_s {
    int fd;        /* -1: none */
    dev_t dev;     /* st_dev when taken */
    ino_t ino;     /* st_ino when taken */
} fdguard_t;

/* Moves fd to a high O_CLOEXEC number (closing the original) and records its
 * identity. Returns 0 or -errno; on failure fd is closed and g->fd = -1. */
int fdguard_take(fdguard_t *g, int fd);

/* Like fdguard_take but duplicates fd and leaves the original open. */
int fdguard_dup(fdguard_t *g, int fd);

/* 1 if g->fd is still the file we took, else 0 (and g->fd is forgotten, not
 * closed: the number belongs to someone else now). */
int fdguard_valid(fdguard_t *g);

/* Closes g->fd if it is still ours; forgets it either way. */
void fdguard_close(fdguard_t *g);

#endif
