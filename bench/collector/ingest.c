/* Fake agent: drives a running collectord's ingest path with a realistic event stream and measures its CPU and memory. */
/*
 * It speaks the agent protocol on DIR/agent.sock (Hello, wait for Welcome,
 * StackDefs, then EventBatch frames) and asks DIR/control.sock how many of
 * its events the collector has applied (query clients). Two modes:
 *
 *   rate  fill a live set of L blocks, then send E events, each an
 *         allocation or the free of a random live block (allocs ~= frees),
 *         and report events per second of collectord CPU (utime+stime).
 *   mem   send K allocations, no frees, and report collectord's VmRSS growth
 *         over a baseline taken with the stacks defined, per live block.
 *
 * Addresses behave like a size-class allocator's: a freed address is the next
 * one handed out in its class (LIFO), new ones come from a bump pointer.
 * Stacks are chosen with a skew (a few hot ones, a long tail), threads at
 * random, timestamps from CLOCK_MONOTONIC and increasing.
 *
 * The result is one JSON object on stdout; progress goes to stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "proto/stackwatch.pb-c.h"

#define NCLASS 80          /* 64 classes of 16 bytes up to 1 KiB, then powers of two */
#define NTHREADS 8
#define WAIT_S 300         /* deadline for the collector to catch up */

typedef struct opts_s {
    const char *dir;       /* collectord's runtime directory */
    int pid;               /* collectord's pid (0: read DIR/collectord.pid) */
    int mem;               /* mem mode, else rate */
    uint64_t events;       /* rate: measured events */
    uint32_t live;         /* rate: steady live set */
    uint32_t stacks;       /* stacks defined */
    uint32_t batch;        /* events per EventBatch */
    uint64_t allocs;       /* mem: allocations */
    uint64_t seed;
} opts_t;

typedef struct blk_s {
    uint64_t addr;         /* block address */
    uint32_t cls;          /* size class */
} blk_t;

typedef struct flist_s {
    uint64_t *v;           /* freed addresses of one class, LIFO */
    uint32_t n, cap;
} flist_t;

/* The simulated process: its heap, live blocks and clock. */
typedef struct gen_s {
    uint64_t rng;          /* xorshift64* state */
    uint64_t brk;          /* bump pointer for new addresses */
    flist_t fl[NCLASS];    /* per-class free lists */
    blk_t *live;           /* live blocks (unordered; swap-remove) */
    uint32_t nlive, cap;
    uint32_t nstacks;
    uint64_t ts;           /* last timestamp sent */
    uint32_t tids[NTHREADS];
    /* one batch, columnar as on the wire */
    uint32_t *kind, *tid, *stack;
    uint64_t *addr, *size;
    int64_t *dts;
    uint8_t *buf;          /* encoded frame */
    size_t bufcap;
} gen_t;

static opts_t o = {
    .events = 20000000, .live = 100000, .stacks = 4096, .batch = 65536, .allocs = 2000000,
    .seed = 1,
};

static void die(const char *what, int err)
{
    fprintf(stderr, "ingest: %s%s%s\n", what, err ? ": " : "", err ? strerror(err) : "");
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory", 0);
    return p;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(gen_t *g)
{
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return g->rng * 0x2545f4914f6cdd1dULL;
}

static double rnd_unit(gen_t *g)
{
    return (double)(rnd(g) >> 11) * (1.0 / 9007199254740992.0);
}

/* ---------------------------------------------------------------- sockets */

static int connect_unix(const char *dir, const char *name)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir, name) >=
        sizeof sa.sun_path)
        die("socket path too long", 0);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket", errno);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die(sa.sun_path, errno);
    return fd;
}

static void send_msg(int fd, const ProtobufCMessage *m, gen_t *g)
{
    size_t n = frame_size(m);
    if (n > g->bufcap) {
        free(g->buf);
        g->bufcap = n * 2;
        g->buf = xmalloc(g->bufcap);
    }
    size_t w = frame_encode(m, g->buf, g->bufcap, FRAME_MAX_AGENT);
    if (!w)
        die("frame too large (lower --batch)", 0);
    int rc = frame_write_all(fd, g->buf, w);
    if (rc < 0)
        die("send to collectord", -rc);
}

static void send_agent(int fd, Stackwatch__AgentMsg *m, gen_t *g)
{
    send_msg(fd, &m->base, g);
}

/* Hello, then the collector's Welcome. */
static void handshake(int fd, gen_t *g)
{
    static char *argv[] = { "bench-ingest" };
    Stackwatch__Hello h = STACKWATCH__HELLO__INIT;
    h.version = PROTO_VERSION;
    h.pid = (uint32_t)getpid();
    h.ppid = (uint32_t)getppid();
    h.exe = "/bench/ingest";
    h.argv = argv;
    h.n_argv = 1;
    h.instance = (rnd(g) | 1) ^ ((uint64_t)getpid() << 32);
    h.start_realtime_ns = (uint64_t)time(NULL) * 1000000000u;
    h.depth = 64;
    h.sample = "all";
    h.mono_now_ns = mono_ns();
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_HELLO;
    m.hello = &h;
    send_agent(fd, &m, g);
    uint8_t *p;
    uint32_t len;
    int rc = frame_read_one(fd, FRAME_MAX_COMMAND, &p, &len);
    if (rc < 0)
        die("no welcome from collectord", -rc);
    Stackwatch__CollectorMsg *cm = stackwatch__collector_msg__unpack(NULL, len, p);
    if (!cm || cm->msg_case != STACKWATCH__COLLECTOR_MSG__MSG_WELCOME)
        die("first frame from collectord is not a welcome", 0);
    stackwatch__collector_msg__free_unpacked(cm, NULL);
    free(p);
}

/* S stacks of 8-20 frames in a few fake modules. */
static void send_stacks(int fd, gen_t *g)
{
    uint32_t n = g->nstacks;
    Stackwatch__StackDef *defs = xmalloc(n * sizeof *defs);
    Stackwatch__StackDef **pd = xmalloc(n * sizeof *pd);
    uint64_t *pcs = xmalloc((size_t)n * 20 * sizeof *pcs);
    for (uint32_t i = 0; i < n; i++) {
        Stackwatch__StackDef d = STACKWATCH__STACK_DEF__INIT;
        d.index = i;
        d.id = rnd(g) | 1;
        d.generation = 1;
        d.n_pcs = 8 + rnd(g) % 13;
        d.pcs = pcs + (size_t)i * 20;
        for (size_t k = 0; k < d.n_pcs; k++)
            d.pcs[k] = 0x555555554000ull + (rnd(g) % 4) * 0x10000000ull + rnd(g) % 0x200000;
        defs[i] = d;
        pd[i] = &defs[i];
    }
    Stackwatch__StackDefs sd = STACKWATCH__STACK_DEFS__INIT;
    sd.stacks = pd;
    sd.n_stacks = n;
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_STACKS;
    m.stacks = &sd;
    send_agent(fd, &m, g);
    free(defs);
    free(pd);
    free(pcs);
}

static void send_bye(int fd, gen_t *g)
{
    Stackwatch__Goodbye b = STACKWATCH__GOODBYE__INIT;
    b.ts = g->ts;
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_BYE;
    m.bye = &b;
    send_agent(fd, &m, g);
}

/* What collectord says about this process: events applied and stacks known.
 * Returns 1 when found, 0 when it does not list us yet. */
static int query_self(uint64_t *events, uint32_t *stacks)
{
    int fd = connect_unix(o.dir, "control.sock");
    Stackwatch__QueryClients q = STACKWATCH__QUERY_CLIENTS__INIT;
    Stackwatch__Request r = STACKWATCH__REQUEST__INIT;
    r.req_case = STACKWATCH__REQUEST__REQ_CLIENTS;
    r.clients = &q;
    uint8_t buf[256];
    size_t w = frame_encode(&r.base, buf, sizeof buf, FRAME_MAX_CONTROL);
    int rc = w ? frame_write_all(fd, buf, w) : -EMSGSIZE;
    if (rc < 0)
        die("query collectord", -rc);
    uint8_t *p;
    uint32_t len;
    rc = frame_read_one(fd, FRAME_MAX_CONTROL, &p, &len);
    close(fd);
    if (rc < 0)
        die("reply from collectord", -rc);
    Stackwatch__Reply *rep = stackwatch__reply__unpack(NULL, len, p);
    free(p);
    if (!rep || rep->error || rep->body_case != STACKWATCH__REPLY__BODY_CLIENTS)
        die("bad reply to query clients", 0);
    int found = 0;
    for (size_t i = 0; i < rep->clients->n_clients; i++) {
        const Stackwatch__ClientInfo *ci = rep->clients->clients[i];
        if (ci->pid == (uint32_t)getpid() && strcmp(ci->state, "connected") == 0) {
            *events = ci->events;
            *stacks = ci->stacks;
            found = 1;
        }
    }
    stackwatch__reply__free_unpacked(rep, NULL);
    return found;
}

/* Polls until collectord has applied `events` of ours (and knows our stacks). */
static void wait_applied(uint64_t events)
{
    uint64_t deadline = mono_ns() + (uint64_t)WAIT_S * 1000000000u;
    for (;;) {
        uint64_t got = 0;
        uint32_t st = 0;
        if (query_self(&got, &st) && got >= events && st >= o.stacks) {
            if (got > events)
                die("collectord counts more events than were sent", 0);
            return;
        }
        if (mono_ns() > deadline)
            die("collectord did not catch up in time", 0);
        struct timespec ts = { 0, 2 * 1000000 };
        nanosleep(&ts, NULL);
    }
}

/* ---------------------------------------------------------------- /proc */

/* collectord's CPU time: utime+stime in clock ticks, and schedstat ns. */
static void proc_cpu(int pid, double *ticks_s, double *sched_s)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(buf, sizeof buf, f))
        die(path, errno);
    fclose(f);
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* after ") ": state is field 3; utime and stime are fields 14 and 15 */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        die("cannot parse /proc/PID/stat", 0);
    *ticks_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
    unsigned long long ns = 0;
    f = fopen(path, "r");
    *sched_s = f && fscanf(f, "%llu", &ns) == 1 ? (double)ns / 1e9 : -1;
    if (f)
        fclose(f);
}

static uint64_t proc_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        die(path, errno);
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %" SCNu64, &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static int read_pidfile(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/collectord.pid", o.dir);
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (!f || fscanf(f, "%d", &pid) != 1 || pid <= 0)
        die("cannot read collectord.pid (pass --pid)", f ? 0 : errno);
    fclose(f);
    return pid;
}

/* ---------------------------------------------------------------- the stream */

static uint32_t class_of(uint64_t size)
{
    if (size <= 1024)
        return size ? (uint32_t)((size - 1) / 16) : 0;
    uint32_t c = 64;
    for (uint64_t s = 2048; s < size && c < NCLASS - 1; s <<= 1)
        c++;
    return c;
}

static uint64_t class_bytes(uint32_t c)
{
    return c < 64 ? 16u * (c + 1) : 2048ull << (c - 64);
}

/* Sizes: mostly small, a quarter up to 1 KiB, a few up to 64 KiB. */
static uint64_t pick_size(gen_t *g)
{
    uint64_t r = rnd(g) % 100;
    if (r < 70)
        return 8 + rnd(g) % 121;
    if (r < 95)
        return 129 + rnd(g) % 896;
    return 1025 + rnd(g) % 64512;
}

/* A few hot stacks and a long tail. */
static uint32_t pick_stack(gen_t *g)
{
    double u = rnd_unit(g);
    return (uint32_t)(u * u * u * g->nstacks) % g->nstacks;
}

static void gen_init(gen_t *g, uint32_t nstacks, uint32_t batch)
{
    memset(g, 0, sizeof *g);
    g->rng = o.seed * 0x9e3779b97f4a7c15ULL + 0x1234567;
    g->brk = 0x555555a00000ull;
    g->nstacks = nstacks;
    g->ts = mono_ns();
    for (uint32_t i = 0; i < NTHREADS; i++)
        g->tids[i] = (uint32_t)getpid() + i;
    g->kind = xmalloc(batch * sizeof *g->kind);
    g->tid = xmalloc(batch * sizeof *g->tid);
    g->stack = xmalloc(batch * sizeof *g->stack);
    g->addr = xmalloc(batch * sizeof *g->addr);
    g->size = xmalloc(batch * sizeof *g->size);
    g->dts = xmalloc(batch * sizeof *g->dts);
}

static void push_u64(flist_t *f, uint64_t v)
{
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 256;
        f->v = realloc(f->v, f->cap * sizeof *f->v);
        if (!f->v)
            die("out of memory", 0);
    }
    f->v[f->n++] = v;
}

/* Appends one allocation to the batch at position i (na sizes so far). */
static void ev_alloc(gen_t *g, size_t i, size_t *na)
{
    uint64_t size = pick_size(g);
    uint32_t c = class_of(size);
    uint64_t a;
    if (g->fl[c].n) {
        a = g->fl[c].v[--g->fl[c].n];
    } else {
        a = g->brk;
        g->brk += class_bytes(c);
    }
    if (g->nlive == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 1024;
        g->live = realloc(g->live, g->cap * sizeof *g->live);
        if (!g->live)
            die("out of memory", 0);
    }
    g->live[g->nlive++] = (blk_t){ a, c };
    g->kind[i] = STACKWATCH__EVENT_KIND__EVENT_ALLOC;
    g->addr[i] = a;
    g->size[*na] = size;
    g->stack[*na] = pick_stack(g);
    (*na)++;
}

static void ev_free(gen_t *g, size_t i)
{
    uint32_t k = (uint32_t)(rnd(g) % g->nlive);
    blk_t b = g->live[k];
    g->live[k] = g->live[--g->nlive];
    push_u64(&g->fl[b.cls], b.addr);
    g->kind[i] = STACKWATCH__EVENT_KIND__EVENT_FREE;
    g->addr[i] = b.addr;
}

/* Builds and sends one batch of n events. steady: allocate or free around a
 * live set of target blocks; else allocate only. */
static void send_batch(int fd, gen_t *g, size_t n, int steady, uint32_t target)
{
    size_t na = 0;
    /* Timestamps never run ahead of the real clock. */
    uint64_t now = mono_ns();
    uint64_t base = g->ts > now ? g->ts : now;
    uint64_t ts = base;
    for (size_t i = 0; i < n; i++) {
        int alloc = 1;
        if (steady && g->nlive) {
            /* p(alloc) leans toward the target so the live set stays put. */
            double p = g->nlive < target ? 0.55 : 0.45;
            alloc = rnd_unit(g) < p;
        }
        if (alloc)
            ev_alloc(g, i, &na);
        else
            ev_free(g, i);
        uint64_t d = 1 + rnd(g) % 40;
        g->dts[i] = (int64_t)d;
        ts += d;
        g->tid[i] = g->tids[rnd(g) % NTHREADS];
    }
    g->ts = ts;
    Stackwatch__EventBatch b = STACKWATCH__EVENT_BATCH__INIT;
    b.ts_base = base;
    b.n_kind = b.n_addr = b.n_ts_delta = b.n_tid = n;
    b.kind = g->kind;
    b.addr = g->addr;
    b.ts_delta = g->dts;
    b.tid = g->tid;
    b.n_size = b.n_stack = na;
    b.size = g->size;
    b.stack = g->stack;
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_EVENTS;
    m.events = &b;
    send_agent(fd, &m, g);
}

/* Sends n events in batches; returns the count sent. */
static uint64_t send_events(int fd, gen_t *g, uint64_t n, int steady, uint32_t target)
{
    uint64_t sent = 0;
    while (sent < n) {
        size_t k = n - sent < o.batch ? (size_t)(n - sent) : o.batch;
        send_batch(fd, g, k, steady, target);
        sent += k;
    }
    return sent;
}

/* ---------------------------------------------------------------- modes */

static void run_rate(int pid)
{
    gen_t g;
    gen_init(&g, o.stacks, o.batch);
    int fd = connect_unix(o.dir, "agent.sock");
    handshake(fd, &g);
    send_stacks(fd, &g);
    uint64_t total = send_events(fd, &g, o.live, 0, 0);
    wait_applied(total);
    fprintf(stderr, "ingest: live set of %u blocks in place; sending %" PRIu64 " events\n",
            o.live, o.events);
    double c0, s0, c1, s1;
    proc_cpu(pid, &c0, &s0);
    uint64_t t0 = mono_ns();
    total += send_events(fd, &g, o.events, 1, o.live);
    uint64_t t_sent = mono_ns();
    wait_applied(total);
    uint64_t t1 = mono_ns();
    proc_cpu(pid, &c1, &s1);
    uint64_t rss = proc_rss_kb(pid);
    send_bye(fd, &g);
    close(fd);
    double cpu = c1 - c0, sched = s1 - s0, wall = (double)(t1 - t0) / 1e9;
    /* schedstat has ns resolution; utime+stime ticks are the fallback. */
    double per = sched > 0 ? sched : cpu;
    printf("{\"mode\": \"rate\", \"events\": %" PRIu64 ", \"live\": %u, \"stacks\": %u, "
           "\"batch\": %u, \"cpu_s\": %.3f, \"sched_cpu_s\": %.3f, \"wall_s\": %.3f, "
           "\"send_s\": %.3f, \"events_per_cpu_s\": %.0f, \"events_per_wall_s\": %.0f, "
           "\"rss_kb\": %" PRIu64 "}\n",
           o.events, o.live, o.stacks, o.batch, cpu, sched, wall,
           (double)(t_sent - t0) / 1e9, per > 0 ? (double)o.events / per : 0,
           (double)o.events / wall, rss);
}

static void run_mem(int pid)
{
    gen_t g;
    gen_init(&g, o.stacks, o.batch);
    int fd = connect_unix(o.dir, "agent.sock");
    handshake(fd, &g);
    send_stacks(fd, &g);
    wait_applied(0);
    uint64_t rss0 = proc_rss_kb(pid);
    send_events(fd, &g, o.allocs, 0, 0);
    wait_applied(o.allocs);
    uint64_t rss1 = proc_rss_kb(pid);
    send_bye(fd, &g);
    close(fd);
    double per = rss1 > rss0 ? (double)(rss1 - rss0) * 1024.0 / (double)o.allocs : 0;
    printf("{\"mode\": \"mem\", \"allocs\": %" PRIu64 ", \"stacks\": %u, \"rss0_kb\": %" PRIu64
           ", \"rss1_kb\": %" PRIu64 ", \"bytes_per_live\": %.1f}\n",
           o.allocs, o.stacks, rss0, rss1, per);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ingest --dir DIR [--pid PID] [--mode rate|mem] [--events N] [--live N]\n"
            "              [--stacks N] [--batch N] [--allocs K] [--seed N]\n"
            "  rate: fill --live blocks (default 100000), then --events (20000000)\n"
            "        allocations and frees; prints events per second of collectord CPU\n"
            "  mem:  --allocs (2000000) allocations, no frees; prints collectord's RSS\n"
            "        growth per live block\n");
}

static uint64_t num(const char *s, uint64_t lo, uint64_t hi)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "ingest: %s: not a number in %" PRIu64 "..%" PRIu64 "\n", s, lo, hi);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "dir", required_argument, 0, 'd' },    { "pid", required_argument, 0, 'p' },
        { "mode", required_argument, 0, 'm' },   { "events", required_argument, 0, 'e' },
        { "live", required_argument, 0, 'l' },   { "stacks", required_argument, 0, 's' },
        { "batch", required_argument, 0, 'b' },  { "allocs", required_argument, 0, 'k' },
        { "seed", required_argument, 0, 'r' },   { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'd': o.dir = optarg; break;
        case 'p': o.pid = (int)num(optarg, 1, 1u << 30); break;
        case 'm':
            if (strcmp(optarg, "rate") && strcmp(optarg, "mem")) {
                usage(stderr);
                return 2;
            }
            o.mem = strcmp(optarg, "mem") == 0;
            break;
        case 'e': o.events = num(optarg, 1, 1ull << 40); break;
        case 'l': o.live = (uint32_t)num(optarg, 1, 1u << 30); break;
        case 's': o.stacks = (uint32_t)num(optarg, 1, 1u << 20); break;
        case 'b': o.batch = (uint32_t)num(optarg, 1, 1u << 20); break;
        case 'k': o.allocs = num(optarg, 1, 1ull << 32); break;
        case 'r': o.seed = num(optarg, 0, UINT64_MAX); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!o.dir || optind != argc) {
        usage(stderr);
        return 2;
    }
    int pid = o.pid ? o.pid : read_pidfile();
    if (o.mem)
        run_mem(pid);
    else
        run_rate(pid);
    return 0;
}
