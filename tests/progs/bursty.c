/* A leak in bursts, driven by stdin: "b" starts a burst (one block every
 * 10 ms), "p" pauses it, EOF ends the program. Each line is acknowledged
 * ("burst", "pause"). */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MAXB 200000

static void *kept[MAXB];
static int nkept;

__attribute__((noinline)) void burst_leak(void)
{
    if (nkept < MAXB)
        kept[nkept++] = malloc(1000); /* @LEAK burst */
}

int main(void)
{
    int on = 0;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        if (on)
            burst_leak();
        struct pollfd pfd = { .fd = 0, .events = POLLIN };
        if (poll(&pfd, 1, 10) > 0) {
            char buf[64];
            ssize_t r = read(0, buf, sizeof buf);
            if (r <= 0)
                break;
            for (ssize_t i = 0; i < r; i++) {
                if (buf[i] == 'b' || buf[i] == 'p') {
                    on = buf[i] == 'b';
                    printf("%s\n", on ? "burst" : "pause");
                    fflush(stdout);
                }
            }
        }
    }
    printf("kept %d\n", nkept);
    return 0;
}
