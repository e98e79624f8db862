/* libFuzzer target: whatever collectord sends an agent, the agent neither crashes, leaks nor arms what does not exist. */
/*
 * Input layout:
 *
 *   byte 0   flags, F_* below
 *   byte 1   chunk size - 1 (with F_CHUNK); at least 1/64 of the stream,
 *            so a long input costs tens of round trips, not one per byte
 *            (frames still arrive cut at arbitrary points)
 *   rest     the byte stream collectord sends on one agent connection
 *            (length-prefixed CollectorMsg frames, proto/frame.h)
 *
 * The agent's real command path runs: the bytes are written into one end of
 * a socketpair and cmd_read() (agent/cmd.c, what the flusher calls when its
 * socket is readable) frames them with frame_rd_* and hands each frame to
 * cmd_handle(), which decodes it and calls arm_set() for ARM/DISARM (scan
 * commands go to a stub: in the library the flusher runs them). The
 * agent core (arm, intern, log, ...) is linked as it is in the library,
 * without interposition and without the flusher thread. A few stacks are
 * interned at start, so call-site tracking (sampled mode, F_SAMPLED) finds
 * real pcs for some indexes and nothing for the rest.
 *
 * Checks after each input: the number of armed stacks (arm_active) equals
 * the slots with firings left; nothing outside the table is armed;
 * disarming every slot brings arm_active back to 0 (the next input starts
 * clean); the frame reader's buffer stays within its maximum frame size.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/arm.h"
#include "agent/cmd.h"
#include "agent/intern.h"
#include "agent/log.h"
#include "agent/sample.h"
#include "frame.h"

enum {
    F_SAMPLED = 1, /* sampled mode: armed stacks are tracked by call site */
    F_CHUNK = 2,   /* write in small chunks, reading in between */
    F_SMALLMAX = 4 /* a reader with a 64-byte frame maximum (oversized-frame path) */
};

#define SLOTS 1024u
#define PUMP_MAX 4096

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FINDING(...)                                   \
    do {                                               \
        fprintf(stderr, "FINDING: " __VA_ARGS__);      \
        fflush(stderr);                                \
        __builtin_trap();                              \
    } while (0)

/* Scan commands go to the flusher in the library; here they are counted. */
static uint64_t scans;

static void on_scan(const Stackwatch__Command *c, void *arg)
{
    (void)arg;
    if (c->kind != STACKWATCH__COMMAND__KIND__SCAN_BEGIN &&
        c->kind != STACKWATCH__COMMAND__KIND__SCAN_SYNC &&
        c->kind != STACKWATCH__COMMAND__KIND__SCAN_END &&
        c->kind != STACKWATCH__COMMAND__KIND__SCAN_DONE)
        FINDING("on_scan called for command kind %d\n", (int)c->kind);
    scans++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_open(getenv("STACKWATCH_FUZZ_LOG") ? "stderr" : "none");
    if (intern_init(SLOTS, 1u << 16) < 0 || arm_init(SLOTS) < 0)
        abort();
    /* Stacks 1..n: some indexes exist, the rest do not. */
    for (uint32_t i = 0; i < 40; i++) {
        uint64_t pcs[3] = { 0x401000 + i * 16, 0x402000, 0x403000 + (i % 3) };
        intern_stack(pcs, 1 + i % 3, 1, 0);
    }
    return 0;
}

static void check_and_reset(void)
{
    uint32_t armed = 0;
    for (uint32_t i = 0; i < SLOTS; i++)
        armed += (uint32_t)arm_armed(i);
    if (armed != atomic_load(&arm_active))
        FINDING("%u slots armed, arm_active says %u\n", armed, atomic_load(&arm_active));
    if (arm_armed(0) || arm_armed(SLOTS) || arm_armed(UINT32_MAX))
        FINDING("an index outside the table is armed\n");
    for (uint32_t i = 0; i < SLOTS; i++)
        if (arm_armed(i))
            arm_set(i, 0, 0, 0, 0);
    if (atomic_load(&arm_active) != 0)
        FINDING("arm_active %u after disarming everything\n", atomic_load(&arm_active));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned flags = data[0];
    size_t chunk = (size_t)data[1] + 1;
    data += 2;
    size -= 2;
    if (chunk < size / 64)
        chunk = size / 64;
    sample_rate = (flags & F_SAMPLED) ? 512u << 10 : 0;

    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
        return 0;
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    frame_rd_t rd;
    uint32_t max = (flags & F_SMALLMAX) ? 64 : FRAME_MAX_COMMAND;
    if (frame_rd_init(&rd, 4096, max) < 0)
        abort();
    cmd_state_t st = { .on_scan = on_scan };
    size_t off = 0;
    int rc = 0;
    unsigned stalls = 0;
    while (off < size && rc == 0) {
        size_t want = size - off;
        if ((flags & F_CHUNK) && want > chunk)
            want = chunk;
        ssize_t w = send(fds[1], data + off, want, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            off += (size_t)w;
            stalls = 0;
        } else if (++stalls > PUMP_MAX) {
            FINDING("hang: the agent stopped reading commands\n");
        }
        rc = cmd_read(fds[0], &rd, &st);
        if (rd.cap > (size_t)max + FRAME_HDR + (64u << 10))
            FINDING("command reader holds %zu bytes for frames of at most %u\n", rd.cap, max);
    }
    if (rc == 0) {
        /* collectord closes: the reader must say so, not spin. */
        shutdown(fds[1], SHUT_WR);
        rc = cmd_read(fds[0], &rd, &st);
        if (rc == 0)
            FINDING("EOF not reported\n");
    }
    if (rc != -EPIPE && rc != -EMSGSIZE)
        FINDING("cmd_read returned %d\n", rc);
    check_and_reset();
    frame_rd_free(&rd);
    close(fds[0]);
    close(fds[1]);
    return 0;
}
