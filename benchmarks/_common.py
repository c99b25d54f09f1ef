"""Helpers shared by the benchmark scripts: machine description, result files, test loaders."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from squeezenet.data.root import data_root

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = data_root()


def machine() -> dict:
    """The package's machine description (``squeezenet.benchmarking.engines``) plus the date."""
    from squeezenet.benchmarking.engines import machine_info

    info = machine_info()
    return {**info, "cores": info["usable_cores"], "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def page_head(title: str, payload: dict) -> list[str]:
    """A results page's first lines: its title, then the command and the machine it ran on."""
    m = payload["machine"]
    return [f"# {title}", "", f"Command: `{payload['command']}` ({m['cpu']}, {m['cores']} cores, {m['date']})", ""]


def write_results(name: str, payload: dict, markdown: str, folder: Path | None = None) -> None:
    """``<name>.json`` and ``<name>.md`` in ``folder`` (default: the recorded results; a
    ``--tiny`` run passes its own folder, so that a smoke test never overwrites a record)."""
    folder = Path(folder) if folder is not None else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (folder / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)


def imagenet_halves(count_cal: int, count_test: int) -> tuple[list[Path], list[Path]]:
    """The first ``count_cal`` even-indexed imagenet-samples (they calibrate or choose) and the first
    ``count_test`` odd-indexed ones (they are reported on), in sorted order."""
    files = sorted((DATA / "imagenet-samples").rglob("*.JPEG"))
    return files[0::2][:count_cal], files[1::2][:count_test]


def add_tiny_option(parser) -> None:
    """``--tiny FOLDER``: the whole script on a few images for one round, results written to
    FOLDER: what the test suite runs, so that a broken script fails CI (its figures mean nothing)."""
    parser.add_argument(
        "--tiny", metavar="FOLDER", type=Path, help="smoke run on a few images; results go to FOLDER, not results/"
    )


# the most images per class and split a --tiny run takes (bench_train_cifar10's 12)
TINY_MOST_PER_CLASS = 12


def tiny_archive(source: Path, dest: Path, per_class: int = 4) -> Path:
    """A small uncompressed copy of a class-folder archive (the first ``per_class`` images of every
    class in every split), for ``--tiny`` runs: the real layout and decoder, a thousandth of the time."""
    return _first_per_folder(tiny_source(source) if per_class <= TINY_MOST_PER_CLASS else source, dest, per_class)


def tiny_source(source: Path) -> Path:
    """The first ``TINY_MOST_PER_CLASS`` images of every folder of ``source``, made once per source
    file and kept in the user's cache: reading the 60,000 members of the CIFAR-10 archive takes
    Python's tarfile about 9 s, paid by every tiny run otherwise. Their first images are its first."""
    import os
    import tempfile

    stat = source.stat()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "squeezenet-benchmarks"
    kept = cache / f"{source.name}-{stat.st_size}-{stat.st_mtime_ns}-first{TINY_MOST_PER_CLASS}.tar"
    if not kept.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:  # made aside, then renamed: runs at once both succeed
            made = _first_per_folder(source, Path(tmp) / kept.name, TINY_MOST_PER_CLASS)
            os.replace(made, kept)
    return kept


def _first_per_folder(source: Path, dest: Path, per_class: int) -> Path:
    import tarfile

    taken: dict[tuple[str, ...], int] = {}
    with tarfile.open(source, "r|*") as src, tarfile.open(dest, "w") as out:
        for member in src:
            if not member.isfile():
                continue
            folder = tuple(Path(member.name).parts[:-1])
            if taken.get(folder, 0) >= per_class:
                continue
            taken[folder] = taken.get(folder, 0) + 1
            out.addfile(member, src.extractfile(member))
    return dest


def test_loader(data: str, info, batch: int, workers: int, limit: int | None = None, seed: int = 0):
    """The test split of ``data`` (an archive, folder or ``elpv:N``) with the weights' own
    preprocessing and class order; ``limit`` draws that many images (seeded)."""
    import torch
    from torch.utils.data import DataLoader

    from squeezenet.data.folders import collate_skipping_bad
    from squeezenet.data.preprocessing import build_transform
    from squeezenet.data.sources import open_dataset

    pre = info.preprocessing
    ds = open_dataset(data, "test", classes=info.classes).with_transform(build_transform(pre), pre.image_mode)
    if limit and limit < len(ds):
        g = torch.Generator().manual_seed(seed)
        ds = ds.subset(sorted(torch.randperm(len(ds), generator=g)[:limit].tolist()))
    return DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate_skipping_bad)


def mirror_views(images):
    """The image and its mirror image: CIFAR-10's test-time augmentation (its training mirrors too)."""
    return (images, images.flip(-1))


def dihedral_views(images):
    """All 8 flips and quarter turns: ELPV's test-time augmentation (a cell has no "up")."""
    turns = [images.rot90(k, (-2, -1)) for k in range(4)]
    return (*turns, *(t.flip(-1) for t in turns))


def single_and_summed_logits(model, images, views):
    """(logits of ``images`` as they are, logits summed over all their test-time views);
    the first view is the image itself, so it is inferred once for both."""
    logits = [model(view) for view in views(images)]
    return logits[0], sum(logits)
