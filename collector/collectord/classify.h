/* Leak classification: live-bytes time series per stack, windows of the expire time, class and confidence. */
#ifndef STACKWATCH_COLLECTOR_CLASSIFY_H
#define STACKWATCH_COLLECTOR_CLASSIFY_H

#include <stdint.h>

#define SERIES_CAP 64
#define SERIES_T_UNIT 1000000ull   /* series times are kept to the millisecond */

enum {
    CLASS_NONE = 0,
    CLASS_TRANSIENT,  /* everything freed before expiring */
    CLASS_CACHE,      /* expired blocks do get freed later; live amount bounded */
    CLASS_RETAINED,   /* expired, never freed, not growing (singletons, tables) */
    CLASS_GROWING,    /* live bytes trend up although some expired blocks are freed */
    CLASS_LEAK,       /* expired, never freed, and more keep expiring */
};

/* One point of a series. */
typedef struct spt_s {
    uint64_t t;                    /* CLOCK_MONOTONIC ns (kept to the millisecond) */
    uint64_t live_b, live_n;       /* live bytes and blocks */
    uint64_t may_b;                /* may-leak bytes */
} spt_t;

/* A bounded time series: when full, every other point goes and the spacing
 * doubles, so memory stays bounded and old history coarsens. Every stack
 * that expired has one: the points but the newest are kept as deltas (3
 * bytes a point when the values stay, about 8 when they all change), read
 * with series_decode. */
typedef struct series_s {
    uint64_t interval_ns;          /* spacing of kept points */
    uint8_t *buf;                  /* points 0 .. n-2, encoded: the time step in ms, a byte
                                    * saying which values changed, their changes (varints) */
    uint32_t n;                    /* points kept */
    uint16_t len, cap;             /* bytes of buf used, allocated */
    spt_t last;                    /* point n-1 */
} series_t;

/* A process's memory account beside its series: one column per figure,
 * kept at the series' times (series_add_mem thins both together). */
typedef struct mem_series_s {
    uint64_t rss_b[SERIES_CAP];
    uint64_t heap_b[SERIES_CAP];
    uint64_t heap_free_b[SERIES_CAP];
} mem_series_t;

typedef struct mem_point_s {
    uint64_t rss_b, heap_b, heap_free_b;
} mem_point_t;

/* What classification remembers of one stack (allocated once its first
 * block expires; stacks that never expire are transient without state). */
typedef struct cls_s {
    series_t series;
    uint64_t win_start;            /* current window: start time */
    uint64_t win_may_n;            /* may-leak blocks at its start */
    uint64_t win_alloc_n;          /* allocations at its start */
    uint32_t grow_windows;         /* closed windows in which may-leak grew, in all */
    uint32_t flat_run;             /* consecutive closed windows without growth */
    uint32_t windows;              /* closed windows */
    uint32_t evict_windows;        /* closed windows since evictions were first seen */
    uint64_t evict_since;          /* when the first eviction was seen (0: none yet) */
    uint32_t episodes;             /* growth runs with allocations (separated by >= 2 flat windows) */
    uint32_t ep_windows;           /* growth windows with allocations in the current run */
    uint64_t ep_start, ep_end;     /* the current run: first window's start, last window's end */
    uint64_t first_grow;           /* start of the first window in which may-leak grew */
    /* Sampled stacks (cls_in_t.rate_b): how fast they grew, and when the
     * counters last moved, to tell a quiet spell from a stop. */
    uint64_t t0, may_n0;           /* the first expiry: when, may-leak blocks then */
    uint64_t grow_t, grow_n;       /* the last tick at which may-leak grew, its count then */
    uint64_t alloc_t, alloc_n;     /* the last tick at which allocations grew, their count then */
    uint64_t leak_t;               /* the last tick whose verdict was leak (0: none) */
} cls_t;

/* The verdict for a stack. */
typedef struct verdict_s {
    int klass;                     /* CLASS_* */
    double confidence;             /* 0..1 */
    double growth_per_min;         /* live bytes per minute (regression) */
} verdict_t;

/* Inputs: the stack's counters now. */
typedef struct cls_in_s {
    uint64_t exp_n, fexp_n;        /* expired ever; expired and freed later */
    uint64_t may_n, may_b;         /* expired and live */
    uint64_t live_n, live_b;
    uint64_t alloc_n;
    uint64_t rate_b;               /* its blocks are sampled every rate_b bytes on average
                                    * (counts are estimates that move one sample at a
                                    * time); 0: every block is recorded */
    int ending;                    /* the process's last verdict: it began to end now */
} cls_in_t;

void series_init(series_t *s, uint64_t interval_ns);

/* Releases the points (series_init makes it usable again). */
void series_free(series_t *s);

/* Decodes the s->n points, oldest first, into out[SERIES_CAP]. */
void series_decode(const series_t *s, spt_t *out);

/* Releases a stack's classification state. */
void classify_free(cls_t *c);

/* Adds a point at t (a point closer than interval to the last one replaces it). */
void series_add(series_t *s, uint64_t t, uint64_t live_b, uint64_t live_n, uint64_t may_b);
/* series_add with the memory account's columns (m NULL: none). */
void series_add_mem(series_t *s, mem_series_t *m, uint64_t t, uint64_t live_b, uint64_t live_n,
                    uint64_t may_b, const mem_point_t *mp);

/* Least-squares slope of live bytes over the points with t >= since, in
 * bytes per minute; 0 with fewer than 3 points. */
double series_slope_per_min(const series_t *s, uint64_t since, double *r2);

/* Starts a stack's state at its first expiry. */
void classify_init(cls_t *c, uint64_t now, uint64_t expire_ns, const cls_in_t *in);

/* Updates state at now (a sample, maybe closing a window of expire_ns) and
 * returns the verdict. c may be NULL for a stack with no expiry yet. Cheap:
 * O(SERIES_CAP) at most. */
verdict_t classify_tick(cls_t *c, uint64_t now, uint64_t expire_ns, const cls_in_t *in);

/* "leak", "growing", ... ("" for CLASS_NONE). */
const char *classify_name(int klass);

/* CLASS_* for a name, or -1. */
int classify_parse(const char *name);

/* How much a class weighs in the rank (rank = weight x confidence x may-leak bytes). */
double classify_weight(int klass);

#endif
