/* Leaks one block every 20 ms from a marked line (and frees noise) until
 * stdin reaches EOF; stdin is polled so the loop never blocks on it. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *keep[100000];
static int nkeep;

__attribute__((noinline)) void tick_leak(void)
{
    void *p = malloc(300); /* @LEAK tick */
    if (nkeep < 100000)
        keep[nkeep++] = p;
}

int main(void)
{
    printf("ticking\n");
    fflush(stdout);
    for (;;) {
        tick_leak();
        free(malloc(50)); /* @NOISE tick */
        struct pollfd pfd = { .fd = 0, .events = POLLIN };
        if (poll(&pfd, 1, 20) > 0) {
            char buf[64];
            if (read(0, buf, sizeof buf) <= 0)
                break;
        }
    }
    printf("ticked %d\n", nkeep);
    return 0;
}
