/* Trigger target: a worker thread allocates from trigger_site() every 10 ms,
 * printing "alloc PTR tid TID", and frees each block some 50 ms later
 * ("freed PTR"). A SIGUSR1 handler (unless argv[1] is "nohandler") records
 * the thread that received each signal. On stdin EOF it prints
 * "signals N tids T1 T2 ..." and exits 0. With "leakonly" nothing is freed,
 * with "noleak" every block is freed at once. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static _Atomic int nsig;
static _Atomic int sig_tids[64];
static _Atomic int stop;
static int free_some = 1;
static int free_all;

static void on_usr1(int sig)
{
    (void)sig;
    int i = atomic_fetch_add(&nsig, 1);
    if (i < 64)
        sig_tids[i] = (int)syscall(SYS_gettid);
}

__attribute__((noinline)) void *trigger_site(size_t n)
{
    return malloc(n); /* @ALLOC trigger */
}

static void *worker(void *arg)
{
    (void)arg;
    void *pending[8];
    int np = 0;
    int tid = (int)syscall(SYS_gettid);
    for (int i = 0; !atomic_load(&stop); i++) {
        void *p = trigger_site(1000 + (size_t)(i % 7));
        printf("alloc %p tid %d\n", p, tid);
        fflush(stdout);
        if (free_all) {
            free(p);
            usleep(10000);
            continue;
        }
        if (free_some && np < 8)
            pending[np++] = p;
        if (np == 8 || (np && i % 5 == 0)) {
            for (int k = 0; k < np; k++) {
                printf("freed %p\n", pending[k]);
                free(pending[k]);
            }
            fflush(stdout);
            np = 0;
        }
        usleep(10000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int handler = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "nohandler"))
            handler = 0;
        if (!strcmp(argv[i], "leakonly"))
            free_some = 0;
        if (!strcmp(argv[i], "noleak"))
            free_all = 1;
    }
    if (handler) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sigaction(SIGUSR1, &sa, NULL);
    }
    printf("main tid %d\n", (int)syscall(SYS_gettid));
    fflush(stdout);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    int n = atomic_load(&nsig);
    printf("signals %d tids", n);
    for (int i = 0; i < n && i < 64; i++)
        printf(" %d", sig_tids[i]);
    printf("\n");
    return 0;
}
