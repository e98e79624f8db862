/* An allocation site inlined at -O2 (built with -O2 -g): the report must
 * show the inlined function as its own frame, marked inline, at the malloc
 * line, then the function it was inlined into at the call's line. Waits for
 * stdin EOF. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *keep[64];
static volatile int nkeep;

static inline __attribute__((always_inline)) void *make_record(size_t n)
{
    void *p = malloc(n); /* @LEAK inline_site */
    if (p)
        ((char *)p)[0] = 1;
    return p;
}

__attribute__((noinline)) void build_records(void)
{
    for (int i = 0; i < 8; i++)
        keep[nkeep++] = make_record(777 + (size_t)i); /* @LEAK inline_caller */
}

int main(void)
{
    build_records();
    printf("ready\n");
    fflush(stdout);
    char buf[16];
    while (read(0, buf, sizeof buf) > 0)
        ;
    return 0;
}
