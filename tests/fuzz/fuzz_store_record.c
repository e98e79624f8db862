/* libFuzzer target: a damaged or hostile store record is refused or decoded into what the reports can read, never a crash. */
/*
 * Byte 0 bit 0 set: the rest is taken as the payload and wrapped in a valid
 * header (length and CRC), so the protobuf decoding and the field checks are
 * reached; clear: the rest is a whole record file, header included.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "collector/collectord/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t *buf;
    size_t len;
    if (data[0] & 1) {
        len = size - 1 + STORE_HDR;
        buf = malloc(len);
        if (!buf)
            return 0;
        memcpy(buf, STORE_MAGIC, 8);
        uint32_t v = STORE_VERSION, n = (uint32_t)(size - 1);
        uint32_t crc = store_crc32(data + 1, size - 1);
        for (int i = 0; i < 4; i++) {
            buf[8 + i] = (uint8_t)(v >> (8 * i));
            buf[12 + i] = (uint8_t)(n >> (8 * i));
            buf[16 + i] = (uint8_t)(crc >> (8 * i));
        }
        memcpy(buf + STORE_HDR, data + 1, size - 1);
    } else {
        len = size - 1;
        buf = malloc(len ? len : 1);
        if (!buf)
            return 0;
        memcpy(buf, data + 1, len);
    }
    const char *why = NULL;
    Stackwatch__StoredProcess *sp = store_decode(buf, len, &why);
    if (!sp && !why)
        __builtin_trap();
    if (sp) {
        /* What the query path reads without further checks. */
        uint64_t sum = sp->client->pid + sp->client->live->bytes;
        for (size_t i = 0; i < sp->n_stacks; i++) {
            const Stackwatch__StackReport *s = sp->stacks[i];
            sum += s->may_leak->bytes + s->expired->bytes + s->free_expired->bytes +
                   s->alloc->bytes + s->free->bytes + s->live->bytes + s->exit_live->bytes +
                   s->uncertain->bytes + strlen(s->class_);
            for (size_t k = 0; k < s->n_python; k++)
                sum += s->python[k]->live->count + s->python[k]->may_leak->count;
        }
        /* Re-encoding what was accepted gives a record accepted again. */
        uint8_t *again = NULL;
        size_t alen = store_encode(sp, &again);
        if (alen) {
            Stackwatch__StoredProcess *sp2 = store_decode(again, alen, &why);
            if (!sp2 || sp2->n_stacks != sp->n_stacks)
                __builtin_trap();
            store_sp_free(sp2);
            free(again);
        }
        store_sp_free(sp);
        (void)sum;
    }
    free(buf);
    return 0;
}
