/* Unit tests of the HTML report: escaping, the embedded data, series, empty reports. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/stackctl/html.h"

/* ------------------------------------------------------------------ building reports */

/* A stack report with its parts in static storage of the test (nothing freed). */
typedef struct tstack_s {
    Stackwatch__StackReport s;
    Stackwatch__Count ml, live, alloc;          /* may-leak, live, alloc */
    Stackwatch__Frame fr[4];                    /* frames, innermost first */
    Stackwatch__Frame *frp[4];
    Stackwatch__Sample pt[3];                   /* series */
    Stackwatch__Sample *ptp[3];
} tstack_t;

static void tstack_init(tstack_t *t, uint64_t id, const char *fn0, const char *fn1)
{
    memset(t, 0, sizeof *t);
    stackwatch__stack_report__init(&t->s);
    stackwatch__count__init(&t->ml);
    stackwatch__count__init(&t->live);
    stackwatch__count__init(&t->alloc);
    t->s.id = id;
    t->s.pid = 4242;
    t->s.exe = "/usr/bin/app";
    t->s.class_ = "";
    t->ml.count = 33963;
    t->ml.bytes = 1536;
    t->live.count = 2;
    t->live.bytes = 3 * 1024 * 1024;
    t->s.may_leak = &t->ml;
    t->s.live = &t->live;
    t->s.alloc = &t->alloc;
    const char *names[4] = {fn0, fn1, "main", ""};
    for (int i = 0; i < 4; i++) {
        stackwatch__frame__init(&t->fr[i]);
        t->fr[i].addr = 0x401000 + (uint64_t)i;
        t->fr[i].module = "/usr/bin/app";
        t->fr[i].module_offset = 0x1000 + (uint64_t)i;
        t->fr[i].function = (char *)names[i];
        t->fr[i].file = i < 3 ? "src/app.c" : "";
        t->fr[i].line = 10 + (uint32_t)i;
        t->frp[i] = &t->fr[i];
    }
    t->s.frames = t->frp;
    t->s.n_frames = 4;
}

static void tstack_series(tstack_t *t)
{
    for (int i = 0; i < 3; i++) {
        stackwatch__sample__init(&t->pt[i]);
        t->pt[i].t_ms = 1700000000000ull + 1000u * (uint64_t)i;
        t->pt[i].live_bytes = 1024u * (uint64_t)(i + 1);
        t->pt[i].may_leak_bytes = 512u * (uint64_t)i;
        t->ptp[i] = &t->pt[i];
    }
    t->s.series = t->ptp;
    t->s.n_series = 3;
}

static void report_init(Stackwatch__LeakReport *r, Stackwatch__StackReport **stacks, size_t n)
{
    stackwatch__leak_report__init(r);
    r->stacks = stacks;
    r->n_stacks = n;
    r->expire_ms = 500;
    r->now_ms = 1700000002000ull;
    r->sample = "all";
}

/* Renders r; the caller frees the text. */
static char *render(const Stackwatch__LeakReport *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(cli_report_html(f, r, 0), 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(strlen(buf), len);
    return buf;
}

static size_t occurrences(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* The embedded JSON, copied; the caller frees it. */
static char *data_block(const char *html)
{
    const char *open = "<script type=\"application/json\" id=\"sw-data\">";
    const char *b = strstr(html, open);
    assert_non_null(b);
    b += strlen(open);
    const char *e = strstr(b, "</script>");
    assert_non_null(e);
    return strndup(b, (size_t)(e - b));
}

/* ------------------------------------------------------------------ tests */

static void test_strings_escaped(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t, 0x1234, "operator<<(std::ostream&, a<b>)", "</script><script>alert(1)//");
    t.s.exe = "/opt/x<y>/app&co";
    Stackwatch__PyFrame pf = STACKWATCH__PY_FRAME__INIT;
    pf.file = "<stdin>";
    pf.function = "<module>";
    pf.line = 3;
    Stackwatch__PyFrame *pfp = &pf;
    Stackwatch__PyTraceback tb = STACKWATCH__PY_TRACEBACK__INIT;
    tb.frames = &pfp;
    tb.n_frames = 1;
    tb.blamed = 1;
    tb.text = "a\"b'c";
    Stackwatch__PyTraceback *tbp = &tb;
    t.s.python = &tbp;
    t.s.n_python = 1;
    Stackwatch__StackReport *sp = &t.s;
    Stackwatch__LeakReport r;
    report_init(&r, &sp, 1);
    char *html = render(&r);

    assert_non_null(strstr(html, "operator&lt;&lt;(std::ostream&amp;, a&lt;b&gt;)"));
    assert_non_null(strstr(html, "&lt;/script&gt;&lt;script&gt;alert(1)//"));
    assert_non_null(strstr(html, "x&lt;y&gt;/app&amp;co"));
    assert_non_null(strstr(html, "&lt;stdin&gt;:3"));
    assert_non_null(strstr(html, "in &lt;module&gt;"));
    assert_non_null(strstr(html, "a&quot;b&#39;c"));
    /* No raw copy anywhere: the data block escapes < > & too. */
    assert_null(strstr(html, "a<b>"));
    assert_null(strstr(html, "<y>"));
    assert_null(strstr(html, "<module>"));
    assert_int_equal(occurrences(html, "<script"), 2);
    assert_int_equal(occurrences(html, "</script>"), 2);
    char *data = data_block(html);
    assert_null(strchr(data, '<'));
    assert_null(strchr(data, '>'));
    assert_null(strchr(data, '&'));
    assert_non_null(
        strstr(data, "\"n\":\"operator\\u003c\\u003c(std::ostream\\u0026, a\\u003cb\\u003e)\""));
    assert_non_null(strstr(data, "\\u003c/script\\u003e"));
    free(data);
    free(html);
}

/* A traced program chooses its names: escape sequences (ESC, BEL), line
 * breaks, DEL and C1 controls in a function, an executable or a Python
 * file never reach the page raw, neither as text nor in the data block. */
static void test_control_characters_escaped(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t, 0x1234, "evil\033[31m\ared", "two\nlines\177");
    t.s.exe = "/tmp/\033]0;title\a/app\xc2\x9b";
    Stackwatch__PyFrame pf = STACKWATCH__PY_FRAME__INIT;
    pf.file = "x\033.py";
    pf.function = "f\r";
    pf.line = 3;
    Stackwatch__PyFrame *pfp = &pf;
    Stackwatch__PyTraceback tb = STACKWATCH__PY_TRACEBACK__INIT;
    tb.frames = &pfp;
    tb.n_frames = 1;
    tb.blamed = 1;
    Stackwatch__PyTraceback *tbp = &tb;
    t.s.python = &tbp;
    t.s.n_python = 1;
    Stackwatch__ClientInfo c = STACKWATCH__CLIENT_INFO__INIT;
    c.pid = 4242;
    c.exe = t.s.exe;
    c.state = "exited\a";
    char *argv[] = { "app", "--x=\033[2J" };
    c.argv = argv;
    c.n_argv = 2;
    Stackwatch__ClientInfo *cp = &c;
    Stackwatch__StackReport *sp = &t.s;
    Stackwatch__LeakReport r;
    report_init(&r, &sp, 1);
    r.clients = &cp;
    r.n_clients = 1;
    char *html = render(&r);

    for (const unsigned char *p = (const unsigned char *)html; *p; p++) {
        if ((*p < 0x20 && *p != '\n') || *p == 0x7f)
            fail_msg("raw control character 0x%02x at byte %zu", *p, (size_t)(p - (const unsigned char *)html));
        if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
            fail_msg("raw C1 control at byte %zu", (size_t)(p - (const unsigned char *)html));
    }
    /* Shown as their pictures: ESC U+241B, BEL U+2407, LF U+240A, DEL U+2421. */
    assert_non_null(strstr(html, "evil&#x241B;[31m&#x2407;red"));
    assert_non_null(strstr(html, "two&#x240A;lines&#x2421;"));
    assert_non_null(strstr(html, "app&#xFFFD;"));
    assert_non_null(strstr(html, "x&#x241B;.py"));
    char *data = data_block(html);
    assert_non_null(strstr(data, "evil\\u001b[31m\\u0007red"));
    assert_non_null(strstr(data, "lines\\u007f"));
    assert_non_null(strstr(data, "app\\u009b"));
    free(data);
    free(html);
}

static void test_series_and_table(void **state)
{
    (void)state;
    tstack_t a, b;
    tstack_init(&a, 0xabc, "", "remember_session"); /* no name in the innermost frame */
    a.fr[0].module = "/lib/x86_64-linux-gnu/libc.so.6";
    a.fr[0].function = "__strndup";
    a.s.class_ = "leak";
    a.s.confidence = 0.87;
    a.s.growth_bytes_per_min = 1536;
    a.s.rank = 99;
    tstack_series(&a);
    tstack_init(&b, 0xdef, "", "");
    b.fr[0].module_offset = 0x1a2b;
    b.s.n_frames = 1;
    Stackwatch__StackReport *sp[2] = {&a.s, &b.s};
    Stackwatch__ClientInfo c = STACKWATCH__CLIENT_INFO__INIT;
    Stackwatch__Sample cs = STACKWATCH__SAMPLE__INIT, *csp = &cs;
    cs.t_ms = 1700000000500ull;
    cs.live_bytes = 777;
    cs.live_count = 7;
    cs.rss_bytes = 9000; /* the memory account rides along: RSS, malloc's memory */
    cs.heap_bytes = 8000;
    c.pid = 4242;
    c.exe = "/usr/bin/app";
    c.state = "connected";
    c.series = &csp;
    c.n_series = 1;
    Stackwatch__ClientInfo *cp = &c;
    Stackwatch__LeakReport r;
    report_init(&r, sp, 2);
    r.clients = &cp;
    r.n_clients = 1;
    char *html = render(&r);

    assert_null(strstr(html, "No samples yet"));
    char *data = data_block(html);
    assert_non_null(strstr(data, "\"series\":[[1700000000000,1024,0],[1700000001000,2048,512],"
                                 "[1700000002000,3072,1024]]"));
    assert_non_null(strstr(data, "\"series\":[[1700000000500,777,7,9000,8000]]"));
    assert_non_null(strstr(data, "\"id\":\"0000000000000abc\""));
    assert_non_null(strstr(data, "\"label\":\"__strndup\""));
    assert_non_null(strstr(data, "\"label\":\"app+0x1a2b\""));
    free(data);
    /* Ranked rows: ids as 16 hex digits, class badge, swatch only for a charted stack. */
    assert_non_null(strstr(html, ">0000000000000abc<"));
    assert_non_null(strstr(html, ">0000000000000def<"));
    assert_non_null(strstr(html, "<span class=\"badge c-leak\">leak</span>"));
    assert_non_null(strstr(html, ">87%<"));
    assert_non_null(strstr(html, "<b>1</b><span>stacks classified leak or growing"));
    assert_non_null(strstr(html, ">+1.5 KiB<"));
    assert_int_equal(occurrences(html, "class=\"sw\""), 1);
    assert_non_null(strstr(html, "<span class=\"badge c-none\">unclassified</span>"));
    /* Counts and bytes in human units, exact in the title. */
    assert_non_null(strstr(html, "1.5 KiB<span class=\"small muted\">33,963 blocks</span>"));
    assert_non_null(strstr(html, "title=\"3145728 bytes in 2 blocks\">3 MiB"));
    /* Top function in libc: the program's caller is named too; unnamed: module+offset. */
    assert_non_null(strstr(html, "<span class=\"fn\">__strndup</span>"));
    assert_non_null(strstr(html, "from <span class=\"fn\">remember_session</span>"));
    assert_non_null(strstr(html, "<span class=\"fn\">app+0x1a2b</span>"));
    /* Frames in the detail row; no Python column without Python stacks. */
    assert_non_null(strstr(html, "<span class=\"fn\">remember_session</span>+0"));
    assert_non_null(strstr(html, "title=\"src/app.c:11\">app.c:11</span>"));
    assert_null(strstr(html, "Python line"));
    assert_non_null(strstr(html, "id=\"s0000000000000abc-4242\""));
    free(html);
}

static void test_no_samples_yet(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t, 0xdeadbeef, "leak_malloc", "main");
    Stackwatch__StackReport *sp = &t.s;
    Stackwatch__LeakReport r;
    report_init(&r, &sp, 1);
    char *html = render(&r);
    assert_non_null(strstr(html, "No samples yet"));
    assert_non_null(strstr(html, "stacks not classified yet"));
    assert_non_null(strstr(html, ">00000000deadbeef<"));
    assert_non_null(strstr(html, "<span class=\"fn\">leak_malloc</span>"));
    assert_int_equal(occurrences(html, "class=\"sw\""), 0);
    char *data = data_block(html);
    assert_non_null(strstr(data, "\"series\":[]"));
    free(data);
    free(html);
}

static void test_empty_report(void **state)
{
    (void)state;
    Stackwatch__LeakReport r;
    report_init(&r, NULL, 0);
    char *html = render(&r);
    assert_true(strncmp(html, "<!DOCTYPE html>", 15) == 0);
    assert_non_null(strstr(html, "No leaks: no block has stayed allocated longer than the "
                                 "expire time (0.5 s)"));
    assert_non_null(strstr(html, "Nothing to draw"));
    assert_non_null(strstr(html, "No samples yet"));
    assert_null(strstr(html, "http://"));
    assert_null(strstr(html, "https://"));
    size_t n = strlen(html);
    assert_true(n > 8 && strcmp(html + n - 8, "</html>\n") == 0);
    free(html);
}

static void test_python_line(void **state)
{
    (void)state;
    tstack_t t;
    tstack_init(&t, 0x77, "", "");
    Stackwatch__PyFrame f0 = STACKWATCH__PY_FRAME__INIT, f1 = STACKWATCH__PY_FRAME__INIT;
    f0.file = "/work/tests/py/mask_leak.py";
    f0.function = "leaky";
    f0.line = 18;
    f1.file = "/work/tests/py/mask_leak.py";
    f1.function = "main";
    f1.line = 49;
    Stackwatch__PyFrame *fp[2] = {&f0, &f1};
    Stackwatch__PyTraceback freed = STACKWATCH__PY_TRACEBACK__INIT;
    Stackwatch__PyTraceback blamed = STACKWATCH__PY_TRACEBACK__INIT;
    freed.frames = fp + 1;
    freed.n_frames = 1;
    freed.freed = 31;
    blamed.frames = fp;
    blamed.n_frames = 2;
    blamed.blamed = 1;
    /* Live but young: not blamed yet, and not called freed. */
    Stackwatch__PyTraceback young = STACKWATCH__PY_TRACEBACK__INIT;
    Stackwatch__Count young_live = STACKWATCH__COUNT__INIT;
    young_live.count = 3;
    young.live = &young_live;
    young.frames = fp;
    young.n_frames = 1;
    Stackwatch__PyTraceback *tbs[3] = {&freed, &blamed, &young};
    t.s.python = tbs;
    t.s.n_python = 3;
    Stackwatch__StackReport *sp = &t.s;
    Stackwatch__LeakReport r;
    report_init(&r, &sp, 1);
    char *html = render(&r);
    assert_non_null(strstr(html, "<th>Python line</th>"));
    assert_non_null(strstr(html, "title=\"/work/tests/py/mask_leak.py:18 in leaky\">"
                                 "mask_leak.py:18 <span class=\"fn\">leaky</span>"));
    assert_non_null(strstr(html, "blamed: its blocks stay live"));
    assert_non_null(strstr(html, "not blamed: its blocks are freed"));
    assert_non_null(strstr(html, "not blamed yet: its live blocks are younger than the expire time"));
    /* The blamed traceback is merged into the frames (no interpreter frame
     * here: after them); the others are listed with their fate. */
    assert_non_null(strstr(html, "<tr class=\"pyf\"><td></td><td class=\"mono muted\">[Python]</td>"
                                 "<td class=\"mono\"><span class=\"fn\">leaky</span>"));
    assert_non_null(strstr(html, "Python stack above: 0 captures,"));
    assert_non_null(strstr(html, "<pre>/work/tests/py/mask_leak.py:49 main\n"));
    assert_non_null(strstr(html, "colspan=\"11\""));
    free(html);
}

static void test_write_error(void **state)
{
    (void)state;
    FILE *f = fopen("/dev/null", "r");
    assert_non_null(f);
    Stackwatch__LeakReport r;
    report_init(&r, NULL, 0);
    assert_int_equal(cli_report_html(f, &r, 0), -EIO);
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings_escaped),
        cmocka_unit_test(test_control_characters_escaped),
        cmocka_unit_test(test_series_and_table),
        cmocka_unit_test(test_no_samples_yet),
        cmocka_unit_test(test_empty_report),
        cmocka_unit_test(test_python_line),
        cmocka_unit_test(test_write_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
