/* Lost blocks that own others, for the direct/indirect split and its
 * owners, compared with valgrind's (tests/integration/test_oracle.py). At
 * the point where it prints "ready PID", the heap is exactly what it is at
 * exit (nothing is freed after), so a scan then and valgrind's leak check at
 * exit see the same blocks. Then it waits for EOF on stdin and returns.
 *
 *   4 connections lost: each conn (@LEAK conn, direct) owns a buffer
 *     (@LEAK buf) and an event (@LEAK ev) that points back at it (a cycle
 *     through the direct block);
 *   3 trees lost whose child was allocated before the parent (so at a lower
 *     address: the child leads until the parent is found), parent (@LEAK
 *     parent, direct) owns child (@LEAK child);
 *   a table kept in a global (@LEAK table) with 8 entries (@LEAK entry):
 *     reachable;
 *   2 blocks lost alone (@LEAK alone). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scrub.h"

struct ev {
    void (*cb)(void *);
    void *cb_arg;
    char pad[32];
};

struct conn {
    char *buf;
    struct ev *ev;
    char pad[80];
};

struct node {
    struct node *child;
    char pad[292];
};

static void **table;

static void on_ev(void *arg)
{
    (void)arg;
}

__attribute__((noinline)) static char *make_buf(void)
{
    char *b = malloc(1000); /* @LEAK buf */
    memset(b, 0, 1000);
    return b;
}

__attribute__((noinline)) static struct ev *make_ev(void *arg)
{
    struct ev *e = malloc(sizeof *e); /* @LEAK ev */
    memset(e, 0, sizeof *e);
    e->cb = on_ev;
    e->cb_arg = arg;
    return e;
}

__attribute__((noinline)) static void lose_conn(void)
{
    struct conn *c = malloc(sizeof *c); /* @LEAK conn */
    memset(c, 0, sizeof *c);
    c->buf = make_buf();
    c->ev = make_ev(c);
}

__attribute__((noinline)) static void lose_tree(void)
{
    struct node *child = malloc(200); /* @LEAK child */
    memset(child, 0, 200);
    struct node *parent = malloc(sizeof *parent); /* @LEAK parent */
    memset(parent, 0, sizeof *parent);
    parent->child = child;
}

__attribute__((noinline)) static void keep_table(void)
{
    table = malloc(8 * sizeof *table); /* @LEAK table */
    for (int i = 0; i < 8; i++) {
        table[i] = malloc(64); /* @LEAK entry */
        memset(table[i], 0, 64);
    }
}

__attribute__((noinline)) static void lose_alone(void)
{
    char *p = malloc(555); /* @LEAK alone */
    memset(p, 7, 555);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0); /* no stdio buffer in the heap */
    for (int i = 0; i < 4; i++)
        lose_conn();
    for (int i = 0; i < 3; i++)
        lose_tree();
    keep_table();
    for (int i = 0; i < 2; i++)
        lose_alone();
    scrub();
    printf("ready %d\n", (int)getpid());
    char b[64];
    while (read(0, b, sizeof b) > 0)
        ;
    scrub();
    return 0;
}
