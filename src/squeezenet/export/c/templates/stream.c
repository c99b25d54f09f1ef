/* ---- runtime, stream.c: a layer's weights, one output channel at a time -> entries -----------
 * int8 storage reads the dense tables; compressed storage decodes the layer's rANS stream (12-bit
 * probabilities, 16-bit words, one state), which carries over from one channel to the next. */
typedef struct {
    const sqn_conv *conv;
    int32_t plane, pitch, base; /* input plane size, row pitch, offset of tap (0, 0) */
    int32_t flat;               /* offsets are the weights' positions within the channel (conv1) */
    int32_t wide;               /* the input is uint16 (a wide conv1 or squeeze output) */
    uint32_t next;              /* compressed: flat position of the next weight */
#if SQN_SIMD
    const uint8_t *simd_in; /* the input as the SIMD kernels read it (kernels.h), or 0: the portable loops */
#endif
#if SQN_COMPRESSED
    uint32_t x, left;
    const uint16_t *p;
#endif
} sqn_source;

/* a layer's input geometry; sqn_begin sets the decoder's state, sqn_simd_begin the SIMD input */
static void sqn_source_at(sqn_source *src, const sqn_conv *c, int32_t plane, int32_t pitch, int32_t base, int32_t wide)
{
    src->conv = c;
    src->plane = plane;
    src->pitch = pitch;
    src->base = base;
    src->flat = 0;
    src->wide = wide;
}

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

/* the arena's scratch for the portable loops: accumulators, one channel's entries, the decoding tables */
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
    sqn_source_at(&src, c, 0, 0, 0, 0);
    src.flat = 1;
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
