/* A client's frame table: each distinct return address once, with its symbolized frames; stacks hold 32-bit ids into it. */
#include "ftab.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint32_t ft_hash(uint64_t pc, uint32_t gen)
{
    uint64_t h = (pc ^ ((uint64_t)gen << 47) ^ gen) * 0x9e3779b97f4a7c15ULL;
    return (uint32_t)(h >> 32);
}

uint32_t ftab_find(const ftab_t *t, uint64_t pc, uint32_t gen)
{
    if (!t->nslot)
        return FTAB_NONE;
    uint32_t mask = t->nslot - 1;
    for (uint32_t i = ft_hash(pc, gen) & mask;; i = (i + 1) & mask) {
        uint32_t s = t->slot[i];
        if (!s)
            return FTAB_NONE;
        const fent_t *e = &t->ent[s - 1];
        if (e->pc == pc && e->gen == gen)
            return s - 1;
    }
}

/* Doubles the slots (load stays at most a half). */
static int ft_grow_slots(ftab_t *t)
{
    uint32_t n = t->nslot ? t->nslot * 2 : 1024;
    if (!n)
        return -ENOMEM;
    uint32_t *ns = calloc(n, sizeof *ns);
    if (!ns)
        return -ENOMEM;
    for (uint32_t id = 0; id < t->n; id++) {
        uint32_t i = ft_hash(t->ent[id].pc, t->ent[id].gen) & (n - 1);
        while (ns[i])
            i = (i + 1) & (n - 1);
        ns[i] = id + 1;
    }
    free(t->slot);
    t->slot = ns;
    t->nslot = n;
    return 0;
}

uint32_t ftab_get(ftab_t *t, uint64_t pc, uint32_t gen)
{
    uint32_t id = ftab_find(t, pc, gen);
    if (id != FTAB_NONE)
        return id;
    if (t->n >= FTAB_NONE - 1)
        return FTAB_NONE;
    if ((uint64_t)(t->n + 1) * 2 > t->nslot && ft_grow_slots(t) < 0)
        return FTAB_NONE;
    if (t->n == t->cap) {
        uint32_t ncap = t->cap ? t->cap * 2 : 256;
        fent_t *ne = realloc(t->ent, ncap * sizeof *ne);
        if (!ne)
            return FTAB_NONE;
        t->ent = ne;
        t->cap = ncap;
    }
    id = t->n++;
    t->ent[id] = (fent_t){ .pc = pc, .gen = gen };
    uint32_t mask = t->nslot - 1;
    uint32_t i = ft_hash(pc, gen) & mask;
    while (t->slot[i])
        i = (i + 1) & mask;
    t->slot[i] = id + 1;
    return id;
}

int ftab_set_sym(ftab_t *t, uint32_t id, const symframe_t *f, uint32_t n, int degraded)
{
    if (id >= t->n)
        return -EINVAL;
    fent_t *e = &t->ent[id];
    if (e->state == FT_SYM_DONE || (e->state == FT_SYM_DEGRADED && degraded))
        return 0; /* a pc's frames do not change; a degraded result is no better */
    if (n > FTAB_SYM_MAX)
        return -E2BIG;
    if (t->nsym + n < t->nsym)
        return -ENOMEM;
    if (t->nsym + n > t->symcap) {
        uint32_t ncap = t->symcap ? t->symcap : 256;
        while (ncap < t->nsym + n) {
            if (ncap > UINT32_MAX / 2)
                return -ENOMEM;
            ncap *= 2;
        }
        fsym_t *ns = realloc(t->sym, (size_t)ncap * sizeof *ns);
        if (!ns)
            return -ENOMEM;
        t->sym = ns;
        t->symcap = ncap;
    }
    /* A degraded entry's old frames stay in the pool (once per entry). */
    for (uint32_t k = 0; k < n; k++) {
        fsym_t *s = &t->sym[t->nsym + k];
        s->function = f[k].function;
        s->file = f[k].file;
        s->module = f[k].module;
        s->offset = f[k].offset > UINT32_MAX ? UINT32_MAX : (uint32_t)f[k].offset;
        s->line = f[k].line;
        s->is_inline = f[k].is_inline;
    }
    e->sym = t->nsym;
    e->nsym = (uint16_t)n;
    e->state = degraded ? FT_SYM_DEGRADED : FT_SYM_DONE;
    t->nsym += n;
    return 0;
}

size_t ftab_bytes(const ftab_t *t)
{
    return (size_t)t->cap * sizeof *t->ent + (size_t)t->nslot * sizeof *t->slot +
           (size_t)t->symcap * sizeof *t->sym;
}

void ftab_free(ftab_t *t)
{
    free(t->ent);
    free(t->slot);
    free(t->sym);
    memset(t, 0, sizeof *t);
}
