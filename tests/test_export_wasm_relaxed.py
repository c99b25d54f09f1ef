"""The relaxed SIMD build of int8 weights (kernels_relaxed.c): in Chromium, which ships relaxed SIMD,
every product mode it offers (the dot_i16x8 kernels, 7-bit pieces on every engine, and bytes where
the engine multiplies them exactly) gives the NumPy reference's integers bit for bit on the 32-px
model; the loader picks it where the engine validates it and the plain SIMD build elsewhere (Node.js
20 without its flag); an export without a clang new enough leaves it out and says so.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from conftest import cli_in_process as cli
from squeezenet.data.preprocessing import Preprocessing
from squeezenet.export import formats
from squeezenet.export.c import reference
from squeezenet.export.c.pixels import normalized
from squeezenet.export.wasm import BUILDS, export_wasm
from squeezenet.models import design_space
from squeezenet.weights import build_model_from_weights
from test_export_c import PRE_32, random_cifar_like, sample_images
from test_export_wasm import scores_in_node, small  # noqa: F401 (a fixture)

sys.path.insert(0, str(ROOT / "benchmarks"))  # the static server lives with the benchmark that shares it
try:
    from bench_browser import serve_folder
finally:
    sys.path.remove(str(ROOT / "benchmarks"))

# In the page: the relaxed build through its loader, the scores of every crop in each product mode
# the module accepts (squeezenet_dots answers the mode it runs after each request).
PAGE_JS = """
async ({ side, count }) => {
  const { loadModel, relaxedSupported, DOTS } = await import("/squeezenet.js");
  const model = await loadModel(`${location.origin}/`, { build: "relaxed" });
  const crops = new Uint8Array(await (await fetch("/crops.bin")).arrayBuffer());
  const bytes = side * side * 3;
  const out = { supported: relaxedSupported(), chosen: (await loadModel(`${location.origin}/`)).build,
                first: model.dots, modes: {} };
  for (const mode of [1, 2, 3]) {
    const ran = model.exports.squeezenet_dots(mode);
    const scores = [];
    for (let i = 0; i < count; i++) {
      scores.push(Array.from(model.classify(crops.subarray(i * bytes, (i + 1) * bytes)).scores));
    }
    out.modes[mode] = { ran, name: DOTS[ran], scores };
  }
  return out;
}
"""


def needs_relaxed_clang() -> None:
    if formats.find_relaxed_clang() is None:
        pytest.fail(f"{formats.RELAXED_TOOLCHAIN_HINT} (.ci/run installs them)")


@pytest.fixture(scope="module")
def relaxed_export(small, tmp_path_factory):  # noqa: F811
    """The int8 export of the 32-px model with its relaxed build, and the reference's scores."""
    needs_relaxed_clang()
    calibration, test, path, _ = small
    model = build_model_from_weights(path).eval()
    folder = tmp_path_factory.mktemp("wasm_relaxed") / "int8"
    result = export_wasm(model, folder, normalized(PRE_32, calibration), storage="int8")
    return result, reference.run_batch(result.net, test), test


def test_int8_exports_get_the_relaxed_build_and_compressed_ones_do_not(relaxed_export, small, tmp_path):  # noqa: F811
    result, _, _ = relaxed_export
    assert list(result.card["builds"]) == ["relaxed", "simd", "portable"]
    assert (result.folder / BUILDS["relaxed"][0]).read_bytes() != (result.folder / BUILDS["simd"][0]).read_bytes()
    model = build_model_from_weights(small[3]).eval()
    compressed = export_wasm(model, tmp_path / "c", normalized(PRE_32, small[0]), weights_are_compressed=True)
    assert compressed.net.storage == "compressed" and "relaxed" not in compressed.card["builds"]


def modes_in_chromium(browser, result, test) -> dict:
    """PAGE_JS's answer for the export ``result`` on the pixels ``test``."""
    (result.folder / "crops.bin").write_bytes(np.ascontiguousarray(test, dtype=np.uint8).tobytes())
    (result.folder / "index.html").write_text("<!doctype html><title>relaxed</title>")
    server, base = serve_folder(result.folder)
    try:
        page = browser.new_page()
        page.goto(base + "/index.html")
        got = page.evaluate(PAGE_JS, {"side": int(test.shape[1]), "count": len(test)})
        page.close()
    finally:
        server.shutdown()
    return got


def test_every_product_mode_gives_the_reference_integers_in_chromium(relaxed_export, browser):
    result, expected, test = relaxed_export
    got = modes_in_chromium(browser, result, test)
    assert got["supported"] and got["chosen"] == "relaxed"  # Chromium ships relaxed SIMD: the loader takes it
    ran = {int(mode): run["ran"] for mode, run in got["modes"].items()}
    assert ran[1] == 1 and ran[2] == 2 and ran[3] in (2, 3)  # bytes only where this engine multiplies them exactly
    assert got["first"] == ("u8" if ran[3] == 3 else "i16")  # the fastest exact mode first
    for run in got["modes"].values():
        assert np.array_equal(np.array(run["scores"]), expected), f"mode {run['name']}"


def test_the_loader_in_node_picks_the_build_the_engine_runs(relaxed_export, tmp_path):
    """Node.js 20 has relaxed SIMD behind a flag only: its loader's probe then picks the SIMD build."""
    result, expected, test = relaxed_export
    got = scores_in_node(result.folder, "default", test, tmp_path)
    assert got.get("error") is None, got
    assert got["build"] == ("relaxed" if got["relaxed"] else "simd") and got["dots"] in ("i16", "u8")
    assert np.array_equal(np.array(got["scores"]), expected)


def test_without_a_new_enough_clang_the_export_leaves_the_build_out_and_says_so(
    capsys,
    small,  # noqa: F811
    imagenet_samples,
    tmp_path,
    monkeypatch,
):
    import squeezenet.export.wasm as wasm

    monkeypatch.setattr(wasm, "find_relaxed_clang", lambda: None)
    rc, out, err = cli(capsys, "export", "--format", "wasm", "-w", small[2], "--calibration", imagenet_samples,
                       "--calibration-limit", "4", "--c-weights", "int8", "-o", tmp_path / "web")  # fmt: skip
    assert rc == 0, err
    assert "squeezenet-relaxed.wasm" not in out and f"note: {formats.RELAXED_TOOLCHAIN_HINT}" in out
    assert not (tmp_path / "web" / BUILDS["relaxed"][0]).exists()


def test_a_strided_stem_and_channels_not_in_fours_stay_exact_in_every_mode(browser, imagenet_samples, tmp_path):
    """v1.0's conv1 (7x7, stride 2, its pool) on the raw image, and expand layers whose 6 input
    channels are not a whole number of quads (the dot_i16x8 kernels take those, mid-network)."""
    needs_relaxed_clang()
    spec = design_space(base_e=20, incr_e=20, sr=0.3, num_fires=4, pool_after=(1,), stem_channels=24)
    assert [f.squeeze for f in spec.fires] == [6, 6, 12, 12]
    pre = Preprocessing(resize=64, crop=64, mean=PRE_32.mean, std=PRE_32.std)
    model = build_model_from_weights(random_cifar_like(tmp_path / "design.safetensors", spec, pre=pre)).eval()
    calibration, _ = sample_images(imagenet_samples, pre, 16, 0)
    test, _ = sample_images(imagenet_samples, pre, 6, 1)
    result = export_wasm(model, tmp_path / "web", normalized(pre, calibration), storage="int8")
    got = modes_in_chromium(browser, result, test)
    expected = reference.run_batch(result.net, test)
    ran = {int(mode): run["ran"] for mode, run in got["modes"].items()}
    assert ran[1] == 1 and ran[2] == 2 and ran[3] in (2, 3)
    for run in got["modes"].values():
        assert np.array_equal(np.array(run["scores"]), expected), f"mode {run['name']}"


RELAXED_FLAG = "--experimental-wasm-relaxed-simd"  # Node.js 20: relaxed SIMD behind a flag


def test_behind_node_20s_flag_the_relaxed_build_keeps_to_exact_products(relaxed_export, tmp_path):
    """Node.js 20 runs relaxed SIMD only behind a flag, and its baseline compiler gets relaxed_dot
    wrong even on 7-bit bytes (docs/wasm.md): the module's byte probe fails there, so the i16 kernels
    run and the scores are exact."""
    result, expected, test = relaxed_export
    if subprocess.run(["node", RELAXED_FLAG, "-e", "0"], capture_output=True).returncode != 0:
        pytest.skip(f"this Node.js has no {RELAXED_FLAG} (relaxed SIMD is on or absent)")  # covered in Chromium
    got = scores_in_node(result.folder, "relaxed", test, tmp_path, flags=(RELAXED_FLAG,))
    assert got.get("error") is None, got
    assert got["build"] == "relaxed" and got["dots"] in ("i16", "u8")
    assert np.array_equal(np.array(got["scores"]), expected), got["dots"]
