/* Allocation wrappers: leading frames not shown, so the site is the real caller. */
#ifndef STACKWATCH_COLLECTOR_WRAP_H
#define STACKWATCH_COLLECTOR_WRAP_H

#include <stddef.h>

#include "sym.h"

/* The built-in list (a regex on demangled function names), documented in
 * the README: C++ operator new/new[], GLib's g_malloc family, CPython's
 * PyMem_ and PyObject_ allocators, numpy's PyDataMem_ and default_ handlers,
 * the strdup family, xmalloc-style helpers. */
extern const char *const wrap_default;

/* Adds a pattern (collectord --wrapper REGEX). Returns 0 or -EINVAL with a
 * message in err. */
int wrap_add(const char *regex, char *err, size_t errlen);

/* Compiles the built-in list (once). Returns 0 or -EINVAL. */
int wrap_init(void);

/* How many leading frames of r are allocation wrappers (never all of them). */
unsigned wrap_count(const symres_t *r);

void wrap_free(void);

#endif
