"""Output-aware quantization: calibration statistics, error feedback, rate-distortion codes,
the byte-budget allocation, fidelity, and the CLI around them (tiny models, a few images)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, run_cli
from conftest import cli_in_process as _cli
from squeezenet.compression import CompressionConfig, compress
from squeezenet.compression.budget import Candidate, allocate
from squeezenet.compression.layer_statistics import collect_stats, synthetic_images
from squeezenet.compression.output_aware import (
    LayerResult,
    blend_curvature,
    own_curvature,
    prepare_layer,
    quantize_layer,
)
from squeezenet.compression.weight_sharing import kmeans_1d
from squeezenet.errors import ModelError
from squeezenet.inference.fidelity import compare
from squeezenet.weights import build_model_from_weights

TINY = ROOT / "tests" / "data" / "sqz_v1_lossless.sqz"  # a 5-class SqueezeNet, half its weights pruned


@pytest.fixture(scope="module")
def tiny():
    return build_model_from_weights(TINY).eval()


def _images(n=24, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 3, size // 4, size // 4, generator=g)
    return F.interpolate(base, size=size, mode="bilinear") + 0.3 * torch.randn(n, 3, size, size, generator=g)


def test_statistics_are_the_moments_of_what_each_convolution_multiplies(tiny):
    images = _images(6)
    stats = collect_stats(tiny, [images[:4], images[4:]], fisher=True)
    conv = tiny.features[3].expand3x3
    seen = []
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    tiny(images)
    handle.remove()
    cols = F.unfold(seen[0], 3, padding=1).transpose(1, 2).reshape(-1, conv.in_channels * 9).double()
    s = stats["features.3.expand3x3.weight"]
    assert s.n == len(cols) and s.images == 6 and s.positions == cols.shape[0] / 6
    np.testing.assert_allclose(s.xx, (cols.T @ cols).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.mean, cols.mean(0).numpy(), rtol=1e-5, atol=1e-7)
    per_image = cols.reshape(6, -1, cols.shape[1]).mean(1)
    between = (per_image.T @ per_image / 6).numpy() - np.outer(s.mean, s.mean)
    np.testing.assert_allclose(s.between, between, rtol=1e-4, atol=1e-7)
    assert s.fisher.shape == (conv.out_channels,) and np.all(s.fisher >= 0) and s.fisher.sum() > 0


def test_the_logits_rows_keep_their_own_gradients_and_the_fisher_is_unchanged(tiny):
    images = _images(5)
    key = "classifier.1.weight"
    plain = collect_stats(tiny, [images[:3], images[3:]], fisher=True)
    stats = collect_stats(tiny, [images[:3], images[3:]], fisher=True, row_curvature=key)
    for k, s in stats.items():  # the row gradients must not leak into the Fisher of any layer
        np.testing.assert_allclose(s.fisher, plain[k].fisher, rtol=1e-6)
        assert (s.row_grads is None) == (k != key)
    s = stats[key]
    classes = tiny.classifier[1].out_channels
    assert s.row_grads.shape == (5, classes, tiny.classifier[1].in_channels)
    model = copy.deepcopy(tiny)
    weight = model.classifier[1].weight.requires_grad_(True)
    logits = model(images)
    probs = logits.softmax(1).detach()
    np.testing.assert_allclose(s.row_weights, (probs * (1 - probs)).numpy(), rtol=1e-5)
    for i in range(5):
        for r in range(classes):
            (grad,) = torch.autograd.grad(logits[i, r], weight, retain_graph=True)
            np.testing.assert_allclose(s.row_grads[i, r], grad[r].flatten().numpy(), rtol=1e-4, atol=1e-6)
            assert float(grad.abs().sum() - grad[r].abs().sum()) == 0.0  # logit r depends on row r alone


def _row_stats(n=7, out=3, d=4, seed=0):
    from squeezenet.compression.layer_statistics import LayerStats

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, d))
    stats = LayerStats("w", x.T @ x, x.sum(0), 50.0, np.ones(out))
    stats.row_grads = rng.normal(size=(n, out, d)).astype(np.float32)
    stats.row_weights = rng.random((n, out))
    return stats


def test_own_curvature_is_the_weighted_covariance_of_each_rows_logit_gradients():
    stats = _row_stats()
    rows = np.array([2, 0])
    idx = np.array([[3, 1, 0], [0, 2, 0]])
    valid = np.array([[True, True, True], [True, True, False]])
    own = own_curvature(stats, rows, idx, valid).numpy()
    for j, r in enumerate(rows):
        a = stats.row_weights[:, r] / stats.row_weights[:, r].sum()
        g = stats.row_grads[:, r, :].astype(np.float64)
        c = g - a @ g
        full = (c * a[:, None]).T @ c
        slots = idx[j][valid[j]]
        expected = np.zeros((3, 3))
        expected[np.ix_(valid[j], valid[j])] = full[np.ix_(slots, slots)]
        np.testing.assert_allclose(own[j], expected, rtol=1e-5, atol=1e-7)


def test_a_blended_row_keeps_the_shared_trace_and_no_gradient_keeps_the_shared_curvature():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 4, 4))
    shared = torch.from_numpy(a @ a.transpose(0, 2, 1))
    b = rng.normal(size=(3, 4, 4))
    own = torch.from_numpy(b @ b.transpose(0, 2, 1) * 100)
    own[2] = 0  # a row never active
    blended = blend_curvature(shared, own, 0.5)
    traces = torch.diagonal(blended, dim1=1, dim2=2).sum(1)
    np.testing.assert_allclose(traces.numpy(), torch.diagonal(shared, dim1=1, dim2=2).sum(1).numpy())
    np.testing.assert_allclose(blended[2].numpy(), shared[2].numpy())
    scale = float(torch.trace(shared[0]) / torch.trace(own[0]))
    np.testing.assert_allclose(blended[0].numpy(), 0.5 * shared[0].numpy() + 0.5 * scale * own[0].numpy())


def test_a_layer_with_its_own_curvature_weighs_its_rows_alike_and_changes_its_plan():
    w = np.random.default_rng(2).normal(size=(3, 4))
    stats = _row_stats()
    stats.fisher = np.array([1.0, 5.0, 30.0])
    shared = prepare_layer(w, stats, own_blend=0.0)
    own = prepare_layer(w, stats, own_blend=0.5)
    assert np.allclose(own.chunks[0].fisher, 12.0) and not np.allclose(shared.chunks[0].fisher, 12.0)
    assert not np.allclose(own.chunks[0].cov, shared.chunks[0].cov)
    stats.row_grads = None  # statistics without row gradients (synthetic images): the shared plan
    np.testing.assert_allclose(prepare_layer(w, stats, own_blend=0.5).chunks[0].cov, shared.chunks[0].cov)


def _layer(seed=0, out=16, d=24, n=4000, density=0.5):
    """A layer whose inputs are strongly correlated (what makes output error differ from weight error)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * (rng.random((d, d)) < 0.3) + 3 * np.eye(d)
    x = rng.normal(size=(n, d)) @ mix + 0.5
    w = rng.normal(size=(out, d)) * (rng.random((out, d)) < density)
    from squeezenet.compression.layer_statistics import LayerStats

    stats = LayerStats("w", x.T @ x, x.sum(0), float(n), np.ones(out))
    return w, x, stats


def _output_error(w, q, bias_delta, x):
    return float(np.mean((x @ w.T - (x @ q.T + bias_delta)) ** 2))


def test_error_feedback_beats_nearest_values_on_the_outputs():
    w, x, stats = _layer()
    plan = prepare_layer(w, stats)
    values = w[w != 0]
    codebook, assign = kmeans_1d(values, 8)
    nearest = np.zeros_like(w)
    nearest[w != 0] = codebook[assign]
    r = quantize_layer(plan, codebook, storage="float32")
    q = np.zeros(w.size)
    q[r.positions] = r.codebook[r.codes]
    q = q.reshape(w.shape)
    assert np.all(q[w == 0] == 0)  # pruned weights stay pruned
    assert len(np.unique(q[q != 0])) <= 8
    ours = _output_error(w, q, r.bias_delta, x)
    assert ours < 0.85 * _output_error(w, nearest, 0.0, x)  # 20-30 % less on such inputs
    # bias correction: the mean output is kept
    np.testing.assert_allclose((x @ q.T + r.bias_delta).mean(0), (x @ w.T).mean(0), atol=1e-6)
    # the reported distortion is 0.5 * error variance (unit Fisher), the quantity minimised
    resid = x @ (w - q).T
    assert r.distortion == pytest.approx(0.5 * resid.var(0).sum(), rel=1e-3)


def test_a_price_on_bits_trades_distortion_for_entropy():
    w, _, stats = _layer(seed=1, out=32)
    plan = prepare_layer(w, stats)
    codebook = np.unique(np.round(w[w != 0], 2))
    cheap = [quantize_layer(plan, codebook, lam=lam, storage="float32") for lam in (0.0, 1e-2, 1e-1)]
    bits = [r.code_bits for r in cheap]
    dist = [r.distortion for r in cheap]
    assert bits[0] > bits[1] > bits[2] and dist[0] < dist[1] < dist[2]
    pruned = quantize_layer(plan, codebook, lam=1e-1, allow_prune=True, storage="float32")
    assert pruned.kept < cheap[2].kept  # pruning is one more choice, taken where it pays


def _cand(nbytes, distortion, tag):
    r = LayerResult(np.zeros(1, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1), distortion,
                    0.0, 0)  # fmt: skip
    return Candidate(tag, False, r, float(nbytes), None)


def test_allocation_is_the_best_choice_within_the_budget():
    import itertools

    rng = np.random.default_rng(2)
    options = {}
    for layer in range(4):
        sizes = np.sort(rng.integers(10, 100, 5))
        dists = np.sort(rng.random(5))[::-1] * (layer + 1)
        options[f"l{layer}"] = [_cand(b, d, i) for i, (b, d) in enumerate(zip(sizes, dists, strict=True))]
    smallest = sum(min(c.bytes for c in v) for v in options.values())
    for budget in (smallest, smallest + 30, smallest + 80, smallest + 150):
        picked = allocate(options, budget)
        combos = [c for c in itertools.product(*options.values()) if sum(x.bytes for x in c) <= budget]
        best = min(sum(x.result.distortion for x in c) for c in combos)
        got = sum(c.result.distortion for c in picked.values())
        assert sum(c.bytes for c in picked.values()) <= budget
        assert got <= best * 1.25 + 1e-9  # Lagrangian + greedy fill: near the exhaustive optimum
    assert allocate(options, smallest - 1) is None


def test_compress_to_a_byte_budget_and_below_the_floor(tiny):
    images = _images(12)
    free = compress(TINY, CompressionConfig(bits=6, method="output-aware"), calibration=images)
    size_free = len(free.to_bytes())
    budget = size_free - 150
    cm = compress(TINY, CompressionConfig(bits=6, method="output-aware", max_bytes=budget, prune=True),
                  calibration=images)  # fmt: skip
    assert len(cm.to_bytes()) <= budget
    assert cm.notes["calibration"] == "12 calibration images" and cm.notes["predicted_kl"] >= 0
    assert set(cm.layers) == {k for k in tiny.state_dict() if k.endswith("weight")}
    with pytest.raises(ModelError, match=r"--max-bytes 500 is below the smallest file this model compresses to"):
        compress(TINY, CompressionConfig(method="output-aware", max_bytes=500), calibration=images)


def test_output_aware_keeps_predictions_better_than_nearest(tiny):
    calib, held = _images(24, seed=3), _images(32, seed=4)
    cfg = {"bits": 3}
    nearest = compress(TINY, CompressionConfig(**cfg, method="nearest")).build_model().eval()
    aware = compress(TINY, CompressionConfig(**cfg, method="output-aware"), calibration=calib).build_model().eval()
    a = compare(aware, tiny, [held], 5)
    n = compare(nearest, tiny, [held], 5)
    assert a.mean_kl < n.mean_kl


def test_data_free_default_uses_synthetic_images(tiny):
    cm = compress(TINY, CompressionConfig(bits=4, method="output-aware", synthetic_images=4))
    assert cm.notes["calibration"] == "4 synthetic images (no data)"
    from squeezenet.data.preprocessing import CAFFE_SQUEEZENET

    images = synthetic_images(3, 40, 3, CAFFE_SQUEEZENET, seed=1)
    again = synthetic_images(3, 40, 3, CAFFE_SQUEEZENET, seed=1)
    assert images.shape == (3, 3, 40, 40) and torch.equal(images, again)  # deterministic
    pixels = images + torch.tensor(CAFFE_SQUEEZENET.mean).view(1, 3, 1, 1)
    assert float(pixels.min()) >= 0 and float(pixels.max()) <= 255 and float(pixels.std()) > 20


def test_fidelity_numbers():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    same = compare(lambda x: logits, lambda x: logits, [torch.zeros(2, 1)], 3)
    assert same.agreement == 1.0 and same.mean_kl == pytest.approx(0.0, abs=1e-7) and same.n == 2
    other = torch.tensor([[0.0, 2.0, 0.0], [0.0, 1.0, 0.0]])
    diff = compare(lambda x: other, lambda x: logits, [torch.zeros(2, 1)], 3)
    p, q = logits.softmax(1), other.softmax(1)
    assert diff.agreement == 0.5
    assert diff.mean_kl == pytest.approx(float((p * (p.log() - q.log())).sum(1).mean()), rel=1e-5)


# ----------------------------------------------------------------------------- command line


def _image_folder(folder, n=10, size=40, bad=0):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    for i in range(bad):
        (folder / f"bad{i}.jpg").write_bytes(b"not an image")
    return folder


@pytest.mark.slow
def test_cli_compress_with_unlabelled_data_and_a_budget(tmp_path):
    data = _image_folder(tmp_path / "photos")
    out, report = tmp_path / "t.sqz", tmp_path / "r.json"
    r = run_cli("compress", "-w", str(TINY), "-o", str(out), "--data", str(data), "--unlabelled", "--max-bytes",
                "2600", "--train-steps", "2", "--report", str(report), "--bits", "5")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size <= 2600
    assert "fidelity on 2 held-back images of --data: top-1 agreement" in r.stdout
    import json

    rep = json.loads(report.read_text())
    assert rep["fidelity"]["n"] == 2 and 0 <= rep["fidelity"]["top1_agreement"] <= 1
    assert rep["notes"]["calibration"] == "8 calibration images" and len(rep["choices"]) == 8
    r = run_cli("eval", "-w", str(out), "--data", str(_labelled(tmp_path)), "--reference", str(TINY), "-j", "0")
    assert r.returncode == 0, r.stderr
    assert "against " in r.stdout and "top-1 agreement" in r.stdout and "mean KL" in r.stdout
    assert " lost, " in r.stdout and "gained, McNemar p = " in r.stdout


def _labelled(tmp_path):
    root = tmp_path / "labelled"
    for name in ("ant", "cat"):
        _image_folder(root / name, n=2)
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lossless", "--max-bytes", "3000"], "--lossless keeps every value exactly; it takes no --max-bytes"),
        (["--max-bytes", "3000", "--method", "nearest"], "--max-bytes: only with --method output-aware"),
        (["--max-bytes", "500"], "--max-bytes 500 is below the smallest file this model compresses to"),
        (["--calibration-images", "5"], "--calibration-images: only with --data"),
    ],
)
def test_cli_refuses_before_any_work(capsys, tmp_path, args, message):
    out = tmp_path / "t.sqz"
    rc, stdout, stderr = _cli(capsys, "compress", "-w", TINY, "-o", out, *args)
    assert rc == 1 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("squeezenet: error:") and message in lines[0], stderr
    assert not out.exists()


def test_cli_data_folder_without_a_readable_image(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    broken = _image_folder(tmp_path / "broken", n=0, bad=2)
    for folder, message in ((empty, "folder holds no image files"), (broken, "no image could be read")):
        out = tmp_path / "t.sqz"
        rc, _, stderr = _cli(capsys, "compress", "-w", TINY, "-o", out, "--data", folder, "--unlabelled")
        assert rc == 1 and message in stderr and "Traceback" not in stderr, stderr
        errors = [line for line in stderr.splitlines() if line.startswith("squeezenet: error:")]
        assert len(errors) == 1 and not out.exists()


def test_cli_too_few_images_to_hold_back(capsys, tmp_path):
    """One image calibrates; the fidelity line says it was not measured rather than scoring on it."""
    out = tmp_path / "t.sqz"
    rc, stdout, stderr = _cli(capsys, "compress", "-w", TINY, "-o", out, "--data", _image_folder(tmp_path / "one", n=1),
                              "--unlabelled")  # fmt: skip
    assert rc == 0 and out.exists(), stderr
    assert "output-aware: 1 calibration image)" in stdout
    assert "fidelity: not measured (--data has too few images to hold any back)" in stdout
