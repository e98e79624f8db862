/* Oracle: shapes of lost memory: a block pointing to itself, a ring of
 * three, a chain whose head was allocated last, a pointer kept only at an
 * unaligned address (neither tool reads unaligned words), only an interior
 * pointer kept (valgrind: possibly lost; LeakSanitizer: reachable), a large
 * block (its own mapping) lost and one kept, malloc(0) lost and kept. */
#include <stdint.h>
#include <stdlib.h>
#include "oracle.h"

static char g_unaligned[16];
static char *g_interior;
static void *g_large_kept, *g_zero_kept;

__attribute__((noinline)) static void lose_self(void)
{
    void **p = malloc(5001); /* @LEAK self */
    *p = p;
}

__attribute__((noinline)) static void lose_ring(void)
{
    void **a = malloc(5002); /* @LEAK ring */
    void **b = malloc(5002); /* @LEAK ring2 */
    void **c = malloc(5002); /* @LEAK ring3 */
    *a = b;
    *b = c;
    *c = a;
}

__attribute__((noinline)) static void lose_chain(void)
{
    void **tail = malloc(5003); /* @LEAK chain_tail */
    *tail = NULL;
    void **head = malloc(5004); /* @LEAK chain_head */
    *head = tail;
}

int main(void)
{
    lose_self();
    lose_ring();
    lose_chain();
    void *u = malloc(5005); /* @LEAK unaligned */
    memcpy(g_unaligned + 3, &u, sizeof u);
    u = NULL;
    g_interior = (char *)malloc(5006) + 100; /* @LEAK interior */
    void *volatile big = malloc(4u << 20); /* @LEAK large_lost */
    big = NULL;
    g_large_kept = malloc(4u << 20); /* @LEAK large_kept */
    void *volatile z = malloc(0); /* @LEAK zero_lost */
    z = NULL;
    g_zero_kept = malloc(0); /* @LEAK zero_kept */
    ready();
    return big != NULL || z != NULL;
}
