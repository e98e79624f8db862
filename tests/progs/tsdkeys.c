/* A block whose only pointer is a pthread_setspecific value of a high key
 * (>= 32): glibc keeps such values in a second-level array it callocs per
 * thread, so the block is reachable through that array (valgrind and
 * LeakSanitizer say so). The program makes its 40 keys before its first
 * allocation, the case where the agent's own first backtrace used to make
 * that array untracked (issue 19.4a). Main thread and a worker each store
 * one block; one more block is truly lost. Prints "ready PID" once all are
 * in place, then waits for EOF on stdin. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <valgrind/memcheck.h>

#include "scrub.h"

#define NKEYS 40

static pthread_key_t keys[NKEYS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int stored, done;

__attribute__((noinline)) static void store_main(void)
{
    char *p = malloc(3010); /* @LEAK tsd_main */
    memset(p, 1, 3010);
    pthread_setspecific(keys[NKEYS - 1], p);
}

__attribute__((noinline)) static void store_worker(void)
{
    char *p = malloc(3011); /* @LEAK tsd_worker */
    memset(p, 2, 3011);
    pthread_setspecific(keys[NKEYS - 2], p);
}

__attribute__((noinline)) static void lose(void)
{
    char *p = malloc(3012); /* @LEAK tsd_lost */
    memset(p, 3, 3012);
}

static void *worker(void *arg)
{
    (void)arg;
    store_worker();
    scrub();
    pthread_mutex_lock(&mu);
    stored = 1;
    pthread_cond_broadcast(&cv);
    while (!done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(void)
{
    for (int i = 0; i < NKEYS; i++)
        if (pthread_key_create(&keys[i], NULL) != 0)
            return 2;
    store_main();
    lose();
    scrub();
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 2;
    pthread_mutex_lock(&mu);
    while (!stored)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    VALGRIND_DO_LEAK_CHECK; /* the oracle's verdict at this point (test_oracle) */
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    pthread_mutex_lock(&mu);
    done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(t, NULL);
    printf("done %d\n", pthread_getspecific(keys[NKEYS - 1]) != NULL);
    return 0;
}
