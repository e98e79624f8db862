/* Allocation wrappers: leading frames not shown, so the site is the real caller. */
#include "wrap.h"

#include <errno.h>
#include <regex.h>
#include <stdio.h>

#define WRAP_MAX 32

const char *const wrap_default =
    "^(operator new(\\[\\])?\\(|operator delete|_Zn[wa]m|"
    "g_malloc0?(_n)?$|g_realloc(_n)?$|g_try_malloc0?(_n)?$|g_try_realloc(_n)?$|g_new0?$|"
    "g_slice_alloc0?$|g_memdup2?$|g_strdup$|g_strndup$|"
    "PyMem_(Raw)?(Malloc|Calloc|Realloc)$|_PyMem_(Raw|Debug)(Malloc|Calloc|Realloc)$|"
    "PyObject_(Malloc|Calloc|Realloc)$|_PyObject_(Malloc|Calloc|Realloc)$|"
    "PyDataMem_(UserNEW|UserNEW_ZEROED|UserRENEW|NEW|NEW_ZEROED|RENEW)$|"
    "default_(malloc|calloc|realloc)$|npy_alloc_cache(_zero)?$|"
    "(__)?strn?dup$|xmalloc$|xcalloc$|xrealloc$|xstrdup$|xzalloc$)";

static regex_t res[WRAP_MAX];
static size_t nres;
static int inited;

int wrap_add(const char *regex, char *err, size_t errlen)
{
    if (nres == WRAP_MAX) {
        snprintf(err, errlen, "at most %d wrapper patterns", WRAP_MAX);
        return -EINVAL;
    }
    int rc = regcomp(&res[nres], regex, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[256];
        regerror(rc, &res[nres], msg, sizeof msg);
        snprintf(err, errlen, "--wrapper '%.160s': %.160s", regex, msg);
        return -EINVAL;
    }
    nres++;
    return 0;
}

int wrap_init(void)
{
    if (inited)
        return 0;
    char err[1024];
    if (wrap_add(wrap_default, err, sizeof err) < 0) {
        fprintf(stderr, "internal: %s\n", err);
        return -EINVAL;
    }
    inited = 1;
    return 0;
}

static int is_wrapper(const char *fn)
{
    if (!fn)
        return 0; /* a frame without a name cannot be recognized */
    for (size_t i = 0; i < nres; i++)
        if (regexec(&res[i], fn, 0, NULL, 0) == 0)
            return 1;
    return 0;
}

unsigned wrap_count(const symres_t *r)
{
    if (!r)
        return 0;
    unsigned n = 0;
    while (n + 1 < r->n && is_wrapper(r->f[n].function))
        n++;
    return n;
}

void wrap_free(void)
{
    for (size_t i = 0; i < nres; i++)
        regfree(&res[i]);
    nres = 0;
    inited = 0;
}
