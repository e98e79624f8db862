/* stackctl's renderings of collectord replies: memleax-shaped text and JSON. */
#include "cli_report.h"

#include <inttypes.h>
#include <string.h>

#include "json.h"

static const Stackwatch__Count zero_count = STACKWATCH__COUNT__INIT;

static const Stackwatch__Count *cnt(const Stackwatch__Count *c)
{
    return c ? c : &zero_count;
}

void cli_cmdline(char *buf, size_t cap, const Stackwatch__ClientInfo *c)
{
    size_t n = 0;
    buf[0] = '\0';
    if (c->n_argv == 0) {
        snprintf(buf, cap, "%s", c->exe ? c->exe : "");
        return;
    }
    for (size_t i = 0; i < c->n_argv && n + 1 < cap; i++) {
        int w = snprintf(buf + n, cap - n, "%s%s", i ? " " : "", c->argv[i]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

static int empty(const char *s)
{
    return !s || !*s;
}

static void text_frame(FILE *f, const Stackwatch__Frame *fr)
{
    fprintf(f, "    0x%016" PRIx64 "  ", fr->addr);
    if (!empty(fr->function))
        fprintf(f, "%s()+%" PRIu64, fr->function, fr->offset);
    else if (!empty(fr->module))
        fprintf(f, "%s+0x%" PRIx64, strrchr(fr->module, '/') ? strrchr(fr->module, '/') + 1
                                                               : fr->module,
                fr->module_offset);
    else
        fputs("??", f);
    if (fr->is_inline)
        fputs(" [inline]", f);
    if (!empty(fr->file))
        fprintf(f, "  %s:%u", fr->file, fr->line);
    if (!empty(fr->module))
        fprintf(f, "  (%s)", fr->module);
    fputc('\n', f);
}

static void text_client_line(FILE *f, const Stackwatch__ClientInfo *c)
{
    char cmd[512];
    cli_cmdline(cmd, sizeof cmd, c);
    const Stackwatch__Count *live = cnt(c->live);
    fprintf(f, "  pid %u (ppid %u) %-9s %s\n", c->pid, c->ppid, c->state, cmd);
    fprintf(f, "      events=%" PRIu64 " live=%" PRIu64 " (%" PRIu64 " bytes) dropped=%" PRIu64
               " unknown_frees=%" PRIu64,
            c->events, live->count, live->bytes, c->dropped, c->unknown_frees);
    if (c->gaps)
        fprintf(f, " gaps=%u lost_events=%" PRIu64, c->gaps, c->lost_events);
    if (c->failed_calls)
        fprintf(f, " failed_calls=%" PRIu64, c->failed_calls);
    if (c->table_full)
        fprintf(f, " untracked(--max-live)=%" PRIu64, c->table_full);
    if (c->unwind_failures || c->intern_full)
        fprintf(f, " unwind_failures=%" PRIu64 " stack_table_full=%" PRIu64, c->unwind_failures,
                c->intern_full);
    fputc('\n', f);
}

void cli_leaks_text(FILE *f, const Stackwatch__LeakReport *r)
{
    fprintf(f, "stackwatch: %zu process(es), expire %.3fs, sampling %s\n", r->n_clients,
            r->expire_ms / 1000.0, empty(r->sample) ? "all" : r->sample);
    for (size_t i = 0; i < r->n_clients; i++)
        text_client_line(f, r->clients[i]);
    if (r->n_stacks == 0) {
        fprintf(f, "\nno leaks: no block has stayed allocated longer than the expire time "
                   "(%.3fs)\n",
                r->expire_ms / 1000.0);
        return;
    }
    for (size_t i = 0; i < r->n_stacks; i++) {
        const Stackwatch__StackReport *s = r->stacks[i];
        const Stackwatch__Count *ml = cnt(s->may_leak), *ex = cnt(s->expired),
                                *fe = cnt(s->free_expired), *al = cnt(s->alloc),
                                *fr = cnt(s->free), *el = cnt(s->exit_live),
                                *un = cnt(s->uncertain);
        fprintf(f, "\nCallStack[%016" PRIx64 "]: may-leak=%" PRIu64 " (%" PRIu64 " bytes)  pid %u\n",
                s->id, ml->count, ml->bytes, s->pid);
        fprintf(f, "    expired=%" PRIu64 " (%" PRIu64 " bytes), free_expired=%" PRIu64
                   " (%" PRIu64 " bytes)\n",
                ex->count, ex->bytes, fe->count, fe->bytes);
        fprintf(f, "    alloc=%" PRIu64 " (%" PRIu64 " bytes), free=%" PRIu64 " (%" PRIu64
                   " bytes)\n",
                al->count, al->bytes, fr->count, fr->bytes);
        if (el->count)
            fprintf(f, "    exit_live=%" PRIu64 " (%" PRIu64 " bytes) still allocated when the "
                       "process ended\n",
                    el->count, el->bytes);
        if (un->count)
            fprintf(f, "    uncertain=%" PRIu64 " (%" PRIu64 " bytes) allocated before lost events\n",
                    un->count, un->bytes);
        if (s->freed_lt_valid)
            fprintf(f, "    freed memory live time: min=%" PRIu64 "ms max=%" PRIu64
                       "ms average=%" PRIu64 "ms\n",
                    s->freed_lt_min_ms, s->freed_lt_max_ms, s->freed_lt_avg_ms);
        else
            fprintf(f, "    freed memory live time: none freed\n");
        fprintf(f, "    un-freed memory live time: max=%" PRIu64 "ms\n", s->unfreed_max_age_ms);
        for (size_t k = 0; k < s->n_frames; k++)
            text_frame(f, s->frames[k]);
        if (s->n_frames == 0)
            fputs("    (stack not captured)\n", f);
        if (s->truncated)
            fputs("    ... (truncated at STACKWATCH_DEPTH)\n", f);
    }
}

static void json_count(json_t *j, const char *key, const Stackwatch__Count *c)
{
    c = cnt(c);
    json_obj_begin(j, key);
    json_u64(j, "count", c->count);
    json_u64(j, "bytes", c->bytes);
    json_obj_end(j);
}

static void json_client(json_t *j, const Stackwatch__ClientInfo *c)
{
    char cmd[4096];
    cli_cmdline(cmd, sizeof cmd, c);
    json_obj_begin(j, NULL);
    json_u64(j, "pid", c->pid);
    json_u64(j, "ppid", c->ppid);
    json_str(j, "exe", c->exe);
    json_str(j, "cmdline", cmd);
    json_arr_begin(j, "argv");
    for (size_t i = 0; i < c->n_argv; i++)
        json_str(j, NULL, c->argv[i]);
    json_arr_end(j);
    json_str(j, "state", c->state);
    json_u64(j, "events", c->events);
    json_u64(j, "dropped", c->dropped);
    json_u64(j, "failed_calls", c->failed_calls);
    json_u64(j, "unknown_frees", c->unknown_frees);
    json_count(j, "live", c->live);
    json_u64(j, "gaps", c->gaps);
    json_u64(j, "lost_events", c->lost_events);
    json_u64(j, "stacks", c->stacks);
    json_u64(j, "threads", c->threads);
    json_u64(j, "unwind_failures", c->unwind_failures);
    json_u64(j, "stack_table_full", c->intern_full);
    json_u64(j, "agent_bytes", c->agent_bytes);
    json_u64(j, "late_events", c->late_events);
    json_u64(j, "table_full", c->table_full);
    json_u64(j, "implied_frees", c->implied_frees);
    json_u64(j, "duration_ms", c->duration_ms);
    json_u64(j, "start_time_ms", c->start_realtime_ns / 1000000u);
    json_obj_end(j);
}

static void json_frame(json_t *j, const Stackwatch__Frame *fr)
{
    json_obj_begin(j, NULL);
    json_hex(j, "addr", fr->addr, 1);
    json_str(j, "module", empty(fr->module) ? NULL : fr->module);
    if (!empty(fr->module))
        json_hex(j, "module_offset", fr->module_offset, 1);
    else
        json_null(j, "module_offset");
    json_str(j, "function", empty(fr->function) ? NULL : fr->function);
    if (!empty(fr->function))
        json_u64(j, "offset", fr->offset);
    else
        json_null(j, "offset");
    json_str(j, "file", empty(fr->file) ? NULL : fr->file);
    if (fr->line)
        json_u64(j, "line", fr->line);
    else
        json_null(j, "line");
    json_bool(j, "inline", fr->is_inline);
    if (fr->build_id.len) {
        char hex[2 * 32 + 1];
        size_t n = fr->build_id.len > 32 ? 32 : fr->build_id.len;
        for (size_t i = 0; i < n; i++)
            snprintf(hex + 2 * i, 3, "%02x", fr->build_id.data[i]);
        json_str(j, "build_id", hex);
    } else {
        json_null(j, "build_id");
    }
    json_obj_end(j);
}

void cli_leaks_json(FILE *f, const Stackwatch__LeakReport *r)
{
    json_t j;
    json_init(&j, f, 1);
    json_obj_begin(&j, NULL);
    json_u64(&j, "expire_ms", r->expire_ms);
    json_str(&j, "sample", empty(r->sample) ? "all" : r->sample);
    json_arr_begin(&j, "clients");
    for (size_t i = 0; i < r->n_clients; i++)
        json_client(&j, r->clients[i]);
    json_arr_end(&j);
    json_arr_begin(&j, "stacks");
    for (size_t i = 0; i < r->n_stacks; i++) {
        const Stackwatch__StackReport *s = r->stacks[i];
        char id[17];
        snprintf(id, sizeof id, "%016" PRIx64, s->id);
        json_obj_begin(&j, NULL);
        json_str(&j, "id", id);
        json_u64(&j, "pid", s->pid);
        json_count(&j, "may_leak", s->may_leak);
        json_count(&j, "expired", s->expired);
        json_count(&j, "free_expired", s->free_expired);
        json_count(&j, "alloc", s->alloc);
        json_count(&j, "free", s->free);
        json_count(&j, "live", s->live);
        json_count(&j, "exit_live", s->exit_live);
        json_count(&j, "uncertain", s->uncertain);
        json_obj_begin(&j, "freed_live_time_ms");
        if (s->freed_lt_valid) {
            json_u64(&j, "min", s->freed_lt_min_ms);
            json_u64(&j, "max", s->freed_lt_max_ms);
            json_u64(&j, "avg", s->freed_lt_avg_ms);
        } else {
            json_null(&j, "min");
            json_null(&j, "max");
            json_null(&j, "avg");
        }
        json_obj_end(&j);
        json_u64(&j, "unfreed_max_age_ms", s->unfreed_max_age_ms);
        json_bool(&j, "truncated", s->truncated);
        json_arr_begin(&j, "frames");
        for (size_t k = 0; k < s->n_frames; k++)
            json_frame(&j, s->frames[k]);
        json_arr_end(&j);
        json_obj_end(&j);
    }
    json_arr_end(&j);
    json_obj_end(&j);
}

void cli_clients_text(FILE *f, const Stackwatch__ClientInfo *const *cs, size_t n)
{
    if (n == 0) {
        fputs("no clients: no process has connected to this collectord yet\n", f);
        return;
    }
    fprintf(f, "%-8s %-8s %-10s %12s %8s %22s  %s\n", "PID", "PPID", "STATE", "EVENTS", "DROPPED",
            "LIVE", "COMMAND");
    for (size_t i = 0; i < n; i++) {
        const Stackwatch__ClientInfo *c = cs[i];
        char cmd[512], live[64];
        cli_cmdline(cmd, sizeof cmd, c);
        snprintf(live, sizeof live, "%" PRIu64 " (%" PRIu64 " B)", cnt(c->live)->count,
                 cnt(c->live)->bytes);
        fprintf(f, "%-8u %-8u %-10s %12" PRIu64 " %8" PRIu64 " %22s  %s\n", c->pid, c->ppid,
                c->state, c->events, c->dropped, live, cmd);
    }
}

void cli_clients_json(FILE *f, const Stackwatch__ClientInfo *const *cs, size_t n)
{
    json_t j;
    json_init(&j, f, 1);
    json_obj_begin(&j, NULL);
    json_arr_begin(&j, "clients");
    for (size_t i = 0; i < n; i++)
        json_client(&j, cs[i]);
    json_arr_end(&j);
    json_obj_end(&j);
}
