/* The process-wide agent state: lifecycle flags, identity, counters (read by every module). */
#include "state.h"

#include <fcntl.h>
#include <unistd.h>

agent_t agent;
_Atomic int agent_init_state; /* 0 not started, 1 starting, 2 done (whatever came of it) */
const _Atomic uintptr_t *agent_py_fin;

void state_read_identity(void)
{
    ssize_t n = readlink("/proc/self/exe", agent.exe, sizeof agent.exe - 1);
    agent.exe[n > 0 ? n : 0] = '\0';
    agent.cmdline_len = 0;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t r;
        while (agent.cmdline_len < sizeof agent.cmdline - 1 &&
               (r = read(fd, agent.cmdline + agent.cmdline_len,
                         sizeof agent.cmdline - 1 - agent.cmdline_len)) > 0)
            agent.cmdline_len += (size_t)r;
        close(fd);
    }
    agent.cmdline[agent.cmdline_len] = '\0';
}
