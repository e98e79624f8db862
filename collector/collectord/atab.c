/* Allocation table: live blocks of one client by address, aged in time buckets. */
#include "atab.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS_MIN 1024u

int atab_init(atab_t *t, uint64_t expire_ns, uint64_t now, atab_expire_fn fn, void *ctx)
{
    memset(t, 0, sizeof *t);
    t->slots = malloc(SLOTS_MIN * sizeof *t->slots);
    if (!t->slots)
        return -ENOMEM;
    memset(t->slots, 0xff, SLOTS_MIN * sizeof *t->slots);
    t->slot_mask = SLOTS_MIN - 1;
    t->free_head = ATAB_NIL;
    t->expire_ns = expire_ns ? expire_ns : 1;
    t->width_ns = t->expire_ns / 64 ? t->expire_ns / 64 : 1;
    t->aged_upto = now > t->expire_ns ? (now - t->expire_ns) / t->width_ns : 0;
    for (uint32_t i = 0; i < ATAB_NB; i++)
        t->heads[i] = ATAB_NIL;
    t->on_expire = fn;
    t->ctx = ctx;
    return 0;
}

void atab_free(atab_t *t)
{
    free(t->ents);
    free(t->slots);
    t->ents = NULL;
    t->slots = NULL;
    t->live = t->ents_cap = t->ents_hw = 0;
    t->free_head = ATAB_NIL;
    t->hint_ok = 0;
}

size_t atab_bytes(const atab_t *t)
{
    return (size_t)t->ents_cap * sizeof(atab_ent_t) + ((size_t)t->slot_mask + 1) * sizeof(uint32_t);
}

static uint32_t *find_slot(atab_t *t, uint64_t addr)
{
    uint32_t i = atab_hash(addr, t->slot_mask);
    for (;;) {
        uint32_t e = t->slots[i];
        if (e == ATAB_NIL || t->ents[e].addr == addr)
            return &t->slots[i];
        i = (i + 1) & t->slot_mask;
    }
}

/* find_slot, answered from the last atab_find when nothing changed since:
 * client_free and client_alloc look an address up, then remove or insert it. */
static uint32_t *find_slot_hinted(atab_t *t, uint64_t addr)
{
    if (t->hint_ok && t->hint_addr == addr)
        return &t->slots[t->hint_slot];
    return find_slot(t, addr);
}

atab_ent_t *atab_find(atab_t *t, uint64_t addr)
{
    if (!t->ents)
        return NULL;
    uint32_t *s = find_slot(t, addr);
    t->hint_addr = addr;
    t->hint_slot = (uint32_t)(s - t->slots);
    t->hint_ok = 1;
    return *s == ATAB_NIL ? NULL : &t->ents[*s];
}

static int grow_slots(atab_t *t)
{
    if (t->slot_mask >= (1u << 30))
        return -ENOMEM; /* 2^31 slots would overflow the index type */
    uint32_t n = (t->slot_mask + 1) * 2;
    uint32_t *ns = malloc((size_t)n * sizeof *ns);
    if (!ns)
        return -ENOMEM;
    memset(ns, 0xff, (size_t)n * sizeof *ns);
    uint32_t mask = n - 1;
    for (uint32_t i = 0; i <= t->slot_mask; i++) {
        uint32_t e = t->slots[i];
        if (e == ATAB_NIL)
            continue;
        uint32_t j = atab_hash(t->ents[e].addr, mask);
        while (ns[j] != ATAB_NIL)
            j = (j + 1) & mask;
        ns[j] = e;
    }
    free(t->slots);
    t->slots = ns;
    t->slot_mask = mask;
    t->hint_ok = 0;
    return 0;
}

static uint32_t alloc_ent(atab_t *t)
{
    if (t->free_head != ATAB_NIL) {
        uint32_t e = t->free_head;
        t->free_head = t->ents[e].next;
        return e;
    }
    if (t->ents_hw == t->ents_cap) {
        if (t->ents_cap >= ATAB_NIL / 2)
            return ATAB_NIL;
        uint32_t ncap = t->ents_cap ? t->ents_cap * 2 : 1024;
        atab_ent_t *ne = realloc(t->ents, (size_t)ncap * sizeof *ne);
        if (!ne)
            return ATAB_NIL;
        t->ents = ne;
        t->ents_cap = ncap;
    }
    return t->ents_hw++;
}

/* ts / width_ns. Events come in time order, so the last answer mostly
 * holds; a 64-bit division costs more than the rest of an insert. */
static inline uint64_t bucket_of(atab_t *t, uint64_t ts)
{
    if (ts - t->b_lo >= t->width_ns) { /* also when ts < b_lo (wraps) */
        t->b_cur = ts / t->width_ns;
        t->b_lo = t->b_cur * t->width_ns;
    }
    return t->b_cur;
}

static void bucket_unlink(atab_t *t, uint32_t e)
{
    atab_ent_t *x = &t->ents[e];
    if (x->prev != ATAB_NIL)
        t->ents[x->prev].next = x->next;
    else /* the list head: insert never clamps, so its bucket follows from ts */
        t->heads[bucket_of(t, x->ts) % ATAB_NB] = x->next;
    if (x->next != ATAB_NIL)
        t->ents[x->next].prev = x->prev;
    x->prev = x->next = ATAB_NIL;
}

/* Processes bucket slot s: every entry in it expires. */
static size_t expire_slot(atab_t *t, uint32_t s)
{
    size_t n = 0;
    uint32_t e = t->heads[s];
    t->heads[s] = ATAB_NIL;
    while (e != ATAB_NIL) {
        atab_ent_t *x = &t->ents[e];
        uint32_t next = x->next;
        x->prev = x->next = ATAB_NIL;
        x->flags |= ATAB_F_EXPIRED;
        if (t->on_expire)
            t->on_expire(t->ctx, x);
        n++;
        e = next;
    }
    return n;
}

/* Processes buckets below upto. */
static size_t advance(atab_t *t, uint64_t upto)
{
    size_t n = 0;
    if (upto <= t->aged_upto)
        return 0;
    if (upto - t->aged_upto >= ATAB_NB) {
        /* Every bucket in the ring is older than upto. */
        for (uint32_t s = 0; s < ATAB_NB; s++)
            n += expire_slot(t, s);
    } else {
        for (uint64_t b = t->aged_upto; b < upto; b++)
            n += expire_slot(t, (uint32_t)(b % ATAB_NB));
    }
    t->aged_upto = upto;
    return n;
}

size_t atab_age(atab_t *t, uint64_t now)
{
    if (now <= t->expire_ns)
        return 0;
    /* Bucket b holds ts in [b*w, (b+1)*w): all expired once (b+1)*w + expire <= now. */
    return advance(t, (now - t->expire_ns) / t->width_ns);
}

atab_ent_t *atab_insert_flags(atab_t *t, uint64_t addr, uint64_t ts, uint64_t size, uint32_t stack,
                              unsigned flags)
{
    if ((uint64_t)t->live + 1 > (uint64_t)(t->slot_mask + 1) * 7 / 10 && grow_slots(t) < 0)
        return NULL;
    uint32_t e = alloc_ent(t);
    if (e == ATAB_NIL)
        return NULL;
    uint64_t b = bucket_of(t, ts);
    if (b >= t->aged_upto + ATAB_NB) {
        /* Time moved past what the ring covers since the last aging pass:
         * catch up first (those blocks are due anyway). */
        advance(t, b - ATAB_NB + 1);
    }
    atab_ent_t *x = &t->ents[e];
    x->addr = addr;
    x->ts = ts;
    x->size = size > ATAB_SIZE_MAX ? ATAB_SIZE_MAX : size;
    x->flags = flags & ~(unsigned)ATAB_F_EXPIRED;
    x->stack = stack;
    x->prev = x->next = ATAB_NIL;
    *find_slot_hinted(t, addr) = e;
    t->hint_ok = 0;
    t->live++;
    if (b < t->aged_upto) {
        x->flags |= ATAB_F_EXPIRED;
        if (t->on_expire)
            t->on_expire(t->ctx, x);
    } else {
        uint32_t *head = &t->heads[b % ATAB_NB];
        x->next = *head;
        if (*head != ATAB_NIL)
            t->ents[*head].prev = e;
        *head = e;
    }
    return x;
}

void atab_remove(atab_t *t, atab_ent_t *x)
{
    uint32_t e = (uint32_t)(x - t->ents);
    if (!(x->flags & ATAB_F_EXPIRED))
        bucket_unlink(t, e);
    /* Backward-shift deletion keeps probe chains intact without tombstones. */
    uint32_t i = (uint32_t)(find_slot_hinted(t, x->addr) - t->slots);
    t->hint_ok = 0;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & t->slot_mask;
        uint32_t f = t->slots[j];
        if (f == ATAB_NIL)
            break;
        uint32_t home = atab_hash(t->ents[f].addr, t->slot_mask);
        /* Move f back to i unless its home lies cyclically in (i, j]. */
        int in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            t->slots[i] = f;
            i = j;
        }
    }
    t->slots[i] = ATAB_NIL;
    x->next = t->free_head;
    x->prev = ATAB_NIL;
    x->addr = 0;
    t->free_head = e;
    t->live--;
}

void atab_each(atab_t *t, void (*fn)(void *ctx, atab_ent_t *e), void *ctx)
{
    if (!t->slots)
        return;
    for (uint32_t i = 0; i <= t->slot_mask; i++)
        if (t->slots[i] != ATAB_NIL)
            fn(ctx, &t->ents[t->slots[i]]);
}
