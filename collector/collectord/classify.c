/* Leak classification: live-bytes time series per stack, windows of the expire time, class and confidence.
 *
 * A window is one expire time long. Per stack we remember, per window,
 * whether more blocks became may-leak (expired and still live) and whether it
 * allocated at all, plus whether any expired block was ever freed (an
 * eviction). From that:
 *  - transient: nothing ever expired;
 *  - cache: expired blocks get freed later and live bytes stay bounded;
 *  - growing: expired blocks get freed, yet live bytes trend upward;
 *  - leak: no expired block was ever freed, more keep expiring while the
 *    stack keeps allocating;
 *  - retained: no expired block was ever freed, and none are added (a table
 *    built at start-up and held).
 * The whole history counts, not the last few windows: a leak that grew for
 * a while, paused and grew again (step growth) stays a leak through its
 * pauses; a single sustained run of growth stays a leak while the pause is
 * short against it. Retained is for blocks that expired in one go and were
 * never added to. Once an eviction was seen a stack is never a leak again:
 * caches whose entries outlive the expire time are the classic false
 * positive. */
#include "classify.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void series_init(series_t *s, uint64_t interval_ns)
{
    memset(s, 0, sizeof *s);
    s->interval_ns = interval_ns ? interval_ns : 1;
}

void series_free(series_t *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
    s->n = 0;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static const uint8_t *get_varint(const uint8_t *p, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned sh = 0;; sh += 7) {
        uint8_t b = *p++;
        x |= (uint64_t)(b & 0x7f) << sh;
        if (!(b & 0x80) || sh >= 63)
            break;
    }
    *v = x;
    return p;
}

/* Zigzag of a wrapping difference: exact for any two uint64_t. */
static uint64_t zz(uint64_t v, uint64_t prev)
{
    int64_t d = (int64_t)(v - prev);
    return ((uint64_t)d << 1) ^ (uint64_t)(d >> 63);
}

static uint64_t unzz(uint64_t z, uint64_t prev)
{
    return prev + ((z >> 1) ^ (uint64_t)-(int64_t)(z & 1));
}

void series_decode(const series_t *s, spt_t *out)
{
    spt_t prev = { 0, 0, 0, 0 };
    const uint8_t *p = s->buf;
    for (uint32_t i = 0; i + 1 < s->n; i++) {
        uint64_t v;
        p = get_varint(p, &v);
        prev.t += v * SERIES_T_UNIT;
        uint8_t changed = *p++;
        if (changed & 1) {
            p = get_varint(p, &v);
            prev.live_b = unzz(v, prev.live_b);
        }
        if (changed & 2) {
            p = get_varint(p, &v);
            prev.live_n = unzz(v, prev.live_n);
        }
        if (changed & 4) {
            p = get_varint(p, &v);
            prev.may_b = unzz(v, prev.may_b);
        }
        out[i] = prev;
    }
    if (s->n)
        out[s->n - 1] = s->last;
}

/* Appends pt (after prev, the point before it) to the encoded points. On
 * ENOMEM the series forgets its older points: it starts again from pt. */
static int encode_point(series_t *s, const spt_t *prev, const spt_t *pt)
{
    /* The time step, a byte saying which values changed, those values. */
    uint8_t tmp[4 * 10 + 1], *p = tmp;
    p = put_varint(p, (pt->t - prev->t) / SERIES_T_UNIT);
    uint8_t *changed = p++;
    *changed = 0;
    if (pt->live_b != prev->live_b) {
        *changed |= 1;
        p = put_varint(p, zz(pt->live_b, prev->live_b));
    }
    if (pt->live_n != prev->live_n) {
        *changed |= 2;
        p = put_varint(p, zz(pt->live_n, prev->live_n));
    }
    if (pt->may_b != prev->may_b) {
        *changed |= 4;
        p = put_varint(p, zz(pt->may_b, prev->may_b));
    }
    uint32_t add = (uint32_t)(p - tmp);
    if ((uint32_t)s->len + add > s->cap) {
        /* Grown in small steps: a series is read rarely and grows slowly. */
        uint32_t ncap = ((uint32_t)s->len + add + 31) & ~31u;
        if (ncap > UINT16_MAX)
            return -1;
        uint8_t *nb = realloc(s->buf, ncap);
        if (!nb)
            return -1;
        s->buf = nb;
        s->cap = (uint16_t)ncap;
    }
    memcpy(s->buf + s->len, tmp, add);
    s->len = (uint16_t)(s->len + add);
    return 0;
}

/* Re-encodes pts[0..n) as the whole series. */
static void series_set(series_t *s, const spt_t *pts, uint32_t n)
{
    s->len = 0;
    s->n = 0;
    spt_t prev = { 0, 0, 0, 0 };
    for (uint32_t i = 0; i + 1 < n; i++) {
        if (encode_point(s, &prev, &pts[i]) < 0) {
            s->len = 0; /* out of memory: the newest point only */
            i = n - 1;
            s->n = 0;
            break;
        }
        prev = pts[i];
        s->n++;
    }
    if (n) {
        s->last = pts[n - 1];
        s->n++;
    }
}

static void mem_put(mem_series_t *m, uint32_t i, const mem_point_t *mp)
{
    if (!m)
        return;
    m->rss_b[i] = mp->rss_b;
    m->heap_b[i] = mp->heap_b;
    m->heap_free_b[i] = mp->heap_free_b;
}

void series_add_mem(series_t *s, mem_series_t *m, uint64_t t, uint64_t live_b, uint64_t live_n,
                    uint64_t may_b, const mem_point_t *mp)
{
    t -= t % SERIES_T_UNIT;
    if (s->n && t < s->last.t + s->interval_ns) {
        /* Same slot: keep its time, take the newest values. */
        s->last.live_b = live_b;
        s->last.live_n = live_n;
        s->last.may_b = may_b;
        mem_put(m, s->n - 1, mp);
        return;
    }
    spt_t pts[SERIES_CAP];
    if (s->n == SERIES_CAP) {
        /* Halve the resolution: keep every other point. */
        series_decode(s, pts);
        uint32_t k = 0;
        for (uint32_t i = 0; i < SERIES_CAP; i += 2, k++) {
            pts[k] = pts[i];
            if (m) {
                mem_point_t old = { m->rss_b[i], m->heap_b[i], m->heap_free_b[i] };
                mem_put(m, k, &old);
            }
        }
        series_set(s, pts, k);
        if (m && s->n == 1 && k > 1) {
            /* Out of memory: only the newest kept point is left. */
            mem_point_t keep = { m->rss_b[k - 1], m->heap_b[k - 1], m->heap_free_b[k - 1] };
            mem_put(m, 0, &keep);
        }
        s->interval_ns *= 2;
    }
    if (s->n) {
        /* The newest point joins the encoded ones (after the one before it). */
        spt_t prev = { 0, 0, 0, 0 };
        if (s->n >= 2) {
            series_decode(s, pts);
            prev = pts[s->n - 2];
        }
        if (encode_point(s, &prev, &s->last) < 0) {
            s->len = 0; /* out of memory: forget the older points */
            s->n = 0;
        }
    }
    s->last = (spt_t){ t, live_b, live_n, may_b };
    mem_put(m, s->n, mp);
    s->n++;
}

void series_add(series_t *s, uint64_t t, uint64_t live_b, uint64_t live_n, uint64_t may_b)
{
    series_add_mem(s, NULL, t, live_b, live_n, may_b, NULL);
}

double series_slope_per_min(const series_t *s, uint64_t since, double *r2)
{
    double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0;
    uint64_t t0 = 0;
    spt_t pt[SERIES_CAP];
    series_decode(s, pt);
    for (uint32_t i = 0; i < s->n; i++) {
        if (pt[i].t < since)
            continue;
        if (n == 0)
            t0 = pt[i].t;
        double x = (double)(pt[i].t - t0) / 60e9; /* minutes */
        double y = (double)pt[i].live_b;
        n++;
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
        syy += y * y;
    }
    if (r2)
        *r2 = 0;
    if (n < 3)
        return 0;
    double vx = n * sxx - sx * sx, vy = n * syy - sy * sy, cov = n * sxy - sx * sy;
    if (vx <= 0)
        return 0;
    if (r2 && vy > 0)
        *r2 = cov * cov / (vx * vy);
    return cov / vx;
}

void classify_init(cls_t *c, uint64_t now, uint64_t expire_ns, const cls_in_t *in)
{
    memset(c, 0, sizeof *c);
    uint64_t step = expire_ns / 4;
    if (step < 50000000ull)
        step = 50000000ull;   /* 50 ms */
    if (step > 5000000000ull)
        step = 5000000000ull; /* 5 s */
    series_init(&c->series, step);
    c->win_start = now;
    c->win_may_n = in->may_n;
    c->win_alloc_n = in->alloc_n;
    c->t0 = c->grow_t = c->alloc_t = now;
    c->may_n0 = c->grow_n = in->may_n;
    c->alloc_n = in->alloc_n;
}

void classify_free(cls_t *c)
{
    if (c)
        series_free(&c->series);
    free(c);
}

static double cap(double x)
{
    return x < 0 ? 0 : x > 0.97 ? 0.97 : x;
}

/* A growth run ends after this many closed windows without growth. */
#define EPISODE_GAP 2
/* A single run of growth of at least SUSTAINED windows, then flat: still a
 * leak (paused) until it has been flat PAUSE_RATIO times as long as it grew,
 * and at least PAUSE_MIN windows; then retained. */
#define SUSTAINED 3
#define PAUSE_RATIO 10
#define PAUSE_MIN 4

/* Sampled stacks (cls_in_t.rate_b): their counters move one sample at a
 * time, each standing for rate_b bytes' worth of blocks (a thousand blocks
 * of 256 bytes at 256 KiB), so a window without a new expired sample, or
 * without an allocation sample, says little unless samples were expected in
 * it. A quiet spell of d tells that the stack stopped once a steady stack
 * would have been that quiet with a chance of at most e^-EVIDENCE: having
 * grown by k samples in T (from its first expiry to its last growth, at
 * least an expire time), the chance of no sample in d is (T / (T + d))^k
 * (the Poisson rate's uncertainty from k samples included), so k ln(1 + d/T)
 * >= EVIDENCE; or once 2 x EVIDENCE samples were expected at the rate k/T
 * (a stack that grew by a sample or two, a table built lazily, is told in
 * bounded time). Until a spell tells, the window stays open (the next sample
 * still counts as growth in it) and "it still allocates" holds. Exact
 * stacks: every window without growth, or without allocations, tells. */
#define EVIDENCE 5.0

/* A sampled stack is a leak only once this many of its samples expired: a
 * table built once over its first expire times, sampled once or twice in
 * different windows, read as "more keep expiring while it allocates" for
 * the 5-10 s a quiet spell needs to tell (CI: CPython's free-listed tuples
 * parked for good, ~0.35 samples expected); a leak keeps adding them. */
#define LEAK_MIN_SAMPLES 3.0

/* The last verdict, at the process's end: a program stops allocating some
 * time before its end is seen (a loop told to stop, threads joined, atexit
 * handlers, a Python program until its interpreter finalizes), and a leak
 * stops with it. A stack that was a leak within this many expire times of
 * the end stays one when the end alone would make it retained (CI: a
 * sampled leak found, the program told to quit, its last verdict retained
 * (0.40) since no sample came in the last half second). */
#define ENDING_GRACE 2

/* The chance a block of size bytes is sampled at rate_b (one sample per
 * 1/p blocks). */
static double sample_p_of(double size, uint64_t rate_b)
{
    return -expm1(-size / (double)rate_b);
}

/* The chance a block of the stack's mean may-leak size is sampled. */
static double sample_p(const cls_in_t *in)
{
    return sample_p_of((double)in->may_b / (double)in->may_n, in->rate_b);
}

/* Samples a sampled stack grew by since its first expiry. */
static double grown_samples(const cls_t *c, const cls_in_t *in)
{
    if (c->grow_n <= c->may_n0 || !in->may_n)
        return 0;
    return (double)(c->grow_n - c->may_n0) * sample_p(in);
}

/* Whether d ns without a change of a stack's counters says it changed no
 * more. */
static int quiet_tells(const cls_t *c, const cls_in_t *in, uint64_t d, uint64_t expire_ns)
{
    if (!in->rate_b || c->grow_n <= c->may_n0 || !in->may_n)
        return 1; /* exact, or no growth since its first expiry: nothing to go by */
    double span = (double)(c->grow_t - c->t0);
    if (span < (double)expire_ns)
        span = (double)expire_ns;
    double k = grown_samples(c, in);
    double x = (double)d / span;
    return k * log1p(x) >= EVIDENCE || k * x >= 2 * EVIDENCE;
}

/* Closes the current window at now. */
static void close_window(cls_t *c, uint64_t now, const cls_in_t *in)
{
    int grew = in->may_n > c->win_may_n;
    c->windows++;
    if (grew) {
        if (!c->first_grow)
            c->first_grow = c->win_start;
        if (c->grow_windows == 0 || c->flat_run >= EPISODE_GAP) {
            c->episodes++; /* a new run of growth */
            c->ep_windows = 0;
            c->ep_start = c->win_start;
        }
        c->grow_windows++;
        c->ep_windows++;
        c->ep_end = now;
        c->flat_run = 0;
    } else {
        c->flat_run++;
    }
    if (in->fexp_n > 0)
        c->evict_windows++;
    c->win_start = now;
    c->win_may_n = in->may_n;
    c->win_alloc_n = in->alloc_n;
}

/* A climb of rise bytes in a sampled stack's live bytes stands out of its
 * sampling's noise: its mean stands for GROW_MIN_MEAN samples at least (a
 * few samples' counts wander by their own size over a few lifetimes), and
 * the climb is GROW_MIN_SAMPLES samples' worth and twice their Poisson
 * deviation. Exact stacks: any climb counts. */
#define GROW_MIN_SAMPLES 3.0
#define GROW_MIN_MEAN 8.0

static int rise_tells(const cls_in_t *in, double rise, double mean)
{
    if (!in->rate_b)
        return 1;
    if (!in->live_n || !in->live_b)
        return 0; /* no live sample now: not climbing now */
    double size = (double)in->live_b / (double)in->live_n;
    double per = size / sample_p_of(size, in->rate_b); /* bytes a sample stands for */
    double k = rise / per, n = mean / per;
    return n >= GROW_MIN_MEAN && k >= GROW_MIN_SAMPLES && k >= 2.0 * sqrt(n);
}

/* With evictions: a cache, unless live bytes clearly climb. A cache evicts
 * because it is full: its filling up before that is not growth, so the
 * trend counts from the first eviction on, over the whole time since.
 * Sampled stacks: CI called a churned table of ~2.5 samples growing (one
 * sample more moves its bytes by a third): the climb must stand out of the
 * sampling noise (rise_tells). */
static verdict_t evicting(cls_t *c, uint64_t now, const cls_in_t *in)
{
    verdict_t v = { CLASS_CACHE, 0, 0 };
    if (!c->evict_since)
        c->evict_since = now;
    uint64_t since = c->evict_since;
    double g2 = 0;
    double slope = series_slope_per_min(&c->series, since, &g2);
    double mean = 0, cnt = 0;
    spt_t pt[SERIES_CAP];
    series_decode(&c->series, pt);
    for (uint32_t i = 0; i < c->series.n; i++)
        if (pt[i].t >= since) {
            mean += (double)pt[i].live_b;
            cnt++;
        }
    mean = cnt ? mean / cnt : 0;
    double minutes = (double)(now - since) / 60e9;
    double rise = slope * minutes;
    v.growth_per_min = slope;
    if (c->windows >= 2 && g2 > 0.5 && mean > 0 && rise > 0.2 * mean &&
        rise_tells(in, rise, mean)) {
        v.klass = CLASS_GROWING;
        v.confidence = cap((0.4 + 0.5 * g2) * (c->windows >= 4 ? 1.0 : 0.85));
    } else {
        v.confidence = cap(0.5 + 0.1 * c->evict_windows);
    }
    return v;
}

verdict_t classify_tick(cls_t *c, uint64_t now, uint64_t expire_ns, const cls_in_t *in)
{
    verdict_t v = { CLASS_TRANSIENT, 0, 0 };
    if (in->exp_n == 0) {
        /* Young blocks still live may yet expire: less sure. */
        v.confidence = in->live_n ? 0.6 : 0.9;
        return v;
    }
    if (!c) {
        /* Something expired (so never transient), but no state to judge by. */
        v.klass = in->fexp_n ? CLASS_CACHE : CLASS_RETAINED;
        v.confidence = 0.3;
        return v;
    }
    series_add(&c->series, now, in->live_b, in->live_n, in->may_b);
    if (in->may_n > c->grow_n) {
        c->grow_n = in->may_n;
        c->grow_t = now;
    }
    if (in->alloc_n != c->alloc_n) {
        c->alloc_n = in->alloc_n;
        c->alloc_t = now;
    }
    int alloc_last = 0;
    uint64_t win_age = now - c->win_start;
    /* A window without growth closes once it tells (sampled stacks:
     * quiet_tells; with evictions their trend decides, by the expire time). */
    if (win_age >= expire_ns && (in->may_n > c->win_may_n || in->fexp_n > 0 ||
                                 quiet_tells(c, in, win_age, expire_ns))) {
        alloc_last = in->alloc_n > c->win_alloc_n;
        close_window(c, now, in);
    }
    if (in->fexp_n > 0)
        return evicting(c, now, in);

    /* No expired block was ever freed. The whole history counts: growth
     * over the stack's life (from its first expiry), runs of growth and
     * pauses between them. */
    v.growth_per_min = series_slope_per_min(&c->series, 0, NULL);
    int grew_now = in->may_n > c->win_may_n;
    int alloc_now = in->alloc_n > c->win_alloc_n || alloc_last ||
                    !quiet_tells(c, in, now - c->alloc_t, expire_ns);
    /* Growth in the open window continues the current run. */
    int cont = grew_now && c->grow_windows && c->flat_run < EPISODE_GAP;
    uint32_t run_windows = c->ep_windows + (cont ? 1 : 0);
    uint64_t flat_ns = !grew_now && c->ep_end && now > c->ep_end ? now - c->ep_end : 0;
    uint64_t span = c->ep_end > c->ep_start ? c->ep_end - c->ep_start : expire_ns;
    uint64_t pause_max = PAUSE_RATIO * span;
    if (pause_max < PAUSE_MIN * expire_ns)
        pause_max = PAUSE_MIN * expire_ns;
    if (in->rate_b && (double)in->may_n * sample_p(in) < LEAK_MIN_SAMPLES - 0.5) {
        /* Sampled, too little growth yet to tell a leak from a table. */
        v.klass = CLASS_RETAINED;
        v.confidence = cap(c->windows ? 0.3 + 0.1 * c->flat_run : 0.3);
    } else if (alloc_now && (grew_now || (c->windows && c->flat_run == 0))) {
        /* Growing now, from blocks it keeps allocating. */
        v.klass = CLASS_LEAK;
        v.confidence = 1.0 - pow(0.5, (double)(c->grow_windows + (grew_now ? 1 : 0)));
        if (in->may_n < 3)
            v.confidence *= 0.8;
        v.confidence = cap(v.confidence);
    } else if (c->episodes >= 2 || (grew_now && c->grow_windows && c->flat_run >= EPISODE_GAP)) {
        /* Step growth: it grew, stopped, and grew again. A leak through
         * its pauses. */
        uint32_t eps = c->episodes + (grew_now && c->flat_run >= EPISODE_GAP ? 1 : 0);
        v.klass = CLASS_LEAK;
        v.confidence = cap(0.6 + 0.1 * eps);
    } else if (run_windows >= SUSTAINED && flat_ns < pause_max) {
        /* One sustained run of growth, paused: no held table grows for
         * that long, but we grow less sure as the pause lasts. */
        v.klass = CLASS_LEAK;
        v.confidence = cap(0.8 - 0.3 * (double)flat_ns / (double)pause_max);
    } else if (c->grow_windows > 0 && c->flat_run <= 2 && alloc_now) {
        /* A slow leak can skip a window. */
        v.klass = CLASS_LEAK;
        v.confidence = cap(0.6 / (1.0 + c->flat_run));
    } else {
        /* Expired at once and held: allocated in one go (start-up tables,
         * singletons, lazily built ones), nothing added since. */
        v.klass = CLASS_RETAINED;
        v.confidence = cap(c->windows ? 0.4 + 0.15 * c->flat_run : 0.3);
    }
    if (v.klass == CLASS_LEAK) {
        c->leak_t = now;
    } else if (in->ending && v.klass == CLASS_RETAINED && c->leak_t &&
               now - c->leak_t <= ENDING_GRACE * expire_ns) {
        v.klass = CLASS_LEAK; /* it stopped as the process ended */
        v.confidence = 0.6;
    }
    return v;
}

const char *classify_name(int klass)
{
    switch (klass) {
    case CLASS_TRANSIENT: return "transient";
    case CLASS_CACHE: return "cache";
    case CLASS_RETAINED: return "retained";
    case CLASS_GROWING: return "growing";
    case CLASS_LEAK: return "leak";
    default: return "";
    }
}

int classify_parse(const char *name)
{
    for (int k = CLASS_TRANSIENT; k <= CLASS_LEAK; k++)
        if (strcmp(name, classify_name(k)) == 0)
            return k;
    return -1;
}

double classify_weight(int klass)
{
    switch (klass) {
    case CLASS_LEAK: return 1.0;
    case CLASS_GROWING: return 0.8;
    case CLASS_RETAINED: return 0.2;
    case CLASS_CACHE: return 0.1;
    default: return 0.0;
    }
}
