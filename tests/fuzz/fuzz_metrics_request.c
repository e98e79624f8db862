/* libFuzzer target: whatever a scraper sends, the metrics request parser and the label escaper stay in bounds and keep their promises. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "collector/collectord/metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    metrics_req_t r;
    /* The parser sees exactly size bytes (no NUL), as from recv. */
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    int rc = metrics_parse_request(copy, size, &r);
    if (rc < -1 || rc > 1)
        __builtin_trap();
    if (rc == 1 && (r.method < METRICS_GET || r.method > METRICS_OTHER))
        __builtin_trap();
    /* A complete head stays complete with more bytes after it. */
    if (rc == 1 && size < 4096) {
        char *more = malloc(size + 7);
        if (more) {
            memcpy(more, copy, size);
            memcpy(more + size, "GET / \n", 7);
            metrics_req_t r2;
            if (metrics_parse_request(more, size + 7, &r2) != 1 || r2.method != r.method ||
                r2.path_ok != r.path_ok)
                __builtin_trap();
            free(more);
        }
    }
    free(copy);

    /* Label values: escaped, valid UTF-8, bounded. */
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    mbuf_t b = { 0 };
    metrics_label(&b, s);
    if (b.len > METRICS_LABEL_MAX * 2)
        __builtin_trap();
    for (size_t i = 0; i < b.len; i++) {
        if (b.p[i] == '\n')
            __builtin_trap();
        if (b.p[i] == '\\') {
            if (i + 1 >= b.len || (b.p[i + 1] != '\\' && b.p[i + 1] != '"' && b.p[i + 1] != 'n'))
                __builtin_trap();
            i++;
        } else if (b.p[i] == '"') {
            __builtin_trap();
        }
    }
    mbuf_free(&b);
    free(s);
    return 0;
}
