/* Agent settings from STACKWATCH_* environment variables, parsed once at start. */
#include "config.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

cfg_t cfg;

static const char *env_get(const char *name)
{
    return getenv(name);
}

/* Where settings come from: the environment, or stackctl attach's list. */
static const char *(*cfg_get)(const char *name) = env_get;
static const char *attach_env;   /* "NAME=value\0...\0\0" from stackctl attach */

const char *cfg_list_get(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p; p += strlen(p) + 1)
        if (strncmp(p, name, n) == 0 && p[n] == '=')
            return p + n + 1;
    return NULL;
}

static const char *attach_get(const char *name)
{
    return cfg_list_get(attach_env, name);
}

static void cfg_read(const char *exe, int attached);

int cfg_parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return -EINVAL;
    uint64_t v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return -EINVAL;
    while (*p >= '0' && *p <= '9') {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
        p++;
    }
    unsigned shift = 0;
    switch (*p) {
    case 'k': case 'K': shift = 10; p++; break;
    case 'm': case 'M': shift = 20; p++; break;
    case 'g': case 'G': shift = 30; p++; break;
    default: break;
    }
    if (*p == 'b' || *p == 'B')
        p++;
    if (*p)
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -EINVAL;
    *out = v << shift;
    return 0;
}

int cfg_resolve_dir(char *buf, size_t cap)
{
    const char *d = cfg_get("STACKWATCH_DIR");
    char tmp[512];
    size_t n;
    if (d && *d) {
        n = strlen(d);
        if (n + 1 > cap)
            return -ENAMETOOLONG;
        memcpy(buf, d, n + 1);
    } else {
        const char *x = cfg_get("XDG_RUNTIME_DIR");
        if (x && *x)
            n = log_fmt(tmp, sizeof tmp, "%s/stackwatch", x);
        else
            n = log_fmt(tmp, sizeof tmp, "/tmp/stackwatch-%u", (unsigned)getuid());
        if (n + 1 >= sizeof tmp || n + 1 > cap)
            return -ENAMETOOLONG;
        memcpy(buf, tmp, n + 1);
    }
    /* Trailing slashes would double up in socket paths. */
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    /* ...and so would one inside "XDG/" + "/stackwatch". */
    for (char *p = buf; *p; p++)
        while (p[0] == '/' && p[1] == '/')
            memmove(p, p + 1, strlen(p));
    return 0;
}

const char *cfg_exe_check(const char *patterns)
{
    if (!patterns || !*patterns)
        return NULL;
    for (const char *p = patterns;;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0)
            return "an empty pattern (two commas, or one at an end)";
        if (n >= CFG_EXE_PATTERN_MAX)
            return "a pattern longer than 255 bytes";
        if (!e)
            return NULL;
        p = e + 1;
    }
}

int cfg_exe_match(const char *patterns, const char *exe)
{
    if (!patterns || !*patterns)
        return 1;
    const char *base = strrchr(exe, '/');
    base = base ? base + 1 : exe;
    char pat[CFG_EXE_PATTERN_MAX];
    const char *p = patterns;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > 0 && n < sizeof pat) {
            memcpy(pat, p, n);
            pat[n] = '\0';
            if (fnmatch(pat, exe, 0) == 0 || fnmatch(pat, base, 0) == 0)
                return 1;
        }
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

/* Removes our library from LD_PRELOAD in place, so children start without
 * the agent. Only the constructor calls this, before any thread exists. */
static void strip_preload(void)
{
    extern char **environ;
    for (char **ep = environ; ep && *ep; ep++) {
        if (strncmp(*ep, "LD_PRELOAD=", 11) != 0)
            continue;
        char *val = *ep + 11, *w = val;
        const char *r = val;
        while (*r) {
            while (*r == ':' || *r == ' ')
                r++;
            const char *tok = r;
            while (*r && *r != ':' && *r != ' ')
                r++;
            size_t n = (size_t)(r - tok);
            if (n == 0)
                continue;
            const char *slash = tok;
            for (const char *q = tok; q < r; q++)
                if (*q == '/')
                    slash = q + 1;
            if ((size_t)(r - slash) >= 13 && strncmp(slash, "libstackagent", 13) == 0)
                continue;
            if (w != val)
                *w++ = ':';
            memmove(w, tok, n);
            w += n;
        }
        *w = '\0';
        if (w == val)
            unsetenv("LD_PRELOAD");
        return;
    }
}

/* 1 for 1/yes/true/on, 0 for 0/no/false/off, -1 for anything else. */
static int bool_word(const char *v)
{
    if (!strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on"))
        return 1;
    if (!strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off"))
        return 0;
    return -1;
}

static int parse_bool(const char *name, const char *v, int dflt)
{
    if (!v || !*v)
        return dflt;
    int b = bool_word(v);
    if (b >= 0)
        return b;
    log_msg("%s=%s is not a boolean (use 1 or 0); using %d", name, v, dflt);
    return dflt;
}

int cfg_parse_sample(const char *s, uint64_t *out)
{
    char buf[32];
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof buf)
        return -EINVAL;
    memcpy(buf, s, n + 1);
    /* 512k, 512K, 512kb, 512KiB, 524288, 524288b */
    if (n > 1 && (buf[n - 1] == 'b' || buf[n - 1] == 'B'))
        buf[--n] = '\0';
    if (n > 1 && buf[n - 1] == 'i')
        buf[--n] = '\0';
    uint64_t v;
    if (cfg_parse_size(buf, &v) < 0 || v < 1 || v > (1ull << 40))
        return -EINVAL;
    *out = v;
    return 0;
}

int cfg_parse_py_allocators(const char *s)
{
    if (!s || !*s || !strcmp(s, "sampled"))
        return CFG_PY_SAMPLED;
    if (!strcmp(s, "exact") || !strcmp(s, "all"))
        return CFG_PY_EXACT;
    int b = bool_word(s);
    return b < 0 ? -EINVAL : b ? CFG_PY_EXACT : CFG_PY_OFF;
}

void cfg_load(const char *exe)
{
    cfg_get = env_get;
    attach_env = NULL;
    cfg_read(exe, 0);
}

void cfg_load_list(const char *exe, const char *list)
{
    attach_env = list;
    cfg_get = attach_get;
    cfg_read(exe, 1);
    cfg_get = env_get;
    attach_env = NULL;
}

static void cfg_read(const char *exe, int attached)
{
    memset(&cfg, 0, sizeof cfg);
    cfg.enabled = 1;
    cfg.depth = CFG_DEPTH_DEFAULT;
    cfg.ring_events = CFG_RING_DEFAULT;
    cfg.connect_ms = 200;
    cfg.inherit = 1;
    memcpy(cfg.sample, "all", 4);
    cfg.log = cfg_get("STACKWATCH_LOG");

    if (parse_bool("STACKWATCH_DISABLE", cfg_get("STACKWATCH_DISABLE"), 0))
        cfg.enabled = 0;
    cfg.inherit = parse_bool("STACKWATCH_INHERIT", cfg_get("STACKWATCH_INHERIT"), 1);
    const char *pa = cfg_get("STACKWATCH_PYTHON_ALLOCATORS");
    cfg.py_allocators = cfg_parse_py_allocators(pa);
    if (cfg.py_allocators < 0) {
        log_msg("STACKWATCH_PYTHON_ALLOCATORS=%s: use sampled, exact or 0; using sampled", pa);
        cfg.py_allocators = CFG_PY_SAMPLED;
    }
    cfg.scan_at_exit = parse_bool("STACKWATCH_SCAN_AT_EXIT", cfg_get("STACKWATCH_SCAN_AT_EXIT"), 0);
    cfg.scan_exit_wait_s = CFG_SCAN_EXIT_WAIT_DEFAULT;
    const char *sw = cfg_get("STACKWATCH_SCAN_AT_EXIT_WAIT");
    if (sw && *sw) {
        uint64_t w;
        if (cfg_parse_size(sw, &w) < 0 || w < 1 || w > 3600)
            log_msg("STACKWATCH_SCAN_AT_EXIT_WAIT=%s is not a time in 1..3600 s; using %u", sw,
                    CFG_SCAN_EXIT_WAIT_DEFAULT);
        else
            cfg.scan_exit_wait_s = (uint32_t)w;
    }
    cfg.py_sample_bytes = CFG_PY_SAMPLE_DEFAULT;
    const char *ps = cfg_get("STACKWATCH_PYTHON_SAMPLE");
    if (ps && *ps) {
        uint64_t b;
        if (cfg_parse_sample(ps, &b) < 0)
            log_msg("STACKWATCH_PYTHON_SAMPLE=%s is not a byte size in 1..1t (like 256k); "
                    "using %llu", ps, (unsigned long long)CFG_PY_SAMPLE_DEFAULT);
        else
            cfg.py_sample_bytes = b;
    }
    /* Attached, children never get the agent: there is no LD_PRELOAD to strip. */
    if (!cfg.inherit && !attached)
        strip_preload();

    const char *exes = attached ? NULL : cfg_get("STACKWATCH_EXE");
    const char *why = cfg_exe_check(exes);
    if (why) {
        log_msg("STACKWATCH_EXE=%s: %s; tracing every program", exes, why);
        exes = NULL;
    }
    if (cfg.enabled && exe && !cfg_exe_match(exes, exe))
        cfg.enabled = 0; /* silently: this is the filter doing its job */

    if (cfg_resolve_dir(cfg.dir, sizeof cfg.dir) < 0) {
        log_msg("the runtime directory (STACKWATCH_DIR or XDG_RUNTIME_DIR) is too long "
                "(max %zu bytes); not tracing", sizeof cfg.dir - 1);
        cfg.enabled = 0;
    }
    size_t n = log_fmt(cfg.sock, sizeof cfg.sock, "%s/agent.sock", cfg.dir);
    cfg.sock_ok = n < sizeof(((struct sockaddr_un *)0)->sun_path);
    if (!cfg.sock_ok && cfg.enabled) {
        log_msg("socket path %s is too long for a Unix socket (max %zu bytes); not tracing",
                cfg.sock, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        cfg.enabled = 0;
    }

    const char *v = cfg_get("STACKWATCH_DEPTH");
    if (v && *v) {
        uint64_t d;
        if (cfg_parse_size(v, &d) < 0 || d < 1 || d > CFG_DEPTH_MAX)
            log_msg("STACKWATCH_DEPTH=%s is not a frame count in 1..%d; using %d", v,
                    CFG_DEPTH_MAX, CFG_DEPTH_DEFAULT);
        else
            cfg.depth = (int)d;
    }

    v = cfg_get("STACKWATCH_SAMPLE");
    if (v && *v && strcmp(v, "all") != 0) {
        uint64_t b;
        if (cfg_parse_sample(v, &b) < 0) {
            log_msg("STACKWATCH_SAMPLE=%s is neither 'all' nor a byte size in 1..1t "
                    "(like 512k); recording every allocation", v);
        } else {
            cfg.sample_bytes = b;
            log_fmt(cfg.sample, sizeof cfg.sample, "%s", v);
        }
    }

    v = cfg_get("STACKWATCH_RING");
    if (v && *v) {
        uint64_t r;
        if (cfg_parse_size(v, &r) < 0 || r < CFG_RING_MIN || r > CFG_RING_MAX ||
            (r & (r - 1)) != 0)
            log_msg("STACKWATCH_RING=%s is not a power of two in %u..%u events; using %u", v,
                    CFG_RING_MIN, CFG_RING_MAX, CFG_RING_DEFAULT);
        else
            cfg.ring_events = (uint32_t)r;
    }

    v = cfg_get("STACKWATCH_UNWIND");
    if (v && *v) {
        if (!strcmp(v, "fp"))
            cfg.unwind = UNWIND_FP;
        else if (!strcmp(v, "dwarf"))
            cfg.unwind = UNWIND_DWARF;
        else
            log_msg("STACKWATCH_UNWIND=%s: use fp or dwarf; using dwarf", v);
    }
    cfg.fp_modules = cfg_get("STACKWATCH_FP_MODULES");

    v = cfg_get("STACKWATCH_CONNECT_MS");
    if (v && *v) {
        uint64_t ms;
        if (cfg_parse_size(v, &ms) < 0 || ms > 10000)
            log_msg("STACKWATCH_CONNECT_MS=%s is not a time in 0..10000 ms; using %u", v,
                    cfg.connect_ms);
        else
            cfg.connect_ms = (uint32_t)ms;
    }
}
