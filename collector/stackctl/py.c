/* The blamed Python frames of a stack, placed among its C frames, for folded, pprof and HTML. */
#include "py.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *base_of(const char *p)
{
    const char *s = p ? strrchr(p, '/') : NULL;
    return s ? s + 1 : (p ? p : "");
}

size_t cli_py_anchor(const Stackwatch__StackReport *s)
{
    for (size_t k = 0; k < s->n_frames; k++) {
        const char *fn = s->frames[k]->function;
        if (fn && (strncmp(fn, "_PyEval_EvalFrame", 17) == 0 || strcmp(fn, "PyEval_EvalCode") == 0))
            return k;
    }
    for (size_t k = 0; k < s->n_frames; k++) {
        const char *b = base_of(s->frames[k]->module);
        if (strncmp(b, "libpython", 9) == 0 || strncmp(b, "python3", 7) == 0)
            return k;
    }
    return s->n_frames;
}

size_t cli_py_blamed(const Stackwatch__StackReport *s, const Stackwatch__PyTraceback **out,
                     size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_python && n < cap; i++)
        if (s->python[i]->blamed && s->python[i]->n_frames)
            out[n++] = s->python[i];
    return n;
}

const char *cli_py_verdict(const Stackwatch__PyTraceback *t)
{
    if (t->blamed)
        return "blamed: its blocks stay live";
    if (t->live && t->live->count)
        return "not blamed yet: its live blocks are younger than the expire time";
    return "not blamed: its blocks are freed";
}

static uint64_t weight(const Stackwatch__PyTraceback *t)
{
    if (t->may_leak && t->may_leak->bytes)
        return t->may_leak->bytes;
    if (t->live && t->live->bytes)
        return t->live->bytes;
    return 1;
}

uint64_t cli_py_share(uint64_t total, const Stackwatch__PyTraceback *const *tbs, size_t n,
                      size_t i)
{
    if (n <= 1)
        return total;
    unsigned __int128 sum = 0, before = 0;
    for (size_t k = 0; k < n; k++) {
        if (k < i)
            before += weight(tbs[k]);
        sum += weight(tbs[k]);
    }
    /* Cumulative split: rounding never loses or adds a byte. */
    uint64_t lo = (uint64_t)(total * before / sum);
    uint64_t hi = (uint64_t)(total * (before + weight(tbs[i])) / sum);
    return hi - lo;
}

const char *cli_py_name(char *buf, size_t cap, const Stackwatch__PyFrame *fr)
{
    snprintf(buf, cap, "%s:%u %s", base_of(fr->file), fr->line,
             fr->function && *fr->function ? fr->function : "?");
    return buf;
}
