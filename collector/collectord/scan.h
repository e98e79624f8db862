/* A reachability scan of one process: freeze it, copy its memory, let it go, mark (a worker thread). */
#ifndef STACKWATCH_COLLECTOR_SCAN_H
#define STACKWATCH_COLLECTOR_SCAN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One live block as the collector's table had it when the process was frozen. */
typedef struct scan_ent_s {
    uint64_t addr;
    uint64_t size;
    uint64_t ts;        /* allocation time: the same block, not a later one at addr */
    uint32_t stack;     /* the client's stack index */
    uint32_t owner;     /* worker, when lost: the snapshot index of the block lost
                         * directly that owns it (itself when it is that block) */
    uint32_t parent;    /* worker, when reachable: the snapshot index of the block
                         * whose word first reached it (a shortest chain), or
                         * SCAN_PARENT_ROOT; then label is its root's index in
                         * the job's labels */
    uint32_t label;
    uint32_t pyseg;     /* worker, when reachable: the Python objects between it
                         * and its parent (or root), an index in the job's
                         * pysegs, or SCAN_PYSEG_NONE */
    uint8_t reach;      /* worker: 1 reachable, 0 not */
    uint8_t py;         /* a CPython small object (sampled): in pymalloc's arenas, not
                         * malloc's heap, which its neighbours' words cannot tell */
} scan_ent_t;

_Static_assert(sizeof(scan_ent_t) == 48, "48 bytes a live block in a scan's snapshot");

#define SCAN_PARENT_ROOT UINT32_MAX
#define SCAN_PYSEG_NONE UINT32_MAX
#define SCAN_PYSEG_MANY (UINT32_MAX - 1)  /* more distinct chains than kept */
#define SCAN_PYTYPE_NONE UINT32_MAX       /* a type not read */

/* The Python objects (pymalloc's live blocks) on a block's chain to its
 * parent: up to SCAN_PYSEG_OBJS of them nearest the block (a block
 * without a type right before a typed object, its storage, left out),
 * block side first; more: others beyond them.
 * ptype: the type of the parent when that tracked block is a Python object
 * (a traced one, or a large one malloc'd). Types are indices in the job's
 * pytypes. Equal segments share an index. */
#define SCAN_PYSEG_OBJS 4
typedef struct scan_pyseg_s {
    uint32_t ptype;
    uint32_t n;
    uint32_t more;
    uint32_t type[SCAN_PYSEG_OBJS];
    uint32_t size[SCAN_PYSEG_OBJS];
} scan_pyseg_t;

enum { SCAN_RUNNING = 0, SCAN_FROZEN = 1, SCAN_DONE = 2, SCAN_FAILED = 3, SCAN_NEED_TRACER = 4 };

typedef struct scan_job_s {
    pid_t pid;
    pid_t skip;                 /* the agent's flusher: left running */
    int heap_roots;             /* heap outside tracked blocks counts as roots */
    void (*notify)(void *arg);  /* called from the worker when the stage changes */
    void *notify_arg;
    pthread_t thr;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* loop -> worker, under mu */
    int have_snap;
    int abort;
    int retry;                  /* the process now allows us: try to stop it again */
    scan_ent_t *snap;           /* owned by the job from scan_job_snapshot on */
    size_t nsnap;
    size_t snap_cap;            /* snap is mmap'd with room for this many (0: malloc'd) */
    size_t live_hint;           /* live blocks when the scan started */
    uint64_t *regions;          /* the agent's memory: [start, end) pairs */
    size_t nregions;
    size_t ndead;               /* after them: dead threads' stacks (lo, frames_hi, hi) */
    char **labels;              /* worker: what each root is, in words (malloc'd) */
    size_t nlabels;
    scan_pyseg_t *pysegs;       /* worker: Python objects on chains (malloc'd) */
    size_t npysegs;
    char **pytypes;             /* worker: their type names (malloc'd) */
    size_t npytypes;
    /* worker -> loop */
    _Atomic int stage;          /* SCAN_* */
    int err;                    /* -errno when failed */
    char msg[512];              /* why it failed */
    uint32_t threads;           /* threads stopped */
    uint64_t t_start;           /* CLOCK_MONOTONIC ns: the job began */
    uint64_t pause_ns;          /* the threads were stopped this long: */
    uint64_t stop_ns;           /* ... stopping them */
    uint64_t sync_ns;           /* ... the agent's last events and the snapshot */
    uint64_t copy_ns;           /* ... copying the memory (read_ns of it in process_vm_readv) */
    uint64_t read_ns;
    uint64_t mark_ns;           /* after the release: sorting, heap areas, marking */
    uint64_t dur_ns;            /* the worker's whole run */
    uint64_t cpu_ns;            /* the worker's CPU time */
    uint64_t read_bytes;        /* copied out of the process */
    uint64_t pristine_bytes;    /* module data still as its file holds it: no roots */
    uint64_t root_bytes;        /* scanned as roots */
    uint64_t py_objects;        /* pymalloc's live blocks marked through, untracked */
} scan_job_t;

/* Starts a worker that stops every thread of pid but skip (at once) and
 * then waits for the block snapshot. notify is called (from the worker)
 * when it has stopped them (SCAN_FROZEN), when ptrace was refused under
 * Yama scope 1 (SCAN_NEED_TRACER: the agent can allow it, then
 * scan_job_retry) and when it is done. Returns the job, or NULL (ENOMEM,
 * no thread). */
scan_job_t *scan_job_start(pid_t pid, pid_t skip, int heap_roots, size_t live_hint,
                           void (*notify)(void *arg), void *arg);

/* After SCAN_NEED_TRACER (ptrace refused under Yama scope 1): the agent
 * has allowed collectord (PR_SET_PTRACER); the worker tries again. */
void scan_job_retry(scan_job_t *j);

/* Room for the snapshot of n blocks: the buffer the worker prepared (its
 * pages already faulted in, so that filling it does not prolong the pause)
 * when it is large enough, else a new one; NULL on ENOMEM. Loop thread,
 * after SCAN_FROZEN. */
scan_ent_t *scan_job_snap_buf(scan_job_t *j, size_t n);

/* Hands the worker the live blocks (snap from scan_job_snap_buf, n filled)
 * and the agent's regions (malloc'd, taken): it copies the memory, lets the
 * process go and marks. */
void scan_job_snapshot(scan_job_t *j, scan_ent_t *snap, size_t n, uint64_t *regions,
                       size_t nregions, size_t ndead);

/* Asks the worker to let the process go and stop (it ends SCAN_FAILED). */
void scan_job_abort(scan_job_t *j, const char *why);

/* Waits for the worker and frees the job. */
void scan_job_free(scan_job_t *j);

#endif
