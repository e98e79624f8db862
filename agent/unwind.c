/* Stack capture: libunwind's unw_backtrace, or a validated frame-pointer walk with a cached tail.
 *
 * The frame-pointer walk (STACKWATCH_UNWIND=fp) follows rbp frame records
 * only through code known to keep them: the agent itself (built with frame
 * pointers), and candidate modules (the main executable, STACKWATCH_FP_MODULES)
 * once their first UNWIND_FP_CHECKS walks matched libunwind exactly. Debian's
 * libraries do not keep frame pointers: there rbp is a general register, and
 * a walk would not just stop early but pass bounds checks and produce wrong
 * callers. So at the first frame outside trusted code the walk hands over to
 * libunwind, started from a context built from that frame (its pc, the stack
 * pointer after the call, its rbp). The frames from there on (typically
 * start_thread or __libc_start_main and a few more) are cached per thread,
 * keyed by that frame's pc and stack address, and reused while every cached
 * return-address slot on the stack still holds the cached pc. A module that
 * fails a check is never walked again; a capture that cannot be walked safely
 * (a record outside this thread's stack, out of order) falls back to
 * unw_backtrace. */
#ifndef UNW_LOCAL_ONLY
#define UNW_LOCAL_ONLY /* the Makefile sets it; unit builds may not */
#endif
#include "unwind.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <fnmatch.h>
#include <link.h>
#include <libunwind.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#define TAIL_MAX 48
#define TAILS 4
#define WALK_MAX 512

enum { FPM_VERIFY = 0, FPM_TRUSTED = 1, FPM_REFUSED = 2 };

typedef struct fpmod_s {
    uint64_t lo, hi;           /* executable hull of the module */
    _Atomic int state;         /* FPM_* */
    _Atomic uint32_t checks;   /* walks that matched libunwind */
    char name[96];             /* for the one message */
} fpmod_t;

/* The frames beyond the last trusted one, as libunwind found them. */
typedef struct tail_s {
    uint64_t pc, cfa;          /* key: the hand-over frame's pc and stack address */
    uint32_t n;                /* pcs[0] is pc itself */
    uint32_t cut;              /* more frames than TAIL_MAX */
    uint64_t pcs[TAIL_MAX];
    uint64_t slot[TAIL_MAX];   /* where pcs[j] is stored on the stack (j >= 1) */
} tail_t;

typedef struct utls_s {
    uint64_t stack_hi;         /* top of this thread's stack, 0 unknown */
    uint64_t stack_lo;         /* its lowest address */
    uint64_t frames_hi;        /* highest return-address slot seen: its frames lie below */
    int bounds_tried;
    uint32_t next;             /* round-robin tail slot */
    tail_t tails[TAILS];
} utls_t;

/* This thread's state lives in its ring's mapping (RING_UWT_BYTES): only
 * the pointer is in TLS (see ring.h). NULL until the thread has a ring:
 * then there is no frame-pointer walk and no stack cache, only libunwind. */
static __thread utls_t *utp __attribute__((tls_model("initial-exec")));

__thread uint32_t unwind_in_getattr __attribute__((tls_model("initial-exec")));

_Static_assert(sizeof(utls_t) <= UNWIND_THREAD_BYTES, "unwinder state too big");

void unwind_thread_set(void *mem)
{
    utp = mem;
}

static uint64_t self_lo, self_hi;
static uint64_t hide_lo, hide_hi; /* agent code that runs app code: never a frame of its stacks */

void unwind_hide_range(uint64_t lo, uint64_t hi)
{
    hide_lo = lo;
    hide_hi = hi;
}

static inline int unwind_is_hidden(uint64_t pc)
{
    return pc - hide_lo < hide_hi - hide_lo;
}
static int mode;
static fpmod_t fpmods[UNWIND_FP_MODULES];
static _Atomic int nfpmods;

static const char *fp_globs;

static int find_self(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    uint64_t probe = *(const uint64_t *)arg, lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uint64_t s = info->dlpi_addr + ph->p_vaddr, e = s + ph->p_memsz;
        if (s < lo)
            lo = s;
        if (e > hi)
            hi = e;
    }
    if (probe >= lo && probe < hi) {
        self_lo = lo;
        self_hi = hi;
        return 1;
    }
    return 0;
}

int unwind_init(int want, const char *globs)
{
    /* Per-thread caches: no lock shared between threads on the unwind path. */
    unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
    mode = want;
    fp_globs = globs;
    uint64_t probe = (uint64_t)(uintptr_t)&unwind_init;
    dl_iterate_phdr(find_self, &probe);
    /* libunwind makes its per-thread cache's pthread key at its first
     * backtrace: now, while keys are few. Made later (a program that
     * created 32 keys first), each thread's first backtrace would calloc
     * glibc's second-level pthread_setspecific array inside the agent,
     * untracked, and a program's own value stored there (key >= 32) would
     * sit where no scan looks: its block called lost (issue 19.4a). */
    void *warm[2];
    unw_backtrace(warm, 2);
    return self_hi ? 0 : -ENOENT;
}

/* The two ends of one pipe made by pipe2(O_CLOEXEC | O_NONBLOCK): r the
 * read end, w the write end. */
static int is_validate_pipe(int r, int w)
{
    struct stat a, b;
    if (r < 0 || w < 0 || r == w || r > (1 << 20) || w > (1 << 20))
        return 0;
    if (fstat(r, &a) < 0 || fstat(w, &b) < 0 || !S_ISFIFO(a.st_mode) || !S_ISFIFO(b.st_mode) ||
        a.st_ino != b.st_ino || a.st_dev != b.st_dev)
        return 0;
    int fr = fcntl(r, F_GETFL), fw = fcntl(w, F_GETFL);
    int dr = fcntl(r, F_GETFD), dw = fcntl(w, F_GETFD);
    return fr >= 0 && fw >= 0 && dr >= 0 && dw >= 0 && (fr & O_ACCMODE) == O_RDONLY &&
           (fw & O_ACCMODE) == O_WRONLY && (fr & O_NONBLOCK) && (fw & O_NONBLOCK) &&
           (dr & FD_CLOEXEC) && (dw & FD_CLOEXEC);
}

typedef struct pipe_find_s {
    uint64_t probe;   /* an address inside libunwind */
    int *at;          /* the pair found */
    int found;        /* pairs found (1 expected) */
} pipe_find_t;

static int find_pipe_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    pipe_find_t *pf = arg;
    int inside = 0;
    uint64_t relro_lo = 0, relro_hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uint64_t s = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && pf->probe >= s && pf->probe < s + ph->p_memsz)
            inside = 1;
        if (ph->p_type == PT_GNU_RELRO) {
            relro_lo = s;
            relro_hi = s + ph->p_memsz;
        }
    }
    if (!inside)
        return 0;
    /* Initialized writable data ({-1, -1} at first): the file-backed part
     * of the writable segments, outside RELRO (read-only once relocated). */
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W))
            continue;
        uint64_t s = (info->dlpi_addr + ph->p_vaddr + 3) & ~(uint64_t)3;
        uint64_t e = info->dlpi_addr + ph->p_vaddr + ph->p_filesz;
        for (uint64_t a = s; a + 2 * sizeof(int) <= e; a += sizeof(int)) {
            if (a < relro_hi && a + 2 * sizeof(int) > relro_lo)
                continue;
            int *p = (int *)(uintptr_t)a;
            if (is_validate_pipe(p[0], p[1])) {
                pf->at = p;
                pf->found++;
            }
        }
    }
    return 1;
}

int unwind_close_fds(void)
{
    pipe_find_t pf = { .probe = (uint64_t)(uintptr_t)&unw_backtrace };
    dl_iterate_phdr(find_pipe_cb, &pf);
    if (pf.found != 1)
        return -ENOENT; /* none open (never validated), or not told apart: left alone */
    int r = pf.at[0], w = pf.at[1];
    pf.at[0] = -1;
    pf.at[1] = -1;
    close(r);
    close(w);
    return 2;
}

void unwind_module_added(const char *path, int is_exe, uint64_t lo, uint64_t hi)
{
    if (mode != UNWIND_FP || hi <= lo || (lo < self_hi && self_lo < hi))
        return;
    if (!is_exe && (!fp_globs || !*fp_globs || !cfg_exe_match(fp_globs, path)))
        return;
    int n = atomic_load_explicit(&nfpmods, memory_order_relaxed);
    if (n == UNWIND_FP_MODULES)
        return;
    fpmod_t *m = &fpmods[n];
    m->lo = lo;
    m->hi = hi;
    atomic_store_explicit(&m->state, FPM_VERIFY, memory_order_relaxed);
    atomic_store_explicit(&m->checks, 0, memory_order_relaxed);
    size_t len = strlen(path);
    if (len >= sizeof m->name)
        path += len - (sizeof m->name - 1);
    memcpy(m->name, path, strlen(path) + 1);
    /* release: a walker that sees the count sees the entry. */
    atomic_store_explicit(&nfpmods, n + 1, memory_order_release);
}

void unwind_module_removed(uint64_t lo, uint64_t hi)
{
    int n = atomic_load_explicit(&nfpmods, memory_order_acquire);
    for (int i = 0; i < n; i++)
        if (fpmods[i].lo == lo && fpmods[i].hi == hi)
            atomic_store_explicit(&fpmods[i].state, FPM_REFUSED, memory_order_relaxed);
}

int unwind_self_range(uint64_t *lo, uint64_t *hi)
{
    if (!self_hi)
        return -ENOENT;
    *lo = self_lo;
    *hi = self_hi;
    return 0;
}

int unwind_is_self(uint64_t pc)
{
    return pc >= self_lo && pc < self_hi;
}

/* ---------------------------------------------------------------- libunwind */

static int dwarf_capture(uint64_t *out, int depth, int *truncated)
{
    void *buf[CFG_DEPTH_MAX + UNWIND_SKIP_MAX];
    int want = depth + UNWIND_SKIP_MAX;
    int n = unw_backtrace(buf, want);
    *truncated = 0;
    if (n <= 0)
        return 0;
    int i = 0;
    while (i < n && unwind_is_self((uint64_t)(uintptr_t)buf[i]))
        i++;
    /* Further out, the agent's main wrapper (agent.c) is not the app's. */
    int kept = 0;
    for (; i < n && kept < depth; i++)
        if (!unwind_is_hidden((uint64_t)(uintptr_t)buf[i]))
            out[kept++] = (uint64_t)(uintptr_t)buf[i];
    if (i < n || n == want)
        *truncated = 1; /* cut at depth, or the buffer filled up: there may be more */
    return kept;
}

/* ---------------------------------------------------------------- frame pointers */

/* Top of this thread's stack: records must lie between our own frame and it. */
static uint64_t stack_top(void)
{
    if (!utp)
        return 0;
    if (utp->stack_hi || utp->bounds_tried)
        return utp->stack_hi;
    /* Inside the program's own pthread_getattr_np, which holds the lock
     * that ours would take (hook.c): no bounds this time. */
    if (unwind_in_getattr)
        return 0;
    utp->bounds_tried = 1;
    pthread_attr_t attr;
    /* Reads /proc/self/maps and allocates for the main thread: once per
     * thread, under the guard. */
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *addr;
        size_t size;
        if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
            utp->stack_lo = (uint64_t)(uintptr_t)addr;
            utp->stack_hi = (uint64_t)(uintptr_t)addr + size;
        }
        pthread_attr_destroy(&attr);
    }
    return utp->stack_hi;
}

/* Newest first: a module loaded where an unloaded one was wins. */
static int fpmod_of(uint64_t pc)
{
    for (int i = atomic_load_explicit(&nfpmods, memory_order_acquire); i-- > 0;)
        if (pc >= fpmods[i].lo && pc < fpmods[i].hi)
            return i;
    return -1;
}

/* The frames from the hand-over frame (pc, stack pointer after the call,
 * its rbp) outward, appended to out: from the per-thread cache when every
 * return-address slot still holds what it held, else from libunwind. */
static int tail_append(uint64_t pc, uint64_t cfa, uint64_t rbp, uint64_t *out, int n, int depth,
                       int *truncated)
{
    tail_t *t = NULL;
    for (int i = 0; i < TAILS; i++) {
        tail_t *e = &utp->tails[i];
        if (e->n && e->pc == pc && e->cfa == cfa) {
            uint32_t j = 1;
            /* The slots lie between cfa and the stack top: mapped, ours. */
            while (j < e->n && *(const uint64_t *)(uintptr_t)e->slot[j] == e->pcs[j])
                j++;
            if (j == e->n) {
                t = e;
                break;
            }
            e->n = 0; /* stale */
        }
    }
    if (!t) {
        t = &utp->tails[utp->next++ % TAILS];
        t->n = 0;
        unw_context_t uc;
        if (unw_getcontext(&uc) != 0)
            return -1;
        /* Inside the call instruction, so the right unwind entry is used. */
        uc.uc_mcontext.gregs[REG_RIP] = (greg_t)(pc - 1);
        uc.uc_mcontext.gregs[REG_RSP] = (greg_t)cfa;
        uc.uc_mcontext.gregs[REG_RBP] = (greg_t)rbp;
        unw_cursor_t cur;
        if (unw_init_local(&cur, &uc) < 0)
            return -1;
        t->pc = pc;
        t->cfa = cfa;
        t->pcs[0] = pc;
        t->slot[0] = 0;
        uint32_t k = 1;
        t->cut = 0;
        while (unw_step(&cur) > 0) {
            if (k == TAIL_MAX) {
                t->cut = 1;
                break;
            }
            unw_word_t ip = 0, sp = 0;
            unw_get_reg(&cur, UNW_REG_IP, &ip);
            unw_get_reg(&cur, UNW_REG_SP, &sp);
            if (!ip)
                break;
            t->pcs[k] = ip;
            t->slot[k] = sp - 8; /* the return address sits just below the caller's sp */
            k++;
        }
        t->n = k;
    }
    for (uint32_t j = 1; j < t->n; j++) {
        if (unwind_is_hidden(t->pcs[j]))
            continue; /* the agent's main wrapper */
        if (n == depth) {
            *truncated = 1;
            return n;
        }
        out[n++] = t->pcs[j];
    }
    if (t->cut)
        *truncated = 1;
    return n;
}

/* Walks frame records. Returns the frame count, or -1 when the walk is not
 * safe (the caller falls back to libunwind). *verify is set to the module
 * whose trust this walk assumed without having earned it yet (-1: none).
 * Per frame: two loads, one bounds check and, while the return addresses
 * stay inside the module of the previous one, one range check. */
static int fp_capture(uint64_t *out, int depth, int *truncated, int *verify)
{
    uint64_t hi = stack_top();
    *verify = -1;
    *truncated = 0;
    if (!hi)
        return -1;
    const uint64_t *fp = (const uint64_t *)__builtin_frame_address(0);
    uint64_t f = (uint64_t)(uintptr_t)fp, ra, nfp;
    /* The agent's own frames first (built with frame pointers). */
    for (int steps = 0;; steps++) {
        if ((f & 7) || f + 16 > hi || steps == WALK_MAX)
            return -1;
        ra = fp[1];
        nfp = fp[0];
        if (!unwind_is_self(ra))
            break;
        if (nfp <= f)
            return -1;
        fp = (const uint64_t *)(uintptr_t)nfp;
        f = nfp;
    }
    uint64_t mlo = 0, mhi = 0; /* the module of the last frame: [mlo, mhi), empty */
    int mst = FPM_REFUSED, mi = -1;
    int n = 0;
    for (;;) {
        if (n == depth) {
            *truncated = 1;
            return n;
        }
        if (ra - mlo >= mhi - mlo) {
            mi = fpmod_of(ra);
            if (mi >= 0) {
                mlo = fpmods[mi].lo;
                mhi = fpmods[mi].hi;
                mst = atomic_load_explicit(&fpmods[mi].state, memory_order_relaxed);
                if (mst == FPM_VERIFY)
                    *verify = mi;
            } else {
                mlo = mhi = 0;
                mst = FPM_REFUSED;
            }
        }
        out[n++] = ra;
        if (mst == FPM_REFUSED) {
            /* The frame owning ra may not keep rbp: libunwind from here on.
             * Only worth it after some trusted frames (else unw_backtrace's
             * own fast path is better). */
            if (n == 1)
                return -1;
            if (unwind_is_hidden(ra))
                n--; /* the agent's main wrapper (agent.c): not the app's frame */
            return tail_append(ra, f + 16, nfp, out, n, depth, truncated);
        }
        if (nfp <= f || (nfp & 7) || nfp + 16 > hi) {
            /* No further record (the outermost frame): libunwind decides. */
            return tail_append(ra, f + 16, nfp, out, n, depth, truncated);
        }
        if (n >= WALK_MAX)
            return -1;
        fp = (const uint64_t *)(uintptr_t)nfp;
        f = nfp;
        ra = fp[1];
        nfp = fp[0];
    }
}

int unwind_capture(uint64_t *out, int depth, int *truncated)
{
    if (mode != UNWIND_FP)
        return dwarf_capture(out, depth, truncated);
    int verify;
    int n = fp_capture(out, depth, truncated, &verify);
    if (n < 0)
        return dwarf_capture(out, depth, truncated);
    if (verify < 0)
        return n;
    /* Earning trust: this walk must equal libunwind's, frame for frame. */
    uint64_t ref[CFG_DEPTH_MAX];
    int rtrunc = 0;
    int rn = dwarf_capture(ref, depth, &rtrunc);
    fpmod_t *m = &fpmods[verify];
    if (rn == n && memcmp(ref, out, (size_t)n * sizeof *out) == 0) {
        if (atomic_fetch_add(&m->checks, 1) + 1 >= UNWIND_FP_CHECKS) {
            int expect = FPM_VERIFY;
            if (atomic_compare_exchange_strong(&m->state, &expect, FPM_TRUSTED))
                log_msg("walking frame pointers in %s (%d walks matched libunwind)", m->name,
                        UNWIND_FP_CHECKS);
        }
        return n;
    }
    int expect = FPM_VERIFY;
    if (atomic_compare_exchange_strong(&m->state, &expect, FPM_REFUSED))
        log_msg("not walking frame pointers in %s: a walk differed from libunwind "
                "(built without frame pointers?)", m->name);
    memcpy(out, ref, (size_t)rn * sizeof *out);
    *truncated = rtrunc;
    return rn;
}

/* ---------------------------------------------------------------- stack cache support */

int unwind_on_stack(uint64_t addr)
{
    uint64_t hi = stack_top();
    return hi && addr >= utp->stack_lo && addr + 8 <= hi && !(addr & 7);
}

int unwind_find_slots(const uint64_t *pcs, int n, uint64_t slot0, uint32_t *off)
{
    uint64_t hi = stack_top();
    if (!hi || slot0 < utp->stack_lo || slot0 + 8 > hi || n < 1 ||
        *(const uint64_t *)(uintptr_t)slot0 != pcs[0])
        return 0;
    off[0] = 0;
    uint64_t a = slot0 + 8, budget = UNWIND_SCAN_MAX;
    for (int k = 1; k < n; k++) {
        /* The return address into frame k sits above frame k-1's: the first
         * word above the previous slot that holds it. */
        while (a + 8 <= hi && budget && *(const uint64_t *)(uintptr_t)a != pcs[k]) {
            a += 8;
            budget--;
        }
        if (a + 8 > hi || !budget || a - slot0 > UINT32_MAX)
            return 0;
        off[k] = (uint32_t)(a - slot0);
        a += 8;
    }
    if (a - 8 > utp->frames_hi)
        utp->frames_hi = a - 8;
    return 1;
}

int unwind_state_frames(const void *uwt, uint64_t *lo, uint64_t *frames_hi, uint64_t *hi)
{
    const utls_t *u = uwt;
    if (!u || !u->stack_hi || !u->frames_hi || u->frames_hi < u->stack_lo ||
        u->frames_hi >= u->stack_hi)
        return 0;
    *lo = u->stack_lo;
    *frames_hi = u->frames_hi + 8;
    *hi = u->stack_hi;
    return 1;
}
