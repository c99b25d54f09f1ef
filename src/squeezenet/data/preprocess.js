// The server's preprocessing (squeezenet/data/pixels.py, the code build_transform runs too)
// in JavaScript, so that both ways give the same numbers (the page of `squeezenet serve` and the
// loader of `squeezenet export --format wasm` import it): resize with Pillow's own algorithm
// (separable filter, antialiased when shrinking, 8-bit fixed-point coefficients with 22
// fractional bits, rounding and clipping after each pass), centre crop with torchvision's
// offsets, then scale, channel order and normalisation. A canvas resize would not do: its
// filter differs from Pillow's. Every setting comes from the model card (/v1/model), which
// carries the whole Preprocessing: no default here can drift from pixels.py's.

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

const FILTERS = {
  bilinear: { support: 1.0, f: (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; } },
  bicubic: {
    support: 2.0,
    f: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc: for each output pixel, the first input
// pixel it reads and its integer weights.
function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1.0);
  const support = filter.support * filterScale;
  const bounds = [];
  const weights = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const k = new Float64Array(xmax);
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.f((x + xmin - center + 0.5) / filterScale);
      k[x] = w;
      ww += w;
    }
    const ints = new Float64Array(xmax);
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? k[x] / ww : k[x];
      ints[x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds.push(xmin);
    weights.push(ints);
  }
  return { bounds, weights };
}

function clip8(ss) {
  const v = Math.floor(ss / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// One pass along x over an image of `channels` interleaved 8-bit channels (w x h) to `ow` columns.
function horizontal(src, w, h, channels, ow, filter) {
  const { bounds, weights } = coefficients(w, ow, filter);
  const out = new Uint8ClampedArray(ow * h * channels);
  for (let y = 0; y < h; y++) {
    const row = y * w * channels;
    for (let x = 0; x < ow; x++) {
      const k = weights[x];
      const first = row + bounds[x] * channels;
      for (let c = 0; c < channels; c++) {
        let ss = HALF;
        for (let t = 0, i = first + c; t < k.length; t++, i += channels) ss += src[i] * k[t];
        out[(y * ow + x) * channels + c] = clip8(ss);
      }
    }
  }
  return out;
}

// One pass along y (w x h) to `oh` rows.
function vertical(src, w, h, channels, oh, filter) {
  const { bounds, weights } = coefficients(h, oh, filter);
  const stride = w * channels;
  const out = new Uint8ClampedArray(oh * stride);
  for (let y = 0; y < oh; y++) {
    const k = weights[y];
    const first = bounds[y] * stride;
    for (let i = 0; i < stride; i++) {
      let ss = HALF;
      for (let t = 0, j = first + i; t < k.length; t++, j += stride) ss += src[j] * k[t];
      out[y * stride + i] = clip8(ss);
    }
  }
  return out;
}

function resizeNearest(src, w, h, channels, ow, oh) {
  const out = new Uint8ClampedArray(ow * oh * channels);
  for (let y = 0; y < oh; y++) {
    const sy = Math.min(h - 1, Math.trunc((y + 0.5) * (h / oh)));
    for (let x = 0; x < ow; x++) {
      const sx = Math.min(w - 1, Math.trunc((x + 0.5) * (w / ow)));
      for (let c = 0; c < channels; c++) out[(y * ow + x) * channels + c] = src[(sy * w + sx) * channels + c];
    }
  }
  return out;
}

// Image.resize((ow, oh), filter) on interleaved 8-bit pixels: horizontal pass first, as Pillow.
export function resize(src, w, h, channels, ow, oh, interpolation) {
  if (interpolation === "nearest" || interpolation === "nearest-exact") {
    return resizeNearest(src, w, h, channels, ow, oh);
  }
  const filter = FILTERS[interpolation];
  if (!filter) throw new Error(`the page has no ${interpolation} resize: classify on the server`);
  let data = src;
  let cw = w;
  if (ow !== w) {
    data = horizontal(data, w, h, channels, ow, filter);
    cw = ow;
  }
  if (oh !== h) data = vertical(data, cw, h, channels, oh, filter);
  return data;
}

// torchvision's output size: a pair squashes to (h, w), an int sets the shorter side.
export function resizedSize(width, height, resize) {
  if (Array.isArray(resize)) return [resize[1], resize[0]];
  if (width <= height) return [resize, Math.trunc((resize * height) / width)];
  return [Math.trunc((resize * width) / height), resize];
}

// Python's round(): halves to even.
function roundHalfEven(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// pixels.crop_offset: torchvision's CenterCrop start along a side; a crop larger than the
// image pads floor(excess / 2) zeros before it.
function cropOffset(size, crop) {
  return crop > size ? -Math.floor((crop - size) / 2) : roundHalfEven((size - crop) / 2);
}

// RGBA pixels (alpha composited on white, as the server does) -> RGB or L (Pillow's integer formula).
function toChannels(rgba, n, gray) {
  const channels = gray ? 1 : 3;
  const out = new Uint8ClampedArray(n * channels);
  for (let i = 0; i < n; i++) {
    const a = rgba[4 * i + 3];
    let r = rgba[4 * i];
    let g = rgba[4 * i + 1];
    let b = rgba[4 * i + 2];
    if (a !== 255) {
      const f = a / 255;
      r = Math.round(r * f + 255 * (1 - f));
      g = Math.round(g * f + 255 * (1 - f));
      b = Math.round(b * f + 255 * (1 - f));
    }
    if (gray) {
      out[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
    } else {
      out[3 * i] = r;
      out[3 * i + 1] = g;
      out[3 * i + 2] = b;
    }
  }
  return out;
}

// ImageData-like {data (RGBA), width, height} + the card's preprocessing -> the crop's pixels
// before scaling: {pixels: Uint8ClampedArray (crop*crop*C, interleaved, RGB or L: the order of the
// image, not the model's), box: the crop as fractions of the resized image}. What the C and
// WebAssembly exports take (their normalisation is built in).
export function cropPixels(image, pre) {
  const gray = pre.channel_order === "L";
  const channels = gray ? 1 : 3;
  const rgb = toChannels(image.data, image.width * image.height, gray);
  const [nw, nh] = resizedSize(image.width, image.height, pre.resize);
  const resized = resize(rgb, image.width, image.height, channels, nw, nh, pre.interpolation);
  const crop = pre.crop;
  const top = cropOffset(nh, crop);
  const left = cropOffset(nw, crop);
  const pixels = new Uint8ClampedArray(crop * crop * channels);
  for (let y = 0; y < crop; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= nh) continue;
    for (let x = 0; x < crop; x++) {
      const sx = x + left;
      if (sx < 0 || sx >= nw) continue;
      for (let c = 0; c < channels; c++) pixels[(y * crop + x) * channels + c] = resized[(sy * nw + sx) * channels + c];
    }
  }
  return { pixels, box: [left / nw, top / nh, (left + crop) / nw, (top + crop) / nh] };
}

// ImageData-like {data (RGBA), width, height} + the card's preprocessing ->
// {tensor: Float32Array (C*crop*crop), dims: [1, C, crop, crop], box: crop as fractions}.
export function preprocess(image, pre) {
  const { pixels, box } = cropPixels(image, pre);
  const channels = pre.channel_order === "L" ? 1 : 3;
  const crop = pre.crop;
  const scale = pre.pixel_range === 1 ? 255 : 1;
  const order = pre.channel_order === "BGR" ? [2, 1, 0] : channels === 1 ? [0] : [0, 1, 2];
  const { mean, std } = pre;
  const plane = crop * crop;
  const tensor = new Float32Array(channels * plane);
  for (let c = 0; c < channels; c++) {
    const source = order[c];
    for (let i = 0; i < plane; i++) tensor[c * plane + i] = (pixels[i * channels + source] / scale - mean[c]) / std[c];
  }
  return { tensor, dims: [1, channels, crop, crop], box };
}
