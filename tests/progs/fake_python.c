/* Looks like a CPython 3.10 to the agent's probe (exports Py_Version,
 * _PyRuntime and PyCode_Addr2Line; link with -rdynamic): the agent must say
 * once that it cannot read its frames, and trace it normally. Prints "ok". */
#include <stdio.h>
#include <stdlib.h>

const unsigned long Py_Version = 0x030A08F0UL; /* 3.10.8 */
char _PyRuntime[4096];

int PyCode_Addr2Line(void *code, int addr)
{
    (void)code;
    return addr;
}

int main(void)
{
    for (int i = 0; i < 100; i++)
        free(malloc(100));
    printf("ok\n");
    return 0;
}
