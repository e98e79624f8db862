/* The control socket's requests: ping, clients, leak reports, shutdown. */
#include "ctl.h"

#include <errno.h>
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

static const char *state_name(int st)
{
    switch (st) {
    case CLIENT_CONNECTED: return "connected";
    case CLIENT_EXITED: return "exited";
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
    ci->agent_bytes = c->a_ring_bytes + c->a_table_bytes;
    ci->threads = (uint32_t)c->a_threads;
    ci->late_events = c->late_events;
    ci->table_full = c->table_full;
    ci->implied_frees = c->implied_frees;
    ci->python_version = c->python_version;
    ci->python_status = c->python_status ? c->python_status : (char *)"";
    ci->notes = c->notes;
    return ci;
}

/* ---------------------------------------------------------------- leak selection */

typedef struct cand_s {
    client_t *c;
    cstack_t *s;
    uint64_t oldest;    /* oldest live block's alloc time (0: none) */
} cand_t;

typedef struct oldest_ctx_s {
    uint64_t *oldest;   /* by stack index */
    uint32_t cap;
} oldest_ctx_t;

static void note_oldest(void *ctx, atab_ent_t *e)
{
    oldest_ctx_t *o = ctx;
    if (e->stack < o->cap && (o->oldest[e->stack] == 0 || e->ts < o->oldest[e->stack]))
        o->oldest[e->stack] = e->ts;
}

static uint64_t may_leak_b(const cstack_t *s)
{
    return s->exp_b - s->fexp_b;
}

static int cand_cmp(const void *a, const void *b)
{
    const cstack_t *x = ((const cand_t *)a)->s, *y = ((const cand_t *)b)->s;
    uint64_t kx = may_leak_b(x), ky = may_leak_b(y);
    if (kx != ky)
        return kx > ky ? -1 : 1;
    if (x->exit_live_b != y->exit_live_b)
        return x->exit_live_b > y->exit_live_b ? -1 : 1;
    uint64_t lx = x->alloc_b - x->free_b, ly = y->alloc_b - y->free_b;
    if (lx != ly)
        return lx > ly ? -1 : 1;
    if (x->alloc_n != y->alloc_n)
        return x->alloc_n > y->alloc_n ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int wanted(const Stackwatch__QueryLeaks *q, const client_t *c, const cstack_t *s)
{
    if (!s->defined && s->alloc_n == 0)
        return 0;
    uint64_t ml_n = s->exp_n - s->fexp_n;
    if (q->min_bytes && may_leak_b(s) < q->min_bytes)
        return 0;
    if (q->all)
        return s->alloc_n > 0;
    return ml_n > 0 || (c->frozen && s->exit_live_n > 0);
}

/* Frames of a stack: symbolized, or module+offset when not (yet). */
static int fill_frames(ra_t *ra, const client_t *c, const cstack_t *s, Stackwatch__StackReport *r)
{
    const symres_t *sr = s->sym_state == SYM_DONE ? s->sym : NULL;
    uint32_t n = sr ? sr->n : s->npcs;
    if (n == 0)
        return 0;
    r->frames = ra_alloc(ra, n * sizeof *r->frames);
    Stackwatch__Frame *fs = ra_alloc(ra, n * sizeof *fs);
    if (!r->frames || !fs)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        Stackwatch__Frame *f = &fs[i];
        stackwatch__frame__init(f);
        uint64_t pc = sr ? sr->f[i].addr : s->pcs[i];
        f->addr = pc;
        const cmod_t *m = client_module_at(c, pc, s->gen);
        if (m) {
            f->module = m->path;
            f->module_offset = pc - m->bias;
            f->build_id.data = (uint8_t *)m->build_id;
            f->build_id.len = m->build_id_len;
        }
        if (sr) {
            const symframe_t *sf = &sr->f[i];
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

static Stackwatch__StackReport *stack_report(ra_t *ra, const cand_t *cd, uint64_t now)
{
    const client_t *c = cd->c;
    const cstack_t *s = cd->s;
    Stackwatch__StackReport *r = ra_alloc(ra, sizeof *r);
    if (!r)
        return NULL;
    stackwatch__stack_report__init(r);
    r->id = s->id;
    r->pid = c->pid;
    r->may_leak = count(ra, s->exp_n - s->fexp_n, s->exp_b - s->fexp_b);
    r->expired = count(ra, s->exp_n, s->exp_b);
    r->free_expired = count(ra, s->fexp_n, s->fexp_b);
    r->alloc = count(ra, s->alloc_n, s->alloc_b);
    r->free = count(ra, s->free_n, s->free_b);
    r->live = count(ra, s->alloc_n - s->free_n, s->alloc_b - s->free_b);
    r->exit_live = count(ra, s->exit_live_n, s->exit_live_b);
    r->uncertain = count(ra, s->unc_n, s->unc_b);
    if (s->free_n) {
        r->freed_lt_valid = 1;
        r->freed_lt_min_ms = s->lt_min / 1000000u;
        r->freed_lt_max_ms = s->lt_max / 1000000u;
        r->freed_lt_avg_ms = cstack_lt_avg_ms(s);
    }
    uint64_t end = c->frozen ? c->end_ts : now;
    uint64_t oldest = c->frozen ? s->oldest_live_ts : cd->oldest;
    r->unfreed_max_age_ms = oldest && end > oldest ? (end - oldest) / 1000000u : 0;
    r->truncated = s->truncated;
    r->armed = s->arm_left;
    if (fill_frames(ra, c, s, r) < 0 || fill_python(ra, c, s, r) < 0)
        return NULL;
    return r;
}

/* Builds the leak report. Returns 1 when it is complete, 0 when some selected
 * stack is still being symbolized (and force is not set), -ENOMEM. */
static int build_leaks(srv_t *srv, const Stackwatch__QueryLeaks *q, int force, ra_t *ra,
                       Stackwatch__Reply *reply)
{
    uint64_t now = srv_now();
    size_t ncand = 0, capc = 0;
    cand_t *cands = NULL;
    int rc = -ENOMEM;
    Stackwatch__LeakReport *lr = ra_alloc(ra, sizeof *lr);
    if (!lr)
        return -ENOMEM;
    stackwatch__leak_report__init(lr);
    lr->expire_ms = (uint32_t)(srv->opts.expire_ns / 1000000u);
    lr->sample = (char *)"all";
    size_t nclients = 0;
    for (client_t *c = srv->clients.head; c; c = c->next)
        if (!q->pid || c->pid == q->pid)
            nclients++;
    lr->clients = ra_alloc(ra, (nclients ? nclients : 1) * sizeof *lr->clients);
    if (!lr->clients)
        goto out;
    for (client_t *c = srv->clients.head; c; c = c->next) {
        if (q->pid && c->pid != q->pid)
            continue;
        if (!(lr->clients[lr->n_clients++] = client_info(ra, c, now)))
            goto out;
        uint64_t *oldest = NULL;
        if (!c->frozen && c->atab_ok && c->stacks_cap) {
            oldest = calloc(c->stacks_cap, sizeof *oldest);
            if (!oldest)
                goto out;
            oldest_ctx_t o = { oldest, c->stacks_cap };
            atab_each(&c->atab, note_oldest, &o);
        }
        for (uint32_t i = 0; i < c->stacks_cap; i++) {
            cstack_t *s = c->stacks[i];
            if (!s || !wanted(q, c, s))
                continue;
            if (ncand == capc) {
                size_t ncap = capc ? capc * 2 : 64;
                cand_t *nc = realloc(cands, ncap * sizeof *nc);
                if (!nc) {
                    free(oldest);
                    goto out;
                }
                cands = nc;
                capc = ncap;
            }
            cands[ncand++] = (cand_t){ c, s, oldest ? oldest[i] : 0 };
        }
        free(oldest);
    }
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
        if (!(lr->stacks[i] = stack_report(ra, &cands[i], now)))
            goto out;
        lr->n_stacks++;
    }
    reply->body_case = STACKWATCH__REPLY__BODY_LEAKS;
    reply->leaks = lr;
    rc = 1;
out:
    free(cands);
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
        rc = b < 0 ? send_error(c, b, "out of memory building the report") : send_reply(c, &r);
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
            for (uint32_t i = 0; i < cc->stacks_cap; i++) {
                cstack_t *st = cc->stacks[i];
                if (st && st->arm_kind == ARM_RULE && st->arm_rule == id)
                    srv_disarm(s, cc, st);
            }
        trig_rm(&s->trig, id);
        srv_log("rule %u removed", id);
        rc = send_rules(c, &ra, s, 0);
        break;
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
    int rc = run_request(c, req, 0);
    if (rc == 0) {
        c->parked = req;
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
