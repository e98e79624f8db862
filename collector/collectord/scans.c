/* collectord's reachability scans: a scan's steps with the agent and the worker thread, its results into the client. */
#include "scans.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "clock.h"
#include "conn.h"
#include "frame.h"
#include "log.h"
#include "scan.h"

#define SCAN_AGENT_NS (5ull * 1000000000)    /* the agent answers a SCAN_* within this */
#define SCAN_READ_NS (300ull * 1000000000)   /* copy and mark, for the largest process */
#define SCAN_DEAD_MAX 1024u                  /* dead threads' frames taken from one reply */

static uint64_t loop_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int send_scan_cmd_token(client_t *c, Stackwatch__Command__Kind kind, uint64_t token)
{
    if (!c->conn)
        return -ENOTCONN;
    Stackwatch__Command cmd = STACKWATCH__COMMAND__INIT;
    cmd.kind = kind;
    cmd.token = token;
    cmd.tracer_pid = (uint32_t)getpid();
    Stackwatch__CollectorMsg m = STACKWATCH__COLLECTOR_MSG__INIT;
    m.msg_case = STACKWATCH__COLLECTOR_MSG__MSG_COMMAND;
    m.command = &cmd;
    int rc = conn_send_msg(c->conn, &m, FRAME_MAX_COMMAND);
    if (rc < 0)
        conn_close(c->conn, "cannot queue a command (the agent does not read)");
    return rc;
}

static int send_scan_cmd(client_t *c, Stackwatch__Command__Kind kind)
{
    return send_scan_cmd_token(c, kind, c->scan_token);
}

/* The agent waits for the scan it asked for: it may go on now. */
static void answer_ask(client_t *c)
{
    uint64_t tok = c->scan_ask;
    c->scan_ask = 0;
    if (tok)
        send_scan_cmd_token(c, STACKWATCH__COMMAND__KIND__SCAN_DONE, tok);
}

/* Worker thread: wake the loop. */
static void scan_wake(void *arg)
{
    srv_t *s = arg;
    ev_async_send(s->loop, &s->scan_async);
}

/* Doubles a gathering array (256 entries at first); on failure sets *oom. */
static int grow(void **v, size_t *cap, size_t size, int *oom)
{
    size_t c = *cap ? 2 * *cap : 256;
    void *nv = realloc(*v, c * size);
    if (!nv) {
        *oom = 1;
        return -1;
    }
    *v = nv;
    *cap = c;
    return 0;
}

/* The owners of indirectly lost blocks, gathered over a scan's snapshot. */
typedef struct owners_s {
    scan_own_t *v;
    size_t n, cap;
    int oom;
} owners_t;

static void owners_add(owners_t *o, uint32_t stack, uint32_t owner, uint64_t n, uint64_t b)
{
    if (o->n && o->v[o->n - 1].stack == stack && o->v[o->n - 1].owner == owner) {
        o->v[o->n - 1].n += n; /* the common case: a run of one owner's blocks */
        o->v[o->n - 1].b += b;
        return;
    }
    if (o->n == o->cap && grow((void **)&o->v, &o->cap, sizeof *o->v, &o->oom) < 0)
        return;
    o->v[o->n++] = (scan_own_t){ stack, owner, n, b };
}

static int own_by_pair(const void *a, const void *b)
{
    const scan_own_t *x = a, *y = b;
    if (x->stack != y->stack)
        return x->stack < y->stack ? -1 : 1;
    return x->owner < y->owner ? -1 : x->owner > y->owner;
}

static int own_by_size(const void *a, const void *b)
{
    const scan_own_t *x = a, *y = b;
    if (x->stack != y->stack)
        return x->stack < y->stack ? -1 : 1;
    if (x->b != y->b)
        return x->b > y->b ? -1 : 1;
    return x->owner < y->owner ? -1 : x->owner > y->owner;
}

/* Merges the pairs, keeps the SCAN_OWNERS_MAX largest owners of each stack
 * as the client's (replacing the last scan's); takes o's memory. */
static void owners_keep(owners_t *o, client_t *c)
{
    free(c->scan_own);
    c->scan_own = NULL;
    c->nscan_own = 0;
    if (o->oom || !o->n) {
        if (o->oom)
            log_msg("pid %u: out of memory for the owners of lost blocks", c->pid);
        free(o->v);
        return;
    }
    qsort(o->v, o->n, sizeof *o->v, own_by_pair);
    size_t k = 0;
    for (size_t i = 0; i < o->n; i++) {
        if (k && o->v[k - 1].stack == o->v[i].stack && o->v[k - 1].owner == o->v[i].owner) {
            o->v[k - 1].n += o->v[i].n;
            o->v[k - 1].b += o->v[i].b;
        } else {
            o->v[k++] = o->v[i];
        }
    }
    qsort(o->v, k, sizeof *o->v, own_by_size);
    size_t m = 0, run = 0;
    for (size_t i = 0; i < k; i++) {
        run = i && o->v[i].stack == o->v[i - 1].stack ? run + 1 : 0;
        if (run < SCAN_OWNERS_MAX)
            o->v[m++] = o->v[i];
    }
    scan_own_t *v = realloc(o->v, m * sizeof *v);
    c->scan_own = v ? v : o->v;
    c->nscan_own = m;
}

/* Why reachable may-leak blocks are kept: one chain per block (its parents
 * up to the root), gathered, the most common per stack kept. */
typedef struct paths_s {
    scan_path_t *v;
    size_t n, cap;
    int oom;
} paths_t;

/* The Python objects of block x's segment, outward (block side first). */
static uint32_t seg_hops(const scan_job_t *j, size_t x, scan_hop_t *out, uint32_t room)
{
    uint32_t g = j->snap[x].pyseg, n = 0;
    if (g == SCAN_PYSEG_MANY && room) {
        out[n++] = (scan_hop_t){ SCAN_HOP_PY, SCAN_PYTYPE_NONE, 0 };
        return n;
    }
    if (g >= j->npysegs)
        return 0;
    const scan_pyseg_t *s = &j->pysegs[g];
    for (uint32_t k = 0; k < s->n && n < room; k++)
        out[n++] = (scan_hop_t){ SCAN_HOP_PY, s->type[k], s->size[k] };
    if (s->more && n < room)
        out[n++] = (scan_hop_t){ SCAN_HOP_PY, SCAN_PYTYPE_NONE, 0 };
    return n;
}

/* The type of x's parent when it is a Python object. */
static uint32_t parent_type(const scan_job_t *j, size_t x)
{
    uint32_t g = j->snap[x].pyseg;
    return g < j->npysegs ? j->pysegs[g].ptype : SCAN_PYTYPE_NONE;
}

#define CHAIN_MAX 64

static void path_of(const scan_job_t *j, size_t i, scan_path_t *p)
{
    memset(p, 0, sizeof *p);
    p->stack = j->snap[i].stack;
    scan_hop_t chain[CHAIN_MAX];
    uint32_t n = 0, last = p->stack, blocks = 0;
    size_t x = i;
    /* Outward from the block: the Python objects between each block and
     * its parent, then the parent; runs of one stack (a list's links)
     * once. */
    for (;;) {
        uint32_t k = seg_hops(j, x, chain + n, CHAIN_MAX - n);
        n += k;
        if (j->snap[x].parent == SCAN_PARENT_ROOT || j->snap[x].parent >= j->nsnap ||
            ++blocks >= CHAIN_MAX || n >= CHAIN_MAX)
            break;
        uint32_t pt = parent_type(j, x);
        x = j->snap[x].parent;
        if (j->snap[x].stack != last || k) {
            last = j->snap[x].stack;
            chain[n++] = (scan_hop_t){ last, pt, 0 };
        }
    }
    uint32_t lab = j->snap[x].parent == SCAN_PARENT_ROOT ? j->snap[x].label : UINT32_MAX;
    p->root = lab < j->nlabels ? j->labels[lab] : "a chain longer than 64 blocks";
    p->cut = n > SCAN_PATH_HOPS;
    p->nhops = n > SCAN_PATH_HOPS ? SCAN_PATH_HOPS : n;
    for (uint32_t k = 0; k < p->nhops; k++)
        p->hop[k] = chain[p->nhops - 1 - k]; /* the block side, root side first */
}

/* Hops compare by stack and type; an untyped Python object by its size
 * too (all it is known by). A typed one's size may differ from object to
 * object (a var-sized one, 3.14's inline values): chains merge anyway. */
static int hops_cmp(const scan_hop_t *a, const scan_hop_t *b, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++) {
        if (a[k].stack != b[k].stack)
            return a[k].stack < b[k].stack ? -1 : 1;
        if (a[k].type != b[k].type)
            return a[k].type < b[k].type ? -1 : 1;
        if (a[k].type == SCAN_PYTYPE_NONE && a[k].size != b[k].size)
            return a[k].size < b[k].size ? -1 : 1;
    }
    return 0;
}

static int path_same(const scan_path_t *a, const scan_path_t *b)
{
    return a->stack == b->stack && a->root == b->root && a->nhops == b->nhops &&
           !hops_cmp(a->hop, b->hop, a->nhops);
}

/* Adds b's blocks to a (the same chain); a typed object's size that
 * differs becomes 0: it varies. */
static void path_merge(scan_path_t *a, const scan_path_t *b)
{
    a->n += b->n;
    a->b += b->b;
    for (uint32_t k = 0; k < a->nhops; k++)
        if (a->hop[k].size != b->hop[k].size)
            a->hop[k].size = 0;
}

static int path_by_key(const void *x, const void *y)
{
    const scan_path_t *a = x, *b = y;
    if (a->stack != b->stack)
        return a->stack < b->stack ? -1 : 1;
    if (a->root != b->root)
        return (uintptr_t)a->root < (uintptr_t)b->root ? -1 : 1;
    if (a->nhops != b->nhops)
        return a->nhops < b->nhops ? -1 : 1;
    return hops_cmp(a->hop, b->hop, a->nhops);
}

static int path_by_count(const void *x, const void *y)
{
    const scan_path_t *a = x, *b = y;
    if (a->stack != b->stack)
        return a->stack < b->stack ? -1 : 1;
    if (a->n != b->n)
        return a->n > b->n ? -1 : 1;
    return path_by_key(x, y);
}

static void paths_add(paths_t *ps, const scan_job_t *j, size_t i, uint64_t n, uint64_t b)
{
    scan_path_t p;
    path_of(j, i, &p);
    p.n = n;
    p.b = b;
    if (ps->n && path_same(&ps->v[ps->n - 1], &p)) {
        path_merge(&ps->v[ps->n - 1], &p);
        return;
    }
    if (ps->n == ps->cap && grow((void **)&ps->v, &ps->cap, sizeof *ps->v, &ps->oom) < 0)
        return;
    ps->v[ps->n++] = p;
}

/* Merges equal chains, keeps the SCAN_PATHS_MAX most common per stack as
 * the client's, with the scan's labels (taken from the job). */
static void paths_keep(paths_t *ps, client_t *c, scan_job_t *j)
{
    free(c->scan_paths);
    for (size_t i = 0; i < c->nscan_labels; i++)
        free(c->scan_labels[i]);
    free(c->scan_labels);
    c->scan_paths = NULL;
    c->nscan_paths = 0;
    c->scan_labels = j->labels;
    c->nscan_labels = j->nlabels;
    j->labels = NULL;
    j->nlabels = 0;
    for (size_t i = 0; i < c->nscan_pytypes; i++)
        free(c->scan_pytypes[i]);
    free(c->scan_pytypes);
    c->scan_pytypes = j->pytypes;
    c->nscan_pytypes = j->npytypes;
    j->pytypes = NULL;
    j->npytypes = 0;
    if (ps->oom || !ps->n) {
        if (ps->oom)
            log_msg("pid %u: out of memory for the retention paths", c->pid);
        free(ps->v);
        return;
    }
    qsort(ps->v, ps->n, sizeof *ps->v, path_by_key);
    size_t k = 0;
    for (size_t i = 0; i < ps->n; i++) {
        if (k && path_same(&ps->v[k - 1], &ps->v[i])) {
            path_merge(&ps->v[k - 1], &ps->v[i]);
        } else {
            ps->v[k++] = ps->v[i];
        }
    }
    qsort(ps->v, k, sizeof *ps->v, path_by_count);
    for (size_t i = 0, first = 0; i <= k; i++) {
        if (i < k && ps->v[i].stack == ps->v[first].stack)
            continue;
        uint64_t of = 0; /* a stack's samples: all its chains */
        for (size_t x = first; x < i; x++)
            of += ps->v[x].n;
        for (size_t x = first; x < i; x++)
            ps->v[x].of_n = of;
        first = i;
    }
    size_t m = 0, run = 0;
    for (size_t i = 0; i < k; i++) {
        run = i && ps->v[i].stack == ps->v[i - 1].stack ? run + 1 : 0;
        if (run < SCAN_PATHS_MAX)
            ps->v[m++] = ps->v[i];
    }
    scan_path_t *v = realloc(ps->v, (m ? m : 1) * sizeof *v);
    c->scan_paths = v ? v : ps->v;
    c->nscan_paths = m;
}

/* The scan is over, well or not: results into the table, the agent told,
 * waiting requests answered. */
static void scan_finish(srv_t *s, client_t *c, int err, const char *msg)
{
    scan_job_t *j = c->scan;
    uint64_t cpu0 = loop_cpu_ns();
    if (j && atomic_load(&j->stage) == SCAN_DONE && !err && c->atab_ok) {
        scan_info_t *si = &c->scan_last;
        memset(si, 0, sizeof *si);
        owners_t ow = { 0 };
        paths_t ps = { 0 };
        size_t sampled_cap = c->stacks_cap;
        uint8_t *sampled = calloc(sampled_cap ? sampled_cap : 1, 1); /* per stack index */
        if (!sampled) {
            sampled_cap = 0;
            ps.oom = 1;
        }
        for (size_t i = 0; i < j->nsnap; i++) {
            const scan_ent_t *e = &j->snap[i];
            atab_ent_t *a = atab_find(&c->atab, e->addr);
            uint64_t wn, wb;
            client_weight(c, e->size, a ? a->flags : 0, &wn, &wb);
            int indirect = !e->reach && e->owner != i && e->owner < j->nsnap;
            si->blocks_n += wn;
            si->blocks_b += wb;
            if (!e->reach && a && a->ts == e->ts && (a->flags & ATAB_F_UNCERTAIN)) {
                /* Unreached, but its free may have been lost: not judged. */
                si->unc_n += wn;
                si->unc_b += wb;
                a->flags &= ~(uint64_t)(ATAB_F_SCANNED | ATAB_F_UNREACH | ATAB_F_INDIRECT);
                continue;
            }
            if (e->reach) {
                si->reach_n += wn;
                si->reach_b += wb;
            } else {
                si->unreach_n += wn;
                si->unreach_b += wb;
            }
            if (indirect) {
                si->indirect_n += wn;
                si->indirect_b += wb;
                owners_add(&ow, e->stack, j->snap[e->owner].stack, wn, wb);
            }
            if (!a || a->ts != e->ts)
                continue; /* freed since (or another block at the address) */
            if (e->reach && (a->flags & ATAB_F_EXPIRED) && e->stack < sampled_cap &&
                sampled[e->stack] < SCAN_PATH_SAMPLES) {
                sampled[e->stack]++;
                paths_add(&ps, j, i, 1, e->size); /* reachable, yet may leak: why kept? */
            }
            a->flags = (a->flags & ~(uint64_t)(ATAB_F_SCANNED | ATAB_F_UNREACH | ATAB_F_INDIRECT)) |
                       ATAB_F_SCANNED | (e->reach ? 0 : ATAB_F_UNREACH) |
                       (indirect ? ATAB_F_INDIRECT : 0);
        }
        owners_keep(&ow, c);
        paths_keep(&ps, c, j);
        free(sampled);
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        si->time_ms = (uint64_t)rt.tv_sec * 1000u + (uint64_t)rt.tv_nsec / 1000000u;
        si->pause_us = j->pause_ns / 1000u;
        si->dur_us = j->dur_ns / 1000u;
        si->threads = j->threads;
        si->busy_threads = c->scan_busy;
        si->root_bytes = j->root_bytes;
        si->read_bytes = j->read_bytes;
        si->pristine_bytes = j->pristine_bytes;
        si->heap_roots = j->heap_roots;
        c->scan_ok = 1;
        client_end_scanned(c); /* scanned after main returned: the ended report keeps it */
        c->scan_err = 0;
        c->scan_msg[0] = '\0';
        c->scan_loop_ns += loop_cpu_ns() - cpu0;
        si->cpu_us = (j->cpu_ns + c->scan_loop_ns) / 1000u;
        if (si->unc_n)
            log_msg("pid %u: %llu unreached blocks (%llu bytes) not judged: their free may "
                    "have been lost", c->pid, (unsigned long long)si->unc_n,
                    (unsigned long long)si->unc_b);
        log_msg("pid %u: scan of %llu live blocks: %llu unreachable (%llu bytes); paused %.1f ms "
                "(stop %.1f, sync %.1f, copy %.1f of %.1f MiB, %.1f of it reading), marking %.1f ms, "
                "%.1f ms in all",
                c->pid, (unsigned long long)si->blocks_n, (unsigned long long)si->unreach_n,
                (unsigned long long)si->unreach_b, si->pause_us / 1000.0, j->stop_ns / 1e6,
                j->sync_ns / 1e6, j->copy_ns / 1e6, j->read_bytes / 1048576.0,
                j->read_ns / 1e6, j->mark_ns / 1e6, si->dur_us / 1000.0);
    } else {
        c->scan_err = err ? err : (j && j->err ? j->err : -EIO);
        snprintf(c->scan_msg, sizeof c->scan_msg, "%s",
                 msg ? msg : (j && j->msg[0] ? j->msg : !c->atab_ok ? "the process ended "
                                                                     "during the scan"
                                                                   : "the scan failed"));
        log_msg("pid %u: scan failed: %s", c->pid, c->scan_msg);
    }
    c->scan_state = SCAN_ST_NONE;
    c->scan = NULL;
    scan_job_free(j);
    /* The scan's working memory (its copy aside, which is unmapped) came
     * from the worker's malloc arena: hand the free pages back now, or
     * collectord keeps the peak of its largest scan (issue 19.6). */
    malloc_trim(0);
    if (c->scan_allowed)
        send_scan_cmd(c, STACKWATCH__COMMAND__KIND__SCAN_END);
    c->scan_allowed = 0;
    c->scan_seq++;
    answer_ask(c);
    s->retry_parked |= SRV_RETRY_ALL; /* the loop runs ctl_retry_parked */
}

static int heap_roots(const client_t *c)
{
    /* The table does not hold every live block: untracked blocks may hold
     * the only pointer to tracked ones. */
    return c->attached || c->sample_bytes || c->gaps || c->lost_events || c->table_full ||
           c->a_lost_disc || c->a_dropped;
}

int scans_start(srv_t *s, client_t *c, char *err, size_t errlen)
{
    (void)s;
    if (!c->conn || c->state != CLIENT_CONNECTED) {
        snprintf(err, errlen, "pid %u is not connected", c->pid);
        return -ENOTCONN;
    }
    if (c->pid == (uint32_t)getpid()) {
        /* ptrace cannot stop its own process (a harness feeding frames
         * over a socketpair is such a peer). */
        snprintf(err, errlen, "pid %u is collectord itself", c->pid);
        return -EPERM;
    }
    if (!c->flusher_tid) {
        snprintf(err, errlen, "the agent of pid %u does not support scans (an older agent?)",
                 c->pid);
        return -ENOTSUP;
    }
    if (c->scan_state != SCAN_ST_NONE) {
        snprintf(err, errlen, "a scan of pid %u is running", c->pid);
        return -EBUSY;
    }
    static uint64_t serial;
    uint64_t tok = (clock_now() << 16) ^ ++serial ^ ((uint64_t)c->pid << 40);
    c->scan_token = tok;
    c->scan_loop_ns = 0;
    c->scan_busy = 0;
    c->scan_allowed = 0;
    /* Straight to the worker: the agent is asked to allow ptrace only if
     * Yama refuses it (SCAN_NEED_TRACER), so a program's own
     * PR_SET_PTRACER setting is not touched when it need not be. */
    c->scan = scan_job_start((pid_t)c->pid, (pid_t)c->flusher_tid, heap_roots(c),
                             c->atab_ok ? c->atab.live : 0, scan_wake, s);
    if (!c->scan) {
        snprintf(err, errlen, "cannot start the scan thread");
        return -ENOMEM;
    }
    c->scan_state = SCAN_ST_FREEZE;
    c->scan_deadline = clock_now() + SCAN_AGENT_NS + 10ull * 1000000000;
    return 0;
}

void scans_ask(srv_t *s, client_t *c, const Stackwatch__ScanAsk *a)
{
    if (!c)
        return;
    if (c->scan_asked || !a->token) {
        /* Answered, never scanned again: a client cannot make us scan it
         * in a loop. */
        send_scan_cmd_token(c, STACKWATCH__COMMAND__KIND__SCAN_DONE, a->token);
        return;
    }
    c->scan_asked = 1;
    c->scan_ask = a->token;
    if (c->scan_state != SCAN_ST_NONE)
        return; /* the scan running now answers it */
    char err[256];
    int rc = scans_start(s, c, err, sizeof err);
    if (rc < 0) {
        c->scan_err = rc;
        snprintf(c->scan_msg, sizeof c->scan_msg, "%s", err);
        log_msg("pid %u: the scan its agent asked for at its end: %s", c->pid, err);
        answer_ask(c);
        return;
    }
    log_msg("pid %u: scanning at its end, as its agent asked (STACKWATCH_SCAN_AT_EXIT)", c->pid);
}

typedef struct snap_ctx_s {
    scan_ent_t *v;
    size_t n, cap;
} snap_ctx_t;

static void snap_one(void *ctx, atab_ent_t *e)
{
    snap_ctx_t *s = ctx;
    if (s->n < s->cap)
        s->v[s->n++] = (scan_ent_t){ .addr = e->addr, .size = e->size, .ts = e->ts,
                                     .stack = e->stack, .pyseg = SCAN_PYSEG_NONE,
                                     .py = (e->flags & ATAB_F_PY) != 0 };
}

void scans_reply(srv_t *s, client_t *c, const Stackwatch__ScanReply *r)
{
    if (!c || c->scan_state == SCAN_ST_NONE || r->token != c->scan_token)
        return; /* a late answer to a scan given up */
    if (r->phase == 1 && c->scan_state == SCAN_ST_BEGIN) {
        if (r->ptracer < 0)
            log_msg("pid %u: the agent could not allow the scan (PR_SET_PTRACER: %s)", c->pid,
                    strerror(-r->ptracer));
        scan_job_retry(c->scan);
        c->scan_state = SCAN_ST_FREEZE;
        c->scan_deadline = clock_now() + SCAN_AGENT_NS + 10ull * 1000000000;
    } else if (r->phase == 2 && c->scan_state == SCAN_ST_SYNC) {
        uint64_t cpu0 = loop_cpu_ns();
        if (r->dropped > c->scan_drops) {
            /* A full ring dropped events since the last scan: a live block
             * may be one whose free was dropped, freed memory that no
             * chain reaches. Such blocks are not judged lost. */
            log_msg("pid %u: %llu events dropped (a full ring) before this scan: blocks "
                    "allocated before are not judged lost", c->pid,
                    (unsigned long long)(r->dropped - c->scan_drops));
            client_all_uncertain(c);
        }
        c->scan_drops = r->dropped;
        /* Every event of the frozen threads is in: the table is the
         * process's heap as of now. */
        size_t n = c->atab_ok ? c->atab.live : 0;
        snap_ctx_t sc = { scan_job_snap_buf(c->scan, n), 0, n };
        size_t npairs = r->n_regions / 2, ndead = r->n_dead_stacks / 3;
        if (ndead > SCAN_DEAD_MAX)
            ndead = SCAN_DEAD_MAX;
        uint64_t *reg = malloc((2 * npairs + 3 * ndead + 2) * sizeof *reg);
        if (!sc.v || !reg) {
            free(reg);
            scan_job_abort(c->scan, "out of memory for the snapshot");
            return;
        }
        if (n)
            atab_each(&c->atab, snap_one, &sc);
        size_t k = 0;
        for (size_t i = 0; i < npairs; i++)
            if (r->regions[2 * i] < r->regions[2 * i + 1]) {
                reg[2 * k] = r->regions[2 * i];
                reg[2 * k + 1] = r->regions[2 * i + 1];
                k++;
            }
        size_t kd = 0;
        for (size_t i = 0; i < ndead; i++) {
            const uint64_t *d = &r->dead_stacks[3 * i];
            if (d[0] < d[1] && d[1] <= d[2]) {
                memcpy(&reg[2 * k + 3 * kd], d, 3 * sizeof *d);
                kd++;
            }
        }
        c->scan_busy = r->busy_threads;
        scan_job_snapshot(c->scan, sc.v, sc.n, reg, k, kd);
        c->scan_state = SCAN_ST_READ;
        c->scan_deadline = clock_now() + SCAN_READ_NS;
        c->scan_loop_ns += loop_cpu_ns() - cpu0;
    }
}

void scans_abort(srv_t *s, client_t *c, const char *why)
{
    if (c->scan_state == SCAN_ST_NONE)
        return;
    if (!c->scan) {
        scan_finish(s, c, -ECANCELED, why);
        return;
    }
    scan_job_abort(c->scan, why);
    /* The worker ends SCAN_FAILED and wakes the loop (scan_async_cb). */
}

void scans_progress(srv_t *s)
{
    client_t *next;
    for (client_t *c = s->clients.head; c; c = next) {
        next = c->next;
        if (!c->scan)
            continue;
        int st = atomic_load(&c->scan->stage);
        if (st == SCAN_NEED_TRACER && c->scan_state == SCAN_ST_FREEZE && !c->scan_allowed) {
            /* Once: after the agent's answer the stage stays NEED_TRACER
             * until the worker has stopped the process, and the loop may
             * wake for another scan meanwhile. */
            c->scan_state = SCAN_ST_BEGIN;
            c->scan_allowed = 1;
            c->scan_deadline = clock_now() + SCAN_AGENT_NS;
            send_scan_cmd(c, STACKWATCH__COMMAND__KIND__SCAN_BEGIN);
        } else if (st == SCAN_FROZEN && c->scan_state == SCAN_ST_FREEZE) {
            c->scan_state = SCAN_ST_SYNC;
            c->scan_deadline = clock_now() + SCAN_AGENT_NS;
            if (send_scan_cmd(c, STACKWATCH__COMMAND__KIND__SCAN_SYNC) < 0)
                continue; /* conn_close aborted it */
        } else if (st == SCAN_DONE || st == SCAN_FAILED) {
            scan_finish(s, c, 0, NULL);
        }
    }
}

/* Age timer: scans whose agent or worker is overdue are given up. */
void scans_check_deadlines(srv_t *s, uint64_t now)
{
    for (client_t *c = s->clients.head; c; c = c->next) {
        if (c->scan_state == SCAN_ST_NONE || now < c->scan_deadline)
            continue;
        c->scan_deadline = UINT64_MAX; /* once */
        scans_abort(s, c, c->scan_state == SCAN_ST_READ
                              ? "the scan took too long"
                              : "the agent did not answer (its flusher may wait for a lock "
                                "that a stopped thread holds)");
    }
}
