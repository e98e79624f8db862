/* A C extension leaking CPython small objects (pymalloc's, 4..512 bytes)
 * for the default small-object tracing tests (test_pysample.py):
 * leak(n) keeps n PyObject_Malloc blocks, sizes cycling through 4..512 (their
 * total is returned); churn(n) replaces n blocks of a bounded table (its
 * blocks live as long as SLOTS calls, then are freed). Both hold the GIL. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define KEPT_MAX (1u << 22)
#define SLOTS 20000u

static void *kept[KEPT_MAX]; /* static: the table itself is no allocation */
static size_t nkept;
static size_t next_size;      /* position in the size cycle */
static void *slots[SLOTS];
static size_t slot_pos;

static size_t size_next(void)
{
    size_t s = 4 + (next_size * 37) % 509; /* 4..512, every size once per 509 */
    next_size++;
    return s;
}

__attribute__((noinline)) static void *keep_small(size_t n)
{
    return PyObject_Malloc(n); /* @C small_leak */
}

__attribute__((noinline)) static void *churn_small(size_t n)
{
    return PyObject_Malloc(n); /* @C small_churn */
}

static PyObject *leak(PyObject *self, PyObject *arg)
{
    (void)self;
    size_t n = PyLong_AsSize_t(arg);
    if (n == (size_t)-1 && PyErr_Occurred())
        return NULL;
    size_t bytes = 0;
    for (size_t i = 0; i < n && nkept < KEPT_MAX; i++) {
        size_t s = size_next();
        void *p = keep_small(s);
        if (!p)
            return PyErr_NoMemory();
        ((char *)p)[0] = 1;
        kept[nkept++] = p;
        bytes += s;
    }
    return PyLong_FromSize_t(bytes);
}

static PyObject *churn(PyObject *self, PyObject *arg)
{
    (void)self;
    size_t n = PyLong_AsSize_t(arg);
    if (n == (size_t)-1 && PyErr_Occurred())
        return NULL;
    for (size_t i = 0; i < n; i++) {
        void **slot = &slots[slot_pos++ % SLOTS];
        PyObject_Free(*slot);
        *slot = churn_small(size_next());
        if (!*slot)
            return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    { "leak", leak, METH_O, "keep n small PyObject_Malloc blocks; returns their bytes" },
    { "churn", churn, METH_O, "replace n blocks of a bounded table" },
    { NULL, NULL, 0, NULL },
};

static struct PyModuleDef mod = { PyModuleDef_HEAD_INIT, "pysampleext", NULL, -1, methods };

PyMODINIT_FUNC PyInit_pysampleext(void)
{
    return PyModule_Create(&mod);
}
