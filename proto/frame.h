/* Length-prefixed framing of protobuf-c messages, shared by all three programs. */
#ifndef STACKWATCH_PROTO_FRAME_H
#define STACKWATCH_PROTO_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#define PROTO_VERSION 1

/* A frame is FRAME_HDR bytes of little-endian payload length, then the payload. */
#define FRAME_HDR 4
#define FRAME_MAX_AGENT (8u << 20)    /* agent -> collectord */
#define FRAME_MAX_COMMAND (1u << 20)  /* collectord -> agent */
#define FRAME_MAX_CONTROL (256u << 20) /* stackctl <-> collectord (large reports) */

/* Incremental reader: bytes go in as they arrive, whole frames come out. */
typedef struct frame_rd_s {
    uint8_t *buf;   /* heap buffer, grown as bytes arrive, up to max + FRAME_HDR */
    size_t cap;     /* allocated size of buf */
    size_t start;   /* offset of the first unconsumed byte */
    size_t end;     /* offset one past the last received byte */
    uint32_t max;   /* largest payload accepted */
} frame_rd_t;

/* Encodes msg as one frame into buf (cap bytes). Returns the frame's total
 * size, or 0 when it does not fit in cap or exceeds max. Never allocates. */
size_t frame_encode(const ProtobufCMessage *msg, uint8_t *buf, size_t cap, uint32_t max);

/* Size of msg as a frame (header included). */
size_t frame_size(const ProtobufCMessage *msg);

/* Initializes a reader. Returns 0 or -ENOMEM. */
int frame_rd_init(frame_rd_t *rd, size_t initial, uint32_t max);
void frame_rd_free(frame_rd_t *rd);

/* Space to read into: returns a pointer and sets *avail (> 0), growing the
 * buffer (doubling, as bytes arrive) when a pending frame needs it. Returns
 * NULL with *avail = 0 only on allocation failure. */
uint8_t *frame_rd_space(frame_rd_t *rd, size_t *avail);

/* Records that n bytes were written at the pointer frame_rd_space returned. */
void frame_rd_commit(frame_rd_t *rd, size_t n);

/* Takes the next complete frame. Returns 1 and sets *payload and *len (valid until
 * the next call on rd), 0 when more bytes are needed, -EMSGSIZE when the length
 * prefix exceeds rd->max (the stream cannot be resynchronized). */
int frame_rd_next(frame_rd_t *rd, const uint8_t **payload, uint32_t *len);

/* Bytes received but not yet returned as frames. */
size_t frame_rd_pending(const frame_rd_t *rd);

/* Writes all of buf to a blocking fd (MSG_NOSIGNAL on sockets). Returns 0 or -errno. */
int frame_write_all(int fd, const void *buf, size_t len);

/* Reads one whole frame from a blocking fd into a malloc'd buffer. Returns 0
 * and sets *payload (caller frees) and *len; -EMSGSIZE, -EPIPE on EOF, or -errno. */
int frame_read_one(int fd, uint32_t max, uint8_t **payload, uint32_t *len);

#endif
