/* Unit tests of the agent's configuration: sizes, the exe filter, the runtime dir, cfg_load. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/config.h"
#include "agent/log.h"
#include "agent/state.h"

static const char *const env_vars[] = {
    "STACKWATCH_DIR", "STACKWATCH_DEPTH", "STACKWATCH_SAMPLE", "STACKWATCH_RING",
    "STACKWATCH_CONNECT_MS", "STACKWATCH_DISABLE", "STACKWATCH_INHERIT", "STACKWATCH_EXE",
    "XDG_RUNTIME_DIR", "LD_PRELOAD", "STACKWATCH_PYTHON_ALLOCATORS", "STACKWATCH_PYTHON_SAMPLE",
};

static char log_path[] = "/tmp/sw_test_config_log.XXXXXX";
static off_t log_seen; /* bytes of the log already looked at */

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++)
        unsetenv(env_vars[i]);
}

/* Log lines written since the last call, into buf. Returns their count. */
static int new_log_lines(char *buf, size_t cap)
{
    int fd = open(log_path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = pread(fd, buf, cap - 1, log_seen);
    close(fd);
    assert_true(n >= 0);
    buf[n] = '\0';
    log_seen += n;
    int lines = 0;
    for (ssize_t i = 0; i < n; i++)
        lines += buf[i] == '\n';
    return lines;
}

static int group_setup(void **state)
{
    (void)state;
    int fd = mkstemp(log_path);
    if (fd < 0)
        return -1;
    close(fd);
    /* The constructor's order: the log first, then cfg_load. */
    setenv("STACKWATCH_LOG", log_path, 1);
    log_open(getenv("STACKWATCH_LOG"));
    return log_fd() >= 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    unlink(log_path);
    return 0;
}

static int test_setup(void **state)
{
    (void)state;
    char buf[8192];
    clear_env();
    new_log_lines(buf, sizeof buf); /* skip what earlier tests wrote */
    return 0;
}

/* ------------------------------------------------------------------ cfg_parse_size */

static void test_parse_size_good(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t v;
    } ok[] = {
        { "0", 0 },
        { "10", 10 },
        { "4k", 4096 },
        { "4K", 4096 },
        { "4kb", 4096 },
        { "4KB", 4096 },
        { "2M", 2u << 20 },
        { "2m", 2u << 20 },
        { "1g", 1u << 30 },
        { "1G", 1u << 30 },
        { "7b", 7 },
        { "007", 7 },
        { "18446744073709551615", UINT64_MAX },
        { "17179869183g", ((1ull << 34) - 1) << 30 },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 12345;
        assert_int_equal(cfg_parse_size(ok[i].s, &v), 0);
        assert_int_equal(v, ok[i].v);
    }
}

static void test_parse_size_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "x", "-1", "+1", " 5", "5 ", "5q", "5kk", "5kbb", "k", "1.5k", "0x10",
        "18446744073709551616", /* 2^64 */
        "99999999999999999999999",
        "17179869184g", /* 2^34 GiB = 2^64 */
        "17592186044416m",
        "18014398509481984k",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 12345;
        assert_int_equal(cfg_parse_size(bad[i], &v), -EINVAL);
        assert_int_equal(v, 12345); /* untouched on error */
    }
    uint64_t v = 1;
    assert_int_equal(cfg_parse_size(NULL, &v), -EINVAL);
}

static void test_parse_sample(void **state)
{
    (void)state;
    static const struct { const char *s; uint64_t v; } ok[] = {
        { "512k", 512 << 10 }, { "512K", 512 << 10 }, { "512kb", 512 << 10 },
        { "512KiB", 512 << 10 }, { "524288", 524288 }, { "1", 1 }, { "64b", 64 },
        { "1m", 1 << 20 }, { "1024g", 1ull << 40 },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 0;
        assert_int_equal(cfg_parse_sample(ok[i].s, &v), 0);
        assert_int_equal(v, ok[i].v);
    }
    static const char *const bad[] = { "", "0", "0k", "lots", "-5", "2t", "1025g", "b", "ib", "kb",
                                       "512 k", "all " };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 7;
        assert_int_equal(cfg_parse_sample(bad[i], &v), -EINVAL);
        assert_int_equal(v, 7);
    }
}

/* ------------------------------------------------------------------ cfg_exe_match */

static void test_exe_match(void **state)
{
    (void)state;
    const char *exe = "/usr/bin/python3.11";
    assert_true(cfg_exe_match(NULL, exe));
    assert_true(cfg_exe_match("", exe));
    assert_true(cfg_exe_match("python3.11", exe));           /* basename */
    assert_true(cfg_exe_match("/usr/bin/python3.11", exe));  /* full path */
    assert_true(cfg_exe_match("python*", exe));              /* glob on basename */
    assert_true(cfg_exe_match("/usr/*/py*", exe));           /* glob on full path */
    assert_true(cfg_exe_match("*", exe));
    assert_true(cfg_exe_match("python3.1?", exe));
    assert_true(cfg_exe_match("python3.[0-9][0-9]", exe));
    assert_true(cfg_exe_match("foo,python3.11", exe));       /* second of a list */
    assert_true(cfg_exe_match("foo,bar,python*", exe));
    assert_true(cfg_exe_match("foo,,python*", exe));         /* empty item skipped */
    assert_true(cfg_exe_match("python*,", exe));             /* trailing comma */

    assert_false(cfg_exe_match("python", exe));              /* no prefix matching */
    assert_false(cfg_exe_match("ython3.11", exe));
    assert_false(cfg_exe_match("foo,bar", exe));
    assert_false(cfg_exe_match("bin/python3.11", exe));      /* neither full nor base */
    assert_false(cfg_exe_match("/usr/bin/python3", exe));
    assert_false(cfg_exe_match("foo,", exe));
    assert_false(cfg_exe_match(",", exe));

    /* A relative exe name (no slash) is its own basename. */
    assert_true(cfg_exe_match("app", "app"));
    assert_false(cfg_exe_match("ap", "app"));

    /* A pattern too long for the buffer is skipped, not truncated into a match. */
    char longpat[400];
    memset(longpat, 'a', sizeof longpat - 1);
    longpat[sizeof longpat - 1] = '\0';
    char exe_a[300] = "/bin/";
    memset(exe_a + 5, 'a', 255);
    exe_a[260] = '\0';
    assert_false(cfg_exe_match(longpat, exe_a));
    char list[460];
    snprintf(list, sizeof list, "%s,/bin/a*", longpat);
    assert_true(cfg_exe_match(list, exe_a));
}

/* ------------------------------------------------------------------ cfg_resolve_dir */

static void test_resolve_dir(void **state)
{
    (void)state;
    char buf[256], want[64];

    setenv("STACKWATCH_DIR", "/srv/sw", 1);
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    assert_int_equal(cfg_resolve_dir(buf, sizeof buf), 0);
    assert_string_equal(buf, "/srv/sw"); /* STACKWATCH_DIR wins */

    setenv("STACKWATCH_DIR", "/srv/sw///", 1);
    assert_int_equal(cfg_resolve_dir(buf, sizeof buf), 0);
    assert_string_equal(buf, "/srv/sw");
    setenv("STACKWATCH_DIR", "/", 1);
    assert_int_equal(cfg_resolve_dir(buf, sizeof buf), 0);
    assert_string_equal(buf, "/");

    setenv("STACKWATCH_DIR", "", 1); /* empty: as if unset */
    assert_int_equal(cfg_resolve_dir(buf, sizeof buf), 0);
    assert_string_equal(buf, "/run/user/1000/stackwatch");
    unsetenv("STACKWATCH_DIR");
    assert_int_equal(cfg_resolve_dir(buf, sizeof buf), 0);
    assert_string_equal(buf, "/run/user/1000/stackwatch");

    setenv("XDG_RUNTIME_DIR", "", 1);
    snprintf(want, sizeof want, "/tmp/stackwatch-%u", (unsigned)getuid());
    assert_int_equal(cfg_resolve_dir(buf, sizeof buf), 0);
    assert_string_equal(buf, want);
    unsetenv("XDG_RUNTIME_DIR");
    assert_int_equal(cfg_resolve_dir(buf, sizeof buf), 0);
    assert_string_equal(buf, want);
}

static void test_resolve_dir_too_long(void **state)
{
    (void)state;
    char buf[16];
    setenv("STACKWATCH_DIR", "/a/very/long/directory", 1);
    assert_int_equal(cfg_resolve_dir(buf, sizeof buf), -ENAMETOOLONG);
    setenv("STACKWATCH_DIR", "/exactly/15chr", 1); /* 14 chars + NUL = 15 */
    assert_int_equal(cfg_resolve_dir(buf, 15), 0);
    assert_string_equal(buf, "/exactly/15chr");
    assert_int_equal(cfg_resolve_dir(buf, 14), -ENAMETOOLONG);

    unsetenv("STACKWATCH_DIR");
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    assert_int_equal(cfg_resolve_dir(buf, sizeof buf), -ENAMETOOLONG);
    unsetenv("XDG_RUNTIME_DIR");
    assert_int_equal(cfg_resolve_dir(buf, 8), -ENAMETOOLONG);
}

/* The contract: -ENAMETOOLONG only "when it does not fit cap". A path that
 * fits exactly (strlen + 1 == cap) is refused in the XDG_RUNTIME_DIR and
 * /tmp branches (config.c: `n + 1 >= cap`), but accepted in the
 * STACKWATCH_DIR branch. */
static void test_resolve_dir_exact_fit(void **state)
{
    (void)state;
    char buf[64];
    setenv("XDG_RUNTIME_DIR", "/r", 1); /* "/r/stackwatch": 13 chars */
    assert_int_equal(cfg_resolve_dir(buf, 14), 0);
    assert_string_equal(buf, "/r/stackwatch");
    unsetenv("XDG_RUNTIME_DIR");
    char want[64];
    int n = snprintf(want, sizeof want, "/tmp/stackwatch-%u", (unsigned)getuid());
    assert_int_equal(cfg_resolve_dir(buf, (size_t)n + 1), 0);
    assert_string_equal(buf, want);
}

/* ------------------------------------------------------------------ cfg_load */

static void test_load_defaults(void **state)
{
    (void)state;
    char logbuf[4096];
    setenv("STACKWATCH_DIR", "/tmp/swdir", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.enabled, 1);
    assert_int_equal(cfg.inherit, 1);
    assert_int_equal(cfg.depth, CFG_DEPTH_DEFAULT);
    assert_int_equal(cfg.depth, 32);
    assert_int_equal(cfg.ring_events, CFG_RING_DEFAULT);
    assert_int_equal(cfg.connect_ms, 200);
    assert_string_equal(cfg.sample, "all");
    assert_string_equal(cfg.dir, "/tmp/swdir");
    assert_string_equal(cfg.sock, "/tmp/swdir/agent.sock");
    assert_int_equal(cfg.sock_ok, 1);
    assert_string_equal(cfg.log, log_path);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
    cfg_load(NULL); /* no exe: the filter is not consulted */
    assert_int_equal(cfg.enabled, 1);
}

static void test_load_depth(void **state)
{
    (void)state;
    char logbuf[4096];
    static const char *const bad[] = { "0", "500", "abc", "129", "-3", "8x", "1k" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("STACKWATCH_DEPTH", bad[i], 1);
        cfg_load("/usr/bin/app");
        assert_int_equal(cfg.depth, 32);
        assert_int_equal(cfg.enabled, 1);
        /* One clear message naming the variable and the value. */
        assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 1);
        char want[64];
        snprintf(want, sizeof want, "STACKWATCH_DEPTH=%s ", bad[i]);
        assert_non_null(strstr(logbuf, want));
        assert_non_null(strstr(logbuf, "using 32"));
        char pfx[32];
        snprintf(pfx, sizeof pfx, "stackwatch[%d]: ", (int)getpid());
        assert_memory_equal(logbuf, pfx, strlen(pfx));
    }
    static const struct {
        const char *s;
        int v;
    } good[] = { { "8", 8 }, { "1", 1 }, { "128", 128 }, { "64", 64 } };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        setenv("STACKWATCH_DEPTH", good[i].s, 1);
        cfg_load("/usr/bin/app");
        assert_int_equal(cfg.depth, good[i].v);
        assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
    }
    setenv("STACKWATCH_DEPTH", "", 1); /* empty: unset, silently */
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.depth, 32);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
}

/* The scan at the end: off by default; a boolean; its wait 1..3600 s,
 * 60 by default; bad values said once, the default used. */
static void test_load_scan_at_exit(void **state)
{
    (void)state;
    char logbuf[4096];
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.scan_at_exit, 0);
    assert_int_equal(cfg.scan_exit_wait_s, 60);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
    setenv("STACKWATCH_SCAN_AT_EXIT", "1", 1);
    setenv("STACKWATCH_SCAN_AT_EXIT_WAIT", "5", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.scan_at_exit, 1);
    assert_int_equal(cfg.scan_exit_wait_s, 5);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
    setenv("STACKWATCH_SCAN_AT_EXIT", "sometimes", 1);
    setenv("STACKWATCH_SCAN_AT_EXIT_WAIT", "0", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.scan_at_exit, 0);
    assert_int_equal(cfg.scan_exit_wait_s, 60);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 2);
    assert_non_null(strstr(logbuf, "STACKWATCH_SCAN_AT_EXIT=sometimes is not a boolean"));
    assert_non_null(strstr(logbuf, "STACKWATCH_SCAN_AT_EXIT_WAIT=0 is not a time in 1..3600 s"));
    setenv("STACKWATCH_SCAN_AT_EXIT_WAIT", "3601", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.scan_exit_wait_s, 60);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 2); /* the boolean again, and this */
    unsetenv("STACKWATCH_SCAN_AT_EXIT");
    unsetenv("STACKWATCH_SCAN_AT_EXIT_WAIT");
}

/* CPython's small objects: sampled every 256 KiB by default; 0/sampled/exact
 * (1 kept as exact); bad values said once, the default used. */
static void test_load_python_allocators(void **state)
{
    (void)state;
    char logbuf[4096];
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.py_allocators, CFG_PY_SAMPLED);
    assert_int_equal(cfg.py_sample_bytes, 256 << 10);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
    static const struct {
        const char *s;
        int v;
    } good[] = { { "0", CFG_PY_OFF },       { "off", CFG_PY_OFF },      { "no", CFG_PY_OFF },
                 { "false", CFG_PY_OFF },   { "sampled", CFG_PY_SAMPLED }, { "", CFG_PY_SAMPLED },
                 { "1", CFG_PY_EXACT },     { "exact", CFG_PY_EXACT },  { "all", CFG_PY_EXACT },
                 { "yes", CFG_PY_EXACT },   { "on", CFG_PY_EXACT },     { "true", CFG_PY_EXACT } };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        setenv("STACKWATCH_PYTHON_ALLOCATORS", good[i].s, 1);
        cfg_load("/usr/bin/app");
        assert_int_equal(cfg.py_allocators, good[i].v);
        assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
    }
    static const char *const bad[] = { "2", "maybe", "Exact", "sample" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("STACKWATCH_PYTHON_ALLOCATORS", bad[i], 1);
        cfg_load("/usr/bin/app");
        assert_int_equal(cfg.py_allocators, CFG_PY_SAMPLED);
        assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 1);
        assert_non_null(strstr(logbuf, "use sampled, exact or 0; using sampled"));
    }
    unsetenv("STACKWATCH_PYTHON_ALLOCATORS");
    setenv("STACKWATCH_PYTHON_SAMPLE", "64k", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.py_sample_bytes, 64 << 10);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
    setenv("STACKWATCH_PYTHON_SAMPLE", "lots", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.py_sample_bytes, 256 << 10);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 1);
    assert_non_null(strstr(logbuf, "STACKWATCH_PYTHON_SAMPLE=lots is not a byte size"));
    unsetenv("STACKWATCH_PYTHON_SAMPLE");
}

static void test_load_ring_and_connect(void **state)
{
    (void)state;
    char logbuf[4096];
    static const char *const bad_ring[] = { "1000", "512", "8m", "3000", "x", "0" };
    for (size_t i = 0; i < sizeof bad_ring / sizeof bad_ring[0]; i++) {
        setenv("STACKWATCH_RING", bad_ring[i], 1);
        cfg_load("/usr/bin/app");
        assert_int_equal(cfg.ring_events, CFG_RING_DEFAULT);
        assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 1);
        assert_non_null(strstr(logbuf, "STACKWATCH_RING="));
    }
    setenv("STACKWATCH_RING", "2048", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.ring_events, 2048);
    setenv("STACKWATCH_RING", "1k", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.ring_events, 1024);
    setenv("STACKWATCH_RING", "4M", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.ring_events, CFG_RING_MAX);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
    unsetenv("STACKWATCH_RING");

    setenv("STACKWATCH_CONNECT_MS", "0", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.connect_ms, 0);
    setenv("STACKWATCH_CONNECT_MS", "10000", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.connect_ms, 10000);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
    setenv("STACKWATCH_CONNECT_MS", "10001", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.connect_ms, 200);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 1);
    assert_non_null(strstr(logbuf, "STACKWATCH_CONNECT_MS=10001"));
}

static void test_load_disable_and_filter(void **state)
{
    (void)state;
    char logbuf[4096];
    setenv("STACKWATCH_DISABLE", "1", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.enabled, 0);
    setenv("STACKWATCH_DISABLE", "no", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.enabled, 1);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
    setenv("STACKWATCH_DISABLE", "maybe", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.enabled, 1); /* bad boolean: default */
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 1);
    assert_non_null(strstr(logbuf, "STACKWATCH_DISABLE=maybe"));
    unsetenv("STACKWATCH_DISABLE");

    setenv("STACKWATCH_EXE", "other,python*", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.enabled, 0);
    cfg_load("/usr/bin/python3");
    assert_int_equal(cfg.enabled, 1);
    setenv("STACKWATCH_EXE", "app", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.enabled, 1);
    /* The filter says no silently. */
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);

    unsetenv("STACKWATCH_EXE");
    setenv("STACKWATCH_SAMPLE", "512k", 1);
    cfg_load("/usr/bin/app");
    assert_string_equal(cfg.sample, "512k");
    assert_int_equal(cfg.sample_bytes, 512 << 10);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
    setenv("STACKWATCH_SAMPLE", "a lot", 1);
    cfg_load("/usr/bin/app");
    assert_string_equal(cfg.sample, "all");
    assert_int_equal(cfg.sample_bytes, 0);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 1);
    assert_non_null(strstr(logbuf, "STACKWATCH_SAMPLE=a lot is neither"));
    unsetenv("STACKWATCH_SAMPLE");
}

static void test_load_bad_dir(void **state)
{
    (void)state;
    char logbuf[4096], dir[400];
    memset(dir, 'd', sizeof dir - 1);
    dir[0] = '/';
    dir[sizeof dir - 1] = '\0';
    setenv("STACKWATCH_DIR", dir, 1); /* longer than cfg.dir */
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.enabled, 0);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 1);
    assert_non_null(strstr(logbuf, "(STACKWATCH_DIR or XDG_RUNTIME_DIR) is too long"));

    dir[120] = '\0'; /* fits cfg.dir, but dir/agent.sock exceeds sun_path */
    setenv("STACKWATCH_DIR", dir, 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.sock_ok, 0);
    assert_int_equal(cfg.enabled, 0);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 1);
    assert_non_null(strstr(logbuf, "too long for a Unix socket"));

    /* Longest that fits: strlen(sock) == 107, one byte for the NUL. */
    dir[107 - strlen("/agent.sock")] = '\0';
    setenv("STACKWATCH_DIR", dir, 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(strlen(cfg.sock), 107);
    assert_int_equal(cfg.sock_ok, 1);
    assert_int_equal(cfg.enabled, 1);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
}

/* ------------------------------------------------------------------ STACKWATCH_INHERIT */

static const char *load_inherit(const char *preload)
{
    setenv("STACKWATCH_INHERIT", "0", 1);
    if (preload)
        setenv("LD_PRELOAD", preload, 1);
    else
        unsetenv("LD_PRELOAD");
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.inherit, 0);
    return getenv("LD_PRELOAD");
}

static void test_inherit_strips_preload(void **state)
{
    (void)state;
    assert_string_equal(load_inherit("/a/libfoo.so:/x/libstackagent.so /b/libbar.so"),
                        "/a/libfoo.so:/b/libbar.so");
    assert_null(load_inherit("/x/libstackagent.so"));
    assert_null(load_inherit("libstackagent.so"));
    assert_null(load_inherit(":/x/libstackagent.so: "));
    assert_null(load_inherit("/build/asan/libstackagent.so /build/ubsan/libstackagent-ubsan.so"));
    assert_string_equal(load_inherit("/x/libstackagent.so:/a/libfoo.so"), "/a/libfoo.so");
    assert_string_equal(load_inherit("/a/libfoo.so:/x/libstackagent.so"), "/a/libfoo.so");
    assert_string_equal(load_inherit("  /a/libfoo.so  "), "/a/libfoo.so");
    /* Only the basename counts: a directory named after us is not us. */
    assert_string_equal(load_inherit("/opt/libstackagent/libfoo.so"),
                        "/opt/libstackagent/libfoo.so");
    assert_string_equal(load_inherit("/a/libstack.so"), "/a/libstack.so");
    assert_null(load_inherit(NULL));

    /* INHERIT=1 (the default) leaves LD_PRELOAD alone. */
    setenv("STACKWATCH_INHERIT", "1", 1);
    setenv("LD_PRELOAD", "/a/libfoo.so:/x/libstackagent.so", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.inherit, 1);
    assert_string_equal(getenv("LD_PRELOAD"), "/a/libfoo.so:/x/libstackagent.so");

    char logbuf[4096];
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 0);
    setenv("STACKWATCH_INHERIT", "nope", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.inherit, 1);
    assert_string_equal(getenv("LD_PRELOAD"), "/a/libfoo.so:/x/libstackagent.so");
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 1);
    assert_non_null(strstr(logbuf, "STACKWATCH_INHERIT=nope"));
}

/* ------------------------------------------------------------------ bad STACKWATCH_EXE, STACKWATCH_LOG */

static void test_bad_exe_filter(void **state)
{
    (void)state;
    char logbuf[4096];
    assert_null(cfg_exe_check(NULL));
    assert_null(cfg_exe_check(""));
    assert_null(cfg_exe_check("python3*,myserver"));
    assert_non_null(cfg_exe_check("python3*,"));
    assert_non_null(cfg_exe_check(",app"));
    assert_non_null(cfg_exe_check("a,,b"));
    char longpat[300];
    memset(longpat, 'x', sizeof longpat - 1);
    longpat[sizeof longpat - 1] = '\0';
    assert_non_null(cfg_exe_check(longpat));
    longpat[256] = '\0';
    assert_non_null(cfg_exe_check(longpat)); /* 256 bytes */
    longpat[255] = '\0';
    assert_null(cfg_exe_check(longpat));     /* 255: the longest */

    /* One message, and the default (every program) is used. */
    setenv("STACKWATCH_EXE", "other,,python*", 1);
    cfg_load("/usr/bin/app");
    assert_int_equal(cfg.enabled, 1);
    assert_int_equal(new_log_lines(logbuf, sizeof logbuf), 1);
    assert_non_null(strstr(logbuf, "STACKWATCH_EXE=other,,python*: an empty pattern"));
    assert_non_null(strstr(logbuf, "tracing every program"));
}

/* Runs log_open(spec) with stderr sent to a file; returns what was written
 * there (the fallback's message) in buf, and reopens the test's log. */
static int log_open_capture(const char *spec, char *buf, size_t cap)
{
    char errpath[] = "/tmp/sw_test_config_err.XXXXXX";
    int efd = mkstemp(errpath);
    assert_true(efd >= 0);
    int saved = dup(2);
    dup2(efd, 2);
    log_open(spec);
    int fd = log_fd();
    log_msg("probe");
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(efd, buf, cap - 1, 0);
    close(efd);
    unlink(errpath);
    buf[n > 0 ? n : 0] = '\0';
    log_open(log_path);
    return fd;
}

static void test_bad_log_spec(void **state)
{
    (void)state;
    char buf[4096];
    log_open_capture("fd:abc", buf, sizeof buf);
    assert_non_null(strstr(buf, "STACKWATCH_LOG=fd:abc is not fd:N (a descriptor number); "
                                "writing to stderr\n"));
    assert_non_null(strstr(buf, "probe\n")); /* and the log does go to stderr */
    log_open_capture("fd:", buf, sizeof buf);
    assert_non_null(strstr(buf, "STACKWATCH_LOG=fd: is not fd:N"));
    log_open_capture("fd:987", buf, sizeof buf);
    assert_non_null(strstr(buf, "STACKWATCH_LOG=fd:987: descriptor 987 is not open; "
                                "writing to stderr"));
    log_open_capture("/nonexistent-dir/x.log", buf, sizeof buf);
    assert_non_null(strstr(buf, "STACKWATCH_LOG=/nonexistent-dir/x.log: cannot open it (No "
                                "such file or directory); writing to stderr"));
    /* Good values say nothing. */
    log_open_capture("none", buf, sizeof buf);
    assert_string_equal(buf, "");
    log_open_capture("stderr", buf, sizeof buf);
    assert_null(strstr(buf, "STACKWATCH_LOG"));
    assert_non_null(strstr(buf, "probe"));
    log_open_capture("fd:2", buf, sizeof buf);
    assert_null(strstr(buf, "STACKWATCH_LOG"));
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, test_setup)
    const struct CMUnitTest tests[] = {
        T(test_parse_size_good),
        T(test_parse_size_bad),
        T(test_parse_sample),
        T(test_exe_match),
        T(test_resolve_dir),
        T(test_resolve_dir_too_long),
        T(test_resolve_dir_exact_fit),
        T(test_load_defaults),
        T(test_load_depth),
        T(test_load_python_allocators),
        T(test_load_scan_at_exit),
        T(test_load_ring_and_connect),
        T(test_load_disable_and_filter),
        T(test_load_bad_dir),
        T(test_inherit_strips_preload),
        T(test_bad_exe_filter),
        T(test_bad_log_spec),
    };
#undef T
    return cmocka_run_group_tests_name("agent_config", tests, group_setup, group_teardown);
}
