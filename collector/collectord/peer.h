/* The process at the other end of an accepted Unix socket, named by a pidfd. */
#ifndef STACKWATCH_COLLECTOR_PEER_H
#define STACKWATCH_COLLECTOR_PEER_H

#include <sys/types.h>

enum {
    PEER_NONE = 0,     /* no pidfd: the peer is gone, or it could not be verified */
    PEER_KERNEL = 1,   /* SO_PEERPIDFD: the kernel's pidfd of the connecting process */
    PEER_VERIFIED = 2, /* pidfd_open(SO_PEERCRED pid), kept because the peer's end
                        * was still open after it was taken */
};

/* A pidfd of the process that connected fd (pid: its SO_PEERCRED pid), or
 * -1. The socket's SO_PEERPIDFD (Linux 6.5+) where the kernel has it: the
 * connecting process itself, even when it has ended since and its pid
 * been reused. Only where the option is unknown (ENOPROTOOPT), or with
 * STACKWATCH_TEST_NO_PEERPIDFD=1 in the environment (tests): pidfd_open(pid),
 * kept only when the peer's end of the socket is still open afterwards —
 * the pid then still named the process holding it, not a successor.
 * *how (may be NULL) says which (PEER_*). */
int peer_pidfd(int fd, pid_t pid, int *how);

#endif
