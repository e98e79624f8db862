/* stackctl attach and detach: the agent into a running process and out again. */
#ifndef STACKWATCH_COLLECTOR_CLI_ATTACH_H
#define STACKWATCH_COLLECTOR_CLI_ATTACH_H

#include <stddef.h>
#include <sys/types.h>

#include "collector/common/rundir.h"

typedef struct cli_attach_opts_s {
    const char *agent;     /* libstackagent.so to load (NULL: next to stackctl) */
    int timeout_ms;        /* for each call made in the process */
    int wait_ms;           /* for collectord to see the change (0: do not wait) */
} cli_attach_opts_t;

/* stackctl attach PID: loads the agent into pid with ptrace (dlopen in one
 * of its threads, then stackwatch_attach with this stackctl's STACKWATCH_*
 * settings and rd's directory), and waits until collectord lists it.
 * Prints what happened; returns the exit status (0 ok, 1 failed). */
int cli_attach(const rundir_t *rd, pid_t pid, const cli_attach_opts_t *o);

/* The agent library to load, as an absolute path in out: opt (--agent),
 * else $STACKWATCH_AGENT, else libstackagent.so next to stackctl, else in
 * ../lib from it (make install's layout). Returns 0, or -ENOENT with a
 * sentence in err. Used by attach and run. */
int cli_agent_file(const char *opt, char *out, size_t len, char *err, size_t errlen);

/* stackctl detach PID: calls stackwatch_detach in pid. Exit status. */
int cli_detach(const rundir_t *rd, pid_t pid, const cli_attach_opts_t *o);

#endif
