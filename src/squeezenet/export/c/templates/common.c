/* ---- runtime, common.c: what every part of the runtime shares (the same for every exported model) ----
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
#if defined(__x86_64__) || defined(__i386__) || defined(__aarch64__) || defined(__ARM_NEON) || defined(__wasm_simd128__)
#define SQN_WIDE 1
#else
#define SQN_WIDE 0
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

/* where the weight table's fields go (table.c): a convolution's from its first field on, a bypass's one */
typedef struct {
    sqn_conv *conv;
    uint16_t field;
    uint8_t compressed;
} sqn_conv_binding;

typedef struct {
    sqn_fire *fire;
    uint16_t field;
} sqn_bypass_binding;

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
