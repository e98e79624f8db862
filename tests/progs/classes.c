/* Five allocation behaviours, each from its own function, one tick every
 * 20 ms until stdin reaches EOF. With an expire time of ~0.3 s:
 *   steady_leak    keeps one block per tick            -> leak
 *   cache_put      LRU of 40 entries (each lives 0.8 s) -> cache
 *   queue_push     adds 3, frees the 2 oldest per tick  -> growing
 *   churn          frees each block at once            -> transient
 *   startup_table  100 blocks at start, held           -> retained */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CACHE 40
#define QMAX 100000

static void *leaked[QMAX];
static int nleaked;
static void *cache[CACHE];
static int cache_pos;
static void *queue[QMAX];
static int qhead, qtail;
static void *table[100];

__attribute__((noinline)) void steady_leak(void)
{
    if (nleaked < QMAX)
        leaked[nleaked++] = malloc(256); /* @CLASS leak */
}

__attribute__((noinline)) void cache_put(void)
{
    free(cache[cache_pos]); /* evict the oldest */
    cache[cache_pos] = malloc(512); /* @CLASS cache */
    cache_pos = (cache_pos + 1) % CACHE;
}

__attribute__((noinline)) void queue_push(void)
{
    for (int i = 0; i < 3 && qtail < QMAX; i++)
        queue[qtail++] = malloc(128); /* @CLASS growing */
    for (int i = 0; i < 2 && qhead < qtail; i++)
        free(queue[qhead++]);
}

__attribute__((noinline)) void churn(void)
{
    for (int i = 0; i < 10; i++)
        free(malloc(64)); /* @CLASS transient */
}

__attribute__((noinline)) void startup_table(void)
{
    for (int i = 0; i < 100; i++)
        table[i] = malloc(1024); /* @CLASS retained */
}

int main(void)
{
    startup_table();
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        steady_leak();
        cache_put();
        queue_push();
        churn();
        struct pollfd pfd = { .fd = 0, .events = POLLIN };
        if (poll(&pfd, 1, 20) > 0) {
            char buf[64];
            if (read(0, buf, sizeof buf) <= 0)
                break;
        }
    }
    return 0;
}
