/* A fixed amount of allocation work on demand (issue 17.3: how much a
 * frozen collectord slows its clients).
 *   stallchurn T N    prints "ready"; each "go" line on stdin runs T threads
 *                     that each make N allocations and N frees, then prints
 *                     "took MS" (wall time of that round); at EOF prints
 *                     "done allocs A frees F" (every call made) and exits. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long per_thread;
static unsigned long total_allocs, total_frees;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void *work(void *arg)
{
    (void)arg;
    void *ring[32] = { 0 };
    unsigned long a = 0, f = 0;
    for (long i = 0; i < per_thread; i++) {
        unsigned k = (unsigned)(i % 32);
        if (ring[k]) {
            free(ring[k]);
            f++;
        }
        ring[k] = malloc(16 + (size_t)(i % 100));
        a++;
    }
    for (int k = 0; k < 32; k++)
        if (ring[k]) {
            free(ring[k]);
            f++;
        }
    pthread_mutex_lock(&lock);
    total_allocs += a;
    total_frees += f;
    pthread_mutex_unlock(&lock);
    return NULL;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    int nt = argc > 1 ? atoi(argv[1]) : 2;
    per_thread = argc > 2 ? atol(argv[2]) : 1000000;
    if (nt < 1 || nt > 64)
        return 2;
    /* stdio's buffers are ours: the counts printed are all the allocations. */
    static char ibuf[4096], obuf[4096];
    setvbuf(stdin, ibuf, _IOFBF, sizeof ibuf);
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    printf("ready\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "go", 2) != 0)
            continue;
        pthread_t t[64];
        double t0 = now_ms();
        for (int i = 0; i < nt; i++)
            if (pthread_create(&t[i], NULL, work, NULL) != 0)
                return 3;
        for (int i = 0; i < nt; i++)
            pthread_join(t[i], NULL);
        printf("took %.0f\n", now_ms() - t0);
        fflush(stdout);
    }
    printf("done allocs %lu frees %lu\n", total_allocs, total_frees);
    return 0;
}
