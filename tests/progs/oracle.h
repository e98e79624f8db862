/* The oracle programs' common end (tests/integration/test_oracle.py): at
 * ready(), the heap is what both tools judge. Under valgrind a leak check
 * runs right there (a client request; nothing outside valgrind); under the
 * agent the test scans the process while it waits. Stack pointers below
 * the caller and the caller-saved registers are scrubbed first, so no dead
 * copy of a dropped pointer stays where either tool looks. */
#ifndef STACKWATCH_TESTS_ORACLE_H
#define STACKWATCH_TESTS_ORACLE_H

#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <valgrind/memcheck.h>

#include "scrub.h"


/* Leak check (valgrind), "ready PID", then waits for EOF on stdin. */
__attribute__((noinline)) static void ready(void)
{
    scrub();
    VALGRIND_DO_LEAK_CHECK;
    /* Zeroed: a live frame's uninitialized bytes would hold what deeper
     * frames left there (the agent's among them), stale words that any
     * conservative scan, LeakSanitizer's too, reads as pointers. */
    char line[32] = { 0 };
    int n = snprintf(line, sizeof line, "ready %d\n", (int)getpid());
    if (write(1, line, (size_t)n) != n)
        return;
    char b[64] = { 0 };
    while (read(0, b, sizeof b) > 0)
        ;
}

#endif
