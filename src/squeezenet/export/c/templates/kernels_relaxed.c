/* ---- runtime, kernels_relaxed.c: WebAssembly relaxed SIMD for int8 builds (part of the SIMD128 set) ----
 * In the "relaxed" build of int8 weights (clang -mrelaxed-simd), the convolutions run on
 * i32x4.relaxed_dot_i8x16_i7x16_add_s: sixteen int8 weights by sixteen activation bytes, each four
 * products added to an int32 lane (four input channels of one pixel, by one output channel's weights),
 * twice the products of i32x4.dot_i16x8_s per instruction and the sum included: x86 CPUs with
 * AVX-VNNI run it as one vpdpbusd. The instruction's result is only fixed for bytes below 128 (an
 * engine may read a byte's top bit as a sign, or saturate a 16-bit pair sum), so an input is cut into
 * pieces and each piece is a pass over the same weights, the passes summed as lo + (hi << shift):
 *   - SQN_DOTS_I7: pieces of 7 bits (x & 127, x >> 7), exact on every engine;
 *   - SQN_DOTS_U8: where a probe at the first run shows that this engine multiplies unsigned bytes
 *     exactly (its answers on bytes that every other allowed behaviour gets wrong), uint8 inputs
 *     in one pass and 12-bit ones in two of 8 bits.
 * The mode is chosen once (sqn_wasm_dots): U8 where the probe passes, else the dot_i16x8 kernels of
 * kernels_wasm.c, since two 7-bit passes cost more than them where the engine has no such instruction.
 * A layer's input is interleaved four channels at a time as bytes ("quads", the VNNI path's layout),
 * piece 0 at the start of sqn_wasm_pairs and piece 1 in its second half; int8 weights are already
 * [cout][k][k][cin], so four consecutive ones are a quad. conv1 reads the raw image, padded with its
 * zero points, and takes the zero points' products out of the bias. The integers are the portable
 * loops', bit for bit (i32 sums are exact modulo 2^32, and the export bounds the true sums). */
#if SQN_WASM_RELAXED

/* sqn_relaxed_pieces (kernels_wasm.c): passes over the current layer's input, 0 where the dot_i16x8 kernels run it */
static int sqn_relaxed_shift;  /* bits of piece 0 */
static const int8_t *sqn_relaxed_w[4];
static const int8_t sqn_relaxed_zeros[SQN_WASM_WEIGHTS];

/* 1 where relaxed_dot multiplies unsigned bytes exactly, and adds each four products and the
 * accumulator without saturating: the bytes come from memory, so the compiler cannot fold them */
static int sqn_relaxed_exact_u8(void)
{
    static volatile int8_t probe[3] = {-128, 127, (int8_t)255};
    const v128_t low = wasm_i8x16_splat(probe[0]), high = wasm_i8x16_splat(probe[1]);
    const v128_t byte = wasm_i8x16_splat(probe[2]), one = wasm_i32x4_splat(1);
    const v128_t a = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(low, byte, one);
    const v128_t b = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(high, byte, one);
    return wasm_i32x4_all_true(wasm_i32x4_eq(a, wasm_i32x4_splat(1 - 4 * 128 * 255))) &&
           wasm_i32x4_all_true(wasm_i32x4_eq(b, wasm_i32x4_splat(1 + 4 * 127 * 255)));
}

/* the passes over an input of uint8 (wide: up to 12-bit) values in the current mode, and their shift */
static int sqn_relaxed_take(int wide)
{
    const int32_t mode = sqn_wasm_dots(-1);
    sqn_relaxed_shift = mode == SQN_DOTS_U8 ? 8 : 7;
    sqn_relaxed_pieces = mode == SQN_DOTS_I16 ? 0 : (mode == SQN_DOTS_U8 && !wide ? 1 : 2);
    return sqn_relaxed_pieces;
}

/* piece 0 (the low bits) or 1 (the rest) of one value */
static uint8_t sqn_relaxed_piece1(uint32_t v, int piece)
{
    if (sqn_relaxed_pieces == 1) return (uint8_t)v;
    return (uint8_t)(piece ? v >> sqn_relaxed_shift : v & ((1u << sqn_relaxed_shift) - 1u));
}

/* the piece of 16 values of a plane from p (wide: uint16 values), as 16 bytes */
static v128_t sqn_relaxed_piece16(const uint8_t *plane, int32_t p, int wide, int piece)
{
    const int shift = sqn_relaxed_shift;
    if (wide) {
        const uint16_t *w = (const uint16_t *)(const void *)plane + p;
        v128_t a = wasm_v128_load(w), b = wasm_v128_load(w + 8);
        if (piece) {
            a = wasm_u16x8_shr(a, shift);
            b = wasm_u16x8_shr(b, shift);
        } else {
            const v128_t mask = wasm_i16x8_splat((int16_t)((1 << shift) - 1));
            a = wasm_v128_and(a, mask);
            b = wasm_v128_and(b, mask);
        }
        return wasm_u8x16_narrow_i16x8(a, b);
    }
    {
        const v128_t v = wasm_v128_load(plane + p);
        if (sqn_relaxed_pieces == 1) return v;
        return piece ? wasm_u8x16_shr(v, shift) : wasm_v128_and(v, wasm_i8x16_splat((int8_t)((1 << shift) - 1)));
    }
}

/* 16 pixels of four channels as quads: o[4p + r] = channel r's byte p */
static void sqn_relaxed_quads16(v128_t a, v128_t b, v128_t c, v128_t d, uint8_t *o)
{
    const v128_t ab0 = wasm_i8x16_shuffle(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const v128_t ab1 = wasm_i8x16_shuffle(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const v128_t cd0 = wasm_i8x16_shuffle(c, d, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const v128_t cd1 = wasm_i8x16_shuffle(c, d, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    wasm_v128_store(o, wasm_i16x8_shuffle(ab0, cd0, 0, 8, 1, 9, 2, 10, 3, 11));
    wasm_v128_store(o + 16, wasm_i16x8_shuffle(ab0, cd0, 4, 12, 5, 13, 6, 14, 7, 15));
    wasm_v128_store(o + 32, wasm_i16x8_shuffle(ab1, cd1, 0, 8, 1, 9, 2, 10, 3, 11));
    wasm_v128_store(o + 48, wasm_i16x8_shuffle(ab1, cd1, 4, 12, 5, 13, 6, 14, 7, 15));
}

/* a layer's input planes (uint8, or uint16 where wide) as quads, one set per piece */
static void sqn_relaxed_interleave(const uint8_t *planes, int32_t cin, int32_t plane, int wide)
{
    const int32_t bytes = wide ? 2 * plane : plane; /* one input plane */
    int32_t piece, q, p, r;
    for (piece = 0; piece < sqn_relaxed_pieces; piece++) {
        for (q = 0; q < cin / 4; q++) {
            const uint8_t *a = planes + 4 * q * bytes;
            uint8_t *o = (uint8_t *)(void *)sqn_wasm_pairs + piece * SQN_WASM_PAIR_ELEMENTS + 4 * q * plane;
            for (p = 0; p + 16 <= plane; p += 16)
                sqn_relaxed_quads16(sqn_relaxed_piece16(a, p, wide, piece), sqn_relaxed_piece16(a + bytes, p, wide, piece),
                                    sqn_relaxed_piece16(a + 2 * bytes, p, wide, piece),
                                    sqn_relaxed_piece16(a + 3 * bytes, p, wide, piece), o + 4 * p);
            for (; p < plane; p++)
                for (r = 0; r < 4; r++) {
                    const uint8_t *ch = a + r * bytes;
                    const uint32_t v = wide ? ((const uint16_t *)(const void *)ch)[p] : ch[p];
                    o[4 * p + r] = sqn_relaxed_piece1(v, piece);
                }
        }
    }
}

#define SQN_RDOT(o)                                                                      \
    do {                                                                                 \
        const v128_t b_ = wasm_v128_load32_splat(w##o);                                  \
        r##o##0 = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(b_, x0, r##o##0);              \
        r##o##1 = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(b_, x1, r##o##1);              \
        w##o += 4;                                                                       \
    } while (0)
#define SQN_RSTART(o) v128_t r##o##0 = wasm_i32x4_splat(init[o]), r##o##1 = r##o##0
#define SQN_RSTORE(o)                                                                    \
    do {                                                                                 \
        int32_t *a_ = sqn_wasm_acc + (o) * SQN_VNNI_ACC_PITCH + j;                       \
        if (shift) {                                                                     \
            r##o##0 = wasm_i32x4_add(wasm_v128_load(a_), wasm_i32x4_shl(r##o##0, shift));  \
            r##o##1 = wasm_i32x4_add(wasm_v128_load(a_ + 4), wasm_i32x4_shl(r##o##1, shift)); \
        }                                                                                \
        wasm_v128_store(a_, r##o##0);                                                    \
        wasm_v128_store(a_ + 4, r##o##1);                                                \
    } while (0)

/* one pass over one tile of eight pixels: for o < 4, sqn_wasm_acc[o][j..] = init[o] + the sum over
 * steps s of the products of the quads at x + steps[s] with the weights at sqn_relaxed_w[o] + 4 * s;
 * shift > 0: that sum, shifted, is added to what sqn_wasm_acc holds (the pass over piece 1) */
static void sqn_relaxed_pass(const int32_t *init, int32_t j, const uint8_t *x, const int32_t *steps, int32_t count,
                             int shift)
{
    const int8_t *w0 = sqn_relaxed_w[0], *w1 = sqn_relaxed_w[1], *w2 = sqn_relaxed_w[2], *w3 = sqn_relaxed_w[3];
    int32_t s;
    SQN_RSTART(0);
    SQN_RSTART(1);
    SQN_RSTART(2);
    SQN_RSTART(3);
    for (s = 0; s < count; s++) {
        const v128_t x0 = wasm_v128_load(x + steps[s]), x1 = wasm_v128_load(x + steps[s] + 16);
        SQN_RDOT(0);
        SQN_RDOT(1);
        SQN_RDOT(2);
        SQN_RDOT(3);
    }
    SQN_RSTORE(0);
    SQN_RSTORE(1);
    SQN_RSTORE(2);
    SQN_RSTORE(3);
}

/* sqn_wasm_block's sums, from the quads of each piece and the weights at sqn_relaxed_w: one step per
 * tap t and quad q (the weights' order), at byte offset 4 * (q * plane + off[t]) */
static void sqn_relaxed_block(const int32_t *init, int32_t n, int32_t plane, int32_t cq, const int32_t *off,
                              int32_t taps)
{
    static const int32_t none[4];
    const uint8_t *quads = (const uint8_t *)(const void *)sqn_wasm_pairs;
    const int32_t count = sqn_wasm_steps(4, plane, cq, off, taps), *steps = sqn_wasm_step;
    int32_t j;
    for (j = 0; j < n; j += SQN_WTILE) {
        sqn_relaxed_pass(init, j, quads + 4 * j, steps, count, 0);
        if (sqn_relaxed_pieces == 2)
            sqn_relaxed_pass(none, j, quads + SQN_WASM_PAIR_ELEMENTS + 4 * j, steps, count, sqn_relaxed_shift);
    }
}

/* output channels oc .. oc + 3 of a layer whose input is in quads, from its int8 weights */
static void sqn_relaxed_conv(const sqn_conv *c, int32_t oc, const int32_t *init, int32_t n, int32_t plane,
                             const int32_t *off)
{
    const int32_t per = c->k * c->k * c->cin;
    int32_t o;
    for (o = 0; o < 4; o++) sqn_relaxed_w[o] = oc + o < c->cout ? c->w + (oc + o) * per : sqn_relaxed_zeros;
    sqn_relaxed_block(init, n, plane, c->cin / 4, off, c->k * c->k);
}

/* the input of a layer whose channels come in fours, as quads (in = 0: already there); -> whether
 * the relaxed kernels take the layer */
static int sqn_relaxed_begin(const sqn_source *src, const void *in)
{
    const sqn_conv *c = src->conv;
    if (!in) return sqn_relaxed_pieces; /* the second expand branch: the first one's input and decision */
    if (c->cin % 4 != 0 || !sqn_relaxed_take(src->wide)) return sqn_relaxed_pieces = 0;
    sqn_relaxed_interleave((const uint8_t *)in, c->cin, src->plane, src->wide);
    return 1;
}

/* conv1's stride-phase images (sqn_wasm_stem_pairs) as quads of raw pixels, padded with the zero points */
static void sqn_relaxed_stem_quads(const sqn_stem *s, const uint8_t *image)
{
    int32_t st = s->stride, pitch = s->row_pitch, sub = pitch * pitch, cin = s->conv.cin, phase, r, col, ch, piece;
    uint8_t *quads = (uint8_t *)(void *)sqn_wasm_pairs;
    for (phase = 0; phase < st * st; phase++) {
        for (r = 0; r < pitch; r++) {
            for (col = 0; col < pitch; col++) {
                int32_t y = st * r + phase / st - s->pad, x = st * col + phase % st - s->pad, p = phase * sub + r * pitch + col;
                int inside = y >= 0 && y < s->in_size && x >= 0 && x < s->in_size;
                for (ch = 0; ch < 4; ch++) {
                    const uint32_t v = ch >= cin ? 0u : inside ? image[(y * s->in_size + x) * cin + ch] : (uint32_t)s->zero[ch];
                    for (piece = 0; piece < sqn_relaxed_pieces; piece++)
                        quads[piece * SQN_WASM_PAIR_ELEMENTS + 4 * p + ch] = sqn_relaxed_piece1(v, piece);
                }
            }
        }
    }
}

/* conv1's output channels oc .. oc + 3 into sqn_wasm_acc: weights as [tap][4 channels], and the
 * products of the zero points taken out of the bias (the quads hold pixels, not pixels minus them) */
static void sqn_relaxed_stem_block(const sqn_stem *s, const sqn_stem_weights *sw, int32_t oc, int32_t n,
                                   int32_t plane, const int32_t *off)
{
    const sqn_conv *c = &s->conv;
    int32_t taps = c->k * c->k, o, t, ch, init[4];
    for (o = 0; o < 4; o++) {
        int8_t *w = (int8_t *)(void *)sqn_wasm_w + 4 * o * taps;
        int32_t zeros = 0;
        for (t = 0; t < taps; t++)
            for (ch = 0; ch < 4; ch++) {
                const int32_t v = sqn_wasm_stem_weight(s, sw, oc + o, ch, t);
                w[4 * t + ch] = (int8_t)v;
                zeros += v * (ch < c->cin ? s->zero[ch] : 0);
            }
        init[o] = oc + o < c->cout ? sqn_bias(c, oc + o) - zeros : 0;
        sqn_relaxed_w[o] = w;
    }
    sqn_relaxed_block(init, n, plane, 1, off, taps);
}
#endif
