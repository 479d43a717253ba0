/*
 * fastproxy.masking._splice: mask a JSON document in one pass over its bytes.
 *
 * Splicer(tree, replacement) compiles a mask's path tree (fastproxy.masking.paths.PathNode) and
 * the replacement (its JSON text, as bytes). splicer(body) -> (bytes, count) checks that body is
 * one JSON document as strictly as the reference does (msgspec's decoder: RFC 8259, UTF-8,
 * surrogate pairs, floats in range) and replaces, in the text itself, every value the tree names;
 * it raises ValueError for anything that is not JSON. With nothing replaced it returns body
 * itself.
 *
 * Why splice instead of decode, walk and re-encode (fastproxy.masking.body.mask_document, the
 * reference): decoding 1 KB into Python objects costs about 3 us, most of the masking; a scan
 * that allocates nothing costs a fraction of that. It also leaves every byte it does not replace
 * as the upstream sent it: numbers keep their digits (a re-encoded float can lose precision),
 * strings their escapes. A member that appears twice in an object is replaced every time (a
 * decoder keeps one of them, and a client's decoder might keep the other).
 *
 * The walk follows the tree with recursion only where the tree goes (its depth is the longest
 * path's); everything else is skipped by an iterative scanner, so a document nested a million
 * levels deep costs no stack. That is the one refusal of the reference it does not share: the
 * reference cannot decode a document nested deeper than Python's recursion limit (about 1000),
 * the splicer masks it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <string.h>

/* -- the compiled tree ------------------------------------------------------------------------ */

typedef struct Node {
    Py_ssize_t n_leaves;
    PyObject **leaves; /* bytes: member names replaced here (UTF-8) */
    Py_ssize_t n_inner;
    PyObject **inner;        /* bytes: member names walked into */
    struct Node **children;  /* where each of those leads */
    struct Node *each;       /* where [*] leads, when it does not end a path */
    int each_leaf;           /* a path ends in [*] here: every element is replaced */
} Node;

static void node_free(Node *node) {
    if (node == NULL)
        return;
    for (Py_ssize_t i = 0; i < node->n_leaves; i++)
        Py_XDECREF(node->leaves[i]);
    for (Py_ssize_t i = 0; i < node->n_inner; i++) {
        Py_XDECREF(node->inner[i]);
        node_free(node->children[i]);
    }
    PyMem_Free(node->leaves);
    PyMem_Free(node->inner);
    PyMem_Free(node->children);
    node_free(node->each);
    PyMem_Free(node);
}

static PyObject *utf8_name(PyObject *name) {
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "Splicer: member names must be str");
        return NULL;
    }
    return PyUnicode_AsUTF8String(name);
}

/* A C copy of a PathNode (duck-typed: leaves, inner, each, each_leaf). */
static Node *node_from(PyObject *obj, int depth) {
    if (depth > 256) {
        PyErr_SetString(PyExc_ValueError, "Splicer: path tree too deep");
        return NULL;
    }
    Node *node = PyMem_Calloc(1, sizeof(Node));
    if (node == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    PyObject *leaves = NULL, *inner = NULL, *each = NULL, *each_leaf = NULL;
    if ((leaves = PyObject_GetAttrString(obj, "leaves")) == NULL ||
        (inner = PyObject_GetAttrString(obj, "inner")) == NULL ||
        (each = PyObject_GetAttrString(obj, "each")) == NULL ||
        (each_leaf = PyObject_GetAttrString(obj, "each_leaf")) == NULL)
        goto fail;
    if (!PyTuple_Check(leaves) || !PyTuple_Check(inner)) {
        PyErr_SetString(PyExc_TypeError, "Splicer: PathNode.leaves and .inner must be tuples");
        goto fail;
    }
    Py_ssize_t n_leaves = PyTuple_GET_SIZE(leaves), n_inner = PyTuple_GET_SIZE(inner);
    node->leaves = PyMem_Calloc(n_leaves ? n_leaves : 1, sizeof(PyObject *));
    node->inner = PyMem_Calloc(n_inner ? n_inner : 1, sizeof(PyObject *));
    node->children = PyMem_Calloc(n_inner ? n_inner : 1, sizeof(Node *));
    if (node->leaves == NULL || node->inner == NULL || node->children == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n_leaves; i++) {
        if ((node->leaves[i] = utf8_name(PyTuple_GET_ITEM(leaves, i))) == NULL)
            goto fail;
        node->n_leaves = i + 1;
    }
    for (Py_ssize_t i = 0; i < n_inner; i++) {
        PyObject *pair = PyTuple_GET_ITEM(inner, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "Splicer: PathNode.inner holds (name, node) pairs");
            goto fail;
        }
        if ((node->inner[i] = utf8_name(PyTuple_GET_ITEM(pair, 0))) == NULL)
            goto fail;
        node->n_inner = i + 1;
        if ((node->children[i] = node_from(PyTuple_GET_ITEM(pair, 1), depth + 1)) == NULL)
            goto fail;
    }
    if (each != Py_None && (node->each = node_from(each, depth + 1)) == NULL)
        goto fail;
    int flag = PyObject_IsTrue(each_leaf);
    if (flag < 0)
        goto fail;
    node->each_leaf = flag;
    Py_DECREF(leaves);
    Py_DECREF(inner);
    Py_DECREF(each);
    Py_DECREF(each_leaf);
    return node;
fail:
    Py_XDECREF(leaves);
    Py_XDECREF(inner);
    Py_XDECREF(each);
    Py_XDECREF(each_leaf);
    node_free(node);
    return NULL;
}

/* -- the scan --------------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *start; /* the body */
    const unsigned char *p;     /* the next byte to read */
    const unsigned char *end;
    const unsigned char *copied; /* the body up to here is in out (or needs no copy yet) */
    const char *replacement;
    Py_ssize_t replacement_len;
    char *out; /* the masked document, built only once something is replaced */
    Py_ssize_t out_len, out_cap;
    Py_ssize_t count;
    const char *error; /* why the body is not JSON, with error_at */
    Py_ssize_t error_at;
    unsigned char *stack; /* the open containers of skip_value: '{' or '[' */
    Py_ssize_t stack_cap;
    unsigned char key[256]; /* a member name with escapes, decoded (a longer one: on the heap) */
} Scan;

static int fail(Scan *s, const char *why) {
    if (s->error == NULL) {
        s->error = why;
        s->error_at = s->p - s->start;
    }
    return -1;
}

static int out_append(Scan *s, const char *data, Py_ssize_t len) {
    if (s->out_len + len > s->out_cap) {
        Py_ssize_t cap = s->out_cap ? s->out_cap : 256;
        while (cap < s->out_len + len)
            cap *= 2;
        char *grown = PyMem_Realloc(s->out, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->out = grown;
        s->out_cap = cap;
    }
    memcpy(s->out + s->out_len, data, len);
    s->out_len += len;
    return 0;
}

/* The value the body holds at [from, s->p) is replaced. */
static int splice(Scan *s, const unsigned char *from) {
    if (out_append(s, (const char *)s->copied, from - s->copied) < 0 ||
        out_append(s, s->replacement, s->replacement_len) < 0)
        return -2; /* a Python error, not a JSON one */
    s->copied = s->p;
    s->count++;
    return 0;
}

static inline void skip_ws(Scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static int hex4(const unsigned char *p, unsigned int *value) {
    unsigned int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    *value = v;
    return 0;
}

/* The length of the valid UTF-8 sequence at p (a lead byte >= 0x80), or 0 (Python's strict codec:
 * no overlong forms, no surrogates, nothing past U+10FFFF). */
static int utf8_length(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    if (c >= 0xC2 && c <= 0xDF)
        return end - p >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0))
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
            return 0;
        return 4;
    }
    return 0;
}

/* Writes cp as UTF-8 at out; returns the bytes written. */
static int put_utf8(unsigned char *out, unsigned int cp) {
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = 0xC0 | (cp >> 6);
        out[1] = 0x80 | (cp & 0x3F);
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = 0xE0 | (cp >> 12);
        out[1] = 0x80 | ((cp >> 6) & 0x3F);
        out[2] = 0x80 | (cp & 0x3F);
        return 3;
    }
    out[0] = 0xF0 | (cp >> 18);
    out[1] = 0x80 | ((cp >> 12) & 0x3F);
    out[2] = 0x80 | ((cp >> 6) & 0x3F);
    out[3] = 0x80 | (cp & 0x3F);
    return 4;
}

/* The value of a string scan_string accepted, its text [from, to) without the quotes, decoded
 * into out (room for to - from bytes: an escape never decodes longer than it is spelled). */
static Py_ssize_t decode_string(const unsigned char *from, const unsigned char *to, unsigned char *out) {
    unsigned char *w = out;
    while (from < to) {
        if (*from != '\\') {
            *w++ = *from++;
            continue;
        }
        unsigned int cp = 0, low = 0;
        switch (from[1]) {
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            hex4(from + 2, &cp);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                hex4(from + 8, &low);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                from += 6;
            }
            from += 4;
            break;
        default: cp = from[1]; /* " \\ / */
        }
        w += put_utf8(w, cp);
        from += 2;
    }
    return w - out;
}

/* Bytes a string holds as they are: printable ASCII other than '"' and backslash. */
static unsigned char PLAIN[256];

static void init_plain(void) {
    for (int c = 0x20; c < 0x80; c++)
        PLAIN[c] = c != '"' && c != '\\';
}

/* A string at s->p (its opening quote), checked; *escaped says whether its text has escapes
 * (without any, its value is its text). */
static int scan_string(Scan *s, int *escaped) {
    const unsigned char *p = s->p + 1, *end = s->end;
    *escaped = 0;
    for (;;) {
        while (end - p >= 4 && PLAIN[p[0]] && PLAIN[p[1]] && PLAIN[p[2]] && PLAIN[p[3]])
            p += 4;
        while (p < end && PLAIN[*p])
            p++;
        if (p >= end) {
            s->p = p;
            return fail(s, "unterminated string");
        }
        unsigned char c = *p;
        if (c == '"') {
            s->p = p + 1;
            return 0;
        }
        if (c < 0x20) {
            s->p = p;
            return fail(s, "control character in string");
        }
        if (c >= 0x80) {
            int len = utf8_length(p, end);
            if (len == 0) {
                s->p = p;
                return fail(s, "invalid UTF-8 in string");
            }
            p += len;
            continue;
        }
        /* A backslash. */
        *escaped = 1;
        if (end - p < 2) {
            s->p = p;
            return fail(s, "unterminated string");
        }
        switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p += 2;
            break;
        case 'u': {
            unsigned int cp, low;
            if (end - p < 6 || hex4(p + 2, &cp) < 0) {
                s->p = p;
                return fail(s, "invalid unicode escape");
            }
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                s->p = p;
                return fail(s, "invalid utf-16 surrogate pair");
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, &low) < 0 || low < 0xDC00 ||
                    low > 0xDFFF) {
                    s->p = p;
                    return fail(s, "invalid utf-16 surrogate pair");
                }
                p += 6;
            }
            p += 6;
            break;
        }
        default:
            s->p = p;
            return fail(s, "invalid escape character in string");
        }
    }
}

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int scan_number(Scan *s) {
    const unsigned char *p = s->p, *end = s->end, *first = s->p;
    if (p < end && *p == '-')
        p++;
    if (p >= end || !is_digit(*p)) {
        s->p = p;
        return fail(s, "invalid number");
    }
    const unsigned char *digits = p;
    if (*p == '0')
        p++;
    else
        while (p < end && is_digit(*p))
            p++;
    Py_ssize_t int_digits = p - digits;
    int is_float = 0;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p)) {
            s->p = p;
            return fail(s, "invalid number");
        }
        while (p < end && is_digit(*p))
            p++;
        is_float = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p)) {
            s->p = p;
            return fail(s, "invalid number");
        }
        while (p < end && is_digit(*p))
            p++;
        is_float = 1;
    }
    if (p < end && is_digit(*p)) { /* a leading zero followed by digits */
        s->p = p;
        return fail(s, "invalid number");
    }
    s->p = p;
    /* An integer the reference cannot read is refused like it: msgspec takes at most 4300
     * characters (sign included), and Python's int() at most sys.get_int_max_str_digits() digits
     * (640 is the smallest limit it can be set to, so shorter ones need no check). */
    if (!is_float && p - digits > 640) {
        if (p - first > 4300) {
            s->p = first;
            return fail(s, "integer out of range");
        }
        char text[4301];
        memcpy(text, first, p - first);
        text[p - first] = '\0';
        PyObject *value = PyLong_FromString(text, NULL, 10);
        if (value == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError))
                return -2;
            PyErr_Clear();
            s->p = first;
            return fail(s, "integer out of range");
        }
        Py_DECREF(value);
    }
    /* A float must fit a double, as the reference's decoder requires. Only an
     * exponent or some 300 digits can overflow one: parse just those. The body is a bytes
     * object, so the text ends with a NUL and the parse stops at the number's end. */
    if (is_float && (int_digits > 300 || p - first > 20 || memchr(first, 'e', p - first) || memchr(first, 'E', p - first))) {
        char *stop = NULL;
        double value = PyOS_string_to_double((const char *)first, &stop, NULL);
        if (value == -1.0 && PyErr_Occurred())
            return -2;
        if (Py_IS_INFINITY(value)) {
            s->p = first;
            return fail(s, "number out of range");
        }
    }
    return 0;
}

static int scan_literal(Scan *s, const char *word, Py_ssize_t len) {
    if (s->end - s->p < len || memcmp(s->p, word, len) != 0)
        return fail(s, "invalid character");
    s->p += len;
    return 0;
}

/* A scalar at s->p (after whitespace): string, number, true, false, null. */
static int scan_scalar(Scan *s) {
    unsigned char c = *s->p;
    int escaped;
    if (c == '"')
        return scan_string(s, &escaped);
    if (c == '-' || is_digit(c))
        return scan_number(s);
    if (c == 't')
        return scan_literal(s, "true", 4);
    if (c == 'f')
        return scan_literal(s, "false", 5);
    if (c == 'n')
        return scan_literal(s, "null", 4);
    return fail(s, "invalid character");
}

static int push(Scan *s, Py_ssize_t *depth, unsigned char kind) {
    if (*depth >= s->stack_cap) {
        Py_ssize_t cap = s->stack_cap ? s->stack_cap * 2 : 64;
        unsigned char *grown = PyMem_Realloc(s->stack, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -2;
        }
        s->stack = grown;
        s->stack_cap = cap;
    }
    s->stack[(*depth)++] = kind;
    return 0;
}

/* One value at s->p, checked and passed over, however deep (no recursion). */
static int skip_value(Scan *s) {
    Py_ssize_t depth = 0;
    int rc, escaped;
    for (;;) {
        /* A value starts here. */
        skip_ws(s);
        if (s->p >= s->end)
            return fail(s, "truncated");
        unsigned char c = *s->p;
        if (c == '{' || c == '[') {
            s->p++;
            skip_ws(s);
            if (s->p < s->end && *s->p == (c == '{' ? '}' : ']')) {
                s->p++; /* empty */
            } else {
                if ((rc = push(s, &depth, c)) < 0)
                    return rc;
                if (c == '{') {
                    if (s->p >= s->end || *s->p != '"')
                        return fail(s, s->p >= s->end ? "truncated" : "object keys must be strings");
                    if ((rc = scan_string(s, &escaped)) < 0)
                        return rc;
                    skip_ws(s);
                    if (s->p >= s->end || *s->p != ':')
                        return fail(s, "expected ':'");
                    s->p++;
                }
                continue;
            }
        } else if ((rc = scan_scalar(s)) < 0) {
            return rc;
        }
        /* A value ended: close containers, or go on to the next member or element. */
        for (;;) {
            if (depth == 0)
                return 0;
            skip_ws(s);
            if (s->p >= s->end)
                return fail(s, "truncated");
            unsigned char kind = s->stack[depth - 1];
            c = *s->p;
            if (c == ',') {
                s->p++;
                skip_ws(s);
                if (kind == '{') {
                    if (s->p >= s->end || *s->p != '"')
                        return fail(s, s->p >= s->end ? "truncated" : "trailing comma or key not a string");
                    if ((rc = scan_string(s, &escaped)) < 0)
                        return rc;
                    skip_ws(s);
                    if (s->p >= s->end || *s->p != ':')
                        return fail(s, "expected ':'");
                    s->p++;
                } else if (s->p < s->end && *s->p == ']') {
                    return fail(s, "trailing comma in array");
                }
                break; /* the next value */
            }
            if ((kind == '{' && c == '}') || (kind == '[' && c == ']')) {
                s->p++;
                depth--;
                continue;
            }
            return fail(s, kind == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
}

static int walk_value(Scan *s, const Node *node);

/* Does the member name [name, name + len) equal one of names? */
static inline Py_ssize_t find_name(const unsigned char *name, Py_ssize_t len, PyObject **names, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyBytes_GET_SIZE(names[i]) == len && memcmp(name, PyBytes_AS_STRING(names[i]), len) == 0)
            return i;
    return -1;
}

/* The value at s->p of a member or element: replaced (leaf), walked with child, or skipped. */
static int take_value(Scan *s, int leaf, const Node *child) {
    const unsigned char *value = s->p;
    if (leaf) {
        int rc = skip_value(s);
        return rc < 0 ? rc : splice(s, value);
    }
    return child ? walk_value(s, child) : skip_value(s);
}

/* After a member or element: 1 at the container's end (passed), 0 after a comma, < 0 if neither. */
static int next_or_end(Scan *s, unsigned char end, const char *expected) {
    skip_ws(s);
    if (s->p >= s->end)
        return fail(s, "truncated");
    if (*s->p == end) {
        s->p++;
        return 1;
    }
    if (*s->p != ',')
        return fail(s, expected);
    s->p++;
    skip_ws(s);
    return 0;
}

static int walk_object(Scan *s, const Node *node) {
    int rc, escaped;
    s->p++; /* '{' */
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        if (s->p >= s->end)
            return fail(s, "truncated");
        if (*s->p != '"')
            return fail(s, "object keys must be strings");
        const unsigned char *name = s->p + 1;
        if ((rc = scan_string(s, &escaped)) < 0)
            return rc;
        Py_ssize_t len = s->p - 1 - name;
        unsigned char *decoded = NULL; /* a long escaped name, decoded on the heap */
        if (escaped) {
            if (len > (Py_ssize_t)sizeof(s->key) && (decoded = PyMem_Malloc(len)) == NULL) {
                PyErr_NoMemory();
                return -2;
            }
            len = decode_string(name, s->p - 1, decoded ? decoded : s->key);
            name = decoded ? decoded : s->key;
        }
        int leaf = find_name(name, len, node->leaves, node->n_leaves) >= 0;
        Py_ssize_t inner = leaf ? -1 : find_name(name, len, node->inner, node->n_inner);
        PyMem_Free(decoded);
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return fail(s, "expected ':'");
        s->p++;
        skip_ws(s);
        if ((rc = take_value(s, leaf, inner >= 0 ? node->children[inner] : NULL)) < 0)
            return rc;
        if ((rc = next_or_end(s, '}', "expected ',' or '}'")) != 0)
            return rc < 0 ? rc : 0;
    }
}

static int walk_array(Scan *s, const Node *node) {
    int rc;
    s->p++; /* '[' */
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 0;
    }
    for (;;) {
        skip_ws(s);
        if ((rc = take_value(s, node->each_leaf, node->each)) < 0)
            return rc;
        if ((rc = next_or_end(s, ']', "expected ',' or ']'")) != 0)
            return rc < 0 ? rc : 0;
        if (s->p < s->end && *s->p == ']')
            return fail(s, "trailing comma in array");
    }
}

/* A value the tree reaches with node: walked where the node names something, else skipped. */
static int walk_value(Scan *s, const Node *node) {
    skip_ws(s);
    if (s->p >= s->end)
        return fail(s, "truncated");
    unsigned char c = *s->p;
    if (c == '{' && (node->n_leaves || node->n_inner))
        return walk_object(s, node);
    if (c == '[' && (node->each_leaf || node->each))
        return walk_array(s, node);
    return skip_value(s);
}

/* -- the Python type -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Node *root;
    PyObject *replacement; /* bytes */
} Splicer;

static void Splicer_dealloc(Splicer *self) {
    node_free(self->root);
    Py_XDECREF(self->replacement);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Splicer_init(Splicer *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"tree", "replacement", NULL};
    PyObject *tree, *replacement;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OS", names, &tree, &replacement))
        return -1;
    Node *root = node_from(tree, 0);
    if (root == NULL)
        return -1;
    node_free(self->root);
    self->root = root;
    Py_INCREF(replacement);
    Py_XSETREF(self->replacement, replacement);
    return 0;
}

static PyObject *Splicer_call(Splicer *self, PyObject *args, PyObject *kwds) {
    PyObject *body;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Splicer(body) takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "S", &body))
        return NULL;
    if (self->root == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Splicer not initialized");
        return NULL;
    }
    Scan s;
    memset(&s, 0, offsetof(Scan, key));
    s.start = s.p = s.copied = (const unsigned char *)PyBytes_AS_STRING(body);
    s.end = s.start + PyBytes_GET_SIZE(body);
    s.replacement = PyBytes_AS_STRING(self->replacement);
    s.replacement_len = PyBytes_GET_SIZE(self->replacement);
    int rc = walk_value(&s, self->root);
    if (rc == 0) {
        skip_ws(&s);
        if (s.p != s.end)
            rc = fail(&s, "trailing characters");
    }
    PyObject *result = NULL;
    if (rc == -2 || PyErr_Occurred()) {
        /* A Python error (memory) is already set. */
    } else if (rc < 0) {
        PyErr_Format(PyExc_ValueError, "JSON is malformed: %s (byte %zd)", s.error, s.error_at);
    } else if (s.count == 0) {
        result = Py_BuildValue("(On)", body, (Py_ssize_t)0);
    } else if (out_append(&s, (const char *)s.copied, s.end - s.copied) == 0) {
        PyObject *masked = PyBytes_FromStringAndSize(s.out, s.out_len);
        if (masked != NULL)
            result = Py_BuildValue("(Nn)", masked, s.count);
    }
    PyMem_Free(s.out);
    PyMem_Free(s.stack);
    return result;
}

static PyTypeObject SplicerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fastproxy.masking._splice.Splicer",
    .tp_basicsize = sizeof(Splicer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Splicer(tree, replacement)(body) -> (masked body, values replaced); ValueError if not JSON.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Splicer_init,
    .tp_dealloc = (destructor)Splicer_dealloc,
    .tp_call = (ternaryfunc)Splicer_call,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "fastproxy.masking._splice", "Masking JSON documents in one pass (see Splicer).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__splice(void) {
    init_plain();
    if (PyType_Ready(&SplicerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SplicerType);
    if (PyModule_AddObject(m, "Splicer", (PyObject *)&SplicerType) < 0) {
        Py_DECREF(&SplicerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
