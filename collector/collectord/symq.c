/* collectord's symbolization queue: stacks to the symbolizer thread (module+offset at once without it). */
#include "symq.h"

#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "clock.h"
#include "sym.h"
#include "wrap.h"

void symq_stack(srv_t *s, client_t *c, cstack_t *st, int urgent)
{
    (void)s;
    if (st->sym_state != SYM_NONE || !st->defined)
        return;
    sym_job_t *j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->client_serial = c->serial;
    j->stack_index = st->index;
    j->pid = c->state == CLIENT_CONNECTED ? c->pid : 0;
    j->npcs = st->npcs;
    j->pcs = malloc((st->npcs ? st->npcs : 1) * sizeof *j->pcs);
    j->pc_mod = malloc((st->npcs ? st->npcs : 1) * sizeof *j->pc_mod);
    uint32_t mods_cap = 4;
    j->mods = calloc(mods_cap, sizeof *j->mods);
    if (!j->pcs || !j->pc_mod || !j->mods)
        goto fail;
    /* The module of the previous pc first: a stack's pcs come in runs of
     * one module (a numba process's stacks: 30 pcs in ~150 modules). */
    const cmod_t *hint = NULL;
    for (uint32_t i = 0; i < st->npcs; i++) {
        j->pcs[i] = cstack_pc(c, st, i);
        j->pc_mod[i] = -1;
        const cmod_t *last = hint;
        const cmod_t *m = client_module_near(c, j->pcs[i], st->gen, &hint);
        if (!m)
            continue;
        if (m == last && i > 0 && j->pc_mod[i - 1] >= 0) {
            j->pc_mod[i] = j->pc_mod[i - 1];
            continue;
        }
        uint32_t k;
        for (k = 0; k < j->nmods; k++)
            if (strcmp(j->mods[k].path, m->path) == 0 && j->mods[k].bias == m->bias)
                break;
        if (k == j->nmods) {
            if (j->nmods == mods_cap) {
                sym_mod_t *nm = realloc(j->mods, 2 * mods_cap * sizeof *nm);
                if (!nm)
                    goto fail;
                memset(nm + mods_cap, 0, mods_cap * sizeof *nm);
                j->mods = nm;
                mods_cap *= 2;
            }
            sym_mod_t *sm = &j->mods[j->nmods];
            sm->path = strdup(m->path);
            if (!sm->path)
                goto fail;
            memcpy(sm->build_id, m->build_id, m->build_id_len);
            sm->build_id_len = m->build_id_len;
            sm->bias = m->bias;
            sm->lo = m->nranges ? m->ranges[0] : 0;
            j->nmods++;
        }
        j->pc_mod[i] = (int32_t)k;
    }
    st->sym_state = SYM_PENDING;
    st->sym_urgent = (uint8_t)(urgent != 0);
    if (sym_submit(j, urgent) < 0) {
        /* No worker thread: module+offset frames now, never DWARF on the loop. */
        st->sym = sym_fallback(j);
        st->sym_state = st->sym ? SYM_DONE : SYM_NONE;
        st->sym_tried = clock_now();
        st->skip = 0;
        sym_job_free(j);
    }
    return;
fail:
    sym_job_free(j);
}

void symq_take_done(srv_t *s, void (*symbolized)(srv_t *s, client_t *c, cstack_t *st))
{
    sym_job_t *j;
    while ((j = sym_take_done())) {
        client_t *c = client_by_serial(&s->clients, j->client_serial);
        cstack_t *st = c ? cstack_at(c, j->stack_index) : NULL;
        if (st && st->sym_state == SYM_PENDING && j->result) {
            client_sym_done(c, st, j);
            /* A degraded stack is asked again a while after this, not after
             * its submission: a report that waited for a slow job takes it. */
            st->sym_tried = clock_now();
            st->skip = (uint16_t)wrap_count(cstack_sym(c, st));
            symbolized(s, c, st);
        } else if (st && st->sym_state == SYM_PENDING) {
            st->sym_state = SYM_NONE; /* out of memory: try again at query time */
        }
        sym_job_free(j);
    }
    symq_sweep_due(s);
    if (sym_backlog() < SYM_EAGER_MAX / 2)
        for (client_t *c = s->clients.head; c; c = c->next)
            if (c->nsymq)
                symq_eager(s, c);
}

void symq_eager(srv_t *s, client_t *c)
{
    uint32_t keep = 0;
    for (uint32_t i = 0; i < c->nsymq; i++) {
        cstack_t *st = cstack_at(c, c->symq[i]);
        if (!st)
            continue;
        if (sym_backlog() >= SYM_EAGER_MAX) {
            c->symq[keep++] = c->symq[i];
            continue;
        }
        st->sym_queued = 0;
        symq_stack(s, c, st, 0);
    }
    c->nsymq = keep;
}

/* After an ended process's report is stored: the modules no connected
 * process maps lose their libdw handles (a numba process leaves ~85 MB of
 * libdw's and libelf's data for libLLVM and 55 more modules, issue 20.2).
 * Their frames stay cached; the worker does it after the jobs queued before. */
void symq_sweep(srv_t *s)
{
    sym_job_t *j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->sweep = 1;
    uint32_t cap = 0;
    for (client_t *c = s->clients.head; c; c = c->next) {
        if (c->state != CLIENT_CONNECTED)
            continue;
        for (uint32_t i = 0; i < c->mods_cap; i++) {
            const cmod_t *m = &c->mods[i];
            if (!m->path)
                continue;
            uint32_t k = 0;
            while (k < j->nmods && !(j->mods[k].build_id_len == m->build_id_len &&
                                     memcmp(j->mods[k].build_id, m->build_id, m->build_id_len) == 0 &&
                                     strcmp(j->mods[k].path, m->path) == 0))
                k++;
            if (k < j->nmods)
                continue;
            if (j->nmods == cap) {
                uint32_t ncap = cap ? cap * 2 : 64;
                sym_mod_t *nm = realloc(j->mods, ncap * sizeof *nm);
                if (!nm)
                    goto fail; /* nothing closed rather than one needed */
                j->mods = nm;
                cap = ncap;
            }
            sym_mod_t *sm = &j->mods[j->nmods];
            memset(sm, 0, sizeof *sm);
            if (!(sm->path = strdup(m->path)))
                goto fail;
            memcpy(sm->build_id, m->build_id, m->build_id_len);
            sm->build_id_len = m->build_id_len;
            j->nmods++;
        }
    }
    if (sym_submit(j, 0) == 0)
        return;
fail:
    sym_job_free(j);
}

void symq_sweep_due(srv_t *s)
{
    if (!s->sweep_due || s->stopping)
        return;
    if (s->sweep_due == 2) {
        if (sym_backlog())
            return;
        for (client_t *c = s->clients.head; c; c = c->next)
            if (c->nsymq)
                return;
    }
    /* At most one a second: the keep list is every connected process's
     * modules, and short processes may end by the hundred. */
    uint64_t now = clock_now();
    if (s->sweep_ts && now - s->sweep_ts < SYMQ_SWEEP_MIN_NS)
        return;
    s->sweep_due = 0;
    s->sweep_ts = now;
    symq_sweep(s);
}
