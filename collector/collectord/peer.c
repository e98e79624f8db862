/* The process at the other end of an accepted Unix socket, named by a pidfd. */
#include "peer.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5; Debian 12's headers predate it */
#endif

static int no_peerpidfd(void)
{
    const char *v = getenv("STACKWATCH_TEST_NO_PEERPIDFD");
    return v && strcmp(v, "1") == 0;
}

int peer_pidfd(int fd, pid_t pid, int *how)
{
    int dummy;
    if (!how)
        how = &dummy;
    *how = PEER_NONE;
    if (!no_peerpidfd()) {
        int pidfd = -1;
        socklen_t len = sizeof pidfd;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 && pidfd >= 0) {
            *how = PEER_KERNEL;
            return pidfd;
        }
        /* Known to the kernel but refused (the peer already ended, on the
         * kernels that give no pidfd of an ended process; no peer pid):
         * nothing names the peer, and a pid must not stand in for it. */
        if (errno != ENOPROTOOPT)
            return -1;
    }
    if (pid <= 0)
        return -1;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0)
        return -1;
    /* The pid names the connecting process only if that process still
     * lived when pidfd_open ran: its end of the socket closes when it
     * exits, before its pid can be reused. Still open now: the pidfd is
     * its (unless it passed the socket on before ending). */
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    int rc;
    do
        rc = poll(&p, 1, 0);
    while (rc < 0 && errno == EINTR);
    if (rc != 0 || (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL))) {
        close(pidfd);
        return -1;
    }
    *how = PEER_VERIFIED;
    return pidfd;
}
