"""The page of ``squeezenet serve`` with its default in-browser model where it can be built: the
WebAssembly export (``--calibration`` given, clang and wasm-ld installed). In Chromium: the page
classifies in a worker with the WebAssembly build, gives the server's top-1 on confident images,
and downloads far less than with onnxruntime-web (counted from the browser's own requests); a
module whose hash is not the card's is refused with a message, and the page keeps classifying on
the server; the files are served by model id, immutable, and an old id is a 404."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from squeezenet.export.wasm import BUILDS, builds_for
from test_serving import CONFIDENT, TOKEN
from test_serving_browser import ServerProcess, open_page, server_top1, upload

pytestmark = pytest.mark.slow
WIRE_LIMIT = 600_000  # bytes the browser downloads to classify in-browser (issue #35)


@pytest.fixture(scope="module")
def wasm_server(dc_weights_path, imagenet_samples, tmp_path_factory):
    """The release with 16 even-indexed images to calibrate on (the confident test images are odd)."""
    folder = tmp_path_factory.mktemp("calibration")
    for i, image in enumerate(sorted(imagenet_samples.rglob("*.JPEG"))[:32:2]):
        (folder / f"{i}.jpeg").symlink_to(image)
    server = ServerProcess("-w", str(dc_weights_path), "--calibration", str(folder))
    yield server
    server.stop()


def counted(page) -> dict[str, int]:
    """url -> body bytes as received (gzip-encoded where it was), of every request the page, its
    worker and its service worker finish from now on; a request the service worker answers is
    seen twice (its own fetch and the page's), and counted once."""
    seen: dict[str, int] = {}

    def finished(request) -> None:
        seen[request.url] = max(seen.get(request.url, 0), request.sizes()["responseBodySize"])

    page.context.on("requestfinished", finished)
    return seen


def test_the_server_offers_the_webassembly_build_by_id_immutable(wasm_server):
    info = httpx.get(wasm_server.url + "/v1/browser").json()
    model = info["model"]
    assert model["format"] == "wasm" and model["weights"] == "int8"  # the release is a .net: int8 weights
    assert model["url"] == f"/v1/model/wasm/{model['id']}/" and info["onnx"]["format"] == "fp32"
    modules = {BUILDS[b][0] for b in builds_for("int8")}  # the relaxed build too where clang 16+ is installed
    assert set(model["files"]) == {
        *modules,
        "squeezenet_weights.bin",
        "squeezenet.json",
        "squeezenet.js",
        "preprocess.js",
    }
    table = httpx.get(wasm_server.url + model["url"] + "squeezenet_weights.bin")
    assert (
        table.status_code == 200
        and len(table.content) == model["table"]["bytes"] == model["files"][table.url.path.rsplit("/", 1)[1]]
    )
    assert {b: e["file"] for b, e in model["builds"].items()} == {b: BUILDS[b][0] for b in builds_for("int8")}
    wasm = httpx.get(wasm_server.url + model["url"] + "squeezenet.wasm")
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
    assert "immutable" in wasm.headers["cache-control"] and len(wasm.content) == model["bytes"]
    old = httpx.get(wasm_server.url + "/v1/model/wasm/0123456789ab/squeezenet.wasm")
    assert old.status_code == 404 and "no longer served" in old.json()["error"]["message"]
    other = httpx.get(wasm_server.url + model["url"] + "..%2Fcard.json")
    assert other.status_code == 404


def test_the_page_classifies_with_webassembly_and_downloads_little(wasm_server, browser, imagenet_samples):
    page = open_page(browser, wasm_server)
    seen = counted(page)
    page.evaluate("document.querySelector('#result').dataset.state = 'waiting'")
    page.check("#in-browser")
    page.wait_for_function("document.querySelector('#browser-status').textContent.includes('downloaded once')",
                           timeout=180_000)  # fmt: skip
    status = page.inner_text("#browser-status")
    build = builds_for("int8")[0]  # Chromium runs relaxed SIMD: the loader takes the first build
    assert f"the WebAssembly model ({build} build, int8 weights)" in status, status
    assert "no runtime to download" in status, status
    for name, _ in CONFIDENT:
        assert upload(page, imagenet_samples / name) == "ready", page.inner_text("#error")
        assert page.inner_text("#engine") == "the browser"
        assert page.inner_text("#top1") == server_top1(wasm_server, imagenet_samples / name)["name"], name
        assert "WebAssembly inference" in page.inner_text("#latency-browser")
    fetched = {url: size for url, size in seen.items() if "/v1/classify" not in url}
    wasm_bytes = sum(size for url, size in fetched.items() if "/v1/model/wasm/" in url)
    # the int8 build of the release (1.29 MB; gzip on the wire: most of its int8 weights are zeros)
    assert 500_000 < wasm_bytes < 1_400_000, fetched
    assert not any("onnxruntime" in url or "/vendor/" in url for url in fetched), fetched
    print(f"\n[in-browser WebAssembly: {sum(fetched.values()):,} bytes fetched in all: {fetched}]")
    assert page.errors == []


def test_a_module_that_is_not_the_cards_is_refused_and_the_server_still_answers(wasm_server, browser, imagenet_samples):
    page = open_page(browser, wasm_server)

    def corrupt(route):
        body = bytearray(route.fetch().body())
        body[-1] ^= 1
        route.fulfill(body=bytes(body), headers={"content-type": "application/wasm"})

    page.context.route("**/squeezenet*.wasm", corrupt)  # whichever build the loader takes
    page.click("#in-browser")
    page.wait_for_function("document.querySelector('#browser-status').textContent.includes('SHA-256')", timeout=120_000)
    assert "is not the model card's" in page.inner_text("#browser-status")
    assert not page.is_checked("#in-browser")
    name, _ = CONFIDENT[0]
    assert upload(page, imagenet_samples / name) == "ready", page.inner_text("#error")
    assert page.inner_text("#engine") == "the server"


def test_onnxruntime_web_stays_a_choice(wasm_server, browser, imagenet_samples):
    page = open_page(browser, wasm_server)
    page.select_option("#browser-engine", "onnx")
    page.check("#in-browser")
    page.wait_for_function("document.querySelector('#browser-status').textContent.includes('downloaded once')",
                           timeout=180_000)  # fmt: skip
    assert "the fp32 model" in page.inner_text("#browser-status")
    name, _ = CONFIDENT[1]
    assert upload(page, imagenet_samples / name) == "ready", page.inner_text("#error")
    assert page.inner_text("#top1") == server_top1(wasm_server, imagenet_samples / name)["name"]


def test_the_page_works_offline_once_loaded(dc_weights_path, imagenet_samples, browser, tmp_path):
    """Loaded once with its service worker and the WebAssembly model, the page opens again and
    classifies in the browser after the server has gone."""
    folder = tmp_path / "calibration"
    folder.mkdir()
    for i, image in enumerate(sorted(imagenet_samples.rglob("*.JPEG"))[:8:2]):
        (folder / f"{i}.jpeg").symlink_to(image)
    server = ServerProcess("-w", str(dc_weights_path), "--calibration", str(folder))
    try:
        page = open_page(browser, server, service_workers="allow")
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        page.reload()  # now under the service worker: what the page fetches is kept
        page.wait_for_selector("#card tr")
        page.check("#in-browser")
        page.wait_for_function("document.querySelector('#browser-status').textContent.includes('downloaded once')",
                               timeout=180_000)  # fmt: skip
        name, _ = CONFIDENT[0]
        assert upload(page, imagenet_samples / name) == "ready", page.inner_text("#error")
        expected = page.inner_text("#top1")
    finally:
        server.stop()
    page.reload()
    page.wait_for_selector("#card tr")
    page.check("#in-browser")
    page.wait_for_function("document.querySelector('#browser-status').textContent.includes('downloaded once')",
                           timeout=60_000)  # fmt: skip
    assert upload(page, imagenet_samples / name) == "ready", page.inner_text("#error")
    assert page.inner_text("#engine") == "the browser" and page.inner_text("#top1") == expected
    assert "the server did not answer" in page.inner_text("#agreement")


def _swap(server, page, weights: Path, name: str, images: list[Path]) -> tuple[str, dict[str, int]]:
    """The server swaps to ``weights`` (PUT); the page answers one image on the model it holds, then,
    told of the swap by the next answer, updates: -> its status line and the requests of the update."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"}
    put = httpx.put(server.url + "/v1/model", content=weights.read_bytes(), params={"name": name}, timeout=300,
                    headers=headers)  # fmt: skip
    assert put.status_code == 200, put.text
    assert upload(page, images[0]) == "ready"  # still the old model in the browser; the answer names the new
    seen = counted(page)
    assert upload(page, images[1]) == "ready", page.inner_text("#error")
    return page.inner_text("#browser-status"), seen


def test_a_swap_to_an_update_reaches_the_page_as_a_delta_with_the_new_models_exact_scores(
    browser, imagenet_samples, tmp_path
):
    """The page holds model A's WebAssembly build. The server swaps to B, made by ``train --update-of
    A`` on three classes (A has ten): another classifier shape, so other code; the page fetches the
    byte deltas of its module and its weight table. Then to C, made by ``train --update-of B``: the
    same code, so the module it holds runs C and the page fetches the delta of the table alone. Each
    update is counted, both hashes are checked, and C's scores equal C's downloaded whole."""
    from test_sqz_delta import compressed_cifar_like, tiny_images, update_run

    a = compressed_cifar_like(tmp_path)
    pictures = tiny_images(tmp_path / "images")
    b = update_run(a, pictures, tmp_path / "b", "codebooks").run_dir / "update.sqz"
    c = update_run(b, pictures, tmp_path / "c", "codebooks").run_dir / "update.sqz"
    folder = tmp_path / "calibration"
    folder.mkdir()
    for i, image in enumerate(sorted(imagenet_samples.rglob("*.JPEG"))[:16:2]):
        (folder / f"{i}.jpeg").symlink_to(image)
    server = ServerProcess("-w", str(a), "--calibration", str(folder), "--token", TOKEN)
    images = sorted(imagenet_samples.rglob("*.JPEG"))[1:11:2]  # a new file each time: a change event
    try:
        page = open_page(browser, server)
        page.check("#in-browser")
        page.wait_for_function("document.querySelector('#browser-status').textContent.includes('downloaded once')",
                               timeout=180_000)  # fmt: skip
        assert upload(page, images[0]) == "ready", page.inner_text("#error")
        held = httpx.get(server.url + "/v1/browser").json()["model"]
        first, updates = held["id"], {}
        for name, weights, shots in (("b.sqz", b, images[1:3]), ("c.sqz", c, images[3:5])):
            status, seen = _swap(server, page, weights, name, shots)
            now = httpx.get(server.url + "/v1/browser").json()["model"]
            assert "updated from model" in status and "delta instead of the whole" in status, status
            deltas = {url: size for url, size in seen.items() if "/v1/model/wasm-delta" in url}
            whole = sum(
                size for url, size in seen.items() if "/v1/model/wasm/" in url and url.endswith((".wasm", ".bin"))
            )
            assert deltas and whole == 0 and now["table"]["sha256"] != held["table"]["sha256"], seen
            assert 0 < sum(deltas.values()) < (now["bytes"] + now["table"]["bytes"]) // 5, deltas
            same_code = now["sha256"] == held["sha256"]
            tables_only = all("file=squeezenet_weights.bin" in url for url in deltas)
            assert same_code == tables_only == ("the module it held runs the new weight table" in status), status
            updates[name] = (same_code, sum(deltas.values()), now["bytes"] + now["table"]["bytes"])
            held = now
        assert updates["b.sqz"][0] is False and updates["c.sqz"][0] is True, updates  # 10 -> 3 classes, then 3
        for bad in ("squeezenet.json", "../squeezenet_weights.bin", "squeezenet.wasm/../squeezenet_weights.bin"):
            refused = httpx.get(server.url + "/v1/model/wasm-delta", params={"from": first, "file": bad}, timeout=30)
            assert refused.status_code == 404 and refused.json()["error"]["kind"] == "no_delta", bad
        patched_scores = page.get_attribute("#result", "data-scores")
        fresh = open_page(browser, server)  # C downloaded whole, in a context of its own
        fresh.check("#in-browser")
        fresh.wait_for_function("document.querySelector('#browser-status').textContent.includes('downloaded once')",
                                timeout=180_000)  # fmt: skip
        assert upload(fresh, images[4]) == "ready"
        assert patched_scores == fresh.get_attribute("#result", "data-scores")
        for name, (same_code, delta, whole_model) in updates.items():
            kind = "the weight table" if same_code else "module and weight table"
            print(f"\n[update to {name}: {delta:,} bytes ({kind}) instead of the {whole_model:,}-byte model]")
        assert page.errors == [] and fresh.errors == []
    finally:
        server.stop()
