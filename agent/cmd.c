/* Commands from collectord: the framing on the agent's connection and what each frame does. */
#include "cmd.h"

#include <errno.h>
#include <sys/socket.h>

#include "arm.h"
#include "log.h"

void cmd_handle(const uint8_t *p, uint32_t len, cmd_state_t *st)
{
    Stackwatch__CollectorMsg *m = stackwatch__collector_msg__unpack(NULL, len, p);
    if (!m) {
        st->malformed++;
        log_msg("malformed frame from the collector (%u bytes); ignored", len);
        return;
    }
    switch (m->msg_case) {
    case STACKWATCH__COLLECTOR_MSG__MSG_WELCOME:
        st->expire_ms = m->welcome->expire_ms;
        if (m->welcome->version != PROTO_VERSION)
            log_msg("collector speaks protocol %u, this agent %u", m->welcome->version,
                    PROTO_VERSION);
        break;
    case STACKWATCH__COLLECTOR_MSG__MSG_COMMAND: {
        const Stackwatch__Command *c = m->command;
        /* FLUSH needs nothing more: the loop drains right after commands. */
        if (c->kind == STACKWATCH__COMMAND__KIND__ARM ||
            c->kind == STACKWATCH__COMMAND__KIND__DISARM) {
            uint32_t count = c->kind == STACKWATCH__COMMAND__KIND__ARM ? c->count : 0;
            for (size_t i = 0; i < c->n_stacks; i++)
                arm_set(c->stacks[i], c->signal, count, c->python, c->quiet);
        } else if ((c->kind == STACKWATCH__COMMAND__KIND__SCAN_BEGIN ||
                    c->kind == STACKWATCH__COMMAND__KIND__SCAN_SYNC ||
                    c->kind == STACKWATCH__COMMAND__KIND__SCAN_END ||
                    c->kind == STACKWATCH__COMMAND__KIND__SCAN_DONE) &&
                   st->on_scan) {
            st->on_scan(c, st->arg);
        }
        break;
    }
    default:
        break;
    }
    stackwatch__collector_msg__free_unpacked(m, NULL);
}

int cmd_read(int fd, frame_rd_t *rd, cmd_state_t *st)
{
    for (;;) {
        size_t avail;
        uint8_t *sp = frame_rd_space(rd, &avail);
        if (!sp)
            return -ENOMEM;
        ssize_t r = recv(fd, sp, avail, MSG_DONTWAIT);
        if (r == 0)
            return -EPIPE;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        }
        frame_rd_commit(rd, (size_t)r);
        const uint8_t *payload;
        uint32_t len;
        int rc;
        while ((rc = frame_rd_next(rd, &payload, &len)) == 1)
            cmd_handle(payload, len, st);
        if (rc < 0)
            return rc;
    }
}
