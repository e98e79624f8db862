/* A process's memory map, from /proc/PID/maps. */
#ifndef STACKWATCH_COLLECTOR_PROCMAPS_H
#define STACKWATCH_COLLECTOR_PROCMAPS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum { MAPS_R = 1, MAPS_W = 2, MAPS_X = 4, MAPS_SHARED = 8 };

typedef struct maps_ent_s {
    uint64_t lo, hi;      /* [lo, hi) */
    uint64_t offset;      /* file offset */
    uint64_t inode;
    unsigned prot;        /* MAPS_* */
    char *path;           /* "" for anonymous; "[heap]", "[stack]", ... */
} maps_ent_t;

typedef struct maps_s {
    maps_ent_t *e;
    size_t n, cap;
} maps_t;

/* Reads /proc/PID/maps. Returns 0 or -errno (-ESRCH: no such process). */
int maps_read(maps_t *m, pid_t pid);

void maps_free(maps_t *m);

/* The entry containing addr, or NULL (binary search: entries are sorted). */
const maps_ent_t *maps_find(const maps_t *m, uint64_t addr);

/* The load bias of the ELF object mapped from path: the start of its
 * mapping at file offset `off` (the first PT_LOAD's page-aligned offset)
 * minus the page-aligned vaddr of that segment. Returns 0 and sets *bias,
 * or -ENOENT if the file is not mapped. */
int maps_bias(const maps_t *m, const char *path, uint64_t off, uint64_t vaddr, uint64_t *bias);

/* Opens a file a process maps, by the path its map shows (read in our own
 * mount namespace): read-only, never blocking in open (a FIFO put at the
 * path would hold the caller for good), a regular file only, not through
 * a symlink when nofollow, and the mapped inode unless inode is 0. Returns
 * the fd or -1. */
int maps_open_file(const char *path, int nofollow, uint64_t inode);

#endif
