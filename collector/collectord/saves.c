/* collectord's saves: ended reports to the store once symbolized, snapshots at a graceful stop, restore after a restart. */
#include "saves.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "report.h"
#include "symq.h"

#define SAVE_WAIT_NS (30ull * 1000000000) /* longest an ended report waits for symbols */
#define SAVE_RETRY_NS (5ull * 1000000000) /* first wait after a failed write */

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void saves_queue(srv_t *s, client_t *c)
{
    if (!s->store.on) {
        /* No save to wait for: the modules are swept once its jobs are done. */
        if (!s->sweep_due)
            s->sweep_due = 2;
        symq_sweep_due(s);
        return;
    }
    if (s->nsaves == s->saves_cap) {
        uint32_t ncap = s->saves_cap ? s->saves_cap * 2 : 16;
        srv_save_t *ns = realloc(s->saves, ncap * sizeof *ns);
        if (!ns) {
            report_store_client(s, c, 0); /* now, with the frames as they are */
            return;
        }
        s->saves = ns;
        s->saves_cap = ncap;
    }
    s->saves[s->nsaves++] = (srv_save_t){ c->serial, clock_now() + SAVE_WAIT_NS, c->pid, 0 };
    report_symbolized(s, c);
}

/* Stores the ended reports whose frames are symbolized (all of them with
 * force, or past their deadline). A write that failed for a cause that may
 * pass (ENOSPC, EDQUOT, EIO...) stays queued and is tried again after
 * SAVE_RETRY_NS, doubling up to 32 times that, and at a graceful stop. */
void saves_due(srv_t *s, int force)
{
    uint64_t now = clock_now();
    int stored = 0;
    for (uint32_t i = 0; i < s->nsaves;) {
        srv_save_t *sv = &s->saves[i];
        client_t *c = client_by_serial(&s->clients, sv->serial);
        if (c && c->state == CLIENT_CONNECTED) {
            /* It came back (a reconnect of the same image): stored when it ends. */
            *sv = s->saves[--s->nsaves];
            continue;
        }
        if (c && !force && now < sv->deadline && (sv->failed || !report_symbolized(s, c))) {
            i++;
            continue;
        }
        int rc = c ? report_store_client(s, c, 0) : -ESRCH;
        if (rc < 0 && c && !force && rc != -EFBIG && rc != -ENOTCONN) {
            sv->failed++;
            sv->deadline = now + (SAVE_RETRY_NS << (sv->failed < 6 ? sv->failed - 1 : 5));
            if (sv->failed == 1)
                log_msg("store: pid %u's report will be written again later (and at a "
                        "graceful stop)", sv->pid);
            i++;
            continue;
        }
        if (sv->failed && rc == 0)
            log_msg("store: pid %u's report written after %u failed attempt(s)", sv->pid,
                    sv->failed);
        else if (sv->failed)
            log_msg("store: pid %u's report is not stored: %s", sv->pid,
                    c ? "the last attempt failed too" : "no longer kept in memory (--retain)");
        *sv = s->saves[--s->nsaves];
        stored = 1;
    }
    if (stored && !force)
        s->sweep_due = 1;
    symq_sweep_due(s);
    if (s->store.on && now >= s->next_prune) {
        /* A taken-over snapshot whose client is gone from memory is only a file now. */
        for (uint32_t i = 0; i < s->store.n; i++) {
            store_rec_t *r = &s->store.recs[i];
            if (r->merged_serial && !client_by_serial(&s->clients, r->merged_serial)) {
                store_sp_free(r->sp);
                r->sp = NULL;
                r->merged_serial = 0;
            }
        }
        store_prune(&s->store, realtime_ns());
        s->next_prune = now + 10ull * 1000000000;
    }
}

/* Before a graceful stop: ended reports waiting for symbols are stored as
 * they are, and every running process gets a snapshot its agent's
 * reconnect will be merged with. */
void saves_store_all(srv_t *s)
{
    if (!s->store.on)
        return;
    saves_due(s, 1);
    uint32_t n = 0;
    for (client_t *c = s->clients.head; c; c = c->next)
        if (c->state == CLIENT_CONNECTED && report_store_client(s, c, 1) == 0)
            n++;
    if (n)
        log_msg("store: kept %u running process(es) for their reconnect", n);
}

void saves_restore_client(srv_t *s, client_t *c)
{
    store_rec_t *r = s->store.on ? store_find_snapshot(&s->store, c->pid, c->instance) : NULL;
    if (!r)
        return;
    uint64_t now = realtime_ns();
    r->merged_serial = c->serial;
    r->merged_gap_ms = now > r->end_ns ? (now - r->end_ns) / 1000000u : 0;
    uint64_t mark_ms = r->sp->client->mark_ms;
    if (mark_ms && !c->mark_ts) {
        /* The mark in this boot's monotonic clock; before it: the very start. */
        int64_t off = (int64_t)(now / 1000000u) - (int64_t)mark_ms;
        int64_t mono = (int64_t)clock_now() - off * 1000000;
        c->mark_ts = mono > 0 ? (uint64_t)mono : 1;
    }
    log_msg("pid %u reconnected after a collectord restart: merged with its report of %llu "
            "ms ago", c->pid, (unsigned long long)r->merged_gap_ms);
}
