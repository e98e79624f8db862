/* A thread that allocates and frees inside a dl_iterate_phdr callback for a
 * while (after LeakSanitizer's Linux/libdl_deadlock test, written anew): it
 * holds the loader's lock all that time. Prints "done ALLOCS" at the end.
 *
 *   dlchurn STEPS     STEPS rounds of 1000 blocks allocated, then freed */
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static long steps = 40;
static long allocs;

static int churn(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)info;
    (void)size;
    (void)data;
    for (long s = 0; s < steps; s++) {
        void *p[1000];
        for (int i = 0; i < 1000; i++)
            p[i] = malloc(16 + 8 * (size_t)i); /* @LEAK churn */
        allocs += 1000;
        for (int i = 0; i < 1000; i++)
            free(p[i]);
    }
    return 1; /* the first module only */
}

static void *run(void *arg)
{
    (void)arg;
    dl_iterate_phdr(churn, NULL);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        steps = atol(argv[1]);
    pthread_t t;
    pthread_create(&t, NULL, run, NULL);
    pthread_join(t, NULL);
    printf("done %ld\n", allocs);
    return 0;
}
