// Node.js side of tests/test_export_wasm.py: loads an exported folder through its own loader
// (squeezenet.js, by file: URL, as a user in Node.js would) and classifies every crop of a raw
// file of uint8 pixels (N x size x size x C), or RGBA images given as {width, height, file}.
//   node wasm_harness.mjs FOLDER BUILD PIXELS.bin          -> {"scores": [[...], ...], "top1": [...]}
//   (BUILD "default": the loader's choice)
//   node wasm_harness.mjs FOLDER BUILD --rgba W H RGBA.bin -> the same for one RGBA image of any size
//   node wasm_harness.mjs FOLDER BUILD --bad KIND          -> {"error": "..."} (the loader's message)
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

const [folder, build, what, ...rest] = process.argv.slice(2);
const chosen = build === "default" ? undefined : build;
const base = pathToFileURL(folder.endsWith("/") ? folder : folder + "/");
const { loadModel, relaxedSupported, DOTS } = await import(new URL("squeezenet.js", base));

function report(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

try {
  if (what === "--bad") {
    const kind = rest[0];
    const model = kind === "wasm" || kind === "hash" ? null : await loadModel(base, { build: chosen });
    if (kind === "wasm" || kind === "hash") {
      const card = JSON.parse(await readFile(new URL("squeezenet.json", base), "utf8"));
      let bytes = new Uint8Array(await readFile(new URL(card.builds[build].file, base)));
      if (kind === "wasm") {  // not a module, though its hash is the card's
        bytes = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 99]);
        card.builds[build].sha256 = Buffer.from(await crypto.subtle.digest("SHA-256", bytes)).toString("hex");
      } else {
        bytes[bytes.length - 1] ^= 1;  // one bit off: the hash differs from the card's
      }
      await loadModel({ card, wasm: bytes }, { build });
    } else if (kind === "size") {
      model.classify(new Uint8Array(model.inputBytes - 3));
    } else if (kind === "object") {
      model.classify({ hello: "world" });
    } else if (kind === "rgba") {
      model.classify({ data: new Uint8ClampedArray(10), width: 4, height: 4 });
    }
    report({ error: null });
  } else if (what === "--rgba") {
    const [width, height, file] = rest;
    const model = await loadModel(base, { build: chosen });
    const data = new Uint8ClampedArray(await readFile(file));
    const out = model.classify({ data, width: Number(width), height: Number(height) });
    report({ scores: [Array.from(out.scores)], top1: [out.best], names: out.top.map((t) => t.name) });
  } else {
    const model = await loadModel(base, { build: chosen });
    const pixels = new Uint8Array(await readFile(what));
    const n = pixels.length / model.inputBytes;
    const scores = [];
    const top1 = [];
    for (let i = 0; i < n; i++) {
      const out = model.classify(pixels.subarray(i * model.inputBytes, (i + 1) * model.inputBytes));
      scores.push(Array.from(out.scores));
      top1.push(out.best);
    }
    const dots = DOTS[model.exports.squeezenet_dots(-1)];
    report({ scores, top1, build: model.build, dots, relaxed: relaxedSupported(), bytes: model.wasmBytes,
             hashChecked: model.hashChecked });
  }
} catch (error) {
  report({ error: error.message, name: error.name });
}
