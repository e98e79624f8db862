/* Unit tests of collectord's metrics endpoint: request parsing, label escaping, rendering and its bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/collectord/client.h"
#include "collector/collectord/metrics.h"
#include "collector/collectord/srv.h"
#include "collector/collectord/sym.h"

#define SEC 1000000000ull
#define T0 (100 * SEC)

static int parse(const char *s, metrics_req_t *r)
{
    return metrics_parse_request(s, strlen(s), r);
}

static void test_parse_requests(void **state)
{
    (void)state;
    metrics_req_t r;
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r), 1);
    assert_int_equal(r.method, METRICS_GET);
    assert_int_equal(r.path_ok, 1);
    assert_int_equal(r.openmetrics, 0);
    assert_int_equal(parse("GET /metrics?name[]=x HTTP/1.0\n\n", &r), 1);
    assert_int_equal(r.path_ok, 1);
    assert_int_equal(parse("HEAD /metrics HTTP/1.0\r\n\r\n", &r), 1);
    assert_int_equal(r.method, METRICS_HEAD);
    assert_int_equal(parse("POST /metrics HTTP/1.0\r\n\r\n", &r), 1);
    assert_int_equal(r.method, METRICS_OTHER);
    assert_int_equal(parse("GET /metricsx HTTP/1.0\r\n\r\n", &r), 1);
    assert_int_equal(r.path_ok, 0);
    assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", &r), 1);
    assert_int_equal(r.path_ok, 0);
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\nACCEPT: application/OpenMetrics-text;"
                           "version=1.0.0,text/plain;q=0.5\r\n\r\n", &r), 1);
    assert_int_equal(r.openmetrics, 1);
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\nX-Accept: application/openmetrics-text"
                           "\r\n\r\n", &r), 1);
    assert_int_equal(r.openmetrics, 0);
    /* Incomplete: wait for more. */
    assert_int_equal(parse("", &r), 0);
    assert_int_equal(parse("GET /met", &r), 0);
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\n", &r), 0);
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n", &r), 0);
    /* Malformed. */
    assert_int_equal(parse("garbage\r\n", &r), -1);
    assert_int_equal(parse("garbage\r\n\r\n", &r), -1);
    assert_int_equal(parse("GET  HTTP/1.0\r\n\r\n", &r), -1);
    assert_int_equal(parse(" /metrics HTTP/1.0\r\n\r\n", &r), -1);
    assert_int_equal(parse("GET /metrics FTP/1.0\r\n\r\n", &r), -1);
    assert_int_equal(parse("\r\n\r\n", &r), -1);
    /* No NUL needed: only len bytes are read. */
    char buf[] = { 'G', 'E', 'T', ' ', '/', 'm', 'e', 't', 'r', 'i', 'c', 's', ' ', 'H', 'T',
                   'T', 'P', '/', '1', '.', '0', '\n', '\n', 'X' };
    assert_int_equal(metrics_parse_request(buf, sizeof buf - 1, &r), 1);
    assert_int_equal(r.path_ok, 1);
}

static const char *label(const char *v)
{
    static mbuf_t b;
    mbuf_free(&b);
    metrics_label(&b, v);
    return b.p ? b.p : "";
}

static void test_label_escaping(void **state)
{
    (void)state;
    assert_string_equal(label("plain"), "plain");
    assert_string_equal(label(""), "");
    assert_string_equal(label(NULL), "");
    assert_string_equal(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    assert_string_equal(label("caf\xc3\xa9"), "caf\xc3\xa9");      /* valid UTF-8 kept */
    assert_string_equal(label("bad\xff\xc3(x"), "bad?" "?(x");          /* invalid bytes: ? */
    assert_string_equal(label("\xed\xa0\x80"), "???");              /* a surrogate */
    assert_string_equal(label("\xc0\xaf"), "??");                   /* overlong */
    char longv[400];
    memset(longv, 'x', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    const char *l = label(longv);
    assert_int_equal(strlen(l), METRICS_LABEL_MAX);
    assert_string_equal(l + METRICS_LABEL_MAX - 3, "...");
    label(NULL);
}

/* ------------------------------------------------------------------ rendering */

/* A collector with one connected client: stack 1 leaks 10 blocks of 100
 * bytes (symbolized), stack 2 frees what it allocates, stack 3 holds one
 * expired block (not symbolized). */
static srv_t *fixture(void)
{
    srv_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    client_t *c = client_new(&s->clients, 4242, SEC, T0);
    assert_non_null(c);
    char *argv[] = { (char *)"app" };
    assert_int_equal(client_set_identity(c, 4242, 1, "/opt/my \"app\"", argv, 1, 7, 0, 1, 32,
                                         "all"), 0);
    c->state = CLIENT_CONNECTED;
    uint64_t pcs1[] = { 0x1000, 0x2000 }, pcs2[] = { 0x3000 }, pcs3[] = { 0x4000 };
    int err;
    assert_non_null(client_define_stack(c, 1, 0x1111, 0, pcs1, 2, 0, &err));
    assert_non_null(client_define_stack(c, 2, 0x2222, 0, pcs2, 1, 0, &err));
    assert_non_null(client_define_stack(c, 3, 0x3333, 0, pcs3, 1, 0, &err));
    for (uint64_t i = 0; i < 10; i++)
        assert_int_equal(client_alloc(c, 0x10000 + i * 0x100, T0 + i, 100, 1), 0);
    for (uint64_t i = 0; i < 5; i++) {
        assert_int_equal(client_alloc(c, 0x90000 + i * 0x100, T0 + 20 + i, 50, 2), 0);
        assert_int_equal(client_free(c, 0x90000 + i * 0x100, T0 + 30 + i), 0);
    }
    assert_int_equal(client_alloc(c, 0xa0000, T0 + 50, 7, 3), 0);
    client_age(c, T0 + 5 * SEC);
    client_classify(c, T0 + 5 * SEC);
    cstack_t *st = cstack_at(c, 1);
    symres_t *sr = calloc(1, sizeof *sr + 2 * sizeof(symframe_t));
    assert_non_null(sr);
    sr->n = 2;
    sr->f[0].addr = 0x1000;
    sr->f[0].function = "leak_here";
    sr->f[0].file = "/src/app.c";
    sr->f[0].line = 42;
    sr->f[1].addr = 0x2000;
    sr->f[1].function = "main";
    st->sym = sr;
    st->sym_state = SYM_DONE;
    s->events_total = 21;
    return s;
}

static void fixture_free(srv_t *s)
{
    while (s->clients.head) {
        client_t *c = s->clients.head;
        s->clients.head = c->next;
        client_destroy(c);
    }
    free(s);
}

static int count_lines(const char *text, const char *prefix)
{
    int n = 0;
    for (const char *p = text; p && *p;) {
        if (!strncmp(p, prefix, strlen(prefix)))
            n++;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return n;
}

static void test_render(void **state)
{
    (void)state;
    srv_t *s = fixture();
    metrics_t m = { .fd = -1, .top = 10, .max_clients = 64 };
    mbuf_t b = { 0 };
    metrics_render(s, &m, 0, &b);
    assert_int_equal(b.oom, 0);
    const char *t = b.p;
    assert_non_null(strstr(t, "# TYPE stackwatch_client_events_total counter\n"));
    assert_non_null(strstr(t, "stackwatch_client_live_bytes{pid=\"4242\",exe=\"/opt/my "
                              "\\\"app\\\"\"} 1007\n"));
    assert_non_null(strstr(t, "stackwatch_client_events_total{pid=\"4242\",exe=\"/opt/my "
                              "\\\"app\\\"\"} 21\n"));
    assert_non_null(strstr(t, "stackwatch_stack_may_leak_bytes{pid=\"4242\",exe=\"/opt/my "
                              "\\\"app\\\"\",stack=\"0000000000001111\",frame=\"leak_here\","
                              "location=\"app.c:42\",class=\""));
    assert_non_null(strstr(t, "stackwatch_stack_may_leak_blocks{pid=\"4242\",exe=\"/opt/my "
                              "\\\"app\\\"\",stack=\"0000000000001111\""));
    /* The unsymbolized stack says so; the freed one is not exported. */
    assert_non_null(strstr(t, "stack=\"0000000000003333\",frame=\"unsymbolized\",location=\"\""));
    assert_null(strstr(t, "0000000000002222"));
    assert_int_equal(count_lines(t, "stackwatch_stack_may_leak_bytes{"), 2);
    assert_non_null(strstr(t, "stackwatch_collector_events_total 21\n"));
    assert_non_null(strstr(t, "stackwatch_collector_clients{state=\"connected\"} 1\n"));
    assert_non_null(strstr(t, "stackwatch_client_unexported_stacks{pid=\"4242\",exe=\"/opt/my "
                              "\\\"app\\\"\"} 0\n"));
    assert_null(strstr(t, "# EOF"));
    /* Each may-leak figure: 10 blocks of 100 bytes, 1 of 7. */
    const char *l1 = strstr(t, "stackwatch_stack_may_leak_bytes{pid=\"4242\"");
    assert_non_null(l1);
    assert_int_equal(strncmp(strchr(l1, '}'), "} 1000\n", 7), 0);
    const char *l3 = strstr(l1 + 1, "stackwatch_stack_may_leak_bytes{pid=\"4242\"");
    assert_non_null(l3);
    assert_non_null(strstr(l3, "0000000000003333"));
    assert_int_equal(strncmp(strchr(l3, '}'), "} 7\n", 4), 0);
    mbuf_free(&b);

    /* OpenMetrics: counters named without _total, samples with it, # EOF. */
    metrics_render(s, &m, 1, &b);
    assert_non_null(strstr(b.p, "# TYPE stackwatch_client_events counter\n"));
    assert_non_null(strstr(b.p, "stackwatch_client_events_total{pid=\"4242\""));
    assert_int_equal(strcmp(b.p + b.len - 6, "# EOF\n"), 0);
    mbuf_free(&b);

    /* Bounds: --metrics-top 1 keeps the best-ranked stack and counts the other. */
    m.top = 1;
    metrics_render(s, &m, 0, &b);
    assert_int_equal(count_lines(b.p, "stackwatch_stack_may_leak_bytes{"), 1);
    assert_non_null(strstr(b.p, "stackwatch_stack_may_leak_bytes{pid=\"4242\",exe=\"/opt/my "
                                "\\\"app\\\"\",stack=\"0000000000001111\""));
    assert_non_null(strstr(b.p, "stackwatch_client_unexported_stacks{pid=\"4242\",exe=\"/opt/my "
                                "\\\"app\\\"\"} 1\n"));
    mbuf_free(&b);
    /* --metrics-clients 0: no process series, and the count says why. */
    m.top = 10;
    m.max_clients = 0;
    metrics_render(s, &m, 0, &b);
    assert_int_equal(count_lines(b.p, "stackwatch_client_live_bytes{"), 0);
    assert_int_equal(count_lines(b.p, "stackwatch_stack_"), 0);
    assert_non_null(strstr(b.p, "stackwatch_collector_unexported_clients 1\n"));
    mbuf_free(&b);
    /* An ended process is not exported. */
    m.max_clients = 64;
    s->clients.head->state = CLIENT_EXITED;
    metrics_render(s, &m, 0, &b);
    assert_int_equal(count_lines(b.p, "stackwatch_client_live_bytes{"), 0);
    assert_non_null(strstr(b.p, "stackwatch_collector_clients{state=\"exited\"} 1\n"));
    mbuf_free(&b);
    fixture_free(s);
}

#define NUMPY "/usr/lib/python3/dist-packages/numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so"
#define NP_BIAS 0x7f0000000000ull

/* A Python process's leak in numpy (stripped) under the interpreter: the
 * stack's frame label is numpy's module+offset and the blamed Python line,
 * never the eval loop; before symbolization too. */
static void test_python_stack_name(void **state)
{
    (void)state;
    srv_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    client_t *c = client_new(&s->clients, 4243, SEC, T0);
    assert_non_null(c);
    char *argv[] = { (char *)"python3" };
    assert_int_equal(client_set_identity(c, 4243, 1, "/usr/bin/python3.11", argv, 1, 7, 0, 1, 32,
                                         "all"), 0);
    c->state = CLIENT_CONNECTED;
    uint64_t np_r[] = { NP_BIAS, NP_BIAS + 0x400000 }, py_r[] = { 0x400000, 0x800000 };
    assert_int_equal(client_put_module(c, 1, "/usr/bin/python3.11", 0, py_r, 2, NULL, 0, 0, 0), 0);
    assert_int_equal(client_put_module(c, 2, NUMPY, NP_BIAS, np_r, 2, NULL, 0, 0, 0), 0);
    /* numpy, the eval loop, _start; not symbolized yet: by modules. */
    uint64_t pcs[] = { NP_BIAS + 0xde138, 0x52c441, 0x627bd1 };
    int err;
    assert_non_null(client_define_stack(c, 1, 0x5151, 0, pcs, 3, 0, &err));
    for (uint64_t i = 0; i < 4; i++)
        assert_int_equal(client_alloc(c, 0x10000 + i * 0x100, T0 + i, 53336, 1), 0);
    pyframe_t fr[2];
    memset(fr, 0, sizeof fr);
    fr[0].file = sym_intern("/srv/app/leaky.py");
    fr[0].function = sym_intern("backtest");
    fr[0].line = 27;
    fr[1].file = sym_intern("/srv/app/leaky.py");
    fr[1].function = sym_intern("<module>");
    fr[1].line = 50;
    assert_non_null(client_note(c, 0x10000, T0, 1, fr, 2, 0, NULL, 0));
    client_age(c, T0 + 5 * SEC);
    client_classify(c, T0 + 5 * SEC);
    metrics_t m = { .fd = -1, .top = 10, .max_clients = 64 };
    mbuf_t b = { 0 };
    metrics_render(s, &m, 0, &b);
    assert_non_null(strstr(b.p, "stack=\"0000000000005151\",frame=\"_multiarray_umath+0xde138 "
                                "\xe2\x86\x90 leaky.py:27 backtest\",location=\"\""));
    mbuf_free(&b);
    /* Symbolized (an allocator of the interpreter's inlined at the
     * innermost, not a listed wrapper): CPython's frames are skipped. */
    cstack_t *st = cstack_at(c, 1);
    symres_t *sr = calloc(1, sizeof *sr + 4 * sizeof(symframe_t));
    assert_non_null(sr);
    sr->n = 4;
    const char *mods[4] = { "/usr/bin/python3.11", NUMPY, "/usr/bin/python3.11",
                            "/usr/bin/python3.11" };
    const char *fns[4] = { "_PyObject_Malloc.lto_priv.0", NULL, "_PyEval_EvalFrameDefault",
                           "_start" };
    const uint64_t addrs[4] = { 0x501e92, NP_BIAS + 0xde138, 0x52c441, 0x627bd1 };
    for (int i = 0; i < 4; i++) {
        sr->f[i].addr = addrs[i];
        sr->f[i].module = mods[i];
        sr->f[i].function = fns[i];
    }
    st->sym = sr;
    st->sym_state = SYM_DONE;
    metrics_render(s, &m, 0, &b);
    assert_non_null(strstr(b.p, "frame=\"_multiarray_umath+0xde138 \xe2\x86\x90 leaky.py:27 "
                                "backtest\""));
    assert_null(strstr(b.p, "_PyEval_EvalFrameDefault"));
    assert_null(strstr(b.p, "_PyObject_Malloc"));
    mbuf_free(&b);
    while (s->clients.head) {
        client_t *x = s->clients.head;
        s->clients.head = x->next;
        client_destroy(x);
    }
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_requests),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_python_stack_name),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
