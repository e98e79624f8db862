/* One request/reply exchange on collectord's control socket (used by stackctl and collectord stop/status). */
#ifndef STACKWATCH_COLLECTOR_CLI_CALL_H
#define STACKWATCH_COLLECTOR_CLI_CALL_H

#include "proto/stackwatch.pb-c.h"

/* Sends req to the control socket at path and waits up to timeout_ms for the
 * reply. Returns 0 and sets *out (free with stackwatch__reply__free_unpacked),
 * or -errno: -ENOENT/-ECONNREFUSED (no collector), -EPERM (the collectord
 * there runs as another user than us and root), -ETIMEDOUT, -EPROTO. */
int cli_call(const char *path, const Stackwatch__Request *req, int timeout_ms,
             Stackwatch__Reply **out);

#endif
