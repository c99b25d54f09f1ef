"""The model a run trains and the preprocessing it is trained and exported with.

A new model is built from the registry (or a spec) with the recipe's initialisation; a
fine-tune loads weights and adapts them to the data (conv1 to its channel count, a new
conv10 for its classes). The preprocessing follows the weights, the model's own input size
or the recipe, in that order, and is what the exported weights carry.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from squeezenet.data.pixels import IMAGENET_CROP, IMAGENET_RESIZE
from squeezenet.data.preprocessing import CAFFE_SQUEEZENET, IMAGENET_DEFAULT, Preprocessing, grayscale
from squeezenet.errors import TrainingError
from squeezenet.training.config import DEFAULT_MODEL, TrainConfig
from squeezenet.training.recipes import Recipe, caffe_xavier_init, init_classifier

# crops that take ImageNet's resize as they are (torchvision's 224, the Caffe v1.0's 227);
# other crops scale it by the same ratio
_IMAGENET_CROPS = (IMAGENET_CROP, CAFFE_SQUEEZENET.crop)


def run_preprocessing(
    cfg: TrainConfig, recipe: Recipe, base: Preprocessing | None, in_chans: int, own_size: int | None = None
) -> Preprocessing:
    """``own_size``: the input size a model from scratch was registered with, when it is not
    the usual one (squeezenet_cifar's 32 px, the Caffe v1.0's 227): it wins over the recipe's
    crop, which is ImageNet's."""
    pre = base or IMAGENET_DEFAULT
    crop = cfg.image_size or (pre.crop if base is not None else own_size or recipe.crop)
    pre = replace(pre, crop=crop, resize=_resize(cfg, base, pre, crop))
    if in_chans == 1 and pre.channel_order != "L":
        pre = grayscale(pre)
    elif in_chans == 3 and pre.channel_order == "L":
        raise TrainingError("these weights are for one-channel images; use --in-chans 1")
    return pre


def _resize(cfg: TrainConfig, base: Preprocessing | None, pre: Preprocessing, crop: int) -> int | tuple[int, int]:
    """The side images are resized to before the ``crop``: --resize, the weights' own for
    their crop, the crop itself for small images (nothing to cut away), else ImageNet's ratio."""
    if cfg.resize:
        if cfg.resize < crop:  # the crop would be mostly padding
            raise TrainingError(f"--resize {cfg.resize} is smaller than the {crop} px crop (--image-size)")
        return cfg.resize
    if base is not None and crop == base.crop:
        return pre.resize
    if crop <= 64:
        return crop
    side = IMAGENET_RESIZE if crop in _IMAGENET_CROPS else round(crop * IMAGENET_RESIZE / IMAGENET_CROP)
    return (side, side) if isinstance(pre.resize, tuple) else side


def adapt_stem(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """conv1 for another channel count: summed for grayscale, averaged and tiled otherwise."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    return weight.mean(dim=1, keepdim=True).repeat(1, in_chans, 1, 1)


def build_model(cfg: TrainConfig, recipe: Recipe, num_classes: int, in_chans: int):
    """-> (model, preprocessing, arch name, base weights info or None)."""
    dropout = recipe.dropout if cfg.dropout is None else cfg.dropout
    if cfg.weights:
        return _fine_tuned(cfg, recipe, num_classes, in_chans, dropout)
    return _from_scratch(cfg, recipe, num_classes, in_chans, dropout)


def _fine_tuned(cfg: TrainConfig, recipe: Recipe, num_classes: int, in_chans: int, dropout: float):
    from squeezenet.models import from_spec
    from squeezenet.weights import load_weights

    loaded = load_weights(cfg.weights)
    info = loaded.info
    if cfg.model not in (None, info.arch):
        raise TrainingError(
            f"--model {cfg.model}: {cfg.weights} holds a {info.arch}, and fine-tuning keeps the weights' "
            "architecture (leave --model out)"
        )
    model = from_spec(info.spec, num_classes=num_classes, in_chans=in_chans, dropout=dropout)
    state = dict(loaded.state_dict)
    if in_chans != info.in_chans:
        state["features.0.weight"] = adapt_stem(state["features.0.weight"], in_chans)
    if num_classes != info.num_classes:
        state.pop("classifier.1.weight", None)
        state.pop("classifier.1.bias", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("classifier.1.") for k in missing):
        raise TrainingError(f"{cfg.weights}: weights do not fit {info.arch} (missing {missing[:3]})")
    if missing:  # a new conv10 for the new classes: zero weights, positive bias (no dead class)
        init_classifier(model, zero_weight=True)
    if cfg.freeze_features:
        model.features.requires_grad_(False)
    return model, run_preprocessing(cfg, recipe, info.preprocessing, in_chans), info.arch, info


def _from_scratch(cfg: TrainConfig, recipe: Recipe, num_classes: int, in_chans: int, dropout: float):
    from squeezenet.models import build_architecture, default_input_size, from_spec
    from squeezenet.models.registry import DEFAULT_INPUT_SIZE

    kwargs = {"num_classes": num_classes, "in_chans": in_chans, "dropout": dropout}
    own_size = None
    if cfg.spec is not None:
        model = from_spec(cfg.spec, **kwargs)
        arch = cfg.model or "squeezenet_custom"
    else:
        arch = cfg.model or DEFAULT_MODEL
        model = build_architecture(arch, **kwargs, **cfg.model_kwargs)
        registered = default_input_size(arch)
        own_size = registered if registered != DEFAULT_INPUT_SIZE else None
    if recipe.init == "xavier":
        caffe_xavier_init(model)
    init_classifier(model)  # positive conv10 bias: every class starts alive
    return model, run_preprocessing(cfg, recipe, None, in_chans, own_size), arch, None


def weights_info(cfg: TrainConfig, arch: str, model, pre: Preprocessing, classes, base_info, recipe: Recipe):
    """What the exported weights say about themselves: architecture, classes, preprocessing, origin."""
    from squeezenet.weights import WeightsInfo

    provenance = {"source": "squeezenet train", "recipe": recipe.name, "data": str(cfg.data), "seed": cfg.seed}
    if base_info is not None:
        provenance["fine_tuned_from"] = base_info.provenance.get("source", str(cfg.weights))
    return WeightsInfo(
        arch=arch,
        spec=model.spec,
        num_classes=model.num_classes,
        in_chans=model.in_chans,
        preprocessing=pre,
        classes=tuple(classes),
        provenance=provenance,
        license=base_info.license if base_info is not None else "",
    )
