/* A small open-addressing map from block address to a 32-bit value. */
#include "amap.h"

#include <errno.h>
#include <stdlib.h>

static inline uint32_t slot_of(uint64_t key, uint32_t mask)
{
    return (uint32_t)((key * 0x9e3779b97f4a7c15ULL) >> 32) & mask;
}

static int grow(amap_t *m)
{
    uint32_t n = m->mask ? (m->mask + 1) * 2 : 64;
    amap_ent_t *ns = calloc(n, sizeof *ns);
    if (!ns)
        return -ENOMEM;
    for (uint32_t i = 0; m->slots && i <= m->mask; i++) {
        if (!m->slots[i].key)
            continue;
        uint32_t j = slot_of(m->slots[i].key, n - 1);
        while (ns[j].key)
            j = (j + 1) & (n - 1);
        ns[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = ns;
    m->mask = n - 1;
    return 0;
}

int amap_put(amap_t *m, uint64_t key, uint32_t val)
{
    if ((!m->slots || (m->used + 1) * 2 > m->mask + 1) && grow(m) < 0)
        return -ENOMEM;
    uint32_t i = slot_of(key, m->mask);
    while (m->slots[i].key && m->slots[i].key != key)
        i = (i + 1) & m->mask;
    if (!m->slots[i].key)
        m->used++;
    m->slots[i].key = key;
    m->slots[i].val = val;
    return 0;
}

int amap_get(const amap_t *m, uint64_t key, uint32_t *val)
{
    if (!m->slots)
        return 0;
    uint32_t i = slot_of(key, m->mask);
    while (m->slots[i].key) {
        if (m->slots[i].key == key) {
            *val = m->slots[i].val;
            return 1;
        }
        i = (i + 1) & m->mask;
    }
    return 0;
}

int amap_del(amap_t *m, uint64_t key)
{
    if (!m->slots)
        return 0;
    uint32_t i = slot_of(key, m->mask);
    while (m->slots[i].key && m->slots[i].key != key)
        i = (i + 1) & m->mask;
    if (!m->slots[i].key)
        return 0;
    /* Backward-shift deletion: no tombstones. */
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & m->mask;
        if (!m->slots[j].key)
            break;
        uint32_t home = slot_of(m->slots[j].key, m->mask);
        int in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = 0;
    m->used--;
    return 1;
}

void amap_free(amap_t *m)
{
    free(m->slots);
    m->slots = NULL;
    m->mask = m->used = 0;
}
