/* Unit tests of the length-prefixed framing: encoding, the incremental reader, blocking I/O. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "proto/frame.h"
#include "proto/stackwatch.pb-c.h"

static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* ------------------------------------------------------------------ messages */

/* An AgentMsg carrying a Hello whose pid is `seq` and exe is `exelen` bytes. */
typedef struct hello_s {
    Stackwatch__AgentMsg msg;
    Stackwatch__Hello hello;
    char *argv[2];
    char *exe;
} hello_t;

static void hello_make(hello_t *h, uint32_t seq, size_t exelen)
{
    memset(h, 0, sizeof *h);
    stackwatch__agent_msg__init(&h->msg);
    stackwatch__hello__init(&h->hello);
    h->exe = malloc(exelen + 1);
    assert_non_null(h->exe);
    for (size_t i = 0; i < exelen; i++)
        h->exe[i] = (char)('a' + (seq + i) % 26);
    h->exe[exelen] = '\0';
    h->argv[0] = "prog";
    h->argv[1] = "--flag";
    h->hello.version = PROTO_VERSION;
    h->hello.pid = seq;
    h->hello.ppid = 1;
    h->hello.exe = h->exe;
    h->hello.argv = h->argv;
    h->hello.n_argv = 2;
    h->hello.instance = 0x1122334455667788ull ^ seq;
    h->hello.sample = "all";
    h->msg.msg_case = STACKWATCH__AGENT_MSG__MSG_HELLO;
    h->msg.hello = &h->hello;
}

static void hello_done(hello_t *h)
{
    free(h->exe);
}

/* Checks that payload decodes to the Hello hello_make(seq, exelen) built. */
static void check_hello(const uint8_t *payload, uint32_t len, uint32_t seq, size_t exelen)
{
    Stackwatch__AgentMsg *m = stackwatch__agent_msg__unpack(NULL, len, payload);
    assert_non_null(m);
    assert_int_equal(m->msg_case, STACKWATCH__AGENT_MSG__MSG_HELLO);
    assert_int_equal(m->hello->pid, seq);
    assert_int_equal(m->hello->version, PROTO_VERSION);
    assert_int_equal(m->hello->instance, 0x1122334455667788ull ^ seq);
    assert_int_equal(strlen(m->hello->exe), exelen);
    if (exelen)
        assert_int_equal(m->hello->exe[0], 'a' + seq % 26);
    assert_int_equal(m->hello->n_argv, 2);
    assert_string_equal(m->hello->argv[1], "--flag");
    assert_string_equal(m->hello->sample, "all");
    stackwatch__agent_msg__free_unpacked(m, NULL);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ------------------------------------------------------------------ encode */

static void test_encode_and_size(void **state)
{
    (void)state;
    hello_t h;
    hello_make(&h, 7, 300);
    size_t packed = protobuf_c_message_get_packed_size(&h.msg.base);
    size_t fs = frame_size(&h.msg.base);
    assert_int_equal(fs, packed + FRAME_HDR);

    uint8_t *buf = malloc(fs + 16);
    assert_non_null(buf);
    memset(buf, 0xee, fs + 16);
    assert_int_equal(frame_encode(&h.msg.base, buf, fs, FRAME_MAX_AGENT), fs);
    assert_int_equal(le32(buf), packed);
    assert_int_equal(buf[fs], 0xee); /* nothing written past the frame */
    check_hello(buf + FRAME_HDR, (uint32_t)packed, 7, 300);

    /* One byte short of room, or a payload above max: nothing encoded. */
    assert_int_equal(frame_encode(&h.msg.base, buf, fs - 1, FRAME_MAX_AGENT), 0);
    assert_int_equal(frame_encode(&h.msg.base, buf, fs, (uint32_t)packed - 1), 0);
    assert_int_equal(frame_encode(&h.msg.base, buf, fs, (uint32_t)packed), fs);
    assert_int_equal(frame_encode(&h.msg.base, buf, 0, FRAME_MAX_AGENT), 0);
    free(buf);
    hello_done(&h);
}

static void test_encode_empty_message(void **state)
{
    (void)state;
    Stackwatch__AgentMsg m = STACKWATCH__AGENT_MSG__INIT;
    uint8_t buf[8];
    assert_int_equal(frame_size(&m.base), FRAME_HDR);
    assert_int_equal(frame_encode(&m.base, buf, sizeof buf, 0), FRAME_HDR);
    assert_int_equal(le32(buf), 0);
}

/* ------------------------------------------------------------------ reader helpers */

/* Writes n bytes into rd through space/commit, at most `chunk` per commit. */
static void feed(frame_rd_t *rd, const uint8_t *p, size_t n, size_t chunk)
{
    while (n) {
        size_t avail = 0;
        uint8_t *dst = frame_rd_space(rd, &avail);
        assert_non_null(dst);
        assert_true(avail > 0);
        size_t k = n < avail ? n : avail;
        if (k > chunk)
            k = chunk;
        memcpy(dst, p, k);
        frame_rd_commit(rd, k);
        p += k;
        n -= k;
    }
}

/* A stream of `n` Hello frames with varied sizes; lens[i] is frame i's exe length. */
static uint8_t *make_stream(uint32_t n, size_t *lens, size_t *total)
{
    size_t cap = 0;
    for (uint32_t i = 0; i < n; i++) {
        lens[i] = (i * 37) % 500 + (i % 10 == 9 ? 20000 : 0);
        cap += lens[i] + 128;
    }
    uint8_t *s = malloc(cap);
    assert_non_null(s);
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        hello_t h;
        hello_make(&h, i, lens[i]);
        size_t w = frame_encode(&h.msg.base, s + off, cap - off, FRAME_MAX_AGENT);
        assert_true(w > 0);
        off += w;
        hello_done(&h);
    }
    *total = off;
    return s;
}

/* Takes every complete frame; checks them against the stream's sequence. */
static void take_frames(frame_rd_t *rd, uint32_t *next, const size_t *lens)
{
    const uint8_t *payload;
    uint32_t len;
    int rc;
    while ((rc = frame_rd_next(rd, &payload, &len)) == 1) {
        check_hello(payload, len, *next, lens[*next]);
        (*next)++;
    }
    assert_int_equal(rc, 0);
}

/* ------------------------------------------------------------------ reader */

static void test_rd_one_byte_at_a_time(void **state)
{
    (void)state;
    enum { N = 12 };
    size_t lens[N], total;
    uint8_t *s = make_stream(N, lens, &total);
    frame_rd_t rd;
    assert_int_equal(frame_rd_init(&rd, 0, FRAME_MAX_AGENT), 0);
    uint32_t next = 0;
    for (size_t i = 0; i < total; i++) {
        feed(&rd, s + i, 1, 1);
        take_frames(&rd, &next, lens);
    }
    assert_int_equal(next, N);
    assert_int_equal(frame_rd_pending(&rd), 0);
    frame_rd_free(&rd);
    free(s);
}

static void test_rd_random_chunks(void **state)
{
    (void)state;
    enum { N = 300 };
    size_t lens[N], total;
    uint8_t *s = make_stream(N, lens, &total);
    rng_state = 0x5eed;
    for (int round = 0; round < 4; round++) {
        frame_rd_t rd;
        assert_int_equal(frame_rd_init(&rd, round * 1000, FRAME_MAX_AGENT), 0);
        uint32_t next = 0;
        size_t off = 0;
        while (off < total) {
            size_t k = rng() % (round == 3 ? 70000 : 3000) + 1;
            if (k > total - off)
                k = total - off;
            feed(&rd, s + off, k, k);
            off += k;
            assert_int_equal(frame_rd_pending(&rd) <= off, 1);
            take_frames(&rd, &next, lens);
        }
        assert_int_equal(next, N);
        assert_int_equal(frame_rd_pending(&rd), 0);
        frame_rd_free(&rd);
    }
    free(s);
}

/* Everything arrives before anyone reads: the buffer grows to hold it all. */
static void test_rd_many_frames_one_chunk(void **state)
{
    (void)state;
    enum { N = 50 };
    size_t lens[N], total;
    uint8_t *s = make_stream(N, lens, &total);
    frame_rd_t rd;
    assert_int_equal(frame_rd_init(&rd, 64, FRAME_MAX_AGENT), 0);
    feed(&rd, s, total, total);
    assert_int_equal(frame_rd_pending(&rd), total);
    uint32_t next = 0;
    take_frames(&rd, &next, lens);
    assert_int_equal(next, N);
    assert_int_equal(frame_rd_pending(&rd), 0);
    frame_rd_free(&rd);

    /* Three small frames and half of a fourth in one read. */
    assert_int_equal(frame_rd_init(&rd, 64, FRAME_MAX_AGENT), 0);
    size_t upto = 0;
    const uint8_t *p = s;
    for (int i = 0; i < 3; i++)
        upto += FRAME_HDR + le32(p + upto);
    size_t fourth = FRAME_HDR + le32(p + upto);
    feed(&rd, s, upto + fourth / 2, SIZE_MAX);
    next = 0;
    take_frames(&rd, &next, lens);
    assert_int_equal(next, 3);
    assert_int_equal(frame_rd_pending(&rd), fourth / 2);
    feed(&rd, s + upto + fourth / 2, fourth - fourth / 2, SIZE_MAX);
    take_frames(&rd, &next, lens);
    assert_int_equal(next, 4);
    frame_rd_free(&rd);
    free(s);
}

static void test_rd_zero_length_frame(void **state)
{
    (void)state;
    frame_rd_t rd;
    assert_int_equal(frame_rd_init(&rd, 0, 100), 0);
    uint8_t in[] = { 0, 0, 0, 0, 3, 0, 0, 0, 'a', 'b', 'c', 0, 0, 0, 0 };
    const uint8_t *payload;
    uint32_t len = 99;
    feed(&rd, in, 3, 3);
    assert_int_equal(frame_rd_next(&rd, &payload, &len), 0);
    feed(&rd, in + 3, sizeof in - 3, SIZE_MAX);
    assert_int_equal(frame_rd_next(&rd, &payload, &len), 1);
    assert_int_equal(len, 0);
    assert_int_equal(frame_rd_next(&rd, &payload, &len), 1);
    assert_int_equal(len, 3);
    assert_memory_equal(payload, "abc", 3);
    assert_int_equal(frame_rd_next(&rd, &payload, &len), 1);
    assert_int_equal(len, 0);
    assert_int_equal(frame_rd_next(&rd, &payload, &len), 0);
    assert_int_equal(frame_rd_pending(&rd), 0);
    frame_rd_free(&rd);
}

static void test_rd_oversized_prefix(void **state)
{
    (void)state;
    frame_rd_t rd;
    const uint8_t *payload;
    uint32_t len;
    assert_int_equal(frame_rd_init(&rd, 0, 1000), 0);
    /* Exactly max is accepted. */
    uint8_t *ok = calloc(1, FRAME_HDR + 1000);
    assert_non_null(ok);
    ok[0] = 1000 & 0xff;
    ok[1] = 1000 >> 8;
    ok[FRAME_HDR + 999] = 0x5a;
    feed(&rd, ok, FRAME_HDR + 1000, 333);
    assert_int_equal(frame_rd_next(&rd, &payload, &len), 1);
    assert_int_equal(len, 1000);
    assert_int_equal(payload[999], 0x5a);
    free(ok);

    /* max + 1: an error, and it stays one. */
    uint8_t big[] = { 0xe9, 0x03, 0, 0, 1, 2, 3 };
    feed(&rd, big, sizeof big, SIZE_MAX);
    assert_int_equal(frame_rd_next(&rd, &payload, &len), -EMSGSIZE);
    assert_int_equal(frame_rd_next(&rd, &payload, &len), -EMSGSIZE);
    frame_rd_free(&rd);

    /* A 4 GiB prefix is refused before its payload arrives, and the reader
     * does not grow toward it. */
    assert_int_equal(frame_rd_init(&rd, 0, FRAME_MAX_AGENT), 0);
    uint8_t huge[] = { 0xff, 0xff, 0xff, 0xff };
    feed(&rd, huge, 4, 1);
    assert_int_equal(frame_rd_next(&rd, &payload, &len), -EMSGSIZE);
    size_t avail;
    assert_non_null(frame_rd_space(&rd, &avail));
    assert_true(rd.cap < (1u << 20));
    frame_rd_free(&rd);
}

/* A frame announced larger than the buffer: the reader grows to hold it,
 * as its bytes arrive (a prefix alone does not make it allocate). */
static void test_rd_grows_for_pending_frame(void **state)
{
    (void)state;
    enum { BIG = 200000 };
    uint8_t *f = malloc(FRAME_HDR + BIG);
    assert_non_null(f);
    f[0] = BIG & 0xff;
    f[1] = (BIG >> 8) & 0xff;
    f[2] = (BIG >> 16) & 0xff;
    f[3] = 0;
    for (size_t i = 0; i < BIG; i++)
        f[FRAME_HDR + i] = (uint8_t)(i * 7);
    frame_rd_t rd;
    assert_int_equal(frame_rd_init(&rd, 64, FRAME_MAX_AGENT), 0);
    feed(&rd, f, 10, SIZE_MAX);
    size_t avail;
    assert_non_null(frame_rd_space(&rd, &avail));
    assert_true(avail > 0);
    assert_true(rd.cap <= 8192);
    feed(&rd, f + 10, FRAME_HDR + BIG - 10, 4096);
    assert_true(rd.cap >= FRAME_HDR + BIG && rd.cap <= FRAME_HDR + BIG + 8192);
    const uint8_t *payload;
    uint32_t len;
    assert_int_equal(frame_rd_next(&rd, &payload, &len), 1);
    assert_int_equal(len, BIG);
    assert_memory_equal(payload, f + FRAME_HDR, BIG);
    frame_rd_free(&rd);
    free(f);
}

/* A peer that announces the largest frame and sends a little of it holds a
 * buffer the size of what it sent, not of what it announced. */
static void test_rd_lying_prefix_stays_small(void **state)
{
    (void)state;
    frame_rd_t rd;
    assert_int_equal(frame_rd_init(&rd, 4096, FRAME_MAX_AGENT), 0);
    uint8_t hdr[FRAME_HDR] = { (uint8_t)FRAME_MAX_AGENT, (uint8_t)(FRAME_MAX_AGENT >> 8),
                               (uint8_t)(FRAME_MAX_AGENT >> 16), (uint8_t)(FRAME_MAX_AGENT >> 24) };
    feed(&rd, hdr, sizeof hdr, SIZE_MAX);
    static uint8_t chunk[100000];
    feed(&rd, chunk, sizeof chunk, 1000);
    const uint8_t *payload;
    uint32_t len;
    assert_int_equal(frame_rd_next(&rd, &payload, &len), 0);
    assert_true(rd.cap <= 2 * (sizeof chunk + FRAME_HDR) + 8192);
    frame_rd_free(&rd);
}

static uint8_t *raw_frame(uint32_t n, uint8_t fill)
{
    uint8_t *f = malloc(FRAME_HDR + (size_t)n);
    assert_non_null(f);
    f[0] = (uint8_t)n;
    f[1] = (uint8_t)(n >> 8);
    f[2] = (uint8_t)(n >> 16);
    f[3] = (uint8_t)(n >> 24);
    memset(f + FRAME_HDR, fill, n);
    return f;
}

/* After a big frame, a connection that goes back to small frames must give
 * the memory back (rd_compact: "shrinks a buffer that a large frame grew
 * once it is mostly idle, so per-connection memory stays bounded"). Here
 * every read ends on a frame boundary, as for an idle or lightly used
 * agent connection. */
static void test_rd_shrinks_after_big_frame(void **state)
{
    (void)state;
    enum { BIG = 1u << 20, SMALL = 100 };
    uint8_t *big = raw_frame(BIG, 0xab), *small = raw_frame(SMALL, 0xcd);
    frame_rd_t rd;
    const uint8_t *payload;
    uint32_t len;
    assert_int_equal(frame_rd_init(&rd, 64, FRAME_MAX_AGENT), 0);
    feed(&rd, big, FRAME_HDR + BIG, 65536);
    assert_int_equal(frame_rd_next(&rd, &payload, &len), 1);
    assert_int_equal(len, BIG);
    assert_true(rd.cap >= FRAME_HDR + BIG);
    for (int i = 0; i < 100; i++) {
        feed(&rd, small, FRAME_HDR + SMALL, SIZE_MAX);
        assert_int_equal(frame_rd_next(&rd, &payload, &len), 1);
        assert_int_equal(len, SMALL);
        assert_int_equal(payload[SMALL - 1], 0xcd);
    }
    size_t cap = rd.cap;
    frame_rd_free(&rd);
    free(big);
    free(small);
    assert_true(cap <= (256u << 10));
}

/* Same, under a steady stream of small frames read in random chunks, so
 * most reads end mid-frame (frames are taken after every read). Several
 * seeds: giving memory back must not depend on where reads happen to end. */
static void test_rd_shrinks_under_streaming(void **state)
{
    (void)state;
    enum { BIG = 1u << 20, SMALL = 100, NSMALL = 20000 };
    uint8_t *big = raw_frame(BIG, 0xab);
    size_t total = (size_t)NSMALL * (FRAME_HDR + SMALL);
    uint8_t *stream = malloc(total);
    assert_non_null(stream);
    for (size_t i = 0; i < NSMALL; i++) {
        uint8_t *f = raw_frame(SMALL, (uint8_t)i);
        memcpy(stream + i * (FRAME_HDR + SMALL), f, FRAME_HDR + SMALL);
        free(f);
    }
    int kept_big = 0;
    for (uint64_t seed = 1; seed <= 8; seed++) {
        frame_rd_t rd;
        const uint8_t *payload;
        uint32_t len;
        assert_int_equal(frame_rd_init(&rd, 64, FRAME_MAX_AGENT), 0);
        feed(&rd, big, FRAME_HDR + BIG, 65536);
        assert_int_equal(frame_rd_next(&rd, &payload, &len), 1);
        assert_int_equal(len, BIG);
        size_t off = 0;
        uint32_t got = 0;
        rng_state = seed;
        while (off < total) {
            size_t k = rng() % 4000 + 1;
            if (k > total - off)
                k = total - off;
            feed(&rd, stream + off, k, k);
            off += k;
            while (frame_rd_next(&rd, &payload, &len) == 1) {
                assert_int_equal(len, SMALL);
                assert_int_equal(payload[0], (uint8_t)got);
                got++;
            }
        }
        assert_int_equal(got, NSMALL);
        if (rd.cap > (256u << 10))
            kept_big++;
        frame_rd_free(&rd);
    }
    free(big);
    free(stream);
    assert_int_equal(kept_big, 0);
}

/* ------------------------------------------------------------------ blocking I/O */

static void test_write_all_read_one(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    hello_t h;
    hello_make(&h, 42, 1000);
    size_t fs = frame_size(&h.msg.base);
    uint8_t *buf = malloc(fs);
    assert_non_null(buf);
    assert_int_equal(frame_encode(&h.msg.base, buf, fs, FRAME_MAX_AGENT), fs);
    assert_int_equal(frame_write_all(sv[0], buf, fs), 0);
    uint8_t zero[FRAME_HDR] = { 0 };
    assert_int_equal(frame_write_all(sv[0], zero, sizeof zero), 0);
    uint8_t *p = NULL;
    uint32_t len = 0;
    assert_int_equal(frame_read_one(sv[1], FRAME_MAX_AGENT, &p, &len), 0);
    assert_int_equal(len, fs - FRAME_HDR);
    check_hello(p, len, 42, 1000);
    free(p);
    p = NULL;
    assert_int_equal(frame_read_one(sv[1], FRAME_MAX_AGENT, &p, &len), 0);
    assert_int_equal(len, 0);
    assert_non_null(p);
    free(p);

    /* Too large for max: refused. */
    assert_int_equal(frame_write_all(sv[0], buf, fs), 0);
    assert_int_equal(frame_read_one(sv[1], (uint32_t)(fs - FRAME_HDR - 1), &p, &len), -EMSGSIZE);

    /* EOF in the middle of a frame, and before a header. */
    int sv2[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv2), 0);
    assert_int_equal(frame_write_all(sv2[0], buf, fs / 2), 0);
    close(sv2[0]);
    assert_int_equal(frame_read_one(sv2[1], FRAME_MAX_AGENT, &p, &len), -EPIPE);
    assert_int_equal(frame_read_one(sv2[1], FRAME_MAX_AGENT, &p, &len), -EPIPE);
    close(sv2[1]);

    /* Writing to a closed peer fails with -EPIPE and no SIGPIPE. */
    close(sv[1]);
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0; i++)
        rc = frame_write_all(sv[0], buf, fs);
    assert_int_equal(rc, -EPIPE);
    close(sv[0]);
    free(buf);
    hello_done(&h);
}

/* Not a socket: write_all falls back to write(2). */
static void test_write_all_to_pipe(void **state)
{
    (void)state;
    int pf[2];
    assert_int_equal(pipe(pf), 0);
    uint8_t fr[] = { 2, 0, 0, 0, 'h', 'i' };
    assert_int_equal(frame_write_all(pf[1], fr, sizeof fr), 0);
    uint8_t *p = NULL;
    uint32_t len = 0;
    assert_int_equal(frame_read_one(pf[0], 10, &p, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(p, "hi", 2);
    free(p);
    close(pf[0]);
    close(pf[1]);
}

int main(void)
{
    /* Blocking reads below: a broken EOF check must fail, not hang. */
    alarm(30);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_and_size),
        cmocka_unit_test(test_encode_empty_message),
        cmocka_unit_test(test_rd_one_byte_at_a_time),
        cmocka_unit_test(test_rd_random_chunks),
        cmocka_unit_test(test_rd_many_frames_one_chunk),
        cmocka_unit_test(test_rd_zero_length_frame),
        cmocka_unit_test(test_rd_oversized_prefix),
        cmocka_unit_test(test_rd_grows_for_pending_frame),
        cmocka_unit_test(test_rd_lying_prefix_stays_small),
        cmocka_unit_test(test_rd_shrinks_after_big_frame),
        cmocka_unit_test(test_rd_shrinks_under_streaming),
        cmocka_unit_test(test_write_all_read_one),
        cmocka_unit_test(test_write_all_to_pipe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
