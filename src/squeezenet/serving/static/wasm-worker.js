// The page's in-browser model when the server offers the WebAssembly build: a module worker, so
// that the download, the compile and each run keep off the page's thread. Messages in:
// {load: folder URL, id, previous} then {classify: ImageData}; out: {progress}, {ready}, {result},
// {error}. The module is kept in the Cache API; when the page held another model (previous: its
// id, build, file and URL), the worker first asks for the byte delta from that module to this one
// (GET /v1/model/wasm-delta), patches the kept bytes and lets the loader check their SHA-256
// against the new card: an update costs the bytes that changed, not the whole module.
const CACHE = "squeezenet-models";
let model = null;

function post(message) {
  self.postMessage(message);
}

async function keptModule(url) {
  if (!url || !self.caches) return null;
  const response = await (await caches.open(CACHE)).match(url);
  return response ? new Uint8Array(await response.arrayBuffer()) : null;
}

async function keep(url, bytes, previousUrl) {
  if (!self.caches) return;
  const cache = await caches.open(CACHE);
  await cache.put(url, new Response(bytes, { headers: { "Content-Type": "application/wasm" } }));
  if (previousUrl && previousUrl !== url) await cache.delete(previousUrl);
}

// -> {card, wasm, deltaBytes} from the kept module and the server's byte delta; throws, saying why,
// when there is none (no kept module, no delta, or one that does not apply): the whole module is
// downloaded instead
async function patched(base, previous) {
  const old = await keptModule(previous.url);
  if (!old) throw new Error("the page kept no module");
  const query = new URLSearchParams({ from: previous.id, file: previous.file });
  const response = await fetch(`/v1/model/wasm-delta?${query}`);
  if (!response.ok) throw new Error(`the server has no delta (HTTP ${response.status})`);
  const delta = new Uint8Array(await response.arrayBuffer());
  const { applyByteDelta } = await import("/static/bytedelta.js");
  const card = await (await fetch(new URL("squeezenet.json", base))).json();
  const entry = card.builds && card.builds[previous.build];
  if (!entry || entry.file !== previous.file) throw new Error(`the new model has no ${previous.file}`);
  return { card, wasm: await applyByteDelta(old, delta), deltaBytes: delta.length };
}

async function load(base, id, previous) {
  const { loadModel } = await import(new URL("squeezenet.js", base));
  const started = performance.now();
  let update = null;
  if (previous && previous.id !== id) {
    // another model before: try the update from it (the same model is loaded as usual, from the cache)
    try {
      const found = await patched(base, previous);
      model = await loadModel({ card: found.card, wasm: found.wasm }, { build: previous.build });
      update = { from: previous.id, deltaBytes: found.deltaBytes, moduleBytes: model.wasmBytes };
    } catch (error) {
      update = { from: previous.id, failed: error.message || String(error) };
      model = null;
    }
  }
  if (!model) model = await loadModel(base, { onProgress: (progress) => post({ progress }) });
  const file = model.card.builds[model.build].file;
  const url = new URL(file, base).href;
  await keep(url, model.module, previous && previous.url).catch(() => {});
  // bytes that crossed the network for the folder's files (module, loader, preprocessing, card)
  const wire = performance
    .getEntriesByType("resource")
    .filter((entry) => entry.name.startsWith(base) || entry.name.includes("/v1/model/wasm-delta"))
    .reduce((sum, entry) => sum + (entry.encodedBodySize || entry.transferSize || 0), 0);
  post({
    ready: {
      build: model.build,
      bytes: model.wasmBytes,
      hashChecked: model.hashChecked,
      scoreScale: model.card.score_scale,
      wire,
      ms: performance.now() - started,
      update,
      kept: { id, build: model.build, file, url },
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
