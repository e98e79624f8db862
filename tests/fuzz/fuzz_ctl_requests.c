/* libFuzzer target: whatever stackctl (or anyone on the control socket) sends, collectord neither crashes, leaks, hangs nor replies garbage. */
/*
 * Input layout:
 *
 *   byte 0   flags, F_* below
 *   byte 1   chunk size - 1 (with F_CHUNK)
 *   rest     the byte streams of up to MAX_SEGS control connections, separated
 *            by SEP: length-prefixed Request frames as stackctl sends them
 *
 * Each input starts from the same collectord state (built once and kept for
 * inputs that can only read it, see state_t), built through the real
 * agent path (conn_new + ingest via a socketpair, as tests/fuzz/
 * fuzz_agent_frames.c does): four clients of which two run one executable
 * (one of them sampled, one a CPython 3.11 with Python notes), one ended
 * with Goodbye and one lost; modules, six stacks each, blocks allocated over
 * time, some freed after expiring (a cache), aged and classified several
 * times so stacks have classes, series and may-leak blocks. The stacks carry
 * function names (interned symbols, as the symbolizer would give them,
 * allocation wrappers among them), so trigger rules match and arm stacks in
 * their agents for real (the commands go to the agents' sockets).
 *
 * Then each segment runs through the real read path of a control
 * connection: conn_new(CONN_CONTROL) on a socketpair, the bytes written
 * (chunked with F_CHUNK), the loop run so conn.c frames them and
 * ctl_request() decodes and runs them (queries, marks, trigger add/list/rm,
 * ping, shutdown). Every reply collectord writes is read back and must be a
 * well-formed frame that decodes as a Reply. With F_AGE the aging tick runs
 * between connections (new rules meet freshly classified stacks). With
 * F_KEEP connections stay open until the end.
 *
 * The fake agents' Hellos carry no flusher thread id, so a Scan request is
 * refused (ENOTSUP) before anything could be ptraced.
 *
 * The symbolizer thread is not started: stacks without frames get
 * module+offset at once (sym_fallback), as collectord does without a worker.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "collector/collectord/client.h"
#include "collector/collectord/conn.h"
#include "collector/collectord/srv.h"
#include "collector/collectord/sym.h"
#include "collector/collectord/wrap.h"
#include "frame.h"
#include "fuzz_segs.h"
#include "proto/stackwatch.pb-c.h"

enum {
    F_CHUNK = 1, /* write requests in small chunks, running the loop in between */
    F_AGE = 2,   /* aging tick between connections */
    F_KEEP = 4,  /* leave connections open until the end */
    F_MARK = 8,  /* a mark set on every client before the requests */
};

#define MAX_SEGS 8
#define PUMP_MAX 4096
#define NSTACKS 6
#define NCLIENTS 4
#define MS 1000000ull
#define EXPIRE_NS MS

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static FILE *out;

#define FINDING(...)                               \
    do {                                           \
        fprintf(out, "FINDING: " __VA_ARGS__);     \
        fflush(out);                               \
        __builtin_trap();                          \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    out = stderr;
    if (!getenv("STACKWATCH_FUZZ_LOG")) {
        FILE *devnull = fopen("/dev/null", "w");
        if (devnull)
            stderr = devnull;
    }
    wrap_init();
    return 0;
}

static void pump(srv_t *s)
{
    ev_run(s->loop, EVRUN_NOWAIT);
}

/* ---------------------------------------------------------------- the agents' side */

typedef struct obuf_s {
    uint8_t buf[1 << 16];
    size_t n;
} obuf_t;

static void put(obuf_t *o, Stackwatch__AgentMsg *m)
{
    size_t w = frame_encode(&m->base, o->buf + o->n, sizeof o->buf - o->n, FRAME_MAX_AGENT);
    if (!w)
        abort();
    o->n += w;
}

#define MOD_EXE 0x555500000000ull
#define MOD_PY 0x7f0000000000ull

static uint64_t pc_of(uint32_t stack, uint32_t frame)
{
    /* Frame 0..1 in the executable, the rest in libpython (an interpreter
     * frame among them) for odd stacks. */
    if (frame < 2 || !(stack & 1))
        return MOD_EXE + 0x1000 + stack * 0x100 + frame * 0x10;
    return MOD_PY + 0x2000 + stack * 0x100 + frame * 0x10;
}

static void put_batch(obuf_t *o, uint64_t ts, const uint32_t *kind, const uint64_t *addr,
                      const uint64_t *size, const uint32_t *stack, size_t n)
{
    uint32_t kinds[64], tids[64], stacks[64];
    uint64_t addrs[64], sizes[64];
    int64_t deltas[64];
    size_t na = 0;
    for (size_t i = 0; i < n; i++) {
        kinds[i] = kind[i];
        addrs[i] = addr[i];
        deltas[i] = i ? 1000 : 0;
        tids[i] = 100 + (uint32_t)(i & 1);
        if (kind[i] == 0) {
            sizes[na] = size[i];
            stacks[na++] = stack[i];
        }
    }
    Stackwatch__EventBatch b = STACKWATCH__EVENT_BATCH__INIT;
    b.ts_base = ts;
    b.n_kind = n;
    b.kind = kinds;
    b.n_addr = n;
    b.addr = addrs;
    b.n_ts_delta = n;
    b.ts_delta = deltas;
    b.n_tid = n;
    b.tid = tids;
    b.n_size = na;
    b.size = sizes;
    b.n_stack = na;
    b.stack = stacks;
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_EVENTS;
    m.events = &b;
    put(o, &m);
}

/* One agent's session: hello, modules, stacks, three batches over time
 * (leaks, a cache, growth), a Python note, stats; Goodbye if bye. */
static void session(obuf_t *o, int who, uint64_t t0, int python, int sampled, int bye)
{
    static char *argv[] = { "fuzzed", "--serve", "8080" };
    Stackwatch__Hello h = STACKWATCH__HELLO__INIT;
    h.version = PROTO_VERSION;
    h.pid = 1001 + (uint32_t)who;
    h.ppid = 1;
    h.exe = who == 3 ? "/opt/other/worker" : "/usr/bin/fuzzed";
    h.n_argv = 3;
    h.argv = argv;
    h.start_realtime_ns = 1700000000000000000ull;
    h.instance = 0x5357435400000000ull + (uint64_t)who;
    h.depth = 32;
    h.sample = sampled ? "512k" : "all";
    h.sample_bytes = sampled ? 512u << 10 : 0;
    h.mono_now_ns = t0;
    h.python_version = python ? 0x030b02f0 : 0;
    h.python_status = python ? "" : "no libpython";
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_HELLO;
    m.hello = &h;
    put(o, &m);

    Stackwatch__Module mods[2] = { STACKWATCH__MODULE__INIT, STACKWATCH__MODULE__INIT };
    Stackwatch__Module *modp[2] = { &mods[0], &mods[1] };
    uint64_t r0[2] = { MOD_EXE, MOD_EXE + 0x100000 }, r1[2] = { MOD_PY, MOD_PY + 0x100000 };
    static uint8_t bid[20] = { 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
    mods[0].id = 1;
    mods[0].path = h.exe;
    mods[0].bias = MOD_EXE;
    mods[0].n_ranges = 2;
    mods[0].ranges = r0;
    mods[0].build_id.data = bid;
    mods[0].build_id.len = sizeof bid;
    mods[0].gen_added = 1;
    mods[1].id = 2;
    mods[1].path = "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0";
    mods[1].bias = MOD_PY;
    mods[1].n_ranges = 2;
    mods[1].ranges = r1;
    mods[1].gen_added = 1;
    Stackwatch__ModuleMap mm = STACKWATCH__MODULE_MAP__INIT;
    mm.n_modules = 2;
    mm.modules = modp;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_MODULES;
    m.modules = &mm;
    put(o, &m);

    Stackwatch__StackDef defs[NSTACKS];
    Stackwatch__StackDef *defp[NSTACKS];
    uint64_t pcs[NSTACKS][6];
    for (uint32_t i = 0; i < NSTACKS; i++) {
        stackwatch__stack_def__init(&defs[i]);
        uint32_t depth = 2 + i % 5;
        for (uint32_t k = 0; k < depth; k++)
            pcs[i][k] = pc_of(i + 1, k);
        defs[i].index = i + 1;
        defs[i].id = 0x1d00000000000000ull + (i + 1) * 0x1111;
        defs[i].generation = 1;
        defs[i].n_pcs = depth;
        defs[i].pcs = pcs[i];
        defs[i].truncated = i == 5;
        defp[i] = &defs[i];
    }
    Stackwatch__StackDefs sd = STACKWATCH__STACK_DEFS__INIT;
    sd.n_stacks = NSTACKS;
    sd.stacks = defp;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_STACKS;
    m.stacks = &sd;
    put(o, &m);

    /* t0: 24 blocks on every stack; stack 3's are a cache (freed after
     * expiring, at t0 + 3 ms), stack 1 keeps growing. */
    uint32_t kind[64], stack[64];
    uint64_t addr[64], size[64];
    size_t n = 0;
    uint64_t base = 0x10000000ull * (uint64_t)(who + 1);
    for (uint32_t i = 0; i < 24; i++, n++) {
        kind[n] = 0;
        addr[n] = base + i * 0x40;
        size[n] = sampled ? (600u << 10) : 32u * (i + 1);
        stack[n] = 1 + i % NSTACKS;
    }
    put_batch(o, t0, kind, addr, size, stack, n);
    n = 0;
    for (uint32_t i = 0; i < 24; i++)
        if (1 + i % NSTACKS == 3) {
            kind[n] = 1;
            addr[n++] = base + i * 0x40;
        }
    for (uint32_t i = 0; i < 8; i++, n++) {
        kind[n] = 0;
        addr[n] = base + 0x10000 + i * 0x40;
        size[n] = 4096;
        stack[n] = 1 + (i & 1);
    }
    put_batch(o, t0 + 3 * MS, kind, addr, size, stack, n);
    n = 0;
    for (uint32_t i = 0; i < 16; i++, n++) {
        kind[n] = 0;
        addr[n] = base + 0x20000 + i * 0x40;
        size[n] = 8192;
        stack[n] = 1;
    }
    put_batch(o, t0 + 6 * MS, kind, addr, size, stack, n);

    if (python) {
        Stackwatch__PyFrame f[2] = { STACKWATCH__PY_FRAME__INIT, STACKWATCH__PY_FRAME__INIT };
        Stackwatch__PyFrame *fp[2] = { &f[0], &f[1] };
        f[0].file = "/srv/app/leaky.py";
        f[0].function = "leaky";
        f[0].line = 18;
        f[1].file = "/srv/app/leaky.py";
        f[1].function = "<module>";
        f[1].line = 55;
        for (uint32_t k = 0; k < 2; k++) {
            Stackwatch__Note nt = STACKWATCH__NOTE__INIT;
            nt.addr = base + 0x20000 + k * 0x40;
            nt.ts = t0 + 6 * MS + k * 1000;
            nt.stack = 1;
            nt.tid = 100;
            nt.n_python = k ? 1 : 2;
            nt.python = fp;
            nt.text = k ? "stackwatch: malloc @ 0x1 for 8192\n" : "";
            m.msg_case = STACKWATCH__AGENT_MSG__MSG_NOTE;
            m.note = &nt;
            put(o, &m);
        }
    }
    Stackwatch__Stats st = STACKWATCH__STATS__INIT;
    st.events = 80;
    st.threads = 2;
    st.dropped = (uint64_t)who;
    st.total_allocs = 48;
    st.python_version = h.python_version;
    st.python_status = h.python_status;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_STATS;
    m.stats = &st;
    put(o, &m);
    if (bye) {
        Stackwatch__Ending e = STACKWATCH__ENDING__INIT;
        e.ts = t0 + 7 * MS;
        e.why = "exit";
        m.msg_case = STACKWATCH__AGENT_MSG__MSG_ENDING;
        m.ending = &e;
        put(o, &m);
        Stackwatch__Goodbye g = STACKWATCH__GOODBYE__INIT;
        g.ts = t0 + 8 * MS;
        m.msg_case = STACKWATCH__AGENT_MSG__MSG_BYE;
        m.bye = &g;
        put(o, &m);
    }
}

static conn_t *conn_on(srv_t *s, int fd)
{
    for (conn_t *c = s->conns; c; c = c->next)
        if (c->fd == fd)
            return c;
    return NULL;
}

/* Connects one fake agent and feeds its session. Returns the agent's end
 * (kept open while the client is to stay connected), -1 on failure. */
static int connect_agent(srv_t *s, int who, uint64_t t0, int python, int sampled, int ends,
                         int bye)
{
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
        return -1;
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    conn_t *c = conn_new(s, fds[0], CONN_AGENT);
    if (!c) {
        close(fds[1]);
        return -1;
    }
    /* Distinct processes: their own pid, and never a signal to the harness. */
    c->peer_pid = 1001 + who;
    if (c->pidfd >= 0)
        close(c->pidfd);
    c->pidfd = -1;
    static obuf_t o;
    o.n = 0;
    session(&o, who, t0, python, sampled, bye);
    size_t off = 0;
    for (unsigned stalls = 0; off < o.n;) {
        ssize_t w = send(fds[1], o.buf + off, o.n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0)
            off += (size_t)w;
        else if (++stalls > PUMP_MAX)
            abort();
        pump(s);
    }
    pump(s);
    if (ends) {
        shutdown(fds[1], SHUT_WR);
        for (unsigned i = 0; i < PUMP_MAX && conn_on(s, fds[0]); i++)
            pump(s);
    }
    return fds[1];
}

/* ---------------------------------------------------------------- collectord's side */

static const char *const fn_names[] = {
    "leaky_alloc", "g_malloc", "remember_session", "_PyEval_EvalFrameDefault",
    "handle_request", "operator new(unsigned long)", "main", "__libc_start_main",
};

/* Frames as the symbolizer gives them, so rules on names match. */
static void symbolize_all(srv_t *s)
{
    for (client_t *c = s->clients.head; c; c = c->next)
        for (uint32_t i = 0; i < c->nstacks; i++) {
            cstack_t *st = c->slist[i];
            if (!st || !st->defined)
                continue;
            srv_sym_stack(s, c, st, 0);
            if (st->sym_state != SYM_DONE || !st->sym)
                continue;
            for (uint32_t k = 0; k < st->sym->n; k++) {
                symframe_t *f = &st->sym->f[k];
                f->function = sym_intern(fn_names[(st->index + k) % 8]);
                f->offset = 4 + k;
                f->file = k & 1 ? NULL : sym_intern("tests/progs/server.c");
                f->line = 10 + k;
                f->is_inline = k == 1;
            }
            st->skip = (uint16_t)wrap_count(st->sym);
        }
}



/* STACKWATCH_FUZZ_DUMP=DIR: each reply frame goes to DIR/BODY-N, seeds
 * for fuzz_cli_replies (tests/fuzz/make_seeds_control.py --from-build). */
static void dump_reply(const Stackwatch__Reply *rep, const uint8_t *p, uint32_t len)
{
    static unsigned serial;
    const char *dir = getenv("STACKWATCH_FUZZ_DUMP");
    if (!dir)
        return;
    static const char *const body[] = { "none", "error", "leaks", "clients", "pong", "rules" };
    int k = rep->error ? 1 : rep->body_case >= 3 && rep->body_case <= 6 ? (int)rep->body_case - 1 : 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%04u", dir, body[k], serial++);
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    uint8_t hdr[FRAME_HDR] = { (uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16),
                               (uint8_t)(len >> 24) };
    fwrite(hdr, 1, sizeof hdr, f);
    fwrite(p, 1, len, f);
    fclose(f);
}

/* Reads what collectord wrote to a control client; every whole frame must
 * decode as a Reply. */
static void drain_replies(int fd, frame_rd_t *rd)
{
    for (;;) {
        size_t avail;
        uint8_t *sp = frame_rd_space(rd, &avail);
        if (!sp)
            abort();
        ssize_t r = recv(fd, sp, avail, MSG_DONTWAIT);
        if (r <= 0)
            return;
        frame_rd_commit(rd, (size_t)r);
        const uint8_t *p;
        uint32_t len;
        int rc;
        while ((rc = frame_rd_next(rd, &p, &len)) == 1) {
            Stackwatch__Reply *rep = stackwatch__reply__unpack(NULL, len, p);
            if (!rep)
                FINDING("collectord sent a reply that does not decode (%u bytes)\n", len);
            dump_reply(rep, p, len);
            stackwatch__reply__free_unpacked(rep, NULL);
        }
        if (rc < 0)
            FINDING("collectord sent a reply frame over FRAME_MAX_CONTROL\n");
    }
}

static void run_segment(srv_t *s, const uint8_t *p, size_t n, unsigned flags, size_t chunk,
                        int *keep, unsigned *nkeep)
{
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
        return;
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    int cfd = fds[0];
    if (!conn_new(s, cfd, CONN_CONTROL)) {
        close(fds[1]);
        return;
    }
    frame_rd_t rd;
    if (frame_rd_init(&rd, 4096, FRAME_MAX_CONTROL) < 0)
        abort();
    size_t off = 0;
    unsigned stalls = 0;
    while (off < n && conn_on(s, cfd)) {
        size_t want = n - off;
        if ((flags & F_CHUNK) && want > chunk)
            want = chunk;
        ssize_t w = send(fds[1], p + off, want, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            off += (size_t)w;
            stalls = 0;
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
            break;
        } else if (++stalls > PUMP_MAX) {
            FINDING("hang: collectord stopped reading a control connection\n");
        }
        pump(s);
        drain_replies(fds[1], &rd);
    }
    pump(s);
    drain_replies(fds[1], &rd);
    if (!(flags & F_KEEP)) {
        shutdown(fds[1], SHUT_WR);
        for (unsigned i = 0; conn_on(s, cfd); i++) {
            if (i > PUMP_MAX)
                FINDING("hang: control connection still open after EOF\n");
            pump(s);
            drain_replies(fds[1], &rd);
        }
        close(fds[1]);
    } else {
        keep[(*nkeep)++] = fds[1];
    }
    frame_rd_free(&rd);
}

/* ---------------------------------------------------------------- the state, kept or fresh */

typedef struct state_s {
    srv_t srv;
    int agents[NCLIENTS];
    uint64_t t0;
    int built;
} state_t;

static void state_build(state_t *st, unsigned flags)
{
    srv_t *s = &st->srv;
    memset(s, 0, sizeof *s);
    s->opts.expire_ns = EXPIRE_NS;
    s->opts.retain_max = 8;
    s->opts.retain_ns = 3600ull * 1000000000ull;
    s->opts.max_live = 1u << 20;
    s->clients.retain_max = s->opts.retain_max;
    s->clients.retain_ns = s->opts.retain_ns;
    s->clients.max_live = s->opts.max_live;
    s->agent_fd = s->control_fd = s->spare_fd = -1;
    static char dir[] = "/run/fuzz/stackwatch";
    memcpy(s->rd.dir, dir, sizeof dir);
    s->loop = ev_loop_new(EVFLAG_AUTO);
    if (!s->loop)
        abort();

    /* The clients, over the collector's driven clock (as --test-clock): the
     * daemon's own aging tick (srv_tick) runs as time is advanced. */
    if (!srv_clock_is_virtual())
        srv_clock_virtual();
    uint64_t t0 = srv_now();
    st->t0 = t0;
    st->agents[0] = connect_agent(s, 0, t0, 1, 0, 0, 0);
    st->agents[1] = connect_agent(s, 1, t0 + MS, 0, 1, 0, 0);
    st->agents[2] = connect_agent(s, 2, t0 + 2 * MS, 0, 0, 1, 1);
    st->agents[3] = connect_agent(s, 3, t0 + 3 * MS, 0, 0, 1, 0);
    for (uint64_t k = 1; k <= 8; k++)
        srv_clock_advance(s, 5 * MS);
    symbolize_all(s);
    if (flags & F_MARK)
        for (client_t *c = s->clients.head; c; c = c->next)
            if (c->conn)
                client_mark(c, t0 + 4 * MS);
    st->built = 1;
}

static void state_free(state_t *st)
{
    srv_t *s = &st->srv;
    while (s->conns)
        conn_close(s->conns, NULL);
    for (int i = 0; i < NCLIENTS; i++)
        if (st->agents[i] >= 0)
            close(st->agents[i]);
    while (s->clients.head) {
        client_t *c = s->clients.head;
        s->clients.head = c->next;
        s->clients.count--;
        client_destroy(c);
    }
    trig_free(&s->trig);
    ev_loop_destroy(s->loop);
    st->built = 0;
}

/* What a kept state must still be after an input that only read it. */
static uint64_t state_digest(const state_t *st)
{
    const srv_t *s = &st->srv;
    uint64_t d = (uint64_t)s->clients.count * 0x9e3779b97f4a7c15ull ^ s->trig.n ^
                 (uint64_t)s->stopping << 32;
    for (const client_t *c = s->clients.head; c; c = c->next) {
        d = d * 31 + c->pid + c->mark_ts + c->nstacks + (c->conn != NULL);
        for (uint32_t i = 0; i < c->nstacks; i++)
            if (c->slist[i])
                d = d * 7 + c->slist[i]->arm_kind;
    }
    return d;
}

/* 1 when nothing in the input can change collectord's state: no F_AGE or
 * F_MARK, and every request a connection would run is a ping, a clients or
 * leaks query or a trigger list (frames that do not decode close their
 * connection; a length over the maximum closes it before anything after). */
static int input_reads_only(const uint8_t *data, size_t size, unsigned flags)
{
    if (flags & (F_AGE | F_MARK))
        return 0;
    fuzz_seg_t segs[MAX_SEGS];
    unsigned nsegs = fuzz_split(data, size, segs, MAX_SEGS);
    for (unsigned seg = 0; seg < nsegs; seg++) {
        const uint8_t *d = segs[seg].p;
        size_t end = segs[seg].n;
        for (size_t q = 0; end - q >= FRAME_HDR;) {
            uint32_t len = (uint32_t)d[q] | (uint32_t)d[q + 1] << 8 | (uint32_t)d[q + 2] << 16 |
                           (uint32_t)d[q + 3] << 24;
            if (len > FRAME_MAX_CONTROL)
                break; /* the connection is closed here */
            if (end - q - FRAME_HDR < len)
                break; /* never whole: never run */
            Stackwatch__Request *req = stackwatch__request__unpack(NULL, len, d + q + FRAME_HDR);
            if (!req)
                break; /* "malformed request": closed */
            int ro = req->req_case == STACKWATCH__REQUEST__REQ_PING ||
                     req->req_case == STACKWATCH__REQUEST__REQ_CLIENTS ||
                     req->req_case == STACKWATCH__REQUEST__REQ_LEAKS ||
                     req->req_case == STACKWATCH__REQUEST__REQ_TRIGGER_LIST;
            stackwatch__request__free_unpacked(req, NULL);
            if (!ro)
                return 0;
            q += FRAME_HDR + len;
        }
    }
    return 1;
}

/* Discards what collectord wrote to the fake agents. */
static void drain_agents(const state_t *st)
{
    uint8_t buf[4096];
    for (int i = 0; i < NCLIENTS; i++)
        while (st->agents[i] >= 0 && recv(st->agents[i], buf, sizeof buf, MSG_DONTWAIT) > 0)
            ;
}

/* Building the state costs about 1.5 ms under ASan, 20x more than most
 * inputs: an input that only reads runs on a state built once and kept
 * (checked unchanged afterwards), the others on a fresh one, freed after. */
static state_t kept, fresh;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned flags = data[0];
    size_t chunk = (size_t)data[1] + 1;
    data += 2;
    size -= 2;

    state_t *st;
    if (input_reads_only(data, size, flags)) {
        st = &kept;
        if (!st->built)
            state_build(st, 0);
    } else {
        st = &fresh;
        state_build(st, flags);
    }
    srv_t *s = &st->srv;
    uint64_t before = state_digest(st);

    int keep[MAX_SEGS];
    unsigned nkeep = 0;
    fuzz_seg_t segs[MAX_SEGS];
    unsigned nsegs = fuzz_split(data, size, segs, MAX_SEGS);
    for (unsigned seg = 0; seg < nsegs; seg++) {
        run_segment(s, segs[seg].p, segs[seg].n, flags, chunk, keep, &nkeep);
        if (flags & F_AGE)
            srv_clock_advance(s, seg ? EXPIRE_NS : MS);
    }

    if (st == &kept) {
        /* The control connections go; the agents' stay. */
        for (conn_t *c = s->conns, *nx; c; c = nx) {
            nx = c->next;
            if (c->kind == CONN_CONTROL)
                conn_close(c, NULL);
        }
        for (unsigned i = 0; i < nkeep; i++)
            close(keep[i]);
        pump(s);
        drain_agents(st);
        if (state_digest(st) != before) {
            fprintf(out, "harness: an input classified read-only changed the kept state\n");
            abort();
        }
    } else {
        for (unsigned i = 0; i < nkeep; i++)
            close(keep[i]);
        state_free(st);
    }
    return 0;
}
