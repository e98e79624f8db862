/* Linked against libctorleak.so, whose constructor leaks before the agent's
 * constructor runs. Waits for stdin EOF. */
#include <stdio.h>
#include <unistd.h>

void *ctorleak_get(int i);

int main(void)
{
    printf("ready %d\n", ctorleak_get(9) != NULL);
    fflush(stdout);
    char buf[16];
    while (read(0, buf, sizeof buf) > 0)
        ;
    return 0;
}
