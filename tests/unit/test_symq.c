/* Unit tests of the symbolization queue with the real symbolizer thread and the driven clock: a report waiting for frames. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "collector/collectord/client.h"
#include "collector/collectord/clock.h"
#include "collector/collectord/report.h"
#include "collector/collectord/state.h"
#include "collector/collectord/sym.h"
#include "collector/collectord/symq.h"

#define SEC 1000000000ull

static void no_wake(void *arg)
{
    (void)arg;
}

static void symbolized(srv_t *s, client_t *c, cstack_t *st)
{
    (void)s;
    (void)c;
    (void)st;
}

/* Takes finished jobs until st is no longer pending (the worker's time is
 * real; the collector clock does not move meanwhile). */
static void wait_done(srv_t *s, cstack_t *st)
{
    for (int i = 0; i < 20000 && st->sym_state == SYM_PENDING; i++) {
        symq_take_done(s, symbolized);
        if (st->sym_state == SYM_PENDING)
            usleep(1000);
    }
    assert_int_not_equal(st->sym_state, SYM_PENDING);
}

/* A stack whose module cannot be opened for now (out of file descriptors)
 * gets degraded frames, which a report asks for again, at most once a
 * second. When the job took longer than that (a busy symbolizer), the
 * report that waited for it must take it, not ask again and wait anew:
 * the second of a second counts from when the frames came in. */
static void test_a_report_takes_degraded_frames_that_came_late(void **state)
{
    (void)state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    s.opts.expire_ns = SEC;
    clock_virtual();
    assert_int_equal(sym_start(no_wake, NULL), 0);
    client_t *c = client_new(&s.clients, 4242, SEC, clock_now());
    assert_non_null(c);
    uint64_t range[2] = { 0x400000, 0x500000 };
    assert_int_equal(client_put_module(c, 1, "/bin/sh", 0, range, 2, NULL, 0, 0, 0), 0);
    uint64_t pcs[2] = { 0x401000, 0x402000 };
    int err = 0;
    cstack_t *st = client_define_stack(c, 0, 1, 0, pcs, 2, 0, &err);
    assert_non_null(st);
    assert_int_equal(client_alloc(c, 0x10000, clock_now(), 64, 0), 0);

    /* No descriptor left: the module cannot be opened for now. */
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int probe = dup(0);
    assert_true(probe >= 0);
    close(probe);
    low = old;
    low.rlim_cur = (rlim_t)probe;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);

    Stackwatch__QueryLeaks q = STACKWATCH__QUERY_LEAKS__INIT;
    q.all = 1;
    Stackwatch__Reply r = STACKWATCH__REPLY__INIT;
    ra_t ra = { 0 };
    assert_int_equal(report_leaks(&s, &q, 0, &ra, &r, NULL), 0); /* waits for the frames */
    ra_free(&ra);
    wait_done(&s, st);
    assert_true(cstack_sym(c, st) && cstack_sym(c, st)->degraded);

    /* A second later the report asks again (the module may open now)... */
    clock_forward(2 * SEC);
    memset(&r, 0, sizeof r);
    stackwatch__reply__init(&r);
    assert_int_equal(report_leaks(&s, &q, 0, &ra, &r, NULL), 0);
    ra_free(&ra);
    /* ... and the symbolizer is slow: 2 s pass before the frames come. */
    clock_forward(2 * SEC);
    wait_done(&s, st);
    assert_true(cstack_sym(c, st) && cstack_sym(c, st)->degraded);
    /* The parked report is retried with them: answered now. */
    memset(&r, 0, sizeof r);
    stackwatch__reply__init(&r);
    assert_int_equal(report_leaks(&s, &q, 0, &ra, &r, NULL), 1);
    ra_free(&ra);

    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    sym_stop();
    s.clients.head = c->next;
    client_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_report_takes_degraded_frames_that_came_late),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
