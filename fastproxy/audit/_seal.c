/*
 * fastproxy.audit._seal: the audit writer's hot loop, chaining a batch of records at once.
 *
 * seal(payload, prev) -> (lines, head, count)
 *
 * ``payload`` is one or more compact JSON objects separated by "\n" (a batch as a worker sends
 * it) in any contiguous buffer: the writer passes a view of the message it received, uncopied.
 * ``prev`` is the 64 hex digits of the chain head. Every record becomes the line
 *
 *     <record without its "}">,"prev":"<prev>","hash":"<sha256 hex>"}\n
 *
 * where the hash covers the canonical form <record without "}">,"prev":"<prev>"} and becomes the
 * next record's prev. Returns the lines concatenated, the new head and the number of records.
 * fastproxy.audit.chain.seal_batch_reference is the pure-Python twin (same bytes, same errors);
 * the module docstring of fastproxy.audit.chain defines the format.
 *
 * count(payload) -> int checks a payload as seal does and says how many records it holds, so
 * that the writer refuses a malformed batch before it changes any state
 * (fastproxy.audit.protocol.count_records_reference is its twin).
 *
 * Why C: per record the Python loop costs about 2 us (two formatting passes, a hashlib object,
 * hexlify); here one output buffer is written in place and SHA-256 is OpenSSL's own block
 * function (SHA-NI where the CPU has it), without an EVP fetch per record.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init & co: the one-shot EVP path fetches per call */
#include <Python.h>
#include <openssl/sha.h>
#include <string.h>

#define HEX_LEN 64
static const char PREV_OPEN[] = ",\"prev\":\"";   /* before prev */
static const char HASH_OPEN[] = "\",\"hash\":\""; /* after prev, before the hash */
static const char LINE_END[] = "\"}\n";
#define PREV_OPEN_LEN (sizeof(PREV_OPEN) - 1)
#define HASH_OPEN_LEN (sizeof(HASH_OPEN) - 1)
#define LINE_END_LEN (sizeof(LINE_END) - 1)
/* What a line adds to its record: the record's "}" makes way for these. */
#define LINE_EXTRA (PREV_OPEN_LEN + HEX_LEN + HASH_OPEN_LEN + HEX_LEN + LINE_END_LEN - 1)

static const char HEX[] = "0123456789abcdef";

static int is_hex64(const char *s, Py_ssize_t n) {
    if (n != HEX_LEN)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Members are appended before the closing brace: each record must be a non-empty object. */
static int is_object(const char *record, Py_ssize_t len) {
    return len >= 3 && record[0] == '{' && record[1] == '"' && record[len - 1] == '}';
}

/* The number of records in payload, or -1 with ValueError set when one is not an object. */
static Py_ssize_t count_records(const char *payload, Py_ssize_t size) {
    if (size == 0) {
        PyErr_SetString(PyExc_ValueError, "empty batch");
        return -1;
    }
    const char *record = payload;
    const char *end = payload + size;
    Py_ssize_t count = 0;
    for (;;) {
        const char *nl = memchr(record, '\n', end - record);
        const char *stop = nl ? nl : end;
        count++;
        if (!is_object(record, stop - record)) {
            PyErr_Format(PyExc_ValueError, "record %zd of the batch is not a JSON object", count);
            return -1;
        }
        if (nl == NULL)
            return count;
        record = nl + 1;
    }
}

static PyObject *count(PyObject *Py_UNUSED(module), PyObject *arg) {
    Py_buffer payload;
    if (PyObject_GetBuffer(arg, &payload, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t n = count_records(payload.buf, payload.len);
    PyBuffer_Release(&payload);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

/* The lines of the n checked records of payload chained after head (64 hex digits, updated). */
static PyObject *seal_records(const char *payload, Py_ssize_t size, Py_ssize_t n, char *head) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, size - (n - 1) + n * (Py_ssize_t)LINE_EXTRA);
    if (out == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(out);

    unsigned char digest[SHA256_DIGEST_LENGTH];
    const char *record = payload;
    const char *end = payload + size;
    for (Py_ssize_t index = 0; index < n; index++) {
        const char *nl = memchr(record, '\n', end - record);
        const char *stop = nl ? nl : end;
        Py_ssize_t len = stop - record;
        char *line = w;
        memcpy(w, record, len - 1);
        w += len - 1;
        memcpy(w, PREV_OPEN, PREV_OPEN_LEN);
        w += PREV_OPEN_LEN;
        memcpy(w, head, HEX_LEN);
        w += HEX_LEN;
        *w = '"';
        /* The canonical form: the line so far, its closing quote, then "}". */
        SHA256_CTX ctx;
        SHA256_Init(&ctx);
        SHA256_Update(&ctx, line, (size_t)(w + 1 - line));
        SHA256_Update(&ctx, "}", 1);
        SHA256_Final(digest, &ctx);
        for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
            head[2 * i] = HEX[digest[i] >> 4];
            head[2 * i + 1] = HEX[digest[i] & 15];
        }
        memcpy(w, HASH_OPEN, HASH_OPEN_LEN);
        w += HASH_OPEN_LEN;
        memcpy(w, head, HEX_LEN);
        w += HEX_LEN;
        memcpy(w, LINE_END, LINE_END_LEN);
        w += LINE_END_LEN;
        record = stop + 1;
    }
    return out;
}

static PyObject *seal(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "seal(payload, prev) takes two arguments");
        return NULL;
    }
    if (!PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "seal: prev must be bytes");
        return NULL;
    }
    const char *prev = PyBytes_AS_STRING(args[1]);
    if (!is_hex64(prev, PyBytes_GET_SIZE(args[1]))) {
        PyErr_SetString(PyExc_ValueError, "prev is not 64 lowercase hex digits");
        return NULL;
    }
    Py_buffer payload;
    if (PyObject_GetBuffer(args[0], &payload, PyBUF_SIMPLE) < 0)
        return NULL;
    char head[HEX_LEN];
    memcpy(head, prev, HEX_LEN);
    PyObject *lines = NULL;
    /* First pass: count and check the records, so that the output is allocated once. */
    Py_ssize_t n = count_records(payload.buf, payload.len);
    if (n >= 0)
        lines = seal_records(payload.buf, payload.len, n, head);
    PyBuffer_Release(&payload);
    if (lines == NULL)
        return NULL;
    PyObject *head_obj = PyBytes_FromStringAndSize(head, HEX_LEN);
    if (head_obj == NULL) {
        Py_DECREF(lines);
        return NULL;
    }
    return Py_BuildValue("(NNn)", lines, head_obj, n);
}

static PyMethodDef methods[] = {
    {"count", count, METH_O, "count(payload) -> int: the records of a batch, each checked to be an object."},
    {"seal", (PyCFunction)(void (*)(void))seal, METH_FASTCALL,
     "seal(payload, prev) -> (lines, head, count): chain the records of a batch after prev."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "fastproxy.audit._seal", "Chaining audit records in batches (see seal).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__seal(void) { return PyModule_Create(&module); }
