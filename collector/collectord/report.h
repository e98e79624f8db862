/* collectord's leak-report engine: candidates, ranking, groups by executable, stack reports, store records. */
#ifndef STACKWATCH_COLLECTOR_REPORT_H
#define STACKWATCH_COLLECTOR_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "proto/stackwatch.pb-c.h"
#include "state.h"

/* All memory of one reply, freed at once. */
typedef struct ra_s {
    void **blocks;
    size_t n, cap;
    size_t bytes;          /* asked for, all blocks */
} ra_t;

/* A reply's memory from which ra_free hands malloc's free pages back to the
 * system (malloc_trim): a report of every stack of a big process (its store
 * save: 50,000 stacks of 32 frames, ~300 MB) leaves that peak held by the
 * heap otherwise (issue 20.2). */
#define RA_TRIM_BYTES (8u << 20)

/* A zeroed block owned by ra (NULL on ENOMEM); ra_free frees them all. */
void *ra_alloc(ra_t *ra, size_t size);
void ra_free(ra_t *ra);

/* The last scan's figures of c as a reply message (in ra), or NULL. */
Stackwatch__ScanResult *report_scan_result(ra_t *ra, const client_t *c);

/* What `stackctl clients` shows of c (in ra), or NULL on ENOMEM. */
Stackwatch__ClientInfo *report_client_info(ra_t *ra, const client_t *c, uint64_t now);

/* 1 if a process with this pid exists on the host (traced or not). */
int report_pid_alive(uint32_t pid);

/* 1 when a stored record is served as a process of its own: read at start
 * and not taken over by a reconnected agent. */
int report_rec_served(const store_rec_t *r);

/* Builds the leak report (of one client only, when only is set). Returns 1
 * when it is complete, 0 when some selected stack is still being symbolized
 * (and force is not set), -ENOMEM, -EINVAL (unknown class) or -ESRCH (--pid
 * names no known process). */
int report_leaks(srv_t *srv, const Stackwatch__QueryLeaks *q, int force, ra_t *ra,
                 Stackwatch__Reply *reply, client_t *only);

/* Queues symbolization of every stack of c not done yet. Returns 1 when
 * none is pending any more. */
int report_symbolized(srv_t *s, client_t *c);

/* Writes c's report (every stack, series, Python tracebacks, the mark and
 * what it counts since) to the store: snapshot for a process that runs on.
 * Frames are as symbolized by now. Returns 0 or -errno. */
int report_store_client(srv_t *s, client_t *c, int snapshot);

#endif
