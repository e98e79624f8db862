/* Blocks that stay live in three ways, for the reachability scan: lost
 * (nothing points to them), lost in pairs pointing at each other (a cycle
 * no root reaches), and kept on a linked list whose head is a global. Reads
 * commands from stdin, one per line, answering "ok":
 *
 *   lose N        N blocks of 3001 bytes, pointers dropped      (@LEAK lost)
 *   cycle N       N pairs of 3003-byte blocks, each pointing at the other,
 *                 pointers dropped                              (@LEAK cycle)
 *   keep N        N blocks of 3008 bytes on the global list     (@LEAK kept)
 *   spin N        N threads that allocate, check and free until EOF
 *   churn N       N blocks of 3005 bytes allocated, then all freed
 *   exit N        exit(N) now, from the command loop (threads still spinning)
 *   hold PATH     after main returns, an atexit handler prints "held" and
 *                 waits (up to 120 s) for PATH to exist before the process ends
 *
 * At EOF: stops the threads, walks the list and prints
 * "done kept=K errors=E". The stack and registers are scrubbed after each
 * command, so no dead copy of a dropped pointer stays where a scan looks. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scrub.h"

typedef struct node_s {
    struct node_s *next;
    uint64_t seq;
    char pad[3008 - 16];
} node_t;

static node_t *head;
static uint64_t kept;
static _Atomic int stop;
static _Atomic long errors;
static pthread_t threads[64];
static int nthreads;

static char hold_path[100];

/* Runs after main returned: the process is ending, its blocks still live. */
static void hold(void)
{
    printf("held\n");
    fflush(stdout);
    for (int i = 0; i < 12000 && access(hold_path, F_OK) != 0; i++)
        usleep(10000);
}

__attribute__((noinline)) void lose_one(uint64_t i)
{
    char *p = malloc(3001); /* @LEAK lost */
    memset(p, (int)(i & 0x7f), 3001);
}

__attribute__((noinline)) void lose_cycle(void)
{
    void **a = malloc(3003); /* @LEAK cycle */
    void **b = malloc(3003); /* @LEAK cycle2 */
    memset(a, 0, 3003);
    memset(b, 0, 3003);
    a[0] = b;
    b[0] = a;
}

__attribute__((noinline)) void keep_one(void)
{
    node_t *n = malloc(sizeof *n); /* @LEAK kept */
    memset(n, 0, sizeof *n);
    n->seq = ++kept;
    n->next = head;
    head = n;
}

static void *spin(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    while (!atomic_load(&stop)) {
        size_t n = 32 + (size_t)(id * 7 % 200);
        uint64_t *p = malloc(n * sizeof *p);
        for (size_t i = 0; i < n; i++)
            p[i] = i * id;
        for (size_t i = 0; i < n; i++)
            if (p[i] != i * id)
                errors++;
        free(p);
    }
    return NULL;
}

static void run(const char *line)
{
    long n = 0;
    if (sscanf(line, "lose %ld", &n) == 1) {
        for (long i = 0; i < n; i++)
            lose_one((uint64_t)i);
    } else if (sscanf(line, "cycle %ld", &n) == 1) {
        for (long i = 0; i < n; i++)
            lose_cycle();
    } else if (sscanf(line, "keep %ld", &n) == 1) {
        for (long i = 0; i < n; i++)
            keep_one();
    } else if (sscanf(line, "hold %99s", hold_path) == 1) {
        atexit(hold);
    } else if (sscanf(line, "churn %ld", &n) == 1 && n > 0) {
        void **v = malloc((size_t)n * sizeof *v);
        for (long i = 0; v && i < n; i++)
            v[i] = malloc(3005);
        for (long i = 0; v && i < n; i++)
            free(v[i]);
        free(v);
    } else if (sscanf(line, "exit %ld", &n) == 1) {
        scrub();
        exit((int)n);
    } else if (sscanf(line, "spin %ld", &n) == 1) {
        for (long i = 0; i < n && nthreads < 64; i++)
            pthread_create(&threads[nthreads++], NULL, spin, (void *)(uintptr_t)(i + 1));
    }
}

int main(void)
{
    char line[128];
    size_t have = 0;
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    for (;;) {
        ssize_t r = read(0, line + have, sizeof line - 1 - have);
        if (r <= 0)
            break;
        have += (size_t)r;
        line[have] = '\0';
        char *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = '\0';
            run(line);
            scrub();
            printf("ok\n");
            fflush(stdout);
            have -= (size_t)(nl + 1 - line);
            memmove(line, nl + 1, have + 1);
            scrub();
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    uint64_t k = 0;
    for (node_t *n = head; n; n = n->next)
        if (n->seq == kept - k++)
            continue;
        else
            errors++;
    printf("done kept=%llu errors=%ld\n", (unsigned long long)k, (long)errors);
    return 0;
}
