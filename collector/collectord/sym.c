/* Symbolization with libdw in a worker thread: function+offset, file:line, module for each pc. */
#include "sym.h"
#include "collector/common/procmaps.h"

#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <elfutils/libdwfl.h>
#include <dwarf.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* libstdc++'s demangler (collectord links -lstdc++). */
extern char *__cxa_demangle(const char *mangled, char *buf, size_t *len, int *status);

/* ---------------------------------------------------------------- interned strings */

typedef struct istr_s {
    struct istr_s *next;
    uint64_t hash;
    char s[];
} istr_t;

static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;
static istr_t **itab;
static size_t itab_mask, itab_used;

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

const char *sym_intern(const char *s)
{
    return sym_intern_n(s, NULL);
}

const char *sym_intern_n(const char *s, uint64_t *added)
{
    if (!s)
        return NULL;
    uint64_t h = str_hash(s);
    const char *out = NULL;
    pthread_mutex_lock(&intern_lock);
    if (!itab) {
        itab = calloc(1024, sizeof *itab);
        if (!itab)
            goto done;
        itab_mask = 1023;
    }
    for (istr_t *e = itab[h & itab_mask]; e; e = e->next)
        if (e->hash == h && strcmp(e->s, s) == 0) {
            out = e->s;
            goto done;
        }
    if (itab_used + 1 > itab_mask) {
        size_t n = (itab_mask + 1) * 2;
        istr_t **nt = calloc(n, sizeof *nt);
        if (nt) {
            for (size_t i = 0; i <= itab_mask; i++)
                for (istr_t *e = itab[i], *nx; e; e = nx) {
                    nx = e->next;
                    e->next = nt[e->hash & (n - 1)];
                    nt[e->hash & (n - 1)] = e;
                }
            free(itab);
            itab = nt;
            itab_mask = n - 1;
        }
    }
    size_t len = strlen(s);
    istr_t *e = malloc(sizeof *e + len + 1);
    if (!e)
        goto done;
    e->hash = h;
    memcpy(e->s, s, len + 1);
    e->next = itab[h & itab_mask];
    itab[h & itab_mask] = e;
    itab_used++;
    out = e->s;
    if (added)
        *added += len + 1;
done:
    pthread_mutex_unlock(&intern_lock);
    return out;
}

/* ---------------------------------------------------------------- module cache (worker only) */

/* Resolved frames by file-relative pc, per module: a pc is resolved once
 * (DWARF scopes and line tables are the slow part) and every stack of every
 * process that has it shows the same frames. */
typedef struct fcache_s {
    uint64_t *keys;        /* rel pc + 1; 0: empty slot */
    uint32_t *first;       /* its frames: pool[first .. first + count) */
    uint16_t *count;
    uint32_t cap, used;    /* slots (a power of two), in use */
    symframe_t *pool;
    uint32_t npool, pool_cap;
} fcache_t;

/* A module's symbol table sorted by address, so that the symbol of a pc
 * is found by a binary search: dwfl_module_addrinfo reads every symbol of
 * the table for each address (elfutils 0.188), and a stripped libLLVM-14
 * has 45,000 dynamic symbols: ~4 ms a pc on a 2-vCPU VM, a minute of a
 * core for the 13,000 distinct pcs of a numba process's stacks. The
 * index gives dwfl_module_addrinfo's answer (same candidates, same
 * preferences, see sidx_find) and leaves the cases where libdw's answer
 * depends on the order of the table, or on a symbol without a size, to
 * libdw. */
typedef struct sent_s {
    uint64_t value;        /* address, as dwfl_module_getsym_info gives it */
    uint64_t size;
    const char *name;      /* the handle's string table */
    uint32_t ndx;          /* in the table: ties go to the first, as in libdw */
    uint8_t bind;          /* preference: global 3, weak 2, local 1, other 0 */
    uint8_t special;       /* in no section (absolute...): a label of its address only */
} sent_t;

typedef struct sgroup_s {
    sent_t *e;             /* by value, then ndx */
    uint64_t *maxend;      /* maxend[i]: highest value + size of e[0..i] */
    uint32_t n;
} sgroup_t;

typedef struct symidx_s {
    int state;             /* 0: not built, 1: built, -1: cannot (libdw scans) */
    sgroup_t glob, loc;    /* libdw's two passes: the globals, then the locals */
    uint64_t *sizeless;    /* values of the symbols without a size, sorted */
    uint32_t nsizeless;
} symidx_t;

static sym_stats_t stats;

/* A module: its identity, its resolved frames, and (while it has a place
 * in the budget of open files) its libdw handle. */
typedef struct dmod_s {
    char *path;            /* NULL: slot unused */
    uint8_t build_id[32];
    uint32_t build_id_len;
    Dwfl *dwfl;            /* open handle, NULL when closed or unusable */
    Dwfl_Module *mod;
    uint64_t last_use;
    const char *why;       /* reason when unusable for good */
    int retry;             /* closed, or failed for a reason that may pass: open again */
    fcache_t fc;           /* kept when the handle is closed */
    symidx_t si;           /* with the handle: its names are the handle's */
} dmod_t;

#define CACHE_MAX 1024     /* modules remembered (their frames) */
static dmod_t cache[CACHE_MAX];
static size_t ncache;
static uint64_t use_clock;
/* Open libdw handles at most: each holds the module's file and maybe its
 * separate debug file open; the rest of the fds are collectord's clients'. */
static size_t open_max = 64, nopen;
/* A module file opened at or above this fd means few are left for
 * connections: it is closed again (and an open module with it). */
static int fd_ceiling = 1 << 30;
static char debuginfo_buf[4096] = ":.debug:/usr/lib/debug";
static char *debuginfo_path = debuginfo_buf;

int sym_add_debug_dir(const char *dir)
{
    size_t have = strlen(debuginfo_buf), add = strlen(dir);
    if (have + add + 2 > sizeof debuginfo_buf || strchr(dir, ':'))
        return -EINVAL;
    /* Before /usr/lib/debug: ":.debug:DIR:/usr/lib/debug". */
    char tail[] = ":/usr/lib/debug";
    char *p = strstr(debuginfo_buf, tail);
    size_t keep = p ? (size_t)(p - debuginfo_buf) : have;
    char rest[4096];
    snprintf(rest, sizeof rest, "%s", debuginfo_buf + keep);
    snprintf(debuginfo_buf + keep, sizeof debuginfo_buf - keep, ":%s%s", dir, rest);
    return 0;
}

static const Dwfl_Callbacks dwfl_cbs = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .section_address = dwfl_offline_section_address,
    .debuginfo_path = &debuginfo_path,
};

/* Opens the module's file as the process maps it (/proc/PID/map_files keeps a
 * replaced or deleted library reachable while the process lives), else by path. */
static int open_module(const sym_mod_t *m, uint32_t pid)
{
    if (pid) {
        char maps[64];
        snprintf(maps, sizeof maps, "/proc/%u/maps", pid);
        FILE *f = fopen(maps, "re");
        if (f) {
            char line[4096 + 128];
            while (fgets(line, sizeof line, f)) {
                unsigned long lo, hi;
                if (sscanf(line, "%lx-%lx", &lo, &hi) != 2)
                    continue;
                char *p = strchr(line, '/');
                if (!p)
                    continue;
                p[strcspn(p, "\n")] = '\0';
                if (strcmp(p, m->path) != 0 || m->lo < lo || m->lo >= hi)
                    continue;
                char mf[96];
                snprintf(mf, sizeof mf, "/proc/%u/map_files/%lx-%lx", pid, lo, hi);
                int fd = open(mf, O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                    fclose(f);
                    return fd;
                }
                break;
            }
            fclose(f);
        }
    }
    /* A regular file only (a FIFO at the path would hold the symbolizer);
     * symlinks followed: the agent names modules by links too. */
    return maps_open_file(m->path, 0, 0);
}

static int build_id_matches(int fd, const sym_mod_t *m)
{
    if (m->build_id_len == 0)
        return 1;
    Elf *elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
    if (!elf)
        return 0;
    const void *bid = NULL;
    ssize_t n = dwelf_elf_gnu_build_id(elf, &bid);
    int ok = n == (ssize_t)m->build_id_len && memcmp(bid, m->build_id, (size_t)n) == 0;
    elf_end(elf);
    return ok;
}

static void fcache_free(fcache_t *fc)
{
    free(fc->keys);
    free(fc->first);
    free(fc->count);
    free(fc->pool);
    memset(fc, 0, sizeof *fc);
}

static uint32_t fc_slot(const fcache_t *fc, uint64_t key)
{
    uint64_t h = key * 0x9e3779b97f4a7c15ULL;
    uint32_t i = (uint32_t)(h >> 32) & (fc->cap - 1);
    while (fc->keys[i] && fc->keys[i] != key)
        i = (i + 1) & (fc->cap - 1);
    return i;
}

/* The cached frames of rel, or NULL (*n = 0). */
static const symframe_t *fcache_get(const fcache_t *fc, uint64_t rel, uint32_t *n)
{
    *n = 0;
    if (!fc->cap)
        return NULL;
    uint32_t i = fc_slot(fc, rel + 1);
    if (!fc->keys[i])
        return NULL;
    *n = fc->count[i];
    return &fc->pool[fc->first[i]];
}

/* Remembers frames f[0..n) for rel. Out of memory: not cached (resolved
 * again next time, to the same result). */
static void fcache_put(fcache_t *fc, uint64_t rel, const symframe_t *f, uint32_t n)
{
    if (!n || n > UINT16_MAX)
        return;
    if ((fc->used + 1) * 4 > fc->cap * 3) {
        uint32_t ncap = fc->cap ? fc->cap * 2 : 256;
        fcache_t nf = *fc;
        nf.keys = calloc(ncap, sizeof *nf.keys);
        nf.first = malloc(ncap * sizeof *nf.first);
        nf.count = malloc(ncap * sizeof *nf.count);
        if (!nf.keys || !nf.first || !nf.count) {
            free(nf.keys);
            free(nf.first);
            free(nf.count);
            return;
        }
        nf.cap = ncap;
        for (uint32_t i = 0; i < fc->cap; i++) {
            if (!fc->keys[i])
                continue;
            uint32_t j = fc_slot(&nf, fc->keys[i]);
            nf.keys[j] = fc->keys[i];
            nf.first[j] = fc->first[i];
            nf.count[j] = fc->count[i];
        }
        free(fc->keys);
        free(fc->first);
        free(fc->count);
        fc->keys = nf.keys;
        fc->first = nf.first;
        fc->count = nf.count;
        fc->cap = ncap;
    }
    if (fc->npool + n > fc->pool_cap) {
        uint32_t ncap = fc->pool_cap ? fc->pool_cap : 256;
        while (ncap < fc->npool + n)
            ncap *= 2;
        symframe_t *np = realloc(fc->pool, ncap * sizeof *np);
        if (!np)
            return;
        fc->pool = np;
        fc->pool_cap = ncap;
    }
    uint32_t i = fc_slot(fc, rel + 1);
    if (fc->keys[i])
        return; /* already there */
    memcpy(&fc->pool[fc->npool], f, n * sizeof *f);
    fc->keys[i] = rel + 1;
    fc->first[i] = fc->npool;
    fc->count[i] = (uint16_t)n;
    fc->npool += n;
    fc->used++;
}

/* ---------------------------------------------------------------- symbol index */

static void sidx_free(symidx_t *si)
{
    free(si->glob.e);
    free(si->glob.maxend);
    free(si->loc.e);
    free(si->loc.maxend);
    memset(si, 0, sizeof *si);
}

static int sent_cmp(const void *a, const void *b)
{
    const sent_t *x = a, *y = b;
    if (x->value != y->value)
        return x->value < y->value ? -1 : 1;
    return x->ndx < y->ndx ? -1 : x->ndx > y->ndx;
}

/* libdw's preference among symbols of one address (its binding_value). */
static uint8_t bind_pref(unsigned char info)
{
    switch (GELF_ST_BIND(info)) {
    case STB_GLOBAL:
        return 3;
    case STB_WEAK:
        return 2;
    case STB_LOCAL:
        return 1;
    default:
        return 0;
    }
}

/* The candidates of table entries [from, to): those libdw's search looks
 * at (named, defined, not a section, file or TLS symbol). 0 or -1 (ENOMEM). */
static int sgroup_fill(sgroup_t *g, Dwfl_Module *mod, int from, int to)
{
    if (to <= from)
        return 0;
    g->e = malloc((size_t)(to - from) * sizeof *g->e);
    if (!g->e)
        return -1;
    for (int i = from; i < to; i++) {
        GElf_Sym sym;
        GElf_Addr value = 0;
        GElf_Word shndx;
        const char *name = dwfl_module_getsym_info(mod, i, &sym, &value, &shndx, NULL, NULL);
        stats.index_syms++;
        if (!name || !name[0] || sym.st_shndx == SHN_UNDEF)
            continue;
        int t = GELF_ST_TYPE(sym.st_info);
        if (t == STT_SECTION || t == STT_FILE || t == STT_TLS)
            continue;
        sent_t *e = &g->e[g->n++];
        e->value = value;
        e->size = sym.st_size;
        e->name = name;
        e->ndx = (uint32_t)i;
        e->bind = bind_pref(sym.st_info);
        e->special = shndx >= SHN_LORESERVE && shndx != SHN_XINDEX;
    }
    qsort(g->e, g->n, sizeof *g->e, sent_cmp);
    g->maxend = malloc((g->n ? g->n : 1) * sizeof *g->maxend);
    if (!g->maxend)
        return -1;
    uint64_t m = 0;
    for (uint32_t i = 0; i < g->n; i++) {
        uint64_t end = g->e[i].value + g->e[i].size;
        if (end < g->e[i].value)
            end = UINT64_MAX; /* a hostile size: still a holder to walk back to */
        if (end > m)
            m = end;
        g->maxend[i] = m;
    }
    return 0;
}

/* Reads the module's symbol table once into the index, in libdw's two
 * passes: the global symbols ([first_global, n)), then the local ones. */
static void sidx_build(symidx_t *si, Dwfl_Module *mod)
{
    int n = dwfl_module_getsymtab(mod);
    int fg = dwfl_module_getsymtab_first_global(mod);
    if (n < 0 || fg < 0) {
        si->state = -1;
        return;
    }
    if (sgroup_fill(&si->glob, mod, fg == 0 ? 1 : fg, n) < 0 ||
        (fg > 1 && sgroup_fill(&si->loc, mod, 1, fg) < 0)) {
        sidx_free(si);
        si->state = -1; /* out of memory: libdw answers */
        return;
    }
    si->state = 1;
    stats.index_builds++;
}

/* The last entry whose value is at most addr, or -1. */
static long sgroup_last(const sgroup_t *g, uint64_t addr)
{
    uint32_t lo = 0, hi = g->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (g->e[mid].value <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (long)lo - 1;
}

/* libdw's choice among the symbols with a size that hold addr, entries
 * [0, p] of g: the closest (highest value); at one value the preferred
 * binding, then the smallest, then the first in the table. A holder
 * further away with a binding preferred to that one's makes libdw's
 * answer depend on the table's order: -1 (libdw answers), as when the
 * holders are too many to walk. Returns 0 with *best (NULL: none). */
static int sgroup_holder(const sgroup_t *g, long p, uint64_t addr, const sent_t **best)
{
    const sent_t *b = NULL;
    int below = -1;
    int steps = 0;
    for (long i = p; i >= 0 && g->maxend[i] > addr; i--) {
        if (++steps > 512)
            return -1;
        const sent_t *e = &g->e[i];
        if (!e->size || addr - e->value >= e->size)
            continue;
        if (!b || e->value == b->value) {
            if (!b || e->bind > b->bind ||
                (e->bind == b->bind && (e->size < b->size || (e->size == b->size && e->ndx < b->ndx))))
                b = e;
        } else if (e->bind > below) {
            below = e->bind;
        }
    }
    if (b && below > b->bind)
        return -1;
    *best = b;
    return 0;
}

/* Whether a symbol without a size at the highest value at most addr in g
 * (entries [0, p]) is at or past floor: libdw's fallback to such a symbol
 * (an assembly label, in addr's section) is left to libdw. One in no
 * section (a version name, absolute) is a label of its own address only. */
static int sgroup_sizeless_at(const sgroup_t *g, long p, uint64_t addr, uint64_t floor)
{
    if (p < 0 || g->e[p].value < floor)
        return 0;
    for (long i = p; i >= 0 && g->e[i].value == g->e[p].value; i--)
        if (!g->e[i].size && (!g->e[i].special || g->e[i].value == addr))
            return 1;
    return 0;
}

/* dwfl_module_addrinfo's symbol for addr, from the index: returns 1 with
 * *name (NULL: none) and *off, or 0 when libdw must answer. */
static int sidx_find(const symidx_t *si, uint64_t addr, const char **name, uint64_t *off)
{
    const sent_t *b = NULL;
    long pg = sgroup_last(&si->glob, addr);
    if (sgroup_holder(&si->glob, pg, addr, &b) < 0)
        return 0;
    if (!b) {
        /* libdw's min_label: no label below the end of a symbol before it. */
        uint64_t floor = pg >= 0 ? si->glob.maxend[pg] : 0;
        if (sgroup_sizeless_at(&si->glob, pg, addr, floor))
            return 0;
        long pl = sgroup_last(&si->loc, addr);
        if (sgroup_holder(&si->loc, pl, addr, &b) < 0)
            return 0;
        if (!b && pl >= 0 && sgroup_sizeless_at(&si->loc, pl, addr,
                                                floor > si->loc.maxend[pl] ? floor : si->loc.maxend[pl]))
            return 0;
    }
    *name = b ? b->name : NULL;
    *off = b ? addr - b->value : 0;
    return 1;
}

/* The module's symbol for a file address and the offset into it, as
 * dwfl_module_addrinfo gives them. */
static const char *module_addrname(symidx_t *si, Dwfl_Module *mod, uint64_t q, GElf_Off *off)
{
    if (si->state == 0)
        sidx_build(si, mod);
    const char *name = NULL;
    uint64_t o = 0;
    if (si->state == 1 && sidx_find(si, q, &name, &o)) {
        stats.indexed++;
        *off = o;
        return name;
    }
    stats.symscans++;
    GElf_Sym sym;
    return dwfl_module_addrinfo(mod, q, off, &sym, NULL, NULL, NULL);
}

void sym_get_stats(sym_stats_t *out)
{
    *out = stats;
    out->open_now = nopen;
}


static void dmod_close(dmod_t *d)
{
    if (d->dwfl) {
        dwfl_end(d->dwfl);
        nopen--;
    }
    sidx_free(&d->si);
    d->dwfl = NULL;
    d->mod = NULL;
}

/* Modules dropped from the cache (a job's memo of its modules is stale then). */
static uint64_t drops;

static void dmod_drop(dmod_t *d)
{
    drops++;
    dmod_close(d);
    free(d->path);
    fcache_free(&d->fc);
    memset(d, 0, sizeof *d);
}

/* The module's entry (identity and frames), made on first use; NULL on ENOMEM. */
static dmod_t *dmod_get(const sym_mod_t *m)
{
    for (size_t i = 0; i < ncache; i++) {
        dmod_t *d = &cache[i];
        if (d->path && d->build_id_len == m->build_id_len && strcmp(d->path, m->path) == 0 &&
            memcmp(d->build_id, m->build_id, m->build_id_len) == 0) {
            d->last_use = ++use_clock;
            return d;
        }
    }
    dmod_t *d = NULL;
    for (size_t i = 0; i < ncache && !d; i++)
        if (!cache[i].path)
            d = &cache[i];
    if (!d && ncache < CACHE_MAX)
        d = &cache[ncache++];
    if (!d) {
        d = &cache[0];
        for (size_t i = 1; i < ncache; i++)
            if (cache[i].last_use < d->last_use)
                d = &cache[i];
        dmod_drop(d);
    }
    d->path = strdup(m->path);
    if (!d->path)
        return NULL;
    memcpy(d->build_id, m->build_id, m->build_id_len);
    d->build_id_len = m->build_id_len;
    d->last_use = ++use_clock;
    d->retry = 1; /* not opened yet */
    return d;
}

/* Opens the module's handle if it has none and none failed for good,
 * closing the least recently used open one past the budget. Returns 1 when
 * d->mod is usable. */
static int dmod_open(dmod_t *d, const sym_mod_t *m, uint32_t pid)
{
    if (d->mod)
        return 1;
    if (!d->retry)
        return 0;
    if (m->path[0] != '/') {
        d->retry = 0;
        d->why = "no file";
        return 0;
    }
    while (nopen >= open_max) {
        dmod_t *lru = NULL;
        for (size_t i = 0; i < ncache; i++)
            if (cache[i].dwfl && &cache[i] != d && (!lru || cache[i].last_use < lru->last_use))
                lru = &cache[i];
        if (!lru)
            break;
        dmod_close(lru);
        lru->retry = 1; /* its frames stay; reopened when a new pc needs it */
    }
    int fd = open_module(m, pid);
    while (fd >= fd_ceiling) {
        /* fds are allocated lowest first: this one says few are left for
         * connections. Close an open module and try again; with none left
         * to close, try this one again later. */
        close(fd);
        dmod_t *lru = NULL;
        for (size_t i = 0; i < ncache; i++)
            if (cache[i].dwfl && &cache[i] != d && (!lru || cache[i].last_use < lru->last_use))
                lru = &cache[i];
        if (!lru) {
            d->retry = 1;
            return 0;
        }
        dmod_close(lru);
        lru->retry = 1;
        fd = open_module(m, pid);
    }
    if (fd < 0) {
        /* Gone for good (deleted, replaced, process ended) or, when out of
         * file descriptors or memory, for now: then it is tried again. */
        d->retry = errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == EINTR;
        d->why = "cannot open";
        return 0;
    }
    d->retry = 0;
    if (!build_id_matches(fd, m)) {
        close(fd);
        d->why = "build-id mismatch";
        return 0;
    }
    Dwfl *dwfl = dwfl_begin(&dwfl_cbs);
    if (!dwfl) {
        close(fd);
        d->retry = 1;
        d->why = "libdw";
        return 0;
    }
    dwfl_report_begin(dwfl);
    /* Base 0, relative to p_vaddr: module addresses are the file's own, so
     * one Dwfl serves every process; callers subtract the load bias. */
    Dwfl_Module *mod = dwfl_report_elf(dwfl, m->path, m->path, fd, 0, true);
    dwfl_report_end(dwfl, NULL, NULL);
    if (!mod) {
        close(fd);
        dwfl_end(dwfl);
        d->why = "not an ELF file";
        return 0;
    }
    d->dwfl = dwfl;
    d->mod = mod;
    nopen++;
    return 1;
}

size_t sym_sweep_now(const sym_mod_t *keep, uint32_t nkeep)
{
    size_t closed = 0;
    for (size_t i = 0; i < ncache; i++) {
        dmod_t *d = &cache[i];
        if (!d->dwfl)
            continue;
        int kept = 0;
        for (uint32_t k = 0; k < nkeep && !kept; k++)
            kept = keep[k].path && keep[k].build_id_len == d->build_id_len &&
                   memcmp(keep[k].build_id, d->build_id, d->build_id_len) == 0 &&
                   strcmp(keep[k].path, d->path) == 0;
        if (kept)
            continue;
        dmod_close(d);
        d->retry = 1; /* its frames stay; reopened when a new pc needs it */
        closed++;
    }
    stats.swept += closed;
    /* libdw's and libelf's data of a big module (libLLVM: tens of MB)
     * were freed into this thread's arena: back to the system. */
    if (closed)
        malloc_trim(0);
    return closed;
}

/* ---------------------------------------------------------------- resolution */

static void frame_module(symframe_t *f, const sym_mod_t *m)
{
    f->module = sym_intern(m->path);
    f->build_id_len = (uint8_t)m->build_id_len;
    memcpy(f->build_id, m->build_id, m->build_id_len);
}

symres_t *sym_fallback(const sym_job_t *j)
{
    symres_t *r = calloc(1, sizeof *r + j->npcs * sizeof(symframe_t));
    if (!r)
        return NULL;
    r->n = j->npcs;
    for (uint32_t i = 0; i < j->npcs; i++) {
        symframe_t *f = &r->f[i];
        f->addr = j->pcs[i];
        if (j->pc_mod[i] >= 0)
            frame_module(f, &j->mods[j->pc_mod[i]]);
    }
    return r;
}

/* Growable frame list of one job. */
typedef struct fvec_s {
    symframe_t *f;
    uint32_t n, cap;
} fvec_t;

static symframe_t *fvec_push(fvec_t *v)
{
    if (v->n == v->cap) {
        uint32_t ncap = v->cap ? v->cap * 2 : 32;
        symframe_t *nf = realloc(v->f, ncap * sizeof *nf);
        if (!nf)
            return NULL;
        v->f = nf;
        v->cap = ncap;
    }
    symframe_t *f = &v->f[v->n++];
    memset(f, 0, sizeof *f);
    return f;
}

/* A function name for display: demangled C++, without symbol versions
 * ("__libc_start_main@@GLIBC_2.34"). Interned. */
static const char *display_name(const char *name)
{
    if (!name)
        return NULL;
    char plain[1024];
    const char *at = strchr(name, '@');
    if (at && (size_t)(at - name) < sizeof plain) {
        memcpy(plain, name, (size_t)(at - name));
        plain[at - name] = '\0';
        name = plain;
    }
    if (name[0] == '_' && name[1] == 'Z') {
        int status = 0;
        char *d = __cxa_demangle(name, NULL, NULL, &status);
        if (d && status == 0) {
            const char *r = sym_intern(d);
            free(d);
            return r;
        }
        free(d);
    }
    return sym_intern(name);
}

/* The name of a DWARF function DIE: its linkage name demangled if it has
 * one (C++), else its name; both looked up through abstract origins. */
static const char *die_function(Dwarf_Die *die)
{
    Dwarf_Attribute a;
    const char *ln = NULL;
    if (dwarf_attr_integrate(die, DW_AT_linkage_name, &a) ||
        dwarf_attr_integrate(die, DW_AT_MIPS_linkage_name, &a))
        ln = dwarf_formstring(&a);
    if (ln)
        return display_name(ln);
    return sym_intern(dwarf_diename(die));
}

/* Appends the frames of one pc: the inlined calls innermost first (each at
 * the file:line where it is, i.e. inside the function inlining it), then the
 * physical function at the line of the outermost inlined call site. */
static void resolve_pc_dwarf(fvec_t *v, uint64_t pc, const sym_mod_t *m, dmod_t *d);

static void resolve_pc(fvec_t *v, uint64_t pc, const sym_mod_t *m, dmod_t *d, uint32_t pid, int *degraded)
{
    stats.pcs++;
    if (d) {
        uint32_t n;
        const symframe_t *cf = fcache_get(&d->fc, pc - m->bias, &n);
        if (cf) {
            stats.cached++;
            for (uint32_t i = 0; i < n; i++) {
                symframe_t *f = fvec_push(v);
                if (!f)
                    return;
                *f = cf[i];
                f->addr = pc;
            }
            return;
        }
        if (dmod_open(d, m, pid)) {
            uint32_t first = v->n;
            stats.looked_up++;
            resolve_pc_dwarf(v, pc, m, d);
            if (v->n > first)
                fcache_put(&d->fc, pc - m->bias, &v->f[first], v->n - first);
            return;
        }
    }
    if (!d || d->retry)
        *degraded = 1; /* may resolve later: the stack is done again when asked */
    symframe_t *f = fvec_push(v);
    if (!f)
        return;
    f->addr = pc;
    frame_module(f, m);
}

/* The innermost DIE under parent whose ranges hold pc (a subprogram, an
 * inlined subroutine, a lexical block), looking through DIEs that hold
 * such DIEs without ranges of their own (namespaces, classes). Returns 1
 * with *out set, 0 when none holds pc. Not dwarf_getscopes: libdw 0.188
 * leaks its array when pc is in an inlined subroutine whose abstract
 * origin it cannot find (seen with Debian's LTO-built CPython: ~60 bytes
 * per frame symbolized, found by ASan). depth bounds a hostile file. */
static int innermost_scope(Dwarf_Die *parent, Dwarf_Addr pc, Dwarf_Die *out, int depth)
{
    Dwarf_Die child;
    if (depth > 64 || dwarf_child(parent, &child) != 0)
        return 0;
    do {
        switch (dwarf_tag(&child)) {
        case DW_TAG_subprogram:
        case DW_TAG_inlined_subroutine:
        case DW_TAG_lexical_block:
        case DW_TAG_entry_point:
        case DW_TAG_catch_block:
        case DW_TAG_try_block:
        case DW_TAG_with_stmt:
            if (dwarf_haspc(&child, pc) == 1) {
                if (!innermost_scope(&child, pc, out, depth + 1))
                    *out = child;
                return 1;
            }
            break;
        case DW_TAG_namespace:
        case DW_TAG_module:
        case DW_TAG_class_type:
        case DW_TAG_structure_type:
        case DW_TAG_union_type:
            if (innermost_scope(&child, pc, out, depth + 1))
                return 1;
            break;
        default:
            break;
        }
    } while (dwarf_siblingof(&child, &child) == 0);
    return 0;
}

static void resolve_pc_dwarf(fvec_t *v, uint64_t pc, const sym_mod_t *m, dmod_t *d)
{
    symframe_t *f = fvec_push(v);
    if (!f)
        return;
    f->addr = pc;
    frame_module(f, m);
    /* A return address: the call is the instruction before it. */
    Dwarf_Addr rel = pc - m->bias;
    Dwarf_Addr q = rel ? rel - 1 : rel;
    GElf_Off off = 0;
    const char *name = module_addrname(&d->si, d->mod, q, &off);
    const char *file = NULL;
    uint32_t line = 0;
    Dwfl_Line *dl = dwfl_module_getsrc(d->mod, q);
    if (dl) {
        int lineno = 0;
        const char *src = dwfl_lineinfo(dl, NULL, &lineno, NULL, NULL, NULL);
        if (src && lineno > 0) {
            file = sym_intern(src);
            line = (uint32_t)lineno;
        }
    }
    Dwarf_Addr bias = 0;
    Dwarf_Die *cu = dwfl_module_addrdie(d->mod, q, &bias);
    Dwarf_Die *scopes = NULL;
    Dwarf_Die inner;
    int ns = cu && innermost_scope(cu, q - bias, &inner, 0) ? 1 : 0;
    if (ns > 0) {
        /* The concrete nesting of the innermost scope (as addr2line -i walks
         * it) has every inline level: each inlined subroutine inside the one
         * inlining it (dwarf_getscopes would follow an inlined subroutine to
         * its abstract origin and name one level only). */
        ns = dwarf_getscopes_die(&inner, &scopes);
        if (ns <= 0) {
            free(scopes);
            scopes = NULL;
            ns = 0;
        }
    }
    Dwarf_Files *files = NULL;
    size_t nfiles = 0;
    if (ns > 0 && dwarf_getsrcfiles(cu, &files, &nfiles) != 0)
        files = NULL;
    for (int i = 0; i < ns; i++) {
        if (dwarf_tag(&scopes[i]) != DW_TAG_inlined_subroutine)
            continue;
        /* The slot pushed last becomes this inline frame; a new one follows. */
        f->function = die_function(&scopes[i]);
        f->file = file;
        f->line = line;
        f->is_inline = 1;
        Dwarf_Attribute a;
        Dwarf_Word w;
        file = NULL;
        line = 0;
        if (files && dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_file, &a), &w) == 0)
            file = sym_intern(dwarf_filesrc(files, w, NULL, NULL));
        if (dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_line, &a), &w) == 0)
            line = (uint32_t)w;
        uint64_t keep_addr = f->addr;
        symframe_t *nf = fvec_push(v);
        if (!nf)
            break;
        f = nf;
        f->addr = keep_addr;
        frame_module(f, m);
    }
    free(scopes);
    if (name) {
        f->function = display_name(name);
        f->offset = off + (rel ? 1 : 0);
    }
    f->file = file;
    f->line = line;
}

long sym_index_check(const char *path, const uint64_t *addrs, size_t n, size_t *indexed)
{
    *indexed = 0;
    elf_version(EV_CURRENT);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    Dwfl *dwfl = dwfl_begin(&dwfl_cbs);
    if (!dwfl) {
        close(fd);
        return -1;
    }
    dwfl_report_begin(dwfl);
    Dwfl_Module *mod = dwfl_report_elf(dwfl, path, path, fd, 0, true);
    dwfl_report_end(dwfl, NULL, NULL);
    if (!mod) {
        close(fd);
        dwfl_end(dwfl);
        return -1;
    }
    symidx_t si = { 0 };
    sidx_build(&si, mod);
    long differ = 0;
    for (size_t i = 0; i < n && si.state == 1; i++) {
        const char *name = NULL;
        uint64_t off = 0;
        if (!sidx_find(&si, addrs[i], &name, &off))
            continue;
        ++*indexed;
        GElf_Off loff = 0;
        GElf_Sym sym;
        const char *lname = dwfl_module_addrinfo(mod, addrs[i], &loff, &sym, NULL, NULL, NULL);
        if (name != lname || (name && off != loff))
            differ++;
    }
    if (si.state != 1)
        differ = -1;
    sidx_free(&si);
    dwfl_end(dwfl);
    return differ;
}

void sym_resolve_now(sym_job_t *j)
{
    fvec_t v = { 0 };
    int degraded = 0;
    /* What each pc gave, so that its frames can be kept with it (a frame
     * table shared by the client's stacks). */
    free(j->pc_nf);
    free(j->pc_deg);
    j->pc_nf = malloc((j->npcs ? j->npcs : 1) * sizeof *j->pc_nf);
    j->pc_deg = malloc(j->npcs ? j->npcs : 1);
    dmod_t **dm = calloc(j->nmods ? j->nmods : 1, sizeof *dm);
    uint64_t dm_drops = drops;
    for (uint32_t i = 0; i < j->npcs; i++) {
        uint32_t first = v.n;
        int deg = 0;
        if (j->pc_mod[i] >= 0 && (uint32_t)j->pc_mod[i] < j->nmods) {
            /* The job's modules are looked up once each (not a search of
             * the cache by path for each pc), again after an eviction. */
            uint32_t k = (uint32_t)j->pc_mod[i];
            dmod_t *d = dm ? dm[k] : NULL;
            if (!d) {
                d = dmod_get(&j->mods[k]);
                if (dm && drops != dm_drops) {
                    memset(dm, 0, j->nmods * sizeof *dm);
                    dm_drops = drops;
                }
                if (dm)
                    dm[k] = d;
            }
            resolve_pc(&v, j->pcs[i], &j->mods[k], d, j->pid, &deg);
        } else {
            symframe_t *f = fvec_push(&v);
            if (f)
                f->addr = j->pcs[i];
        }
        degraded |= deg;
        if (j->pc_nf && j->pc_deg) {
            j->pc_nf[i] = v.n - first > UINT16_MAX ? UINT16_MAX : (uint16_t)(v.n - first);
            j->pc_deg[i] = (uint8_t)deg;
            if (v.n - first > UINT16_MAX) {
                free(j->pc_nf);
                j->pc_nf = NULL; /* not kept per pc: the stack keeps its own */
            }
        }
    }
    symres_t *r = calloc(1, sizeof *r + v.n * sizeof(symframe_t));
    if (r) {
        r->n = v.n;
        r->degraded = (uint8_t)degraded;
        memcpy(r->f, v.f, v.n * sizeof(symframe_t));
    }
    free(v.f);
    free(dm);
    j->result = r;
}

/* ---------------------------------------------------------------- worker */

static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
/* Two queues: urgent (a report or a rule waits for it) before the rest
 * (eager symbolization of stacks that began to expire). */
static sym_job_t *u_head, *u_tail, *q_head, *q_tail, *done_head, *done_tail;
static size_t backlog;
static int stopping, started;
static pthread_t worker;
static void (*wake_fn)(void *);
static void *wake_arg;

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&q_lock);
    for (;;) {
        while (!u_head && !q_head && !stopping)
            pthread_cond_wait(&q_cond, &q_lock);
        if (stopping)
            break;
        sym_job_t *j;
        if (u_head) {
            j = u_head;
            u_head = j->next;
            if (!u_head)
                u_tail = NULL;
        } else {
            j = q_head;
            q_head = j->next;
            if (!q_head)
                q_tail = NULL;
        }
        pthread_mutex_unlock(&q_lock);
        j->next = NULL;
        if (j->sweep)
            sym_sweep_now(j->mods, j->nmods);
        else
            sym_resolve_now(j);
        pthread_mutex_lock(&q_lock);
        if (done_tail)
            done_tail->next = j;
        else
            done_head = j;
        done_tail = j;
        if (wake_fn)
            wake_fn(wake_arg);
    }
    pthread_mutex_unlock(&q_lock);
    return NULL;
}

int sym_start(void (*wake)(void *arg), void *arg)
{
    wake_fn = wake;
    wake_arg = arg;
    elf_version(EV_CURRENT);
    /* Open modules: up to a third of the fds left after a reserve for
     * connections, within [4, 256]; more modules are closed and reopened. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        rlim_t room = rl.rlim_cur > 160 ? (rl.rlim_cur - 128) / 3 : 4;
        open_max = room < 4 ? 4 : room > 256 ? 256 : (size_t)room;
        rlim_t reserve = rl.rlim_cur / 4 > 16 ? rl.rlim_cur / 4 : 16;
        if (reserve > 256)
            reserve = 256;
        fd_ceiling = rl.rlim_cur > reserve ? (int)(rl.rlim_cur - reserve) : 0;
    } else {
        open_max = 256;
    }
    int rc = pthread_create(&worker, NULL, worker_main, NULL);
    if (rc != 0)
        return -rc;
    started = 1;
    return 0;
}

void sym_stop(void)
{
    if (started) {
        pthread_mutex_lock(&q_lock);
        stopping = 1;
        pthread_cond_broadcast(&q_cond);
        pthread_mutex_unlock(&q_lock);
        pthread_join(worker, NULL);
        started = 0;
    }
    stopping = 0;
    for (sym_job_t *j = q_head, *n; j; j = n) {
        n = j->next;
        sym_job_free(j);
    }
    for (sym_job_t *j = u_head, *n; j; j = n) {
        n = j->next;
        sym_job_free(j);
    }
    for (sym_job_t *j = done_head, *n; j; j = n) {
        n = j->next;
        sym_job_free(j);
    }
    q_head = q_tail = u_head = u_tail = done_head = done_tail = NULL;
    backlog = 0;
    for (size_t i = 0; i < ncache; i++)
        dmod_drop(&cache[i]);
    ncache = 0;
}

static void push_tail(sym_job_t **head, sym_job_t **tail, sym_job_t *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

int sym_submit(sym_job_t *j, int urgent)
{
    j->next = NULL;
    if (!started)
        return -ESRCH;
    pthread_mutex_lock(&q_lock);
    if (urgent)
        push_tail(&u_head, &u_tail, j);
    else
        push_tail(&q_head, &q_tail, j);
    backlog++;
    pthread_cond_signal(&q_cond);
    pthread_mutex_unlock(&q_lock);
    return 0;
}

int sym_promote(uint64_t client_serial, uint32_t stack_index)
{
    int moved = 0;
    pthread_mutex_lock(&q_lock);
    sym_job_t *prev = NULL;
    for (sym_job_t *j = q_head; j; prev = j, j = j->next) {
        if (j->client_serial != client_serial || j->stack_index != stack_index)
            continue;
        if (prev)
            prev->next = j->next;
        else
            q_head = j->next;
        if (q_tail == j)
            q_tail = prev;
        push_tail(&u_head, &u_tail, j);
        moved = 1;
        break;
    }
    pthread_mutex_unlock(&q_lock);
    return moved;
}

sym_job_t *sym_take_done(void)
{
    pthread_mutex_lock(&q_lock);
    sym_job_t *j = done_head;
    if (j) {
        done_head = j->next;
        if (!done_head)
            done_tail = NULL;
        backlog--;
        j->next = NULL;
    }
    pthread_mutex_unlock(&q_lock);
    return j;
}

size_t sym_backlog(void)
{
    pthread_mutex_lock(&q_lock);
    size_t n = backlog;
    pthread_mutex_unlock(&q_lock);
    return n;
}

void sym_job_free(sym_job_t *j)
{
    if (!j)
        return;
    for (uint32_t i = 0; i < j->nmods; i++)
        free(j->mods[i].path);
    free(j->mods);
    free(j->pcs);
    free(j->pc_mod);
    free(j->pc_nf);
    free(j->pc_deg);
    sym_release(j->result);
    free(j);
}

void sym_release(symres_t *r)
{
    free(r);
}
