/* Oracle: globals as roots (initialized data, bss), and a block lost. */
#include <stdlib.h>
#include "oracle.h"

void *g_data = (void *)1; /* in .data */
void *g_bss;              /* in .bss */

int main(void)
{
    g_data = malloc(1001); /* @LEAK data */
    g_bss = malloc(1002);  /* @LEAK bss */
    void *volatile lost = malloc(1003); /* @LEAK lost */
    lost = NULL;
    ready();
    return lost != NULL;
}
