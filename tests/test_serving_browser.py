"""The page of ``squeezenet serve`` in a real browser: Debian's chromium driven by Playwright's
Python API, against a server this test starts on 127.0.0.1. Upload an image, see the expected
top class; switch to in-browser inference (onnxruntime-web from npm, as the README's setup
installs it) and see the same class. Screenshots are kept as artifacts (the folder is printed).

CI installs chromium (``.ci/run``) and playwright (the ``dev`` extra); a missing browser fails."""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import CHROMIUM, CHROMIUM_ARGS, ROOT
from squeezenet.serving.preprocess import prepare
from test_serving import CONFIDENT, ServerProcess, assert_problem

ARTIFACTS = Path(os.environ.get("SQUEEZENET_TEST_ARTIFACTS", tempfile.gettempdir())) / "squeezenet-serve-page"
# the confident images, and two the model is unsure of (top-1 below 0.35): the two ways must agree anyway
HARD = ["n01698640/n01698640_American_alligator.JPEG", "n03532672/n03532672_hook.JPEG"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page_server(dc_weights_path):
    if not (ROOT / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.js").is_file():
        pytest.fail("onnxruntime-web is missing: run the README's setup (npm install ... onnxruntime-web)")
    server = ServerProcess("-w", str(dc_weights_path))
    yield server
    server.stop()


def open_page(browser, server, service_workers: str = "block"):
    """A new page in a fresh context; the page's service worker is blocked unless asked for (requests
    it answers would bypass the tests' page.route)."""
    page = browser.new_page(viewport={"width": 1100, "height": 960}, service_workers=service_workers)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(server.url + "/")
    page.wait_for_selector("#card tr")
    return page


def upload(page, path: Path, timeout: float = 120_000) -> str:
    """Pick ``path`` in the file input and wait for the page's answer; -> the result state."""
    page.evaluate("document.querySelector('#result').dataset.state = 'waiting'")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#result[data-state=ready], #result[data-state=error]", timeout=timeout)
    return page.get_attribute("#result", "data-state")


def server_top1(server, path: Path) -> dict:
    response = httpx.post(
        server.url + "/v1/classify", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"}, timeout=60
    )
    return response.json()["top"][0]


def test_page_classifies_on_the_server_then_in_the_browser_with_the_same_top_class(
    page_server, browser, imagenet_samples, capsys
):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_page(browser, page_server)
    card = page.inner_text("#card")
    assert "675,763 bytes" in card and "squeezenet1_0_caffe" in card and "1,248,424" in card
    classes = httpx.get(page_server.url + "/v1/model").json()["classes"]
    wnids = httpx.get(page_server.url + "/v1/model").json()["wnids"]

    # on the server: the expected class of each image, with its heat map drawn
    for name, wnid in CONFIDENT[:2]:
        assert upload(page, imagenet_samples / name) == "ready", page.inner_text("#error")
        assert page.inner_text("#engine") == "the server"
        assert page.inner_text("#top1") == classes[wnids.index(wnid)]
        assert page.locator("#top5 li").count() == 5
    page.screenshot(path=str(ARTIFACTS / "server.png"), full_page=True)

    # switch to the browser: the model is downloaded once, the same class comes out
    page.evaluate("document.querySelector('#result').dataset.state = 'waiting'")
    page.check("#in-browser")
    page.wait_for_function("document.querySelector('#engine').textContent === 'the browser'", timeout=180_000)
    page.wait_for_selector("#result[data-state=ready]", timeout=120_000)
    status = page.inner_text("#browser-status")
    assert "downloaded once: the w8a32 model, 1,323," in status and "bytes on the wire" in status, status
    assert page.inner_text("#top1") == classes[wnids.index(CONFIDENT[1][1])]
    assert page.inner_text("#agreement").startswith("same top-1 class both ways")
    assert "inference" in page.inner_text("#latency-browser") and "round trip" in page.inner_text("#latency-server")

    # every test image, the unsure ones too: in the browser and on the server, the same top-1 class
    for name in [*HARD, *(n for n, _ in CONFIDENT)]:
        assert upload(page, imagenet_samples / name) == "ready", page.inner_text("#error")
        expected = server_top1(page_server, imagenet_samples / name)
        assert page.inner_text("#engine") == "the browser"
        assert page.inner_text("#top1") == expected["name"], name
        assert page.inner_text("#agreement") == f"same top-1 class both ways ({expected['name']})"
    page.screenshot(path=str(ARTIFACTS / "browser.png"), full_page=True)
    assert page.errors == []
    with capsys.disabled():
        print(f"\n[serve page screenshots: {ARTIFACTS}]")


def test_the_page_preprocesses_as_the_server_does(page_server, browser, imagenet_samples):
    """preprocess.js against serving/preprocess.py on real JPEGs: identical when the browser's JPEG
    decoder gives Pillow's pixels (4 of these 7 files; a canvas resize would never be), within one
    pixel level otherwise."""
    page = open_page(browser, page_server)
    pre = httpx.get(page_server.url + "/v1/model").json()["preprocessing"]
    script = """async ([data, pre]) => {
        const { preprocess } = await import('/static/preprocess.js');
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const bitmap = await createImageBitmap(new Blob([bytes]),
            { imageOrientation: 'from-image', premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
        const canvas = document.createElement('canvas');
        canvas.width = bitmap.width; canvas.height = bitmap.height;
        const ctx = canvas.getContext('2d', { willReadFrequently: true });
        ctx.drawImage(bitmap, 0, 0);
        const result = preprocess(ctx.getImageData(0, 0, bitmap.width, bitmap.height), pre);
        const raw = new Uint8Array(result.tensor.buffer);
        let text = '';
        for (let i = 0; i < raw.length; i += 8192) text += String.fromCharCode(...raw.subarray(i, i + 8192));
        return { tensor: btoa(text), box: result.box };
    }"""
    identical = 0
    names = [n for n, _ in CONFIDENT] + HARD + ["n01494475/n01494475_hammerhead.JPEG"]
    for name in names:
        data = (imagenet_samples / name).read_bytes()
        got = page.evaluate(script, [base64.b64encode(data).decode(), pre])
        expected = prepare(data, pre, 10**9)
        tensor = np.frombuffer(base64.b64decode(got["tensor"]), dtype="<f4")
        difference = np.abs(tensor - expected.array.ravel())
        assert difference.max() <= 1.0 + 1e-4, name  # one level of 255 (Caffe units: pixels minus mean)
        assert got["box"] == pytest.approx(list(expected.box))
        identical += difference.max() == 0
    assert identical >= 3


def test_drop_and_paste_classify_too(page_server, browser, imagenet_samples):
    page = open_page(browser, page_server)
    name = CONFIDENT[2][0]
    data = base64.b64encode((imagenet_samples / name).read_bytes()).decode()
    make_transfer = """(data) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'photo.jpg', { type: 'image/jpeg' }));
        return transfer;
    }"""
    expected = server_top1(page_server, imagenet_samples / name)["name"]
    for event in ("drop", "paste"):
        page.evaluate("document.querySelector('#result').dataset.state = 'waiting'; "
                      "document.querySelector('#top1').textContent = ''")  # fmt: skip
        transfer = page.evaluate_handle(make_transfer, data)
        if event == "drop":
            page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
        else:
            page.evaluate("(t) => document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: t }))", transfer)
        page.wait_for_selector("#result[data-state=ready]", timeout=60_000)
        assert page.inner_text("#top1") == expected, event


def test_the_camera_button_takes_a_photo_and_classifies_it(page_server, playwright):
    """Chromium's fake camera (a test pattern) stands in for a real one."""
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
    try:
        page = browser.new_context(permissions=["camera"]).new_page()
        page.goto(page_server.url + "/")
        page.wait_for_selector("#card tr")
        page.click("#camera")
        page.wait_for_selector("#snap:not([hidden])")
        page.wait_for_function("document.querySelector('#video').videoWidth > 0", timeout=30_000)
        page.click("#snap")
        page.wait_for_selector("#result[data-state=ready]", timeout=60_000)
        assert page.inner_text("#engine") == "the server" and page.inner_text("#top1") not in ("", "—")
    finally:
        browser.close()


def test_the_switch_says_so_when_onnxruntime_web_is_absent(page_server, browser):
    page = open_page(browser, page_server)
    hint = "onnxruntime-web is not installed: npm install --no-save onnxruntime-web"
    page.route(
        "**/v1/browser",
        lambda route: route.fulfill(json={"runtime": {"available": False, "hint": hint}, "model": {"format": "w8a32"}}),
    )
    # click, not check(): the page unticks the box at once, which check() would take for a failed click
    page.click("#in-browser")
    page.wait_for_function("document.querySelector('#browser-status').textContent.includes('not installed')")
    assert page.inner_text("#browser-status") == hint
    assert not page.is_checked("#in-browser")


def test_live_updates_are_off_without_a_token(page_server, dc_weights_path):
    response = httpx.put(
        page_server.url + "/v1/model",
        content=dc_weights_path.read_bytes(),
        headers={"Authorization": "Bearer anything-at-all", "Content-Type": "application/octet-stream"},
    )
    assert_problem(response, 403, "updates_disabled", "live updates are off: start the server with --token")
