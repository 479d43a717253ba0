/* fastproxy.audit._encode: the worker's audit request record, in C.
 *
 * Theory of operation
 * -------------------
 * request_record() is RecordEncoder.request_reference from fastproxy/audit/record.py (msgspec
 * encoding a RequestRecord), given the clock reading instead of reading the clock. For every
 * input it either returns exactly the reference's bytes or returns None, and the caller then
 * takes the reference path with the same clock reading; it never returns different bytes.
 * tests/audit/test_encode_native.py holds the two equal on fixed and generated records. Any
 * change to one side needs the same change on the other (VERSION and RECORD_MAX are exported
 * so that the tests can check those two).
 *
 * What msgspec writes, and so what is written here (checked by the tests, not assumed):
 *  - a str: '"' and '\' after a backslash; \b \t \n \f \r as those short escapes; every other
 *    character below 0x20 as \u00xx with lower-case hex; everything else, DEL, '/' and all of
 *    non-ASCII included, as its UTF-8.
 *  - an int in decimal; None as null (for any field: a Struct does not check types when built).
 *  - would_deny and mask_skipped only when not None, after masked (omit_defaults); truncated is
 *    written only by the reference, which alone cuts records.
 *  - latency_ms: the reference writes the double d = int(x * 1000.0 + 0.5) / 1000.0, that is
 *    K / 1000 for an integer K, and msgspec writes the shortest decimal that reads back as d
 *    (ryu), in fixed notation when its point falls between 5 places before the first digit and
 *    16 after it. For |K| < 10^15, K * 10^-3 has at most 15 significant digits, and two
 *    different decimals of at most 15 significant digits never read back as the same double
 *    (DBL_DIG), so the shortest decimal is K's own digits with the point three places from the
 *    right and trailing zeros dropped ("0.001", "1.92", "100.0", never "-0.0": K == 0 is +0.0).
 *    x * 1000.0 and + 0.5 are rounded separately (volatile), as Python's two operations are:
 *    a fused multiply-add could round differently.
 *  - ts: what RecordEncoder._timestamp writes: gmtime_r of the second (time.gmtime calls it
 *    too) as "%Y-%m-%dT%H:%M:%S.", the microseconds zero-padded to six digits, then "Z". The part
 *    up to the second is kept in a static and formatted again only when the second changes; it
 *    is a function of the second alone, so one cache serves every encoder of the process.
 *
 * It returns None (the reference decides, and raises where it raises) for a clock reading that
 * is not an exact int or not in [0, 2^63) ns (1970 to 2262); an int field that is not an exact
 * int (msgspec writes a bool as true) or does not fit int64; a text field that is neither an
 * exact str nor None, or that holds a lone surrogate (the reference writes it as a backslash
 * escape, or raises); a request_id that is neither of those nor exact bytes (the reference decodes bytes
 * as ASCII with U+FFFD for each byte over 0x7f, and so does this); a latency that is not an
 * exact float, not finite or whose K is 10^15 or more in magnitude; and a record longer than
 * RECORD_MAX (the reference cuts it).
 *
 * One pass
 * --------
 * The record is written in one pass into a static buffer of RECORD_MAX + SLACK bytes, then
 * copied into the bytes object (sizing it exactly first, then filling the bytes object, was
 * measured at 1.8 times the time: a second walk over the text and a memcpy call for every
 * piece). Nothing is written past the buffer:
 *  - a key and a value of bounded size (a number, null, the timestamp) take at most SLACK bytes,
 *    and each one starts at or before buffer + RECORD_MAX (checked after every value; past it,
 *    the record is refused);
 *  - a string of n characters takes at most 6n + 2 bytes; when that could pass
 *    buffer + RECORD_MAX, its exact size is measured first and the record is refused when it
 *    does not fit.
 * No Python code runs while the buffer is in use (the values read are exact builtins, read
 * through macros and PyLong_AsLongLongAndOverflow) and the GIL serializes callers; the module
 * does not declare support for a per-interpreter GIL or for running without the GIL.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define VERSION 1              /* record.VERSION; written as the literal "v":1 below */
#define RECORD_MAX (60 * 1024) /* record.RECORD_MAX */
#define SLACK 64               /* more than any key with a bounded value after it (16 + 29) */
#define LATENCY_K_LIMIT 1e15   /* |K| below this: at most 15 significant digits */

static char buffer[RECORD_MAX + SLACK];

static inline char *
put(char *out, const char *s, size_t n)
{
    memcpy(out, s, n);
    return out + n;
}

#define PUT_LIT(out, lit) put((out), (lit), sizeof(lit) - 1)

/* -- text ------------------------------------------------------------------------------------- */

/* How msgspec writes an ASCII character: 0 as itself, 'u' as \u00xx, any other letter c as \c. */
#define U 'u'
static const char ESCAPE[128] = {
    U, U, U,   U, U, U, U, U, 'b', 't', 'n', U, 'f', 'r', U, U,
    U, U, U,   U, U, U, U, U, U,   U,   U,   U, U,   U,   U, U,
    0, 0, '"', ['\\'] = '\\',
};
#undef U

static const char HEX[] = "0123456789abcdef";

/* One byte of ASCII text, or of a bytes request_id (over 0x7f: U+FFFD, as decode("ascii",
 * "replace") makes it). */
static inline char *
put_byte(char *out, unsigned char c)
{
    if (c >= 0x80) {
        return PUT_LIT(out, "\xef\xbf\xbd");
    }
    char e = ESCAPE[c];
    if (e == 0) {
        *out = (char)c;
        return out + 1;
    }
    if (e == 'u') {
        out = PUT_LIT(out, "\\u00");
        out[0] = HEX[c >> 4];
        out[1] = HEX[c & 0xf];
        return out + 2;
    }
    out[0] = '\\';
    out[1] = e;
    return out + 2;
}

static inline Py_ssize_t
byte_size(unsigned char c)
{
    if (c >= 0x80) {
        return 3;
    }
    char e = ESCAPE[c];
    return e == 0 ? 1 : (e == 'u' ? 6 : 2);
}

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Whether any of the 8 bytes in x is not written as itself: over 0x7f, below 0x20, '"' or '\'.
 * (x - ONES) & ~x & HIGHS is nonzero exactly when some byte of x is 0; with 0x20 * ONES, when
 * some byte is below 0x20, given no byte over 0x7f (those are caught first). */
static inline int
special8(uint64_t x)
{
    uint64_t quote = x ^ (ONES * '"'), backslash = x ^ (ONES * '\\');
    return ((x & HIGHS) | ((x - ONES * 0x20) & ~x & HIGHS) | ((quote - ONES) & ~quote & HIGHS)
            | ((backslash - ONES) & ~backslash & HIGHS))
           != 0;
}

/* n bytes of ASCII (or of a bytes request_id): 8 at a time while they need no escape. */
static char *
put_ascii(char *out, const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        if (special8(x)) {
            for (int k = 0; k < 8; k++) {
                out = put_byte(out, p[i + k]);
            }
        }
        else {
            memcpy(out, &x, 8);
            out += 8;
        }
    }
    for (; i < n; i++) {
        out = put_byte(out, p[i]);
    }
    return out;
}

/* The bytes str s takes, quotes included; -1 if it holds a lone surrogate. */
static Py_ssize_t
str_size(PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), size = 2;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            size += byte_size((unsigned char)c);
        }
        else if (c < 0x800) {
            size += 2;
        }
        else if (c < 0x10000) {
            if (Py_UNICODE_IS_SURROGATE(c)) {
                return -1;
            }
            size += 3;
        }
        else {
            size += 4;
        }
    }
    return size;
}

/* str s, quoted and escaped, ending at most at limit; NULL if it does not fit or is not UTF-8. */
static char *
put_str(char *out, const char *limit, PyObject *s)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(s) < 0) {
        return NULL;
    }
#endif
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), room = limit - out;
    if (n + 2 > room) {
        return NULL;
    }
    if (6 * n + 2 > room) {
        Py_ssize_t size = str_size(s);
        if (size < 0 || size > room) {
            return NULL;
        }
    }
    *out++ = '"';
    if (PyUnicode_IS_ASCII(s)) {
        out = put_ascii(out, (const unsigned char *)PyUnicode_DATA(s), n);
    }
    else {
        int kind = PyUnicode_KIND(s);
        const void *data = PyUnicode_DATA(s);
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c < 0x80) {
                out = put_byte(out, (unsigned char)c);
            }
            else if (c < 0x800) {
                *out++ = (char)(0xc0 | (c >> 6));
                *out++ = (char)(0x80 | (c & 0x3f));
            }
            else if (c < 0x10000) {
                if (Py_UNICODE_IS_SURROGATE(c)) {
                    return NULL; /* not UTF-8: the reference escapes it */
                }
                *out++ = (char)(0xe0 | (c >> 12));
                *out++ = (char)(0x80 | ((c >> 6) & 0x3f));
                *out++ = (char)(0x80 | (c & 0x3f));
            }
            else {
                *out++ = (char)(0xf0 | (c >> 18));
                *out++ = (char)(0x80 | ((c >> 12) & 0x3f));
                *out++ = (char)(0x80 | ((c >> 6) & 0x3f));
                *out++ = (char)(0x80 | (c & 0x3f));
            }
        }
    }
    *out++ = '"';
    return out;
}

/* bytes b as the str b.decode("ascii", "replace"), quoted and escaped; NULL if it does not fit. */
static char *
put_bytes(char *out, const char *limit, PyObject *b)
{
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(b);
    Py_ssize_t n = PyBytes_GET_SIZE(b), room = limit - out;
    if (n + 2 > room) {
        return NULL;
    }
    if (6 * n + 2 > room) {
        Py_ssize_t size = 2;
        for (Py_ssize_t i = 0; i < n; i++) {
            size += byte_size(p[i]);
        }
        if (size > room) {
            return NULL;
        }
    }
    *out++ = '"';
    out = put_ascii(out, p, n);
    *out++ = '"';
    return out;
}

/* A str or None (and exact bytes too when bytes_ok); NULL for anything else. */
static char *
put_text(char *out, const char *limit, PyObject *o, int bytes_ok)
{
    if (PyUnicode_CheckExact(o)) {
        return put_str(out, limit, o);
    }
    if (o == Py_None) {
        return PUT_LIT(out, "null");
    }
    if (bytes_ok && PyBytes_CheckExact(o)) {
        return put_bytes(out, limit, o);
    }
    return NULL;
}

/* -- numbers ---------------------------------------------------------------------------------- */

static char *
put_digits(char *out, unsigned long long u)
{
    int len = 1;
    for (unsigned long long t = u; t >= 10; t /= 10) {
        len++;
    }
    char *end = out + len;
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    return out + len;
}

/* An exact int that fits int64 into *x: 0; -1 otherwise (with an exception set on an error). */
static int
read_int(PyObject *o, long long *x)
{
    if (!PyLong_CheckExact(o)) {
        return -1;
    }
    int overflow;
    *x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (*x == -1 && PyErr_Occurred())) {
        return -1;
    }
    return 0;
}

static char *
put_int(char *out, PyObject *o)
{
    long long x;
    if (read_int(o, &x) < 0) {
        return NULL;
    }
    if (x < 0) {
        *out++ = '-';
        return put_digits(out, 0ULL - (unsigned long long)x);
    }
    return put_digits(out, (unsigned long long)x);
}

/* latency_ms as msgspec writes int(x * 1000.0 + 0.5) / 1000.0 (see the theory of operation). */
static char *
put_latency(char *out, PyObject *o)
{
    if (!PyFloat_CheckExact(o)) {
        return NULL;
    }
    volatile double scaled = PyFloat_AS_DOUBLE(o) * 1000.0;
    volatile double shifted = scaled + 0.5;
    double t = shifted;
    if (!(t > -LATENCY_K_LIMIT && t < LATENCY_K_LIMIT)) {
        return NULL; /* also NaN and the infinities, on which int() raises */
    }
    long long k = (long long)t; /* towards zero, as int() */
    if (k < 0) {
        *out++ = '-';
        k = -k;
    }
    out = put_digits(out, (unsigned long long)(k / 1000));
    *out++ = '.';
    int frac = (int)(k % 1000);
    *out++ = (char)('0' + frac / 100);
    if (frac % 100 != 0) {
        *out++ = (char)('0' + frac / 10 % 10);
        if (frac % 10 != 0) {
            *out++ = (char)('0' + frac % 10);
        }
    }
    return out;
}

/* -- ts --------------------------------------------------------------------------------------- */

/* The second that cached_prefix ("YYYY-MM-DDTHH:MM:SS") is for; -1: none yet. */
static long long cached_second = -1;
static char cached_prefix[19];

static inline void
two_digits(char *out, int x)
{
    out[0] = (char)('0' + x / 10 % 10);
    out[1] = (char)('0' + x % 10);
}

/* Formats cached_prefix for second; -1 where the reference must do it. */
static int
cache_second(long long second)
{
    time_t t = (time_t)second;
    struct tm tm;
    if ((long long)t != second || gmtime_r(&t, &tm) == NULL) {
        return -1;
    }
    int year = tm.tm_year + 1900;
    if (year < 1000 || year > 9999) {
        return -1; /* %Y would not write four digits */
    }
    char *p = cached_prefix;
    two_digits(p, year / 100);
    two_digits(p + 2, year % 100);
    p[4] = '-';
    two_digits(p + 5, tm.tm_mon + 1);
    p[7] = '-';
    two_digits(p + 8, tm.tm_mday);
    p[10] = 'T';
    two_digits(p + 11, tm.tm_hour);
    p[13] = ':';
    two_digits(p + 14, tm.tm_min);
    p[16] = ':';
    two_digits(p + 17, tm.tm_sec); /* 60 in a leap second, as %S writes it */
    cached_second = second;
    return 0;
}

/* The clock reading o (ns since the epoch) as the quoted timestamp. */
static char *
put_timestamp(char *out, PyObject *o)
{
    long long ns;
    if (read_int(o, &ns) < 0 || ns < 0) {
        return NULL; /* a negative reading: Python's floor division is not C's */
    }
    long long us = ns / 1000;
    long long second = us / 1000000;
    if (second != cached_second && cache_second(second) < 0) {
        return NULL;
    }
    *out++ = '"';
    out = put(out, cached_prefix, sizeof(cached_prefix));
    *out++ = '.';
    int micro = (int)(us % 1000000);
    for (int i = 5; i >= 0; i--) {
        out[i] = (char)('0' + micro % 10);
        micro /= 10;
    }
    out += 6;
    return PUT_LIT(out, "Z\"");
}

/* -- request_record --------------------------------------------------------------------------- */

/* The arguments: RecordEncoder.request's, with the clock reading, boot and worker first. */
enum {
    A_NOW,
    A_BOOT,
    A_WORKER,
    A_SEQ,
    A_REQUEST_ID,
    A_CLIENT_IP,
    A_METHOD,
    A_PATH,
    A_ROUTE,
    A_PRINCIPAL,
    A_AUTH,
    A_DECISION,
    A_REASON,
    A_MODE,
    A_WOULD_DENY,
    A_STATUS,
    A_UPSTREAM,
    A_LATENCY_MS,
    A_BYTES_IN,
    A_BYTES_OUT,
    A_MASKED,
    A_MASK_SKIPPED,
    N_ARGS,
};

PyDoc_STRVAR(request_record_doc,
"request_record($module, now, boot, worker, seq, request_id, client_ip, method, path, route,\n"
"               principal, auth, decision, reason, mode, would_deny, status, upstream,\n"
"               latency_ms, bytes_in, bytes_out, masked, mask_skipped, /)\n"
"--\n"
"\n"
"The request record RecordEncoder.request_reference(now, ...) encodes, byte for byte, or None\n"
"when the input is one this function leaves to the reference (see _encode.c).");

static PyObject *
request_record(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != N_ARGS) {
        PyErr_Format(PyExc_TypeError, "request_record() takes %d positional arguments (%zd given)",
                     N_ARGS, nargs);
        return NULL;
    }
    char *out = buffer;
    const char *limit = buffer + RECORD_MAX;

/* A key, then a value: put_* returns NULL for a value left to the reference. */
#define KEY(lit) (out = PUT_LIT(out, lit))
#define VALUE(call)                                                                               \
    do {                                                                                          \
        out = (call);                                                                             \
        if (out == NULL || out > limit) {                                                         \
            goto not_mine;                                                                        \
        }                                                                                         \
    } while (0)
#define TEXT(name, arg)                                                                           \
    do {                                                                                          \
        KEY(",\"" name "\":");                                                                    \
        VALUE(put_text(out, limit, args[arg], 0));                                                \
    } while (0)
#define INT(name, arg)                                                                            \
    do {                                                                                          \
        KEY(",\"" name "\":");                                                                    \
        VALUE(put_int(out, args[arg]));                                                           \
    } while (0)

    KEY("{\"v\":1,\"ts\":");
    VALUE(put_timestamp(out, args[A_NOW]));
    TEXT("boot", A_BOOT);
    INT("worker", A_WORKER);
    INT("seq", A_SEQ);
    KEY(",\"request_id\":");
    VALUE(put_text(out, limit, args[A_REQUEST_ID], 1));
    TEXT("client_ip", A_CLIENT_IP);
    TEXT("method", A_METHOD);
    TEXT("path", A_PATH);
    TEXT("route", A_ROUTE);
    TEXT("principal", A_PRINCIPAL);
    TEXT("auth", A_AUTH);
    TEXT("decision", A_DECISION);
    TEXT("reason", A_REASON);
    TEXT("mode", A_MODE);
    INT("status", A_STATUS);
    TEXT("upstream", A_UPSTREAM);
    KEY(",\"latency_ms\":");
    VALUE(put_latency(out, args[A_LATENCY_MS]));
    INT("bytes_in", A_BYTES_IN);
    INT("bytes_out", A_BYTES_OUT);
    INT("masked", A_MASKED);
    /* omit_defaults: these two only when set */
    if (args[A_WOULD_DENY] != Py_None) {
        TEXT("would_deny", A_WOULD_DENY);
    }
    if (args[A_MASK_SKIPPED] != Py_None) {
        TEXT("mask_skipped", A_MASK_SKIPPED);
    }
    if (out == limit) {
        goto not_mine; /* no room for the brace */
    }
    *out++ = '}';
    return PyBytes_FromStringAndSize(buffer, out - buffer);

#undef KEY
#undef VALUE
#undef TEXT
#undef INT

not_mine:
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- module ----------------------------------------------------------------------------------- */

static PyMethodDef encode_methods[] = {
    {"request_record", (PyCFunction)(void (*)(void))request_record, METH_FASTCALL,
     request_record_doc},
    {NULL, NULL, 0, NULL},
};

static int
encode_exec(PyObject *module)
{
    if (PyModule_AddIntConstant(module, "VERSION", VERSION) < 0) {
        return -1;
    }
    return PyModule_AddIntConstant(module, "RECORD_MAX", RECORD_MAX);
}

static PyModuleDef_Slot encode_slots[] = {
    {Py_mod_exec, encode_exec},
    {0, NULL},
};

static struct PyModuleDef encode_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastproxy.audit._encode",
    .m_doc = "The worker's audit request record in C; see record.py and the theory of operation "
             "in _encode.c.",
    .m_size = 0,
    .m_methods = encode_methods,
    .m_slots = encode_slots,
};

PyMODINIT_FUNC
PyInit__encode(void)
{
    return PyModuleDef_Init(&encode_module);
}
