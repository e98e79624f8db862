/* stackctl's pprof export: a leak report as a gzip-compressed profile.proto. */
#include "pprof.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "py.h"
#include "pprof/profile.pb-c.h"

/* Sample values, in this order, in every Sample. */
enum { PP_MAY_LEAK_N, PP_MAY_LEAK_B, PP_LIVE_N, PP_LIVE_B, PP_NVALUES };

#define PP_PAGE 4096u
#define PP_CHUNK (64u * 1024u)

/* A bump allocator for everything the profile points to; freed as a whole. */
typedef struct pp_chunk_s {
    struct pp_chunk_s *next; /* the chunk allocated before this one */
    size_t used;             /* bytes of data handed out */
    size_t cap;              /* bytes of data */
    max_align_t data[];      /* the allocations */
} pp_chunk_t;

/* Open addressing from a key's hash to its entry; the key itself is compared
 * through a callback, so one table type serves strings, functions, mappings
 * and locations. */
typedef struct pp_tab_s {
    uint64_t *hash; /* per slot: the hash of its entry's key */
    uint32_t *val;  /* per slot: 1-based index of its entry, 0 when empty */
    size_t cap;     /* slots, a power of two (0 before the first insert) */
    size_t n;       /* slots in use */
} pp_tab_t;

/* A Line while its Location is looked up (before it is allocated). */
typedef struct pp_line_s {
    uint64_t fid; /* Function id */
    int64_t line; /* source line, 0 unknown */
} pp_line_t;

/* The profile under construction. Errors are sticky: after the first failed
 * allocation every builder function returns 0 and err says why. */
typedef struct pprof_s {
    int err;                              /* 0 or the first -errno */
    pp_chunk_t *chunks;                   /* the arena, newest first */
    char **strs;                          /* string_table; borrowed or arena strings */
    size_t nstrs, capstrs;                /* entries in strs, allocated entries */
    pp_tab_t str_tab;                     /* string -> index + 1 */
    Perftools__Profiles__Function **fns;  /* function[i] has id i + 1 */
    size_t nfns, capfns;                  /* entries in fns, allocated entries */
    pp_tab_t fn_tab;                      /* (name, filename) -> id */
    Perftools__Profiles__Mapping **maps;  /* mapping[i] has id i + 1 */
    size_t nmaps, capmaps;                /* entries in maps, allocated entries */
    pp_tab_t map_tab;                     /* (filename, start, build_id) -> id */
    Perftools__Profiles__Location **locs; /* location[i] has id i + 1 */
    size_t nlocs, caplocs;                /* entries in locs, allocated entries */
    pp_tab_t loc_tab;                     /* (mapping, address, lines) -> id */
    pp_line_t *scratch;                   /* lines of the location being looked up */
    size_t capscratch;                    /* allocated entries of scratch */
} pprof_t;

static int empty(const char *s)
{
    return !s || !*s;
}

static const Stackwatch__Count zero_count = STACKWATCH__COUNT__INIT;

static const Stackwatch__Count *cnt(const Stackwatch__Count *c)
{
    return c ? c : &zero_count;
}

/* profile.proto's values are int64; counters beyond that saturate. */
static int64_t pp_i64(uint64_t v)
{
    return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

/* splitmix64's finalizer: spreads the bits of h. */
static uint64_t pp_mix(uint64_t h)
{
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

static uint64_t pp_hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return pp_mix(h);
}

/* ---------------------------------------------------------------- memory */

/* Zeroed memory from the arena, or NULL (p->err set). */
static void *pp_alloc(pprof_t *p, size_t size)
{
    const size_t align = sizeof(max_align_t);
    if (p->err)
        return NULL;
    size = (size + align - 1) & ~(align - 1);
    pp_chunk_t *c = p->chunks;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > PP_CHUNK / 4 ? size : PP_CHUNK;
        pp_chunk_t *n = malloc(sizeof *n + cap);
        if (!n) {
            p->err = -ENOMEM;
            return NULL;
        }
        n->used = 0;
        n->cap = cap;
        if (c && cap != PP_CHUNK) {
            /* A large block of its own: keep filling the current chunk. */
            n->next = c->next;
            c->next = n;
        } else {
            n->next = c;
            p->chunks = n;
        }
        c = n;
    }
    void *m = (char *)c->data + c->used;
    c->used += size;
    memset(m, 0, size);
    return m;
}

/* Makes room for one more element in the array *arr (arr is the address of
 * any object pointer: copied through memcpy, as POSIX gives all object
 * pointers one representation) of *cap elements of size elsize holding n.
 * Returns 0 or -ENOMEM (p->err set). */
static int pp_grow(pprof_t *p, void *arr, size_t *cap, size_t n, size_t elsize)
{
    if (p->err)
        return p->err;
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 64;
    void *old;
    memcpy(&old, arr, sizeof old);
    void *nu = realloc(old, ncap * elsize);
    if (!nu) {
        p->err = -ENOMEM;
        return p->err;
    }
    memcpy(arr, &nu, sizeof nu);
    *cap = ncap;
    return 0;
}

/* ---------------------------------------------------------------- hash table */

typedef int (*pp_eq_fn)(const pprof_t *p, uint32_t val, const void *key);

/* The slot for key: one holding its entry, or the empty one to put it in. */
static size_t pp_tab_find(const pprof_t *p, const pp_tab_t *t, uint64_t h, pp_eq_fn eq,
                          const void *key)
{
    size_t mask = t->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        if (t->val[i] == 0 || (t->hash[i] == h && eq(p, t->val[i], key)))
            return i;
    }
}

/* Keeps t at most half full, so that a following find ends and a put fits.
 * Returns 0 or -ENOMEM (p->err set). */
static int pp_tab_reserve(pprof_t *p, pp_tab_t *t)
{
    if (p->err)
        return p->err;
    if ((t->n + 1) * 2 <= t->cap)
        return 0;
    size_t ncap = t->cap ? t->cap * 2 : 256;
    uint64_t *hash = malloc(ncap * sizeof *hash);
    uint32_t *val = calloc(ncap, sizeof *val);
    if (!hash || !val) {
        free(hash);
        free(val);
        p->err = -ENOMEM;
        return p->err;
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->val[i])
            continue;
        size_t j = (size_t)t->hash[i] & (ncap - 1);
        while (val[j])
            j = (j + 1) & (ncap - 1);
        hash[j] = t->hash[i];
        val[j] = t->val[i];
    }
    free(t->hash);
    free(t->val);
    t->hash = hash;
    t->val = val;
    t->cap = ncap;
    return 0;
}

static void pp_tab_put(pp_tab_t *t, size_t slot, uint64_t h, uint32_t val)
{
    t->hash[slot] = h;
    t->val[slot] = val;
    t->n++;
}

static void pp_tab_free(pp_tab_t *t)
{
    free(t->hash);
    free(t->val);
}

/* ---------------------------------------------------------------- strings */

static int pp_str_eq(const pprof_t *p, uint32_t val, const void *key)
{
    return strcmp(p->strs[val - 1], key) == 0;
}

/* The string_table index of s ("" and NULL: 0), or 0 on failure (p->err
 * set). With copy, a new string is copied into the arena; without, s is
 * borrowed and must outlive the profile (the report's strings do). */
static int64_t pp_str_add(pprof_t *p, const char *s, int copy)
{
    if (empty(s) || pp_tab_reserve(p, &p->str_tab) < 0)
        return 0;
    uint64_t h = pp_hash_str(s);
    size_t slot = pp_tab_find(p, &p->str_tab, h, pp_str_eq, s);
    if (p->str_tab.val[slot])
        return p->str_tab.val[slot] - 1;
    char *keep = (char *)s;
    if (copy) {
        size_t n = strlen(s) + 1;
        if (!(keep = pp_alloc(p, n)))
            return 0;
        memcpy(keep, s, n);
    }
    if (pp_grow(p, &p->strs, &p->capstrs, p->nstrs, sizeof *p->strs) < 0)
        return 0;
    p->strs[p->nstrs++] = keep;
    pp_tab_put(&p->str_tab, slot, h, (uint32_t)p->nstrs);
    return (int64_t)p->nstrs - 1;
}

static int64_t pp_str(pprof_t *p, const char *s)
{
    return pp_str_add(p, s, 0);
}

static int64_t pp_strf(pprof_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* pp_str of a formatted string (copied). */
static int64_t pp_strf(pprof_t *p, const char *fmt, ...)
{
    char buf[512], *s = buf;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return 0;
    if ((size_t)n >= sizeof buf) {
        if (!(s = malloc((size_t)n + 1))) {
            p->err = -ENOMEM;
            return 0;
        }
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    int64_t idx = pp_str_add(p, s, 1);
    if (s != buf)
        free(s);
    return idx;
}

/* ---------------------------------------------------------------- functions */

typedef struct pp_fn_key_s {
    int64_t name;     /* string index */
    int64_t filename; /* string index */
} pp_fn_key_t;

static int pp_fn_eq(const pprof_t *p, uint32_t val, const void *key)
{
    const pp_fn_key_t *k = key;
    const Perftools__Profiles__Function *fn = p->fns[val - 1];
    return fn->name == k->name && fn->filename == k->filename;
}

/* The id of the Function of fr (which has a function name), or 0 on
 * failure. name and system_name are both the name the report gives (the
 * collector demangles C++ and keeps no other). */
static uint64_t pp_function(pprof_t *p, const Stackwatch__Frame *fr)
{
    pp_fn_key_t k = { pp_str(p, fr->function), pp_str(p, fr->file) };
    if (pp_tab_reserve(p, &p->fn_tab) < 0)
        return 0;
    uint64_t h = pp_mix((uint64_t)k.name * 0x9e3779b97f4a7c15ULL ^ (uint64_t)k.filename);
    size_t slot = pp_tab_find(p, &p->fn_tab, h, pp_fn_eq, &k);
    if (p->fn_tab.val[slot])
        return p->fn_tab.val[slot];
    Perftools__Profiles__Function *fn = pp_alloc(p, sizeof *fn);
    if (!fn || pp_grow(p, &p->fns, &p->capfns, p->nfns, sizeof *p->fns) < 0)
        return 0;
    perftools__profiles__function__init(fn);
    fn->id = p->nfns + 1;
    fn->name = k.name;
    fn->system_name = k.name;
    fn->filename = k.filename;
    p->fns[p->nfns++] = fn;
    pp_tab_put(&p->fn_tab, slot, h, (uint32_t)fn->id);
    return fn->id;
}

/* ---------------------------------------------------------------- mappings */

typedef struct pp_map_key_s {
    int64_t filename; /* string index of the module path */
    uint64_t start;   /* load bias */
    int64_t build_id; /* string index of the hex build-id */
} pp_map_key_t;

static int pp_map_eq(const pprof_t *p, uint32_t val, const void *key)
{
    const pp_map_key_t *k = key;
    const Perftools__Profiles__Mapping *m = p->maps[val - 1];
    return m->filename == k->filename && m->memory_start == k->start && m->build_id == k->build_id;
}

/* The string index of the hex ("0a1b...") of a build-id; 0 when empty. */
static int64_t pp_build_id(pprof_t *p, const ProtobufCBinaryData *b)
{
    static const char digits[] = "0123456789abcdef";
    char buf[129], *hex = buf;
    if (b->len == 0)
        return 0;
    if (b->len * 2 + 1 > sizeof buf && !(hex = pp_alloc(p, b->len * 2 + 1)))
        return 0;
    for (size_t i = 0; i < b->len; i++) {
        hex[2 * i] = digits[b->data[i] >> 4];
        hex[2 * i + 1] = digits[b->data[i] & 15];
    }
    hex[2 * b->len] = '\0';
    return pp_str_add(p, hex, hex == buf);
}

/* The Mapping of fr's module (0: fr has none, or failure), widened to cover
 * fr. One per module path, load bias and build-id: the same library in two
 * processes is two mappings unless it loaded at the same address.
 *
 * memory_start is the load bias (addr - module_offset) with file_offset 0,
 * from which pprof's symbolizer gets back ELF addresses of shared objects and
 * PIEs. memory_limit is the page after the highest address seen, as the
 * report does not carry module sizes (pprof symbolizes only addresses in
 * [start, limit)). A fixed-address executable has bias 0: start 0 and limit
 * UINT64_MAX, pprof's whole-address-space mapping whose addresses need no
 * adjustment (elfexec.GetBase); any smaller limit with start 0 would take
 * pprof's kernel heuristics. */
static uint64_t pp_mapping(pprof_t *p, const Stackwatch__Frame *fr)
{
    if (empty(fr->module))
        return 0;
    uint64_t bias = fr->module_offset <= fr->addr ? fr->addr - fr->module_offset : 0;
    pp_map_key_t k = { pp_str(p, fr->module), bias, pp_build_id(p, &fr->build_id) };
    if (pp_tab_reserve(p, &p->map_tab) < 0)
        return 0;
    uint64_t h = pp_mix(pp_mix((uint64_t)k.filename ^ k.start) ^ (uint64_t)k.build_id);
    size_t slot = pp_tab_find(p, &p->map_tab, h, pp_map_eq, &k);
    Perftools__Profiles__Mapping *m;
    if (p->map_tab.val[slot]) {
        m = p->maps[p->map_tab.val[slot] - 1];
    } else {
        m = pp_alloc(p, sizeof *m);
        if (!m || pp_grow(p, &p->maps, &p->capmaps, p->nmaps, sizeof *p->maps) < 0)
            return 0;
        perftools__profiles__mapping__init(m);
        m->id = p->nmaps + 1;
        m->memory_start = k.start;
        m->memory_limit = bias ? 0 : UINT64_MAX;
        m->filename = k.filename;
        m->build_id = k.build_id;
        p->maps[p->nmaps++] = m;
        pp_tab_put(&p->map_tab, slot, h, (uint32_t)m->id);
    }
    if (bias != 0 && fr->addr < UINT64_MAX - PP_PAGE) {
        uint64_t limit = (fr->addr + PP_PAGE) & ~(uint64_t)(PP_PAGE - 1);
        if (limit > m->memory_limit)
            m->memory_limit = limit;
    }
    return m->id;
}

/* Records what fr says about the symbols of its mapping. Any symbolized
 * frame sets a flag, as pprof's own symbolizer does: pprof re-symbolizes
 * only mappings with none of has_functions/filenames/line_numbers, and
 * doing so for a partly symbolized one would replace our names. */
static void pp_mapping_note(pprof_t *p, uint64_t mid, const Stackwatch__Frame *fr)
{
    if (mid == 0)
        return;
    Perftools__Profiles__Mapping *m = p->maps[mid - 1];
    m->has_functions |= !empty(fr->function);
    m->has_filenames |= !empty(fr->file);
    m->has_line_numbers |= fr->line != 0;
    m->has_inline_frames |= fr->is_inline != 0;
}

/* ---------------------------------------------------------------- locations */

typedef struct pp_loc_key_s {
    uint64_t mapping_id;    /* 0: none */
    uint64_t address;       /* the frame's return address */
    const pp_line_t *lines; /* innermost first */
    size_t nlines;          /* entries in lines */
} pp_loc_key_t;

static int pp_loc_eq(const pprof_t *p, uint32_t val, const void *key)
{
    const pp_loc_key_t *k = key;
    const Perftools__Profiles__Location *l = p->locs[val - 1];
    if (l->mapping_id != k->mapping_id || l->address != k->address || l->n_line != k->nlines)
        return 0;
    for (size_t i = 0; i < k->nlines; i++)
        if (l->line[i]->function_id != k->lines[i].fid || l->line[i]->line != k->lines[i].line)
            return 0;
    return 1;
}

/* The id of the Location of fr[0..n): a physical frame fr[n - 1] and the
 * frames inlined into it at the same address, innermost first. Frames
 * without a function name add no Line, so a stripped frame is a Location
 * without lines, which pprof shows as its module and address. The lines are
 * part of the key: should one address ever come with two different inline
 * chains, each gets its own Location. Returns 0 on failure. */
static uint64_t pp_location(pprof_t *p, Stackwatch__Frame *const *fr, size_t n)
{
    uint64_t mid = pp_mapping(p, fr[n - 1]);
    if (n > p->capscratch) {
        pp_line_t *s = realloc(p->scratch, n * sizeof *s);
        if (!s) {
            p->err = -ENOMEM;
            return 0;
        }
        p->scratch = s;
        p->capscratch = n;
    }
    pp_loc_key_t k = { mid, fr[n - 1]->addr, p->scratch, 0 };
    uint64_t h = pp_mix(mid ^ pp_mix(k.address));
    for (size_t i = 0; i < n; i++) {
        pp_mapping_note(p, mid, fr[i]);
        if (empty(fr[i]->function))
            continue;
        pp_line_t *l = &p->scratch[k.nlines++];
        l->fid = pp_function(p, fr[i]);
        l->line = fr[i]->line;
        h = pp_mix(h ^ (l->fid << 32 ^ (uint64_t)l->line));
    }
    if (p->err || pp_tab_reserve(p, &p->loc_tab) < 0)
        return 0;
    size_t slot = pp_tab_find(p, &p->loc_tab, h, pp_loc_eq, &k);
    if (p->loc_tab.val[slot])
        return p->loc_tab.val[slot];
    Perftools__Profiles__Location *loc = pp_alloc(p, sizeof *loc);
    Perftools__Profiles__Line **lines = pp_alloc(p, k.nlines * sizeof *lines);
    if (!loc || (k.nlines && !lines) ||
        pp_grow(p, &p->locs, &p->caplocs, p->nlocs, sizeof *p->locs) < 0)
        return 0;
    perftools__profiles__location__init(loc);
    loc->id = p->nlocs + 1;
    loc->mapping_id = mid;
    loc->address = k.address;
    for (size_t i = 0; i < k.nlines; i++) {
        if (!(lines[i] = pp_alloc(p, sizeof *lines[i])))
            return 0;
        perftools__profiles__line__init(lines[i]);
        lines[i]->function_id = k.lines[i].fid;
        lines[i]->line = k.lines[i].line;
    }
    loc->line = k.nlines ? lines : NULL;
    loc->n_line = k.nlines;
    p->locs[p->nlocs++] = loc;
    pp_tab_put(&p->loc_tab, slot, h, (uint32_t)loc->id);
    return loc->id;
}

/* ---------------------------------------------------------------- samples */

/* A label with a string index str (0: none) or a number num. */
static Perftools__Profiles__Label *pp_label(pprof_t *p, const char *key, int64_t str, int64_t num)
{
    Perftools__Profiles__Label *l = pp_alloc(p, sizeof *l);
    if (!l)
        return NULL;
    perftools__profiles__label__init(l);
    l->key = pp_str(p, key);
    l->str = str;
    l->num = num;
    return l;
}

/* The Location of a Python frame: in the mapping "[python]" (which marks
 * Python frames), address 0, one Line of a Function named after the Python
 * function in its .py file. Returns 0 on failure. */
static uint64_t pp_py_location(pprof_t *p, const Stackwatch__PyFrame *pf)
{
    Stackwatch__Frame fr = STACKWATCH__FRAME__INIT;
    Stackwatch__Frame *frp = &fr;
    fr.module = (char *)"[python]";
    fr.function = pf->function && *pf->function ? pf->function : (char *)"?";
    fr.file = pf->file ? pf->file : (char *)"";
    fr.line = pf->line;
    return pp_location(p, &frp, 1);
}

/* One Sample of a stack: its locations innermost first (one per physical
 * frame, see pp_location) with the Python frames of tb (if any) after the
 * interpreter frame they run under, the four values (the part of tbs[t]
 * among ntb blamed tracebacks), and labels pid (num), class, exe, stack_id
 * and python_missing (str) where known. NULL on failure. */
static Perftools__Profiles__Sample *pp_sample(pprof_t *p, const Stackwatch__StackReport *s,
                                              const Stackwatch__PyTraceback *const *tbs,
                                              size_t ntb, size_t t)
{
    const Stackwatch__PyTraceback *tb = ntb ? tbs[t] : NULL;
    size_t anchor = cli_py_anchor(s);
    Perftools__Profiles__Sample *sm = pp_alloc(p, sizeof *sm);
    uint64_t *ids = pp_alloc(p, (s->n_frames + (tb ? tb->n_frames : 0) + 1) * sizeof *ids);
    int64_t *v = pp_alloc(p, PP_NVALUES * sizeof *v);
    Perftools__Profiles__Label **lb = pp_alloc(p, 5 * sizeof *lb);
    if (!sm || !ids || !v || !lb)
        return NULL;
    perftools__profiles__sample__init(sm);
    size_t nids = 0;
    for (size_t i = 0; i <= s->n_frames;) {
        if (i == anchor && tb) {
            for (size_t q = 0; q < tb->n_frames; q++) {
                uint64_t id = pp_py_location(p, tb->frames[q]);
                if (id == 0)
                    return NULL;
                ids[nids++] = id;
            }
            tb = NULL;
        }
        if (i == s->n_frames)
            break;
        /* Inline frames precede the physical frame they were inlined into
         * and carry its address. is_inline, not the address alone, ends a
         * group: direct recursion repeats one return address in
         * consecutive physical frames. */
        size_t j = i;
        while (j + 1 < s->n_frames && s->frames[j]->is_inline &&
               s->frames[j + 1]->addr == s->frames[i]->addr)
            j++;
        uint64_t id = pp_location(p, s->frames + i, j - i + 1);
        if (id == 0)
            return NULL;
        ids[nids++] = id;
        i = j + 1;
    }
    v[PP_MAY_LEAK_N] = pp_i64(cli_py_share(cnt(s->may_leak)->count, tbs, ntb, t));
    v[PP_MAY_LEAK_B] = pp_i64(cli_py_share(cnt(s->may_leak)->bytes, tbs, ntb, t));
    v[PP_LIVE_N] = pp_i64(cli_py_share(cnt(s->live)->count, tbs, ntb, t));
    v[PP_LIVE_B] = pp_i64(cli_py_share(cnt(s->live)->bytes, tbs, ntb, t));
    size_t nlb = 0;
    if (s->pid)
        lb[nlb++] = pp_label(p, "pid", 0, s->pid);
    if (!empty(s->class_))
        lb[nlb++] = pp_label(p, "class", pp_str(p, s->class_), 0);
    if (!empty(s->exe))
        lb[nlb++] = pp_label(p, "exe", pp_str(p, s->exe), 0);
    lb[nlb++] = pp_label(p, "stack_id", pp_strf(p, "%016" PRIx64, s->id), 0);
    if (!empty(s->python_missing))
        lb[nlb++] = pp_label(p, "python_missing", pp_str(p, s->python_missing), 0);
    if (p->err)
        return NULL;
    sm->location_id = ids;
    sm->n_location_id = nids;
    sm->value = v;
    sm->n_value = PP_NVALUES;
    sm->label = lb;
    sm->n_label = nlb;
    return sm;
}

/* ---------------------------------------------------------------- gzip output */

/* A protobuf-c output buffer that gzips what it is given into a FILE, so the
 * serialized profile never exists in memory as a whole. */
typedef struct pp_gz_s {
    ProtobufCBuffer base;     /* protobuf-c's interface; first, so append can cast */
    z_stream z;               /* the deflate state (gzip wrapper) */
    FILE *f;                  /* where compressed bytes go */
    int err;                  /* 0 or the first -errno */
    size_t nin;               /* bytes waiting in in */
    unsigned char in[65536];  /* serialized bytes not yet compressed */
    unsigned char out[65536]; /* compressed bytes on their way to f */
} pp_gz_t;

/* Compresses in[] with flush (Z_NO_FLUSH or Z_FINISH) and writes the output.
 * Returns 0 or -errno (g->err set). */
static int pp_gz_deflate(pp_gz_t *g, int flush)
{
    if (g->err)
        return g->err;
    g->z.next_in = g->in;
    g->z.avail_in = (uInt)g->nin;
    int zrc;
    do {
        g->z.next_out = g->out;
        g->z.avail_out = sizeof g->out;
        zrc = deflate(&g->z, flush);
        if (zrc == Z_STREAM_ERROR) {
            g->err = -EIO;
            return g->err;
        }
        size_t have = sizeof g->out - g->z.avail_out;
        if (have && fwrite(g->out, 1, have, g->f) != have) {
            g->err = errno ? -errno : -EIO;
            return g->err;
        }
    } while (g->z.avail_out == 0 || (flush == Z_FINISH && zrc != Z_STREAM_END));
    g->nin = 0;
    return 0;
}

static void pp_gz_append(ProtobufCBuffer *b, size_t len, const uint8_t *data)
{
    pp_gz_t *g = (pp_gz_t *)b;
    while (len && !g->err) {
        size_t n = sizeof g->in - g->nin;
        if (n > len)
            n = len;
        memcpy(g->in + g->nin, data, n);
        g->nin += n;
        data += n;
        len -= n;
        if (g->nin == sizeof g->in)
            pp_gz_deflate(g, Z_NO_FLUSH);
    }
}

/* Serializes prof gzipped into f. Returns 0 or -errno. */
static int pp_write(FILE *f, const Perftools__Profiles__Profile *prof)
{
    pp_gz_t *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->base.append = pp_gz_append;
    g->f = f;
    /* windowBits 15 + 16: a gzip header and trailer, as pprof expects. */
    if (deflateInit2(&g->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        free(g);
        return -ENOMEM;
    }
    perftools__profiles__profile__pack_to_buffer(prof, &g->base);
    int rc = pp_gz_deflate(g, Z_FINISH);
    deflateEnd(&g->z);
    free(g);
    return rc;
}

/* ---------------------------------------------------------------- the profile */

static void pp_free(pprof_t *p)
{
    for (pp_chunk_t *c = p->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(p->strs);
    free(p->fns);
    free(p->maps);
    free(p->locs);
    free(p->scratch);
    pp_tab_free(&p->str_tab);
    pp_tab_free(&p->fn_tab);
    pp_tab_free(&p->map_tab);
    pp_tab_free(&p->loc_tab);
}

/* Free-form comments (pprof -comments): the report's parameters, then one
 * line per process. */
static int64_t *pp_comments(pprof_t *p, const Stackwatch__LeakReport *r, size_t *n)
{
    int64_t *c = pp_alloc(p, (r->n_clients + 1) * sizeof *c);
    if (!c)
        return NULL;
    c[0] = pp_strf(p, "stackwatch leak report: expire %u.%03us, sampling %s%s%s",
                   r->expire_ms / 1000, r->expire_ms % 1000,
                   !empty(r->sample) ? r->sample : "all", r->by_exe ? ", by exe" : "",
                   r->since_mark ? ", since mark" : "");
    for (size_t i = 0; i < r->n_clients; i++) {
        const Stackwatch__ClientInfo *ci = r->clients[i];
        c[i + 1] = pp_strf(p, "pid %u (ppid %u) %s %s", ci->pid, ci->ppid,
                           !empty(ci->state) ? ci->state : "?", !empty(ci->exe) ? ci->exe : "?");
    }
    *n = r->n_clients + 1;
    return c;
}

int cli_leaks_pprof(FILE *f, const Stackwatch__LeakReport *r)
{
    static const char *const types[PP_NVALUES][2] = {
        [PP_MAY_LEAK_N] = { "may_leak_objects", "count" },
        [PP_MAY_LEAK_B] = { "may_leak_space", "bytes" },
        [PP_LIVE_N] = { "live_objects", "count" },
        [PP_LIVE_B] = { "live_space", "bytes" },
    };
    int fd = fileno(f);
    if (fd >= 0 && isatty(fd)) {
        fprintf(stderr, "stackctl: --format pprof is binary: not writing it to a terminal "
                        "(use -o FILE)\n");
        return -EINVAL;
    }
    pprof_t p;
    memset(&p, 0, sizeof p);
    Perftools__Profiles__Profile prof = PERFTOOLS__PROFILES__PROFILE__INIT;
    Perftools__Profiles__ValueType *vt = pp_alloc(&p, PP_NVALUES * sizeof *vt);
    Perftools__Profiles__ValueType **vtp = pp_alloc(&p, PP_NVALUES * sizeof *vtp);
    /* One sample per stack, or per blamed Python traceback of it. */
    enum { TB_MAX = 16 };
    size_t nsamples = 0;
    for (size_t i = 0; i < r->n_stacks; i++) {
        const Stackwatch__PyTraceback *tbs[TB_MAX];
        size_t ntb = cli_py_blamed(r->stacks[i], tbs, TB_MAX);
        nsamples += ntb ? ntb : 1;
    }
    Perftools__Profiles__Sample **samples = pp_alloc(&p, (nsamples + 1) * sizeof *samples);
    int rc;
    /* string_table[0] must be "". */
    if (pp_grow(&p, &p.strs, &p.capstrs, 0, sizeof *p.strs) < 0 || !vt || !vtp || !samples)
        goto err;
    p.strs[p.nstrs++] = "";
    for (int i = 0; i < PP_NVALUES; i++) {
        perftools__profiles__value_type__init(&vt[i]);
        vt[i].type = pp_str(&p, types[i][0]);
        vt[i].unit = pp_str(&p, types[i][1]);
        vtp[i] = &vt[i];
    }
    prof.sample_type = vtp;
    prof.n_sample_type = PP_NVALUES;
    prof.default_sample_type = vt[PP_MAY_LEAK_B].type;
    size_t ns = 0;
    for (size_t i = 0; i < r->n_stacks; i++) {
        const Stackwatch__PyTraceback *tbs[TB_MAX];
        size_t ntb = cli_py_blamed(r->stacks[i], tbs, TB_MAX);
        for (size_t t = 0; t < (ntb ? ntb : 1); t++)
            if (!(samples[ns++] = pp_sample(&p, r->stacks[i], tbs, ntb, t)))
                goto err;
    }
    prof.sample = samples;
    prof.n_sample = ns;
    prof.comment = pp_comments(&p, r, &prof.n_comment);
    prof.time_nanos = pp_i64(r->now_ms > INT64_MAX / 1000000 ? UINT64_MAX : r->now_ms * 1000000);
    if (p.err)
        goto err;
    prof.mapping = p.maps;
    prof.n_mapping = p.nmaps;
    prof.location = p.locs;
    prof.n_location = p.nlocs;
    prof.function = p.fns;
    prof.n_function = p.nfns;
    prof.string_table = p.strs;
    prof.n_string_table = p.nstrs;
    if ((rc = pp_write(f, &prof)) < 0) {
        fprintf(stderr, "stackctl: writing the pprof profile: %s\n", strerror(-rc));
        pp_free(&p);
        return rc;
    }
    pp_free(&p);
    return 0;
err:
    rc = p.err ? p.err : -ENOMEM;
    fprintf(stderr, "stackctl: building the pprof profile: %s\n", strerror(-rc));
    pp_free(&p);
    return rc;
}
