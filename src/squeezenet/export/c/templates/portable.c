/* ---- runtime, portable.c: the plain C loops, which run every layer on every target ---------- */

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
        void *row = top > 255u ? (void *)((uint16_t *)dst + y * dp) : (void *)((uint8_t *)dst + y * dp);
        x = 0;
#if SQN_WASM_SIMD
        x = sqn_simd_store_row(a, cols, m, n, row, top);
#endif
        if (top > 255u) {
            for (; x < cols; x++) ((uint16_t *)row)[x] = (uint16_t)sqn_requant_to(a[x], m, n, top);
        } else {
            for (; x < cols; x++) ((uint8_t *)row)[x] = (uint8_t)sqn_requant_to(a[x], m, n, top);
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

#define SQN_MAX(a, b) ((a) > (b) ? (a) : (b))
/* pool row py from px on: a window that hangs over the edge reads its last row or column again
 * (ceil mode: it takes what is there, and a repeated value cannot change a max) */
#define SQN_POOL_ROW(T)                                                                           \
    do {                                                                                          \
        const T *a0 = (const T *)r0, *a1 = (const T *)r1, *a2 = (const T *)r2;                    \
        T *d = (T *)dst + py * out;                                                               \
        for (; px < out; px++) {                                                                  \
            int32_t x0 = 2 * px, x1 = x0 + 1 < size ? x0 + 1 : x0, x2 = x0 + 2 < size ? x0 + 2 : x1; \
            T a = SQN_MAX(SQN_MAX(a0[x0], a0[x1]), a0[x2]);                                       \
            T b = SQN_MAX(SQN_MAX(a1[x0], a1[x1]), a1[x2]);                                       \
            T c = SQN_MAX(SQN_MAX(a2[x0], a2[x1]), a2[x2]);                                       \
            d[px] = SQN_MAX(SQN_MAX(a, b), c);                                                    \
        }                                                                                         \
    } while (0)

/* 3x3 / 2 max pool, ceil mode (a last window hangs over the edge and takes what is there), on uint8
 * planes or (wide) uint16 ones */
static void sqn_pool(const void *src, int32_t size, void *dst, int wide)
{
    int32_t out = sqn_pool_size(size), py, px, e = wide ? 2 : 1;
    for (py = 0; py < out; py++) {
        const uint8_t *r0 = (const uint8_t *)src + 2 * py * size * e;
        const uint8_t *r1 = 2 * py + 1 < size ? r0 + size * e : r0, *r2 = 2 * py + 2 < size ? r1 + size * e : r1;
        px = 0;
#if SQN_WASM_SIMD
        px = sqn_simd_pool_row(r0, r1, r2, size, (uint8_t *)dst + py * out * e, wide);
#endif
        if (wide)
            SQN_POOL_ROW(uint16_t);
        else
            SQN_POOL_ROW(uint8_t);
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
