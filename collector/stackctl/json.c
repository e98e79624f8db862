/* A small streaming JSON writer (stackctl's --json output). */
#include "json.h"

#include <assert.h>
#include <inttypes.h>
#include <string.h>

void json_init(json_t *j, FILE *f, int pretty)
{
    memset(j, 0, sizeof *j);
    j->f = f;
    j->pretty = pretty;
}

/* Length of a valid UTF-8 sequence at s, or 0 if it is not one. */
static int utf8_len(const unsigned char *s)
{
    unsigned char c = s[0];
    int n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        n = 2;
        cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3;
        cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void json_write_string(FILE *f, const char *s)
{
    fputc('"', f);
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
            p++;
        } else if (c == '\n') {
            fputs("\\n", f);
            p++;
        } else if (c == '\t') {
            fputs("\\t", f);
            p++;
        } else if (c == '\r') {
            fputs("\\r", f);
            p++;
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
            p++;
        } else if (c < 0x80) {
            fputc(c, f);
            p++;
        } else {
            int n = utf8_len(p);
            if (n == 0) {
                fputs("\\ufffd", f);
                p++;
            } else {
                fwrite(p, 1, (size_t)n, f);
                p += n;
            }
        }
    }
    fputc('"', f);
}

static void indent(json_t *j)
{
    if (!j->pretty)
        return;
    fputc('\n', j->f);
    for (int i = 0; i < j->depth; i++)
        fputs("  ", j->f);
}

static void member(json_t *j, const char *key)
{
    if (j->depth > 0) {
        if (j->count[j->depth - 1]++)
            fputc(',', j->f);
        indent(j);
    }
    if (key) {
        json_write_string(j->f, key);
        fputs(j->pretty ? ": " : ":", j->f);
    }
}

static void open_c(json_t *j, const char *key, char c)
{
    member(j, key);
    fputc(c, j->f);
    assert(j->depth < JSON_MAX_DEPTH && "JSON nesting deeper than JSON_MAX_DEPTH");
    if (j->depth < JSON_MAX_DEPTH) {
        j->count[j->depth] = 0;
        j->depth++;
    }
}

static void close_c(json_t *j, char c)
{
    int had = j->depth > 0 && j->count[j->depth - 1] > 0;
    if (j->depth > 0)
        j->depth--;
    if (had)
        indent(j);
    fputc(c, j->f);
    if (j->depth == 0)
        fputc('\n', j->f);
}

void json_obj_begin(json_t *j, const char *key) { open_c(j, key, '{'); }
void json_obj_end(json_t *j) { close_c(j, '}'); }
void json_arr_begin(json_t *j, const char *key) { open_c(j, key, '['); }
void json_arr_end(json_t *j) { close_c(j, ']'); }

void json_str(json_t *j, const char *key, const char *v)
{
    member(j, key);
    if (v)
        json_write_string(j->f, v);
    else
        fputs("null", j->f);
}

void json_u64(json_t *j, const char *key, uint64_t v)
{
    member(j, key);
    fprintf(j->f, "%" PRIu64, v);
}

void json_i64(json_t *j, const char *key, int64_t v)
{
    member(j, key);
    fprintf(j->f, "%" PRId64, v);
}

void json_bool(json_t *j, const char *key, int v)
{
    member(j, key);
    fputs(v ? "true" : "false", j->f);
}

void json_null(json_t *j, const char *key)
{
    member(j, key);
    fputs("null", j->f);
}

void json_hex(json_t *j, const char *key, uint64_t v, int width)
{
    member(j, key);
    fprintf(j->f, "\"0x%0*" PRIx64 "\"", width, v);
}

void json_double(json_t *j, const char *key, double v)
{
    member(j, key);
    if (v != v || v > 1e300 || v < -1e300)
        fputs("null", j->f);
    else
        fprintf(j->f, "%.6g", v);
}
