/* One request/reply exchange on collectord's control socket, and finding the collectord behind it (used by stackctl and collectord stop/status). */
#ifndef STACKWATCH_COLLECTOR_CLI_CALL_H
#define STACKWATCH_COLLECTOR_CLI_CALL_H

#include <stdint.h>
#include <sys/types.h>

#include "proto/stackwatch.pb-c.h"
#include "rundir.h"

/* Sends req to the control socket at path and waits up to timeout_ms for the
 * reply. Returns 0 and sets *out (free with stackwatch__reply__free_unpacked),
 * or -errno: -ENOENT/-ECONNREFUSED (no collector), -EPERM (the collectord
 * there runs as another user than us and root), -ETIMEDOUT, -EPROTO. */
int cli_call(const char *path, const Stackwatch__Request *req, int timeout_ms,
             Stackwatch__Reply **out);

/* One exchange on a connected control socket fd (left open). Returns as
 * cli_call. */
int cli_exchange(int fd, const Stackwatch__Request *req, int timeout_ms, Stackwatch__Reply **out);

/* The collectord behind a control socket, as the kernel names it. */
typedef struct cli_daemon_s {
    pid_t pid;             /* the listener's pid (SO_PEERCRED), 0: unknown */
    uid_t uid;             /* ... and uid */
    int pidfd;             /* a pidfd of that process, -1: none (see cli_find) */
    int fd;                /* the connection, kept open after a verified ping; -1 */
    uint32_t clients;      /* from its Pong */
    uint32_t expire_ms;
    char dir[RUNDIR_MAX];
} cli_daemon_t;

/* Finds the collectord listening on rd's control socket without trusting
 * any file: the listener's uid and pid come from SO_PEERCRED, a pidfd from
 * SO_PEERPIDFD (Linux 6.5), and it must answer a ping on that same
 * connection with that same pid. With own_only the listener must run as
 * our effective uid, else root's is accepted too (as cli_call does).
 *
 * Returns 0 with d filled: d->fd open for further requests, d->pidfd
 * (-1 only on a kernel without pidfds) names the answering daemon (one taken
 * with pidfd_open on older kernels is kept only because the daemon
 * answered after it was taken: a pid reused meanwhile would have closed the
 * connection). Else -errno, d->fd = -1:
 *   -ENOENT / -ECONNREFUSED  nothing listens; -EACCES: cannot reach it;
 *   -EPERM      the listener runs as another uid (d->uid, d->pid set);
 *   -ETIMEDOUT  it did not answer in time (d->uid, d->pid set; d->pidfd
 *               >= 0 only when the kernel gave it: SO_PEERPIDFD);
 *   -EPIPE, -EPROTO  it closed the connection or answered garbage;
 *   -ESRCH      it answered with another pid than the socket's.
 * Free with cli_daemon_close. */
int cli_find(const rundir_t *rd, int own_only, int timeout_ms, cli_daemon_t *d);

/* Closes d's connection and pidfd. */
void cli_daemon_close(cli_daemon_t *d);

/* rundir_resolve for a command line: says why it failed as "PROG: ...".
 * Returns 0 or -errno. */
int cli_resolve_dir(rundir_t *rd, const char *dir, const char *prog);

#endif
