/* ---- runtime, graph.c: the layers, in the order squeezenet_run calls them --------------------- */

/* a convolution's accumulators for output channel oc (n of them, bias included) */
static const int32_t *sqn_outputs(sqn_source *src, const sqn_scratch *w, int32_t oc, const void *in, int32_t n,
                                  int32_t *m, int *sh)
{
    int32_t count;
#if SQN_SIMD
    if (src->simd_in) return sqn_simd_outputs(src, oc, n, m, sh);
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

/* a layer's weights (and, where SIMD kernels take the layer, its input as they read it), before its
 * first output channel; in = 0: the input is the previous layer's, already prepared */
static void sqn_start(sqn_source *src, sqn_tables *tb, const void *in)
{
    sqn_begin(src, tb);
#if SQN_SIMD
    sqn_simd_begin(src, tb, in);
#else
    (void)in;
#endif
}

/* conv1 and its pool: by the SIMD kernels where they take it, else row by row */
static void sqn_stem_run(const sqn_stem *s, const sqn_stem_weights *sw, const uint8_t *image, sqn_st *out,
                         int16_t *rows, sqn_st *ring, int32_t *acc)
{
#if SQN_SIMD
    if (sqn_simd_stem(s, sw, image, out)) return;
#endif
    sqn_stem_rows(s, sw, image, out, rows, ring, acc);
}

/* squeeze: 1x1 on an unpadded input (wide: conv1's uint16 output), written into a zero-bordered output */
static void sqn_squeeze(const sqn_conv *c, int32_t size, const void *in, int wide, void *out, const sqn_scratch *w)
{
    int32_t oc, n = size * size, pitch = size + 2, plane = pitch * pitch, i, m;
    int sh;
    sqn_source src;
    sqn_source_at(&src, c, n, size, 0, wide);
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
    sqn_source_at(&src, c, pitch * pitch, pitch, c->k == 1 ? pitch + 1 : 0, SQN_SQUEEZE_MAX > 255);
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
    sqn_source_at(&src, c, n, size, 0, 0);
    sqn_start(&src, w->tables, arena + cl->in);
    for (oc = 0; oc < c->cout; oc++) {
        const int32_t *acc = sqn_outputs(&src, w, oc, arena + cl->in, n, &m, &sh);
        int32_t sum = border * (int32_t)sqn_requant(sqn_bias(c, oc), m, sh);
        for (i = 0; i < n; i++) sum += sqn_requant(acc[i], m, sh);
        scores[oc] = sum;
    }
}
/* ---- end of runtime -------------------------------------------------------------------------- */
