/* Calling a function inside another process's stopped thread (ptrace, x86_64).
 *
 * The call borrows the thread: its registers become a call frame on its own
 * stack, below the 128-byte red zone, with a return address of 0. When the
 * function returns, the jump to 0 faults; the SIGSEGV stops the thread for
 * us and is never delivered. Then everything is put back: stack bytes,
 * vector registers (the interrupted code may be in the middle of SSE/AVX
 * work), general registers. orig_rax is -1 during the call so that the
 * kernel's system call restart does not rewrite our rip; the saved
 * registers keep the interrupted call's number and -ERESTART* code, so a
 * thread stopped in read() or nanosleep() goes back into it when released. */
#include "inject.h"

#include <elf.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "collector/common/tracee.h"

#define RED_ZONE 128u
#define XSTATE_MAX (64u << 10)

#if defined(__x86_64__)

static int mem_write(pid_t tid, uint64_t addr, const void *buf, size_t len)
{
    struct iovec l = { (void *)buf, len }, r = { (void *)(uintptr_t)addr, len };
    ssize_t w = process_vm_writev(tid, &l, 1, &r, 1, 0);
    if (w == (ssize_t)len)
        return 0;
    /* Word by word through ptrace (works where process_vm_writev does not). */
    size_t off = 0;
    while (off < len) {
        uint64_t word = 0;
        size_t n = len - off < 8 ? len - off : 8;
        if (n < 8) {
            errno = 0;
            long v = ptrace(PTRACE_PEEKDATA, tid, (void *)(uintptr_t)(addr + off), 0);
            if (errno)
                return -errno;
            word = (uint64_t)v;
        }
        memcpy(&word, (const char *)buf + off, n);
        if (ptrace(PTRACE_POKEDATA, tid, (void *)(uintptr_t)(addr + off), (void *)word) != 0)
            return -errno;
        off += n;
    }
    return 0;
}

static int mem_read(pid_t tid, uint64_t addr, void *buf, size_t len)
{
    struct iovec l = { buf, len }, r = { (void *)(uintptr_t)addr, len };
    ssize_t got = process_vm_readv(tid, &l, 1, &r, 1, 0);
    if (got == (ssize_t)len)
        return 0;
    size_t off = 0;
    while (off < len) {
        errno = 0;
        long v = ptrace(PTRACE_PEEKDATA, tid, (void *)(uintptr_t)(addr + off), 0);
        if (errno)
            return -errno;
        size_t n = len - off < 8 ? len - off : 8;
        memcpy((char *)buf + off, &v, n);
        off += n;
    }
    return 0;
}

int inj_begin(inj_t *j, pid_t tid, const struct user_regs_struct *regs, char *err, size_t errlen)
{
    memset(j, 0, sizeof *j);
    j->tid = tid;
    j->saved = *regs;
    j->hi = (regs->rsp - RED_ZONE) & ~(uint64_t)15;
    j->lo = j->hi - INJ_SCRATCH;
    j->next = j->hi;
    j->orig = malloc(INJ_SCRATCH);
    j->xstate = malloc(XSTATE_MAX);
    if (!j->orig || !j->xstate) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    int rc = mem_read(tid, j->lo, j->orig, INJ_SCRATCH);
    if (rc < 0) {
        snprintf(err, errlen, "cannot read the stack of thread %d (%s)", (int)tid,
                 strerror(-rc));
        goto fail;
    }
    struct iovec iov = { j->xstate, XSTATE_MAX };
    if (ptrace(PTRACE_GETREGSET, tid, (void *)NT_X86_XSTATE, &iov) == 0) {
        j->xlen = iov.iov_len;
        j->have_xstate = 1;
    } else if (ptrace(PTRACE_GETFPREGS, tid, 0, j->xstate) == 0) {
        j->xlen = sizeof(struct user_fpregs_struct);
        j->have_xstate = 2;
    } else {
        snprintf(err, errlen, "cannot read the vector registers of thread %d (%s)", (int)tid,
                 strerror(errno));
        goto fail;
    }
    return 0;
fail:
    free(j->orig);
    free(j->xstate);
    j->orig = j->xstate = NULL;
    return -EIO;
}

int inj_reserve(inj_t *j, size_t len, uint64_t *addr)
{
    size_t need = (len + 15) & ~(size_t)15;
    if (need > j->next - j->lo || j->next - need < j->lo + 256)
        return -ENOSPC;
    j->next -= need;
    *addr = j->next;
    void *z = calloc(1, need);
    if (!z)
        return -ENOMEM;
    int rc = mem_write(j->tid, j->next, z, need);
    free(z);
    return rc;
}

int inj_put(inj_t *j, const void *data, size_t len, uint64_t *addr)
{
    int rc = inj_reserve(j, len, addr);
    return rc < 0 ? rc : mem_write(j->tid, *addr, data, len);
}

int inj_get(inj_t *j, uint64_t addr, void *buf, size_t len)
{
    return mem_read(j->tid, addr, buf, len);
}

int inj_call(inj_t *j, uint64_t fn, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t *ret,
             int timeout_ms, char *err, size_t errlen)
{
    struct user_regs_struct r = j->saved;
    /* The scratch data sits above; the frame goes below it. At the call,
     * rsp + 8 is 16-byte aligned (the ABI's state right after a call). */
    uint64_t sp = (j->next - 64) & ~(uint64_t)15;
    sp -= 8;
    uint64_t zero = 0;
    int rc = mem_write(j->tid, sp, &zero, sizeof zero);
    if (rc < 0) {
        snprintf(err, errlen, "cannot write the call frame (%s)", strerror(-rc));
        return rc;
    }
    r.rsp = sp;
    r.rip = fn;
    r.rdi = a0;
    r.rsi = a1;
    r.rdx = a2;
    r.rax = 0;
    r.orig_rax = (unsigned long long)-1; /* not in a system call: no restart */
    if (ptrace(PTRACE_SETREGS, j->tid, 0, &r) != 0 || ptrace(PTRACE_CONT, j->tid, 0, 0) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot start the call in thread %d (%s)", (int)j->tid,
                 strerror(-rc));
        return rc;
    }
    uint64_t until = trc_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (unsigned i = 0;; i++) {
        int st;
        pid_t w = waitpid(j->tid, &st, __WALL | WNOHANG);
        if (w < 0 && errno != EINTR) {
            snprintf(err, errlen, "lost thread %d (%s)", (int)j->tid, strerror(errno));
            return -ESRCH;
        }
        if (w == j->tid) {
            if (WIFEXITED(st) || WIFSIGNALED(st)) {
                snprintf(err, errlen, "the process ended during the call (%s %d)",
                         WIFEXITED(st) ? "exit status" : "signal",
                         WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
                return -ESRCH;
            }
            if (WIFSTOPPED(st)) {
                int sig = WSTOPSIG(st);
                if ((st >> 16) == PTRACE_EVENT_STOP) {
                    ptrace(PTRACE_CONT, j->tid, 0, 0); /* a group stop: go on */
                    continue;
                }
                if (sig == SIGSEGV) {
                    struct user_regs_struct now;
                    if (ptrace(PTRACE_GETREGS, j->tid, 0, &now) != 0) {
                        snprintf(err, errlen, "cannot read registers (%s)", strerror(errno));
                        return -EIO;
                    }
                    if (now.rip == 0) {
                        *ret = now.rax;
                        return 0;
                    }
                    snprintf(err, errlen, "the call crashed in the target (SIGSEGV at rip "
                                          "0x%llx); the process may be unstable", now.rip);
                    return -EFAULT;
                }
                /* Anything else is the process's: deliver it. */
                ptrace(PTRACE_CONT, j->tid, 0, (void *)(uintptr_t)sig);
                continue;
            }
        }
        if (trc_now_ns() >= until) {
            snprintf(err, errlen, "the call did not return within %d ms (a lock held by a "
                                  "stopped thread?)", timeout_ms);
            return -ETIMEDOUT;
        }
        struct timespec ts = { 0, i < 200 ? 50000 : 1000000 };
        nanosleep(&ts, NULL);
    }
}

int inj_end(inj_t *j)
{
    int rc = 0;
    if (j->orig && mem_write(j->tid, j->lo, j->orig, INJ_SCRATCH) < 0)
        rc = -EIO;
    if (j->have_xstate == 1) {
        struct iovec iov = { j->xstate, j->xlen };
        if (ptrace(PTRACE_SETREGSET, j->tid, (void *)NT_X86_XSTATE, &iov) != 0)
            rc = -errno;
    } else if (j->have_xstate == 2) {
        if (ptrace(PTRACE_SETFPREGS, j->tid, 0, j->xstate) != 0)
            rc = -errno;
    }
    if (ptrace(PTRACE_SETREGS, j->tid, 0, &j->saved) != 0)
        rc = -errno;
    free(j->orig);
    free(j->xstate);
    j->orig = j->xstate = NULL;
    return rc;
}

#else /* !__x86_64__ */

int inj_begin(inj_t *j, pid_t tid, const struct user_regs_struct *regs, char *err, size_t errlen)
{
    (void)j, (void)tid, (void)regs;
    snprintf(err, errlen, "attaching is implemented for x86_64 only");
    return -ENOSYS;
}
int inj_reserve(inj_t *j, size_t len, uint64_t *addr) { (void)j, (void)len, (void)addr; return -ENOSYS; }
int inj_put(inj_t *j, const void *d, size_t len, uint64_t *addr) { (void)j, (void)d, (void)len, (void)addr; return -ENOSYS; }
int inj_get(inj_t *j, uint64_t a, void *b, size_t len) { (void)j, (void)a, (void)b, (void)len; return -ENOSYS; }
int inj_call(inj_t *j, uint64_t fn, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t *ret,
             int timeout_ms, char *err, size_t errlen)
{
    (void)j, (void)fn, (void)a0, (void)a1, (void)a2, (void)ret, (void)timeout_ms;
    snprintf(err, errlen, "attaching is implemented for x86_64 only");
    return -ENOSYS;
}
int inj_end(inj_t *j) { (void)j; return -ENOSYS; }

#endif
