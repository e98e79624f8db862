/* Signal names for the command line: "USR1", "SIGUSR1" or a number. */
#include "signame.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    int sig;
} sig_names[] = {
    { "HUP", SIGHUP },   { "INT", SIGINT },     { "QUIT", SIGQUIT }, { "ILL", SIGILL },
    { "TRAP", SIGTRAP }, { "ABRT", SIGABRT },   { "BUS", SIGBUS },   { "FPE", SIGFPE },
    { "USR1", SIGUSR1 }, { "SEGV", SIGSEGV },   { "USR2", SIGUSR2 }, { "PIPE", SIGPIPE },
    { "ALRM", SIGALRM }, { "TERM", SIGTERM },   { "CHLD", SIGCHLD }, { "CONT", SIGCONT },
    { "TSTP", SIGTSTP }, { "TTIN", SIGTTIN },   { "TTOU", SIGTTOU }, { "URG", SIGURG },
    { "XCPU", SIGXCPU }, { "XFSZ", SIGXFSZ },   { "VTALRM", SIGVTALRM }, { "PROF", SIGPROF },
    { "WINCH", SIGWINCH }, { "IO", SIGIO },     { "PWR", SIGPWR },   { "SYS", SIGSYS },
};

int signame_parse(const char *s)
{
    if (!s || !*s)
        return -EINVAL;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end == '\0' && s[0] >= '0' && s[0] <= '9') {
        if (v < 1 || v > 64 || v == SIGKILL || v == SIGSTOP)
            return -EINVAL;
        return (int)v;
    }
    if (*end == '\0')
        return -EINVAL; /* " 10", "+10", "-3" */
    if (strncasecmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < sizeof sig_names / sizeof sig_names[0]; i++)
        if (strcasecmp(s, sig_names[i].name) == 0)
            return sig_names[i].sig;
    return -EINVAL;
}

const char *signame_name(int sig, char *buf, size_t len)
{
    if (sig == 0) {
        buf[0] = '\0';
        return buf;
    }
    for (size_t i = 0; i < sizeof sig_names / sizeof sig_names[0]; i++)
        if (sig_names[i].sig == sig) {
            snprintf(buf, len, "SIG%s", sig_names[i].name);
            return buf;
        }
    snprintf(buf, len, "%d", sig);
    return buf;
}

