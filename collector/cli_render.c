/* stackctl: a reply from collectord checked against what was asked and written in the format asked for. */
#include "cli_render.h"

#include <errno.h>
#include <string.h>

#include "cli_html.h"
#include "cli_pprof.h"
#include "cli_report.h"

int cli_render(FILE *out, const Stackwatch__Reply *rep, int want, const char *format)
{
    int json = format && !strcmp(format, "json");
    switch (want) {
    case CLI_WANT_LEAKS: {
        if (rep->body_case != STACKWATCH__REPLY__BODY_LEAKS || !rep->leaks)
            return -EPROTO;
        if (!format || !strcmp(format, "text"))
            cli_leaks_text(out, rep->leaks);
        else if (json)
            cli_leaks_json(out, rep->leaks);
        else if (!strcmp(format, "folded"))
            cli_leaks_folded(out, rep->leaks);
        else if (!strcmp(format, "pprof"))
            return cli_leaks_pprof(out, rep->leaks);
        else if (!strcmp(format, "html"))
            return cli_report_html(out, rep->leaks);
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
