/* Agent frames into the client model: hello, modules, stacks, event batches, stats, gaps, goodbye. */
#include "ingest.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arming.h"
#include "client.h"
#include "clock.h"
#include "frame.h"
#include "log.h"
#include "proto/stackwatch.pb-c.h"
#include "saves.h"
#include "scans.h"
#include "state.h"
#include "sym.h"
#include "symq.h"

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
 * blocks are not leaks of a crash; it ended cleanly. Or the same image
 * attached again (previous: the session it says ended with its detach, 0
 * if none): that session was detached, even if its Goodbye was lost (a
 * send stall) or its connection has not ended here yet. */
static void mark_exec(srv_t *s, client_t *nc, uint64_t previous)
{
    for (client_t *c = s->clients.head; c; c = c->next) {
        if (c == nc || c->pid != nc->pid || c->instance == nc->instance)
            continue;
        if (previous && c->instance == previous && c->attached) {
            if (c->conn) {
                c->successor_seen = 1; /* detached when its connection ends */
            } else if (c->state == CLIENT_LOST || c->state == CLIENT_EXITED) {
                if (c->atab_ok) {
                    c->frozen = 0;
                    client_freeze(c, c->end_ts ? c->end_ts : c->max_ts, 1);
                }
                c->state = CLIENT_DETACHED;
            }
            continue;
        }
        if (c->conn) {
            c->exec_replaced = 1;
        } else if (c->state == CLIENT_LOST && c->atab_ok) {
            c->frozen = 0;
            client_freeze(c, c->end_ts ? c->end_ts : c->max_ts, 1);
        }
    }
}

static uint64_t nc_previous(const Stackwatch__Hello *h)
{
    return h->attached ? h->previous_session : 0;
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
    if (h->sample_bytes > (1ull << 40) || h->python_sample_bytes > (1ull << 40)) {
        *why = "hello with a sampling interval over 1 TiB";
        return -EPROTO;
    }
    c->hello_seen = 1;
    /* SO_PEERCRED is the truth; the claimed pid is only shown. */
    uint32_t pid = c->peer_pid > 0 ? (uint32_t)c->peer_pid : h->pid;
    uint64_t now = clock_now();
    client_t *cl = client_find(&s->clients, pid, h->instance);
    if (cl && cl->proc && c->proc && cl->proc != c->proc)
        cl = NULL; /* another process of a reused pid: not a reconnect */
    if (cl && !cl->atab_ok) {
        /* It said goodbye, yet speaks again (a hostile or confused agent):
         * the ended record stays as it was; this is a new one. */
        cl = NULL;
    }
    if (cl && (cl->sample_bytes != h->sample_bytes ||
               cl->py_sample_bytes != h->python_sample_bytes)) {
        /* One process image samples at one rate: its blocks carry weights. */
        *why = "reconnect with another sampling interval than before";
        return -EPROTO;
    }
    if (cl && h->reconnects < cl->reconnects_seen) {
        /* A connection the agent left already: it reconnected again since
         * (collectord was stopped, the connections waited in the backlog)
         * and a newer one said Hello first. What this one carries is older
         * than what was applied from the newer one: counted, not applied
         * (ingest_frame), and the client is left as it is. */
        c->stale = 1;
        c->client = cl;
        cl->stale_conns++; /* not pruned while this points to it */
        return 0;
    }
    if (cl) {
        if (cl->conn && cl->conn != c) {
            /* The agent gave up on the old connection (a send that stalled,
             * collectord stopped meanwhile) and counted as sent what it
             * wrote there: apply that first, then close it. Detached from
             * the client first, so its end does not end the client. */
            conn_t *old = cl->conn;
            cl->conn = NULL;
            if (conn_drain(old, CONN_DRAIN_MAX) == 0)
                conn_close(old, "replaced by a new connection of the same process");
        }
        client_revive(cl);
    } else {
        cl = client_new(&s->clients, pid, s->opts.expire_ns, now);
        if (!cl) {
            *why = "out of memory";
            return -ENOMEM;
        }
        client_set_proc(cl, c->proc);
    }
    if (client_set_identity(cl, h->pid, h->ppid, h->exe, h->argv, h->n_argv, h->instance,
                            h->parent_instance, h->start_realtime_ns, h->depth, h->sample) < 0) {
        *why = "out of memory";
        return -ENOMEM;
    }
    cl->python_version = h->python_version;
    cl->sample_bytes = h->sample_bytes; /* per process image (checked above) */
    cl->py_sample_bytes = h->python_sample_bytes;
    snprintf(cl->py_allocators, sizeof cl->py_allocators, "%s",
             h->python_allocators && (!strcmp(h->python_allocators, "off") ||
                                      !strcmp(h->python_allocators, "sampled") ||
                                      !strcmp(h->python_allocators, "exact"))
                 ? h->python_allocators
                 : "");
    client_set_status(cl, h->python_status);
    cl->conn = c;
    cl->reconnects_seen = h->reconnects;
    cl->said_bye = 0;
    cl->said_detach = 0;
    cl->attached = h->attached;
    cl->flusher_tid = h->flusher_tid;
    cl->state = CLIENT_CONNECTED;
    c->client = cl;
    mark_exec(s, cl, nc_previous(h));
    saves_restore_client(s, cl);
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
            *why = rc == -ENOMEM ? "out of memory"
                   : rc == -E2BIG ? "module paths over the process's string budget"
                                  : "bad module record (id or ranges)";
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
                   : err == -E2BIG ? "too many stacks or stack frames for one process"
                                   : "bad stack definition (index or depth)";
            return err;
        }
        if (c->srv->trig.n) {
            /* Rules match every stack, present and future. */
            if (trig_needs_symbols(&c->srv->trig))
                symq_stack(c->srv, c->client, st, 0);
            arming_eval(c->srv, c->client, st);
        }
    }
    return 0;
}

static const char *intern_cut(const char *s, uint64_t *added)
{
    if (!s || strnlen(s, CLIENT_PYSTR_MAX + 1) <= CLIENT_PYSTR_MAX)
        return sym_intern_n(s, added);
    char buf[CLIENT_PYSTR_MAX + 1];
    size_t n = CLIENT_PYSTR_MAX;
    while (n && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    memcpy(buf, s, n);
    buf[n] = 0;
    return sym_intern_n(buf, added);
}

static void on_note(conn_t *c, const Stackwatch__Note *n)
{
    pyframe_t frames[64];
    uint32_t nf = n->n_python < 64 ? (uint32_t)n->n_python : 64;
    /* Names are cut before interning: the intern table is never freed.
     * The names new to it count against the process's string budget; when
     * that is spent the frames are dropped, not interned. */
    if (nf && !client_pystr_room(c->client))
        nf = 0;
    uint64_t added = 0;
    for (uint32_t i = 0; i < nf; i++) {
        frames[i].file = intern_cut(n->python[i]->file, &added);
        frames[i].function = intern_cut(n->python[i]->function, &added);
        frames[i].line = n->python[i]->line;
    }
    client_charge_pystr(c->client, added);
    cstack_t *st = client_note(c->client, n->addr, n->ts, n->stack, frames, nf,
                               n->truncated || n->n_python > nf, n->text,
                               (uint32_t)n->py_missing);
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

/* How many events ahead of the one being applied each prefetch stage of
 * atab.h runs: far enough for a miss to land, near enough to stay cached. */
#define PF_SLOT 16
#define PF_CHAIN 8
#define PF_LINKS 3

/* Prefetching for one validated batch: hints only, the results never change. */
typedef struct prefetch_s {
    const Stackwatch__EventBatch *b;
    const atab_t *t;   /* the client's table, NULL when it has none */
    size_t ai;         /* index into size/stack of the next allocation at or after i + PF_CHAIN */
} prefetch_t;

static inline int is_alloc(uint32_t kind)
{
    return kind == STACKWATCH__EVENT_KIND__EVENT_ALLOC ||
           kind == STACKWATCH__EVENT_KIND__EVENT_ALLOC_UNSAMPLED ||
           kind == STACKWATCH__EVENT_KIND__EVENT_ALLOC_PY;
}

/* Always inlined, as in atab.h: GCC drops calls to a function that only
 * prefetches. */
ATAB_PF_INLINE void prefetch_stack(const client_t *cl, uint32_t stack, int is_free)
{
    const cstack_t *s = cstack_at(cl, stack);
    if (!s)
        return;
    if (is_free) {
        __builtin_prefetch(&s->free_n, 1);
        __builtin_prefetch(&s->lt_n, 1);
    } else {
        __builtin_prefetch(&s->alloc_n, 1);
    }
}

/* The first events get no prefetch; stage 2 starts at event PF_CHAIN. */
static void prefetch_start(prefetch_t *pf)
{
    size_t n = pf->b->n_kind;
    for (size_t j = 0; j < PF_CHAIN && j < n; j++)
        pf->ai += is_alloc(pf->b->kind[j]);
}

/* Before applying event i: stage 1 for i + PF_SLOT, stage 2 (and an
 * allocation's stack) for i + PF_CHAIN, stage 3 (a free's bucket neighbours
 * and stack) for i + PF_LINKS. */
ATAB_PF_INLINE void prefetch_step(prefetch_t *pf, const client_t *cl, size_t i)
{
    const Stackwatch__EventBatch *b = pf->b;
    size_t n = b->n_kind;
    if (pf->t) {
        atab_prefetch_free(pf->t);
        if (i + PF_SLOT < n)
            atab_prefetch_slot(pf->t, b->addr[i + PF_SLOT]);
    }
    size_t j = i + PF_CHAIN;
    if (j < n) {
        if (pf->t)
            atab_prefetch_chain(pf->t, b->addr[j]);
        if (is_alloc(b->kind[j]))
            prefetch_stack(cl, b->stack[pf->ai++], 0);
    }
    j = i + PF_LINKS;
    if (pf->t && j < n && b->kind[j] == STACKWATCH__EVENT_KIND__EVENT_FREE) {
        const atab_ent_t *e = atab_prefetch_links(pf->t, b->addr[j]);
        if (e)
            prefetch_stack(cl, e->stack, 1);
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
        if (is_alloc(b->kind[i]))
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
    for (size_t i = 0; i < nalloc; i++) {
        if (b->stack[i] >= CLIENT_MAX_STACKS) {
            *why = "event names a stack index out of range";
            return -EPROTO;
        }
    }
    /* Folded pairs are checked before anything is applied: a bad batch
     * is refused whole. */
    size_t nf = b->n_fold_stack;
    if (b->n_fold_count != nf || b->n_fold_bytes != nf || b->n_fold_lt_sum != nf ||
        b->n_fold_lt_min != nf || b->n_fold_lt_max != nf) {
        *why = "event batch fold columns differ in length";
        return -EPROTO;
    }
    for (size_t i = 0; i < nf; i++) {
        if (!client_fold_valid(c->client, b->fold_stack[i], b->fold_count[i], b->fold_bytes[i],
                               b->fold_lt_sum[i], b->fold_lt_min[i], b->fold_lt_max[i])) {
            *why = "folded pairs with impossible counts, lifetimes or stack index";
            return -EPROTO;
        }
    }
    client_t *cl = c->client;
    uint64_t ts = b->ts_base;
    size_t ai = 0;
    prefetch_t pf = { .b = b, .t = cl->atab_ok ? &cl->atab : NULL };
    prefetch_start(&pf);
    for (size_t i = 0; i < n; i++) {
        prefetch_step(&pf, cl, i);
        ts += (uint64_t)b->ts_delta[i]; /* wraps harmlessly on nonsense */
        int rc;
        if (b->kind[i] == STACKWATCH__EVENT_KIND__EVENT_ALLOC) {
            rc = client_alloc(cl, b->addr[i], ts, b->size[ai], b->stack[ai]);
            ai++;
        } else if (b->kind[i] == STACKWATCH__EVENT_KIND__EVENT_ALLOC_UNSAMPLED) {
            rc = client_alloc_unsampled(cl, b->addr[i], ts, b->size[ai], b->stack[ai]);
            ai++;
        } else if (b->kind[i] == STACKWATCH__EVENT_KIND__EVENT_ALLOC_PY) {
            rc = client_alloc_py(cl, b->addr[i], ts, b->size[ai], b->stack[ai]);
            ai++;
        } else {
            rc = client_free(cl, b->addr[i], ts);
        }
        if (rc < 0) {
            *why = rc == -ENOMEM ? "out of memory"
                   : rc == -E2BIG ? "too many stacks for one process"
                                  : "event names a stack index out of range";
            return rc;
        }
    }
    uint64_t folded = 0;
    for (size_t i = 0; i < nf; i++) {
        int rc = client_fold(cl, b->fold_stack[i], b->fold_count[i], b->fold_bytes[i],
                             b->fold_lt_sum[i], b->fold_lt_min[i], b->fold_lt_max[i],
                             b->ts_base);
        if (rc < 0) {
            /* the figures were checked above */
            *why = rc == -E2BIG ? "too many stacks for one process" : "out of memory";
            return rc;
        }
        folded += 2 * b->fold_count[i];
    }
    c->srv->events_total += n + folded;
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
    cl->a_scratch_bytes = st->scratch_bytes;
    cl->a_sc_hits = st->stack_cache_hits;
    cl->a_firings = st->firings;
    cl->a_notes_dropped = st->notes_dropped;
    if (st->python_hooked)
        cl->py_hooked = 1; /* the hooks stay once installed */
    if (st->rss_bytes) {
        if (!cl->rss_start_b) {
            cl->rss_start_b = st->rss_bytes;
            cl->heap_start_b = st->heap_bytes;
        }
        cl->rss_b = st->rss_bytes;
        cl->heap_b = st->heap_bytes;
        cl->heap_free_b = st->heap_free_bytes;
        cl->heap_mmap_b = st->heap_mmap_bytes;
        cl->pyarena_known = st->pyarena_counted;
        cl->pyarena_growth_b = (int64_t)(st->pyarena_mapped_bytes - st->pyarena_unmapped_bytes);
    }
    /* An interpreter the agent found after its hello (dlopen'd libpython). */
    if (st->python_version && st->python_version != cl->python_version) {
        int was = cl->python_version != 0;
        cl->python_version = st->python_version;
        if (!was)
            client_python_attached(cl);
    }
    if (st->python_status && strcmp(st->python_status, cl->python_status ? cl->python_status : ""))
        client_set_status(cl, st->python_status);
    if (st->armed_sites_full && !cl->a_sites_full)
        log_msg("pid %u samples allocations: more stacks are armed than its agent watches by "
                "call site (64); the others fire only when sampled",
                cl->pid);
    cl->a_sites_full = st->armed_sites_full;
}

/* ---------------------------------------------------------------- EventBatch fast path */

/*
 * protobuf-c's unpack allocates the message and every column, after a
 * counting pass, for every batch: at millions of events per second that was
 * the largest cost after the allocation table (bench/collector/README.md).
 * An AgentMsg that is exactly one EventBatch in canonical form - each field
 * known, present once, a varint scalar or a packed column of varints - is
 * decoded here instead, into a buffer kept between frames. Anything else
 * (unknown or repeated fields, unpacked columns, other field types, overlong
 * varints or lengths, truncation) is left to protobuf-c, so what is accepted,
 * what is rejected and how stay exactly as they were. Fields are found
 * through the generated descriptor: a new varint column needs no change here.
 */

#define FAST_KEEP (4u << 20) /* scratch kept between frames; a larger one is freed after use */
#define FAST_COLS 32         /* packed columns one batch can have */

typedef struct fast_col_s {
    const ProtobufCFieldDescriptor *f;
    const uint8_t *p, *end; /* its packed varints */
    size_t n;               /* how many */
} fast_col_t;

/* The decoded columns of the current frame; one loop thread uses it. */
static struct {
    uint8_t *buf;
    size_t cap;
} fast_scratch;

/* One varint of at most 10 bytes (protobuf-c's limit) before end, bits above
 * 64 dropped as protobuf-c does. Returns its length, 0 if there is none. */
static inline size_t get_varint(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
    size_t max = end - p < 10 ? (size_t)(end - p) : 10;
    uint64_t x = 0;
    for (size_t i = 0; i < max; i++) {
        x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

/* A length prefix as protobuf-c accepts one: at most 5 bytes, at most
 * INT_MAX, the data within end. Returns the prefix's length, 0 if not. */
static size_t get_len(const uint8_t *p, const uint8_t *end, size_t *n)
{
    uint64_t v;
    size_t h = get_varint(p, end - p > 5 ? p + 5 : end, &v);
    if (!h || v > INT_MAX || v > (uint64_t)(end - p) - h)
        return 0;
    *n = (size_t)v;
    return h;
}

static inline size_t fast_elt_size(ProtobufCType type)
{
    return type == PROTOBUF_C_TYPE_UINT32 ? 4 : 8;
}

/* Stores a varint into a field of type as protobuf-c would. */
static inline void fast_store(ProtobufCType type, void *dst, uint64_t v)
{
    if (type == PROTOBUF_C_TYPE_UINT32)
        *(uint32_t *)dst = (uint32_t)v;
    else if (type == PROTOBUF_C_TYPE_SINT64)
        *(uint64_t *)dst = (v >> 1) ^ (0 - (v & 1)); /* zigzag */
    else
        *(uint64_t *)dst = v;
}

/* Varints in n packed bytes: the bytes without the continuation bit,
 * counted eight at a time. */
static size_t fast_count(const uint8_t *p, size_t n)
{
    size_t c = n, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        /* one bit per continuation byte, summed into the top byte */
        c -= (((w >> 7) & 0x0101010101010101ull) * 0x0101010101010101ull) >> 56;
    }
    for (; i < n; i++)
        c -= p[i] >> 7;
    return c;
}

/* Decodes a packed column into dst. Returns 0 if a varint is overlong.
 * Always inlined so that each type gets its own loop. */
static inline __attribute__((always_inline)) int fast_column_of(const fast_col_t *col,
                                                               uint8_t *dst, ProtobufCType type)
{
    size_t sz = fast_elt_size(type);
    const uint8_t *p = col->p, *end = col->end;
    for (size_t k = 0; k < col->n; k++) {
        uint64_t v = *p;
        if (v < 0x80) {
            p++;
        } else if (end - p >= 10) {
            /* No bound checks while ten bytes remain. (A branch-free decode
             * of the whole word measured slower: it makes each element wait
             * for the previous one's length.) */
            size_t i = 1;
            v &= 0x7f;
            for (; i < 10; i++) {
                v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
                if (p[i] < 0x80)
                    break;
            }
            if (i == 10)
                return 0;
            p += i + 1;
        } else {
            size_t h = get_varint(p, end, &v);
            if (!h)
                return 0;
            p += h;
        }
        fast_store(type, dst + k * sz, v);
    }
    return p == end;
}

static int fast_column(const fast_col_t *col, uint8_t *dst)
{
    switch (col->f->type) {
    case PROTOBUF_C_TYPE_UINT32:
        return fast_column_of(col, dst, PROTOBUF_C_TYPE_UINT32);
    case PROTOBUF_C_TYPE_SINT64:
        return fast_column_of(col, dst, PROTOBUF_C_TYPE_SINT64);
    default:
        return fast_column_of(col, dst, PROTOBUF_C_TYPE_UINT64);
    }
}

/* Decodes p[0..len) into *b when it is one canonical EventBatch (above).
 * Returns 1 with b's columns in fast_scratch, valid until the next call; 0
 * to leave the frame to protobuf-c. Has no other effect. */
static int fast_events(const uint8_t *p, uint32_t len, Stackwatch__EventBatch *b)
{
    const ProtobufCMessageDescriptor *d = &stackwatch__event_batch__descriptor;
    const uint8_t *end = p + len;
    size_t n, h;
    if (len < 2 || d->n_fields > 64 ||
        p[0] != (STACKWATCH__AGENT_MSG__MSG_EVENTS << 3 | PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED))
        return 0;
    h = get_len(p + 1, end, &n);
    if (!h || 1 + h + n != len)
        return 0; /* not the envelope's only field */
    p += 1 + h;
    stackwatch__event_batch__init(b);
    fast_col_t cols[FAST_COLS];
    size_t ncols = 0, need = 0;
    uint64_t seen = 0;
    while (p < end) {
        uint8_t tag = *p++;
        if ((tag & 0x80) || tag < 8)
            return 0; /* a tag beyond field 15, or field 0 */
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, tag >> 3);
        if (!f || (seen >> (f - d->fields) & 1) ||
            (f->type != PROTOBUF_C_TYPE_UINT32 && f->type != PROTOBUF_C_TYPE_UINT64 &&
             f->type != PROTOBUF_C_TYPE_SINT64))
            return 0;
        seen |= 1ull << (f - d->fields);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if ((tag & 7) != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED || ncols == FAST_COLS)
                return 0;
            h = get_len(p, end, &n);
            if (!h || (n && (p[h + n - 1] & 0x80)))
                return 0;
            p += h;
            fast_col_t *col = &cols[ncols++];
            col->f = f;
            col->p = p;
            col->end = p + n;
            col->n = fast_count(p, n);
            need += (col->n * fast_elt_size(f->type) + 7) & ~(size_t)7;
            p += n;
        } else if (f->label == PROTOBUF_C_LABEL_NONE && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) {
            uint64_t v;
            if ((tag & 7) != PROTOBUF_C_WIRE_TYPE_VARINT || !(h = get_varint(p, end, &v)))
                return 0;
            p += h;
            fast_store(f->type, (char *)b + f->offset, v);
        } else {
            return 0;
        }
    }
    if (need > fast_scratch.cap) {
        free(fast_scratch.buf);
        fast_scratch.cap = 0;
        fast_scratch.buf = malloc(need);
        if (!fast_scratch.buf)
            return 0;
        fast_scratch.cap = need;
    }
    uint8_t *q = fast_scratch.buf;
    for (size_t i = 0; i < ncols; i++) {
        const ProtobufCFieldDescriptor *f = cols[i].f;
        if (!fast_column(&cols[i], q))
            return 0;
        *(size_t *)((char *)b + f->quantifier_offset) = cols[i].n;
        *(void **)((char *)b + f->offset) = cols[i].n ? q : NULL;
        q += (cols[i].n * fast_elt_size(f->type) + 7) & ~(size_t)7;
    }
    return 1;
}

/* After a frame: a scratch that a very large batch grew is not kept. */
static void fast_release(void)
{
    if (fast_scratch.cap > FAST_KEEP) {
        free(fast_scratch.buf);
        fast_scratch.buf = NULL;
        fast_scratch.cap = 0;
    }
}

/* Events in a batch: one per entry, two per folded pair. */
static uint64_t batch_events(const Stackwatch__EventBatch *b)
{
    uint64_t n = b->n_kind;
    for (size_t i = 0; i < b->n_fold_count; i++)
        n += 2 * b->fold_count[i];
    return n;
}

/* A stale connection (on_hello): its events count as lost, its Gap (the
 * losses of the reconnect it began with) counts as usual, the rest is
 * older than what the client already has and is skipped. */
static void stale_frame(conn_t *c, const Stackwatch__AgentMsg *m, const Stackwatch__EventBatch *b)
{
    if (b)
        c->client->lost_stale += batch_events(b);
    else if (m->msg_case == STACKWATCH__AGENT_MSG__MSG_EVENTS)
        c->client->lost_stale += batch_events(m->events);
    else if (m->msg_case == STACKWATCH__AGENT_MSG__MSG_GAP && c->frames_in == 2)
        client_gap(c->client, m->gap->lost_events);
}

int ingest_frame(conn_t *c, const uint8_t *p, uint32_t len)
{
    const char *why = NULL;
    int rc = 0;
    Stackwatch__AgentMsg *m = NULL;
    Stackwatch__EventBatch fast;
    if (c->hello_seen && fast_events(p, len, &fast)) {
        if (c->stale)
            stale_frame(c, NULL, &fast);
        else
            rc = on_events(c, &fast, &why);
        fast_release();
        goto out;
    }
    m = stackwatch__agent_msg__unpack(NULL, len, p);
    if (!m) {
        c->srv->bad_frames++;
        conn_close(c, "malformed frame (not a valid agent message)");
        return -1;
    }
    if (!c->hello_seen && m->msg_case != STACKWATCH__AGENT_MSG__MSG_HELLO) {
        why = "first frame is not a hello";
        rc = -EPROTO;
        goto out;
    }
    if (c->stale && m->msg_case != STACKWATCH__AGENT_MSG__MSG_HELLO) {
        stale_frame(c, m, NULL);
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
    case STACKWATCH__AGENT_MSG__MSG_ENDING: {
        /* Verdicts freeze where the process began to end; a time in our
         * future (a confused clock) is taken as now. */
        uint64_t now = clock_now(), ts = m->ending->ts;
        if (!ts || ts > now)
            ts = now;
        client_ending(c->client, ts, m->ending->why);
        break;
    }
    case STACKWATCH__AGENT_MSG__MSG_SCAN:
        scans_reply(c->srv, c->client, m->scan);
        break;
    case STACKWATCH__AGENT_MSG__MSG_SCAN_ASK:
        scans_ask(c->srv, c->client, m->scan_ask);
        break;
    case STACKWATCH__AGENT_MSG__MSG_BYE:
        c->client->said_bye = 1;
        c->client->said_detach = m->bye->detached;
        /* Trust the goodbye's time only as far as our own clock. */
        if (m->bye->ts > c->client->max_ts && m->bye->ts <= clock_now())
            c->client->max_ts = m->bye->ts;
        break;
    default:
        why = "unknown message type";
        rc = -EPROTO;
        break;
    }
out:
    if (m)
        stackwatch__agent_msg__free_unpacked(m, NULL);
    if (rc < 0) {
        if (rc == -EPROTO || rc == -EINVAL)
            c->srv->bad_frames++;
        conn_close(c, why ? why : "protocol error");
        return -1;
    }
    return 0;
}

void ingest_close(conn_t *c)
{
    srv_t *s = c->srv;
    client_t *cl = c->client;
    if (cl && c->stale) {
        cl->stale_conns--;
        return;
    }
    if (!cl || cl->conn != c)
        return;
    cl->conn = NULL;
    if (cl->late_events)
        log_msg("pid %u: %llu events arrived out of time order", cl->pid,
                (unsigned long long)cl->late_events);
    scans_abort(s, cl, "the process went away during the scan");
    int clean = cl->said_bye || cl->exec_replaced || cl->successor_seen;
    uint64_t now = clock_now();
    uint64_t end = cl->said_bye && cl->max_ts && cl->max_ts <= now ? cl->max_ts : now;
    cl->gone_ts = now;
    client_freeze(cl, end, clean);
    if (clean && (cl->said_detach || cl->successor_seen))
        cl->state = CLIENT_DETACHED; /* the process runs on, untraced */
    if (!s->stopping)
        saves_queue(s, cl);
}
