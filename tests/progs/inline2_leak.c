/* Two levels of inlining at -O2 (built with -O2 -g): make_record inlined
 * into handle_request inlined into conn_thread. The report must show every
 * inline level with its own call line, as `addr2line -i` does:
 * make_record at the malloc line, handle_request at its call of
 * make_record, conn_thread at its call of handle_request. Waits for stdin EOF. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *keep[64];
static volatile int nkeep;

static inline __attribute__((always_inline)) void *make_record(size_t n)
{
    void *p = malloc(n); /* @LEAK record_site */
    if (p)
        ((char *)p)[0] = 1;
    return p;
}

static inline __attribute__((always_inline)) void handle_request(int i)
{
    void *r = make_record(913 + (size_t)i); /* @LEAK request_call */
    if (r)
        keep[nkeep++] = r;
}

__attribute__((noinline)) void *conn_thread(void *arg)
{
    int n = *(int *)arg;
    for (int i = 0; i < n; i++)
        handle_request(i); /* @LEAK conn_call */
    return NULL;
}

int main(void)
{
    int n = 8;
    pthread_t t;
    if (pthread_create(&t, NULL, conn_thread, &n) != 0)
        return 1;
    pthread_join(t, NULL);
    printf("ready\n");
    fflush(stdout);
    char buf[16];
    while (read(0, buf, sizeof buf) > 0)
        ;
    return 0;
}
