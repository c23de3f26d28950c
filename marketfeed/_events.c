/* Events as JSON Lines in C: the hot path of every text sink and of `replay --out`.
 *
 * msgspec formats each float with a general shortest-round-trip algorithm, ~300 instructions a float,
 * and a book event carries dozens. Market prices and sizes are short decimals: when a double is
 * exactly the nearest double to m / 10^8 with m < 10^15, that decimal (trailing zeros dropped) is its
 * shortest round-trip form, since two different decimals of at most 15 significant digits are never
 * the same double. Writing it costs a multiplication, a division to check, and the digits.
 *
 * Only Book and Trade events whose every value is in that plain form are written here: exact str
 * (ASCII, nothing to escape), exact int in 64 bits, None, bool, exact float in [1e-5, 1e7) or zero,
 * and levels as 2-tuples or 2-lists of such floats. Any other event is encoded by msgspec, whole.
 * The bytes are msgspec's (EVENTS.md): tests/unit/test_events_c.py compares them on random events.
 *
 * configure(Book, Trade, encode) is called once by marketfeed.events; encode_lines(events, buffer)
 * then appends one line per event to the bytearray.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static PyObject *BookType, *TradeType, *fallback;
static PyObject *s_venue, *s_symbol, *s_ts_recv, *s_ts_exchange, *s_seq, *s_snapshot, *s_bids, *s_asks, *s_checksum,
    *s_trade_id, *s_price, *s_size, *s_side;

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} out_t;

static int
reserve(out_t *o, Py_ssize_t extra)
{
    if (o->len + extra <= o->cap)
        return 1;
    Py_ssize_t cap = (o->len + extra) * 2;
    char *bigger = PyMem_Realloc(o->data, cap);
    if (bigger == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    o->data = bigger;
    o->cap = cap;
    return 1;
}

/* callers reserve first; these only write */
static inline void
put(out_t *o, const char *s, Py_ssize_t n)
{
    memcpy(o->data + o->len, s, n);
    o->len += n;
}
#define PUT_LITERAL(o, s) put((o), (s), sizeof(s) - 1)

static void
put_u64(out_t *o, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[19 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(o, tmp + 20 - n, n);
}

/* each put_* returns 0 (nothing written) if the value is not in the plain form */

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
    if (x < 0) {
        o->data[o->len++] = '-';
        put_u64(o, 0 - (uint64_t)x);
    }
    else
        put_u64(o, (uint64_t)x);
    return 1;
}

static int
put_optional_int(out_t *o, PyObject *v)
{
    if (v == Py_None) {
        PUT_LITERAL(o, "null");
        return 1;
    }
    return put_int(o, v);
}

/* a str with nothing to escape: ASCII from the space on, but not the quote or the backslash */
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
    if (!reserve(o, n + 2))
        return -1;
    o->data[o->len++] = '"';
    put(o, (const char *)s, n);
    o->data[o->len++] = '"';
    return 1;
}

static int
put_optional_str(out_t *o, PyObject *v)
{
    if (v == Py_None) {
        if (!reserve(o, 4))
            return -1;
        PUT_LITERAL(o, "null");
        return 1;
    }
    return put_str(o, v);
}

#define FLOAT_ROOM 32 /* the longest plain float: "-9999999.99999999" is 17 bytes; 32 leaves a 16-byte store room */

static const char DIGIT_PAIRS[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                     "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                     "8081828384858687888990919293949596979899";

static int
put_float(out_t *o, PyObject *obj)
{
    if (!PyFloat_CheckExact(obj))
        return 0;
    double v = PyFloat_AS_DOUBLE(obj);
    if (v == 0) {
        if (signbit(v))
            PUT_LITERAL(o, "-0.0");
        else
            PUT_LITERAL(o, "0.0");
        return 1;
    }
    double a = fabs(v);
    if (!(a >= 1e-5 && a < 1e7)) /* NaN fails too; msgspec uses exponents below 1e-5 */
        return 0;
    uint64_t m = (uint64_t)(a * 1e8 + 0.5); /* < 10^15: exact, and within 0.25 of the true product */
    if ((double)m / 1e8 != a)
        return 0; /* not the double of a decimal with at most 8 decimals */
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
    memcpy(w, p, 8); /* the integer part has at most 7 digits; room was reserved for the excess */
    w += frac - p;
    *w++ = '.';
    memcpy(w, frac, 8);
    w += frac_end - frac;
    o->len += w - start;
    return 1;
}

static int
put_levels(out_t *o, PyObject *levels)
{
    if (!PyList_CheckExact(levels))
        return 0;
    Py_ssize_t n = PyList_GET_SIZE(levels);
    if (!reserve(o, 2 + n * (2 * FLOAT_ROOM + 4)))
        return -1;
    o->data[o->len++] = '[';
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
        if (i)
            o->data[o->len++] = ',';
        o->data[o->len++] = '[';
        if (!put_float(o, price))
            return 0;
        o->data[o->len++] = ',';
        if (!put_float(o, size))
            return 0;
        o->data[o->len++] = ']';
    }
    o->data[o->len++] = ']';
    return 1;
}

/* the fields of an event, each a new reference, or 0 with an error set */
static int
get_fields(PyObject *event, PyObject **names, PyObject **values, int n)
{
    for (int i = 0; i < n; i++) {
        values[i] = PyObject_GetAttr(event, names[i]);
        if (values[i] == NULL) {
            while (i--)
                Py_DECREF(values[i]);
            return 0;
        }
    }
    return 1;
}

/* `r` from a put_*: 1 written, 0 not plain, -1 error */
#define PUT(call)                 \
    do {                          \
        int r_ = (call);          \
        if (r_ <= 0) {            \
            result = r_;          \
            goto done;            \
        }                         \
    } while (0)

static int
put_book(out_t *o, PyObject *event)
{
    PyObject *names[9] = {s_venue, s_symbol, s_ts_recv, s_ts_exchange, s_seq, s_snapshot, s_bids, s_asks, s_checksum};
    PyObject *f[9];
    if (!get_fields(event, names, f, 9))
        return -1;
    int result = 1;
    if (!reserve(o, 200))
        PUT(-1);
    PUT_LITERAL(o, "{\"type\":\"book\",\"venue\":");
    PUT(put_str(o, f[0]));
    if (!reserve(o, 200))
        PUT(-1);
    PUT_LITERAL(o, ",\"symbol\":");
    PUT(put_str(o, f[1]));
    if (!reserve(o, 200))
        PUT(-1);
    PUT_LITERAL(o, ",\"ts_recv\":");
    PUT(put_int(o, f[2]));
    PUT_LITERAL(o, ",\"ts_exchange\":");
    PUT(put_optional_int(o, f[3]));
    PUT_LITERAL(o, ",\"seq\":");
    PUT(put_optional_int(o, f[4]));
    if (f[5] == Py_True)
        PUT_LITERAL(o, ",\"snapshot\":true,\"bids\":");
    else if (f[5] == Py_False)
        PUT_LITERAL(o, ",\"snapshot\":false,\"bids\":");
    else
        PUT(0);
    PUT(put_levels(o, f[6]));
    if (!reserve(o, 64))
        PUT(-1);
    PUT_LITERAL(o, ",\"asks\":");
    PUT(put_levels(o, f[7]));
    if (!reserve(o, 64))
        PUT(-1);
    PUT_LITERAL(o, ",\"checksum\":");
    PUT(put_optional_int(o, f[8]));
    PUT_LITERAL(o, "}\n");
done:
    for (int i = 0; i < 9; i++)
        Py_DECREF(f[i]);
    return result;
}

static int
put_trade(out_t *o, PyObject *event)
{
    PyObject *names[8] = {s_venue, s_symbol, s_ts_recv, s_ts_exchange, s_trade_id, s_price, s_size, s_side};
    PyObject *f[8];
    if (!get_fields(event, names, f, 8))
        return -1;
    int result = 1;
    if (!reserve(o, 200))
        PUT(-1);
    PUT_LITERAL(o, "{\"type\":\"trade\",\"venue\":");
    PUT(put_str(o, f[0]));
    if (!reserve(o, 200))
        PUT(-1);
    PUT_LITERAL(o, ",\"symbol\":");
    PUT(put_str(o, f[1]));
    if (!reserve(o, 200))
        PUT(-1);
    PUT_LITERAL(o, ",\"ts_recv\":");
    PUT(put_int(o, f[2]));
    PUT_LITERAL(o, ",\"ts_exchange\":");
    PUT(put_optional_int(o, f[3]));
    PUT_LITERAL(o, ",\"trade_id\":");
    PUT(put_str(o, f[4]));
    if (!reserve(o, 200))
        PUT(-1);
    PUT_LITERAL(o, ",\"price\":");
    PUT(put_float(o, f[5]));
    PUT_LITERAL(o, ",\"size\":");
    PUT(put_float(o, f[6]));
    PUT_LITERAL(o, ",\"side\":");
    PUT(put_optional_str(o, f[7]));
    if (!reserve(o, 2))
        PUT(-1);
    PUT_LITERAL(o, "}\n");
done:
    for (int i = 0; i < 8; i++)
        Py_DECREF(f[i]);
    return result;
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
    Py_ssize_t n = PyBytes_GET_SIZE(encoded);
    int ok = reserve(o, n + 1);
    if (ok) {
        put(o, PyBytes_AS_STRING(encoded), n);
        o->data[o->len++] = '\n';
    }
    Py_DECREF(encoded);
    return ok ? 1 : -1;
}

static out_t out; /* kept between calls: one allocation for the life of the process */

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
        PyTypeObject *type = Py_TYPE(event);
        Py_ssize_t start = out.len;
        int r = 0;
        if (type == (PyTypeObject *)BookType)
            r = put_book(&out, event);
        else if (type == (PyTypeObject *)TradeType)
            r = put_trade(&out, event);
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

/* plain_line(event): the line written here for a Book or Trade event in the plain form, else None
 * (for tests, which check that typical events take this path) */
static PyObject *
plain_line(PyObject *Py_UNUSED(module), PyObject *event)
{
    out_t o = {NULL, 0, 0};
    int r = 0;
    if (Py_TYPE(event) == (PyTypeObject *)BookType)
        r = put_book(&o, event);
    else if (Py_TYPE(event) == (PyTypeObject *)TradeType)
        r = put_trade(&o, event);
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
    PyObject *book, *trade, *encode;
    if (!PyArg_ParseTuple(args, "OOO:configure", &book, &trade, &encode))
        return NULL;
    Py_INCREF(book);
    Py_INCREF(trade);
    Py_INCREF(encode);
    Py_XSETREF(BookType, book);
    Py_XSETREF(TradeType, trade);
    Py_XSETREF(fallback, encode);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "configure(Book, Trade, encode): the event types, and msgspec's encoder"},
    {"plain_line", plain_line, METH_O, "plain_line(event) -> the line written here, or None if msgspec would write it"},
    {"encode_lines", (PyCFunction)(void (*)(void))encode_lines, METH_FASTCALL,
     "encode_lines(events, buffer): append each event as a JSON line to the bytearray"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_events", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__events(void)
{
#define INTERN(var, text)                               \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return NULL;
    INTERN(s_venue, "venue");
    INTERN(s_symbol, "symbol");
    INTERN(s_ts_recv, "ts_recv");
    INTERN(s_ts_exchange, "ts_exchange");
    INTERN(s_seq, "seq");
    INTERN(s_snapshot, "snapshot");
    INTERN(s_bids, "bids");
    INTERN(s_asks, "asks");
    INTERN(s_checksum, "checksum");
    INTERN(s_trade_id, "trade_id");
    INTERN(s_price, "price");
    INTERN(s_size, "size");
    INTERN(s_side, "side");
#undef INTERN
    return PyModule_Create(&module_def);
}
