/* Built without PIE: its initialized data holds a table of words that read
 * as addresses all over where the kernel puts a non-PIE program's heap
 * (every 32 KiB from 0x400000 for 1 GiB, the kernel's range for it), as CPython's deep-frozen byte
 * code in a non-PIE python3.11 does by chance. The program never stores to
 * it. It loses N blocks of 64 KiB (each holds an address of the table),
 * prints "lost N covered C" (C: how many of them a table word points
 * into), and ends with status 0 at EOF on stdin.
 *
 *   pristine N                                                (@LEAK lost)
 *
 * "pristine N PATH": instead, N blocks whose only pointers are in a data
 * file: written to PATH, which is then mapped back privately and writable
 * (and kept): from the file, never stored through the mapping, yet real
 * pointers. They are reachable; prints "kept N".                (@LEAK filed) */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "scrub.h"

#define BASE 0x400000ull
#define STEP 32768u
#define V(i) (BASE + (uint64_t)(i) * STEP)
#define R4(b) V(b), V((b) + 1), V((b) + 2), V((b) + 3)
#define R16(b) R4(b), R4((b) + 4), R4((b) + 8), R4((b) + 12)
#define R64(b) R16(b), R16((b) + 16), R16((b) + 32), R16((b) + 48)
#define R256(b) R64(b), R64((b) + 64), R64((b) + 128), R64((b) + 192)
#define R1K(b) R256(b), R256((b) + 256), R256((b) + 512), R256((b) + 768)
#define R4K(b) R1K(b), R1K((b) + 1024), R1K((b) + 2048), R1K((b) + 3072)
#define R16K(b) R4K(b), R4K((b) + 4096), R4K((b) + 8192), R4K((b) + 12288)
#define NWORDS 32768u

__attribute__((used)) static uint64_t table[NWORDS] = { R16K(0), R16K(16384) };

static int covered(uintptr_t p)
{
    uint64_t first = ((uint64_t)p + STEP - 1) & ~(uint64_t)(STEP - 1); /* in [p, p + 2 STEP) */
    return first >= BASE && (first - BASE) / STEP < NWORDS &&
           *(volatile uint64_t *)&table[(first - BASE) / STEP] == first;
}

__attribute__((noinline)) static int lose_one(void)
{
    char *p = malloc(2 * STEP); /* @LEAK lost */
    if (p)
        p[0] = 1;
    return p && covered((uintptr_t)p);
}

static void *mapped;

__attribute__((noinline)) static int file_them(long n, const char *path)
{
    uint64_t *v = calloc((size_t)n, sizeof *v);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (!v || fd < 0)
        return -1;
    for (long i = 0; i < n; i++)
        v[i] = (uint64_t)(uintptr_t)malloc(4096); /* @LEAK filed */
    size_t len = (size_t)n * sizeof *v;
    if (write(fd, v, len) != (ssize_t)len)
        return -1;
    free(v);
    mapped = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    return mapped == MAP_FAILED ? -1 : 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 5, c = 0;
    if (argc > 2) {
        if (file_them(n, argv[2]) < 0)
            return 1;
        scrub();
        printf("kept %ld\n", n);
        fflush(stdout);
        while (getchar() != EOF)
            ;
        return 0;
    }
    for (long i = 0; i < n; i++)
        c += lose_one();
    scrub();
    printf("lost %ld covered %ld\n", n, c);
    fflush(stdout);
    while (getchar() != EOF)
        ;
    return 0;
}
