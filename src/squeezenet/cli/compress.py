"""``squeezenet compress`` / ``decompress``: Deep Compression to and from ``.sqz`` files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from squeezenet.atomic import atomic_write_text
from squeezenet.cli.common import bits, bits_per_layer, count, fraction, output_file, status_stream, warn, wrote
from squeezenet.compression.choices import (
    AUTO,
    CODERS,
    DATA_FREE_KIND_BITS,
    DEFAULT_BITS,
    DEFAULT_METHOD,
    HOLDOUT,
    METHODS,
    NEAREST,
    NEAREST_LARGE_BITS,
    OUTPUT_AWARE,
    POSITION_SCHEMES,
    SYNTHETIC_IMAGES,
    TRAIN_STEPS,
)
from squeezenet.errors import ModelError, WeightsError

METHOD_HELP = {
    OUTPUT_AWARE: "codes chosen for what each layer outputs on calibration images",
    NEAREST: "every weight to its nearest k-means centroid",
}


def _default_bits_help() -> str:
    """The presets ``_config`` starts from, in words."""
    kinds = ", ".join(f"{kind} {b}" for kind, b in DATA_FREE_KIND_BITS)
    return (
        f"default: {DEFAULT_BITS} for all layers; without --data and --max-bytes {kinds} with {OUTPUT_AWARE}, "
        f"fire expand 3x3 and the final layer {NEAREST_LARGE_BITS} with {NEAREST}"
    )


def add_parser(sub) -> None:
    p = sub.add_parser("compress", help="Deep Compression of weights into a small .sqz file")
    p.add_argument("--weights", "-w", required=True, help="input weights file or catalogue tag")
    p.add_argument("--output", "-o", type=output_file, required=True, help="output .sqz file (- for standard output)")
    p.add_argument(
        "--bits", type=bits_per_layer, help=f"codebook bits: N for all layers or LAYER=N,... ({_default_bits_help()})"
    )
    p.add_argument(
        "--large-bits", type=bits, help="bits of fire expand 3x3 and the final layer (default: those of --bits)"
    )
    p.add_argument(
        "--max-bytes",
        type=count(1),
        help="file-size budget: the bits (and pruning) of every layer are chosen for the smallest output error "
        "(default: none, the bits decide the size)",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help="; ".join(f"{m}: {METHOD_HELP[m]}" for m in METHODS) + f" (default: {DEFAULT_METHOD})",
    )
    p.add_argument(
        "--density",
        type=fraction(keywords=("paper",)),
        help="prune first: a fraction in (0, 1] for all layers or 'paper' (default: keep zeros)",
    )
    p.add_argument("--lossless", action="store_true", help="keep every value exactly (float32, up to 12-bit codebooks)")
    p.add_argument("--coder", choices=CODERS, default=AUTO, help=f"entropy coder (default: {AUTO}, the smallest)")
    p.add_argument(
        "--positions",
        choices=POSITION_SCHEMES,
        default=AUTO,
        help=f"sparse index scheme (default: {AUTO}, the smallest)",
    )
    p.add_argument(
        "--data",
        help="images to calibrate on (any folder of images with --unlabelled, else <class>/<image>); "
        f"{HOLDOUT * 100:.0f} %% of them are held back to measure the result on (default: none, "
        f"{SYNTHETIC_IMAGES} synthetic images calibrate {OUTPUT_AWARE} codes)",
    )
    p.add_argument("--unlabelled", action="store_true", help="the --data images need no classes (distillation)")
    p.add_argument("--calibration-images", type=count(1), help="use at most this many images of --data (default: all)")
    p.add_argument(
        "--train-steps",
        type=count(0),
        default=TRAIN_STEPS,
        help="steps of codebook and bias training after calibration (with --data; "
        f"default {TRAIN_STEPS}: none; with --unlabelled it distils from the uncompressed model)",
    )
    p.add_argument("--report", help="also write the size and fidelity report (JSON) here")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.set_defaults(run=run)

    d = sub.add_parser("decompress", help="expand a .sqz file to the project's .safetensors format")
    d.add_argument("weights", help="input .sqz file")
    d.add_argument(
        "--output", "-o", type=output_file, required=True, help="output .safetensors file (- for standard output)"
    )
    d.set_defaults(run=run_decompress)


def _check_option_combinations(args: argparse.Namespace) -> None:
    """Options that the others make meaningless are refused instead of silently dropped."""
    if args.lossless:
        lossy = [name for name, value in (("--bits", args.bits), ("--large-bits", args.large_bits),
                                          ("--density", args.density), ("--max-bytes", args.max_bytes))
                 if value is not None]  # fmt: skip
        if lossy:
            raise ModelError(f"--lossless keeps every value exactly; it takes no {', '.join(lossy)}")
    if not args.data:
        needs_data = [name for name, value in (("--unlabelled", args.unlabelled), ("--train-steps", args.train_steps),
                                               ("--calibration-images", args.calibration_images))
                      if value]  # fmt: skip
        if needs_data:
            raise ModelError(f"{', '.join(needs_data)}: only with --data (the images to tune the codebooks on)")
    if args.max_bytes is not None and args.method == NEAREST:
        raise ModelError("--max-bytes: only with --method output-aware (the budget is spent by output error)")


def _config(args: argparse.Namespace):
    from squeezenet.compression import CompressionConfig

    if args.lossless:
        cfg = CompressionConfig.lossless()
    elif args.data or args.max_bytes is not None:
        cfg = CompressionConfig(method=args.method)
    else:
        cfg = CompressionConfig.data_free(args.method)
    if args.bits is not None:
        cfg.bits, cfg.large_bits, cfg.kind_bits = args.bits, None, {}
    if args.large_bits is not None:
        cfg.large_bits, cfg.kind_bits = args.large_bits, {}
    if args.density is not None:
        cfg.densities = args.density
    if args.max_bytes is not None:
        cfg.max_bytes, cfg.prune = args.max_bytes, True
    cfg.codes_coder = cfg.gaps_coder = args.coder
    cfg.positions = args.positions
    return cfg


def _image_files(folder: str, labelled: bool, info) -> list[tuple]:
    """[(path, target)] of --data: any image under the folder, or class folders with labels."""
    from squeezenet.data import find_images, scan_class_folders
    from squeezenet.inference.labels import folder_targets

    if not labelled:
        return [(p, -1) for p in find_images([folder])]
    folders, samples = scan_class_folders(folder)
    targets = folder_targets(folders, info, folder)
    return [(p, targets[name]) for p, name in samples]


def _split(samples: list, holdout: float) -> tuple[list, list]:
    """(calibration, held back): every k-th image in sorted order is held back (at least one)."""
    if len(samples) < 2:
        return samples, []
    period = max(2, round(1 / holdout))
    held = [s for i, s in enumerate(samples) if i % period == period - 1] or samples[-1:]
    kept = [s for s in samples if s not in held]
    return kept, held


def _read_images(samples: list, info, progress: bool, what: str):
    """(images tensor, labels tensor, skipped messages)."""
    import torch
    from torch.utils.data import DataLoader

    from squeezenet.data import ImageListDataset, build_transform, collate_skipping_bad
    from squeezenet.inference.evaluate import default_workers

    ds = ImageListDataset(samples, build_transform(info.preprocessing), info.preprocessing.image_mode)
    loader = DataLoader(ds, batch_size=16, num_workers=min(2, default_workers()), collate_fn=collate_skipping_bad)
    images, labels, skipped = [], [], []
    from tqdm import tqdm

    for batch in tqdm(loader, desc=f"reading {what}", unit="batch", disable=not progress, leave=False):
        skipped += batch.skipped
        if batch.paths:
            images.append(batch.images)
            labels.append(batch.targets)
    if not images:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    return torch.cat(images), torch.cat(labels), skipped


def run(args: argparse.Namespace) -> int:
    from squeezenet.compression import compress, layer_table
    from squeezenet.compression.pipeline import check_budget_for
    from squeezenet.errors import DataError
    from squeezenet.weights import build_model_from_weights

    out = Path(args.output)
    if out.is_dir():
        raise WeightsError(f"{out}: is a directory; give a file name")
    if Path(args.weights).exists() and out.exists() and out.resolve() == Path(args.weights).resolve():
        raise WeightsError(f"{out}: output would overwrite the input")
    _check_option_combinations(args)
    cfg = _config(args)
    source = build_model_from_weights(args.weights)
    info = source.weights_info
    calib = held = None
    if args.data:
        samples = _image_files(args.data, not args.unlabelled, info)  # no image file: an error now
        if args.calibration_images:
            samples = samples[: args.calibration_images]
        kept, held_samples = _split(samples, HOLDOUT)
    if cfg.max_bytes is not None:
        check_budget_for(source, cfg)  # a budget the format cannot reach: an error before any long work
    if args.data:
        calib, labels, skipped = _read_images(kept, info, args.progress, "calibration images")
        for message in skipped:
            warn(message)
        if len(calib) == 0:
            raise DataError(f"{args.data}: no image could be read ({len(skipped)} skipped)")
        held, held_labels, skipped = _read_images(held_samples, info, args.progress, "held-back images")
        for message in skipped:
            warn(message)
    data, kwargs = None, {}
    steps = args.train_steps
    if calib is not None and steps > 0:
        data = _batches(calib, None if args.unlabelled else labels)
        kwargs = {"steps": steps, "teacher": source if args.unlabelled else None, "biases": True}
    cm = compress(source, cfg, data=data, calibration=calib, progress=args.progress, **kwargs)
    data_bytes, report = cm.encode()
    from squeezenet.atomic import atomic_write_bytes

    atomic_write_bytes(out, data_bytes, WeightsError)
    fidelity = _fidelity(cm, source, held, held_labels if held is not None else None)
    rows = layer_table(cm, report)
    if args.report:
        summary = {"layers": rows, "sections": report, "fidelity": fidelity, "notes": cm.notes, "choices": cm.layers}
        atomic_write_text(args.report, json.dumps(summary, indent=2, default=str), WeightsError)
    stored = sum(r["stored"] for r in rows if "codebook" in r)
    params = sum(r["params"] for r in rows if "codebook" in r)
    how = cm.notes.get("calibration") or "data-free"
    data_note = f", {cm.notes['data']}" if cm.notes.get("data") else ""
    details = f"{stored:,} of {params:,} weights stored, {cm.info.arch}, {cfg.method}: {how}{data_note}"
    wrote(out, details, len(data_bytes))
    stream = status_stream(out)
    if isinstance(fidelity, dict):
        print(
            f"fidelity on {fidelity['n']} held-back images of --data: top-1 agreement {fidelity['top1_agreement']:.2%}"
            f", mean KL {fidelity['mean_kl']:.4f} nats",
            file=stream,
        )
    else:
        print(f"fidelity: {fidelity}", file=stream)
    return 0


def _batches(images, labels, size: int = 16) -> list:
    """Re-iterable batches for codebook training: images, or (images, labels)."""
    out = []
    for i in range(0, len(images), size):
        out.append(images[i : i + size] if labels is None else (images[i : i + size], labels[i : i + size]))
    return out


def _fidelity(cm, source, held, labels) -> dict | str:
    """Agreement and KL with the source model on the held-back images (never calibrated on)."""
    if held is None:
        return "not measured (no --data: give --data DIR to measure it on your images)"
    if len(held) == 0:
        return "not measured (--data has too few images to hold any back)"
    from squeezenet.data.folders import Batch
    from squeezenet.inference.fidelity import compare

    model = cm.build_model().eval()
    batches = [Batch(held[i : i + 25], labels[i : i + 25], ["held back"] * len(held[i : i + 25]))
               for i in range(0, len(held), 25)]  # fmt: skip
    result = compare(model, source.eval(), batches, cm.info.num_classes)
    return result.to_dict()


def run_decompress(args: argparse.Namespace) -> int:
    from squeezenet.weights import build_model_from_weights, state_dict_to_loaded, write_safetensors
    from squeezenet.weights.loader import detect_format, resolve_source

    src = resolve_source(args.weights)
    if detect_format(src) != "sqz":
        raise WeightsError(f"{src}: not a .sqz file")
    out = Path(args.output)
    if out.is_dir():
        raise WeightsError(f"{out}: is a directory; give a file name")
    model = build_model_from_weights(src)
    write_safetensors(state_dict_to_loaded(model, model.weights_info), out)
    wrote(out, model.weights_info.arch)
    return 0
