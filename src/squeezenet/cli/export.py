"""``squeezenet export``: ONNX (fp32 or int8), TorchScript or integer C99, with class names and preprocessing inside."""

from __future__ import annotations

import argparse

from squeezenet.cli.common import add_weights_args, count, load_model_from_args, output_file, wrote
from squeezenet.export.formats import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_LIMIT,
    DEFAULT_CALIBRATION_METHOD,
    DEFAULT_OPSET,
    DEFAULT_SQUEEZE_BITS,
    DEFAULT_STEM_BITS,
    FORMATS,
    INTEGER_FORMATS,
    MIN_OPSET,
    RELAXED_TOOLCHAIN_HINT,
    WIDE_BITS,
    find_clang,
)


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX (fp32 or int8), TorchScript, C (int8) or WebAssembly")
    add_weights_args(p)
    p.add_argument("--format", "-f", default="onnx", help="onnx, torchscript, c or wasm (default onnx)")
    p.add_argument(
        "--output",
        "-o",
        type=output_file,
        required=True,
        help="output file (.onnx or .pt; - for standard output); a folder for --format c and wasm",
    )
    p.add_argument("--opset", type=count(MIN_OPSET), help="fp32 ONNX: opset, 17 (the default) or newer")
    p.add_argument("--size", type=count(1), help="example input side (default: the weights' crop size)")
    p.add_argument("--dynamo", action="store_true", help="fp32 ONNX: use the torch.export-based exporter")
    p.add_argument("--int8", action="store_true", help="ONNX only: int8 static quantization (needs --calibration)")
    p.add_argument("--calibration", nargs="+", help="images or folders to calibrate int8 activations on")
    p.add_argument(
        "--calibration-limit",
        type=count(1),
        help=f"at most this many calibration images (default {DEFAULT_CALIBRATION_LIMIT})",
    )
    p.add_argument(
        "--calibration-method",
        choices=CALIBRATION_METHODS,
        help=f"int8 ranges (default {DEFAULT_CALIBRATION_METHOD})",
    )
    p.add_argument(
        "--c-weights",
        choices=("auto", "compressed", "int8"),
        help="--format c/wasm: weights kept compressed (codebook indices, sparse positions) or plain int8 "
        "(default auto: compressed for a .sqz)",
    )
    p.add_argument(
        "--squeeze-bits",
        type=int,
        choices=WIDE_BITS,
        help=f"--format c/wasm: bits of each Fire's squeeze output, 8 (uint8: the least RAM) or 12 (uint16, closer "
        f"to the fp32 model; default {DEFAULT_SQUEEZE_BITS})",
    )
    p.add_argument(
        "--stem-bits",
        type=int,
        choices=WIDE_BITS,
        help=f"--format c/wasm: bits of conv1's (pooled) output, 8 (uint8) or 12 (uint16: closer to the fp32 model, "
        f"the largest buffer twice as big; default {DEFAULT_STEM_BITS})",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from squeezenet.errors import DeployError
    from squeezenet.export.common import check_output_path

    fmt = args.format.lower()
    if fmt not in FORMATS:
        raise DeployError(f"unknown export format {args.format!r}; expected one of: {', '.join(FORMATS)}")
    if args.int8 and fmt != "onnx":
        raise DeployError("--int8 needs --format onnx")
    if args.int8 and not args.calibration:
        raise DeployError("--int8 needs --calibration IMAGES_OR_FOLDERS (images that are not your test set)")
    _check_unused_options(args, fmt)
    if fmt in INTEGER_FORMATS:
        return _run_integer(args, fmt)
    if fmt == "onnx":
        from squeezenet.export.common import require

        require("onnx")
        if args.int8:
            require("onnxruntime")
    out = check_output_path(args.output)
    model = load_model_from_args(args)
    if args.size is not None and args.size < model.min_input_size:
        raise DeployError(f"--size {args.size} is below the model's minimum input of {model.min_input_size} pixels")
    if fmt == "torchscript":
        from squeezenet.export.torchscript import export_torchscript

        export_torchscript(model, out, size=args.size)
        what = "TorchScript (frozen)"
    elif args.int8:
        from squeezenet.export.onnx_int8 import calibration_arrays, quantize_model

        data = calibration_arrays(model, args.calibration, limit=args.calibration_limit or DEFAULT_CALIBRATION_LIMIT)
        quantize_model(model, out, data, method=args.calibration_method or DEFAULT_CALIBRATION_METHOD, size=args.size)
        what = f"ONNX int8 (QDQ, calibrated on {len(data)} images)"
    else:
        from squeezenet.export.onnx import export_onnx

        opset = DEFAULT_OPSET if args.opset is None else args.opset
        export_onnx(model, out, size=args.size, opset=opset, dynamo=args.dynamo)
        what = f"ONNX opset {max(opset, 18) if args.dynamo else opset}"
    wrote(out, f"{what}, {model.weights_info.arch}")
    return 0


def _check_unused_options(args: argparse.Namespace, fmt: str) -> None:
    """An option the chosen export would ignore is an error, not a silent no-op."""
    from squeezenet.errors import DeployError

    onnx_only = [name for name, given in (("--opset", args.opset is not None), ("--dynamo", args.dynamo)) if given]
    if onnx_only and (fmt != "onnx" or args.int8):
        why = "--int8 builds its own graph" if fmt == "onnx" else f"--format {fmt} is not ONNX"
        raise DeployError(f"{', '.join(onnx_only)}: only for the fp32 ONNX export ({why})")
    int8_only = [
        name
        for name, value in (
            ("--calibration", args.calibration),
            ("--calibration-limit", args.calibration_limit),
            ("--calibration-method", args.calibration_method),
        )
        if value
    ]
    if int8_only and not (args.int8 or fmt in INTEGER_FORMATS):
        raise DeployError(f"{', '.join(int8_only)}: only with --int8, --format c or --format wasm")
    for flag, value in (
        ("--c-weights", args.c_weights),
        ("--squeeze-bits", args.squeeze_bits),
        ("--stem-bits", args.stem_bits),
    ):
        if value and fmt not in INTEGER_FORMATS:
            raise DeployError(f"{flag}: only with --format c or --format wasm")


def _run_integer(args: argparse.Namespace, fmt: str) -> int:
    """Integer C99 sources in a folder, or those compiled to WebAssembly with a loader; the arena
    plan is printed (docs/c-export.md, docs/wasm.md)."""
    from squeezenet.errors import DeployError
    from squeezenet.export.c import check_output_folder, export_c, is_sqz
    from squeezenet.export.c.integerize import check_supported
    from squeezenet.export.onnx_int8 import calibration_arrays
    from squeezenet.export.wasm import export_wasm

    if not args.calibration:
        raise DeployError(f"--format {fmt} needs --calibration IMAGES_OR_FOLDERS (images that are not your test set)")
    folder = check_output_folder(args.output)
    if fmt == "wasm":
        find_clang()
    model = load_model_from_args(args)
    if args.size is not None and args.size < model.min_input_size:
        raise DeployError(f"--size {args.size} is below the model's minimum input of {model.min_input_size} pixels")
    check_supported(model)
    data = calibration_arrays(model, args.calibration, limit=args.calibration_limit or DEFAULT_CALIBRATION_LIMIT)
    export = export_wasm if fmt == "wasm" else export_c
    result = export(
        model,
        folder,
        data,
        method=args.calibration_method or DEFAULT_CALIBRATION_METHOD,
        storage=args.c_weights or "auto",
        weights_are_compressed=is_sqz(args.weights),
        size=args.size,
        squeeze_bits=args.squeeze_bits or DEFAULT_SQUEEZE_BITS,
        stem_bits=args.stem_bits or DEFAULT_STEM_BITS,
    )
    net = result.net
    done = f"{net.storage} weights, {net.size}x{net.size} input, calibrated on {len(data)} images, {net.arch}"
    if fmt == "wasm":
        builds = ", ".join(f"{b['file']} {b['bytes']:,} bytes" for b in result.card["builds"].values())
        table = result.card["table"]
        print(f"wrote {folder}/ (WebAssembly: {builds}; weight table {table['file']} {table['bytes']:,} bytes; {done})")
        if net.storage == "int8" and "relaxed" not in result.card["builds"]:
            print(f"note: {RELAXED_TOOLCHAIN_HINT}")
        return 0
    print(f"wrote {folder}/ (C99, weight table {result.weight_bytes:,} bytes, {done})")
    print(result.plan)
    return 0
