/* The demo's leaking service: for ~3 s it handles requests; each parses into
 * temporaries that are freed, caches some results that are evicted later, and
 * (the bug) keeps a copy of every session name it never frees. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CACHE 64

static char *cache[CACHE];
static char **sessions;
static size_t nsessions, cap;

static char *parse_request(int i)
{
    char *buf = malloc(4096);
    snprintf(buf, 4096, "GET /item/%d HTTP/1.1\r\nCookie: session=user%d\r\n", i, i % 977);
    return buf;
}

static void remember_session(const char *req)
{
    const char *s = strstr(req, "session=");
    if (!s)
        return;
    if (nsessions == cap) {
        cap = cap ? cap * 2 : 64;
        sessions = realloc(sessions, cap * sizeof *sessions);
    }
    sessions[nsessions++] = strndup(s + 8, 16); /* the leak: never freed */
}

static void cache_result(int i)
{
    int slot = i % CACHE;
    free(cache[slot]); /* eviction: bounded, not a leak */
    cache[slot] = malloc(256 + (size_t)(i % 100));
}

static void handle_request(int i)
{
    char *req = parse_request(i);
    remember_session(req);
    if (i % 3 == 0)
        cache_result(i);
    free(req);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int i = 0;
    do {
        for (int k = 0; k < 50; k++)
            handle_request(i++);
        usleep(5000);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    printf("demo: handled %d requests, holding %zu session names\n", i, nsessions);
    return 0;
}
