/* Which frames of a C stack are CPython's own, and a frame's short name: shared by stackctl's reports and collectord's metrics. */
#include "cpython.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *base_of(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int cpython_eval_loop(const char *function)
{
    return function && strncmp(function, "_PyEval_EvalFrame", 17) == 0;
}

int cpython_frame(const char *module, const char *function)
{
    if (cpython_eval_loop(function) || (function && strncmp(function, "PyEval_EvalCode", 15) == 0))
        return 1;
    if (!module || !*module)
        return 0;
    const char *b = base_of(module);
    if (strncmp(b, "libpython", 9) == 0)
        return 1;
    /* python3, python3.11, python3.11d, python3-dbg: the executable. */
    return strncmp(b, "python3", 7) == 0 && !strstr(b, ".so");
}

static int set(const char *s)
{
    return s && *s;
}

size_t cpython_anchor(const void *ctx, size_t n, cpython_at_fn at)
{
    for (size_t k = 0; k < n; k++) {
        const char *fn = at(ctx, k).function;
        if (cpython_eval_loop(fn) || (fn && strcmp(fn, "PyEval_EvalCode") == 0))
            return k;
    }
    for (size_t k = 0; k < n; k++)
        if (cpython_frame(at(ctx, k).module, NULL))
            return k;
    return n;
}

size_t cpython_site(const void *ctx, size_t n, cpython_at_fn at)
{
    size_t a = cpython_anchor(ctx, n, at);
    for (size_t k = 0; k < a; k++) {
        cpython_fr_t f = at(ctx, k);
        if ((set(f.function) || set(f.module)) && !cpython_frame(f.module, f.function))
            return k;
    }
    for (size_t k = 0; k < n; k++)
        if (set(at(ctx, k).function))
            return k;
    for (size_t k = 0; k < n; k++)
        if (set(at(ctx, k).module))
            return k;
    return 0;
}

const char *cpython_short_name(char *buf, size_t cap, const char *module, const char *function,
                               uint64_t module_offset, uint64_t addr)
{
    if (function && *function) {
        snprintf(buf, cap, "%s", function);
    } else if (module && *module) {
        const char *b = base_of(module);
        const char *dot = strchr(b, '.');
        int n = dot && dot > b ? (int)(dot - b) : (int)strlen(b);
        snprintf(buf, cap, "%.*s+0x%" PRIx64, n, b, module_offset);
    } else {
        snprintf(buf, cap, "0x%" PRIx64, addr);
    }
    return buf;
}
