/* The WebAssembly build's entry points (squeezenet export --format wasm): the generated C takes
 * pointers, but a WebAssembly host only sees numbers and one linear memory, so the image and the
 * scores live in static buffers whose addresses the loader asks for, and the model's shape is
 * readable from the module itself (the loader checks it against the model card). No C library:
 * the build is -nostdlib, and -mbulk-memory turns the compiler's memset/memcpy into
 * memory.fill/memory.copy instructions. */
#include "squeezenet_model.h"

static uint8_t sqn_wasm_image[SQUEEZENET_INPUT_SIZE * SQUEEZENET_INPUT_SIZE * SQUEEZENET_INPUT_CHANNELS];
static int32_t sqn_wasm_scores[SQUEEZENET_NUM_CLASSES];

uint8_t *squeezenet_image(void) { return sqn_wasm_image; }
int32_t *squeezenet_scores(void) { return sqn_wasm_scores; }
int32_t squeezenet_input_size(void) { return SQUEEZENET_INPUT_SIZE; }
int32_t squeezenet_input_channels(void) { return SQUEEZENET_INPUT_CHANNELS; }
int32_t squeezenet_num_classes(void) { return SQUEEZENET_NUM_CLASSES; }

/* the top-1 class of the image in squeezenet_image(); the scores in squeezenet_scores(); -2 before a
 * weight table is bound */
int32_t squeezenet_classify(void) { return squeezenet_run(sqn_wasm_image, sqn_wasm_scores); }

/* The weights are not in the module (built with SQN_LINKED_TABLE 0): the loader grows the memory past
 * __heap_base (where the linker ends the data and the stack), writes the table (squeezenet_weights.bin)
 * at squeezenet_table() and binds it with squeezenet_use_table, which returns squeezenet_use_weights's
 * result. A model fine-tuned from this one (the same code) is then a new table, not a new module. */
extern unsigned char __heap_base;
uint8_t *squeezenet_table(void) { return (uint8_t *)(((uintptr_t)&__heap_base + 15u) & ~(uintptr_t)15u); }
int32_t squeezenet_use_table(uint32_t bytes) { return squeezenet_use_weights(squeezenet_table(), bytes); }

/* the products the convolutions run on: 0 the portable loops, 1 i32x4.dot_i16x8_s, 2 relaxed SIMD on
 * 7-bit pieces, 3 relaxed SIMD on bytes (where the engine multiplies them exactly); request one of
 * 1-3 to switch where this build and engine have it, or -1 to ask. The scores are the same in each. */
#if defined(__wasm_simd128__)
int32_t sqn_wasm_dots(int32_t request);
int32_t squeezenet_dots(int32_t request) { return sqn_wasm_dots(request); }
#else
int32_t squeezenet_dots(int32_t request) { return (void)request, 0; }
#endif
