/* Reachability: a conservative pointer scan from roots through live blocks, over a copy of a process's memory.
 *
 * Like LeakSanitizer's, but the blocks are the collector's table of live
 * allocations and the memory a copy taken while the process was stopped.
 * A word points into a block if it lies inside it; blocks are found through
 * an index of 64 KiB granules (see gran_t). */
#include "reach.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define GRANULE_SHIFT 16
#define HEAP_MAX (64ull << 20)          /* glibc's HEAP_MAX_SIZE on 64-bit */
#define CHUNK_MMAPPED 2u
#define CHUNK_NON_MAIN 4u

#define SCRATCH_HDR 16u

void *reach_scratch(size_t n)
{
    size_t len = n + SCRATCH_HDR;
    if (len < n)
        return NULL;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memcpy(p, &len, sizeof len);
    return (uint8_t *)p + SCRATCH_HDR;
}

void reach_scratch_free(void *p)
{
    if (!p)
        return;
    uint8_t *b = (uint8_t *)p - SCRATCH_HDR;
    size_t len;
    memcpy(&len, b, sizeof len);
    munmap(b, len);
}

static int rng_cmp(const void *a, const void *b)
{
    const reach_rng_t *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

size_t reach_rng_normalize(reach_rng_t *r, size_t n)
{
    size_t w = 0;
    int sorted = 1;
    for (size_t i = 0; i < n; i++)
        if (r[i].hi > r[i].lo) {
            if (w && r[i].lo < r[w - 1].lo)
                sorted = 0;
            r[w++] = r[i];
        }
    n = w;
    if (n > 1 && !sorted)
        qsort(r, n, sizeof *r, rng_cmp);
    w = 0;
    for (size_t i = 0; i < n; i++) {
        if (w && r[i].lo <= r[w - 1].hi) {
            if (r[i].hi > r[w - 1].hi)
                r[w - 1].hi = r[i].hi;
        } else {
            r[w++] = r[i];
        }
    }
    return w;
}

size_t reach_rng_sub(const reach_rng_t *a, size_t na, const reach_rng_t *b, size_t nb,
                     reach_rng_t *out)
{
    size_t n = 0, j = 0;
    for (size_t i = 0; i < na; i++) {
        uint64_t lo = a[i].lo, hi = a[i].hi;
        while (j < nb && b[j].hi <= lo)
            j++;
        size_t k = j;
        while (lo < hi) {
            if (k >= nb || b[k].lo >= hi) {
                out[n++] = (reach_rng_t){ lo, hi };
                break;
            }
            if (b[k].lo > lo)
                out[n++] = (reach_rng_t){ lo, b[k].lo };
            if (b[k].hi >= hi)
                break;
            lo = b[k].hi;
            k++;
        }
    }
    return n;
}

/* The run holding addr, or the index of the first run above it (may be n). */
static size_t run_find(const reach_img_t *img, uint64_t addr, int *inside)
{
    size_t lo = 0, hi = img->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (addr < img->runs[mid].lo)
            hi = mid;
        else if (addr >= img->runs[mid].hi)
            lo = mid + 1;
        else {
            *inside = 1;
            return mid;
        }
    }
    *inside = 0;
    return lo;
}

const uint8_t *reach_img_at(const reach_img_t *img, uint64_t addr, size_t len)
{
    int in;
    size_t i = run_find(img, addr, &in);
    if (!in || addr + len > img->runs[i].hi || addr + len < addr)
        return NULL;
    return img->runs[i].data + (addr - img->runs[i].lo);
}

int reach_word_at(const reach_img_t *img, uint64_t addr, uint64_t *v)
{
    const uint8_t *p = reach_img_at(img, addr, 8);
    if (!p)
        return 0;
    memcpy(v, p, 8);
    return 1;
}

int reach_rng_push(reach_rng_t **out, size_t *n, size_t *cap, uint64_t lo, uint64_t hi)
{
    if (*n && (*out)[*n - 1].hi == lo) {
        (*out)[*n - 1].hi = hi;
        return 0;
    }
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        reach_rng_t *p = realloc(*out, nc * sizeof *p);
        if (!p)
            return -ENOMEM;
        *out = p;
        *cap = nc;
    }
    (*out)[(*n)++] = (reach_rng_t){ lo, hi };
    return 0;
}

int reach_rng_changed(const reach_img_t *img, uint64_t lo, uint64_t hi, const uint8_t *orig,
                      reach_rng_t **out, size_t *n, size_t *cap)
{
    uint64_t a = lo;
    while (a < hi) {
        /* One run at a time: the copy holds whole pages or none. */
        int in;
        size_t i = run_find(img, a, &in);
        uint64_t end;
        if (!in) {
            end = i < img->n && img->runs[i].lo < hi ? img->runs[i].lo : hi;
            a = end; /* not copied: zeros */
            continue;
        }
        end = img->runs[i].hi < hi ? img->runs[i].hi : hi;
        const uint8_t *cp = img->runs[i].data + (a - img->runs[i].lo);
        const uint8_t *op = orig + (a - lo);
        for (uint64_t w = a; w + 8 <= end; w += 8, cp += 8, op += 8)
            if (memcmp(cp, op, 8) != 0 && reach_rng_push(out, n, cap, w, w + 8) < 0)
                return -ENOMEM;
        a = end;
    }
    return 0;
}

static const reach_rng_t *vma_of(const reach_rng_t *v, size_t n, uint64_t addr)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (addr < v[mid].lo)
            hi = mid;
        else if (addr >= v[mid].hi)
            lo = mid + 1;
        else
            return &v[mid];
    }
    return NULL;
}

size_t reach_heap_areas(const reach_img_t *img, const reach_blk_t *b, size_t nb,
                        reach_rng_t brk, const reach_rng_t *vmas, size_t nvmas, reach_rng_t *out)
{
    size_t n = 0;
    if (brk.hi > brk.lo)
        out[n++] = brk;
    uint64_t last_hb = 0; /* the last arena heap added (blocks come sorted) */
    for (size_t i = 0; i < nb; i++) {
        uint64_t a = b[i].addr, hdr = 0, prev = 0;
        if (a >= brk.lo && a < brk.hi)
            continue;
        const reach_rng_t *vm = vma_of(vmas, nvmas, a);
        if (n && a >= out[n - 1].lo && a < out[n - 1].hi)
            continue; /* in the area just added */
        int ok = reach_word_at(img, a - 8, &hdr);
        uint64_t csize = hdr & ~7ull;
        if (ok && (hdr & CHUNK_MMAPPED) && reach_word_at(img, a - 16, &prev)) {
            /* An mmap'd chunk: its header sits 16 bytes below the block,
             * prev_size is the chunk's offset in its own mapping. Its size
             * reaches the mapping's end (glibc 2.36), or 16 bytes short of
             * it (2.43, as Debian's 3.14 and 3.15 packages bring it):
             * rounded up to the page. Else the whole mapping would be
             * heap: pymalloc's arenas merged into its VMA with it, their
             * pools not found, every chain through them cut. */
            uint64_t chunk = a - 16, mlo = chunk - prev, mhi = (chunk + csize + 4095) & ~4095ull;
            if (prev < chunk && !(mlo & 4095) && mhi - (chunk + csize) <= 16 &&
                csize >= b[i].size + 16 && vm && mlo >= vm->lo && mhi <= vm->hi) {
                out[n++] = (reach_rng_t){ mlo, mhi };
                continue;
            }
        } else if (ok && (hdr & CHUNK_NON_MAIN)) {
            /* Another arena's heap: 64 MiB aligned, heap_info first
             * (ar_ptr, prev, size, mprotect_size). */
            uint64_t hb = a & ~(HEAP_MAX - 1), hsize = 0;
            if (hb == last_hb)
                continue;
            if (vm && hb >= vm->lo && reach_word_at(img, hb + 16, &hsize) && hsize <= HEAP_MAX &&
                hb + hsize > a && hsize >= 4096) {
                out[n++] = (reach_rng_t){ hb, hb + hsize };
                last_hb = hb;
                continue;
            }
        }
        /* Not glibc's layout: the whole mapping is heap. */
        if (vm)
            out[n++] = *vm;
    }
    return n;
}

/* ---------------------------------------------------------------- pymalloc */

/* struct pool_header (Objects/obmalloc.c in 3.11, pycore_obmalloc.h from
 * 3.12): ref.count (uint in a pointer-sized union), freeblock, nextpool,
 * prevpool, arenaindex, szidx, nextoffset, maxnextoffset; 48 bytes rounded
 * to the 16-byte alignment. Size class i holds blocks of 16 * (i + 1)
 * bytes, up to 512. */
#define POOL_OVERHEAD 48u
#define POOL_CLASSES 32u
#define POOL_ALIGN 16u
#define POOL_BLOCKS_MAX ((REACH_POOL_SIZE - POOL_OVERHEAD) / POOL_ALIGN)

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 256;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np)
        return -ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

/* The live blocks of the pool at base (a bit per block set in live), or -1
 * when its header is not pymalloc's. Returns the block size. */
static long pool_check(const reach_img_t *img, uint64_t base, uint8_t *live, uint32_t *nlive)
{
    const uint8_t *h = reach_img_at(img, base, POOL_OVERHEAD);
    if (!h)
        return -1;
    uint32_t count, szidx, next, maxnext;
    uint64_t freeblock;
    memcpy(&count, h, 4);
    memcpy(&freeblock, h + 8, 8);
    memcpy(&szidx, h + 36, 4);
    memcpy(&next, h + 40, 4);
    memcpy(&maxnext, h + 44, 4);
    if (szidx >= POOL_CLASSES)
        return -1;
    uint32_t size = (szidx + 1) * POOL_ALIGN;
    if (maxnext != REACH_POOL_SIZE - size || next < POOL_OVERHEAD + 2 * size ||
        next > REACH_POOL_SIZE || (next - POOL_OVERHEAD) % size)
        return -1;
    uint32_t carved = (next - POOL_OVERHEAD) / size, nfree = 0;
    if (count > carved)
        return -1;
    memset(live, 1, carved);
    for (uint64_t f = freeblock; f; nfree++) {
        if (nfree >= carved || f < base + POOL_OVERHEAD || f >= base + next ||
            (f - base - POOL_OVERHEAD) % size)
            return -1;
        uint32_t k = (uint32_t)((f - base - POOL_OVERHEAD) / size);
        if (!live[k])
            return -1; /* a loop */
        live[k] = 0;
        const uint8_t *w = reach_img_at(img, f, 8);
        if (!w)
            return -1;
        memcpy(&f, w, 8);
    }
    if (carved - nfree != count)
        return -1;
    *nlive = carved;
    return size;
}

int reach_pools(const reach_img_t *img, const reach_rng_t *r, size_t nr, size_t max_blocks,
                reach_rng_t **pools, size_t *npools, size_t *pcap, reach_blk_t **blks,
                size_t *nblks, size_t *bcap)
{
    uint8_t live[POOL_BLOCKS_MAX];
    for (size_t i = 0; i < nr; i++) {
        uint64_t a = (r[i].lo + REACH_POOL_SIZE - 1) & ~(uint64_t)(REACH_POOL_SIZE - 1);
        for (; a + REACH_POOL_SIZE <= r[i].hi && a + REACH_POOL_SIZE > a; a += REACH_POOL_SIZE) {
            uint32_t carved = 0;
            long size = pool_check(img, a, live, &carved);
            if (size < 0)
                continue;
            if (grow((void **)pools, pcap, *npools + 1, sizeof **pools) < 0)
                return -ENOMEM;
            (*pools)[(*npools)++] = (reach_rng_t){ a, a + REACH_POOL_SIZE };
            for (uint32_t k = 0; k < carved; k++) {
                if (!live[k])
                    continue;
                if (*nblks >= max_blocks)
                    return -E2BIG;
                if (grow((void **)blks, bcap, *nblks + 1, sizeof **blks) < 0)
                    return -ENOMEM;
                (*blks)[(*nblks)++] =
                    (reach_blk_t){ a + POOL_OVERHEAD + (uint64_t)k * (uint64_t)size, (uint64_t)size };
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- marking */

/* Blocks by 64 KiB granule: a hash of granule number -> the blocks that
 * start in it (a run of the sorted array) and the one block that covers the
 * granule's first byte from an earlier granule, if any. A word is looked up
 * in its granule only: two or three cache misses, where a binary search
 * over a million addresses took twenty (0.9 s to mark a million blocks). */
typedef struct gran_s {
    uint64_t key;       /* granule number + 1; 0: empty slot */
    uint32_t first;     /* first block starting in it */
    uint32_t count;     /* blocks starting in it */
    uint32_t cover;     /* block covering its start from before, or UINT32_MAX */
} gran_t;

typedef struct mk_s {
    const reach_img_t *img;
    const reach_blk_t *b;
    size_t nb;
    gran_t *g;          /* open addressing, gmask + 1 slots */
    uint64_t gmask;
    uint64_t lo, hi;    /* every block lies in [lo, hi) */
    uint8_t *marked;
    uint32_t *stack;    /* blocks to scan */
    size_t top;
    uint32_t *parent;   /* reach_mark_paths: per block, who marked it (NULL: not kept) */
    uint64_t *via;      /* ... and the word's address (a root's, or in the parent) */
    uint32_t src;       /* the block being scanned, or REACH_PARENT_ROOT */
    uint64_t at;        /* the address of the word being looked at */
    size_t head;        /* the queue: m.stack[head..top) */
    const uint8_t *pyn; /* reach_mark_paths: per block, 1 if a pymalloc block (may be NULL) */
    reach_defer_t *defer; /* ... words that may be CPython's GC links, followed last */
    size_t ndefer, dcap;
    uint32_t *owner;    /* reach_owners: per block */
    uint32_t leader;    /* reach_owners: the clique being walked */
    uint32_t cur;       /* reach_owners: the block being scanned */
} mk_t;

static inline uint64_t gran_slot(uint64_t key, uint64_t mask)
{
    return ((key * 0x9e3779b97f4a7c15ull) >> 20) & mask;
}

static gran_t *gran_get(mk_t *m, uint64_t gnum, int create)
{
    uint64_t key = gnum + 1;
    for (uint64_t i = gran_slot(key, m->gmask);; i = (i + 1) & m->gmask) {
        gran_t *e = &m->g[i];
        if (e->key == key)
            return e;
        if (!e->key) {
            if (!create)
                return NULL;
            *e = (gran_t){ key, 0, 0, UINT32_MAX };
            return e;
        }
    }
}

static inline uint64_t blk_end(const reach_blk_t *b)
{
    return b->addr + (b->size ? b->size : 1);
}

/* The block w points into, or -1. */
static inline long find_block(mk_t *m, uint64_t w)
{
    if (w - m->lo >= m->hi - m->lo)
        return -1;
    const gran_t *e = gran_get(m, w >> GRANULE_SHIFT, 0);
    if (!e)
        return -1;
    /* The last block starting in the granule at or below w. */
    uint32_t lo = e->first, hi = e->first + e->count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (m->b[mid].addr <= w)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo > e->first) {
        const reach_blk_t *b = &m->b[lo - 1];
        return w < blk_end(b) ? (long)(lo - 1) : -1;
    }
    if (e->cover != UINT32_MAX && w < blk_end(&m->b[e->cover]))
        return (long)e->cover;
    return -1;
}

/* 1 if the word at m->at, pointing into block i, may be a link of
 * CPython's GC lists: every GC object's PyGC_Head (next, prev; low bits
 * may be flags) links it to its neighbours, and the generations' heads (in
 * the runtime's data: a root) to the first and last. The head is a
 * pymalloc block's first 16 bytes, or the next 16 behind a pre-header (a
 * managed dict or weakref list, 3.11+). A reference points at the object,
 * past the head. Followed first, the links would make the shortest chain
 * to any Python object go through them, not through what holds it. A real
 * reference taken for a link is followed later all the same. */
static inline int gc_link(const mk_t *m, uint64_t w, long i)
{
    if (!m->pyn[i])
        return 0;
    uint64_t t = w - m->b[i].addr;
    if (m->src == REACH_PARENT_ROOT)
        return t < 8;
    if (!m->pyn[m->src])
        return 0;
    uint64_t s = m->at - m->b[m->src].addr;
    return (s < 16 && t < 8) || (s >= 16 && s < 32 && (t < 8 || (t >= 16 && t < 24)));
}

static inline void mark_word(mk_t *m, uint64_t w)
{
    long i = find_block(m, w);
    if (i < 0 || m->marked[i])
        return;
    if (m->pyn && m->ndefer < m->dcap && gc_link(m, w, i)) {
        m->defer[m->ndefer++] = (reach_defer_t){ (uint32_t)i, m->src, m->at };
        return;
    }
    m->marked[i] = 1;
    if (m->parent) {
        m->parent[i] = m->src;
        m->via[i] = m->at;
    }
    m->stack[m->top++] = (uint32_t)i;
}

/* Builds the granule index of the sorted blocks. Returns 0 or -ENOMEM. */
static int gran_build(mk_t *m)
{
    /* Distinct granules (blocks are sorted): the table stays small, cached. */
    uint64_t need = 0, last = UINT64_MAX;
    for (size_t i = 0; i < m->nb; i++) {
        uint64_t g0 = m->b[i].addr >> GRANULE_SHIFT, g1 = (blk_end(&m->b[i]) - 1) >> GRANULE_SHIFT;
        if (last != UINT64_MAX && g0 <= last)
            g0 = last + 1;
        if (g1 >= g0)
            need += g1 - g0 + 1;
        if (last == UINT64_MAX || g1 > last)
            last = g1;
    }
    uint64_t slots = 64;
    while (slots < 2 * need)
        slots <<= 1;
    m->g = reach_scratch(slots * sizeof *m->g);
    if (!m->g)
        return -ENOMEM;
    m->gmask = slots - 1;
    m->lo = UINT64_MAX;
    for (size_t i = 0; i < m->nb; i++) {
        const reach_blk_t *b = &m->b[i];
        uint64_t g0 = b->addr >> GRANULE_SHIFT, g1 = (blk_end(b) - 1) >> GRANULE_SHIFT;
        gran_t *e = gran_get(m, g0, 1);
        if (!e->count)
            e->first = (uint32_t)i;
        e->count++;
        for (uint64_t g = g0 + 1; g <= g1; g++)
            gran_get(m, g, 1)->cover = (uint32_t)i;
        if (b->addr < m->lo)
            m->lo = b->addr;
        if (blk_end(b) > m->hi)
            m->hi = blk_end(b);
    }
    return 0;
}

/* Calls fn on each aligned word of [lo, hi) in the copy. Returns bytes scanned. */
static inline __attribute__((always_inline)) uint64_t
each_word(mk_t *m, uint64_t lo, uint64_t hi, void (*fn)(mk_t *m, uint64_t w))
{
    lo = (lo + 7) & ~7ull;
    uint64_t done = 0;
    int in;
    size_t r = run_find(m->img, lo, &in);
    for (; r < m->img->n && lo < hi; r++) {
        const reach_run_t *run = &m->img->runs[r];
        if (run->lo >= hi)
            break;
        uint64_t s = lo > run->lo ? lo : (run->lo + 7) & ~7ull;
        uint64_t e = hi < run->hi ? hi : run->hi;
        for (uint64_t a = s; a + 8 <= e; a += 8) {
            uint64_t w;
            memcpy(&w, run->data + (a - run->lo), 8);
            m->at = a;
            fn(m, w);
        }
        if (e > s)
            done += e - s;
        lo = e;
    }
    return done;
}

/* Scans the aligned words of [lo, hi) in the copy, marking. Returns bytes scanned. */
static uint64_t scan_range(mk_t *m, uint64_t lo, uint64_t hi)
{
    return each_word(m, lo, hi, mark_word);
}

int reach_mark(const reach_img_t *img, const reach_blk_t *b, size_t nb, const reach_rng_t *roots,
               size_t nroots, const uint64_t *vals, size_t nvals, uint8_t *marked,
               reach_stats_t *st)
{
    return reach_mark_paths(img, b, nb, roots, nroots, vals, nvals, marked, st, NULL, NULL);
}

int reach_mark_paths(const reach_img_t *img, const reach_blk_t *b, size_t nb,
                     const reach_rng_t *roots, size_t nroots, const uint64_t *vals, size_t nvals,
                     uint8_t *marked, reach_stats_t *st, uint32_t *parent, uint64_t *via)
{
    return reach_mark_py(img, b, nb, roots, nroots, vals, nvals, marked, st, parent, via, NULL,
                         0);
}

int reach_mark_py(const reach_img_t *img, const reach_blk_t *b, size_t nb,
                  const reach_rng_t *roots, size_t nroots, const uint64_t *vals, size_t nvals,
                  uint8_t *marked, reach_stats_t *st, uint32_t *parent, uint64_t *via,
                  const uint8_t *pyn, size_t max_defer)
{
    memset(st, 0, sizeof *st);
    memset(marked, 0, nb);
    if (!nb)
        return 0;
    mk_t m = { .img = img, .b = b, .nb = nb, .marked = marked, .parent = parent, .via = via };
    m.stack = reach_scratch(nb * sizeof *m.stack);
    if (pyn && parent && max_defer) {
        /* Room for what the words can defer, at most max_defer; past it
         * they are followed at once. */
        m.defer = reach_scratch(max_defer * sizeof *m.defer);
        m.pyn = m.defer ? pyn : NULL;
        m.dcap = m.defer ? max_defer : 0;
    }
    if (!m.stack || gran_build(&m) < 0) {
        reach_scratch_free(m.stack);
        reach_scratch_free(m.g);
        reach_scratch_free(m.defer);
        return -ENOMEM;
    }
    m.src = REACH_PARENT_ROOT;
    for (size_t i = 0; i < nvals; i++) {
        m.at = REACH_VIA_REG | i;
        mark_word(&m, vals[i]);
    }
    for (size_t i = 0; i < nroots; i++)
        st->root_bytes += scan_range(&m, roots[i].lo, roots[i].hi);
    /* Breadth first (a queue): the first to mark a block is on a shortest
     * chain from a root. */
    size_t d = 0;
    for (;;) {
        while (m.head < m.top) {
            uint32_t i = m.stack[m.head++];
            m.src = i;
            st->scanned_bytes += scan_range(&m, b[i].addr, b[i].addr + b[i].size);
        }
        /* What only GC links reach so far: in the order found, each one
         * not marked since marked from its link, and on. */
        while (d < m.ndefer && marked[m.defer[d].blk])
            d++;
        if (d == m.ndefer)
            break;
        const reach_defer_t *x = &m.defer[d++];
        marked[x->blk] = 1;
        parent[x->blk] = x->src;
        via[x->blk] = x->at;
        m.stack[m.top++] = x->blk;
    }
    st->deferred = m.ndefer;
    for (size_t i = 0; i < nb; i++)
        st->marked += marked[i];
    reach_scratch_free(m.stack);
    reach_scratch_free(m.g);
    reach_scratch_free(m.defer);
    return 0;
}

/* ---------------------------------------------------------------- owners */

#define OWN_UNSEEN UINT32_MAX

/* A lost block's word, while the clique of m->leader is walked. */
static inline void own_word(mk_t *m, uint64_t w)
{
    long k = find_block(m, w);
    if (k < 0 || (uint32_t)k == m->cur || m->owner[k] == REACH_OWNER_NONE)
        return;
    if (m->owner[k] == OWN_UNSEEN) {
        m->owner[k] = m->leader;
        m->stack[m->top++] = (uint32_t)k;
    } else if (m->owner[k] == (uint32_t)k && (uint32_t)k != m->leader) {
        /* An earlier leader (a direct leak so far): it and what it owns
         * belong to this one now. Its own blocks were walked already. */
        m->owner[k] = m->leader;
    }
}

int reach_owners(const reach_img_t *img, const reach_blk_t *b, size_t nb, const uint8_t *marked,
                 uint32_t *owner)
{
    size_t lost = 0;
    for (size_t i = 0; i < nb; i++) {
        owner[i] = marked[i] ? REACH_OWNER_NONE : OWN_UNSEEN;
        lost += !marked[i];
    }
    if (!lost)
        return 0;
    mk_t m = { .img = img, .b = b, .nb = nb, .owner = owner };
    m.stack = reach_scratch(nb * sizeof *m.stack);
    if (!m.stack || gran_build(&m) < 0) {
        reach_scratch_free(m.stack);
        reach_scratch_free(m.g);
        return -ENOMEM;
    }
    /* In address order, each lost block not yet owned leads a clique: what
     * it reaches through lost blocks is indirect, its own. */
    for (size_t i = 0; i < nb; i++) {
        if (owner[i] != OWN_UNSEEN)
            continue;
        owner[i] = (uint32_t)i;
        m.leader = (uint32_t)i;
        m.stack[m.top++] = (uint32_t)i;
        while (m.top) {
            m.cur = m.stack[--m.top];
            each_word(&m, b[m.cur].addr, b[m.cur].addr + b[m.cur].size, own_word);
        }
    }
    /* Leaders absorbed later point at their new leader: follow to the end
     * (always to a later block, so no cycle), compressing. */
    for (size_t i = 0; i < nb; i++) {
        if (owner[i] == REACH_OWNER_NONE)
            continue;
        uint32_t r = owner[i];
        while (owner[r] != r)
            r = owner[r];
        for (uint32_t x = (uint32_t)i; owner[x] != r;) {
            uint32_t nx = owner[x];
            owner[x] = r;
            x = nx;
        }
    }
    reach_scratch_free(m.stack);
    reach_scratch_free(m.g);
    return 0;
}
