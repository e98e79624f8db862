/* Sampling target: leaks many small blocks and a few large ones from marked
 * lines, churns a million short-lived blocks, prints "ready TOTAL_ALLOCS
 * TOTAL_FREES" (the calls it made) and waits for stdin EOF. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SMALL_N 200000
#define SMALL_SIZE 64
#define BIG_N 8
#define BIG_SIZE (1u << 20)
#define CHURN_N 1000000

static void *keep[SMALL_N + BIG_N];
static int nkeep;

__attribute__((noinline)) void leak_small(void)
{
    keep[nkeep++] = malloc(SMALL_SIZE); /* @LEAK small */
}

__attribute__((noinline)) void leak_big(void)
{
    void *p = malloc(BIG_SIZE); /* @LEAK big */
    memset(p, 1, 4096);
    keep[nkeep++] = p;
}

__attribute__((noinline)) void noise_churn(unsigned i)
{
    char *p = malloc(32 + (i * 2654435761u) % 480); /* @NOISE churn */
    p[0] = (char)i;
    free(p);
}

int main(void)
{
    for (int i = 0; i < SMALL_N; i++)
        leak_small();
    for (int i = 0; i < BIG_N; i++)
        leak_big();
    for (unsigned i = 0; i < CHURN_N; i++)
        noise_churn(i);
    printf("ready %d %d\n", SMALL_N + BIG_N + CHURN_N, CHURN_N);
    fflush(stdout);
    char b[64];
    while (read(0, b, sizeof b) > 0)
        ;
    return 0;
}
