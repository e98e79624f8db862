/* collectord's log: timestamped lines to stderr (the log file when daemonized), throttled where they may flood. */
#ifndef STACKWATCH_COLLECTOR_LOG_H
#define STACKWATCH_COLLECTOR_LOG_H

#include <stdint.h>

/* A log line that may repeat fast (a flood of refused connections): one
 * line, then at most one per LOG_EVERY_NS with how many were held back. */
typedef struct log_throttle_s {
    uint64_t last_ns;         /* real CLOCK_MONOTONIC of the last line (0: none yet) */
    uint64_t held;            /* occurrences since, not logged */
} log_throttle_t;

#define LOG_EVERY_NS (10ull * 1000000000)

/* Log line with a timestamp to stderr (the log file when daemonized). */
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* log_msg through a throttle: the line is logged when none was in the last
 * LOG_EVERY_NS (with ", N more since" when some were held back), else
 * counted. log_flush logs what a quiet spell left held back. */
void log_throttled(log_throttle_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_flush(log_throttle_t *t, const char *what);

#endif
