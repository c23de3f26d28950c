/* Small JSON readers shared by the compiled fast paths (marketfeed/_capture.c,
 * adapters/binance/_frames.c). Each reads only a plain subset of JSON and returns 0 for anything
 * else, so the caller can hand the whole text to msgspec, which decides what it is. */
#ifndef MARKETFEED_JSON_H
#define MARKETFEED_JSON_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

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

static inline void
init_plain(void)
{
    for (int ch = 0x20; ch < 256; ch++)
        plain[ch] = ch != '"' && ch != '\\';
}

/* a string without escapes: its text in [*s, *s + *n) */
static inline int
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

/* a JSON integer that fits in 64 bits, without leading zeros or "-0"; its text in [*s, c->p) */
static inline int
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
    uint64_t v = 0;
    while (p < c->end && *p >= '0' && *p <= '9')
        v = v * 10 + (uint64_t)(*p++ - '0');
    Py_ssize_t n = p - digits;
    if (n == 0 || n > 19 || (n > 1 && *digits == '0') || (neg && v == 0) || v > (uint64_t)INT64_MAX + neg)
        return 0; /* 19 digits cannot wrap a uint64; beyond int64, msgspec decides */
    if (p < c->end && (*p == '.' || *p == 'e' || *p == 'E'))
        return 0; /* not an integer: msgspec decides */
    *out = neg ? (long long)(0 - v) : (long long)v;
    *s = start;
    c->p = p;
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
static inline int
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
static inline int
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

/* a str of n bytes known to be ASCII (taken from an ASCII str): no decoding pass */
static inline PyObject *
ascii_str(const char *s, Py_ssize_t n)
{
    PyObject *str = PyUnicode_New(n, 127);
    if (str != NULL)
        memcpy(PyUnicode_DATA(str), s, n);
    return str;
}

#endif
