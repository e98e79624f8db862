/* Agent frames into the client model: hello, modules, stacks, event batches, stats, gaps, goodbye. */
#ifndef STACKWATCH_COLLECTOR_INGEST_H
#define STACKWATCH_COLLECTOR_INGEST_H

#include <stdint.h>

#include "conn.h"

/* Decodes and applies one agent frame. A malformed or out-of-protocol frame
 * closes the connection with a logged reason and returns -1 (c is gone);
 * otherwise 0. Never trusts a length, index or count the client sends. */
int ingest_frame(conn_t *c, const uint8_t *p, uint32_t len);

#endif
