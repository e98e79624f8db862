/* Deterministic output and exit status, with allocations: run with and
 * without the agent (no collector), the outputs must be identical. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    unsigned long sum = 0;
    for (int i = 0; i < 5000; i++) {
        char *p = malloc((size_t)(i % 300) + 1);
        memset(p, i & 0xff, (size_t)(i % 300) + 1);
        sum += (unsigned char)p[0];
        p = realloc(p, 512);
        free(p);
    }
    char *s = strdup(argc > 1 ? argv[1] : "none");
    printf("sum=%lu arg=%s\n", sum, s);
    for (int i = 0; i < 3; i++)
        printf("line %d\n", i);
    free(s);
    return 7;
}
