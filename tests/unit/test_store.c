/* Unit tests of collectord's store: record format, damaged records set aside, atomic writes, retention. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "collector/collectord/store.h"

#define SEC 1000000000ull

/* A record of pid with one stack (every count set) and one Python traceback. */
typedef struct rec_s {
    Stackwatch__StoredProcess sp;
    Stackwatch__ClientInfo ci;
    Stackwatch__StackReport st, *stp;
    Stackwatch__Count c[8], live;
    Stackwatch__Frame fr, *frp;
    Stackwatch__PyTraceback tb, *tbp;
    Stackwatch__Count tbc[3];
} rec_t;

static void rec_init(rec_t *r, uint32_t pid, uint64_t instance, uint64_t end_ns)
{
    memset(r, 0, sizeof *r);
    stackwatch__stored_process__init(&r->sp);
    stackwatch__client_info__init(&r->ci);
    stackwatch__stack_report__init(&r->st);
    stackwatch__frame__init(&r->fr);
    stackwatch__py_traceback__init(&r->tb);
    for (int i = 0; i < 8; i++) {
        stackwatch__count__init(&r->c[i]);
        r->c[i].count = (uint64_t)i + 1;
        r->c[i].bytes = ((uint64_t)i + 1) * 100;
    }
    for (int i = 0; i < 3; i++)
        stackwatch__count__init(&r->tbc[i]);
    stackwatch__count__init(&r->live);
    r->live.count = 5;
    r->ci.pid = pid;
    r->ci.exe = (char *)"/usr/bin/app";
    r->ci.state = (char *)"exited";
    r->ci.live = &r->live;
    r->st.id = 0xabcdef;
    r->st.pid = pid;
    r->st.may_leak = &r->c[0];
    r->st.expired = &r->c[1];
    r->st.free_expired = &r->c[2];
    r->st.alloc = &r->c[3];
    r->st.free = &r->c[4];
    r->st.live = &r->c[5];
    r->st.exit_live = &r->c[6];
    r->st.uncertain = &r->c[7];
    r->st.class_ = (char *)"leak";
    r->fr.function = (char *)"leak_here";
    r->fr.file = (char *)"app.c";
    r->fr.line = 42;
    r->frp = &r->fr;
    r->st.frames = &r->frp;
    r->st.n_frames = 1;
    r->tb.live = &r->tbc[0];
    r->tb.expired = &r->tbc[1];
    r->tb.may_leak = &r->tbc[2];
    r->tbp = &r->tb;
    r->st.python = &r->tbp;
    r->st.n_python = 1;
    r->stp = &r->st;
    r->sp.client = &r->ci;
    r->sp.stacks = &r->stp;
    r->sp.n_stacks = 1;
    r->sp.instance = instance;
    r->sp.end_realtime_ns = end_ns;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ format */

static void test_crc32_is_zlibs(void **state)
{
    (void)state;
    assert_int_equal(store_crc32((const uint8_t *)"123456789", 9), 0xcbf43926u);
    assert_int_equal(store_crc32((const uint8_t *)"", 0), 0);
}

static void test_roundtrip(void **state)
{
    (void)state;
    rec_t r;
    rec_init(&r, 77, 0x1234, 5 * SEC);
    uint8_t *buf = NULL;
    size_t len = store_encode(&r.sp, &buf);
    assert_true(len > STORE_HDR);
    assert_memory_equal(buf, STORE_MAGIC, 8);
    const char *why = NULL;
    Stackwatch__StoredProcess *sp = store_decode(buf, len, &why);
    assert_non_null(sp);
    assert_int_equal(sp->client->pid, 77);
    assert_int_equal(sp->instance, 0x1234);
    assert_int_equal(sp->n_stacks, 1);
    assert_int_equal(sp->stacks[0]->exit_live->bytes, 700);
    assert_string_equal(sp->stacks[0]->frames[0]->function, "leak_here");
    assert_int_equal(sp->stacks[0]->frames[0]->line, 42);
    assert_string_equal(sp->stacks[0]->class_, "leak");
    store_sp_free(sp);
    free(buf);
}

/* Frames by reference into the record's table: expanded on decode (each
 * stack's frames are the table's), re-encoding a decoded record gives one
 * accepted again, and a reference out of the table is refused. */
static void test_frames_by_reference(void **state)
{
    (void)state;
    rec_t r;
    rec_init(&r, 78, 0x99, 5 * SEC);
    Stackwatch__Frame t0 = r.fr, t1 = r.fr;
    t1.function = (char *)"caller";
    t1.line = 7;
    Stackwatch__Frame *table[] = { &t0, &t1 };
    uint32_t refs[] = { 0, 1, 1, 0 };
    r.sp.frame_table = table;
    r.sp.n_frame_table = 2;
    r.st.n_frames = 0;
    r.st.frame_refs = refs;
    r.st.n_frame_refs = 4;
    uint8_t *buf = NULL;
    size_t len = store_encode(&r.sp, &buf);
    assert_true(len > STORE_HDR);
    const char *why = NULL;
    Stackwatch__StoredProcess *sp = store_decode(buf, len, &why);
    assert_non_null(sp);
    const Stackwatch__StackReport *s = sp->stacks[0];
    assert_int_equal(s->n_frames, 4);
    assert_string_equal(s->frames[0]->function, "leak_here");
    assert_string_equal(s->frames[1]->function, "caller");
    assert_int_equal(s->frames[2]->line, 7);
    assert_ptr_equal(s->frames[1], s->frames[2]); /* one frame, twice */
    assert_ptr_equal(s->frames[0], sp->frame_table[0]);
    /* Decoded, encoded again: frames and references both; accepted. */
    uint8_t *again = NULL;
    size_t alen = store_encode(sp, &again);
    assert_true(alen > STORE_HDR);
    Stackwatch__StoredProcess *sp2 = store_decode(again, alen, &why);
    assert_non_null(sp2);
    assert_int_equal(sp2->stacks[0]->n_frames, 4);
    assert_string_equal(sp2->stacks[0]->frames[3]->function, "leak_here");
    store_sp_free(sp2);
    free(again);
    store_sp_free(sp);
    free(buf);
    /* A reference past the table. */
    refs[2] = 2;
    len = store_encode(&r.sp, &buf);
    assert_null(store_decode(buf, len, &why));
    assert_non_null(strstr(why, "frame reference"));
    free(buf);
    /* As many frames as references, or none. */
    refs[2] = 1;
    r.st.n_frames = 1;
    len = store_encode(&r.sp, &buf);
    assert_null(store_decode(buf, len, &why));
    free(buf);
}

static void test_damage_is_refused(void **state)
{
    (void)state;
    rec_t r;
    rec_init(&r, 77, 0x1234, 5 * SEC);
    uint8_t *buf = NULL;
    size_t len = store_encode(&r.sp, &buf);
    const char *why;
    /* Every truncation. */
    for (size_t n = 0; n < len; n++) {
        why = NULL;
        assert_null(store_decode(buf, n, &why));
        assert_non_null(why);
    }
    /* Every single bit flipped in the payload: the checksum says so. */
    for (size_t i = STORE_HDR; i < len; i++) {
        for (int b = 0; b < 8; b++) {
            buf[i] ^= (uint8_t)(1u << b);
            why = NULL;
            assert_null(store_decode(buf, len, &why));
            assert_string_equal(why, "checksum mismatch");
            buf[i] ^= (uint8_t)(1u << b);
        }
    }
    buf[8] = 2; /* version */
    assert_null(store_decode(buf, len, &why));
    assert_string_equal(why, "record of an unknown store version");
    buf[8] = 1;
    buf[0] = 'X';
    assert_null(store_decode(buf, len, &why));
    assert_string_equal(why, "not a stackwatch store record");
    free(buf);

    /* A well-formed record without the counts the reports read. */
    rec_init(&r, 77, 0x1234, 5 * SEC);
    r.st.uncertain = NULL;
    len = store_encode(&r.sp, &buf);
    assert_null(store_decode(buf, len, &why));
    assert_string_equal(why, "record lacks required fields");
    free(buf);
    rec_init(&r, 77, 0x1234, 5 * SEC);
    r.tb.may_leak = NULL;
    len = store_encode(&r.sp, &buf);
    assert_null(store_decode(buf, len, &why));
    free(buf);
    rec_init(&r, 77, 0x1234, 5 * SEC);
    r.sp.client = NULL;
    len = store_encode(&r.sp, &buf);
    assert_null(store_decode(buf, len, &why));
    free(buf);
}

/* ------------------------------------------------------------------ directory */

static char tmpdir[] = "/tmp/sw_test_store.XXXXXX";

static int dir_setup(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/sw_test_store.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int dir_teardown(void **state)
{
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Names in dir/reports, sorted, joined by spaces. */
static void listing(char *out, size_t cap)
{
    char path[512];
    snprintf(path, sizeof path, "%s/reports", tmpdir);
    DIR *d = opendir(path);
    assert_non_null(d);
    char names[32][256];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 32)
        if (de->d_name[0] != '.')
            snprintf(names[n++], sizeof names[0], "%s", de->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", i ? " " : "", names[i]);
}

static void write_file(const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/reports/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void test_write_read_set_aside(void **state)
{
    (void)state;
    char err[512], ls[2048];
    store_t st;
    assert_int_equal(store_open(&st, tmpdir, 10, 3600 * SEC, err, sizeof err), 0);
    assert_int_equal(store_count(&st), 0);
    /* A second collectord cannot take the same store. */
    store_t other;
    assert_int_equal(store_open(&other, tmpdir, 10, 3600 * SEC, err, sizeof err), -EBUSY);
    assert_non_null(strstr(err, "in use by another collectord"));

    uint64_t now = now_ns();
    rec_t a, b;
    rec_init(&a, 100, 0xa, now - 2 * SEC);
    rec_init(&b, 200, 0xb, now - 1 * SEC);
    assert_int_equal(store_write(&st, &a.sp), 0);
    assert_int_equal(store_write(&st, &b.sp), 0);
    a.ci.state = (char *)"lost"; /* the same process image again: replaced */
    assert_int_equal(store_write(&st, &a.sp), 0);
    assert_int_equal(store_count(&st), 2);
    listing(ls, sizeof ls);
    assert_string_equal(ls, "p100-000000000000000a.swr p200-000000000000000b.swr");
    store_close(&st);

    /* Damaged files beside them. */
    uint8_t *buf;
    size_t len = store_encode(&b.sp, &buf);
    write_file("p300-000000000000000c.swr", buf, len / 2);
    write_file("p400-000000000000000d.swr", "", 0);
    write_file("p500-000000000000000e.swr.tmp", buf, len); /* a write cut short */
    free(buf);

    assert_int_equal(store_open(&st, tmpdir, 10, 3600 * SEC, err, sizeof err), 0);
    assert_int_equal(store_count(&st), 2);
    assert_int_equal(st.set_aside, 2);
    listing(ls, sizeof ls);
    assert_string_equal(ls, "p100-000000000000000a.swr p200-000000000000000b.swr "
                            "p300-000000000000000c.swr.corrupt "
                            "p400-000000000000000d.swr.corrupt");
    int seen = 0;
    for (uint32_t i = 0; i < st.n; i++) {
        assert_non_null(st.recs[i].sp);
        if (st.recs[i].pid == 100) {
            assert_string_equal(st.recs[i].sp->client->state, "lost");
            seen++;
        }
    }
    assert_int_equal(seen, 1);
    store_close(&st);
}

static void test_retention(void **state)
{
    (void)state;
    char err[512], ls[2048];
    store_t st;
    uint64_t now = now_ns();
    assert_int_equal(store_open(&st, tmpdir, 2, 60 * SEC, err, sizeof err), 0);
    rec_t r[4];
    rec_init(&r[0], 1, 1, now - 120 * SEC); /* older than --retain-time */
    rec_init(&r[1], 2, 2, now - 30 * SEC);
    rec_init(&r[2], 3, 3, now - 20 * SEC);
    rec_init(&r[3], 4, 4, now - 10 * SEC);
    for (int i = 0; i < 4; i++)
        assert_int_equal(store_write(&st, &r[i].sp), 0);
    /* Count: the two newest stay; age: the first went at once. */
    assert_int_equal(store_count(&st), 2);
    listing(ls, sizeof ls);
    assert_string_equal(ls, "p3-0000000000000003.swr p4-0000000000000004.swr");
    store_prune(&st, now + 45 * SEC); /* p3 is now 65 s old, p4 55 s */
    listing(ls, sizeof ls);
    assert_string_equal(ls, "p4-0000000000000004.swr");
    store_close(&st);
    /* Reopened with a smaller limit. */
    assert_int_equal(store_open(&st, tmpdir, 0, 0, err, sizeof err), 0);
    assert_int_equal(store_count(&st), 0);
    listing(ls, sizeof ls);
    assert_string_equal(ls, "");
    store_close(&st);
}

static void test_snapshot_lookup(void **state)
{
    (void)state;
    char err[512];
    store_t st;
    uint64_t now = now_ns();
    assert_int_equal(store_open(&st, tmpdir, 10, 3600 * SEC, err, sizeof err), 0);
    rec_t r;
    rec_init(&r, 9, 0x99, now);
    r.sp.snapshot = 1;
    assert_int_equal(store_write(&st, &r.sp), 0);
    /* Written by this run: its client is in memory, nothing to take over. */
    assert_null(store_find_snapshot(&st, 9, 0x99));
    store_close(&st);
    assert_int_equal(store_open(&st, tmpdir, 10, 3600 * SEC, err, sizeof err), 0);
    assert_null(store_find_snapshot(&st, 9, 0x98));
    assert_null(store_find_snapshot(&st, 8, 0x99));
    store_rec_t *rec = store_find_snapshot(&st, 9, 0x99);
    assert_non_null(rec);
    rec->merged_serial = 5;
    assert_null(store_find_snapshot(&st, 9, 0x99)); /* taken */
    /* A merged record is not pruned while its client lives. */
    st.retain_max = 0;
    store_prune(&st, now);
    assert_int_equal(store_count(&st), 1);
    store_close(&st);
}

static void test_unusable_dir(void **state)
{
    (void)state;
    char err[512], path[512];
    store_t st;
    snprintf(path, sizeof path, "%s/file", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/file/state", tmpdir);
    assert_true(store_open(&st, path, 10, SEC, err, sizeof err) < 0);
    assert_non_null(strstr(err, "cannot create"));
}

/* Files that are not records of ours: a FIFO (opening it blocking would
 * wait forever: SIGALRM ends the test instead), a symlink, a FIFO at the
 * name a write goes through, a FIFO as the lock. None blocks, none is
 * followed. */
static void test_planted_files(void **state)
{
    (void)state;
    char err[512], ls[2048], path[512];
    store_t st;
    alarm(20);
    assert_int_equal(store_open(&st, tmpdir, 10, 3600 * SEC, err, sizeof err), 0);
    store_close(&st);
    snprintf(path, sizeof path, "%s/reports/p1-0000000000000001.swr", tmpdir);
    assert_int_equal(mkfifo(path, 0600), 0);
    char victim[512];
    snprintf(victim, sizeof victim, "%s/victim", tmpdir);
    FILE *f = fopen(victim, "w");
    assert_non_null(f);
    fputs("precious\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/reports/p2-0000000000000002.swr", tmpdir);
    assert_int_equal(symlink(victim, path), 0);
    assert_int_equal(store_open(&st, tmpdir, 10, 3600 * SEC, err, sizeof err), 0);
    assert_int_equal(store_count(&st), 0);
    assert_int_equal(st.set_aside, 2);
    listing(ls, sizeof ls);
    assert_string_equal(ls, "p1-0000000000000001.swr.corrupt p2-0000000000000002.swr.corrupt");
    /* The temporary name of the next write, planted: made anew. */
    rec_t r;
    rec_init(&r, 3, 3, now_ns());
    snprintf(path, sizeof path, "%s/reports/p3-0000000000000003.swr.tmp", tmpdir);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(store_write(&st, &r.sp), 0);
    listing(ls, sizeof ls);
    assert_string_equal(ls, "p1-0000000000000001.swr.corrupt p2-0000000000000002.swr.corrupt "
                            "p3-0000000000000003.swr");
    store_close(&st);
    f = fopen(victim, "r");
    assert_non_null(f);
    char line[32] = "";
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_string_equal(line, "precious\n");
    /* The lock file a FIFO: refused, not waited on. */
    snprintf(path, sizeof path, "%s/store.lock", tmpdir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(store_open(&st, tmpdir, 10, 3600 * SEC, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "not a regular file"));
    alarm(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32_is_zlibs),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_frames_by_reference),
        cmocka_unit_test(test_damage_is_refused),
        cmocka_unit_test_setup_teardown(test_write_read_set_aside, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_retention, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_lookup, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_unusable_dir, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_planted_files, dir_setup, dir_teardown),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
