/* Embeds CPython the way applications do: dlopen(libpython) after start,
 * Py_Initialize, then runs a script with its arguments:
 *   embed_python LIBPYTHON SCRIPT [ARGS...]
 * The agent did not see an interpreter at start; it must find this one. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: embed_python LIBPYTHON SCRIPT [ARGS...]\n");
        return 2;
    }
    /* RTLD_GLOBAL: extension modules (ctypes) resolve Python's symbols. */
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    void (*init)(void) = (void (*)(void))dlsym(h, "Py_Initialize");
    int (*run)(const char *) = (int (*)(const char *))dlsym(h, "PyRun_SimpleString");
    int (*fini)(void) = (int (*)(void))dlsym(h, "Py_FinalizeEx");
    if (!init || !run || !fini)
        return 1;
    char code[8192];
    size_t n = (size_t)snprintf(code, sizeof code, "import sys, runpy\nsys.argv = [%s%s%s",
                                "'", argv[2], "'");
    for (int i = 3; i < argc && n < sizeof code - 256; i++)
        n += (size_t)snprintf(code + n, sizeof code - n, ", '%s'", argv[i]);
    snprintf(code + n, sizeof code - n, "]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n");
    init();
    int rc = run(code);
    fini();
    return rc == 0 ? 0 : 1;
}
