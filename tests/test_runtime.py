"""The NumPy runtime: no torch, same logits as PyTorch, top-5 from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from squeezenet.models import build_architecture

RUNTIME = Path(__file__).resolve().parents[1] / "src" / "squeezenet" / "runtime" / "numpy_runtime.py"


def _load_runtime():
    import importlib.util

    spec = importlib.util.spec_from_file_location("numpy_runtime_under_test", RUNTIME)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _no_torch_env(tmp_path: Path) -> dict:
    """PYTHONPATH with a fake ``torch`` package that refuses to import, ahead of everything."""
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch is forbidden in the numpy runtime')\n")
    import os

    return {**os.environ, "PYTHONPATH": str(fake)}


@pytest.fixture(scope="module")
def dc_safetensors(dc_model, tmp_path_factory):
    from squeezenet.weights import state_dict_to_loaded, write_safetensors

    return write_safetensors(
        state_dict_to_loaded(dc_model, dc_model.weights_info), tmp_path_factory.mktemp("w") / "dc.safetensors"
    )


def test_runtime_without_torch_matches_pytorch(dc_model, dc_safetensors, imagenet_samples, tmp_path):
    from squeezenet.data import build_transform, find_images, load_image

    files = [str(f) for f in find_images([imagenet_samples])[::60][:8]]
    out = tmp_path / "logits.npy"
    script = (
        "import importlib.util, sys, json, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('rt', {str(RUNTIME)!r})\n"
        "rt = importlib.util.module_from_spec(spec); spec.loader.exec_module(rt)\n"
        "assert 'torch' not in sys.modules and 'squeezenet' not in sys.modules\n"
        f"net = rt.SqueezeNetNumpy({str(dc_safetensors)!r})\n"
        f"files = json.loads({json.dumps(files)!r})\n"
        "np.save(sys.argv[1], net(np.stack([net.preprocess(f) for f in files])))\n"
        "assert 'torch' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        capture_output=True,
        text=True,
        env=_no_torch_env(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    transform = build_transform(dc_model.weights_info.preprocessing)
    with torch.no_grad():
        expected = dc_model(torch.stack([transform(load_image(f)) for f in files])).numpy()
    got = np.load(out)
    assert np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_runtime_main_prints_top5_without_torch(dc_model, dc_safetensors, imagenet_samples, tmp_path):
    """The command line's top class and its probability are PyTorch's for the same image."""
    from squeezenet.data import build_transform, load_image

    image = next(iter(sorted(imagenet_samples.rglob("*.JPEG"))))
    proc = subprocess.run(
        [sys.executable, str(RUNTIME), str(dc_safetensors), str(image)],
        capture_output=True,
        text=True,
        env=_no_torch_env(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == str(image) and len(lines) == 6
    with torch.no_grad():
        probs = dc_model(build_transform(dc_model.weights_info.preprocessing)(load_image(image))[None]).softmax(1)[0]
    top = int(probs.argmax())
    name = dc_model.weights_info.class_name(top)
    assert lines[1].strip().startswith("1.") and name in lines[1] and f"{100 * float(probs[top]):.2f}%" in lines[1]


def test_runtime_usage_and_bad_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 32)
    proc = subprocess.run([sys.executable, str(RUNTIME), str(bad), "x.jpg"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "numpy_runtime: error:" in proc.stderr
    assert subprocess.run([sys.executable, str(RUNTIME)], capture_output=True, timeout=60).returncode == 2


def _random_model_file(arch: str, tmp_path):
    """(a randomly initialised model, its weights as the project's safetensors file)."""
    from squeezenet.data.preprocessing import IMAGENET_DEFAULT
    from squeezenet.weights import WeightsInfo, state_dict_to_loaded, write_safetensors

    model = build_architecture(arch).eval()
    info = WeightsInfo(arch=arch, spec=model.spec, num_classes=1000, in_chans=3, preprocessing=IMAGENET_DEFAULT)
    return model, write_safetensors(state_dict_to_loaded(model, info), tmp_path / "w.safetensors")


@pytest.mark.parametrize(
    "arch", ["squeezenet1_0", "squeezenet1_1", "squeezenet1_0_caffe", "squeezenet1_0_complex_bypass"]
)
@pytest.mark.parametrize("size", [64, 51])
def test_runtime_layers_match_pytorch(arch, size, tmp_path):
    rt = _load_runtime()
    model, path = _random_model_file(arch, tmp_path)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(rt.SqueezeNetNumpy(path)(x.numpy()) - expected).max() <= 1e-4


def test_large_batches_run_in_chunks_with_the_same_logits(tmp_path):
    rt = _load_runtime()
    model, path = _random_model_file("squeezenet1_1", tmp_path)
    x = torch.randn(5, 3, 48, 48)
    with torch.no_grad():
        expected = model(x).numpy()
    chunked, whole = rt.SqueezeNetNumpy(path, batch_chunk=2), rt.SqueezeNetNumpy(path, batch_chunk=5)
    calls = []
    forward = chunked._forward
    chunked._forward = lambda images: calls.append(len(images)) or forward(images)
    logits = chunked(x.numpy())
    assert calls == [2, 2, 1] and logits.shape == (5, 1000)
    assert np.abs(logits - expected).max() <= 1e-4 and np.abs(whole(x.numpy()) - logits).max() <= 1e-5
    with pytest.raises(rt.RuntimeFailure, match="batch_chunk must be at least 1"):
        rt.SqueezeNetNumpy(path, batch_chunk=0)


def test_relu_and_layout_helpers_match_plain_numpy():
    """relu goes through in chunks against a zeros buffer (across chunk borders, NaN kept) and
    falls back to the plain form on a strided view, in place either way; nchw_to_nhwc copies
    plane by plane."""
    rt = _load_runtime()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3 * rt._ZEROS.size // 7 + 5, 7), dtype=np.float32)
    x[5, 3] = np.nan
    expected = np.maximum(x, 0)
    assert rt.relu(x) is x and np.array_equal(x, expected, equal_nan=True)
    wide = rng.standard_normal((40, 9), dtype=np.float32)
    view = wide[:, :-1]
    expected = np.maximum(wide, 0)[:, :-1]
    rt.relu(view)
    assert np.array_equal(wide[:, :-1], expected)
    images = rng.standard_normal((2, 3, 5, 4), dtype=np.float32)
    nhwc = rt.nchw_to_nhwc(images)
    assert nhwc.flags.c_contiguous and np.array_equal(nhwc, images.transpose(0, 2, 3, 1))


def test_preprocessing_matches_torchvision(tmp_path):
    from PIL import Image

    from squeezenet.data import IMAGENET_DEFAULT
    from squeezenet.weights import WeightsInfo, state_dict_to_loaded, write_safetensors
    from test_data import torchvision_reference

    rt = _load_runtime()
    model = build_architecture("squeezenet1_1")
    info = WeightsInfo("squeezenet1_1", model.spec, 1000, 3, IMAGENET_DEFAULT)
    net = rt.SqueezeNetNumpy(write_safetensors(state_dict_to_loaded(model, info), tmp_path / "w.safetensors"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 411, 3), dtype=np.uint8))
    expected = torchvision_reference(IMAGENET_DEFAULT)(image).numpy()
    assert np.abs(net.preprocess(image) - expected).max() <= 1e-6


def test_runtime_copied_out_with_its_siblings_classifies(dc_safetensors, imagenet_samples, tmp_path):
    """numpy_runtime.py and pixels.py side by side, far from the project: the same top-5; the
    runtime alone says which file its preprocessing needs."""
    import shutil

    image = str(next(iter(sorted(imagenet_samples.rglob("*.JPEG")))))
    at_home = subprocess.run(
        [sys.executable, str(RUNTIME), str(dc_safetensors), image], capture_output=True, text=True, timeout=120
    )
    copied, alone = tmp_path / "copied", tmp_path / "alone"
    for folder, files in ((copied, [RUNTIME, RUNTIME.parents[1] / "data" / "pixels.py"]), (alone, [RUNTIME])):
        folder.mkdir()
        for file in files:
            shutil.copy(file, folder)
    run, env = [sys.executable, "numpy_runtime.py", str(dc_safetensors), image], _no_torch_env(tmp_path)
    away = subprocess.run(run, capture_output=True, text=True, cwd=copied, env=env, timeout=120)
    assert away.returncode == 0 and away.stdout == at_home.stdout, away.stderr
    lost = subprocess.run(run, capture_output=True, text=True, cwd=alone, env=env, timeout=120)
    assert lost.returncode == 1 and "pixels.py" in lost.stderr


def test_read_weights_dispatches_on_magic(tmp_path):
    rt = _load_runtime()
    fake = tmp_path / "w.sqz"
    fake.write_bytes(b"SQZ\x00" + b"\x00" * 40)
    with pytest.raises(rt.RuntimeFailure):
        rt.read_weights(fake)


def test_runtime_reads_sqz(release_data_free_sqz):
    """A compressed .sqz decodes in the NumPy runtime to the same logits as in PyTorch."""
    from squeezenet.weights import sqz

    path = release_data_free_sqz
    rt = _load_runtime()
    x = np.random.default_rng(0).standard_normal((1, 3, 227, 227), dtype=np.float32) * 50
    expected = sqz.read_sqz(path)
    model = build_architecture("squeezenet1_0_caffe").eval()
    model.load_state_dict(expected.state_dict)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(rt.SqueezeNetNumpy(path)(x) - ref).max() <= 1e-3


def _coretype_after_import(env: dict) -> str:
    code = (
        "import importlib.util, os\n"
        f"spec = importlib.util.spec_from_file_location('rt', {str(RUNTIME)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(os.environ.get('OPENBLAS_CORETYPE', '-'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_runtime_picks_avx512_blas_kernels_only_where_they_exist(monkeypatch):
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    try:
        info = Path("/proc/cpuinfo").read_text()[:8192]
    except OSError:
        info = ""
    flags = set(next((line for line in info.splitlines() if line.startswith("flags")), "").split())
    avx512_amd = "AuthenticAMD" in info and {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
    assert _coretype_after_import(env) == ("SkylakeX" if avx512_amd else "-")
    assert _coretype_after_import({**env, "OPENBLAS_CORETYPE": "Haswell"}) == "Haswell"  # the user's choice stays
