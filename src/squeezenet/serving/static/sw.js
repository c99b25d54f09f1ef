// The page offline once loaded: every GET of this origin is answered by the network and kept; when
// the network fails, the kept copy answers. The WebAssembly model's files are immutable (their URL
// names the model id), so they are answered from the cache first and never fetched twice.
const CACHE = "squeezenet-page-v1";
const IMMUTABLE = "/v1/model/wasm/";

// the page's own files, kept at once: the page then opens offline even if it was loaded only once
const SHELL = ["/", "/static/app.js", "/static/style.css", "/static/preprocess.js", "/static/wasm-worker.js", "/static/bytedelta.js"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

async function answer(request) {
  const cache = await caches.open(CACHE);
  const url = new URL(request.url);
  if (url.pathname.startsWith(IMMUTABLE)) {
    const kept = await cache.match(request);
    if (kept) return kept;
  }
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(request, response.clone());
    return response;
  } catch (error) {
    const kept = await cache.match(request);
    if (kept) return kept;
    throw error;
  }
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/v1/classify") || url.pathname === "/metrics") return;
  event.respondWith(answer(event.request));
});
