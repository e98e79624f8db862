/* collectord's event loop: listening, accepting, signals, the aging timer and the worker threads' wake-ups. */
#include "srv.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "age.h"
#include "arming.h"
#include "clock.h"
#include "ctl.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "saves.h"
#include "scan.h"
#include "scans.h"
#include "sym.h"
#include "symq.h"
#include "wrap.h"

/* ---------------------------------------------------------------- listening */

static int listen_on(const char *path, char *err, size_t errlen)
{
    int live = rundir_probe_socket(path);
    if (live == 1) {
        snprintf(err, errlen, "another process is serving %s", path);
        return -EADDRINUSE;
    }
    if (live == 0 && unlink(path) == 0)
        log_msg("removed stale socket %s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "socket: %s", strerror(e));
        return -e;
    }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, path, strlen(path) + 1);
    mode_t old = umask(0177); /* the socket file is created 0600 */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc < 0 || chmod(path, 0600) < 0 || listen(fd, 128) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    return fd;
}

int srv_listen(srv_t *s, char *err, size_t errlen)
{
    s->agent_fd = listen_on(s->rd.agent_sock, err, errlen);
    if (s->agent_fd < 0)
        return s->agent_fd;
    s->control_fd = listen_on(s->rd.control_sock, err, errlen);
    if (s->control_fd < 0) {
        close(s->agent_fd);
        unlink(s->rd.agent_sock);
        return s->control_fd;
    }
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return 0;
}

/* Only processes of collectord's own user, and root, may talk to it, on
 * either socket: the directory's 0700 already keeps others out; this holds
 * even if its mode was loosened or a socket passed on. A refused peer is
 * closed at once (fd closed here). Returns 1 if allowed. */
static int peer_allowed(srv_t *s, int fd, int kind)
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 &&
        (cr.uid == geteuid() || cr.uid == 0))
        return 1;
    s->refused++;
    if (s->refused <= 10 || s->refused % 1000 == 0)
        log_msg("refused %s connection %llu from uid %d (pid %d): collectord serves uid %u "
                "and root only", kind == CONN_AGENT ? "an agent" : "a control",
                (unsigned long long)s->refused, len == sizeof cr ? (int)cr.uid : -1,
                len == sizeof cr ? (int)cr.pid : -1, (unsigned)geteuid());
    close(fd);
    return 0;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_t *s = w->data;
    int kind = w == &s->agent_w ? CONN_AGENT : CONN_CONTROL;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of fds: free the spare, accept and close so the peer
                 * sees an immediate EOF instead of hanging in the backlog. */
                log_throttled(&s->log_nofd, "out of file descriptors; refusing a connection");
                if (s->spare_fd >= 0) {
                    close(s->spare_fd);
                    int tmp = accept(w->fd, NULL, NULL);
                    if (tmp >= 0)
                        close(tmp);
                    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                }
            }
            return;
        }
        if (!peer_allowed(s, fd, kind))
            continue;
        srv_conn_open(s, fd, kind);
    }
}

conn_t *srv_conn_open(srv_t *s, int fd, int kind)
{
    uint64_t idle = s->opts.idle_ns ? s->opts.idle_ns : SRV_IDLE_NS;
    if (kind == CONN_AGENT)
        return conn_new(s, fd, kind, ingest_frame, ingest_close, idle);
    return conn_new(s, fd, kind, ctl_request, ctl_forget, idle);
}

static void scan_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_t *s = w->data;
    scans_progress(s);
    ctl_retry_flagged(s); /* a scan ended: the requests waiting for it */
}

static void sym_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_t *s = w->data;
    symq_take_done(s, arming_eval); /* rules that need names see them now */
    ctl_retry_parked(s, 0);
}

static void sym_wake(void *arg)
{
    srv_t *s = arg;
    ev_async_send(s->loop, &s->sym_async);
}

/* ---------------------------------------------------------------- timers and signals */

static void age_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_t *s = w->data;
    log_flush(&s->log_nofd, "out of file descriptors: refused a connection");
    log_flush(&s->log_many, "too many connections from one process: refused one");
    age_tick(s);
    ctl_retry_flagged(s); /* requests whose deadline passed */
}

/* Before the loop waits: what callbacks flagged and did not act on (they may
 * not call up into ctl.c or here). */
static void prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    srv_t *s = w->data;
    ctl_retry_flagged(s);
    if (s->stopping)
        ev_break(loop, EVBREAK_ALL);
}

/* Asks the loop to stop after this iteration (graceful). */
static void srv_stop(srv_t *s)
{
    s->stopping = 1;
    ev_break(s->loop, EVBREAK_ALL);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_t *s = w->data;
    if (w->signum == SIGHUP) {
        log_msg("SIGHUP: %u clients, %llu events so far", s->clients.count,
                (unsigned long long)s->events_total);
        return;
    }
    log_msg("signal %d: stopping", w->signum);
    srv_stop(s);
}

int srv_run(srv_t *s, void (*ready)(void *arg), void *arg)
{
    /* Not the default loop: that one reaps children with waitpid(-1) on
     * SIGCHLD, which would take the ptrace stops a scan worker waits for. */
    s->loop = ev_loop_new(EVFLAG_AUTO);
    signal(SIGPIPE, SIG_IGN);
    ev_io_init(&s->agent_w, accept_cb, s->agent_fd, EV_READ);
    ev_io_init(&s->control_w, accept_cb, s->control_fd, EV_READ);
    s->agent_w.data = s->control_w.data = s;
    ev_io_start(s->loop, &s->agent_w);
    ev_io_start(s->loop, &s->control_w);
    ev_signal_init(&s->sig_int, signal_cb, SIGINT);
    ev_signal_init(&s->sig_term, signal_cb, SIGTERM);
    ev_signal_init(&s->sig_hup, signal_cb, SIGHUP);
    s->sig_int.data = s->sig_term.data = s->sig_hup.data = s;
    ev_signal_start(s->loop, &s->sig_int);
    ev_signal_start(s->loop, &s->sig_term);
    ev_signal_start(s->loop, &s->sig_hup);
    /* Aging resolution: a tenth of the expire time, within [20 ms, 1 s]. */
    double period = (double)s->opts.expire_ns / 1e9 / 10;
    if (period < 0.02)
        period = 0.02;
    if (period > 1.0)
        period = 1.0;
    ev_timer_init(&s->age_timer, age_cb, period, period);
    s->age_timer.data = s;
    if (!clock_is_virtual())
        ev_timer_start(s->loop, &s->age_timer); /* else Tick requests age */
    ev_async_init(&s->sym_async, sym_async_cb);
    s->sym_async.data = s;
    ev_async_start(s->loop, &s->sym_async);
    ev_async_init(&s->scan_async, scan_async_cb);
    s->scan_async.data = s;
    ev_async_start(s->loop, &s->scan_async);
    ev_prepare_init(&s->prepare_w, prepare_cb);
    s->prepare_w.data = s;
    ev_prepare_start(s->loop, &s->prepare_w);
    s->clients.retain_max = s->opts.retain_max;
    s->clients.retain_ns = s->opts.retain_ns;
    s->clients.max_live = s->opts.max_live;
    wrap_init();
    if (sym_start(sym_wake, s) < 0)
        log_msg("cannot start the symbolizer thread; reports will show module+offset");
    if (ready)
        ready(arg);
    if (s->metrics)
        metrics_start(s->metrics, s, s->loop);
    ev_run(s->loop, 0);
    /* Graceful stop: store what is to be kept, close every connection, release the sockets. */
    saves_store_all(s);
    if (s->metrics)
        metrics_stop(s->metrics);
    while (s->conns)
        conn_close(s->conns, NULL);
    sym_stop();
    close(s->agent_fd);
    close(s->control_fd);
    unlink(s->rd.agent_sock);
    unlink(s->rd.control_sock);
    while (s->clients.head) {
        client_t *c = s->clients.head;
        s->clients.head = c->next;
        if (c->scan) {
            scan_job_abort(c->scan, "collectord is stopping");
            scan_job_free(c->scan); /* the worker lets the process go first */
            c->scan = NULL;
        }
        client_destroy(c);
    }
    ev_loop_destroy(s->loop);
    trig_free(&s->trig);
    wrap_free();
    store_close(&s->store);
    free(s->saves);
    return 0;
}
