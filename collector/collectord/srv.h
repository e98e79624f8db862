/* collectord's event loop: listeners, signals, the aging timer, symbolization results. */
#ifndef STACKWATCH_COLLECTOR_SRV_H
#define STACKWATCH_COLLECTOR_SRV_H

#include <ev.h>
#include <stdint.h>

#include "client.h"
#include "proto/stackwatch.pb-c.h"
#include "conn.h"
#include "metrics.h"
#include "store.h"
#include "collector/common/rundir.h"
#include "trig.h"

/* Test clock (collectord start --test-clock): srv_now() then returns a
 * time that only Tick requests advance (srv_clock_advance, which also runs
 * the aging and classification pass); the aging timer does not run. Event
 * times are the agents' own: a test that drives the clock sends its events
 * with the times it chose (a fake agent). */
void srv_clock_virtual(void);
int srv_clock_is_virtual(void);

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

/* A log line that may repeat fast (a flood of refused connections): one
 * line, then at most one per SRV_LOG_EVERY_NS with how many were held back. */
typedef struct srv_throttle_s {
    uint64_t last_ns;         /* real CLOCK_MONOTONIC of the last line (0: none yet) */
    uint64_t held;            /* occurrences since, not logged */
} srv_throttle_t;

#define SRV_LOG_EVERY_NS (10ull * 1000000000)

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
    srv_throttle_t log_nofd;  /* "out of file descriptors" */
    srv_throttle_t log_many;  /* "too many connections from one process" */
    ev_io agent_w, control_w;
    ev_signal sig_int, sig_term, sig_hup;
    ev_timer age_timer;       /* aging, late-event resolution, retention, parked queries */
    ev_async sym_async;       /* symbolizer finished jobs */
    ev_async scan_async;      /* a scan worker moved on */
    clients_t clients;
    trig_t trig;              /* trigger rules */
    conn_t *conns;            /* every open connection */
    uint32_t nconns;
    uint64_t frames_total;
    uint64_t events_total;
    uint64_t bad_frames;      /* connections closed for malformed input */
    uint64_t refused;         /* connections refused: another user's peer */
    int stopping;
    store_t store;            /* ended processes' reports on disk (store.on: enabled) */
    srv_save_t *saves;        /* clients whose report is to be stored */
    uint32_t nsaves, saves_cap;
    uint64_t next_prune;      /* when the store's retention runs next (collector clock) */
    metrics_t metrics;        /* --metrics endpoint (metrics.fd < 0: off) */
} srv_t;

/* Log line with a timestamp to stderr (the log file when daemonized). */
void srv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* srv_log through a throttle: the line is logged when none was in the last
 * SRV_LOG_EVERY_NS (with ", N more since" when some were held back), else
 * counted. srv_log_flush logs what a quiet spell left held back. */
void srv_log_throttled(srv_throttle_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void srv_log_flush(srv_throttle_t *t, const char *what);

/* CLOCK_MONOTONIC in ns: the clock agents stamp events with. */
uint64_t srv_now(void);

/* Binds both sockets (0600) in rd's directory, removing stale ones. Returns
 * 0 or -errno with a message in err. */
int srv_listen(srv_t *s, char *err, size_t errlen);

/* Runs the loop until stopped. ready(arg), if set, is called once every
 * watcher (signals included) is installed, just before the loop starts:
 * announce readiness there, not earlier. Returns 0. */
int srv_run(srv_t *s, void (*ready)(void *arg), void *arg);

/* Asks the loop to stop after this iteration (graceful). */
void srv_stop(srv_t *s);

/* Queues symbolization of a stack if not done or pending. */
void srv_sym_stack(srv_t *s, client_t *c, cstack_t *st, int urgent);

/* A sampled client's agent watches 64 call sites for armed stacks: past
 * this many rule-armed stacks, only leaking ones are armed. */
#define SRV_SAMPLED_ARM_BUDGET 48

/* Arms a stack in its (connected) agent: count firings, raising sig (0:
 * none), capturing Python frames where the client has them. kind is ARM_*.
 * Returns 0 or -ENOTCONN/-ENOBUFS. */
int srv_arm(srv_t *s, client_t *c, cstack_t *st, int kind, uint32_t rule, int sig, uint32_t count);

/* Disarms a stack in its agent (if connected) and forgets why it was armed. */
void srv_disarm(srv_t *s, client_t *c, cstack_t *st);

/* Arms a stack if a trigger rule matches it (after symbolization or
 * definition). */
void srv_trig_eval(srv_t *s, client_t *c, cstack_t *st);

/* Evaluates every rule against every stack of connected clients (after a
 * rule was added), queueing symbolization where names are needed. */
void srv_trig_scan(srv_t *s);

/* Sends sig to the client's process through the pidfd of its live
 * connection, only if the process catches sig (/proc/PID/status SigCgt).
 * Returns 0, -ENOTCONN, -ESRCH (no handler) or -errno. */
int srv_signal(srv_t *s, client_t *c, int sig);

/* A new client from a hello: if the store kept a snapshot of the same
 * process image (pid + agent instance) before a collectord restart, the
 * client takes it over (reports merge it, the gap is shown) and its mark is
 * restored. */
void srv_restore_client(srv_t *s, client_t *c);

/* Starts a reachability scan of a connected client (SCAN_BEGIN to its
 * agent; the rest follows its replies). Returns 0, or -errno with a
 * sentence in err: not connected (-ENOTCONN), an agent without scan support
 * (-ENOTSUP), a scan already running (-EBUSY). */
int srv_scan_start(srv_t *s, client_t *c, char *err, size_t errlen);

/* The agent answered a SCAN_* command. */
void srv_scan_reply(srv_t *s, client_t *c, const Stackwatch__ScanReply *r);

/* Gives up a client's scan (disconnect, shutdown): the worker lets the
 * process go; the scan ends failed. */
void srv_scan_abort(srv_t *s, client_t *c, const char *why);

/* Called by conn_close: forget the connection. */
void srv_conn_gone(srv_t *s, conn_t *c);

/* One aging and classification pass at srv_now() (the aging timer's). */
void srv_tick(srv_t *s);

/* Test clock: advances it by ns and runs srv_tick. */
void srv_clock_advance(srv_t *s, uint64_t ns);

#endif
