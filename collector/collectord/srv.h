/* collectord's event loop: listening, accepting, signals, the aging timer and the worker threads' wake-ups. */
#ifndef STACKWATCH_COLLECTOR_SRV_H
#define STACKWATCH_COLLECTOR_SRV_H

#include <stddef.h>

#include "conn.h"
#include "state.h"

/* Binds both sockets (0600) in rd's directory, removing stale ones. Returns
 * 0 or -errno with a message in err. */
int srv_listen(srv_t *s, char *err, size_t errlen);

/* Runs the loop until stopped. ready(arg), if set, is called once every
 * watcher (signals included) is installed, just before the loop starts:
 * announce readiness there, not earlier. Returns 0. */
int srv_run(srv_t *s, void (*ready)(void *arg), void *arg);

/* Wraps an accepted (or, in tests, any) connected fd as a connection of
 * kind: an agent's frames go to ingest, a control client's to ctl, with the
 * idle limit of --idle-timeout. Returns conn_new's answer. */
conn_t *srv_conn_open(srv_t *s, int fd, int kind);

#endif
