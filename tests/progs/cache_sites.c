/* One allocation site reached through two callers of the same shape, so the
 * site's frame sits at the same stack address either way: the agent's stack
 * cache (same call site, same place) must still tell the callers apart by
 * the return addresses further out. Leaks 500 blocks of 100 bytes via A and
 * 500 of 200 via B, in runs of 250 (repeats hit the cache), then 100 more
 * interleaved A/B pairs freed at once; prints "ready", waits for stdin EOF. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *keep[1000];

__attribute__((noinline)) void *cache_site(size_t n)
{
    void *p = malloc(n); /* @LEAK site */
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

__attribute__((noinline)) void *via_a(size_t n)
{
    void *p = cache_site(n); /* @LEAK via_a */
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

__attribute__((noinline)) void *via_b(size_t n)
{
    void *p = cache_site(n); /* @LEAK via_b */
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

int main(void)
{
    for (int i = 0; i < 1000; i++)
        keep[i] = (i / 250) & 1 ? via_b(200) : via_a(100);
    for (int i = 0; i < 100; i++) {
        free(via_a(100));
        free(via_b(200));
    }
    printf("ready\n");
    fflush(stdout);
    char b[64];
    while (read(0, b, sizeof b) > 0)
        ;
    return 0;
}
