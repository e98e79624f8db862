/* GOT patching for stackctl attach: every module's allocator entries lead to the agent.
 *
 * A process that started without LD_PRELOAD has its allocator calls bound
 * already: each module calls malloc through its own GOT entry (JUMP_SLOT
 * for PLT calls, GLOB_DAT for calls through the GOT and for &malloc), which
 * the dynamic linker filled with libc's address. Attaching rewrites those
 * entries to the agent's interposers, as memray and plthook do; detaching
 * writes the old values back. Modules loaded later are patched after the
 * dlopen that loads them (hook_dlopen) and, for loads that bypass the GOT
 * (libc's own NSS and gconv modules), when the flusher sees the module list
 * change.
 *
 * Safety rules:
 * - the walk runs inside dl_iterate_phdr, which holds the loader's list
 *   lock: dlclose unlinks a module under that lock before unmapping it, so a
 *   module seen in the walk stays mapped while it is patched;
 * - a module that another thread is loading may appear before ld.so has
 *   relocated it: its entries then hold link-time values, neither the real
 *   function nor an address inside the module, and are skipped (the next
 *   refresh gets them);
 * - a RELRO page is made writable only if /proc/self/maps shows ld.so
 *   already protected it, and then gets exactly its protection back; a page
 *   still writable (relocation in progress) is written as it is;
 * - an entry is written with one aligned 8-byte store: a thread calling
 *   through it sees the old or the new function, both valid. */
#include "got.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "modmap.h"
#include "region.h"

#define GOT_MAX 65536u
#define PAGE 4096ull

typedef struct got_slot_s {
    uint64_t addr;     /* the entry */
    uint64_t old;      /* its value before we wrote (written back on detach) */
    uint64_t mine;     /* the interposer we wrote */
    uint64_t base;     /* the module's load bias */
    uint32_t stamp;    /* last pass that saw it */
} got_slot_t;

static pthread_mutex_t got_lock = PTHREAD_MUTEX_INITIALIZER;
static const got_target_t *tg;
static int ntg;
static got_slot_t *slots;        /* GOT_MAX, mmap'd */
static uint32_t nslots;
static uint32_t stamp;
static uint32_t nmodules;        /* modules with a patched entry (last pass) */
static _Atomic int active;       /* patching (attached) */
static int restoring;            /* the pass writes old values back */
static uint64_t self_addr;       /* an address inside the agent */
static uint64_t ld_base;         /* the dynamic linker's load address */
static _Atomic uint64_t failures;
static uint32_t restored;        /* entries written back by the last restore */
static int told_full;

int got_init(const got_target_t *targets, int n)
{
    tg = targets;
    ntg = n;
    if (slots)
        return 0;
    void *p = mmap(NULL, GOT_MAX * sizeof(got_slot_t), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -ENOMEM;
    region_add(p, GOT_MAX * sizeof(got_slot_t));
    slots = p;
    self_addr = (uint64_t)(uintptr_t)&got_init;
    ld_base = getauxval(AT_BASE);
    return 0;
}

/* The protection of the page at addr per /proc/self/maps (PROT_* bits),
 * or -1 if it is not mapped or the file cannot be read. No malloc. */
static int page_prot(uint64_t addr)
{
    char line[4096 + 64];
    if (modmap_maps_line(addr, line, sizeof line) < 0 || line[0] != ' ' || !line[1] ||
        !line[2] || !line[3])
        return -1;
    return (line[1] == 'r' ? PROT_READ : 0) | (line[2] == 'w' ? PROT_WRITE : 0) |
           (line[3] == 'x' ? PROT_EXEC : 0);
}

/* One module as the pass sees it. */
typedef struct mod_view_s {
    uint64_t bias, lo, hi;       /* load bias, hull of PT_LOAD */
    uint64_t relro_lo, relro_hi; /* pages ld.so makes read-only after relocation */
    const ElfW(Phdr) *phdr;
    int phnum;
} mod_view_t;

/* 1 when [a, a+8) lies in a segment of the module that may hold a GOT. */
static int slot_ok(const mod_view_t *m, uint64_t a)
{
    if (a & 7)
        return 0;
    for (int i = 0; i < m->phnum; i++) {
        const ElfW(Phdr) *ph = &m->phdr[i];
        uint64_t s = m->bias + ph->p_vaddr, e = s + ph->p_memsz;
        if (ph->p_type == PT_LOAD && a >= s && a + 8 <= e &&
            ((ph->p_flags & PF_W) || (a >= m->relro_lo && a + 8 <= m->relro_hi)))
            return 1;
    }
    return 0;
}

/* 1 when addr, inside the module, is a lazy-binding PLT stub (what a
 * JUMP_SLOT holds until its first call): push $index, or endbr64 then push.
 * A module's own allocator function would not start like that, so an entry
 * bound to it is never taken for one. */
static int plt_stub(const mod_view_t *m, uint64_t addr)
{
    for (int i = 0; i < m->phnum; i++) {
        const ElfW(Phdr) *ph = &m->phdr[i];
        uint64_t s = m->bias + ph->p_vaddr, e = s + ph->p_memsz;
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X) || addr < s || addr + 5 > e)
            continue;
        const uint8_t *p = (const uint8_t *)(uintptr_t)addr;
        if (p[0] == 0x68)
            return 1;
        return addr + 9 <= e && p[0] == 0xf3 && p[1] == 0x0f && p[2] == 0x1e && p[3] == 0xfa &&
               p[4] == 0x68;
    }
    return 0;
}

/* Writes v at the entry a: directly on a writable page, through mprotect on
 * a protected RELRO page. Returns 0 or -errno. */
static int slot_write(const mod_view_t *m, uint64_t a, uint64_t v)
{
    uint64_t page = a & ~(PAGE - 1);
    int in_relro = a >= m->relro_lo && a + 8 <= m->relro_hi;
    int prot = in_relro ? page_prot(page) : PROT_READ | PROT_WRITE;
    if (prot < 0)
        return -EFAULT;
    if (!(prot & PROT_WRITE) &&
        mprotect((void *)(uintptr_t)page, PAGE, prot | PROT_WRITE) != 0)
        return -errno;
    __atomic_store_n((uint64_t *)(uintptr_t)a, v, __ATOMIC_RELEASE);
    if (!(prot & PROT_WRITE))
        mprotect((void *)(uintptr_t)page, PAGE, prot);
    return 0;
}

static got_slot_t *slot_find(uint64_t a)
{
    for (uint32_t i = 0; i < nslots; i++)
        if (slots[i].addr == a)
            return &slots[i];
    return NULL;
}

/* One relocation: patch (or, restoring, unpatch) it if it names a target. */
static int do_reloc(const mod_view_t *m, const ElfW(Rela) *r, const ElfW(Sym) *symtab,
                    const char *strtab, uint64_t strsz)
{
    uint32_t type = ELF64_R_TYPE(r->r_info);
    if (type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT)
        return 0;
    uint32_t si = ELF64_R_SYM(r->r_info);
    if (!si || symtab[si].st_name >= strsz)
        return 0;
    const char *name = strtab + symtab[si].st_name;
    int k;
    for (k = 0; k < ntg; k++)
        if (name[0] == tg[k].name[0] && strcmp(name, tg[k].name) == 0)
            break;
    if (k == ntg)
        return 0;
    uint64_t a = m->bias + r->r_offset;
    if (!slot_ok(m, a))
        return 0;
    uint64_t cur = __atomic_load_n((uint64_t *)(uintptr_t)a, __ATOMIC_ACQUIRE);
    got_slot_t *s = slot_find(a);
    if (restoring) {
        if (s && s->base == m->bias && cur == s->mine) {
            if (slot_write(m, a, s->old) < 0)
                atomic_fetch_add(&failures, 1);
            else
                restored++;
        }
        return 0;
    }
    if (cur == tg[k].mine) {
        if (s) {
            s->stamp = stamp;
            return 1;
        }
        return 0; /* ours, but not our doing: leave it */
    }
    /* Bound to the real function, or not bound yet: the module's PLT stub. */
    if (cur != tg[k].real && !(type == R_X86_64_JUMP_SLOT && cur >= m->lo && cur < m->hi &&
                               plt_stub(m, cur)))
        return 0;
    if (!s) {
        if (nslots == GOT_MAX) {
            if (!told_full++)
                log_msg("attach: more than %u allocator entries; the rest stay unpatched",
                        GOT_MAX);
            return 0;
        }
        s = &slots[nslots++];
    }
    if (slot_write(m, a, tg[k].mine) < 0) {
        atomic_fetch_add(&failures, 1);
        s->addr = 0; /* not ours after all (compacted below) */
        s->stamp = 0;
        return 0;
    }
    *s = (got_slot_t){ .addr = a, .old = cur, .mine = tg[k].mine, .base = m->bias,
                       .stamp = stamp };
    return 1;
}

static int pass_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    int *patched = arg;
    mod_view_t m = { .bias = info->dlpi_addr, .lo = UINT64_MAX, .phdr = info->dlpi_phdr,
                     .phnum = info->dlpi_phnum };
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uint64_t s = info->dlpi_addr + ph->p_vaddr, e = s + ph->p_memsz;
        if (ph->p_type == PT_LOAD) {
            if (s < m.lo)
                m.lo = s;
            if (e > m.hi)
                m.hi = e;
        } else if (ph->p_type == PT_DYNAMIC) {
            dyn = (const ElfW(Dyn) *)(uintptr_t)s;
        } else if (ph->p_type == PT_GNU_RELRO) {
            /* What ld.so protects: whole pages from the start to the last
             * page the segment fills. */
            m.relro_lo = s & ~(PAGE - 1);
            m.relro_hi = e & ~(PAGE - 1);
        }
    }
    if (!dyn || m.hi <= m.lo)
        return 0;
    /* Not the agent (its own calls must reach libc), not ld.so (its
     * allocations go through pointers of its own, never a GOT entry). */
    if ((self_addr >= m.lo && self_addr < m.hi) || (ld_base && m.bias == ld_base))
        return 0;
    uint64_t symtab = 0, strtab = 0, strsz = 0, jmprel = 0, pltsz = 0, rela = 0, relasz = 0;
    int pltrel = DT_RELA;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_SYMTAB: symtab = d->d_un.d_ptr; break;
        case DT_STRTAB: strtab = d->d_un.d_ptr; break;
        case DT_STRSZ: strsz = d->d_un.d_val; break;
        case DT_JMPREL: jmprel = d->d_un.d_ptr; break;
        case DT_PLTRELSZ: pltsz = d->d_un.d_val; break;
        case DT_PLTREL: pltrel = (int)d->d_un.d_val; break;
        case DT_RELA: rela = d->d_un.d_ptr; break;
        case DT_RELASZ: relasz = d->d_un.d_val; break;
        default: break;
        }
    }
    if (!symtab || !strtab || pltrel != DT_RELA)
        return 0;
    /* ld.so relocates these pointers in place, unless .dynamic is read-only. */
#define FIX(v) ((v) && (v) < m.bias ? (v) + m.bias : (v))
    symtab = FIX(symtab);
    strtab = FIX(strtab);
    jmprel = FIX(jmprel);
    rela = FIX(rela);
#undef FIX
    const ElfW(Sym) *st = (const ElfW(Sym) *)(uintptr_t)symtab;
    const char *str = (const char *)(uintptr_t)strtab;
    int n = 0;
    if (jmprel)
        for (uint64_t o = 0; o + sizeof(ElfW(Rela)) <= pltsz; o += sizeof(ElfW(Rela)))
            n += do_reloc(&m, (const ElfW(Rela) *)(uintptr_t)(jmprel + o), st, str, strsz);
    if (rela)
        for (uint64_t o = 0; o + sizeof(ElfW(Rela)) <= relasz; o += sizeof(ElfW(Rela)))
            n += do_reloc(&m, (const ElfW(Rela) *)(uintptr_t)(rela + o), st, str, strsz);
    if (n) {
        nmodules++;
        *patched += n;
    }
    return 0;
}

/* got_definition's walk. */
typedef struct def_find_s {
    const char *name;
    uint64_t addr;       /* what dlsym said */
    uint64_t def;        /* the definition behind it */
    int imported;        /* addr's module imports name: addr is its PLT stub */
} def_find_t;

static int def_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    def_find_t *f = arg;
    uint64_t lo = UINT64_MAX, hi = 0;
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uint64_t s = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD) {
            if (s < lo)
                lo = s;
            if (s + ph->p_memsz > hi)
                hi = s + ph->p_memsz;
        } else if (ph->p_type == PT_DYNAMIC) {
            dyn = (const ElfW(Dyn) *)(uintptr_t)s;
        }
    }
    if (f->addr < lo || f->addr >= hi)
        return 0;
    if (!dyn)
        return 1;
    uint64_t symtab = 0, strtab = 0, strsz = 0, jmprel = 0, pltsz = 0, rela = 0, relasz = 0;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_SYMTAB: symtab = d->d_un.d_ptr; break;
        case DT_STRTAB: strtab = d->d_un.d_ptr; break;
        case DT_STRSZ: strsz = d->d_un.d_val; break;
        case DT_JMPREL: jmprel = d->d_un.d_ptr; break;
        case DT_PLTRELSZ: pltsz = d->d_un.d_val; break;
        case DT_RELA: rela = d->d_un.d_ptr; break;
        case DT_RELASZ: relasz = d->d_un.d_val; break;
        default: break;
        }
    }
#define FIX(v) ((v) && (v) < info->dlpi_addr ? (v) + info->dlpi_addr : (v))
    symtab = FIX(symtab);
    strtab = FIX(strtab);
    jmprel = FIX(jmprel);
    rela = FIX(rela);
#undef FIX
    if (!symtab || !strtab)
        return 1;
    const ElfW(Sym) *st = (const ElfW(Sym) *)(uintptr_t)symtab;
    const char *str = (const char *)(uintptr_t)strtab;
    uint64_t tabs[2][2] = { { jmprel, pltsz }, { rela, relasz } };
    for (int t = 0; t < 2; t++) {
        for (uint64_t o = 0; tabs[t][0] && o + sizeof(ElfW(Rela)) <= tabs[t][1];
             o += sizeof(ElfW(Rela))) {
            const ElfW(Rela) *r = (const ElfW(Rela) *)(uintptr_t)(tabs[t][0] + o);
            uint32_t type = ELF64_R_TYPE(r->r_info), si = ELF64_R_SYM(r->r_info);
            if ((type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT) || !si ||
                st[si].st_name >= strsz || strcmp(str + st[si].st_name, f->name) != 0)
                continue;
            f->imported = 1;
            uint64_t v = *(const uint64_t *)(uintptr_t)(info->dlpi_addr + r->r_offset);
            if (v && (v < lo || v >= hi)) {
                f->def = v;
                return 1;
            }
        }
    }
    return 1;
}

uint64_t got_definition(const char *name, uint64_t addr, int *imported)
{
    def_find_t f = { name, addr, addr, 0 };
    if (addr)
        dl_iterate_phdr(def_cb, &f);
    if (imported)
        *imported = f.imported;
    return f.def;
}

/* Runs one pass under the lock; drops records not seen (unloaded modules,
 * entries rewritten by someone else). Returns entries held. */
static int pass(void)
{
    stamp++;
    nmodules = 0;
    int patched = 0;
    dl_iterate_phdr(pass_cb, &patched);
    uint32_t w = 0;
    for (uint32_t i = 0; i < nslots; i++)
        if (slots[i].addr && slots[i].stamp == stamp)
            slots[w++] = slots[i];
    nslots = w;
    return patched;
}

int got_patch(void)
{
    if (!slots)
        return -ENOMEM;
    pthread_mutex_lock(&got_lock);
    atomic_store(&active, 1);
    int n = pass();
    pthread_mutex_unlock(&got_lock);
    return n;
}

void got_refresh(void)
{
    if (!atomic_load_explicit(&active, memory_order_relaxed))
        return;
    pthread_mutex_lock(&got_lock);
    if (atomic_load(&active))
        pass();
    pthread_mutex_unlock(&got_lock);
}

int got_restore(void)
{
    pthread_mutex_lock(&got_lock);
    atomic_store(&active, 0);
    restoring = 1;
    restored = 0;
    int unused = 0;
    dl_iterate_phdr(pass_cb, &unused);
    restoring = 0;
    nslots = 0;
    nmodules = 0;
    int n = (int)restored;
    pthread_mutex_unlock(&got_lock);
    return n;
}

void got_fork_prepare(void)
{
    pthread_mutex_lock(&got_lock);
}

void got_fork_parent(void)
{
    pthread_mutex_unlock(&got_lock);
}

void got_fork_child(void)
{
    pthread_mutex_init(&got_lock, NULL);
}

uint32_t got_entries(void)
{
    return nslots;
}

uint32_t got_modules(void)
{
    return nmodules;
}
