/* The blamed Python frames of a stack, placed among its C frames: the merged stack of text and HTML, folded, pprof; a stack's name. */
#include "py.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "collector/common/cpython.h"

static const char *base_of(const char *p)
{
    const char *s = p ? strrchr(p, '/') : NULL;
    return s ? s + 1 : (p ? p : "");
}

static cpython_fr_t frame_at(const void *ctx, size_t k)
{
    const Stackwatch__Frame *fr = ((const Stackwatch__StackReport *)ctx)->frames[k];
    return (cpython_fr_t){ fr->module, fr->function };
}

size_t cli_py_anchor(const Stackwatch__StackReport *s)
{
    return cpython_anchor(s, s->n_frames, frame_at);
}

int cli_py_interp(const Stackwatch__Frame *fr)
{
    return cpython_frame(fr->module, fr->function);
}

size_t cli_py_entries(const Stackwatch__StackReport *s)
{
    size_t n = 0;
    for (size_t k = 0; k < s->n_frames; k++)
        n += cpython_eval_loop(s->frames[k]->function) != 0;
    return n;
}

/* Frames [k, j) as one fold row, or as themselves when fewer than two. */
static void fold(size_t k, size_t j, cli_row_fn fn, void *ctx)
{
    if (j - k >= 2)
        fn(ctx, CLI_ROW_FOLD, k, j - k);
    else
        for (; k < j; k++)
            fn(ctx, CLI_ROW_FRAME, k, 1);
}

void cli_py_rows(const Stackwatch__StackReport *s, int python, int all_frames, cli_row_fn fn,
                 void *ctx)
{
    size_t n = s->n_frames, a = cli_py_anchor(s);
    int placed = !python;
    for (size_t k = 0; k < n;) {
        if (!cli_py_interp(s->frames[k])) {
            fn(ctx, CLI_ROW_FRAME, k++, 1);
            continue;
        }
        size_t j = k;
        while (j < n && cli_py_interp(s->frames[j]))
            j++;
        int here = k <= a && a < j; /* the run holds the frame the Python frames run under */
        if (all_frames) {
            for (; k < j; k++) {
                if (k == a && !placed) {
                    fn(ctx, CLI_ROW_PYTHON, k, 0);
                    placed = 1;
                }
                fn(ctx, CLI_ROW_FRAME, k, 1);
            }
            continue;
        }
        if (k == 0) {
            /* The stack starts in the interpreter: what it was doing (its
             * own allocation: unmarshal, a dict resize) is the site, shown
             * up to the eval loop; the rest of the run folds. */
            size_t upto = here ? a : j;
            for (; k < upto; k++)
                fn(ctx, CLI_ROW_FRAME, k, 1);
        }
        if (here && !placed) {
            fn(ctx, CLI_ROW_PYTHON, k, 0);
            placed = 1;
        }
        fold(k, j, fn, ctx);
        k = j;
    }
    if (s->truncated)
        fn(ctx, CLI_ROW_CUT, n, 0);
    if (!placed)
        fn(ctx, CLI_ROW_PYTHON, n, 0);
}

const Stackwatch__Frame *cli_stack_site(const Stackwatch__StackReport *s)
{
    return s->n_frames ? s->frames[cpython_site(s, s->n_frames, frame_at)] : NULL;
}

const char *cli_stack_name(char *buf, size_t cap, const Stackwatch__StackReport *s)
{
    const Stackwatch__Frame *top = cli_stack_site(s);
    if (top)
        cpython_short_name(buf, cap, top->module, top->function, top->module_offset, top->addr);
    else
        snprintf(buf, cap, "(no frames)");
    const Stackwatch__PyTraceback *tb = cli_py_top(s);
    if (cap && tb) {
        size_t n = strlen(buf);
        char py[512];
        snprintf(buf + n, cap - n, " ← %s", cli_py_name(py, sizeof py, tb->frames[0]));
    }
    return buf;
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

const Stackwatch__PyTraceback *cli_py_top(const Stackwatch__StackReport *s)
{
    const Stackwatch__PyTraceback *tb = NULL;
    cli_py_blamed(s, &tb, 1);
    return tb;
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
