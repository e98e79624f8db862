/* One request/reply exchange on collectord's control socket (used by stackctl and collectord stop/status). */
#include "cli_call.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "frame.h"
#include "rundir.h"

int cli_call(const char *path, const Stackwatch__Request *req, int timeout_ms,
             Stackwatch__Reply **out)
{
    int fd = rundir_connect(path);
    if (fd < 0)
        return fd;
    /* A collectord of another user (a directory someone else made) gets
     * neither our queries nor our trigger rules. */
    struct ucred cr;
    socklen_t clen = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &clen) < 0 ||
        (cr.uid != geteuid() && cr.uid != 0)) {
        close(fd);
        return -EPERM;
    }
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
    close(fd);
    return rc;
}
