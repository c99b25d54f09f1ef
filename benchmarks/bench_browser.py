"""In-browser inference, measured in Chromium: the WebAssembly export against onnxruntime-web.

    python benchmarks/bench_browser.py [--images 250] [--latency-images 21] [--tiny FOLDER]
    python benchmarks/bench_browser.py --rewrite  # the checks and Markdown again from the recorded JSON

The model: the v1.0 release through ``squeezenet compress``'s default (the data-free .sqz, 0.47 MB;
``--tiny``: the quick nearest method), exported with ``squeezenet.export.wasm`` twice: compressed
weights (the .sqz's codebooks, rANS-coded) and int8 weights, each as the SIMD128 and the portable
build, int8 also as the relaxed SIMD build. Calibration: 128 even-indexed imagenet-samples;
everything reported: the odd-indexed ones.

1. Bytes: ``squeezenet serve -w the.sqz --calibration ...`` (the page's default in-browser model is
   then the WebAssembly build); a fresh Chromium context (no cache, no service worker) opens the
   page, switches to in-browser inference, classifies one image; every response body counted as it
   crossed the network (Playwright's request sizes; the server's own classify calls, which the page
   makes for its agreement line, left out). The same with the page's onnxruntime-web choice.
2. Exactness: in Chromium, each build (compressed/int8 x SIMD/portable, int8 relaxed in each of
   its product modes) on 16 reported images through the exported loader: scores against
   ``squeezenet.export.c.reference`` (the native C build's integers); top-1 of the SIMD builds on all
   reported images against the fp32 .sqz model, beside the reference's (the native build's) agreement.
3. Latency, batch 1, one thread, median over ``--latency-images`` images: in one Chromium page, the
   SIMD builds (int8: relaxed, the loader's choice where Chromium runs it, and SIMD128; compressed:
   SIMD128) and onnxruntime-web's wasm backend (one thread) on the fp32 ONNX
   of the same .sqz, taken in turn on each image (the order rotating), so that the ratios pair
   measurements made together; the same C builds compiled natively (gcc -O2, no VNNI) on the same
   images.

Writes benchmarks/results/browser.{json,md}.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

import c_toolchain as tc
from _common import DATA, RESULTS, ROOT, add_tiny_option, imagenet_halves, machine, write_results
from _serve_load import Server
from squeezenet.cli.main import main as squeezenet_main
from squeezenet.export.c import reference, write_folder
from squeezenet.export.c.pixels import crop_pixels, normalized
from squeezenet.export.onnx import export_onnx
from squeezenet.export.wasm import export_wasm
from squeezenet.weights import build_model_from_weights

RELEASE = DATA / "deepcompression" / "compressed_SqueezeNet.net"
ORT_DIST = ROOT / "node_modules" / "onnxruntime-web" / "dist"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
TARGETS = {"wasm_bytes": 490_000, "loader_bytes": 10_000, "page_bytes": 600_000, "int8_vs_ort": 0.5,
           "compressed_vs_ort": 1.0, "vs_native": 2.0}  # fmt: skip
STORAGES = ("compressed", "int8")

# In the harness page: every build through its loader on the exactness crops (the relaxed build in
# each product mode it accepts: squeezenet_dots), the SIMD builds' top-1 on all reported crops, then
# the paired latency rounds with onnxruntime-web.
HARNESS_JS = """
async ({ storages, builds, exact, count, latency, side }) => {
  const bytes = side * side * 3;
  const crops = new Uint8Array(await (await fetch("/crops.bin")).arrayBuffer());
  const tensors = new Float32Array(await (await fetch("/tensors.bin")).arrayBuffer());
  const crop = (i) => crops.subarray(i * bytes, (i + 1) * bytes);
  const out = { scores: {}, top1: {}, latency: {} };
  const models = {};
  const scores = (model) => Array.from({ length: exact }, (_, i) => Array.from(model.classify(crop(i)).scores));
  out.chosen = {};
  out.dots = {};
  for (const storage of storages) {
    const { loadModel, DOTS } = await import(`/${storage}/squeezenet.js`);
    out.chosen[storage] = (await loadModel(`${location.origin}/${storage}/`)).build;
    for (const build of builds[storage]) {
      const model = await loadModel(`${location.origin}/${storage}/`, { build });
      const key = `${storage}/${build}`;
      out.scores[key] = scores(model);
      out.dots[key] = model.dots;
      if (build === "relaxed") {
        for (let mode = 1; mode < DOTS.length; mode++) {
          if (model.exports.squeezenet_dots(mode) === mode) out.scores[`${key} (${DOTS[mode]})`] = scores(model);
        }
        model.exports.squeezenet_dots(DOTS.indexOf(model.dots));  // back to its own choice
      }
      if (build !== "portable") {
        out.top1[key] = [];
        for (let i = 0; i < count; i++) out.top1[key].push(model.classify(crop(i)).best);
        models[key] = model;
      }
    }
  }
  const ort = await import("/ort/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = "/ort/";
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = "error";
  const session = await ort.InferenceSession.create("/model.onnx", { executionProviders: ["wasm"] });
  const plane = 3 * side * side;
  const engines = {
    ...Object.fromEntries(Object.entries(models).map(([key, model]) => [key, (i) => model.classify(crop(i))])),
    "onnxruntime-web": async (i) => {
      const input = new ort.Tensor("float32", tensors.subarray(i * plane, (i + 1) * plane), [1, 3, side, side]);
      await session.run({ [session.inputNames[0]]: input });
    },
  };
  const names = Object.keys(engines);
  for (const name of names) { out.latency[name] = []; await engines[name](0); }  // warm-up
  for (let i = 0; i < latency; i++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(i + k) % names.length];
      const started = performance.now();
      await engines[name](i);
      out.latency[name].push(performance.now() - started);
    }
  }
  return out;
}
"""


def release_sqz(work: Path, tiny: bool) -> tuple[Path, str]:
    sqz = work / "release.sqz"
    method = ["--method", "nearest"] if tiny else []
    command = " ".join(["squeezenet compress -w", RELEASE.name, "-o", sqz.name, *method])
    if squeezenet_main(["compress", "-w", str(RELEASE), "-o", str(sqz), *method]) != 0:
        raise SystemExit("bench_browser: squeezenet compress failed")
    return sqz, command


def serve_folder(root: Path):
    """A static HTTP server on 127.0.0.1 for ``root`` (a thread); -> (server, base URL)."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map: ClassVar[dict[str, str]] = {
            **http.server.SimpleHTTPRequestHandler.extensions_map,
            ".mjs": "text/javascript",
            ".js": "text/javascript",
            ".wasm": "application/wasm",
        }

        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def launch(playwright):
    if not CHROMIUM.exists():
        raise SystemExit("bench_browser: chromium is missing (apt-get install -y chromium)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def page_bytes(browser, url: str, image: Path, engine: str) -> dict:
    """What a fresh page downloads to classify ``image`` in-browser with ``engine`` (wasm or onnx)."""
    context = browser.new_context(service_workers="block")
    finished: list = []
    context.on("requestfinished", lambda request: finished.append(request))
    page = context.new_page()
    page.goto(url + "/")
    page.wait_for_selector("#card tr")
    page.select_option("#browser-engine", engine)
    page.check("#in-browser")
    page.wait_for_function("document.querySelector('#browser-status').textContent.includes('downloaded once')",
                           timeout=300_000)  # fmt: skip
    page.evaluate("document.querySelector('#result').dataset.state = 'waiting'")
    page.set_input_files("#file", str(image))
    page.wait_for_selector("#result[data-state=ready], #result[data-state=error]", timeout=300_000)
    state, top1, status = (
        page.get_attribute("#result", "data-state"),
        page.inner_text("#top1"),
        page.inner_text("#browser-status"),
    )
    seen = [(r.url, _body_bytes(r)) for r in finished]
    context.close()
    files = {}
    for link, size in seen:
        path = link.split("127.0.0.1", 1)[1].split(":", 1)[1].split("/", 1)[1]
        if not path.startswith("v1/classify"):
            files["/" + path] = files.get("/" + path, 0) + max(size, 0)
    return {"engine": engine, "state": state, "top1": top1, "status": status, "files": files,
            "bytes": sum(files.values())}  # fmt: skip


def _body_bytes(request) -> int:
    """The body as it crossed the network; Chromium reports no size for a worker's own script, whose
    Content-Length (the server sends it uncompressed) then says it."""
    size = request.sizes()["responseBodySize"]
    if size <= 0 and request.response() is not None:
        size = int(request.response().headers.get("content-length", 0))
    return size


def native_ms(folder: Path, images: np.ndarray, work: Path) -> float:
    """The same C build compiled natively (gcc -O2, no VNNI), median ms per image over the images."""
    exe = tc.compile_host(folder, tc.harness_source(images, repeat=3), work / f"native-{folder.name}", "gcc",
                          ("-O2", "-DSQN_VNNI=0"))  # fmt: skip
    return float(tc.run_program([str(exe)]).median_ms)


def measure(args, work: Path) -> dict:
    sqz, sqz_command = release_sqz(work, bool(args.tiny))
    model = build_model_from_weights(sqz).eval()
    pre = model.weights_info.preprocessing
    cal_files, test_files = imagenet_halves(args.calibration, args.images)
    calibration = np.stack([crop_pixels(pre, f) for f in cal_files])
    crops = np.stack([crop_pixels(pre, f) for f in test_files])
    with torch.no_grad():
        fp32_top1 = model(torch.from_numpy(normalized(pre, crops))).argmax(1).numpy()
    site = work / "site"
    site.mkdir()
    exports, native = {}, {}
    for storage in STORAGES:
        exports[storage] = export_wasm(model, site / storage, normalized(pre, calibration), storage=storage,
                                       weights_are_compressed=True)  # fmt: skip
    export_onnx(model, site / "model.onnx", size=pre.crop)
    (site / "ort").symlink_to(ORT_DIST)
    (site / "crops.bin").write_bytes(crops.tobytes())
    (site / "index.html").write_text("<!doctype html><title>bench_browser</title>")
    (site / "tensors.bin").write_bytes(normalized(pre, crops[: args.latency_images]).astype(np.float32).tobytes())
    for storage, result in exports.items():
        folder = write_folder(result.sources, work / f"c-{storage}")
        native[storage] = native_ms(folder, crops[: args.latency_images], work)
    reference_scores = {s: reference.run_batch(r.net, crops[: args.exact]) for s, r in exports.items()}
    reference_top1 = {s: reference.run_batch(r.net, crops).argmax(1) for s, r in exports.items()}

    from playwright.sync_api import sync_playwright

    static, base = serve_folder(site)
    cal_dir = work / "calibration"
    cal_dir.mkdir()
    for i, f in enumerate(cal_files):
        (cal_dir / f"{i}{f.suffix}").symlink_to(f)
    options = ["--browser-model", "wasm", "--calibration", str(cal_dir), "--calibration-limit", str(args.calibration)]
    server = Server(sqz, options, work / "serve.log")
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            version = browser.version
            page = browser.new_page()
            page.goto(base + "/index.html")  # an origin for the harness's fetches and imports
            builds = {storage: list(result.card["builds"]) for storage, result in exports.items()}
            runs = page.evaluate(HARNESS_JS, {"storages": list(STORAGES), "builds": builds, "exact": args.exact,
                                              "count": len(crops), "latency": args.latency_images,
                                              "side": int(crops.shape[1])})  # fmt: skip
            pages = [page_bytes(browser, server.url, test_files[0], engine) for engine in ("wasm", "onnx")]
            browser.close()
    finally:
        server.stop()
        static.shutdown()
    return report(args, exports, runs, pages, native, reference_scores, reference_top1, fp32_top1, sqz, sqz_command,
                  version)  # fmt: skip


def report(args, exports, runs, pages, native, reference_scores, reference_top1, fp32_top1, sqz, command, version):
    builds = {}
    for storage, result in exports.items():
        for build, facts in result.card["builds"].items():
            key = f"{storage}/{build}"
            for name in (key, *(k for k in runs["scores"] if k.startswith(f"{key} ("))):  # the relaxed build's modes
                exact = np.array_equal(np.array(runs["scores"][name]), reference_scores[storage])
                builds[name] = {"bytes": facts["bytes"], "bit_exact": bool(exact), "exact_images": args.exact}
            builds[key]["dots"] = runs["dots"][key]
            if build != "portable":
                top1 = np.array(runs["top1"][key])
                builds[key]["agreement_fp32"] = float((top1 == fp32_top1).mean())
                builds[key]["native_agreement_fp32"] = float((reference_top1[storage] == fp32_top1).mean())
                builds[key]["latency_ms"] = statistics.median(runs["latency"][key])
                builds[key]["native_ms"] = native[storage]
    ort_ms = statistics.median(runs["latency"]["onnxruntime-web"])
    loader = len(exports["compressed"].files["squeezenet.js"])
    return {
        "machine": machine(), "chromium": version, "sqz": {"bytes": sqz.stat().st_size, "command": command},
        "images": {"calibration": args.calibration, "reported": args.images, "exact": args.exact,
                   "latency": args.latency_images},
        "builds": builds, "chosen": runs["chosen"], "ort_ms": ort_ms, "loader_bytes": loader, "pages": pages,
        "tables": {storage: result.card["table"]["bytes"] for storage, result in exports.items()},
        "latency_rounds": runs["latency"], "limits": TARGETS, "tiny": bool(args.tiny),
    }  # fmt: skip


def checks(r: dict) -> list[dict]:
    """(check, measured, target, verdict) of issue #35's targets."""
    b, t = r["builds"], r["limits"]
    wasm_page = next(p for p in r["pages"] if p["engine"] == "wasm")
    # the model's download: the module and, since the weights are a table beside it, the table
    table = r.get("tables", {}).get("compressed", 0)
    model = b["compressed/simd"]["bytes"] + table
    rows = [
        ("compressed SIMD .wasm of the data-free .sqz" + (" with its weight table" if table else ""),
         f"{b['compressed/simd']['bytes']:,} + {table:,} = {model:,} bytes" if table else f"{model:,} bytes",
         f"<= {t['wasm_bytes']:,}", model <= t["wasm_bytes"]),
        ("loader (squeezenet.js)", f"{r['loader_bytes']:,} bytes", f"<= {t['loader_bytes']:,}",
         r["loader_bytes"] <= t["loader_bytes"]),
        ("bytes the page downloads to classify in-browser (WebAssembly)", f"{wasm_page['bytes']:,} bytes",
         f"<= {t['page_bytes']:,}", wasm_page["bytes"] <= t["page_bytes"]),
        ("bit-exact in Chromium, every build", ", ".join(f"{k} {'yes' if v['bit_exact'] else 'NO'}"
                                                         for k, v in b.items()),
         f"all, {r['images']['exact']} images", all(v["bit_exact"] for v in b.values())),
    ]  # fmt: skip
    for storage, limit in (("int8", t["int8_vs_ort"]), ("compressed", t["compressed_vs_ort"])):
        build = r["chosen"][storage]  # the loader's choice in this Chromium
        row = b[f"{storage}/{build}"]
        ratio = row["latency_ms"] / r["ort_ms"]
        label = "SIMD" if build == "simd" else f"SIMD ({build} build, {row['dots']} products)"
        rows.append((f"{storage} {label} latency / onnxruntime-web fp32",
                     f"{row['latency_ms']:.1f} / {r['ort_ms']:.1f} ms = {ratio:.2f}x", f"<= {limit}x",
                     ratio <= limit))  # fmt: skip
        native = row["latency_ms"] / row["native_ms"]
        rows.append((f"{storage} SIMD in Chromium / native (gcc -O2, no VNNI)",
                     f"{row['latency_ms']:.1f} / {row['native_ms']:.1f} ms = {native:.2f}x", f"<= {t['vs_native']}x",
                     native <= t["vs_native"]))  # fmt: skip
        rows.append((f"{storage} SIMD top-1 agreement with fp32 (native C's)",
                     f"{row['agreement_fp32']:.1%} ({row['native_agreement_fp32']:.1%})", "the same",
                     row["agreement_fp32"] == row["native_agreement_fp32"]))  # fmt: skip
        if build != "simd":  # engines without relaxed SIMD (or without exact bytes) run the SIMD128 kernels
            plain = b[f"{storage}/simd"]["latency_ms"]
            rows.append((f"{storage} SIMD128 build (i16 products: engines without relaxed SIMD) / onnxruntime-web",
                         f"{plain:.1f} / {r['ort_ms']:.1f} ms = {plain / r['ort_ms']:.2f}x", f"<= {limit}x",
                         plain / r["ort_ms"] <= limit))  # fmt: skip
    return [{"check": c, "measured": m, "target": g, "verdict": "met" if ok else "missed"} for c, m, g, ok in rows]


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# In-browser inference: the WebAssembly export against onnxruntime-web",
        "",
        "Command: `python benchmarks/bench_browser.py`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, Chromium {r['chromium']}, {m['date']}"
        + (" (tiny run)" if r["tiny"] else ""),
        "",
        f"Model: the v1.0 release as `{r['sqz']['command']}` ({r['sqz']['bytes']:,} bytes); calibrated on "
        f"{r['images']['calibration']} even-indexed imagenet-samples, reported on {r['images']['reported']} "
        f"odd-indexed ones (exactness on the first {r['images']['exact']}, latency on the first "
        f"{r['images']['latency']}, batch 1, one thread, median).",
        "",
        "| check | measured | target | verdict |",
        "|---|---|---|---|",
        *(f"| {c['check']} | {c['measured']} | {c['target']} | {c['verdict']} |" for c in checks(r)),
        "",
        "## Builds",
        "",
        "| build | products | .wasm bytes | bit-exact | top-1 = fp32 | native C: top-1 = fp32 | Chromium ms "
        "| native ms |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for key, b in r["builds"].items():
        agree = f"{b['agreement_fp32']:.1%}" if "agreement_fp32" in b else ""
        native_agree = f"{b['native_agreement_fp32']:.1%}" if "native_agreement_fp32" in b else ""
        ms = f"{b['latency_ms']:.1f}" if "latency_ms" in b else ""
        native = f"{b['native_ms']:.1f}" if "native_ms" in b else ""
        exact = "yes" if b["bit_exact"] else "NO"
        lines.append(f"| {key} | {b.get('dots', '')} | {b['bytes']:,} | {exact} | {agree} | {native_agree} | "
                     f"{ms} | {native} |")  # fmt: skip
    chosen = ", ".join(f"{storage} {build}" for storage, build in r["chosen"].items())
    if r.get("tables"):
        tables = ", ".join(f"{storage} {n:,} bytes" for storage, n in r["tables"].items())
        lines += ["", f"Each build is the code alone; the weights are a table beside it (`squeezenet_weights.bin`: "
                  f"{tables}), which the loader writes into the module's memory (docs/wasm.md)."]  # fmt: skip
    lines += ["", f"onnxruntime-web (wasm backend, one thread), fp32 ONNX of the same .sqz: {r['ort_ms']:.1f} ms. "
              f"The loader's choice in this Chromium: {chosen}. Products: i16 `i32x4.dot_i16x8_s`; i7 relaxed SIMD "
              "on 7-bit pieces; u8 relaxed SIMD on bytes, where the engine multiplies them exactly "
              "(docs/wasm.md).", "",
              "## What the page downloads (one fresh page, one image classified in-browser)", ""]  # fmt: skip
    for p in r["pages"]:
        what = "the WebAssembly build" if p["engine"] == "wasm" else "onnxruntime-web"
        files = ", ".join(f"`{k}` {v:,}" for k, v in sorted(p["files"].items(), key=lambda kv: -kv[1]))
        lines += [f"- {what}: **{p['bytes']:,} bytes** (result {p['state']}, top-1 {p['top1']}): {files}"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=250, help="reported (odd-indexed) images")
    ap.add_argument("--calibration", type=int, default=128, help="calibration (even-indexed) images")
    ap.add_argument("--exact", type=int, default=16, help="images compared with the reference, every build")
    ap.add_argument("--latency-images", type=int, default=21)
    ap.add_argument("--rewrite", action="store_true", help="the checks and Markdown again from the recorded JSON")
    add_tiny_option(ap)
    args = ap.parse_args()
    if args.rewrite:
        result = json.loads((RESULTS / "browser.json").read_text())
        result["targets"] = checks(result)
        write_results("browser", result, markdown(result))
        return 0
    if args.tiny:
        args.tiny.mkdir(parents=True, exist_ok=True)
        args.images, args.calibration, args.exact, args.latency_images = 4, 4, 2, 2
    if shutil.which("clang") is None or not ORT_DIST.is_dir():
        raise SystemExit("bench_browser: needs clang, wasm-ld (apt-get install clang lld) and onnxruntime-web (npm)")
    with tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
        result = measure(args, Path(tmp))
    result["targets"] = checks(result)  # the README's status rows (scripts/update_readme.py)
    write_results("browser", result, markdown(result), args.tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
