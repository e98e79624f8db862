/* The malloc-heavy benchmark loop: 2 threads; each iteration recurses to a
 * pseudo-random depth 2..22 through a noinline function, mallocs 16..512
 * bytes there, writes the block, keeps it in a 16-slot per-thread pool and
 * frees the block that slot held. Deterministic: fixed seeds per thread.
 *
 *   loop [ITERATIONS_PER_THREAD]      (default 2000000)
 *
 * Built twice by bench/run.py: -O2 -g (frame pointers omitted) and
 * -O2 -g -fno-omit-frame-pointer (the fp build, for STACKWATCH_UNWIND=fp). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 2
#define POOL 16
#define DEPTH_MIN 2
#define DEPTH_MAX 22

typedef struct worker_s {
    uint64_t rng;      /* xorshift64* state, seeded per thread */
    long iterations;   /* allocations this thread makes */
    void *pool[POOL];  /* live blocks; a new block frees the slot's old one */
    uint64_t sum;      /* bytes read back, so the writes are not dead */
} worker_t;

static uint64_t next_rand(uint64_t *s)
{
    /* xorshift64*: cheap, good enough for sizes and depths. */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* One frame per level; the code after the call keeps it from being a tail
 * call, so every level is a real frame the unwinder has to walk. */
__attribute__((noinline)) static void *descend(worker_t *w, int depth, size_t size)
{
    void *p;
    if (depth > 1) {
        p = descend(w, depth - 1, size);
        __asm__ volatile("" : : "r"(p) : "memory");
        return p;
    }
    p = malloc(size);
    if (!p) {
        perror("malloc");
        exit(1);
    }
    memset(p, (int)(size & 0xff), size);
    return p;
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    for (long i = 0; i < w->iterations; i++) {
        uint64_t r = next_rand(&w->rng);
        int depth = DEPTH_MIN + (int)(r % (DEPTH_MAX - DEPTH_MIN + 1));
        size_t size = 16 + (size_t)((r >> 8) % (512 - 16 + 1));
        unsigned slot = (unsigned)(r >> 20) % POOL;
        unsigned char *p = descend(w, depth, size);
        w->sum += p[size - 1];
        free(w->pool[slot]);
        w->pool[slot] = p;
    }
    for (int s = 0; s < POOL; s++) {
        free(w->pool[s]);
        w->pool[s] = NULL;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 2000000;
    if (iterations <= 0) {
        fprintf(stderr, "usage: %s [ITERATIONS_PER_THREAD]\n", argv[0]);
        return 2;
    }
    static worker_t w[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i].rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
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
    /* One line so the result is used; run.py ignores it. */
    printf("loop: %d threads x %ld iterations, checksum %llu\n", THREADS, iterations,
           (unsigned long long)sum);
    return 0;
}
