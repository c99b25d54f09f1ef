"""``squeezenet info``: the paper's Table 1 for any model, or what a weights file holds."""

from __future__ import annotations

import argparse

from squeezenet.cli.common import count, print_json
from squeezenet.errors import ModelError


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="per-layer table of a model (like the paper's Table 1)")
    p.add_argument("arch", nargs="?", help="registered model name; omit to list models and weights")
    p.add_argument("--weights", "-w", help="describe this weights file or tag instead")
    p.add_argument(
        "--size",
        type=count(1),
        default=None,
        help="input side in pixels (default: the model's own: 224, 227 for Caffe v1.0)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--markdown", action="store_true", help="print the model and weights tables of the README")
    p.set_defaults(run=run)


def _catalogue() -> dict:
    from squeezenet.models import list_models
    from squeezenet.weights import CATALOG

    return {"models": list_models(), "weights": {tag: {"arch": w.arch, **w.meta} for tag, w in CATALOG.items()}}


def _fp32_file_bytes(model) -> int:
    from safetensors.torch import save

    return len(save({k: v.contiguous() for k, v in model.state_dict().items()}))


def markdown_tables() -> str:
    """The README's model-zoo and pretrained-weights tables, generated from the code's metadata."""
    from squeezenet.models import build_architecture, default_input_size, list_models
    from squeezenet.models.summary import layer_table, totals
    from squeezenet.weights import CATALOG

    lines = [
        "| model | input | parameters | MACs | fp32 safetensors bytes | docstring |",
        "|---|---|---|---|---|---|",
    ]
    for name in list_models():
        model = build_architecture(name)
        size = default_input_size(name)
        t = totals(layer_table(model, size))
        doc = (model_doc(name) or "").replace("|", "/")
        lines.append(
            f"| `{name}` | {size} | {t['params']:,} | {t['macs'] / 1e6:,.0f} M | {_fp32_file_bytes(model):,} | {doc} |"
        )
    lines += [
        "",
        "| weights tag | model | file bytes (torchvision: from its MB figure) | top-1 / top-5 | source | licence |",
        "|---|---|---|---|---|---|",
    ]
    for tag, w in CATALOG.items():
        m = w.meta
        if "samples_top1" in m:
            acc = f"{m['samples_top1']:.1%} / {m['samples_top5']:.1%} on imagenet-samples (measured)"
        else:
            acc = f"{m['published_top1']:.2f} % / {m['published_top5']:.2f} % ImageNet val (published)"
        lines.append(f"| `{tag}` | `{w.arch}` | {m['file_bytes']:,} | {acc} | {m['source']} | {m['license']} |")
    return "\n".join(lines)


def model_doc(name: str) -> str:
    from squeezenet.models import get_builder

    doc = get_builder(name).__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _describe_model(model, size: int, arch: str) -> dict:
    from squeezenet.models.summary import layer_table, rows_as_dicts, totals

    if size < model.min_input_size:
        raise ModelError(f"--size {size} is below {arch}'s minimum input of {model.min_input_size} pixels")
    rows = layer_table(model, size)
    return {
        "arch": arch,
        "input_size": size,
        "min_input_size": model.min_input_size,
        "num_classes": model.num_classes,
        "layers": rows_as_dicts(rows),
        "totals": totals(rows),
    }


def _print_table(desc: dict) -> None:
    print(f"{desc['arch']}  input {desc['input_size']}x{desc['input_size']}, {desc['num_classes']} classes")
    header = f"{'layer':<10} {'output':>16} {'s1x1':>5} {'e1x1':>5} {'e3x3':>5} {'params':>10} {'MACs':>13}"
    print(header)
    print("-" * len(header))
    for r in desc["layers"]:
        shape = "x".join(str(d) for d in r["output_shape"])
        cells = [str(r[k]) if r[k] is not None else "" for k in ("squeeze1x1", "expand1x1", "expand3x3")]
        print(
            f"{r['name']:<10} {shape:>16} {cells[0]:>5} {cells[1]:>5} {cells[2]:>5} {r['params']:>10,} {r['macs']:>13,}"
        )
    print("-" * len(header))
    t = desc["totals"]
    print(f"{'total':<10} {'':>16} {'':>5} {'':>5} {'':>5} {t['params']:>10,} {t['macs']:>13,}")


def run(args: argparse.Namespace) -> int:
    from squeezenet.models import default_input_size
    from squeezenet.weights import create_model

    if args.markdown:
        print(markdown_tables())
        return 0
    if args.weights:
        model = create_model(args.arch, weights=args.weights)
        info = model.weights_info
        desc = _describe_model(model, args.size or default_input_size(model), info.arch)
        desc["weights"] = {
            "preprocessing": info.preprocessing.to_dict(),
            "classes": len(info.classes),
            "wnids": len(info.wnids),
            "provenance": info.provenance,
            "license": info.license.splitlines()[0] if info.license else "",
        }
    elif args.arch:
        model = create_model(args.arch)
        desc = _describe_model(model, args.size or default_input_size(args.arch), args.arch)
    else:
        catalogue = _catalogue()
        if args.json:
            print_json(catalogue)
        else:
            print("models:  " + ", ".join(catalogue["models"]))
            print("weights: " + ", ".join(catalogue["weights"]))
        return 0
    if args.json:
        print_json(desc)
    else:
        _print_table(desc)
        if "weights" in desc:
            w = desc["weights"]
            print(f"weights: {w['provenance'].get('source', '?')}; {w['classes']} class names, {w['wnids']} wnids")
            print(f"preprocessing: {w['preprocessing']}")
    return 0
