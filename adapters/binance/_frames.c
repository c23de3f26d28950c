/* Binance's combined-stream frames in C, for the hot path of BinanceAdapter.on_frame:
 *
 * - stream_name(frame): the stream a frame is for, read off its first bytes (str.find's argument
 *   parsing alone cost ~700 instructions a frame);
 * - trade(frame, ts, state, venue, events) and agg_trade(...): read a `trade` / `aggTrade` frame, drop
 *   it if its id (`t`: state.last_trade_id, `a`: state.last_agg_id) was seen, and append the
 *   marketfeed.events.Trade, in one call; the msgspec path costs two and a half times as much, most of
 *   it building and reading the intermediate wire Struct. Returns 0: not the plain form (nothing
 *   done); 1: appended; 2: a duplicate (nothing appended); 3: appended after an id jump (trade only);
 * - depth_update(frame): the frame's schemas.DepthUpdate, a drop-in for
 *   depth_frame_decoder.decode(frame).data.
 *
 * Only the plain form Binance sends is read here: {"stream":"...","data":{...}} with scalar values or
 * price levels, no escapes, integers within 64 bits, and prices and quantities as decimal strings of
 * at most 19 digits that fit in 53 bits. Anything else goes to msgspec before any state is touched,
 * and msgspec decides (and reports) what the frame is. Within that form the result is exactly the
 * msgspec path's: digits below 2^53 over a power of ten <= 1e22 are two exact doubles, and one IEEE
 * division rounds their quotient correctly, as msgspec's parser does. tests/unit/test_binance_frames.py
 * runs both paths on the same frames, fuzzed ones included, and compares the results.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <stdint.h>
#include <string.h>

#include "_json.h"

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "the decimal reader needs double arithmetic without excess precision (SSE2 or similar)"
#endif

static PyObject *TradeType; /* marketfeed.events.Trade */
static PyObject *str_buy, *str_sell, *str_symbol, *str_last_trade_id, *str_last_agg_id;

#define MS 1000000LL /* ns per ms */
#define MAX_EXACT_MANTISSA (1ULL << 53)

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Digits onto m (m = m * 10 + digit, wrapping past 19 digits, which the caller rejects); returns
 * the end of the run. Eight at a time where they are ("SWAR", as in fast_float): prices and
 * quantities on Binance have eight decimals, and a digit at a time cost ~11 instructions. */
static inline const char *
read_digits(const char *p, const char *end, uint64_t *m)
{
    uint64_t v = *m;
#if PY_LITTLE_ENDIAN
    while (end - p >= 8) {
        uint64_t chunk;
        memcpy(&chunk, p, 8);
        /* all eight bytes '0'..'9': high nibbles 3, and adding 6 carries out of none */
        if ((chunk & 0xF0F0F0F0F0F0F0F0ULL) != 0x3030303030303030ULL ||
            ((chunk + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) != 0x3030303030303030ULL)
            break;
        chunk -= 0x3030303030303030ULL;
        chunk = chunk * 10 + (chunk >> 8); /* pairs of digits */
        chunk = (((chunk & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
                 (((chunk >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
        v = v * 100000000ULL + (uint32_t)chunk;
        p += 8;
    }
#endif
    unsigned digit;
    while (p < end && (digit = (unsigned)(*p - '0')) <= 9) {
        v = v * 10 + digit;
        p++;
    }
    *m = v;
    return p;
}

/* a decimal string "-?D+(.D+)?" of at most 19 digits whose digits, read as an integer, are below 2^53:
 * the correctly rounded double, in one pass over the text */
static int
read_decimal_string(cursor_t *c, double *out)
{
    skip_ws(c);
    const char *p = c->p, *end = c->end;
    if (p >= end || *p != '"')
        return 0;
    p++;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    const char *int_start = p;
    uint64_t m = 0;
    p = read_digits(p, end, &m);
    Py_ssize_t int_len = p - int_start, frac = 0;
    if (int_len == 0 || (int_len > 1 && *int_start == '0'))
        return 0;
    if (p < end && *p == '.') {
        const char *frac_start = ++p;
        p = read_digits(p, end, &m);
        frac = p - frac_start;
        if (frac == 0)
            return 0;
    }
    /* <= 19 digits: m did not overflow; m < 2^53 and frac <= 22: m and 10^frac are exact doubles */
    if (p >= end || *p != '"' || int_len + frac > 19 || frac > 22 || m >= MAX_EXACT_MANTISSA)
        return 0;
    if (neg && m == 0)
        return 0; /* msgspec reads "-0" as 0.0 but "-0.0" as -0.0: a negative zero is left to it */
    double v = (double)m / POW10[frac];
    *out = neg ? -v : v;
    c->p = p + 1;
    return 1;
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

/* {"stream":"...","data": : the cursor is left at the payload */
static int
open_frame(PyObject *frame, cursor_t *c)
{
    if (!PyUnicode_Check(frame) || !PyUnicode_IS_COMPACT_ASCII(frame))
        return 0;
    c->p = (const char *)PyUnicode_DATA(frame);
    c->end = c->p + PyUnicode_GET_LENGTH(frame);
    const char *key, *name;
    Py_ssize_t klen, nlen;
    return expect(c, '{') && read_string(c, &key, &klen) && klen == 6 && memcmp(key, "stream", 6) == 0 &&
           expect(c, ':') && read_string(c, &name, &nlen) && expect(c, ',') && read_string(c, &key, &klen) &&
           klen == 4 && memcmp(key, "data", 4) == 0 && expect(c, ':');
}

/* the frame's closing brace, and nothing after it */
static int
close_frame(cursor_t *c)
{
    if (!expect(c, '}'))
        return 0;
    skip_ws(c);
    return c->p == c->end;
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
    cursor_t c;
    if (!open_frame(frame, &c) || !read_payload(&c, id_key, &f) || !close_frame(&c) ||
        __builtin_mul_overflow(f.time, MS, &exchange_ns))
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
        ascii_str(f.id_text, f.id_len),
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

/* -- depth ---------------------------------------------------------------------------------------- */

/* [["price","qty"], ...] as a list of (float, float) tuples; NULL with no error set: not the plain form */
static PyObject *
read_levels(cursor_t *c)
{
    if (!expect(c, '['))
        return NULL;
    PyObject *levels = PyList_New(0);
    if (levels == NULL)
        return NULL;
    if (expect(c, ']'))
        return levels;
    for (;;) {
        double price, qty;
        if (!expect(c, '[') || !read_decimal_string(c, &price) || !expect(c, ',') || !read_decimal_string(c, &qty) ||
            !expect(c, ']'))
            goto not_plain;
        PyObject *level = PyTuple_New(2), *p = PyFloat_FromDouble(price), *q = PyFloat_FromDouble(qty);
        if (level == NULL || p == NULL || q == NULL) {
            Py_XDECREF(level);
            Py_XDECREF(p);
            Py_XDECREF(q);
            goto error;
        }
        PyTuple_SET_ITEM(level, 0, p);
        PyTuple_SET_ITEM(level, 1, q);
        PyObject_GC_UnTrack(level); /* two floats: never part of a cycle, so the collector need not see it */
        int failed = PyList_Append(levels, level);
        Py_DECREF(level);
        if (failed)
            goto error;
        if (expect(c, ','))
            continue;
        if (expect(c, ']'))
            return levels;
        goto not_plain;
    }
not_plain: /* and on an error, which is then set */
error:
    Py_DECREF(levels);
    return NULL;
}

typedef struct {
    long long E, U, u, pu, T;
    PyObject *s, *b, *a;
    unsigned seen;
} depth_t;

enum { D_E = 1, D_S = 2, D_FIRST = 4, D_LAST = 8, D_B = 16, D_A = 32, D_PU = 64, D_T = 128, D_REQUIRED = 63 };

/* the data object of a diff; 1: read, 0: not the plain form, -1: error set (objects in d are released) */
static int
read_depth(cursor_t *c, depth_t *d)
{
    d->seen = 0;
    d->s = d->b = d->a = NULL;
    if (!expect(c, '{') || expect(c, '}'))
        goto not_plain;
    for (;;) {
        const char *key, *text;
        Py_ssize_t klen, tlen;
        if (!read_string(c, &key, &klen) || !expect(c, ':'))
            goto not_plain;
        unsigned bit;
        int ok;
        PyObject **obj = NULL;
        skip_ws(c);
        if (klen == 2 && key[0] == 'p' && key[1] == 'u') {
            bit = D_PU;
            ok = read_int(c, &d->pu, &text);
        }
        else if (klen == 2 && key[0] == 't' && key[1] == 's')
            goto not_plain; /* our own field: msgspec would set it, so it decides */
        else if (klen != 1) {
            bit = 0;
            ok = skip_scalar(c);
        }
        else {
            switch (*key) {
            case 'E':
                bit = D_E;
                ok = read_int(c, &d->E, &text);
                break;
            case 'U':
                bit = D_FIRST;
                ok = read_int(c, &d->U, &text);
                break;
            case 'u':
                bit = D_LAST;
                ok = read_int(c, &d->u, &text);
                break;
            case 'T':
                bit = D_T;
                ok = read_int(c, &d->T, &text);
                break;
            case 's':
                bit = D_S;
                ok = read_string(c, &text, &tlen) && !(d->seen & D_S);
                if (ok && (d->s = ascii_str(text, tlen)) == NULL)
                    goto error;
                break;
            case 'b':
            case 'a':
                bit = *key == 'b' ? D_B : D_A;
                obj = *key == 'b' ? &d->b : &d->a;
                ok = !(d->seen & bit);
                if (ok && (*obj = read_levels(c)) == NULL) {
                    if (PyErr_Occurred())
                        goto error;
                    ok = 0;
                }
                break;
            default:
                bit = 0;
                ok = skip_scalar(c);
            }
        }
        if (!ok || (d->seen & bit))
            goto not_plain; /* a bad value or a repeated key: msgspec decides */
        d->seen |= bit;
        if (expect(c, ','))
            continue;
        if (expect(c, '}') && (d->seen & D_REQUIRED) == D_REQUIRED)
            return 1;
        goto not_plain;
    }
not_plain:
    Py_CLEAR(d->s);
    Py_CLEAR(d->b);
    Py_CLEAR(d->a);
    return 0;
error:
    Py_CLEAR(d->s);
    Py_CLEAR(d->b);
    Py_CLEAR(d->a);
    return -1;
}

static PyObject *DepthUpdateType; /* schemas.DepthUpdate */
static PyObject *depth_frame_decode; /* schemas.depth_frame_decoder.decode: the msgspec path */
static PyObject *str_data;

static PyObject *
optional_int(unsigned seen, unsigned bit, long long v)
{
    if (seen & bit)
        return PyLong_FromLongLong(v);
    Py_RETURN_NONE;
}

/* the frame's DepthUpdate if it is in the plain form; NULL with no error set if it is not */
static PyObject *
read_plain_depth(PyObject *frame)
{
    cursor_t c;
    depth_t d;
    int r = open_frame(frame, &c) ? read_depth(&c, &d) : 0;
    if (r <= 0)
        return NULL;
    if (!close_frame(&c)) {
        Py_DECREF(d.s);
        Py_DECREF(d.b);
        Py_DECREF(d.a);
        return NULL;
    }
    PyObject *values[8] = {
        PyLong_FromLongLong(d.E), d.s, PyLong_FromLongLong(d.U), PyLong_FromLongLong(d.u), d.b, d.a,
        optional_int(d.seen, D_PU, d.pu), optional_int(d.seen, D_T, d.T),
    };
    PyObject *update = NULL;
    if (values[0] && values[2] && values[3] && values[6] && values[7])
        update = PyObject_Vectorcall(DepthUpdateType, values, 8, NULL);
    for (int i = 0; i < 8; i++)
        Py_XDECREF(values[i]);
    return update;
}

/* depth_update(frame): the frame's DepthUpdate, read here when plain, else by msgspec (whose
 * DecodeError propagates): a drop-in for depth_frame_decoder.decode(frame).data */
static PyObject *
depth_update(PyObject *Py_UNUSED(module), PyObject *frame)
{
    PyObject *update = read_plain_depth(frame);
    if (update != NULL || PyErr_Occurred())
        return update;
    PyObject *whole = PyObject_CallOneArg(depth_frame_decode, frame);
    if (whole == NULL)
        return NULL;
    PyObject *payload = PyObject_GetAttr(whole, str_data);
    Py_DECREF(whole);
    return payload;
}

/* plain_depth_update(frame): the DepthUpdate if the frame is in the plain form, else None (for tests) */
static PyObject *
plain_depth_update(PyObject *Py_UNUSED(module), PyObject *frame)
{
    PyObject *update = read_plain_depth(frame);
    if (update != NULL || PyErr_Occurred())
        return update;
    Py_RETURN_NONE;
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
        return ascii_str(s + skip, quote - (s + skip));
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
    {"depth_update", depth_update, METH_O, "depth_update(frame) -> DepthUpdate: a drop-in for depth_frame_decoder.decode(frame).data"},
    {"plain_depth_update", plain_depth_update, METH_O, "plain_depth_update(frame) -> DepthUpdate, or None if not the plain form"},
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
    PyObject *schemas = PyImport_ImportModule("marketfeed.adapters.binance.schemas");
    if (schemas == NULL)
        return NULL;
    DepthUpdateType = PyObject_GetAttrString(schemas, "DepthUpdate");
    PyObject *decoder = PyObject_GetAttrString(schemas, "depth_frame_decoder");
    Py_DECREF(schemas);
    if (DepthUpdateType == NULL || decoder == NULL)
        return NULL;
    depth_frame_decode = PyObject_GetAttrString(decoder, "decode");
    Py_DECREF(decoder);
    str_data = PyUnicode_InternFromString("data");
    if (depth_frame_decode == NULL || str_data == NULL)
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
