/* stackctl report --html: one self-contained page (inline CSS, JS and SVG, no
 * network fetch) with live bytes over time, a flame graph of may-leak bytes and
 * the stacks ranked in a table. */
#include "html.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "py.h"
#include "json.h"
#include "collector/common/cpython.h"

/* Colours of the top stacks' lines in the chart; the table's swatches match.
 * The chart draws one line per entry at most. */
static const char *const html_palette[] = {
    "#e15759", "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#17a2b8", "#c9a227", "#e377c2",
};
#define HTML_TOP_LINES (sizeof html_palette / sizeof html_palette[0])

static const Stackwatch__Count zero_count = STACKWATCH__COUNT__INIT;

static const Stackwatch__Count *cnt(const Stackwatch__Count *c)
{
    return c ? c : &zero_count;
}

static int empty(const char *s)
{
    return !s || !*s;
}

static const char *base_name(const char *path)
{
    const char *b = path ? strrchr(path, '/') : NULL;
    return b && b[1] ? b + 1 : (path ? path : "");
}

/* Writes s as HTML text or attribute value. A traced program names its own
 * files and symbols: control characters (ESC, BEL, line breaks...) are
 * shown as their Unicode pictures (U+2400 + c, DEL as U+2421) and C1
 * controls (U+0080-U+009F) as U+FFFD, never written raw. */
static void html_esc(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        switch (*p) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "&#x%X;", 0x2400u + *p);
            else if (*p == 0x7f)
                fputs("&#x2421;", f);
            else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
                fputs("&#xFFFD;", f);
                p++;
            } else
                fputc(*p, f);
            break;
        }
    }
}

/* printf, then html_esc; the text is cut at 8 KiB (paths and a line number pass here). */
__attribute__((format(printf, 2, 3))) static void html_escf(FILE *f, const char *fmt, ...)
{
    char buf[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    html_esc(f, buf);
}

/* "190.8 KiB", "4 KiB": binary units, one decimal below 100 unless it is 0
 * (the page's script formats the same way). */
static const char *fmt_bytes(char *buf, size_t cap, double b)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    size_t u = 0;
    double a = b < 0 ? -b : b;
    while (a >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        a /= 1024;
        b /= 1024;
        u++;
    }
    int n = snprintf(buf, cap, u && a < 100 ? "%.1f" : "%.0f", b);
    if (n >= 2 && (size_t)n < cap && !strcmp(buf + n - 2, ".0"))
        n -= 2;
    if (n >= 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, " %s", units[u]);
    return buf;
}

/* "19,300". */
static const char *fmt_count(char *buf, size_t cap, uint64_t n)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%" PRIu64, n);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < cap; i++) {
        if (i && (len - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

/* A frame's name: its function, else module+0xoffset, else its address. Returns
 * fr->function or buf. */
static const char *frame_name(char *buf, size_t cap, const Stackwatch__Frame *fr)
{
    if (!empty(fr->function))
        return fr->function;
    if (!empty(fr->module))
        snprintf(buf, cap, "%s+0x%" PRIx64, base_name(fr->module), fr->module_offset);
    else
        snprintf(buf, cap, "0x%" PRIx64, fr->addr);
    return buf;
}

/* When the top frame lies outside the stack's executable (libc's strndup),
 * the first named frame inside it (the program's caller), else NULL; never
 * the interpreter's own (a Python program's caller is its Python line). */
static const Stackwatch__Frame *own_caller(const Stackwatch__StackReport *s,
                                           const Stackwatch__Frame *top)
{
    if (!top || empty(s->exe) || empty(top->module) || !strcmp(top->module, s->exe))
        return NULL;
    for (size_t i = 0; i < s->n_frames; i++) {
        const Stackwatch__Frame *fr = s->frames[i];
        if (fr != top && !empty(fr->function) && !empty(fr->module) &&
            !strcmp(fr->module, s->exe) && !cli_py_interp(fr))
            return fr;
    }
    return NULL;
}

static int has_samples(const Stackwatch__LeakReport *r)
{
    for (size_t i = 0; i < r->n_clients; i++)
        if (r->clients[i]->n_series)
            return 1;
    for (size_t i = 0; i < r->n_stacks && i < HTML_TOP_LINES; i++)
        if (r->stacks[i]->n_series)
            return 1;
    return 0;
}

/* The command line: argv joined by spaces, or exe without argv; cut to cap. */
static const char *cmd_line(const Stackwatch__ClientInfo *c, char *buf, size_t cap)
{
    size_t n = 0;
    snprintf(buf, cap, "%s", c->exe ? c->exe : "");
    for (size_t i = 0; i < c->n_argv && n + 1 < cap; i++) {
        int w = snprintf(buf + n, cap - n, "%s%s", i ? " " : "", c->argv[i]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    return buf;
}

/* ------------------------------------------------------------------ embedded data */

static void data_series(json_t *j, const char *key, Stackwatch__Sample *const *pts, size_t n,
                        int stack)
{
    json_arr_begin(j, key);
    for (size_t i = 0; i < n; i++) {
        json_arr_begin(j, NULL);
        json_u64(j, NULL, pts[i]->t_ms);
        json_u64(j, NULL, pts[i]->live_bytes);
        json_u64(j, NULL, stack ? pts[i]->may_leak_bytes : pts[i]->live_count);
        if (!stack) { /* the memory account: RSS, malloc's memory (0: not known) */
            json_u64(j, NULL, pts[i]->rss_bytes);
            json_u64(j, NULL, pts[i]->heap_bytes);
        }
        json_arr_end(j);
    }
    json_arr_end(j);
}

/* What the script draws from: process and stack series, and each stack's frames
 * (innermost first) for the flame graph. */
static void data_json(FILE *f, const Stackwatch__LeakReport *r)
{
    json_t j;
    char buf[512];
    json_init(&j, f, 0);
    json_obj_begin(&j, NULL);
    json_u64(&j, "now_ms", r->now_ms);
    json_u64(&j, "expire_ms", r->expire_ms);
    json_bool(&j, "by_exe", r->by_exe);
    json_arr_begin(&j, "palette");
    for (size_t i = 0; i < HTML_TOP_LINES; i++)
        json_str(&j, NULL, html_palette[i]);
    json_arr_end(&j);
    json_arr_begin(&j, "procs");
    for (size_t i = 0; i < r->n_clients; i++) {
        const Stackwatch__ClientInfo *c = r->clients[i];
        json_obj_begin(&j, NULL);
        json_u64(&j, "pid", c->pid);
        json_str(&j, "exe", base_name(c->exe));
        data_series(&j, "series", c->series, c->n_series, 0);
        json_obj_end(&j);
    }
    json_arr_end(&j);
    json_arr_begin(&j, "stacks");
    for (size_t i = 0; i < r->n_stacks; i++) {
        const Stackwatch__StackReport *s = r->stacks[i];
        snprintf(buf, sizeof buf, "%016" PRIx64, s->id);
        json_obj_begin(&j, NULL);
        json_str(&j, "id", buf);
        json_u64(&j, "pid", s->pid);
        json_str(&j, "exe", base_name(s->exe));
        json_u64(&j, "ml", cnt(s->may_leak)->bytes);
        json_u64(&j, "live", cnt(s->live)->bytes);
        /* The chart's legend: the name the stack goes by (cli_stack_name). */
        json_str(&j, "label", cli_stack_name(buf, sizeof buf, s));
        const Stackwatch__PyTraceback *tb = cli_py_top(s);
        data_series(&j, "series", s->series, s->n_series, 1);
        /* The blamed Python frames (of the top traceback) go after the
         * interpreter frame they run under, marked by module "[python]". */
        size_t anchor = cli_py_anchor(s);
        json_arr_begin(&j, "frames");
        for (size_t k = 0; k <= s->n_frames; k++) {
            if (k == anchor && tb) {
                for (size_t q = 0; q < tb->n_frames; q++) {
                    const Stackwatch__PyFrame *pf = tb->frames[q];
                    json_obj_begin(&j, NULL);
                    json_str(&j, "n", cli_py_name(buf, sizeof buf, pf));
                    json_str(&j, "m", "[python]");
                    snprintf(buf, sizeof buf, "%s:%u", pf->file ? pf->file : "", pf->line);
                    json_str(&j, "s", buf);
                    json_obj_end(&j);
                }
            } else if (k == anchor && !empty(s->python_missing)) {
                json_obj_begin(&j, NULL);
                snprintf(buf, sizeof buf, "[no Python line: %s]", s->python_missing);
                json_str(&j, "n", buf);
                json_str(&j, "m", "[python]");
                json_str(&j, "s", "");
                json_obj_end(&j);
            }
            if (k == s->n_frames)
                break;
            const Stackwatch__Frame *fr = s->frames[k];
            json_obj_begin(&j, NULL);
            json_str(&j, "n", frame_name(buf, sizeof buf, fr));
            json_str(&j, "m", fr->module ? fr->module : "");
            if (!empty(fr->file))
                snprintf(buf, sizeof buf, "%s:%u", fr->file, fr->line);
            else
                buf[0] = '\0';
            json_str(&j, "s", buf);
            json_obj_end(&j);
        }
        json_arr_end(&j);
        json_obj_end(&j);
    }
    json_arr_end(&j);
    json_obj_end(&j);
}

/* Writes the data block. Inside <script> a "</script" or "<!--" in a string
 * would end or confuse the element, so every < > & in the JSON (they occur
 * only inside strings) is written as a \u escape, and so are DEL and the C1
 * controls (the JSON writer escapes C0 ones). Returns 0 or -errno. */
static int html_data(FILE *f, const Stackwatch__LeakReport *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return -errno;
    data_json(m, r);
    if (fclose(m) != 0) { /* a memory stream fails only for want of memory */
        free(buf);
        return -ENOMEM;
    }
    fputs("<script type=\"application/json\" id=\"sw-data\">", f);
    for (size_t i = 0; i < len; i++) {
        switch (buf[i]) {
        case '<': fputs("\\u003c", f); break;
        case '>': fputs("\\u003e", f); break;
        case '&': fputs("\\u0026", f); break;
        case 0x7f: fputs("\\u007f", f); break; /* json.c escapes C0 controls */
        default:
            if ((unsigned char)buf[i] == 0xc2 && i + 1 < len &&
                (unsigned char)buf[i + 1] >= 0x80 && (unsigned char)buf[i + 1] <= 0x9f) {
                fprintf(f, "\\u%04x", (unsigned char)buf[i + 1]); /* a C1 control */
                i++;
            } else
                fputc(buf[i], f);
            break;
        }
    }
    fputs("</script>\n", f);
    free(buf);
    return 0;
}

/* ------------------------------------------------------------------ page assets */

/* html_css and html_js: collector/html.css and collector/html.js, embedded at
 * build time (scripts/embed.py). */
#include "html_assets.h"


/* ------------------------------------------------------------------ page parts */

static void html_head(FILE *f, const Stackwatch__LeakReport *r)
{
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          "<title>stackwatch report",
          f);
    for (size_t i = 0; i < r->n_clients && i < 4; i++) {
        fputs(i ? ", " : ": ", f);
        html_esc(f, base_name(r->clients[i]->exe));
    }
    fprintf(f, "</title>\n<style>\n%s</style>\n"
               "<noscript><style>#stacks tr.detail{display:table-row}</style></noscript>\n"
               "</head>\n",
            html_css);
}

static void html_header(FILE *f, const Stackwatch__LeakReport *r)
{
    char a[512], b[64], when[64] = "";
    time_t t = (time_t)(r->now_ms / 1000);
    struct tm tm;
    if (r->now_ms && localtime_r(&t, &tm))
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %Z", &tm);
    uint64_t ml_b = 0, ml_n = 0, live_b = 0, leaks = 0, classified = 0;
    for (size_t i = 0; i < r->n_stacks; i++) {
        ml_b += cnt(r->stacks[i]->may_leak)->bytes;
        ml_n += cnt(r->stacks[i]->may_leak)->count;
        classified += !empty(r->stacks[i]->class_);
        if (!empty(r->stacks[i]->class_) &&
            (!strcmp(r->stacks[i]->class_, "leak") || !strcmp(r->stacks[i]->class_, "growing")))
            leaks++;
    }
    for (size_t i = 0; i < r->n_clients; i++)
        live_b += cnt(r->clients[i]->live)->bytes;

    fputs("<header>\n<h1>stackwatch leak report", f);
    if (r->n_clients) {
        fputs("<span class=\"sub\">", f);
        for (size_t i = 0; i < r->n_clients && i < 4; i++) {
            if (i)
                fputs(", ", f);
            html_esc(f, base_name(r->clients[i]->exe));
        }
        if (r->n_clients > 4)
            fprintf(f, " and %zu more", r->n_clients - 4);
        fputs("</span>", f);
    }
    fputs("</h1>\n<div class=\"meta\">", f);
    if (*when)
        fprintf(f, "made <b>%s</b> &middot; ", when);
    fprintf(f, "expire time <b>%.3g s</b> &middot; sampling <b>", r->expire_ms / 1000.0);
    html_esc(f, empty(r->sample) ? "all" : r->sample);
    fprintf(f, "</b> &middot; <b>%zu</b> process%s &middot; <b>%zu</b> stack%s shown", r->n_clients,
            r->n_clients == 1 ? "" : "es", r->n_stacks, r->n_stacks == 1 ? "" : "s");
    if (r->by_exe)
        fputs(" &middot; stacks folded by executable", f);
    if (r->since_mark)
        fputs(" &middot; only blocks allocated after the mark", f);
    fputs("</div>\n<div class=\"cards\">\n", f);
    fprintf(f, "<div class=\"card\" title=\"%" PRIu64 " bytes\"><b>%s</b><span>may-leak in %s "
               "blocks of the stacks shown</span></div>\n",
            ml_b, fmt_bytes(a, sizeof a, (double)ml_b), fmt_count(b, sizeof b, ml_n));
    fprintf(f, "<div class=\"card\" title=\"%" PRIu64 " bytes\"><b>%s</b><span>live in the "
               "processes now</span></div>\n",
            live_b, fmt_bytes(a, sizeof a, (double)live_b));
    if (classified || !r->n_stacks)
        fprintf(f, "<div class=\"card\"><b>%" PRIu64 "</b><span>stacks classified leak or "
                   "growing</span></div>\n",
                leaks);
    else
        fputs("<div class=\"card\"><b>&ndash;</b><span>stacks not classified yet</span></div>\n",
              f);
    if (r->n_stacks) {
        char name[1024];
        fputs("<div class=\"card\"><b class=\"mono\">", f);
        html_esc(f, cli_stack_name(name, sizeof name, r->stacks[0]));
        fputs("</b><span>allocates the top-ranked stack</span></div>\n", f);
    }
    fputs("</div>\n", f);
    if (r->n_clients) {
        fputs("<table class=\"procs\">\n<tr><th class=\"num\">pid</th><th>state</th>"
              "<th>command</th><th class=\"num\">live</th><th class=\"num\">events</th>"
              "<th>notes</th></tr>\n",
              f);
        for (size_t i = 0; i < r->n_clients; i++) {
            const Stackwatch__ClientInfo *c = r->clients[i];
            char cmd[2048];
            fprintf(f, "<tr><td class=\"num mono\">%u</td><td><span class=\"state st-", c->pid);
            html_esc(f, c->state);
            fputs("\">", f);
            html_esc(f, empty(c->state) ? "?" : c->state);
            fputs("</span></td><td class=\"mono\">", f);
            html_esc(f, cmd_line(c, cmd, sizeof cmd));
            fprintf(f, "</td><td class=\"num\" title=\"%" PRIu64 " bytes in %" PRIu64
                       " blocks\">%s</td><td class=\"num\">%s</td><td class=\"small\">",
                    cnt(c->live)->bytes, cnt(c->live)->count,
                    fmt_bytes(a, sizeof a, (double)cnt(c->live)->bytes),
                    fmt_count(b, sizeof b, c->events));
            if (c->python_version)
                fprintf(f, "Python %u.%u.%u ", c->python_version >> 24,
                        (c->python_version >> 16) & 0xff, (c->python_version >> 8) & 0xff);
            if (c->dropped)
                fprintf(f, "<span class=\"blamed\">%" PRIu64 " events dropped</span> ",
                        c->dropped);
            if (c->gaps)
                fprintf(f, "<span class=\"blamed\">%u gap(s), %" PRIu64 " events lost</span> ",
                        c->gaps, c->lost_events);
            if (c->table_full)
                fprintf(f, "<span class=\"blamed\">%" PRIu64 " allocations untracked "
                           "(--max-live)</span> ",
                        c->table_full);
            if (c->unwind_failures)
                fprintf(f, "%" PRIu64 " unwind failures ", c->unwind_failures);
            fputs("</td></tr>\n", f);
        }
        fputs("</table>\n", f);
    }
    fputs("</header>\n", f);
}

static void html_chart(FILE *f, const Stackwatch__LeakReport *r)
{
    int any = has_samples(r);
    fprintf(f, "<section id=\"s-chart\">\n<h2>Live bytes over time<small>top %zu stacks by rank "
               "(solid; click a line for its row), each process&#39;s total (dashed), its RSS "
               "(dotted) and malloc&#39;s memory (dash-dot)</small>",
            HTML_TOP_LINES);
    if (any)
        fputs("<span class=\"controls\"><button data-scale=\"lin\" class=\"on\">linear</button>"
              "<button data-scale=\"log\">log</button></span>",
              f);
    fputs("</h2>\n<div id=\"chart\" class=\"plot\"><svg id=\"chart-svg\" role=\"img\" "
          "aria-label=\"live bytes over time\"></svg>",
          f);
    if (!any)
        fputs("<p class=\"empty\">No samples yet: collectord records live bytes over time "
              "while the processes run. Make the report again in a while.</p>",
              f);
    fputs("</div>\n<div id=\"legend\" class=\"legend\"></div>\n</section>\n", f);
}

static void html_flame(FILE *f, const Stackwatch__LeakReport *r)
{
    uint64_t w = 0;
    for (size_t i = 0; i < r->n_stacks; i++)
        w += cnt(r->stacks[i]->may_leak)->bytes + cnt(r->stacks[i]->live)->bytes;
    fputs("<section id=\"s-flame\">\n<h2>Where the may-leak bytes were allocated<small "
          "id=\"flame-note\">outermost caller on top, allocation site at the bottom; width "
          "&prop; bytes; click to zoom</small>",
          f);
    if (w)
        fputs("<span class=\"controls\"><button data-order=\"td\" class=\"on\" title=\"outermost "
              "caller on top\">top-down</button><button data-order=\"bu\" title=\"allocation "
              "site on top, callers below\">bottom-up</button> <button id=\"flame-reset\">reset "
              "zoom</button></span>",
              f);
    fputs("</h2>\n<div id=\"flame\" class=\"plot\"><svg id=\"flame-svg\" role=\"img\" "
          "aria-label=\"flame graph\"></svg>",
          f);
    if (!w)
        fputs("<p class=\"empty\">Nothing to draw: no stack shown holds live or may-leak "
              "bytes.</p>",
              f);
    fputs("</div>\n</section>\n", f);
}

/* A table cell with bytes and, below, the block count. */
static void cell_count(FILE *f, const Stackwatch__Count *c)
{
    char a[64], b[64];
    c = cnt(c);
    fprintf(f, "<td class=\"num\" title=\"%" PRIu64 " bytes in %" PRIu64 " blocks\">%s"
               "<span class=\"small muted\">%s block%s</span></td>",
            c->bytes, c->count, fmt_bytes(a, sizeof a, (double)c->bytes),
            fmt_count(b, sizeof b, c->count), c->count == 1 ? "" : "s");
}

static void fact(FILE *f, const char *name, const Stackwatch__Count *c)
{
    char a[64], b[64];
    c = cnt(c);
    fprintf(f, "<span title=\"%" PRIu64 " bytes\">%s <b>%s</b> (%s)</span>", c->bytes, name,
            fmt_count(b, sizeof b, c->count), fmt_bytes(a, sizeof a, (double)c->bytes));
}

static void html_frame_src(FILE *f, const Stackwatch__Frame *fr)
{
    if (empty(fr->file))
        return;
    fputs("<span title=\"", f);
    html_escf(f, "%s:%u", fr->file, fr->line);
    fputs("\">", f);
    html_escf(f, "%s:%u", base_name(fr->file), fr->line);
    fputs("</span>", f);
}

typedef struct html_rows_s {
    FILE *f;
    const Stackwatch__StackReport *s;
    const Stackwatch__PyTraceback *tb; /* merged into the stack, or NULL */
} html_rows_t;

/* One row of a stack's merged frames (cli_py_rows). */
static void html_row_cb(void *ctx, int kind, size_t k, size_t n)
{
    html_rows_t *h = ctx;
    FILE *f = h->f;
    char a[512];
    switch (kind) {
    case CLI_ROW_FRAME: {
        const Stackwatch__Frame *fr = h->s->frames[k];
        fprintf(f, "<tr><td class=\"muted num\">#%zu</td><td class=\"mono muted\">0x%016" PRIx64
                   "</td><td class=\"mono\">",
                k, fr->addr);
        if (!empty(fr->function)) {
            fputs("<span class=\"fn\">", f);
            html_esc(f, fr->function);
            fprintf(f, "</span>+%" PRIu64, fr->offset);
        } else {
            html_esc(f, frame_name(a, sizeof a, fr));
        }
        if (fr->is_inline)
            fputs(" <span class=\"muted\">[inline]</span>", f);
        fputs("</td><td class=\"mono\">", f);
        html_frame_src(f, fr);
        fputs("</td><td class=\"mono muted\" title=\"", f);
        html_esc(f, fr->module);
        fputs("\">", f);
        html_esc(f, base_name(fr->module));
        fputs("</td></tr>\n", f);
        break;
    }
    case CLI_ROW_FOLD:
        fprintf(f, "<tr class=\"fold\"><td></td><td colspan=\"4\" class=\"muted\" title=\"frames "
                   "#%zu to #%zu: the interpreter's own (stackctl report --all-frames shows "
                   "them)\">&hellip; %zu CPython frames</td></tr>\n",
                k, k + n - 1, n);
        break;
    case CLI_ROW_CUT:
        fputs("<tr><td></td><td colspan=\"4\" class=\"small muted\">&hellip; truncated at "
              "STACKWATCH_DEPTH</td></tr>\n", f);
        break;
    case CLI_ROW_PYTHON: {
        for (size_t q = 0; q < h->tb->n_frames; q++) {
            const Stackwatch__PyFrame *p = h->tb->frames[q];
            fputs("<tr class=\"pyf\"><td></td><td class=\"mono muted\">[Python]</td><td "
                  "class=\"mono\"><span class=\"fn\">", f);
            html_esc(f, empty(p->function) ? "?" : p->function);
            fputs("</span></td><td class=\"mono\"><span title=\"", f);
            html_escf(f, "%s:%u", p->file ? p->file : "", p->line);
            fputs("\">", f);
            html_escf(f, "%s:%u", base_name(p->file), p->line);
            fputs("</span></td><td class=\"mono muted\">Python</td></tr>\n", f);
        }
        if (h->tb->truncated)
            fputs("<tr class=\"pyf\"><td></td><td colspan=\"4\" class=\"small muted\">&hellip; "
                  "(deeper Python frames cut)</td></tr>\n", f);
        size_t e = cli_py_entries(h->s);
        if (e > 1)
            fprintf(f, "<tr class=\"pyf\"><td></td><td colspan=\"4\" class=\"small muted\">the "
                       "Python frames of all %zu entries into the interpreter on this stack, "
                       "innermost first</td></tr>\n", e);
        break;
    }
    }
}

/* The detail row of a stack: its figures, its frames merged with the top
 * blamed Python traceback, and its Python stacks, spanning the table's
 * columns. */
static void html_detail(FILE *f, const Stackwatch__StackReport *s, int columns, unsigned flags)
{
    char a[512];
    fprintf(f, "<tr class=\"detail\"><td colspan=\"%d\">\n<div class=\"facts\">", columns);
    if (s->scanned) {
        /* Reachability, from the process's last scan. */
        fact(f, "unreachable (lost)", s->unreachable);
        fact(f, "reachable", s->reachable);
        if (cnt(s->unreachable)->count) {
            fact(f, "lost directly", s->unreachable_direct);
            fact(f, "lost indirectly", s->unreachable_indirect);
        }
        for (size_t k = 0; k < s->n_owners; k++) {
            /* The owner is a stack of the same process (the row's id). */
            fprintf(f, "<span>owned by <a href=\"#s%016" PRIx64 "-%u\">CallStack[%016" PRIx64
                       "]</a></span>",
                    s->owners[k]->stack, s->pid, s->owners[k]->stack);
            fact(f, "", s->owners[k]->blocks);
        }
        for (size_t k = 0; k < s->n_kept_by; k++) {
            const Stackwatch__RetentionPath *p = s->kept_by[k];
            fputs("<span>kept by <b>", f);
            html_esc(f, p->root);
            fputs("</b>", f);
            size_t n = p->n_hops ? p->n_hops : p->n_via;
            for (size_t h = 0; h < n; h++) {
                const Stackwatch__RetentionHop *y = p->n_hops ? p->hops[h] : NULL;
                uint64_t id = y ? y->stack : p->via[h];
                const char *type = y && y->type && *y->type ? y->type : NULL;
                fputs(" &rarr; ", f);
                if (type) {
                    html_esc(f, type);
                    fputs(" object", f);
                }
                if (id)
                    fprintf(f, "%s<a href=\"#s%016" PRIx64 "-%u\">CallStack[%016" PRIx64 "]</a>",
                            type ? " " : "", id, s->pid, id);
                else if (type && y->bytes)
                    fprintf(f, " (%" PRIu64 " bytes)", y->bytes);
                else if (type)
                    ; /* sizes vary */
                else if (y->bytes)
                    fprintf(f, "Python object of %" PRIu64 " bytes", y->bytes);
                else
                    fputs("Python objects", f);
            }
            fprintf(f, " &rarr; these blocks (%" PRIu64 " of %" PRIu64 " sampled)</span>", p->blocks,
                    p->sampled);
        }
    }
    fact(f, "expired", s->expired);
    fact(f, "free_expired", s->free_expired);
    fact(f, "alloc", s->alloc);
    fact(f, "free", s->free);
    if (cnt(s->exit_live)->count)
        fact(f, "exit_live", s->exit_live);
    if (cnt(s->uncertain)->count)
        fact(f, "uncertain", s->uncertain);
    if (s->freed_lt_valid)
        fprintf(f, "<span>freed blocks lived <b>%" PRIu64 "</b>&ndash;<b>%" PRIu64 "</b> ms "
                   "(avg %" PRIu64 ")</span>",
                s->freed_lt_min_ms, s->freed_lt_max_ms, s->freed_lt_avg_ms);
    else
        fputs("<span>none freed</span>", f);
    fprintf(f, "<span>oldest unfreed <b>%" PRIu64 "</b> ms</span>", s->unfreed_max_age_ms);
    if (!empty(s->class_))
        fprintf(f, "<span>rank <b>%.0f</b></span>", s->rank);
    if (s->armed)
        fprintf(f, "<span>armed: %u capture(s) left</span>", s->armed);
    fputs("</div>\n", f);
    if (s->n_pids) {
        fputs("<div class=\"facts\">", f);
        for (size_t k = 0; k < s->n_pids; k++) {
            const Stackwatch__PidPart *p = s->pids[k];
            fprintf(f, "<span>pid <b>%u</b>: may-leak %s</span>", p->pid,
                    fmt_bytes(a, sizeof a, (double)cnt(p->may_leak)->bytes));
        }
        fputs("</div>\n", f);
    }
    if (s->skipped)
        fprintf(f, "<div class=\"small muted\">%u allocation-wrapper frame%s not shown</div>\n",
                s->skipped, s->skipped == 1 ? "" : "s");
    const Stackwatch__PyTraceback *tb = cli_py_top(s);
    if (!s->n_frames)
        fputs("<div class=\"muted\">(stack not captured)</div>\n", f);
    if (s->n_frames || tb) {
        fputs("<table class=\"frames\">\n", f);
        html_rows_t hr = { f, s, tb };
        cli_py_rows(s, tb != NULL, (flags & CLI_ALL_FRAMES) != 0, html_row_cb, &hr);
        fputs("</table>\n", f);
    } else if (s->truncated) {
        fputs("<div class=\"small muted\">&hellip; truncated at STACKWATCH_DEPTH</div>\n", f);
    }
    for (size_t i = 0; i < s->n_python; i++) {
        const Stackwatch__PyTraceback *t = s->python[i];
        fprintf(f, "<div class=\"py\"><div class=\"hd\">Python stack%s: %u capture%s, may-leak "
                   "%" PRIu64 " (%s), live %" PRIu64 ", freed %" PRIu64 " &middot; ",
                t == tb ? " above" : "", t->captures, t->captures == 1 ? "" : "s",
                cnt(t->may_leak)->count, fmt_bytes(a, sizeof a, (double)cnt(t->may_leak)->bytes),
                cnt(t->live)->count, t->freed);
        fprintf(f, "<span class=\"%s\">%s</span>", t->blamed ? "blamed" : "muted",
                cli_py_verdict(t));
        if (t == tb && empty(t->text)) { /* its frames are in the stack above */
            fputs("</div></div>\n", f);
            continue;
        }
        fputs("</div><pre>", f);
        for (size_t k = 0; t != tb && k < t->n_frames; k++) {
            const Stackwatch__PyFrame *p = t->frames[k];
            html_escf(f, "%s:%u ", p->file, p->line);
            html_esc(f, p->function);
            fputc('\n', f);
        }
        if (t->truncated && t != tb)
            fputs("&hellip; (deeper Python frames cut)\n", f);
        if (!empty(t->text)) {
            fputs("from the signal handler:\n", f);
            html_esc(f, t->text);
            fputc('\n', f);
        }
        fputs("</pre></div>\n", f);
    }
    fputs("</td></tr>\n", f);
}

/* The "allocated at" cell: the frame the stack is named by (cli_stack_site:
 * the innermost that says something, not the interpreter's own), the
 * innermost frame when it calls others, and the program's own caller when
 * the site lies in a library. */
static void html_alloc_site(FILE *f, const Stackwatch__StackReport *s)
{
    char a[512];
    const Stackwatch__Frame *top = cli_stack_site(s), *own = own_caller(s, top);
    fputs("<td class=\"mono\">", f);
    if (!top) {
        fputs("<span class=\"muted\">(no frames)</span></td>", f);
        return;
    }
    fputs("<span class=\"fn\">", f);
    html_esc(f, cpython_short_name(a, sizeof a, top->module, top->function, top->module_offset,
                                   top->addr));
    fputs("</span> <span class=\"small muted\">", f);
    html_frame_src(f, top);
    fputs("</span>", f);
    size_t below = 0;
    while (below < s->n_frames && s->frames[below] != top)
        below++;
    if (below) {
        frame_name(a, sizeof a, s->frames[0]);
        fputs("<div class=\"small muted hint\" title=\"innermost: ", f);
        html_esc(f, a);
        fprintf(f, "\">calls %zu frame%s (", below, below == 1 ? "" : "s");
        html_esc(f, a);
        fputs(")</div>", f);
    }
    if (own) {
        fputs("<div class=\"small muted hint\">from <span class=\"fn\">", f);
        html_esc(f, own->function);
        fputs("</span> ", f);
        html_frame_src(f, own);
        fputs("</div>", f);
    }
    fputs("</td>", f);
}

/* Time span of the stacks' series: the sparklines share it. */
typedef struct span_s {
    uint64_t t0, t1; /* first and last sample (Unix ms); t0 > t1: none */
} span_t;

static span_t series_span(const Stackwatch__LeakReport *r)
{
    span_t sp = {UINT64_MAX, 0};
    for (size_t i = 0; i < r->n_stacks; i++)
        for (size_t k = 0; k < r->stacks[i]->n_series; k++) {
            uint64_t t = r->stacks[i]->series[k]->t_ms;
            sp.t0 = t < sp.t0 ? t : sp.t0;
            sp.t1 = t > sp.t1 ? t : sp.t1;
        }
    return sp;
}

enum { SPARK_W = 96, SPARK_H = 22 }; /* size of a sparkline */

/* Where sample k of s sits in its sparkline. */
static void spark_xy(const Stackwatch__StackReport *s, size_t k, span_t sp, uint64_t max,
                     double *x, double *y)
{
    double dt = sp.t1 > sp.t0 ? (double)(sp.t1 - sp.t0) : 1;
    const Stackwatch__Sample *pt = s->series[k];
    *x = 1 + (double)(pt->t_ms - sp.t0) / dt * (SPARK_W - 2);
    *y = SPARK_H - 1.5 - (max ? (double)pt->live_bytes / (double)max * (SPARK_H - 4) : 0);
}

/* Path commands through the samples of s. */
static void spark_path(FILE *f, const Stackwatch__StackReport *s, span_t sp, uint64_t max)
{
    double x, y;
    for (size_t k = 0; k < s->n_series; k++) {
        spark_xy(s, k, sp, max, &x, &y);
        fprintf(f, "%c%.1f %.1f", k ? 'L' : 'M', x, y);
    }
}

/* The trend cell: the stack's live bytes over the shared time span, scaled to
 * its own maximum, as a small inline SVG (drawn without the script). */
static void html_sparkline(FILE *f, const Stackwatch__StackReport *s, size_t i, span_t sp)
{
    char a[64], b[64], c[64];
    if (!s->n_series) {
        fputs("<td class=\"muted\">&ndash;</td>", f);
        return;
    }
    uint64_t max = 0;
    for (size_t k = 0; k < s->n_series; k++)
        max = s->series[k]->live_bytes > max ? s->series[k]->live_bytes : max;
    const char *color = i < HTML_TOP_LINES ? html_palette[i] : "#8a94a0";
    double x0, xn, y;
    spark_xy(s, 0, sp, max, &x0, &y);
    spark_xy(s, s->n_series - 1, sp, max, &xn, &y);
    fprintf(f, "<td><svg class=\"spark\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">"
               "<title>live %s at first, %s at last, %s at most</title><path d=\"",
            SPARK_W, SPARK_H, SPARK_W, SPARK_H,
            fmt_bytes(a, sizeof a, (double)s->series[0]->live_bytes),
            fmt_bytes(b, sizeof b, (double)s->series[s->n_series - 1]->live_bytes),
            fmt_bytes(c, sizeof c, (double)max));
    spark_path(f, s, sp, max);
    fprintf(f, "L%.1f %d L%.1f %dZ\" fill=\"%s\" fill-opacity=\"0.15\"/><path d=\"", xn,
            SPARK_H, x0, SPARK_H, color);
    spark_path(f, s, sp, max);
    fprintf(f, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" "
               "stroke-linejoin=\"round\"/>",
            color);
    if (s->n_series == 1)
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" fill=\"%s\"/>", xn, y, color);
    fputs("</svg></td>", f);
}

/* A stack's row and its detail row (frames, Python stacks), in one tbody. py: the
 * table has the Python line column. */
static void html_row(FILE *f, const Stackwatch__StackReport *s, size_t i, int py, span_t span,
                     unsigned flags)
{
    char a[64];
    fprintf(f, "<tbody class=\"stack\" id=\"s%016" PRIx64 "-%u\" data-i=\"%zu\">\n"
               "<tr class=\"row\" tabindex=\"0\" aria-expanded=\"false\"><td class=\"num\" "
               "title=\"rank %.0f (confidence &times; may-leak bytes)\"><span "
               "class=\"caret\">&#9656;</span> ",
            s->id, s->pid, i, s->rank);
    if (i < HTML_TOP_LINES && s->n_series)
        fprintf(f, "<span class=\"sw\" style=\"background:%s\"></span>", html_palette[i]);
    fprintf(f, "%zu</td><td class=\"mono\">%016" PRIx64 "</td><td class=\"nowrap\">", i + 1,
            s->id);
    if (s->n_pids > 1) {
        fprintf(f, "<span title=\"");
        for (size_t k = 0; k < s->n_pids; k++)
            fprintf(f, "%s%u", k ? ", " : "pids ", s->pids[k]->pid);
        fprintf(f, "\">%zu processes</span>", s->n_pids);
    } else {
        fprintf(f, "pid %u", s->pid);
    }
    fputs(" <span class=\"muted\" title=\"", f);
    html_esc(f, s->exe);
    fputs("\">", f);
    html_esc(f, base_name(s->exe));
    fputs("</span></td><td>", f);
    if (empty(s->class_)) {
        fputs("<span class=\"badge c-none\">unclassified</span></td><td class=\"num muted\">"
              "&ndash;</td>",
              f);
    } else {
        fputs("<span class=\"badge c-", f);
        html_esc(f, s->class_);
        fputs("\">", f);
        html_esc(f, s->class_);
        fprintf(f, "</span></td><td class=\"num\">%.0f%%</td>", s->confidence * 100);
    }
    cell_count(f, s->may_leak);
    cell_count(f, s->live);
    double g = s->growth_bytes_per_min;
    if (g > -0.5 && g < 0.5)
        fprintf(f, "<td class=\"num muted\">%s</td>", empty(s->class_) ? "&ndash;" : "0");
    else
        fprintf(f, "<td class=\"num\">%s%s</td>", g > 0 ? "+" : "", fmt_bytes(a, sizeof a, g));
    html_sparkline(f, s, i, span);
    html_alloc_site(f, s);
    const Stackwatch__PyTraceback *tb = cli_py_top(s);
    if (py)
        fputs("<td class=\"mono nowrap\">", f);
    if (tb) {
        const Stackwatch__PyFrame *p = tb->frames[0];
        fputs("<span title=\"", f);
        html_escf(f, "%s:%u in %s", p->file, p->line, p->function);
        fputs("\">", f);
        html_escf(f, "%s:%u", base_name(p->file), p->line);
        fputs(" <span class=\"fn\">", f);
        html_esc(f, p->function);
        fputs("</span></span>", f);
    } else if (!empty(s->python_missing)) {
        fputs("<span class=\"small muted\">none: ", f);
        html_esc(f, s->python_missing);
        fputs("</span>", f);
    } else if (s->n_python) {
        fputs("<span class=\"small muted\">none blamed</span>", f);
    }
    fputs(py ? "</td></tr>\n" : "</tr>\n", f);
    html_detail(f, s, py ? 11 : 10, flags);
    fputs("</tbody>\n", f);
}

static void html_table(FILE *f, const Stackwatch__LeakReport *r, unsigned flags)
{
    fputs("<section id=\"s-table\">\n<h2>Stacks by rank", f);
    if (!r->n_stacks) {
        fprintf(f, "</h2>\n<p class=\"empty\">No leaks: no block has stayed allocated longer "
                   "than the expire time (%.3g s).</p>\n</section>\n",
                r->expire_ms / 1000.0);
        return;
    }
    fputs("<small>click a row for its frames and Python stacks</small><span "
          "class=\"controls\"><button id=\"expand-all\">expand all</button><button "
          "id=\"collapse-all\">collapse all</button></span></h2>\n",
          f);
    int py = 0;
    span_t span = series_span(r);
    for (size_t i = 0; i < r->n_stacks; i++)
        py |= r->stacks[i]->n_python > 0 || !empty(r->stacks[i]->python_missing);
    fprintf(f, "<div class=\"scroll\"><table id=\"stacks\">\n<thead><tr><th class=\"num\">#</th>"
               "<th>stack</th>"
               "<th>process</th><th>class</th><th class=\"num\">conf.</th>"
               "<th class=\"num\">may-leak</th><th class=\"num\">live</th>"
               "<th class=\"num\">growth/min</th><th>trend</th><th>allocated at</th>%s</tr>"
               "</thead>\n",
            py ? "<th>Python line</th>" : "");
    for (size_t i = 0; i < r->n_stacks; i++)
        html_row(f, r->stacks[i], i, py, span, flags);
    fputs("</table></div>\n</section>\n", f);
}

int cli_report_html(FILE *f, const Stackwatch__LeakReport *r, unsigned flags)
{
    html_head(f, r);
    fputs("<body>\n<main>\n", f);
    html_header(f, r);
    html_chart(f, r);
    html_flame(f, r);
    html_table(f, r, flags);
    fputs("<footer>Made by stackctl report --html. This page is self-contained: it loads "
          "nothing from the network.</footer>\n</main>\n<div id=\"tip\" class=\"tip\" "
          "hidden></div>\n",
          f);
    int rc = html_data(f, r);
    if (rc < 0)
        return rc;
    fprintf(f, "<script>\n%s</script>\n</body>\n</html>\n", html_js);
    return ferror(f) ? -EIO : 0;
}


