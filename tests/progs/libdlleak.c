/* A library loaded with dlopen that leaks from a marked line. */
#include <stdlib.h>
#include <string.h>

static void *kept[16];
static int nkept;

void *dl_leak(size_t n)
{
    void *p = malloc(n); /* @LEAK dl_leak */
    memset(p, 7, n);
    if (nkept < 16)
        kept[nkept++] = p;
    return p;
}

void dl_noise(void)
{
    for (int i = 0; i < 100; i++)
        free(malloc(40)); /* @NOISE dl_noise */
}
