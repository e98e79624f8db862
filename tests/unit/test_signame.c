/* Unit tests of signal names on the command line: parsing, refusals, printing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "collector/common/signame.h"

static void test_parse_names(void **state)
{
    (void)state;
    assert_int_equal(signame_parse("USR1"), SIGUSR1);
    assert_int_equal(signame_parse("SIGUSR1"), SIGUSR1);
    assert_int_equal(signame_parse("sigusr2"), SIGUSR2);
    assert_int_equal(signame_parse("usr2"), SIGUSR2);
    assert_int_equal(signame_parse("SigTerm"), SIGTERM);
    assert_int_equal(signame_parse("HUP"), SIGHUP);
    assert_int_equal(signame_parse("VTALRM"), SIGVTALRM);
    assert_int_equal(signame_parse("SIGWINCH"), SIGWINCH);
}

static void test_parse_numbers(void **state)
{
    (void)state;
    assert_int_equal(signame_parse("10"), 10);
    assert_int_equal(signame_parse("1"), 1);
    assert_int_equal(signame_parse("12"), 12);
    assert_int_equal(signame_parse("34"), 34); /* real-time signals are numbers only */
    assert_int_equal(signame_parse("64"), 64);
}

/* SIGKILL and SIGSTOP cannot be caught: a firing would end or stop the client. */
static void test_refuses_uncatchable(void **state)
{
    (void)state;
    assert_int_equal(signame_parse("KILL"), -EINVAL);
    assert_int_equal(signame_parse("SIGKILL"), -EINVAL);
    assert_int_equal(signame_parse("kill"), -EINVAL);
    assert_int_equal(signame_parse("9"), -EINVAL);
    assert_int_equal(signame_parse("STOP"), -EINVAL);
    assert_int_equal(signame_parse("SIGSTOP"), -EINVAL);
    assert_int_equal(signame_parse("19"), -EINVAL);
}

static void test_rejects_garbage(void **state)
{
    (void)state;
    assert_int_equal(signame_parse(NULL), -EINVAL);
    assert_int_equal(signame_parse(""), -EINVAL);
    assert_int_equal(signame_parse("0"), -EINVAL);
    assert_int_equal(signame_parse("65"), -EINVAL);
    assert_int_equal(signame_parse("-1"), -EINVAL);
    assert_int_equal(signame_parse("-10"), -EINVAL);
    assert_int_equal(signame_parse("99999999999999999999999"), -EINVAL);
    assert_int_equal(signame_parse("-99999999999999999999999"), -EINVAL);
    assert_int_equal(signame_parse("FOO"), -EINVAL);
    assert_int_equal(signame_parse("SIG"), -EINVAL);
    assert_int_equal(signame_parse("SIGSIGUSR1"), -EINVAL);
    assert_int_equal(signame_parse("USR"), -EINVAL);
    assert_int_equal(signame_parse("USR1X"), -EINVAL);
    assert_int_equal(signame_parse("10x"), -EINVAL);
    assert_int_equal(signame_parse("0x10"), -EINVAL);
    assert_int_equal(signame_parse("USR1 "), -EINVAL);
}

static void test_name_known_and_unknown(void **state)
{
    (void)state;
    char buf[32];
    assert_string_equal(signame_name(SIGUSR1, buf, sizeof buf), "SIGUSR1");
    assert_string_equal(signame_name(SIGTERM, buf, sizeof buf), "SIGTERM");
    assert_string_equal(signame_name(0, buf, sizeof buf), "");
    assert_string_equal(signame_name(40, buf, sizeof buf), "40");
    assert_string_equal(signame_name(64, buf, sizeof buf), "64");
    /* Not in the table: printed as its number. */
    assert_string_equal(signame_name(SIGKILL, buf, sizeof buf), "9");
    /* The result is the caller's buffer, cut to fit. */
    char small[4];
    assert_ptr_equal(signame_name(SIGUSR1, small, sizeof small), small);
    assert_string_equal(small, "SIG");
}

/* Every accepted signal prints as something that parses back to it. */
static void test_round_trip(void **state)
{
    (void)state;
    char buf[32];
    int accepted = 0;
    for (int sig = 1; sig <= 64; sig++) {
        const char *name = signame_name(sig, buf, sizeof buf);
        if (sig == SIGKILL || sig == SIGSTOP) {
            assert_int_equal(signame_parse(name), -EINVAL);
            continue;
        }
        if (signame_parse(name) != sig)
            fail_msg("signal %d prints as '%s', which parses to %d", sig, name,
                     signame_parse(name));
        char num[8];
        snprintf(num, sizeof num, "%d", sig);
        assert_int_equal(signame_parse(num), sig);
        accepted++;
    }
    assert_int_equal(accepted, 62);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_names),
        cmocka_unit_test(test_parse_numbers),
        cmocka_unit_test(test_refuses_uncatchable),
        cmocka_unit_test(test_rejects_garbage),
        cmocka_unit_test(test_name_known_and_unknown),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
