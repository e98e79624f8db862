/* Agent settings from STACKWATCH_* environment variables, parsed once at start. */
#ifndef STACKWATCH_AGENT_CONFIG_H
#define STACKWATCH_AGENT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CFG_DEPTH_DEFAULT 32
#define CFG_DEPTH_MAX 128
#define CFG_RING_DEFAULT 32768u
#define CFG_RING_MIN 1024u
#define CFG_RING_MAX (1u << 22)
/* CPython's small objects in sampled mode: mean bytes between samples. A
 * 10 MB/min leak is then ~6 samples per default expire time (10 s): the
 * classifier sees it grow in every window (P(no sample in one) ~ 0.2%)
 * while the sampled set stays small (live Python heap / 256 KiB blocks). */
#define CFG_PY_SAMPLE_DEFAULT (256ull << 10)
#define CFG_SCAN_EXIT_WAIT_DEFAULT 60u /* seconds the end waits for its scan, at most */

/* STACKWATCH_PYTHON_ALLOCATORS */
enum { CFG_PY_OFF = 0, CFG_PY_SAMPLED = 1, CFG_PY_EXACT = 2 };

/* How stacks are captured (STACKWATCH_UNWIND; unwind_init's mode). */
enum { UNWIND_DWARF = 0, UNWIND_FP = 1 };

typedef struct cfg_s {
    char dir[256];          /* runtime directory */
    char sock[280];         /* dir + "/agent.sock" */
    int sock_ok;            /* sock fits sockaddr_un.sun_path */
    int depth;              /* frames kept per stack, 1..CFG_DEPTH_MAX */
    char sample[32];        /* "all", or STACKWATCH_SAMPLE as given */
    uint64_t sample_bytes;  /* mean bytes between samples; 0: every allocation */
    const char *log;        /* STACKWATCH_LOG as given (NULL: stderr) */
    uint32_t ring_events;   /* per-thread ring capacity, power of two */
    int enabled;            /* 0: dormant (disabled, or the exe filter said no) */
    int inherit;            /* 0: strip the agent from LD_PRELOAD for children */
    uint32_t connect_ms;    /* how long the constructor waits for the collector */
    int unwind;             /* UNWIND_DWARF or UNWIND_FP (STACKWATCH_UNWIND) */
    const char *fp_modules; /* STACKWATCH_FP_MODULES: more frame-pointer candidates */
    int py_allocators;      /* STACKWATCH_PYTHON_ALLOCATORS: CFG_PY_* (CPython's mem/object domains) */
    uint64_t py_sample_bytes; /* STACKWATCH_PYTHON_SAMPLE: their mean in sampled mode */
    int scan_at_exit;       /* STACKWATCH_SCAN_AT_EXIT: a reachability scan as the process ends */
    uint32_t scan_exit_wait_s; /* STACKWATCH_SCAN_AT_EXIT_WAIT: how long the end waits for it */
} cfg_t;

extern cfg_t cfg;

/* Reads the environment into cfg. A bad value gets one message (through
 * log_msg, so log_open must come first) and its default. exe is the resolved
 * executable path used by STACKWATCH_EXE. Runs in the constructor only. */
void cfg_load(const char *exe);

/* cfg_load for stackctl attach: the settings come from list
 * ("NAME=value\0NAME=value\0\0", the STACKWATCH_* variables of stackctl's
 * environment and the collector's directory), not from the environment.
 * STACKWATCH_EXE and STACKWATCH_INHERIT do not apply. list is read during
 * the call only. */
void cfg_load_list(const char *exe, const char *list);

/* The value of name in such a list, or NULL. */
const char *cfg_list_get(const char *list, const char *name);

/* Resolves the runtime directory the way collectord and stackctl do:
 * STACKWATCH_DIR, else $XDG_RUNTIME_DIR/stackwatch, else /tmp/stackwatch-UID.
 * Returns 0, or -ENAMETOOLONG when it does not fit cap. */
int cfg_resolve_dir(char *buf, size_t cap);

/* Parses a decimal count with an optional k/m/g suffix (powers of 1024).
 * Returns 0 or -EINVAL. Exposed for unit tests. */
int cfg_parse_size(const char *s, uint64_t *out);

/* Parses STACKWATCH_SAMPLE's size: cfg_parse_size's syntax, an optional
 * trailing b/B/iB, 1 byte .. 1 TiB. Returns 0 or -EINVAL. */
int cfg_parse_sample(const char *s, uint64_t *out);

/* Parses STACKWATCH_PYTHON_ALLOCATORS: CFG_PY_*, or -EINVAL. Unset or empty
 * is sampled (the default); 0/off/no/false off; sampled; exact, all, or
 * 1/on/yes/true (what 1 meant before sampling existed: every object). */
int cfg_parse_py_allocators(const char *s);

/* Matches exe against a comma-separated list of fnmatch patterns, each tried
 * on the full path and on the basename. Empty or NULL list matches all. */
int cfg_exe_match(const char *patterns, const char *exe);

#define CFG_EXE_PATTERN_MAX 256 /* bytes of one STACKWATCH_EXE pattern, NUL included */

/* NULL when STACKWATCH_EXE's value is usable (or unset), else why not: an
 * empty pattern, or one too long. Safe in the constructor (no allocation). */
const char *cfg_exe_check(const char *patterns);

#endif
