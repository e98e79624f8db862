/* One short-lived process: a few hundred mallocs of small sizes, about half
 * freed before exit (the rest is released by exit, as short tools do).
 * bench/workloads/driver.c runs it many times in sequence (-n COUNT).
 *
 *   short [MALLOCS]   (default 300) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 300;
    if (n <= 0 || n > 100000) {
        fprintf(stderr, "usage: %s [MALLOCS]\n", argv[0]);
        return 2;
    }
    void **v = calloc((size_t)n, sizeof *v);
    if (!v)
        return 1;
    uint32_t s = 12345;
    unsigned sum = 0;
    for (int i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        size_t size = 8 + (s >> 8) % 1024;
        v[i] = malloc(size);
        if (!v[i])
            return 1;
        memset(v[i], i & 0xff, size);
        sum += ((unsigned char *)v[i])[size - 1];
        if (i % 2 == 1) {
            free(v[i - 1]);
            v[i - 1] = NULL;
        }
    }
    free(v);
    return sum == 0xffffffffu; /* never: keeps the writes */
}
