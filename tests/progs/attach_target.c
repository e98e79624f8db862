/* A program started without the agent, for stackctl attach: it allocates
 * before anything is attached, then obeys commands read from stdin, one per
 * line, blocking in read() in between (so the attach finds it inside a
 * system call). Answers every command with "ok" (or the figure asked for).
 *
 *   leak N        N blocks of 4242 bytes from leak_after_attach(), kept
 *   churn N       N blocks allocated and freed at once (never a leak)
 *   free-pre      frees the PRE blocks allocated at start
 *   sleep MS      nanosleep (so an attach can find it there)
 *   getattr       pthread_getattr_np of this thread, called directly, then
 *                 through &pthread_getattr_np (both through its GOT entry,
 *                 GLOB_DAT since the address is taken, bound to glibc's at
 *                 start): "ok stack N M via MODULE", MODULE the object that
 *                 pointer is in (dladdr)
 *
 * Exits 0 at EOF, printing "done". The integration tests find "@LEAK name"
 * markers here. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PRE 100

static void *pre[PRE];
static void **kept;
static size_t nkept, capkept;

__attribute__((noinline)) void *leak_pre(void)
{
    return malloc(100 + 1); /* allocated before any attach */
}

__attribute__((noinline)) void leak_after_attach(void)
{
    void *p = malloc(4242); /* @LEAK after_attach */
    memset(p, 7, 4242);
    if (nkept == capkept) {
        capkept = capkept ? 2 * capkept : 64;
        kept = realloc(kept, capkept * sizeof *kept); /* @LEAK kept_array */
    }
    kept[nkept++] = p;
}

/* &pthread_getattr_np, read from the GOT at each call (not hoisted). */
__attribute__((noinline)) int (*getattr_ptr(void))(pthread_t, pthread_attr_t *)
{
    return pthread_getattr_np;
}

/* fn NULL: a direct call (through the PLT). */
static size_t stack_size(int (*fn)(pthread_t, pthread_attr_t *))
{
    pthread_attr_t a;
    size_t sz = 0;
    if ((fn ? fn(pthread_self(), &a) : pthread_getattr_np(pthread_self(), &a)) == 0) {
        pthread_attr_getstacksize(&a, &sz);
        pthread_attr_destroy(&a);
    }
    return sz;
}

__attribute__((noinline)) void churn_once(size_t n)
{
    char *p = malloc(n);
    p[0] = 1;
    free(p);
}

int main(void)
{
    for (int i = 0; i < PRE; i++)
        pre[i] = leak_pre();
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char line[128];
    /* read(2) directly: the attach finds this thread inside the call. */
    size_t have = 0;
    for (;;) {
        ssize_t r = read(0, line + have, sizeof line - 1 - have);
        if (r <= 0)
            break;
        have += (size_t)r;
        line[have] = '\0';
        char *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = '\0';
            long n = 0;
            if (sscanf(line, "leak %ld", &n) == 1) {
                for (long i = 0; i < n; i++)
                    leak_after_attach();
            } else if (sscanf(line, "churn %ld", &n) == 1) {
                for (long i = 0; i < n; i++)
                    churn_once(64 + (size_t)(i % 512));
            } else if (!strcmp(line, "getattr")) {
                size_t plt = stack_size(NULL);
                int (*fn)(pthread_t, pthread_attr_t *) = getattr_ptr();
                Dl_info di;
                const char *mod = dladdr((void *)fn, &di) && di.dli_fname ? di.dli_fname : "?";
                printf("ok stack %zu %zu via %s\n", plt, stack_size(fn), mod);
            } else if (!strcmp(line, "free-pre")) {
                for (int i = 0; i < PRE; i++) {
                    free(pre[i]);
                    pre[i] = NULL;
                }
            } else if (sscanf(line, "sleep %ld", &n) == 1) {
                struct timespec ts = { n / 1000, (n % 1000) * 1000000L };
                nanosleep(&ts, NULL);
            }
            if (strcmp(line, "getattr"))
                printf("ok\n");
            fflush(stdout);
            have -= (size_t)(nl + 1 - line);
            memmove(line, nl + 1, have + 1);
        }
    }
    printf("done %zu\n", nkept);
    return 0;
}
