"""``squeezenet compress`` / ``decompress``: Deep Compression to and from ``.sqz`` files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from squeezenet.atomic import atomic_write_text
from squeezenet.cli.common import bits, bits_per_layer, count, fraction
from squeezenet.errors import ModelError, WeightsError


def add_parser(sub) -> None:
    p = sub.add_parser("compress", help="Deep Compression of weights into a small .sqz file")
    p.add_argument("--weights", "-w", required=True, help="input weights file or catalogue tag")
    p.add_argument("--output", "-o", required=True, help="output .sqz file")
    p.add_argument(
        "--bits", type=bits_per_layer, help="codebook bits: N for all layers or LAYER=N,... (default: data-free preset)"
    )
    p.add_argument("--large-bits", type=bits, help="bits of fire expand 3x3 and the final layer (preset: 7)")
    p.add_argument(
        "--density",
        type=fraction(keywords=("paper",)),
        help="prune first: a fraction in (0, 1] for all layers or 'paper' (default: keep zeros)",
    )
    p.add_argument("--lossless", action="store_true", help="keep every value exactly (float32, up to 12-bit codebooks)")
    p.add_argument("--coder", choices=["auto", "rans", "huffman", "raw"], default="auto", help="entropy coder")
    p.add_argument(
        "--positions", choices=["auto", "gaps", "relidx4", "bitmask"], default="auto", help="sparse index scheme"
    )
    p.add_argument("--data", help="image folder (<class>/<image>) for trained quantization")
    p.add_argument("--unlabelled", action="store_true", help="distil from the uncompressed model, ignore labels")
    p.add_argument("--train-steps", type=count(1), help="trained-quantization steps (with --data; default 100)")
    p.add_argument("--report", help="also write the size report (JSON) here")
    p.set_defaults(run=run)

    d = sub.add_parser("decompress", help="expand a .sqz file to the project's .safetensors format")
    d.add_argument("weights", help="input .sqz file")
    d.add_argument("--output", "-o", required=True, help="output .safetensors file")
    d.set_defaults(run=run_decompress)


def _check_option_combinations(args: argparse.Namespace) -> None:
    """Options that the others make meaningless are refused instead of silently dropped."""
    if args.lossless:
        lossy = [name for name, value in (("--bits", args.bits), ("--large-bits", args.large_bits),
                                          ("--density", args.density)) if value is not None]  # fmt: skip
        if lossy:
            raise ModelError(f"--lossless keeps every value exactly; it takes no {', '.join(lossy)}")
    if not args.data:
        needs_data = [name for name, value in (("--unlabelled", args.unlabelled), ("--train-steps", args.train_steps))
                      if value]  # fmt: skip
        if needs_data:
            raise ModelError(f"{', '.join(needs_data)}: only with --data (the images to tune the codebooks on)")


def _loader(folder: str, info, batch_size: int = 16):
    from torch.utils.data import DataLoader

    from squeezenet.data import ImageListDataset, build_transform, collate_skipping_bad, scan_class_folders
    from squeezenet.inference.labels import folder_targets

    folders, samples = scan_class_folders(folder)
    targets = folder_targets(folders, info, folder)
    ds = ImageListDataset(
        [(p, targets[n]) for p, n in samples], build_transform(info.preprocessing), info.preprocessing.image_mode
    )
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, collate_fn=collate_skipping_bad)
    return ((b.images, b.targets) for b in loader for _ in [0] if b.paths)


def run(args: argparse.Namespace) -> int:
    from squeezenet.compression import CompressionConfig, compress, layer_table

    out = Path(args.output)
    if out.is_dir():
        raise WeightsError(f"{out}: is a directory; give a file name")
    if Path(args.weights).exists() and out.exists() and out.resolve() == Path(args.weights).resolve():
        raise WeightsError(f"{out}: output would overwrite the input")
    _check_option_combinations(args)
    cfg = CompressionConfig.lossless() if args.lossless else CompressionConfig.data_free()
    if args.bits is not None:
        cfg.bits = args.bits
        cfg.large_bits = None
    if args.large_bits is not None:
        cfg.large_bits = args.large_bits
    if args.density is not None:
        cfg.densities = args.density
    cfg.codes_coder = cfg.gaps_coder = args.coder
    cfg.positions = args.positions
    data, kwargs = None, {}
    if args.data:
        from squeezenet.weights import build_model_from_weights

        teacher = build_model_from_weights(args.weights)
        data = _loader(args.data, teacher.weights_info)
        kwargs = {"steps": args.train_steps or 100, "teacher": teacher if args.unlabelled else None}
    cm = compress(args.weights, cfg, data=data, **kwargs)
    report = cm.save(out)
    rows = layer_table(cm, report)
    if args.report:
        atomic_write_text(
            args.report, json.dumps({"layers": rows, "sections": report}, indent=2, default=str), WeightsError
        )
    stored = sum(r["stored"] for r in rows if "codebook" in r)
    params = sum(r["params"] for r in rows if "codebook" in r)
    print(
        f"wrote {out} ({out.stat().st_size:,} bytes; {stored:,} of {params:,} weights stored, "
        f"{cm.info.arch}{', data: ' + cm.notes['data'] if cm.notes.get('data') else ', data-free'})"
    )
    return 0


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
    print(f"wrote {out} ({out.stat().st_size:,} bytes, {model.weights_info.arch})")
    return 0
