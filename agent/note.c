/* Notes: data attached to one allocation (its Python traceback, a handler's text), in a fixed pool. */
#include "note.h"

#include <errno.h>
#include <sys/mman.h>

#include "region.h"

static note_t *pool;
static _Atomic uint32_t cursor;
static _Atomic uint64_t dropped;

int note_init(void)
{
    void *p = mmap(NULL, NOTE_SLOTS * sizeof(note_t), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -ENOMEM;
    region_add(p, NOTE_SLOTS * sizeof(note_t));
    pool = p;
    return 0;
}

note_t *note_claim(uint32_t *index)
{
    if (!pool)
        return NULL;
    uint32_t start = atomic_fetch_add_explicit(&cursor, 1, memory_order_relaxed);
    for (uint32_t k = 0; k < NOTE_SLOTS; k++) {
        uint32_t i = (start + k) % NOTE_SLOTS;
        uint32_t expect = NOTE_FREE;
        /* acquire: the flusher's reads of a released slot are done. */
        if (atomic_compare_exchange_strong_explicit(&pool[i].state, &expect, NOTE_BUSY,
                                                    memory_order_acquire, memory_order_relaxed)) {
            *index = i;
            return &pool[i];
        }
    }
    atomic_fetch_add_explicit(&dropped, 1, memory_order_relaxed);
    return NULL;
}

note_t *note_at(uint32_t index)
{
    return pool && index < NOTE_SLOTS ? &pool[index] : NULL;
}

void note_release(note_t *n)
{
    /* release: our reads of the slot happen before a new owner writes it. */
    atomic_store_explicit(&n->state, NOTE_FREE, memory_order_release);
}

uint64_t note_dropped(void)
{
    return atomic_load_explicit(&dropped, memory_order_relaxed);
}

void note_fork_child(void)
{
    if (!pool)
        return;
    /* Write only slots in use: untouched pages stay untouched. */
    for (uint32_t i = 0; i < NOTE_SLOTS; i++)
        if (atomic_load_explicit(&pool[i].state, memory_order_relaxed) != NOTE_FREE)
            atomic_store_explicit(&pool[i].state, NOTE_FREE, memory_order_relaxed);
    atomic_store(&dropped, 0);
}
