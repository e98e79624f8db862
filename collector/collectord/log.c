/* collectord's log: timestamped lines to stderr (the log file when daemonized), throttled where they may flood. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

void log_msg(const char *fmt, ...)
{
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s collectord[%d]: %s\n", ts, (int)getpid(), msg);
    fflush(stderr);
}

static uint64_t real_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void log_throttled(log_throttle_t *t, const char *fmt, ...)
{
    uint64_t now = real_now();
    if (t->last_ns && now - t->last_ns < LOG_EVERY_NS) {
        t->held++;
        return;
    }
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (t->held)
        log_msg("%s (and %llu more times in the last %.0f s)", msg, (unsigned long long)t->held,
                (double)(now - t->last_ns) / 1e9);
    else
        log_msg("%s", msg);
    t->last_ns = now;
    t->held = 0;
}

void log_flush(log_throttle_t *t, const char *what)
{
    uint64_t now = real_now();
    if (!t->held || now - t->last_ns < LOG_EVERY_NS)
        return;
    log_msg("%s %llu more times in the last %.0f s", what, (unsigned long long)t->held,
            (double)(now - t->last_ns) / 1e9);
    t->last_ns = now;
    t->held = 0;
}
