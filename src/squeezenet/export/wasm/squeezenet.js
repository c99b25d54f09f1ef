// Runs a SqueezeNet of `squeezenet export --format wasm` (module and weight table; docs/wasm.md) in
// browsers, Workers, Node.js. Needs only preprocess.js (the server's resize and crop).
import { cropPixels } from "./preprocess.js";

export class SqueezeNetError extends Error {
  constructor(message) {
    super(message);
    this.name = "SqueezeNetError";
  }
}

// (module (func (result v128) ...)) of i8x16.splat then i8x16.popcnt (SIMD128) or a relaxed dot
const SPLAT = [65, 0, 253, 15];
function valid(body) {
  try {
    const head = [0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10];
    return WebAssembly.validate(new Uint8Array([...head, body.length + 4, 1, body.length + 2, 0, ...body, 11]));
  } catch {
    return false;
  }
}
export const simdSupported = () => valid([...SPLAT, 253, 98]);
export const relaxedSupported = () => valid([...SPLAT, ...SPLAT, ...SPLAT, 253, 147, 2]);

// the products the kernels run on, by squeezenet_dots's mode number (docs/wasm.md)
export const DOTS = ["portable", "i16", "i7", "u8"];

const EXPORTS = [
  "memory", "squeezenet_classify", "squeezenet_image", "squeezenet_scores", "squeezenet_input_size",
  "squeezenet_input_channels", "squeezenet_num_classes", "squeezenet_dots", "squeezenet_table", "squeezenet_use_table",
];
// squeezenet_use_weights's refusals (squeezenet_model.h)
const REFUSED = ["", "missing", "not a weight table", "made for another model's code", "damaged (length or CRC-32)",
  "has a field this code cannot run"];

// SHA-256 where the host has Web Crypto (secure contexts, Node.js), else null
async function sha256(bytes) {
  const subtle = globalThis.crypto?.subtle;
  const hex = (b) => b.toString(16).padStart(2, "0");
  return subtle ? Array.from(new Uint8Array(await subtle.digest("SHA-256", bytes)), hex).join("") : null;
}

async function fetchOk(url, what) {
  try {
    // Node.js's fetch takes no file: URLs; its file system does
    if (url.protocol === "file:") return new Response(await (await import("node:fs/promises")).readFile(url));
    const response = await fetch(url);
    if (response.ok) return response;
    throw new Error(`HTTP ${response.status}`);
  } catch (error) {
    throw new SqueezeNetError(`cannot fetch the ${what} ${url}: ${error.message}`);
  }
}

// the body, telling onProgress({loaded, total})
async function readBytes(response, onProgress) {
  const total = Number(response.headers.get("content-length")) || null;
  if (!response.body || !onProgress) return new Uint8Array(await response.arrayBuffer());
  const chunks = [];
  let loaded = 0;
  for (const reader = response.body.getReader(); ; ) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.byteLength;
    onProgress({ loaded, total });
  }
  return new Uint8Array(await new Blob(chunks).arrayBuffer());
}

function checkCard(card) {
  if (!card || card.format !== "squeezenet-wasm") {
    throw new SqueezeNetError("not a model card of `squeezenet export --format wasm`");
  }
  if (card.version !== 2) throw new SqueezeNetError(`model card version ${card.version}: this loader reads version 2`);
}

async function checked(bytes, entry) {
  const digest = await sha256(bytes);
  if (digest !== null && digest !== entry.sha256) {
    throw new SqueezeNetError(`${entry.file}: SHA-256 ${digest.slice(0, 12)} is not the model card's ${entry.sha256.slice(0, 12)}`);
  }
  return digest !== null;
}

// source: the folder's URL, or {card, wasm, table} (wasm: options.build's bytes). options: build (relaxed,
// simd, portable; default: the first the card has and the engine runs), onProgress({file, loaded, total}).
// Every failure is a SqueezeNetError with one line.
export async function loadModel(source, options = {}) {
  const inMemory = source && typeof source === "object" && !(source instanceof URL) && "card" in source;
  const base = inMemory ? null : new URL(source || "./", globalThis.location?.href);
  const card = inMemory
    ? source.card
    : await (await fetchOk(new URL("squeezenet.json", base), "model card")).json().catch(() => null);
  checkCard(card);
  const runs = { relaxed: relaxedSupported, simd: simdSupported, portable: () => true };
  const build = options.build || Object.keys(runs).find((b) => card.builds?.[b] && runs[b]());
  const entry = card.builds?.[build];
  if (!entry) throw new SqueezeNetError(`the model card has no ${build} build`);
  const read = async (file, what) => {
    const progress = options.onProgress;
    return readBytes(await fetchOk(new URL(file, base), what), progress && ((p) => progress({ file, ...p })));
  };
  const bytes = inMemory ? new Uint8Array(source.wasm) : await read(entry.file, "module");
  const table = inMemory ? new Uint8Array(source.table) : await read(card.table.file, "weight table");
  const hashChecked = (await checked(bytes, entry)) && (await checked(table, card.table));
  let instance;
  try {
    ({ instance } = await WebAssembly.instantiate(bytes, {}));
  } catch (error) {
    throw new SqueezeNetError(`${entry.file} does not compile or instantiate here: ${error.message}`);
  }
  return new SqueezeNetModel(instance.exports, card, { build, module: bytes, table, hashChecked });
}

function isDecodedImage(input) {
  const kinds = ["ImageBitmap", "HTMLImageElement", "HTMLCanvasElement", "OffscreenCanvas", "VideoFrame", "SVGImageElement"];
  return kinds.some((kind) => typeof globalThis[kind] === "function" && input instanceof globalThis[kind]);
}

const describe = (input) => (input == null ? String(input) : input.constructor ? input.constructor.name : typeof input);

export class SqueezeNetModel {
  constructor(exports, card, facts) {
    const missing = EXPORTS.filter((name) => !(name in exports));
    if (missing.length) throw new SqueezeNetError(`the module lacks ${missing.join(", ")}: not a squeezenet build`);
    this.exports = exports;
    this.card = card;
    this.build = facts.build;
    this.module = facts.module; // checked bytes, for a page that keeps them to patch
    this.table = facts.table;
    this.wasmBytes = facts.module.byteLength;
    this.hashChecked = facts.hashChecked;
    this.dots = DOTS[exports.squeezenet_dots(-1)];
    this.size = exports.squeezenet_input_size();
    this.channels = exports.squeezenet_input_channels();
    this.numClasses = exports.squeezenet_num_classes();
    const shape = [card.input_size, card.input_channels, card.num_classes];
    if (shape.join() !== [this.size, this.channels, this.numClasses].join()) {
      throw new SqueezeNetError(`the module's shape ${[this.size, this.channels, this.numClasses]} is not the card's ${shape}`);
    }
    this.bind(facts.table);
  }

  // writes the table past the module's data and stack, and binds it
  bind(table) {
    const { memory } = this.exports;
    const at = this.exports.squeezenet_table();
    const short = at + table.length - memory.buffer.byteLength;
    if (short > 0) memory.grow(Math.ceil(short / 65536));
    new Uint8Array(memory.buffer, at, table.length).set(table);
    const code = this.exports.squeezenet_use_table(table.length);
    if (code) throw new SqueezeNetError(`${this.card.table.file}: ${REFUSED[-code] || `refused (${code})`}`);
  }

  get inputBytes() {
    return this.size * this.size * this.channels;
  }

  // the crop's pixels from: cropped pixels (RGB or gray); an ImageData-like {data (RGBA), width, height},
  // resized and cropped as the card says; a decoded image
  pixels(input) {
    if (input instanceof Uint8Array || input instanceof Uint8ClampedArray) {
      if (input.length !== this.inputBytes) {
        throw new SqueezeNetError(
          `expected ${this.inputBytes} bytes (${this.size}x${this.size} pixels, ${this.channels} channel(s)), got ${input.length}: ` +
            "pass an ImageData to have it resized and cropped",
        );
      }
      return input;
    }
    if (isDecodedImage(input)) input = this.imageData(input);
    if (input && input.data && Number.isInteger(input.width) && Number.isInteger(input.height)) {
      if (input.width < 1 || input.height < 1 || input.data.length !== input.width * input.height * 4) {
        throw new SqueezeNetError(`not RGBA pixels: ${input.width}x${input.height} with ${input.data.length} bytes`);
      }
      return cropPixels(input, this.card.preprocessing).pixels;
    }
    throw new SqueezeNetError(`not an image: expected pixels (Uint8Array), an ImageData or a decoded image, got ${describe(input)}`);
  }

  imageData(image) {
    const width = image.naturalWidth || image.displayWidth || image.width;
    const height = image.naturalHeight || image.displayHeight || image.height;
    if (typeof OffscreenCanvas !== "function") throw new SqueezeNetError("decoding needs OffscreenCanvas: pass an ImageData");
    if (!width || !height) throw new SqueezeNetError("the image has no pixels (not loaded, or broken)");
    const context = new OffscreenCanvas(width, height).getContext("2d");
    context.drawImage(image, 0, 0);
    return context.getImageData(0, 0, width, height);
  }

  // -> {best, top: [{index, name, score (the fp32 logit), integer}], scores (Int32Array), ms}
  classify(input, { topk = 5 } = {}) {
    const pixels = this.pixels(input);
    const memory = this.exports.memory.buffer;
    new Uint8Array(memory, this.exports.squeezenet_image(), this.inputBytes).set(pixels);
    const start = performance.now();
    const best = this.exports.squeezenet_classify();
    const ms = performance.now() - start;
    const scores = new Int32Array(memory, this.exports.squeezenet_scores(), this.numClasses).slice();
    const order = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b);
    const top = order.slice(0, Math.max(1, Math.min(topk, this.numClasses))).map((index) => ({
      index,
      name: this.card.classes[index],
      score: scores[index] * this.card.score_scale,
      integer: scores[index],
    }));
    return { best, top, scores, ms };
  }
}
