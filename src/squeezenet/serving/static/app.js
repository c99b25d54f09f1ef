// The page of `squeezenet serve`: pick, drop, paste or photograph an image; the top-5 as bars;
// the class-activation map of the top class over the image; the model card; and a switch that
// downloads the model once and classifies in the browser: the WebAssembly build of the integer C
// export (in a worker; about the .sqz's size, no runtime) or the fp32 graph in onnxruntime-web.
import { preprocess } from "./preprocess.js";

const $ = (id) => document.getElementById(id);
const state = { card: null, blob: null, bitmap: null, browser: null, loadingBrowser: null, result: null };

// ------------------------------------------------------------------ formatting
const number = (n) => Number(n).toLocaleString("en-US");
function bytes(n) {
  if (n == null) return "—";
  const unit = n >= 1 << 20 ? [1 << 20, "MiB"] : [1 << 10, "KiB"];
  return `${number(n)} bytes (${(n / unit[0]).toFixed(n >= 1 << 20 ? 2 : 0)} ${unit[1]})`;
}
const ms = (v) => `${v.toFixed(1)} ms`;
const pct = (p) => `${(100 * p).toFixed(p >= 0.1 ? 1 : 2)} %`;

function preprocessingSummary(pre) {
  const resize = Array.isArray(pre.resize) ? `squash to ${pre.resize[1]}x${pre.resize[0]}` : `shorter side to ${pre.resize}`;
  const range = pre.pixel_range === 1 ? "[0, 1]" : "[0, 255]";
  return `${resize}, centre crop ${pre.crop}, ${pre.channel_order} ${range}, mean (${pre.mean.join(", ")}), std (${pre.std.join(", ")}), ${pre.interpolation}`;
}

// ------------------------------------------------------------------ the model card
async function loadCard() {
  const response = await fetch("/v1/model");
  state.card = await response.json();
  const c = state.card;
  $("model-line").textContent = `${c.arch} · ${c.file} · ${bytes(c.file_bytes)} · model ${c.id}`;
  const browser = c.browser || {};
  const rows = [
    ["model id", c.id],
    ["weights SHA-256", c.sha256],
    ["architecture", c.arch],
    ["weights file", `${c.file} (${c.format})`],
    ["file size", bytes(c.file_bytes)],
    ["parameters", number(c.parameters)],
    ["classes", `${number(c.num_classes)}${c.wnids && c.wnids.length ? " (ImageNet wnids)" : ""}`],
    ["input", `${c.in_chans} x ${c.input_size} x ${c.input_size}`],
    ["preprocessing", preprocessingSummary(c.preprocessing)],
    ["licence", c.license || "—"],
    ["server engine", c.engine],
    ["in-browser model", browser.format === "none" ? "none" : `${browser.format}, ${bytes(browser.bytes)}`],
    ["loaded", `${c.loaded_at} (live updates so far: ${c.swaps})`],
  ];
  const table = $("card");
  table.replaceChildren(
    ...rows.map(([k, v]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      const td = document.createElement("td");
      th.textContent = k;
      td.textContent = v;
      tr.append(th, td);
      return tr;
    }),
  );
}

// ------------------------------------------------------------------ drawing
function jet(t) {
  const r = Math.min(1, Math.max(0, 1.5 - Math.abs(4 * t - 3)));
  const g = Math.min(1, Math.max(0, 1.5 - Math.abs(4 * t - 2)));
  const b = Math.min(1, Math.max(0, 1.5 - Math.abs(4 * t - 1)));
  return [255 * r, 255 * g, 255 * b];
}

function draw() {
  const canvas = $("view");
  const ctx = canvas.getContext("2d");
  const bitmap = state.bitmap;
  if (!bitmap) {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    return;
  }
  const scale = Math.min(448 / bitmap.width, 448 / bitmap.height);
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const cam = state.result && state.result.cam;
  if (!cam || !$("show-cam").checked) return;
  const [h, w] = cam.size;
  const small = document.createElement("canvas");
  small.width = w;
  small.height = h;
  const pixels = small.getContext("2d").createImageData(w, h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const t = cam.values[y][x] / 255;
      const [r, g, b] = jet(t);
      pixels.data.set([r, g, b, 40 + 170 * t], 4 * (y * w + x));
    }
  }
  small.getContext("2d").putImageData(pixels, 0, 0);
  const [l, t, r, b] = cam.box;
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(small, l * canvas.width, t * canvas.height, (r - l) * canvas.width, (b - t) * canvas.height);
}

function show(result, engine) {
  state.result = result;
  const top = result.top;
  $("top1").textContent = top[0].name;
  $("engine").textContent = engine;
  $("top5").replaceChildren(
    ...top.map((entry) => {
      const li = document.createElement("li");
      li.dataset.index = entry.index;
      const name = document.createElement("span");
      name.textContent = entry.name;
      if (entry.wnid) {
        const wnid = document.createElement("span");
        wnid.className = "wnid";
        wnid.textContent = ` ${entry.wnid}`;
        name.append(wnid);
      }
      const prob = document.createElement("span");
      prob.className = "prob";
      prob.textContent = pct(entry.probability);
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.max(0.5, 100 * entry.probability)}%`;
      li.append(name, prob, bar);
      return li;
    }),
  );
  draw();
}

// ------------------------------------------------------------------ the server
async function classifyOnServer() {
  const started = performance.now();
  // no topk: the server's five, or all classes of a model with fewer (the card the page holds may
  // be of the model before a swap)
  const response = await fetch("/v1/classify?cam=true", {
    method: "POST",
    headers: { "Content-Type": state.blob.type || "application/octet-stream" },
    body: state.blob,
  });
  const body = await response.json();
  const elapsed = performance.now() - started;
  if (!response.ok) throw new Error(`server: ${body.error ? body.error.message : response.statusText}`);
  if (state.card && body.model.id !== state.card.id) await loadCard(); // a live update happened
  $("latency-server").textContent = `${ms(elapsed)} round trip (server: ${ms(body.timing.total_ms)}, batch of ${body.timing.batch_size})`;
  return { top: body.top, cam: body.cam || null, modelId: body.model.id, ms: elapsed };
}

// ------------------------------------------------------------------ the browser
function status(text) {
  $("browser-status").textContent = text;
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    if (window.ort) return resolve();
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.append(script);
  });
}

// Bytes that crossed the network (compressed bodies) for the resources whose URL contains `part`.
function wireBytes(part) {
  return performance
    .getEntriesByType("resource")
    .filter((e) => e.name.includes(part))
    .reduce((sum, e) => sum + (e.encodedBodySize || e.transferSize || 0), 0);
}

// The worker's messages until it is ready (or fails): progress goes to the bar and the status line.
function workerReady(worker, total) {
  const bar = $("browser-progress");
  bar.hidden = false;
  return new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => {
      if (data.progress) {
        bar.value = total ? data.progress.loaded / total : 0;
        status(`downloading the WebAssembly model: ${number(data.progress.loaded)} of ${number(total)} bytes…`);
      } else if (data.ready) {
        bar.value = 1;
        resolve(data.ready);
      } else if (data.error) {
        reject(new Error(`WebAssembly model: ${data.error}`));
      }
    };
    worker.onerror = (event) => reject(new Error(`WebAssembly worker: ${event.message || "failed to start"}`));
  });
}

async function enableWasm(info) {
  const base = new URL(info.model.url, location.href).href;
  const worker = new Worker("/static/wasm-worker.js", { type: "module" });
  const started = performance.now();
  let ready;
  try {
    worker.postMessage({ load: base, id: info.model.id, previous: keptModel() });
    ready = await workerReady(worker, info.model.bytes + (info.model.table ? info.model.table.bytes : 0));
  } catch (error) {
    worker.terminate();
    throw error;
  }
  const card = state.card && state.card.id === info.model.id ? state.card : await (await fetch("/v1/model")).json();
  state.browser = { kind: "wasm", worker, card, modelId: info.model.id, format: "WebAssembly", ...ready };
  localStorage.setItem(KEPT_MODEL, JSON.stringify(ready.kept));
  const checked = `ready in ${ms(performance.now() - started)}${ready.hashChecked ? "; SHA-256 checked" : ""}`;
  const u = ready.update;
  if (u && !u.failed) {
    const how = u.moduleKept ? "the module it held runs the new weight table" : "module and weight table patched";
    status(
      `updated from model ${u.from}: fetched a ${number(u.deltaBytes)}-byte delta instead of the whole ` +
        `${number(u.wholeBytes)}-byte model (${how}; ${ready.build} build, ${info.model.weights} weights); ${checked}`,
    );
    return;
  }
  const failed = u && u.failed ? ` (the update from model ${u.from} did not apply: ${u.failed})` : "";
  status(
    `downloaded once: the WebAssembly model (${ready.build} build, ${info.model.weights} weights), ${bytes(ready.bytes)} with its weight table; ` +
      `${number(ready.wire)} bytes on the wire with its loader and card; no runtime to download; ${checked}${failed}`,
  );
}

// The WebAssembly model the page holds (the worker keeps module and weight table in the Cache API), so
// that the next model arrives as a delta from it: {id, build, file, sha256, url, tableUrl}, or null.
const KEPT_MODEL = "squeezenet-wasm-model";
function keptModel() {
  try {
    return JSON.parse(localStorage.getItem(KEPT_MODEL) || "null");
  } catch {
    return null;
  }
}

async function enableBrowser() {
  status("checking what the browser needs…");
  const info = await (await fetch("/v1/browser")).json();
  if (!info.model.format || info.model.format === "none") throw new Error("this server offers no in-browser model");
  if (info.model.format === "wasm" && $("browser-engine").value === "wasm") return enableWasm(info);
  if (info.onnx) info.model = info.onnx; // onnxruntime-web runs the served fp32 graph
  if (!info.runtime.available) throw new Error(info.runtime.hint);
  await loadScript(`${info.runtime.base}ort.wasm.min.js`);
  ort.env.wasm.wasmPaths = info.runtime.base;
  // one thread: several need a cross-origin isolated page, and with one the page hung in
  // headless Chromium 156 (onnxruntime-web 1.30)
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = "error";
  status(`downloading the ${info.model.format} model (${bytes(info.model.bytes)})…`);
  const started = performance.now();
  const response = await fetch(info.model.url);
  if (!response.ok) throw new Error(`cannot download the model (${response.status})`);
  const buffer = await response.arrayBuffer();
  const session = await ort.InferenceSession.create(buffer, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
    logSeverityLevel: 3,
  });
  const loadMs = performance.now() - started;
  const card = await (await fetch("/v1/model")).json();
  state.browser = {
    kind: "onnx",
    session,
    card,
    modelId: response.headers.get("X-Model-Id"),
    modelBytes: buffer.byteLength,
    modelWire: wireBytes(info.model.url),
    runtimeBytes: wireBytes(info.runtime.base),
    format: info.model.format,
    version: info.runtime.version,
    threads: ort.env.wasm.numThreads,
  };
  const b = state.browser;
  status(
    `downloaded once: the ${b.format} model, ${bytes(b.modelBytes)} (${number(b.modelWire)} bytes on the wire); ` +
      `onnxruntime-web ${b.version || ""}, ${bytes(b.runtimeBytes)} on the wire; ready in ${ms(loadMs)}; ` +
      `${b.threads} thread${b.threads > 1 ? "s" : ""}`,
  );
}

async function ensureBrowser() {
  const engine = $("browser-engine").value;
  const stale = state.browser && state.card && state.browser.modelId !== state.card.id; // the server swapped
  if (state.browser && (stale || (state.browser.kind === "wasm") !== (engine === "wasm"))) {
    if (state.browser.worker) state.browser.worker.terminate();
    state.browser = null;
  }
  if (!state.browser) {
    state.loadingBrowser = state.loadingBrowser || enableBrowser().finally(() => (state.loadingBrowser = null));
    await state.loadingBrowser;
  }
}

function imagePixels(bitmap) {
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  return ctx.getImageData(0, 0, bitmap.width, bitmap.height);
}

// Class probabilities from logits, the top five as the server lists them.
function topFive(logits, card) {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const exp = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exp.reduce((a, b) => a + b, 0);
  const order = exp.map((v, i) => [v / sum, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, 5);
  return order.map(([p, i], rank) => ({
    rank: rank + 1,
    index: i,
    name: card.classes[i] ?? `class ${i}`,
    wnid: card.wnids && card.wnids[i],
    probability: p,
  }));
}

function classifyWithWasm() {
  const { worker, card } = state.browser;
  const started = performance.now();
  return new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => {
      if (data.error) return reject(new Error(`WebAssembly model: ${data.error}`));
      const { scores, inferenceMs } = data.result;
      const scale = state.browser.scoreScale;
      const top = topFive(Array.from(scores, (v) => v * scale), card);
      $("result").dataset.scores = Array.from(scores).join(","); // the integer scores as the module gave them
      const elapsed = performance.now() - started;
      $("latency-browser").textContent =
        `${ms(elapsed)} (WebAssembly inference ${ms(inferenceMs)}; resize, crop and the worker's messages the rest)`;
      resolve({ top, cam: null, modelId: state.browser.modelId, ms: elapsed });
    };
    worker.postMessage({ classify: imagePixels(state.bitmap) });
  });
}

async function classifyInBrowser() {
  if (!state.bitmap) throw new Error("the browser cannot decode this image");
  if (state.browser.kind === "wasm") return classifyWithWasm();
  const { session, card } = state.browser;
  const started = performance.now();
  const prepared = preprocess(imagePixels(state.bitmap), card.preprocessing);
  const input = new ort.Tensor("float32", prepared.tensor, prepared.dims);
  const preprocessed = performance.now();
  const outputs = await session.run({ [session.inputNames[0]]: input });
  const elapsed = performance.now() - started;
  const inferenceMs = performance.now() - preprocessed;
  const top = topFive(outputs[session.outputNames[0]].data, card);
  let cam = null;
  const maps = session.outputNames.length > 1 ? outputs[session.outputNames[1]] : null;
  if (maps) {
    const [, , h, w] = maps.dims;
    const plane = maps.data.subarray(top[0].index * h * w, (top[0].index + 1) * h * w);
    const peak = Math.max(...plane);
    const values = [];
    for (let y = 0; y < h; y++) {
      values.push(Array.from(plane.subarray(y * w, (y + 1) * w), (v) => (peak > 0 ? Math.round((255 * v) / peak) : 0)));
    }
    cam = { size: [h, w], values, box: prepared.box, class_index: top[0].index };
  }
  $("latency-browser").textContent =
    `${ms(elapsed)} (preprocessing ${ms(elapsed - inferenceMs)}, ${state.browser.format} inference ${ms(inferenceMs)})`;
  return { top, cam, modelId: state.browser.modelId, ms: elapsed };
}

// ------------------------------------------------------------------ classify
async function classify() {
  if (!state.blob) return;
  $("result").dataset.state = "busy";
  $("error").textContent = "";
  try {
    if ($("in-browser").checked) {
      await ensureBrowser();
      const local = await classifyInBrowser();
      show(local, "the browser");
      try {
        const remote = await classifyOnServer(); // for the comparison only
        $("agreement").textContent =
          remote.top[0].index === local.top[0].index
            ? `same top-1 class both ways (${local.top[0].name})`
            : `top-1 differs: server ${remote.top[0].name}, browser ${local.top[0].name}`;
      } catch (error) {
        $("agreement").textContent = `the server did not answer (${error.message}): the browser's answer stands`;
      }
    } else {
      const remote = await classifyOnServer();
      show(remote, "the server");
      $("agreement").textContent = "—";
    }
    $("result").dataset.state = "ready";
  } catch (error) {
    $("error").textContent = error.message;
    $("result").dataset.state = "error";
  }
}

async function setImage(blob) {
  state.blob = blob;
  state.result = null;
  try {
    state.bitmap = await createImageBitmap(blob, {
      imageOrientation: "from-image",
      premultiplyAlpha: "none",
      colorSpaceConversion: "none",
    });
  } catch {
    state.bitmap = null; // the server will say what is wrong with it
  }
  draw();
  await classify();
}

// ------------------------------------------------------------------ inputs
function wireInputs() {
  $("file").addEventListener("change", (e) => e.target.files[0] && setImage(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = [...e.dataTransfer.files].find((f) => f.type.startsWith("image/")) || e.dataTransfer.files[0];
    if (file) setImage(file);
  });
  document.addEventListener("paste", (e) => {
    const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (item) setImage(item.getAsFile());
  });
  $("show-cam").addEventListener("change", draw);
  $("in-browser").addEventListener("change", async (e) => {
    if (!e.target.checked) {
      status(state.browser ? "the model stays downloaded; switch on to use it again" : "");
      if (state.blob) await classify();
      return;
    }
    try {
      $("result").dataset.state = "busy";
      await ensureBrowser();
      $("result").dataset.state = state.blob ? "busy" : "empty";
      if (state.blob) await classify();
    } catch (error) {
      e.target.checked = false;
      status(error.message);
      $("result").dataset.state = "error";
    }
  });
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    const video = $("video");
    $("camera").hidden = false;
    $("camera").addEventListener("click", async () => {
      try {
        video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
        video.hidden = false;
        $("snap").hidden = false;
        await video.play();
      } catch (error) {
        $("error").textContent = `camera: ${error.message}`;
      }
    });
    $("snap").addEventListener("click", () => {
      const canvas = document.createElement("canvas");
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      canvas.toBlob((blob) => blob && setImage(blob), "image/png");
    });
  }
}

wireInputs();
$("browser-engine").addEventListener("change", () => $("in-browser").checked && $("in-browser").dispatchEvent(new Event("change")));
if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {}); // offline once loaded
loadCard().catch((error) => ($("model-line").textContent = `cannot read the model card: ${error.message}`));
