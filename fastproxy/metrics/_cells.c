/* fastproxy.metrics._cells: one process's slot of the shared metrics region, written in place.
 *
 * WorkerMetrics (fastproxy/metrics/shared.py) counts every request into its own slot region of
 * the shared mapping. Through a memoryview each `cell += 1` is a boxed read, an add and a boxed
 * write, and the duration bucket a bisect over Python floats: 0.6-0.8 us of a proxied request's
 * 20. Here it is one C call.
 *
 * The stores keep the region's contract (shared.py, "Theory of operation"): one writer per slot,
 * plain aligned 8-byte stores that readers in other processes may see late but never torn. They
 * are relaxed atomics, which on x86-64 and AArch64 compile to those plain stores and keep the
 * compiler from splitting or merging them.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define MAX_BUCKETS 64

typedef struct {
    PyObject_HEAD
    Py_buffer view; /* held for the object's life: the mapping cannot be closed under us */
    int64_t *ints;
    double *floats;
    Py_ssize_t n_ints;
    Py_ssize_t n_floats;
    double buckets[MAX_BUCKETS]; /* ascending upper bounds; one more cell counts +Inf */
    Py_ssize_t n_buckets;
} Cells;

static inline int64_t
load_int(const int64_t *cell)
{
    return __atomic_load_n(cell, __ATOMIC_RELAXED);
}

static inline void
add_int(int64_t *cell, int64_t n)
{
    /* The only writer of this cell: a load and a store, no read-modify-write instruction. */
    __atomic_store_n(cell, __atomic_load_n(cell, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline void
add_float(double *cell, double x)
{
    int64_t bits = __atomic_load_n((int64_t *)cell, __ATOMIC_RELAXED);
    double value;
    memcpy(&value, &bits, 8);
    value += x;
    memcpy(&bits, &value, 8);
    __atomic_store_n((int64_t *)cell, bits, __ATOMIC_RELAXED);
}

/* The first bucket whose bound is >= seconds (bisect_left); n_buckets is the +Inf cell. */
static inline Py_ssize_t
bucket_of(const Cells *self, double seconds)
{
    Py_ssize_t lo = 0, hi = self->n_buckets;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (self->buckets[mid] < seconds)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* arg as an index below n (what names the kind of cell in the error). */
static int
index_below(PyObject *arg, Py_ssize_t n, const char *what, Py_ssize_t *out)
{
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i < 0 || i >= n) {
        PyErr_Format(PyExc_IndexError, "%s %zd out of range (0..%zd)", what, i, n - 1);
        return -1;
    }
    *out = i;
    return 0;
}

static inline int
int_index(const Cells *self, PyObject *arg, Py_ssize_t *out)
{
    return index_below(arg, self->n_ints, "cell", out);
}

static inline int
float_index(const Cells *self, PyObject *arg, Py_ssize_t *out)
{
    return index_below(arg, self->n_floats, "float cell", out);
}

static int
check_args(const char *name, Py_ssize_t nargs, Py_ssize_t min, Py_ssize_t max)
{
    if (nargs < min || nargs > max) {
        if (min == max)
            PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, min, nargs);
        else
            PyErr_Format(
                PyExc_TypeError, "%s() takes %zd to %zd arguments (%zd given)", name, min, max, nargs);
        return -1;
    }
    return 0;
}

static PyObject *
Cells_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"buffer", "offset", "ints", "floats", "buckets", NULL};
    PyObject *buffer, *buckets;
    Py_ssize_t offset, n_ints, n_floats;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwds, "OnnnO:Cells", keywords, &buffer, &offset, &n_ints, &n_floats, &buckets))
        return NULL;
    if (offset < 0 || n_ints < 0 || n_floats < 0 || offset % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "offset must be a non-negative multiple of 8, counts >= 0");
        return NULL;
    }
    PyObject *bounds = PySequence_Fast(buckets, "buckets must be a sequence of floats");
    if (bounds == NULL)
        return NULL;
    Py_ssize_t n_buckets = PySequence_Fast_GET_SIZE(bounds);
    if (n_buckets > MAX_BUCKETS) {
        Py_DECREF(bounds);
        PyErr_Format(PyExc_ValueError, "at most %d buckets", MAX_BUCKETS);
        return NULL;
    }
    Cells *self = (Cells *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(bounds);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n_buckets; i++) {
        double bound = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(bounds, i));
        if (bound == -1.0 && PyErr_Occurred())
            goto fail;
        if (i > 0 && !(bound > self->buckets[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "buckets must be strictly ascending");
            goto fail;
        }
        self->buckets[i] = bound;
    }
    self->n_buckets = n_buckets;
    Py_CLEAR(bounds);
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0)
        goto fail;
    if ((uintptr_t)self->view.buf % 8 != 0) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "buffer is not 8-byte aligned");
        goto fail;
    }
    /* Compared by division: offset + 8 * (ints + floats) could overflow and pass. */
    Py_ssize_t room = offset <= self->view.len ? (self->view.len - offset) / 8 : -1;
    if (room < 0 || n_ints > room || n_floats > room - n_ints) {
        PyBuffer_Release(&self->view);
        PyErr_Format(PyExc_ValueError, "cells end past the buffer (%zd bytes)", self->view.len);
        goto fail;
    }
    self->ints = (int64_t *)((char *)self->view.buf + offset);
    self->floats = (double *)(self->ints + n_ints);
    self->n_ints = n_ints;
    self->n_floats = n_floats;
    return (PyObject *)self;

fail:
    Py_XDECREF(bounds);
    Py_DECREF(self);
    return NULL;
}

static void
Cells_dealloc(Cells *self)
{
    if (self->view.obj != NULL)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Cells_add(Cells *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t i;
    int64_t n = 1;
    if (check_args("add", nargs, 1, 2) < 0 || int_index(self, args[0], &i) < 0)
        return NULL;
    if (nargs == 2) {
        n = PyLong_AsLongLong(args[1]);
        if (n == -1 && PyErr_Occurred())
            return NULL;
    }
    add_int(&self->ints[i], n);
    Py_RETURN_NONE;
}

static PyObject *
Cells_set(Cells *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t i;
    if (check_args("set", nargs, 2, 2) < 0 || int_index(self, args[0], &i) < 0)
        return NULL;
    int64_t value = PyLong_AsLongLong(args[1]);
    if (value == -1 && PyErr_Occurred())
        return NULL;
    __atomic_store_n(&self->ints[i], value, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

static PyObject *
Cells_get(Cells *self, PyObject *arg)
{
    Py_ssize_t i;
    if (int_index(self, arg, &i) < 0)
        return NULL;
    return PyLong_FromLongLong(load_int(&self->ints[i]));
}

static PyObject *
Cells_get_float(Cells *self, PyObject *arg)
{
    Py_ssize_t i;
    if (float_index(self, arg, &i) < 0)
        return NULL;
    int64_t bits = __atomic_load_n((int64_t *)&self->floats[i], __ATOMIC_RELAXED);
    double value;
    memcpy(&value, &bits, 8);
    return PyFloat_FromDouble(value);
}

/* request(cell, histogram, total, seconds): one request counted in `cell`, its duration in the
 * histogram whose first bucket cell is `histogram`, and added to float cell `total`. */
static PyObject *
Cells_request(Cells *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t cell, histogram, total;
    if (check_args("request", nargs, 4, 4) < 0 || int_index(self, args[0], &cell) < 0
        || int_index(self, args[1], &histogram) < 0 || float_index(self, args[2], &total) < 0)
        return NULL;
    double seconds = PyFloat_AsDouble(args[3]);
    if (seconds == -1.0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t bucket = histogram + bucket_of(self, seconds);
    if (bucket >= self->n_ints) {
        PyErr_Format(PyExc_IndexError, "histogram at %zd runs past the cells", histogram);
        return NULL;
    }
    add_int(&self->ints[cell], 1);
    add_int(&self->ints[bucket], 1);
    add_float(&self->floats[total], seconds);
    Py_RETURN_NONE;
}

static PyObject *
Cells_bucket(Cells *self, PyObject *arg)
{
    double seconds = PyFloat_AsDouble(arg);
    if (seconds == -1.0 && PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(bucket_of(self, seconds));
}

static PyMethodDef Cells_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Cells_add, METH_FASTCALL,
     "add(cell, n=1): add n to an int64 cell."},
    {"set", (PyCFunction)(void (*)(void))Cells_set, METH_FASTCALL, "set(cell, value): store a gauge."},
    {"get", (PyCFunction)Cells_get, METH_O, "get(cell) -> int"},
    {"get_float", (PyCFunction)Cells_get_float, METH_O, "get_float(index) -> float"},
    {"request", (PyCFunction)(void (*)(void))Cells_request, METH_FASTCALL,
     "request(cell, histogram, total, seconds): count one request and its duration."},
    {"bucket", (PyCFunction)Cells_bucket, METH_O,
     "bucket(seconds) -> the histogram bucket (bisect_left over the bounds; len(bounds) is +Inf)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CellsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fastproxy.metrics._cells.Cells",
    .tp_basicsize = sizeof(Cells),
    .tp_dealloc = (destructor)Cells_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Cells(buffer, offset, ints, floats, buckets): `ints` int64 cells at byte `offset` of "
              "a writable buffer, then `floats` doubles; `buckets` are a histogram's upper bounds.",
    .tp_methods = Cells_methods,
    .tp_new = Cells_new,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastproxy.metrics._cells",
    .m_doc = "One process's slot of the shared metrics region, written in place.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__cells(void)
{
    if (PyType_Ready(&CellsType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    Py_INCREF(&CellsType);
    if (PyModule_AddObject(module, "Cells", (PyObject *)&CellsType) < 0) {
        Py_DECREF(&CellsType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
