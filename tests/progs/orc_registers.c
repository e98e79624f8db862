/* Oracle: a block whose only pointer is in a register of a thread that
 * spins (r12, callee-saved; no copy in memory). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "oracle.h"

static _Atomic int spinning, stop;

__attribute__((noinline)) static void *make(void)
{
    return malloc(3001); /* @LEAK in_register */
}

static void *worker(void *arg)
{
    (void)arg;
    void *p = make();
    scrub();
    atomic_store(&spinning, 1);
    /* p lives in r12 only while this loop runs. */
    __asm__ volatile("mov %0, %%r12\n\t"
                     "xor %0, %0\n"
                     "1:\tpause\n\t"
                     "cmpl $0, %1\n\t"
                     "je 1b\n\t"
                     "xor %%r12d, %%r12d"
                     : "+r"(p) : "m"(stop) : "r12", "memory");
    return NULL;
}

int main(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 2;
    while (!atomic_load(&spinning))
        ;
    ready();
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    return 0;
}
