/* Stopping every thread of a process with ptrace, reading their registers, letting them go.
 *
 * PTRACE_SEIZE + PTRACE_INTERRUPT, not PTRACE_ATTACH: no SIGSTOP is sent,
 * so the process's job-control state and its signal handlers never see
 * us, and a thread blocked in a system call is stopped in it (the kernel
 * restarts the call when the thread goes on). Threads are listed from
 * /proc/PID/task until a listing shows no thread we do not hold: a thread
 * already stopped cannot start another one. */
#include "tracee.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS_MAX 64

uint64_t trc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int trc_yama_scope(void)
{
    FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
    if (!f)
        return -1;
    int v = -1;
    if (fscanf(f, "%d", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

static int held(const trc_t *tr, pid_t tid)
{
    for (size_t i = 0; i < tr->n; i++)
        if (tr->t[i].tid == tid)
            return 1;
    return 0;
}

/* Waits for tid's stop (up to ms); fills its registers. */
static void wait_stop(trc_thread_t *t, int ms)
{
    uint64_t until = trc_now_ns() + (uint64_t)ms * 1000000u;
    for (unsigned i = 0;; i++) {
        int st;
        pid_t r = waitpid(t->tid, &st, __WALL | WNOHANG);
        if (r == t->tid) {
            if (WIFEXITED(st) || WIFSIGNALED(st)) {
                t->tid = 0; /* gone */
                return;
            }
            if (WIFSTOPPED(st)) {
                /* PTRACE_EVENT_STOP: our interrupt (or a group stop). A
                 * signal-delivery-stop is a stop too: the signal is kept
                 * and delivered when we let the thread go. */
                if ((st >> 16) != PTRACE_EVENT_STOP)
                    t->sig = WSTOPSIG(st);
                struct iovec iov = { &t->regs, sizeof t->regs };
                if (ptrace(PTRACE_GETREGSET, t->tid, (void *)NT_PRSTATUS, &iov) == 0)
                    t->stopped = 1;
                return;
            }
        } else if (r < 0 && errno != EINTR) {
            if (errno == ECHILD)
                t->tid = 0;
            return;
        }
        if (trc_now_ns() >= until)
            return;
        struct timespec ts = { 0, i < 100 ? 20000 : 1000000 };
        nanosleep(&ts, NULL);
    }
}

int trc_freeze(trc_t *tr, pid_t pid, pid_t skip, int wait_ms, char *err, size_t errlen)
{
    memset(tr, 0, sizeof *tr);
    tr->pid = pid;
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    int rc = 0;
    for (int round = 0; round < ROUNDS_MAX; round++) {
        DIR *d = opendir(dir);
        if (!d) {
            rc = errno == ENOENT ? -ESRCH : -errno;
            trc_explain(pid, -rc, err, errlen);
            goto fail;
        }
        size_t first_new = tr->n;
        struct dirent *de;
        while ((de = readdir(d))) {
            pid_t tid = (pid_t)atoi(de->d_name);
            if (tid <= 0 || tid == skip || held(tr, tid))
                continue;
            if (ptrace(PTRACE_SEIZE, tid, 0, 0) != 0) {
                int e = errno;
                if (e == ESRCH)
                    continue; /* exited since the listing */
                closedir(d);
                rc = -e;
                trc_explain(pid, e, err, errlen);
                goto fail;
            }
            if (!tr->stop_ns)
                tr->stop_ns = trc_now_ns();
            if (tr->n == tr->cap) {
                size_t nc = tr->cap ? tr->cap * 2 : 16;
                trc_thread_t *nt = realloc(tr->t, nc * sizeof *nt);
                if (!nt) {
                    ptrace(PTRACE_DETACH, tid, 0, 0);
                    closedir(d);
                    rc = -ENOMEM;
                    snprintf(err, errlen, "out of memory");
                    goto fail;
                }
                tr->t = nt;
                tr->cap = nc;
            }
            tr->t[tr->n++] = (trc_thread_t){ .tid = tid };
            ptrace(PTRACE_INTERRUPT, tid, 0, 0);
        }
        closedir(d);
        if (first_new == tr->n)
            break; /* every thread listed is held */
        for (size_t i = first_new; i < tr->n; i++)
            wait_stop(&tr->t[i], wait_ms);
    }
    /* Threads that exited while we held them. */
    size_t w = 0;
    for (size_t i = 0; i < tr->n; i++)
        if (tr->t[i].tid)
            tr->t[w++] = tr->t[i];
    tr->n = w;
    if (tr->n == 0) {
        snprintf(err, errlen, "pid %d has no thread left to stop (it exited?)", (int)pid);
        rc = -ESRCH;
        goto fail;
    }
    return 0;
fail:
    trc_release(tr);
    return rc;
}

void trc_release_except(trc_t *tr, pid_t keep)
{
    size_t w = 0;
    for (size_t i = 0; i < tr->n; i++) {
        trc_thread_t *t = &tr->t[i];
        if (t->tid == keep && keep) {
            tr->t[w++] = *t;
            continue;
        }
        if (t->tid)
            ptrace(PTRACE_DETACH, t->tid, 0, (void *)(uintptr_t)t->sig);
    }
    tr->n = w;
}

void trc_release(trc_t *tr)
{
    trc_release_except(tr, 0);
    free(tr->t);
    tr->t = NULL;
    tr->n = tr->cap = 0;
}

/* A field of /proc/PID/status ("TracerPid", "Uid"): its first number, -1. */
static long status_field(pid_t pid, const char *name)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    long v = -1;
    size_t n = strlen(name);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, name, n) && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

void trc_explain(pid_t pid, int err, char *buf, size_t len)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    if (err == ESRCH || stat(path, &st) != 0) {
        snprintf(buf, len, "no process %d", (int)pid);
        return;
    }
    if (err != EPERM && err != EACCES) {
        snprintf(buf, len, "ptrace of pid %d: %s", (int)pid, strerror(err));
        return;
    }
    long tracer = status_field(pid, "TracerPid");
    if (tracer > 0 && tracer != getpid()) {
        snprintf(buf, len, "pid %d is already traced by pid %ld (a debugger or strace?): "
                           "only one tracer at a time; detach that one first", (int)pid, tracer);
        return;
    }
    long uid = status_field(pid, "Uid");
    if (geteuid() != 0 && uid >= 0 && (uid_t)uid != geteuid()) {
        snprintf(buf, len, "pid %d runs as uid %ld and you are uid %u: run this as that user "
                           "or as root", (int)pid, uid, (unsigned)geteuid());
        return;
    }
    int scope = trc_yama_scope();
    if (scope == 3) {
        snprintf(buf, len, "kernel.yama.ptrace_scope is 3: ptrace is disabled on this system "
                           "until the next reboot");
        return;
    }
    if (scope == 2) {
        snprintf(buf, len, "kernel.yama.ptrace_scope is 2: only root (CAP_SYS_PTRACE) may "
                           "ptrace; run this as root");
        return;
    }
    /* A process that is not dumpable (set-uid, or PR_SET_DUMPABLE 0) has its
     * /proc files owned by root. */
    snprintf(path, sizeof path, "/proc/%d/mem", (int)pid);
    if (geteuid() != 0 && stat(path, &st) == 0 && st.st_uid == 0 && uid != 0) {
        snprintf(buf, len, "pid %d is not dumpable (a set-uid/set-gid program, or it called "
                           "prctl(PR_SET_DUMPABLE, 0)): only root may ptrace it", (int)pid);
        return;
    }
    if (scope == 1) {
        snprintf(buf, len, "kernel.yama.ptrace_scope is 1: only an ancestor of pid %d (or a "
                           "process with CAP_SYS_PTRACE) may ptrace it; run this as root, or "
                           "let the program allow it (prctl(PR_SET_PTRACER, ...)), or set "
                           "kernel.yama.ptrace_scope=0", (int)pid);
        return;
    }
    snprintf(buf, len, "ptrace of pid %d is not permitted (%s): in a container without "
                       "CAP_SYS_PTRACE, or under a seccomp filter?", (int)pid, strerror(err));
}
