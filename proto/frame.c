/* Length-prefixed framing of protobuf-c messages, shared by all three programs. */
#include "frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

size_t frame_size(const ProtobufCMessage *msg)
{
    return FRAME_HDR + protobuf_c_message_get_packed_size(msg);
}

size_t frame_encode(const ProtobufCMessage *msg, uint8_t *buf, size_t cap, uint32_t max)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > max || n + FRAME_HDR > cap)
        return 0;
    put_le32(buf, (uint32_t)n);
    size_t w = protobuf_c_message_pack(msg, buf + FRAME_HDR);
    if (w != n)
        return 0;
    return n + FRAME_HDR;
}

int frame_rd_init(frame_rd_t *rd, size_t initial, uint32_t max)
{
    if (initial < 64)
        initial = 64;
    rd->buf = malloc(initial);
    if (!rd->buf)
        return -ENOMEM;
    rd->cap = initial;
    rd->start = rd->end = 0;
    rd->max = max;
    return 0;
}

void frame_rd_free(frame_rd_t *rd)
{
    free(rd->buf);
    rd->buf = NULL;
    rd->cap = rd->start = rd->end = 0;
}

size_t frame_rd_pending(const frame_rd_t *rd)
{
    return rd->end - rd->start;
}

/* Moves unconsumed bytes to the front; shrinks a buffer that a large frame
 * grew once it is mostly idle, so per-connection memory stays bounded. */
static void rd_compact(frame_rd_t *rd)
{
    size_t pending = rd->end - rd->start;
    if (rd->start > 0) {
        memmove(rd->buf, rd->buf + rd->start, pending);
        rd->start = 0;
        rd->end = pending;
    }
    if (rd->cap > (256u << 10) && pending < rd->cap / 8) {
        size_t ncap = pending < (64u << 10) ? (64u << 10) : pending * 2;
        uint8_t *nb = realloc(rd->buf, ncap);
        if (nb) {
            rd->buf = nb;
            rd->cap = ncap;
        }
    }
}

uint8_t *frame_rd_space(frame_rd_t *rd, size_t *avail)
{
    if (rd->start == rd->end) {
        rd->start = rd->end = 0;
        /* Idle after a big frame: give the memory back. */
        if (rd->cap > (256u << 10)) {
            uint8_t *nb = realloc(rd->buf, 64u << 10);
            if (nb) {
                rd->buf = nb;
                rd->cap = 64u << 10;
            }
        }
    }
    if (rd->cap - rd->end < 4096 || rd->start > rd->cap / 2)
        rd_compact(rd);
    /* A known pending frame larger than the buffer: grow to hold it whole. */
    size_t pending = rd->end - rd->start;
    size_t want = 0;
    if (pending >= FRAME_HDR) {
        uint32_t len = get_le32(rd->buf + rd->start);
        if (len <= rd->max)
            want = FRAME_HDR + (size_t)len;
    }
    if (want > rd->cap - rd->start) {
        rd_compact(rd);
        if (want > rd->cap && rd->cap - rd->end < 4096) {
            /* Grow with what arrives (doubling), never to what a length
             * prefix merely claims: a peer that announces a large frame and
             * sends little holds little. */
            size_t ncap = rd->cap * 2 < want ? rd->cap * 2 : want;
            uint8_t *nb = realloc(rd->buf, ncap);
            if (!nb) {
                *avail = 0;
                return NULL;
            }
            rd->buf = nb;
            rd->cap = ncap;
        }
    }
    if (rd->cap == rd->end) {
        /* Full of complete frames nobody took: grow modestly. */
        size_t ncap = rd->cap * 2;
        uint8_t *nb = realloc(rd->buf, ncap);
        if (!nb) {
            *avail = 0;
            return NULL;
        }
        rd->buf = nb;
        rd->cap = ncap;
    }
    *avail = rd->cap - rd->end;
    return rd->buf + rd->end;
}

void frame_rd_commit(frame_rd_t *rd, size_t n)
{
    rd->end += n;
}

int frame_rd_next(frame_rd_t *rd, const uint8_t **payload, uint32_t *len)
{
    size_t pending = rd->end - rd->start;
    if (pending < FRAME_HDR)
        return 0;
    uint32_t n = get_le32(rd->buf + rd->start);
    if (n > rd->max)
        return -EMSGSIZE;
    if (pending < FRAME_HDR + (size_t)n)
        return 0;
    *payload = rd->buf + rd->start + FRAME_HDR;
    *len = n;
    rd->start += FRAME_HDR + (size_t)n;
    return 1;
}

int frame_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EPIPE;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

int frame_read_one(int fd, uint32_t max, uint8_t **payload, uint32_t *len)
{
    uint8_t hdr[FRAME_HDR];
    int rc = read_full(fd, hdr, sizeof hdr);
    if (rc < 0)
        return rc;
    uint32_t n = get_le32(hdr);
    if (n > max)
        return -EMSGSIZE;
    /* The buffer grows with what arrives, not with what the prefix claims:
     * a peer that announces 256 MiB and sends nothing costs 64 KiB. */
    size_t cap = n < (64u << 10) ? (n ? n : 1) : (64u << 10), got = 0;
    uint8_t *p = malloc(cap);
    if (!p)
        return -ENOMEM;
    while (got < n) {
        if (got == cap) {
            size_t ncap = cap * 2 < n ? cap * 2 : n;
            uint8_t *np = realloc(p, ncap);
            if (!np) {
                free(p);
                return -ENOMEM;
            }
            p = np;
            cap = ncap;
        }
        size_t want = (n < cap ? n : cap) - got;
        rc = read_full(fd, p + got, want);
        if (rc < 0) {
            free(p);
            return rc;
        }
        got += want;
    }
    *payload = p;
    *len = n;
    return 0;
}
