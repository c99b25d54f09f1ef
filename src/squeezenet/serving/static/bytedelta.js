// Applies a byte delta of the page's WebAssembly model (serving/bytedelta.py writes them; the
// format is there): the new module from the one the page holds, its SHA-256 checked. Every
// failure is an Error with one line, and the page then downloads the whole module.
const MAGIC = [0x53, 0x51, 0x42, 0x44]; // "SQBD"
const HEADER = 4 + 2 + 4 + 4 + 32 + 32;

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

function equal(a, b) {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

async function inflateRaw(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export async function applyByteDelta(old, delta) {
  const d = new Uint8Array(delta);
  if (d.length < HEADER || !MAGIC.every((v, i) => d[i] === v)) throw new Error("not a byte delta (bad magic)");
  const view = new DataView(d.buffer, d.byteOffset, d.byteLength);
  if (view.getUint16(4, true) !== 1) throw new Error(`unsupported byte delta version ${view.getUint16(4, true)}`);
  const oldLength = view.getUint32(6, true);
  const newLength = view.getUint32(10, true);
  const oldSha = d.subarray(14, 46);
  const newSha = d.subarray(46, 78);
  if (old.length !== oldLength || !equal(await sha256(old), oldSha)) {
    throw new Error("this delta applies to another module than the one the page holds");
  }
  const ops = await inflateRaw(d.subarray(HEADER));
  const out = new Uint8Array(newLength);
  let pos = 0;
  let at = 0;
  let expected = 0;
  const varint = () => {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (pos >= ops.length || scale > 2 ** 49) throw new Error("damaged byte delta (ends early)");
      const byte = ops[pos++];
      value += (byte & 0x7f) * scale;
      scale *= 128;
      if (!(byte & 0x80)) return value;
    }
  };
  for (;;) {
    let n = varint();
    if (pos + n > ops.length || at + n > newLength) throw new Error("damaged byte delta (literal out of range)");
    out.set(ops.subarray(pos, pos + n), at);
    pos += n;
    at += n;
    n = varint();
    if (n === 0) break;
    const z = varint();
    const offset = expected + (z % 2 ? -(z + 1) / 2 : z / 2);
    if (offset < 0 || offset + n > old.length || at + n > newLength) throw new Error("damaged byte delta (copy out of range)");
    out.set(old.subarray(offset, offset + n), at);
    at += n;
    expected = offset + n;
  }
  if (at !== newLength || !equal(await sha256(out), newSha)) throw new Error("the patched module is not the one the delta names");
  return out;
}
