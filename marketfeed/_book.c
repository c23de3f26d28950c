/* The book's per-level loop in C: the same steps as the pure-Python loops in book.py, one C call per
 * side and diff instead of a dozen bytecodes per level. Only the loop is here; everything else about
 * the book (loading, refill of the top window, reading) stays in Python.
 *
 * Semantics are exactly those of book.py's _apply_levels_py and _apply_window_py (tests/unit/
 * test_book.py runs both on the same random operations and compares them): a level is (price, size);
 * a true size sets the level, a false one deletes it (deleting an absent level is a no-op). Prices
 * are compared with Python's own rules; floats, the usual case, without a call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* a < b with Python semantics; -1 on error */
static inline int
less(PyObject *a, PyObject *b)
{
    if (PyFloat_CheckExact(a) && PyFloat_CheckExact(b))
        return PyFloat_AS_DOUBLE(a) < PyFloat_AS_DOUBLE(b);
    return PyObject_RichCompareBool(a, b, Py_LT);
}

/* bisect.bisect_left(list, x); -1 on error */
static Py_ssize_t
bisect_left(PyObject *list, PyObject *x)
{
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(list);
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (mid >= PyList_GET_SIZE(list)) {  /* a comparison changed the list */
            PyErr_SetString(PyExc_RuntimeError, "book price list changed during a comparison");
            return -1;
        }
        PyObject *item = PyList_GET_ITEM(list, mid);
        Py_INCREF(item);
        int lt = less(item, x);
        Py_DECREF(item);
        if (lt < 0)
            return -1;
        if (lt)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* bisect.insort(list, x) (insort_right); -1 on error */
static int
insort(PyObject *list, PyObject *x)
{
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(list);
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (mid >= PyList_GET_SIZE(list)) {
            PyErr_SetString(PyExc_RuntimeError, "book price list changed during a comparison");
            return -1;
        }
        PyObject *item = PyList_GET_ITEM(list, mid);
        Py_INCREF(item);
        int lt = less(x, item);
        Py_DECREF(item);
        if (lt < 0)
            return -1;
        if (lt)
            hi = mid;
        else
            lo = mid + 1;
    }
    return PyList_Insert(list, lo, x);
}

/* del list[bisect_left(list, x)]; an index past the end raises IndexError as in Python */
static int
delete_sorted(PyObject *list, PyObject *x)
{
    Py_ssize_t i = bisect_left(list, x);
    if (i < 0)
        return -1;
    if (i >= PyList_GET_SIZE(list)) {
        PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
        return -1;
    }
    return PyList_SetSlice(list, i, i + 1, NULL);
}

/* levels.pop(p, None) is not None: 1 removed, 0 absent, -1 error */
static inline int
pop_level(PyObject *levels, PyObject *p)
{
    PyObject *old = PyDict_GetItemWithError(levels, p);
    if (old == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (old == Py_None)
        return PyDict_DelItem(levels, p) < 0 ? -1 : 0;
    return PyDict_DelItem(levels, p) < 0 ? -1 : 1;
}

/* truth of a size; floats without a call */
static inline int
truthy(PyObject *s)
{
    if (PyFloat_CheckExact(s))
        return PyFloat_AS_DOUBLE(s) != 0.0;
    return PyObject_IsTrue(s);
}

/* Unpack one level as "for p, s in updates" does. Returns a new reference to a 2-tuple or list the
 * caller reads items 0 and 1 of, or NULL with the exception Python would raise. */
static PyObject *
level_pair(PyObject *item)
{
    if ((PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2) ||
        (PyList_CheckExact(item) && PyList_GET_SIZE(item) == 2)) {
        Py_INCREF(item);
        return item;
    }
    PyObject *t = PySequence_Tuple(item);
    if (t == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Format(PyExc_TypeError, "cannot unpack non-iterable %.200s object", Py_TYPE(item)->tp_name);
        }
        return NULL;
    }
    if (PyTuple_GET_SIZE(t) != 2) {
        Py_ssize_t n = PyTuple_GET_SIZE(t);
        Py_DECREF(t);
        if (n < 2)
            PyErr_Format(PyExc_ValueError, "not enough values to unpack (expected 2, got %zd)", n);
        else
            PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 2)");
        return NULL;
    }
    return t;
}

#define PAIR_ITEM(pair, i) \
    (PyTuple_CheckExact(pair) ? PyTuple_GET_ITEM(pair, i) : PyList_GET_ITEM(pair, i))

/* Calls step(state..., p, s) for each level; the loop shared by both kinds of side. */
typedef int (*step_fn)(PyObject *levels, PyObject *prices, int descending, PyObject *p, PyObject *s);

static PyObject *
apply_each(PyObject *levels, PyObject *prices, int descending, PyObject *updates, step_fn step)
{
    if (!PyDict_Check(levels) || !PyList_Check(prices)) {
        PyErr_SetString(PyExc_TypeError, "expected a dict of levels and a list of prices");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(updates, "levels must be iterable");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = level_pair(PySequence_Fast_GET_ITEM(seq, i));
        if (pair == NULL)
            goto error;
        PyObject *p = PAIR_ITEM(pair, 0), *s = PAIR_ITEM(pair, 1);
        Py_INCREF(p);
        Py_INCREF(s);
        int rc = step(levels, prices, descending, p, s);
        Py_DECREF(p);
        Py_DECREF(s);
        Py_DECREF(pair);
        if (rc < 0)
            goto error;
        if (n != PySequence_Fast_GET_SIZE(seq))  /* a list mutated by a comparison */
            n = PySequence_Fast_GET_SIZE(seq);
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
error:
    Py_DECREF(seq);
    return NULL;
}

/* BookSide: every price sorted in ``prices`` */
static int
step_full(PyObject *levels, PyObject *prices, int descending, PyObject *p, PyObject *s)
{
    int t = truthy(s);
    if (t < 0)
        return -1;
    if (t) {
        int has = PyDict_Contains(levels, p);
        if (has < 0)
            return -1;
        if (!has && insort(prices, p) < 0)
            return -1;
        return PyDict_SetItem(levels, p, s);
    }
    int removed = pop_level(levels, p);
    if (removed <= 0)
        return removed;
    return delete_sorted(prices, p);
}

/* TopWindowSide: only the best prices sorted in ``head`` (bids: best last; asks: best first) */
static int
step_window(PyObject *levels, PyObject *head, int descending, PyObject *p, PyObject *s)
{
    int t = truthy(s);
    if (t < 0)
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(head);
    if (t) {
        int has = PyDict_Contains(levels, p);
        if (has < 0)
            return -1;
        if (!has) {
            int enters = 1;
            if (n && n != PyDict_GET_SIZE(levels)) {
                /* better than the window's worst: bids p > head[0], asks p < head[-1] */
                enters = descending ? less(PyList_GET_ITEM(head, 0), p) : less(p, PyList_GET_ITEM(head, n - 1));
                if (enters < 0)
                    return -1;
            }
            if (enters && insort(head, p) < 0)
                return -1;
        }
        return PyDict_SetItem(levels, p, s);
    }
    int removed = pop_level(levels, p);
    if (removed <= 0 || n == 0)
        return removed;
    /* within the window: bids p >= head[0], asks p <= head[-1] */
    int outside = descending ? less(p, PyList_GET_ITEM(head, 0)) : less(PyList_GET_ITEM(head, n - 1), p);
    if (outside < 0)
        return -1;
    return outside ? 0 : delete_sorted(head, p);
}

static PyObject *
apply_levels(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "apply_levels(levels, prices, updates)");
        return NULL;
    }
    return apply_each(args[0], args[1], 0, args[2], step_full);
}

static PyObject *
apply_window(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "apply_window(levels, head, updates, descending)");
        return NULL;
    }
    int descending = PyObject_IsTrue(args[3]);
    if (descending < 0)
        return NULL;
    return apply_each(args[0], args[1], descending, args[2], step_window);
}

static PyMethodDef methods[] = {
    {"apply_levels", (PyCFunction)(void (*)(void))apply_levels, METH_FASTCALL,
     "apply_levels(levels, prices, updates): a BookSide diff (see book._apply_levels_py)"},
    {"apply_window", (PyCFunction)(void (*)(void))apply_window, METH_FASTCALL,
     "apply_window(levels, head, updates, descending): a TopWindowSide diff (see book._apply_window_py)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "marketfeed._book", "The order book's per-level loop in C (see book.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__book(void)
{
    return PyModule_Create(&module);
}
