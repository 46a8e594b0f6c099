/*
 * _fastvm.c -- the FAST 1.1 codec's hot path: a template-driven interpreter that encodes
 * dicts to FAST messages and decodes FAST messages to dicts.
 *
 * Why hand-written C: the feed needs well over 200,000 messages/s through one core, a
 * budget of about 5 us per message including the Python objects in and out.  The
 * generated straight-line Python (_encoder_gen.py, _decoder_gen.py) tops out near 135,000
 * messages/s for a three-entry incremental refresh: the cost is the interpreter itself
 * (bytecodes per presence-map bit, a bytearray call per byte).  No FAST library reaches
 * the rate from Python with this codec's contract: the C++ ones (mFAST, QuickFAST) have
 * no binding for the CPython this project runs (mFAST's ships for 3.8 only), produce
 * their own message objects that would still need converting to dicts, and do not give
 * this codec's exact behaviour (Decimal/pair values, error codes, strictness, the
 * encoder's choices).  So this file walks a compact program that vm.py compiles from a
 * Templates object; nothing here is specific to one template set.  The generated Python
 * stays the reference implementation; the tests compare the two byte for byte, value for
 * value and error code for error code.
 *
 * Program (built by vm.py, validated here when a VM is created):
 *   (version, templates, slot_kinds)
 *   template = (id, name, Template object, nbits, segment, used_slots)
 *   segment  = (nbits, instructions)
 *   instruction = (kind, op, itype, optional, bit, slot, key, name, init, extra)
 *     extra: parts decimal -> (exponent, mantissa) instructions; sequence -> (length
 *     instruction, segment, reads_bytes); group -> segment; otherwise None.
 *
 * Integers are carried as 128-bit values so that uInt64 and int64 values, their nullable
 * forms and the deltas between them (up to 2^65) never overflow; values read off the
 * wire saturate at 2^100 and are then rejected.  Every read is checked against the end
 * of the data, and nesting depth is bounded when the program is loaded.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifndef __SIZEOF_INT128__
#error "this module needs a compiler with 128-bit integers (GCC or Clang on a 64-bit target)"
#endif
__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;

#define PROGRAM_VERSION 1
#define MAX_DEPTH 64              /* nesting of groups and sequences */
#define MAX_SEGMENT_BITS (1 << 20)
#define BIG ((i128)1 << 100)      /* saturation bound for integers off the wire */
#define DCACHE_SIZE 4096          /* decoder: (mantissa, exponent) -> Decimal or pair */
#define ECACHE_SIZE 1024          /* encoder: Decimal object -> (mantissa, exponent) */

enum { K_INT, K_DEC, K_DECI, K_ASCII, K_UNICODE, K_BYTES, K_SEQ, K_GROUP, K_COUNT };
enum { OP_NONE, OP_CONST, OP_DEFAULT, OP_COPY, OP_INCR, OP_DELTA, OP_TAIL, OP_COUNT };
enum { IT_U32, IT_I32, IT_U64, IT_I64, IT_COUNT };
enum { SK_TID, SK_INT, SK_DEC, SK_ASCII, SK_UNICODE, SK_BYTES, SK_COUNT };
enum { ST_UNDEF, ST_EMPTY, ST_VALUE };

/* ------------------------------------------------------------------------ structures */

typedef struct Segment Segment;

typedef struct Instr {
    uint8_t kind, op, itype, optional;
    int32_t bit;                /* static presence-map bit in its segment, -1: none */
    int32_t slot;               /* dictionary slot, -1: none */
    i128 lo, hi;                /* range of the integer type */
    i128 wlo, whi;              /* range of an integer delta on the wire */
    PyObject *key;              /* field name (dict key); NULL for parts and lengths */
    PyObject *name;             /* name in error messages */
    int has_init;
    i128 init_i;                /* integer initial value */
    int64_t init_m;             /* decimal initial value */
    int32_t init_e;
    PyObject *init_obj;         /* int, (m, e), str or bytes */
    PyObject *init_out;         /* decoder output for the initial value */
    PyObject *init_raw;         /* UTF-8 bytes of a unicode initial value */
    const char *init_p;         /* raw bytes of a string initial value */
    Py_ssize_t init_n;
    struct Instr *parts;        /* parts decimal: [exponent, mantissa]; sequence: [length] */
    Segment *seg;               /* sequence element, group */
    int reads_bytes;            /* sequence: an element always consumes a byte */
} Instr;

struct Segment {
    Py_ssize_t n;
    Instr *ins;
    int32_t nbits;
    PyObject *proto;            /* dict of the segment's keys (values None): cloned */
};

typedef struct {
    uint32_t tid;
    PyObject *name;
    PyObject *tobj;
    Segment seg;
    int32_t nbits;
    int32_t *used;
    Py_ssize_t nused;
    uint8_t tid_enc[6];
    int tid_len;
} Tmpl;

typedef struct {
    uint8_t st;
    i128 i;                     /* integer */
    i128 m, e;                  /* decimal (a lenient decoder lets them leave int64/int32) */
    PyObject *obj;              /* string slots: the exact str or bytes; a decoder's integer
                                   slots: the int object of i, once made (shared) */
} Slot;

typedef struct {
    PyObject *obj;
    int64_t m;
    int32_t e;
} CacheEnt;

typedef struct {
    PyObject_HEAD
    Tmpl *tmpl;
    Py_ssize_t ntmpl;
    PyObject *by_key;           /* template id or name -> index */
    uint32_t *tid_keys;         /* open addressing: template id -> index + 1 */
    int32_t *tid_vals;
    Py_ssize_t tid_cap;
    Slot *dict;                 /* persistent dictionaries (encode/decode) */
    Slot *fresh;                /* per-datagram dictionaries */
    Py_ssize_t nslots;
    uint8_t *slot_kind;
    int strict, pairs, front, busy;
    PyObject *fast_error;
    PyObject *decimal_type;
    CacheEnt *dcache;
    CacheEnt *ecache;
} VM;

static PyObject *chr_tab[128];
static PyObject *empty_str;
static PyObject *s_msgseqnum;
static PyObject *s_offset;
static PyObject *s_seqnum;
static PyObject *s_get;
static PyObject *absent;            /* V.get(key, absent): the key is missing */

/* ------------------------------------------------------------------------ helpers */

static const char *fmt_i128(i128 v, char *buf)
{
    char tmp[48];
    int n = 0, k = 0;
    u128 a = v < 0 ? (u128)0 - (u128)v : (u128)v;
    do {
        tmp[n++] = (char)('0' + (int)(a % 10));
        a /= 10;
    } while (a);
    if (v < 0)
        buf[k++] = '-';
    while (n)
        buf[k++] = tmp[--n];
    buf[k] = 0;
    return buf;
}

/* 0: ok; 1: outside [-2^63, 2^64) (no exception); -1: exception set */
static int long_to_i128(PyObject *v, i128 *out)
{
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (!overflow) {
        if (x == -1 && PyErr_Occurred())
            return -1;
        *out = x;
        return 0;
    }
    if (overflow < 0)
        return 1;
    unsigned long long u = PyLong_AsUnsignedLongLong(v);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        return 1;
    }
    *out = (i128)u;
    return 0;
}

static PyObject *long_from_i128(i128 v)
{
    if (v >= INT64_MIN && v <= INT64_MAX)
        return PyLong_FromLongLong((long long)v);
    if (v >= 0 && v <= (i128)UINT64_MAX)
        return PyLong_FromUnsignedLongLong((unsigned long long)v);
    /* wider (lenient deltas only): high * 2**64 + low */
    u128 a = v < 0 ? (u128)0 - (u128)v : (u128)v;
    PyObject *hi = PyLong_FromUnsignedLongLong((unsigned long long)(a >> 64));
    PyObject *lo = PyLong_FromUnsignedLongLong((unsigned long long)a);
    PyObject *sh = PyLong_FromLong(64);
    PyObject *r = NULL, *t = NULL;
    if (hi && lo && sh && (t = PyNumber_Lshift(hi, sh)) != NULL)
        r = PyNumber_Or(t, lo);
    Py_XDECREF(t);
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(sh);
    if (r && v < 0) {
        PyObject *neg = PyNumber_Negative(r);
        Py_DECREF(r);
        r = neg;
    }
    return r;
}

static void raise_fast(VM *vm, PyObject *tname, PyObject *fname, const char *code,
                       const char *fmt, va_list ap)
{
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    PyObject *full, *exc;
    if (!msg)
        return;
    if (tname && fname)
        full = PyUnicode_FromFormat("%U: %U: %U", tname, fname, msg);
    else if (tname)
        full = PyUnicode_FromFormat("%U: %U", tname, msg);
    else {
        full = msg;
        Py_INCREF(full);
    }
    Py_DECREF(msg);
    if (!full)
        return;
    if (code)
        exc = PyObject_CallFunction(vm->fast_error, "Os", full, code);
    else
        exc = PyObject_CallOneArg(vm->fast_error, full);
    Py_DECREF(full);
    if (!exc)
        return;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

static int vm_fail(VM *vm, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    raise_fast(vm, NULL, NULL, code, fmt, ap);
    va_end(ap);
    return -1;
}

/* Turn a stray TypeError/ValueError/... from a Python API call into a FastError naming the
 * template and field (as the reference encoder does); other exceptions pass through. */
static void convert_error(VM *vm, PyObject *tname, PyObject *fname)
{
    PyObject *type, *val, *tb, *s;
    if (!PyErr_Occurred() || PyErr_ExceptionMatches(vm->fast_error))
        return;
    if (!(PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_ValueError)
          || PyErr_ExceptionMatches(PyExc_AttributeError)
          || PyErr_ExceptionMatches(PyExc_ArithmeticError)
          || PyErr_ExceptionMatches(PyExc_IndexError)
          || PyErr_ExceptionMatches(PyExc_KeyError)))
        return;
    PyErr_Fetch(&type, &val, &tb);
    PyErr_NormalizeException(&type, &val, &tb);
    s = val ? PyObject_Str(val) : NULL;
    Py_XDECREF(type);
    Py_XDECREF(val);
    Py_XDECREF(tb);
    if (!s)
        return;
    PyObject *msg = PyUnicode_FromFormat("invalid value (%U)", s);
    Py_DECREF(s);
    if (!msg)
        return;
    PyObject *full = fname ? PyUnicode_FromFormat("%U: %U: %U", tname, fname, msg)
                           : PyUnicode_FromFormat("%U: %U", tname, msg);
    Py_DECREF(msg);
    if (!full)
        return;
    PyObject *exc = PyObject_CallOneArg(vm->fast_error, full);
    Py_DECREF(full);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

/* slots */

static inline void slot_clear(Slot *s)
{
    s->st = ST_UNDEF;
    Py_CLEAR(s->obj);
}

static inline void slot_empty(Slot *s)
{
    s->st = ST_EMPTY;
    Py_CLEAR(s->obj);
}

/* (a decoder keeps the int object of an integer slot's value in obj, for reuse) */
static inline void slot_int(Slot *s, i128 v)
{
    if (s->obj && s->i != v)
        Py_CLEAR(s->obj);
    s->st = ST_VALUE;
    s->i = v;
}

static inline void slot_dec(Slot *s, i128 m, i128 e)
{
    s->st = ST_VALUE;
    s->m = m;
    s->e = e;
}

static inline void slot_obj(Slot *s, PyObject *o)
{
    PyObject *old = s->obj;
    Py_INCREF(o);
    s->obj = o;
    s->st = ST_VALUE;
    Py_XDECREF(old);
}

/* The bytes a string value works on: ASCII characters, UTF-8 or the raw bytes. */
static int obj_data(int kind, PyObject *o, const char **p, Py_ssize_t *n)
{
    if (kind == K_BYTES) {
        *p = PyBytes_AS_STRING(o);
        *n = PyBytes_GET_SIZE(o);
        return 0;
    }
    if (kind == K_ASCII) {
        *p = (const char *)PyUnicode_1BYTE_DATA(o);
        *n = PyUnicode_GET_LENGTH(o);
        return 0;
    }
    *p = PyUnicode_AsUTF8AndSize(o, n);
    return *p ? 0 : -1;
}

/* decimals */

static PyObject *make_pair(i128 m, i128 e)
{
    PyObject *a = long_from_i128(m), *b, *t;
    if (!a)
        return NULL;
    b = long_from_i128(e);
    if (!b) {
        Py_DECREF(a);
        return NULL;
    }
    t = PyTuple_New(2);
    if (!t) {
        Py_DECREF(a);
        Py_DECREF(b);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    return t;
}

/* The decoder's output for m * 10**e: a pair, or a Decimal built exactly; both memoised
 * (immutable, so one object can be handed out many times). */
static PyObject *make_dec(VM *vm, i128 m, i128 e)
{
    char buf[112];
    PyObject *s, *d;
    CacheEnt *ce;
    if (m < INT64_MIN || m > INT64_MAX || e < INT32_MIN || e > INT32_MAX) {
        if (vm->pairs)
            return make_pair(m, e);
        char a[48], b[48];   /* only from a lenient decoder: not memoised */
        snprintf(buf, sizeof buf, "%sE%s", fmt_i128(m, a), fmt_i128(e, b));
        s = PyUnicode_FromString(buf);
        if (!s)
            return NULL;
        d = PyObject_CallOneArg(vm->decimal_type, s);
        Py_DECREF(s);
        return d;
    }
    if (!vm->dcache) {
        vm->dcache = PyMem_Calloc(DCACHE_SIZE, sizeof(CacheEnt));
        if (!vm->dcache)
            return PyErr_NoMemory();
    }
    uint64_t h = (uint64_t)(int64_t)m * 0x9E3779B97F4A7C15ull
                 ^ (uint64_t)(uint32_t)(int32_t)e * 0xC2B2AE3D27D4EB4Full;
    ce = &vm->dcache[(h >> 40) & (DCACHE_SIZE - 1)];
    if (ce->obj && ce->m == (int64_t)m && ce->e == (int32_t)e) {
        Py_INCREF(ce->obj);
        return ce->obj;
    }
    if (vm->pairs)
        d = make_pair(m, e);    /* tuples are immutable too: shared like Decimals */
    else {
        snprintf(buf, sizeof buf, "%lldE%d", (long long)m, (int)e);   /* exact, any context */
        s = PyUnicode_FromString(buf);
        if (!s)
            return NULL;
        d = PyObject_CallOneArg(vm->decimal_type, s);
        Py_DECREF(s);
    }
    if (!d)
        return NULL;
    Py_INCREF(d);
    Py_XDECREF(ce->obj);
    ce->obj = d;
    ce->m = (int64_t)m;
    ce->e = (int32_t)e;
    return d;
}

/* ------------------------------------------------------------------------ encoder */

typedef struct {
    uint8_t *p;
    Py_ssize_t n, cap;
    uint8_t local[512];
} Buf;

typedef struct {
    VM *vm;
    const Tmpl *t;
    Slot *D;
    Buf b;
} Enc;

typedef struct {
    Py_ssize_t q;               /* offset of the reserved presence map */
    Py_ssize_t reserved;
    int32_t shift;              /* bits dropped so far (absent optional decimals) */
} EPm;

static int buf_grow(Buf *b, Py_ssize_t extra)
{
    Py_ssize_t need = b->n + extra, cap = b->cap;
    uint8_t *np;
    if (extra < 0 || need < b->n || need > PY_SSIZE_T_MAX / 2) {
        PyErr_NoMemory();
        return -1;
    }
    while (cap < need)
        cap *= 2;
    if (b->p == b->local) {
        np = PyMem_Malloc(cap);
        if (np)
            memcpy(np, b->local, b->n);
    }
    else
        np = PyMem_Realloc(b->p, cap);
    if (!np) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = np;
    b->cap = cap;
    return 0;
}

#define NEED(c, k)                                                              \
    do {                                                                        \
        if ((c)->b.n + (Py_ssize_t)(k) > (c)->b.cap && buf_grow(&(c)->b, (k)) < 0) \
            return -1;                                                          \
    } while (0)

static int efail(Enc *c, const Instr *in, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    raise_fast(c->vm, c->t->name, in ? in->name : NULL, code, fmt, ap);
    va_end(ap);
    return -1;
}

static inline int put_byte(Enc *c, uint8_t x)
{
    NEED(c, 1);
    c->b.p[c->b.n++] = x;
    return 0;
}

static inline int put_raw(Enc *c, const void *p, Py_ssize_t n)
{
    NEED(c, n);
    if (n)
        memcpy(c->b.p + c->b.n, p, n);
    c->b.n += n;
    return 0;
}

static int put_uint(Enc *c, u128 v)
{
    uint8_t tmp[24];
    int k = 0, j;
    uint8_t *o;
    if (v < 0x80)
        return put_byte(c, (uint8_t)v | 0x80);
    while (v) {
        tmp[k++] = (uint8_t)(v & 0x7F);
        v >>= 7;
    }
    NEED(c, k);
    o = c->b.p + c->b.n;
    for (j = 0; j < k; j++)
        o[j] = tmp[k - 1 - j];
    o[k - 1] |= 0x80;
    c->b.n += k;
    return 0;
}

/* signed stop-bit integer: minimal two's complement, the sign in the first data bit */
static int put_sint(Enc *c, i128 v)
{
    uint8_t tmp[24];
    int k = 0, j;
    uint8_t *o;
    if (v >= -64 && v < 64)
        return put_byte(c, ((uint8_t)v & 0x7F) | 0x80);
    for (;;) {
        uint8_t g = (uint8_t)((u128)v & 0x7F);
        v = (v - (i128)g) / 128;       /* exact: an arithmetic shift */
        tmp[k++] = g;
        if ((v == 0 && !(g & 0x40)) || (v == -1 && (g & 0x40)))
            break;
    }
    NEED(c, k);
    o = c->b.p + c->b.n;
    for (j = 0; j < k; j++)
        o[j] = tmp[k - 1 - j];
    o[k - 1] |= 0x80;
    c->b.n += k;
    return 0;
}

/* a signed value that may be nullable (non-negative values sent plus one) */
static inline int put_delta(Enc *c, i128 v, int nullable)
{
    return put_sint(c, nullable && v >= 0 ? v + 1 : v);
}

static int range_error(Enc *c, const Instr *in, i128 v)
{
    char a[48], b[48], d[48];
    return efail(c, in, "D2", "%s outside [%s, %s]", fmt_i128(v, a), fmt_i128(in->lo, b),
                 fmt_i128(in->hi, d));
}

/* an integer field's value, range-checked, nullable when the field is optional */
static int put_value(Enc *c, const Instr *in, i128 v)
{
    if (v < in->lo || v > in->hi)
        return range_error(c, in, v);
    if (in->itype == IT_U32 || in->itype == IT_U64)
        return put_uint(c, (u128)(in->optional ? v + 1 : v));
    return put_sint(c, in->optional && v >= 0 ? v + 1 : v);
}

static inline void set_bit(Enc *c, EPm *pm, int32_t bit)
{
    int32_t k = bit - pm->shift;
    c->b.p[pm->q + k / 7] |= (uint8_t)(0x40 >> (k % 7));
}

static int epm_begin(Enc *c, EPm *pm, int32_t nbits)
{
    Py_ssize_t r = nbits > 0 ? (nbits + 6) / 7 : 1;
    NEED(c, r);
    memset(c->b.p + c->b.n, 0, r);
    pm->q = c->b.n;
    pm->reserved = r;
    pm->shift = 0;
    c->b.n += r;
    return 0;
}

/* stop-bit the map, dropping trailing zero bytes (the fields after it move down) */
static void epm_end(Enc *c, EPm *pm)
{
    uint8_t *p = c->b.p + pm->q;
    Py_ssize_t len = pm->reserved;
    while (len > 1 && p[len - 1] == 0)
        len--;
    p[len - 1] |= 0x80;
    if (len < pm->reserved) {
        Py_ssize_t body = c->b.n - (pm->q + pm->reserved);
        memmove(p + len, p + pm->reserved, body);
        c->b.n -= pm->reserved - len;
    }
}

/* New reference to V[key]; NULL with *missing set when absent, NULL with an exception
 * on failure.  Exact dicts are read directly; any other mapping as the reference encoder
 * reads it: V.get(key) for optional fields and those with an initial value, else V[key]
 * (so overrides such as __missing__ behave the same). */
static PyObject *lookup(PyObject *V, PyObject *key, int use_get, int *missing)
{
    PyObject *v;
    *missing = 0;
    if (PyDict_CheckExact(V)) {
        v = PyDict_GetItemWithError(V, key);
        if (v) {
            Py_INCREF(v);
            return v;
        }
        if (!PyErr_Occurred())
            *missing = 1;
        return NULL;
    }
    if (use_get) {
        v = PyObject_CallMethodObjArgs(V, s_get, key, absent, NULL);
        if (v == absent) {
            Py_DECREF(v);
            *missing = 1;
            return NULL;
        }
        return v;
    }
    v = PyObject_GetItem(V, key);
    if (v)
        return v;
    if (PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
        *missing = 1;
    }
    return NULL;
}

/* Where a segment's field values come from.  Dicts are usually built in field order, so
 * a dict's items are walked alongside the instructions: when the next key is the field's
 * own (interned) key object, its value is taken without a hash lookup. */
typedef struct {
    PyObject *V;
    Py_ssize_t pos;
    int walk;
} Src;

static inline void src_init(Src *src, PyObject *V)
{
    src->V = V;
    src->pos = 0;
    src->walk = PyDict_CheckExact(V);
}

/* The value of field `in` (new reference): None for an absent optional field, the initial
 * value for an absent mandatory constant/default field. */
static PyObject *field_value(Enc *c, const Instr *in, Src *src)
{
    int missing;
    PyObject *v;
    if (src->walk) {
        Py_ssize_t p = src->pos;
        PyObject *k;
        if (PyDict_Next(src->V, &p, &k, &v) && k == in->key) {
            src->pos = p;
            Py_INCREF(v);
            return v;
        }
    }
    v = lookup(src->V, in->key, in->optional || in->op == OP_CONST || in->op == OP_DEFAULT,
               &missing);
    if (v || !missing)
        return v;
    if (in->optional)
        Py_RETURN_NONE;
    if ((in->op == OP_CONST || in->op == OP_DEFAULT) && in->init_obj) {
        Py_INCREF(in->init_obj);
        return in->init_obj;
    }
    efail(c, NULL, NULL, "missing mandatory field '%U'", in->key);
    return NULL;
}

static int to_int(Enc *c, const Instr *in, PyObject *v, i128 *out)
{
    int r;
    if (!PyLong_Check(v))
        return efail(c, in, NULL, "expected int, got %s", Py_TYPE(v)->tp_name);
    r = long_to_i128(v, out);
    if (r > 0) {
        if (in->op == OP_CONST)
            return efail(c, in, NULL, "value %S differs from the constant %R", v, in->init_obj);
        return efail(c, in, "D2", "%S outside the range of any FAST integer", v);
    }
    return r;
}

static int mismatch_int(Enc *c, const Instr *in, i128 v)
{
    char a[48];
    return efail(c, in, NULL, "value %s differs from the constant %R", fmt_i128(v, a),
                 in->init_obj);
}

/* An absent optional value under copy/increment/tail: NULL unless the decoder infers
 * it anyway (spec 6.3.4). */
static int copy_absent(Enc *c, const Instr *in, EPm *pm, Slot *s)
{
    if (in->has_init) {
        if (s->st != ST_EMPTY) {
            set_bit(c, pm, in->bit);
            if (put_byte(c, 0x80) < 0)
                return -1;
            slot_empty(s);
        }
    }
    else if (s->st == ST_UNDEF)
        slot_empty(s);
    else if (s->st == ST_VALUE) {
        set_bit(c, pm, in->bit);
        if (put_byte(c, 0x80) < 0)
            return -1;
        slot_empty(s);
    }
    return 0;
}

/* integer operators; `present` is 0 for an absent optional value */
static int enc_int_op(Enc *c, const Instr *in, EPm *pm, int present, i128 v)
{
    Slot *s;
    switch (in->op) {
    case OP_NONE:
        if (!present)
            return put_byte(c, 0x80);
        return put_value(c, in, v);
    case OP_CONST:
        if (!present)
            return 0;
        if (v != in->init_i)
            return mismatch_int(c, in, v);
        if (in->optional)
            set_bit(c, pm, in->bit);
        return 0;
    case OP_DEFAULT:
        if (!present) {
            if (in->has_init) {
                set_bit(c, pm, in->bit);
                return put_byte(c, 0x80);
            }
            return 0;
        }
        if (in->has_init && v == in->init_i)
            return 0;
        set_bit(c, pm, in->bit);
        return put_value(c, in, v);
    case OP_COPY:
        s = &c->D[in->slot];
        if (!present)
            return copy_absent(c, in, pm, s);
        if (s->st == ST_UNDEF && in->has_init && v == in->init_i) {
            slot_int(s, v);
            return 0;
        }
        if (s->st == ST_VALUE && s->i == v)
            return 0;
        set_bit(c, pm, in->bit);
        if (put_value(c, in, v) < 0)
            return -1;
        slot_int(s, v);
        return 0;
    case OP_INCR: {
        int known;
        i128 x = 0;
        s = &c->D[in->slot];
        if (!present)
            return copy_absent(c, in, pm, s);
        if (s->st == ST_UNDEF) {
            known = in->has_init;
            x = in->init_i;
        }
        else if (s->st == ST_EMPTY)
            known = 0;
        else {
            known = 1;
            x = s->i < in->hi ? s->i + 1 : in->lo;
        }
        if (!known || v != x) {
            set_bit(c, pm, in->bit);
            if (put_value(c, in, v) < 0)
                return -1;
        }
        slot_int(s, v);
        return 0;
    }
    case OP_DELTA: {
        i128 base;
        if (!present)
            return put_byte(c, 0x80);
        if (v < in->lo || v > in->hi)
            return range_error(c, in, v);
        s = &c->D[in->slot];
        if (s->st == ST_UNDEF)
            base = in->has_init ? in->init_i : 0;
        else if (s->st == ST_EMPTY)
            return efail(c, in, "D6", "delta with an empty previous value");
        else
            base = s->i;
        if (put_delta(c, v - base, in->optional) < 0)
            return -1;
        slot_int(s, v);
        return 0;
    }
    }
    return efail(c, in, NULL, "bad operator");
}

static int enc_int(Enc *c, const Instr *in, Src *V, EPm *pm)
{
    PyObject *v = field_value(c, in, V);
    i128 x = 0;
    int r;
    if (!v)
        return -1;
    if (v == Py_None) {
        Py_DECREF(v);
        if (!in->optional)
            return efail(c, in, NULL, "expected int, got None");
        return enc_int_op(c, in, pm, 0, 0);
    }
    r = to_int(c, in, v, &x);
    Py_DECREF(v);
    if (r < 0)
        return -1;
    return enc_int_op(c, in, pm, 1, x);
}

/* decimal values */

static int pair_check(Enc *c, const Instr *in, i128 m, i128 e, int64_t *mo, int32_t *eo)
{
    char a[48];
    if (e < -63 || e > 63)
        return efail(c, in, "R1", "decimal exponent %s outside [-63, 63]", fmt_i128(e, a));
    if (m < INT64_MIN || m > INT64_MAX)
        return efail(c, in, "R1", "decimal mantissa %s does not fit an int64", fmt_i128(m, a));
    *mo = (int64_t)m;
    *eo = (int32_t)e;
    return 0;
}

/* (mantissa, exponent) of a Decimal from its exact text form (str() spells out the
 * coefficient and exponent: "1.50" is 150E-2, "1.5E+3" is 15E+2). */
static int pair_of_decimal(Enc *c, const Instr *in, PyObject *x, int64_t *mo, int32_t *eo)
{
    Py_ssize_t n, i = 0;
    const char *p;
    PyObject *s = PyObject_Str(x);
    uint64_t mag = 0;
    int neg = 0, big = 0, frac = 0, dot = 0, r;
    i128 ex = 0;
    if (!s)
        return -1;
    p = PyUnicode_AsUTF8AndSize(s, &n);
    if (!p) {
        Py_DECREF(s);
        return -1;
    }
    if (i < n && p[i] == '-') {
        neg = 1;
        i++;
    }
    if (i >= n || p[i] < '0' || p[i] > '9') {
        r = efail(c, in, NULL, "decimal value %U is not finite", s);
        Py_DECREF(s);
        return r;
    }
    for (; i < n; i++) {
        char ch = p[i];
        if (ch >= '0' && ch <= '9') {
            if (!big) {
                if (mag > (UINT64_MAX - 9) / 10)
                    big = 1;
                else
                    mag = mag * 10 + (uint64_t)(ch - '0');
            }
            if (dot)
                frac++;
        }
        else if (ch == '.' && !dot)
            dot = 1;
        else
            break;
    }
    if (i < n && (p[i] == 'E' || p[i] == 'e')) {
        int eneg = 0;
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            eneg = p[i++] == '-';
        if (i >= n)
            goto bad;
        for (; i < n && p[i] >= '0' && p[i] <= '9'; i++)
            if (ex < ((i128)1 << 80))
                ex = ex * 10 + (p[i] - '0');
        if (eneg)
            ex = -ex;
    }
    if (i != n)
        goto bad;
    Py_DECREF(s);
    ex -= frac;
    if (big) {
        if (ex < -63 || ex > 63)
            return pair_check(c, in, 0, ex, mo, eo);
        return efail(c, in, "R1", "decimal mantissa of %S does not fit an int64", x);
    }
    return pair_check(c, in, neg ? -(i128)mag : (i128)mag, ex, mo, eo);
bad:
    r = efail(c, in, NULL, "cannot read decimal value %U", s);
    Py_DECREF(s);
    return r;
}

static int pair_items(Enc *c, const Instr *in, PyObject *x, PyObject *a, PyObject *b,
                      int64_t *m, int32_t *e)
{
    i128 mv, ev;
    int r;
    if (!PyLong_CheckExact(a) || !PyLong_CheckExact(b))
        return efail(c, in, NULL, "decimal mantissa and exponent must be ints, got %R", x);
    r = long_to_i128(b, &ev);
    if (r < 0)
        return -1;
    if (r > 0)
        return efail(c, in, "R1", "decimal exponent %S outside [-63, 63]", b);
    r = long_to_i128(a, &mv);
    if (r < 0)
        return -1;
    if (r > 0 && ev >= -63 && ev <= 63)
        return efail(c, in, "R1", "decimal mantissa %S does not fit an int64", a);
    return pair_check(c, in, r > 0 ? 0 : mv, ev, m, e);
}

static int to_pair(Enc *c, const Instr *in, PyObject *x, int64_t *m, int32_t *e)
{
    PyTypeObject *tp = Py_TYPE(x);
    VM *vm = c->vm;
    if (tp == &PyTuple_Type) {
        if (PyTuple_GET_SIZE(x) != 2)
            return efail(c, in, NULL, "invalid value (a decimal pair has two items, got %zd)",
                         PyTuple_GET_SIZE(x));
        return pair_items(c, in, x, PyTuple_GET_ITEM(x, 0), PyTuple_GET_ITEM(x, 1), m, e);
    }
    if (tp == (PyTypeObject *)vm->decimal_type) {
        /* Decimals are immutable: memoise by identity (the cache holds a reference, so
         * the address cannot be reused while the entry lives) */
        CacheEnt *ce;
        if (!vm->ecache) {
            vm->ecache = PyMem_Calloc(ECACHE_SIZE, sizeof(CacheEnt));
            if (!vm->ecache) {
                PyErr_NoMemory();
                return -1;
            }
        }
        ce = &vm->ecache[((uintptr_t)x >> 4) & (ECACHE_SIZE - 1)];
        if (ce->obj == x) {
            *m = ce->m;
            *e = ce->e;
            return 0;
        }
        if (pair_of_decimal(c, in, x, m, e) < 0)
            return -1;
        Py_INCREF(x);
        Py_XDECREF(ce->obj);
        ce->obj = x;
        ce->m = *m;
        ce->e = *e;
        return 0;
    }
    if (PyLong_Check(x) && !PyBool_Check(x)) {
        i128 v;
        int r = long_to_i128(x, &v);
        if (r < 0)
            return -1;
        if (r > 0)
            return efail(c, in, "R1", "decimal mantissa %S does not fit an int64", x);
        return pair_check(c, in, v, 0, m, e);
    }
    if (PyObject_TypeCheck(x, (PyTypeObject *)vm->decimal_type))
        return pair_of_decimal(c, in, x, m, e);
    if (PyList_Check(x) && PyList_GET_SIZE(x) == 2) {
        PyObject *a = PyList_GET_ITEM(x, 0), *b = PyList_GET_ITEM(x, 1);
        int r;
        Py_INCREF(a);
        Py_INCREF(b);
        r = pair_items(c, in, x, a, b, m, e);
        Py_DECREF(a);
        Py_DECREF(b);
        return r;
    }
    return efail(c, in, NULL, "expected Decimal, int or (mantissa, exponent), got %s",
                 tp->tp_name);
}

static int put_pair(Enc *c, int64_t m, int32_t e, int nullable)
{
    if (put_delta(c, e, nullable) < 0)
        return -1;
    return put_sint(c, m);
}

static int mismatch_dec(Enc *c, const Instr *in, int64_t m, int32_t e)
{
    return efail(c, in, NULL, "value (%lld, %d) differs from the constant %R", (long long)m,
                 (int)e, in->init_obj);
}

static int enc_dec(Enc *c, const Instr *in, Src *V, EPm *pm)
{
    PyObject *x = field_value(c, in, V);
    int64_t m = 0;
    int32_t e = 0;
    int present, r;
    Slot *s;
    if (!x)
        return -1;
    present = x != Py_None;
    if (present) {
        r = to_pair(c, in, x, &m, &e);
        Py_DECREF(x);
        if (r < 0)
            return -1;
    }
    else {
        Py_DECREF(x);
        if (!in->optional) {
            if (in->op == OP_CONST)
                return 0;       /* a mandatory constant may be given as None */
            return efail(c, in, NULL,
                         "expected Decimal, int or (mantissa, exponent), got NoneType");
        }
    }
    switch (in->op) {
    case OP_NONE:
        if (!present)
            return put_byte(c, 0x80);
        return put_pair(c, m, e, in->optional);
    case OP_CONST: {
        int64_t nm = m;
        int32_t ne = e;
        if (!present)
            return 0;
        if (nm == 0)
            ne = 0;
        else
            while (nm % 10 == 0) {
                nm /= 10;
                ne++;
            }
        if (nm != in->init_m || ne != in->init_e)
            return mismatch_dec(c, in, m, e);
        if (in->optional)
            set_bit(c, pm, in->bit);
        return 0;
    }
    case OP_DEFAULT:
        if (!present) {
            if (in->has_init) {
                set_bit(c, pm, in->bit);
                return put_byte(c, 0x80);
            }
            return 0;
        }
        if (in->has_init && m == in->init_m && e == in->init_e)
            return 0;
        set_bit(c, pm, in->bit);
        return put_pair(c, m, e, in->optional);
    case OP_COPY:
        s = &c->D[in->slot];
        if (!present)
            return copy_absent(c, in, pm, s);
        if (s->st == ST_UNDEF && in->has_init && m == in->init_m && e == in->init_e) {
            slot_dec(s, m, e);
            return 0;
        }
        if (s->st == ST_VALUE && s->m == m && s->e == e)
            return 0;
        set_bit(c, pm, in->bit);
        if (put_pair(c, m, e, in->optional) < 0)
            return -1;
        slot_dec(s, m, e);
        return 0;
    case OP_DELTA: {
        i128 bm, be;
        if (!present)
            return put_byte(c, 0x80);
        s = &c->D[in->slot];
        if (s->st == ST_UNDEF) {
            bm = in->has_init ? in->init_m : 0;
            be = in->has_init ? in->init_e : 0;
        }
        else if (s->st == ST_EMPTY)
            return efail(c, in, "D6", "delta with an empty previous value");
        else {
            bm = s->m;
            be = s->e;
        }
        if (put_delta(c, (i128)e - be, in->optional) < 0)
            return -1;
        if (put_sint(c, (i128)m - bm) < 0)
            return -1;
        slot_dec(s, m, e);
        return 0;
    }
    }
    return efail(c, in, NULL, "bad operator");
}

/* m * 10**(e - target), exactly (ERR D3 when digits would be lost) */
static int rescale(Enc *c, const Instr *in, i128 *m, i128 e, i128 target)
{
    if (e > target) {
        i128 k = e - target;
        while (k-- > 0) {
            if (*m > BIG || *m < -BIG) {
                char a[48];
                if (in->parts[1].op == OP_CONST)
                    return efail(c, in, NULL, "value differs from the constant mantissa %R",
                                 in->parts[1].init_obj);
                return efail(c, in, "D2", "mantissa rescaled to exponent %s is outside int64",
                             fmt_i128(target, a));
            }
            *m *= 10;
        }
    }
    else if (e < target) {
        i128 k = target - e;
        while (k-- > 0) {
            if (*m % 10) {
                char a[48];
                return efail(c, in, "D3", "the value cannot be encoded with the constant "
                             "exponent %s", fmt_i128(target, a));
            }
            *m /= 10;
        }
    }
    return 0;
}

static int enc_deci(Enc *c, const Instr *in, Src *V, EPm *pm)
{
    const Instr *ei = &in->parts[0], *mi = &in->parts[1];
    PyObject *x = field_value(c, in, V);
    int64_t m = 0;
    int32_t e = 0;
    i128 M, E;
    int present, r;
    if (!x)
        return -1;
    present = x != Py_None;
    if (!present) {
        Py_DECREF(x);
        if (!in->optional)
            return efail(c, in, NULL,
                         "expected Decimal, int or (mantissa, exponent), got NoneType");
    }
    else {
        r = to_pair(c, in, x, &m, &e);
        Py_DECREF(x);
        if (r < 0)
            return -1;
    }
    M = m;
    E = e;
    if (present && ei->op == OP_CONST && E != ei->init_i) {
        if (rescale(c, in, &M, E, ei->init_i) < 0)
            return -1;
        E = ei->init_i;
    }
    if (enc_int_op(c, ei, pm, present, E) < 0)
        return -1;
    if (!present) {
        if (mi->bit >= 0)
            pm->shift++;        /* the mantissa's bit exists only with an exponent */
        return 0;
    }
    return enc_int_op(c, mi, pm, 1, M);
}

/* strings and byte vectors */

typedef struct {
    PyObject *obj;              /* exact str (ascii, unicode) or bytes */
    const char *p;
    Py_ssize_t n;
} SV;

static int str_value(Enc *c, const Instr *in, PyObject *v, SV *out)
{
    out->obj = NULL;
    if (in->kind == K_BYTES) {
        if (PyBytes_CheckExact(v)) {
            Py_INCREF(v);
            out->obj = v;
        }
        else if (PyByteArray_Check(v) || PyMemoryView_Check(v)) {
            out->obj = PyBytes_FromObject(v);
            if (!out->obj)
                return -1;
        }
        else
            return efail(c, in, NULL, "expected bytes, got %s", Py_TYPE(v)->tp_name);
        out->p = PyBytes_AS_STRING(out->obj);
        out->n = PyBytes_GET_SIZE(out->obj);
        return 0;
    }
    if (!PyUnicode_Check(v))
        return efail(c, in, NULL, "expected str, got %s", Py_TYPE(v)->tp_name);
    if (PyUnicode_CheckExact(v)) {
        Py_INCREF(v);
        out->obj = v;
    }
    else {
        out->obj = PyUnicode_FromObject(v);
        if (!out->obj)
            return -1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(out->obj) < 0) {
        Py_CLEAR(out->obj);
        return -1;
    }
#endif
    if (in->kind == K_ASCII) {
        if (!PyUnicode_IS_ASCII(out->obj)) {
            efail(c, in, NULL, "non-ASCII character in ASCII string %R", out->obj);
            Py_CLEAR(out->obj);
            return -1;
        }
        out->p = (const char *)PyUnicode_1BYTE_DATA(out->obj);
        out->n = PyUnicode_GET_LENGTH(out->obj);
        return 0;
    }
    out->p = PyUnicode_AsUTF8AndSize(out->obj, &out->n);
    if (!out->p) {
        PyErr_Clear();
        efail(c, in, NULL, "not encodable as UTF-8");
        Py_CLEAR(out->obj);
        return -1;
    }
    return 0;
}

static int put_str(Enc *c, const Instr *in, const char *p, Py_ssize_t n, int nullable)
{
    if (in->kind != K_ASCII) {
        if (put_uint(c, (u128)(nullable ? n + 1 : n)) < 0)
            return -1;
        return put_raw(c, p, n);
    }
    if (n == 0)
        return nullable ? put_raw(c, "\x00\x80", 2) : put_byte(c, 0x80);
    if (p[0] == 0) {
        if (n > 1)
            return efail(c, in, "R9", "ASCII string starts with NUL: not representable");
        return nullable ? put_raw(c, "\x00\x00\x80", 3) : put_raw(c, "\x00\x80", 2);
    }
    NEED(c, n);
    memcpy(c->b.p + c->b.n, p, n);
    c->b.n += n;
    c->b.p[c->b.n - 1] |= 0x80;
    return 0;
}

static inline int same(const char *a, Py_ssize_t an, const char *b, Py_ssize_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static int enc_str_op(Enc *c, const Instr *in, EPm *pm, int present, SV *r)
{
    Slot *s;
    const char *bp = "";
    Py_ssize_t bn = 0;
    int opt = in->optional;
    switch (in->op) {
    case OP_NONE:
        if (!present)
            return put_byte(c, 0x80);
        return put_str(c, in, r->p, r->n, opt);
    case OP_CONST:
        if (!present)
            return 0;
        if (!same(r->p, r->n, in->init_p, in->init_n))
            return efail(c, in, NULL, "value %R differs from the constant %R", r->obj,
                         in->init_obj);
        if (opt)
            set_bit(c, pm, in->bit);
        return 0;
    case OP_DEFAULT:
        if (!present) {
            if (in->has_init) {
                set_bit(c, pm, in->bit);
                return put_byte(c, 0x80);
            }
            return 0;
        }
        if (in->has_init && same(r->p, r->n, in->init_p, in->init_n))
            return 0;
        set_bit(c, pm, in->bit);
        return put_str(c, in, r->p, r->n, opt);
    case OP_COPY:
    case OP_TAIL:
        s = &c->D[in->slot];
        if (!present)
            return copy_absent(c, in, pm, s);
        if (s->st == ST_UNDEF && in->has_init && same(r->p, r->n, in->init_p, in->init_n)) {
            slot_obj(s, r->obj);
            return 0;
        }
        if (s->st == ST_VALUE) {
            if (obj_data(in->kind, s->obj, &bp, &bn) < 0)
                return -1;
            if (same(r->p, r->n, bp, bn))
                return 0;
        }
        set_bit(c, pm, in->bit);
        if (in->op == OP_COPY) {
            if (put_str(c, in, r->p, r->n, opt) < 0)
                return -1;
        }
        else {
            Py_ssize_t k = 0;
            if (s->st != ST_VALUE) {
                bp = in->has_init ? in->init_p : "";
                bn = in->has_init ? in->init_n : 0;
            }
            if (r->n < bn)
                return efail(c, in, "D3", "tail operator cannot shorten %zd bytes to %zd", bn,
                             r->n);
            if (r->n == bn)
                while (k < bn && bp[k] == r->p[k])
                    k++;
            if (put_str(c, in, r->p + k, r->n - k, opt) < 0)
                return -1;
        }
        slot_obj(s, r->obj);
        return 0;
    case OP_DELTA: {
        Py_ssize_t nmin, pre = 0, suf = 0, sub;
        const char *dp;
        Py_ssize_t dn;
        if (!present)
            return put_byte(c, 0x80);
        s = &c->D[in->slot];
        if (s->st == ST_UNDEF) {
            bp = in->has_init ? in->init_p : "";
            bn = in->has_init ? in->init_n : 0;
        }
        else if (s->st == ST_EMPTY)
            return efail(c, in, "D6", "delta with an empty previous value");
        else if (obj_data(in->kind, s->obj, &bp, &bn) < 0)
            return -1;
        nmin = bn < r->n ? bn : r->n;
        while (pre < nmin && bp[pre] == r->p[pre])
            pre++;
        sub = bn - pre;
        dp = r->p + pre;
        dn = r->n - pre;
        if (c->vm->front) {
            while (suf < nmin && bp[bn - 1 - suf] == r->p[r->n - 1 - suf])
                suf++;
            if (r->n - suf < r->n - pre) {   /* keep the suffix, replace the head */
                sub = -(bn - suf) - 1;
                dp = r->p;
                dn = r->n - suf;
            }
        }
        if (put_delta(c, sub, opt) < 0 || put_str(c, in, dp, dn, 0) < 0)
            return -1;
        slot_obj(s, r->obj);
        return 0;
    }
    }
    return efail(c, in, NULL, "bad operator");
}

static int enc_str(Enc *c, const Instr *in, Src *V, EPm *pm)
{
    PyObject *v = field_value(c, in, V);
    SV r = {NULL, NULL, 0};
    int present, rc;
    if (!v)
        return -1;
    present = v != Py_None;
    if (present) {
        rc = str_value(c, in, v, &r);
        Py_DECREF(v);
        if (rc < 0)
            return -1;
    }
    else {
        Py_DECREF(v);
        if (!in->optional)
            return efail(c, in, NULL, "expected %s, got None",
                         in->kind == K_BYTES ? "bytes" : "str");
    }
    rc = enc_str_op(c, in, pm, present, &r);
    Py_XDECREF(r.obj);
    return rc;
}

static int enc_segment(Enc *c, const Segment *sg, PyObject *V, EPm *pm);

static int enc_element(Enc *c, const Segment *sg, PyObject *E)
{
    EPm sub;
    if (!sg->nbits)
        return enc_segment(c, sg, E, NULL);
    if (epm_begin(c, &sub, sg->nbits) < 0 || enc_segment(c, sg, E, &sub) < 0)
        return -1;
    epm_end(c, &sub);
    return 0;
}

static int enc_seq(Enc *c, const Instr *in, Src *V, EPm *pm)
{
    PyObject *v = field_value(c, in, V), *fast = NULL;
    Py_ssize_t n = 0, k;
    int present, rc = -1;
    if (!v)
        return -1;
    present = v != Py_None;
    if (present) {
        if (!PySequence_Check(v)) {     /* as len() in the reference: no iterators */
            efail(c, in, NULL, "expected a list of dicts, got %s", Py_TYPE(v)->tp_name);
            Py_DECREF(v);
            return -1;
        }
        fast = PySequence_Fast(v, "a sequence value must be a list of dicts");
        Py_DECREF(v);
        if (!fast)
            return -1;
        n = PySequence_Fast_GET_SIZE(fast);
    }
    else {
        Py_DECREF(v);
        if (!in->optional)
            return efail(c, in, NULL, "expected a list of dicts, got None");
    }
    if (enc_int_op(c, &in->parts[0], pm, present, n) < 0)
        goto done;
    for (k = 0; k < n; k++) {
        PyObject *E;
        if (k >= PySequence_Fast_GET_SIZE(fast))
            break;      /* shrunk while we were at it */
        E = PySequence_Fast_GET_ITEM(fast, k);
        Py_INCREF(E);
        rc = enc_element(c, in->seg, E);
        Py_DECREF(E);
        if (rc < 0)
            goto done;
    }
    if (k < n) {
        efail(c, in, NULL, "the list changed size while being encoded");
        rc = -1;
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(fast);
    return rc;
}

static int enc_group(Enc *c, const Instr *in, Src *V, EPm *pm)
{
    PyObject *g = field_value(c, in, V);
    int rc;
    if (!g)
        return -1;
    if (g == Py_None) {
        Py_DECREF(g);
        if (!in->optional)
            return efail(c, in, NULL, "expected a dict, got None");
        return 0;
    }
    if (in->optional)
        set_bit(c, pm, in->bit);
    rc = enc_element(c, in->seg, g);
    Py_DECREF(g);
    return rc;
}

static int enc_field(Enc *c, const Instr *in, Src *V, EPm *pm)
{
    switch (in->kind) {
    case K_INT:
        return enc_int(c, in, V, pm);
    case K_DEC:
        return enc_dec(c, in, V, pm);
    case K_DECI:
        return enc_deci(c, in, V, pm);
    case K_ASCII:
    case K_UNICODE:
    case K_BYTES:
        return enc_str(c, in, V, pm);
    case K_SEQ:
        return enc_seq(c, in, V, pm);
    case K_GROUP:
        return enc_group(c, in, V, pm);
    }
    return efail(c, in, NULL, "bad instruction");
}

static int enc_segment(Enc *c, const Segment *sg, PyObject *V, EPm *pm)
{
    Py_ssize_t k;
    Src src;
    src_init(&src, V);
    for (k = 0; k < sg->n; k++) {
        const Instr *in = &sg->ins[k];
        if (enc_field(c, in, &src, pm) < 0) {
            convert_error(c->vm, c->t->name, in->name);
            return -1;
        }
    }
    return 0;
}

static void clear_used(VM *vm, const Tmpl *t)
{
    Py_ssize_t k;
    for (k = 0; k < t->nused; k++)
        slot_clear(&vm->fresh[t->used[k]]);
}

static PyObject *run_encode(VM *vm, const Tmpl *t, PyObject *V, int datagram, uint32_t seqnum)
{
    Enc c;
    EPm pm;
    PyObject *res = NULL;
    int rc = -1;
    if (vm->busy) {
        PyErr_SetString(PyExc_RuntimeError, "FAST codec used re-entrantly");
        return NULL;
    }
    vm->busy = 1;
    c.vm = vm;
    c.t = t;
    c.D = datagram ? vm->fresh : vm->dict;
    c.b.p = c.b.local;
    c.b.n = 0;
    c.b.cap = sizeof c.b.local;
    if (datagram) {
        uint8_t le[4] = {(uint8_t)seqnum, (uint8_t)(seqnum >> 8), (uint8_t)(seqnum >> 16),
                         (uint8_t)(seqnum >> 24)};
        memcpy(c.b.p, le, 4);
        c.b.n = 4;
    }
    if (epm_begin(&c, &pm, t->nbits) < 0)
        goto done;
    if (datagram || c.D[0].st != ST_VALUE || c.D[0].i != t->tid) {
        if (!datagram)
            slot_int(&c.D[0], t->tid);
        set_bit(&c, &pm, 0);
        if (put_raw(&c, t->tid_enc, t->tid_len) < 0)
            goto done;
    }
    if (enc_segment(&c, &t->seg, V, &pm) < 0)
        goto done;
    epm_end(&c, &pm);
    rc = 0;
done:
    if (rc == 0)
        res = PyBytes_FromStringAndSize((const char *)c.b.p, c.b.n);
    else
        convert_error(vm, t->name, NULL);
    if (c.b.p != c.b.local)
        PyMem_Free(c.b.p);
    if (datagram)
        clear_used(vm, t);
    vm->busy = 0;
    return res;
}

/* ------------------------------------------------------------------------ decoder */

typedef struct {
    VM *vm;
    const Tmpl *t;
    Slot *D;
    const uint8_t *p;
    Py_ssize_t n, i;
    const Instr *cur;
    int strict;
} Dec;

typedef struct {
    Py_ssize_t at, len;
    int32_t shift;
} DPm;

static int dfail(Dec *c, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    raise_fast(c->vm, c->t ? c->t->name : NULL, c->t && c->cur ? c->cur->name : NULL, code,
               fmt, ap);
    va_end(ap);
    return -1;
}

static int truncated(Dec *c)
{
    return dfail(c, NULL, "truncated message: the data ends inside a field");
}

/* The checking reader (primitives.read_int/read_uint): a stop-bit integer at c->i in
 * [lo, hi], overlong (R6, strict), more than 10 bytes (20 lenient: D2), range (D2). */
static int rd_int_checked(Dec *c, int sign, i128 lo, i128 hi, i128 *out)
{
    const uint8_t *p = c->p;
    Py_ssize_t i = c->i, j, limit;
    uint8_t b, nb;
    i128 v;
    int big = 0;
    if (i >= c->n)
        return truncated(c);
    b = p[i];
    if (b & 0x80) {
        c->i = i + 1;
        *out = sign ? (i128)((b & 0x3F) - (b & 0x40)) : (i128)(b & 0x7F);
        return 0;
    }
    if (!sign && b == 0 && c->strict)
        return dfail(c, "R6", "overlong unsigned integer");
    v = sign ? (i128)((b & 0x3F) - (b & 0x40)) : (i128)b;
    j = i + 1;
    limit = i + (c->strict ? 10 : 20) - 1;
    if (j >= c->n)
        return truncated(c);
    nb = p[j];
    if (sign && c->strict && (b == 0x00 || b == 0x7F) && (nb & 0x40) == (b & 0x40))
        return dfail(c, "R6", "overlong signed integer");
    b = nb;
    while (b < 0x80) {
        if (j >= limit)
            return dfail(c, "D2", "integer entity too long for any FAST integer type");
        if (!big) {
            v = v * 128 + b;
            if (v > BIG || v < -BIG)
                big = 1;
        }
        j++;
        if (j >= c->n)
            return truncated(c);
        b = p[j];
    }
    if (!big)
        v = v * 128 + (b & 0x7F);
    if (big || v < lo || v > hi) {
        char a[48], d[48], x[48];
        if (big)
            return dfail(c, "D2", "integer outside [%s, %s]", fmt_i128(lo, a), fmt_i128(hi, d));
        return dfail(c, "D2", "integer %s outside [%s, %s]", fmt_i128(v, x), fmt_i128(lo, a),
                     fmt_i128(hi, d));
    }
    c->i = j + 1;
    *out = v;
    return 0;
}

/* An integer in [lo, hi].  As in the generated decoder, the entity is first gathered to
 * its stop byte (so a truncation is reported as such), and only a suspicious one (a
 * first byte that may make it overlong, a value out of range) is re-read by the checking
 * reader, which reports the error or, when lenient, returns the value. */
static int rd_int(Dec *c, int sign, i128 lo, i128 hi, i128 *out)
{
    const uint8_t *p = c->p;
    Py_ssize_t i = c->i, j;
    uint8_t b0, b;
    i128 t;
    int sat = 0;
    if (i >= c->n)
        return truncated(c);
    b0 = p[i];
    if (b0 & 0x80) {
        c->i = i + 1;
        *out = sign ? (i128)((b0 & 0x3F) - (b0 & 0x40)) : (i128)(b0 & 0x7F);
        return 0;
    }
    t = sign ? (i128)((b0 & 0x3F) - (b0 & 0x40)) : (i128)b0;
    j = i + 1;
    if (j >= c->n)
        return truncated(c);
    b = p[j];
    if (b & 0x80) {     /* two bytes: overlong exactly when the value fits one */
        t = t * 128 + (b & 0x7F);
        if (sign ? (t >= -64 && t < 64) : t < 128)
            return rd_int_checked(c, sign, lo, hi, out);
        c->i = j + 1;
        *out = t;
        return 0;
    }
    while (b < 0x80 && t < ((i128)1 << 72)) {
        if (t < -BIG)
            sat = 1;    /* negative values are gathered to the stop byte: keep scanning */
        else
            t = t * 128 + b;
        j++;
        if (j >= c->n)
            return truncated(c);
        b = p[j];
    }
    if (!sat)
        t = t * 128 + (b & 0x7F);
    if (sat || (sign ? (b0 == 0x00 || b0 == 0x7F || t < lo || t > hi) : (b0 == 0 || t > hi)))
        return rd_int_checked(c, sign, lo, hi, out);
    c->i = j + 1;
    *out = t;
    return 0;
}

static int rd_num(Dec *c, int sign, i128 lo, i128 hi, int nullable, i128 *v, int *isnull)
{
    *isnull = 0;
    if (rd_int(c, sign, lo, nullable ? hi + 1 : hi, v) < 0)
        return -1;
    if (nullable) {
        if (sign) {
            if (*v > 0)
                *v -= 1;
            else if (*v == 0)
                *isnull = 1;
        }
        else if (*v == 0)
            *isnull = 1;
        else
            *v -= 1;
    }
    return 0;
}

/* presence map at c->i: R7 (overlong) when strict */
static int dpm_read(Dec *c, DPm *pm)
{
    Py_ssize_t at = c->i;
    for (;;) {
        if (c->i >= c->n)
            return truncated(c);
        if (c->p[c->i++] & 0x80)
            break;
    }
    pm->at = at;
    pm->len = c->i - at;
    pm->shift = 0;
    if (c->strict && pm->len > 1 && c->p[c->i - 1] == 0x80)
        return dfail(c, "R7", "overlong presence map (ends in seven zero bits)");
    return 0;
}

static int dpm_extra(Dec *c, const DPm *pm, int32_t nbits)
{
    Py_ssize_t b;
    for (b = nbits / 7; b < pm->len; b++) {
        uint8_t bits = c->p[pm->at + b] & 0x7F;
        if (b == nbits / 7)
            bits &= (uint8_t)(0x7F >> (nbits % 7));
        if (bits)
            return 1;
    }
    return 0;
}

static inline int pm_bit(Dec *c, const DPm *pm, int32_t bit)
{
    int32_t k = bit - pm->shift;
    Py_ssize_t b = k / 7;
    return b < pm->len && (c->p[pm->at + b] & (0x40 >> (k % 7)));
}

static int dec_int_op(Dec *c, const Instr *in, DPm *pm, int *present, i128 *out)
{
    int opt = in->optional, isnull, sign = in->itype == IT_I32 || in->itype == IT_I64;
    Slot *s;
    i128 v;
    switch (in->op) {
    case OP_NONE:
    read:
        if (rd_num(c, sign, in->lo, in->hi, opt, &v, &isnull) < 0)
            return -1;
        *present = !isnull;
        *out = v;
        return 0;
    case OP_CONST:
        *present = !opt || pm_bit(c, pm, in->bit);
        *out = in->init_i;
        return 0;
    case OP_DEFAULT:
        if (pm_bit(c, pm, in->bit))
            goto read;
        *present = in->has_init;
        *out = in->init_i;
        return 0;
    case OP_COPY:
    case OP_INCR:
        s = &c->D[in->slot];
        if (pm_bit(c, pm, in->bit)) {
            if (rd_num(c, sign, in->lo, in->hi, opt, &v, &isnull) < 0)
                return -1;
            if (isnull)
                slot_empty(s);
            else
                slot_int(s, v);
            *present = !isnull;
            *out = v;
            return 0;
        }
        if (s->st == ST_UNDEF) {
            if (!in->has_init && !opt)
                return dfail(c, "D5", "mandatory field not in the stream, no previous and no "
                             "initial value");
            if (in->has_init)
                slot_int(s, in->init_i);
            else
                slot_empty(s);
            *present = in->has_init;
            *out = in->init_i;
            return 0;
        }
        if (s->st == ST_EMPTY) {
            if (!opt)
                return dfail(c, "D6", "mandatory field with empty previous value");
            *present = 0;
            return 0;
        }
        v = s->i;
        if (in->op == OP_INCR) {
            v = v < in->hi ? v + 1 : in->lo;
            slot_int(s, v);
        }
        *present = 1;
        *out = v;
        return 0;
    case OP_DELTA: {
        i128 d, base;
        if (rd_num(c, 1, in->wlo, in->whi, opt, &d, &isnull) < 0)
            return -1;
        if (isnull) {
            *present = 0;
            return 0;
        }
        s = &c->D[in->slot];
        if (s->st == ST_UNDEF)
            base = in->has_init ? in->init_i : 0;
        else if (s->st == ST_EMPTY)
            return dfail(c, "D6", "delta with an empty previous value");
        else
            base = s->i;
        v = base + d;
        if ((c->strict && (v < in->lo || v > in->hi)) || v > BIG || v < -BIG) {
            char a[48];
            return dfail(c, "R4", "delta result %s outside the integer type's range",
                         fmt_i128(v, a));
        }
        slot_int(s, v);
        *present = 1;
        *out = v;
        return 0;
    }
    }
    return dfail(c, NULL, "bad operator");
}

static int check_exponent(Dec *c, i128 e)
{
    if ((c->strict && (e < -63 || e > 63)) || e > BIG || e < -BIG) {
        char a[48];
        return dfail(c, "R1", "exponent %s outside [-63, 63]", fmt_i128(e, a));
    }
    return 0;
}

/* scaled number: exponent (nullable when optional) then mantissa */
static int rd_pair(Dec *c, int nullable, int *isnull, i128 *m, i128 *e)
{
    i128 ev, mv;
    if (rd_num(c, 1, INT32_MIN, INT32_MAX, nullable, &ev, isnull) < 0)
        return -1;
    if (*isnull)
        return 0;
    if (check_exponent(c, ev) < 0)
        return -1;
    if (rd_num(c, 1, INT64_MIN, INT64_MAX, 0, &mv, isnull) < 0)
        return -1;
    *m = mv;
    *e = ev;
    return 0;
}

static PyObject *dec_decimal(Dec *c, const Instr *in, DPm *pm)
{
    int opt = in->optional, isnull;
    i128 m = 0, e = 0;
    Slot *s;
    switch (in->op) {
    case OP_NONE:
    read:
        if (rd_pair(c, opt, &isnull, &m, &e) < 0)
            return NULL;
        if (isnull)
            Py_RETURN_NONE;
        return make_dec(c->vm, m, e);
    case OP_CONST:
        if (!opt || pm_bit(c, pm, in->bit)) {
            Py_INCREF(in->init_out);
            return in->init_out;
        }
        Py_RETURN_NONE;
    case OP_DEFAULT:
        if (pm_bit(c, pm, in->bit))
            goto read;
        if (in->has_init) {
            Py_INCREF(in->init_out);
            return in->init_out;
        }
        Py_RETURN_NONE;
    case OP_COPY:
        s = &c->D[in->slot];
        if (pm_bit(c, pm, in->bit)) {
            if (rd_pair(c, opt, &isnull, &m, &e) < 0)
                return NULL;
            if (isnull) {
                slot_empty(s);
                Py_RETURN_NONE;
            }
            slot_dec(s, m, e);
            return make_dec(c->vm, m, e);
        }
        if (s->st == ST_UNDEF) {
            if (!in->has_init && !opt) {
                dfail(c, "D5", "mandatory field not in the stream, no previous and no initial "
                      "value");
                return NULL;
            }
            if (in->has_init)
                slot_dec(s, in->init_m, in->init_e);
            else
                slot_empty(s);
        }
        if (s->st == ST_EMPTY) {
            if (!opt) {
                dfail(c, "D6", "mandatory field with empty previous value");
                return NULL;
            }
            Py_RETURN_NONE;
        }
        return make_dec(c->vm, s->m, s->e);
    case OP_DELTA: {
        i128 de, dm, M, E, bm, be;
        if (rd_num(c, 1, -((i128)1 << 33), (i128)1 << 33, opt, &de, &isnull) < 0)
            return NULL;
        if (isnull)
            Py_RETURN_NONE;
        if (rd_num(c, 1, -((i128)1 << 65), (i128)1 << 65, 0, &dm, &isnull) < 0)
            return NULL;
        s = &c->D[in->slot];
        if (s->st == ST_UNDEF) {
            bm = in->has_init ? in->init_m : 0;
            be = in->has_init ? in->init_e : 0;
        }
        else if (s->st == ST_EMPTY) {
            dfail(c, "D6", "delta with an empty previous value");
            return NULL;
        }
        else {
            bm = s->m;
            be = s->e;
        }
        M = bm + dm;
        E = be + de;
        if (check_exponent(c, E) < 0)
            return NULL;
        if ((c->strict && (M < INT64_MIN || M > INT64_MAX)) || M > BIG || M < -BIG) {
            char a[48];
            dfail(c, "R1", "mantissa %s outside int64", fmt_i128(M, a));
            return NULL;
        }
        slot_dec(s, M, E);
        return make_dec(c->vm, M, E);
    }
    }
    dfail(c, NULL, "bad operator");
    return NULL;
}

static PyObject *dec_deci(Dec *c, const Instr *in, DPm *pm)
{
    const Instr *ei = &in->parts[0], *mi = &in->parts[1];
    int present;
    i128 E, M;
    c->cur = ei;
    if (dec_int_op(c, ei, pm, &present, &E) < 0)
        return NULL;
    if (!present) {
        if (mi->bit >= 0)
            pm->shift++;        /* the mantissa's bit exists only with an exponent */
        Py_RETURN_NONE;
    }
    c->cur = in;
    if (check_exponent(c, E) < 0)
        return NULL;
    c->cur = mi;
    if (dec_int_op(c, mi, pm, &present, &M) < 0)
        return NULL;
    c->cur = in;
    return make_dec(c->vm, M, E);
}

/* strings */

static PyObject *make_ascii(const uint8_t *p, Py_ssize_t n)
{
    PyObject *s;
    if (n == 1) {
        s = chr_tab[p[0] & 0x7F];
        Py_INCREF(s);
        return s;
    }
    s = PyUnicode_New(n, 127);
    if (!s)
        return NULL;
    memcpy(PyUnicode_1BYTE_DATA(s), p, n);
    PyUnicode_1BYTE_DATA(s)[n - 1] &= 0x7F;
    return s;
}

static PyObject *ascii_body(Dec *c, Py_ssize_t start)
{
    Py_ssize_t j = start;
    while (j < c->n && c->p[j] < 0x80)
        j++;
    if (j >= c->n) {
        truncated(c);
        return NULL;
    }
    c->i = j + 1;
    return make_ascii(c->p + start, j - start + 1);
}

/* mandatory ASCII string: 80 is "", 00 80 is "\0" (spec 10.6.3) */
static PyObject *rd_ascii_m(Dec *c)
{
    Py_ssize_t i = c->i;
    uint8_t b;
    if (i >= c->n) {
        truncated(c);
        return NULL;
    }
    b = c->p[i];
    if (b > 0x80) {
        c->i = i + 1;
        Py_INCREF(chr_tab[b & 0x7F]);
        return chr_tab[b & 0x7F];
    }
    if (b == 0x80) {
        c->i = i + 1;
        Py_INCREF(empty_str);
        return empty_str;
    }
    if (b == 0) {
        if (i + 1 >= c->n) {
            truncated(c);
            return NULL;
        }
        if (c->p[i + 1] == 0x80) {
            c->i = i + 2;
            Py_INCREF(chr_tab[0]);
            return chr_tab[0];
        }
        if (c->strict) {
            dfail(c, "R9", "overlong ASCII string (zero preamble)");
            return NULL;
        }
        return ascii_body(c, i + 1);
    }
    return ascii_body(c, i);
}

/* nullable ASCII string: 80 is NULL, 00 80 is "", 00 00 80 is "\0" */
static PyObject *rd_ascii_n(Dec *c, int *isnull)
{
    Py_ssize_t i = c->i;
    uint8_t b;
    *isnull = 0;
    if (i >= c->n) {
        truncated(c);
        return NULL;
    }
    b = c->p[i];
    if (b > 0x80) {
        c->i = i + 1;
        Py_INCREF(chr_tab[b & 0x7F]);
        return chr_tab[b & 0x7F];
    }
    if (b == 0x80) {
        c->i = i + 1;
        *isnull = 1;
        return NULL;
    }
    if (b == 0) {
        uint8_t b2;
        if (i + 1 >= c->n) {
            truncated(c);
            return NULL;
        }
        b2 = c->p[i + 1];
        if (b2 == 0x80) {
            c->i = i + 2;
            Py_INCREF(empty_str);
            return empty_str;
        }
        if (b2 == 0) {
            if (i + 2 >= c->n) {
                truncated(c);
                return NULL;
            }
            if (c->p[i + 2] == 0x80) {
                c->i = i + 3;
                Py_INCREF(chr_tab[0]);
                return chr_tab[0];
            }
        }
        if (c->strict) {
            dfail(c, "R9", "overlong ASCII string (zero preamble)");
            return NULL;
        }
        c->i = i + 1;
        return rd_ascii_m(c);
    }
    return ascii_body(c, i);
}

/* byte vector (and unicode string) body: the bytes stay in the data (the length is
 * read with the checking reader, as primitives.read_bytes does) */
static int rd_span(Dec *c, int nullable, const char **p, Py_ssize_t *n, int *isnull)
{
    i128 v;
    *isnull = 0;
    if (rd_int_checked(c, 0, 0, nullable ? (i128)UINT32_MAX + 1 : (i128)UINT32_MAX, &v) < 0)
        return -1;
    if (nullable) {
        if (v == 0) {
            *isnull = 1;
            return 0;
        }
        v -= 1;
    }
    if (v > c->n - c->i)
        return dfail(c, NULL, "truncated message: a byte vector runs past the end of the data");
    *p = (const char *)c->p + c->i;
    *n = (Py_ssize_t)v;
    c->i += (Py_ssize_t)v;
    return 0;
}

static PyObject *utf8_value(Dec *c, const char *p, Py_ssize_t n)
{
    PyObject *s = PyUnicode_DecodeUTF8(p, n, "strict");
    if (!s && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        dfail(c, "R2", "invalid UTF-8 in a unicode string");
    }
    return s;
}

/* the value of a string field read off the wire: str (ascii, unicode) or bytes */
static PyObject *rd_str_value(Dec *c, const Instr *in, int nullable, int *isnull)
{
    const char *p = NULL;
    Py_ssize_t n = 0;
    *isnull = 0;
    if (in->kind == K_ASCII)
        return nullable ? rd_ascii_n(c, isnull) : rd_ascii_m(c);
    if (rd_span(c, nullable, &p, &n, isnull) < 0 || *isnull)
        return NULL;
    if (in->kind == K_BYTES)
        return PyBytes_FromStringAndSize(p, n);
    return utf8_value(c, p, n);
}

/* raw bytes of a tail or delta read off the wire; *owner keeps them alive */
static int rd_str_raw(Dec *c, const Instr *in, int nullable, const char **p, Py_ssize_t *n,
                      PyObject **owner, int *isnull)
{
    *owner = NULL;
    *isnull = 0;
    if (in->kind == K_ASCII) {
        PyObject *s = nullable ? rd_ascii_n(c, isnull) : rd_ascii_m(c);
        if (!s)
            return *isnull ? 0 : -1;
        *owner = s;
        *p = (const char *)PyUnicode_1BYTE_DATA(s);
        *n = PyUnicode_GET_LENGTH(s);
        return 0;
    }
    return rd_span(c, nullable, p, n, isnull);
}

/* a string value from two pieces of working bytes */
static PyObject *join_value(Dec *c, const Instr *in, const char *a, Py_ssize_t an,
                            const char *b, Py_ssize_t bn)
{
    PyObject *r;
    Py_ssize_t n = an + bn;
    if (in->kind == K_ASCII) {
        if (n == 0) {
            Py_INCREF(empty_str);
            return empty_str;
        }
        r = PyUnicode_New(n, 127);
        if (!r)
            return NULL;
        if (an)
            memcpy(PyUnicode_1BYTE_DATA(r), a, an);
        if (bn)
            memcpy(PyUnicode_1BYTE_DATA(r) + an, b, bn);
        return r;
    }
    if (in->kind == K_BYTES) {
        r = PyBytes_FromStringAndSize(NULL, n);
        if (!r)
            return NULL;
        if (an)
            memcpy(PyBytes_AS_STRING(r), a, an);
        if (bn)
            memcpy(PyBytes_AS_STRING(r) + an, b, bn);
        return r;
    }
    {
        char *tmp = PyMem_Malloc(n ? n : 1);
        if (!tmp)
            return PyErr_NoMemory();
        if (an)
            memcpy(tmp, a, an);
        if (bn)
            memcpy(tmp + an, b, bn);
        r = utf8_value(c, tmp, n);
        PyMem_Free(tmp);
        return r;
    }
}

static PyObject *slot_value(Dec *c, const Instr *in, Slot *s, const char *undef_code,
                            const char *undef_msg, const char *empty_code)
{
    if (s->st == ST_UNDEF) {
        if (!in->has_init && !in->optional) {
            dfail(c, undef_code, "%s", undef_msg);
            return NULL;
        }
        if (!in->has_init) {
            slot_empty(s);
            Py_RETURN_NONE;
        }
        slot_obj(s, in->init_obj);
    }
    if (s->st == ST_EMPTY) {
        if (!in->optional) {
            dfail(c, empty_code, "mandatory field with empty previous value");
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_INCREF(s->obj);
    return s->obj;
}

static PyObject *dec_string(Dec *c, const Instr *in, DPm *pm)
{
    int opt = in->optional, isnull;
    Slot *s;
    PyObject *r, *owner;
    const char *bp, *dp;
    Py_ssize_t bn, dn;
    switch (in->op) {
    case OP_NONE:
    read:
        r = rd_str_value(c, in, opt, &isnull);
        if (!r && isnull)
            Py_RETURN_NONE;
        return r;
    case OP_CONST:
        if (!opt || pm_bit(c, pm, in->bit)) {
            Py_INCREF(in->init_obj);
            return in->init_obj;
        }
        Py_RETURN_NONE;
    case OP_DEFAULT:
        if (pm_bit(c, pm, in->bit))
            goto read;
        if (in->has_init) {
            Py_INCREF(in->init_obj);
            return in->init_obj;
        }
        Py_RETURN_NONE;
    case OP_COPY:
        s = &c->D[in->slot];
        if (pm_bit(c, pm, in->bit)) {
            r = rd_str_value(c, in, opt, &isnull);
            if (!r) {
                if (!isnull)
                    return NULL;
                slot_empty(s);
                Py_RETURN_NONE;
            }
            slot_obj(s, r);
            return r;
        }
        return slot_value(c, in, s, "D5",
                          "mandatory field not in the stream, no previous and no initial value",
                          "D6");
    case OP_DELTA: {
        i128 sl;
        if (rd_num(c, 1, INT32_MIN, INT32_MAX, opt, &sl, &isnull) < 0)
            return NULL;
        if (isnull)
            Py_RETURN_NONE;
        if (rd_str_raw(c, in, 0, &dp, &dn, &owner, &isnull) < 0)
            return NULL;
        s = &c->D[in->slot];
        r = NULL;
        if (s->st == ST_UNDEF) {
            bp = in->has_init ? in->init_p : "";
            bn = in->has_init ? in->init_n : 0;
        }
        else if (s->st == ST_EMPTY) {
            dfail(c, "D6", "delta with an empty previous value");
            goto delta_done;
        }
        else if (obj_data(in->kind, s->obj, &bp, &bn) < 0)
            goto delta_done;
        if (sl >= 0) {
            if (sl > bn) {
                char a[48];
                dfail(c, "D7", "subtraction length %s exceeds the base length %zd",
                      fmt_i128(sl, a), bn);
                goto delta_done;
            }
            r = join_value(c, in, bp, bn - (Py_ssize_t)sl, dp, dn);
        }
        else {
            i128 cut = -sl - 1;
            if (cut > bn) {
                char a[48];
                dfail(c, "D7", "subtraction length %s exceeds the base length %zd",
                      fmt_i128(sl, a), bn);
                goto delta_done;
            }
            r = join_value(c, in, dp, dn, bp + (Py_ssize_t)cut, bn - (Py_ssize_t)cut);
        }
        if (r)
            slot_obj(s, r);
    delta_done:
        Py_XDECREF(owner);
        return r;
    }
    case OP_TAIL:
        s = &c->D[in->slot];
        if (pm_bit(c, pm, in->bit)) {
            if (rd_str_raw(c, in, opt, &dp, &dn, &owner, &isnull) < 0)
                return NULL;
            if (isnull) {
                slot_empty(s);
                Py_RETURN_NONE;
            }
            r = NULL;
            if (s->st == ST_VALUE) {
                if (obj_data(in->kind, s->obj, &bp, &bn) < 0)
                    goto tail_done;
            }
            else {
                bp = in->has_init ? in->init_p : "";
                bn = in->has_init ? in->init_n : 0;
            }
            if (dn >= bn)
                r = join_value(c, in, dp, dn, "", 0);
            else
                r = join_value(c, in, bp, bn - dn, dp, dn);
            if (r)
                slot_obj(s, r);
        tail_done:
            Py_XDECREF(owner);
            return r;
        }
        if (s->st == ST_UNDEF && !in->has_init && !opt) {
            dfail(c, "D6", "mandatory tail field not in the stream and no initial value");
            return NULL;
        }
        return slot_value(c, in, s, "D6", "", "D7");
    }
    dfail(c, NULL, "bad operator");
    return NULL;
}

static PyObject *dec_segment(Dec *c, const Segment *sg, DPm *pm);

static PyObject *dec_element(Dec *c, const Instr *in, const Segment *sg)
{
    DPm sub;
    if (!sg->nbits)
        return dec_segment(c, sg, NULL);
    c->cur = in;
    if (dpm_read(c, &sub) < 0)
        return NULL;
    if (c->strict && dpm_extra(c, &sub, sg->nbits)) {
        dfail(c, "R8", "presence map has bits beyond the %d used", (int)sg->nbits);
        return NULL;
    }
    return dec_segment(c, sg, &sub);
}

static PyObject *dec_sequence(Dec *c, const Instr *in, DPm *pm)
{
    const Segment *sg = in->seg;
    PyObject *list;
    Py_ssize_t k;
    int present;
    i128 n;
    c->cur = &in->parts[0];
    if (dec_int_op(c, &in->parts[0], pm, &present, &n) < 0)
        return NULL;
    c->cur = in;
    if (!present)
        Py_RETURN_NONE;
    if (sg->nbits || in->reads_bytes) {
        if (n > c->n - c->i) {
            char a[48];
            dfail(c, "D2", "sequence length %s exceeds the data", fmt_i128(n, a));
            return NULL;
        }
    }
    else if (n > 65536) {
        char a[48];
        dfail(c, "D2", "sequence length %s: too long", fmt_i128(n, a));
        return NULL;
    }
    list = PyList_New((Py_ssize_t)n);
    if (!list)
        return NULL;
    for (k = 0; k < (Py_ssize_t)n; k++) {
        PyObject *d = dec_element(c, in, sg);
        if (!d) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, k, d);
    }
    return list;
}

static PyObject *dec_field(Dec *c, const Instr *in, DPm *pm)
{
    c->cur = in;
    switch (in->kind) {
    case K_INT: {
        int present;
        i128 v;
        if (dec_int_op(c, in, pm, &present, &v) < 0)
            return NULL;
        if (!present)
            Py_RETURN_NONE;
        if (in->op == OP_CONST || (in->has_init && v == in->init_i)) {
            Py_INCREF(in->init_obj);
            return in->init_obj;
        }
        if (in->slot >= 0) {    /* the slot holds this value: share its int object */
            Slot *s = &c->D[in->slot];
            if (s->st == ST_VALUE && s->i == v) {
                if (!s->obj && !(s->obj = long_from_i128(v)))
                    return NULL;
                Py_INCREF(s->obj);
                return s->obj;
            }
        }
        return long_from_i128(v);
    }
    case K_DEC:
        return dec_decimal(c, in, pm);
    case K_DECI:
        return dec_deci(c, in, pm);
    case K_ASCII:
    case K_UNICODE:
    case K_BYTES:
        return dec_string(c, in, pm);
    case K_SEQ:
        return dec_sequence(c, in, pm);
    case K_GROUP:
        if (in->optional && !pm_bit(c, pm, in->bit))
            Py_RETURN_NONE;
        return dec_element(c, in, in->seg);
    }
    dfail(c, NULL, "bad instruction");
    return NULL;
}

/* The result dict: a clone of the segment's prototype (one copy of its key table), whose
 * values are then replaced in field order. */
static PyObject *dec_segment(Dec *c, const Segment *sg, DPm *pm)
{
    PyObject *d = PyDict_Copy(sg->proto);
    Py_ssize_t k;
    if (!d)
        return NULL;
    for (k = 0; k < sg->n; k++) {
        const Instr *in = &sg->ins[k];
        PyObject *v = dec_field(c, in, pm);
        if (!v || PyDict_SetItem(d, in->key, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static const Tmpl *find_tid(VM *vm, uint32_t tid)
{
    Py_ssize_t mask = vm->tid_cap - 1, k = (Py_ssize_t)((tid * 2654435761u) & mask);
    while (vm->tid_vals[k]) {
        if (vm->tid_keys[k] == tid)
            return &vm->tmpl[vm->tid_vals[k] - 1];
        k = (k + 1) & mask;
    }
    return NULL;
}

/* the message after its start: presence map, template id, body */
static PyObject *run_decode(VM *vm, Dec *c, int datagram, const Tmpl **tout)
{
    DPm pm;
    i128 tid;
    const Tmpl *t;
    if (dpm_read(c, &pm) < 0)
        return NULL;
    if (pm_bit(c, &pm, 0)) {
        if (rd_int_checked(c, 0, 0, UINT32_MAX, &tid) < 0)
            return NULL;
        if (!datagram)
            slot_int(&c->D[0], tid);
    }
    else if (datagram) {
        vm_fail(vm, "D5", "datagram message without a template identifier");
        return NULL;
    }
    else if (c->D[0].st != ST_VALUE) {
        vm_fail(vm, "D5", "message without a template identifier and no previous one");
        return NULL;
    }
    else
        tid = c->D[0].i;
    t = find_tid(vm, (uint32_t)tid);
    if (!t) {
        char a[48];
        vm_fail(vm, "D9", "unknown template id %s", fmt_i128(tid, a));
        return NULL;
    }
    c->t = t;
    *tout = t;
    if (c->strict && dpm_extra(c, &pm, t->nbits)) {
        vm_fail(vm, "R8", "presence map of %U has bits beyond the %d used", t->name,
                (int)t->nbits);
        return NULL;
    }
    return dec_segment(c, &t->seg, &pm);
}

static int get_data(PyObject *data, PyObject **owner)
{
    if (PyBytes_CheckExact(data)) {
        Py_INCREF(data);
        *owner = data;
        return 0;
    }
    *owner = PyBytes_FromObject(data);
    return *owner ? 0 : -1;
}

/* ------------------------------------------------------------------------ VM methods */

static const Tmpl *find_template(VM *vm, PyObject *key)
{
    PyObject *idx = PyDict_GetItemWithError(vm->by_key, key);
    if (!idx) {
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError))
                return NULL;
            PyErr_Clear();
        }
        vm_fail(vm, "D9", "unknown template %R", key);
        return NULL;
    }
    return &vm->tmpl[PyLong_AsSsize_t(idx)];
}

static PyObject *VM_encode(VM *vm, PyObject *const *args, Py_ssize_t nargs)
{
    const Tmpl *t;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "encode(template, values)");
        return NULL;
    }
    t = find_template(vm, args[0]);
    if (!t)
        return NULL;
    return run_encode(vm, t, args[1], 0, 0);
}

static PyObject *VM_encode_datagram(VM *vm, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    PyObject *seq = NULL, *owned = NULL, *res;
    const Tmpl *t;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, k;
    unsigned long long sn;
    if (nargs < 2 || nargs + nkw > 3) {
        PyErr_SetString(PyExc_TypeError, "encode_datagram(template, values, seqnum=None)");
        return NULL;
    }
    if (nargs == 3)
        seq = args[2];
    for (k = 0; k < nkw; k++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, k);
        if (PyUnicode_Compare(kw, s_seqnum) != 0 || seq) {
            PyErr_Format(PyExc_TypeError, "encode_datagram() got an unexpected keyword %R", kw);
            return NULL;
        }
        seq = args[nargs + k];
    }
    t = find_template(vm, args[0]);
    if (!t)
        return NULL;
    if (!seq || seq == Py_None) {
        int missing;
        owned = lookup(args[1], s_msgseqnum, 1, &missing);
        if (!owned && !missing)
            return NULL;
        if (!owned || owned == Py_None) {
            Py_XDECREF(owned);
            vm_fail(vm, NULL, "encode_datagram needs a seqnum or a MsgSeqNum field");
            return NULL;
        }
        seq = owned;
    }
    sn = PyLong_Check(seq) ? PyLong_AsUnsignedLongLong(seq) : (unsigned long long)-1;
    if (sn > 0xFFFFFFFFull) {
        PyErr_Clear();
        vm_fail(vm, NULL, "datagram sequence number %R does not fit 4 bytes", seq);
        Py_XDECREF(owned);
        return NULL;
    }
    Py_XDECREF(owned);
    res = run_encode(vm, t, args[1], 1, (uint32_t)sn);
    return res;
}

static PyObject *VM_decode(VM *vm, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *data = NULL, *off_obj = NULL, *owner, *values, *res = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, k, off = 0;
    const Tmpl *t = NULL;
    Dec c;
    if (nargs < 1 || nargs + nkw > 2) {
        PyErr_SetString(PyExc_TypeError, "decode(data, offset=0)");
        return NULL;
    }
    data = args[0];
    if (nargs == 2)
        off_obj = args[1];
    for (k = 0; k < nkw; k++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, k);
        if (PyUnicode_Compare(kw, s_offset) != 0 || off_obj) {
            PyErr_Format(PyExc_TypeError, "decode() got an unexpected keyword %R", kw);
            return NULL;
        }
        off_obj = args[nargs + k];
    }
    if (off_obj) {
        off = PyNumber_AsSsize_t(off_obj, PyExc_OverflowError);
        if (off == -1 && PyErr_Occurred())
            return NULL;
        if (off < 0) {
            vm_fail(vm, NULL, "negative offset %zd", off);
            return NULL;
        }
    }
    if (get_data(data, &owner) < 0)
        return NULL;
    if (vm->busy) {
        Py_DECREF(owner);
        PyErr_SetString(PyExc_RuntimeError, "FAST codec used re-entrantly");
        return NULL;
    }
    vm->busy = 1;
    c.vm = vm;
    c.t = NULL;
    c.D = vm->dict;
    c.p = (const uint8_t *)PyBytes_AS_STRING(owner);
    c.n = PyBytes_GET_SIZE(owner);
    c.i = off;
    c.cur = NULL;
    c.strict = vm->strict;
    values = run_decode(vm, &c, 0, &t);
    if (values) {
        PyObject *used = PyLong_FromSsize_t(c.i - off);
        if (used)
            res = PyTuple_Pack(3, t->tobj, values, used);
        Py_XDECREF(used);
        Py_DECREF(values);
    }
    vm->busy = 0;
    Py_DECREF(owner);
    return res;
}

static PyObject *VM_decode_datagram(VM *vm, PyObject *data)
{
    PyObject *owner, *values, *res = NULL;
    const Tmpl *t = NULL;
    Dec c;
    if (get_data(data, &owner) < 0)
        return NULL;
    if (vm->busy) {
        Py_DECREF(owner);
        PyErr_SetString(PyExc_RuntimeError, "FAST codec used re-entrantly");
        return NULL;
    }
    c.vm = vm;
    c.t = NULL;
    c.D = vm->fresh;
    c.p = (const uint8_t *)PyBytes_AS_STRING(owner);
    c.n = PyBytes_GET_SIZE(owner);
    c.i = 4;
    c.cur = NULL;
    c.strict = vm->strict;
    if (c.n < 5) {
        vm_fail(vm, NULL, "truncated datagram: %zd bytes", c.n);
        Py_DECREF(owner);
        return NULL;
    }
    vm->busy = 1;
    values = run_decode(vm, &c, 1, &t);
    if (t)
        clear_used(vm, t);
    if (values) {
        if (c.i != c.n)
            vm_fail(vm, NULL, "datagram has %zd bytes after its message", c.n - c.i);
        else {
            uint32_t sn = (uint32_t)c.p[0] | (uint32_t)c.p[1] << 8 | (uint32_t)c.p[2] << 16
                          | (uint32_t)c.p[3] << 24;
            PyObject *seq = PyLong_FromUnsignedLong(sn);
            if (seq)
                res = PyTuple_Pack(3, seq, t->tobj, values);
            Py_XDECREF(seq);
        }
        Py_DECREF(values);
    }
    vm->busy = 0;
    Py_DECREF(owner);
    return res;
}

static PyObject *VM_reset(VM *vm, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t k;
    if (vm->busy) {
        PyErr_SetString(PyExc_RuntimeError, "FAST codec used re-entrantly");
        return NULL;
    }
    for (k = 0; k < vm->nslots; k++)
        slot_clear(&vm->dict[k]);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ program loading */

static int bad(const char *what)
{
    PyErr_Format(PyExc_ValueError, "invalid FAST program: %s", what);
    return -1;
}

static int item_long(PyObject *t, Py_ssize_t k, long lo, long hi, long *out)
{
    PyObject *o = PyTuple_GET_ITEM(t, k);
    long v;
    if (!PyLong_Check(o))
        return bad("expected an int");
    v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < lo || v > hi)
        return bad("number out of range");
    *out = v;
    return 0;
}

static int intern_str(PyObject *o, PyObject **out)
{
    if (!PyUnicode_CheckExact(o))
        return bad("expected a str");
    Py_INCREF(o);
    PyUnicode_InternInPlace(&o);
    *out = o;
    return 0;
}

static void free_segment(Segment *sg);

static void free_instr(Instr *in)
{
    Py_CLEAR(in->key);
    Py_CLEAR(in->name);
    Py_CLEAR(in->init_obj);
    Py_CLEAR(in->init_out);
    Py_CLEAR(in->init_raw);
    if (in->parts) {
        free_instr(&in->parts[0]);
        if (in->kind == K_DECI)
            free_instr(&in->parts[1]);
        PyMem_Free(in->parts);
        in->parts = NULL;
    }
    if (in->seg) {
        free_segment(in->seg);
        PyMem_Free(in->seg);
        in->seg = NULL;
    }
}

static void free_segment(Segment *sg)
{
    Py_ssize_t k;
    Py_CLEAR(sg->proto);
    if (sg->ins) {
        for (k = 0; k < sg->n; k++)
            free_instr(&sg->ins[k]);
        PyMem_Free(sg->ins);
        sg->ins = NULL;
    }
    sg->n = 0;
}

static int load_segment(VM *vm, PyObject *o, Segment *sg, int depth);

static void itype_range(Instr *in)
{
    switch (in->itype) {
    case IT_U32:
        in->lo = 0;
        in->hi = UINT32_MAX;
        break;
    case IT_I32:
        in->lo = INT32_MIN;
        in->hi = INT32_MAX;
        break;
    case IT_U64:
        in->lo = 0;
        in->hi = (i128)UINT64_MAX;
        break;
    default:
        in->lo = INT64_MIN;
        in->hi = INT64_MAX;
        break;
    }
    if (in->itype == IT_U32 || in->itype == IT_I32) {
        in->wlo = -((i128)1 << 33);
        in->whi = (i128)1 << 33;
    }
    else {
        in->wlo = -((i128)1 << 65);
        in->whi = (i128)1 << 65;
    }
}

static const uint8_t kind_slot[K_COUNT] = {SK_INT, SK_DEC, 255, SK_ASCII, SK_UNICODE, SK_BYTES,
                                           255, 255};

static int load_init(VM *vm, Instr *in, PyObject *init)
{
    if (init == Py_None)
        return 0;
    in->has_init = 1;
    switch (in->kind) {
    case K_INT: {
        int r;
        if (!PyLong_CheckExact(init))
            return bad("integer initial value");
        r = long_to_i128(init, &in->init_i);
        if (r < 0)
            return -1;
        if (r > 0 || in->init_i < in->lo || in->init_i > in->hi)
            return bad("integer initial value out of range");
        break;
    }
    case K_DEC: {
        i128 m, e;
        if (!PyTuple_CheckExact(init) || PyTuple_GET_SIZE(init) != 2
            || !PyLong_CheckExact(PyTuple_GET_ITEM(init, 0))
            || !PyLong_CheckExact(PyTuple_GET_ITEM(init, 1)))
            return bad("decimal initial value");
        if (long_to_i128(PyTuple_GET_ITEM(init, 0), &m) != 0
            || long_to_i128(PyTuple_GET_ITEM(init, 1), &e) != 0 || m < INT64_MIN
            || m > INT64_MAX || e < -63 || e > 63) {
            PyErr_Clear();
            return bad("decimal initial value out of range");
        }
        in->init_m = (int64_t)m;
        in->init_e = (int32_t)e;
        in->init_out = make_dec(vm, in->init_m, in->init_e);
        if (!in->init_out)
            return -1;
        break;
    }
    case K_ASCII:
        if (!PyUnicode_CheckExact(init) || !PyUnicode_IS_ASCII(init))
            return bad("ASCII initial value");
        in->init_p = (const char *)PyUnicode_1BYTE_DATA(init);
        in->init_n = PyUnicode_GET_LENGTH(init);
        break;
    case K_UNICODE:
        if (!PyUnicode_CheckExact(init))
            return bad("unicode initial value");
        in->init_raw = PyUnicode_AsUTF8String(init);
        if (!in->init_raw)
            return -1;
        in->init_p = PyBytes_AS_STRING(in->init_raw);
        in->init_n = PyBytes_GET_SIZE(in->init_raw);
        break;
    case K_BYTES:
        if (!PyBytes_CheckExact(init))
            return bad("byteVector initial value");
        in->init_p = PyBytes_AS_STRING(init);
        in->init_n = PyBytes_GET_SIZE(init);
        break;
    default:
        return bad("initial value on a composite field");
    }
    Py_INCREF(init);
    in->init_obj = init;
    return 0;
}

static int load_instr(VM *vm, PyObject *o, Instr *in, int32_t seg_nbits, int depth, int part)
{
    long kind, op, itype, optional, bit, slot;
    PyObject *key, *name, *init, *extra;
    int needs_bit, needs_slot;
    if (!PyTuple_CheckExact(o) || PyTuple_GET_SIZE(o) != 10)
        return bad("an instruction is a 10-tuple");
    if (item_long(o, 0, 0, K_COUNT - 1, &kind) < 0 || item_long(o, 1, 0, OP_COUNT - 1, &op) < 0
        || item_long(o, 2, 0, IT_COUNT - 1, &itype) < 0 || item_long(o, 3, 0, 1, &optional) < 0
        || item_long(o, 4, -1, seg_nbits - 1, &bit) < 0
        || item_long(o, 5, -1, (long)vm->nslots - 1, &slot) < 0)
        return -1;
    in->kind = (uint8_t)kind;
    in->op = (uint8_t)op;
    in->itype = (uint8_t)itype;
    in->optional = (uint8_t)optional;
    in->bit = (int32_t)bit;
    in->slot = (int32_t)slot;
    itype_range(in);
    key = PyTuple_GET_ITEM(o, 6);
    name = PyTuple_GET_ITEM(o, 7);
    init = PyTuple_GET_ITEM(o, 8);
    extra = PyTuple_GET_ITEM(o, 9);
    if (intern_str(name, &in->name) < 0)
        return -1;
    if (part) {
        if (key != Py_None || kind != K_INT)
            return bad("a part is an integer without a key");
    }
    else if (intern_str(key, &in->key) < 0)
        return -1;
    switch (kind) {
    case K_INT:
        if (op == OP_TAIL)
            return bad("tail on an integer");
        break;
    case K_DEC:
        if (op == OP_INCR || op == OP_TAIL)
            return bad("operator on a decimal");
        break;
    case K_ASCII:
    case K_UNICODE:
    case K_BYTES:
        if (op == OP_INCR)
            return bad("increment on a string");
        break;
    default:
        if (op != OP_NONE)
            return bad("operator on a composite field");
    }
    needs_bit = op == OP_DEFAULT || op == OP_COPY || op == OP_INCR || op == OP_TAIL
                || (op == OP_CONST && optional) || (kind == K_GROUP && optional);
    if (needs_bit != (bit >= 0))
        return bad("presence-map bit does not match the operator");
    needs_slot = op == OP_COPY || op == OP_INCR || op == OP_DELTA || op == OP_TAIL;
    if (needs_slot != (slot >= 0))
        return bad("dictionary slot does not match the operator");
    if (slot >= 0 && vm->slot_kind[slot] != kind_slot[kind])
        return bad("dictionary slot of another value kind");
    if (load_init(vm, in, init) < 0)
        return -1;
    if ((op == OP_CONST || (op == OP_DEFAULT && !optional)) && !in->has_init)
        return bad("constant or mandatory default without a value");
    if (kind == K_DECI) {
        if (!PyTuple_CheckExact(extra) || PyTuple_GET_SIZE(extra) != 2)
            return bad("parts decimal needs (exponent, mantissa)");
        in->parts = PyMem_Calloc(2, sizeof(Instr));
        if (!in->parts) {
            PyErr_NoMemory();
            return -1;
        }
        if (load_instr(vm, PyTuple_GET_ITEM(extra, 0), &in->parts[0], seg_nbits, depth, 1) < 0
            || load_instr(vm, PyTuple_GET_ITEM(extra, 1), &in->parts[1], seg_nbits, depth, 1) < 0)
            return -1;
        if (in->parts[0].itype != IT_I32 || in->parts[1].itype != IT_I64
            || in->parts[0].optional != in->optional || in->parts[1].optional)
            return bad("decimal parts");
        if (in->parts[0].op == OP_CONST && (in->parts[0].init_i < -63 || in->parts[0].init_i > 63))
            return bad("constant exponent outside [-63, 63]");
    }
    else if (kind == K_SEQ) {
        long rb;
        if (!PyTuple_CheckExact(extra) || PyTuple_GET_SIZE(extra) != 3)
            return bad("sequence needs (length, segment, reads_bytes)");
        if (depth >= MAX_DEPTH)
            return bad("groups and sequences nested too deeply");
        in->parts = PyMem_Calloc(1, sizeof(Instr));
        in->seg = PyMem_Calloc(1, sizeof(Segment));
        if (!in->parts || !in->seg) {
            PyErr_NoMemory();
            return -1;
        }
        if (load_instr(vm, PyTuple_GET_ITEM(extra, 0), &in->parts[0], seg_nbits, depth, 1) < 0
            || load_segment(vm, PyTuple_GET_ITEM(extra, 1), in->seg, depth + 1) < 0
            || item_long(extra, 2, 0, 1, &rb) < 0)
            return -1;
        in->reads_bytes = (int)rb;
        if (in->parts[0].itype != IT_U32 || in->parts[0].optional != in->optional)
            return bad("sequence length");
    }
    else if (kind == K_GROUP) {
        if (depth >= MAX_DEPTH)
            return bad("groups and sequences nested too deeply");
        in->seg = PyMem_Calloc(1, sizeof(Segment));
        if (!in->seg) {
            PyErr_NoMemory();
            return -1;
        }
        if (load_segment(vm, extra, in->seg, depth + 1) < 0)
            return -1;
    }
    else if (extra != Py_None)
        return bad("unexpected extra");
    return 0;
}

static int load_segment(VM *vm, PyObject *o, Segment *sg, int depth)
{
    long nbits;
    PyObject *ins;
    Py_ssize_t k, n;
    if (!PyTuple_CheckExact(o) || PyTuple_GET_SIZE(o) != 2)
        return bad("a segment is (nbits, instructions)");
    if (item_long(o, 0, 0, MAX_SEGMENT_BITS, &nbits) < 0)
        return -1;
    ins = PyTuple_GET_ITEM(o, 1);
    if (!PyTuple_CheckExact(ins))
        return bad("instructions must be a tuple");
    n = PyTuple_GET_SIZE(ins);
    sg->nbits = (int32_t)nbits;
    sg->ins = PyMem_Calloc(n ? n : 1, sizeof(Instr));
    if (!sg->ins) {
        PyErr_NoMemory();
        return -1;
    }
    sg->n = n;
    sg->proto = PyDict_New();
    if (!sg->proto)
        return -1;
    for (k = 0; k < n; k++) {
        if (load_instr(vm, PyTuple_GET_ITEM(ins, k), &sg->ins[k], sg->nbits, depth, 0) < 0)
            return -1;
        if (PyDict_SetItem(sg->proto, sg->ins[k].key, Py_None) < 0)
            return -1;
    }
    return 0;
}

static int load_template(VM *vm, PyObject *o, Tmpl *t, Py_ssize_t index)
{
    long tid, nbits;
    PyObject *used, *idx;
    Py_ssize_t k;
    uint8_t tmp[8];
    int n = 0;
    if (!PyTuple_CheckExact(o) || PyTuple_GET_SIZE(o) != 6)
        return bad("a template is (id, name, template, nbits, segment, used_slots)");
    if (PyLong_Check(PyTuple_GET_ITEM(o, 0))) {
        unsigned long long v = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(o, 0));
        if (PyErr_Occurred() || v > 0xFFFFFFFFull) {
            PyErr_Clear();
            return bad("template id");
        }
        tid = (long)v;
    }
    else
        return bad("template id");
    t->tid = (uint32_t)tid;
    if (intern_str(PyTuple_GET_ITEM(o, 1), &t->name) < 0)
        return -1;
    t->tobj = PyTuple_GET_ITEM(o, 2);
    Py_INCREF(t->tobj);
    if (item_long(o, 3, 1, MAX_SEGMENT_BITS, &nbits) < 0)
        return -1;
    t->nbits = (int32_t)nbits;
    if (load_segment(vm, PyTuple_GET_ITEM(o, 4), &t->seg, 0) < 0)
        return -1;
    if (t->seg.nbits != t->nbits)
        return bad("template bit count");
    used = PyTuple_GET_ITEM(o, 5);
    if (!PyTuple_CheckExact(used))
        return bad("used slots");
    t->nused = PyTuple_GET_SIZE(used);
    t->used = PyMem_Calloc(t->nused ? t->nused : 1, sizeof(int32_t));
    if (!t->used) {
        PyErr_NoMemory();
        return -1;
    }
    for (k = 0; k < t->nused; k++) {
        long s;
        if (item_long(used, k, 1, (long)vm->nslots - 1, &s) < 0)
            return -1;
        t->used[k] = (int32_t)s;
    }
    /* template id: non-nullable uInt32 */
    {
        uint32_t v = t->tid;
        do {
            tmp[n++] = v & 0x7F;
            v >>= 7;
        } while (v);
        t->tid_len = n;
        for (k = 0; k < n; k++)
            t->tid_enc[k] = tmp[n - 1 - k];
        t->tid_enc[n - 1] |= 0x80;
    }
    idx = PyLong_FromSsize_t(index);
    if (!idx)
        return -1;
    {
        PyObject *idk = PyTuple_GET_ITEM(o, 0);
        if (PyDict_GetItemWithError(vm->by_key, idk) || PyDict_GetItemWithError(vm->by_key, t->name)) {
            Py_DECREF(idx);
            return bad("duplicate template id or name");
        }
        if (PyErr_Occurred() || PyDict_SetItem(vm->by_key, idk, idx) < 0
            || PyDict_SetItem(vm->by_key, t->name, idx) < 0) {
            Py_DECREF(idx);
            return -1;
        }
    }
    Py_DECREF(idx);
    return 0;
}

static void VM_dealloc(VM *vm)
{
    Py_ssize_t k;
    if (vm->tmpl) {
        for (k = 0; k < vm->ntmpl; k++) {
            Tmpl *t = &vm->tmpl[k];
            Py_CLEAR(t->name);
            Py_CLEAR(t->tobj);
            free_segment(&t->seg);
            PyMem_Free(t->used);
        }
        PyMem_Free(vm->tmpl);
    }
    for (k = 0; vm->dict && k < vm->nslots; k++)
        slot_clear(&vm->dict[k]);
    for (k = 0; vm->fresh && k < vm->nslots; k++)
        slot_clear(&vm->fresh[k]);
    PyMem_Free(vm->dict);
    PyMem_Free(vm->fresh);
    PyMem_Free(vm->slot_kind);
    PyMem_Free(vm->tid_keys);
    PyMem_Free(vm->tid_vals);
    if (vm->dcache) {
        for (k = 0; k < DCACHE_SIZE; k++)
            Py_XDECREF(vm->dcache[k].obj);
        PyMem_Free(vm->dcache);
    }
    if (vm->ecache) {
        for (k = 0; k < ECACHE_SIZE; k++)
            Py_XDECREF(vm->ecache[k].obj);
        PyMem_Free(vm->ecache);
    }
    Py_XDECREF(vm->by_key);
    Py_XDECREF(vm->fast_error);
    Py_XDECREF(vm->decimal_type);
    Py_TYPE(vm)->tp_free((PyObject *)vm);
}

static PyObject *VM_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"program", "fast_error", "decimal", "strict", "pairs",
                             "front_deltas", NULL};
    PyObject *program, *fast_error, *decimal, *tmpls, *kinds;
    int strict = 1, pairs = 0, front = 0;
    long version;
    Py_ssize_t k;
    VM *vm;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|ppp:VM", kwlist, &program, &fast_error,
                                     &decimal, &strict, &pairs, &front))
        return NULL;
    if (!PyType_Check(fast_error) || !PyType_IsSubtype((PyTypeObject *)fast_error,
                                                        (PyTypeObject *)PyExc_Exception)) {
        PyErr_SetString(PyExc_TypeError, "fast_error must be an exception class");
        return NULL;
    }
    if (!PyType_Check(decimal)) {
        PyErr_SetString(PyExc_TypeError, "decimal must be the Decimal class");
        return NULL;
    }
    vm = (VM *)type->tp_alloc(type, 0);
    if (!vm)
        return NULL;
    vm->strict = strict;
    vm->pairs = pairs;
    vm->front = front;
    Py_INCREF(fast_error);
    vm->fast_error = fast_error;
    Py_INCREF(decimal);
    vm->decimal_type = decimal;
    vm->by_key = PyDict_New();
    if (!vm->by_key)
        goto fail;
    if (!PyTuple_CheckExact(program) || PyTuple_GET_SIZE(program) != 3) {
        bad("a program is (version, templates, slot_kinds)");
        goto fail;
    }
    if (item_long(program, 0, 0, 1000, &version) < 0)
        goto fail;
    if (version != PROGRAM_VERSION) {
        bad("program version mismatch");
        goto fail;
    }
    tmpls = PyTuple_GET_ITEM(program, 1);
    kinds = PyTuple_GET_ITEM(program, 2);
    if (!PyTuple_CheckExact(tmpls) || !PyBytes_CheckExact(kinds) || PyBytes_GET_SIZE(kinds) < 1) {
        bad("templates tuple and slot kinds");
        goto fail;
    }
    vm->nslots = PyBytes_GET_SIZE(kinds);
    vm->slot_kind = PyMem_Malloc(vm->nslots);
    vm->dict = PyMem_Calloc(vm->nslots, sizeof(Slot));
    vm->fresh = PyMem_Calloc(vm->nslots, sizeof(Slot));
    if (!vm->slot_kind || !vm->dict || !vm->fresh) {
        PyErr_NoMemory();
        goto fail;
    }
    memcpy(vm->slot_kind, PyBytes_AS_STRING(kinds), vm->nslots);
    for (k = 0; k < vm->nslots; k++)
        if (vm->slot_kind[k] >= SK_COUNT || (vm->slot_kind[k] == SK_TID) != (k == 0)) {
            bad("slot kinds");
            goto fail;
        }
    vm->ntmpl = PyTuple_GET_SIZE(tmpls);
    vm->tmpl = PyMem_Calloc(vm->ntmpl ? vm->ntmpl : 1, sizeof(Tmpl));
    if (!vm->tmpl) {
        PyErr_NoMemory();
        goto fail;
    }
    for (k = 0; k < vm->ntmpl; k++)
        if (load_template(vm, PyTuple_GET_ITEM(tmpls, k), &vm->tmpl[k], k) < 0)
            goto fail;
    vm->tid_cap = 8;
    while (vm->tid_cap < 2 * vm->ntmpl)
        vm->tid_cap *= 2;
    vm->tid_keys = PyMem_Calloc(vm->tid_cap, sizeof(uint32_t));
    vm->tid_vals = PyMem_Calloc(vm->tid_cap, sizeof(int32_t));
    if (!vm->tid_keys || !vm->tid_vals) {
        PyErr_NoMemory();
        goto fail;
    }
    for (k = 0; k < vm->ntmpl; k++) {
        uint32_t tid = vm->tmpl[k].tid;
        Py_ssize_t mask = vm->tid_cap - 1, j = (Py_ssize_t)((tid * 2654435761u) & mask);
        while (vm->tid_vals[j])
            j = (j + 1) & mask;
        vm->tid_keys[j] = tid;
        vm->tid_vals[j] = (int32_t)(k + 1);
    }
    return (PyObject *)vm;
fail:
    Py_DECREF(vm);
    return NULL;
}

static PyMethodDef VM_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))VM_encode, METH_FASTCALL,
     "encode(template, values) -> bytes, with the persistent dictionaries"},
    {"encode_datagram", (PyCFunction)(void (*)(void))VM_encode_datagram,
     METH_FASTCALL | METH_KEYWORDS,
     "encode_datagram(template, values, seqnum=None) -> bytes: 4-byte little-endian "
     "MsgSeqNum, then the message encoded with fresh dictionaries"},
    {"decode", (PyCFunction)(void (*)(void))VM_decode, METH_FASTCALL | METH_KEYWORDS,
     "decode(data, offset=0) -> (template, values, consumed), with the persistent "
     "dictionaries"},
    {"decode_datagram", (PyCFunction)VM_decode_datagram, METH_O,
     "decode_datagram(data) -> (seqnum, template, values), with fresh dictionaries"},
    {"reset", (PyCFunction)VM_reset, METH_NOARGS,
     "reset(): every persistent dictionary entry back to undefined"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject VM_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "marketdata.fast._fastvm.VM",
    .tp_basicsize = sizeof(VM),
    .tp_dealloc = (destructor)VM_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "VM(program, fast_error, decimal, strict=True, pairs=False, front_deltas=False)\n"
              "\nA FAST encoder/decoder interpreting a program compiled by "
              "marketdata.fast.vm.",
    .tp_methods = VM_methods,
    .tp_new = VM_new,
};

static struct PyModuleDef fastvm_module = {
    PyModuleDef_HEAD_INIT, "_fastvm",
    "FAST 1.1 codec interpreter (see marketdata/fast/vm.py).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastvm(void)
{
    PyObject *m;
    int k;
    if (PyType_Ready(&VM_Type) < 0)
        return NULL;
    for (k = 0; k < 128; k++) {
        Py_UCS1 ch = (Py_UCS1)k;
        chr_tab[k] = PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, &ch, 1);
        if (!chr_tab[k])
            return NULL;
    }
    empty_str = PyUnicode_New(0, 0);
    s_msgseqnum = PyUnicode_InternFromString("MsgSeqNum");
    s_offset = PyUnicode_InternFromString("offset");
    s_seqnum = PyUnicode_InternFromString("seqnum");
    s_get = PyUnicode_InternFromString("get");
    absent = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (!s_get || !absent || !empty_str || !s_msgseqnum || !s_offset || !s_seqnum)
        return NULL;
    m = PyModule_Create(&fastvm_module);
    if (!m)
        return NULL;
    Py_INCREF(&VM_Type);
    if (PyModule_AddObject(m, "VM", (PyObject *)&VM_Type) < 0
        || PyModule_AddIntConstant(m, "PROGRAM_VERSION", PROGRAM_VERSION) < 0) {
        Py_DECREF(&VM_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
