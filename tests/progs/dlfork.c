/* fork while a thread is inside dl_iterate_phdr. glibc 2.36 does not reset
 * the loader's phdr lock in a fork child: a child forked while any thread
 * iterated inherits it held, and its own next dl_iterate_phdr blocks for
 * good. A program's child that never calls dl_iterate_phdr is unharmed; the
 * agent must not be what calls it (its module poll, its unwinder).
 *
 *   dlfork held        a thread sits inside a dl_iterate_phdr callback (the
 *                      lock held) while main forks; the child allocates and
 *                      frees 1000 blocks, prints "child", exits 0; the parent
 *                      reaps it (a child not gone within 10 s is killed:
 *                      "hung"), lets the thread go, prints "ok".
 *   dlfork forks N     a worker thread forks N times; each child allocates
 *                      and frees 1000 blocks and exits 0. With libslowphdr.so preloaded in front of
 *                      the agent, each fork waits (at most 5 s) until the
 *                      agent's flusher is inside one of its module polls,
 *                      holding the loader's lock. Prints "forks N hung H".
 * Exit status 1 when a child hung. */
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void *volatile sink;
static int gate[2]; /* the holder reads it to leave its callback */
static int held[2]; /* the holder writes it once inside */

static void churn(int n)
{
    for (int i = 0; i < n; i++) {
        sink = malloc(16 + (size_t)i % 100);
        free(sink);
    }
}

static int hold_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)info;
    (void)size;
    (void)arg;
    char c = 1;
    if (write(held[1], &c, 1) != 1 || read(gate[0], &c, 1) != 1)
        return 1;
    return 1; /* one object is enough */
}

static void *holder(void *arg)
{
    (void)arg;
    dl_iterate_phdr(hold_cb, NULL);
    return NULL;
}

/* Reaps c within 10 s, else kills it. 0 if it exited 0, 1 if it hung, 2 else. */
static int reap(pid_t c)
{
    for (int i = 0; i < 1000; i++) {
        int st = 0;
        pid_t w = waitpid(c, &st, WNOHANG);
        if (w == c)
            return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 2;
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    kill(c, SIGKILL);
    waitpid(c, NULL, 0);
    return 1;
}

static void child(void)
{
    churn(1000);
    printf("child\n");
    fflush(stdout);
    exit(0);
}

static int nforks;
static int hung;

/* libslowphdr.so's flag, when it is preloaded: the flusher is inside. */
static void wait_flusher_inside(void)
{
    int *inside = (int *)dlsym(RTLD_DEFAULT, "slowphdr_inside");
    for (int i = 0; inside && i < 5000 && !__atomic_load_n(inside, __ATOMIC_ACQUIRE); i++) {
        struct timespec ts = { 0, 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
}

static void *forker(void *arg)
{
    (void)arg;
    for (int i = 0; i < nforks; i++) {
        wait_flusher_inside();
        fflush(stdout);
        pid_t c = fork();
        if (c == 0)
            child();
        if (c < 0 || reap(c) != 0)
            hung++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *m = argc > 1 ? argv[1] : "";
    churn(1000);
    if (!strcmp(m, "held")) {
        pthread_t t;
        char c;
        if (pipe(gate) || pipe(held) || pthread_create(&t, NULL, holder, NULL) ||
            read(held[0], &c, 1) != 1)
            return 2;
        fflush(stdout);
        pid_t p = fork();
        if (p == 0)
            child();
        int r = p < 0 ? 2 : reap(p);
        c = 1;
        if (write(gate[1], &c, 1) != 1)
            return 2;
        pthread_join(t, NULL);
        printf(r == 0 ? "ok\n" : r == 1 ? "hung\n" : "failed\n");
        return r != 0;
    }
    if (!strcmp(m, "forks")) {
        nforks = argc > 2 ? atoi(argv[2]) : 20;
        pthread_t t;
        if (pthread_create(&t, NULL, forker, NULL))
            return 2;
        pthread_join(t, NULL);
        printf("forks %d hung %d\n", nforks, hung);
        return hung != 0;
    }
    fprintf(stderr, "usage: dlfork held | forks N\n");
    return 2;
}
