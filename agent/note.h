/* Notes: data attached to one allocation (its Python traceback, a handler's text), in a fixed pool. */
#ifndef STACKWATCH_AGENT_NOTE_H
#define STACKWATCH_AGENT_NOTE_H

#include <stdatomic.h>
#include <stdint.h>

#include "pyframes.h"

#define NOTE_SLOTS 256u
#define NOTE_TEXT_MAX 8192u

enum { NOTE_FREE = 0, NOTE_BUSY = 1 };

/* A note travels as an EV_NOTE event in its thread's ring (stack = slot
 * index), so it leaves after the allocation it belongs to; the flusher sends
 * it once that batch is out and frees the slot. */
typedef struct note_s {
    _Atomic uint32_t state;   /* NOTE_FREE, or NOTE_BUSY from claim until sent */
    uint32_t stack;           /* intern index of the allocation */
    uint32_t tid;             /* allocating thread */
    uint32_t text_len;        /* bytes of text (0: none) */
    uint64_t addr;            /* the allocation */
    uint64_t ts;              /* its timestamp */
    py_tb_t py;               /* Python frames (py.n == 0: none) */
    char text[NOTE_TEXT_MAX]; /* handler text (not NUL-terminated) */
} note_t;

/* Maps the pool. Returns 0 or -ENOMEM. Constructor only. */
int note_init(void);

/* Claims a free slot; NULL when all are in flight (counted). Lock-free, no
 * syscall: safe on the malloc path. */
note_t *note_claim(uint32_t *index);

/* The slot behind an index from an EV_NOTE event. */
note_t *note_at(uint32_t index);

/* Returns a slot to the pool (flusher, after sending or discarding). */
void note_release(note_t *n);

/* Notes not taken because the pool was full. */
uint64_t note_dropped(void);

/* Fork child: the parent's notes in flight belong to rings that are gone. */
void note_fork_child(void);

#endif
