/* Stack interning: a lock-free table from stack fingerprint to a small index sent once per connection. */
#ifndef STACKWATCH_AGENT_INTERN_H
#define STACKWATCH_AGENT_INTERN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Index 0 stands for "stack not recorded" (table or pool full, unwind failed). */
#define INTERN_NONE 0u

enum { SLOT_EMPTY = 0, SLOT_CLAIMED = 1, SLOT_READY = 2 };
enum { SLOT_F_TRUNCATED = 1, SLOT_F_NOPCS = 2 };

typedef struct intern_slot_s {
    _Atomic uint64_t hash;   /* fingerprint; 0 = empty */
    _Atomic uint32_t state;  /* SLOT_EMPTY / CLAIMED / READY */
    uint32_t gen;            /* module-map generation at capture */
    uint32_t pc_off;         /* offset of the pcs in the pc pool */
    uint16_t npcs;           /* number of pcs */
    uint16_t flags;          /* SLOT_F_* */
    uint32_t sent_epoch;     /* flusher only: connection epoch it was last sent in */
    uint32_t pad;
} intern_slot_t;

/* Maps the table (slots, a power of two) and the pc pool. Returns 0 or -ENOMEM.
 * Called once from the constructor; mmap only. */
int intern_init(uint32_t slots, size_t pool_pcs);

/* Fingerprint of a stack: pcs and module-map generation. Never 0 or ~0. */
uint64_t intern_hash(const uint64_t *pcs, uint32_t n, uint32_t gen);

/* Returns the index of the stack (inserting it), or INTERN_NONE when the
 * table or pool is full. Lock-free, no syscall in the common case; safe on the
 * malloc path. */
uint32_t intern_stack(const uint64_t *pcs, uint32_t n, uint32_t gen, int truncated);

/* The slot of a ready index (READY guaranteed for indexes intern_stack returned). */
const intern_slot_t *intern_slot(uint32_t idx);
const uint64_t *intern_pcs(const intern_slot_t *s);

/* Flusher: returns 1 the first time idx is seen in this epoch (and marks it), else 0. */
int intern_take_unsent(uint32_t idx, uint32_t epoch);

/* Number of stacks interned; bytes mapped. */
uint32_t intern_count(void);
size_t intern_bytes(void);

/* Fork child: slots claimed by threads that no longer exist become unusable. */
void intern_fork_child(void);

#endif
