/* Symbolization with libdw in a worker thread: function+offset, file:line, module for each pc. */
#ifndef STACKWATCH_COLLECTOR_SYM_H
#define STACKWATCH_COLLECTOR_SYM_H

#include <stddef.h>
#include <stdint.h>

/* One reported frame. Strings are interned for the daemon's life (never
 * freed, safe to share between threads once published). */
typedef struct symframe_s {
    uint64_t addr;          /* return address as captured */
    const char *module;     /* module path, NULL if the pc lies in no known module */
    const char *function;   /* NULL when unknown */
    uint64_t offset;        /* addr - symbol start, valid with function */
    const char *file;       /* NULL when unknown */
    uint32_t line;          /* 0 when unknown */
    uint8_t is_inline;      /* a frame inlined into the next one */
    uint8_t build_id_len;
    uint8_t build_id[32];
} symframe_t;

typedef struct symres_s {
    uint32_t n;             /* frames */
    uint8_t degraded;       /* a module could not be read for a reason that may pass */
    symframe_t f[];         /* innermost first */
} symres_t;

/* A module as the job needs it (copied: the client may go away meanwhile). */
typedef struct sym_mod_s {
    char *path;
    uint8_t build_id[32];
    uint32_t build_id_len;
    uint64_t bias;
    uint64_t lo;            /* first mapped address, to find /proc/PID/map_files entry */
} sym_mod_t;

typedef struct sym_job_s {
    struct sym_job_s *next;
    uint64_t client_serial; /* whose stack */
    uint32_t stack_index;
    uint32_t pid;           /* to open modules through /proc/PID/map_files while it lives */
    uint32_t npcs;
    uint64_t *pcs;
    int32_t *pc_mod;        /* module index per pc, -1: none */
    uint32_t nmods;
    sym_mod_t *mods;
    symres_t *result;       /* set by the worker */
    uint16_t *pc_nf;        /* ... and how many of its frames each pc gave (NULL: not known) */
    uint8_t *pc_deg;        /* ... and whether that pc's module may resolve later */
    uint8_t sweep;          /* not a stack: close the handles of modules not in mods */
} sym_job_t;

/* Starts the worker. wake(arg) is called from the worker thread whenever
 * finished jobs are ready (e.g. ev_async_send). Returns 0 or -errno. */
int sym_start(void (*wake)(void *arg), void *arg);

/* Stops and joins the worker; pending jobs are freed. */
void sym_stop(void);

/* Eager jobs (stacks that began to expire) in the queue at most. */
#define SYM_EAGER_MAX 1024u

/* Queues a job (ownership passes to the symbolizer until sym_take_done),
 * urgent ones (a report or a rule waits) before the others. Returns 0, or
 * -ESRCH when no worker runs (the caller keeps the job). */
int sym_submit(sym_job_t *j, int urgent);

/* Moves a queued, not yet started job of that stack to the urgent queue.
 * Returns 1 if it did, 0 if there was none waiting. O(queued jobs). */
int sym_promote(uint64_t client_serial, uint32_t stack_index);

/* Takes one finished job, or NULL. Loop thread. */
sym_job_t *sym_take_done(void);

/* Jobs queued or in progress. */
size_t sym_backlog(void);

/* Frames without DWARF: module + offset for each pc. Never fails except ENOMEM (NULL). */
symres_t *sym_fallback(const sym_job_t *j);

/* The symbolizer's work since it started, for tests and measurements
 * (the worker's counters: read them when it is idle). */
typedef struct sym_stats_s {
    uint64_t pcs;           /* pcs in a module, in resolved jobs */
    uint64_t cached;        /* ... answered from the module's frames cache */
    uint64_t looked_up;     /* ... looked up in an open module (symbol, line, scopes) */
    uint64_t symscans;      /* dwfl_module_addrinfo calls: each reads the whole symbol table */
    uint64_t indexed;       /* symbols found in a module's address-sorted index */
    uint64_t index_builds;  /* indexes built (once a module is opened) */
    uint64_t index_syms;    /* symbols those indexes read */
    uint64_t open_now;      /* libdw handles open */
    uint64_t swept;         /* handles closed by sweeps */
} sym_stats_t;

void sym_get_stats(sym_stats_t *out);

/* Compares the symbol (name, offset) the index finds with the one
 * dwfl_module_addrinfo finds for each of the n file addresses of the
 * module at path (tests). Returns the addresses whose answers differ, or
 * -1 when the module cannot be read; *indexed counts those the index
 * answered itself. */
long sym_index_check(const char *path, const uint64_t *addrs, size_t n, size_t *indexed);

/* Closes the libdw handles (and their symbol indexes) of the modules that
 * are none of keep[0..nkeep) (same path and build-id); their resolved
 * frames stay cached and a later pc opens them again. Then hands malloc's
 * free pages back to the system. A job with sweep set does this in the
 * worker (queued after the jobs before it). Returns the handles closed. */
size_t sym_sweep_now(const sym_mod_t *keep, uint32_t nkeep);
/* Resolves a job synchronously in the calling thread (tests, fuzzers). */
void sym_resolve_now(sym_job_t *j);

void sym_job_free(sym_job_t *j);
void sym_release(symres_t *r);

/* Adds a directory where separate debug info is looked for (by build-id and
 * by path), before /usr/lib/debug. Call before sym_start. Returns 0 or -EINVAL. */
int sym_add_debug_dir(const char *dir);

/* Interns a string for the daemon's life. Thread-safe. NULL in, NULL out. */
const char *sym_intern(const char *s);

/* sym_intern that adds to *added the bytes of a string new to the table. */
const char *sym_intern_n(const char *s, uint64_t *added);

#endif
