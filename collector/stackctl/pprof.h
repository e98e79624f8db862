/* stackctl's pprof export: a gzipped profile.proto of a leak report. */
#ifndef STACKWATCH_COLLECTOR_CLI_PPROF_H
#define STACKWATCH_COLLECTOR_CLI_PPROF_H

#include <stdio.h>

#include "proto/stackwatch.pb-c.h"

/* Writes r as a gzip-compressed pprof profile (profile.proto) to f: sample
 * types may-leak objects/bytes and live objects/bytes, one sample per stack,
 * locations with their mapping (module, build-id) and lines (function,
 * file:line; inline frames as extra Line entries of one location). Returns 0,
 * or -errno (message on stderr). */
int cli_leaks_pprof(FILE *f, const Stackwatch__LeakReport *r);

#endif
