/* What real programs do to a preloaded agent, one mode at a time; each
 * prints "done ..." with its counts and waits for stdin EOF (so its leaks
 * can be queried), then exits 0.
 *
 *   faults churn             allocate and free until stdin EOF, leaking one block
 *                            in 1000; prints "done allocs N frees M leaked K"
 *   faults forks N           two threads allocating while the main thread forks N
 *                            children; each child leaks 3 blocks and exits
 *   faults threads N         N threads created and joined, each leaking one block
 *   faults dlopen N LIB      dlopen/dlclose LIB N times, leaking one block through
 *                            it each time (dl_leak)
 *   faults spawn N           posix_spawn and vfork+exec /bin/true, N times each
 *   faults closefds          close every fd above 2, dup2 /dev/null over 0..2's
 *                            copies, then leak 5 blocks (the agent's socket is gone)
 *   faults sighandler N      a SIGALRM handler that mallocs and frees, N ms of
 *                            itimer at 1 kHz while the main thread allocates
 *   faults setuid            (root) leak 4 blocks, setuid(65534), leak 4 more
 *   faults many K            20000 allocations freed, K blocks leaked (many_leak) */
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void *kept[100000];
static int nkept;
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;

static void keep(void *p)
{
    pthread_mutex_lock(&kept_lock);
    if (nkept < 100000)
        kept[nkept++] = p;
    pthread_mutex_unlock(&kept_lock);
}

/* Waits for EOF on fd (stdin, or its saved copy). */
static void wait_eof(int fd)
{
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

__attribute__((noinline)) void churn_leak(void)
{
    keep(malloc(123)); /* @LEAK churn */
}

static int stdin_closed(void)
{
    struct pollfd p = { .fd = 0, .events = POLLIN };
    if (poll(&p, 1, 0) <= 0)
        return 0;
    char c;
    return read(0, &c, 1) <= 0;
}

static int mode_churn(void)
{
    /* stdout's buffer is ours: the counts below are all the allocations. */
    static char obuf[4096];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    unsigned long allocs = 0, frees = 0, leaked = 0;
    void *ring[64] = { 0 };
    while (!stdin_closed()) {
        for (int i = 0; i < 5000; i++) {
            unsigned k = (unsigned)(allocs % 64);
            free(ring[k]);
            if (ring[k])
                frees++;
            ring[k] = malloc(16 + allocs % 200);
            allocs++;
            if (allocs % 1000 == 0) {
                churn_leak();
                allocs++;
                leaked++;
            }
        }
    }
    for (int k = 0; k < 64; k++)
        if (ring[k]) {
            free(ring[k]);
            frees++;
        }
    printf("done allocs %lu frees %lu leaked %lu\n", allocs, frees, leaked);
    return 0;
}

static volatile int stop_threads;

static void *allocator(void *arg)
{
    (void)arg;
    while (!stop_threads) {
        void *p = malloc(64);
        free(p);
    }
    return NULL;
}

__attribute__((noinline)) void child_leak(void)
{
    for (int i = 0; i < 3; i++)
        keep(malloc(555)); /* @LEAK child */
}

static int mode_forks(int n)
{
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, allocator, NULL);
    int ok = 0;
    for (int i = 0; i < n; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            child_leak();
            exit(7); /* a normal exit: its agent says goodbye */
        }
        int st;
        if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 7)
            ok++;
    }
    stop_threads = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    printf("done forks %d\n", ok);
    return 0;
}

__attribute__((noinline)) void thread_leak(void)
{
    keep(malloc(321)); /* @LEAK thread */
}

static void *short_thread(void *arg)
{
    (void)arg;
    free(malloc(32));
    thread_leak();
    return NULL;
}

static int mode_threads(int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, short_thread, NULL) == 0 && pthread_join(t, NULL) == 0)
            ok++;
    }
    printf("done threads %d\n", ok);
    return 0;
}

/* A thread whose first allocation happens inside pthread_getattr_np (glibc
 * reallocs its cpuset buffer holding the thread's lock), as CPython 3.14 and
 * Rust do at thread start; then a leak. */
__attribute__((noinline)) void getattr_leak(void)
{
    keep(malloc(123)); /* @LEAK getattr */
}

static void *getattr_thread(void *arg)
{
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        void *lo;
        size_t sz;
        if (pthread_attr_getstack(&a, &lo, &sz) == 0 && sz)
            __atomic_add_fetch((int *)arg, 1, __ATOMIC_RELAXED);
        pthread_attr_destroy(&a);
    }
    getattr_leak();
    return NULL;
}

static int mode_getattr(int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, getattr_thread, &ok) == 0)
            pthread_join(t, NULL);
    }
    printf("done getattr %d\n", ok);
    return 0;
}

static int mode_dlopen(int n, const char *lib)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        void *h = dlopen(lib, RTLD_NOW);
        if (!h) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            return 1;
        }
        void *(*site)(size_t) = (void *(*)(size_t))dlsym(h, "dl_leak");
        if (site) {
            keep(site(200));
            ok++;
        }
        dlclose(h);
    }
    printf("done dlopen %d\n", ok);
    return 0;
}

static int mode_spawn(int n)
{
    int ok = 0;
    char *argv[] = { "true", NULL };
    for (int i = 0; i < n; i++) {
        pid_t pid;
        int st;
        if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) == 0 &&
            waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
            ok++;
        pid = vfork();
        if (pid == 0) {
            execve("/bin/true", argv, environ);
            _exit(127);
        }
        if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
            ok++;
    }
    printf("done spawn %d\n", ok);
    return 0;
}

__attribute__((noinline)) void daemon_leak(void)
{
    for (int i = 0; i < 5; i++)
        keep(malloc(999)); /* @LEAK daemon */
}

static int mode_closefds(void)
{
    /* Like a daemon: keep our stdio on new numbers, close everything else
     * (the agent's socket and eventfd included), reuse low numbers. */
    int in = dup(0), out = dup(1);
    DIR *d = opendir("/proc/self/fd");
    int fds[1024], nfds = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && nfds < 1024) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != in && fd != out && fd != dirfd(d))
            fds[nfds++] = fd;
    }
    if (d)
        closedir(d);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    int nul = open("/dev/null", O_RDWR);
    for (int i = 0; i < 8; i++) /* fill the freed numbers with unrelated files */
        if (open("/dev/null", O_RDONLY) < 0)
            break;
    (void)nul;
    for (int i = 0; i < 100000; i++)
        free(malloc(48));
    daemon_leak();
    dprintf(out, "done closefds %d\n", nfds);
    wait_eof(in);
    return 0;
}

static volatile unsigned long handler_runs;

static void on_alarm(int sig)
{
    (void)sig;
    void *p = malloc(40); /* not async-signal-safe: programs do it anyway */
    free(p);
    handler_runs++;
}

static int mode_sighandler(int ms)
{
    struct sigaction sa = { 0 };
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = { { 0, 1000 }, { 0, 1000 } };
    setitimer(ITIMER_REAL, &it, NULL);
    struct timeval t0, t;
    gettimeofday(&t0, NULL);
    unsigned long n = 0;
    do {
        for (int i = 0; i < 1000; i++)
            free(malloc(100 + (n++ % 50)));
        gettimeofday(&t, NULL);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_usec - t0.tv_usec) / 1000 < ms);
    struct itimerval off = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &off, NULL);
    printf("done sighandler %s\n", handler_runs > 0 ? "ran" : "never");
    return 0;
}

__attribute__((noinline)) void uid_leak(void)
{
    for (int i = 0; i < 4; i++)
        keep(malloc(444)); /* @LEAK uid */
}

static int mode_setuid(void)
{
    uid_leak();
    if (setgid(65534) != 0 || setuid(65534) != 0) {
        printf("done setuid failed\n");
        return 0;
    }
    uid_leak();
    printf("done setuid %d\n", (int)getuid());
    return 0;
}

__attribute__((noinline)) void many_leak(int k)
{
    for (int i = 0; i < k; i++)
        keep(malloc(100 + (size_t)i)); /* @LEAK many */
}

static int mode_many(int k)
{
    void *ring[16] = { 0 };
    for (int i = 0; i < 20000; i++) {
        free(ring[i % 16]);
        ring[i % 16] = malloc(32 + (size_t)(i % 100));
    }
    for (int i = 0; i < 16; i++)
        free(ring[i]);
    many_leak(k);
    printf("done many %d\n", k);
    return 0;
}

int main(int argc, char **argv)
{
    const char *m = argc > 1 ? argv[1] : "";
    int n = argc > 2 ? atoi(argv[2]) : 0;
    int rc;
    if (!strcmp(m, "churn"))
        rc = mode_churn();
    else if (!strcmp(m, "forks"))
        rc = mode_forks(n);
    else if (!strcmp(m, "threads"))
        rc = mode_threads(n);
    else if (!strcmp(m, "dlopen") && argc > 3)
        rc = mode_dlopen(n, argv[3]);
    else if (!strcmp(m, "spawn"))
        rc = mode_spawn(n);
    else if (!strcmp(m, "closefds"))
        return mode_closefds();
    else if (!strcmp(m, "sighandler"))
        rc = mode_sighandler(n);
    else if (!strcmp(m, "setuid"))
        rc = mode_setuid();
    else if (!strcmp(m, "getattr"))
        rc = mode_getattr(n);
    else if (!strcmp(m, "many"))
        rc = mode_many(n);
    else {
        fprintf(stderr, "usage: faults churn|forks N|threads N|dlopen N LIB|spawn N|closefds|"
                        "sighandler MS|setuid|getattr N\n");
        return 2;
    }
    fflush(stdout);
    if (strcmp(m, "churn") != 0)
        wait_eof(0);
    return rc;
}
