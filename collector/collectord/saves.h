/* collectord's saves: ended reports to the store once symbolized, snapshots at a graceful stop, restore after a restart. */
#ifndef STACKWATCH_COLLECTOR_SAVES_H
#define STACKWATCH_COLLECTOR_SAVES_H

#include "state.h"

/* An ended client: its report is stored once its frames are symbolized
 * (SAVE_WAIT_NS at most); at once, as it is, when the queue cannot grow. */
void saves_queue(srv_t *s, client_t *c);

/* The aging tick: stores the ended reports whose frames are symbolized (all
 * of them with force, or past their deadline), tries failed writes again,
 * and runs the store's retention. */
void saves_due(srv_t *s, int force);

/* Before a graceful stop: ended reports waiting for symbols are stored as
 * they are, and every running process gets a snapshot its agent's
 * reconnect will be merged with. */
void saves_store_all(srv_t *s);

/* A new client from a hello: if the store kept a snapshot of the same
 * process image (pid + agent instance) before a collectord restart, the
 * client takes it over (reports merge it, the gap is shown) and its mark is
 * restored. */
void saves_restore_client(srv_t *s, client_t *c);

#endif
