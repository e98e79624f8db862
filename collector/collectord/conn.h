/* A connection to collectord (agent or stackctl): its watchers, buffers and frame dispatch. */
#ifndef STACKWATCH_COLLECTOR_CONN_H
#define STACKWATCH_COLLECTOR_CONN_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "frame.h"

enum { CONN_AGENT = 1, CONN_CONTROL = 2 };

#define CONN_READ_BUDGET (1u << 20)   /* bytes read per wakeup before yielding to others */
#define CONN_OUT_MAX_AGENT (4u << 20) /* commands queued to a slow agent before giving up on it */
#define CONN_OUT_MAX_CONTROL (FRAME_MAX_CONTROL + FRAME_HDR) /* one reply (reading stops meanwhile) */
#define CONN_REQUEST_MAX (1u << 20)   /* largest request frame from stackctl */
#define CONN_DRAIN_MAX (16u << 20)    /* bytes read from a replaced connection before closing it */

struct srv_s;
struct client_s;

typedef struct conn_s {
    ev_io rio;                /* readable; a control connection's stops while a reply is unsent */
    ev_io wio;                /* writable, active only while output is pending */
    ev_timer idle;            /* closes a peer that stalls (see conn_idle_cb in conn.c) */
    ev_tstamp active_ts;      /* control: last whole request or output progress (libev's
                               * clock, real time even under --test-clock) */
    struct srv_s *srv;
    int fd;
    int kind;                 /* CONN_AGENT or CONN_CONTROL */
    pid_t peer_pid;           /* SO_PEERCRED */
    int pidfd;                /* agent: pidfd_open(peer_pid) at accept; -1 if none */
    uid_t peer_uid;
    frame_rd_t rd;            /* inbound frames */
    uint8_t *out;             /* pending output */
    size_t out_len, out_off, out_cap;
    int hello_seen;           /* agent: first frame was a Hello */
    int stale;                /* agent: its process had already moved to a newer connection:
                               * its events are counted lost, not applied */
    struct client_s *client;  /* agent: the client this connection feeds */
    void *parked;             /* control: a request waiting for symbolization */
    uint64_t parked_until;    /* ... its deadline (collector clock, ns) */
    uint64_t parked_tag;      /* ... what it waits for (a scan: the client's scan_seq to reach) */
    uint64_t frames_in;       /* frames received */
    struct cproc_s *proc;     /* the peer process (per-process limits), NULL if unknown */
    struct conn_s *prev, *next; /* srv's list of connections */
} conn_t;

/* Wraps an accepted fd and starts its idle timer (srv opts.idle_ns): an
 * agent that sends no Hello in that time, or a control client that sends no
 * whole request, or leaves a reply unread, that long, is closed. Returns NULL
 * on ENOMEM, or when the peer process has CPROC_CONNS_MAX connections of this
 * kind open already (fd closed). */
conn_t *conn_new(struct srv_s *srv, int fd, int kind);

/* Stops every watcher, closes, frees. For an agent connection the client is
 * frozen (exited after Goodbye, else lost). reason goes to the log for
 * abnormal closes (NULL: normal). */
void conn_close(conn_t *c, const char *reason);

/* Reads and dispatches, without waiting, what the peer wrote and c has not
 * read yet, up to max bytes (an agent that moved to a new connection: what
 * it wrote before is applied before what it writes after). Returns 0 with c
 * still open, -1 when c was closed (its end reached, or an error). */
int conn_drain(conn_t *c, size_t max);

/* Queues one encoded frame. Returns 0 or -ENOBUFS when the peer does not read
 * (the caller closes it) / -ENOMEM. */
int conn_send(conn_t *c, const uint8_t *buf, size_t len);

/* Encodes and queues a protobuf message as a frame. */
int conn_send_msg(conn_t *c, const void *msg, uint32_t max);

#endif
