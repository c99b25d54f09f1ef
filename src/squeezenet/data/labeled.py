"""``LabeledImages``: the one dataset type every source builds (folders, archives, ELPV, caches).

It lives apart from ``sources`` (which chooses a source for a spec) so that the sources
themselves (``archives``, ``elpv``, ``cache``) can build it without importing their chooser.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from squeezenet.data.images import load_image
from squeezenet.errors import DataError, ImageError

TEST_SPLIT = "test"  # a held-out split by this name is scored once, at the end, never chosen on
VAL_SPLIT_NAMES = ("val", "validation", TEST_SPLIT)  # held-out split folder names, in order of preference

Reader = Callable[[object, str], object]  # (key, PIL mode) -> PIL image; raises ImageError


def read_file(key: object, mode: str):
    return load_image(key, mode)


class LabeledImages(Dataset):
    """Samples ``(key, target)`` decoded by ``reader`` and transformed in the worker."""

    def __init__(
        self,
        classes: Sequence[str],
        items: Sequence[tuple[object, int]],
        reader: Reader = read_file,
        names: Sequence[str] | None = None,
        mode: str = "RGB",
        transform: Callable | None = None,
        description: str = "",
        split: str = "",
    ) -> None:
        self.classes = tuple(classes)
        self.items = list(items)
        self.reader = reader
        self.names = list(names) if names is not None else [str(k) for k, _ in self.items]
        self.mode = mode
        self.transform = transform
        self.description = description
        self.split = split  # the dataset's own name for it: train, val, validation, test (or "")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def targets(self) -> list[int]:
        return [t for _, t in self.items]

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for t in self.targets:
            counts[t] += 1
        return counts

    def _clone(self, items, names, **changes) -> LabeledImages:
        new = LabeledImages(
            self.classes, items, self.reader, names, self.mode, self.transform, self.description, self.split
        )
        new.__dict__.update(changes)
        return new

    def subset(self, indices: Sequence[int]) -> LabeledImages:
        return self._clone([self.items[i] for i in indices], [self.names[i] for i in indices])

    def with_transform(self, transform: Callable | None, mode: str | None = None) -> LabeledImages:
        return self._clone(self.items, self.names, transform=transform, mode=mode or self.mode)

    def load(self, index: int):
        """The decoded PIL image of sample ``index`` (raises ``ImageError``)."""
        return self.reader(self.items[index][0], self.mode)

    def __getitem__(self, index):
        seed = None
        if isinstance(index, tuple | list):
            index, seed = index
        key, target = self.items[index]
        name = self.names[index]
        try:
            image = self.reader(key, self.mode)
            if self.transform is not None:
                if seed is None:
                    image = self.transform(image)
                else:
                    with torch.random.fork_rng(devices=[]):
                        # the CPU generator only: torch.manual_seed also queues a seed for every
                        # lazy accelerator module, capturing a stack trace each (~0.8 ms a sample)
                        torch.default_generator.manual_seed(seed)
                        state = random.getstate()
                        random.seed(seed)
                        try:
                            image = self.transform(image)
                        finally:
                            random.setstate(state)
        except ImageError as exc:
            return None, target, name, str(exc)
        except (OSError, ValueError, SyntaxError) as exc:  # e.g. a truncated archive member
            return None, target, name, f"{name}: cannot decode image ({exc})"
        return image, target, name, None


def stratified_split(groups: Sequence[object], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (keep, held_out): ``fraction`` of every group held out, exactly round(fraction * n) in all."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"the validation fraction must lie in (0, 1), got {fraction}")
    by_group: dict[object, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    rng = random.Random(seed)
    keys = sorted(by_group, key=str)
    wanted = {k: len(by_group[k]) * fraction for k in keys}
    take = {k: int(wanted[k]) for k in keys}
    missing = round(len(groups) * fraction) - sum(take.values())
    for k in sorted(keys, key=lambda k: (-(wanted[k] - take[k]), str(k)))[: max(0, missing)]:
        take[k] += 1
    keep: list[int] = []
    held: list[int] = []
    for k in keys:
        members = by_group[k][:]
        rng.shuffle(members)
        held += members[: take[k]]
        keep += members[take[k] :]
    return sorted(keep), sorted(held)
