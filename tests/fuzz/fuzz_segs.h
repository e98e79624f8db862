/* The fuzz targets' input split: byte streams of several connections, separated by SEP. */
#ifndef STACKWATCH_FUZZ_SEGS_H
#define STACKWATCH_FUZZ_SEGS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SEP "\xffSW\xff"
#define SEP_LEN 4

typedef struct fuzz_seg_s {
    const uint8_t *p;
    size_t n;
} fuzz_seg_t;

/* Splits data at SEP into at most max segments (max >= 1; separators past
 * the last allowed split are data). Returns the number of segments, at
 * least 1 (an empty input is one empty segment). */
static inline unsigned fuzz_split(const uint8_t *data, size_t size, fuzz_seg_t *seg,
                                  unsigned max)
{
    unsigned n = 0;
    size_t off = 0;
    for (;;) {
        const uint8_t *sep = n + 1 < max ? memmem(data + off, size - off, SEP, SEP_LEN) : NULL;
        size_t end = sep ? (size_t)(sep - data) : size;
        seg[n++] = (fuzz_seg_t){ data + off, end - off };
        if (!sep)
            return n;
        off = end + SEP_LEN;
    }
}

#endif
