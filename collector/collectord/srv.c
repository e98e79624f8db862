/* collectord's event loop: listeners, signals, the aging timer, symbolization results. */
#include "srv.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "scan.h"
#include "frame.h"
#include "proto/stackwatch.pb-c.h"
#include "sym.h"
#include "wrap.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

void srv_log(const char *fmt, ...)
{
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s collectord[%d]: %s\n", ts, (int)getpid(), msg);
    fflush(stderr);
}

static uint64_t real_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void srv_log_throttled(srv_throttle_t *t, const char *fmt, ...)
{
    uint64_t now = real_now();
    if (t->last_ns && now - t->last_ns < SRV_LOG_EVERY_NS) {
        t->held++;
        return;
    }
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (t->held)
        srv_log("%s (and %llu more times in the last %.0f s)", msg, (unsigned long long)t->held,
                (double)(now - t->last_ns) / 1e9);
    else
        srv_log("%s", msg);
    t->last_ns = now;
    t->held = 0;
}

void srv_log_flush(srv_throttle_t *t, const char *what)
{
    uint64_t now = real_now();
    if (!t->held || now - t->last_ns < SRV_LOG_EVERY_NS)
        return;
    srv_log("%s %llu more times in the last %.0f s", what, (unsigned long long)t->held,
            (double)(now - t->last_ns) / 1e9);
    t->last_ns = now;
    t->held = 0;
}

/* --test-clock: collectord's "now" is driven by Tick requests (tests),
 * starting where the real clock was; the aging timer is not started. */
static int virt_clock;
static uint64_t virt_now;

void srv_clock_virtual(void)
{
    virt_now = srv_now();
    virt_clock = 1;
}

int srv_clock_is_virtual(void)
{
    return virt_clock;
}

uint64_t srv_now(void)
{
    if (virt_clock)
        return virt_now;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- listening */

static int listen_on(const char *path, char *err, size_t errlen)
{
    int live = rundir_probe_socket(path);
    if (live == 1) {
        snprintf(err, errlen, "another process is serving %s", path);
        return -EADDRINUSE;
    }
    if (live == 0 && unlink(path) == 0)
        srv_log("removed stale socket %s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "socket: %s", strerror(e));
        return -e;
    }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, path, strlen(path) + 1);
    mode_t old = umask(0177); /* the socket file is created 0600 */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc < 0 || chmod(path, 0600) < 0 || listen(fd, 128) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    return fd;
}

int srv_listen(srv_t *s, char *err, size_t errlen)
{
    s->agent_fd = listen_on(s->rd.agent_sock, err, errlen);
    if (s->agent_fd < 0)
        return s->agent_fd;
    s->control_fd = listen_on(s->rd.control_sock, err, errlen);
    if (s->control_fd < 0) {
        close(s->agent_fd);
        unlink(s->rd.agent_sock);
        return s->control_fd;
    }
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return 0;
}

/* Only processes of collectord's own user, and root, may talk to it, on
 * either socket: the directory's 0700 already keeps others out; this holds
 * even if its mode was loosened or a socket passed on. A refused peer is
 * closed at once (fd closed here). Returns 1 if allowed. */
static int peer_allowed(srv_t *s, int fd, int kind)
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 &&
        (cr.uid == geteuid() || cr.uid == 0))
        return 1;
    s->refused++;
    if (s->refused <= 10 || s->refused % 1000 == 0)
        srv_log("refused %s connection %llu from uid %d (pid %d): collectord serves uid %u "
                "and root only", kind == CONN_AGENT ? "an agent" : "a control",
                (unsigned long long)s->refused, len == sizeof cr ? (int)cr.uid : -1,
                len == sizeof cr ? (int)cr.pid : -1, (unsigned)geteuid());
    close(fd);
    return 0;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_t *s = w->data;
    int kind = w == &s->agent_w ? CONN_AGENT : CONN_CONTROL;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of fds: free the spare, accept and close so the peer
                 * sees an immediate EOF instead of hanging in the backlog. */
                srv_log_throttled(&s->log_nofd, "out of file descriptors; refusing a connection");
                if (s->spare_fd >= 0) {
                    close(s->spare_fd);
                    int tmp = accept(w->fd, NULL, NULL);
                    if (tmp >= 0)
                        close(tmp);
                    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                }
            }
            return;
        }
        if (!peer_allowed(s, fd, kind))
            continue;
        conn_new(s, fd, kind);
    }
}

/* ---------------------------------------------------------------- symbolization */

void srv_sym_stack(srv_t *s, client_t *c, cstack_t *st, int urgent)
{
    (void)s;
    if (st->sym_state != SYM_NONE || !st->defined)
        return;
    sym_job_t *j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->client_serial = c->serial;
    j->stack_index = st->index;
    j->pid = c->state == CLIENT_CONNECTED ? c->pid : 0;
    j->npcs = st->npcs;
    j->pcs = malloc((st->npcs ? st->npcs : 1) * sizeof *j->pcs);
    j->pc_mod = malloc((st->npcs ? st->npcs : 1) * sizeof *j->pc_mod);
    uint32_t mods_cap = 4;
    j->mods = calloc(mods_cap, sizeof *j->mods);
    if (!j->pcs || !j->pc_mod || !j->mods)
        goto fail;
    for (uint32_t i = 0; i < st->npcs; i++) {
        j->pcs[i] = cstack_pc(c, st, i);
        j->pc_mod[i] = -1;
        const cmod_t *m = client_module_at(c, j->pcs[i], st->gen);
        if (!m)
            continue;
        uint32_t k;
        for (k = 0; k < j->nmods; k++)
            if (strcmp(j->mods[k].path, m->path) == 0 && j->mods[k].bias == m->bias)
                break;
        if (k == j->nmods) {
            if (j->nmods == mods_cap) {
                sym_mod_t *nm = realloc(j->mods, 2 * mods_cap * sizeof *nm);
                if (!nm)
                    goto fail;
                memset(nm + mods_cap, 0, mods_cap * sizeof *nm);
                j->mods = nm;
                mods_cap *= 2;
            }
            sym_mod_t *sm = &j->mods[j->nmods];
            sm->path = strdup(m->path);
            if (!sm->path)
                goto fail;
            memcpy(sm->build_id, m->build_id, m->build_id_len);
            sm->build_id_len = m->build_id_len;
            sm->bias = m->bias;
            sm->lo = m->nranges ? m->ranges[0] : 0;
            j->nmods++;
        }
        j->pc_mod[i] = (int32_t)k;
    }
    st->sym_state = SYM_PENDING;
    st->sym_urgent = (uint8_t)(urgent != 0);
    st->sym_tried = srv_now();
    if (sym_submit(j, urgent) < 0) {
        /* No worker thread: module+offset frames now, never DWARF on the loop. */
        st->sym = sym_fallback(j);
        st->sym_state = st->sym ? SYM_DONE : SYM_NONE;
        st->skip = 0;
        sym_job_free(j);
    }
    return;
fail:
    sym_job_free(j);
}

/* ---------------------------------------------------------------- arming */

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

int srv_arm(srv_t *s, client_t *c, cstack_t *st, int kind, uint32_t rule, int sig, uint32_t count)
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

void srv_disarm(srv_t *s, client_t *c, cstack_t *st)
{
    (void)s;
    if (st->arm_kind == ARM_NONE)
        return;
    send_command(c, STACKWATCH__COMMAND__KIND__DISARM, st->index, 0, 0, 0, 0);
    st->arm_kind = ARM_NONE;
    st->arm_rule = 0;
    st->arm_left = 0;
}

void srv_trig_eval(srv_t *s, client_t *c, cstack_t *st)
{
    if (!s->trig.n || !c->conn || !st->defined || st->arm_kind == ARM_RULE || c->ending)
        return;
    trig_rule_t *r = trig_match(&s->trig, c, st);
    if (!r)
        return;
    if (c->sample_bytes && c->rule_armed >= SRV_SAMPLED_ARM_BUDGET &&
        st->klass != CLASS_LEAK && st->klass != CLASS_GROWING)
        return; /* the agent watches few call sites: leaking stacks get them
                 * (evaluated again when this one is classified a leak) */
    if (srv_arm(s, c, st, ARM_RULE, r->id, r->sig, r->count) == 0) {
        r->armed++;
        c->rule_armed++;
        srv_log("rule %u armed stack %016llx of pid %u (%u firings%s)", r->id,
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

/* ---------------------------------------------------------------- reachability scans */

#define SCAN_AGENT_NS (5ull * 1000000000)    /* the agent answers a SCAN_* within this */
#define SCAN_READ_NS (300ull * 1000000000)   /* copy and mark, for the largest process */
#define SCAN_DEAD_MAX 1024u                  /* dead threads' frames taken from one reply */

static uint64_t loop_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int send_scan_cmd(client_t *c, Stackwatch__Command__Kind kind)
{
    if (!c->conn)
        return -ENOTCONN;
    Stackwatch__Command cmd = STACKWATCH__COMMAND__INIT;
    cmd.kind = kind;
    cmd.token = c->scan_token;
    cmd.tracer_pid = (uint32_t)getpid();
    Stackwatch__CollectorMsg m = STACKWATCH__COLLECTOR_MSG__INIT;
    m.msg_case = STACKWATCH__COLLECTOR_MSG__MSG_COMMAND;
    m.command = &cmd;
    int rc = conn_send_msg(c->conn, &m, FRAME_MAX_COMMAND);
    if (rc < 0)
        conn_close(c->conn, "cannot queue a command (the agent does not read)");
    return rc;
}

/* Worker thread: wake the loop. */
static void scan_wake(void *arg)
{
    srv_t *s = arg;
    ev_async_send(s->loop, &s->scan_async);
}

/* Doubles a gathering array (256 entries at first); on failure sets *oom. */
static int grow(void **v, size_t *cap, size_t size, int *oom)
{
    size_t c = *cap ? 2 * *cap : 256;
    void *nv = realloc(*v, c * size);
    if (!nv) {
        *oom = 1;
        return -1;
    }
    *v = nv;
    *cap = c;
    return 0;
}

/* The owners of indirectly lost blocks, gathered over a scan's snapshot. */
typedef struct owners_s {
    scan_own_t *v;
    size_t n, cap;
    int oom;
} owners_t;

static void owners_add(owners_t *o, uint32_t stack, uint32_t owner, uint64_t n, uint64_t b)
{
    if (o->n && o->v[o->n - 1].stack == stack && o->v[o->n - 1].owner == owner) {
        o->v[o->n - 1].n += n; /* the common case: a run of one owner's blocks */
        o->v[o->n - 1].b += b;
        return;
    }
    if (o->n == o->cap && grow((void **)&o->v, &o->cap, sizeof *o->v, &o->oom) < 0)
        return;
    o->v[o->n++] = (scan_own_t){ stack, owner, n, b };
}

static int own_by_pair(const void *a, const void *b)
{
    const scan_own_t *x = a, *y = b;
    if (x->stack != y->stack)
        return x->stack < y->stack ? -1 : 1;
    return x->owner < y->owner ? -1 : x->owner > y->owner;
}

static int own_by_size(const void *a, const void *b)
{
    const scan_own_t *x = a, *y = b;
    if (x->stack != y->stack)
        return x->stack < y->stack ? -1 : 1;
    if (x->b != y->b)
        return x->b > y->b ? -1 : 1;
    return x->owner < y->owner ? -1 : x->owner > y->owner;
}

/* Merges the pairs, keeps the SCAN_OWNERS_MAX largest owners of each stack
 * as the client's (replacing the last scan's); takes o's memory. */
static void owners_keep(owners_t *o, client_t *c)
{
    free(c->scan_own);
    c->scan_own = NULL;
    c->nscan_own = 0;
    if (o->oom || !o->n) {
        if (o->oom)
            srv_log("pid %u: out of memory for the owners of lost blocks", c->pid);
        free(o->v);
        return;
    }
    qsort(o->v, o->n, sizeof *o->v, own_by_pair);
    size_t k = 0;
    for (size_t i = 0; i < o->n; i++) {
        if (k && o->v[k - 1].stack == o->v[i].stack && o->v[k - 1].owner == o->v[i].owner) {
            o->v[k - 1].n += o->v[i].n;
            o->v[k - 1].b += o->v[i].b;
        } else {
            o->v[k++] = o->v[i];
        }
    }
    qsort(o->v, k, sizeof *o->v, own_by_size);
    size_t m = 0, run = 0;
    for (size_t i = 0; i < k; i++) {
        run = i && o->v[i].stack == o->v[i - 1].stack ? run + 1 : 0;
        if (run < SCAN_OWNERS_MAX)
            o->v[m++] = o->v[i];
    }
    scan_own_t *v = realloc(o->v, m * sizeof *v);
    c->scan_own = v ? v : o->v;
    c->nscan_own = m;
}

/* Why reachable may-leak blocks are kept: one chain per block (its parents
 * up to the root), gathered, the most common per stack kept. */
typedef struct paths_s {
    scan_path_t *v;
    size_t n, cap;
    int oom;
} paths_t;

static void path_of(const scan_job_t *j, size_t i, scan_path_t *p)
{
    memset(p, 0, sizeof *p);
    p->stack = j->snap[i].stack;
    uint32_t chain[64], n = 0, last = p->stack;
    size_t x = i;
    /* Outward from the block; runs of one stack (a list's links) once. */
    while (j->snap[x].parent != SCAN_PARENT_ROOT && j->snap[x].parent < j->nsnap && n < 64) {
        x = j->snap[x].parent;
        if (j->snap[x].stack != last)
            chain[n++] = last = j->snap[x].stack;
    }
    uint32_t lab = j->snap[x].parent == SCAN_PARENT_ROOT ? j->snap[x].label : UINT32_MAX;
    p->root = lab < j->nlabels ? j->labels[lab] : "a chain longer than 64 blocks";
    p->cut = n > SCAN_PATH_HOPS;
    p->nhops = n > SCAN_PATH_HOPS ? SCAN_PATH_HOPS : n;
    for (uint32_t k = 0; k < p->nhops; k++)
        p->hop[k] = chain[n - 1 - k]; /* root side first */
}

static int path_same(const scan_path_t *a, const scan_path_t *b)
{
    return a->stack == b->stack && a->root == b->root && a->nhops == b->nhops &&
           !memcmp(a->hop, b->hop, a->nhops * sizeof *a->hop);
}

static int path_by_key(const void *x, const void *y)
{
    const scan_path_t *a = x, *b = y;
    if (a->stack != b->stack)
        return a->stack < b->stack ? -1 : 1;
    if (a->root != b->root)
        return (uintptr_t)a->root < (uintptr_t)b->root ? -1 : 1;
    if (a->nhops != b->nhops)
        return a->nhops < b->nhops ? -1 : 1;
    return memcmp(a->hop, b->hop, a->nhops * sizeof *a->hop);
}

static int path_by_count(const void *x, const void *y)
{
    const scan_path_t *a = x, *b = y;
    if (a->stack != b->stack)
        return a->stack < b->stack ? -1 : 1;
    if (a->n != b->n)
        return a->n > b->n ? -1 : 1;
    return path_by_key(x, y);
}

static void paths_add(paths_t *ps, const scan_job_t *j, size_t i, uint64_t n, uint64_t b)
{
    scan_path_t p;
    path_of(j, i, &p);
    p.n = n;
    p.b = b;
    if (ps->n && path_same(&ps->v[ps->n - 1], &p)) {
        ps->v[ps->n - 1].n += n;
        ps->v[ps->n - 1].b += b;
        return;
    }
    if (ps->n == ps->cap && grow((void **)&ps->v, &ps->cap, sizeof *ps->v, &ps->oom) < 0)
        return;
    ps->v[ps->n++] = p;
}

/* Merges equal chains, keeps the SCAN_PATHS_MAX most common per stack as
 * the client's, with the scan's labels (taken from the job). */
static void paths_keep(paths_t *ps, client_t *c, scan_job_t *j)
{
    free(c->scan_paths);
    for (size_t i = 0; i < c->nscan_labels; i++)
        free(c->scan_labels[i]);
    free(c->scan_labels);
    c->scan_paths = NULL;
    c->nscan_paths = 0;
    c->scan_labels = j->labels;
    c->nscan_labels = j->nlabels;
    j->labels = NULL;
    j->nlabels = 0;
    if (ps->oom || !ps->n) {
        if (ps->oom)
            srv_log("pid %u: out of memory for the retention paths", c->pid);
        free(ps->v);
        return;
    }
    qsort(ps->v, ps->n, sizeof *ps->v, path_by_key);
    size_t k = 0;
    for (size_t i = 0; i < ps->n; i++) {
        if (k && path_same(&ps->v[k - 1], &ps->v[i])) {
            ps->v[k - 1].n += ps->v[i].n;
            ps->v[k - 1].b += ps->v[i].b;
        } else {
            ps->v[k++] = ps->v[i];
        }
    }
    qsort(ps->v, k, sizeof *ps->v, path_by_count);
    for (size_t i = 0, first = 0; i <= k; i++) {
        if (i < k && ps->v[i].stack == ps->v[first].stack)
            continue;
        uint64_t of = 0; /* a stack's samples: all its chains */
        for (size_t x = first; x < i; x++)
            of += ps->v[x].n;
        for (size_t x = first; x < i; x++)
            ps->v[x].of_n = of;
        first = i;
    }
    size_t m = 0, run = 0;
    for (size_t i = 0; i < k; i++) {
        run = i && ps->v[i].stack == ps->v[i - 1].stack ? run + 1 : 0;
        if (run < SCAN_PATHS_MAX)
            ps->v[m++] = ps->v[i];
    }
    scan_path_t *v = realloc(ps->v, (m ? m : 1) * sizeof *v);
    c->scan_paths = v ? v : ps->v;
    c->nscan_paths = m;
}

/* The scan is over, well or not: results into the table, the agent told,
 * waiting requests answered. */
static void scan_finish(srv_t *s, client_t *c, int err, const char *msg)
{
    scan_job_t *j = c->scan;
    uint64_t cpu0 = loop_cpu_ns();
    if (j && atomic_load(&j->stage) == SCAN_DONE && !err && c->atab_ok) {
        scan_info_t *si = &c->scan_last;
        memset(si, 0, sizeof *si);
        owners_t ow = { 0 };
        paths_t ps = { 0 };
        size_t sampled_cap = c->stacks_cap;
        uint8_t *sampled = calloc(sampled_cap ? sampled_cap : 1, 1); /* per stack index */
        if (!sampled) {
            sampled_cap = 0;
            ps.oom = 1;
        }
        for (size_t i = 0; i < j->nsnap; i++) {
            const scan_ent_t *e = &j->snap[i];
            atab_ent_t *a = atab_find(&c->atab, e->addr);
            uint64_t wn, wb;
            client_weight(c, e->size, a ? a->flags : 0, &wn, &wb);
            int indirect = !e->reach && e->owner != i && e->owner < j->nsnap;
            si->blocks_n += wn;
            si->blocks_b += wb;
            if (e->reach) {
                si->reach_n += wn;
                si->reach_b += wb;
            } else {
                si->unreach_n += wn;
                si->unreach_b += wb;
            }
            if (indirect) {
                si->indirect_n += wn;
                si->indirect_b += wb;
                owners_add(&ow, e->stack, j->snap[e->owner].stack, wn, wb);
            }
            if (!a || a->ts != e->ts)
                continue; /* freed since (or another block at the address) */
            if (e->reach && (a->flags & ATAB_F_EXPIRED) && e->stack < sampled_cap &&
                sampled[e->stack] < SCAN_PATH_SAMPLES) {
                sampled[e->stack]++;
                paths_add(&ps, j, i, 1, e->size); /* reachable, yet may leak: why kept? */
            }
            a->flags = (a->flags & ~(uint64_t)(ATAB_F_SCANNED | ATAB_F_UNREACH | ATAB_F_INDIRECT)) |
                       ATAB_F_SCANNED | (e->reach ? 0 : ATAB_F_UNREACH) |
                       (indirect ? ATAB_F_INDIRECT : 0);
        }
        owners_keep(&ow, c);
        paths_keep(&ps, c, j);
        free(sampled);
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        si->time_ms = (uint64_t)rt.tv_sec * 1000u + (uint64_t)rt.tv_nsec / 1000000u;
        si->pause_us = j->pause_ns / 1000u;
        si->dur_us = j->dur_ns / 1000u;
        si->threads = j->threads;
        si->busy_threads = c->scan_busy;
        si->root_bytes = j->root_bytes;
        si->read_bytes = j->read_bytes;
        si->heap_roots = j->heap_roots;
        c->scan_ok = 1;
        client_end_scanned(c); /* scanned after main returned: the ended report keeps it */
        c->scan_err = 0;
        c->scan_msg[0] = '\0';
        c->scan_loop_ns += loop_cpu_ns() - cpu0;
        si->cpu_us = (j->cpu_ns + c->scan_loop_ns) / 1000u;
        srv_log("pid %u: scan of %llu live blocks: %llu unreachable (%llu bytes); paused %.1f ms "
                "(stop %.1f, sync %.1f, copy %.1f of %.1f MiB, %.1f of it reading), marking %.1f ms, "
                "%.1f ms in all",
                c->pid, (unsigned long long)si->blocks_n, (unsigned long long)si->unreach_n,
                (unsigned long long)si->unreach_b, si->pause_us / 1000.0, j->stop_ns / 1e6,
                j->sync_ns / 1e6, j->copy_ns / 1e6, j->read_bytes / 1048576.0,
                j->read_ns / 1e6, j->mark_ns / 1e6, si->dur_us / 1000.0);
    } else {
        c->scan_err = err ? err : (j && j->err ? j->err : -EIO);
        snprintf(c->scan_msg, sizeof c->scan_msg, "%s",
                 msg ? msg : (j && j->msg[0] ? j->msg : !c->atab_ok ? "the process ended "
                                                                     "during the scan"
                                                                   : "the scan failed"));
        srv_log("pid %u: scan failed: %s", c->pid, c->scan_msg);
    }
    c->scan_state = SCAN_ST_NONE;
    c->scan = NULL;
    scan_job_free(j);
    /* The scan's working memory (its copy aside, which is unmapped) came
     * from the worker's malloc arena: hand the free pages back now, or
     * collectord keeps the peak of its largest scan (issue 19.6). */
    malloc_trim(0);
    if (c->scan_allowed)
        send_scan_cmd(c, STACKWATCH__COMMAND__KIND__SCAN_END);
    c->scan_allowed = 0;
    c->scan_seq++;
    ctl_retry_parked(s, 0);
}

static int heap_roots(const client_t *c)
{
    /* The table does not hold every live block: untracked blocks may hold
     * the only pointer to tracked ones. */
    return c->attached || c->sample_bytes || c->gaps || c->lost_events || c->table_full ||
           c->a_lost_disc || c->a_dropped;
}

int srv_scan_start(srv_t *s, client_t *c, char *err, size_t errlen)
{
    (void)s;
    if (!c->conn || c->state != CLIENT_CONNECTED) {
        snprintf(err, errlen, "pid %u is not connected", c->pid);
        return -ENOTCONN;
    }
    if (!c->flusher_tid) {
        snprintf(err, errlen, "the agent of pid %u does not support scans (an older agent?)",
                 c->pid);
        return -ENOTSUP;
    }
    if (c->scan_state != SCAN_ST_NONE) {
        snprintf(err, errlen, "a scan of pid %u is running", c->pid);
        return -EBUSY;
    }
    static uint64_t serial;
    uint64_t tok = (srv_now() << 16) ^ ++serial ^ ((uint64_t)c->pid << 40);
    c->scan_token = tok;
    c->scan_loop_ns = 0;
    c->scan_busy = 0;
    c->scan_allowed = 0;
    /* Straight to the worker: the agent is asked to allow ptrace only if
     * Yama refuses it (SCAN_NEED_TRACER), so a program's own
     * PR_SET_PTRACER setting is not touched when it need not be. */
    c->scan = scan_job_start((pid_t)c->pid, (pid_t)c->flusher_tid, heap_roots(c),
                             c->atab_ok ? c->atab.live : 0, scan_wake, s);
    if (!c->scan) {
        snprintf(err, errlen, "cannot start the scan thread");
        return -ENOMEM;
    }
    c->scan_state = SCAN_ST_FREEZE;
    c->scan_deadline = srv_now() + SCAN_AGENT_NS + 10ull * 1000000000;
    return 0;
}


typedef struct snap_ctx_s {
    scan_ent_t *v;
    size_t n, cap;
} snap_ctx_t;

static void snap_one(void *ctx, atab_ent_t *e)
{
    snap_ctx_t *s = ctx;
    if (s->n < s->cap)
        s->v[s->n++] = (scan_ent_t){ e->addr, e->size, e->ts, e->stack, 0, 0, 0, 0 };
}

void srv_scan_reply(srv_t *s, client_t *c, const Stackwatch__ScanReply *r)
{
    if (!c || c->scan_state == SCAN_ST_NONE || r->token != c->scan_token)
        return; /* a late answer to a scan given up */
    if (r->phase == 1 && c->scan_state == SCAN_ST_BEGIN) {
        if (r->ptracer < 0)
            srv_log("pid %u: the agent could not allow the scan (PR_SET_PTRACER: %s)", c->pid,
                    strerror(-r->ptracer));
        scan_job_retry(c->scan);
        c->scan_state = SCAN_ST_FREEZE;
        c->scan_deadline = srv_now() + SCAN_AGENT_NS + 10ull * 1000000000;
    } else if (r->phase == 2 && c->scan_state == SCAN_ST_SYNC) {
        uint64_t cpu0 = loop_cpu_ns();
        /* Every event of the frozen threads is in: the table is the
         * process's heap as of now. */
        size_t n = c->atab_ok ? c->atab.live : 0;
        snap_ctx_t sc = { scan_job_snap_buf(c->scan, n), 0, n };
        size_t npairs = r->n_regions / 2, ndead = r->n_dead_stacks / 3;
        if (ndead > SCAN_DEAD_MAX)
            ndead = SCAN_DEAD_MAX;
        uint64_t *reg = malloc((2 * npairs + 3 * ndead + 2) * sizeof *reg);
        if (!sc.v || !reg) {
            free(reg);
            scan_job_abort(c->scan, "out of memory for the snapshot");
            return;
        }
        if (n)
            atab_each(&c->atab, snap_one, &sc);
        size_t k = 0;
        for (size_t i = 0; i < npairs; i++)
            if (r->regions[2 * i] < r->regions[2 * i + 1]) {
                reg[2 * k] = r->regions[2 * i];
                reg[2 * k + 1] = r->regions[2 * i + 1];
                k++;
            }
        size_t kd = 0;
        for (size_t i = 0; i < ndead; i++) {
            const uint64_t *d = &r->dead_stacks[3 * i];
            if (d[0] < d[1] && d[1] <= d[2]) {
                memcpy(&reg[2 * k + 3 * kd], d, 3 * sizeof *d);
                kd++;
            }
        }
        c->scan_busy = r->busy_threads;
        scan_job_snapshot(c->scan, sc.v, sc.n, reg, k, kd);
        c->scan_state = SCAN_ST_READ;
        c->scan_deadline = srv_now() + SCAN_READ_NS;
        c->scan_loop_ns += loop_cpu_ns() - cpu0;
    }
}

void srv_scan_abort(srv_t *s, client_t *c, const char *why)
{
    if (c->scan_state == SCAN_ST_NONE)
        return;
    if (!c->scan) {
        scan_finish(s, c, -ECANCELED, why);
        return;
    }
    scan_job_abort(c->scan, why);
    /* The worker ends SCAN_FAILED and wakes the loop (scan_async_cb). */
}

static void scan_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_t *s = w->data;
    client_t *next;
    for (client_t *c = s->clients.head; c; c = next) {
        next = c->next;
        if (!c->scan)
            continue;
        int st = atomic_load(&c->scan->stage);
        if (st == SCAN_NEED_TRACER && c->scan_state == SCAN_ST_FREEZE) {
            c->scan_state = SCAN_ST_BEGIN;
            c->scan_allowed = 1;
            c->scan_deadline = srv_now() + SCAN_AGENT_NS;
            send_scan_cmd(c, STACKWATCH__COMMAND__KIND__SCAN_BEGIN);
        } else if (st == SCAN_FROZEN && c->scan_state == SCAN_ST_FREEZE) {
            c->scan_state = SCAN_ST_SYNC;
            c->scan_deadline = srv_now() + SCAN_AGENT_NS;
            if (send_scan_cmd(c, STACKWATCH__COMMAND__KIND__SCAN_SYNC) < 0)
                continue; /* conn_close aborted it */
        } else if (st == SCAN_DONE || st == SCAN_FAILED) {
            scan_finish(s, c, 0, NULL);
        }
    }
}

/* Age timer: scans whose agent or worker is overdue are given up. */
static void scan_check_deadlines(srv_t *s, uint64_t now)
{
    for (client_t *c = s->clients.head; c; c = c->next) {
        if (c->scan_state == SCAN_ST_NONE || now < c->scan_deadline)
            continue;
        c->scan_deadline = UINT64_MAX; /* once */
        srv_scan_abort(s, c, c->scan_state == SCAN_ST_READ
                                 ? "the scan took too long"
                                 : "the agent did not answer (its flusher may wait for a lock "
                                   "that a stopped thread holds)");
    }
}

void srv_trig_scan(srv_t *s)
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
                    srv_sym_stack(s, c, st, 0); /* out of memory: in first-use order */
                continue; /* evaluated when its frames are in */
            }
            srv_trig_eval(s, c, st);
        }
        if (order) {
            qsort(order, n, sizeof *order, by_need);
            for (uint32_t i = 0; i < n; i++)
                srv_sym_stack(s, c, order[i], order[i]->exp_n > order[i]->fexp_n);
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

int srv_signal(srv_t *s, client_t *c, int sig)
{
    (void)s;
    conn_t *conn = c->conn;
    if (!conn || conn->pidfd < 0)
        return -ENOTCONN;
    if (!catches(conn->peer_pid, sig)) {
        srv_log("not signalling pid %d with %d: it has no handler (the default action would "
                "end it)", (int)conn->peer_pid, sig);
        return -ESRCH;
    }
    if (syscall(SYS_pidfd_send_signal, conn->pidfd, sig, NULL, 0) < 0) {
        int e = errno;
        srv_log("pidfd_send_signal to pid %d: %s", (int)conn->peer_pid, strerror(e));
        return -e;
    }
    srv_log("signalled pid %d with %d (a stack became may-leak)", (int)conn->peer_pid, sig);
    return 0;
}

/* A stack's first block just became may-leak: --on-leak signals and arms it;
 * for a Python client it is armed for a few captures of the Python line. */
static void on_first_leak(srv_t *s, client_t *c, cstack_t *st)
{
    /* Rules deferred by the sampled budget see it now (or once its frames
     * are in). */
    srv_trig_eval(s, c, st);
    if (!c->conn || st->arm_kind == ARM_RULE || c->ending)
        return;
    if (s->opts.on_leak_sig) {
        srv_signal(s, c, s->opts.on_leak_sig);
        srv_arm(s, c, st, ARM_ON_LEAK, 0, s->opts.on_leak_sig, 1);
        return;
    }
    if (c->python_version && s->opts.py_captures && st->arm_kind == ARM_NONE) {
        srv_arm(s, c, st, ARM_PYTHON, 0, 0, s->opts.py_captures);
        st->arm_rounds = 1;
    }
}

/* Automatic Python captures used up, all of their blocks freed, yet the
 * stack keeps leaking: the captures hit harmless lines sharing the C stack.
 * Try again, a few rounds at most. */
static void rearm_python(srv_t *s, client_t *c)
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
        if (srv_arm(s, c, st, ARM_PYTHON, 0, 0, s->opts.py_captures) == 0)
            st->arm_rounds++;
    }
}

static client_t *client_by_serial(srv_t *s, uint64_t serial)
{
    for (client_t *c = s->clients.head; c; c = c->next)
        if (c->serial == serial)
            return c;
    return NULL;
}

static void sym_eager(srv_t *s, client_t *c);

static void sym_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_t *s = w->data;
    sym_job_t *j;
    while ((j = sym_take_done())) {
        client_t *c = client_by_serial(s, j->client_serial);
        cstack_t *st = c ? cstack_at(c, j->stack_index) : NULL;
        if (st && st->sym_state == SYM_PENDING && j->result) {
            client_sym_done(c, st, j);
            st->skip = (uint16_t)wrap_count(cstack_sym(c, st));
            srv_trig_eval(s, c, st);
        } else if (st && st->sym_state == SYM_PENDING) {
            st->sym_state = SYM_NONE; /* out of memory: try again at query time */
        }
        sym_job_free(j);
    }
    if (sym_backlog() < SYM_EAGER_MAX / 2)
        for (client_t *c = s->clients.head; c; c = c->next)
            if (c->nsymq)
                sym_eager(s, c);
    ctl_retry_parked(s, 0);
}

static void sym_wake(void *arg)
{
    srv_t *s = arg;
    ev_async_send(s->loop, &s->sym_async);
}

static void save_due(srv_t *s, int force);

/* Before a graceful stop: ended reports waiting for symbols are stored as
 * they are, and every running process gets a snapshot its agent's
 * reconnect will be merged with. */
static void store_all(srv_t *s)
{
    if (!s->store.on)
        return;
    save_due(s, 1);
    uint32_t n = 0;
    for (client_t *c = s->clients.head; c; c = c->next)
        if (c->state == CLIENT_CONNECTED && ctl_store_client(s, c, 1) == 0)
            n++;
    if (n)
        srv_log("store: kept %u running process(es) for their reconnect", n);
}

/* ---------------------------------------------------------------- timers and signals */

/* ---------------------------------------------------------------- the store */

#define SAVE_WAIT_NS (30ull * 1000000000) /* longest an ended report waits for symbols */
#define SAVE_RETRY_NS (5ull * 1000000000) /* first wait after a failed write */

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void save_queue(srv_t *s, client_t *c)
{
    if (!s->store.on)
        return;
    if (s->nsaves == s->saves_cap) {
        uint32_t ncap = s->saves_cap ? s->saves_cap * 2 : 16;
        srv_save_t *ns = realloc(s->saves, ncap * sizeof *ns);
        if (!ns) {
            ctl_store_client(s, c, 0); /* now, with the frames as they are */
            return;
        }
        s->saves = ns;
        s->saves_cap = ncap;
    }
    s->saves[s->nsaves++] = (srv_save_t){ c->serial, srv_now() + SAVE_WAIT_NS, c->pid, 0 };
    ctl_client_symbolized(s, c);
}

/* Stores the ended reports whose frames are symbolized (all of them with
 * force, or past their deadline). A write that failed for a cause that may
 * pass (ENOSPC, EDQUOT, EIO...) stays queued and is tried again after
 * SAVE_RETRY_NS, doubling up to 32 times that, and at a graceful stop. */
static void save_due(srv_t *s, int force)
{
    uint64_t now = srv_now();
    for (uint32_t i = 0; i < s->nsaves;) {
        srv_save_t *sv = &s->saves[i];
        client_t *c = client_by_serial(s, sv->serial);
        if (c && c->state == CLIENT_CONNECTED) {
            /* It came back (a reconnect of the same image): stored when it ends. */
            *sv = s->saves[--s->nsaves];
            continue;
        }
        if (c && !force && now < sv->deadline && (sv->failed || !ctl_client_symbolized(s, c))) {
            i++;
            continue;
        }
        int rc = c ? ctl_store_client(s, c, 0) : -ESRCH;
        if (rc < 0 && c && !force && rc != -EFBIG && rc != -ENOTCONN) {
            sv->failed++;
            sv->deadline = now + (SAVE_RETRY_NS << (sv->failed < 6 ? sv->failed - 1 : 5));
            if (sv->failed == 1)
                srv_log("store: pid %u's report will be written again later (and at a "
                        "graceful stop)", sv->pid);
            i++;
            continue;
        }
        if (sv->failed && rc == 0)
            srv_log("store: pid %u's report written after %u failed attempt(s)", sv->pid,
                    sv->failed);
        else if (sv->failed)
            srv_log("store: pid %u's report is not stored: %s", sv->pid,
                    c ? "the last attempt failed too" : "no longer kept in memory (--retain)");
        *sv = s->saves[--s->nsaves];
    }
    if (s->store.on && now >= s->next_prune) {
        /* A taken-over snapshot whose client is gone from memory is only a file now. */
        for (uint32_t i = 0; i < s->store.n; i++) {
            store_rec_t *r = &s->store.recs[i];
            if (r->merged_serial && !client_by_serial(s, r->merged_serial)) {
                if (r->sp)
                    stackwatch__stored_process__free_unpacked(r->sp, NULL);
                r->sp = NULL;
                r->merged_serial = 0;
            }
        }
        store_prune(&s->store, realtime_ns());
        s->next_prune = now + 10ull * 1000000000;
    }
}

void srv_restore_client(srv_t *s, client_t *c)
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
        int64_t mono = (int64_t)srv_now() - off * 1000000;
        c->mark_ts = mono > 0 ? (uint64_t)mono : 1;
    }
    srv_log("pid %u reconnected after a collectord restart: merged with its report of %llu "
            "ms ago", c->pid, (unsigned long long)r->merged_gap_ms);
}

static void age_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_t *s = w->data;
    srv_log_flush(&s->log_nofd, "out of file descriptors: refused a connection");
    srv_log_flush(&s->log_many, "too many connections from one process: refused one");
    srv_tick(s);
}

void srv_clock_advance(srv_t *s, uint64_t ns)
{
    virt_now += ns;
    srv_tick(s);
}

/* Submits the client's stacks that began to expire. Past SYM_EAGER_MAX
 * jobs in the worker's queue they wait on the client's queue instead (a
 * job holds a copy of its frames and modules): finished jobs make room. */
static void sym_eager(srv_t *s, client_t *c)
{
    uint32_t keep = 0;
    for (uint32_t i = 0; i < c->nsymq; i++) {
        cstack_t *st = cstack_at(c, c->symq[i]);
        if (!st)
            continue;
        if (sym_backlog() >= SYM_EAGER_MAX) {
            c->symq[keep++] = c->symq[i];
            continue;
        }
        st->sym_queued = 0;
        srv_sym_stack(s, c, st, 0);
    }
    c->nsymq = keep;
}

void srv_tick(srv_t *s)
{
    uint64_t now = srv_now();
    save_due(s, 0);
    for (client_t *c = s->clients.head; c; c = c->next) {
        client_age(c, now);
        client_classify(c, now);
        sym_eager(s, c);
        for (uint32_t i = 0; i < c->nleakq; i++) {
            cstack_t *st = cstack_at(c, c->leakq[i]);
            if (st)
                on_first_leak(s, c, st);
        }
        c->nleakq = 0;
        for (uint32_t i = 0; i < c->nhotq; i++) {
            /* Just became a leak: --leaking rules see it now (or once its
             * frames are in). */
            cstack_t *st = cstack_at(c, c->hotq[i]);
            if (st)
                srv_trig_eval(s, c, st);
        }
        c->nhotq = 0;
        rearm_python(s, c);
    }
    scan_check_deadlines(s, now);
    clients_prune(&s->clients, now);
    ctl_retry_parked(s, 1);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_t *s = w->data;
    if (w->signum == SIGHUP) {
        srv_log("SIGHUP: %u clients, %llu events so far", s->clients.count,
                (unsigned long long)s->events_total);
        return;
    }
    srv_log("signal %d: stopping", w->signum);
    srv_stop(s);
}

void srv_conn_gone(srv_t *s, conn_t *c)
{
    (void)s;
    if (c->kind == CONN_CONTROL) {
        ctl_forget(c);
        return;
    }
    client_t *cl = c->client;
    if (cl && c->stale) {
        cl->stale_conns--;
        return;
    }
    if (!cl || cl->conn != c)
        return;
    cl->conn = NULL;
    if (cl->late_events)
        srv_log("pid %u: %llu events arrived out of time order", cl->pid,
                (unsigned long long)cl->late_events);
    srv_scan_abort(s, cl, "the process went away during the scan");
    int clean = cl->said_bye || cl->exec_replaced || cl->successor_seen;
    uint64_t now = srv_now();
    uint64_t end = cl->said_bye && cl->max_ts && cl->max_ts <= now ? cl->max_ts : now;
    cl->gone_ts = now;
    client_freeze(cl, end, clean);
    if (clean && (cl->said_detach || cl->successor_seen))
        cl->state = CLIENT_DETACHED; /* the process runs on, untraced */
    if (!s->stopping)
        save_queue(s, cl);
}

void srv_stop(srv_t *s)
{
    s->stopping = 1;
    ev_break(s->loop, EVBREAK_ALL);
}

int srv_run(srv_t *s, void (*ready)(void *arg), void *arg)
{
    /* Not the default loop: that one reaps children with waitpid(-1) on
     * SIGCHLD, which would take the ptrace stops a scan worker waits for. */
    s->loop = ev_loop_new(EVFLAG_AUTO);
    signal(SIGPIPE, SIG_IGN);
    ev_io_init(&s->agent_w, accept_cb, s->agent_fd, EV_READ);
    ev_io_init(&s->control_w, accept_cb, s->control_fd, EV_READ);
    s->agent_w.data = s->control_w.data = s;
    ev_io_start(s->loop, &s->agent_w);
    ev_io_start(s->loop, &s->control_w);
    ev_signal_init(&s->sig_int, signal_cb, SIGINT);
    ev_signal_init(&s->sig_term, signal_cb, SIGTERM);
    ev_signal_init(&s->sig_hup, signal_cb, SIGHUP);
    s->sig_int.data = s->sig_term.data = s->sig_hup.data = s;
    ev_signal_start(s->loop, &s->sig_int);
    ev_signal_start(s->loop, &s->sig_term);
    ev_signal_start(s->loop, &s->sig_hup);
    /* Aging resolution: a tenth of the expire time, within [20 ms, 1 s]. */
    double period = (double)s->opts.expire_ns / 1e9 / 10;
    if (period < 0.02)
        period = 0.02;
    if (period > 1.0)
        period = 1.0;
    ev_timer_init(&s->age_timer, age_cb, period, period);
    s->age_timer.data = s;
    if (!virt_clock)
        ev_timer_start(s->loop, &s->age_timer); /* else Tick requests age */
    ev_async_init(&s->sym_async, sym_async_cb);
    s->sym_async.data = s;
    ev_async_start(s->loop, &s->sym_async);
    ev_async_init(&s->scan_async, scan_async_cb);
    s->scan_async.data = s;
    ev_async_start(s->loop, &s->scan_async);
    s->clients.retain_max = s->opts.retain_max;
    s->clients.retain_ns = s->opts.retain_ns;
    s->clients.max_live = s->opts.max_live;
    wrap_init();
    if (sym_start(sym_wake, s) < 0)
        srv_log("cannot start the symbolizer thread; reports will show module+offset");
    if (ready)
        ready(arg);
    metrics_start(&s->metrics, s, s->loop);
    ev_run(s->loop, 0);
    /* Graceful stop: store what is to be kept, close every connection, release the sockets. */
    store_all(s);
    metrics_stop(&s->metrics);
    while (s->conns)
        conn_close(s->conns, NULL);
    sym_stop();
    close(s->agent_fd);
    close(s->control_fd);
    unlink(s->rd.agent_sock);
    unlink(s->rd.control_sock);
    while (s->clients.head) {
        client_t *c = s->clients.head;
        s->clients.head = c->next;
        if (c->scan) {
            scan_job_abort(c->scan, "collectord is stopping");
            scan_job_free(c->scan); /* the worker lets the process go first */
            c->scan = NULL;
        }
        client_destroy(c);
    }
    ev_loop_destroy(s->loop);
    trig_free(&s->trig);
    wrap_free();
    store_close(&s->store);
    free(s->saves);
    return 0;
}
