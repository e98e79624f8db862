/* Unit tests of the agent's malloc-free formatter and its log destination. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/log.h"

/* Formats with log_fmt and with snprintf; they must agree. */
#define SAME(fmt, ...)                                                  \
    do {                                                                \
        char got_[256], want_[256];                                     \
        size_t n_ = log_fmt(got_, sizeof got_, fmt, __VA_ARGS__);       \
        int w_ = snprintf(want_, sizeof want_, fmt, __VA_ARGS__);       \
        assert_string_equal(got_, want_);                               \
        assert_int_equal(n_, (size_t)w_);                               \
    } while (0)

static void test_conversions(void **state)
{
    (void)state;
    SAME("%s", "hello");
    SAME("a%sb", "");
    SAME("%d", 0);
    SAME("%d %d", 42, -42);
    SAME("%d %d", INT_MAX, INT_MIN);
    SAME("%u %u", 0u, UINT_MAX);
    SAME("%ld %ld", LONG_MAX, LONG_MIN);
    SAME("%lu", ULONG_MAX);
    SAME("%lld %lld", (long long)INT64_MAX, (long long)INT64_MIN);
    SAME("%lld", -1LL);
    SAME("%llu", (unsigned long long)UINT64_MAX);
    SAME("%zu %zu", (size_t)0, SIZE_MAX);
    SAME("%x %x", 0u, 0xdeadbeefu);
    SAME("%lx", 0x123456789abcdefUL);
    SAME("%llx", (unsigned long long)UINT64_MAX);
    SAME("%c%c", 'o', 'k');
    SAME("100%% of %s", "it");
    SAME("[%s|%d|%u|%lu|%llu|%zu|%x]", "mix", -7, 7u, 7ul, 7ull, (size_t)7, 255u);

    char buf[64];
    int x;
    log_fmt(buf, sizeof buf, "%p", (void *)&x);
    char want[64];
    snprintf(want, sizeof want, "0x%lx", (unsigned long)(uintptr_t)&x);
    assert_string_equal(buf, want);
    assert_int_equal(log_fmt(buf, sizeof buf, "%p", (void *)0), 3);
    assert_string_equal(buf, "0x0");
    assert_int_equal(log_fmt(buf, sizeof buf, "%p", (void *)(uintptr_t)0xffffffffffffffffull), 18);
    assert_string_equal(buf, "0xffffffffffffffff");
}

/* log_vfmt without the printf format check, for inputs the compiler rightly
 * warns about: the formatter must still cope with them. */
static size_t fmt_unchecked(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = log_vfmt(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

static void test_null_string_and_oddities(void **state)
{
    (void)state;
    char buf[64];
    assert_int_equal(fmt_unchecked(buf, sizeof buf, "[%s]", (const char *)NULL), 8);
    assert_string_equal(buf, "[(null)]");
    /* Unknown conversions are printed as written; a lone % at the end is dropped. */
    fmt_unchecked(buf, sizeof buf, "%q%");
    assert_string_equal(buf, "%q");
    log_fmt(buf, sizeof buf, "no conversions");
    assert_string_equal(buf, "no conversions");
    assert_int_equal(log_fmt(buf, sizeof buf, "%s", ""), 0);
    assert_string_equal(buf, "");
}

static void test_truncation(void **state)
{
    (void)state;
    char buf[16];
    memset(buf, 'Z', sizeof buf);
    assert_int_equal(log_fmt(buf, 5, "hello world"), 4);
    assert_string_equal(buf, "hell");
    assert_int_equal(buf[5], 'Z'); /* nothing past cap */

    memset(buf, 'Z', sizeof buf);
    assert_int_equal(log_fmt(buf, 6, "%d", INT_MIN), 5);
    assert_string_equal(buf, "-2147");
    assert_int_equal(buf[6], 'Z');

    memset(buf, 'Z', sizeof buf);
    assert_int_equal(log_fmt(buf, 8, "%lld", (long long)INT64_MIN), 7);
    assert_string_equal(buf, "-922337");

    memset(buf, 'Z', sizeof buf);
    assert_int_equal(log_fmt(buf, 1, "abc %s", "def"), 0);
    assert_string_equal(buf, "");
    assert_int_equal(buf[1], 'Z');

    memset(buf, 'Z', sizeof buf);
    assert_int_equal(log_fmt(buf, 0, "abc"), 0);
    assert_int_equal(buf[0], 'Z'); /* cap 0: nothing written at all */

    /* Exactly fitting output is not truncated. */
    assert_int_equal(log_fmt(buf, 6, "%s", "hello"), 5);
    assert_string_equal(buf, "hello");
    assert_int_equal(log_fmt(buf, 5, "%s", "hello"), 4);
    assert_string_equal(buf, "hell");
}

/* ------------------------------------------------------------------ log_open / log_msg */

static char path[] = "/tmp/sw_test_log.XXXXXX";

static size_t read_file(char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    assert_true(n >= 0);
    buf[n] = '\0';
    return (size_t)n;
}

static void test_log_msg_to_file(void **state)
{
    (void)state;
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    log_open(path);
    int lfd = log_fd();
    assert_true(lfd > 2); /* moved off the low numbers */
    assert_true(fcntl(lfd, F_GETFD) & FD_CLOEXEC);

    errno = EXDEV;
    log_msg("value %d of %s", 5, "five");
    assert_int_equal(errno, EXDEV); /* errno preserved */

    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    log_msg("long %s", big);

    char buf[8192], want[128];
    size_t n = read_file(buf, sizeof buf);
    snprintf(want, sizeof want, "stackwatch[%d]: value 5 of five\n", (int)getpid());
    assert_memory_equal(buf, want, strlen(want));
    /* The long message: one line, cut to the 1 KiB buffer, newline kept. */
    const char *second = buf + strlen(want);
    size_t len2 = n - strlen(want);
    assert_true(len2 <= 1024);
    assert_true(len2 > 1000);
    assert_int_equal(second[len2 - 1], '\n');
    assert_null(memchr(second, '\n', len2 - 1));
    unlink(path);
}

static void test_log_open_specs(void **state)
{
    (void)state;
    log_open("none");
    assert_int_equal(log_fd(), -1);
    log_msg("goes nowhere %d", 1); /* must not crash */

    log_open("stderr");
    assert_true(log_fd() > 2);
    log_open(NULL);
    assert_true(log_fd() > 2);

    int p[2];
    assert_int_equal(pipe(p), 0);
    char spec[32];
    snprintf(spec, sizeof spec, "fd:%d", p[1]);
    log_open(spec);
    assert_true(log_fd() >= 0);
    assert_true(log_fd() != p[1]); /* a duplicate, not the caller's fd */
    log_msg("via %s", "pipe");
    char buf[128], want[128];
    ssize_t r = read(p[0], buf, sizeof buf - 1);
    assert_true(r > 0);
    buf[r] = '\0';
    snprintf(want, sizeof want, "stackwatch[%d]: via pipe\n", (int)getpid());
    assert_string_equal(buf, want);

    /* An unwritable path falls back to stderr. */
    log_open("/nonexistent-dir/sub/log");
    assert_true(log_fd() > 2);

    /* Our fd number reused by someone else: forgotten, never written. */
    log_open(spec);
    int ours = log_fd();
    assert_true(ours >= 0);
    int other[2];
    assert_int_equal(pipe(other), 0);
    assert_int_equal(dup2(other[1], ours), ours); /* the host "reuses" the number */
    assert_int_equal(log_fd(), -1);
    log_msg("must not reach the other pipe");
    assert_int_equal(fcntl(other[0], F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(read(other[0], buf, sizeof buf), -1);
    assert_int_equal(errno, EAGAIN);
    close(ours);
    close(other[0]);
    close(other[1]);
    close(p[0]);
    close(p[1]);
    log_open("none");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conversions),
        cmocka_unit_test(test_null_string_and_oddities),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_log_msg_to_file),
        cmocka_unit_test(test_log_open_specs),
    };
    return cmocka_run_group_tests_name("agent_log", tests, NULL, NULL);
}
