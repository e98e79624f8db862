/* A library whose constructor leaks: ld.so runs it before the preloaded
 * agent's own constructor (the library does not depend on the agent). */
#include <stdlib.h>

static void *kept[16];

__attribute__((noinline)) void ctor_table(void)
{
    for (int i = 0; i < 10; i++)
        kept[i] = malloc(777); /* @LEAK ctor */
}

__attribute__((constructor)) static void ctorleak_init(void)
{
    ctor_table();
}

void *ctorleak_get(int i)
{
    return kept[i];
}
