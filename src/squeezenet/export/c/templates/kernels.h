/* ---- runtime, kernels.h: which SIMD kernels run beside the portable loops -------------------
 * The portable loops (portable.c) are always there and run every layer no SIMD set takes. At most
 * one SIMD kernel set is compiled in on top of them, chosen here when the library is compiled,
 * from the compiler's target and the build's storage (each set's macro can also be given: 0 leaves
 * it out). A set is one file (kernels_*.c, emitted after stream.c) that implements, under its
 * macro, the three functions graph.c calls where SQN_SIMD is set:
 *
 *   static void sqn_simd_begin(sqn_source *src, sqn_tables *tb, const void *in);
 *       before a layer's first output channel (its decoder begun on tb): src->simd_in = the layer's
 *       input as the set reads it, or 0 where the set does not take this layer (the portable loops
 *       run it); in = 0: the input is the previous layer's, already prepared
 *   static const int32_t *sqn_simd_outputs(sqn_source *src, int32_t oc, int32_t n, int32_t *m, int *sh);
 *       the accumulators (bias included, n of them) of output channel oc, channels in order, and
 *       its requantization (m, sh)
 *   static int sqn_simd_stem(const sqn_stem *s, const sqn_stem_weights *sw, const uint8_t *image, sqn_st *out);
 *       conv1 and its pool into out, returning 1; or 0 where the set does not take conv1
 *
 * Sets: AVX-512 VNNI (kernels_vnni.c, x86 int8 builds); WebAssembly SIMD128 (kernels_wasm.c, every
 * build for wasm32 with -msimd128, compressed ones included), with the relaxed SIMD dot products of
 * kernels_relaxed.c in int8 builds compiled with -mrelaxed-simd as well. */

/* int8 builds for x86 CPUs with AVX-512 VNNI take the fast path (-DSQN_VNNI=0: never) */
#ifndef SQN_VNNI
#if !SQN_COMPRESSED && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define SQN_VNNI 1
#else
#define SQN_VNNI 0
#endif
#endif

/* builds for WebAssembly with SIMD128 (clang --target=wasm32 -msimd128) take its path (-DSQN_WASM_SIMD=0: never) */
#ifndef SQN_WASM_SIMD
#if defined(__wasm_simd128__)
#define SQN_WASM_SIMD 1
#else
#define SQN_WASM_SIMD 0
#endif
#endif

/* ... and int8 ones with relaxed SIMD (-mrelaxed-simd) its int8 dot products too (-DSQN_WASM_RELAXED=0: never) */
#ifndef SQN_WASM_RELAXED
#if SQN_WASM_SIMD && defined(__wasm_relaxed_simd__) && !SQN_COMPRESSED && !SQN_STEM_COMPRESSED
#define SQN_WASM_RELAXED 1
#else
#define SQN_WASM_RELAXED 0
#endif
#endif

#define SQN_SIMD (SQN_VNNI || SQN_WASM_SIMD)

#if SQN_WASM_SIMD
/* the first columns of one row of sqn_store, eight at a time (kernels_wasm.c); -> how many it did */
static int32_t sqn_simd_store_row(const int32_t *acc, int32_t cols, int32_t m, int n, void *dst, uint32_t top);
/* the first outputs of one row of sqn_pool, from its three input rows; -> how many it did */
static int32_t sqn_simd_pool_row(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, int32_t size, uint8_t *d,
                                 int wide);
#endif
