/* collectord's arming: stacks armed in their agents by rules, --on-leak and Python captures; signals back to clients. */
#include "arming.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "client.h"
#include "clock.h"
#include "conn.h"
#include "frame.h"
#include "log.h"
#include "symq.h"
#include "trig.h"

static int send_command(client_t *c, Stackwatch__Command__Kind kind, uint32_t idx, int sig,
                        uint32_t count, int python, int quiet)
{
    if (!c->conn)
        return -ENOTCONN;
    Stackwatch__Command cmd = STACKWATCH__COMMAND__INIT;
    cmd.kind = kind;
    cmd.n_stacks = 1;
    cmd.stacks = &idx;
    cmd.signal = sig;
    cmd.count = count;
    cmd.python = python;
    cmd.quiet = quiet;
    Stackwatch__CollectorMsg m = STACKWATCH__COLLECTOR_MSG__INIT;
    m.msg_case = STACKWATCH__COLLECTOR_MSG__MSG_COMMAND;
    m.command = &cmd;
    int rc = conn_send_msg(c->conn, &m, FRAME_MAX_COMMAND);
    if (rc < 0)
        conn_close(c->conn, "cannot queue a command (the agent does not read)");
    return rc;
}

/* Arms a stack in its (connected) agent: count firings, raising sig (0:
 * none), capturing Python frames where the client has them. kind is ARM_*.
 * Returns 0 or -ENOTCONN/-ENOBUFS. */
static int arm(srv_t *s, client_t *c, cstack_t *st, int kind, uint32_t rule, int sig,
               uint32_t count)
{
    (void)s;
    /* Automatic Python captures are silent; what the user asked for logs. */
    int rc = send_command(c, STACKWATCH__COMMAND__KIND__ARM, st->index, sig, count,
                          c->python_version != 0, kind == ARM_PYTHON);
    if (rc < 0)
        return rc;
    st->arm_kind = (uint8_t)kind;
    st->arm_rule = rule;
    st->arm_left = count;
    st->arm_may_n = st->exp_n - st->fexp_n;
    return 0;
}

void arming_disarm(srv_t *s, client_t *c, cstack_t *st)
{
    (void)s;
    if (st->arm_kind == ARM_NONE)
        return;
    send_command(c, STACKWATCH__COMMAND__KIND__DISARM, st->index, 0, 0, 0, 0);
    st->arm_kind = ARM_NONE;
    st->arm_rule = 0;
    st->arm_left = 0;
}

void arming_eval(srv_t *s, client_t *c, cstack_t *st)
{
    if (!s->trig.n || !c->conn || !st->defined || st->arm_kind == ARM_RULE || c->ending)
        return;
    trig_rule_t *r = trig_match(&s->trig, c, st);
    if (!r)
        return;
    if (client_sampled(c) && c->rule_armed >= ARMING_SAMPLED_BUDGET &&
        st->klass != CLASS_LEAK && st->klass != CLASS_GROWING)
        return; /* the agent watches few call sites: leaking stacks get them
                 * (evaluated again when this one is classified a leak) */
    if (arm(s, c, st, ARM_RULE, r->id, r->sig, r->count) == 0) {
        r->armed++;
        c->rule_armed++;
        log_msg("rule %u armed stack %016llx of pid %u (%u firings%s)", r->id,
                (unsigned long long)st->id, c->pid, r->count, r->sig ? ", with a signal" : "");
    }
}

/* Stacks most likely to be what a rule is after come first: leaking ones,
 * then the busiest. */
static int by_need(const void *a, const void *b)
{
    const cstack_t *x = *(cstack_t *const *)a, *y = *(cstack_t *const *)b;
    uint64_t mx = x->exp_b - x->fexp_b, my = y->exp_b - y->fexp_b;
    if (mx != my)
        return mx > my ? -1 : 1;
    if (x->alloc_n != y->alloc_n)
        return x->alloc_n > y->alloc_n ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

void arming_eval_all(srv_t *s)
{
    int names = trig_needs_symbols(&s->trig);
    for (client_t *c = s->clients.head; c; c = c->next) {
        if (!c->conn)
            continue;
        cstack_t **order = names && c->nstacks ? malloc(c->nstacks * sizeof *order) : NULL;
        uint32_t n = 0;
        for (uint32_t i = 0; i < c->nstacks; i++) {
            cstack_t *st = c->slist[i];
            if (!st || !st->defined)
                continue;
            if (names && st->sym_state == SYM_NONE) {
                if (order)
                    order[n++] = st;
                else
                    symq_stack(s, c, st, 0); /* out of memory: in first-use order */
                continue; /* evaluated when its frames are in */
            }
            arming_eval(s, c, st);
        }
        if (order) {
            qsort(order, n, sizeof *order, by_need);
            for (uint32_t i = 0; i < n; i++)
                symq_stack(s, c, order[i], order[i]->exp_n > order[i]->fexp_n);
            free(order);
        }
    }
}

/* 1 if pid catches sig, from the SigCgt mask in /proc/PID/status. */
static int catches(pid_t pid, int sig)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    int yes = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long mask;
        if (sscanf(line, "SigCgt: %llx", &mask) == 1) {
            yes = sig >= 1 && sig <= 64 && (mask >> (sig - 1)) & 1;
            break;
        }
    }
    fclose(f);
    return yes;
}

/* Sends sig to the client's process through the pidfd of its live
 * connection, only if the process catches sig (/proc/PID/status SigCgt).
 * Returns 0, -ENOTCONN, -ESRCH (no handler) or -errno. */
static int send_signal(srv_t *s, client_t *c, int sig)
{
    (void)s;
    conn_t *conn = c->conn;
    if (!conn || conn->pidfd < 0)
        return -ENOTCONN;
    if (!catches(conn->peer_pid, sig)) {
        log_msg("not signalling pid %d with %d: it has no handler (the default action would "
                "end it)", (int)conn->peer_pid, sig);
        return -ESRCH;
    }
    if (syscall(SYS_pidfd_send_signal, conn->pidfd, sig, NULL, 0) < 0) {
        int e = errno;
        log_msg("pidfd_send_signal to pid %d: %s", (int)conn->peer_pid, strerror(e));
        return -e;
    }
    log_msg("signalled pid %d with %d (a stack became may-leak)", (int)conn->peer_pid, sig);
    return 0;
}

/* A stack's first block just became may-leak: --on-leak signals and arms it;
 * for a Python client it is armed for a few captures of the Python line. */
void arming_first_leak(srv_t *s, client_t *c, cstack_t *st)
{
    /* Rules deferred by the sampled budget see it now (or once its frames
     * are in). */
    arming_eval(s, c, st);
    if (!c->conn || st->arm_kind == ARM_RULE || c->ending)
        return;
    if (s->opts.on_leak_sig) {
        send_signal(s, c, s->opts.on_leak_sig);
        arm(s, c, st, ARM_ON_LEAK, 0, s->opts.on_leak_sig, 1);
        return;
    }
    if (c->python_version && s->opts.py_captures && st->arm_kind == ARM_NONE) {
        arm(s, c, st, ARM_PYTHON, 0, 0, s->opts.py_captures);
        st->arm_rounds = 1;
    }
}

/* Automatic Python captures used up, all of their blocks freed, yet the
 * stack keeps leaking: the captures hit harmless lines sharing the C stack.
 * Try again, a few rounds at most. */
void arming_rearm_python(srv_t *s, client_t *c)
{
    if (!c->conn || !c->python_version || !s->opts.py_captures)
        return;
    for (uint32_t i = 0; i < c->nstacks; i++) {
        cstack_t *st = c->slist[i];
        if (!st || st->arm_kind != ARM_PYTHON || st->arm_left || st->arm_rounds >= 4)
            continue;
        if (st->exp_n - st->fexp_n <= st->arm_may_n)
            continue;
        /* A captured block still live may yet expire and blame its line:
         * wait for that before capturing more. */
        int waiting = 0;
        for (uint32_t k = 0; k < c->npytbs && !waiting; k++)
            waiting = c->pytbs[k].stack == st->index && c->pytbs[k].live_n > 0;
        if (waiting)
            continue;
        if (arm(s, c, st, ARM_PYTHON, 0, 0, s->opts.py_captures) == 0)
            st->arm_rounds++;
    }
}
