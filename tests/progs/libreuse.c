/* Built twice (-DWHICH=a / b) as two libraries of the same size and layout:
 * each leaks from its own function. */
#include <stdlib.h>

#define CAT2(x, y) x##y
#define CAT(x, y) CAT2(x, y)

static void *kept[16];
static int nkept;

__attribute__((noinline)) void *CAT(leak_from_, WHICH)(size_t n)
{
    void *p = malloc(n); /* @LEAK reuse_site */
    if (nkept < 16)
        kept[nkept++] = p;
    return p;
}

void *dl_leak(size_t n)
{
    return CAT(leak_from_, WHICH)(n);
}
