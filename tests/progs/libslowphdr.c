/* Preloaded in front of libstackagent.so by test_faults (never with a real
 * program): the agent's flusher thread (named "stackwatch") stays 50 ms
 * inside every dl_iterate_phdr it calls, with the loader's lock held, and
 * slowphdr_inside says so meanwhile: dlfork's forker waits for it and
 * forks right then. Other threads' calls go straight through. */
#include <dlfcn.h>
#include <link.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

int slowphdr_inside;

typedef int (*phdr_cb)(struct dl_phdr_info *, size_t, void *);

struct slow {
    phdr_cb cb;
    void *data;
    int first;
};

static int slow_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct slow *s = arg;
    if (s->first) {
        s->first = 0;
        struct timespec ts = { 0, 50 * 1000 * 1000 };
        __atomic_store_n(&slowphdr_inside, 1, __ATOMIC_RELEASE);
        nanosleep(&ts, NULL);
        __atomic_store_n(&slowphdr_inside, 0, __ATOMIC_RELEASE);
    }
    return s->cb(info, size, s->data);
}

int dl_iterate_phdr(phdr_cb cb, void *data)
{
    static int (*next)(phdr_cb, void *);
    if (!next)
        next = (int (*)(phdr_cb, void *))dlsym(RTLD_NEXT, "dl_iterate_phdr");
    char name[16] = "";
    prctl(PR_GET_NAME, (unsigned long)name, 0, 0, 0);
    if (strcmp(name, "stackwatch") != 0)
        return next(cb, data);
    struct slow s = { cb, data, 1 };
    return next(slow_cb, &s);
}
