/* Agent frames into the client model: hello, modules, stacks, event batches, stats, gaps, goodbye. */
#include "ingest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "frame.h"
#include "proto/stackwatch.pb-c.h"
#include "srv.h"
#include "sym.h"

static int send_welcome(conn_t *c)
{
    Stackwatch__Welcome w = STACKWATCH__WELCOME__INIT;
    w.version = PROTO_VERSION;
    w.expire_ms = (uint32_t)(c->srv->opts.expire_ns / 1000000u);
    Stackwatch__CollectorMsg m = STACKWATCH__COLLECTOR_MSG__INIT;
    m.msg_case = STACKWATCH__COLLECTOR_MSG__MSG_WELCOME;
    m.welcome = &w;
    return conn_send_msg(c, &m, FRAME_MAX_COMMAND);
}

/* Another image of the same pid is connecting: the old one exec'd. Its
 * blocks are not leaks of a crash; it ended cleanly. */
static void mark_exec(srv_t *s, client_t *nc)
{
    for (client_t *c = s->clients.head; c; c = c->next) {
        if (c == nc || c->pid != nc->pid || c->instance == nc->instance)
            continue;
        if (c->conn) {
            c->exec_replaced = 1;
        } else if (c->state == CLIENT_LOST && c->atab_ok) {
            c->frozen = 0;
            client_freeze(c, c->end_ts ? c->end_ts : c->max_ts, 1);
        }
    }
}

static int on_hello(conn_t *c, const Stackwatch__Hello *h, const char **why)
{
    srv_t *s = c->srv;
    if (c->hello_seen) {
        *why = "second hello on one connection";
        return -EPROTO;
    }
    if (h->version != PROTO_VERSION) {
        static char msg[96];
        snprintf(msg, sizeof msg, "agent speaks protocol %u, collectord %u", h->version,
                 PROTO_VERSION);
        *why = msg;
        return -EPROTO;
    }
    if (h->instance == 0) {
        *why = "hello without an instance token";
        return -EPROTO;
    }
    c->hello_seen = 1;
    /* SO_PEERCRED is the truth; the claimed pid is only shown. */
    uint32_t pid = c->peer_pid > 0 ? (uint32_t)c->peer_pid : h->pid;
    uint64_t now = srv_now();
    client_t *cl = client_find(&s->clients, pid, h->instance);
    if (cl && !cl->atab_ok) {
        /* It said goodbye, yet speaks again (a hostile or confused agent):
         * the ended record stays as it was; this is a new one. */
        cl = NULL;
    }
    if (cl) {
        if (cl->conn && cl->conn != c) {
            conn_t *old = cl->conn;
            cl->conn = NULL;
            conn_close(old, "replaced by a new connection of the same process");
        }
        client_revive(cl);
    } else {
        cl = client_new(&s->clients, pid, s->opts.expire_ns, now);
        if (!cl) {
            *why = "out of memory";
            return -ENOMEM;
        }
    }
    if (client_set_identity(cl, h->pid, h->ppid, h->exe, h->argv, h->n_argv, h->instance,
                            h->parent_instance, h->start_realtime_ns, h->depth, h->sample) < 0) {
        *why = "out of memory";
        return -ENOMEM;
    }
    cl->python_version = h->python_version;
    /* Sampling is per process image: a reconnect says the same. */
    cl->sample_bytes = h->sample_bytes <= (1ull << 40) ? h->sample_bytes : 0;
    free(cl->python_status);
    cl->python_status = strdup(h->python_status ? h->python_status : "");
    cl->conn = c;
    cl->said_bye = 0;
    cl->state = CLIENT_CONNECTED;
    c->client = cl;
    mark_exec(s, cl);
    if (send_welcome(c) < 0) {
        *why = "cannot send welcome";
        return -EIO;
    }
    return 0;
}

static int on_modules(conn_t *c, const Stackwatch__ModuleMap *mm, const char **why)
{
    for (size_t i = 0; i < mm->n_modules; i++) {
        const Stackwatch__Module *m = mm->modules[i];
        int rc = client_put_module(c->client, m->id, m->path, m->bias, m->ranges, m->n_ranges,
                                   m->build_id.data, m->build_id.len, m->gen_added,
                                   m->gen_removed);
        if (rc < 0) {
            *why = rc == -ENOMEM ? "out of memory" : "bad module record (id or ranges)";
            return rc;
        }
    }
    return 0;
}

static int on_stacks(conn_t *c, const Stackwatch__StackDefs *sd, const char **why)
{
    for (size_t i = 0; i < sd->n_stacks; i++) {
        const Stackwatch__StackDef *d = sd->stacks[i];
        int err = 0;
        cstack_t *st = client_define_stack(c->client, d->index, d->id, d->generation, d->pcs,
                                           d->n_pcs, d->truncated, &err);
        if (!st) {
            *why = err == -ENOMEM ? "out of memory"
                   : err == -E2BIG ? "too many stack frames for one client"
                                   : "bad stack definition (index or depth)";
            return err;
        }
        if (c->srv->trig.n) {
            /* Rules match every stack, present and future. */
            if (trig_needs_symbols(&c->srv->trig))
                srv_sym_stack(c->srv, c->client, st);
            srv_trig_eval(c->srv, c->client, st);
        }
    }
    return 0;
}

static void on_note(conn_t *c, const Stackwatch__Note *n)
{
    pyframe_t frames[64];
    uint32_t nf = n->n_python < 64 ? (uint32_t)n->n_python : 64;
    for (uint32_t i = 0; i < nf; i++) {
        frames[i].file = sym_intern(n->python[i]->file);
        frames[i].function = sym_intern(n->python[i]->function);
        frames[i].line = n->python[i]->line;
    }
    cstack_t *st = client_note(c->client, n->addr, n->ts, n->stack, frames, nf,
                               n->truncated || n->n_python > nf, n->text);
    if (!st)
        return;
    st->fired++;
    if (st->arm_left)
        st->arm_left--;
    if (st->arm_kind == ARM_RULE) {
        trig_rule_t *r = trig_get(&c->srv->trig, st->arm_rule);
        if (r)
            r->fired++;
    }
}

static int on_events(conn_t *c, const Stackwatch__EventBatch *b, const char **why)
{
    size_t n = b->n_kind;
    if (b->n_addr != n || b->n_ts_delta != n || b->n_tid != n || b->n_size != b->n_stack) {
        *why = "event batch columns differ in length";
        return -EPROTO;
    }
    size_t nalloc = 0;
    for (size_t i = 0; i < n; i++) {
        if (b->kind[i] == STACKWATCH__EVENT_KIND__EVENT_ALLOC ||
            b->kind[i] == STACKWATCH__EVENT_KIND__EVENT_ALLOC_UNSAMPLED)
            nalloc++;
        else if (b->kind[i] != STACKWATCH__EVENT_KIND__EVENT_FREE) {
            *why = "unknown event kind";
            return -EPROTO;
        }
    }
    if (nalloc != b->n_size) {
        *why = "event batch has sizes for a different number of allocations";
        return -EPROTO;
    }
    client_t *cl = c->client;
    uint64_t ts = b->ts_base;
    size_t ai = 0;
    for (size_t i = 0; i < n; i++) {
        ts += (uint64_t)b->ts_delta[i]; /* wraps harmlessly on nonsense */
        int rc;
        if (b->kind[i] == STACKWATCH__EVENT_KIND__EVENT_ALLOC) {
            rc = client_alloc(cl, b->addr[i], ts, b->size[ai], b->stack[ai]);
            ai++;
        } else if (b->kind[i] == STACKWATCH__EVENT_KIND__EVENT_ALLOC_UNSAMPLED) {
            rc = client_alloc_unsampled(cl, b->addr[i], ts, b->size[ai], b->stack[ai]);
            ai++;
        } else {
            rc = client_free(cl, b->addr[i], ts);
        }
        if (rc < 0) {
            *why = rc == -ENOMEM ? "out of memory" : "event names a stack index out of range";
            return rc;
        }
    }
    c->srv->events_total += n;
    return 0;
}

static void on_stats(client_t *cl, const Stackwatch__Stats *st)
{
    cl->a_dropped = st->dropped;
    cl->a_failed = st->failed_calls;
    cl->a_unwind_fail = st->unwind_failures;
    cl->a_intern_full = st->intern_full;
    cl->a_events = st->events;
    cl->a_threads = st->threads;
    cl->a_ring_bytes = st->ring_bytes;
    cl->a_table_bytes = st->table_bytes;
    cl->a_waits = st->ring_waits;
    cl->a_lost_disc = st->lost_disconnected;
    cl->a_total_allocs = st->total_allocs;
    cl->a_total_alloc_b = st->total_alloc_bytes;
    cl->a_total_frees = st->total_frees;
    cl->a_sample_overflow = st->sample_overflow;
    cl->a_sample_set_bytes = st->sample_set_bytes;
    cl->a_fp_walks = st->fp_walks;
    cl->a_fp_misses = st->fp_tail_misses;
}

int ingest_frame(conn_t *c, const uint8_t *p, uint32_t len)
{
    Stackwatch__AgentMsg *m = stackwatch__agent_msg__unpack(NULL, len, p);
    if (!m) {
        c->srv->bad_frames++;
        conn_close(c, "malformed frame (not a valid agent message)");
        return -1;
    }
    const char *why = NULL;
    int rc = 0;
    if (!c->hello_seen && m->msg_case != STACKWATCH__AGENT_MSG__MSG_HELLO) {
        why = "first frame is not a hello";
        rc = -EPROTO;
        goto out;
    }
    switch (m->msg_case) {
    case STACKWATCH__AGENT_MSG__MSG_HELLO:
        rc = on_hello(c, m->hello, &why);
        break;
    case STACKWATCH__AGENT_MSG__MSG_MODULES:
        rc = on_modules(c, m->modules, &why);
        break;
    case STACKWATCH__AGENT_MSG__MSG_STACKS:
        rc = on_stacks(c, m->stacks, &why);
        break;
    case STACKWATCH__AGENT_MSG__MSG_EVENTS:
        rc = on_events(c, m->events, &why);
        break;
    case STACKWATCH__AGENT_MSG__MSG_STATS:
        on_stats(c->client, m->stats);
        break;
    case STACKWATCH__AGENT_MSG__MSG_NOTE:
        on_note(c, m->note);
        break;
    case STACKWATCH__AGENT_MSG__MSG_GAP:
        /* The agent sends one, right after its hello on a reconnect; marking
         * is a walk over every live block, so more would be a cheap way to
         * stall the daemon. */
        if (c->frames_in != 2) {
            why = "gap is allowed only right after the hello";
            rc = -EPROTO;
            break;
        }
        client_gap(c->client, m->gap->lost_events);
        break;
    case STACKWATCH__AGENT_MSG__MSG_BYE:
        c->client->said_bye = 1;
        /* Trust the goodbye's time only as far as our own clock. */
        if (m->bye->ts > c->client->max_ts && m->bye->ts <= srv_now())
            c->client->max_ts = m->bye->ts;
        break;
    default:
        why = "unknown message type";
        rc = -EPROTO;
        break;
    }
out:
    stackwatch__agent_msg__free_unpacked(m, NULL);
    if (rc < 0) {
        if (rc == -EPROTO || rc == -EINVAL)
            c->srv->bad_frames++;
        conn_close(c, why ? why : "protocol error");
        return -1;
    }
    return 0;
}
