/* The flusher thread: drains all rings, encodes frames, owns the collector connection. */
#include "flush.h"
#include "creds.h"

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <linux/membarrier.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "arm.h"
#include "clock.h"
#include "cmd.h"
#include "config.h"
#include "emit.h"
#include "fdguard.h"
#include "got.h"
#include "frame.h"
#include "intern.h"
#include "log.h"
#include "modmap.h"
#include "note.h"
#include "pyarena.h"
#include "pyframes.h"
#include "proto/stackwatch.pb-c.h"
#include "region.h"
#include "ring.h"
#include "sample.h"
#include "state.h"
#include "tstate.h"
#include "unwind.h"

#define BATCH_MAX 65536u          /* events per EventBatch frame */
#define RUNS_MAX 4096u            /* rings drained per batch */
#define DEFS_MAX 2048u            /* StackDefs per frame */
#define MODS_MAX 16384u           /* Modules per frame (the whole map fits) */
#define OUT_CAP (FRAME_MAX_AGENT + FRAME_HDR)
#define PERIOD_MS 10              /* drain at least this often */
#define LAST_CHECK_NS (50ull * 1000000)     /* with two threads left: are the others gone? */
#define PEER_CHECK_NS (20ull * 1000000)     /* a stalled send: is collectord stopped? */
#define STATS_NS (1000ull * 1000000)
#define BACKOFF_MIN_NS (50ull * 1000000)
#define BACKOFF_MAX_NS (1000ull * 1000000)
#define SEND_STALL_NS (10000ull * 1000000)  /* a collector that takes nothing this long is gone */
#define FINAL_WAIT_MS 2000
/* A detach: sends may stall up to SEND_STALL_NS each; a longer wait leaves the flusher stuck. */
#define DETACH_WAIT_MS 25000
#define FOLD_SLOTS (2u * BATCH_MAX)      /* address table, half full at most */
#define FACC_SLOTS 8192u                 /* stacks with folded pairs per batch */
#define FACC_PROBES 64u
#define ENC_PREFIX 16u                   /* room for frame header + envelope tag and length */
#define COL_CAP (BATCH_MAX * 10u + 16u)  /* a packed column: 10 bytes per varint at most */

typedef struct fold_slot_s {
    uint64_t addr;
    uint32_t pos;   /* index of the ALLOC in the batch; UINT32_MAX: its pair was folded */
    uint32_t gen;   /* valid only when equal to fl.fgen */
} fold_slot_t;

typedef struct fold_acc_s {
    uint32_t stack, gen;
    uint64_t n, bytes, lt_sum, lt_min, lt_max;
} fold_acc_t;

/* One ring's readable events during a merge, read in place. */
typedef struct run_s {
    ring_t *r;
    uint64_t start; /* tail when the batch began */
    uint64_t pos;   /* next event (ring index) */
    uint64_t end;   /* head snapshot */
} run_t;

static struct flush_s {
    pthread_t thr;                /* the flusher */
    fdguard_t sock;               /* collector connection, -1 when disconnected */
    uint32_t epoch;               /* connection epoch: stacks and modules are resent per epoch */
    int need_hello;               /* connected, Hello not sent yet */
    int ever_connected;           /* a connection existed before in this image */
    uint32_t reconnects;          /* connections after the first */
    uint64_t backoff_ns;          /* current reconnect back-off */
    uint64_t next_try_ns;         /* next reconnect attempt */
    uint64_t lost_since;          /* events discarded since the last disconnect */
    uint64_t lost_total;          /* events discarded while disconnected, ever */
    uint64_t disc_ts;             /* when the connection was lost */
    uint64_t offline_at_disc;     /* tstate_offline() then */
    int told_unreachable;         /* "no collector" was logged */
    int told_foreign;             /* "runs as another uid" was logged */
    frame_rd_t rd;                /* command frames from the collector */
    int rd_ok;                    /* rd initialized */
    uint8_t *out;                 /* encoded frame, OUT_CAP bytes */
    uint64_t wm;                  /* watermark of the batch being built */
    run_t *runs;                  /* one per non-empty ring */
    uint32_t nruns;               /* runs in runs[] */
    int more;                     /* events before the watermark did not fit the batch */
    ev_t *ev;                     /* the batch's events, copied from the rings */
    uint32_t *live;               /* indexes of the events not folded away (fold_batch) */
    struct fold_slot_s *fslots;   /* address -> its ALLOC in the batch (FOLD_SLOTS) */
    struct fold_acc_s *facc;      /* stack -> folded pairs (FACC_SLOTS) */
    uint32_t *facc_used;          /* facc entries in use, in order */
    uint32_t nfacc;
    uint32_t fgen;
    uint32_t fmask;               /* slots of fslots in use for this batch, minus 1 */
    int fold_on;                  /* this batch folds (fold_begin) */
    uint32_t max_m;               /* largest batch so far (scratch in use) */
    size_t max_frame;             /* largest encoded batch so far */                /* generation stamp of both tables */
    uint8_t *enc;                 /* hand-encoded EventBatch frame */
    uint8_t *col;                 /* one packed column being encoded */
    Stackwatch__StackDef *defs;   /* StackDefs being assembled */
    Stackwatch__StackDef **defp;
    uint32_t ndefs;
    int refreshed;                /* module map refreshed during this batch */
    Stackwatch__Module *mods;     /* Modules being assembled */
    Stackwatch__Module **modp;
    uint32_t nmods;
    uint32_t notes[NOTE_SLOTS];   /* note slots met in the batch being built */
    uint32_t nnotes;
    uint64_t notes_consumed;      /* EV_NOTEs taken off the rings, ever (arm_notes_pushed) */
    int merge_fold_off;           /* a note was met where none could be: no folding while merging */
    uint64_t last_stats_ns;       /* last Stats sent */
    cmd_state_t cmd;              /* what collectord's frames said (Welcome's expire) */
    int end_cap;                  /* this drain stops at agent.end_ts (Ending not sent yet) */
    int end_sent;                 /* the Ending went out on this connection epoch */
    uint32_t end_epoch;           /* ... namely this one */
    _Atomic int exit_req;         /* flush_final asked for the last drain */
    _Atomic int exit_done;        /* the flusher finished it */
    uint32_t self_tid;            /* the flusher's kernel tid (in the Hello) */
    void *own_stack;              /* its stack, registered as the agent's memory */
    int bye_detached;             /* the Goodbye says "detached" (stackctl detach) */
    int stuck;                    /* a detach could not stop the flusher */
    int ptracer_set;              /* SCAN_BEGIN set PR_SET_PTRACER */
    _Atomic int ask;              /* the scan at the end (ASK_*): asked by an ending thread */
    uint64_t ask_token;           /* its ScanAsk's token (SCAN_DONE answers it) */
    const char *ask_why;          /* how the end began */
    sigset_t app_mask;            /* the starting thread's signal mask (flush_start) */
    const int *nptl_nthreads;     /* glibc's count of live pthreads, NULL if unknown */
    pid_t peer_pid;               /* collectord's pid (SO_PEERCRED at connect), 0 unknown */
} fl = { .sock = { .fd = -1 } };

enum { ASK_NONE, ASK_CLAIMED, ASK_WANTED, ASK_SENT, ASK_DONE }; /* fl.ask */

static void *map_scratch(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    region_add(p, bytes);
    return p;
}

int flush_init(void)
{
    fl.out = map_scratch(OUT_CAP);
    fl.runs = map_scratch(RUNS_MAX * sizeof(run_t));
    fl.ev = map_scratch(BATCH_MAX * sizeof(ev_t));
    fl.live = map_scratch(BATCH_MAX * sizeof(uint32_t));
    fl.fslots = map_scratch(FOLD_SLOTS * sizeof(fold_slot_t));
    fl.facc = map_scratch(FACC_SLOTS * sizeof(fold_acc_t));
    fl.facc_used = map_scratch(FACC_SLOTS * sizeof(uint32_t));
    fl.enc = map_scratch(OUT_CAP + ENC_PREFIX);
    fl.col = map_scratch(COL_CAP);
    fl.defs = map_scratch(DEFS_MAX * (sizeof(Stackwatch__StackDef) + sizeof(void *)));
    fl.mods = map_scratch(MODS_MAX * (sizeof(Stackwatch__Module) + sizeof(void *)));
    if (!fl.out || !fl.runs || !fl.ev || !fl.live || !fl.fslots || !fl.facc || !fl.facc_used ||
        !fl.enc || !fl.col || !fl.defs || !fl.mods)
        return -ENOMEM;
    fl.defp = (Stackwatch__StackDef **)(fl.defs + DEFS_MAX);
    fl.modp = (Stackwatch__Module **)(fl.mods + MODS_MAX);
    fl.backoff_ns = BACKOFF_MIN_NS;
    /* Producers publish "busy" with plain stores when the flusher can force
     * a barrier on all threads (Linux 4.14+); else they pay a full fence. */
    ring_asym_fence = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    return 0;
}

/* ---------------------------------------------------------------- connection */

int flush_connect(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (!cfg.sock_ok)
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, cfg.sock, strlen(cfg.sock) + 1);
    uint64_t deadline = clock_now_ns() + (uint64_t)cfg.connect_ms * 1000000;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            /* Only a collector of this process's user (or root's) gets its
             * stacks and may arm it: another user could have made the
             * directory first (/tmp/stackwatch-UID) and listen there. */
            struct ucred cr;
            socklen_t clen = sizeof cr;
            if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &clen) < 0 ||
                (cr.uid != geteuid() && cr.uid != 0)) {
                close(fd);
                if (!fl.told_foreign) {
                    fl.told_foreign = 1;
                    log_msg("the collector at %s runs as uid %d, not as this process (uid %u) or "
                            "root; not connecting to it", cfg.sock,
                            clen == sizeof cr ? (int)cr.uid : -1, (unsigned)geteuid());
                }
                return -EPERM;
            }
            int rc = fdguard_take(&fl.sock, fd);
            if (rc < 0)
                return rc;
            fl.peer_pid = cr.pid;
            fl.need_hello = 1;
            return 0;
        }
        int e = errno;
        close(fd);
        /* EAGAIN: the listen backlog is full; the collector is busy, not gone. */
        if (e != EAGAIN || clock_now_ns() >= deadline)
            return -e;
        struct timespec ts = { 0, 5 * 1000000 };
        nanosleep(&ts, NULL);
    }
}

static void disconnect(const char *why)
{
    if (fl.sock.fd < 0)
        return;
    /* Stop recording first: nothing is recorded that cannot be sent. */
    atomic_store(&agent.recording, 0);
    fdguard_close(&fl.sock);
    fl.need_hello = 0;
    fl.disc_ts = clock_now_ns();
    fl.lost_since = 0;
    fl.offline_at_disc = tstate_offline();
    fl.backoff_ns = BACKOFF_MIN_NS;
    fl.next_try_ns = fl.disc_ts + fl.backoff_ns;
    if (fl.rd_ok)
        fl.rd.start = fl.rd.end = 0;
    if (atomic_load(&fl.ask) == ASK_SENT)
        atomic_store(&fl.ask, ASK_DONE); /* its answer cannot come */
    if (!atomic_load(&fl.exit_req))
        log_msg("lost the collector at %s (%s); not recording until it is back", cfg.sock, why);
}

/* 1 when the process at the other end of the connection is stopped
 * (SIGSTOP, a debugger): it reads nothing until it is continued. */
static int peer_stopped(void)
{
    char path[64], buf[512];
    if (fl.peer_pid <= 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)fl.peer_pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0)
        return 0;
    buf[r] = '\0';
    const char *q = strrchr(buf, ')');
    return q && q[1] == ' ' && (q[2] == 'T' || q[2] == 't');
}

static int send_all(const uint8_t *p, size_t n)
{
    if (!fdguard_valid(&fl.sock))
        return -EBADF;
    uint64_t stall = 0, checked = 0;
    while (n > 0) {
        ssize_t w = send(fl.sock.fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            if (stall)
                atomic_store_explicit(&emit_flusher.send_stalled, 0, memory_order_relaxed);
            stall = 0;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            uint64_t now = clock_now_ns();
            if (!stall) {
                stall = now;
                checked = now;
            }
            /* A stopped collectord: producers on a full ring now wait
             * WAIT_SEND_STALL_NS at most (emit.c; a busy one keeps them lossless). */
            if (now - checked >= PEER_CHECK_NS) {
                checked = now;
                atomic_store_explicit(&emit_flusher.send_stalled, peer_stopped(),
                                      memory_order_relaxed);
            }
            /* An ending process waits a second at most; a detach (the
             * process runs on) waits out a stall as a running agent does,
             * so its Goodbye gets through a busy collector. */
            uint64_t limit = atomic_load(&fl.exit_req) && !fl.bye_detached ? 1000000000ull
                                                                          : SEND_STALL_NS;
            if (now - stall > limit) {
                atomic_store_explicit(&emit_flusher.send_stalled, 0, memory_order_relaxed);
                return -ETIMEDOUT;
            }
            struct pollfd pfd = { .fd = fl.sock.fd, .events = POLLOUT };
            poll(&pfd, 1, 20);
            creds_apply_pending(); /* a program's capset waits for us meanwhile */
            continue;
        }
        if (stall)
            atomic_store_explicit(&emit_flusher.send_stalled, 0, memory_order_relaxed);
        return w < 0 ? -errno : -EPIPE;
    }
    if (stall)
        atomic_store_explicit(&emit_flusher.send_stalled, 0, memory_order_relaxed);
    return 0;
}

/* Encodes and sends one AgentMsg. On failure the connection is dropped. */
static int send_msg(Stackwatch__AgentMsg *m)
{
    if (fl.sock.fd < 0)
        return -ENOTCONN;
    size_t n = frame_encode(&m->base, fl.out, OUT_CAP, FRAME_MAX_AGENT);
    if (n == 0) {
        log_msg("internal: frame of type %d exceeds %u bytes; dropped", (int)m->msg_case,
                FRAME_MAX_AGENT);
        return -EMSGSIZE;
    }
    int rc = send_all(fl.out, n);
    if (rc < 0)
        disconnect(rc == -ETIMEDOUT ? "send stalled" : strerror(-rc));
    return rc;
}

static int send_hello(void)
{
    static char *argv[256];
    size_t argc = 0;
    for (size_t off = 0; off < agent.cmdline_len && argc < 256;) {
        argv[argc++] = agent.cmdline + off;
        off += strlen(agent.cmdline + off) + 1;
    }
    Stackwatch__Hello h = STACKWATCH__HELLO__INIT;
    h.version = PROTO_VERSION;
    h.pid = (uint32_t)agent.pid;
    h.ppid = (uint32_t)agent.ppid;
    h.exe = agent.exe;
    h.n_argv = argc;
    h.argv = argv;
    h.start_realtime_ns = agent.start_realtime_ns;
    h.instance = agent.instance;
    h.parent_instance = agent.parent_instance;
    h.depth = (uint32_t)cfg.depth;
    h.sample = cfg.sample;
    h.sample_bytes = sample_rate;
    static const char *py_mode[] = { "off", "sampled", "exact" };
    h.python_allocators = (char *)py_mode[cfg.py_allocators];
    h.python_sample_bytes = sample_py_rate;
    h.mono_now_ns = clock_now_ns();
    h.reconnects = fl.reconnects;
    h.python_version = py_version();
    h.python_status = (char *)py_status();
    h.attached = agent.mode == AGENT_ATTACHED;
    h.flusher_tid = fl.self_tid;
    h.previous_session = agent.previous_session;
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_HELLO;
    m.hello = &h;
    return send_msg(&m);
}

static int send_gap(void)
{
    Stackwatch__Gap g = STACKWATCH__GAP__INIT;
    /* Discarded from the rings, and not recorded while away. */
    g.lost_events = fl.lost_since + (tstate_offline() - fl.offline_at_disc);
    g.from_ts = fl.disc_ts;
    g.to_ts = clock_now_ns();
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_GAP;
    m.gap = &g;
    return send_msg(&m);
}

/* Runs on a fresh connection: Hello (and Gap after a reconnect) go out before
 * anything else; stacks and modules are resent lazily under the new epoch. */
static void on_connected(void)
{
    fl.epoch++;
    fl.need_hello = 0;
    if (send_hello() < 0)
        return;
    if (fl.ever_connected && send_gap() < 0)
        return;
    if (fl.told_unreachable)
        log_msg("connected to the collector at %s; recording from now on", cfg.sock);
    fl.told_unreachable = 0;
    fl.ever_connected = 1;
    fl.backoff_ns = BACKOFF_MIN_NS;
    fl.last_stats_ns = clock_now_ns();
    if (!atomic_load(&agent.end_ts))
        atomic_store(&agent.recording, 1); /* an ending process records no more */
}

static void maybe_reconnect(void)
{
    uint64_t now = clock_now_ns();
    if (now < fl.next_try_ns)
        return;
    int rc = flush_connect();
    if (rc == 0) {
        if (fl.ever_connected)
            fl.reconnects++;
        on_connected();
        return;
    }
    fl.backoff_ns = fl.backoff_ns * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : fl.backoff_ns * 2;
    fl.next_try_ns = now + fl.backoff_ns;
}

/* ---------------------------------------------------------------- commands */

static void drain_all(int final);

/* Yama's kernel.yama.ptrace_scope, -1 without Yama. */
static int yama_scope(void)
{
    int fd = open("/proc/sys/kernel/yama/ptrace_scope", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char c = 0;
    ssize_t r = read(fd, &c, 1);
    close(fd);
    return r == 1 && c >= '0' && c <= '9' ? c - '0' : -1;
}

static void send_scan_reply(Stackwatch__ScanReply *sr)
{
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_SCAN;
    m.scan = sr;
    send_msg(&m);
}

static void count_busy(ring_t *r, void *arg)
{
    /* acquire: pairs with the producer's release in ring_busy_end. */
    if (atomic_load_explicit(&r->busy, memory_order_acquire))
        (*(uint32_t *)arg)++;
}

/* The collector's reachability scan. SCAN_BEGIN: under Yama scope 1 only
 * an ancestor may ptrace us, so the collector is allowed for the scan
 * (PR_SET_PTRACER; SCAN_END takes it back). SCAN_SYNC: the application's
 * threads are frozen, so a drain sends every event they made; the reply
 * says up to when, and lists the agent's own memory. */
static void handle_scan(const Stackwatch__Command *c)
{
    static uint64_t pairs[2 * (REGION_MAX + 4)];
    enum { DEAD_STACKS = 256 };
    static uint64_t dead[3 * DEAD_STACKS];
    Stackwatch__ScanReply sr = STACKWATCH__SCAN_REPLY__INIT;
    sr.token = c->token;
    switch (c->kind) {
    case STACKWATCH__COMMAND__KIND__SCAN_BEGIN:
        sr.phase = 1;
        if (yama_scope() == 1 && c->tracer_pid > 0) {
            if (prctl(PR_SET_PTRACER, (unsigned long)c->tracer_pid, 0, 0, 0) == 0) {
                fl.ptracer_set = 1;
                sr.ptracer = 1;
            } else {
                sr.ptracer = -errno;
            }
        }
        send_scan_reply(&sr);
        break;
    case STACKWATCH__COMMAND__KIND__SCAN_SYNC: {
        sr.phase = 2;
        drain_all(0);
        tstate_reap(); /* threads gone by now: their stacks are known dead */
        sr.watermark = fl.wm;
        tstate_each_ring(count_busy, &sr.busy_threads);
        sr.dropped = tstate_dropped(); /* reaped threads' rings too */
        size_t n = region_collect(pairs, REGION_MAX);
        uint64_t lo, hi;
        if (unwind_self_range(&lo, &hi) == 0) {
            pairs[2 * n] = lo;
            pairs[2 * n + 1] = hi;
            n++;
        }
        sr.n_regions = 2 * n;
        sr.regions = pairs;
        size_t nd = tstate_dead_stacks(dead, DEAD_STACKS);
        sr.n_dead_stacks = 3 * nd;
        sr.dead_stacks = dead;
        send_scan_reply(&sr);
        break;
    }
    case STACKWATCH__COMMAND__KIND__SCAN_END:
        if (fl.ptracer_set) {
            prctl(PR_SET_PTRACER, 0, 0, 0, 0);
            fl.ptracer_set = 0;
        }
        break;
    case STACKWATCH__COMMAND__KIND__SCAN_DONE:
        if (c->token == fl.ask_token && atomic_load(&fl.ask) == ASK_SENT)
            atomic_store(&fl.ask, ASK_DONE); /* the ending thread goes on */
        break;
    default:
        break;
    }
}

/* The scan at the end (STACKWATCH_SCAN_AT_EXIT): an ending thread asked
 * for it; ask the collector, or give up when it cannot answer. */
static void ask_scan(void)
{
    if (fl.sock.fd < 0 || fl.need_hello) {
        log_msg("no scan at the end: not connected to the collector");
        atomic_store(&fl.ask, ASK_DONE);
        return;
    }
    Stackwatch__ScanAsk a = STACKWATCH__SCAN_ASK__INIT;
    fl.ask_token = (clock_now_ns() << 8) ^ ((uint64_t)getpid() << 40) ^ fl.epoch;
    if (!fl.ask_token)
        fl.ask_token = 1;
    a.token = fl.ask_token;
    a.why = (char *)(fl.ask_why ? fl.ask_why : "");
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_SCAN_ASK;
    m.scan_ask = &a;
    atomic_store(&fl.ask, ASK_SENT);
    if (send_msg(&m) < 0)
        atomic_store(&fl.ask, ASK_DONE); /* disconnected: no answer will come */
}

/* While the asked scan runs: a collector stopped (SIGSTOP, a debugger)
 * answers nothing until continued; the end does not wait for it. */
static void ask_check(void)
{
    if (atomic_load(&fl.ask) == ASK_SENT && peer_stopped()) {
        log_msg("no scan at the end: the collector (pid %d) is stopped", (int)fl.peer_pid);
        atomic_store(&fl.ask, ASK_DONE);
    }
}

/* cmd.c hands the scan commands over: they need the flusher's drain. */
static void on_scan(const Stackwatch__Command *c, void *arg)
{
    (void)arg;
    handle_scan(c);
}

static void read_commands(void)
{
    if (!fl.rd_ok) {
        if (frame_rd_init(&fl.rd, 4096, FRAME_MAX_COMMAND) < 0)
            return;
        fl.rd_ok = 1;
    }
    fl.cmd.on_scan = on_scan;
    int rc = cmd_read(fl.sock.fd, &fl.rd, &fl.cmd);
    if (rc == -EPIPE)
        disconnect("the collector closed the connection");
    else if (rc == -EMSGSIZE)
        disconnect("oversized frame from the collector");
    else if (rc == -ENOMEM)
        disconnect("out of memory reading commands");
    else if (rc < 0)
        disconnect(strerror(-rc));
}

/* ---------------------------------------------------------------- batches */

static uint64_t ev_ts_at(const ring_t *r, uint64_t i)
{
    return r->slots[i & r->mask].ts;
}

/* Registers a ring's readable events as a run; a ring that does not fit
 * the run table pins the watermark at its oldest event instead. */
static void collect_ring(ring_t *r, void *arg)
{
    (void)arg;
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    /* acquire: pairs with the producer's release of head. */
    uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    if (h == t)
        return;
    if (fl.nruns >= RUNS_MAX) {
        uint64_t first = ev_ts_at(r, t);
        if (first < fl.wm)
            fl.wm = first;
        fl.more = 1;
        return;
    }
    fl.runs[fl.nruns++] = (run_t){ .r = r, .start = t, .pos = t, .end = h };
}

static void add_module(const mod_t *md, const char *path, void *arg)
{
    (void)arg;
    if (fl.nmods >= MODS_MAX)
        return;
    Stackwatch__Module *m = &fl.mods[fl.nmods];
    stackwatch__module__init(m);
    m->id = md->id;
    m->path = (char *)path;
    m->bias = md->bias;
    m->n_ranges = 2 * md->nranges;
    m->ranges = (uint64_t *)md->ranges;
    m->build_id.len = md->build_id_len;
    m->build_id.data = (uint8_t *)md->build_id;
    m->gen_added = md->gen_added;
    m->gen_removed = md->gen_removed;
    fl.modp[fl.nmods++] = m;
}

/* Sends module records not yet sent in this epoch. */
static int send_modules(void)
{
    fl.nmods = 0;
    modmap_each_unsent(fl.epoch, add_module, NULL);
    if (fl.nmods == 0)
        return 0;
    Stackwatch__ModuleMap mm = STACKWATCH__MODULE_MAP__INIT;
    mm.n_modules = fl.nmods;
    mm.modules = fl.modp;
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_MODULES;
    m.modules = &mm;
    return send_msg(&m);
}

static int send_defs(void)
{
    if (fl.ndefs == 0)
        return 0;
    if (send_modules() < 0)
        return -1;
    Stackwatch__StackDefs sd = STACKWATCH__STACK_DEFS__INIT;
    sd.n_stacks = fl.ndefs;
    sd.stacks = fl.defp;
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_STACKS;
    m.stacks = &sd;
    fl.ndefs = 0;
    return send_msg(&m);
}

/* Queues the StackDef of idx; a pc outside every known module makes the map
 * refresh once per batch (libc loads NSS/gconv without the app's dlopen). */
static int add_def(uint32_t idx)
{
    const intern_slot_t *s = intern_slot(idx);
    const uint64_t *pcs = intern_pcs(s);
    if (!fl.refreshed) {
        for (uint32_t i = 0; i < s->npcs; i++) {
            if (!modmap_covers(pcs[i], s->gen)) {
                modmap_refresh();
                fl.refreshed = 1;
                break;
            }
        }
    }
    Stackwatch__StackDef *d = &fl.defs[fl.ndefs];
    stackwatch__stack_def__init(d);
    d->index = idx;
    d->id = atomic_load_explicit(&((intern_slot_t *)s)->hash, memory_order_relaxed);
    d->generation = s->gen;
    d->n_pcs = s->npcs;
    d->pcs = (uint64_t *)pcs;
    d->truncated = (s->flags & SLOT_F_TRUNCATED) != 0;
    fl.defp[fl.ndefs++] = d;
    if (fl.ndefs == DEFS_MAX)
        return send_defs();
    return 0;
}

/* Min-heap of run indexes keyed by the timestamp of each run's next event. */
static inline uint64_t run_ts(uint32_t i)
{
    return ev_ts_at(fl.runs[i].r, fl.runs[i].pos);
}

/* Heap entries carry their run's next timestamp: comparisons touch the
 * heap only, not the rings. */
typedef struct hent_s {
    uint64_t ts;
    uint32_t run;
} hent_t;

static void heap_down(hent_t *h, uint32_t n, uint32_t i)
{
    hent_t x = h[i];
    for (;;) {
        uint32_t l = 2 * i + 1, m = l;
        if (l >= n)
            break;
        if (l + 1 < n && h[l + 1].ts < h[l].ts)
            m = l + 1;
        if (h[m].ts >= x.ts)
            break;
        h[i] = h[m];
        i = m;
    }
    h[i] = x;
}

/* Sends one note as a Note message and frees its slot. */
static void send_note(note_t *n)
{
    static Stackwatch__PyFrame frames[PY_FRAMES_MAX];
    static Stackwatch__PyFrame *framep[PY_FRAMES_MAX];
    static char strs[PY_STR_MAX + 2 * PY_FRAMES_MAX + 4];
    static char text[NOTE_TEXT_MAX + 1];
    Stackwatch__Note note = STACKWATCH__NOTE__INIT;
    note.addr = n->addr;
    note.ts = n->ts;
    note.stack = n->stack;
    note.tid = n->tid;
    note.truncated = n->py.truncated != 0;
    size_t used = 0;
    uint32_t nf = n->py.n < PY_FRAMES_MAX ? n->py.n : PY_FRAMES_MAX;
    for (uint32_t i = 0; i < nf; i++) {
        Stackwatch__PyFrame *f = &frames[i];
        stackwatch__py_frame__init(f);
        /* protobuf-c wants NUL-terminated strings: copy with a NUL each. */
        uint16_t offs[2] = { n->py.f[i].file, n->py.f[i].func };
        uint16_t lens[2] = { n->py.f[i].file_len, n->py.f[i].func_len };
        char *dst[2];
        for (int k = 0; k < 2; k++) {
            dst[k] = strs + used;
            if (offs[k] != UINT16_MAX && (size_t)offs[k] + lens[k] <= sizeof n->py.buf &&
                used + lens[k] + 1 <= sizeof strs) {
                memcpy(strs + used, n->py.buf + offs[k], lens[k]);
                used += lens[k];
            }
            strs[used++] = '\0';
        }
        f->file = dst[0];
        f->function = dst[1];
        f->line = n->py.f[i].line;
        framep[i] = f;
    }
    note.n_python = nf;
    note.python = framep;
    note.py_missing = nf ? STACKWATCH__PY_MISSING__PY_MISSING_NONE : (Stackwatch__PyMissing)n->py.why;
    uint32_t tl = n->text_len < NOTE_TEXT_MAX ? n->text_len : NOTE_TEXT_MAX;
    memcpy(text, n->text, tl);
    text[tl] = '\0';
    note.text = text;
    note_release(n);
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_NOTE;
    m.note = &note;
    send_msg(&m);
}

static void release_notes(void)
{
    for (uint32_t i = 0; i < fl.nnotes; i++) {
        note_t *n = note_at(fl.notes[i]);
        if (n)
            note_release(n);
    }
    fl.nnotes = 0;
}

static void pin_busy(ring_t *r, void *arg)
{
    (void)arg;
    /* acquire: a ring seen idle has its last event visible. */
    if (atomic_load_explicit(&r->busy, memory_order_acquire)) {
        uint64_t floor = ring_ts_floor(r);
        if (floor < fl.wm)
            fl.wm = floor;
    }
}

/* The watermark: every event stamped before it is already in a ring (or
 * sent). A thread that is busy has an event on the way stamped no earlier
 * than the last one it pushed; a thread seen idle stamps its next event after
 * now. The clock is read first, then all threads pass a barrier (membarrier,
 * or their own fence), then the busy flags are read. */
static uint64_t watermark(void)
{
    fl.wm = clock_now_ns();
    if (!ring_asym_fence || syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
        /* Our half of the symmetric fence (producers then store seq_cst): a
         * locked RMW, which ThreadSanitizer understands, unlike a fence. */
        static _Atomic int fence_word;
        atomic_fetch_add_explicit(&fence_word, 0, memory_order_seq_cst);
    }
    tstate_each_ring(pin_busy, NULL);
    return fl.wm;
}

/* ---------------------------------------------------------------- folding */

static inline uint32_t fold_hash(uint64_t addr, uint32_t fmask)
{
    return (uint32_t)((addr * 0x9e3779b97f4a7c15ULL) >> 40) & fmask;
}

static fold_acc_t *facc_get(uint32_t stack)
{
    uint32_t i = (stack * 0x9e3779b1u) & (FACC_SLOTS - 1);
    for (uint32_t k = 0; k < FACC_PROBES; k++, i = (i + 1) & (FACC_SLOTS - 1)) {
        fold_acc_t *a = &fl.facc[i];
        if (a->gen != fl.fgen) {
            a->gen = fl.fgen;
            a->stack = stack;
            a->n = a->bytes = a->lt_sum = a->lt_max = 0;
            a->lt_min = UINT64_MAX;
            fl.facc_used[fl.nfacc++] = i;
            return a;
        }
        if (a->stack == stack)
            return a;
    }
    return NULL; /* crowded: this pair travels as two events */
}

static int noted_addr(uint64_t addr)
{
    for (uint32_t i = 0; i < fl.nnotes; i++) {
        note_t *nt = note_at(fl.notes[i]);
        if (nt && nt->addr == addr)
            return 1;
    }
    return 0;
}

/* Starts the fold of a batch of cap events: whether it folds at all, a new
 * generation of both tables, and as many address slots as keep the table
 * at most half full: a small batch touches a small part of the table (its
 * cache lines), not all of its FOLD_SLOTS. */
static void fold_begin(uint32_t cap)
{
    fl.nfacc = 0;
    uint64_t lim = (uint64_t)fl.cmd.expire_ms * 1000000ull;
    fl.fold_on = lim && !sample_rate;
    if (!fl.fold_on)
        return;
    if (++fl.fgen == 0) {
        memset(fl.fslots, 0, FOLD_SLOTS * sizeof(fold_slot_t));
        memset(fl.facc, 0, FACC_SLOTS * sizeof(fold_acc_t));
        fl.fgen = 1;
    }
    uint32_t slots = 1024;
    while (slots < FOLD_SLOTS && slots < 2 * (uint64_t)cap)
        slots <<= 1;
    fl.fmask = slots - 1;
}

/* The fold of one FREE at ev_free whose ALLOC (in the batch, stack
 * ev_alloc->stack) is still foldable: a pair that lived less than lim goes
 * into its stack's counts and returns 1; else 0 (both events travel). */
static inline int fold_pair(const ev_t *ev_alloc, const ev_t *ev_free, uint64_t lim)
{
    uint64_t lt = ev_free->ts - ev_alloc->ts;
    fold_acc_t *acc;
    if (lt >= lim || !(acc = facc_get(ev_alloc->stack)))
        return 0;
    acc->n++;
    acc->bytes += ev_alloc->size;
    acc->lt_sum += lt;
    if (lt < acc->lt_min)
        acc->lt_min = lt;
    if (lt > acc->lt_max)
        acc->lt_max = lt;
    return 1;
}

/* The fold slot of address a (its own, or the empty one it would take). */
static inline fold_slot_t *fold_slot(uint64_t a, uint32_t gen, uint32_t fmask)
{
    uint32_t h = fold_hash(a, fmask);
    fold_slot_t *sl = &fl.fslots[h];
    while (sl->gen == gen && sl->addr != a) {
        h = (h + 1) & fmask;
        sl = &fl.fslots[h];
    }
    return sl;
}

/* Drops the entries struck out (UINT32_MAX) of fl.live[0..n); returns
 * those left. */
static uint32_t live_compact(uint32_t n)
{
    uint32_t *live = fl.live, w = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t x = live[k];
        live[w] = x;
        w += x != UINT32_MAX;
    }
    return w;
}

/* Folds the batch's allocations freed within it into per-stack counts: the
 * collector needs no more of them than their number, bytes and lifetimes
 * (what its report shows), so the pair is not sent. Not folded: pairs that
 * lived as long as the expire time (the collector counts those as expired),
 * blocks with a note, unsampled allocations, anything in sampled mode (each
 * block there carries its own weight). Lists the indexes of the events that
 * are sent, in batch order, in fl.live; returns their number. The batch
 * was merged without folding (merge_runs with fold 0): when no note can be
 * among its events, merge_runs folds as it merges instead, the same way. */
static uint32_t fold_batch(uint32_t m)
{
    uint32_t *live = fl.live;
    fold_begin(m);
    if (!fl.fold_on || m < 2) {
        for (uint32_t i = 0; i < m; i++)
            live[i] = i;
        return m;
    }
    const uint64_t lim = (uint64_t)fl.cmd.expire_ms * 1000000ull;
    const uint32_t gen = fl.fgen, fmask = fl.fmask;
    const ev_t *ev = fl.ev;
    /* live[0..n) is built as the fold goes: every event but a folded FREE
     * is appended; an ALLOC's slot keeps its place there (pos), and a fold
     * writes UINT32_MAX over it. One pass over the n entries then drops
     * those: with most pairs folded, n is about half the batch. */
    uint32_t n = 0;
    for (uint32_t i = 0; i < m; i++) {
        uint64_t a = ev[i].addr;
        fold_slot_t *sl = fold_slot(a, gen, fmask);
        uint32_t k = ev_kind(&ev[i]);
        if (k == EV_FREE) {
            if (sl->gen == gen && sl->pos != UINT32_MAX) {
                uint32_t lp = sl->pos;
                sl->pos = UINT32_MAX;
                if (fold_pair(&ev[live[lp]], &ev[i], lim)) {
                    live[lp] = UINT32_MAX; /* the ALLOC goes, and this FREE */
                    continue;
                }
            }
        } else {
            /* A new block at the address (an unsampled one is never folded). */
            sl->addr = a;
            sl->gen = gen;
            sl->pos = k == EV_ALLOC && !(fl.nnotes && noted_addr(a)) ? n : UINT32_MAX;
        }
        live[n++] = i;
    }
    return live_compact(n);
}

/* ---------------------------------------------------------------- encoding */

static inline uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Appends a packed repeated field (omitted when empty, as proto3 does). */
static uint8_t *put_packed(uint8_t *p, uint32_t field, const uint8_t *col, size_t len)
{
    if (!len)
        return p;
    p = put_varint(p, (uint64_t)field << 3 | 2);
    p = put_varint(p, len);
    memcpy(p, col, len);
    return p + len;
}

enum { COL_KIND, COL_ADDR, COL_TSD, COL_TID, COL_SIZE, COL_STACK };

/* On the wire: EVENT_ALLOC, EVENT_FREE, EVENT_ALLOC_UNSAMPLED, EVENT_ALLOC_PY. */
static const uint8_t wire_kind[8] = {
    [EV_ALLOC] = STACKWATCH__EVENT_KIND__EVENT_ALLOC,
    [EV_FREE] = STACKWATCH__EVENT_KIND__EVENT_FREE,
    [EV_ALLOC_FORCED] = STACKWATCH__EVENT_KIND__EVENT_ALLOC_UNSAMPLED,
    [EV_ALLOC_PY] = STACKWATCH__EVENT_KIND__EVENT_ALLOC_PY,
};

/* Encodes one column of the live events (indexes live[0..n)) into fl.col:
 * one loop per column, no per-event dispatch. */
static size_t enc_col(const uint32_t *live, uint32_t n, int which)
{
    const ev_t *ev = fl.ev;
    uint8_t *q = fl.col;
    switch (which) {
    case COL_KIND:
        for (uint32_t k = 0; k < n; k++)
            *q++ = wire_kind[ev_kind(&ev[live[k]])]; /* < 0x80: one byte */
        break;
    case COL_ADDR:
        for (uint32_t k = 0; k < n; k++)
            q = put_varint(q, ev[live[k]].addr);
        break;
    case COL_TID:
        for (uint32_t k = 0; k < n; k++)
            q = put_varint(q, ev_tid(&ev[live[k]]));
        break;
    case COL_TSD: {
        uint64_t prev = n ? ev[live[0]].ts : 0;
        for (uint32_t k = 0; k < n; k++) {
            uint64_t ts = ev[live[k]].ts;
            int64_t d = (int64_t)(ts - prev);
            prev = ts;
            q = put_varint(q, ((uint64_t)d << 1) ^ (uint64_t)(d >> 63)); /* zigzag */
        }
        break;
    }
    case COL_SIZE:
        for (uint32_t k = 0; k < n; k++)
            if (ev_kind(&ev[live[k]]) != EV_FREE)
                q = put_varint(q, ev[live[k]].size);
        break;
    case COL_STACK:
        for (uint32_t k = 0; k < n; k++)
            if (ev_kind(&ev[live[k]]) != EV_FREE)
                q = put_varint(q, ev[live[k]].stack);
        break;
    }
    return (size_t)(q - fl.col);
}

enum { FCOL_STACK, FCOL_N, FCOL_BYTES, FCOL_LT_SUM, FCOL_LT_MIN, FCOL_LT_MAX };

static size_t enc_fold_col(int which)
{
    uint8_t *q = fl.col;
    for (uint32_t k = 0; k < fl.nfacc; k++) {
        const fold_acc_t *a = &fl.facc[fl.facc_used[k]];
        uint64_t v = which == FCOL_STACK ? a->stack : which == FCOL_N ? a->n
                   : which == FCOL_BYTES ? a->bytes : which == FCOL_LT_SUM ? a->lt_sum
                   : which == FCOL_LT_MIN ? a->lt_min : a->lt_max;
        q = put_varint(q, v);
    }
    return (size_t)(q - fl.col);
}

/* Sends the batch's n events listed in fl.live (fold_batch) as one
 * EventBatch frame, encoded by hand in one pass per column (the same bytes
 * protobuf-c would write, without its size pass and per-field dispatch):
 * columnar, packed varints, timestamps as zigzag deltas from the first live
 * event's. */
static int send_batch(uint32_t n)
{
    uint8_t *body = fl.enc + ENC_PREFIX, *p = body;
    const uint32_t *live = fl.live;
    uint64_t base = n ? fl.ev[live[0]].ts : 0;
    if (base) {
        p = put_varint(p, 1 << 3 | 0);
        p = put_varint(p, base);
    }
    static const uint32_t fields[] = { 2, 3, 4, 5, 6, 7 };
    static const int cols[] = { COL_KIND, COL_ADDR, COL_TSD, COL_TID, COL_SIZE, COL_STACK };
    for (int c = 0; c < 6; c++)
        p = put_packed(p, fields[c], fl.col, enc_col(live, n, cols[c]));
    for (int c = 0; c < 6; c++)
        p = put_packed(p, 8 + (uint32_t)c, fl.col, enc_fold_col(c));
    size_t blen = (size_t)(p - body);
    /* Envelope: AgentMsg field 4 (events), length-delimited; then the frame
     * header, both written right before the body. */
    uint8_t pre[16], *q = pre + FRAME_HDR;
    q = put_varint(q, 4 << 3 | 2);
    q = put_varint(q, blen);
    size_t plen = (size_t)(q - pre);
    size_t payload = plen - FRAME_HDR + blen;
    if (payload > FRAME_MAX_AGENT) {
        log_msg("internal: event batch of %zu bytes exceeds %u; dropped", payload,
                FRAME_MAX_AGENT);
        return -EMSGSIZE;
    }
    pre[0] = (uint8_t)payload;
    pre[1] = (uint8_t)(payload >> 8);
    pre[2] = (uint8_t)(payload >> 16);
    pre[3] = (uint8_t)(payload >> 24);
    uint8_t *start = body - plen;
    memcpy(start, pre, plen);
    if (plen + blen > fl.max_frame)
        fl.max_frame = plen + blen;
    int rc = send_all(start, plen + blen);
    if (rc < 0)
        disconnect(rc == -ETIMEDOUT ? "send stalled" : strerror(-rc));
    return rc;
}

/* Stacks whose StackDef went out in this epoch, by index, direct mapped:
 * most events' stacks are found here without touching the intern table. */
#define SENT_CACHE 4096u
static uint32_t sent_cache[SENT_CACHE]; /* index + 1; 0 empty */
static uint32_t sent_cache_epoch;

/* Empties the cache when the epoch changed (once per drain). */
static inline void def_cache_epoch(void)
{
    if (__builtin_expect(sent_cache_epoch != fl.epoch, 0)) {
        memset(sent_cache, 0, sizeof sent_cache);
        sent_cache_epoch = fl.epoch;
    }
}

/* 1 when idx's StackDef is still to be sent in this epoch (and marks it
 * sent). def_cache_epoch was called in this drain; add_def's disconnect
 * ends the drain's merge, so the epoch does not change meanwhile. */
static inline int def_unsent(uint32_t idx)
{
    uint32_t *c = &sent_cache[idx & (SENT_CACHE - 1)];
    if (*c == idx + 1)
        return 0;
    *c = idx + 1;
    return intern_take_unsent(idx, fl.epoch);
}

enum { MERGE_DONE, MERGE_FAILED, MERGE_NOTE };

static hent_t merge_heap[RUNS_MAX];

/* A merge's output so far: next copy in fl.ev, entries of fl.live,
 * folded FREEs (not copied), notes taken, MERGE_* outcome. */
typedef struct merge_out_s {
    ev_t *o;
    uint32_t nlive, skipped;
    uint64_t notes;
    int rc;
} merge_out_t;

/* Takes the events [e, e_end) of one run (contiguous in its ring) while
 * they are stamped before lim, into st (see merge_runs). Returns where it
 * stopped: e_end, the first event at or past lim, the event whose StackDef
 * could not be queued (copied, st->rc MERGE_FAILED), or the note met while
 * folding (MERGE_NOTE). */
static inline __attribute__((always_inline)) const ev_t *
span_take(const int fold, merge_out_t *st, const ev_t *e, const ev_t *const e_end, uint64_t lim)
{
    ev_t *o = st->o, *const out = fl.ev;
    uint32_t *const live = fl.live;
    uint32_t nlive = st->nlive, skipped = st->skipped;
    const uint64_t flim = (uint64_t)fl.cmd.expire_ms * 1000000ull;
    const uint32_t gen = fl.fgen, fmask = fl.fmask;
    for (; e < e_end; e++) {
        if (e->ts >= lim)
            break;
        uint32_t k = ev_kind(e);
        if (k == EV_NOTE) {
            if (fold) {
                st->rc = MERGE_NOTE;
                break;
            }
            /* Sent after this batch: its allocation is in it or before it. */
            if (fl.nnotes < NOTE_SLOTS)
                fl.notes[fl.nnotes++] = e->stack;
            st->notes++;
            continue;
        }
        if (fold) {
            /* fold_batch's loop, on the event in the ring (no note in the
             * batch: no noted address). */
            uint64_t a = e->addr;
            fold_slot_t *sl = fold_slot(a, gen, fmask);
            if (k == EV_FREE) {
                if (sl->gen == gen && sl->pos != UINT32_MAX) {
                    uint32_t lp = sl->pos;
                    sl->pos = UINT32_MAX;
                    if (fold_pair(&out[live[lp]], e, flim)) {
                        live[lp] = UINT32_MAX;
                        skipped++;
                        continue;
                    }
                }
            } else {
                sl->addr = a;
                sl->gen = gen;
                sl->pos = k == EV_ALLOC ? nlive : UINT32_MAX;
            }
            live[nlive++] = (uint32_t)(o - out);
        }
        *o++ = *e;
        if (((1u << k) & ((1u << EV_ALLOC) | (1u << EV_ALLOC_FORCED) | (1u << EV_ALLOC_PY))) &&
            e->stack != INTERN_NONE && def_unsent(e->stack) && add_def(e->stack) < 0) {
            st->rc = MERGE_FAILED; /* disconnected: counted by the caller */
            break;
        }
    }
    st->o = o;
    st->nlive = nlive;
    st->skipped = skipped;
    return e;
}

/* Out of line, one per mode: the loop gets the registers to itself. */
__attribute__((noinline)) static const ev_t *span_fold(merge_out_t *st, const ev_t *e,
                                                      const ev_t *e_end, uint64_t lim)
{
    return span_take(1, st, e, e_end, lim);
}

__attribute__((noinline)) static const ev_t *span_plain(merge_out_t *st, const ev_t *e,
                                                       const ev_t *e_end, uint64_t lim)
{
    return span_take(0, st, e, e_end, lim);
}

/* Merges the runs' events by time into fl.ev, those stamped before the
 * watermark, up to BATCH_MAX; notes go to fl.notes. *m: events taken
 * (notes apart), *notes: notes taken; runs' pos say how far each went.
 * Without fold, fl.ev holds the *m events (*nlive = *m). With fold (fold_begin
 * done, no note among the runs) the batch is folded as fold_batch would:
 * a FREE that folds is not copied, fl.live[0..*nlive) lists the copies, a
 * folded ALLOC's entry struck out (live_compact drops them). MERGE_NOTE:
 * fold set and a note met after all (the runs must be merged again);
 * MERGE_FAILED: disconnected while queueing a StackDef. */
static int merge_runs(const int fold, uint32_t *pm, uint32_t *pnlive, uint64_t *pnotes)
{
    hent_t *heap = merge_heap;
    uint32_t hn = fl.nruns;
    for (uint32_t i = 0; i < hn; i++) {
        heap[i].run = i;
        heap[i].ts = run_ts(i);
    }
    for (uint32_t i = hn / 2; i-- > 0;)
        heap_down(heap, hn, i);
    fl.nnotes = 0;
    fl.more = 0;
    const uint64_t wm_lim = fl.wm;
    merge_out_t st = { .o = fl.ev, .rc = MERGE_DONE };
    uint32_t m = 0; /* taken: copied or folded */
    while (hn > 0) {
        if (heap[0].ts >= wm_lim)
            break; /* everything left is at or past the watermark */
        if (m == BATCH_MAX) {
            fl.more = 1;
            break;
        }
        run_t *r = &fl.runs[heap[0].run];
        /* The run at the top is taken for as long as its events come no
         * later than every other run's next one and before the watermark:
         * one heap step per switch between rings, not per event. Events of
         * equal stamps in two rings go in either order, as before. */
        uint64_t lim = wm_lim;
        if (hn > 1) {
            uint64_t o = heap[1].ts;
            if (hn > 2 && heap[2].ts < o)
                o = heap[2].ts;
            if (o < lim)
                lim = o + 1;
        }
        const ev_t *slots = r->r->slots;
        const uint64_t mask = r->r->mask, end = r->end;
        uint64_t pos = r->pos;
        /* At most the batch's room from this run. */
        const uint64_t stop = end - pos > BATCH_MAX - m ? pos + (BATCH_MAX - m) : end;
        /* Walked by pointer over the contiguous spans (a run wraps the ring
         * at most once): no index masking per event. */
        while (pos < stop) {
            const ev_t *e0 = &slots[pos & mask];
            uint64_t span = mask + 1 - (pos & mask);
            if (span > stop - pos)
                span = stop - pos;
            const ev_t *e_end = e0 + span;
            uint64_t m0 = (uint64_t)(st.o - fl.ev) + st.skipped;
            const ev_t *e = fold ? span_fold(&st, e0, e_end, lim)
                                 : span_plain(&st, e0, e_end, lim);
            if (st.rc == MERGE_NOTE)
                return MERGE_NOTE;
            /* A StackDef that failed leaves its event copied but not passed. */
            m += (uint32_t)((uint64_t)(st.o - fl.ev) + st.skipped - m0);
            pos += (uint64_t)(e - e0);
            if (e != e_end || st.rc != MERGE_DONE)
                break;
        }
        r->pos = pos;
        if (st.rc != MERGE_DONE)
            break;
        if (pos == end)
            heap[0] = heap[--hn];
        else
            heap[0].ts = ev_ts_at(r->r, pos);
        if (hn > 1)
            heap_down(heap, hn, 0);
    }
    *pm = m;
    *pnlive = fold ? st.nlive : (uint32_t)(st.o - fl.ev);
    *pnotes = st.notes;
    return st.rc;
}

/* Merges the rings' events by time, in place, and sends those stamped before
 * the watermark, up to BATCH_MAX; only what is sent is consumed, the rest
 * waits in its ring. The stream leaving the agent is thus in global time
 * order: a free from one thread never precedes the allocation it frees from
 * another. With final set the watermark is lifted. Returns events consumed. */
static uint32_t drain_once(int final)
{
    uint64_t wm = final ? UINT64_MAX : watermark();
    /* The process began to end: what it did before goes out, then the
     * Ending, then (if anything) what was stamped after. */
    uint64_t end = atomic_load_explicit(&agent.end_ts, memory_order_acquire);
    int sent = fl.end_sent && fl.end_epoch == fl.epoch;
    fl.end_cap = end && !sent && wm > end;
    fl.wm = fl.end_cap ? end : wm;
    fl.nruns = 0;
    fl.more = 0;
    tstate_each_ring(collect_ring, NULL);
    if (fl.nruns == 0)
        return 0;
    if (fl.sock.fd < 0 || fl.need_hello) {
        /* Disconnected: everything readable is discarded and counted. */
        uint32_t n = 0;
        for (uint32_t i = 0; i < fl.nruns; i++) {
            run_t *rn = &fl.runs[i];
            for (uint64_t k = rn->start; k < rn->end; k++) {
                const ev_t *e = &rn->r->slots[k & rn->r->mask];
                if (ev_kind(e) != EV_NOTE)
                    continue;
                fl.notes_consumed++;
                note_t *nt = note_at(e->stack);
                if (nt)
                    note_release(nt);
            }
            ring_consume(rn->r, rn->end - rn->start);
            n += (uint32_t)(rn->end - rn->start);
        }
        fl.lost_since += n;
        fl.lost_total += n;
        return n;
    }
    fl.ndefs = 0;
    fl.refreshed = 0;
    def_cache_epoch();
    /* No note among the runs (the notes pushed, counted before each push
     * released its ring's head, are all consumed; the heads were read
     * above): the fold needs no note, so it is done while merging. */
    uint64_t avail = 0;
    for (uint32_t i = 0; i < fl.nruns && avail < BATCH_MAX; i++)
        avail += fl.runs[i].end - fl.runs[i].start;
    fold_begin(avail < BATCH_MAX ? (uint32_t)avail : BATCH_MAX);
    int fold = fl.fold_on && !fl.merge_fold_off &&
               atomic_load_explicit(&arm_notes_pushed, memory_order_relaxed) == fl.notes_consumed;
    uint32_t m = 0, nlive = 0;
    uint64_t notes = 0;
    int rc = fold ? merge_runs(1, &m, &nlive, &notes) : merge_runs(0, &m, &nlive, &notes);
    if (__builtin_expect(rc == MERGE_NOTE, 0)) {
        /* Cannot happen but for miscounted notes (a fork child's copy of
         * a drain): nothing was consumed, merge again without folding. */
        fl.merge_fold_off = 1;
        fold = 0;
        for (uint32_t i = 0; i < fl.nruns; i++)
            fl.runs[i].pos = fl.runs[i].start;
        rc = merge_runs(0, &m, &nlive, &notes);
    }
    /* Free the slots read; the producers may reuse them from here on. */
    for (uint32_t i = 0; i < fl.nruns; i++)
        if (fl.runs[i].pos != fl.runs[i].start)
            ring_consume(fl.runs[i].r, fl.runs[i].pos - fl.runs[i].start);
    fl.notes_consumed += notes;
    if (rc == MERGE_FAILED)
        goto failed; /* disconnected */
    if (m == 0) {
        for (uint32_t i = 0; i < fl.nnotes; i++) {
            note_t *nt = note_at(fl.notes[i]);
            if (nt)
                send_note(nt);
        }
        fl.nnotes = 0;
        return 0;
    }
    if (fl.sock.fd < 0 || send_defs() < 0 || send_modules() < 0)
        goto failed;
    if (m > fl.max_m)
        fl.max_m = m;
    if (send_batch(fold ? live_compact(nlive) : fold_batch(nlive)) < 0)
        goto failed;
    for (uint32_t i = 0; i < fl.nnotes; i++) {
        note_t *nt = note_at(fl.notes[i]);
        if (nt)
            send_note(nt); /* frees the slot even when the send fails */
    }
    fl.nnotes = 0;
    return m;
failed:
    release_notes();
    /* The connection dropped with this batch taken off the rings: lost. */
    fl.lost_since += m;
    fl.lost_total += m;
    return m;
}

/* Tells collectord the process began to end, once every event stamped
 * before that is out (the drain just done stopped there, and all fit). */
static void send_ending(void)
{
    Stackwatch__Ending e = STACKWATCH__ENDING__INIT;
    e.ts = atomic_load(&agent.end_ts);
    const char *why = atomic_load(&agent.end_why);
    e.why = (char *)(why ? why : "");
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_ENDING;
    m.ending = &e;
    if (send_msg(&m) == 0) {
        fl.end_sent = 1;
        fl.end_epoch = fl.epoch;
    }
}

static void drain_all(int final)
{
    /* Bounded rounds: producers faster than the socket must not keep the
     * flusher from reading commands and sending stats forever. */
    for (int round = 0; round < 64; round++) {
        drain_once(final);
        if (!fl.more)
            break;
    }
    if (fl.end_cap && !fl.more && fl.sock.fd >= 0 && !fl.need_hello) {
        send_ending();
        if (final)
            drain_once(final); /* stamped after the end: collectord counts them */
    }
}

/* The process's memory as the kernel and malloc see it, for the account
 * collectord reports beside the tracked live bytes. The flusher only (guard
 * set): mallinfo2 takes each arena's lock briefly, once per stats period. */
static void memory_account(Stackwatch__Stats *s)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        unsigned long long size = 0, res = 0;
        if (n > 0) {
            buf[n] = '\0';
            if (sscanf(buf, "%llu %llu", &size, &res) == 2)
                s->rss_bytes = (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
        }
    }
    struct mallinfo2 mi = mallinfo2();
    s->heap_bytes = mi.arena + mi.hblkhd;
    s->heap_free_bytes = mi.fordblks;
    s->heap_mmap_bytes = mi.hblkhd;
    s->pyarena_counted =
        pyarena_totals(&s->pyarena_mapped_bytes, &s->pyarena_unmapped_bytes);
}

static void send_stats(void)
{
    Stackwatch__Stats s = STACKWATCH__STATS__INIT;
    s.dropped = tstate_dropped();
    s.failed_calls = atomic_load(&agent.failed_calls);
    s.unwind_failures = atomic_load(&agent.unwind_failures);
    s.intern_full = atomic_load(&agent.intern_full);
    s.events = tstate_events();
    s.threads = tstate_threads();
    s.ring_bytes = tstate_ring_bytes();
    s.table_bytes = intern_bytes() + modmap_bytes();
    s.ring_waits = tstate_waits();
    s.lost_disconnected = fl.lost_total + tstate_offline();
    s.firings = arm_firings();
    s.armed_sites_full = arm_sites_full();
    s.notes_dropped = note_dropped();
    tstate_totals(&s.total_allocs, &s.total_alloc_bytes, &s.total_frees);
    s.sample_overflow = sample_overflow();
    s.sample_set_bytes = sample_bytes_mapped();
    s.stack_cache_hits = tstate_cache_hits();
    s.python_version = py_version();
    s.python_status = (char *)py_status();
    s.python_hooked = atomic_load(&py_domains_hooked);
    memory_account(&s);
    /* The batch's events, live index, fold slots (two per event at most)
     * and the encoded frame, as far as batches have used them; the rest is
     * reserved, untouched. */
    s.scratch_bytes = (uint64_t)fl.max_m * (sizeof(ev_t) + sizeof(uint32_t) +
                                            2 * sizeof(fold_slot_t)) +
                      2 * fl.max_frame;
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_STATS;
    m.stats = &s;
    send_msg(&m);
    fl.last_stats_ns = clock_now_ns();
}

static void send_bye(void)
{
    Stackwatch__Goodbye g = STACKWATCH__GOODBYE__INIT;
    g.ts = clock_now_ns();
    g.detached = fl.bye_detached;
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_BYE;
    m.bye = &g;
    send_msg(&m);
}

/* Ends the connection without losing the Goodbye: closing a Unix socket
 * with unread data in it (the Welcome, a command) resets the connection, and
 * the collector would drop what it had not read yet. So: half-close, read
 * until the collector closes its side (it does on our EOF), bounded. */
static void linger_close(void)
{
    if (!fdguard_valid(&fl.sock))
        return;
    shutdown(fl.sock.fd, SHUT_WR);
    uint64_t deadline = clock_now_ns() + 500ull * 1000000;
    char buf[4096];
    for (;;) {
        ssize_t r = recv(fl.sock.fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            break;
        uint64_t now = clock_now_ns();
        if (now >= deadline)
            break;
        if (r < 0) {
            struct pollfd pfd = { .fd = fl.sock.fd, .events = POLLIN };
            poll(&pfd, 1, (int)((deadline - now) / 1000000) + 1);
        }
    }
    fdguard_close(&fl.sock);
}

/* ---------------------------------------------------------------- the thread */

static void wait_events(int timeout_ms)
{
    struct pollfd pfd[2];
    int n = 0;
    int ev_i = -1, sock_i = -1;
    if (emit_flusher.evfd.fd >= 0) {
        pfd[n] = (struct pollfd){ .fd = emit_flusher.evfd.fd, .events = POLLIN };
        ev_i = n++;
    }
    if (fl.sock.fd >= 0) {
        pfd[n] = (struct pollfd){ .fd = fl.sock.fd, .events = POLLIN };
        sock_i = n++;
    }
    int rc = poll(pfd, (nfds_t)n, timeout_ms);
    if (rc <= 0)
        return;
    if (ev_i >= 0 && (pfd[ev_i].revents & POLLIN)) {
        uint64_t v;
        ssize_t r = read(emit_flusher.evfd.fd, &v, sizeof v);
        (void)r;
    }
    if (sock_i >= 0 && fl.sock.fd >= 0 && (pfd[sock_i].revents & (POLLIN | POLLHUP | POLLERR)))
        read_commands();
}

/* ---------------------------------------------------------------- the last thread */

/* Reads /proc/self/task/<tid>/stat. Returns what follows the name (from
 * the state letter on), or NULL; ENOENT in *gone. */
static const char *task_stat(pid_t tid, char *buf, size_t cap, int *gone)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    *gone = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *gone = errno == ENOENT;
        return NULL;
    }
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the name may hold anything, even ')' */
    return p && p[1] == ' ' && p[2] ? p + 2 : NULL;
}

/* The state letter of thread tid of this process ('X' gone, '?' unknown). */
static char task_state(pid_t tid)
{
    char buf[1024];
    int gone;
    const char *p = task_stat(tid, buf, sizeof buf, &gone);
    return p ? p[0] : gone ? 'X' : '?';
}

/* The status a thread that exited passed to SYS_exit (field 52 of its
 * stat, in waitpid's form), 0 if unknown. */
static int task_exit_status(pid_t tid)
{
    char buf[1024];
    int gone;
    const char *p = task_stat(tid, buf, sizeof buf, &gone);
    for (int field = 3; p && field < 52; field++) {
        p = strchr(p, ' ');
        if (p)
            p++;
    }
    return p ? (atoi(p) >> 8) & 0xff : 0;
}

/* Every thread listed in /proc/self/task but the flusher is a zombie or
 * gone (the link count is only a hint: not every /proc keeps it exact). */
static int all_others_dead(void)
{
    int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[1024];
    int alive = 0, ok = 1;
    for (;;) {
        long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (n < 0)
            ok = 0;
        if (n <= 0)
            break;
        for (long off = 0; off < n && !alive;) {
            const char *name = buf + off + 19; /* struct linux_dirent64: d_name */
            off += *(const unsigned short *)(buf + off + 16);
            if (name[0] < '0' || name[0] > '9')
                continue;
            pid_t tid = (pid_t)atoi(name);
            if ((uint32_t)tid == fl.self_tid)
                continue;
            char c = task_state(tid);
            if (c != 'Z' && c != 'X' && c != 'x')
                alive = 1; /* running, sleeping, stopped, traced, or unknown */
        }
        if (alive)
            break;
    }
    close(fd);
    return ok && !alive;
}

/* 1 when every thread of the process but the flusher has exited: then
 * nothing keeps the process alive but us, and without the agent it would
 * have ended. One stat(2) per call while three threads or more exist (the
 * directory's link count is 2 + threads; only the group leader lingers as a
 * zombie, so with three at least one more is alive); with two, the leader's
 * state is read every LAST_CHECK_NS (one that exited stays listed as 'Z'
 * until the process ends), and only when it has exited is every thread
 * looked at. 0 when /proc cannot tell. */
static int others_gone(void)
{
    struct stat st;
    if (stat("/proc/self/task", &st) < 0 || st.st_nlink < 3)
        return 0;
    if (st.st_nlink - 2 > 2)
        return 0;
    /* A state read costs tens of us: every LAST_CHECK_NS, not every round. */
    static uint64_t last_check;
    uint64_t now = clock_now_ns();
    if (now - last_check < LAST_CHECK_NS)
        return 0;
    last_check = now;
    /* The group leader (never the flusher: pthread_create made it) is
     * listed while any thread lives: alive, nobody else needs looking at. */
    char c = task_state(getpid());
    if (c != 'Z' && c != 'X' && c != 'x')
        return 0;
    return all_others_dead();
}

/* All the program's threads are gone: the process ends now, as it would
 * have without the flusher. What is pending goes out first (the Ending says
 * "last thread exited"). Then, if the last of them left through glibc's
 * thread exit (pthread_exit, or a return from its start routine), glibc
 * would have seen the thread count reach zero and called exit(0), so we do
 * (atexit handlers, stdio flushed, with the mask the program started with);
 * if some exited with a bare SYS_exit (glibc still counts it), the kernel
 * would have ended the process when the last one went, with that thread's
 * status: we leave with a bare SYS_exit too, with the status the group
 * leader exited with (the one thread whose status the kernel keeps; the
 * last one in the common case of a single-threaded program, such as one in
 * seccomp strict mode, which can only leave that way). Never returns. */
static void end_as_last_thread(void)
{
    /* The end begins (as agent_begin_end, from the flusher). */
    uint64_t none = 0;
    if (atomic_compare_exchange_strong(&agent.end_ts, &none, clock_now_ns()))
        atomic_store(&agent.end_why, "last thread exited");
    atomic_store(&fl.exit_req, 1); /* sends bounded as at exit */
    atomic_store(&agent.recording, 0);
    drain_all(1);
    if (fl.sock.fd >= 0) {
        send_stats();
        send_bye();
        linger_close();
    }
    fdguard_close(&emit_flusher.evfd);
    atomic_store(&fl.exit_done, 1); /* our destructor's flush_final returns at once */
    int via_glibc = !fl.nptl_nthreads ||
                    atomic_load_explicit((_Atomic int *)fl.nptl_nthreads, memory_order_acquire) <= 1;
    if (via_glibc) {
        pthread_sigmask(SIG_SETMASK, &fl.app_mask, NULL);
        exit(0); /* the agent's exit: the end is already begun */
    }
    int status = task_exit_status(getpid());
    for (;;)
        syscall(SYS_exit, status);
}

/* The flusher's own stack is the agent's memory (a scan leaves it out). */
static void stack_register(void)
{
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) != 0)
        return;
    void *lo;
    size_t n;
    if (pthread_attr_getstack(&a, &lo, &n) == 0) {
        fl.own_stack = lo;
        region_add(lo, n);
    }
    pthread_attr_destroy(&a);
}

static void *flush_main(void *arg)
{
    (void)arg;
    tstate.guard = 1; /* nothing this thread does is recorded */
    fl.self_tid = (uint32_t)syscall(SYS_gettid);
    creds_set_flusher((int)fl.self_tid);
    /* A name to tell it apart: stackctl attach never borrows it, top shows it. */
    prctl(PR_SET_NAME, (unsigned long)"stackwatch", 0, 0, 0);
    stack_register();
    for (;;) {
        creds_apply_pending();
        int exiting = atomic_load(&fl.exit_req);
        if (fl.sock.fd < 0 && !exiting)
            maybe_reconnect();
        creds_apply_pending();
        if (fl.sock.fd >= 0 && fl.need_hello)
            on_connected();
        creds_apply_pending();
        if (modmap_changed()) {
            modmap_refresh();
            got_refresh(); /* attached: modules loaded without our dlopen hook */
        }
        creds_apply_pending();
        if (exiting) {
            /* Final flush: stop recording, drain everything, say goodbye. */
            atomic_store(&agent.recording, 0);
            drain_all(1);
            if (fl.sock.fd >= 0) {
                send_stats();
                send_bye();
                linger_close();
            }
            if (fl.ptracer_set) {
                prctl(PR_SET_PTRACER, 0, 0, 0, 0);
                fl.ptracer_set = 0;
            }
            if (fl.own_stack)
                region_del(fl.own_stack);
            fl.own_stack = NULL;
            atomic_store(&fl.exit_done, 1);
            return NULL;
        }
        if (atomic_load(&fl.ask) == ASK_WANTED)
            ask_scan();
        else
            ask_check();
        if (others_gone())
            end_as_last_thread();
        drain_all(0);
        void (*poke)(void) = atomic_load(&py_domains_poke);
        if (poke)
            poke(); /* attached: CPython's domains, until they are hooked */
        if (fl.sock.fd >= 0 && clock_now_ns() - fl.last_stats_ns >= STATS_NS)
            send_stats();
        tstate_reap();
        wait_events(PERIOD_MS);
    }
}

int flush_start(void)
{
    if (emit_flusher.evfd.fd < 0) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd >= 0)
            fdguard_take(&emit_flusher.evfd, fd);
    }
    if (!fl.nptl_nthreads) {
        /* glibc's own count of its threads (GLIBC_PRIVATE; NULL elsewhere):
         * read only, to end as glibc would when we are the last thread. */
        fl.nptl_nthreads = dlvsym(RTLD_DEFAULT, "__nptl_nthreads", "GLIBC_PRIVATE");
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread inherits a full mask */
    fl.app_mask = old;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256u << 10);
    /* From here on the program's capset/PR_SET_KEEPCAPS are mirrored to the
     * new thread even before it runs and says its tid. */
    creds_set_flusher(CREDS_FLUSHER_STARTING);
    int rc = pthread_create(&fl.thr, &attr, flush_main, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        creds_set_flusher(0);
        return -rc;
    }
    emit_flusher.running = 1;
    return 0;
}

static void final_wait(int ms)
{
    if (!emit_flusher.running || atomic_exchange(&fl.exit_req, 1))
        return;
    flush_kick();
    /* Bounded by ms; polled finely, the last drain and the Goodbye
     * usually take well under a millisecond. */
    uint64_t until = clock_now_ns() + (uint64_t)ms * 1000000u;
    for (unsigned i = 0; !atomic_load(&fl.exit_done) && clock_now_ns() < until; i++) {
        if (i < 32) {
            sched_yield();
        } else {
            /* Finely for the usual case, coarsely through a long stall. */
            struct timespec ts = { 0, i < 20000 ? 50000 : 2000000 };
            nanosleep(&ts, NULL);
        }
    }
}

/* A fresh connection state: no session, no reconnect history (after a
 * detach, or in a fork child). */
static void session_reset(void)
{
    fl.need_hello = 0;
    fl.ever_connected = 0;
    fl.reconnects = 0;
    fl.lost_since = fl.lost_total = 0;
    fl.told_unreachable = 0;
    fl.backoff_ns = BACKOFF_MIN_NS;
    fl.next_try_ns = 0;
}


void flush_final(void)
{
    final_wait(FINAL_WAIT_MS);
}

int flush_detach(void)
{
    if (!emit_flusher.running)
        return 0;
    fl.bye_detached = 1;
    final_wait(DETACH_WAIT_MS);
    if (!atomic_load(&fl.exit_done)) {
        fl.stuck = 1;
        return -ETIMEDOUT;
    }
    /* Ready for another session (stackwatch_attach again). */
    emit_flusher.running = 0;
    fl.bye_detached = 0;
    session_reset();
    if (fl.rd_ok)
        fl.rd.start = fl.rd.end = 0;
    fdguard_close(&fl.sock);
    atomic_store(&fl.exit_req, 0);
    atomic_store(&fl.exit_done, 0);
    return 0;
}

static void count_inside(ring_t *r, void *arg)
{
    /* acquire: pairs with the release in ring_inside_end / ring_busy_end. */
    if (atomic_load_explicit(&r->inside, memory_order_acquire) ||
        atomic_load_explicit(&r->busy, memory_order_acquire))
        (*(int *)arg)++;
}

int flush_quiesce(int timeout_ms)
{
    atomic_store(&agent.recording, 0);
    /* Every thread passes a barrier: one that set inside (or busy) before
     * it read recording is seen inside below; one that did after reads 0
     * and backs off. */
    if (!ring_asym_fence || syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
        atomic_thread_fence(memory_order_seq_cst);
    uint64_t until = clock_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        int n = 0;
        tstate_each_ring(count_inside, &n);
        if (!n)
            return 0;
        if (clock_now_ns() >= until)
            return -EBUSY;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

void flush_close_fds(void)
{
    fdguard_close(&emit_flusher.evfd);
}

int flush_stuck(void)
{
    return fl.stuck;
}

void flush_disconnect(void)
{
    fdguard_close(&fl.sock);
    fl.need_hello = 0;
}

void flush_fork_child(void)
{
    creds_set_flusher(0); /* the parent's flusher is not ours */
    /* Close our copies: the parent keeps its connection, and an inherited
     * eventfd would wake the parent's flusher. Never shutdown(): that would
     * end the parent's connection too. */
    if (fl.sock.fd >= 0)
        close(fl.sock.fd);
    fl.sock.fd = -1;
    if (emit_flusher.evfd.fd >= 0)
        close(emit_flusher.evfd.fd);
    emit_flusher.evfd.fd = -1;
    /* The parent's flusher may have been inside rd's realloc: abandon it. */
    fl.rd_ok = 0;
    fl.rd.buf = NULL;
    emit_flusher.running = 0;
    session_reset();
    atomic_store(&fl.exit_req, 0);
    atomic_store(&fl.exit_done, 0);
    atomic_store(&fl.ask, ASK_NONE);
}

/* Waits until the asked scan is over, at most cfg.scan_exit_wait_s. */
static int ask_wait(void)
{
    uint64_t until = clock_now_ns() + (uint64_t)cfg.scan_exit_wait_s * 1000000000u;
    for (unsigned i = 0; atomic_load(&fl.ask) != ASK_DONE; i++) {
        if (clock_now_ns() >= until)
            return -ETIMEDOUT;
        if (i < 16) {
            sched_yield();
        } else {
            struct timespec ts = { 0, 1000000 };
            nanosleep(&ts, NULL);
        }
    }
    return 0;
}

void flush_scan_at_end(const char *why)
{
    if (!cfg.scan_at_exit || !emit_flusher.running || atomic_load(&fl.exit_req))
        return;
    int none = ASK_NONE;
    if (!atomic_compare_exchange_strong(&fl.ask, &none, ASK_CLAIMED)) {
        ask_wait(); /* another thread asked: the end waits for that scan */
        return;
    }
    fl.ask_why = why; /* before the flusher can see WANTED */
    atomic_store(&fl.ask, ASK_WANTED);
    flush_kick();
    if (ask_wait() < 0)
        log_msg("no scan at the end: the collector did not finish it within %u s "
                "(STACKWATCH_SCAN_AT_EXIT_WAIT)", cfg.scan_exit_wait_s);
}

void flush_note_unreachable(void)
{
    fl.told_unreachable = 1;
}
