/* stackctl's renderings of collectord replies: memleax-shaped text and JSON. */
#include "report.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "py.h"
#include "json.h"
#include "collector/common/cpython.h"
#include "collector/common/signame.h"

static const Stackwatch__Count zero_count = STACKWATCH__COUNT__INIT;

static const Stackwatch__Count *cnt(const Stackwatch__Count *c)
{
    return c ? c : &zero_count;
}

void cli_cmdline(char *buf, size_t cap, const Stackwatch__ClientInfo *c)
{
    size_t n = 0;
    buf[0] = '\0';
    if (c->n_argv == 0) {
        snprintf(buf, cap, "%s", c->exe ? c->exe : "");
        return;
    }
    for (size_t i = 0; i < c->n_argv && n + 1 < cap; i++) {
        int w = snprintf(buf + n, cap - n, "%s%s", i ? " " : "", c->argv[i]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

static int empty(const char *s)
{
    return !s || !*s;
}

void cli_time(char *buf, size_t cap, uint64_t unix_ms)
{
    time_t t = (time_t)(unix_ms / 1000u);
    struct tm tm;
    if (!localtime_r(&t, &tm) || !strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm))
        snprintf(buf, cap, "%" PRIu64 " ms", unix_ms);
}

static void text_frame(FILE *f, const Stackwatch__Frame *fr)
{
    fprintf(f, "    0x%016" PRIx64 "  ", fr->addr);
    if (!empty(fr->function))
        fprintf(f, "%s()+%" PRIu64, fr->function, fr->offset);
    else if (!empty(fr->module))
        fprintf(f, "%s+0x%" PRIx64, strrchr(fr->module, '/') ? strrchr(fr->module, '/') + 1
                                                               : fr->module,
                fr->module_offset);
    else
        fputs("??", f);
    if (fr->is_inline)
        fputs(" [inline]", f);
    if (!empty(fr->file))
        fprintf(f, "  %s:%u", fr->file, fr->line);
    if (!empty(fr->module))
        fprintf(f, "  (%s)", fr->module);
    fputc('\n', f);
}

static void mb(char *buf, size_t n, uint64_t b)
{
    snprintf(buf, n, "%.1f MB", b / 1e6);
}

/* The process's memory beside what is tracked, and where the rest is when
 * the tracked live bytes explain less than half of the RSS growth: no
 * silent blind spot (issue 18.4). */
static void text_memory_account(FILE *f, const Stackwatch__ClientInfo *c)
{
    if (!c->rss_bytes)
        return;
    char rss[32], grow[32], live[32], heap[32], fre[32], out[32];
    uint64_t live_b = cnt(c->live)->bytes;
    uint64_t g = c->rss_bytes > c->rss_start_bytes ? c->rss_bytes - c->rss_start_bytes : 0;
    mb(rss, sizeof rss, c->rss_bytes);
    mb(grow, sizeof grow, g);
    mb(live, sizeof live, live_b);
    mb(heap, sizeof heap, c->heap_bytes);
    mb(fre, sizeof fre, c->heap_free_bytes);
    fprintf(f, "      memory: RSS %s (+%s since tracking began), tracked live %s%s, malloc holds "
               "%s (%s of it free)\n",
            rss, grow, c->sample_bytes || (c->python_hooked && c->python_sample_bytes) ? "~" : "",
            live, heap, fre);
    if (g < (4u << 20) || 2 * live_b >= g)
        return;
    /* Where the growth went: malloc's footprint (live and free-but-held) or
     * outside malloc. */
    uint64_t hg = c->heap_bytes > c->heap_start_bytes ? c->heap_bytes - c->heap_start_bytes : 0;
    uint64_t outside = g > hg ? g - hg : 0;
    /* pymalloc's arenas are mapped outside malloc: name their part. */
    uint64_t pyar = c->pyarena_known && c->pyarena_growth_bytes > 0
                        ? (uint64_t)c->pyarena_growth_bytes : 0;
    if (pyar > outside)
        pyar = outside;
    outside -= pyar;
    mb(out, sizeof out, outside);
    fprintf(f, "      note: tracked live bytes explain %.0f%% of the RSS growth:", 100.0 * live_b / g);
    int any = 0;
    if (c->heap_free_bytes >= g / 4) {
        fprintf(f, " malloc holds %s free (fragmentation, or freed memory not returned)", fre);
        any = 1;
    }
    if (pyar >= g / 4) {
        char pa[32];
        mb(pa, sizeof pa, pyar);
        fprintf(f, "%s pymalloc's arenas grew %s (Python small objects: live ones are in the "
                   "tracked bytes as traced; the rest is free memory CPython keeps)",
                any ? ";" : "", pa);
        any = 1;
    }
    if (outside >= g / 4) {
        fprintf(f, "%s %s grew outside malloc (anonymous mmap, thread stacks, or an allocator "
                   "the agent does not trace%s)",
                any ? ";" : "", out,
                !c->python_version ? ""
                : c->python_hooked ? "; in this Python process pymalloc's arenas hold small "
                                     "objects, sampled, and freed ones pymalloc keeps"
                : c->python_allocators && !strcmp(c->python_allocators, "off")
                    ? "; in this Python process small objects (pymalloc) are not traced: "
                      "STACKWATCH_PYTHON_ALLOCATORS=0"
                    : "; in this Python process small objects (pymalloc) are not traced: the "
                      "agent did not hook CPython's allocators");
        any = 1;
    }
    if (!any)
        fprintf(f, " the rest is spread over malloc's live blocks not tracked (sampled, "
                   "attached later, --max-live) and memory outside it");
    fputc('\n', f);
}

static void size_words(char *buf, size_t n, uint64_t b)
{
    if (b >= (1u << 20) && b % (1u << 20) == 0)
        snprintf(buf, n, "%" PRIu64 " MiB", b >> 20);
    else if (b >= 1024 && b % 1024 == 0)
        snprintf(buf, n, "%" PRIu64 " KiB", b >> 10);
    else
        snprintf(buf, n, "%" PRIu64 " bytes", b);
}

/* What the figures of a process rest on, per allocator, in one line:
 * "malloc: exact; Python small objects: sampled every 256 KiB". */
void cli_traced_line(char *buf, size_t n, const Stackwatch__ClientInfo *c)
{
    char r[32];
    size_t k;
    if (c->sample_bytes) {
        size_words(r, sizeof r, c->sample_bytes);
        k = (size_t)snprintf(buf, n, "malloc: sampled every %s", r);
    } else {
        k = (size_t)snprintf(buf, n, "malloc: exact");
    }
    if (k >= n)
        return;
    const char *pa = c->python_allocators ? c->python_allocators : "";
    if (!c->python_version || !*pa)
        return; /* not a Python process the agent reads (or an older agent) */
    if (!strcmp(pa, "off")) {
        snprintf(buf + k, n - k, "; Python small objects: not traced "
                                 "(STACKWATCH_PYTHON_ALLOCATORS=0)");
    } else if (!c->python_hooked) {
        snprintf(buf + k, n - k, "; Python small objects: not traced yet (the agent hooks "
                                 "CPython's allocators at the first allocation under the GIL)");
    } else if (!strcmp(pa, "sampled") && c->python_sample_bytes) {
        size_words(r, sizeof r, c->python_sample_bytes);
        snprintf(buf + k, n - k, "; Python small objects: sampled every %s", r);
    } else if (c->sample_bytes) {
        snprintf(buf + k, n - k, "; Python small objects: as malloc "
                                 "(STACKWATCH_PYTHON_ALLOCATORS=exact)");
    } else {
        snprintf(buf + k, n - k, "; Python small objects: exact");
    }
}

static void text_client_line(FILE *f, const Stackwatch__ClientInfo *c)
{
    char cmd[512];
    cli_cmdline(cmd, sizeof cmd, c);
    const Stackwatch__Count *live = cnt(c->live);
    fprintf(f, "  pid %u (ppid %u) %-9s %s\n", c->pid, c->ppid, c->state, cmd);
    fprintf(f, "      events=%" PRIu64 " live=%" PRIu64 " (%" PRIu64 " bytes) dropped=%" PRIu64
               " unknown_frees=%" PRIu64,
            c->events, live->count, live->bytes, c->dropped, c->unknown_frees);
    if (c->gaps)
        fprintf(f, " gaps=%u lost_events=%" PRIu64, c->gaps, c->lost_events);
    if (c->failed_calls)
        fprintf(f, " failed_calls=%" PRIu64, c->failed_calls);
    if (c->table_full)
        fprintf(f, " untracked(--max-live)=%" PRIu64, c->table_full);
    if (c->notes_dropped)
        fprintf(f, " notes_dropped=%" PRIu64, c->notes_dropped);
    if (c->sample_bytes) {
        fprintf(f, "\n      sampled every %" PRIu64 " bytes on average (live, may-leak, alloc and "
                   "free are estimates); exact totals: allocs=%" PRIu64 " (%" PRIu64
                   " bytes) frees=%" PRIu64,
                c->sample_bytes, c->total_allocs, c->total_alloc_bytes, c->total_frees);
        if (c->sample_overflow)
            fprintf(f, " samples_dropped=%" PRIu64, c->sample_overflow);
    }
    if (c->python_version)
        fprintf(f, " python=%u.%u.%u", c->python_version >> 24, (c->python_version >> 16) & 0xff,
                (c->python_version >> 8) & 0xff);
    if (c->unwind_failures || c->intern_full)
        fprintf(f, " unwind_failures=%" PRIu64 " stack_table_full=%" PRIu64, c->unwind_failures,
                c->intern_full);
    if (c->end_reason && *c->end_reason)
        fprintf(f, "\n      verdicts as of when it began to end (%s): what it freed tearing "
                   "down is not counted",
                c->end_reason);
    if (c->restart_gap_ms)
        fprintf(f, "\n      merged with its report from before a collectord restart (gap %.1fs:"
                   " blocks from before it are uncertain)", c->restart_gap_ms / 1000.0);
    else if (c->restored)
        fputs("\n      from collectord's store (reported before a collectord restart)", f);
    fputc('\n', f);
    char traced[256];
    cli_traced_line(traced, sizeof traced, c);
    fprintf(f, "      traced: %s\n", traced);
    text_memory_account(f, c);
    if (c->scan) {
        const Stackwatch__ScanResult *sr = c->scan;
        char when[64];
        cli_time(when, sizeof when, sr->time_ms);
        fprintf(f, "      reachability scan at %s: %" PRIu64 " live blocks, unreachable=%" PRIu64
                   " (%" PRIu64 " bytes); process paused %.1f ms%s\n",
                when, cnt(sr->blocks)->count, cnt(sr->unreachable)->count,
                cnt(sr->unreachable)->bytes, sr->pause_us / 1000.0,
                sr->heap_roots ? " (heap outside tracked blocks counted as roots)" : "");
    }
    if (c->attached) {
        char when[64];
        cli_time(when, sizeof when, c->start_realtime_ns / 1000000u);
        fprintf(f, "      tracking started at attach time (%s): blocks allocated before are "
                   "unknown (their frees count as unknown_frees)%s\n",
                when, !strcmp(c->state, "detached") ? "; stopped at detach" : "");
    }
}

/* One Python frame of a merged stack, in the column of a C frame's address. */
static void text_py_frame(FILE *f, const Stackwatch__PyFrame *p)
{
    fprintf(f, "    %-18s  %s:%u %s\n", "[Python]", p->file, p->line,
            empty(p->function) ? "?" : p->function);
}

typedef struct text_rows_s {
    FILE *f;
    const Stackwatch__StackReport *s;
    const Stackwatch__PyTraceback *tb; /* the one merged into the stack, or NULL */
} text_rows_t;

static void text_row(void *ctx, int kind, size_t k, size_t n)
{
    text_rows_t *t = ctx;
    switch (kind) {
    case CLI_ROW_FRAME:
        text_frame(t->f, t->s->frames[k]);
        break;
    case CLI_ROW_FOLD:
        fprintf(t->f, "    … %zu CPython frames\n", n);
        break;
    case CLI_ROW_CUT:
        fputs("    ... (truncated at STACKWATCH_DEPTH)\n", t->f);
        break;
    case CLI_ROW_PYTHON: {
        for (size_t q = 0; q < t->tb->n_frames; q++)
            text_py_frame(t->f, t->tb->frames[q]);
        if (t->tb->truncated)
            fprintf(t->f, "    %-18s  ... (deeper Python frames cut)\n", "[Python]");
        /* Which eval loop ran which Python frame is not recorded: with more
         * than one on the stack, say so rather than imply an order. */
        size_t e = cli_py_entries(t->s);
        if (e > 1)
            fprintf(t->f, "    %-18s  (the Python frames of all %zu entries into the interpreter "
                          "on this stack, innermost first)\n", "[Python]", e);
        break;
    }
    }
}

/* The stack, merged with its top blamed Python traceback (tb, or NULL). */
static void text_stack(FILE *f, const Stackwatch__StackReport *s,
                       const Stackwatch__PyTraceback *tb, unsigned flags)
{
    text_rows_t t = { f, s, tb };
    if (s->n_frames == 0)
        fputs("    (stack not captured)\n", f);
    cli_py_rows(s, tb != NULL, (flags & CLI_ALL_FRAMES) != 0, text_row, &t);
}

/* The fate of each Python traceback of a stack (blamed ones first); the one
 * merged into the stack above (merged) without its frames again. */
static void text_python(FILE *f, const Stackwatch__StackReport *s,
                        const Stackwatch__PyTraceback *merged)
{
    for (size_t i = 0; i < s->n_python; i++) {
        const Stackwatch__PyTraceback *t = s->python[i];
        const Stackwatch__Count *live = cnt(t->live), *ml = cnt(t->may_leak);
        fprintf(f, "    Python stack%s: %u capture(s): may-leak=%" PRIu64 " (%" PRIu64 " bytes), "
                   "live=%" PRIu64 ", freed=%" PRIu64 "%s%s%s\n",
                t == merged ? " above" : "", t->captures, ml->count, ml->bytes, live->count,
                t->freed, t->blamed ? "  <- " : "  (", cli_py_verdict(t), t->blamed ? "" : ")");
        for (size_t k = 0; t != merged && k < t->n_frames; k++)
            fprintf(f, "      %s:%u %s\n", t->frames[k]->file, t->frames[k]->line,
                    empty(t->frames[k]->function) ? "?" : t->frames[k]->function);
        if (t->truncated && t != merged)
            fputs("      ... (deeper Python frames cut)\n", f);
        if (t->text && *t->text) {
            fputs("      from the signal handler:\n", f);
            const char *p = t->text;
            while (*p) {
                const char *nl = strchr(p, '\n');
                size_t n = nl ? (size_t)(nl - p) : strlen(p);
                fprintf(f, "        %.*s\n", (int)n, p);
                p += n + (nl ? 1 : 0);
            }
        }
    }
}

/* The stack with this id in the report, or NULL. */
static const Stackwatch__StackReport *stack_in(const Stackwatch__LeakReport *r, uint64_t id)
{
    for (size_t i = 0; i < r->n_stacks; i++)
        if (r->stacks[i]->id == id)
            return r->stacks[i];
    return NULL;
}

/* Where a stack allocates, in a few words: the frame it is named by
 * (cli_stack_site) and the Python line blamed for it where one was captured. */
static void text_alloc_site(FILE *f, const Stackwatch__StackReport *s)
{
    const Stackwatch__Frame *fr = cli_stack_site(s);
    char buf[512];
    if (fr) {
        fprintf(f, " at %s", cpython_short_name(buf, sizeof buf, fr->module, fr->function,
                                                fr->module_offset, fr->addr));
        if (!empty(fr->file))
            fprintf(f, " (%s:%u)", fr->file, fr->line);
    }
    const Stackwatch__PyTraceback *tb = cli_py_top(s);
    if (tb)
        fprintf(f, " ← %s", cli_py_name(buf, sizeof buf, tb->frames[0]));
}

/* A stack's lost blocks split as valgrind and LSan do: direct, and
 * indirect with the stacks whose direct blocks own them. */
/* Why a stack's reachable may-leak blocks are kept: root -> ... -> them. */
static void text_kept_by(FILE *f, const Stackwatch__LeakReport *r, const Stackwatch__StackReport *s)
{
    for (size_t k = 0; k < s->n_kept_by; k++) {
        const Stackwatch__RetentionPath *p = s->kept_by[k];
        fprintf(f, "    kept by: %s%s", p->root, p->cut ? " -> ..." : "");
        /* hops: every hop with Python objects; a report without them (an
         * older collectord's), via's stacks. */
        size_t n = p->n_hops ? p->n_hops : p->n_via;
        for (size_t h = 0; h < n; h++) {
            const Stackwatch__RetentionHop *y = p->n_hops ? p->hops[h] : NULL;
            uint64_t id = y ? y->stack : p->via[h];
            const char *type = y && !empty(y->type) ? y->type : NULL;
            if (!id) {
                if (type && y->bytes)
                    fprintf(f, " -> %s object (%" PRIu64 " bytes)", type, y->bytes);
                else if (type)
                    fprintf(f, " -> %s object", type); /* sizes vary */
                else if (y && y->bytes)
                    fprintf(f, " -> Python object of %" PRIu64 " bytes", y->bytes);
                else
                    fputs(" -> Python objects", f);
                continue;
            }
            const Stackwatch__StackReport *hs = stack_in(r, id);
            fprintf(f, " -> %s%sCallStack[%016" PRIx64 "]", type ? type : "",
                    type ? " object " : "", id);
            if (hs)
                text_alloc_site(f, hs);
        }
        fprintf(f, " -> these blocks (%" PRIu64 " of %" PRIu64 " sampled)\n", p->blocks,
                p->sampled);
    }
}

static void text_owners(FILE *f, const Stackwatch__LeakReport *r, const Stackwatch__StackReport *s)
{
    const Stackwatch__Count *d = cnt(s->unreachable_direct), *in = cnt(s->unreachable_indirect);
    if (!cnt(s->unreachable)->count)
        return;
    fprintf(f, "    lost directly=%s%" PRIu64 " (%" PRIu64 " bytes) indirectly=%s%" PRIu64 " (%" PRIu64
               " bytes)\n",
            s->estimate ? "~" : "", d->count, d->bytes, s->estimate ? "~" : "", in->count,
            in->bytes);
    if (cnt(s->owns)->count)
        fprintf(f, "      owns %s%" PRIu64 " (%" PRIu64 " bytes) lost indirectly at other stacks "
                   "(ranked with them)\n",
                s->estimate ? "~" : "", cnt(s->owns)->count, cnt(s->owns)->bytes);
    for (size_t k = 0; k < s->n_owners; k++) {
        const Stackwatch__StackOwner *o = s->owners[k];
        fprintf(f, "      %" PRIu64 " (%" PRIu64 " bytes) owned by CallStack[%016" PRIx64 "]",
                cnt(o->blocks)->count, cnt(o->blocks)->bytes, o->stack);
        const Stackwatch__StackReport *os = o->stack == s->id ? s : stack_in(r, o->stack);
        if (o->stack == s->id)
            fputs(" (this stack)", f);
        else if (os)
            text_alloc_site(f, os);
        fputc('\n', f);
    }
}

void cli_leaks_text(FILE *f, const Stackwatch__LeakReport *r, unsigned flags)
{
    fprintf(f, "stackwatch: %zu process(es), expire %.3fs, sampling %s%s%s\n", r->n_clients,
            r->expire_ms / 1000.0, empty(r->sample) ? "all" : r->sample,
            r->by_exe ? ", stacks folded by executable" : "",
            r->since_mark ? ", only blocks allocated after the mark" : "");
    /* Figures a full table made incomplete come first, not in a client line. */
    for (size_t i = 0; i < r->n_clients; i++)
        if (r->clients[i]->table_full)
            fprintf(f, "warning: pid %u reached --max-live (%" PRIu64 " tracked blocks): %" PRIu64
                       " allocation(s) were not tracked, so its figures are too low\n",
                    r->clients[i]->pid, r->clients[i]->max_live, r->clients[i]->table_full);
    for (size_t i = 0; i < r->n_clients; i++)
        text_client_line(f, r->clients[i]);
    if (r->n_stacks == 0) {
        fprintf(f, "\nno leaks: no block has stayed allocated longer than the expire time "
                   "(%.3fs)\n",
                r->expire_ms / 1000.0);
        return;
    }
    for (size_t i = 0; i < r->n_stacks; i++) {
        const Stackwatch__StackReport *s = r->stacks[i];
        const Stackwatch__Count *ml = cnt(s->may_leak), *ex = cnt(s->expired),
                                *fe = cnt(s->free_expired), *al = cnt(s->alloc),
                                *fr = cnt(s->free), *el = cnt(s->exit_live),
                                *un = cnt(s->uncertain);
        fprintf(f, "\nCallStack[%016" PRIx64 "]: may-leak=%s%" PRIu64 " (%" PRIu64 " bytes)  pid %u",
                s->id, s->estimate ? "~" : "", ml->count, ml->bytes, s->pid);
        if (s->estimate)
            fputs("  (estimated from samples)", f);
        if (!empty(s->class_))
            fprintf(f, "  class=%s confidence=%.2f rank=%.0f growth=%+.0f B/min", s->class_,
                    s->confidence, s->rank, s->growth_bytes_per_min);
        fputc('\n', f);
        if (s->n_pids) {
            fputs("    processes:", f);
            for (size_t k = 0; k < s->n_pids; k++)
                fprintf(f, " %u (may-leak %" PRIu64 ", %" PRIu64 " bytes)%s", s->pids[k]->pid,
                        cnt(s->pids[k]->may_leak)->count, cnt(s->pids[k]->may_leak)->bytes,
                        k + 1 < s->n_pids ? "," : "");
            fputc('\n', f);
        }
        if (s->scanned) {
            fprintf(f, "    unreachable=%s%" PRIu64 " (%" PRIu64 " bytes) reachable=%s%" PRIu64
                       " (%" PRIu64 " bytes)  as of the reachability scan\n",
                    s->estimate ? "~" : "", cnt(s->unreachable)->count,
                    cnt(s->unreachable)->bytes, s->estimate ? "~" : "",
                    cnt(s->reachable)->count, cnt(s->reachable)->bytes);
            text_owners(f, r, s);
            text_kept_by(f, r, s);
        }
        fprintf(f, "    expired=%" PRIu64 " (%" PRIu64 " bytes), free_expired=%" PRIu64
                   " (%" PRIu64 " bytes)\n",
                ex->count, ex->bytes, fe->count, fe->bytes);
        fprintf(f, "    alloc=%" PRIu64 " (%" PRIu64 " bytes), free=%" PRIu64 " (%" PRIu64
                   " bytes)\n",
                al->count, al->bytes, fr->count, fr->bytes);
        if (el->count)
            fprintf(f, "    exit_live=%" PRIu64 " (%" PRIu64 " bytes) still allocated when %s\n",
                    el->count, el->bytes,
                    s->state && !strcmp(s->state, "detached") ? "tracking stopped (detach)"
                                                              : "the process ended");
        if (un->count)
            fprintf(f, "    uncertain=%" PRIu64 " (%" PRIu64 " bytes) allocated before lost events\n",
                    un->count, un->bytes);
        if (s->freed_lt_valid)
            fprintf(f, "    freed memory live time: min=%" PRIu64 "ms max=%" PRIu64
                       "ms average=%" PRIu64 "ms\n",
                    s->freed_lt_min_ms, s->freed_lt_max_ms, s->freed_lt_avg_ms);
        else
            fprintf(f, "    freed memory live time: none freed\n");
        fprintf(f, "    un-freed memory live time: max=%" PRIu64 "ms\n", s->unfreed_max_age_ms);
        if (s->skipped)
            fprintf(f, "    (%u allocation-wrapper frame%s not shown)\n", s->skipped,
                    s->skipped == 1 ? "" : "s");
        const Stackwatch__PyTraceback *tb = cli_py_top(s);
        text_stack(f, s, tb, flags);
        text_python(f, s, tb);
        if (!empty(s->python_missing))
            fprintf(f, "    Python line: none (%s)\n", s->python_missing);
    }
}

static void json_count(json_t *j, const char *key, const Stackwatch__Count *c)
{
    c = cnt(c);
    json_obj_begin(j, key);
    json_u64(j, "count", c->count);
    json_u64(j, "bytes", c->bytes);
    json_obj_end(j);
}

static void cli_scan_json_obj(json_t *j, const char *key, const Stackwatch__ScanResult *r)
{
    json_obj_begin(j, key);
    json_u64(j, "pid", r->pid);
    json_u64(j, "time_ms", r->time_ms);
    json_u64(j, "pause_us", r->pause_us);
    json_u64(j, "duration_us", r->duration_us);
    json_u64(j, "cpu_us", r->cpu_us);
    json_u64(j, "threads", r->threads);
    json_count(j, "blocks", r->blocks);
    json_count(j, "reachable", r->reachable);
    json_count(j, "unreachable", r->unreachable);
    json_count(j, "indirect", r->indirect);
    json_count(j, "uncertain", r->uncertain);
    json_u64(j, "root_bytes", r->root_bytes);
    json_u64(j, "read_bytes", r->read_bytes);
    json_u64(j, "pristine_bytes", r->pristine_bytes);
    json_bool(j, "heap_roots", r->heap_roots);
    json_u64(j, "busy_threads", r->busy_threads);
    json_str(j, "note", empty(r->note) ? NULL : r->note);
    json_obj_end(j);
}

void cli_scan_json(FILE *f, const Stackwatch__ScanResult *r)
{
    json_t j;
    json_init(&j, f, 1);
    cli_scan_json_obj(&j, NULL, r);
    fputc('\n', f);
}

void cli_scan_text(FILE *f, const Stackwatch__ScanResult *r)
{
    const Stackwatch__Count *b = cnt(r->blocks), *u = cnt(r->unreachable), *re = cnt(r->reachable);
    fprintf(f, "pid %u: scanned %" PRIu64 " live blocks (%" PRIu64 " bytes) in %.1f ms; the "
               "process was paused %.1f ms (%u threads)\n",
            r->pid, b->count, b->bytes, r->duration_us / 1000.0, r->pause_us / 1000.0, r->threads);
    fprintf(f, "    unreachable (lost): %" PRIu64 " blocks (%" PRIu64 " bytes), %" PRIu64
               " of them (%" PRIu64 " bytes) only through other lost blocks\n",
            u->count, u->bytes, cnt(r->indirect)->count, cnt(r->indirect)->bytes);
    fprintf(f, "    reachable:          %" PRIu64 " blocks (%" PRIu64 " bytes)\n", re->count,
            re->bytes);
    if (cnt(r->uncertain)->count)
        fprintf(f, "    not judged:         %" PRIu64 " blocks (%" PRIu64 " bytes): no chain "
                   "reaches them, but events were lost before (a full ring or a gap), and "
                   "their free may have been among them\n",
                cnt(r->uncertain)->count, cnt(r->uncertain)->bytes);
    fprintf(f, "    %.1f MiB copied, %.1f MiB of roots scanned (%.1f MiB of module data left "
               "out: as loaded, never stored to), collectord CPU %.1f ms\n",
            r->read_bytes / 1048576.0, r->root_bytes / 1048576.0,
            r->pristine_bytes / 1048576.0, r->cpu_us / 1000.0);
    if (r->busy_threads)
        fprintf(f, "    %u thread(s) were stopped inside an allocation (its block may be "
                   "missing)\n", r->busy_threads);
    if (!empty(r->note))
        fprintf(f, "    %s\n", r->note);
}

static void json_client(json_t *j, const Stackwatch__ClientInfo *c)
{
    char cmd[4096];
    cli_cmdline(cmd, sizeof cmd, c);
    json_obj_begin(j, NULL);
    json_obj_begin(j, "memory");
    if (c->rss_bytes) {
        json_u64(j, "rss_bytes", c->rss_bytes);
        json_u64(j, "rss_start_bytes", c->rss_start_bytes);
        json_u64(j, "heap_bytes", c->heap_bytes);
        json_u64(j, "heap_start_bytes", c->heap_start_bytes);
        json_u64(j, "heap_free_bytes", c->heap_free_bytes);
        json_u64(j, "heap_mmap_bytes", c->heap_mmap_bytes);
        if (c->pyarena_known)
            json_i64(j, "pyarena_growth_bytes", c->pyarena_growth_bytes);
    }
    json_obj_end(j);
    json_u64(j, "pid", c->pid);
    json_u64(j, "ppid", c->ppid);
    json_str(j, "exe", c->exe);
    json_str(j, "cmdline", cmd);
    json_arr_begin(j, "argv");
    for (size_t i = 0; i < c->n_argv; i++)
        json_str(j, NULL, c->argv[i]);
    json_arr_end(j);
    json_str(j, "state", c->state);
    json_u64(j, "events", c->events);
    json_u64(j, "dropped", c->dropped);
    json_u64(j, "failed_calls", c->failed_calls);
    json_u64(j, "unknown_frees", c->unknown_frees);
    json_count(j, "live", c->live);
    json_u64(j, "gaps", c->gaps);
    json_u64(j, "lost_events", c->lost_events);
    json_u64(j, "stacks", c->stacks);
    json_u64(j, "threads", c->threads);
    json_u64(j, "unwind_failures", c->unwind_failures);
    json_u64(j, "stack_table_full", c->intern_full);
    json_u64(j, "agent_bytes", c->agent_bytes);
    json_u64(j, "late_events", c->late_events);
    json_u64(j, "table_full", c->table_full);
    json_u64(j, "implied_frees", c->implied_frees);
    json_u64(j, "sample_bytes", c->sample_bytes);
    json_str(j, "python_allocators",
             c->python_allocators && *c->python_allocators ? c->python_allocators : NULL);
    json_u64(j, "python_sample_bytes", c->python_sample_bytes);
    json_bool(j, "python_hooked", c->python_hooked);
    char traced[256];
    cli_traced_line(traced, sizeof traced, c);
    json_str(j, "traced", traced);
    json_u64(j, "total_allocs", c->total_allocs);
    json_u64(j, "total_alloc_bytes", c->total_alloc_bytes);
    json_u64(j, "total_frees", c->total_frees);
    json_u64(j, "sample_overflow", c->sample_overflow);
    json_u64(j, "stack_cache_hits", c->stack_cache_hits);
    json_u64(j, "firings", c->firings);
    json_u64(j, "notes_dropped", c->notes_dropped);
    json_str(j, "end_reason", c->end_reason && *c->end_reason ? c->end_reason : NULL);
    json_u64(j, "after_end", c->after_end);
    json_u64(j, "armed_sites_full", c->armed_sites_full);
    json_bool(j, "restored", c->restored);
    json_u64(j, "restart_gap_ms", c->restart_gap_ms);
    json_u64(j, "max_live", c->max_live);
    /* What collectord holds for it (counted), in all and per stack / live block. */
    json_u64(j, "collector_stack_bytes", c->collector_stack_bytes);
    json_u64(j, "collector_block_bytes", c->collector_block_bytes);
    json_u64(j, "collector_bytes_per_stack",
             c->stacks ? (c->collector_stack_bytes + c->stacks / 2) / c->stacks : 0);
    uint64_t nlive = cnt(c->live)->count;
    json_u64(j, "collector_bytes_per_block",
             nlive ? (c->collector_block_bytes + nlive / 2) / nlive : 0);
    if (c->python_version) {
        char v[32];
        snprintf(v, sizeof v, "%u.%u.%u", c->python_version >> 24,
                 (c->python_version >> 16) & 0xff, (c->python_version >> 8) & 0xff);
        json_str(j, "python", v);
    } else {
        json_null(j, "python");
    }
    json_str(j, "python_status", c->python_status && *c->python_status ? c->python_status : NULL);
    json_u64(j, "notes", c->notes);
    if (c->mark_ms)
        json_u64(j, "mark_ms", c->mark_ms);
    else
        json_null(j, "mark_ms");
    json_u64(j, "duration_ms", c->duration_ms);
    json_u64(j, "start_time_ms", c->start_realtime_ns / 1000000u);
    json_bool(j, "attached", c->attached);
    if (c->scan)
        cli_scan_json_obj(j, "scan", c->scan);
    else
        json_null(j, "scan");
    json_obj_end(j);
}

static void json_frame(json_t *j, const Stackwatch__Frame *fr)
{
    json_obj_begin(j, NULL);
    json_hex(j, "addr", fr->addr, 1);
    json_str(j, "module", empty(fr->module) ? NULL : fr->module);
    if (!empty(fr->module))
        json_hex(j, "module_offset", fr->module_offset, 1);
    else
        json_null(j, "module_offset");
    json_str(j, "function", empty(fr->function) ? NULL : fr->function);
    if (!empty(fr->function))
        json_u64(j, "offset", fr->offset);
    else
        json_null(j, "offset");
    json_str(j, "file", empty(fr->file) ? NULL : fr->file);
    if (fr->line)
        json_u64(j, "line", fr->line);
    else
        json_null(j, "line");
    json_bool(j, "inline", fr->is_inline);
    /* The interpreter's own (libpython, the python3 executable, its eval
     * loop): the frames text and HTML fold. */
    json_bool(j, "interpreter", cli_py_interp(fr));
    if (fr->build_id.len) {
        char hex[2 * 32 + 1];
        size_t n = fr->build_id.len > 32 ? 32 : fr->build_id.len;
        for (size_t i = 0; i < n; i++)
            snprintf(hex + 2 * i, 3, "%02x", fr->build_id.data[i]);
        json_str(j, "build_id", hex);
    } else {
        json_null(j, "build_id");
    }
    json_obj_end(j);
}

void cli_leaks_json(FILE *f, const Stackwatch__LeakReport *r)
{
    json_t j;
    json_init(&j, f, 1);
    json_obj_begin(&j, NULL);
    json_u64(&j, "expire_ms", r->expire_ms);
    json_str(&j, "sample", empty(r->sample) ? "all" : r->sample);
    json_u64(&j, "now_ms", r->now_ms);
    json_bool(&j, "by_exe", r->by_exe);
    json_bool(&j, "since_mark", r->since_mark);
    json_arr_begin(&j, "clients");
    for (size_t i = 0; i < r->n_clients; i++)
        json_client(&j, r->clients[i]);
    json_arr_end(&j);
    json_arr_begin(&j, "stacks");
    for (size_t i = 0; i < r->n_stacks; i++) {
        const Stackwatch__StackReport *s = r->stacks[i];
        char id[17];
        snprintf(id, sizeof id, "%016" PRIx64, s->id);
        json_obj_begin(&j, NULL);
        json_str(&j, "id", id);
        json_u64(&j, "pid", s->pid);
        json_count(&j, "may_leak", s->may_leak);
        json_count(&j, "expired", s->expired);
        json_count(&j, "free_expired", s->free_expired);
        json_count(&j, "alloc", s->alloc);
        json_count(&j, "free", s->free);
        json_count(&j, "live", s->live);
        json_count(&j, "exit_live", s->exit_live);
        json_count(&j, "uncertain", s->uncertain);
        if (s->scanned) {
            json_count(&j, "unreachable", s->unreachable);
            json_count(&j, "reachable", s->reachable);
            json_count(&j, "unreachable_direct", s->unreachable_direct);
            json_count(&j, "unreachable_indirect", s->unreachable_indirect);
            json_count(&j, "owns", s->owns);
            json_arr_begin(&j, "kept_by");
            for (size_t k = 0; k < s->n_kept_by; k++) {
                const Stackwatch__RetentionPath *p = s->kept_by[k];
                json_obj_begin(&j, NULL);
                json_str(&j, "root", p->root);
                json_arr_begin(&j, "via");
                for (size_t h = 0; h < p->n_via; h++) {
                    char vid[17];
                    snprintf(vid, sizeof vid, "%016" PRIx64, p->via[h]);
                    json_str(&j, NULL, vid);
                }
                json_arr_end(&j);
                json_u64(&j, "blocks", p->blocks);
                json_u64(&j, "sampled", p->sampled);
                json_bool(&j, "cut", p->cut);
                json_arr_begin(&j, "hops");
                for (size_t h = 0; h < p->n_hops; h++) {
                    const Stackwatch__RetentionHop *y = p->hops[h];
                    char hid[17];
                    snprintf(hid, sizeof hid, "%016" PRIx64, y->stack);
                    json_obj_begin(&j, NULL);
                    json_str(&j, "stack", y->stack ? hid : NULL);
                    json_str(&j, "type", empty(y->type) ? NULL : y->type);
                    if (y->stack)
                        json_null(&j, "bytes");
                    else
                        json_u64(&j, "bytes", y->bytes);
                    json_obj_end(&j);
                }
                json_arr_end(&j);
                json_obj_end(&j);
            }
            json_arr_end(&j);
            json_arr_begin(&j, "owners");
            for (size_t k = 0; k < s->n_owners; k++) {
                char oid[17];
                snprintf(oid, sizeof oid, "%016" PRIx64, s->owners[k]->stack);
                json_obj_begin(&j, NULL);
                json_str(&j, "stack", oid);
                json_count(&j, "blocks", s->owners[k]->blocks);
                json_obj_end(&j);
            }
            json_arr_end(&j);
        } else {
            json_null(&j, "unreachable");
            json_null(&j, "reachable");
            json_null(&j, "unreachable_direct");
            json_null(&j, "unreachable_indirect");
            json_null(&j, "owns");
            json_null(&j, "kept_by");
            json_null(&j, "owners");
        }
        json_str(&j, "state", empty(s->state) ? NULL : s->state);
        json_obj_begin(&j, "freed_live_time_ms");
        if (s->freed_lt_valid) {
            json_u64(&j, "min", s->freed_lt_min_ms);
            json_u64(&j, "max", s->freed_lt_max_ms);
            json_u64(&j, "avg", s->freed_lt_avg_ms);
        } else {
            json_null(&j, "min");
            json_null(&j, "max");
            json_null(&j, "avg");
        }
        json_obj_end(&j);
        json_u64(&j, "unfreed_max_age_ms", s->unfreed_max_age_ms);
        json_bool(&j, "truncated", s->truncated);
        json_str(&j, "class", empty(s->class_) ? NULL : s->class_);
        json_double(&j, "confidence", s->confidence);
        json_double(&j, "growth_bytes_per_min", s->growth_bytes_per_min);
        json_double(&j, "rank", s->rank);
        json_str(&j, "exe", empty(s->exe) ? NULL : s->exe);
        json_u64(&j, "skipped", s->skipped);
        json_bool(&j, "estimate", s->estimate);
        json_bool(&j, "restored", s->restored);
        json_u64(&j, "sample_bytes", s->sample_bytes);
        if (s->mark_ms)
            json_u64(&j, "mark_ms", s->mark_ms);
        if (s->n_pids) {
            json_arr_begin(&j, "pids");
            for (size_t k = 0; k < s->n_pids; k++) {
                json_obj_begin(&j, NULL);
                json_u64(&j, "pid", s->pids[k]->pid);
                json_count(&j, "may_leak", s->pids[k]->may_leak);
                json_count(&j, "live", s->pids[k]->live);
                json_count(&j, "alloc", s->pids[k]->alloc);
                json_obj_end(&j);
            }
            json_arr_end(&j);
        }
        if (s->n_series) {
            json_arr_begin(&j, "series");
            for (size_t k = 0; k < s->n_series; k++) {
                json_obj_begin(&j, NULL);
                json_u64(&j, "t_ms", s->series[k]->t_ms);
                json_u64(&j, "live_bytes", s->series[k]->live_bytes);
                json_u64(&j, "live_count", s->series[k]->live_count);
                json_u64(&j, "may_leak_bytes", s->series[k]->may_leak_bytes);
                json_obj_end(&j);
            }
            json_arr_end(&j);
        }
        json_arr_begin(&j, "frames");
        for (size_t k = 0; k < s->n_frames; k++)
            json_frame(&j, s->frames[k]);
        json_arr_end(&j);
        /* Where the Python frames go: they run under frames[python_at] (the
         * innermost interpreter frame; which eval loop ran which Python
         * frame is not recorded); null without an interpreter frame. */
        size_t at = cli_py_anchor(s);
        if (at < s->n_frames)
            json_u64(&j, "python_at", at);
        else
            json_null(&j, "python_at");
        json_u64(&j, "armed", s->armed);
        /* Why a Python client's stack has no blamed line, in one word. */
        json_str(&j, "python_missing", !empty(s->python_missing) ? s->python_missing : NULL);
        /* python: one list of {file, function, line} per distinct traceback,
         * innermost first, blamed first; python_stats: same order, the fate
         * of each one's blocks. */
        json_arr_begin(&j, "python");
        for (size_t k = 0; k < s->n_python; k++) {
            const Stackwatch__PyTraceback *t = s->python[k];
            json_arr_begin(&j, NULL);
            for (size_t i = 0; i < t->n_frames; i++) {
                json_obj_begin(&j, NULL);
                json_str(&j, "file", t->frames[i]->file);
                json_str(&j, "function", t->frames[i]->function);
                json_u64(&j, "line", t->frames[i]->line);
                json_obj_end(&j);
            }
            json_arr_end(&j);
        }
        json_arr_end(&j);
        json_arr_begin(&j, "python_stats");
        for (size_t k = 0; k < s->n_python; k++) {
            const Stackwatch__PyTraceback *t = s->python[k];
            json_obj_begin(&j, NULL);
            json_u64(&j, "captures", t->captures);
            json_count(&j, "live", t->live);
            json_count(&j, "expired", t->expired);
            json_count(&j, "may_leak", t->may_leak);
            json_u64(&j, "freed", t->freed);
            json_bool(&j, "blamed", t->blamed);
            json_bool(&j, "truncated", t->truncated);
            json_str(&j, "text", t->text && *t->text ? t->text : NULL);
            json_obj_end(&j);
        }
        json_arr_end(&j);
        json_obj_end(&j);
    }
    json_arr_end(&j);
    json_obj_end(&j);
}

static void rule_desc(char *buf, size_t cap, const Stackwatch__Rule *r)
{
    size_t n = 0;
    char sig[32];
    if (!empty(r->match))
        n += (size_t)snprintf(buf + n, cap - n, "--match '%s' ", r->match);
    if (!empty(r->module) && n < cap)
        n += (size_t)snprintf(buf + n, cap - n, "--module '%s' ", r->module);
    if (r->stack && n < cap)
        n += (size_t)snprintf(buf + n, cap - n, "--stack %016" PRIx64 " ", r->stack);
    if (r->frame >= 0 && n < cap)
        n += (size_t)snprintf(buf + n, cap - n, "--frame %d ", r->frame);
    if (r->min_depth && n < cap)
        n += (size_t)snprintf(buf + n, cap - n, "--min-depth %u ", r->min_depth);
    if (r->pid && n < cap)
        n += (size_t)snprintf(buf + n, cap - n, "--pid %u ", r->pid);
    if (r->leaking && n < cap)
        n += (size_t)snprintf(buf + n, cap - n, "--leaking ");
    if (r->signal && n < cap)
        n += (size_t)snprintf(buf + n, cap - n, "--signal %s ",
                              signame_name(r->signal, sig, sizeof sig));
    if (n < cap)
        snprintf(buf + n, cap - n, "--count %u", r->count);
}

void cli_rules_text(FILE *f, const Stackwatch__RuleList *rl)
{
    if (rl->n_rules == 0) {
        fputs("no trigger rules\n", f);
        return;
    }
    fprintf(f, "%-4s %-7s %-7s %s\n", "ID", "ARMED", "FIRED", "RULE");
    for (size_t i = 0; i < rl->n_rules; i++) {
        char d[1024];
        rule_desc(d, sizeof d, rl->rules[i]);
        fprintf(f, "%-4u %-7u %-7" PRIu64 " %s\n", rl->rules[i]->id, rl->rules[i]->armed,
                rl->rules[i]->fired, d);
    }
}

void cli_rules_json(FILE *f, const Stackwatch__RuleList *rl)
{
    json_t j;
    json_init(&j, f, 1);
    json_obj_begin(&j, NULL);
    json_arr_begin(&j, "rules");
    for (size_t i = 0; i < rl->n_rules; i++) {
        const Stackwatch__Rule *r = rl->rules[i];
        char id[17], sig[32];
        json_obj_begin(&j, NULL);
        json_u64(&j, "id", r->id);
        json_str(&j, "match", empty(r->match) ? NULL : r->match);
        json_str(&j, "module", empty(r->module) ? NULL : r->module);
        if (r->stack) {
            snprintf(id, sizeof id, "%016" PRIx64, r->stack);
            json_str(&j, "stack", id);
        } else {
            json_null(&j, "stack");
        }
        if (r->frame >= 0)
            json_u64(&j, "frame", (uint64_t)r->frame);
        else
            json_null(&j, "frame");
        json_u64(&j, "min_depth", r->min_depth);
        json_u64(&j, "pid", r->pid);
        json_str(&j, "signal", r->signal ? signame_name(r->signal, sig, sizeof sig) : NULL);
        json_u64(&j, "count", r->count);
        json_u64(&j, "armed", r->armed);
        json_bool(&j, "leaking", r->leaking);
        json_u64(&j, "fired", r->fired);
        json_obj_end(&j);
    }
    json_arr_end(&j);
    json_obj_end(&j);
}

void cli_clients_text(FILE *f, const Stackwatch__ClientInfo *const *cs, size_t n)
{
    if (n == 0) {
        fputs("no clients: no process has connected to this collectord yet\n", f);
        return;
    }
    fprintf(f, "%-8s %-8s %-10s %12s %8s %22s  %s\n", "PID", "PPID", "STATE", "EVENTS", "DROPPED",
            "LIVE", "COMMAND");
    for (size_t i = 0; i < n; i++) {
        const Stackwatch__ClientInfo *c = cs[i];
        char cmd[512], live[64];
        cli_cmdline(cmd, sizeof cmd, c);
        snprintf(live, sizeof live, "%" PRIu64 " (%" PRIu64 " B)", cnt(c->live)->count,
                 cnt(c->live)->bytes);
        fprintf(f, "%-8u %-8u %-10s %12" PRIu64 " %8" PRIu64 " %22s  %s\n", c->pid, c->ppid,
                c->state, c->events, c->dropped, live, cmd);
    }
}

void cli_clients_json(FILE *f, const Stackwatch__ClientInfo *const *cs, size_t n)
{
    json_t j;
    json_init(&j, f, 1);
    json_obj_begin(&j, NULL);
    json_arr_begin(&j, "clients");
    for (size_t i = 0; i < n; i++)
        json_client(&j, cs[i]);
    json_arr_end(&j);
    json_obj_end(&j);
}

/* Writes s as one collapsed-stack component: ';' (the separator), line
 * breaks and other control characters (a hostile program names its own
 * functions, files and executable) become '_', and so do spaces unless
 * allowed (the weight follows the last space of the line). */
static void folded_put(FILE *f, const char *s, int spaces)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        fputc(*p == ';' || *p < 0x20 || *p == 0x7f || (*p == ' ' && !spaces) ? '_' : *p, f);
}

/* A frame's name for collapsed stacks. */
static void folded_name(FILE *f, const Stackwatch__Frame *fr)
{
    char buf[512];
    if (!empty(fr->function))
        snprintf(buf, sizeof buf, "%s%s", fr->function, fr->is_inline ? "[inline]" : "");
    else if (!empty(fr->module))
        snprintf(buf, sizeof buf, "%s+0x%" PRIx64,
                 strrchr(fr->module, '/') ? strrchr(fr->module, '/') + 1 : fr->module,
                 fr->module_offset);
    else
        snprintf(buf, sizeof buf, "0x%" PRIx64, fr->addr);
    folded_put(f, buf, 0);
}

/* A Python frame for collapsed stacks: "leaky.py:27 backtest". */
static void folded_py(FILE *f, const Stackwatch__PyFrame *fr)
{
    char buf[512];
    cli_py_name(buf, sizeof buf, fr);
    folded_put(f, buf, 1);
}

/* One line: C frames outermost first, with tb's frames (or the word for why
 * there are none) after the interpreter frame they run under. */
static void folded_line(FILE *f, const Stackwatch__StackReport *s, const char *base,
                        const Stackwatch__PyTraceback *tb, uint64_t w)
{
    /* Outermost first: the Python frames follow frames[anchor] (the
     * interpreter's), or lead when there is none (anchor == n_frames). */
    size_t anchor = cli_py_anchor(s);
    folded_put(f, base, 1);
    for (size_t k = s->n_frames + 1; k-- > 0;) {
        if (k < s->n_frames) {
            fputc(';', f);
            folded_name(f, s->frames[k]);
        }
        if (k != (anchor < s->n_frames ? anchor : s->n_frames))
            continue;
        if (tb) {
            for (size_t q = tb->n_frames; q-- > 0;) {
                fputc(';', f);
                folded_py(f, tb->frames[q]);
            }
        } else if (!empty(s->python_missing)) {
            fputs(";[no_Python_line:", f);
            folded_put(f, s->python_missing, 0);
            fputc(']', f);
        }
    }
    fprintf(f, " %" PRIu64 "\n", w);
}

void cli_leaks_folded(FILE *f, const Stackwatch__LeakReport *r)
{
    for (size_t i = 0; i < r->n_stacks; i++) {
        const Stackwatch__StackReport *s = r->stacks[i];
        uint64_t w = cnt(s->may_leak)->bytes;
        if (w == 0)
            continue;
        const char *exe = !empty(s->exe) ? s->exe : "?";
        const char *base = strrchr(exe, '/') ? strrchr(exe, '/') + 1 : exe;
        /* One line per blamed traceback, the stack's bytes split among them. */
        const Stackwatch__PyTraceback *tbs[16];
        size_t ntb = cli_py_blamed(s, tbs, 16);
        if (!ntb) {
            folded_line(f, s, base, NULL, w);
            continue;
        }
        for (size_t t = 0; t < ntb; t++) {
            uint64_t part = cli_py_share(w, tbs, ntb, t);
            if (part)
                folded_line(f, s, base, tbs[t], part);
        }
    }
}
