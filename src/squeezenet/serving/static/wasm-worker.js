// The page's in-browser model when the server offers the WebAssembly build: a module worker, so
// that the download, the compile and each run keep off the page's thread. Messages in:
// {load: folder URL, id, previous} then {classify: ImageData}; out: {progress}, {ready}, {result},
// {error}. The module and its weight table are kept in the Cache API. When the page held another
// model (previous: its id, build, files and URLs), the worker asks for the update from it instead:
// a model of the same code (one made by `train --update-of`) needs only a byte delta of the weight
// table, and the module it holds runs it; otherwise the module's delta comes too
// (GET /v1/model/wasm-delta). The loader checks both results' SHA-256 against the new card.
const CACHE = "squeezenet-models";
let model = null;

function post(message) {
  self.postMessage(message);
}

async function kept(url) {
  if (!url || !self.caches) return null;
  const response = await (await caches.open(CACHE)).match(url);
  return response ? new Uint8Array(await response.arrayBuffer()) : null;
}

// the files now held (url -> bytes), in place of those held before (previous URLs)
async function keep(files, previousUrls) {
  if (!self.caches) return;
  const cache = await caches.open(CACHE);
  for (const [url, bytes] of Object.entries(files)) await cache.put(url, new Response(bytes));
  for (const url of previousUrls) if (url && !(url in files)) await cache.delete(url);
}

// the kept file `file` of the previous model turned into the new model's: -> {bytes, fetched}
async function patchedFile(previous, file, old) {
  const query = new URLSearchParams({ from: previous.id, file });
  const response = await fetch(`/v1/model/wasm-delta?${query}`);
  if (!response.ok) throw new Error(`the server has no delta of ${file} (HTTP ${response.status})`);
  const delta = new Uint8Array(await response.arrayBuffer());
  const { applyByteDelta } = await import("/static/bytedelta.js");
  return { bytes: await applyByteDelta(old, delta), fetched: delta.length };
}

// -> {card, wasm, table, deltaBytes, moduleKept} from the kept files and the server's deltas; throws,
// saying why, when there is none (nothing kept, no delta, or one that does not apply): the whole
// model is downloaded instead
async function patched(base, previous) {
  const [module, table] = [await kept(previous.url), await kept(previous.tableUrl)];
  if (!module || !table) throw new Error("the page kept no model");
  const card = await (await fetch(new URL("squeezenet.json", base))).json();
  const entry = card.builds && card.builds[previous.build];
  if (!entry || entry.file !== previous.file || !card.table) throw new Error(`the new model has no ${previous.file}`);
  // the same code: the module held is the new model's (the loader checks its SHA-256 all the same)
  const moduleKept = entry.sha256 === previous.sha256;
  const wasm = moduleKept ? { bytes: module, fetched: 0 } : await patchedFile(previous, previous.file, module);
  const weights = await patchedFile(previous, card.table.file, table);
  return { card, wasm: wasm.bytes, table: weights.bytes, deltaBytes: wasm.fetched + weights.fetched, moduleKept };
}

async function load(base, id, previous) {
  const { loadModel } = await import(new URL("squeezenet.js", base));
  const started = performance.now();
  let update = null;
  if (previous && previous.id !== id) {
    // another model before: try the update from it (the same model is loaded as usual, from the cache)
    try {
      const found = await patched(base, previous);
      model = await loadModel(found, { build: previous.build });
      const wholeBytes = model.wasmBytes + model.table.length;
      update = { from: previous.id, deltaBytes: found.deltaBytes, wholeBytes, moduleKept: found.moduleKept };
    } catch (error) {
      update = { from: previous.id, failed: error.message || String(error) };
      model = null;
    }
  }
  if (!model) {
    const loaded = {}; // bytes per file: the bar shows module and table together
    const onProgress = ({ file, loaded: n }) => {
      loaded[file] = n;
      post({ progress: { loaded: Object.values(loaded).reduce((sum, v) => sum + v, 0) } });
    };
    model = await loadModel(base, { onProgress });
  }
  const entry = model.card.builds[model.build];
  const url = new URL(entry.file, base).href;
  const tableUrl = new URL(model.card.table.file, base).href;
  const previousUrls = previous ? [previous.url, previous.tableUrl] : [];
  await keep({ [url]: model.module, [tableUrl]: model.table }, previousUrls).catch(() => {});
  // bytes that crossed the network for the folder's files (module, loader, preprocessing, card)
  const wire = performance
    .getEntriesByType("resource")
    .filter((entry) => entry.name.startsWith(base) || entry.name.includes("/v1/model/wasm-delta"))
    .reduce((sum, entry) => sum + (entry.encodedBodySize || entry.transferSize || 0), 0);
  post({
    ready: {
      build: model.build,
      bytes: model.wasmBytes + model.table.length,
      hashChecked: model.hashChecked,
      scoreScale: model.card.score_scale,
      wire,
      ms: performance.now() - started,
      update,
      kept: { id, build: model.build, file: entry.file, sha256: entry.sha256, url, tableUrl },
    },
  });
}

function classify(image) {
  const started = performance.now();
  const out = model.classify(image, { topk: 5 });
  post({ result: { top: out.top, scores: out.scores, inferenceMs: out.ms, ms: performance.now() - started } });
}

self.onmessage = async ({ data }) => {
  try {
    if (data.load) await load(data.load, data.id, data.previous || null);
    else if (data.classify) classify(data.classify);
  } catch (error) {
    post({ error: error.message || String(error) });
  }
};
