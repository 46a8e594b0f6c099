/*
 * fix_gateway._fixfast: the FIX gateway's per-message hot path, compiled.
 *
 * Why hand-written C: every order crosses this code twice (NewOrderSingle in, ExecutionReport
 * out), and at the exchange's target rate the pure-Python framing, parsing, validation and
 * encoding alone cost more CPU per order than the whole gateway budget. No FIX library does
 * what is needed here at this speed: the gateway's exact garbled-frame classification and
 * resynchronisation rules, its own FixMessage, and validation against tables compiled from its
 * own dictionary with exactly the Python validator's answers. The pure-Python implementations
 * (codec.py, validator.py, session.py, store.py) stay the reference; the tests compare both
 * on random input, and every path this module does not handle itself goes to the reference.
 *
 * Contents:
 *   FixMessage   parsed message; tag index built at parse time, values created on first use
 *   split        framing and parsing of a byte stream (codec._split's contract)
 *   encode       a complete message from header values and a field list (codec.encode)
 *   format_utc_timestamp / parse_utc_timestamp
 *   check_header the session's header checks (order, duplicates, empty values, SendingTime,
 *                PossDupFlag, PossResend)
 *   MsgTable     the validator's fast path for one MsgType (tables compiled by validator.py)
 *   store_record a FileStore log record (length, CRC-32, seq, message)
 *
 * Input never makes this code crash or read out of bounds: every scan is bounded by the buffer
 * it scans, and anything unusual (odd value types, huge numbers, errors) goes to the Python
 * reference, which defines the behaviour.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>     /* T_OBJECT_EX, READ_RESTRICTED: member slots of report types */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SOH 1

/* Python reference implementations (set by codec.py): used for every input not handled here. */
static PyObject *fb_format_ts, *fb_parse_ts, *fb_encode, *garbled_type;

/* ------------------------------------------------------------------------------ helpers */

#define TAG_CACHE 10000
static PyObject *tag_cache[TAG_CACHE];

/* New reference to the int ``tag`` (cached for common tags). */
static PyObject *tag_object(int32_t tag) {
    if (tag >= 0 && tag < TAG_CACHE) {
        PyObject *o = tag_cache[tag];
        if (o == NULL) {
            o = PyLong_FromLong(tag);
            if (o == NULL)
                return NULL;
            tag_cache[tag] = o;
        }
        Py_INCREF(o);
        return o;
    }
    return PyLong_FromLong(tag);
}

static inline Py_ssize_t find_byte(const unsigned char *b, Py_ssize_t from, Py_ssize_t to,
                                   unsigned char c) {
    if (from >= to)
        return -1;
    const unsigned char *p = memchr(b + from, c, (size_t)(to - from));
    return p ? (Py_ssize_t)(p - b) : -1;
}

static const char BEGIN[] = "8=FIX";

/* Index of the next "8=FIX" at or after ``from`` in b[0:n], -1 if none. */
static Py_ssize_t find_begin(const unsigned char *b, Py_ssize_t from, Py_ssize_t n) {
    while (from + 5 <= n) {
        const unsigned char *p = memchr(b + from, '8', (size_t)(n - 4 - from));
        if (p == NULL)
            return -1;
        if (memcmp(p, BEGIN, 5) == 0)
            return (Py_ssize_t)(p - b);
        from = (Py_ssize_t)(p - b) + 1;
    }
    return -1;
}

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static inline int all_digits(const unsigned char *p, Py_ssize_t n) {
    if (n <= 0)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return 0;
    return 1;
}

/* Value of at most 18 digits (caller checked they are digits). */
static inline long long digits_value(const unsigned char *p, Py_ssize_t n) {
    long long v = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        v = v * 10 + (p[i] - '0');
    return v;
}

/* Sum of p[0:n] modulo 256 (the FIX CheckSum), eight bytes at a time. */
static unsigned int byte_sum(const unsigned char *p, Py_ssize_t n) {
    const uint64_t lo = 0x00FF00FF00FF00FFULL;
    uint64_t total = 0;
    while (n >= 8) {
        uint64_t acc = 0;                      /* four 16-bit lanes; 64 rounds cannot overflow */
        Py_ssize_t rounds = n / 8 < 64 ? n / 8 : 64;
        for (Py_ssize_t r = 0; r < rounds; r++) {
            uint64_t x;
            memcpy(&x, p, 8);
            acc += (x & lo) + ((x >> 8) & lo);
            p += 8;
        }
        n -= rounds * 8;
        total += (acc & 0xFFFF) + ((acc >> 16) & 0xFFFF) + ((acc >> 32) & 0xFFFF) + (acc >> 48);
    }
    while (n-- > 0)
        total += *p++;
    return (unsigned int)(total & 255);
}

/* A growable byte buffer; ``small`` avoids the heap for ordinary messages. */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
    char small[1024];
} Buf;

static void buf_init(Buf *b) {
    b->p = b->small;
    b->len = 0;
    b->cap = sizeof(b->small);
}

static void buf_free(Buf *b) {
    if (b->p != b->small)
        PyMem_Free(b->p);
}

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap)
        return 0;
    if (extra > PY_SSIZE_T_MAX / 4 - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->len + extra)
        cap *= 2;
    char *np;
    if (b->p == b->small) {
        np = PyMem_Malloc((size_t)cap);
        if (np != NULL)
            memcpy(np, b->small, (size_t)b->len);
    } else {
        np = PyMem_Realloc(b->p, (size_t)cap);
    }
    if (np == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = np;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0)
        return -1;
    char *d = b->p + b->len;
    if (n <= 24) {                            /* most values: cheaper than a call */
        for (Py_ssize_t i = 0; i < n; i++)
            d[i] = s[i];
    } else {
        memcpy(d, s, (size_t)n);
    }
    b->len += n;
    return 0;
}

static inline int has_soh(const char *s, Py_ssize_t n) {
    if (n > 32)
        return memchr(s, SOH, (size_t)n) != NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] == SOH)
            return 1;
    return 0;
}

/* Decimal text of v into out (at least 21 bytes); returns the length. */
static int fmt_ll(char *out, long long v) {
    char tmp[24];
    int n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    int k = 0;
    if (v < 0)
        out[k++] = '-';
    while (n)
        out[k++] = tmp[--n];
    return k;
}

/* PySequence_Fast, but a list comes back as a tuple copy: the callers keep borrowed items
 * across calls that can run Python code (__eq__, __index__, decode), and that code may
 * resize the caller's list (an out-of-bounds access if the list itself were used). */
static PyObject *seq_snapshot(PyObject *o, const char *msg) {
    PyObject *s = PySequence_Fast(o, msg);
    if (s != NULL && PyList_Check(s))
        Py_SETREF(s, PyList_AsTuple(s));
    return s;
}

/* ------------------------------------------------------------------------- FixMessage */

#define GIVEN UINT32_MAX   /* MField.off of a value given as an object (not in raw) */

typedef struct {
    int32_t tag;      /* the tag (meaningful when the message has an index) */
    uint32_t off;     /* value offset in raw, or GIVEN */
    uint32_t len;     /* value length */
} MField;

/* Layout: the object, then vals[n], f[n] and the hash table, in one allocation small enough
 * for the object allocator for an ordinary order (fewer than about 18 fields). */
typedef struct {
    PyObject_VAR_HEAD
    PyObject *raw;
    PyObject *fields;   /* tuple of (tag, value), built on first use */
    PyObject *mtype;    /* msg_type, built on first use */
    PyObject *pyindex;  /* dict(reversed(fields)) for lookups the index cannot answer */
    PyObject **vals;    /* the values as bytes, each created on first use */
    MField *f;
    void *htab;         /* open addressing: field index + 1 (0 = empty), uint8 or int32 */
    Py_ssize_t n;
    uint32_t hmask;
    uint8_t hshift;
    uint8_t hwide;      /* htab holds int32 (else uint8) */
    uint8_t noindex;    /* a tag is not an int32: every lookup goes through pyindex */
    _Alignas(8) char data[];
} FixMsg;

static PyTypeObject FixMsgType;

#define FixMsg_CheckExact(o) (Py_TYPE(o) == &FixMsgType)

static inline uint32_t hslot(const FixMsg *m, int32_t tag) {
    return (uint32_t)(((uint32_t)tag * 2654435761u) >> m->hshift) & m->hmask;
}

static FixMsg *msg_alloc(Py_ssize_t n, int with_index) {
    size_t hcap = 0, hsize = 0;
    int bits = 0;
    int wide = n >= 255;
    if (with_index) {
        hcap = 8;
        bits = 3;
        while (hcap < (size_t)n + (size_t)n / 2) {
            hcap <<= 1;
            bits++;
        }
        hsize = hcap * (wide ? sizeof(int32_t) : sizeof(uint8_t));
    }
    Py_ssize_t nbytes = (Py_ssize_t)(n * (sizeof(PyObject *) + sizeof(MField)) + hsize);
    FixMsg *m = PyObject_NewVar(FixMsg, &FixMsgType, nbytes);
    if (m == NULL)
        return NULL;
    m->raw = m->fields = m->mtype = m->pyindex = NULL;
    m->n = n;
    m->vals = (PyObject **)m->data;
    m->f = (MField *)(m->vals + n);
    m->noindex = !with_index;
    m->hwide = (uint8_t)wide;
    if (hcap) {
        m->htab = m->f + n;
        memset(m->htab, 0, hsize);
        m->hmask = (uint32_t)(hcap - 1);
        m->hshift = (uint8_t)(32 - bits);
    } else {
        m->htab = NULL;
        m->hmask = 0;
        m->hshift = 0;
    }
    memset(m->vals, 0, (size_t)n * sizeof(PyObject *));
    return m;
}

static void msg_build_index(FixMsg *m) {
    for (Py_ssize_t i = 0; i < m->n; i++) {
        int32_t tag = m->f[i].tag;
        uint32_t h = hslot(m, tag);
        for (;;) {
            int32_t k = m->hwide ? ((int32_t *)m->htab)[h] : ((uint8_t *)m->htab)[h];
            if (k == 0) {
                if (m->hwide)
                    ((int32_t *)m->htab)[h] = (int32_t)(i + 1);
                else
                    ((uint8_t *)m->htab)[h] = (uint8_t)(i + 1);
                break;
            }
            if (m->f[k - 1].tag == tag)
                break;              /* the first occurrence stays */
            h = (h + 1) & m->hmask;
        }
    }
}

/* Index of the first field with ``tag``, -1 if none (indexed messages only). */
static inline Py_ssize_t msg_lookup(const FixMsg *m, int32_t tag) {
    uint32_t h = hslot(m, tag);
    if (!m->hwide) {
        const uint8_t *t = m->htab;
        for (;;) {
            int k = t[h];
            if (k == 0)
                return -1;
            if (m->f[k - 1].tag == tag)
                return k - 1;
            h = (h + 1) & m->hmask;
        }
    }
    const int32_t *t = m->htab;
    for (;;) {
        int32_t k = t[h];
        if (k == 0)
            return -1;
        if (m->f[k - 1].tag == tag)
            return k - 1;
        h = (h + 1) & m->hmask;
    }
}

/* Borrowed reference to the value of field i (created on first use). */
static inline PyObject *msg_value(FixMsg *m, Py_ssize_t i) {
    PyObject *v = m->vals[i];
    if (v == NULL)
        v = m->vals[i] = PyBytes_FromStringAndSize(PyBytes_AS_STRING(m->raw) + m->f[i].off,
                                                   m->f[i].len);
    return v;
}

/* Pointer and length of the bytes of field i; 0 if the value is not bytes. */
static inline int msg_bytes(FixMsg *m, Py_ssize_t i, const unsigned char **p, Py_ssize_t *n) {
    MField *f = &m->f[i];
    if (f->off != GIVEN) {
        *p = (const unsigned char *)PyBytes_AS_STRING(m->raw) + f->off;
        *n = f->len;
        return 1;
    }
    PyObject *v = m->vals[i];
    if (!PyBytes_CheckExact(v))
        return 0;
    *p = (const unsigned char *)PyBytes_AS_STRING(v);
    *n = PyBytes_GET_SIZE(v);
    return 1;
}

static PyObject *msg_fields(FixMsg *m) {
    if (m->fields != NULL)
        return m->fields;
    PyObject *t = PyTuple_New(m->n);
    if (t == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < m->n; i++) {
        PyObject *v = msg_value(m, i);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyObject *tag = tag_object(m->f[i].tag);
        if (tag == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        Py_INCREF(v);
        PyObject *pair = PyTuple_Pack(2, tag, v);
        Py_DECREF(tag);
        Py_DECREF(v);
        if (pair == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, pair);
    }
    m->fields = t;
    return t;
}

/* dict(reversed(fields)), as the reference builds its index. */
static PyObject *msg_pyindex(FixMsg *m) {
    if (m->pyindex != NULL)
        return m->pyindex;
    PyObject *fields = msg_fields(m);
    if (fields == NULL)
        return NULL;
    PyObject *rev = PyObject_CallOneArg((PyObject *)&PyReversed_Type, fields);
    if (rev == NULL)
        return NULL;
    m->pyindex = PyObject_CallOneArg((PyObject *)&PyDict_Type, rev);
    Py_DECREF(rev);
    return m->pyindex;
}

/* Field index of the first ``key``: >= 0 found, -1 absent, -2 error; -3: answer in *out
 * (a new reference) from the Python index. */
static Py_ssize_t msg_find(FixMsg *m, PyObject *key, PyObject **out) {
    if (!m->noindex && PyLong_Check(key)) {
        int overflow;
        long t = PyLong_AsLongAndOverflow(key, &overflow);
        if (overflow || t < INT32_MIN || t > INT32_MAX)
            return -1;
        return msg_lookup(m, (int32_t)t);
    }
    PyObject *index = msg_pyindex(m);
    if (index == NULL)
        return -2;
    PyObject *v = PyDict_GetItemWithError(index, key);
    if (v == NULL)
        return PyErr_Occurred() ? -2 : -1;
    Py_INCREF(v);
    *out = v;
    return -3;
}

static PyObject *FixMsg_get(FixMsg *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get() takes a tag and an optional default");
        return NULL;
    }
    PyObject *out = NULL;
    Py_ssize_t i = msg_find(m, args[0], &out);
    if (i >= 0) {
        PyObject *v = msg_value(m, i);
        Py_XINCREF(v);
        return v;
    }
    if (i == -3)
        return out;
    if (i == -2)
        return NULL;
    PyObject *d = nargs > 1 ? args[1] : Py_None;
    Py_INCREF(d);
    return d;
}

static PyObject *FixMsg_get_all(FixMsg *m, PyObject *tag) {
    PyObject *fields = msg_fields(m);
    if (fields == NULL)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields); i++) {
        PyObject *item = PyTuple_GET_ITEM(fields, i);
        PyObject *seq = seq_snapshot(item, "a field must be a (tag, value) pair");
        if (seq == NULL)
            goto fail;
        if (PySequence_Fast_GET_SIZE(seq) != 2) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "a field must be a (tag, value) pair");
            goto fail;
        }
        int eq = PyObject_RichCompareBool(PySequence_Fast_GET_ITEM(seq, 0), tag, Py_EQ);
        if (eq < 0 || (eq && PyList_Append(out, PySequence_Fast_GET_ITEM(seq, 1)) < 0)) {
            Py_DECREF(seq);
            goto fail;
        }
        Py_DECREF(seq);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static int FixMsg_contains(FixMsg *m, PyObject *key) {
    PyObject *out = NULL;
    Py_ssize_t i = msg_find(m, key, &out);
    if (i >= 0) {
        PyObject *v = msg_value(m, i);
        if (v == NULL)
            return -1;
        return v != Py_None;
    }
    if (i == -3) {
        int r = out != Py_None;
        Py_DECREF(out);
        return r;
    }
    return i == -2 ? -1 : 0;
}

static PyObject *FixMsg_get_msg_type(FixMsg *m, void *closure) {
    if (m->mtype == NULL) {
        PyObject *v = NULL;
        if (!m->noindex) {
            Py_ssize_t i = msg_lookup(m, 35);
            if (i >= 0) {
                v = msg_value(m, i);
                if (v == NULL)
                    return NULL;
                Py_INCREF(v);
            }
        } else {
            PyObject *key = tag_object(35);
            if (key == NULL)
                return NULL;
            PyObject *out = NULL;
            Py_ssize_t i = msg_find(m, key, &out);
            Py_DECREF(key);
            if (i == -2)
                return NULL;
            v = out;
        }
        if (v == NULL || v == Py_None) {
            Py_XDECREF(v);
            m->mtype = PyUnicode_FromStringAndSize("", 0);
        } else if (PyBytes_CheckExact(v)) {
            m->mtype = PyUnicode_DecodeASCII(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v),
                                             "replace");
            Py_DECREF(v);
        } else {
            m->mtype = PyObject_CallMethod(v, "decode", "ss", "ascii", "replace");
            Py_DECREF(v);
        }
        if (m->mtype == NULL)
            return NULL;
    }
    Py_INCREF(m->mtype);
    return m->mtype;
}

static PyObject *FixMsg_get_fields(FixMsg *m, void *closure) {
    PyObject *t = msg_fields(m);
    Py_XINCREF(t);
    return t;
}

static PyObject *FixMsg_get_raw(FixMsg *m, void *closure) {
    Py_INCREF(m->raw);
    return m->raw;
}

static void FixMsg_dealloc(FixMsg *m) {
    for (Py_ssize_t i = 0; i < m->n; i++)
        Py_XDECREF(m->vals[i]);
    Py_XDECREF(m->raw);
    Py_XDECREF(m->fields);
    Py_XDECREF(m->mtype);
    Py_XDECREF(m->pyindex);
    PyObject_Free(m);
}

/* FixMessage(fields, raw=b""): a message made by hand (tests, tools). */
static PyObject *FixMsg_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *names[] = {"fields", "raw", NULL};
    PyObject *fields, *raw = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:FixMessage", names, &fields, &raw))
        return NULL;
    PyObject *t = PyTuple_CheckExact(fields) ? Py_NewRef(fields) : PySequence_Tuple(fields);
    if (t == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(t);
    int indexable = 1;
    for (Py_ssize_t i = 0; i < n && indexable; i++) {
        PyObject *item = PyTuple_GET_ITEM(t, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2 ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(item, 0))) {
            indexable = 0;
            break;
        }
        int overflow;
        long tag = PyLong_AsLongAndOverflow(PyTuple_GET_ITEM(item, 0), &overflow);
        if (overflow || tag < INT32_MIN || tag > INT32_MAX)
            indexable = 0;
    }
    FixMsg *m = msg_alloc(indexable ? n : 0, indexable);
    if (m == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    m->fields = t;
    if (raw == NULL)
        raw = PyBytes_FromStringAndSize("", 0);
    else
        Py_INCREF(raw);
    m->raw = raw;
    if (raw == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    if (indexable) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PyTuple_GET_ITEM(t, i);
            MField *f = &m->f[i];
            f->tag = (int32_t)PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
            f->off = GIVEN;
            f->len = 0;
            m->vals[i] = Py_NewRef(PyTuple_GET_ITEM(item, 1));
        }
        msg_build_index(m);
    }
    return (PyObject *)m;
}

static PyObject *FixMsg_richcompare(PyObject *a, PyObject *b, int op) {
    if (op != Py_EQ && op != Py_NE)
        Py_RETURN_NOTIMPLEMENTED;
    int eq = 0;
    if (FixMsg_CheckExact(a) && FixMsg_CheckExact(b)) {
        PyObject *fa = msg_fields((FixMsg *)a), *fb;
        if (fa == NULL || (fb = msg_fields((FixMsg *)b)) == NULL)
            return NULL;
        eq = PyObject_RichCompareBool(fa, fb, Py_EQ);
        if (eq < 0)
            return NULL;
    }
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static Py_hash_t FixMsg_hash(FixMsg *m) {
    PyObject *t = msg_fields(m);
    return t == NULL ? -1 : PyObject_Hash(t);
}

static PyObject *FixMsg_repr(FixMsg *m) {
    PyObject *fields = msg_fields(m);
    if (fields == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    PyObject *parts = PyList_New(n), *text = NULL, *sep = NULL, *res = NULL;
    if (parts == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *seq = seq_snapshot(PyTuple_GET_ITEM(fields, i),
                                     "a field must be a (tag, value) pair"), *v;
        if (seq == NULL)
            goto done;
        if (PySequence_Fast_GET_SIZE(seq) != 2) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "a field must be a (tag, value) pair");
            goto done;
        }
        v = PyObject_CallMethod(PySequence_Fast_GET_ITEM(seq, 1), "decode", "s", "latin-1");
        if (v == NULL) {
            Py_DECREF(seq);
            goto done;
        }
        PyObject *s = PyUnicode_FromFormat("%S=%U", PySequence_Fast_GET_ITEM(seq, 0), v);
        Py_DECREF(seq);
        Py_DECREF(v);
        if (s == NULL)
            goto done;
        PyList_SET_ITEM(parts, i, s);
    }
    sep = PyUnicode_FromString("|");
    if (sep == NULL)
        goto done;
    text = PyUnicode_Join(sep, parts);
    if (text == NULL)
        goto done;
    res = PyUnicode_FromFormat("FixMessage(%R)", text);
done:
    Py_XDECREF(sep);
    Py_XDECREF(text);
    Py_DECREF(parts);
    return res;
}

static PyMethodDef FixMsg_methods[] = {
    {"get", (PyCFunction)(void (*)(void))FixMsg_get, METH_FASTCALL,
     "get(tag, default=None): value of the first occurrence of tag, else default."},
    {"get_all", (PyCFunction)FixMsg_get_all, METH_O,
     "get_all(tag): every value of tag in wire order (repeating groups)."},
    {NULL}};

static PyGetSetDef FixMsg_getset[] = {
    {"fields", (getter)FixMsg_get_fields, NULL, "every (tag, value) in wire order", NULL},
    {"raw", (getter)FixMsg_get_raw, NULL, "the exact bytes received", NULL},
    {"msg_type", (getter)FixMsg_get_msg_type, NULL, "MsgType (35) decoded", NULL},
    {NULL}};

static PySequenceMethods FixMsg_as_sequence = {
    .sq_contains = (objobjproc)FixMsg_contains,
};

static PyTypeObject FixMsgType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fix_gateway._fixfast.FixMessage",
    .tp_doc = "A parsed FIX message (see fix_gateway.codec): fields, raw, get, get_all, "
              "msg_type.",
    .tp_basicsize = offsetof(FixMsg, data),
    .tp_itemsize = 1,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = FixMsg_new,
    .tp_dealloc = (destructor)FixMsg_dealloc,
    .tp_repr = (reprfunc)FixMsg_repr,
    .tp_hash = (hashfunc)FixMsg_hash,
    .tp_richcompare = FixMsg_richcompare,
    .tp_methods = FixMsg_methods,
    .tp_getset = FixMsg_getset,
    .tp_as_sequence = &FixMsg_as_sequence,
};

/* ----------------------------------------------------------------------------- framing */

#define MAX_BEGIN_STRING 16
#define MAX_LENGTH_DIGITS 9
#define GARBLED_SAMPLE 512

/* Length tag -> data tag (codec.DATA_LENGTH_TAGS); the slot is the position in this table. */
static const int32_t LEN_TAGS[] = {90, 93, 95, 212, 348, 350, 352, 354, 356, 358, 360, 362,
                                   364, 445, 618, 621};
static const int32_t DATA_TAGS[] = {91, 89, 96, 213, 349, 351, 353, 355, 357, 359, 361, 363,
                                    365, 446, 619, 622};
#define N_DATA_TAGS 16

/* Bit set of the length and data tags (all below 1024), filled at module init. */
static uint64_t special_tags[16];

static inline int slot_of(const int32_t *table, int32_t tag) {
    for (int k = 0; k < N_DATA_TAGS; k++)
        if (table[k] == tag)
            return k;
    return -1;
}

/* A field being parsed. */
typedef struct {
    int32_t tag;
    int32_t tlen;     /* digits of the tag */
    Py_ssize_t off;   /* value offset from the frame's start */
    Py_ssize_t len;
} PField;

/* Scratch field list of the frame being parsed (the GIL serialises every use). */
static PField *scratch;
static Py_ssize_t scratch_cap;

static int scratch_reserve(Py_ssize_t n) {
    if (n <= scratch_cap)
        return 0;
    Py_ssize_t cap = scratch_cap ? scratch_cap : 64;
    while (cap < n)
        cap *= 2;
    PField *p = PyMem_Realloc(scratch, (size_t)cap * sizeof(PField));
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    scratch = p;
    scratch_cap = cap;
    return 0;
}

enum { FR_NEED, FR_OK, FR_BAD, FR_ERROR };

/* Fields of the body b[s:e] (which ends with SOH) into scratch[2...]; offsets relative to
 * ``base``. Returns the field count (>= 2), or -1 with *reason set, or -2 on error.
 * ``big``: set when a tag does not fit an int32 (the message then gets no index). */
static Py_ssize_t parse_body(const unsigned char *b, Py_ssize_t s, Py_ssize_t e,
                             Py_ssize_t base, const char **reason, int *big) {
    long long pending[N_DATA_TAGS];
    for (int k = 0; k < N_DATA_TAGS; k++)
        pending[k] = -1;
    Py_ssize_t nf = 2;
    Py_ssize_t i = s;
    while (i < e) {
        /* the tag: digits up to "=" (anything else is a malformed field, as in the
         * reference, which finds "=" and then requires digits before it) */
        Py_ssize_t eq = i;
        long long t = 0;
        while (eq < e && is_digit(b[eq])) {
            if (t <= INT32_MAX)
                t = t * 10 + (b[eq] - '0');    /* int() ignores leading zeros */
            eq++;
        }
        if (eq == i || eq == e || b[eq] != '=') {
            *reason = "malformed field";
            return -1;
        }
        int32_t tag = -1;
        int is_big = t > INT32_MAX;
        if (!is_big)
            tag = (int32_t)t;
        /* More digits than an int32 has: a huge tag, or a small one with leading zeros. int()'s
         * limit on digits counts leading zeros too, so both go through the check below (else a
         * "000...055" tag past the limit is accepted here, unlike the reference, and a frame
         * that also has a big tag makes make_message's conversion raise out of split). */
        if (is_big || eq - i > 10) {
            /* the reference converts with int(): mirror its limit on digits */
            char stack[64], *digits = stack;
            Py_ssize_t nd = eq - i;
            if (nd >= (Py_ssize_t)sizeof(stack)) {
                digits = PyMem_Malloc((size_t)nd + 1);
                if (digits == NULL) {
                    PyErr_NoMemory();
                    return -2;
                }
            }
            memcpy(digits, b + i, (size_t)nd);
            digits[nd] = 0;
            PyObject *o = PyLong_FromString(digits, NULL, 10);
            if (digits != stack)
                PyMem_Free(digits);
            if (o == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_ValueError))
                    return -2;
                PyErr_Clear();
                *reason = "malformed field";
                return -1;
            }
            Py_DECREF(o);
            if (is_big)
                *big = 1;
        }
        if (!is_big && (tag == 8 || tag == 9 || tag == 10)) {
            *reason = "BeginString, BodyLength or CheckSum inside the body";
            return -1;
        }
        Py_ssize_t end;
        int special = !is_big && tag < 1024 && (special_tags[tag >> 6] >> (tag & 63)) & 1;
        int dslot = special ? slot_of(DATA_TAGS, tag) : -1;
        if (dslot >= 0 && pending[dslot] >= 0) {
            long long want = pending[dslot];
            pending[dslot] = -1;
            if (want >= (long long)(e - eq)) {
                *reason = "data field length mismatch";
                return -1;
            }
            end = eq + 1 + (Py_ssize_t)want;
            if (end >= e || b[end] != SOH) {
                *reason = "data field length mismatch";
                return -1;
            }
        } else {
            end = eq + 1;
            while (end < e && b[end] != SOH)
                end++;
            if (end == e) {
                *reason = "malformed field";
                return -1;
            }
        }
        int lslot = special ? slot_of(LEN_TAGS, tag) : -1;
        if (lslot >= 0) {
            Py_ssize_t vl = end - eq - 1;
            if (!all_digits(b + eq + 1, vl)) {
                *reason = "bad data field length";
                return -1;
            }
            Py_ssize_t z2 = eq + 1;
            while (z2 < end - 1 && b[z2] == '0')
                z2++;
            /* beyond 18 digits the length exceeds any frame: the data field cannot match */
            pending[lslot] = end - z2 > 18 ? (long long)1 << 62 : digits_value(b + z2, end - z2);
        }
        if (scratch_reserve(nf + 2) < 0)
            return -2;
        PField *f = &scratch[nf++];
        f->tag = tag;
        f->tlen = (int32_t)(eq - i);
        f->off = eq + 1 - base;
        f->len = end - eq - 1;
        i = end + 1;
    }
    return nf;
}

static int trailer_prefix(const unsigned char *b, Py_ssize_t n) {
    static const char head[] = "\00110=";
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = b[i];
        if (i < 4) {
            if (c != (unsigned char)head[i])
                return 0;
        } else if (i < 7) {
            if (c < '0' || c > '9')
                return 0;
        } else if (c != SOH) {
            return 0;
        }
    }
    return 1;
}

/* A message from scratch[0:nf] and the frame b[pos:end]. */
static PyObject *make_message(const unsigned char *b, Py_ssize_t pos, Py_ssize_t end,
                              Py_ssize_t nf, int big) {
    PyObject *raw = PyBytes_FromStringAndSize((const char *)b + pos, end - pos);
    if (raw == NULL)
        return NULL;
    FixMsg *m = msg_alloc(nf, !big);
    if (m == NULL) {
        Py_DECREF(raw);
        return NULL;
    }
    m->raw = raw;
    /* values beyond 32-bit offsets (a frame of 4 GiB) are made at once */
    int eager = end - pos >= (Py_ssize_t)GIVEN;
    for (Py_ssize_t i = 0; i < nf; i++) {
        PField *p = &scratch[i];
        MField *f = &m->f[i];
        f->tag = p->tag;
        if (eager) {
            f->off = GIVEN;
            f->len = 0;
            m->vals[i] = PyBytes_FromStringAndSize(PyBytes_AS_STRING(raw) + p->off, p->len);
            if (m->vals[i] == NULL)
                goto fail;
        } else {
            f->off = (uint32_t)p->off;
            f->len = (uint32_t)p->len;
        }
    }
    if (!big) {
        msg_build_index(m);
        return (PyObject *)m;
    }
    /* a tag beyond int32: build the fields with the reference's int() conversion, from a
     * copy of the field list (making objects can run the collector, hence any code) */
    PField *pf = PyMem_Malloc((size_t)nf * sizeof(PField));
    if (pf == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    memcpy(pf, scratch, (size_t)nf * sizeof(PField));
    PyObject *t = PyTuple_New(nf);
    if (t == NULL) {
        PyMem_Free(pf);
        goto fail;
    }
    m->fields = t;
    for (Py_ssize_t i = 0; i < nf; i++) {
        PField *f = &pf[i];
        Py_ssize_t toff = f->off - 1 - f->tlen;
        char stack[64], *digits = stack;
        if (f->tlen >= (int32_t)sizeof(stack)) {
            digits = PyMem_Malloc((size_t)f->tlen + 1);
            if (digits == NULL) {
                PyErr_NoMemory();
                goto fail_pf;
            }
        }
        memcpy(digits, PyBytes_AS_STRING(raw) + toff, (size_t)f->tlen);
        digits[f->tlen] = 0;
        PyObject *tag = PyLong_FromString(digits, NULL, 10);
        if (digits != stack)
            PyMem_Free(digits);
        if (tag == NULL)
            goto fail_pf;
        PyObject *v = msg_value(m, i);
        if (v == NULL) {
            Py_DECREF(tag);
            goto fail_pf;
        }
        Py_INCREF(v);
        PyObject *pair = PyTuple_Pack(2, tag, v);
        Py_DECREF(tag);
        Py_DECREF(v);
        if (pair == NULL)
            goto fail_pf;
        PyTuple_SET_ITEM(t, i, pair);
    }
    PyMem_Free(pf);
    return (PyObject *)m;
fail_pf:
    PyMem_Free(pf);
fail:
    Py_DECREF(m);
    return NULL;
}

/* One frame at pos (where "8=FIX" starts); see codec._frame_at. */
static int frame_at(const unsigned char *b, Py_ssize_t pos, Py_ssize_t n, long long max_size,
                    PyObject **msg, Py_ssize_t *out, const char **reason) {
    Py_ssize_t lim = pos + 3 + MAX_BEGIN_STRING;
    Py_ssize_t soh1 = find_byte(b, pos + 2, lim < n ? lim : n, SOH);
    if (soh1 < 0) {
        if (n - pos > 2 + MAX_BEGIN_STRING) {
            *reason = "BeginString too long";
            return FR_BAD;
        }
        *out = 0;
        return FR_NEED;
    }
    Py_ssize_t p = soh1 + 1;
    if (n < p + 2) {
        *out = 0;
        return FR_NEED;
    }
    if (b[p] != '9' || b[p + 1] != '=') {
        *reason = "BodyLength is not the second field";
        return FR_BAD;
    }
    lim = p + 3 + MAX_LENGTH_DIGITS;
    Py_ssize_t soh2 = find_byte(b, p + 2, lim < n ? lim : n, SOH);
    if (soh2 < 0) {
        if (n - p > 2 + MAX_LENGTH_DIGITS) {
            *reason = "BodyLength not numeric";
            return FR_BAD;
        }
        *out = 0;
        return FR_NEED;
    }
    if (!all_digits(b + p + 2, soh2 - p - 2)) {
        *reason = "BodyLength not numeric";
        return FR_BAD;
    }
    Py_ssize_t body_start = soh2 + 1;
    Py_ssize_t body_end = body_start + (Py_ssize_t)digits_value(b + p + 2, soh2 - p - 2);
    Py_ssize_t end = body_end + 7;
    if ((long long)(end - pos) > max_size) {
        *reason = "message exceeds maximum size";
        return FR_BAD;
    }
    if (n < end) {
        if (n > body_end && !trailer_prefix(b + body_end - 1, n - body_end + 1)) {
            *reason = "BodyLength incorrect or CheckSum not last";
            return FR_BAD;
        }
        *out = n <= body_end ? body_end + 1 : n + 1;
        return FR_NEED;
    }
    if (memcmp(b + body_end, "10=", 3) != 0 || b[end - 1] != SOH || b[body_end - 1] != SOH) {
        *reason = "BodyLength incorrect or CheckSum not last";
        return FR_BAD;
    }
    if (!all_digits(b + body_end + 3, 3)) {
        *reason = "CheckSum not numeric";
        return FR_BAD;
    }
    if (byte_sum(b + pos, body_end - pos) != (unsigned int)digits_value(b + body_end + 3, 3)) {
        *reason = "CheckSum incorrect";
        return FR_BAD;
    }
    if (memcmp(b + body_start, "35=", 3) != 0) {
        *reason = "MsgType is not the third field";
        return FR_BAD;
    }
    if (scratch_reserve(64) < 0)
        return FR_ERROR;
    int big = 0;
    Py_ssize_t nf = parse_body(b, body_start, body_end, pos, reason, &big);
    if (nf == -1)
        return FR_BAD;
    if (nf < 0)
        return FR_ERROR;
    if (nf >= INT32_MAX - 1)
        big = 1;                 /* more fields than the int32 index holds: no index */
    PField *f = &scratch[0];
    f->tag = 8;
    f->tlen = 1;
    f->off = 2;
    f->len = soh1 - pos - 2;
    f = &scratch[1];
    f->tag = 9;
    f->tlen = 1;
    f->off = p + 2 - pos;
    f->len = soh2 - p - 2;
    f = &scratch[nf++];
    f->tag = 10;
    f->tlen = 2;
    f->off = body_end + 3 - pos;
    f->len = 3;
    *msg = make_message(b, pos, end, nf, big);
    if (*msg == NULL)
        return FR_ERROR;
    *out = end;
    return FR_OK;
}

static Py_ssize_t partial_begin(const unsigned char *b, Py_ssize_t n) {
    for (Py_ssize_t k = 4; k >= 1; k--)
        if (n >= k && memcmp(b + n - k, BEGIN, (size_t)k) == 0)
            return k;
    return 0;
}

static int add_garbled(PyObject *list, const char *reason, const unsigned char *b, Py_ssize_t s,
                       Py_ssize_t e) {
    Py_ssize_t k = e - s < GARBLED_SAMPLE ? e - s : GARBLED_SAMPLE;
    PyObject *g;
    if (garbled_type != NULL)
        g = PyObject_CallFunction(garbled_type, "sy#n", reason, (const char *)b + s, k, e - s);
    else
        g = Py_BuildValue("(sy#n)", reason, (const char *)b + s, k, e - s);
    if (g == NULL)
        return -1;
    int r = PyList_Append(list, g);
    Py_DECREF(g);
    return r;
}

static PyObject *ff_split(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "split(buffer, max_size)");
        return NULL;
    }
    int overflow;
    long long max_size = PyLong_AsLongLongAndOverflow(args[1], &overflow);
    if (max_size == -1 && PyErr_Occurred())
        return NULL;
    if (overflow)
        max_size = overflow > 0 ? LLONG_MAX : LLONG_MIN;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *b = view.buf;
    Py_ssize_t n = view.len, pos = 0, need = 0;
    PyObject *frames = PyList_New(0), *garbled = PyList_New(0), *res = NULL;
    if (frames == NULL || garbled == NULL)
        goto done;
    while (pos < n) {
        if (n - pos < 5 || memcmp(b + pos, BEGIN, 5) != 0) {
            Py_ssize_t idx = find_begin(b, pos, n);
            if (idx < 0) {
                Py_ssize_t keep = n - partial_begin(b, n);
                if (keep > pos && add_garbled(garbled, "data outside a message", b, pos, keep) < 0)
                    goto done;
                pos = keep;
                break;
            }
            if (add_garbled(garbled, "data outside a message", b, pos, idx) < 0)
                goto done;
            pos = idx;
        }
        PyObject *msg = NULL;
        Py_ssize_t out = 0;
        const char *reason = NULL;
        int r = frame_at(b, pos, n, max_size, &msg, &out, &reason);
        if (r == FR_ERROR)
            goto done;
        if (r == FR_NEED) {
            need = out;
            break;
        }
        if (r == FR_OK) {
            int e = PyList_Append(frames, msg);
            Py_DECREF(msg);
            if (e < 0)
                goto done;
            pos = out;
            continue;
        }
        Py_ssize_t idx = find_begin(b, pos + 1, n);
        if (idx < 0) {
            idx = n - partial_begin(b, n);
            if (idx <= pos)
                idx = pos + 1;
        }
        if (add_garbled(garbled, reason, b, pos, idx) < 0)
            goto done;
        pos = idx;
    }
    res = Py_BuildValue("(OnOn)", frames, pos, garbled, need);
done:
    Py_XDECREF(frames);
    Py_XDECREF(garbled);
    PyBuffer_Release(&view);
    return res;
}

/* ---------------------------------------------------------------------------- encoding */

/* Appends the text of v as codec._text renders it. 0: done, 1: not handled here (the
 * reference decides, including its errors), -1: error. ``soh``: refuse SOH (fallback). */
static int put_text(Buf *b, PyObject *v, int soh) {
    const char *s;
    Py_ssize_t n;
    char num[32];
    if (PyUnicode_CheckExact(v)) {
        if (!PyUnicode_IS_ASCII(v))
            return 1;
        s = (const char *)PyUnicode_1BYTE_DATA(v);
        n = PyUnicode_GET_LENGTH(v);
    } else if (PyBytes_CheckExact(v)) {
        s = PyBytes_AS_STRING(v);
        n = PyBytes_GET_SIZE(v);
    } else if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow)
            return 1;
        n = fmt_ll(num, x);
        s = num;
    } else if (v == Py_True) {
        s = "Y";
        n = 1;
    } else if (v == Py_False) {
        s = "N";
        n = 1;
    } else {
        return 1;
    }
    if (soh && has_soh(s, n))
        return 1;
    return buf_put(b, s, n);
}

/* "<tag>=" of common tags, made on first use. */
#define TAG_TEXT 1024
static char tag_text[TAG_TEXT][8];
static uint8_t tag_text_len[TAG_TEXT];

/* "<tag>=" (the text of tags below TAG_TEXT is made once) */
static int put_tag(Buf *b, long long tag) {
    if (tag >= 0 && tag < TAG_TEXT) {
        int k = tag_text_len[tag];
        if (k == 0) {
            k = fmt_ll(tag_text[tag], tag);
            tag_text[tag][k++] = '=';
            tag_text_len[tag] = (uint8_t)k;
        }
        return buf_put(b, tag_text[tag], k);
    }
    char t[24];
    int k = fmt_ll(t, tag);
    t[k++] = '=';
    return buf_put(b, t, k);
}

/* Appends "<tag>=<value>\x01" for each pair of a list or tuple; 0, 1 or -1 as put_text. */
static int put_fields(Buf *b, PyObject *seq) {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i];
        if (PyBytes_CheckExact(item)) {      /* a run of encoded fields (codec.encode) */
            Py_ssize_t k = PyBytes_GET_SIZE(item);
            const char *s = PyBytes_AS_STRING(item);
            if (k == 0 || s[k - 1] != SOH)
                return 1;                    /* the reference raises */
            if (buf_put(b, s, k) < 0)
                return -1;
            continue;
        }
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2)
            return 1;
        PyObject *tag = PyTuple_GET_ITEM(item, 0);
        if (!PyLong_CheckExact(tag))
            return 1;
        int overflow;
        long long t = PyLong_AsLongLongAndOverflow(tag, &overflow);
        if (overflow)
            return 1;
        if (put_tag(b, t) < 0)
            return -1;
        int r = put_text(b, PyTuple_GET_ITEM(item, 1), 1);
        if (r)
            return r;
        if (buf_put(b, "\001", 1) < 0)
            return -1;
    }
    return 0;
}

static PyObject *s_begin_string, *s_sender, *s_target, *s_seq, *s_sending_time,
    *s_extra_header, *s_msg_type, *s_fields, *s_default_begin, *empty_tuple;

static int kw_is(PyObject *name, PyObject *want) {
    return name == want || PyUnicode_Compare(name, want) == 0;
}

static PyObject *encode_fallback(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (fb_encode == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fixfast: no reference encode registered");
        return NULL;
    }
    return PyObject_Vectorcall(fb_encode, args, (size_t)nargs, kwnames);
}

/* encode(msg_type, fields, *, begin_string="FIX.4.4", sender, target, seq, sending_time,
 *        extra_header=()) -> bytes, exactly as codec's reference encode. */
static PyObject *ff_encode(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames) {
    PyObject *msg_type = NULL, *fields = NULL, *begin = s_default_begin, *sender = NULL,
             *target = NULL, *seq = NULL, *sending_time = NULL, *extra = empty_tuple;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs != 2)
        return encode_fallback(args, nargs, kwnames);
    msg_type = args[0];
    fields = args[1];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i), *v = args[nargs + i];
        /* keyword names are normally the interned strings: identity first */
        int which = k == s_sender ? 0 : k == s_target ? 1 : k == s_seq ? 2
                    : k == s_sending_time ? 3 : k == s_begin_string ? 4
                    : k == s_extra_header ? 5 : -1;
        if (which < 0)
            which = kw_is(k, s_sender) ? 0 : kw_is(k, s_target) ? 1 : kw_is(k, s_seq) ? 2
                    : kw_is(k, s_sending_time) ? 3 : kw_is(k, s_begin_string) ? 4
                    : kw_is(k, s_extra_header) ? 5 : -1;
        switch (which) {
        case 0: sender = v; break;
        case 1: target = v; break;
        case 2: seq = v; break;
        case 3: sending_time = v; break;
        case 4: begin = v; break;
        case 5: extra = v; break;
        default: return encode_fallback(args, nargs, kwnames);
        }
    }
    if (sender == NULL || target == NULL || seq == NULL || sending_time == NULL ||
        !PyLong_CheckExact(seq) ||
        !(PyList_CheckExact(fields) || PyTuple_CheckExact(fields)) ||
        !(PyList_CheckExact(extra) || PyTuple_CheckExact(extra)))
        return encode_fallback(args, nargs, kwnames);

    const char *bs;
    Py_ssize_t bn;
    if (PyUnicode_CheckExact(begin) && PyUnicode_IS_ASCII(begin)) {
        bs = (const char *)PyUnicode_1BYTE_DATA(begin);
        bn = PyUnicode_GET_LENGTH(begin);
    } else if (PyBytes_CheckExact(begin)) {
        bs = PyBytes_AS_STRING(begin);
        bn = PyBytes_GET_SIZE(begin);
        for (Py_ssize_t i = 0; i < bn; i++)
            if ((unsigned char)bs[i] >= 128)
                return encode_fallback(args, nargs, kwnames);
    } else {
        return encode_fallback(args, nargs, kwnames);
    }

    Buf body;
    buf_init(&body);
    int r;
    char num[32];
    int overflow;
    long long seqv = PyLong_AsLongLongAndOverflow(seq, &overflow);
    if (overflow) {
        r = 1;
        goto out;
    }
    if ((r = buf_put(&body, "35=", 3)) || (r = put_text(&body, msg_type, 1)) ||
        (r = buf_put(&body, "\00149=", 4)) || (r = put_text(&body, sender, 1)) ||
        (r = buf_put(&body, "\00156=", 4)) || (r = put_text(&body, target, 1)) ||
        (r = buf_put(&body, "\00134=", 4)) || (r = buf_put(&body, num, fmt_ll(num, seqv))) ||
        (r = buf_put(&body, "\00152=", 4)) || (r = put_text(&body, sending_time, 1)) ||
        (r = buf_put(&body, "\001", 1)) || (r = put_fields(&body, extra)) ||
        (r = put_fields(&body, fields)))
        goto out;
    char head[64];
    int hn = fmt_ll(head, (long long)body.len);
    Py_ssize_t total = 2 + bn + 3 + hn + 1 + body.len + 7;
    PyObject *res = PyBytes_FromStringAndSize(NULL, total);
    if (res == NULL) {
        r = -1;
        goto out;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(res);
    Py_ssize_t k = 0;
    memcpy(o, "8=", 2);
    k = 2;
    memcpy(o + k, bs, (size_t)bn);
    k += bn;
    memcpy(o + k, "\0019=", 3);
    k += 3;
    memcpy(o + k, head, (size_t)hn);
    k += hn;
    o[k++] = SOH;
    memcpy(o + k, body.p, (size_t)body.len);
    k += body.len;
    unsigned int sum = byte_sum(o, k);
    o[k++] = '1';
    o[k++] = '0';
    o[k++] = '=';
    o[k++] = (unsigned char)('0' + sum / 100);
    o[k++] = (unsigned char)('0' + sum / 10 % 10);
    o[k++] = (unsigned char)('0' + sum % 10);
    o[k++] = SOH;
    buf_free(&body);
    return res;
out:
    buf_free(&body);
    if (r < 0)
        return NULL;
    return encode_fallback(args, nargs, kwnames);
}

/* ------------------------------------------------------------------------ timestamps */

static void civil_from_days(long long z, long long *y, int *m, int *d) {
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static long long days_from_civil(long long y, int m, int d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static long long ts_cache_sec = -1;
static char ts_cache_prefix[17];

static inline void put2(char *o, int v) {
    o[0] = (char)('0' + v / 10);
    o[1] = (char)('0' + v % 10);
}

/* The 21 bytes "YYYYMMDD-HH:MM:SS.sss" of ns >= 0 into o. */
static void put_ts(char *out, long long ns) {
    long long sec = ns / 1000000000LL;
    int ms = (int)(ns % 1000000000LL / 1000000);
    if (sec != ts_cache_sec) {
        long long y;
        int mo, d;
        civil_from_days(sec / 86400, &y, &mo, &d);
        int sod = (int)(sec % 86400);
        char *o = ts_cache_prefix;
        o[0] = (char)('0' + y / 1000);
        o[1] = (char)('0' + y / 100 % 10);
        o[2] = (char)('0' + y / 10 % 10);
        o[3] = (char)('0' + y % 10);
        put2(o + 4, mo);
        put2(o + 6, d);
        o[8] = '-';
        put2(o + 9, sod / 3600);
        o[11] = ':';
        put2(o + 12, sod / 60 % 60);
        o[14] = ':';
        put2(o + 15, sod % 60);
        ts_cache_sec = sec;
    }
    memcpy(out, ts_cache_prefix, 17);
    out[17] = '.';
    out[18] = (char)('0' + ms / 100);
    out[19] = (char)('0' + ms / 10 % 10);
    out[20] = (char)('0' + ms % 10);
}

/* format_utc_timestamp(ns) -> b"YYYYMMDD-HH:MM:SS.sss" */
static PyObject *ff_format_ts(PyObject *mod, PyObject *arg) {
    int overflow = 0;
    long long ns = PyLong_CheckExact(arg) ? PyLong_AsLongLongAndOverflow(arg, &overflow) : -1;
    if (!PyLong_CheckExact(arg) || overflow || ns < 0) {
        if (fb_format_ts == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "_fixfast: no reference registered");
            return NULL;
        }
        return PyObject_CallOneArg(fb_format_ts, arg);
    }
    PyObject *res = PyBytes_FromStringAndSize(NULL, 21);
    if (res == NULL)
        return NULL;
    put_ts(PyBytes_AS_STRING(res), ns);
    return res;
}

/* ------------------------------------------------------------ execution report fields */

/* ExecReport attribute names, interned at import. */
enum {
    ER_ORDER_ID, ER_CL_ORD_ID, ER_ORIG_CL_ORD_ID, ER_EXEC_ID, ER_EXEC_TYPE, ER_ORD_STATUS,
    ER_ACCOUNT, ER_INSTRUMENT, ER_SIDE, ER_ORD_TYPE, ER_TIF, ER_PRICE, ER_QTY, ER_LAST_QTY,
    ER_LAST_PX, ER_CUM_QTY, ER_LEAVES, ER_FILLED_NOTIONAL, ER_TRADE_ID, ER_TEXT, ER_TS, ER_N
};
static const char *const ER_NAMES[ER_N] = {
    "order_id", "cl_ord_id", "orig_cl_ord_id", "exec_id", "exec_type", "ord_status",
    "account", "instrument", "side", "ord_type", "tif", "price", "qty", "last_qty",
    "last_px", "cum_qty", "leaves", "filled_notional", "trade_id", "text", "ts"};
static PyObject *er_names[ER_N];

/* Where the report type keeps each of those attributes: a report is a msgspec Struct, whose
 * fields are plain member slots (T_OBJECT_EX) at fixed offsets, so once the offsets of its type
 * are known each value is one load instead of an attribute lookup through the type. Used only
 * for an object of exactly that type, unchanged since (its version tag), with the generic
 * attribute lookup and no instance dict (nothing can shadow a slot); any other object is read
 * with PyObject_GetAttr. */
static PyTypeObject *er_type;          /* strong reference: the type the offsets belong to */
static unsigned int er_version;        /* its version tag then: changed if the type changes */
static Py_ssize_t er_offset[ER_N];

static int er_learn(PyTypeObject *tp) {
    if (tp->tp_getattro != PyObject_GenericGetAttr || tp->tp_dictoffset != 0)
        return 0;
    Py_ssize_t off[ER_N];
    for (int i = 0; i < ER_N; i++) {
        PyObject *d = _PyType_Lookup(tp, er_names[i]);      /* borrowed */
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type))
            return 0;
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READ_RESTRICTED))
            return 0;
        off[i] = m->offset;
    }
    if (!PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG))
        return 0;                 /* (the lookups above assign one; without it, no cache) */
    Py_XSETREF(er_type, (PyTypeObject *)Py_NewRef((PyObject *)tp));
    er_version = tp->tp_version_tag;
    memcpy(er_offset, off, sizeof off);
    return 1;
}

/* The report's attributes as new references in v (NULL and an exception on failure). */
static int er_values(PyObject *r, PyObject **v) {
    PyTypeObject *tp = Py_TYPE(r);
    if ((tp == er_type && PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG)
         && tp->tp_version_tag == er_version) || er_learn(tp)) {
        int i = 0;
        for (; i < ER_N; i++) {
            PyObject *x = *(PyObject **)((char *)r + er_offset[i]);
            if (x == NULL)
                break;                            /* unset: let GetAttr raise */
            v[i] = Py_NewRef(x);
        }
        if (i == ER_N)
            return 0;
        for (int k = 0; k < i; k++)
            Py_CLEAR(v[k]);
    }
    for (int i = 0; i < ER_N; i++) {
        v[i] = PyObject_GetAttr(r, er_names[i]);
        if (v[i] == NULL)
            return -1;
    }
    return 0;
}

static const long long POW10[19] = {
    1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL, 1000000LL, 10000000LL, 100000000LL,
    1000000000LL, 10000000000LL, 100000000000LL, 1000000000000LL, 10000000000000LL,
    100000000000000LL, 1000000000000000LL, 10000000000000000LL, 100000000000000000LL,
    1000000000000000000LL};

/* An ASCII str without SOH: 0 and its bytes; 1 if not (the reference decides). */
static int ascii_of(PyObject *v, const char **s, Py_ssize_t *n) {
    if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v))
        return 1;
    *s = (const char *)PyUnicode_1BYTE_DATA(v);
    *n = PyUnicode_GET_LENGTH(v);
    return has_soh(*s, *n);
}

/* A plain int within [0, 2**63): 0 and its value; 1 if not. */
static int nonneg_of(PyObject *v, long long *out) {
    if (!PyLong_CheckExact(v))
        return 1;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || x < 0)
        return 1;
    *out = x;
    return 0;
}

static int put_str_field(Buf *b, int tag, const char *s, Py_ssize_t n) {
    if (put_tag(b, tag) < 0 || buf_put(b, s, n) < 0 || buf_put(b, "\001", 1) < 0)
        return -1;
    return 0;
}

static int put_int_field(Buf *b, int tag, long long v) {
    char num[24];
    return put_str_field(b, tag, num, fmt_ll(num, v));
}

/* Decimal text of q + r / 10**places without trailing zeros (prices.PriceFormat). */
static int put_units(Buf *b, int tag, long long q, long long r, int places) {
    char num[48];
    int k = fmt_ll(num, q);
    if (r) {
        num[k++] = '.';
        for (int i = places - 1; i >= 0; i--) {
            num[k + i] = (char)('0' + r % 10);
            r /= 10;
        }
        k += places;
        while (num[k - 1] == '0')
            k--;
    }
    return put_str_field(b, tag, num, k);
}

/* exec_report(r, decimals[, tag, value]) -> bytes | None: the fields of reports.ReportWriter's
 * execution_report(r) encoded as one run ("37=...\x01...60=...\x01"), byte for byte what
 * encode makes of that list, followed by the field (tag, value) if given (two non-negative
 * ints: the gateway's EventSeqNum); None where that function is the one to decide (a reject,
 * whose reason needs its table; non-ASCII or SOH text; negative or huge numbers; other types).
 * The reference stays the Python function: tests compare the two on random reports. */
static PyObject *ff_exec_report(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if ((nargs != 2 && nargs != 4) || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "exec_report(report, decimals[, tag, value])");
        return NULL;
    }
    long long extra_tag = -1, extra_value = 0;
    if (nargs == 4) {
        if (nonneg_of(args[2], &extra_tag) || nonneg_of(args[3], &extra_value) ||
            extra_tag < 1 || extra_tag > 999999999) {
            if (PyErr_Occurred())
                return NULL;
            Py_RETURN_NONE;
        }
    }
    long decimals = PyLong_AsLong(args[1]);
    if (decimals < 0 || decimals > 14) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *v[ER_N] = {NULL};
    PyObject *res = NULL;
    if (er_values(args[0], v) < 0)
        goto done;
    const char *s[ER_N];
    Py_ssize_t sn[ER_N];
    long long x[ER_N];
    static const int STRS[] = {ER_CL_ORD_ID, ER_ORIG_CL_ORD_ID, ER_EXEC_ID, ER_EXEC_TYPE,
                               ER_ORD_STATUS, ER_ACCOUNT, ER_INSTRUMENT, ER_TEXT};
    static const int INTS[] = {ER_ORDER_ID, ER_SIDE, ER_ORD_TYPE, ER_TIF, ER_PRICE, ER_QTY,
                               ER_LAST_QTY, ER_LAST_PX, ER_CUM_QTY, ER_LEAVES,
                               ER_FILLED_NOTIONAL, ER_TRADE_ID, ER_TS};
    for (size_t i = 0; i < sizeof(STRS) / sizeof(STRS[0]); i++)
        if (ascii_of(v[STRS[i]], &s[STRS[i]], &sn[STRS[i]]))
            goto fallback;
    for (size_t i = 0; i < sizeof(INTS) / sizeof(INTS[0]); i++)
        if (nonneg_of(v[INTS[i]], &x[INTS[i]]))
            goto fallback;
    if (sn[ER_EXEC_TYPE] == 1 && s[ER_EXEC_TYPE][0] == '8')
        goto fallback;                        /* OrdRejReason from the reference's table */
    long long scale = POW10[decimals];
    int ratio_places = (int)decimals + 4;     /* AvgPx: PriceFormat.format_ratio, extra=4 */
    if (ratio_places > 18)
        goto fallback;

    Buf b;
    buf_init(&b);
    int bad = 0;
    if (x[ER_ORDER_ID])
        bad |= put_int_field(&b, 37, x[ER_ORDER_ID]);
    else
        bad |= put_str_field(&b, 37, "NONE", 4);
    if (sn[ER_CL_ORD_ID])
        bad |= put_str_field(&b, 11, s[ER_CL_ORD_ID], sn[ER_CL_ORD_ID]);
    else
        bad |= put_str_field(&b, 11, "NONE", 4);
    if (sn[ER_ORIG_CL_ORD_ID])
        bad |= put_str_field(&b, 41, s[ER_ORIG_CL_ORD_ID], sn[ER_ORIG_CL_ORD_ID]);
    bad |= put_str_field(&b, 17, s[ER_EXEC_ID], sn[ER_EXEC_ID]);
    bad |= put_str_field(&b, 150, s[ER_EXEC_TYPE], sn[ER_EXEC_TYPE]);
    bad |= put_str_field(&b, 39, s[ER_ORD_STATUS], sn[ER_ORD_STATUS]);
    if (sn[ER_ACCOUNT])
        bad |= put_str_field(&b, 1, s[ER_ACCOUNT], sn[ER_ACCOUNT]);
    bad |= put_str_field(&b, 55, s[ER_INSTRUMENT], sn[ER_INSTRUMENT]);
    bad |= put_int_field(&b, 54, x[ER_SIDE]);
    long long ord_type = x[ER_ORD_TYPE];
    if (ord_type) {
        bad |= put_int_field(&b, 40, ord_type);
        bad |= put_int_field(&b, 59, x[ER_TIF]);
    }
    if (x[ER_PRICE] && ord_type != 1)         /* OrdType.MARKET: no Price */
        bad |= put_units(&b, 44, x[ER_PRICE] / scale, x[ER_PRICE] % scale, (int)decimals);
    bad |= put_int_field(&b, 38, x[ER_QTY]);
    if (x[ER_LAST_QTY]) {
        bad |= put_int_field(&b, 32, x[ER_LAST_QTY]);
        bad |= put_units(&b, 31, x[ER_LAST_PX] / scale, x[ER_LAST_PX] % scale, (int)decimals);
    }
    long long cum = x[ER_CUM_QTY];
    bad |= put_int_field(&b, 151, x[ER_LEAVES]);
    bad |= put_int_field(&b, 14, cum);
    if (cum) {   /* (num * 10**4 * 2 + den) // (2 * den), exact in 128 bits */
        __int128 num = (__int128)x[ER_FILLED_NOTIONAL] * 20000 + cum;
        __int128 scaled = num / ((__int128)2 * cum);
        __int128 unit = POW10[ratio_places];
        __int128 q = scaled / unit;
        if (q > (__int128)INT64_MAX) {
            buf_free(&b);
            goto fallback;
        }
        bad |= put_units(&b, 6, (long long)q, (long long)(scaled % unit), ratio_places);
    } else {
        bad |= put_str_field(&b, 6, "0", 1);
    }
    if (x[ER_TRADE_ID])
        bad |= put_int_field(&b, 880, x[ER_TRADE_ID]);
    if (sn[ER_TEXT])
        bad |= put_str_field(&b, 58, s[ER_TEXT], sn[ER_TEXT]);
    if (!bad && put_tag(&b, 60) == 0 && buf_reserve(&b, 22) == 0) {
        put_ts(b.p + b.len, x[ER_TS]);
        b.p[b.len + 21] = SOH;
        b.len += 22;
        if (extra_tag < 0 || put_int_field(&b, (int)extra_tag, extra_value) == 0)
            res = PyBytes_FromStringAndSize(b.p, b.len);
    }
    buf_free(&b);
    goto done;
fallback:
    res = Py_NewRef(Py_None);
done:
    for (int i = 0; i < ER_N; i++)
        Py_XDECREF(v[i]);
    return res;
}

/* ------------------------------------------------------------- NewOrderSingle fields */

/* The bytes of the first field ``tag`` of an indexed message: 1 found, 0 absent, -1 not
 * bytes (a value given as another object). */
static int msg_tag_bytes(FixMsg *m, int32_t tag, const unsigned char **p, Py_ssize_t *n) {
    Py_ssize_t i = msg_lookup(m, tag);
    if (i < 0)
        return 0;
    return msg_bytes(m, i, p, n) ? 1 : -1;
}

/* A small plain integer of 1-18 ASCII digits: 0 and its value, 1 if not. */
static int digits_of(const unsigned char *p, Py_ssize_t n, Py_ssize_t max, long long *out) {
    if (n < 1 || n > max || !all_digits(p, n))
        return 1;
    *out = digits_value(p, n);
    return 0;
}

/* Units of a price as prices.PriceFormat.parse accepts it ("280", "280.15", ".5", "5."),
 * 0 and the units; 1 for anything else (the reference decides, and refuses). */
static int price_units(const unsigned char *p, Py_ssize_t n, int decimals, long long *out) {
    Py_ssize_t dot = -1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] == '.') {
            dot = i;
            break;
        }
    Py_ssize_t wn = dot < 0 ? n : dot;
    const unsigned char *fp = dot < 0 ? p + n : p + dot + 1;
    Py_ssize_t fn = dot < 0 ? 0 : n - dot - 1;
    if (wn == 0 && fn == 0)
        return 1;
    if ((wn && !all_digits(p, wn)) || (fn && !all_digits(fp, fn)))
        return 1;
    while (fn && fp[fn - 1] == '0')
        fn--;
    if (fn > decimals || wn > 15 || wn + decimals > 18)
        return 1;                             /* (beyond 64 bits: the reference's big ints) */
    long long units = (wn ? digits_value(p, wn) : 0) * POW10[decimals];
    if (fn)
        units += digits_value(fp, fn) * POW10[decimals - fn];
    *out = units;
    return 0;
}

/* An ASCII text field as str ("" if absent); NULL with no error set: not ASCII. */
static PyObject *ascii_field(FixMsg *m, int32_t tag) {
    const unsigned char *p;
    Py_ssize_t n;
    int r = msg_tag_bytes(m, tag, &p, &n);
    if (r == 0)
        return PyUnicode_New(0, 127);
    if (r < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] >= 128)
            return NULL;
    return PyUnicode_FromStringAndSize((const char *)p, n);
}

/* new_order(msg, decimals, limit) -> (instrument, ord_type, tif, price, qty, account,
 * cl_ord_id, side) | None: what orders.OrderEntry._new reads from a NewOrderSingle that it
 * accepts, for the plain common case (ASCII texts, unsigned integers, an exact price for an
 * OrdType ``limit``); None leaves the message to that Python code, which stays the reference
 * (and gives every reject). Tests compare the two on random messages. */
static PyObject *ff_new_order(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyLong_CheckExact(args[1]) || !PyLong_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "new_order(msg, decimals, limit)");
        return NULL;
    }
    if (!FixMsg_CheckExact(args[0]) || ((FixMsg *)args[0])->noindex)
        Py_RETURN_NONE;
    FixMsg *m = (FixMsg *)args[0];
    long decimals = PyLong_AsLong(args[1]);
    long limit = PyLong_AsLong(args[2]);
    if (decimals < 0 || decimals > 14) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    const unsigned char *p;
    Py_ssize_t n;
    long long ord_type, qty, tif = 0, price = 0, side;
    if (msg_tag_bytes(m, 40, &p, &n) != 1 || digits_of(p, n, 18, &ord_type))
        Py_RETURN_NONE;
    if (msg_tag_bytes(m, 38, &p, &n) != 1 || digits_of(p, n, 15, &qty))
        Py_RETURN_NONE;
    int r = msg_tag_bytes(m, 59, &p, &n);
    if (r < 0 || (r == 1 && n && digits_of(p, n, 18, &tif)))
        Py_RETURN_NONE;
    if (ord_type == limit &&
        (msg_tag_bytes(m, 44, &p, &n) != 1 || price_units(p, n, (int)decimals, &price)))
        Py_RETURN_NONE;
    if (msg_tag_bytes(m, 54, &p, &n) != 1 || digits_of(p, n, 18, &side))
        Py_RETURN_NONE;
    PyObject *sym = ascii_field(m, 55), *acct = NULL, *clid = NULL;
    if (sym != NULL)
        acct = ascii_field(m, 1);
    if (acct != NULL)
        clid = ascii_field(m, 11);
    if (clid == NULL) {
        Py_XDECREF(sym);
        Py_XDECREF(acct);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(NLLLLNNL)", sym, ord_type, tif, price, qty, acct, clid, side);
}

static const int MDAYS[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

/* Whether b[0:n] is a UTCTimestamp parse_utc_timestamp accepts; then *secs and *frac
 * (nanoseconds) are set. */
static int utc_ts_check(const unsigned char *b, Py_ssize_t n, long long *secs_out,
                        long long *frac_out) {
    if (!(n == 17 || n == 21 || n == 24 || n == 27) || b[8] != '-' || b[11] != ':' ||
        b[14] != ':' || (n > 17 && b[17] != '.'))
        return 0;
    if (!all_digits(b, 8) || !all_digits(b + 9, 2) || !all_digits(b + 12, 2) ||
        !all_digits(b + 15, 2) || (n > 17 && !all_digits(b + 18, n - 18)))
        return 0;
    int h = (int)digits_value(b + 9, 2), mi = (int)digits_value(b + 12, 2),
        s = (int)digits_value(b + 15, 2);
    if (h > 23 || mi > 59 || s > 60)
        return 0;
    long long y = digits_value(b, 4);
    int mo = (int)digits_value(b + 4, 2), d = (int)digits_value(b + 6, 2);
    if (!(mo >= 1 && mo <= 12 && d >= 1 && d <= MDAYS[mo - 1]))
        return 0;
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return 0;
    long long frac = 0;
    if (n > 17) {
        frac = digits_value(b + 18, n - 18);
        for (Py_ssize_t k = n; k < 27; k++)
            frac *= 10;
    }
    *secs_out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
    *frac_out = frac;
    return 1;
}

/* Nanoseconds for a valid UTCTimestamp b[0:n]; 0 if not valid or out of the int64 range. */
static int utc_ts_ns(const unsigned char *b, Py_ssize_t n, long long *out) {
    long long secs, frac;
    if (!utc_ts_check(b, n, &secs, &frac) || secs < -9000000000LL || secs > 9000000000LL)
        return 0;
    *out = secs * 1000000000LL + frac;
    return 1;
}

/* parse_utc_timestamp(value) -> int nanoseconds; ValueError (from the reference) if invalid. */
static PyObject *ff_parse_ts(PyObject *mod, PyObject *arg) {
    long long ns;
    if (PyBytes_CheckExact(arg) &&
        utc_ts_ns((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg), &ns))
        return PyLong_FromLongLong(ns);
    if (fb_parse_ts == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fixfast: no reference registered");
        return NULL;
    }
    return PyObject_CallOneArg(fb_parse_ts, arg);
}

/* --------------------------------------------------------------------- session header */

#define HDR_MAX 1024
static uint64_t hdr_tags[HDR_MAX / 64], hop_tags[HDR_MAX / 64];
static int hdr_ready;

static inline int bit(const uint64_t *set, int32_t t) {
    return t >= 0 && t < HDR_MAX && (set[t >> 6] >> (t & 63)) & 1;
}

static int fill_bits(uint64_t *set, PyObject *tags) {
    memset(set, 0, HDR_MAX / 8);
    PyObject *it = PyObject_GetIter(tags), *o;
    if (it == NULL)
        return -1;
    while ((o = PyIter_Next(it)) != NULL) {
        long t = PyLong_AsLong(o);
        Py_DECREF(o);
        if (t == -1 && PyErr_Occurred())
            break;
        if (t < 0 || t >= HDR_MAX) {
            PyErr_SetString(PyExc_ValueError, "header tags must be below 1024");
            break;
        }
        set[t >> 6] |= (uint64_t)1 << (t & 63);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *ff_set_header_tags(PyObject *mod, PyObject *args) {
    PyObject *hdr, *hop;
    if (!PyArg_ParseTuple(args, "OO", &hdr, &hop))
        return NULL;
    if (fill_bits(hdr_tags, hdr) < 0 || fill_bits(hop_tags, hop) < 0) {
        hdr_ready = 0;
        return NULL;
    }
    hdr_ready = 1;
    Py_RETURN_NONE;
}

/* Result for a Y/N flag field: 0 absent or fine, 1 Y, -1 bad, -2 not bytes. */
static int flag_value(FixMsg *m, int32_t tag) {
    Py_ssize_t i = msg_lookup(m, tag);
    if (i < 0)
        return 0;
    const unsigned char *p;
    Py_ssize_t n;
    if (!msg_bytes(m, i, &p, &n))
        return -2;
    if (n == 1 && (p[0] == 'Y' || p[0] == 'N'))
        return p[0] == 'Y';
    return -1;
}

/* check_header(msg): the session's header checks (see session._check_header_py, the
 * reference): None, True (PossDupFlag=Y: OrigSendingTime to check), (reason, tag), or
 * NotImplemented when the caller must use the reference (not a parsed message). */
static PyObject *ff_check_header(PyObject *mod, PyObject *arg) {
    if (!hdr_ready || !FixMsg_CheckExact(arg) || ((FixMsg *)arg)->noindex)
        Py_RETURN_NOTIMPLEMENTED;
    FixMsg *m = (FixMsg *)arg;
    uint64_t seen[HDR_MAX / 64] = {0};
    int in_body = 0;
    for (Py_ssize_t i = 3; i < m->n - 1; i++) {
        MField *f = &m->f[i];
        int32_t tag = f->tag;
        int reason = -1;
        int empty;
        if (f->off != GIVEN) {
            empty = f->len == 0;
        } else {
            empty = PyObject_Not(m->vals[i]);
            if (empty < 0)
                return NULL;
        }
        if (empty) {
            reason = 4;
        } else if (bit(hdr_tags, tag)) {
            if (in_body)
                reason = 14;
            else if (bit(seen, tag) && !bit(hop_tags, tag))
                reason = 13;
            else
                seen[tag >> 6] |= (uint64_t)1 << (tag & 63);
        } else if (tag == 8 || tag == 9 || tag == 35 || tag == 10) {
            reason = 14;
        } else {
            in_body = 1;
        }
        if (reason >= 0)
            return Py_BuildValue("(ii)", reason, (int)tag);
    }
    Py_ssize_t i = msg_lookup(m, 52);
    if (i < 0)
        return Py_BuildValue("(ii)", 1, 52);
    const unsigned char *p;
    Py_ssize_t n;
    long long secs, frac;
    if (!msg_bytes(m, i, &p, &n))
        Py_RETURN_NOTIMPLEMENTED;
    if (!utc_ts_check(p, n, &secs, &frac))
        return Py_BuildValue("(ii)", 6, 52);
    int poss_dup = flag_value(m, 43), poss_resend = flag_value(m, 97);
    if (poss_dup == -2 || (poss_dup >= 0 && poss_resend == -2))
        Py_RETURN_NOTIMPLEMENTED;
    if (poss_dup < 0)
        return Py_BuildValue("(ii)", 6, 43);
    if (poss_resend < 0)
        return Py_BuildValue("(ii)", 6, 97);
    if (poss_dup)
        Py_RETURN_TRUE;
    Py_RETURN_NONE;
}

/* in_sequence(msg, begin, target, sender, expected, now, tolerance) -> bool: the test that
 * session.Session._on_message makes before taking its common path (the right BeginString and
 * CompIDs, MsgSeqNum the expected one, not a SequenceReset or Logon, SendingTime absent or
 * within the tolerance of now). False whenever that is not certain, and the session's
 * general path, the reference, then decides. */
static PyObject *ff_in_sequence(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 || !PyBytes_CheckExact(args[1]) || !PyBytes_CheckExact(args[2]) ||
        !PyBytes_CheckExact(args[3]) || !PyLong_CheckExact(args[4]) ||
        !PyLong_CheckExact(args[5]) || !PyLong_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "in_sequence(msg, begin, target, sender, expected, now, tolerance)");
        return NULL;
    }
    if (!FixMsg_CheckExact(args[0]) || ((FixMsg *)args[0])->noindex)
        Py_RETURN_FALSE;
    FixMsg *m = (FixMsg *)args[0];
    const unsigned char *p;
    Py_ssize_t n;
    static const int32_t SAME[3] = {8, 49, 56};
    for (int k = 0; k < 3; k++) {
        PyObject *want = args[1 + k];
        if (msg_tag_bytes(m, SAME[k], &p, &n) != 1 || n != PyBytes_GET_SIZE(want) ||
            memcmp(p, PyBytes_AS_STRING(want), (size_t)n) != 0)
            Py_RETURN_FALSE;
    }
    long long seq, expected, now, tol;
    int overflow;
    expected = PyLong_AsLongLongAndOverflow(args[4], &overflow);
    if (overflow)
        Py_RETURN_FALSE;
    now = PyLong_AsLongLongAndOverflow(args[5], &overflow);
    if (overflow)
        Py_RETURN_FALSE;
    tol = PyLong_AsLongLongAndOverflow(args[6], &overflow);
    if (overflow || tol < 0)
        Py_RETURN_FALSE;
    if (msg_tag_bytes(m, 34, &p, &n) != 1 || digits_of(p, n, 18, &seq) || seq < 1 ||
        seq != expected)
        Py_RETURN_FALSE;
    if (msg_tag_bytes(m, 35, &p, &n) != 1 || (n == 1 && (p[0] == '4' || p[0] == 'A')))
        Py_RETURN_FALSE;
    int r = msg_tag_bytes(m, 52, &p, &n);
    if (r < 0)
        Py_RETURN_FALSE;
    if (r == 1) {
        long long sent;
        if (!utc_ts_ns(p, n, &sent))
            Py_RETURN_FALSE;
        long long d = sent > now ? sent - now : now - sent;
        if (d > tol)
            Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

/* ------------------------------------------------------------------------ message store */

static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 255];
}

/* CRC-32 (zlib.crc32) of p[0:n] continuing from ``crc``; slicing by eight. */
static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
    while (n >= 8) {
        uint32_t a = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
        a ^= crc;
        crc = crc_table[7][a & 255] ^ crc_table[6][(a >> 8) & 255] ^
              crc_table[5][(a >> 16) & 255] ^ crc_table[4][a >> 24] ^ crc_table[3][p[4]] ^
              crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 255];
    return ~crc;
}

static inline void put_le(unsigned char *o, uint64_t v, int n) {
    for (int k = 0; k < n; k++)
        o[k] = (unsigned char)(v >> (8 * k));
}

/* store_record(seq, data, max_payload) -> the FileStore log record of one message
 * (u32 N, u32 CRC-32 of the length bytes and the payload, payload = u64 seq + data), None if
 * N would exceed max_payload, NotImplemented for anything but an int seq (1 .. 2**64-1) and
 * bytes data (the reference in store.py then decides, errors included). */
static PyObject *ff_store_record(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "store_record(seq, data, max_payload)");
        return NULL;
    }
    PyObject *seq = args[0], *data = args[1];
    if (!PyLong_CheckExact(seq) || !PyBytes_CheckExact(data))
        Py_RETURN_NOTIMPLEMENTED;
    unsigned long long sv = PyLong_AsUnsignedLongLong(seq);
    if (sv == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NOTIMPLEMENTED;
    }
    Py_ssize_t max_payload = PyLong_AsSsize_t(args[2]);
    if (max_payload == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t dn = PyBytes_GET_SIZE(data);
    if (dn > PY_SSIZE_T_MAX - 64 || 8 + dn > max_payload)
        Py_RETURN_NONE;
    if (8 + dn > (Py_ssize_t)UINT32_MAX)
        Py_RETURN_NOTIMPLEMENTED;             /* the reference decides (it cannot pack it) */
    Py_ssize_t n = 8 + dn;
    PyObject *rec = PyBytes_FromStringAndSize(NULL, 8 + n);
    if (rec == NULL)
        return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(rec);
    put_le(o, (uint64_t)n, 4);
    put_le(o + 8, sv, 8);
    memcpy(o + 16, PyBytes_AS_STRING(data), (size_t)dn);
    uint32_t crc = crc32_update(0, o, 4);
    crc = crc32_update(crc, o + 8, (size_t)n);
    put_le(o + 4, crc, 4);
    return rec;
}

/* ----------------------------------------------------------------------- validator */

enum { K_ANY, K_DIGITS, K_INT, K_DECIMAL, K_CHAR, K_BOOLEAN, K_UTCTIMESTAMP, K_ENUM,
       K_MULTIENUM, K_CALL, K_COUNT };

typedef struct {
    int32_t tag;
    uint8_t sec;
    uint8_t kind;
    uint16_t unused;
    PyObject *payload;    /* K_ENUM / K_MULTIENUM: tuple or frozenset of bytes; K_CALL: callable */
} VEntry;

typedef struct {
    int32_t if_tag, then_slot;   /* then_slot -1: the tag is never seen on the fast path */
    PyObject *values;            /* tuple of bytes */
} VRule;

typedef struct {
    PyObject_HEAD
    VEntry *ents;
    Py_ssize_t nents;
    int32_t *htab;               /* entry index + 1 */
    uint32_t hmask;
    int32_t *req;                /* required tags as entry indexes */
    Py_ssize_t nreq;
    VRule *rules;
    Py_ssize_t nrules;
    int never;                   /* a required tag is not a plain field: always the full path */
} MsgTable;

static inline uint32_t vslot(int32_t tag, uint32_t mask) {
    return ((uint32_t)tag * 2654435761u >> 11) & mask;
}

static Py_ssize_t table_find(const MsgTable *t, int32_t tag) {
    uint32_t h = vslot(tag, t->hmask);
    for (;;) {
        int32_t k = t->htab[h];
        if (k == 0)
            return -1;
        if (t->ents[k - 1].tag == tag)
            return k - 1;
        h = (h + 1) & t->hmask;
    }
}

static void MsgTable_dealloc(MsgTable *t) {
    for (Py_ssize_t i = 0; i < t->nents; i++)
        Py_XDECREF(t->ents[i].payload);
    for (Py_ssize_t i = 0; i < t->nrules; i++)
        Py_XDECREF(t->rules[i].values);
    PyMem_Free(t->ents);
    PyMem_Free(t->htab);
    PyMem_Free(t->req);
    PyMem_Free(t->rules);
    PyObject_Free(t);
}

static PyTypeObject MsgTableType;

static long tag_arg(PyObject *o) {
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "tag out of range");
        return -1;
    }
    return v;
}

/* MsgTable(entries, required, rules): entries = [(tag, section, kind, payload)], required =
 * [tag], rules = [(if_tag, (value bytes, ...), then_tag)]. */
static PyObject *MsgTable_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *entries, *required, *rules;
    if (!PyArg_ParseTuple(args, "OOO:MsgTable", &entries, &required, &rules))
        return NULL;
    MsgTable *t = PyObject_New(MsgTable, type);
    if (t == NULL)
        return NULL;
    t->ents = NULL;
    t->htab = t->req = NULL;
    t->rules = NULL;
    t->nents = t->nreq = t->nrules = 0;
    t->never = 0;
    PyObject *e = seq_snapshot(entries, "entries must be a sequence"), *r = NULL, *q = NULL;
    if (e == NULL)
        goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(e);
    t->ents = PyMem_Calloc((size_t)(n ? n : 1), sizeof(VEntry));
    size_t cap = 8;
    while (cap < (size_t)n * 2)
        cap <<= 1;
    t->htab = PyMem_Calloc(cap, sizeof(int32_t));
    t->hmask = (uint32_t)(cap - 1);
    if (t->ents == NULL || t->htab == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(e, i);
        long tag, sec, kind;
        PyObject *payload;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 4) {
            PyErr_SetString(PyExc_TypeError, "an entry is (tag, section, kind, payload)");
            goto fail;
        }
        if ((tag = tag_arg(PyTuple_GET_ITEM(item, 0))) < 0)
            goto fail;
        sec = PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
        kind = PyLong_AsLong(PyTuple_GET_ITEM(item, 2));
        if (PyErr_Occurred())
            goto fail;
        if (sec < 0 || sec > 255 || kind < 0 || kind >= K_COUNT) {
            PyErr_SetString(PyExc_ValueError, "bad section or kind");
            goto fail;
        }
        payload = PyTuple_GET_ITEM(item, 3);
        if ((kind == K_ENUM || kind == K_MULTIENUM) &&
            !(PyTuple_CheckExact(payload) || PyFrozenSet_CheckExact(payload))) {
            PyErr_SetString(PyExc_TypeError, "enum payload must be a tuple or frozenset");
            goto fail;
        }
        if (kind == K_ENUM || kind == K_MULTIENUM) {
            PyObject *it = PyObject_GetIter(payload), *x;
            if (it == NULL)
                goto fail;
            while ((x = PyIter_Next(it)) != NULL) {
                int ok = PyBytes_CheckExact(x);
                Py_DECREF(x);
                if (!ok) {
                    PyErr_SetString(PyExc_TypeError, "enum values must be bytes");
                    break;
                }
            }
            Py_DECREF(it);
            if (PyErr_Occurred())
                goto fail;
        }
        if (kind == K_CALL && !PyCallable_Check(payload)) {
            PyErr_SetString(PyExc_TypeError, "K_CALL payload must be callable");
            goto fail;
        }
        if (table_find(t, (int32_t)tag) >= 0) {
            PyErr_SetString(PyExc_ValueError, "tag listed twice");
            goto fail;
        }
        VEntry *v = &t->ents[t->nents];
        v->tag = (int32_t)tag;
        v->sec = (uint8_t)sec;
        v->kind = (uint8_t)kind;
        v->payload = Py_NewRef(payload);
        uint32_t h = vslot(v->tag, t->hmask);
        while (t->htab[h])
            h = (h + 1) & t->hmask;
        t->htab[h] = (int32_t)(++t->nents);
    }
    q = seq_snapshot(required, "required must be a sequence");
    if (q == NULL)
        goto fail;
    t->req = PyMem_Calloc((size_t)(PySequence_Fast_GET_SIZE(q) + 1), sizeof(int32_t));
    if (t->req == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(q); i++) {
        long tag = tag_arg(PySequence_Fast_GET_ITEM(q, i));
        if (tag < 0)
            goto fail;
        Py_ssize_t k = table_find(t, (int32_t)tag);
        if (k < 0)
            t->never = 1;
        else
            t->req[t->nreq++] = (int32_t)k;
    }
    r = seq_snapshot(rules, "rules must be a sequence");
    if (r == NULL)
        goto fail;
    t->rules = PyMem_Calloc((size_t)(PySequence_Fast_GET_SIZE(r) + 1), sizeof(VRule));
    if (t->rules == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(r); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(r, i);
        long if_tag, then_tag;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3 ||
            !PyTuple_CheckExact(PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "a rule is (if_tag, (values...), then_tag)");
            goto fail;
        }
        if ((if_tag = tag_arg(PyTuple_GET_ITEM(item, 0))) < 0 ||
            (then_tag = tag_arg(PyTuple_GET_ITEM(item, 2))) < 0)
            goto fail;
        PyObject *values = PyTuple_GET_ITEM(item, 1);
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(values); j++)
            if (!PyBytes_CheckExact(PyTuple_GET_ITEM(values, j))) {
                PyErr_SetString(PyExc_TypeError, "rule values must be bytes");
                goto fail;
            }
        VRule *vr = &t->rules[t->nrules++];
        vr->if_tag = (int32_t)if_tag;
        vr->then_slot = (int32_t)table_find(t, (int32_t)then_tag);
        vr->values = Py_NewRef(values);
    }
    Py_DECREF(e);
    Py_DECREF(q);
    Py_DECREF(r);
    return (PyObject *)t;
fail:
    Py_XDECREF(e);
    Py_XDECREF(q);
    Py_XDECREF(r);
    Py_DECREF(t);
    return NULL;
}

/* -?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+) */
static int is_decimal(const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t i = 0;
    if (i < n && p[i] == '-')
        i++;
    Py_ssize_t d0 = i;
    while (i < n && is_digit(p[i]))
        i++;
    Py_ssize_t whole = i - d0;
    if (i == n)
        return whole > 0;
    if (p[i] != '.')
        return 0;
    i++;
    Py_ssize_t f0 = i;
    while (i < n && is_digit(p[i]))
        i++;
    if (i != n)
        return 0;
    return whole > 0 || i > f0;
}

/* DATE-TIME of dictionary.FORMAT_CHECKS["UTCTIMESTAMP"] (day 01-31 whatever the month). */
static int is_utc_timestamp(const unsigned char *b, Py_ssize_t n) {
    if (!(n == 17 || n == 21 || n == 24 || n == 27) || b[8] != '-' || b[11] != ':' ||
        b[14] != ':' || (n > 17 && b[17] != '.'))
        return 0;
    if (!all_digits(b, 8) || !all_digits(b + 9, 2) || !all_digits(b + 12, 2) ||
        !all_digits(b + 15, 2) || (n > 17 && !all_digits(b + 18, n - 18)))
        return 0;
    int mo = (int)digits_value(b + 4, 2), d = (int)digits_value(b + 6, 2);
    int h = (int)digits_value(b + 9, 2), mi = (int)digits_value(b + 12, 2),
        s = (int)digits_value(b + 15, 2);
    return mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h <= 23 && mi <= 59 && s <= 60;
}

/* Membership of p[0:n] in an enum payload: 1, 0, or -1 on error. */
static int in_enum(PyObject *payload, const unsigned char *p, Py_ssize_t n) {
    if (PyTuple_CheckExact(payload)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(payload); i++) {
            PyObject *x = PyTuple_GET_ITEM(payload, i);
            if (PyBytes_GET_SIZE(x) == n && memcmp(PyBytes_AS_STRING(x), p, (size_t)n) == 0)
                return 1;
        }
        return 0;
    }
    PyObject *v = PyBytes_FromStringAndSize((const char *)p, n);
    if (v == NULL)
        return -1;
    int r = PySet_Contains(payload, v);
    Py_DECREF(v);
    return r;
}

/* Whether field i of m passes entry v's check: 1, 0, or -1 on error. */
static int value_ok(const VEntry *v, FixMsg *m, Py_ssize_t i, const unsigned char *p,
                    Py_ssize_t n) {
    switch (v->kind) {
    case K_ANY:
        return 1;
    case K_DIGITS:
        return all_digits(p, n);
    case K_INT:
        return (p[0] == '-') ? all_digits(p + 1, n - 1) : all_digits(p, n);
    case K_DECIMAL:
        return is_decimal(p, n);
    case K_CHAR:
        return n == 1 && p[0] >= 0x21 && p[0] <= 0x7e;
    case K_BOOLEAN:
        return n == 1 && (p[0] == 'Y' || p[0] == 'N');
    case K_UTCTIMESTAMP:
        return is_utc_timestamp(p, n);
    case K_ENUM:
        return in_enum(v->payload, p, n);
    case K_MULTIENUM: {
        /* [^ ]+(?: [^ ]+)* and every item listed */
        if (p[0] == ' ' || p[n - 1] == ' ')
            return 0;
        Py_ssize_t s = 0;
        for (Py_ssize_t k = 0; k <= n; k++) {
            if (k == n || p[k] == ' ') {
                if (k == s)
                    return 0;
                int r = in_enum(v->payload, p + s, k - s);
                if (r <= 0)
                    return r;
                s = k + 1;
            }
        }
        return 1;
    }
    case K_CALL: {
        PyObject *val = msg_value(m, i);
        if (val == NULL)
            return -1;
        PyObject *r = PyObject_CallOneArg(v->payload, val);
        if (r == NULL)
            return -1;
        int ok = PyObject_IsTrue(r);
        Py_DECREF(r);
        return ok;
    }
    }
    return 0;
}

/* check(msg) -> True when the message certainly passes every check of its MsgType (the
 * validator then answers None), False when the full check must decide. */
static PyObject *MsgTable_check(MsgTable *t, PyObject *arg) {
    if (!FixMsg_CheckExact(arg) || ((FixMsg *)arg)->noindex || t->never)
        Py_RETURN_FALSE;
    FixMsg *m = (FixMsg *)arg;
    Py_ssize_t n = m->n;
    MField *f = m->f;
    if (n <= 3 || f[0].tag != 8 || f[1].tag != 9 || f[2].tag != 35 || f[n - 1].tag != 10)
        Py_RETURN_FALSE;
    /* one bit per entry, per call: a K_CALL predicate may run any code, even this check */
    uint64_t stack_seen[64], *seen = stack_seen;
    size_t words = (size_t)(t->nents / 64 + 1);
    if (words > 64) {
        seen = PyMem_Calloc(words, sizeof(uint64_t));
        if (seen == NULL) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
    } else {
        memset(seen, 0, words * sizeof(uint64_t));
    }
    PyObject *result = Py_False;
    int prev = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t k = table_find(t, f[i].tag);
        if (k < 0)
            goto done;
        const unsigned char *p;
        Py_ssize_t len;
        if (!msg_bytes(m, i, &p, &len) || len == 0)
            goto done;
        const VEntry *v = &t->ents[k];
        if (v->sec < prev)
            goto done;
        uint64_t b = (uint64_t)1 << (k & 63);
        if (seen[k >> 6] & b)
            goto done;                 /* a repeated tag */
        int ok = value_ok(v, m, i, p, len);
        if (ok < 0) {
            PyErr_Clear();                   /* the full check decides */
            goto done;
        }
        if (!ok)
            goto done;
        prev = v->sec;
        seen[k >> 6] |= b;
    }
    for (Py_ssize_t j = 0; j < t->nreq; j++) {
        int32_t k = t->req[j];
        if (!((seen[k >> 6] >> (k & 63)) & 1))
            goto done;
    }
    for (Py_ssize_t j = 0; j < t->nrules; j++) {
        VRule *r = &t->rules[j];
        if (r->then_slot >= 0 && ((seen[r->then_slot >> 6] >> (r->then_slot & 63)) & 1))
            continue;
        Py_ssize_t i = msg_lookup(m, r->if_tag);
        if (i < 0)
            continue;
        const unsigned char *p;
        Py_ssize_t len;
        if (!msg_bytes(m, i, &p, &len))
            goto done;
        for (Py_ssize_t x = 0; x < PyTuple_GET_SIZE(r->values); x++) {
            PyObject *w = PyTuple_GET_ITEM(r->values, x);
            if (PyBytes_GET_SIZE(w) == len && memcmp(PyBytes_AS_STRING(w), p, (size_t)len) == 0)
                goto done;
        }
    }
    result = Py_True;
done:
    if (seen != stack_seen)
        PyMem_Free(seen);
    Py_INCREF(result);
    return result;
}

static PyMethodDef MsgTable_methods[] = {
    {"check", (PyCFunction)MsgTable_check, METH_O,
     "check(msg) -> True if msg certainly passes (the validator's fast path), else False."},
    {NULL}};

static PyTypeObject MsgTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fix_gateway._fixfast.MsgTable",
    .tp_doc = "Compiled validation tables of one MsgType (the validator's fast path).",
    .tp_basicsize = sizeof(MsgTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = MsgTable_new,
    .tp_dealloc = (destructor)MsgTable_dealloc,
    .tp_methods = MsgTable_methods,
};

/* ------------------------------------------------------------------------------ module */

static PyObject *ff_set_fallbacks(PyObject *mod, PyObject *args) {
    PyObject *fmt, *parse, *enc, *garbled;
    if (!PyArg_ParseTuple(args, "OOOO", &fmt, &parse, &enc, &garbled))
        return NULL;
    Py_XSETREF(fb_format_ts, Py_NewRef(fmt));
    Py_XSETREF(fb_parse_ts, Py_NewRef(parse));
    Py_XSETREF(fb_encode, Py_NewRef(enc));
    Py_XSETREF(garbled_type, Py_NewRef(garbled));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"split", (PyCFunction)(void (*)(void))ff_split, METH_FASTCALL,
     "split(buffer, max_size) -> (frames, pos, garbled, need), as codec._split."},
    {"encode", (PyCFunction)(void (*)(void))ff_encode, METH_FASTCALL | METH_KEYWORDS,
     "encode(msg_type, fields, *, begin_string='FIX.4.4', sender, target, seq, sending_time, "
     "extra_header=()) -> bytes: a complete message (see codec.encode)."},
    {"in_sequence", (PyCFunction)(void (*)(void))ff_in_sequence, METH_FASTCALL,
     "in_sequence(msg, begin, target, sender, expected, now, tolerance) -> bool."},
    {"new_order", (PyCFunction)(void (*)(void))ff_new_order, METH_FASTCALL,
     "new_order(msg, decimals, limit) -> tuple | None: a NewOrderSingle's order fields."},
    {"exec_report", (PyCFunction)(void (*)(void))ff_exec_report, METH_FASTCALL,
     "exec_report(report, decimals[, tag, value]) -> bytes | None: an ExecutionReport's "
     "fields, encoded (and one more integer field)."},
    {"format_utc_timestamp", (PyCFunction)ff_format_ts, METH_O,
     "format_utc_timestamp(ns) -> b'YYYYMMDD-HH:MM:SS.sss'."},
    {"parse_utc_timestamp", (PyCFunction)ff_parse_ts, METH_O,
     "parse_utc_timestamp(value) -> nanoseconds since the epoch (ValueError if invalid)."},
    {"check_header", (PyCFunction)ff_check_header, METH_O,
     "check_header(msg) -> None, True, (reason, tag) or NotImplemented (see session)."},
    {"store_record", (PyCFunction)(void (*)(void))ff_store_record, METH_FASTCALL,
     "store_record(seq, data, max_payload) -> bytes of a FileStore log record."},
    {"set_header_tags", (PyCFunction)ff_set_header_tags, METH_VARARGS,
     "set_header_tags(header_tags, hop_tags): the session's header tag sets."},
    {"set_fallbacks", (PyCFunction)ff_set_fallbacks, METH_VARARGS,
     "set_fallbacks(format_ts, parse_ts, encode, Garbled): the Python reference."},
    {NULL}};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_fixfast",
    "Compiled hot path of the FIX gateway (the Python modules hold the reference).", -1,
    module_methods};

PyMODINIT_FUNC PyInit__fixfast(void) {
    if (PyType_Ready(&FixMsgType) < 0 || PyType_Ready(&MsgTableType) < 0)
        return NULL;
    crc_init();
    for (int k = 0; k < N_DATA_TAGS; k++) {
        special_tags[LEN_TAGS[k] >> 6] |= (uint64_t)1 << (LEN_TAGS[k] & 63);
        special_tags[DATA_TAGS[k] >> 6] |= (uint64_t)1 << (DATA_TAGS[k] & 63);
    }
    s_begin_string = PyUnicode_InternFromString("begin_string");
    s_sender = PyUnicode_InternFromString("sender");
    s_target = PyUnicode_InternFromString("target");
    s_seq = PyUnicode_InternFromString("seq");
    s_sending_time = PyUnicode_InternFromString("sending_time");
    s_extra_header = PyUnicode_InternFromString("extra_header");
    s_msg_type = PyUnicode_InternFromString("msg_type");
    s_fields = PyUnicode_InternFromString("fields");
    s_default_begin = PyUnicode_InternFromString("FIX.4.4");
    for (int i = 0; i < ER_N; i++)
        if ((er_names[i] = PyUnicode_InternFromString(ER_NAMES[i])) == NULL)
            return NULL;
    empty_tuple = PyTuple_New(0);
    if (!s_begin_string || !s_sender || !s_target || !s_seq || !s_sending_time ||
        !s_extra_header || !s_msg_type || !s_fields || !s_default_begin || !empty_tuple)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "FixMessage", (PyObject *)&FixMsgType) < 0 ||
        PyModule_AddObjectRef(m, "MsgTable", (PyObject *)&MsgTableType) < 0 ||
        PyModule_AddIntConstant(m, "K_ANY", K_ANY) < 0 ||
        PyModule_AddIntConstant(m, "K_DIGITS", K_DIGITS) < 0 ||
        PyModule_AddIntConstant(m, "K_INT", K_INT) < 0 ||
        PyModule_AddIntConstant(m, "K_DECIMAL", K_DECIMAL) < 0 ||
        PyModule_AddIntConstant(m, "K_CHAR", K_CHAR) < 0 ||
        PyModule_AddIntConstant(m, "K_BOOLEAN", K_BOOLEAN) < 0 ||
        PyModule_AddIntConstant(m, "K_UTCTIMESTAMP", K_UTCTIMESTAMP) < 0 ||
        PyModule_AddIntConstant(m, "K_ENUM", K_ENUM) < 0 ||
        PyModule_AddIntConstant(m, "K_MULTIENUM", K_MULTIENUM) < 0 ||
        PyModule_AddIntConstant(m, "K_CALL", K_CALL) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
