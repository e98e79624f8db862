/* stackctl's snapshots and diffs: which stacks grew between two reports (two marks, two pids). */
#include "diff.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "report.h"
#include "json.h"

/* ---------------------------------------------------------------- snapshot files */

int cli_snapshot_write(FILE *f, const Stackwatch__LeakReport *r)
{
    size_t n = stackwatch__leak_report__get_packed_size(r);
    if (n > SNAP_MAX)
        return -EFBIG;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return -ENOMEM;
    stackwatch__leak_report__pack(r, buf);
    uint8_t len[4] = { (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24) };
    int ok = fwrite(SNAP_MAGIC, 1, 8, f) == 8 && fwrite(len, 1, 4, f) == 4 &&
             fwrite(buf, 1, n, f) == n;
    free(buf);
    return ok ? 0 : -EIO;
}

static int counts_ok(const Stackwatch__StackReport *s)
{
    return s->may_leak && s->expired && s->free_expired && s->alloc && s->free && s->live &&
           s->exit_live && s->uncertain;
}

Stackwatch__LeakReport *cli_snapshot_decode(const uint8_t *buf, size_t len, const char **why)
{
    if (len < 12 || memcmp(buf, SNAP_MAGIC, 8) != 0) {
        *why = "not a stackctl snapshot (write one with stackctl snapshot -o FILE)";
        return NULL;
    }
    uint32_t n = (uint32_t)buf[8] | (uint32_t)buf[9] << 8 | (uint32_t)buf[10] << 16 |
                 (uint32_t)buf[11] << 24;
    if (n != len - 12) {
        *why = "truncated or damaged snapshot";
        return NULL;
    }
    Stackwatch__LeakReport *r = stackwatch__leak_report__unpack(NULL, n, buf + 12);
    if (!r) {
        *why = "undecodable snapshot";
        return NULL;
    }
    int ok = 1;
    for (size_t i = 0; ok && i < r->n_stacks; i++)
        ok = counts_ok(r->stacks[i]);
    for (size_t i = 0; ok && i < r->n_clients; i++)
        ok = r->clients[i]->live != NULL;
    if (!ok) {
        stackwatch__leak_report__free_unpacked(r, NULL);
        *why = "snapshot lacks required fields";
        return NULL;
    }
    return r;
}

Stackwatch__LeakReport *cli_snapshot_read(const char *path, char *why, size_t whylen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, whylen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > SNAP_MAX + 12) {
                free(buf);
                fclose(f);
                snprintf(why, whylen, "%s: larger than a snapshot can be", path);
                return NULL;
            }
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                snprintf(why, whylen, "%s: out of memory", path);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0)
            break;
    }
    fclose(f);
    const char *w = NULL;
    Stackwatch__LeakReport *r = cli_snapshot_decode(buf, len, &w);
    free(buf);
    if (!r)
        snprintf(why, whylen, "%s: %s", path, w);
    return r;
}

/* ---------------------------------------------------------------- matching */

typedef struct dpair_s {
    uint64_t id;
    const Stackwatch__StackReport *a, *b;   /* either may be NULL */
    int64_t d_live_b, d_live_n, d_may_b, d_may_n, d_alloc_n, d_alloc_b;
    int status;
} dpair_t;

enum { D_NEW = 0, D_GREW = 1, D_SAME = 2, D_SHRANK = 3, D_GONE = 4 };
static const char *const status_name[] = { "new", "grew", "unchanged", "shrank", "gone" };

static int by_id(const void *x, const void *y)
{
    const Stackwatch__StackReport *a = *(Stackwatch__StackReport *const *)x;
    const Stackwatch__StackReport *b = *(Stackwatch__StackReport *const *)y;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int by_growth(const void *x, const void *y)
{
    const dpair_t *a = x, *b = y;
    int ga = a->status <= D_GREW, gb = b->status <= D_GREW;
    if (ga != gb)
        return ga ? -1 : 1;
    if (a->d_live_b != b->d_live_b)
        return a->d_live_b > b->d_live_b ? -1 : 1;
    if (a->d_may_b != b->d_may_b)
        return a->d_may_b > b->d_may_b ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static uint64_t cnt(const Stackwatch__Count *c, int bytes)
{
    return c ? (bytes ? c->bytes : c->count) : 0;
}

/* Pairs of a's and b's stacks by id, sorted by growth. Returns the count
 * (0 with *out NULL on ENOMEM). */
static size_t pair_up(const Stackwatch__LeakReport *a, const Stackwatch__LeakReport *b,
                      dpair_t **out)
{
    size_t na = a->n_stacks, nb = b->n_stacks, n = 0;
    Stackwatch__StackReport **sa = malloc((na + 1) * sizeof *sa);
    Stackwatch__StackReport **sb = malloc((nb + 1) * sizeof *sb);
    dpair_t *p = calloc(na + nb + 1, sizeof *p);
    if (!sa || !sb || !p) {
        free(sa), free(sb), free(p);
        *out = NULL;
        return 0;
    }
    if (na)
        memcpy(sa, a->stacks, na * sizeof *sa);
    if (nb)
        memcpy(sb, b->stacks, nb * sizeof *sb);
    if (na > 1)
        qsort(sa, na, sizeof *sa, by_id);
    if (nb > 1)
        qsort(sb, nb, sizeof *sb, by_id);
    for (size_t i = 0, j = 0; i < na || j < nb;) {
        dpair_t *d = &p[n++];
        if (j == nb || (i < na && sa[i]->id < sb[j]->id))
            d->a = sa[i++];
        else if (i == na || sb[j]->id < sa[i]->id)
            d->b = sb[j++];
        else
            d->a = sa[i++], d->b = sb[j++];
        const Stackwatch__StackReport *x = d->a, *y = d->b;
        d->id = x ? x->id : y->id;
        d->d_live_b = (int64_t)(cnt(y ? y->live : NULL, 1) - cnt(x ? x->live : NULL, 1));
        d->d_live_n = (int64_t)(cnt(y ? y->live : NULL, 0) - cnt(x ? x->live : NULL, 0));
        d->d_may_b = (int64_t)(cnt(y ? y->may_leak : NULL, 1) - cnt(x ? x->may_leak : NULL, 1));
        d->d_may_n = (int64_t)(cnt(y ? y->may_leak : NULL, 0) - cnt(x ? x->may_leak : NULL, 0));
        d->d_alloc_n = (int64_t)(cnt(y ? y->alloc : NULL, 0) - cnt(x ? x->alloc : NULL, 0));
        d->d_alloc_b = (int64_t)(cnt(y ? y->alloc : NULL, 1) - cnt(x ? x->alloc : NULL, 1));
        if (!x)
            d->status = D_NEW;
        else if (!y)
            d->status = D_GONE;
        else if (d->d_live_b > 0 || (d->d_live_b == 0 && d->d_may_b > 0))
            d->status = D_GREW;
        else if (d->d_live_b < 0)
            d->status = D_SHRANK;
        else
            d->status = D_SAME;
    }
    free(sa);
    free(sb);
    qsort(p, n, sizeof *p, by_growth);
    *out = p;
    return n;
}

/* A new stack that holds nothing live is no growth worth listing. */
static int listed(const dpair_t *d)
{
    return d->status == D_GREW || (d->status == D_NEW && d->d_live_b > 0);
}

/* ---------------------------------------------------------------- text */

static void side_text(FILE *f, const char *tag, const char *label,
                      const Stackwatch__LeakReport *r)
{
    char when[64] = "";
    time_t t = (time_t)(r->now_ms / 1000);
    struct tm tm;
    if (r->now_ms && localtime_r(&t, &tm))
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    uint64_t live = 0, may = 0;
    for (size_t i = 0; i < r->n_stacks; i++) {
        live += cnt(r->stacks[i]->live, 1);
        may += cnt(r->stacks[i]->may_leak, 1);
    }
    fprintf(f, "  %s %s at %s: live %" PRIu64 " bytes, may-leak %" PRIu64 " bytes in %zu "
               "stack(s);", tag, label, when, live, may, r->n_stacks);
    for (size_t i = 0; i < r->n_clients && i < 8; i++) {
        char cmd[256];
        cli_cmdline(cmd, sizeof cmd, r->clients[i]);
        fprintf(f, " pid %u %s (%s)%s", r->clients[i]->pid, r->clients[i]->state, cmd,
                i + 1 < r->n_clients ? "," : "");
    }
    if (r->n_clients > 8)
        fprintf(f, " and %zu more", r->n_clients - 8);
    fputc('\n', f);
}

static void frame_text(FILE *f, const Stackwatch__Frame *fr)
{
    const char *mod = fr->module && *fr->module ? fr->module : NULL;
    const char *base = mod && strrchr(mod, '/') ? strrchr(mod, '/') + 1 : mod;
    fputs("    ", f);
    if (fr->function && *fr->function)
        fprintf(f, "%s()+%" PRIu64, fr->function, fr->offset);
    else if (base)
        fprintf(f, "%s+0x%" PRIx64, base, fr->module_offset);
    else
        fprintf(f, "0x%016" PRIx64, fr->addr);
    if (fr->is_inline)
        fputs(" [inline]", f);
    if (fr->file && *fr->file)
        fprintf(f, "  %s:%u", fr->file, fr->line);
    if (mod)
        fprintf(f, "  (%s)", mod);
    fputc('\n', f);
}

static void figures_text(FILE *f, const char *tag, const Stackwatch__StackReport *s)
{
    if (!s) {
        fprintf(f, "    %s absent\n", tag);
        return;
    }
    fprintf(f, "    %s live=%" PRIu64 " (%" PRIu64 " bytes) may-leak=%" PRIu64 " (%" PRIu64
               " bytes) alloc=%" PRIu64 " free=%" PRIu64 "%s%s\n",
            tag, s->live->count, s->live->bytes, s->may_leak->count, s->may_leak->bytes,
            s->alloc->count, s->free->count, s->class_ && *s->class_ ? " class=" : "",
            s->class_ ? s->class_ : "");
}

void cli_diff_text(FILE *f, const Stackwatch__LeakReport *a, const Stackwatch__LeakReport *b,
                   const char *la, const char *lb, uint32_t top)
{
    dpair_t *p;
    size_t n = pair_up(a, b, &p);
    fprintf(f, "stackwatch diff: %s -> %s (stacks matched by executable and frames)\n", la, lb);
    side_text(f, "from", la, a);
    side_text(f, "to  ", lb, b);
    size_t k[5] = { 0 };
    for (size_t i = 0; i < n; i++)
        k[p[i].status]++;
    fprintf(f, "  grew: %zu, new: %zu, unchanged: %zu, shrank: %zu, gone: %zu\n", k[D_GREW],
            k[D_NEW], k[D_SAME], k[D_SHRANK], k[D_GONE]);
    size_t shown = 0;
    for (size_t i = 0; i < n; i++) {
        const dpair_t *d = &p[i];
        if (!listed(d) || (top && shown >= top))
            continue;
        shown++;
        const Stackwatch__StackReport *s = d->b ? d->b : d->a;
        fprintf(f, "\nStack[%016" PRIx64 "]: %s  live %+" PRId64 " bytes (%+" PRId64
                   " blocks)  may-leak %+" PRId64 " bytes  alloc %+" PRId64 "\n",
                d->id, status_name[d->status], d->d_live_b, d->d_live_n, d->d_may_b,
                d->d_alloc_n);
        figures_text(f, "before:", d->a);
        figures_text(f, "after: ", d->b);
        for (size_t j = 0; j < s->n_frames; j++)
            frame_text(f, s->frames[j]);
    }
    if (!shown)
        fputs("\nno stack grew\n", f);
    free(p);
}

/* ---------------------------------------------------------------- JSON */

static void count_json(json_t *j, const char *key, const Stackwatch__Count *c)
{
    json_obj_begin(j, key);
    json_u64(j, "count", c ? c->count : 0);
    json_u64(j, "bytes", c ? c->bytes : 0);
    json_obj_end(j);
}

static void delta_json(json_t *j, const char *key, int64_t n, int64_t b)
{
    json_obj_begin(j, key);
    json_double(j, "count", (double)n);
    json_double(j, "bytes", (double)b);
    json_obj_end(j);
}

static void side_json(json_t *j, const char *key, const char *label,
                      const Stackwatch__LeakReport *r)
{
    json_obj_begin(j, key);
    json_str(j, "label", label);
    json_u64(j, "time_ms", r->now_ms);
    json_arr_begin(j, "pids");
    for (size_t i = 0; i < r->n_clients; i++) {
        json_obj_begin(j, NULL);
        json_u64(j, "pid", r->clients[i]->pid);
        json_str(j, "exe", r->clients[i]->exe);
        json_str(j, "state", r->clients[i]->state);
        json_obj_end(j);
    }
    json_arr_end(j);
    json_obj_end(j);
}

static void figs_json(json_t *j, const char *key, const Stackwatch__StackReport *s)
{
    if (!s) {
        json_null(j, key);
        return;
    }
    json_obj_begin(j, key);
    count_json(j, "live", s->live);
    count_json(j, "may_leak", s->may_leak);
    count_json(j, "alloc", s->alloc);
    count_json(j, "free", s->free);
    json_str(j, "class", s->class_);
    json_obj_end(j);
}

void cli_diff_json(FILE *f, const Stackwatch__LeakReport *a, const Stackwatch__LeakReport *b,
                   const char *la, const char *lb, uint32_t top)
{
    dpair_t *p;
    size_t n = pair_up(a, b, &p);
    json_t j;
    json_init(&j, f, 1);
    json_obj_begin(&j, NULL);
    side_json(&j, "from", la, a);
    side_json(&j, "to", lb, b);
    size_t k[5] = { 0 };
    for (size_t i = 0; i < n; i++)
        k[p[i].status]++;
    json_obj_begin(&j, "counts");
    for (int s = 0; s < 5; s++)
        json_u64(&j, status_name[s], k[s]);
    json_obj_end(&j);
    json_arr_begin(&j, "stacks");
    size_t shown = 0;
    for (size_t i = 0; i < n; i++) {
        const dpair_t *d = &p[i];
        if (!listed(d) || (top && shown >= top))
            continue;
        shown++;
        const Stackwatch__StackReport *s = d->b ? d->b : d->a;
        json_obj_begin(&j, NULL);
        char id[17];
        snprintf(id, sizeof id, "%016" PRIx64, d->id);
        json_str(&j, "id", id);
        json_str(&j, "status", status_name[d->status]);
        figs_json(&j, "before", d->a);
        figs_json(&j, "after", d->b);
        json_obj_begin(&j, "delta");
        delta_json(&j, "live", d->d_live_n, d->d_live_b);
        delta_json(&j, "may_leak", d->d_may_n, d->d_may_b);
        delta_json(&j, "alloc", d->d_alloc_n, d->d_alloc_b);
        json_obj_end(&j);
        json_str(&j, "class", s->class_);
        json_arr_begin(&j, "frames");
        for (size_t x = 0; x < s->n_frames; x++) {
            const Stackwatch__Frame *fr = s->frames[x];
            json_obj_begin(&j, NULL);
            json_str(&j, "function", fr->function && *fr->function ? fr->function : NULL);
            json_str(&j, "file", fr->file && *fr->file ? fr->file : NULL);
            if (fr->line)
                json_u64(&j, "line", fr->line);
            else
                json_null(&j, "line");
            json_str(&j, "module", fr->module && *fr->module ? fr->module : NULL);
            json_bool(&j, "inline", fr->is_inline);
            json_obj_end(&j);
        }
        json_arr_end(&j);
        json_obj_end(&j);
    }
    json_arr_end(&j);
    json_obj_end(&j);
    fputc('\n', f);
    free(p);
}
