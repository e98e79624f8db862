/* The realloc-heavy benchmark: 2 threads, each with 8 buffers that grow and
 * shrink through realloc (the new tail is written, as a growing string or
 * vector would), with an occasional free and fresh start. Deterministic.
 *
 *   realloc [ITERATIONS_PER_THREAD]   (default 1000000) */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 2
#define BUFS 8
#define MAX_SIZE 65536

typedef struct worker_s {
    uint64_t rng;              /* xorshift64* state, seeded per thread */
    long iterations;           /* resizes (and restarts) this thread makes */
    unsigned char *buf[BUFS];  /* the buffers, NULL after a restart */
    size_t size[BUFS];         /* their current sizes */
    uint64_t sum;              /* bytes read back, so the writes are not dead */
} worker_t;

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

__attribute__((noinline)) static unsigned char *resize(unsigned char *p, size_t old, size_t n)
{
    unsigned char *q = realloc(p, n);
    if (!q) {
        perror("realloc");
        exit(1);
    }
    if (n > old)
        memset(q + old, (int)(n & 0xff), n - old);
    return q;
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    for (long i = 0; i < w->iterations; i++) {
        uint64_t r = next_rand(&w->rng);
        unsigned b = (unsigned)(r % BUFS);
        size_t old = w->size[b];
        size_t n;
        switch ((r >> 8) % 8) {
        case 0: /* start over */
            free(w->buf[b]);
            w->buf[b] = NULL;
            w->size[b] = 0;
            continue;
        case 1:
        case 2: /* shrink */
            n = old / 2 + 1;
            break;
        default: /* grow by 1.5x plus a little, like a vector */
            n = old + old / 2 + 16 + (size_t)((r >> 16) % 64);
            break;
        }
        if (n > MAX_SIZE)
            n = 16 + (size_t)((r >> 24) % 256);
        w->buf[b] = resize(w->buf[b], old, n);
        w->size[b] = n;
        w->sum += w->buf[b][n - 1];
    }
    for (int b = 0; b < BUFS; b++) {
        free(w->buf[b]);
        w->buf[b] = NULL;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 1000000;
    if (iterations <= 0) {
        fprintf(stderr, "usage: %s [ITERATIONS_PER_THREAD]\n", argv[0]);
        return 2;
    }
    static worker_t w[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i].rng = 0xD1B54A32D192ED03ull * (uint64_t)(i + 1);
        w[i].iterations = iterations;
        if (pthread_create(&t[i], NULL, worker, &w[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    uint64_t sum = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        sum += w[i].sum;
    }
    printf("realloc: %d threads x %ld iterations, checksum %llu\n", THREADS, iterations,
           (unsigned long long)sum);
    return 0;
}
