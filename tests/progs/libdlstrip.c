/* A library to be stripped or split from its debug info: the exported
 * entry point calls a static helper that allocates. */
#include <stdlib.h>
#include <string.h>

static void *kept[16];
static int nkept;

static __attribute__((noinline)) void *strip_inner(size_t n)
{
    void *p = malloc(n); /* @LEAK strip_inner */
    memset(p, 3, n);
    return p;
}

void *dl_leak(size_t n)
{
    void *p = strip_inner(n); /* @LEAK strip_outer */
    if (nkept < 16)
        kept[nkept++] = p;
    return p;
}

void dl_noise(void)
{
    for (int i = 0; i < 10; i++)
        free(strip_inner(8));
}
