/* The control socket's requests: ping, clients, leak reports, shutdown. */
#include "ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "age.h"
#include "arming.h"
#include "client.h"
#include "clock.h"
#include "frame.h"
#include "log.h"
#include "proto/stackwatch.pb-c.h"
#include "report.h"
#include "scans.h"
#include "state.h"
#include "trig.h"
#include "store.h"

#define PARK_NS (30ull * 1000000000)   /* longest a report waits for symbolization */

/* ---------------------------------------------------------------- requests */

/* Bytes an element of a repeated message field takes in its parent. */
static size_t elem_size(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    size_t len = 1;
    for (size_t v = n; v >= 0x80; v >>= 7)
        len++;
    return 1 + len + n;
}

/* Keeps the first elements of list that fit budget; returns their bytes. */
static size_t keep_fitting(void **list, size_t *n, size_t budget)
{
    size_t used = 0, i = 0;
    for (; i < *n; i++) {
        size_t e = elem_size(list[i]);
        if (used + e > budget)
            break;
        used += e;
    }
    *n = i;
    return used;
}

static size_t list_size(void **list, size_t n)
{
    size_t t = 0;
    for (size_t i = 0; i < n; i++)
        t += elem_size(list[i]);
    return t;
}

/* A reply larger than --max-reply is cut, never refused: stacks (ranked
 * first to last) and processes are kept from the top while they fit, and
 * the reply's message says what was left out. note is the message's
 * storage. */
static void fit_reply(srv_t *s, Stackwatch__Reply *r, char *note, size_t notelen)
{
    uint64_t max = s->opts.reply_max ? s->opts.reply_max : SRV_REPLY_MAX;
    size_t size = protobuf_c_message_get_packed_size(&r->base);
    if (size <= max)
        return;
    size_t room = 512; /* the note */
    if (r->body_case == STACKWATCH__REPLY__BODY_LEAKS) {
        Stackwatch__LeakReport *l = r->leaks;
        size_t nc = l->n_clients, ns = l->n_stacks;
        size_t cs = list_size((void **)l->clients, nc), ss = list_size((void **)l->stacks, ns);
        size_t fixed = size - cs - ss + room;
        size_t budget = max > fixed ? max - fixed : 0;
        /* The processes get at most half when the stacks need the rest. */
        size_t cb = cs <= budget / 2 || cs + ss <= budget ? cs : budget / 2;
        if (cs > cb)
            cb = keep_fitting((void **)l->clients, &l->n_clients, cb);
        keep_fitting((void **)l->stacks, &l->n_stacks, budget - cb);
        snprintf(note, notelen, "reply cut to fit %llu bytes (--max-reply): %zu of %zu stacks "
                 "and %zu of %zu processes shown (narrow it with --pid, --top or --exe)",
                 (unsigned long long)max, l->n_stacks, ns, l->n_clients, nc);
    } else if (r->body_case == STACKWATCH__REPLY__BODY_CLIENTS) {
        Stackwatch__ClientList *l = r->clients;
        size_t nc = l->n_clients;
        size_t cs = list_size((void **)l->clients, nc);
        size_t fixed = size - cs + room;
        keep_fitting((void **)l->clients, &l->n_clients, max > fixed ? max - fixed : 0);
        snprintf(note, notelen, "reply cut to fit %llu bytes (--max-reply): %zu of %zu "
                 "processes shown", (unsigned long long)max, l->n_clients, nc);
    } else {
        return;
    }
    if (!r->error)
        r->message = note;
    static log_throttle_t log_cut;
    log_throttled(&log_cut, "%s", note);
}

static int send_reply(conn_t *c, Stackwatch__Reply *r)
{
    char note[512];
    fit_reply(c->srv, r, note, sizeof note);
    int rc = conn_send_msg(c, r, FRAME_MAX_CONTROL);
    if (rc < 0) {
        conn_close(c, "cannot send the reply");
        return -1;
    }
    return 0;
}

static int send_error(conn_t *c, int err, const char *msg)
{
    Stackwatch__Reply r = STACKWATCH__REPLY__INIT;
    r.error = err;
    r.message = (char *)msg;
    return send_reply(c, &r);
}

/* Replies with the rules (only rule `only` if non-zero). */
static int send_rules(conn_t *c, ra_t *ra, srv_t *s, uint32_t only)
{
    Stackwatch__RuleList rl = STACKWATCH__RULE_LIST__INIT;
    rl.rules = ra_alloc(ra, (s->trig.n + 1) * sizeof *rl.rules);
    if (!rl.rules)
        return send_error(c, -ENOMEM, "out of memory");
    for (trig_rule_t *t = s->trig.rules; t; t = t->next) {
        if (only && t->id != only)
            continue;
        Stackwatch__Rule *r = ra_alloc(ra, sizeof *r);
        if (!r)
            return send_error(c, -ENOMEM, "out of memory");
        stackwatch__rule__init(r);
        r->id = t->id;
        r->match = t->match ? t->match : (char *)"";
        r->module = t->module ? t->module : (char *)"";
        r->stack = t->stack_id;
        r->frame = t->frame;
        r->min_depth = t->min_depth;
        r->pid = t->pid;
        r->signal = t->sig;
        r->count = t->count;
        r->fired = t->fired;
        r->armed = t->armed;
        r->leaking = t->leaking;
        rl.rules[rl.n_rules++] = r;
    }
    Stackwatch__Reply rep = STACKWATCH__REPLY__INIT;
    rep.body_case = STACKWATCH__REPLY__BODY_RULES;
    rep.rules = &rl;
    return send_reply(c, &rep);
}

/* The newest connected client of pid, or NULL. */
static client_t *connected_client(srv_t *s, uint32_t pid)
{
    for (client_t *c = s->clients.head; c; c = c->next)
        if (c->pid == pid && c->conn && c->state == CLIENT_CONNECTED)
            return c;
    return NULL;
}

#define SCAN_PARK_NS (600ull * 1000000000)   /* a scan's reply waits at most this */

/* Scan: starts the scan on the first run and parks; answers when the
 * client's scan count has moved past the one started (conn->parked_tag). */
static int run_scan(conn_t *c, const Stackwatch__Scan *q, int force, ra_t *ra)
{
    srv_t *s = c->srv;
    char msg[600];
    client_t *cl = connected_client(s, q->pid);
    if (!c->parked_tag) {
        if (!cl) {
            snprintf(msg, sizeof msg, "pid %u is not a connected client (run it under the agent, "
                                      "or stackctl attach it first)", q->pid);
            return send_error(c, -ESRCH, msg) < 0 ? -1 : 1;
        }
        if (cl->scan_state == SCAN_ST_NONE) {
            int rc = scans_start(s, cl, msg, sizeof msg);
            if (rc < 0)
                return send_error(c, rc, msg) < 0 ? -1 : 1;
        }
        c->parked_tag = cl->scan_seq + 1;
        uint64_t t = q->timeout_ms ? (uint64_t)q->timeout_ms * 1000000u : SCAN_PARK_NS;
        c->parked_until = clock_now() + t;
        return 0;
    }
    /* The client may have ended (then it is no longer "connected"). */
    for (cl = s->clients.head; cl; cl = cl->next)
        if (cl->pid == q->pid && cl->scan_seq >= c->parked_tag)
            break;
    if (!cl) {
        if (!force)
            return 0;
        snprintf(msg, sizeof msg, "the scan of pid %u did not finish in time", q->pid);
        return send_error(c, -ETIMEDOUT, msg) < 0 ? -1 : 1;
    }
    if (cl->scan_err) {
        snprintf(msg, sizeof msg, "scan of pid %u: %s", q->pid, cl->scan_msg);
        return send_error(c, cl->scan_err, msg) < 0 ? -1 : 1;
    }
    Stackwatch__Reply r = STACKWATCH__REPLY__INIT;
    r.body_case = STACKWATCH__REPLY__BODY_SCAN;
    r.scan = report_scan_result(ra, cl);
    if (!r.scan)
        return send_error(c, -ENOMEM, "out of memory") < 0 ? -1 : 1;
    return send_reply(c, &r) < 0 ? -1 : 1;
}

/* Runs a request. Returns 1 done, 0 parked, -1 connection closed. */
static int run_request(conn_t *c, Stackwatch__Request *req, int force)
{
    srv_t *s = c->srv;
    Stackwatch__Reply r = STACKWATCH__REPLY__INIT;
    ra_t ra = { 0 };
    int rc;
    switch (req->req_case) {
    case STACKWATCH__REQUEST__REQ_TICK:
        if (!clock_is_virtual()) {
            rc = send_error(c, -EPERM, "tick needs collectord start --test-clock");
            break;
        }
        age_advance(s, req->tick->advance_ns);
        ctl_retry_flagged(s); /* as the aging timer: before the answer */
        __attribute__((fallthrough)); /* answered like a ping */
    case STACKWATCH__REQUEST__REQ_PING: {
        Stackwatch__Pong p = STACKWATCH__PONG__INIT;
        p.pid = (uint32_t)getpid();
        p.clients = s->clients.count;
        p.expire_ms = (uint32_t)(s->opts.expire_ns / 1000000u);
        p.dir = s->rd.dir;
        p.mono_ns = clock_now();
        r.body_case = STACKWATCH__REPLY__BODY_PONG;
        r.pong = &p;
        return send_reply(c, &r) < 0 ? -1 : 1;
    }
    case STACKWATCH__REQUEST__REQ_CLIENTS: {
        Stackwatch__ClientList cl = STACKWATCH__CLIENT_LIST__INIT;
        uint64_t now = clock_now();
        cl.clients = ra_alloc(&ra, (s->clients.count + 1) * sizeof *cl.clients);
        if (!cl.clients) {
            rc = send_error(c, -ENOMEM, "out of memory");
            break;
        }
        for (client_t *cc = s->clients.head; cc; cc = cc->next)
            if ((cl.clients[cl.n_clients] = report_client_info(&ra, cc, now)))
                cl.n_clients++;
        r.body_case = STACKWATCH__REPLY__BODY_CLIENTS;
        if (s->store.n) {
            /* Then the processes known only from the store. */
            Stackwatch__ClientInfo **all = ra_alloc(&ra, (cl.n_clients + s->store.n) *
                                                             sizeof *all);
            if (!all) {
                rc = send_error(c, -ENOMEM, "out of memory");
                break;
            }
            memcpy(all, cl.clients, cl.n_clients * sizeof *all);
            cl.clients = all;
            for (uint32_t i = 0; i < s->store.n; i++) {
                const store_rec_t *rec = &s->store.recs[i];
                if (!report_rec_served(rec))
                    continue;
                Stackwatch__ClientInfo *ci = ra_alloc(&ra, sizeof *ci);
                if (!ci)
                    break;
                *ci = *rec->sp->client;
                ci->restored = 1;
                ci->n_series = 0;
                ci->series = NULL;
                if (rec->snapshot)
                    ci->state = (char *)"lost";
                cl.clients[cl.n_clients++] = ci;
            }
        }
        r.clients = &cl;
        rc = send_reply(c, &r);
        break;
    }
    case STACKWATCH__REQUEST__REQ_LEAKS: {
        int b = report_leaks(s, req->leaks, force, &ra, &r, NULL);
        if (b == 0) {
            ra_free(&ra);
            return 0;
        }
        char msg[160];
        snprintf(msg, sizeof msg, "no process with pid %u is known (never traced, or ended "
                 "beyond --retain/--retain-time)", req->leaks->pid);
        rc = b == -EINVAL  ? send_error(c, b, "unknown class (leak, growing, retained, cache, transient)")
             : b == -ESRCH ? send_error(c, b, msg)
             : b < 0       ? send_error(c, b, "out of memory building the report")
                           : send_reply(c, &r);
        break;
    }
    case STACKWATCH__REQUEST__REQ_MARK: {
        /* Replies with the clients marked. */
        Stackwatch__ClientList cl = STACKWATCH__CLIENT_LIST__INIT;
        uint64_t now = clock_now();
        cl.clients = ra_alloc(&ra, (s->clients.count + 1) * sizeof *cl.clients);
        if (!cl.clients) {
            rc = send_error(c, -ENOMEM, "out of memory");
            break;
        }
        int known = 0;
        for (client_t *cc = s->clients.head; cc; cc = cc->next) {
            if (req->mark->pid && cc->pid != req->mark->pid)
                continue;
            known = 1;
            if (!cc->conn)
                continue;
            client_mark(cc, now);
            if ((cl.clients[cl.n_clients] = report_client_info(&ra, cc, now)))
                cl.n_clients++;
            report_store_client(s, cc, 1); /* the mark survives a collectord restart */
        }
        if (req->mark->pid && !known && !report_pid_alive(req->mark->pid)) {
            char msg[160];
            snprintf(msg, sizeof msg, "no process with pid %u is known", req->mark->pid);
            rc = send_error(c, -ESRCH, msg);
            break;
        }
        log_msg("mark set on %zu client(s)", cl.n_clients);
        r.body_case = STACKWATCH__REPLY__BODY_CLIENTS;
        r.clients = &cl;
        rc = send_reply(c, &r);
        break;
    }
    case STACKWATCH__REQUEST__REQ_TRIGGER_ADD: {
        const Stackwatch__Rule *q = req->trigger_add->rule;
        char err[512] = "";
        if (!q) {
            rc = send_error(c, -EINVAL, "trigger add without a rule");
            break;
        }
        int id = trig_add(&s->trig, q->match, q->module, q->stack, q->frame, q->min_depth,
                          q->pid, q->signal, q->count, err, sizeof err);
        if (id < 0) {
            rc = send_error(c, id, err[0] ? err : "cannot add the rule");
            break;
        }
        trig_get(&s->trig, (uint32_t)id)->leaking = q->leaking;
        log_msg("rule %d added (match '%s', module '%s', stack %016llx, pid %u, signal %d, "
                "count %u%s)",
                id, q->match ? q->match : "", q->module ? q->module : "",
                (unsigned long long)q->stack, q->pid, q->signal, q->count,
                q->leaking ? ", leaking stacks only" : "");
        arming_eval_all(s);
        rc = send_rules(c, &ra, s, (uint32_t)id);
        break;
    }
    case STACKWATCH__REQUEST__REQ_TRIGGER_LIST:
        rc = send_rules(c, &ra, s, 0);
        break;
    case STACKWATCH__REQUEST__REQ_TRIGGER_RM: {
        uint32_t id = req->trigger_rm->id;
        if (!trig_get(&s->trig, id)) {
            char msg[64];
            snprintf(msg, sizeof msg, "no rule %u", id);
            rc = send_error(c, -ENOENT, msg);
            break;
        }
        for (client_t *cc = s->clients.head; cc; cc = cc->next)
            for (uint32_t i = 0; i < cc->nstacks; i++) {
                cstack_t *st = cc->slist[i];
                if (st && st->arm_kind == ARM_RULE && st->arm_rule == id)
                    arming_disarm(s, cc, st);
            }
        trig_rm(&s->trig, id);
        log_msg("rule %u removed", id);
        rc = send_rules(c, &ra, s, 0);
        break;
    }
    case STACKWATCH__REQUEST__REQ_SCAN: {
        int sr = run_scan(c, req->scan, force, &ra);
        ra_free(&ra);
        return sr;
    }
    case STACKWATCH__REQUEST__REQ_SHUTDOWN:
        log_msg("stop requested over the control socket");
        rc = send_reply(c, &r);
        s->stopping = 1; /* the loop ends after this iteration */
        break;
    default:
        rc = send_error(c, -EINVAL, "unknown request");
        break;
    }
    ra_free(&ra);
    return rc < 0 ? -1 : 1;
}

int ctl_request(conn_t *c, const uint8_t *p, uint32_t len)
{
    if (c->parked) {
        conn_close(c, "request sent while another is pending");
        return -1;
    }
    Stackwatch__Request *req = stackwatch__request__unpack(NULL, len, p);
    if (!req) {
        c->srv->bad_frames++;
        conn_close(c, "malformed request");
        return -1;
    }
    c->parked_tag = 0;
    c->parked_until = 0;
    int rc = run_request(c, req, 0);
    if (rc == 0) {
        c->parked = req;
        if (!c->parked_until)
            c->parked_until = clock_now() + PARK_NS;
        return 0;
    }
    stackwatch__request__free_unpacked(req, NULL);
    return rc < 0 ? -1 : 0;
}

void ctl_retry_parked(srv_t *s, int deadline_only)
{
    uint64_t now = clock_now();
    conn_t *next;
    for (conn_t *c = s->conns; c; c = next) {
        next = c->next;
        if (c->kind != CONN_CONTROL || !c->parked)
            continue;
        int force = now >= c->parked_until;
        if (deadline_only && !force)
            continue;
        Stackwatch__Request *req = c->parked;
        c->parked = NULL; /* a close inside run_request must not free it too */
        int rc = run_request(c, req, force);
        if (rc == 0) {
            c->parked = req;
            continue;
        }
        stackwatch__request__free_unpacked(req, NULL);
    }
}

void ctl_forget(conn_t *c)
{
    if (c->parked) {
        stackwatch__request__free_unpacked(c->parked, NULL);
        c->parked = NULL;
    }
}

void ctl_retry_flagged(srv_t *s)
{
    int f = s->retry_parked;
    s->retry_parked = 0;
    if (f)
        ctl_retry_parked(s, !(f & SRV_RETRY_ALL));
}
