/* collectord's reachability scans: a scan's steps with the agent and the worker thread, its results into the client. */
#ifndef STACKWATCH_COLLECTOR_SCANS_H
#define STACKWATCH_COLLECTOR_SCANS_H

#include "proto/stackwatch.pb-c.h"
#include "state.h"

/* Starts a reachability scan of a connected client (SCAN_BEGIN to its
 * agent; the rest follows its replies). Returns 0, or -errno with a
 * sentence in err: not connected (-ENOTCONN), an agent without scan support
 * (-ENOTSUP), a scan already running (-EBUSY). */
int scans_start(srv_t *s, client_t *c, char *err, size_t errlen);

/* The agent asks for a scan of its process now (STACKWATCH_SCAN_AT_EXIT):
 * started as stackctl's would be, or joined when one runs; SCAN_DONE with
 * the ask's token goes back when it ends, or at once when none can be made
 * or the process asked before (one per process: a scan is costly). */
void scans_ask(srv_t *s, client_t *c, const Stackwatch__ScanAsk *a);

/* The agent answered a SCAN_* command. */
void scans_reply(srv_t *s, client_t *c, const Stackwatch__ScanReply *r);

/* Gives up a client's scan (disconnect, shutdown): the worker lets the
 * process go; the scan ends failed. */
void scans_abort(srv_t *s, client_t *c, const char *why);

/* A scan worker moved on (the loop's wake-up from it): the next command to
 * the agent, or the scan's end. */
void scans_progress(srv_t *s);

/* The aging tick: scans whose agent or worker is overdue are given up. */
void scans_check_deadlines(srv_t *s, uint64_t now);

#endif
