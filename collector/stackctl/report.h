/* stackctl's renderings of collectord replies: memleax-shaped text and JSON. */
#ifndef STACKWATCH_COLLECTOR_CLI_REPORT_H
#define STACKWATCH_COLLECTOR_CLI_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "proto/stackwatch.pb-c.h"

/* The text report. flags: CLI_ALL_FRAMES (py.h) shows the interpreter's own
 * frames instead of folding them. A stack of a Python program is one merged
 * stack, innermost first: the extension's C frames, the blamed Python
 * frames, what called the interpreter. */
void cli_leaks_text(FILE *f, const Stackwatch__LeakReport *r, unsigned flags);
void cli_leaks_json(FILE *f, const Stackwatch__LeakReport *r);

/* flamegraph.pl's collapsed stacks, outermost frame first, one line per
 * stack weighted by its may-leak bytes (stacks with none are left out). */
void cli_leaks_folded(FILE *f, const Stackwatch__LeakReport *r);
void cli_clients_text(FILE *f, const Stackwatch__ClientInfo *const *cs, size_t n);
void cli_clients_json(FILE *f, const Stackwatch__ClientInfo *const *cs, size_t n);

void cli_rules_text(FILE *f, const Stackwatch__RuleList *rl);
void cli_rules_json(FILE *f, const Stackwatch__RuleList *rl);

/* A scan's summary: text, and JSON (one object). */
void cli_scan_text(FILE *f, const Stackwatch__ScanResult *r);
void cli_scan_json(FILE *f, const Stackwatch__ScanResult *r);

/* Local time of a Unix time in ms, "2026-11-24 10:11:12". */
void cli_time(char *buf, size_t cap, uint64_t unix_ms);

/* "python3 script.py": argv joined by spaces (or exe when argv is empty). */
void cli_cmdline(char *buf, size_t cap, const Stackwatch__ClientInfo *c);

#endif
