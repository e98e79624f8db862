/* Unit tests of the streaming JSON writer: string escaping, UTF-8 checks, nesting and commas. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/stackctl/json.h"

/* An in-memory FILE whose contents a test compares. */
typedef struct mem_s {
    FILE *f;
    char *buf;
    size_t len;
} mem_t;

static void mem_open(mem_t *m)
{
    m->buf = NULL;
    m->len = 0;
    m->f = open_memstream(&m->buf, &m->len);
    assert_non_null(m->f);
}

/* Closes the stream, compares, frees. */
static void mem_expect(mem_t *m, const char *want)
{
    assert_int_equal(fclose(m->f), 0);
    assert_string_equal(m->buf, want);
    assert_int_equal(m->len, strlen(want));
    free(m->buf);
}

static void check_json_string(const char *in, const char *want)
{
    mem_t m;
    mem_open(&m);
    json_write_string(m.f, in);
    mem_expect(&m, want);
}

/* ------------------------------------------------------------------ strings */

static void test_plain_and_empty(void **state)
{
    (void)state;
    check_json_string("", "\"\"");
    check_json_string("abc xyz 019 ~", "\"abc xyz 019 ~\"");
    check_json_string("/usr/lib/libc.so.6", "\"/usr/lib/libc.so.6\"");
}

static void test_escapes(void **state)
{
    (void)state;
    check_json_string("a\"b", "\"a\\\"b\"");
    check_json_string("back\\slash", "\"back\\\\slash\"");
    check_json_string("\\\"", "\"\\\\\\\"\"");
    check_json_string("l1\nl2\tt\rr", "\"l1\\nl2\\tt\\rr\"");
    check_json_string("\x01", "\"\\u0001\"");
    check_json_string("\x1f", "\"\\u001f\"");
    check_json_string("\b\f", "\"\\u0008\\u000c\"");
    check_json_string("\x1b[0m", "\"\\u001b[0m\"");
    /* DEL and '/' need no escape. */
    check_json_string("\x7f/", "\"\x7f/\"");
}

static void test_valid_utf8_passes_through(void **state)
{
    (void)state;
    check_json_string("caf\xc3\xa9", "\"caf\xc3\xa9\"");              /* U+00E9 */
    check_json_string("\xc2\x80", "\"\xc2\x80\"");                    /* U+0080 */
    check_json_string("\xe2\x82\xac 5", "\"\xe2\x82\xac 5\"");        /* U+20AC */
    check_json_string("\xef\xbf\xbf", "\"\xef\xbf\xbf\"");            /* U+FFFF */
    check_json_string("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\"");    /* U+1F600 */
    check_json_string("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"");    /* U+10FFFF */
    check_json_string("std::vector<\xce\xbb>", "\"std::vector<\xce\xbb>\"");
}

static void test_invalid_utf8_becomes_replacement(void **state)
{
    (void)state;
    check_json_string("\x80", "\"\\ufffd\"");                 /* lone continuation */
    check_json_string("a\xff" "b", "\"a\\ufffdb\"");
    check_json_string("\xfe", "\"\\ufffd\"");
    check_json_string("\xc3", "\"\\ufffd\"");                 /* truncated at the end */
    check_json_string("\xc3(", "\"\\ufffd(\"");               /* bad continuation */
    check_json_string("\xe2\x82", "\"\\ufffd\\ufffd\"");
    check_json_string("\xe2\x82x", "\"\\ufffd\\ufffdx\"");
    check_json_string("\xc0\xaf", "\"\\ufffd\\ufffd\"");      /* overlong '/' */
    check_json_string("\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\"");
    check_json_string("\xf0\x80\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
    check_json_string("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");     /* surrogate */
    check_json_string("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* > U+10FFFF */
    check_json_string("\xf8\x88\x80\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\"");
    /* A bad byte between good sequences spoils only itself. */
    check_json_string("\xc3\xa9\x80\xc3\xa9", "\"\xc3\xa9\\ufffd\xc3\xa9\"");
    /* An escape right after a truncated sequence is still an escape. */
    check_json_string("\xe2\"", "\"\\ufffd\\\"\"");
    check_json_string("\xe2\n", "\"\\ufffd\\n\"");
}

/* ------------------------------------------------------------------ structure */

static void test_compact_nesting(void **state)
{
    (void)state;
    mem_t m;
    mem_open(&m);
    json_t j;
    json_init(&j, m.f, 0);
    json_obj_begin(&j, NULL);
    json_u64(&j, "a", 1);
    json_arr_begin(&j, "b");
    json_u64(&j, NULL, 1);
    json_u64(&j, NULL, UINT64_MAX);
    json_obj_begin(&j, NULL);
    json_null(&j, "c");
    json_obj_end(&j);
    json_arr_end(&j);
    json_obj_begin(&j, "d");
    json_obj_end(&j);
    json_arr_begin(&j, "e");
    json_arr_end(&j);
    json_bool(&j, "f", 1);
    json_bool(&j, "g", 0);
    json_hex(&j, "h", 255, 4);
    json_hex(&j, "i", 0x7f00dead, 0);
    json_str(&j, "k\"ey", "v\n");
    json_str(&j, "n", NULL);
    json_obj_end(&j);
    assert_int_equal(j.depth, 0);
    mem_expect(&m, "{\"a\":1,\"b\":[1,18446744073709551615,{\"c\":null}],\"d\":{},\"e\":[],"
                   "\"f\":true,\"g\":false,\"h\":\"0x00ff\",\"i\":\"0x7f00dead\","
                   "\"k\\\"ey\":\"v\\n\",\"n\":null}\n");
}

static void test_pretty(void **state)
{
    (void)state;
    mem_t m;
    mem_open(&m);
    json_t j;
    json_init(&j, m.f, 1);
    json_obj_begin(&j, NULL);
    json_u64(&j, "a", 1);
    json_arr_begin(&j, "b");
    json_u64(&j, NULL, 1);
    json_u64(&j, NULL, 2);
    json_arr_end(&j);
    json_obj_begin(&j, "c");
    json_obj_end(&j);
    json_obj_end(&j);
    mem_expect(&m, "{\n"
                   "  \"a\": 1,\n"
                   "  \"b\": [\n"
                   "    1,\n"
                   "    2\n"
                   "  ],\n"
                   "  \"c\": {}\n"
                   "}\n");
}

static void test_top_level_arrays_in_sequence(void **state)
{
    (void)state;
    mem_t m;
    mem_open(&m);
    json_t j;
    json_init(&j, m.f, 0);
    json_arr_begin(&j, NULL);
    json_arr_begin(&j, NULL);
    json_arr_end(&j);
    json_arr_begin(&j, NULL);
    json_str(&j, NULL, "x");
    json_arr_end(&j);
    json_arr_end(&j);
    /* A second document starts fresh: no comma carried over. */
    json_arr_begin(&j, NULL);
    json_u64(&j, NULL, 0);
    json_arr_end(&j);
    mem_expect(&m, "[[],[\"x\"]]\n[0]\n");
}

/* Commas are counted per container: members after a closed child. */
static void test_deep_nesting_commas(void **state)
{
    (void)state;
    mem_t m;
    mem_open(&m);
    json_t j;
    json_init(&j, m.f, 0);
    char want[512];
    size_t w = 0;
    for (int d = 0; d < JSON_MAX_DEPTH; d++) {
        json_arr_begin(&j, NULL);
        json_u64(&j, NULL, (uint64_t)d);
        w += (size_t)snprintf(want + w, sizeof want - w, d ? ",[%d" : "[%d", d);
    }
    for (int d = 0; d < JSON_MAX_DEPTH; d++) {
        json_arr_end(&j);
        if (d < JSON_MAX_DEPTH - 1) {
            json_u64(&j, NULL, 7);
            w += (size_t)snprintf(want + w, sizeof want - w, "],7");
        } else {
            w += (size_t)snprintf(want + w, sizeof want - w, "]\n");
        }
    }
    mem_expect(&m, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_and_empty),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_valid_utf8_passes_through),
        cmocka_unit_test(test_invalid_utf8_becomes_replacement),
        cmocka_unit_test(test_compact_nesting),
        cmocka_unit_test(test_pretty),
        cmocka_unit_test(test_top_level_arrays_in_sequence),
        cmocka_unit_test(test_deep_nesting_commas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
