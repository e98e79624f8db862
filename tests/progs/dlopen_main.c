/* dlopens libdlleak.so (path in argv[1]) and leaks through it; then, with a
 * second argument, dlcloses it. Waits for stdin EOF before exiting. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: dlopen_main LIB [close]\n");
        return 2;
    }
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    void *(*leak)(size_t) = (void *(*)(size_t))dlsym(h, "dl_leak");
    void (*noise)(void) = (void (*)(void))dlsym(h, "dl_noise");
    if (!leak || !noise)
        return 1;
    /* Let the agent's flusher see the new module (it refreshes its map
     * within its 10 ms period) before the library allocates. */
    usleep(100 * 1000);
    noise();
    for (int i = 0; i < 3; i++)
        leak(777);
    printf("ready\n");
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    if (argc > 2)
        dlclose(h);
    return 0;
}
