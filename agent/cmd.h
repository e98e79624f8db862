/* Commands from collectord: the framing on the agent's connection and what each frame does. */
#ifndef STACKWATCH_AGENT_CMD_H
#define STACKWATCH_AGENT_CMD_H

#include <stdint.h>

#include "frame.h"
#include "proto/stackwatch.pb-c.h"

/* What the commands told the agent besides arming, and who runs the rest. */
typedef struct cmd_state_s {
    uint32_t expire_ms;   /* from Welcome */
    uint64_t malformed;   /* frames that did not decode (ignored) */
    /* SCAN_BEGIN, SCAN_SYNC, SCAN_END, SCAN_DONE (the reachability scan): they need the
     * flusher's drain and connection, so flush.c runs them; NULL: ignored. */
    void (*on_scan)(const Stackwatch__Command *c, void *arg);
    void *arg;            /* for on_scan */
} cmd_state_t;

/* Decodes one CollectorMsg payload and applies it: Welcome sets
 * st->expire_ms, ARM/DISARM go to arm_set for each named stack (indexes are
 * checked there), scan commands to st->on_scan, anything else is ignored. A payload that does not decode is
 * counted and logged, never fatal. Flusher thread only (it allocates through
 * protobuf-c while the flusher's guard is set). */
void cmd_handle(const uint8_t *p, uint32_t len, cmd_state_t *st);

/* Reads what is readable on the non-blocking fd into rd and handles every
 * whole frame. Returns 0 when the socket has no more data for now, -EPIPE
 * when the peer closed, -EMSGSIZE for a length prefix over rd's maximum
 * (the stream cannot be resynchronized), -ENOMEM, or -errno of recv. On any
 * error the caller drops the connection. */
int cmd_read(int fd, frame_rd_t *rd, cmd_state_t *st);

#endif
