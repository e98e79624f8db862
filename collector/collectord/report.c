/* collectord's leak-report engine: candidates, ranking, groups by executable, stack reports, store records. */
#include "report.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <fnmatch.h>
#include <malloc.h>
#include <stddef.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "frame.h"
#include "proto/stackwatch.pb-c.h"
#include "clock.h"
#include "state.h"
#include "symq.h"
#include "sym.h"
#include "trig.h"
#include "classify.h"
#include "store.h"

#define SYM_REDO_NS (1000ull * 1000000) /* a degraded stack is symbolized again at most this often */

void *ra_alloc(ra_t *ra, size_t size)
{
    if (ra->n == ra->cap) {
        size_t ncap = ra->cap ? ra->cap * 2 : 64;
        void **nb = realloc(ra->blocks, ncap * sizeof *nb);
        if (!nb)
            return NULL;
        ra->blocks = nb;
        ra->cap = ncap;
    }
    void *p = calloc(1, size ? size : 1);
    if (p) {
        ra->blocks[ra->n++] = p;
        ra->bytes += size;
    }
    return p;
}

void ra_free(ra_t *ra)
{
    for (size_t i = 0; i < ra->n; i++)
        free(ra->blocks[i]);
    free(ra->blocks);
    int trim = ra->bytes + ra->cap * sizeof *ra->blocks >= RA_TRIM_BYTES;
    ra->blocks = NULL;
    ra->n = ra->cap = 0;
    ra->bytes = 0;
    if (trim)
        malloc_trim(0);
}

static uint64_t mono_to_ms(uint64_t mono);

static const char *state_name(int st)
{
    switch (st) {
    case CLIENT_CONNECTED: return "connected";
    case CLIENT_EXITED: return "exited";
    case CLIENT_DETACHED: return "detached";
    default: return "lost";
    }
}

static Stackwatch__Count *count(ra_t *ra, uint64_t n, uint64_t b)
{
    Stackwatch__Count *c = ra_alloc(ra, sizeof *c);
    if (!c)
        return NULL;
    stackwatch__count__init(c);
    c->count = n;
    c->bytes = b;
    return c;
}

Stackwatch__ScanResult *report_scan_result(ra_t *ra, const client_t *c)
{
    const scan_info_t *si = &c->scan_last;
    Stackwatch__ScanResult *r = ra_alloc(ra, sizeof *r);
    if (!r)
        return NULL;
    stackwatch__scan_result__init(r);
    r->pid = c->pid;
    r->time_ms = si->time_ms;
    r->pause_us = si->pause_us;
    r->duration_us = si->dur_us;
    r->cpu_us = si->cpu_us;
    r->threads = si->threads;
    r->blocks = count(ra, si->blocks_n, si->blocks_b);
    r->reachable = count(ra, si->reach_n, si->reach_b);
    r->unreachable = count(ra, si->unreach_n, si->unreach_b);
    r->indirect = count(ra, si->indirect_n, si->indirect_b);
    r->uncertain = count(ra, si->unc_n, si->unc_b);
    r->root_bytes = si->root_bytes;
    r->read_bytes = si->read_bytes;
    r->pristine_bytes = si->pristine_bytes;
    r->heap_roots = si->heap_roots;
    r->busy_threads = si->busy_threads;
    r->note = (char *)(si->heap_roots
                           ? "tracking is incomplete (attached, sampled or events lost): the "
                             "heap outside tracked blocks counted as roots, so unreachable is "
                             "a lower bound"
                           : "roots: registers, stacks, module data, other writable memory; "
                             "the malloc heap only through chains from them");
    return r;
}

Stackwatch__ClientInfo *report_client_info(ra_t *ra, const client_t *c, uint64_t now)
{
    Stackwatch__ClientInfo *ci = ra_alloc(ra, sizeof *ci);
    if (!ci)
        return NULL;
    stackwatch__client_info__init(ci);
    ci->pid = c->pid;
    ci->ppid = c->ppid;
    ci->exe = c->exe ? c->exe : (char *)"";
    ci->n_argv = c->argc;
    ci->argv = c->argv;
    ci->state = (char *)(c->ending && c->state == CLIENT_CONNECTED ? "ending"
                                                                  : state_name(c->state));
    ci->events = c->events;
    ci->dropped = c->a_dropped;
    ci->failed_calls = c->a_failed;
    ci->unknown_frees = c->unknown_frees;
    ci->live = count(ra, c->live_n, c->live_b);
    ci->start_realtime_ns = c->start_realtime_ns;
    uint64_t end = c->frozen ? c->end_ts : now;
    ci->duration_ms = end > c->first_mono ? (end - c->first_mono) / 1000000u : 0;
    ci->gaps = c->gaps;
    /* The gaps' sum here, or the agent's own total (from before this
     * record existed too, e.g. across a collectord restart): the larger. */
    ci->lost_events = (c->lost_events > c->a_lost_disc ? c->lost_events : c->a_lost_disc) +
                      c->lost_stale;
    ci->stacks = c->nstacks;
    ci->unwind_failures = c->a_unwind_fail;
    ci->intern_full = c->a_intern_full;
    ci->agent_bytes = c->a_ring_bytes + c->a_table_bytes + c->a_sample_set_bytes +
                      c->a_scratch_bytes;
    ci->threads = (uint32_t)c->a_threads;
    ci->late_events = c->late_events;
    ci->table_full = c->table_full;
    ci->implied_frees = c->implied_frees;
    ci->python_version = c->python_version;
    ci->python_status = c->python_status ? c->python_status : (char *)"";
    ci->notes = c->notes;
    ci->mark_ms = c->mark_ts ? mono_to_ms(c->mark_ts) : 0;
    ci->sample_bytes = c->sample_bytes;
    ci->python_allocators = (char *)c->py_allocators;
    ci->python_sample_bytes = c->py_sample_bytes;
    ci->python_hooked = c->py_hooked;
    ci->total_allocs = c->a_total_allocs;
    ci->total_alloc_bytes = c->a_total_alloc_b;
    ci->total_frees = c->a_total_frees;
    ci->sample_overflow = c->a_sample_overflow;
    ci->stack_cache_hits = c->a_sc_hits;
    ci->firings = c->a_firings;
    ci->notes_dropped = c->a_notes_dropped;
    ci->max_live = c->max_live;
    ci->end_reason = (char *)c->end_reason;
    ci->after_end = c->after_end;
    ci->armed_sites_full = c->a_sites_full;
    ci->attached = c->attached;
    ci->rss_bytes = c->rss_b;
    ci->rss_start_bytes = c->rss_start_b;
    ci->heap_bytes = c->heap_b;
    ci->heap_free_bytes = c->heap_free_b;
    ci->heap_mmap_bytes = c->heap_mmap_b;
    ci->heap_start_bytes = c->heap_start_b;
    ci->pyarena_growth_bytes = c->pyarena_growth_b;
    ci->pyarena_known = c->pyarena_known;
    client_mem(c, &ci->collector_stack_bytes, &ci->collector_block_bytes);
    if (c->scan_ok && !(ci->scan = report_scan_result(ra, c)))
        return NULL;
    return ci;
}

/* ---------------------------------------------------------------- leak selection */

/* What one stack contributes to a report: all time, or since its client's
 * mark (then only blocks allocated after it count). */
typedef struct fig_s {
    uint64_t may_n, may_b, exp_n, exp_b, fexp_n, fexp_b;
    uint64_t alloc_n, alloc_b, free_n, free_b, live_n, live_b;
    uint64_t exit_n, exit_b, unc_n, unc_b;
    uint64_t un_n, un_b, re_n, re_b;  /* the last scan: unreachable / reachable, still live */
    uint64_t ind_n, ind_b;            /* ... of unreachable, lost indirectly */
    uint64_t oldest;       /* oldest live block's allocation time, 0 none */
} fig_t;

typedef struct cand_s {
    client_t *c;           /* NULL for a stored process's stack */
    cstack_t *s;           /* NULL for a stack known only from the store */
    const Stackwatch__StackReport *arch; /* the stored stack (alone, or merged into s) */
    const Stackwatch__ClientInfo *aci;   /* the stored process, when c is NULL */
    uint64_t id;           /* stack id */
    uint32_t pid;
    uint64_t sample_bytes;
    int klass;             /* CLASS_* */
    double conf, growth;
    fig_t f;               /* this stack's figures (summed over the group, by exe) */
    uint64_t sig;          /* by exe: executable + frames by module offset */
    uint32_t first;        /* by exe: the group's first member in the member list */
    uint32_t nmembers;
    double rank;
    uint64_t owns_n, owns_b; /* other stacks' blocks its direct lost blocks own (last scan) */
} cand_t;

/* Per stack of one client, from one walk over its live blocks. */
typedef struct walk_s {
    uint64_t oldest;                     /* any live block */
    uint64_t un_n, un_b, re_n, re_b;     /* live blocks the last scan found unreachable / reachable */
    uint64_t ind_n, ind_b;               /* ... of unreachable, lost indirectly */
    uint64_t m_may_n, m_may_b, m_live_n, m_live_b, m_oldest; /* allocated after the mark */
} walk_t;

typedef struct walk_ctx_s {
    walk_t *w;
    uint32_t cap;
    uint64_t mark;
    const client_t *c;
} walk_ctx_t;

static void walk_block(void *ctx, atab_ent_t *e)
{
    walk_ctx_t *o = ctx;
    const cstack_t *s = cstack_at(o->c, e->stack);
    if (!s || s->pos >= o->cap)
        return;
    walk_t *w = &o->w[s->pos];
    if (!w->oldest || e->ts < w->oldest)
        w->oldest = e->ts;
    if (e->flags & ATAB_F_SCANNED) {
        uint64_t wn, wb;
        client_weight(o->c, e->size, e->flags, &wn, &wb);
        if (e->flags & ATAB_F_UNREACH) {
            w->un_n += wn;
            w->un_b += wb;
            if (e->flags & ATAB_F_INDIRECT) {
                w->ind_n += wn;
                w->ind_b += wb;
            }
        } else {
            w->re_n += wn;
            w->re_b += wb;
        }
    }
    if (o->mark && e->ts >= o->mark) {
        uint64_t wn, wb;
        client_weight(o->c, e->size, e->flags, &wn, &wb);
        w->m_live_n += wn;
        w->m_live_b += wb;
        if (e->flags & ATAB_F_EXPIRED) {
            w->m_may_n += wn;
            w->m_may_b += wb;
        }
        if (!w->m_oldest || e->ts < w->m_oldest)
            w->m_oldest = e->ts;
    }
}

static void fig_of(fig_t *f, const client_t *c, const cstack_t *s, const walk_t *w, int since)
{
    memset(f, 0, sizeof *f);
    if (since) {
        if (!c->mark_ts)
            return; /* never marked: nothing counts as after the mark */
        f->alloc_n = s->alloc_n - s->mark_alloc_n;
        f->alloc_b = s->alloc_b - s->mark_alloc_b;
        f->free_n = s->free_n - s->mark_free_n;
        f->free_b = s->free_b - s->mark_free_b;
        if (c->frozen) {
            /* Ended: the figures kept at its end (the table may be gone). */
            f->may_n = f->exp_n = s->mend_may_n;
            f->may_b = f->exp_b = s->mend_may_b;
            f->live_n = f->exit_n = s->mend_live_n;
            f->live_b = f->exit_b = s->mend_live_b;
            f->oldest = s->mend_oldest;
            return;
        }
        f->may_n = f->exp_n = w ? w->m_may_n : 0;
        f->may_b = f->exp_b = w ? w->m_may_b : 0;
        f->live_n = w ? w->m_live_n : 0;
        f->live_b = w ? w->m_live_b : 0;
        f->oldest = w ? w->m_oldest : 0;
        return;
    }
    f->may_n = s->exp_n - s->fexp_n;
    f->may_b = s->exp_b - s->fexp_b;
    f->exp_n = s->exp_n;
    f->exp_b = s->exp_b;
    f->fexp_n = s->fexp_n;
    f->fexp_b = s->fexp_b;
    f->alloc_n = s->alloc_n;
    f->alloc_b = s->alloc_b;
    f->free_n = s->free_n;
    f->free_b = s->free_b;
    f->live_n = s->alloc_n - s->free_n;
    f->live_b = s->alloc_b - s->free_b;
    f->exit_n = s->exit_live_n;
    f->exit_b = s->exit_live_b;
    f->unc_n = s->unc_n;
    f->unc_b = s->unc_b;
    if (c->frozen) {
        /* Ended: the last scan's verdicts on what was live at the end. */
        f->un_n = s->end_un_n;
        f->un_b = s->end_un_b;
        f->re_n = s->end_re_n;
        f->re_b = s->end_re_b;
        f->ind_n = s->end_ind_n;
        f->ind_b = s->end_ind_b;
    } else if (w) {
        f->un_n = w->un_n;
        f->un_b = w->un_b;
        f->re_n = w->re_n;
        f->re_b = w->re_b;
        f->ind_n = w->ind_n;
        f->ind_b = w->ind_b;
    }
    f->oldest = c->frozen ? s->oldest_live_ts : (w ? w->oldest : 0);
}

static void fig_add(fig_t *a, const fig_t *b)
{
    uint64_t *x = (uint64_t *)a;
    const uint64_t *y = (const uint64_t *)b;
    for (size_t i = 0; i < offsetof(fig_t, oldest) / sizeof(uint64_t); i++)
        x[i] += y[i];
    if (b->oldest && (!a->oldest || b->oldest < a->oldest))
        a->oldest = b->oldest;
}

static double rank_of(const cand_t *cd)
{
    /* A direct leak ranks with what it drags along (issue 19.5). */
    return classify_weight(cd->klass) * cd->conf * (double)(cd->f.may_b + cd->owns_b);
}

/* Rank by cause, over one client's candidates cands[first..n) (built from
 * its slist, not merged by exe): a stack whose lost blocks are all owned by
 * another stack's ranks right after its largest owner, so the root comes
 * first and what it drags along follows. owns_* must be set already. */
static void rank_by_cause(const client_t *c, cand_t *cands, size_t first, size_t n)
{
    if (!c->nscan_own || n <= first)
        return;
    int32_t *at = malloc(c->nstacks * sizeof *at); /* slist position -> candidate */
    if (!at)
        return;
    for (uint32_t i = 0; i < c->nstacks; i++)
        at[i] = -1;
    for (size_t i = first; i < n; i++)
        if (cands[i].s && cands[i].s->pos < c->nstacks)
            at[cands[i].s->pos] = (int32_t)i;
    /* scan_own is sorted by stack, largest owner first within it. */
    for (size_t k = 0; k < c->nscan_own; k++) {
        const scan_own_t *o = &c->scan_own[k];
        if (k && c->scan_own[k - 1].stack == o->stack)
            continue; /* not the largest owner */
        const cstack_t *s = cstack_at(c, o->stack), *os = cstack_at(c, o->owner);
        if (!s || !os || s == os || s->pos >= c->nstacks || os->pos >= c->nstacks)
            continue;
        int32_t ci = at[s->pos], oi = at[os->pos];
        if (ci < 0 || oi < 0)
            continue;
        cand_t *cd = &cands[ci];
        if (!cd->f.un_n || cd->f.ind_n != cd->f.un_n || cd->owns_n)
            continue; /* some of it is lost directly, or it owns in turn: its own rank */
        /* Mostly lost (not a live structure that also lost a few): it
         * goes where its owner is, just after it. */
        if (cd->f.un_b * 2 >= cd->f.may_b)
            cd->rank = nextafter(cands[oi].rank, 0.0);
    }
    free(at);
}

static int by_rank;
static int for_store; /* building a record for the store: exe signatures wanted */

static int cand_cmp(const void *a, const void *b)
{
    const cand_t *ca = a, *cb = b;
    const fig_t *x = &ca->f, *y = &cb->f;
    if (by_rank && ca->rank != cb->rank)
        return ca->rank > cb->rank ? -1 : 1;
    if (x->may_b != y->may_b)
        return x->may_b > y->may_b ? -1 : 1;
    if (x->exit_b != y->exit_b)
        return x->exit_b > y->exit_b ? -1 : 1;
    if (x->live_b != y->live_b)
        return x->live_b > y->live_b ? -1 : 1;
    if (x->alloc_n != y->alloc_n)
        return x->alloc_n > y->alloc_n ? -1 : 1;
    if (ca->id != cb->id)
        return ca->id < cb->id ? -1 : 1;
    return ca->pid < cb->pid ? -1 : ca->pid > cb->pid;
}

static int sig_cmp(const void *a, const void *b)
{
    uint64_t x = ((const cand_t *)a)->sig, y = ((const cand_t *)b)->sig;
    return x < y ? -1 : x > y;
}

static int exe_matches(const char *glob, const client_t *c)
{
    if (!glob || !*glob)
        return 1;
    const char *exe = c->exe ? c->exe : "";
    const char *base = strrchr(exe, '/') ? strrchr(exe, '/') + 1 : exe;
    return fnmatch(glob, exe, 0) == 0 || fnmatch(glob, base, 0) == 0;
}

static int wanted(const Stackwatch__QueryLeaks *q, int klass, const cand_t *cd, int ended)
{
    const fig_t *f = &cd->f;
    if (klass > 0 && cd->klass != klass)
        return 0;
    if (q->min_bytes && f->may_b < q->min_bytes)
        return 0;
    if (q->all)
        return f->alloc_n > 0 || f->live_n > 0;
    return f->may_n > 0 || (ended && f->exit_n > 0);
}

/* A stack's frames as module + offset: the same in every process of one
 * executable, whatever ASLR did. */
static uint64_t stack_sig(const client_t *c, const cstack_t *s)
{
    uint64_t h = 1469598103934665603ULL;
    const char *exe = c->exe ? c->exe : "";
    for (const char *p = exe; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    const cmod_t *hint = NULL;
    for (uint32_t i = 0; i < s->npcs; i++) {
        uint64_t v = cstack_pc(c, s, i);
        const cmod_t *m = client_module_near(c, v, s->gen, &hint);
        if (m) {
            v -= m->bias;
            for (const char *p = m->path; *p; p++)
                h = (h ^ (unsigned char)*p) * 1099511628211ULL;
        }
        h = (h ^ v) * 1099511628211ULL;
    }
    return h;
}

/* Frames of a stack: symbolized, or module+offset when not (yet). */
/* The store's frame table while a record is built (for_store): each
 * distinct frame once (its strings are collectord's own, compared by
 * address), by index in the order first met; stacks refer to it
 * (StackReport.frame_refs). A numba process's 1.6 M frames are ~16,000
 * distinct ones: the record went past the store's 256 MiB limit with a
 * Frame per frame, and built 220 MB of them first. */
typedef struct fint_s {
    Stackwatch__Frame **v; /* by index */
    uint32_t n, cap;
    uint32_t *slot;        /* index + 1; 0 empty */
    uint32_t mask;
} fint_t;
static fint_t fint;

static uint64_t frame_hash(const Stackwatch__Frame *f)
{
    uint64_t h = f->addr * 0x9e3779b97f4a7c15ull;
    h ^= (uint64_t)(uintptr_t)f->function * 0xbf58476d1ce4e5b9ull;
    h ^= (uint64_t)(uintptr_t)f->file * 0x94d049bb133111ebull;
    h ^= (uint64_t)(uintptr_t)f->module + ((uint64_t)f->line << 32) + f->is_inline;
    return h ^ (h >> 29);
}

static int frame_same(const Stackwatch__Frame *a, const Stackwatch__Frame *b)
{
    return a->addr == b->addr && a->module == b->module && a->function == b->function &&
           a->offset == b->offset && a->file == b->file && a->line == b->line &&
           a->is_inline == b->is_inline && a->build_id.data == b->build_id.data &&
           a->build_id.len == b->build_id.len && a->module_offset == b->module_offset;
}

static int fint_grow(void)
{
    uint32_t ncap = fint.cap ? fint.cap * 2 : 4096;
    Stackwatch__Frame **v = realloc(fint.v, ncap * sizeof *v);
    if (!v)
        return -ENOMEM;
    fint.v = v;
    uint32_t nslots = ncap * 2;
    uint32_t *slot = calloc(nslots, sizeof *slot);
    if (!slot)
        return -ENOMEM;
    fint.cap = ncap;
    fint.mask = nslots - 1;
    free(fint.slot);
    fint.slot = slot;
    for (uint32_t i = 0; i < fint.n; i++) {
        uint32_t h = (uint32_t)frame_hash(fint.v[i]) & fint.mask;
        while (fint.slot[h])
            h = (h + 1) & fint.mask;
        fint.slot[h] = i + 1;
    }
    return 0;
}

/* The index of a frame equal to *f in the table (a copy made in ra if
 * new), or -ENOMEM. */
static long fint_get(ra_t *ra, const Stackwatch__Frame *f)
{
    if (fint.n == fint.cap && fint_grow() < 0)
        return -ENOMEM;
    uint32_t h = (uint32_t)frame_hash(f) & fint.mask;
    for (; fint.slot[h]; h = (h + 1) & fint.mask)
        if (frame_same(fint.v[fint.slot[h] - 1], f))
            return fint.slot[h] - 1;
    Stackwatch__Frame *nf = ra_alloc(ra, sizeof *nf);
    if (!nf)
        return -ENOMEM;
    *nf = *f;
    fint.v[fint.n] = nf;
    fint.slot[h] = ++fint.n;
    return fint.n - 1;
}

static void fint_free(void)
{
    free(fint.v);
    free(fint.slot);
    memset(&fint, 0, sizeof fint);
}

/* Frame i of r is f, by its entry in the store's table (for_store; r's
 * frames and frame_refs arrays allocated). */
static int ref_frame(ra_t *ra, Stackwatch__StackReport *r, size_t i, const Stackwatch__Frame *f)
{
    long k = fint_get(ra, f);
    if (k < 0)
        return (int)k;
    r->frame_refs[i] = (uint32_t)k;
    r->frames[i] = fint.v[k];
    return 0;
}

/* A store record's stack with frames of its own (from an earlier record):
 * its references into this record's table too. */
static int frames_by_ref(ra_t *ra, Stackwatch__StackReport *r)
{
    if (!for_store || !r->n_frames)
        return 0;
    Stackwatch__Frame **old = r->frames;
    r->frames = ra_alloc(ra, r->n_frames * sizeof *r->frames);
    if (!(r->frame_refs = ra_alloc(ra, r->n_frames * sizeof *r->frame_refs)) || !r->frames)
        return -ENOMEM;
    for (size_t i = 0; i < r->n_frames; i++)
        if (ref_frame(ra, r, i, old[i]) < 0)
            return -ENOMEM;
    r->n_frame_refs = r->n_frames;
    return 0;
}

static int fill_frames(ra_t *ra, const client_t *c, const cstack_t *s, Stackwatch__StackReport *r)
{
    const symres_t *sr = cstack_sym(c, s);
    uint32_t skip = sr && s->skip < sr->n ? s->skip : 0;
    uint32_t n = sr ? sr->n - skip : s->npcs;
    r->skipped = skip;
    if (n == 0)
        return 0;
    r->frames = ra_alloc(ra, n * sizeof *r->frames);
    Stackwatch__Frame one, *fs = for_store ? &one : ra_alloc(ra, n * sizeof *fs);
    if (for_store && !(r->frame_refs = ra_alloc(ra, n * sizeof *r->frame_refs)))
        return -ENOMEM;
    if (!r->frames || !fs)
        return -ENOMEM;
    const cmod_t *hint = NULL;
    for (uint32_t i = 0; i < n; i++) {
        Stackwatch__Frame *f = for_store ? &one : &fs[i];
        stackwatch__frame__init(f);
        uint64_t pc = sr ? sr->f[skip + i].addr : cstack_pc(c, s, i);
        f->addr = pc;
        const cmod_t *m = client_module_near(c, pc, s->gen, &hint);
        if (m) {
            f->module = m->path;
            f->module_offset = pc - m->bias;
            f->build_id.data = (uint8_t *)m->build_id;
            f->build_id.len = m->build_id_len;
        }
        if (sr) {
            const symframe_t *sf = &sr->f[skip + i];
            if (sf->module && !m) {
                f->module = (char *)sf->module;
            }
            if (sf->function) {
                f->function = (char *)sf->function;
                f->offset = sf->offset;
            }
            if (sf->file) {
                f->file = (char *)sf->file;
                f->line = sf->line;
            }
            f->is_inline = sf->is_inline;
        }
        if (for_store) {
            if (ref_frame(ra, r, i, f) < 0)
                return -ENOMEM;
        } else {
            r->frames[i] = f;
        }
    }
    r->n_frames = n;
    r->n_frame_refs = for_store ? n : 0;
    return 0;
}

static const client_t *sort_client;

/* Blamed: blocks that expired and stay live; after the process ended, any
 * block it still held. A block captured a moment before its free is live
 * but not blamed. */
static int tb_blamed(const client_t *c, const pytb_t *t)
{
    return t->may_n > 0 || (c->frozen && t->live_n > 0);
}

/* Blamed first: most may-leak bytes, then live bytes, then captures. */
static int tb_cmp(const void *a, const void *b)
{
    const pytb_t *x = &sort_client->pytbs[*(const uint32_t *)a];
    const pytb_t *y = &sort_client->pytbs[*(const uint32_t *)b];
    int bx = tb_blamed(sort_client, x), by = tb_blamed(sort_client, y);
    if (bx != by)
        return bx ? -1 : 1;
    if (x->may_b != y->may_b)
        return x->may_b > y->may_b ? -1 : 1;
    if (x->live_b != y->live_b)
        return x->live_b > y->live_b ? -1 : 1;
    if (x->live_n != y->live_n)
        return x->live_n > y->live_n ? -1 : 1;
    return x->captures > y->captures ? -1 : x->captures < y->captures;
}

/* Why a stack of a Python client has no blamed Python line, in one word
 * (StackReport.python_missing); "" when it has one or is not Python.
 * "pending": tracebacks were captured and some of their blocks are live,
 * but none has outlived the expire time yet (captures start when a stack
 * turns may-leak, so its first verdict comes one expire time later). */
static const char *python_missing(const client_t *c, const cstack_t *s, uint32_t ntb, int blamed,
                                  int pending)
{
    static const char *const words[4] = { "", "gil-released", "no-frame", "unsupported" };
    if (blamed)
        return "";
    if (pending)
        return "pending";
    if (!c->python_version)
        return c->python_status && strncmp(c->python_status, "CPython", 7) == 0 ? "unsupported"
                                                                                : "";
    uint32_t best = 0;
    for (uint32_t k = 1; k < 4; k++)
        if (s->py_missing[k] > s->py_missing[best])
            best = k;
    if (best)
        return words[best];
    /* Captures whose blocks were all freed, on a stack with may-leak
     * blocks: the leaking blocks' line is still to be captured. */
    return !ntb || s->exp_n > s->fexp_n ? "not-captured" : "";
}

static int fill_python(ra_t *ra, const client_t *c, const cstack_t *s, Stackwatch__StackReport *r)
{
    uint32_t n = 0;
    int blamed = 0, pending = 0;
    for (uint32_t i = 0; i < c->npytbs; i++)
        if (c->pytbs[i].stack == s->index) {
            n++;
            blamed |= tb_blamed(c, &c->pytbs[i]);
            pending |= c->pytbs[i].live_n > 0;
        }
    r->python_missing = (char *)python_missing(c, s, n, blamed, pending);
    if (!n)
        return 0;
    uint32_t *idx = ra_alloc(ra, n * sizeof *idx);
    r->python = ra_alloc(ra, n * sizeof *r->python);
    if (!idx || !r->python)
        return -ENOMEM;
    n = 0;
    for (uint32_t i = 0; i < c->npytbs; i++)
        if (c->pytbs[i].stack == s->index)
            idx[n++] = i;
    sort_client = c;
    qsort(idx, n, sizeof *idx, tb_cmp);
    for (uint32_t k = 0; k < n; k++) {
        const pytb_t *tb = &c->pytbs[idx[k]];
        Stackwatch__PyTraceback *pt = ra_alloc(ra, sizeof *pt);
        if (!pt)
            return -ENOMEM;
        stackwatch__py_traceback__init(pt);
        pt->captures = tb->captures;
        pt->live = count(ra, tb->live_n, tb->live_b);
        pt->expired = count(ra, tb->exp_n, tb->exp_b);
        pt->freed = tb->freed;
        pt->truncated = tb->truncated;
        pt->may_leak = count(ra, tb->may_n, tb->may_b);
        pt->blamed = tb_blamed(c, tb);
        pt->text = tb->text ? tb->text : (char *)"";
        if (tb->nframes) {
            pt->frames = ra_alloc(ra, tb->nframes * sizeof *pt->frames);
            Stackwatch__PyFrame *fs = ra_alloc(ra, tb->nframes * sizeof *fs);
            if (!pt->frames || !fs)
                return -ENOMEM;
            for (uint32_t i = 0; i < tb->nframes; i++) {
                stackwatch__py_frame__init(&fs[i]);
                fs[i].file = (char *)(tb->frames[i].file ? tb->frames[i].file : "");
                fs[i].function = (char *)(tb->frames[i].function ? tb->frames[i].function : "");
                fs[i].line = tb->frames[i].line;
                pt->frames[i] = &fs[i];
            }
            pt->n_frames = tb->nframes;
        }
        r->python[r->n_python++] = pt;
    }
    return 0;
}

/* Wall-clock offset of the collector's monotonic clock, for plot times. */
static uint64_t mono_to_ms(uint64_t mono)
{
    struct timespec rt, mt;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mt);
    int64_t off = ((int64_t)rt.tv_sec - (int64_t)mt.tv_sec) * 1000000000ll +
                  ((int64_t)rt.tv_nsec - (int64_t)mt.tv_nsec);
    return (uint64_t)((int64_t)mono + off) / 1000000u;
}

/* m: the process's memory account at the series' times (NULL for a stack). */
static int fill_series(ra_t *ra, const series_t *sr, const mem_series_t *m,
                       Stackwatch__Sample ***out, size_t *n)
{
    if (!sr || !sr->n)
        return 0;
    *out = ra_alloc(ra, sr->n * sizeof **out);
    Stackwatch__Sample *pts = ra_alloc(ra, sr->n * sizeof *pts);
    if (!*out || !pts)
        return -ENOMEM;
    spt_t pt[SERIES_CAP];
    series_decode(sr, pt);
    for (uint32_t i = 0; i < sr->n; i++) {
        stackwatch__sample__init(&pts[i]);
        pts[i].t_ms = mono_to_ms(pt[i].t);
        pts[i].live_bytes = pt[i].live_b;
        pts[i].live_count = pt[i].live_n;
        pts[i].may_leak_bytes = pt[i].may_b;
        if (m) {
            pts[i].rss_bytes = m->rss_b[i];
            pts[i].heap_bytes = m->heap_b[i];
            pts[i].heap_free_bytes = m->heap_free_b[i];
        }
        (*out)[i] = &pts[i];
    }
    *n = sr->n;
    return 0;
}

/* A stored stack's figures; with as_uncertain its live blocks (whose fate
 * after the collectord restart is unknown) count as uncertain too. */
static void fig_of_report(fig_t *f, const Stackwatch__StackReport *r, int as_uncertain)
{
    memset(f, 0, sizeof *f);
    f->may_n = r->may_leak->count, f->may_b = r->may_leak->bytes;
    f->exp_n = r->expired->count, f->exp_b = r->expired->bytes;
    f->fexp_n = r->free_expired->count, f->fexp_b = r->free_expired->bytes;
    f->alloc_n = r->alloc->count, f->alloc_b = r->alloc->bytes;
    f->free_n = r->free->count, f->free_b = r->free->bytes;
    f->live_n = r->live->count, f->live_b = r->live->bytes;
    f->exit_n = r->exit_live->count, f->exit_b = r->exit_live->bytes;
    f->unc_n = r->uncertain->count, f->unc_b = r->uncertain->bytes;
    if (as_uncertain) {
        f->unc_n += f->live_n;
        f->unc_b += f->live_b;
    }
}

/* The entries of stack in a table sorted by stack index (scan_own_t,
 * scan_path_t: a uint32_t stack first): sets *first, returns how many. */
static size_t stack_run(const void *v, size_t n, size_t size, uint32_t stack, size_t *first)
{
    const char *base = v;
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t at;
        memcpy(&at, base + mid * size, sizeof at);
        if (at < stack)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t k = 0;
    for (uint32_t at; lo + k < n; k++) {
        memcpy(&at, base + (lo + k) * size, sizeof at);
        if (at != stack)
            break;
    }
    *first = lo;
    return k;
}

/* The stacks owning s's indirectly lost blocks, as the last scan found them. */
static int fill_owners(ra_t *ra, const client_t *c, const cstack_t *s, Stackwatch__StackReport *r)
{
    size_t lo, n = stack_run(c->scan_own, c->nscan_own, sizeof *c->scan_own, s->index, &lo);
    if (!n)
        return 0;
    r->owners = ra_alloc(ra, n * sizeof *r->owners);
    if (!r->owners)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const scan_own_t *o = &c->scan_own[lo + i];
        const cstack_t *os = cstack_at(c, o->owner);
        Stackwatch__StackOwner *x = ra_alloc(ra, sizeof *x);
        if (!x || !os)
            return os ? -1 : 0;
        stackwatch__stack_owner__init(x);
        x->stack = os->id;
        if (!(x->blocks = count(ra, o->n, o->b)))
            return -1;
        r->owners[r->n_owners++] = x;
    }
    return 0;
}

/* Why s's reachable may-leak blocks are kept, as the last scan found. */
static int fill_paths(ra_t *ra, const client_t *c, const cstack_t *s, Stackwatch__StackReport *r)
{
    size_t lo, n = stack_run(c->scan_paths, c->nscan_paths, sizeof *c->scan_paths, s->index, &lo);
    if (!n)
        return 0;
    r->kept_by = ra_alloc(ra, n * sizeof *r->kept_by);
    if (!r->kept_by)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const scan_path_t *p = &c->scan_paths[lo + i];
        Stackwatch__RetentionPath *x = ra_alloc(ra, sizeof *x);
        if (!x)
            return -1;
        stackwatch__retention_path__init(x);
        x->root = (char *)p->root;
        x->blocks = p->n;
        x->sampled = p->of_n;
        x->cut = p->cut;
        if (p->nhops && (!(x->via = ra_alloc(ra, p->nhops * sizeof *x->via)) ||
                         !(x->hops = ra_alloc(ra, p->nhops * sizeof *x->hops))))
            return -1;
        for (uint32_t k = 0; k < p->nhops; k++) {
            const scan_hop_t *h = &p->hop[k];
            Stackwatch__RetentionHop *y = ra_alloc(ra, sizeof *y);
            if (!y)
                return -1;
            stackwatch__retention_hop__init(y);
            if (h->stack != SCAN_HOP_PY) {
                const cstack_t *hs = cstack_at(c, h->stack);
                y->stack = hs ? hs->id : 0;
                x->via[x->n_via++] = y->stack;
            } else {
                y->bytes = h->size;
            }
            if (h->type < c->nscan_pytypes)
                y->type = c->scan_pytypes[h->type];
            x->hops[x->n_hops++] = y;
        }
        r->kept_by[r->n_kept_by++] = x;
    }
    return 0;
}

static Stackwatch__StackReport *stack_report(ra_t *ra, const cand_t *cd, const cand_t *members,
                                             const Stackwatch__QueryLeaks *q, uint64_t now)
{
    const client_t *c = cd->c;
    const cstack_t *s = cd->s;
    const fig_t *f = &cd->f;
    Stackwatch__StackReport *r = ra_alloc(ra, sizeof *r);
    if (!r)
        return NULL;
    if (!s) {
        /* Known only from the store: its report as kept, figures as merged
         * (its frames as decoded; references into the old record's table
         * mean nothing in this one). */
        *r = *cd->arch;
        r->n_frame_refs = 0;
        r->frame_refs = NULL;
        if (frames_by_ref(ra, r) < 0)
            return NULL;
        r->restored = 1;
        if (!q->series) {
            r->n_series = 0;
            r->series = NULL;
        }
        r->n_pids = 0;
        r->pids = NULL;
        if (c) {
            r->pid = c->pid;
            r->exe = c->exe ? c->exe : (char *)"";
        }
    } else {
        stackwatch__stack_report__init(r);
        r->id = s->id;
        r->pid = c->pid;
        r->exe = c->exe ? c->exe : (char *)"";
        r->sample_bytes = client_stack_rate(c, s); /* CPython's small objects: their own */
        r->estimate = r->sample_bytes != 0;
        r->restored = cd->arch != NULL;
        if (s->lt_n) {
            r->freed_lt_valid = 1;
            r->freed_lt_min_ms = s->lt_min / 1000000u;
            r->freed_lt_max_ms = s->lt_max / 1000000u;
            r->freed_lt_avg_ms = cstack_lt_avg_ms(s);
        }
        uint64_t end = c->frozen ? c->end_ts : now;
        r->unfreed_max_age_ms = f->oldest && end > f->oldest ? (end - f->oldest) / 1000000u : 0;
        if (cd->arch && cd->arch->unfreed_max_age_ms > r->unfreed_max_age_ms)
            r->unfreed_max_age_ms = cd->arch->unfreed_max_age_ms;
        r->truncated = s->truncated;
        r->armed = s->arm_left;
        r->exe_sig = cd->sig;
        if (c->scan_ok && (!c->frozen || !q->since_mark)) {
            r->scanned = 1;
            r->unreachable = count(ra, f->un_n, f->un_b);
            r->reachable = count(ra, f->re_n, f->re_b);
            r->unreachable_direct = count(ra, f->un_n - f->ind_n, f->un_b - f->ind_b);
            r->unreachable_indirect = count(ra, f->ind_n, f->ind_b);
            r->owns = count(ra, cd->owns_n, cd->owns_b);
            if (f->ind_n && fill_owners(ra, c, s, r) < 0)
                return NULL;
            if (f->re_n && fill_paths(ra, c, s, r) < 0)
                return NULL;
        }
    }
    if (c)
        r->state = (char *)state_name(c->state);
    if (q->by_exe)
        r->id = cd->sig;
    r->may_leak = count(ra, f->may_n, f->may_b);
    r->expired = count(ra, f->exp_n, f->exp_b);
    r->free_expired = count(ra, f->fexp_n, f->fexp_b);
    r->alloc = count(ra, f->alloc_n, f->alloc_b);
    r->free = count(ra, f->free_n, f->free_b);
    r->live = count(ra, f->live_n, f->live_b);
    r->exit_live = count(ra, f->exit_n, f->exit_b);
    r->uncertain = count(ra, f->unc_n, f->unc_b);
    /* By exe: the most severe class among the members speaks for the group. */
    int klass = cd->klass;
    double conf = cd->conf, growth = cd->growth;
    if (q->by_exe && cd->nmembers > 1) {
        r->pids = ra_alloc(ra, cd->nmembers * sizeof *r->pids);
        if (!r->pids)
            return NULL;
        r->n_pids = 0;
        growth = 0;
        for (uint32_t k = cd->first; k < cd->first + cd->nmembers; k++) {
            const cand_t *m = &members[k];
            const fig_t mf = m->f; /* the member's own figures */
            Stackwatch__PidPart *pp = ra_alloc(ra, sizeof *pp);
            if (!pp)
                return NULL;
            stackwatch__pid_part__init(pp);
            pp->pid = m->pid;
            pp->may_leak = count(ra, mf.may_n, mf.may_b);
            pp->live = count(ra, mf.live_n, mf.live_b);
            pp->alloc = count(ra, mf.alloc_n, mf.alloc_b);
            if (m->sample_bytes)
                r->estimate = 1; /* one sampled member makes the sum an estimate */
            r->pids[r->n_pids++] = pp;
            if (classify_weight(m->klass) > classify_weight(klass) ||
                (m->klass == klass && m->conf > conf)) {
                klass = m->klass;
                conf = m->conf;
            }
            growth += m->growth;
        }
    }
    r->class_ = (char *)classify_name(klass);
    r->confidence = conf;
    r->growth_bytes_per_min = growth;
    r->rank = cd->rank;
    if (!s)
        return r;
    if (q->since_mark && c->mark_ts)
        r->mark_ms = mono_to_ms(c->mark_ts);
    if (q->series && s->cls && fill_series(ra, &s->cls->series, NULL, &r->series, &r->n_series) < 0)
        return NULL;
    if (fill_frames(ra, c, s, r) < 0 || fill_python(ra, c, s, r) < 0)
        return NULL;
    if (cd->arch && !r->n_frames) {
        r->n_frames = cd->arch->n_frames;
        r->frames = cd->arch->frames;
        if (frames_by_ref(ra, r) < 0)
            return NULL;
    }
    if (cd->arch && cd->arch->n_python) {
        /* Python tracebacks from before the restart follow the live ones. */
        size_t n = r->n_python + cd->arch->n_python;
        Stackwatch__PyTraceback **py = ra_alloc(ra, n * sizeof *py);
        if (!py)
            return NULL;
        for (size_t i = 0; i < r->n_python; i++)
            py[i] = r->python[i];
        for (size_t i = 0; i < cd->arch->n_python; i++)
            py[r->n_python + i] = cd->arch->python[i];
        r->python = py;
        r->n_python = n;
    }
    return r;
}

static int push_cand(cand_t **cands, size_t *n, size_t *cap, const cand_t *cd)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        cand_t *nc = realloc(*cands, ncap * sizeof *nc);
        if (!nc)
            return -ENOMEM;
        *cands = nc;
        *cap = ncap;
    }
    (*cands)[(*n)++] = *cd;
    return 0;
}

/* The store's record a live client took over after a collectord restart. */
static const store_rec_t *merged_rec(srv_t *srv, const client_t *c)
{
    for (uint32_t i = 0; i < srv->store.n; i++)
        if (srv->store.recs[i].merged_serial == c->serial && srv->store.recs[i].sp)
            return &srv->store.recs[i];
    return NULL;
}

static int id_cmp(const void *a, const void *b)
{
    const Stackwatch__StackReport *x = *(Stackwatch__StackReport *const *)a;
    const Stackwatch__StackReport *y = *(Stackwatch__StackReport *const *)b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void cand_from_report(cand_t *cd, const Stackwatch__StackReport *r, int as_uncertain)
{
    cd->arch = r;
    cd->id = r->id;
    cd->pid = r->pid;
    cd->sample_bytes = r->sample_bytes;
    int k = classify_parse(r->class_);
    cd->klass = k > 0 ? k : CLASS_NONE;
    cd->conf = r->confidence;
    cd->growth = r->growth_bytes_per_min;
    cd->sig = r->exe_sig;
    fig_of_report(&cd->f, r, as_uncertain);
}

/* The client's candidates: its live stacks, merged by id with what a
 * collectord before a restart knew of it (rec). */
static int client_cands(srv_t *srv, client_t *c, const store_rec_t *rec,
                        const Stackwatch__QueryLeaks *q, int klass, cand_t **cands,
                        size_t *ncand, size_t *capc)
{
    walk_t *w = NULL;
    Stackwatch__StackReport **old = NULL;
    uint8_t *used = NULL;
    uint64_t *owns = NULL; /* per slist position: blocks it owns, count and bytes */
    size_t nold = 0;
    int rc = -ENOMEM;
    (void)srv;
    if (rec) {
        nold = q->since_mark ? rec->sp->n_since_mark : rec->sp->n_stacks;
        Stackwatch__StackReport **src = q->since_mark ? rec->sp->since_mark : rec->sp->stacks;
        old = malloc((nold ? nold : 1) * sizeof *old);
        used = calloc(nold ? nold : 1, 1);
        if (!old || !used)
            goto out;
        if (nold) {
            memcpy(old, src, nold * sizeof *old);
            qsort(old, nold, sizeof *old, id_cmp);
        }
    }
    size_t first = *ncand;
    if (c->nscan_own && !q->since_mark && c->nstacks) {
        owns = calloc(2 * (size_t)c->nstacks, sizeof *owns);
        if (!owns)
            goto out;
        for (size_t k = 0; k < c->nscan_own; k++) {
            const cstack_t *os = cstack_at(c, c->scan_own[k].owner);
            if (os && os->pos < c->nstacks && c->scan_own[k].owner != c->scan_own[k].stack) {
                owns[2 * os->pos] += c->scan_own[k].n;
                owns[2 * os->pos + 1] += c->scan_own[k].b;
            }
        }
    }
    if (c->atab_ok && c->nstacks && !c->frozen) {
        w = calloc(c->nstacks, sizeof *w);
        if (!w)
            goto out;
        walk_ctx_t o = { w, c->nstacks, q->since_mark ? c->mark_ts : 0, c };
        atab_each(&c->atab, walk_block, &o);
    }
    for (uint32_t i = 0; i < c->nstacks; i++) {
        cstack_t *s = c->slist[i];
        if (!s)
            continue;
        cand_t cd = { .c = c, .s = s, .nmembers = 1, .id = s->id, .pid = c->pid,
                      .sample_bytes = client_stack_rate(c, s), .klass = s->klass,
                      .conf = s->confidence, .growth = s->growth_per_min };
        fig_of(&cd.f, c, s, w ? &w[i] : NULL, q->since_mark);
        if (nold) {
            Stackwatch__StackReport key = { .id = s->id }, *kp = &key;
            Stackwatch__StackReport **hit = bsearch(&kp, old, nold, sizeof *old, id_cmp);
            if (hit) {
                fig_t of;
                fig_of_report(&of, *hit, 1);
                fig_add(&cd.f, &of);
                cd.arch = *hit;
                used[hit - old] = 1;
            }
        }
        if (!s->defined && s->alloc_n == 0 && !cd.arch)
            continue;
        if (!wanted(q, klass, &cd, c->frozen))
            continue;
        if (owns) {
            cd.owns_n = owns[2 * i];
            cd.owns_b = owns[2 * i + 1];
        }
        cd.rank = rank_of(&cd);
        cd.sig = q->by_exe || for_store ? stack_sig(c, s) : 0;
        if (push_cand(cands, ncand, capc, &cd) < 0)
            goto out;
    }
    for (size_t i = 0; i < nold; i++) {
        if (used[i])
            continue;
        cand_t cd = { .c = c, .nmembers = 1 };
        cand_from_report(&cd, old[i], 1);
        cd.pid = c->pid;
        if (!wanted(q, klass, &cd, c->frozen))
            continue;
        cd.rank = rank_of(&cd);
        if (push_cand(cands, ncand, capc, &cd) < 0)
            goto out;
    }
    rank_by_cause(c, *cands, first, *ncand);
    rc = 0;
out:
    free(owns);
    free(w);
    free(old);
    free(used);
    return rc;
}

/* 1 if a process with this pid exists on the host (traced or not). */
int report_pid_alive(uint32_t pid)
{
    return pid <= INT32_MAX && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* 1 when a stored record is served as a process of its own: read at start
 * and not taken over by a reconnected agent. */
int report_rec_served(const store_rec_t *r)
{
    return r->sp && !r->merged_serial;
}

/* Builds the leak report (of one client only, when only is set). Returns 1
 * when it is complete, 0 when some selected stack is still being symbolized
 * (and force is not set), -ENOMEM, -EINVAL (unknown class) or -ESRCH (--pid
 * names no known process). */
int report_leaks(srv_t *srv, const Stackwatch__QueryLeaks *q, int force, ra_t *ra,
                 Stackwatch__Reply *reply, client_t *only)
{
    uint64_t now = clock_now();
    size_t ncand = 0, capc = 0;
    cand_t *cands = NULL, *members = NULL; /* members: by exe, grouped */
    int rc = -ENOMEM;
    int klass = q->class_ && *q->class_ ? classify_parse(q->class_) : 0;
    if (klass < 0)
        return -EINVAL;
    Stackwatch__LeakReport *lr = ra_alloc(ra, sizeof *lr);
    if (!lr)
        return -ENOMEM;
    stackwatch__leak_report__init(lr);
    lr->expire_ms = (uint32_t)(srv->opts.expire_ns / 1000000u);
    lr->sample = (char *)"all";
    lr->now_ms = mono_to_ms(now);
    lr->by_exe = q->by_exe;
    lr->since_mark = q->since_mark;
    size_t nclients = 0;
    for (client_t *c = srv->clients.head; c; c = c->next)
        nclients++;
    nclients += srv->store.n;
    lr->clients = ra_alloc(ra, (nclients ? nclients : 1) * sizeof *lr->clients);
    if (!lr->clients)
        goto out;
    for (client_t *c = srv->clients.head; c; c = c->next) {
        if (only && c != only)
            continue;
        if ((q->pid && c->pid != q->pid) || !exe_matches(q->exe, c))
            continue;
        Stackwatch__ClientInfo *ci = report_client_info(ra, c, now);
        if (!ci)
            goto out;
        const store_rec_t *rec = merged_rec(srv, c);
        if (rec) {
            ci->restart_gap_ms = rec->merged_gap_ms;
            ci->restored = 1;
        }
        if (q->series && fill_series(ra, &c->series, &c->mseries, &ci->series, &ci->n_series) < 0)
            goto out;
        lr->clients[lr->n_clients++] = ci;
        if (c->sample_bytes) {
            /* "512k" as the agent was given it; mixed rates say so. */
            const char *mine = c->sample && *c->sample ? c->sample : "sampled";
            if (!strcmp(lr->sample, "all") || !strcmp(lr->sample, mine))
                lr->sample = (char *)mine;
            else
                lr->sample = (char *)"mixed";
        }
        if (client_cands(srv, c, rec, q, klass, &cands, &ncand, &capc) < 0)
            goto out;
    }
    /* Processes known only from the store (they ended before a restart). */
    for (uint32_t i = 0; i < srv->store.n && !only; i++) {
        const store_rec_t *rec = &srv->store.recs[i];
        if (!report_rec_served(rec))
            continue;
        Stackwatch__ClientInfo *ci = rec->sp->client;
        if (q->pid && ci->pid != q->pid)
            continue;
        if (q->exe && *q->exe) {
            const char *base = strrchr(ci->exe, '/') ? strrchr(ci->exe, '/') + 1 : ci->exe;
            if (fnmatch(q->exe, ci->exe, 0) != 0 && fnmatch(q->exe, base, 0) != 0)
                continue;
        }
        Stackwatch__ClientInfo *cc = ra_alloc(ra, sizeof *cc);
        if (!cc)
            goto out;
        *cc = *ci;
        cc->restored = 1;
        if (rec->snapshot)
            cc->state = (char *)"lost"; /* it ran when collectord stopped and never came back */
        if (!q->series) {
            cc->n_series = 0;
            cc->series = NULL;
        }
        lr->clients[lr->n_clients++] = cc;
        if (cc->sample_bytes) {
            const char *mine = cc->sample_bytes ? "sampled" : "all";
            if (strcmp(lr->sample, "all") != 0 && strcmp(lr->sample, mine) != 0)
                lr->sample = (char *)"mixed";
            else if (!strcmp(lr->sample, "all"))
                lr->sample = (char *)mine;
        }
        size_t n = q->since_mark ? rec->sp->n_since_mark : rec->sp->n_stacks;
        Stackwatch__StackReport **src = q->since_mark ? rec->sp->since_mark : rec->sp->stacks;
        for (size_t k = 0; k < n; k++) {
            cand_t cd = { .aci = ci, .nmembers = 1 };
            cand_from_report(&cd, src[k], 0);
            if (!wanted(q, klass, &cd, 1))
                continue;
            cd.rank = rank_of(&cd);
            if (push_cand(&cands, &ncand, &capc, &cd) < 0)
                goto out;
        }
    }
    if (q->pid && lr->n_clients == 0 && !report_pid_alive(q->pid)) {
        rc = -ESRCH; /* a running process may connect any moment: an empty report */
        goto out;
    }
    if (q->by_exe && ncand > 0) {
        /* Equal signatures become one group, its lead carrying the sums;
         * after sorting, a group's members are contiguous. */
        qsort(cands, ncand, sizeof *cands, sig_cmp);
        members = cands;
        cands = malloc(ncand * sizeof *cands);
        if (!cands) {
            cands = members;
            members = NULL;
            goto out;
        }
        size_t k = 0;
        for (size_t i = 0; i < ncand;) {
            size_t j = i + 1;
            while (j < ncand && members[j].sig == members[i].sig)
                j++;
            cands[k] = members[i];
            cands[k].first = (uint32_t)i;
            cands[k].nmembers = (uint32_t)(j - i);
            for (size_t m = i + 1; m < j; m++)
                fig_add(&cands[k].f, &members[m].f);
            cands[k].rank = rank_of(&cands[k]);
            k++;
            i = j;
        }
        ncand = k;
    }
    by_rank = q->by_rank;
    if (ncand > 1)
        qsort(cands, ncand, sizeof *cands, cand_cmp);
    if (q->top && ncand > q->top)
        ncand = q->top;
    int pending = 0;
    for (size_t i = 0; i < ncand; i++) {
        cstack_t *s = cands[i].s;
        if (!s || for_store)
            continue; /* a store record takes the frames as they are */
        const symres_t *sr = cstack_sym(cands[i].c, s);
        if (sr && sr->degraded && !force &&
            now - s->sym_tried >= SYM_REDO_NS) {
            /* A module could not be read then (out of fds?): again (at most
             * once a second), so its frames read as in the stacks that had it. */
            s->sym_state = SYM_NONE;
        }
        if (s->sym_state == SYM_NONE)
            symq_stack(srv, cands[i].c, s, 1); /* a report waits for it: first */
        else if (s->sym_state == SYM_PENDING && !s->sym_urgent)
            s->sym_urgent = (uint8_t)sym_promote(cands[i].c->serial, s->index);
        if (s->sym_state == SYM_PENDING)
            pending = 1;
    }
    if (pending && !force) {
        rc = 0;
        goto out;
    }
    lr->stacks = ra_alloc(ra, (ncand ? ncand : 1) * sizeof *lr->stacks);
    if (!lr->stacks)
        goto out;
    for (size_t i = 0; i < ncand; i++) {
        if (!(lr->stacks[i] = stack_report(ra, &cands[i], members, q, now)))
            goto out;
        lr->n_stacks++;
    }
    reply->body_case = STACKWATCH__REPLY__BODY_LEAKS;
    reply->leaks = lr;
    rc = 1;
out:
    free(cands);
    free(members);
    return rc;
}

/* ---------------------------------------------------------------- the store */

int report_symbolized(srv_t *s, client_t *c)
{
    int pending = 0;
    for (uint32_t i = 0; i < c->nstacks; i++) {
        cstack_t *st = c->slist[i];
        if (!st || !st->defined)
            continue;
        if (st->sym_state == SYM_NONE)
            symq_stack(s, c, st, 0); /* behind what reports and rules wait for */
        pending |= st->sym_state == SYM_PENDING;
    }
    return !pending;
}

/* Stacks with references into the store's table (every frame of a
 * store record has one: fill_frames, frames_by_ref): the record carries
 * the references only (frames left to the arena). */
static void sp_frames_by_ref(Stackwatch__StackReport **st, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (st[i]->n_frame_refs)
            st[i]->n_frames = 0;
}

int report_store_client(srv_t *s, client_t *c, int snapshot)
{
    if (!s->store.on)
        return -ENOTCONN;
    ra_t ra = { 0 };
    Stackwatch__Reply all = STACKWATCH__REPLY__INIT, since = STACKWATCH__REPLY__INIT;
    Stackwatch__QueryLeaks q = STACKWATCH__QUERY_LEAKS__INIT;
    q.all = 1;
    q.series = 1;
    q.by_rank = 0;
    for_store = 1;
    fint_free();
    int rc = report_leaks(s, &q, 1, &ra, &all, c);
    if (rc == 1 && c->mark_ts) {
        q.since_mark = 1;
        q.series = 0;
        rc = report_leaks(s, &q, 1, &ra, &since, c);
    }
    for_store = 0;
    if (rc != 1 || !all.leaks || all.leaks->n_clients != 1) {
        fint_free();
        ra_free(&ra);
        return rc < 0 ? rc : -ENOMEM;
    }
    /* The frames go by reference into the record's table. */
    sp_frames_by_ref(all.leaks->stacks, all.leaks->n_stacks);
    if (since.leaks)
        sp_frames_by_ref(since.leaks->stacks, since.leaks->n_stacks);
    Stackwatch__StoredProcess sp = STACKWATCH__STORED_PROCESS__INIT;
    sp.client = all.leaks->clients[0];
    sp.client->n_series = 0; /* the process series is re-sent below */
    sp.client->series = NULL;
    Stackwatch__Sample **pts = NULL;
    size_t npts = 0;
    if (fill_series(&ra, &c->series, &c->mseries, &pts, &npts) == 0) {
        sp.client->series = pts;
        sp.client->n_series = npts;
    }
    sp.n_stacks = all.leaks->n_stacks;
    sp.stacks = all.leaks->stacks;
    if (since.leaks) {
        sp.n_since_mark = since.leaks->n_stacks;
        sp.since_mark = since.leaks->stacks;
    }
    sp.instance = c->instance;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sp.end_realtime_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if (c->frozen) {
        uint64_t nowm = clock_now();
        uint64_t ago = nowm > c->end_ts ? nowm - c->end_ts : 0;
        sp.end_realtime_ns -= ago < sp.end_realtime_ns ? ago : 0;
    }
    sp.snapshot = snapshot;
    sp.expire_ms = (uint32_t)(s->opts.expire_ns / 1000000u);
    sp.frame_table = fint.v;
    sp.n_frame_table = fint.n;
    rc = store_write(&s->store, &sp);
    fint_free();
    ra_free(&ra);
    return rc;
}
