"""What the half-A studies of compression share: the folds of half A, fitting the command's byte
budget with one part changed, per-image KL, paired comparison and their tables.

Half A is ``bench_compress``'s calibration half of imagenet-samples; none of the studies reads
half B, on which the product's figures are reported. Fold f holds back the images i with
i % 5 == f, as ``squeezenet compress --data`` holds back every fifth image (fold 4 is the
command's own).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks' helpers

from _common import add_tiny_option
from bench_compress import HOLDOUT_PERIOD, IMAGES, halves, read, source_and_reference
from squeezenet.compression import (
    CALIBRATION_BATCH,
    DAMP,
    OWN_CURVATURE,
    CompressedModel,
    CompressionConfig,
    candidates_for,
    compress,
    fit_budget,
    initial_tensors,
    prepare_layer,
)
from squeezenet.compression.choices import NEAREST, OUTPUT_AWARE
from squeezenet.inference.fidelity import image_divergence

RESULTS = Path(__file__).resolve().parent / "results"
FOLDS = HOLDOUT_PERIOD  # fold f holds back the images i with i % 5 == f; fold 4 is the command's own
MEASURE_IMAGES = 64  # calibration images that measure each layer alone for the "measured" allocation


def kl_per_image(reference, model, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(KL(reference || model) per image in nats, whether the top-1 classes agree), in float64:
    paired differences between variants are small."""
    with torch.no_grad():
        ref = torch.cat([reference(images[i : i + 25]) for i in range(0, len(images), 25)]).double()
        out = torch.cat([model(images[i : i + 25]) for i in range(0, len(images), 25)]).double()
    return image_divergence(ref, out)


def batches_of(images: torch.Tensor) -> list[torch.Tensor]:
    return [images[i : i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)]


@dataclasses.dataclass
class Fit:
    """The command's budget path, stopped before writing: each layer's picked candidate and what
    re-encoding needs (the file's other tensors, the float weights, bits, config and weights info)."""

    picked: dict
    tensors: dict
    state: dict
    bits: dict
    config: CompressionConfig
    info: object

    def compressed(self, tensors: dict) -> CompressedModel:
        """The file ``tensors`` make, as the command writes it."""
        return CompressedModel(self.info, tensors, self.config)


def fit_picks(source, reference, stats: dict, kept: torch.Tensor, coherence: dict, budget: int,
              variant: dict) -> Fit:  # fmt: skip
    """The command's budget path with the variant's settings; ``coherence``: each layer's gradient
    coherence on ``kept``, the calibration images."""
    cfg = CompressionConfig(method=OUTPUT_AWARE, max_bytes=budget, prune=True)
    loaded, state, tensors, bits = initial_tensors(source, cfg)
    encode = lambda t, notes: CompressedModel(loaded.info, t, cfg, notes).encode()  # noqa: E731
    layers = [k for k in stats if k in bits]
    options = {}
    for k in layers:
        last = k == layers[-1]
        settings = {"damp": DAMP, "coherence": 1.0 if last else 0.0, "own_blend": OWN_CURVATURE if last else 0.0}
        settings.update(variant.get("last" if last else "other", {}))
        if settings["coherence"] == "gradient":
            settings["coherence"] = coherence[k]
        plan = prepare_layer(state[k].numpy(), stats[k], **settings)
        options[k] = candidates_for(k, plan, tensors[k].codebook, bits[k], cfg.codebook_dtype, prune=cfg.prune)
    picked = fit_budget(encode, tensors, options, cfg, {}, 0)
    if variant.get("allocation") == "measured":
        weights = measured_weights(reference, picked, kept[:MEASURE_IMAGES])
        options = {k: [weighed(c, weights[k]) for c in v] for k, v in options.items()}
        picked = fit_budget(encode, tensors, options, cfg, {}, 0)
    return Fit(picked, tensors, state, bits, cfg, loaded.info)


def with_picked(tensors: dict, picked: dict) -> dict:
    """The file's tensors with each layer's picked candidate and its corrected bias."""
    out = dict(tensors)
    for k, c in picked.items():
        out[k] = c.tensor
        bias = k[: -len("weight")] + "bias"
        out[bias] = (np.asarray(tensors[bias], np.float64) + c.result.bias_delta).astype(np.float32)
    return out


def weighed(c, weight: float):
    return dataclasses.replace(c, result=dataclasses.replace(c.result, distortion=weight * c.result.distortion))


def measured_weights(reference, picked: dict, images: torch.Tensor) -> dict[str, float]:
    """Per layer: the KL its picked candidate adds alone in the release (on calibration images)
    over the second-order estimate, clipped to [1/4, 16] (tiny estimates are noise)."""
    out = {}
    for k, c in picked.items():
        bias = reference.state_dict()[k[: -len("weight")] + "bias"] + torch.from_numpy(c.result.bias_delta).float()
        alone = layer_alone(reference, k, torch.from_numpy(c.tensor.to_dense()), bias)
        kl = float(kl_per_image(reference, alone, images)[0].mean())
        out[k] = float(np.clip(kl / c.result.distortion, 0.25, 16.0)) if c.result.distortion > 0 else 1.0
    return out


def layer_alone(reference, key: str, weight: torch.Tensor, bias: torch.Tensor):
    """The release with one layer's weight and bias replaced."""
    model = copy.deepcopy(reference)
    model.load_state_dict({**reference.state_dict(), key: weight, key[: -len("weight")] + "bias": bias})
    return model.eval()


def split(images: torch.Tensor, fold: int) -> tuple[torch.Tensor, list[int]]:
    held = [i for i in range(len(images)) if i % FOLDS == fold]
    return torch.stack([x for i, x in enumerate(images) if i % FOLDS != fold]), held


def paired(base_kl, base_agree, kl, agree, seed: int = 0) -> dict:
    diff = kl - base_kl
    rng = np.random.default_rng(seed)
    boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    return {
        "mean_kl": float(kl.mean()),
        "median_kl": float(np.median(kl)),
        "agreement": float(agree.mean()),
        "kl_diff": float(diff.mean()),
        "kl_diff_95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "flips_gained": int(((agree == 1) & (base_agree == 0)).sum()),
        "flips_lost": int(((agree == 0) & (base_agree == 1)).sum()),
    }


def table_row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def variant_table(r: dict) -> list[str]:
    out = [
        table_row(
            "variant", "mean KL", "median KL", "top-1 agreement", "KL change (95 % bootstrap)", "flips gained / lost"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, v in r["variants"].items():
        lo, hi = v["kl_diff_95"]
        change = f"{v['kl_diff']:+.4f} ({lo:+.4f} .. {hi:+.4f})"
        agree = f"{v['agreement']:.1%}"
        flips = f"{v['flips_gained']} / {v['flips_lost']}"
        out.append(table_row(name, f"{v['mean_kl']:.4f}", f"{v['median_kl']:.4f}", agree, change, flips))
    return out


def header(title: str, script: str, p: dict, after_date: str = "") -> list[str]:
    """The half-A results' first lines: title, the command that wrote them, the machine."""
    m = p["machine"]
    return [
        f"# {title}",
        "",
        f"Command: `python benchmarks/studies/{Path(script).name}{' --tiny' if p['tiny'] else ''}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['date']}{after_date}",
        "",
    ]


def load(tiny: bool):
    """(weights file, its model, half A's paths, half A's images as the weights expect them), on 2
    threads; None, after one line on stderr, when the data is missing."""
    torch.set_num_threads(2)
    found = source_and_reference(tiny)
    if found is None:
        return None
    source, reference = found
    paths, _ = halves(IMAGES, 20 if tiny else None)
    images, _ = read(paths, reference.weights_info, labelled=False)
    return source, reference, paths, images


def start(ap: argparse.ArgumentParser, folds: bool = False):
    """The half-A scripts' start: ``--tiny`` (and ``--folds``) added and parsed, half A loaded.
    (args, weights file, its model, half A's paths, images); None when the data is missing."""
    if folds:
        ap.add_argument("--folds", type=int, nargs="*", default=list(range(FOLDS)), help="folds of half A to score")
    add_tiny_option(ap)
    args = ap.parse_args()
    found = load(args.tiny is not None)
    return None if found is None else (args, *found)


def start_folds(ap: argparse.ArgumentParser, budget: int):
    """``start`` with ``--folds``, for the cross-validating scripts: (args, weights file, its
    model, images, budget, folds); a --tiny run gets a tiny budget and the command's fold only."""
    run = start(ap, folds=True)
    if run is None:
        return None
    args, source, reference, _, images = run
    if args.tiny is not None:
        return args, source, reference, images, tiny_budget(source), [FOLDS - 1]
    return args, source, reference, images, budget, sorted(set(args.folds))


def tiny_budget(source) -> int:
    """A --tiny run's budget: 3 % below the tiny model's 8-bit file."""
    return int(0.97 * len(compress(source, CompressionConfig(method=NEAREST)).to_bytes()))
