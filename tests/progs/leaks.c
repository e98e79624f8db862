/* Plants one leak through every interposed allocation function, each at a
 * marked line in its own function, plus freed noise through the same
 * functions. Runs until stdin reaches EOF, then exits 0.
 *
 * The integration tests find "@LEAK name" / "@NOISE name" markers in this
 * file to know the line each stack must be reported at. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOISE_ROUNDS 200

static void *keep[64];
static int nkeep;

static void hold(void *p)
{
    keep[nkeep++] = p;
}

void leak_malloc(void)
{
    hold(malloc(1001)); /* @LEAK malloc */
}

void leak_calloc(void)
{
    hold(calloc(10, 101)); /* @LEAK calloc */
}

void leak_realloc_null(void)
{
    hold(realloc(NULL, 1003)); /* @LEAK realloc_null */
}

void leak_realloc_grow(void)
{
    void *p = malloc(16); /* @NOISE realloc_grow_src */
    memset(p, 1, 16);
    hold(realloc(p, 100004)); /* @LEAK realloc_grow */
}

void leak_reallocarray(void)
{
    hold(reallocarray(NULL, 5, 201)); /* @LEAK reallocarray */
}

void leak_posix_memalign(void)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, 1006) == 0) /* @LEAK posix_memalign */
        hold(p);
}

void leak_aligned_alloc(void)
{
    hold(aligned_alloc(128, 1024 + 128)); /* @LEAK aligned_alloc */
}

void leak_memalign(void)
{
    hold(memalign(256, 1008)); /* @LEAK memalign */
}

void leak_valloc(void)
{
    hold(valloc(1009)); /* @LEAK valloc */
}

void leak_pvalloc(void)
{
    hold(pvalloc(1010)); /* @LEAK pvalloc */
}

void leak_strdup(void)
{
    hold(strdup("a string that strdup copies with malloc inside libc")); /* @LEAK strdup */
}

void noise_all(void)
{
    for (int i = 0; i < NOISE_ROUNDS; i++) {
        void *a = malloc(32 + i);                   /* @NOISE malloc */
        void *b = calloc(4, 8);                     /* @NOISE calloc */
        void *c = realloc(NULL, 48);                /* @NOISE realloc_null */
        c = realloc(c, 4096);                       /* @NOISE realloc_grow */
        void *d = reallocarray(NULL, 3, 7);         /* @NOISE reallocarray */
        void *e = NULL;
        if (posix_memalign(&e, 32, 40) != 0)        /* @NOISE posix_memalign */
            e = NULL;
        void *f = aligned_alloc(64, 128);           /* @NOISE aligned_alloc */
        void *g = memalign(64, 72);                 /* @NOISE memalign */
        void *h = valloc(80);                       /* @NOISE valloc */
        void *k = pvalloc(88);                      /* @NOISE pvalloc */
        char *s = strdup("noise");                  /* @NOISE strdup */
        free(a);
        free(b);
        free(c);
        free(d);
        free(e);
        free(f);
        free(g);
        free(h);
        free(k);
        free(s);
    }
}

int main(void)
{
    noise_all();
    leak_malloc();
    leak_calloc();
    leak_realloc_null();
    leak_realloc_grow();
    leak_reallocarray();
    leak_posix_memalign();
    leak_aligned_alloc();
    leak_memalign();
    leak_valloc();
    leak_pvalloc();
    leak_strdup();
    noise_all();
    printf("ready %d\n", nkeep);
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    return 0;
}
