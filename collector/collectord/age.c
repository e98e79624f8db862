/* collectord's aging tick: aging, classification, queued symbolization and arming, scan deadlines, retention. */
#include "age.h"

#include "arming.h"
#include "clock.h"
#include "saves.h"
#include "scans.h"
#include "symq.h"

void age_advance(srv_t *s, uint64_t ns)
{
    clock_forward(ns);
    age_tick(s);
}

void age_client(srv_t *s, client_t *c, uint64_t now)
{
    client_age(c, now);
    client_classify(c, now);
    symq_eager(s, c);
    for (uint32_t i = 0; i < c->nleakq; i++) {
        cstack_t *st = cstack_at(c, c->leakq[i]);
        if (st)
            arming_first_leak(s, c, st);
    }
    c->nleakq = 0;
    for (uint32_t i = 0; i < c->nhotq; i++) {
        /* Just became a leak: --leaking rules see it now (or once its
         * frames are in). */
        cstack_t *st = cstack_at(c, c->hotq[i]);
        if (st)
            arming_eval(s, c, st);
    }
    c->nhotq = 0;
    arming_rearm_python(s, c);
}

void age_tick(srv_t *s)
{
    uint64_t now = clock_now();
    saves_due(s, 0);
    for (client_t *c = s->clients.head; c; c = c->next)
        age_client(s, c, now);
    scans_check_deadlines(s, now);
    clients_prune(&s->clients, now);
    s->retry_parked |= SRV_RETRY_DEADLINE; /* the loop runs ctl_retry_parked */
}
