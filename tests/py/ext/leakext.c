/* A small CPython extension for the multi-version tests: grab(n) keeps a
 * malloc'd block of n bytes (a leak), churn(n) mallocs and frees one. Both
 * hold the GIL, as extension code does unless it releases it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

static void **kept;
static size_t nkept, capkept;

static PyObject *grab(PyObject *self, PyObject *arg)
{
    size_t n = PyLong_AsSize_t(arg);
    if (n == (size_t)-1 && PyErr_Occurred())
        return NULL;
    if (nkept == capkept) {
        size_t nc = capkept ? 2 * capkept : 1024;
        void **k = realloc(kept, nc * sizeof *k);
        if (!k)
            return PyErr_NoMemory();
        kept = k;
        capkept = nc;
    }
    void *p = malloc(n);
    if (!p)
        return PyErr_NoMemory();
    kept[nkept++] = p;
    return PyLong_FromSize_t(nkept);
}

static PyObject *churn(PyObject *self, PyObject *arg)
{
    size_t n = PyLong_AsSize_t(arg);
    if (n == (size_t)-1 && PyErr_Occurred())
        return NULL;
    free(malloc(n));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    { "grab", grab, METH_O, "keep a malloc'd block" },
    { "churn", churn, METH_O, "malloc and free a block" },
    { NULL, NULL, 0, NULL },
};

static struct PyModuleDef mod = { PyModuleDef_HEAD_INIT, "leakext", NULL, -1, methods };

PyMODINIT_FUNC PyInit_leakext(void)
{
    return PyModule_Create(&mod);
}
