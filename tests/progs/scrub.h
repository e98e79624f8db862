/* scrub(): overwrites the stack below the caller and the caller-saved
 * registers, so no dead copy of a dropped pointer stays where a
 * reachability scan (or valgrind's leak check) looks. For the test programs
 * of the scan (reach.c, owners.c, tsdkeys.c, retain.c, the oracle's). */
#ifndef STACKWATCH_TESTS_SCRUB_H
#define STACKWATCH_TESTS_SCRUB_H

#include <string.h>

__attribute__((noinline, unused)) static void scrub(void)
{
    volatile char buf[32768];
    memset((char *)buf, 0, sizeof buf);
    __asm__ volatile("xor %%eax, %%eax\n\txor %%ecx, %%ecx\n\txor %%edx, %%edx\n\t"
                     "xor %%esi, %%esi\n\txor %%edi, %%edi\n\txor %%r8d, %%r8d\n\t"
                     "xor %%r9d, %%r9d\n\txor %%r10d, %%r10d\n\txor %%r11d, %%r11d"
                     ::: "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11",
                         "memory");
}

#endif
