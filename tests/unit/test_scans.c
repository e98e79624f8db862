/* Unit tests of the scans' steps on the loop (scans.c), with a scan job whose worker's stages the test sets. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/collectord/client.h"
#include "collector/collectord/scan.h"
#include "collector/collectord/scans.h"
#include "collector/collectord/state.h"

#define SEC 1000000000ull

/* A job no thread runs: the test plays the worker by setting its stage
 * (as set_stage does) and calling scans_progress (the loop's wake-up). */
static scan_job_t *fake_job(void)
{
    scan_job_t *j = calloc(1, sizeof *j);
    assert_non_null(j);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    atomic_store(&j->stage, SCAN_RUNNING);
    return j;
}

/* Yama lets only an ancestor trace the process: the worker asks for the
 * agent's PR_SET_PTRACER (SCAN_NEED_TRACER), the agent allows it (phase 1),
 * the worker stops the process (SCAN_FROZEN). A wake-up of the loop that
 * is not this job's (another process's scan moved on) may come between the
 * agent's answer and the worker's next stage: it must not ask the agent
 * again, or the scan waits in SCAN_ST_BEGIN when the worker says FROZEN
 * and is given up at its deadline ("the agent did not answer"). */
static void test_a_wake_up_between_the_agents_answer_and_the_freeze(void **state)
{
    (void)state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    client_t *c = client_new(&s.clients, 4242, SEC, 100 * SEC);
    assert_non_null(c);
    c->state = CLIENT_CONNECTED; /* no connection: commands are not sent */
    c->scan = fake_job();
    c->scan_state = SCAN_ST_FREEZE;
    c->scan_token = 77;

    atomic_store(&c->scan->stage, SCAN_NEED_TRACER);
    scans_progress(&s);
    assert_int_equal(c->scan_state, SCAN_ST_BEGIN);
    assert_true(c->scan_allowed);

    Stackwatch__ScanReply r = STACKWATCH__SCAN_REPLY__INIT;
    r.token = 77;
    r.phase = 1;
    scans_reply(&s, c, &r);
    assert_int_equal(c->scan_state, SCAN_ST_FREEZE);
    assert_true(c->scan->retry);

    scans_progress(&s); /* another scan's wake-up: the stage is still NEED_TRACER */
    assert_int_equal(c->scan_state, SCAN_ST_FREEZE);

    atomic_store(&c->scan->stage, SCAN_FROZEN);
    scans_progress(&s);
    assert_int_equal(c->scan_state, SCAN_ST_SYNC);

    pthread_mutex_destroy(&c->scan->mu);
    pthread_cond_destroy(&c->scan->cv);
    free(c->scan);
    c->scan = NULL;
    s.clients.head = c->next;
    client_destroy(c);
}

/* The agent's ask for a scan at its end: one per process. A second ask is
 * answered at once and starts nothing; an ask that comes while a scan runs
 * is answered when that scan ends; one that cannot start is answered at
 * once, its reason kept as the scan's. */
static void test_the_agents_ask(void **state)
{
    (void)state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    client_t *c = client_new(&s.clients, 4243, SEC, 100 * SEC);
    assert_non_null(c);
    c->state = CLIENT_CONNECTED;
    Stackwatch__ScanAsk a = STACKWATCH__SCAN_ASK__INIT;
    a.token = 5;

    /* A scan runs: the ask waits for its end. */
    c->scan = fake_job();
    c->scan_state = SCAN_ST_FREEZE;
    c->scan_token = 78;
    c->flusher_tid = 1;
    scans_ask(&s, c, &a);
    assert_true(c->scan_asked);
    assert_int_equal(c->scan_ask, 5);
    atomic_store(&c->scan->stage, SCAN_FAILED);
    scans_progress(&s); /* the scan ends (failed): the ask is answered */
    assert_int_equal(c->scan_state, SCAN_ST_NONE);
    assert_null(c->scan);
    assert_int_equal(c->scan_ask, 0);
    uint64_t seq = c->scan_seq;

    /* Asked again: answered, nothing started. */
    a.token = 6;
    scans_ask(&s, c, &a);
    assert_int_equal(c->scan_ask, 0);
    assert_int_equal(c->scan_state, SCAN_ST_NONE);
    assert_int_equal(c->scan_seq, seq);

    /* Another process whose agent cannot be scanned (not connected). */
    client_t *d = client_new(&s.clients, 4244, SEC, 100 * SEC);
    assert_non_null(d);
    d->state = CLIENT_CONNECTED;
    a.token = 7;
    scans_ask(&s, d, &a);
    assert_true(d->scan_asked);
    assert_int_equal(d->scan_ask, 0);
    assert_int_equal(d->scan_state, SCAN_ST_NONE);
    assert_int_equal(d->scan_err, -ENOTCONN);
    assert_non_null(strstr(d->scan_msg, "not connected"));

    s.clients.head = d->next;
    client_destroy(d);
    s.clients.head = c->next;
    client_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_wake_up_between_the_agents_answer_and_the_freeze),
        cmocka_unit_test(test_the_agents_ask),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
