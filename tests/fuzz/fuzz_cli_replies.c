/* libFuzzer target: whatever collectord replies, stackctl neither crashes, leaks nor writes broken output. */
/*
 * Input layout:
 *
 *   byte 0   bits 0-1: what was asked (CLI_WANT_* - 1: leaks, clients, rules,
 *            mark); bits 2-4: the format (text, json, folded, pprof, html);
 *            bit 5: --all-frames (CLI_ALL_FRAMES)
 *   rest     the byte stream collectord sends back on the control socket
 *
 * stackctl's real path runs: the bytes go through a pipe into
 * frame_read_one() with FRAME_MAX_CONTROL (as cli_call() reads a reply), the
 * payload is decoded with stackwatch__reply__unpack, the error branch prints
 * what main.c's call() prints, and cli_render() (collector/stackctl/render.c, what
 * stackctl's main calls) checks the body against the request and writes it
 * in the format into memory.
 *
 * Output checks: JSON is one valid JSON value in valid UTF-8 (a strict
 * parser below); every folded line ends in " <digits>"; text has no control
 * character but the line feed (a name must not drive the terminal); the
 * HTML page has as many "</script" and "<!--" as the page itself writes (a
 * hostile name must not end the data block or open a comment); pprof output
 * starts with the gzip magic.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "collector/stackctl/py.h"
#include "collector/stackctl/render.h"
#include "frame.h"
#include "proto/stackwatch.pb-c.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const formats[8] = { "text", "json", "folded", "pprof", "html",
                                        "text", "json", "bogus" };
static size_t html_scripts = (size_t)-1, html_comments = (size_t)-1;
static FILE *err_sink;
static FILE *show; /* STACKWATCH_FUZZ_SHOW=1: the rendered output on the real stderr */

/* On the real stderr (stderr itself points at /dev/null). */
static FILE *real_err;
#define FINDING(...)                                   \
    do {                                               \
        fprintf(real_err, "FINDING: " __VA_ARGS__);    \
        fflush(real_err);                              \
        __builtin_trap();                              \
    } while (0)

/* ---------------------------------------------------------------- a strict JSON checker */

typedef struct jp_s {
    const unsigned char *p, *end;
    int depth;
} jp_t;

static void ws(jp_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r'))
        j->p++;
}

static int lit(jp_t *j, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, s, n) != 0)
        return 0;
    j->p += n;
    return 1;
}

static int utf8_ok(jp_t *j)
{
    unsigned char c = *j->p;
    int n = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (!n || j->end - j->p < n)
        return 0;
    uint32_t cp = c & (n == 2 ? 0x1f : n == 3 ? 0x0f : 0x07);
    for (int i = 1; i < n; i++) {
        if ((j->p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (j->p[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    j->p += n;
    return 1;
}

static int jstring(jp_t *j)
{
    if (j->p >= j->end || *j->p != '"')
        return 0;
    j->p++;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = *j->p;
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            j->p++;
            if (j->p >= j->end)
                return 0;
            if (*j->p == 'u') {
                if (j->end - j->p < 5)
                    return 0;
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", j->p[i]) || !j->p[i])
                        return 0;
                j->p += 5;
            } else if (strchr("\"\\/bfnrt", *j->p) && *j->p) {
                j->p++;
            } else {
                return 0;
            }
        } else if (c < 0x80) {
            j->p++;
        } else if (!utf8_ok(j)) {
            return 0;
        }
    }
    if (j->p >= j->end)
        return 0;
    j->p++;
    return 1;
}

static int jnumber(jp_t *j)
{
    const unsigned char *s = j->p;
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return 0;
    if (*j->p == '0')
        j->p++;
    else
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return 0;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return 0;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    return j->p > s;
}

static int jvalue(jp_t *j)
{
    if (++j->depth > 64)
        return 0;
    ws(j);
    int ok = 0;
    if (j->p >= j->end)
        ok = 0;
    else if (*j->p == '{' || *j->p == '[') {
        unsigned char close = *j->p == '{' ? '}' : ']';
        int obj = *j->p == '{';
        j->p++;
        ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            ok = 1;
        } else {
            for (;;) {
                ws(j);
                if (obj) {
                    if (!jstring(j))
                        break;
                    ws(j);
                    if (j->p >= j->end || *j->p != ':')
                        break;
                    j->p++;
                }
                if (!jvalue(j))
                    break;
                ws(j);
                if (j->p < j->end && *j->p == ',') {
                    j->p++;
                    continue;
                }
                if (j->p < j->end && *j->p == close) {
                    j->p++;
                    ok = 1;
                }
                break;
            }
        }
    } else if (*j->p == '"') {
        ok = jstring(j);
    } else if (lit(j, "true") || lit(j, "false") || lit(j, "null")) {
        ok = 1;
    } else {
        ok = jnumber(j);
    }
    j->depth--;
    return ok;
}

static void check_json(const char *buf, size_t n)
{
    jp_t j = { (const unsigned char *)buf, (const unsigned char *)buf + n, 0 };
    if (!jvalue(&j))
        FINDING("invalid JSON near byte %zu\n", (size_t)(j.p - (const unsigned char *)buf));
    ws(&j);
    if (j.p != j.end)
        FINDING("bytes after the JSON value at %zu\n", (size_t)(j.p - (const unsigned char *)buf));
}

static void check_folded(const char *buf, size_t n)
{
    const char *p = buf, *end = buf + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            FINDING("folded output does not end in a newline\n");
        const char *q = nl;
        while (q > p && q[-1] >= '0' && q[-1] <= '9')
            q--;
        if (q == nl || q == p || q[-1] != ' ')
            FINDING("folded line without a trailing count: %.*s\n", (int)(nl - p), p);
        p = nl + 1;
    }
}

static size_t count_ci(const char *buf, size_t n, const char *needle)
{
    size_t k = strlen(needle), c = 0;
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(buf + i, needle, k) == 0)
            c++;
    return c;
}

/* Renders rep into memory; returns the output (free it) and its size. */
static char *render(Stackwatch__Reply *rep, int want, const char *format, unsigned flags,
                    size_t *n, int *rc)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, n);
    if (!f)
        abort();
    *rc = cli_render(f, rep, want, format, flags);
    fclose(f);
    return buf;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    real_err = stderr;
    err_sink = fopen("/dev/null", "w");
    if (getenv("STACKWATCH_FUZZ_SHOW"))
        show = stderr;
    if (!getenv("STACKWATCH_FUZZ_LOG") && err_sink)
        stderr = err_sink; /* the renderers' own messages; sanitizers write to fd 2 */
    /* What the HTML page writes by itself: the baseline for its checks. */
    Stackwatch__LeakReport lr = STACKWATCH__LEAK_REPORT__INIT;
    Stackwatch__Reply rep = STACKWATCH__REPLY__INIT;
    rep.body_case = STACKWATCH__REPLY__BODY_LEAKS;
    rep.leaks = &lr;
    size_t n;
    int rc;
    char *out = render(&rep, CLI_WANT_LEAKS, "html", 0, &n, &rc);
    html_scripts = count_ci(out, n, "</script");
    html_comments = count_ci(out, n, "<!--");
    free(out);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int want = (data[0] & 3) + 1;
    const char *format = formats[(data[0] >> 2) & 7];
    unsigned flags = data[0] & 0x20 ? CLI_ALL_FRAMES : 0;
    data++;
    size--;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return 0;
    fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(p[1], data + off, size - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(p[1]);
    uint8_t *payload = NULL;
    uint32_t len = 0;
    int rc = frame_read_one(p[0], FRAME_MAX_CONTROL, &payload, &len);
    close(p[0]);
    if (rc < 0)
        return 0;
    Stackwatch__Reply *rep = stackwatch__reply__unpack(NULL, len, payload);
    free(payload);
    if (!rep)
        return 0;
    if (rep->error) {
        /* main.c's call(): the message, else the errno's text. */
        fprintf(err_sink, "stackctl: collectord: %s\n",
                rep->message && *rep->message ? rep->message : strerror(-rep->error));
        stackwatch__reply__free_unpacked(rep, NULL);
        return 0;
    }
    size_t n = 0;
    char *out = render(rep, want, format, flags, &n, &rc);
    if (show)
        fprintf(show, "== rc %d, %zu bytes\n%.*s\n", rc, n, (int)n, out);
    if (rc == 0 && want == CLI_WANT_LEAKS) {
        if (!strcmp(format, "json"))
            check_json(out, n);
        else if (!strcmp(format, "folded"))
            check_folded(out, n);
        else if (!strcmp(format, "pprof") && (n < 2 || (uint8_t)out[0] != 0x1f ||
                                              (uint8_t)out[1] != 0x8b))
            FINDING("pprof output is not gzip\n");
        else if (!strcmp(format, "html") && (count_ci(out, n, "</script") != html_scripts ||
                                             count_ci(out, n, "<!--") != html_comments))
            FINDING("HTML: %zu '</script' and %zu '<!--' (the page writes %zu and %zu)\n",
                    count_ci(out, n, "</script"), count_ci(out, n, "<!--"), html_scripts,
                    html_comments);
    } else if (rc == 0 && (want == CLI_WANT_CLIENTS || want == CLI_WANT_RULES) &&
               !strcmp(format, "json")) {
        check_json(out, n);
    }
    if (rc == 0 && (!strcmp(format, "text") || want == CLI_WANT_MARK))
        for (size_t i = 0; i < n; i++)
            if (((unsigned char)out[i] < 0x20 && out[i] != '\n') || out[i] == 0x7f)
                FINDING("text output has control character 0x%02x at byte %zu\n",
                        (unsigned char)out[i], i);
    free(out);
    stackwatch__reply__free_unpacked(rep, NULL);
    return 0;
}
