/* Preloaded into stackctl by test_attach (never into a traced program):
 * the first PTRACE_SEIZE stops stackctl (SIGSTOP) before it is made, so the
 * test acts between stackctl's questions to collectord and its first touch
 * of the target (there: stops collectord) and lets it go on with SIGCONT.
 * Every other ptrace call goes straight through. */
#include <dlfcn.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/ptrace.h>
#include <sys/types.h>

long ptrace(enum __ptrace_request req, ...)
{
    static long (*next)(enum __ptrace_request, pid_t, void *, void *);
    static int stopped;
    va_list ap;
    va_start(ap, req);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);
    if (!next)
        next = (long (*)(enum __ptrace_request, pid_t, void *, void *))dlsym(RTLD_NEXT, "ptrace");
    if (req == PTRACE_SEIZE && !stopped) {
        stopped = 1;
        raise(SIGSTOP);
    }
    return next(req, pid, addr, data);
}
