/* Per-thread credentials the program sets on one thread, mirrored on the flusher thread.
 *
 * Capabilities and the keep-capabilities flag belong to a thread, but glibc
 * applies set*id() to every thread of the process (its SIGSETXID broadcast)
 * and aborts it when one thread fails. A program that keeps its capabilities
 * across setuid on its own thread only (setpriv, libcap-ng's
 * capng_change_id: prctl(PR_SET_KEEPCAPS), setresuid, capset, setresgid)
 * would have the agent's flusher thread, which did none of that, fail the
 * setresgid: the program aborted. So the agent's capset and
 * prctl(PR_SET_KEEPCAPS) pass the same call on to the flusher, which makes
 * it on itself before the caller returns (bounded wait). */
#include "creds.h"

#include <dlfcn.h>
#include <errno.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "emit.h"
#include "ring.h"
#include "tstate.h"

#define EXPORT __attribute__((visibility("default")))
/* The caller waits this long at most. Giving up means the program's next
 * set*id fails on the flusher and glibc aborts it, so the bound is only for
 * a flusher that cannot run at all; the flusher applies requests at every
 * step of its loop and while a send stalls (1 s was too short for its first
 * round, connect and module map, on a loaded machine: setpriv aborted once
 * in a make check under a CPU hog). */
#define MIRROR_WAIT_NS (10000ull * 1000000)

enum { OP_NONE, OP_KEEPCAPS, OP_CAPSET };

static struct {
    _Atomic uint32_t req, done;            /* request number and the last one applied */
    int op;
    unsigned long arg;
    struct __user_cap_header_struct hdr;
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
} mirror;

static _Atomic int flusher_tid;

void creds_set_flusher(int tid)
{
    atomic_store(&flusher_tid, tid);
}

void creds_apply_pending(void)
{
    uint32_t req = atomic_load_explicit(&mirror.req, memory_order_acquire);
    if (req == atomic_load_explicit(&mirror.done, memory_order_relaxed))
        return;
    if (mirror.op == OP_KEEPCAPS) {
        syscall(SYS_prctl, PR_SET_KEEPCAPS, mirror.arg, 0, 0, 0);
    } else if (mirror.op == OP_CAPSET) {
        struct __user_cap_header_struct h = mirror.hdr;
        h.pid = 0; /* this thread */
        syscall(SYS_capset, &h, mirror.data);
    }
    /* release: the caller sees the call made. */
    atomic_store_explicit(&mirror.done, req, memory_order_release);
}

/* Runs the filled-in mirror request on the flusher and waits for it. The
 * caller is not the flusher; calls are serialized by the program (they are
 * made on one thread). */
static void mirror_now(void)
{
    uint32_t req = atomic_load(&mirror.req) + 1;
    atomic_store_explicit(&mirror.req, req, memory_order_release);
    flush_kick();
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0; atomic_load_explicit(&mirror.done, memory_order_acquire) != req; i++) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((uint64_t)(t.tv_sec - t0.tv_sec) * 1000000000ull + (uint64_t)t.tv_nsec -
                (uint64_t)t0.tv_nsec > MIRROR_WAIT_NS)
            return; /* a stalled flusher: the program's own call stands */
        struct timespec nap = { 0, i < 100 ? 20000 : 1000000 };
        nanosleep(&nap, NULL);
    }
}

/* A flusher that exists but has not run yet (CREDS_FLUSHER_STARTING; a
 * loaded machine can delay a new thread past the program's first calls)
 * needs the call as much as a running one: it has not made it either. */
static int mirror_wanted(void)
{
    int f = atomic_load(&flusher_tid);
    return f && f != (int)syscall(SYS_gettid);
}

/* A thread in seccomp strict mode may make four system calls (read, write,
 * _exit, sigreturn); any other one kills it. The agent's slow paths make
 * others (mmap for a ring, nanosleep waiting for space, the fork child's
 * connect), so a thread entering strict mode is left untraced from then
 * on: its guard stays set for good (every hook passes straight through,
 * count nothing), and its ring is orphaned (the flusher unmaps it once the
 * thread is gone, which may be through a bare SYS_exit, without any
 * thread-exit hook). Set before the call: no agent code runs on the thread
 * between the kernel's switch and the return here. The requests come
 * through prctl(PR_SET_SECCOMP) (below), or syscall(2) with SYS_prctl or
 * SYS_seccomp (hook.c); a program making the raw instruction itself is not
 * seen. */
int creds_strict_begin(void)
{
    tstate_t *t = &tstate;
    int g = t->guard;
    t->guard = 1;
    return g;
}

void creds_strict_end(int g, long rc)
{
    tstate_t *t = &tstate;
    if (rc != 0) {
        t->guard = g; /* refused: traced as before */
        return;
    }
    if (t->ring)
        atomic_store_explicit(&t->ring->state, RING_ORPHAN, memory_order_release);
}

/* The system call itself (x86-64), as glibc's syscall(2) makes it: no
 * lookup, usable before anything is resolved. */
long creds_raw_syscall6(long n, long a, long b, long c, long d, long e, long f)
{
    long rc;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(rc)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    if (rc < 0 && rc > -4096) {
        errno = (int)-rc;
        return -1;
    }
    return rc;
}

EXPORT int prctl(int option, ...)
{
    va_list ap;
    va_start(ap, option);
    unsigned long a2 = va_arg(ap, unsigned long), a3 = va_arg(ap, unsigned long);
    unsigned long a4 = va_arg(ap, unsigned long), a5 = va_arg(ap, unsigned long);
    va_end(ap);
    if (option == PR_SET_SECCOMP && a2 == SECCOMP_MODE_STRICT) {
        /* The thread goes untraced for good (hook.c). */
        int g = creds_strict_begin();
        long rc = creds_raw_syscall6(SYS_prctl, option, (long)a2, (long)a3, (long)a4, (long)a5, 0);
        creds_strict_end(g, rc);
        return (int)rc;
    }
    long rc = syscall(SYS_prctl, option, a2, a3, a4, a5);
    if (rc == 0 && option == PR_SET_KEEPCAPS && mirror_wanted()) {
        int e = errno;
        mirror.op = OP_KEEPCAPS;
        mirror.arg = a2;
        mirror_now();
        errno = e;
    }
    return (int)rc;
}

EXPORT int capset(cap_user_header_t hdr, const cap_user_data_t data)
{
    long rc = syscall(SYS_capset, hdr, data);
    if (rc == 0 && hdr && data && (hdr->pid == 0 || hdr->pid == (int)syscall(SYS_gettid)) &&
        hdr->version == _LINUX_CAPABILITY_VERSION_3 && mirror_wanted()) {
        int e = errno;
        mirror.op = OP_CAPSET;
        mirror.hdr = *hdr;
        memcpy(mirror.data, data, sizeof mirror.data);
        mirror_now();
        errno = e;
    }
    return (int)rc;
}
