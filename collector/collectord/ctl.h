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

/* Runs ctl_retry_parked as s->retry_parked asks (the scans and the aging
 * tick flag it; they do not call up into ctl.c), and clears it. */
void ctl_retry_flagged(struct srv_s *s);

/* Releases a parked request of a closing connection. */
void ctl_forget(conn_t *c);

#endif
