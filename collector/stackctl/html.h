/* stackctl's HTML report: one self-contained file with plots, a flame graph and the ranked table. */
#ifndef STACKWATCH_COLLECTOR_CLI_HTML_H
#define STACKWATCH_COLLECTOR_CLI_HTML_H

#include <stdio.h>

#include "proto/stackwatch.pb-c.h"

/* Writes r (queried with series) as one HTML document with no network
 * fetches: a line chart of live bytes over time for the top stacks and each
 * process, a flame graph of may-leak bytes, and the table of stacks by rank.
 * flags: CLI_ALL_FRAMES (py.h) lists the interpreter's own frames in a
 * stack's detail instead of folding them. Returns 0 or -errno. */
int cli_report_html(FILE *f, const Stackwatch__LeakReport *r, unsigned flags);

#endif
