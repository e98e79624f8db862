/* The type of a Python object in a scan's copy of a process: ob_type -> tp_name, every read bounds-checked. */
#ifndef STACKWATCH_COLLECTOR_PYTYPE_H
#define STACKWATCH_COLLECTOR_PYTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "reach.h"

/* Longest name kept (bytes, with its NUL): longer ones are cut, "...". */
#define PYTYPE_NAME_MAX 64
/* A name not NUL-terminated within this many bytes is cut there. */
#define PYTYPE_READ_MAX 256

/* Reads up to len bytes of read-only memory of the process at addr (a
 * type's name lives in a module's .rodata, which the copy has not: only
 * writable memory is copied) into buf; returns how many it could. */
typedef size_t (*pytype_ro_fn)(void *ctx, uint64_t addr, char *buf, size_t len);

/* The address of the type of the Python object held by the pymalloc block
 * [blk, blk + size), or 0. The object starts at the block (a plain object),
 * 16 bytes in (the GC header: dict, list, instances) or 32 (3.11+'s
 * pre-header of managed dicts and weakrefs); each is tried, and taken only
 * when its ob_type is a type (its type's type is `type`, the fixed point of
 * ob_type; type flags as CPython sets them: ready, a type subclass for the
 * metatype), whose flags put the object at that very offset and whose
 * basic size fits the block. Reads go through the copy only. */
uint64_t pytype_of(const reach_img_t *img, uint64_t blk, uint64_t size);

/* tp_name of the type at type (as pytype_of gives it) into out (cap bytes,
 * at least 8): from the copy, else through ro (may be NULL). Names of more
 * than cap - 1 bytes are cut to cap - 4 and "..."; a name that runs off
 * readable memory without a NUL, is empty or holds a byte that is not
 * printable ASCII gives none. Returns 0, or -1 (out is then ""). */
int pytype_name(const reach_img_t *img, uint64_t type, pytype_ro_fn ro, void *ctx, char *out,
                size_t cap);

/* Type names of one scan, interned: a cache of types by address (a type's
 * checks and name read once). */
typedef struct pytypes_s pytypes_t;

pytypes_t *pytypes_new(const reach_img_t *img, pytype_ro_fn ro, void *ctx);

/* The index of the type name of the object in block [blk, blk + size) among
 * pytypes_take's names, or -1 (no type read; ENOMEM counts as that). */
long pytypes_of(pytypes_t *t, uint64_t blk, uint64_t size);

/* The names (malloc'd strings in a malloc'd array) and their count; the
 * caller frees them. */
char **pytypes_take(pytypes_t *t, size_t *n);

void pytypes_free(pytypes_t *t);

#endif
