/* The book's per-level loops in C: the same steps as the pure-Python loops they stand in for, one C
 * call per side and diff instead of a dozen bytecodes per level. Only the loops are here; everything
 * else about the book (loading, refilling the top window, reading) stays in Python.
 *
 * - apply_levels: BookSide (book.py _apply_levels_py): every price sorted in a list.
 * - apply_window: TopWindowSide (book.py _apply_window_py): the best prices in a short sorted list with
 *   their sizes beside them, the rest in a dict.
 * - apply_text_levels: a BookSide kept with each level's exact text, for OKX's checksum
 *   (adapters/okx/adapter.py _apply_text_py).
 *
 * Semantics are exactly those of the Python forms, errors included: tests/unit/test_book.py and
 * test_okx_apply.py run both on the same random operations and compare them. A level is (price, size);
 * a true size sets the level, a false one deletes it (deleting an absent level is a no-op). Prices are
 * compared with Python's own rules; floats, the usual case, without a call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* a < b with Python semantics; -1 on error */
static inline int
less(PyObject *a, PyObject *b)
{
    if (PyFloat_CheckExact(a) && PyFloat_CheckExact(b))
        return PyFloat_AS_DOUBLE(a) < PyFloat_AS_DOUBLE(b);
    return PyObject_RichCompareBool(a, b, Py_LT);
}

/* bisect.bisect_left (right = 0) or bisect.bisect_right (right = 1) of x in list; -1 on error */
static Py_ssize_t
bisect(PyObject *list, PyObject *x, int right)
{
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(list);
    if (PyFloat_CheckExact(x)) {
        /* floats, the usual case: compare the doubles until an item is not a float */
        double v = PyFloat_AS_DOUBLE(x);
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            PyObject *item = PyList_GET_ITEM(list, mid);
            if (!PyFloat_CheckExact(item))
                break;
            double d = PyFloat_AS_DOUBLE(item);
            if (right ? !(v < d) : d < v)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (mid >= PyList_GET_SIZE(list)) {  /* a comparison changed the list */
            PyErr_SetString(PyExc_RuntimeError, "book price list changed during a comparison");
            return -1;
        }
        PyObject *item = PyList_GET_ITEM(list, mid);
        Py_INCREF(item);
        /* bisect_left: item < x goes right; bisect_right: x < item goes left */
        int lt = right ? less(x, item) : less(item, x);
        Py_DECREF(item);
        if (lt < 0)
            return -1;
        if (lt != right)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

#define bisect_left(list, x) bisect((list), (x), 0)

/* list.insert(i, x) with one memmove: CPython's own insert moves the items one at a time */
static int
insert_at(PyObject *list, Py_ssize_t i, PyObject *x)
{
    if (PyList_Append(list, x) < 0)  /* grows the list; the new last slot is overwritten below */
        return -1;
    PyObject **items = ((PyListObject *)list)->ob_item;
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (i > n - 1)  /* as list.insert: past the end appends */
        i = n - 1;
    memmove(items + i + 1, items + i, (size_t)(n - 1 - i) * sizeof(PyObject *));
    items[i] = x;
    return 0;
}

/* bisect.insort(list, x) (insort_right); -1 on error */
static int
insort(PyObject *list, PyObject *x)
{
    Py_ssize_t i = bisect(list, x, 1);
    return i < 0 ? -1 : insert_at(list, i, x);
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

/* levels.pop(p, None) is not None, with one lookup: 1 removed, 0 absent, -1 error */
static inline int
pop_level(PyObject *levels, PyObject *p)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *old;
    int rc = PyDict_Pop(levels, p, &old);
    if (rc <= 0)
        return rc;
#else
    PyObject *old = _PyDict_Pop(levels, p, Py_None);
    if (old == NULL)
        return -1;
#endif
    int removed = old != Py_None;
    Py_DECREF(old);
    return removed;
}

/* levels[p] = s, with one lookup: 1 when p is a new level, 0 when it was there, -1 error */
static inline int
set_level(PyObject *levels, PyObject *p, PyObject *s)
{
    Py_ssize_t before = PyDict_GET_SIZE(levels);
    if (PyDict_SetItem(levels, p, s) < 0)
        return -1;
    return PyDict_GET_SIZE(levels) != before;
}

/* undo set_level of a new level whose price could not be placed in the sorted list: the error stays */
static int
unset_level(PyObject *levels, PyObject *p)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyDict_DelItem(levels, p) < 0)
        PyErr_Clear();
    PyErr_Restore(type, value, tb);
    return -1;
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

/* What a step works on: the side's containers and its direction. */
typedef struct {
    PyObject *levels;  /* BookSide: price -> size; TopWindowSide: the deep levels */
    PyObject *prices;  /* BookSide: every price; TopWindowSide: the window's prices (head) */
    PyObject *sizes;   /* TopWindowSide: the window's sizes, aligned with head */
    int descending;
} side_t;

typedef int (*step_fn)(side_t *side, PyObject *p, PyObject *s);

/* Calls ``step`` for each level of ``updates``: the loop both kinds of side share. */
static PyObject *
apply_each(side_t *side, PyObject *updates, step_fn step)
{
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
        int rc = step(side, p, s);
        Py_DECREF(p);
        Py_DECREF(s);
        Py_DECREF(pair);
        if (rc < 0)
            goto error;
        n = PySequence_Fast_GET_SIZE(seq);  /* a list mutated by a comparison */
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
error:
    Py_DECREF(seq);
    return NULL;
}

/* BookSide: every price sorted in ``prices`` */
static int
step_full(side_t *side, PyObject *p, PyObject *s)
{
    PyObject *levels = side->levels, *prices = side->prices;
    int t = truthy(s);
    if (t < 0)
        return -1;
    if (t) {
        int added = set_level(levels, p, s);
        if (added <= 0)
            return added;
        return insort(prices, p) < 0 ? unset_level(levels, p) : 0;
    }
    int removed = pop_level(levels, p);
    if (removed <= 0)
        return removed;
    return delete_sorted(prices, p);
}

static PyObject *
apply_levels(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "apply_levels(levels, prices, updates)");
        return NULL;
    }
    if (!PyDict_Check(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "expected a dict of levels and a list of prices");
        return NULL;
    }
    side_t side = {args[0], args[1], NULL, 0};
    return apply_each(&side, args[2], step_full);
}

/* price == head[i], with Python's rules (no identity shortcut, as the == operator) */
static inline int
equal_at(PyObject *head, Py_ssize_t i, PyObject *p)
{
    PyObject *h = PyList_GET_ITEM(head, i);
    if (PyFloat_CheckExact(h) && PyFloat_CheckExact(p))
        return PyFloat_AS_DOUBLE(h) == PyFloat_AS_DOUBLE(p);
    Py_INCREF(h);
    PyObject *r = PyObject_RichCompare(h, p, Py_EQ);
    Py_DECREF(h);
    if (r == NULL)
        return -1;
    int eq = PyObject_IsTrue(r);
    Py_DECREF(r);
    return eq;
}

/* TopWindowSide: the best prices in ``head`` (ascending) with their sizes in ``sizes``, every other
 * level in the ``deep`` dict. A level at or better than the window's worst price is in the window. */
static int
step_window(side_t *side, PyObject *p, PyObject *s)
{
    PyObject *deep = side->levels, *head = side->prices, *sizes = side->sizes;
    int descending = side->descending;
    int t = truthy(s);
    if (t < 0)
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(head);
    int in_window = 0;
    if (n) {
        /* bids: not p < head[0]; asks: not head[-1] < p */
        int outside = descending ? less(p, PyList_GET_ITEM(head, 0)) : less(PyList_GET_ITEM(head, n - 1), p);
        if (outside < 0)
            return -1;
        in_window = !outside;
    }
    if (!in_window) {
        if (t)
            return PyDict_SetItem(deep, p, s);
        return pop_level(deep, p) < 0 ? -1 : 0;
    }
    Py_ssize_t i = bisect_left(head, p);
    if (i < 0)
        return -1;
    int found = 0;
    if (i < PyList_GET_SIZE(head)) {
        found = equal_at(head, i, p);
        if (found < 0)
            return -1;
    }
    if (PyList_GET_SIZE(sizes) != PyList_GET_SIZE(head)) {
        PyErr_SetString(PyExc_RuntimeError, "book window prices and sizes differ in length");
        return -1;
    }
    if (found) {
        if (t) {
            Py_INCREF(s);
            return PyList_SetItem(sizes, i, s);
        }
        if (PyList_SetSlice(head, i, i + 1, NULL) < 0)
            return -1;
        return PyList_SetSlice(sizes, i, i + 1, NULL);
    }
    if (!t)
        return 0;
    if (insert_at(head, i, p) < 0)
        return -1;
    if (insert_at(sizes, i, s) < 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyList_SetSlice(head, i, i + 1, NULL);
        PyErr_Restore(type, value, tb);
        return -1;
    }
    return 0;
}

static PyObject *
apply_window(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "apply_window(deep, head, sizes, updates, descending)");
        return NULL;
    }
    PyObject *deep = args[0], *head = args[1], *sizes = args[2];
    if (!PyDict_Check(deep) || !PyList_Check(head) || !PyList_Check(sizes)) {
        PyErr_SetString(PyExc_TypeError, "expected a dict of deep levels and lists of window prices and sizes");
        return NULL;
    }
    int descending = PyObject_IsTrue(args[4]);
    if (descending < 0)
        return NULL;
    side_t side = {deep, head, sizes, descending};
    return apply_each(&side, args[3], step_window);
}

/* --- a side kept with the venue's exact text per level (OKX: the checksum is over that text) -------- */

static PyObject *str_px, *str_sz, *str_round;

/* the float of a price text, through ``cache`` (text -> float, cleared when it reaches ``limit``) */
static PyObject *
cached_price(PyObject *cache, Py_ssize_t limit, PyObject *px)
{
    PyObject *p = PyDict_GetItemWithError(cache, px);
    if (p != NULL) {
        Py_INCREF(p);
        return p;
    }
    if (PyErr_Occurred())
        return NULL;
    p = PyFloat_FromString(px);  /* float(px): ValueError on text that is not a number */
    if (p == NULL)
        return NULL;
    if (PyDict_GET_SIZE(cache) >= limit)
        PyDict_Clear(cache);
    if (PyDict_SetItem(cache, px, p) < 0) {
        Py_DECREF(p);
        return NULL;
    }
    return p;
}

/* One level [px, sz] of texts; appends (price, size) to ``changes``. See the Python form,
 * adapters/okx/adapter.py _apply_side_py, for the rules. */
static int
step_text(PyObject *levels, PyObject *prices, PyObject *frags, PyObject *cache, Py_ssize_t limit,
          PyObject *ct, PyObject *nd, PyObject *lv, PyObject *changes)
{
    int rc = -1;
    PyObject *px = NULL, *sz = NULL, *p = NULL, *s = NULL, *text = NULL;
    if ((px = PyObject_GetAttr(lv, str_px)) == NULL || (sz = PyObject_GetAttr(lv, str_sz)) == NULL)
        goto done;
    if ((p = cached_price(cache, limit, px)) == NULL || (s = PyFloat_FromString(sz)) == NULL)
        goto done;
    double pv = PyFloat_AS_DOUBLE(p), sv = PyFloat_AS_DOUBLE(s);
    if (sv > 0.0 && pv > 0.0) {
        if (ct != Py_None) {  /* contracts to base units: round(s * ct, nd) */
            PyObject *scaled = PyNumber_Multiply(s, ct);
            if (scaled == NULL)
                goto done;
            PyObject *rounded = PyObject_CallMethodObjArgs(scaled, str_round, nd, NULL);
            Py_DECREF(scaled);
            if (rounded == NULL)
                goto done;
            Py_SETREF(s, rounded);
        }
        if ((text = PyUnicode_FromFormat("%U:%U", px, sz)) == NULL)
            goto done;
        int has = PyDict_Contains(levels, p);
        if (has < 0)
            goto done;
        Py_ssize_t i = bisect_left(prices, p);
        if (i < 0)
            goto done;
        if (has) {
            if (i >= PyList_GET_SIZE(frags)) {
                PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
                goto done;
            }
            Py_INCREF(text);
            if (PyList_SetItem(frags, i, text) < 0)
                goto done;
        } else if (insert_at(prices, i, p) < 0 || insert_at(frags, i, text) < 0) {
            goto done;
        }
        if (PyDict_SetItem(levels, p, s) < 0)
            goto done;
    } else if (sv != 0.0 || !(pv > 0.0)) {  /* a negative or NaN size, or a price not > 0 (or NaN) */
        PyErr_Format(PyExc_ValueError, "bad level [%R, %R]", px, sz);
        goto done;
    } else {  /* size 0: delete */
        int has = PyDict_Contains(levels, p);
        if (has < 0)
            goto done;
        if (has) {
            Py_ssize_t i = bisect_left(prices, p);
            if (i < 0)
                goto done;
            if (i >= PyList_GET_SIZE(prices) || i >= PyList_GET_SIZE(frags)) {
                PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
                goto done;
            }
            if (PyList_SetSlice(prices, i, i + 1, NULL) < 0 || PyList_SetSlice(frags, i, i + 1, NULL) < 0 ||
                PyDict_DelItem(levels, p) < 0)
                goto done;
        }
    }
    PyObject *change = PyTuple_Pack(2, p, s);
    if (change == NULL)
        goto done;
    rc = PyList_Append(changes, change);
    Py_DECREF(change);
done:
    Py_XDECREF(px);
    Py_XDECREF(sz);
    Py_XDECREF(p);
    Py_XDECREF(s);
    Py_XDECREF(text);
    return rc;
}

static PyObject *
apply_text_levels(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "apply_text_levels(levels_in, levels, prices, frags, cache, cache_limit, ct, nd)");
        return NULL;
    }
    PyObject *levels = args[1], *prices = args[2], *frags = args[3], *cache = args[4];
    if (!PyDict_Check(levels) || !PyList_Check(prices) || !PyList_Check(frags) || !PyDict_Check(cache)) {
        PyErr_SetString(PyExc_TypeError, "expected dict levels, list prices, list frags, dict cache");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[5]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    PyObject *seq = PySequence_Fast(args[0], "levels must be iterable");
    if (seq == NULL)
        return NULL;
    PyObject *changes = PyList_New(0);
    if (changes == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *lv = PySequence_Fast_GET_ITEM(seq, i);
        Py_INCREF(lv);
        int rc = step_text(levels, prices, frags, cache, limit, args[6], args[7], lv, changes);
        Py_DECREF(lv);
        if (rc < 0) {
            Py_DECREF(changes);
            changes = NULL;
            break;
        }
    }
    Py_DECREF(seq);
    return changes;
}

static PyMethodDef methods[] = {
    {"apply_levels", (PyCFunction)(void (*)(void))apply_levels, METH_FASTCALL,
     "apply_levels(levels, prices, updates): a BookSide diff (see book._apply_levels_py)"},
    {"apply_window", (PyCFunction)(void (*)(void))apply_window, METH_FASTCALL,
     "apply_window(deep, head, sizes, updates, descending): a TopWindowSide diff (see book._apply_window_py)"},
    {"apply_text_levels", (PyCFunction)(void (*)(void))apply_text_levels, METH_FASTCALL,
     "apply_text_levels(levels_in, levels, prices, frags, cache, cache_limit, ct, nd) -> [(price, size)]: "
     "an OKX book side (see adapters/okx/adapter.py _apply_side_py)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "marketfeed._book", "The order book's per-level loop in C (see book.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__book(void)
{
    if ((str_px = PyUnicode_InternFromString("px")) == NULL || (str_sz = PyUnicode_InternFromString("sz")) == NULL ||
        (str_round = PyUnicode_InternFromString("__round__")) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
