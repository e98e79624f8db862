/* collectord's Prometheus/OpenMetrics endpoint: a tiny HTTP/1.0 server on the loop, rendering from kept state. */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "classify.h"
#include "state.h"
#include "store.h"
#include "sym.h"
#include "collector/common/cpython.h"
#include "collector/common/version.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* ---------------------------------------------------------------- buffer */

void mbuf_free(mbuf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static int mbuf_reserve(mbuf_t *b, size_t more)
{
    if (b->oom)
        return -1;
    if (b->len + more + 1 <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap : 4096;
    while (ncap < b->len + more + 1)
        ncap *= 2;
    if (ncap > METRICS_OUT_MAX) {
        b->oom = 1;
        return -1;
    }
    char *np = realloc(b->p, ncap);
    if (!np) {
        b->oom = 1;
        return -1;
    }
    b->p = np;
    b->cap = ncap;
    return 0;
}

static void mbuf_put(mbuf_t *b, const char *s, size_t n)
{
    if (mbuf_reserve(b, n) < 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void mbuf_str(mbuf_t *b, const char *s)
{
    mbuf_put(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void mbuf_printf(mbuf_t *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        mbuf_put(b, tmp, (size_t)n);
        return;
    }
    if (mbuf_reserve(b, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t k;
    unsigned min;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0)
        k = 2, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        k = 3, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        k = 4, min = 0x10000;
    else
        return 0;
    if (k > n)
        return 0;
    unsigned cp = c & (0x7f >> k);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k;
}

void metrics_label(mbuf_t *b, const char *v)
{
    const unsigned char *s = (const unsigned char *)(v ? v : "");
    size_t n = strlen((const char *)s), used = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len(s + i, n - i);
        if (used + (k ? k : 1) > METRICS_LABEL_MAX - 3) {
            mbuf_str(b, "...");
            return;
        }
        if (k == 0) {
            mbuf_put(b, "?", 1);
            i++, used++;
            continue;
        }
        if (s[i] == '\\')
            mbuf_put(b, "\\\\", 2);
        else if (s[i] == '"')
            mbuf_put(b, "\\\"", 2);
        else if (s[i] == '\n')
            mbuf_put(b, "\\n", 2);
        else
            mbuf_put(b, (const char *)s + i, k);
        i += k;
        used += k;
    }
}

/* ---------------------------------------------------------------- request parsing */

/* The first line ending at or after p within [p, end): its end (at '\n'), or NULL. */
static const char *line_end(const char *p, const char *end)
{
    const char *q = memchr(p, '\n', (size_t)(end - p));
    return q;
}

/* Case-insensitive search for needle in [p, end). */
static int contains_ci(const char *p, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    for (; p + n <= end; p++)
        if (strncasecmp(p, needle, n) == 0)
            return 1;
    return 0;
}

int metrics_parse_request(const char *buf, size_t len, metrics_req_t *r)
{
    memset(r, 0, sizeof *r);
    const char *end = buf + len;
    /* The head ends at an empty line (CRLF CRLF, or bare LF LF). */
    const char *head_end = NULL;
    for (const char *p = buf; p < end; p++) {
        if (*p != '\n')
            continue;
        if (p + 1 < end && p[1] == '\n') {
            head_end = p + 2;
            break;
        }
        if (p + 2 < end && p[1] == '\r' && p[2] == '\n') {
            head_end = p + 3;
            break;
        }
    }
    if (!head_end) {
        /* A request line that is plainly not HTTP need not wait for more. */
        const char *le = line_end(buf, end);
        if (le && !contains_ci(buf, le, " HTTP/"))
            return -1;
        return 0;
    }
    const char *le = line_end(buf, head_end);
    const char *sp1 = memchr(buf, ' ', (size_t)(le - buf));
    if (!sp1 || sp1 == buf)
        return -1;
    size_t mlen = (size_t)(sp1 - buf);
    if (mlen == 3 && !memcmp(buf, "GET", 3))
        r->method = METRICS_GET;
    else if (mlen == 4 && !memcmp(buf, "HEAD", 4))
        r->method = METRICS_HEAD;
    else
        r->method = METRICS_OTHER;
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', (size_t)(le - target));
    if (!sp2 || sp2 == target)
        return -1;
    if (le - sp2 < 6 || memcmp(sp2 + 1, "HTTP/", 5) != 0)
        return -1;
    size_t tlen = (size_t)(sp2 - target);
    r->path_ok = tlen >= 8 && !memcmp(target, "/metrics", 8) &&
                 (tlen == 8 || target[8] == '?');
    /* Headers: only Accept matters. */
    for (const char *p = le + 1; p < head_end;) {
        const char *e = line_end(p, head_end);
        if (!e)
            break;
        if ((size_t)(e - p) > 7 && strncasecmp(p, "accept:", 7) == 0 &&
            contains_ci(p + 7, e, "application/openmetrics-text"))
            r->openmetrics = 1;
        p = e + 1;
    }
    return 1;
}

/* ---------------------------------------------------------------- rendering */

static void family(mbuf_t *b, int om, const char *name, const char *type, const char *help)
{
    /* OpenMetrics names a counter family without its _total suffix. */
    size_t n = strlen(name);
    int strip = om && !strcmp(type, "counter") && n > 6 && !strcmp(name + n - 6, "_total");
    mbuf_printf(b, "# HELP %.*s %s\n", (int)(strip ? n - 6 : n), name, help);
    mbuf_printf(b, "# TYPE %.*s %s\n", (int)(strip ? n - 6 : n), name, type);
}

static void client_labels(mbuf_t *b, const client_t *c)
{
    mbuf_printf(b, "pid=\"%u\",exe=\"", c->pid);
    metrics_label(b, c->exe ? c->exe : "");
    mbuf_str(b, "\"");
}

static const char *base_name(const char *p)
{
    const char *s = p ? strrchr(p, '/') : NULL;
    return s ? s + 1 : (p ? p : "");
}

/* The Python line blamed for st (most may-leak bytes, then live bytes), as
 * stackctl's reports pick it; NULL when none. */
static const pytb_t *blamed_tb(const client_t *c, const cstack_t *st)
{
    const pytb_t *best = NULL;
    for (uint32_t i = 0; i < c->npytbs; i++) {
        const pytb_t *t = &c->pytbs[i];
        if (t->stack != st->index || !t->nframes || !(t->may_n > 0 || (c->frozen && t->live_n)))
            continue;
        if (!best || t->may_b > best->may_b || (t->may_b == best->may_b && t->live_b > best->live_b))
            best = t;
    }
    return best;
}

static cpython_fr_t sym_at(const void *ctx, size_t k)
{
    const symframe_t *f = (const symframe_t *)ctx + k;
    return (cpython_fr_t){ f->module, f->function };
}

typedef struct pc_ctx_s {
    const client_t *c;
    const cstack_t *st;
} pc_ctx_t;

static cpython_fr_t pc_at(const void *ctx, size_t k)
{
    const pc_ctx_t *p = ctx;
    const cmod_t *m = client_module_at(p->c, cstack_pc(p->c, p->st, (uint32_t)k), p->st->gen);
    return (cpython_fr_t){ m ? m->path : NULL, NULL };
}

/* The name the stack goes by (as stackctl's reports name it): its innermost
 * shown frame that says something, not CPython's own (a stripped
 * extension's module+offset counts; a stack all in the interpreter: its
 * first named frame), then the blamed Python line, "_multiarray_umath+0xde138
 * ← leaky.py:27 backtest"; "unsymbolized" when nothing is known; and that
 * frame's file:line when known. Never symbolizes: what the symbolizer has
 * finished is used as it is. */
static void top_frame(const client_t *c, const cstack_t *st, char *fn, size_t fnlen, char *loc,
                      size_t loclen)
{
    snprintf(fn, fnlen, "unsymbolized");
    loc[0] = '\0';
    const symres_t *sr = cstack_sym(c, st);
    if (sr && sr->n) {
        uint32_t k0 = st->skip < sr->n ? st->skip : 0;
        uint32_t k = k0 + (uint32_t)cpython_site(sr->f + k0, sr->n - k0, sym_at);
        const symframe_t *f = &sr->f[k];
        if (f->file)
            snprintf(loc, loclen, "%s:%u", base_name(f->file), f->line);
        const cmod_t *m = f->function ? NULL : client_module_at(c, f->addr, st->gen);
        if (f->function || m)
            cpython_short_name(fn, fnlen, m ? m->path : NULL, f->function,
                               m ? f->addr - m->bias : 0, f->addr);
    } else if (st->npcs) {
        /* Not symbolized yet: the same choice by modules alone, as
         * module+offset. */
        pc_ctx_t pc = { c, st };
        uint32_t k = (uint32_t)cpython_site(&pc, st->npcs, pc_at);
        uint64_t pck = cstack_pc(c, st, k);
        const cmod_t *m = client_module_at(c, pck, st->gen);
        if (m)
            cpython_short_name(fn, fnlen, m->path, NULL, pck - m->bias, pck);
    }
    const pytb_t *tb = blamed_tb(c, st);
    if (tb) {
        size_t n = strlen(fn);
        const pyframe_t *p = &tb->frames[0];
        snprintf(fn + n, fnlen - n, " ← %s:%u %s", base_name(p->file), p->line,
                 p->function && *p->function ? p->function : "?");
    }
}

static double stack_rank(const cstack_t *st)
{
    return classify_weight(st->klass) * st->confidence * (double)(st->exp_b - st->fexp_b);
}

/* 1 if a ranks before b: rank, then may-leak bytes, then id. */
static int ranks_before(const cstack_t *a, const cstack_t *b)
{
    double ra = stack_rank(a), rb = stack_rank(b);
    if (ra != rb)
        return ra > rb;
    uint64_t ma = a->exp_b - a->fexp_b, mb = b->exp_b - b->fexp_b;
    if (ma != mb)
        return ma > mb;
    return a->id < b->id;
}

/* The client's top stacks with may-leak bytes, best first, into top[0..n).
 * Returns n; *more counts the may-leak stacks left out. */
static uint32_t top_stacks(const client_t *c, const cstack_t **top, uint32_t cap, uint64_t *more)
{
    uint32_t n = 0;
    *more = 0;
    for (uint32_t i = 0; i < c->nstacks; i++) {
        const cstack_t *st = c->slist[i];
        if (!st || st->exp_b <= st->fexp_b)
            continue;
        if (n == cap && (cap == 0 || !ranks_before(st, top[n - 1]))) {
            (*more)++;
            continue;
        }
        if (n == cap)
            (*more)++; /* the last one drops out */
        else
            n++;
        uint32_t k = n - 1;
        while (k > 0 && ranks_before(st, top[k - 1])) {
            top[k] = top[k - 1];
            k--;
        }
        top[k] = st;
    }
    return n;
}

/* Resident memory of this process, from /proc/self/statm (0 if unreadable). */
static uint64_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f)
        return 0;
    unsigned long long size = 0, res = 0;
    int ok = fscanf(f, "%llu %llu", &size, &res) == 2;
    fclose(f);
    return ok ? res * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static double ingest_rate(const metrics_t *m)
{
    if (m->ev_n < 2)
        return 0;
    uint32_t newest = (m->ev_pos + METRICS_RATE_SLOTS - 1) % METRICS_RATE_SLOTS;
    uint32_t oldest = m->ev_n < METRICS_RATE_SLOTS ? 0 : m->ev_pos;
    return (double)(m->ev_hist[newest] - m->ev_hist[oldest]) / (double)(m->ev_n - 1);
}

void metrics_render(srv_t *s, const metrics_t *m, int om, mbuf_t *b)
{
    uint32_t cap_clients = m->max_clients;
    uint32_t ncon = 0, nexited = 0, nlost = 0, exported = 0;
    uint64_t tracked = 0;
    for (client_t *c = s->clients.head; c; c = c->next) {
        tracked += c->live_n;
        if (c->state == CLIENT_CONNECTED)
            ncon++;
        else if (c->state == CLIENT_EXITED)
            nexited++;
        else
            nlost++;
    }

    family(b, om, "stackwatch_build_info", "gauge", "stackwatch version of this collectord");
    mbuf_printf(b, "stackwatch_build_info{version=\"%s\"} 1\n", STACKWATCH_VERSION);

    /* Per process: connected ones only, newest first, at most max_clients. */
    static const struct {
        const char *name, *type, *help;
    } cf[] = {
        { "stackwatch_client_live_bytes", "gauge", "bytes in live tracked blocks" },
        { "stackwatch_client_live_blocks", "gauge", "live tracked blocks" },
        { "stackwatch_client_may_leak_bytes", "gauge",
          "bytes in blocks older than the expire time and still live" },
        { "stackwatch_client_events_total", "counter", "allocation and free events received" },
        { "stackwatch_client_dropped_events_total", "counter",
          "events the agent dropped (ring full without progress)" },
        { "stackwatch_client_unknown_frees_total", "counter",
          "frees of blocks never seen (allocated before tracing)" },
        { "stackwatch_client_untracked_allocations_total", "counter",
          "allocations counted but not tracked (--max-live reached)" },
        { "stackwatch_client_unexported_stacks", "gauge",
          "stacks with may-leak bytes beyond the exported top N (--metrics-top)" },
        { "stackwatch_client_rss_bytes", "gauge", "resident set of the process (memory account)" },
        { "stackwatch_client_heap_bytes", "gauge", "memory malloc holds (arenas and mmap'd chunks)" },
        { "stackwatch_client_heap_free_bytes", "gauge",
          "memory malloc holds free (fragmentation, freed memory not returned)" },
    };
    for (size_t k = 0; k < sizeof cf / sizeof cf[0]; k++) {
        family(b, om, cf[k].name, cf[k].type, cf[k].help);
        uint32_t n = 0;
        for (client_t *c = s->clients.head; c && n < cap_clients; c = c->next) {
            if (c->state != CLIENT_CONNECTED)
                continue;
            n++;
            uint64_t v = 0;
            switch (k) {
            case 0: v = c->live_b; break;
            case 1: v = c->live_n; break;
            case 2: v = c->may_b; break;
            case 3: v = c->events; break;
            case 4: v = c->a_dropped; break;
            case 5: v = c->unknown_frees; break;
            case 6: v = c->table_full; break;
            case 8: v = c->rss_b; break;
            case 9: v = c->heap_b; break;
            case 10: v = c->heap_free_b; break;
            case 7: {
                const cstack_t *none[1];
                top_stacks(c, none, 0, &v);
                v = v > m->top ? v - m->top : 0;
                break;
            }
            }
            mbuf_printf(b, "%s{", cf[k].name);
            client_labels(b, c);
            mbuf_printf(b, "} %llu\n", (unsigned long long)v);
        }
        exported = n;
    }

    /* Per stack: the top N by rank of each exported process. */
    const cstack_t **top = calloc(m->top ? m->top : 1, sizeof *top);
    static const struct {
        const char *name, *help;
    } sf[] = {
        { "stackwatch_stack_may_leak_bytes", "bytes of the stack's blocks that expired and stay live" },
        { "stackwatch_stack_may_leak_blocks", "blocks of the stack that expired and stay live" },
        { "stackwatch_stack_live_bytes", "bytes of the stack's live blocks" },
        { "stackwatch_stack_growth_bytes_per_minute", "slope of the stack's live bytes" },
    };
    mbuf_t rows[4];
    memset(rows, 0, sizeof rows);
    if (top) {
        uint32_t n = 0;
        for (client_t *c = s->clients.head; c && n < cap_clients; c = c->next) {
            if (c->state != CLIENT_CONNECTED)
                continue;
            n++;
            uint64_t more;
            uint32_t nt = top_stacks(c, top, m->top, &more);
            for (uint32_t i = 0; i < nt; i++) {
                const cstack_t *st = top[i];
                char fn[512], loc[512];
                top_frame(c, st, fn, sizeof fn, loc, sizeof loc);
                const char *klass = classify_name(st->klass);
                for (int k = 0; k < 4; k++) {
                    mbuf_t *r = &rows[k];
                    mbuf_printf(r, "%s{", sf[k].name);
                    client_labels(r, c);
                    mbuf_printf(r, ",stack=\"%016llx\",frame=\"", (unsigned long long)st->id);
                    metrics_label(r, fn);
                    mbuf_str(r, "\",location=\"");
                    metrics_label(r, loc);
                    mbuf_printf(r, "\",class=\"%s\"} ", *klass ? klass : "none");
                    switch (k) {
                    case 0: mbuf_printf(r, "%llu\n", (unsigned long long)(st->exp_b - st->fexp_b)); break;
                    case 1: mbuf_printf(r, "%llu\n", (unsigned long long)(st->exp_n - st->fexp_n)); break;
                    case 2: mbuf_printf(r, "%llu\n", (unsigned long long)(st->alloc_b - st->free_b)); break;
                    default: mbuf_printf(r, "%.6g\n", st->growth_per_min); break;
                    }
                }
            }
        }
    } else {
        b->oom = 1;
    }
    for (int k = 0; k < 4; k++) {
        family(b, om, sf[k].name, "gauge", sf[k].help);
        if (rows[k].len)
            mbuf_put(b, rows[k].p, rows[k].len);
        if (rows[k].oom)
            b->oom = 1;
        mbuf_free(&rows[k]);
    }
    free(top);

    /* collectord itself. */
    family(b, om, "stackwatch_collector_events_total", "counter", "events ingested from every agent");
    mbuf_printf(b, "stackwatch_collector_events_total %llu\n", (unsigned long long)s->events_total);
    family(b, om, "stackwatch_collector_ingest_events_per_second", "gauge",
           "events ingested per second over the last 10 s");
    mbuf_printf(b, "stackwatch_collector_ingest_events_per_second %.6g\n", ingest_rate(m));
    family(b, om, "stackwatch_collector_frames_total", "counter", "protocol frames received");
    mbuf_printf(b, "stackwatch_collector_frames_total %llu\n", (unsigned long long)s->frames_total);
    family(b, om, "stackwatch_collector_bad_frames_total", "counter",
           "connections closed for malformed input");
    mbuf_printf(b, "stackwatch_collector_bad_frames_total %llu\n", (unsigned long long)s->bad_frames);
    family(b, om, "stackwatch_collector_resident_bytes", "gauge", "collectord's resident memory");
    mbuf_printf(b, "stackwatch_collector_resident_bytes %llu\n",
                (unsigned long long)resident_bytes());
    family(b, om, "stackwatch_collector_tracked_blocks", "gauge",
           "live blocks held in collectord's tables, all processes");
    mbuf_printf(b, "stackwatch_collector_tracked_blocks %llu\n", (unsigned long long)tracked);
    family(b, om, "stackwatch_collector_symbolization_backlog", "gauge",
           "stacks queued for or in symbolization");
    mbuf_printf(b, "stackwatch_collector_symbolization_backlog %zu\n", sym_backlog());
    family(b, om, "stackwatch_collector_clients", "gauge", "processes known, by state");
    mbuf_printf(b, "stackwatch_collector_clients{state=\"connected\"} %u\n", ncon);
    mbuf_printf(b, "stackwatch_collector_clients{state=\"exited\"} %u\n", nexited);
    mbuf_printf(b, "stackwatch_collector_clients{state=\"lost\"} %u\n", nlost);
    mbuf_printf(b, "stackwatch_collector_clients{state=\"stored\"} %u\n", store_count(&s->store));
    family(b, om, "stackwatch_collector_unexported_clients", "gauge",
           "connected processes beyond --metrics-clients, not exported");
    mbuf_printf(b, "stackwatch_collector_unexported_clients %u\n",
                ncon > exported ? ncon - exported : 0);
    family(b, om, "stackwatch_collector_scrapes_total", "counter", "metrics responses served");
    mbuf_printf(b, "stackwatch_collector_scrapes_total %llu\n", (unsigned long long)m->scrapes + 1);
    if (om)
        mbuf_str(b, "# EOF\n");
}

/* ---------------------------------------------------------------- connections */

static void mconn_close(mconn_t *c)
{
    metrics_t *m = c->m;
    struct ev_loop *loop = m->srv->loop;
    ev_io_stop(loop, &c->io);
    ev_timer_stop(loop, &c->idle);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        m->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    m->nconns--;
    mbuf_free(&c->out);
    free(c);
}

/* Sends what is pending. Returns 1 when all is sent, 0 to wait, -1 on error. */
static int mconn_flush(mconn_t *c)
{
    while (c->out_off < c->out.len) {
        ssize_t w = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            c->out_off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return 0;
        return -1;
    }
    return 1;
}

/* The response is out: half-close and discard what the client still sends
 * until it closes (closing with unread input would reset the connection and
 * could destroy the response in flight), for 2 s at most. */
static void mconn_drain(mconn_t *c)
{
    struct ev_loop *loop = c->m->srv->loop;
    shutdown(c->fd, SHUT_WR);
    c->writing = 2;
    ev_io_stop(loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_READ);
    ev_io_start(loop, &c->io);
    c->idle.repeat = 2.0;
    ev_timer_again(loop, &c->idle);
}

static void respond(mconn_t *c, int code, const char *ctype, const mbuf_t *body, int head_only)
{
    const char *reason = code == 200 ? "OK" : code == 400 ? "Bad Request"
                       : code == 404 ? "Not Found" : code == 405 ? "Method Not Allowed"
                       : code == 431 ? "Request Header Fields Too Large"
                                     : "Internal Server Error";
    mbuf_printf(&c->out,
                "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                "Connection: close\r\n%s\r\n",
                code, reason, ctype, body ? body->len : 0,
                code == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (body && body->len && !head_only)
        mbuf_put(&c->out, body->p, body->len);
    if (code >= 400 && code < 500)
        c->m->bad_requests++;
    c->writing = 1;
    struct ev_loop *loop = c->m->srv->loop;
    ev_io_stop(loop, &c->io);
    if (c->out.oom) {
        mconn_close(c);
        return;
    }
    int rc = mconn_flush(c);
    if (rc < 0) {
        mconn_close(c);
        return;
    }
    if (rc == 1) {
        mconn_drain(c);
        return;
    }
    ev_io_set(&c->io, c->fd, EV_WRITE);
    ev_io_start(loop, &c->io);
}

static void text_body(mbuf_t *b, const char *msg)
{
    memset(b, 0, sizeof *b);
    mbuf_str(b, msg);
}

static void handle(mconn_t *c, const metrics_req_t *r)
{
    mbuf_t body;
    if (r->method == METRICS_OTHER) {
        text_body(&body, "only GET /metrics\n");
        respond(c, 405, "text/plain; charset=utf-8", &body, 0);
    } else if (!r->path_ok) {
        text_body(&body, "not found: stackwatch serves /metrics\n");
        respond(c, 404, "text/plain; charset=utf-8", &body, r->method == METRICS_HEAD);
    } else {
        memset(&body, 0, sizeof body);
        metrics_render(c->m->srv, c->m, r->openmetrics, &body);
        if (body.oom) {
            mbuf_free(&body);
            text_body(&body, "out of memory rendering the metrics\n");
            respond(c, 500, "text/plain; charset=utf-8", &body, 0);
        } else {
            c->m->scrapes++;
            respond(c, 200,
                    r->openmetrics ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                                   : "text/plain; version=0.0.4; charset=utf-8",
                    &body, r->method == METRICS_HEAD);
        }
    }
    mbuf_free(&body);
}

static void mconn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    mconn_t *c = container_of(w, mconn_t, io);
    if (c->writing == 2) {
        char sink[4096];
        ssize_t n = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            mconn_close(c);
        return;
    }
    if (c->writing) {
        int rc = mconn_flush(c);
        if (rc < 0)
            mconn_close(c);
        else if (rc == 1)
            mconn_drain(c);
        return;
    }
    ev_timer_again(loop, &c->idle);
    for (;;) {
        size_t room = sizeof c->req - c->req_len;
        if (room == 0) {
            mbuf_t body;
            text_body(&body, "request head too large\n");
            respond(c, 431, "text/plain; charset=utf-8", &body, 0);
            mbuf_free(&body);
            return;
        }
        ssize_t n = recv(c->fd, c->req + c->req_len, room, MSG_DONTWAIT);
        if (n == 0) {
            mconn_close(c);
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                mconn_close(c);
            return;
        }
        c->req_len += (size_t)n;
        metrics_req_t r;
        int pr = metrics_parse_request(c->req, c->req_len, &r);
        if (pr < 0) {
            mbuf_t body;
            text_body(&body, "bad request\n");
            respond(c, 400, "text/plain; charset=utf-8", &body, 0);
            mbuf_free(&body);
            return;
        }
        if (pr == 1) {
            handle(c, &r);
            return;
        }
    }
}

static void mconn_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    mconn_close(container_of(w, mconn_t, idle));
}

static void maccept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    metrics_t *m = w->data;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        if (m->nconns >= METRICS_MAX_CONNS) {
            m->refused++;
            close(fd);
            continue;
        }
        mconn_t *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->m = m;
        c->fd = fd;
        ev_io_init(&c->io, mconn_io_cb, fd, EV_READ);
        ev_timer_init(&c->idle, mconn_idle_cb, METRICS_IDLE_S, METRICS_IDLE_S);
        ev_io_start(loop, &c->io);
        ev_timer_again(loop, &c->idle);
        c->next = m->conns;
        if (m->conns)
            m->conns->prev = c;
        m->conns = c;
        m->nconns++;
    }
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    metrics_t *m = w->data;
    m->ev_hist[m->ev_pos] = m->srv->events_total;
    m->ev_pos = (m->ev_pos + 1) % METRICS_RATE_SLOTS;
    if (m->ev_n < METRICS_RATE_SLOTS)
        m->ev_n++;
}

/* ---------------------------------------------------------------- listening */

int metrics_listen(metrics_t *m, const char *addr, char *err, size_t errlen)
{
    m->fd = -1;
    snprintf(m->addr, sizeof m->addr, "%s", addr);
    int fd = -1;
    if (addr[0] == '/' || addr[0] == '.') {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(addr) >= sizeof sa.sun_path) {
            snprintf(err, errlen, "--metrics %s: path too long for a Unix socket", addr);
            return -ENAMETOOLONG;
        }
        memcpy(sa.sun_path, addr, strlen(addr) + 1);
        struct stat st;
        if (lstat(addr, &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) {
                snprintf(err, errlen, "--metrics %s: exists and is not a socket", addr);
                return -EEXIST;
            }
            unlink(addr); /* ours from an earlier run: the pid file lock says none runs */
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            goto sys;
        mode_t old = umask(0177);
        int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
        umask(old);
        if (rc < 0 || listen(fd, 16) < 0)
            goto sys;
        snprintf(m->unix_path, sizeof m->unix_path, "%s", addr);
        snprintf(m->bound, sizeof m->bound, "%s", addr);
        m->fd = fd;
        return 0;
    }
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1]) {
        snprintf(err, errlen, "--metrics %s: want HOST:PORT (127.0.0.1:9464) or a socket path",
                 addr);
        return -EINVAL;
    }
    char host[128];
    size_t hl = (size_t)(colon - addr);
    if (addr[0] == '[' && colon[-1] == ']')
        addr++, hl -= 2;
    if (hl >= sizeof host) {
        snprintf(err, errlen, "--metrics %s: host too long", m->addr);
        return -EINVAL;
    }
    memcpy(host, addr, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) {
        snprintf(err, errlen, "--metrics %s: port not in 0..65535", m->addr);
        return -EINVAL;
    }
    if (!strcmp(host, "localhost"))
        snprintf(host, sizeof host, "127.0.0.1");
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sl = sizeof *s4;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sl = sizeof *s6;
    } else {
        snprintf(err, errlen, "--metrics %s: host must be an IP address or localhost", m->addr);
        return -EINVAL;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto sys;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 16) < 0)
        goto sys;
    sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char ip[64];
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
            snprintf(m->bound, sizeof m->bound, "%s:%u", ip, ntohs(s4->sin_port));
        } else {
            inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
            snprintf(m->bound, sizeof m->bound, "[%s]:%u", ip, ntohs(s6->sin6_port));
        }
    }
    m->fd = fd;
    return 0;
sys: {
    int e = errno;
    snprintf(err, errlen, "--metrics %s: %s", m->addr, strerror(e));
    if (fd >= 0)
        close(fd);
    return -e;
}
}

void metrics_start(metrics_t *m, srv_t *s, struct ev_loop *loop)
{
    m->srv = s;
    if (m->fd < 0)
        return;
    ev_io_init(&m->accept_w, maccept_cb, m->fd, EV_READ);
    m->accept_w.data = m;
    ev_io_start(loop, &m->accept_w);
    ev_timer_init(&m->tick, tick_cb, 0.0, 1.0);
    m->tick.data = m;
    ev_timer_start(loop, &m->tick);
}

void metrics_stop(metrics_t *m)
{
    if (m->fd < 0 || !m->srv)
        return;
    while (m->conns)
        mconn_close(m->conns);
    ev_io_stop(m->srv->loop, &m->accept_w);
    ev_timer_stop(m->srv->loop, &m->tick);
    close(m->fd);
    m->fd = -1;
    if (m->unix_path[0])
        unlink(m->unix_path);
}
