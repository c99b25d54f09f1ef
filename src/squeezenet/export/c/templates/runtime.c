/* ---- runtime: the integer kernels (the same for every exported model) ----------------------
 *
 * Activations are uint8 planes (C x H x W; conv1's output and the squeeze outputs are uint16
 * where the build keeps them wider: SQN_STEM_MAX, SQN_SQUEEZE_MAX > 255), weights int8 (or, in a compressed build, the
 * codebook's own values, up to 15 bits), accumulators int32. A convolution
 * runs one output channel at a time: the channel's non-zero weights become a list of
 * (input offset, weight) entries, and each entry adds weight * input over the whole output
 * plane (a contiguous run, so compilers vectorise it). A 3x3 convolution reads a squeeze
 * output stored with a one-pixel zero border, so that every tap is a plain offset; its
 * accumulator rows have the padded pitch and the two extra columns are never read.
 * docs/c-export.md in the squeezenet project states the arithmetic. */

/* Accumulator runs are rounded up to whole blocks of 32, so that vectorised loops have no scalar
 * tail: the extra accumulators hold garbage that is never read, and reading up to 31 inputs past
 * a plane stays inside the arena (it ends with slack for that). */
#define SQN_BLOCK 32
#define SQN_ROUND(n) (((n) + SQN_BLOCK - 1) & ~(SQN_BLOCK - 1))

/* Eight weights per pass over the accumulators where there are vector registers to hold them;
 * four on small cores (a Cortex-M3 has 13 general registers: eight pointers would spill). */
#ifndef SQN_WIDE
#if defined(__x86_64__) || defined(__i386__) || defined(__aarch64__) || defined(__ARM_NEON)
#define SQN_WIDE 1
#else
#define SQN_WIDE 0
#endif
#endif

/* int8 builds for x86 CPUs with AVX-512 VNNI take the fast path below (-DSQN_VNNI=0: never) */
#ifndef SQN_VNNI
#if !SQN_COMPRESSED && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define SQN_VNNI 1
#else
#define SQN_VNNI 0
#endif
#endif

/* w * a: with int8 weights every product fits 16 bits (|w| <= 127, |a| <= 255); saying so lets
 * compilers multiply 16 lanes at a time, while small cores do better with a plain 32-bit multiply.
 * A compressed build's codebook weights are wider: its products need the 32-bit multiply. */
#if SQN_WIDE && !SQN_COMPRESSED
#define SQN_MUL(w, a) ((int32_t)(int16_t)((w) * (a)))
#else
#define SQN_MUL(w, a) ((int32_t)(w) * (a))
#endif

typedef struct {
    int32_t off; /* offset of the tap in the input buffer */
    int32_t w;   /* weight: int8, or a codebook value in a compressed build */
} sqn_entry;

typedef struct {
    uint16_t cin, cout;
    uint8_t k, bias_shift;
    const int16_t *bias;
    const int8_t *w;      /* int8 storage: [cout][k][k][cin] (conv1: [cout][cin][k][k]) */
    const int32_t *mult;  /* int8 storage: per output channel */
    const uint8_t *shift; /* int8 storage: per output channel */
    const uint16_t *words;   /* compressed storage: the layer's rANS stream */
    const uint8_t *tables;   /* compressed storage: varint frequencies (gaps, codes), then the codebook */
    uint32_t entries;        /* compressed storage: non-zero weights */
    uint16_t codes, gap_alphabet;
    int32_t layer_mult;
    uint8_t layer_shift;
} sqn_conv;

typedef struct {
    sqn_conv conv; /* conv1, input channels in the image's order: int8 tables or a stream */
    uint16_t in_size, conv_size, out_size, row_pitch;
    uint8_t stride, pad, pool;
    const int16_t *zero; /* per input channel: the pixel value that reads as 0 */
} sqn_stem;

/* conv1's weights as the stem reads them: int8 tables, or its codebook's values decoded into the arena */
#if SQN_STEM_COMPRESSED
typedef int16_t sqn_stem_weight;
#else
typedef int8_t sqn_stem_weight;
#endif

typedef struct {
    const sqn_stem_weight *w;
    const int32_t *mult;
    const uint8_t *shift;
} sqn_stem_weights;

typedef struct {
    sqn_conv squeeze, expand1x1, expand3x3;
    uint16_t size; /* input side = output side before the pool */
    uint8_t pool, bypass, in_wide; /* in_wide: the input is conv1's uint16 output */
    int32_t bypass_mult;
    uint8_t bypass_shift;
    uint32_t in, sq, out, plane; /* arena offsets; plane: one unpooled output channel (pooled Fires) */
} sqn_fire;

typedef struct {
    sqn_conv conv;
    uint16_t size;
    uint8_t pad;
    uint32_t in;
} sqn_classifier;

/* min(top, (max(acc, 0) * m + 2^(n-1)) >> n): ReLU, fixed-point multiply, round half up, saturate */
static uint32_t sqn_requant_to(int32_t acc, int32_t m, int n, uint32_t top)
{
    uint64_t a = acc > 0 ? (uint64_t)(uint32_t)acc : 0u;
    uint64_t v = (a * (uint64_t)(uint32_t)m + ((uint64_t)1 << (n - 1))) >> n;
    return (uint32_t)(v > top ? top : v);
}

static uint8_t sqn_requant(int32_t acc, int32_t m, int n) { return (uint8_t)sqn_requant_to(acc, m, n, 255u); }

/* elements of conv1's (pooled) output and of a squeeze output: uint8, or uint16 where the build keeps
 * them wider (the tensors whose rounding costs the most predictions; docs/c-export.md) */
#if SQN_STEM_MAX > 255
typedef uint16_t sqn_st;
#else
typedef uint8_t sqn_st;
#endif
#define SQN_WIDE_INPUTS (SQN_STEM_MAX > 255 || SQN_SQUEEZE_MAX > 255)

/* acc[i] += sum over entries of w * in[off + i], i < n; four entries per pass over acc */
static void sqn_accumulate(int32_t *restrict acc, int32_t n, const uint8_t *restrict in, const sqn_entry *e,
                           int32_t count)
{
    int32_t i = 0, j;
    n = SQN_ROUND(n);
    for (; SQN_WIDE && i + 8 <= count; i += 8) {
        const uint8_t *restrict a0 = in + e[i].off;
        const uint8_t *restrict a1 = in + e[i + 1].off;
        const uint8_t *restrict a2 = in + e[i + 2].off;
        const uint8_t *restrict a3 = in + e[i + 3].off;
        const uint8_t *restrict a4 = in + e[i + 4].off;
        const uint8_t *restrict a5 = in + e[i + 5].off;
        const uint8_t *restrict a6 = in + e[i + 6].off;
        const uint8_t *restrict a7 = in + e[i + 7].off;
        const int16_t w0 = (int16_t)e[i].w, w1 = (int16_t)e[i + 1].w;
        const int16_t w2 = (int16_t)e[i + 2].w, w3 = (int16_t)e[i + 3].w;
        const int16_t w4 = (int16_t)e[i + 4].w, w5 = (int16_t)e[i + 5].w;
        const int16_t w6 = (int16_t)e[i + 6].w, w7 = (int16_t)e[i + 7].w;
        for (j = 0; j < n; j++) {
            acc[j] += SQN_MUL(w0, a0[j]) + SQN_MUL(w1, a1[j]) +
                      SQN_MUL(w2, a2[j]) + SQN_MUL(w3, a3[j]) +
                      SQN_MUL(w4, a4[j]) + SQN_MUL(w5, a5[j]) +
                      SQN_MUL(w6, a6[j]) + SQN_MUL(w7, a7[j]);
        }
    }
    for (; i + 4 <= count; i += 4) {
        const uint8_t *restrict a0 = in + e[i].off;
        const uint8_t *restrict a1 = in + e[i + 1].off;
        const uint8_t *restrict a2 = in + e[i + 2].off;
        const uint8_t *restrict a3 = in + e[i + 3].off;
        const int16_t w0 = (int16_t)e[i].w, w1 = (int16_t)e[i + 1].w;
        const int16_t w2 = (int16_t)e[i + 2].w, w3 = (int16_t)e[i + 3].w;
        for (j = 0; j < n; j++) {
            acc[j] += SQN_MUL(w0, a0[j]) + SQN_MUL(w1, a1[j]) +
                      SQN_MUL(w2, a2[j]) + SQN_MUL(w3, a3[j]);
        }
    }
    for (; i < count; i++) {
        const uint8_t *restrict a0 = in + e[i].off;
        const int16_t w0 = (int16_t)e[i].w;
        for (j = 0; j < n; j++) acc[j] += SQN_MUL(w0, a0[j]);
    }
}

#if SQN_WIDE_INPUTS
/* sqn_accumulate over a wide (uint16) input: the products need the 32-bit multiply */
static void sqn_accumulate_wide(int32_t *restrict acc, int32_t n, const uint16_t *restrict in, const sqn_entry *e,
                                int32_t count)
{
    int32_t i = 0, j;
    n = SQN_ROUND(n);
    for (; i + 4 <= count; i += 4) {
        const uint16_t *restrict a0 = in + e[i].off;
        const uint16_t *restrict a1 = in + e[i + 1].off;
        const uint16_t *restrict a2 = in + e[i + 2].off;
        const uint16_t *restrict a3 = in + e[i + 3].off;
        const int32_t w0 = e[i].w, w1 = e[i + 1].w, w2 = e[i + 2].w, w3 = e[i + 3].w;
        for (j = 0; j < n; j++) acc[j] += w0 * a0[j] + w1 * a1[j] + w2 * a2[j] + w3 * a3[j];
    }
    for (; i < count; i++) {
        const uint16_t *restrict a0 = in + e[i].off;
        const int32_t w0 = e[i].w;
        for (j = 0; j < n; j++) acc[j] += w0 * a0[j];
    }
}
#endif

static void sqn_fill(int32_t *acc, int32_t n, int32_t value)
{
    int32_t i;
    n = SQN_ROUND(n);
    for (i = 0; i < n; i++) acc[i] = value;
}

/* requantize rows x cols accumulators (pitch ap) into a plane of uint8, or of uint16 for a top above
 * 255 (pitch dp), saturating at top */
static void sqn_store(const int32_t *acc, int32_t ap, int32_t rows, int32_t cols, int32_t m, int n, void *dst,
                      int32_t dp, uint32_t top)
{
    int32_t y, x;
    for (y = 0; y < rows; y++) {
        const int32_t *a = acc + y * ap;
        if (top > 255u) {
            uint16_t *d = (uint16_t *)dst + y * dp;
            for (x = 0; x < cols; x++) d[x] = (uint16_t)sqn_requant_to(a[x], m, n, top);
        } else {
            uint8_t *d = (uint8_t *)dst + y * dp;
            for (x = 0; x < cols; x++) d[x] = (uint8_t)sqn_requant_to(a[x], m, n, top);
        }
    }
}

/* sqn_store into uint8; with a bypass, add its plane (pitch cols) rescaled by (bm, bn) and saturate */
static void sqn_emit(const int32_t *acc, int32_t ap, int32_t rows, int32_t cols, int32_t m, int n, uint8_t *dst,
                     int32_t dp, const uint8_t *bypass, int32_t bm, int bn)
{
    int32_t y, x;
    sqn_store(acc, ap, rows, cols, m, n, dst, dp, 255u);
    for (y = 0; bypass && y < rows; y++) {
        const uint8_t *b = bypass + y * cols;
        uint8_t *d = dst + y * dp;
        for (x = 0; x < cols; x++) {
            uint32_t v = (uint32_t)d[x] + (uint32_t)(((uint64_t)b[x] * (uint32_t)bm + ((uint64_t)1 << (bn - 1))) >> bn);
            d[x] = (uint8_t)(v > 255u ? 255u : v);
        }
    }
}

static int32_t sqn_pool_size(int32_t size) { return (size - 3 + 1) / 2 + 1; }

static uint32_t sqn_at(const void *plane, int32_t i, int wide)
{
    return wide ? ((const uint16_t *)plane)[i] : ((const uint8_t *)plane)[i];
}

/* 3x3 / 2 max pool, ceil mode (a last window hangs over the edge and takes what is there), on uint8
 * planes or (wide) uint16 ones */
static void sqn_pool(const void *src, int32_t size, void *dst, int wide)
{
    int32_t out = sqn_pool_size(size), py, px, y, x;
    for (py = 0; py < out; py++) {
        int32_t y1 = 2 * py + 2 < size ? 2 * py + 2 : size - 1;
        for (px = 0; px < out; px++) {
            int32_t x1 = 2 * px + 2 < size ? 2 * px + 2 : size - 1;
            uint32_t best = 0;
            for (y = 2 * py; y <= y1; y++)
                for (x = 2 * px; x <= x1; x++)
                    if (sqn_at(src, y * size + x, wide) > best) best = sqn_at(src, y * size + x, wide);
            if (wide)
                ((uint16_t *)dst)[py * out + px] = (uint16_t)best;
            else
                ((uint8_t *)dst)[py * out + px] = (uint8_t)best;
        }
    }
}

/* ---- the stem: conv1 (+ ReLU) and its max pool, one conv1 row at a time --------------------
 * rows: for each input channel and kernel row, the image row minus the zero point, split
 * into `stride` phases so that every tap reads a contiguous run; ring: the last three
 * conv1 rows of every channel, pooled as soon as a pool window is complete. */
static void sqn_stem_row(const sqn_stem *s, const uint8_t *image, int32_t y, int16_t *rows)
{
    int32_t c, ky, j, cols = s->row_pitch * s->stride, cin = s->conv.cin, k = s->conv.k;
    for (c = 0; c < cin; c++) {
        for (ky = 0; ky < k; ky++) {
            int32_t r = y * s->stride + ky - s->pad;
            int16_t *row = rows + (c * k + ky) * s->stride * s->row_pitch;
            for (j = 0; j < cols; j++) {
                int32_t col = j - s->pad;
                int16_t v = 0;
                if (r >= 0 && r < s->in_size && col >= 0 && col < s->in_size)
                    v = (int16_t)(image[(r * s->in_size + col) * cin + c] - s->zero[c]);
                row[(j % s->stride) * s->row_pitch + j / s->stride] = v;
            }
        }
    }
}

/* acc[x] += sum of w * a[x] over 8 (or fewer) taps of int16 rows */
static void sqn_taps(int32_t *restrict acc, int32_t n, const int16_t *const *taps, const int16_t *tw, int32_t t)
{
    int32_t j;
    n = SQN_ROUND(n);
    if (t == 4) {
        const int16_t *restrict a0 = taps[0], *restrict a1 = taps[1], *restrict a2 = taps[2], *restrict a3 = taps[3];
        const int16_t w0 = tw[0], w1 = tw[1], w2 = tw[2], w3 = tw[3];
        for (j = 0; j < n; j++)
            acc[j] += SQN_MUL(w0, a0[j]) + SQN_MUL(w1, a1[j]) +
                      SQN_MUL(w2, a2[j]) + SQN_MUL(w3, a3[j]);
        return;
    }
    if (t == 8) {
        const int16_t *restrict a0 = taps[0], *restrict a1 = taps[1], *restrict a2 = taps[2], *restrict a3 = taps[3];
        const int16_t *restrict a4 = taps[4], *restrict a5 = taps[5], *restrict a6 = taps[6], *restrict a7 = taps[7];
        const int16_t w0 = tw[0], w1 = tw[1], w2 = tw[2], w3 = tw[3], w4 = tw[4], w5 = tw[5], w6 = tw[6], w7 = tw[7];
        for (j = 0; j < n; j++)
            acc[j] += SQN_MUL(w0, a0[j]) + SQN_MUL(w1, a1[j]) +
                      SQN_MUL(w2, a2[j]) + SQN_MUL(w3, a3[j]) +
                      SQN_MUL(w4, a4[j]) + SQN_MUL(w5, a5[j]) +
                      SQN_MUL(w6, a6[j]) + SQN_MUL(w7, a7[j]);
        return;
    }
    while (t > 0) {
        const int16_t *restrict a0 = taps[--t];
        const int16_t w0 = tw[t];
        for (j = 0; j < n; j++) acc[j] += SQN_MUL(w0, a0[j]);
    }
}

static void sqn_stem_channel(const sqn_stem *s, const sqn_stem_weight *w, int32_t oc, const int16_t *rows, int32_t *acc)
{
    const int16_t *taps[8];
    int16_t tw[8];
    int32_t c, ky, kx, t = 0, n = s->conv_size, k = s->conv.k;
    sqn_fill(acc, n, (int32_t)s->conv.bias[oc] * (1 << s->conv.bias_shift));
    for (c = 0; c < s->conv.cin; c++) {
        for (ky = 0; ky < k; ky++) {
            const int16_t *row = rows + (c * k + ky) * s->stride * s->row_pitch;
            for (kx = 0; kx < k; kx++, w++) {
                if (!*w) continue;
                taps[t] = row + (kx % s->stride) * s->row_pitch + kx / s->stride;
                tw[t++] = *w;
                if (t == (SQN_WIDE ? 8 : 4)) {
                    sqn_taps(acc, n, taps, tw, t);
                    t = 0;
                }
            }
        }
    }
    sqn_taps(acc, n, taps, tw, t);
}

static void sqn_stem_rows(const sqn_stem *s, const sqn_stem_weights *sw, const uint8_t *image, sqn_st *out,
                          int16_t *rows, sqn_st *ring, int32_t *acc)
{
    int32_t y, oc, x, n = s->conv_size, py = 0, cout = s->conv.cout, per = s->conv.cin * s->conv.k * s->conv.k;
    for (y = 0; y < n; y++) {
        sqn_stem_row(s, image, y, rows);
        for (oc = 0; oc < cout; oc++) {
            sqn_st *dst = s->pool ? ring + ((y % 3) * cout + oc) * n : out + ((int32_t)oc * n + y) * n;
            sqn_stem_channel(s, sw->w + oc * per, oc, rows, acc);
            for (x = 0; x < n; x++) dst[x] = (sqn_st)sqn_requant_to(acc[x], sw->mult[oc], sw->shift[oc], SQN_STEM_MAX);
        }
        /* pool row py needs conv rows 2py .. min(2py + 2, n - 1) */
        while (s->pool && py < s->out_size && (2 * py + 2 < n ? 2 * py + 2 : n - 1) == y) {
            int32_t y1 = y, px, r, xx;
            for (oc = 0; oc < cout; oc++) {
                sqn_st *dst = out + ((int32_t)oc * s->out_size + py) * s->out_size;
                for (px = 0; px < s->out_size; px++) {
                    int32_t x1 = 2 * px + 2 < n ? 2 * px + 2 : n - 1;
                    sqn_st best = 0;
                    for (r = 2 * py; r <= y1; r++) {
                        const sqn_st *src = ring + ((r % 3) * cout + oc) * n;
                        for (xx = 2 * px; xx <= x1; xx++)
                            if (src[xx] > best) best = src[xx];
                    }
                    dst[px] = best;
                }
            }
            py++;
        }
    }
}

/* ---- weights of one output channel -> entries ------------------------------------------- */
typedef struct {
    const sqn_conv *conv;
    int32_t plane, pitch, base; /* input plane size, row pitch, offset of tap (0, 0) */
    int32_t flat;               /* offsets are the weights' positions within the channel (conv1) */
    int32_t wide;               /* the input is uint16 (a wide conv1 or squeeze output) */
    uint32_t next;              /* compressed: flat position of the next weight */
#if SQN_VNNI
    const uint8_t *quads; /* the input as quads (sqn_interleave), or 0: the portable loops */
#endif
#if SQN_COMPRESSED
    uint32_t x, left;
    const uint16_t *p;
#endif
} sqn_source;

#if SQN_COMPRESSED
/* flat position k within a channel's weights -> offset of its tap in the input buffer */
static int32_t sqn_offset(const sqn_source *src, uint32_t k)
{
    if (src->flat) return (int32_t)k;
    if (src->conv->k == 1) return (int32_t)k * src->plane + src->base;
    {
        uint32_t ic = k / 9u, r = k - 9u * ic;
        return (int32_t)ic * src->plane + (int32_t)(r / 3u) * src->pitch + (int32_t)(r % 3u) + src->base;
    }
}

/* rANS decoding tables of the current layer (in the arena) */
typedef struct {
    uint8_t gap_lut[SQN_PROB_SCALE], code_lut[SQN_PROB_SCALE];
    uint16_t gap_freq[256], gap_cum[256], code_freq[256], code_cum[256];
    int16_t codebook[256];
} sqn_tables;

static uint32_t sqn_varint(const uint8_t **t)
{
    uint32_t v = 0, bits = 0;
    uint8_t byte;
    do {
        byte = *(*t)++;
        v |= (uint32_t)(byte & 0x7Fu) << bits;
        bits += 7u;
    } while (byte & 0x80u);
    return v;
}

static const uint8_t *sqn_read_table(const uint8_t *t, int32_t count, uint16_t *freq, uint16_t *cum, uint8_t *lut)
{
    int32_t s, total = 0, j;
    for (s = 0; s < count; s++) {
        uint32_t v = sqn_varint(&t);
        freq[s] = (uint16_t)v;
        cum[s] = (uint16_t)total;
        for (j = 0; j < (int32_t)v; j++) lut[total + j] = (uint8_t)s;
        total += (int32_t)v;
    }
    return t;
}

static uint32_t sqn_symbol(sqn_source *src, const uint8_t *lut, const uint16_t *freq, const uint16_t *cum)
{
    uint32_t slot = src->x & (SQN_PROB_SCALE - 1u), s = lut[slot];
    src->x = freq[s] * (src->x >> SQN_PROB_BITS) + slot - cum[s];
    if (src->x < 0x10000u) src->x = (src->x << 16) | *src->p++;
    return s;
}

static void sqn_advance(sqn_source *src, const sqn_tables *tb)
{
    uint32_t gap = 0, s, esc = src->conv->gap_alphabet - 1u;
    if (!src->left) {
        src->next = 0xFFFFFFFFu;
        return;
    }
    if (src->conv->gap_alphabet) {
        while ((s = sqn_symbol(src, tb->gap_lut, tb->gap_freq, tb->gap_cum)) == esc) gap += esc;
        gap += s;
    }
    src->next += gap + 1u;
    src->left--;
}

static void sqn_begin(sqn_source *src, sqn_tables *tb)
{
    const sqn_conv *c = src->conv;
    const uint8_t *t = c->tables;
    int32_t k, value = 0;
    if (c->gap_alphabet) t = sqn_read_table(t, c->gap_alphabet, tb->gap_freq, tb->gap_cum, tb->gap_lut);
    t = sqn_read_table(t, c->codes, tb->code_freq, tb->code_cum, tb->code_lut);
    for (k = 0; k < c->codes; k++) { /* zigzag differences */
        uint32_t z = sqn_varint(&t);
        value += (z & 1u) ? -(int32_t)((z + 1u) >> 1) : (int32_t)(z >> 1);
        tb->codebook[k] = (int16_t)value;
    }
    src->p = c->words + 2;
    src->x = (uint32_t)c->words[0] | ((uint32_t)c->words[1] << 16);
    src->left = c->entries;
    src->next = 0xFFFFFFFFu; /* position -1: the first gap lands on the first weight */
    sqn_advance(src, tb);
}

/* a channel's weights: decode its codes; the weights are the codebook's values, one multiplier per layer */
static int32_t sqn_channel(sqn_source *src, sqn_tables *tb, int32_t oc, sqn_entry *e, int32_t *mult, int *shift)
{
    const sqn_conv *c = src->conv;
    uint32_t per = (uint32_t)c->cin * c->k * c->k, start = (uint32_t)oc * per, end = start + per;
    int32_t count = 0;
    while (src->next < end) {
        e[count].off = sqn_offset(src, src->next - start);
        e[count++].w = tb->codebook[sqn_symbol(src, tb->code_lut, tb->code_freq, tb->code_cum)];
        sqn_advance(src, tb);
    }
    *mult = c->layer_mult;
    *shift = c->layer_shift;
    return count;
}
#else
typedef struct {
    uint8_t unused;
} sqn_tables;

static void sqn_begin(sqn_source *src, sqn_tables *tb)
{
    (void)src;
    (void)tb;
}

static int32_t sqn_channel(sqn_source *src, sqn_tables *tb, int32_t oc, sqn_entry *e, int32_t *mult, int *shift)
{
    const sqn_conv *c = src->conv;
    int32_t ks = c->k, per = (int32_t)c->cin * ks * ks, ic, ky, kx, count = 0;
    const int8_t *w = c->w + oc * per;
    (void)tb;
    for (ky = 0; ky < ks; ky++)
        for (kx = 0; kx < ks; kx++)
            for (ic = 0; ic < c->cin; ic++, w++)
                if (*w) {
                    e[count].off = ic * src->plane + ky * src->pitch + kx + src->base;
                    e[count++].w = *w;
                }
    *mult = c->mult[oc];
    *shift = c->shift[oc];
    return count;
}
#endif

static int32_t sqn_bias(const sqn_conv *c, int32_t oc) { return (int32_t)c->bias[oc] * (1 << c->bias_shift); }

/* ---- layers -------------------------------------------------------------------------------- */
typedef struct {
    int32_t *acc;
    sqn_entry *entries;
    sqn_tables *tables;
} sqn_scratch;

#if SQN_STEM_COMPRESSED
/* conv1 is read once per output row: its stream is decoded once per image into the arena */
static void sqn_stem_unpack(const sqn_stem *s, const sqn_scratch *w, int16_t *weights, int32_t *mult, uint8_t *shift)
{
    const sqn_conv *c = &s->conv;
    int32_t per = c->cin * c->k * c->k, oc, i, count, m;
    int sh;
    sqn_source src;
    src.conv = c;
    src.plane = src.pitch = src.base = 0;
    src.flat = 1;
    src.wide = 0;
    sqn_begin(&src, w->tables);
    for (oc = 0; oc < c->cout; oc++) {
        int16_t *row = weights + oc * per;
        count = sqn_channel(&src, w->tables, oc, w->entries, &m, &sh);
        for (i = 0; i < per; i++) row[i] = 0;
        for (i = 0; i < count; i++) row[w->entries[i].off] = (int16_t)w->entries[i].w;
        mult[oc] = m;
        shift[oc] = (uint8_t)sh;
    }
}
#endif

/* ---- the x86 fast path: AVX-512 VNNI ---------------------------------------------------------
 * In an int8 build compiled for a CPU that has it (gcc/clang -march=native on such a CPU), the
 * convolutions run as dense int8 products on vpdpbusd, which multiplies four uint8 activations by
 * four int8 weights and adds the four products to an int32 lane: the same integers as the
 * portable loops (sums of exact products, in another order), so the same scores. A layer's input
 * planes are first interleaved four channels at a time ("quads": byte r of pixel p of quad q is
 * channel 4q + r), weights are stored [cout][k][k][cin], so four consecutive weights are one
 * quad too. The buffers are static and outside the arena, which stays what a microcontroller
 * needs; their sizes come from the export (SQN_VNNI_*). A wide (uint16) input is read two
 * channels at a time ("pairs", again four bytes per pixel) by vpdpwssd, with the layer's weights
 * widened to int16. -DSQN_VNNI=0 keeps the portable loops. */
#if SQN_VNNI
#if SQN_COMPRESSED
#error "the VNNI path runs int8 weights; a compressed build's codebook values are wider"
#endif
#include <immintrin.h>
#include <string.h>

#define SQN_TILE 64 /* pixels per register tile: four vectors of 16 int32 */

static uint8_t sqn_vnni_quads[SQN_VNNI_QUAD_BYTES];
static int32_t sqn_vnni_acc[4 * SQN_VNNI_ACC_PITCH];
static sqn_st sqn_vnni_plane[SQN_VNNI_PLANE_BYTES / sizeof(sqn_st)];
static int8_t sqn_vnni_stem_w[4 * 4 * SQN_VNNI_STEM_TAPS];
#if SQN_WIDE_INPUTS
static int16_t sqn_vnni_w16[4 * SQN_VNNI_W16];
#endif

/* quads[(q * plane + p) * 4 + r] = planes[(4q + r) * plane + p] */
static void sqn_interleave(const uint8_t *planes, int32_t cin, int32_t plane, uint8_t *quads)
{
    int32_t q, p;
    for (q = 0; q < cin / 4; q++) {
        const uint8_t *a = planes + 4 * q * plane, *b = a + plane, *c = b + plane, *d = c + plane;
        uint8_t *o = quads + 4 * q * plane;
        for (p = 0; p + 16 <= plane; p += 16) {
            const __m128i va = _mm_loadu_si128((const __m128i *)(const void *)(a + p));
            const __m128i vb = _mm_loadu_si128((const __m128i *)(const void *)(b + p));
            const __m128i vc = _mm_loadu_si128((const __m128i *)(const void *)(c + p));
            const __m128i vd = _mm_loadu_si128((const __m128i *)(const void *)(d + p));
            const __m128i ab0 = _mm_unpacklo_epi8(va, vb), ab1 = _mm_unpackhi_epi8(va, vb);
            const __m128i cd0 = _mm_unpacklo_epi8(vc, vd), cd1 = _mm_unpackhi_epi8(vc, vd);
            _mm_storeu_si128((__m128i *)(void *)(o + 4 * p), _mm_unpacklo_epi16(ab0, cd0));
            _mm_storeu_si128((__m128i *)(void *)(o + 4 * p + 16), _mm_unpackhi_epi16(ab0, cd0));
            _mm_storeu_si128((__m128i *)(void *)(o + 4 * p + 32), _mm_unpacklo_epi16(ab1, cd1));
            _mm_storeu_si128((__m128i *)(void *)(o + 4 * p + 48), _mm_unpackhi_epi16(ab1, cd1));
        }
        for (; p < plane; p++) {
            o[4 * p] = a[p];
            o[4 * p + 1] = b[p];
            o[4 * p + 2] = c[p];
            o[4 * p + 3] = d[p];
        }
    }
}

#if SQN_WIDE_INPUTS
/* pairs[(q * plane + p) * 2 + r] = planes[(2q + r) * plane + p] */
static void sqn_interleave_pairs(const uint16_t *planes, int32_t cin, int32_t plane, uint16_t *pairs)
{
    int32_t q, p;
    for (q = 0; q < cin / 2; q++) {
        const uint16_t *a = planes + 2 * q * plane, *b = a + plane;
        uint16_t *o = pairs + 2 * q * plane;
        for (p = 0; p + 8 <= plane; p += 8) {
            const __m128i va = _mm_loadu_si128((const __m128i *)(const void *)(a + p));
            const __m128i vb = _mm_loadu_si128((const __m128i *)(const void *)(b + p));
            _mm_storeu_si128((__m128i *)(void *)(o + 2 * p), _mm_unpacklo_epi16(va, vb));
            _mm_storeu_si128((__m128i *)(void *)(o + 2 * p + 8), _mm_unpackhi_epi16(va, vb));
        }
        for (; p < plane; p++) {
            o[2 * p] = a[p];
            o[2 * p + 1] = b[p];
        }
    }
}
#endif

static int32_t sqn_word(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

#define SQN_DOT(op, o, wp)                                   \
    do {                                                     \
        const __m512i b_ = _mm512_set1_epi32(sqn_word(wp));  \
        r[o][0] = op(r[o][0], x0, b_);                       \
        r[o][1] = op(r[o][1], x1, b_);                       \
        r[o][2] = op(r[o][2], x2, b_);                       \
        r[o][3] = op(r[o][3], x3, b_);                       \
    } while (0)
#define SQN_GROUPS(op)                                                           \
    for (q = 0; q < cq; q++, x += 4 * plane) {                                   \
        const __m512i x0 = _mm512_loadu_si512((const void *)x);                 \
        const __m512i x1 = _mm512_loadu_si512((const void *)(x + 64));          \
        const __m512i x2 = _mm512_loadu_si512((const void *)(x + 128));         \
        const __m512i x3 = _mm512_loadu_si512((const void *)(x + 192));         \
        SQN_DOT(op, 0, w0 + 4 * q);                                              \
        SQN_DOT(op, 1, w1 + 4 * q);                                              \
        SQN_DOT(op, 2, w2 + 4 * q);                                              \
        SQN_DOT(op, 3, w3 + 4 * q);                                              \
    }
#define SQN_START(o) r[o][0] = r[o][1] = r[o][2] = r[o][3] = _mm512_set1_epi32(init[o])
#define SQN_STORE(o)                                                               \
    do {                                                                           \
        int32_t *d_ = sqn_vnni_acc + (o) * SQN_VNNI_ACC_PITCH + j;                 \
        _mm512_storeu_si512((void *)d_, r[o][0]);                                  \
        _mm512_storeu_si512((void *)(d_ + 16), r[o][1]);                           \
        _mm512_storeu_si512((void *)(d_ + 32), r[o][2]);                           \
        _mm512_storeu_si512((void *)(d_ + 48), r[o][3]);                           \
    } while (0)

/* sqn_vnni_acc[o][j] = init[o] + sum over taps t and groups q < cq of the dot product of the
 * four bytes at quads + 4 * (q * plane + off[t] + j) with those at w[o] + 4 * (t * cq + q), for o < 4
 * and j < n (rounded up to a tile): four output channels by 64 pixels held in 16 registers. A group
 * is four uint8 channels by four int8 weights, or with `pairs` two uint16 channels by two int16. */
static void sqn_vnni_block(const int32_t *init, int32_t n, const uint8_t *quads, int32_t plane, int32_t cq,
                           const int32_t *off, int32_t taps, const int8_t *const *w, int pairs)
{
    int32_t j, t, q;
    for (j = 0; j < n; j += SQN_TILE) {
        __m512i r[4][4];
        SQN_START(0);
        SQN_START(1);
        SQN_START(2);
        SQN_START(3);
        for (t = 0; t < taps; t++) {
            const uint8_t *x = quads + 4 * (off[t] + j);
            const int8_t *w0 = w[0] + 4 * t * cq, *w1 = w[1] + 4 * t * cq;
            const int8_t *w2 = w[2] + 4 * t * cq, *w3 = w[3] + 4 * t * cq;
            if (pairs)
                SQN_GROUPS(_mm512_dpwssd_epi32)
            else
                SQN_GROUPS(_mm512_dpbusd_epi32)
        }
        SQN_STORE(0);
        SQN_STORE(1);
        SQN_STORE(2);
        SQN_STORE(3);
    }
}

/* output channels oc .. oc + 3 of a fire or classifier convolution (k <= 3, weights [cout][k][k][cin]);
 * past cout, the last channel is computed again and never read */
static void sqn_vnni_conv(const sqn_source *src, int32_t oc, int32_t n)
{
    const sqn_conv *c = src->conv;
    int32_t o, t, k = c->k, per = k * k * c->cin, init[4], off[9];
    const int8_t *w[4];
    for (t = 0; t < k * k; t++) off[t] = (t / k) * src->pitch + t % k + src->base;
    for (o = 0; o < 4; o++) {
        int32_t ch = oc + o < c->cout ? oc + o : c->cout - 1;
        init[o] = sqn_bias(c, ch);
        w[o] = c->w + ch * per;
#if SQN_WIDE_INPUTS
        if (src->wide) { /* the same order, widened: two consecutive int16 weights are one pair */
            int16_t *wide = sqn_vnni_w16 + o * per;
            for (t = 0; t < per; t++) wide[t] = w[o][t];
            w[o] = (const int8_t *)(const void *)wide;
        }
#endif
    }
    sqn_vnni_block(init, n, src->quads, src->plane, c->cin / (src->wide ? 2 : 4), off, k * k, w, src->wide);
}

/* the layer's input as quads (pairs for a wide input), when its channels come in groups and its
 * kernel is at most 3x3; in = 0: the buffer already holds it (the second expand branch reads what
 * the first did) */
static void sqn_vnni_begin(sqn_source *src, const void *in)
{
    const sqn_conv *c = src->conv;
    src->quads = c->cin % (src->wide ? 2 : 4) == 0 && c->k <= 3 ? sqn_vnni_quads : 0;
    if (!src->quads || !in) return;
#if SQN_WIDE_INPUTS
    if (src->wide) {
        sqn_interleave_pairs((const uint16_t *)in, c->cin, src->plane, (uint16_t *)(void *)sqn_vnni_quads);
        return;
    }
#endif
    sqn_interleave((const uint8_t *)in, c->cin, src->plane, sqn_vnni_quads);
}

/* conv1 on the whole image at once: the image padded with its zero points (they read as 0) and
 * split into stride x stride phase images, so that every tap is a plain offset; a pixel is one quad
 * (its channels, then zeros). The accumulators start at bias - sum of w * zero point. */
static void sqn_stem_vnni(const sqn_stem *s, const sqn_stem_weights *sw, const uint8_t *image, sqn_st *out)
{
    const sqn_conv *c = &s->conv;
    int32_t st = s->stride, k = c->k, taps = k * k, pitch = s->row_pitch, size = s->conv_size;
    int32_t sub = pitch * pitch, oc, o, t, ch, r, col, phase, init[4], off[SQN_VNNI_STEM_TAPS];
    const int8_t *w[4];
    for (phase = 0; phase < st * st; phase++) {
        uint8_t *q = sqn_vnni_quads + 4 * phase * sub;
        for (r = 0; r < pitch; r++) {
            for (col = 0; col < pitch; col++, q += 4) {
                int32_t y = st * r + phase / st - s->pad, x = st * col + phase % st - s->pad;
                int inside = y >= 0 && y < s->in_size && x >= 0 && x < s->in_size;
                for (ch = 0; ch < 4; ch++)
                    q[ch] = ch >= c->cin ? 0 : inside ? image[(y * s->in_size + x) * c->cin + ch] : (uint8_t)s->zero[ch];
            }
        }
    }
    for (t = 0; t < taps; t++) {
        int32_t ky = t / k, kx = t % k;
        off[t] = ((ky % st) * st + kx % st) * sub + (ky / st) * pitch + kx / st;
    }
    for (oc = 0; oc < c->cout; oc += 4) {
        for (o = 0; o < 4; o++) {
            int32_t src = oc + o < c->cout ? oc + o : c->cout - 1;
            const int8_t *wt = sw->w + src * c->cin * taps;
            int8_t *q = sqn_vnni_stem_w + 4 * o * taps;
            init[o] = sqn_bias(c, src);
            for (t = 0; t < taps; t++) {
                for (ch = 0; ch < 4; ch++) {
                    q[4 * t + ch] = ch < c->cin ? wt[ch * taps + t] : 0;
                    init[o] -= ch < c->cin ? (int32_t)q[4 * t + ch] * s->zero[ch] : 0;
                }
            }
            w[o] = q;
        }
        sqn_vnni_block(init, size * pitch, sqn_vnni_quads, sub, 1, off, taps, w, 0);
        for (o = 0; o < 4 && oc + o < c->cout; o++) {
            const int32_t *acc = sqn_vnni_acc + o * SQN_VNNI_ACC_PITCH;
            sqn_st *dst = out + (oc + o) * s->out_size * s->out_size;
            int32_t m = sw->mult[oc + o], sh = sw->shift[oc + o];
            if (!s->pool) {
                sqn_store(acc, pitch, size, size, m, sh, dst, size, SQN_STEM_MAX);
                continue;
            }
            sqn_store(acc, pitch, size, size, m, sh, sqn_vnni_plane, size, SQN_STEM_MAX);
            sqn_pool(sqn_vnni_plane, size, dst, SQN_STEM_MAX > 255);
        }
    }
}
#endif

/* a convolution's accumulators for output channel oc (n of them, bias included) */
static const int32_t *sqn_outputs(sqn_source *src, const sqn_scratch *w, int32_t oc, const void *in, int32_t n,
                                  int32_t *m, int *sh)
{
    int32_t count;
#if SQN_VNNI
    if (src->quads) {
        if (oc % 4 == 0) sqn_vnni_conv(src, oc, n);
        *m = src->conv->mult[oc];
        *sh = src->conv->shift[oc];
        return sqn_vnni_acc + (oc % 4) * SQN_VNNI_ACC_PITCH;
    }
#endif
    count = sqn_channel(src, w->tables, oc, w->entries, m, sh);
    sqn_fill(w->acc, n, sqn_bias(src->conv, oc));
#if SQN_WIDE_INPUTS
    if (src->wide) {
        sqn_accumulate_wide(w->acc, n, (const uint16_t *)in, w->entries, count);
        return w->acc;
    }
#endif
    sqn_accumulate(w->acc, n, (const uint8_t *)in, w->entries, count);
    return w->acc;
}

/* a layer's weights (and, on the fast path, its input as quads), before its first output channel;
 * in = 0: the input is the previous layer's, already interleaved */
static void sqn_start(sqn_source *src, sqn_tables *tb, const void *in)
{
    sqn_begin(src, tb);
#if SQN_VNNI
    sqn_vnni_begin(src, in);
#else
    (void)in;
#endif
}

/* conv1 and its pool: on the fast path in one pass over the whole image, else row by row */
static void sqn_stem_run(const sqn_stem *s, const sqn_stem_weights *sw, const uint8_t *image, sqn_st *out,
                         int16_t *rows, sqn_st *ring, int32_t *acc)
{
#if SQN_VNNI
    if (s->conv.cin <= 4) {
        sqn_stem_vnni(s, sw, image, out);
        return;
    }
#endif
    sqn_stem_rows(s, sw, image, out, rows, ring, acc);
}

/* squeeze: 1x1 on an unpadded input (wide: conv1's uint16 output), written into a zero-bordered output */
static void sqn_squeeze(const sqn_conv *c, int32_t size, const void *in, int wide, void *out, const sqn_scratch *w)
{
    int32_t oc, n = size * size, pitch = size + 2, plane = pitch * pitch, i, m;
    int sh;
    sqn_source src;
    src.conv = c;
    src.plane = n;
    src.pitch = size;
    src.base = 0;
    src.flat = 0;
    src.wide = wide;
    sqn_start(&src, w->tables, in);
    for (i = 0; i < c->cout * plane * (SQN_SQUEEZE_MAX > 255 ? 2 : 1); i++) ((uint8_t *)out)[i] = 0;
    for (oc = 0; oc < c->cout; oc++) {
        const int32_t *acc = sqn_outputs(&src, w, oc, in, n, &m, &sh);
        int32_t first = oc * plane + pitch + 1;
        void *dst = SQN_SQUEEZE_MAX > 255 ? (void *)((uint16_t *)out + first) : (void *)((uint8_t *)out + first);
        sqn_store(acc, size, size, size, m, sh, dst, pitch, SQN_SQUEEZE_MAX);
    }
}

/* an expand layer on the zero-bordered squeeze output, into channels [first, first + cout) */
static void sqn_expand(const sqn_fire *f, const sqn_conv *c, int32_t first, uint8_t *arena, const sqn_scratch *w)
{
    int32_t size = f->size, pitch = size + 2, n = size * pitch - 2, oc, m;
    int32_t out_size = f->pool ? sqn_pool_size(size) : size;
    int sh;
    const void *in = arena + f->sq;
    sqn_source src;
    src.conv = c;
    src.plane = pitch * pitch;
    src.pitch = pitch;
    src.base = c->k == 1 ? pitch + 1 : 0;
    src.flat = 0;
    src.wide = SQN_SQUEEZE_MAX > 255;
    sqn_start(&src, w->tables, first ? 0 : in); /* expand1x1 ran first, on the same input */
    for (oc = 0; oc < c->cout; oc++) {
        int32_t ch = first + oc;
        uint8_t *dst = arena + f->out + ch * out_size * out_size;
        const uint8_t *bypass = f->bypass ? arena + f->in + ch * size * size : 0;
        const int32_t *acc = sqn_outputs(&src, w, oc, in, n, &m, &sh);
        if (f->pool) {
            sqn_emit(acc, pitch, size, size, m, sh, arena + f->plane, size, bypass, f->bypass_mult, f->bypass_shift);
            sqn_pool(arena + f->plane, size, dst, 0);
        } else {
            sqn_emit(acc, pitch, size, size, m, sh, dst, size, bypass, f->bypass_mult, f->bypass_shift);
        }
    }
}

static void sqn_fire_run(const sqn_fire *f, uint8_t *arena, const sqn_scratch *w)
{
    sqn_squeeze(&f->squeeze, f->size, arena + f->in, f->in_wide, arena + f->sq, w);
    sqn_expand(f, &f->expand1x1, 0, arena, w);
    sqn_expand(f, &f->expand3x3, f->expand1x1.cout, arena, w);
}

/* conv10 + ReLU + global average pool, as sums of the uint8 outputs; a padded conv10 sees
 * only zeros on its border, where every output is the requantized bias */
static void sqn_classifier_run(const sqn_classifier *cl, const uint8_t *arena, int32_t *scores, const sqn_scratch *w)
{
    const sqn_conv *c = &cl->conv;
    int32_t size = cl->size, n = size * size, full = size + 2 * cl->pad, oc, i, m;
    int32_t border = full * full - n;
    int sh;
    sqn_source src;
    src.conv = c;
    src.plane = n;
    src.pitch = size;
    src.base = 0;
    src.flat = 0;
    src.wide = 0;
    sqn_start(&src, w->tables, arena + cl->in);
    for (oc = 0; oc < c->cout; oc++) {
        const int32_t *acc = sqn_outputs(&src, w, oc, arena + cl->in, n, &m, &sh);
        int32_t sum = border * (int32_t)sqn_requant(sqn_bias(c, oc), m, sh);
        for (i = 0; i < n; i++) sum += sqn_requant(acc[i], m, sh);
        scores[oc] = sum;
    }
}
/* ---- end of runtime -------------------------------------------------------------------------- */
