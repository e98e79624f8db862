/* Eight threads that keep allocating, checking and freeing, started without
 * the agent, for repeated stackctl attach/detach: any corruption of a
 * thread's registers, vector state or memory shows as a wrong checksum.
 * Three compute over malloc'd buffers, two use calloc/realloc, one sleeps in
 * nanosleep, one waits on a condition variable, one does SSE/AVX-friendly
 * floating point across allocations. Prints "ready", and at stdin EOF stops
 * them and prints "ok threads=8 errors=E rounds>0=R": errors must be 0 and R
 * 8. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define THREADS 8

static _Atomic int stop;
static _Atomic long errors;
static long rounds[THREADS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15ULL;
    return x ^ (x >> 29);
}

__attribute__((noinline)) static void work_buffers(int id)
{
    size_t n = 64 + (size_t)(rounds[id] % 2000);
    uint64_t *p = malloc(n * sizeof *p);
    uint64_t want = 0, got = 0;
    for (size_t i = 0; i < n; i++) {
        p[i] = mix(i + (uint64_t)id);
        want += p[i];
    }
    for (size_t i = 0; i < n; i++)
        got += p[i];
    if (got != want)
        errors++;
    free(p);
}

__attribute__((noinline)) static void work_realloc(int id)
{
    size_t n = 16;
    unsigned char *p = calloc(n, 1);
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            errors++;
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 7 + (size_t)id);
    for (int k = 0; k < 6; k++) {
        size_t m = n * 2;
        p = realloc(p, m);
        /* realloc keeps what was there */
        for (size_t i = 0; i < n; i++)
            if (p[i] != (unsigned char)(i * 7 + (size_t)id))
                errors++;
        for (size_t i = n; i < m; i++)
            p[i] = (unsigned char)(i * 7 + (size_t)id);
        n = m;
    }
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 7 + (size_t)id))
            errors++;
    free(p);
}

__attribute__((noinline)) static void work_float(int id)
{
    double acc = 0, want = 0;
    double *v = malloc(256 * sizeof *v);
    for (int i = 0; i < 256; i++)
        v[i] = sqrt((double)(i + id));
    for (int i = 0; i < 256; i++)
        acc += v[i] * v[i];
    for (int i = 0; i < 256; i++)
        want += (double)(i + id);
    if (fabs(acc - want) > 1e-6 * want)
        errors++;
    free(v);
}

static void *thread_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    while (!atomic_load(&stop)) {
        switch (id) {
        case 0: case 1: case 2: work_buffers(id); break;
        case 3: case 4: work_realloc(id); break;
        case 5: {
            struct timespec ts = { 0, 2000000 };
            nanosleep(&ts, NULL);
            work_buffers(id);
            break;
        }
        case 6: {
            pthread_mutex_lock(&mu);
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 3000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&cv, &mu, &until);
            pthread_mutex_unlock(&mu);
            work_realloc(id);
            break;
        }
        default: work_float(id); break;
        }
        rounds[id]++;
    }
    return NULL;
}

int main(void)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)i);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char buf[256];
    while (read(0, buf, sizeof buf) > 0) {
    }
    atomic_store(&stop, 1);
    pthread_cond_broadcast(&cv);
    int active = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        active += rounds[i] > 0;
    }
    printf("ok threads=%d errors=%ld rounds>0=%d\n", THREADS, (long)errors, active);
    return 0;
}
