/* Fragmentation across glibc arenas (issue 18.5): RSS grows while the live
 * heap stays flat. Each of NTHREADS threads mallocs from its own arena (a
 * thread's first malloc takes a new arena while there are fewer than 8 per
 * core). Prints "ready PID", then on each "step" line the next thread in
 * turn runs one batch and the program answers "ok":
 *   a batch mallocs 16 MiB in 256-byte blocks, keeps every 64th block as
 *   the new survivor set (NSURV blocks, 256 KiB; the previous set, in
 *   another thread's arena, is freed) and its own last block (the top of its
 *   arena, so glibc cannot trim it; the previous one is freed), and frees
 *   the rest.
 * The live heap is the same ~260 KiB after every batch; each thread's first
 * batch leaves ~16 MiB free but held in its arena. Waits for EOF. */
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NTHREADS 4
#define BLOCK 256
#define NBLOCKS ((16u << 20) / BLOCK)
#define EVERY 64
#define NSURV (NBLOCKS / EVERY)

static void **all;
static void *survivors[NSURV];
static void *top[NTHREADS];
static sem_t go[NTHREADS], done;

static void batch(int k)
{
    for (unsigned i = 0; i < NBLOCKS; i++) {
        all[i] = malloc(BLOCK); /* @LEAK frag_block */
        if (!all[i])
            abort();
        memset(all[i], k + 1, BLOCK);
    }
    for (unsigned j = 0; j < NSURV; j++) {
        free(survivors[j]);
        survivors[j] = all[j * EVERY];
    }
    free(top[k]);
    top[k] = all[NBLOCKS - 1];
    for (unsigned i = 0; i < NBLOCKS - 1; i++)
        if (i % EVERY)
            free(all[i]);
}

static void *worker(void *arg)
{
    int k = (int)(long)arg;
    for (;;) {
        sem_wait(&go[k]);
        batch(k);
        sem_post(&done);
    }
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    all = malloc(NBLOCKS * sizeof *all);
    if (!all)
        return 2;
    sem_init(&done, 0, 0);
    for (int k = 0; k < NTHREADS; k++) {
        pthread_t t;
        sem_init(&go[k], 0, 0);
        if (pthread_create(&t, NULL, worker, (void *)(long)k))
            return 2;
        pthread_detach(t);
    }
    printf("ready %d\n", (int)getpid());
    char line[64];
    int step = 0;
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "step", 4)) {
            sem_post(&go[step++ % NTHREADS]);
            sem_wait(&done);
        }
        printf("ok\n");
    }
    return 0;
}
