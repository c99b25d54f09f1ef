"""A SqueezeNet described as data, so that a weights file alone can rebuild its model.

Every published variant and every point of the paper's design space is a
``SqueezeNetSpec``; the network class only interprets it. The spec is what goes into
weights metadata (as JSON), never Python code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from squeezenet.errors import ModelError


@dataclass(frozen=True)
class FireSpec:
    squeeze: int
    expand1x1: int
    expand3x3: int

    @property
    def out_channels(self) -> int:
        return self.expand1x1 + self.expand3x3


@dataclass(frozen=True)
class SqueezeNetSpec:
    """Macro- and microarchitecture of one SqueezeNet.

    ``pool_after`` lists the fire indices (0 = fire2) followed by a 3x3/2 max pool; a pool
    always follows conv1. ``shortcuts`` holds one entry per fire: "" (none), "identity" or
    "conv". ``classifier_padding`` is 1 for the original Caffe v1.0, whose conv10 has
    ``pad: 1`` so that its ReLU'd border joins the global average.

    Small-image adaptations (CIFAR): ``stem_padding`` pads conv1, ``stem_pool=False`` drops
    the max pool after it, and ``batch_norm`` puts a BatchNorm after every convolution but
    conv10 (for training only: ``squeezenet.models.fold_batchnorm`` folds it into the
    convolutions, so exported weights are a plain SqueezeNet with ``batch_norm=False``).
    """

    stem_channels: int
    stem_kernel: int
    stem_stride: int
    fires: tuple[FireSpec, ...]
    pool_after: tuple[int, ...]
    shortcuts: tuple[str, ...] = field(default=())
    classifier_padding: int = 0
    stem_padding: int = 0
    stem_pool: bool = True
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if not self.fires:
            raise ModelError("a SqueezeNet needs at least one Fire module")
        if self.shortcuts and len(self.shortcuts) != len(self.fires):
            raise ModelError(f"shortcuts has {len(self.shortcuts)} entries for {len(self.fires)} fires")
        bad = [i for i in self.pool_after if not 0 <= i < len(self.fires)]
        if bad:
            raise ModelError(f"pool_after names fires {bad} that do not exist")

    def fire_in_channels(self) -> list[int]:
        channels, inputs = self.stem_channels, []
        for fire in self.fires:
            inputs.append(channels)
            channels = fire.out_channels
        return inputs

    def with_bypass(self, kind: str) -> SqueezeNetSpec:
        """The paper's bypass patterns, defined by channel counts so they fit any spec.

        simple: an identity shortcut around every Fire whose input and output channels are
        equal (fire3, 5, 7, 9 in v1.0). complex: the same, plus a 1x1 convolution shortcut
        around every other Fire (fire2, 4, 6, 8 in v1.0).
        """
        if kind in ("none", ""):
            return replace(self, shortcuts=())
        if kind not in ("simple", "complex"):
            raise ModelError(f"unknown bypass {kind!r}: expected 'none', 'simple' or 'complex'")
        shortcuts = []
        for fire, cin in zip(self.fires, self.fire_in_channels(), strict=True):
            if cin == fire.out_channels:
                shortcuts.append("identity")
            else:
                shortcuts.append("conv" if kind == "complex" else "")
        return replace(self, shortcuts=tuple(shortcuts))

    def spatial_sizes(self, size: int) -> list[int]:
        """Side lengths after conv1 and after each max pool (ceil mode, as in Caffe)."""
        sizes = [(size + 2 * self.stem_padding - self.stem_kernel) // self.stem_stride + 1]
        for _ in range(len(self.pool_after) + int(self.stem_pool)):
            sizes.append(math.ceil((sizes[-1] - 3) / 2) + 1)
        return sizes

    @property
    def min_input_size(self) -> int:
        """Smallest square input whose feature map survives every pool (21 for v1.0, 17 for v1.1)."""
        size = max(1, self.stem_kernel - 2 * self.stem_padding)
        while True:
            sizes = self.spatial_sizes(size)  # every pool needs an input of 2 px or more
            if sizes[-1] >= 1 and min(sizes[:-1], default=size) >= 2:
                return size
            size += 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SqueezeNetSpec:
        try:
            fires = tuple(FireSpec(**f) for f in data["fires"])
            return cls(
                stem_channels=int(data["stem_channels"]),
                stem_kernel=int(data["stem_kernel"]),
                stem_stride=int(data["stem_stride"]),
                fires=fires,
                pool_after=tuple(int(i) for i in data["pool_after"]),
                shortcuts=tuple(str(s) for s in data.get("shortcuts", ())),
                classifier_padding=int(data.get("classifier_padding", 0)),
                stem_padding=int(data.get("stem_padding", 0)),
                stem_pool=bool(data.get("stem_pool", True)),
                batch_norm=bool(data.get("batch_norm", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"invalid architecture spec: {exc}") from None


def design_space(
    base_e: int = 128,
    incr_e: int = 128,
    pct3x3: float = 0.5,
    freq: int = 2,
    sr: float = 0.125,
    num_fires: int = 8,
    pool_after: tuple[int, ...] = (2, 6),
    stem_channels: int = 96,
    stem_kernel: int = 7,
    stem_stride: int = 2,
) -> SqueezeNetSpec:
    """The paper's microarchitecture metaparameters (Section 5) as a spec.

    Fire i (0-based) has e_i = base_e + incr_e * floor(i / freq) expand filters, of which
    a fraction pct3x3 are 3x3, and s_i = SR * e_i squeeze filters. The defaults give
    SqueezeNet v1.0 exactly; sweep SR (Fig. 3a) or pct3x3 (Fig. 3b) to rebuild the paper's
    design-space experiments.
    """
    if base_e <= 0 or incr_e < 0 or freq <= 0 or num_fires <= 0:
        raise ModelError("base_e, freq and num_fires must be positive and incr_e non-negative")
    if not 0.0 <= pct3x3 <= 1.0 or not 0.0 < sr <= 1.0:
        raise ModelError("pct3x3 must lie in [0, 1] and SR in (0, 1]")
    fires = []
    for i in range(num_fires):
        e = base_e + incr_e * (i // freq)
        e3 = round(e * pct3x3)
        e1 = e - e3
        s = max(1, round(sr * e))
        if e1 == 0 or e3 == 0:
            raise ModelError(f"fire{i + 2} would have no 1x1 or no 3x3 expand filters (pct3x3={pct3x3})")
        fires.append(FireSpec(s, e1, e3))
    return SqueezeNetSpec(stem_channels, stem_kernel, stem_stride, tuple(fires), tuple(pool_after))


V1_0 = design_space()
V1_0_CAFFE = replace(V1_0, classifier_padding=1)
V1_1 = SqueezeNetSpec(
    stem_channels=64,
    stem_kernel=3,
    stem_stride=2,
    fires=V1_0.fires,
    pool_after=(1, 3),
)
# v1.1 for 32-pixel images (CIFAR-10): at stride 2 with its pool, conv1 would leave 8x8 pixels
# before the first Fire. A 3x3 stride-1 padded stem without the pool, pools after fire2 and
# fire5 (32 -> 16 -> 8 px), BatchNorm for training from scratch (folded away for export) and
# simple bypass; benchmarks/bench_train_cifar10.py trains it.
V1_1_CIFAR = replace(
    V1_1, stem_stride=1, stem_padding=1, stem_pool=False, batch_norm=True, pool_after=(0, 3)
).with_bypass("simple")
