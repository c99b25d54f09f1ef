"""Pictures and tables of a run: training curves, per-class accuracy, confusion matrix.

matplotlib is an optional extra (``pip install 'squeezenet[plot]'``), imported lazily;
the CSV files never need it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from squeezenet.atomic import atomic_path, atomic_write_text
from squeezenet.errors import DataError, MissingExtraError


def csv_text(rows) -> str:
    """Rows as CSV text, to be written whole through ``atomic_write_text`` (a crash leaves
    the old table or the new one)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("plots need matplotlib: pip install 'squeezenet[plot]'") from None
    return plt


def _save_figure(fig, path: Path) -> None:
    with atomic_path(path, DataError) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."))


def output_folder(path: str | Path) -> Path:
    """``path`` as a folder, made if missing; called before long work too, so that a bad
    output path fails at once instead of after an evaluation or a run."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out}: cannot make the folder ({exc.strerror})") from None
    return out


def write_mistakes(out_dir: str | Path, class_name, mistakes) -> Path:
    """errors.csv: every misclassified image (``squeezenet.inference.scoring.Mistake``) with
    its true and predicted class, most confident first: at the top, wrong labels and
    look-alikes; at the bottom, images the model was unsure of."""
    path = output_folder(out_dir) / "errors.csv"
    rows = [["path", "true", "predicted", "confidence", "true_probability"]]
    for m in mistakes:
        rows.append(
            [m.path, class_name(m.true), class_name(m.predicted), f"{m.confidence:.4f}", f"{m.true_probability:.4f}"]
        )
    return atomic_write_text(path, csv_text(rows), DataError)


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not Path(run_dir).is_dir():
        raise DataError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise DataError(f"{run_dir}: holds no metrics.jsonl (not a training run?)")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not records:
        raise DataError(f"{path}: no epoch finished yet")
    return records


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """loss.png, accuracy.png and lr.png of a run, from its metrics.jsonl."""
    records = read_metrics(run_dir)
    out = output_folder(out_dir or run_dir)
    plt = _pyplot()
    epochs = [r["epoch"] + 1 for r in records]
    panels = [
        ("loss.png", "loss", [("train_loss", "train"), ("val_loss", "validation")]),
        ("accuracy.png", "top-1 accuracy", [("train_top1", "train"), ("val_top1", "validation top-1"),
                                            ("val_top5", "validation top-5")]),
        ("lr.png", "learning rate (end of epoch)", [("lr", "lr")]),
    ]  # fmt: skip
    written = []
    for name, ylabel, series in panels:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for key, label in series:
            points = [(e, r[key]) for e, r in zip(epochs, records, strict=True) if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        fig.tight_layout()
        _save_figure(fig, out / name)
        plt.close(fig)
        written.append(out / name)
    return written


def write_per_class(
    out_dir: str | Path, classes: Sequence[str], confusion: Sequence[Sequence[int]], plot: bool = True
) -> list[Path]:
    """per_class.csv (class, images, correct, accuracy), confusion.csv and confusion.png."""
    out = output_folder(out_dir)
    rows = [list(map(int, row)) for row in confusion]
    per_class = [["class", "images", "correct", "accuracy"]]
    for name, row, i in zip(classes, rows, range(len(rows)), strict=False):
        if sum(row):
            per_class.append([name, sum(row), row[i], f"{row[i] / sum(row):.6f}"])
    atomic_write_text(out / "per_class.csv", csv_text(per_class), DataError)
    confusion_rows = [
        ["true \\ predicted", *classes],
        *([name, *row] for name, row in zip(classes, rows, strict=False)),
    ]
    atomic_write_text(out / "confusion.csv", csv_text(confusion_rows), DataError)
    written = [out / "per_class.csv", out / "confusion.csv"]
    if plot and len(classes) <= 100:
        plt = _pyplot()
        n = len(classes)
        size = min(4 + 0.35 * n, 30)
        fig, ax = plt.subplots(figsize=(size, size), dpi=100)
        totals = [max(1, sum(r)) for r in rows]
        norm = [[v / t for v in r] for r, t in zip(rows, totals, strict=True)]
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 20:
            for i, r in enumerate(rows):
                for j, v in enumerate(r):
                    ax.text(j, i, str(v), ha="center", va="center", color="white" if norm[i][j] > 0.5 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        _save_figure(fig, out / "confusion.png")
        plt.close(fig)
        written.append(out / "confusion.png")
    return written
