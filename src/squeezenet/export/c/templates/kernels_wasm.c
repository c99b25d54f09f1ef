/* ---- runtime, kernels_wasm.c: the WebAssembly fast path, SIMD128 (a SIMD set of kernels.h) ----
 * In a build for wasm32 with SIMD128 (squeezenet export --format wasm), the convolutions past conv1
 * run as dense int16 products on i32x4.dot_i16x8_s, which multiplies eight int16 pairs and adds
 * the two products of each pair to an int32 lane: two input channels of four pixels by two weights
 * of one output channel. Every product is exact (|weight| < 2^15, activations < 2^12) and so is
 * every sum (the export bounds them, as for the portable loops), so the scores are the integers
 * of the portable loops and the NumPy reference. A layer's input planes are first interleaved two
 * channels at a time as int16 ("pairs": element r of pixel p of pair q is channel 2q + r); four
 * output channels' weights are widened to int16 in [tap][cin] order, from the int8 tables or, in
 * a compressed build, decoded from the layer's stream (the order of the channels is the stream's,
 * so each is decoded once). conv1 runs on the same kernel, over the image split into stride phases. */
#if SQN_WASM_SIMD
#include <wasm_simd128.h>

#define SQN_WTILE 8 /* pixels per register tile: two vectors of four int32, for four output channels */

static int16_t sqn_wasm_pairs[SQN_WASM_PAIR_ELEMENTS];
static int32_t sqn_wasm_acc[4 * SQN_VNNI_ACC_PITCH];
static int16_t sqn_wasm_w[4 * SQN_WASM_WEIGHTS];
static sqn_st sqn_wasm_plane[SQN_VNNI_PLANE_BYTES / sizeof(sqn_st)];
static sqn_tables *sqn_wasm_tables; /* the layer's decoding tables (compressed builds) */
static int32_t sqn_wasm_step[SQN_WASM_WEIGHTS / 2]; /* the inner steps' offsets (sqn_wasm_steps) */
#if SQN_COMPRESSED
static sqn_entry sqn_wasm_entries[SQN_WASM_WEIGHTS];
#endif

/* which products the convolutions run on (squeezenet_dots in the WebAssembly glue) */
#define SQN_DOTS_I16 1 /* i32x4.dot_i16x8_s, this file's kernels */
#define SQN_DOTS_I7 2  /* relaxed SIMD on 7-bit pieces (kernels_relaxed.c): exact on every engine */
#define SQN_DOTS_U8 3  /* relaxed SIMD on bytes, where this engine multiplies them exactly */
static int32_t sqn_wasm_mode;

#if SQN_WASM_RELAXED
static int sqn_relaxed_exact_u8(void);
static int sqn_relaxed_take(int wide);
static int sqn_relaxed_begin(const sqn_source *src, const void *in);
static void sqn_relaxed_conv(const sqn_conv *c, int32_t oc, const int32_t *init, int32_t n, int32_t plane,
                             const int32_t *off);
static void sqn_relaxed_stem_quads(const sqn_stem *s, const uint8_t *image);
static void sqn_relaxed_stem_block(const sqn_stem *s, const sqn_stem_weights *sw, int32_t oc, int32_t n,
                                   int32_t plane, const int32_t *off);
static int sqn_relaxed_pieces;
#endif

/* the products the convolutions run on from now: request one of SQN_DOTS_* (a mode this build or
 * engine lacks keeps the current one) or < 0 to ask; the first call picks the fastest exact one */
int32_t sqn_wasm_dots(int32_t request)
{
#if SQN_WASM_RELAXED
    static int exact_u8 = -1; /* the engine's answer does not change: asked once */
    if (exact_u8 < 0) exact_u8 = sqn_relaxed_exact_u8();
    if (!sqn_wasm_mode) sqn_wasm_mode = exact_u8 ? SQN_DOTS_U8 : SQN_DOTS_I16;
    if (request == SQN_DOTS_I16 || request == SQN_DOTS_I7 || (request == SQN_DOTS_U8 && exact_u8))
        sqn_wasm_mode = request;
#else
    (void)request;
    sqn_wasm_mode = SQN_DOTS_I16;
#endif
    return sqn_wasm_mode;
}

/* pairs[(q * plane + p) * 2 + r] = planes[(2q + r) * plane + p], uint8 planes widened to int16 */
static void sqn_wasm_interleave(const uint8_t *planes, int32_t cin, int32_t plane, int16_t *pairs)
{
    int32_t q, p;
    for (q = 0; q < cin / 2; q++) {
        const uint8_t *a = planes + 2 * q * plane, *b = a + plane;
        int16_t *o = pairs + 2 * q * plane;
        for (p = 0; p + 16 <= plane; p += 16) {
            const v128_t va = wasm_v128_load(a + p), vb = wasm_v128_load(b + p);
            const v128_t a0 = wasm_u16x8_extend_low_u8x16(va), a1 = wasm_u16x8_extend_high_u8x16(va);
            const v128_t b0 = wasm_u16x8_extend_low_u8x16(vb), b1 = wasm_u16x8_extend_high_u8x16(vb);
            wasm_v128_store(o + 2 * p, wasm_i16x8_shuffle(a0, b0, 0, 8, 1, 9, 2, 10, 3, 11));
            wasm_v128_store(o + 2 * p + 8, wasm_i16x8_shuffle(a0, b0, 4, 12, 5, 13, 6, 14, 7, 15));
            wasm_v128_store(o + 2 * p + 16, wasm_i16x8_shuffle(a1, b1, 0, 8, 1, 9, 2, 10, 3, 11));
            wasm_v128_store(o + 2 * p + 24, wasm_i16x8_shuffle(a1, b1, 4, 12, 5, 13, 6, 14, 7, 15));
        }
        for (; p < plane; p++) {
            o[2 * p] = a[p];
            o[2 * p + 1] = b[p];
        }
    }
}

#if SQN_WIDE_INPUTS
/* the same for uint16 planes (values below 2^12: they read as the same int16) */
static void sqn_wasm_interleave_wide(const uint16_t *planes, int32_t cin, int32_t plane, int16_t *pairs)
{
    int32_t q, p;
    for (q = 0; q < cin / 2; q++) {
        const uint16_t *a = planes + 2 * q * plane, *b = a + plane;
        int16_t *o = pairs + 2 * q * plane;
        for (p = 0; p + 8 <= plane; p += 8) {
            const v128_t va = wasm_v128_load(a + p), vb = wasm_v128_load(b + p);
            wasm_v128_store(o + 2 * p, wasm_i16x8_shuffle(va, vb, 0, 8, 1, 9, 2, 10, 3, 11));
            wasm_v128_store(o + 2 * p + 8, wasm_i16x8_shuffle(va, vb, 4, 12, 5, 13, 6, 14, 7, 15));
        }
        for (; p < plane; p++) {
            o[2 * p] = (int16_t)a[p];
            o[2 * p + 1] = (int16_t)b[p];
        }
    }
}
#endif

/* four lanes of sqn_requant_to: ReLU, the fixed-point multiply in 64 bits, round half up, saturate */
static v128_t sqn_wasm_requant(v128_t acc, v128_t m, int n, v128_t round, v128_t top)
{
    const v128_t a = wasm_i32x4_max(acc, wasm_i32x4_splat(0));
    v128_t lo = wasm_u64x2_shr(wasm_i64x2_add(wasm_u64x2_extmul_low_u32x4(a, m), round), n);
    v128_t hi = wasm_u64x2_shr(wasm_i64x2_add(wasm_u64x2_extmul_high_u32x4(a, m), round), n);
    lo = wasm_v128_bitselect(top, lo, wasm_i64x2_gt(lo, top));
    hi = wasm_v128_bitselect(top, hi, wasm_i64x2_gt(hi, top));
    return wasm_i32x4_shuffle(lo, hi, 0, 2, 4, 6);
}

static int32_t sqn_simd_store_row(const int32_t *acc, int32_t cols, int32_t m, int n, void *dst, uint32_t top)
{
    const v128_t vm = wasm_i32x4_splat(m), round = wasm_i64x2_splat((int64_t)1 << (n - 1));
    const v128_t vtop = wasm_i64x2_splat((int64_t)top);
    int32_t x;
    for (x = 0; x + 8 <= cols; x += 8) {
        const v128_t r0 = sqn_wasm_requant(wasm_v128_load(acc + x), vm, n, round, vtop);
        const v128_t r1 = sqn_wasm_requant(wasm_v128_load(acc + x + 4), vm, n, round, vtop);
        const v128_t wide = wasm_u16x8_narrow_i32x4(r0, r1);
        if (top > 255u)
            wasm_v128_store((uint16_t *)dst + x, wide);
        else
            wasm_v128_store64_lane((uint8_t *)dst + x, wasm_u8x16_narrow_i16x8(wide, wide), 0);
    }
    return x;
}

/* the largest of three rows at byte offset at, 16 bytes */
static v128_t sqn_wasm_max3(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, int32_t at, int wide)
{
    const v128_t a = wasm_v128_load(r0 + at), b = wasm_v128_load(r1 + at), c = wasm_v128_load(r2 + at);
    return wide ? wasm_u16x8_max(wasm_u16x8_max(a, b), c) : wasm_u8x16_max(wasm_u8x16_max(a, b), c);
}

/* pool outputs px .. px + lanes - 1 of a row, while their windows stay inside it (16 uint8 or 8
 * uint16 at a time): the column maxima of the three rows, then the even, odd and next-even ones */
static int32_t sqn_simd_pool_row(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, int32_t size, uint8_t *d,
                                 int wide)
{
    int32_t lanes = wide ? 8 : 16, e = wide ? 2 : 1, px;
    for (px = 0; 2 * (px + lanes) + 2 <= size; px += lanes) {
        const int32_t at = 2 * px * e;
        const v128_t a = sqn_wasm_max3(r0, r1, r2, at, wide), b = sqn_wasm_max3(r0, r1, r2, at + 16, wide);
        const v128_t a2 = sqn_wasm_max3(r0, r1, r2, at + 2 * e, wide);
        const v128_t b2 = sqn_wasm_max3(r0, r1, r2, at + 16 + 2 * e, wide);
        if (wide) {
            const v128_t even = wasm_i16x8_shuffle(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
            const v128_t odd = wasm_i16x8_shuffle(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
            const v128_t next = wasm_i16x8_shuffle(a2, b2, 0, 2, 4, 6, 8, 10, 12, 14);
            wasm_v128_store(d + px * 2, wasm_u16x8_max(wasm_u16x8_max(even, odd), next));
        } else {
            const v128_t even = wasm_i8x16_shuffle(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            const v128_t odd = wasm_i8x16_shuffle(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            const v128_t next = wasm_i8x16_shuffle(a2, b2, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            wasm_v128_store(d + px, wasm_u8x16_max(wasm_u8x16_max(even, odd), next));
        }
    }
    return px;
}

/* one output channel's weights into w, [tap][cin], int16; zeros past the last channel */
static void sqn_wasm_channel(sqn_source *src, int32_t ch, int16_t *w)
{
    const sqn_conv *c = src->conv;
    int32_t i, per = c->k * c->k * c->cin;
    if (ch >= c->cout) {
        for (i = 0; i < per; i++) w[i] = 0;
        return;
    }
#if SQN_COMPRESSED
    {
        int32_t m, count, taps = c->k * c->k;
        int sh;
        for (i = 0; i < per; i++) w[i] = 0;
        src->flat = 1; /* positions within the channel, [cin][tap] */
        count = sqn_channel(src, sqn_wasm_tables, ch, sqn_wasm_entries, &m, &sh);
        src->flat = 0;
        for (i = 0; i < count; i++) {
            int32_t k = sqn_wasm_entries[i].off;
            w[(k % taps) * c->cin + k / taps] = (int16_t)sqn_wasm_entries[i].w;
        }
    }
#else
    for (i = 0; i < per; i++) w[i] = c->w[ch * per + i];
#endif
}

#define SQN_WDOT(o, wp)                                                          \
    do {                                                                         \
        const v128_t b_ = wasm_v128_load32_splat(wp);                            \
        r##o##0 = wasm_i32x4_add(r##o##0, wasm_i32x4_dot_i16x8(x0, b_));         \
        r##o##1 = wasm_i32x4_add(r##o##1, wasm_i32x4_dot_i16x8(x1, b_));         \
    } while (0)
#define SQN_WSTART(o) v128_t r##o##0 = wasm_i32x4_splat(init[o]), r##o##1 = r##o##0
#define SQN_WSTORE(o)                                                            \
    do {                                                                         \
        wasm_v128_store(sqn_wasm_acc + (o) * SQN_VNNI_ACC_PITCH + j, r##o##0);   \
        wasm_v128_store(sqn_wasm_acc + (o) * SQN_VNNI_ACC_PITCH + j + 4, r##o##1); \
    } while (0)

/* the offsets of a kernel's inner steps, one per tap t and channel group q (the weights' order):
 * unit * (q * plane + off[t]), unit the elements of a group at one pixel; -> how many */
static int32_t sqn_wasm_steps(int32_t unit, int32_t plane, int32_t groups, const int32_t *off, int32_t taps)
{
    int32_t t, q, count = 0;
    for (t = 0; t < taps; t++)
        for (q = 0; q < groups; q++) sqn_wasm_step[count++] = unit * (q * plane + off[t]);
    return count;
}

/* sqn_wasm_acc[o][j] = init[o] + sum over taps t and pairs q < cp of the two int16 products of the
 * pair at pairs + 2 * (q * plane + off[t] + j) with the weights at sqn_wasm_w[o] + 2 * (t * cp + q),
 * for o < 4 and j < n (rounded up to a tile): four output channels by eight pixels in eight vectors,
 * one step per (t, q), the weights' order, so that one loop runs them all */
static void sqn_wasm_block(const int32_t *init, int32_t n, int32_t plane, int32_t cp, const int32_t *off, int32_t taps)
{
    const int32_t count = sqn_wasm_steps(2, plane, cp, off, taps), *steps = sqn_wasm_step;
    int32_t j, s;
    for (j = 0; j < n; j += SQN_WTILE) {
        const int16_t *x = sqn_wasm_pairs + 2 * j, *w = sqn_wasm_w;
        SQN_WSTART(0);
        SQN_WSTART(1);
        SQN_WSTART(2);
        SQN_WSTART(3);
        for (s = 0; s < count; s++, w += 2) {
            const v128_t x0 = wasm_v128_load(x + steps[s]), x1 = wasm_v128_load(x + steps[s] + 8);
            SQN_WDOT(0, w);
            SQN_WDOT(1, w + SQN_WASM_WEIGHTS);
            SQN_WDOT(2, w + 2 * SQN_WASM_WEIGHTS);
            SQN_WDOT(3, w + 3 * SQN_WASM_WEIGHTS);
        }
        SQN_WSTORE(0);
        SQN_WSTORE(1);
        SQN_WSTORE(2);
        SQN_WSTORE(3);
    }
}

/* output channels oc .. oc + 3 of a fire or classifier convolution (k <= 3) */
static void sqn_wasm_conv(sqn_source *src, int32_t oc, int32_t n)
{
    const sqn_conv *c = src->conv;
    int32_t o, t, k = c->k, init[4], off[9];
    for (t = 0; t < k * k; t++) off[t] = (t / k) * src->pitch + t % k + src->base;
    for (o = 0; o < 4; o++) init[o] = oc + o < c->cout ? sqn_bias(c, oc + o) : 0;
#if SQN_WASM_RELAXED
    if (sqn_relaxed_pieces) {
        sqn_relaxed_conv(c, oc, init, n, src->plane, off);
        return;
    }
#endif
    for (o = 0; o < 4; o++) sqn_wasm_channel(src, oc + o, sqn_wasm_w + o * SQN_WASM_WEIGHTS);
    sqn_wasm_block(init, n, src->plane, c->cin / 2, off, k * k);
}

/* the layer's input as int16 pairs, when its channels come in pairs and its kernel is at most 3x3;
 * in = 0: the buffer already holds it (the second expand branch reads what the first did) */
static void sqn_simd_begin(sqn_source *src, sqn_tables *tb, const void *in)
{
    const sqn_conv *c = src->conv;
    src->simd_in = c->cin % 2 == 0 && c->k <= 3 ? (const uint8_t *)(const void *)sqn_wasm_pairs : 0;
    sqn_wasm_tables = tb;
#if SQN_WASM_RELAXED
    if (src->simd_in && sqn_relaxed_begin(src, in)) return;
#endif
    if (!src->simd_in || !in) return;
#if SQN_WIDE_INPUTS
    if (src->wide) {
        sqn_wasm_interleave_wide((const uint16_t *)in, c->cin, src->plane, sqn_wasm_pairs);
        return;
    }
#endif
    sqn_wasm_interleave((const uint8_t *)in, c->cin, src->plane, sqn_wasm_pairs);
}

/* four output channels per pass: the first of each four computes them, the other three read them */
static const int32_t *sqn_simd_outputs(sqn_source *src, int32_t oc, int32_t n, int32_t *m, int *sh)
{
#if SQN_COMPRESSED
    *m = src->conv->layer_mult;
    *sh = src->conv->layer_shift;
#else
    *m = src->conv->mult[oc];
    *sh = src->conv->shift[oc];
#endif
    if (oc % 4 == 0) sqn_wasm_conv(src, oc, n);
    return sqn_wasm_acc + (oc % 4) * SQN_VNNI_ACC_PITCH;
}

/* conv1 on the whole image at once, as the VNNI path does it: the image minus its zero points, padded
 * with zeros and split into stride x stride phase images, so that every tap is a plain offset; a pixel
 * is two pairs (its channels, then zeros), so the stem takes images of at most four channels. */
static void sqn_wasm_stem_pairs(const sqn_stem *s, const uint8_t *image, int32_t plane)
{
    int32_t st = s->stride, pitch = s->row_pitch, sub = pitch * pitch, cin = s->conv.cin, phase, r, col, ch;
    for (phase = 0; phase < st * st; phase++) {
        for (r = 0; r < pitch; r++) {
            for (col = 0; col < pitch; col++) {
                int32_t y = st * r + phase / st - s->pad, x = st * col + phase % st - s->pad, p = phase * sub + r * pitch + col;
                int inside = y >= 0 && y < s->in_size && x >= 0 && x < s->in_size;
                for (ch = 0; ch < 4; ch++)
                    sqn_wasm_pairs[2 * ((ch / 2) * plane + p) + ch % 2] =
                        (int16_t)(inside && ch < cin ? image[(y * s->in_size + x) * cin + ch] - s->zero[ch] : 0);
            }
        }
    }
}

/* conv1's weight of output channel o, input channel ch, tap t; 0 past cout and past cin (a pixel's
 * four lanes hold at most four channels) */
static int32_t sqn_wasm_stem_weight(const sqn_stem *s, const sqn_stem_weights *sw, int32_t o, int32_t ch, int32_t t)
{
    const sqn_conv *c = &s->conv;
    return o < c->cout && ch < c->cin ? sw->w[(o * c->cin + ch) * c->k * c->k + t] : 0;
}

/* conv1's output channels oc .. oc + 3 into sqn_wasm_acc, from the image as pairs */
static void sqn_wasm_stem_block(const sqn_stem *s, const sqn_stem_weights *sw, int32_t oc, int32_t n, int32_t plane,
                                const int32_t *off)
{
    const sqn_conv *c = &s->conv;
    int32_t taps = c->k * c->k, o, t, ch, init[4];
    for (o = 0; o < 4; o++) { /* [tap][4 channels], zeros past cin and past cout */
        int16_t *w = sqn_wasm_w + o * SQN_WASM_WEIGHTS;
        init[o] = oc + o < c->cout ? sqn_bias(c, oc + o) : 0;
        for (t = 0; t < taps; t++)
            for (ch = 0; ch < 4; ch++)
                w[4 * t + ch] = (int16_t)sqn_wasm_stem_weight(s, sw, oc + o, ch, t);
    }
    sqn_wasm_block(init, n, plane, 2, off, taps);
}

static int sqn_simd_stem(const sqn_stem *s, const sqn_stem_weights *sw, const uint8_t *image, sqn_st *out)
{
    const sqn_conv *c = &s->conv;
    int32_t st = s->stride, k = c->k, taps = k * k, pitch = s->row_pitch, size = s->conv_size, sub = pitch * pitch;
    int32_t plane = st * st * sub, oc, o, t, off[SQN_VNNI_STEM_TAPS];
    if (c->cin > 4) return 0;
#if SQN_WASM_RELAXED
    if (sqn_relaxed_take(0))
        sqn_relaxed_stem_quads(s, image);
    else
#endif
        sqn_wasm_stem_pairs(s, image, plane);
    for (t = 0; t < taps; t++) {
        int32_t ky = t / k, kx = t % k;
        off[t] = ((ky % st) * st + kx % st) * sub + (ky / st) * pitch + kx / st;
    }
    for (oc = 0; oc < c->cout; oc += 4) {
#if SQN_WASM_RELAXED
        if (sqn_relaxed_pieces)
            sqn_relaxed_stem_block(s, sw, oc, size * pitch, plane, off);
        else
#endif
            sqn_wasm_stem_block(s, sw, oc, size * pitch, plane, off);
        for (o = 0; o < 4 && oc + o < c->cout; o++) {
            const int32_t *acc = sqn_wasm_acc + o * SQN_VNNI_ACC_PITCH;
            sqn_st *dst = out + (oc + o) * s->out_size * s->out_size;
            int32_t m = sw->mult[oc + o], sh = sw->shift[oc + o];
            if (!s->pool) {
                sqn_store(acc, pitch, size, size, m, sh, dst, size, SQN_STEM_MAX);
                continue;
            }
            sqn_store(acc, pitch, size, size, m, sh, sqn_wasm_plane, size, SQN_STEM_MAX);
            sqn_pool(sqn_wasm_plane, size, dst, SQN_STEM_MAX > 255);
        }
    }
    return 1;
}
#endif
