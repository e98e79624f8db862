/* What a root of a reachability scan is, in words: a register, a thread's stack, a module's global, other memory. */
#include "rootname.h"

#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <inttypes.h>
#include <libelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reach.h"
#include "collector/common/procmaps.h"

#define MODS_MAX 32         /* modules whose symbols are kept */
#define LABELS_MAX 65536    /* distinct labels; beyond, "other roots" */
#define LOADS_MAX 16

typedef struct msym_s {
    uint64_t lo, size;
    char *name;
} msym_t;

typedef struct mod_s {
    char *path;
    int ok;                          /* read (symbols may still be none) */
    uint64_t load_off[LOADS_MAX];    /* PT_LOAD p_offset, p_vaddr, p_filesz */
    uint64_t load_vaddr[LOADS_MAX];
    uint64_t load_filesz[LOADS_MAX];
    size_t nloads;
    msym_t *sym;                     /* sorted by lo */
    size_t nsym;
} mod_t;

struct rootname_s {
    const maps_t *maps;
    pid_t pid;
    const pid_t *tids;
    const uint64_t *sps;
    size_t nthreads, wpr;
    mod_t mods[MODS_MAX];
    size_t nmods;
    char **labels;
    size_t nlabels, cap;
};

static const char *const reg_names[] = {
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
    "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds",
    "es", "fs", "gs",
};

rootname_t *rootname_new(const maps_t *maps, pid_t pid, const pid_t *tids, const uint64_t *sps,
                         size_t nthreads, size_t wpr)
{
    rootname_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->maps = maps;
    r->pid = pid;
    r->tids = tids;
    r->sps = sps;
    r->nthreads = nthreads;
    r->wpr = wpr ? wpr : 1;
    return r;
}

static int sym_cmp(const void *a, const void *b)
{
    const msym_t *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Reads a module's loads and data symbols (.symtab, else .dynsym): a
 * regular file at its path (the process's path, read in collectord's mount
 * namespace: a FIFO there would hold the scan's worker for good). */
static void mod_read(mod_t *m)
{
    m->ok = 1;
    int fd = maps_open_file(m->path, 1, 0);
    if (fd < 0)
        return;
    elf_version(EV_CURRENT);
    Elf *e = elf_begin(fd, ELF_C_READ, NULL);
    GElf_Ehdr eh;
    if (!e || elf_kind(e) != ELF_K_ELF || !gelf_getehdr(e, &eh))
        goto out;
    size_t nph = 0;
    if (elf_getphdrnum(e, &nph) == 0)
        for (size_t i = 0; i < nph && m->nloads < LOADS_MAX; i++) {
            GElf_Phdr ph;
            if (gelf_getphdr(e, (int)i, &ph) && ph.p_type == PT_LOAD) {
                m->load_off[m->nloads] = ph.p_offset;
                m->load_vaddr[m->nloads] = ph.p_vaddr;
                m->load_filesz[m->nloads] = ph.p_memsz > ph.p_filesz ? ph.p_memsz : ph.p_filesz;
                m->nloads++;
            }
        }
    Elf_Scn *pick = NULL;
    GElf_Shdr psh;
    for (Elf_Scn *scn = elf_nextscn(e, NULL); scn; scn = elf_nextscn(e, scn)) {
        GElf_Shdr sh;
        if (!gelf_getshdr(scn, &sh))
            continue;
        if (sh.sh_type == SHT_SYMTAB || (sh.sh_type == SHT_DYNSYM && !pick)) {
            pick = scn;
            psh = sh;
            if (sh.sh_type == SHT_SYMTAB)
                break;
        }
    }
    if (!pick || !psh.sh_entsize)
        goto out;
    Elf_Data *d = elf_getdata(pick, NULL);
    size_t n = psh.sh_size / psh.sh_entsize;
    if (!d || !n)
        goto out;
    m->sym = calloc(n, sizeof *m->sym);
    if (!m->sym)
        goto out;
    for (size_t i = 0; i < n; i++) {
        GElf_Sym s;
        if (!gelf_getsym(d, (int)i, &s) || !s.st_size || s.st_shndx == SHN_UNDEF ||
            (GELF_ST_TYPE(s.st_info) != STT_OBJECT && GELF_ST_TYPE(s.st_info) != STT_NOTYPE))
            continue;
        const char *name = elf_strptr(e, psh.sh_link, s.st_name);
        if (!name || !*name || !(m->sym[m->nsym].name = strdup(name)))
            continue;
        m->sym[m->nsym].lo = s.st_value;
        m->sym[m->nsym].size = s.st_size;
        m->nsym++;
    }
    qsort(m->sym, m->nsym, sizeof *m->sym, sym_cmp);
out:
    if (e)
        elf_end(e);
    close(fd);
}

static mod_t *mod_get(rootname_t *r, const char *path)
{
    for (size_t i = 0; i < r->nmods; i++)
        if (!strcmp(r->mods[i].path, path))
            return &r->mods[i];
    if (r->nmods == MODS_MAX)
        return NULL;
    mod_t *m = &r->mods[r->nmods];
    memset(m, 0, sizeof *m);
    if (!(m->path = strdup(path)))
        return NULL;
    r->nmods++;
    mod_read(m);
    return m;
}

/* The module's link-time address of the byte at addr, mapped by e (a file
 * mapping of it). 0 when its loads do not say. */
static uint64_t mod_vaddr(const mod_t *m, const maps_ent_t *e, uint64_t addr)
{
    /* The load the mapping starts at (its page-aligned offset), else the
     * one whose file range holds the mapping's offset. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < m->nloads; i++) {
            uint64_t pg = m->load_off[i] & ~4095ull;
            if (pass == 0 ? e->offset != pg
                          : e->offset < pg || e->offset >= m->load_off[i] + m->load_filesz[i])
                continue;
            uint64_t bias = e->lo - (m->load_vaddr[i] + e->offset - m->load_off[i]);
            return addr - bias;
        }
    return 0;
}

static const msym_t *mod_sym(const mod_t *m, uint64_t v)
{
    size_t lo = 0, hi = m->nsym;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->sym[mid].lo <= v)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Symbols may nest or overlap: look back a little for one holding v. */
    for (size_t k = lo; k > 0 && k + 8 > lo; k--) {
        const msym_t *s = &m->sym[k - 1];
        if (v >= s->lo && v < s->lo + s->size)
            return s;
    }
    return NULL;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static long add_label(rootname_t *r, const char *text)
{
    for (size_t i = r->nlabels; i-- > 0;)
        if (!strcmp(r->labels[i], text))
            return (long)i;
    if (r->nlabels == LABELS_MAX)
        return r->nlabels && !strcmp(r->labels[r->nlabels - 1], "other roots")
                   ? (long)r->nlabels - 1
                   : -1;
    if (r->nlabels == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        char **v = realloc(r->labels, cap * sizeof *v);
        if (!v)
            return -1;
        r->labels = v;
        r->cap = cap;
    }
    if (!(r->labels[r->nlabels] = strdup(r->nlabels + 1 == LABELS_MAX ? "other roots" : text)))
        return -1;
    return (long)r->nlabels++;
}

long rootname_label(rootname_t *r, uint64_t via)
{
    char buf[512];
    if (via & REACH_VIA_REG) {
        uint64_t k = via & ~REACH_VIA_REG;
        size_t t = (size_t)(k / r->wpr), reg = (size_t)(k % r->wpr);
        snprintf(buf, sizeof buf, "register %s of thread %d",
                 reg < sizeof reg_names / sizeof *reg_names ? reg_names[reg] : "?",
                 t < r->nthreads ? (int)r->tids[t] : 0);
        return add_label(r, buf);
    }
    const maps_ent_t *e = maps_find(r->maps, via);
    if (!e) {
        snprintf(buf, sizeof buf, "memory at 0x%" PRIx64, via);
        return add_label(r, buf);
    }
    for (size_t t = 0; t < r->nthreads; t++)
        if (r->sps[t] >= e->lo && r->sps[t] < e->hi) {
            snprintf(buf, sizeof buf, "stack of thread %d%s", (int)r->tids[t],
                     r->tids[t] == r->pid ? " (main)" : "");
            return add_label(r, buf);
        }
    const maps_ent_t *file = e->path[0] == '/' ? e : NULL;
    if (!file && !e->path[0] && e > r->maps->e && e[-1].hi == e->lo && e[-1].path[0] == '/')
        file = &e[-1]; /* the bss after a module's data */
    if (file) {
        mod_t *m = mod_get(r, file->path);
        uint64_t v = m ? mod_vaddr(m, file, via) : 0;
        const msym_t *s = m && v ? mod_sym(m, v) : NULL;
        if (s && v > s->lo)
            snprintf(buf, sizeof buf, "%s+0x%" PRIx64 " in %s", s->name, v - s->lo,
                     base_name(file->path));
        else if (s)
            snprintf(buf, sizeof buf, "%s in %s", s->name, base_name(file->path));
        else
            snprintf(buf, sizeof buf, "%s data", base_name(file->path));
        return add_label(r, buf);
    }
    if (!strcmp(e->path, "[heap]"))
        return add_label(r, "malloc heap outside tracked blocks");
    if (e->path[0])
        snprintf(buf, sizeof buf, "%s", e->path);
    else
        snprintf(buf, sizeof buf, "anonymous memory 0x%" PRIx64 "-0x%" PRIx64, e->lo, e->hi);
    return add_label(r, buf);
}

char **rootname_take(rootname_t *r, size_t *n)
{
    char **v = r->labels;
    *n = r->nlabels;
    r->labels = NULL;
    r->nlabels = r->cap = 0;
    return v;
}

void rootname_free(rootname_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nmods; i++) {
        for (size_t k = 0; k < r->mods[i].nsym; k++)
            free(r->mods[i].sym[k].name);
        free(r->mods[i].sym);
        free(r->mods[i].path);
    }
    for (size_t i = 0; i < r->nlabels; i++)
        free(r->labels[i]);
    free(r->labels);
    free(r);
}
