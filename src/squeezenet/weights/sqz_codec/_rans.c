/* The .sqz codec's hot loops, compiled (an optional accelerator; see compiled.py): the rANS
   bundle's decode and encode walks, and the exp-Golomb reader of packed codebooks.

   The same walks as the NumPy coder (bundle._decode, rans.encode_lanes, values.exp_golomb_decode),
   lane by lane in the same order, so they read and write the same bytes. Every index is checked: a corrupted
   bundle makes a function return -1 (the caller raises SqzError), never read outside an array.
   Arrays are C-contiguous int64 unless named otherwise. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#define RANS_L (1LL << 16)

typedef struct {
    Py_buffer view;
    int64_t *p;
    Py_ssize_t n;
} Array;

static int take(PyObject *obj, Array *a, int writable) {
    if (PyObject_GetBuffer(obj, &a->view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    if (a->view.itemsize != 8 || a->view.len % 8) {
        PyBuffer_Release(&a->view);
        PyErr_SetString(PyExc_TypeError, "expected int64 arrays");
        return -1;
    }
    a->p = (int64_t *)a->view.buf;
    a->n = a->view.len / 8;
    return 0;
}

static void release(Array *arrays, int count) {
    for (int i = 0; i < count; i++) PyBuffer_Release(&arrays[i].view);
}

/* Take the arrays of args[0..count) (the first `writable` of them writable; one integer, the
   probability bits, follows them); -> 0, or -1 with every buffer taken so far released. */
static int take_all(PyObject *args, Array *arrays, int count, int writable) {
    if (PyTuple_GET_SIZE(args) != count + 1) {
        PyErr_SetString(PyExc_TypeError, "wrong number of arguments");
        return -1;
    }
    for (int i = 0; i < count; i++) {
        if (take(PyTuple_GET_ITEM(args, i), &arrays[i], i < writable) < 0) {
            release(arrays, i);
            return -1;
        }
    }
    return 0;
}

/* Each stream's slot -> symbol table (local symbol indices), streams one after another, each
   2^bits slots; -1 (NULL) where a stream's frequencies do not fill its slots exactly. */
static uint16_t *slot_tables(const Array *freq, const Array *offsets, long bits) {
    Py_ssize_t streams = offsets->n - 1;
    int64_t scale = 1LL << bits;
    uint16_t *lut = malloc(sizeof(uint16_t) * (size_t)(streams > 0 ? streams : 1) * (size_t)scale);
    if (!lut) return NULL;
    for (Py_ssize_t s = 0; s < streams; s++) {
        int64_t first = offsets->p[s], last = offsets->p[s + 1], slot = 0;
        if (first < 0 || last > freq->n || first > last || last - first > 65536) { free(lut); return NULL; }
        for (int64_t i = first; i < last; i++) {
            int64_t f = freq->p[i];
            if (f < 0 || slot + f > scale) { free(lut); return NULL; }
            for (int64_t k = 0; k < f; k++) lut[s * scale + slot + k] = (uint16_t)(i - first);
            slot += f;
        }
        if (slot != scale) { free(lut); return NULL; }
    }
    return lut;
}

/* decode_steps(x, out, ptr, words, bounds, group, count, pos, stride, stream, freq, cum, offsets,
   prob_bits) -> 0, or -1 on an index outside its array. Every lane of a bundle step by step in
   plan order; x (the states) updated in place, each symbol's index into freq and cum (its
   stream's offset plus the symbol) written to out, ptr set to each group's next word. A lane that
   renormalises past the words reads 0, as the NumPy decoder's padding does, so a corrupted
   bundle fails the caller's final checks the same way. */
static PyObject *decode_steps(PyObject *self, PyObject *args) {
    (void)self;
    enum { X, OUT, PTR, WORDS, BOUNDS, GROUP, COUNT, POS, STRIDE, STREAM, FREQ, CUM, OFFSETS, N };
    Array a[N];
    if (take_all(args, a, N, 3) < 0) return NULL;
    long bits = PyLong_AsLong(PyTuple_GET_ITEM(args, N));
    int64_t status = -1;
    uint16_t *lut = NULL;
    Py_ssize_t lanes = a[COUNT].n, groups = a[PTR].n, streams = a[OFFSETS].n - 1;
    int64_t mask = (1LL << bits) - 1, longest = 0;
    if (PyErr_Occurred() || bits < 1 || bits > 16 || a[X].n != lanes || a[GROUP].n != lanes || a[POS].n != lanes ||
        a[STRIDE].n != lanes || a[STREAM].n != lanes || a[BOUNDS].n != groups + 1 || a[CUM].n != a[FREQ].n)
        goto done;
    /* every index the walk takes is checked once here; a group's lanes are adjacent, by count */
    for (Py_ssize_t l = 0; l < lanes; l++) {
        int64_t count = a[COUNT].p[l], first = a[POS].p[l], last = first + (count - 1) * a[STRIDE].p[l];
        int64_t g = a[GROUP].p[l], previous = l ? a[GROUP].p[l - 1] : 0;
        if (g < previous || g >= groups || a[STREAM].p[l] < 0 || a[STREAM].p[l] >= streams ||
            (l && g == previous && count > a[COUNT].p[l - 1]) ||
            (count > 0 && (first < 0 || first >= a[OUT].n || last < 0 || last >= a[OUT].n || a[STRIDE].p[l] < 0)))
            goto done;
        if (count > longest) longest = count;
    }
    if (a[WORDS].n < 1 || !(lut = slot_tables(&a[FREQ], &a[OFFSETS], bits))) goto done;
    {
        int64_t *restrict x = a[X].p, *restrict out = a[OUT].p, *restrict ptr = a[PTR].p;
        const int64_t *restrict words = a[WORDS].p, *restrict group = a[GROUP].p, *restrict count = a[COUNT].p;
        const int64_t *restrict pos = a[POS].p, *restrict stride = a[STRIDE].p, *restrict stream = a[STREAM].p;
        const int64_t *restrict freq = a[FREQ].p, *restrict cum = a[CUM].p, *restrict offsets = a[OFFSETS].p;
        const uint64_t nwords = (uint64_t)a[WORDS].n - 1; /* words[nwords]: the 0 read past the end */
        for (Py_ssize_t g = 0; g < groups; g++) ptr[g] = a[BOUNDS].p[g];
        for (int64_t t = 0; t < longest; t++) {
            for (Py_ssize_t l = 0; l < lanes;) {
                int64_t g = group[l], next = ptr[g];
                for (; l < lanes && group[l] == g; l++) {
                    if (count[l] <= t) continue;
                    int64_t state = x[l], slot = state & mask, s = stream[l];
                    int64_t i = offsets[s] + lut[(s << bits) + slot];
                    state = freq[i] * (state >> bits) + slot - cum[i];
                    int64_t take = state < RANS_L, word = words[(uint64_t)next < nwords ? (uint64_t)next : nwords];
                    x[l] = take ? (state << 16) | word : state;
                    next += take;
                    out[pos[l] + t * stride[l]] = i;
                }
                ptr[g] = next;
            }
        }
    }
    status = 0;
done:
    free(lut);
    release(a, N);
    if (PyErr_Occurred()) return NULL;
    return PyLong_FromLongLong(status);
}

/* encode_steps(x, words, group_words, symbols, start, stride, count, table, alphabet, group, freq,
   cum, prob_bits) -> the number of words; -1 for a symbol outside its lane's alphabet, -2 for one
   of zero frequency, -3 for a lane plan outside the symbols. Lanes ordered by count (descending),
   each coded from its last step to its first: lane l's symbols are symbols[start + t * stride]
   (t < count), its slot ranges freq/cum[table + symbol]. x gets the final states; words each
   group's words one group after another, each in the decoder's order (step, then lane), and
   group_words how many each group has. */
static PyObject *encode_steps(PyObject *self, PyObject *args) {
    (void)self;
    enum { X, WORDS, GROUP_WORDS, SYMBOLS, START, STRIDE, COUNT, TABLE, ALPHABET, GROUP, FREQ, CUM, N };
    Array a[N];
    if (take_all(args, a, N, 3) < 0) return NULL;
    long bits = PyLong_AsLong(PyTuple_GET_ITEM(args, N));
    Py_ssize_t lanes = a[COUNT].n, symbols = a[SYMBOLS].n, groups = a[GROUP_WORDS].n;
    int64_t longest = lanes ? a[COUNT].p[0] : 0, n = -3;
    int64_t *step_start = NULL, *emitted = NULL, *owners = NULL, *next = NULL;
    if (PyErr_Occurred() || bits < 1 || bits > 16 || a[X].n != lanes || a[START].n != lanes ||
        a[STRIDE].n != lanes || a[TABLE].n != lanes || a[ALPHABET].n != lanes || a[GROUP].n != lanes ||
        a[CUM].n != a[FREQ].n || a[WORDS].n <= symbols)
        goto done;
    for (Py_ssize_t l = 0; l < lanes; l++) {
        int64_t last = a[START].p[l] + (a[COUNT].p[l] - 1) * a[STRIDE].p[l];
        if (a[COUNT].p[l] > longest || a[START].p[l] < 0 || a[STRIDE].p[l] < 1 || last >= symbols ||
            a[GROUP].p[l] < 0 || a[GROUP].p[l] >= groups || a[TABLE].p[l] < 0 ||
            a[TABLE].p[l] + a[ALPHABET].p[l] > a[FREQ].n)
            goto done;
    }
    step_start = malloc(sizeof(int64_t) * (size_t)(longest + 1));
    emitted = malloc(sizeof(int64_t) * (size_t)(symbols + 1));
    owners = malloc(sizeof(int64_t) * (size_t)(symbols + 1));
    next = calloc((size_t)groups + 1, sizeof(int64_t));
    if (!step_start || !emitted || !owners || !next) {
        PyErr_NoMemory();
        goto done;
    }
    n = 0;
    for (Py_ssize_t l = 0; l < lanes; l++) a[X].p[l] = RANS_L;
    for (int64_t t = longest - 1; t >= 0; t--) {
        step_start[t] = n;
        for (Py_ssize_t l = 0; l < lanes && a[COUNT].p[l] > t; l++) {
            int64_t sym = a[SYMBOLS].p[a[START].p[l] + t * a[STRIDE].p[l]];
            if (sym < 0 || sym >= a[ALPHABET].p[l]) { n = -1; goto done; }
            int64_t k = a[TABLE].p[l] + sym;
            uint32_t f = (uint32_t)a[FREQ].p[k], c = (uint32_t)a[CUM].p[k], state = (uint32_t)a[X].p[l];
            if (f == 0) { n = -2; goto done; }
            if ((uint64_t)state >= (uint64_t)f << (32 - bits)) {
                emitted[n] = state & 0xFFFF;
                owners[n++] = l;
                state >>= 16;
            }
            uint32_t q = state / f;  /* 32-bit: a state is below 2^32, a frequency below 2^16 */
            a[X].p[l] = ((int64_t)q << bits) + (state - q * f) + c;
        }
    }
    /* each group's words first step first (they were emitted last step first), groups in order */
    for (int64_t j = 0; j < n; j++) a[GROUP_WORDS].p[a[GROUP].p[owners[j]]]++;
    for (Py_ssize_t g = 0; g < groups; g++) next[g + 1] = next[g] + a[GROUP_WORDS].p[g];
    for (int64_t t = 0; t < longest; t++) {
        int64_t end = t == 0 ? n : step_start[t - 1];
        for (int64_t j = step_start[t]; j < end; j++) a[WORDS].p[next[a[GROUP].p[owners[j]]]++] = emitted[j];
    }
done:
    free(step_start);
    free(emitted);
    free(owners);
    free(next);
    release(a, N);
    if (PyErr_Occurred()) return NULL;
    return PyLong_FromLongLong(n);
}

static int bit_at(const uint8_t *data, int64_t i) { return (data[i >> 3] >> (7 - (i & 7))) & 1; }

/* exp_golomb_decode(out, payload, k, limit) -> 0, or -1 data ending early, -2 a run of more than
   40 zeros, -3 a value not below limit, -4 bits after the last code (values.exp_golomb_decode's
   checks, in its order): len(out) order-k exp-Golomb codes, packed MSB first. */
static PyObject *exp_golomb_decode(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *out_obj;
    Py_buffer payload;
    int k;
    unsigned long long limit;
    if (!PyArg_ParseTuple(args, "Oy*iK", &out_obj, &payload, &k, &limit)) return NULL;
    Array out;
    if (take(out_obj, &out, 1) < 0) {
        PyBuffer_Release(&payload);
        return NULL;
    }
    const uint8_t *data = payload.buf;
    int64_t size = 8 * (int64_t)payload.len, p = 0, status = 0;
    for (Py_ssize_t i = 0; i < out.n && status == 0; i++) {
        int64_t one = p;
        while (one < size && !bit_at(data, one)) one++;
        int64_t n = one - p, end = one + n + 1 + k;
        if (one == size) { status = -1; break; }
        if (n > 40) { status = -2; break; }
        if (end > size) { status = -1; break; }
        uint64_t x = 0, low = 0;
        for (int64_t b = one; b <= one + n; b++) x = (x << 1) | (uint64_t)bit_at(data, b);
        for (int64_t b = one + n + 1; b < end; b++) low = (low << 1) | (uint64_t)bit_at(data, b);
        if (k >= 64 || x - 1 > (UINT64_MAX >> k) || (((x - 1) << k) | low) >= limit) { status = -3; break; }
        out.p[i] = (int64_t)(((x - 1) << k) | low);
        p = end;
    }
    if (status == 0) {
        if (size - p >= 8) status = -4;
        for (int64_t b = p; b < size && status == 0; b++)
            if (bit_at(data, b)) status = -4;
    }
    PyBuffer_Release(&out.view);
    PyBuffer_Release(&payload);
    return PyLong_FromLongLong(status);
}

static PyMethodDef methods[] = {
    {"decode_steps", decode_steps, METH_VARARGS, "Decode every lane of a rANS bundle (see _rans.c)."},
    {"encode_steps", encode_steps, METH_VARARGS, "Encode every lane of a rANS bundle (see _rans.c)."},
    {"exp_golomb_decode", exp_golomb_decode, METH_VARARGS, "Decode exp-Golomb codes (see _rans.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rans", "The .sqz rANS loops, compiled.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rans(void) { return PyModule_Create(&module); }
