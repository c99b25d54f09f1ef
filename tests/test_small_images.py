"""Small-image training pieces: BatchNorm SqueezeNets and their folding, the in-memory
image cache, AdamW / symmetric augmentation options and the allocator setting."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from squeezenet.models import V1_1, SqueezeNet, SqueezeNetSpec, fold_batchnorm, from_spec
from squeezenet.training import TrainingError, train
from test_datasets import make_tree

CIFAR_LIKE = SqueezeNetSpec(
    stem_channels=16, stem_kernel=3, stem_stride=1, stem_padding=1, stem_pool=False, batch_norm=True,
    fires=V1_1.fires[:4], pool_after=(0, 2),
).with_bypass("complex")  # fmt: skip


def _trained_bn_model(spec: SqueezeNetSpec = CIFAR_LIKE) -> SqueezeNet:
    """A BN model whose running statistics and affine parameters are far from their defaults."""
    torch.manual_seed(0)
    model = from_spec(spec, num_classes=7)
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 3 + 1)
    return model.eval()


def test_cifar_geometry_and_parameters():
    assert CIFAR_LIKE.spatial_sizes(32) == [32, 16, 8]
    model = from_spec(CIFAR_LIKE, num_classes=10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert isinstance(model.features[2], torch.nn.Identity)  # no pool after conv1
    assert model.features[0].bias is None and model.features[3].squeeze.bias is None  # BN carries the bias
    assert SqueezeNetSpec.from_dict(json.loads(json.dumps(CIFAR_LIKE.to_dict()))) == CIFAR_LIKE


def test_plain_specs_keep_torchvision_keys():
    import torchvision

    ours = from_spec(V1_1).state_dict().keys()
    assert list(ours) == list(torchvision.models.squeezenet1_1().state_dict().keys())


def test_fold_batchnorm_is_exact_and_removes_every_bn():
    model = _trained_bn_model()
    folded = fold_batchnorm(model)
    assert not folded.spec.batch_norm and folded.spec == replace(CIFAR_LIKE, batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert torch.allclose(expected, got, atol=1e-4, rtol=1e-4), (expected - got).abs().max()
    assert sum(p.numel() for p in folded.parameters()) == sum(
        p.numel() for p in from_spec(replace(CIFAR_LIKE, batch_norm=False), num_classes=7).parameters()
    )
    assert fold_batchnorm(folded) is folded  # nothing to fold


def test_folded_weights_run_in_the_numpy_runtime(tmp_path):
    from squeezenet.data.preprocessing import Preprocessing
    from squeezenet.weights import LoadedWeights, WeightsInfo, write_safetensors

    folded = fold_batchnorm(_trained_bn_model())
    info = WeightsInfo(
        arch="cifar_like", spec=folded.spec, num_classes=7, in_chans=3, preprocessing=Preprocessing(crop=32, resize=32),
        classes=tuple("abcdefg"),
    )  # fmt: skip
    path = tmp_path / "w.safetensors"
    write_safetensors(LoadedWeights(info, folded.state_dict()), path)
    sys.path.insert(0, str(Path(__file__).parents[1] / "src" / "squeezenet" / "runtime"))
    try:
        import numpy_runtime
    finally:
        sys.path.pop(0)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = folded(torch.from_numpy(x)).numpy()
    assert np.abs(numpy_runtime.SqueezeNetNumpy(path)(x) - expected).max() < 1e-4


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("data") / "d", n_train=8, n_val=2, size=32)


def _config(tree: Path, out: Path, **overrides) -> dict:
    base = {
        "data": str(tree), "output": str(out), "spec": CIFAR_LIKE.to_dict(), "image_size": 32, "batch_size": 8,
        "epochs": 1, "workers": 0, "lr": 0.05, "threads": 1, "augment": "light", "dropout": 0.0,
    }  # fmt: skip
    return {**base, **overrides}


def test_cached_images_train_exactly_like_decoded_ones(small_tree, tmp_path):
    plain = train(_config(small_tree, tmp_path / "plain"))
    cached = train(_config(small_tree, tmp_path / "cached", cache_images=True))
    a = torch.load(tmp_path / "plain" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cached" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert plain.last["val_top1"] == cached.last["val_top1"]


def test_bn_run_exports_folded_weights(small_tree, tmp_path):
    from squeezenet.weights import build_model_from_weights, load_weights

    train(_config(small_tree, tmp_path / "run", cache_images=True))
    loaded = load_weights(tmp_path / "run" / "last.safetensors")
    assert not loaded.info.spec.batch_norm and not any("running_mean" in k for k in loaded.state_dict)
    assert loaded.info.provenance.get("batch_norm") == "folded"
    model = build_model_from_weights(tmp_path / "run" / "last.safetensors")
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_squeezenet_cifar_trains_at_its_own_32_pixels_without_being_told(small_tree, tmp_path):
    """The recipe's crop is ImageNet's 224: a model registered for 32 px images keeps its own."""
    from squeezenet.models import V1_1_CIFAR, default_input_size
    from squeezenet.weights import load_weights

    assert default_input_size("squeezenet_cifar") == 32 and V1_1_CIFAR.spatial_sizes(32) == [32, 16, 8]
    config = {k: v for k, v in _config(small_tree, tmp_path / "run").items() if k not in ("spec", "image_size")}
    train({**config, "model": "squeezenet_cifar"})
    info = load_weights(tmp_path / "run" / "last.safetensors").info
    assert info.arch == "squeezenet_cifar"
    assert (info.preprocessing.crop, info.preprocessing.resize) == (32, 32)


def test_cache_counts_and_skips_a_corrupt_image(tmp_path):
    from squeezenet.data.cache import cache_in_memory
    from squeezenet.data.sources import open_dataset

    root = make_tree(tmp_path / "d", n_train=3, n_val=1, size=16)
    (root / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "train" / "dog" / "big.png").write_bytes(b"")
    Image.new("RGB", (20, 12)).save(root / "train" / "emu" / "other_size.png")
    ds = cache_in_memory(open_dataset(root, "train"), workers=0)
    results = [ds[i] for i in range(len(ds))]
    errors = [r[3] for r in results if r[3] is not None]
    assert len(errors) == 2 and all("broken.png" in e or "big.png" in e for e in errors)
    shapes = {tuple(r[0].shape) for r in results if r[0] is not None}
    assert shapes == {(3, 16, 16), (3, 12, 20)}  # mixed sizes are kept as they are


def test_cache_refuses_a_dataset_larger_than_its_limit(tmp_path):
    from squeezenet.data.cache import cache_in_memory
    from squeezenet.data.sources import open_dataset
    from squeezenet.errors import DataError

    root = make_tree(tmp_path / "d", n_train=2, n_val=1, size=16)
    with pytest.raises(DataError, match="too large for --cache-images"):
        cache_in_memory(open_dataset(root, "train"), workers=0, max_bytes=1000)


def test_adamw_and_symmetric_augmentation_train(small_tree, tmp_path):
    result = train(_config(small_tree, tmp_path / "run", recipe="finetune", lr=None, augment="symmetric", epochs=2))
    assert result.steps == 6 and np.isfinite(result.last["train_loss"])
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert "exp_avg_sq" in next(iter(state["optimizer"]["state"].values()))  # really AdamW


def test_symmetric_augmentation_only_flips_and_turns():
    from squeezenet.data.preprocessing import Preprocessing
    from squeezenet.training.recipes import build_train_transform

    # 80 px: the "light" geometry (resize 80, random 80 crop) leaves the image as it is
    pre = Preprocessing(crop=80, resize=80, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), pixel_range=255.0)
    transform = build_train_transform(pre, "symmetric")
    image = torch.randint(0, 256, (1, 80, 80), dtype=torch.uint8).repeat(3, 1, 1)
    orientations = []
    for k in range(4):
        turned = torch.rot90(image, k, dims=(1, 2))
        orientations += [turned, turned.flip(2)]
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out = transform(image).round().to(torch.uint8)
        match = [i for i, o in enumerate(orientations) if torch.equal(out, o)]
        assert len(match) == 1, "not one of the eight orientations"
        seen.add(match[0])
    assert len(seen) >= 6


def test_symmetric_jitter_moves_and_reexposes_a_little():
    from squeezenet.data.preprocessing import Preprocessing
    from squeezenet.training.recipes import build_train_transform

    pre = Preprocessing(crop=80, resize=80, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), pixel_range=255.0)
    transform = build_train_transform(pre, "symmetric_jitter")
    # pose: a bright spot lands within a few pixels of where one of the 8 orientations puts it
    spot = torch.zeros(3, 80, 80, dtype=torch.uint8)
    spot[:, 18:23, 28:33] = 200
    places = []
    for k in range(4):
        turned = torch.rot90(spot[0], k).nonzero().float().mean(0)
        places += [turned, torch.tensor([turned[0], 79 - turned[1]])]
    moved = []
    for seed in range(20):
        torch.manual_seed(seed)
        out = transform(spot)[0]
        centre = (out > 0.5 * out.max()).nonzero().float().mean(0)
        moved.append(min(float((centre - p).norm()) for p in places))
    assert max(moved) < 6 and sum(m > 0.5 for m in moved) >= 5
    # exposure: a flat gray comes out brighter or darker by at most 20 %
    gray = torch.full((3, 80, 80), 100, dtype=torch.uint8)
    levels = []
    for seed in range(20):
        torch.manual_seed(seed)
        levels.append(float(transform(gray)[:, 30:50, 30:50].mean()))
    assert 79 <= min(levels) < max(levels) <= 121 and max(levels) - min(levels) > 10


def test_cutout_erases_one_quarter_square_to_the_mean_half_the_time():
    from squeezenet.data.preprocessing import Preprocessing
    from squeezenet.training.recipes import build_train_transform

    # a constant image normalises to 1 everywhere; the erased square is set to 0 (the mean)
    pre = Preprocessing(crop=32, resize=32, mean=(99.0,) * 3, std=(1.0,) * 3, pixel_range=255.0)
    transform = build_train_transform(pre, "cutout")
    image = torch.full((3, 32, 32), 100, dtype=torch.uint8)
    erased = 0
    for seed in range(200):
        torch.manual_seed(seed)
        out = transform(image)
        zero = (out == 0).all(dim=0)
        assert torch.equal((out == 1).all(dim=0), ~zero), "pixels other than the erased square changed"
        if zero.any():
            rows, cols = zero.nonzero().unbind(1)
            assert zero.sum() == 16 * 16 and rows.max() - rows.min() == 15 and cols.max() - cols.min() == 15
            erased += 1
    assert 70 <= erased <= 130


def test_unknown_optimizer_and_augment_are_one_line_errors(small_tree, tmp_path, capsys):
    from squeezenet.cli.main import main

    with pytest.raises(TrainingError, match="unknown optimizer"):
        train(_config(small_tree, tmp_path / "r", optimizer="lion"))
    with pytest.raises(TrainingError, match="give its --lr too"):
        train(_config(small_tree, tmp_path / "r", optimizer="adamw", lr=None))
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error
        main(["train", str(small_tree), "-o", str(tmp_path / "r2"), "--augment", "wild"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "invalid choice: 'wild'" in err[0]


def test_keep_freed_memory_sets_glibc_thresholds():
    from squeezenet.training.allocator import keep_freed_memory

    assert keep_freed_memory() is sys.platform.startswith("linux")


def test_per_sample_seeding_does_not_touch_accelerator_seeds(monkeypatch, small_tree):
    """The per-sample seed must reach the CPU generator only (torch.manual_seed is ~0.8 ms a call)."""
    from squeezenet.data.preprocessing import Preprocessing
    from squeezenet.data.sources import open_dataset
    from squeezenet.training.recipes import build_train_transform

    calls = []
    monkeypatch.setattr(torch, "manual_seed", lambda *a: calls.append(a))
    transform = build_train_transform(Preprocessing(crop=32, resize=32), "light")
    ds = open_dataset(small_tree, "train").with_transform(transform)
    first, again = ds[(0, 123)][0], ds[(0, 123)][0]
    assert torch.equal(first, again) and not calls


def test_adapted_normalisation_is_identity_for_imagenet_statistics():
    from squeezenet.data.pixels import IMAGENET_MEAN, IMAGENET_STD
    from squeezenet.data.preprocessing import IMAGENET_DEFAULT, Preprocessing
    from squeezenet.data.statistics import adapted_preprocessing

    mean255, std255 = np.array(IMAGENET_MEAN) * 255, np.array(IMAGENET_STD) * 255
    same = adapted_preprocessing(IMAGENET_DEFAULT, mean255, std255)
    assert np.allclose(same.mean, IMAGENET_MEAN) and np.allclose(same.std, IMAGENET_STD)
    caffe = Preprocessing(mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), pixel_range=255.0, channel_order="BGR")
    flat = adapted_preprocessing(caffe, np.array([10.0, 20.0, 30.0]), std255 / 2)  # RGB statistics, half contrast
    assert flat.mean == (30.0, 20.0, 10.0) and np.allclose(flat.std, 0.5)  # BGR order, doubled contrast


def test_adapt_normalization_travels_with_the_exported_weights(small_tree, tmp_path):
    from squeezenet.weights import load_weights

    train(_config(small_tree, tmp_path / "run", adapt_normalization=True))
    pre = load_weights(tmp_path / "run" / "last.safetensors").info.preprocessing
    pixels = np.concatenate([np.asarray(Image.open(p)).reshape(-1, 3) for p in small_tree.glob("train/*/*.png")])
    assert np.allclose(pre.mean, pixels.mean(0) / 255, atol=1e-3)  # measured on the training images
