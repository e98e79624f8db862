/* The control socket's requests: ping, clients, leak reports, shutdown. */
#ifndef STACKWATCH_COLLECTOR_CTL_H
#define STACKWATCH_COLLECTOR_CTL_H

#include <stdint.h>

#include "conn.h"

struct srv_s;
struct client_s;

/* Handles one request frame from stackctl. A report whose stacks are still
 * being symbolized is parked until they are (or a deadline passes). Returns 0,
 * or -1 when the connection was closed. */
int ctl_request(conn_t *c, const uint8_t *p, uint32_t len);

/* Answers parked requests that can be answered now; with deadline_only, only
 * those whose deadline passed (they get module+offset frames where needed). */
void ctl_retry_parked(struct srv_s *s, int deadline_only);

/* Queues symbolization of every stack of c not done yet. Returns 1 when
 * none is pending any more. */
int ctl_client_symbolized(struct srv_s *s, struct client_s *c);

/* Writes c's report (every stack, series, Python tracebacks, the mark and
 * what it counts since) to the store: snapshot for a process that runs on.
 * Frames are as symbolized by now. Returns 0 or -errno. */
int ctl_store_client(struct srv_s *s, struct client_s *c, int snapshot);

/* Releases a parked request of a closing connection. */
void ctl_forget(conn_t *c);

#endif
