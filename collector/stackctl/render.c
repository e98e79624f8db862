/* stackctl: a reply from collectord checked against what was asked and written in the format asked for. */
#include "render.h"

#include <errno.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "html.h"
#include "pprof.h"
#include "report.h"

/* Replaces control characters (line breaks, escape sequences) in every
 * string of m, sub-messages included, with '?'. */
static void scrub_at(ProtobufCMessage *m, int depth)
{
    if (!m || depth > 16)
        return;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        if (fd->type != PROTOBUF_C_TYPE_STRING && fd->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        char *base = (char *)m + fd->offset;
        size_t n = 1;
        void **items = (void **)base;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(size_t *)((char *)m + fd->quantifier_offset);
            items = *(void ***)base;
        } else if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(uint32_t *)((char *)m + fd->quantifier_offset) != fd->id)
                continue;
        }
        for (size_t k = 0; items && k < n; k++) {
            if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
                scrub_at(items[k], depth + 1);
                continue;
            }
            for (unsigned char *p = items[k]; p && *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                    *p = '?';
        }
    }
}

void cli_scrub(ProtobufCMessage *m)
{
    scrub_at(m, 0);
}

int cli_render(FILE *out, Stackwatch__Reply *rep, int want, const char *format,
               unsigned flags)
{
    int json = format && !strcmp(format, "json");
    /* Text goes to a terminal: what a traced program chose for its names
     * (argv, symbols, files) must not move the cursor or fake a line. JSON,
     * HTML, folded and pprof escape or replace on their own. */
    if (!format || !strcmp(format, "text"))
        cli_scrub(&rep->base);
    switch (want) {
    case CLI_WANT_LEAKS: {
        if (rep->body_case != STACKWATCH__REPLY__BODY_LEAKS || !rep->leaks)
            return -EPROTO;
        if (!format || !strcmp(format, "text"))
            cli_leaks_text(out, rep->leaks, flags);
        else if (json)
            cli_leaks_json(out, rep->leaks);
        else if (!strcmp(format, "folded"))
            cli_leaks_folded(out, rep->leaks);
        else if (!strcmp(format, "pprof"))
            return cli_leaks_pprof(out, rep->leaks);
        else if (!strcmp(format, "html"))
            return cli_report_html(out, rep->leaks, flags);
        else
            return -EINVAL;
        return 0;
    }
    case CLI_WANT_CLIENTS:
    case CLI_WANT_MARK: {
        if (rep->body_case != STACKWATCH__REPLY__BODY_CLIENTS || !rep->clients)
            return -EPROTO;
        const Stackwatch__ClientList *cl = rep->clients;
        const Stackwatch__ClientInfo *const *cs = (const Stackwatch__ClientInfo *const *)cl->clients;
        if (want == CLI_WANT_MARK) {
            size_t n = 0;
            for (size_t i = 0; i < cl->n_clients; i++)
                if (cs[i]) {
                    fprintf(out, "marked pid %u\n", cs[i]->pid);
                    n++;
                }
            if (n == 0)
                fprintf(out, "no connected process to mark\n");
        } else if (json) {
            cli_clients_json(out, cs, cl->n_clients);
        } else {
            cli_clients_text(out, cs, cl->n_clients);
        }
        return 0;
    }
    case CLI_WANT_RULES:
        if (rep->body_case != STACKWATCH__REPLY__BODY_RULES || !rep->rules)
            return -EPROTO;
        if (json)
            cli_rules_json(out, rep->rules);
        else
            cli_rules_text(out, rep->rules);
        return 0;
    default:
        return -EINVAL;
    }
}
