/* Blocks that stay reachable and grow (a leak by age a reachability scan
 * cannot call lost): why are they kept? A global table of sessions
 * (g_sessions, in this program's bss) holds a bucket array, whose chains
 * hold every session (@LEAK session); a list on main's stack holds the
 * notes (@LEAK note). The retention path of the sessions must read
 * "g_sessions in retain -> table -> buckets -> these blocks"; of the notes,
 * "stack of thread PID (main) -> these blocks". Prints "ready PID" once all
 * are in place, then waits for EOF on stdin and frees nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scrub.h"

#define NBUCKETS 64

struct session {
    struct session *next;
    char key[40];
    char data[216];
};

struct table {
    struct session **buckets;
    size_t n;
};

struct note {
    struct note *next;
    char text[120];
};

struct table *g_sessions;

__attribute__((noinline)) static void make_table(void)
{
    g_sessions = malloc(sizeof *g_sessions); /* @LEAK table */
    g_sessions->buckets = calloc(NBUCKETS, sizeof *g_sessions->buckets); /* @LEAK buckets */
    g_sessions->n = 0;
}

__attribute__((noinline)) static void add_session(int i)
{
    struct session *s = malloc(sizeof *s); /* @LEAK session */
    memset(s, 0, sizeof *s);
    snprintf(s->key, sizeof s->key, "session-%d", i);
    size_t b = (size_t)i % 5; /* a few long chains */
    s->next = g_sessions->buckets[b];
    g_sessions->buckets[b] = s;
    g_sessions->n++;
}

__attribute__((noinline)) static struct note *add_note(struct note *head, int i)
{
    struct note *n = malloc(sizeof *n); /* @LEAK note */
    snprintf(n->text, sizeof n->text, "note %d", i);
    n->next = head;
    return n;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    make_table();
    for (int i = 0; i < 40; i++)
        add_session(i);
    struct note *volatile notes = NULL;
    for (int i = 0; i < 6; i++)
        notes = add_note(notes, i);
    scrub();
    printf("ready %d\n", (int)getpid());
    char b[64];
    while (read(0, b, sizeof b) > 0)
        ;
    return notes != NULL ? 0 : 1;
}
