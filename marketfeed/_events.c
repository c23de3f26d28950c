/* Events as JSON Lines in C: the hot path of every text sink and of `replay --out`.
 *
 * msgspec formats each float with a general shortest-round-trip algorithm, ~300 instructions a float,
 * and a book event carries dozens. Market prices and sizes are short decimals: when a double is
 * exactly the nearest double to m / 10^8 with m < 10^15, that decimal (trailing zeros dropped) is its
 * shortest round-trip form, since two different decimals of at most 15 significant digits are never
 * the same double. Writing it costs a multiplication, a division to check, and the digits.
 *
 * Only Book, Trade and Top events whose every value is in that plain form are written here: exact str
 * (ASCII, nothing to escape), exact int in 64 bits, None, bool, exact float in [1e-5, 1e7) or zero,
 * and levels as 2-tuples or 2-lists of such floats. Any other event is encoded by msgspec, whole.
 * The bytes are msgspec's (EVENTS.md): tests/unit/test_events_c.py compares them on random events.
 *
 * configure(Book, Trade, Top, encode) is called once by marketfeed.events; encode_lines(events, buffer)
 * then appends one line per event to the bytearray.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static PyObject *fallback; /* msgspec's encoder, for every event not written here */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} out_t;

/* room for `extra` more bytes: 1, or -1 with MemoryError set */
static int
reserve(out_t *o, Py_ssize_t extra)
{
    if (o->len + extra <= o->cap)
        return 1;
    Py_ssize_t cap = (o->len + extra) * 2;
    char *bigger = PyMem_Realloc(o->data, cap);
    if (bigger == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->data = bigger;
    o->cap = cap;
    return 1;
}

/* Every put_* reserves its own room and returns 1 (written), 0 (not the plain form: the caller
 * drops the event's partial line and has msgspec write it) or -1 (an error is set). */
#define TRY(call)                \
    do {                         \
        int r_ = (call);         \
        if (r_ <= 0)             \
            return r_;           \
    } while (0)

static int
put_bytes(out_t *o, const char *s, Py_ssize_t n)
{
    TRY(reserve(o, n));
    memcpy(o->data + o->len, s, n);
    o->len += n;
    return 1;
}
#define put_literal(o, s) put_bytes((o), (s), sizeof(s) - 1)

static int
put_int(out_t *o, PyObject *v)
{
    if (!PyLong_CheckExact(v))
        return 0;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    char tmp[20], *p = tmp + sizeof tmp;
    uint64_t u = x < 0 ? 0 - (uint64_t)x : (uint64_t)x;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (x < 0)
        *--p = '-';
    return put_bytes(o, p, tmp + sizeof tmp - p);
}

static int
put_optional_int(out_t *o, PyObject *v)
{
    return v == Py_None ? put_literal(o, "null") : put_int(o, v);
}

/* a str with nothing to escape: ASCII from the space on, but not the quote, backslash or DEL */
static int
put_str(out_t *o, PyObject *v)
{
    if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_COMPACT_ASCII(v))
        return 0;
    const unsigned char *s = PyUnicode_DATA(v);
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] == '"' || s[i] == '\\' || s[i] == 0x7F)
            return 0;
    TRY(reserve(o, n + 2));
    o->data[o->len++] = '"';
    memcpy(o->data + o->len, s, n);
    o->len += n;
    o->data[o->len++] = '"';
    return 1;
}

static int
put_optional_str(out_t *o, PyObject *v)
{
    return v == Py_None ? put_literal(o, "null") : put_str(o, v);
}

static int
put_bool(out_t *o, PyObject *v)
{
    return v == Py_True ? put_literal(o, "true") : v == Py_False ? put_literal(o, "false") : 0;
}

static const char DIGIT_PAIRS[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                     "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                     "8081828384858687888990919293949596979899";

/* the room a plain float's writing touches: "-9999999." and two 8-byte stores */
#define FLOAT_ROOM 32

static int
put_float(out_t *o, PyObject *obj)
{
    if (!PyFloat_CheckExact(obj))
        return 0;
    double v = PyFloat_AS_DOUBLE(obj);
    if (v == 0)
        return signbit(v) ? put_literal(o, "-0.0") : put_literal(o, "0.0");
    double a = fabs(v);
    if (!(a >= 1e-5 && a < 1e7)) /* NaN fails too; msgspec uses exponents below 1e-5 */
        return 0;
    uint64_t m = (uint64_t)(a * 1e8 + 0.5); /* < 10^15: exact, and within 0.25 of the true product */
    if ((double)m / 1e8 != a)
        return 0; /* not the double of a decimal with at most 8 decimals */
    TRY(reserve(o, FLOAT_ROOM));
    /* the digits, two at a time, in 32-bit arithmetic: the last eight go after the point */
    uint32_t whole = (uint32_t)(m / 100000000), frac_digits = (uint32_t)(m % 100000000);
    uint32_t high = frac_digits / 10000, low = frac_digits % 10000;
    char tmp[24];
    char *end = tmp + sizeof tmp, *frac = end - 8, *p = frac;
    memcpy(frac, DIGIT_PAIRS + 2 * (high / 100), 2);
    memcpy(frac + 2, DIGIT_PAIRS + 2 * (high % 100), 2);
    memcpy(frac + 4, DIGIT_PAIRS + 2 * (low / 100), 2);
    memcpy(frac + 6, DIGIT_PAIRS + 2 * (low % 100), 2);
    char *frac_end = end;
    do {
        p -= 2;
        memcpy(p, DIGIT_PAIRS + 2 * (whole % 100), 2);
        whole /= 100;
    } while (whole);
    if (*p == '0' && p + 1 < frac)
        p++; /* the pair's leading zero */
    while (frac_end > frac + 1 && frac_end[-1] == '0')
        frac_end--; /* trailing zeros go, but one digit stays: 4.0 */
    char *w = o->data + o->len, *start = w;
    if (v < 0)
        *w++ = '-';
    memcpy(w, p, 8); /* the whole part has at most 7 digits; the excess lands in reserved room */
    w += frac - p;
    *w++ = '.';
    memcpy(w, frac, 8);
    w += frac_end - frac;
    o->len += w - start;
    return 1;
}

/* a list of 2-tuples (or 2-lists) of plain floats */
static int
put_levels(out_t *o, PyObject *levels)
{
    if (!PyList_CheckExact(levels))
        return 0;
    Py_ssize_t n = PyList_GET_SIZE(levels);
    TRY(put_literal(o, "["));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *level = PyList_GET_ITEM(levels, i), *price, *size;
        if (PyTuple_CheckExact(level) && PyTuple_GET_SIZE(level) == 2) {
            price = PyTuple_GET_ITEM(level, 0);
            size = PyTuple_GET_ITEM(level, 1);
        }
        else if (PyList_CheckExact(level) && PyList_GET_SIZE(level) == 2) {
            price = PyList_GET_ITEM(level, 0);
            size = PyList_GET_ITEM(level, 1);
        }
        else
            return 0;
        TRY(i ? put_literal(o, ",[") : put_literal(o, "["));
        TRY(put_float(o, price));
        TRY(put_literal(o, ","));
        TRY(put_float(o, size));
        TRY(put_literal(o, "]"));
    }
    return put_literal(o, "]");
}

/* what every event starts with: its type, venue, symbol, ts_recv and ts_exchange (f[0..3]) */
static int
put_start(out_t *o, const char *opening, Py_ssize_t n, PyObject **f)
{
    TRY(put_bytes(o, opening, n));
    TRY(put_str(o, f[0]));
    TRY(put_literal(o, ",\"symbol\":"));
    TRY(put_str(o, f[1]));
    TRY(put_literal(o, ",\"ts_recv\":"));
    TRY(put_int(o, f[2]));
    TRY(put_literal(o, ",\"ts_exchange\":"));
    return put_optional_int(o, f[3]);
}
#define OPENING(type) "{\"type\":\"" type "\",\"venue\":", sizeof("{\"type\":\"" type "\",\"venue\":") - 1

static int
write_book(out_t *o, PyObject **f)
{
    TRY(put_start(o, OPENING("book"), f));
    TRY(put_literal(o, ",\"seq\":"));
    TRY(put_optional_int(o, f[4]));
    TRY(put_literal(o, ",\"snapshot\":"));
    TRY(put_bool(o, f[5]));
    TRY(put_literal(o, ",\"bids\":"));
    TRY(put_levels(o, f[6]));
    TRY(put_literal(o, ",\"asks\":"));
    TRY(put_levels(o, f[7]));
    TRY(put_literal(o, ",\"checksum\":"));
    TRY(put_optional_int(o, f[8]));
    return put_literal(o, "}\n");
}

static int
write_trade(out_t *o, PyObject **f)
{
    TRY(put_start(o, OPENING("trade"), f));
    TRY(put_literal(o, ",\"trade_id\":"));
    TRY(put_str(o, f[4]));
    TRY(put_literal(o, ",\"price\":"));
    TRY(put_float(o, f[5]));
    TRY(put_literal(o, ",\"size\":"));
    TRY(put_float(o, f[6]));
    TRY(put_literal(o, ",\"side\":"));
    TRY(put_optional_str(o, f[7]));
    return put_literal(o, "}\n");
}

static int
write_top(out_t *o, PyObject **f)
{
    TRY(put_start(o, OPENING("top"), f));
    TRY(put_literal(o, ",\"seq\":"));
    TRY(put_optional_int(o, f[4]));
    TRY(put_literal(o, ",\"bids\":"));
    TRY(put_levels(o, f[5]));
    TRY(put_literal(o, ",\"asks\":"));
    TRY(put_levels(o, f[6]));
    return put_literal(o, "}\n");
}

#define MAX_FIELDS 9

/* the event types written here: their fields in declaration order (EVENTS.md), and their writer */
typedef struct {
    PyObject *type; /* set by configure() */
    const char *names[MAX_FIELDS + 1];
    PyObject *fields[MAX_FIELDS + 1]; /* the names, interned at import; NULL-terminated */
    int (*write)(out_t *, PyObject **);
} kind_t;

static kind_t kinds[] = {
    {NULL, {"venue", "symbol", "ts_recv", "ts_exchange", "seq", "snapshot", "bids", "asks", "checksum", NULL}, {NULL}, write_book},
    {NULL, {"venue", "symbol", "ts_recv", "ts_exchange", "trade_id", "price", "size", "side", NULL}, {NULL}, write_trade},
    {NULL, {"venue", "symbol", "ts_recv", "ts_exchange", "seq", "bids", "asks", NULL}, {NULL}, write_top},
};
#define N_KINDS (sizeof kinds / sizeof kinds[0])

/* a Book, Trade or Top event's line, written from its fields */
static int
put_event(out_t *o, PyObject *event)
{
    kind_t *kind = NULL;
    for (size_t k = 0; k < N_KINDS && kind == NULL; k++)
        if ((PyObject *)Py_TYPE(event) == kinds[k].type)
            kind = &kinds[k];
    if (kind == NULL)
        return 0;
    PyObject *f[MAX_FIELDS];
    int n = 0, r = -1;
    for (; kind->fields[n] != NULL; n++)
        if ((f[n] = PyObject_GetAttr(event, kind->fields[n])) == NULL)
            goto done;
    r = kind->write(o, f);
done:
    while (n--)
        Py_DECREF(f[n]);
    return r;
}

/* msgspec's line for an event not in the plain form */
static int
put_by_msgspec(out_t *o, PyObject *event)
{
    PyObject *encoded = PyObject_CallOneArg(fallback, event);
    if (encoded == NULL)
        return -1;
    if (!PyBytes_Check(encoded)) {
        Py_DECREF(encoded);
        PyErr_SetString(PyExc_TypeError, "the fallback encoder must return bytes");
        return -1;
    }
    int r = put_bytes(o, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded));
    Py_DECREF(encoded);
    return r > 0 ? put_literal(o, "\n") : r;
}

/* kept between calls, one allocation for the life of the process; safe to share because nothing
 * between its reset and its copy into the bytearray runs Python code or lets go of the GIL */
static out_t out;

static PyObject *
encode_lines(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyByteArray_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "encode_lines(events, buffer: bytearray)");
        return NULL;
    }
    if (fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "marketfeed._events.configure() was not called");
        return NULL;
    }
    PyObject *events = PySequence_Fast(args[0], "events must be a sequence"), *buffer = args[1];
    if (events == NULL)
        return NULL;
    out.len = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(events); i++) {
        PyObject *event = PySequence_Fast_GET_ITEM(events, i);
        Py_ssize_t start = out.len;
        int r = put_event(&out, event);
        if (r == 0) {
            out.len = start; /* drop what was written: msgspec writes the whole event */
            r = put_by_msgspec(&out, event);
        }
        if (r < 0) {
            Py_DECREF(events);
            return NULL;
        }
    }
    Py_DECREF(events);
    Py_ssize_t old = PyByteArray_GET_SIZE(buffer);
    if (PyByteArray_Resize(buffer, old + out.len) < 0)
        return NULL;
    memcpy(PyByteArray_AS_STRING(buffer) + old, out.data, out.len);
    Py_RETURN_NONE;
}

/* plain_line(event): the line written here for an event in the plain form, else None
 * (for tests, which check that typical events take this path) */
static PyObject *
plain_line(PyObject *Py_UNUSED(module), PyObject *event)
{
    out_t o = {NULL, 0, 0};
    int r = put_event(&o, event);
    PyObject *line = r > 0 ? PyBytes_FromStringAndSize(o.data, o.len) : NULL;
    PyMem_Free(o.data);
    if (r < 0)
        return NULL;
    if (r == 0)
        Py_RETURN_NONE;
    return line;
}

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *book, *trade, *top, *encode;
    if (!PyArg_ParseTuple(args, "OOOO:configure", &book, &trade, &top, &encode))
        return NULL;
    PyObject *types[N_KINDS] = {book, trade, top};
    for (size_t k = 0; k < N_KINDS; k++) {
        Py_INCREF(types[k]);
        Py_XSETREF(kinds[k].type, types[k]);
    }
    Py_INCREF(encode);
    Py_XSETREF(fallback, encode);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "configure(Book, Trade, Top, encode): the event types, and msgspec's encoder"},
    {"plain_line", plain_line, METH_O, "plain_line(event) -> the line written here, or None if msgspec would write it"},
    {"encode_lines", (PyCFunction)(void (*)(void))encode_lines, METH_FASTCALL,
     "encode_lines(events, buffer): append each event as a JSON line to the bytearray"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_events", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__events(void)
{
    for (size_t k = 0; k < N_KINDS; k++)
        for (int i = 0; kinds[k].names[i] != NULL; i++)
            if ((kinds[k].fields[i] = PyUnicode_InternFromString(kinds[k].names[i])) == NULL)
                return NULL;
    return PyModule_Create(&module_def);
}
