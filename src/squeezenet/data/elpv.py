"""The ELPV solar-cell dataset (Deitsch et al.), from the optional ``elpv-dataset`` package.

2,624 grayscale 300x300 electroluminescence images, each with a defect probability in
{0, 1/3, 2/3, 1} and a cell type (mono, poly). ``elpv`` / ``elpv:4`` classifies the four
defect levels; ``elpv:2`` two classes (functional: p <= 1/3, defective: p >= 2/3). The
split is the published one's recipe: 75 % / 25 % stratified by defect level and cell type
(1,968 train / 656 test), drawn once with a fixed seed: every run, whatever its own
``--seed``, and every later ``eval`` see the same test cells (a split that followed the
run's seed would put another run's training cells in its test set). Images are decoded from
the package's PNG files in the DataLoader workers like any folder; they are never copied.
Licence: CC BY-NC-SA 4.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from squeezenet.data.labeled import TEST_SPLIT, LabeledImages, read_file, stratified_split
from squeezenet.errors import DataError

LEVELS = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)
CLASSES_4 = ("p0", "p1_3", "p2_3", "p1")
CLASSES_2 = ("functional", "defective")
TEST_FRACTION = 0.25
SPLIT_SEED = 0  # the split is part of the benchmark protocol, not of a run


def elpv_root() -> Path:
    try:
        import elpv_dataset
    except ImportError:
        raise DataError(
            "the ELPV dataset needs the optional package: pip install 'squeezenet[elpv]' (elpv-dataset==1.0.0.post1)"
        ) from None
    return Path(elpv_dataset.__file__).parent / "data"


def read_labels(root: Path) -> list[tuple[Path, float, str]]:
    labels = root / "labels.csv"
    if not labels.is_file():
        raise DataError(f"{labels}: ELPV labels file not found (broken elpv-dataset install?)")
    rows = []
    for line in labels.read_text().splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        rows.append((root / fields[0], float(fields[1]), fields[2]))
    if not rows:
        raise DataError(f"{labels}: no samples listed")
    return rows


def _level(p: float) -> int:
    return min(range(4), key=lambda i: abs(LEVELS[i] - p))


def elpv_splits(spec: str = "elpv", classes: Sequence[str] | None = None) -> dict[str, LabeledImages]:
    """{"train", "val"}: the stratified 75/25 split of ELPV with 4 or 2 classes, the same for
    every caller (``SPLIT_SEED``); "val" holds the test cells (``split`` "test": a training
    run validates on its own hold-out of the training cells and scores these once).
    ``classes`` (a checkpoint's, a model's) must be these classes: ELPV's labels cannot be
    reordered or remapped like class folders."""
    parts = spec.split(":")
    n = parts[1] if len(parts) > 1 else "4"
    if n not in ("2", "4") or len(parts) > 2:
        raise DataError(f"{spec!r}: expected 'elpv', 'elpv:4' or 'elpv:2'")
    own = CLASSES_4 if n == "4" else CLASSES_2
    if classes is not None and tuple(classes) != own:
        raise DataError(f"{spec}: its classes {list(own)} are not the expected {list(classes)[:4]}")
    rows = read_labels(elpv_root())
    levels = [_level(p) for _, p, _ in rows]
    strata = [(lv, t) for lv, (_, _, t) in zip(levels, rows, strict=True)]
    keep, held = stratified_split(strata, TEST_FRACTION, SPLIT_SEED)
    targets = levels if n == "4" else [int(lv >= 2) for lv in levels]
    items = [(str(path), t) for (path, _, _), t in zip(rows, targets, strict=True)]
    names = [f"elpv:{path.name}" for path, _, _ in rows]
    full = LabeledImages(own, items, read_file, names, mode="L", description=f"elpv:{n}")
    train, test = full.subset(keep), full.subset(held)
    train.description, test.description = f"elpv:{n}:train", f"elpv:{n}:test"
    train.split, test.split = "train", TEST_SPLIT
    return {"train": train, "val": test}


def cell_types(ds: LabeledImages) -> list[str]:
    """Cell type (mono/poly) of every sample of an ELPV split, for per-type accuracy."""
    types = {str(path): t for path, _, t in read_labels(elpv_root())}
    return [types[str(key)] for key, _ in ds.items]
