/* 8 threads allocate blocks and hand each to the next thread, which frees it:
 * every block is freed by a thread other than the one that allocated it.
 * Exact counts: THREADS * ROUNDS * BATCH allocations from worker_alloc(),
 * all freed. Prints "done" and waits for stdin EOF. Usage: threads [ROUNDS] */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREADS 8
#define BATCH 64

typedef struct mailbox_s {
    pthread_mutex_t lock;
    void *slots[BATCH * 4];
    int n;
} mailbox_t;

static mailbox_t box[THREADS];
static int rounds = 2000;
static _Atomic int finished;

__attribute__((noinline)) void *worker_alloc(size_t n)
{
    return malloc(n); /* @ALLOC worker */
}

/* Frees whatever is in the mailbox; returns the number freed. */
static int drain(mailbox_t *m, int unused)
{
    void *local[BATCH * 4];
    pthread_mutex_lock(&m->lock);
    int n = m->n;
    memcpy(local, m->slots, (size_t)n * sizeof local[0]);
    m->n = 0;
    pthread_mutex_unlock(&m->lock);
    (void)unused;
    for (int i = 0; i < n; i++)
        free(local[i]);
    return n;
}

/* Hands p to m; while m is full, keeps draining our own mailbox so the ring
 * of threads can never block on each other. */
static void post(mailbox_t *self, mailbox_t *m, void *p)
{
    for (;;) {
        pthread_mutex_lock(&m->lock);
        if (m->n < (int)(sizeof m->slots / sizeof m->slots[0])) {
            m->slots[m->n++] = p;
            pthread_mutex_unlock(&m->lock);
            return;
        }
        pthread_mutex_unlock(&m->lock);
        drain(self, 0);
        sched_yield();
    }
}

static void *worker(void *arg)
{
    int id = (int)(long)arg;
    mailbox_t *next = &box[(id + 1) % THREADS];
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < BATCH; i++) {
            char *p = worker_alloc(16 + (size_t)((r + i) % 200));
            p[0] = (char)i;
            post(&box[id], next, p);
        }
        drain(&box[id], 0);
    }
    /* Others may still post to us: keep emptying our box until all are done. */
    finished++;
    while (finished < THREADS) {
        drain(&box[id], 0);
        sched_yield();
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        rounds = atoi(argv[1]);
    for (int i = 0; i < THREADS; i++) {
        pthread_mutex_init(&box[i].lock, NULL);
    }
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(long)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        drain(&box[i], 0);
    printf("done %ld\n", (long)THREADS * rounds * BATCH);
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    return 0;
}
