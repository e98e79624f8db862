/* The module map: loaded ELF objects by generation, found with dl_iterate_phdr only. */
#ifndef STACKWATCH_AGENT_MODMAP_H
#define STACKWATCH_AGENT_MODMAP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define MOD_MAX_RANGES 8
#define MOD_BUILD_ID_MAX 32

typedef struct mod_s {
    uint32_t id;                         /* index in the map, stable */
    uint32_t gen_added;                  /* first generation it is valid for */
    uint32_t gen_removed;                /* generation it vanished in; 0 = loaded */
    uint32_t nranges;                    /* PT_LOAD segments recorded */
    uint64_t bias;                       /* dlpi_addr */
    uint64_t lo, hi;                     /* hull of the ranges */
    uint64_t ranges[2 * MOD_MAX_RANGES]; /* [start, end) pairs, run-time addresses */
    uint8_t build_id[MOD_BUILD_ID_MAX];  /* NT_GNU_BUILD_ID, read from memory */
    uint32_t build_id_len;               /* 0: none */
    uint32_t path_off;                   /* offset of the path in the string pool */
    uint32_t sent_epoch;                 /* flusher: epoch the record was sent in */
    uint32_t sent_removed;               /* flusher: 1 once its removal was sent in sent_epoch */
} mod_t;

/* The generation stacks are captured under. Changes only when a module is
 * unloaded, so addresses keep one meaning within a generation. */
extern _Atomic uint32_t modmap_generation;

static inline uint32_t modmap_gen(void)
{
    return atomic_load_explicit(&modmap_generation, memory_order_relaxed);
}

/* Maps storage and records the initial set. exe is the main program's path
 * (dl_iterate_phdr names it ""). Returns 0 or -ENOMEM. Constructor only. */
/* The rest of /proc/self/maps' line for the mapping that holds addr (from
 * the space after "lo-hi": " perms offset dev inode path") into out, cut
 * at cap. 0, or -1 if nothing maps addr or the file cannot be read. Stack
 * buffers only, no malloc (callable from the hooks' paths). */
int modmap_maps_line(uint64_t addr, char *out, size_t cap);

int modmap_init(const char *exe);

/* Re-reads the loaded objects: new ones are added, missing ones marked
 * removed (bumping the generation). Returns 1 if anything changed. Takes the
 * map lock and the loader's phdr lock (dl_iterate_phdr); never the loader
 * lock, never malloc. Not for the malloc path. */
int modmap_refresh(void);

/* Cheap check, for the flusher's cycle: have objects been added or removed
 * since the last refresh (dlpi_adds/dlpi_subs)? */
int modmap_changed(void);

/* Threads inside dl_iterate_phdr now (its interposer counts them): while a
 * caller's callback runs it holds the loader's lock, which modmap_changed
 * would wait for (a thread allocating inside such a callback for seconds
 * stalled the flusher until the rings dropped 67k events: LeakSanitizer's
 * libdl_deadlock test). modmap_changed then says "no news" and is asked
 * again later; a stack outside every known module still forces a refresh. */
extern _Atomic int modmap_iterating;

/* 1 if pc lies in a module valid at generation gen. */
int modmap_covers(uint64_t pc, uint32_t gen);

/* Calls fn for every record not yet sent in epoch (new, or removed since),
 * marking it sent. Holds the map lock during the walk. Returns the count. */
size_t modmap_each_unsent(uint32_t epoch, void (*fn)(const mod_t *m, const char *path, void *arg),
                          void *arg);

/* dlclose support: call before and after the real dlclose. */
void modmap_before_unload(void);
void modmap_after_unload(void);

size_t modmap_bytes(void);

/* fork: the prepare handler takes the lock (0; -1 when it was not had
 * within timeout_ms), the parent's handler releases it if taken, the
 * child's re-creates it. modmap_fork_child returns -1 when another thread
 * was inside dl_iterate_phdr at the fork: the child inherits the loader's
 * phdr lock held and must never call dl_iterate_phdr (it would block for
 * good). */
int modmap_lock(int timeout_ms);
void modmap_unlock(void);
int modmap_fork_child(void);

#endif
