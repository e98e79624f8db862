/* Runs a command COUNT times in sequence (1 by default), each to
 * completion, and writes what it cost to OUTFILE: wall time of the whole
 * sequence, user+system CPU and peak RSS of the children, their pids and
 * the last exit status. bench/run.py starts every measured run through it:
 *  - ru_maxrss survives execve, so a process spawned straight from Python
 *    would report at least Python's RSS; started from this small program,
 *    a child's peak RSS is its own;
 *  - the driver itself runs without LD_PRELOAD: -e NAME=VALUE sets the
 *    environment of the children only, so the driver is never traced;
 *  - "{i}" in an argument becomes the run's index (heaptrack needs one
 *    output file per process in the "many short processes" workload).
 *
 *   driver [-e NAME=VALUE]... [-n COUNT] -o OUTFILE COMMAND [ARG]...
 *
 * OUTFILE gets one line: wall=S user=S sys=S maxrss_kb=N status=N runs=N pids=P,P,...
 * Exit status: 0 when every run exited 0, else 1 (it stops at the first
 * failing run). */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char *subst(const char *arg, int i)
{
    const char *at = strstr(arg, "{i}");
    if (!at)
        return strdup(arg);
    size_t n = strlen(arg) + 16;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%.*s%d%s", (int)(at - arg), arg, i, at + 3);
    return s;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double tv(struct timeval t)
{
    return (double)t.tv_sec + (double)t.tv_usec * 1e-6;
}

static int usage(const char *me)
{
    fprintf(stderr, "usage: %s [-e NAME=VALUE]... [-n COUNT] -o OUTFILE COMMAND [ARG]...\n", me);
    return 2;
}

int main(int argc, char **argv)
{
    int count = 1, a = 1;
    const char *outpath = NULL;
    while (a + 1 < argc && argv[a][0] == '-') {
        if (!strcmp(argv[a], "-e")) {
            char *eq = strchr(argv[a + 1], '=');
            if (!eq) {
                fprintf(stderr, "driver: -e %s: not NAME=VALUE\n", argv[a + 1]);
                return 2;
            }
            *eq = '\0';
            setenv(argv[a + 1], eq + 1, 1);
        } else if (!strcmp(argv[a], "-n")) {
            count = atoi(argv[a + 1]);
        } else if (!strcmp(argv[a], "-o")) {
            outpath = argv[a + 1];
        } else {
            return usage(argv[0]);
        }
        a += 2;
    }
    if (a >= argc || !outpath || count < 1)
        return usage(argv[0]);
    FILE *out = fopen(outpath, "w");
    if (!out) {
        perror(outpath);
        return 2;
    }
    int nargs = argc - a;
    char **args = calloc((size_t)nargs + 1, sizeof *args);
    pid_t *pids = calloc((size_t)count, sizeof *pids);
    if (!args || !pids)
        return 1;
    int st = 0, runs = 0, rc = 0;
    double t0 = now();
    for (int i = 0; i < count; i++) {
        for (int k = 0; k < nargs; k++) {
            free(args[k]);
            args[k] = subst(argv[a + k], i);
            if (!args[k])
                return 1;
        }
        int e = posix_spawnp(&pids[i], args[0], NULL, NULL, args, environ);
        if (e) {
            fprintf(stderr, "driver: %s: %s\n", args[0], strerror(e));
            rc = 1;
            break;
        }
        runs++;
        if (waitpid(pids[i], &st, 0) < 0) {
            perror("driver: waitpid");
            rc = 1;
            break;
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "driver: run %d of %s failed (status 0x%x)\n", i, args[0], st);
            rc = 1;
            break;
        }
    }
    double wall = now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    fprintf(out, "wall=%.6f user=%.6f sys=%.6f maxrss_kb=%ld status=%d runs=%d pids=", wall,
            tv(ru.ru_utime), tv(ru.ru_stime), ru.ru_maxrss, st, runs);
    for (int i = 0; i < runs; i++)
        fprintf(out, "%s%d", i ? "," : "", (int)pids[i]);
    fprintf(out, "\n");
    if (fclose(out) != 0) {
        perror(outpath);
        return 2;
    }
    return rc;
}
