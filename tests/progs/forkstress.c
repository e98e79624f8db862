/* fork() while other threads unwind (issue found by a helper in
 * test_faults: a child hung for good in malloc on a libunwind mutex another
 * thread held at the fork). Three threads allocate without end at many
 * call sites (256 functions, random depth), so libunwind keeps working;
 * the main thread forks N times (argument, default 300); each child
 * allocates at a call site of its own (its first capture unwinds) and
 * exits. A child not gone within 4 s is counted hung and killed. Prints
 * "forks N hung H"; exit status 1 when H > 0. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define NF 256
typedef void *(*fn_t)(int);
static fn_t fns[NF];
static volatile int stop;

/* 256 functions f0000..f3333 (base-4 digits: valid octal literals). */
#define F(i)                                                                         \
    __attribute__((noinline)) static void *f##i(int d)                               \
    {                                                                                \
        void *p = d > 0 ? fns[(d * 7 + i) % NF](d - 1) : malloc(16 + i % 200);      \
        __asm__ volatile("" ::: "memory");                                           \
        return p;                                                                    \
    }
#define F4(i) F(i##0) F(i##1) F(i##2) F(i##3)
#define F16(i) F4(i##0) F4(i##1) F4(i##2) F4(i##3)
#define F64(i) F16(i##0) F16(i##1) F16(i##2) F16(i##3)
F64(00) F64(01) F64(02) F64(03)

#define T(i) fns[n++] = f##i;
#define T4(i) T(i##0) T(i##1) T(i##2) T(i##3)
#define T16(i) T4(i##0) T4(i##1) T4(i##2) T4(i##3)
#define T64(i) T16(i##0) T16(i##1) T16(i##2) T16(i##3)

static void *churn(void *a)
{
    unsigned s = (unsigned)(size_t)a;
    while (!stop) {
        s = s * 1103515245u + 12345u;
        free(fns[(s >> 8) % NF]((int)((s >> 20) % 12)));
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int forks = argc > 1 ? atoi(argv[1]) : 300, n = 0;
    T64(00) T64(01) T64(02) T64(03)
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        if (pthread_create(&t[i], NULL, churn, (void *)(size_t)(i + 1)) != 0)
            return 2;
    int hung = 0;
    for (int i = 0; i < forks; i++) {
        pid_t p = fork();
        if (p < 0)
            return 2;
        if (p == 0) {
            free(fns[(i * 13) % NF](i % 9));
            _exit(0);
        }
        int st, k;
        for (k = 0; k < 4000; k++) {
            if (waitpid(p, &st, WNOHANG) == p)
                break;
            usleep(1000);
        }
        if (k == 4000) {
            hung++;
            kill(p, SIGKILL);
            waitpid(p, &st, 0);
        }
    }
    stop = 1;
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    printf("forks %d hung %d\n", forks, hung);
    return hung != 0;
}
