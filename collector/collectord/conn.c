/* A connection to collectord (agent or stackctl): its watchers, buffers and frame dispatch. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "client.h"
#include "ctl.h"
#include "ingest.h"
#include "peer.h"
#include "srv.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_idle_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* Read buffers start small (an idle connection costs little) and grow with
 * what arrives, up to the kind's maximum frame. */
#define CONN_RD_AGENT (64u << 10)
#define CONN_RD_CONTROL (4u << 10)

/* The start time of the process behind pidfd (field 22 of /proc/pid/stat),
 * or 0. Read while the pidfd holds it, and kept only if the process is still
 * alive after the read: then pid could not have been reused in between. */
static uint64_t proc_start(pid_t pid, int pidfd)
{
    if (pidfd < 0)
        return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
    if (!p)
        return 0;
    unsigned long long start = 0;
    /* after ") ": state(3) then fields 4..21, starttime is 22 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               &start) != 1)
        return 0;
    if (syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0)
        return 0;
    return start;
}

conn_t *conn_new(srv_t *srv, int fd, int kind)
{
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    uint32_t max = kind == CONN_AGENT ? FRAME_MAX_AGENT : CONN_REQUEST_MAX;
    if (frame_rd_init(&c->rd, kind == CONN_AGENT ? CONN_RD_AGENT : CONN_RD_CONTROL, max) < 0) {
        free(c);
        close(fd);
        return NULL;
    }
    c->srv = srv;
    c->fd = fd;
    c->kind = kind;
    struct ucred cr;
    socklen_t len = sizeof cr;
    c->pidfd = -1;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0) {
        c->peer_pid = cr.pid;
        c->peer_uid = cr.uid;
        /* Taken now, from the kernel's word for the peer (SO_PEERPIDFD, or
         * a pidfd_open verified against the socket): a signal can only
         * ever reach this process, even after it exits and its pid is reused. */
        if (cr.pid > 0)
            c->pidfd = peer_pidfd(fd, cr.pid, NULL);
    }
    if (c->peer_pid > 0) {
        /* Per-process limits: one process, however many connections or
         * instance tokens it uses, gets CPROC_CONNS_MAX connections of a kind. */
        cproc_t *p = cproc_get(&srv->clients, (uint32_t)c->peer_pid,
                               proc_start(c->peer_pid, c->pidfd));
        if (p && p->conns[kind] >= CPROC_CONNS_MAX) {
            srv_log_throttled(&srv->log_many, "too many connections from pid %d (%u %s "
                              "connections open); refusing one", (int)c->peer_pid,
                              CPROC_CONNS_MAX, kind == CONN_AGENT ? "agent" : "control");
            if (c->pidfd >= 0)
                close(c->pidfd);
            frame_rd_free(&c->rd);
            free(c);
            close(fd);
            return NULL;
        }
        if (p) {
            cproc_ref(p);
            p->conns[kind]++;
            c->proc = p;
        }
    }
    if (kind != CONN_AGENT && c->pidfd >= 0) {
        close(c->pidfd); /* only agents are signalled */
        c->pidfd = -1;
    }
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    ev_io_start(srv->loop, &c->rio);
    double idle = (double)(srv->opts.idle_ns ? srv->opts.idle_ns : SRV_IDLE_NS) / 1e9;
    ev_timer_init(&c->idle, conn_idle_cb, idle, idle);
    ev_timer_start(srv->loop, &c->idle);
    c->active_ts = ev_now(c->srv->loop);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    return c;
}

void conn_close(conn_t *c, const char *reason)
{
    srv_t *srv = c->srv;
    if (reason)
        srv_log("closing %s connection (pid %d): %s", c->kind == CONN_AGENT ? "agent" : "control",
                (int)c->peer_pid, reason);
    ev_io_stop(srv->loop, &c->rio);
    ev_io_stop(srv->loop, &c->wio);
    ev_timer_stop(srv->loop, &c->idle);
    close(c->fd);
    if (c->pidfd >= 0)
        close(c->pidfd);
    srv_conn_gone(srv, c);
    if (c->proc) {
        c->proc->conns[c->kind]--;
        cproc_unref(c->proc);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    frame_rd_free(&c->rd);
    free(c->out);
    free(c);
}

static int flush_out(conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            c->out_off += (size_t)w;
            c->active_ts = ev_now(c->srv->loop);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return 0;
        return -errno;
    }
    c->out_off = c->out_len = 0;
    if (c->out_cap > (1u << 20)) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    return 1;
}

int conn_send(conn_t *c, const uint8_t *buf, size_t len)
{
    size_t pending = c->out_len - c->out_off;
    if (pending + len > (c->kind == CONN_AGENT ? CONN_OUT_MAX_AGENT : CONN_OUT_MAX_CONTROL))
        return -ENOBUFS;
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + len > c->out_cap) {
        if (c->out_off > 0) {
            memmove(c->out, c->out + c->out_off, pending);
            c->out_len = pending;
            c->out_off = 0;
        }
        if (c->out_len + len > c->out_cap) {
            size_t ncap = c->out_cap ? c->out_cap : 4096;
            while (ncap < c->out_len + len)
                ncap *= 2;
            uint8_t *nb = realloc(c->out, ncap);
            if (!nb)
                return -ENOMEM;
            c->out = nb;
            c->out_cap = ncap;
        }
    }
    memcpy(c->out + c->out_len, buf, len);
    c->out_len += len;
    int rc = flush_out(c);
    if (rc < 0)
        return rc;
    if (rc == 0)
        ev_io_start(c->srv->loop, &c->wio);
    return 0;
}

int conn_send_msg(conn_t *c, const void *msg, uint32_t max)
{
    const ProtobufCMessage *m = msg;
    size_t n = frame_size(m);
    if (n - FRAME_HDR > max)
        return -EMSGSIZE;
    uint8_t *buf = malloc(n);
    if (!buf)
        return -ENOMEM;
    size_t w = frame_encode(m, buf, n, max);
    int rc = w ? conn_send(c, buf, w) : -EMSGSIZE;
    free(buf);
    return rc;
}

/* A control connection is read only while none of its replies waits to be
 * sent: a client that sends requests and never reads gets one reply queued,
 * not one per request. */
static int conn_blocked(const conn_t *c)
{
    return c->kind == CONN_CONTROL && c->out_len > c->out_off;
}

/* Hands every whole frame buffered to its handler, stopping early while the
 * connection is blocked. Returns 0, or -1 when c was closed. */
static int conn_dispatch(conn_t *c)
{
    const uint8_t *payload;
    uint32_t len;
    int rc = 0;
    while (!conn_blocked(c) && (rc = frame_rd_next(&c->rd, &payload, &len)) == 1) {
        c->frames_in++;
        c->srv->frames_total++;
        if (c->kind == CONN_CONTROL)
            c->active_ts = ev_now(c->srv->loop);
        int hr = c->kind == CONN_AGENT ? ingest_frame(c, payload, len)
                                       : ctl_request(c, payload, len);
        if (hr < 0)
            return -1; /* the handler closed the connection */
    }
    if (rc < 0) {
        c->srv->bad_frames++;
        conn_close(c, "frame length exceeds the maximum");
        return -1;
    }
    if (c->kind == CONN_AGENT && c->hello_seen && ev_is_active(&c->idle))
        ev_timer_stop(c->srv->loop, &c->idle); /* an agent may be quiet for hours */
    if (conn_blocked(c))
        ev_io_stop(c->srv->loop, &c->rio);
    return 0;
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_t *c = container_of(w, conn_t, wio);
    int rc = flush_out(c);
    if (rc < 0) {
        conn_close(c, c->kind == CONN_AGENT ? "write failed" : NULL);
        return;
    }
    if (rc == 1) {
        ev_io_stop(c->srv->loop, &c->wio);
        if (c->kind == CONN_CONTROL && !ev_is_active(&c->rio)) {
            /* Its reply is out: requests it sent meanwhile, then more. */
            if (conn_dispatch(c) < 0)
                return;
            if (!conn_blocked(c))
                ev_io_start(c->srv->loop, &c->rio);
        }
    }
}

/* Every opts.idle_ns: an agent still without Hello is closed (then the timer
 * stops for good at its Hello); a control connection is closed when nothing
 * happened for that long (no whole request, no byte of a pending reply
 * taken) unless a request of it is parked (it has its own deadline). */
static void conn_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_t *c = container_of(w, conn_t, idle);
    srv_t *s = c->srv;
    uint64_t limit = s->opts.idle_ns ? s->opts.idle_ns : SRV_IDLE_NS;
    if (c->kind == CONN_AGENT) {
        if (c->hello_seen)
            ev_timer_stop(s->loop, &c->idle);
        else
            conn_close(c, "no Hello within the idle timeout");
        return;
    }
    if (c->parked || ev_now(s->loop) - c->active_ts < (double)limit / 1e9)
        return;
    conn_close(c, c->out_len > c->out_off ? "its reply stayed unread past the idle timeout"
                                          : "no whole request within the idle timeout");
}

/* Reads and dispatches up to budget bytes. Returns 1 when the budget was
 * used (more may be pending), 0 at EAGAIN or while blocked, -1 when c was
 * closed (end of stream, error, or by a handler). */
static int conn_read_some(conn_t *c, size_t budget)
{
    while (budget > 0) {
        size_t avail;
        uint8_t *sp = frame_rd_space(&c->rd, &avail);
        if (!sp) {
            conn_close(c, "out of memory for its frames");
            return -1;
        }
        if (avail > budget)
            avail = budget;
        ssize_t r = recv(c->fd, sp, avail, MSG_DONTWAIT);
        if (r == 0) {
            if (frame_rd_pending(&c->rd) && c->kind == CONN_AGENT)
                conn_close(c, "connection ended inside a frame");
            else
                conn_close(c, NULL);
            return -1;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            conn_close(c, strerror(errno));
            return -1;
        }
        budget -= (size_t)r;
        frame_rd_commit(&c->rd, (size_t)r);
        if (conn_dispatch(c) < 0)
            return -1;
        if (conn_blocked(c))
            return 0;
    }
    return 1;
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_t *c = container_of(w, conn_t, rio);
    /* Budget used: yield; libev calls again while data is pending. */
    conn_read_some(c, CONN_READ_BUDGET);
}

int conn_drain(conn_t *c, size_t max)
{
    return conn_read_some(c, max) < 0 ? -1 : 0;
}
