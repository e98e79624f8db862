/* Programs whose last thread is not the main thread's return (issue 17.2).
 * Each must end under the agent exactly as without it:
 *   lastthread pexit           main allocates, prints, then pthread_exit(0):
 *                              glibc's last thread runs exit(0) (stdout flushed)
 *   lastthread pexit-worker    main starts a worker and pthread_exits; the worker
 *                              allocates and returns 0 (the last thread, exit(0))
 *   lastthread rawexit N       main allocates, then a thread-only SYS_exit(N): the
 *                              kernel ends the process with the leader's status N
 *   lastthread strict N        main allocates, enters seccomp strict mode, allocates
 *                              and frees (untraced now), writes "strict", SYS_exit(N)
 *   lastthread forkpexit       a worker thread forks; the child (its only thread a
 *                              non-main one) allocates and returns from it: exit(0)
 * Every mode writes "ok" (stdio, unflushed, where exit(0) must flush it). */
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void *volatile sink;

static void churn(int n)
{
    for (int i = 0; i < n; i++) {
        sink = malloc(16 + (size_t)i % 100);
        free(sink);
    }
}

static void *worker(void *arg)
{
    (void)arg;
    churn(1000);
    printf("ok\n"); /* left in stdio's buffer: exit(0) flushes it */
    return NULL;
}

static void *forker(void *arg)
{
    (void)arg;
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        churn(1000);
        printf("ok\n");
        return NULL; /* the child's only thread: glibc calls exit(0) */
    }
    int st = 0;
    if (c < 0 || waitpid(c, &st, 0) != c)
        _exit(3);
    printf("child %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    fflush(stdout);
    _exit(0);
}

int main(int argc, char **argv)
{
    const char *m = argc > 1 ? argv[1] : "";
    int code = argc > 2 ? atoi(argv[2]) : 0;
    static char obuf[4096];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    churn(1000);
    if (!strcmp(m, "pexit")) {
        printf("ok\n");
        pthread_exit(NULL);
    } else if (!strcmp(m, "pexit-worker")) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, NULL) != 0)
            return 2;
        pthread_exit(NULL);
    } else if (!strcmp(m, "rawexit")) {
        write(1, "ok\n", 3);
        syscall(SYS_exit, code);
    } else if (!strcmp(m, "strict")) {
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0)
            return 2;
        /* Only read, write, _exit and sigreturn from here on. */
        for (int i = 0; i < 100; i++) {
            sink = malloc(24);
            free(sink);
        }
        write(1, "strict\n", 7);
        syscall(SYS_exit, code);
    } else if (!strcmp(m, "forkpexit")) {
        pthread_t t;
        if (pthread_create(&t, NULL, forker, NULL) != 0)
            return 2;
        pthread_exit(NULL);
    }
    return 2;
}
