/* dlopen A, leak through it, dlclose A, dlopen B (same size: it lands where
 * A was), leak through B. Prints "A 0xBASE" and "B 0xBASE", then "ready".
 * Waits for stdin EOF. usage: dlreuse_main LIBA LIBB */
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <unistd.h>

static void *load(const char *path, const char *tag)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
        return NULL;
    }
    struct link_map *lm = NULL;
    dlinfo(h, RTLD_DI_LINKMAP, &lm);
    printf("%s %p\n", tag, lm ? (void *)lm->l_addr : NULL);
    void *(*leak)(size_t) = (void *(*)(size_t))dlsym(h, "dl_leak");
    if (leak)
        for (int i = 0; i < 4; i++)
            leak(600);
    return h;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    void *a = load(argv[1], "A");
    if (!a)
        return 1;
    usleep(100000); /* let the agent's flusher send A's stacks */
    dlclose(a);
    if (!load(argv[2], "B"))
        return 1;
    printf("ready\n");
    fflush(stdout);
    char buf[16];
    while (read(0, buf, sizeof buf) > 0)
        ;
    return 0;
}
