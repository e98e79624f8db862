/* collectord's store: ended processes' reports on disk, one versioned file each, read back at start. */
#ifndef STACKWATCH_COLLECTOR_STORE_H
#define STACKWATCH_COLLECTOR_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/stackwatch.pb-c.h"

#define STORE_MAGIC "SWSTORE\n"      /* 8 bytes, then u32 version, u32 length, u32 crc32 (LE) */
#define STORE_VERSION 1u
#define STORE_HDR 20u
#define STORE_MAX_FILE (256u << 20)  /* a record larger than this is refused (reading and writing) */
#define STORE_PATH_MAX 4096

/* One record: a process image (pid + agent instance). */
typedef struct store_rec_s {
    char name[64];                    /* file name under reports/ */
    uint32_t pid;
    uint64_t instance;
    uint64_t end_ns;                  /* CLOCK_REALTIME when it ended / was taken */
    int snapshot;                     /* written while the process ran */
    Stackwatch__StoredProcess *sp;    /* read at start (NULL: written by this run, whose
                                       * client is in memory) */
    uint64_t merged_serial;           /* a reconnected client took it over (0: none) */
    uint64_t merged_gap_ms;           /* ... after this long without a collector */
} store_rec_t;

typedef struct store_s {
    int on;                           /* persistence enabled */
    char dir[STORE_PATH_MAX - 128];   /* the state directory */
    int lockfd;                       /* dir/store.lock, held (flock) while open */
    uint32_t retain_max;              /* ended records kept */
    uint64_t retain_ns;               /* ... for at most this long */
    store_rec_t *recs;
    uint32_t n, cap;
    uint64_t written, write_errors, set_aside, loaded;
} store_t;

/* The default state directory: $XDG_STATE_HOME/stackwatch, else
 * $HOME/.local/state/stackwatch; fallback (no HOME) when neither is set. */
void store_default_dir(char *out, size_t cap, const char *fallback);

/* Opens (creating 0700) dir and dir/reports, takes the lock, and reads every
 * record. A record that is truncated, corrupt, of another version or
 * malformed is renamed to NAME.corrupt with a log line; records beyond the
 * retention are deleted. Returns 0, or -errno with a message in err (the
 * daemon then runs without a store). */
int store_open(store_t *st, const char *dir, uint32_t retain_max, uint64_t retain_ns,
               char *err, size_t errlen);

/* Releases every record and the lock. */
void store_close(store_t *st);

/* Records on disk. */
uint32_t store_count(const store_t *st);

/* Writes sp as the record of (pid, instance) atomically (temp file, fsync,
 * rename, fsync of the directory), replacing an earlier one of the same
 * process image, then applies the retention. The record in memory keeps no
 * copy of sp (its client is in memory). Returns 0 or -errno (logged). */
int store_write(store_t *st, const Stackwatch__StoredProcess *sp);

/* Drops records beyond retain_max (oldest end first) and older than
 * retain_ns, deleting their files. now is CLOCK_REALTIME ns. */
void store_prune(store_t *st, uint64_t now);

/* The snapshot record of a running process image, if one was read at start
 * and not taken over yet. */
store_rec_t *store_find_snapshot(store_t *st, uint32_t pid, uint64_t instance);

/* Encodes sp with the header into a malloc'd buffer. Returns its length, 0
 * on ENOMEM or when too large. */
size_t store_encode(const Stackwatch__StoredProcess *sp, uint8_t **out);

/* Decodes and checks one record (header, length, CRC, version, and every
 * field the reports read). Returns the message or NULL with *why set. */
Stackwatch__StoredProcess *store_decode(const uint8_t *buf, size_t len, const char **why);

/* Frees a record store_decode made (its stacks' frames by reference
 * included); NULL is a no-op. */
void store_sp_free(Stackwatch__StoredProcess *sp);

/* CRC-32 (IEEE, as zlib's crc32). */
uint32_t store_crc32(const uint8_t *p, size_t n);

#endif
