/* The control socket's requests: ping, clients, leak reports, shutdown. */
#include "ctl.h"

#include <errno.h>
#include <fnmatch.h>
#include <stddef.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "frame.h"
#include "proto/stackwatch.pb-c.h"
#include "srv.h"
#include "sym.h"
#include "trig.h"
#include "classify.h"

#define PARK_NS (30ull * 1000000000)   /* longest a report waits for symbolization */

/* All memory of one reply, freed at once. */
typedef struct ra_s {
    void **blocks;
    size_t n, cap;
} ra_t;

static void *ra_alloc(ra_t *ra, size_t size)
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
    if (p)
        ra->blocks[ra->n++] = p;
    return p;
}

static void ra_free(ra_t *ra)
{
    for (size_t i = 0; i < ra->n; i++)
        free(ra->blocks[i]);
    free(ra->blocks);
    ra->blocks = NULL;
    ra->n = ra->cap = 0;
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

static Stackwatch__ScanResult *scan_result(ra_t *ra, const client_t *c)
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
    r->root_bytes = si->root_bytes;
    r->read_bytes = si->read_bytes;
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

static Stackwatch__ClientInfo *client_info(ra_t *ra, const client_t *c, uint64_t now)
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
    ci->state = (char *)state_name(c->state);
    ci->events = c->events;
    ci->dropped = c->a_dropped;
    ci->failed_calls = c->a_failed;
    ci->unknown_frees = c->unknown_frees;
    ci->live = count(ra, c->live_n, c->live_b);
    ci->start_realtime_ns = c->start_realtime_ns;
    uint64_t end = c->frozen ? c->end_ts : now;
    ci->duration_ms = end > c->first_mono ? (end - c->first_mono) / 1000000u : 0;
    ci->gaps = c->gaps;
    ci->lost_events = c->lost_events + c->a_lost_disc;
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
    ci->total_allocs = c->a_total_allocs;
    ci->total_alloc_bytes = c->a_total_alloc_b;
    ci->total_frees = c->a_total_frees;
    ci->sample_overflow = c->a_sample_overflow;
    ci->stack_cache_hits = c->a_sc_hits;
    ci->firings = c->a_firings;
    ci->notes_dropped = c->a_notes_dropped;
    ci->attached = c->attached;
    if (c->scan_ok && !(ci->scan = scan_result(ra, c)))
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
    uint64_t oldest;       /* oldest live block's allocation time, 0 none */
} fig_t;

typedef struct cand_s {
    client_t *c;
    cstack_t *s;
    fig_t f;               /* this stack's figures (summed over the group, by exe) */
    uint64_t sig;          /* by exe: executable + frames by module offset */
    uint32_t first;        /* by exe: the group's first member in the member list */
    uint32_t nmembers;
    double rank;
} cand_t;

/* Per stack of one client, from one walk over its live blocks. */
typedef struct walk_s {
    uint64_t oldest;                     /* any live block */
    uint64_t un_n, un_b, re_n, re_b;     /* live blocks the last scan found unreachable / reachable */
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
        f->may_n = f->exp_n = w ? w->m_may_n : 0;
        f->may_b = f->exp_b = w ? w->m_may_b : 0;
        f->live_n = w ? w->m_live_n : 0;
        f->live_b = w ? w->m_live_b : 0;
        f->alloc_n = s->alloc_n - s->mark_alloc_n;
        f->alloc_b = s->alloc_b - s->mark_alloc_b;
        f->free_n = s->free_n - s->mark_free_n;
        f->free_b = s->free_b - s->mark_free_b;
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
    if (w) {
        f->un_n = w->un_n;
        f->un_b = w->un_b;
        f->re_n = w->re_n;
        f->re_b = w->re_b;
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

static double rank_of(const cstack_t *s, const fig_t *f)
{
    return classify_weight(s->klass) * s->confidence * (double)f->may_b;
}

static int by_rank;

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
    return ca->s->id < cb->s->id ? -1 : ca->s->id > cb->s->id;
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

static int wanted(const Stackwatch__QueryLeaks *q, int klass, const client_t *c,
                  const cstack_t *s, const fig_t *f)
{
    if (!s->defined && s->alloc_n == 0)
        return 0;
    if (klass > 0 && s->klass != klass)
        return 0;
    if (q->min_bytes && f->may_b < q->min_bytes)
        return 0;
    if (q->all)
        return f->alloc_n > 0 || f->live_n > 0;
    return f->may_n > 0 || (c->frozen && f->exit_n > 0);
}

/* A stack's frames as module + offset: the same in every process of one
 * executable, whatever ASLR did. */
static uint64_t stack_sig(const client_t *c, const cstack_t *s)
{
    uint64_t h = 1469598103934665603ULL;
    const char *exe = c->exe ? c->exe : "";
    for (const char *p = exe; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    for (uint32_t i = 0; i < s->npcs; i++) {
        const cmod_t *m = client_module_at(c, s->pcs[i], s->gen);
        uint64_t v = s->pcs[i];
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
static int fill_frames(ra_t *ra, const client_t *c, const cstack_t *s, Stackwatch__StackReport *r)
{
    const symres_t *sr = s->sym_state == SYM_DONE ? s->sym : NULL;
    uint32_t skip = sr && s->skip < sr->n ? s->skip : 0;
    uint32_t n = sr ? sr->n - skip : s->npcs;
    r->skipped = skip;
    if (n == 0)
        return 0;
    r->frames = ra_alloc(ra, n * sizeof *r->frames);
    Stackwatch__Frame *fs = ra_alloc(ra, n * sizeof *fs);
    if (!r->frames || !fs)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        Stackwatch__Frame *f = &fs[i];
        stackwatch__frame__init(f);
        uint64_t pc = sr ? sr->f[skip + i].addr : s->pcs[i];
        f->addr = pc;
        const cmod_t *m = client_module_at(c, pc, s->gen);
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
        r->frames[i] = f;
    }
    r->n_frames = n;
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

static int fill_python(ra_t *ra, const client_t *c, const cstack_t *s, Stackwatch__StackReport *r)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->npytbs; i++)
        n += c->pytbs[i].stack == s->index;
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

static int fill_series(ra_t *ra, const series_t *sr, Stackwatch__Sample ***out, size_t *n)
{
    if (!sr || !sr->n)
        return 0;
    *out = ra_alloc(ra, sr->n * sizeof **out);
    Stackwatch__Sample *pts = ra_alloc(ra, sr->n * sizeof *pts);
    if (!*out || !pts)
        return -ENOMEM;
    for (uint32_t i = 0; i < sr->n; i++) {
        stackwatch__sample__init(&pts[i]);
        pts[i].t_ms = mono_to_ms(sr->pt[i].t);
        pts[i].live_bytes = sr->pt[i].live_b;
        pts[i].live_count = sr->pt[i].live_n;
        pts[i].may_leak_bytes = sr->pt[i].may_b;
        (*out)[i] = &pts[i];
    }
    *n = sr->n;
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
    stackwatch__stack_report__init(r);
    r->id = q->by_exe ? cd->sig : s->id;
    r->pid = c->pid;
    r->exe = c->exe ? c->exe : (char *)"";
    r->state = (char *)state_name(c->state);
    if (c->scan_ok && !c->frozen) {
        r->scanned = 1;
        r->unreachable = count(ra, f->un_n, f->un_b);
        r->reachable = count(ra, f->re_n, f->re_b);
    }
    r->may_leak = count(ra, f->may_n, f->may_b);
    r->expired = count(ra, f->exp_n, f->exp_b);
    r->free_expired = count(ra, f->fexp_n, f->fexp_b);
    r->alloc = count(ra, f->alloc_n, f->alloc_b);
    r->free = count(ra, f->free_n, f->free_b);
    r->live = count(ra, f->live_n, f->live_b);
    r->exit_live = count(ra, f->exit_n, f->exit_b);
    r->uncertain = count(ra, f->unc_n, f->unc_b);
    r->estimate = c->sample_bytes != 0;
    r->sample_bytes = c->sample_bytes;
    if (s->lt_n) {
        r->freed_lt_valid = 1;
        r->freed_lt_min_ms = s->lt_min / 1000000u;
        r->freed_lt_max_ms = s->lt_max / 1000000u;
        r->freed_lt_avg_ms = cstack_lt_avg_ms(s);
    }
    uint64_t end = c->frozen ? c->end_ts : now;
    r->unfreed_max_age_ms = f->oldest && end > f->oldest ? (end - f->oldest) / 1000000u : 0;
    r->truncated = s->truncated;
    r->armed = s->arm_left;
    /* By exe: the most severe class among the members speaks for the group. */
    int klass = s->klass;
    double conf = s->confidence, growth = s->growth_per_min;
    if (q->by_exe && cd->nmembers > 1) {
        r->pids = ra_alloc(ra, cd->nmembers * sizeof *r->pids);
        if (!r->pids)
            return NULL;
        growth = 0;
        for (uint32_t k = cd->first; k < cd->first + cd->nmembers; k++) {
            const cand_t *m = &members[k];
            const fig_t mf = m->f; /* the member's own figures */
            Stackwatch__PidPart *pp = ra_alloc(ra, sizeof *pp);
            if (!pp)
                return NULL;
            stackwatch__pid_part__init(pp);
            pp->pid = m->c->pid;
            pp->may_leak = count(ra, mf.may_n, mf.may_b);
            pp->live = count(ra, mf.live_n, mf.live_b);
            pp->alloc = count(ra, mf.alloc_n, mf.alloc_b);
            if (m->c->sample_bytes)
                r->estimate = 1; /* one sampled member makes the sum an estimate */
            r->pids[r->n_pids++] = pp;
            if (classify_weight(m->s->klass) > classify_weight(klass) ||
                (m->s->klass == klass && m->s->confidence > conf)) {
                klass = m->s->klass;
                conf = m->s->confidence;
            }
            growth += m->s->growth_per_min;
        }
    }
    r->class_ = (char *)classify_name(klass);
    r->confidence = conf;
    r->growth_bytes_per_min = growth;
    r->rank = cd->rank;
    if (q->since_mark && c->mark_ts)
        r->mark_ms = mono_to_ms(c->mark_ts);
    if (q->series && s->cls && fill_series(ra, &s->cls->series, &r->series, &r->n_series) < 0)
        return NULL;
    if (fill_frames(ra, c, s, r) < 0 || fill_python(ra, c, s, r) < 0)
        return NULL;
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

/* Builds the leak report. Returns 1 when it is complete, 0 when some selected
 * stack is still being symbolized (and force is not set), -ENOMEM. */
static int build_leaks(srv_t *srv, const Stackwatch__QueryLeaks *q, int force, ra_t *ra,
                       Stackwatch__Reply *reply)
{
    uint64_t now = srv_now();
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
    lr->clients = ra_alloc(ra, (nclients ? nclients : 1) * sizeof *lr->clients);
    if (!lr->clients)
        goto out;
    for (client_t *c = srv->clients.head; c; c = c->next) {
        if ((q->pid && c->pid != q->pid) || !exe_matches(q->exe, c))
            continue;
        Stackwatch__ClientInfo *ci = client_info(ra, c, now);
        if (!ci)
            goto out;
        if (q->series && fill_series(ra, &c->series, &ci->series, &ci->n_series) < 0)
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
        walk_t *w = NULL;
        if (c->atab_ok && c->nstacks && (!c->frozen || q->since_mark)) {
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
            cand_t cd = { .c = c, .s = s, .nmembers = 1 };
            fig_of(&cd.f, c, s, w ? &w[i] : NULL, q->since_mark);
            if (!wanted(q, klass, c, s, &cd.f))
                continue;
            cd.rank = rank_of(s, &cd.f);
            if (q->by_exe)
                cd.sig = stack_sig(c, s);
            if (push_cand(&cands, &ncand, &capc, &cd) < 0) {
                free(w);
                goto out;
            }
        }
        free(w);
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
            cands[k].rank = rank_of(cands[k].s, &cands[k].f);
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
        if (s->sym_state == SYM_NONE)
            srv_sym_stack(srv, cands[i].c, s);
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

/* ---------------------------------------------------------------- requests */

static int send_reply(conn_t *c, Stackwatch__Reply *r)
{
    int rc = conn_send_msg(c, r, FRAME_MAX_CONTROL);
    if (rc < 0) {
        conn_close(c, "cannot send the reply");
        return -1;
    }
    return 0;
}

static int send_error(conn_t *c, int err, const char *msg)
{
    Stackwatch__Reply r = STACKWATCH__REPLY__INIT;
    r.error = err;
    r.message = (char *)msg;
    return send_reply(c, &r);
}

/* Replies with the rules (only rule `only` if non-zero). */
static int send_rules(conn_t *c, ra_t *ra, srv_t *s, uint32_t only)
{
    Stackwatch__RuleList rl = STACKWATCH__RULE_LIST__INIT;
    rl.rules = ra_alloc(ra, (s->trig.n + 1) * sizeof *rl.rules);
    if (!rl.rules)
        return send_error(c, -ENOMEM, "out of memory");
    for (trig_rule_t *t = s->trig.rules; t; t = t->next) {
        if (only && t->id != only)
            continue;
        Stackwatch__Rule *r = ra_alloc(ra, sizeof *r);
        if (!r)
            return send_error(c, -ENOMEM, "out of memory");
        stackwatch__rule__init(r);
        r->id = t->id;
        r->match = t->match ? t->match : (char *)"";
        r->module = t->module ? t->module : (char *)"";
        r->stack = t->stack_id;
        r->frame = t->frame;
        r->min_depth = t->min_depth;
        r->pid = t->pid;
        r->signal = t->sig;
        r->count = t->count;
        r->fired = t->fired;
        r->armed = t->armed;
        rl.rules[rl.n_rules++] = r;
    }
    Stackwatch__Reply rep = STACKWATCH__REPLY__INIT;
    rep.body_case = STACKWATCH__REPLY__BODY_RULES;
    rep.rules = &rl;
    return send_reply(c, &rep);
}

/* The newest connected client of pid, or NULL. */
static client_t *connected_client(srv_t *s, uint32_t pid)
{
    for (client_t *c = s->clients.head; c; c = c->next)
        if (c->pid == pid && c->conn && c->state == CLIENT_CONNECTED)
            return c;
    return NULL;
}

#define SCAN_PARK_NS (600ull * 1000000000)   /* a scan's reply waits at most this */

/* Scan: starts the scan on the first run and parks; answers when the
 * client's scan count has moved past the one started (conn->parked_tag). */
static int run_scan(conn_t *c, const Stackwatch__Scan *q, int force, ra_t *ra)
{
    srv_t *s = c->srv;
    char msg[600];
    client_t *cl = connected_client(s, q->pid);
    if (!c->parked_tag) {
        if (!cl) {
            snprintf(msg, sizeof msg, "pid %u is not a connected client (run it under the agent, "
                                      "or stackctl attach it first)", q->pid);
            return send_error(c, -ESRCH, msg) < 0 ? -1 : 1;
        }
        if (cl->scan_state == SCAN_ST_NONE) {
            int rc = srv_scan_start(s, cl, msg, sizeof msg);
            if (rc < 0)
                return send_error(c, rc, msg) < 0 ? -1 : 1;
        }
        c->parked_tag = cl->scan_seq + 1;
        uint64_t t = q->timeout_ms ? (uint64_t)q->timeout_ms * 1000000u : SCAN_PARK_NS;
        c->parked_until = srv_now() + t;
        return 0;
    }
    /* The client may have ended (then it is no longer "connected"). */
    for (cl = s->clients.head; cl; cl = cl->next)
        if (cl->pid == q->pid && cl->scan_seq >= c->parked_tag)
            break;
    if (!cl) {
        if (!force)
            return 0;
        snprintf(msg, sizeof msg, "the scan of pid %u did not finish in time", q->pid);
        return send_error(c, -ETIMEDOUT, msg) < 0 ? -1 : 1;
    }
    if (cl->scan_err) {
        snprintf(msg, sizeof msg, "scan of pid %u: %s", q->pid, cl->scan_msg);
        return send_error(c, cl->scan_err, msg) < 0 ? -1 : 1;
    }
    Stackwatch__Reply r = STACKWATCH__REPLY__INIT;
    r.body_case = STACKWATCH__REPLY__BODY_SCAN;
    r.scan = scan_result(ra, cl);
    if (!r.scan)
        return send_error(c, -ENOMEM, "out of memory") < 0 ? -1 : 1;
    return send_reply(c, &r) < 0 ? -1 : 1;
}

/* Runs a request. Returns 1 done, 0 parked, -1 connection closed. */
static int run_request(conn_t *c, Stackwatch__Request *req, int force)
{
    srv_t *s = c->srv;
    Stackwatch__Reply r = STACKWATCH__REPLY__INIT;
    ra_t ra = { 0 };
    int rc;
    switch (req->req_case) {
    case STACKWATCH__REQUEST__REQ_PING: {
        Stackwatch__Pong p = STACKWATCH__PONG__INIT;
        p.pid = (uint32_t)getpid();
        p.clients = s->clients.count;
        p.expire_ms = (uint32_t)(s->opts.expire_ns / 1000000u);
        p.dir = s->rd.dir;
        r.body_case = STACKWATCH__REPLY__BODY_PONG;
        r.pong = &p;
        return send_reply(c, &r) < 0 ? -1 : 1;
    }
    case STACKWATCH__REQUEST__REQ_CLIENTS: {
        Stackwatch__ClientList cl = STACKWATCH__CLIENT_LIST__INIT;
        uint64_t now = srv_now();
        cl.clients = ra_alloc(&ra, (s->clients.count + 1) * sizeof *cl.clients);
        if (!cl.clients) {
            rc = send_error(c, -ENOMEM, "out of memory");
            break;
        }
        for (client_t *cc = s->clients.head; cc; cc = cc->next)
            if ((cl.clients[cl.n_clients] = client_info(&ra, cc, now)))
                cl.n_clients++;
        r.body_case = STACKWATCH__REPLY__BODY_CLIENTS;
        r.clients = &cl;
        rc = send_reply(c, &r);
        break;
    }
    case STACKWATCH__REQUEST__REQ_LEAKS: {
        int b = build_leaks(s, req->leaks, force, &ra, &r);
        if (b == 0) {
            ra_free(&ra);
            return 0;
        }
        rc = b == -EINVAL  ? send_error(c, b, "unknown class (leak, growing, retained, cache, transient)")
             : b < 0       ? send_error(c, b, "out of memory building the report")
                           : send_reply(c, &r);
        break;
    }
    case STACKWATCH__REQUEST__REQ_MARK: {
        /* Replies with the clients marked. */
        Stackwatch__ClientList cl = STACKWATCH__CLIENT_LIST__INIT;
        uint64_t now = srv_now();
        cl.clients = ra_alloc(&ra, (s->clients.count + 1) * sizeof *cl.clients);
        if (!cl.clients) {
            rc = send_error(c, -ENOMEM, "out of memory");
            break;
        }
        for (client_t *cc = s->clients.head; cc; cc = cc->next) {
            if (!cc->conn || (req->mark->pid && cc->pid != req->mark->pid))
                continue;
            client_mark(cc, now);
            if ((cl.clients[cl.n_clients] = client_info(&ra, cc, now)))
                cl.n_clients++;
        }
        srv_log("mark set on %zu client(s)", cl.n_clients);
        r.body_case = STACKWATCH__REPLY__BODY_CLIENTS;
        r.clients = &cl;
        rc = send_reply(c, &r);
        break;
    }
    case STACKWATCH__REQUEST__REQ_TRIGGER_ADD: {
        const Stackwatch__Rule *q = req->trigger_add->rule;
        char err[512] = "";
        if (!q) {
            rc = send_error(c, -EINVAL, "trigger add without a rule");
            break;
        }
        int id = trig_add(&s->trig, q->match, q->module, q->stack, q->frame, q->min_depth,
                          q->pid, q->signal, q->count, err, sizeof err);
        if (id < 0) {
            rc = send_error(c, id, err[0] ? err : "cannot add the rule");
            break;
        }
        srv_log("rule %d added (match '%s', module '%s', stack %016llx, pid %u, signal %d, count %u)",
                id, q->match ? q->match : "", q->module ? q->module : "",
                (unsigned long long)q->stack, q->pid, q->signal, q->count);
        srv_trig_scan(s);
        rc = send_rules(c, &ra, s, (uint32_t)id);
        break;
    }
    case STACKWATCH__REQUEST__REQ_TRIGGER_LIST:
        rc = send_rules(c, &ra, s, 0);
        break;
    case STACKWATCH__REQUEST__REQ_TRIGGER_RM: {
        uint32_t id = req->trigger_rm->id;
        if (!trig_get(&s->trig, id)) {
            char msg[64];
            snprintf(msg, sizeof msg, "no rule %u", id);
            rc = send_error(c, -ENOENT, msg);
            break;
        }
        for (client_t *cc = s->clients.head; cc; cc = cc->next)
            for (uint32_t i = 0; i < cc->nstacks; i++) {
                cstack_t *st = cc->slist[i];
                if (st && st->arm_kind == ARM_RULE && st->arm_rule == id)
                    srv_disarm(s, cc, st);
            }
        trig_rm(&s->trig, id);
        srv_log("rule %u removed", id);
        rc = send_rules(c, &ra, s, 0);
        break;
    }
    case STACKWATCH__REQUEST__REQ_SCAN: {
        int sr = run_scan(c, req->scan, force, &ra);
        ra_free(&ra);
        return sr;
    }
    case STACKWATCH__REQUEST__REQ_SHUTDOWN:
        srv_log("stop requested over the control socket");
        rc = send_reply(c, &r);
        srv_stop(s);
        break;
    default:
        rc = send_error(c, -EINVAL, "unknown request");
        break;
    }
    ra_free(&ra);
    return rc < 0 ? -1 : 1;
}

int ctl_request(conn_t *c, const uint8_t *p, uint32_t len)
{
    if (c->parked) {
        conn_close(c, "request sent while another is pending");
        return -1;
    }
    Stackwatch__Request *req = stackwatch__request__unpack(NULL, len, p);
    if (!req) {
        c->srv->bad_frames++;
        conn_close(c, "malformed request");
        return -1;
    }
    c->parked_tag = 0;
    c->parked_until = 0;
    int rc = run_request(c, req, 0);
    if (rc == 0) {
        c->parked = req;
        if (!c->parked_until)
            c->parked_until = srv_now() + PARK_NS;
        return 0;
    }
    stackwatch__request__free_unpacked(req, NULL);
    return rc < 0 ? -1 : 0;
}

void ctl_retry_parked(srv_t *s, int deadline_only)
{
    uint64_t now = srv_now();
    conn_t *next;
    for (conn_t *c = s->conns; c; c = next) {
        next = c->next;
        if (c->kind != CONN_CONTROL || !c->parked)
            continue;
        int force = now >= c->parked_until;
        if (deadline_only && !force)
            continue;
        Stackwatch__Request *req = c->parked;
        c->parked = NULL; /* a close inside run_request must not free it too */
        int rc = run_request(c, req, force);
        if (rc == 0) {
            c->parked = req;
            continue;
        }
        stackwatch__request__free_unpacked(req, NULL);
    }
}

void ctl_forget(conn_t *c)
{
    if (c->parked) {
        stackwatch__request__free_unpacked(c->parked, NULL);
        c->parked = NULL;
    }
}
