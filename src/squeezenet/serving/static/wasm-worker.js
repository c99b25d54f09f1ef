// The page's in-browser model when the server offers the WebAssembly build: a module worker, so
// that the download, the compile and each run keep off the page's thread. Messages in:
// {load: folder URL} then {classify: ImageData}; out: {progress}, {ready}, {result}, {error}.
let model = null;

function post(message) {
  self.postMessage(message);
}

async function load(base) {
  const { loadModel } = await import(new URL("squeezenet.js", base));
  const started = performance.now();
  model = await loadModel(base, { onProgress: (progress) => post({ progress }) });
  // bytes that crossed the network for the folder's files (module, loader, preprocessing, card)
  const wire = performance
    .getEntriesByType("resource")
    .filter((entry) => entry.name.startsWith(base))
    .reduce((sum, entry) => sum + (entry.encodedBodySize || entry.transferSize || 0), 0);
  post({
    ready: {
      build: model.build,
      bytes: model.wasmBytes,
      hashChecked: model.hashChecked,
      scoreScale: model.card.score_scale,
      wire,
      ms: performance.now() - started,
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
    if (data.load) await load(data.load);
    else if (data.classify) classify(data.classify);
  } catch (error) {
    post({ error: error.message || String(error) });
  }
};
