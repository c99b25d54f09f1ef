"""``squeezenet serve``: preprocessing against torchvision, the CAM output, the 8-bit browser model,
dynamic batching, and a real server (a subprocess on 127.0.0.1) through every endpoint, every kind
of bad input, live updates by PUT and by the watched file, and a swap under concurrent load."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import DC_WEIGHTS, IMAGENET_SAMPLES, ROOT, run_cli
from squeezenet.serving.batching import Batcher
from squeezenet.serving.config import ServeConfig
from squeezenet.serving.preprocess import prepare
from squeezenet.serving.problems import RequestProblem

TOKEN = "test-token-0123456789"
HEADER_TIMEOUT = 2.0  # the module's server: short, so that the hostile-client test takes seconds
# (file, wnid): images the release weights classify right with probability > 0.95
CONFIDENT = [
    ("n02077923/n02077923_sea_lion.JPEG", "n02077923"),
    ("n02417914/n02417914_ibex.JPEG", "n02417914"),
    ("n03297495/n03297495_espresso_maker.JPEG", "n03297495"),
    ("n04562935/n04562935_water_tower.JPEG", "n04562935"),
]


# ---------------------------------------------------------------- a real server in a subprocess
class ServerProcess:
    """``squeezenet serve --port 0 ARGS``: the port the server got is read from its start-up line
    (no free port guessed beforehand that another process could take); then /healthz is awaited."""

    def __init__(self, *args: str, startup: float = 240.0) -> None:
        self.port, self.url = None, None
        self.log = tempfile.NamedTemporaryFile(prefix="serve-", suffix=".log", delete=False)  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "squeezenet.cli.main", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + startup
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited ({self.proc.returncode}): {self.output()}")
            started = re.search(r"^squeezenet serve: http://127\.0\.0\.1:(\d+)/", self.output(), re.MULTILINE)
            if started and self.port is None:
                self.port = int(started.group(1))
                self.url = f"http://127.0.0.1:{self.port}"
            try:
                if self.url and httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"the server did not start within {startup:g} s: {self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def peak_rss_bytes(self, key: str = "VmHWM") -> int:
        """Its peak resident memory (``VmRSS``: now)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {key}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        text = self.output()
        os.unlink(self.log.name)
        return text


def jpeg(name: str) -> bytes:
    return (IMAGENET_SAMPLES / name).read_bytes()


@pytest.fixture(scope="module")
def watched(tmp_path_factory, dc_weights_path) -> Path:
    """A copy of the release weights that the server watches (tests replace it)."""
    path = tmp_path_factory.mktemp("watched") / "model.net"
    shutil.copyfile(dc_weights_path, path)
    return path


@pytest.fixture(scope="module")
def alt_weights(tmp_path_factory, dc_model) -> Path:
    """The same network as a safetensors file: other bytes, other SHA-256, same predictions."""
    from squeezenet.weights import state_dict_to_loaded, write_safetensors

    path = tmp_path_factory.mktemp("alt") / "release.safetensors"
    write_safetensors(state_dict_to_loaded(dc_model, dc_model.weights_info), path)
    return path


@pytest.fixture(scope="module")
def server(watched, imagenet_samples):
    s = ServerProcess(
        "-w", str(watched), "--token", TOKEN, "--watch", "--watch-interval", "0.2",
        "--read-timeout", "1", "--max-body-mb", "1", "--max-pixels", "10000000", "--browser-model", "none",
        "--header-timeout", str(HEADER_TIMEOUT),
    )  # fmt: skip
    yield s
    s.stop()


def classify(server, data: bytes, content_type: str = "image/jpeg", **params) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/classify", content=data, headers={"Content-Type": content_type}, params=params, timeout=60
    )


def assert_still_serving(server) -> None:
    response = classify(server, jpeg(CONFIDENT[0][0]))
    assert response.status_code == 200, response.text
    assert response.json()["top"][0]["wnid"] == CONFIDENT[0][1]


def assert_problem(response: httpx.Response, status: int, kind: str, words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["kind"], error["status"]) == (kind, status)
    assert words in error["message"], error["message"]


# ---------------------------------------------------------------- preprocessing without torch
def _image_zoo(folder: Path) -> dict[str, Path]:
    """One file per image mode the loader handles."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (301, 411, 3), dtype=np.uint8)
    files = {}

    def save(name, image, **kw):
        files[name] = folder / name
        image.save(files[name], **kw)

    save("rgb.jpg", Image.fromarray(rgb), quality=90)
    save("gray.png", Image.fromarray(rgb[..., 0]))
    rgba = np.dstack([rgb, rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)])
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("palette.png", Image.fromarray(rgb).convert("P"), transparency=3)
    save("gray16.png", Image.fromarray(rgb[..., 1].astype(np.uint16) * 257))
    save("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    save("rotated.jpg", Image.fromarray(rgb), exif=exif)
    save("tall.png", Image.fromarray(rgb[:, :150]))
    return files


@pytest.mark.parametrize("caffe", [True, False], ids=["caffe-squash-bgr", "imagenet-shorter-side"])
def test_preprocessing_matches_build_transform_for_every_image_mode(tmp_path, caffe):
    """The server's NumPy preprocessing against torchvision's ``build_transform`` + ``load_image``
    (what eval and predict use): the same numbers to float rounding, for every mode."""
    from squeezenet.data import CAFFE_SQUEEZENET, IMAGENET_DEFAULT, build_transform, load_image

    pre = CAFFE_SQUEEZENET if caffe else IMAGENET_DEFAULT
    transform = build_transform(pre)
    for name, path in _image_zoo(tmp_path).items():
        expected = transform(load_image(path, pre.image_mode)).numpy()
        got = prepare(path.read_bytes(), pre.to_dict(), 10**8)
        assert got.array.shape == expected.shape, name
        assert np.abs(got.array - expected).max() <= 1e-4 * max(1.0, pre.pixel_range), name


def test_preprocessing_matches_on_real_jpegs(imagenet_samples):
    from squeezenet.data import CAFFE_SQUEEZENET, build_transform, load_image

    transform = build_transform(CAFFE_SQUEEZENET)
    for name, _ in CONFIDENT:
        expected = transform(load_image(imagenet_samples / name)).numpy()
        got = prepare((imagenet_samples / name).read_bytes(), CAFFE_SQUEEZENET.to_dict(), 10**8)
        assert np.abs(got.array - expected).max() <= 1e-3
        assert got.box == pytest.approx((14 / 256, 14 / 256, 241 / 256, 241 / 256))  # 256 squash, 227 crop


@pytest.mark.parametrize(
    ("data", "kind", "words"),
    [
        (b"", "empty_body", "empty body"),
        (b"hello, not an image", "not_an_image", "unrecognised format"),
        ("truncated", "truncated", "truncated image"),
        ("bomb", "too_many_pixels", "image of 5000x5000 = 25,000,000 pixels is over the limit of 1,000,000"),
    ],
)
def test_decoding_refuses_bad_images_with_their_kind(data, kind, words):
    if data == "truncated":
        data = jpeg(CONFIDENT[0][0])[:5000]
    elif data == "bomb":
        buffer = io.BytesIO()
        Image.new("1", (5000, 5000)).save(buffer, "PNG")
        data = buffer.getvalue()
        assert len(data) < 10_000  # a tiny file, 25 million pixels
    with pytest.raises(RequestProblem) as caught:
        prepare(data, {"crop": 227}, max_pixels=1_000_000)
    assert caught.value.kind == kind and words in caught.value.message


# ---------------------------------------------------------------- the CAM output and the browser model
@pytest.fixture(scope="module")
def cam_graph(dc_model) -> bytes:
    from squeezenet.export.concat_free import split_concats
    from squeezenet.export.onnx import onnx_bytes

    return split_concats(onnx_bytes(dc_model, metadata=False, cam=True))


def test_cam_output_survives_the_concat_free_rewrite_and_averages_to_the_logits(dc_model, cam_graph):
    import onnx
    import torch

    from squeezenet.export.onnx import onnx_bytes
    from squeezenet.serving.model import ort_session

    default = onnx.load_from_string(onnx_bytes(dc_model, metadata=False))
    assert [o.name for o in default.graph.output] == ["logits"]  # the default graph is unchanged
    proto = onnx.load_from_string(cam_graph)
    assert [o.name for o in proto.graph.output] == ["logits", "cam"]
    assert not [n for n in proto.graph.node if n.op_type == "Concat"]  # the rewrite still ran everywhere
    x = np.random.default_rng(0).normal(0, 60, (2, 3, 227, 227)).astype(np.float32)
    logits, cam = ort_session(cam_graph, 2).run(None, {"input": x})
    assert cam.shape == (2, 1000, 15, 15)  # conv10 with Caffe's pad 1 on the 13x13 map
    assert np.abs(cam.min()) == 0.0  # after the ReLU
    np.testing.assert_allclose(cam.mean(axis=(2, 3)), logits, atol=1e-4)
    with torch.inference_mode():
        np.testing.assert_allclose(logits, dc_model(torch.from_numpy(x)).numpy(), atol=1e-3)


def test_browser_model_8bit_weights_are_lossless_for_codebook_weights_and_4x_smaller(cam_graph):
    import onnx

    from squeezenet.serving.browser_model import eight_bit_weights
    from squeezenet.serving.model import ort_session

    small = eight_bit_weights(onnx.load_from_string(cam_graph)).SerializeToString()
    assert len(small) < len(cam_graph) / 3.5
    x = np.random.default_rng(1).normal(0, 60, (1, 3, 227, 227)).astype(np.float32)
    a = ort_session(cam_graph, 2).run(None, {"input": x})
    b = ort_session(small, 2).run(None, {"input": x})
    assert [o.name for o in onnx.load_from_string(small).graph.output] == ["logits", "cam"]
    np.testing.assert_array_equal(a[0], b[0])  # 256-entry codebooks: the very same weights


def test_browser_model_8bit_weights_of_dense_weights_stay_close():
    import onnx
    import torch

    from squeezenet.export.onnx import onnx_bytes
    from squeezenet.models import build_architecture
    from squeezenet.serving.browser_model import eight_bit_weights
    from squeezenet.serving.model import ort_session

    model = build_architecture("squeezenet1_1", num_classes=10).eval()
    with torch.no_grad():  # trained-like dense weights: every value distinct
        for p in model.parameters():
            p.normal_(0, 0.05)
    graph = onnx_bytes(model, size=64, metadata=False)
    small = eight_bit_weights(onnx.load_from_string(graph)).SerializeToString()
    assert any(n.op_type == "DequantizeLinear" for n in onnx.load_from_string(small).graph.node)
    x = np.random.default_rng(2).normal(0, 1, (4, 3, 64, 64)).astype(np.float32)
    a = ort_session(graph, 1).run(None, {"input": x})[0]
    b = ort_session(small, 1).run(None, {"input": x})[0]
    assert np.abs(a - b).max() < 0.03 * np.abs(a).max()


@pytest.mark.slow
def test_convert_int8_browser_model_runs_with_maps_and_is_labelled(tmp_path, dc_weights_path, imagenet_samples):
    """``--browser-model int8``: export.onnx_int8's QDQ graph with the maps added and its unused
    initializers dropped; the card records its size, calibration and (large) logit difference."""
    import onnx

    from squeezenet.serving.convert import convert

    calibration = [str(imagenet_samples / name) for name, _ in CONFIDENT]
    card = convert(dc_weights_path, tmp_path, browser="int8", calibration=calibration, calibration_limit=4)
    browser = card["browser"]
    assert browser["format"] == "int8" and browser["bytes"] == (tmp_path / "browser.onnx").stat().st_size
    assert browser["bytes"] < card["onnx_bytes"] / 3.5 and browser["max_logit_difference"] > 0
    proto = onnx.load(str(tmp_path / "browser.onnx"))
    assert [o.name for o in proto.graph.output] == ["logits", "cam"]
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    used = {name for node in proto.graph.node for name in node.input}
    assert all(init.name in used for init in proto.graph.initializer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["browser.onnx", "card.json", "check.json", "model.onnx"]


# ---------------------------------------------------------------- dynamic batching
def _fake_engine(calls: list, delay: float = 0.01):
    def infer(batch, want_cam):
        calls.append(len(batch))
        time.sleep(delay)
        logits = batch.reshape(len(batch), -1)[:, :3] * 2
        return logits, (logits[:, :, None, None] if want_cam else None)

    return infer


def _run(coroutine):
    return asyncio.run(coroutine)


def test_batcher_gathers_concurrent_requests_and_returns_each_its_own_row():
    from concurrent.futures import ThreadPoolExecutor

    calls: list[int] = []

    async def main():
        batcher = Batcher(_fake_engine(calls), ThreadPoolExecutor(1), max_batch=4, max_wait_ms=0)
        batcher.start()
        results = await asyncio.gather(
            *(batcher.submit(np.full((3, 2, 2), i, np.float32), i % 2 == 0) for i in range(10))
        )
        await batcher.stop()
        return results

    results = _run(main())
    assert sum(calls) == 10 and max(calls) <= 4 and len(calls) < 10  # batches formed while one ran
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result.logits, [2 * i] * 3)
        assert (result.cam is not None) == (i % 2 == 0)


def test_batcher_waits_up_to_max_wait_for_a_full_batch_and_not_at_all_when_off():
    from concurrent.futures import ThreadPoolExecutor

    async def trickle(max_batch, max_wait_ms):
        calls: list[int] = []
        batcher = Batcher(_fake_engine(calls, 0), ThreadPoolExecutor(1), max_batch=max_batch, max_wait_ms=max_wait_ms)
        batcher.start()

        async def later(i):
            await asyncio.sleep(0.005 * i)
            return await batcher.submit(np.zeros((3, 1, 1), np.float32))

        await asyncio.gather(*(later(i) for i in range(3)))
        await batcher.stop()
        return calls

    assert _run(trickle(3, 500)) == [3]  # gathered, then run as soon as the batch was full
    assert _run(trickle(1, 500)) == [1, 1, 1]  # batching off


def test_batcher_refuses_beyond_its_queue_and_passes_engine_errors_to_every_caller():
    from concurrent.futures import ThreadPoolExecutor

    async def overloaded():
        batcher = Batcher(_fake_engine([], 0.2), ThreadPoolExecutor(1), max_batch=1, max_queue=2)
        batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(np.zeros((3, 1, 1), np.float32))) for _ in range(4)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.stop()
        return results

    results = _run(overloaded())
    refused = [r for r in results if isinstance(r, RequestProblem)]
    assert refused and all(r.status == 503 and r.kind == "overloaded" for r in refused)

    def broken(batch, want_cam):
        raise RuntimeError("engine on fire")

    async def failing():
        batcher = Batcher(broken, ThreadPoolExecutor(1), max_batch=4)
        batcher.start()
        results = await asyncio.gather(
            *(batcher.submit(np.zeros((3, 1, 1), np.float32)) for _ in range(3)), return_exceptions=True
        )
        await batcher.stop()
        return results

    assert all(isinstance(r, RuntimeError) and "on fire" in str(r) for r in _run(failing()))


# ---------------------------------------------------------------- memory
def test_memory_budget_grants_in_arrival_order_shrinks_and_refuses_beyond_its_queue():
    from squeezenet.serving.memory import MemoryBudget

    async def main():
        budget, order = MemoryBudget(100, max_waiting=2), []

        async def hold(name, size, seconds):
            async with budget.reserve(size) as held:
                order.append(name)
                await asyncio.sleep(seconds)
                held.shrink(1)  # decoded: only the model input is kept
                await asyncio.sleep(seconds)

        first = asyncio.ensure_future(hold("a", 70, 0.05))
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(hold(n, s, 0.01)) for n, s in (("big", 60), ("small", 10))]
        await asyncio.sleep(0)
        assert budget.waiting == 2 and budget.in_use == 70
        with pytest.raises(RequestProblem) as caught:  # a third would wait: refused
            async with budget.reserve(1):
                pass
        await asyncio.gather(first, *waiting)
        return order, budget.in_use, caught.value

    order, left, problem = _run(main())
    assert order == ["a", "big", "small"]  # the small one did not overtake the large one
    assert left == 0 and (problem.status, problem.kind, problem.retry_after) == (503, "overloaded", 1)

    async def cancelled_at_the_head():  # a client gone while waiting: those behind it move up
        budget, release = MemoryBudget(100, max_waiting=4), asyncio.Event()

        async def hold(size):
            async with budget.reserve(size):
                await release.wait()

        first = asyncio.ensure_future(hold(60))
        await asyncio.sleep(0)
        big, small = asyncio.ensure_future(hold(60)), asyncio.ensure_future(hold(10))
        await asyncio.sleep(0)
        big.cancel()
        await asyncio.sleep(0)
        granted = budget.in_use
        release.set()
        await asyncio.gather(first, small)
        return granted, budget.in_use, budget.waiting

    assert _run(cancelled_at_the_head()) == (70, 0, 0)


def test_conversions_in_bands_give_the_same_pixels_as_in_one_piece(monkeypatch):
    """``data.images`` converts 16-bit, float and transparent images band by band (so that a large
    image costs no full-size temporaries): the pixels must be those of one piece."""
    from squeezenet.data import images

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (700, 333, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P")
    palette.info["transparency"] = 3
    cases = [
        Image.fromarray(np.dstack([rgb, rgb[..., 0]]), "RGBA"),
        Image.fromarray(np.dstack([rgb[..., 1], rgb[..., 2]]), "LA"),
        palette,
        Image.fromarray(rng.integers(0, 65536, (700, 333)).astype(np.uint16)),
        Image.fromarray(rng.integers(-500, 100000, (700, 333)).astype(np.int32)),
        Image.fromarray(rng.normal(3, 5, (700, 333)).astype(np.float32)),
    ]
    for mode in ("RGB", "L"):
        monkeypatch.setattr(images, "BAND_PIXELS", 10**9)
        whole = [np.asarray(images.normalize_mode(img, mode)) for img in cases]
        monkeypatch.setattr(images, "BAND_PIXELS", 5000)  # 15 rows a band
        for img, expected in zip(cases, whole, strict=True):
            np.testing.assert_array_equal(np.asarray(images.normalize_mode(img, mode)), expected, err_msg=img.mode)


_PEAK_SCRIPT = """
import json, sys
from pathlib import Path
from squeezenet.serving.memory import tune_malloc
tune_malloc()
from squeezenet.serving.preprocess import decoding_bytes, prepare
def kb(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
pre = json.loads(sys.argv[1])
out = {}
for path in sys.argv[2:]:
    data = Path(path).read_bytes()
    estimate = decoding_bytes(data, pre, 10**9)[0]
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
    base = kb("VmRSS")
    prepare(data, pre, 10**9)
    out[Path(path).name] = [(kb("VmHWM") - base) * 1024, estimate]
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures peaks with Linux's clear_refs")
def test_decoding_cost_read_from_the_header_bounds_the_peak_of_the_real_decode(tmp_path):
    """``memory.decoding_cost`` against the peak resident memory of ``prepare`` in a fresh process,
    on 1600x1600 images of the costly kinds (the budget is only as good as these bounds)."""
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)).resize((1600, 1600))
    exif = Image.Exif()
    exif[0x0112] = 6
    files = {
        "rgb.png": (base, {}),
        "rgba.png": (base.convert("RGBA"), {}),
        "gray16.png": (Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257), {}),
        "palette.png": (base.convert("P"), {"transparency": 3}),
        "cmyk.jpg": (base.convert("CMYK"), {}),
        "progressive.jpg": (base, {"progressive": True, "subsampling": 0}),
        "rotated.jpg": (base, {"exif": exif}),
        "photo.webp": (base, {"quality": 50, "method": 0}),
    }
    for name, (image, options) in files.items():
        image.save(tmp_path / name, **options)
    pre = {"resize": [256, 256], "crop": 227, "channel_order": "BGR", "pixel_range": 255.0}
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, json.dumps(pre), *(str(tmp_path / n) for n in files)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    for name, (peak, estimate) in json.loads(proc.stdout).items():
        assert 0 < peak <= estimate, f"{name}: peak {peak / 2**20:.1f} MiB over the estimate {estimate / 2**20:.1f}"


def test_conversions_keep_the_most_recently_used_and_forget_a_folder_removed_under_them(tmp_path):
    from squeezenet.serving.model import Conversions

    kept, folders = Conversions(tmp_path, keep=2), {}
    for name in "abc":
        folders[name] = tmp_path / name
        folders[name].mkdir()
        (folders[name] / "card.json").write_text("{}")
        kept.add(name, folders[name])
        if name == "b":
            assert kept.get("a") == folders["a"]  # used again: b is now the oldest
    assert kept.get("b") is None and not folders["b"].exists()  # evicted, its files removed
    assert kept.get("a") == folders["a"] and kept.get("c") == folders["c"]
    shutil.rmtree(folders["c"])
    assert kept.get("c") is None


def test_cores_kept_for_the_conversion_move_every_thread_off_them_and_back():
    from concurrent.futures import ThreadPoolExecutor

    from squeezenet.serving.conversion import cores_kept

    usable = sorted(os.sched_getaffinity(0))
    with ThreadPoolExecutor(2) as pool:
        pool.submit(time.sleep, 0.01).result()  # a worker thread exists before

        def masks():
            return {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}

        with cores_kept(1) as child:
            inside = masks()
        after = masks()
    if len(usable) < 2:
        assert child is None and inside == {frozenset(usable)}
    else:
        assert child == set(usable) and inside == {frozenset(usable[:-1])}
    assert after == {frozenset(usable)}


# ---------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"max_batch": 0}, "max-batch must lie in [1, 256], got 0"),
        ({"read_timeout": 0}, "read-timeout must be positive"),
        ({"keep_alive": -1}, "keep-alive must be positive"),
        ({"header_timeout": 0}, "header-timeout must be positive"),
        ({"max_client_connections": 0}, "max-client-connections must be at least 1, got 0"),
        ({"browser_model": "int8"}, "needs --calibration"),
        ({"browser_model": "fp16"}, "browser-model must be one of"),
        ({"token": "short"}, "at least 8 characters"),
    ],
)
def test_config_refuses_bad_options(kwargs, words):
    from squeezenet.errors import ModelError

    with pytest.raises(ModelError, match=words.replace("[", r"\[").replace("]", r"\]")):
        ServeConfig(weights=Path("w.net"), **kwargs)


def test_defaults_are_safe():
    config = ServeConfig(weights=Path("w.net"))
    assert config.host == "127.0.0.1" and config.token is None and not config.watch
    assert config.max_body_bytes <= 16 << 20 and config.max_pixels <= 24_000_000 and config.read_timeout <= 10


def test_cli_serve_usage_errors_are_one_line():
    proc = run_cli("serve", "-w", "x.net", "--max-batch", "0")
    assert proc.returncode == 2 and "argument --max-batch: must lie in [1, 256], got 0" in proc.stderr
    proc = run_cli("serve", "-w", "x.net", "--keep-alive", "0")
    assert proc.returncode == 2 and "argument --keep-alive: must be positive, got 0" in proc.stderr
    proc = run_cli("serve", "-w", "x.net", "--browser-model", "int8")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "squeezenet: error: browser-model int8 needs --calibration images (int8 is calibrated on real images)"
    )


def test_cli_serve_on_a_port_in_use_is_one_error_line_before_the_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        proc = run_cli("serve", "-w", str(DC_WEIGHTS), "--port", str(port), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"squeezenet: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert proc.stdout == ""  # no start-up line: the model was never loaded
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_cli_serve_with_a_missing_weights_file_is_one_error_line(tmp_path):
    """(A foreign file is refused the same way, by the same child process: see the PUT test.)"""
    proc = run_cli("serve", "-w", str(tmp_path / "missing.net"), "--port", "0", timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"squeezenet: error: {tmp_path / 'missing.net'}: no such weights file (and not a known tag; see "
        "'squeezenet info --weights')"
    ]


# ---------------------------------------------------------------- the app in process, with a stand-in model
class _StandInSession:
    """An ONNX Runtime session's ``run`` on 10 classes: the logits rise with the class index."""

    def run(self, names, feed):
        n = len(feed["input"])
        logits = np.tile(np.arange(10, dtype=np.float32), (n, 1))
        return [logits] if names == ["logits"] else [logits, np.ones((n, 10, 3, 3), np.float32)]


def _stand_in_app(tmp_path: Path, **options):
    from fastapi.testclient import TestClient

    from squeezenet.data.preprocessing import Preprocessing
    from squeezenet.serving.app import create_app
    from squeezenet.serving.model import ServedModel
    from squeezenet.serving.schemas import ModelCard
    from squeezenet.serving.service import Service

    card = ModelCard(
        id="0123456789ab", sha256="0123456789ab" + "0" * 52, file="m.net", file_bytes=1, format="test",
        arch="squeezenet1_1", parameters=1, num_classes=10, in_chans=3, input_size=32,
        classes=[f"class {i}" for i in range(10)], wnids=[], preprocessing=Preprocessing(resize=36, crop=32).to_dict(),
        license="", provenance={}, engine="stand-in", onnx_bytes=1, cam_size=[3, 3], browser={"format": "none"},
        convert_seconds=0.0,
    ).model_dump(mode="json", exclude_none=True)  # fmt: skip
    model = ServedModel(card=card, session=_StandInSession(), folder=tmp_path / "model")
    service = Service(ServeConfig(weights=tmp_path / "w.net", **options), model, tmp_path / "work")
    return TestClient(create_app(service))


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 100, 50)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_token_dependency_answers_403_when_updates_are_off_and_401_for_a_missing_or_wrong_token(tmp_path):
    with _stand_in_app(tmp_path) as client:
        assert_problem(client.put("/v1/model", content=b"x"), 403, "updates_disabled", "start the server with --token")
    with _stand_in_app(tmp_path, token=TOKEN) as client:
        for headers, words in [
            ({}, "missing token"),
            ({"Authorization": "Basic " + TOKEN}, "missing token"),
            ({"Authorization": "Bearer wrong-token-000"}, "wrong token"),
        ]:
            response = client.put("/v1/model", content=b"x", headers=headers)
            assert_problem(response, 401, "unauthorized", words)
            assert response.headers["WWW-Authenticate"] == "Bearer"
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"}
        right = client.put("/v1/model", content=b"", headers=headers)
        assert_problem(right, 400, "empty_body", "empty body")  # past the token: the body is read


def test_answers_follow_their_models_and_metrics_label_every_route_by_its_path(tmp_path):
    png = {"content": _png(), "headers": {"Content-Type": "image/png"}}
    with _stand_in_app(tmp_path) as client:
        answer = client.post("/v1/classify", params={"topk": 3, "cam": "on"}, **png)
        assert answer.headers["X-Model-Id"] == "0123456789ab"
        body = answer.json()
        assert [t["index"] for t in body["top"]] == [9, 8, 7] and "wnid" not in body["top"][0]  # no wnids: absent
        assert body["cam"]["size"] == [3, 3] and "cam" not in client.post("/v1/classify", **png).json()
        assert_problem(client.post("/v1/classify", params={"topk": "0"}, **png), 400, "bad_parameter", "[1,")
        for path in ("/", "/static/app.js", "/docs", "/nowhere", "/vendor/onnxruntime-web/nothing.js", "/v1/browser"):
            client.get(path)
        text = client.get("/metrics").text
    labelled = set(re.findall(r'squeezenet_requests_total\{endpoint="([^"]+)"', text))
    assert labelled == {"/", "/v1/classify", "/v1/browser", "static", "other"}


def test_a_missing_content_type_a_topk_above_the_classes_and_an_unknown_flag_are_refused(tmp_path):
    """The documented rules, not silent guesses: no Content-Type is not an image (415), topk at most
    the model's classes, cam one of the listed words (both 400, naming the parameter)."""
    with _stand_in_app(tmp_path) as client:
        png = {"content": _png(), "headers": {"Content-Type": "image/png"}}
        assert_problem(client.post("/v1/classify", content=_png()), 415, "wrong_content_type", "no Content-Type")
        too_many = client.post("/v1/classify", params={"topk": 11}, **png)
        assert_problem(too_many, 400, "bad_parameter", "topk must be at most 10, the model's classes, got 11")
        assert client.post("/v1/classify", params={"topk": 10}, **png).status_code == 200
        assert len(client.post("/v1/classify", **png).json()["top"]) == 5  # not given: five
        assert_problem(client.post("/v1/classify", params={"cam": "maybe"}, **png), 400, "bad_parameter", "'maybe'")
        assert "cam" not in client.post("/v1/classify", params={"cam": "off"}, **png).json()
        text = client.get("/metrics").text
    assert 'squeezenet_errors_total{kind="bad_parameter"} 2.0' in text


def test_an_image_whose_decoding_needs_more_than_the_memory_budget_is_refused(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGBA", (1500, 1500)).save(buffer, "PNG")  # 2.25 Mpx, 8 bytes a pixel + 8 MiB: 25 MiB
    with _stand_in_app(tmp_path, image_memory_bytes=20 << 20) as client:
        response = client.post("/v1/classify", content=buffer.getvalue(), headers={"Content-Type": "image/png"})
        assert_problem(response, 413, "too_many_pixels", "PNG RGBA image of 1500x1500 needs about 25 MiB to decode")
        assert "over the 20 MiB for images in flight (--image-memory-mb)" in response.json()["error"]["message"]
        small = client.post("/v1/classify", content=_png(), headers={"Content-Type": "image/png"})
        assert small.status_code == 200
        assert "squeezenet_image_memory_bytes 0.0" in client.get("/metrics").text  # every reservation returned


def test_openapi_is_generated_from_the_models(tmp_path):
    with _stand_in_app(tmp_path) as client:
        api = client.get("/openapi.json").json()
    classify_op = api["paths"]["/v1/classify"]["post"]
    assert classify_op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Classification")
    assert {"image/*", "application/octet-stream", "multipart/form-data"} == set(classify_op["requestBody"]["content"])
    assert classify_op["requestBody"]["content"]["multipart/form-data"]["schema"]["title"] == "FileUpload"
    topk = next(p for p in classify_op["parameters"] if p["name"] == "topk")
    number = next(kind for kind in topk["schema"]["anyOf"] if kind["type"] == "integer")
    assert number["minimum"] == 1 and "5, or all of a model with fewer" in number["description"]
    assert "422" not in classify_op["responses"]  # FastAPI's validation body is never sent
    problem = classify_op["responses"]["415"]["content"]["application/json"]["schema"]["$ref"]
    assert problem.endswith("/ProblemBody")
    put = api["paths"]["/v1/model"]["put"]
    assert put["security"] == [{"HTTPBearer": []}] and {"401", "403", "422"} <= set(put["responses"])
    [metrics_type] = api["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert metrics_type.startswith("text/plain")
    assert {"ServedModelCard", "Health", "BrowserInfo", "Swapped"} <= set(api["components"]["schemas"])


# ---------------------------------------------------------------- the real server
def _metric_values(server) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


@pytest.mark.slow
def test_server_classifies_like_eval_and_names_its_model(server, dc_model, watched, imagenet_samples):
    """Raw body and multipart upload; probabilities as the torch path computes them; model id =
    the weights' SHA-256; ImageNet wnids; timing; CAM of the top class on request."""
    import torch

    from squeezenet.data import build_transform, load_image

    transform = build_transform(dc_model.weights_info.preprocessing)
    sha = hashlib.sha256(watched.read_bytes()).hexdigest()
    for name, wnid in CONFIDENT:
        data = jpeg(name)
        response = classify(server, data, topk=5)
        body = response.json()
        assert response.status_code == 200 and body["model"]["sha256"] == sha
        assert body["model"]["id"] == sha[:12] == response.headers["X-Model-Id"]
        with torch.inference_mode():
            logits = dc_model(transform(load_image(imagenet_samples / name))[None])[0]
        probs = torch.softmax(logits, 0)
        top = body["top"]
        assert [t["rank"] for t in top] == [1, 2, 3, 4, 5]
        assert [t["index"] for t in top] == probs.topk(5).indices.tolist()
        assert top[0]["wnid"] == wnid and top[0]["name"] == dc_model.weights_info.classes[top[0]["index"]]
        np.testing.assert_allclose([t["probability"] for t in top], probs.topk(5).values.numpy(), atol=2e-5)
        assert set(body["timing"]) >= {"total_ms", "decode_ms", "inference_ms", "batch_size"}
    multipart = httpx.post(server.url + "/v1/classify", files={"file": ("x.jpg", data, "image/jpeg")}, timeout=60)
    assert multipart.json()["top"] == body["top"]
    with_cam = classify(server, data, cam="true").json()
    cam = with_cam["cam"]
    assert cam["class_index"] == with_cam["top"][0]["index"] and cam["size"] == [15, 15]
    values = np.array(cam["values"])
    assert values.shape == (15, 15) and values.max() == 255 and values.min() >= 0
    assert cam["box"] == pytest.approx([14 / 256, 14 / 256, 241 / 256, 241 / 256], abs=1e-4)
    assert "cam" not in body


@pytest.mark.slow
def test_model_card_health_metrics_and_openapi(server, watched):
    card = httpx.get(server.url + "/v1/model").json()
    data = watched.read_bytes()
    assert card["sha256"] == hashlib.sha256(data).hexdigest() and card["file_bytes"] == len(data)
    assert (card["arch"], card["parameters"], card["num_classes"], card["input_size"]) == (
        "squeezenet1_0_caffe", 1_248_424, 1000, 227
    )  # fmt: skip
    assert card["format"] == "deepcompression" and card["file"] == card["provenance"]["file"] == "model.net"
    assert len(card["classes"]) == len(card["wnids"]) == 1000 and card["wnids"][0] == "n01440764"
    assert card["preprocessing"]["channel_order"] == "BGR" and card["preprocessing"]["crop"] == 227
    assert "BSD" in card["license"]
    health = httpx.get(server.url + "/healthz").json()
    assert health["status"] == "ok" and health["model"] == card["id"]
    classify(server, b"not an image")
    samples = _metric_values(server)
    ok = ("squeezenet_requests_total", (("endpoint", "/v1/classify"), ("method", "POST"), ("status", "200")))
    assert samples[ok] >= 1
    assert samples[("squeezenet_errors_total", (("kind", "not_an_image"),))] >= 1
    assert samples[("squeezenet_batch_size_count", ())] >= 1
    assert samples[("squeezenet_request_seconds_count", (("endpoint", "/v1/classify"),))] >= 1
    api = httpx.get(server.url + "/openapi.json").json()
    content = api["paths"]["/v1/classify"]["post"]["requestBody"]["content"]
    assert {"image/*", "multipart/form-data"} <= set(content)
    assert {"get", "put"} <= set(api["paths"]["/v1/model"])


@pytest.mark.slow
def test_server_is_torch_free_and_small(server):
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "libtorch" not in maps and "onnxruntime" in maps
    assert server.peak_rss_bytes() < 400 * 2**20


def _corrupt_png() -> bytes:
    """A PNG whose header is fine and whose pixel data is not."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[len(data) // 2 : len(data) // 2 + 40] = bytes(40)
    return bytes(data)


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "content_type", "status", "kind", "words"),
    [
        (_corrupt_png, "image/png", 400, "undecodable", "cannot decode image (broken data stream"),
        (lambda: b"plain text", "image/png", 400, "not_an_image", "not an image"),
        (lambda: jpeg(CONFIDENT[1][0])[:4000], "image/jpeg", 400, "truncated", "truncated image"),
        (_bomb, "image/png", 413, "too_many_pixels", "20000x20000 = 400,000,000 pixels is over the limit"),
        (lambda: b"\xff" * (1 << 20 | 1), "image/jpeg", 413, "body_too_large", "over the limit of 1,048,576"),
        (lambda: jpeg(CONFIDENT[1][0]), "text/plain", 415, "wrong_content_type", "'text/plain' is not accepted"),
        (lambda: b"", "image/jpeg", 400, "empty_body", "empty body"),
    ],
    ids=["undecodable", "not-an-image", "truncated", "decompression-bomb", "too-large", "content-type", "empty"],
)
def test_bad_input_is_a_4xx_json_error_and_the_next_request_is_served(server, make, content_type, status, kind, words):
    assert_problem(classify(server, make(), content_type), status, kind, words)
    assert_still_serving(server)


@pytest.mark.slow
def test_a_body_over_the_limit_without_content_length_is_cut_off(server):
    def chunks():
        for _ in range(40):
            yield b"\x00" * 65536  # 2.5 MB, chunked: the limit is found while reading

    response = httpx.post(server.url + "/v1/classify", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert_problem(response, 413, "body_too_large", "over the limit of 1,048,576 bytes")
    assert_still_serving(server)


@pytest.mark.slow
def test_a_slow_client_gets_408_and_does_not_block_others(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n"
            + b"\xff" * 10
        )
        assert_still_serving(server)  # while the slow one stalls
        started = time.monotonic()
        reply = b""
        while b"}" not in reply:
            chunk = slow.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert time.monotonic() - started < 5
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert json.loads(body)["error"]["kind"] == "read_timeout"
    assert "did not arrive within 1 s" in json.loads(body)["error"]["message"]
    assert_still_serving(server)


@pytest.mark.slow
def test_a_kept_alive_connection_idle_past_clients_expiry_is_still_answered(server):
    """httpx keeps an idle connection 5 s, the very time uvicorn closed it by default: a request
    sent on it as the server closed it was lost (a ReadError during a model swap, when the event
    loop lags). The server must keep an idle connection longer than its clients do."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        replies = []
        for pause in (0, 6):  # 6 s: past httpx's expiry and uvicorn's default, short of --keep-alive's
            time.sleep(pause)
            connection.request("POST", "/v1/classify", jpeg(CONFIDENT[0][0]), {"Content-Type": "image/jpeg"})
            replies.append(connection.getresponse())
            replies[-1].read()
            if pause == 0:
                first_socket = connection.sock
        assert [r.status for r in replies] == [200, 200]
        assert connection.sock is first_socket  # the same connection, not a new one
    finally:
        connection.close()


@pytest.mark.slow
def test_other_client_mistakes_are_json_errors(server):
    assert_problem(classify(server, jpeg(CONFIDENT[0][0]), topk="0"), 400, "bad_parameter", "topk must lie in")
    assert_problem(classify(server, jpeg(CONFIDENT[0][0]), topk="many"), 400, "bad_parameter", "whole number")
    response = httpx.post(server.url + "/v1/classify", files={"note": (None, "hi")})
    assert_problem(response, 400, "empty_body", "no file part")
    assert_problem(httpx.get(server.url + "/nowhere"), 404, "not_found", "/nowhere: no such page")
    assert_problem(httpx.delete(server.url + "/v1/model"), 405, "method_not_allowed", "Method Not Allowed")
    assert_still_serving(server)


def _hostile_clients():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import _serve_load
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return _serve_load


@pytest.mark.slow
def test_idle_and_stalling_connections_cannot_starve_the_service(server):
    """600 connections that send nothing and 20 stalled in their headers, from other loopback
    addresses and opened again as the server closes them, while a client sends 200 requests: at
    least 99 % are answered 200 (the rest a JSON 503, counted); every hostile connection is refused
    at once with a JSON 503 (the per-client limit) or closed within --header-timeout."""
    import resource

    load = _hostile_clients()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    before = _metric_values(server)
    statuses, refusals = collections.Counter(), []
    with load.HostileClients(server.port, idle=600, stalling=20) as hostile:
        time.sleep(0.5)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for i in range(200):
                response = client.post(
                    "/v1/classify", content=jpeg(CONFIDENT[i % 4][0]), headers={"Content-Type": "image/jpeg"}
                )
                statuses[response.status_code] += 1
                if response.status_code != 200:
                    refusals.append(response)
    after = _metric_values(server)
    assert statuses[200] >= 198, statuses
    for response in refusals:
        assert_problem(response, 503, "overloaded", "")
    summary = load.hostile_summary(hostile, HEADER_TIMEOUT, slack=1.5)
    assert summary["not_closed_in_time"] == [] and summary["other_answers"] == 0, summary
    assert summary["refused_503"] >= 536 and summary["closed_by_header_timeout"]["idle"] >= 64, summary
    assert summary["closed_by_header_timeout"]["stalling"] >= 20, summary

    def grew(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("squeezenet_connections_closed_total", reason="too_many_from_client") >= summary["refused_503"]
    assert grew("squeezenet_connections_closed_total", reason="idle") >= summary["closed_by_header_timeout"]["idle"]
    assert grew("squeezenet_errors_total", kind="header_timeout") >= 20
    assert grew("squeezenet_errors_total", kind="overloaded") >= summary["refused_503"] + len(refusals)
    assert_still_serving(server)


@pytest.mark.slow
def test_a_request_head_over_the_limit_or_not_http_is_a_json_problem(server):
    for data, status, kind in [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 70_000, 431, "header_too_large"),
        (b"\x16\x03\x01 this is not HTTP\r\n\r\n", 400, "bad_request"),
    ]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(data)
            reply = b""
            while chunk := raw.recv(65536):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status}".encode()), reply[:200]
        assert json.loads(body)["error"]["kind"] == kind
    assert_still_serving(server)


@pytest.mark.slow
def test_sixteen_simultaneous_largest_images_stay_within_the_memory_bound(server):
    """16 PNGs of 3162x3162 (the module's --max-pixels 10,000,000; with transparency, the costliest
    common kind) at once: each answered 200 or a JSON 503, the server's peak under 400 MB, and
    its resident memory given back after."""
    side = 3162
    image = Image.new("RGBA", (side, side), (30, 120, 200, 180))
    image.paste((200, 40, 40, 255), (side // 4, side // 4, side // 2, side // 2))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = buffer.getvalue()

    async def send():
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
            return await asyncio.gather(
                *(client.post("/v1/classify", content=data, headers={"Content-Type": "image/png"}) for _ in range(16))
            )

    responses = asyncio.run(send())
    for response in responses:
        if response.status_code != 200:
            assert_problem(response, 503, "overloaded", "")
    assert sum(r.status_code == 200 for r in responses) >= 8
    assert server.peak_rss_bytes() < 400 * 2**20
    assert _metric_values(server)[("squeezenet_image_memory_bytes", ())] == 0.0
    assert server.peak_rss_bytes("VmRSS") < 250 * 2**20  # the decoded pixels went back to the system


def put_model(server, data: bytes, token: str | None = TOKEN, name: str = "new.safetensors") -> httpx.Response:
    headers = {"Content-Type": "application/octet-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.put(server.url + "/v1/model", content=data, headers=headers, params={"name": name}, timeout=600)


@pytest.mark.slow
def test_put_model_needs_the_token_and_refuses_broken_or_foreign_files(server, dc_weights_path):
    before = httpx.get(server.url + "/v1/model").json()["id"]
    good = dc_weights_path.read_bytes()
    assert_problem(put_model(server, good, token=None), 401, "unauthorized", "missing token")
    assert_problem(put_model(server, good, token="wrong-token-000"), 401, "unauthorized", "wrong token")
    foreign = put_model(server, jpeg(CONFIDENT[0][0]), name="photo.jpg")
    assert_problem(foreign, 422, "bad_weights", f"the model {before} keeps serving: photo.jpg: unrecognised weights")
    broken = put_model(server, good[: len(good) // 2], name="half.net")
    assert_problem(broken, 422, "bad_weights", "half.net")
    assert httpx.get(server.url + "/v1/model").json()["id"] == before
    assert_still_serving(server)
    log = server.output()  # every refusal is a line of the log
    assert "swap (put from 127.0.0.1): refused: 401 unauthorized: missing token" in log
    assert "swap (put from 127.0.0.1): refused: 401 unauthorized: wrong token" in log
    assert re.search(rf"swap \(put, half\.net\): refused in [\d.]+ s: kept model {before}: half\.net: ", log)


@pytest.mark.slow
def test_the_weights_already_served_are_answered_at_once_without_a_conversion(server, watched, alt_weights):
    card = httpx.get(server.url + "/v1/model").json()
    same = next(p for p in (watched, alt_weights) if hashlib.sha256(p.read_bytes()).hexdigest() == card["sha256"])
    started = time.monotonic()
    response = put_model(server, same.read_bytes(), name="again" + same.suffix)
    assert response.status_code == 200 and time.monotonic() - started < 5
    assert (response.json()["result"], response.json()["previous"]) == ("unchanged", card["id"])
    assert httpx.get(server.url + "/v1/model").json()["swaps"] == card["swaps"]  # not counted as a swap
    assert re.search(
        rf"swap \(put, again\S*\): unchanged in [\d.]+ s: {card['id']} is the model served", server.output()
    )


@pytest.mark.slow
def test_a_swap_whose_uploader_disconnects_is_abandoned_and_its_conversion_killed(server, tmp_path, dc_model):
    """Weights never converted (a conversion of seconds), sent whole; the client then closes the
    connection: the server cancels the swap, kills the child and keeps its model."""
    import dataclasses

    from squeezenet.weights import state_dict_to_loaded, write_safetensors

    info = dc_model.weights_info
    fresh = tmp_path / "abandoned.safetensors"
    info = dataclasses.replace(info, provenance={**info.provenance, "variant": "never served"})
    write_safetensors(state_dict_to_loaded(dc_model, info), fresh)
    before = httpx.get(server.url + "/v1/model").json()["id"]
    data = fresh.read_bytes()
    head = (
        f"PUT /v1/model?name=abandoned.safetensors HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as uploader:
        uploader.sendall(head.encode() + data)
        deadline = time.monotonic() + 60
        while "abandoned.safetensors" not in _processes() and time.monotonic() < deadline:
            time.sleep(0.1)  # until the conversion child runs
        assert "abandoned.safetensors" in _processes()
    deadline = time.monotonic() + 30
    while "abandoned in" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert re.search(rf"swap \(put, abandoned\.safetensors\): abandoned in [\d.]+ s: cancelled; kept model {before}",
                     server.output())  # fmt: skip
    assert "abandoned.safetensors" not in _processes()  # the child was killed
    assert httpx.get(server.url + "/v1/model").json()["id"] == before
    assert (
        'squeezenet_model_swaps_total{result="abandoned",source="put"} 1.0' in httpx.get(server.url + "/metrics").text
    )
    assert_still_serving(server)


def _processes() -> str:
    """The command lines of this machine's processes, one a line."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # a process that has just ended
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return "\n".join(lines)


async def _load_during(server, swap, workers: int = 6, pause: float = 0.03) -> tuple[list, dict]:
    """``workers`` concurrent clients classifying (``pause`` s between requests, so that the CPU is
    busy but not saturated: the conversion child runs at a lower priority and would crawl) while
    ``swap()`` (a coroutine) runs, and 1 s on each side; -> ([(start, end, status, model id in
    body, id in header, top-1 wnid, image index)], swap times)."""
    images = [jpeg(name) for name, _ in CONFIDENT]
    records, times = [], {}
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:

        async def worker(k):
            i = k
            while not stop.is_set():
                start = time.monotonic()
                response = await client.post(
                    "/v1/classify", content=images[i % len(images)], headers={"Content-Type": "image/jpeg"}
                )
                body = response.json()
                records.append(
                    (start, time.monotonic(), response.status_code, body.get("model", {}).get("id"),
                     response.headers.get("X-Model-Id"), body.get("top", [{}])[0].get("wnid"), i % len(images))
                )  # fmt: skip
                i += 1
                await asyncio.sleep(pause)

        tasks = [asyncio.create_task(worker(k)) for k in range(workers)]
        await asyncio.sleep(1.0)
        times["start"] = time.monotonic()
        times["result"] = await swap()
        times["end"] = time.monotonic()
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks)
    return records, times


def _assert_clean_swap(records, times, old: str, new: str) -> None:
    assert records and all(r[2] == 200 for r in records), [r for r in records if r[2] != 200][:3]
    assert all(r[3] == r[4] for r in records)  # the body and the header name the same model
    assert all(r[5] == CONFIDENT[r[6]][1] for r in records)  # and the right class either way
    assert {r[3] for r in records} == {old, new}
    assert all(r[3] == old for r in records if r[1] < times["start"])
    assert all(r[3] == new for r in records if r[0] > times["end"])
    # once a request that arrived later got the new model, none arriving after it got the old one
    first_new = min(r[0] for r in records if r[3] == new)
    assert all(r[3] == new for r in records if r[0] > first_new + 0.5)


@pytest.mark.slow
def test_put_swaps_the_model_under_concurrent_load_with_zero_failed_requests(server, alt_weights):
    old = httpx.get(server.url + "/v1/model").json()["id"]
    new = hashlib.sha256(alt_weights.read_bytes()).hexdigest()[:12]

    async def swap():  # in a thread: the event loop goes on sending the load meanwhile
        return await asyncio.to_thread(put_model, server, alt_weights.read_bytes(), name=alt_weights.name)

    records, times = asyncio.run(_load_during(server, swap))
    response = times["result"]
    assert response.status_code == 200, response.text
    assert (response.json()["model"]["id"], response.json()["previous"]) == (new, old)
    assert response.json()["model"]["file"] == "release.safetensors"
    _assert_clean_swap(records, times, old, new)
    card = httpx.get(server.url + "/v1/model").json()
    assert card["id"] == new and card["format"] == "safetensors" and card["swaps"] >= 1


@pytest.mark.slow
def test_the_watched_file_replaced_on_disk_is_swapped_in_and_a_broken_one_is_refused(server, watched, alt_weights):
    async def replace_and_wait(data: bytes, expected: str | None, wait: float = 300):
        tmp = watched.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, watched)  # the safe way to update a file
        deadline = time.monotonic() + wait
        async with httpx.AsyncClient(base_url=server.url) as client:
            while time.monotonic() < deadline:
                current = (await client.get("/v1/model")).json()["id"]
                if current == expected:
                    return current
                await asyncio.sleep(0.2)
        return current

    start = httpx.get(server.url + "/v1/model").json()["id"]
    original = DC_WEIGHTS.read_bytes()
    target = hashlib.sha256(original).hexdigest()[:12]
    if start == target:  # make sure the replacement is a change of model
        target = hashlib.sha256(alt_weights.read_bytes()).hexdigest()[:12]
        original = alt_weights.read_bytes()
    records, times = asyncio.run(_load_during(server, lambda: replace_and_wait(original, target)))
    assert times["result"] == target
    _assert_clean_swap(records, times, start, target)
    # a broken file: refused, the model keeps serving, and the log says why
    watched.write_bytes(b"garbage, not weights")
    refused = 'squeezenet_model_swaps_total{result="refused",source="watch"} 1.0'
    deadline = time.monotonic() + 300
    while refused not in httpx.get(server.url + "/metrics").text and time.monotonic() < deadline:
        time.sleep(0.3)
    assert refused in httpx.get(server.url + "/metrics").text
    assert httpx.get(server.url + "/v1/model").json()["id"] == target
    assert_still_serving(server)
    assert f"kept model {target}: {watched}: unrecognised weights format" in server.output()


@pytest.mark.slow
def test_load_benchmark_tiny_run(tmp_path):
    """``benchmarks/bench_serve.py --tiny``: the whole script on 8 + 8 images, results in tmp_path
    (never in benchmarks/results); zero errors, a swap seen by the clients, a torch-free server."""
    script, flag = "bench_serve.py", "--tiny"
    recorded = {p.name: p.read_bytes() for p in (ROOT / "benchmarks" / "results").glob("serve.*")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), flag, str(tmp_path / "out")],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((tmp_path / "out" / "serve.json").read_text())
    assert [row["concurrency"] for row in payload["report"]] == [1, 8, 32]
    assert all(row["errors"] == 0 for row in payload["report"])
    for row in payload["report"]:  # paired with eval: every round's own ratio, and their median
        assert len(row["rounds"]) == payload["pair_rounds"] == 1 and row["rounds"][0]["first"] == "eval"
        assert row["vs_eval"] == row["rounds"][0]["vs_eval"] > 0 and row["eval_images_per_second"] > 0
    assert set(payload["load_average"]) == {"before", "after"} and payload["machine"]["cores"] >= 1
    assert all(row["errors"] == 0 for rows in payload["tune"].values() for row in rows)
    swap = payload["swap"]
    assert swap["errors"] == 0 and swap["put_status"] == 200 and len(swap["model_ids_seen"]) == 2
    assert swap["after_swap_all_new"] and swap["before_swap_all_old"]
    assert payload["torch_in_server"] is False and payload["chosen"] in payload["tune"]
    hostile = payload["hostile"]  # issue #38's checks, small
    assert hostile["connections"]["good_ok_share"] >= 0.99 and hostile["connections"]["all_closed_within_bound"]
    assert hostile["connections"]["hostile"]["refused_503"] > 0 and hostile["connections"]["metrics_counted"]
    assert hostile["memory"]["peak_rss_mb"] < 400 and hostile["swaps"]["loaded_errors"] == 0
    assert hostile["swaps"]["resend"]["result"] == "unchanged" and len(hostile["swaps"]["rss_mb_after_each"]) == 2
    assert (tmp_path / "out" / "serve.md").read_text().startswith("# Serving")
    assert {p.name: p.read_bytes() for p in (ROOT / "benchmarks" / "results").glob("serve.*")} == recorded
