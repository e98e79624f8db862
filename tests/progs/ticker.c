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

/* A block of a size the test chooses, kept: proof that one allocation made
 * at a known moment reached the collector. */
__attribute__((noinline)) void *tick_mark(size_t n)
{
    return malloc(n); /* @LEAK mark */
}

static void *marks[64];
static int nmarks;

/* Commands on stdin, one a line, each answered on stdout once done:
 * "mark N" allocates N bytes at the mark line ("marked N"); "count" says
 * how many ticks ran so far ("ticks N"). Anything else is ignored. */
static void command(const char *line)
{
    unsigned long n;
    int end = 0;
    if (sscanf(line, "mark %lu", &n) == 1 && n > 0 && nmarks < 64) {
        marks[nmarks++] = tick_mark(n);
        printf("marked %lu\n", n);
    } else if (sscanf(line, "count%n", &end) >= 0 && end == 5) {
        printf("ticks %d\n", nkeep);
    }
    fflush(stdout);
}

int main(void)
{
    static char cmd[256];
    size_t len = 0;
    printf("ticking\n");
    fflush(stdout);
    for (;;) {
        tick_leak();
        free(malloc(50)); /* @NOISE tick */
        struct pollfd pfd = { .fd = 0, .events = POLLIN };
        if (poll(&pfd, 1, 20) > 0) {
            char buf[64];
            ssize_t r = read(0, buf, sizeof buf);
            if (r <= 0)
                break;
            for (ssize_t i = 0; i < r; i++) {
                if (buf[i] == '\n') {
                    cmd[len] = 0;
                    command(cmd);
                    len = 0;
                } else if (len < sizeof cmd - 1) {
                    cmd[len++] = buf[i];
                }
            }
        }
    }
    printf("ticked %d\n", nkeep);
    return 0;
}
