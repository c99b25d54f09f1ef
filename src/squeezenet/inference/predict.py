"""Classify image files: top-k class names with probabilities, bad files reported not fatal."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from squeezenet.data import build_transform, find_images, load_image
from squeezenet.errors import ImageError
from squeezenet.inference.runner import InferenceRunner


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, int, float]]  # (class name, index, probability)
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "top": [{"class": name, "index": index, "probability": round(p, 6)} for name, index, p in self.top],
        }


def predict_paths(
    model: torch.nn.Module, paths: Sequence[str | Path], topk: int = 5, batch_size: int = 16
) -> Iterator[Prediction]:
    info = model.weights_info
    transform = build_transform(info.preprocessing)
    runner = InferenceRunner(model)
    files = find_images(paths)
    topk = max(1, min(topk, info.num_classes))
    for start in range(0, len(files), batch_size):
        chunk, tensors, errors = files[start : start + batch_size], [], {}
        for path in chunk:
            try:
                tensors.append(transform(load_image(path, info.preprocessing.image_mode)))
            except ImageError as exc:
                errors[path] = str(exc)
        probs = runner(torch.stack(tensors)).softmax(dim=1) if tensors else None
        row = 0
        for path in chunk:
            if path in errors:
                yield Prediction(str(path), [], errors[path])
                continue
            values, indices = probs[row].topk(topk)
            row += 1
            yield Prediction(
                str(path),
                [(info.class_name(int(i)), int(i), float(v)) for v, i in zip(values, indices, strict=True)],
            )
