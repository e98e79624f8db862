/* The agent's own fds: kept at high O_CLOEXEC numbers and re-identified before use. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Lowest number we move to: high enough that close(0..2)/dup2 games and
 * "close every fd below 256" loops leave it alone, low enough for the soft
 * RLIMIT_NOFILE (often 1024). */
static int high_floor(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        if (rl.rlim_cur > 1100)
            return 1000;
        if (rl.rlim_cur > 64)
            return (int)rl.rlim_cur - 32;
        return 3;
    }
    return 1000;
}

static int record(fdguard_t *g, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        g->fd = -1;
        return -e;
    }
    g->fd = fd;
    g->dev = st.st_dev;
    g->ino = st.st_ino;
    return 0;
}

int fdguard_dup(fdguard_t *g, int fd)
{
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, high_floor());
    if (nfd < 0)
        nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (nfd < 0) {
        g->fd = -1;
        return -errno;
    }
    return record(g, nfd);
}

int fdguard_take(fdguard_t *g, int fd)
{
    int rc = fdguard_dup(g, fd);
    close(fd);
    return rc;
}

int fdguard_valid(fdguard_t *g)
{
    if (g->fd < 0)
        return 0;
    struct stat st;
    if (fstat(g->fd, &st) < 0 || st.st_dev != g->dev || st.st_ino != g->ino) {
        g->fd = -1;
        return 0;
    }
    return 1;
}

void fdguard_close(fdguard_t *g)
{
    if (fdguard_valid(g))
        close(g->fd);
    g->fd = -1;
}
