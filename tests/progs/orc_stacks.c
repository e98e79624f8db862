/* Oracle: a thread's stack as a root (main's and a live worker's), and a
 * block whose only pointer was on a stack frame since returned from. */
#include <pthread.h>
#include <stdlib.h>
#include "oracle.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int held, done;

static void *worker(void *arg)
{
    (void)arg;
    void *volatile mine = malloc(2001); /* @LEAK worker_stack */
    scrub();
    pthread_mutex_lock(&mu);
    held = 1;
    pthread_cond_broadcast(&cv);
    while (!done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    free(mine);
    return NULL;
}

__attribute__((noinline)) static void gone(void)
{
    void *volatile p = malloc(2003); /* @LEAK returned */
    (void)p;
}

int main(void)
{
    void *volatile on_stack = malloc(2002); /* @LEAK main_stack */
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 2;
    pthread_mutex_lock(&mu);
    while (!held)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    gone();
    ready();
    pthread_mutex_lock(&mu);
    done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(t, NULL);
    return on_stack == NULL;
}
