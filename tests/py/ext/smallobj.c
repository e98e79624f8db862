/* Small-object leaks of a C extension (issue 18.3/18.5), built by
 * tests/integration/test_smallobj.py for each interpreter. Each leaking
 * function loses one block per call from CPython's small-object allocator
 * (pymalloc serves requests of 512 bytes or less; never malloc):
 *   obj_leak(n)  PyObject_Malloc(n), never freed
 *   mem_leak(n)  PyMem_Malloc(n), never freed
 *   ref_leak(i)  a tuple made per call, its reference never released (the
 *                missing Py_DECREF of a real extension bug)
 *   pair_leak(i) the same with a 2-tuple of ints (free-listed objects)
 *   churn(n)     PyObject_Malloc, PyMem_Malloc and a 2-tuple, all freed (must
 *                never be a leak)
 * Lines marked @LEAK are the ones a report must name. All hold the GIL. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static int size_arg(PyObject *arg, size_t *n)
{
    *n = PyLong_AsSize_t(arg);
    if (*n == (size_t)-1 && PyErr_Occurred())
        return -1;
    return 0;
}

static PyObject *obj_leak(PyObject *self, PyObject *arg)
{
    size_t n;
    (void)self;
    if (size_arg(arg, &n) < 0)
        return NULL;
    char *p = PyObject_Malloc(n); /* @LEAK obj_leak */
    if (!p)
        return PyErr_NoMemory();
    memset(p, 0x5a, n);
    Py_RETURN_NONE; /* p is lost */
}

static PyObject *mem_leak(PyObject *self, PyObject *arg)
{
    size_t n;
    (void)self;
    if (size_arg(arg, &n) < 0)
        return NULL;
    char *p = PyMem_Malloc(n); /* @LEAK mem_leak */
    if (!p)
        return PyErr_NoMemory();
    memset(p, 0xa5, n);
    Py_RETURN_NONE; /* p is lost */
}

/* 24 slots (232 bytes on 64 bits): beyond CPython's tuple free lists (sizes
 * below 20), so each call allocates. The slots hold None: no other object. */
static PyObject *ref_leak(PyObject *self, PyObject *arg)
{
    (void)self;
    (void)arg;
    PyObject *t = PyTuple_New(24); /* @LEAK ref_leak */
    if (!t)
        return NULL;
    for (Py_ssize_t k = 0; k < 24; k++) {
        Py_INCREF(Py_None);
        PyTuple_SET_ITEM(t, k, Py_None);
    }
    /* The bug: Py_DECREF(t) is missing. */
    Py_RETURN_NONE;
}

/* The same bug on a pair of ints, the shape of most real ones: a 2-tuple
 * usually comes from the tuple free list, refilled by whoever freed a
 * 2-tuple last (churn below), not from the allocator. */
static PyObject *pair_leak(PyObject *self, PyObject *arg)
{
    long i = PyLong_AsLong(arg);
    (void)self;
    if (i == -1 && PyErr_Occurred())
        return NULL;
    PyObject *t = Py_BuildValue("(ll)", 100000 + i, -100000 - i); /* @LEAK pair_leak */
    if (!t)
        return NULL;
    /* The bug: Py_DECREF(t) is missing. */
    Py_RETURN_NONE;
}

static PyObject *churn(PyObject *self, PyObject *arg)
{
    size_t n;
    (void)self;
    if (size_arg(arg, &n) < 0)
        return NULL;
    char *a = PyObject_Malloc(n); /* @LEAK churn_obj */
    char *b = PyMem_Malloc(n);
    PyObject *t = Py_BuildValue("(nn)", (Py_ssize_t)n + 100000, -(Py_ssize_t)n - 100000);
    if (a)
        memset(a, 1, n);
    if (b)
        memset(b, 2, n);
    PyObject_Free(a);
    PyMem_Free(b);
    Py_XDECREF(t);
    if (!a || !b || !t)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    { "obj_leak", obj_leak, METH_O, "lose a PyObject_Malloc block of n bytes" },
    { "mem_leak", mem_leak, METH_O, "lose a PyMem_Malloc block of n bytes" },
    { "ref_leak", ref_leak, METH_O, "make a small tuple and never release it" },
    { "pair_leak", pair_leak, METH_O, "make a 2-tuple of ints and never release it" },
    { "churn", churn, METH_O, "the same allocations, freed" },
    { NULL, NULL, 0, NULL },
};

static struct PyModuleDef mod = {
    PyModuleDef_HEAD_INIT, .m_name = "smallobj", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit_smallobj(void)
{
    return PyModule_Create(&mod);
}
