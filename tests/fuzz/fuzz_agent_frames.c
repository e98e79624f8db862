/* libFuzzer target: whatever an agent sends, collectord neither crashes, leaks nor hangs. */
/*
 * Input layout (all of it is what agents send, plus two harness bytes):
 *
 *   byte 0   flags, F_* below
 *   byte 1   bits 0-5: chunk size - 1 (with F_CHUNK), at least 1/64 of the
 *            input (tens of loop rounds per input, not one per byte);
 *            bits 6-7: aging clock (AGE_*)
 *   rest     the byte stream of one or more agent connections, separated by
 *            SEP (at most MAX_SEGS connections; later separators are data)
 *
 * Each segment runs through the real read path: the bytes are written into
 * one end of a socketpair whose other end is a conn_t made by conn_new(), and
 * the libev loop is run with EVRUN_NOWAIT so conn.c's read callback frames
 * them (frame_rd_*) and hands each frame to ingest_frame(). Afterwards the
 * write side is shut down so the callback sees EOF and closes (freezing the
 * client), unless F_KEEP leaves it open for a later Hello of the same process
 * to replace; what is still open at the end goes through conn_close(c, NULL).
 *
 * Between chunks (F_CHUNK) and after each segment (F_AGE) the harness runs
 * the aging tick of srv.c's age_cb: client_age, the symbolization queue,
 * clients_prune. The worker thread is not started (it would open files the
 * input names), so srv_sym_stack resolves each queued stack to module+offset
 * frames at once, as collectord does when its worker cannot start.
 *
 * Invariants of the client model are checked at the end (a violation
 * traps).
 *
 * srv_log() writes to stderr; the harness points stderr at /dev/null unless
 * STACKWATCH_FUZZ_LOG is set. libFuzzer keeps its own copy of the original
 * stream and sanitizers write to fd 2, so their output is unaffected.
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
#include "frame.h"
#include "fuzz_segs.h"
#include "proto/stackwatch.pb-c.h"

enum {
    F_HELLO = 1,    /* prepend a valid Hello to every connection */
    F_KEEP = 2,     /* leave each connection open when the next one starts */
    F_NEWINST = 4,  /* the prepended Hello of connection i has instance BASE+i (an exec) */
    F_CHUNK = 8,    /* write in small chunks, running the loop and aging in between */
    F_AGE = 16,     /* run the aging tick after each connection */
    F_NOREAD = 32,  /* the agent never reads: collectord's sends fail with EPIPE */
    F_EXPIRE = 192, /* two bits: expire time, one of expire_choice[] */
};

enum { AGE_NOW = 0, AGE_EVENT = 1, AGE_FAR = 2, AGE_NONE = 3 };

#define MAX_SEGS 16
#define INSTANCE_BASE 0x5357465a00000000ull /* "SWFZ" */
#define PUMP_MAX 4096 /* loop iterations without progress before calling it a hang */

static const uint64_t expire_choice[4] = {
    1000000ull,     /* 1 ms: the aging ring turns over quickly */
    1ull,           /* 1 ns: the smallest --expire that parses to nonzero */
    1000000000ull,  /* 1 s */
    10000000000ull, /* 10 s: the default */
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static FILE *out;  /* the real stderr, for the harness's own findings */

/* Reports a finding on the real stderr and stops like a crash would. */
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
    return 0;
}

/* The connection on fd, or NULL once collectord closed it. fd is unique
 * among open descriptors, so a match is the connection made for it. */
static conn_t *conn_on(srv_t *s, int fd)
{
    for (conn_t *c = s->conns; c; c = c->next)
        if (c->fd == fd)
            return c;
    return NULL;
}

static void age_tick(srv_t *s, int mode)
{
    if (mode == AGE_NONE)
        return;
    uint64_t wall = srv_now();
    for (client_t *c = s->clients.head; c; c = c->next) {
        uint64_t now = wall;
        if (mode == AGE_EVENT)
            now = c->max_ts + 2 * s->opts.expire_ns + CLIENT_REORDER_NS;
        else if (mode == AGE_FAR)
            now = UINT64_MAX - (uint64_t)(c->serial & 0xff);
        client_age(c, now);
        for (uint32_t i = 0; i < c->nsymq; i++) {
            uint32_t idx = c->symq[i];
            if (cstack_at(c, idx)) {
                cstack_at(c, idx)->sym_queued = 0;
                /* No worker runs here: module+offset frames, synchronously. */
                srv_sym_stack(s, c, cstack_at(c, idx), 0);
            }
        }
        c->nsymq = 0;
    }
    clients_prune(&s->clients, wall);
}

/* One non-blocking loop iteration: the read callback consumes what is pending. */
static void pump(srv_t *s)
{
    ev_run(s->loop, EVRUN_NOWAIT);
}

static size_t hello_frame(uint8_t *buf, size_t cap, uint64_t instance)
{
    static char *argv[] = { "fuzzed", "--flag" };
    Stackwatch__Hello h = STACKWATCH__HELLO__INIT;
    h.version = PROTO_VERSION;
    h.pid = (uint32_t)getpid();
    h.ppid = 1;
    h.exe = "/usr/bin/fuzzed";
    h.n_argv = 2;
    h.argv = argv;
    h.start_realtime_ns = 1700000000000000000ull;
    h.instance = instance;
    h.depth = 64;
    h.sample = "all";
    h.mono_now_ns = 1000000000ull;
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_HELLO;
    m.hello = &h;
    return frame_encode(&m.base, buf, cap, FRAME_MAX_AGENT);
}

/* Bookkeeping that must hold whatever the input: a violation is a bug in
 * the client model, reported as a crash. */
typedef struct unc_count_s {
    const client_t *c;
    uint64_t *per_stack;
} unc_count_t;

static void count_unc(void *ctx, atab_ent_t *e)
{
    unc_count_t *u = ctx;
    const cstack_t *s = cstack_at(u->c, e->stack);
    if ((e->flags & ATAB_F_UNCERTAIN) && s)
        u->per_stack[s->pos]++;
}

static void check_client(client_t *c)
{
    if (!c->atab_ok || c->sample_bytes)
        return; /* sampled clients count estimates, not table entries */
    if (c->live_n != c->atab.live) {
        FINDING("client %llu live_n %llu != table entries %u\n", (unsigned long long)c->serial,
                (unsigned long long)c->live_n, c->atab.live);
    }
    if (c->reo.used > c->reo.max)
        FINDING("client %llu reorder records %u over the cap %u\n",
                (unsigned long long)c->serial, c->reo.used, c->reo.max);
    if (!c->nstacks)
        return;
    uint64_t *per = calloc(c->nstacks, sizeof *per);
    if (!per)
        return;
    unc_count_t u = { c, per };
    atab_each(&c->atab, count_unc, &u);
    for (uint32_t i = 0; i < c->nstacks; i++) {
        cstack_t *s = c->slist[i];
        if (!s)
            continue;
        if (s->unc_n != per[i] || s->fexp_n > s->exp_n || s->free_n > s->alloc_n) {
            FINDING("stack %u unc_n %llu (table %llu) exp_n %llu fexp_n %llu alloc_n %llu "
                    "free_n %llu\n",
                    i, (unsigned long long)s->unc_n, (unsigned long long)per[i],
                    (unsigned long long)s->exp_n, (unsigned long long)s->fexp_n,
                    (unsigned long long)s->alloc_n, (unsigned long long)s->free_n);
        }
    }
    free(per);
}

/* Feeds one connection's bytes. Returns the agent's end of the socketpair
 * (the caller closes it), or -1 when no connection could be made. */
static int run_segment(srv_t *s, const uint8_t *p, size_t n, unsigned flags, size_t chunk,
                       int age_mode, unsigned seg)
{
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
        return -1;
    fcntl(fds[0], F_SETFL, O_NONBLOCK); /* accept4(SOCK_NONBLOCK) in the daemon */
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    if (flags & F_NOREAD)
        shutdown(fds[1], SHUT_RD);
    int cfd = fds[0];
    if (!conn_new(s, cfd, CONN_AGENT)) {
        close(fds[1]);
        return -1;
    }
    uint8_t hello[256];
    size_t hlen = 0;
    if (flags & F_HELLO) {
        uint64_t inst = INSTANCE_BASE + ((flags & F_NEWINST) ? seg : 0);
        hlen = hello_frame(hello, sizeof hello, inst);
    }
    /* The Hello, then the segment, chunk by chunk. */
    const uint8_t *parts[2] = { hello, p };
    size_t lens[2] = { hlen, n };
    for (int k = 0; k < 2; k++) {
        size_t off = 0;
        unsigned stalls = 0;
        while (off < lens[k] && conn_on(s, cfd)) {
            size_t want = lens[k] - off;
            if ((flags & F_CHUNK) && want > chunk)
                want = chunk;
            ssize_t w = send(fds[1], parts[k] + off, want, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                off += (size_t)w;
                stalls = 0;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                break;
            } else if (++stalls > PUMP_MAX) {
                /* The socket stays full: collectord stopped reading. */
                FINDING("hang: collectord stopped reading a connection\n");
            }
            pump(s);
            if (flags & F_CHUNK)
                age_tick(s, age_mode);
        }
    }
    pump(s);
    if (!(flags & F_KEEP)) {
        /* EOF: the read callback must close the connection. */
        shutdown(fds[1], SHUT_WR);
        for (unsigned i = 0; conn_on(s, cfd); i++) {
            if (i > PUMP_MAX) {
                FINDING("hang: connection still open after EOF\n");
            }
            pump(s);
        }
    }
    if (flags & F_AGE)
        age_tick(s, age_mode);
    return fds[1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned flags = data[0];
    size_t chunk = (size_t)(data[1] & 63) + 1;
    int age_mode = data[1] >> 6;
    data += 2;
    size -= 2;
    if (chunk < size / 64)
        chunk = size / 64;

    srv_t srv;
    memset(&srv, 0, sizeof srv);
    srv.opts.expire_ns = expire_choice[(flags & F_EXPIRE) >> 6];
    srv.opts.retain_max = 2;
    srv.opts.retain_ns = 1000000000ull;
    srv.clients.retain_max = srv.opts.retain_max;
    srv.clients.retain_ns = srv.opts.retain_ns;
    srv.agent_fd = srv.control_fd = srv.spare_fd = -1;
    srv.loop = ev_loop_new(EVFLAG_AUTO);
    if (!srv.loop)
        abort();

    int peers[MAX_SEGS];
    unsigned npeers = 0;
    fuzz_seg_t segs[MAX_SEGS];
    unsigned nsegs = fuzz_split(data, size, segs, MAX_SEGS);
    for (unsigned seg = 0; seg < nsegs; seg++) {
        int peer = run_segment(&srv, segs[seg].p, segs[seg].n, flags, chunk, age_mode, seg);
        if (peer >= 0)
            peers[npeers++] = peer;
    }

    /* What is still open ends without EOF: collectord shutting down. */
    while (srv.conns)
        conn_close(srv.conns, NULL);
    {
        /* Every connection is closed: no client may claim to be connected. */
        for (client_t *c = srv.clients.head; c; c = c->next)
            if (c->state == CLIENT_CONNECTED)
                FINDING("client %llu is connected without a connection\n",
                        (unsigned long long)c->serial);
    }
    age_tick(&srv, age_mode);
    for (client_t *c = srv.clients.head; c; c = c->next)
        check_client(c);
    while (srv.clients.head) {
        client_t *c = srv.clients.head;
        srv.clients.head = c->next;
        srv.clients.count--;
        client_destroy(c);
    }
    for (unsigned i = 0; i < npeers; i++)
        close(peers[i]);
    ev_loop_destroy(srv.loop);
    return 0;
}
