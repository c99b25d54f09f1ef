"""The images of a run and their roles: which train, which choose ``best``, which are scored once.

A dataset comes with a training split and, maybe, a held-out split of its own (val/,
validation/ or test/; ELPV's 656 test cells). A held-out split named val/ validates. One
named test/ is not chosen on: by default (``TrainConfig.val_split`` None) the run holds out
``DEFAULT_VAL_SPLIT`` of every class of the training images to validate on and pick ``best``
with, and scores the test split once, after the last epoch, with the last epoch's weights, so
that the reported figure was not used to choose anything. The hold-out is a fixed draw
(``VAL_SPLIT_SEED``): every run, whatever its ``--seed``, and every resumed run validate on the
same images and never train on them. ``--val-split 0`` validates on the held-out split
whatever its name (today's figures of older runs), with a warning when that is a test split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader

from squeezenet.data.folders import collate_skipping_bad
from squeezenet.data.labeled import TEST_SPLIT, LabeledImages
from squeezenet.data.preprocessing import Preprocessing, build_transform
from squeezenet.data.sources import dataset_splits, hold_out, separate_validation, training_part
from squeezenet.errors import DataError
from squeezenet.training.config import DEFAULT_VAL_SPLIT, VAL_SPLIT_SEED, TrainConfig
from squeezenet.training.distributed import DistInfo, log_main
from squeezenet.training.engine import ResumableSampler
from squeezenet.training.plan import RunPlan
from squeezenet.training.recipes import Recipe, build_train_transform


@dataclass(frozen=True)
class RunData:
    """Train on ``train``, choose ``best`` on ``val`` (None: by training loss), score ``test``
    (None: nothing to score) once after the last epoch."""

    train: LabeledImages
    val: LabeledImages | None
    test: LabeledImages | None
    protocol: str  # which images validate and which are scored once: the run's log says it
    warning: str | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    def sizes(self) -> dict[str, int]:
        """Image count per role (those the run has)."""
        roles = {"train": self.train, "val": self.val, "test": self.test}
        return {role: len(ds) for role, ds in roles.items() if ds is not None}


def open_run_data(cfg: TrainConfig, classes: Sequence[str] | None = None) -> RunData:
    """The splits of ``cfg.data`` in their roles (see the module doc); ``classes`` fixes the
    class order (a resumed checkpoint's)."""
    parts = dataset_splits(cfg.data, classes)
    full = training_part(parts)
    if len(full) == 0:
        raise DataError(f"{cfg.data}: the training split holds no images")
    own = parts.get("val")
    fraction = _val_fraction(cfg, own)
    if cfg.val_data:
        train, val, test = full, separate_validation(cfg.val_data, full.classes), own
    elif fraction:
        train, val = hold_out(full, fraction, VAL_SPLIT_SEED, cfg.data)
        test = own
    else:
        train, val, test = full, own, None
    return RunData(train, val, test, _protocol(cfg, val, test, fraction, len(full)), _warning(cfg, val, test))


def _val_fraction(cfg: TrainConfig, own: LabeledImages | None) -> float:
    """The share of the training images held out: the one asked for, else the default where
    the only held-out split is a test split."""
    if cfg.val_split is not None:
        return cfg.val_split
    return DEFAULT_VAL_SPLIT if own is not None and own.split == TEST_SPLIT and not cfg.val_data else 0.0


def _protocol(cfg: TrainConfig, val, test, fraction: float, training_images: int) -> str:
    if val is None:
        chosen = "no validation images: best is the epoch with the lowest training loss"
    elif cfg.val_data:
        chosen = f"validating on the {len(val)} images of {cfg.val_data}"
    elif fraction:
        chosen = (f"validating on {len(val)} of the {training_images} training images "
                  f"({fraction * 100:g} % held out per class, seed {VAL_SPLIT_SEED})")  # fmt: skip
    else:
        chosen = f"validating on the {len(val)} {val.split} images"
    if test is None:
        return chosen + "; no test split to score"
    return chosen + f"; the {len(test)} {test.split} images are scored once, after the last epoch"


def _warning(cfg: TrainConfig, val, test) -> str | None:
    if cfg.val_data or val is None or test is not None or val.split != TEST_SPLIT:
        return None
    return (
        f"squeezenet: warning: --val-split 0: validating on the {len(val)} test images, so best is chosen on "
        "the test images and its score on them is biased upward; leave --val-split out to validate on "
        f"{DEFAULT_VAL_SPLIT * 100:g} % of the training images instead"
    )


def transformed(cfg: TrainConfig, recipe: Recipe, data: RunData, pre: Preprocessing, main: bool):
    """(data, preprocessing) with the training augmentation and the evaluation transform
    attached, normalisation adapted to the training images and images cached when asked.
    The test images are neither cached nor looked at: the final scoring reads them, once."""
    if cfg.adapt_normalization:
        pre = _adapt_normalization(data.train.with_transform(None, pre.image_mode), pre, main)
    evaluation = build_transform(pre)

    def for_eval(ds: LabeledImages | None) -> LabeledImages | None:
        return ds.with_transform(evaluation, pre.image_mode) if ds is not None else None

    train = data.train.with_transform(build_train_transform(pre, cfg.augment or recipe.augment), pre.image_mode)
    val = for_eval(data.val)
    if cfg.cache_images:
        train, val = _cache(train, val, cfg.workers, main)
    return replace(data, train=train, val=val, test=for_eval(data.test)), pre


def _adapt_normalization(train_ds: LabeledImages, pre: Preprocessing, main: bool) -> Preprocessing:
    """``--adapt-normalization``: mean/std from the training images (see squeezenet.data.statistics)."""
    from squeezenet.data.statistics import adapted_preprocessing, pixel_statistics

    mean, std = pixel_statistics(train_ds)
    adapted = adapted_preprocessing(pre, mean, std)
    log_main(f"normalisation from the data: pixel mean {np.round(mean, 1).tolist()}, std {np.round(std, 1).tolist()} "
             f"-> preprocessing mean {[round(m, 3) for m in adapted.mean]}, std {[round(s, 4) for s in adapted.std]}",
             main)  # fmt: skip
    return adapted


def _cache(train_ds: LabeledImages, val_ds: LabeledImages | None, workers: int, main: bool):
    """Both splits decoded once into memory (``--cache-images``)."""
    from squeezenet.data.cache import cache_in_memory

    start = time.perf_counter()
    train_ds = cache_in_memory(train_ds, workers)
    val_ds = cache_in_memory(val_ds, workers) if val_ds is not None else None
    log_main(f"decoded {len(train_ds) + (len(val_ds) if val_ds else 0):,} images into memory "
             f"in {time.perf_counter() - start:.0f} s", main)  # fmt: skip
    return train_ds, val_ds


def _loader(ds: LabeledImages, batch: int, sampler, cfg: TrainConfig, device: torch.device, seed: int) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    workers = cfg.workers
    return DataLoader(
        ds,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skipping_bad,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=g,
    )


def training_loader(cfg: TrainConfig, plan: RunPlan, train_ds: LabeledImages, dist: DistInfo, device: torch.device):
    """(resumable sampler, loader) of the training images."""
    sampler = ResumableSampler(len(train_ds), cfg.batch_size, plan.micro_batches, dist.rank, dist.world_size, cfg.seed)
    return sampler, _loader(train_ds, cfg.batch_size, sampler, cfg, device, cfg.seed)


def evaluation_loader(cfg: TrainConfig, ds: LabeledImages | None, dist: DistInfo, device: torch.device):
    """A loader of ``ds`` (None for None) in which each rank scores its own shard."""
    if ds is None:
        return None
    shard = list(range(dist.rank, len(ds), dist.world_size))
    return _loader(ds, cfg.eval_batch_size or cfg.batch_size, shard, cfg, device, cfg.seed + 1)
