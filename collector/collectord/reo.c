/* Reorder records: per-address memory of events that arrived out of time order across threads. */
#include "reo.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define REO_MIN 64u

int reo_init(reo_t *r, uint32_t max)
{
    r->slots = calloc(REO_MIN, sizeof *r->slots);
    if (!r->slots)
        return -ENOMEM;
    r->mask = REO_MIN - 1;
    r->used = 0;
    r->max = max;
    return 0;
}

void reo_free(reo_t *r)
{
    free(r->slots);
    r->slots = NULL;
    r->used = 0;
}

static reo_rec_t *slot_of(reo_t *r, uint64_t addr)
{
    uint32_t i = reo_hash(addr, r->mask);
    while (r->slots[i].addr != 0 && r->slots[i].addr != addr)
        i = (i + 1) & r->mask;
    return &r->slots[i];
}

reo_rec_t *reo_find(reo_t *r, uint64_t addr)
{
    if (!r->slots || r->used == 0 || addr == 0)
        return NULL;
    reo_rec_t *s = slot_of(r, addr);
    return s->addr ? s : NULL;
}

static int grow(reo_t *r)
{
    uint32_t n = (r->mask + 1) * 2;
    reo_rec_t *ns = calloc(n, sizeof *ns);
    if (!ns)
        return -ENOMEM;
    reo_rec_t *old = r->slots;
    uint32_t oldn = r->mask + 1;
    r->slots = ns;
    r->mask = n - 1;
    for (uint32_t i = 0; i < oldn; i++)
        if (old[i].addr)
            *slot_of(r, old[i].addr) = old[i];
    free(old);
    return 0;
}

reo_rec_t *reo_get(reo_t *r, uint64_t addr)
{
    if (!r->slots || addr == 0)
        return NULL;
    reo_rec_t *s = slot_of(r, addr);
    if (s->addr)
        return s;
    if (r->used >= r->max)
        return NULL;
    if ((r->used + 1) * 2 > r->mask + 1) {
        if (grow(r) < 0)
            return NULL;
        s = slot_of(r, addr);
    }
    memset(s, 0, sizeof *s);
    s->addr = addr;
    r->used++;
    return s;
}

void reo_remove(reo_t *r, reo_rec_t *rec)
{
    uint32_t i = (uint32_t)(rec - r->slots);
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & r->mask;
        if (r->slots[j].addr == 0)
            break;
        uint32_t home = reo_hash(r->slots[j].addr, r->mask);
        int in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            r->slots[i] = r->slots[j];
            i = j;
        }
    }
    memset(&r->slots[i], 0, sizeof r->slots[i]);
    r->used--;
}

uint64_t reo_expire(reo_t *r, uint64_t now)
{
    uint64_t unknown = 0;
    if (!r->slots || r->used == 0)
        return 0;
    /* Removal shifts later records back into slot i: re-examine i then. */
    for (uint32_t i = 0; i <= r->mask;) {
        reo_rec_t *s = &r->slots[i];
        if (s->addr && s->due <= now) {
            if (s->free_ts)
                unknown++;
            reo_remove(r, s);
            continue;
        }
        i++;
    }
    return unknown;
}
