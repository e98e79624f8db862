/* Reachability: a conservative pointer scan from roots through live blocks, over a copy of a process's memory. */
#ifndef STACKWATCH_COLLECTOR_REACH_H
#define STACKWATCH_COLLECTOR_REACH_H

#include <stddef.h>
#include <stdint.h>

/* An address range [lo, hi). */
typedef struct reach_rng_s {
    uint64_t lo, hi;
} reach_rng_t;

/* Bytes copied out of the process: [lo, hi) at data. */
typedef struct reach_run_s {
    uint64_t lo, hi;
    const uint8_t *data;
} reach_run_t;

/* The copy: runs sorted by address, not overlapping. Memory not in a run
 * (pages never touched, not read) reads as zeros. */
typedef struct reach_img_s {
    const reach_run_t *runs;
    size_t n;
} reach_img_t;

/* A live tracked block. Blocks are sorted by address. */
typedef struct reach_blk_s {
    uint64_t addr, size;
} reach_blk_t;

/* Scratch memory for a scan's per-block arrays: its own mapping (zeroed),
 * unmapped when freed, so a scan's peak goes back to the system at once
 * and does not stay in a malloc arena (issue 19.6). NULL on failure;
 * reach_scratch_free(NULL) does nothing. */
void *reach_scratch(size_t n);
void reach_scratch_free(void *p);

/* Sorts and merges ranges in place (empty ones dropped). Returns the count. */
size_t reach_rng_normalize(reach_rng_t *r, size_t n);

/* out = a minus b (both normalized); out has room for na + nb ranges.
 * Returns the count. */
size_t reach_rng_sub(const reach_rng_t *a, size_t na, const reach_rng_t *b, size_t nb,
                     reach_rng_t *out);

/* The copied bytes at [addr, addr + len) if one run holds them all, else NULL. */
const uint8_t *reach_img_at(const reach_img_t *img, uint64_t addr, size_t len);

/* The copied 8-byte word at addr into *v: 1, or 0 when the copy lacks it. */
int reach_word_at(const reach_img_t *img, uint64_t addr, uint64_t *v);

/* Appends [lo, hi) to the growable malloc'd array *out (*n ranges, room
 * for *cap), merged with the last range when they touch. 0 or -ENOMEM. */
int reach_rng_push(reach_rng_t **out, size_t *n, size_t *cap, uint64_t lo, uint64_t hi);

/* The words of [lo, hi) (8-byte aligned bounds) whose copy differs from
 * orig, the hi - lo bytes the range held when it was loaded (its file's),
 * appended to *out as merged ranges (a growable malloc'd array: *n ranges,
 * room for *cap). A word the copy lacks reads as zero and is left out. A
 * word a module's data still holds from its file was never stored by the
 * program: never a pointer to a block (a non-PIE executable's initialized
 * data, CPython's deep-frozen byte code, reads as heap addresses). Returns
 * 0 or -ENOMEM. */
int reach_rng_changed(const reach_img_t *img, uint64_t lo, uint64_t hi, const uint8_t *orig,
                      reach_rng_t **out, size_t *n, size_t *cap);

/* The ranges of the malloc heap that hold the blocks (appended to out, room
 * for nb + 1 ranges; returns how many): glibc's main heap (the [heap]
 * mapping, `brk`), the heap of another arena (64 MiB aligned; its size from
 * the heap_info at its start), or an mmap'd chunk (its mapping, from the
 * chunk header). Where a header does not make sense (another allocator),
 * the whole mapping holding the block (from vmas, normalized). */
size_t reach_heap_areas(const reach_img_t *img, const reach_blk_t *b, size_t nb,
                        reach_rng_t brk, const reach_rng_t *vmas, size_t nvmas, reach_rng_t *out);

/* CPython's pymalloc (3.11 to 3.14, 64-bit, the default radix-tree build):
 * small objects live in 16 KiB pools, aligned, each headed by a
 * pool_header; a pool holds blocks of one size class. */
#define REACH_POOL_SIZE 16384u

/* The pools of pymalloc in the ranges r (normalized) of the copy, found by
 * their headers, each checked whole: size class, offsets, a free list of
 * blocks of the pool that ends, and its length agreeing with the pool's
 * count of live blocks. Appends each pool's range to *pools and its live
 * blocks (those carved and not on the free list) to *blks, both in address
 * order (growable malloc'd arrays: *npools, *nblks counts, *pcap, *bcap
 * their room). Returns 0, -ENOMEM, or -E2BIG past max_blocks live blocks. */
int reach_pools(const reach_img_t *img, const reach_rng_t *r, size_t nr, size_t max_blocks,
                reach_rng_t **pools, size_t *npools, size_t *pcap, reach_blk_t **blks,
                size_t *nblks, size_t *bcap);

typedef struct reach_stats_s {
    uint64_t root_bytes;     /* bytes of roots scanned */
    uint64_t scanned_bytes;  /* bytes of blocks scanned */
    uint64_t marked;         /* blocks found reachable */
    uint64_t deferred;       /* reach_mark_py: words deferred as GC links */
} reach_stats_t;

/* Marks the blocks reachable from the roots: the words of the root ranges
 * and the values in vals (registers). A word points to a block when it lies
 * in [addr, addr + size) (an interior pointer counts, as in LeakSanitizer; a
 * block of size 0 only at its address). Words are 8-byte aligned. A marked
 * block's words are scanned in turn. Sets marked[i] to 1 or 0. Returns 0 or
 * -ENOMEM. */
int reach_mark(const reach_img_t *img, const reach_blk_t *b, size_t nb, const reach_rng_t *roots,
               size_t nroots, const uint64_t *vals, size_t nvals, uint8_t *marked,
               reach_stats_t *st);

/* reach_mark that also says why each marked block is reachable, on a
 * shortest chain (marking goes breadth first): parent[i] is the block whose
 * word first pointed to block i, or REACH_PARENT_ROOT; via[i] the address
 * of that word (in a root range, or in the parent block), or
 * REACH_VIA_REG | k for vals[k]. Unmarked blocks' entries are not set. */
#define REACH_PARENT_ROOT UINT32_MAX
#define REACH_VIA_REG (1ull << 63)
int reach_mark_paths(const reach_img_t *img, const reach_blk_t *b, size_t nb,
                     const reach_rng_t *roots, size_t nroots, const uint64_t *vals, size_t nvals,
                     uint8_t *marked, reach_stats_t *st, uint32_t *parent, uint64_t *via);

/* A word that may be a GC link, followed after every other (reach_mark_py). */
typedef struct reach_defer_s {
    uint32_t blk, src;
    uint64_t at;
} reach_defer_t;

/* reach_mark_paths over blocks some of which are pymalloc's (pyn[i] 1):
 * a word that may be a link of CPython's GC lists (from a root or from the
 * PyGC_Head of such a block to where another's head would be: the first
 * 16 bytes, or the next 16 behind a pre-header) is followed only once nothing else is left
 * to follow, so that a Python object's parent is what refers to it, not
 * its neighbour on the GC's list. The same blocks are marked as by
 * reach_mark_paths; only parents differ. At most max_defer words wait
 * (16 bytes each, mapped for the marking); past that they are followed at
 * once. */
int reach_mark_py(const reach_img_t *img, const reach_blk_t *b, size_t nb,
                  const reach_rng_t *roots, size_t nroots, const uint64_t *vals, size_t nvals,
                  uint8_t *marked, reach_stats_t *st, uint32_t *parent, uint64_t *via,
                  const uint8_t *pyn, size_t max_defer);

/* Not lost: reach_owners' owner for a marked block. */
#define REACH_OWNER_NONE (UINT32_MAX - 1)

/* Who owns the lost blocks (those reach_mark left unmarked), as valgrind
 * groups them: a lost block no other lost block points to is lost directly
 * and owns what it reaches through lost blocks (indirectly lost); in a
 * cycle of lost blocks nothing else points into, the one at the lowest
 * address is the direct one. Sets owner[i] to the index of the direct
 * block owning block i (i itself when i is lost directly), or
 * REACH_OWNER_NONE for a marked block. A block two direct blocks reach
 * belongs to the first found. Returns 0 or -ENOMEM. */
int reach_owners(const reach_img_t *img, const reach_blk_t *b, size_t nb, const uint8_t *marked,
                 uint32_t *owner);

#endif
