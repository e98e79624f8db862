/* collectord's state: the options and srv_t that every part of the daemon reads (types only). */
#ifndef STACKWATCH_COLLECTOR_STATE_H
#define STACKWATCH_COLLECTOR_STATE_H

#include <ev.h>
#include <stdint.h>

#include "client.h"
#include "frame.h"
#include "log.h"
#include "store.h"
#include "collector/common/rundir.h"
#include "trig.h"

typedef struct srv_opts_s {
    uint64_t expire_ns;       /* --expire */
    uint32_t retain_max;      /* --retain: ended clients kept */
    uint64_t retain_ns;       /* --retain-time */
    int debuginfod;           /* --debuginfod: allow libdw's debuginfod lookups */
    uint64_t max_live;        /* --max-live: live blocks tracked per client */
    int on_leak_sig;          /* --on-leak SIG: 0 none */
    uint32_t py_captures;     /* --python-captures: auto-armed captures per leaking stack */
    const char *metrics_addr; /* --metrics ADDR, NULL: off */
    uint32_t metrics_top;     /* --metrics-top: stacks exported per process */
    uint32_t metrics_clients; /* --metrics-clients: processes exported */
    const char *state_dir;    /* --state-dir, NULL: no store */
    int test_clock;           /* --test-clock: time advances only by Tick requests */
    uint64_t idle_ns;         /* --idle-timeout: no Hello / no whole request / reply unread */
    uint64_t reply_max;       /* --max-reply: a reply is cut to this many bytes (0: SRV_REPLY_MAX) */
} srv_opts_t;

/* Largest reply to stackctl: within the frame limit with room to spare. */
#define SRV_REPLY_MAX ((uint64_t)FRAME_MAX_CONTROL - (1u << 20))

#define SRV_IDLE_NS (10ull * 1000000000) /* --idle-timeout's default */

/* retry_parked: those whose deadline passed; all that can be answered now. */
enum { SRV_RETRY_DEADLINE = 1, SRV_RETRY_ALL = 2 };

/* An ended client whose report waits for symbolization before it is stored. */
typedef struct srv_save_s {
    uint64_t serial;          /* the client */
    uint64_t deadline;        /* store it by then whatever is symbolized (collector clock);
                               * after a failed write: when to try again */
    uint32_t pid;             /* the client's, for the log once it is gone */
    uint32_t failed;          /* writes that failed (a full disk): tried again later, and at a
                               * graceful stop */
} srv_save_t;

typedef struct srv_s {
    struct ev_loop *loop;
    rundir_t rd;
    srv_opts_t opts;
    int agent_fd;             /* listening sockets */
    int control_fd;
    int spare_fd;             /* kept open to accept-and-close under EMFILE */
    log_throttle_t log_nofd;  /* "out of file descriptors" */
    log_throttle_t log_many;  /* "too many connections from one process" */
    ev_io agent_w, control_w;
    ev_signal sig_int, sig_term, sig_hup;
    ev_timer age_timer;       /* aging, late-event resolution, retention, parked queries */
    ev_async sym_async;       /* symbolizer finished jobs */
    ev_async scan_async;      /* a scan worker moved on */
    ev_prepare prepare_w;     /* before the loop waits: acts on retry_parked and stopping */
    clients_t clients;
    trig_t trig;              /* trigger rules */
    struct conn_s *conns;     /* every open connection */
    uint32_t nconns;
    uint64_t frames_total;
    uint64_t events_total;
    uint64_t bad_frames;      /* connections closed for malformed input */
    uint64_t refused;         /* connections refused: another user's peer */
    int stopping;             /* set to stop: the loop ends after this iteration */
    int retry_parked;         /* SRV_RETRY_*: parked control requests to retry (set by scans
                               * and the aging tick, which do not call up into ctl.c; the
                               * loop runs ctl_retry_parked) */
    store_t store;            /* ended processes' reports on disk (store.on: enabled) */
    srv_save_t *saves;        /* clients whose report is to be stored */
    uint32_t nsaves, saves_cap;
    int sweep_due;            /* close unused libdw handles (symq_sweep_due): 1 after
                               * a save, 2 when a process ended without one (once the
                               * symbolizer is idle) */
    uint64_t sweep_ts;        /* the last sweep (collector clock) */
    uint64_t next_prune;      /* when the store's retention runs next (collector clock) */
    struct metrics_s *metrics; /* --metrics endpoint (NULL, or fd < 0: off) */
} srv_t;

#endif
