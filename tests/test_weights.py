"""Weights: Deep Compression import, safetensors round trip, torchvision checkpoints, download cache."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from squeezenet.data.preprocessing import CAFFE_SQUEEZENET, IMAGENET_DEFAULT
from squeezenet.errors import WeightsError
from squeezenet.models import V1_0_CAFFE, V1_1
from squeezenet.weights import (
    CATALOG,
    LoadedWeights,
    build_model_from_weights,
    create_model,
    detect_format,
    load_weights,
    write_safetensors,
)
from squeezenet.weights.deepcompression import ConvLayout, decode_layer
from squeezenet.weights.torchvision_ckpt import download_cached

TENCH = "n01440764/n01440764_tench.JPEG"


@pytest.fixture(scope="session")
def dc_loaded(dc_weights_path) -> LoadedWeights:
    return load_weights(dc_weights_path)


@pytest.fixture(scope="session")
def dc_safetensors(dc_loaded, tmp_path_factory):
    return write_safetensors(dc_loaded, tmp_path_factory.mktemp("st") / "dc.safetensors")


def _weight_tensors(state):
    return {k: v for k, v in state.items() if k.endswith("weight")}


# --- Deep Compression -------------------------------------------------------------------


def test_deepcompression_decoded_counts(dc_loaded, dc_weights_path):
    assert detect_format(dc_weights_path) == "deepcompression"
    weights = _weight_tensors(dc_loaded.state_dict)
    assert len(weights) == 26
    assert sum(v.numel() for v in weights.values()) == 1_244_448
    assert sum(int(torch.count_nonzero(v)) for v in weights.values()) == 415_921
    # per-layer (non-zero, total) from the shared README's table
    expected = {
        "features.0.weight": (13_902, 14_112),  # conv1
        "features.3.squeeze.weight": (1_528, 1_536),  # fire2 squeeze
        "features.3.expand3x3.weight": (3_039, 9_216),  # fire2 expand3x3
        "features.9.squeeze.weight": (9_205, 18_432),  # fire7 squeeze
        "features.10.expand1x1.weight": (8_187, 16_384),  # fire8 expand1x1
        "features.12.expand3x3.weight": (44_173, 147_456),  # fire9 expand3x3
        "classifier.1.weight": (102_323, 512_000),  # conv_final
    }
    for key, (nonzero, total) in expected.items():
        assert (int(torch.count_nonzero(weights[key])), weights[key].numel()) == (nonzero, total), key
    # biases are stored densely, one per output channel
    assert dc_loaded.state_dict["classifier.1.bias"].shape == (1000,)
    assert all(v.dtype == torch.float32 for v in dc_loaded.state_dict.values())


def test_deepcompression_info(dc_loaded):
    info = dc_loaded.info
    assert info.arch == "squeezenet1_0_caffe"
    assert info.spec == V1_0_CAFFE
    assert (info.num_classes, info.in_chans) == (1000, 3)
    assert info.preprocessing == CAFFE_SQUEEZENET
    assert info.preprocessing.channel_order == "BGR"
    assert info.preprocessing.mean == (104.0, 117.0, 123.0)
    assert info.preprocessing.crop == 227
    assert len(info.classes) == 1000
    assert info.classes[0] == "tench"
    assert len(info.wnids) == 1000
    assert info.wnids[0] == "n01440764"
    assert list(info.wnids) == sorted(info.wnids)
    assert "Redistribution" in info.license  # the BSD LICENSE text travels with the weights
    assert info.provenance["format"] == "deepcompression"


def test_dc_model_is_ready_and_classifies_tench(dc_model, imagenet_samples):
    from squeezenet.inference import predict_paths

    assert not dc_model.training
    assert dc_model.final_conv.padding == (1, 1)
    [pred] = list(predict_paths(dc_model, [imagenet_samples / TENCH], topk=3))
    assert pred.error is None
    assert pred.top[0][:2] == ("tench", 0)
    assert pred.top[0][2] > 0.9


def test_decode_layer_gap_format():
    """Runs of gaps, a >15 run bridged by a code-0 entry, unstored positions = codebook[0]."""
    layout = ConvLayout("w.weight", (2, 4, 3, 1))  # 24 positions
    codebook = np.zeros(256, dtype="<f4")
    codebook[1], codebook[2] = 1.5, -2.0
    bias = np.array([0.25, -0.5], dtype="<f4")
    codes = np.array([1, 0, 2], dtype=np.uint8)
    gaps = [3, 15, 2]  # positions 3, 19, 22
    packed = bytes([gaps[0] | gaps[1] << 4, gaps[2]])
    blob = codebook.tobytes() + bias.tobytes() + codes.tobytes() + packed
    weight, b, _, _, positions, offset = decode_layer(memoryview(blob), 0, 3, layout)
    assert offset == len(blob)
    assert positions.tolist() == [3, 19, 22]
    flat = weight.reshape(-1)
    expected = np.zeros(24, dtype=np.float32)
    expected[3], expected[22] = 1.5, -2.0
    np.testing.assert_array_equal(flat, expected)
    np.testing.assert_array_equal(b, bias)
    # a gap that runs past the end of the layer is corruption, not a silent wrap
    bad = codebook.tobytes() + bias.tobytes() + codes.tobytes() + bytes([0xFF, 0x0F])
    with pytest.raises(WeightsError, match="corrupted"):
        decode_layer(memoryview(bad), 0, 3, layout)


# --- safetensors ------------------------------------------------------------------------


def test_safetensors_round_trip(dc_loaded, dc_safetensors):
    assert detect_format(dc_safetensors) == "safetensors"
    assert not [p for p in dc_safetensors.parent.iterdir() if p.name.endswith(".tmp")]
    back = load_weights(dc_safetensors)
    assert back.info == dc_loaded.info
    for field in ("arch", "spec", "classes", "wnids", "preprocessing", "license", "provenance"):
        assert getattr(back.info, field) == getattr(dc_loaded.info, field), field
    assert back.state_dict.keys() == dc_loaded.state_dict.keys()
    for key, value in dc_loaded.state_dict.items():
        assert torch.equal(back.state_dict[key], value), key
    model = build_model_from_weights(dc_safetensors)
    assert model.weights_info == dc_loaded.info
    assert model.final_conv.padding == (1, 1)


def test_detect_format_by_content_not_extension(dc_safetensors, tmp_path):
    fake_pth = tmp_path / "x.pth"
    shutil.copyfile(dc_safetensors, fake_pth)
    assert detect_format(fake_pth) == "safetensors"
    assert load_weights(fake_pth).info.arch == "squeezenet1_0_caffe"

    fake_bin = tmp_path / "x.bin"
    torch.save(torchvision.models.squeezenet1_1().state_dict(), fake_bin)
    assert detect_format(fake_bin) == "pytorch"
    assert load_weights(fake_bin).info.arch == "squeezenet1_1"


def test_bare_safetensors_state_dict_infers_arch(tmp_path):
    tv = torchvision.models.squeezenet1_1()
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in tv.state_dict().items()}, str(path))
    loaded = load_weights(path)
    assert loaded.info.arch == "squeezenet1_1"
    assert loaded.info.spec == V1_1
    assert loaded.info.preprocessing == IMAGENET_DEFAULT


# --- torchvision checkpoints ------------------------------------------------------------


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_torchvision_pth(name, tmp_path):
    tv = getattr(torchvision.models, name)(num_classes=1000).eval()
    with torch.no_grad():  # non-default values everywhere, so a mix-up shows
        for p in tv.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), path)
    assert detect_format(path) == "pytorch"
    model = build_model_from_weights(path)
    info = model.weights_info
    assert info.arch == name
    assert info.preprocessing == IMAGENET_DEFAULT
    assert len(info.classes) == 1000
    assert not model.training
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert float((model(x) - tv(x)).abs().max()) < 1e-6
    assert load_weights(path).info.arch == name


def test_module_prefix_and_training_checkpoint(tmp_path):
    tv = torchvision.models.squeezenet1_1(num_classes=10)
    state = tv.state_dict()
    ddp = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, ddp)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": state, "epoch": 3, "optimizer": {"lr": 0.1}}, ckpt)
    for path in (ddp, ckpt):
        loaded = load_weights(path)
        assert loaded.info.arch == "squeezenet1_1"
        assert loaded.info.num_classes == 10
        assert loaded.info.classes == ()
        assert loaded.state_dict.keys() == state.keys()
        assert all(torch.equal(loaded.state_dict[k], v) for k, v in state.items())
        model = build_model_from_weights(path)
        assert model.num_classes == 10


def test_pth_without_state_dict_is_rejected(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsError, match="no state dict"):
        load_weights(path)
    other = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(WeightsError, match="not a SqueezeNet state dict"):
        load_weights(other)


# --- download, hash, cache --------------------------------------------------------------


def test_download_cached(tmp_path):
    source_dir, cache = tmp_path / "remote", tmp_path / "cache"
    source_dir.mkdir()
    payload = b"squeezenet weights " * 1000
    source = source_dir / "weights-1234.pth"
    source.write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    url = source.as_uri()

    first = download_cached(url, sha[:8], cache)
    assert first == cache / "weights-1234.pth"
    assert first.read_bytes() == payload
    assert sorted(p.name for p in cache.iterdir()) == ["weights-1234.pth"]

    source.unlink()  # the second call must not need the source
    assert download_cached(url, sha[:8], cache) == first
    assert first.read_bytes() == payload

    # corrupted on disk -> fetched again
    source.write_bytes(payload)
    first.write_bytes(b"garbage")
    assert download_cached(url, sha[:8], cache).read_bytes() == payload

    # corrupted and the source is gone -> a clear error
    first.write_bytes(b"garbage")
    source.unlink()
    with pytest.raises(WeightsError, match="cannot download"):
        download_cached(url, sha[:8], cache)


def test_download_wrong_hash_leaves_nothing(tmp_path):
    source = tmp_path / "evil.pth"
    source.write_bytes(b"tampered")
    wrong = "0" * 8 if not hashlib.sha256(b"tampered").hexdigest().startswith("0" * 8) else "f" * 8
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match="SHA-256"):
        download_cached(source.as_uri(), wrong, cache)
    assert list(cache.iterdir()) == []  # neither the file nor a .part leftover


def test_catalog_resolves_shared_file(monkeypatch, dc_weights_path, tmp_path):
    tag = "squeezenet1_0_caffe.deepcompression_in1k"
    monkeypatch.setenv("SQUEEZENET_DATA", str(dc_weights_path.parent.parent))
    entry = CATALOG[tag]
    assert entry.arch == "squeezenet1_0_caffe"
    assert entry.resolve().samefile(dc_weights_path)
    model = create_model(weights=tag)
    assert model.weights_info.arch == "squeezenet1_0_caffe"
    for name in ("squeezenet1_0.tv_in1k", "squeezenet1_1.tv_in1k"):
        assert CATALOG[name].url.startswith("https://")
        assert CATALOG[name].url.split("-")[-1].startswith(CATALOG[name].sha256_prefix)
    monkeypatch.setenv("SQUEEZENET_DATA", str(tmp_path))
    with pytest.raises(WeightsError, match="not downloadable"):
        entry.resolve()


# --- mismatches -------------------------------------------------------------------------


def test_weights_model_mismatch(dc_loaded, dc_weights_path, tmp_path):
    with pytest.raises(WeightsError, match="do not fit"):
        build_model_from_weights(dc_loaded, arch="squeezenet1_1")
    with pytest.raises(WeightsError, match="do not fit"):
        create_model("squeezenet1_0_complex_bypass", weights=dc_loaded)
    with pytest.raises(WeightsError, match="1000 classes, not 10"):
        build_model_from_weights(dc_weights_path, num_classes=10)
    with pytest.raises(WeightsError, match="3 input channels, not 1"):
        create_model("squeezenet1_0_caffe", weights=dc_loaded, in_chans=1)
    # same shapes under another registered name is allowed, and says so
    plain = build_model_from_weights(dc_loaded, arch="squeezenet1_0")
    assert plain.weights_info.arch == "squeezenet1_0"
    assert plain.final_conv.padding == (0, 0)
    assert load_weights(dc_loaded) is dc_loaded


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        load_weights(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="is a directory"):
        load_weights(tmp_path)


def test_packaged_imagenet_classes_are_the_published_ones(monkeypatch):
    """The 1000 wnids shipped in the package are the shared class list's, in head order, and the
    names are torchvision's (those its SqueezeNet weights use)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    from conftest import DATA, require
    from squeezenet.weights import imagenet_class_names, imagenet_wnids, read_class_list

    monkeypatch.delenv("SQUEEZENET_IMAGENET_CLASSES", raising=False)
    shared_wnids, _ = read_class_list(require(DATA / "imagenet_classes.tsv"))
    assert imagenet_wnids() == shared_wnids and len(shared_wnids) == 1000
    assert list(imagenet_class_names()) == list(_IMAGENET_CATEGORIES)


def test_torchvision_state_dict_gets_wnids_too(tmp_path):
    """A bare 1000-class state dict (no metadata) is an ImageNet head: names and wnids both."""
    from squeezenet.weights import imagenet_wnids

    path = tmp_path / "tv.pth"
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    info = load_weights(path).info
    assert info.wnids == imagenet_wnids() and info.classes[0] == "tench"


def test_loading_a_weights_file_leaves_torchvision_unimported(dc_weights_path):
    """``import torchvision`` costs seconds (its ops import torch._dynamo): a command that loads a
    weights file (eval, predict, compress, export, the server's conversion child) must not pay it.
    The catalogue's torchvision entries are read when a tag asks for them."""
    code = (
        "import sys\n"
        "from squeezenet.weights import build_model_from_weights, CATALOG\n"
        f"build_model_from_weights({str(dc_weights_path)!r})\n"
        "assert 'squeezenet1_0_caffe.deepcompression_in1k' in CATALOG\n"
        "print('torchvision' in sys.modules)\n"
        "print(CATALOG['squeezenet1_1.tv_in1k'].arch, 'torchvision' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["False", "squeezenet1_1 True"]
