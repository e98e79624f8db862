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
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
    int stk;               /* stacks mode */
    uint32_t frames;       /* stacks: distinct frames the stacks are drawn from */
    uint32_t pytb;         /* stacks: allocations given a Python traceback (Note) */
    const char *mods[16];  /* stacks: ELF files the frames lie in */
    uint32_t nmods;
    uint64_t events;       /* rate: measured events */
    uint32_t live;         /* rate: steady live set */
    uint32_t stacks;       /* stacks defined */
    uint32_t batch;        /* events per EventBatch */
    uint64_t allocs;       /* mem: allocations */
    int allocs_set;
    uint32_t expire_wait;  /* stacks: seconds until collectord's blocks expired */
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
    uint32_t rr;           /* stacks mode: allocations name stacks in turn */
    int round_robin;
    uint64_t *n_addr, *n_ts; /* stacks mode: the first allocations, for their Notes */
    uint32_t *n_stack, nnotes, notes_cap;
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
    .seed = 1, .frames = 4000, .pytb = 4096, .expire_wait = 3,
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

/* collectord's reply to query clients (dies on any error). */
static Stackwatch__Reply *query_clients(void)
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
    return rep;
}

/* This process, connected, in a query clients reply (the last listed), or NULL. */
static const Stackwatch__ClientInfo *self_in(const Stackwatch__Reply *rep)
{
    const Stackwatch__ClientInfo *self = NULL;
    for (size_t i = 0; i < rep->clients->n_clients; i++) {
        const Stackwatch__ClientInfo *ci = rep->clients->clients[i];
        if (ci->pid == (uint32_t)getpid() && strcmp(ci->state, "connected") == 0)
            self = ci;
    }
    return self;
}

/* What collectord says about this process: events applied and stacks known.
 * Returns 1 when found, 0 when it does not list us yet. */
static int query_self(uint64_t *events, uint32_t *stacks)
{
    Stackwatch__Reply *rep = query_clients();
    const Stackwatch__ClientInfo *ci = self_in(rep);
    if (ci) {
        *events = ci->events;
        *stacks = ci->stacks;
    }
    stackwatch__reply__free_unpacked(rep, NULL);
    return ci != NULL;
}

/* What collectord says it holds for us (ClientInfo.collector_*_bytes). */
typedef struct client_mem_s {
    uint64_t stack_bytes, block_bytes, stacks, live;
    double per_stack, per_block;
} client_mem_t;

static void query_self_mem(client_mem_t *cm)
{
    Stackwatch__Reply *rep = query_clients();
    const Stackwatch__ClientInfo *ci = self_in(rep);
    if (ci) {
        cm->stack_bytes = ci->collector_stack_bytes;
        cm->block_bytes = ci->collector_block_bytes;
        cm->stacks = ci->stacks;
        cm->live = ci->live ? ci->live->count : 0;
        cm->per_stack = cm->stacks ? (double)cm->stack_bytes / (double)cm->stacks : 0;
        cm->per_block = cm->live ? (double)cm->block_bytes / (double)cm->live : 0;
    }
    stackwatch__reply__free_unpacked(rep, NULL);
}

/* Polls until collectord has applied `events` of ours (and knows `stacks`). */
static void wait_applied(uint64_t events, uint32_t stacks)
{
    uint64_t deadline = mono_ns() + (uint64_t)WAIT_S * 1000000000u;
    for (;;) {
        uint64_t got = 0;
        uint32_t st = 0;
        if (query_self(&got, &st) && got >= events && st >= stacks) {
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
    if (g->round_robin)
        return g->rr++ % g->nstacks;
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
        if (alloc && g->nnotes < g->notes_cap) {
            g->n_addr[g->nnotes] = g->addr[i];
            g->n_ts[g->nnotes] = ts;
            g->n_stack[g->nnotes++] = g->stack[na - 1];
        }
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


/* ---------------------------------------------------------------- stacks mode */

/* A function of a module: its start relative to the load bias, and size. */
typedef struct fn_s {
    uint64_t lo, size;
} fn_t;

/* Functions (STT_FUNC with a size) of an ELF file, from .symtab, else .dynsym. */
static fn_t *elf_funcs(const char *path, uint32_t *nout)
{
    *nout = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(Elf64_Ehdr))
        die(path, errno);
    const uint8_t *b = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (b == MAP_FAILED)
        die(path, errno);
    size_t len = (size_t)st.st_size;
    const Elf64_Ehdr *eh = (const void *)b;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > len)
        die("not a 64-bit ELF file", 0);
    const Elf64_Shdr *sh = (const void *)(b + eh->e_shoff);
    const Elf64_Shdr *sym = NULL;
    static const unsigned want[2] = { SHT_SYMTAB, SHT_DYNSYM };
    for (int w = 0; w < 2 && !sym; w++)
        for (unsigned i = 0; i < eh->e_shnum; i++)
            if (sh[i].sh_type == want[w] && sh[i].sh_offset + sh[i].sh_size <= len) {
                sym = &sh[i];
                break;
            }
    if (!sym)
        die("no symbol table", 0);
    size_t n = sym->sh_size / sizeof(Elf64_Sym);
    const Elf64_Sym *sy = (const void *)(b + sym->sh_offset);
    fn_t *f = xmalloc(n * sizeof *f);
    uint32_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (ELF64_ST_TYPE(sy[i].st_info) == STT_FUNC && sy[i].st_value && sy[i].st_size > 4)
            f[k++] = (fn_t){ sy[i].st_value, sy[i].st_size };
    munmap((void *)b, len);
    if (!k)
        die("no functions in a module", 0);
    *nout = k;
    return f;
}

#define MOD_BIAS(k) (0x7f1000000000ull + (uint64_t)(k) * 0x40000000ull)

/* Modules as the agent reports them (a range each, no build-id: any file). */
static void send_modules(int fd, gen_t *g)
{
    Stackwatch__Module ms[16], *pm[16];
    uint64_t ranges[16][2];
    for (uint32_t k = 0; k < o.nmods; k++) {
        Stackwatch__Module m = STACKWATCH__MODULE__INIT;
        m.id = k;
        m.path = (char *)o.mods[k];
        m.bias = MOD_BIAS(k);
        ranges[k][0] = MOD_BIAS(k);
        ranges[k][1] = MOD_BIAS(k) + 0x40000000ull;
        m.ranges = ranges[k];
        m.n_ranges = 2;
        m.gen_added = 1;
        ms[k] = m;
        pm[k] = &ms[k];
    }
    Stackwatch__ModuleMap mm = STACKWATCH__MODULE_MAP__INIT;
    mm.modules = pm;
    mm.n_modules = o.nmods;
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    m.msg_case = STACKWATCH__AGENT_MSG__MSG_MODULES;
    m.modules = &mm;
    send_agent(fd, &m, g);
}

/* S stacks of 20-40 frames drawn from F distinct return addresses (inside
 * the modules' functions), shared as in a program: a frame's chance grows
 * toward the outer end (main, the event loop) and for a few hot helpers. */
static void send_deep_stacks(int fd, gen_t *g)
{
    uint32_t nfn[16];
    fn_t *fns[16];
    for (uint32_t k = 0; k < o.nmods; k++)
        fns[k] = elf_funcs(o.mods[k], &nfn[k]);
    uint64_t *pool = xmalloc(o.frames * sizeof *pool);
    for (uint32_t i = 0; i < o.frames; i++) {
        uint32_t k = (uint32_t)(rnd(g) % o.nmods);
        const fn_t *f = &fns[k][rnd(g) % nfn[k]];
        pool[i] = MOD_BIAS(k) + f->lo + 1 + rnd(g) % (f->size - 1);
    }
    for (uint32_t k = 0; k < o.nmods; k++)
        free(fns[k]);
    enum { CHUNK = 2048, MAXD = 40 };
    Stackwatch__StackDef defs[CHUNK], *pd[CHUNK];
    uint64_t *pcs = xmalloc((size_t)CHUNK * MAXD * sizeof *pcs);
    for (uint32_t base = 0; base < g->nstacks; base += CHUNK) {
        uint32_t n = g->nstacks - base < CHUNK ? g->nstacks - base : CHUNK;
        for (uint32_t i = 0; i < n; i++) {
            Stackwatch__StackDef d = STACKWATCH__STACK_DEF__INIT;
            d.index = base + i;
            d.id = rnd(g) | 1;
            d.generation = 1;
            d.n_pcs = 20 + rnd(g) % (MAXD - 20 + 1);
            d.pcs = pcs + (size_t)i * MAXD;
            for (size_t j = 0; j < d.n_pcs; j++) {
                /* j from the outer end: outer frames from a narrow set. */
                size_t outer = d.n_pcs - 1 - j;
                double u = rnd_unit(g);
                uint32_t span = outer < 6 ? o.frames / 64 + 1 : o.frames;
                d.pcs[j] = pool[(uint32_t)(u * u * span) % o.frames];
            }
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
    }
    free(pcs);
    free(pool);
}

/* A Python traceback (10-30 frames from 40 files of 25 functions) for each
 * noted allocation. */
static void send_notes(int fd, gen_t *g)
{
    char files[40][64], funcs[40 * 25][48];
    for (int i = 0; i < 40; i++)
        snprintf(files[i], sizeof files[i], "/usr/lib/python3/site-packages/pkg%d/module%d.py", i % 7, i);
    for (int i = 0; i < 40 * 25; i++)
        snprintf(funcs[i], sizeof funcs[i], "function_%d_of_module_%d", i % 25, i / 25);
    Stackwatch__PyFrame pf[30], *ppf[30];
    for (uint32_t i = 0; i < g->nnotes; i++) {
        Stackwatch__Note n = STACKWATCH__NOTE__INIT;
        n.addr = g->n_addr[i];
        n.ts = g->n_ts[i];
        n.stack = g->n_stack[i];
        n.tid = g->tids[0];
        n.n_python = 10 + rnd(g) % 21;
        for (size_t j = 0; j < n.n_python; j++) {
            Stackwatch__PyFrame f = STACKWATCH__PY_FRAME__INIT;
            double u = rnd_unit(g);
            uint32_t fi = (uint32_t)(u * u * 40 * 25) % (40 * 25);
            f.file = files[fi / 25];
            f.function = funcs[fi];
            f.line = 1 + (uint32_t)(rnd(g) % 400);
            pf[j] = f;
            ppf[j] = &pf[j];
        }
        n.python = ppf;
        Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
        m.msg_case = STACKWATCH__AGENT_MSG__MSG_NOTE;
        m.note = &n;
        send_agent(fd, &m, g);
    }
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
    wait_applied(total, o.stacks);
    fprintf(stderr, "ingest: live set of %u blocks in place; sending %" PRIu64 " events\n",
            o.live, o.events);
    double c0, s0, c1, s1;
    proc_cpu(pid, &c0, &s0);
    uint64_t t0 = mono_ns();
    total += send_events(fd, &g, o.events, 1, o.live);
    uint64_t t_sent = mono_ns();
    wait_applied(total, o.stacks);
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
    wait_applied(0, o.stacks);
    uint64_t rss0 = proc_rss_kb(pid);
    send_events(fd, &g, o.allocs, 0, 0);
    wait_applied(o.allocs, o.stacks);
    uint64_t rss1 = proc_rss_kb(pid);
    send_bye(fd, &g);
    close(fd);
    double per = rss1 > rss0 ? (double)(rss1 - rss0) * 1024.0 / (double)o.allocs : 0;
    printf("{\"mode\": \"mem\", \"allocs\": %" PRIu64 ", \"stacks\": %u, \"rss0_kb\": %" PRIu64
           ", \"rss1_kb\": %" PRIu64 ", \"bytes_per_live\": %.1f}\n",
           o.allocs, o.stacks, rss0, rss1, per);
}


/* RSS once it has stopped changing for 2 s (symbolization in the worker),
 * at most 300 s. */
static uint64_t settled_rss_kb(int pid)
{
    uint64_t last = proc_rss_kb(pid), t_last = mono_ns(), t0 = t_last;
    for (;;) {
        struct timespec ts = { 0, 200 * 1000000 };
        nanosleep(&ts, NULL);
        uint64_t r = proc_rss_kb(pid), now = mono_ns();
        if (r != last) {
            last = r;
            t_last = now;
        } else if (now - t_last > 2000000000ull || now - t0 > 300000000000ull) {
            return r;
        }
    }
}

static void run_stacks(int pid)
{
    gen_t g;
    gen_init(&g, o.stacks, o.batch);
    g.round_robin = 1;
    g.notes_cap = o.pytb < o.stacks ? o.pytb : o.stacks;
    g.n_addr = xmalloc(g.notes_cap * sizeof *g.n_addr);
    g.n_ts = xmalloc(g.notes_cap * sizeof *g.n_ts);
    g.n_stack = xmalloc(g.notes_cap * sizeof *g.n_stack);
    int fd = connect_unix(o.dir, "agent.sock");
    handshake(fd, &g);
    send_modules(fd, &g);
    wait_applied(0, 0);
    uint64_t rss0 = proc_rss_kb(pid);
    send_deep_stacks(fd, &g);
    wait_applied(0, o.stacks);
    uint64_t rss1 = proc_rss_kb(pid);
    /* One live block per stack first, so that every stack expires and is
     * symbolized; then the rest of --allocs. */
    uint64_t n = o.allocs_set && o.allocs > o.stacks ? o.allocs : o.stacks;
    send_events(fd, &g, n, 0, 0);
    send_notes(fd, &g);
    wait_applied(n, o.stacks);
    uint64_t rss2 = proc_rss_kb(pid);
    /* The blocks expire (collectord --expire, which o.expire_wait must
     * exceed) and their stacks are symbolized in the worker. */
    struct timespec ew = { (time_t)o.expire_wait, 0 };
    nanosleep(&ew, NULL);
    uint64_t rss3 = settled_rss_kb(pid);
    client_mem_t cm = { 0 };
    query_self_mem(&cm);
    send_bye(fd, &g);
    close(fd);
    printf("{\"mode\": \"stacks\", \"stacks\": %u, \"frames\": %u, \"allocs\": %" PRIu64
           ", \"notes\": %u, \"rss0_kb\": %" PRIu64 ", \"rss_defined_kb\": %" PRIu64
           ", \"rss_applied_kb\": %" PRIu64 ", \"rss_symbolized_kb\": %" PRIu64
           ", \"bytes_per_stack_defined\": %.1f, \"bytes_per_stack\": %.1f"
           ", \"coll_stack_bytes\": %" PRIu64
           ", \"coll_block_bytes\": %" PRIu64 ", \"coll_bytes_per_stack\": %.1f"
           ", \"coll_bytes_per_block\": %.1f}\n",
           o.stacks, o.frames, n, g.nnotes, rss0, rss1, rss2, rss3,
           rss1 > rss0 ? (double)(rss1 - rss0) * 1024.0 / o.stacks : 0,
           rss3 > rss0 ? (double)(rss3 - rss0) * 1024.0 / o.stacks : 0,
           cm.stack_bytes, cm.block_bytes, cm.per_stack, cm.per_block);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ingest --dir DIR [--pid PID] [--mode rate|mem|stacks] [--events N] [--live N]\n"
            "              [--stacks N] [--batch N] [--allocs K] [--seed N]\n"
            "              [--frames F] [--pytb P] [--module FILE]... [--expire-wait S]\n"
            "  rate: fill --live blocks (default 100000), then --events (20000000)\n"
            "        allocations and frees; prints events per second of collectord CPU\n"
            "  mem:  --allocs (2000000) allocations, no frees; prints collectord's RSS\n"
            "        growth per live block\n"
            "  stacks: --stacks of 20-40 frames drawn from --frames (4000) return\n"
            "        addresses in the functions of each --module, one live block per\n"
            "        stack (or --allocs), --pytb (4096) of them with a Python traceback;\n"
            "        prints collectord's RSS growth per stack once symbolized\n");
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
        { "frames", required_argument, 0, 'f' }, { "pytb", required_argument, 0, 'y' },
        { "module", required_argument, 0, 'M' }, { "expire-wait", required_argument, 0, 'x' },
        { 0, 0, 0, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'd': o.dir = optarg; break;
        case 'p': o.pid = (int)num(optarg, 1, 1u << 30); break;
        case 'm':
            if (strcmp(optarg, "rate") && strcmp(optarg, "mem") && strcmp(optarg, "stacks")) {
                usage(stderr);
                return 2;
            }
            o.mem = strcmp(optarg, "mem") == 0;
            o.stk = strcmp(optarg, "stacks") == 0;
            break;
        case 'e': o.events = num(optarg, 1, 1ull << 40); break;
        case 'l': o.live = (uint32_t)num(optarg, 1, 1u << 30); break;
        case 's': o.stacks = (uint32_t)num(optarg, 1, 1u << 20); break;
        case 'b': o.batch = (uint32_t)num(optarg, 1, 1u << 20); break;
        case 'k':
            o.allocs = num(optarg, 1, 1ull << 32);
            o.allocs_set = 1;
            break;
        case 'r': o.seed = num(optarg, 0, UINT64_MAX); break;
        case 'f': o.frames = (uint32_t)num(optarg, 1, 1u << 24); break;
        case 'x': o.expire_wait = (uint32_t)num(optarg, 0, 3600); break;
        case 'y': o.pytb = (uint32_t)num(optarg, 0, 1u << 24); break;
        case 'M':
            if (o.nmods == 16) {
                usage(stderr);
                return 2;
            }
            o.mods[o.nmods++] = optarg;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!o.dir || optind != argc) {
        usage(stderr);
        return 2;
    }
    int pid = o.pid ? o.pid : read_pidfile();
    if (o.stk && !o.nmods) {
        fprintf(stderr, "ingest: --mode stacks needs --module FILE (ELF files the frames lie in)\n");
        return 2;
    }
    if (o.stk)
        run_stacks(pid);
    else if (o.mem)
        run_mem(pid);
    else
        run_rate(pid);
    return 0;
}
