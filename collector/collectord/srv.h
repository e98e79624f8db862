/* collectord's event loop: listeners, signals, the aging timer, symbolization results. */
#ifndef STACKWATCH_COLLECTOR_SRV_H
#define STACKWATCH_COLLECTOR_SRV_H

#include <ev.h>
#include <stdint.h>

#include "client.h"
#include "clock.h"
#include "log.h"
#include "age.h"
#include "saves.h"
#include "scans.h"
#include "arming.h"
#include "symq.h"
#include "proto/stackwatch.pb-c.h"
#include "conn.h"
#include "metrics.h"
#include "state.h"
#include "store.h"
#include "collector/common/rundir.h"
#include "trig.h"

/* Binds both sockets (0600) in rd's directory, removing stale ones. Returns
 * 0 or -errno with a message in err. */
int srv_listen(srv_t *s, char *err, size_t errlen);

/* Runs the loop until stopped. ready(arg), if set, is called once every
 * watcher (signals included) is installed, just before the loop starts:
 * announce readiness there, not earlier. Returns 0. */
int srv_run(srv_t *s, void (*ready)(void *arg), void *arg);

/* Asks the loop to stop after this iteration (graceful). */
void srv_stop(srv_t *s);

/* Called by conn_close: forget the connection. */
void srv_conn_gone(srv_t *s, conn_t *c);

#endif
