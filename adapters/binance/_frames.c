/* Binance trade frames in one C call: read a combined-stream `trade` or `aggTrade` frame, drop it if
 * its id was seen, and append the normalised marketfeed.events.Trade. The Python path (msgspec decode,
 * then BinanceAdapter._on_trade / _on_agg_trade) costs about twice as much per trade, most of it in
 * building and reading the intermediate wire Struct; trades arrive several times as often as diffs.
 *
 * Only the plain form Binance sends is read here: {"stream":"...","data":{...}} with flat scalar
 * values, no escapes, integer ids and times, and prices and quantities as decimal strings of at most
 * 15 significant digits. Anything else returns 0 before any state is touched, and the caller takes
 * the msgspec path, which decides (and reports) what the frame is. Within that form the result is
 * exactly the msgspec path's: a decimal of <= 15 digits over a power of ten <= 1e22 is two exact
 * doubles, and one IEEE division rounds their quotient correctly, as msgspec's parser does.
 * tests/unit/test_binance_frames_c.py runs both paths on the same frames and compares the results.
 *
 * trade(frame, ts, state, venue, events) and agg_trade(...): the id is `t` (state.last_trade_id) or
 * `a` (state.last_agg_id). Returns 0: not the plain form (nothing done); 1: event appended;
 * 2: duplicate id (nothing appended); 3: event appended, and the id skipped some (a jump, counted).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *TradeType; /* marketfeed.events.Trade */
static PyObject *str_buy, *str_sell, *str_symbol, *str_last_trade_id, *str_last_agg_id;

#define MS 1000000LL /* ns per ms */
#define MAX_EXACT_MANTISSA (1ULL << 53)

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

typedef struct {
    const char *p, *end;
} cursor_t;

static inline void
skip_ws(cursor_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static inline int
expect(cursor_t *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* bytes that may stand inside a string without escapes: not '"', not '\\', not a control character */
static unsigned char plain[256];

static void
init_plain(void)
{
    for (int ch = 0x20; ch < 256; ch++)
        plain[ch] = ch != '"' && ch != '\\';
}

/* a string without escapes: its text in [*s, *s + *n) */
static int
read_string(cursor_t *c, const char **s, Py_ssize_t *n)
{
    skip_ws(c);
    if (c->p >= c->end || *c->p != '"')
        return 0;
    const unsigned char *start = (const unsigned char *)c->p + 1, *p = start, *end = (const unsigned char *)c->end;
    while (p < end && plain[*p])
        p++;
    if (p >= end || *p != '"')
        return 0; /* an escape, a control character or no end: msgspec decides */
    *s = (const char *)start;
    *n = p - start;
    c->p = (const char *)p + 1;
    return 1;
}

/* a JSON integer of at most 18 digits, without leading zeros; its text in [*s, c->p) */
static int
read_int(cursor_t *c, long long *out, const char **s)
{
    skip_ws(c);
    const char *p = c->p, *start = p;
    int neg = 0;
    if (p < c->end && *p == '-') {
        neg = 1;
        p++;
    }
    const char *digits = p;
    long long v = 0;
    while (p < c->end && *p >= '0' && *p <= '9')
        v = v * 10 + (*p++ - '0');
    Py_ssize_t n = p - digits;
    if (n == 0 || n > 18 || (n > 1 && *digits == '0') || (neg && v == 0))
        return 0;
    if (p < c->end && (*p == '.' || *p == 'e' || *p == 'E'))
        return 0; /* not an integer: msgspec decides */
    *out = neg ? -v : v;
    *s = start;
    c->p = p;
    return 1;
}

/* a decimal string "-?D+(.D+)?" of at most 15 significant digits, to the correctly rounded double */
static int
read_decimal_string(cursor_t *c, double *out)
{
    const char *s;
    Py_ssize_t n;
    if (!read_string(c, &s, &n))
        return 0;
    const char *p = s, *end = s + n;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    const char *int_start = p;
    uint64_t m = 0;
    int significant = 0, frac = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        m = m * 10 + (uint64_t)(*p - '0');
        if (m)
            significant++;
        p++;
    }
    Py_ssize_t int_len = p - int_start;
    if (int_len == 0 || (int_len > 1 && *int_start == '0'))
        return 0;
    if (p < end && *p == '.') {
        p++;
        const char *frac_start = p;
        while (p < end && *p >= '0' && *p <= '9') {
            m = m * 10 + (uint64_t)(*p - '0');
            if (m)
                significant++;
            p++;
        }
        frac = (int)(p - frac_start);
        if (frac == 0)
            return 0;
    }
    /* `significant` counts digits from the first non-zero one: m < 10^15 < 2^53, exact as a double */
    if (p != end || significant > 15 || frac > 22 || m >= MAX_EXACT_MANTISSA || (neg && m == 0))
        return 0; /* msgspec reads "-0" as 0.0 but "-0.0" as -0.0: a negative zero is left to it */
    double v = (double)m / POW10[frac];
    *out = neg ? -v : v;
    return 1;
}

static inline const char *
skip_digits(const char *p, const char *end)
{
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p;
}

/* a JSON number, checked as strictly as msgspec checks it: -?(0|[1-9]D*)(.D+)?([eE][+-]?D+)? */
static int
skip_number(cursor_t *c)
{
    const char *p = c->p, *end = c->end, *q;
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else if ((q = skip_digits(p, end)) > p)
        p = q;
    else
        return 0;
    if (p < end && *p == '.') {
        q = skip_digits(p + 1, end);
        if (q == p + 1)
            return 0;
        p = q;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        q = skip_digits(p, end);
        if (q == p)
            return 0;
        p = q;
    }
    c->p = p;
    return 1;
}

/* any other scalar value, skipped: a string without escapes, a number, true, false or null */
static int
skip_scalar(cursor_t *c)
{
    skip_ws(c);
    if (c->p >= c->end)
        return 0;
    char ch = *c->p;
    if (ch == '"') {
        const char *s;
        Py_ssize_t n;
        return read_string(c, &s, &n);
    }
    if (ch == '-' || (ch >= '0' && ch <= '9'))
        return skip_number(c);
    static const char *words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t len = strlen(words[i]);
        if ((size_t)(c->end - c->p) >= len && memcmp(c->p, words[i], len) == 0) {
            c->p += len;
            return 1;
        }
    }
    return 0; /* an object or array: not the plain form */
}

typedef struct {
    long long id, time;
    const char *id_text;
    Py_ssize_t id_len;
    double price, qty;
    int buyer_is_maker;
    unsigned seen;
} fields_t;

enum { SEEN_S = 1, SEEN_ID = 2, SEEN_P = 4, SEEN_Q = 8, SEEN_T = 16, SEEN_M = 32, SEEN_ALL = 63 };

/* the data object; id_key is 't' (trade) or 'a' (aggTrade) */
static int
read_payload(cursor_t *c, char id_key, fields_t *f)
{
    if (!expect(c, '{'))
        return 0;
    f->seen = 0;
    if (expect(c, '}'))
        return 0;
    for (;;) {
        const char *key;
        Py_ssize_t klen;
        if (!read_string(c, &key, &klen) || !expect(c, ':'))
            return 0;
        unsigned bit = 0;
        int ok;
        skip_ws(c);
        if (klen != 1) {
            ok = skip_scalar(c);
        }
        else if (*key == id_key) {
            bit = SEEN_ID;
            ok = read_int(c, &f->id, &f->id_text);
            f->id_len = c->p - f->id_text;
        }
        else {
            switch (*key) {
            case 's': {
                const char *s;
                Py_ssize_t n;
                bit = SEEN_S;
                ok = read_string(c, &s, &n);
                break;
            }
            case 'p':
                bit = SEEN_P;
                ok = read_decimal_string(c, &f->price);
                break;
            case 'q':
                bit = SEEN_Q;
                ok = read_decimal_string(c, &f->qty);
                break;
            case 'T': {
                const char *s;
                bit = SEEN_T;
                ok = read_int(c, &f->time, &s);
                break;
            }
            case 'm':
                bit = SEEN_M;
                if (c->end - c->p >= 4 && memcmp(c->p, "true", 4) == 0) {
                    f->buyer_is_maker = 1;
                    c->p += 4;
                    ok = 1;
                }
                else if (c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0) {
                    f->buyer_is_maker = 0;
                    c->p += 5;
                    ok = 1;
                }
                else
                    ok = 0;
                break;
            default:
                ok = skip_scalar(c);
            }
        }
        if (!ok || (f->seen & bit))
            return 0; /* a bad value or a repeated key: msgspec decides */
        f->seen |= bit;
        if (expect(c, ','))
            continue;
        if (expect(c, '}'))
            return f->seen == SEEN_ALL;
        return 0;
    }
}

static int
read_frame(PyObject *frame, char id_key, fields_t *f)
{
    if (!PyUnicode_Check(frame) || !PyUnicode_IS_COMPACT_ASCII(frame))
        return 0;
    cursor_t c = {(const char *)PyUnicode_DATA(frame), NULL};
    c.end = c.p + PyUnicode_GET_LENGTH(frame);
    const char *key, *name;
    Py_ssize_t klen, nlen;
    if (!expect(&c, '{') || !read_string(&c, &key, &klen) || klen != 6 || memcmp(key, "stream", 6) != 0 ||
        !expect(&c, ':') || !read_string(&c, &name, &nlen) || !expect(&c, ',') || !read_string(&c, &key, &klen) ||
        klen != 4 || memcmp(key, "data", 4) != 0 || !expect(&c, ':') || !read_payload(&c, id_key, f) ||
        !expect(&c, '}'))
        return 0;
    skip_ws(&c);
    return c.p == c.end;
}

static PyObject *
take(PyObject *const *args, Py_ssize_t nargs, char id_key, PyObject *last_name, int count_jumps)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "expected (frame, ts, state, venue, events)");
        return NULL;
    }
    PyObject *frame = args[0], *ts = args[1], *state = args[2], *venue = args[3], *events = args[4];
    if (!PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "events must be a list");
        return NULL;
    }
    fields_t f;
    long long exchange_ns;
    if (!read_frame(frame, id_key, &f) || __builtin_mul_overflow(f.time, MS, &exchange_ns))
        return PyLong_FromLong(0);

    PyObject *last_obj = PyObject_GetAttr(state, last_name);
    if (last_obj == NULL)
        return NULL;
    int overflow;
    long long last = PyLong_AsLongLongAndOverflow(last_obj, &overflow);
    Py_DECREF(last_obj);
    if (last == -1 && PyErr_Occurred())
        return NULL;
    if (overflow)
        return PyLong_FromLong(0); /* an id beyond 64 bits: the Python path copes */
    if (f.id <= last)
        return PyLong_FromLong(2);
    int result = (count_jumps && f.id != last + 1 && last >= 0) ? 3 : 1;

    PyObject *symbol = PyObject_GetAttr(state, str_symbol);
    if (symbol == NULL)
        return NULL;
    PyObject *values[8] = {
        venue,
        symbol,
        ts,
        PyLong_FromLongLong(exchange_ns),
        PyUnicode_FromStringAndSize(f.id_text, f.id_len),
        PyFloat_FromDouble(f.price),
        PyFloat_FromDouble(f.qty),
        f.buyer_is_maker ? str_sell : str_buy, /* the buyer made the market: the taker sold */
    };
    PyObject *event = NULL, *id = NULL;
    if (values[3] && values[4] && values[5] && values[6])
        event = PyObject_Vectorcall(TradeType, values, 8, NULL);
    for (int i = 3; i < 7; i++)
        Py_XDECREF(values[i]);
    Py_DECREF(symbol);
    if (event == NULL)
        return NULL;
    id = PyLong_FromLongLong(f.id);
    if (id == NULL || PyObject_SetAttr(state, last_name, id) < 0 || PyList_Append(events, event) < 0) {
        Py_XDECREF(id);
        Py_DECREF(event);
        return NULL;
    }
    Py_DECREF(id);
    Py_DECREF(event);
    return PyLong_FromLong(result);
}

/* stream_name(frame): the stream a combined-stream frame is for, read off its first bytes, or None */
static PyObject *
stream_name(PyObject *Py_UNUSED(module), PyObject *frame)
{
    static const char prefix[] = "{\"stream\":\"";
    const Py_ssize_t skip = sizeof(prefix) - 1;
    if (!PyUnicode_CheckExact(frame))
        Py_RETURN_NONE;
    Py_ssize_t n = PyUnicode_GET_LENGTH(frame), end;
    if (PyUnicode_IS_COMPACT_ASCII(frame)) {
        const char *s = (const char *)PyUnicode_DATA(frame);
        if (n <= skip || memcmp(s, prefix, skip) != 0)
            Py_RETURN_NONE;
        const char *quote = memchr(s + skip, '"', n - skip);
        if (quote == NULL)
            Py_RETURN_NONE;
        return PyUnicode_FromStringAndSize(s + skip, quote - (s + skip));
    }
    for (Py_ssize_t i = 0; i < skip; i++) /* any other str: the same, a character at a time */
        if (i >= n || PyUnicode_READ_CHAR(frame, i) != (Py_UCS4)prefix[i])
            Py_RETURN_NONE;
    end = PyUnicode_FindChar(frame, '"', skip, n, 1);
    if (end == -2)
        return NULL;
    if (end == -1)
        Py_RETURN_NONE;
    return PyUnicode_Substring(frame, skip, end);
}

static PyObject *
trade(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    return take(args, nargs, 't', str_last_trade_id, 1);
}

static PyObject *
agg_trade(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    return take(args, nargs, 'a', str_last_agg_id, 0);
}

static PyMethodDef methods[] = {
    {"stream_name", stream_name, METH_O, "stream_name(frame) -> the stream of a combined-stream frame, or None"},
    {"trade", (PyCFunction)(void (*)(void))trade, METH_FASTCALL,
     "trade(frame, ts, state, venue, events) -> 0 not read, 1 appended, 2 duplicate, 3 appended after an id jump"},
    {"agg_trade", (PyCFunction)(void (*)(void))agg_trade, METH_FASTCALL,
     "agg_trade(frame, ts, state, venue, events): as trade(), for aggTrade frames (id `a`; jumps not reported)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_frames", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__frames(void)
{
    PyObject *events = PyImport_ImportModule("marketfeed.events");
    if (events == NULL)
        return NULL;
    TradeType = PyObject_GetAttrString(events, "Trade");
    Py_DECREF(events);
    if (TradeType == NULL)
        return NULL;
    init_plain();
    str_buy = PyUnicode_InternFromString("buy");
    str_sell = PyUnicode_InternFromString("sell");
    str_symbol = PyUnicode_InternFromString("symbol");
    str_last_trade_id = PyUnicode_InternFromString("last_trade_id");
    str_last_agg_id = PyUnicode_InternFromString("last_agg_id");
    if (!str_buy || !str_sell || !str_symbol || !str_last_trade_id || !str_last_agg_id)
        return NULL;
    return PyModule_Create(&module_def);
}
