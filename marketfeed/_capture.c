/* Capture records in C: the `recv` line, nine in ten of a capture's lines, read straight into a
 * marketfeed.capture.Recv. msgspec reads such a line at ~12,000 instructions, most of them spent
 * unescaping the frame (every quote in it is escaped); the loop here costs about half.
 *
 * Only the plain form is read here: an object of exactly the keys ev ("recv"), ts (an integer), conn
 * (a string without escapes) and data (a string of ASCII with the short escapes \" \\ \/ \b \f \n \r
 * \t), in any order. Any other line, including every malformed one, goes to msgspec, which decides
 * what it is and raises its DecodeError: tests/unit/test_capture_c.py holds the two to the same results.
 *
 * configure(Recv, fallback) is called once by marketfeed.capture; read_record(line) then returns the
 * line's record: a Recv read here, or whatever fallback(line) returns.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_json.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

static PyObject *RecvType, *fallback;
static PyObject *last_conn; /* connection names repeat: the last one is reused */

/* where the unescaped frame is put together before it becomes a str */
static char *scratch;
static Py_ssize_t scratch_size;

/* what follows a backslash in the plain form, and what it stands for (0: not plain) */
static char unescape[256];
/* bytes copied as they are: ASCII from the space on, but the quote and the backslash */
static unsigned char literal[256];

/* the escaped ASCII string at the cursor as a new str; NULL without an error set: not plain */
static PyObject *
read_escaped_string(cursor_t *c)
{
    skip_ws(c);
    if (c->p >= c->end || *c->p != '"')
        return NULL;
    const unsigned char *p = (const unsigned char *)c->p + 1, *end = (const unsigned char *)c->end;
    if (scratch_size < end - p) {
        Py_ssize_t size = (end - p) * 2;
        char *bigger = PyMem_Realloc(scratch, size);
        if (bigger == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        scratch = bigger;
        scratch_size = size;
    }
    char *out = scratch;
    for (;;) {
#ifdef __SSE2__
        /* sixteen bytes at a time up to the next quote, backslash, control or non-ASCII byte (the
         * signed compare takes bytes >= 0x80 as negative); the store may run past the run, within
         * scratch, since the unescaped text is never longer than the escaped */
        const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(' ');
        while (end - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)p);
            __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                        _mm_cmplt_epi8(v, space));
            _mm_storeu_si128((__m128i *)out, v);
            unsigned mask = (unsigned)_mm_movemask_epi8(stop);
            unsigned n = mask ? (unsigned)__builtin_ctz(mask) : 16;
            p += n;
            out += n;
            if (mask)
                break;
        }
#endif
        while (p < end && literal[*p])
            *out++ = (char)*p++;
        if (p >= end)
            return NULL;
        if (*p == '"')
            break;
        if (*p != '\\' || p + 1 >= end || !unescape[p[1]])
            return NULL; /* a control character, non-ASCII, \u or a bad escape: msgspec decides */
        *out++ = unescape[p[1]];
        p += 2;
    }
    c->p = (const char *)p + 1;
    return ascii_str(scratch, out - scratch);
}

static PyObject *
conn_name(const char *s, Py_ssize_t n)
{
    if (last_conn != NULL && PyUnicode_GET_LENGTH(last_conn) == n && memcmp(PyUnicode_DATA(last_conn), s, n) == 0) {
        Py_INCREF(last_conn);
        return last_conn;
    }
    PyObject *name = PyUnicode_DecodeASCII(s, n, NULL);
    if (name == NULL) {
        PyErr_Clear();
        return NULL; /* not ASCII: msgspec decides */
    }
    Py_XSETREF(last_conn, name);
    Py_INCREF(name);
    return name;
}

enum { K_EV = 1, K_TS = 2, K_CONN = 4, K_DATA = 8, K_ALL = 15 };

/* the Recv of a plain recv line; NULL without an error set: not plain (with one: configure() missing) */
static PyObject *
read_plain_recv(PyObject *line)
{
    if (RecvType == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "marketfeed._capture.configure() was not called");
        return NULL;
    }
    char *buf;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(line, &buf, &len) < 0) {
        PyErr_Clear();
        return NULL;
    }
    cursor_t c = {buf, buf + len};
    PyObject *conn = NULL, *data = NULL, *ts = NULL, *record = NULL;
    long long ts_value = 0;
    unsigned seen = 0;
    if (!expect(&c, '{'))
        return NULL;
    for (;;) {
        const char *key, *text;
        Py_ssize_t klen, tlen;
        unsigned bit = 0;
        if (!read_string(&c, &key, &klen) || !expect(&c, ':'))
            goto done;
        if (klen == 2 && memcmp(key, "ev", 2) == 0) {
            bit = K_EV;
            if (!read_string(&c, &text, &tlen) || tlen != 4 || memcmp(text, "recv", 4) != 0)
                goto done;
        }
        else if (klen == 2 && memcmp(key, "ts", 2) == 0) {
            bit = K_TS;
            if (!read_int(&c, &ts_value, &text))
                goto done;
        }
        else if (klen == 4 && memcmp(key, "conn", 4) == 0) {
            bit = K_CONN;
            if (seen & bit || !read_string(&c, &text, &tlen) || (conn = conn_name(text, tlen)) == NULL)
                goto done;
        }
        else if (klen == 4 && memcmp(key, "data", 4) == 0) {
            bit = K_DATA;
            if (seen & bit || (data = read_escaped_string(&c)) == NULL)
                goto done;
        }
        else
            goto done; /* another key (b64, or one we do not know): msgspec decides */
        if (seen & bit)
            goto done;
        seen |= bit;
        if (expect(&c, ','))
            continue;
        if (!expect(&c, '}') || seen != K_ALL)
            goto done;
        skip_ws(&c);
        if (c.p != c.end)
            goto done;
        break;
    }
    ts = PyLong_FromLongLong(ts_value);
    if (ts != NULL) {
        PyObject *values[3] = {ts, conn, data};
        record = PyObject_Vectorcall(RecvType, values, 3, NULL);
    }
done:
    Py_XDECREF(ts);
    Py_XDECREF(conn);
    Py_XDECREF(data);
    return record;
}

/* read_record(line): the line's record, read here if it is a plain recv line, else fallback(line) */
static PyObject *
read_record(PyObject *Py_UNUSED(module), PyObject *line)
{
    PyObject *record = read_plain_recv(line);
    if (record != NULL || PyErr_Occurred())
        return record;
    return PyObject_CallOneArg(fallback, line);
}

/* plain_recv(line): the Recv if the line is a plain recv line, else None (for tests) */
static PyObject *
plain_recv(PyObject *Py_UNUSED(module), PyObject *line)
{
    PyObject *record = read_plain_recv(line);
    if (record != NULL || PyErr_Occurred())
        return record;
    Py_RETURN_NONE;
}

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *recv_type, *fallback_fn;
    if (!PyArg_ParseTuple(args, "OO:configure", &recv_type, &fallback_fn))
        return NULL;
    Py_INCREF(recv_type);
    Py_INCREF(fallback_fn);
    Py_XSETREF(RecvType, recv_type);
    Py_XSETREF(fallback, fallback_fn);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "configure(Recv, fallback): the record type, and the reader of other lines"},
    {"read_record", read_record, METH_O, "read_record(line: bytes) -> the record (a plain recv line read here)"},
    {"plain_recv", plain_recv, METH_O, "plain_recv(line: bytes) -> Recv, or None if not a plain recv line"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_capture", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__capture(void)
{
    init_plain();
    for (int ch = 0x20; ch < 0x80; ch++)
        literal[ch] = ch != '"' && ch != '\\';
    static const char pairs[][2] = {{'"', '"'}, {'\\', '\\'}, {'/', '/'}, {'b', '\b'}, {'f', '\f'}, {'n', '\n'}, {'r', '\r'}, {'t', '\t'}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        unescape[(unsigned char)pairs[i][0]] = pairs[i][1];
    return PyModule_Create(&module_def);
}
