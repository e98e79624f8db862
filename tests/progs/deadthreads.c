/* Threads that each leak one block and exit: the pointer to it is left only
 * in the dead thread's stack, which glibc keeps in its cache of stacks for
 * reuse. LeakSanitizer and valgrind call every such block lost; stale words
 * in a cached stack must not make them reachable (issue 19.4b). Takes the
 * number of threads (default 100), started one batch of 10 at a time and
 * joined; one more block is kept reachable from a global. With a second
 * argument "hold", one more thread (started after, so on a cached stack;
 * it never allocates) keeps the only pointer to a block in its stack until
 * EOF: reachable. Prints "ready PID" when all that is in place, then waits
 * for EOF on stdin. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <valgrind/memcheck.h>

static void *kept;
static void *handover;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int holding, release;

__attribute__((noinline)) static void *held_block(void)
{
    char *p = malloc(2003); /* @LEAK held */
    memset(p, 5, 2003);
    return p;
}

/* Takes the block out of the global, so that only this stack points to it. */
static void *holder(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    void *volatile mine = handover;
    handover = NULL;
    holding = 1;
    pthread_cond_broadcast(&cv);
    while (!release)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return mine;
}

__attribute__((noinline)) static void *leak_here(long i)
{
    char *p = malloc(2001); /* @LEAK dead */
    memset(p, (int)(i & 0x7f), 2001);
    return p;
}

static void *worker(void *arg)
{
    /* The pointer stays in this frame (and in registers) when the thread
     * ends: exactly the stale word a cached stack keeps. */
    void *volatile p = leak_here((long)(size_t)arg);
    (void)p;
    return NULL;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100;
    kept = malloc(2002); /* @LEAK kept */
    memset(kept, 1, 2002);
    for (long i = 0; i < n; i += 10) {
        pthread_t t[10];
        long k = n - i < 10 ? n - i : 10;
        for (long j = 0; j < k; j++)
            if (pthread_create(&t[j], NULL, worker, (void *)(size_t)(i + j)) != 0)
                return 2;
        for (long j = 0; j < k; j++)
            pthread_join(t[j], NULL);
    }
    pthread_t h;
    int hold = argc > 2 && !strcmp(argv[2], "hold");
    if (hold) {
        handover = held_block();
        if (pthread_create(&h, NULL, holder, NULL) != 0)
            return 2;
        pthread_mutex_lock(&mu);
        while (!holding)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    }
    VALGRIND_DO_LEAK_CHECK; /* the oracle's verdict at this point (test_oracle) */
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    if (hold) {
        pthread_mutex_lock(&mu);
        release = 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        void *got;
        pthread_join(h, &got);
        free(got);
    }
    printf("done\n");
    return 0;
}
