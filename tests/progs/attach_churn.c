/* A service-like churn for attach/detach under load, started without the
 * agent: two threads each keep 4096 blocks alive and replace the oldest
 * one per step (so an allocation and its free fall in different batches
 * and are never folded together: every event goes out). Prints
 * "ready PID"; at stdin EOF stops them and prints "ok errors=E" (E must
 * be 0: a block's contents checked before it is freed). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREADS 2
#define KEEP 4096

static _Atomic int stop;
static _Atomic long errors;

__attribute__((noinline)) static unsigned char *make_block(size_t n, unsigned char v)
{
    unsigned char *p = malloc(n);
    if (p)
        memset(p, v, n);
    return p;
}

static void *churn(void *arg)
{
    unsigned char **keep = calloc(KEEP, sizeof *keep);
    size_t *len = calloc(KEEP, sizeof *len);
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (unsigned long i = 0; !atomic_load_explicit(&stop, memory_order_relaxed); i++) {
        size_t k = i % KEEP;
        if (keep[k]) {
            if (keep[k][0] != (unsigned char)k || keep[k][len[k] - 1] != (unsigned char)k)
                errors++;
            free(keep[k]);
        }
        seed = seed * 1103515245u + 12345u;
        len[k] = 16 + (seed >> 16) % 240;
        keep[k] = make_block(len[k], (unsigned char)k);
    }
    for (size_t k = 0; k < KEEP; k++)
        free(keep[k]);
    free(keep);
    free(len);
    return NULL;
}

int main(void)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1));
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    printf("ok errors=%ld\n", (long)errors);
    return 0;
}
