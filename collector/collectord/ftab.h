/* A client's frame table: each distinct return address once, with its symbolized frames; stacks hold 32-bit ids into it. */
#ifndef STACKWATCH_COLLECTOR_FTAB_H
#define STACKWATCH_COLLECTOR_FTAB_H

#include <stddef.h>
#include <stdint.h>

#include "sym.h"

#define FTAB_NONE UINT32_MAX
#define FTAB_SYM_MAX 4096u   /* symbolized frames of one pc (inlined calls) kept at most */

enum { FT_SYM_NONE = 0, FT_SYM_DONE = 1, FT_SYM_DEGRADED = 2 };

/* One symbolized frame (strings interned for the daemon's life). */
typedef struct fsym_s {
    const char *function;   /* NULL when unknown */
    const char *file;       /* NULL when unknown */
    const char *module;     /* NULL: in no known module */
    uint32_t offset;        /* addr - symbol start, valid with function */
    uint32_t line;
    uint8_t is_inline;
} fsym_t;

/* One distinct frame: a return address as captured at a module-map
 * generation (the same address may lie in another module at another
 * generation), and its symbolized frames once done. */
typedef struct fent_s {
    uint64_t pc;
    uint32_t gen;
    uint32_t sym;           /* its frames: ftab_t.sym[sym .. sym + nsym) */
    uint16_t nsym;
    uint8_t state;          /* FT_SYM_* */
} fent_t;

typedef struct ftab_s {
    fent_t *ent;            /* by id */
    uint32_t n, cap;
    uint32_t *slot;         /* open addressing: id + 1, 0 empty */
    uint32_t nslot;         /* a power of two (0: none yet) */
    fsym_t *sym;            /* symbolized frames of every entry */
    uint32_t nsym, symcap;
} ftab_t;

/* The id of (pc, gen), or FTAB_NONE. */
uint32_t ftab_find(const ftab_t *t, uint64_t pc, uint32_t gen);

/* The id of (pc, gen), added if new; FTAB_NONE on ENOMEM. */
uint32_t ftab_get(ftab_t *t, uint64_t pc, uint32_t gen);

/* Keeps the symbolized frames f[0..n) of entry id (addresses are not kept:
 * every frame of a pc has its address). An entry done keeps its frames;
 * one done degraded takes a later result that is not. Returns 0, or
 * -ENOMEM / -E2BIG (n > FTAB_SYM_MAX): the entry is left as it was. */
int ftab_set_sym(ftab_t *t, uint32_t id, const symframe_t *f, uint32_t n, int degraded);

/* Bytes the table holds (its arrays, at their capacity). */
size_t ftab_bytes(const ftab_t *t);

void ftab_free(ftab_t *t);

#endif
