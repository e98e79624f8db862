/* Unit tests of reachability marking: ranges, the copy, chains from roots, cycles, interior pointers, heap areas. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/collectord/reach.h"

/* A fake address space: one run at BASE, words written by address. */
#define BASE 0x10000000ull
#define SPAN (1u << 20)

static uint8_t mem[SPAN];

static void put(uint64_t addr, uint64_t v)
{
    assert_true(addr >= BASE && addr + 8 <= BASE + SPAN);
    memcpy(mem + (addr - BASE), &v, 8);
}

static reach_run_t one_run = { BASE, BASE + SPAN, mem };
static const reach_img_t img = { &one_run, 1 };

static void test_ranges(void **state)
{
    (void)state;
    reach_rng_t r[] = { { 50, 60 }, { 10, 20 }, { 15, 30 }, { 30, 35 }, { 70, 70 }, { 40, 45 } };
    size_t n = reach_rng_normalize(r, 6);
    assert_int_equal(n, 3);
    assert_true(r[0].lo == 10 && r[0].hi == 35);
    assert_true(r[1].lo == 40 && r[1].hi == 45);
    assert_true(r[2].lo == 50 && r[2].hi == 60);
    reach_rng_t b[] = { { 0, 12 }, { 20, 22 }, { 34, 41 }, { 55, 100 } };
    reach_rng_t out[8];
    size_t m = reach_rng_sub(r, n, b, 4, out);
    /* [12,20) [22,34) [41,45) [50,55) */
    assert_int_equal(m, 4);
    assert_true(out[0].lo == 12 && out[0].hi == 20);
    assert_true(out[1].lo == 22 && out[1].hi == 34);
    assert_true(out[2].lo == 41 && out[2].hi == 45);
    assert_true(out[3].lo == 50 && out[3].hi == 55);
    /* Nothing to take away: a copy. */
    assert_int_equal(reach_rng_sub(r, n, b, 0, out), 3);
    /* Everything taken away. */
    reach_rng_t all = { 0, 1000 };
    assert_int_equal(reach_rng_sub(r, n, &all, 1, out), 0);
}

static void test_img_at(void **state)
{
    (void)state;
    static uint8_t a[4096], b[4096];
    reach_run_t runs[] = { { 0x1000, 0x2000, a }, { 0x3000, 0x4000, b } };
    reach_img_t im = { runs, 2 };
    assert_ptr_equal(reach_img_at(&im, 0x1000, 8), a);
    assert_ptr_equal(reach_img_at(&im, 0x1ff8, 8), a + 0xff8);
    assert_null(reach_img_at(&im, 0x1ffc, 8)); /* crosses the end */
    assert_null(reach_img_at(&im, 0x2000, 8)); /* a hole: not copied */
    assert_ptr_equal(reach_img_at(&im, 0x3010, 8), b + 0x10);
    assert_null(reach_img_at(&im, 0x4000, 1));
    assert_null(reach_img_at(&im, 0x0, 1));
}

/* Blocks at BASE + 0x10000 on, 0x100 apart, 0x80 bytes each; roots at
 * BASE..BASE+0x1000. */
#define BLK(i) (BASE + 0x10000 + (uint64_t)(i) * 0x100)
#define NB 12

static void blocks(reach_blk_t *b)
{
    for (int i = 0; i < NB; i++)
        b[i] = (reach_blk_t){ BLK(i), 0x80 };
    b[11].size = 0; /* malloc(0) */
}

/* Words still as loaded leave the roots: only the changed ones stay, merged
 * into ranges, across two runs and a hole the copy lacks. */
static void test_changed_words(void **state)
{
    (void)state;
    static uint64_t a[512], b[512], orig[1536];
    for (int i = 0; i < 1536; i++)
        orig[i] = 0x7740f73ull + (uint64_t)i; /* byte code that reads as addresses */
    memcpy(a, orig, sizeof a);
    memcpy(b, orig + 1024, sizeof b);
    a[3] = 0x55550000; /* stored by the program */
    a[4] = 0x55550010;
    a[511] = 1;
    b[0] = 2; /* adjacent across the hole: not merged */
    b[100] = orig[1024 + 100]; /* stored, the same value: as loaded */
    reach_run_t runs[] = { { 0x10000, 0x11000, (const uint8_t *)a },
                           { 0x12000, 0x13000, (const uint8_t *)b } };
    reach_img_t im = { runs, 2 };
    reach_rng_t *out = NULL;
    size_t n = 0, cap = 0;
    assert_int_equal(reach_rng_changed(&im, 0x10000, 0x13000, (const uint8_t *)orig, &out, &n,
                                       &cap), 0);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].lo, 0x10000 + 3 * 8);
    assert_int_equal(out[0].hi, 0x10000 + 5 * 8);
    assert_int_equal(out[1].lo, 0x10000 + 511 * 8);
    assert_int_equal(out[1].hi, 0x11000);
    assert_int_equal(out[2].lo, 0x12000);
    assert_int_equal(out[2].hi, 0x12008);
    /* A range starting inside the second run. */
    n = 0;
    assert_int_equal(reach_rng_changed(&im, 0x12000, 0x12010, (const uint8_t *)(orig + 1024),
                                       &out, &n, &cap), 0);
    assert_int_equal(n, 1);
    free(out);
}

static void test_chains_cycles_interior(void **state)
{
    (void)state;
    memset(mem, 0, sizeof mem);
    reach_blk_t b[NB];
    blocks(b);
    /* root -> 0 -> 1 -> 2 (a chain); root -> interior of 3 */
    put(BASE + 0x08, BLK(0));
    put(BLK(0) + 0x40, BLK(1));
    put(BLK(1) + 0x78, BLK(2));          /* the block's last word */
    put(BASE + 0x10, BLK(3) + 0x7f);     /* interior: the last byte */
    /* 4 <-> 5: a cycle no root reaches */
    put(BLK(4), BLK(5));
    put(BLK(5), BLK(4));
    /* root -> one past the end of 6: not a pointer into it */
    put(BASE + 0x18, BLK(6) + 0x80);
    /* 7: only in a register */
    uint64_t regs[] = { 0, BLK(7) + 8, 42 };
    /* 8: pointed to by an unaligned word only */
    memcpy(mem + 0x21, &(uint64_t){ BLK(8) }, 8);
    /* 9: pointed to from outside the roots (a word the scan does not read) */
    put(BASE + 0x2000, BLK(9));
    /* 10: pointed to from 2's padding beyond its size (not scanned) */
    put(BLK(2) + 0x80, BLK(10));
    /* 11: malloc(0), pointed at exactly; a pointer one byte in would not */
    put(BASE + 0x28, BLK(11));
    reach_rng_t roots[] = { { BASE, BASE + 0x1000 } };
    uint8_t mk[NB];
    reach_stats_t st;
    assert_int_equal(reach_mark(&img, b, NB, roots, 1, regs, 3, mk, &st), 0);
    uint8_t want[NB] = { 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1 };
    for (int i = 0; i < NB; i++)
        assert_int_equal(mk[i], want[i]);
    assert_int_equal(st.marked, 6);
    assert_int_equal(st.root_bytes, 0x1000);
    /* Blocks scanned: 0..3 (0x80 each) and 7; 11 has no bytes. */
    assert_int_equal(st.scanned_bytes, 5 * 0x80);
}

static void test_no_roots_nothing_marked(void **state)
{
    (void)state;
    memset(mem, 0, sizeof mem);
    reach_blk_t b[NB];
    blocks(b);
    for (int i = 0; i + 1 < NB; i++)
        put(BLK(i), BLK(i + 1)); /* a long chain, no root */
    uint8_t mk[NB];
    reach_stats_t st;
    assert_int_equal(reach_mark(&img, b, NB, NULL, 0, NULL, 0, mk, &st), 0);
    for (int i = 0; i < NB; i++)
        assert_int_equal(mk[i], 0);
    /* ...and one root at its start reaches all of it. */
    uint64_t r = BLK(0);
    assert_int_equal(reach_mark(&img, b, NB, NULL, 0, &r, 1, mk, &st), 0);
    for (int i = 0; i < NB; i++)
        assert_int_equal(mk[i], 1);
    assert_int_equal(reach_mark(&img, b, 0, NULL, 0, &r, 1, mk, &st), 0);
}

/* A block whose middle page was never touched (not copied): the words
 * before and after the hole are scanned, the hole reads as zeros. */
static void test_holes(void **state)
{
    (void)state;
    static uint8_t p1[4096], p3[4096], roots_mem[64];
    memset(p1, 0, sizeof p1);
    memset(p3, 0, sizeof p3);
    memset(roots_mem, 0, sizeof roots_mem);
    reach_run_t runs[] = { { 0x100000, 0x100040, roots_mem },
                           { 0x200000, 0x201000, p1 },
                           { 0x202000, 0x203000, p3 },
                           { 0x300000, 0x300040, NULL } };
    static uint8_t tail[64];
    runs[3].data = tail;
    reach_img_t im = { runs, 4 };
    reach_blk_t b[] = { { 0x200000, 0x3000 }, { 0x300000, 0x10 }, { 0x300020, 0x10 } };
    uint64_t v = 0x200000;
    memcpy(roots_mem, &v, 8);
    v = 0x300000;
    memcpy(p3 + 0xff8, &v, 8); /* the block's last word, after the hole */
    reach_rng_t roots[] = { { 0x100000, 0x100040 } };
    uint8_t mk[3];
    reach_stats_t st;
    assert_int_equal(reach_mark(&im, b, 3, roots, 1, NULL, 0, mk, &st), 0);
    assert_int_equal(mk[0], 1);
    assert_int_equal(mk[1], 1);
    assert_int_equal(mk[2], 0);
    assert_int_equal(st.scanned_bytes, 0x2000 + 0x10);
}

/* Many blocks marked through a chain: the granule index at scale. */
static void test_many_blocks(void **state)
{
    (void)state;
    size_t n = 200000;
    uint64_t lo = 0x7f0000000000ull;
    size_t bytes = n * 32;
    uint8_t *m = calloc(1, bytes + 64);
    assert_non_null(m);
    reach_blk_t *b = malloc(n * sizeof *b);
    for (size_t i = 0; i < n; i++) {
        b[i] = (reach_blk_t){ lo + i * 32, 24 };
        /* even blocks chain to the next even one; odd ones are lost */
        if (i % 2 == 0 && i + 2 < n) {
            uint64_t nx = lo + (i + 2) * 32 + 8; /* interior */
            memcpy(m + i * 32, &nx, 8);
        }
    }
    reach_run_t run = { lo, lo + bytes, m };
    reach_img_t im = { &run, 1 };
    uint64_t r = lo;
    uint8_t *mk = malloc(n);
    reach_stats_t st;
    assert_int_equal(reach_mark(&im, b, n, NULL, 0, &r, 1, mk, &st), 0);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += mk[i] != (i % 2 == 0);
    assert_int_equal(bad, 0);
    assert_int_equal(st.marked, n / 2);
    free(m);
    free(b);
    free(mk);
}

/* A block spanning granules (64 KiB): interior pointers into its later
 * granules, one into a granule where another block starts after it. */
static void test_large_blocks(void **state)
{
    (void)state;
    uint64_t lo = 0x7e0000000000ull;
    size_t bytes = 4u << 20;
    uint8_t *m = calloc(1, bytes);
    assert_non_null(m);
    reach_blk_t b[] = {
        { lo + 0x100, 0x30000 },           /* 0: granules 0..3, ends at lo+0x30100 */
        { lo + 0x30200, 0x100 },           /* 1: starts in granule 3, after 0's end */
        { lo + 0x40000, 0x200000 },        /* 2: granules 4..35 */
        { lo + 0x240000, 0x10 },           /* 3 */
        { lo + 0x250000, 0x10 },           /* 4: nothing points to it */
    };
    reach_run_t run = { lo, lo + bytes, m };
    reach_img_t im = { &run, 1 };
    /* 0 <- a register pointing into its granule 2; 0 -> 1 from its last word */
    uint64_t regs[] = { lo + 0x28000, lo + 0x40000 + 0x1ffff8 };
    uint64_t v = lo + 0x30200 + 0x80;
    memcpy(m + 0x100 + 0x30000 - 8, &v, 8);
    /* 2's last word -> 3; a word just past 0's end (in 0's last granule,
     * before 1 starts) points at nothing */
    v = lo + 0x240000;
    memcpy(m + 0x40000 + 0x200000 - 8, &v, 8);
    v = lo + 0x30100;
    memcpy(m + 0x200, &v, 8); /* inside 0: scanned, points into the gap */
    uint8_t mk[5];
    reach_stats_t st;
    assert_int_equal(reach_mark(&im, b, 5, NULL, 0, regs, 2, mk, &st), 0);
    assert_int_equal(mk[0], 1);
    assert_int_equal(mk[1], 1);
    assert_int_equal(mk[2], 1); /* a pointer 31 granules into it */
    assert_int_equal(mk[3], 1);
    assert_int_equal(mk[4], 0);
    free(m);
}

/* glibc's layouts: an mmap'd chunk, another arena's heap, the main heap;
 * something else falls back to its whole mapping. */
static void test_heap_areas(void **state)
{
    (void)state;
    const uint64_t H = 64ull << 20;
    static uint8_t mm[8192], arena[8192], other[4096];
    memset(mm, 0, sizeof mm);
    memset(arena, 0, sizeof arena);
    memset(other, 0, sizeof other);
    uint64_t mm_lo = 0x7f0000100000ull;       /* an mmap'd chunk's mapping */
    uint64_t hb = 0x7f0004000000ull;          /* 64 MiB aligned: an arena heap */
    uint64_t oth = 0x7f0009000000ull;         /* another allocator's mapping */
    assert_int_equal(hb & (H - 1), 0);
    reach_run_t runs[] = { { mm_lo, mm_lo + 8192, mm }, { hb, hb + 8192, arena },
                           { oth, oth + 4096, other } };
    reach_img_t im = { runs, 3 };
    /* mmap'd chunk at the mapping's start: prev_size 0, size 8192|IS_MMAPPED */
    uint64_t v = 0;
    memcpy(mm, &v, 8);
    v = 8192 | 2;
    memcpy(mm + 8, &v, 8);
    /* arena heap: heap_info {ar_ptr, prev, size = 8192, mprotect_size};
     * a chunk with NON_MAIN_ARENA at +0x40 */
    v = 8192;
    memcpy(arena + 16, &v, 8);
    v = 0x100 | 4 | 1;
    memcpy(arena + 0x40 + 8, &v, 8);
    /* the other one: a header that means nothing */
    v = 0x1234567;
    memcpy(other + 0x100 - 8, &v, 8);
    reach_blk_t b[] = { { 0x5000000, 32 },                 /* in brk */
                        { mm_lo + 16, 5000 },              /* the mmap'd chunk */
                        { hb + 0x50, 0xf0 },               /* the arena */
                        { hb + 0x200, 0x10 },              /* same arena: no second area */
                        { oth + 0x100, 16 } };             /* fallback */
    reach_rng_t brk = { 0x4000000, 0x6000000 };
    reach_rng_t vmas[] = { { 0x4000000, 0x6000000 }, { mm_lo, mm_lo + 8192 },
                           { hb, hb + (1u << 20) }, { oth - 4096, oth + 8192 } };
    reach_rng_t out[8];
    size_t n = reach_heap_areas(&im, b, 5, brk, vmas, 4, out);
    assert_int_equal(n, 4);
    assert_true(out[0].lo == brk.lo && out[0].hi == brk.hi);
    assert_true(out[1].lo == mm_lo && out[1].hi == mm_lo + 8192);
    assert_true(out[2].lo == hb && out[2].hi == hb + 8192); /* its size, not the VMA */
    assert_true(out[3].lo == oth - 4096 && out[3].hi == oth + 8192);
    /* glibc 2.43's mmap'd chunk: its size 16 bytes short of the mapping's
     * end; the VMA holds more (pymalloc's arenas merged with it). */
    v = (8192 - 16) | 2;
    memcpy(mm + 8, &v, 8);
    vmas[1].hi = mm_lo + (1u << 20);
    n = reach_heap_areas(&im, b, 5, brk, vmas, 4, out);
    assert_int_equal(n, 4);
    assert_true(out[1].lo == mm_lo && out[1].hi == mm_lo + 8192);
    /* Short by more than a header: not glibc's, the whole mapping. */
    v = (8192 - 64) | 2;
    memcpy(mm + 8, &v, 8);
    n = reach_heap_areas(&im, b, 5, brk, vmas, 4, out);
    assert_true(out[1].lo == mm_lo && out[1].hi == mm_lo + (1u << 20));
}

/* Owners of lost blocks, as valgrind groups them (direct vs indirect). */
static void test_owners(void **state)
{
    (void)state;
    memset(mem, 0, sizeof mem);
    /* Blocks (sorted by address), 64 bytes each at BASE + 0x1000 * k:
     * 0 C: lost, pointed to by B only (its leader is found later: A)
     * 1 A: lost, points to B (A -> B -> C: A direct, B and C its)
     * 2 B: lost, points to C
     * 3 X: lost, points to Y; 4 Y: lost, points to X (a cycle: X direct)
     * 5 R: reachable from a root, points to 6
     * 6 S: reachable through R
     * 7 L: lost alone, points to S (reachable: not owned by L)
     * 8 M: lost, points into the middle of 1 (A), so A is M's now */
    reach_blk_t b[9];
    for (int k = 0; k < 9; k++)
        b[k] = (reach_blk_t){ BASE + 0x1000u * (k + 1), 64 };
    put(b[1].addr, b[2].addr);
    put(b[2].addr + 8, b[0].addr);
    put(b[3].addr, b[4].addr + 16);
    put(b[4].addr, b[3].addr);
    put(b[5].addr, b[6].addr);
    put(b[7].addr, b[6].addr);
    put(b[8].addr + 56, b[1].addr + 32);
    put(b[8].addr, b[8].addr); /* a pointer to itself changes nothing */
    uint64_t root = b[5].addr;
    uint8_t mk[9];
    reach_stats_t st;
    assert_int_equal(reach_mark(&img, b, 9, NULL, 0, &root, 1, mk, &st), 0);
    static const uint8_t want_mk[9] = { 0, 0, 0, 0, 0, 1, 1, 0, 0 };
    assert_memory_equal(mk, want_mk, 9);
    uint32_t own[9];
    assert_int_equal(reach_owners(&img, b, 9, mk, own), 0);
    assert_int_equal(own[0], 8);
    assert_int_equal(own[1], 8);
    assert_int_equal(own[2], 8);
    assert_int_equal(own[3], 3);
    assert_int_equal(own[4], 3);
    assert_int_equal(own[5], REACH_OWNER_NONE);
    assert_int_equal(own[6], REACH_OWNER_NONE);
    assert_int_equal(own[7], 7);
    assert_int_equal(own[8], 8);
    /* Nothing lost: every owner NONE. */
    memset(mk, 1, 9);
    assert_int_equal(reach_owners(&img, b, 9, mk, own), 0);
    for (int k = 0; k < 9; k++)
        assert_int_equal(own[k], REACH_OWNER_NONE);
}

/* A long chain of lost blocks: one direct, the rest its, no recursion. */
static void test_owners_long_chain(void **state)
{
    (void)state;
    size_t n = 100000;
    uint64_t lo = 0x7f0000000000ull;
    uint8_t *m = calloc(1, n * 32);
    assert_non_null(m);
    reach_blk_t *b = malloc(n * sizeof *b);
    /* block i points to block i - 1: the last one leads (found last) */
    for (size_t i = 0; i < n; i++) {
        b[i] = (reach_blk_t){ lo + i * 32, 24 };
        if (i) {
            uint64_t p = lo + (i - 1) * 32;
            memcpy(m + i * 32, &p, 8);
        }
    }
    reach_run_t run = { lo, lo + n * 32, m };
    reach_img_t im = { &run, 1 };
    uint8_t *mk = calloc(1, n);
    uint32_t *own = malloc(n * sizeof *own);
    assert_int_equal(reach_owners(&im, b, n, mk, own), 0);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += own[i] != n - 1;
    assert_int_equal(bad, 0);
    free(m);
    free(b);
    free(mk);
    free(own);
}

/* Why a block is reachable: the first word found on a shortest chain. */
static void test_paths(void **state)
{
    (void)state;
    memset(mem, 0, sizeof mem);
    /* Blocks 0..4 at BASE + 0x1000 * (k + 1), 64 bytes; roots at BASE.
     * root word 0 -> A(0); A -> B(1) at A+16; B -> C(2); root word 1 -> C
     * (so C's shortest chain is the root's); register -> D(3); E(4) lost. */
    reach_blk_t b[5];
    for (int k = 0; k < 5; k++)
        b[k] = (reach_blk_t){ BASE + 0x1000u * (k + 1), 64 };
    put(BASE, b[0].addr + 8);
    put(BASE + 8, b[2].addr);
    put(b[0].addr + 16, b[1].addr);
    put(b[1].addr + 40, b[2].addr + 4);
    reach_rng_t roots[] = { { BASE, BASE + 16 } };
    uint64_t regs[] = { 7, b[3].addr };
    uint8_t mk[5];
    uint32_t parent[5];
    uint64_t via[5];
    reach_stats_t st;
    assert_int_equal(reach_mark_paths(&img, b, 5, roots, 1, regs, 2, mk, &st, parent, via), 0);
    static const uint8_t want[5] = { 1, 1, 1, 1, 0 };
    assert_memory_equal(mk, want, 5);
    assert_int_equal(parent[0], REACH_PARENT_ROOT);
    assert_true(via[0] == BASE);
    assert_int_equal(parent[1], 0);
    assert_true(via[1] == b[0].addr + 16);
    assert_int_equal(parent[2], REACH_PARENT_ROOT); /* not through B: one hop */
    assert_true(via[2] == BASE + 8);
    assert_int_equal(parent[3], REACH_PARENT_ROOT);
    assert_true(via[3] == (REACH_VIA_REG | 1));
}

/* CPython's GC links (a pymalloc block's PyGC_Head to another's, a root to
 * a block's first byte) are followed after every other word: a Python
 * object's parent is what refers to it. The same blocks are marked. */
static void test_gc_links_last(void **state)
{
    (void)state;
    memset(mem, 0, sizeof mem);
    /* P0..P3 pymalloc blocks (64 bytes), T a tracked one. root -> P0's
     * head (a generation's list); root -> P1+16 (a reference); P0's head
     * -> P2's head (the list); P1 -> P2+16 at P1+40 (a reference); P2 has
     * a pre-header: its head at +16, P2+16 -> P3+16 (the list behind a
     * pre-header); P3 -> T at P3+48. */
    reach_blk_t b[5];
    for (int k = 0; k < 5; k++)
        b[k] = (reach_blk_t){ BASE + 0x1000u * (k + 1), 64 };
    uint8_t pyn[5] = { 1, 1, 1, 1, 0 };
    put(BASE, b[0].addr);
    put(BASE + 8, b[1].addr + 16);
    put(b[0].addr, b[2].addr);
    put(b[1].addr + 40, b[2].addr + 16);
    put(b[2].addr + 16, b[3].addr + 16 + 1); /* low bits: flags */
    put(b[3].addr + 48, b[4].addr);
    reach_rng_t roots[] = { { BASE, BASE + 16 } };
    uint8_t mk[5], mk2[5];
    uint32_t parent[5], parent2[5];
    uint64_t via[5], via2[5];
    reach_stats_t st;
    assert_int_equal(reach_mark_paths(&img, b, 5, roots, 1, NULL, 0, mk, &st, parent, via), 0);
    assert_int_equal(parent[2], 0); /* through the list: P0's head, first found */
    assert_int_equal(reach_mark_py(&img, b, 5, roots, 1, NULL, 0, mk2, &st, parent2, via2, pyn,
                                   16), 0);
    assert_memory_equal(mk, mk2, 5);
    static const uint8_t all[5] = { 1, 1, 1, 1, 1 };
    assert_memory_equal(mk2, all, 5);
    assert_int_equal(parent2[2], 1); /* P1 refers to it */
    assert_true(via2[2] == b[1].addr + 40);
    assert_int_equal(parent2[0], REACH_PARENT_ROOT); /* only the list reaches P0 */
    assert_true(via2[0] == BASE);
    assert_int_equal(parent2[3], 2); /* only the list (behind P2's pre-header) */
    assert_int_equal(parent2[4], 3);
    assert_true(st.deferred >= 2);
    /* No room to wait: links followed at once, as without. */
    assert_int_equal(reach_mark_py(&img, b, 5, roots, 1, NULL, 0, mk2, &st, parent2, via2, pyn,
                                   0), 0);
    assert_memory_equal(mk, mk2, 5);
    assert_int_equal(parent2[2], 0);
}

/* pymalloc pools found by their headers: live blocks are the carved ones
 * not on the free list; a header that does not check out is no pool. */
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static void test_pools(void **state)
{
    (void)state;
    const uint64_t lo = 0x7f0000000000ull, P = REACH_POOL_SIZE;
    static uint8_t m[4 * REACH_POOL_SIZE];
    memset(m, 0, sizeof m);
    /* Pool 0: 64-byte blocks (szidx 3), 5 carved, blocks 1 and 3 free. */
    uint8_t *h = m;
    put32(h, 3);
    put64(h + 8, lo + 48 + 64 * 1);
    put64(m + 48 + 64 * 1, lo + 48 + 64 * 3);
    put64(m + 48 + 64 * 3, 0);
    put32(h + 36, 3);
    put32(h + 40, 48 + 5 * 64);
    put32(h + 44, (uint32_t)P - 64);
    /* Pool 1: the same but its count disagrees with its free list. */
    memcpy(m + P, m, 48);
    put64(m + P + 8, lo + P + 48 + 64);
    put64(m + P + 48 + 64, 0);
    /* Pool 2: a free list that leaves the pool. */
    memcpy(m + 2 * P, m, 48);
    put64(m + 2 * P + 8, lo + 48);
    /* Pool 3: zeros (never used): no pool. */
    reach_run_t run = { lo, lo + sizeof m, m };
    reach_img_t im = { &run, 1 };
    reach_rng_t r = { lo, lo + sizeof m }, *pools = NULL;
    reach_blk_t *blks = NULL;
    size_t np = 0, pc = 0, nb = 0, bc = 0;
    assert_int_equal(reach_pools(&im, &r, 1, 100, &pools, &np, &pc, &blks, &nb, &bc), 0);
    assert_int_equal(np, 1);
    assert_true(pools[0].lo == lo && pools[0].hi == lo + P);
    assert_int_equal(nb, 3);
    assert_true(blks[0].addr == lo + 48 && blks[0].size == 64);
    assert_true(blks[1].addr == lo + 48 + 128 && blks[2].addr == lo + 48 + 256);
    /* Past max_blocks: -E2BIG. */
    np = nb = 0;
    assert_int_equal(reach_pools(&im, &r, 1, 2, &pools, &np, &pc, &blks, &nb, &bc), -E2BIG);
    /* A range that does not hold a whole aligned pool finds none. */
    np = nb = 0;
    reach_rng_t part = { lo + 8, lo + P + 8 };
    assert_int_equal(reach_pools(&im, &part, 1, 100, &pools, &np, &pc, &blks, &nb, &bc), 0);
    assert_int_equal(np, 0);
    free(pools);
    free(blks);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_img_at),
        cmocka_unit_test(test_changed_words),
        cmocka_unit_test(test_chains_cycles_interior),
        cmocka_unit_test(test_no_roots_nothing_marked),
        cmocka_unit_test(test_holes),
        cmocka_unit_test(test_many_blocks),
        cmocka_unit_test(test_large_blocks),
        cmocka_unit_test(test_heap_areas),
        cmocka_unit_test(test_owners),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_gc_links_last),
        cmocka_unit_test(test_owners_long_chain),
        cmocka_unit_test(test_pools),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
