// Node.js side of tests/test_export_wasm.py: loads an exported folder through its own loader
// (squeezenet.js, by file: URL, as a user in Node.js would) and classifies every crop of a raw
// file of uint8 pixels (N x size x size x C), or RGBA images given as {width, height, file}.
//   node wasm_harness.mjs FOLDER BUILD PIXELS.bin          -> {"scores": [[...], ...], "top1": [...]}
//   (BUILD "default": the loader's choice)
//   node wasm_harness.mjs FOLDER BUILD --rgba W H RGBA.bin -> the same for one RGBA image of any size
//   node wasm_harness.mjs FOLDER BUILD --bad KIND          -> {"error": "..."} (the loader's message)
//   node wasm_harness.mjs FOLDER BUILD --table T.bin PIXELS.bin -> the scores with the card's table replaced
//   by T.bin (its SHA-256 written into the card): a table made for the module, or refused in one line
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

const [folder, build, what, ...rest] = process.argv.slice(2);
const chosen = build === "default" ? undefined : build;
const base = pathToFileURL(folder.endsWith("/") ? folder : folder + "/");
const { loadModel, relaxedSupported, DOTS } = await import(new URL("squeezenet.js", base));
const sha256 = async (bytes) => Buffer.from(await crypto.subtle.digest("SHA-256", bytes)).toString("hex");

// the folder's card, module and table from disk, as loadModel({card, wasm, table}) takes them
async function inMemory(name) {
  const card = JSON.parse(await readFile(new URL("squeezenet.json", base), "utf8"));
  const wasm = new Uint8Array(await readFile(new URL(card.builds[name].file, base)));
  return { card, wasm, table: new Uint8Array(await readFile(new URL(card.table.file, base))) };
}

function classifyAll(model, pixels) {
  const scores = [];
  const top1 = [];
  for (let i = 0; i < pixels.length / model.inputBytes; i++) {
    const out = model.classify(pixels.subarray(i * model.inputBytes, (i + 1) * model.inputBytes));
    scores.push(Array.from(out.scores));
    top1.push(out.best);
  }
  return { scores, top1 };
}

function report(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

try {
  if (what === "--bad") {
    const kind = rest[0];
    const files = ["wasm", "hash", "table-hash", "table-damaged"].includes(kind);
    const model = files ? null : await loadModel(base, { build: chosen });
    if (files) {
      const source = await inMemory(build);
      if (kind === "wasm") {  // not a module, though its hash is the card's
        source.wasm = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 99]);
        source.card.builds[build].sha256 = await sha256(source.wasm);
      } else if (kind === "hash") {
        source.wasm[source.wasm.length - 1] ^= 1;  // one bit off: the hash differs from the card's
      } else {
        source.table[source.table.length - 1] ^= 1;  // the table's last byte: its CRC-32 no longer matches
        if (kind === "table-damaged") source.card.table.sha256 = await sha256(source.table);
      }
      await loadModel(source, { build });
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
  } else if (what === "--table") {
    const source = await inMemory(build);
    source.table = new Uint8Array(await readFile(rest[0]));
    source.card.table.sha256 = await sha256(source.table);
    const model = await loadModel(source, { build });
    report(classifyAll(model, new Uint8Array(await readFile(rest[1]))));
  } else {
    const model = await loadModel(base, { build: chosen });
    const { scores, top1 } = classifyAll(model, new Uint8Array(await readFile(what)));
    const dots = DOTS[model.exports.squeezenet_dots(-1)];
    report({ scores, top1, build: model.build, dots, relaxed: relaxedSupported(), bytes: model.wasmBytes,
             hashChecked: model.hashChecked });
  }
} catch (error) {
  report({ error: error.message, name: error.name });
}
