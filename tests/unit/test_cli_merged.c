/* Unit tests of the merged stack of a Python program (text, HTML, JSON) and of the name a stack goes by. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/stackctl/html.h"
#include "collector/stackctl/py.h"
#include "collector/stackctl/report.h"

/* ------------------------------------------------------------------ building replies */

#define NUMPY "/usr/lib/python3/dist-packages/numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so"
#define PYEXE "/usr/bin/python3.11"
#define LIBC "/lib/x86_64-linux-gnu/libc.so.6"
#define LIBPY "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"
#define MAXF 40

/* A stack with its parts in the test's storage (nothing freed). */
typedef struct tstack_s {
    Stackwatch__StackReport s;
    Stackwatch__Count ml;
    Stackwatch__Frame fr[MAXF];
    Stackwatch__Frame *frp[MAXF];
    Stackwatch__PyFrame pf[3];
    Stackwatch__PyFrame *pfp[3];
    Stackwatch__PyFrame freed_pf;
    Stackwatch__PyFrame *freed_pfp;
    Stackwatch__PyTraceback tb[2];
    Stackwatch__PyTraceback *tbp[2];
} tstack_t;

static void tstack_init(tstack_t *t)
{
    memset(t, 0, sizeof *t);
    stackwatch__stack_report__init(&t->s);
    stackwatch__count__init(&t->ml);
    t->ml.count = 3;
    t->ml.bytes = 160008;
    t->s.id = 0x93f33efae9fde63bull;
    t->s.pid = 11758;
    t->s.exe = PYEXE;
    t->s.class_ = "leak";
    t->s.may_leak = &t->ml;
    t->s.frames = t->frp;
}

/* Appends a frame; function NULL or "": not symbolized. */
static void add(tstack_t *t, const char *module, uint64_t off, const char *function)
{
    size_t k = t->s.n_frames++;
    assert_true(k < MAXF);
    Stackwatch__Frame *f = &t->fr[k];
    stackwatch__frame__init(f);
    f->addr = 0x7fa325e00000ull + off;
    f->module = (char *)module;
    f->module_offset = off;
    f->function = (char *)(function ? function : "");
    f->file = "";
    t->frp[k] = f;
}

/* The seed's shape: numpy's stripped frames, the interpreter (9 frames of
 * it in a row), libc's start, python's _start. */
static void seed_frames(tstack_t *t)
{
    add(t, NUMPY, 0xde138, NULL);
    add(t, NUMPY, 0xde76e, NULL);
    add(t, NUMPY, 0x1a2352, NULL);
    add(t, PYEXE, 0x52c441, "_PyEval_EvalFrameDefault");
    add(t, PYEXE, 0x5236bb, "PyEval_EvalCode");
    add(t, PYEXE, 0x647d97, NULL);
    add(t, PYEXE, 0x6456ef, NULL);
    add(t, PYEXE, 0x651770, NULL);
    add(t, PYEXE, 0x6514bb, "_PyRun_SimpleFileObject");
    add(t, PYEXE, 0x6512e4, "_PyRun_AnyFileObject");
    add(t, PYEXE, 0x65007f, "Py_RunMain");
    add(t, PYEXE, 0x627d37, "Py_BytesMain");
    add(t, LIBC, 0x2724a, "__libc_start_call_main");
    add(t, LIBC, 0x27305, "__libc_start_main");
    add(t, PYEXE, 0x627bd1, "_start");
}

/* A blamed traceback leaky.py:27 backtest <- :40 main <- :50 <module>, and
 * a freed one (harmless.py:9 noise). */
static void seed_python(tstack_t *t)
{
    static const char *fn[3] = {"backtest", "main", "<module>"};
    static const uint32_t line[3] = {27, 40, 50};
    for (int i = 0; i < 3; i++) {
        stackwatch__py_frame__init(&t->pf[i]);
        t->pf[i].file = "/srv/app/leaky.py";
        t->pf[i].function = (char *)fn[i];
        t->pf[i].line = line[i];
        t->pfp[i] = &t->pf[i];
    }
    stackwatch__py_frame__init(&t->freed_pf);
    t->freed_pf.file = "/srv/app/harmless.py";
    t->freed_pf.function = "noise";
    t->freed_pf.line = 9;
    t->freed_pfp = &t->freed_pf;
    for (int i = 0; i < 2; i++) {
        stackwatch__py_traceback__init(&t->tb[i]);
        t->tbp[i] = &t->tb[i];
    }
    t->tb[0].frames = t->pfp;
    t->tb[0].n_frames = 3;
    t->tb[0].blamed = 1;
    t->tb[0].captures = 1;
    t->tb[1].frames = &t->freed_pfp;
    t->tb[1].n_frames = 1;
    t->tb[1].freed = 31;
    t->tb[1].captures = 31;
    t->s.python = t->tbp;
    t->s.n_python = 2;
}

static void report_of(Stackwatch__LeakReport *r, Stackwatch__StackReport **sp)
{
    stackwatch__leak_report__init(r);
    r->stacks = sp;
    r->n_stacks = 1;
    r->expire_ms = 1000;
    r->sample = "all";
}

typedef enum { TEXT, JSON, HTML } fmt_t;

/* The report of one stack in fmt; the caller frees it. */
static char *render(tstack_t *t, fmt_t fmt, unsigned flags)
{
    Stackwatch__StackReport *sp = &t->s;
    Stackwatch__LeakReport r;
    report_of(&r, &sp);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    if (fmt == TEXT)
        cli_leaks_text(f, &r, flags);
    else if (fmt == JSON)
        cli_leaks_json(f, &r);
    else
        assert_int_equal(cli_report_html(f, &r, flags), 0);
    assert_int_equal(fclose(f), 0);
    return buf;
}

/* Where needle starts in hay, as an offset; fails when it is missing. */
static size_t at(const char *hay, const char *needle)
{
    const char *p = strstr(hay, needle);
    if (!p)
        fail_msg("missing: %s\n--- in:\n%s", needle, hay);
    return (size_t)(p - hay);
}

static size_t occurrences(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* ------------------------------------------------------------------ tests */

/* Innermost first: numpy's frames, the Python lines in place of the
 * interpreter, one fold line for it, then libc and _start (a run of one). */
static void test_text_merged_and_folded(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t);
    seed_frames(&t);
    seed_python(&t);
    char *txt = render(&t, TEXT, 0);
    size_t np = at(txt, "_multiarray_umath.cpython-311-x86_64-linux-gnu.so+0x1a2352");
    size_t p0 = at(txt, "    [Python]            /srv/app/leaky.py:27 backtest\n");
    size_t p1 = at(txt, "    [Python]            /srv/app/leaky.py:40 main\n");
    size_t p2 = at(txt, "    [Python]            /srv/app/leaky.py:50 <module>\n");
    size_t fold = at(txt, "    … 9 CPython frames\n");
    size_t libc = at(txt, "__libc_start_call_main()+0");
    size_t start = at(txt, "_start()+0  (" PYEXE ")");
    assert_true(at(txt, "+0xde138") < np);
    assert_true(np < p0 && p0 < p1 && p1 < p2 && p2 < fold && fold < libc && libc < start);
    /* Folded away, and not listed a second time below. */
    assert_null(strstr(txt, "_PyEval_EvalFrameDefault"));
    assert_null(strstr(txt, "Py_BytesMain"));
    assert_int_equal(occurrences(txt, "leaky.py:27"), 1);
    assert_int_equal(occurrences(txt, "CPython frames"), 1);
    /* The merged traceback's fate below the stack; the freed one in full. */
    size_t above = at(txt, "    Python stack above: 1 capture(s): may-leak=0 (0 bytes), live=0, "
                           "freed=0  <- blamed: its blocks stay live\n");
    size_t other = at(txt, "    Python stack: 31 capture(s)");
    assert_true(start < above && above < other);
    assert_true(other < at(txt, "      /srv/app/harmless.py:9 noise\n"));
    assert_null(strstr(txt, "File \""));
    assert_null(strstr(txt, "entries into the interpreter"));
    free(txt);
}

/* --all-frames: every frame, the Python lines just before the eval loop
 * that runs them. */
static void test_text_all_frames(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t);
    seed_frames(&t);
    seed_python(&t);
    char *txt = render(&t, TEXT, CLI_ALL_FRAMES);
    assert_null(strstr(txt, "CPython frames"));
    size_t np = at(txt, "+0x1a2352");
    size_t p2 = at(txt, "leaky.py:50 <module>\n");
    size_t ev = at(txt, "_PyEval_EvalFrameDefault()+0");
    assert_true(np < at(txt, "leaky.py:27 backtest") && p2 < ev);
    assert_true(ev < at(txt, "PyEval_EvalCode()+0") && ev < at(txt, "python3.11+0x647d97"));
    assert_true(at(txt, "Py_BytesMain()+0") < at(txt, "__libc_start_main()+0"));
    /* All 15 C frames. */
    assert_int_equal(occurrences(txt, "\n    0x0000"), 15);
    free(txt);
}

/* The name: a stripped extension's module+offset, short, then the blamed
 * line; in the chart's legend, the "allocated at" cell and the top card. */
static void test_stack_name(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t);
    seed_frames(&t);
    seed_python(&t);
    char buf[512];
    assert_string_equal(cli_stack_name(buf, sizeof buf, &t.s),
                        "_multiarray_umath+0xde138 ← leaky.py:27 backtest");
    char *html = render(&t, HTML, 0);
    assert_non_null(strstr(html, "\"label\":\"_multiarray_umath+0xde138 \xe2\x86\x90 leaky.py:27 "
                                 "backtest\""));
    assert_non_null(strstr(html, "<td class=\"mono\"><span class=\"fn\">_multiarray_umath+0xde138"
                                 "</span>"));
    assert_non_null(strstr(html, "<b class=\"mono\">_multiarray_umath+0xde138 ← leaky.py:27 "
                                 "backtest</b>"));
    assert_null(strstr(html, "\"label\":\"_PyEval_EvalFrameDefault"));
    free(html);
    /* Without a blamed traceback: the frame alone; a named extension frame
     * by its function. */
    t.tb[0].blamed = 0;
    t.fr[0].function = "array_boolean_subscript";
    assert_string_equal(cli_stack_name(buf, sizeof buf, &t.s), "array_boolean_subscript");
}

/* A stack all in the interpreter (its own allocation, unmarshalling): its
 * frames up to the eval loop stay, the rest folds; it is named by its first
 * named frame, not by the eval loop. */
static void test_interpreter_own_allocation(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t);
    add(&t, PYEXE, 0x501e92, NULL);
    add(&t, PYEXE, 0x4fad1b, "r_object");
    add(&t, PYEXE, 0x58ffa8, "marshal_loads");
    add(&t, PYEXE, 0x50306f, "_PyEval_EvalFrameDefault");
    add(&t, PYEXE, 0x535c91, "_PyFunction_Vectorcall");
    add(&t, PYEXE, 0x55e45b, "PyObject_CallMethodObjArgs");
    t.s.truncated = 1;
    t.s.python_missing = "not-captured";
    char *txt = render(&t, TEXT, 0);
    size_t a = at(txt, "python3.11+0x501e92");
    size_t b = at(txt, "r_object()+0");
    size_t c = at(txt, "marshal_loads()+0");
    size_t fold = at(txt, "    … 3 CPython frames\n");
    size_t cut = at(txt, "    ... (truncated at STACKWATCH_DEPTH)\n");
    assert_true(a < b && b < c && c < fold && fold < cut);
    assert_true(cut < at(txt, "    Python line: none (not-captured)\n"));
    assert_null(strstr(txt, "_PyEval_EvalFrameDefault"));
    free(txt);
    char buf[256];
    assert_string_equal(cli_stack_name(buf, sizeof buf, &t.s), "r_object");
}

/* The interpreter's own allocation, run from the main script: libc's start
 * below it is not what the stack is named by, and HTML names no "caller"
 * of the interpreter's own. */
static void test_interpreter_own_allocation_named(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t);
    add(&t, PYEXE, 0x501e92, "_PyObject_Malloc.lto_priv.0");
    add(&t, PYEXE, 0x4fad1b, "r_object");
    add(&t, PYEXE, 0x50306f, "_PyEval_EvalFrameDefault");
    add(&t, PYEXE, 0x5236bb, "PyEval_EvalCode");
    add(&t, LIBC, 0x2724a, "__libc_start_call_main");
    add(&t, PYEXE, 0x627bd1, "_start");
    char buf[256];
    assert_string_equal(cli_stack_name(buf, sizeof buf, &t.s), "_PyObject_Malloc.lto_priv.0");
    char *html = render(&t, HTML, 0);
    assert_non_null(strstr(html, "\"label\":\"_PyObject_Malloc.lto_priv.0\""));
    assert_null(strstr(html, "from <span class=\"fn\">"));
    free(html);
    /* numpy under the interpreter's inlined allocator: numpy names it. */
    t.fr[1].module = NUMPY;
    t.fr[1].function = "";
    t.fr[1].module_offset = 0xde138;
    assert_string_equal(cli_stack_name(buf, sizeof buf, &t.s), "_multiarray_umath+0xde138");
}

/* Two eval loops on the C stack (Python -> numpy -> Python): which Python
 * frame ran under which is not recorded, so the block says whose they are
 * instead of implying an order; each run of interpreter frames folds. */
static void test_reentry_says_so(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t);
    add(&t, NUMPY, 0xde138, NULL);
    add(&t, LIBPY, 0x1000, "_PyObject_MakeTpCall");
    add(&t, LIBPY, 0x2000, "_PyEval_EvalFrameDefault");
    add(&t, LIBPY, 0x3000, "_PyFunction_Vectorcall");
    add(&t, NUMPY, 0x118330, NULL);
    add(&t, LIBPY, 0x2100, "_PyEval_EvalFrameDefault");
    add(&t, LIBPY, 0x4000, "PyEval_EvalCode");
    add(&t, "/opt/embed/bin/host", 0x1234, "main");
    seed_python(&t);
    char *txt = render(&t, TEXT, 0);
    size_t p0 = at(txt, "leaky.py:27 backtest");
    size_t note = at(txt, "(the Python frames of all 2 entries into the interpreter on this "
                          "stack, innermost first)\n");
    size_t f3 = at(txt, "    … 3 CPython frames\n");
    size_t np2 = at(txt, "+0x118330");
    size_t f2 = at(txt, "    … 2 CPython frames\n");
    size_t host = at(txt, "main()+0");
    assert_true(at(txt, "+0xde138") < p0 && p0 < note && note < f3 && f3 < np2 && np2 < f2 &&
                f2 < host);
    free(txt);
}

/* No interpreter frame on a cut C stack: the Python frames come after the
 * cut, never before C frames they did not call. */
static void test_no_interpreter_frame(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t);
    add(&t, NUMPY, 0xde138, NULL);
    add(&t, NUMPY, 0xde76e, NULL);
    t.s.truncated = 1;
    seed_python(&t);
    char *txt = render(&t, TEXT, 0);
    size_t cut = at(txt, "... (truncated at STACKWATCH_DEPTH)");
    assert_true(at(txt, "+0xde76e") < cut && cut < at(txt, "leaky.py:27 backtest"));
    free(txt);
}

/* JSON keeps every frame as it was, and says where the Python frames go. */
static void test_json_keeps_every_frame(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t);
    seed_frames(&t);
    seed_python(&t);
    char *js = render(&t, JSON, 0);
    assert_non_null(strstr(js, "\"function\": \"_PyEval_EvalFrameDefault\""));
    assert_non_null(strstr(js, "\"function\": \"Py_BytesMain\""));
    assert_int_equal(occurrences(js, "\"interpreter\": true"), 10);
    assert_int_equal(occurrences(js, "\"interpreter\": false"), 5);
    assert_non_null(strstr(js, "\"python_at\": 3"));
    assert_null(strstr(js, "CPython frames"));
    free(js);
}

/* The HTML detail: the same merged stack, the fold as one row; all frames
 * with the flag. */
static void test_html_detail(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t);
    seed_frames(&t);
    seed_python(&t);
    char *html = render(&t, HTML, 0);
    const char *detail = strstr(html, "<table class=\"frames\">");
    assert_non_null(detail);
    size_t np = at(detail, "_multiarray_umath.cpython-311-x86_64-linux-gnu.so+0x1a2352");
    size_t py = at(detail, "<span class=\"fn\">backtest</span>");
    size_t fold = at(detail, "&hellip; 9 CPython frames</td></tr>");
    size_t libc = at(detail, "__libc_start_call_main");
    assert_true(np < py && py < fold && fold < libc);
    assert_null(strstr(detail, "<span class=\"fn\">_PyEval_EvalFrameDefault</span>"));
    assert_non_null(strstr(detail, "Python stack above: 1 capture,"));
    free(html);
    html = render(&t, HTML, CLI_ALL_FRAMES);
    detail = strstr(html, "<table class=\"frames\">");
    assert_non_null(detail);
    assert_null(strstr(detail, "CPython frames"));
    assert_true(at(detail, "<span class=\"fn\">&lt;module&gt;</span>") <
                at(detail, "<span class=\"fn\">_PyEval_EvalFrameDefault</span>"));
    free(html);
}

/* A C program's stack is not touched: no fold, no Python rows. */
static void test_c_program_unchanged(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t);
    t.s.exe = "/usr/bin/app";
    add(&t, "/usr/bin/app", 0x1100, "leak_malloc");
    add(&t, "/usr/bin/app", 0x1200, "python_like_name");
    add(&t, "/usr/bin/app", 0x1300, "main");
    char *txt = render(&t, TEXT, 0);
    assert_true(at(txt, "leak_malloc()+0") < at(txt, "python_like_name()+0"));
    assert_true(at(txt, "python_like_name()+0") < at(txt, "main()+0"));
    assert_null(strstr(txt, "CPython"));
    assert_null(strstr(txt, "[Python]"));
    free(txt);
    char buf[64];
    assert_string_equal(cli_stack_name(buf, sizeof buf, &t.s), "leak_malloc");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_merged_and_folded),
        cmocka_unit_test(test_text_all_frames),
        cmocka_unit_test(test_stack_name),
        cmocka_unit_test(test_interpreter_own_allocation),
        cmocka_unit_test(test_interpreter_own_allocation_named),
        cmocka_unit_test(test_reentry_says_so),
        cmocka_unit_test(test_no_interpreter_frame),
        cmocka_unit_test(test_json_keeps_every_frame),
        cmocka_unit_test(test_html_detail),
        cmocka_unit_test(test_c_program_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
