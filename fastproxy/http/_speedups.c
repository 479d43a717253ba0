/* fastproxy.http._speedups: the per-request head checks and rewrites, in C.
 *
 * Theory of operation
 * -------------------
 * Every function is a byte-for-byte twin of pure-Python code that stays the reference and the
 * fallback; tests/http/test_speedups.py, test_speedups_request.py and test_speedups_callbacks.py
 * check them against each other on fixed and generated heads. Any change to one side needs the
 * same change on the other.
 *
 * response_head() is parse_response_head + choose_framing + build_response_head from
 * fastproxy/http/response.py. Its input is a head llhttp accepted, so every header line is
 * "name:value\r\n" with a token name. The structure is still checked (a bare CR or LF, an empty
 * or colon-less line, a missing blank line raise ValueError) so that no input can read out of
 * bounds. One head llhttp accepts is refused too: one with CR or LF before "HTTP/", which
 * response.py would turn into a corrupt status line. Whenever a head is not refused, the result
 * is the Python's, whatever the bytes.
 *
 * Like the Python it has two paths, whose results differ only for heads llhttp refuses (a space
 * before the colon, a repeated Content-Length): when no rare header is present, the fast path
 * cuts the first "Content-Length:" and a lone plain "Connection:" line; anything else takes the
 * slow path, which cuts every hop-by-hop line and, when Connection names headers, those too. A
 * rare header is what response.py's _RARE matches: keep-alive, proxy-[a-z-]*, te, trailer,
 * transfer-encoding, upgrade or x-request-id, then optional SP/HTAB and the colon.
 *
 * media_fields() is response.media_fields_reference: the two header values masking decides on,
 * found in one pass instead of a lower-cased copy and two searches.
 *
 * request_head() is forward.upstream_request_head with X-Forwarded-For and X-Forwarded-Proto
 * already resolved by the caller.
 *
 * scan_request() is request.parse_head (with _split_target) less the RequestHead: the same
 * checks in the same order, so that a head with several faults gets the same (status, reason),
 * raised as HeadError(status, reason, detail) for the caller to turn into ProtocolError. Its
 * regular expressions are replaced by scans that match the same strings (see each one). Its
 * (name, value) pairs are taken, and held, before anything is allocated that could run the
 * garbage collector, and so finalizers that might change raw_headers; a Content-Length that is
 * not plain digits is read by int() itself, on an exact bytes object. Its work is done by
 * scan_head(), which RequestCallbacks calls directly, raising ProtocolError where scan_request
 * raises HeadError.
 *
 * RequestCallbacks is request.RequestCallbacks: httptools looks its methods up once per parser,
 * and as C methods they run with no Python frame per callback (see the section's own comment).
 * One difference that shows in no result: it reads a request's HTTP version from the bytes
 * being fed (``chunk``) when its request line starts them, where the Python asks llhttp (see
 * version_in_chunk).
 *
 * Every output is sized exactly first and filled second; nothing is written past the size
 * computed, and no Python code runs between the two passes (all arguments are exact builtin
 * types or subclasses read through macros), so the inputs cannot change in between.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

/* -- small byte helpers (ASCII only, as bytes.lower() and bytes.strip() are) ------------------ */

static inline unsigned char
lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* What bytes.strip() and int() treat as whitespace. */
static inline int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* s[0:n] equals the lower-case literal lit, ignoring ASCII case. */
static int
eq_lower(const char *s, Py_ssize_t n, const char *lit, Py_ssize_t lit_n)
{
    if (n != lit_n) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (lower((unsigned char)s[i]) != (unsigned char)lit[i]) {
            return 0;
        }
    }
    return 1;
}

#define EQ(s, n, lit) eq_lower((s), (n), (lit), (Py_ssize_t)(sizeof(lit) - 1))

static void
strip(const char **s, Py_ssize_t *n)
{
    const char *p = *s;
    Py_ssize_t len = *n;
    while (len > 0 && is_space((unsigned char)p[0])) {
        p++;
        len--;
    }
    while (len > 0 && is_space((unsigned char)p[len - 1])) {
        len--;
    }
    *s = p;
    *n = len;
}

/* Adds n to *total; raises OverflowError rather than wrapping. */
static int
add_len(Py_ssize_t *total, Py_ssize_t n)
{
    if (n > PY_SSIZE_T_MAX - *total) {
        PyErr_SetString(PyExc_OverflowError, "head too large");
        return -1;
    }
    *total += n;
    return 0;
}

static inline char *
put(char *out, const char *s, Py_ssize_t n)
{
    memcpy(out, s, (size_t)n);
    return out + n;
}

#define PUT_LIT(out, lit) put((out), (lit), (Py_ssize_t)(sizeof(lit) - 1))
#define LIT_LEN(lit) ((Py_ssize_t)(sizeof(lit) - 1))

/* -- response_head ---------------------------------------------------------------------------- */

enum {
    K_OTHER,
    K_CONNECTION,
    K_CONTENT_LENGTH,
    K_KEEP_ALIVE,
    K_PROXY_CONNECTION,
    K_PROXY_AUTHORIZATION,
    K_PROXY_OTHER, /* any other proxy-[a-z-]*: rare, but not cut */
    K_TE,
    K_TRAILER,
    K_TRANSFER_ENCODING,
    K_UPGRADE,
    K_X_REQUEST_ID,
};

enum { FRAMING_NONE = 0, FRAMING_LENGTH = 1, FRAMING_CHUNKED = 2, FRAMING_CLOSE = 3 };

/* One header line: [start, start + len) is the line without its CRLF. */
typedef struct {
    const char *start;
    Py_ssize_t len;
    Py_ssize_t colon; /* index of the first ':' */
    int kind;
    int exact; /* the name is followed by ':' directly, no SP/HTAB in between */
} Line;

static int
classify(const char *name, Py_ssize_t n)
{
    switch (n) {
    case 2:
        if (EQ(name, n, "te")) return K_TE;
        break;
    case 7:
        if (EQ(name, n, "trailer")) return K_TRAILER;
        if (EQ(name, n, "upgrade")) return K_UPGRADE;
        break;
    case 10:
        if (EQ(name, n, "connection")) return K_CONNECTION;
        if (EQ(name, n, "keep-alive")) return K_KEEP_ALIVE;
        break;
    case 12:
        if (EQ(name, n, "x-request-id")) return K_X_REQUEST_ID;
        break;
    case 14:
        if (EQ(name, n, "content-length")) return K_CONTENT_LENGTH;
        break;
    case 16:
        if (EQ(name, n, "proxy-connection")) return K_PROXY_CONNECTION;
        break;
    case 17:
        if (EQ(name, n, "transfer-encoding")) return K_TRANSFER_ENCODING;
        break;
    case 19:
        if (EQ(name, n, "proxy-authorization")) return K_PROXY_AUTHORIZATION;
        break;
    default:
        break;
    }
    if (n >= 6 && EQ(name, 6, "proxy-")) {
        for (Py_ssize_t i = 6; i < n; i++) {
            unsigned char c = lower((unsigned char)name[i]);
            if (!((c >= 'a' && c <= 'z') || c == '-')) {
                return K_OTHER;
            }
        }
        return K_PROXY_OTHER;
    }
    return K_OTHER;
}

static inline int
is_rare(int kind)
{
    return kind != K_OTHER && kind != K_CONNECTION && kind != K_CONTENT_LENGTH;
}

static inline int
is_cut(int kind)
{
    return kind != K_OTHER && kind != K_PROXY_OTHER;
}

/* Reads the line starting at p (end: the CR of the blank line ending the head). Returns the
 * start of the next line, or NULL with ValueError set when the head is malformed. */
static const char *
next_line(const char *p, const char *end, Line *line)
{
    Py_ssize_t avail = end - p;
    const char *cr = memchr(p, '\r', (size_t)avail);
    if (cr == NULL || cr + 1 >= end || cr[1] != '\n') {
        PyErr_SetString(PyExc_ValueError, "response head: header line without CRLF");
        return NULL;
    }
    Py_ssize_t len = cr - p;
    if (len == 0 || memchr(p, '\n', (size_t)len) != NULL) {
        PyErr_SetString(PyExc_ValueError, "response head: empty line or bare LF in the headers");
        return NULL;
    }
    const char *colon = memchr(p, ':', (size_t)len);
    if (colon == NULL) {
        PyErr_SetString(PyExc_ValueError, "response head: header line without a colon");
        return NULL;
    }
    Py_ssize_t name_len = colon - p;
    while (name_len > 0 && (p[name_len - 1] == ' ' || p[name_len - 1] == '\t')) {
        name_len--;
    }
    line->start = p;
    line->len = len;
    line->colon = colon - p;
    line->exact = name_len == line->colon;
    line->kind = classify(p, name_len);
    return cr + 2;
}

/* The value after the colon, as response.py slices it (not stripped). */
static inline void
line_value(const Line *line, const char **s, Py_ssize_t *n)
{
    *s = line->start + line->colon + 1;
    *n = line->len - line->colon - 1;
}

/* A Content-Length value as int() reads what llhttp accepts: digits, optionally surrounded by
 * whitespace. A sign or underscores, which int() would also take, are refused (llhttp refuses
 * them first). On success *digits and *n_digits are the canonical decimal (no leading zeros). */
static int
parse_length(const Line *line, const char **digits, Py_ssize_t *n_digits)
{
    const char *s;
    Py_ssize_t n;
    line_value(line, &s, &n);
    strip(&s, &n);
    if (n == 0) {
        goto bad;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            goto bad;
        }
    }
    while (n > 1 && s[0] == '0') {
        s++;
        n--;
    }
    *digits = s;
    *n_digits = n;
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "response head: invalid Content-Length");
    return -1;
}

static PyObject *
length_to_int(const char *digits, Py_ssize_t n)
{
    if (n <= 18) {
        long long value = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            value = value * 10 + (digits[i] - '0');
        }
        return PyLong_FromLongLong(value);
    }
    char *copy = PyMem_Malloc((size_t)n + 1);
    if (copy == NULL) {
        return PyErr_NoMemory();
    }
    memcpy(copy, digits, (size_t)n);
    copy[n] = '\0';
    PyObject *result = PyLong_FromString(copy, NULL, 10);
    PyMem_Free(copy);
    return result;
}

/* The slow path's Connection handling: adds each named header (lower-cased) to *named. */
static int
add_connection_tokens(const Line *line, PyObject **named)
{
    const char *s;
    Py_ssize_t n;
    line_value(line, &s, &n);
    const char *end = s + n;
    while (1) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *stop = comma != NULL ? comma : end;
        const char *token = s;
        Py_ssize_t token_len = stop - s;
        strip(&token, &token_len);
        if (token_len != 0 && !EQ(token, token_len, "close") && !EQ(token, token_len, "keep-alive")) {
            if (*named == NULL && (*named = PySet_New(NULL)) == NULL) {
                return -1;
            }
            PyObject *key = PyBytes_FromStringAndSize(NULL, token_len);
            if (key == NULL) {
                return -1;
            }
            char *k = PyBytes_AS_STRING(key);
            for (Py_ssize_t i = 0; i < token_len; i++) {
                k[i] = (char)lower((unsigned char)token[i]);
            }
            int rc = PySet_Add(*named, key);
            Py_DECREF(key);
            if (rc < 0) {
                return -1;
            }
        }
        if (comma == NULL) {
            return 0;
        }
        s = comma + 1;
    }
}

/* Whether a kept line's name (before the first colon, stripped, lower-cased) is in named. */
static int
is_named(const Line *line, PyObject *named)
{
    const char *name = line->start;
    Py_ssize_t n = line->colon;
    strip(&name, &n);
    PyObject *key = PyBytes_FromStringAndSize(NULL, n);
    if (key == NULL) {
        return -1;
    }
    char *k = PyBytes_AS_STRING(key);
    for (Py_ssize_t i = 0; i < n; i++) {
        k[i] = (char)lower((unsigned char)name[i]);
    }
    int found = PySet_Contains(named, key);
    Py_DECREF(key);
    return found;
}

typedef struct {
    /* The client's header lines: up to three slices of the upstream's (fast path) or one
     * buffer of the slow path. */
    const char *seg[3];
    Py_ssize_t seg_len[3];
    int n_seg;
    char *scratch; /* PyMem buffer behind seg[0] on the slow path, or NULL */
    const char *cl_digits; /* NULL: no Content-Length */
    Py_ssize_t cl_len;
    int chunked;
} Parsed;

/* The slow path: every hop-by-hop line cut, then every header Connection names. */
static int
parse_slow(const char *block, const char *end, Parsed *out)
{
    PyObject *named = NULL;
    Line line;
    const char *p;

    for (p = block; p < end;) {
        if ((p = next_line(p, end, &line)) == NULL) {
            goto error;
        }
        if (line.kind == K_CONTENT_LENGTH) {
            if (parse_length(&line, &out->cl_digits, &out->cl_len) < 0) {
                goto error;
            }
        }
        else if (line.kind == K_TRANSFER_ENCODING) {
            const char *s;
            Py_ssize_t n;
            line_value(&line, &s, &n);
            while (n > 0 && is_space((unsigned char)s[n - 1])) {
                n--;
            }
            out->chunked = n >= 7 && EQ(s + n - 7, 7, "chunked");
        }
        else if (line.kind == K_CONNECTION) {
            if (add_connection_tokens(&line, &named) < 0) {
                goto error;
            }
        }
    }

    /* The kept lines are no longer than the block. */
    out->scratch = PyMem_Malloc((size_t)(end - block) + 1);
    if (out->scratch == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    char *w = out->scratch;
    for (p = block; p < end;) {
        if ((p = next_line(p, end, &line)) == NULL) {
            goto error; /* not reached: the first loop read the same lines */
        }
        if (is_cut(line.kind)) {
            continue;
        }
        if (named != NULL) {
            int found = is_named(&line, named);
            if (found < 0) {
                goto error;
            }
            if (found) {
                continue;
            }
        }
        w = put(w, line.start, line.len + 2);
    }
    out->seg[0] = out->scratch;
    out->seg_len[0] = w - out->scratch;
    out->n_seg = 1;
    Py_XDECREF(named);
    return 0;
error:
    Py_XDECREF(named);
    return -1;
}

/* Splits the header lines of raw (starting at block, up to the blank line at end). */
static int
parse_fields(const char *block, const char *end, Parsed *out)
{
    Line line, cl_line = {0}, conn_line = {0};
    int have_cl = 0, n_conn = 0;

    for (const char *p = block; p < end;) {
        if ((p = next_line(p, end, &line)) == NULL) {
            return -1;
        }
        if (is_rare(line.kind)) {
            return parse_slow(block, end, out);
        }
        if (line.exact) {
            if (line.kind == K_CONTENT_LENGTH && !have_cl) {
                cl_line = line;
                have_cl = 1;
            }
            else if (line.kind == K_CONNECTION && n_conn++ == 0) {
                conn_line = line;
            }
        }
    }
    if (have_cl && parse_length(&cl_line, &out->cl_digits, &out->cl_len) < 0) {
        return -1;
    }
    if (n_conn > 0) {
        const char *s;
        Py_ssize_t n;
        line_value(&conn_line, &s, &n);
        strip(&s, &n);
        if (n_conn > 1 || !(n == 0 || EQ(s, n, "close") || EQ(s, n, "keep-alive"))) {
            return parse_slow(block, end, out);
        }
    }

    /* Cut up to two lines: copy what lies around them. */
    const Line *cuts[2];
    int n_cuts = 0;
    if (have_cl) {
        cuts[n_cuts++] = &cl_line;
    }
    if (n_conn > 0) {
        cuts[n_cuts++] = &conn_line;
    }
    if (n_cuts == 2 && cuts[0]->start > cuts[1]->start) {
        const Line *first = cuts[1];
        cuts[1] = cuts[0];
        cuts[0] = first;
    }
    const char *pos = block;
    for (int i = 0; i < n_cuts; i++) {
        out->seg[out->n_seg] = pos;
        out->seg_len[out->n_seg++] = cuts[i]->start - pos;
        pos = cuts[i]->start + cuts[i]->len + 2;
    }
    out->seg[out->n_seg] = pos;
    out->seg_len[out->n_seg++] = end - pos;
    return 0;
}

PyDoc_STRVAR(response_head_doc,
"response_head($module, raw, request_id, status, is_head, client_http11, keep_alive, /)\n"
"--\n"
"\n"
"The client's response head for an upstream head llhttp accepted, which raw begins with:\n"
"bytes after its blank line are ignored.\n"
"\n"
"Returns (head, framing, content_length or -1, upstream_chunked, keep_alive_after), exactly\n"
"what parse_response_head, choose_framing and build_response_head give together.");

static PyObject *
response_head(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "response_head() takes 6 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *raw_obj = args[0], *rid_obj = args[1], *status_obj = args[2];
    if (!PyBytes_Check(raw_obj) || !PyBytes_Check(rid_obj)) {
        PyErr_SetString(PyExc_TypeError, "response_head(): raw and request_id must be bytes");
        return NULL;
    }
    if (!PyLong_Check(status_obj)) {
        PyErr_SetString(PyExc_TypeError, "response_head(): status must be an int");
        return NULL;
    }
    if (!PyBool_Check(args[3]) || !PyBool_Check(args[4]) || !PyBool_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError,
                        "response_head(): is_head, client_http11 and keep_alive must be bool");
        return NULL;
    }
    int is_head = args[3] == Py_True;
    int client_http11 = args[4] == Py_True;
    int keep_alive = args[5] == Py_True;

    /* Only comparisons with 200, 204 and 304 matter, so an out-of-range status is clamped. */
    int overflow;
    long status = PyLong_AsLongAndOverflow(status_obj, &overflow);
    if (status == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow != 0) {
        status = overflow > 0 ? LONG_MAX : LONG_MIN;
    }

    const char *raw = PyBytes_AS_STRING(raw_obj);
    Py_ssize_t raw_len = PyBytes_GET_SIZE(raw_obj);
    const char *eol = NULL;
    /* The head ends at the first blank line; what follows (the start of the body, as read
     * with the head) is not looked at, so the caller need not cut it off. */
    const char *blank = memmem(raw, (size_t)raw_len, "\r\n\r\n", 4);
    if (blank != NULL) {
        raw_len = blank - raw + 4;
    }
    /* llhttp skips CR and LF before a status line, but response.py does not (it would send
     * "HTTP/1.1HTTP/1.1 200 OK"): such a head is refused here rather than copied. */
    if (blank != NULL && raw_len >= 9 && memcmp(raw, "HTTP/", 5) == 0) {
        /* The first CRLF: raw ends in one, so a CR found is never raw's last byte. */
        eol = memchr(raw, '\r', (size_t)raw_len);
        while (eol[1] != '\n') {
            eol = memchr(eol + 1, '\r', (size_t)(raw + raw_len - eol - 1));
        }
    }
    if (eol == NULL || eol - raw < 8) {
        PyErr_SetString(PyExc_ValueError,
                        "response head: not an HTTP/ status line and headers ending in a blank line");
        return NULL;
    }
    Py_ssize_t status_line_len = eol - raw + 2; /* "HTTP/1.1" + raw[8:]: the same length */

    Parsed parsed = {0};
    PyObject *head = NULL, *length = NULL, *result = NULL;
    if (parse_fields(eol + 2, raw + raw_len - 2, &parsed) < 0) {
        goto done;
    }

    int framing;
    int has_cl = parsed.cl_digits != NULL;
    if (is_head || status == 204 || status == 304 || status < 200) {
        framing = FRAMING_NONE;
    }
    else if (has_cl && !parsed.chunked) {
        framing = FRAMING_LENGTH;
    }
    else {
        framing = client_http11 ? FRAMING_CHUNKED : FRAMING_CLOSE;
    }
    int keep_alive_after = keep_alive && framing != FRAMING_CLOSE;
    int length_line = framing != FRAMING_CHUNKED && framing != FRAMING_CLOSE && has_cl
                      && status != 204;

    Py_ssize_t total = status_line_len;
    Py_ssize_t rid_len = PyBytes_GET_SIZE(rid_obj);
    for (int i = 0; i < parsed.n_seg; i++) {
        total += parsed.seg_len[i]; /* together no longer than raw */
    }
    if (add_len(&total, LIT_LEN("X-Request-Id: ") + 2) < 0 || add_len(&total, rid_len) < 0) {
        goto done;
    }
    if (framing == FRAMING_CHUNKED) {
        total += LIT_LEN("Transfer-Encoding: chunked\r\n");
    }
    else if (length_line) {
        total += LIT_LEN("Content-Length: \r\n") + parsed.cl_len;
    }
    total += keep_alive_after ? 2 : LIT_LEN("Connection: close\r\n\r\n");

    head = PyBytes_FromStringAndSize(NULL, total);
    if (head == NULL) {
        goto done;
    }
    char *w = PyBytes_AS_STRING(head);
    w = PUT_LIT(w, "HTTP/1.1");
    w = put(w, raw + 8, status_line_len - 8);
    for (int i = 0; i < parsed.n_seg; i++) {
        w = put(w, parsed.seg[i], parsed.seg_len[i]);
    }
    w = PUT_LIT(w, "X-Request-Id: ");
    w = put(w, PyBytes_AS_STRING(rid_obj), rid_len);
    w = PUT_LIT(w, "\r\n");
    if (framing == FRAMING_CHUNKED) {
        w = PUT_LIT(w, "Transfer-Encoding: chunked\r\n");
    }
    else if (length_line) {
        w = PUT_LIT(w, "Content-Length: ");
        w = put(w, parsed.cl_digits, parsed.cl_len);
        w = PUT_LIT(w, "\r\n");
    }
    if (keep_alive_after) {
        w = PUT_LIT(w, "\r\n");
    }
    else {
        w = PUT_LIT(w, "Connection: close\r\n\r\n");
    }
    assert(w == PyBytes_AS_STRING(head) + total);

    if (has_cl) {
        length = length_to_int(parsed.cl_digits, parsed.cl_len);
    }
    else {
        length = PyLong_FromLong(-1);
    }
    if (length == NULL) {
        goto done;
    }
    result = PyTuple_New(5);
    if (result == NULL) {
        goto done;
    }
    PyObject *framing_obj = PyLong_FromLong(framing); /* a cached small int: cannot fail */
    if (framing_obj == NULL) {
        Py_CLEAR(result);
        goto done;
    }
    PyTuple_SET_ITEM(result, 0, head);
    PyTuple_SET_ITEM(result, 1, framing_obj);
    PyTuple_SET_ITEM(result, 2, length);
    PyTuple_SET_ITEM(result, 3, PyBool_FromLong(parsed.chunked));
    PyTuple_SET_ITEM(result, 4, PyBool_FromLong(keep_alive_after));
    head = length = NULL; /* owned by result now */
done:
    Py_XDECREF(head);
    Py_XDECREF(length);
    PyMem_Free(parsed.scratch);
    return result;
}

/* -- media_fields ----------------------------------------------------------------------------- */

PyDoc_STRVAR(media_fields_doc,
"media_fields($module, raw, /)\n"
"--\n"
"\n"
"(Content-Type, Content-Encoding) of a response head llhttp accepted: the first value of each,\n"
"stripped, or None when absent; what response.head_field gives for each name.");

static PyObject *
media_fields(PyObject *Py_UNUSED(module), PyObject *raw_obj)
{
    if (!PyBytes_Check(raw_obj)) {
        PyErr_SetString(PyExc_TypeError, "media_fields(): raw must be bytes");
        return NULL;
    }
    const char *raw = PyBytes_AS_STRING(raw_obj);
    const char *end = raw + PyBytes_GET_SIZE(raw_obj);
    const char *value[2] = {NULL, NULL};
    Py_ssize_t value_len[2] = {0, 0};
    /* Every header line follows a LF; a name is what lies between it and the first ':'. */
    const char *p = memchr(raw, '\n', (size_t)(end - raw));
    for (; p != NULL && (value[0] == NULL || value[1] == NULL);
         p = memchr(p + 1, '\n', (size_t)(end - p - 1))) {
        const char *name = p + 1;
        Py_ssize_t room = end - name;
        int which;
        if (room > 12 && name[12] == ':' && EQ(name, 12, "content-type")) {
            which = 0;
        }
        else if (room > 16 && name[16] == ':' && EQ(name, 16, "content-encoding")) {
            which = 1;
        }
        else {
            continue;
        }
        if (value[which] != NULL) {
            continue; /* the first one counts */
        }
        const char *start = name + (which == 0 ? 13 : 17);
        const char *cr = memchr(start, '\r', (size_t)(end - start));
        Py_ssize_t n = (cr != NULL ? cr : end) - start;
        strip(&start, &n);
        value[which] = start;
        value_len[which] = n;
    }
    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        return NULL;
    }
    for (int i = 0; i < 2; i++) {
        PyObject *item;
        if (value[i] == NULL) {
            item = Py_NewRef(Py_None);
        }
        else if ((item = PyBytes_FromStringAndSize(value[i], value_len[i])) == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, i, item);
    }
    return result;
}

/* -- request_head ----------------------------------------------------------------------------- */

/* A header a masked exchange does not forward: Accept-Encoding, Range, If-Range (see
 * request_head_reference). */
static inline int
masking_drops(PyObject *name)
{
    const char *s = PyBytes_AS_STRING(name);
    Py_ssize_t n = PyBytes_GET_SIZE(name);
    return (n == 15 && EQ(s, n, "accept-encoding")) || (n == 5 && EQ(s, n, "range"))
           || (n == 8 && EQ(s, n, "if-range"));
}

/* Length of the header lines of a list or tuple of (bytes, bytes) tuples, less those
 * masking_drops names when masked; -1 with TypeError (or OverflowError) set otherwise. */
static Py_ssize_t
fields_len(PyObject *seq, const char *what, int masked)
{
    if (!PyList_Check(seq) && !PyTuple_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "request_head(): %s must be a list of (bytes, bytes)", what);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i];
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2
            || !PyBytes_Check(PyTuple_GET_ITEM(item, 0))
            || !PyBytes_Check(PyTuple_GET_ITEM(item, 1))) {
            PyErr_Format(PyExc_TypeError,
                         "request_head(): %s must be a list of (bytes, bytes), item %zd is not",
                         what, i);
            return -1;
        }
        if (masked && masking_drops(PyTuple_GET_ITEM(item, 0))) {
            continue;
        }
        if (add_len(&total, PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 0))) < 0
            || add_len(&total, PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 1))) < 0
            || add_len(&total, 4) < 0) {
            return -1;
        }
    }
    return total;
}

static char *
put_fields(char *w, PyObject *seq, int masked)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(items[i], 0);
        PyObject *value = PyTuple_GET_ITEM(items[i], 1);
        if (masked && masking_drops(name)) {
            continue;
        }
        w = put(w, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
        w = PUT_LIT(w, ": ");
        w = put(w, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
        w = PUT_LIT(w, "\r\n");
    }
    return w;
}

PyDoc_STRVAR(request_head_doc,
"request_head($module, method, target, headers, forwarded_for, proto, request_id, extra, chunked, content_length, masked, /)\n"
"--\n"
"\n"
"The upstream's request head, as forward.upstream_request_head builds it.\n"
"\n"
"method is bytes or an ASCII str; forwarded_for and proto are the final X-Forwarded-For and\n"
"X-Forwarded-Proto values; content_length is -1 when the request declares none; masked asks\n"
"for a whole identity-coded document (no Accept-Encoding, Range or If-Range of the client's).");

static PyObject *
request_head(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_Format(PyExc_TypeError, "request_head() takes 10 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *method_obj = args[0], *target = args[1], *headers = args[2];
    PyObject *forwarded_for = args[3], *proto = args[4], *request_id = args[5];
    PyObject *extra = args[6], *chunked_obj = args[7], *length_obj = args[8];
    PyObject *masked_obj = args[9];

    const char *method;
    Py_ssize_t method_len;
    if (PyBytes_Check(method_obj)) {
        method = PyBytes_AS_STRING(method_obj);
        method_len = PyBytes_GET_SIZE(method_obj);
    }
    else if (PyUnicode_Check(method_obj)) {
        /* For an ASCII str this is its own buffer, no copy. */
        method = PyUnicode_AsUTF8AndSize(method_obj, &method_len);
        if (method == NULL) {
            return NULL;
        }
        if (method_len != PyUnicode_GET_LENGTH(method_obj)) {
            PyErr_SetString(PyExc_ValueError, "request_head(): method must be ASCII");
            return NULL;
        }
    }
    else {
        PyErr_SetString(PyExc_TypeError, "request_head(): method must be bytes or str");
        return NULL;
    }
    if (!PyBytes_Check(target) || !PyBytes_Check(forwarded_for) || !PyBytes_Check(proto)
        || !PyBytes_Check(request_id)) {
        PyErr_SetString(PyExc_TypeError,
                        "request_head(): target, forwarded_for, proto and request_id must be bytes");
        return NULL;
    }
    if (!PyBool_Check(chunked_obj) || !PyBool_Check(masked_obj)) {
        PyErr_SetString(PyExc_TypeError, "request_head(): chunked and masked must be bool");
        return NULL;
    }
    if (!PyLong_Check(length_obj)) {
        PyErr_SetString(PyExc_TypeError, "request_head(): content_length must be an int");
        return NULL;
    }
    int chunked = chunked_obj == Py_True;
    int masked = masked_obj == Py_True;

    /* The Content-Length digits, formatted before the headers are measured: PyNumber_ToBase is
     * the only call here that could in principle run other code. */
    char digits_buf[24]; /* a long long has at most 19 digits */
    const char *digits = NULL;
    Py_ssize_t n_digits = 0;
    PyObject *big = NULL, *result = NULL;
    int overflow;
    long long length = PyLong_AsLongLongAndOverflow(length_obj, &overflow);
    if (length == -1 && overflow == 0 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow < 0 || (overflow == 0 && length < -1)) {
        PyErr_SetString(PyExc_ValueError, "request_head(): content_length must be -1 or more");
        return NULL;
    }
    if (!chunked && overflow > 0) {
        big = PyNumber_ToBase(length_obj, 10);
        if (big == NULL) {
            return NULL;
        }
        digits = PyUnicode_AsUTF8AndSize(big, &n_digits);
        if (digits == NULL) {
            goto done;
        }
    }
    else if (!chunked && length >= 0) {
        char *end = digits_buf + sizeof(digits_buf);
        char *d = end;
        unsigned long long v = (unsigned long long)length;
        do {
            *--d = (char)('0' + v % 10);
            v /= 10;
        } while (v != 0);
        digits = d;
        n_digits = end - d;
    }

    Py_ssize_t headers_len = fields_len(headers, "headers", masked);
    if (headers_len < 0) {
        goto done;
    }
    Py_ssize_t extra_len = fields_len(extra, "extra", 0);
    if (extra_len < 0) {
        goto done;
    }
    Py_ssize_t total = 0;
    if (add_len(&total, method_len) < 0
        || add_len(&total, PyBytes_GET_SIZE(target)) < 0
        || add_len(&total, headers_len) < 0
        || add_len(&total, extra_len) < 0
        || add_len(&total, PyBytes_GET_SIZE(forwarded_for)) < 0
        || add_len(&total, PyBytes_GET_SIZE(proto)) < 0
        || add_len(&total, PyBytes_GET_SIZE(request_id)) < 0
        || add_len(&total, n_digits) < 0) {
        goto done;
    }
    Py_ssize_t fixed = LIT_LEN(" ") + LIT_LEN(" HTTP/1.1\r\n")
                       + LIT_LEN("X-Forwarded-For: \r\n") + LIT_LEN("X-Forwarded-Proto: \r\n")
                       + LIT_LEN("X-Request-Id: \r\n") + LIT_LEN("\r\n");
    if (masked) {
        fixed += LIT_LEN("Accept-Encoding: identity\r\n");
    }
    if (chunked) {
        fixed += LIT_LEN("Transfer-Encoding: chunked\r\n");
    }
    else if (digits != NULL) {
        fixed += LIT_LEN("Content-Length: \r\n");
    }
    if (add_len(&total, fixed) < 0) {
        goto done;
    }

    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) {
        goto done;
    }
    char *w = PyBytes_AS_STRING(result);
    w = put(w, method, method_len);
    w = PUT_LIT(w, " ");
    w = put(w, PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target));
    w = PUT_LIT(w, " HTTP/1.1\r\n");
    w = put_fields(w, headers, masked);
    w = PUT_LIT(w, "X-Forwarded-For: ");
    w = put(w, PyBytes_AS_STRING(forwarded_for), PyBytes_GET_SIZE(forwarded_for));
    w = PUT_LIT(w, "\r\nX-Forwarded-Proto: ");
    w = put(w, PyBytes_AS_STRING(proto), PyBytes_GET_SIZE(proto));
    w = PUT_LIT(w, "\r\nX-Request-Id: ");
    w = put(w, PyBytes_AS_STRING(request_id), PyBytes_GET_SIZE(request_id));
    w = PUT_LIT(w, "\r\n");
    w = put_fields(w, extra, 0);
    if (masked) {
        w = PUT_LIT(w, "Accept-Encoding: identity\r\n");
    }
    if (chunked) {
        w = PUT_LIT(w, "Transfer-Encoding: chunked\r\n");
    }
    else if (digits != NULL) {
        w = PUT_LIT(w, "Content-Length: ");
        w = put(w, digits, n_digits);
        w = PUT_LIT(w, "\r\n");
    }
    w = PUT_LIT(w, "\r\n");
    assert(w == PyBytes_AS_STRING(result) + total);
done:
    Py_XDECREF(big);
    return result;
}

/* -- scan_request ----------------------------------------------------------------------------- */

/* What parse_head does with a header, by its lower-cased name. */
enum {
    R_KEEP,              /* passed on */
    R_HOST,              /* passed on, and checked */
    R_DROP,              /* dropped, nothing else: hop-by-hop, X-Auth-*, other X-Forwarded-* */
    R_CONTENT_LENGTH,
    R_TRANSFER_ENCODING,
    R_CONNECTION,
    R_REQUEST_ID,
    R_FORWARDED_FOR,
    R_FORWARDED_PROTO,
    R_EXPECT,
    R_UPGRADE,
    R_AUTHORIZATION,     /* the credential headers: taken out of the list into their own field */
    R_CREDENTIAL,
};

/* request.py's _DROPPED names first, then the X-Forwarded-* / X-Auth-* prefixes. */
static int
classify_request(const char *name, Py_ssize_t n)
{
    switch (n) {
    case 2:
        if (EQ(name, n, "te")) return R_DROP;
        break;
    case 4:
        if (EQ(name, n, "host")) return R_HOST;
        break;
    case 6:
        if (EQ(name, n, "expect")) return R_EXPECT;
        break;
    case 7:
        if (EQ(name, n, "upgrade")) return R_UPGRADE;
        if (EQ(name, n, "trailer")) return R_DROP;
        break;
    case 10:
        if (EQ(name, n, "connection")) return R_CONNECTION;
        if (EQ(name, n, "keep-alive")) return R_DROP;
        break;
    case 12:
        if (EQ(name, n, "x-request-id")) return R_REQUEST_ID;
        break;
    case 13:
        if (EQ(name, n, "authorization")) return R_AUTHORIZATION;
        break;
    case 14:
        if (EQ(name, n, "content-length")) return R_CONTENT_LENGTH;
        break;
    case 15:
        if (EQ(name, n, "x-forwarded-for")) return R_FORWARDED_FOR;
        break;
    case 16:
        if (EQ(name, n, "proxy-connection")) return R_DROP;
        break;
    case 17:
        if (EQ(name, n, "transfer-encoding")) return R_TRANSFER_ENCODING;
        if (EQ(name, n, "x-forwarded-proto")) return R_FORWARDED_PROTO;
        break;
    case 19:
        if (EQ(name, n, "proxy-authorization")) return R_DROP;
        break;
    default:
        break;
    }
    /* Also X-Auth-Subject, -Roles and -Method, which _DROPPED names. */
    if (n >= 7 && (EQ(name, 7, "x-auth-") || (n >= 12 && EQ(name, 12, "x-forwarded-")))) {
        return R_DROP;
    }
    return R_KEEP;
}

/* a[0:n] and b[0:n] are equal once both are lower-cased. */
static int
eq_nocase(const char *a, const char *b, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) {
            return 0;
        }
    }
    return 1;
}

static inline int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline int
is_alnum(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* request.py's _HOST.fullmatch: "[" [0-9A-Fa-f:.]+ "]", or any run of reg-name characters (none
 * at all included), then optionally ":" and any digits. Neither alternative's characters include
 * ":" or "[", so the first character decides the alternative and no backtracking is needed. */
static int
host_matches(const char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    if (n > 0 && s[0] == '[') {
        for (i = 1; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (!(is_digit(c) || (lower(c) >= 'a' && lower(c) <= 'f') || c == ':' || c == '.')) {
                break;
            }
        }
        if (i == 1 || i == n || s[i] != ']') {
            return 0;
        }
        i++;
    }
    else {
        for (; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (!is_alnum(c) && (c == 0 || strchr("._~!$&'()*+,;=%-", c) == NULL)) {
                break;
            }
        }
    }
    if (i == n) {
        return 1;
    }
    if (s[i] != ':') {
        return 0;
    }
    for (i++; i < n; i++) {
        if (!is_digit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

/* request.py's _REQUEST_ID.fullmatch: 1 to 128 of [A-Za-z0-9._-]. */
static int
request_id_ok(const char *s, Py_ssize_t n)
{
    if (n < 1 || n > 128) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != '-') {
            return 0;
        }
    }
    return 1;
}

/* _split_target's dot-segment check, on the path bytes (latin-1 is one byte a character).
 *
 * The Python first replaces %2e %2E %2f %2F %5c %5C by ". . / / \ \", one pattern after the
 * other. Each pattern starts with "%" and holds no other "%", and each replacement is a
 * character no pattern contains, so no two matches overlap and no replacement makes a new
 * match: one left-to-right pass that decodes the six gives the same string. Then
 * _DOT_SEGMENT, (?:^|[/\\])\.{1,2}(?:[/\\;]|$), is searched for: a segment (from the start or
 * after "/" or "\") of one or two dots, ended by "/", "\", ";" (a path parameter) or $. Without MULTILINE, $ also
 * matches before a newline that ends the string; decoding makes no newline, so that is a last
 * path byte "\n". */
static int
has_dot_segment(const char *s, Py_ssize_t n)
{
    int dots = 0; /* dots since the segment began; -1 once it holds anything else */
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%' && n - i > 2) {
            unsigned char hi = (unsigned char)s[i + 1], lo = lower((unsigned char)s[i + 2]);
            if (hi == '2' && lo == 'e') {
                c = '.';
                i += 2;
            }
            else if (hi == '2' && lo == 'f') {
                c = '/';
                i += 2;
            }
            else if (hi == '5' && lo == 'c') {
                c = '\\';
                i += 2;
            }
        }
        if (c == '/' || c == '\\') {
            if (dots == 1 || dots == 2) {
                return 1;
            }
            dots = 0;
        }
        else if (c == '.') {
            if (dots >= 0) {
                dots++;
            }
        }
        else if (c == ';' && (dots == 1 || dots == 2)) {
            return 1; /* "..;x": a dot segment with a path parameter, as Tomcat reads it */
        }
        else {
            if (c == '\n' && i == n - 1 && (dots == 1 || dots == 2)) {
                return 1;
            }
            dots = -1;
        }
    }
    return dots == 1 || dots == 2;
}

/* int(value.strip()), as parse_head reads Content-Length: a short run of digits directly,
 * anything else (a sign, underscores, many digits, garbage) by int() itself, so that the value or
 * the ValueError is the Python's. */
static PyObject *
content_length(PyObject *value)
{
    const char *s = PyBytes_AS_STRING(value);
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    strip(&s, &n);
    if (n > 0 && n <= 18) {
        long long v = 0;
        Py_ssize_t i = 0;
        for (; i < n && is_digit((unsigned char)s[i]); i++) {
            v = v * 10 + (s[i] - '0');
        }
        if (i == n) {
            return PyLong_FromLongLong(v);
        }
    }
    /* int() of an exact bytes object runs no Python code. */
    PyObject *stripped = PyBytes_FromStringAndSize(s, n);
    if (stripped == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_CallOneArg((PyObject *)&PyLong_Type, stripped);
    Py_DECREF(stripped);
    return result;
}

typedef struct {
    PyObject *head_error;
    PyObject *host_name; /* b"Host" */
    PyObject *callbacks_type;
    /* Interned names of the methods RequestCallbacks calls. */
    PyObject *on_request;
    PyObject *on_body;
    PyObject *on_request_end;
    PyObject *get_method;
    PyObject *get_http_version;
    PyObject *should_keep_alive;
    PyObject *version_10; /* "1.0" and "1.1", as get_http_version spells them */
    PyObject *version_11;
} SpeedupsState;

static inline SpeedupsState *
get_state(PyObject *module)
{
    return (SpeedupsState *)PyModule_GetState(module);
}

/* Raises error_class(status, reason, detail), ProtocolError's arguments: HeadError for
 * scan_request, ProtocolError itself for RequestCallbacks. The instance is made here, as a
 * Python raise would make it. */
static void
head_error(PyObject *error_class, int status, const char *reason, const char *detail)
{
    PyObject *exc = PyObject_CallFunction(error_class, "iss", status, reason, detail);
    if (exc == NULL) {
        return;
    }
    if (PyExceptionInstance_Check(exc)) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    }
    else {
        PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
    }
    Py_DECREF(exc);
}

typedef struct {
    const char *s;
    Py_ssize_t n;
} Span;

typedef struct {
    PyObject *item; /* a strong reference to the (name, value) tuple */
    int kind;
} ReqField;

#define FIELDS_ON_STACK 32
#define TOKENS_ON_STACK 16

static inline PyObject *
field_name(const ReqField *f)
{
    return PyTuple_GET_ITEM(f->item, 0);
}

static inline PyObject *
field_value(const ReqField *f)
{
    return PyTuple_GET_ITEM(f->item, 1);
}

/* Adds the headers a Connection value names to *tokens (the stripped tokens but close,
 * keep-alive and empty ones, which parse_head takes out of the set). */
static int
add_named(PyObject *value, Span **tokens, Py_ssize_t *n_tokens, Py_ssize_t *cap, Span *on_stack)
{
    const char *s = PyBytes_AS_STRING(value);
    const char *end = s + PyBytes_GET_SIZE(value);
    while (1) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *stop = comma != NULL ? comma : end;
        const char *token = s;
        Py_ssize_t token_len = stop - s;
        strip(&token, &token_len);
        if (token_len != 0 && !EQ(token, token_len, "close") && !EQ(token, token_len, "keep-alive")) {
            if (*n_tokens == *cap) {
                if (*cap > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(Span)) {
                    PyErr_NoMemory();
                    return -1;
                }
                Py_ssize_t new_cap = *cap * 2;
                Span *grown;
                if (*tokens == on_stack) {
                    grown = PyMem_Malloc((size_t)new_cap * sizeof(Span));
                    if (grown != NULL) {
                        memcpy(grown, on_stack, (size_t)*n_tokens * sizeof(Span));
                    }
                }
                else {
                    grown = PyMem_Realloc(*tokens, (size_t)new_cap * sizeof(Span));
                }
                if (grown == NULL) {
                    PyErr_NoMemory();
                    return -1;
                }
                *tokens = grown;
                *cap = new_cap;
            }
            (*tokens)[*n_tokens].s = token;
            (*tokens)[(*n_tokens)++].n = token_len;
        }
        if (comma == NULL) {
            return 0;
        }
        s = comma + 1;
    }
}

static int
connection_names(const char *name, Py_ssize_t n, const Span *tokens, Py_ssize_t n_tokens)
{
    for (Py_ssize_t i = 0; i < n_tokens; i++) {
        if (tokens[i].n == n && eq_nocase(tokens[i].s, name, n)) {
            return 1;
        }
    }
    return 0;
}

PyDoc_STRVAR(scan_request_doc,
"scan_request($module, method, url, version, raw_headers, keep_alive, max_body_bytes,\n"
"             credential_header, /)\n"
"--\n"
"\n"
"request.parse_head's checks and header stripping, without building the RequestHead.\n"
"\n"
"Returns (target, path, headers, content_length, chunked, host, request_id, forwarded_for,\n"
"forwarded_proto, expect_continue, authorization, api_key); raises HeadError(status, reason,\n"
"detail) where parse_head raises ProtocolError(status, reason, detail), with the same status\n"
"and reason.");

/* scan_request's argument checks, shared with RequestCallbacks (whose version and keep_alive
 * come from the parser). */
static int
check_scan_args(PyObject *method, PyObject *url, PyObject *version, PyObject *raw,
                PyObject *keep_alive, PyObject *max_body)
{
    if (!PyUnicode_Check(method) || !PyUnicode_Check(version)) {
        PyErr_SetString(PyExc_TypeError, "scan_request(): method and version must be str");
        return -1;
    }
    if (!PyBytes_Check(url)) {
        PyErr_SetString(PyExc_TypeError, "scan_request(): url must be bytes");
        return -1;
    }
    if (!PyList_Check(raw) && !PyTuple_Check(raw)) {
        PyErr_SetString(PyExc_TypeError,
                        "scan_request(): raw_headers must be a list of (bytes, bytes)");
        return -1;
    }
    if (!PyBool_Check(keep_alive)) {
        PyErr_SetString(PyExc_TypeError, "scan_request(): keep_alive must be bool");
        return -1;
    }
    if (!PyLong_Check(max_body)) {
        PyErr_SetString(PyExc_TypeError, "scan_request(): max_body_bytes must be an int");
        return -1;
    }
    return 0;
}

enum { SCAN_RESULTS = 12 };

/* scan_request's work on checked arguments: on success out[] holds new references to its
 * twelve results and 0 is returned; a refusal raises error_class(status, reason, detail).
 * credential is the API key header's lower-cased name (exact bytes), or NULL for none. */
static int
scan_head(SpeedupsState *st, PyObject *error_class, PyObject *url, PyObject *version,
          PyObject *raw, PyObject *max_body, PyObject *credential, PyObject **out)
{
    ReqField fields_on_stack[FIELDS_ON_STACK];
    Span tokens_on_stack[TOKENS_ON_STACK];
    ReqField *fields = fields_on_stack;
    Span *tokens = tokens_on_stack;
    Py_ssize_t n_fields = 0, n_tokens = 0, tokens_cap = TOKENS_ON_STACK;
    PyObject *length = NULL, *forwarded_for = NULL;
    PyObject *target = NULL, *path = NULL, *authority = NULL, *headers = NULL;
    int rc = -1;

    /* Every field is held from here on: allocating a tuple or list below may run the garbage
     * collector, and with it finalizers that could change raw_headers. */
    Py_ssize_t n_raw = PySequence_Fast_GET_SIZE(raw);
    if (n_raw > FIELDS_ON_STACK) {
        if ((size_t)n_raw > PY_SSIZE_T_MAX / sizeof(ReqField)) {
            PyErr_NoMemory();
            return -1;
        }
        fields = PyMem_Malloc((size_t)n_raw * sizeof(ReqField));
        if (fields == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    PyObject **items = PySequence_Fast_ITEMS(raw);
    for (; n_fields < n_raw; n_fields++) {
        PyObject *item = items[n_fields];
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2
            || !PyBytes_Check(PyTuple_GET_ITEM(item, 0))
            || !PyBytes_Check(PyTuple_GET_ITEM(item, 1))) {
            PyErr_Format(PyExc_TypeError,
                         "scan_request(): raw_headers must be a list of (bytes, bytes), "
                         "item %zd is not", n_fields);
            goto done;
        }
        fields[n_fields].item = Py_NewRef(item);
    }

    int http11 = PyUnicode_CompareWithASCIIString(version, "1.1") == 0;
    if (!http11 && PyUnicode_CompareWithASCIIString(version, "1.0") != 0) {
        head_error(error_class, 400, "bad_version", "HTTP version not supported");
        goto done;
    }

    /* _split_target: the origin-form target is url[start:stop], after a "/" when add_slash; its
     * path ends at path_stop. */
    const char *u = PyBytes_AS_STRING(url);
    Py_ssize_t url_len = PyBytes_GET_SIZE(url);
    Py_ssize_t start = 0;
    int add_slash = 0;
    const char *auth = NULL;
    Py_ssize_t auth_len = 0;
    if (url_len == 0 || u[0] != '/') {
        Py_ssize_t scheme;
        if (url_len >= 7 && EQ(u, 7, "http://")) {
            scheme = 7;
        }
        else if (url_len >= 8 && EQ(u, 8, "https://")) {
            scheme = 8;
        }
        else {
            head_error(error_class, 400, "bad_target",
                       "request target is not origin or absolute form");
            goto done;
        }
        auth = u + scheme;
        while (scheme + auth_len < url_len && auth[auth_len] != '/' && auth[auth_len] != '?'
               && auth[auth_len] != '#') {
            auth_len++;
        }
        if (auth_len == 0 || memchr(auth, '@', (size_t)auth_len) != NULL
            || !host_matches(auth, auth_len)) {
            head_error(error_class, 400, "bad_target", "bad authority in absolute-form target");
            goto done;
        }
        start = scheme + auth_len;
        /* url[start] is then "?" or "#", or the end: the path is the "/" alone. */
        add_slash = start == url_len || u[start] != '/';
    }
    const char *hash = memchr(u + start, '#', (size_t)(url_len - start));
    Py_ssize_t stop = hash != NULL ? hash - u : url_len;
    const char *query = memchr(u + start, '?', (size_t)(stop - start));
    Py_ssize_t path_stop = query != NULL ? query - u : stop;
    if (!add_slash && has_dot_segment(u + start, path_stop - start)) {
        head_error(error_class, 400, "bad_path", "dot segment in path");
        goto done;
    }

    /* The headers, in order: only Content-Length, Host and Expect can fail here. */
    Py_ssize_t host_at = -1, te_at = -1, request_id_at = -1, proto_at = -1;
    Py_ssize_t authorization_at = -1, credential_at = -1;
    int n_te = 0, upgrade = 0, expect_continue = 0;
    const char *cred = credential != NULL ? PyBytes_AS_STRING(credential) : NULL;
    Py_ssize_t cred_len = credential != NULL ? PyBytes_GET_SIZE(credential) : -1;
    for (Py_ssize_t i = 0; i < n_fields; i++) {
        PyObject *name = field_name(&fields[i]), *value = field_value(&fields[i]);
        int kind = classify_request(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
        if (kind == R_KEEP && PyBytes_GET_SIZE(name) == cred_len
            && eq_nocase(PyBytes_AS_STRING(name), cred, cred_len)) {
            kind = R_CREDENTIAL;
        }
        fields[i].kind = kind;
        switch (kind) {
        case R_AUTHORIZATION:
            if (authorization_at >= 0) {
                head_error(error_class, 400, "bad_credentials", "repeated Authorization header");
                goto done;
            }
            authorization_at = i;
            break;
        case R_CREDENTIAL:
            if (credential_at >= 0) {
                head_error(error_class, 400, "bad_credentials", "repeated API key header");
                goto done;
            }
            credential_at = i;
            break;
        case R_HOST:
            if (host_at >= 0) {
                head_error(error_class, 400, "bad_host", "repeated Host header");
                goto done;
            }
            host_at = i;
            break;
        case R_CONTENT_LENGTH:
            Py_XSETREF(length, content_length(value));
            if (length == NULL) {
                goto done;
            }
            break;
        case R_TRANSFER_ENCODING:
            n_te++;
            te_at = i;
            break;
        case R_CONNECTION:
            if (add_named(value, &tokens, &n_tokens, &tokens_cap, tokens_on_stack) < 0) {
                goto done;
            }
            break;
        case R_REQUEST_ID:
            request_id_at = request_id_ok(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)) ? i : -1;
            break;
        case R_FORWARDED_FOR:
            if (forwarded_for == NULL) {
                forwarded_for = Py_NewRef(value);
            }
            else {
                Py_ssize_t have = PyBytes_GET_SIZE(forwarded_for), add = PyBytes_GET_SIZE(value);
                if (add > PY_SSIZE_T_MAX - 2 - have) {
                    PyErr_SetString(PyExc_OverflowError, "X-Forwarded-For too long");
                    goto done;
                }
                PyObject *joined = PyBytes_FromStringAndSize(NULL, have + 2 + add);
                if (joined == NULL) {
                    goto done;
                }
                char *w = PyBytes_AS_STRING(joined);
                w = put(w, PyBytes_AS_STRING(forwarded_for), have);
                w = PUT_LIT(w, ", ");
                put(w, PyBytes_AS_STRING(value), add);
                Py_SETREF(forwarded_for, joined);
            }
            break;
        case R_FORWARDED_PROTO:
            proto_at = i;
            break;
        case R_EXPECT:
            /* RFC 9110 10.1.1: an expectation in an HTTP/1.0 request is ignored. */
            if (http11) {
                const char *s = PyBytes_AS_STRING(value);
                Py_ssize_t n = PyBytes_GET_SIZE(value);
                strip(&s, &n);
                if (!EQ(s, n, "100-continue")) {
                    head_error(error_class, 400, "bad_expect", "unsupported Expect");
                    goto done;
                }
                expect_continue = 1;
            }
            break;
        case R_UPGRADE:
            upgrade = 1;
            break;
        default:
            break;
        }
    }

    int chunked = 0;
    if (n_te > 0) {
        /* Two or more are joined with "," and can never strip to a lone "chunked". */
        const char *s = NULL;
        Py_ssize_t n = 0;
        if (n_te == 1) {
            s = PyBytes_AS_STRING(field_value(&fields[te_at]));
            n = PyBytes_GET_SIZE(field_value(&fields[te_at]));
            strip(&s, &n);
        }
        if (!http11 || n_te != 1 || !EQ(s, n, "chunked")) {
            head_error(error_class, 400, "bad_framing",
                       "Transfer-Encoding other than a lone chunked");
            goto done;
        }
        chunked = 1;
    }
    if (http11 && host_at < 0) {
        head_error(error_class, 400, "bad_host", "HTTP/1.1 request without Host");
        goto done;
    }
    if (auth == NULL && host_at >= 0) {
        PyObject *host = field_value(&fields[host_at]);
        if (!host_matches(PyBytes_AS_STRING(host), PyBytes_GET_SIZE(host))) {
            head_error(error_class, 400, "bad_host", "Host is not a valid host[:port]");
            goto done;
        }
    }
    if (upgrade) {
        int has_body = chunked;
        if (!has_body && length != NULL && (has_body = PyObject_IsTrue(length)) < 0) {
            goto done;
        }
        if (has_body) {
            head_error(error_class, 400, "bad_upgrade", "Upgrade request with a body");
            goto done;
        }
    }
    if (length != NULL) {
        /* int's own comparison, whatever subclass of int max_body_bytes is. */
        PyObject *over = PyLong_Type.tp_richcompare(length, max_body, Py_GT);
        if (over == NULL) {
            goto done;
        }
        int is_over = over == Py_True;
        Py_DECREF(over);
        if (is_over) {
            head_error(error_class, 413, "too_large",
                       "declared Content-Length over max_body_bytes");
            goto done;
        }
    }

    /* The headers passed on: the absolute form's authority first as Host, in place of the
     * client's, then the kept ones; any of them that Connection names is cut, except Host. */
    int insert_host = auth != NULL;
    Py_ssize_t n_kept = insert_host;
    for (Py_ssize_t i = 0; i < n_fields; i++) {
        ReqField *f = &fields[i];
        if (f->kind == R_HOST && auth == NULL) {
            n_kept++;
            continue;
        }
        if (f->kind == R_KEEP) {
            const char *name = PyBytes_AS_STRING(field_name(f));
            if (!connection_names(name, PyBytes_GET_SIZE(field_name(f)), tokens, n_tokens)) {
                n_kept++;
                continue;
            }
        }
        f->kind = R_DROP;
    }
    headers = PyList_New(n_kept);
    if (headers == NULL) {
        goto done;
    }
    Py_ssize_t at = 0;
    if (auth != NULL) {
        authority = PyBytes_FromStringAndSize(auth, auth_len);
        if (authority == NULL) {
            goto done;
        }
        if (insert_host) {
            PyObject *pair = PyTuple_Pack(2, st->host_name, authority);
            if (pair == NULL) {
                goto done;
            }
            PyList_SET_ITEM(headers, at++, pair);
        }
    }
    for (Py_ssize_t i = 0; i < n_fields; i++) {
        ReqField *f = &fields[i];
        if (f->kind == R_DROP) { /* as every field not passed on is now */
            continue;
        }
        PyObject *pair;
        if (PyTuple_CheckExact(f->item)) {
            pair = Py_NewRef(f->item);
        }
        else if ((pair = PyTuple_Pack(2, field_name(f), field_value(f))) == NULL) {
            goto done;
        }
        PyList_SET_ITEM(headers, at++, pair);
    }
    assert(at == n_kept);

    if (start == 0 && stop == url_len) {
        target = Py_NewRef(url);
    }
    else if (add_slash) {
        target = PyBytes_FromStringAndSize(NULL, stop - start + 1);
        if (target != NULL) {
            char *w = PyBytes_AS_STRING(target);
            w = PUT_LIT(w, "/");
            put(w, u + start, stop - start);
        }
    }
    else {
        target = PyBytes_FromStringAndSize(u + start, stop - start);
    }
    if (target == NULL) {
        goto done;
    }
    path = add_slash ? PyUnicode_FromStringAndSize("/", 1)
                     : PyUnicode_DecodeLatin1(u + start, path_stop - start, NULL);
    if (path == NULL) {
        goto done;
    }

    PyObject *host = authority != NULL ? authority
                     : host_at >= 0    ? field_value(&fields[host_at])
                                       : Py_None;
    PyObject *request_id = request_id_at >= 0 ? field_value(&fields[request_id_at]) : Py_None;
    PyObject *proto = proto_at >= 0 ? field_value(&fields[proto_at]) : Py_None;
    PyObject *authorization = authorization_at >= 0 ? field_value(&fields[authorization_at]) : Py_None;
    PyObject *api_key = credential_at >= 0 ? field_value(&fields[credential_at]) : Py_None;
    out[0] = target;
    out[1] = path;
    out[2] = headers;
    out[3] = length != NULL ? length : Py_NewRef(Py_None);
    out[4] = PyBool_FromLong(chunked);
    out[5] = Py_NewRef(host);
    out[6] = Py_NewRef(request_id);
    out[7] = forwarded_for != NULL ? forwarded_for : Py_NewRef(Py_None);
    out[8] = Py_NewRef(proto);
    out[9] = PyBool_FromLong(expect_continue);
    out[10] = Py_NewRef(authorization);
    out[11] = Py_NewRef(api_key);
    target = path = headers = length = forwarded_for = NULL; /* owned by out now */
    rc = 0;
done:
    for (Py_ssize_t i = 0; i < n_fields; i++) {
        Py_DECREF(fields[i].item);
    }
    if (fields != fields_on_stack) {
        PyMem_Free(fields);
    }
    if (tokens != tokens_on_stack) {
        PyMem_Free(tokens);
    }
    Py_XDECREF(length);
    Py_XDECREF(forwarded_for);
    Py_XDECREF(target);
    Py_XDECREF(path);
    Py_XDECREF(authority);
    Py_XDECREF(headers);
    return rc;
}

/* The API key header's name as scan_head takes it: NULL for None, else exact lower-case bytes. */
static int
credential_arg(PyObject *value, const char *caller, PyObject **out)
{
    if (value == Py_None) {
        *out = NULL;
        return 0;
    }
    if (!PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) == 0) {
        PyErr_Format(PyExc_TypeError, "%s: credential_header must be non-empty bytes or None", caller);
        return -1;
    }
    const char *s = PyBytes_AS_STRING(value);
    for (Py_ssize_t i = 0; i < PyBytes_GET_SIZE(value); i++) {
        if (s[i] >= 'A' && s[i] <= 'Z') {
            PyErr_Format(PyExc_ValueError, "%s: credential_header must be lower-case", caller);
            return -1;
        }
    }
    *out = value;
    return 0;
}

static PyObject *
scan_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "scan_request() takes 7 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *credential;
    if (check_scan_args(args[0], args[1], args[2], args[3], args[4], args[5]) < 0
        || credential_arg(args[6], "scan_request()", &credential) < 0) {
        return NULL;
    }
    SpeedupsState *st = get_state(module);
    PyObject *out[SCAN_RESULTS];
    if (scan_head(st, st->head_error, args[1], args[2], args[3], args[5], credential, out) < 0) {
        return NULL;
    }
    PyObject *result = PyTuple_New(SCAN_RESULTS);
    if (result == NULL) {
        for (int i = 0; i < SCAN_RESULTS; i++) {
            Py_DECREF(out[i]);
        }
        return NULL;
    }
    for (int i = 0; i < SCAN_RESULTS; i++) {
        PyTuple_SET_ITEM(result, i, out[i]);
    }
    return result;
}

/* -- RequestCallbacks ------------------------------------------------------------------------- */

/* request.RequestCallbacks, whose methods httptools looks up once per parser and calls with no
 * Python frame in between. Each method does what the Python does, in the same order: the same
 * limit checks on the same counts, the same calls on the parser and the handler. The limits
 * are kept as Py_ssize_t, clamped (a count is never negative and never passes PY_SSIZE_T_MAX,
 * so a clamped limit decides every comparison as the unclamped int would); max_body is kept
 * as an exact int too, for scan_head's Content-Length comparison.
 *
 * url and headers are never NULL: tp_clear leaves them (they hold only exact bytes and
 * (bytes, bytes) tuples) and puts None in place of the objects that could close a cycle, so a
 * method called on a cleared object raises instead of reading NULL. Whatever Python code a call
 * can run (a handler, the parser, a finalizer run by the garbage collector) may change the
 * object's fields, so a field is read into a strong reference before such a call and used from
 * there, as the Python reads an attribute once into a local. */

typedef struct {
    PyObject_HEAD
    PyObject *handler;
    /* The handler's methods, bound once (a call by name looks the name up on the handler's type
     * every time); NULL, and the call by name, when the handler had no such attribute. */
    PyObject *on_request_fn, *on_body_fn, *on_request_end_fn;
    PyObject *head_class;
    PyObject *error_class;
    PyObject *parser;   /* NULL only after del, as an unset slot of the Python class */
    PyObject *max_body_int; /* exact int */
    PyObject *credential; /* the API key header's lower-case name (exact bytes), or NULL */
    PyObject *url;      /* exact bytes */
    PyObject *headers;  /* list of (bytes, bytes) */
    Py_ssize_t max_url, max_headers, max_header_bytes, max_body;
    Py_ssize_t header_bytes, body_bytes;
    Py_ssize_t head_seen;
    PyObject *chunk;    /* the bytes being fed (start sets it, finish clears it), or None */
    Py_ssize_t begun;   /* heads begun during the current feed (began is begun > 0) */
    char in_head;
} Callbacks;

static inline SpeedupsState *
callbacks_state(Callbacks *self)
{
    /* The type cannot be subclassed, so it is always the module's own heap type. */
    return (SpeedupsState *)PyType_GetModuleState(Py_TYPE(self));
}

/* a + b for counts (both >= 0), stopping at PY_SSIZE_T_MAX. */
static inline Py_ssize_t
count_add(Py_ssize_t a, Py_ssize_t b)
{
    return b > PY_SSIZE_T_MAX - a ? PY_SSIZE_T_MAX : a + b;
}

static int
clamped_limit(PyObject *value, const char *name, Py_ssize_t *out)
{
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "RequestCallbacks(): %s must be an int", name);
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow > 0 || v > PY_SSIZE_T_MAX) {
        *out = PY_SSIZE_T_MAX;
    }
    else if (overflow < 0 || v < -1) {
        *out = -1; /* every count is over any negative limit */
    }
    else {
        *out = (Py_ssize_t)v;
    }
    return 0;
}

/* obj.name, or NULL without an exception: the caller calls by name instead, which raises then. */
static PyObject *
bound_method(PyObject *obj, PyObject *name)
{
    PyObject *method = PyObject_GetAttr(obj, name);
    if (method == NULL) {
        PyErr_Clear();
    }
    return method;
}

static PyObject *
callbacks_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "RequestCallbacks() takes no keyword arguments");
        return NULL;
    }
    if (PyTuple_GET_SIZE(args) != 8) {
        PyErr_Format(PyExc_TypeError, "RequestCallbacks() takes 8 positional arguments (%zd given)",
                     PyTuple_GET_SIZE(args));
        return NULL;
    }
    PyObject *credential;
    if (credential_arg(PyTuple_GET_ITEM(args, 7), "RequestCallbacks()", &credential) < 0) {
        return NULL;
    }
    PyObject *handler = PyTuple_GET_ITEM(args, 0);
    PyObject *max_body = PyTuple_GET_ITEM(args, 4);
    PyObject *head_class = PyTuple_GET_ITEM(args, 5);
    PyObject *error_class = PyTuple_GET_ITEM(args, 6);
    Py_ssize_t max_url, max_headers, max_header_bytes, max_body_n;
    if (clamped_limit(PyTuple_GET_ITEM(args, 1), "max_url", &max_url) < 0
        || clamped_limit(PyTuple_GET_ITEM(args, 2), "max_headers", &max_headers) < 0
        || clamped_limit(PyTuple_GET_ITEM(args, 3), "max_header_bytes", &max_header_bytes) < 0
        || clamped_limit(max_body, "max_body", &max_body_n) < 0) {
        return NULL;
    }
    if (!PyCallable_Check(head_class)) {
        PyErr_SetString(PyExc_TypeError, "RequestCallbacks(): head_class must be callable");
        return NULL;
    }
    if (!PyExceptionClass_Check(error_class)) {
        PyErr_SetString(PyExc_TypeError,
                        "RequestCallbacks(): error_class must be an exception class");
        return NULL;
    }
    /* int's own nb_int: an exact copy of a subclass's value, running no Python code. */
    PyObject *max_body_int = PyLong_Type.tp_as_number->nb_int(max_body);
    PyObject *url = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *headers = PyList_New(0);
    Callbacks *self = NULL;
    if (max_body_int == NULL || url == NULL || headers == NULL
        || (self = (Callbacks *)type->tp_alloc(type, 0)) == NULL) {
        Py_XDECREF(max_body_int);
        Py_XDECREF(url);
        Py_XDECREF(headers);
        return NULL;
    }
    self->handler = Py_NewRef(handler);
    SpeedupsState *st = PyType_GetModuleState(type);
    self->on_request_fn = bound_method(handler, st->on_request);
    self->on_body_fn = bound_method(handler, st->on_body);
    self->on_request_end_fn = bound_method(handler, st->on_request_end);
    self->head_class = Py_NewRef(head_class);
    self->error_class = Py_NewRef(error_class);
    self->parser = Py_NewRef(Py_None);
    self->max_body_int = max_body_int;
    self->credential = Py_XNewRef(credential);
    self->url = url;
    self->headers = headers;
    self->max_url = max_url;
    self->max_headers = max_headers;
    self->max_header_bytes = max_header_bytes;
    self->max_body = max_body_n;
    self->header_bytes = self->body_bytes = self->head_seen = 0;
    self->chunk = Py_NewRef(Py_None);
    self->begun = 0;
    self->in_head = 0;
    return (PyObject *)self;
}

static int
callbacks_traverse(Callbacks *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->handler);
    Py_VISIT(self->on_request_fn);
    Py_VISIT(self->on_body_fn);
    Py_VISIT(self->on_request_end_fn);
    Py_VISIT(self->head_class);
    Py_VISIT(self->error_class);
    Py_VISIT(self->parser);
    Py_VISIT(self->headers);
    Py_VISIT(self->chunk);
    return 0;
}

static int
callbacks_clear(Callbacks *self)
{
    Py_XSETREF(self->handler, Py_NewRef(Py_None));
    Py_CLEAR(self->on_request_fn);
    Py_CLEAR(self->on_body_fn);
    Py_CLEAR(self->on_request_end_fn);
    Py_XSETREF(self->head_class, Py_NewRef(Py_None));
    Py_XSETREF(self->error_class, Py_NewRef(Py_None));
    Py_XSETREF(self->chunk, Py_NewRef(Py_None));
    Py_CLEAR(self->parser);
    return 0;
}

static void
callbacks_dealloc(Callbacks *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->handler);
    Py_CLEAR(self->on_request_fn);
    Py_CLEAR(self->on_body_fn);
    Py_CLEAR(self->on_request_end_fn);
    Py_CLEAR(self->head_class);
    Py_CLEAR(self->error_class);
    Py_CLEAR(self->parser);
    Py_CLEAR(self->max_body_int);
    Py_CLEAR(self->credential);
    Py_CLEAR(self->url);
    Py_CLEAR(self->headers);
    Py_CLEAR(self->chunk);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

/* handler.<name>(arg), or handler.<name>() when arg is NULL: through the method bound when the
 * callbacks were made, else by name. bound is read into a strong reference first (the call may
 * run code that clears the callbacks). */
static PyObject *
call_handler(Callbacks *self, PyObject *bound, PyObject *name, PyObject *arg)
{
    PyObject *result;
    PyObject *method = Py_XNewRef(bound);
    if (method != NULL) {
        result = arg != NULL ? PyObject_CallOneArg(method, arg) : PyObject_CallNoArgs(method);
        Py_DECREF(method);
        return result;
    }
    PyObject *handler = Py_NewRef(self->handler);
    result = arg != NULL ? PyObject_CallMethodOneArg(handler, name, arg)
                         : PyObject_CallMethodNoArgs(handler, name);
    Py_DECREF(handler);
    return result;
}

static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs == expected) {
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "%s() takes %zd positional argument%s (%zd given)", name,
                 expected, expected == 1 ? "" : "s", nargs);
    return -1;
}

static PyObject *
callbacks_on_message_begin(Callbacks *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *headers = PyList_New(0);
    if (headers == NULL) {
        return NULL;
    }
    Py_SETREF(self->url, PyBytes_FromStringAndSize(NULL, 0)); /* the b"" singleton: no failure */
    Py_SETREF(self->headers, headers);
    self->header_bytes = 0;
    self->body_bytes = 0;
    self->in_head = 1;
    self->head_seen = 0;
    self->begun++;
    Py_RETURN_NONE;
}

static PyObject *
callbacks_on_url(Callbacks *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("on_url", nargs, 1) < 0) {
        return NULL;
    }
    PyObject *url = args[0];
    if (!PyBytes_Check(url)) {
        PyErr_SetString(PyExc_TypeError, "on_url(): url must be bytes");
        return NULL;
    }
    Py_ssize_t have = PyBytes_GET_SIZE(self->url), add = PyBytes_GET_SIZE(url);
    PyObject *joined;
    if (have == 0 && PyBytes_CheckExact(url)) {
        joined = Py_NewRef(url);
    }
    else {
        if (add > PY_SSIZE_T_MAX - have) {
            PyErr_SetString(PyExc_OverflowError, "URL too long");
            return NULL;
        }
        joined = PyBytes_FromStringAndSize(NULL, have + add);
        if (joined == NULL) {
            return NULL;
        }
        char *w = PyBytes_AS_STRING(joined);
        w = put(w, PyBytes_AS_STRING(self->url), have);
        put(w, PyBytes_AS_STRING(url), add);
    }
    Py_SETREF(self->url, joined);
    if (PyBytes_GET_SIZE(self->url) > self->max_url) {
        head_error(self->error_class, 414, "url_too_long", "request target over max_url_bytes");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
callbacks_on_header(Callbacks *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("on_header", nargs, 2) < 0) {
        return NULL;
    }
    PyObject *name = args[0], *value = args[1];
    if (!PyBytes_Check(name) || !PyBytes_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "on_header(): name and value must be bytes");
        return NULL;
    }
    PyObject *headers = Py_NewRef(self->headers); /* the list before the pair may run the GC */
    PyObject *pair = PyTuple_Pack(2, name, value);
    int rc = pair != NULL ? PyList_Append(headers, pair) : -1;
    Py_XDECREF(pair);
    Py_DECREF(headers);
    if (rc < 0) {
        return NULL;
    }
    Py_ssize_t n = count_add(PyBytes_GET_SIZE(name), PyBytes_GET_SIZE(value));
    self->header_bytes = count_add(self->header_bytes, count_add(n, 4));
    if (PyList_GET_SIZE(self->headers) > self->max_headers) {
        head_error(self->error_class, 431, "too_many_headers",
                   "more than max_headers header fields");
        return NULL;
    }
    if (self->header_bytes > self->max_header_bytes) {
        head_error(self->error_class, 431, "headers_too_large", "headers over max_header_bytes");
        return NULL;
    }
    Py_RETURN_NONE;
}

enum { HEAD_ARGS = 15 };

/* The version of the message whose head just completed, read from its request line when that
 * line starts the chunk being fed and is the only head begun in this feed so far: "<method> <url>
 * HTTP/1.x" CRLF, with the method and URL llhttp parsed. A new reference to "1.0" or "1.1", or
 * NULL (no error set) to ask the parser. get_http_version formats a new str each time (a third
 * of a microsecond); this reads eight bytes where llhttp has already checked them. */
static PyObject *
version_in_chunk(Callbacks *self, SpeedupsState *st, PyObject *method, PyObject *url)
{
    PyObject *chunk = self->chunk;
    if (self->begun != 1 || !PyBytes_Check(chunk) || !PyBytes_Check(method) || !PyBytes_Check(url)) {
        return NULL;
    }
    const char *c = PyBytes_AS_STRING(chunk);
    Py_ssize_t n = PyBytes_GET_SIZE(chunk);
    Py_ssize_t m = PyBytes_GET_SIZE(method), u = PyBytes_GET_SIZE(url);
    if (m > n || u > n || n - m - u < 12) { /* " " url " HTTP/1.x" CRLF */
        return NULL;
    }
    const char *at = c + m + 1 + u;
    if (memcmp(c, PyBytes_AS_STRING(method), (size_t)m) != 0 || c[m] != ' '
        || memcmp(c + m + 1, PyBytes_AS_STRING(url), (size_t)u) != 0
        || memcmp(at, " HTTP/1.", 8) != 0 || at[9] != '\r' || at[10] != '\n') {
        return NULL;
    }
    if (at[8] == '1') {
        return Py_NewRef(st->version_11);
    }
    if (at[8] == '0') {
        return Py_NewRef(st->version_10);
    }
    return NULL;
}

/* parse_head(parser.get_method().decode("ascii"), url, parser.get_http_version(), headers,
 * parser.should_keep_alive(), max_body), with scan_head in place of scan_request: the
 * RequestHead, or NULL with error_class(status, reason, detail) or what a call raised. */
static PyObject *
build_head(Callbacks *self, SpeedupsState *st, PyObject *parser)
{
    PyObject *method = NULL, *url = NULL, *version = NULL, *raw = NULL, *keep_alive = NULL;
    PyObject *max_body = NULL, *error_class = NULL, *head_class = NULL, *head = NULL;
    PyObject *credential = NULL;
    PyObject *fields[SCAN_RESULTS];

    PyObject *name = PyObject_CallMethodNoArgs(parser, st->get_method);
    if (name == NULL) {
        goto done;
    }
    method = PyBytes_Check(name)
                 ? PyUnicode_DecodeASCII(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), NULL)
                 : PyObject_CallMethod(name, "decode", "s", "ascii");
    if (method == NULL) {
        Py_DECREF(name);
        goto done;
    }
    url = Py_NewRef(self->url);
    version = version_in_chunk(self, st, name, url);
    Py_DECREF(name);
    if (version == NULL
        && (version = PyObject_CallMethodNoArgs(parser, st->get_http_version)) == NULL) {
        goto done;
    }
    raw = Py_NewRef(self->headers);
    if ((keep_alive = PyObject_CallMethodNoArgs(parser, st->should_keep_alive)) == NULL) {
        goto done;
    }
    max_body = Py_NewRef(self->max_body_int);
    error_class = Py_NewRef(self->error_class);
    credential = Py_XNewRef(self->credential);
    if (check_scan_args(method, url, version, raw, keep_alive, max_body) < 0
        || scan_head(st, error_class, url, version, raw, max_body, credential, fields) < 0) {
        goto done;
    }
    PyObject *argv[HEAD_ARGS] = {
        method, fields[0], fields[1], version, fields[2], keep_alive, fields[3],
        fields[4], fields[5], fields[6], fields[7], fields[8], fields[9], fields[10], fields[11],
    };
    head_class = Py_NewRef(self->head_class);
    head = PyObject_Vectorcall(head_class, argv, HEAD_ARGS, NULL);
    for (int i = 0; i < SCAN_RESULTS; i++) {
        Py_DECREF(fields[i]);
    }
done:
    Py_XDECREF(method);
    Py_XDECREF(url);
    Py_XDECREF(version);
    Py_XDECREF(raw);
    Py_XDECREF(keep_alive);
    Py_XDECREF(max_body);
    Py_XDECREF(error_class);
    Py_XDECREF(credential);
    Py_XDECREF(head_class);
    return head;
}

static PyObject *
callbacks_on_headers_complete(Callbacks *self, PyObject *Py_UNUSED(ignored))
{
    SpeedupsState *st = callbacks_state(self);
    self->in_head = 0;
    if (self->parser == NULL) {
        PyErr_Format(PyExc_AttributeError, "'%.200s' object has no attribute 'parser'",
                     Py_TYPE(self)->tp_name);
        return NULL;
    }
    if (self->parser == Py_None) {
        PyErr_SetNone(PyExc_AssertionError); /* assert parser is not None */
        return NULL;
    }
    PyObject *parser = Py_NewRef(self->parser);
    PyObject *head = build_head(self, st, parser);
    Py_DECREF(parser);
    if (head == NULL) {
        return NULL;
    }
    PyObject *result = call_handler(self, self->on_request_fn, st->on_request, head);
    Py_DECREF(head);
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyObject *
callbacks_on_body(Callbacks *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("on_body", nargs, 1) < 0) {
        return NULL;
    }
    PyObject *body = args[0];
    if (!PyBytes_Check(body)) {
        PyErr_SetString(PyExc_TypeError, "on_body(): body must be bytes");
        return NULL;
    }
    self->body_bytes = count_add(self->body_bytes, PyBytes_GET_SIZE(body));
    if (self->body_bytes > self->max_body) {
        head_error(self->error_class, 413, "too_large", "body over max_body_bytes");
        return NULL;
    }
    PyObject *result = call_handler(self, self->on_body_fn, callbacks_state(self)->on_body, body);
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyObject *
callbacks_on_message_complete(Callbacks *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *result =
        call_handler(self, self->on_request_end_fn, callbacks_state(self)->on_request_end, NULL);
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

/* in_head and began read back as bools and take only bools (start/finish keep them in C; the
 * setters stay for the twin tests and a caller that drives a feed itself). */
static int
check_flag(PyObject *value)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete a RequestCallbacks flag");
        return -1;
    }
    if (!PyBool_Check(value)) {
        PyErr_Format(PyExc_TypeError, "RequestCallbacks flags must be bool, not %.200s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *
callbacks_get_in_head(Callbacks *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->in_head);
}

static int
callbacks_set_in_head(Callbacks *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (check_flag(value) < 0) {
        return -1;
    }
    self->in_head = value == Py_True;
    return 0;
}

/* began is "a head began during the current feed": begun > 0. Setting it False, as
 * start does before each feed, restarts the count version_in_chunk relies on. */
static PyObject *
callbacks_get_began(Callbacks *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->begun > 0);
}

static int
callbacks_set_began(Callbacks *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (check_flag(value) < 0) {
        return -1;
    }
    if (value == Py_False) {
        self->begun = 0;
    }
    else if (self->begun == 0) {
        self->begun = 1;
    }
    return 0;
}

static PyObject *
callbacks_get_chunk(Callbacks *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->chunk);
}

static int
callbacks_set_chunk(Callbacks *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete chunk");
        return -1;
    }
    Py_SETREF(self->chunk, Py_NewRef(value));
    return 0;
}

/* start(data) and finish(data): RequestParser.feed's accounting around one feed, in one call
 * each (as attributes it was seven reads and writes through the type, a tenth of a request). */
static PyObject *
callbacks_start(Callbacks *self, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "start: data must be bytes, not %.200s", Py_TYPE(data)->tp_name);
        return NULL;
    }
    if (self->in_head) {
        self->head_seen = count_add(self->head_seen, PyBytes_GET_SIZE(data));
    }
    self->begun = 0;
    Py_SETREF(self->chunk, Py_NewRef(data));
    Py_RETURN_NONE;
}

/* The start of the last blank line ("\r\n\r\n") in s[0:n], or -1. */
static Py_ssize_t
last_blank_line(const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = n - 4; i >= 0; i--) {
        if (s[i] == '\r' && s[i + 1] == '\n' && s[i + 2] == '\r' && s[i + 3] == '\n') {
            return i;
        }
    }
    return -1;
}

static PyObject *
callbacks_finish(Callbacks *self, PyObject *data)
{
    Py_SETREF(self->chunk, Py_NewRef(Py_None)); /* a connection keeps no read it is done with */
    if (!self->in_head) {
        return PyLong_FromLong(-1);
    }
    if (self->begun > 0) {
        if (!PyBytes_Check(data)) {
            PyErr_Format(PyExc_TypeError, "finish: data must be bytes, not %.200s", Py_TYPE(data)->tp_name);
            return NULL;
        }
        /* The head began in this chunk. An open head holds no blank line, so it is at most
         * what follows the chunk's last one: count that (exact without bodies). */
        Py_ssize_t n = PyBytes_GET_SIZE(data);
        Py_ssize_t last = last_blank_line(PyBytes_AS_STRING(data), n);
        self->head_seen = n - (last != -1 ? last + 4 : 0);
    }
    return PyLong_FromSsize_t(self->head_seen);
}

static PyGetSetDef callbacks_getset[] = {
    {"chunk", (getter)callbacks_get_chunk, (setter)callbacks_set_chunk,
     "The bytes being fed, or None.", NULL},
    {"in_head", (getter)callbacks_get_in_head, (setter)callbacks_set_in_head,
     "A request has begun and its head is not complete.", NULL},
    {"began", (getter)callbacks_get_began, (setter)callbacks_set_began,
     "A head began during the current feed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef callbacks_members[] = {
    {"head_seen", T_PYSSIZET, offsetof(Callbacks, head_seen), 0,
     "Bytes fed while the head is open (see RequestParser.feed)."},
    {"parser", T_OBJECT_EX, offsetof(Callbacks, parser), 0,
     "The httptools parser on_headers_complete asks for the method, version and keep-alive."},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef callbacks_methods[] = {
    {"on_message_begin", (PyCFunction)callbacks_on_message_begin, METH_NOARGS, NULL},
    {"on_url", (PyCFunction)(void (*)(void))callbacks_on_url, METH_FASTCALL, NULL},
    {"on_header", (PyCFunction)(void (*)(void))callbacks_on_header, METH_FASTCALL, NULL},
    {"on_headers_complete", (PyCFunction)callbacks_on_headers_complete, METH_NOARGS, NULL},
    {"on_body", (PyCFunction)(void (*)(void))callbacks_on_body, METH_FASTCALL, NULL},
    {"on_message_complete", (PyCFunction)callbacks_on_message_complete, METH_NOARGS, NULL},
    {"start", (PyCFunction)callbacks_start, METH_O,
     "start(data): before data is fed (head_seen, began, chunk)."},
    {"finish", (PyCFunction)callbacks_finish, METH_O,
     "finish(data) -> int: after data was fed: head_seen while a head is open, else -1."},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(callbacks_doc,
"RequestCallbacks(handler, max_url, max_headers, max_header_bytes, max_body, head_class,\n"
"                 error_class, credential_header, /)\n"
"--\n"
"\n"
"request.RequestCallbacks in C: llhttp's callbacks for one connection. head_class is\n"
"RequestHead, built as parse_head builds it; error_class is ProtocolError, raised as\n"
"error_class(status, reason, detail) where the Python raises ProtocolError.");

static PyType_Slot callbacks_slots[] = {
    {Py_tp_doc, (void *)callbacks_doc},
    {Py_tp_new, callbacks_new},
    {Py_tp_dealloc, callbacks_dealloc},
    {Py_tp_traverse, callbacks_traverse},
    {Py_tp_clear, callbacks_clear},
    {Py_tp_methods, callbacks_methods},
    {Py_tp_members, callbacks_members},
    {Py_tp_getset, callbacks_getset},
    {0, NULL},
};

static PyType_Spec callbacks_spec = {
    .name = "fastproxy.http._speedups.RequestCallbacks",
    .basicsize = sizeof(Callbacks),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = callbacks_slots,
};

/* -- module ----------------------------------------------------------------------------------- */

static PyMethodDef speedups_methods[] = {
    {"response_head", (PyCFunction)(void (*)(void))response_head, METH_FASTCALL, response_head_doc},
    {"request_head", (PyCFunction)(void (*)(void))request_head, METH_FASTCALL, request_head_doc},
    {"scan_request", (PyCFunction)(void (*)(void))scan_request, METH_FASTCALL, scan_request_doc},
    {"media_fields", (PyCFunction)media_fields, METH_O, media_fields_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(head_error_doc,
"A request head parse_head refuses: args are ProtocolError's (status, reason, detail).");

static int
speedups_exec(PyObject *module)
{
    SpeedupsState *st = get_state(module);
    st->head_error = PyErr_NewExceptionWithDoc("fastproxy.http._speedups.HeadError", head_error_doc,
                                               PyExc_ValueError, NULL);
    if (st->head_error == NULL) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "HeadError", st->head_error) < 0) {
        return -1;
    }
    st->host_name = PyBytes_FromStringAndSize("Host", 4);
    if (st->host_name == NULL) {
        return -1;
    }
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&st->on_request, "on_request"},
        {&st->on_body, "on_body"},
        {&st->on_request_end, "on_request_end"},
        {&st->get_method, "get_method"},
        {&st->get_http_version, "get_http_version"},
        {&st->should_keep_alive, "should_keep_alive"},
        {&st->version_10, "1.0"},
        {&st->version_11, "1.1"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL) {
            return -1;
        }
    }
    st->callbacks_type = PyType_FromModuleAndSpec(module, &callbacks_spec, NULL);
    if (st->callbacks_type == NULL) {
        return -1;
    }
    return PyModule_AddType(module, (PyTypeObject *)st->callbacks_type);
}

static int
speedups_traverse(PyObject *module, visitproc visit, void *arg)
{
    SpeedupsState *st = get_state(module);
    Py_VISIT(st->head_error);
    Py_VISIT(st->callbacks_type);
    return 0;
}

static int
speedups_clear(PyObject *module)
{
    SpeedupsState *st = get_state(module);
    Py_CLEAR(st->head_error);
    Py_CLEAR(st->host_name);
    Py_CLEAR(st->callbacks_type);
    Py_CLEAR(st->on_request);
    Py_CLEAR(st->on_body);
    Py_CLEAR(st->on_request_end);
    Py_CLEAR(st->get_method);
    Py_CLEAR(st->get_http_version);
    Py_CLEAR(st->should_keep_alive);
    Py_CLEAR(st->version_10);
    Py_CLEAR(st->version_11);
    return 0;
}

static void
speedups_free(void *module)
{
    speedups_clear((PyObject *)module);
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastproxy.http._speedups",
    .m_doc = "C versions of the per-request head checks and rewrites; see request.py, response.py "
             "and forward.py.",
    .m_size = sizeof(SpeedupsState),
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
    .m_traverse = speedups_traverse,
    .m_clear = speedups_clear,
    .m_free = speedups_free,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
