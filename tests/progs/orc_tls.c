/* Oracle: thread-local roots of a live thread: a __thread variable (static
 * TLS) and pthread_setspecific values of a low key and of a key >= 32
 * (glibc's second-level array). */
#include <pthread.h>
#include <stdlib.h>
#include "oracle.h"

static __thread void *t_ptr;
static pthread_key_t keys[40];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int set, done;

static void *worker(void *arg)
{
    (void)arg;
    t_ptr = malloc(4001);                        /* @LEAK tls_static */
    pthread_setspecific(keys[1], malloc(4002));  /* @LEAK key_low */
    pthread_setspecific(keys[39], malloc(4003)); /* @LEAK key_high */
    scrub();
    pthread_mutex_lock(&mu);
    set = 1;
    pthread_cond_broadcast(&cv);
    while (!done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(void)
{
    for (int i = 0; i < 40; i++)
        if (pthread_key_create(&keys[i], NULL) != 0)
            return 2;
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 2;
    pthread_mutex_lock(&mu);
    while (!set)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    ready();
    pthread_mutex_lock(&mu);
    done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(t, NULL);
    return 0;
}
