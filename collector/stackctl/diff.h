/* stackctl's snapshots and diffs: which stacks grew between two reports (two marks, two pids). */
#ifndef STACKWATCH_COLLECTOR_CLI_DIFF_H
#define STACKWATCH_COLLECTOR_CLI_DIFF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "proto/stackwatch.pb-c.h"

#define SNAP_MAGIC "SWSNAP1\n"       /* then u32 length (LE) and a LeakReport */
#define SNAP_MAX (512u << 20)

/* Writes r (queried with all and by_exe) as a snapshot file. Returns 0 or
 * -errno. */
int cli_snapshot_write(FILE *f, const Stackwatch__LeakReport *r);

/* Reads a snapshot. Returns the report (free with
 * stackwatch__leak_report__free_unpacked) or NULL with a reason in why. */
Stackwatch__LeakReport *cli_snapshot_read(const char *path, char *why, size_t whylen);

/* Decodes a snapshot held in memory (cli_snapshot_read's core, fuzzable). */
Stackwatch__LeakReport *cli_snapshot_decode(const uint8_t *buf, size_t len, const char **why);

/* Prints which stacks grew from a to b, matched by id (queried by_exe: the
 * executable and frames as module offsets). la and lb name the two sides.
 * top > 0 limits the stacks listed. */
void cli_diff_text(FILE *f, const Stackwatch__LeakReport *a, const Stackwatch__LeakReport *b,
                   const char *la, const char *lb, uint32_t top);
void cli_diff_json(FILE *f, const Stackwatch__LeakReport *a, const Stackwatch__LeakReport *b,
                   const char *la, const char *lb, uint32_t top);

#endif
