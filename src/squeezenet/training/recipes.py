"""Training recipes: the paper's and a modern one, as defaults that any option overrides.

paper (Iandola et al., the released Caffe solver): SGD momentum 0.9, weight decay 2e-4,
base lr 0.04 with a "poly" schedule of power 1.0 (linear decay to 0), global batch 512
(the solver's 32 x iter_size 16; here micro-batch x accumulation x processes), 227 px
random crops of 256 px images plus mirroring, Caffe's Xavier initialisation with conv10
drawn from N(0, 0.01), dropout 0.5 before conv10, 68 epochs (170k iterations of 512).

modern: SGD Nesterov, linear warmup then cosine decay, label smoothing 0.1, random
resized crops + mirroring + TrivialAugment + random erasing, an EMA of the weights
(evaluated and exported), and the model's own (Kaiming) initialisation.

Augmentations (``--augment``): none; light (the paper's random crops + mirroring; pad-and-
crop for images <= 64 px); strong (the modern default); symmetric (light + vertical flips
+ quarter turns, for images with no canonical orientation such as solar cells, where a
random resized crop could also cut the defect that defines the label); symmetric_jitter
(symmetric + up to 3 degrees of rotation, 3 % of shift, 5 % of scale and 20 % of brightness
and contrast: the spread of cells segmented from different modules); cutout (light + one
square of a quarter of the image set to the mean with probability 0.5, DeVries & Taylor
2017: a regulariser for nets with capacity to spare; on CIFAR-10 it cost the 0.73 M
parameter net 0.2 points in 50 epochs, 89.29 % against 89.47 % with light, and gave the
1.11 M one 0.36, 90.13 % against 89.77 %).

finetune: for pretrained weights (the Caffe ones above all): AdamW, lr 2e-4 at batch 32,
weight decay 0.05, 1 warmup epoch + cosine, label smoothing 0.1, EMA 0.995, the paper's
light augmentation, 20 epochs. AdamW because the Caffe weights' layers see gradient
scales ~25x apart (see ``build_optimizer``).

Unless lr is given, the recipe's lr is scaled linearly from its reference batch (512;
finetune: 32) to the run's global batch, and quartered when the paper or modern recipe
starts from pretrained weights.

Keeping every class alive (both recipes). SqueezeNet has no BatchNorm and ends with
conv10 -> ReLU -> global average pool, so a class whose conv10 pre-activation is negative
at every position for every input has logit 0 and gradient 0 for good: a "dead class".
With conv10 biases at 0 and its weights from N(0, 0.01), each class starts near that edge
(its pre-activation is mostly a per-class offset, w_c . mean feature), and the first noisy
updates push classes across it one after another: a CIFAR-10 run from scratch lost every
class within ~70 steps of warmup (lr < 0.02, fp32 as well as bf16; clipping alone did not
help) and then sat at loss ln(10) for good; an ELPV fine-tune fell to the majority class.
Hence ``init_classifier``: a *new* conv10 gets bias ``CLASSIFIER_BIAS`` (1.0), so every
class starts in the ReLU's linear range, where the softmax gradients of a balanced batch
sum to zero and no class drifts below it; when fine-tuning, its weights also start at zero
(all logits equal, loss ln C), so a random head sends no random gradients into the
pretrained features. The modern recipe also clips the gradient norm to 1.0 by default: the
Caffe weights see [0, 255] pixels and their conv10 input has an RMS of ~25, so an unclipped
head step at lr 0.003 already produced logits big enough to wreck the features (their RMS
fell from 25 to 3 within 24 steps). The architecture and its inference are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from squeezenet.data.preprocessing import Preprocessing, ToNormalizedTensor
from squeezenet.errors import TrainingError
from squeezenet.training.config import OPTIMIZERS


@dataclass(frozen=True)
class Recipe:
    name: str
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    schedule: str  # "poly" or "cosine"
    power: float
    warmup_epochs: float
    label_smoothing: float
    ema_decay: float
    augment: str  # "light" (crop + mirror) or "strong"
    init: str  # "xavier" (Caffe) or "default"
    epochs: int
    global_batch: int | None
    crop: int
    dropout: float
    clip_grad_norm: float = 0.0  # 0: no clipping
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0: off
    ref_batch: int = 512
    optimizer: str = "sgd"
    pretrained_lr_scale: float = 0.25  # lr factor when starting from pretrained weights


RECIPES = {
    "paper": Recipe(
        "paper", lr=0.04, momentum=0.9, weight_decay=2e-4, nesterov=False, schedule="poly", power=1.0,
        warmup_epochs=0.0, label_smoothing=0.0, ema_decay=0.0, augment="light", init="xavier", epochs=68,
        global_batch=512, crop=227, dropout=0.5,
    ),
    "modern": Recipe(
        "modern", lr=0.2, momentum=0.9, weight_decay=5e-5, nesterov=True, schedule="cosine", power=1.0,
        warmup_epochs=2.0, label_smoothing=0.1, ema_decay=0.999, augment="strong", init="default", epochs=30,
        global_batch=None, crop=224, dropout=0.5, clip_grad_norm=1.0,
    ),
    "finetune": Recipe(
        "finetune", lr=2e-4, momentum=0.9, weight_decay=0.05, nesterov=False, schedule="cosine", power=1.0,
        warmup_epochs=1.0, label_smoothing=0.1, ema_decay=0.995, augment="light", init="default", epochs=20,
        global_batch=None, crop=224, dropout=0.5, ref_batch=32, optimizer="adamw", pretrained_lr_scale=1.0,
    ),
}  # fmt: skip


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise TrainingError(f"unknown recipe {name!r}: expected one of {', '.join(RECIPES)}") from None


def caffe_xavier_init(model: nn.Module) -> None:
    """Caffe's "xavier" filler (uniform, +-sqrt(3 / fan_in)), conv10 from N(0, 0.01), zero biases."""
    final = getattr(model, "final_conv", None)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if m is final:
                nn.init.normal_(m.weight, 0.0, 0.01)
            else:
                fan_in = m.weight[0].numel()
                bound = math.sqrt(3.0 / fan_in)
                nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


CLASSIFIER_BIAS = 1.0


def init_classifier(model: nn.Module, zero_weight: bool = False) -> None:
    """Initialise a new conv10 so that no class starts dead (see the module docstring).

    Bias ``CLASSIFIER_BIAS`` for every class; weights zeroed when ``zero_weight`` (a new head
    on pretrained features), else left as the model's / recipe's initialisation drew them.
    """
    final = model.final_conv
    with torch.no_grad():
        if zero_weight:
            final.weight.zero_()
        if final.bias is not None:
            final.bias.fill_(CLASSIFIER_BIAS)


def build_optimizer(
    params, recipe: Recipe, lr: float, momentum: float, weight_decay: float, kind: str = "sgd"
) -> torch.optim.Optimizer:
    """SGD (the recipes') or AdamW; no weight decay on biases (they are few and decaying them only hurts).

    AdamW is there for fine-tuning weights whose layers see very different gradient scales:
    the Caffe v1.0 weights take [0, 255] pixels, so conv10's gradients are ~25x those of
    the early layers and one SGD learning rate (with the clipping it needs) barely moves
    the features; AdamW's per-parameter step sizes do not care about that scale.
    """
    decay, no_decay = [], []
    for name, p in params:
        if p.requires_grad:
            (no_decay if name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise TrainingError("the model has no trainable parameters")
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    if kind != "sgd":
        raise TrainingError(f"unknown optimizer {kind!r}: expected one of {', '.join(OPTIMIZERS)}")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=recipe.nesterov and momentum > 0)


def lr_factor(step: int, total: int, warmup: int, schedule: str, power: float) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "poly":
        return (1.0 - progress) ** power
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, recipe: Recipe, total_steps: int, warmup_steps: int):
    def fn(step: int) -> float:
        return lr_factor(step, total_steps, warmup_steps, recipe.schedule, recipe.power)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


CUTOUT_PROBABILITY = 0.5


def build_train_transform(pre: Preprocessing, augment: str) -> v2.Compose:
    """Augmentation + the preprocessing's tensor conversion (BGR, [0, 255], normalisation)."""
    interpolation = InterpolationMode(pre.interpolation)
    resize = list(pre.resize) if isinstance(pre.resize, tuple) else pre.resize
    crop = pre.crop
    if augment == "none":
        geometry = [v2.Resize(resize, interpolation=interpolation, antialias=True), v2.CenterCrop(crop)]
    elif crop <= 64:  # small images (CIFAR): pad-and-crop, as in the CIFAR literature
        geometry = [
            v2.Resize(resize, interpolation=interpolation, antialias=True),
            v2.CenterCrop(crop),
            v2.RandomCrop(crop, padding=max(1, crop // 8), padding_mode="reflect"),
            v2.RandomHorizontalFlip(),
        ]
    elif augment != "strong":  # the paper: random 227 crops of the 256 image, mirrored
        geometry = [
            v2.Resize(resize, interpolation=interpolation, antialias=True),
            v2.RandomCrop(crop),
            v2.RandomHorizontalFlip(),
        ]
    else:
        geometry = [
            v2.RandomResizedCrop(crop, scale=(0.25, 1.0), interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    steps = list(geometry)
    if augment in ("symmetric", "symmetric_jitter"):  # no canonical "up": all 8 flips and quarter turns alike
        steps += [v2.RandomVerticalFlip(), v2.RandomApply([v2.RandomRotation((90, 90))], p=0.5)]
    if augment == "symmetric_jitter":  # cells cut from different modules: slightly off in pose and exposure
        steps += [
            v2.RandomAffine(degrees=3, translate=(0.03, 0.03), scale=(0.95, 1.05), interpolation=interpolation),
            v2.ColorJitter(brightness=0.2, contrast=0.2),
        ]
    if augment == "strong":
        steps.append(v2.TrivialAugmentWide(interpolation=interpolation))
    steps.append(ToNormalizedTensor(pre))  # pixels.normalize, as in eval
    if augment == "strong":
        steps.append(v2.RandomErasing(p=0.25, value=0))
    if augment == "cutout":  # after normalisation, so value 0 is the dataset mean
        steps.append(v2.RandomErasing(p=CUTOUT_PROBABILITY, scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0))
    return v2.Compose(steps)
