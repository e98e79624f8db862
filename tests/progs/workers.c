/* Forks three workers that each leak from worker_leak(); all wait for stdin
 * EOF. The parent prints the workers' pids. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void *keep[64];

__attribute__((noinline)) void worker_leak(int n)
{
    for (int i = 0; i < n; i++)
        keep[i] = malloc(4000); /* @LEAK worker */
}

int main(void)
{
    pid_t kids[3];
    for (int k = 0; k < 3; k++) {
        fflush(stdout);
        kids[k] = fork();
        if (kids[k] == 0) {
            worker_leak(5 + k);
            char buf[16];
            while (read(0, buf, sizeof buf) > 0)
                ;
            _exit(0);
        }
    }
    printf("workers %d %d %d\n", kids[0], kids[1], kids[2]);
    fflush(stdout);
    char buf[16];
    while (read(0, buf, sizeof buf) > 0)
        ;
    for (int k = 0; k < 3; k++)
        waitpid(kids[k], NULL, 0);
    return 0;
}
