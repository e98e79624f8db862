/* A reachability scan of one process: freeze it, copy its memory, let it go, mark (a worker thread).
 *
 * The worker is the tracer: every ptrace request for a thread must come
 * from the thread that seized it. It stops the threads, waits for the
 * collector's snapshot of the live blocks (taken once the agent's flusher,
 * left running, has sent every event of the stopped threads), copies the
 * memory that can hold pointers, lets the process go, and only then marks:
 * the process pauses for the copy, not for the marking.
 *
 * What is copied: private writable mappings (module data and bss, the
 * heap, anonymous mappings, thread stacks from the stack pointer up), less
 * the agent's own memory (its rings and tables hold block addresses) and
 * the dead part of each stack below its red zone. Pages never touched are
 * skipped (/proc/PID/pagemap).
 *
 * What is a root: all of that but the malloc heap (see reach_heap_areas)
 * and the blocks themselves; the registers of every stopped thread. A
 * block is reachable only through a chain from a root. When the
 * collector's table cannot hold every live block of the process (attached
 * later, sampled, events lost), the heap outside tracked blocks is a root
 * too: an untracked block there may hold the only pointer to a tracked one
 * (conservative: stale pointers in free chunks can then keep a lost block
 * "reachable"). */
#include "scan.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "collector/common/procmaps.h"
#include "pytype.h"
#include "reach.h"
#include "rootname.h"
#include "collector/common/tracee.h"

#define PAGE 4096ull
#define RED_ZONE 128u
#define SNAP_WAIT_S 10            /* the collector answers well within this */
#define IOV_BATCH 512
#define PM_CHUNK 65536u           /* pagemap entries read at once */
#define SMALL_PAGES 16u           /* ranges this small are read without pagemap */
#define SCAN_PY_MAX (8u << 20)    /* Python objects marked through, at most */
#define NOT_TRACKED UINT32_MAX
#define PYSEGS_MAX 65536u         /* distinct segments of Python objects kept */
#define GC_LINKS_MAX (1u << 20)   /* possible GC links deferred, at most (16 bytes each) */

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void set_stage(scan_job_t *j, int st)
{
    atomic_store(&j->stage, st);
    if (j->notify)
        j->notify(j->notify_arg);
}

static void fail(scan_job_t *j, int err, const char *msg)
{
    char m[sizeof j->msg];
    snprintf(m, sizeof m, "%s", msg);
    j->err = err ? err : -EIO;
    memcpy(j->msg, m, sizeof m);
    set_stage(j, SCAN_FAILED);
}

/* A growable array of ranges. */
typedef struct rv_s {
    reach_rng_t *r;
    size_t n, cap;
} rv_t;

static int rv_add(rv_t *v, uint64_t lo, uint64_t hi)
{
    if (hi <= lo)
        return 0;
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        reach_rng_t *nr = realloc(v->r, nc * sizeof *nr);
        if (!nr)
            return -ENOMEM;
        v->r = nr;
        v->cap = nc;
    }
    v->r[v->n++] = (reach_rng_t){ lo, hi };
    return 0;
}

/* The copy being built: runs, then one buffer for all of them. */
typedef struct img_s {
    reach_run_t *runs;
    size_t n, cap;
    uint64_t bytes;
    uint8_t *buf;     /* mmap'd, map_len long */
    uint64_t map_len;
} img_t;

/* Anonymous memory, len bytes, with the pages of its first hot bytes
 * faulted in at once: page faults one by one (inside process_vm_readv, or
 * while filling a snapshot) cost far more (measured on the test VM: 8 ms
 * against 130 ms for 24 MiB), and the process waits for the copy. The rest
 * is a margin, faulted in only if used: populated, it stayed in
 * collectord's peak RSS for nothing (issue 19.6). NULL on failure. */
static void *populated(uint64_t len, uint64_t hot)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    hot = (hot < len ? hot : len + PAGE - 1) & ~(PAGE - 1);
    if (hot && mmap(p, hot, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE, -1, 0) == MAP_FAILED) {
        munmap(p, len);
        return NULL;
    }
    return p;
}

static int img_add(img_t *m, uint64_t lo, uint64_t hi)
{
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 256;
        reach_run_t *nr = realloc(m->runs, nc * sizeof *nr);
        if (!nr)
            return -ENOMEM;
        m->runs = nr;
        m->cap = nc;
    }
    m->runs[m->n++] = (reach_run_t){ lo, hi, NULL };
    m->bytes += hi - lo;
    return 0;
}

/* One buffer for every run: the one prepared before the process was
 * stopped when it is large enough, else a new one. */
static int img_alloc(img_t *m)
{
    if (!m->bytes)
        return 0;
    if (m->bytes > m->map_len) {
        if (m->buf)
            munmap(m->buf, m->map_len);
        m->buf = populated(m->bytes, m->bytes);
        m->map_len = m->buf ? m->bytes : 0;
        if (!m->buf)
            return -ENOMEM;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < m->n; i++) {
        m->runs[i].data = m->buf + off;
        off += m->runs[i].hi - m->runs[i].lo;
    }
    return 0;
}

/* MemAvailable from /proc/meminfo, bytes (0: unknown). */
static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        return 0;
    char line[128];
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %" SCNu64 " kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

/* Before the process is stopped: a buffer for about what the copy will
 * need (pages that exist in its private writable mappings, plus a margin).
 * Returns 0, or -E2BIG when that is more than half the memory available
 * (a scan must not take collectord, or the machine, down), -ENOMEM. */
static int img_prepare(img_t *m, pid_t pid, char *err, size_t errlen)
{
    maps_t mp;
    if (maps_read(&mp, pid) < 0)
        return 0; /* said when the worker reads it again */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/pagemap", (int)pid);
    int pm = open(path, O_RDONLY | O_CLOEXEC);
    uint64_t total = 0;
    uint64_t *ent = malloc(PM_CHUNK * sizeof *ent);
    for (size_t i = 0; i < mp.n; i++) {
        const maps_ent_t *e = &mp.e[i];
        if ((e->prot & (MAPS_R | MAPS_W)) != (MAPS_R | MAPS_W) || (e->prot & MAPS_SHARED))
            continue;
        uint64_t pages = (e->hi - e->lo) / PAGE;
        for (uint64_t p0 = 0; p0 < pages; p0 += PM_CHUNK) {
            uint64_t k = pages - p0 < PM_CHUNK ? pages - p0 : PM_CHUNK;
            if (pm < 0 || !ent || pread(pm, ent, k * 8, (off_t)((e->lo / PAGE + p0) * 8)) !=
                              (ssize_t)(k * 8)) {
                total += k * PAGE;
                continue;
            }
            for (uint64_t x = 0; x < k; x++)
                total += ((ent[x] >> 62) & 3) ? PAGE : 0;
        }
    }
    if (pm >= 0)
        close(pm);
    free(ent);
    maps_free(&mp);
    uint64_t hot = total;
    total += total / 8 + (4u << 20);
    uint64_t avail = mem_available();
    if (avail && total > avail / 2) {
        snprintf(err, errlen, "the copy would take %.1f GiB, more than half the %.1f GiB of "
                              "memory available: not scanned",
                 total / 1073741824.0, avail / 1073741824.0);
        return -E2BIG;
    }
    m->buf = populated(total, hot);
    m->map_len = m->buf ? total : 0;
    if (!m->buf) {
        snprintf(err, errlen, "cannot map %.1f MiB for the copy", total / 1048576.0);
        return -ENOMEM;
    }
    return 0;
}

static void img_free(img_t *m)
{
    if (m->buf)
        munmap(m->buf, m->map_len);
    free(m->runs);
    memset(m, 0, sizeof *m);
}

/* Runs of [lo, hi) whose pages exist (present or swapped), per pagemap. */
static int present_runs(int pm, img_t *m, uint64_t lo, uint64_t hi)
{
    uint64_t pages = (hi - lo) / PAGE;
    if (pm < 0 || pages <= SMALL_PAGES)
        return img_add(m, lo, hi);
    uint64_t *ent = malloc(PM_CHUNK * sizeof *ent);
    if (!ent)
        return img_add(m, lo, hi);
    uint64_t run_lo = 0;
    int in = 0;
    int rc = 0;
    for (uint64_t p0 = 0; p0 < pages; p0 += PM_CHUNK) {
        uint64_t k = pages - p0 < PM_CHUNK ? pages - p0 : PM_CHUNK;
        off_t off = (off_t)(((lo / PAGE) + p0) * 8);
        ssize_t r = pread(pm, ent, k * 8, off);
        if (r != (ssize_t)(k * 8)) {
            /* No pagemap here: read it all. */
            if (in && img_add(m, run_lo, lo + p0 * PAGE) < 0)
                rc = -ENOMEM;
            else
                rc = img_add(m, lo + p0 * PAGE, hi);
            free(ent);
            return rc;
        }
        for (uint64_t i = 0; i < k; i++) {
            int live = (ent[i] >> 62) & 3; /* bit 63 present, bit 62 swapped */
            uint64_t a = lo + (p0 + i) * PAGE;
            if (live && !in) {
                run_lo = a;
                in = 1;
            } else if (!live && in) {
                if (img_add(m, run_lo, a) < 0) {
                    free(ent);
                    return -ENOMEM;
                }
                in = 0;
            }
        }
    }
    free(ent);
    if (in)
        return img_add(m, run_lo, hi);
    return 0;
}

/* Copies the runs out of the process; a run that cannot be read (gone
 * meanwhile) reads as zeros. */
static void img_read(pid_t pid, img_t *m)
{
    struct iovec l[IOV_BATCH], r[IOV_BATCH];
    for (size_t i = 0; i < m->n; i += IOV_BATCH) {
        size_t k = m->n - i < IOV_BATCH ? m->n - i : IOV_BATCH;
        for (size_t x = 0; x < k; x++) {
            const reach_run_t *run = &m->runs[i + x];
            l[x] = (struct iovec){ (void *)run->data, run->hi - run->lo };
            r[x] = (struct iovec){ (void *)(uintptr_t)run->lo, run->hi - run->lo };
        }
        ssize_t got = process_vm_readv(pid, l, k, r, k, 0);
        if (got == (ssize_t)0 || got < 0)
            got = 0;
        /* A short read stops at the first unreadable page: read the rest
         * run by run, zeroing what fails. */
        size_t done = 0;
        for (size_t x = 0; x < k; x++) {
            size_t len = l[x].iov_len;
            if ((size_t)got >= done + len) {
                done += len;
                continue;
            }
            size_t have = (size_t)got > done ? (size_t)got - done : 0;
            done += len;
            for (size_t off = have; off < len; off += PAGE) {
                size_t n = len - off < PAGE ? len - off : PAGE;
                struct iovec lp = { (char *)l[x].iov_base + off, n },
                             rp = { (char *)r[x].iov_base + off, n };
                if (process_vm_readv(pid, &lp, 1, &rp, 1, 0) != (ssize_t)n)
                    memset(lp.iov_base, 0, n);
            }
        }
    }
}

/* Sorts the snapshot by address: LSD radix sort on 16-bit digits of
 * addr / 16 (blocks are 16-byte aligned; user addresses fit 48 bits), a
 * digit skipped when every block shares it, of (address, index) keys, 16
 * bytes a block (twice, for the sort); then the entries move in place,
 * cycle by cycle. Sorting the 48-byte entries themselves needed a second
 * snapshot, the peak of the scan's memory (issue 19.6). qsort took ~0.5 s
 * for a million blocks on the test VM. Returns 0 or -ENOMEM. */
typedef struct sortkey_s {
    uint64_t addr;
    uint64_t idx;
} sortkey_t;

static int sort_snap(scan_ent_t *a, size_t n)
{
    if (n < 2)
        return 0;
    sortkey_t *key = reach_scratch(n * sizeof *key), *tmp = reach_scratch(n * sizeof *tmp);
    uint32_t *cnt = malloc(65536 * sizeof *cnt);
    if (!key || !tmp || !cnt) {
        reach_scratch_free(key);
        reach_scratch_free(tmp);
        free(cnt);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        key[i] = (sortkey_t){ a[i].addr, i };
    sortkey_t *src = key, *dst = tmp;
    for (int shift = 4; shift < 64; shift += 16) {
        memset(cnt, 0, 65536 * sizeof *cnt);
        for (size_t i = 0; i < n; i++)
            cnt[(src[i].addr >> shift) & 0xffff]++;
        if (cnt[(src[0].addr >> shift) & 0xffff] == n)
            continue; /* one digit for all: nothing to do */
        uint32_t sum = 0;
        for (size_t d = 0; d < 65536; d++) {
            uint32_t c = cnt[d];
            cnt[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[cnt[(src[i].addr >> shift) & 0xffff]++] = src[i];
        sortkey_t *t = src;
        src = dst;
        dst = t;
    }
    free(cnt);
    reach_scratch_free(dst);
    /* src[k].idx: the entry that goes to k. Each cycle of that permutation
     * moves through one spare entry; a moved position's idx becomes k. */
    for (size_t i = 0; i < n; i++) {
        if (src[i].idx == i)
            continue;
        scan_ent_t spare = a[i];
        size_t k = i;
        while (src[k].idx != i) {
            size_t from = src[k].idx;
            a[k] = a[from];
            src[k].idx = k;
            k = from;
        }
        a[k] = spare;
        src[k].idx = k;
    }
    reach_scratch_free(src);
    return 0;
}

static int skipped_mapping(const maps_ent_t *e)
{
    if ((e->prot & (MAPS_R | MAPS_W)) != (MAPS_R | MAPS_W) || (e->prot & MAPS_SHARED))
        return 1;
    return !strcmp(e->path, "[vvar]") || !strcmp(e->path, "[vsyscall]") ||
           !strcmp(e->path, "[vdso]") || !strncmp(e->path, "[vvar", 5) ||
           !strncmp(e->path, "/dev/", 5);
}

/* A dead thread's stack [lo, hi), its frames below fhi: the frames are
 * left out of the roots (glibc keeps such stacks for reuse, stale words
 * and all; LSan and valgrind do not scan them either) only while the map
 * still shows exactly that thread stack: a writable anonymous mapping
 * [lo, hi) right above a guard page (no access), and no stopped thread's
 * stack pointer in it; every thread stopped (an unstopped one's stack is
 * unknown). Its top (the TCB, static TLS) stays a root. */
static int dead_frames_ok(const maps_t *m, const trc_t *tr, uint64_t lo, uint64_t fhi,
                          uint64_t hi)
{
    const maps_ent_t *e = maps_find(m, lo);
    const maps_ent_t *g = lo ? maps_find(m, lo - 1) : NULL;
    if (!e || e->lo != lo || e->hi != hi || fhi <= lo || fhi > hi || skipped_mapping(e) ||
        e->path[0] || !g || g->hi != lo || (g->prot & (MAPS_R | MAPS_W | MAPS_X)))
        return 0;
    for (size_t t = 0; t < tr->n; t++) {
        if (!tr->t[t].stopped)
            return 0;
        uint64_t sp = tr->t[t].regs.rsp;
        if (sp >= e->lo && sp < e->hi)
            return 0;
    }
    return 1;
}

/* Marks, for each of the k ranges, whether some block starts in it: one
 * pass over the (unsorted) snapshot; sorting a million blocks would keep
 * the process stopped longer. */
static void ranges_with_blocks(const scan_ent_t *s, size_t n, const maps_ent_t **r, size_t k,
                               uint8_t *has)
{
    memset(has, 0, k);
    for (size_t i = 0; i < n; i++)
        for (size_t x = 0; x < k; x++)
            if (s[i].addr >= r[x]->lo && s[i].addr < r[x]->hi)
                has[x] = 1;
}

/* A module's file as the process maps it at e, opened on r (the last file
 * opened stays open): not a device nor deleted, the path not a symlink,
 * the file there a regular one (a FIFO put at the path would block the
 * worker) and still the mapped inode. Returns the fd or -1. */
typedef struct rofile_s {
    const maps_t *maps;
    int fd;
    const maps_ent_t *at;   /* the mapping fd was opened for */
} rofile_t;

static int map_file_fd(rofile_t *r, const maps_ent_t *e)
{
    size_t pl = strlen(e->path);
    if (e->path[0] != '/' || !strncmp(e->path, "/dev/", 5) ||
        (pl > 10 && !strcmp(e->path + pl - 10, " (deleted)")))
        return -1;
    if (r->at && !strcmp(r->at->path, e->path) && r->at->inode == e->inode)
        return r->fd;
    if (r->fd >= 0)
        close(r->fd);
    r->at = NULL;
    r->fd = maps_open_file(e->path, 1, e->inode);
    if (r->fd < 0)
        return -1;
    r->at = e;
    return r->fd;
}

/* Read-only memory of the scanned process (a type's name in a module's
 * .rodata: the copy holds writable memory only), read from the module's
 * file as mapped (map_file_fd): a private file mapping that is not
 * writable. */
static size_t ro_read(void *ctx, uint64_t addr, char *buf, size_t len)
{
    rofile_t *r = ctx;
    const maps_ent_t *e = maps_find(r->maps, addr);
    if (!e || (e->prot & (MAPS_W | MAPS_SHARED)) || !(e->prot & MAPS_R))
        return 0;
    int fd = map_file_fd(r, e);
    if (fd < 0)
        return 0;
    if (len > e->hi - addr)
        len = e->hi - addr;
    ssize_t got = pread(fd, buf, len, (off_t)(e->offset + (addr - e->lo)));
    return got > 0 ? (size_t)got : 0;
}

/* Module data words the program never stored are no roots
 * (reach_rng_changed): each root range's part in a private writable
 * mapping of a loaded module's file (module_mapping) is compared with the file, read at the mapping's
 * offset, when the file is still the one mapped (map_file_fd); past
 * PRISTINE_MAX bytes read, or when a file cannot be read, a part stays
 * whole. Returns the new roots (reach_scratch) and sets *nr and *skipped
 * (bytes left out), or NULL when out of memory. */
#define PRISTINE_MAX (64ull << 20)
#define PRISTINE_CHUNK (1u << 20)

/* Whether e's file is a loaded module: the process also maps it
 * executable (same path and inode). A data file a program maps privately
 * and writable may hold, from its file, pointers the program wrote there
 * before mapping it back: its words stay roots. */
static int module_mapping(const maps_t *maps, const maps_ent_t *e)
{
    if (e->path[0] != '/')
        return 0;
    for (size_t k = 0; k < maps->n; k++)
        if ((maps->e[k].prot & MAPS_X) && maps->e[k].inode == e->inode &&
            !strcmp(maps->e[k].path, e->path))
            return 1;
    return 0;
}

static reach_rng_t *drop_pristine(const maps_t *maps, const reach_img_t *im,
                                  const reach_rng_t *roots, size_t *nr, uint64_t *skipped)
{
    reach_rng_t *out = NULL;
    size_t n = 0, cap = 0;
    uint8_t *buf = malloc(PRISTINE_CHUNK);
    uint64_t budget = PRISTINE_MAX, kept = 0, in = 0;
    rofile_t rf = { .maps = maps, .fd = -1 };
    if (!buf)
        return NULL;
    for (size_t r = 0; r < *nr; r++) {
        uint64_t a = (roots[r].lo + 7) & ~7ull, hi = roots[r].hi & ~7ull;
        in += hi > a ? hi - a : 0;
        while (a < hi) {
            const maps_ent_t *e = maps_find(maps, a);
            uint64_t end = hi;
            if (e && e->hi < end)
                end = e->hi;
            else if (!e) {
                /* Up to the next mapping: the roots came from mappings. */
                for (size_t k = 0; k < maps->n; k++)
                    if (maps->e[k].lo > a && maps->e[k].lo < end) {
                        end = maps->e[k].lo;
                        break;
                    }
            }
            if (end - a > PRISTINE_CHUNK)
                end = a + PRISTINE_CHUNK;
            int fd = e && (e->prot & MAPS_W) && !(e->prot & MAPS_SHARED) && budget >= end - a &&
                             module_mapping(maps, e)
                         ? map_file_fd(&rf, e)
                         : -1;
            if (fd >= 0) {
                size_t len = (size_t)(end - a);
                ssize_t got = pread(fd, buf, len, (off_t)(e->offset + (a - e->lo)));
                if (got < 0)
                    got = 0;
                memset(buf + got, 0, len - (size_t)got); /* past the file's end: zeros */
                budget -= len;
                if (reach_rng_changed(im, a, end, buf, &out, &n, &cap) < 0)
                    goto nomem;
            } else if (reach_rng_push(&out, &n, &cap, a, end) < 0) {
                goto nomem;
            }
            a = end;
        }
    }
    if (rf.fd >= 0)
        close(rf.fd);
    free(buf);
    n = reach_rng_normalize(out, n);
    reach_rng_t *res = reach_scratch((n ? n : 1) * sizeof *res);
    if (!res) {
        free(out);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        kept += out[i].hi - out[i].lo;
    if (n)
        memcpy(res, out, n * sizeof *res);
    free(out);
    *nr = n;
    *skipped = in > kept ? in - kept : 0;
    return res;
nomem:
    if (rf.fd >= 0)
        close(rf.fd);
    free(buf);
    free(out);
    return NULL;
}

/* Segments of Python objects, interned (open addressing over indices). */
typedef struct segtab_s {
    scan_pyseg_t *v;
    size_t n, cap;
    uint32_t *slot;         /* index + 1; 0 empty; PYSEGS_MAX * 2 slots */
} segtab_t;

static uint32_t seg_hash(const scan_pyseg_t *g)
{
    const uint8_t *p = (const uint8_t *)g;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < sizeof *g; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

/* The index of segment g (its unused entries zero), SCAN_PYSEG_MANY past
 * PYSEGS_MAX; -1 on ENOMEM. */
static long seg_intern(segtab_t *t, const scan_pyseg_t *g)
{
    if (!t->slot && !(t->slot = calloc(2 * PYSEGS_MAX, sizeof *t->slot)))
        return -1;
    for (uint32_t i = seg_hash(g) & (2 * PYSEGS_MAX - 1);; i = (i + 1) & (2 * PYSEGS_MAX - 1)) {
        uint32_t k = t->slot[i];
        if (k && !memcmp(&t->v[k - 1], g, sizeof *g))
            return (long)(k - 1);
        if (k)
            continue;
        if (t->n == PYSEGS_MAX)
            return SCAN_PYSEG_MANY;
        if (t->n == t->cap) {
            size_t nc = t->cap ? t->cap * 2 : 256;
            scan_pyseg_t *v = realloc(t->v, nc * sizeof *v);
            if (!v)
                return -1;
            t->v = v;
            t->cap = nc;
        }
        t->v[t->n] = *g;
        t->slot[i] = (uint32_t)++t->n;
        return (long)(t->n - 1);
    }
}

/* One more Python object on a chain, outward from the block. Unused
 * entries stay zero (segments are compared whole). */
static void seg_push(scan_pyseg_t *g, pytypes_t *ty, const reach_blk_t *b)
{
    if (g->more)
        return;
    long t = pytypes_of(ty, b->addr, b->size);
    uint32_t type = t < 0 ? SCAN_PYTYPE_NONE : (uint32_t)t;
    uint32_t size = b->size > UINT32_MAX ? UINT32_MAX : (uint32_t)b->size;
    if (type != SCAN_PYTYPE_NONE && g->n && g->type[g->n - 1] == SCAN_PYTYPE_NONE) {
        /* The block before it has no type: no object, the storage of this
         * one (a dict's keys, a list's items) that it points to. */
        g->n--;
        g->type[g->n] = g->size[g->n] = 0;
    }
    if (g->n == SCAN_PYSEG_OBJS) {
        g->more = 1;
        return;
    }
    g->type[g->n] = type;
    g->size[g->n++] = size;
}

static void *worker(void *arg)
{
    scan_job_t *j = arg;
    uint64_t cpu0 = thread_cpu_ns();
    char err[512];
    trc_t tr;
    maps_t maps = { 0 };
    img_t img = { 0 };
    rv_t mem = { 0 }, dead = { 0 }, agent = { 0 }, vmas = { 0 }, ext = { 0 };
    reach_rng_t *tmp = NULL, *heap = NULL, *roots = NULL;
    reach_blk_t *blk = NULL, *all = NULL, *pyb = NULL;
    reach_rng_t *pools = NULL;
    size_t npools = 0, pcap = 0, npyb = 0, pybcap = 0;
    uint32_t *tix = NULL;
    uint8_t *marked = NULL;
    uint32_t *own = NULL, *parent = NULL;
    uint64_t *via = NULL, *sps = NULL;
    pid_t *tids = NULL;
    rootname_t *names = NULL;
    pytypes_t *types = NULL;
    segtab_t segs = { 0 };
    rofile_t rof = { .fd = -1 };
    uint32_t *ptype = NULL;
    uint8_t *pyt = NULL, *pyn = NULL;
    uint64_t *vals = NULL;
    int pm = -1, frozen = 0;
    /* Buffers first, while the process runs. */
    int rc = img_prepare(&img, j->pid, err, sizeof err);
    if (rc < 0) {
        fail(j, rc, err);
        goto out;
    }
    if (j->live_hint) {
        size_t cap = j->live_hint + j->live_hint / 4 + 1024;
        j->snap = populated(cap * sizeof *j->snap, j->live_hint * sizeof *j->snap);
        j->snap_cap = j->snap ? cap : 0;
    }
    rc = trc_freeze(&tr, j->pid, j->skip, 1000, err, sizeof err);
    if (rc == -EPERM && trc_yama_scope() == 1) {
        /* Only an ancestor may trace it: ask its agent to allow us. */
        set_stage(j, SCAN_NEED_TRACER);
        pthread_mutex_lock(&j->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += SNAP_WAIT_S;
        while (!j->retry && !j->abort)
            if (pthread_cond_timedwait(&j->cv, &j->mu, &until) == ETIMEDOUT)
                break;
        int again = j->retry && !j->abort;
        pthread_mutex_unlock(&j->mu);
        if (again)
            rc = trc_freeze(&tr, j->pid, j->skip, 1000, err, sizeof err);
    }
    if (rc < 0) {
        fail(j, rc, err);
        goto out;
    }
    frozen = 1;
    j->threads = (uint32_t)tr.n;
    uint64_t t_frozen = trc_now_ns();
    j->stop_ns = t_frozen - tr.stop_ns;
    set_stage(j, SCAN_FROZEN);
    pthread_mutex_lock(&j->mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += SNAP_WAIT_S;
    while (!j->have_snap && !j->abort)
        if (pthread_cond_timedwait(&j->cv, &j->mu, &until) == ETIMEDOUT)
            break;
    int go = j->have_snap && !j->abort;
    pthread_mutex_unlock(&j->mu);
    if (!go) {
        fail(j, -ECANCELED, j->abort ? j->msg : "no snapshot of the live blocks came");
        goto out;
    }
    uint64_t t_snap = trc_now_ns();
    j->sync_ns = t_snap - t_frozen;
    /* ---- the copy, while the threads are stopped */
    if ((rc = maps_read(&maps, j->pid)) < 0) {
        snprintf(err, sizeof err, "cannot read /proc/%d/maps (%s)", (int)j->pid, strerror(-rc));
        fail(j, rc, err);
        goto out;
    }
    for (size_t i = 0; i < j->nregions; i++)
        if (rv_add(&agent, j->regions[2 * i], j->regions[2 * i + 1]) < 0)
            goto nomem;
    for (size_t i = 0; i < j->ndead; i++) {
        const uint64_t *d = &j->regions[2 * j->nregions + 3 * i];
        if (!dead_frames_ok(&maps, &tr, d[0], d[1], d[2]))
            continue;
        if (rv_add(&agent, d[0], d[1]) < 0)
            goto nomem;
    }
    agent.n = reach_rng_normalize(agent.r, agent.n);
    for (size_t i = 0; i < maps.n; i++) {
        const maps_ent_t *e = &maps.e[i];
        if (skipped_mapping(e))
            continue;
        if (rv_add(&vmas, e->lo, e->hi) < 0 || rv_add(&mem, e->lo, e->hi) < 0)
            goto nomem;
    }
    /* Below each stack pointer (and its red zone) is dead stack, unless the
     * thread runs on a stack that holds blocks (then it is heap). */
    const maps_ent_t **sv = malloc((tr.n ? tr.n : 1) * sizeof *sv);
    uint8_t *has = malloc(tr.n ? tr.n : 1);
    if (!sv || !has) {
        free(sv);
        free(has);
        goto nomem;
    }
    for (size_t t = 0; t < tr.n; t++) {
        const maps_ent_t *e = tr.t[t].stopped ? maps_find(&maps, tr.t[t].regs.rsp) : NULL;
        sv[t] = e && !skipped_mapping(e) ? e : &maps.e[0];
    }
    ranges_with_blocks(j->snap, j->nsnap, sv, tr.n, has);
    for (size_t t = 0; t < tr.n; t++) {
        if (!tr.t[t].stopped || has[t] || sv[t] == &maps.e[0])
            continue;
        uint64_t sp = tr.t[t].regs.rsp;
        uint64_t top = sp > sv[t]->lo + RED_ZONE ? (sp - RED_ZONE) & ~(PAGE - 1) : sv[t]->lo;
        if (rv_add(&dead, sv[t]->lo, top) < 0) {
            free(sv);
            free(has);
            goto nomem;
        }
    }
    free(sv);
    free(has);
    dead.n = reach_rng_normalize(dead.r, dead.n);
    size_t cap = mem.n + agent.n + dead.n + 1;
    tmp = malloc(cap * sizeof *tmp);
    reach_rng_t *tmp2 = malloc(cap * 2 * sizeof *tmp2);
    if (!tmp || !tmp2) {
        free(tmp2);
        goto nomem;
    }
    size_t n1 = reach_rng_sub(mem.r, mem.n, agent.r, agent.n, tmp);
    size_t n2 = reach_rng_sub(tmp, n1, dead.r, dead.n, tmp2);
    free(mem.r);
    mem.r = tmp2;
    mem.n = n2;
    mem.cap = cap * 2;
    char pmpath[64];
    snprintf(pmpath, sizeof pmpath, "/proc/%d/pagemap", (int)j->pid);
    pm = open(pmpath, O_RDONLY | O_CLOEXEC);
    for (size_t i = 0; i < mem.n; i++)
        if (present_runs(pm, &img, mem.r[i].lo & ~(PAGE - 1), (mem.r[i].hi + PAGE - 1) &
                                                                   ~(PAGE - 1)) < 0)
            goto nomem;
    if (img_alloc(&img) < 0)
        goto nomem;
    uint64_t t_plan = trc_now_ns();
    img_read(j->pid, &img);
    j->read_bytes = img.bytes;
    j->read_ns = trc_now_ns() - t_plan;
    /* Registers: values that may point into blocks. */
    size_t wpr = sizeof(tr.t[0].regs) / 8;
    vals = malloc((tr.n ? tr.n : 1) * wpr * sizeof *vals);
    if (!vals)
        goto nomem;
    size_t nvals = 0, nthr = 0;
    tids = malloc((tr.n ? tr.n : 1) * sizeof *tids);
    sps = malloc((tr.n ? tr.n : 1) * sizeof *sps);
    if (!tids || !sps)
        goto nomem;
    for (size_t t = 0; t < tr.n; t++)
        if (tr.t[t].stopped) {
            memcpy(vals + nvals, &tr.t[t].regs, wpr * 8);
            nvals += wpr;
            tids[nthr] = tr.t[t].tid; /* for naming roots: register k is thread k / wpr's */
            sps[nthr++] = tr.t[t].regs.rsp;
        }
    trc_release(&tr);
    frozen = 0;
    uint64_t t_go = trc_now_ns();
    j->pause_ns = t_go - tr.stop_ns;
    j->copy_ns = t_go - t_snap;
    uint64_t t_mark = t_go;
    /* ---- marking, the process running again */
    if (sort_snap(j->snap, j->nsnap) < 0)
        goto nomem;
    blk = reach_scratch((j->nsnap ? j->nsnap : 1) * sizeof *blk);
    heap = reach_scratch((j->nsnap + 2) * sizeof *heap);
    if (!blk || !heap)
        goto nomem;
    reach_rng_t brk = { 0, 0 };
    for (size_t i = 0; i < maps.n; i++)
        if (!strcmp(maps.e[i].path, "[heap]"))
            brk = (reach_rng_t){ maps.e[i].lo, maps.e[i].hi };
    ext.r = reach_scratch((j->nsnap ? j->nsnap : 1) * sizeof *ext.r);
    if (!ext.r)
        goto nomem;
    ext.cap = j->nsnap;
    for (size_t i = 0; i < j->nsnap; i++) {
        const scan_ent_t *e = &j->snap[i];
        blk[i] = (reach_blk_t){ e->addr, e->size };
        ext.r[i] = (reach_rng_t){ e->addr, e->addr + (e->size ? e->size : 1) };
    }
    ext.n = reach_rng_normalize(ext.r, j->nsnap); /* sorted already: one pass */
    reach_img_t im = { img.runs, img.n };
    /* The heap is where malloc's blocks are: a sampled Python object lies
     * in a pymalloc arena, and the word before it (its neighbour's) read as
     * a chunk header would make that whole mapping heap, no root and no
     * pool found in it: every chain through its untracked objects cut. */
    reach_blk_t *mb = blk;
    size_t nmb = j->nsnap;
    for (size_t i = 0; i < j->nsnap && mb == blk; i++)
        if (j->snap[i].py)
            mb = reach_scratch(j->nsnap * sizeof *mb);
    if (!mb)
        goto nomem;
    if (mb != blk) {
        nmb = 0;
        for (size_t i = 0; i < j->nsnap; i++)
            if (!j->snap[i].py)
                mb[nmb++] = blk[i];
    }
    size_t nheap = reach_heap_areas(&im, mb, nmb, brk, vmas.r, vmas.n, heap);
    if (mb != blk)
        reach_scratch_free(mb);
    nheap = reach_rng_normalize(heap, nheap);
    size_t rcap = mem.n + nheap + ext.n + 1;
    roots = reach_scratch(rcap * sizeof *roots);
    reach_rng_t *r2 = reach_scratch(rcap * sizeof *r2);
    if (!roots || !r2) {
        reach_scratch_free(r2);
        goto nomem;
    }
    size_t nr = mem.n;
    memcpy(roots, mem.r, mem.n * sizeof *roots);
    if (!j->heap_roots) {
        nr = reach_rng_sub(mem.r, mem.n, heap, nheap, r2);
        memcpy(roots, r2, nr * sizeof *roots);
    }
    /* pymalloc's pools (before tracked blocks, some of them Python's, cut
     * the ranges): their live blocks are nodes like tracked ones, the rest
     * of them (headers, free blocks) no root. Past SCAN_PY_MAX objects they
     * stay roots. */
    int prc = reach_pools(&im, roots, nr, SCAN_PY_MAX, &pools, &npools, &pcap, &pyb, &npyb,
                          &pybcap);
    if (prc == -ENOMEM)
        goto nomem;
    if (prc < 0)
        npools = npyb = 0;
    nr = reach_rng_sub(roots, nr, ext.r, ext.n, r2);
    reach_scratch_free(roots);
    roots = r2;
    if (npools) {
        r2 = reach_scratch((nr + npools + 1) * sizeof *r2);
        if (!r2)
            goto nomem;
        nr = reach_rng_sub(roots, nr, pools, npools, r2);
        reach_scratch_free(roots);
        roots = r2;
    }
    free(pools);
    pools = NULL;
    r2 = drop_pristine(&maps, &im, roots, &nr, &j->pristine_bytes);
    if (!r2)
        goto nomem;
    reach_scratch_free(roots);
    roots = r2;
    /* What made the roots is not needed again: the peak is the marking's. */
    reach_scratch_free(ext.r);
    ext.r = NULL;
    reach_scratch_free(heap);
    heap = NULL;
    free(mem.r);
    mem.r = NULL;
    /* Every node: the tracked blocks and the Python objects no tracked
     * block already is (sampled ones are both), in address order; tix[k]
     * is node k's snapshot index, or NOT_TRACKED. */
    size_t nn = 0;
    all = reach_scratch((j->nsnap + npyb + 1) * sizeof *all);
    tix = reach_scratch((j->nsnap + npyb + 1) * sizeof *tix);
    pyt = reach_scratch(j->nsnap + 1); /* a tracked block in a pool: a traced Python object */
    pyn = reach_scratch(j->nsnap + npyb + 1); /* a node in a pool */
    if (!all || !tix || !pyt || !pyn)
        goto nomem;
    for (size_t a = 0, b = 0, t = 0; a < j->nsnap || b < npyb;) {
        if (b < npyb) {
            while (t < j->nsnap && blk[t].addr + (blk[t].size ? blk[t].size : 1) <= pyb[b].addr)
                t++;
            if (t < j->nsnap && blk[t].addr < pyb[b].addr + pyb[b].size) {
                pyt[t] = 1;
                b++; /* a tracked block */
                continue;
            }
        }
        if (b >= npyb || (a < j->nsnap && blk[a].addr <= pyb[b].addr)) {
            pyn[nn] = pyt[a];
            all[nn] = blk[a];
            tix[nn++] = (uint32_t)a++;
        } else {
            pyn[nn] = 1;
            all[nn] = pyb[b++];
            tix[nn++] = NOT_TRACKED;
        }
    }
    j->py_objects = nn - j->nsnap;
    free(pyb);
    pyb = NULL;
    reach_scratch_free(blk);
    blk = NULL;
    reach_stats_t st;
    marked = reach_scratch(nn ? nn : 1);
    parent = reach_scratch((nn ? nn : 1) * sizeof *parent);
    via = reach_scratch((nn ? nn : 1) * sizeof *via);
    if (!marked || !parent || !via ||
        reach_mark_py(&im, all, nn, roots, nr, vals, nvals, marked, &st, parent, via, pyn,
                      npyb ? GC_LINKS_MAX : 0) < 0)
        goto nomem;
    reach_scratch_free(pyn);
    pyn = NULL;
    reach_scratch_free(pyt);
    pyt = NULL;
    /* Why each reachable block is: its parent, or the root named in words,
     * and the Python objects in between (their types read from the copy). */
    names = rootname_new(&maps, j->pid, tids, sps, nthr, wpr);
    rof.maps = &maps;
    types = pytypes_new(&im, ro_read, &rof);
    /* Per tracked block, its type + 1 once read (0: not yet): blocks
     * that are parents on a chain are looked at, each once. */
    ptype = reach_scratch((j->nsnap + 1) * sizeof *ptype);
    if (!names || !types || !ptype)
        goto nomem;
    for (size_t k = 0; k < nn; k++) {
        if (tix[k] == NOT_TRACKED)
            continue;
        scan_ent_t *e = &j->snap[tix[k]];
        e->parent = SCAN_PARENT_ROOT;
        e->label = UINT32_MAX;
        e->pyseg = SCAN_PYSEG_NONE;
        if (!marked[k])
            continue;
        scan_pyseg_t sg = { .ptype = SCAN_PYTYPE_NONE };
        uint32_t p = parent[k], top = (uint32_t)k;
        while (p != REACH_PARENT_ROOT && tix[p] == NOT_TRACKED) {
            seg_push(&sg, types, &all[p]);
            top = p;
            p = parent[p];
        }
        if (p != REACH_PARENT_ROOT) {
            uint32_t *pt = &ptype[tix[p]];
            if (!*pt) {
                long t = pytypes_of(types, all[p].addr, all[p].size);
                *pt = t < 0 ? SCAN_PYTYPE_NONE : (uint32_t)t + 1;
            }
            sg.ptype = *pt == SCAN_PYTYPE_NONE ? SCAN_PYTYPE_NONE : *pt - 1;
        }
        if (sg.n || sg.ptype != SCAN_PYTYPE_NONE) {
            long g = seg_intern(&segs, &sg);
            if (g < 0)
                goto nomem;
            e->pyseg = (uint32_t)g;
        }
        if (p != REACH_PARENT_ROOT) {
            e->parent = tix[p];
            continue;
        }
        long l = rootname_label(names, via[top]);
        if (l < 0)
            goto nomem;
        e->label = (uint32_t)l;
    }
    j->pytypes = pytypes_take(types, &j->npytypes);
    j->pysegs = segs.v;
    j->npysegs = segs.n;
    segs.v = NULL;
    reach_scratch_free(ptype);
    ptype = NULL;
    j->labels = rootname_take(names, &j->nlabels);
    reach_scratch_free(parent);
    parent = NULL;
    reach_scratch_free(via);
    via = NULL;
    reach_scratch_free(roots);
    roots = NULL;
    own = reach_scratch((nn ? nn : 1) * sizeof *own);
    if (!own || reach_owners(&im, all, nn, marked, own) < 0)
        goto nomem;
    /* A block owned by a lost Python object (no stack to name) counts as
     * lost directly. */
    for (size_t k = 0; k < nn; k++) {
        if (tix[k] == NOT_TRACKED)
            continue;
        scan_ent_t *e = &j->snap[tix[k]];
        e->reach = marked[k];
        e->owner = marked[k] ? tix[k] : tix[own[k]] != NOT_TRACKED ? tix[own[k]] : tix[k];
    }
    img_free(&img); /* the copy goes back before the results are made */
    j->root_bytes = st.root_bytes;
    j->mark_ns = trc_now_ns() - t_mark;
    j->dur_ns = trc_now_ns() - j->t_start;
    j->cpu_ns = thread_cpu_ns() - cpu0;
    set_stage(j, SCAN_DONE);
    goto out;
nomem:
    fail(j, -ENOMEM, "out of memory copying or marking the process's memory");
out:
    if (frozen)
        trc_release(&tr);
    if (pm >= 0)
        close(pm);
    maps_free(&maps);
    img_free(&img);
    free(mem.r);
    free(dead.r);
    free(agent.r);
    free(vmas.r);
    reach_scratch_free(ext.r);
    free(tmp);
    reach_scratch_free(heap);
    reach_scratch_free(roots);
    reach_scratch_free(blk);
    reach_scratch_free(all);
    reach_scratch_free(tix);
    free(pyb);
    free(pools);
    reach_scratch_free(marked);
    reach_scratch_free(own);
    free(vals);
    free(tids);
    free(sps);
    reach_scratch_free(parent);
    reach_scratch_free(via);
    rootname_free(names);
    pytypes_free(types);
    free(segs.v);
    free(segs.slot);
    if (rof.fd >= 0)
        close(rof.fd);
    reach_scratch_free(ptype);
    reach_scratch_free(pyt);
    reach_scratch_free(pyn);
    return NULL;
}

scan_job_t *scan_job_start(pid_t pid, pid_t skip, int heap_roots, size_t live_hint,
                           void (*notify)(void *arg), void *arg)
{
    scan_job_t *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->live_hint = live_hint;
    j->pid = pid;
    j->skip = skip;
    j->heap_roots = heap_roots;
    j->notify = notify;
    j->notify_arg = arg;
    j->t_start = trc_now_ns();
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    atomic_store(&j->stage, SCAN_RUNNING);
    if (pthread_create(&j->thr, NULL, worker, j) != 0) {
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        free(j);
        return NULL;
    }
    j->started = 1;
    return j;
}

void scan_job_retry(scan_job_t *j)
{
    pthread_mutex_lock(&j->mu);
    j->retry = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void snap_release(scan_job_t *j)
{
    if (j->snap && j->snap_cap)
        munmap(j->snap, j->snap_cap * sizeof *j->snap);
    else
        free(j->snap);
    j->snap = NULL;
    j->snap_cap = 0;
}

scan_ent_t *scan_job_snap_buf(scan_job_t *j, size_t n)
{
    if (j->snap && j->snap_cap >= n)
        return j->snap;
    snap_release(j);
    j->snap = malloc((n ? n : 1) * sizeof *j->snap);
    return j->snap;
}

void scan_job_snapshot(scan_job_t *j, scan_ent_t *snap, size_t n, uint64_t *regions,
                       size_t nregions, size_t ndead)
{
    pthread_mutex_lock(&j->mu);
    j->snap = snap;
    j->nsnap = n;
    j->regions = regions;
    j->nregions = nregions;
    j->ndead = ndead;
    j->have_snap = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void scan_job_abort(scan_job_t *j, const char *why)
{
    pthread_mutex_lock(&j->mu);
    if (!j->abort && !j->have_snap)
        snprintf(j->msg, sizeof j->msg, "%s", why);
    j->abort = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void scan_job_free(scan_job_t *j)
{
    if (!j)
        return;
    if (j->started)
        pthread_join(j->thr, NULL);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    snap_release(j);
    free(j->regions);
    for (size_t i = 0; i < j->nlabels; i++)
        free(j->labels[i]);
    free(j->labels);
    for (size_t i = 0; i < j->npytypes; i++)
        free(j->pytypes[i]);
    free(j->pytypes);
    free(j->pysegs);
    free(j);
}
