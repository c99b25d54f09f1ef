/* ---- runtime, kernels_vnni.c: the x86 fast path, AVX-512 VNNI (a SIMD set of kernels.h) -------
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
    sqn_vnni_block(init, n, src->simd_in, src->plane, c->cin / (src->wide ? 2 : 4), off, k * k, w, src->wide);
}

/* the layer's input as quads (pairs for a wide input), when its channels come in groups and its
 * kernel is at most 3x3; in = 0: the buffer already holds it (the second expand branch reads what
 * the first did) */
static void sqn_simd_begin(sqn_source *src, sqn_tables *tb, const void *in)
{
    const sqn_conv *c = src->conv;
    (void)tb;
    src->simd_in = c->cin % (src->wide ? 2 : 4) == 0 && c->k <= 3 ? sqn_vnni_quads : 0;
    if (!src->simd_in || !in) return;
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

/* four output channels per pass: the first of each four computes them, the other three read them */
static const int32_t *sqn_simd_outputs(sqn_source *src, int32_t oc, int32_t n, int32_t *m, int *sh)
{
    *m = src->conv->mult[oc];
    *sh = src->conv->shift[oc];
    if (oc % 4 == 0) sqn_vnni_conv(src, oc, n);
    return sqn_vnni_acc + (oc % 4) * SQN_VNNI_ACC_PITCH;
}

/* quads hold at most four input channels */
static int sqn_simd_stem(const sqn_stem *s, const sqn_stem_weights *sw, const uint8_t *image, sqn_st *out)
{
    if (s->conv.cin > 4) return 0;
    sqn_stem_vnni(s, sw, image, out);
    return 1;
}
#endif
