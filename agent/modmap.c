/* The module map: loaded ELF objects by generation, found with dl_iterate_phdr only. */
#include "modmap.h"
#include "pyframes.h"
#include "region.h"
#include "unwind.h"

#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MOD_CAP 16384u
#define STR_CAP (4u << 20)

_Atomic uint32_t modmap_generation;

static pthread_mutex_t mm_lock = PTHREAD_MUTEX_INITIALIZER;
static mod_t *mods;           /* MOD_CAP entries, mmap'd */
static uint32_t *seen;        /* refresh stamp per module */
static uint32_t nmods;
static char *strs;            /* string pool, mmap'd */
static size_t nstrs;
static char exe_path[4096];
static uint32_t last_unload_gen;
static uint32_t refresh_stamp;
/* Written under the map lock by any refreshing thread, read lock-free by the
 * flusher's cheap change check: atomics, relaxed (a stale value only makes
 * the check refresh once more or once later). */
static _Atomic unsigned long long known_adds, known_subs;
static uint32_t first_new;    /* first module added by the refresh in progress */

int modmap_init(const char *exe)
{
    size_t mb = MOD_CAP * sizeof(mod_t) + MOD_CAP * sizeof(uint32_t);
    void *m = mmap(NULL, mb, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return -ENOMEM;
    void *s = mmap(NULL, STR_CAP, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s == MAP_FAILED) {
        munmap(m, mb);
        return -ENOMEM;
    }
    region_add(m, mb);
    region_add(s, STR_CAP);
    mods = m;
    seen = (uint32_t *)(mods + MOD_CAP);
    strs = s;
    nstrs = 1; /* offset 0 is the empty string */
    size_t n = strlen(exe);
    if (n >= sizeof exe_path)
        n = sizeof exe_path - 1;
    memcpy(exe_path, exe, n);
    exe_path[n] = '\0';
    modmap_refresh();
    return 0;
}

size_t modmap_bytes(void)
{
    pthread_mutex_lock(&mm_lock);
    size_t n = nmods * sizeof(mod_t) + nstrs;
    pthread_mutex_unlock(&mm_lock);
    return n;
}

_Atomic int modmap_iterating;

int modmap_lock(int timeout_ms)
{
    /* Bounded: a program thread that forks from inside a dl_iterate_phdr
     * callback holds the loader's lock the flusher may be waiting for with
     * the map lock held. The fork then goes ahead without it (its child
     * sees the flusher counted inside dl_iterate_phdr: untraced). */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    return pthread_mutex_timedlock(&mm_lock, &until) == 0 ? 0 : -1;
}

void modmap_unlock(void)
{
    pthread_mutex_unlock(&mm_lock);
}

int modmap_fork_child(void)
{
    /* The prepare handler held the lock across fork; re-create it. */
    pthread_mutex_init(&mm_lock, NULL);
    /* The count as the fork copied it: a thread that was inside
     * dl_iterate_phdr then (the agent's own calls are kept out by the map
     * lock and the GOT lock) held the loader's phdr lock, which the child
     * inherits held: glibc 2.36 does not reset it, so every dl_iterate_phdr
     * of the child would block for good. Only this thread was copied. */
    int held = atomic_exchange(&modmap_iterating, 0) > 0;
    return held ? -1 : 0;
}

static uint32_t str_add(const char *s)
{
    size_t n = strlen(s);
    if (nstrs + n + 1 > STR_CAP)
        return 0;
    uint32_t off = (uint32_t)nstrs;
    memcpy(strs + nstrs, s, n + 1);
    nstrs += n + 1;
    return off;
}

int modmap_maps_line(uint64_t addr, char *out, size_t cap)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || cap == 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char buf[8192];
    size_t have = 0;
    int found = -1;
    for (;;) {
        ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
        if (r <= 0)
            break;
        have += (size_t)r;
        buf[have] = '\0';
        char *line = buf, *nl;
        while ((nl = memchr(line, '\n', have - (size_t)(line - buf)))) {
            *nl = '\0';
            uint64_t lo = 0, hi = 0;
            char *p = line;
            while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))
                lo = lo * 16 + (uint64_t)(*p <= '9' ? *p - '0' : *p - 'a' + 10), p++;
            if (*p == '-')
                p++;
            while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))
                hi = hi * 16 + (uint64_t)(*p <= '9' ? *p - '0' : *p - 'a' + 10), p++;
            if (addr >= lo && addr < hi) {
                size_t n = strlen(p);
                if (n >= cap)
                    n = cap - 1;
                memcpy(out, p, n);
                out[n] = '\0';
                found = 0;
                goto out;
            }
            line = nl + 1;
        }
        have -= (size_t)(line - buf);
        memmove(buf, line, have);
        if (have == sizeof buf - 1)
            have = 0; /* absurdly long line: skip it */
    }
out:
    close(fd);
    return found;
}

/* The path of the file mapped at addr, for objects whose dlpi_name is
 * relative. No malloc. */
static int path_from_maps(uint64_t addr, char *out, size_t cap)
{
    char line[4096 + 64];
    if (modmap_maps_line(addr, line, sizeof line) < 0)
        return -1;
    char *slash = strchr(line, '/');
    size_t n = slash ? strlen(slash) : 0;
    if (!slash || n >= cap)
        return -1;
    memcpy(out, slash, n + 1);
    return 0;
}

static void read_build_id(mod_t *m, struct dl_phdr_info *info)
{
    m->build_id_len = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
        const uint8_t *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
            size_t namesz = (nh->n_namesz + 3u) & ~3u;
            size_t descsz = (nh->n_descsz + 3u) & ~3u;
            const uint8_t *name = p + sizeof *nh;
            const uint8_t *desc = name + namesz;
            if (desc + descsz > end)
                break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 &&
                memcmp(name, "GNU", 4) == 0) {
                uint32_t n = nh->n_descsz < MOD_BUILD_ID_MAX ? nh->n_descsz : MOD_BUILD_ID_MAX;
                memcpy(m->build_id, desc, n);
                m->build_id_len = n;
                return;
            }
            p = desc + descsz;
        }
    }
}

static int refresh_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)arg;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
        atomic_store_explicit(&known_adds, info->dlpi_adds, memory_order_relaxed);
        atomic_store_explicit(&known_subs, info->dlpi_subs, memory_order_relaxed);
    }
    uint64_t lo = UINT64_MAX, hi = 0;
    uint64_t ranges[2 * MOD_MAX_RANGES];
    uint32_t nr = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uint64_t s = info->dlpi_addr + ph->p_vaddr, e = s + ph->p_memsz;
        if (nr < MOD_MAX_RANGES) {
            ranges[2 * nr] = s;
            ranges[2 * nr + 1] = e;
            nr++;
        }
        if (s < lo)
            lo = s;
        if (e > hi)
            hi = e;
    }
    if (nr == 0)
        return 0;
    const char *name = info->dlpi_name;
    char resolved[4096];
    if (!name || !*name) {
        name = exe_path;
    } else if (name[0] != '/' && path_from_maps(lo, resolved, sizeof resolved) == 0) {
        name = resolved;
    }
    for (uint32_t i = 0; i < nmods; i++) {
        mod_t *m = &mods[i];
        if (m->gen_removed == 0 && m->bias == info->dlpi_addr && m->lo == lo && m->hi == hi &&
            strcmp(strs + m->path_off, name) == 0) {
            seen[i] = refresh_stamp;
            return 0;
        }
    }
    if (nmods >= MOD_CAP)
        return 0;
    mod_t *m = &mods[nmods];
    memset(m, 0, sizeof *m);
    m->id = nmods;
    m->bias = info->dlpi_addr;
    m->lo = lo;
    m->hi = hi;
    m->nranges = nr;
    memcpy(m->ranges, ranges, sizeof(uint64_t) * 2 * nr);
    m->gen_added = last_unload_gen;
    m->path_off = str_add(name);
    read_build_id(m, info);
    unwind_module_added(name, !info->dlpi_name || !*info->dlpi_name, lo, hi);
    py_module_added(info, name);
    seen[nmods] = refresh_stamp;
    nmods++;
    return 0;
}

static int overlaps(const mod_t *a, const mod_t *b)
{
    return a->lo < b->hi && b->lo < a->hi;
}

int modmap_refresh(void)
{
    if (!mods)
        return 0;
    pthread_mutex_lock(&mm_lock);
    uint32_t before = nmods;
    refresh_stamp++;
    first_new = nmods;
    dl_iterate_phdr(refresh_cb, NULL);
    int changed = nmods != before;
    uint32_t gen = modmap_gen();
    int bumped = 0;
    for (uint32_t i = 0; i < first_new; i++) {
        mod_t *m = &mods[i];
        if (m->gen_removed != 0 || seen[i] == refresh_stamp)
            continue;
        if (!bumped) {
            gen++;
            bumped = 1;
        }
        m->gen_removed = gen;
        unwind_module_removed(m->lo, m->hi);
        changed = 1;
    }
    if (bumped) {
        last_unload_gen = gen;
        /* A new object overlapping one that just vanished may reuse its
         * addresses: it is valid only from the new generation on. */
        for (uint32_t i = first_new; i < nmods; i++)
            for (uint32_t j = 0; j < first_new; j++)
                if (mods[j].gen_removed == gen && overlaps(&mods[i], &mods[j]))
                    mods[i].gen_added = gen;
        /* relaxed: the hot path only needs some recent value; the map lock
         * orders the records themselves for the flusher. */
        atomic_store_explicit(&modmap_generation, gen, memory_order_relaxed);
    }
    pthread_mutex_unlock(&mm_lock);
    return changed;
}

static int counters_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    unsigned long long *out = arg;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
        out[0] = info->dlpi_adds;
        out[1] = info->dlpi_subs;
    }
    return 1;
}


int modmap_changed(void)
{
    if (atomic_load_explicit(&modmap_iterating, memory_order_relaxed) > 0)
        return 0; /* another thread holds the loader's lock: not now */
    unsigned long long a = atomic_load_explicit(&known_adds, memory_order_relaxed);
    unsigned long long d = atomic_load_explicit(&known_subs, memory_order_relaxed);
    unsigned long long c[2] = { a, d };
    /* Under the map lock, which fork's prepare handler takes: the child of
     * a fork made while this iterated would inherit the loader's phdr lock
     * held (glibc 2.36 does not reset it) and block in its next
     * dl_iterate_phdr for good (see modmap_fork_child). */
    pthread_mutex_lock(&mm_lock);
    dl_iterate_phdr(counters_cb, c);
    pthread_mutex_unlock(&mm_lock);
    return c[0] != a || c[1] != d;
}

int modmap_covers(uint64_t pc, uint32_t gen)
{
    int found = 0;
    pthread_mutex_lock(&mm_lock);
    for (uint32_t i = 0; i < nmods && !found; i++) {
        const mod_t *m = &mods[i];
        if (pc < m->lo || pc >= m->hi || m->gen_added > gen ||
            (m->gen_removed != 0 && gen >= m->gen_removed))
            continue;
        for (uint32_t r = 0; r < m->nranges; r++)
            if (pc >= m->ranges[2 * r] && pc < m->ranges[2 * r + 1])
                found = 1;
    }
    pthread_mutex_unlock(&mm_lock);
    return found;
}

size_t modmap_each_unsent(uint32_t epoch, void (*fn)(const mod_t *m, const char *path, void *arg),
                          void *arg)
{
    size_t n = 0;
    pthread_mutex_lock(&mm_lock);
    for (uint32_t i = 0; i < nmods; i++) {
        mod_t *m = &mods[i];
        int send = 0;
        if (m->sent_epoch != epoch) {
            send = 1;
        } else if (m->gen_removed != 0 && !m->sent_removed) {
            send = 1;
        }
        if (!send)
            continue;
        m->sent_epoch = epoch;
        m->sent_removed = m->gen_removed != 0;
        fn(m, strs + m->path_off, arg);
        n++;
    }
    pthread_mutex_unlock(&mm_lock);
    return n;
}

void modmap_before_unload(void)
{
    modmap_refresh();
}

void modmap_after_unload(void)
{
    modmap_refresh();
}
