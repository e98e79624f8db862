/* Unit tests of the pprof export: a leak report in, a gzipped profile.proto out, read back. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "collector/stackctl/pprof.h"
#include "pprof/profile.pb-c.h"

/* ------------------------------------------------------------------ the report */

#define APP "/opt/app/bin/server"
#define LIBX "/usr/lib/libstripped.so.1"
#define APP_BIAS 0x555500000000ULL
#define APP2_BIAS 0x560000000000ULL
#define LIBX_BIAS 0x7f0000000000ULL

static uint8_t app_build_id[] = { 0xde, 0xad, 0xbe, 0xef, 0x00, 0x12 };

/* A frame; module NULL: none; function NULL: not symbolized. */
static Stackwatch__Frame *mkframe(uint64_t addr, const char *module, uint64_t bias,
                                  const char *function, const char *file, uint32_t line,
                                  int is_inline)
{
    Stackwatch__Frame *f = calloc(1, sizeof *f);
    assert_non_null(f);
    stackwatch__frame__init(f);
    f->addr = addr;
    if (module) {
        f->module = (char *)module;
        f->module_offset = addr - bias;
        if (!strcmp(module, APP)) {
            f->build_id.data = app_build_id;
            f->build_id.len = sizeof app_build_id;
        }
    }
    if (function) {
        f->function = (char *)function;
        f->offset = 7;
    }
    if (file) {
        f->file = (char *)file;
        f->line = line;
    }
    f->is_inline = is_inline;
    return f;
}

static Stackwatch__Count *mkcount(uint64_t count, uint64_t bytes)
{
    Stackwatch__Count *c = calloc(1, sizeof *c);
    assert_non_null(c);
    stackwatch__count__init(c);
    c->count = count;
    c->bytes = bytes;
    return c;
}

static Stackwatch__StackReport *mkstack(uint64_t id, uint32_t pid, const char *klass,
                                        const char *exe, Stackwatch__Count *may_leak,
                                        Stackwatch__Count *live)
{
    Stackwatch__StackReport *s = calloc(1, sizeof *s);
    assert_non_null(s);
    stackwatch__stack_report__init(s);
    s->id = id;
    s->pid = pid;
    s->class_ = (char *)klass;
    s->exe = (char *)exe;
    s->may_leak = may_leak;
    s->live = live;
    s->frames = calloc(16, sizeof *s->frames);
    assert_non_null(s->frames);
    return s;
}

static void push(Stackwatch__StackReport *s, Stackwatch__Frame *f)
{
    assert_true(s->n_frames < 16);
    s->frames[s->n_frames++] = f;
}

#define A_ADDR (APP_BIAS + 0x1234)   /* caller(), with two functions inlined into it */
#define B_ADDR (APP_BIAS + 0x3000)   /* other() */
#define M_ADDR (APP_BIAS + 0x2000)   /* main() */
#define X_ADDR (LIBX_BIAS + 0x5678)  /* stripped */
#define C_ADDR (APP2_BIAS + 0x1234)  /* caller() in the second process */
#define R_ADDR (APP2_BIAS + 0x4444)  /* rec() calling itself */
#define U_ADDR 0x1000ULL             /* no module at all */

/* Adds the inline group at A: inl_inner inlined into inl_mid inlined into caller. */
static void push_group_a(Stackwatch__StackReport *s)
{
    push(s, mkframe(A_ADDR, APP, APP_BIAS, "inl_inner", "src/a.h", 10, 1));
    push(s, mkframe(A_ADDR, APP, APP_BIAS, "inl_mid", "src/a.c", 20, 1));
    push(s, mkframe(A_ADDR, APP, APP_BIAS, "caller", "src/a.c", 30, 0));
}

/* Two processes of one executable loaded at different addresses, three stacks:
 * S1 (pid 100): group A, a stripped frame, main.
 * S2 (pid 100): other, then the same frames as S1.
 * S3 (pid 200): caller (no inlines here), rec twice (recursion: two physical
 *               frames with one address), a frame without a module. */
static Stackwatch__LeakReport *mkreport(void)
{
    Stackwatch__LeakReport *r = calloc(1, sizeof *r);
    assert_non_null(r);
    stackwatch__leak_report__init(r);
    r->expire_ms = 1500;
    r->sample = "all";
    r->now_ms = 1700000000123ULL;
    r->clients = calloc(2, sizeof *r->clients);
    for (int i = 0; i < 2; i++) {
        Stackwatch__ClientInfo *c = calloc(1, sizeof *c);
        assert_non_null(c);
        stackwatch__client_info__init(c);
        c->pid = i ? 200 : 100;
        c->ppid = 1;
        c->exe = APP;
        c->state = i ? "exited" : "connected";
        r->clients[r->n_clients++] = c;
    }
    r->stacks = calloc(3, sizeof *r->stacks);

    Stackwatch__StackReport *s1 = mkstack(0x1111, 100, "leak", APP, mkcount(3, 300),
                                          mkcount(5, 500));
    push_group_a(s1);
    push(s1, mkframe(X_ADDR, LIBX, LIBX_BIAS, NULL, NULL, 0, 0));
    push(s1, mkframe(M_ADDR, APP, APP_BIAS, "main", "src/a.c", 50, 0));
    r->stacks[r->n_stacks++] = s1;

    Stackwatch__StackReport *s2 = mkstack(0x2222, 100, "growing", APP, mkcount(1, 64),
                                          mkcount(2, 128));
    push(s2, mkframe(B_ADDR, APP, APP_BIAS, "other", "src/a.c", 60, 0));
    push_group_a(s2);
    push(s2, mkframe(X_ADDR, LIBX, LIBX_BIAS, NULL, NULL, 0, 0));
    push(s2, mkframe(M_ADDR, APP, APP_BIAS, "main", "src/a.c", 50, 0));
    r->stacks[r->n_stacks++] = s2;

    /* No may_leak Count at all: a NULL submessage reads as zero. */
    Stackwatch__StackReport *s3 = mkstack(0xfedcba9876543210ULL, 200, "", APP, NULL,
                                          mkcount(7, 700));
    push(s3, mkframe(C_ADDR, APP, APP2_BIAS, "caller", "src/a.c", 30, 0));
    push(s3, mkframe(R_ADDR, APP, APP2_BIAS, "rec", "src/a.c", 70, 0));
    push(s3, mkframe(R_ADDR, APP, APP2_BIAS, "rec", "src/a.c", 70, 0));
    push(s3, mkframe(U_ADDR, NULL, 0, NULL, NULL, 0, 0));
    r->stacks[r->n_stacks++] = s3;
    return r;
}

static void free_report(Stackwatch__LeakReport *r)
{
    for (size_t i = 0; i < r->n_stacks; i++) {
        Stackwatch__StackReport *s = r->stacks[i];
        for (size_t k = 0; k < s->n_frames; k++)
            free(s->frames[k]);
        free(s->frames);
        free(s->may_leak);
        free(s->live);
        free(s);
    }
    for (size_t i = 0; i < r->n_clients; i++)
        free(r->clients[i]);
    free(r->stacks);
    free(r->clients);
    free(r);
}

/* ------------------------------------------------------------------ reading it back */

/* Renders r, checks the gzip magic, gunzips and unpacks. */
static Perftools__Profiles__Profile *render(const Stackwatch__LeakReport *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(cli_leaks_pprof(f, r), 0);
    assert_int_equal(fclose(f), 0);
    assert_true(len > 18);
    assert_int_equal((unsigned char)buf[0], 0x1f);
    assert_int_equal((unsigned char)buf[1], 0x8b);

    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(inflateInit2(&z, 15 + 32), Z_OK);
    size_t cap = 4096, n = 0;
    unsigned char *out = malloc(cap);
    assert_non_null(out);
    z.next_in = (unsigned char *)buf;
    z.avail_in = (uInt)len;
    int zrc;
    do {
        if (n == cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        z.next_out = out + n;
        z.avail_out = (uInt)(cap - n);
        zrc = inflate(&z, Z_NO_FLUSH);
        assert_true(zrc == Z_OK || zrc == Z_STREAM_END);
        n = cap - z.avail_out;
    } while (zrc != Z_STREAM_END);
    assert_int_equal(z.avail_in, 0); /* one gzip member, nothing after it */
    inflateEnd(&z);
    free(buf);

    Perftools__Profiles__Profile *p = perftools__profiles__profile__unpack(NULL, n, out);
    free(out);
    assert_non_null(p);
    return p;
}

static const char *str(const Perftools__Profiles__Profile *p, int64_t i)
{
    assert_true(i >= 0 && (size_t)i < p->n_string_table);
    return p->string_table[i];
}

static const Perftools__Profiles__Function *function(const Perftools__Profiles__Profile *p,
                                                     uint64_t id)
{
    for (size_t i = 0; i < p->n_function; i++)
        if (p->function[i]->id == id)
            return p->function[i];
    fail_msg("no function %" PRIu64, id);
    return NULL;
}

static const Perftools__Profiles__Location *location(const Perftools__Profiles__Profile *p,
                                                     uint64_t id)
{
    for (size_t i = 0; i < p->n_location; i++)
        if (p->location[i]->id == id)
            return p->location[i];
    fail_msg("no location %" PRIu64, id);
    return NULL;
}

static const Perftools__Profiles__Mapping *mapping(const Perftools__Profiles__Profile *p,
                                                   uint64_t id)
{
    for (size_t i = 0; i < p->n_mapping; i++)
        if (p->mapping[i]->id == id)
            return p->mapping[i];
    fail_msg("no mapping %" PRIu64, id);
    return NULL;
}

/* Checks that line i of l is function name at file:line. */
static void expect_line(const Perftools__Profiles__Profile *p,
                        const Perftools__Profiles__Location *l, size_t i, const char *name,
                        const char *file, int64_t line)
{
    assert_true(i < l->n_line);
    const Perftools__Profiles__Function *fn = function(p, l->line[i]->function_id);
    assert_string_equal(str(p, fn->name), name);
    assert_string_equal(str(p, fn->system_name), name);
    assert_string_equal(str(p, fn->filename), file);
    assert_int_equal(l->line[i]->line, line);
}

static const Perftools__Profiles__Label *label(const Perftools__Profiles__Profile *p,
                                               const Perftools__Profiles__Sample *s,
                                               const char *key)
{
    for (size_t i = 0; i < s->n_label; i++)
        if (!strcmp(str(p, s->label[i]->key), key))
            return s->label[i];
    return NULL;
}

/* ------------------------------------------------------------------ tests */

static void test_header_and_sample_types(void **state)
{
    (void)state;
    Stackwatch__LeakReport *r = mkreport();
    Perftools__Profiles__Profile *p = render(r);
    assert_true(p->n_string_table > 0);
    assert_string_equal(p->string_table[0], "");
    static const char *const want[4][2] = {
        { "may_leak_objects", "count" },
        { "may_leak_space", "bytes" },
        { "live_objects", "count" },
        { "live_space", "bytes" },
    };
    assert_int_equal(p->n_sample_type, 4);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(str(p, p->sample_type[i]->type), want[i][0]);
        assert_string_equal(str(p, p->sample_type[i]->unit), want[i][1]);
    }
    assert_string_equal(str(p, p->default_sample_type), "may_leak_space");
    assert_int_equal(p->time_nanos, 1700000000123LL * 1000000);
    assert_true(p->n_comment >= 1);
    assert_non_null(strstr(str(p, p->comment[0]), "expire 1.500s"));
    int pids = 0;
    for (size_t i = 1; i < p->n_comment; i++)
        pids += strstr(str(p, p->comment[i]), "pid 100 ") || strstr(str(p, p->comment[i]), "pid 200 ");
    assert_int_equal(pids, 2);
    /* Every string once. */
    for (size_t i = 0; i < p->n_string_table; i++)
        for (size_t k = i + 1; k < p->n_string_table; k++)
            assert_string_not_equal(p->string_table[i], p->string_table[k]);
    perftools__profiles__profile__free_unpacked(p, NULL);
    free_report(r);
}

static void test_samples_values_and_labels(void **state)
{
    (void)state;
    Stackwatch__LeakReport *r = mkreport();
    Perftools__Profiles__Profile *p = render(r);
    assert_int_equal(p->n_sample, 3);
    static const int64_t want[3][4] = { { 3, 300, 5, 500 }, { 1, 64, 2, 128 }, { 0, 0, 7, 700 } };
    static const char *const klass[3] = { "leak", "growing", NULL };
    static const char *const ids[3] = { "0000000000001111", "0000000000002222",
                                        "fedcba9876543210" };
    static const int64_t pid[3] = { 100, 100, 200 };
    for (int i = 0; i < 3; i++) {
        const Perftools__Profiles__Sample *s = p->sample[i];
        assert_int_equal(s->n_value, 4);
        for (int k = 0; k < 4; k++)
            assert_int_equal(s->value[k], want[i][k]);
        const Perftools__Profiles__Label *l = label(p, s, "pid");
        assert_non_null(l);
        assert_int_equal(l->num, pid[i]);
        assert_int_equal(l->str, 0);
        l = label(p, s, "class");
        if (klass[i]) {
            assert_non_null(l);
            assert_string_equal(str(p, l->str), klass[i]);
        } else {
            assert_null(l); /* no class: no label */
        }
        l = label(p, s, "stack_id");
        assert_non_null(l);
        assert_string_equal(str(p, l->str), ids[i]);
        l = label(p, s, "exe");
        assert_non_null(l);
        assert_string_equal(str(p, l->str), APP);
    }
    perftools__profiles__profile__free_unpacked(p, NULL);
    free_report(r);
}

static void test_locations_inline_and_sharing(void **state)
{
    (void)state;
    Stackwatch__LeakReport *r = mkreport();
    Perftools__Profiles__Profile *p = render(r);
    /* S1: the three frames at A are one location. */
    const Perftools__Profiles__Sample *s1 = p->sample[0], *s2 = p->sample[1], *s3 = p->sample[2];
    assert_int_equal(s1->n_location_id, 3);
    const Perftools__Profiles__Location *a = location(p, s1->location_id[0]);
    assert_int_equal(a->address, A_ADDR);
    assert_int_equal(a->n_line, 3);
    expect_line(p, a, 0, "inl_inner", "src/a.h", 10);
    expect_line(p, a, 1, "inl_mid", "src/a.c", 20);
    expect_line(p, a, 2, "caller", "src/a.c", 30); /* the physical frame last */

    /* The stripped frame: a location with its mapping, no lines. */
    const Perftools__Profiles__Location *x = location(p, s1->location_id[1]);
    assert_int_equal(x->address, X_ADDR);
    assert_int_equal(x->n_line, 0);
    assert_int_not_equal(x->mapping_id, 0);
    assert_string_equal(str(p, mapping(p, x->mapping_id)->filename), LIBX);

    const Perftools__Profiles__Location *m = location(p, s1->location_id[2]);
    assert_int_equal(m->n_line, 1);
    expect_line(p, m, 0, "main", "src/a.c", 50);

    /* S2 shares S1's locations after its own first one. */
    assert_int_equal(s2->n_location_id, 4);
    expect_line(p, location(p, s2->location_id[0]), 0, "other", "src/a.c", 60);
    for (int i = 0; i < 3; i++)
        assert_int_equal(s2->location_id[i + 1], s1->location_id[i]);

    /* S3: caller at the other load address is another location (same
     * function); the recursive frames stay two entries of one location; the
     * frame without a module has no mapping. */
    assert_int_equal(s3->n_location_id, 4);
    const Perftools__Profiles__Location *c = location(p, s3->location_id[0]);
    assert_int_equal(c->address, C_ADDR);
    assert_int_not_equal(s3->location_id[0], s1->location_id[0]);
    assert_int_equal(c->n_line, 1);
    assert_int_equal(c->line[0]->function_id, a->line[2]->function_id);
    assert_int_equal(s3->location_id[1], s3->location_id[2]);
    expect_line(p, location(p, s3->location_id[1]), 0, "rec", "src/a.c", 70);
    const Perftools__Profiles__Location *u = location(p, s3->location_id[3]);
    assert_int_equal(u->address, U_ADDR);
    assert_int_equal(u->mapping_id, 0);
    assert_int_equal(u->n_line, 0);

    /* Deduplicated: A, X, main, other, caller@2, rec, none. */
    assert_int_equal(p->n_location, 7);
    /* inl_inner/a.h, inl_mid, caller, main, other, rec. */
    assert_int_equal(p->n_function, 6);
    for (size_t i = 0; i < p->n_location; i++)
        assert_int_equal(p->location[i]->id, i + 1);
    for (size_t i = 0; i < p->n_function; i++)
        assert_int_equal(p->function[i]->id, i + 1);
    perftools__profiles__profile__free_unpacked(p, NULL);
    free_report(r);
}

static void test_mappings(void **state)
{
    (void)state;
    Stackwatch__LeakReport *r = mkreport();
    Perftools__Profiles__Profile *p = render(r);
    /* APP at two load addresses, and LIBX. */
    assert_int_equal(p->n_mapping, 3);
    const Perftools__Profiles__Mapping *app = NULL, *app2 = NULL, *libx = NULL;
    for (size_t i = 0; i < p->n_mapping; i++) {
        const Perftools__Profiles__Mapping *m = p->mapping[i];
        assert_int_equal(m->id, i + 1);
        assert_int_equal(m->file_offset, 0);
        if (m->memory_start == APP_BIAS)
            app = m;
        else if (m->memory_start == APP2_BIAS)
            app2 = m;
        else if (m->memory_start == LIBX_BIAS)
            libx = m;
    }
    assert_non_null(app);
    assert_non_null(app2);
    assert_non_null(libx);
    assert_string_equal(str(p, app->filename), APP);
    assert_string_equal(str(p, app2->filename), APP);
    assert_int_equal(app->filename, app2->filename);
    assert_string_equal(str(p, app->build_id), "deadbeef0012");
    assert_int_equal(app->build_id, app2->build_id);
    assert_string_equal(str(p, libx->filename), LIBX);
    assert_int_equal(libx->build_id, 0);
    /* The page after the highest address seen in each. */
    assert_int_equal(app->memory_limit, APP_BIAS + 0x4000);
    assert_int_equal(app2->memory_limit, APP2_BIAS + 0x5000);
    assert_int_equal(libx->memory_limit, LIBX_BIAS + 0x6000);
    assert_true(app->has_functions && app->has_filenames && app->has_line_numbers);
    assert_true(app->has_inline_frames);
    assert_true(app2->has_functions && !app2->has_inline_frames);
    assert_false(libx->has_functions || libx->has_filenames || libx->has_line_numbers ||
                 libx->has_inline_frames);
    /* Every location's address inside its mapping. */
    for (size_t i = 0; i < p->n_location; i++) {
        const Perftools__Profiles__Location *l = p->location[i];
        if (!l->mapping_id)
            continue;
        const Perftools__Profiles__Mapping *m = mapping(p, l->mapping_id);
        assert_true(l->address >= m->memory_start && l->address < m->memory_limit);
    }
    perftools__profiles__profile__free_unpacked(p, NULL);
    free_report(r);
}

/* A fixed-address executable (bias 0): start 0 and limit UINT64_MAX, pprof's
 * whole-address-space mapping whose addresses need no adjustment. */
static void test_fixed_address_executable(void **state)
{
    (void)state;
    Stackwatch__LeakReport *r = calloc(1, sizeof *r);
    assert_non_null(r);
    stackwatch__leak_report__init(r);
    r->stacks = calloc(1, sizeof *r->stacks);
    Stackwatch__StackReport *s = mkstack(1, 42, "leak", "/usr/bin/python3.11", mkcount(1, 10),
                                         mkcount(1, 10));
    push(s, mkframe(0x52c441, "/usr/bin/python3.11", 0, "_PyEval_EvalFrameDefault", NULL, 0, 0));
    push(s, mkframe(0x647d97, "/usr/bin/python3.11", 0, NULL, NULL, 0, 0));
    r->stacks[r->n_stacks++] = s;
    Perftools__Profiles__Profile *p = render(r);
    assert_int_equal(p->n_mapping, 1);
    assert_int_equal(p->mapping[0]->memory_start, 0);
    assert_int_equal(p->mapping[0]->memory_limit, UINT64_MAX);
    /* Partly symbolized: flagged, so pprof keeps our names and adds none. */
    assert_true(p->mapping[0]->has_functions);
    assert_false(p->mapping[0]->has_line_numbers);
    assert_int_equal(p->n_location, 2);
    assert_int_equal(p->location[1]->n_line, 0);
    assert_int_equal(p->location[1]->address, 0x647d97);
    perftools__profiles__profile__free_unpacked(p, NULL);
    free_report(r);
}

static void test_empty_report(void **state)
{
    (void)state;
    Stackwatch__LeakReport r = STACKWATCH__LEAK_REPORT__INIT;
    Perftools__Profiles__Profile *p = render(&r);
    assert_int_equal(p->n_sample, 0);
    assert_int_equal(p->n_location, 0);
    assert_int_equal(p->n_mapping, 0);
    assert_int_equal(p->n_sample_type, 4);
    assert_string_equal(p->string_table[0], "");
    perftools__profiles__profile__free_unpacked(p, NULL);
}

/* Many distinct stacks: the tables grow and rehash; every id stays right. */
static void test_many_stacks(void **state)
{
    (void)state;
    enum { N = 3000 };
    static char names[N][16];
    Stackwatch__LeakReport *r = calloc(1, sizeof *r);
    assert_non_null(r);
    stackwatch__leak_report__init(r);
    r->stacks = calloc(N, sizeof *r->stacks);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "fn_%d", i);
        Stackwatch__StackReport *s = mkstack((uint64_t)i, 100, "leak", APP, mkcount(1, (uint64_t)i),
                                             mkcount(1, (uint64_t)i));
        push(s, mkframe(APP_BIAS + 0x10000 + (uint64_t)i * 16, APP, APP_BIAS, names[i], "src/a.c",
                        (uint32_t)i + 1, 0));
        push(s, mkframe(M_ADDR, APP, APP_BIAS, "main", "src/a.c", 50, 0));
        r->stacks[r->n_stacks++] = s;
    }
    Perftools__Profiles__Profile *p = render(r);
    assert_int_equal(p->n_sample, N);
    assert_int_equal(p->n_location, N + 1);
    assert_int_equal(p->n_function, N + 1);
    assert_int_equal(p->n_mapping, 1);
    for (int i = 0; i < N; i++) {
        const Perftools__Profiles__Sample *s = p->sample[i];
        assert_int_equal(s->value[1], i);
        assert_int_equal(s->location_id[1], p->sample[0]->location_id[1]);
        expect_line(p, location(p, s->location_id[0]), 0, names[i], "src/a.c", i + 1);
    }
    perftools__profiles__profile__free_unpacked(p, NULL);
    free_report(r);
}

/* A stream that cannot be written: an error, not a crash or a success. */
static void test_write_error(void **state)
{
    (void)state;
    Stackwatch__LeakReport *r = mkreport();
    FILE *f = fopen("/dev/null", "r");
    assert_non_null(f);
    int rc = cli_leaks_pprof(f, r);
    assert_true(rc < 0);
    fclose(f);
    free_report(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_and_sample_types),
        cmocka_unit_test(test_samples_values_and_labels),
        cmocka_unit_test(test_locations_inline_and_sharing),
        cmocka_unit_test(test_mappings),
        cmocka_unit_test(test_fixed_address_executable),
        cmocka_unit_test(test_empty_report),
        cmocka_unit_test(test_many_stacks),
        cmocka_unit_test(test_write_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
