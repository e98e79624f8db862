/* A process with a large heap for the scan's memory bound (test_reach):
 * N small live blocks of 16..256 bytes, each pointing at an earlier one,
 * all in a table a global points to, plus BIG MiB in 8 MiB blocks filled
 * with a pattern (their pages exist, so the scan copies them). Prints
 * "ready PID N", then waits for stdin to close. usage: bigheap N BIG */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void **table; /* extern: kept in memory, a root */
void **bigs;

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000;
    size_t big = argc > 2 ? strtoull(argv[2], NULL, 10) : 64;
    uint64_t x = 88172645463325252ull;
    table = malloc((n ? n : 1) * sizeof *table);
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t sz = 16 + (size_t)(x % 241);
        uint64_t *b = malloc(sz);
        memset(b, 0, sz);
        b[0] = i ? (uint64_t)(uintptr_t)table[x % i] : 0;
        table[i] = b;
    }
    size_t nb = big / 8;
    bigs = malloc((nb ? nb : 1) * sizeof *bigs);
    for (size_t i = 0; i < nb; i++) {
        bigs[i] = malloc(8u << 20);
        memset(bigs[i], 0x11, 8u << 20);
    }
    printf("ready %d %zu\n", (int)getpid(), n + nb + 2);
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    return 0;
}
