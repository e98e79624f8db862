/* One request/reply exchange on collectord's control socket, and finding the collectord behind it (used by stackctl and collectord stop/status). */
#include "cli_call.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include "frame.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5; Debian 12's headers predate it */
#endif

/* Connects to the control socket at path and reads the listener's
 * credentials. Returns the fd, or -errno; -EPERM (fd closed, *cr set) when
 * the listener is neither of our uid nor (unless own_only) root. */
static int control_connect(const char *path, int own_only, struct ucred *cr)
{
    memset(cr, 0, sizeof *cr);
    int fd = rundir_connect(path);
    if (fd < 0)
        return fd;
    socklen_t clen = sizeof *cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cr, &clen) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    /* A collectord of another user (a directory someone else made) gets
     * neither our queries nor our trigger rules. */
    if (cr->uid != geteuid() && (own_only || cr->uid != 0)) {
        close(fd);
        return -EPERM;
    }
    return fd;
}

int cli_exchange(int fd, const Stackwatch__Request *req, int timeout_ms, Stackwatch__Reply **out)
{
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    size_t n = frame_size(&req->base);
    uint8_t *buf = malloc(n);
    int rc = -ENOMEM;
    if (!buf)
        goto out;
    if (frame_encode(&req->base, buf, n, 1u << 20) != n) {
        rc = -EMSGSIZE;
        goto out;
    }
    rc = frame_write_all(fd, buf, n);
    if (rc < 0)
        goto out;
    uint8_t *payload = NULL;
    uint32_t len = 0;
    rc = frame_read_one(fd, FRAME_MAX_CONTROL, &payload, &len);
    if (rc == -EAGAIN || rc == -EWOULDBLOCK)
        rc = -ETIMEDOUT;
    if (rc < 0)
        goto out;
    *out = stackwatch__reply__unpack(NULL, len, payload);
    free(payload);
    rc = *out ? 0 : -EPROTO;
out:
    free(buf);
    return rc;
}

int cli_call(const char *path, const Stackwatch__Request *req, int timeout_ms,
             Stackwatch__Reply **out)
{
    struct ucred cr;
    int fd = control_connect(path, 0, &cr);
    if (fd < 0)
        return fd;
    int rc = cli_exchange(fd, req, timeout_ms, out);
    close(fd);
    return rc;
}

int cli_find(const rundir_t *rd, int own_only, int timeout_ms, cli_daemon_t *d)
{
    memset(d, 0, sizeof *d);
    d->pidfd = -1;
    d->fd = -1;
    struct ucred cr;
    int fd = control_connect(rd->control_sock, own_only, &cr);
    d->pid = cr.pid;
    d->uid = cr.uid;
    if (fd < 0)
        return fd;
    /* The kernel's own reference to the listener; else one by its pid,
     * which the answer below must vouch for. */
    int from_kernel = 1;
    socklen_t plen = sizeof d->pidfd;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &d->pidfd, &plen) < 0) {
        /* A kernel without it (before 6.5); any other error (ESRCH: the
         * process that listened is gone) leaves no pidfd at all. */
        d->pidfd = errno == ENOPROTOOPT || errno == EINVAL
                       ? (int)syscall(SYS_pidfd_open, cr.pid, 0) : -1;
        from_kernel = 0;
    }
    Stackwatch__Ping ping = STACKWATCH__PING__INIT;
    Stackwatch__Request req = STACKWATCH__REQUEST__INIT;
    req.req_case = STACKWATCH__REQUEST__REQ_PING;
    req.ping = &ping;
    Stackwatch__Reply *rep = NULL;
    int rc = cli_exchange(fd, &req, timeout_ms, &rep);
    if (rc == 0 && (rep->body_case != STACKWATCH__REPLY__BODY_PONG || !rep->pong))
        rc = -EPROTO;
    else if (rc == 0 && (pid_t)rep->pong->pid != cr.pid)
        rc = -ESRCH;
    if (rc == 0) {
        d->clients = rep->pong->clients;
        d->expire_ms = rep->pong->expire_ms;
        snprintf(d->dir, sizeof d->dir, "%s", rep->pong->dir ? rep->pong->dir : "");
        d->fd = fd;
    } else {
        close(fd);
        /* Only a listener that is there but silent (hung) keeps the
         * kernel's pidfd: one by pid is vouched for by nothing, and one
         * that answered with another pid is not the collectord it says. */
        if ((!from_kernel || rc != -ETIMEDOUT) && d->pidfd >= 0) {
            close(d->pidfd);
            d->pidfd = -1;
        }
    }
    if (rep)
        stackwatch__reply__free_unpacked(rep, NULL);
    return rc;
}

void cli_daemon_close(cli_daemon_t *d)
{
    if (d->fd >= 0)
        close(d->fd);
    if (d->pidfd >= 0)
        close(d->pidfd);
    d->fd = d->pidfd = -1;
}

int cli_resolve_dir(rundir_t *rd, const char *dir, const char *prog)
{
    char err[RUNDIR_MAX + 256];
    int rc = rundir_resolve(rd, dir, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "%s: %s\n", prog, err);
    return rc;
}
