/* One traced process as collectord sees it: modules, stacks with their statistics, live blocks. */
#ifndef STACKWATCH_COLLECTOR_CLIENT_H
#define STACKWATCH_COLLECTOR_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "amap.h"
#include "atab.h"
#include "classify.h"
#include "ftab.h"
#include "reo.h"

#define CLIENT_MAX_STACKS (1u << 20)   /* agent indexes above this are a protocol error */
#define CLIENT_MAX_MODULES 65536u
#define CLIENT_MAX_PCS 256u
#define CLIENT_REORDER_NS (1000ull * 1000000)  /* event-time window for late cross-thread events */
#define CLIENT_REO_MAX (1u << 20)
#define CLIENT_MAX_LIVE (64u << 20)        /* live blocks tracked per client by default */
#define CLIENT_MAX_TOTAL_PCS (16u << 20)   /* stack frames held per client (128 MiB) */
#define CLIENT_MAX_PYTB 4096u              /* distinct Python tracebacks per client */
#define CLIENT_PYTB_TEXT_MAX 8192u
/* What one client may make collectord hold in strings (docs/RELIABILITY.md,
 * "Per-process limits"). Longer strings are cut, not refused. */
#define CLIENT_STR_MAX 4096u               /* exe, a module path, python status */
#define CLIENT_SAMPLE_MAX 64u              /* STACKWATCH_SAMPLE as the agent gave it */
#define CLIENT_ARGV_MAX (64u << 10)        /* the whole command line */
#define CLIENT_PYSTR_MAX 512u              /* a Python frame's file or function name */
/* Per traced process (every client record of one verified process): */
#define CPROC_STR_MAX (4u << 20)           /* strings held: argv, exe, module paths, notes */
#define CPROC_STR_RESERVE (1u << 20)       /* ... of which Python tracebacks leave this much free */
#define CPROC_CONNS_MAX 16u                /* open agent (and, apart, control) connections */

enum { ARM_NONE = 0, ARM_RULE = 1, ARM_PYTHON = 2, ARM_ON_LEAK = 3 };

enum { CLIENT_CONNECTED = 0, CLIENT_EXITED = 1, CLIENT_LOST = 2, CLIENT_DETACHED = 3 };
enum { SYM_NONE = 0, SYM_PENDING = 1, SYM_DONE = 2 };

struct symres_s;
struct conn_s;

/* One traced process as the kernel names it: its pid and start time, read
 * from /proc while a pidfd held the process (so never a reused pid's). Its
 * connections and client records (one per process image, i.e. instance
 * token) share the per-process limits: --max-live, stack frames, strings. */
typedef struct cproc_s {
    uint32_t pid;
    uint64_t start;          /* starttime (clock ticks since boot); 0: not known */
    uint32_t refs;           /* connections and client records tied to it */
    uint32_t conns[3];       /* open connections by CONN_* kind */
    uint32_t clients;        /* client records tied to it */
    uint64_t live;           /* tracked live blocks, as its clients last reported them */
    uint64_t pcs;            /* stack frames held by its clients */
    uint64_t frames;         /* distinct frames in its clients' frame tables */
    uint64_t str;            /* string bytes held by its clients */
    uint64_t stacks;         /* stacks its clients hold (CLIENT_MAX_STACKS in all) */
    uint64_t reo;            /* late-event records, as its clients last reported them
                              * (CLIENT_REO_MAX in all) */
    struct clients_s *owner; /* the list it is on */
    struct cproc_s *next;
} cproc_t;
struct scan_job_s;

/* A reachability scan's summary (the last one that finished). */
typedef struct scan_info_s {
    uint64_t time_ms;       /* when (Unix ms) */
    uint64_t pause_us;      /* the process's threads were stopped this long */
    uint64_t dur_us;        /* the whole scan */
    uint64_t cpu_us;        /* collectord CPU (worker and loop) */
    uint32_t threads;       /* threads stopped */
    uint32_t busy_threads;  /* stopped inside a hook: their event was not out */
    uint64_t blocks_n, blocks_b;    /* live tracked blocks scanned */
    uint64_t reach_n, reach_b;      /* reachable */
    uint64_t unreach_n, unreach_b;  /* unreachable: lost */
    uint64_t indirect_n, indirect_b; /* of those, lost through other lost blocks only */
    uint64_t unc_n, unc_b;  /* not judged: unreached, but its free may have been lost */
    uint64_t root_bytes;    /* scanned as roots */
    uint64_t read_bytes;    /* copied out of the process */
    uint64_t pristine_bytes; /* module data as its file holds it: no roots */
    int heap_roots;         /* heap outside tracked blocks counted as roots */
} scan_info_t;

/* Who owns a stack's indirectly lost blocks (the last scan): blocks of
 * stack whose direct owner was allocated at stack owner. Client's stack
 * indexes. */
typedef struct scan_own_s {
    uint32_t stack, owner;
    uint64_t n, b;
} scan_own_t;

/* Owner stacks kept per stack (the largest). */
#define SCAN_OWNERS_MAX 3

/* Why a stack's reachable may-leak blocks are kept (the last scan): the
 * most common shortest chain from a root, as the stacks of the blocks on it
 * (root side first; a run of one stack counted once) and the root in words. */
#define SCAN_PATH_HOPS 8
#define SCAN_PATHS_MAX 2    /* kept per stack */
/* A hop: a tracked block (its stack) or an untracked Python object
 * (stack SCAN_HOP_PY; size 0: several), with its Python type when read
 * (an index in c->scan_pytypes, or SCAN_PYTYPE_NONE). */
#define SCAN_HOP_PY UINT32_MAX
typedef struct scan_hop_s {
    uint32_t stack;
    uint32_t type;
    uint32_t size;
} scan_hop_t;
typedef struct scan_path_s {
    uint32_t stack;
    uint32_t nhops;
    scan_hop_t hop[SCAN_PATH_HOPS];
    uint8_t cut;            /* longer than SCAN_PATH_HOPS: the block-side hops shown */
    const char *root;       /* the scan's label (c->scan_labels) */
    uint64_t n, b;          /* sampled blocks of the stack kept this way */
    uint64_t of_n;          /* blocks of the stack sampled (up to SCAN_PATH_SAMPLES) */
} scan_path_t;

/* Reachable may-leak blocks of one stack whose chains are followed. */
#define SCAN_PATH_SAMPLES 64

enum { SCAN_ST_NONE = 0, SCAN_ST_BEGIN, SCAN_ST_FREEZE, SCAN_ST_SYNC, SCAN_ST_READ };

typedef struct cmod_s {
    char *path;             /* NULL: slot unused */
    uint8_t build_id[32];   /* as the agent read it from memory */
    uint32_t build_id_len;
    uint64_t bias;          /* load bias */
    uint64_t *ranges;       /* [start, end) pairs */
    uint32_t nranges;
    uint32_t gen_added;     /* valid from this generation */
    uint32_t gen_removed;   /* gone from this generation (0: loaded) */
} cmod_t;

typedef struct cstack_s {
    uint64_t id;            /* fingerprint shown to users */
    uint32_t index;         /* agent's index (events refer to it) */
    uint32_t gen;           /* module-map generation */
    uint32_t *fids;         /* return addresses, innermost first: ids in the client's
                             * frame table (cstack_pc) */
    uint32_t npcs;
    uint8_t truncated;      /* cut at the agent's depth */
    uint8_t defined;        /* StackDef received (events may name it first) */
    uint8_t sym_state;      /* SYM_NONE / PENDING / DONE */
    uint8_t sym_queued;     /* in the client's symq */
    uint8_t sym_urgent;     /* its pending job was moved to the urgent queue */
    uint64_t sym_tried;     /* when its frames last came in (collector clock) */
    uint64_t alloc_n, alloc_b;      /* allocations */
    uint64_t free_n, free_b;        /* frees (explicit, matched late, or implied by reuse) */
    uint64_t exp_n, exp_b;          /* blocks that reached the expire age */
    uint64_t fexp_n, fexp_b;        /* ... and were freed after that */
    uint64_t unc_n, unc_b;          /* live blocks from before a gap */
    uint64_t lt_min, lt_max, lt_sum;/* lifetimes of freed blocks, ns */
    uint64_t lt_n;                  /* blocks in lt_sum (recorded, not estimated) */
    uint64_t exit_live_n, exit_live_b; /* live when the process ended */
    uint64_t oldest_live_ts;        /* at the end: oldest live block (0: none) */
    struct symres_s *sym;           /* symbolized frames of its own (owned), when they are not
                                     * kept in the frame table (no worker, ENOMEM); NULL mostly:
                                     * read them with cstack_sym */
    uint8_t leak_seen;              /* first may-leak block was queued (leakq) */
    uint8_t arm_kind;               /* ARM_*: why it is armed in the agent */
    uint8_t arm_rounds;             /* automatic Python arming rounds so far */
    uint32_t arm_rule;              /* rule id when ARM_RULE */
    uint32_t arm_left;              /* firings the agent still has (as far as we know) */
    uint32_t pos;                   /* its place in the client's slist */
    uint64_t arm_may_n;             /* may-leak count when last armed */
    uint64_t fired;                 /* firings reported for it */
    uint32_t py_missing[4];         /* captures without Python frames, by PY_MISSING_* */
    cls_t *cls;                     /* classification state (from its first expiry) */
    uint8_t klass;                  /* CLASS_* as of the last tick */
    uint16_t skip;                  /* leading allocation-wrapper frames (symbolized) */
    uint8_t py_sampled;             /* has CPython small objects sampled at py_sample_bytes */
    float confidence;               /* 0..1 */
    double growth_per_min;          /* live bytes per minute */
    uint64_t mark_alloc_n, mark_alloc_b, mark_free_n, mark_free_b; /* counters at the mark */
    uint64_t mend_may_n, mend_may_b;   /* at the end: expired and live, allocated after the mark */
    uint64_t mend_live_n, mend_live_b; /* at the end: live, allocated after the mark */
    uint64_t mend_oldest;              /* at the end: oldest of those (0: none) */
    uint64_t end_un_n, end_un_b;       /* at the end: live, the last scan found unreachable */
    uint64_t end_ind_n, end_ind_b;     /* ... of those, lost indirectly */
    uint64_t end_re_n, end_re_b;       /* at the end: live, the last scan found reachable */
} cstack_t;

typedef struct pyframe_s {
    const char *file;       /* interned */
    const char *function;   /* interned */
    uint32_t line;
} pyframe_t;

/* One distinct Python traceback seen for a C stack, and the fate of the
 * blocks allocated under it. */
typedef struct pytb_s {
    uint32_t stack;         /* agent stack index */
    uint64_t hash;          /* of stack and frames (and text) */
    pyframe_t *frames;      /* innermost first */
    uint32_t nframes;
    uint8_t truncated;
    char *text;             /* from a signal handler (stackwatch_note), or NULL */
    uint32_t captures;      /* allocations noted with it */
    uint64_t live_n, live_b;   /* still live (frozen at the end) */
    uint64_t exp_n, exp_b;     /* expired */
    uint64_t may_n, may_b;     /* expired and still live: what blames it */
    uint64_t freed;
} pytb_t;

typedef struct client_s {
    uint64_t serial;        /* unique within this collectord run */
    uint32_t pid;           /* from SO_PEERCRED */
    uint32_t claimed_pid;   /* what the hello said */
    uint32_t ppid;
    char *exe;
    char **argv;
    uint32_t argc;
    uint64_t instance;      /* agent's per-image token */
    uint64_t parent_instance;
    uint64_t start_realtime_ns;
    uint32_t depth;
    char *sample;
    int state;              /* CLIENT_* */
    int successor_seen;     /* attached: the process's next session named this one as
                             * its previous (it ended with a detach) */
    int said_bye;           /* Goodbye received on the current connection */
    int said_detach;        /* ... and it said "detached" (stackctl detach) */
    int attached;           /* stackctl attach: tracking started at start_realtime_ns */
    uint32_t flusher_tid;   /* the agent's own thread (a scan leaves it running) */
    int frozen;             /* ages frozen at end_ts */
    int ending;             /* it said it began to end (Ending): frozen for good */
    char end_reason[32];    /* ... and why ("exit", "python finalizing", ...) */
    uint64_t after_end;     /* events stamped after the end: counted, not applied */
    uint64_t last_tick;     /* last classification tick (collector clock) */
    uint64_t first_mono;    /* first connection, collector clock */
    uint64_t end_ts;        /* when it ended (event clock) */
    uint64_t gone_ts;       /* collector clock when its connection went: retention keeps the latest */
    uint64_t max_ts;        /* newest event time seen */
    uint64_t expire_ns;
    struct conn_s *conn;    /* current agent connection, NULL if none */
    atab_t atab;            /* live blocks (freed after a clean exit) */
    int atab_ok;
    reo_t reo;              /* late-event records */
    cstack_t ***spage;      /* by agent index: pages of CLIENT_SPAGE (the agent's
                             * indexes are hash slots, spread over its table) */
    uint32_t stacks_cap;    /* agent indexes below this have a page slot */
    cstack_t **slist;       /* every stack, in order of first use (cstack_t.pos) */
    uint32_t nstacks, slist_cap; /* distinct stacks defined or used */
    ftab_t ftab;            /* distinct frames of its stacks, with their symbols */
    cmod_t *mods;           /* by agent module id */
    uint32_t mods_cap;
    uint64_t events, allocs, frees;
    uint64_t unknown_frees; /* frees of blocks never seen (allocated before tracing) */
    uint64_t implied_frees; /* blocks whose free was implied by address reuse */
    uint64_t live_n, live_b;
    uint32_t gaps;
    uint64_t lost_events;
    uint64_t lost_stale;    /* events on connections the agent had already left for a newer
                             * one (collectord stopped meanwhile): counted, not applied */
    uint32_t reconnects_seen; /* the highest Hello.reconnects of this process image */
    uint32_t stale_conns;   /* stale connections pointing here (kept from pruning meanwhile) */
    uint64_t table_full;    /* allocations not tracked: out of memory */
    uint64_t total_pcs;     /* frames held by its stacks */
    uint64_t max_live;      /* cap on tracked live blocks */
    uint64_t late_events;   /* events stamped before one already applied (agent order broken) */
    uint32_t *symq;         /* stacks that started to expire: symbolize them */
    uint32_t nsymq, symq_cap;
    int exec_replaced;      /* a new image of this pid connected: the old one exec'd */
    uint32_t python_version;/* Py_Version the agent reads frames of (0: none) */
    char *python_status;
    uint64_t notes;         /* notes received */
    pytb_t *pytbs;          /* distinct tracebacks */
    uint32_t npytbs, pytbs_cap;
    amap_t noted;           /* block address -> pytbs index */
    uint32_t *leakq;        /* stacks whose first block just became may-leak */
    uint32_t nleakq, leakq_cap;
    uint32_t *hotq;         /* stacks just classified leak or growing */
    uint32_t nhotq, hotq_cap;
    uint64_t may_n, may_b;  /* expired and still live, all stacks */
    series_t series;        /* the process's live and may-leak bytes over time */
    mem_series_t mseries;   /* ... and its memory account at the same times */
    uint64_t mark_ts;       /* baseline (collector clock), 0 none */
    /* latest agent Stats */
    uint64_t a_dropped, a_failed, a_unwind_fail, a_intern_full, a_events, a_threads;
    uint64_t a_ring_bytes, a_table_bytes, a_waits, a_lost_disc;
    uint64_t a_total_allocs, a_total_alloc_b, a_total_frees; /* exact, sampled or not */
    uint64_t a_sample_overflow, a_sample_set_bytes, a_scratch_bytes;
    uint64_t a_sc_hits, a_firings, a_notes_dropped, a_sites_full;
    uint32_t rule_armed;    /* stacks armed by trigger rules (for the sampled budget) */
    uint64_t sample_bytes;  /* the agent samples every N bytes on average (0: every block) */
    uint64_t py_sample_bytes; /* ... CPython's small objects (EVENT_ALLOC_PY), 0: not sampled */
    char py_allocators[8];  /* STACKWATCH_PYTHON_ALLOCATORS in effect: off, sampled, exact ("") */
    uint8_t py_hooked;      /* the agent is chained in front of CPython's domains (Stats) */
    struct scan_job_s *scan;/* the reachability scan in progress, if any */
    int scan_state;         /* SCAN_ST_*: what it waits for */
    int scan_allowed;       /* the agent was asked to allow ptrace (SCAN_BEGIN) */
    uint64_t scan_token;    /* its token in the agent's commands and replies */
    uint64_t scan_deadline; /* collector clock: give up after */
    uint32_t scan_busy;     /* from the agent's reply: threads stopped in a hook */
    uint64_t scan_loop_ns;  /* loop CPU it took (snapshot and results) */
    uint64_t scan_seq;      /* scans finished, well or not */
    uint64_t scan_drops;    /* the agent's dropped events as of the last scan */
    uint64_t scan_ask;      /* the agent's ScanAsk token to answer (SCAN_DONE) at the scan's end */
    int scan_asked;         /* the agent asked once (a second ask is answered at once) */
    int scan_err;           /* the last one's error (0: ok) */
    char scan_msg[512];     /* ... and why */
    int scan_ok;            /* scan_last is valid */
    scan_info_t scan_last;  /* the last scan that worked */
    uint64_t rss_b, rss_start_b;        /* the memory account (agent's Stats) */
    uint64_t heap_b, heap_free_b, heap_mmap_b, heap_start_b;
    int64_t pyarena_growth_b;           /* pymalloc's arenas: mapped - unmapped since hooked */
    int pyarena_known;                  /* ... counted by the agent */
    scan_own_t *scan_own;   /* its owners, by stack then largest first */
    size_t nscan_own;
    scan_path_t *scan_paths; /* why reachable may-leak blocks are kept, by stack */
    size_t nscan_paths;
    char **scan_labels;     /* the roots those name */
    size_t nscan_labels;
    char **scan_pytypes;    /* the Python types of their hops */
    size_t nscan_pytypes;
    uint64_t rng;           /* for the estimates' rounding */
    cproc_t *proc;          /* the verified process (NULL: none known, per-client limits) */
    uint64_t live_acct;     /* atab.live as last added to proc->live */
    uint64_t reo_acct;      /* reo.used as last added to proc->reo */
    uint64_t str_bytes;     /* string bytes it holds (charged to proc->str) */
    uint64_t str_refused;   /* strings (modules, notes) not kept: over the process's budget */
    struct client_s *next;
} client_t;

#define CLIENT_SPAGE_BITS 8
#define CLIENT_SPAGE (1u << CLIENT_SPAGE_BITS)

/* The stack with agent index i, or NULL. */
static inline cstack_t *cstack_at(const client_t *c, uint32_t i)
{
    if (i >= c->stacks_cap)
        return NULL;
    cstack_t **pg = c->spage[i >> CLIENT_SPAGE_BITS];
    return pg ? pg[i & (CLIENT_SPAGE - 1)] : NULL;
}

/* Return address i of a stack. */
static inline uint64_t cstack_pc(const client_t *c, const cstack_t *s, uint32_t i)
{
    return c->ftab.ent[s->fids[i]].pc;
}

typedef struct clients_s {
    client_t *head;         /* newest first */
    uint32_t count;
    uint64_t next_serial;
    uint32_t retain_max;    /* ended clients kept */
    uint64_t retain_ns;     /* ... for at most this long */
    uint64_t max_live;      /* live blocks tracked per process (0: CLIENT_MAX_LIVE) */
    cproc_t *procs;         /* processes with a connection or a client record */
} clients_t;

/* The process record of (pid, start), created with no reference; NULL on
 * ENOMEM. Take a reference with cproc_ref, drop it with cproc_unref. */
cproc_t *cproc_get(clients_t *cs, uint32_t pid, uint64_t start);
void cproc_ref(cproc_t *p);
void cproc_unref(cproc_t *p);

/* Ties a new client record to its process (its limits become shared). */
void client_set_proc(client_t *c, cproc_t *p);



/* Creates a client record for a new agent connection; NULL on ENOMEM. */
client_t *client_new(clients_t *cs, uint32_t pid, uint64_t expire_ns, uint64_t now);

/* Finds a client by pid and agent instance (a reconnect), or NULL. */
client_t *client_find(clients_t *cs, uint32_t pid, uint64_t instance);

/* The client with this serial (kept while in memory), or NULL. */
client_t *client_by_serial(clients_t *cs, uint64_t serial);

/* Sets identity fields from a Hello (copies strings). Returns 0 or -ENOMEM. */
int client_set_identity(client_t *c, uint32_t claimed_pid, uint32_t ppid, const char *exe,
                        char **argv, size_t argc, uint64_t instance, uint64_t parent_instance,
                        uint64_t start_realtime_ns, uint32_t depth, const char *sample);

/* Sets the Python status text (copied, cut at CLIENT_STR_MAX). */
void client_set_status(client_t *c, const char *status);

/* Whether Python names may still be interned for the process (its string
 * budget short of CPROC_STR_MAX - CPROC_STR_RESERVE); counts a refusal. */
int client_pystr_room(client_t *c);

/* Charges the bytes of Python names new to the intern table. */
void client_charge_pystr(client_t *c, uint64_t bytes);

/* Records or updates a module (its path cut at CLIENT_STR_MAX). Returns 0
 * or -EINVAL/-ENOMEM, or -E2BIG past the process's string budget. */
int client_put_module(client_t *c, uint32_t id, const char *path, uint64_t bias,
                      const uint64_t *ranges, size_t nranges, const uint8_t *build_id,
                      size_t build_id_len, uint32_t gen_added, uint32_t gen_removed);

/* Defines a stack. Returns the stack, NULL with *err set on a bad index/size
 * (-EINVAL), too many frames in all (-E2BIG) or ENOMEM. A redefinition (after a reconnect) keeps statistics. */
cstack_t *client_define_stack(client_t *c, uint32_t index, uint64_t id, uint32_t gen,
                              const uint64_t *pcs, size_t npcs, int truncated, int *err);

struct sym_job_s;

/* A finished symbolization job of stack s: its frames go to the frame
 * table (each pc's once), or, when they cannot (no per-pc split, out of
 * memory), to the stack itself (s->sym takes j->result). Marks it done. */
void client_sym_done(client_t *c, cstack_t *s, struct sym_job_s *j);

/* The symbolized frames of a stack (its own, or put together from the
 * frame table), NULL unless it is SYM_DONE. The frame table's are in a
 * buffer shared by every call: valid until the next call (loop thread). */
const struct symres_s *cstack_sym(const client_t *c, const cstack_t *s);

/* What collectord holds for a client, counted: for its stacks (records,
 * frame ids, frame table, classification state, Python tracebacks) and for
 * its live blocks (the allocation table and the notes' map). */
void client_mem(const client_t *c, uint64_t *stack_bytes, uint64_t *block_bytes);

/* Applies one event in the client's event time. Returns 0 or -EINVAL (bad
 * stack index) / -ENOMEM. */
int client_alloc(client_t *c, uint64_t addr, uint64_t ts, uint64_t size, uint32_t stack);

/* count allocations from stack, freed again within one agent batch: bytes
 * in all, lifetimes summing to lt_sum within [lt_min, lt_max] ns, the batch
 * starting at ts. Counted like as many allocs and frees (exact clients
 * only). Returns 0, -EINVAL (stack index out of range), -ERANGE (impossible
 * figures) or -ENOMEM. */
int client_fold(client_t *c, uint32_t stack, uint64_t count, uint64_t bytes, uint64_t lt_sum,
                uint64_t lt_min, uint64_t lt_max, uint64_t ts);

/* 1 when client_fold would accept these figures (checked for a whole batch
 * before any of it is applied). */
int client_fold_valid(const client_t *c, uint32_t stack, uint64_t count, uint64_t bytes,
                      uint64_t lt_sum, uint64_t lt_min, uint64_t lt_max);

/* Sampled mode: an allocation recorded only because its stack is armed.
 * Tracked like any other (its note, its free) but weighted 0. From a client
 * that records everything, a plain allocation. */
int client_alloc_unsampled(client_t *c, uint64_t addr, uint64_t ts, uint64_t size,
                           uint32_t stack);

/* A CPython small object sampled at py_sample_bytes (EVENT_ALLOC_PY):
 * weighted with that rate. From a client that gave no such rate, a plain
 * allocation. */
int client_alloc_py(client_t *c, uint64_t addr, uint64_t ts, uint64_t size, uint32_t stack);

/* Some of the client's figures are estimates: malloc or CPython's small
 * objects are sampled. */
static inline int client_sampled(const client_t *c)
{
    return c->sample_bytes || c->py_sample_bytes;
}

/* The sampling interval a stack's blocks were weighted with (0: exact). */
static inline uint64_t client_stack_rate(const client_t *c, const cstack_t *s)
{
    return s && s->py_sampled ? c->py_sample_bytes : c->sample_bytes;
}

/* What a block of size with atab flags counts for in counts and bytes: 1 and
 * size when every allocation is recorded; in a sampled client the estimate
 * 1/p and size/p, p = 1 - exp(-size / rate) the chance it was sampled, rate
 * the client's sample_bytes, or py_sample_bytes for ATAB_F_PY (the count
 * rounded down, or up with ATAB_F_WUP); 0 for a block recorded unsampled. */
void client_weight(const client_t *c, uint64_t size, unsigned flags, uint64_t *wn,
                   uint64_t *wb);
int client_free(client_t *c, uint64_t addr, uint64_t ts);

/* A note for the block allocated at addr at ts (its Python traceback and/or
 * handler text): deduplicated per stack, tied to the block while it lives.
 * Returns the note's stack (NULL if the stack is unknown). */
cstack_t *client_note(client_t *c, uint64_t addr, uint64_t ts, uint32_t stack,
                      const pyframe_t *frames, uint32_t nframes, int truncated, const char *text,
                      uint32_t py_missing);

/* A CPython was found in the client after its hello (embedding): stacks
 * already may-leak go back on the leak queue, to be armed for captures. */
void client_python_attached(client_t *c);

/* Marks every live block uncertain (events were lost). */
void client_gap(client_t *c, uint64_t lost_events);

/* Marks every live block uncertain: its free may have been among events
 * the agent dropped (a full ring). */
void client_all_uncertain(client_t *c);

/* Ages the client's blocks to now (collector clock) and resolves late-event
 * records that are due. Does nothing once frozen. */
void client_age(client_t *c, uint64_t now);

/* A scan finished after the process began to end (its table still here):
 * the end figures take its verdicts. */
void client_end_scanned(client_t *c);

/* The process ended (or the connection went without Goodbye): ages freeze
 * at end_ts, classes get a last tick there, live blocks become exit_live,
 * since-mark figures are kept per stack. A clean exit releases the table.
 * Once frozen, later events are counted (after_end), never applied. */
void client_freeze(client_t *c, uint64_t end_ts, int clean);

/* The process said it began to end at ts (exit, main returned, interpreter
 * finalizing): freezes there for good; the connection stays for the last
 * frames. why is copied (truncated). */
void client_ending(client_t *c, uint64_t ts, const char *why);

/* The connection came back (same instance): unfreeze, unless it had said
 * it was ending. */
void client_revive(client_t *c);

/* The module valid at generation gen containing pc, or NULL. */
const cmod_t *client_module_at(const client_t *c, uint64_t pc, uint32_t gen);

/* client_module_at trying *hint first (NULL at first: the module of the
 * previous pc of a stack, whose pcs come in runs of one module), which it
 * sets to the module found. */
const cmod_t *client_module_near(const client_t *c, uint64_t pc, uint32_t gen, const cmod_t **hint);

/* Samples the process and classifies every stack at now (aging tick). */
void client_classify(client_t *c, uint64_t now);

/* Sets the baseline: later since-mark reports count what comes after now. */
void client_mark(client_t *c, uint64_t now);

/* Drops ended clients beyond the retention count or age. */
void clients_prune(clients_t *cs, uint64_t now);

/* Frees a client record entirely (caller unlinked it), releasing its
 * process record's share. */
void client_destroy(client_t *c);

/* Live-time statistics of a stack's freed blocks, in ms; 0 if none. */
static inline uint64_t cstack_lt_avg_ms(const cstack_t *s)
{
    return s->lt_n ? s->lt_sum / s->lt_n / 1000000u : 0;
}

#endif
