/* ---- runtime, table.c: the weight table the descriptors point into -----------------------------
 * (after the descriptors and the bindings generated with them, sqn_conv_bindings and the SQN_*_FIELD)
 * Every value training changes (weights, biases, codebooks, streams, requantization) is in one table
 * apart from the code (docs/c-export.md, "The weight table"), so that an update replaces the table and
 * never the code. The descriptors hold the architecture; sqn_bind points them into a table after
 * checking every field: inside the table, aligned, of the length the architecture needs, and values
 * the kernels can run (shifts in range, frequency tables that sum to the scale).
 * What it does not check is whether a stream decodes to the weights intended: the table's CRC-32
 * guards against damage, and the update's SHA-256 (checked before the table is handed over) against
 * a wrong one. */
#define SQN_HEADER_BYTES 24u
#define SQN_ANY_DENSE (!SQN_COMPRESSED || !SQN_STEM_COMPRESSED) /* a layer with int8 tables (conv1, or all) */

/* binding runs once per table: where the compiler knows the attribute, it is kept small and off the
 * hot paths (about 10 % of the binder's WebAssembly) */
#if defined(__GNUC__)
#define SQN_COLD __attribute__((cold))
#else
#define SQN_COLD
#endif
#define SQN_PARAMS 6 /* per convolution: bias_shift, entries, codes, gap_alphabet, layer_mult, layer_shift */

static int sqn_bound; /* a table is bound: the descriptors point into it */
static uint32_t sqn_score_scale; /* the bound table's score scale, float32 bits */

static uint32_t sqn_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* zlib's CRC-32, four bits at a time (a 64-byte table: flash matters more than speed here) */
SQN_COLD static uint32_t sqn_crc32(const uint8_t *p, uint32_t n)
{
    static const uint32_t nibble[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
        0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
    };
    uint32_t crc = 0xFFFFFFFFu;
    while (n--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ nibble[crc & 15u];
        crc = (crc >> 4) ^ nibble[crc & 15u];
    }
    return ~crc;
}

/* 0, or why the table t of n bytes is not one this code can bind (SQUEEZENET_TABLE_*) */
SQN_COLD static int sqn_table_header(const uint8_t *t, uint32_t n, int check_crc)
{
    const uint16_t one = 1;
    if (!t || ((uintptr_t)t & 3u)) return SQUEEZENET_TABLE_MISSING;
    if (*(const uint8_t *)&one != 1u || n < SQN_HEADER_BYTES || t[0] != 'S' || t[1] != 'Q' || t[2] != 'N' ||
        t[3] != 'W' || sqn_u32(t + 4) != SQN_TABLE_VERSION)
        return SQUEEZENET_TABLE_NOT_A_TABLE;
    if (sqn_u32(t + 8) != SQN_LAYOUT) return SQUEEZENET_TABLE_OTHER_MODEL;
    if (sqn_u32(t + 12) != n || sqn_u32(t + 16) != SQN_TABLE_FIELDS || n < SQN_HEADER_BYTES + 8u * SQN_TABLE_FIELDS)
        return SQUEEZENET_TABLE_DAMAGED;
    if (check_crc && sqn_crc32(t + SQN_HEADER_BYTES, n - SQN_HEADER_BYTES) != sqn_u32(t + 20))
        return SQUEEZENET_TABLE_DAMAGED;
    return 0;
}

/* field i: its data, if it lies inside the table past the directory, aligned to its elements of
 * size bytes, with count of them (count < 0: any number but none); its count in *got */
SQN_COLD static const uint8_t *sqn_field(const uint8_t *t, uint32_t n, uint32_t i, uint32_t size, int32_t count, uint32_t *got)
{
    uint32_t off = sqn_u32(t + SQN_HEADER_BYTES + 8u * i), items = sqn_u32(t + SQN_HEADER_BYTES + 8u * i + 4u);
    *got = items;
    if (off % size || off < SQN_HEADER_BYTES + 8u * SQN_TABLE_FIELDS || off > n) return 0;
    if (count >= 0 ? items != (uint32_t)count : items == 0u) return 0;
    if (items > (n - off) / size) return 0;
    return t + off;
}

#if SQN_COMPRESSED
/* a varint inside [*t, end), as sqn_varint reads it */
SQN_COLD static int sqn_varint_in(const uint8_t **t, const uint8_t *end, uint32_t *v)
{
    uint32_t bits = 0;
    uint8_t byte;
    *v = 0;
    do {
        if (*t >= end || bits > 28u) return 0;
        byte = *(*t)++;
        *v |= (uint32_t)(byte & 0x7Fu) << bits;
        bits += 7u;
    } while (byte & 0x80u);
    return 1;
}

/* count frequencies that fill the decoder's lookup table exactly (sqn_read_table writes total + j) */
SQN_COLD static int sqn_freqs_fit(const uint8_t **t, const uint8_t *end, int32_t count)
{
    uint32_t total = 0, v;
    int32_t s;
    for (s = 0; s < count; s++) {
        if (!sqn_varint_in(t, end, &v) || v > SQN_PROB_SCALE) return 0;
        total += v;
    }
    return total == SQN_PROB_SCALE;
}

/* a compressed layer's fields from i: its stream's words, then its frequency tables and codebook */
SQN_COLD static int sqn_bind_stream(sqn_conv *c, const uint8_t *t, uint32_t n, uint32_t i, const int32_t *v, int commit)
{
    uint32_t words_n, tables_n, k, z, per = (uint32_t)c->cin * c->k * c->k;
    const uint8_t *words = sqn_field(t, n, i, 2u, -1, &words_n), *tables = sqn_field(t, n, i + 1u, 1u, -1, &tables_n);
    const uint8_t *at = tables, *end = tables + tables_n;
    if (!words || words_n < 2u || !tables || v[1] < 0 || (uint32_t)v[1] > c->cout * per || v[2] < 1 || v[2] > 256 ||
        v[3] < 0 || v[3] == 1 || v[3] > 256 || v[5] < 1 || v[5] > 62)
        return -1;
    if ((v[3] && !sqn_freqs_fit(&at, end, v[3])) || !sqn_freqs_fit(&at, end, v[2])) return -1;
    for (k = 0; k < (uint32_t)v[2]; k++)
        if (!sqn_varint_in(&at, end, &z)) return -1; /* the codebook's zigzag differences */
    if (commit) {
        c->words = (const uint16_t *)(const void *)words;
        c->tables = tables;
        c->entries = (uint32_t)v[1];
        c->codes = (uint16_t)v[2];
        c->gap_alphabet = (uint16_t)v[3];
        c->layer_mult = v[4];
        c->layer_shift = (uint8_t)v[5];
    }
    return 0;
}
#else
SQN_COLD static int sqn_bind_stream(sqn_conv *c, const uint8_t *t, uint32_t n, uint32_t i, const int32_t *v, int commit)
{
    (void)c, (void)t, (void)n, (void)i, (void)v, (void)commit;
    return -1;
}
#endif

#if SQN_ANY_DENSE
/* an int8 layer's fields from i: weights, then per output channel its multiplier and shift */
SQN_COLD static int sqn_bind_dense(sqn_conv *c, const uint8_t *t, uint32_t n, uint32_t i, int commit)
{
    uint32_t got, oc, per = (uint32_t)c->cin * c->k * c->k;
    const uint8_t *w = sqn_field(t, n, i, 1u, (int32_t)(c->cout * per), &got);
    const uint8_t *mult = sqn_field(t, n, i + 1u, 4u, c->cout, &got), *shift = sqn_field(t, n, i + 2u, 1u, c->cout, &got);
    if (!w || !mult || !shift) return -1;
    for (oc = 0; oc < c->cout; oc++)
        if (shift[oc] < 1u || shift[oc] > 62u) return -1;
    if (commit) {
        c->w = (const int8_t *)(const void *)w;
        c->mult = (const int32_t *)(const void *)mult;
        c->shift = shift;
    }
    return 0;
}
#else
SQN_COLD static int sqn_bind_dense(sqn_conv *c, const uint8_t *t, uint32_t n, uint32_t i, int commit)
{
    (void)c, (void)t, (void)n, (void)i, (void)commit;
    return -1;
}
#endif

/* a convolution's fields from i: bias, its weights (dense: three fields, compressed: two), its parameters */
SQN_COLD static int sqn_bind_conv(sqn_conv *c, const uint8_t *t, uint32_t n, uint32_t i, int compressed, int commit)
{
    uint32_t got;
    const uint8_t *bias = sqn_field(t, n, i, 2u, c->cout, &got);
    const uint8_t *p = sqn_field(t, n, i + (compressed ? 3u : 4u), 4u, SQN_PARAMS, &got);
    const int32_t *v = (const int32_t *)(const void *)p;
    if (!bias || !p || v[0] < 0 || v[0] > 16) return -1;
    if (compressed ? sqn_bind_stream(c, t, n, i + 1u, v, commit) : sqn_bind_dense(c, t, n, i + 1u, commit)) return -1;
    if (commit) {
        c->bias = (const int16_t *)(const void *)bias;
        c->bias_shift = (uint8_t)v[0];
    }
    return 0;
}

#if SQN_BYPASSES
/* a Fire's bypass (field i: its multiplier and shift) */
SQN_COLD static int sqn_bind_bypass(sqn_fire *f, const uint8_t *t, uint32_t n, uint32_t i, int commit)
{
    uint32_t got;
    const int32_t *v = (const int32_t *)(const void *)sqn_field(t, n, i, 4u, 2, &got);
    if (!v || v[1] < 1 || v[1] > 62) return -1;
    if (commit) {
        f->bypass_mult = v[0];
        f->bypass_shift = (uint8_t)v[1];
    }
    return 0;
}
#endif

/* points every descriptor into table t of n bytes, whose header sqn_table_header checked (commit 0:
 * only checks) */
SQN_COLD static int sqn_bind(const uint8_t *t, uint32_t n, int commit)
{
    uint32_t got, i;
    const uint8_t *zero = sqn_field(t, n, SQN_ZERO_FIELD, 2u, SQUEEZENET_INPUT_CHANNELS, &got);
    const uint8_t *scale = sqn_field(t, n, SQN_SCALE_FIELD, 4u, 1, &got);
    if (!zero || !scale) return -1;
    for (i = 0; i < SQN_CONVS; i++) {
        const sqn_conv_binding *b = &sqn_conv_bindings[i];
        if (sqn_bind_conv(b->conv, t, n, b->field, b->compressed, commit)) return -1;
    }
#if SQN_BYPASSES
    for (i = 0; i < SQN_BYPASSES; i++)
        if (sqn_bind_bypass(sqn_bypass_bindings[i].fire, t, n, sqn_bypass_bindings[i].field, commit)) return -1;
#endif
    if (commit) {
        sqn_stem_layer.zero = (const int16_t *)(const void *)zero;
        sqn_score_scale = sqn_u32(scale);
    }
    return 0;
}

/* binds t after checking all of it: a table that fails leaves the one bound before in use */
SQN_COLD static int sqn_use(const uint8_t *t, uint32_t n, int check_crc)
{
    int r = sqn_table_header(t, n, check_crc);
    if (r) return r;
    if (sqn_bind(t, n, 0)) return SQUEEZENET_TABLE_BAD_FIELD;
    sqn_bind(t, n, 1);
    sqn_bound = 1;
    return 0;
}

int squeezenet_use_weights(const uint8_t *table, uint32_t bytes) { return sqn_use(table, bytes, 1); }

/* the table linked in (squeezenet_weights.c), bound at the first run: it is part of the firmware
 * image, whose integrity is the boot's job, so its CRC is not recomputed at every start */
#if SQN_LINKED_TABLE
static int sqn_use_linked(void)
{
    return sqn_use((const uint8_t *)(const void *)squeezenet_weight_table, squeezenet_weight_table_bytes, 0);
}
#else
static int sqn_use_linked(void) { return SQUEEZENET_TABLE_MISSING; }
#endif

uint32_t squeezenet_score_scale_bits(void)
{
    if (!sqn_bound) sqn_use_linked();
    return sqn_score_scale;
}
