"""``squeezenet eval``: top-1/top-5 on an ImageNet-validation tree or any dataset ``train`` reads."""

from __future__ import annotations

import argparse

from squeezenet.cli.common import add_weights_args, count, load_model_from_args, print_json, warn


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="top-1/top-5 accuracy on class folders, an archive or elpv")
    add_weights_args(p)
    p.add_argument(
        "--data",
        "-d",
        required=True,
        help="folder of <wnid>/ or <class>/ sub-folders (scored whole), or a dataset with splits: "
        "a folder with train/ and val/ or test/, a .tar/.tar.gz archive of one, elpv:4, elpv:2",
    )
    p.add_argument(
        "--split",
        choices=("val", "train"),
        default="val",
        help="which split of a dataset with splits to score (default: the held-out val/test one)",
    )
    p.add_argument("--batch-size", "-b", type=count(1), default=50)
    p.add_argument("--workers", "-j", type=count(0), default=None, help="decoding processes (default: cores, max 4)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument(
        "--per-class",
        metavar="OUT_DIR",
        help="also write per-class accuracy, the confusion matrix (CSV, PNG) and errors.csv "
        "(every misclassified image, most confident first) to OUT_DIR",
    )
    p.add_argument(
        "--reference",
        metavar="OTHER_WEIGHTS",
        help="also compare with these weights on the same images: top-1 agreement and mean KL divergence",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from squeezenet.errors import DataError
    from squeezenet.inference import evaluate_dataset

    per_class = bool(getattr(args, "per_class", None))
    if per_class:
        from squeezenet.training.reports import output_folder

        output_folder(args.per_class)  # a bad report folder fails now, not after the evaluation
    model = load_model_from_args(args)
    reference = None
    if getattr(args, "reference", None):
        from squeezenet.inference.fidelity import fidelity_on_dataset, load_reference

        reference = load_reference(args.reference, model)  # a bad reference fails before the evaluation
    result = evaluate_dataset(
        model,
        args.data,
        split=args.split,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=args.progress,
        on_skip=warn,
        per_class=per_class,
    )
    if result.n == 0:
        raise DataError(f"{args.data}: no image could be read ({len(result.skipped)} skipped)")
    if per_class:
        _write_per_class(model, result, args.per_class)
    fidelity = None
    if reference is not None:
        fidelity = fidelity_on_dataset(model, reference, args.data, args.split, args.batch_size, args.workers,
                                       args.progress)  # fmt: skip
    if args.json:
        print_json({**result.to_dict(), **({"reference": fidelity.to_dict()} if fidelity else {})})
    else:
        top5 = f"  top-5 {result.top5:.2%}" if result.top5 is not None else ""  # None for 5 classes or fewer
        print(f"top-1 {result.top1:.2%}{top5}  on {result.n} images", end="")
        print(f" ({len(result.skipped)} skipped)" if result.skipped else "")
        print(f"{result.images_per_second:.1f} images/s end to end ({result.seconds:.1f} s)")
        if fidelity:
            print(f"against {args.reference}: {fidelity.summary()}")
    return 0


def _write_per_class(model, result, out_dir: str) -> None:
    """Per-class CSV and confusion matrix over the classes present in the data (and those
    predicted), and the list of misclassified images."""
    from squeezenet.errors import MissingExtraError
    from squeezenet.training.reports import write_mistakes, write_per_class

    info = model.weights_info
    confusion = result.confusion
    used = [i for i in range(len(confusion)) if sum(confusion[i]) or any(row[i] for row in confusion)]
    names = [info.class_name(i) for i in used]
    rows = [[confusion[i][j] for j in used] for i in used]
    write_mistakes(out_dir, info.class_name, result.mistakes)
    try:
        write_per_class(out_dir, names, rows, plot=True)
    except MissingExtraError as exc:  # the CSV files are written first; only the PNG needs matplotlib
        warn(str(exc))
