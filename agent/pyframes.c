/* Python frames of the allocating thread, read synchronously in the hook (CPython 3.11 layouts).
 *
 * The one place that knows CPython's internal structures: built against
 * 3.11's own headers (python3.11-dev), used only when the running interpreter
 * reports 3.11.1 or later within 3.11 (3.11.0 could leave a frame whose code
 * object was being freed). Any other version gets no capture and one message.
 *
 * Why synchronously, here: a capture deferred to Py_AddPendingCall or a
 * Python signal handler runs at the next eval-breaker check (a line or more
 * later, e.g. inside numba's dispatcher) and only in the main thread. In 3.11
 * a Python-to-Python call adds no C frame, so the C stack alone cannot tell
 * two Python lines apart either. */
#define Py_BUILD_CORE 1
#include "pyframes.h"

#include <Python.h>
#include <internal/pycore_frame.h>
#include <internal/pycore_runtime.h>

#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#define PY_MIN_VERSION 0x030B01F0u /* 3.11.1 final */
#define PY_MAX_VERSION 0x030C0000u /* below 3.12 */

static _PyRuntimeState *runtime;
static int (*addr2line)(PyCodeObject *, int);
static uint32_t version;
static char status[160];

void py_init(void)
{
    const unsigned long *v = dlsym(RTLD_DEFAULT, "Py_Version");
    void *rt = dlsym(RTLD_DEFAULT, "_PyRuntime");
    void *a2l = dlsym(RTLD_DEFAULT, "PyCode_Addr2Line");
    if (!v || !rt || !a2l) {
        static const char msg[] = "not a CPython process (no Py_Version/_PyRuntime)";
        memcpy(status, msg, sizeof msg);
        return;
    }
    if (*v < PY_MIN_VERSION || *v >= PY_MAX_VERSION) {
        /* Plain formatting: no stdio in the agent. */
        static const char hex[] = "0123456789abcdef";
        char vs[11] = "0x";
        for (int i = 0; i < 8; i++)
            vs[2 + i] = hex[(*v >> (28 - 4 * i)) & 0xf];
        vs[10] = '\0';
        memcpy(status, "CPython version ", 16);
        memcpy(status + 16, vs, 11);
        strcat(status, " not supported for Python frames (3.11.1 to 3.11.x are)");
        return;
    }
    runtime = rt;
    addr2line = (int (*)(PyCodeObject *, int))a2l;
    version = (uint32_t)*v;
    status[0] = '\0';
}

uint32_t py_version(void)
{
    return version;
}

const _Atomic uintptr_t *py_finalizing_word(void)
{
    /* _PyRuntimeState._finalizing: the thread state finalizing the runtime,
     * set by Py_FinalizeEx after atexit callbacks and thread shutdown. */
    _Static_assert(sizeof runtime->_finalizing == sizeof(uintptr_t), "a word");
    return runtime ? (const _Atomic uintptr_t *)(const void *)&runtime->_finalizing : NULL;
}

const char *py_status(void)
{
    return status;
}

/* Appends s (len bytes) to tb->buf; returns its offset, or UINT16_MAX when
 * it does not fit (the name is then shown as "?"). */
static uint16_t put(py_tb_t *tb, const char *s, size_t len, uint16_t *out_len)
{
    if (len > 255)
        len = 255; /* keep room for the other frames */
    if (tb->used + len > sizeof tb->buf) {
        tb->truncated = 1;
        *out_len = 0;
        return UINT16_MAX;
    }
    uint16_t off = (uint16_t)tb->used;
    memcpy(tb->buf + tb->used, s, len);
    tb->used += (uint32_t)len;
    *out_len = (uint16_t)len;
    return off;
}

/* Copies a str object as UTF-8 without calling into the interpreter: ASCII
 * and cached UTF-8 directly, other compact kinds encoded here. */
static uint16_t put_str(py_tb_t *tb, PyObject *o, uint16_t *out_len)
{
    char tmp[256];
    size_t n = 0;
    if (!o || !PyUnicode_Check(o) || !PyUnicode_IS_READY(o))
        return put(tb, "?", 1, out_len);
    PyASCIIObject *a = (PyASCIIObject *)o;
    if (a->state.ascii && a->state.compact)
        return put(tb, (const char *)(a + 1), (size_t)a->length, out_len);
    if (a->state.compact) {
        PyCompactUnicodeObject *c = (PyCompactUnicodeObject *)o;
        if (c->utf8)
            return put(tb, c->utf8, (size_t)c->utf8_length, out_len);
    }
    int kind = PyUnicode_KIND(o);
    const void *data = PyUnicode_DATA(o);
    Py_ssize_t len = PyUnicode_GET_LENGTH(o);
    for (Py_ssize_t i = 0; i < len && n + 4 <= sizeof tmp; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (ch < 0x80) {
            tmp[n++] = (char)ch;
        } else if (ch < 0x800) {
            tmp[n++] = (char)(0xc0 | (ch >> 6));
            tmp[n++] = (char)(0x80 | (ch & 0x3f));
        } else if (ch < 0x10000) {
            tmp[n++] = (char)(0xe0 | (ch >> 12));
            tmp[n++] = (char)(0x80 | ((ch >> 6) & 0x3f));
            tmp[n++] = (char)(0x80 | (ch & 0x3f));
        } else {
            tmp[n++] = (char)(0xf0 | (ch >> 18));
            tmp[n++] = (char)(0x80 | ((ch >> 12) & 0x3f));
            tmp[n++] = (char)(0x80 | ((ch >> 6) & 0x3f));
            tmp[n++] = (char)(0x80 | (ch & 0x3f));
        }
    }
    return put(tb, tmp, n, out_len);
}

int py_capture(py_tb_t *tb)
{
    tb->n = 0;
    tb->truncated = 0;
    tb->used = 0;
    if (!runtime)
        return 0;
    /* The thread holding the GIL is gilstate.tstate_current; it is ours only
     * if its thread id is ours. Anything else: not now. */
    PyThreadState *ts =
        (PyThreadState *)_Py_atomic_load_relaxed(&runtime->gilstate.tstate_current);
    if (!ts || ts->thread_id != (unsigned long)pthread_self())
        return 0;
    _PyCFrame *cf = ts->cframe;
    if (!cf)
        return 0;
    _PyInterpreterFrame *f = cf->current_frame;
    while (f) {
        if (tb->n == PY_FRAMES_MAX) {
            tb->truncated = 1;
            break;
        }
        PyCodeObject *co = f->f_code;
        /* Skip frames still being set up (prev_instr not yet past RESUME). */
        if (co && !_PyFrame_IsIncomplete(f)) {
            int addrq = _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT);
            int line = addr2line(co, addrq);
            uint32_t k = tb->n;
            tb->f[k].line = line > 0 ? (uint32_t)line : 0;
            tb->f[k].file = put_str(tb, co->co_filename, &tb->f[k].file_len);
            tb->f[k].func = put_str(tb, co->co_qualname ? co->co_qualname : co->co_name,
                                    &tb->f[k].func_len);
            tb->n++;
        }
        f = f->previous;
    }
    return (int)tb->n;
}
