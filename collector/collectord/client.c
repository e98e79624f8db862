/* One traced process as collectord sees it: modules, stacks with their statistics, live blocks. */
#include "client.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sym.h"

static void on_expire(void *ctx, atab_ent_t *e);

/* Events of a frozen client (its process ended, or began to end) are
 * counted, never applied: the report is the one it had at its end. */
#define UNLIKELY_FROZEN(c) __builtin_expect((c)->frozen, 0)

client_t *client_new(clients_t *cs, uint32_t pid, uint64_t expire_ns, uint64_t now)
{
    client_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->serial = ++cs->next_serial;
    c->pid = pid;
    c->expire_ns = expire_ns;
    c->first_mono = now;
    c->state = CLIENT_CONNECTED;
    c->max_live = cs->max_live ? cs->max_live : CLIENT_MAX_LIVE;
    series_init(&c->series, expire_ns / 4 > 50000000ull ? expire_ns / 4 : 50000000ull);
    if (atab_init(&c->atab, expire_ns, now, on_expire, c) < 0 ||
        reo_init(&c->reo, CLIENT_REO_MAX) < 0) {
        atab_free(&c->atab);
        free(c);
        return NULL;
    }
    c->atab_ok = 1;
    c->next = cs->head;
    cs->head = c;
    cs->count++;
    return c;
}

client_t *client_find(clients_t *cs, uint32_t pid, uint64_t instance)
{
    for (client_t *c = cs->head; c; c = c->next)
        if (c->pid == pid && c->instance == instance)
            return c;
    return NULL;
}

client_t *client_by_serial(clients_t *cs, uint64_t serial)
{
    for (client_t *c = cs->head; c; c = c->next)
        if (c->serial == serial)
            return c;
    return NULL;
}

/* s cut to at most max bytes, at a UTF-8 character boundary. */
static char *dup_cap(const char *s, size_t max)
{
    if (!s)
        s = "";
    size_t n = strnlen(s, max + 1);
    if (n > max) {
        n = max;
        while (n && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    return strndup(s, n);
}

/* String bytes count against the process's budget (CPROC_STR_MAX). */
static int str_fits(const client_t *c, uint64_t add, uint64_t drop)
{
    if (!c->proc)
        return 1;
    return c->proc->str - drop + add <= CPROC_STR_MAX;
}

/* Python tracebacks (captured by the thousand while a program imports) stop
 * short of the budget: module paths, which the agent must be able to send
 * or lose its connection, keep CPROC_STR_RESERVE. */
static int str_fits_py(const client_t *c, uint64_t add)
{
    if (!c->proc)
        return 1;
    return c->proc->str + add <= CPROC_STR_MAX - CPROC_STR_RESERVE;
}

static void str_charge(client_t *c, uint64_t add, uint64_t drop)
{
    c->str_bytes = c->str_bytes - drop + add;
    if (c->proc)
        c->proc->str = c->proc->str - drop + add;
}

static uint64_t ident_bytes(const client_t *c)
{
    uint64_t n = 0;
    if (c->exe)
        n += strlen(c->exe) + 1;
    if (c->sample)
        n += strlen(c->sample) + 1;
    for (uint32_t i = 0; i < c->argc; i++)
        n += strlen(c->argv[i]) + 1;
    return n;
}

cproc_t *cproc_get(clients_t *cs, uint32_t pid, uint64_t start)
{
    for (cproc_t *p = cs->procs; p; p = p->next)
        if (p->pid == pid && p->start == start)
            return p;
    cproc_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->pid = pid;
    p->start = start;
    p->owner = cs;
    p->next = cs->procs;
    cs->procs = p;
    return p;
}

void cproc_ref(cproc_t *p)
{
    p->refs++;
}

void cproc_unref(cproc_t *p)
{
    if (!p || --p->refs)
        return;
    for (cproc_t **pp = &p->owner->procs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    free(p);
}

void client_set_proc(client_t *c, cproc_t *p)
{
    if (c->proc || !p)
        return;
    cproc_ref(p);
    p->clients++;
    c->proc = p;
    p->live += c->live_acct;
    p->pcs += c->total_pcs;
    p->frames += c->ftab.n;
    p->str += c->str_bytes;
    p->stacks += c->nstacks;
    p->reo += c->reo_acct;
}

/* The late-event records as the process's limit sees them. */
static void reo_sync(client_t *c)
{
    uint64_t now = c->atab_ok ? c->reo.used : 0;
    if (c->proc)
        c->proc->reo = c->proc->reo - c->reo_acct + now;
    c->reo_acct = now;
}

/* reo_get within the process's share of records. */
static reo_rec_t *reo_get_c(client_t *c, uint64_t addr)
{
    reo_sync(c);
    if (c->proc && c->proc->reo >= CLIENT_REO_MAX) {
        reo_rec_t *r = reo_find(&c->reo, addr);
        if (r)
            return r;
        return NULL;
    }
    reo_rec_t *r = reo_get(&c->reo, addr);
    reo_sync(c);
    return r;
}

/* The table's live blocks as the process's limit sees them. */
static void live_sync(client_t *c)
{
    uint64_t now = c->atab_ok ? c->atab.live : 0;
    if (c->proc)
        c->proc->live = c->proc->live - c->live_acct + now;
    c->live_acct = now;
}

void client_set_status(client_t *c, const char *status)
{
    char *ps = dup_cap(status, CLIENT_STR_MAX);
    if (!ps)
        return;
    uint64_t old = c->python_status ? strlen(c->python_status) + 1 : 0;
    free(c->python_status);
    c->python_status = ps;
    str_charge(c, strlen(ps) + 1, old);
}

int client_set_identity(client_t *c, uint32_t claimed_pid, uint32_t ppid, const char *exe,
                        char **argv, size_t argc, uint64_t instance, uint64_t parent_instance,
                        uint64_t start_realtime_ns, uint32_t depth, const char *sample)
{
    c->claimed_pid = claimed_pid;
    c->ppid = ppid;
    c->instance = instance;
    c->parent_instance = parent_instance;
    c->start_realtime_ns = start_realtime_ns;
    c->depth = depth;
    uint64_t old = ident_bytes(c);
    free(c->exe);
    free(c->sample);
    for (uint32_t i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    c->argv = NULL;
    c->argc = 0;
    str_charge(c, 0, old);
    c->exe = dup_cap(exe, CLIENT_STR_MAX);
    c->sample = dup_cap(sample, CLIENT_SAMPLE_MAX);
    if (!c->exe || !c->sample)
        return -ENOMEM;
    if (argc > 256)
        argc = 256;
    if (argc) {
        c->argv = calloc(argc, sizeof *c->argv);
        if (!c->argv)
            return -ENOMEM;
        /* The command line is cut at CLIENT_ARGV_MAX bytes in all. */
        size_t left = CLIENT_ARGV_MAX;
        for (size_t i = 0; i < argc && left; i++) {
            c->argv[i] = dup_cap(argv[i], left - 1);
            if (!c->argv[i])
                return -ENOMEM;
            left -= strlen(c->argv[i]) + 1;
            c->argc++;
        }
    }
    /* Identity strings are bounded above and always kept (charged even past
     * the process's budget, which then refuses modules and notes). */
    str_charge(c, ident_bytes(c), 0);
    return 0;
}

int client_put_module(client_t *c, uint32_t id, const char *path, uint64_t bias,
                      const uint64_t *ranges, size_t nranges, const uint8_t *build_id,
                      size_t build_id_len, uint32_t gen_added, uint32_t gen_removed)
{
    if (id >= CLIENT_MAX_MODULES || nranges > 64 || (nranges & 1))
        return -EINVAL;
    if (id >= c->mods_cap) {
        uint32_t ncap = c->mods_cap ? c->mods_cap : 64;
        while (ncap <= id)
            ncap *= 2;
        cmod_t *nm = realloc(c->mods, ncap * sizeof *nm);
        if (!nm)
            return -ENOMEM;
        memset(nm + c->mods_cap, 0, (ncap - c->mods_cap) * sizeof *nm);
        c->mods = nm;
        c->mods_cap = ncap;
    }
    cmod_t *m = &c->mods[id];
    char *np = dup_cap(path, CLIENT_STR_MAX);
    uint64_t add = np ? strlen(np) + 1 : 0, drop = m->path ? strlen(m->path) + 1 : 0;
    if (np && !str_fits(c, add, drop)) {
        free(np);
        c->str_refused++;
        return -E2BIG;
    }
    uint64_t *nr = nranges ? malloc(nranges * sizeof *nr) : NULL;
    if (!np || (nranges && !nr)) {
        free(np);
        free(nr);
        return -ENOMEM;
    }
    free(m->path);
    free(m->ranges);
    str_charge(c, add, drop);
    m->path = np;
    m->ranges = nr;
    if (nranges)
        memcpy(nr, ranges, nranges * sizeof *nr);
    m->nranges = (uint32_t)(nranges / 2);
    m->bias = bias;
    m->build_id_len = build_id_len > sizeof m->build_id ? sizeof m->build_id : (uint32_t)build_id_len;
    if (m->build_id_len)
        memcpy(m->build_id, build_id, m->build_id_len);
    m->gen_added = gen_added;
    m->gen_removed = gen_removed;
    return 0;
}

const cmod_t *client_module_at(const client_t *c, uint64_t pc, uint32_t gen)
{
    for (uint32_t i = 0; i < c->mods_cap; i++) {
        const cmod_t *m = &c->mods[i];
        if (!m->path || m->gen_added > gen || (m->gen_removed && gen >= m->gen_removed))
            continue;
        for (uint32_t r = 0; r < m->nranges; r++)
            if (pc >= m->ranges[2 * r] && pc < m->ranges[2 * r + 1])
                return m;
    }
    return NULL;
}

const cmod_t *client_module_near(const client_t *c, uint64_t pc, uint32_t gen, const cmod_t **hint)
{
    const cmod_t *m = *hint;
    if (m && m->path && m->gen_added <= gen && !(m->gen_removed && gen >= m->gen_removed))
        for (uint32_t r = 0; r < m->nranges; r++)
            if (pc >= m->ranges[2 * r] && pc < m->ranges[2 * r + 1])
                return m;
    m = client_module_at(c, pc, gen);
    if (m)
        *hint = m;
    return m;
}

/* The stack record for an agent index, created on first use. */
/* Why stack_slot gave NULL. */
static int slot_err(const client_t *c, uint32_t index)
{
    if (index >= CLIENT_MAX_STACKS)
        return -EINVAL;
    if (c->proc && c->proc->stacks >= CLIENT_MAX_STACKS)
        return -E2BIG;
    return -ENOMEM;
}

static cstack_t *stack_slot(client_t *c, uint32_t index)
{
    if (index >= CLIENT_MAX_STACKS)
        return NULL;
    cstack_t *have = cstack_at(c, index);
    if (have)
        return have;
    if (c->proc && c->proc->stacks >= CLIENT_MAX_STACKS)
        return NULL; /* the process's instance tokens share the cap */
    uint32_t pi = index >> CLIENT_SPAGE_BITS;
    if (index >= c->stacks_cap) {
        uint32_t npages = c->stacks_cap ? c->stacks_cap >> CLIENT_SPAGE_BITS : 4;
        while ((npages << CLIENT_SPAGE_BITS) <= index)
            npages *= 2;
        uint32_t old = c->stacks_cap >> CLIENT_SPAGE_BITS;
        cstack_t ***np = realloc(c->spage, npages * sizeof *np);
        if (!np)
            return NULL;
        memset(np + old, 0, (npages - old) * sizeof *np);
        c->spage = np;
        c->stacks_cap = npages << CLIENT_SPAGE_BITS;
    }
    if (!c->spage[pi] && !(c->spage[pi] = calloc(CLIENT_SPAGE, sizeof **c->spage)))
        return NULL;
    if (c->nstacks == c->slist_cap) {
        uint32_t ncap = c->slist_cap ? c->slist_cap * 2 : 64;
        cstack_t **nl = realloc(c->slist, ncap * sizeof *nl);
        if (!nl)
            return NULL;
        c->slist = nl;
        c->slist_cap = ncap;
    }
    cstack_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->index = index;
    s->lt_min = UINT64_MAX;
    s->pos = c->nstacks;
    c->slist[c->nstacks++] = s;
    if (c->proc)
        c->proc->stacks++;
    c->spage[pi][index & (CLIENT_SPAGE - 1)] = s;
    return s;
}

cstack_t *client_define_stack(client_t *c, uint32_t index, uint64_t id, uint32_t gen,
                              const uint64_t *pcs, size_t npcs, int truncated, int *err)
{
    if (index >= CLIENT_MAX_STACKS || npcs > CLIENT_MAX_PCS) {
        *err = -EINVAL;
        return NULL;
    }
    cstack_t *s = stack_slot(c, index);
    if (!s) {
        *err = slot_err(c, index);
        return NULL;
    }
    if (s->defined && s->id == id)
        return s; /* resent after a reconnect */
    uint64_t held = c->proc ? c->proc->pcs : c->total_pcs;
    if (held - s->npcs + npcs > CLIENT_MAX_TOTAL_PCS) {
        *err = -E2BIG;
        return NULL;
    }
    /* Distinct frames are bounded like frames: a stack redefined again and
     * again leaves its old frames in the table. */
    uint64_t fresh = 0;
    for (size_t i = 0; i < npcs; i++)
        fresh += ftab_find(&c->ftab, pcs[i], gen) == FTAB_NONE;
    uint64_t held_f = c->proc ? c->proc->frames : c->ftab.n;
    if (held_f + fresh > CLIENT_MAX_TOTAL_PCS) {
        *err = -E2BIG;
        return NULL;
    }
    uint32_t *np = npcs ? malloc(npcs * sizeof *np) : NULL;
    if (npcs && !np) {
        *err = -ENOMEM;
        return NULL;
    }
    uint32_t had = c->ftab.n;
    for (size_t i = 0; i < npcs; i++)
        np[i] = ftab_get(&c->ftab, pcs[i], gen);
    if (c->proc)
        c->proc->frames += c->ftab.n - had;
    for (size_t i = 0; i < npcs; i++)
        if (np[i] == FTAB_NONE) {
            free(np);
            *err = -ENOMEM;
            return NULL;
        }
    c->total_pcs = c->total_pcs - s->npcs + npcs;
    if (c->proc)
        c->proc->pcs = c->proc->pcs - s->npcs + npcs;
    free(s->fids);
    sym_release(s->sym);
    s->sym = NULL;
    s->sym_state = SYM_NONE;
    s->fids = np;
    s->npcs = (uint32_t)npcs;
    s->id = id;
    s->gen = gen;
    s->truncated = truncated != 0;
    s->defined = 1;
    return s;
}

static int push_u32(uint32_t **v, uint32_t *n, uint32_t *cap, uint32_t x)
{
    if (*n == *cap) {
        uint32_t ncap = *cap ? *cap * 2 : 64;
        uint32_t *nv = realloc(*v, ncap * sizeof *nv);
        if (!nv)
            return -ENOMEM;
        *v = nv;
        *cap = ncap;
    }
    (*v)[(*n)++] = x;
    return 0;
}

static pytb_t *noted_tb(client_t *c, const atab_ent_t *e)
{
    uint32_t i;
    if (!(e->flags & ATAB_F_NOTED) || !amap_get(&c->noted, e->addr, &i) || i >= c->npytbs)
        return NULL;
    return &c->pytbs[i];
}

static void on_expire(void *ctx, atab_ent_t *e)
{
    client_t *c = ctx;
    cstack_t *s = cstack_at(c, e->stack);
    if (!s)
        return;
    uint64_t wn, wb;
    client_weight(c, e->size, e->flags, &wn, &wb);
    s->exp_n += wn;
    s->exp_b += wb;
    c->may_n += wn;
    c->may_b += wb;
    pytb_t *tb = noted_tb(c, e);
    if (tb) {
        tb->exp_n++;
        tb->exp_b += e->size;
        tb->may_n++;
        tb->may_b += e->size;
    }
    if (!s->leak_seen && push_u32(&c->leakq, &c->nleakq, &c->leakq_cap, s->index) == 0)
        s->leak_seen = 1;
    if (s->sym_state == SYM_NONE && !s->sym_queued) {
        if (c->nsymq == c->symq_cap) {
            uint32_t ncap = c->symq_cap ? c->symq_cap * 2 : 64;
            uint32_t *nq = realloc(c->symq, ncap * sizeof *nq);
            if (!nq)
                return; /* symbolized at query time instead */
            c->symq = nq;
            c->symq_cap = ncap;
        }
        c->symq[c->nsymq++] = s->index;
        s->sym_queued = 1;
    }
}

/* Accounts a block as freed at ts_free (lifetime ts_free - alloc). */
static void count_free(client_t *c, cstack_t *s, uint64_t size, uint64_t ts_alloc,
                       uint64_t ts_free, unsigned flags)
{
    uint64_t wn, wb;
    client_weight(c, size, flags, &wn, &wb);
    c->frees++;
    c->live_n -= wn <= c->live_n ? wn : c->live_n;
    c->live_b -= wb <= c->live_b ? wb : c->live_b;
    if (!s)
        return;
    s->free_n += wn;
    s->free_b += wb;
    if (ts_free < c->mark_ts) {
        /* Stamped before the mark, arrived after it: part of the baseline. */
        s->mark_free_n += wn;
        s->mark_free_b += wb;
    }
    uint64_t lt = ts_free > ts_alloc ? ts_free - ts_alloc : 0;
    if (lt < s->lt_min)
        s->lt_min = lt;
    if (lt > s->lt_max)
        s->lt_max = lt;
    s->lt_sum += lt;
    s->lt_n++;
    if (flags & ATAB_F_EXPIRED) {
        if (s->klass == CLASS_LEAK) {
            /* An expired block freed: an eviction, so never a leak from
             * here on, not even until the next tick reclassifies it. */
            s->klass = CLASS_CACHE;
            s->confidence = 0.5f;
        }
        s->fexp_n += wn;
        s->fexp_b += wb;
        c->may_n -= wn <= c->may_n ? wn : c->may_n;
        c->may_b -= wb <= c->may_b ? wb : c->may_b;
    }
    if (flags & ATAB_F_UNCERTAIN) {
        s->unc_n -= wn;
        s->unc_b -= wb;
    }
}

static void free_entry(client_t *c, atab_ent_t *e, uint64_t ts)
{
    cstack_t *s = cstack_at(c, e->stack);
    pytb_t *tb = noted_tb(c, e);
    if (tb) {
        tb->live_n--;
        tb->live_b -= e->size;
        if (e->flags & ATAB_F_EXPIRED) {
            tb->may_n--;
            tb->may_b -= e->size;
        }
        tb->freed++;
        amap_del(&c->noted, e->addr);
    }
    count_free(c, s, e->size, e->ts, ts, e->flags);
    atab_remove(&c->atab, e);
}

static void bump_ts(client_t *c, uint64_t ts)
{
    if (ts > c->max_ts)
        c->max_ts = ts;
    else if (ts < c->max_ts)
        c->late_events++;
}

/* How many blocks of this size one sample stands for: 1/p, p the chance a
 * sample point falls inside it. rate > 0, size > 0. */
static double inverse_p(uint64_t rate, uint64_t size)
{
    return 1.0 / -expm1(-(double)size / (double)rate);
}

/* The mean interval a block with these flags was sampled at (0: exact). */
static inline uint64_t rate_of(const client_t *c, unsigned flags)
{
    return (flags & ATAB_F_PY) ? c->py_sample_bytes : c->sample_bytes;
}

void client_weight(const client_t *c, uint64_t size, unsigned flags, uint64_t *wn, uint64_t *wb)
{
    if (flags & ATAB_F_UNSAMPLED) {
        *wn = *wb = 0;
        return;
    }
    uint64_t rate = rate_of(c, flags);
    if (!rate || !size) {
        *wn = 1;
        *wb = size;
        return;
    }
    double w = inverse_p(rate, size);
    *wn = (uint64_t)w + ((flags & ATAB_F_WUP) ? 1 : 0);
    *wb = (uint64_t)llround((double)size * w);
}

/* Sampled client: round this block's estimated count up with the
 * probability of its fraction, so that counts stay unbiased in sum. */
static unsigned round_flag(client_t *c, uint64_t size, unsigned flags)
{
    uint64_t rate = rate_of(c, flags);
    if (!rate || !size)
        return 0;
    double w = inverse_p(rate, size);
    double frac = w - (double)(uint64_t)w;
    c->rng = c->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    double u = (double)(c->rng >> 11) * (1.0 / 9007199254740992.0);
    return u < frac ? ATAB_F_WUP : 0;
}

static int alloc_flags(client_t *c, uint64_t addr, uint64_t ts, uint64_t size, uint32_t stack,
                       unsigned fl)
{
    cstack_t *s = stack_slot(c, stack);
    if (!s)
        return slot_err(c, stack);
    if (UNLIKELY_FROZEN(c)) {
        c->after_end++; /* the process is ending: its teardown is not its behaviour */
        return 0;
    }
    c->events++;
    c->allocs++;
    bump_ts(c, ts);
    if (!(fl & ATAB_F_UNSAMPLED))
        fl |= round_flag(c, size, fl);
    if (fl & ATAB_F_PY)
        s->py_sampled = 1;
    uint64_t wn, wb;
    client_weight(c, size, fl, &wn, &wb);
    s->alloc_n += wn;
    s->alloc_b += wb;
    if (ts < c->mark_ts) {
        /* Stamped before the mark, arrived after it: part of the baseline. */
        s->mark_alloc_n += wn;
        s->mark_alloc_b += wb;
    }
    if (!c->atab_ok)
        return 0; /* ended cleanly: the table is gone, totals only */
    live_sync(c);
    if ((c->proc ? c->proc->live : c->atab.live) >= c->max_live) {
        c->table_full++; /* counted, not tracked: the per-process cap */
        return 0;
    }
    c->live_n += wn;
    c->live_b += wb;
    reo_rec_t *r = reo_find(&c->reo, addr);
    if (r && r->free_ts && r->free_ts >= ts) {
        /* Its free arrived first (another thread's ring was drained earlier). */
        uint64_t tf = r->free_ts;
        r->free_ts = 0;
        if (!r->tomb_hi)
            reo_remove(&c->reo, r);
        count_free(c, s, size, ts, tf, fl);
        return 0;
    }
    atab_ent_t *e = atab_find(&c->atab, addr);
    if (e) {
        if (e->ts <= ts) {
            /* The address is reused, so the old block is dead; its free is
             * still in flight (or was lost). Count it freed now and leave a
             * tombstone to absorb the late free. */
            uint64_t lo = e->ts;
            free_entry(c, e, ts);
            c->implied_frees++;
            reo_rec_t *t = reo_get_c(c, addr);
            if (t) {
                t->tomb_lo = lo;
                t->tomb_hi = ts;
                t->due = ts + CLIENT_REORDER_NS;
            }
        } else {
            /* This block is older than the live one at its address: it died
             * before that one was made. */
            uint64_t hi = e->ts;
            count_free(c, s, size, ts, hi, fl);
            c->implied_frees++;
            reo_rec_t *t = reo_get_c(c, addr);
            if (t) {
                t->tomb_lo = ts;
                t->tomb_hi = hi;
                t->due = hi + CLIENT_REORDER_NS;
            }
            return 0;
        }
    }
    /* The weight flags go in with the entry: a late block expires inside. */
    if (!atab_insert_flags(&c->atab, addr, ts, size, stack, fl)) {
        c->table_full++;
        c->live_n -= wn;
        c->live_b -= wb;
    }
    live_sync(c);
    return 0;
}

int client_alloc(client_t *c, uint64_t addr, uint64_t ts, uint64_t size, uint32_t stack)
{
    return alloc_flags(c, addr, ts, size, stack, 0);
}

int client_fold_valid(const client_t *c, uint32_t stack, uint64_t count, uint64_t bytes,
                      uint64_t lt_sum, uint64_t lt_min, uint64_t lt_max)
{
    return count != 0 && count <= (1ull << 32) && lt_min <= lt_max &&
           bytes / count <= ATAB_SIZE_MAX && lt_max <= (1ull << 50) && lt_sum >= lt_min &&
           lt_sum / count <= lt_max && (count != 1 || lt_min == lt_max) &&
           lt_max < c->expire_ns && /* the agent folds only pairs that did not expire */
           stack < CLIENT_MAX_STACKS &&
           !c->sample_bytes; /* sampled blocks carry their own weights: never folded */
}

int client_fold(client_t *c, uint32_t stack, uint64_t count, uint64_t bytes, uint64_t lt_sum,
                uint64_t lt_min, uint64_t lt_max, uint64_t ts)
{
    if (!client_fold_valid(c, stack, count, bytes, lt_sum, lt_min, lt_max))
        return stack >= CLIENT_MAX_STACKS ? -EINVAL : -ERANGE;
    cstack_t *s = stack_slot(c, stack);
    if (!s)
        return slot_err(c, stack);
    if (UNLIKELY_FROZEN(c)) {
        c->after_end += 2 * count;
        return 0;
    }
    c->events += 2 * count;
    c->allocs += count;
    c->frees += count;
    s->alloc_n += count;
    s->alloc_b += bytes;
    s->free_n += count;
    s->free_b += bytes;
    if (ts < c->mark_ts) {
        /* A batch that began before the mark: its pairs are the baseline's. */
        s->mark_alloc_n += count;
        s->mark_alloc_b += bytes;
        s->mark_free_n += count;
        s->mark_free_b += bytes;
    }
    if (lt_min < s->lt_min)
        s->lt_min = lt_min;
    if (lt_max > s->lt_max)
        s->lt_max = lt_max;
    s->lt_sum += lt_sum;
    s->lt_n += count;
    return 0;
}

int client_alloc_unsampled(client_t *c, uint64_t addr, uint64_t ts, uint64_t size,
                           uint32_t stack)
{
    /* Meaningless from a client recording everything: an allocation. */
    return alloc_flags(c, addr, ts, size, stack, client_sampled(c) ? ATAB_F_UNSAMPLED : 0);
}

int client_alloc_py(client_t *c, uint64_t addr, uint64_t ts, uint64_t size, uint32_t stack)
{
    c->py_hooked = 1; /* before its next Stats say so */
    return alloc_flags(c, addr, ts, size, stack, c->py_sample_bytes ? ATAB_F_PY : 0);
}

int client_free(client_t *c, uint64_t addr, uint64_t ts)
{
    if (UNLIKELY_FROZEN(c)) {
        c->after_end++;
        return 0;
    }
    c->events++;
    bump_ts(c, ts);
    if (!c->atab_ok) {
        c->frees++;
        return 0;
    }
    atab_ent_t *e = atab_find(&c->atab, addr);
    if (e && e->ts <= ts) {
        free_entry(c, e, ts);
        return 0;
    }
    reo_rec_t *r = reo_find(&c->reo, addr);
    if (r && r->tomb_hi && r->tomb_lo <= ts && ts <= r->tomb_hi) {
        /* The late free of a block already counted as freed. */
        r->tomb_lo = r->tomb_hi = 0;
        if (!r->free_ts)
            reo_remove(&c->reo, r);
        return 0;
    }
    r = reo_get_c(c, addr);
    if (!r) {
        c->unknown_frees++;
        return 0;
    }
    if (r->free_ts)
        c->unknown_frees++; /* an older unmatched free at this address */
    r->free_ts = ts;
    r->due = ts + CLIENT_REORDER_NS;
    return 0;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static int same_frames(const pytb_t *t, const pyframe_t *frames, uint32_t n, const char *text)
{
    if (t->nframes != n || (!t->text) != (!text) || (text && strcmp(t->text, text) != 0))
        return 0;
    for (uint32_t i = 0; i < n; i++)
        if (t->frames[i].file != frames[i].file || t->frames[i].function != frames[i].function ||
            t->frames[i].line != frames[i].line)
            return 0; /* strings are interned: pointers compare */
    return 1;
}

static pytb_t *pytb_get(client_t *c, uint32_t stack, const pyframe_t *frames, uint32_t nframes,
                        int truncated, const char *text, uint32_t *index)
{
    /* Field by field: the struct has padding. */
    uint64_t h = 1469598103934665603ULL ^ stack;
    for (uint32_t i = 0; i < nframes; i++) {
        h = fnv(h, &frames[i].file, sizeof frames[i].file);
        h = fnv(h, &frames[i].function, sizeof frames[i].function);
        h = fnv(h, &frames[i].line, sizeof frames[i].line);
    }
    if (text)
        h = fnv(h, text, strlen(text));
    for (uint32_t i = 0; i < c->npytbs; i++)
        if (c->pytbs[i].hash == h && c->pytbs[i].stack == stack &&
            same_frames(&c->pytbs[i], frames, nframes, text)) {
            *index = i;
            return &c->pytbs[i];
        }
    if (c->npytbs >= CLIENT_MAX_PYTB)
        return NULL;
    /* The names are interned, shared: charged once, when new (ingest). */
    uint64_t bytes = nframes * sizeof *frames + (text ? strnlen(text, CLIENT_PYTB_TEXT_MAX) + 1 : 0);
    if (!str_fits_py(c, bytes)) {
        c->str_refused++;
        return NULL;
    }
    if (c->npytbs == c->pytbs_cap) {
        uint32_t ncap = c->pytbs_cap ? c->pytbs_cap * 2 : 16;
        pytb_t *nt = realloc(c->pytbs, ncap * sizeof *nt);
        if (!nt)
            return NULL;
        c->pytbs = nt;
        c->pytbs_cap = ncap;
    }
    pytb_t *tb = &c->pytbs[c->npytbs];
    memset(tb, 0, sizeof *tb);
    if (nframes) {
        tb->frames = malloc(nframes * sizeof *tb->frames);
        if (!tb->frames)
            return NULL;
        memcpy(tb->frames, frames, nframes * sizeof *frames);
    }
    if (text && !(tb->text = strndup(text, CLIENT_PYTB_TEXT_MAX))) {
        free(tb->frames);
        return NULL;
    }
    str_charge(c, bytes, 0);
    tb->stack = stack;
    tb->hash = h;
    tb->nframes = nframes;
    tb->truncated = truncated != 0;
    *index = c->npytbs++;
    return tb;
}

int client_pystr_room(client_t *c)
{
    if (str_fits_py(c, 0))
        return 1;
    c->str_refused++;
    return 0;
}

void client_charge_pystr(client_t *c, uint64_t bytes)
{
    str_charge(c, bytes, 0);
}

cstack_t *client_note(client_t *c, uint64_t addr, uint64_t ts, uint32_t stack,
                      const pyframe_t *frames, uint32_t nframes, int truncated, const char *text,
                      uint32_t py_missing)
{
    c->notes++;
    cstack_t *s = cstack_at(c, stack);
    if (!s)
        return NULL;
    if (!nframes && py_missing && py_missing < 4)
        s->py_missing[py_missing]++;
    if (text && !*text)
        text = NULL;
    atab_ent_t *e = c->atab_ok && addr ? atab_find(&c->atab, addr) : NULL;
    if (e && (e->ts != ts || e->stack != stack))
        e = NULL; /* the address was reused: this block is gone */
    pytb_t *have = e ? noted_tb(c, e) : NULL;
    if (have) {
        /* One firing per allocation: a second note can only be a handler's
         * text for a block whose frames we captured. Keep both. */
        if (!nframes && text && !have->text) {
            size_t tl = strnlen(text, CLIENT_PYTB_TEXT_MAX) + 1;
            if (str_fits_py(c, tl) && (have->text = strndup(text, CLIENT_PYTB_TEXT_MAX)))
                str_charge(c, tl, 0);
        }
        return s;
    }
    if (!nframes && !text)
        return s; /* a firing with nothing to attach (not Python, GIL not held) */
    uint32_t idx;
    pytb_t *tb = pytb_get(c, stack, frames, nframes, truncated, text, &idx);
    if (!tb)
        return s;
    tb->captures++;
    if (e) { /* (have is NULL here) */
        if (amap_put(&c->noted, addr, idx) == 0) {
            e->flags |= ATAB_F_NOTED;
            tb->live_n++;
            tb->live_b += e->size;
            if (e->flags & ATAB_F_EXPIRED) {
                tb->exp_n++;
                tb->exp_b += e->size;
                tb->may_n++;
                tb->may_b += e->size;
            }
        }
    } else if (!e) {
        tb->freed++;
    }
    return s;
}

void client_python_attached(client_t *c)
{
    for (uint32_t i = 0; i < c->nstacks; i++) {
        cstack_t *s = c->slist[i];
        if (s && s->leak_seen && s->arm_kind == ARM_NONE && s->exp_n > s->fexp_n)
            push_u32(&c->leakq, &c->nleakq, &c->leakq_cap, s->index);
    }
}

static void mark_uncertain(void *ctx, atab_ent_t *e)
{
    client_t *c = ctx;
    if (e->flags & ATAB_F_UNCERTAIN)
        return;
    e->flags |= ATAB_F_UNCERTAIN;
    cstack_t *s = cstack_at(c, e->stack);
    if (s) {
        uint64_t wn, wb;
        client_weight(c, e->size, e->flags, &wn, &wb);
        s->unc_n += wn;
        s->unc_b += wb;
    }
}

void client_all_uncertain(client_t *c)
{
    if (c->atab_ok)
        atab_each(&c->atab, mark_uncertain, c);
}

void client_gap(client_t *c, uint64_t lost_events)
{
    c->gaps++;
    c->lost_events += lost_events;
    client_all_uncertain(c);
}

void client_age(client_t *c, uint64_t now)
{
    live_sync(c); /* frees since its last allocation lower the process's count */
    reo_sync(c);
    if (c->frozen || !c->atab_ok)
        return;
    atab_age(&c->atab, now);
    uint64_t horizon = c->max_ts > CLIENT_REORDER_NS ? c->max_ts - CLIENT_REORDER_NS : 0;
    /* An idle client still gets its records resolved (collector clock). */
    uint64_t idle = now > 5 * CLIENT_REORDER_NS ? now - 5 * CLIENT_REORDER_NS : 0;
    if (idle > horizon)
        horizon = idle;
    c->unknown_frees += reo_expire(&c->reo, horizon);
}

/* The last scan's verdict on a block live at the end: it outlives the table. */
static void end_scanned(const client_t *c, cstack_t *s, const atab_ent_t *e, uint64_t wn,
                        uint64_t wb)
{
    if (!(e->flags & ATAB_F_SCANNED))
        return;
    if (e->flags & ATAB_F_UNREACH) {
        s->end_un_n += wn;
        s->end_un_b += wb;
        if (e->flags & ATAB_F_INDIRECT) {
            s->end_ind_n += wn;
            s->end_ind_b += wb;
        }
    } else {
        s->end_re_n += wn;
        s->end_re_b += wb;
    }
}

static void end_scanned_ent(void *ctx, atab_ent_t *e)
{
    client_t *c = ctx;
    cstack_t *s = cstack_at(c, e->stack);
    if (!s)
        return;
    uint64_t wn, wb;
    client_weight(c, e->size, e->flags, &wn, &wb);
    end_scanned(c, s, e, wn, wb);
}

void client_end_scanned(client_t *c)
{
    if (!c->frozen || !c->atab_ok)
        return;
    for (uint32_t i = 0; i < c->nstacks; i++) {
        cstack_t *s = c->slist[i];
        if (s) {
            s->end_un_n = s->end_un_b = s->end_re_n = s->end_re_b = 0;
            s->end_ind_n = s->end_ind_b = 0;
        }
    }
    atab_each(&c->atab, end_scanned_ent, c);
}

static void exit_live(void *ctx, atab_ent_t *e)
{
    client_t *c = ctx;
    cstack_t *s = cstack_at(c, e->stack);
    if (!s)
        return;
    uint64_t wn, wb;
    client_weight(c, e->size, e->flags, &wn, &wb);
    s->exit_live_n += wn;
    s->exit_live_b += wb;
    if (!s->oldest_live_ts || e->ts < s->oldest_live_ts)
        s->oldest_live_ts = e->ts;
    end_scanned(c, s, e, wn, wb);
    if (c->mark_ts && e->ts >= c->mark_ts) {
        /* Since-mark figures outlive the table (a clean exit releases it). */
        s->mend_live_n += wn;
        s->mend_live_b += wb;
        if (e->flags & ATAB_F_EXPIRED) {
            s->mend_may_n += wn;
            s->mend_may_b += wb;
        }
        if (!s->mend_oldest || e->ts < s->mend_oldest)
            s->mend_oldest = e->ts;
    }
}

static void clear_end_figures(client_t *c)
{
    for (uint32_t i = 0; i < c->nstacks; i++) {
        cstack_t *s = c->slist[i];
        if (s) {
            s->exit_live_n = s->exit_live_b = 0;
            s->oldest_live_ts = 0;
            s->mend_may_n = s->mend_may_b = s->mend_live_n = s->mend_live_b = 0;
            s->mend_oldest = 0;
            s->end_un_n = s->end_un_b = s->end_re_n = s->end_re_b = 0;
            s->end_ind_n = s->end_ind_b = 0;
        }
    }
}

static void classify_all(client_t *c, uint64_t now, int ending);

/* Freezes ages and classes at end_ts (once). */
static void freeze_at(client_t *c, uint64_t end_ts)
{
    c->end_ts = end_ts;
    if (c->atab_ok) {
        atab_age(&c->atab, end_ts);
        c->unknown_frees += reo_expire(&c->reo, UINT64_MAX);
        clear_end_figures(c);
        atab_each(&c->atab, exit_live, c);
    }
    /* A last verdict with what expired by the end: a stack whose blocks
     * expired after the last tick is not left "transient". Never at a time
     * before a tick already taken (the end can be stamped before it). */
    classify_all(c, end_ts > c->last_tick ? end_ts : c->last_tick, 1);
    c->frozen = 1;
}

void client_freeze(client_t *c, uint64_t end_ts, int clean)
{
    if (!c->frozen)
        freeze_at(c, c->ending && c->end_ts ? c->end_ts : end_ts);
    if (clean)
        c->state = CLIENT_EXITED;
    else if (c->state == CLIENT_CONNECTED)
        c->state = CLIENT_LOST; /* gone without its Goodbye */
    if (clean && c->atab_ok) {
        /* A clean exit never comes back: keep the summaries, not the table. */
        atab_free(&c->atab);
        reo_free(&c->reo);
        amap_free(&c->noted);
        c->atab_ok = 0;
        live_sync(c);
        reo_sync(c);
    }
}

void client_ending(client_t *c, uint64_t ts, const char *why)
{
    if (c->ending)
        return;
    c->ending = 1;
    snprintf(c->end_reason, sizeof c->end_reason, "%s", why && *why ? why : "ending");
    if (!c->frozen)
        freeze_at(c, ts);
}

void client_revive(client_t *c)
{
    if (!c->frozen || !c->atab_ok || c->ending)
        return;
    c->frozen = 0;
    c->state = CLIENT_CONNECTED;
    c->end_ts = 0;
    clear_end_figures(c);
}

void client_destroy(client_t *c)
{
    if (c->atab_ok) {
        atab_free(&c->atab);
        reo_free(&c->reo);
    }
    if (c->proc) {
        cproc_t *p = c->proc;
        p->live -= c->live_acct;
        p->pcs -= c->total_pcs;
        p->frames -= c->ftab.n;
        p->str -= c->str_bytes;
        p->stacks -= c->nstacks;
        p->reo -= c->reo_acct;
        p->clients--;
        cproc_unref(p);
    }
    for (uint32_t i = 0; i < c->nstacks; i++) {
        cstack_t *s = c->slist[i];
        if (!s)
            continue;
        free(s->fids);
        sym_release(s->sym);
        classify_free(s->cls);
        free(s);
    }
    for (uint32_t i = 0; i < c->stacks_cap >> CLIENT_SPAGE_BITS; i++)
        free(c->spage[i]);
    free(c->spage);
    free(c->slist);
    ftab_free(&c->ftab);
    free(c->scan_own);
    free(c->scan_paths);
    for (size_t i = 0; i < c->nscan_labels; i++)
        free(c->scan_labels[i]);
    free(c->scan_labels);
    for (size_t i = 0; i < c->nscan_pytypes; i++)
        free(c->scan_pytypes[i]);
    free(c->scan_pytypes);
    free(c->symq);
    free(c->leakq);
    free(c->hotq);
    series_free(&c->series);
    for (uint32_t i = 0; i < c->npytbs; i++) {
        free(c->pytbs[i].frames);
        free(c->pytbs[i].text);
    }
    free(c->pytbs);
    amap_free(&c->noted);
    free(c->python_status);
    for (uint32_t i = 0; i < c->mods_cap; i++) {
        free(c->mods[i].path);
        free(c->mods[i].ranges);
    }
    free(c->mods);
    for (uint32_t i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    free(c->exe);
    free(c->sample);
    free(c);
}

static void classify_all(client_t *c, uint64_t now, int ending)
{
    if (c->frozen)
        return; /* classes freeze with the ages */
    if (now > c->last_tick)
        c->last_tick = now;
    mem_point_t mp = { c->rss_b, c->heap_b, c->heap_free_b };
    series_add_mem(&c->series, &c->mseries, now, c->live_b, c->live_n, c->may_b, &mp);
    for (uint32_t i = 0; i < c->nstacks; i++) {
        cstack_t *s = c->slist[i];
        if (!s || !s->alloc_n)
            continue;
        cls_in_t in = { s->exp_n, s->fexp_n, s->exp_n - s->fexp_n, s->exp_b - s->fexp_b,
                        s->alloc_n - s->free_n, s->alloc_b - s->free_b, s->alloc_n,
                        client_stack_rate(c, s), ending };
        if (s->exp_n && !s->cls && (s->cls = malloc(sizeof *s->cls)))
            classify_init(s->cls, now, c->expire_ns, &in);
        verdict_t v = classify_tick(s->cls, now, c->expire_ns, &in);
        int hot = v.klass == CLASS_LEAK || v.klass == CLASS_GROWING;
        if (hot && s->klass != CLASS_LEAK && s->klass != CLASS_GROWING)
            push_u32(&c->hotq, &c->nhotq, &c->hotq_cap, s->index); /* rules see it */
        s->klass = (uint8_t)v.klass;
        s->confidence = (float)v.confidence;
        s->growth_per_min = v.growth_per_min;
    }
}

void client_classify(client_t *c, uint64_t now)
{
    classify_all(c, now, 0);
}

void client_mark(client_t *c, uint64_t now)
{
    c->mark_ts = now;
    for (uint32_t i = 0; i < c->nstacks; i++) {
        cstack_t *s = c->slist[i];
        if (!s)
            continue;
        s->mark_alloc_n = s->alloc_n;
        s->mark_alloc_b = s->alloc_b;
        s->mark_free_n = s->free_n;
        s->mark_free_b = s->free_b;
    }
}

/* When a client ended for retention: its connection went (collector clock),
 * else (frozen without one) its end. */
static uint64_t gone_at(const client_t *c)
{
    return c->gone_ts ? c->gone_ts : c->end_ts;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void clients_prune(clients_t *cs, uint64_t now)
{
    /* Aged out first; one dropped for its age does not take a place of the
     * count. */
    uint32_t ended = 0;
    client_t **pp = &cs->head;
    while (*pp) {
        client_t *c = *pp;
        if (c->conn || c->stale_conns || c->state == CLIENT_CONNECTED) {
            pp = &c->next;
            continue;
        }
        if (cs->retain_ns && c->end_ts && now > c->end_ts && now - c->end_ts > cs->retain_ns) {
            *pp = c->next;
            cs->count--;
            client_destroy(c);
            continue;
        }
        ended++;
        pp = &c->next;
    }
    if (ended <= cs->retain_max)
        return;
    /* Too many: the ones whose connection went longest ago go, whenever
     * they started (a process that ran for days and just ended is not
     * evicted by a burst of short-lived ones). Ties: the oldest started go
     * first. */
    uint32_t drop = ended - cs->retain_max;
    uint64_t *ends = malloc(ended * sizeof *ends);
    uint64_t cut = UINT64_MAX;
    uint32_t at_cut = drop;
    int sorted = ends != NULL;
    if (sorted) {
        uint32_t n = 0;
        for (client_t *c = cs->head; c; c = c->next)
            if (!c->conn && !c->stale_conns && c->state != CLIENT_CONNECTED)
                ends[n++] = gone_at(c);
        qsort(ends, n, sizeof *ends, u64_cmp);
        cut = ends[drop - 1];
        at_cut = 0;
        for (uint32_t i = 0; i < drop; i++)
            at_cut += ends[i] == cut;
        free(ends);
    }
    /* The list is newest first: ties at the cut are taken from its tail.
     * Out of memory, every ended client counts as a tie (the oldest started
     * go). */
    uint32_t ties = 0;
    for (client_t *c = cs->head; c; c = c->next)
        if (!c->conn && !c->stale_conns && c->state != CLIENT_CONNECTED && (!sorted || gone_at(c) == cut))
            ties++;
    pp = &cs->head;
    while (*pp && drop) {
        client_t *c = *pp;
        int gone = 0;
        if (!c->conn && !c->stale_conns && c->state != CLIENT_CONNECTED) {
            if (sorted && gone_at(c) < cut)
                gone = 1;
            else if ((!sorted || gone_at(c) == cut) && ties-- <= at_cut)
                gone = 1;
        }
        if (gone) {
            *pp = c->next;
            cs->count--;
            client_destroy(c);
            drop--;
            continue;
        }
        pp = &c->next;
    }
}

/* ---------------------------------------------------------------- frames and symbols */

void client_sym_done(client_t *c, cstack_t *s, sym_job_t *j)
{
    const symres_t *r = j->result;
    int split = r && j->pc_nf && j->pc_deg && j->npcs == s->npcs;
    if (split) {
        /* The job's frames are the stack's (a job made before the stack
         * was redefined is the stack's own business, as before, never the
         * table's). */
        uint64_t sum = 0;
        for (uint32_t i = 0; i < j->npcs; i++) {
            sum += j->pc_nf[i];
            if (!j->pcs || j->pcs[i] != cstack_pc(c, s, i))
                split = 0;
        }
        split = split && sum == r->n;
    }
    uint32_t at = 0;
    for (uint32_t i = 0; split && i < j->npcs; i++) {
        if (ftab_set_sym(&c->ftab, s->fids[i], &r->f[at], j->pc_nf[i], j->pc_deg[i]) < 0)
            split = 0;
        at += j->pc_nf[i];
    }
    sym_release(s->sym);
    s->sym = NULL;
    if (!split) {
        s->sym = j->result; /* its own frames, as they came */
        j->result = NULL;
    }
    s->sym_state = SYM_DONE;
}

/* Loop thread only: cstack_sym's frames. */
static symres_t *sym_scratch;
static uint32_t sym_scratch_cap;

const symres_t *cstack_sym(const client_t *c, const cstack_t *s)
{
    if (s->sym_state != SYM_DONE)
        return NULL;
    if (s->sym)
        return s->sym;
    uint64_t n = 0;
    int degraded = 0;
    for (uint32_t i = 0; i < s->npcs; i++) {
        const fent_t *e = &c->ftab.ent[s->fids[i]];
        if (e->state == FT_SYM_NONE)
            return NULL; /* not symbolized after all (a job that failed) */
        n += e->nsym;
        degraded |= e->state == FT_SYM_DEGRADED;
    }
    if (n > sym_scratch_cap || !sym_scratch) {
        uint64_t ncap = sym_scratch_cap ? sym_scratch_cap : 64;
        while (ncap < n)
            ncap *= 2;
        symres_t *nr = realloc(sym_scratch, sizeof *nr + ncap * sizeof(symframe_t));
        if (!nr)
            return NULL;
        sym_scratch = nr;
        sym_scratch_cap = (uint32_t)ncap;
    }
    symres_t *r = sym_scratch;
    r->n = (uint32_t)n;
    r->degraded = (uint8_t)degraded;
    uint32_t k = 0;
    for (uint32_t i = 0; i < s->npcs; i++) {
        const fent_t *e = &c->ftab.ent[s->fids[i]];
        for (uint32_t m = 0; m < e->nsym; m++) {
            const fsym_t *fs = &c->ftab.sym[e->sym + m];
            symframe_t *f = &r->f[k++];
            memset(f, 0, sizeof *f);
            f->addr = e->pc;
            f->module = fs->module;
            f->function = fs->function;
            f->offset = fs->offset;
            f->file = fs->file;
            f->line = fs->line;
            f->is_inline = fs->is_inline;
        }
    }
    return r;
}

static size_t symres_bytes(const symres_t *r)
{
    return r ? sizeof *r + r->n * sizeof(symframe_t) : 0;
}

void client_mem(const client_t *c, uint64_t *stack_bytes, uint64_t *block_bytes)
{
    /* malloc's own header (a word) per allocation counts too. */
    const size_t hdr = sizeof(size_t);
    uint64_t sb = ftab_bytes(&c->ftab) + (uint64_t)c->slist_cap * sizeof *c->slist +
                  (uint64_t)c->stacks_cap / CLIENT_SPAGE * sizeof *c->spage;
    for (uint32_t i = 0; i < c->stacks_cap / CLIENT_SPAGE; i++)
        if (c->spage[i])
            sb += CLIENT_SPAGE * sizeof **c->spage + hdr;
    for (uint32_t i = 0; i < c->nstacks; i++) {
        const cstack_t *s = c->slist[i];
        if (!s)
            continue;
        sb += sizeof *s + hdr + (s->npcs ? s->npcs * sizeof *s->fids + hdr : 0) +
              symres_bytes(s->sym) +
              (s->cls ? sizeof *s->cls + hdr + (s->cls->series.cap ? s->cls->series.cap + hdr : 0) : 0);
    }
    sb += (uint64_t)c->pytbs_cap * sizeof *c->pytbs;
    for (uint32_t i = 0; i < c->npytbs; i++)
        sb += c->pytbs[i].nframes * sizeof(pyframe_t) + hdr +
              (c->pytbs[i].text ? strlen(c->pytbs[i].text) + 1 + hdr : 0);
    uint64_t bb = 0;
    if (c->atab_ok)
        bb = (uint64_t)c->atab.ents_hw * sizeof(atab_ent_t) +
             ((uint64_t)c->atab.slot_mask + 1) * sizeof(uint32_t);
    if (c->noted.slots)
        bb += ((uint64_t)c->noted.mask + 1) * sizeof(amap_ent_t);
    *stack_bytes = sb;
    *block_bytes = bb;
}
