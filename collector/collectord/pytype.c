/* The type of a Python object in a scan's copy of a process: ob_type -> tp_name, every read bounds-checked.
 *
 * The layout read is CPython's of 3.11 to 3.15 on 64-bit (default build):
 * PyObject is ob_refcnt, ob_type; PyTypeObject has tp_name at 24,
 * tp_basicsize at 32 and tp_flags at 168; a GC object is preceded by its
 * 16-byte PyGC_Head, and one whose type has a managed dict or weakref list
 * (3.11's Py_TPFLAGS_MANAGED_DICT, 3.12+'s Py_TPFLAGS_PREHEADER) by two
 * more words. Nothing here dereferences the process's addresses: every
 * read is reach_img_at on the copy, or the caller's read-only reader. */
#include "pytype.h"

#include <stdlib.h>
#include <string.h>

#define OB_TYPE 8u
#define TP_NAME 24u
#define TP_BASICSIZE 32u
#define TP_FLAGS 168u
#define TP_READ (TP_FLAGS + 8u)

#define F_MANAGED_WEAKREF (1ull << 3)
#define F_MANAGED_DICT (1ull << 4)
#define F_READY (1ull << 12)
#define F_HAVE_GC (1ull << 14)
#define F_TYPE_SUBCLASS (1ull << 31)

/* 1 if t looks like a type object: readable up to its flags, ready, and its
 * metatype a type subclass whose own type is `type` (ob_type's fixed
 * point), at most one metaclass deep. */
static int is_type(const reach_img_t *img, uint64_t t, uint64_t *flags)
{
    uint64_t m, mm, mmm, mf;
    if (!t || (t & 7) || !reach_img_at(img, t, TP_READ) || !reach_word_at(img, t + TP_FLAGS, flags) ||
        !(*flags & F_READY) || !reach_word_at(img, t + OB_TYPE, &m) || (m & 7) ||
        !reach_img_at(img, m, TP_READ) || !reach_word_at(img, m + TP_FLAGS, &mf) ||
        !(mf & F_TYPE_SUBCLASS) || !reach_word_at(img, m + OB_TYPE, &mm))
        return 0;
    if (mm == m)
        return 1; /* m is `type` */
    return reach_word_at(img, mm + OB_TYPE, &mmm) && mmm == mm &&
           reach_word_at(img, mm + TP_FLAGS, &mf) && (mf & F_TYPE_SUBCLASS);
}

uint64_t pytype_of(const reach_img_t *img, uint64_t blk, uint64_t size)
{
    static const uint32_t offs[] = { 0, 16, 32 };
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        uint64_t off = offs[i], t, flags, basic;
        if (off + 16 > size || !reach_word_at(img, blk + off + OB_TYPE, &t) || !is_type(img, t, &flags))
            continue;
        uint64_t want = ((flags & F_HAVE_GC) ? 16u : 0u) +
                        ((flags & (F_MANAGED_DICT | F_MANAGED_WEAKREF)) ? 16u : 0u);
        if (want != off || !reach_word_at(img, t + TP_BASICSIZE, &basic) || basic < 16 ||
            basic > size - off)
            continue;
        return t;
    }
    return 0;
}

int pytype_name(const reach_img_t *img, uint64_t type, pytype_ro_fn ro, void *ctx, char *out,
                size_t cap)
{
    char buf[PYTYPE_READ_MAX];
    uint64_t s;
    out[0] = '\0';
    if (cap < 8 || !reach_word_at(img, type + TP_NAME, &s) || !s)
        return -1;
    size_t n = 0;
    int nul = 0;
    /* From the copy, byte by byte (a heap type's name is in its own
     * memory); the first byte outside it, from the read-only reader. */
    while (n < sizeof buf) {
        const uint8_t *p = reach_img_at(img, s + n, 1);
        if (!p)
            break;
        buf[n] = (char)*p;
        if (!buf[n++]) {
            nul = 1;
            break;
        }
    }
    if (!nul && n < sizeof buf) {
        if (n || !ro)
            return -1; /* ran off the copy: not a name */
        size_t got = ro(ctx, s, buf, sizeof buf);
        if (got > sizeof buf)
            got = sizeof buf;
        void *z = memchr(buf, '\0', got);
        if (z) {
            n = (size_t)((char *)z - buf) + 1;
            nul = 1;
        } else if (got < sizeof buf) {
            return -1; /* ran off readable memory */
        } else {
            n = got;
        }
    }
    size_t len = nul ? n - 1 : n;
    if (!len)
        return -1;
    for (size_t k = 0; k < len; k++)
        if ((unsigned char)buf[k] < 0x20 || (unsigned char)buf[k] > 0x7e)
            return -1;
    if (len > cap - 1) {
        memcpy(out, buf, cap - 4);
        memcpy(out + cap - 4, "...", 4);
    } else {
        memcpy(out, buf, len);
        out[len] = '\0';
    }
    return 0;
}

/* ---------------------------------------------------------------- interned */

#define CACHE_SLOTS 8192u   /* types by address; full: not cached */
#define NAMES_MAX 4096u     /* distinct names; beyond, none */

typedef struct slot_s {
    uint64_t type;          /* 0: empty */
    long name;              /* index, or -1: not a type / no name */
} slot_t;

struct pytypes_s {
    const reach_img_t *img;
    pytype_ro_fn ro;
    void *ctx;
    slot_t slot[CACHE_SLOTS];
    size_t used;
    char **names;
    size_t n, cap;
};

pytypes_t *pytypes_new(const reach_img_t *img, pytype_ro_fn ro, void *ctx)
{
    pytypes_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->img = img;
    t->ro = ro;
    t->ctx = ctx;
    return t;
}

static long intern(pytypes_t *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->names[i], name))
            return (long)i;
    if (t->n == NAMES_MAX)
        return -1;
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        char **v = realloc(t->names, nc * sizeof *v);
        if (!v)
            return -1;
        t->names = v;
        t->cap = nc;
    }
    if (!(t->names[t->n] = strdup(name)))
        return -1;
    return (long)t->n++;
}

long pytypes_of(pytypes_t *t, uint64_t blk, uint64_t size)
{
    uint64_t ty = pytype_of(t->img, blk, size);
    if (!ty)
        return -1;
    uint64_t h = ((ty >> 3) * 0x9e3779b97f4a7c15ull) >> 51; /* 13 bits */
    slot_t *free_slot = NULL;
    for (uint64_t k = 0; k < CACHE_SLOTS; k++) {
        slot_t *s = &t->slot[(h + k) & (CACHE_SLOTS - 1)];
        if (s->type == ty)
            return s->name;
        if (!s->type) {
            free_slot = s;
            break;
        }
    }
    char name[PYTYPE_NAME_MAX];
    long k = pytype_name(t->img, ty, t->ro, t->ctx, name, sizeof name) < 0 ? -1 : intern(t, name);
    if (free_slot && t->used < CACHE_SLOTS / 2) {
        free_slot->type = ty;
        free_slot->name = k;
        t->used++;
    }
    return k;
}

char **pytypes_take(pytypes_t *t, size_t *n)
{
    char **v = t->names;
    *n = t->n;
    t->names = NULL;
    t->n = t->cap = 0;
    return v;
}

void pytypes_free(pytypes_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->names[i]);
    free(t->names);
    free(t);
}
