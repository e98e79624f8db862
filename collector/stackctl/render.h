/* stackctl: a reply from collectord checked against what was asked and written in the format asked for. */
#ifndef STACKWATCH_COLLECTOR_CLI_RENDER_H
#define STACKWATCH_COLLECTOR_CLI_RENDER_H

#include <stdio.h>

#include "proto/stackwatch.pb-c.h"

/* What a request asked for, so what its reply must carry. */
enum {
    CLI_WANT_LEAKS = 1,   /* LeakReport: text, json, folded, pprof or html */
    CLI_WANT_CLIENTS = 2, /* ClientList: text or json */
    CLI_WANT_RULES = 3,   /* RuleList: text or json */
    CLI_WANT_MARK = 4,    /* ClientList of the marked clients: "marked pid N" lines */
};

/* Writes rep (decoded from collectord; every field may be absent or
 * hostile) to out. For text, control characters in its strings are first
 * replaced with '?' in place. rep->error is the caller's to report first.
 * Returns 0, -EPROTO when the reply's body is not what want asked for,
 * -EINVAL for an unknown format, or the renderer's -errno (pprof, html).
 * flags: CLI_ALL_FRAMES (py.h) for text and HTML. Never frees rep. */
int cli_render(FILE *out, Stackwatch__Reply *rep, int want, const char *format,
               unsigned flags);

/* Replaces control characters in every string of m (sub-messages included)
 * with '?': for text meant for a terminal (what a traced program named its
 * functions, files and argv must not drive it). */
void cli_scrub(ProtobufCMessage *m);

#endif
