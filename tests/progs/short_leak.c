/* A leak that runs for a while and exits normally: one block every 5 ms for
 * argv[1] iterations (default 200), then main returns. An atexit handler and
 * a destructor free every leaked block: that is the process tearing down,
 * not an eviction. With "mark" as argv[2], prints "mark?" halfway and waits
 * for a line on stdin before leaking the second half. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXB 100000

static void *kept[MAXB];
static int nkept;

__attribute__((noinline)) void keep_block(int i)
{
    if (nkept < MAXB)
        kept[nkept++] = malloc(100 + (size_t)(i % 7)); /* @LEAK short */
}

__attribute__((noinline)) void churn(void)
{
    free(malloc(64)); /* @LEAK churn */
}

static void release_all(void)
{
    for (int i = 0; i < nkept; i++)
        free(kept[i]);
    nkept = 0;
}

__attribute__((destructor)) static void also_at_unload(void)
{
    release_all();
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 200;
    int mark = argc > 2 && strcmp(argv[2], "mark") == 0;
    atexit(release_all);
    for (int i = 0; i < n; i++) {
        if (mark && i == n / 2) {
            printf("mark?\n");
            fflush(stdout);
            char line[16];
            if (!fgets(line, sizeof line, stdin))
                return 1;
        }
        keep_block(i);
        churn();
        struct timespec ts = { 0, 5000000 };
        nanosleep(&ts, NULL);
    }
    printf("kept %d\n", nkept);
    return 0;
}
