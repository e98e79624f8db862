/* A process with N live blocks for the reachability scan benchmark.
 *
 * N blocks of 16..256 bytes (deterministic sizes), their addresses in one
 * array the global `table` points to (so every one is reachable), each
 * holding a pointer to another block of the table (so marking follows real
 * chains); LOST more blocks whose pointers are dropped. Prints "ready" once
 * built, then blocks in read() until stdin closes. With "wait", it waits
 * for a line on stdin first (to be attached to). usage: live N LOST [wait] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void **table; /* extern: the compiler must keep it in memory, a root */
static void *volatile sink; /* keeps the compiler from removing a dropped malloc */

__attribute__((noinline)) static void *make_block(size_t n)
{
    return malloc(n);
}

__attribute__((noinline)) static void make_lost(size_t n)
{
    char *p = malloc(n);
    memset(p, 0x5a, n);
    sink = p;
    sink = NULL;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    size_t lost = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000;
    if (argc > 3 && !strcmp(argv[3], "wait")) {
        /* Attached later (run.py --attach): build once told to. */
        printf("waiting %d\n", (int)getpid());
        fflush(stdout);
        char go[64];
        if (!fgets(go, sizeof go, stdin))
            return 1;
    }
    uint64_t x = 88172645463325252ull;
    table = malloc(n * sizeof *table);
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t sz = 16 + (size_t)(x % 241);
        uint64_t *b = make_block(sz);
        memset(b, 0, sz);
        b[0] = i ? (uint64_t)(uintptr_t)table[x % i] : 0;
        table[i] = b;
    }
    for (size_t i = 0; i < lost; i++)
        make_lost(64);
    volatile char scrub[16384];
    memset((char *)scrub, 0, sizeof scrub);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    return 0;
}
