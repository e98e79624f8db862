/* A small open-addressing map from block address to a 32-bit value. */
#ifndef STACKWATCH_COLLECTOR_AMAP_H
#define STACKWATCH_COLLECTOR_AMAP_H

#include <stdint.h>

typedef struct amap_ent_s {
    uint64_t key;   /* 0: empty */
    uint32_t val;
} amap_ent_t;

typedef struct amap_s {
    amap_ent_t *slots;
    uint32_t mask;  /* slots - 1 (0 when unallocated) */
    uint32_t used;
} amap_t;

/* Sets key's value. Returns 0 or -ENOMEM. key must not be 0. */
int amap_put(amap_t *m, uint64_t key, uint32_t val);

/* Finds key; returns 1 and sets *val, or 0. */
int amap_get(const amap_t *m, uint64_t key, uint32_t *val);

/* Removes key if present; returns 1 if it was. */
int amap_del(amap_t *m, uint64_t key);

void amap_free(amap_t *m);

#endif
