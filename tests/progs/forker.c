/* Leaks in the parent, forks, leaks in the child at another line; both wait
 * for stdin EOF. The child prints its pid. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *keep[16];

__attribute__((noinline)) void parent_leak(void)
{
    keep[0] = malloc(5001); /* @LEAK parent */
}

__attribute__((noinline)) void child_leak(void)
{
    keep[1] = malloc(5002); /* @LEAK child */
}

static void wait_eof(void)
{
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
}

int main(void)
{
    parent_leak();
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        child_leak();
        free(keep[0]); /* inherited from the parent: an unknown free here */
        printf("child %d\n", (int)getpid());
        fflush(stdout);
        wait_eof();
        _exit(0);
    }
    wait_eof();
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
